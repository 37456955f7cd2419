#!/usr/bin/env bash
# fuzz: each libFuzzer harness (fuzz/fuzz_*.c, ASan + UBSan) replays its committed corpus
# (fuzz/corpus/NAME) once, in seconds: every input must run to the end without a crash, a leak,
# undefined behaviour or a broken invariant. Needs clang with libFuzzer (scripts/install-deps.sh
# installs it); without it each replay is reported as skipped, never as passed.
source "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fuzz_build=${CAR_BUILD:-$PWD/build}/fuzz
names=$(ls fuzz/corpus)

echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; return (int)(n & 0); }' >"$TMP/probe.c"
cc=${FUZZ_CC:-clang}
if ! "$cc" -fsanitize=fuzzer,address,undefined "$TMP/probe.c" -o "$TMP/probe" >/dev/null 2>&1; then
    for n in $names; do skip "replay $n" "clang with libFuzzer (clang, libclang-rt-14-dev) is not installed"; done
    finish; exit
fi
if make -s --no-print-directory fuzz FUZZ_BUILD="$fuzz_build" FUZZ_CC="$cc" >"$TMP/build.txt" 2>&1; then
    pass "make fuzz"
else
    fail "make fuzz" "$(tail -n 5 "$TMP/build.txt")"; finish; exit
fi

# Leaks count here (run_tests.sh turns them off for the MPI programs): no MPI starts in a harness;
# fuzz/lsan.supp names the one leak inside libconfig.
for n in $names; do
    files=(fuzz/corpus/"$n"/*)
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=suppressions=$PWD/fuzz/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$fuzz_build/fuzz_$n" -timeout=60 -rss_limit_mb=2048 "${files[@]}" >"$TMP/$n.txt" 2>&1
    rc=$?
    ran=$(grep -c '^Executed ' "$TMP/$n.txt")
    if [ $rc -ne 0 ]; then
        fail "replay $n" "exit $rc" "$(grep -m 3 -E 'ERROR|invariant|runtime error' "$TMP/$n.txt")"
    elif [ "$ran" -ne ${#files[@]} ] || [ "$ran" -eq 0 ]; then
        fail "replay $n" "ran $ran of ${#files[@]} inputs"
    else
        pass "replay $n (${#files[@]} inputs)"
    fi
done
finish
