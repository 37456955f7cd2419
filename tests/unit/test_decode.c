/* decode, trie, beam: the SID trie against the codes; KV-cache decoding against recomputation
 * and against the model's own forward (logits to 1e-5 at every step, several users and beams,
 * every fusion mode); beam search against exhaustive scoring of every item's joint log-prob when
 * the beam holds every prefix; list invariants (in the trie, distinct, best first, exclusions);
 * the car top-K against sorting every item's score. One rank, private (unsharded) models. */
#include "beam.h"
#include "check.h"
#include "decode.h"
#include "eval_ar.h"
#include "rng.h"
#include "trie.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

#define V 40
#define NU 4
static const int K3[3] = {3, 4, 2};

static int32_t *make_codes(int L, const int *K, uint64_t seed) {
    int32_t *c = xmalloc(sizeof(int32_t) * V * (L ? L : 1));
    for (int i = 0; i < V; i++)
        for (int l = 0; l < L; l++) c[i * L + l] = (int32_t)rng_below(seed, (uint64_t)l, (uint64_t)i, (uint64_t)K[l]);
    return c;
}

static void make_model(Model *m, int mode, int L, int fusion, const int32_t *codes) {
    ModelSpec s = {.levels = L, .n_items = V, .max_chunks = 6, .d_model = 8, .n_layers = 2, .n_heads = 2,
                   .fusion = fusion, .level_embedding = 1, .mode = mode, .alpha = 1, .seed = 5, .local_items = 1};
    for (int l = 0; l < L; l++) s.codebook[l] = K3[l];
    model_create(m, &s, codes);
    /* far from the initialisation, so that every term matters */
    for (int i = 0; i < m->params.n; i++)
        for (size_t k = 0; k < m->params.t[i].size; k++)
            arena_param(&m->params, i)[k] += (float)(0.3 * rng_normal(77, (uint64_t)i, k));
    for (size_t k = 0; k < m->uid.arena.total; k++) m->uid.arena.params[k] = (float)(0.5 * rng_normal(78, 0, k));
}

/* users' histories: lengths 3, 1, 5, 2 */
static const int hist_len[NU] = {3, 1, 5, 2};
static void make_histories(int32_t *items, int *len) {
    int n = 0;
    for (int u = 0; u < NU; u++) {
        len[u] = hist_len[u];
        for (int j = 0; j < len[u]; j++, n++) items[n] = (int32_t)rng_below(9, (uint64_t)u, (uint64_t)j, V);
    }
}

/* A model, its trie and the users' histories. */
typedef struct {
    int32_t *codes;
    Model m;
    Trie t;
    int32_t items[16];
    int len[NU];
    ModelBatch b;
} Fixture;

static void fixture_open(Fixture *f, int mode, int L, int fusion) {
    f->codes = make_codes(L, K3, 3);
    make_model(&f->m, mode, L, fusion, f->codes);
    trie_build(&f->t, f->codes, V, L);
    make_histories(f->items, f->len);
    f->b = (ModelBatch){NU, f->len, f->items, NULL};
}

static void fixture_close(Fixture *f) {
    trie_free(&f->t);
    model_free(&f->m);
    free(f->codes);
}

static void test_trie(void) {
    for (int L = 0; L <= 3; L++) {
        int32_t *codes = make_codes(L, K3, 3);
        Trie t;
        trie_build(&t, codes, V, L);
        CHECK(trie_nodes(&t, 0) == 1);
        int64_t count;
        trie_items(&t, 0, 0, &count);
        CHECK(count == V);
        for (int i = 0; i < V; i++) { /* reachable, and the leaf holds exactly the items of its tuple */
            int64_t leaf = trie_node_of(&t, i, L);
            CHECK(leaf >= 0);
            if (leaf < 0) continue;
            const int32_t *it = trie_items(&t, L, leaf, &count);
            int found = 0, same = 0;
            for (int j = 0; j < V; j++) same += !memcmp(codes + j * L, codes + i * L, sizeof(int32_t) * L);
            for (int64_t k = 0; k < count; k++) {
                found += it[k] == i;
                CHECK(!memcmp(codes + it[k] * L, codes + i * L, sizeof(int32_t) * L));
                if (k) CHECK(it[k - 1] < it[k]);
            }
            CHECK(found == 1 && same == count);
        }
        for (int l = 0; l < L; l++) /* children: the distinct codes that follow the prefix, ascending */
            for (int64_t n = 0; n < trie_nodes(&t, l); n++) {
                int64_t first, nc = trie_children(&t, l, n, &first), cnt;
                const int32_t *it = trie_items(&t, l, n, &cnt);
                int seen[4] = {0}, distinct = 0;
                for (int64_t k = 0; k < cnt; k++) distinct += !seen[codes[it[k] * L + l]]++;
                CHECK(nc == distinct);
                for (int64_t c = 0; c < nc; c++) {
                    CHECK(seen[trie_code(&t, l + 1, first + c)] > 0);
                    if (c) CHECK(trie_code(&t, l + 1, first + c - 1) < trie_code(&t, l + 1, first + c));
                }
            }
        int32_t bad[3] = {K3[0], 0, 0};
        if (L) CHECK(trie_find(&t, bad, 1) == -1);
        trie_free(&t);
        free(codes);
    }
}

