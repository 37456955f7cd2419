#!/usr/bin/env bash
# The experiment grid of issue 11: for each data set, CAR and its ablations and controls, 3 seeds.
#   scripts/experiments.sh [--list] [--only SET/VARIANT[,...]] [--seed S] [--jobs N] [--dry-run]
# Cells (SET/VARIANT SEED), each `car_train configs/SET.cfg` with overrides, into runs/SET/VARIANT_sSEED/:
#   car       the config as it is (3 SID levels in the committed configs: depth 3)
#   nofusion  -o model.fusion=none          nothink   -o train.alpha=0
#   ar        -o train.mode=ar              uidonly   -o sid.levels=0
#   depth1, depth2, depth4   -o sid.levels=D, codebook: the config's first D sizes (the last repeated)
#   random, lsh              -o sid.method=random|lsh, and -o sid.seed=SEED (a new draw of codes per seed)
# Every cell also gets -o train.seed=SEED -o run.dir=... -o run.resume=true (a stopped cell continues).
# Resumable: a cell is skipped when its results.json exists, is newer than its dataset, and its effective
# configuration has every key of the config file and of the overrides at the same value. Runs N cells at a time (--jobs,
# default 2), each on CAR_RANKS ranks (default 1). As each cell finishes, its results.json, its
# training log and its per-user ranks go to analysis/results/SET/VARIANT_sSEED.json, .metrics.jsonl
# and .ranks.gz (gzip'd text: a comment line, then one line per user of the data set in its order,
# "VALID_RANK TEST_RANK": the 0-based rank of the target among all items, -1 = no target). Exit: 0 all selected cells finished, 75 some cell
# stopped with a checkpoint (USR1/TERM: forwarded to the cells as car_train's "checkpoint and stop";
# run again to continue), 1 some cell failed (its log: runs/SET/VARIANT_sSEED.log).
# Environment: CAR_SETS ("beauty sports toys"), CAR_SEEDS ("1 2 3"), CAR_CONFIGS (configs),
# CAR_RUNS (runs), CAR_RESULTS (analysis/results), CAR_BIN (build/bin), CAR_RANKS (1),
# CAR_EXTRA (more overrides for every cell, e.g. "-o train.epochs=1"), CAR_MPIRUN (scripts/mpirun.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SETS=${CAR_SETS:-"beauty sports toys"} SEEDS=${CAR_SEEDS:-"1 2 3"}
CONFIGS=${CAR_CONFIGS:-configs} RUNS=${CAR_RUNS:-runs} RESULTS=${CAR_RESULTS:-analysis/results}
BIN=${CAR_BIN:-build/bin} RANKS=${CAR_RANKS:-1} EXTRA=${CAR_EXTRA:-} MPIRUN=${CAR_MPIRUN:-scripts/mpirun.sh}
VARIANTS="car nofusion nothink ar uidonly depth1 depth2 depth4 random lsh"
PY=/usr/bin/python3

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "experiments.sh: $*" >&2; exit 2; }

list=0 dry=0 jobs=2 only="" seed_only=""
while [ $# -gt 0 ]; do
    case $1 in
        --list) list=1;;
        --dry-run) dry=1;;
        --only) [ $# -ge 2 ] || die "--only needs SET/VARIANT"; only=$2; shift;;
        --seed) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || die "--seed needs a non-negative integer"; seed_only=$2; shift;;
        --jobs) [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a positive integer"; jobs=$2; shift;;
        -h|--help) usage; exit 0;;
        *) die "unknown argument '$1' (see --help)";;
    esac
    shift
done

# selected SET/VARIANT: --only takes comma-separated shell patterns (beauty/depth*)
selected() {
    [ -z "$only" ] && return 0
    local p
    IFS=, read -ra pats <<<"$only"
    for p in "${pats[@]}"; do [[ $1 == $p ]] && return 0; done
    return 1
}

cells() {
    local set v s
    for set in $SETS; do for v in $VARIANTS; do for s in $SEEDS; do
        selected "$set/$v" || continue
        [ -n "$seed_only" ] && [ "$s" != "$seed_only" ] && continue
        echo "$set/$v $s"
    done; done; done
}

