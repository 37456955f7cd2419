/* rkmeans: planted clusters are recovered; codes and centroids are bit-identical for every
 * split of the rows over the ranks (even, uneven, all on one rank) and with k-means++
 * replicated; every code is the exact nearest centroid (lowest index on ties); errors never
 * grow from level to level. */
#include "check.h"
#include "rkmeans.h"
#include "rng.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

/* n items from k Gaussian blobs in dim dimensions; truth[i] = blob of item i */
static float *planted(int64_t n, int dim, int k, double spread, double noise, uint64_t seed, int32_t *truth) {
    float *centers = xmalloc(sizeof(float) * (size_t)k * dim), *x = xmalloc(sizeof(float) * (size_t)n * dim);
    for (int64_t j = 0; j < (int64_t)k * dim; j++) centers[j] = (float)(spread * rng_normal(seed, 1, (uint64_t)j));
    for (int64_t i = 0; i < n; i++) {
        int b = (int)rng_below(seed, 2, (uint64_t)i, (uint64_t)k);
        if (truth) truth[i] = b;
        for (int d = 0; d < dim; d++)
            x[i * dim + d] = centers[b * dim + d] + (float)(noise * rng_normal(seed, 3, (uint64_t)(i * dim + d)));
    }
    free(centers);
    return x;
}

static double choose2(double a) { return a * (a - 1) / 2; }

/* adjusted Rand index of two labelings with ka and kb labels */
static double adjusted_rand(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n, int stride_a) {
    double *table = xcalloc((size_t)ka * kb, sizeof(double)), *ra = xcalloc((size_t)ka, sizeof(double)),
           *rb = xcalloc((size_t)kb, sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        table[a[i * stride_a] * kb + b[i]]++;
        ra[a[i * stride_a]]++;
        rb[b[i]]++;
    }
    double sum_ij = 0, sum_a = 0, sum_b = 0;
    for (int i = 0; i < ka * kb; i++) sum_ij += choose2(table[i]);
    for (int i = 0; i < ka; i++) sum_a += choose2(ra[i]);
    for (int i = 0; i < kb; i++) sum_b += choose2(rb[i]);
    double expected = sum_a * sum_b / choose2((double)n), max = 0.5 * (sum_a + sum_b);
    free(table); free(ra); free(rb);
    return (sum_ij - expected) / (max - expected);
}

typedef struct {
    int32_t *codes;  /* all items, n x levels, gathered */
    float *cent[RKMEANS_MAX_LEVELS];
    RkmeansReport rep;
} Fit;

/* Fits with this rank holding rows [lo, hi) of x (all ranks hold x in full) and gathers the codes. */
static void fit_split(const float *x, int64_t n, int dim, const RkmeansOptions *o, int64_t lo, int64_t hi, Fit *f) {
    int32_t *mine = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * o->levels + 1));
    rkmeans_fit(x + lo * dim, hi - lo, n, dim, o, mine, f->cent, &f->rep);
    f->codes = xmalloc(sizeof(int32_t) * (size_t)(n * o->levels));
    comm_allgatherv_bytes(mine, (hi - lo) * o->levels, f->codes, sizeof(int32_t));
    free(mine);
}

static void fit_free(Fit *f, int levels) {
    free(f->codes);
    for (int l = 0; l < levels; l++) free(f->cent[l]);
}

/* Checks that don't depend on the split: range, exact nearest centroid, errors; no zero
 * centroids where no item has a zero residual (zero_ok: data where some do). */