/* Reference hidden states: model_forward (ar) on [history, item], rows of the item's tokens. */
static void reference_hidden(Model *m, const int32_t *hist, int n, int32_t item, float *h /* (L+1, d) */) {
    int32_t seq[8];
    memcpy(seq, hist, sizeof(int32_t) * n);
    seq[n] = item;
    int len = n + 1;
    ModelBatch b = {1, &len, seq, NULL};
    model_forward(m, &b, 0, 0, 0.0f);
    int d = m->spec.d_model, C = m->C;
    /* row n C - 1 + k predicts level k (k = L: the UID) */
    memcpy(h, model_hidden(m) + (size_t)(n * C - 1) * d, sizeof(float) * (size_t)(m->spec.levels + 1) * d);
}

/* logits (of the level that h predicts) of R hidden rows */
static void logits(const Model *m, const float *h, int R, int level, float *out) {
    if (level < m->spec.levels) model_think_logits(m, h, R, level, out);
    else uid_head_scores(&m->uid, h, R, out);
}

static void check_decode(int fusion) {
    int L = 3, d = 8;
    int32_t *codes = make_codes(L, K3, 3);
    Model m;
    make_model(&m, MODE_AR, L, fusion, codes);
    int32_t items[16];
    int len[NU];
    make_histories(items, len);
    ModelBatch b = {NU, len, items, NULL};
    /* beams: 3 per user, item (u * 7 + j * 5) % V's codes; at step k beam r continues beam r */
    int R = NU * 3, parent[NU * 3];
    int32_t item_of[NU * 3], code[NU * 3];
    for (int r = 0; r < R; r++) item_of[r] = (int32_t)((r / 3 * 7 + r % 3 * 5) % V);
    Decoder dc[2];
    float h0[2][NU * 8], h[2][NU * 3 * 8], lg[2][NU * 3 * V];
    double worst = 0;
    int nan_caught = 1;
    for (int c = 0; c < 2; c++) {
        decoder_init(&dc[c], &m, c == 0);
        decoder_prefill(&dc[c], &b, h0[c]);
    }
    float ref[NU * 3][4 * 8];
    for (int r = 0, off = 0; r < R; r++) {
        int u = r / 3;
        off = 0;
        for (int q = 0; q < u; q++) off += len[q];
        reference_hidden(&m, items + off, len[u], item_of[r], ref[r]);
        if (r % 3 == 0) worst = check_max(worst, check_rel_diff(h0[0] + u * d, ref[r], d, 1.0));
    }
    int beam_ref[NU * 3], next_ref[NU * 3]; /* the reference row each beam follows */
    for (int r = 0; r < R; r++) beam_ref[r] = r;
    for (int k = 0; k < L; k++) {
        for (int r = 0; r < R; r++) { /* the beams of a user rotate each step: parents move */
            parent[r] = k ? r / 3 * 3 + (r % 3 + k) % 3 : r / 3;
            next_ref[r] = k ? beam_ref[parent[r]] : r;
            code[r] = codes[item_of[next_ref[r]] * L + k];
        }
        memcpy(beam_ref, next_ref, sizeof beam_ref);
        for (int c = 0; c < 2; c++) {
            decoder_step(&dc[c], R, parent, code, h[c]);
            logits(&m, h[c], R, k + 1, lg[c]);
        }
        int K = k + 1 < L ? K3[k + 1] : V;
        float want[NU * 3 * V];
        for (int r = 0; r < R; r++) logits(&m, ref[beam_ref[r]] + (k + 1) * d, 1, k + 1, want + r * K);
        worst = check_max(worst, check_rel_diff(lg[0], want, R * K, 1.0));
        worst = check_max(worst, check_rel_diff(lg[1], want, R * K, 1.0));
        nan_caught &= check_nan_detected(lg[0], want, R * K, 1.0, 1e-5);
    }
    CHECK_MSG(worst <= 1e-5, "fusion %d: cached / recomputed / model logits differ by %g", fusion, worst);
    CHECK(nan_caught);
    for (int c = 0; c < 2; c++) decoder_free(&dc[c]);
    model_free(&m);
    free(codes);
}

