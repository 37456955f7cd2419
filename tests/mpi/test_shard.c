/* Sharding over ranks: everything here compares the P-rank computation with a private copy that
 * every rank makes of the one-rank computation (all items local, nothing communicated).
 * - uidhead: the sharded UID embedding (forward and backward through all-to-alls) and the sharded
 *   softmax cross-entropy (gathered rows, all-reduced statistics, reduce-scattered dH) equal the
 *   unsharded ones, tied and untied, with and without label smoothing, with ranks holding no rows;
 * - training: a global batch split over the ranks (some ranks empty) gives the same loss and,
 *   after three AdamW steps with dropout, the same replicated and sharded parameters and moments;
 * - evaluation: the ranks of the targets (fast and slow thinking, history filtered or not, scores
 *   of all gathered users at once or one user at a time) are those of a plain loop over all items.
 * Ranks: 1 2 3 4 8
 */
#include "check.h"
#include "eval.h"
#include "model.h"
#include "rng.h"
#include "train.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

enum { V = 53, D = 8 };

static float frand(uint64_t a, uint64_t b, uint64_t c) { return (float)(rng_below(a, b, c, 2001) - 1000) / 1000.0f; }

/* max |a - b| / max(1, max |b|); every comparison also proves that a NaN in a would fail it */
static double rel_diff(const float *a, const float *b, size_t n) {
    CHECK_MSG(n == 0 || check_nan_detected(a, b, (int64_t)n, 1, 1e-5), "a NaN would pass this comparison");
    return check_rel_diff(a, b, (int64_t)n, 1);
}

/* rows of this rank: rank r gets 3r + 1 rows except the last rank, which gets none (P > 1) */
static int my_rows(void) { return comm_size() > 1 && comm_rank() == comm_size() - 1 ? 0 : 3 * comm_rank() + 1; }

static void uidhead_case(int tied, float eps, int bf16) {
    int P = comm_size(), me = comm_rank(), N = my_rows();
    UidHead sh, ref;
    uid_init(&sh, V, D, tied, 5, 1);
    uid_init(&ref, V, D, tied, 5, 0);
    sh.bf16 = ref.bf16 = bf16;
    CHECK(sh.hi - sh.lo < V || P == 1);
    CHECK(rel_diff(uid_emb(&sh), uid_emb(&ref) + sh.lo * D, (size_t)(sh.hi - sh.lo) * D) == 0);
    float *H = xmalloc(sizeof(float) * (N + 1) * D), *dH = xcalloc((size_t)(N + 1) * D, sizeof(float)),
          *dHr = xcalloc((size_t)(N + 1) * D, sizeof(float)), *e = xmalloc(sizeof(float) * (N + 1) * D),
          *er = xmalloc(sizeof(float) * (N + 1) * D);
    int32_t t[64];
    for (int n = 0; n < N; n++) {
        t[n] = (int32_t)rng_below(9, (uint64_t)me, (uint64_t)n, V);
        for (int c = 0; c < D; c++) H[n * D + c] = frand(10, (uint64_t)me, (uint64_t)(n * D + c));
    }
    if (N > 1) t[1] = (int32_t)(V - 1); /* an item of the last rank's range */
    double loss[2] = {uid_head_forward_backward(&sh, H, t, N, eps, 0.5f, dH),
                      uid_head_forward_backward(&ref, H, t, N, eps, 0.5f, dHr)};
    comm_sum_double(loss, 2);
    CHECK_CLOSE(loss[0], loss[1], 1e-6);
    CHECK_MSG(rel_diff(dH, dHr, (size_t)N * D) < 1e-6, "dH differs by %g", rel_diff(dH, dHr, (size_t)N * D));
    /* embeddings of the same ids as input */
    uid_embed_forward(&sh, t, N, e);
    uid_embed_forward(&ref, t, N, er);
    CHECK(rel_diff(e, er, (size_t)N * D) == 0);
    uid_embed_backward(&sh, t, N, H);
    uid_embed_backward(&ref, t, N, H);
    /* the reference's gradients are of this rank's rows only: sum them, compare the owned rows */
    comm_sum_float(ref.arena.grads, (int)ref.arena.total);
    for (int i = 0; i < sh.arena.n; i++) {
        const ParamTensor *ts = &sh.arena.t[i];
        int j = arena_find(&ref.arena, ts->name);
        double r = rel_diff(arena_grad(&sh.arena, i), arena_grad(&ref.arena, j) + sh.lo * D, ts->size);
        CHECK_MSG(r < 1e-6, "%s gradient differs by %g", ts->name, r);
    }
    double sq = uid_grad_sqnorm(&sh), sqr = uid_grad_sqnorm(&ref);
    CHECK_CLOSE(sq, sqr, 1e-5);
    (void)P;
    free(H); free(dH); free(dHr); free(e); free(er);
    uid_free(&sh);
    uid_free(&ref);
}

