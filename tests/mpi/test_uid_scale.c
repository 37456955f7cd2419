/* The UID head at a million items, the size a user outgrowing one machine brings:
 * - the softmax cross-entropy over 2^20 + 3 items, sharded over the ranks, equals the exact value
 *   (long double, from known logits) to 1e-6: the sum of exponentials is accumulated in double
 *   (float lanes of 2^17 terms each were off by ~1e-4); NaN in a logit gives a NaN loss, which
 *   fails that comparison;
 * - a rank's UID tables hold its own items only (memory per rank ~ 1/P), and the logits
 *   workspace stays within uid_work_max whatever the items: a bound below block x items means
 *   fewer rows per block, with the same loss to the last bit and the same gradients.
 * Ranks: 1 2 3 8
 */
#include "check.h"
#include "uidhead.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

enum { N = 4, D = 2, CLASSES = 3 };
static const int64_t V = (1 << 20) + 3;
static const float value[CLASSES] = {0.0f, -2.3f, -0.7f}; /* item i's logit: value[i % 3] */

/* W_u row i = (value[i % 3], 0) and H = (1, 0): every logit is exactly value[i % 3] */
static void set_head(UidHead *u) {
    float *w = uid_head_w(u);
    for (int64_t i = u->lo; i < u->hi; i++) {
        w[(i - u->lo) * D] = value[i % CLASSES];
        w[(i - u->lo) * D + 1] = 0.0f;
    }
}

static int32_t target_of(int n) { return (int32_t)(((int64_t)comm_rank() * 7919 + (int64_t)n * 104729) % V); }

/* sum over the N rows of every rank of log sum_i exp(logit_i) - logit_target, in long double */
static long double exact_loss(void) {
    long double s = 0;
    for (int c = 0; c < CLASSES; c++) s += (long double)((V - c + CLASSES - 1) / CLASSES) * expl((long double)value[c]);
    long double total = 0;
    for (int r = 0; r < comm_size(); r++)
        for (int n = 0; n < N; n++) total += logl(s) - value[(((int64_t)r * 7919 + (int64_t)n * 104729) % V) % CLASSES];
    return total;
}

static double sharded_loss(UidHead *u, float *dH) {
    float H[N * D];
    int32_t t[N];
    for (int n = 0; n < N; n++) H[n * D] = 1.0f, H[n * D + 1] = 0.0f, t[n] = target_of(n);
    memset(dH, 0, sizeof(float) * N * D);
    double loss = uid_head_forward_backward(u, H, t, N, 0.0f, 0.25f, dH);
    comm_sum_double(&loss, 1);
    return loss;
}

static void test_loss_exact_at_a_million_items(void) {
    UidHead u;
    uid_init(&u, V, D, 0, 1, 1);
    u.block = 2; /* two rows per logits block: 2 x 2^20 floats at one rank */
    set_head(&u);
    float dH[N * D];
    double loss = sharded_loss(&u, dH), want = (double)exact_loss();
    CHECK_MSG(fabs(loss - want) <= 1e-6 * want, "loss %.9f, exact %.9f (relative error %.2g)", loss, want,
              fabs(loss - want) / want);
    /* a NaN logit (one item of the last rank) makes the loss NaN, and the comparison above fails */
    if (comm_rank() == comm_size() - 1) uid_head_w(&u)[0] = NAN;
    double bad = sharded_loss(&u, dH);
    CHECK_MSG(isnan(bad) && !(fabs(bad - want) <= 1e-6 * want), "loss with a NaN logit: %g", bad);
    uid_free(&u);
}

static void test_memory_per_rank(void) {
    UidHead u;
    uid_init(&u, V, D, 0, 1, 1);
    int64_t mine = u.hi - u.lo, most = (V + comm_size() - 1) / comm_size();
    CHECK(mine <= most && mine >= V / comm_size());
    CHECK(u.arena.total == (size_t)(2 * mine * D)); /* uid_emb and uid_head, this rank's rows only */
    /* a workspace bound of 3 rows' logits: the blocks shrink to 3 rows, the results do not change */
    UidHead b;
    uid_init(&b, V, D, 0, 1, 1);
    b.work_max = (size_t)(3 * most);
    set_head(&u);
    set_head(&b);
    float dH[N * D], dHb[N * D];
    double l = sharded_loss(&u, dH), lb = sharded_loss(&b, dHb);
    CHECK_MSG(b.work_cap <= b.work_max, "workspace %zu floats, bound %zu", b.work_cap, b.work_max);
    CHECK_MSG(u.work_cap > b.work_max, "the default workspace (%zu floats) does not exercise the bound", u.work_cap);
    CHECK_MSG(l == lb, "loss %.17g with 3-row blocks, %.17g with %d", lb, l, u.block);
    double r = check_rel_diff(dHb, dH, N * D, 1);
    CHECK_MSG(r < 1e-6, "dH differs by %g", r);
    r = check_rel_diff(arena_grad(&b.arena, b.head), arena_grad(&u.arena, u.head), mine * D, 1);
    CHECK_MSG(r < 1e-6, "dW_u differs by %g", r);
    uid_free(&u);
    uid_free(&b);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_uid_scale");
    RUN_TEST(test_loss_exact_at_a_million_items);
    RUN_TEST(test_memory_per_rank);
    return check_finish();
}
