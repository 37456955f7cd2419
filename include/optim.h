/* optim: AdamW with decoupled weight decay over a flat parameter arena, gradient clipping by
 * global norm, and the learning-rate schedule (linear warm-up, then cosine or constant). */
#ifndef CAR_OPTIM_H
#define CAR_OPTIM_H
#include "arena.h"
#include <stdint.h>

typedef struct {
    double lr;            /* peak learning rate */
    double beta1, beta2;  /* 0.9, 0.98 or 0.999 */
    double eps;           /* 1e-8 */
    double weight_decay;  /* decoupled: p -= lr * wd * p, on PARAM_MATRIX tensors */
    int decay_embeddings; /* 1: embeddings decay too */
    double grad_clip;     /* max global gradient norm; <= 0: no clipping */
    int warmup_steps;     /* linear warm-up from lr/warmup to lr */
    int schedule;         /* SCHEDULE_COSINE | SCHEDULE_CONSTANT (config.h) */
    int64_t total_steps;  /* cosine reaches the floor here; <= 0: constant after warm-up */
    double lr_floor;      /* cosine ends at lr * lr_floor */
} OptimConfig;

/* beta1 0.9, beta2 0.999, eps 1e-8, no decay, no clipping, no warm-up, constant lr 1e-3 */
void optim_defaults(OptimConfig *c);
/* Learning rate of (0-based) step. */
double optim_lr(const OptimConfig *c, int64_t step);
/* Factor that scales gradients of global squared norm sqnorm down to norm grad_clip
 * (torch's clip_grad_norm_: clip / (norm + 1e-6), at most 1). */
float optim_clip_scale(double grad_sqnorm, double grad_clip);
/* 1 if tensor kind decays under c. */
int optim_decays(const OptimConfig *c, int kind);
/* One AdamW update of the floats [lo, hi) of the arena (all of it: 0, a->total; a shard of the
 * flat buffer under ZeRO), with gradients multiplied by grad_scale first (clipping, averaging).
 * t: 1-based update count for the bias corrections. Weight decay per tensor by its kind. */
void adamw_step(ParamArena *a, size_t lo, size_t hi, const OptimConfig *c, float lr, float grad_scale, int64_t t);

#endif
