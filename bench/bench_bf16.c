/* bench_bf16 [--items V] [--d D] [--rows R] [--blocks B] [--reps N]
 * The UID head's three products for one training step (B blocks of R rows, as uidhead.c runs
 * them: logits = H W^T, E W for dH, dW += E^T Hs), in fp32 cblas_sgemm against bf16gemm (the
 * operands rounded to bf16, fp32 sums; dW as dW^T = Hs^T E, so every operand is packed by rows or
 * by columns the vector packers take), with the packing timed apart: W in two layouts once per
 * step, each block's H, E (twice) and Hs, and dW^T added into dW once a step. Beauty-sized by default (V 12,101, d 64, 20 blocks
 * of 256 rows: a maximum-length batch). Prints ms per step (median of N), GFLOP/s and the speed
 * ratios, with the path bf16gemm takes on this CPU (AVX512-BF16 or scalar). */
#include "bench_util.h"
#include "bf16gemm.h"
#include "comm.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { FWD, DH, DW, PRODUCTS };
static const char *product_names[PRODUCTS] = {"logits = H W^T", "E W (dH)", "dW += E^T Hs"};

typedef struct {
    int V, d, R, blocks;
    float *H, *W, *E, *Hs, *out, *dW, *dWt; /* fp32 operands and results */
    uint32_t *Wfwd, *Wt, *Ha, *Ea, *EtB, *HsA; /* bf16 packed */
} Step;

/* one step of the three products in fp32: seconds of each into t */
static void step_sgemm(Step *s, double *t) {
    int V = s->V, d = s->d, R = s->R;
    for (int b = 0; b < s->blocks; b++) {
        const float *Hb = s->H + (size_t)b * R * d;
        double t0 = comm_wtime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, V, d, 1.0f, Hb, d, s->W, d, 0.0f, s->E, V);
        double t1 = comm_wtime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, d, V, 1.0f, s->E, V, s->W, d, 0.0f, s->out, d);
        double t2 = comm_wtime();
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, d, R, 1.0f, s->E, V, s->Hs, d, 1.0f, s->dW, d);
        double t3 = comm_wtime();
        t[FWD] += t1 - t0, t[DH] += t2 - t1, t[DW] += t3 - t2;
    }
}

/* the same in bf16: the products into t, the packing into pack. Every operand is packed the way
 * the vector packers take it (rows in order, or B's panels from columns): W in two layouts once a
 * step, then per block H and E as rows of A, E's columns as B's panels for dW^T = Hs^T E, kept
 * transposed over the step and added into dW once at its end. */
