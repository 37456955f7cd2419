/* model: the whole model's loss gradient against central finite differences, for car and ar,
 * every fusion mode, L = 0 and L > 0, tied and untied UID tables, with and without dropout
 * (a fixed dropout counter makes the model a deterministic function, so the check holds with
 * dropout on too). For each parameter tensor the derivative along a random unit direction,
 * (f(p + hv) - f(p - hv)) / 2h, is compared with the analytic g.v. Plus: dropout is
 * deterministic, keyed by sample and step, independent of the batch it sits in. */
#include "check.h"
#include "model.h"
#include "rng.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

#define TOL 1e-2

typedef struct {
    const char *name;
    int mode, levels, fusion, tie, level_emb;
    float alpha, dropout;
} Case;

typedef struct {
    int B;
    int len[5];
    int32_t items[32];
    int64_t sample[5];
} TestBatch;

static ModelBatch as_batch(const TestBatch *t) { return (ModelBatch){t->B, t->len, t->items, t->sample}; }

static TestBatch test_batch(int64_t V) {
    TestBatch t = {.B = 4, .len = {4, 2, 5, 1}, .sample = {11, 3, 8, 20}};
    for (int i = 0; i < 12; i++) t.items[i] = (int32_t)rng_below(5, 1, (uint64_t)i, (uint64_t)V);
    return t;
}

static int32_t *make_codes(int64_t V, int L, const int *K) {
    int32_t *codes = xmalloc((size_t)(V * (L ? L : 1)) * sizeof(int32_t));
    for (int64_t i = 0; i < V; i++)
        for (int l = 0; l < L; l++) codes[i * L + l] = (int32_t)rng_below(6, (uint64_t)l, (uint64_t)i, (uint64_t)K[l]);
    return codes;
}

static ModelSpec small_spec(const Case *c) {
    ModelSpec s = {.levels = c->levels, .codebook = {5, 3, 4}, .n_items = 11, .max_chunks = 6, .d_model = 8,
                   .n_layers = 2, .n_heads = 2, .dropout = c->dropout, .fusion = c->fusion,
                   .level_embedding = c->level_emb, .tie_uid = c->tie, .mode = c->mode, .alpha = c->alpha, .seed = 17};
    return s;
}

/* Parameters far from the initialisation, so that every term of the gradient is sizeable. */
static void perturb(ParamArena *a, double std, uint64_t stream) {
    for (int i = 0; i < a->n; i++) {
        float *p = arena_param(a, i);
        for (size_t k = 0; k < a->t[i].size; k++)
            p[k] = (a->t[i].kind == PARAM_NORM && strstr(a->t[i].name, ".w") ? 1.0f : 0.0f) +
                   (float)(std * rng_normal(77, stream + (uint64_t)i, k));
    }
}

static double mean_loss(Model *m, const ModelBatch *b, int training) {
    ModelLoss l = model_forward(m, b, training, 3, 0);
    return l.loss_sum / (double)l.n_loss;
}

/* derivative of the mean loss along a random unit direction of tensor i of arena a */
static void check_tensor(Model *m, const ModelBatch *b, int training, ParamArena *a, int i, const char *cname,
                         double *worst) {
    size_t n = a->t[i].size;
    float *p = arena_param(a, i), *g = arena_grad(a, i);
    float *keep = xmalloc(n * sizeof(float)), *v = xmalloc(n * sizeof(float));
    memcpy(keep, p, n * sizeof(float));
    double norm = 0, an = 0;
    for (size_t k = 0; k < n; k++) {
        v[k] = (float)rng_normal(99, (uint64_t)i, k);
        norm += (double)v[k] * v[k];
    }
    for (size_t k = 0; k < n; k++) {
        v[k] = (float)(v[k] / sqrt(norm));
        an += (double)g[k] * v[k];
    }
    /* central differences at h and h/2, Richardson-extrapolated: the h^2 error cancels, so h
     * can be large enough that float rounding of the loss (~1e-7) hardly shows */
    double D[2];
    for (int j = 0; j < 2; j++) {
        float h = j ? 0.04f : 0.08f;
        for (size_t k = 0; k < n; k++) p[k] = keep[k] + h * v[k];
        double fp = mean_loss(m, b, training);
        for (size_t k = 0; k < n; k++) p[k] = keep[k] - h * v[k];
        double fm = mean_loss(m, b, training);
        D[j] = (fp - fm) / (2.0 * h);
    }
    memcpy(p, keep, n * sizeof(float));
    double fd = (4 * D[1] - D[0]) / 3;
    double err = fabs(fd - an) / fmax(fabs(an), 1e-4);
    *worst = check_max(*worst, err);
    CHECK_MSG(err < TOL, "%s: tensor %s: finite difference %.6g, analytic %.6g (rel error %.3g)", cname, a->t[i].name,
              fd, an, err);
    free(keep);
    free(v);
}

