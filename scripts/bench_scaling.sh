#!/usr/bin/env bash
# The cost curve of a catalogue that outgrows one machine (issue 13 "Scale"): bench_scale on
# car_synth data sets of 12,101 (Beauty's size), 100k and 1M items, each at P = 1, 2, 4, 8 ranks
# (more ranks than cores are oversubscribed: memory per rank is their point, not speed).
# Prints what ran (machine, load, commit, every command) and bench_scale's lines, which
# analysis/plot_scaling.py turns into analysis/figures/scaling.png.
#   scripts/bench_scaling.sh > analysis/results/scaling_$(date +%F).txt
# Environment: BUILD (build dir, default build), BENCH_DIR (data sets, default build/bench-work,
# made once: car_synth + car_prep, ~5 min and 1.4 GiB per rank at 1M items), SCALE_RANKS
# (default "1 2 4 8"), SCALE_SIZES (default "12k 100k 1m"), SCALE_BATCH (users per step, default 16),
# SCALE_EVAL_USERS (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORK=${BENCH_DIR:-build/bench-work}
RANKS=${SCALE_RANKS:-"1 2 4 8"}
SIZES=${SCALE_SIZES:-"12k 100k 1m"}
BATCH=${SCALE_BATCH:-16}
EVAL_USERS=${SCALE_EVAL_USERS:-1024}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# 1 BLAS thread a rank; waiting ranks yield the core (as Open MPI does when oversubscribed anyway),
# so CPU seconds at P <= cores are work, not busy polling
export OPENBLAS_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
for p in "$BUILD/bin/car_synth" "$BUILD/bin/car_prep" "$BUILD/bench/bench_scale"; do
    [ -x "$p" ] || { echo "bench_scaling: $p missing: run make BUILD=$BUILD all $BUILD/bench/bench_scale first" >&2; exit 1; }
done

run() { # prints the command, then runs it
    echo "\$ $*"
    "$@"
}

run_last() { # prints the command, runs it, keeps its last line
    echo "\$ $*"
    "$@" | tail -n 1
}

# name -> car_synth flags: about two users an item (Beauty has 1.85), a hierarchy that grows with the items
synth_flags() {
    case $1 in
    12k) echo "--items 12101 --users 24000 --categories 8 --subcategories 8 --brands 8" ;;
    100k) echo "--items 100000 --users 200000 --categories 32 --subcategories 16 --brands 8" ;;
    1m) echo "--items 1000000 --users 2000000 --categories 64 --subcategories 32 --brands 16" ;;
    *) echo "bench_scaling: unknown size '$1' (12k, 100k, 1m)" >&2; exit 1 ;;
    esac
}

make_dataset() { # name: $WORK/synth<name>/dataset.h5, made when missing
    local dir=$WORK/synth$1
    [ -f "$dir/dataset.h5" ] && return 0
    # shellcheck disable=SC2046
    run_last "$BUILD/bin/car_synth" --out "$dir" $(synth_flags "$1")
    run_last mpirun -n 2 "$BUILD/bin/car_prep" --sequences "$dir/sequences.txt" --items "$dir/items.jsonl" \
        --out "$dir/dataset.h5" --dim 32
}

echo "# scaling: bench_scale, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# global batch $BATCH users per step (a fixed batch across V: the step's UID head grows as V x rows), 5 steps (median), eval of the first $EVAL_USERS users (valid + test)"
echo "# plot: analysis/plot_scaling.py THIS_FILE"
for size in $SIZES; do make_dataset "$size"; done
for size in $SIZES; do
    for p in $RANKS; do
        # --bind-to none: Open MPI binds 2 ranks to 2 cores, where a rank waiting in a collective
        # polls its core against the machine's other jobs (its CPU seconds tripled at 100k items)
        run mpirun -n "$p" --bind-to none "$BUILD/bench/bench_scale" "$WORK/synth$size/dataset.h5" --batch "$BATCH" \
            --steps 5 --eval-users "$EVAL_USERS"
    done
done
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
