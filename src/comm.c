#include "comm.h"
#include "util.h"
#include <cblas.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *program_name = "car";
static int world_rank, world_size = 1, mpi_started;
static char blas_info[256];
#define MAX_CLEANUP 8
static char *cleanup_paths[MAX_CLEANUP];

static int cpu_has_flag(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    char line[8192];
    int found = 0;
    size_t n = strlen(flag);
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        for (char *p = strstr(line, flag); p; p = strstr(p + 1, flag))
            if ((p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n')) { found = 1; break; }
        break;
    }
    fclose(f);
    return found;
}

/* OpenBLAS 0.3.21 does not know recent Xeons and falls back to a 5x slower SSE3 kernel;
 * the kernel is chosen when the library loads, so the only fix from inside is to re-exec. */
static void select_blas_kernel(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("CAR_BLAS_REEXEC")) return;
    const char *core = cpu_has_flag("avx512f") && cpu_has_flag("avx512bw") ? "SkylakeX"
                       : cpu_has_flag("avx2") && cpu_has_flag("fma")     ? "Haswell" : NULL;
    if (!core) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    setenv("CAR_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: carry on with the default kernel */
}

int comm_blas_threads(const char *openblas_env, const char *slurm_cpus, int mask_cpus, int node_cpus, int sharing,
                      char *why, size_t why_size) {
    long v;
    char *end;
    if (openblas_env && (v = strtol(openblas_env, &end, 10)) > 0 && !*end) {
        snprintf(why, why_size, "OPENBLAS_NUM_THREADS=%ld", v);
        return (int)v;
    }
    if (slurm_cpus && (v = strtol(slurm_cpus, &end, 10)) > 0 && !*end) {
        snprintf(why, why_size, "SLURM_CPUS_PER_TASK=%ld", v);
        return (int)v;
    }
    int cpus = mask_cpus > 0 ? mask_cpus : node_cpus, share = sharing > 1 ? sharing : 1;
    int threads = cpus / share < 1 ? 1 : cpus / share;
    const char *plural = cpus == 1 ? "" : "s";
    if (cpus < node_cpus && share == 1) snprintf(why, why_size, "affinity mask of %d CPU%s", cpus, plural);
    else if (cpus < node_cpus) snprintf(why, why_size, "affinity mask of %d CPU%s shared by %d ranks", cpus, plural, share);
    else if (share == 1) snprintf(why, why_size, "all %d CPU%s of the node", cpus, plural);
    else snprintf(why, why_size, "all %d CPU%s of the node shared by %d ranks", cpus, plural, share);
    return threads;
}

/* CPUs in this rank's affinity mask, and how many ranks on this node have that same mask
 * (collective over the node: ranks pinned to their own CPUs share nothing). */
static int affinity(MPI_Comm node, int *sharing) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    int local = 1;
    MPI_Comm_size(node, &local);
    cpu_set_t *all = xmalloc(sizeof set * (size_t)local);
    MPI_Allgather(&set, sizeof set, MPI_BYTE, all, sizeof set, MPI_BYTE, node);
    *sharing = 0;
    for (int r = 0; r < local; r++) *sharing += CPU_EQUAL(&all[r], &set) != 0;
    free(all);
    return CPU_COUNT(&set);
}

static int oversubscribed; /* some rank shares its CPU set with more ranks than the set has CPUs */

/* Sets the BLAS threads of this rank (unless OPENBLAS_NUM_THREADS did) and describes them. */
static void choose_blas_threads(void) {
    MPI_Comm node;
    int local = 1, sharing = 1, mask = 0;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &local);
        mask = affinity(node, &sharing);
        MPI_Comm_free(&node);
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    /* more ranks on this rank's CPU set than it has CPUs (no mask known: on the node) */
    oversubscribed = mask > 0 ? sharing > mask : local > (online > 0 ? (int)online : 1);
    char why[128];
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    int threads = comm_blas_threads(env, getenv("SLURM_CPUS_PER_TASK"), mask, online > 0 ? (int)online : 1, sharing, why, sizeof why);
    if (strncmp(why, "OPENBLAS_NUM_THREADS", 20) != 0) openblas_set_num_threads(threads);
    threads = openblas_get_num_threads(); /* what the library took (it caps at its MAX_THREADS) */
    snprintf(blas_info, sizeof blas_info, "%d BLAS thread%s per rank (%s); %s, kernel %s; %d rank%s, %d on this node",
             threads, threads == 1 ? "" : "s", why, openblas_get_config(), openblas_get_corename(), world_size,
             world_size == 1 ? "" : "s", local);
}

