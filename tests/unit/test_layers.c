/* layers: every backward against central finite differences of its forward. The loss is a
 * fixed random projection of the layer's output, sum(out * R), accumulated in double; input
 * gradients start from random values so that the check also proves "backward accumulates".
 * The error is max |fd - analytic| / max |analytic| over a tensor: below 1e-4 when right. Broken
 * on purpose, the tolerance catches it: the LayerNorm backward without its mean term gave 8e-2,
 * the softmax backward of attention without its row-dot term 0.67, the GELU derivative with one
 * coefficient 10% off 2.3e-2. */
#include "check.h"
#include "config.h"
#include "layers.h"
#include "rng.h"
#include "uidhead.h"
#include "util.h"
#include "vmath.h"
#include <stdlib.h>
#include <string.h>

#define TOL 2e-3

static void fill(float *x, size_t n, double std, uint64_t stream) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * rng_normal(42, stream, i));
}
static float *randn(size_t n, double std, uint64_t stream) {
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    fill(x, n, std, stream);
    return x;
}

/* The layer under test: computes out from its current inputs. */
typedef struct Layer Layer;
struct Layer {
    void (*forward)(Layer *l, float *out);
    size_t n_out;
    const float *R; /* projection of the output */
    void *ctx;
};

static double projected(Layer *l, float *out) {
    l->forward(l, out);
    double s = 0;
    for (size_t i = 0; i < l->n_out; i++) s += (double)out[i] * l->R[i];
    return s;
}

/* normalised max error of the gradient an (n) of the projected loss w.r.t. x (n) */
static double fd_error(Layer *l, float *x, size_t n, const float *an, float h) {
    float *out = xmalloc(l->n_out * sizeof(float));
    double maxdiff = 0, maxan = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h;
        double lp = projected(l, out);
        x[i] = keep - h;
        double lm = projected(l, out);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        maxdiff = check_max(maxdiff, fabs(fd - an[i]));
        maxan = check_max(maxan, fabs(an[i]));
    }
    free(out);
    return maxdiff / fmax(maxan, 1e-30);
}

/* grad - start: what a backward added to a buffer that held start */
static float *added(const float *grad, const float *start, size_t n) {
    float *d = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) d[i] = grad[i] - start[i];
    return d;
}

#define EXPECT_GRAD(name, err)                                                      \
    do {                                                                            \
        double e_ = (err);                                                          \
        CHECK_MSG(e_ < TOL, "%s: gradient error %.3g (tolerance %g)", name, e_, TOL); \
        if (comm_rank() == 0) printf("    %-28s max rel error %.2e\n", name, e_);   \
    } while (0)

/* ------------------------------------------------------------------ matmul */
typedef struct { float *inp, *w, *b; int N, C, OC; } MatmulCtx;
static void matmul_fwd(Layer *l, float *out) {
    MatmulCtx *c = l->ctx;
    matmul_forward(out, c->inp, c->w, c->b, c->N, c->C, c->OC);
}
static void test_matmul(void) {
    MatmulCtx c = {.N = 7, .C = 5, .OC = 6};
    c.inp = randn(35, 1, 1);
    c.w = randn(30, 1, 2);
    c.b = randn(6, 1, 3);
    float *R = randn(42, 1, 4);
    Layer l = {matmul_fwd, 42, R, &c};
    float *g0 = randn(35, 1, 5), *dinp = xmalloc(35 * 4), *dw = calloc(30, 4), *db = calloc(6, 4);
    memcpy(dinp, g0, 35 * 4);
    matmul_backward(dinp, dw, db, R, c.inp, c.w, c.N, c.C, c.OC, 1);
    float *di = added(dinp, g0, 35);
    EXPECT_GRAD("matmul dinp", fd_error(&l, c.inp, 35, di, 1e-2f));
    /* accumulate 0 writes dinp: the NaN garbage there is never read */
    float *dw2 = calloc(30, 4);
    for (int i = 0; i < 35; i++) dinp[i] = NAN;
    matmul_backward(dinp, dw2, NULL, R, c.inp, c.w, c.N, c.C, c.OC, 0);
    EXPECT_GRAD("matmul dinp written (accumulate 0)", fd_error(&l, c.inp, 35, dinp, 1e-2f));
    free(dw2);
    EXPECT_GRAD("matmul dweight", fd_error(&l, c.w, 30, dw, 1e-2f));
    EXPECT_GRAD("matmul dbias", fd_error(&l, c.b, 6, db, 1e-2f));
    free(c.inp), free(c.w), free(c.b), free(R), free(g0), free(dinp), free(dw), free(db), free(di);
}

