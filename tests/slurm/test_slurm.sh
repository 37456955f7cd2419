#!/usr/bin/env bash
# The job scripts on a real Slurm (scripts/slurm-local.sh: munge, slurmctld, slurmd on this machine,
# installed from Debian when missing, started here and stopped at the end):
# 1. sbatch jobs/train_toys.slurm with overrides ends COMPLETED with the metrics of the same run under mpirun;
# 2. a run stopped by scancel --signal=USR1, then by its time limit (--signal=B:USR1@N), checkpoints,
#    requeues itself twice and ends COMPLETED with exactly the metrics of an uninterrupted run;
# 3. a job array of two experiment cells (jobs/experiments.slurm, a stand-in runner) finishes both;
# 4. a bad config ends FAILED with the one-line error in its output file and is not requeued.
source "$(dirname "$0")/../cli/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LOCAL=$ROOT/scripts/slurm-local.sh
if ! command -v slurmctld >/dev/null && ! command -v apt-get >/dev/null; then
    skip "Slurm job scripts" "no Slurm here and no apt-get to install it"; finish; exit
fi
# one Slurm per machine (fixed ports): a second copy of this test (another make test) waits its turn
exec 9>/var/tmp/car-slurm-test.lock
flock -w 900 9 || { fail "slurm test lock" "another tests/slurm run held /var/tmp/car-slurm-test.lock for 15 minutes"; finish; exit; }
started=0
if ! "$LOCAL" status >/dev/null 2>&1; then
    # 9>&-: the daemons must not inherit (and so hold) the lock
    if "$LOCAL" start >"$TMP/start.log" 2>&1 9>&-; then started=1; pass "slurm-local start"
    else fail "slurm-local start" "$(tail -n 5 "$TMP/start.log")"; finish; exit; fi
fi
trap '[ $started = 1 ] && "$LOCAL" stop >/dev/null 2>&1; rm -rf "$TMP"' EXIT
eval "$("$LOCAL" env)"
export CAR_TRAIN=$BIN/car_train
cd "$ROOT"

synth_prepared "" "$TMP/s" "$TMP/s/dataset.h5" 16 --users 800 --items 300 --seed 9
SMALL=(-o data.path="$TMP/s/dataset.h5" -o sid.levels=2 -o sid.codebook=[12,4] -o model.d_model=16 -o model.n_layers=1
       -o train.batch_size=32 -o train.log_every=1 -o train.patience=1000)
SHORT=("${SMALL[@]}" -o train.epochs=3)
LONG=("${SMALL[@]}" -o train.epochs=40 -o run.checkpoint_every=4)
# the uninterrupted reference of the long run works while the jobs below wait for Slurm
mpirun -n 2 "$BIN/car_train" configs/toys.cfg "${LONG[@]}" -o run.dir="$TMP/ref_long" >"$TMP/ref_long.log" 2>&1 &
ref_pid=$!

field() { scontrol show job -o "$1" 2>/dev/null | grep -o "\b$2=[^ ]*" | head -n 1 | cut -d= -f2; }
# job_end JOBID SECONDS: waits until the job (every task of an array) has ended; prints its JobState(s)
job_end() {
    local n=0 st
    while :; do
        st=$(scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 | sort | tr '\n' ' ')
        [ -n "$st" ] && ! grep -q -E 'PENDING|RUNNING|REQUEUE|CONFIGURING|COMPLETING|SUSPENDED|RESIZING' <<<"$st" && break
        [ $n -ge $((2 * $2)) ] && { scancel "$1" 2>/dev/null; st="still '$st' after $2 s"; break; }
        sleep 0.5; n=$((n + 1))
    done
    echo "${st% }"
}
# until_true SECONDS COMMAND...: polls COMMAND every 0.2 s
until_true() { local n=0; until "${@:2}"; do [ $n -ge $((5 * $1)) ] && return 1; sleep 0.2; n=$((n + 1)); done; }
new_ckpt_after() { ls "$1"/checkpoints/step_*.h5 2>/dev/null | grep -q -v -F "$2"; }
job_is() { [ "$(field "$1" "$2")" = "$3" ]; } # JOBID FIELD VALUE

# compare A B: results.json's valid and test metrics and best epoch identical, losses at every logged step equal
compare() {
    /usr/bin/python3 - "$@" <<'P'
import json, sys
a, b, name = sys.argv[1], sys.argv[2], sys.argv[3]
def load(d):
    r = json.load(open(f"{d}/results.json"))
    steps = {}
    for x in map(json.loads, open(f"{d}/metrics.jsonl")):
        if x["kind"] == "train": steps[x["step"]] = (x["loss"], x["act_loss"], x["think_loss"])
    return r, steps
(ra, sa), (rb, sb) = load(a), load(b)
same = ra["valid"] == rb["valid"] and ra["test"] == rb["test"] and ra["best_epoch"] == rb["best_epoch"]
print(("ok   " if same else "FAIL ") + f"{name}: valid, test and best epoch identical to the mpirun run"
      + ("" if same else f": {ra['test']} vs {rb['test']}"))
same = len(sa) > 50 and sa == sb
print(("ok   " if same else "FAIL ") + f"{name}: loss, act and think loss at each of {len(sb)} steps identical"
      + ("" if same else f" ({len(sa)} steps logged vs {len(sb)})"))
P
}

