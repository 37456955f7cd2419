/* bench_train [--d D] [--layers N] [--heads H] [--levels L] [--codebook K] [--items V] [--batch B]
 *             [--history N] [--mode car|ar] [--dropout P] [--steps S] [--dataset FILE [--split tokens|owner]]
 *             [--uid-bf16 0|1]
 * Training throughput: forward, backward and AdamW steps (train_step, as car_train runs them) of
 * the chunk Transformer on random histories of equal length N (Beauty-sized by default), the
 * global batch B split evenly over the ranks; or with --dataset, on the real training windows of
 * FILE (a car_prep dataset, e.g. data/beauty/dataset.h5: its lengths, cut to N items, and items;
 * V is its item count), step t training global batch t of epoch 1 formed as car_train forms it
 * (batch.h, inside the timed step), split over the ranks by tokens or, with --split owner, by
 * which rank owns the user (the earlier split). The UID tables are sharded. Prints the step (the median of
 * equal random batches; with --dataset, the mean after a warm-up pass over every batch), tokens/s,
 * model GFLOP/s (matrix products) and its share of this process's own sgemm peak measured in the
 * same run with the same threads; with P ranks also the step split into compute, communication
 * and idle (waiting for the slowest rank, timed by a barrier before every collective), bytes sent
 * per rank and step, tokens per rank (max / mean, 1 = balanced), and peak memory per rank and of
 * the UID tables per rank; and where the time
 * goes: each part of the step (Model.prof) in ms per step, forward and backward, and its share;
 * and the time inside sgemm (every cblas_sgemm of the step, wrapped at link time: -Wl,--wrap) with
 * the share the step would reach if everything outside sgemm took no time, its ceiling. */
#include "batch.h"
#include "comm.h"
#include "h5io.h"
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

/* the step time of n timed steps: their mean, or their median (sorts t) */
static double step_time(double *t, int n, int mean) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += t[i] / n;
    if (mean) return sum;
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return t[n / 2];
}

/* cblas_sgemm as linked into this program (Makefile: -Wl,--wrap=cblas_sgemm): while counting, the
 * seconds spent inside it and the FLOPs it did */
void __real_cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, blasint M, blasint N,
                        blasint K, float alpha, const float *A, blasint lda, const float *B, blasint ldb, float beta,
                        float *C, blasint ldc);
void __wrap_cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, blasint M, blasint N,
                        blasint K, float alpha, const float *A, blasint lda, const float *B, blasint ldb, float beta,
                        float *C, blasint ldc);
