#!/bin/bash
# The issue-13 bench file (analysis/results/bench_<date>.txt): the step before/after (both kernels),
# the Beauty-lengths step, P = 1 vs 2 (split by owner and by tokens), C / PyTorch and evaluation
# speed, on a quiet machine.   scripts/bench_before_after.sh BEFORE_BENCH_DIR AFTER_BENCH_DIR RUN_DIR
# BENCH_DIRs hold bench_train and bench_eval (build/bench of two builds); RUN_DIR: a trained Beauty car
# run for bench_eval. Needs data/beauty/dataset.h5 and ../shared/data/amazon/beauty (PyTorch lengths).
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { sed -n 2,6p "$0"; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
B=$1 A=$2 RUN=$3
REV=$(git rev-parse --short HEAD)
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
echo "== issue 13 bench, $(date -u +%Y-%m-%dT%H:%MZ): before = $B, after = $A (HEAD $REV)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== 1. Beauty-sized step (max-length histories), P = 1, one BLAS thread: before / after, both kernels"
echo "\$ REPS=3 KERNELS='auto Haswell' scripts/bench_compare.sh $B/bench_train $A/bench_train --steps 5"
REPS=3 KERNELS='auto Haswell' scripts/bench_compare.sh $B/bench_train $A/bench_train --steps 5 | grep -v '^BENCH'
echo
echo "== 2. the same step on Beauty's real training windows (car_train's batches 1..11 of epoch 1), after, kernel auto"
echo "\$ env -u OPENBLAS_CORETYPE $A/bench_train --steps 11 --dataset data/beauty/dataset.h5"
env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 $A/bench_train --steps 11 --dataset data/beauty/dataset.h5 | grep -v '^BENCH part'
echo
echo "== 3. data-parallel step, P = 1 and 2, one BLAS thread per rank, kernel auto, median tokens/s of 3 runs"
dp() { # TAG P options
    local tag=$1 p=$2 v=(); shift 2
    for r in 1 2 3; do
        line=$(env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 mpirun -n "$p" $A/bench_train "$@" | grep '^BENCH train')
        v+=("$(field tokens_per_s <<<"$line") $line")
    done
    printf '%s\n' "${v[@]}" | sort -g | sed -n 2p | cut -d' ' -f2- | sed "s/^BENCH train /$tag: /"
    DP=$(printf '%s\n' "${v[@]}" | sort -g | sed -n 2p | cut -d' ' -f1)
}
dp "P=1 max-length" 1 --steps 5; m1=$DP
dp "P=2 max-length" 2 --steps 5; m2=$DP
dp "P=1 Beauty" 1 --steps 11 --dataset data/beauty/dataset.h5; b1=$DP
dp "P=2 Beauty, split by owner (before)" 2 --steps 11 --dataset data/beauty/dataset.h5 --split owner; b2o=$DP
dp "P=2 Beauty, split by tokens (after)" 2 --steps 11 --dataset data/beauty/dataset.h5; b2t=$DP
echo "speed-up P=2 / P=1: max-length $(awk -v a=$m2 -v b=$m1 'BEGIN{printf "%.2fx", a/b}'), Beauty by owner $(awk -v a=$b2o -v b=$b1 'BEGIN{printf "%.2fx", a/b}'), Beauty by tokens $(awk -v a=$b2t -v b=$b1 'BEGIN{printf "%.2fx", a/b}')"
echo
echo "== 4. C / PyTorch (tests/reference/bench_torch.py, the rewritten baseline), one thread, kernel auto, 3 alternating runs each"
echo "PyTorch check against car_ref.py: $(/usr/bin/python3 tests/reference/bench_torch.py --check | tail -n 1)"
for rows in max beauty; do
    c=() t=()
    for r in 1 2 3; do
        if [ $rows = max ]; then cl=$(env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 $A/bench_train --steps 5 | grep '^BENCH train')
        else cl=$(env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 $A/bench_train --steps 11 --dataset data/beauty/dataset.h5 | grep '^BENCH train'); fi
        c+=("$(field tokens_per_s <<<"$cl")")
        tl=$(env -u OPENBLAS_CORETYPE /usr/bin/python3 tests/reference/bench_torch.py --threads 1 --steps 5 --lengths $rows --sequences ../shared/data/amazon/beauty/sequences.txt)
        echo "  lengths $rows run $r: C tokens/s ${c[-1]} | $tl"
        t+=("$(sed -n 's/^torch tokens\/s \([0-9.]*\).*/\1/p' <<<"$tl")")
    done
    cm=$(printf '%s\n' "${c[@]}" | median) tm=$(printf '%s\n' "${t[@]}" | median)
    echo "lengths $rows: C median $cm tokens/s, PyTorch median $tm tokens/s, C / PyTorch = $(awk -v a=$cm -v b=$tm 'BEGIN{printf "%.2fx", a/b}')"
done
echo
echo "== 5. full-ranking evaluation of Beauty valid + test ($RUN), 1 rank, kernel auto: before / after, 3 reps each"
for side in before after; do
    bin=$B/bench_eval; [ $side = after ] && bin=$A/bench_eval
    echo "-- $side: $bin $RUN --reps 3"
    env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 $bin $RUN --reps 3 | grep -v '^$'
done
echo "== end $(date -u +%H:%MZ)"
