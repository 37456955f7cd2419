/* metrics: full-ranking Recall@K and NDCG@K from the rank of each target among all items.
 * The rank needs no top-K list: it is the number of items scoring above the target (ties
 * count against the target), so per-rank counts over item shards simply add up. */
#ifndef CAR_METRICS_H
#define CAR_METRICS_H
#include <stdint.h>

#define METRICS_NK 2
static const int metrics_k[METRICS_NK] = {5, 10};

typedef struct { double recall[METRICS_NK], ndcg[METRICS_NK]; int64_t n; } MetricSums;

/* Items of scores[0..n) that rank above the target's score target_score: higher, or equal
 * and not the target itself (index target_index, -1 if the target is not in this range).
 * Items with skip[i] set (filtered history items) are not counted; skip may be NULL.
 * Non-finite scores never help the target: a NaN or infinite target_score returns n (a miss
 * in every shard, so the summed rank is V), and another item's NaN or -inf counts above it. */
int64_t metrics_count_above(const float *scores, int64_t n, float target_score, int64_t target_index,
                            const uint8_t *skip);
/* Adds one target whose 0-based rank among all items is rank. */
void metrics_add(MetricSums *m, int64_t rank);
/* Collective: sums over ranks. */
void metrics_reduce(MetricSums *m);
/* Averages: out_recall[k], out_ndcg[k] for each K of metrics_k. */
void metrics_mean(const MetricSums *m, double *out_recall, double *out_ndcg);

#endif