static void test_uidhead_untied(void) { uidhead_case(0, 0.0f, 0); }
static void test_uidhead_tied(void) { uidhead_case(1, 0.0f, 0); }
static void test_uidhead_label_smoothing(void) { uidhead_case(0, 0.2f, 0), uidhead_case(1, 0.2f, 0); }
/* model.uid_bf16: the sharded head on bf16 operands equals the unsharded one on the same operands */
static void test_uidhead_bf16(void) { uidhead_case(0, 0.0f, 1), uidhead_case(1, 0.2f, 1); }

/* ---------------------------------------------------------------- a small model and data */

enum { USERS = 23, HIST = 6, L = 2 };
static const int K[L] = {5, 7};

static ModelSpec spec(int mode, int local) {
    ModelSpec s = {.levels = L, .n_items = V, .max_chunks = HIST + 1, .d_model = D, .n_layers = 2, .n_heads = 2,
                   .dropout = 0.2f, .fusion = FUSION_SUM, .mode = mode, .alpha = 0.7f, .label_smoothing = 0.1f, .seed = 3, .local_items = local};
    for (int l = 0; l < L; l++) s.codebook[l] = K[l];
    return s;
}

static int32_t *codes(void) {
    int32_t *c = xmalloc(sizeof(int32_t) * V * L);
    for (int i = 0; i < V; i++)
        for (int l = 0; l < L; l++) c[i * L + l] = (int32_t)rng_below(11, (uint64_t)l, (uint64_t)i, (uint64_t)K[l]);
    return c;
}

/* user u: 1 + u % HIST items ... up to HIST + 2 (so every split occurs), ids from the rng */
static int user_len(int u) { return 2 + (u * 5) % (HIST + 1); }
static int32_t user_item(int u, int k) { return (int32_t)rng_below(12, (uint64_t)u, (uint64_t)k, V); }

/* The users [lo, hi) as a slice. */
static void make_slice(int64_t lo, int64_t hi, UserSlice *s) {
    s->lo = lo, s->hi = hi;
    s->offsets = xmalloc(sizeof(int64_t) * (size_t)(hi - lo + 1));
    s->items = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * (HIST + 3) + 1));
    s->offsets[0] = 0;
    for (int64_t u = lo; u < hi; u++) {
        int n = user_len((int)u);
        for (int k = 0; k < n; k++) s->items[s->offsets[u - lo] + k] = user_item((int)u, k);
        s->offsets[u - lo + 1] = s->offsets[u - lo] + n;
    }
}

/* The global batch of step: users step*7 .. step*7+9 (mod USERS), each its first items;
 * part = 1: only this rank's share, a skewed split (low ranks get few or none). */