/* ------------------------------------------------------------------ layernorm */
typedef struct { float *inp, *w, *b, *mean, *rstd; int N, C; } LnCtx;
static void ln_fwd(Layer *l, float *out) {
    LnCtx *c = l->ctx;
    layernorm_forward(out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C);
}
static void test_layernorm(void) {
    LnCtx c = {.N = 5, .C = 8};
    size_t n = 40;
    c.inp = randn(n, 2, 10);
    c.w = randn(8, 1, 11);
    c.b = randn(8, 1, 12);
    c.mean = xmalloc(5 * 4);
    c.rstd = xmalloc(5 * 4);
    float *R = randn(n, 1, 13);
    Layer l = {ln_fwd, n, R, &c};
    float *out = xmalloc(n * 4);
    ln_fwd(&l, out);
    float *g0 = randn(n, 1, 14), *dinp = xmalloc(n * 4), *dw = calloc(8, 4), *db = calloc(8, 4);
    memcpy(dinp, g0, n * 4);
    layernorm_backward(dinp, dw, db, R, c.inp, c.w, c.mean, c.rstd, c.N, c.C);
    float *di = added(dinp, g0, n);
    EXPECT_GRAD("layernorm dinp", fd_error(&l, c.inp, n, di, 1e-2f));
    EXPECT_GRAD("layernorm dweight", fd_error(&l, c.w, 8, dw, 1e-2f));
    EXPECT_GRAD("layernorm dbias", fd_error(&l, c.b, 8, db, 1e-2f));
    free(c.inp), free(c.w), free(c.b), free(c.mean), free(c.rstd), free(R), free(out), free(g0), free(dinp);
    free(dw), free(db), free(di);
}

/* ------------------------------------------------------------------ gelu */
typedef struct { float *inp; size_t n; } GeluCtx;
static void gelu_fwd(Layer *l, float *out) {
    GeluCtx *c = l->ctx;
    gelu_forward(out, c->inp, c->n);
}
static void test_gelu(void) {
    GeluCtx c = {.n = 64};
    c.inp = randn(64, 2, 20);
    float *R = randn(64, 1, 21), *g0 = randn(64, 1, 22), *dinp = xmalloc(64 * 4);
    Layer l = {gelu_fwd, 64, R, &c};
    memcpy(dinp, g0, 64 * 4);
    gelu_backward(dinp, c.inp, R, 64, 1);
    float *di = added(dinp, g0, 64);
    EXPECT_GRAD("gelu dinp", fd_error(&l, c.inp, 64, di, 1e-3f));
    for (int i = 0; i < 64; i++) dinp[i] = NAN;
    gelu_backward(dinp, c.inp, R, 64, 0);
    EXPECT_GRAD("gelu dinp written (accumulate 0)", fd_error(&l, c.inp, 64, dinp, 1e-3f));
    /* the tanh approximation: GELU(1) = 0.841192 */
    float one = 1, y;
    gelu_forward(&y, &one, 1);
    CHECK_CLOSE(y, 0.8411920, 1e-6);
    free(c.inp), free(R), free(g0), free(dinp), free(di);
}

/* the training path (GELU' kept in place of x, no tanh in the backward) equals the plain one bit
 * for bit, over several blocks and a tail; a NaN input gives NaN gradients */
