/* text: TF-IDF weights by hand, the randomized SVD against an exact dense SVD, independence
 * from how items are split over ranks, items without terms, and importing .npy / HDF5. */
#include "check.h"
#include "h5io.h"
#include "rng.h"
#include "text.h"
#include "util.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                   double *work, const int *lwork, int *info, size_t jobz_len, size_t uplo_len);

/* ---- helpers ---- */

/* This rank's block under the balanced split. */
static void my_block(int64_t n, int64_t *lo, int64_t *hi) { comm_split_range(n, comm_size(), comm_rank(), lo, hi); }

/* Rows [lo, hi) of every rank, gathered on every rank (n x d). */
static float *gather_rows(const float *mine, int64_t n_mine, int d, int64_t n) {
    float *all = xmalloc(sizeof(float) * (size_t)(n * d));
    comm_allgatherv_bytes(mine, n_mine * d, all, sizeof(float));
    return all;
}

/* The global TF-IDF matrix, dense (N x T), on every rank. */
static double *dense_tfidf(const TextTfidf *m, int64_t n) {
    double *mine = xcalloc((size_t)(m->n_rows * m->n_terms), sizeof(double));
    for (int64_t i = 0; i < m->n_rows; i++)
        for (int64_t k = m->row_ptr[i]; k < m->row_ptr[i + 1]; k++) mine[i * m->n_terms + m->cols[k]] = m->vals[k];
    double *all = xmalloc(sizeof(double) * (size_t)(n * m->n_terms));
    comm_allgatherv_bytes(mine, m->n_rows * m->n_terms, all, sizeof(double));
    free(mine);
    return all;
}

/* Exact top-d of A (n x t): sigma[0..d) descending and the normalised rows of U_d Sigma_d. */
static void exact_lsa(const double *a, int n, int t, int d, double *sigma, double *emb) {
    double *k = xmalloc(sizeof(double) * (size_t)n * n), *w = xmalloc(sizeof(double) * (size_t)n);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, t, 1.0, a, t, a, t, 0.0, k, n);
    int info = 0, lwork = -1;
    double q;
    dsyev_("V", "L", &n, k, &n, w, &q, &lwork, &info, 1, 1);
    lwork = (int)q;
    double *work = xmalloc(sizeof(double) * (size_t)lwork);
    dsyev_("V", "L", &n, k, &n, w, work, &lwork, &info, 1, 1);
    for (int c = 0; c < d; c++) {
        int src = n - 1 - c; /* eigenvector src of A A^T is column src: U_c */
        sigma[c] = sqrt(w[src] > 0 ? w[src] : 0);
        for (int i = 0; i < n; i++) emb[(int64_t)i * d + c] = k[(int64_t)src * n + i] * sigma[c];
    }
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int c = 0; c < d; c++) s += emb[(int64_t)i * d + c] * emb[(int64_t)i * d + c];
        for (int c = 0; c < d; c++) emb[(int64_t)i * d + c] /= sqrt(s);
    }
    free(k); free(w); free(work);
}

/* Largest |cos_E(i,j) - cos_X(i,j)| over all pairs: compares embeddings up to a rotation. */
static double max_cos_diff(const float *e, const double *x, int n, int d) {
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double ce = 0, cx = 0;
            for (int c = 0; c < d; c++) {
                ce += (double)e[(int64_t)i * d + c] * e[(int64_t)j * d + c];
                cx += x[(int64_t)i * d + c] * x[(int64_t)j * d + c];
            }
            worst = check_max(worst, fabs(ce - cx));
        }
    return worst;
}

/* Fraction of items whose cosine nearest neighbour has the same topic. */
static double nn_agreement(const float *e, int n, int d, const int *topic) {
    int agree = 0;
    for (int i = 0; i < n; i++) {
        int best = -1;
        double bs = -2;
        for (int j = 0; j < n; j++) {
            if (j == i) continue;
            double c = 0;
            for (int k = 0; k < d; k++) c += (double)e[(int64_t)i * d + k] * e[(int64_t)j * d + k];
            if (c > bs) { bs = c; best = j; }
        }
        agree += topic[best] == topic[i];
    }
    return (double)agree / n;
}

static void check_unit_rows(const float *e, int64_t n, int d) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < d; k++) {
            if (!isfinite(e[i * d + k])) bad++;
            s += (double)e[i * d + k] * e[i * d + k];
        }
        if (fabs(s - 1) > 1e-5) bad++;
    }
    CHECK_MSG(bad == 0, "%d rows not finite or not of unit norm", bad);
}

