/* uidhead: the item (UID) tables of the model, kept out of the replicated arena because they
 * are sharded by item range across ranks: the UID input embedding E_u and the UID output head
 * W_u (both items x d), their gradients and AdamW state, for the items [lo, hi) this rank owns.
 * With tie_uid W_u is E_u (one tensor, gradients add). Now one rank owns every item; the calls
 * are written so that the sharded version only adds collectives (marked "sharded:" below). */
#ifndef CAR_UIDHEAD_H
#define CAR_UIDHEAD_H
#include "arena.h"
#include <stdint.h>

typedef struct {
    int64_t n_items, lo, hi; /* all items, and the range [lo, hi) owned here */
    int d, tied;
    ParamArena arena; /* "uid_emb" and (untied) "uid_head", rows [lo, hi) of (n_items x d) */
    int emb, head;    /* tensor indices in arena; head == emb when tied */
    int block;        /* rows of H per logits block */
    float *work;      /* logits block (block x (hi - lo)) and its row statistics */
    float *mx, *sum, *tlogit;
} UidHead;

/* Owns items [lo, hi) of n_items; weights ~ normal(0, 0.02) from the counter rng (seed). */
void uid_init(UidHead *u, int64_t n_items, int64_t lo, int64_t hi, int d, int tied, uint64_t seed);
void uid_free(UidHead *u);
static inline float *uid_emb(const UidHead *u) { return arena_param(&u->arena, u->emb); }
static inline float *uid_head_w(const UidHead *u) { return arena_param(&u->arena, u->head); }
void uid_zero_grad(UidHead *u);
/* Squared norm of this rank's part of the gradients (sharded: summed over ranks). */
double uid_grad_sqnorm(const UidHead *u);

/* out (N,d) = E_u[ids]; ids in [0, n_items). sharded: gather the ids, owners fill rows. */
void uid_embed_forward(UidHead *u, const int32_t *ids, int N, float *out);
/* dE_u[ids] += dout (N,d). sharded: owners receive the rows of their ids. */
void uid_embed_backward(UidHead *u, const int32_t *ids, int N, const float *dout);
/* Exact softmax cross-entropy of the UID head: logits = H (N,d) @ W_u^T over all items.
 * Returns the sum over rows of -log p(targets[n]). With dscale != 0 also dW_u += and
 * dH (N,d) += dscale * dCE/dH (dH may hold other gradients already). Logits are made in
 * blocks of u->block rows, never all at once. */
double uid_head_forward_backward(UidHead *u, const float *H, const int32_t *targets, int N, float dscale, float *dH);
/* scores (N, hi - lo) = H (N,d) @ W_u[lo:hi]^T: the logits of the items owned here. */
void uid_head_scores(const UidHead *u, const float *H, int N, float *scores);

#endif