static void test_gelu_keep_local(void) {
    size_t n = 600;
    float *x = randn(n, 3, 23), *dy = randn(n, 1, 24), *kept = xmalloc(n * 4);
    float *y0 = xmalloc(n * 4), *y1 = xmalloc(n * 4), *d0 = xmalloc(n * 4), *d1 = xmalloc(n * 4);
    x[517] = NAN;
    memcpy(kept, x, n * 4);
    gelu_forward(y0, x, n);
    gelu_backward(d0, x, dy, n, 0);
    gelu_forward_keep_local(y1, kept, n);
    gelu_backward_local(d1, kept, dy, n);
    CHECK(memcmp(y0, y1, n * 4) == 0);
    CHECK(memcmp(d0, d1, n * 4) == 0);
    CHECK(isnan(kept[517]) && isnan(d1[517]) && isnan(y1[517]));
    CHECK(!isnan(d1[516]) && !isnan(d1[518]));
    free(x), free(dy), free(kept), free(y0), free(y1), free(d0), free(d1);
}

/* model.uid_bf16: the head's loss and gradients on bf16 operands stay within bf16's rounding of
 * the fp32 head's (several blocks, a short last one, an odd item count, smoothing), differ from
 * them (the bf16 path ran), and a NaN in H still reaches the loss */
static void test_uid_head_bf16(void) {
    enum { V = 301, D = 16, N = 41 };
    UidHead u[2];
    float *H = randn(N * D, 1, 80), *dH[2];
    int32_t t[N];
    for (int n = 0; n < N; n++) t[n] = (int32_t)((n * 37 + 5) % V);
    double loss[2];
    for (int b = 0; b < 2; b++) {
        uid_init(&u[b], V, D, 0, 9, 0);
        u[b].block = 16;
        u[b].bf16 = b;
        fill(uid_head_w(&u[b]), V * D, 1, 81); /* logits of order 1 */
        dH[b] = xcalloc(N * D, sizeof(float));
        loss[b] = uid_head_forward_backward(&u[b], H, t, N, 0.1f, 1.0f / N, dH[b]);
    }
    const float *gw[2] = {arena_grad(&u[0].arena, u[0].head), arena_grad(&u[1].arena, u[1].head)};
    double rl = fabs(loss[1] - loss[0]) / fabs(loss[0]);
    double rh = check_rel_diff(dH[1], dH[0], N * D, 1e-6), rw = check_rel_diff(gw[1], gw[0], V * D, 1e-6);
    CHECK_MSG(rl < 2e-3 && rl > 0, "bf16 loss off by %.3g relative", rl);
    CHECK_MSG(rh < 3e-2 && rh > 0, "bf16 dH off by %.3g", rh);
    CHECK_MSG(rw < 3e-2 && rw > 0, "bf16 dW off by %.3g", rw);
    CHECK_MSG(check_nan_detected(dH[1], dH[0], N * D, 1e-6, 3e-2), "a NaN in dH would pass");
    if (comm_rank() == 0) printf("    bf16 head vs fp32: loss %.2e, dH %.2e, dW %.2e (relative)\n", rl, rh, rw);
    H[5 * D + 3] = NAN;
    CHECK(isnan(uid_head_forward_backward(&u[1], H, t, N, 0.0f, 1.0f / N, dH[1])));
    for (int b = 0; b < 2; b++) uid_free(&u[b]), free(dH[b]);
    free(H);
}

