#!/usr/bin/env bash
# The experiment machinery of issue 11 on a tiny synthetic "set":
# - sid.method random and lsh from the command line: codes identical at -n 1, 2, 3, the method in
#   sid_report.json and sids.h5, a method change recomputes, lsh with a codebook that is not a power of
#   two is a one-line error;
# - scripts/mpirun.sh binds no core (two cells side by side would share core 0);
# - scripts/experiments.sh (pointed at the set with CAR_CONFIGS / CAR_SETS / CAR_RUNS / CAR_RESULTS):
#   --list, --dry-run, a bad --only, two cells (car, uidonly = sid.levels 0 end to end), a second run
#   that skips both, a USR1 that stops a running cell with a checkpoint (exit 75);
# - per-user ranks: the runner's .ranks.gz, and one model evaluated at -n 1, 2, 3 writes identical
#   ranks_test.bin;
# - analysis/report.py, analysis/plot_sid_depth.py and analysis/plot_training.py --sets over the
#   runner's output.
source "$(dirname "$0")/lib.sh"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
synth_prepared " (tiny set)" "$TMP/s" "$TMP/tiny.h5" 16 --users 300 --items 120 --seed 4
mkdir -p "$TMP/configs"
cat >"$TMP/configs/tiny.cfg" <<C
data = { path = "$TMP/tiny.h5"; max_history = 10; };
sid = { levels = 3; codebook = [8, 4, 4]; };
model = { d_model = 16; n_layers = 1; n_heads = 2; dropout = 0.1; };
train = { epochs = 2; batch_size = 64; lr = 3e-3; warmup_steps = 2; log_every = 5; };
run = { dir = "$TMP/runs/tiny"; };
C
CFG=$TMP/configs/tiny.cfg

# ---------------------------------------------------------------- sid.method
for method in random lsh; do
    for p in 1 2 3; do
        expect_ok "sid.method=$method at -n $p" -- mpirun -n $p "$BIN/car_train" "$CFG" -o run.stages=sid \
            -o sid.method=$method -o run.dir="$TMP/sid_${method}_$p"
    done
done
out=$($PY - "$TMP" <<'P' 2>&1
import json, sys, h5py, numpy as np
t = sys.argv[1]
def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
codes = {m: [h5py.File(f"{t}/sid_{m}_{p}/sids.h5", "r")["/sid/codes"][()] for p in (1, 2, 3)] for m in ("random", "lsh")}
for m, c in codes.items():
    check(f"{m} codes identical at -n 1, 2, 3", all(x.tobytes() == c[0].tobytes() for x in c))
    check(f"{m} codes in range of [8, 4, 4] and every code used",
          c[0].shape == (120, 3) and all(set(c[0][:, l]) == set(range(k)) for l, k in enumerate((8, 4, 4))))
    rep = json.load(open(f"{t}/sid_{m}_1/sid_report.json"))
    check(f"{m}: sid_report.json names the method", rep.get("method") == m, str(rep.get("method")))
    check(f"{m}: sids.h5 names the method", h5py.File(f"{t}/sid_{m}_1/sids.h5", "r").attrs["method"] in (m, m.encode()))
check("random and lsh codes differ", codes["random"][0].tobytes() != codes["lsh"][0].tobytes())
P
)
count_checks "$out"
mpirun -n 1 "$BIN/car_train" "$CFG" -o run.stages=sid -o sid.method=lsh -o run.dir="$TMP/sid_lsh_1" >"$TMP/o.txt" 2>&1
grep -q "reusing" "$TMP/o.txt" && pass "same method: sids.h5 reused" || fail "same method: sids.h5 reused" "$(grep sid: "$TMP/o.txt" | head -3)"
mpirun -n 1 "$BIN/car_train" "$CFG" -o run.stages=sid -o run.dir="$TMP/sid_lsh_1" >"$TMP/o.txt" 2>&1
grep -q "recomputing.*sid.method = lsh, now rkmeans" "$TMP/o.txt" && pass "method change: sids.h5 recomputed" ||
    fail "method change: sids.h5 recomputed" "$(grep sid: "$TMP/o.txt" | head -3)"
expect_error "lsh needs powers of two" "car_train: error: key 'sid.codebook' = 12 at level 1: sid.method = lsh needs a power of two" \
    "$TMP/sid_bad/sids.h5" -- mpirun -n 1 "$BIN/car_train" "$CFG" -o run.stages=sid -o sid.method=lsh -o sid.codebook=[12,4,4] \
    -o run.dir="$TMP/sid_bad"

# ---------------------------------------------------------------- the runner
# the launcher binds no core: two one-rank cells side by side must not share core 0 (Open MPI binds
# each mpirun's ranks from the first core up, blind to the other)
want=$(grep Cpus_allowed_list /proc/self/status)
got=$("$REPO/scripts/mpirun.sh" -n 1 grep Cpus_allowed_list /proc/self/status 2>&1)
[ "$got" = "$want" ] && pass "scripts/mpirun.sh: a rank may run on every core ($want)" ||
    fail "scripts/mpirun.sh: a rank may run on every core" "rank: $got" "shell: $want"
