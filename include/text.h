/* text: item text -> embedding (DESIGN.md section 3, "Text embeddings").
 *
 * The built-in encoder is parameter-free latent semantic analysis:
 *   1. words = runs of ASCII letters/digits and non-punctuation UTF-8 letters, lowercased
 *      (ASCII and Latin-1); features = word unigrams and bigrams of adjacent words, hashed
 *      (FNV-1a 64) into 2^hash_bits buckets;
 *   2. document frequency summed over ranks; features in >= min_df items are the vocabulary,
 *      numbered in bucket order (the same on every rank);
 *   3. TF-IDF: (1 + log tf) * (log((1 + N) / (1 + df)) + 1), rows L2-normalised (with field
 *      weights, tf sums the weights of the occurrences: text_tfidf_fields);
 *   4. randomized truncated SVD (range finder with s = dim + oversample Gaussian directions
 *      drawn from (seed, term, column), power_iters subspace iterations, Gram-eigen
 *      orthonormalisation done twice), all reductions in double;
 *   5. embedding = U_dim * Sigma_dim, each row L2-normalised; a component's sign makes its
 *      term loading positive along a fixed random term-space direction.
 * Items are sharded over ranks (any contiguous split); only s x s matrices and one
 * n_terms x s matrix per iteration are reduced (memory: n_terms x s doubles per rank), and
 * rank 0 makes every eigenvector decision, so results depend on the number of ranks only
 * through rounding (Beauty, 1/2/4 ranks: max |difference| 1e-8). Hash collisions merge
 * n-grams (rare at 2^20 buckets for ~10^5 distinct n-grams).
 *
 * Items with no vocabulary term (empty text, only rare words) or a projection of norm
 * < 1e-6 get a fallback: a unit Gaussian vector drawn from (seed, global item index), so they
 * are distinct from each other and nearly orthogonal to everything else, never NaN. */
#ifndef CAR_TEXT_H
#define CAR_TEXT_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int dim;         /* D: embedding width */
    int oversample;  /* random directions beyond D in the range finder */
    int power_iters; /* subspace iterations (accuracy on flat spectra) */
    int hash_bits;   /* 2^hash_bits feature buckets, 8..26 */
    int min_df;      /* keep n-grams that occur in at least this many items */
    uint64_t seed;
} TextEncoderOptions;

#define TEXT_REPORT_SIGMAS 16
typedef struct {
    int64_t n_buckets; /* distinct hashed n-grams seen */
    int64_t n_terms;   /* vocabulary: buckets with df >= min_df */
    int64_t nnz;       /* non-zeros of the TF-IDF matrix */
    int64_t n_empty;   /* items given the fallback vector */
    double explained_variance; /* sum_{k<D} sigma_k^2 / ||A||_F^2, in [0, 1] */
    double sigma[TEXT_REPORT_SIGMAS]; /* leading singular values (0 past the rank or D) */
    double seconds;
} TextEncoderReport;

/* dim 128, oversample 16, power_iters 3, hash_bits 20, min_df 2, seed 1 */
void text_encoder_defaults(TextEncoderOptions *o);
/* NULL if the options are usable, else a one-line message (free it). */
char *text_encoder_check(const TextEncoderOptions *o);

/* Collective. texts[0..n_local) are this rank's items, a contiguous block; blocks are in rank
 * order and add up to n_global (any split: a rank may hold none). NULL texts count as empty.
 * out: n_local x dim, rows of unit norm. rep (may be NULL) is filled on every rank. */
void text_embed(char *const *texts, int64_t n_local, int64_t n_global, const TextEncoderOptions *o, float *out,
                TextEncoderReport *rep);
/* text_embed of the weighted fields of text_tfidf_fields. */
void text_embed_fields(char *const *fields, int n_fields, const double *weights, int64_t n_local, int64_t n_global,
                       const TextEncoderOptions *o, float *out, TextEncoderReport *rep);

/* The TF-IDF matrix of this rank's items (CSR over the global vocabulary), steps 1-3 above. */
typedef struct {
    int64_t n_rows, n_terms, n_buckets, nnz_global;
    int64_t row_lo; /* global index of row 0 */
    int64_t *row_ptr; /* n_rows + 1 */
    int32_t *cols;    /* term ids, ascending in each row */
    double *vals;     /* rows of unit norm; a row without terms is empty */
} TextTfidf;
/* Collective; same contract for texts as text_embed. */
void text_tfidf(char *const *texts, int64_t n_local, int64_t n_global, const TextEncoderOptions *o, TextTfidf *m);
/* Per-field weights: item r is the n_fields texts fields[r * n_fields + f] (NULL: empty), each
 * occurrence of an n-gram in field f counting weights[f] (NULL: all 1) towards its term
 * frequency tf, whose weight is then 1 + log tf from tf = 1 on and tf below it (sublinear,
 * continuous; weight 0 drops the field, also from the document frequencies). n-grams never
 * span two fields. One field of weight 1 is exactly text_tfidf. */
void text_tfidf_fields(char *const *fields, int n_fields, const double *weights, int64_t n_local, int64_t n_global,
                       const TextEncoderOptions *o, TextTfidf *m);
void text_tfidf_free(TextTfidf *m);
/* Collective. Steps 4-5 above on any row-sharded sparse matrix of this layout (e.g. collab's
 * PPMI matrix, whose "terms" are items): out n_rows x o->dim, rows of unit norm; only
 * o->dim, oversample, power_iters and seed are used. rep (may be NULL): sigmas, explained
 * variance and n_empty. */
void text_lsa(const TextTfidf *m, const TextEncoderOptions *o, float *out, TextEncoderReport *rep);

/* Collective. Rows [lo, hi) of a (V x D) embedding matrix in
 *   - .npy: '<f4' or '<f8', C order, 2-D (format versions 1-3);
 *   - HDF5: PATH or PATH:/dataset; without a dataset: /items/embedding, else /embedding, else
 *     the only 2-D floating-point dataset in the file.
 * V must equal n_items and every value must be finite: otherwise the job fails with one line
 * naming the file. Returns D; *out is malloc'd (hi - lo) x D float32, values as stored
 * (not normalised: see text_l2_normalize). */
int text_import_embeddings(const char *path, int64_t n_items, int64_t lo, int64_t hi, float **out);

/* Scales each of n rows of width d to unit L2 norm; all-zero rows stay zero. */
void text_l2_normalize(float *x, int64_t n, int d);

/* .npy header of a file of file_size bytes whose first n bytes are buf. Returns NULL and fills
 * h, or a one-line error (free it) for: bad magic, truncated header or data, dtype other than
 * '<f4'/'<f8', Fortran order, not 2-D. Does not exit: usable from tests. */
typedef struct {
    int64_t rows, cols;
    int elem_size;       /* 4 or 8 */
    int64_t data_offset; /* bytes before row 0 */
} NpyHeader;
char *text_npy_parse_header(const unsigned char *buf, size_t n, int64_t file_size, NpyHeader *h);
/* Rows [lo, hi) of the .npy file at path, whose V must be n_items, into *out (malloc'd
 * (hi - lo) x *dim float32, values as stored). Returns NULL, or a one-line error naming the
 * file (then *out is NULL). Not collective; no finiteness check. */
char *text_npy_read_rows(const char *path, int64_t n_items, int64_t lo, int64_t hi, int *dim, float **out);

#endif
