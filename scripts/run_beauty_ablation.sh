#!/usr/bin/env bash
# The Beauty ablation of issue 4: CAR, CAR without fusion, CAR without the think loss (alpha 0),
# each with 3 training seeds, plus the AR mode (loss only). Runs JOBS runs at a time on RANKS
# ranks each, then copies every results.json to analysis/results/beauty/ and prints the table.
#   scripts/run_beauty_ablation.sh            (needs data/beauty/dataset.h5: make data)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
JOBS=${JOBS:-2} RANKS=${RANKS:-1} SEEDS=${SEEDS:-"1 2 3"} EPOCHS=${EPOCHS:-20}
OUT=analysis/results/beauty
mkdir -p "$OUT" runs/beauty
runs=()
for seed in $SEEDS; do
    runs+=("car $seed" "car_no_fusion $seed -o model.fusion=none" "car_alpha0 $seed -o train.alpha=0")
done
[ -n "${WITH_AR-1}" ] && runs+=("ar 1 -o train.mode=ar")
printf '%s\n' "${runs[@]}" | xargs -P "$JOBS" -I{} bash -c '
    set -- {}; variant=$1 seed=$2; shift 2
    dir=runs/beauty/${variant}_s${seed}
    scripts/mpirun.sh -n '"$RANKS"' '"$BIN"'/car_train configs/beauty.cfg -o train.seed=$seed -o train.epochs='"$EPOCHS"' \
        -o run.dir=$dir "$@" >"$dir.log" 2>&1 && echo "done $variant seed $seed" || echo "FAILED $variant seed $seed (see $dir.log)"'
for f in runs/beauty/*_s*/results.json; do
    d=$(basename "$(dirname "$f")"); variant=${d%_s*}; seed=${d##*_s}
    if [ "$seed" = 1 ]; then cp "$f" "$OUT/$variant.json"; else cp "$f" "$OUT/${variant}_seed$seed.json"; fi
done
groups=()
for v in car car_no_fusion car_alpha0; do
    files=$(ls "$OUT/$v.json" "$OUT/${v}"_seed*.json 2>/dev/null | paste -sd, -)
    [ -n "$files" ] && groups+=("$v=$files")
done
/usr/bin/python3 analysis/compare_results.py "${groups[@]}" --json "$OUT/summary.json" | tee "$OUT/summary.txt"
