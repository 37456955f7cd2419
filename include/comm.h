/* comm: the MPI job. Start/stop, rank and size, checked collectives, fatal errors that
 * abort every rank (never a hang), the BLAS kernel and thread choice, timers. */
#ifndef CAR_COMM_H
#define CAR_COMM_H
#include <mpi.h>
#include <stdint.h>

/* Starts MPI. Before that, when OPENBLAS_CORETYPE is unset, re-executes the program with
 * the fastest OpenBLAS kernel this CPU supports (the library reads it only at load).
 * Sets BLAS threads to cores / ranks-on-this-node unless OPENBLAS_NUM_THREADS is set. */
void comm_init(int *argc, char ***argv, const char *program);
void comm_finalize(void);
int comm_rank(void);
int comm_size(void);
const char *comm_program(void);
double comm_wtime(void);
/* One line describing the BLAS library, kernel and threads. */
const char *comm_blas_info(void);

/* Any rank, alone: prints "PROGRAM: rank R: message", removes registered partial
 * outputs and aborts the whole job. */
void comm_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Every rank, together (all detected the same error): rank 0 prints "PROGRAM: error: message",
 * partial outputs are removed, every rank exits 1. */
void comm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Agree on an error only some ranks may have seen: if any rank passes a message, the lowest
 * such rank's message is printed by rank 0 and the job fails cleanly. */
void comm_fail_if_any(const char *local_error_or_null);

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
void comm_max_double(double *buf, int n);
void comm_min_double(double *buf, int n);
void comm_bcast(void *buf, int64_t bytes, int root);
/* Each rank contributes count[r] elements of elem_bytes; result has them in rank order. */
void comm_allgatherv_bytes(const void *send, int64_t send_count, void *recv, int64_t elem_bytes);

/* Contiguous split of [0, n) into parts: part p gets [n*p/parts, n*(p+1)/parts). */
void comm_split_range(int64_t n, int parts, int part, int64_t *lo, int64_t *hi);
/* The part that owns index i under comm_split_range. */
int comm_range_owner(int64_t n, int parts, int64_t i);

#endif
