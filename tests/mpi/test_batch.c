/* batch: the token split is balanced (no rank over total / P + the longest sequence, every rank
 * busy when the batch has P sequences), pure and deterministic; the collective formation gives
 * every sequence of the global batch to exactly one rank, with exactly its training window, in
 * batch order, whoever owns the user; the owner split keeps each rank's own users.
 * Ranks: 1 2 3 8
 */
#include "batch.h"
#include "check.h"
#include "config.h"
#include "rng.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

static int64_t max_load(const int64_t *tokens, const int *rank_of, int n, int P, int64_t *total, int64_t *longest) {
    int64_t *load = xcalloc((size_t)P, sizeof(int64_t)), worst = 0;
    *total = *longest = 0;
    for (int i = 0; i < n; i++) {
        load[rank_of[i]] += tokens[i];
        *total += tokens[i];
        if (tokens[i] > *longest) *longest = tokens[i];
    }
    for (int r = 0; r < P; r++) worst = load[r] > worst ? load[r] : worst;
    free(load);
    return worst;
}

static void test_assign_balanced(void) {
    static const int sizes[] = {0, 1, 2, 5, 37, 256};
    int64_t tokens[256];
    int rank_of[256], again[256];
    for (int P = 1; P <= 9; P++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int n = sizes[k];
            for (int i = 0; i < n; i++) tokens[i] = 4 * (1 + (int64_t)rng_below(3, (uint64_t)P, (uint64_t)i, 21));
            batch_assign_tokens(tokens, n, P, rank_of);
            batch_assign_tokens(tokens, n, P, again);
            int used = 0, in_range = 1;
            for (int i = 0; i < n; i++) in_range &= rank_of[i] >= 0 && rank_of[i] < P;
            CHECK_MSG(in_range, "P %d n %d: a rank out of range", P, n);
            if (!in_range) continue;
            int64_t total, longest, worst = max_load(tokens, rank_of, n, P, &total, &longest);
            CHECK_MSG(worst * P <= total + P * longest, "P %d n %d: max %lld > mean %.1f + longest %lld", P, n,
                      (long long)worst, (double)total / P, (long long)longest);
            CHECK_MSG(!memcmp(rank_of, again, sizeof(int) * (size_t)n), "P %d n %d: not deterministic", P, n);
            for (int r = 0; r < P; r++)
                for (int i = 0; i < n; i++)
                    if (rank_of[i] == r) { used++; break; }
            CHECK_MSG(used == (n < P ? n : P), "P %d n %d: %d ranks busy", P, n, used);
        }
    /* longest first to the least loaded rank, ties to the earlier sequence and the lower rank */
    int64_t t[] = {5, 3, 3, 1};
    batch_assign_tokens(t, 4, 2, rank_of);
    CHECK(rank_of[0] == 0 && rank_of[1] == 1 && rank_of[2] == 1 && rank_of[3] == 0);
}

static void test_split_len(void) {
    int32_t seq[40] = {0};
    for (int h = 1; h <= 25; h += 3)
        for (int64_t n = 0; n < 40; n++)
            for (int s = SPLIT_TRAIN; s <= SPLIT_TEST; s++) {
                const int32_t *hist;
                int64_t hl = 0;
                int32_t tgt;
                int ok = dataset_split(seq, n, (Split)s, h, &hist, &hl, &tgt);
                CHECK_MSG(dataset_split_len(n, (Split)s, h) == (ok ? hl : 0), "n %lld split %d h %d", (long long)n, s, h);
            }
}

enum { U = 101, B = 16, H = 8 };

/* Every user's items on every rank (the test's reference), and this rank's range as a UserSlice. */
typedef struct { int64_t offsets[U + 1]; int32_t items[U * 40]; UserSlice mine; } Fixture;

static void make_fixture(Fixture *fx) {
    fx->offsets[0] = 0;
    for (int u = 0; u < U; u++) {
        int len = 1 + (int)rng_below(5, 1, (uint64_t)u, 40);
        for (int k = 0; k < len; k++) fx->items[fx->offsets[u] + k] = (int32_t)(u * 1000 + k);
        fx->offsets[u + 1] = fx->offsets[u] + len;
    }
    UserSlice *s = &fx->mine;
    comm_split_range(U, comm_size(), comm_rank(), &s->lo, &s->hi);
    s->offsets = xmalloc(sizeof(int64_t) * (size_t)(s->hi - s->lo + 1));
    for (int64_t u = s->lo; u <= s->hi; u++) s->offsets[u - s->lo] = fx->offsets[u] - fx->offsets[s->lo];
    int64_t count = fx->offsets[s->hi] - fx->offsets[s->lo];
    s->items = xmalloc(sizeof(int32_t) * (size_t)(count + 1));
    memcpy(s->items, fx->items + fx->offsets[s->lo], sizeof(int32_t) * (size_t)count);
}