static void check_case(const Case *c) {
    ModelSpec s = small_spec(c);
    int32_t *codes = make_codes(s.n_items, s.levels, s.codebook);
    Model m;
    model_create(&m, &s, codes);
    perturb(&m.params, 0.3, 1000);
    perturb(&m.uid.arena, 0.5, 2000);
    TestBatch tb = test_batch(s.n_items);
    ModelBatch b = as_batch(&tb);
    int training = c->dropout > 0;

    int64_t n = model_count_targets(&m, &b);
    model_zero_grad(&m);
    ModelLoss l = model_forward(&m, &b, training, 3, 1.0f / (float)n);
    model_backward(&m);
    CHECK(l.n_loss == n);
    if (c->mode == MODE_CAR) {
        CHECK(n == 3 + 1 + 4); /* one supervised position per item after the first */
        CHECK_CLOSE(l.loss_sum, l.act_sum + c->alpha * l.think_sum, 1e-9);
    } else {
        CHECK(n == 12 * (c->levels + 1) - 4); /* every token but each sequence's first */
        CHECK_CLOSE(l.loss_sum, l.act_sum + l.think_sum, 1e-9);
        /* a sequence's first token (s^1 of its first item, or its first UID when L = 0) has no target */
        if (c->levels) CHECK(l.n_act == 12 && l.n_think == 12 * c->levels - 4);
        else CHECK(l.n_act == 8 && l.n_think == 0);
    }
    double worst = 0;
    for (int i = 0; i < m.params.n; i++) check_tensor(&m, &b, training, &m.params, i, c->name, &worst);
    for (int i = 0; i < m.uid.arena.n; i++) check_tensor(&m, &b, training, &m.uid.arena, i, c->name, &worst);
    if (comm_rank() == 0) printf("    %-34s worst rel error %.2e over %d tensors\n", c->name, worst,
                                 m.params.n + m.uid.arena.n);
    model_free(&m);
    free(codes);
}

static void test_car(void) {
    Case cases[] = {
        {"car sum L=2 untied level-emb a=0.7", MODE_CAR, 2, FUSION_SUM, 0, 1, 0.7f, 0},
        {"car mean L=2 tied a=1.3", MODE_CAR, 2, FUSION_MEAN, 1, 0, 1.3f, 0},
        {"car none L=2 untied a=0.7", MODE_CAR, 2, FUSION_NONE, 0, 0, 0.7f, 0},
        {"car sum L=3 tied level-emb a=0", MODE_CAR, 3, FUSION_SUM, 1, 1, 0.0f, 0},
        {"car L=0 untied", MODE_CAR, 0, FUSION_SUM, 0, 0, 1.0f, 0},
        {"car L=0 tied level-emb", MODE_CAR, 0, FUSION_SUM, 1, 1, 1.0f, 0},
        {"car sum L=2 dropout 0.3", MODE_CAR, 2, FUSION_SUM, 0, 1, 1.0f, 0.3f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i]);
}

static void test_ar(void) {
    Case cases[] = {
        {"ar sum L=2 untied level-emb", MODE_AR, 2, FUSION_SUM, 0, 1, 1.0f, 0},
        {"ar mean L=2 tied", MODE_AR, 2, FUSION_MEAN, 1, 0, 1.0f, 0},
        {"ar none L=1 untied", MODE_AR, 1, FUSION_NONE, 0, 0, 1.0f, 0},
        {"ar L=0 tied", MODE_AR, 0, FUSION_SUM, 1, 0, 1.0f, 0},
        {"ar mean L=3 dropout 0.3", MODE_AR, 3, FUSION_MEAN, 0, 1, 1.0f, 0.3f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i]);
}

