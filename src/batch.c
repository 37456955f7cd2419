#include "batch.h"
#include "comm.h"
#include "rng.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t key; int64_t user; } OrderKey;

static int cmp_order(const void *a, const void *b) {
    const OrderKey *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->user > y->user) - (x->user < y->user);
}

int64_t batch_epoch_order(const int64_t *offsets, int64_t n_users, uint64_t seed, int epoch, int64_t *order) {
    OrderKey *k = xmalloc(sizeof(OrderKey) * (size_t)(n_users + 1));
    int64_t n = 0;
    for (int64_t u = 0; u < n_users; u++) {
        if (!dataset_split_exists(offsets[u + 1] - offsets[u], SPLIT_TRAIN)) continue;
        k[n].key = rng_u64(seed, 0x5eed0000ULL + (uint64_t)epoch, (uint64_t)u);
        k[n++].user = u;
    }
    qsort(k, (size_t)n, sizeof *k, cmp_order);
    for (int64_t i = 0; i < n; i++) order[i] = k[i].user;
    free(k);
    return n;
}

typedef struct { int64_t tokens; int i; } Job;

static int cmp_longest_first(const void *a, const void *b) {
    const Job *x = a, *y = b;
    if (x->tokens != y->tokens) return x->tokens > y->tokens ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

void batch_assign_tokens(const int64_t *tokens, int n, int P, int *rank_of) {
    Job *job = xmalloc(sizeof(Job) * (size_t)(n + 1));
    int64_t *load = xcalloc((size_t)P, sizeof(int64_t));
    for (int i = 0; i < n; i++) job[i] = (Job){tokens[i], i};
    qsort(job, (size_t)n, sizeof *job, cmp_longest_first);
    for (int k = 0; k < n; k++) {
        int best = 0; /* the least loaded rank: its load is at most the mean so far */
        for (int r = 1; r < P; r++)
            if (load[r] < load[best]) best = r;
        rank_of[job[k].i] = best;
        load[best] += job[k].tokens;
    }
    free(job);
    free(load);
}

void batcher_init(Batcher *bt, int B, int max_history, int mode, int C, int split) {
    int P = comm_size();
    size_t win = (size_t)B * (size_t)(max_history + 1);
    *bt = (Batcher){.mode = mode, .C = C, .max_history = max_history, .split = split, .cap = B};
    bt->len = xmalloc(sizeof(int) * (size_t)B);
    bt->sample = xmalloc(sizeof(int64_t) * (size_t)B);
    bt->tokens = xmalloc(sizeof(int64_t) * (size_t)B);
    bt->wlen = xmalloc(sizeof(int) * 3 * (size_t)B);
    bt->owner = bt->wlen + B;
    bt->rank_of = bt->owner + B;
    bt->items = xmalloc(sizeof(int32_t) * 3 * win);
    bt->send = bt->items + win;
    bt->recv = bt->send + win;
    bt->send_counts = xmalloc(sizeof(int64_t) * 4 * (size_t)P);
    bt->recv_counts = bt->send_counts + P;
    bt->send_at = bt->recv_counts + P;
    bt->recv_at = bt->send_at + P;
}

void batcher_free(Batcher *bt) {
    free(bt->len); free(bt->sample); free(bt->tokens); free(bt->wlen); free(bt->items); free(bt->send_counts);
    memset(bt, 0, sizeof *bt);
}

/* counts (P) -> at: where each rank's block starts */
static void block_starts(const int64_t *counts, int P, int64_t *at) {
    int64_t off = 0;
    for (int r = 0; r < P; r++) at[r] = off, off += counts[r];
}

/* Every rank's view of the batch: window length, owner, tokens and the rank that trains it. */
static void plan(Batcher *bt, const int64_t *users, int n, const int64_t *offsets, int64_t n_users) {
    int P = comm_size();
    for (int i = 0; i < n; i++) {
        int64_t u = users[i];
        bt->wlen[i] = (int)dataset_split_len(offsets[u + 1] - offsets[u], SPLIT_TRAIN, bt->max_history);
        bt->owner[i] = comm_range_owner(n_users, P, u);
        bt->tokens[i] = model_input_tokens(bt->mode, bt->C, bt->wlen[i]);
    }
    if (bt->split == BATCH_SPLIT_OWNER) memcpy(bt->rank_of, bt->owner, sizeof(int) * (size_t)n);
    else batch_assign_tokens(bt->tokens, n, P, bt->rank_of);
}

/* This rank's users' windows into send, grouped by the rank that trains them, in batch order. */
static void pack(Batcher *bt, const int64_t *users, int n, const UserSlice *us) {
    int me = comm_rank(), P = comm_size();
    memset(bt->send_counts, 0, sizeof(int64_t) * 2 * (size_t)P); /* and recv_counts */
    for (int i = 0; i < n; i++) {
        if (bt->owner[i] == me) bt->send_counts[bt->rank_of[i]] += bt->wlen[i];
        if (bt->rank_of[i] == me) bt->recv_counts[bt->owner[i]] += bt->wlen[i];
    }
    block_starts(bt->send_counts, P, bt->send_at);
    for (int i = 0; i < n; i++) {
        if (bt->owner[i] != me) continue;
        int64_t u = users[i], hl;
        if (u < us->lo || u >= us->hi) comm_fatal("batch: user %lld is not in this rank's slice", (long long)u);
        const int32_t *seq = us->items + us->offsets[u - us->lo], *h;
        int32_t t;
        dataset_split(seq, us->offsets[u - us->lo + 1] - us->offsets[u - us->lo], SPLIT_TRAIN, bt->max_history, &h,
                      &hl, &t);
        memcpy(bt->send + bt->send_at[bt->rank_of[i]], h, sizeof(int32_t) * (size_t)hl);
        bt->send_at[bt->rank_of[i]] += hl;
    }
}

ModelBatch batcher_form(Batcher *bt, const int64_t *users, int n, const int64_t *offsets, int64_t n_users,
                        const UserSlice *us) {
    if (n > bt->cap) comm_fatal("batcher_form: %d users, more than the batch size %d", n, bt->cap);
    int me = comm_rank(), P = comm_size(), moved = 0;
    plan(bt, users, n, offsets, n_users);
    pack(bt, users, n, us);
    for (int i = 0; i < n; i++) moved |= bt->owner[i] != bt->rank_of[i]; /* the same answer on every rank */
    if (moved) comm_alltoallv(bt->send, bt->send_counts, bt->recv, bt->recv_counts, sizeof(int32_t));
    else memcpy(bt->recv, bt->send, sizeof(int32_t) * (size_t)bt->send_counts[me]);
    /* the received blocks come by source rank, each in batch order: back into batch order */
    block_starts(bt->recv_counts, P, bt->recv_at);
    int nb = 0;
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (bt->rank_of[i] != me) continue;
        memcpy(bt->items + at, bt->recv + bt->recv_at[bt->owner[i]], sizeof(int32_t) * (size_t)bt->wlen[i]);
        bt->recv_at[bt->owner[i]] += bt->wlen[i];
        at += bt->wlen[i];
        bt->len[nb] = bt->wlen[i];
        bt->sample[nb++] = users[i];
    }
    return (ModelBatch){nb, bt->len, bt->items, bt->sample};
}

int64_t batcher_tokens(const Batcher *bt, const ModelBatch *b) {
    int64_t tok = 0;
    for (int i = 0; i < b->B; i++) tok += model_input_tokens(bt->mode, bt->C, b->len[i]);
    return tok;
}