# 1. the named entry as a user submits it, overrides passed through
expect_ok "mpirun reference run (short)" -- mpirun -n 2 "$BIN/car_train" configs/toys.cfg "${SHORT[@]}" -o run.dir="$TMP/ref_short"
jid=$(sbatch --parsable -o "$TMP/job1.out" jobs/train_toys.slurm "${SHORT[@]}" -o run.dir="$TMP/job1")
st=$(job_end "$jid" 120)
if [ "$st" = COMPLETED ] && [ -f "$TMP/job1/results.json" ]; then pass "sbatch jobs/train_toys.slurm: COMPLETED, results.json"
else fail "sbatch jobs/train_toys.slurm: COMPLETED, results.json" "state $st" "$(tail -n 5 "$TMP/job1.out")"; fi
[ -f "$TMP/job1/results.json" ] && count_checks "$(compare "$TMP/ref_short" "$TMP/job1" "sbatch = mpirun" 2>&1)"

# 4. a bad config: FAILED, the error line in the output file, no requeue
jid=$(sbatch --parsable -o "$TMP/bad.out" jobs/train_toys.slurm "${SHORT[@]}" -o train.lr=-1 -o run.dir="$TMP/bad")
st=$(job_end "$jid" 60)
errs=$(grep -c '^car_train: error: .*train\.lr' "$TMP/bad.out")
if [ "$st" = FAILED ] && [ "$(field "$jid" Restarts)" = 0 ] && [ "$errs" = 1 ] && ! grep -q requeue "$TMP/bad.out"; then
    pass "bad config: FAILED, one error line naming the key, not requeued"
else fail "bad config: FAILED, one error line naming the key, not requeued" "state $st, restarts $(field "$jid" Restarts), $errs error lines" "$(head -n 5 "$TMP/bad.out")"; fi

# 3. a job array of two cells, each a one-rank task, through a stand-in with the runner's interface
cat >"$TMP/exp.sh" <<E
#!/bin/bash
case \$1 in
    --list) echo "toys/a 1"; echo "toys/b 2";;
    --only) exec mpirun -n 1 "$BIN/car_train" configs/toys.cfg $(printf '%q ' "${SHORT[@]}")-o train.seed=\$4 -o run.dir="$TMP/cell_\${2#toys/}_\$4";;
esac
E
chmod +x "$TMP/exp.sh"
jid=$(CAR_EXPERIMENTS=$TMP/exp.sh sbatch --parsable --array=1-2 -n 1 -o "$TMP/arr_%a.out" jobs/experiments.slurm)
st=$(job_end "$jid" 120)
if [ "$st" = "COMPLETED COMPLETED" ] && [ -f "$TMP/cell_a_1/results.json" ] && [ -f "$TMP/cell_b_2/results.json" ]; then
    pass "job array: both cells (line 1 = toys/a seed 1, line 2 = toys/b seed 2) COMPLETED with results"
else fail "job array: both cells COMPLETED with results" "states '$st'" "$(tail -n 3 "$TMP"/arr_*.out)"; fi

# 2. preemption: scancel --signal=USR1 (to the ranks), then the time limit's B:USR1 (to this script)
wait "$ref_pid" && pass "mpirun reference run (long)" || fail "mpirun reference run (long)" "$(tail -n 3 "$TMP/ref_long.log")"
# 100 ms a step (car_train's CAR_TEST_STEP_SLEEP_MS, exported by sbatch): the run outlasts the time-limit
# signal (slurmctld checks every 30 s) on an idle machine too; the arithmetic is unchanged
jid=$(CAR_TEST_STEP_SLEEP_MS=100 sbatch --parsable -o "$TMP/job2.out" --time=5 --signal=B:USR1@50 jobs/train_toys.slurm "${LONG[@]}" -o run.dir="$TMP/job2")
if until_true 120 new_ckpt_after "$TMP/job2" none; then scancel --signal=USR1 "$jid"; fi
until_true 120 job_is "$jid" Restarts 1
until_true 120 job_is "$jid" JobState RUNNING
last=$(ls "$TMP/job2"/checkpoints/step_*.h5 | tail -n 1)
# training goes on after the resume: a time limit of one minute makes Slurm send B:USR1 (remaining
# time <= 50 s, checked every 30 s by slurmctld) within 10-40 s
if until_true 120 new_ckpt_after "$TMP/job2" "$last"; then scontrol update JobId="$jid" TimeLimit=1; fi
until_true 120 job_is "$jid" Restarts 2 && scontrol update JobId="$jid" TimeLimit=5
st=$(job_end "$jid" 240)
stops=$(grep -c "^stopped by a signal" "$TMP/job2.out")
resumes=$(grep -c "^resumed from" "$TMP/job2.out")
if [ "$st" = COMPLETED ] && [ "$(field "$jid" Restarts)" = 2 ] && [ "$stops" = 2 ] && [ "$resumes" = 2 ] && [ -f "$TMP/job2/results.json" ]; then
    pass "USR1 and time limit: 2 checkpoints, 2 requeues, 2 resumes, COMPLETED"
else fail "USR1 and time limit: 2 checkpoints, 2 requeues, 2 resumes, COMPLETED" "state $st, restarts $(field "$jid" Restarts), $stops stops, $resumes resumes" \
    "$(grep -E 'car job|stopped|resumed|error|CANCELLED' "$TMP/job2.out" | cut -c1-160)"; fi
[ -f "$TMP/job2/results.json" ] && count_checks "$(compare "$TMP/ref_long" "$TMP/job2" "preempted twice = uninterrupted" 2>&1)"
echo "job record of the preempted run:"; scontrol show job "$jid" | sed 's/^/    /'
finish