# codebook_for CFG DEPTH: the config's codebook sizes cut or extended (last size repeated) to DEPTH
codebook_for() {
    local sizes
    sizes=$(sed 's/#.*//' "$1" | grep -o 'codebook[[:space:]]*[=:][[:space:]]*\[\{0,1\}[0-9, ]*' | head -n 1 | sed 's/.*[=:]//' | tr -d ' [')
    [ -n "$sizes" ] || sizes=256
    IFS=, read -ra k <<<"$sizes"
    local out=() i
    for ((i = 0; i < $2; i++)); do out+=("${k[i < ${#k[@]} ? i : ${#k[@]} - 1]}"); done
    (IFS=,; echo "[${out[*]}]")
}

# overrides SET VARIANT SEED: the cell's -o arguments, one per line
overrides() {
    local cfg=$CONFIGS/$1.cfg
    case $2 in
        car) ;;
        nofusion) echo "model.fusion=none";;
        nothink) echo "train.alpha=0";;
        ar) echo "train.mode=ar";;
        uidonly) echo "sid.levels=0";;
        depth[0-9]) echo "sid.levels=${2#depth}"; echo "sid.codebook=$(codebook_for "$cfg" "${2#depth}")";;
        random|lsh) echo "sid.method=$2"; echo "sid.seed=$3";;
        *) die "unknown variant $2";;
    esac
    echo "train.seed=$3"
    echo "run.dir=$RUNS/$1/$2_s$3"
    echo "run.resume=true"
}

# finished CFG RESULTS_JSON OVERRIDE...: every key of the config file and of the overrides (and
# CAR_EXTRA) has the same value in the results' effective configuration, and the dataset it names
# is older than the results (make data with other car_prep flags makes every cell of the set again)
finished() {
    [ -f "$2" ] || return 1
    $PY - "$@" <<'P'
import json, os, re, sys
def keys(text):
    out, sec = {}, None
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        m = re.match(r"(\w+)\s*[=:]\s*\{", line)
        if m: sec = m.group(1); continue
        if line.startswith("}"): sec = None; continue
        m = re.match(r"(\w+)\s*[=:]\s*(.*?);?$", line)
        if m and sec: out[f"{sec}.{m.group(1)}"] = m.group(2)
    return out
def norm(v):
    v = v.strip().strip(";").strip().strip('"').replace(" ", "")
    try: return repr(float(v))
    except ValueError: return v.lower()
cfg, res, overs = sys.argv[1], sys.argv[2], sys.argv[3:]
want = {k: norm(v) for k, v in keys(open(cfg).read()).items()}
for o in overs:
    k, _, v = o.partition("=")
    want[k] = norm(v)
try:
    eff = keys(json.load(open(res))["effective_config"])
    have = {k: norm(v) for k, v in eff.items()}
    data_older = os.path.getmtime(eff["data.path"].strip(";").strip().strip('"')) < os.path.getmtime(res)
except Exception:
    sys.exit(1)
sys.exit(0 if data_older and all(have.get(k) == v for k, v in want.items()) else 1)
P
}

# collect SET VARIANT SEED: the finished cell's summary and ranks into RESULTS/SET/
collect() {
    local dir=$RUNS/$1/$2_s$3 out=$RESULTS/$1/$2_s$3
    mkdir -p "$RESULTS/$1"
    cp "$dir/results.json" "$out.json.partial" && mv "$out.json.partial" "$out.json"
    [ -f "$dir/metrics.jsonl" ] && cp "$dir/metrics.jsonl" "$out.metrics.jsonl.partial" && mv "$out.metrics.jsonl.partial" "$out.metrics.jsonl"
    if [ -f "$dir/ranks_valid.bin" ] && [ -f "$dir/ranks_test.bin" ]; then
        { echo "# valid test: 0-based rank of each user's target among all items (dataset user order); -1: no target"
          paste -d' ' <(od -An -v -td4 -w4 "$dir/ranks_valid.bin") <(od -An -v -td4 -w4 "$dir/ranks_test.bin") |
              tr -s ' ' | sed 's/^ //'; } | gzip -n -9 >"$out.ranks.gz.partial" && mv "$out.ranks.gz.partial" "$out.ranks.gz"
    else
        echo "note: $dir has no per-user ranks (ranks_valid.bin, ranks_test.bin)"
    fi
}

