#!/usr/bin/env bash
# The sid stage from the command line: /sid/codes and the centroids are byte-identical for 1, 2,
# 3, 4 and 8 ranks (and with 2 BLAS threads, or another BLAS kernel) on random data and on Amazon
# Beauty (a prepared dataset, or one made with car_prep); bad inputs give a one-line error and
# leave no sids.h5 behind.
# The stage runs as `car_train CONFIG -o run.stages=sid`.
source "$(dirname "$0")/lib.sh"
SID=("$BIN/car_train" -o run.stages=sid)
PY=/usr/bin/python3
REPO=$(cd "$(dirname "$0")/../.." && pwd)

# make_dataset PATH N DIM [noemb]: users 0..9 with 3 items each; N items from 40 blobs, unit norm
make_dataset() {
    $PY - "$@" <<'P'
import sys, h5py, numpy as np
path, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(7)
centers = rng.normal(size=(40, dim))
x = centers[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, dim))
x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
with h5py.File(path, "w") as f:
    f["/users/offsets"] = np.arange(0, 31, 3, dtype=np.int64)
    f["/users/items"] = (np.arange(30) % n).astype(np.int32)
    if len(sys.argv) < 5:
        f["/items/embedding"] = x
    else:
        f["/items/other"] = x
P
}

# same_sids A B: codes and centroids byte-identical; prints a reason otherwise
same_sids() {
    $PY - "$1" "$2" <<'P'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for name in ["/sid/codes"] + ["/sid/centroids/" + k for k in a["/sid/centroids"]]:
    x, y = a[name][()], b[name][()]
    if x.shape != y.shape or x.tobytes() != y.tobytes():
        print(f"{name} differs: {int((x != y).sum()) if x.shape == y.shape else 'shape'} entries"); sys.exit(1)
P
}

# codes_sane FILE N LEVELS K...: shape, every code in range
codes_sane() {
    $PY - "$@" <<'P'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); n, L = int(sys.argv[2]), int(sys.argv[3]); K = [int(k) for k in sys.argv[4:]]
c = f["/sid/codes"][()]
assert c.shape == (n, L) and c.dtype == np.int32, c.shape
for l in range(L):
    assert c[:, l].min() >= 0 and c[:, l].max() < K[l], (l, c[:, l].min(), c[:, l].max())
    assert f[f"/sid/centroids/level_{l + 1}"].shape[0] == K[l]
P
}

