/* text: TF-IDF + randomized SVD text encoder, and the embedding importer (.npy, HDF5). */
#include "text.h"
#include "comm.h"
#include "h5io.h"
#include "log.h"
#include "rng.h"
#include "util.h"
#include <cblas.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader assumes a little-endian host"
#endif

/* random streams of the encoder (values depend on (seed, stream, counter) only) */
#define STREAM_OMEGA 0x6f6d656761000000ULL    /* + column: range-finder directions */
#define STREAM_SIGN 0x7369676e00000000ULL     /* sign reference direction in term space */
#define STREAM_FALLBACK 0x66616c6c00000000ULL /* vectors for items without terms */

/* LAPACK (Fortran, exported by OpenBLAS); trailing size_t are the hidden string lengths */
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                   double *work, const int *lwork, int *info, size_t jobz_len, size_t uplo_len);

void text_encoder_defaults(TextEncoderOptions *o) {
    o->dim = 128;
    o->oversample = 16;
    o->power_iters = 3;
    o->hash_bits = 20;
    o->min_df = 2;
    o->seed = 1;
}

char *text_encoder_check(const TextEncoderOptions *o) {
    if (o->dim < 1 || o->dim > 4096) return xsprintf("text encoder: dim = %d, expected 1..4096", o->dim);
    if (o->oversample < 0 || o->oversample > 1024)
        return xsprintf("text encoder: oversample = %d, expected 0..1024", o->oversample);
    if (o->power_iters < 0 || o->power_iters > 50)
        return xsprintf("text encoder: power_iters = %d, expected 0..50", o->power_iters);
    if (o->hash_bits < 8 || o->hash_bits > 26) /* 12 bytes per bucket on every rank */
        return xsprintf("text encoder: hash_bits = %d, expected 8..26", o->hash_bits);
    if (o->min_df < 1) return xsprintf("text encoder: min_df = %d, expected >= 1", o->min_df);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Tokenising and hashing */

/* Decodes the UTF-8 code point at s (len set to its byte count); invalid bytes give 0xFFFD. */
static uint32_t utf8_decode(const unsigned char *s, int *len) {
    uint32_t c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0) { *len = 1; return 0xFFFD; }
    if (n == 1) { *len = 1; return c; }
    c &= 0x7Fu >> n;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) { *len = 1; return 0xFFFD; } /* also stops at the NUL */
        c = (c << 6) | (s[i] & 0x3F);
    }
    *len = n;
    return c;
}

/* Letters and digits; punctuation and symbols (Latin-1 signs, U+2000..U+2BFF, CJK
 * punctuation, emoji, variation selectors) separate words, so "Olay®" is "olay". */
static int is_word_char(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (c < 0xC0 || c == 0xD7 || c == 0xF7 || c == 0xFFFD) return 0;
    if ((c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) || (c >= 0xFE00 && c <= 0xFE0F)) return 0;
    if (c == 0xFEFF || c >= 0x1F000) return 0;
    return 1;
}

