/* check: the test harness for unit and MPI tests. A test is a void function; CHECK records
 * a failure on this rank; a test fails if it failed on any rank; CHECK_SKIP marks a test that
 * cannot run here (missing data), counted apart and never as a pass. Ends with the line
 * "RESULT N passed, N failed, N skipped" that tests/run_tests.sh adds up. NaN fails every
 * numeric check: CHECK_CLOSE compares with <=, and check_max / check_rel_diff turn a NaN
 * anywhere into +inf (fmax would drop it and let a NaN result pass). */
#ifndef CAR_CHECK_H
#define CAR_CHECK_H
#include "comm.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_failed_now, check_skipped_now, check_passed_total, check_failed_total, check_skipped_total;

#define CHECK(cond) CHECK_MSG(cond, "%s", #cond)
#define CHECK_MSG(cond, ...)                                                                  \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "rank %d: %s:%d: check failed: ", comm_rank(), __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            check_failed_now = 1;                                                             \
        }                                                                                     \
    } while (0)
/* |a - b| <= tol * max(1, |b|) */
#define CHECK_CLOSE(a, b, tol)                                                                          \
    do {                                                                                                \
        double ca_ = (double)(a), cb_ = (double)(b);                                                    \
        CHECK_MSG(fabs(ca_ - cb_) <= (tol) * fmax(1.0, fabs(cb_)), "%s = %.9g, %s = %.9g (tol %g)", #a, ca_, #b, cb_, \
                  (double)(tol));                                                                       \
    } while (0)

/* The larger of a running worst and a new value; NaN in either makes it +inf for good. */
static inline double check_max(double worst, double x) {
    if (isnan(x) || isnan(worst)) return INFINITY;
    return x > worst ? x : worst;
}

/* max |a - b| / max(floor, max |b|) (floor 0: plain relative error; |a - b| when b is all 0);
 * +inf when any element of a or b is not finite. */
static inline double check_rel_diff(const float *a, const float *b, int64_t n, double floor) {
    double diff = 0, mx = floor;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        diff = check_max(diff, fabs((double)a[i] - b[i]));
        mx = check_max(mx, fabs((double)b[i]));
    }
    return mx > 0 ? diff / mx : diff;
}

/* 1 when check_rel_diff(a, b) would exceed tol if element n/2 of a were NaN: the NaN case that
 * each reference comparison carries, proving the comparison can fail. */
static inline int check_nan_detected(const float *a, const float *b, int64_t n, double floor, double tol) {
    if (n <= 0) return 0;
    float *c = malloc(sizeof(float) * (size_t)n);
    memcpy(c, a, sizeof(float) * (size_t)n);
    c[n / 2] = NAN;
    int detected = !(check_rel_diff(c, b, n, floor) <= tol);
    free(c);
    return detected;
}

/* Marks the running test as skipped (it could not run here), with the reason on rank 0. */
#define CHECK_SKIP(...)                                                  \
    do {                                                                 \
        if (comm_rank() == 0) {                                          \
            printf("skip: ");                                            \
            printf(__VA_ARGS__);                                         \
            putchar('\n');                                               \
        }                                                                \
        check_skipped_now = 1;                                           \
    } while (0)

static inline void check_run(const char *name, void (*fn)(void)) {
    check_failed_now = check_skipped_now = 0;
    double t0 = comm_wtime();
    fn();
    int f[2] = {check_failed_now, check_skipped_now}, any[2];
    MPI_Allreduce(f, any, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any[0]) check_failed_total++;
    else if (any[1]) check_skipped_total++;
    else check_passed_total++;
    if (comm_rank() == 0) {
        printf("%s %s (%d rank%s, %.2fs)\n", any[0] ? "FAIL" : any[1] ? "skip" : "ok  ", name, comm_size(),
               comm_size() > 1 ? "s" : "", comm_wtime() - t0);
        fflush(stdout);
    }
}
#define RUN_TEST(fn) check_run(#fn, fn)

/* A new temporary file holding text; returns its path (free it, unlink it). */
static inline char *check_tmp_file(const char *text) {
    char *path = strdup("/tmp/car_test_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) abort();
    close(fd);
    return path;
}

static inline int check_finish(void) {
    if (comm_rank() == 0)
        printf("RESULT %d passed, %d failed, %d skipped\n", check_passed_total, check_failed_total, check_skipped_total);
    fflush(stdout);
    int failed = check_failed_total;
    comm_finalize();
    return failed ? 1 : 0;
}

#endif