/* Planted topics: item i has topic i % 5; 8 words of its topic's 12 and 4 of 20 shared noise
 * words, in random order, with random capitalisation and punctuation. */
#define N_PLANTED 300
static char **planted_corpus(int *topic) {
    char **t = xmalloc(sizeof(char *) * N_PLANTED);
    for (int i = 0; i < N_PLANTED; i++) {
        Rng r = rng_make(42, (uint64_t)i);
        topic[i] = i % 5;
        char buf[512];
        int len = 0;
        for (int w = 0; w < 12; w++) {
            int is_topic = rng_next_below(&r, 3) != 0;
            const char *sep = rng_next_below(&r, 4) == 0 ? ", " : " ";
            if (is_topic)
                len += snprintf(buf + len, sizeof buf - (size_t)len, "%s%s%dw%d", sep, rng_next_below(&r, 2) ? "T" : "t",
                                topic[i], (int)rng_next_below(&r, 12));
            else len += snprintf(buf + len, sizeof buf - (size_t)len, "%snoise%d", sep, (int)rng_next_below(&r, 20));
        }
        t[i] = xstrdup(buf);
    }
    return t;
}

static void free_texts(char **t, int n) {
    for (int i = 0; i < n; i++) free(t[i]);
    free(t);
}

/* ---- tests ---- */

static void test_options_check(void) {
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    CHECK(o.dim == 128 && o.oversample == 16 && o.power_iters == 3 && o.hash_bits == 20 && o.min_df == 2 && o.seed == 1);
    char *err = text_encoder_check(&o);
    CHECK(err == NULL);
    o.dim = 0;
    err = text_encoder_check(&o);
    CHECK(err && strstr(err, "dim"));
    free(err);
    text_encoder_defaults(&o);
    o.hash_bits = 30;
    err = text_encoder_check(&o);
    CHECK(err && strstr(err, "hash_bits"));
    free(err);
    text_encoder_defaults(&o);
    o.min_df = 0;
    err = text_encoder_check(&o);
    CHECK(err && strstr(err, "min_df"));
    free(err);
}

/* TF-IDF of a hand-made corpus: tokens, df over ranks, min_df, sublinear tf, smooth idf. */
static void test_tfidf_weights(void) {
    char *texts[] = {"Red apple", "red APPLE!", "green apple", "Green pear, red apple", "", "!!! ...", "apple apple"};
    const int n = 7;
    int64_t lo, hi;
    my_block(n, &lo, &hi);
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    TextTfidf m;
    text_tfidf(texts + lo, hi - lo, n, &o, &m);
    /* df: red 3, apple 5, "red apple" 3, green 2; df 1: "green apple", pear, "green pear", "pear red", "apple apple" */
    CHECK(m.n_buckets == 9);
    CHECK(m.n_terms == 4);
    CHECK(m.nnz_global == 13);
    CHECK(m.row_lo == lo);
#define IDF(df) (log(8.0 / (1.0 + (df))) + 1.0)
    double want[7][4] = {{IDF(3), IDF(5), IDF(3)}, {IDF(3), IDF(5), IDF(3)}, {IDF(2), IDF(5)},
                         {IDF(2), IDF(3), IDF(5), IDF(3)}, {0}, {0}, {(1 + log(2.0)) * IDF(5)}};
    int want_n[7] = {3, 3, 2, 4, 0, 0, 1};
    for (int64_t i = 0; i < m.n_rows; i++) {
        int64_t g = lo + i, cnt = m.row_ptr[i + 1] - m.row_ptr[i];
        CHECK_MSG(cnt == want_n[g], "row %lld has %lld terms, want %d", (long long)g, (long long)cnt, want_n[g]);
        if (cnt != want_n[g]) continue;
        double w[4], got[4], norm = 0;
        for (int k = 0; k < cnt; k++) { w[k] = want[g][k]; norm += w[k] * w[k]; }
        for (int k = 0; k < cnt; k++) { w[k] /= sqrt(norm); got[k] = m.vals[m.row_ptr[i] + k]; }
        for (int a = 0; a < cnt; a++) /* compare as sorted multisets: columns are hash-ordered */
            for (int b = a + 1; b < cnt; b++) {
                if (w[b] < w[a]) { double x = w[a]; w[a] = w[b]; w[b] = x; }
                if (got[b] < got[a]) { double x = got[a]; got[a] = got[b]; got[b] = x; }
            }
        for (int k = 0; k < cnt; k++) CHECK_CLOSE(got[k], w[k], 1e-12);
        for (int64_t k = m.row_ptr[i] + 1; k < m.row_ptr[i + 1]; k++) CHECK(m.cols[k] > m.cols[k - 1]);
    }
    /* same term ids on every rank: "apple" (the only term of row 6) is in rows 0, 2, 3 */
    double *a = dense_tfidf(&m, n);
    int64_t apple = -1;
    for (int64_t t = 0; t < m.n_terms; t++)
        if (a[6 * m.n_terms + t] > 0) apple = t;
    CHECK(apple >= 0 && a[0 * m.n_terms + apple] > 0 && a[2 * m.n_terms + apple] > 0 && a[3 * m.n_terms + apple] > 0);
    for (int64_t t = 0; t < m.n_terms; t++) CHECK(a[0 * m.n_terms + t] == a[1 * m.n_terms + t]); /* case, '!' */
    free(a);
    text_tfidf_free(&m);

    /* the embedding: equal texts embed equally, empty ones get distinct unit fallback vectors */
    o.dim = 3;
    float *e = xmalloc(sizeof(float) * (size_t)((hi - lo) * o.dim));
    TextEncoderReport rep;
    text_embed(texts + lo, hi - lo, n, &o, e, &rep);
    float *all = gather_rows(e, hi - lo, o.dim, n);
    check_unit_rows(all, n, o.dim);
    CHECK(rep.n_terms == 4 && rep.nnz == 13 && rep.n_buckets == 9 && rep.n_empty == 2);
    for (int k = 0; k < o.dim; k++) CHECK_CLOSE(all[0 * o.dim + k], all[1 * o.dim + k], 1e-6);
    double c45 = 0;
    for (int k = 0; k < o.dim; k++) c45 += all[4 * o.dim + k] * all[5 * o.dim + k];
    CHECK(c45 < 0.999);
    /* rank 4 <= 4 terms: the whole variance is captured */
    CHECK_CLOSE(rep.explained_variance, 1.0, 1e-9);
    free(e);
    free(all);
}