static void test_decode_sum(void) { check_decode(FUSION_SUM); }
static void test_decode_mean(void) { check_decode(FUSION_MEAN); }
static void test_decode_none(void) { check_decode(FUSION_NONE); }

/* Every item's joint log-prob for one history, by brute force: the model's forward on
 * [history, item], each level's softmax over the codes that items sharing the prefix have. */
static void exhaustive(Model *m, const int32_t *hist, int n, float *joint) {
    int L = m->spec.levels, d = m->spec.d_model;
    for (int x = 0; x < V; x++) {
        float h[4 * 8], lg[V];
        reference_hidden(m, hist, n, x, h);
        double lp = 0;
        for (int k = 0; k <= L; k++) {
            logits(m, h + k * d, 1, k, lg);
            int K = k < L ? K3[k] : V;
            int valid[V] = {0};
            for (int y = 0; y < V; y++)
                if (!memcmp(m->codes + y * L, m->codes + x * L, sizeof(int32_t) * k))
                    valid[k < L ? m->codes[y * L + k] : y] = 1;
            double mx = -INFINITY, sum = 0;
            for (int c = 0; c < K; c++) if (valid[c]) mx = fmax(mx, lg[c]);
            for (int c = 0; c < K; c++) if (valid[c]) sum += exp(lg[c] - mx);
            lp += lg[k < L ? m->codes[x * L + k] : x] - mx - log(sum);
        }
        joint[x] = (float)lp;
    }
}

static int cmp_desc(const void *a, const void *b, void *s_) {
    const float *s = s_;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (s[x] != s[y]) return s[x] > s[y] ? -1 : 1;
    return x - y;
}

/* invariants of every list: items in range, distinct, best first, none excluded */
static void check_lists(const RecLists *l, const int64_t *excl_off, const int32_t *excl) {
    for (int u = 0; u < l->B; u++)
        for (int i = 0; i < l->n[u]; i++) {
            int32_t it = l->items[u * l->K + i];
            CHECK(it >= 0 && it < V);
            for (int j = 0; j < i; j++) CHECK(l->items[u * l->K + j] != it);
            if (i) CHECK(l->scores[u * l->K + i - 1] >= l->scores[u * l->K + i]);
            for (int64_t e = excl_off ? excl_off[u] : 0; excl_off && e < excl_off[u + 1]; e++) CHECK(excl[e] != it);
        }
}

static void check_beam(int L, int use_cache) {
    Fixture f;
    fixture_open(&f, MODE_AR, L, FUSION_SUM);
    Model *m = &f.m;
    Trie *t = &f.t;
    int32_t *items = f.items;
    int *len = f.len;
    ModelBatch b = f.b;
    int64_t most = 1;
    for (int l = 0; l <= L; l++) most = trie_nodes(t, l) > most ? trie_nodes(t, l) : most;
    RecOptions o = {.K = 10, .beam = (int)most, .use_cache = use_cache};
    Recommender rc;
    recommender_init(&rc, m, t, &o);
    RecLists lists = {0};
    recommend_batch(&rc, &b, NULL, NULL, &lists);
    check_lists(&lists, NULL, NULL);
    double worst = 0;
    for (int u = 0, off = 0; u < NU; off += len[u++]) {
        float joint[V];
        int32_t order[V];
        exhaustive(m, items + off, len[u], joint);
        for (int x = 0; x < V; x++) order[x] = x;
        qsort_r(order, V, sizeof(int32_t), cmp_desc, joint);
        CHECK(lists.n[u] == 10);
        for (int i = 0; i < lists.n[u]; i++) {
            CHECK_MSG(lists.items[u * 10 + i] == order[i], "L %d user %d place %d: beam %d, exhaustive %d", L, u, i,
                      lists.items[u * 10 + i], order[i]);
            worst = check_max(worst, fabs(lists.scores[u * 10 + i] - joint[order[i]]));
        }
    }
    CHECK_MSG(worst <= 1e-4, "joint log-probs differ by %g", worst);
    /* a narrow beam: shorter lists are fine, but every item valid, distinct, ordered; exclusions hold */
    int64_t excl_off[NU + 1] = {0, 2, 2, 3, 3};
    int32_t excl[3] = {lists.items[0], lists.items[1], lists.items[2 * 10]};
    rc.o.beam = 1;
    recommend_batch(&rc, &b, excl_off, excl, &lists);
    check_lists(&lists, excl_off, excl);
    for (int u = 0; u < NU; u++) CHECK(lists.n[u] <= 10 && (lists.n[u] >= 1 || excl_off[u + 1] > excl_off[u]));
    rec_lists_free(&lists);
    recommender_free(&rc);
    fixture_close(&f);
}