export CAR_SETS=tiny CAR_CONFIGS=$TMP/configs CAR_RUNS=$TMP/runs CAR_RESULTS=$TMP/results CAR_BIN=$BIN CAR_SEEDS="1 2 3"
RUN=("$REPO/scripts/experiments.sh")
n=$("${RUN[@]}" --list | wc -l)
first=$("${RUN[@]}" --list | head -n 1)
[ "$n" = 30 ] && [ "$first" = "tiny/car 1" ] && pass "--list: 10 variants x 3 seeds, 'SET/VARIANT SEED'" ||
    fail "--list: 10 variants x 3 seeds" "$n lines, first '$first'"
dry=$("${RUN[@]}" --dry-run --only 'tiny/depth*' --seed 2)
grep -q "sid.levels=4 -o sid.codebook=\[8,4,4,4\] -o train.seed=2 -o run.dir=$TMP/runs/tiny/depth4_s2" <<<"$dry" &&
    pass "--dry-run: depth 4 extends the config's codebook" || fail "--dry-run: depth 4 extends the config's codebook" "$dry"
expect_error "--only matching no cell" "experiments.sh: no cell matches --only 'tiny/nope'" - -- "${RUN[@]}" --only tiny/nope
expect_ok "two cells (car, uidonly), 2 at a time" -- "${RUN[@]}" --only tiny/car,tiny/uidonly --seed 1 --jobs 2
for c in car uidonly; do
    if [ -f "$TMP/results/tiny/${c}_s1.json" ] && grep -q '"ndcg@10"' "$TMP/results/tiny/${c}_s1.json"; then
        pass "$c: results copied to results/tiny/${c}_s1.json"
    else fail "$c: results copied" "$(tail -n 3 "$TMP/runs/tiny/${c}_s1.log" 2>/dev/null)"; fi
done
grep -q "levels = 0;" "$TMP/runs/tiny/uidonly_s1/config.cfg" && [ ! -e "$TMP/runs/tiny/uidonly_s1/sids.h5" ] &&
    pass "uidonly: sid.levels = 0 end to end, no SIDs" || fail "uidonly: sid.levels = 0 end to end"
again=$("${RUN[@]}" --only tiny/car,tiny/uidonly --seed 1 2>&1)
[ "$(grep -c '^skip tiny/' <<<"$again")" = 2 ] && ! grep -q '^start' <<<"$again" && pass "second run skips both finished cells" ||
    fail "second run skips both finished cells" "$again"
again=$(CAR_EXTRA="-o train.epochs=3" "${RUN[@]}" --only tiny/car --seed 1 --dry-run 2>&1)
grep -q "^scripts/mpirun.sh.*train.epochs=3" <<<"$again" && pass "another effective config (epochs) is not finished" ||
    fail "another effective config (epochs) is not finished" "$again"

touch "$TMP/tiny.h5"
again=$("${RUN[@]}" --only tiny/car --seed 1 --dry-run 2>&1)
grep -q "^scripts/mpirun.sh.*run.dir=$TMP/runs/tiny/car_s1" <<<"$again" && pass "a dataset newer than the results: the cell runs again" ||
    fail "a dataset newer than the results: the cell runs again" "$again"

# a stop signal: the running cell checkpoints and stops, the runner exits 75
# (epochs and a patience it cannot reach, 20 ms per step: the cell must still run when USR1 lands)
CAR_TEST_STEP_SLEEP_MS=20 CAR_EXTRA="-o train.epochs=400 -o train.patience=400 -o run.checkpoint_every=5" "${RUN[@]}" --only tiny/nofusion --seed 3 >"$TMP/stop.txt" 2>&1 &
rpid=$!
for _ in $(seq 150); do grep -q "^epoch [0-9]* step" "$TMP/runs/tiny/nofusion_s3.log" 2>/dev/null && break; sleep 0.2; done
kill -USR1 $rpid
wait $rpid
rc=$?
[ $rc = 75 ] && grep -q "^stopped tiny/nofusion seed 3" "$TMP/stop.txt" && [ -f "$TMP/runs/tiny/nofusion_s3/checkpoints/latest" ] &&
    pass "USR1: the cell checkpoints and stops, exit 75" || fail "USR1: the cell checkpoints and stops, exit 75" "exit $rc" "$(cat "$TMP/stop.txt")"

# ---------------------------------------------------------------- per-user ranks
zcat "$TMP/results/tiny/car_s1.ranks.gz" >"$TMP/ranks.txt" 2>/dev/null
[ "$(grep -vc '^#' "$TMP/ranks.txt")" = 300 ] && pass "ranks.gz: one line per user" || fail "ranks.gz: one line per user" "$(head -3 "$TMP/ranks.txt")"
for p in 1 2 3; do
    mkdir -p "$TMP/e$p" && cp -r "$TMP/runs/tiny/car_s1/checkpoints" "$TMP/runs/tiny/car_s1/sids.h5" "$TMP/e$p/"
    expect_ok "evaluate at -n $p" -- mpirun -n $p "$BIN/car_train" "$CFG" -o run.stages=eval -o run.dir="$TMP/e$p" -o train.seed=1
