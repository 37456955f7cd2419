#include "eval.h"
#include "comm.h"
#include "util.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eval_options_from_config(EvalOptions *o, const CarConfig *cfg) {
    o->max_history = cfg->data.max_history;
    o->batch_size = cfg->eval.batch_size;
    o->think_weight = cfg->eval.think_weight;
    o->think_levels = cfg->eval.think_levels ? cfg->eval.think_levels : cfg->sid.levels;
    o->filter_history = cfg->eval.filter_history;
}

/* The users of a slice that have a target in split, as packed histories. */
typedef struct {
    int n;
    int *len;
    int32_t *items, *target;
    int64_t *sample, *hist_off;
} Histories;

static void collect(const UserSlice *users, Split split, int max_history, int with_target, Histories *h) {
    int64_t nu = users->hi - users->lo, total = 0;
    memset(h, 0, sizeof *h);
    h->len = xmalloc(sizeof(int) * (size_t)(nu + 1));
    h->target = xmalloc(sizeof(int32_t) * (size_t)(nu + 1));
    h->sample = xmalloc(sizeof(int64_t) * (size_t)(nu + 1));
    h->hist_off = xmalloc(sizeof(int64_t) * (size_t)(nu + 2));
    h->items = xmalloc(sizeof(int32_t) * (size_t)(users->offsets[nu] + nu + 1));
    h->hist_off[0] = 0;
    for (int64_t u = 0; u < nu; u++) {
        const int32_t *seq = users->items + users->offsets[u], *hist;
        int64_t hl;
        int32_t target;
        if (!dataset_split(seq, users->offsets[u + 1] - users->offsets[u], split, max_history, &hist, &hl, &target))
            continue;
        memcpy(h->items + total, hist, sizeof(int32_t) * (size_t)hl);
        total += hl;
        if (with_target) h->items[total++] = target;
        h->len[h->n] = (int)(hl + with_target);
        h->target[h->n] = target;
        h->sample[h->n] = users->lo + u;
        h->hist_off[++h->n] = total;
    }
}

static void histories_free(Histories *h) {
    free(h->len); free(h->items); free(h->target); free(h->sample); free(h->hist_off);
}

/* Collective loop count: every rank runs as many batches as the rank with the most users,
 * so collectives inside (sharded heads) always match. */
static int batches_needed(int n, int batch) {
    double nb = (double)((n + batch - 1) / batch);
    comm_max_double(&nb, 1);
    return (int)nb;
}

/* Items of the owned range [lo, lo + nv) that a filtered history marks (set 1) or unmarks (0). */
static void mark_history(uint8_t *skip, const int32_t *hist, int n, int32_t target, int64_t lo, int64_t nv, int set) {
    for (int k = 0; k < n; k++)
        if (hist[k] != target && hist[k] >= lo && hist[k] < lo + nv) skip[hist[k] - lo] = (uint8_t)set;
}

/* eval_split, and on rank 0 user_rank[u] = the rank of global user u's target (NULL on every
 * rank: not kept; non-NULL on every rank: kept, only rank 0's is filled). */