static int utf8_encode(uint32_t c, char *out) {
    if (c < 0x80) { out[0] = (char)c; return 1; }
    if (c < 0x800) { out[0] = (char)(0xC0 | (c >> 6)); out[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12)); out[1] = (char)(0x80 | ((c >> 6) & 0x3F)); out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18)); out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F)); out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static uint32_t lowercase(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32; /* Latin-1 capitals */
    return c;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Growable scratch of one text: lowercased word bytes and the n-gram buckets. */
typedef struct {
    char *chars;
    size_t chars_cap;
    uint32_t *ids;
    size_t ids_cap;
} Scratch;

static uint32_t bucket_of(uint64_t h, int bits) { return (uint32_t)(rng_mix(h) >> (64 - bits)); }

/* The sorted buckets of every unigram and adjacent-word bigram of text; returns the count. */
static int64_t text_ngrams(const char *text, int bits, Scratch *sc) {
    size_t len = text ? strlen(text) : 0;
    if (sc->chars_cap < 4 * len + 4) { sc->chars_cap = 4 * len + 4; sc->chars = xrealloc(sc->chars, sc->chars_cap); }
    if (sc->ids_cap < 2 * len + 2) { sc->ids_cap = 2 * len + 2; sc->ids = xrealloc(sc->ids, sc->ids_cap * sizeof(uint32_t)); }
    const unsigned char *s = (const unsigned char *)text;
    int64_t n_ids = 0;
    uint64_t prev_hash = 0;
    int have_prev = 0;
    size_t i = 0;
    while (i < len) {
        int cl;
        uint32_t c = utf8_decode(s + i, &cl);
        if (!is_word_char(c)) { i += (size_t)cl; continue; }
        size_t w = 0; /* the word, lowercased, into chars */
        while (i < len) {
            c = utf8_decode(s + i, &cl);
            if (!is_word_char(c)) break;
            w += (size_t)utf8_encode(lowercase(c), sc->chars + w);
            i += (size_t)cl;
        }
        uint64_t h = fnv1a64(FNV64_INIT, sc->chars, w);
        sc->ids[n_ids++] = bucket_of(h, bits);
        /* bigram "prev word": the hash of the bytes "prev cur" (no unigram holds a space) */
        if (have_prev) sc->ids[n_ids++] = bucket_of(fnv1a64(fnv1a64(prev_hash, " ", 1), sc->chars, w), bits);
        prev_hash = h;
        have_prev = 1;
    }
    qsort(sc->ids, (size_t)n_ids, sizeof(uint32_t), cmp_u32);
    return n_ids;
}

/* ---------------------------------------------------------------------------------------- */
/* TF-IDF */

/* Global start of this rank's block; checks the blocks add up to n_global. */
static int64_t block_start(int64_t n_local, int64_t n_global) {
    int64_t lo = 0, total = n_local;
    COMM_CHECK(MPI_Exscan(&n_local, &lo, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
    if (comm_rank() == 0) lo = 0; /* Exscan leaves rank 0's result undefined */
    comm_sum_i64(&total, 1);
    if (total != n_global)
        comm_fail("text encoder: the ranks hold %lld texts in all, expected %lld", (long long)total, (long long)n_global);
    return lo;
}

/* Sum over ranks of an array longer than an MPI count. */
static void sum_i64_big(int64_t *buf, int64_t n) {
    for (int64_t off = 0; off < n; off += 1 << 26) comm_sum_i64(buf + off, (int)(n - off < (1 << 26) ? n - off : (1 << 26)));
}

static void sum_double_big(double *buf, int64_t n) {
    for (int64_t off = 0; off < n; off += 1 << 26)
        comm_sum_double(buf + off, (int)(n - off < (1 << 26) ? n - off : (1 << 26)));
}

/* The weighted term frequency of one item: every field's n-gram buckets (sorted), each
 * occurrence counting the field's weight; out: distinct buckets and their summed weights. */
typedef struct { uint32_t bucket; float weight; } WeightedId;

static int cmp_weighted(const void *a, const void *b) {
    const WeightedId *x = a, *y = b;
    return (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

/* tf -> the TF part of the weight: 1 + log tf (sublinear) from tf = 1 on, tf itself below
 * (a field weighted under 1): continuous, 0 for weight 0 */
static double tf_weight(double tf) { return tf >= 1 ? 1.0 + log(tf) : tf; }

void text_tfidf(char *const *texts, int64_t n_local, int64_t n_global, const TextEncoderOptions *o, TextTfidf *m) {
    text_tfidf_fields(texts, 1, NULL, n_local, n_global, o, m);
}

void text_tfidf_fields(char *const *fields, int n_fields, const double *weights, int64_t n_local, int64_t n_global,
                       const TextEncoderOptions *o, TextTfidf *m) {
    double t0 = comm_wtime();
    memset(m, 0, sizeof *m);
    m->n_rows = n_local;
    m->row_lo = block_start(n_local, n_global);
    const int bits = o->hash_bits;
    const int64_t n_buckets = (int64_t)1 << bits;

    /* 1. distinct buckets of each item with their weighted counts (CSR) */
    int64_t cap = 1024, used = 0;
    uint32_t *bucket = xmalloc(sizeof(uint32_t) * (size_t)cap);
    double *count = xmalloc(sizeof(double) * (size_t)cap);
    m->row_ptr = xmalloc(sizeof(int64_t) * (size_t)(n_local + 1));
    m->row_ptr[0] = 0;
    Scratch sc = {0};
    WeightedId *all = NULL;
    size_t all_cap = 0;
    int64_t n_tokens = 0;
    for (int64_t r = 0; r < n_local; r++) {
        int64_t n = 0;
        for (int f = 0; f < n_fields; f++) { /* n-grams never span two fields */
            double w = weights ? weights[f] : 1.0;
            if (w <= 0) continue;
            int64_t k = text_ngrams(fields[r * n_fields + f], bits, &sc);
            if ((size_t)(n + k) > all_cap) all = xrealloc(all, sizeof(WeightedId) * (all_cap = 2 * (size_t)(n + k)));
            for (int64_t q = 0; q < k; q++) all[n + q] = (WeightedId){sc.ids[q], (float)w};
            n += k;
        }
        if (n_fields > 1) qsort(all, (size_t)n, sizeof *all, cmp_weighted);
        n_tokens += n;
        if (used + n > cap) {
            while (used + n > cap) cap *= 2;
            bucket = xrealloc(bucket, sizeof(uint32_t) * (size_t)cap);
            count = xrealloc(count, sizeof(double) * (size_t)cap);
        }
        for (int64_t k = 0; k < n; k++) {
            if (k > 0 && all[k].bucket == all[k - 1].bucket) { count[used - 1] += all[k].weight; continue; }
            bucket[used] = all[k].bucket;
            count[used++] = all[k].weight;
        }
        m->row_ptr[r + 1] = used;
    }
    free(all);
    free(sc.chars);
    free(sc.ids);
    comm_sum_i64(&n_tokens, 1);
    log_info("text: %lld items, %lld n-gram occurrences hashed into 2^%d buckets (%.2fs)", (long long)n_global,
             (long long)n_tokens, bits, comm_wtime() - t0);

    /* 2. document frequency over all ranks; vocabulary = buckets with df >= min_df, in bucket order */
    int64_t *df = xcalloc((size_t)n_buckets, sizeof(int64_t));
    for (int64_t k = 0; k < used; k++) df[bucket[k]]++;
    sum_i64_big(df, n_buckets);
    int32_t *term_of = xmalloc(sizeof(int32_t) * (size_t)n_buckets);
    for (int64_t b = 0; b < n_buckets; b++) {
        m->n_buckets += df[b] > 0;
        term_of[b] = df[b] >= o->min_df ? (int32_t)m->n_terms++ : -1;
    }
    double *idf = xmalloc(sizeof(double) * (size_t)m->n_terms); /* by term */
    for (int64_t b = 0; b < n_buckets; b++)
        if (term_of[b] >= 0) idf[term_of[b]] = log((1.0 + (double)n_global) / (1.0 + (double)df[b])) + 1.0;
    free(df);

    /* 3. weights tf_weight(tf) * idf, rows of unit norm; keeps only vocabulary terms */
    m->cols = xmalloc(sizeof(int32_t) * (size_t)used);
    m->vals = xmalloc(sizeof(double) * (size_t)used);
    int64_t nnz = 0;
    for (int64_t r = 0; r < n_local; r++) {
        int64_t start = nnz;
        double norm2 = 0;
        for (int64_t k = m->row_ptr[r]; k < m->row_ptr[r + 1]; k++) {
            int32_t t = term_of[bucket[k]];
            if (t < 0) continue;
            double v = tf_weight(count[k]) * idf[t];
            m->cols[nnz] = t;
            m->vals[nnz++] = v;
            norm2 += v * v;
        }
        double inv = norm2 > 0 ? 1.0 / sqrt(norm2) : 0.0;
        for (int64_t k = start; k < nnz; k++) m->vals[k] *= inv;
        m->row_ptr[r] = start; /* in place: the loop has read the unfiltered bounds it needs */
    }
    free(bucket);
    free(count);
    free(term_of);
    free(idf);
    m->row_ptr[n_local] = nnz;
    m->nnz_global = nnz;
    comm_sum_i64(&m->nnz_global, 1);
    log_info("text: vocabulary %lld terms (df >= %d) of %lld distinct n-grams, %lld non-zeros (%.2fs)",
             (long long)m->n_terms, o->min_df, (long long)m->n_buckets, (long long)m->nnz_global, comm_wtime() - t0);
}

void text_tfidf_free(TextTfidf *m) {
    free(m->row_ptr);
    free(m->cols);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------------------------------- */
/* Randomized truncated SVD */

/* y = A z: (n x s) = (n x T, sparse) (T x s) */
static void csr_times(const TextTfidf *m, const double *z, int s, double *y) {
    for (int64_t i = 0; i < m->n_rows; i++) {
        double *yi = y + i * s;
        memset(yi, 0, sizeof(double) * (size_t)s);
        for (int64_t k = m->row_ptr[i]; k < m->row_ptr[i + 1]; k++)
            cblas_daxpy(s, m->vals[k], z + (int64_t)m->cols[k] * s, 1, yi, 1); /* the BLAS kernel is vectorised */
    }
}

/* z = A^T y summed over ranks: (T x s) = (T x n, sparse) (n x s) */
static void csr_t_times(const TextTfidf *m, const double *y, int s, double *z) {
    memset(z, 0, sizeof(double) * (size_t)(m->n_terms * s));
    for (int64_t i = 0; i < m->n_rows; i++) {
        const double *yi = y + i * s;
        for (int64_t k = m->row_ptr[i]; k < m->row_ptr[i + 1]; k++)
            cblas_daxpy(s, m->vals[k], yi, 1, z + (int64_t)m->cols[k] * s, 1);
    }
    sum_double_big(z, m->n_terms * s);
}

/* Eigen-decomposition of the symmetric s x s matrix a (overwritten by the eigenvectors,
 * column j at a + j*s); w ascending. */
static void sym_eig(double *a, int s, double *w) {
    int info = 0, lwork = -1;
    double query;
    dsyev_("V", "L", &s, a, &s, w, &query, &lwork, &info, 1, 1);
    lwork = (int)query;
    double *work = xmalloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
    dsyev_("V", "L", &s, a, &s, w, work, &lwork, &info, 1, 1);
    free(work);
    if (info != 0) comm_fatal("text encoder: dsyev failed (info %d)", info);
}

/* g = y^T y summed over ranks, full symmetric (s x s); y is n x s. */
static void gram(const double *y, int64_t n, int s, double *g) {
    memset(g, 0, sizeof(double) * (size_t)s * (size_t)s);
    if (n > 0) cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, s, (int)n, 1.0, y, s, 0.0, g, s);
    for (int i = 0; i < s; i++)
        for (int j = i + 1; j < s; j++) g[(int64_t)j * s + i] = g[(int64_t)i * s + j];
    comm_sum_double(g, s * s);
}

/* Columns of y (n x s, rows spread over ranks) made orthonormal over all ranks: y <- y V L^-1/2
 * from the eigen-decomposition of the Gram matrix. Directions without weight (rank-deficient y)
 * become zero columns instead of failing like Cholesky would. A second pass restores the
 * accuracy the squared condition number costs; the power iterations only need the span. */
static void orthonormalize(double *y, int64_t n, int s, double *tmp, int passes) {
    double *g = xmalloc(sizeof(double) * (size_t)s * (size_t)s), *w = xmalloc(sizeof(double) * (size_t)s);
    for (int pass = 0; pass < passes; pass++) {
        gram(y, n, s, g);
        if (comm_rank() == 0) { /* one rank decides, so no rank can pick another eigenvector sign */
            sym_eig(g, s, w);
            double wmax = w[s - 1];
            for (int j = 0; j < s; j++) {
                double scale = wmax > 0 && w[j] > 1e-12 * wmax ? 1.0 / sqrt(w[j]) : 0.0;
                for (int i = 0; i < s; i++) g[(int64_t)j * s + i] *= scale;
            }
        }
        comm_bcast(g, (int64_t)sizeof(double) * s * s, 0);
        /* g holds V column-major, i.e. V^T row-major */
        if (n > 0) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, s, s, 1.0, y, s, g, s, 0.0, tmp, s);
        memcpy(y, tmp, sizeof(double) * (size_t)(n * s));
    }
    free(g);
    free(w);
}

/* Fills out (n_rows x dim) with U_D Sigma_D of A, rows normalised; updates rep. */
void text_lsa(const TextTfidf *m, const TextEncoderOptions *o, float *out, TextEncoderReport *rep) {
    double t0 = comm_wtime();
    const int64_t n = m->n_rows, T = m->n_terms;
    const int dim = o->dim;
    int64_t n_global = n;
    comm_sum_i64(&n_global, 1);
    /* the range of A has at most min(N, T) dimensions: more directions add nothing */
    int64_t s64 = (int64_t)dim + o->oversample;
    if (s64 > T) s64 = T;
    if (s64 > n_global) s64 = n_global;
    const int s = (int)s64;
    double *e = xcalloc((size_t)(n * dim), sizeof(double)); /* U_D Sigma_D before normalising */
    double fro2 = 0, captured = 0;
    for (int64_t k = 0; k < m->row_ptr[n]; k++) fro2 += m->vals[k] * m->vals[k];
    comm_sum_double(&fro2, 1);

    if (s > 0) {
        double *z = xmalloc(sizeof(double) * (size_t)(T * s)); /* term space, T x s */
        double *y = xmalloc(sizeof(double) * (size_t)(n * s)); /* item space, n x s (local rows) */
        double *tmp = xmalloc(sizeof(double) * (size_t)(n * s));
        /* Omega (T x s): only the rows of the terms this rank's items use are ever read */
        unsigned char *drawn = xcalloc((size_t)T, 1);
        for (int64_t k = 0; k < m->row_ptr[n]; k++) {
            int64_t t = m->cols[k];
            if (drawn[t]) continue;
            drawn[t] = 1;
            for (int j = 0; j < s; j++) z[t * s + j] = rng_normal(o->seed, STREAM_OMEGA + (uint64_t)j, (uint64_t)t);
        }
        free(drawn);
        csr_times(m, z, s, y);
        orthonormalize(y, n, s, tmp, o->power_iters > 0 ? 1 : 2);
        for (int it = 0; it < o->power_iters; it++) {
            csr_t_times(m, y, s, z);
            csr_times(m, z, s, y);
            orthonormalize(y, n, s, tmp, it + 1 < o->power_iters ? 1 : 2);
            log_info("text: power iteration %d/%d (%.2fs)", it + 1, o->power_iters, comm_wtime() - t0);
        }
        /* B = Q^T A = Z^T; B B^T = Z^T Z = W Sigma^2 W^T, computed over slices of the terms */
        csr_t_times(m, y, s, z);
        int64_t tlo, thi;
        comm_split_range(T, comm_size(), comm_rank(), &tlo, &thi);
        double *h = xcalloc((size_t)s * (size_t)s + (size_t)s, sizeof(double)), *c = h + (int64_t)s * s;
        if (thi > tlo) {
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, s, (int)(thi - tlo), 1.0, z + tlo * s, s, 0.0, h, s);
            /* c = Z^T r for a fixed random r: sign(W_k . c) = sign of term loading V_k along r */
            for (int64_t t = tlo; t < thi; t++) {
                double r = rng_normal(o->seed, STREAM_SIGN, (uint64_t)t);
                for (int j = 0; j < s; j++) c[j] += r * z[t * s + j];
            }
        }
        for (int i = 0; i < s; i++)
            for (int j = i + 1; j < s; j++) h[(int64_t)j * s + i] = h[(int64_t)i * s + j];
        comm_sum_double(h, s * s + s);
        /* M (s x dim): column k = W_k sigma_k for the k-th largest eigenvalue, then the sigmas;
         * rank 0 computes it for everyone */
        int kmax = dim < s ? dim : s;
        double *mk = xcalloc((size_t)s * (size_t)dim + (size_t)kmax, sizeof(double)), *sig = mk + (int64_t)s * dim;
        if (comm_rank() == 0) {
            double *lam = xmalloc(sizeof(double) * (size_t)s);
            sym_eig(h, s, lam);
            for (int k = 0; k < kmax; k++) {
                int src = s - 1 - k;
                double *wk = h + (int64_t)src * s, dot = 0;
                sig[k] = sqrt(lam[src] > 0 ? lam[src] : 0.0);
                for (int i = 0; i < s; i++) dot += wk[i] * c[i];
                double f = dot < 0 ? -sig[k] : sig[k];
                for (int i = 0; i < s; i++) mk[(int64_t)i * dim + k] = wk[i] * f;
            }
            free(lam);
        }
        comm_bcast(mk, (int64_t)sizeof(double) * ((int64_t)s * dim + kmax), 0);
        for (int k = 0; k < kmax; k++) {
            captured += sig[k] * sig[k];
            if (rep && k < TEXT_REPORT_SIGMAS) rep->sigma[k] = sig[k];
        }
        if (n > 0) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, dim, s, 1.0, y, s, mk, dim, 0.0, e, dim);
        free(mk);
        free(h);
        free(z);
        free(y);
        free(tmp);
    }

    /* normalise; rows without a projection get the fallback vector of their global index */
    int64_t n_empty = 0;
    for (int64_t i = 0; i < n; i++) {
        double *ei = e + i * dim, norm2 = 0;
        for (int k = 0; k < dim; k++) norm2 += ei[k] * ei[k];
        if (norm2 < 1e-12) {
            n_empty++;
            norm2 = 0;
            for (int k = 0; k < dim; k++) {
                ei[k] = rng_normal(o->seed, STREAM_FALLBACK, (uint64_t)(m->row_lo + i) * (uint64_t)dim + (uint64_t)k);
                norm2 += ei[k] * ei[k];
            }
        }
        double inv = 1.0 / sqrt(norm2);
        for (int k = 0; k < dim; k++) out[i * dim + k] = (float)(ei[k] * inv);
    }
    free(e);
    comm_sum_i64(&n_empty, 1);
    if (rep) {
        rep->n_empty = n_empty;
        rep->explained_variance = fro2 > 0 ? fmin(1.0, captured / fro2) : 0.0;
    }
}

void text_embed(char *const *texts, int64_t n_local, int64_t n_global, const TextEncoderOptions *o, float *out,
                TextEncoderReport *rep) {
    text_embed_fields(texts, 1, NULL, n_local, n_global, o, out, rep);
}

void text_embed_fields(char *const *fields, int n_fields, const double *weights, int64_t n_local, int64_t n_global,
                       const TextEncoderOptions *o, float *out, TextEncoderReport *rep) {
    double t0 = comm_wtime();
    char *err = text_encoder_check(o);
    if (err) comm_fail("%s", err);
    TextEncoderReport local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    TextTfidf m;
    text_tfidf_fields(fields, n_fields, weights, n_local, n_global, o, &m);
    if (m.n_terms == 0) log_warn("text encoder: no n-gram occurs in %d or more items: every item gets a random vector", o->min_df);
    text_lsa(&m, o, out, rep);
    rep->n_buckets = m.n_buckets;
    rep->n_terms = m.n_terms;
    rep->nnz = m.nnz_global;
    text_tfidf_free(&m);
    double dt = comm_wtime() - t0;
    comm_max_double(&dt, 1);
    rep->seconds = dt;
    if (rep->n_empty > 0)
        log_info("text: %lld of %lld items have no vocabulary term and get a random unit vector", (long long)rep->n_empty,
                 (long long)n_global);
    log_info("text: %d-dim embeddings, explained variance %.4f, sigma_1 %.4f (%.2fs)", o->dim, rep->explained_variance,
             rep->sigma[0], dt);
}

void text_l2_normalize(float *x, int64_t n, int d) {
    for (int64_t i = 0; i < n; i++) {
        float *xi = x + i * d;
        double norm2 = 0;
        for (int k = 0; k < d; k++) norm2 += (double)xi[k] * xi[k];
        if (norm2 <= 0) continue;
        float inv = (float)(1.0 / sqrt(norm2));
        for (int k = 0; k < d; k++) xi[k] *= inv;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Importing embeddings */

/* The value of 'key' in the header dict (after the colon and blanks), or NULL. */
static const char *npy_value(const char *dict, const char *key) {
    char q1[64], q2[64];
    snprintf(q1, sizeof q1, "'%s'", key);
    snprintf(q2, sizeof q2, "\"%s\"", key);
    const char *p = strstr(dict, q1);
    if (!p) p = strstr(dict, q2);
    if (!p) return NULL;
    p += strlen(q1);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

char *text_npy_parse_header(const unsigned char *buf, size_t n, int64_t file_size, NpyHeader *h) {
    memset(h, 0, sizeof *h);
    if (n < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) return xsprintf("not a .npy file (bad magic)");
    int major = buf[6];
    size_t hlen, off;
    if (major == 1) { hlen = (size_t)buf[8] | (size_t)buf[9] << 8; off = 10; }
    else if (major == 2 || major == 3) {
        if (n < 12) return xsprintf("truncated .npy header");
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        off = 12;
    } else return xsprintf(".npy format version %d is not supported (1, 2 or 3)", major);
    if (off + hlen > n || (int64_t)(off + hlen) > file_size)
        return xsprintf("truncated .npy header (%lld bytes, header says %lld)", (long long)(n < (size_t)file_size ? n : (size_t)file_size),
                        (long long)(off + hlen));
    char *dict = xmalloc(hlen + 1);
    memcpy(dict, buf + off, hlen);
    dict[hlen] = 0;
    for (size_t k = 0; k < hlen; k++) /* one-line messages: the padding ends with '\n' */
        if (dict[k] == '\n' || dict[k] == '\r') dict[k] = ' ';
    char *err = NULL;
    const char *d = npy_value(dict, "descr"), *f = npy_value(dict, "fortran_order"), *s = npy_value(dict, "shape");
    if (!d || !f || !s || (*d != '\'' && *d != '"') || *s != '(') {
        err = xsprintf("malformed .npy header: %s", dict);
        goto done;
    }
    char descr[32] = "";
    size_t dl = strcspn(d + 1, "'\"");
    snprintf(descr, sizeof descr, "%.*s", (int)(dl < 31 ? dl : 31), d + 1);
    if (strcmp(descr, "<f4") == 0) h->elem_size = 4;
    else if (strcmp(descr, "<f8") == 0) h->elem_size = 8;
    else {
        err = xsprintf("dtype '%s', expected float32 '<f4' or float64 '<f8' (little-endian)", descr);
        goto done;
    }
    if (strncmp(f, "False", 5) != 0) {
        err = xsprintf(strncmp(f, "True", 4) == 0 ? "Fortran-order array, expected C order (save np.ascontiguousarray(x))"
                                                 : "malformed fortran_order in .npy header");
        goto done;
    }
    int64_t dims[8];
    int nd = 0;
    const char *p = s + 1;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == ')') break;
        char *endp;
        long long v = strtoll(p, &endp, 10);
        if (endp == p || v < 0 || nd == 8) { err = xsprintf("malformed shape in .npy header: %s", dict); goto done; }
        dims[nd++] = v;
        p = endp;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p != ')') { err = xsprintf("malformed shape in .npy header: %s", dict); goto done; }
    }
    if (nd != 2) {
        err = xsprintf("%d-D array, expected 2-D (items x dim)", nd);
        goto done;
    }
    h->rows = dims[0];
    h->cols = dims[1];
    h->data_offset = (int64_t)(off + hlen);
    if (h->cols < 1 || h->cols > (1 << 20)) { err = xsprintf("shape (%lld, %lld): dim must be 1..1048576", (long long)h->rows, (long long)h->cols); goto done; }
    if (h->rows > (INT64_MAX - h->data_offset) / h->cols / h->elem_size) { err = xsprintf("shape too large"); goto done; }
    int64_t need = h->data_offset + h->rows * h->cols * h->elem_size;
    if (file_size < need)
        err = xsprintf("truncated .npy data: %lld bytes, shape (%lld, %lld) needs %lld", (long long)file_size,
                       (long long)h->rows, (long long)h->cols, (long long)need);
done:
    free(dict);
    return err;
}

char *text_npy_read_rows(const char *path, int64_t n_items, int64_t lo, int64_t hi, int *dim, float **out) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return xsprintf("%s: cannot open", path);
    char *err = NULL;
    fseeko(fp, 0, SEEK_END);
    int64_t size = (int64_t)ftello(fp);
    fseeko(fp, 0, SEEK_SET);
    size_t want = size < 65536 + 12 ? (size_t)size : 65536 + 12; /* header lengths are small */
    unsigned char *head = xmalloc(want);
    size_t got = fread(head, 1, want, fp);
    NpyHeader h;
    char *perr = text_npy_parse_header(head, got, size, &h);
    free(head);
    if (perr) { err = xsprintf("%s: %s", path, perr); free(perr); goto done; }
    if (h.rows != n_items) {
        err = xsprintf("%s: %lld rows, but there are %lld items (one row per item, in item id order)", path,
                       (long long)h.rows, (long long)n_items);
        goto done;
    }
    *dim = (int)h.cols;
    int64_t count = (hi - lo) * h.cols;
    *out = xmalloc(sizeof(float) * (size_t)count);
    void *raw = h.elem_size == 4 ? (void *)*out : xmalloc(sizeof(double) * (size_t)count);
    if (fseeko(fp, (off_t)(h.data_offset + lo * h.cols * h.elem_size), SEEK_SET) != 0 ||
        fread(raw, (size_t)h.elem_size, (size_t)count, fp) != (size_t)count)
        err = xsprintf("%s: read error at rows %lld..%lld", path, (long long)lo, (long long)hi);
    if (h.elem_size == 8) {
        for (int64_t i = 0; i < count; i++) (*out)[i] = (float)((double *)raw)[i];
        free(raw);
    }
done:
    fclose(fp);
    if (err) { free(*out); *out = NULL; }
    return err;
}

/* H5Lvisit callback: counts the 2-D floating-point datasets and keeps the first one's name. */
typedef struct { int count; char name[512]; } FloatSets;

static int is_float_2d(hid_t dset) {
    hid_t type = H5Dget_type(dset), space = H5Dget_space(dset);
    int ok = H5Tget_class(type) == H5T_FLOAT && H5Sget_simple_extent_ndims(space) == 2;
    H5Tclose(type);
    H5Sclose(space);
    return ok;
}

static herr_t visit_float_2d(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    FloatSets *fs = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
    if (obj < 0) return 0;
    if (H5Iget_type(obj) == H5I_DATASET && is_float_2d(obj)) {
        if (fs->count++ == 0) snprintf(fs->name, sizeof fs->name, "/%s", name);
    }
    H5Oclose(obj);
    return 0;
}

static int h5_read_rows(const char *path, const char *dataset, int64_t n_items, int64_t lo, int64_t hi, float **out) {
    hid_t file = h5io_open(path, 0);
    char name[512];
    if (dataset) {
        snprintf(name, sizeof name, "%s", dataset);
        if (!h5io_has(file, name)) comm_fail("%s: no dataset %s", path, name);
    } else if (h5io_has(file, "/items/embedding")) snprintf(name, sizeof name, "/items/embedding");
    else if (h5io_has(file, "/embedding")) snprintf(name, sizeof name, "/embedding");
    else {
        FloatSets fs = {0, ""};
        H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, visit_float_2d, &fs);
        if (fs.count != 1)
            comm_fail("%s: %s 2-D float datasets and no /items/embedding or /embedding: name one as %s:/DATASET", path,
                      fs.count ? "several" : "no", path);
        snprintf(name, sizeof name, "%s", fs.name);
    }
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    if (dset < 0) comm_fail("%s: %s is not a dataset", path, name);
    hid_t type = H5Dget_type(dset);
    int is_float = H5Tget_class(type) == H5T_FLOAT;
    H5Tclose(type);
    H5Dclose(dset);
    if (!is_float) comm_fail("%s: %s is not floating-point, expected float32 or float64", path, name);
    int64_t dims[8];
    int nd = h5io_shape(file, name, dims, 8);
    if (nd != 2) comm_fail("%s: %s is %d-D, expected 2-D (items x dim)", path, name, nd);
    if (dims[0] != n_items)
        comm_fail("%s: %s has %lld rows, but there are %lld items (one row per item, in item id order)", path, name,
                  (long long)dims[0], (long long)n_items);
    if (dims[1] < 1 || dims[1] > (1 << 20)) comm_fail("%s: %s has %lld columns, expected 1..1048576", path, name, (long long)dims[1]);
    *out = xmalloc(sizeof(float) * (size_t)((hi - lo) * dims[1]));
    h5io_read_rows(file, name, H5T_NATIVE_FLOAT, lo, hi - lo, *out);
    h5io_close(file);
    return (int)dims[1];
}

