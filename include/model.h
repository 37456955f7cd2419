/* model: the chunk Transformer of CAR (llm.c style). Item i with SID codes s_i^1..s_i^L is the
 * chunk [s^1..s^L, u_i] of C = L + 1 tokens. Token embeddings (E_l per level, E_u for UIDs, the
 * latter in uidhead), progressive Act-Think fusion inside each chunk, learned positions (and
 * optionally a learned level embedding), dropout, GPT-2 blocks (pre-LayerNorm, causal multi-head
 * attention, GELU MLP of width 4d, residuals, dropout on the attention and MLP outputs), final
 * LayerNorm, then heads without bias: L think heads W_l (K_l x d) and the UID head W_u (in uidhead).
 *
 * Training modes. car: the last token of every chunk (the UID position) predicts all tokens of the
 * next chunk; loss per position = CE_uid + alpha * (1/L) sum_l CE_l, averaged over positions.
 * ar: ordinary next-token prediction over the same token sequence (a SID token of level l is
 * predicted by W_l, a UID token by W_u), averaged over predicted tokens (alpha unused).
 *
 * Batches are packed, not padded: the tokens of the B sequences lie one after another (N rows
 * in all) and attention runs per sequence, so no work is spent on padding and nothing but real
 * tokens reaches the loss. Sequence b of n items gives, as input:
 *   car training: chunks 0..n-2 ((n-1) C tokens), targets the chunks 1..n-1;
 *   ar training:  the first n C - 1 tokens, target of token t is token t + 1;
 *   encoding:     all n chunks (n C tokens), for scoring the item after the last.
 *
 * A training step (one rank; dloss = 1 / targets of the global batch):
 *   model_zero_grad(m);
 *   ModelLoss l = model_forward(m, &batch, 1, step, 1.0f / model_count_targets(m, &batch));
 *   model_backward(m);
 *   model_optimizer_step(m, &optim_config, step);
 * model_forward computes the heads' loss and, when dloss != 0, their gradients at once (the
 * UID softmax over all items is never stored), so gradients must be zeroed BEFORE the forward. */
#ifndef CAR_MODEL_H
#define CAR_MODEL_H
#include "arena.h"
#include "config.h"
#include "optim.h"
#include "uidhead.h"
#include <stdint.h>

typedef struct {
    int levels;                       /* L (0: UID tokens only, a SASRec-like baseline) */
    int codebook[SID_MAX_LEVELS];     /* K_l */
    int64_t n_items;                  /* V */
    int max_chunks;                   /* longest input in chunks (positions = max_chunks * C) */
    int d_model, n_layers, n_heads;
    float dropout;
    int fusion;                       /* FUSION_SUM | FUSION_MEAN | FUSION_NONE */
    int level_embedding, tie_uid;
    int uid_bf16;                     /* the UID head's training products on bf16 operands (bf16gemm) */
    int mode;                         /* MODE_CAR | MODE_AR */
    float alpha;                      /* car: weight of the think loss */
    float label_smoothing;            /* of the UID loss in training: eps/n_items of each target's mass spread */
    uint64_t seed;                    /* initialisation and dropout */
    int local_items;                  /* 0: the UID tables sharded over the ranks (collective calls);
                                         1: this rank holds every item and communicates nothing
                                         (a private copy, e.g. a test's reference) */
} ModelSpec;

/* From the run config: max_chunks = data.max_history + 1 (a training window of max_history + 1
 * items has max_history input chunks in car and max_history + 1 in ar). */
void model_spec_from_config(ModelSpec *s, const CarConfig *cfg, int64_t n_items);

typedef struct {
    int B;                 /* sequences */
    const int *len;        /* (B) items per sequence */
    const int32_t *items;  /* (sum of len) item ids, sequence after sequence, oldest first */
    const int64_t *sample; /* (B) global sample index that keys dropout; NULL: 0..B-1 */
} ModelBatch;