static void rank_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, MetricSums *out,
                       int32_t *user_rank) {
    Histories h;
    collect(users, split, o->max_history, 0, &h);
    int d = m->spec.d_model, Bmax = o->batch_size, P = comm_size();
    int64_t lo = m->uid.lo, nv = m->uid.hi - m->uid.lo;
    /* every round gathers all ranks' encoded users; each rank scores them against its items */
    int64_t *rows_of = xmalloc(sizeof(int64_t) * (size_t)P), *items_of = xmalloc(sizeof(int64_t) * (size_t)P);
    float *H = xmalloc(sizeof(float) * (size_t)Bmax * (size_t)d);
    float *Hg = xmalloc(sizeof(float) * (size_t)P * Bmax * (size_t)d);
    int32_t *tg = xmalloc(sizeof(int32_t) * (size_t)P * Bmax), *lg = xmalloc(sizeof(int32_t) * (size_t)P * Bmax);
    int32_t *len32 = xmalloc(sizeof(int32_t) * (size_t)Bmax), *hg = NULL;
    int64_t *sg = user_rank ? xmalloc(sizeof(int64_t) * (size_t)P * Bmax) : NULL; /* global user of each row */
    int64_t *hoff = xmalloc(sizeof(int64_t) * ((size_t)P * Bmax + 1)), *above = xmalloc(sizeof(int64_t) * (size_t)Bmax);
    float *scores = xmalloc(sizeof(float) * (size_t)Bmax * (size_t)(nv ? nv : 1)), *ts = xmalloc(sizeof(float) * (size_t)Bmax);
    uint8_t *skip = o->filter_history ? xcalloc((size_t)(nv ? nv : 1), 1) : NULL;
    memset(out, 0, sizeof *out);
    int nb = batches_needed(h.n, Bmax);
    for (int bi = 0; bi < nb; bi++) {
        int first = bi * Bmax, B = h.n - first < Bmax ? h.n - first : Bmax;
        if (B < 0) B = 0;
        ModelBatch batch = {B, h.len + first, h.items + (B ? h.hist_off[first] : 0), h.sample + first};
        model_encode(m, &batch, H);
        comm_allgather_counts(B, rows_of);
        int64_t G = 0;
        for (int r = 0; r < P; r++) G += rows_of[r];
        comm_allgatherv_counted(H, rows_of, Hg, (int64_t)d * sizeof(float));
        comm_allgatherv_counted(h.target + first, rows_of, tg, sizeof(int32_t));
        if (sg) comm_allgatherv_counted(h.sample + first, rows_of, sg, sizeof(int64_t));
        if (skip) { /* the histories travel too: every item shard filters its own items */
            for (int b = 0; b < B; b++) len32[b] = h.len[first + b];
            comm_allgatherv_counted(len32, rows_of, lg, sizeof(int32_t));
            int64_t mine = B ? h.hist_off[first + B] - h.hist_off[first] : 0;
            comm_allgather_counts(mine, items_of);
            hoff[0] = 0;
            for (int64_t g = 0; g < G; g++) hoff[g + 1] = hoff[g] + lg[g];
            hg = xrealloc(hg, sizeof(int32_t) * (size_t)(hoff[G] + 1));
            comm_allgatherv_counted(h.items + (B ? h.hist_off[first] : 0), items_of, hg, sizeof(int32_t));
        }
        for (int64_t g0 = 0; g0 < G; g0 += Bmax) {
            int gb = G - g0 < Bmax ? (int)(G - g0) : Bmax;
            model_score_items(m, Hg + (size_t)g0 * d, gb, (float)o->think_weight, o->think_levels, scores);
            for (int b = 0; b < gb; b++) { /* the target's score, from the rank that owns the target */
                int32_t t = tg[g0 + b];
                ts[b] = t >= lo && t < lo + nv ? scores[(size_t)b * nv + (t - lo)] : 0.0f;
            }
            comm_sum_float(ts, gb); /* exact: one rank adds the score, the others zeros */
            for (int b = 0; b < gb; b++) {
                int32_t t = tg[g0 + b];
                const int32_t *hist = skip ? hg + hoff[g0 + b] : NULL;
                if (skip) mark_history(skip, hist, lg[g0 + b], t, lo, nv, 1);
                above[b] = metrics_count_above(scores + (size_t)b * nv, nv, ts[b], t >= lo && t < lo + nv ? t - lo : -1,
                                               skip);
                if (skip) mark_history(skip, hist, lg[g0 + b], t, lo, nv, 0);
            }
            comm_sum_i64(above, gb); /* the rank of each target among all items */
            if (comm_rank() == 0)
                for (int b = 0; b < gb; b++) {
                    metrics_add(out, above[b]);
                    if (sg) user_rank[sg[g0 + b]] = (int32_t)above[b];
                }
        }
    }
    metrics_reduce(out);
    free(rows_of); free(items_of); free(H); free(Hg); free(tg); free(lg); free(len32); free(hg); free(hoff);
    free(above); free(scores); free(ts); free(skip); free(sg);
    histories_free(&h);
}

