/* check: the test harness for unit and MPI tests. A test is a void function; CHECK records
 * a failure on this rank; a test fails if it failed on any rank. Ends with the line
 * "RESULT N passed, N failed" that tests/run_tests.sh adds up. */
#ifndef CAR_CHECK_H
#define CAR_CHECK_H
#include "comm.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_failed_now, check_passed_total, check_failed_total;

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

/* max |a - b| / max(floor, max |b|) (floor 0: plain relative error; |a - b| when b is all 0) */
static inline double check_rel_diff(const float *a, const float *b, int64_t n, double floor) {
    double diff = 0, mx = floor;
    for (int64_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return mx > 0 ? diff / mx : diff;
}

static inline void check_run(const char *name, void (*fn)(void)) {
    check_failed_now = 0;
    double t0 = comm_wtime();
    fn();
    int f = check_failed_now, any = f;
    MPI_Allreduce(&f, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any) check_failed_total++;
    else check_passed_total++;
    if (comm_rank() == 0) {
        printf("%s %s (%d rank%s, %.2fs)\n", any ? "FAIL" : "ok  ", name, comm_size(), comm_size() > 1 ? "s" : "",
               comm_wtime() - t0);
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
    if (comm_rank() == 0) printf("RESULT %d passed, %d failed\n", check_passed_total, check_failed_total);
    fflush(stdout);
    int failed = check_failed_total;
    comm_finalize();
    return failed ? 1 : 0;
}

#endif
