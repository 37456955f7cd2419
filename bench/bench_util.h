/* bench_util: what the benchmarks share: medians and CPU time (on a shared machine CPU seconds
 * are what other load disturbs least; wall time is printed beside them). */
#ifndef CAR_BENCH_UTIL_H
#define CAR_BENCH_UTIL_H
#include <stdlib.h>
#include <time.h>

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sorts t[0..n) and returns its median (the upper one for even n) */
static inline double bench_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return t[n / 2];
}

/* CPU seconds of this process, all its threads */
static inline double bench_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