void comm_init(int *argc, char ***argv, const char *program) {
    program_name = program;
    select_blas_kernel(*argv);
    MPI_Init(argc, argv);
    mpi_started = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    choose_blas_threads();
    MPI_Allreduce(MPI_IN_PLACE, &oversubscribed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
}

int comm_oversubscribed(void) { return oversubscribed; }

void comm_finalize(void) {
    if (mpi_started) MPI_Finalize();
    mpi_started = 0;
}

int comm_rank(void) { return world_rank; }
int comm_size(void) { return world_size; }
const char *comm_program(void) { return program_name; }
double comm_wtime(void) { return MPI_Wtime(); }
const char *comm_blas_info(void) { return blas_info; }

void comm_cleanup_add(const char *path) {
    for (int i = 0; i < MAX_CLEANUP; i++)
        if (!cleanup_paths[i]) { cleanup_paths[i] = xstrdup(path); return; }
}

void comm_cleanup_remove(const char *path) {
    for (int i = 0; i < MAX_CLEANUP; i++)
        if (cleanup_paths[i] && strcmp(cleanup_paths[i], path) == 0) {
            free(cleanup_paths[i]);
            cleanup_paths[i] = NULL;
        }
}

static void run_cleanup(void) {
    for (int i = 0; i < MAX_CLEANUP; i++)
        if (cleanup_paths[i]) unlink(cleanup_paths[i]);
}

void comm_fatal(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: rank %d: %s\n", program_name, world_rank, msg);
    fflush(stderr);
    run_cleanup();
    if (mpi_started && world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* Every rank is here: rank 0 prints, partial outputs go, MPI ends cleanly. */
__attribute__((noreturn)) static void fail_now(const char *msg) {
    if (world_rank == 0) {
        fprintf(stderr, "%s: error: %s\n", program_name, msg);
        fflush(stderr);
    }
    run_cleanup();
    comm_finalize();
    exit(1);
}

/* This rank alone knows: it prints and takes the whole job down. The pause lets the line
 * reach mpirun before Open MPI's abort banner. */
__attribute__((noreturn)) static void abort_alone(const char *msg) {
    fprintf(stderr, "%s: error: %s\n", program_name, msg);
    fflush(stderr);
    run_cleanup();
    if (mpi_started && world_size > 1) {
        nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    exit(1);
}

/* Waits for req up to COMM_FAIL_GRACE seconds (the others may never come); 1 if it completed. */
static int wait_briefly(MPI_Request *req) {
    double until = MPI_Wtime() + COMM_FAIL_GRACE;
    for (int done = 0;;) {
        if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return 0;
        if (done) return 1;
        if (MPI_Wtime() > until) return 0;
        nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    }
}

void comm_fail(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!mpi_started || world_size == 1) fail_now(msg);
    MPI_Request req;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &req) == MPI_SUCCESS && wait_briefly(&req)) fail_now(msg);
    abort_alone(msg); /* a rank is elsewhere: a caller broke the contract, but nobody hangs */
}

void comm_fail_if_any(const char *local_error) {
    int mine = local_error ? world_rank : world_size, first = mine;
    if (!mpi_started || world_size == 1) {
        if (local_error) fail_now(local_error);
        return;
    }
    MPI_Request req;
    COMM_CHECK(MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &req));
    if (!local_error) COMM_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    else if (!wait_briefly(&req)) abort_alone(local_error);
    if (first == world_size) return;
    char msg[1024] = "";
    if (world_rank == first) snprintf(msg, sizeof msg, "%s", local_error);
    COMM_CHECK(MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD));
    fail_now(msg);
}

char *comm_agree_error(char *local_error) {
    int mine = local_error ? world_rank : world_size, first = mine;
    if (world_size > 1) COMM_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    int64_t n = first == world_rank ? (int64_t)strlen(local_error) : 0;
    char *out = NULL;
    if (first < world_size) {
        comm_bcast(&n, sizeof n, first);
        out = xmalloc((size_t)n + 1);
        if (first == world_rank) memcpy(out, local_error, (size_t)n);
        comm_bcast(out, n, first);
        out[n] = 0;
    }
    free(local_error);
    return out;
}

