#!/usr/bin/env bash
# Soak test of checkpoints and resume (issue 9; not in CI): CYCLES cycles of demo training
# (configs/demo.cfg, made small, on car_synth data), each started with run.resume=true at a
# P drawn from {1,2,3,4} (or fixed with -p) and, at a random moment, killed with SIGKILL of
# mpirun or of one rank (a moment after the run ends lets it finish). A finished run is compared
# with an uninterrupted run: exactly equal metrics where every segment ran at the reference's
# P, within noise otherwise (resuming at another P changes the summation order). Prints a
# summary (and writes it to -o FILE).
#   scripts/soak.sh [-n CYCLES] [-p P] [-s SEED] [-o SUMMARY]      (BUILD=build by default)
set -u
cd "$(dirname "$0")/.."
CYCLES=100 FIXED= SEED=$$ OUT=
while getopts n:p:s:o: opt; do
    case $opt in n) CYCLES=$OPTARG;; p) FIXED=$OPTARG;; s) SEED=$OPTARG;; o) OUT=$OPTARG;; *) exit 2;; esac
done
RANDOM=$SEED
BIN=$PWD/${BUILD:-build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
WORK=$(mktemp -d /tmp/soak.XXXXXX)
RANKS=() # pids of the ranks of the job in flight, killed at exit if still there
cleanup() { [ ${#RANKS[@]} -gt 0 ] && kill -9 "${RANKS[@]}" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
log() { echo "$*" | tee -a "$WORK/summary.txt"; }
die() { echo "soak: $*" >&2; exit 1; }

"$BIN/car_synth" --out "$WORK/data" --users 1000 --items 300 --seed 4 >/dev/null || die "car_synth failed"
mpirun -n 2 "$BIN/car_prep" --sequences "$WORK/data/sequences.txt" --items "$WORK/data/items.jsonl" \
    --out "$WORK/data/dataset.h5" --dim 32 >/dev/null || die "car_prep failed"
TRAIN=("$BIN/car_train" configs/demo.cfg -o data.path="$WORK/data/dataset.h5" -o train.epochs=3 -o model.d_model=32
       -o train.batch_size=64 -o run.checkpoint_every=5)

# uninterrupted references (and their durations, which bound the kill moments)
declare -A DUR
PS=${FIXED:-1 2 3 4}
for p in $PS; do
    t0=$(date +%s.%N)
    mpirun -n "$p" "${TRAIN[@]}" -o run.dir="$WORK/ref$p" >"$WORK/ref$p.log" 2>&1 || die "reference run at P=$p failed"
    DUR[$p]=$(echo "$(date +%s.%N) - $t0" | bc)
done

# compare RUN_DIR P_LIST: "exact", "noise" or "DIFFERENT ..." against the reference at P
compare() {
    /usr/bin/python3 - "$1" "$WORK" "$2" <<'P'
import json, sys
run, work, ps = sys.argv[1], sys.argv[2], sys.argv[3].split()
same = len(set(ps)) == 1
ref = json.load(open(f"{work}/ref{ps[-1]}/results.json"))
got = json.load(open(f"{run}/results.json"))
if same:
    ok = got["test"] == ref["test"] and got["valid"] == ref["valid"] and got["best_epoch"] == ref["best_epoch"]
    print("exact" if ok else f"DIFFERENT (same P {ps[0]}): test {got['test']} vs {ref['test']}")
else:
    d = max(abs(got["test"][k] - ref["test"][k]) for k in ("recall@10", "ndcg@10"))
    print(f"noise {d:.4f}" if d < 0.03 else f"DIFFERENT (P {' '.join(ps)}): max |d| {d:.4f}")
P
}

# one cycle: start at P with resume, kill at a random moment; sets STATUS
cycle() {
    local dir=$1 p=$2
    setsid mpirun -n "$p" "${TRAIN[@]}" -o run.dir="$dir" -o run.resume=true >>"$dir.log" 2>&1 &
    local pid=$! n=0
    until [ "$(pgrep -P $pid -f car_train | wc -l)" -ge "$p" ] || ! kill -0 $pid 2>/dev/null || [ $n -ge 300 ]; do sleep 0.05; n=$((n + 1)); done
    mapfile -t RANKS < <(pgrep -P $pid -f car_train)
    # a moment in [0.2 s, 1.1 x the uninterrupted duration]
    local span=$(printf '%.0f' "$(echo "${DUR[$p]} * 1100 - 200" | bc)")
    local ms=$((200 + ((RANDOM << 15) | RANDOM) % span))
    local end=$(($(date +%s%3N) + ms))
    while kill -0 $pid 2>/dev/null && [ "$(date +%s%3N)" -lt $end ]; do sleep 0.05; done
    if kill -0 $pid 2>/dev/null; then
        if [ $((RANDOM % 2)) -eq 0 ]; then STATUS="kill mpirun"; kill -9 $pid
        else STATUS="kill rank"; kill -9 "${RANKS[$((RANDOM % ${#RANKS[@]}))]}" 2>/dev/null; fi
        STATUS="$STATUS at ${ms} ms"
    fi
    wait $pid 2>/dev/null; local rc=$?
    n=0; while [ $n -lt 100 ] && kill -0 "${RANKS[@]}" 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
    kill -0 "${RANKS[@]}" 2>/dev/null && { STATUS="$STATUS, orphan ranks killed"; kill -9 "${RANKS[@]}" 2>/dev/null; sleep 0.5; }
    RANKS=()
    case "$STATUS" in kill*) ;; *) STATUS=$([ $rc -eq 0 ] && echo finished || echo "FAILED (exit $rc)");; esac
    local latest="$dir/checkpoints/latest"
    if [ -f "$latest" ] && [ ! -f "$dir/checkpoints/$(cat "$latest")" ]; then STATUS="$STATUS, LATEST NAMES A MISSING FILE"; fi
}

pdesc=${FIXED:-"random in 1..4"}
log "soak $(date -u +%Y-%m-%dT%H:%MZ): $CYCLES cycles, P $pdesc, seed $SEED, $(nproc) CPUs"
log "data: car_synth 1000 users x 300 items; configs/demo.cfg with epochs 3, d_model 32, batch 64, checkpoint_every 5 (48 steps)"
for p in $PS; do log "reference P=$p: $(printf '%.1f' "${DUR[$p]}") s, test $(/usr/bin/python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['test']; print('R@10 %.4f N@10 %.4f' % (t['recall@10'], t['ndcg@10']))" "$WORK/ref$p/results.json")"; done
run=1 kills=0 exact=0 noise=0 bad=0 failed=0 ps=() maxd=0
for c in $(seq 1 "$CYCLES"); do
    p=${FIXED:-$((RANDOM % 4 + 1))}
    ps+=("$p")
    STATUS=
    cycle "$WORK/run$run" "$p"
    line="cycle $c: run $run P=$p: $STATUS"
    case "$STATUS" in kill*) kills=$((kills + 1));; FAILED*|*MISSING*) failed=$((failed + 1));; esac
    if [ "$STATUS" = finished ]; then
        verdict=$(compare "$WORK/run$run" "${ps[*]}")
        line="$line; P used ${ps[*]}: $verdict"
        case "$verdict" in exact) exact=$((exact + 1));; noise*) noise=$((noise + 1)); d=${verdict#noise }
            maxd=$(echo "if ($d > $maxd) $d else $maxd" | bc);; *) bad=$((bad + 1));; esac
        run=$((run + 1)) ps=()
    fi
    log "$line"
done
if [ ${#ps[@]} -gt 0 ]; then # finish the last run without kills
    mpirun -n "${ps[-1]}" "${TRAIN[@]}" -o run.dir="$WORK/run$run" -o run.resume=true >>"$WORK/run$run.log" 2>&1 || failed=$((failed + 1))
    verdict=$(compare "$WORK/run$run" "${ps[*]}")
    log "run $run finished after the last cycle; P used ${ps[*]}: $verdict"
    case "$verdict" in exact) exact=$((exact + 1));; noise*) noise=$((noise + 1));; *) bad=$((bad + 1));; esac
fi
log "summary (P $pdesc): $CYCLES cycles, $kills kills, $((exact + noise + bad)) runs finished: $exact exactly equal (same P throughout), $noise within noise (max |d| R@10/N@10 $maxd), $bad different, $failed failed cycles"
[ -n "$OUT" ] && cp "$WORK/summary.txt" "$OUT"
[ $bad -eq 0 ] && [ $failed -eq 0 ]
