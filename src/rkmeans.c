/* Residual k-means, identical for any rank count.
 *
 * Why the result does not depend on P:
 * - Decisions use exact distances: the squared distance of a row to a centroid is summed in
 *   double in a fixed order (sq_dist), the same on every rank. sgemm (whose rounding may depend
 *   on the shape and blocking of the whole product) only screens: a centroid is a candidate if
 *   its sgemm distance is within a proven error bound of the best one, and the winner is the
 *   candidate with the smallest exact distance, ties to the lower index.
 * - Sums over items (centroid sums, k-means++ weights, errors) are 64-bit fixed point with a
 *   scale chosen from the global maximum so they cannot overflow: integer addition is exact
 *   and associative, so the all-reduced sums are the same for any split.
 * - Random draws are counter-based (seed, level, draw) and pick items by global position. */
#include "rkmeans.h"
#include "comm.h"
#include "rng.h"
#include "util.h"
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ASSIGN_BLOCK 4096 /* rows per sgemm in the assignment (bigger blocks run faster) */
enum { STREAM_FIRST = 1, STREAM_DRAW = 2, STREAM_FALLBACK = 3 };

/* exact (order-fixed, double) squared distance: the only distance decisions are made on */
static double sq_dist(const float *a, const float *b, int dim) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0; /* four chains in a fixed order: faster, still exact-reproducible */
    int k = 0;
    for (; k + 4 <= dim; k += 4) {
        double d0 = (double)a[k] - b[k], d1 = (double)a[k + 1] - b[k + 1];
        double d2 = (double)a[k + 2] - b[k + 2], d3 = (double)a[k + 3] - b[k + 3];
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; k < dim; k++) {
        double d = (double)a[k] - b[k];
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

static double sq_norm(const float *a, int dim) {
    double s = 0;
    for (int k = 0; k < dim; k++) s += (double)a[k] * (double)a[k];
    return s;
}

/* Bound on |fl(x.c) - x.c| / (||x|| ||c||) for any summation order of dim products (with or
 * without FMA): gamma_dim = dim u / (1 - dim u), u = 2^-24; doubled for slack. */
static double dot_error_bound(int dim) {
    double nu = dim * ldexp(1.0, -24);
    return 2.0 * nu / (1.0 - nu);
}

/* Fixed-point scale 2^S such that count values of magnitude <= maxabs sum below 2^61. */
static double fixed_scale(double maxabs, int64_t count) {
    if (!(maxabs > 0)) return 1.0;
    int e;
    frexp(maxabs * (double)(count > 0 ? count : 1), &e); /* product < 2^e */
    int bits = 61 - e;
    return ldexp(1.0, bits < -1000 ? -1000 : bits > 1000 ? 1000 : bits);
}

/* Truncation: any fixed rule will do, it only has to be the same on every rank. */
static inline int64_t to_fixed(double v, double scale) { return (int64_t)(v * scale); }

/* Exact sum over all ranks of doubles (each |v| <= global maxabs), in fixed point. */
static double exact_global_sum(const double *v, int64_t n, int64_t n_global) {
    double maxabs = 0;
    for (int64_t i = 0; i < n; i++) maxabs = fmax(maxabs, fabs(v[i]));
    comm_max_double(&maxabs, 1);
    double scale = fixed_scale(maxabs, n_global);
    int64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += to_fixed(v[i], scale);
    comm_sum_i64(&s, 1);
    return (double)s / scale;
}

static void sum_i64_chunked(int64_t *buf, int64_t n) {
    for (int64_t off = 0; off < n; off += 1 << 28) comm_sum_i64(buf + off, (int)(n - off < (1 << 28) ? n - off : 1 << 28));
}

typedef struct {
    const float *r;  /* n x dim residuals of this level (local rows) */
    const double *rn2; /* n: ||r_i||^2 */
    int64_t n, lo, N;
    int dim;
    const int64_t *row_offsets; /* P+1: the first global row of every rank */
    double blas_seconds;
    int64_t rechecked;
    int P, me;  /* the ranks sharing the rows: comm_size()/comm_rank(), or 1/0 when one rank holds all (solo) */
} Level;

/* The collectives of k-means++: over the ranks, none for a solo level (every rank holds all rows). */
static void level_max(const Level *lv, double *v) {
    if (lv->P > 1) comm_max_double(v, 1);
}
static void level_sum_i64(const Level *lv, int64_t *buf, int n) {
    if (lv->P > 1) comm_sum_i64(buf, n);
}
static void level_allgather_i64(const Level *lv, const int64_t *mine, int n, int64_t *all) {
    if (lv->P > 1) comm_allgatherv_bytes(mine, n, all, sizeof(int64_t));
    else memcpy(all, mine, sizeof(int64_t) * (size_t)n);
}

static int owner_of(const Level *lv, int64_t g) {
    int P = lv->P, r = 0;
    while (r < P - 1 && lv->row_offsets[r + 1] <= g) r++;
    return r;
}

/* Every rank gets global row g (broadcast by its owner). */
static void fetch_row(const Level *lv, int64_t g, float *out) {
    int owner = owner_of(lv, g);
    if (lv->me == owner) memcpy(out, lv->r + (size_t)(g - lv->lo) * lv->dim, sizeof(float) * (size_t)lv->dim);
    if (lv->P > 1) comm_bcast(out, (int64_t)sizeof(float) * lv->dim, owner);
}

/* Greedy k-means++: C (K x dim). Each step draws a few candidates, each item weighted by its
 * exact squared distance to the nearest centroid so far, and keeps the candidate that lowers
 * the total of those distances most (ties to the first drawn); dist (n) ends as that distance.
 * Plain k-means++ often puts two centroids into one well-separated cluster and none into
 * another, which Lloyd iterations cannot repair. Two collectives per step: the candidate rows
 * (a sum of bit patterns: each row comes from its owner, zeros from the others) and an
 * all-gather of every rank's total weight for each candidate. */
static void kmeanspp(Level *lv, int K, uint64_t seed, int level, float *C, double *dist) {
    int64_t n = lv->n;
    int dim = lv->dim, P = lv->P, me = lv->me;
    /* candidates per step: 2 + ln K as in scikit-learn, rounded up to a multiple of 8, which
     * OpenBLAS multiplies 3x faster than 7 columns (no edge kernel) */
    int T = (2 + (int)log((double)K) + 7) / 8 * 8;
    uint64_t stream = ((uint64_t)level << 8);
    fetch_row(lv, (int64_t)rng_below(seed, stream | STREAM_FIRST, 0, (uint64_t)lv->N), C);
    double dmax = 0;
    for (int64_t i = 0; i < n; i++) {
        dist[i] = sq_dist(lv->r + (size_t)i * dim, C, dim);
        dmax = fmax(dmax, dist[i]);
    }
    level_max(lv, &dmax);
    /* distances only shrink from here: this scale stays safe for every later draw */
    double scale = fixed_scale(dmax, lv->N);
    size_t nn = (size_t)(n ? n : 1);
    int64_t *w = xmalloc(sizeof(int64_t) * nn), w_mine = 0;
    for (int64_t i = 0; i < n; i++) w_mine += w[i] = to_fixed(dist[i], scale);
    int64_t *w_rank = xmalloc(sizeof(int64_t) * (size_t)P), *pot = xmalloc(sizeof(int64_t) * (size_t)T);
    int64_t *pot_all = xmalloc(sizeof(int64_t) * (size_t)P * T), *bits = xmalloc(sizeof(int64_t) * (size_t)T * dim);
    level_allgather_i64(lv, &w_mine, 1, w_rank);
    float *cand = xmalloc(sizeof(float) * (size_t)T * dim), *dots = xmalloc(sizeof(float) * nn * (size_t)T);
    double *cn2 = xmalloc(sizeof(double) * (size_t)T), *cn = xmalloc(sizeof(double) * (size_t)T);
    double *closer = xmalloc(sizeof(double) * nn * (size_t)T); /* n x T: distance if candidate t were added */
    double bound = dot_error_bound(dim);
    for (int k = 1; k < K; k++) {
        int64_t total = 0;
        for (int r = 0; r < P; r++) total += w_rank[r];
        float *c = C + (size_t)k * dim;
        if (total == 0) { /* every item sits on a chosen centroid: any item will do */
            fetch_row(lv, (int64_t)rng_below(seed, stream | STREAM_FALLBACK, (uint64_t)k, (uint64_t)lv->N), c);
            continue;
        }
        memset(bits, 0, sizeof(int64_t) * (size_t)T * dim);
        for (int t = 0; t < T; t++) {
            uint64_t u = (uint64_t)(((unsigned __int128)rng_u64(seed, stream | STREAM_DRAW, (uint64_t)k * T + t) *
                                     (uint64_t)total) >> 64); /* uniform in [0, total) */
            int owner = 0;
            int64_t before = 0;
            while (owner < P - 1 && before + w_rank[owner] <= (int64_t)u) before += w_rank[owner++];
            if (owner != me) continue;
            int64_t cum = before, i = 0;
            while (i < n - 1 && cum + w[i] <= (int64_t)u) cum += w[i++];
            for (int d = 0; d < dim; d++) {
                uint32_t b;
                memcpy(&b, lv->r + (size_t)i * dim + d, sizeof b);
                bits[(size_t)t * dim + d] = b;
            }
        }
        level_sum_i64(lv, bits, T * dim);
        for (int64_t j = 0; j < (int64_t)T * dim; j++) {
            uint32_t b = (uint32_t)bits[j];
            memcpy(&cand[j], &b, sizeof b);
        }
        for (int t = 0; t < T; t++) cn2[t] = sq_norm(cand + (size_t)t * dim, dim);
        if (n) {
            double t0 = comm_wtime();
            /* dots (n x T) = R (n x dim) . cand^T (dim x T) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, T, dim, 1.0f, lv->r, dim, cand, dim, 0.0f, dots, T);
            lv->blas_seconds += comm_wtime() - t0;
        }
        /* this rank's total weight if candidate t were added: exact distances where it may be closer */
        for (int t = 0; t < T; t++) pot[t] = 0;
        for (int t = 0; t < T; t++) cn[t] = sqrt(cn2[t]);
        for (int64_t i = 0; i < n; i++) {
            double rn = sqrt(lv->rn2[i]);
            for (int t = 0; t < T; t++) {
                double approx = lv->rn2[i] - 2.0 * dots[(size_t)i * T + t] + cn2[t];
                double margin = 2.0 * bound * rn * cn[t] + 1e-12 * (lv->rn2[i] + cn2[t]);
                double d = dist[i];
                if (approx - margin < d) d = fmin(d, sq_dist(lv->r + (size_t)i * dim, cand + (size_t)t * dim, dim));
                closer[(size_t)i * T + t] = d;
                pot[t] += d < dist[i] ? to_fixed(d, scale) : w[i];
            }
        }
        level_allgather_i64(lv, pot, T, pot_all);
        int best = 0;
        int64_t best_total = 0;
        for (int t = 0; t < T; t++) {
            int64_t sum = 0;
            for (int r = 0; r < P; r++) sum += pot_all[r * T + t];
            if (t == 0 || sum < best_total) { best = t; best_total = sum; }
        }
        for (int r = 0; r < P; r++) w_rank[r] = pot_all[r * T + best];
        memcpy(c, cand + (size_t)best * dim, sizeof(float) * (size_t)dim);
        for (int64_t i = 0; i < n; i++) {
            double d = closer[(size_t)i * T + best];
            if (d < dist[i]) {
                dist[i] = d;
                w[i] = to_fixed(d, scale);
            }
        }
    }
    free(w); free(w_rank); free(pot); free(pot_all); free(bits); free(cand); free(dots); free(cn2); free(cn); free(closer);
}

/* k-means++ with every rank holding all rows: one all-gather, then the same draws on every rank
 * without a collective per centroid (K sequential rounds of two collectives each are slow when
 * ranks outnumber cores: every round waits for all of them to be scheduled). Same result as the
 * distributed kmeanspp: its sums are exact integers and its draws walk the rows in global order. */
static void kmeanspp_replicated(Level *lv, int K, uint64_t seed, int level, float *C, double *dist) {
    int P = comm_size(), dim = lv->dim;
    int64_t N = lv->N, *counts = xmalloc(sizeof(int64_t) * (size_t)P), offsets1[2] = {0, N};
    float *all = xmalloc(sizeof(float) * (size_t)N * dim);
    double *rn2 = xmalloc(sizeof(double) * (size_t)N), *dist_all = xmalloc(sizeof(double) * (size_t)N);
    for (int r = 0; r < P; r++) counts[r] = (lv->row_offsets[r + 1] - lv->row_offsets[r]) * dim;
    comm_allgatherv_counted(lv->r, counts, all, sizeof(float));
    for (int r = 0; r < P; r++) counts[r] /= dim;
    comm_allgatherv_counted(lv->rn2, counts, rn2, sizeof(double));
    Level solo = {all, rn2, N, 0, N, dim, offsets1, 0, 0, 1, 0};
    kmeanspp(&solo, K, seed, level, C, dist_all);
    memcpy(dist, dist_all + lv->lo, sizeof(double) * (size_t)lv->n);
    lv->blas_seconds += solo.blas_seconds;
    free(counts); free(all); free(rn2); free(dist_all);
}

/* Nearest centroid of every local row: code and exact squared distance. sgemm screens,
 * sq_dist decides (see the top of the file). */
static void assign(Level *lv, const float *C, int K, int32_t *code, double *dist) {
    int dim = lv->dim;
    double *cn2 = xmalloc(sizeof(double) * (size_t)K), cmax = 0;
    for (int j = 0; j < K; j++) {
        cn2[j] = sq_norm(C + (size_t)j * dim, dim);
        cmax = fmax(cmax, sqrt(cn2[j]));
    }
    double bound = dot_error_bound(dim);
    float *dots = xmalloc(sizeof(float) * (size_t)ASSIGN_BLOCK * (size_t)K);
    for (int64_t b0 = 0; b0 < lv->n; b0 += ASSIGN_BLOCK) {
        int rows = (int)(lv->n - b0 < ASSIGN_BLOCK ? lv->n - b0 : ASSIGN_BLOCK);
        const float *R = lv->r + (size_t)b0 * dim;
        double t0 = comm_wtime();
        /* dots (rows x K) = R (rows x dim) . C^T (dim x K) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, K, dim, 1.0f, R, dim, C, dim, 0.0f, dots, K);
        lv->blas_seconds += comm_wtime() - t0;
        for (int i = 0; i < rows; i++) {
            const float *dot = dots + (size_t)i * K;
            double rn2 = lv->rn2[b0 + i];
            double best = DBL_MAX, second = DBL_MAX;
            int jbest = 0;
            for (int j = 0; j < K; j++) {
                double approx = cn2[j] - 2.0 * dot[j]; /* + rn2, the same for every j */
                if (approx < second) {
                    if (approx < best) { second = best; best = approx; jbest = j; }
                    else second = approx;
                }
            }
            double window = 2.0 * (2.0 * bound * sqrt(rn2) * cmax + 1e-12 * (rn2 + cmax * cmax));
            const float *x = R + (size_t)i * dim;
            double dbest = sq_dist(x, C + (size_t)jbest * dim, dim);
            int checked = 0;
            for (int j = 0; j < K && second <= best + window; j++) { /* near ties only */
                if (j == jbest || cn2[j] - 2.0 * dot[j] > best + window) continue;
                double d = sq_dist(x, C + (size_t)j * dim, dim);
                if (d < dbest || (d == dbest && j < jbest)) { dbest = d; jbest = j; }
                checked = 1;
            }
            lv->rechecked += checked;
            code[b0 + i] = jbest;
            dist[b0 + i] = dbest;
        }
    }
    free(cn2);
    free(dots);
}

