#!/usr/bin/env bash
# Stops that must never lose or fake a result (issue "trustworthy runs"):
# - a stop signal in the LAST step of an epoch, and with one step per epoch, writes a checkpoint
#   of that exact step, exits 75 ("stopped, resumable"), and resume equals an uninterrupted run;
# - a diverged step (a NaN parameter injected before it) stops every rank with one line naming
#   the step and quantity, keeps the last good checkpoint as latest, writes no results;
# - the eval stage refuses a checkpoint with non-finite parameters;
# - a second car_train on a run.dir in use fails at once, naming the holder's host and pid.
# CAR_TEST_SIGNAL_AT_STEP / CAR_TEST_POISON_AT_STEP are src/train.c's fault-injection hooks.
source "$(dirname "$0")/lib.sh"
small_run "$TMP/a" 3 0
RUN=(mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg")
PY=/usr/bin/python3
ckpt_attr() { $PY -c "import h5py,sys; f=h5py.File(sys.argv[1],'r'); print(*(int(f.attrs[k]) for k in sys.argv[2:]))" "$@"; }
same_results() { # NAME A B
    $PY -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); sys.exit(not (a['test']==b['test'] and a['valid']==b['valid'] and a['best_epoch']==b['best_epoch']))" "$2" "$3" \
        && pass "$1" || fail "$1" "$(head -c 300 "$2")" "$(head -c 300 "$3")"
}
# stop_at NAME DIR STEP EPOCH STEP_IN_EPOCH [overrides]: signal at STEP; expects exit 75 and latest = that step
stop_at() {
    local name=$1 dir=$2 step=$3 epoch=$4 sie=$5; shift 5
    CAR_TEST_SIGNAL_AT_STEP=$step "${RUN[@]}" -o run.dir="$dir" "$@" >"$dir.log" 2>&1
    local rc=$? want
    want=$(printf 'step_%08d.h5' "$step")
    if [ $rc -eq 75 ] && [ "$(cat "$dir/checkpoints/latest" 2>/dev/null)" = "$want" ] && [ ! -f "$dir/results.json" ] &&
        [ "$(ckpt_attr "$dir/checkpoints/$want" step epoch step_in_epoch)" = "$step $epoch $sie" ]; then
        pass "$name: exit 75, checkpoint of step $step"
    else
        fail "$name: exit 75, checkpoint of step $step" "exit $rc, latest $(cat "$dir/checkpoints/latest" 2>/dev/null)" \
            "$(grep -v '^ \|^-\|^$' "$dir.log" | tail -n 3)"
    fi
    expect_ok "$name: resume" -- "${RUN[@]}" -o run.dir="$dir" -o run.resume=true "$@"
}

expect_ok "uninterrupted run" -- "${RUN[@]}"
# 800 users, batch 32: 25 steps per epoch; step 25 is the last of epoch 1
stop_at "signal at the last step of an epoch" "$TMP/b" 25 1 25
same_results "last-step stop + resume = uninterrupted, exactly" "$TMP/a/results.json" "$TMP/b/results.json"
stop_at "signal in the last step of the run" "$TMP/b2" 75 3 25
same_results "stop at the run's last step + resume = uninterrupted" "$TMP/a/results.json" "$TMP/b2/results.json"
expect_ok "uninterrupted run, one step per epoch" -- "${RUN[@]}" -o run.dir="$TMP/one" -o train.batch_size=1024
stop_at "one step per epoch" "$TMP/one_s" 2 2 1 -o train.batch_size=1024
same_results "one step per epoch: stop + resume = uninterrupted" "$TMP/one/results.json" "$TMP/one_s/results.json"

# slow thinking is chosen on validation: no test figure per weight, test only at the chosen one
out=$($PY - "$TMP/a/results.json" <<'P' 2>&1
import json, sys
r = json.load(open(sys.argv[1]))["slow_thinking"]
def check(name, cond, detail=""): print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
sweep = r["valid_sweep"]
check("slow thinking: the sweep holds validation only", all(set(x) == {"think_weight", "valid"} for x in sweep), str(sweep[0]))
best = max(sweep, key=lambda x: (x["valid"]["ndcg@10"], -x["think_weight"]))
check("slow thinking: the chosen weight is validation's best", r["chosen_think_weight"] == best["think_weight"],
      f'{r["chosen_think_weight"]} vs {best["think_weight"]}')
check("slow thinking: test read at the chosen weight", set(r["test_at_chosen"]) >= {"recall@5", "ndcg@10"})
P
)
count_checks "$out"

# a signal during the sid stage: the stage finishes, the run stops before training with exit 75 and
# continues from there; a run stopped before its final evaluation evaluates when run again
CAR_TEST_SIGNAL_AT_START=1 "${RUN[@]}" -o run.dir="$TMP/early" >"$TMP/early.log" 2>&1
rc=$?
if [ $rc -eq 75 ] && [ -f "$TMP/early/sids.h5" ] && [ ! -d "$TMP/early/checkpoints" ] && grep -q "after the sid stage" "$TMP/early.log"; then
    pass "signal during the sid stage: sids.h5 kept, exit 75"
else
    fail "signal during the sid stage: sids.h5 kept, exit 75" "exit $rc" "$(grep -v '^ \|^-\|^$' "$TMP/early.log" | tail -n 2)"
