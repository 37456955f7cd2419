/* metrics: ranks against a sort-based reference, ties against the target, known values. */
#include "check.h"
#include "metrics.h"
#include "rng.h"
#include <stdlib.h>

static void test_known_values(void) {
    MetricSums m = {0};
    metrics_add(&m, 0); /* hit at 1: recall 1, ndcg 1 */
    metrics_add(&m, 4); /* hit at 5: ndcg 1/log2(6) */
    metrics_add(&m, 7); /* only @10 */
    metrics_add(&m, 10);
    double r[METRICS_NK], n[METRICS_NK];
    metrics_mean(&m, r, n);
    CHECK_CLOSE(r[0], 2.0 / 4, 1e-12);
    CHECK_CLOSE(r[1], 3.0 / 4, 1e-12);
    CHECK_CLOSE(n[0], (1.0 + 1.0 / log2(6.0)) / 4, 1e-12);
    CHECK_CLOSE(n[1], (1.0 + 1.0 / log2(6.0) + 1.0 / log2(9.0)) / 4, 1e-12);
}

static void test_count_above_matches_sort(void) {
    enum { N = 200 };
    float s[N];
    for (int trial = 0; trial < 50; trial++) {
        for (int i = 0; i < N; i++) s[i] = (float)rng_below(3, (uint64_t)trial, (uint64_t)i, 40); /* many ties */
        int t = (int)rng_below(4, 0, (uint64_t)trial, N);
        int64_t ref = 0; /* position of t in a sort that puts t after every equal item */
        for (int i = 0; i < N; i++) ref += i != t && s[i] >= s[t];
        CHECK(metrics_count_above(s, N, s[t], t, NULL) == ref);
        /* split into two shards: counts add up */
        int64_t a = metrics_count_above(s, 77, s[t], t < 77 ? t : -1, NULL);
        int64_t b = metrics_count_above(s + 77, N - 77, s[t], t >= 77 ? t - 77 : -1, NULL);
        CHECK(a + b == ref);
    }
    uint8_t skip[4] = {1, 0, 0, 0};
    float v[4] = {9, 1, 5, 5};
    CHECK(metrics_count_above(v, 4, 5, 2, skip) == 1); /* 9 skipped, the other 5 ties against the target */
}

/* A diverged model scores NaN: the old count (> and ==, both false for NaN) gave the target
 * rank 0, i.e. Recall = NDCG = 1. Now a non-finite target is a miss in every shard and any
 * non-finite score of another item counts against the target. */
static void test_count_above_non_finite(void) {
    float s[6] = {1, 2, 3, 4, 5, 6};
    s[2] = NAN;
    CHECK(metrics_count_above(s, 6, s[2], 2, NULL) == 6);
    CHECK(metrics_count_above(s, 6, NAN, -1, NULL) == 6); /* the target lives in another shard */
    CHECK(metrics_count_above(s, 6, INFINITY, -1, NULL) == 6);
    CHECK(metrics_count_above(s, 6, -INFINITY, -1, NULL) == 6);
    CHECK(metrics_count_above(s, 6, s[3], 3, NULL) == 3); /* 5, 6 and the NaN */
    s[0] = -INFINITY;
    CHECK(metrics_count_above(s, 6, s[3], 3, NULL) == 4);
    uint8_t skip[6] = {0, 0, 1, 0, 0, 0};
    CHECK(metrics_count_above(s, 6, s[3], 3, skip) == 3); /* a filtered NaN item does not count */
    MetricSums m = {0};
    metrics_add(&m, metrics_count_above(s, 6, NAN, 1, NULL));
    double r[METRICS_NK], n[METRICS_NK];
    metrics_mean(&m, r, n);
    CHECK(r[0] == 0 && n[0] == 0); /* rank 6 of 6 items: a miss at 5 */
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_metrics");
    RUN_TEST(test_known_values);
    RUN_TEST(test_count_above_matches_sort);
    RUN_TEST(test_count_above_non_finite);
    return check_finish();
}
