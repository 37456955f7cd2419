#!/usr/bin/env bash
# make bench: what this machine does with CAR. Prints what ran, ranks, threads, BLAS kernel,
# medians of several runs and ratios where a comparison is meant.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
BIN=$BUILD/bin
REPS=${BENCH_REPS:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
AMAZON_DIR=${AMAZON_DIR:-../shared/data/amazon}
OUT=${BENCH_DIR:-build/bench-work}
mkdir -p "$OUT"

echo "== CAR benchmarks $(date -u +%Y-%m-%dT%H:%MZ)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (auto)}"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== sgemm peak (bench_sgemm 1024, median of 7): the denominator of every FLOP/s share below"
for t in 1 2; do OPENBLAS_NUM_THREADS=$t "$BUILD/bench/bench_sgemm" 1024 7; done
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
    echo "-- the same with the kernel CAR picks when OPENBLAS_CORETYPE is unset:"
    for t in 1 2; do env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=$t "$BUILD/bench/bench_sgemm" 1024 7; done
fi

# the input: Beauty when available, else a synthetic set of similar size
if [ -f "$AMAZON_DIR/beauty/sequences.txt" ]; then
    SEQ=$AMAZON_DIR/beauty/sequences.txt ITEMS=$AMAZON_DIR/beauty/items.jsonl NAME=beauty
else
    "$BIN/car_synth" --out "$OUT/synth20k" --users 20000 --items 10000 --seed 1 >/dev/null
    SEQ=$OUT/synth20k/sequences.txt ITEMS=$OUT/synth20k/items.jsonl NAME=synth20k
fi

echo "== car_prep on $NAME (dim 128), median of $REPS runs, 1 BLAS thread per rank"
declare -A prep_time
for n in 1 2; do
    times=()
    for r in $(seq "$REPS"); do
        log=$(OPENBLAS_NUM_THREADS=1 mpirun -n "$n" "$BIN/car_prep" --sequences "$SEQ" --items "$ITEMS" --out "$OUT/$NAME.h5" 2>&1)
        times+=("$(echo "$log" | sed -n 's/.* \([0-9.]*\)s on [0-9]* rank(s), peak memory \([0-9.]*\) MiB.*/\1/p')")
        mem=$(echo "$log" | sed -n 's/.*peak memory \([0-9.]*\) MiB.*/\1/p')
    done
    prep_time[$n]=$(printf '%s\n' "${times[@]}" | median)
    echo "car_prep ranks=$n: median ${prep_time[$n]} s (runs: ${times[*]}), peak memory ${mem} MiB per rank"
done
echo "car_prep speed-up 1 -> 2 ranks: $(awk -v a="${prep_time[1]}" -v b="${prep_time[2]}" 'BEGIN {printf "%.2fx", a / b}')"

if [ -x scripts/bench_kmeans.sh ]; then
    echo "== residual k-means (SID stage)"
    scripts/bench_kmeans.sh "$OUT/$NAME.h5"
fi

echo "== the UID head's three products of a maximum-length Beauty step: fp32 sgemm against bf16gemm (model.uid_bf16)"
OPENBLAS_NUM_THREADS=1 "$BUILD/bench/bench_bf16" --reps "$REPS" | grep -v '^BENCH'

echo "== training step of the chunk Transformer (Beauty-sized: d=64, 2 layers, L=3, K=256, V=12101, B=256, 21 items)"
declare -A c_tps
for t in 1 2; do
    line=$(OPENBLAS_NUM_THREADS=$t "$BUILD/bench/bench_train" --steps 7)
    echo "$line" | grep -v '^BENCH' | sed "s/^/[threads=$t] /"
    c_tps[$t]=$(echo "$line" | sed -n 's/.*tokens_per_s=\([0-9]*\).*/\1/p')
done
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
    # the fastest PyTorch version of the same step (tests/reference/bench_torch.py); --check first
    # shows that it computes car_ref.py's loss and gradients
    echo "PyTorch baseline vs car_ref.py: $(/usr/bin/python3 tests/reference/bench_torch.py --check | tail -n 1)"
    for t in 1 2; do
        tl=$(/usr/bin/python3 tests/reference/bench_torch.py --threads "$t" --steps 5)
        tt=$(echo "$tl" | sed -n 's/^torch tokens\/s \([0-9.]*\).*/\1/p')
        echo "[threads=$t] $tl | C / PyTorch = $(awk -v a="${c_tps[$t]}" -v b="$tt" 'BEGIN {printf "%.1fx", a / b}')"
    done
    if [ -f "$AMAZON_DIR/beauty/sequences.txt" ] && [ -f data/beauty/dataset.h5 ]; then
        echo "-- Beauty's real lengths (windows of at most 21 items), no padding: C on car_train's batches of"
        echo "   data/beauty/dataset.h5, PyTorch on lengths drawn from Beauty's users"
        for t in 1 2; do
            cl=$(OPENBLAS_NUM_THREADS=$t "$BUILD/bench/bench_train" --steps 7 --dataset data/beauty/dataset.h5 | grep '^BENCH train')
            ct=$(echo "$cl" | sed -n 's/.*tokens_per_s=\([0-9]*\).*/\1/p')
            tl=$(/usr/bin/python3 tests/reference/bench_torch.py --threads "$t" --steps 5 --lengths beauty \
                --sequences "$AMAZON_DIR/beauty/sequences.txt")
            tt=$(echo "$tl" | sed -n 's/^torch tokens\/s \([0-9.]*\).*/\1/p')
            echo "[threads=$t] C tokens/s $ct | $tl | C / PyTorch = $(awk -v a="$ct" -v b="$tt" 'BEGIN {printf "%.1fx", a / b}')"
        done
    fi
else
    echo "PyTorch not installed (apt-get install python3-torch): no C / PyTorch ratio this run"
fi

# dp_row TAG P [bench_train options]: the run of median tokens/s out of $REPS at P ranks, printed
# after TAG; its tokens/s in DP_TPS
dp_row() {
    local tag=$1 p=$2 lines=() r best line; shift 2
    for r in $(seq "$REPS"); do
        lines+=("$(OPENBLAS_NUM_THREADS=1 mpirun -n "$p" "$BUILD/bench/bench_train" "$@" | grep '^BENCH train')")
    done
    best=$(printf '%s\n' "${lines[@]}" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^tokens_per_s=/) {split($i, a, "="); print a[2], NR}}' | sort -g | awk '{a[NR]=$2} END {print a[int((NR+1)/2)]}')
    line=${lines[$((best - 1))]}
    DP_TPS=$(echo "$line" | sed -n 's/.*tokens_per_s=\([0-9]*\).*/\1/p')
    echo "$tag: $(echo "$line" | sed 's/^BENCH train //')"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }

echo "== data-parallel training step: one global batch (B=256) split over P ranks, UID tables sharded, 1 BLAS thread per rank"
echo "   (P=4 on $(nproc) cores is oversubscribed: its times say nothing about speed, its bytes and memory do); median of $REPS runs"
declare -A dp_tps
for p in 1 2 4; do
    tag="P=$p"; [ "$p" -gt "$(nproc)" ] && tag="P=$p (oversubscribed)"
    dp_row "$tag" "$p" --steps 5
    dp_tps[$p]=$DP_TPS
done
echo "speed-up over P=1: P=2 $(ratio "${dp_tps[2]}" "${dp_tps[1]}"), P=4 $(ratio "${dp_tps[4]}" "${dp_tps[1]}") (oversubscribed)"
if [ -f data/beauty/dataset.h5 ]; then
    echo "== the same with Beauty's real lengths: car_train's batches 1..11 of epoch 1 (data/beauty/dataset.h5, windows of"
    echo "   at most 21 items), split over the ranks by tokens (car_train) or by which rank owns the user (the earlier split)"
    dp_row "P=1" 1 --steps 11 --dataset data/beauty/dataset.h5
    b1=$DP_TPS
    dp_row "P=2 owner" 2 --steps 11 --dataset data/beauty/dataset.h5 --split owner
    b2o=$DP_TPS
    dp_row "P=2 tokens" 2 --steps 11 --dataset data/beauty/dataset.h5
    b2t=$DP_TPS
    echo "Beauty lengths, speed-up over P=1: P=2 split by tokens $(ratio "$b2t" "$b1"), by owner $(ratio "$b2o" "$b1")"
else
    echo "(no data/beauty/dataset.h5: make data for the row with Beauty's real lengths)"
fi

echo "== speed of thinking (bench_decode): K = 10 lists, CAR one pass vs AR beam search (KV cache on/off), Toys-sized model"
echo "   (analysis/plot_decode_speed.py plots this output; times are CPU seconds, wall_* beside them)"
for p in 1 2; do OPENBLAS_NUM_THREADS=1 mpirun -n "$p" "$BUILD/bench/bench_decode" --name toys --items 11924; done