/* car and ar agree when L = 0: both predict the next UID from each UID */
static void test_l0_modes_agree(void) {
    Case c = {"", MODE_CAR, 0, FUSION_SUM, 0, 0, 1.0f, 0};
    ModelSpec s = small_spec(&c);
    TestBatch tb = test_batch(s.n_items);
    ModelBatch b = as_batch(&tb);
    Model m1, m2;
    model_create(&m1, &s, NULL);
    s.mode = MODE_AR;
    model_create(&m2, &s, NULL);
    ModelLoss a = model_forward(&m1, &b, 0, 0, 0), r = model_forward(&m2, &b, 0, 0, 0);
    CHECK(a.n_loss == r.n_loss);
    CHECK_CLOSE(a.loss_sum, r.loss_sum, 1e-6);
    model_free(&m1);
    model_free(&m2);
}

/* The held-out loss counts only the last item's tokens: by causality it equals the loss of the
 * whole sequence minus the loss of the sequence without its last item (the old eval_loss used
 * every token, so AR validation mostly measured training transitions). */
static void test_forward_last(void) {
    for (int mode = MODE_CAR; mode <= MODE_AR; mode++) {
        Case c = {"", mode, 3, FUSION_SUM, 0, 0, 0.5f, 0};
        ModelSpec s = small_spec(&c);
        int K[3] = {5, 3, 4};
        int32_t *codes = make_codes(s.n_items, 3, K);
        Model m;
        model_create(&m, &s, codes);
        perturb(&m.params, 0.3, 5);
        TestBatch tb = test_batch(s.n_items);
        double want = 0;
        int64_t n_want = 0;
        for (int i = 0, first = 0; i < tb.B; first += tb.len[i++]) {
            int n = tb.len[i]; /* n = 1: ar still predicts the item's later tokens, car nothing */
            int64_t smp = tb.sample[i];
            ModelBatch whole = {1, &tb.len[i], tb.items + first, &smp}, prefix = whole;
            int shorter = n - 1;
            prefix.len = &shorter;
            ModelLoss a = model_forward(&m, &whole, 0, 0, 0), p = model_forward(&m, &prefix, 0, 0, 0);
            want += a.loss_sum - p.loss_sum;
            n_want += a.n_loss - p.n_loss;
        }
        ModelBatch b = as_batch(&tb);
        ModelLoss l = model_forward_last(&m, &b);
        /* ar: 3 SIDs and the UID of each last item (3 tokens for a 1-item sequence); car: one chunk each */
        int64_t expect = mode == MODE_AR ? 3 * 4 + 3 : 3;
        CHECK_MSG(l.n_loss == n_want && l.n_loss == expect, "mode %d: %lld targets, expected %lld", mode,
                  (long long)l.n_loss, (long long)n_want);
        CHECK_CLOSE(l.loss_sum, want, 1e-4);
        model_free(&m);
        free(codes);
    }
}