/* Sums over this batch (all-reduce them across ranks, then divide). */
typedef struct {
    double loss_sum;  /* car: sum of CE_uid + alpha * think; ar: sum of every predicted token's CE */
    double act_sum;   /* sum of UID CEs */
    double think_sum; /* car: sum over positions of (1/L) sum_l CE_l; ar: sum of SID tokens' CEs */
    int64_t n_loss;   /* car: supervised positions; ar: predicted tokens */
    int64_t n_act;    /* predicted UIDs */
    int64_t n_think;  /* car: positions (0 when L = 0); ar: predicted SID tokens */
} ModelLoss;

/* A GPT-2 block's tensors, in arena order: X(name) for each */
#define LAYER_TENSORS(X) \
    X(ln1_w) X(ln1_b) X(qkv_w) X(qkv_b) X(proj_w) X(proj_b) X(ln2_w) X(ln2_b) X(fc_w) X(fc_b) X(fcproj_w) X(fcproj_b)
#define LAYER_INDEX_(name) int name;
#define LAYER_POINTER_(name) float *name;
typedef struct { LAYER_TENSORS(LAYER_INDEX_) } LayerParams;    /* tensor indices in Model.params */
typedef struct { LAYER_TENSORS(LAYER_POINTER_) } LayerTensors; /* the same as named pointers */

typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *attproj, *res2, *ln2, *ln2_mean, *ln2_rstd, *fch,
        *fch_gelu, *fcproj, *res3;
} LayerActs; /* (N,d) unless said: ln*_mean/rstd (N), qkv (N,3d), att (attention_size), fch* (N,4d); fch holds
                GELU'(fch) after a training forward (gelu_forward_keep_local) */

/* Where a training step's time goes (bench_train's table): each part's wall time, forward and
 * backward apart, accumulated while Model.prof points at one. The heads compute their loss and
 * parameter gradients in the forward (the UID softmax over all items is never stored), so their
 * backward is in the forward column; the UID head includes its collectives. */
enum {
    PART_EMBED,     /* token embeddings (SID tables, UID rows through uidhead), fusion, positions */
    PART_LAYERNORM,
    PART_ATTN_MM,   /* qkv and output projections */
    PART_ATTENTION, /* causal softmax attention per sequence */
    PART_MLP_MM,    /* fc and fc projection */
    PART_GELU,
    PART_DROPOUT,   /* dropout and residual adds */
    PART_THINK,     /* think heads: logits, cross-entropy, gradients */
    PART_UID,       /* UID head: sharded logits, cross-entropy, gradients */
    PART_OPTIM,     /* gradient clipping and AdamW (train_step) */
    PART_GRADSYNC,  /* waiting for the bucketed gradient all-reduce to finish (train_step) */
    PART_N
};
extern const char *const model_part_names[PART_N];
typedef struct { double seconds[2][PART_N]; } ModelProfile; /* [0] forward, [1] backward */

typedef struct {
    ModelSpec spec;
    ModelProfile *prof;    /* NULL (default): no timing */
    int C;                 /* tokens per chunk, L + 1 */
    int max_pos;           /* max_chunks * C */
    const int32_t *codes;  /* (n_items, L) SID codes, borrowed */
    ParamArena params;     /* every replicated parameter */
    UidHead uid;           /* E_u, W_u */
    int sid_emb[SID_MAX_LEVELS], think_head[SID_MAX_LEVELS], pos_emb, level_emb, lnf_w, lnf_b;
    LayerParams *layer;

    /* the current batch, packed: N token rows; sequence b is rows [off[b], off[b+1]) */
    int B, N, target_mode; /* target_mode: 1 training targets (mode), 0 encoding */
    int *off, *pos;        /* (B+1), (N) position in the sequence */
    int8_t *level;         /* (N) position inside the chunk: 0..L-1 SID level, L the UID */
    int32_t *tok;          /* (N) code or item id */
    uint64_t *row_key;     /* (N) dropout key: sample * max_pos + position */
    int *by_level;         /* (N) rows grouped by level; level k at [level_start[k], level_start[k+1]) */
    int32_t *by_level_tok; /* (N) their tokens */
    int level_start[SID_MAX_LEVELS + 2];
    int *tgt_rows;         /* (L+1, N): rows predicting level k (k = L: the UID) */
    int32_t *tgt;          /* (L+1, N): their targets */
    int n_tgt[SID_MAX_LEVELS + 1];
    int cap_B, cap_N;
    int training;
    int64_t step;
    float dloss;

    /* activations (one buffer, grown to fit the batch) */
    float *acts;
    size_t acts_cap;
    float *emb, *x0, *lnf, *lnf_mean, *lnf_rstd, *dlnf;
    LayerActs *la;
    /* backward scratch (one buffer) and head workspace */
    float *grad_acts;
    size_t grad_cap;
    float *dres, *dbranch, *dln, *dqkv, *datty, *dfch, *dfch_gelu, *demb, *att_scratch;
    float *head_work;
    size_t head_cap;
    /* NULL, or called by model_backward each time the gradients of params at floats [from, total)
     * have become final (the backward finishes the arena from its end), e.g. to start summing them */
    void (*grads_ready)(void *ctx, size_t from);
    void *grads_ready_ctx;
} Model;

