#!/usr/bin/env bash
# make demo: the whole pipeline on the embedded synthetic data, 2 ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
RANKS=${RANKS:-2}
DATA=data/synth
if [ ! -f "$DATA/sequences.txt" ] || [ ! -f "$DATA/items.jsonl" ]; then
    "$BIN/car_synth" --out "$DATA" --seed 1
fi
if [ ! -f "$DATA/dataset.h5" ]; then
    scripts/mpirun.sh -n "$RANKS" "$BIN/car_prep" --sequences "$DATA/sequences.txt" --items "$DATA/items.jsonl" \
        --out "$DATA/dataset.h5" --dim 64
fi
scripts/mpirun.sh -n "$RANKS" "$BIN/car_train" configs/demo.cfg "$@"
