/* eval: leave-one-out full-ranking evaluation (DESIGN.md sections 1 and 2). Every user with a
 * target in the split is scored against all items after one forward pass over the history:
 * fast thinking ranks by the UID logit; slow thinking (think_weight > 0) by
 * log p_u(i) + beta * sum_{l < think_levels} log p_l(s_i^l). Metrics need no top-K list: the
 * target's rank is the number of items scoring above it (ties count against the target). */
#ifndef CAR_EVAL_H
#define CAR_EVAL_H
#include "dataset.h"
#include "metrics.h"
#include "model.h"

typedef struct {
    int max_history, batch_size;
    double think_weight; /* beta; 0: fast thinking */
    int think_levels;    /* levels used by slow thinking; 0: all trained levels */
    int filter_history;  /* 1: items of the history (other than the target) are not ranked */
    int64_t score_floats; /* bound on the scores held at once (users x owned items), at least one
                             user's row; 0: EVAL_SCORE_FLOATS or 8 users' rows, the larger. Never
                             all users x V: a million items are ranked a few users at a time */
} EvalOptions;

/* 4 MiB of scores: a block of users is still in cache when its ranks are counted */
#define EVAL_SCORE_FLOATS ((int64_t)1 << 20)

void eval_options_from_config(EvalOptions *o, const CarConfig *cfg);
/* Floats of the score block eval_split holds on this rank (users per block x owned items): the
 * evaluation's only buffer that grows with the items, besides the model's own tables. */
int64_t eval_score_block_floats(const Model *m, const EvalOptions *o);
/* Collective. Ranks the split's target of every user in users (this rank's slice) and sums
 * the metrics over all ranks into out. */
void eval_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, MetricSums *out);
/* Per-user ranks, for paired tests between runs: run_dir/ranks_valid.bin and ranks_test.bin hold
 * one little-endian int32 per user of the dataset, in its user order (/users/offsets): the
 * 0-based rank of the user's target among all items (the items scoring above it, ties against
 * it, as in the metrics), n_items for a target a decoder did not return at all, -1 for a user
 * without a target in the split. Identical for every rank count. */
/* Collective. eval_split, and rank 0 writes the ranks of every user's target to
 * eval_ranks_path(run_dir, split). */
void eval_split_write_ranks(Model *m, const UserSlice *users, Split split, const EvalOptions *o, MetricSums *out,
                            const char *run_dir);
/* Collective. Rank 0 writes rank[0..n_users) (its own array; other ranks' rank may be NULL)
 * atomically (a temporary name, then a rename); fails the job cleanly if it cannot. */
void eval_write_ranks(const char *run_dir, Split split, const int32_t *rank, int64_t n_users);
char *eval_ranks_path(const char *run_dir, Split split); /* allocated */
/* Collective. The popularity baseline: every item scored by how often it occurs in the
 * training parts of all users (ties count against the target, as everywhere). */
void eval_popularity(const UserSlice *users, int64_t n_items, Split split, const EvalOptions *o, MetricSums *out);
/* Collective. Mean loss of predicting the split's target item from its history (only the
 * target's tokens count: L SIDs and the UID in ar, the one chunk prediction in car; dropout off). */
double eval_loss(Model *m, const UserSlice *users, Split split, const EvalOptions *o);

#endif