/* codes (n_items, L) stay owned by the caller. Parameters initialised GPT-2 style from
 * spec->seed (normal 0.02, residual projections 0.02 / sqrt(2 n_layers), LayerNorm 1 / 0,
 * biases 0), the same on every rank. */
void model_create(Model *m, const ModelSpec *spec, const int32_t *codes);
void model_free(Model *m);
/* Parameters in the replicated arena plus the UID tables (all items). */
int64_t model_num_params(const Model *m);

/* Input tokens of a training sequence of n items in mode (car: (n - 1) C, ar: n C - 1; 0 when
 * there is nothing to predict), C = L + 1: the rows the training forward lays out. */
int64_t model_input_tokens(int mode, int C, int64_t n);
/* Targets (the denominator of the mean loss) that the training forward of b has. */
int64_t model_count_targets(const Model *m, const ModelBatch *b);
/* Forward pass with the training targets of spec.mode. training: dropout on. step keys
 * dropout. dloss: d(total loss) / d(one target's loss), normally 1 / targets of the global
 * batch; != 0 accumulates the heads' parameter gradients and prepares model_backward. */
ModelLoss model_forward(Model *m, const ModelBatch *b, int training, int64_t step, float dloss);
/* Held-out loss: the forward of model_forward with dropout off and no gradient, but only the
 * tokens of each sequence's LAST item are predicted (ar: its L SID tokens and its UID; car: the
 * one chunk prediction), so a validation loss is not dominated by training transitions. */
ModelLoss model_forward_last(Model *m, const ModelBatch *b);
/* Backpropagates the last model_forward (dloss != 0) into m->params.grads and the uidhead. */
void model_backward(Model *m);
void model_zero_grad(Model *m);
/* Clip by the global norm (replicated arena and UID tables), learning rate of step (0-based),
 * AdamW on both. Returns the gradient norm before clipping. */
double model_optimizer_step(Model *m, const OptimConfig *c, int64_t step);

/* Block l's weights (grads 0) or their gradients (grads 1), as named pointers: the forward and
 * backward read w.qkv_w, g.qkv_w rather than arena look-ups. */
LayerTensors model_layer_tensors(const Model *m, int l, int grads);

/* Inference: h_last (B,d) = final hidden state at the last token of each sequence, all of
 * whose items are input (dropout off). Sequences of 0 items give zeros. */
void model_encode(Model *m, const ModelBatch *b, float *h_last);
/* out (N, K_level) = H (N,d) @ W_level^T: think-head logits of SID level `level` (0-based). */
void model_think_logits(const Model *m, const float *H, int N, int level, float *out);
/* scores (N, hi - lo) of the items this rank's uidhead owns, for ranking: the UID logit, plus
 * with think_weight > 0 (slow thinking) think_weight * sum over the first think_levels levels of
 * log p_l(s_i^l). The UID head's log-normaliser is left out: constant per row, it changes no
 * ranking (and needs no all-reduce when items are sharded). */
void model_score_items(const Model *m, const float *H, int N, float think_weight, int think_levels, float *scores);
/* Final hidden states (N,d) of the last forward, packed rows (see above). */
static inline const float *model_hidden(const Model *m) { return m->lnf; }
/* Training FLOPs (forward + backward, matrix products only) of the last forward's batch. */
double model_train_flops(const Model *m);

#endif