/* This rank's part of one global batch: windows exact, batch order, one rank per sequence, balanced. */
static void check_part(const Fixture *fx, const Batcher *bt, const ModelBatch *b, const int64_t *users, int n, int split) {
    int64_t seen[B] = {0}, tok[2] = {batcher_tokens(bt, b), 0}, at = 0, longest = 0;
    int last = -1;
    for (int k = 0; k < b->B; k++) {
        int i = 0;
        while (i < n && users[i] != b->sample[k]) i++;
        CHECK_MSG(i < n && i > last, "sequence %d (user %lld) not in batch order", k, (long long)b->sample[k]);
        at += b->len[k];
        if (i >= n) continue; /* no return: the collectives below need every rank */
        last = i;
        seen[i]++;
        int64_t u = users[i], hl;
        const int32_t *h;
        int32_t t;
        dataset_split(fx->items + fx->offsets[u], fx->offsets[u + 1] - fx->offsets[u], SPLIT_TRAIN, H, &h, &hl, &t);
        CHECK_MSG(b->len[k] == hl && !memcmp(b->items + at - hl, h, sizeof(int32_t) * (size_t)hl),
                  "user %lld: wrong window", (long long)u);
        if (split == BATCH_SPLIT_OWNER) CHECK(u >= fx->mine.lo && u < fx->mine.hi);
    }
    for (int i = 0; i < n; i++) {
        int64_t u = users[i];
        int64_t len = dataset_split_len(fx->offsets[u + 1] - fx->offsets[u], SPLIT_TRAIN, H);
        int64_t w = model_input_tokens(bt->mode, bt->C, len);
        tok[1] += w;
        longest = w > longest ? w : longest;
    }
    comm_sum_i64(seen, B);
    for (int i = 0; i < n; i++) CHECK_MSG(seen[i] == 1, "position %d trained by %lld ranks", i, (long long)seen[i]);
    double worst = (double)tok[0];
    comm_max_double(&worst, 1);
    if (split == BATCH_SPLIT_TOKENS)
        CHECK_MSG(worst * comm_size() <= (double)tok[1] + comm_size() * (double)longest, "max %.0f tokens, total %lld",
                  worst, (long long)tok[1]);
}

static void test_form(void) {
    Fixture *fx = xcalloc(1, sizeof *fx);
    make_fixture(fx);
    int64_t order[U + 1];
    for (int mode = MODE_CAR; mode <= MODE_AR; mode++)
        for (int split = BATCH_SPLIT_TOKENS; split <= BATCH_SPLIT_OWNER; split++) {
            Batcher bt;
            batcher_init(&bt, B, H, mode, 3, split);
            int64_t n_train = batch_epoch_order(fx->offsets, U, 7, 1 + mode, order);
            for (int64_t s = 0; s * B < n_train; s++) {
                int n = n_train - s * B < B ? (int)(n_train - s * B) : B;
                ModelBatch b = batcher_form(&bt, order + s * B, n, fx->offsets, U, &fx->mine);
                check_part(fx, &bt, &b, order + s * B, n, split);
            }
            ModelBatch b = batcher_form(&bt, order, 2, fx->offsets, U, &fx->mine); /* fewer sequences than ranks */
            check_part(fx, &bt, &b, order, 2, split);
            batcher_free(&bt);
        }
    user_slice_free(&fx->mine);
    free(fx);
}

/* The order is a function of the data and the seed: users without a window left out, each once. */
static void test_epoch_order(void) {
    int64_t offsets[] = {0, 3, 4, 9, 13, 20}, order[6], again[6];
    int64_t n = batch_epoch_order(offsets, 5, 1, 1, order);
    CHECK(n == 3); /* users of 4+ items: 2, 3, 4 */
    int64_t sum = 0;
    for (int i = 0; i < n; i++) sum += order[i];
    CHECK(sum == 9);
    CHECK(batch_epoch_order(offsets, 5, 1, 1, again) == n && !memcmp(order, again, sizeof(int64_t) * (size_t)n));
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_batch");
    RUN_TEST(test_assign_balanced);
    RUN_TEST(test_split_len);
    RUN_TEST(test_epoch_order);
    RUN_TEST(test_form);
    return check_finish();
}