/* Field weights as documented (text_tfidf_fields): an occurrence in field f counts weights[f]
 * towards tf, tf weighs 1 + log tf from 1 on and tf below, weight 0 drops the field (from df
 * too), n-grams never span fields, and one field of weight 1 is text_tfidf exactly. */
static void test_field_weights(void) {
    /* items x fields (title, brand) */
    char *fields[] = {"alpha", "beta", "alpha", "gamma", "delta", "beta", "delta", "gamma", "alpha alpha", NULL};
    const int n = 5, nf = 2;
    int64_t lo, hi;
    my_block(n, &lo, &hi);
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    o.min_df = 1;
    double wts[2] = {2.0, 0.5};
    TextTfidf m;
    text_tfidf_fields(fields + lo * nf, nf, wts, hi - lo, n, &o, &m);
    /* alpha, beta, gamma, delta, "alpha alpha"; no "alpha beta": n-grams never span fields */
    CHECK(m.n_terms == 5);
    double *a = dense_tfidf(&m, n);
    int64_t T = m.n_terms, alpha = -1, beta = -1, pair = -1;
    for (int64_t t = 0; t < T; t++) {
        int in0 = a[0 * T + t] > 0, in1 = a[1 * T + t] > 0, in2 = a[2 * T + t] > 0, in4 = a[4 * T + t] > 0;
        if (in0 && in1 && in4) alpha = t;
        if (in0 && in2 && !in1) beta = t;
        if (in4 && !in0) pair = t;
    }
    CHECK(alpha >= 0 && beta >= 0 && pair >= 0);
    if (alpha >= 0 && beta >= 0 && pair >= 0) {
        double idf1 = log(6.0 / 2.0) + 1, idf2 = log(6.0 / 3.0) + 1, idf3 = log(6.0 / 4.0) + 1;
        /* row 0: alpha tf 2 (title), beta tf 0.5 (brand): 1 + log 2 and 0.5 */
        CHECK_CLOSE(a[0 * T + alpha] / a[0 * T + beta], (1 + log(2.0)) * idf3 / (0.5 * idf2), 1e-9);
        /* row 4: alpha twice in the title, tf 4; the bigram once, tf 2 */
        CHECK_CLOSE(a[4 * T + alpha] / a[4 * T + pair], (1 + log(4.0)) * idf3 / ((1 + log(2.0)) * idf1), 1e-9);
    }
    free(a);
    text_tfidf_free(&m);
    /* weight 0: the brand field is gone, from the document frequencies too */
    double no_brand[2] = {1.0, 0.0};
    text_tfidf_fields(fields + lo * nf, nf, no_brand, hi - lo, n, &o, &m);
    CHECK(m.n_terms == 3); /* alpha, delta, "alpha alpha" */
    text_tfidf_free(&m);
    /* one field of weight 1 = text_tfidf, bit for bit */
    char *texts[] = {"Red apple", "red APPLE!", "green apple", "Green pear, red apple", "", "!!! ...", "apple apple"};
    my_block(7, &lo, &hi);
    TextTfidf x, y;
    double one = 1.0;
    text_tfidf(texts + lo, hi - lo, 7, &o, &x);
    text_tfidf_fields(texts + lo, 1, &one, hi - lo, 7, &o, &y);
    CHECK(x.n_terms == y.n_terms && x.row_ptr[x.n_rows] == y.row_ptr[y.n_rows]);
    CHECK(memcmp(x.vals, y.vals, sizeof(double) * (size_t)x.row_ptr[x.n_rows]) == 0);
    CHECK(memcmp(x.cols, y.cols, sizeof(int32_t) * (size_t)x.row_ptr[x.n_rows]) == 0);
    text_tfidf_free(&x);
    text_tfidf_free(&y);
}