typedef struct { int B; int len[16]; int32_t items[16 * (HIST + 3)]; int64_t sample[16]; } Batch;
static Batch global_batch(int step, int part) {
    Batch b = {0};
    int n = 10, total = 0, P = comm_size(), r = comm_rank();
    int64_t lo = 0, hi = n;
    if (part) lo = (int64_t)n * r * r / (P * P), hi = (int64_t)n * (r + 1) * (r + 1) / (P * P);
    for (int64_t i = lo; i < hi; i++) {
        int u = (step * 7 + (int)i) % USERS, len = user_len(u) < HIST + 1 ? user_len(u) : HIST + 1;
        for (int k = 0; k < len; k++) b.items[total++] = user_item(u, k);
        b.len[b.B] = len;
        b.sample[b.B++] = u;
    }
    return b;
}

static void train_case(int mode) {
    int32_t *c = codes();
    ModelSpec s = spec(mode, 0), sl = spec(mode, 1);
    Model m, ref;
    model_create(&m, &s, c);
    model_create(&ref, &sl, c);
    GradSync gs; /* small buckets: many in flight at once (step 1 sums in one all-reduce instead) */
    gradsync_init(&gs, &m.params, 100);
    OptimConfig oc;
    optim_defaults(&oc);
    oc.lr = 1e-2, oc.weight_decay = 0.1, oc.grad_clip = 0.5, oc.warmup_steps = 1, oc.total_steps = 3;
    oc.schedule = SCHEDULE_COSINE;
    for (int step = 0; step < 3; step++) {
        Batch part = global_batch(step, 1), all = global_batch(step, 0);
        ModelBatch pb = {part.B, part.len, part.items, part.sample}, ab = {all.B, all.len, all.items, all.sample};
        double g, gr;
        ModelLoss l = train_step(&m, step == 1 ? NULL : &gs, &pb, &oc, step, &g);
        model_zero_grad(&ref); /* the one-rank step, by hand */
        ModelLoss lr = model_forward(&ref, &ab, 1, step, 1.0f / (float)model_count_targets(&ref, &ab));
        model_backward(&ref);
        gr = model_optimizer_step(&ref, &oc, step);
        double sums[4] = {l.loss_sum, l.act_sum, l.think_sum, (double)l.n_loss};
        comm_sum_double(sums, 4);
        CHECK_CLOSE(sums[0], lr.loss_sum, 1e-5);
        CHECK_CLOSE(sums[1], lr.act_sum, 1e-5);
        CHECK_CLOSE(sums[2], lr.think_sum, 1e-5);
        CHECK(sums[3] == (double)lr.n_loss);
        CHECK_CLOSE(g, gr, 1e-5);
    }
    /* replicated: every rank's copy; sharded: the owned rows; values and both moments */
    CHECK(m.params.total == ref.params.total);
    double dp = rel_diff(m.params.params, ref.params.params, m.params.total);
    double dm = rel_diff(m.params.m, ref.params.m, m.params.total), dv = rel_diff(m.params.v, ref.params.v, m.params.total);
    CHECK_MSG(dp < 1e-5 && dm < 1e-5 && dv < 1e-5, "replicated params/m/v differ by %g %g %g", dp, dm, dv);
    const UidHead *u = &m.uid, *ur = &ref.uid;
    for (int i = 0; i < u->arena.n; i++) {
        size_t off = u->arena.t[i].offset, offr = ur->arena.t[i].offset + (size_t)u->lo * D, n = u->arena.t[i].size;
        double a = rel_diff(u->arena.params + off, ur->arena.params + offr, n);
        double b = rel_diff(u->arena.m + off, ur->arena.m + offr, n), v = rel_diff(u->arena.v + off, ur->arena.v + offr, n);
        CHECK_MSG(a < 1e-5 && b < 1e-5 && v < 1e-5, "%s value/m/v differ by %g %g %g", u->arena.t[i].name, a, b, v);
    }
    /* the steps moved the parameters: the comparison is not of the initial values */
    Model fresh;
    model_create(&fresh, &sl, c);
    CHECK(rel_diff(ref.params.params, fresh.params.params, ref.params.total) > 1e-3);
    model_free(&fresh);
    gradsync_free(&gs);
    model_free(&m);
    model_free(&ref);
    free(c);
}

