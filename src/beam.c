/* beam: constrained AR beam search over the SID trie and the CAR one-pass top-K, both ending in
 * the same sharded item scoring and merge. */
#include "beam.h"
#include "comm.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void recommender_init(Recommender *r, Model *m, const Trie *trie, const RecOptions *o) {
    memset(r, 0, sizeof *r);
    r->m = m;
    r->trie = trie;
    r->o = *o;
    if (o->K < 1 || (m->spec.mode == MODE_AR && o->beam < 1))
        comm_fail("recommend: list length %d and beam %d must be at least 1", o->K, o->beam);
    if (trie->L != m->spec.levels || trie->V != m->spec.n_items)
        comm_fail("recommend: the trie (%lld items, %d levels) is not the model's (%lld, %d)", (long long)trie->V,
                  trie->L, (long long)m->spec.n_items, m->spec.levels);
    decoder_init(&r->dec, m, o->use_cache);
}

void recommender_free(Recommender *r) {
    decoder_free(&r->dec);
    free(r->scores);
}

void rec_lists_free(RecLists *l) {
    free(l->n); free(l->items); free(l->scores); free(l->code_prob); free(l->code_rank);
    memset(l, 0, sizeof *l);
}

static void rec_lists_alloc(RecLists *l, int B, int K, int L) {
    rec_lists_free(l);
    size_t n = (size_t)B * K + 1;
    l->B = B; l->K = K; l->L = L;
    l->n = xcalloc((size_t)B + 1, sizeof(int));
    l->items = xcalloc(n, sizeof(int32_t));
    l->scores = xcalloc(n, sizeof(float));
    l->code_prob = xcalloc(n * (size_t)(L ? L : 1), sizeof(float));
    l->code_rank = xcalloc(n * (size_t)(L ? L : 1), sizeof(int));
}

/* ---------------------------------------------------------------- bounded best-first lists */

/* A candidate: an item (or a trie node while searching), its score, whose it is. */
typedef struct { float score; int32_t item, user, beam; } Cand;

/* a ranks before b: higher score, then smaller id; NaN ranks last */
static int better(const Cand *a, const Cand *b) {
    float x = isnan(a->score) ? -INFINITY : a->score, y = isnan(b->score) ? -INFINITY : b->score;
    return x != y ? x > y : a->item < b->item;
}

/* Inserts c into the best-first list top[0..n) of at most cap; returns the new length. */
static int top_insert(Cand *top, int n, int cap, Cand c) {
    if (n == cap && !better(&c, &top[n - 1])) return n;
    int i = n < cap ? n++ : n - 1;
    for (; i > 0 && better(&c, &top[i - 1]); i--) top[i] = top[i - 1];
    top[i] = c;
    return n;
}

/* ---------------------------------------------------------------- ar: the SID levels */

/* The live beams, grouped by user: user, trie node (depth = levels decoded), summed log-prob,
 * the think head's probability and rank of each decoded code, final hidden state (R,d). */
typedef struct { int R; int *user; int64_t *node; float *score, *prob, *H; int *rank; } Beams;

static void beams_alloc(Beams *b, int R, int L, int d) {
    size_t n = (size_t)R + 1, nl = n * (size_t)(L ? L : 1);
    b->R = R;
    b->user = xcalloc(n, sizeof(int));
    b->node = xcalloc(n, sizeof(int64_t));
    b->score = xcalloc(n, sizeof(float));
    b->prob = xcalloc(nl, sizeof(float));
    b->rank = xcalloc(nl, sizeof(int));
    b->H = xcalloc(n * (size_t)d, sizeof(float));
}

static void beams_free(Beams *b) {
    free(b->user); free(b->node); free(b->score); free(b->prob); free(b->rank); free(b->H);
    memset(b, 0, sizeof *b);
}

/* log-sum-exp of x over codes (or all K when codes is NULL) */
static float logsumexp(const float *x, const int32_t *codes, int64_t n) {
    float mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) mx = fmaxf(mx, x[codes ? codes[i] : i]);
    for (int64_t i = 0; i < n; i++) sum += expf(x[codes ? codes[i] : i] - mx);
    return mx + logf(sum);
}