/* ------------------------------------------------------------------ attention */
typedef struct { float *qkv, *att; const int *off; int B, C, NH; } AttCtx;
static void att_fwd(Layer *l, float *out) {
    AttCtx *c = l->ctx;
    attention_forward(out, c->att, c->qkv, c->off, c->B, c->C, c->NH);
}
static void test_attention(void) {
    int off[] = {0, 5, 6, 6, 13}; /* packed: sequences of 5, 1, 0 and 7 tokens */
    AttCtx c = {.off = off, .B = 4, .C = 8, .NH = 2};
    int N = 13;
    size_t nq = (size_t)N * 3 * c.C, no = (size_t)N * c.C;
    c.qkv = randn(nq, 1, 30);
    c.att = xmalloc(attention_size(off, c.B, c.NH) * 4);
    float *R = randn(no, 1, 31), *out = xmalloc(no * 4);
    Layer l = {att_fwd, no, R, &c};
    att_fwd(&l, out);
    /* probabilities: rows sum to 1, nothing above the diagonal */
    const float *P = c.att;
    double worst = 0;
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 5; i++) {
            double s = 0;
            for (int j = 0; j < 5; j++) {
                s += P[(h * 5 + i) * 5 + j];
                if (j > i) CHECK(P[(h * 5 + i) * 5 + j] == 0);
            }
            worst = check_max(worst, fabs(s - 1));
        }
    CHECK(worst < 1e-6);
    /* a one-token sequence attends to itself: its output is its own v */
    for (int c2 = 0; c2 < 8; c2++) CHECK_CLOSE(out[5 * 8 + c2], c.qkv[5 * 24 + 16 + c2], 1e-6);
    float *g0 = randn(nq, 1, 32), *dqkv = xmalloc(nq * 4), *scratch = xmalloc(49 * 4);
    memcpy(dqkv, g0, nq * 4);
    attention_backward(dqkv, R, c.qkv, c.att, off, c.B, c.C, c.NH, scratch, 1);
    float *dq = added(dqkv, g0, nq);
    EXPECT_GRAD("attention dqkv", fd_error(&l, c.qkv, nq, dq, 1e-2f));
    for (size_t i = 0; i < nq; i++) dqkv[i] = NAN;
    attention_backward(dqkv, R, c.qkv, c.att, off, c.B, c.C, c.NH, scratch, 0);
    EXPECT_GRAD("attention dqkv written (accumulate 0)", fd_error(&l, c.qkv, nq, dqkv, 1e-2f));
    /* the last row of each non-empty sequence alone (R = 3 rows): the full attention's last rows */
    float last[3 * 8], p[7];
    attention_forward_last(last, p, c.qkv, off, c.B, c.C, c.NH);
    const int last_row[3] = {4, 5, 12};
    double dl = 0;
    for (int r = 0; r < 3; r++)
        for (int c2 = 0; c2 < 8; c2++) dl = check_max(dl, fabs(last[r * 8 + c2] - out[last_row[r] * 8 + c2]));
    CHECK_MSG(dl < 1e-6, "attention_forward_last differs by %g", dl);
    /* causality: the first sequence's first output does not move when its later tokens do */
    float before = out[0];
    for (int c2 = 0; c2 < 24; c2++) c.qkv[3 * 24 + c2] += 1.0f;
    att_fwd(&l, out);
    CHECK(out[0] == before);
    free(c.qkv), free(c.att), free(R), free(out), free(g0), free(dqkv), free(scratch), free(dq);
}

/* ------------------------------------------------------------------ fusion */
typedef struct { float *inp; const int8_t *level; int N, C, mode; } FusionCtx;
static void fusion_fwd(Layer *l, float *out) {
    FusionCtx *c = l->ctx;
    fusion_forward(out, c->inp, c->level, c->N, c->C, c->mode);
}
static void test_fusion(void) {
    /* chunks of 3 (L = 2), two sequences, the second ending inside a chunk (ar input) */
    const int8_t level[] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1};
    int N = 11, C = 4;
    size_t n = (size_t)N * C;
    const char *names[] = {"fusion sum dinp", "fusion mean dinp", "fusion none dinp"};
    for (int mode = FUSION_SUM; mode <= FUSION_NONE; mode++) {
        FusionCtx c = {.level = level, .N = N, .C = C, .mode = mode};
        c.inp = randn(n, 1, 40);
        float *R = randn(n, 1, 41), *out = xmalloc(n * 4);
        Layer l = {fusion_fwd, n, R, &c};
        fusion_fwd(&l, out);
        /* the UID row of the second chunk sees rows 3, 4, 5 */
        double want = c.inp[3 * C + 1] + c.inp[4 * C + 1] + c.inp[5 * C + 1];
        if (mode == FUSION_MEAN) want /= 3;
        if (mode == FUSION_NONE) want = c.inp[5 * C + 1];
        CHECK_CLOSE(out[5 * C + 1], want, 1e-6);
        CHECK_CLOSE(out[6 * C + 2], c.inp[6 * C + 2], 1e-6); /* a chunk start is itself */
        float *g0 = randn(n, 1, 42), *dinp = xmalloc(n * 4);
        memcpy(dinp, g0, n * 4);
        fusion_backward(dinp, R, level, N, C, mode);
        float *di = added(dinp, g0, n);
        EXPECT_GRAD(names[mode], fd_error(&l, c.inp, n, di, 1e-2f));
        free(c.inp), free(R), free(out), free(g0), free(dinp), free(di);
    }
    /* L = 0: every row its own chunk, fusion is the identity */
    const int8_t zero[] = {0, 0, 0};
    float in[6] = {1, 2, 3, 4, 5, 6}, out[6];
    fusion_forward(out, in, zero, 3, 2, FUSION_SUM);
    CHECK(memcmp(in, out, sizeof in) == 0);
}