/* Symbols separate words (® ™ en dash, no-break space), Latin-1 capitals lowercase, other
 * letters stay word characters, invalid UTF-8 separates. */
static void test_unicode_tokens(void) {
    char *texts[] = {"Olay\u00ae Regenerist\u2122 CR\u00c8ME \u2013 \u65e5\u672c",
                     "olay regenerist cr\u00e8me\u00a0\u65e5\u672c\xff", "x"};
    const int n = 3;
    int64_t lo, hi;
    my_block(n, &lo, &hi);
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    TextTfidf m;
    text_tfidf(texts + lo, hi - lo, n, &o, &m);
    /* olay, regenerist, crème, 日本 and the three bigrams; plus "x" */
    CHECK_MSG(m.n_terms == 7 && m.n_buckets == 8, "%lld terms, %lld buckets", (long long)m.n_terms, (long long)m.n_buckets);
    double *a = dense_tfidf(&m, n);
    for (int64_t t = 0; t < m.n_terms; t++) CHECK(a[t] == a[m.n_terms + t] && a[t] > 0);
    free(a);
    text_tfidf_free(&m);
}

/* With s >= rank(A) the range finder is exact: the result must be the dense SVD's. */
static void test_planted_exact(void) {
    int topic[N_PLANTED];
    char **texts = planted_corpus(topic);
    int64_t lo, hi;
    my_block(N_PLANTED, &lo, &hi);
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    o.dim = 8;
    o.oversample = 1000;
    o.power_iters = 1;
    TextTfidf m;
    text_tfidf(texts + lo, hi - lo, N_PLANTED, &o, &m);
    double *a = dense_tfidf(&m, N_PLANTED);
    int t = (int)m.n_terms;
    CHECK(t > 100);
    double sigma[8], *x = xmalloc(sizeof(double) * N_PLANTED * 8), fro2 = N_PLANTED, top2 = 0;
    exact_lsa(a, N_PLANTED, t, 8, sigma, x);
    for (int k = 0; k < 8; k++) top2 += sigma[k] * sigma[k];

    float *e = xmalloc(sizeof(float) * (size_t)((hi - lo) * o.dim));
    TextEncoderReport rep;
    text_embed(texts + lo, hi - lo, N_PLANTED, &o, e, &rep);
    float *all = gather_rows(e, hi - lo, o.dim, N_PLANTED);
    check_unit_rows(all, N_PLANTED, o.dim);
    CHECK(rep.n_terms == t && rep.n_empty == 0);
    for (int k = 0; k < 8; k++) CHECK_CLOSE(rep.sigma[k], sigma[k], 1e-8);
    CHECK_CLOSE(rep.explained_variance, top2 / fro2, 1e-9);
    CHECK(rep.explained_variance > 0 && rep.explained_variance <= 1);
    double cd = max_cos_diff(all, x, N_PLANTED, 8);
    CHECK_MSG(cd < 1e-6, "cosines differ from the exact SVD's by %g", cd);
    double nn = nn_agreement(all, N_PLANTED, 8, topic);
    CHECK_MSG(nn > 0.9, "nearest-neighbour topic agreement %.3f", nn);
    free(e); free(all); free(a); free(x);
    text_tfidf_free(&m);
    free_texts(texts, N_PLANTED);
}

