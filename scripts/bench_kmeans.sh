#!/usr/bin/env bash
# Benchmark of the semantic-ID stage (residual k-means, 3 levels x 256 codes) on Amazon Beauty.
#   scripts/bench_kmeans.sh [DATASET.h5]
# DATASET: a prepared dataset; default data/beauty/dataset.h5, else one made here with car_prep
# from $AMAZON_DIR/beauty (default ../shared/data/amazon) into $BUILD/bench/beauty.h5.
# Environment: BUILD (build), RANKS ("1 2"), REPS (3), LEVELS (3), CODEBOOK (256), ITERS (50),
#   SID_RUN (the program running the stage as `PROGRAM CONFIG -o key=value ...`; default
#   $BUILD/bin/car_train with -o run.stages=sid), OPENBLAS_NUM_THREADS (default: comm's choice,
#   cores / ranks).
# Prints what ran and, per rank count, the median over REPS of: seconds per Lloyd iteration,
# seconds for all levels, sgemm share. Machine-readable lines start with "BENCH kmeans".
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RANKS=${RANKS:-"1 2"}
REPS=${REPS:-3}
LEVELS=${LEVELS:-3}
CODEBOOK=${CODEBOOK:-256}
ITERS=${ITERS:-50}
AMAZON_DIR=${AMAZON_DIR:-../shared/data/amazon}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ -n "${SID_RUN:-}" ]; then RUN=("$SID_RUN"); else RUN=("$BUILD/bin/car_train" -o run.stages=sid); fi

DATASET=${1:-data/beauty/dataset.h5}
if [ ! -f "$DATASET" ]; then
    raw="$AMAZON_DIR/beauty"
    DATASET="$BUILD/bench/beauty.h5"
    if [ ! -f "$DATASET" ]; then
        if [ ! -f "$raw/sequences.txt" ]; then
            echo "bench_kmeans: error: no dataset (give one, or put Beauty at $raw)" >&2; exit 1
        fi
        mkdir -p "$BUILD/bench"
        echo "bench_kmeans: preparing $DATASET with car_prep from $raw"
        mpirun -n 2 "$BUILD/bin/car_prep" --sequences "$raw/sequences.txt" --items "$raw/items.jsonl" --out "$DATASET" >/dev/null
    fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/bench.cfg" <<C
data = { path = "$(realpath "$DATASET")"; };
sid = { levels = $LEVELS; codebook = $CODEBOOK; iters = $ITERS; tol = 1e-4; seed = 1; };
C

echo "bench_kmeans: sid stage on $DATASET, $LEVELS levels x $CODEBOOK codes, up to $ITERS Lloyd iterations, $REPS repetitions"
echo "bench_kmeans: runner: ${RUN[*]}"
for P in $RANKS; do
    for rep in $(seq 1 "$REPS"); do
        dir="$WORK/run-$P-$rep" # a fresh run dir: the stage computes, never reuses
        if ! mpirun -n "$P" "${RUN[@]}" "$WORK/bench.cfg" -o "run.dir=\"$dir\"" >"$WORK/log-$P-$rep" 2>&1 ||
            [ ! -f "$dir/sid_report.json" ]; then
            echo "bench_kmeans: error: the run at $P ranks made no $dir/sid_report.json:" >&2
            tail -n 5 "$WORK/log-$P-$rep" >&2
            exit 1
        fi
    done
    $PY - "$P" "$WORK"/run-"$P"-*/sid_report.json <<'P'
import json, re, statistics, sys
ranks, reports = sys.argv[1], [json.load(open(p)) for p in sys.argv[2:]]
def per_run(r):
    iters = sum(l["iters"] for l in r["level"])
    lloyd = sum(l["lloyd_seconds"] for l in r["level"])
    init = sum(l["init_seconds"] for l in r["level"])
    return {"s_per_iter": lloyd / max(iters, 1), "s_levels": r["seconds"], "s_init": init,
            "sgemm_share": r["sgemm_share"], "iters": iters}
runs = [per_run(r) for r in reports]
med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
r = reports[0]
blas = r["blas"]
kernel = (re.search(r"kernel (\S+),", blas) or [None, "?"])[1]
threads = (re.search(r"(\d+) thread", blas) or [None, "?"])[1]
print(f"ranks {ranks}: {r['n_items']} items x {r['dim']} dims, {threads} BLAS thread(s) per rank, kernel {kernel}")
print(f"  median of {len(runs)}: {med['s_per_iter']:.4f} s per Lloyd iteration ({med['iters']:.0f} iterations), "
      f"{med['s_levels']:.2f} s for all {r['levels']} levels (k-means++ {med['s_init']:.2f} s), "
      f"sgemm {100 * med['sgemm_share']:.0f}% of the time")
print(f"BENCH kmeans ranks={ranks} threads={threads} kernel={kernel} items={r['n_items']} dim={r['dim']} "
      f"levels={r['levels']} codebook={'x'.join(str(k) for k in r['codebook'])} reps={len(runs)} "
      f"s_per_iter={med['s_per_iter']:.5f} s_levels={med['s_levels']:.3f} s_init={med['s_init']:.3f} "
      f"sgemm_share={med['sgemm_share']:.3f}")
P
done
