/* bench_scale DATASET.h5 [--batch B] [--steps S] [--eval-users E] [--d D] [--layers N] [--heads H]
 *                        [--levels L] [--codebook K] [--history N]
 * The cost curve of a catalogue that outgrows one machine (issue 13 "Scale"): on a prepared
 * dataset of V items (car_synth + car_prep, e.g. 100k or 1M items) and P ranks, what grows with
 * V and what P divides:
 * - memory per rank: the sharded UID tables (E_u and W_u with gradients and both AdamW moments),
 *   the UID head's logits workspace, evaluation's score block, and the peak RSS (max over ranks);
 * - the training step (train_step as car_train runs it) on the global batch of the dataset's
 *   first B users (their training parts, at most N + 1 items; split over the ranks): median of
 *   S steps after a warm-up; and the UID head alone on the same rows (uid_head_forward_backward,
 *   forward and backward, collectives included) and its CPU time per supervised UID row, the
 *   figure that extrapolates to other batches (a Beauty batch of 256 users has ~1,500 rows);
 * - full-ranking evaluation, valid and test, of the first E users (after a warm-up): users per second.
 * SIDs are random codes (their cost is not the step's). One BENCH line at the end. */
#include "bench_util.h"
#include "comm.h"
#include "eval.h"
#include "rng.h"
#include "train.h"
#include "util.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *data;
    int B, steps, E, d, layers, heads, L, K, history;
} Opts;

static void parse(int argc, char **argv, Opts *o) {
    *o = (Opts){NULL, 16, 3, 4096, 64, 2, 2, 3, 256, 20};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (k[0] != '-') { o->data = k; continue; }
        if (i + 1 >= argc) comm_fail("%s needs a value", k);
        int v = atoi(argv[++i]);
        if (!strcmp(k, "--batch")) o->B = v;
        else if (!strcmp(k, "--steps")) o->steps = v;
        else if (!strcmp(k, "--eval-users")) o->E = v;
        else if (!strcmp(k, "--d")) o->d = v;
        else if (!strcmp(k, "--layers")) o->layers = v;
        else if (!strcmp(k, "--heads")) o->heads = v;
        else if (!strcmp(k, "--levels")) o->L = v;
        else if (!strcmp(k, "--codebook")) o->K = v;
        else if (!strcmp(k, "--history")) o->history = v;
        else comm_fail("unknown option %s (see the source header)", k);
    }
    if (!o->data || o->B < 1 || o->steps < 1 || o->E < 0 || o->d < 4 || o->layers < 1 || o->heads < 1 ||
        o->d % o->heads || o->L < 0 || o->L > SID_MAX_LEVELS || o->K < 2 || o->history < 1)
        comm_fail("usage: bench_scale DATASET.h5 [--batch B] [--steps S] [--eval-users E] [--d D] ... (see the "
                  "source header; d a multiple of heads)");
}

/* This rank's part of the global users [0, n) (at most the dataset's), read from ds. */
static void my_part(const Dataset *ds, int64_t n, UserSlice *s) {
    int64_t lo, hi;
    comm_split_range(n < ds->n_users ? n : ds->n_users, comm_size(), comm_rank(), &lo, &hi);
    dataset_read_users(ds, lo, hi, s);
}

/* The training parts of the slice's users (dataset_split SPLIT_TRAIN) as one packed batch. */
static ModelBatch train_batch(const UserSlice *s, int history) {
    int n = (int)(s->hi - s->lo), *len = xmalloc(sizeof(int) * (size_t)(n + 1)), B = 0;
    int32_t *items = xmalloc(sizeof(int32_t) * (size_t)(s->offsets[n] + 1)), *p = items;
    int64_t *sample = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
    for (int u = 0; u < n; u++) {
        const int32_t *hist;
        int64_t hl;
        int32_t none;
        if (!dataset_split(s->items + s->offsets[u], s->offsets[u + 1] - s->offsets[u], SPLIT_TRAIN, history, &hist,
                           &hl, &none) || hl < 2)
            continue;
        memcpy(p, hist, sizeof(int32_t) * (size_t)hl);
        p += hl;
        len[B] = (int)hl;
        sample[B++] = s->lo + u;
    }
    return (ModelBatch){B, len, items, sample};
}