/* ------------------------------------------------------------------ embedding */
typedef struct { float *table; const int *rows; const int32_t *ids; int n, C; } EmbCtx;
static void emb_fwd(Layer *l, float *out) {
    EmbCtx *c = l->ctx;
    memset(out, 0, l->n_out * sizeof(float));
    embedding_forward(out, c->rows, c->ids, c->n, c->table, c->C);
}
static void test_embedding(void) {
    const int rows[] = {4, 0, 2, 1, 3};
    const int32_t ids[] = {2, 5, 2, 0, 5}; /* repeated ids: their gradients add */
    EmbCtx c = {.rows = rows, .ids = ids, .n = 5, .C = 3};
    c.table = randn(18, 1, 50);
    float *R = randn(15, 1, 51), *g0 = randn(18, 1, 52), *dt = xmalloc(18 * 4);
    Layer l = {emb_fwd, 15, R, &c};
    memcpy(dt, g0, 18 * 4);
    embedding_backward(dt, rows, ids, 5, R, 3);
    float *d = added(dt, g0, 18);
    EXPECT_GRAD("embedding dtable", fd_error(&l, c.table, 18, d, 1e-2f));
    CHECK(d[3] == 0 && d[4] == 0 && d[5] == 0); /* id 1 is unused */
    free(c.table), free(R), free(g0), free(dt), free(d);
}

/* ------------------------------------------------------------------ softmax cross-entropy */
typedef struct { float *x, *work, *mx, *sum; const int32_t *t; int N, K; } CeCtx;
static void ce_fwd(Layer *l, float *out) {
    CeCtx *c = l->ctx;
    memcpy(c->work, c->x, (size_t)c->N * c->K * sizeof(float));
    out[0] = (float)crossentropy_forward_backward(c->work, c->N, c->K, c->t, 0, c->mx, c->sum);
}
static void test_crossentropy(void) {
    const int32_t t[] = {3, 0, 6, 6};
    CeCtx c = {.t = t, .N = 4, .K = 7};
    c.x = randn(28, 3, 60);
    c.work = xmalloc(28 * 4);
    c.mx = xmalloc(16);
    c.sum = xmalloc(16);
    float R = 1;
    Layer l = {ce_fwd, 1, &R, &c};
    /* the loss against a direct double computation */
    double want = 0;
    for (int n = 0; n < 4; n++) {
        double s = 0;
        for (int k = 0; k < 7; k++) s += exp(c.x[n * 7 + k]);
        want += log(s) - c.x[n * 7 + t[n]];
    }
    float loss;
    ce_fwd(&l, &loss);
    CHECK_CLOSE(loss, want, 1e-6);
    memcpy(c.work, c.x, 28 * 4);
    crossentropy_forward_backward(c.work, 4, 7, t, 1.0f, c.mx, c.sum);
    float *g = xmalloc(28 * 4);
    memcpy(g, c.work, 28 * 4);
    EXPECT_GRAD("softmax-CE dlogits", fd_error(&l, c.x, 28, g, 1e-2f));
    /* a large logit does not overflow */
    c.x[0] = 200;
    ce_fwd(&l, &loss);
    CHECK(isfinite(loss));
    free(c.x), free(c.work), free(c.mx), free(c.sum), free(g);
}

