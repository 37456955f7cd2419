/* batch: the training batches of an epoch and each rank's part of them (DESIGN.md section 4).
 * An epoch visits the users that have a training window in a seeded order, the same for every
 * rank count; global batch s is positions [sB, (s+1)B) of it. Its sequences are split over the
 * ranks by TOKENS: longest first to the rank with the fewest tokens so far, a pure function of
 * the batch's window lengths, which every rank knows from /users/offsets. Splitting by which
 * rank owns the user (the earlier way) gave the busier of two ranks 13.7% more tokens than the
 * mean on Beauty (epoch 1; 1.0004x split by tokens), and the other waited for it at every
 * collective of the step.
 * A rank holds only its own users' items (a contiguous range, UserSlice), so the windows it
 * trains but does not own arrive in one all-to-all per step: each window is sent once, at most
 * B (max_history + 1) int32 over all ranks (21 KiB at B = 256 and 21 items; Beauty's batches
 * ~6 KiB), against MiBs of gradients. Results depend on the rank count only through the order
 * of float sums: the global batch, its targets and the dropout keys (the user index) are P's
 * business nowhere. */
#ifndef CAR_BATCH_H
#define CAR_BATCH_H
#include "dataset.h"
#include "model.h"
#include <stdint.h>

/* The users that have a training window (order: n_users entries), in the seeded order of
 * epoch `epoch`; returns how many. The same on every rank and for every rank count. */
int64_t batch_epoch_order(const int64_t *offsets, int64_t n_users, uint64_t seed, int epoch, int64_t *order);

/* rank_of[i] of n sequences of tokens[i]: longest first (ties: the earlier one) to the rank with
 * the fewest tokens so far (ties: the lower rank). Pure, so every rank computes the same split;
 * no rank gets more than total / P + the longest sequence. */
void batch_assign_tokens(const int64_t *tokens, int n, int P, int *rank_of);

/* BATCH_SPLIT_OWNER: every rank trains its own users (the earlier split; bench_train --split owner). */
enum { BATCH_SPLIT_TOKENS, BATCH_SPLIT_OWNER };

typedef struct {
    int mode, C, max_history, split, cap; /* cap: the global batch size B */
    int *len;                             /* this rank's part, in batch order (ModelBatch's arrays) */
    int64_t *sample;
    int32_t *items;
    int64_t *tokens;                      /* (cap) per position of the global batch */
    int *wlen, *owner, *rank_of;             /* (cap) window length, owning rank, training rank */
    int32_t *send, *recv;                 /* (cap (max_history + 1)) windows by destination, by source */
    int64_t *send_counts, *recv_counts, *send_at, *recv_at; /* (P) */
} Batcher;

/* Buffers for global batches of up to B users; mode and C (L + 1) count tokens. */
void batcher_init(Batcher *bt, int B, int max_history, int mode, int C, int split);
void batcher_free(Batcher *bt);
/* Collective: this rank's part of the global batch users[0..n) (n <= B; the same list on every
 * rank), in batch order: each sequence its training window (dataset_split) and sample = the user
 * index, which keys dropout. offsets: every user's (n_users + 1); us: this rank's users
 * (dataset_read_my_users). The ModelBatch points into bt until the next call. */
ModelBatch batcher_form(Batcher *bt, const int64_t *users, int n, const int64_t *offsets, int64_t n_users,
                        const UserSlice *us);
/* Input tokens of b (model_input_tokens summed). */
int64_t batcher_tokens(const Batcher *bt, const ModelBatch *b);

#endif