fi
expect_ok "resume after a stop in the sid stage" -- "${RUN[@]}" -o run.dir="$TMP/early" -o run.resume=true
same_results "sid-stage stop + resume = uninterrupted" "$TMP/a/results.json" "$TMP/early/results.json"

# divergence: NaN in a weight before step 30 (epoch 2)
CAR_TEST_POISON_AT_STEP=30 "${RUN[@]}" -o run.dir="$TMP/nan" >"$TMP/nan.log" 2>&1
rc=$?
line=$(grep -m1 '^car_train: error' "$TMP/nan.log")
if [ $rc -ne 0 ] && [[ "$line" == *"step 30: the UID (act) loss is not finite"*"step_00000025.h5) is kept"* ]] &&
    [ "$(cat "$TMP/nan/checkpoints/latest")" = step_00000025.h5 ] && [ ! -f "$TMP/nan/results.json" ] &&
    ! ls "$TMP/nan/checkpoints" | grep -q step_0000003; then
    pass "non-finite loss: every rank stops, one line, last good checkpoint kept, no results"
else
    fail "non-finite loss: every rank stops, one line, last good checkpoint kept, no results" "exit $rc" "$line" \
        "$(ls "$TMP/nan/checkpoints")"
fi

# a checkpoint whose parameters are NaN (checksum made to match, as a model that diverged would be
# saved by an unguarded trainer): the eval stage writes no results
cp "$TMP/a/results.json" "$TMP/a_results.json"
best=$($PY -c "import h5py,sys; print(int(h5py.File(sys.argv[1]+'/checkpoints/'+open(sys.argv[1]+'/checkpoints/latest').read().strip(),'r').attrs['best_step']))" "$TMP/a")
out=$($PY - "$(printf '%s/checkpoints/step_%08d.h5' "$TMP/a" "$best")" <<'P' 2>&1
import sys, h5py, numpy as np
M = (1 << 64) - 1
K = 0x9e3779b97f4a7c15
def mix(x):
    x = (x + K) & M
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M
    return x ^ (x >> 31)
def row_hash(g, row):  # src/checkpoint.c row_hash: four lanes of 64-bit words, then the tail
    n = len(row); h = [mix(g & M), K, (2 * K) & M, (3 * K) & M]
    u32 = row.view(np.uint32).astype(np.uint64); i = 0
    while i + 8 <= n:
        for j in range(4):
            w = int(u32[i + 2 * j]) | (int(u32[i + 2 * j + 1]) << 32)
            h[j] = ((h[j] ^ w) * K) & M; h[j] ^= h[j] >> 32
        i += 8
    while i < n:
        h[0] = ((h[0] ^ int(u32[i])) * K) & M; h[0] ^= h[0] >> 32; i += 1
    return mix(h[0] ^ mix(h[1] ^ mix(h[2] ^ mix(h[3] ^ n))))
with h5py.File(sys.argv[1], "r+") as f:
    d = f["params/lnf.w/value"]; x = d[...].astype(np.float32).reshape(d.shape[0], -1)
    x[0, 0] = np.nan; d[...] = x.reshape(d.shape)
    s = sum(row_hash(r, x[r]) for r in range(x.shape[0])) & M
    d.attrs["checksum"] = np.int64(s - (1 << 64) if s >= 1 << 63 else s)
print("ok   poisoned checkpoint")
P
)
count_checks "$out"
expect_error "eval stage refuses non-finite parameters" "car_train: error: .*holds non-finite parameters" - -- \
    "${RUN[@]}" -o run.stages=eval
cmp -s "$TMP/a/results.json" "$TMP/a_results.json" && pass "results.json untouched by the refused eval" || fail "results.json untouched by the refused eval"

# one car_train per run.dir. The holder must outlive the second run's start-up on any machine (200
# epochs of this model take under 3 s on a fast one), so it is given epochs it will never reach and
# a patience it will never exhaust (early stopping ended it after a few epochs in CI), and is
# stopped by USR1; should the test fail before that, the EXIT trap ends it.
setsid "${RUN[@]}" -o run.dir="$TMP/lock" -o train.epochs=100000 -o train.patience=100000 >"$TMP/lock.log" 2>&1 &
pid=$!
trap 'kill -KILL -- -"$pid" 2>/dev/null; rm -rf "$TMP"' EXIT
n=0; until grep -q "steps per epoch" "$TMP/lock.log" 2>/dev/null || [ $n -ge 600 ]; do sleep 0.05; n=$((n + 1)); done
t0=$(date +%s)
expect_error "a second run on a run.dir in use fails at once" \
    "car_train: error: run.dir '.*/lock' is in use by another car_train \(host [^,]+, pid [0-9]+" - -- \
    "${RUN[@]}" -o run.dir="$TMP/lock" -o run.resume=true
[ $(($(date +%s) - t0)) -le 10 ] && pass "the refusal is immediate" || fail "the refusal is immediate"
kill -0 "$pid" 2>/dev/null && pass "the holder still runs after the refusal" || fail "the holder still runs after the refusal" "$(tail -n 3 "$TMP/lock.log")"
kill -USR1 "$pid"; wait "$pid"; rc=$?
[ $rc -eq 75 ] && pass "the holder was not disturbed (stopped by USR1 with exit 75)" || fail "the holder was not disturbed" "exit $rc"
expect_ok "the lock is released with its holder" -- "${RUN[@]}" -o run.dir="$TMP/lock" -o run.stages=sid
finish
