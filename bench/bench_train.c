/* bench_train [--d D] [--layers N] [--heads H] [--levels L] [--codebook K] [--items V] [--batch B]
 *             [--history N] [--mode car|ar] [--dropout P] [--steps S]
 * Training throughput of one rank: forward, backward and AdamW steps of the chunk Transformer
 * on random histories of equal length (Beauty-sized by default). Prints the median step, tokens/s,
 * model GFLOP/s (matrix products) and its share of this process's own sgemm peak measured in the
 * same run with the same threads, and peak memory. */
#include "comm.h"
#include "model.h"
#include "rng.h"
#include "util.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sgemm GFLOP/s of n x n x n products with this process's kernel and threads */
static double sgemm_peak(int n) {
    float *a = xmalloc(sizeof(float) * (size_t)n * n), *c = xmalloc(sizeof(float) * (size_t)n * n);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 97) / 97.0f;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = comm_wtime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, a, n, 0, c, n);
        double g = 2.0 * n * (double)n * n / (comm_wtime() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a);
    free(c);
    return best;
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_train");
    int d = 64, layers = 2, heads = 2, L = 3, K = 256, B = 256, n = 21, steps = 7, mode = MODE_CAR;
    int64_t V = 12101;
    float dropout = 0.3f;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--d")) d = atoi(v);
        else if (!strcmp(k, "--layers")) layers = atoi(v);
        else if (!strcmp(k, "--heads")) heads = atoi(v);
        else if (!strcmp(k, "--levels")) L = atoi(v);
        else if (!strcmp(k, "--codebook")) K = atoi(v);
        else if (!strcmp(k, "--items")) V = atoll(v);
        else if (!strcmp(k, "--batch")) B = atoi(v);
        else if (!strcmp(k, "--history")) n = atoi(v);
        else if (!strcmp(k, "--mode")) mode = !strcmp(v, "ar") ? MODE_AR : MODE_CAR;
        else if (!strcmp(k, "--dropout")) dropout = (float)atof(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else comm_fail("unknown option %s", k);
    }
    if (d < 4 || d % heads || L < 0 || L > SID_MAX_LEVELS || K < 2 || V < 2 || B < 1 || n < 2 || steps < 1)
        comm_fail("bad sizes (see the source header for the options)");
    ModelSpec s = {.levels = L, .n_items = V, .max_chunks = n, .d_model = d, .n_layers = layers, .n_heads = heads,
                   .dropout = dropout, .fusion = FUSION_SUM, .mode = mode, .alpha = 1, .seed = 1};
    for (int l = 0; l < L; l++) s.codebook[l] = K;
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)(V * (L ? L : 1)));
    for (int64_t i = 0; i < V * L; i++) codes[i] = (int32_t)rng_below(1, 2, (uint64_t)i, (uint64_t)K);
    int *len = xmalloc(sizeof(int) * (size_t)B);
    int32_t *items = xmalloc(sizeof(int32_t) * (size_t)B * (size_t)n);
    for (int b = 0; b < B; b++) len[b] = n;
    for (int64_t i = 0; i < (int64_t)B * n; i++) items[i] = (int32_t)rng_below(1, 3, (uint64_t)i, (uint64_t)V);
    ModelBatch batch = {B, len, items, NULL};
    Model m;
    model_create(&m, &s, L ? codes : NULL);
    OptimConfig oc;
    optim_defaults(&oc);
    oc.weight_decay = 0.01;
    oc.grad_clip = 1.0;
    double *t = xmalloc(sizeof(double) * (size_t)steps), tf = 0, tb = 0;
    for (int st = -1; st < steps; st++) { /* step -1: warm-up (allocations) */
        double t0 = comm_wtime();
        model_zero_grad(&m);
        ModelLoss l = model_forward(&m, &batch, 1, st + 1, 1.0f / (float)model_count_targets(&m, &batch));
        double t1 = comm_wtime();
        model_backward(&m);
        double t2 = comm_wtime();
        model_optimizer_step(&m, &oc, st + 1);
        (void)l;
        if (st < 0) continue;
        t[st] = comm_wtime() - t0;
        tf += t1 - t0;
        tb += t2 - t1;
    }
    double flops = model_train_flops(&m);
    qsort(t, (size_t)steps, sizeof *t, cmp_double);
    double step = t[steps / 2], peak = sgemm_peak(1024), gflops = flops / step / 1e9;
    if (comm_rank() == 0) {
        printf("bench_train %s d=%d layers=%d heads=%d L=%d K=%d V=%lld B=%d history=%d dropout=%.2f | %s\n",
               mode == MODE_AR ? "ar" : "car", d, layers, heads, L, K, (long long)V, B, n, dropout, comm_blas_info());
        printf("  step median %.1f ms of %d (forward %.1f, backward %.1f mean) | %d tokens/step | %.0f tokens/s | "
               "%.1f GFLOP/s = %.0f%% of sgemm peak %.1f GFLOP/s (same process) | peak memory %.0f MiB\n",
               1e3 * step, steps, 1e3 * tf / steps, 1e3 * tb / steps, m.N, m.N / step, gflops, 100 * gflops / peak, peak,
               (double)peak_rss_kib() / 1024);
        printf("BENCH train mode=%s threads=%d tokens_per_s=%.0f gflops=%.1f peak_share=%.3f step_ms=%.1f rss_mib=%.0f\n",
               mode == MODE_AR ? "ar" : "car", openblas_get_num_threads(), m.N / step, gflops, gflops / peak, 1e3 * step,
               (double)peak_rss_kib() / 1024);
    }
    free(t); free(codes); free(len); free(items);
    model_free(&m);
    comm_finalize();
    return 0;
}