static void test_train_car(void) { train_case(MODE_CAR); }
static void test_train_ar(void) { train_case(MODE_AR); }

/* ---------------------------------------------------------------- evaluation */

/* The metrics by a plain loop: the one-rank model, every user, every item. */
static void reference_metrics(Model *ref, Split split, const EvalOptions *o, MetricSums *out) {
    UserSlice all;
    make_slice(0, USERS, &all);
    memset(out, 0, sizeof *out);
    float h[D], *scores = xmalloc(sizeof(float) * V);
    for (int u = 0; u < USERS; u++) {
        const int32_t *hist;
        int64_t hl;
        int32_t t;
        if (!dataset_split(all.items + all.offsets[u], all.offsets[u + 1] - all.offsets[u], split, o->max_history, &hist,
                           &hl, &t))
            continue;
        int len = (int)hl;
        int64_t sample = u;
        ModelBatch b = {1, &len, hist, &sample};
        model_encode(ref, &b, h);
        model_score_items(ref, h, 1, (float)o->think_weight, o->think_levels, scores);
        int64_t above = 0;
        for (int i = 0; i < V; i++) {
            int in_hist = 0;
            for (int k = 0; k < len && o->filter_history; k++) in_hist |= hist[k] == i && i != t;
            if (!in_hist && i != t && scores[i] >= scores[t]) above++;
        }
        metrics_add(out, above);
    }
    free(scores);
    user_slice_free(&all);
}

static void test_eval(void) {
    int32_t *c = codes();
    ModelSpec s = spec(MODE_CAR, 0), sl = spec(MODE_CAR, 1);
    Model m, ref;
    model_create(&m, &s, c);
    model_create(&ref, &sl, c);
    UserSlice mine;
    int64_t lo, hi;
    comm_split_range(USERS, comm_size(), comm_rank(), &lo, &hi);
    make_slice(lo, hi, &mine);
    for (int variant = 0; variant < 8; variant++) { /* variant & 4: scores of one user at a time */
        EvalOptions o = {.max_history = HIST, .batch_size = 3, .think_weight = variant & 1 ? 0.5 : 0,
                         .think_levels = L, .filter_history = (variant & 2) != 0, .score_floats = variant & 4 ? 1 : 0};
        /* the score block: one user's row, or within its bound (never all users x V) */
        int64_t nv = m.uid.hi - m.uid.lo, block = eval_score_block_floats(&m, &o);
        CHECK(variant & 4 ? block == nv : block <= (EVAL_SCORE_FLOATS > 8 * nv ? EVAL_SCORE_FLOATS : 8 * nv));
        for (int split = SPLIT_VALID; split <= SPLIT_TEST; split++) {
            MetricSums got, want;
            eval_split(&m, &mine, (Split)split, &o, &got);
            reference_metrics(&ref, (Split)split, &o, &want);
            CHECK(got.n == want.n && got.n > 0);
            for (int k = 0; k < METRICS_NK; k++) {
                CHECK_MSG(got.recall[k] == want.recall[k], "variant %d split %d recall@%d %g vs %g", variant, split,
                          metrics_k[k], got.recall[k], want.recall[k]);
                CHECK_CLOSE(got.ndcg[k], want.ndcg[k], 1e-12);
            }
        }
    }
    user_slice_free(&mine);
    model_free(&m);
    model_free(&ref);
    free(c);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_shard");
    RUN_TEST(test_uidhead_untied);
    RUN_TEST(test_uidhead_tied);
    RUN_TEST(test_uidhead_label_smoothing);
    RUN_TEST(test_uidhead_bf16);
    RUN_TEST(test_train_car);
    RUN_TEST(test_train_ar);
    RUN_TEST(test_eval);
    return check_finish();
}