void eval_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, MetricSums *out) {
    rank_split(m, users, split, o, out, NULL);
}

char *eval_ranks_path(const char *run_dir, Split split) {
    return xsprintf("%s/ranks_%s.bin", run_dir, split == SPLIT_VALID ? "valid" : split == SPLIT_TEST ? "test" : "train");
}

void eval_write_ranks(const char *run_dir, Split split, const int32_t *rank, int64_t n_users) {
    char *err = NULL;
    if (comm_rank() == 0) {
        char *path = eval_ranks_path(run_dir, split), *partial = xsprintf("%s.partial", path);
        FILE *f = fopen(partial, "wb");
        int ok = f && fwrite(rank, sizeof(int32_t), (size_t)n_users, f) == (size_t)n_users;
        if (f && fclose(f) != 0) ok = 0;
        if (!ok || rename(partial, path) != 0) {
            err = xsprintf("%s: cannot write: %s", path, strerror(errno));
            remove(partial);
        }
        free(path); free(partial);
    }
    comm_fail_if_any(err);
    free(err);
}

void eval_split_write_ranks(Model *m, const UserSlice *users, Split split, const EvalOptions *o, MetricSums *out,
                            const char *run_dir) {
    int64_t n_users = users->hi - users->lo;
    comm_sum_i64(&n_users, 1); /* the slices of all ranks cover the users */
    int32_t *rank = xmalloc(sizeof(int32_t) * (size_t)(n_users + 1)); /* on every rank: non-NULL makes all gather */
    for (int64_t u = 0; u < n_users; u++) rank[u] = -1; /* no target in this split */
    rank_split(m, users, split, o, out, rank);
    eval_write_ranks(run_dir, split, rank, n_users);
    free(rank);
}

double eval_loss(Model *m, const UserSlice *users, Split split, const EvalOptions *o) {
    Histories h;
    collect(users, split, o->max_history, 1, &h);
    double sums[2] = {0, 0};
    int nb = batches_needed(h.n, o->batch_size);
    for (int bi = 0; bi < nb; bi++) {
        int first = bi * o->batch_size, B = h.n - first < o->batch_size ? h.n - first : o->batch_size;
        if (B < 0) B = 0;
        ModelBatch batch = {B, h.len + first, h.items + (B ? h.hist_off[first] : 0), h.sample + first};
        ModelLoss l = model_forward_last(m, &batch);
        sums[0] += l.loss_sum;
        sums[1] += (double)l.n_loss;
    }
    comm_sum_double(sums, 2);
    histories_free(&h);
    return sums[1] > 0 ? sums[0] / sums[1] : 0.0;
}

void eval_popularity(const UserSlice *users, int64_t n_items, Split split, const EvalOptions *o, MetricSums *out) {
    float *count = xcalloc((size_t)n_items, sizeof(float));
    for (int64_t u = 0; u < users->hi - users->lo; u++) {
        int64_t n = users->offsets[u + 1] - users->offsets[u];
        for (int64_t k = 0; k < n - 2; k++) count[users->items[users->offsets[u] + k]] += 1.0f; /* train part */
    }
    comm_sum_float(count, (int)n_items); /* exact: integer counts far below 2^24 */
    Histories h;
    collect(users, split, o->max_history, 0, &h);
    memset(out, 0, sizeof *out);
    for (int i = 0; i < h.n; i++) metrics_add(out, metrics_count_above(count, n_items, count[h.target[i]], h.target[i], NULL));
    metrics_reduce(out);
    histories_free(&h);
    free(count);
}
