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
    o->score_floats = 0;
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

/* The encoder grows its activation buffers to fit each larger batch, and each new buffer is
 * touched afresh (page faults: a tenth of the evaluation time). Encoding the batch of the most
 * tokens once first sizes them for (nearly) all: it costs one batch in ~90 on Beauty and changes
 * no result. Collective (the sharded UID embedding communicates); its output is not used. */
static void presize_encoder(Model *m, const Histories *h, int Bmax, float *H) {
    int best = 0;
    int64_t most = -1;
    for (int first = 0; first < h->n; first += Bmax) {
        int64_t end = first + Bmax < h->n ? first + Bmax : h->n, tokens = h->hist_off[end] - h->hist_off[first];
        if (tokens > most) most = tokens, best = first;
    }
    int B = h->n - best < Bmax ? h->n - best : Bmax;
    ModelBatch batch = {B, h->len + best, h->items + h->hist_off[best], h->sample + best};
    model_encode(m, &batch, H);
}

/* Users per scoring block: as many as o->score_floats allows against the longest owned range (the
 * same on every rank: each block has collectives), at least 1; by default at least 8 too, since a
 * block's sgemm streams the item table once (at a million items per rank: 32 MiB of scores, an
 * eighth of the table's parameters). */
static int score_rows(const EvalOptions *o, int64_t n_items) {
    int given = o->score_floats > 0;
    int64_t most = (n_items + comm_size() - 1) / comm_size(), least = given ? 1 : 8;
    int64_t rows = (given ? o->score_floats : EVAL_SCORE_FLOATS) / most;
    rows = rows < least ? least : rows;
    return rows > (1 << 16) ? 1 << 16 : (int)rows;
}

int64_t eval_score_block_floats(const Model *m, const EvalOptions *o) {
    return (int64_t)score_rows(o, m->spec.n_items) * (m->uid.hi - m->uid.lo);
}

/* One round's users of every rank, gathered: each rank scores all of them against its items.
 * hist/hoff/hlen: their histories (only when history items are filtered). */
typedef struct {
    int64_t G;
    float *H;        /* (G, d) encoded users */
    int32_t *target; /* (G) */
    int64_t *user;   /* (G) global user index, when the ranks are kept */
    int32_t *hlen, *hist;
    int64_t *hoff;
} Gathered;

static void gather_round(const Histories *h, int first, int B, const float *H, int d, Gathered *g, int64_t *rows_of,
                         int64_t *items_of) {
    int P = comm_size();
    comm_allgather_counts(B, rows_of);
    g->G = 0;
    for (int r = 0; r < P; r++) g->G += rows_of[r];
    comm_allgatherv_counted(H, rows_of, g->H, (int64_t)d * sizeof(float));
    comm_allgatherv_counted(h->target + first, rows_of, g->target, sizeof(int32_t));
    if (g->user) comm_allgatherv_counted(h->sample + first, rows_of, g->user, sizeof(int64_t));
    if (!g->hlen) return;
    int32_t *len32 = xmalloc(sizeof(int32_t) * (size_t)(B + 1)); /* the histories travel too */
    for (int b = 0; b < B; b++) len32[b] = h->len[first + b];
    comm_allgatherv_counted(len32, rows_of, g->hlen, sizeof(int32_t));
    free(len32);
    int64_t mine = B ? h->hist_off[first + B] - h->hist_off[first] : 0;
    comm_allgather_counts(mine, items_of);
    g->hoff[0] = 0;
    for (int64_t i = 0; i < g->G; i++) g->hoff[i + 1] = g->hoff[i] + g->hlen[i];
    g->hist = xrealloc(g->hist, sizeof(int32_t) * (size_t)(g->hoff[g->G] + 1));
    comm_allgatherv_counted(h->items + (B ? h->hist_off[first] : 0), items_of, g->hist, sizeof(int32_t));
}

/* above[b] = the rank among all items of the target of gathered users [g0, g0 + gb) (collective:
 * the target's score comes from the rank that owns it, the counts of every item shard add up).
 * scores: (gb, nv) workspace; ts: gb floats; skip: NULL or nv flags. */
