/* eval_ar: leave-one-out evaluation of an ar model from beam-search lists (DESIGN.md sections 1
 * and 2, the same protocol as eval_split): every user with a target in the split gets a list of
 * the K = 10 best items by joint log-prob (beam search of width `beam` over the SID trie); the
 * target's rank is its place in the list, counting items of equal score against it; a target
 * not in the list is a miss. filter_history removes the history items (other than the target)
 * before the list is cut. Users are split over the ranks, sums reduced over all ranks. */
#ifndef CAR_EVAL_AR_H
#define CAR_EVAL_AR_H
#include "dataset.h"
#include "eval.h"
#include "metrics.h"
#include "model.h"

/* Collective. Users whose list held fewer than K items are counted and logged. */
void eval_ar_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, int beam, MetricSums *out);
/* Collective. eval_ar_split, and rank 0 writes every user's rank to eval_ranks_path(run_dir,
 * split) in eval_write_ranks' format: the target's place in the beam list (ties against it),
 * n_items when the list does not hold it, -1 for a user without a target in the split. */
void eval_ar_split_write_ranks(Model *m, const UserSlice *users, Split split, const EvalOptions *o, int beam,
                               MetricSums *out, const char *run_dir);
/* The rank of target in a best-first list (items, scores, n), ties against it; K when absent. */
int64_t eval_ar_rank(const int32_t *items, const float *scores, int n, int32_t target, int K);

#endif
