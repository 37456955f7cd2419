/* optim: AdamW, clipping and the learning-rate schedule. */
#include "optim.h"
#include "config.h"
#include "vmath.h"
#include <math.h>

void optim_defaults(OptimConfig *c) {
    *c = (OptimConfig){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .schedule = SCHEDULE_CONSTANT};
}

double optim_lr(const OptimConfig *c, int64_t step) {
    if (step < c->warmup_steps) return c->lr * (double)(step + 1) / c->warmup_steps;
    if (c->schedule == SCHEDULE_CONSTANT || c->total_steps <= 0) return c->lr;
    int64_t span = c->total_steps - c->warmup_steps;
    double progress = span > 0 ? (double)(step - c->warmup_steps) / span : 1.0;
    if (progress > 1) progress = 1;
    double floor = c->lr * c->lr_floor;
    return floor + 0.5 * (c->lr - floor) * (1 + cos(M_PI * progress));
}

float optim_clip_scale(double grad_sqnorm, double grad_clip) {
    if (grad_clip <= 0) return 1.0f;
    double s = grad_clip / (sqrt(grad_sqnorm) + 1e-6);
    return s < 1 ? (float)s : 1.0f;
}

int optim_decays(const OptimConfig *c, int kind) {
    return kind == PARAM_MATRIX || (kind == PARAM_EMBEDDING && c->decay_embeddings);
}

/* p, g, m, v (n): one AdamW update of a contiguous span with one weight decay. Vectorised (the
 * clone has no FMA and vector sqrt and division round exactly, so it updates bit for bit as the
 * scalar loop does). */
VMATH_CLONES static void adamw_span(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps,
                       float wd, float grad_scale, float bc1, float bc2) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * grad_scale;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        float mhat = m[i] / bc1, vhat = v[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
    }
}

void adamw_step(ParamArena *a, size_t lo, size_t hi, const OptimConfig *c, float lr, float grad_scale, int64_t t) {
    float bc1 = (float)(1 - pow(c->beta1, (double)t)), bc2 = (float)(1 - pow(c->beta2, (double)t));
    for (int i = 0; i < a->n; i++) { /* the span of each tensor inside [lo, hi) */
        size_t s = a->t[i].offset, e = s + a->t[i].size;
        if (s < lo) s = lo;
        if (e > hi) e = hi;
        if (s >= e) continue;
        float wd = optim_decays(c, a->t[i].kind) ? (float)c->weight_decay : 0.0f;
        adamw_span(a->params + s, a->grads + s, a->m + s, a->v + s, e - s, lr, (float)c->beta1, (float)c->beta2,
                   (float)c->eps, wd, grad_scale, bc1, bc2);
    }
}