/* ------------------------------------------------------------------ uid head */
typedef struct { UidHead *u; float *H; const int32_t *t; int N; float eps; } UidCtx;
static void uid_fwd(Layer *l, float *out) {
    UidCtx *c = l->ctx;
    out[0] = (float)uid_head_forward_backward(c->u, c->H, c->t, c->N, c->eps, 0, NULL);
}
/* tied and untied, without and with label smoothing (eps 0.3) */
static void test_uid_head(void) {
    for (int tc = 0; tc < 4; tc++) {
        int tied = tc & 1;
        float eps = tc < 2 ? 0.0f : 0.3f;
        char name[64];
        UidHead u;
        uid_init(&u, 13, 6, tied, 7, 0);
        u.block = 3; /* several logits blocks, the last one short */
        fill(uid_head_w(&u), 13 * 6, 1, 70);
        const int32_t t[] = {0, 12, 5, 5, 7, 1, 3};
        UidCtx c = {.u = &u, .t = t, .N = 7, .eps = eps};
        c.H = randn(42, 1, 71);
        float R = 1;
        Layer l = {uid_fwd, 1, &R, &c};
        /* against a direct double computation of the full softmax: -(1 - eps) log p_t - eps/13 sum_i log p_i */
        double want = 0;
        for (int n = 0; n < 7; n++) {
            double s = 0, lt = 0, zsum = 0;
            for (int i = 0; i < 13; i++) {
                double z = 0;
                for (int k = 0; k < 6; k++) z += (double)c.H[n * 6 + k] * uid_head_w(&u)[i * 6 + k];
                s += exp(z);
                zsum += z;
                if (i == t[n]) lt = z;
            }
            want += log(s) - (1 - eps) * lt - eps / 13 * zsum;
        }
        float loss;
        uid_fwd(&l, &loss);
        CHECK_CLOSE(loss, want, 1e-5);
        float *g0 = randn(42, 1, 72), *dH = xmalloc(42 * 4);
        memcpy(dH, g0, 42 * 4);
        uid_zero_grad(&u);
        double l2 = uid_head_forward_backward(&u, c.H, t, 7, eps, 1.0f, dH);
        CHECK_CLOSE(l2, want, 1e-5);
        float *dh = added(dH, g0, 42);
        snprintf(name, sizeof name, "uid head dH (%s, eps %g)", tied ? "tied" : "untied", eps);
        EXPECT_GRAD(name, fd_error(&l, c.H, 42, dh, 1e-2f));
        snprintf(name, sizeof name, "uid head dW (%s, eps %g)", tied ? "tied" : "untied", eps);
        EXPECT_GRAD(name, fd_error(&l, uid_head_w(&u), 78, arena_grad(&u.arena, u.head), 1e-2f));
        /* scores are the logits */
        float s[13];
        uid_head_scores(&u, c.H, 1, s);
        double z = 0;
        for (int k = 0; k < 6; k++) z += (double)c.H[k] * uid_head_w(&u)[2 * 6 + k];
        CHECK_CLOSE(s[2], z, 1e-5);
        /* the embedding: rows of E_u; tied, it is the head's table and gradients add */
        int32_t ids[] = {4, 4, 9};
        float e[18], de[18];
        uid_embed_forward(&u, ids, 3, e);
        CHECK(memcmp(e, uid_emb(&u) + 4 * 6, 24) == 0 && memcmp(e + 12, uid_emb(&u) + 9 * 6, 24) == 0);
        CHECK((uid_emb(&u) == uid_head_w(&u)) == tied);
        float before = arena_grad(&u.arena, u.emb)[4 * 6];
        for (int i = 0; i < 18; i++) de[i] = 1;
        uid_embed_backward(&u, ids, 3, de);
        CHECK_CLOSE(arena_grad(&u.arena, u.emb)[4 * 6], before + 2, 1e-6);
        free(c.H), free(g0), free(dH), free(dh);
        uid_free(&u);
    }
}