# run_cell SET/VARIANT SEED: runs (or skips) one cell; returns car_train's status
run_cell() {
    local set=${1%%/*} variant=${1#*/} seed=$2 cfg o args=()
    cfg=$CONFIGS/$set.cfg
    [ -f "$cfg" ] || { echo "experiments.sh: $cfg: no such config" >&2; return 1; }
    mapfile -t o < <(overrides "$set" "$variant" "$seed")
    local extra=()
    read -ra extra <<<"$EXTRA"
    for ((i = 0; i < ${#extra[@]}; i++)); do [ "${extra[i]}" = -o ] && o+=("${extra[i + 1]}"); done
    local dir=$RUNS/$set/${variant}_s$seed
    if finished "$cfg" "$dir/results.json" "${o[@]}"; then
        echo "skip $set/$variant seed $seed: finished ($dir/results.json)"
        [ $dry -eq 1 ] || [ ! "$dir/results.json" -nt "$RESULTS/$set/${variant}_s$seed.json" ] || collect "$set" "$variant" "$seed"
        return 0
    fi
    for x in "${o[@]}"; do args+=(-o "$x"); done
    local cmd=("$MPIRUN" -n "$RANKS" "$BIN/car_train" "$cfg" "${args[@]}")
    if [ $dry -eq 1 ]; then echo "${cmd[*]}"; return 0; fi
    mkdir -p "$RUNS/$set"
    trap 'true' USR1 TERM # the signal is for the ranks (in this process group); this shell waits for them
    echo "start $set/$variant seed $seed: ${cmd[*]} (log $dir.log)"
    "${cmd[@]}" >>"$dir.log" 2>&1
    local rc=$?
    case $rc in
        0) collect "$set" "$variant" "$seed"; echo "done $set/$variant seed $seed";;
        75) echo "stopped $set/$variant seed $seed (checkpoint saved: run again to continue)";;
        *) echo "FAILED $set/$variant seed $seed: exit $rc (see $dir.log)";;
    esac
    return $rc
}

mapfile -t todo < <(cells)
if [ $list -eq 1 ]; then printf '%s\n' "${todo[@]}"; exit 0; fi
[ ${#todo[@]} -gt 0 ] || die "no cell matches --only '$only'${seed_only:+ --seed $seed_only} (see --list)"
[ $dry -eq 1 ] || [ -x "$BIN/car_train" ] || die "$BIN/car_train: not built (make)"

# a stop signal: no new cell starts; the running ones get USR1 (checkpoint and stop, exit 75)
stopping=0
declare -A pid_cell=()
trap 'stopping=1; for p in "${!pid_cell[@]}"; do kill -USR1 -- -"$p" 2>/dev/null; done' USR1 TERM
worst=0
note() { # the worse of the statuses so far: failure (1) over stopped (75) over done (0)
    if [ "$1" -ne 0 ] && [ "$1" -ne 75 ]; then worst=1; elif [ "$1" -eq 75 ] && [ $worst -eq 0 ]; then worst=75; fi
}
reap() { # waits for one cell to end
    local p r
    wait -n -p p 2>/dev/null
    local rc=$?
    [ -n "${p:-}" ] && [ -n "${pid_cell[$p]:-}" ] || return
    while [ $rc -gt 128 ]; do # a trap cut the wait short (the cell may still run): its own status
        wait "$p" 2>/dev/null; r=$?
        [ $r -eq 127 ] && break # reported already: rc was its status
        rc=$r
        kill -0 "$p" 2>/dev/null || break
    done
    note $rc
    unset "pid_cell[$p]"
}
if [ $dry -eq 1 ]; then
    for cell in "${todo[@]}"; do run_cell $cell; done
    exit 0
fi
set -m # every cell in a process group of its own: the signal reaches its ranks
for cell in "${todo[@]}"; do
    [ $stopping -eq 1 ] && break
    while [ ${#pid_cell[@]} -ge "$jobs" ]; do reap; done
    [ $stopping -eq 1 ] && break
    run_cell $cell &
    pid_cell[$!]=$cell
done
while [ ${#pid_cell[@]} -gt 0 ]; do reap; done
set +m
[ $stopping -eq 1 ] && [ $worst -eq 0 ] && worst=75
exit $worst
