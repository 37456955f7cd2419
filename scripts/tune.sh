#!/usr/bin/env bash
# One point of a tuning search, chosen on VALIDATION only (issues 11 and 14):
#   scripts/tune.sh SET NAME [--prep "CAR_PREP FLAGS"] [--ranks P] [-o section.key=value ...]
# trains configs/SET.cfg with the overrides into runs/tune/SET/NAME (resumable: a stopped or killed
# point continues from its checkpoint; a finished one is not run again), on a dataset prepared
# with the given car_prep flags (data/SET/prep-<hash>.h5, made once and reused; without --prep the
# config's data.path), and appends one row to analysis/results/SET/tuning.md: the point's name,
# its prep flags and overrides, validation Recall@5 / NDCG@10 at its best epoch, the best and last
# epochs and the wall time. The test split is never printed nor written: read it only for the
# configuration the search chose (results.json of that point, or a 3-seed run of it).
# Environment: AMAZON_DIR (../shared/data/amazon), CAR_BIN (build/bin), CAR_RESULTS (analysis/results).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
die() { echo "tune.sh: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: scripts/tune.sh SET NAME [--prep \"FLAGS\"] [--ranks P] [-o key=value ...]"
SET=$1 NAME=$2
shift 2
[[ $NAME =~ ^[A-Za-z0-9_.+-]+$ ]] || die "NAME '$NAME': letters, digits and _.+- only"
CFG=${CAR_CONFIGS:-configs}/$SET.cfg
[ -f "$CFG" ] || die "$CFG: no such config"
BIN=${CAR_BIN:-build/bin} AMAZON=${AMAZON_DIR:-../shared/data/amazon} RESULTS=${CAR_RESULTS:-analysis/results}
prep="" ranks=2 overrides=()
while [ $# -gt 0 ]; do
    case $1 in
        --prep) [ $# -ge 2 ] || die "--prep needs car_prep flags"; prep=$2; shift;;
        --ranks) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--ranks needs a positive integer"; ranks=$2; shift;;
        -o) [[ ${2:-} == *=* ]] || die "-o needs section.key=value"; overrides+=(-o "$2"); shift;;
        *) die "unknown argument '$1'";;
    esac
    shift
done
TABLE=$RESULTS/$SET/tuning.md
mkdir -p "$RESULTS/$SET" runs/tune/"$SET"
if [ -f "$TABLE" ] && grep -q "^| $NAME |" "$TABLE"; then echo "tune.sh: $SET/$NAME is in $TABLE already"; exit 0; fi

data=()
if [ -n "$prep" ]; then
    hash=$(printf '%s' "$prep" | sha1sum | cut -c1-10)
    h5=data/$SET/prep-$hash.h5
    if [ ! -f "$h5" ]; then
        [ -f "$AMAZON/$SET/sequences.txt" ] || die "$AMAZON/$SET/sequences.txt: no such file (set AMAZON_DIR)"
        mkdir -p "data/$SET"
        # shellcheck disable=SC2086 # the flags are words
        scripts/mpirun.sh -n "$ranks" "$BIN/car_prep" --sequences "$AMAZON/$SET/sequences.txt" \
            --items "$AMAZON/$SET/items.jsonl" --out "$h5" $prep >"runs/tune/$SET/prep-$hash.log" 2>&1 ||
            die "car_prep $prep failed: see runs/tune/$SET/prep-$hash.log"
    fi
    data=(-o "data.path=\"$h5\"")
fi
dir=runs/tune/$SET/$NAME
scripts/mpirun.sh -n "$ranks" "$BIN/car_train" "$CFG" "${data[@]}" "${overrides[@]}" -o "run.dir=\"$dir\"" \
    -o run.resume=true >>"$dir.log" 2>&1
rc=$?
[ $rc -eq 75 ] && { echo "tune.sh: $SET/$NAME stopped with a checkpoint: run it again to continue"; exit 75; }
[ $rc -eq 0 ] || die "$SET/$NAME failed (exit $rc): see $dir.log"
[ -f "$TABLE" ] || printf '# Tuning of %s (validation only; seed from the config unless overridden)\n\n| point | car_prep flags | overrides | valid R@5 | valid N@10 | best epoch | epochs run | seconds |\n|---|---|---|---|---|---|---|---|\n' "$SET" >"$TABLE"
/usr/bin/python3 - "$dir/results.json" "$NAME" "$prep" "${overrides[*]:-}" >>"$TABLE" <<'P'
import json, sys
r = json.load(open(sys.argv[1]))
v = r["valid"]
over = " ".join(w for w in sys.argv[4].split() if w != "-o") or "(none)"
print(f"| {sys.argv[2]} | {sys.argv[3] or '(default)'} | {over} | {v['recall@5']:.4f} | {v['ndcg@10']:.4f} | "
      f"{r['best_epoch']} | {r.get('epochs_run', '?')} | {r.get('train_seconds', 0):.0f} |")
P
tail -n 1 "$TABLE"
