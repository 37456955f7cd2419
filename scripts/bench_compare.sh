#!/usr/bin/env bash
# Before / after a change to the training step, measured in one run: two bench_train binaries
# (e.g. one built from the commit before the change: `git worktree add /tmp/before REV && make -C
# /tmp/before BUILD=build/b build/b/bench/bench_train`) run alternately, REPS times each, with every
# BLAS kernel given (default: the one the program picks, then Haswell), at P = 1 and one BLAS thread.
# Prints each run's step line and per-part table, then per kernel the median step, tokens/s, share
# of the same process's sgemm peak, and the after / before speed ratio.
#   scripts/bench_compare.sh BEFORE_BENCH_TRAIN AFTER_BENCH_TRAIN [bench_train options...]
# Environment: REPS (5), KERNELS ("auto Haswell"; auto = OPENBLAS_CORETYPE unset).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
before=$1 after=$2
shift 2
for b in "$before" "$after"; do [ -x "$b" ] || { echo "bench_compare.sh: $b: not an executable" >&2; exit 2; }; done
REPS=${REPS:-5} KERNELS=${KERNELS:-"auto Haswell"}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; } # a key=value of the BENCH line

echo "== bench_compare $(date -u +%Y-%m-%dT%H:%MZ): before $before, after $after; $REPS alternating runs per kernel; options: ${*:-none}"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for k in $KERNELS; do
    declare -A ms=() tps=() share=()
    for r in $(seq "$REPS"); do
        for side in before after; do
            bin=$before; [ $side = after ] && bin=$after
            if [ "$k" = auto ]; then out=$(env -u OPENBLAS_CORETYPE "$bin" "$@"); else out=$(OPENBLAS_CORETYPE=$k "$bin" "$@"); fi
            echo "-- kernel $k, run $r, $side"
            grep -v '^BENCH' <<<"$out"
            line=$(grep '^BENCH train' <<<"$out")
            ms[$side]+="$(field step_ms <<<"$line") " tps[$side]+="$(field tokens_per_s <<<"$line") "
            share[$side]+="$(field peak_share <<<"$line") "
        done
    done
    for side in before after; do
        printf 'SUMMARY kernel=%s %s: median step %s ms, %s tokens/s, %s of sgemm peak (runs: %s)\n' "$k" $side \
            "$(tr ' ' '\n' <<<"${ms[$side]}" | grep . | median)" "$(tr ' ' '\n' <<<"${tps[$side]}" | grep . | median)" \
            "$(tr ' ' '\n' <<<"${share[$side]}" | grep . | median)" "${ms[$side]% }"
    done
    b=$(tr ' ' '\n' <<<"${ms[before]}" | grep . | median) a=$(tr ' ' '\n' <<<"${ms[after]}" | grep . | median)
    echo "SUMMARY kernel=$k after / before speed: $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2fx", b / a}')"
    unset ms tps share
done
