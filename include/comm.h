/* comm: the MPI job. Start/stop, rank and size, checked collectives, fatal errors that
 * abort every rank (never a hang), the BLAS kernel and thread choice, timers. */
#ifndef CAR_COMM_H
#define CAR_COMM_H
#include <mpi.h>
#include <stdint.h>

/* Starts MPI. Before that, when OPENBLAS_CORETYPE is unset, re-executes the program with
 * the fastest OpenBLAS kernel this CPU supports (the library reads it only at load).
 * Then sets the BLAS threads by comm_blas_threads (collective over the node's ranks). */
void comm_init(int *argc, char ***argv, const char *program);
/* The BLAS threads of one rank (pure; why gets where the number came from, e.g. "affinity mask
 * of 2 CPUs"). In order: OPENBLAS_NUM_THREADS (openblas_env) if set, which OpenBLAS itself
 * obeys; SLURM_CPUS_PER_TASK (slurm_cpus) if set; else the mask_cpus CPUs of this rank's
 * affinity mask divided by sharing, the ranks on this node with the same mask: a rank pinned
 * to CPUs of its own uses them all; ranks that all span the node (node_cpus) split it.
 * NULL or invalid variables count as unset; at least 1. */
int comm_blas_threads(const char *openblas_env, const char *slurm_cpus, int mask_cpus, int node_cpus, int sharing,
                      char *why, size_t why_size);
void comm_finalize(void);
int comm_rank(void);
int comm_size(void);
const char *comm_program(void);
double comm_wtime(void);
/* One line: the BLAS threads and where the number came from, library, kernel, ranks. */
const char *comm_blas_info(void);
/* 1 when some rank shares its CPUs with more ranks than there are CPUs (the same answer on every
 * rank): collectives then wait for the scheduler, and latency-bound algorithms should avoid them */
int comm_oversubscribed(void);

/* Errors. No error path may hang the job: each of these is either agreed by every rank or
 * takes the whole job down (MPI_Abort). The user sees one line "PROGRAM: error: message" (or
 * "PROGRAM: rank R: message" from comm_fatal), then non-zero exit.
 *
 * Local (one rank may call it alone, anywhere): comm_fatal. For what only this rank can see
 * and cannot wait to agree on (out of memory, an MPI or HDF5 failure mid-collective).
 * Prints "PROGRAM: rank R: message", removes registered partial outputs, MPI_Abort.
 *
 * Collective (every rank calls it at the same point):
 *   comm_fail: all ranks detected the same error (they parsed the same arguments, read the
 *     same agreed values). Rank 0 prints "PROGRAM: error: message", partial outputs are
 *     removed, every rank exits 1 through MPI_Finalize. Safety net: if the other ranks do not
 *     arrive within COMM_FAIL_GRACE seconds (a caller broke the contract), this rank prints
 *     its message in the same format and aborts the job.
 *   comm_fail_if_any: an error only some ranks may have seen (a file one rank cannot read,
 *     a bad row in one rank's slice); NULL on the ranks that saw none. If any rank passes a
 *     message, the lowest such rank's is printed by rank 0 and the job fails as comm_fail.
 *     A rank holding an error waits at most COMM_FAIL_GRACE seconds for the others, then
 *     prints it itself and aborts. */
#define COMM_FAIL_GRACE 3.0
void comm_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void comm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void comm_fail_if_any(const char *local_error_or_null);
/* Collective, never exits: the lowest rank's error (a new string on every rank), or NULL when
 * no rank has one. Consumes local_error_or_null (frees it). */
char *comm_agree_error(char *local_error_or_null);

/* A partial output (a temporary file) that a failure must remove. */
void comm_cleanup_add(const char *path);
void comm_cleanup_remove(const char *path);

/* Checked MPI call: an MPI error becomes comm_fatal with the call and MPI's message. */
#define COMM_CHECK(call) comm_check_((call), #call, __FILE__, __LINE__)
void comm_check_(int err, const char *what, const char *file, int line);

/* Collective: the largest peak resident set of any rank, in MiB. */
double comm_peak_rss_mib(void);

void comm_barrier(void);
void comm_sum_i64(int64_t *buf, int n);
void comm_sum_double(double *buf, int n);
void comm_sum_float(float *buf, int n);
void comm_max_float(float *buf, int n);
void comm_xor_u64(uint64_t *buf, int n);
void comm_sum_u64(uint64_t *buf, int n); /* wraps around: for checksums */
void comm_max_double(double *buf, int n);
void comm_min_double(double *buf, int n);
void comm_bcast(void *buf, int64_t bytes, int root);
/* all[r] = rank r's mine (all has comm_size() entries). */
void comm_allgather_counts(int64_t mine, int64_t *all);
/* Rank r contributes counts[r] elements of elem_bytes (counts known to every rank); recv holds
 * them in rank order. */
void comm_allgatherv_counted(const void *send, const int64_t *counts, void *recv, int64_t elem_bytes);
/* The same when each rank knows only its own count. */
void comm_allgatherv_bytes(const void *send, int64_t send_count, void *recv, int64_t elem_bytes);
/* recv_counts[r] = what rank r sends here (send_counts[q]: what this rank sends to rank q). */
void comm_alltoall_counts(const int64_t *send_counts, int64_t *recv_counts);
/* send holds the blocks for ranks 0..P-1 one after another (send_counts elements each), recv
 * gets those from ranks 0..P-1 likewise. */
void comm_alltoallv(const void *send, const int64_t *send_counts, void *recv, const int64_t *recv_counts,
                    int64_t elem_bytes);
/* recv (recv_counts[this rank]) = the sum over ranks of their send's block for this rank
 * (send: sum of recv_counts floats, blocks in rank order). */
void comm_reduce_scatter_float(const float *send, float *recv, const int64_t *recv_counts);

/* A non-blocking sum in flight (MPI_Iallreduce in place). Open MPI moves it forward only inside
 * MPI calls: comm_progress between pieces of work, comm_wait at the end. Its time counts as
 * communication only while waited for (that is the part not hidden behind work). */
typedef struct { MPI_Request req; int64_t bytes; int active; } CommPending;
void comm_sum_float_start(float *buf, int64_t n, CommPending *p);
void comm_progress(CommPending *p, int n);
void comm_wait(CommPending *p, int n);

/* What the collectives above cost this rank since the last reset: time inside them, bytes
 * this rank sent (payload), and with profiling on, the time spent waiting for the slowest
 * rank before each (a barrier, timed apart; profiling adds that barrier, so only benchmarks
 * turn it on). */
typedef struct { double comm_seconds, idle_seconds; int64_t bytes, calls; } CommStats;
void comm_set_profiling(int on);
void comm_stats_reset(void);
CommStats comm_stats(void);

/* Contiguous split of [0, n) into parts: part p gets [n*p/parts, n*(p+1)/parts). */
void comm_split_range(int64_t n, int parts, int part, int64_t *lo, int64_t *hi);
/* The part that owns index i under comm_split_range. */
int comm_range_owner(int64_t n, int parts, int64_t i);

#endif
