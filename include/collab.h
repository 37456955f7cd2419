/* collab: item embeddings from the training interactions, the collaborative signal that EAGER,
 * LETTER and COBRA add to text for semantic IDs. Items that users take one after another get
 * similar vectors:
 *   1. the training part of each user's sequence is every item but the last two (validation
 *      and test targets never enter, so the embedding cannot leak them);
 *   2. co-occurrence counts c_ij of items at most `window` positions apart in a training part
 *      (symmetric, each pair of positions counted once per direction);
 *   3. shifted positive PMI: max(0, log(c_ij T / (c_i c_j)) - log(shift)), T = sum of all counts,
 *      c_i = row sums; rows L2-normalised;
 *   4. text_lsa: randomized truncated SVD to `dim` columns, rows of unit norm (items with no
 *      training co-occurrence get text_lsa's random fallback vector).
 * Every rank scans all sequences (they are small next to the matrix) and builds only the rows of
 * its item range, so memory is O(nnz / P) and the result depends on P only through rounding. */
#ifndef CAR_COLLAB_H
#define CAR_COLLAB_H
#include "input.h"
#include "text.h"
#include <stdint.h>

typedef struct {
    int dim;      /* D_c: embedding width (0: no collaborative embedding) */
    int window;   /* co-occurrence window in positions */
    double shift; /* PMI shift k (>= 1; 1 = plain PPMI) */
    TextEncoderOptions svd; /* oversample, power_iters, seed of the randomized SVD (dim is set from dim) */
} CollabOptions;

/* dim 0 (off), window 3, shift 1, the text encoder's SVD defaults with seed 2 */
void collab_defaults(CollabOptions *o);
/* Items of a user's n that are training items: n - 2 (validation and test are the last two). */
static inline int64_t collab_train_len(int64_t n) { return n > 2 ? n - 2 : 0; }

/* The PPMI rows [lo, hi) as a row-sharded sparse matrix over n_items columns (steps 1-3). */
void collab_ppmi(const Sequences *seq, int64_t n_items, int64_t lo, int64_t hi, const CollabOptions *o, TextTfidf *m);
/* Collective. out (hi - lo) x o->dim, rows of unit norm; rep (may be NULL) as for text_embed. */
void collab_embed(const Sequences *seq, int64_t n_items, int64_t lo, int64_t hi, const CollabOptions *o, float *out,
                  TextEncoderReport *rep);
/* rows of x (n x da) and y (n x db), both of unit norm, into out (n x (da + db)):
 * [sqrt(1 - w) x, sqrt(w) y], again of unit norm; w in [0, 1] weighs the collaborative part. */
void collab_concat(const float *x, int da, const float *y, int db, int64_t n, double w, float *out);

#endif
