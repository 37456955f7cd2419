#!/usr/bin/env bash
# BLAS threads under pinning (issue 9, defect 6), from the command line: the first log line
# says how many threads and where the number came from. The decision itself, with node sizes
# this machine lacks (8 CPUs of 64 pinned per rank), is tests/unit/test_blas_threads.c.
source "$(dirname "$0")/../cli/lib.sh"
first_line() { "$@" --out "$TMP/s" --users 100 --items 120 2>&1 | head -n 1; }
check() { # NAME REGEX COMMAND...
    local name=$1 regex=$2 line; shift 2
    line=$(first_line "$@")
    echo "$line" | grep -q -E "^$regex" && pass "$name" || fail "$name" "first line: $line" "expected /^$regex/"
}
unset OPENBLAS_NUM_THREADS
if taskset -c 0 true 2>/dev/null; then
    check "pinned to one CPU: 1 thread" "1 BLAS thread per rank \(affinity mask of 1 CPU\)" taskset -c 0 "$BIN/car_synth"
    if [ "$(nproc --all)" -ge 2 ]; then
        # a rank alone with 2 CPUs uses both, whether they are the whole node or not
        check "pinned to two CPUs: 2 threads" "2 BLAS threads per rank \((affinity mask of 2 CPUs|all 2 CPUs of the node)\)" \
            taskset -c 0,1 "$BIN/car_synth"
        check "two unpinned ranks share the node" "1 BLAS thread per rank \((all 2 CPUs of the node|affinity mask of 2 CPUs) shared by 2 ranks\)" \
            taskset -c 0,1 mpirun -n 2 --bind-to none "$BIN/car_synth"
    else skip "two CPUs" "this machine has one CPU"; fi
    check "SLURM_CPUS_PER_TASK is honoured" "3 BLAS threads per rank \(SLURM_CPUS_PER_TASK=3\)" \
        env SLURM_CPUS_PER_TASK=3 taskset -c 0 "$BIN/car_synth"
else
    skip "taskset" "taskset cannot pin here"
fi
check "OPENBLAS_NUM_THREADS wins" "2 BLAS threads per rank \(OPENBLAS_NUM_THREADS=2\)" \
    env OPENBLAS_NUM_THREADS=2 SLURM_CPUS_PER_TASK=3 "$BIN/car_synth"
finish