static struct { int on; double seconds, flops, calls; } sgemm_count;
void __wrap_cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, blasint M, blasint N,
                        blasint K, float alpha, const float *A, blasint lda, const float *B, blasint ldb, float beta,
                        float *C, blasint ldc) {
    double t0 = sgemm_count.on ? comm_wtime() : 0;
    __real_cblas_sgemm(o, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (!sgemm_count.on) return;
    sgemm_count.seconds += comm_wtime() - t0;
    sgemm_count.flops += 2.0 * M * (double)N * K;
    sgemm_count.calls++;
}

/* The step's time inside sgemm (mean over ranks and the profiled steps) against the whole step, and
 * the ceiling: the model's FLOPs over the sgemm time alone, as a share of the peak. */
static void print_sgemm_share(int steps, double step, double model_flops, double peak) {
    double c[3] = {sgemm_count.seconds, sgemm_count.flops, sgemm_count.calls};
    comm_sum_double(c, 3);
    double per = 1.0 / ((double)comm_size() * steps), sec = c[0] * per;
    if (comm_rank() != 0) return;
    printf("  inside sgemm: %.1f ms per step (%.0f%% of the step), %.0f calls, %.1f GFLOP/s = %.0f%% of the peak; "
           "outside: %.1f ms | ceiling (nothing outside sgemm): the step's share %.0f%%\n",
           1e3 * sec, 100 * sec / step, c[2] * per, c[1] * per / sec / 1e9, 100 * c[1] * per / sec / 1e9 / peak,
           1e3 * (step - sec), 100 * model_flops / sec / 1e9 / peak);
    printf("BENCH sgemm inside_ms=%.2f outside_ms=%.2f calls=%.0f sgemm_gflops=%.1f ceiling_share=%.3f\n", 1e3 * sec,
           1e3 * (step - sec), c[2] * per, c[1] * per / sec / 1e9, model_flops / sec / 1e9 / peak);
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

/* --dataset: the real training windows, batches of epoch 1 in car_train's order and split */
typedef struct {
    Dataset ds;
    int64_t *offsets, *order, n_train;
    UserSlice users;
    Batcher bt;
} RealBatches;

static void real_open(RealBatches *rb, const char *path, int B, int n, int mode, int C, int split) {
    dataset_open(&rb->ds, path);
    int64_t U = rb->ds.n_users;
    rb->offsets = xmalloc(sizeof(int64_t) * (size_t)(U + 1));
    h5io_read_all(rb->ds.file, "/users/offsets", H5T_NATIVE_INT64, rb->offsets);
    dataset_read_my_users(&rb->ds, &rb->users);
    rb->order = xmalloc(sizeof(int64_t) * (size_t)(U + 1));
    rb->n_train = batch_epoch_order(rb->offsets, U, 1, 1, rb->order);
    if (rb->n_train < 1) comm_fail("%s: no user has a training window", path);
    batcher_init(&rb->bt, B, n - 1, mode, C, split); /* windows of at most n = max_history + 1 items */
}

/* global batch t (wrapping around the epoch) */
static ModelBatch real_batch(RealBatches *rb, int B, int64_t t) {
    int64_t per_epoch = (rb->n_train + B - 1) / B, s = t % per_epoch;
    int64_t count = rb->n_train - s * B < B ? rb->n_train - s * B : B;
    return batcher_form(&rb->bt, rb->order + s * B, (int)count, rb->offsets, rb->ds.n_users, &rb->users);
}

static void real_close(RealBatches *rb) {
    batcher_free(&rb->bt);
    user_slice_free(&rb->users);
    free(rb->offsets);
    free(rb->order);
    dataset_close(&rb->ds);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_train");
    int uid_block = 0, uid_bf16 = 0, bucket_kib = 256, d = 64, layers = 2, heads = 2, L = 3, K = 256, B = 256, n = 21, steps = 7, mode = MODE_CAR;
    int64_t V = 12101;
    float dropout = 0.3f;
    const char *data = NULL, *split_name = "tokens";
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
        else if (!strcmp(k, "--uid-bf16")) uid_bf16 = atoi(v);
        else if (!strcmp(k, "--dataset")) data = v;
        else if (!strcmp(k, "--split")) split_name = v;
        else comm_fail("unknown option %s", k);
    }
    if (d < 4 || d % heads || L < 0 || L > SID_MAX_LEVELS || K < 2 || V < 2 || B < 1 || n < 2 || steps < 1)
        comm_fail("bad sizes (see the source header for the options)");
    if (strcmp(split_name, "tokens") && strcmp(split_name, "owner"))
        comm_fail("--split: tokens or owner, not %s", split_name);
    RealBatches rb = {0};
    if (data) {
        real_open(&rb, data, B, n, mode, L + 1, !strcmp(split_name, "owner") ? BATCH_SPLIT_OWNER : BATCH_SPLIT_TOKENS);
        V = rb.ds.n_items;
    }
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
    ModelBatch batch = {Bl, len, items, sample}; /* without --dataset: every step */
    Model m;
    model_create(&m, &s, L ? codes : NULL);
    if (uid_block > 0) m.uid.block = uid_block; /* rows per logits block of the UID head */
    m.uid.bf16 = uid_bf16;                      /* model.uid_bf16 */
    OptimConfig oc;
    optim_defaults(&oc);
    oc.weight_decay = 0.01;
    oc.grad_clip = 1.0;
    comm_set_profiling(comm_size() > 1);
    GradSync gs;
    gradsync_init(&gs, &m.params, (size_t)bucket_kib * 1024 / sizeof(float));
    /* steps alternate: gradients summed by bucket during the backward (car_train's way), then in
     * one all-reduce after it; the split into compute, communication and idle is of the first */
    double *t = xmalloc(sizeof(double) * 4 * (size_t)steps), *t1 = t + steps, split[3] = {0, 0, 0}, bytes = 0;
    double *tok_max = t1 + steps, *tok_sum = tok_max + steps, flops = 0;
    double form[3] = {0, 0, 0}; /* forming --dataset batches: compute, all-to-all, idle before it */
    ModelProfile prof;
    memset(&prof, 0, sizeof prof);
    /* warm-up, untimed: one step, or with --dataset every batch once, so that no timed step grows
     * the activation buffers to a new largest batch (fresh pages: +240 ms on this VM) */
    int warm = data ? steps : 1;
    for (int st = -warm; st < 2 * steps; st++) {
        int bucketed = st < 0 || st % 2 == 0;
        comm_barrier();
        comm_stats_reset();
        double t0 = comm_wtime(), g;
        m.prof = st >= 0 && bucketed ? &prof : NULL; /* the timers' own cost is in the timed steps */
        sgemm_count.on = m.prof != NULL;
        if (data) batch = real_batch(&rb, B, st < 0 ? st + warm : st / 2); /* the pair of steps trains one batch */
        double t_form = comm_wtime() - t0;
        CommStats cs_form = comm_stats(); /* the all-to-all of windows, and waiting for it */
        train_step(&m, bucketed ? &gs : NULL, &batch, &oc, st + warm + 1, &g);
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
        tok_max[st / 2] = tok_sum[st / 2] = m.N;
        form[0] += t_form - cs_form.comm_seconds - cs_form.idle_seconds;
        form[1] += cs_form.comm_seconds;
        form[2] += cs_form.idle_seconds;
        flops += model_train_flops(&m);
        split[0] += dt - cs.comm_seconds - cs.idle_seconds;
        split[1] += cs.comm_seconds;
        split[2] += cs.idle_seconds;
        bytes += (double)cs.bytes;
    }
    comm_sum_double(&flops, 1);
    comm_sum_double(form, 3);
    comm_max_double(tok_max, steps);
    comm_sum_double(tok_sum, steps);
    comm_sum_double(split, 3);
    comm_sum_double(&bytes, 1);
    int P = comm_size();
    double tokens = 0, imbalance = 0; /* per step (global batch), and its busiest rank's over the mean */
    for (int i = 0; i < steps; i++) tokens += tok_sum[i] / steps, imbalance += tok_max[i] * P / tok_sum[i] / steps;
    flops /= steps;
    for (int k = 0; k < 3; k++) split[k] /= (double)P * steps; /* per rank and step */
    bytes /= (double)P * steps;
    /* the batches of --dataset differ in size, so their rate is all tokens over all time (the mean
     * step); equal random batches take the median step, which ignores a disturbed one */
    double one_allreduce = step_time(t1, steps, data != NULL), mean_step = step_time(t, steps, 1);
    double step = step_time(t, steps, data != NULL), peak = sgemm_peak(1024), gflops = flops / step / 1e9;
    double uid_mib = (double)m.uid.arena.total * 4 * sizeof(float) / (1 << 20); /* params, grads, m, v */
    double rss = comm_peak_rss_mib();
    comm_max_double(&uid_mib, 1);
    const char *split_used = data ? split_name : "even"; /* random histories: B / P of equal length each */
    if (comm_rank() == 0) {
        printf("bench_train %s d=%d layers=%d heads=%d L=%d K=%d V=%lld B=%d history=%d dropout=%.2f%s | %s\n",
               mode == MODE_AR ? "ar" : "car", d, layers, heads, L, K, (long long)V, B, n, dropout,
               uid_bf16 ? " uid_bf16" : "", comm_blas_info());
        if (data)
            printf("  batches: the training windows of %s (at most %d items), global batches 1..%d of epoch 1, split by "
                   "%s, formed in the step: %.3f ms compute, %.3f ms all-to-all, %.3f ms idle before it (mean over "
                   "ranks and steps); warmed up on every batch; tokens/s = all tokens / all time (mean step)\n", data, n, steps, split_name,
                   1e3 * form[0] / ((double)P * steps), 1e3 * form[1] / ((double)P * steps),
                   1e3 * form[2] / ((double)P * steps));
        printf("  step %s %.1f ms of %d | %.0f tokens/step | %.0f tokens/s | %.1f GFLOP/s = %.0f%% of sgemm peak "
               "%.1f GFLOP/s (one rank's, same process) | peak memory %.0f MiB per rank (max), UID tables %.2f MiB "
               "per rank\n",
               data ? "mean" : "median", 1e3 * step, steps, tokens, tokens / step, gflops, 100 * gflops / (peak * P), peak, rss, uid_mib);
        if (P > 1)
            printf("  per rank and step (mean): compute %.1f ms, communication %.1f ms, idle %.1f ms; tokens per rank "
                   "max / mean %.3f; %.0f KiB sent; gradients in %d buckets of ~%d KiB during the backward vs one "
                   "all-reduce after it: step %.1f vs %.1f ms (%.3fx)\n",
                   1e3 * split[0], 1e3 * split[1], 1e3 * split[2], imbalance, bytes / 1024, gs.n, bucket_kib, 1e3 * step,
                   1e3 * one_allreduce, one_allreduce / step);
        printf("BENCH train mode=%s ranks=%d threads=%d tokens_per_s=%.0f gflops=%.1f peak_share=%.3f step_ms=%.1f "
               "compute_ms=%.1f comm_ms=%.1f idle_ms=%.1f kib_sent=%.0f rss_mib=%.0f uid_mib=%.2f one_allreduce_step_ms=%.1f "
               "split=%s tok_imbalance=%.4f\n",
               mode == MODE_AR ? "ar" : "car", P, openblas_get_num_threads(), tokens / step, gflops, gflops / (peak * P),
               1e3 * step, 1e3 * split[0], 1e3 * split[1], 1e3 * split[2], bytes / 1024, rss, uid_mib, 1e3 * one_allreduce,
               split_used, imbalance);
    }
    print_parts(&prof, steps, mean_step);
    print_sgemm_share(steps, mean_step, flops / P, peak);
    gradsync_free(&gs);
    free(t); free(codes); free(len); free(items); free(sample);
    if (data) real_close(&rb);
    model_free(&m);
    comm_finalize();
    return 0;
}
