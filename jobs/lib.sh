# Sourced by the job scripts in jobs/: how ranks start, how Slurm's signals reach them, how a run
# that stopped with a checkpoint continues (requeue). Not a job script itself.

# car_launcher: sets LAUNCH to the command that starts the ranks. Inside a Slurm job whose srun has
# PMIx: srun --mpi=pmix; else mpirun (Debian's Open MPI has no Slurm PMI, so --mpi=pmi2 would not
# work). CAR_LAUNCHER=srun or mpirun chooses. BLAS threads per rank: SLURM_CPUS_PER_TASK (1 if unset).
car_launcher() {
    local l=${CAR_LAUNCHER:-}
    if [ -z "$l" ]; then
        l=mpirun
        [ -n "${SLURM_JOB_ID:-}" ] && srun --mpi=list 2>&1 | grep -qw pmix && l=srun
    fi
    case $l in
        srun) LAUNCH=(srun --mpi=pmix);;
        mpirun) LAUNCH=(mpirun);;
        *) echo "car job: CAR_LAUNCHER=$l: expected srun or mpirun" >&2; exit 2;;
    esac
    # as root (CI), mpirun refuses to start without these, also when a runner script calls it
    [ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
}

# car_run COMMAND...: runs COMMAND in a process group of its own and forwards USR1 and TERM to that
# group as USR1, car_train's "checkpoint and stop" (mpirun answers TERM by killing its ranks a few
# seconds later but forwards USR1 to them; srun forwards USR1 to its tasks). Waits until the command
# and everything in its group are gone: a wait cut short by a trap returns > 128 while the ranks are
# still writing their checkpoint. Sets CAR_RC to the command's exit status.
car_run() {
    set -m # background jobs get their own process group: the signal reaches wrappers' children too
    "$@" &
    local pid=$! r
    set +m
    trap "kill -USR1 -- -$pid 2>/dev/null" USR1 TERM
    while :; do
        wait "$pid"; CAR_RC=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    wait "$pid" 2>/dev/null; r=$? # gone: bash still holds its status if a trap cut the last wait
    [ $r -ne 127 ] && CAR_RC=$r
    while kill -0 -- -"$pid" 2>/dev/null; do sleep 1; done # ranks a wrapper left behind
    trap '' USR1 TERM # nothing left to stop: a late signal must not end the script before its requeue
}

# car_finish RC: exit code 75 is car_train's "stopped with a checkpoint, resumable": requeue this job
# (submitted with --requeue), which starts it again from the beginning and so resumes the run; any
# other code ends the job with it (a failure is never requeued).
car_finish() {
    local rc=$1
    if [ "$rc" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
        echo "car job: stopped with a checkpoint (exit 75): requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID" && exit 0 # the requeue ends this script itself
        echo "car job: scontrol requeue failed: submit the same job again to continue from the checkpoint" >&2
    fi
    exit "$rc"
}