static void test_beam_exact_L2(void) { check_beam(2, 1); }
static void test_beam_exact_L3_nocache(void) { check_beam(3, 0); }
static void test_beam_exact_L0(void) { check_beam(0, 1); }

/* car: the list is the top of model_score_items (fast and slow thinking), ties by id */
static void test_car_topk(void) {
    int L = 3, d = 8;
    Fixture f;
    fixture_open(&f, MODE_CAR, L, FUSION_SUM);
    Model *m = &f.m;
    ModelBatch b = f.b;
    for (int slow = 0; slow < 2; slow++) {
        RecOptions o = {.K = 7, .think_weight = slow ? 0.5f : 0.0f, .think_levels = L};
        Recommender rc;
        recommender_init(&rc, m, &f.t, &o);
        RecLists lists = {0};
        recommend_batch(&rc, &b, NULL, NULL, &lists);
        float H[NU * 8], S[NU * V];
        model_encode(m, &b, H);
        model_score_items(m, H, NU, o.think_weight, L, S);
        for (int u = 0; u < NU; u++) {
            int32_t order[V];
            for (int x = 0; x < V; x++) order[x] = x;
            qsort_r(order, V, sizeof(int32_t), cmp_desc, S + u * V);
            CHECK(lists.n[u] == 7);
            for (int i = 0; i < 7; i++) CHECK(lists.items[u * 7 + i] == order[i]);
            /* reasons: the think head's probability of the item's code, and its rank */
            for (int l = 0; l < L; l++) {
                float lg[4];
                model_think_logits(m, H + u * d, 1, l, lg);
                double z = 0;
                for (int c = 0; c < K3[l]; c++) z += exp(lg[c]);
                int code = f.codes[lists.items[u * 7] * L + l], rank = 1;
                for (int c = 0; c < K3[l]; c++) rank += lg[c] > lg[code];
                CHECK_CLOSE(lists.code_prob[(u * 7) * L + l], exp(lg[code]) / z, 1e-5);
                CHECK(lists.code_rank[(u * 7) * L + l] == rank);
            }
        }
        rec_lists_free(&lists);
        recommender_free(&rc);
    }
    fixture_close(&f);
}

static void test_eval_rank(void) {
    int32_t it[4] = {5, 2, 9, 1};
    float sc[4] = {-1, -2, -2, NAN};
    CHECK(eval_ar_rank(it, sc, 4, 5, 10) == 1); /* another item's NaN counts against the target */
    CHECK(eval_ar_rank(it, sc, 4, 2, 10) == 3); /* 5 above, 9 ties (against the target), the NaN */
    CHECK(eval_ar_rank(it, sc, 4, 7, 10) == 10); /* not listed: a miss */
    CHECK(eval_ar_rank(it, sc, 4, 1, 10) == 10); /* NaN score: a miss */
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_decode");
    RUN_TEST(test_trie);
    RUN_TEST(test_decode_sum);
    RUN_TEST(test_decode_mean);
    RUN_TEST(test_decode_none);
    RUN_TEST(test_beam_exact_L2);
    RUN_TEST(test_beam_exact_L3_nocache);
    RUN_TEST(test_beam_exact_L0);
    RUN_TEST(test_car_topk);
    RUN_TEST(test_eval_rank);
    return check_finish();
}
