/* Per-user ranks (eval_split_write_ranks): the file holds, for every user of the data in user
 * order, the rank of its target among all items that a plain loop over a one-rank copy of the
 * model gives (-1 for users without a target in the split), so the same file for every rank
 * count (a rank with no users included); its metrics are eval_split's.
 * Ranks: 1 2 3 4
 */
#include "check.h"
#include "eval.h"
#include "model.h"
#include "rng.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { V = 41, D = 8, USERS = 29, HIST = 5, L = 2 };
static const int K[L] = {4, 6};

static ModelSpec spec(int local) {
    ModelSpec s = {.levels = L, .n_items = V, .max_chunks = HIST + 1, .d_model = D, .n_layers = 1, .n_heads = 2,
                   .dropout = 0.1f, .fusion = FUSION_SUM, .mode = MODE_CAR, .alpha = 1.0f, .seed = 7, .local_items = local};
    for (int l = 0; l < L; l++) s.codebook[l] = K[l];
    return s;
}

/* Every user's items, CSR: user u has 1 .. HIST + 3 items (users of 1 or 2 items have no valid
 * or test target); a rank's slice points into these arrays. */
static int64_t all_off[USERS + 1];
static int32_t all_items[USERS * (HIST + 3)];

static void make_users(void) {
    for (int u = 0; u < USERS; u++) {
        int n = 1 + (u * 3) % (HIST + 3);
        all_off[u + 1] = all_off[u] + n;
        for (int k = 0; k < n; k++) all_items[all_off[u] + k] = (int32_t)rng_below(21, (uint64_t)u, (uint64_t)k, V);
    }
}

static UserSlice slice_of(int64_t lo, int64_t hi) {
    UserSlice s = {lo, hi, xmalloc(sizeof(int64_t) * (size_t)(hi - lo + 1)), all_items + all_off[lo]};
    for (int64_t u = lo; u <= hi; u++) s.offsets[u - lo] = all_off[u] - all_off[lo];
    return s;
}

/* The rank of every user's target by a plain loop over all items of the one-rank model. */
static void reference_ranks(Model *ref, Split split, const EvalOptions *o, int32_t *rank) {
    float h[D], scores[V];
    for (int u = 0; u < USERS; u++) {
        const int32_t *hist;
        int64_t hl, sample = u;
        int32_t t;
        rank[u] = -1;
        if (!dataset_split(all_items + all_off[u], all_off[u + 1] - all_off[u], split, o->max_history, &hist, &hl, &t))
            continue;
        int len = (int)hl;
        ModelBatch b = {1, &len, hist, &sample};
        model_encode(ref, &b, h);
        model_score_items(ref, h, 1, (float)o->think_weight, o->think_levels, scores);
        rank[u] = 0;
        for (int i = 0; i < V; i++) rank[u] += i != t && scores[i] >= scores[t];
    }
}

/* rank 0 reads the file back; n = the number of int32 it holds */
static int32_t *read_ranks(const char *path, int64_t *n) {
    FILE *f = fopen(path, "rb");
    int32_t *r = xmalloc(sizeof(int32_t) * (USERS + 8));
    *n = f ? (int64_t)fread(r, sizeof(int32_t), USERS + 8, f) : -1;
    if (f) fclose(f);
    return r;
}

/* a fresh directory made by rank 0, its name on every rank */
static char *tmp_dir(void) {
    char name[64] = "/tmp/car_ranks_XXXXXX";
    if (comm_rank() == 0 && !mkdtemp(name)) abort();
    comm_bcast(name, sizeof name, 0);
    return xstrdup(name);
}

static void test_ranks_file(void) {
    int32_t *c = xmalloc(sizeof(int32_t) * V * L);
    for (int i = 0; i < V * L; i++) c[i] = (int32_t)rng_below(5, 0, (uint64_t)i, (uint64_t)K[i % L]);
    ModelSpec s = spec(0), sl = spec(1);
    Model m, ref;
    model_create(&m, &s, c);
    model_create(&ref, &sl, c);
    UserSlice mine; /* the last rank holds no users when P > 1 */
    int P = comm_size(), r = comm_rank();
    int64_t lo, hi;
    comm_split_range(USERS, P > 1 ? P - 1 : 1, r < P - 1 || P == 1 ? r : P - 2, &lo, &hi);
    if (P > 1 && r == P - 1) lo = hi = USERS;
    mine = slice_of(lo, hi);
    char *dir = tmp_dir();
    for (int variant = 0; variant < 2; variant++) {
        EvalOptions o = {.max_history = HIST, .batch_size = 4, .think_weight = variant ? 0.5 : 0, .think_levels = L,
                         .filter_history = 0};
        for (int split = SPLIT_VALID; split <= SPLIT_TEST; split++) {
            MetricSums got, plain;
            eval_split_write_ranks(&m, &mine, (Split)split, &o, &got, dir);
            eval_split(&m, &mine, (Split)split, &o, &plain);
            int32_t want[USERS];
            reference_ranks(&ref, (Split)split, &o, want); /* on every rank: the encoder may communicate */
            if (r != 0) continue;
            char *path = eval_ranks_path(dir, (Split)split);
            int64_t n;
            int32_t *file = read_ranks(path, &n);
            CHECK_MSG(n == USERS, "%s holds %lld ranks, expected %d", path, (long long)n, USERS);
            int differ = 0, none = 0;
            MetricSums from_file = {0};
            for (int u = 0; u < USERS && n == USERS; u++) {
                differ += file[u] != want[u];
                none += file[u] == -1;
                if (file[u] >= 0) metrics_add(&from_file, file[u]);
            }
            CHECK_MSG(differ == 0, "variant %d split %d: %d users' ranks differ from the plain loop", variant, split, differ);
            CHECK(none > 0 && none < USERS); /* both kinds of users occur */
            CHECK(got.n == plain.n && got.n == from_file.n && got.n == USERS - none);
            for (int k = 0; k < METRICS_NK; k++) {
                CHECK(got.recall[k] == plain.recall[k] && got.ndcg[k] == plain.ndcg[k]);
                CHECK(from_file.recall[k] == got.recall[k]);
                CHECK_CLOSE(from_file.ndcg[k], got.ndcg[k], 1e-12);
            }
            free(file);
            free(path);
        }
    }
    if (r == 0) {
        char *v = eval_ranks_path(dir, SPLIT_VALID), *t = eval_ranks_path(dir, SPLIT_TEST);
        remove(v), remove(t), rmdir(dir);
        free(v), free(t);
    }
    free(dir);
    free(mine.offsets);
    model_free(&m);
    model_free(&ref);
    free(c);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_eval_ranks");
    make_users();
    RUN_TEST(test_ranks_file);
    return check_finish();
}