/* ------------------------------------------------------------------ dropout */
static void test_dropout(void) {
    int N = 200, C = 50;
    uint64_t keys[200];
    for (int r = 0; r < N; r++) keys[r] = 1000 + (uint64_t)r;
    float *x = xmalloc((size_t)N * C * 4), *res = randn((size_t)N * C, 1, 80), *y = xmalloc((size_t)N * C * 4);
    for (int i = 0; i < N * C; i++) x[i] = 1;
    dropout_forward(x, x, NULL, N, C, 0.3f, 9, 5, keys); /* in place */
    int zeros = 0;
    for (int i = 0; i < N * C; i++) {
        if (x[i] == 0) zeros++;
        else CHECK_CLOSE(x[i], 1 / 0.7, 1e-4);
    }
    CHECK_MSG(fabs(zeros / (double)(N * C) - 0.3) < 0.02, "dropped %d of %d", zeros, N * C);
    /* fused with the residual: the same mask, plus res */
    float *ones = xmalloc((size_t)N * C * 4);
    for (int i = 0; i < N * C; i++) ones[i] = 1;
    dropout_forward(y, ones, res, N, C, 0.3f, 9, 5, keys);
    for (int i = 0; i < N * C; i++) CHECK(y[i] == res[i] + x[i]);
    /* the same unit keyed alone: the mask is a function of (seed, stream, key, unit) only */
    float z[50];
    for (int c = 0; c < C; c++) z[c] = 1;
    dropout_forward(z, z, NULL, 1, C, 0.3f, 9, 5, keys + 77);
    CHECK(memcmp(z, x + 77 * C, sizeof z) == 0);
    /* another stream (step) gives another mask */
    for (int c = 0; c < C; c++) z[c] = 1;
    dropout_forward(z, z, NULL, 1, C, 0.3f, 9, 6, keys + 77);
    CHECK(memcmp(z, x + 77 * C, sizeof z) != 0);
    /* p = 0: a plain residual add */
    dropout_forward(y, ones, res, N, C, 0.0f, 9, 5, keys);
    for (int i = 0; i < N * C; i++) CHECK(y[i] == res[i] + 1);
    free(x), free(res), free(y), free(ones);
}

/* ------------------------------------------------------------------ vmath */
static void test_vmath(void) {
    enum { n = 4003 }; /* not a multiple of the vector width */
    static float x[n], t[n];
    for (int i = 0; i < n; i++) {
        x[i] = -100.0f + 103.0f * i / n; /* exp(x - 3) over [-103, 0] */
        t[i] = -12.0f + 24.0f * i / n;
    }
    t[7] = 1e-3f;
    t[8] = -3e-2f;
    double want = 0, worst_e = 0, worst_t = 0;
    for (int i = 0; i < n; i++) want += exp((double)(x[i] - 3.0f)); /* the float argument, as computed */
    float *y = xmalloc(sizeof x);
    memcpy(y, x, sizeof x);
    float sum = vexp_shift_sum(y, n, 3.0f);
    for (int i = 0; i < n; i++) {
        double e = exp((double)(x[i] - 3.0f));
        if (e > 1e-37) worst_e = check_max(worst_e, fabs(y[i] - e) / e);
    }
    CHECK_MSG(worst_e < 1e-6, "exp relative error %.3g", worst_e);
    CHECK_CLOSE(sum, want, 1e-5);
    memcpy(y, t, sizeof t);
    vtanh(y, n);
    for (int i = 0; i < n; i++) worst_t = check_max(worst_t, fabs(y[i] - tanh((double)t[i])) / fmax(fabs(tanh((double)t[i])), 1e-3));
    CHECK_MSG(worst_t < 1e-6, "tanh relative error %.3g", worst_t);
    if (comm_rank() == 0) printf("    exp max rel error %.2e, tanh %.2e\n", worst_e, worst_t);
    free(y);
}

