/* sid: the pipeline stage that makes semantic IDs (residual k-means codes of the item
 * embeddings) into run.dir/sids.h5:
 *   /sid/codes (V x L int32), /sid/centroids/level_<l> (K_l x D float32),
 *   attributes on "/": format, levels, codebook ("256,256,256"), iters, tol, seed,
 *   normalize_residuals, n_items, dim, embedding_hash (16 hex digits), dataset.
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

/* The P-independent hash of embedding rows: FNV-1a over the per-row FNV-1a hashes of all
 * rows in global order. Collective; x holds rows [lo, lo + n_local) of the global order. */
uint64_t sid_embedding_hash(const float *x, int64_t n_local, int dim);

#endif
