#!/usr/bin/env bash
# An error that one rank sees alone never hangs the job (issue 9, defect 3): the job ends
# within 10 s, non-zero, with one "PROGRAM: error:" line. Real one-rank failures come from
# MPMD launches (mpirun -n 1 A : -n 1 B), where rank 1 gets another path, as node-local
# storage would give it: a data file or a config file that only rank 1 cannot find. (Root
# ignores file permissions, so "unreadable" is made by absence.) The safety net for a caller
# that breaks comm_fail's contract is driven by the helper fail_alone.
source "$(dirname "$0")/../cli/lib.sh"
HELPERS=${CAR_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}/tests/faults
synth_prepared "" "$TMP/s" "$TMP/s/dataset.h5" 16 --users 300 --items 120 --seed 3
cat >"$TMP/r.cfg" <<C
data = { path = "$TMP/s/dataset.h5"; };
sid = { levels = 2; codebook = [8, 4]; };
model = { d_model = 16; n_layers = 1; };
train = { epochs = 1; batch_size = 32; };
run = { dir = "$TMP/run"; };
C

# expect_quick_error NAME REGEX -- COMMAND...: expect_error, and done within 10 s
expect_quick_error() {
    local name=$1 regex=$2 t0=$SECONDS; shift 3
    expect_error "$name" "$regex" - -- timeout -k 2 30 "$@"
    local took=$((SECONDS - t0))
    [ $took -le 10 ] && pass "$name: ended in ${took}s" || fail "$name: ended in ${took}s" "expected at most 10 s (a hang?)"
}

expect_quick_error "data file missing on rank 1 only" "car_train: error: .*nope.h5: no such file \(on rank 1" -- \
    mpirun -n 1 "$BIN/car_train" "$TMP/r.cfg" : -n 1 "$BIN/car_train" "$TMP/r.cfg" -o data.path="$TMP/nope.h5"
expect_quick_error "config file missing on rank 1 only" "car_train: error: .*nope.cfg: no such config file" -- \
    mpirun -n 1 "$BIN/car_train" "$TMP/r.cfg" : -n 1 "$BIN/car_train" "$TMP/nope.cfg"
expect_quick_error "bad override on rank 2 of 3 only" "car_train: error: .*model.d_model" -- \
    mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" : -n 1 "$BIN/car_train" "$TMP/r.cfg" -o model.d_model=-5
if [ -x "$HELPERS/fail_alone" ]; then
    expect_quick_error "comm_fail on one rank alone" "fail_alone: error: rank 1 alone: comm_fail$" -- \
        mpirun -n 3 "$HELPERS/fail_alone" fail
    expect_quick_error "comm_fail_if_any, the others elsewhere" "fail_alone: error: rank 1 alone: comm_fail_if_any" -- \
        mpirun -n 3 "$HELPERS/fail_alone" if_any
else
    fail "helper fail_alone" "$HELPERS/fail_alone is not built (make builds tests/faults/*.c)"
fi
pgrep -f "$TMP/" >/dev/null && fail "no rank left behind" "$(pgrep -af "$TMP/")" || pass "no rank left behind"
finish
