/* gradsync: bucketed all-reduce of the replicated gradients, overlapped with the backward. */
#include "gradsync.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

void gradsync_init(GradSync *g, ParamArena *a, size_t bucket_floats) {
    memset(g, 0, sizeof *g);
    g->a = a;
    g->lo = xmalloc(sizeof(size_t) * (size_t)(a->n + 1));
    g->hi = xmalloc(sizeof(size_t) * (size_t)(a->n + 1));
    size_t hi = a->total;
    for (int i = a->n - 1; i >= 0; i--) {
        size_t lo = a->t[i].offset;
        if (i == 0 || (bucket_floats > 0 && hi - lo >= bucket_floats)) {
            g->lo[g->n] = lo;
            g->hi[g->n++] = hi;
            hi = lo;
        }
    }
    g->pending = xcalloc((size_t)(g->n + 1), sizeof *g->pending);
}

void gradsync_free(GradSync *g) {
    free(g->lo); free(g->hi); free(g->pending);
    memset(g, 0, sizeof *g);
}

void gradsync_ready(GradSync *g, size_t from) {
    for (; g->next < g->n && g->lo[g->next] >= from; g->next++)
        comm_sum_float_start(g->a->grads + g->lo[g->next], (int64_t)(g->hi[g->next] - g->lo[g->next]),
                             &g->pending[g->next]);
    comm_progress(g->pending, g->next);
}

void gradsync_finish(GradSync *g) {
    gradsync_ready(g, 0);
    comm_wait(g->pending, g->n);
    g->next = 0;
}