static void step_bf16(Step *s, double *t, double *pack) {
    int V = s->V, d = s->d, R = s->R;
    double t0 = comm_wtime();
    bf16_pack_b(s->W, V, d, d, 0, s->Wfwd); /* W (V,d): B of the logits */
    bf16_pack_b(s->W, d, V, d, 1, s->Wt);   /* W^T (d,V): B of E W */
    memset(s->dWt, 0, sizeof(float) * (size_t)V * d);
    *pack += comm_wtime() - t0;
    for (int b = 0; b < s->blocks; b++) {
        const float *Hb = s->H + (size_t)b * R * d;
        double p0 = comm_wtime();
        bf16_pack_a(Hb, R, d, d, 0, s->Ha);
        double t1 = comm_wtime();
        bf16_gemm(R, V, d, 1.0f, s->Ha, s->Wfwd, 0.0f, s->E, V);
        double t2 = comm_wtime();
        bf16_pack_a(s->E, R, V, V, 0, s->Ea);   /* E (R,V) */
        bf16_pack_b(s->E, V, R, V, 1, s->EtB);  /* E^T (V,R) as B */
        bf16_pack_a(s->Hs, d, R, d, 1, s->HsA); /* Hs^T (d,R) */
        double t3 = comm_wtime();
        bf16_gemm(R, d, V, 1.0f, s->Ea, s->Wt, 0.0f, s->out, d);
        double t4 = comm_wtime();
        bf16_gemm(d, V, R, 1.0f, s->HsA, s->EtB, 1.0f, s->dWt, V);
        double t5 = comm_wtime();
        *pack += (t1 - p0) + (t3 - t2);
        t[FWD] += t2 - t1, t[DH] += t4 - t3, t[DW] += t5 - t4;
    }
    double t6 = comm_wtime();
    for (int v = 0; v < V; v++)
        for (int c = 0; c < d; c++) s->dW[(size_t)v * d + c] += s->dWt[(size_t)c * V + v];
    *pack += comm_wtime() - t6;
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_bf16");
    Step s = {.V = 12101, .d = 64, .R = 256, .blocks = 20};
    int reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--items")) s.V = atoi(v);
        else if (!strcmp(k, "--d")) s.d = atoi(v);
        else if (!strcmp(k, "--rows")) s.R = atoi(v);
        else if (!strcmp(k, "--blocks")) s.blocks = atoi(v);
        else if (!strcmp(k, "--reps")) reps = atoi(v);
        else comm_fail("bench_bf16: unknown option %s (see the source header)", k);
    }
    if (s.V < 1 || s.d < 1 || s.R < 1 || s.blocks < 1 || reps < 1) comm_fail("bench_bf16: sizes must be >= 1");
    int V = s.V, d = s.d, R = s.R;
    s.H = xmalloc(sizeof(float) * (size_t)s.blocks * R * d);
    s.W = xmalloc(sizeof(float) * (size_t)V * d);
    s.E = xmalloc(sizeof(float) * (size_t)R * V);
    s.Hs = xmalloc(sizeof(float) * (size_t)R * d);
    s.out = xmalloc(sizeof(float) * (size_t)R * d);
    s.dW = xcalloc((size_t)V * d, sizeof(float));
    for (size_t i = 0; i < (size_t)s.blocks * R * d; i++) s.H[i] = sinf(0.37f * (float)i);
    for (size_t i = 0; i < (size_t)V * d; i++) s.W[i] = 0.02f * cosf(0.11f * (float)i);
    for (size_t i = 0; i < (size_t)R * d; i++) s.Hs[i] = 1e-3f * sinf(0.7f * (float)i);
    s.Wfwd = xmalloc(4 * bf16_b_words(V, d));
    s.Wt = xmalloc(4 * bf16_b_words(d, V));
    s.Ha = xmalloc(4 * bf16_a_words(R, d));
    s.Ea = xmalloc(4 * bf16_a_words(R, V));
    s.EtB = xmalloc(4 * bf16_b_words(V, R));
    s.HsA = xmalloc(4 * bf16_a_words(d, R));
    s.dWt = xmalloc(sizeof(float) * (size_t)V * d);
    double *tf = xcalloc((size_t)PRODUCTS * reps, sizeof(double)), *tb = xcalloc((size_t)PRODUCTS * reps, sizeof(double));
    double *tp = xcalloc((size_t)reps, sizeof(double)), warm[PRODUCTS] = {0}, wp = 0;
    step_sgemm(&s, warm); /* warm-up: pages, packing buffers */
    step_bf16(&s, warm, &wp);
    for (int r = 0; r < reps; r++) { /* alternating */
        double a[PRODUCTS] = {0}, b[PRODUCTS] = {0};
        step_sgemm(&s, a);
        step_bf16(&s, b, &tp[r]);
        for (int p = 0; p < PRODUCTS; p++) tf[(size_t)p * reps + r] = a[p], tb[(size_t)p * reps + r] = b[p];
    }
    if (comm_rank() == 0) {
        printf("bench_bf16 V=%d d=%d rows=%d blocks=%d (%d rows a step), %d alternating reps, medians | bf16 path: %s | "
               "%s\n", V, d, R, s.blocks, R * s.blocks, reps, bf16_gemm_native() ? "AVX512-BF16" : "scalar",
               comm_blas_info());
        double sf = 0, sb = 0, flops = 2.0 * R * (double)V * d * s.blocks;
        for (int p = 0; p < PRODUCTS; p++) {
            double f = bench_median(tf + (size_t)p * reps, reps), b = bench_median(tb + (size_t)p * reps, reps);
            sf += f, sb += b;
            printf("  %-16s sgemm %8.2f ms %6.1f GFLOP/s | bf16 %8.2f ms %6.1f GFLOP/s | bf16 / sgemm speed %.2fx\n",
                   product_names[p], 1e3 * f, flops / f / 1e9, 1e3 * b, flops / b / 1e9, f / b);
        }
        double pk = bench_median(tp, reps);
        printf("  all three: sgemm %.2f ms, bf16 %.2f ms + packing %.2f ms = %.2f ms | speed %.2fx without packing, "
               "%.2fx with it\n", 1e3 * sf, 1e3 * sb, 1e3 * pk, 1e3 * (sb + pk), sf / sb, sf / (sb + pk));
        printf("BENCH bf16 sgemm_ms=%.2f bf16_ms=%.2f pack_ms=%.2f speed=%.3f speed_with_pack=%.3f native=%d\n", 1e3 * sf,
               1e3 * sb, 1e3 * pk, sf / sb, sf / (sb + pk), bf16_gemm_native());
    }
    free(s.H), free(s.W), free(s.E), free(s.Hs), free(s.out), free(s.dW);
    free(s.dWt), free(s.Wfwd), free(s.Wt), free(s.Ha), free(s.Ea), free(s.EtB), free(s.HsA), free(tf), free(tb), free(tp);
    comm_finalize();
    return 0;
}
