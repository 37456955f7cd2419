/* The control codes of sid.method (src/sid.c): random codes cover each level's range uniformly
 * and are a pure function of the seed and the item; LSH codes equal a plain serial computation
 * (so they are the same for every rank count), and items of one tight cluster share longer
 * code prefixes than random pairs; the residual-chain centroids are the means of their items
 * and never increase the quantisation error.
 * Ranks: 1 2 3
 */
#include "check.h"
#include "rng.h"
#include "sid.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

enum { N = 600, DIM = 16, BLOBS = 30, L = 3 };
static const int K[L] = {16, 8, 4};

/* item i: blob i % BLOBS plus a little noise; not centred (every coordinate offset by 0.5) */
static float item_x(int i, int c) {
    return (float)(0.5 + rng_normal(3, 1, (uint64_t)((i % BLOBS) * DIM + c)) + 0.05 * rng_normal(3, 2, (uint64_t)(i * DIM + c)));
}

static void my_rows(int64_t *lo, int64_t *hi, float **x) {
    comm_split_range(N, comm_size(), comm_rank(), lo, hi);
    *x = xmalloc(sizeof(float) * (size_t)((*hi - *lo) * DIM + 1));
    for (int64_t i = *lo; i < *hi; i++)
        for (int c = 0; c < DIM; c++) (*x)[(i - *lo) * DIM + c] = item_x((int)i, c);
}

/* all ranks' codes, in item order, on every rank */
static int32_t *gather(const int32_t *mine, int64_t n_local) {
    int32_t *all = xmalloc(sizeof(int32_t) * N * L);
    comm_allgatherv_bytes(mine, n_local * L, all, sizeof(int32_t));
    return all;
}

static void test_random(void) {
    int64_t lo, hi;
    float *x;
    my_rows(&lo, &hi, &x);
    int32_t *a = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * L + 1)), *b = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * L + 1));
    sid_random_codes(lo, hi - lo, L, K, 5, a);
    int32_t *all = gather(a, hi - lo), *one = xmalloc(sizeof(int32_t) * N * L);
    sid_random_codes(0, N, L, K, 5, one); /* the whole range at once: the same codes */
    CHECK(memcmp(all, one, sizeof(int32_t) * N * L) == 0);
    sid_random_codes(lo, hi - lo, L, K, 6, b);
    int64_t same = 0;
    for (int64_t j = 0; j < (hi - lo) * L; j++) same += a[j] == b[j];
    comm_sum_i64(&same, 1);
    CHECK_MSG(same < N * L / 3, "another seed keeps %lld of %d codes", (long long)same, N * L);
    for (int l = 0; l < L; l++) { /* every code of the level occurs, none far more than N / K */
        int count[16] = {0}, bad = 0;
        for (int i = 0; i < N; i++) {
            int code = one[i * L + l];
            if (code < 0 || code >= K[l]) bad++;
            else count[code]++;
        }
        CHECK_MSG(bad == 0, "level %d: %d codes outside 0..%d", l, bad, K[l] - 1);
        for (int k = 0; k < K[l]; k++) CHECK_MSG(count[k] > 0 && count[k] < 3 * N / K[l], "level %d code %d: %d items", l, k, count[k]);
    }
    free(a); free(b); free(all); free(one); free(x);
}

/* The LSH codes by a serial loop over all items (mean in long double). */
static void lsh_reference(int32_t *codes, double *margin) {
    long double mean[DIM] = {0};
    for (int i = 0; i < N; i++)
        for (int c = 0; c < DIM; c++) mean[c] += item_x(i, c);
    for (int i = 0; i < N; i++) {
        margin[i] = 1e30;
        for (int l = 0, j = 0; l < L; l++) {
            int code = 0, bits = (int)lround(log2(K[l]));
            for (int b = 0; b < bits; b++, j++) {
                double p = 0;
                for (int c = 0; c < DIM; c++) p += rng_normal(9, 0x15b0000ULL, (uint64_t)(j * DIM + c)) * ((double)item_x(i, c) - (double)(mean[c] / N));
                code |= (p > 0) << b;
                if (fabs(p) < margin[i]) margin[i] = fabs(p);
            }
            codes[i * L + l] = code;
        }
    }
}