static void rank_block(const Model *m, const EvalOptions *o, const Gathered *g, int64_t g0, int gb, float *scores,
                       float *ts, uint8_t *skip, int64_t *above) {
    int64_t lo = m->uid.lo, nv = m->uid.hi - m->uid.lo;
    model_score_items(m, g->H + (size_t)g0 * m->spec.d_model, gb, (float)o->think_weight, o->think_levels, scores);
    for (int b = 0; b < gb; b++) { /* the target's score, from the rank that owns the target */
        int32_t t = g->target[g0 + b];
        ts[b] = t >= lo && t < lo + nv ? scores[(size_t)b * nv + (t - lo)] : 0.0f;
    }
    comm_sum_float(ts, gb); /* exact: one rank adds the score, the others zeros */
    for (int b = 0; b < gb; b++) {
        int32_t t = g->target[g0 + b];
        const int32_t *hist = skip ? g->hist + g->hoff[g0 + b] : NULL;
        if (skip) mark_history(skip, hist, g->hlen[g0 + b], t, lo, nv, 1);
        above[b] = metrics_count_above(scores + (size_t)b * nv, nv, ts[b], t >= lo && t < lo + nv ? t - lo : -1, skip);
        if (skip) mark_history(skip, hist, g->hlen[g0 + b], t, lo, nv, 0);
    }
    comm_sum_i64(above, gb); /* the rank of each target among all items */
}

/* eval_split, and on rank 0 user_rank[u] = the rank of global user u's target (NULL on every
 * rank: not kept; non-NULL on every rank: kept, only rank 0's is filled). */
static void rank_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, MetricSums *out,
                       int32_t *user_rank) {
    Histories h;
    collect(users, split, o->max_history, 0, &h);
    int d = m->spec.d_model, Bmax = o->batch_size, P = comm_size(), R = score_rows(o, m->spec.n_items);
    int64_t nv = m->uid.hi - m->uid.lo, GM = (int64_t)P * Bmax;
    int64_t *rows_of = xmalloc(sizeof(int64_t) * (size_t)P), *items_of = xmalloc(sizeof(int64_t) * (size_t)P);
    Gathered g = {0, xmalloc(sizeof(float) * (size_t)GM * d), xmalloc(sizeof(int32_t) * (size_t)GM),
                  user_rank ? xmalloc(sizeof(int64_t) * (size_t)GM) : NULL, NULL, NULL, NULL};
    if (o->filter_history) {
        g.hlen = xmalloc(sizeof(int32_t) * (size_t)GM);
        g.hoff = xmalloc(sizeof(int64_t) * (size_t)(GM + 1));
    }
    float *H = xmalloc(sizeof(float) * (size_t)Bmax * d), *ts = xmalloc(sizeof(float) * (size_t)R);
    float *scores = xmalloc(sizeof(float) * (size_t)R * (size_t)(nv ? nv : 1));
    int64_t *above = xmalloc(sizeof(int64_t) * (size_t)R);
    uint8_t *skip = o->filter_history ? xcalloc((size_t)(nv ? nv : 1), 1) : NULL;
    memset(out, 0, sizeof *out);
    int nb = batches_needed(h.n, Bmax);
    if (nb > 1) presize_encoder(m, &h, Bmax, H);
    for (int bi = 0; bi < nb; bi++) {
        int first = bi * Bmax, B = h.n - first < Bmax ? h.n - first : Bmax;
        if (B < 0) B = 0;
        ModelBatch batch = {B, h.len + first, h.items + (B ? h.hist_off[first] : 0), h.sample + first};
        model_encode(m, &batch, H);
        gather_round(&h, first, B, H, d, &g, rows_of, items_of);
        for (int64_t g0 = 0; g0 < g.G; g0 += R) {
            int gb = g.G - g0 < R ? (int)(g.G - g0) : R;
            rank_block(m, o, &g, g0, gb, scores, ts, skip, above);
            if (comm_rank() == 0)
                for (int b = 0; b < gb; b++) {
                    metrics_add(out, above[b]);
                    if (user_rank) user_rank[g.user[g0 + b]] = (int32_t)above[b];
                }
        }
    }
    metrics_reduce(out);
    free(rows_of); free(items_of); free(H); free(ts); free(scores); free(above); free(skip);
    free(g.H); free(g.target); free(g.user); free(g.hlen); free(g.hist); free(g.hoff);
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
