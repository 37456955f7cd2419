#!/usr/bin/env bash
# Fuzzes each named harness (default: all) for SECONDS (default 600), one after another, under
# nice, then minimises its corpus: the committed fuzz/corpus/NAME is merged with what the run
# found into a fresh directory (-merge=1) that replaces it. The unit timeout (60 s) is far above
# any real unit (< 1 ms): a nice'd run on a loaded machine can stall for seconds. Logs and crash
# files go to $FUZZ_WORK (default /tmp/car-fuzz); the last lines of each log give the figures
# for fuzz/README.md. Build first: make fuzz.
set -u
cd "$(dirname "$0")/.."
secs=${1:-600}; shift || true
names=${*:-config sequences items npy}
bin=${FUZZ_BUILD:-build/fuzz}
work=${FUZZ_WORK:-/tmp/car-fuzz}
mkdir -p "$work"
export LSAN_OPTIONS=suppressions=$PWD/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}
status=0
for n in $names; do
    rm -rf "${work:?}/$n" "$work/$n.merged"; mkdir -p "$work/$n" "$work/$n.merged"
    dict=(); [ -f "fuzz/$n.dict" ] && dict=(-dict="fuzz/$n.dict")
    echo "fuzz $n: ${secs}s, log $work/$n.log"
    nice "$bin/fuzz_$n" -max_total_time="$secs" -timeout=60 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
        -artifact_prefix="$work/$n-" "${dict[@]}" "$work/$n" "fuzz/corpus/$n" >"$work/$n.log" 2>&1 || status=1
    grep -E '^(#[0-9]+.*DONE|Done|stat::|SUMMARY|==[0-9]+==ERROR)' "$work/$n.log" | tail -n 12
    nice "$bin/fuzz_$n" -merge=1 "$work/$n.merged" "fuzz/corpus/$n" "$work/$n" >"$work/$n.merge.log" 2>&1 || status=1
    if [ "$(ls "$work/$n.merged" | wc -l)" -gt 0 ]; then
        rm -rf "fuzz/corpus/$n" && cp -r "$work/$n.merged" "fuzz/corpus/$n"
    fi
    echo "fuzz $n: corpus $(ls "fuzz/corpus/$n" | wc -l) files, $(cat "fuzz/corpus/$n"/* | wc -c) bytes"
done
exit $status