typedef struct { double dist; int64_t row; } Farthest;

/* New centroids as the means of their members (fixed-point sums over all ranks). An empty
 * cluster takes the member of the largest cluster farthest from its centroid (ties to the
 * lowest item), which leaves that cluster. A cluster that stays empty keeps its centroid. */
static int update_centroids(Level *lv, int K, float *C, int32_t *code, double *dist, double scale) {
    int dim = lv->dim, P = comm_size(), reseeded = 0;
    int64_t stride = dim + 1, n = lv->n;
    int64_t *acc = xcalloc((size_t)K * (size_t)stride, sizeof(int64_t)); /* per centroid: dim sums, count */
    for (int64_t i = 0; i < n; i++) {
        int64_t *a = acc + (size_t)code[i] * stride;
        const float *x = lv->r + (size_t)i * dim;
        for (int k = 0; k < dim; k++) a[k] += to_fixed(x[k], scale);
        a[dim]++;
    }
    sum_i64_chunked(acc, (int64_t)K * stride);
    float *row = xmalloc(sizeof(float) * (size_t)dim);
    Farthest *all = xmalloc(sizeof(Farthest) * (size_t)P);
    for (int e = 0; e < K; e++) {
        if (acc[(size_t)e * stride + dim] > 0) continue;
        int big = 0;
        for (int j = 1; j < K; j++)
            if (acc[(size_t)j * stride + dim] > acc[(size_t)big * stride + dim]) big = j;
        if (acc[(size_t)big * stride + dim] < 2) break; /* nothing left to split */
        Farthest mine = {-1.0, -1};
        for (int64_t i = 0; i < n; i++)
            if (code[i] == big && dist[i] > mine.dist) { mine.dist = dist[i]; mine.row = lv->lo + i; }
        comm_allgatherv_bytes(&mine, 1, all, sizeof(Farthest));
        int owner = 0; /* ranks are in row order: the first maximum has the lowest row */
        for (int r = 1; r < P; r++)
            if (all[r].dist > all[owner].dist) owner = r;
        int64_t g = all[owner].row;
        if (comm_rank() == owner) {
            memcpy(row, lv->r + (size_t)(g - lv->lo) * dim, sizeof(float) * (size_t)dim);
            code[g - lv->lo] = e;
            dist[g - lv->lo] = 0;
        }
        comm_bcast(row, (int64_t)sizeof(float) * dim, owner);
        int64_t *from = acc + (size_t)big * stride, *to = acc + (size_t)e * stride;
        for (int k = 0; k < dim; k++) {
            int64_t v = to_fixed(row[k], scale);
            from[k] -= v;
            to[k] = v;
        }
        from[dim]--;
        to[dim] = 1;
        reseeded++;
    }
    for (int j = 0; j < K; j++) {
        const int64_t *a = acc + (size_t)j * stride;
        if (a[dim] == 0) continue;
        for (int k = 0; k < dim; k++) C[(size_t)j * dim + k] = (float)((double)a[k] / scale / (double)a[dim]);
    }
    free(acc); free(row); free(all);
    return reseeded;
}

