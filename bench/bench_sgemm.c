/* bench_sgemm [N] [REPS]: the machine's practical sgemm peak (GFLOP/s, median of REPS) for
 * square N x N products with the BLAS kernel and threads this process runs with. Other
 * benchmarks report their FLOP/s as a share of this figure. */
#include "comm.h"
#include "util.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_sgemm");
    int n = argc > 1 ? atoi(argv[1]) : 1024, reps = argc > 2 ? atoi(argv[2]) : 7;
    if (n < 16 || reps < 1) comm_fail("usage: bench_sgemm [N >= 16] [REPS >= 1]");
    float *a = xmalloc(sizeof(float) * (size_t)n * (size_t)n), *b = xmalloc(sizeof(float) * (size_t)n * (size_t)n),
          *c = xmalloc(sizeof(float) * (size_t)n * (size_t)n);
    for (size_t i = 0; i < (size_t)n * (size_t)n; i++) a[i] = b[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    double *gf = xmalloc(sizeof(double) * (size_t)reps);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = comm_wtime();
        int inner = 0;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
            inner++;
        } while (comm_wtime() - t0 < 0.2);
        gf[r] = 2.0 * n * (double)n * n * inner / (comm_wtime() - t0) / 1e9;
    }
    qsort(gf, (size_t)reps, sizeof *gf, cmp_double);
    if (comm_rank() == 0)
        printf("sgemm %dx%dx%d: median %.1f GFLOP/s (min %.1f, max %.1f, %d runs) | %s\n", n, n, n, gf[reps / 2], gf[0],
               gf[reps - 1], reps, comm_blas_info());
    free(a); free(b); free(c); free(gf);
    comm_finalize();
    return 0;
}