/* Wall and CPU seconds of the slowest rank since t (wall, cpu), into t. The machine may be
 * shared: CPU seconds are what other load disturbs least (with P > 1 they include MPI's waits). */
static void elapsed(double t[2]) {
    t[0] = comm_wtime() - t[0], t[1] = bench_cpu_seconds() - t[1];
    comm_max_double(t, 2);
}

/* Medians over o->steps of (wall, cpu) seconds of a training step, after a warm-up; med[2], med[3]:
 * the same of the UID head alone (uid_head_forward_backward on this rank's UID rows of the
 * batch, random hidden states, its backward too). *rows: supervised UID rows of the global batch. */
static void time_steps(Model *m, const ModelBatch *b, const Opts *o, double med[4], double *rows) {
    OptimConfig oc;
    optim_defaults(&oc);
    GradSync gs;
    gradsync_init(&gs, &m->params, 256 * 1024 / sizeof(float));
    int n = m->n_tgt[m->spec.levels], d = o->d; /* after a forward: the UID rows and their targets */
    float *H = NULL, *dH = NULL;
    int32_t *tgt = NULL;
    double *t = xmalloc(sizeof(double) * 4 * (size_t)o->steps), g;
    for (int st = -1; st < o->steps; st++) {
        comm_barrier();
        double ts[2] = {comm_wtime(), bench_cpu_seconds()};
        train_step(m, &gs, b, &oc, st + 1, &g);
        elapsed(ts);
        if (st < 0) { /* the UID rows are known now */
            n = m->n_tgt[m->spec.levels];
            H = xmalloc(sizeof(float) * ((size_t)n * d + 1)), dH = xcalloc((size_t)n * d + 1, sizeof(float));
            tgt = xmalloc(sizeof(int32_t) * ((size_t)n + 1));
            memcpy(tgt, m->tgt + (size_t)m->spec.levels * m->N, sizeof(int32_t) * (size_t)n);
            for (size_t i = 0; i < (size_t)n * d; i++) H[i] = (float)rng_normal(7, (uint64_t)comm_rank(), i);
        }
        comm_barrier();
        double tu[2] = {comm_wtime(), bench_cpu_seconds()};
        uid_head_forward_backward(&m->uid, H, tgt, n, 0.0f, 1e-3f, dH);
        elapsed(tu);
        if (st < 0) continue;
        for (int k = 0; k < 2; k++) t[k * o->steps + st] = ts[k], t[(2 + k) * o->steps + st] = tu[k];
    }
    for (int k = 0; k < 4; k++) med[k] = bench_median(t + k * o->steps, o->steps);
    double r = (double)n;
    comm_sum_double(&r, 1);
    *rows = r;
    free(t); free(H); free(dH); free(tgt);
    gradsync_free(&gs);
}

/* (wall, cpu) seconds of the slowest rank of full-ranking evaluation, valid and test, of the
 * slice, after an untimed one of valid (car_train evaluates every epoch: its buffers are warm);
 * *users: the users with a target. */
