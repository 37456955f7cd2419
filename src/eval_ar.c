/* eval_ar: Recall/NDCG of ar models from constrained beam-search lists. */
#include "eval_ar.h"
#include "beam.h"
#include "comm.h"
#include "log.h"
#include "trie.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t eval_ar_rank(const int32_t *items, const float *scores, int n, int32_t target, int K) {
    int at = -1;
    for (int i = 0; i < n; i++)
        if (items[i] == target) at = i;
    if (at < 0 || !isfinite(scores[at])) return K;
    int64_t above = 0;
    for (int i = 0; i < n; i++) above += i != at && !(scores[i] < scores[at]);
    return above;
}

/* One round's users: histories, targets and, filtering, the items each must not list. */
typedef struct {
    int B;
    int *len;
    int32_t *items, *target, *excl;
    int64_t *sample, *excl_off;
} Round;

/* Users [*next, ...) of the slice with a target in split, at most batch of them. */
static void next_round(const UserSlice *users, Split split, const EvalOptions *o, int64_t *next, Round *r) {
    int64_t nu = users->hi - users->lo, n_items = 0;
    r->B = 0;
    r->excl_off[0] = 0;
    for (; *next < nu && r->B < o->batch_size; (*next)++) {
        const int32_t *seq = users->items + users->offsets[*next], *hist;
        int64_t hl;
        int32_t t;
        if (!dataset_split(seq, users->offsets[*next + 1] - users->offsets[*next], split, o->max_history, &hist, &hl, &t))
            continue;
        memcpy(r->items + n_items, hist, sizeof(int32_t) * (size_t)hl);
        int64_t e = r->excl_off[r->B];
        for (int64_t k = 0; o->filter_history && k < hl; k++)
            if (hist[k] != t) r->excl[e++] = hist[k];
        n_items += hl;
        r->len[r->B] = (int)hl;
        r->target[r->B] = t;
        r->sample[r->B] = users->lo + *next;
        r->excl_off[++r->B] = e;
    }
}

/* Collective. rank1 (may be NULL): for each of this rank's users with a target, at its index in
 * the dataset, 1 + the target's rank (n_items + 1 when the list missed it); 0 elsewhere. */
static void ar_rank_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, int beam, MetricSums *out,
                          int64_t *rank1) {
    int K = metrics_k[METRICS_NK - 1], Bmax = o->batch_size, mh = o->max_history;
    Trie trie;
    trie_build(&trie, m->codes, m->spec.n_items, m->spec.levels);
    RecOptions ro = {.K = K, .beam = beam, .use_cache = 1};
    Recommender rc;
    recommender_init(&rc, m, &trie, &ro);
    Round r;
    r.len = xmalloc(sizeof(int) * (size_t)Bmax);
    r.target = xmalloc(sizeof(int32_t) * (size_t)Bmax);
    r.sample = xmalloc(sizeof(int64_t) * (size_t)Bmax);
    r.items = xmalloc(sizeof(int32_t) * (size_t)Bmax * (size_t)mh + 1);
    r.excl = xmalloc(sizeof(int32_t) * (size_t)Bmax * (size_t)mh + 1);
    r.excl_off = xmalloc(sizeof(int64_t) * ((size_t)Bmax + 1));
    memset(out, 0, sizeof *out);
    RecLists lists = {0};
    int64_t next = 0, counts[2] = {0, 0}; /* users, short lists */
    double more = 1;
    while (more > 0) { /* every rank runs rounds until all ranks are done (the scoring is collective) */
        next_round(users, split, o, &next, &r);
        ModelBatch b = {r.B, r.len, r.items, r.sample};
        recommend_batch(&rc, &b, o->filter_history ? r.excl_off : NULL, r.excl, &lists);
        for (int u = 0; u < r.B; u++) {
            int64_t rk = eval_ar_rank(lists.items + (size_t)u * K, lists.scores + (size_t)u * K, lists.n[u], r.target[u], K);
            metrics_add(out, rk);
            if (rank1) rank1[r.sample[u]] = 1 + (rk < K ? rk : m->spec.n_items);
            counts[1] += lists.n[u] < K;
        }
        counts[0] += r.B;
        more = next < users->hi - users->lo;
        comm_max_double(&more, 1);
    }
    metrics_reduce(out);
    comm_sum_i64(counts, 2);
    if (counts[1] > 0)
        log_info("ar beam %d: %lld of %lld users got fewer than %d items (a target outside the list is a miss)", beam,
                 (long long)counts[1], (long long)counts[0], K);
    rec_lists_free(&lists);
    recommender_free(&rc);
    trie_free(&trie);
    free(r.len); free(r.target); free(r.sample); free(r.items); free(r.excl); free(r.excl_off);
}

void eval_ar_split(Model *m, const UserSlice *users, Split split, const EvalOptions *o, int beam, MetricSums *out) {
    ar_rank_split(m, users, split, o, beam, out, NULL);
}

void eval_ar_split_write_ranks(Model *m, const UserSlice *users, Split split, const EvalOptions *o, int beam,
                               MetricSums *out, const char *run_dir) {
    int64_t n_users = users->hi - users->lo;
    comm_sum_i64(&n_users, 1); /* the slices of all ranks cover the users */
    int64_t *rank1 = xcalloc((size_t)n_users + 1, sizeof(int64_t));
    ar_rank_split(m, users, split, o, beam, out, rank1);
    comm_sum_i64(rank1, (int)n_users); /* exact: each user is filled by the one rank that holds it */
    int32_t *rank = xmalloc(sizeof(int32_t) * (size_t)(n_users + 1));
    for (int64_t u = 0; u < n_users; u++) rank[u] = (int32_t)(rank1[u] - 1); /* -1: no target in the split */
    eval_write_ranks(run_dir, split, rank, n_users);
    free(rank);
    free(rank1);
}
