#!/usr/bin/env bash
# Disk full while a checkpoint is written and while results.json is written (issue 9): one
# line naming the file, exit non-zero (no crash), nothing complete replaced (latest, the older
# checkpoints and the previous results.json are byte for byte as before), no partial file
# left; once there is room again the run resumes and finishes. The full disk is
# shim_enospc.so (LD_PRELOAD; its header says why not prlimit --fsize or a small tmpfs): from
# a chosen byte on, every write to the named file fails with ENOSPC.
source "$(dirname "$0")/../cli/lib.sh"
SHIM=${CAR_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}/tests/faults/shim_enospc.so
[ -f "$SHIM" ] || { fail "shim" "$SHIM is not built (make test builds it)"; finish; exit; }
small_run "$TMP/b" 3 4
RUN=(mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg")
# ASan wants its runtime first in the preload list; the shim does not need that order
full_disk() { # PATH_PART BYTES COMMAND...: run with writes to PATH_PART failing after BYTES
    local part=$1 bytes=$2; shift 2
    CAR_FAULT_ENOSPC_PATH=$part CAR_FAULT_ENOSPC_BYTES=$bytes LD_PRELOAD=$SHIM \
        ASAN_OPTIONS=${ASAN_OPTIONS:-}:verify_asan_link_order=0 "$@"
}
# failed NAME REGEX: the last command failed cleanly; the first car_train line matches REGEX
failed() {
    local first
    first=$(grep -m1 '^car_train: \(error\|rank [0-9]*\):' "$TMP/err.txt")
    if [ "$RC" -ne 0 ] && [ "$RC" -lt 128 ] && echo "$first" | grep -q -E "$2" && ! grep -q -E 'Segmentation|Signal:|core dumped' "$TMP/err.txt"; then
        pass "$1: one line naming the file, exit $RC"
    else fail "$1: one line naming the file" "exit $RC, first line: $first" "expected /$2/"; fi
}
digest() { (cd "$1" && md5sum * 2>/dev/null); }

# a run stopped (SIGUSR1, exit 75) after two checkpoints. The signal comes from train.c's hook at
# step 8: a signal sent from here once step 8's checkpoint exists raced the run's end on a fast machine.
CAR_TEST_SIGNAL_AT_STEP=8 "${RUN[@]}" >"$TMP/b.log" 2>&1
rc=$?
[ $rc -eq 75 ] && pass "stopped with a checkpoint (exit 75)" || fail "stopped with a checkpoint (exit 75)" "exit $rc" "$(tail -n 3 "$TMP/b.log")"
before=$(digest "$TMP/b/checkpoints")

# 1. the disk fills up 100 kB into the next checkpoint (~220 kB)
full_disk .h5.partial 100000 "${RUN[@]}" -o run.resume=true >"$TMP/out.txt" 2>"$TMP/err.txt"
RC=$?
failed "disk full during a checkpoint" "car_train: .*/checkpoints/step_[0-9]+\.h5\.partial: .*(disk full|No space)"
[ "$(digest "$TMP/b/checkpoints")" = "$before" ] && pass "checkpoints and latest unchanged, no partial left" ||
    fail "checkpoints and latest unchanged, no partial left" "before:" "$before" "after:" "$(digest "$TMP/b/checkpoints")"
expect_ok "with room again, the run resumes and finishes" -- "${RUN[@]}" -o run.resume=true
grep -q "resumed from $TMP/b/checkpoints/step_" "$TMP/out.txt" && pass "it resumed from the kept checkpoint" ||
    fail "it resumed from the kept checkpoint" "$(head -c 300 "$TMP/out.txt")"

# 2. the disk fills up 1000 bytes into results.json (of an eval-only run of the finished model)
results=$(md5sum <"$TMP/b/results.json")
full_disk results.json 1000 "${RUN[@]}" -o run.stages=eval >"$TMP/out.txt" 2>"$TMP/err.txt"
RC=$?
failed "disk full during results.json" "car_train: .*/results\.json: cannot write: No space left on device"
[ "$(md5sum <"$TMP/b/results.json")" = "$results" ] && pass "results.json unchanged" || fail "results.json unchanged" "it changed"
ls "$TMP/b"/results.json.* >/dev/null 2>&1 && fail "no partial results left" "$(ls "$TMP/b"/results.json.*)" || pass "no partial results left"
finish
