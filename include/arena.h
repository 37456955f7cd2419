/* arena: a flat parameter arena. Parameters, gradients and the AdamW moments m and v are each
 * one buffer with the same layout, described by a table of named tensors, so that all-reduce,
 * the optimizer step, clipping and checkpointing are one loop over one buffer. */
#ifndef CAR_ARENA_H
#define CAR_ARENA_H
#include <stddef.h>
#include <stdint.h>

/* What a tensor is: decides weight decay (matrices only, unless configured otherwise). */
enum { PARAM_MATRIX, PARAM_BIAS, PARAM_NORM, PARAM_EMBEDDING };

typedef struct {
    char name[48];
    size_t offset, size;        /* in floats, within the arena */
    int64_t rows, cols;         /* local shape (rows x cols) */
    int64_t row0, global_rows;  /* these rows are [row0, row0 + rows) of a (global_rows x cols) tensor */
    int kind;                   /* PARAM_* */
} ParamTensor;

typedef struct {
    ParamTensor *t;
    int n, cap;
    size_t total;                   /* floats in each buffer */
    float *params, *grads, *m, *v;  /* NULL until arena_alloc */
} ParamArena;

/* Declare a tensor (before arena_alloc); returns its index. A replicated tensor has
 * row0 = 0, global_rows = rows. */
int arena_add(ParamArena *a, const char *name, int64_t rows, int64_t cols, int kind);
int arena_add_rows(ParamArena *a, const char *name, int64_t rows, int64_t cols, int kind, int64_t row0,
                   int64_t global_rows);
/* Allocate params, grads, m, v (all zero). */
void arena_alloc(ParamArena *a);
void arena_free(ParamArena *a);
static inline float *arena_param(const ParamArena *a, int i) { return a->params + a->t[i].offset; }
static inline float *arena_grad(const ParamArena *a, int i) { return a->grads + a->t[i].offset; }
/* Index of the tensor called name, or -1. */
int arena_find(const ParamArena *a, const char *name);
void arena_zero_grad(ParamArena *a);
/* Tensor i's parameters ~ normal(0, std), element (global row, col) drawn from the counter
 * rng keyed by (seed, the tensor's name), so every rank and every sharding draws the same. */
void arena_init_normal(ParamArena *a, int i, double std, uint64_t seed);
/* Sum of squared gradients over the whole arena (double accumulation). */
double arena_grad_sqnorm(const ParamArena *a);

#endif