void comm_check_(int err, const char *what, const char *file, int line) {
    if (err == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, text, &len);
    comm_fatal("%s failed at %s:%d: %s", what, file, line, text);
}

double comm_peak_rss_mib(void) {
    double mib = (double)peak_rss_kib() / 1024.0;
    comm_max_double(&mib, 1);
    return mib;
}

/* ------------------------------------------------------------ collectives and their cost */

static CommStats stats;
static int profiling;

void comm_set_profiling(int on) { profiling = on; }
void comm_stats_reset(void) { memset(&stats, 0, sizeof stats); }
CommStats comm_stats(void) { return stats; }

/* With profiling on, a barrier first: waiting there for the slowest rank is idle time, so the
 * collective's own time is communication alone. Returns the start of the collective. */
static double coll_begin(void) {
    if (profiling && world_size > 1) {
        double t = MPI_Wtime();
        COMM_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        stats.idle_seconds += MPI_Wtime() - t;
    }
    return MPI_Wtime();
}

static void coll_end(double t0, int64_t bytes) {
    stats.comm_seconds += MPI_Wtime() - t0;
    stats.bytes += bytes;
    stats.calls++;
}

static int mpi_count(int64_t n, const char *what) {
    if (n > INT32_MAX) comm_fatal("%s of %lld elements: more than MPI's int count", what, (long long)n);
    return (int)n;
}

void comm_barrier(void) { COMM_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

static void allreduce(void *buf, int n, MPI_Datatype type, MPI_Op op) {
    if (world_size == 1 || n == 0) return;
    int size;
    MPI_Type_size(type, &size);
    double t0 = coll_begin();
    COMM_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, n, type, op, MPI_COMM_WORLD));
    coll_end(t0, (int64_t)n * size);
}

void comm_sum_float_start(float *buf, int64_t n, CommPending *p) {
    p->active = world_size > 1 && n > 0;
    p->bytes = n * (int64_t)sizeof(float);
    if (!p->active) return;
    double t0 = MPI_Wtime();
    COMM_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf, mpi_count(n, "iallreduce"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &p->req));
    coll_end(t0, p->bytes);
}

void comm_progress(CommPending *p, int n) {
    for (int i = 0; i < n; i++)
        if (p[i].active) {
            int done = 0;
            COMM_CHECK(MPI_Test(&p[i].req, &done, MPI_STATUS_IGNORE));
            if (done) p[i].active = 0;
        }
}

void comm_wait(CommPending *p, int n) {
    double t0 = MPI_Wtime();
    for (int i = 0; i < n; i++)
        if (p[i].active) {
            COMM_CHECK(MPI_Wait(&p[i].req, MPI_STATUS_IGNORE));
            p[i].active = 0;
        }
    stats.comm_seconds += MPI_Wtime() - t0;
}

void comm_sum_i64(int64_t *buf, int n) { allreduce(buf, n, MPI_INT64_T, MPI_SUM); }
void comm_sum_double(double *buf, int n) { allreduce(buf, n, MPI_DOUBLE, MPI_SUM); }
void comm_sum_float(float *buf, int n) { allreduce(buf, n, MPI_FLOAT, MPI_SUM); }
void comm_sum_u64(uint64_t *buf, int n) { allreduce(buf, n, MPI_UINT64_T, MPI_SUM); }
void comm_xor_u64(uint64_t *buf, int n) { allreduce(buf, n, MPI_UINT64_T, MPI_BXOR); }
void comm_max_float(float *buf, int n) { allreduce(buf, n, MPI_FLOAT, MPI_MAX); }
void comm_max_double(double *buf, int n) { allreduce(buf, n, MPI_DOUBLE, MPI_MAX); }
void comm_min_double(double *buf, int n) { allreduce(buf, n, MPI_DOUBLE, MPI_MIN); }

void comm_bcast(void *buf, int64_t bytes, int root) {
    if (world_size == 1) return;
    const int64_t chunk = 1 << 30; /* MPI counts are int */
    double t0 = coll_begin();
    for (int64_t off = 0; off < bytes; off += chunk) {
        int64_t n = bytes - off < chunk ? bytes - off : chunk;
        COMM_CHECK(MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD));
    }
    coll_end(t0, world_rank == root ? bytes : 0);
}

