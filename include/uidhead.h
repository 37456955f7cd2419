/* uidhead: the item (UID) tables of the model, kept out of the replicated arena because they
 * are sharded by item range across ranks: the UID input embedding E_u and the UID output head
 * W_u (both items x d), their gradients and AdamW state, only for the items [lo, hi) this rank
 * owns (comm_split_range of the items), so their memory per rank falls as 1/P. With tie_uid
 * W_u is E_u (one tensor, gradients add).
 *
 * Sharded (the model's case), every call below is collective: all ranks call it, each with its
 * own rows (N may differ and be 0). Unsharded (one rank's private copy, for tests) nothing is
 * communicated and [lo, hi) is every item. */
#ifndef CAR_UIDHEAD_H
#define CAR_UIDHEAD_H
#include "arena.h"
#include <stdint.h>

typedef struct {
    int64_t n_items, lo, hi; /* all items, and the range [lo, hi) owned here */
    int d, tied, sharded;
    ParamArena arena; /* "uid_emb" and (untied) "uid_head", rows [lo, hi) of (n_items x d) */
    int emb, head;    /* tensor indices in arena; head == emb when tied */
    int block;        /* rows of H per logits block (the same on every rank) */
    size_t work_max;  /* bound on the logits workspace, in floats (uid_init: UID_WORK_MAX): with many
                         items a block has fewer rows, at least 1, so the workspace stays within
                         max(work_max, items per rank + 2 d) floats however many items there are */
    int bf16;         /* training's products (logits, E W, E^T H) on bf16 operands, fp32 sums (bf16gemm);
                         evaluation (scores, losses without a gradient) stays fp32 */
    /* workspace, grown as needed */
    float *work, *stat, *rows, *rows2;
    uint32_t *bf_w, *bf_wt, *bf_a, *bf_b; /* bf16 packed: W, W^T, an A operand, an E^T operand */
    float *bf_dwt;                        /* dW^T (d, owned items), summed over a call's blocks */
    size_t bf_w_cap, bf_wt_cap, bf_a_cap, bf_b_cap, bf_dwt_cap;
    double *colsum;   /* (2 d) label smoothing: the sum of the owned rows of W_u, then of the rows of H */
    double *dstat;    /* per-row sums of exponentials and target logits, in double */
    int32_t *ids, *ids2;
    int64_t *counts;
    size_t work_cap, stat_cap, rows_cap, rows2_cap, ids_cap, ids2_cap, dstat_cap, colsum_cap;
} UidHead;

/* 256 MiB of logits: block x items per rank passes it from ~262k items per rank (a million items
 * on fewer than 4 ranks), where a block of 256 rows would take a GiB. */
#define UID_WORK_MAX ((size_t)64 << 20)

/* Weights ~ normal(0, 0.02) from the counter rng (seed), the same values whatever the sharding.
 * sharded: this rank owns its comm_split_range of the items (collective; fails the job when
 * there are fewer items than ranks); else all items. */
void uid_init(UidHead *u, int64_t n_items, int d, int tied, uint64_t seed, int sharded);
void uid_free(UidHead *u);
static inline float *uid_emb(const UidHead *u) { return arena_param(&u->arena, u->emb); }
static inline float *uid_head_w(const UidHead *u) { return arena_param(&u->arena, u->head); }
void uid_zero_grad(UidHead *u);
/* Squared norm of the UID tables' gradients, summed over ranks when sharded. */
double uid_grad_sqnorm(const UidHead *u);

/* out (N,d) = E_u[ids]; ids in [0, n_items). Sharded: the ids travel to their owners, the rows
 * come back (two all-to-alls). */
void uid_embed_forward(UidHead *u, const int32_t *ids, int N, float *out);
/* dE_u[ids] += dout (N,d). Sharded: the rows travel to the owners of their ids. */
void uid_embed_backward(UidHead *u, const int32_t *ids, int N, const float *dout);
/* Exact softmax cross-entropy of the UID head: logits = H (N,d) @ W_u^T over all items.
 * Returns the sum over this rank's rows of -log p(targets[n]), or with label smoothing eps of
 * -(1 - eps) log p(target) - (eps / n_items) sum_i log p(i) (the target's one-hot mixed with the
 * uniform distribution; eps = 0 is the plain loss). With dscale != 0 also dW_u +=
 * and dH (N,d) += dscale * dCE/dH (dH may hold other gradients already). Logits are made in
 * blocks of u->block rows (fewer where u->work_max says), never all at once; the sums of
 * exponentials are accumulated in double (a million float terms lost ~1e-4). Sharded: every
 * rank's rows are gathered, each rank makes their logits over its items, the row maximum, the
 * sum of exponentials and the target logit are all-reduced, and dH (a partial sum over the item
 * shards) is reduce-scattered back to the rows' ranks. */
double uid_head_forward_backward(UidHead *u, const float *H, const int32_t *targets, int N, float eps, float dscale,
                                 float *dH);
/* Rows of H per logits block: u->block, fewer when the workspace (a row: its logits over the owned
 * items and 2 d floats) would pass u->work_max; at least 1. */
int uid_block_rows(const UidHead *u);
/* scores (N, hi - lo) = H (N,d) @ W_u[lo:hi]^T: the logits of the items owned here (local). */
void uid_head_scores(const UidHead *u, const float *H, int N, float *scores);

#endif