static int common_prefix(const int32_t *a, const int32_t *b) {
    int n = 0;
    while (n < L && a[n] == b[n]) n++;
    return n;
}

static void test_lsh(void) {
    int64_t lo, hi;
    float *x;
    my_rows(&lo, &hi, &x);
    int32_t *a = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * L + 1)), *b = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * L + 1));
    sid_lsh_codes(x, hi - lo, DIM, L, K, 9, a);
    sid_lsh_codes(x, hi - lo, DIM, L, K, 9, b);
    CHECK(memcmp(a, b, sizeof(int32_t) * (size_t)((hi - lo) * L)) == 0);
    int32_t *all = gather(a, hi - lo), ref[N * L];
    double margin[N];
    lsh_reference(ref, margin);
    int differ = 0, near = 0;
    for (int i = 0; i < N; i++) {
        if (margin[i] < 1e-9) { near++; continue; } /* on a hyperplane to rounding: either side is right */
        differ += memcmp(all + i * L, ref + i * L, sizeof(int32_t) * L) != 0;
    }
    CHECK_MSG(differ == 0 && near < 5, "%d items' codes differ from the serial computation (%d on a hyperplane)", differ, near);
    double same_blob = 0, random_pair = 0;
    int used[16] = {0};
    for (int i = 0; i < N; i++) {
        same_blob += common_prefix(all + i * L, all + ((i + BLOBS) % N) * L);
        random_pair += common_prefix(all + i * L, all + (int)rng_below(4, 0, (uint64_t)i, N) * L);
        used[all[i * L]]++;
        for (int l = 0; l < L; l++) CHECK(all[i * L + l] >= 0 && all[i * L + l] < K[l]);
    }
    same_blob /= N, random_pair /= N;
    CHECK_MSG(same_blob > 2.5 && random_pair < 1.0, "mean common prefix: same cluster %.2f, random pairs %.2f", same_blob,
              random_pair);
    int n_used = 0; /* centred: the sign bits split the items, not all on one side */
    for (int k = 0; k < K[0]; k++) n_used += used[k] > 0;
    CHECK_MSG(n_used >= K[0] / 2, "level 1 uses %d of %d codes", n_used, K[0]);
    free(a); free(b); free(all); free(x);
}

static void test_centroids(void) {
    int64_t lo, hi;
    float *x;
    my_rows(&lo, &hi, &x);
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * L + 1));
    sid_lsh_codes(x, hi - lo, DIM, L, K, 9, codes);
    float *cent[L];
    double sq[L + 1];
    sid_residual_centroids(x, hi - lo, DIM, L, K, codes, cent, sq);
    int32_t *all = gather(codes, hi - lo);
    double worst = 0, want_sq = 0;
    for (int k = 0; k < K[0]; k++) { /* level 1: the plain mean of x over the code's items */
        double mean[DIM] = {0};
        int n = 0;
        for (int i = 0; i < N; i++)
            if (all[i * L] == k) {
                n++;
                for (int c = 0; c < DIM; c++) mean[c] += item_x(i, c);
            }
        for (int c = 0; c < DIM; c++) worst = check_max(worst, fabs((n ? mean[c] / n : 0) - cent[0][k * DIM + c]));
    }
    for (int i = 0; i < N; i++)
        for (int c = 0; c < DIM; c++) want_sq += (double)item_x(i, c) * item_x(i, c) / N;
    CHECK_MSG(worst < 1e-5, "level-1 centroids differ from the means by %g", worst);
    CHECK_CLOSE(sq[0], want_sq, 1e-9);
    for (int l = 0; l < L; l++) CHECK_MSG(sq[l + 1] <= sq[l] * (1 + 1e-9) && isfinite(sq[l + 1]), "level %d: %g -> %g", l + 1, sq[l], sq[l + 1]);
    CHECK_MSG(sq[L] < 0.5 * sq[0], "error %g -> %g", sq[0], sq[L]); /* the offset and much of the spread explained */
    for (int l = 0; l < L; l++) free(cent[l]);
    free(codes); free(all); free(x);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_sid_methods");
    RUN_TEST(test_random);
    RUN_TEST(test_lsh);
    RUN_TEST(test_centroids);
    return check_finish();
}
