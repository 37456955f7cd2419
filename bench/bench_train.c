/* bench_train [--d D] [--layers N] [--heads H] [--levels L] [--codebook K] [--items V] [--batch B]
 *             [--history N] [--mode car|ar] [--dropout P] [--steps S]
 * Training throughput: forward, backward and AdamW steps (train_step, as car_train runs them) of
 * the chunk Transformer on random histories of equal length (Beauty-sized by default). The global
 * batch B is split over the ranks, the UID tables are sharded. Prints the median step, tokens/s,
 * model GFLOP/s (matrix products) and its share of this process's own sgemm peak measured in the
 * same run with the same threads; with P ranks also the step split into compute, communication
 * and idle (waiting for the slowest rank, timed by a barrier before every collective), bytes sent
 * per rank and step, and peak memory per rank and of the UID tables per rank; and where the time
 * goes: each part of the step (Model.prof) in ms per step, forward and backward, and its share. */
#include "comm.h"
#include "model.h"
#include "train.h"
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

/* The per-part table: ms per step (mean over ranks and the timed steps) and share of the step. */
static void print_parts(const ModelProfile *prof, int steps, double step) {
    double sec[2][PART_N], covered = 0;
    memcpy(sec, prof->seconds, sizeof sec);
    comm_sum_double(&sec[0][0], 2 * PART_N);
    double per = 1.0 / ((double)comm_size() * steps);
    if (comm_rank() != 0) return;
    printf("  where the time goes (ms per step, mean over ranks; step %.1f ms):\n", 1e3 * step);
    printf("    %-22s %9s %9s %9s %7s\n", "part", "forward", "backward", "total", "share");
    for (int p = 0; p < PART_N; p++) {
        double f = sec[0][p] * per, b = sec[1][p] * per;
        covered += f + b;
        printf("    %-22s %9.2f %9.2f %9.2f %6.1f%%\n", model_part_names[p], 1e3 * f, 1e3 * b, 1e3 * (f + b),
               100 * (f + b) / step);
        printf("BENCH part name=\"%s\" fwd_ms=%.3f bwd_ms=%.3f share=%.4f\n", model_part_names[p], 1e3 * f, 1e3 * b,
               (f + b) / step);
    }
    printf("    %-22s %9s %9s %9.2f %6.1f%%\n", "other (batch layout...)", "", "", 1e3 * (step - covered),
           100 * (step - covered) / step);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_train");
    int uid_block = 0, bucket_kib = 256, d = 64, layers = 2, heads = 2, L = 3, K = 256, B = 256, n = 21, steps = 7, mode = MODE_CAR;
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
        else if (!strcmp(k, "--bucket-kib")) bucket_kib = atoi(v);
        else if (!strcmp(k, "--uid-block")) uid_block = atoi(v);
        else comm_fail("unknown option %s", k);
    }
    if (d < 4 || d % heads || L < 0 || L > SID_MAX_LEVELS || K < 2 || V < 2 || B < 1 || n < 2 || steps < 1)
        comm_fail("bad sizes (see the source header for the options)");
    ModelSpec s = {.levels = L, .n_items = V, .max_chunks = n, .d_model = d, .n_layers = layers, .n_heads = heads,
                   .dropout = dropout, .fusion = FUSION_SUM, .mode = mode, .alpha = 1, .seed = 1};
    for (int l = 0; l < L; l++) s.codebook[l] = K;
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)(V * (L ? L : 1)));
    for (int64_t i = 0; i < V * L; i++) codes[i] = (int32_t)rng_below(1, 2, (uint64_t)i, (uint64_t)K);
    /* this rank's share of the global batch */
    int64_t b0, b1;
    comm_split_range(B, comm_size(), comm_rank(), &b0, &b1);
    int Bl = (int)(b1 - b0);
    int *len = xmalloc(sizeof(int) * (size_t)(Bl + 1));
    int32_t *items = xmalloc(sizeof(int32_t) * (size_t)(Bl + 1) * (size_t)n);
    int64_t *sample = xmalloc(sizeof(int64_t) * (size_t)(Bl + 1));
    for (int b = 0; b < Bl; b++) len[b] = n, sample[b] = b0 + b;
    for (int64_t i = 0; i < (int64_t)Bl * n; i++) items[i] = (int32_t)rng_below(1, 3, (uint64_t)(b0 * n + i), (uint64_t)V);
    ModelBatch batch = {Bl, len, items, sample};
    Model m;
    model_create(&m, &s, L ? codes : NULL);
    if (uid_block > 0) m.uid.block = uid_block; /* rows per logits block of the UID head */
    OptimConfig oc;
    optim_defaults(&oc);
    oc.weight_decay = 0.01;
    oc.grad_clip = 1.0;
    comm_set_profiling(comm_size() > 1);
    GradSync gs;
    gradsync_init(&gs, &m.params, (size_t)bucket_kib * 1024 / sizeof(float));
    /* steps alternate: gradients summed by bucket during the backward (car_train's way), then in
     * one all-reduce after it; the split into compute, communication and idle is of the first */
    double *t = xmalloc(sizeof(double) * 2 * (size_t)steps), *t1 = t + steps, split[3] = {0, 0, 0}, bytes = 0;
    ModelProfile prof;
    memset(&prof, 0, sizeof prof);
    for (int st = -1; st < 2 * steps; st++) { /* step -1: warm-up (allocations) */
        int bucketed = st < 0 || st % 2 == 0;
        comm_barrier();
        comm_stats_reset();
        double t0 = comm_wtime(), g;
        m.prof = st >= 0 && bucketed ? &prof : NULL; /* the timers' own cost is in the timed steps */
        train_step(&m, bucketed ? &gs : NULL, &batch, &oc, st + 1, &g);
        double dt = comm_wtime() - t0;
        CommStats cs = comm_stats();
        double step_max = dt;
        comm_max_double(&step_max, 1); /* the step ends when the slowest rank is done */
        if (st < 0) continue;
        if (!bucketed) {
            t1[st / 2] = step_max;
            continue;
        }
        t[st / 2] = step_max;
        split[0] += dt - cs.comm_seconds - cs.idle_seconds;
        split[1] += cs.comm_seconds;
        split[2] += cs.idle_seconds;
        bytes += (double)cs.bytes;
    }
    double flops = model_train_flops(&m), tokens = m.N;
    comm_sum_double(&flops, 1);
    comm_sum_double(&tokens, 1);
    comm_sum_double(split, 3);
    comm_sum_double(&bytes, 1);
    int P = comm_size();
    for (int k = 0; k < 3; k++) split[k] /= (double)P * steps; /* per rank and step */
    bytes /= (double)P * steps;
    qsort(t, (size_t)steps, sizeof *t, cmp_double);
    qsort(t1, (size_t)steps, sizeof *t, cmp_double);
    double one_allreduce = t1[steps / 2];
    double step = t[steps / 2], peak = sgemm_peak(1024), gflops = flops / step / 1e9;
    double uid_mib = (double)m.uid.arena.total * 4 * sizeof(float) / (1 << 20); /* params, grads, m, v */
    double rss = comm_peak_rss_mib();
    comm_max_double(&uid_mib, 1);
    if (comm_rank() == 0) {
        printf("bench_train %s d=%d layers=%d heads=%d L=%d K=%d V=%lld B=%d history=%d dropout=%.2f | %s\n",
               mode == MODE_AR ? "ar" : "car", d, layers, heads, L, K, (long long)V, B, n, dropout, comm_blas_info());
        printf("  step median %.1f ms of %d | %.0f tokens/step | %.0f tokens/s | %.1f GFLOP/s = %.0f%% of sgemm peak "
               "%.1f GFLOP/s (one rank's, same process) | peak memory %.0f MiB per rank (max), UID tables %.2f MiB "
               "per rank\n",
               1e3 * step, steps, tokens, tokens / step, gflops, 100 * gflops / (peak * P), peak, rss, uid_mib);
        if (P > 1)
            printf("  per rank and step (mean): compute %.1f ms, communication %.1f ms, idle %.1f ms; %.0f KiB sent; "
                   "gradients in %d buckets of ~%d KiB during the backward vs one all-reduce after it: step %.1f vs "
                   "%.1f ms (%.3fx)\n",
                   1e3 * split[0], 1e3 * split[1], 1e3 * split[2], bytes / 1024, gs.n, bucket_kib, 1e3 * step,
                   1e3 * one_allreduce, one_allreduce / step);
        printf("BENCH train mode=%s ranks=%d threads=%d tokens_per_s=%.0f gflops=%.1f peak_share=%.3f step_ms=%.1f "
               "compute_ms=%.1f comm_ms=%.1f idle_ms=%.1f kib_sent=%.0f rss_mib=%.0f uid_mib=%.2f one_allreduce_step_ms=%.1f\n",
               mode == MODE_AR ? "ar" : "car", P, openblas_get_num_threads(), tokens / step, gflops, gflops / (peak * P),
               1e3 * step, 1e3 * split[0], 1e3 * split[1], 1e3 * split[2], bytes / 1024, rss, uid_mib, 1e3 * one_allreduce);
    }
    double mean_step = 0;
    for (int i = 0; i < steps; i++) mean_step += t[i] / steps; /* the table's parts add up to the mean */
    print_parts(&prof, steps, mean_step);
    gradsync_free(&gs);
    free(t); free(codes); free(len); free(items); free(sample);
    model_free(&m);
    comm_finalize();
    return 0;
}
