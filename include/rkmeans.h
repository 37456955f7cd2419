/* rkmeans: residual k-means over item embeddings sharded by contiguous item ranges.
 * Level l clusters r^l (r^1 = x, r^{l+1} = r^l - c^l[code], optionally L2-normalised):
 * k-means++ initialisation across ranks (or replicated, see init_replicated), then Lloyd
 * iterations (assignment through sgemm, centroid sums as 64-bit fixed point summed over ranks). The codes for a seed and data are
 * bit-identical for every rank count and every split of the rows over the ranks. */
#ifndef CAR_RKMEANS_H
#define CAR_RKMEANS_H
#include <stdint.h>

#define RKMEANS_MAX_LEVELS 8

typedef struct {
    int levels;                        /* 1..RKMEANS_MAX_LEVELS */
    int codebook[RKMEANS_MAX_LEVELS];  /* K_l, 1 <= K_l <= n_global */
    int iters;                         /* Lloyd iteration cap per level (>= 1) */
    double tol;                        /* stop when the relative error change falls below it */
    uint64_t seed;
    int normalize_residuals;           /* L2-normalise each residual before the next level */
    /* k-means++ on every rank over all rows (one all-gather per level instead of two collectives
     * per centroid; the same codes): 1 yes, 0 no (distributed), -1 when ranks outnumber the
     * cores of a node (comm_oversubscribed) and the rows fit in 256 MiB */
    int init_replicated;
} RkmeansOptions;

typedef struct {
    int used;                    /* codes with at least one item */
    int64_t largest;             /* items in the largest cluster */
    double entropy_bits, entropy_ratio; /* of the code distribution; ratio = bits / log2 K */
    double sq_error_before;      /* mean squared norm of this level's input */
    double sq_error_after;       /* mean squared norm of the residual it leaves */
    int iters_run;               /* Lloyd iterations (update + assignment) */
    int reseeded;                /* empty clusters re-seeded by splitting a large one */
    double seconds, init_seconds, lloyd_seconds; /* wall time of the level, its k-means++, its Lloyd loop */
    double sgemm_seconds;        /* of which in sgemm (k-means++ candidates and assignments) */
    int candidates_rechecked_pct; /* assignments that needed an exact check of a near tie, % */
} RkmeansLevelReport;

typedef struct {
    int levels;
    RkmeansLevelReport level[RKMEANS_MAX_LEVELS];
    int64_t n_items, n_tuples, largest_group; /* distinct full code tuples and the largest group */
    double unique_share;                      /* share of items whose tuple no other item has */
    double sq_error_before;                   /* mean ||x||^2 */
    double seconds;                           /* all levels */
    int init_replicated;                      /* k-means++ ran replicated on every rank */
} RkmeansReport;

/* Collective. x: n_local x dim, rows [lo, lo + n_local) of n_global items, where the ranks
 * hold consecutive ranges in rank order (lo = rows of the lower ranks; n_local may be 0).
 * codes: n_local x levels (out). centroids[l]: K_l x dim, allocated, the same on every rank.
 * rep may be NULL. Fails the job if the options do not fit the data. */
void rkmeans_fit(const float *x, int64_t n_local, int64_t n_global, int dim, const RkmeansOptions *o, int32_t *codes,
                 float **centroids, RkmeansReport *rep);

/* Collective. The codebook usage and collision structure of codes (n_local x levels) into rep
 * (levels, level[].used/largest/entropy, n_items, n_tuples, largest_group, unique_share). */
void rkmeans_code_stats(const int32_t *codes, int64_t n_local, int levels, const int *codebook, RkmeansReport *rep);

#endif