done
cmp -s "$TMP/e1/ranks_test.bin" "$TMP/e2/ranks_test.bin" && cmp -s "$TMP/e1/ranks_test.bin" "$TMP/e3/ranks_test.bin" &&
    cmp -s "$TMP/e1/ranks_test.bin" "$TMP/runs/tiny/car_s1/ranks_test.bin" && cmp -s "$TMP/e1/ranks_valid.bin" "$TMP/e3/ranks_valid.bin" &&
    pass "ranks_test.bin and ranks_valid.bin identical at -n 1, 2, 3" || fail "ranks identical at -n 1, 2, 3"

# ---------------------------------------------------------------- analysis
expect_ok "report.py" -- "$PY" "$REPO/analysis/report.py" --results "$TMP/results" --sets tiny,beauty --out "$TMP/RESULTS.md"
out=$($PY - "$TMP/RESULTS.md" "$TMP/results/tiny/car_s1.json" <<'P' 2>&1
import json, re, sys
text, car = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
tiny = text.split("## Tiny")[1].split("## ")[0] if "## Tiny" in text else ""
rows = {l.split("|")[1].strip(): l for l in tiny.splitlines() if l.startswith("| ")}
r5 = f"{car['test']['recall@5']:.4f}".replace("0.", ".", 1)
check("CAR row holds its Recall@5", r5 in rows.get("CAR", ""), rows.get("CAR", "no CAR row"))
check("UID-only row has its seed and a paired-test column", "| 1 |" in rows.get("UID-only", "") and
      ("no per-user ranks" in rows["UID-only"] or any(c in rows["UID-only"] for c in ("< 1e-4", "0.", "1.0"))), rows.get("UID-only", ""))
check("missing cells show a dash", "| SID depth 4 | — |" in text)
check("published rows with their source (Beauty)",
      re.search(r"\| TIGER \| published \| [*]*\.0454[*]* \| [*]*\.0321[*]* \| [*]*\.0648[*]* \| [*]*\.0384[*]* \|.*TIGER paper", text) is not None)
check("the exact command of a cell", "-o sid.levels=0 -o train.seed=1" in text)
claim = {l.split(":")[0]: l for l in tiny.splitlines() if l.startswith("- ")}
sids = claim.get("- SIDs help", "")
check("claims: CAR vs UID-only paired, with a verdict", " p " in sids and ("**holds**" in sids or "**fails here**" in sids), sids)
check("claims: a claim without its cells says so", "not run yet" in claim.get("- CAR beats AR (SIDs generated token by token, beam search)", ""),
      str(list(claim)))
check("claims: the depth curve holds CAR's Recall@5 at depth 3", f"3: {r5}" in claim.get("- Recall@5 by SID depth (0 = UID-only, 3 = CAR)", ""))
check("claims: the BLAS kernel of every cell", "(BLAS kernel " in text)
P
)
count_checks "$out"
# the verdicts and the depth rise on made-up per-user values
out=$($PY - "$REPO/analysis" <<'P' 2>&1
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import report
def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
check("verdict: claimed direction, significant", report.verdict(0.01, 0.001) == "**holds**")
check("verdict: not significant fails", "no significant" in report.verdict(0.01, 0.2))
check("verdict: significant the other way fails", "other way" in report.verdict(-0.01, 0.001))
check("verdict: NaN p fails", "fails" in report.verdict(0.01, float("nan")))
rng = np.random.default_rng(0)
old = np.array([1, 0, 0, 0, np.nan] * 200, float)
new = np.array([1, 1, 0, 0, 1] * 200, float)
rel, lo, hi, p = report.relative_rise(new, old, 200, rng)
check("relative rise: users without a target left out", abs(rel - 1.0) < 1e-12, str(rel))
check("relative rise: interval around it, small p", lo < rel < hi and p < 1e-4, f"{lo} {hi} {p}")
check("relative rise: nothing to compare", report.relative_rise(new, np.zeros(1000), 10, rng) is None)
P
)
count_checks "$out"
expect_ok "plot_sid_depth.py" -- "$PY" "$REPO/analysis/plot_sid_depth.py" --results "$TMP/results" --sets tiny --out "$TMP/fig/sid_depth.png"
[ "$(stat -c %s "$TMP/fig/sid_depth.png" 2>/dev/null || echo 0)" -gt 20000 ] && pass "sid_depth.png written" || fail "sid_depth.png written"
[ -s "$TMP/results/tiny/car_s1.metrics.jsonl" ] && pass "the runner copies the training log" || fail "the runner copies the training log"
expect_ok "plot_training.py --sets" -- "$PY" "$REPO/analysis/plot_training.py" --sets tiny --results "$TMP/results" --out-dir "$TMP/fig"
[ "$(stat -c %s "$TMP/fig/training_tiny.png" 2>/dev/null || echo 0)" -gt 20000 ] && pass "training_tiny.png written" ||
    fail "training_tiny.png written"
finish