static double entropy_bits(const int64_t *count, int K, int64_t total) {
    double h = 0;
    for (int j = 0; j < K; j++)
        if (count[j] > 0) {
            double p = (double)count[j] / (double)total;
            h -= p * log2(p);
        }
    return h;
}

static const int32_t *sort_codes;
static int sort_levels;
static int cmp_tuple(const void *a, const void *b) {
    const int32_t *x = sort_codes + (size_t)*(const int64_t *)a * sort_levels;
    const int32_t *y = sort_codes + (size_t)*(const int64_t *)b * sort_levels;
    for (int l = 0; l < sort_levels; l++)
        if (x[l] != y[l]) return x[l] < y[l] ? -1 : 1;
    return 0;
}

void rkmeans_code_stats(const int32_t *codes, int64_t n_local, int levels, const int *codebook, RkmeansReport *rep) {
    int64_t N = n_local;
    comm_sum_i64(&N, 1);
    rep->levels = levels;
    rep->n_items = N;
    for (int l = 0; l < levels; l++) {
        int K = codebook[l];
        int64_t *count = xcalloc((size_t)K, sizeof(int64_t));
        for (int64_t i = 0; i < n_local; i++) count[codes[(size_t)i * levels + l]]++;
        sum_i64_chunked(count, K);
        RkmeansLevelReport *lr = &rep->level[l];
        lr->used = 0;
        lr->largest = 0;
        for (int j = 0; j < K; j++) {
            lr->used += count[j] > 0;
            if (count[j] > lr->largest) lr->largest = count[j];
        }
        lr->entropy_bits = entropy_bits(count, K, N);
        lr->entropy_ratio = K > 1 ? lr->entropy_bits / log2((double)K) : 1.0;
        free(count);
    }
    /* collisions: every rank sorts the full tuple list (V x L int32 is small) */
    int32_t *all = xmalloc(sizeof(int32_t) * (size_t)(N * levels + 1));
    comm_allgatherv_bytes(codes, n_local * levels, all, sizeof(int32_t));
    int64_t *order = xmalloc(sizeof(int64_t) * (size_t)(N + 1));
    for (int64_t i = 0; i < N; i++) order[i] = i;
    sort_codes = all;
    sort_levels = levels;
    qsort(order, (size_t)N, sizeof(int64_t), cmp_tuple);
    int64_t tuples = 0, largest = 0, unique = 0;
    for (int64_t i = 0; i < N;) {
        int64_t j = i + 1;
        while (j < N && cmp_tuple(&order[i], &order[j]) == 0) j++;
        tuples++;
        if (j - i > largest) largest = j - i;
        unique += j - i == 1;
        i = j;
    }
    rep->n_tuples = tuples;
    rep->largest_group = largest;
    rep->unique_share = N ? (double)unique / (double)N : 0;
    free(all);
    free(order);
}