/* 1 + codes of x (K) with a higher logit than code c */
static int code_rank(const float *x, int K, int c) {
    int r = 1;
    for (int k = 0; k < K; k++) r += x[k] > x[c];
    return r;
}

/* Level l: each beam's children scored by the think head's softmax over the children, each
 * user's W best kept (ties: tuple order), their codes appended by one decode step. */
static void expand_level(Recommender *rc, int l, int B, Beams *cur, Beams *next) {
    Model *m = rc->m;
    const Trie *t = rc->trie;
    int d = m->spec.d_model, L = m->spec.levels, K = m->spec.codebook[l], W = rc->o.beam;
    float *lg = xmalloc(sizeof(float) * ((size_t)cur->R * K + 1));
    model_think_logits(m, cur->H, cur->R, l, lg);
    Cand *top = xmalloc(sizeof(Cand) * ((size_t)B * W + 1));
    int *nt = xcalloc((size_t)B + 1, sizeof(int));
    int32_t *codes = xmalloc(sizeof(int32_t) * ((size_t)K + 1));
    for (int r = 0; r < cur->R; r++) {
        const float *x = lg + (size_t)r * K;
        int64_t first, nc = trie_children(t, l, cur->node[r], &first);
        for (int64_t c = 0; c < nc; c++) codes[c] = trie_code(t, l + 1, first + c);
        float lse = logsumexp(x, codes, nc);
        int u = cur->user[r];
        for (int64_t c = 0; c < nc; c++) {
            Cand cd = {cur->score[r] + x[codes[c]] - lse, (int32_t)(first + c), u, r};
            nt[u] = top_insert(top + (size_t)u * W, nt[u], W, cd);
        }
    }
    int R = 0;
    for (int u = 0; u < B; u++) R += nt[u];
    beams_alloc(next, R, L, d);
    int *parent = xmalloc(sizeof(int) * ((size_t)R + 1));
    int32_t *code = xmalloc(sizeof(int32_t) * ((size_t)R + 1));
    for (int u = 0, r = 0; u < B; u++)
        for (int i = 0; i < nt[u]; i++, r++) {
            const Cand *c = &top[(size_t)u * W + i];
            const float *x = lg + (size_t)c->beam * K;
            next->user[r] = u;
            next->node[r] = c->item;
            next->score[r] = c->score;
            parent[r] = c->beam;
            code[r] = trie_code(t, l + 1, c->item);
            memcpy(next->prob + (size_t)r * L, cur->prob + (size_t)c->beam * L, sizeof(float) * (size_t)l);
            memcpy(next->rank + (size_t)r * L, cur->rank + (size_t)c->beam * L, sizeof(int) * (size_t)l);
            next->prob[(size_t)r * L + l] = expf(x[code[r]] - logsumexp(x, NULL, K));
            next->rank[(size_t)r * L + l] = code_rank(x, K, code[r]);
        }
    decoder_step(&rc->dec, R, parent, code, next->H);
    free(lg); free(top); free(nt); free(codes); free(parent); free(code);
}

/* ---------------------------------------------------------------- scoring the items, sharded */

/* A beam (ar) or user (car) as every rank sees it. */
typedef struct { int32_t rank, user, beam, want; int64_t node; float score, pad; } RowMeta;

/* h . w over d in a fixed order (8 lanes, then the lanes summed): the same bits whatever the
 * shape of the surrounding work, unlike an sgemm whose kernels follow the matrix sizes; the
 * lanes let the compiler vectorise it */