static void time_eval(Model *m, const UserSlice *s, const EvalOptions *eo, double t[2], double *users) {
    MetricSums ms[2];
    eval_split(m, s, SPLIT_VALID, eo, &ms[0]);
    comm_barrier();
    t[0] = comm_wtime(), t[1] = bench_cpu_seconds();
    eval_split(m, s, SPLIT_VALID, eo, &ms[0]);
    eval_split(m, s, SPLIT_TEST, eo, &ms[1]);
    elapsed(t);
    *users = (double)(ms[0].n + ms[1].n);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_scale");
    Opts o;
    parse(argc, argv, &o);
    Dataset ds;
    dataset_open(&ds, o.data);
    int64_t V = ds.n_items;
    if (V < comm_size()) comm_fail("%s has %lld items, fewer than %d ranks", o.data, (long long)V, comm_size());
    ModelSpec s = {.levels = o.L, .n_items = V, .max_chunks = o.history + 1, .d_model = o.d, .n_layers = o.layers,
                   .n_heads = o.heads, .dropout = 0.1f, .fusion = FUSION_SUM, .mode = MODE_CAR, .alpha = 1, .seed = 1};
    for (int l = 0; l < o.L; l++) s.codebook[l] = o.K;
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)(V * (o.L ? o.L : 1)));
    for (int64_t i = 0; i < V * o.L; i++) codes[i] = (int32_t)rng_below(1, 2, (uint64_t)i, (uint64_t)o.K);
    Model m;
    model_create(&m, &s, o.L ? codes : NULL);
    UserSlice tu, eu;
    my_part(&ds, o.B, &tu);
    my_part(&ds, o.E, &eu);
    ModelBatch b = train_batch(&tu, o.history);
    double step[4], rows, ev[2] = {0, 0}, users = 0;
    time_steps(&m, &b, &o, step, &rows);
    EvalOptions eo = {.max_history = o.history, .batch_size = 256, .think_weight = 0, .think_levels = o.L};
    if (o.E) time_eval(&m, &eu, &eo, ev, &users);
    /* memory per rank, the largest: UID tables (params, grads, m, v), UID workspace, score block, RSS */
    double mib[3] = {(double)m.uid.arena.total * 4 * sizeof(float), (double)m.uid.work_cap * sizeof(float),
                     (double)eval_score_block_floats(&m, &eo) * sizeof(float)};
    for (int k = 0; k < 3; k++) mib[k] /= 1 << 20;
    comm_max_double(mib, 3);
    double rss = comm_peak_rss_mib();
    if (comm_rank() == 0) {
        int P = comm_size();
        printf("bench_scale %s: V=%lld items (%lld per rank), d=%d layers=%d L=%d K=%d, global batch %d users "
               "(%.0f UID rows), %d steps, eval %d users | ranks=%d threads=%d %s\n",
               o.data, (long long)V, (long long)((V + P - 1) / P), o.d, o.layers, o.L, o.K, o.B, rows, o.steps, o.E, P,
               openblas_get_num_threads(), comm_blas_info());
        printf("  memory per rank (max): UID tables %.1f MiB, UID logits workspace %.1f MiB (%d rows a block), "
               "eval score block %.1f MiB, peak RSS %.0f MiB\n",
               mib[0], mib[1], uid_block_rows(&m.uid), mib[2], rss);
        printf("  train step median %.1f ms wall, %.1f ms CPU (slowest rank); UID head alone %.1f ms wall, %.1f ms CPU "
               "= %.1f us CPU per UID row\n",
               1e3 * step[0], 1e3 * step[1], 1e3 * step[2], 1e3 * step[3], 1e6 * step[3] / rows);
        printf("  eval valid + test: %.0f users in %.2f s wall (%.0f users/s), %.2f s CPU (%.0f users per CPU "
               "second)\n",
               users, ev[0], ev[0] > 0 ? users / ev[0] : 0, ev[1], ev[1] > 0 ? users / ev[1] : 0);
        printf("BENCH scale items=%lld ranks=%d threads=%d batch=%d uid_rows=%.0f step_ms=%.2f step_cpu_ms=%.2f "
               "uid_ms=%.2f uid_cpu_ms=%.2f uid_cpu_us_per_row=%.3f eval_users=%.0f eval_s=%.3f eval_cpu_s=%.3f "
               "uid_mib=%.2f work_mib=%.2f score_mib=%.2f rss_mib=%.0f\n",
               (long long)V, P, openblas_get_num_threads(), o.B, rows, 1e3 * step[0], 1e3 * step[1], 1e3 * step[2],
               1e3 * step[3], 1e6 * step[3] / rows, users, ev[0], ev[1], mib[0], mib[1], mib[2], rss);
    }
    free((void *)b.len); free((void *)b.items); free((void *)b.sample); free(codes);
    user_slice_free(&tu);
    user_slice_free(&eu);
    model_free(&m);
    dataset_close(&ds);
    comm_finalize();
    return 0;
}
