/* uidhead: UID embedding and UID softmax head over the owned item range. */
#include "uidhead.h"
#include "comm.h"
#include "layers.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void uid_init(UidHead *u, int64_t n_items, int64_t lo, int64_t hi, int d, int tied, uint64_t seed) {
    memset(u, 0, sizeof *u);
    u->n_items = n_items;
    u->lo = lo;
    u->hi = hi;
    u->d = d;
    u->tied = tied;
    u->emb = arena_add_rows(&u->arena, "uid_emb", hi - lo, d, PARAM_EMBEDDING, lo, n_items);
    u->head = tied ? u->emb : arena_add_rows(&u->arena, "uid_head", hi - lo, d, PARAM_MATRIX, lo, n_items);
    arena_alloc(&u->arena);
    for (int i = 0; i < u->arena.n; i++) arena_init_normal(&u->arena, i, 0.02, seed);
    u->block = 256;
}

void uid_free(UidHead *u) {
    arena_free(&u->arena);
    free(u->work);
    free(u->mx);
    free(u->sum);
    free(u->tlogit);
    memset(u, 0, sizeof *u);
}

void uid_zero_grad(UidHead *u) { arena_zero_grad(&u->arena); }

double uid_grad_sqnorm(const UidHead *u) { return arena_grad_sqnorm(&u->arena); }

static void check_ids(const UidHead *u, const int32_t *ids, int N) {
    for (int n = 0; n < N; n++)
        if (ids[n] < u->lo || ids[n] >= u->hi)
            comm_fatal("uidhead: item %d outside the owned range [%lld, %lld)", (int)ids[n], (long long)u->lo,
                       (long long)u->hi);
}

void uid_embed_forward(UidHead *u, const int32_t *ids, int N, float *out) {
    check_ids(u, ids, N);
    const float *table = uid_emb(u) - (size_t)u->lo * u->d;
    embedding_forward(out, NULL, ids, N, table, u->d);
}

void uid_embed_backward(UidHead *u, const int32_t *ids, int N, const float *dout) {
    float *dtable = arena_grad(&u->arena, u->emb) - (size_t)u->lo * u->d;
    embedding_backward(dtable, NULL, ids, N, dout, u->d);
}

void uid_head_scores(const UidHead *u, const float *H, int N, float *scores) {
    int V = (int)(u->hi - u->lo);
    if (N == 0 || V == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, V, u->d, 1.0f, H, u->d, uid_head_w(u), u->d, 0.0f, scores,
                V);
}

double uid_head_forward_backward(UidHead *u, const float *H, const int32_t *targets, int N, float dscale, float *dH) {
    int V = (int)(u->hi - u->lo), d = u->d, bs = u->block;
    if (!u->work) {
        u->work = xmalloc((size_t)bs * (V ? V : 1) * sizeof(float));
        u->mx = xmalloc((size_t)bs * sizeof(float));
        u->sum = xmalloc((size_t)bs * sizeof(float));
        u->tlogit = xmalloc((size_t)bs * sizeof(float));
    }
    const float *W = uid_head_w(u);
    float *dW = arena_grad(&u->arena, u->head);
    int32_t local[bs]; /* target index within the owned range, -1 when owned elsewhere */
    double loss = 0;
    for (int r0 = 0; r0 < N; r0 += bs) {
        int nb = N - r0 < bs ? N - r0 : bs;
        const float *Hb = H + (size_t)r0 * d;
        float *x = u->work;
        uid_head_scores(u, Hb, nb, x);
        for (int n = 0; n < nb; n++) {
            int32_t t = targets[r0 + n];
            if (t < 0 || t >= u->n_items) comm_fatal("uidhead: target item %d outside [0, %lld)", (int)t,
                                                     (long long)u->n_items);
            local[n] = t >= u->lo && t < u->hi ? (int32_t)(t - u->lo) : -1;
            u->mx[n] = -INFINITY;
            u->sum[n] = 0;
            u->tlogit[n] = local[n] >= 0 ? x[(size_t)n * V + local[n]] : 0.0f;
        }
        softmax_rows_max(x, nb, V, V, u->mx); /* sharded: all-reduce MAX of mx, SUM of tlogit */
        softmax_rows_exp(x, nb, V, V, u->mx, u->sum); /* sharded: all-reduce SUM of sum */
        for (int n = 0; n < nb; n++) loss += log(u->sum[n]) + u->mx[n] - u->tlogit[n];
        if (dscale == 0) continue;
        softmax_rows_grad(x, nb, V, V, u->sum, local, dscale);
        /* dW (V,d) += dlogits^T Hb; dHb (nb,d) += dlogits W. sharded: dH is a partial sum over ranks */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, d, nb, 1.0f, x, V, Hb, d, 1.0f, dW, d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, d, V, 1.0f, x, V, W, d, 1.0f, dH + (size_t)r0 * d, d);
    }
    return loss;
}