int text_import_embeddings(const char *path, int64_t n_items, int64_t lo, int64_t hi, float **out) {
    /* PATH:/dataset, unless PATH itself names a file */
    char *file = xstrdup(path), *dataset = NULL;
    if (!file_exists(file)) {
        char *colon = NULL;
        for (char *p = strstr(file, ":/"); p; p = strstr(p + 1, ":/")) colon = p;
        if (colon) { *colon = 0; dataset = colon + 1; }
    }
    char *err = NULL;
    unsigned char magic[8] = {0};
    FILE *fp = fopen(file, "rb");
    if (!fp) err = xsprintf("%s: no such file (embeddings)", file);
    else {
        size_t got = fread(magic, 1, sizeof magic, fp);
        fclose(fp);
        (void)got;
    }
    int is_npy = memcmp(magic, "\x93NUMPY", 6) == 0;
    if (!err && !is_npy && H5Fis_hdf5(file) <= 0)
        err = xsprintf("%s: not a .npy or HDF5 file (embeddings: a V x D float array)", file);
    if (!err && is_npy && dataset) err = xsprintf("%s: a .npy file has no dataset %s", file, dataset);
    comm_fail_if_any(err);
    int dim = 0;
    *out = NULL;
    if (is_npy) {
        err = text_npy_read_rows(file, n_items, lo, hi, &dim, out);
        comm_fail_if_any(err);
    } else dim = h5_read_rows(file, dataset, n_items, lo, hi, out);
    for (int64_t i = 0; i < (hi - lo) * dim && !err; i++)
        if (!isfinite((*out)[i]))
            err = xsprintf("%s: row %lld column %lld is %s", file, (long long)(lo + i / dim), (long long)(i % dim),
                           isnan((*out)[i]) ? "NaN" : "infinite (or beyond float32)");
    comm_fail_if_any(err);
    free(file);
    return dim;
}