static void test_dropout_deterministic(void) {
    Case c = {"", MODE_CAR, 2, FUSION_SUM, 0, 1, 1.0f, 0.3f};
    ModelSpec s = small_spec(&c);
    int32_t *codes = make_codes(s.n_items, s.levels, s.codebook);
    Model m;
    model_create(&m, &s, codes);
    perturb(&m.params, 0.3, 1000);
    TestBatch tb = test_batch(s.n_items);
    ModelBatch b = as_batch(&tb);
    size_t ng = m.params.total;
    float *g1 = xmalloc(ng * sizeof(float));
    model_zero_grad(&m);
    ModelLoss l1 = model_forward(&m, &b, 1, 5, 0.1f);
    model_backward(&m);
    memcpy(g1, m.params.grads, ng * sizeof(float));
    model_zero_grad(&m);
    ModelLoss l2 = model_forward(&m, &b, 1, 5, 0.1f);
    model_backward(&m);
    CHECK(l1.loss_sum == l2.loss_sum);
    CHECK(memcmp(g1, m.params.grads, ng * sizeof(float)) == 0);
    ModelLoss l3 = model_forward(&m, &b, 1, 6, 0); /* another step: another mask */
    CHECK(l3.loss_sum != l1.loss_sum);
    ModelLoss e = model_forward(&m, &b, 0, 5, 0); /* evaluation: no dropout */
    CHECK(e.loss_sum != l1.loss_sum);
    m.spec.dropout = 0;
    ModelLoss e2 = model_forward(&m, &b, 1, 5, 0);
    CHECK(e.loss_sum == e2.loss_sum);
    m.spec.dropout = 0.3f;
    /* a sequence's dropout depends on its sample index, not on the batch around it */
    TestBatch one = {.B = 1, .len = {5}, .sample = {8}}, two = {.B = 2, .len = {4, 5}, .sample = {11, 8}},
              first = {.B = 1, .len = {4}, .sample = {11}};
    memcpy(one.items, tb.items + 6, 5 * sizeof(int32_t));
    memcpy(two.items, tb.items, 4 * sizeof(int32_t));
    memcpy(two.items + 4, tb.items + 6, 5 * sizeof(int32_t));
    memcpy(first.items, tb.items, 4 * sizeof(int32_t));
    ModelBatch b1 = as_batch(&one), b2 = as_batch(&two), bf = as_batch(&first);
    double s1 = model_forward(&m, &b1, 1, 5, 0).loss_sum, sf = model_forward(&m, &bf, 1, 5, 0).loss_sum;
    double s2 = model_forward(&m, &b2, 1, 5, 0).loss_sum;
    CHECK_CLOSE(s2, s1 + sf, 1e-5);
    one.sample[0] = 9;
    CHECK(fabs(model_forward(&m, &b1, 1, 5, 0).loss_sum - s1) > 1e-4);
    free(g1);
    model_free(&m);
    free(codes);
}

/* the same seed gives the same parameters; sequences too long for max_chunks are refused at
 * the boundary only */
static void test_init(void) {
    Case c = {"", MODE_CAR, 2, FUSION_SUM, 0, 1, 1.0f, 0};
    ModelSpec s = small_spec(&c);
    int32_t *codes = make_codes(s.n_items, s.levels, s.codebook);
    Model a, b;
    model_create(&a, &s, codes);
    model_create(&b, &s, codes);
    CHECK(memcmp(a.params.params, b.params.params, a.params.total * sizeof(float)) == 0);
    CHECK(memcmp(uid_emb(&a.uid), uid_emb(&b.uid), a.uid.arena.total * sizeof(float)) == 0);
    int ln = arena_find(&a.params, "h.1.ln2.w"), qkv = arena_find(&a.params, "h.0.attn.qkv.w"),
        pr = arena_find(&a.params, "h.0.mlp.proj.w"), bias = arena_find(&a.params, "h.0.attn.qkv.b");
    CHECK(ln >= 0 && qkv >= 0 && pr >= 0 && bias >= 0);
    CHECK(arena_param(&a.params, ln)[3] == 1.0f && arena_param(&a.params, bias)[5] == 0.0f);
    double s2 = 0, p2 = 0;
    for (size_t k = 0; k < a.params.t[qkv].size; k++) s2 += pow(arena_param(&a.params, qkv)[k], 2);
    for (size_t k = 0; k < a.params.t[pr].size; k++) p2 += pow(arena_param(&a.params, pr)[k], 2);
    CHECK_CLOSE(sqrt(s2 / a.params.t[qkv].size), 0.02, 0.15);
    CHECK_CLOSE(sqrt(p2 / a.params.t[pr].size), 0.01, 0.15); /* 0.02 / sqrt(2 * 2 layers) */
    CHECK(model_num_params(&a) == (int64_t)a.params.total + 2 * 11 * 8);
    /* car: a sequence of max_chunks + 1 items fits (max_chunks input chunks) */
    int len = s.max_chunks + 1;
    int32_t items[16] = {0};
    ModelBatch ok = {1, &len, items, NULL};
    CHECK(model_forward(&a, &ok, 0, 0, 0).n_loss == s.max_chunks);
    float h[8];
    len = s.max_chunks;
    model_encode(&a, &ok, h);
    CHECK(isfinite(h[0]));
    /* an empty batch, and a car sequence of one item (no target) */
    len = 1;
    ModelLoss none = model_forward(&a, &ok, 1, 0, 0);
    CHECK(none.n_loss == 0 && none.loss_sum == 0 && a.N == 0);
    ModelBatch empty = {0, &len, items, NULL};
    CHECK(model_forward(&a, &empty, 1, 0, 0).n_loss == 0);
    model_free(&a);
    model_free(&b);
    free(codes);
}