static void check_options(const RkmeansOptions *o, int64_t n_local, int64_t n_global, int dim, int64_t *row_offsets) {
    int P = comm_size();
    comm_allgatherv_bytes(&n_local, 1, row_offsets + 1, sizeof(int64_t));
    row_offsets[0] = 0;
    for (int r = 0; r < P; r++) row_offsets[r + 1] += row_offsets[r];
    if (row_offsets[P] != n_global)
        comm_fail("rkmeans: the ranks hold %lld rows in all, expected %lld", (long long)row_offsets[P], (long long)n_global);
    if (o->levels < 1 || o->levels > RKMEANS_MAX_LEVELS)
        comm_fail("rkmeans: %d levels, expected 1..%d", o->levels, RKMEANS_MAX_LEVELS);
    if (dim < 1) comm_fail("rkmeans: embedding width %d", dim);
    if (o->iters < 1) comm_fail("rkmeans: %d iterations, expected at least 1", o->iters);
    for (int l = 0; l < o->levels; l++)
        if (o->codebook[l] < 1 || o->codebook[l] > n_global)
            comm_fail("rkmeans: codebook %d at level %d, expected 1..%lld (the number of items)", o->codebook[l], l + 1,
                      (long long)n_global);
}

void rkmeans_fit(const float *x, int64_t n_local, int64_t n_global, int dim, const RkmeansOptions *o, int32_t *codes,
                 float **centroids, RkmeansReport *rep) {
    double t_all = comm_wtime();
    int P = comm_size(), L = o->levels;
    int64_t *row_offsets = xmalloc(sizeof(int64_t) * (size_t)(P + 1));
    check_options(o, n_local, n_global, dim, row_offsets);
    int64_t n = n_local;
    size_t nn = (size_t)(n ? n : 1);
    float *r = xmalloc(sizeof(float) * nn * (size_t)dim);
    if (n) memcpy(r, x, sizeof(float) * (size_t)n * (size_t)dim);
    double *rn2 = xmalloc(sizeof(double) * nn), *dist = xmalloc(sizeof(double) * nn);
    int32_t *code = xmalloc(sizeof(int32_t) * nn);
    RkmeansReport local_rep;
    if (!rep) rep = &local_rep;
    memset(rep, 0, sizeof *rep);
    Level lv = {r, rn2, n, row_offsets[comm_rank()], n_global, dim, row_offsets, 0, 0, P, comm_rank()};
    int replicated = o->init_replicated > 0 ||
                     (o->init_replicated < 0 && P > 1 && comm_oversubscribed() &&
                      (double)n_global * dim * sizeof(float) <= 256.0 * (1 << 20));
    for (int l = 0; l < L; l++) {
        int K = o->codebook[l];
        RkmeansLevelReport *lr = &rep->level[l];
        double t_level = comm_wtime();
        lv.blas_seconds = 0;
        lv.rechecked = 0;
        double maxabs = 0;
        for (int64_t i = 0; i < n; i++) {
            rn2[i] = sq_norm(r + (size_t)i * dim, dim);
            for (int k = 0; k < dim; k++) maxabs = fmax(maxabs, fabs(r[(size_t)i * dim + k]));
        }
        comm_max_double(&maxabs, 1);
        double scale = fixed_scale(maxabs, n_global); /* centroid sums of up to n_global values */
        lr->sq_error_before = exact_global_sum(rn2, n, n_global) / (double)n_global;
        if (l == 0) rep->sq_error_before = lr->sq_error_before;

        float *C = centroids[l] = xmalloc(sizeof(float) * (size_t)K * (size_t)dim);
        if (replicated) kmeanspp_replicated(&lv, K, o->seed, l, C, dist);
        else kmeanspp(&lv, K, o->seed, l, C, dist);
        lr->init_seconds = comm_wtime() - t_level;
        double t_lloyd = comm_wtime();
        assign(&lv, C, K, code, dist);
        double err = exact_global_sum(dist, n, n_global) / (double)n_global;
        int it = 0;
        while (it < o->iters) {
            lr->reseeded += update_centroids(&lv, K, C, code, dist, scale);
            assign(&lv, C, K, code, dist);
            it++;
            double next = exact_global_sum(dist, n, n_global) / (double)n_global;
            int converged = !(err > 0) || fabs(err - next) <= o->tol * err;
            err = next;
            if (converged) break;
        }
        lr->iters_run = it;
        lr->lloyd_seconds = comm_wtime() - t_lloyd;
        lr->sq_error_after = err;
        int64_t rechecked = lv.rechecked;
        comm_sum_i64(&rechecked, 1);
        lr->candidates_rechecked_pct = (int)(100.0 * (double)rechecked / ((double)n_global * (it + 1)) + 0.5);

        /* codes out, residuals in for the next level */
        for (int64_t i = 0; i < n; i++) {
            codes[(size_t)i * L + l] = code[i];
            float *ri = r + (size_t)i * dim;
            const float *c = C + (size_t)code[i] * dim;
            for (int k = 0; k < dim; k++) ri[k] -= c[k];
            if (o->normalize_residuals) {
                double norm = sqrt(sq_norm(ri, dim));
                if (norm > 0)
                    for (int k = 0; k < dim; k++) ri[k] = (float)(ri[k] / norm);
            }
        }
        lr->seconds = comm_wtime() - t_level;
        lr->sgemm_seconds = lv.blas_seconds;
    }
    rkmeans_code_stats(codes, n, L, o->codebook, rep);
    rep->init_replicated = replicated;
    rep->seconds = comm_wtime() - t_all;
    free(r); free(rn2); free(dist); free(code); free(row_offsets);
}