/* Default settings (s = D + 16 << rank): the planted topics' singular values converge. */
static void test_planted_randomized(void) {
    int topic[N_PLANTED];
    char **texts = planted_corpus(topic);
    int64_t lo, hi;
    my_block(N_PLANTED, &lo, &hi);
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    o.dim = 5;
    TextTfidf m;
    text_tfidf(texts + lo, hi - lo, N_PLANTED, &o, &m);
    double *a = dense_tfidf(&m, N_PLANTED);
    double sigma[5], *x = xmalloc(sizeof(double) * N_PLANTED * 5);
    exact_lsa(a, N_PLANTED, (int)m.n_terms, 5, sigma, x);
    float *e = xmalloc(sizeof(float) * (size_t)((hi - lo) * o.dim));
    TextEncoderReport rep;
    text_embed(texts + lo, hi - lo, N_PLANTED, &o, e, &rep);
    float *all = gather_rows(e, hi - lo, o.dim, N_PLANTED);
    check_unit_rows(all, N_PLANTED, o.dim);
    for (int k = 0; k < 5; k++) CHECK_CLOSE(rep.sigma[k], sigma[k], 1e-4);
    CHECK(rep.sigma[5] == 0); /* only D are reported */
    CHECK(rep.explained_variance > 0.05 && rep.explained_variance < 1);
    /* sigma_6 / sigma_5 ~ 0.55: each iteration shrinks the subspace error ~3x */
    double cd = max_cos_diff(all, x, N_PLANTED, 5);
    CHECK_MSG(cd < 0.05, "cosines differ from the exact SVD's by %g", cd);
    double nn = nn_agreement(all, N_PLANTED, 5, topic);
    CHECK_MSG(nn > 0.9, "nearest-neighbour topic agreement %.3f", nn);
    free(e); free(all);
    o.power_iters = 7;
    e = xmalloc(sizeof(float) * (size_t)((hi - lo) * o.dim));
    text_embed(texts + lo, hi - lo, N_PLANTED, &o, e, &rep);
    all = gather_rows(e, hi - lo, o.dim, N_PLANTED);
    double cd7 = max_cos_diff(all, x, N_PLANTED, 5);
    CHECK_MSG(cd7 < 1e-4 && cd7 < cd / 10, "7 iterations: cosines differ by %g (3 iterations: %g)", cd7, cd);
    free(e); free(all); free(a); free(x);
    text_tfidf_free(&m);
    free_texts(texts, N_PLANTED);
}

/* Embeds the corpus under a split given by the rank starts (starts[P] = n); gathers. */
static float *embed_split(char **texts, int64_t n, const int64_t *starts, const TextEncoderOptions *o, TextEncoderReport *rep) {
    int r = comm_rank();
    int64_t lo = starts[r], hi = starts[r + 1];
    float *e = xmalloc(sizeof(float) * (size_t)((hi - lo) * o->dim));
    text_embed(texts + lo, hi - lo, n, o, e, rep);
    float *all = gather_rows(e, hi - lo, o->dim, n);
    free(e);
    return all;
}

