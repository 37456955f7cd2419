#include "eval.h"
#include "comm.h"
#include "util.h"
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

void eval_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, MetricSums *out) {
    Histories h;
    collect(users, split, o->max_history, 0, &h);
    int d = m->spec.d_model, Bmax = o->batch_size;
    int64_t lo = m->uid.lo, nv = m->uid.hi - m->uid.lo;
    float *H = xmalloc(sizeof(float) * (size_t)Bmax * (size_t)d);
    float *scores = xmalloc(sizeof(float) * (size_t)Bmax * (size_t)nv);
    uint8_t *skip = o->filter_history ? xcalloc((size_t)nv, 1) : NULL;
    memset(out, 0, sizeof *out);
    int nb = batches_needed(h.n, Bmax);
    for (int bi = 0; bi < nb; bi++) {
        int first = bi * Bmax, B = h.n - first < Bmax ? h.n - first : Bmax;
        if (B < 0) B = 0;
        ModelBatch batch = {B, h.len + first, h.items + (B ? h.hist_off[first] : 0), h.sample + first};
        model_encode(m, &batch, H);
        model_score_items(m, H, B, (float)o->think_weight, o->think_levels, scores);
        for (int b = 0; b < B; b++) {
            const float *s = scores + (int64_t)b * nv;
            int32_t t = h.target[first + b];
            int64_t ti = t >= lo && t < lo + nv ? t - lo : -1;
            const int32_t *hist = h.items + h.hist_off[first + b];
            if (skip)
                for (int k = 0; k < h.len[first + b]; k++)
                    if (hist[k] != t && hist[k] >= lo && hist[k] < lo + nv) skip[hist[k] - lo] = 1;
            /* sharded: the target's score comes from its owner (here every item is local) */
            metrics_add(out, metrics_count_above(s, nv, s[ti], ti, skip));
            if (skip)
                for (int k = 0; k < h.len[first + b]; k++)
                    if (hist[k] >= lo && hist[k] < lo + nv) skip[hist[k] - lo] = 0;
        }
    }
    metrics_reduce(out);
    free(H); free(scores); free(skip);
    histories_free(&h);
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
        ModelLoss l = model_forward(m, &batch, 0, 0, 0.0f);
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
