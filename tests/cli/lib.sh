# Shared helpers for command-line tests: each check counts; finish prints the RESULT line.
set -u
BIN=${CAR_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/bin}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
SHARED_DATA=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/../shared/data/amazon
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
_pass=0 _fail=0 _skip=0

pass() { echo "ok   $1"; _pass=$((_pass + 1)); }
fail() { echo "FAIL $1"; shift; for l in "$@"; do echo "    $l"; done; _fail=$((_fail + 1)); }
# skip NAME REASON: a check that could not run here (missing data or package); counted apart, never as a pass
skip() { echo "skip $1: $2"; _skip=$((_skip + 1)); }

# expect_error NAME REGEX OUTPUT_THAT_MUST_NOT_EXIST -- COMMAND...
# The command must exit non-zero, its stderr's first line must match REGEX, and the output
# path (may be "-") must not exist afterwards.
expect_error() {
    local name=$1 regex=$2 out=$3; shift 4
    "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"
    local rc=$?
    local first
    first=$(grep -v -E '^(-{5,}|\s*$)' "$TMP/err.txt" | head -n 1)
    if [ $rc -eq 0 ]; then fail "$name" "exit 0, expected failure"; return; fi
    if ! echo "$first" | grep -q -E "$regex"; then fail "$name" "first stderr line: $first" "expected /$regex/"; return; fi
    if [ "$out" != "-" ] && [ -e "$out" ]; then fail "$name" "output $out was left behind"; return; fi
    if [ "$out" != "-" ] && ls "$out".* >/dev/null 2>&1; then fail "$name" "partial output left: $(ls "$out".*)"; return; fi
    pass "$name"
}

# expect_ok NAME -- COMMAND...
expect_ok() {
    local name=$1; shift 2
    if "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"; then pass "$name"; else fail "$name" "exit $?" "$(tail -n 5 "$TMP/err.txt")"; fi
}

# synth_prepared LABEL DIR OUT DIM [car_synth flags...]: car_synth into DIR, then car_prep of it
# into OUT (dimension DIM) on 2 ranks; two checks, "car_synth LABEL" and "car_prep LABEL".
synth_prepared() {
    local label=$1 dir=$2 out=$3 dim=$4; shift 4
    expect_ok "car_synth$label" -- "$BIN/car_synth" --out "$dir" "$@"
    expect_ok "car_prep$label" -- mpirun -n 2 "$BIN/car_prep" --sequences "$dir/sequences.txt" --items "$dir/items.jsonl" \
        --out "$out" --dim "$dim"
}

# small_run RUN_DIR EPOCHS CHECKPOINT_EVERY: synthetic data in $TMP/s (800 users, 300 items, 16-dim
# embeddings; two checks) and $TMP/r.cfg, the small run that the stop, resume and fault tests share.
small_run() {
    synth_prepared "" "$TMP/s" "$TMP/s/dataset.h5" 16 --users 800 --items 300 --seed 9
    cat >"$TMP/r.cfg" <<C
data = { path = "$TMP/s/dataset.h5"; };
sid = { levels = 2; codebook = [12, 4]; };
model = { d_model = 16; n_layers = 1; dropout = 0.2; };
train = { epochs = $2; batch_size = 32; log_every = 1000; warmup_steps = 10; };
run = { dir = "$1"; checkpoint_every = $3; };
C
}

# Counts the "ok   NAME" / "FAIL NAME" lines of a checker's output (e.g. an embedded Python
# script) as checks; output without any such line is a crashed checker.
count_checks() {
    local out=$1 line
    while read -r line; do
        case "$line" in "ok   "*) pass "${line#ok   }";; "FAIL "*) fail "${line#FAIL }";; esac
    done <<<"$out"
    grep -q '^ok\|^FAIL' <<<"$out" || fail "checker crashed" "$out"
    # a checker that stops half-way (a Python exception) must not pass on the checks it printed
    ! grep -q '^Traceback' <<<"$out" || fail "checker crashed after $(grep -c '^ok\|^FAIL' <<<"$out") checks" \
        "$(grep -A 20 '^Traceback' <<<"$out" | tail -n 3)"
}

finish() { echo "RESULT $_pass passed, $_fail failed, $_skip skipped"; [ $_fail -eq 0 ]; }
