/* sid: the pipeline stage that makes semantic IDs of the item embeddings into run.dir/sids.h5
 * (sid.method: residual k-means, or the random and LSH controls; see src/sid.c):
 *   /sid/codes (V x L int32), /sid/centroids/level_<l> (K_l x D float32),
 *   attributes on "/": format, levels, codebook ("256,256,256"), iters, tol, seed,
 *   normalize_residuals, method (absent in older files: rkmeans), n_items, dim,
 *   embedding_hash (16 hex digits), dataset.
 * The file is reused while the SID config and the embeddings (by hash) match. */
#ifndef CAR_SID_H
#define CAR_SID_H
#include "config.h"
#include <stdint.h>

/* Collective. Makes (or reuses) run.dir/sids.h5 for cfg and the dataset at cfg->data.path,
 * prints the report on rank 0 and writes run.dir/sid_report.json when it computes.
 * Skipped when sid.levels == 0. Returns 1 if computed, 0 if reused or skipped. */
int sid_stage_run(const CarConfig *cfg);

/* Collective. Rows [lo, hi) of /sid/codes of run_dir/sids.h5 into codes ((hi-lo) x levels).
 * Fails the job cleanly if the file is missing, has another number of levels or items than
 * n_items (SIDs of another dataset), or a code is outside its codebook. */
void sid_load_codes(const char *run_dir, int64_t n_items, int64_t lo, int64_t hi, int levels, int32_t *codes);

/* Random codes of items [lo, lo + n_local): codes[i][l] uniform in [0, codebook[l]), a pure
 * function of (seed, l, lo + i). Local (no communication). */
void sid_random_codes(int64_t lo, int64_t n_local, int levels, const int *codebook, uint64_t seed, int32_t *codes);
/* Collective. LSH codes of this rank's rows x (n_local x dim): level l's code has bit b set when
 * the centred embedding lies on the positive side of hyperplane (l, b) (Gaussian normals drawn
 * from seed). codebook[l] must be a power of two. Identical for every rank count. */
void sid_lsh_codes(const float *x, int64_t n_local, int dim, int levels, const int *codebook, uint64_t seed,
                   int32_t *codes);
/* Collective. The centroids of given codes along the residual chain (centroids[l]: K_l x dim,
 * allocated, the mean residual of the items with code k at level l, 0 for an unused code) and
 * sq_error[0..levels]: the mean squared norm of x and of the residual after each level. */
void sid_residual_centroids(const float *x, int64_t n_local, int dim, int levels, const int *codebook,
                            const int32_t *codes, float **centroids, double *sq_error);

/* The P-independent hash of embedding rows: FNV-1a over the per-row FNV-1a hashes of all
 * rows in global order. Collective; x holds rows [lo, lo + n_local) of the global order. */
uint64_t sid_embedding_hash(const float *x, int64_t n_local, int dim);

#endif