/* The same items split three ways (balanced, all on rank 0, skewed) embed the same. */
static void test_split_independence(void) {
    int topic[N_PLANTED];
    char **texts = planted_corpus(topic);
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    o.dim = 16;
    o.oversample = 8;
    o.power_iters = 2;
    o.seed = 7;
    int p = comm_size();
    int64_t *bal = xmalloc(sizeof(int64_t) * (size_t)(p + 1)), *one = xmalloc(sizeof(int64_t) * (size_t)(p + 1)),
            *skew = xmalloc(sizeof(int64_t) * (size_t)(p + 1));
    for (int r = 0; r <= p; r++) {
        bal[r] = (int64_t)N_PLANTED * r / p; /* comm_split_range's blocks */
        one[r] = r == 0 ? 0 : N_PLANTED;
        skew[r] = (int64_t)N_PLANTED * r * r / ((int64_t)p * p);
    }
    TextEncoderReport r1, r2, r3;
    float *e1 = embed_split(texts, N_PLANTED, bal, &o, &r1);
    float *e2 = embed_split(texts, N_PLANTED, one, &o, &r2);
    float *e3 = embed_split(texts, N_PLANTED, skew, &o, &r3);
    double d12 = 0, d13 = 0;
    for (int64_t i = 0; i < (int64_t)N_PLANTED * o.dim; i++) {
        d12 = check_max(d12, fabs((double)e1[i] - e2[i]));
        d13 = check_max(d13, fabs((double)e1[i] - e3[i]));
    }
    CHECK_MSG(d12 < 1e-5 && d13 < 1e-5, "embeddings differ by %g (all on rank 0), %g (skewed)", d12, d13);
    CHECK(r1.n_terms == r2.n_terms && r1.n_terms == r3.n_terms && r1.nnz == r2.nnz && r1.nnz == r3.nnz);
    CHECK_CLOSE(r1.explained_variance, r2.explained_variance, 1e-10);
    CHECK_CLOSE(r1.sigma[0], r3.sigma[0], 1e-10);
    /* another seed gives other random directions but (nearly) the same cosines */
    o.seed = 8;
    TextEncoderReport r4;
    float *e4 = embed_split(texts, N_PLANTED, bal, &o, &r4);
    double dseed = 0;
    for (int64_t i = 0; i < (int64_t)N_PLANTED * o.dim; i++) dseed = check_max(dseed, fabs((double)e1[i] - e4[i]));
    CHECK(dseed > 0);
    CHECK_CLOSE(r4.sigma[0], r1.sigma[0], 1e-4);
    free(e1); free(e2); free(e3); free(e4); free(bal); free(one); free(skew);
    free_texts(texts, N_PLANTED);
}

/* No term reaches min_df: every item gets its fallback vector; fewer items than ranks. */
static void test_no_vocabulary(void) {
    char *texts[] = {"", "unique words here", NULL};
    const int n = 3;
    TextEncoderOptions o;
    text_encoder_defaults(&o);
    o.dim = 4;
    int p = comm_size();
    int64_t *bal = xmalloc(sizeof(int64_t) * (size_t)(p + 1)), *one = xmalloc(sizeof(int64_t) * (size_t)(p + 1));
    for (int r = 0; r <= p; r++) {
        bal[r] = (int64_t)n * r / p;
        one[r] = r == 0 ? 0 : n;
    }
    TextEncoderReport rep, rep1;
    float *e = embed_split(texts, n, bal, &o, &rep), *e1 = embed_split(texts, n, one, &o, &rep1);
    check_unit_rows(e, n, o.dim);
    CHECK(rep.n_terms == 0 && rep.n_empty == 3 && rep.explained_variance == 0 && rep.n_buckets == 5);
    for (int i = 0; i < n * o.dim; i++) CHECK(e[i] == e1[i]);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double c = 0;
            for (int k = 0; k < o.dim; k++) c += e[i * o.dim + k] * e[j * o.dim + k];
            CHECK(fabs(c) < 0.999);
        }
    free(e); free(e1); free(bal); free(one);
}

/* ---- import ---- */

/* A temporary path agreed by all ranks. */
static char *tmp_path(const char *ext) {
    int pid = (int)getpid();
    comm_bcast(&pid, sizeof pid, 0);
    static int k;
    return xsprintf("/tmp/car_test_text_%d_%d%s", pid, k++, ext);
}

/* A version 1.0 .npy (rank 0 writes). */
static void write_npy(const char *path, const char *descr, int64_t rows, int64_t cols, const void *data, size_t elem) {
    if (comm_rank() == 0) {
        char dict[256];
        int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }", descr,
                           (long long)rows, (long long)cols);
        while ((10 + len + 1) % 64) dict[len++] = ' ';
        dict[len++] = '\n';
        FILE *f = fopen(path, "wb");
        unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(len & 255), (unsigned char)(len >> 8)};
        fwrite(pre, 1, 10, f);
        fwrite(dict, 1, (size_t)len, f);
        fwrite(data, elem, (size_t)(rows * cols), f);
        fclose(f);
    }
    comm_barrier();
}

#define V_IMP 37
#define D_IMP 5
static double imp_value(int64_t i, int k) { return (double)(i * 8 + k) * 0.25 - 20.0; } /* exact in float */

