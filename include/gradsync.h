/* gradsync: sums the replicated gradient arena over the ranks in buckets while the backward pass
 * is still running. The backward finishes the arena's tensors from its end towards its start
 * (heads, final LayerNorm, the last block, ..., embeddings), so buckets are cut from the end,
 * at tensor boundaries, and each is all-reduced (non-blocking) as soon as the backward reports
 * that everything from its start on is final. finish starts what is left and waits for all. */
#ifndef CAR_GRADSYNC_H
#define CAR_GRADSYNC_H
#include "arena.h"
#include "comm.h"

typedef struct {
    ParamArena *a;
    int n, next;     /* buckets; the next one to start */
    size_t *lo, *hi; /* float ranges: bucket 0 is the arena's end */
    CommPending *pending;
} GradSync;

/* Buckets of about bucket_floats (at least one tensor each); 0: one bucket, the whole arena. */
void gradsync_init(GradSync *g, ParamArena *a, size_t bucket_floats);
void gradsync_free(GradSync *g);
/* The gradients at floats [from, total) are final: starts every bucket inside, drives the rest. */
void gradsync_ready(GradSync *g, size_t from);
/* Starts the remaining buckets and waits for all: the arena's gradients are summed. */
void gradsync_finish(GradSync *g);

#endif
