#!/usr/bin/env bash
# make data: prepared dataset files data/<set>/dataset.h5 from raw Amazon inputs
# (AMAZON_DIR/<set>/{sequences.txt,items.jsonl}).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
RANKS=${RANKS:-2}
AMAZON_DIR=${AMAZON_DIR:-}
if [ -z "$AMAZON_DIR" ] || [ ! -d "$AMAZON_DIR" ]; then
    echo "make data: set AMAZON_DIR to a directory with beauty/ sports/ toys/ (sequences.txt, items.jsonl)" >&2
    exit 1
fi
for set in ${SETS:-beauty sports toys}; do
    src="$AMAZON_DIR/$set"
    [ -f "$src/sequences.txt" ] || { echo "make data: skipping $set (no $src/sequences.txt)" >&2; continue; }
    mkdir -p "data/$set"
    if [ -f "data/$set/dataset.h5" ] && [ "data/$set/dataset.h5" -nt "$src/items.jsonl" ]; then
        echo "data/$set/dataset.h5 is up to date"; continue
    fi
    scripts/mpirun.sh -n "$RANKS" "$BIN/car_prep" --sequences "$src/sequences.txt" --items "$src/items.jsonl" \
        --out "data/$set/dataset.h5" ${PREP_FLAGS:-}
done