/* exp and tanh on AVX-512 give the AVX2 path's values (and exp's sums) bit for bit, at every length
 * around the two vector widths and over the whole range (underflow, the clamps, the series near 0, NaN) */
static void test_vmath_avx512(void) {
    static const size_t lens[] = {0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 33, 1024, 4003};
    enum { most = 4003 };
    float *x = xmalloc(most * sizeof(float)), *a = xmalloc(most * sizeof(float)), *b = xmalloc(most * sizeof(float));
    for (int i = 0; i < most; i++) x[i] = (float)(40.0 * rng_normal(42, 900, (uint64_t)i)) - 20.0f;
    x[100] = NAN, x[101] = INFINITY, x[102] = -INFINITY, x[103] = 200.0f, x[104] = -200.0f;
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
        size_t n = lens[k];
        memcpy(a, x, n * sizeof(float)), memcpy(b, x, n * sizeof(float));
        int was = vmath_allow_avx512(0);
        float sa = vexp_shift_sum(a, n, 1.5f);
        vmath_allow_avx512(1);
        float sb = vexp_shift_sum(b, n, 1.5f);
        vmath_allow_avx512(was);
        CHECK_MSG(memcmp(a, b, n * sizeof(float)) == 0 && memcmp(&sa, &sb, sizeof sa) == 0,
                  "exp at n = %zu: the AVX-512 path differs from AVX2 (sum %.9g vs %.9g)", n, sb, sa);
        for (size_t i = 0; i < n; i++) a[i] = b[i] = 0.05f * x[i]; /* tanh's two regimes: |u| < 0.25 and above */
        vmath_allow_avx512(0);
        vtanh(a, n);
        vmath_allow_avx512(1);
        vtanh(b, n);
        vmath_allow_avx512(was);
        CHECK_MSG(memcmp(a, b, n * sizeof(float)) == 0, "tanh at n = %zu: the AVX-512 path differs from AVX2", n);
    }
    free(x), free(a), free(b);
}

/* NaN goes through every vmath routine at every position (vector body and scalar tail): the old
 * AVX2 exp clamped NaN to 88 and the max dropped NaN lanes, hiding a diverged model. */
static void test_vmath_nan(void) {
    enum { n = 21 };
    for (int at = 0; at < n; at++) {
        float x[n], y[n];
        for (int i = 0; i < n; i++) x[i] = 0.1f * (float)i - 1.0f;
        x[at] = NAN;
        CHECK_MSG(isnan(vmax(x, n)), "vmax dropped a NaN at %d", at);
        memcpy(y, x, sizeof x);
        float sum = vexp_shift_sum(y, n, 0.5f);
        CHECK_MSG(isnan(y[at]) && isnan(sum), "exp hid a NaN at %d", at);
        memcpy(y, x, sizeof x);
        vtanh(y, n);
        CHECK_MSG(isnan(y[at]), "tanh hid a NaN at %d", at);
        memcpy(y, x, sizeof x);
        vexp_shift_sum(y, n, NAN);
        CHECK_MSG(isnan(y[0]) && isnan(y[n - 1]), "a NaN shift was hidden");
    }
    float inf[9] = {1, 2, 3, INFINITY, 5, 6, 7, 8, 9};
    CHECK(isinf(vmax(inf, 9)));
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_layers");
    RUN_TEST(test_matmul);
    RUN_TEST(test_layernorm);
    RUN_TEST(test_gelu);
    RUN_TEST(test_gelu_keep_local);
    RUN_TEST(test_attention);
    RUN_TEST(test_fusion);
    RUN_TEST(test_embedding);
    RUN_TEST(test_crossentropy);
    RUN_TEST(test_uid_head);
    RUN_TEST(test_uid_head_bf16);
    RUN_TEST(test_dropout);
    RUN_TEST(test_vmath);
    RUN_TEST(test_vmath_nan);
    RUN_TEST(test_vmath_avx512);
    return check_finish();
}
