#!/usr/bin/env bash
# Checkpoints and resume: a run killed with SIGKILL mid-epoch and resumed from its latest
# checkpoint ends with exactly the metrics of an uninterrupted run (same P), and within noise
# when resumed with another P; SIGUSR1 (Slurm's warning) stops cleanly with a checkpoint; an
# eval-only run of the saved model reproduces the results.
source "$(dirname "$0")/lib.sh"
small_run "$TMP/a" 6 4
expect_ok "uninterrupted run" -- mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg"

# Background runs that this test signals sleep 20 ms per step (CAR_TEST_STEP_SLEEP_MS; the numbers
# are unchanged): unslowed, all 150 steps of this run take a fraction of a second on a fast machine
# and could end before the signal lands.
SLOW=(env CAR_TEST_STEP_SLEEP_MS=20)
# start a run, SIGKILL it once a mid-epoch checkpoint exists
kill_run() { # dir ranks
    setsid "${SLOW[@]}" mpirun -n "$2" "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$1" >"$1.log" 2>&1 &
    local pid=$! n=0
    until ls "$1"/checkpoints/step_000000[1-9]*.h5 >/dev/null 2>&1 || [ $n -ge 600 ]; do sleep 0.05; n=$((n + 1)); done
    kill -9 -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    # ranks that left mpirun's process group must not go on writing into the run directory
    pkill -9 -f "run.dir=$1" 2>/dev/null
    n=0; while pgrep -f "run.dir=$1" >/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
}
mkdir -p "$TMP/b" "$TMP/c"
kill_run "$TMP/b" 2
if [ -f "$TMP/b/results.json" ]; then fail "SIGKILL landed mid-run" "the run finished before the kill"; else pass "SIGKILL landed mid-run"; fi
expect_ok "resume after SIGKILL, same P" -- mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/b" -o run.resume=true
grep -q "resumed from" "$TMP/out.txt" && pass "resume used a checkpoint" || fail "resume used a checkpoint" "$(head -c 300 "$TMP/out.txt")"
kill_run "$TMP/c" 2
expect_ok "resume after SIGKILL with another P (1)" -- mpirun -n 1 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/c" -o run.resume=true

# SIGUSR1: every rank finishes its step, a checkpoint is written, exit 75 (stopped, resumable)
mkdir -p "$TMP/d"
setsid "${SLOW[@]}" mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/d" >"$TMP/d.log" 2>&1 &
pid=$!
n=0; until ls "$TMP/d"/checkpoints/step_*.h5 >/dev/null 2>&1 || [ $n -ge 600 ]; do sleep 0.05; n=$((n + 1)); done
kill -USR1 "$pid"
wait "$pid"; rc=$?
if [ $rc -eq 75 ] && grep -q "stopped by a signal" "$TMP/d.log" && [ ! -f "$TMP/d/results.json" ]; then pass "SIGUSR1 stops cleanly with a checkpoint, exit 75"
else fail "SIGUSR1 stops cleanly with a checkpoint" "exit $rc" "$(tail -n 3 "$TMP/d.log")"; fi
expect_ok "resume after SIGUSR1" -- mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/d" -o run.resume=true

# eval-only from the saved best model
cp "$TMP/a/results.json" "$TMP/a_results.json"
expect_ok "eval stage alone" -- mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.stages=eval
mkdir -p "$TMP/none" && cp "$TMP/a/sids.h5" "$TMP/none/"
expect_error "eval stage without a model" "car_train: error: .*has no trained model" - -- mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.stages=eval -o run.dir="$TMP/none"

out=$(/usr/bin/python3 - "$TMP" <<'P' 2>&1
import json, sys
t = sys.argv[1]
a, b, c, d, e = (json.load(open(f"{t}/{x}")) for x in ("a_results.json", "b/results.json", "c/results.json", "d/results.json", "a/results.json"))
def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
check("SIGKILL + resume (same P) = uninterrupted, exactly", a["test"] == b["test"] and a["valid"] == b["valid"] and a["best_epoch"] == b["best_epoch"], f"{a['test']} vs {b['test']}")
check("SIGUSR1 + resume = uninterrupted, exactly", a["test"] == d["test"] and a["valid"] == d["valid"])
check("resume with another P within noise", abs(a["test"]["recall@10"] - c["test"]["recall@10"]) < 0.03 and abs(a["test"]["ndcg@10"] - c["test"]["ndcg@10"]) < 0.02,
      f"R@10 {a['test']['recall@10']:.4f} vs {c['test']['recall@10']:.4f}")
check("eval-only run reproduces the test metrics", a["test"] == e["test"] and e["best_epoch"] == a["best_epoch"])
P
)
count_checks "$out"
finish
