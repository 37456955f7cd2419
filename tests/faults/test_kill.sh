#!/usr/bin/env bash
# kill -9 of ONE rank (not the launcher), mid-step and during a checkpoint write (issue 9): the
# job ends within 30 s, non-zero; checkpoints/latest still names a complete checkpoint (older
# than the one being written); resuming from it at the same P ends with exactly the metrics of
# an uninterrupted run. The kill during a write is exact, not timed: the helper
# kill_on_create (inotify) kills the rank the moment a checkpoint's .partial file appears.
source "$(dirname "$0")/../cli/lib.sh"
HELPERS=${CAR_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}/tests/faults
# 20 epochs (500 steps)
small_run "$TMP/a" 20 4
PY=/usr/bin/python3
expect_ok "uninterrupted run" -- mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg"

ranks_of() { pgrep -P "$1" -f car_train; } # the ranks are mpirun's children
# start DIR: a run in the background; sets PID (mpirun) and RANK (the pid of its last rank). It sleeps
# 20 ms per step (CAR_TEST_STEP_SLEEP_MS; the numbers are unchanged) so that it is still running half
# a second after step 8 on any machine, and is not ended early by patience.
start() {
    setsid env CAR_TEST_STEP_SLEEP_MS=20 mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$1" >"$1.log" 2>&1 &
    PID=$! RANK=
    local n=0
    until [ "$(ranks_of $PID | wc -l)" -ge 2 ] || [ $n -ge 300 ]; do sleep 0.1; n=$((n + 1)); done
    RANK=$(ranks_of $PID | tail -n 1)
}
# wait_step DIR N: until the latest checkpoint of DIR has step >= N (a given step's file may be
# pruned again before a poll sees it on a fast machine)
wait_step() {
    local n=0 s
    while [ $n -lt 1200 ]; do
        s=$(sed -n 's/^step_0*\([0-9][0-9]*\)\.h5$/\1/p' "$1/checkpoints/latest" 2>/dev/null)
        [ "${s:-0}" -ge "$2" ] && return
        sleep 0.05; n=$((n + 1))
    done
}
# ended NAME T0: the job must end within 30 s of T0 with a non-zero code and no rank left
ended() {
    local name=$1 t0=$2 n=0
    while kill -0 $PID 2>/dev/null && [ $((SECONDS - t0)) -le 30 ]; do sleep 0.2; done
    if kill -0 $PID 2>/dev/null; then
        fail "$name: the job ends within 30 s" "still running"; kill -9 -- -$PID 2>/dev/null
    else pass "$name: the job ends within 30 s ($((SECONDS - t0)) s)"; fi
    wait $PID; local rc=$?
    [ $rc -ne 0 ] && pass "$name: exit non-zero ($rc)" || fail "$name: exit non-zero" "exit 0"
    until ! pgrep -f "run.dir=$3" >/dev/null || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
    pgrep -f "run.dir=$3" >/dev/null && fail "$name: no rank left" "$(pgrep -af "run.dir=$3")" || pass "$name: no rank left"
}
# latest_complete NAME DIR [NOT_STEP]: latest names a checkpoint that opens, whose step is in its
# name, and that is not the one killed mid-write
latest_complete() {
    local out
    out=$($PY - "$2" "${3:--1}" <<'P' 2>&1
import h5py, sys, os
d, killed = sys.argv[1] + "/checkpoints", int(sys.argv[2])
name = open(d + "/latest").read().strip()
step = int(h5py.File(os.path.join(d, name), "r").attrs["step"])
ok = name == "step_%08d.h5" % step and step != killed
print(("ok" if ok else "FAIL") + " %s (step %d, killed %d)" % (name, step, killed))
P
)
    LATEST=$(cat "$2/checkpoints/latest" 2>/dev/null)
    [[ $out == ok* ]] && pass "$1: latest names a complete checkpoint (${out#ok })" || fail "$1: latest names a complete checkpoint" "$out"
}
resume_exact() {
    expect_ok "$1: resume at the same P" -- mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$2" -o run.resume=true
    grep -q "resumed from $2/checkpoints/$LATEST" "$TMP/out.txt" && pass "$1: resumed from latest" ||
        fail "$1: resumed from latest" "$(grep -m1 resumed "$TMP/out.txt")"
    $PY -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); sys.exit(not (a['test']==b['test'] and a['valid']==b['valid'] and a['best_epoch']==b['best_epoch']))" \
        "$TMP/a/results.json" "$2/results.json" 2>/dev/null && pass "$1: resume = uninterrupted, exactly" ||
        fail "$1: resume = uninterrupted, exactly" "$(head -c 300 "$2/results.json" 2>/dev/null)"
}

# 1. mid-step: a while after a checkpoint, between checkpoints
start "$TMP/b"
wait_step "$TMP/b" 8
sleep 0.5
t0=$SECONDS
kill -9 "$RANK"
ended "kill -9 of one rank mid-step" $t0 "$TMP/b"
[ -f "$TMP/b/results.json" ] && fail "mid-step kill landed mid-run" "the run had finished" || pass "mid-step kill landed mid-run"
latest_complete "mid-step" "$TMP/b"
resume_exact "mid-step" "$TMP/b"

# 2. during a checkpoint write (after the second checkpoint, so that an older one exists)
if [ -x "$HELPERS/kill_on_create" ]; then
    start "$TMP/c"
    wait_step "$TMP/c" 8
    hit=$("$HELPERS/kill_on_create" "$TMP/c/checkpoints" .h5.partial "$RANK" 60) # not latest.partial
    t0=$SECONDS
    killed=$(echo "$hit" | sed -n 's/^step_0*\([0-9][0-9]*\)\.h5\.partial$/\1/p')
    [ -n "$killed" ] && pass "killed during the write of $hit" || fail "killed during a checkpoint write" "helper saw '$hit'"
    ended "kill -9 of one rank during a checkpoint write" $t0 "$TMP/c"
    latest_complete "during a write" "$TMP/c" "${killed:--1}"
    resume_exact "during a write" "$TMP/c"
else
    fail "helper kill_on_create" "$HELPERS/kill_on_create is not built (make builds tests/faults/*.c)"
fi
finish