static void check_fit(const float *x, int64_t n, int dim, const RkmeansOptions *o, const Fit *f, int zero_ok) {
    float *r = xmalloc(sizeof(float) * (size_t)(n * dim));
    memcpy(r, x, sizeof(float) * (size_t)(n * dim));
    double prev_after = 1e300;
    int bad_range = 0, bad_nearest = 0;
    for (int l = 0; l < o->levels; l++) {
        int K = o->codebook[l];
        const float *C = f->cent[l];
        double err = 0;
        for (int64_t i = 0; i < n; i++) {
            int code = f->codes[i * o->levels + l];
            if (code < 0 || code >= K) { bad_range++; continue; }
            float *ri = r + i * dim;
            double best = 1e300;
            int jbest = -1;
            for (int j = 0; j < K; j++) {
                double d = 0;
                for (int k = 0; k < dim; k++) {
                    double t = (double)ri[k] - (double)C[j * dim + k];
                    d += t * t;
                }
                if (d < best) { best = d; jbest = j; }
            }
            bad_nearest += jbest != code;
            err += best;
            for (int k = 0; k < dim; k++) ri[k] -= C[code * dim + k];
            if (o->normalize_residuals) { /* the same rounding as rkmeans */
                double norm = 0;
                for (int k = 0; k < dim; k++) norm += (double)ri[k] * (double)ri[k];
                norm = sqrt(norm);
                if (norm > 0)
                    for (int k = 0; k < dim; k++) ri[k] = (float)(ri[k] / norm);
            }
        }
        err /= (double)n;
        const RkmeansLevelReport *lr = &f->rep.level[l];
        CHECK_CLOSE(lr->sq_error_after, err, 1e-9);
        CHECK_MSG(lr->sq_error_after <= lr->sq_error_before * (1 + 1e-9), "level %d error %g > its input's %g", l + 1,
                  lr->sq_error_after, lr->sq_error_before);
        if (!o->normalize_residuals) /* else every level starts again from unit norms */
            CHECK_MSG(lr->sq_error_after <= prev_after * (1 + 1e-6), "level %d error %g > level %d's %g", l + 1,
                      lr->sq_error_after, l, prev_after);
        prev_after = lr->sq_error_after;
        CHECK(lr->used >= 1 && lr->used <= K && lr->iters_run >= 1 && lr->iters_run <= o->iters);
        /* no centroid is left as a zero vector by an empty cluster */
        for (int j = 0; j < K && !zero_ok; j++) {
            double norm = 0;
            for (int k = 0; k < dim; k++) norm += fabs(C[j * dim + k]);
            CHECK_MSG(norm > 0, "level %d centroid %d is zero", l + 1, j);
        }
    }
    CHECK_MSG(bad_range == 0, "%d codes out of range", bad_range);
    CHECK_MSG(bad_nearest == 0, "%d codes are not the exact nearest centroid (lowest index)", bad_nearest);
    free(r);
}

static uint64_t digest(const Fit *f, int64_t n, int dim, const RkmeansOptions *o) {
    uint64_t h = fnv1a64(FNV64_INIT, f->codes, sizeof(int32_t) * (size_t)(n * o->levels));
    for (int l = 0; l < o->levels; l++) h = fnv1a64(h, f->cent[l], sizeof(float) * (size_t)o->codebook[l] * dim);
    return h;
}

/* The same fit under several splits of the rows over the ranks, with k-means++ distributed and
 * replicated on every rank (splits 4 and 5: even and uneven): all digests must agree. */
static void check_split_invariance(const float *x, int64_t n, int dim, const RkmeansOptions *o_in, int zero_ok) {
    int P = comm_size(), me = comm_rank();
    uint64_t ref = 0;
    for (int s = 0; s < 6; s++) {
        RkmeansOptions o = *o_in;
        o.init_replicated = s >= 4;
        int64_t lo, hi;
        if (s == 0 || s == 4) comm_split_range(n, P, me, &lo, &hi);           /* even */
        else if (s == 1) { lo = me == 0 ? 0 : n; hi = n; }                      /* all on rank 0 */
        else if (s == 2) { lo = 0; hi = me == P - 1 ? n : 0; }                  /* all on the last rank */
        else { /* uneven: rank r holds a share proportional to (r+1)^2 */
            int64_t tot = 0, before = 0;
            for (int r = 0; r < P; r++) tot += (int64_t)(r + 1) * (r + 1);
            for (int r = 0; r < me; r++) before += (int64_t)(r + 1) * (r + 1);
            lo = n * before / tot;
            hi = n * (before + (int64_t)(me + 1) * (me + 1)) / tot;
        }
        Fit f;
        fit_split(x, n, dim, &o, lo, hi, &f);
        if (s == 0) check_fit(x, n, dim, &o, &f, zero_ok);
        CHECK_MSG(f.rep.init_replicated == o.init_replicated, "split %d: the report says k-means++ replicated %d, asked %d",
                  s, f.rep.init_replicated, o.init_replicated);
        uint64_t h = digest(&f, n, dim, &o);
        if (s == 0) {
            ref = h;
            if (me == 0) printf("digest %016llx (n %lld, dim %d, levels %d, K1 %d)\n", (unsigned long long)h, (long long)n,
                                dim, o.levels, o.codebook[0]);
        }
        CHECK_MSG(h == ref, "split %d (k-means++ %s) gives digest %016llx, even split %016llx", s,
                  o.init_replicated ? "replicated" : "distributed", (unsigned long long)h, (unsigned long long)ref);
        fit_free(&f, o.levels);
    }
}

