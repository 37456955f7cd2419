#!/usr/bin/env bash
# Many ranks, end to end: the same training at P = 1, 2, 3, 4 and 8 (more ranks than cores; each
# global batch split by tokens, windows moved to the rank that trains them) gives the same losses
# step by step; one trained model evaluated at P = 1, 2, 3, 4 gives identical metrics; a run at
# -n 64 (oversubscribed) on the synthetic default completes; bad inputs (a checkpoint of another
# model shape, a truncated checkpoint, a dataset that is not the run's, more ranks than items)
# are clear errors on rank 0 that leave the checkpoints as they were.
source "$(dirname "$0")/lib.sh"
synth_prepared "" "$TMP/s" "$TMP/s/dataset.h5" 16 --users 600 --items 250 --seed 9
cat >"$TMP/r.cfg" <<C
data = { path = "$TMP/s/dataset.h5"; };
sid = { levels = 2; codebook = [12, 4]; };
model = { d_model = 16; n_layers = 1; dropout = 0.2; };
train = { epochs = 3; batch_size = 48; log_every = 1; warmup_steps = 5; };
eval = { batch_size = 7; };
run = { dir = "$TMP/p1"; };
C
for p in 1 2 3 4 8; do
    expect_ok "train at -n $p" -- mpirun -n $p "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/p$p"
done
for p in 1 2 3 4; do
    mkdir -p "$TMP/e$p" && cp -r "$TMP/p2/checkpoints" "$TMP/p2/sids.h5" "$TMP/e$p/"
    expect_ok "evaluate the -n 2 model at -n $p" -- mpirun -n $p "$BIN/car_train" "$TMP/r.cfg" -o run.stages=eval -o run.dir="$TMP/e$p"
done
out=$(/usr/bin/python3 - "$TMP" <<'P' 2>&1
import json, sys
t = sys.argv[1]
def losses(p):
    return [(r["step"], r["loss"], r["act_loss"], r["think_loss"]) for r in map(json.loads, open(f"{t}/p{p}/metrics.jsonl")) if r["kind"] == "train"]
def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
ref = losses(1)
for p in (2, 3, 4, 8):
    got = losses(p)
    worst = max((abs(a - b) / abs(b) for g, r in zip(got, ref) for a, b in zip(g[1:], r[1:])), default=1)
    check(f"losses at -n {p} = -n 1 at every step (rel 2e-5)", len(got) == len(ref) > 10 and worst < 2e-5, f"worst {worst:.2e} over {len(got)} steps")
e = [json.load(open(f"{t}/e{p}/results.json")) for p in (1, 2, 3, 4)]
same = all(x["valid"] == e[0]["valid"] and x["test"] == e[0]["test"] and x["slow_thinking"] == e[0]["slow_thinking"] for x in e)
check("one model evaluated at -n 1, 2, 3, 4: identical metrics", same, str([x["test"]["ndcg@10"] for x in e]))
check("evaluation at -n 2 = the training run's own evaluation", e[1]["test"] == json.load(open(f"{t}/p2/results.json"))["test"])
P
)
count_checks "$out"

# bad inputs against a finished run; its checkpoints must stay as they were
sums() { md5sum "$TMP"/p2/checkpoints/* | sort; }
before=$(sums)
expect_error "checkpoint of another model shape (resume)" "car_train: error: checkpoint .*checkpoints/step_.*: tensor params/sid_emb.0 is 12 x 16, this model has 12 x 32" - -- \
    mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/p2" -o run.stages=train -o run.resume=true -o model.d_model=32
expect_error "checkpoint of another model shape (evaluate)" "car_train: error: checkpoint .*checkpoints/step_.*: tensor params/sid_emb.0 is 12 x 16, this model has 12 x 32" - -- \
    mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/p2" -o run.stages=eval -o model.d_model=32
[ "$before" = "$(sums)" ] && pass "failed runs left the checkpoints alone" || fail "failed runs left the checkpoints alone"
cp -r "$TMP/p2" "$TMP/trunc"
latest=$TMP/trunc/checkpoints/$(cat "$TMP/trunc/checkpoints/latest")
truncate -s 5000 "$latest"
expect_error "truncated checkpoint" "car_train: error: .*$(basename "$latest").*(truncated|cannot open)" - -- \
    mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/trunc" -o run.stages=train -o run.resume=true
# another dataset at the run's path: same sizes (only the data differ), then other sizes
cp -r "$TMP/p2" "$TMP/other"
synth_prepared " (other data, same sizes)" "$TMP/o" "$TMP/o/dataset.h5" 16 --users 600 --items 250 --seed 10
cp "$TMP/s/dataset.h5" "$TMP/s/dataset.orig.h5" && cp "$TMP/o/dataset.h5" "$TMP/s/dataset.h5"
expect_error "dataset replaced under a run" "car_train: error: .*another configuration: .*data\.(users|fingerprint)" - -- \
    mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/other" -o run.stages=train -o run.resume=true
synth_prepared " (fewer items)" "$TMP/f" "$TMP/s/dataset.h5" 16 --users 600 --items 200 --seed 10
expect_error "SIDs of another dataset" "car_train: error: .*sids.h5: /sid/codes has 250 items, the dataset 200" - -- \
    mpirun -n 2 "$BIN/car_train" "$TMP/r.cfg" -o run.dir="$TMP/other" -o run.stages=train,eval -o run.resume=true
cp "$TMP/s/dataset.orig.h5" "$TMP/s/dataset.h5"
# more ranks than items
printf '1 2 3\n2 3 1\n3 1 2\n' >"$TMP/tiny.txt"
printf '{"item_id": %d, "text": "thing %d widget"}\n' 1 1 2 2 3 3 >"$TMP/tiny.jsonl"
expect_ok "car_prep (3 items)" -- mpirun -n 1 "$BIN/car_prep" --sequences "$TMP/tiny.txt" --items "$TMP/tiny.jsonl" --out "$TMP/tiny.h5" --dim 2
expect_error "more ranks than items" "car_train: error: .*tiny.h5 has 3 items, fewer than the 4 ranks" - -- \
    mpirun -n 4 "$BIN/car_train" "$TMP/r.cfg" -o data.path="$TMP/tiny.h5" -o sid.levels=0 -o run.dir="$TMP/tiny" -o run.stages=train

# 64 ranks on the synthetic default (configs/demo.cfg), one epoch
synth_prepared " (default)" "$TMP/d" "$TMP/d/dataset.h5" 64 --seed 1
expect_ok "car_train -n 64 --oversubscribe on the synthetic default" -- mpirun -n 64 --oversubscribe "$BIN/car_train" configs/demo.cfg \
    -o data.path="$TMP/d/dataset.h5" -o run.dir="$TMP/n64" -o train.epochs=1
if grep -q '"ranks": 64' "$TMP/n64/results.json" 2>/dev/null && grep -q '"recall@10"' "$TMP/n64/results.json"; then pass "-n 64 reports metrics"
else fail "-n 64 reports metrics" "$(tail -n 3 "$TMP/err.txt")"; fi
finish
