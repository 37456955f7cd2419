#include "collab.h"
#include "comm.h"
#include "log.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void collab_defaults(CollabOptions *o) {
    o->dim = 0;
    o->window = 3;
    o->shift = 1.0;
    text_encoder_defaults(&o->svd);
    o->svd.seed = 2;
}

typedef struct { int64_t row; int32_t col; } Pair;

static int cmp_pair(const void *a, const void *b) {
    const Pair *x = a, *y = b;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return (x->col > y->col) - (x->col < y->col);
}

/* One pass over every ordered pair (i, j) of training positions at most window apart: ci[i]
 * counts them all; the pairs whose i is in [lo, hi) are returned (row i - lo, col j). */
static Pair *training_pairs(const Sequences *seq, int window, int64_t lo, int64_t hi, double *ci, int64_t *n_pairs) {
    size_t cap = 1024;
    Pair *p = xmalloc(sizeof(Pair) * cap);
    int64_t k = 0;
    for (int64_t u = 0; u < seq->n_users; u++) {
        const int32_t *s = seq->items + seq->offsets[u];
        int64_t n = collab_train_len(seq->offsets[u + 1] - seq->offsets[u]);
        for (int64_t a = 0; a < n; a++)
            for (int64_t b = a > window ? a - window : 0; b <= a + window && b < n; b++) {
                if (b == a || s[a] == s[b]) continue;
                ci[s[a]] += 1;
                if (s[a] < lo || s[a] >= hi) continue;
                if ((size_t)k == cap) p = xrealloc(p, sizeof(Pair) * (cap *= 2));
                p[k++] = (Pair){s[a] - lo, s[b]};
            }
    }
    *n_pairs = k;
    return p;
}

void collab_ppmi(const Sequences *seq, int64_t n_items, int64_t lo, int64_t hi, const CollabOptions *o, TextTfidf *m) {
    double *ci = xcalloc((size_t)n_items, sizeof(double)), total = 0;
    int64_t n_pairs;
    Pair *p = training_pairs(seq, o->window, lo, hi, ci, &n_pairs);
    for (int64_t i = 0; i < n_items; i++) total += ci[i];
    qsort(p, (size_t)n_pairs, sizeof *p, cmp_pair);
    memset(m, 0, sizeof *m);
    m->n_rows = hi - lo;
    m->n_terms = m->n_buckets = n_items;
    m->row_lo = lo;
    m->row_ptr = xcalloc((size_t)(m->n_rows + 1), sizeof(int64_t));
    m->cols = xmalloc(sizeof(int32_t) * (size_t)(n_pairs + 1));
    m->vals = xmalloc(sizeof(double) * (size_t)(n_pairs + 1));
    int64_t nnz = 0;
    double log_shift = log(o->shift);
    for (int64_t a = 0; a < n_pairs;) {
        int64_t b = a;
        while (b < n_pairs && p[b].row == p[a].row && p[b].col == p[a].col) b++;
        int64_t i = p[a].row + lo;
        int32_t j = p[a].col;
        double pmi = log((double)(b - a) * total / (ci[i] * ci[j])) - log_shift;
        if (pmi > 0) {
            m->cols[nnz] = j;
            m->vals[nnz++] = pmi;
            m->row_ptr[p[a].row + 1]++;
        }
        a = b;
    }
    for (int64_t r = 0; r < m->n_rows; r++) { /* counts to offsets, then unit rows */
        m->row_ptr[r + 1] += m->row_ptr[r];
        double n2 = 0;
        for (int64_t q = m->row_ptr[r]; q < m->row_ptr[r + 1]; q++) n2 += m->vals[q] * m->vals[q];
        for (int64_t q = m->row_ptr[r]; q < m->row_ptr[r + 1]; q++) m->vals[q] /= sqrt(n2);
    }
    m->nnz_global = nnz;
    comm_sum_i64(&m->nnz_global, 1);
    free(p);
    free(ci);
}

void collab_embed(const Sequences *seq, int64_t n_items, int64_t lo, int64_t hi, const CollabOptions *o, float *out,
                  TextEncoderReport *rep) {
    double t0 = comm_wtime();
    TextTfidf m;
    collab_ppmi(seq, n_items, lo, hi, o, &m);
    TextEncoderOptions svd = o->svd;
    svd.dim = o->dim;
    TextEncoderReport local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    text_lsa(&m, &svd, out, rep);
    rep->n_terms = rep->n_buckets = n_items;
    rep->nnz = m.nnz_global;
    text_tfidf_free(&m);
    double dt = comm_wtime() - t0;
    comm_max_double(&dt, 1);
    rep->seconds = dt;
    log_info("collab: %d-dim embeddings from training co-occurrence (window %d, PMI shift %g): %lld non-zeros, %lld "
             "items without a training neighbour, explained variance %.4f (%.2fs)",
             o->dim, o->window, o->shift, (long long)rep->nnz, (long long)rep->n_empty, rep->explained_variance, dt);
}

void collab_concat(const float *x, int da, const float *y, int db, int64_t n, double w, float *out) {
    float fa = (float)sqrt(1.0 - w), fb = (float)sqrt(w);
    for (int64_t i = 0; i < n; i++) {
        float *o = out + i * (da + db);
        for (int k = 0; k < da; k++) o[k] = fa * x[i * da + k];
        for (int k = 0; k < db; k++) o[da + k] = fb * y[i * db + k];
    }
}