static void test_planted_clusters(void) {
    const int64_t n = 3000;
    const int dim = 24, k = 10;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        int32_t *truth = xmalloc(sizeof(int32_t) * n);
        float *x = planted(n, dim, k, 3.0, 0.5, seed, truth);
        RkmeansOptions o = {.levels = 3, .codebook = {k, 6, 5}, .iters = 50, .tol = 1e-6, .seed = seed};
        Fit f;
        int64_t lo, hi;
        comm_split_range(n, comm_size(), comm_rank(), &lo, &hi);
        fit_split(x, n, dim, &o, lo, hi, &f);
        double ari = adjusted_rand(f.codes, k, truth, k, n, o.levels);
        CHECK_MSG(ari > 0.95, "seed %llu: level-1 codes recover the blobs with adjusted Rand %.4f", (unsigned long long)seed,
                  ari);
        if (comm_rank() == 0) printf("seed %llu: adjusted Rand index %.4f\n", (unsigned long long)seed, ari);
        check_fit(x, n, dim, &o, &f, 0);
        CHECK(f.rep.level[0].used == k && f.rep.n_items == n);
        fit_free(&f, o.levels);
        free(truth);
        free(x);
    }
}

static void test_split_invariance_blobs(void) {
    const int64_t n = 2500;
    const int dim = 32;
    float *x = planted(n, dim, 40, 1.0, 0.8, 7, NULL);
    RkmeansOptions o = {.levels = 3, .codebook = {64, 32, 16}, .iters = 25, .tol = 1e-5, .seed = 11};
    check_split_invariance(x, n, dim, &o, 0);
    o.normalize_residuals = 1;
    check_split_invariance(x, n, dim, &o, 0);
    free(x);
}

/* Small integers: exact distance ties everywhere, duplicated items, more codes than distinct
 * points at the last level (empty clusters that cannot all be filled). */
static void test_ties_and_duplicates(void) {
    const int64_t n = 600;
    const int dim = 3;
    float *x = xmalloc(sizeof(float) * n * dim);
    for (int64_t i = 0; i < n * dim; i++) x[i] = (float)rng_below(5, 1, (uint64_t)i, 3);
    RkmeansOptions o = {.levels = 3, .codebook = {20, 20, 30}, .iters = 30, .tol = 0, .seed = 3};
    check_split_invariance(x, n, dim, &o, 1);
    /* 27 distinct points and 20 codes: every code can be used */
    Fit f;
    int64_t lo, hi;
    comm_split_range(n, comm_size(), comm_rank(), &lo, &hi);
    fit_split(x, n, dim, &o, lo, hi, &f);
    CHECK_MSG(f.rep.level[0].used == 20, "level 1 uses %d of 20 codes", f.rep.level[0].used);
    CHECK(f.rep.n_tuples <= 27 && f.rep.unique_share == 0.0);
    fit_free(&f, o.levels);
    /* every item identical: one code used, no zero-vector centroids, nothing hangs */
    for (int64_t i = 0; i < n * dim; i++) x[i] = 1.5f;
    RkmeansOptions same = {.levels = 2, .codebook = {8, 4}, .iters = 5, .tol = 1e-4, .seed = 1};
    fit_split(x, n, dim, &same, lo, hi, &f);
    CHECK(f.rep.level[0].used == 1 && f.rep.level[0].largest == n && f.rep.n_tuples == 1);
    CHECK(f.rep.level[0].sq_error_after == 0.0);
    for (int j = 0; j < 8; j++) CHECK(f.cent[0][j * dim] == 1.5f);
    fit_free(&f, same.levels);
    free(x);
}

/* K equal to the number of items: every item ends as its own cluster (empty ones re-seeded). */
static void test_codebook_equals_items(void) {
    const int64_t n = 64;
    const int dim = 5;
    float *x = planted(n, dim, 64, 1.0, 0.01, 9, NULL);
    RkmeansOptions o = {.levels = 1, .codebook = {64}, .iters = 20, .tol = 0, .seed = 2};
    check_split_invariance(x, n, dim, &o, 0);
    Fit f;
    int64_t lo, hi;
    comm_split_range(n, comm_size(), comm_rank(), &lo, &hi);
    fit_split(x, n, dim, &o, lo, hi, &f);
    CHECK_MSG(f.rep.level[0].used == 64 && f.rep.unique_share == 1.0, "used %d, unique share %g", f.rep.level[0].used,
              f.rep.unique_share);
    CHECK(f.rep.level[0].sq_error_after < 1e-12);
    fit_free(&f, o.levels);
    free(x);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_rkmeans");
    RUN_TEST(test_planted_clusters);
    RUN_TEST(test_split_invariance_blobs);
    RUN_TEST(test_ties_and_duplicates);
    RUN_TEST(test_codebook_equals_items);
    return check_finish();
}