/* encoding: the last token's final state, the same as that row of a forward; item scores: fast
 * thinking is the UID logit, slow thinking adds beta * sum_l log p_l(s_i^l) */
static void test_encode_and_scores(void) {
    Case c = {"", MODE_CAR, 2, FUSION_SUM, 0, 1, 1.0f, 0};
    ModelSpec s = small_spec(&c);
    int32_t *codes = make_codes(s.n_items, s.levels, s.codebook);
    Model m;
    model_create(&m, &s, codes);
    perturb(&m.params, 0.3, 1000);
    perturb(&m.uid.arena, 0.5, 2000);
    TestBatch tb = test_batch(s.n_items);
    ModelBatch b = as_batch(&tb);
    float H[4 * 8];
    model_encode(&m, &b, H);
    CHECK(m.N == 12 * 3);
    /* sequence 2 (items 6..10) encoded alone: the same state */
    TestBatch one = {.B = 1, .len = {5}, .sample = {0}};
    memcpy(one.items, tb.items + 6, 5 * sizeof(int32_t));
    ModelBatch b1 = as_batch(&one);
    float h1[8];
    model_encode(&m, &b1, h1);
    for (int k = 0; k < 8; k++) CHECK_CLOSE(h1[k], H[2 * 8 + k], 1e-5);
    /* an empty history between two others encodes to zeros and moves nothing (the last layer runs
     * on the non-empty sequences' last rows only) */
    TestBatch gap = {.B = 3, .len = {4, 0, 5}, .sample = {0, 1, 2}};
    memcpy(gap.items, tb.items, 4 * sizeof(int32_t));
    memcpy(gap.items + 4, tb.items + 6, 5 * sizeof(int32_t));
    ModelBatch bg = as_batch(&gap);
    float hg[3 * 8];
    model_encode(&m, &bg, hg);
    for (int k = 0; k < 8; k++) {
        CHECK_CLOSE(hg[k], H[k], 1e-5);
        CHECK(hg[8 + k] == 0);
        CHECK_CLOSE(hg[16 + k], H[2 * 8 + k], 1e-5);
    }
    /* it is the state a car training forward of those items plus one more has at that position */
    one.len[0] = 6;
    one.items[5] = 3;
    model_forward(&m, &b1, 0, 0, 0);
    for (int k = 0; k < 8; k++) CHECK_CLOSE(model_hidden(&m)[(5 * 3 - 1) * 8 + k], h1[k], 1e-5);
    float fast[4 * 11], slow[4 * 11], z[4 * 5], z2[4 * 3];
    model_score_items(&m, H, 4, 0, 2, fast);
    model_score_items(&m, H, 4, 0.5f, 2, slow);
    model_think_logits(&m, H, 4, 0, z);
    model_think_logits(&m, H, 4, 1, z2);
    for (int n = 0; n < 4; n++) {
        double lse0 = 0, lse1 = 0;
        for (int k = 0; k < 5; k++) lse0 += exp(z[n * 5 + k]);
        for (int k = 0; k < 3; k++) lse1 += exp(z2[n * 3 + k]);
        for (int i = 0; i < 11; i++) {
            double want = fast[n * 11 + i] + 0.5 * (z[n * 5 + codes[i * 2]] - log(lse0) + z2[n * 3 + codes[i * 2 + 1]] - log(lse1));
            CHECK_CLOSE(slow[n * 11 + i], want, 1e-5);
        }
    }
    uid_head_scores(&m.uid, H + 8, 1, slow);
    for (int i = 0; i < 11; i++) CHECK_CLOSE(slow[i], fast[11 + i], 1e-5); /* fast thinking: the UID logits */
    model_free(&m);
    free(codes);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_model_grad");
    RUN_TEST(test_car);
    RUN_TEST(test_ar);
    RUN_TEST(test_l0_modes_agree);
    RUN_TEST(test_forward_last);
    RUN_TEST(test_dropout_deterministic);
    RUN_TEST(test_init);
    RUN_TEST(test_encode_and_scores);
    return check_finish();
}