/* displacements of consecutive blocks of counts[r] elements of elem_bytes, as MPI byte counts */
static void byte_layout(const int64_t *counts, int64_t elem_bytes, int *bcounts, int *bdispls, const char *what) {
    int64_t off = 0;
    for (int r = 0; r < world_size; r++) {
        bcounts[r] = mpi_count(counts[r] * elem_bytes, what);
        bdispls[r] = mpi_count(off, what);
        off += counts[r] * elem_bytes;
    }
    mpi_count(off, what);
}

void comm_allgather_counts(int64_t mine, int64_t *all) {
    all[0] = mine;
    if (world_size == 1) return;
    double t0 = coll_begin();
    COMM_CHECK(MPI_Allgather(&mine, 1, MPI_INT64_T, all, 1, MPI_INT64_T, MPI_COMM_WORLD));
    coll_end(t0, sizeof mine);
}

void comm_allgatherv_counted(const void *send, const int64_t *counts, void *recv, int64_t elem_bytes) {
    int64_t mine = counts[world_rank] * elem_bytes;
    if (world_size == 1) { memmove(recv, send, (size_t)mine); return; }
    int *bc = xmalloc(sizeof(int) * (size_t)world_size), *bd = xmalloc(sizeof(int) * (size_t)world_size);
    byte_layout(counts, elem_bytes, bc, bd, "allgatherv");
    double t0 = coll_begin();
    COMM_CHECK(MPI_Allgatherv(send, bc[world_rank], MPI_BYTE, recv, bc, bd, MPI_BYTE, MPI_COMM_WORLD));
    coll_end(t0, mine);
    free(bc); free(bd);
}

void comm_allgatherv_bytes(const void *send, int64_t send_count, void *recv, int64_t elem_bytes) {
    int64_t *all = xmalloc(sizeof(int64_t) * (size_t)world_size);
    comm_allgather_counts(send_count, all);
    comm_allgatherv_counted(send, all, recv, elem_bytes);
    free(all);
}

void comm_alltoall_counts(const int64_t *send_counts, int64_t *recv_counts) {
    if (world_size == 1) { recv_counts[0] = send_counts[0]; return; }
    double t0 = coll_begin();
    COMM_CHECK(MPI_Alltoall(send_counts, 1, MPI_INT64_T, recv_counts, 1, MPI_INT64_T, MPI_COMM_WORLD));
    coll_end(t0, (int64_t)sizeof(int64_t) * (world_size - 1));
}

void comm_alltoallv(const void *send, const int64_t *send_counts, void *recv, const int64_t *recv_counts,
                    int64_t elem_bytes) {
    if (world_size == 1) { memmove(recv, send, (size_t)(send_counts[0] * elem_bytes)); return; }
    int P = world_size, *sc = xmalloc(sizeof(int) * 4 * (size_t)P), *sd = sc + P, *rc = sd + P, *rd = rc + P;
    byte_layout(send_counts, elem_bytes, sc, sd, "alltoallv");
    byte_layout(recv_counts, elem_bytes, rc, rd, "alltoallv");
    int64_t sent = 0;
    for (int r = 0; r < P; r++) sent += r == world_rank ? 0 : sc[r];
    double t0 = coll_begin();
    COMM_CHECK(MPI_Alltoallv(send, sc, sd, MPI_BYTE, recv, rc, rd, MPI_BYTE, MPI_COMM_WORLD));
    coll_end(t0, sent);
    free(sc);
}

void comm_reduce_scatter_float(const float *send, float *recv, const int64_t *recv_counts) {
    if (world_size == 1) { memmove(recv, send, sizeof(float) * (size_t)recv_counts[0]); return; }
    int *rc = xmalloc(sizeof(int) * (size_t)world_size);
    int64_t total = 0;
    for (int r = 0; r < world_size; r++) total += recv_counts[r], rc[r] = mpi_count(recv_counts[r], "reduce_scatter");
    mpi_count(total, "reduce_scatter");
    double t0 = coll_begin();
    COMM_CHECK(MPI_Reduce_scatter(send, recv, rc, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    coll_end(t0, total * (int64_t)sizeof(float));
    free(rc);
}

void comm_split_range(int64_t n, int parts, int part, int64_t *lo, int64_t *hi) {
    *lo = n * part / parts;
    *hi = n * (part + 1) / parts;
}

int comm_range_owner(int64_t n, int parts, int64_t i) {
    int p = (int)((i * parts) / (n ? n : 1));
    while (p > 0 && n * p / parts > i) p--;
    while (p < parts - 1 && n * (p + 1) / parts <= i) p++;
    return p;
}
