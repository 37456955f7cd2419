#!/usr/bin/env bash
# make data: prepared dataset files data/<set>/dataset.h5 from raw Amazon inputs
# (AMAZON_DIR/<set>/{sequences.txt,items.jsonl}), with the car_prep flags chosen for the set in
# configs/<set>.prep (the inputs chosen on validation, issue 14: lines of flags, # comments;
# no file = car_prep's defaults). A dataset is made again when its flags or the content of its
# inputs differ from what it was made with (data/<set>/dataset.flags: the flags and the inputs'
# SHA-256). Content, not mtime: a shared data directory copied afresh with new mtimes must not
# remake identical datasets (and mark every finished experiment cell stale). PREP_FLAGS adds flags;
# CAR_CONFIGS (configs) and CAR_DATA (data) move the inputs and outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin CONFIGS=${CAR_CONFIGS:-configs} DATA=${CAR_DATA:-data}
RANKS=${RANKS:-2}
AMAZON_DIR=${AMAZON_DIR:-}
if [ -z "$AMAZON_DIR" ] || [ ! -d "$AMAZON_DIR" ]; then
    echo "make data: set AMAZON_DIR to a directory with beauty/ sports/ toys/ (sequences.txt, items.jsonl)" >&2
    exit 1
fi
for set in ${SETS:-beauty sports toys}; do
    src="$AMAZON_DIR/$set"
    [ -f "$src/sequences.txt" ] || { echo "make data: skipping $set (no $src/sequences.txt)" >&2; continue; }
    flags=""
    [ -f "$CONFIGS/$set.prep" ] && flags=$(sed 's/#.*//' "$CONFIGS/$set.prep" | tr -s ' \n\t' ' ' | sed 's/^ //; s/ $//')
    flags="$flags${PREP_FLAGS:+ $PREP_FLAGS}"
    out="$DATA/$set/dataset.h5" stamp="$DATA/$set/dataset.flags"
    mkdir -p "$DATA/$set"
    want=$(printf 'flags: %s\n' "$flags"; cd "$src" && sha256sum sequences.txt items.jsonl)
    if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "$out is up to date (car_prep flags: ${flags:-none})"; continue
    fi
    # shellcheck disable=SC2086 # the flags are words
    scripts/mpirun.sh -n "$RANKS" "$BIN/car_prep" --sequences "$src/sequences.txt" --items "$src/items.jsonl" \
        --out "$out" $flags
    printf '%s\n' "$want" >"$stamp"
done
