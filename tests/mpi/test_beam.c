/* beam: recommendation lists do not depend on the number of ranks. A sharded model (items split
 * over the ranks) gives every rank's users exactly the lists a private copy of the whole model
 * gives them alone (items identical, ties by id; scores to 1e-5), for ar beam search (cached and
 * recomputed, narrow and wide beams, exclusions) and car (fast and slow), and eval_ar_split
 * gives the same metrics.
 * Ranks: 1 2 3 4
 */
#include "beam.h"
#include "check.h"
#include "eval_ar.h"
#include "rng.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

#define V 60
#define NU 11
static const int K3[3] = {4, 3, 3};

static void make_model(Model *m, int mode, int local, const int32_t *codes) {
    ModelSpec s = {.levels = 3, .codebook = {4, 3, 3}, .n_items = V, .max_chunks = 8, .d_model = 8, .n_layers = 2,
                   .n_heads = 2, .fusion = FUSION_SUM, .mode = mode, .alpha = 1, .seed = 9, .local_items = local};
    model_create(m, &s, codes);
    ParamArena *a = &m->params; /* replicated: the same perturbation on every rank */
    for (int i = 0; i < a->n; i++)
        for (size_t k = 0; k < a->t[i].size; k++) arena_param(a, i)[k] += (float)(0.3 * rng_normal(3, (uint64_t)i, k));
    float *u = m->uid.arena.params; /* sharded rows: a scaling is the same whatever the split */
    for (size_t k = 0; k < m->uid.arena.total; k++) u[k] *= 40.0f;
}

/* user u: 3 + u % 5 items */
static void users(UserSlice *s) {
    int64_t lo, hi;
    comm_split_range(NU, comm_size(), comm_rank(), &lo, &hi);
    s->lo = lo;
    s->hi = hi;
    s->offsets = xmalloc(sizeof(int64_t) * (size_t)(hi - lo + 1));
    s->items = xmalloc(sizeof(int32_t) * 8 * NU);
    s->offsets[0] = 0;
    for (int64_t u = lo; u < hi; u++) {
        int n = 3 + (int)(u % 5);
        for (int j = 0; j < n; j++) s->items[s->offsets[u - lo] + j] = (int32_t)rng_below(4, (uint64_t)u, (uint64_t)j, V);
        s->offsets[u - lo + 1] = s->offsets[u - lo] + n;
    }
}

static void compare(int mode, RecOptions o, int with_excl, const int32_t *codes) {
    Model sh, loc;
    make_model(&sh, mode, 0, codes);
    make_model(&loc, mode, 1, codes);
    Trie t;
    trie_build(&t, codes, V, 3);
    UserSlice us;
    users(&us);
    int B = (int)(us.hi - us.lo), len[NU];
    for (int b = 0; b < B; b++) len[b] = (int)(us.offsets[b + 1] - us.offsets[b]);
    int64_t excl_off[NU + 1];
    for (int b = 0; b <= B; b++) excl_off[b] = with_excl ? us.offsets[b] : 0; /* the whole history */
    ModelBatch batch = {B, len, us.items, NULL};
    Recommender r1, r2;
    recommender_init(&r1, &sh, &t, &o);
    recommender_init(&r2, &loc, &t, &o);
    RecLists a = {0}, b = {0};
    recommend_batch(&r1, &batch, excl_off, us.items, &a);
    recommend_batch(&r2, &batch, excl_off, us.items, &b);
    double worst = 0;
    for (int u = 0; u < B; u++) {
        CHECK_MSG(a.n[u] == b.n[u], "user %lld: %d items at P = %d, %d alone", (long long)us.lo + u, a.n[u], comm_size(),
                  b.n[u]);
        CHECK(a.n[u] >= 1);
        for (int i = 0; i < a.n[u] && i < b.n[u]; i++)
            CHECK_MSG(a.items[u * o.K + i] == b.items[u * o.K + i], "user %lld place %d: %d at P = %d, %d alone",
                      (long long)us.lo + u, i, a.items[u * o.K + i], comm_size(), b.items[u * o.K + i]);
        worst = check_max(worst, check_rel_diff(a.scores + u * o.K, b.scores + u * o.K, a.n[u], 1.0));
        worst = check_max(worst, check_rel_diff(a.code_prob + u * o.K * 3, b.code_prob + u * o.K * 3, a.n[u] * 3, 1.0));
    }
    CHECK_MSG(worst <= 1e-5, "scores differ by %g", worst);
    if (mode == MODE_AR) { /* the evaluation: metrics summed over ranks equal the private model's */
        EvalOptions eo = {.max_history = 7, .batch_size = 2, .filter_history = with_excl};
        MetricSums ms, ml;
        eval_ar_split(&sh, &us, SPLIT_TEST, &eo, o.beam, &ms);
        eval_ar_split(&loc, &us, SPLIT_TEST, &eo, o.beam, &ml);
        CHECK(ms.n == ml.n && ms.n == NU);
        for (int k = 0; k < METRICS_NK; k++) CHECK(ms.recall[k] == ml.recall[k] && ms.ndcg[k] == ml.ndcg[k]);
    }
    rec_lists_free(&a); rec_lists_free(&b);
    recommender_free(&r1); recommender_free(&r2);
    user_slice_free(&us);
    trie_free(&t);
    model_free(&sh); model_free(&loc);
}

static int32_t *codes(void) {
    static int32_t c[V * 3];
    for (int i = 0; i < V; i++)
        for (int l = 0; l < 3; l++) c[i * 3 + l] = (int32_t)rng_below(2, (uint64_t)l, (uint64_t)i, (uint64_t)K3[l]);
    return c;
}

static void test_ar_narrow(void) { compare(MODE_AR, (RecOptions){.K = 10, .beam = 2, .use_cache = 1}, 0, codes()); }
static void test_ar_wide(void) { compare(MODE_AR, (RecOptions){.K = 10, .beam = 20, .use_cache = 1}, 0, codes()); }
static void test_ar_nocache_excl(void) { compare(MODE_AR, (RecOptions){.K = 5, .beam = 6, .use_cache = 0}, 1, codes()); }
static void test_car_fast(void) { compare(MODE_CAR, (RecOptions){.K = 10}, 0, codes()); }
static void test_car_slow_excl(void) { compare(MODE_CAR, (RecOptions){.K = 8, .think_weight = 0.5f, .think_levels = 3}, 1, codes()); }

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_beam");
    RUN_TEST(test_ar_narrow);
    RUN_TEST(test_ar_wide);
    RUN_TEST(test_ar_nocache_excl);
    RUN_TEST(test_car_fast);
    RUN_TEST(test_car_slow_excl);
    return check_finish();
}
