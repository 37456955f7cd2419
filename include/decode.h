/* decode: incremental decoding of the chunk Transformer for AR generation. The history of each
 * user is encoded once (the prefill, model_encode) and its keys/values kept per layer; then each
 * decode step appends ONE SID token to every beam (beams of all users in one batch: one sgemm
 * per weight matrix and layer) and attends to the user's cached history plus the beam's own
 * earlier tokens. A beam's token of level k sits at position n C + k (n history items) and its
 * input is the Act-Think fusion of the beam's codes 0..k, as in the model's forward.
 *
 * With use_cache 0 nothing is cached but the history's input embeddings: every step reruns the
 * whole sequence (history + the beam's tokens) through every layer, the cost a decoder without
 * a KV cache pays (for benchmarks and as the reference). Both give the same hidden states. */
#ifndef CAR_DECODE_H
#define CAR_DECODE_H
#include "model.h"

typedef struct {
    Model *m;
    int use_cache;
    int B;             /* users of the last prefill */
    int *hist_off;     /* (B+1) history token rows of user b: [hist_off[b], hist_off[b+1]) */
    int hist_max;      /* the longest history in rows */
    float *kv_hist;    /* cache: (n_layers, Nh, 2d) K | V of the history rows; else (Nh, d) their inputs */
    int R, steps;      /* beams of the last step, tokens each has appended */
    int *user;         /* (R) the user of each beam */
    int32_t *prefix;   /* (R, L) the codes each beam has appended */
    float *kv_beam;    /* cache: (R, n_layers, L, 2d) K | V of the beams' tokens */
    /* the next step's versions of user, prefix, kv_beam (swapped in), and scratch */
    int *user2;
    int32_t *prefix2;
    float *kv_beam2, *work;
    size_t hist_cap, user_cap, prefix_cap, kvb_cap, user2_cap, prefix2_cap, kvb2_cap, work_cap;
    int *off;          /* no cache: (R+1) packed rows of the rerun sequences */
    float *x;          /* the step's input rows */
    size_t off_cap, x_cap;
} Decoder;

void decoder_init(Decoder *dc, Model *m, int use_cache);
void decoder_free(Decoder *dc);
/* Collective (the UID embeddings of the histories are sharded). Encodes the B histories of b
 * (each at most max_chunks - 1 items), keeps what the steps need; h_last (B,d): the final
 * hidden state at each history's last token, which predicts the next item's level-0 code. */
void decoder_prefill(Decoder *dc, const ModelBatch *b, float *h_last);
/* Local. Appends code[r] (level = steps so far) to R new beams; new beam r continues beam
 * parent[r] of the previous step (at the first step: parent[r] is a user 0..B-1). h (R,d): the
 * final hidden state of each new token (predicts the next level, or the UID after level L-1). */
void decoder_step(Decoder *dc, int R, const int *parent, const int32_t *code, float *h);

#endif
