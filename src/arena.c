/* arena: flat parameter / gradient / moment buffers with a table of named tensors. */
#include "arena.h"
#include "comm.h"
#include "rng.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int arena_add_rows(ParamArena *a, const char *name, int64_t rows, int64_t cols, int kind, int64_t row0,
                   int64_t global_rows) {
    if (a->params) comm_fatal("arena: tensor '%s' declared after the arena was allocated", name);
    if (strlen(name) >= sizeof a->t[0].name) comm_fatal("arena: tensor name '%s' is too long", name);
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 32;
        a->t = xrealloc(a->t, (size_t)a->cap * sizeof *a->t);
    }
    ParamTensor *t = &a->t[a->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->offset = a->total;
    t->size = (size_t)(rows * cols);
    t->rows = rows;
    t->cols = cols;
    t->row0 = row0;
    t->global_rows = global_rows;
    t->kind = kind;
    a->total += t->size;
    return a->n++;
}

int arena_add(ParamArena *a, const char *name, int64_t rows, int64_t cols, int kind) {
    return arena_add_rows(a, name, rows, cols, kind, 0, rows);
}

void arena_alloc(ParamArena *a) {
    size_t n = a->total ? a->total : 1;
    a->params = xcalloc(n, sizeof(float));
    a->grads = xcalloc(n, sizeof(float));
    a->m = xcalloc(n, sizeof(float));
    a->v = xcalloc(n, sizeof(float));
}

void arena_free(ParamArena *a) {
    free(a->t);
    free(a->params);
    free(a->grads);
    free(a->m);
    free(a->v);
    memset(a, 0, sizeof *a);
}

int arena_find(const ParamArena *a, const char *name) {
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->t[i].name, name) == 0) return i;
    return -1;
}

void arena_zero_grad(ParamArena *a) {
    if (a->grads) memset(a->grads, 0, a->total * sizeof(float));
}

double arena_grad_sqnorm(const ParamArena *a) {
    double s = 0;
    for (size_t i = 0; i < a->total; i++) s += (double)a->grads[i] * a->grads[i];
    return s;
}

void arena_init_normal(ParamArena *a, int i, double std, uint64_t seed) {
    const ParamTensor *t = &a->t[i];
    uint64_t stream = fnv1a64(FNV64_INIT, t->name, strlen(t->name));
    float *p = arena_param(a, i);
    uint64_t first = (uint64_t)t->row0 * (uint64_t)t->cols;
    for (size_t k = 0; k < t->size; k++) p[k] = (float)(std * rng_normal(seed, stream, first + k));
}
