#!/usr/bin/env bash
# The test driver: unit tests (1 rank), MPI tests at 1, 2 and 4 ranks (4 oversubscribed; a test
# may name other rank counts in its source), command-line tests (tests/cli and the other
# directories of bash tests: faults, fuzz, slurm). Adds up every "RESULT N passed, N failed[, N skipped]"
# and prints the total last: "N passed, N failed, N skipped". A skipped check is never a pass.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export CAR_BIN="$PWD/$BUILD/bin" CAR_BUILD="$PWD/$BUILD"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
# Open MPI and HDF5 keep allocations alive until exit: leak reports would be theirs, not ours
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
RANKS=${TEST_RANKS:-"1 2 4"}
FILTER=${TEST_FILTER:-}
LOG=$(mktemp -d)
passed=0 failed=0 skipped=0

run_one() { # label, command...
    local label=$1; shift
    local out="$LOG/$(echo "$label" | tr ' /' '__').log"
    timeout 1200 "$@" >"$out" 2>&1
    local rc=$?
    local line
    line=$(grep -E '^RESULT [0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $label: no result (exit $rc)"; tail -n 20 "$out" | sed 's/^/    /'
        failed=$((failed + 1)); return
    fi
    local p f k
    p=$(echo "$line" | awk '{print $2}'); f=$(echo "$line" | awk '{print $4}')
    k=$(echo "$line" | sed -n 's/.*, \([0-9][0-9]*\) skipped.*/\1/p'); k=${k:-0}
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + k))
    if [ "$f" -gt 0 ] || [ $rc -ne 0 ]; then
        echo "FAIL $label: $p passed, $f failed (exit $rc)"; grep -E '^(FAIL|rank [0-9]+:)' "$out" | head -n 20 | sed 's/^/    /'
        [ "$f" -eq 0 ] && failed=$((failed + 1))
    elif [ "$k" -gt 0 ]; then
        echo "ok   $label: $p passed, $k skipped"; grep -E '^skip ' "$out" | head -n 10 | sed 's/^/    /'
    else
        echo "ok   $label: $p passed"
    fi
}

for t in "$BUILD"/tests/unit/*; do
    [ -x "$t" ] || continue
    [ -n "$FILTER" ] && [[ "$(basename "$t")" != *$FILTER* ]] && continue
    run_one "unit/$(basename "$t")" mpirun -n 1 "$t"
done
for t in "$BUILD"/tests/mpi/*; do
    [ -x "$t" ] || continue
    [ -n "$FILTER" ] && [[ "$(basename "$t")" != *$FILTER* ]] && continue
    ranks=$RANKS # a test may name its own rank counts: a " * Ranks: 1 2 3" line in its source
    own=$(sed -n 's/^ \* Ranks: \([0-9 ]*\)$/\1/p' "tests/mpi/$(basename "$t").c" 2>/dev/null | head -n 1)
    [ -z "${TEST_RANKS:-}" ] && [ -n "$own" ] && ranks=$own
    for n in $ranks; do run_one "mpi/$(basename "$t") -n $n" mpirun -n "$n" "$t"; done
done
for t in tests/cli/test_*.sh tests/faults/test_*.sh tests/fuzz/test_*.sh tests/slurm/test_*.sh; do
    [ -f "$t" ] || continue
    [ -n "$FILTER" ] && [[ "$(basename "$t")" != *$FILTER* ]] && continue
    run_one "$(basename "$(dirname "$t")")/$(basename "$t")" bash "$t"
done
rm -rf "$LOG"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
