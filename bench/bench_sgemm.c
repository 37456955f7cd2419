/* bench_sgemm [N] [REPS]: the machine's practical sgemm peak (GFLOP/s, median of REPS) for
 * square N x N products with the BLAS kernel and threads this process runs with. Other
 * benchmarks report their FLOP/s as a share of this figure. Beside it, what one core's vector
 * units sustain on a register-only loop of independent fused multiply-adds (AVX-512, else AVX2),
 * and of AVX512-BF16 dot products where the CPU has them: how far sgemm itself is from the
 * hardware, and the most a bf16 kernel could gain over fp32 on this CPU. */
#include "comm.h"
#include "util.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PROBE_X86 1
#endif

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#ifdef PROBE_X86
enum { PROBE_ITERS = 20000000 };
/* 12 independent chains of op (enough to hide the latency on two pipes), in registers, each from
 * its own start (equal chains would be merged into one by the compiler); x changes every pass
 * (asm) so nothing is hoisted. The sum of the chains is returned through *sink. */
#define PROBE_LOOP(T, init, OP, flops_per_op, sum)                                                     \
    T a0 = init(0), a1 = init(1), a2 = init(2), a3 = init(3), a4 = init(4), a5 = init(5), a6 = init(6),  \
      a7 = init(7), a8 = init(8), a9 = init(9), a10 = init(10), a11 = init(11);                      \
    double t0 = comm_wtime();                                                                        \
    for (long i = 0; i < PROBE_ITERS; i++) {                                                         \
        a0 = OP(a0); a1 = OP(a1); a2 = OP(a2); a3 = OP(a3); a4 = OP(a4); a5 = OP(a5);                \
        a6 = OP(a6); a7 = OP(a7); a8 = OP(a8); a9 = OP(a9); a10 = OP(a10); a11 = OP(a11);            \
        __asm__ volatile("" : "+v"(x));                                                              \
    }                                                                                                \
    double dt = comm_wtime() - t0;                                                                   \
    *sink += sum(a0) + sum(a1) + sum(a2) + sum(a3) + sum(a4) + sum(a5) + sum(a6) + sum(a7) + sum(a8) \
             + sum(a9) + sum(a10) + sum(a11);                                                        \
    return (double)PROBE_ITERS * 12 * (flops_per_op) / dt / 1e9

__attribute__((target("avx512f"))) static double probe_fma512(float *sink) {
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.5f);
#define FMA512(acc) _mm512_fmadd_ps(x, y, acc)
    PROBE_LOOP(__m512, _mm512_set1_ps, FMA512, 32, _mm512_reduce_add_ps);
}
__attribute__((target("avx2,fma"))) static float sum256(__m256 v) {
    float l[8], s = 0;
    _mm256_storeu_ps(l, v);
    for (int j = 0; j < 8; j++) s += l[j];
    return s;
}
__attribute__((target("avx2,fma"))) static double probe_fma256(float *sink) {
    __m256 x = _mm256_set1_ps(1.0001f), y = _mm256_set1_ps(0.5f);
#define FMA256(acc) _mm256_fmadd_ps(x, y, acc)
    PROBE_LOOP(__m256, _mm256_set1_ps, FMA256, 16, sum256);
}
__attribute__((target("avx512f,avx512bf16"))) static double probe_bf16(float *sink) {
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x3c003c00);
#define DPBF16(acc) _mm512_dpbf16_ps(acc, x, y)
    PROBE_LOOP(__m512, _mm512_set1_ps, DPBF16, 64, _mm512_reduce_add_ps);
}

/* the best of 3 runs of each probe this CPU can run; prints them against sgemm (per BLAS thread) */
static void print_probes(double sgemm, int threads) {
    int has512 = __builtin_cpu_supports("avx512f"), hasfma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int hasbf16 = has512 && __builtin_cpu_supports("avx512bf16");
    if (!hasfma) return;
    double fma = 0, bf = 0;
    float sink = 0;
    for (int r = 0; r < 3; r++) {
        double f = has512 ? probe_fma512(&sink) : probe_fma256(&sink), b = hasbf16 ? probe_bf16(&sink) : 0;
        fma = f > fma ? f : fma;
        bf = b > bf ? b : bf;
    }
    printf("one core's vector units (register-only loop, best of 3): %s fp32 FMA %.1f GFLOP/s; sgemm per BLAS thread = "
           "%.0f%% of it", has512 ? "AVX-512" : "AVX2", fma, 100 * sgemm / threads / fma);
    if (hasbf16) printf("; AVX512-BF16 dot %.1f GFLOP/s = %.2fx the fp32 FMA", bf, bf / fma);
    printf(sink == 1234.5f ? " \n" : "\n"); /* the chains' sum is used, so they are computed */
}
#endif

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
#ifdef PROBE_X86
    if (comm_rank() == 0) print_probes(gf[reps / 2], openblas_get_num_threads());
#endif
    free(a); free(b); free(c); free(gf);
    comm_finalize();
    return 0;
}