# across_ranks NAME CONFIG RUNS: runs at each of RUNS (a rank count; 1t2: 1 rank with 2 BLAS
# threads; 1p: 1 rank with OpenBLAS's generic Prescott kernel) and compares each to the 1-rank one
across_ranks() {
    local name=$1 cfg=$2 runs=$3 ok=1 why=""
    for r in $runs; do
        local n=${r%%[tp]*} envs=(OPENBLAS_NUM_THREADS=1)
        [ "$r" = "1t2" ] && envs=(OPENBLAS_NUM_THREADS=2)
        [ "$r" = "1p" ] && envs+=(OPENBLAS_CORETYPE=Prescott)
        if ! env "${envs[@]}" mpirun -n "$n" "${SID[@]}" "$cfg" \
            -o "run.dir=\"$TMP/$name-$r\"" >"$TMP/$name-$r.log" 2>&1; then
            ok=0; why="run at -n $n failed: $(tail -n 3 "$TMP/$name-$r.log")"; break
        fi
    done
    if [ $ok = 1 ]; then
        for r in $runs; do
            [ "$r" = 1 ] && continue
            if ! out=$(same_sids "$TMP/$name-1/sids.h5" "$TMP/$name-$r/sids.h5"); then ok=0; why="$r vs 1 rank: $out"; break; fi
        done
    fi
    local label=${runs// /, }
    label=${label/1t2/1 rank with 2 BLAS threads}
    label=${label/1p/1 rank with the Prescott BLAS kernel}
    if [ $ok = 1 ]; then pass "$name: codes identical at $label ranks"; else fail "$name: codes across ranks" "$why"; fi
}

# --- random data
make_dataset "$TMP/rand.h5" 3000 32
cat >"$TMP/rand.cfg" <<C
data = { path = "$TMP/rand.h5"; };
sid = { levels = 3; codebook = [64, 32, 48]; iters = 25; tol = 1e-5; seed = 3; };
C
across_ranks random "$TMP/rand.cfg" "1 1t2 1p 2 4"
if codes_sane "$TMP/random-1/sids.h5" 3000 3 64 32 48; then pass "random: codes in range"; else fail "random: codes in range"; fi
if grep -q "reusing" <(mpirun -n 2 "${SID[@]}" "$TMP/rand.cfg" -o "run.dir=\"$TMP/random-1\"" 2>&1); then
    pass "random: a 2-rank run reuses the 1-rank sids.h5"
else
    fail "random: a 2-rank run reuses the 1-rank sids.h5"
fi
if $PY -c "import json,sys; r=json.load(open('$TMP/random-2/sid_report.json')); e=[l['sq_error_after'] for l in r['level']]; sys.exit(0 if all(b <= a for a, b in zip(e, e[1:])) and e[0] < r['sq_error_before'] else 1)"; then
    pass "random: report errors never grow over levels"
else
    fail "random: report errors never grow over levels"
fi

# --- bad inputs: one line, non-zero exit, no sids.h5
make_dataset "$TMP/small.h5" 120 8
make_dataset "$TMP/noemb.h5" 120 8 noemb
cat >"$TMP/small.cfg" <<C
data = { path = "$TMP/small.h5"; };
sid = { levels = 3; codebook = [16, 300, 8]; };
run = { dir = "$TMP/bad"; };
C
expect_error "codebook larger than the items" \
    "car_train: error: key 'sid.codebook' = 300 at level 2 exceeds the 120 items of .*small.h5" "$TMP/bad/sids.h5" -- \
    mpirun -n 2 "${SID[@]}" "$TMP/small.cfg"
expect_error "dataset without embeddings" "car_train: error: .*noemb.h5: .*missing /items/embedding" "$TMP/bad/sids.h5" -- \
    mpirun -n 2 "${SID[@]}" "$TMP/small.cfg" -o sid.codebook=8 -o "data.path=\"$TMP/noemb.h5\""
expect_error "sid.levels out of range" "car_train: error: .*key 'sid.levels' = 9 is out of range \[0, 8\]" "$TMP/bad/sids.h5" -- \
    mpirun -n 2 "${SID[@]}" "$TMP/small.cfg" -o sid.levels=9
expect_error "missing dataset" "car_train: error: .*nope.h5: no such file" "$TMP/bad/sids.h5" -- \
    mpirun -n 2 "${SID[@]}" "$TMP/small.cfg" -o sid.codebook=8 -o "data.path=\"$TMP/nope.h5\""
expect_ok "sid.levels = 0 skips the stage" -- mpirun -n 2 "${SID[@]}" "$TMP/small.cfg" -o sid.levels=0
if [ -e "$TMP/bad/sids.h5" ]; then fail "sid.levels = 0 makes no sids.h5"; else pass "sid.levels = 0 makes no sids.h5"; fi

# --- Amazon Beauty, 3 levels of 256 codes (under the sanitizer, ~3x slower: fewer runs)
if [ "${SANITIZE:-0}" = 1 ]; then BEAUTY_RUNS="1 2 3"; BEAUTY_ITERS=8; else BEAUTY_RUNS="1 1t2 2 3 4 8"; BEAUTY_ITERS=20; fi
BEAUTY=${CAR_BEAUTY_DATASET:-$REPO/data/beauty/dataset.h5}
RAW="$SHARED_DATA/beauty"
if [ ! -f "$BEAUTY" ] && [ -f "$RAW/sequences.txt" ] && "$BIN/car_prep" --help >/dev/null 2>&1; then
    BEAUTY="$TMP/beauty.h5"
    mpirun -n 2 "$BIN/car_prep" --sequences "$RAW/sequences.txt" --items "$RAW/items.jsonl" --out "$BEAUTY" \
        >"$TMP/prep.log" 2>&1 || { fail "car_prep on Beauty" "$(tail -n 3 "$TMP/prep.log")"; BEAUTY=""; }
fi
if [ -n "$BEAUTY" ] && [ -f "$BEAUTY" ]; then
    cat >"$TMP/beauty.cfg" <<C
data = { path = "$BEAUTY"; };
sid = { levels = 3; codebook = 256; iters = $BEAUTY_ITERS; tol = 1e-4; seed = 1; };
C
    across_ranks beauty "$TMP/beauty.cfg" "$BEAUTY_RUNS"
    n_items=$($PY -c "import h5py; print(h5py.File('$BEAUTY','r')['/items/embedding'].shape[0])")
    if codes_sane "$TMP/beauty-1/sids.h5" "$n_items" 3 256 256 256; then pass "beauty: codes in range"; else fail "beauty: codes in range"; fi
    grep '^sid:' "$TMP/beauty-1.log" | sed 's/^/    /'
else
    skip "beauty: SIDs across ranks" "no prepared dataset at data/beauty/dataset.h5 and no raw Beauty data"
fi
finish
