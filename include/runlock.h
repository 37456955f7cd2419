/* runlock: one car_train per run directory. Two jobs resuming one run.dir would both append to
 * metrics.jsonl and prune each other's checkpoints, so rank 0 holds an advisory fcntl lock on
 * RUN_DIR/.lock (which names the holder: "host pid") for the life of the process; the kernel
 * (or NFS's lock manager) releases it whenever the process ends, killed or not. */
#ifndef CAR_RUNLOCK_H
#define CAR_RUNLOCK_H

/* Rank 0 alone (not collective): NULL when the lock is now held by this process, else one line
 * naming the directory and the holder's host and pid (or the system error). */
char *runlock_try(const char *run_dir);
/* Collective: runlock_try on rank 0; a failure ends the job on every rank with its message. */
void runlock_acquire(const char *run_dir);

#endif