static float dot(const float *h, const float *w, int d) {
    float acc[8] = {0};
    int c = 0;
    for (; c + 8 <= d; c += 8)
        for (int j = 0; j < 8; j++) acc[j] += h[c + j] * w[c + j];
    for (int j = 0; c < d; c++, j++) acc[j] += h[c] * w[c];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* car: S (N, owned items) = UID logit + beta * sum over the first think_levels levels of the
 * think head's log-prob of the item's code (model_score_items' ranking score, with the fixed-order
 * dot so that a row's scores do not depend on how many rows and items this rank holds) */
static void car_scores(const Recommender *rc, const float *H, int N, float *S) {
    const Model *m = rc->m;
    const UidHead *u = &m->uid;
    int d = m->spec.d_model, L = m->spec.levels, TL = rc->o.think_levels > 0 && rc->o.think_levels < L ? rc->o.think_levels : L;
    int64_t nv = u->hi - u->lo;
    for (int n = 0; n < N; n++)
        for (int64_t i = 0; i < nv; i++) S[(size_t)n * nv + i] = dot(H + (size_t)n * d, uid_head_w(u) + (size_t)i * d, d);
    for (int l = 0; rc->o.think_weight > 0 && l < TL; l++) {
        int K = m->spec.codebook[l];
        float *lg = xmalloc(sizeof(float) * ((size_t)N * K + 1));
        model_think_logits(m, H, N, l, lg);
        for (int n = 0; n < N; n++) {
            const float *x = lg + (size_t)n * K;
            float lse = logsumexp(x, NULL, K), *sc = S + (size_t)n * nv;
            for (int64_t i = 0; i < nv; i++) sc[i] += rc->o.think_weight * (x[m->codes[(u->lo + i) * L + l]] - lse);
        }
        free(lg);
    }
}

/* first index of the ascending ids[0..n) that is >= x */
static int64_t lower_bound(const int32_t *ids, int64_t n, int64_t x) {
    int64_t a = 0, b = n;
    while (a < b) {
        int64_t mid = (a + b) / 2;
        if (ids[mid] < x) a = mid + 1;
        else b = mid;
    }
    return a;
}

/* ar: this rank's items under a gathered row's leaf (*items, returns their count) */
static int64_t owned_leaf_items(const Recommender *rc, const RowMeta *row, const int32_t **items) {
    int64_t n;
    const int32_t *it = trie_items(rc->trie, rc->m->spec.levels, row->node, &n); /* ascending ids */
    int64_t a = lower_bound(it, n, rc->m->uid.lo), b = lower_bound(it, n, rc->m->uid.hi);
    *items = it + a;
    return b - a;
}

/* x in [0, 1] in units of 2^-32, truncated: integer sums do not depend on their order, so the
 * normaliser is the same bit for bit however the items are split over ranks (and V < 2^31 items
 * cannot overflow it) */
static int64_t fixed_point(float x) { return (int64_t)ldexp((double)x, 32); }

/* ar: S (rows of items) = joint log-prob of each owned item under each gathered row's leaf:
 * beam score + UID logit - log-sum-exp of the logits of all the leaf's items (all ranks) */
static float **score_leaves(const Recommender *rc, const RowMeta *meta, const float *Hg, int64_t G) {
    const UidHead *u = &rc->m->uid;
    int d = rc->m->spec.d_model;
    float **S = xcalloc((size_t)G + 1, sizeof(float *));
    float *mx = xmalloc(sizeof(float) * ((size_t)G + 1));
    int64_t *sum = xcalloc((size_t)G + 1, sizeof(int64_t));
    for (int64_t g = 0; g < G; g++) {
        const int32_t *it;
        int64_t n = owned_leaf_items(rc, &meta[g], &it);
        S[g] = xmalloc(sizeof(float) * ((size_t)n + 1));
        mx[g] = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            S[g][i] = dot(Hg + (size_t)g * d, uid_head_w(u) + (size_t)(it[i] - u->lo) * d, d);
            mx[g] = fmaxf(mx[g], S[g][i]);
        }
    }
    if (u->sharded) comm_max_float(mx, (int)G);
    for (int64_t g = 0; g < G; g++) {
        const int32_t *it;
        int64_t n = owned_leaf_items(rc, &meta[g], &it);
        for (int64_t i = 0; i < n; i++) sum[g] += fixed_point(expf(S[g][i] - mx[g]));
    }
    if (u->sharded) comm_sum_i64(sum, (int)G);
    for (int64_t g = 0; g < G; g++) {
        const int32_t *it;
        int64_t n = owned_leaf_items(rc, &meta[g], &it);
        float base = meta[g].score - mx[g] - (float)log(ldexp((double)sum[g], -32));
        for (int64_t i = 0; i < n; i++) S[g][i] += base;
    }
    free(mx);
    free(sum);
    return S;
}

/* ---------------------------------------------------------------- the merge */

static int excluded(const int32_t *ex, int64_t n, int32_t item) {
    for (int64_t i = 0; i < n; i++)
        if (ex[i] == item) return 1;
    return 0;
}

/* Candidates of one user's gathered rows [g0, g1) owned here, its best meta[g0].want into *top */
static int user_top(const Recommender *rc, const RowMeta *meta, int64_t g0, int64_t g1, float **S, const float *Sc,
                    Cand *top) {
    int n = 0, want = meta[g0].want;
    int64_t nv = rc->m->uid.hi - rc->m->uid.lo;
    for (int64_t g = g0; g < g1; g++) {
        const int32_t *it = NULL;
        int64_t ni = S ? owned_leaf_items(rc, &meta[g], &it) : nv;
        const float *sc = S ? S[g] : Sc + (size_t)g * nv;
        for (int64_t i = 0; i < ni; i++) {
            Cand c = {sc[i], it ? it[i] : (int32_t)(rc->m->uid.lo + i), meta[g].user, meta[g].beam};
            n = top_insert(top, n, want, c);
        }
    }
    return n;
}

/* Collective. Scores this rank's items for the rows of every rank and sends each user's best
 * (K plus its exclusions) to the user's rank; returns what arrived here (*n_recv of them). */
static Cand *score_and_route(Recommender *rc, const RowMeta *mine, const float *H, int R, int64_t *n_recv) {
    int P = comm_size(), d = rc->m->spec.d_model, is_ar = rc->m->spec.mode == MODE_AR;
    int solo = !rc->m->uid.sharded; /* this rank holds every item: nothing travels */
    if (solo) P = 1;
    int64_t *rows_of = xmalloc(sizeof(int64_t) * (size_t)P), *sent = xcalloc((size_t)P, sizeof(int64_t)),
            *recv = xmalloc(sizeof(int64_t) * (size_t)P), G = 0;
    if (solo) rows_of[0] = R;
    else comm_allgather_counts(R, rows_of);
    for (int p = 0; p < P; p++) G += rows_of[p];
    RowMeta *meta = xmalloc(sizeof(RowMeta) * ((size_t)G + 1));
    float *Hg = xmalloc(sizeof(float) * ((size_t)G * d + 1)), *Sc = NULL, **S = NULL;
    if (solo) {
        memcpy(meta, mine, sizeof(RowMeta) * (size_t)G);
        memcpy(Hg, H, sizeof(float) * (size_t)G * d);
    } else {
        comm_allgatherv_counted(mine, rows_of, meta, sizeof(RowMeta));
        comm_allgatherv_counted(H, rows_of, Hg, (int64_t)d * sizeof(float));
    }
    int64_t nv = rc->m->uid.hi - rc->m->uid.lo, cap = 0, ns = 0;
    if (is_ar) {
        S = score_leaves(rc, meta, Hg, G);
    } else {
        Sc = xgrow(&rc->scores, &rc->scores_cap, (size_t)G * nv + 1, sizeof(float));
        for (int p = 0, g = 0; p < P; g += (int)rows_of[p++]) /* per rank's block: products of the same shape for any P */
            car_scores(rc, Hg + (size_t)g * d, (int)rows_of[p], Sc + (size_t)g * nv);
    }
    for (int64_t g = 0; g < G; g++) cap += meta[g].want;
    Cand *send = xmalloc(sizeof(Cand) * ((size_t)cap + 1));
    for (int64_t g0 = 0, g1; g0 < G; g0 = g1) { /* rows are grouped by rank, then user */
        for (g1 = g0 + 1; g1 < G && meta[g1].rank == meta[g0].rank && meta[g1].user == meta[g0].user; g1++) {}
        int n = user_top(rc, meta, g0, g1, S, Sc, send + ns);
        ns += n;
        sent[solo ? 0 : meta[g0].rank] += n;
    }
    if (solo) recv[0] = sent[0];
    else comm_alltoall_counts(sent, recv);
    *n_recv = 0;
    for (int p = 0; p < P; p++) *n_recv += recv[p];
    Cand *got = xmalloc(sizeof(Cand) * ((size_t)*n_recv + 1));
    if (solo) memcpy(got, send, sizeof(Cand) * (size_t)ns);
    else comm_alltoallv(send, sent, got, recv, sizeof(Cand));
    for (int64_t g = 0; S && g < G; g++) free(S[g]);
    free(S); free(send); free(meta); free(Hg); free(rows_of); free(sent); free(recv);
    return got;
}

/* car reasons: each listed item's code probability and rank from the user's hidden state */
static void car_reasons(const Recommender *rc, const float *H, RecLists *out) {
    int L = rc->m->spec.levels;
    for (int l = 0; l < L; l++) {
        int K = rc->m->spec.codebook[l];
        float *lg = xmalloc(sizeof(float) * ((size_t)out->B * K + 1));
        model_think_logits(rc->m, H, out->B, l, lg);
        for (int b = 0; b < out->B; b++) {
            const float *x = lg + (size_t)b * K;
            float lse = logsumexp(x, NULL, K);
            for (int i = 0; i < out->n[b]; i++) {
                size_t at = ((size_t)b * out->K + i) * L + l;
                int c = rc->m->codes[(size_t)out->items[(size_t)b * out->K + i] * L + l];
                out->code_prob[at] = expf(x[c] - lse);
                out->code_rank[at] = code_rank(x, K, c);
            }
        }
        free(lg);
    }
}

/* Collective. The final rows (ar: beams, car: users) scored, merged into out. */
static void finish_lists(Recommender *rc, int B, const Beams *fin, const int64_t *excl_off, const int32_t *excl,
                         RecLists *out) {
    int K = rc->o.K, L = rc->m->spec.levels;
    RowMeta *mine = xcalloc((size_t)fin->R + 1, sizeof(RowMeta));
    for (int r = 0; r < fin->R; r++) {
        int u = fin->user[r];
        mine[r] = (RowMeta){comm_rank(), u, r, K + (int)(excl_off ? excl_off[u + 1] - excl_off[u] : 0), fin->node[r],
                            fin->score[r], 0};
    }
    int64_t n;
    Cand *got = score_and_route(rc, mine, fin->H, fin->R, &n);
    rec_lists_alloc(out, B, K, L);
    Cand *top = xmalloc(sizeof(Cand) * ((size_t)B * K + 1));
    for (int64_t i = 0; i < n; i++) {
        int u = got[i].user;
        if (excl_off && excluded(excl + excl_off[u], excl_off[u + 1] - excl_off[u], got[i].item)) continue;
        out->n[u] = top_insert(top + (size_t)u * K, out->n[u], K, got[i]);
    }
    for (int u = 0; u < B; u++)
        for (int i = 0; i < out->n[u]; i++) {
            const Cand *c = &top[(size_t)u * K + i];
            size_t at = (size_t)u * K + i;
            out->items[at] = c->item;
            out->scores[at] = c->score;
            if (rc->m->spec.mode != MODE_AR) continue;
            memcpy(out->code_prob + at * L, fin->prob + (size_t)c->beam * L, sizeof(float) * (size_t)L);
            memcpy(out->code_rank + at * L, fin->rank + (size_t)c->beam * L, sizeof(int) * (size_t)L);
        }
    if (rc->m->spec.mode != MODE_AR) car_reasons(rc, fin->H, out);
    free(mine); free(got); free(top);
}

void recommend_batch(Recommender *rc, const ModelBatch *b, const int64_t *excl_off, const int32_t *excl, RecLists *out) {
    Model *m = rc->m;
    int L = m->spec.levels, d = m->spec.d_model;
    Beams cur = {0}, next;
    beams_alloc(&cur, b->B, L, d);
    for (int u = 0; u < b->B; u++) cur.user[u] = u; /* one beam per user at the root, score 0 */
    if (m->spec.mode == MODE_AR) decoder_prefill(&rc->dec, b, cur.H);
    else model_encode(m, b, cur.H);
    for (int l = 0; m->spec.mode == MODE_AR && l < L; l++) {
        expand_level(rc, l, b->B, &cur, &next);
        beams_free(&cur);
        cur = next;
    }
    finish_lists(rc, b->B, &cur, excl_off, excl, out);
    beams_free(&cur);
}