static void check_import(const char *path, int want_dim) {
    int64_t lo, hi;
    my_block(V_IMP, &lo, &hi);
    float *x = NULL;
    int d = text_import_embeddings(path, V_IMP, lo, hi, &x);
    CHECK_MSG(d == want_dim, "%s: dim %d", path, d);
    int bad = 0;
    for (int64_t i = lo; i < hi && d == want_dim; i++)
        for (int k = 0; k < d; k++) bad += x[(i - lo) * d + k] != (float)imp_value(i, k);
    CHECK_MSG(bad == 0, "%s: %d values differ", path, bad);
    free(x);
}

static void test_import_npy(void) {
    float f4[V_IMP * D_IMP];
    double f8[V_IMP * D_IMP];
    for (int i = 0; i < V_IMP; i++)
        for (int k = 0; k < D_IMP; k++) f4[i * D_IMP + k] = (float)(f8[i * D_IMP + k] = imp_value(i, k));
    char *p4 = tmp_path(".npy"), *p8 = tmp_path(".npy");
    write_npy(p4, "<f4", V_IMP, D_IMP, f4, 4);
    write_npy(p8, "<f8", V_IMP, D_IMP, f8, 8);
    check_import(p4, D_IMP);
    check_import(p8, D_IMP);
    comm_barrier();
    if (comm_rank() == 0) { unlink(p4); unlink(p8); }
    free(p4); free(p8);
}

static void test_import_hdf5(void) {
    int64_t lo, hi;
    my_block(V_IMP, &lo, &hi);
    float *f4 = xmalloc(sizeof(float) * (size_t)((hi - lo) * D_IMP));
    double *f8 = xmalloc(sizeof(double) * (size_t)((hi - lo) * D_IMP));
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)(hi - lo));
    for (int64_t i = lo; i < hi; i++) {
        ids[i - lo] = (int32_t)i;
        for (int k = 0; k < D_IMP; k++) f4[(i - lo) * D_IMP + k] = (float)(f8[(i - lo) * D_IMP + k] = imp_value(i, k));
    }
    int64_t dims[2] = {V_IMP, D_IMP}, dims_other[2] = {V_IMP, 2};
    /* only one 2-D float dataset (nested), next to a 1-D int one: found without a name */
    char *pa = tmp_path(".h5"), *pb = tmp_path(".h5");
    hid_t f = h5io_create(pa);
    h5io_write_rows(f, "/ids", H5T_NATIVE_INT32, 1, dims, lo, hi - lo, ids);
    h5io_write_rows(f, "/model/vectors", H5T_NATIVE_FLOAT, 2, dims, lo, hi - lo, f4);
    h5io_close(f);
    /* float64 /items/embedding preferred over another 2-D float dataset; PATH:/dataset picks */
    f = h5io_create(pb);
    h5io_write_rows(f, "/items/embedding", H5T_NATIVE_DOUBLE, 2, dims, lo, hi - lo, f8);
    h5io_write_rows(f, "/z_other", H5T_NATIVE_DOUBLE, 2, dims, lo, hi - lo, f8);
    double *zero = xcalloc((size_t)((hi - lo) * 2), sizeof(double));
    h5io_write_rows(f, "/narrow", H5T_NATIVE_DOUBLE, 2, dims_other, lo, hi - lo, zero);
    h5io_close(f);
    check_import(pa, D_IMP);
    check_import(pb, D_IMP);
    char *pb_named = xsprintf("%s:/z_other", pb), *pb_narrow = xsprintf("%s:/narrow", pb);
    check_import(pb_named, D_IMP);
    float *x = NULL;
    int d = text_import_embeddings(pb_narrow, V_IMP, lo, hi, &x);
    CHECK(d == 2);
    for (int64_t i = 0; i < (hi - lo) * 2; i++) CHECK(x[i] == 0);
    free(x);
    comm_barrier();
    if (comm_rank() == 0) { unlink(pa); unlink(pb); }
    free(pa); free(pb); free(pb_named); free(pb_narrow); free(f4); free(f8); free(ids); free(zero);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_text");
    RUN_TEST(test_options_check);
    RUN_TEST(test_tfidf_weights);
    RUN_TEST(test_field_weights);
    RUN_TEST(test_unicode_tokens);
    RUN_TEST(test_planted_exact);
    RUN_TEST(test_planted_randomized);
    RUN_TEST(test_split_independence);
    RUN_TEST(test_no_vocabulary);
    RUN_TEST(test_import_npy);
    RUN_TEST(test_import_hdf5);
    return check_finish();
}
