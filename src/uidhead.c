/* uidhead: UID embedding and UID softmax head over the owned item range. */
#include "uidhead.h"
#include "bf16gemm.h"
#include "comm.h"
#include "layers.h"
#include "util.h"
#include "vmath.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void uid_init(UidHead *u, int64_t n_items, int d, int tied, uint64_t seed, int sharded) {
    memset(u, 0, sizeof *u);
    int P = sharded ? comm_size() : 1;
    if (n_items < P)
        comm_fail("%lld items cannot be split over %d ranks (every rank owns a range of items): run with at most "
                  "%lld ranks",
                  (long long)n_items, P, (long long)n_items);
    u->n_items = n_items;
    u->sharded = sharded && P > 1;
    comm_split_range(n_items, P, sharded ? comm_rank() : 0, &u->lo, &u->hi);
    u->d = d;
    u->tied = tied;
    u->emb = arena_add_rows(&u->arena, "uid_emb", u->hi - u->lo, d, PARAM_EMBEDDING, u->lo, n_items);
    u->head = tied ? u->emb : arena_add_rows(&u->arena, "uid_head", u->hi - u->lo, d, PARAM_MATRIX, u->lo, n_items);
    arena_alloc(&u->arena);
    for (int i = 0; i < u->arena.n; i++) arena_init_normal(&u->arena, i, 0.02, seed);
    u->block = 256;
    u->work_max = UID_WORK_MAX;
    u->counts = xmalloc(2 * sizeof(int64_t) * (size_t)P);
}

void uid_free(UidHead *u) {
    arena_free(&u->arena);
    free(u->work); free(u->stat); free(u->dstat); free(u->colsum); free(u->rows); free(u->rows2); free(u->ids); free(u->ids2); free(u->counts);
    free(u->bf_w); free(u->bf_wt); free(u->bf_a); free(u->bf_b); free(u->bf_dwt);
    memset(u, 0, sizeof *u);
}

void uid_zero_grad(UidHead *u) { arena_zero_grad(&u->arena); }

double uid_grad_sqnorm(const UidHead *u) {
    double sq = arena_grad_sqnorm(&u->arena);
    if (u->sharded) comm_sum_double(&sq, 1);
    return sq;
}

static void check_ids(const UidHead *u, const int32_t *ids, int N, const char *what) {
    for (int n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= u->n_items)
            comm_fatal("uidhead: %s item %d outside [0, %lld)", what, (int)ids[n], (long long)u->n_items);
}

/* Routes ids to their owners: u->ids2 (what this rank asked, grouped by owner rank, in the
 * order of the ids within each owner), *order (N): the slot of id n in that grouping;
 * u->counts[0..P) sent, [P..2P) received; u->ids (received ids, in rank order). Returns
 * the number received. */
static int64_t route_ids(UidHead *u, const int32_t *ids, int N, int **order) {
    int P = comm_size();
    int64_t *sent = u->counts, *recv = sent + P;
    memset(sent, 0, sizeof(int64_t) * (size_t)P);
    int *owner = xmalloc(sizeof(int) * (size_t)(N + 1)), *ord = xmalloc(sizeof(int) * (size_t)(N + 1));
    for (int n = 0; n < N; n++) sent[owner[n] = comm_range_owner(u->n_items, P, ids[n])]++;
    int64_t *start = xcalloc((size_t)P + 1, sizeof(int64_t));
    for (int r = 0; r < P; r++) start[r + 1] = start[r] + sent[r];
    xgrow(&u->ids2, &u->ids2_cap, (size_t)N, sizeof(int32_t));
    for (int n = 0; n < N; n++) {
        ord[n] = (int)start[owner[n]]++;
        u->ids2[ord[n]] = ids[n];
    }
    comm_alltoall_counts(sent, recv);
    int64_t R = 0;
    for (int r = 0; r < P; r++) R += recv[r];
    xgrow(&u->ids, &u->ids_cap, (size_t)R, sizeof(int32_t));
    comm_alltoallv(u->ids2, sent, u->ids, recv, sizeof(int32_t));
    free(owner);
    free(start);
    *order = ord;
    return R;
}

void uid_embed_forward(UidHead *u, const int32_t *ids, int N, float *out) {
    check_ids(u, ids, N, "input");
    int d = u->d;
    const float *table = uid_emb(u) - (size_t)u->lo * d;
    if (!u->sharded) {
        embedding_forward(out, NULL, ids, N, table, d);
        return;
    }
    int *order;
    int64_t R = route_ids(u, ids, N, &order), P = comm_size();
    float *rows = xgrow(&u->rows, &u->rows_cap, (size_t)R * d, sizeof(float));
    embedding_forward(rows, NULL, u->ids, (int)R, table, d); /* owners fill the rows asked of them */
    float *back = xgrow(&u->rows2, &u->rows2_cap, (size_t)N * d, sizeof(float));
    comm_alltoallv(rows, u->counts + P, back, u->counts, (int64_t)d * sizeof(float));
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * d, back + (size_t)order[n] * d, (size_t)d * sizeof(float));
    free(order);
}

void uid_embed_backward(UidHead *u, const int32_t *ids, int N, const float *dout) {
    check_ids(u, ids, N, "input");
    int d = u->d;
    float *dtable = arena_grad(&u->arena, u->emb) - (size_t)u->lo * d;
    if (!u->sharded) {
        embedding_backward(dtable, NULL, ids, N, dout, d);
        return;
    }
    int *order;
    int64_t R = route_ids(u, ids, N, &order), P = comm_size();
    float *grouped = xgrow(&u->rows2, &u->rows2_cap, (size_t)N * d, sizeof(float));
    for (int n = 0; n < N; n++) memcpy(grouped + (size_t)order[n] * d, dout + (size_t)n * d, (size_t)d * sizeof(float));
    float *rows = xgrow(&u->rows, &u->rows_cap, (size_t)R * d, sizeof(float));
    comm_alltoallv(grouped, u->counts, rows, u->counts + P, (int64_t)d * sizeof(float));
    embedding_backward(dtable, NULL, u->ids, (int)R, rows, d);
    free(order);
}

void uid_head_scores(const UidHead *u, const float *H, int N, float *scores) {
    int V = (int)(u->hi - u->lo);
    if (N == 0 || V == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, V, u->d, 1.0f, H, u->d, uid_head_w(u), u->d, 0.0f, scores,
                V);
}

/* bf16 (u->bf16): W packed once a call in the two layouts its products take, dW^T zeroed; it is
 * added into dW by bf16_finish. dW^T = Hs^T E keeps every operand packable by rows or columns. */
static void bf16_start(UidHead *u, const float *W, int V, int bs) {
    int d = u->d;
    xgrow(&u->bf_w, &u->bf_w_cap, bf16_b_words(V, d), sizeof(uint32_t));
    xgrow(&u->bf_wt, &u->bf_wt_cap, bf16_b_words(d, V), sizeof(uint32_t));
    size_t a = bf16_a_words(bs, V) > bf16_a_words(d, bs) ? bf16_a_words(bs, V) : bf16_a_words(d, bs);
    xgrow(&u->bf_a, &u->bf_a_cap, a, sizeof(uint32_t));
    xgrow(&u->bf_b, &u->bf_b_cap, bf16_b_words(V, bs), sizeof(uint32_t));
    xgrow(&u->bf_dwt, &u->bf_dwt_cap, (size_t)V * d, sizeof(float));
    bf16_pack_b(W, V, d, d, 0, u->bf_w);  /* W (V,d): the logits' B */
    bf16_pack_b(W, d, V, d, 1, u->bf_wt); /* W^T (d,V): E W's B */
    memset(u->bf_dwt, 0, (size_t)V * d * sizeof(float));
}

static void bf16_finish(const UidHead *u, int V, float *dW) {
    int d = u->d;
    for (int v = 0; v < V; v++)
        for (int c = 0; c < d; c++) dW[(size_t)v * d + c] += u->bf_dwt[(size_t)c * V + v];
}

/* x (nb,V) = the block's logits Hb W^T, on bf16 operands when bf */
static void block_logits(UidHead *u, int bf, const float *Hb, int nb, float *x) {
    int V = (int)(u->hi - u->lo), d = u->d;
    if (!bf) {
        uid_head_scores(u, Hb, nb, x);
        return;
    }
    bf16_pack_a(Hb, nb, d, d, 0, u->bf_a);
    bf16_gemm(nb, V, d, 1.0f, u->bf_a, u->bf_w, 0.0f, x, V);
}

/* the block's two products: dW (V,d) += E^T Hs (bf16: dW^T += Hs^T E) and EW (nb,d) = E W */
static void block_products(UidHead *u, int bf, const float *E, int nb, int V, const float *Hs, const float *W,
                           float *dW, float *EW) {
    int d = u->d;
    if (!bf) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, d, nb, 1.0f, E, V, Hs, d, 1.0f, dW, d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, d, V, 1.0f, E, V, W, d, 0.0f, EW, d);
        return;
    }
    bf16_pack_a(Hs, d, nb, d, 1, u->bf_a); /* Hs^T (d,nb) */
    bf16_pack_b(E, V, nb, V, 1, u->bf_b);  /* E^T (V,nb) as B */
    bf16_gemm(d, V, nb, 1.0f, u->bf_a, u->bf_b, 1.0f, u->bf_dwt, V);
    bf16_pack_a(E, nb, V, V, 0, u->bf_a);  /* E (nb,V) */
    bf16_gemm(nb, d, V, 1.0f, u->bf_a, u->bf_wt, 0.0f, EW, d);
}

/* The gradients of one block from E = exp(logits - max) (nb,V) as it is: with G = dscale E / sum
 * - hot onehot(local), dW (V,d) += G^T Hb and dHb (nb,d) += G W (a partial sum over shards). The
 * scaling by dscale / sum goes on the small operands (Hs = Hb rows scaled, and the rows of E W)
 * and the one-hot on the target rows, so E is never rewritten: a pass over the logits saved.
 * (Label smoothing's uniform part is added once per call, by smoothing_gradients.) */
static void uid_block_gradients(UidHead *u, int bf, const float *E, int nb, int V, const float *Hb, const float *W,
                                const float *sum, const int32_t *local, float dscale, float hot, float *Hs, float *EW,
                                float *dW, float *dHb) {
    int d = u->d;
    for (int n = 0; n < nb; n++) {
        float f = dscale / sum[n];
        for (int c = 0; c < d; c++) Hs[(size_t)n * d + c] = f * Hb[(size_t)n * d + c];
    }
    block_products(u, bf, E, nb, V, Hs, W, dW, EW);
    for (int n = 0; n < nb; n++) {
        float f = dscale / sum[n], *dh = dHb + (size_t)n * d;
        const float *ew = EW + (size_t)n * d, *h = Hb + (size_t)n * d;
        for (int c = 0; c < d; c++) dh[c] += f * ew[c];
        if (local[n] < 0) continue; /* the target is owned elsewhere: its one-hot is applied there */
        float *dw = dW + (size_t)local[n] * d;
        const float *w = W + (size_t)local[n] * d;
        for (int c = 0; c < d; c++) {
            dw[c] -= hot * h[c];
            dh[c] -= hot * w[c];
        }
    }
}

/* The same on every rank (each block has its all-reduces): from the longest owned range. */
int uid_block_rows(const UidHead *u) {
    int P = u->sharded ? comm_size() : 1;
    int64_t most = (u->n_items + P - 1) / P, rows = (int64_t)(u->work_max / (size_t)(most + 2 * u->d));
    return rows < 1 ? 1 : rows < u->block ? (int)rows : u->block;
}

/* x (nb, V) = exp(x - mx[n]) row by row; sum[n] = the row's sum, in double: float partial sums of
 * EXP_CHUNK terms (a few ulp each), added in double, so a million items lose nothing. */
enum { EXP_CHUNK = 1024 };
static void exp_rows_sum(float *x, int nb, int V, const float *mx, double *sum) {
    for (int n = 0; n < nb; n++) {
        float *row = x + (size_t)n * V;
        double s = 0;
        for (int i = 0; i < V; i += EXP_CHUNK)
            s += vexp_shift_sum(row + i, (size_t)(V - i < EXP_CHUNK ? V - i : EXP_CHUNK), mx[n]);
        sum[n] = s;
    }
}

/* colsum (d) = the sum of the owned rows of W (V,d): with it, H_n . colsum is the sum of row n's
 * logits over the owned items, the uniform part of label smoothing's loss (summed over shards with
 * the target logit). */
static void owned_column_sums(const float *W, int64_t V, int d, double *colsum) {
    for (int c = 0; c < d; c++) colsum[c] = 0;
    for (int64_t i = 0; i < V; i++)
        for (int c = 0; c < d; c++) colsum[c] += W[(size_t)i * d + c];
}

/* Label smoothing's uniform part of the gradient, -dscale eps / n_items for every logit: dH_n -=
 * f colsum (each shard its items' part; the reduce-scatter adds them) and every owned row of dW
 * -= f sum_n H_n (hsum, over all the call's rows), f = dscale eps / n_items. */
static void smoothing_gradients(float f, const double *colsum, const double *hsum, int64_t NT, int64_t V, int d,
                                float *dHall, float *dW) {
    for (int64_t n = 0; n < NT; n++)
        for (int c = 0; c < d; c++) dHall[(size_t)n * d + c] -= f * (float)colsum[c];
    for (int64_t i = 0; i < V; i++)
        for (int c = 0; c < d; c++) dW[(size_t)i * d + c] -= f * (float)hsum[c];
}

/* The rows of every rank, gathered (sharded): data movement only. NT: the rows of the call over
 * all ranks, first: this rank's first row among them, rows_of (2P): the ranks' counts (NULL and
 * this rank's own rows where unsharded). */
typedef struct {
    const float *H;
    const int32_t *targets;
    int64_t NT, first, *rows_of;
} HeadRows;

static HeadRows gather_rows(UidHead *u, const float *H, const int32_t *targets, int N) {
    HeadRows r = {H, targets, N, 0, NULL};
    if (!u->sharded) return r;
    int P = comm_size(), me = comm_rank(), d = u->d;
    r.rows_of = xmalloc(sizeof(int64_t) * 2 * (size_t)P);
    comm_allgather_counts(N, r.rows_of);
    r.NT = 0;
    for (int q = 0; q < P; q++) {
        if (q == me) r.first = r.NT;
        r.NT += r.rows_of[q];
    }
    float *hg = xgrow(&u->rows, &u->rows_cap, (size_t)r.NT * d, sizeof(float));
    comm_allgatherv_counted(H, r.rows_of, hg, (int64_t)d * sizeof(float));
    int32_t *tg = xgrow(&u->ids, &u->ids_cap, (size_t)r.NT, sizeof(int32_t));
    comm_allgatherv_counted(targets, r.rows_of, tg, sizeof(int32_t));
    r.H = hg;
    r.targets = tg;
    return r;
}

/* dH (N,d) += this rank's rows of dHall, the sum over shards (reduce-scatter): data movement only */
static void scatter_row_grads(const HeadRows *r, const float *dHall, int N, int d, float *dH) {
    int P = comm_size();
    int64_t *cnt = r->rows_of + P;
    for (int q = 0; q < P; q++) cnt[q] = r->rows_of[q] * d;
    float *mine = xmalloc(sizeof(float) * ((size_t)N * d + 1));
    comm_reduce_scatter_float(dHall, mine, cnt);
    for (size_t i = 0; i < (size_t)N * d; i++) dH[i] += mine[i];
    free(mine);
}

/* One block's targets from its logits x (nb,V): local[n] = the target's index in the owned range
 * (-1 elsewhere), tl[n] = its logit here (0 elsewhere; smoothed: (1 - eps) z_t + eps / n_items
 * sum_i z_i, the owned items' part), and with smoothing hsum (d) += the block's rows of H. */
static void block_targets(const UidHead *u, const float *x, int nb, int V, const float *Hb, const int32_t *Tb,
                          float eps, int32_t *local, double *tl, double *hsum) {
    int d = u->d;
    float spread = eps / (float)u->n_items;
    for (int n = 0; n < nb; n++) {
        int32_t t = Tb[n];
        local[n] = t >= u->lo && t < u->hi ? (int32_t)(t - u->lo) : -1;
        tl[n] = local[n] >= 0 ? x[(size_t)n * V + local[n]] : 0.0f;
        if (eps > 0) {
            double zs = 0;
            for (int c = 0; c < d; c++) zs += (double)Hb[(size_t)n * d + c] * u->colsum[c];
            tl[n] = (1 - eps) * tl[n] + spread * zs;
            for (int c = 0; c < d; c++) hsum[c] += Hb[(size_t)n * d + c];
        }
    }
}

/* The vocab-parallel softmax statistics of one block, Megatron's three reductions over shards:
 * mx (nb) = the row max, then x = exp(x - mx) with sum (nb) = the row sums of exponentials and the
 * target logits tl (right after sum) summed over shards in one all-reduce. */
static void block_softmax_stats(const UidHead *u, float *x, int nb, int V, float *mx, double *sum) {
    for (int n = 0; n < nb; n++) mx[n] = -INFINITY;
    softmax_rows_max(x, nb, V, V, mx);
    if (u->sharded) comm_max_float(mx, nb);
    exp_rows_sum(x, nb, V, mx, sum);
    if (u->sharded) comm_sum_double(sum, 2 * nb); /* and tl = sum + nb */
}

double uid_head_forward_backward(UidHead *u, const float *H, const int32_t *targets, int N, float eps, float dscale,
                                 float *dH) {
    check_ids(u, targets, N, "target");
    int V = (int)(u->hi - u->lo), d = u->d, bs = uid_block_rows(u);
    HeadRows r = gather_rows(u, H, targets, N);
    float *dHall = NULL;
    if (dscale != 0) dHall = u->sharded ? xgrow(&u->rows2, &u->rows2_cap, (size_t)r.NT * d, sizeof(float)) : dH;
    if (dHall && u->sharded) memset(dHall, 0, (size_t)r.NT * d * sizeof(float));
    /* the block's logits (bs,V), then the rows scaled for the gradient and E W (bs,d each) */
    float *x = xgrow(&u->work, &u->work_cap, (size_t)bs * ((V ? V : 1) + 2 * (size_t)d), sizeof(float));
    float *Hs = x + (size_t)bs * (V ? V : 1), *EW = Hs + (size_t)bs * d;
    float *mx = xgrow(&u->stat, &u->stat_cap, 2 * (size_t)bs, sizeof(float)), *sumf = mx + bs;
    double *sum = xgrow(&u->dstat, &u->dstat_cap, 2 * (size_t)bs, sizeof(double));
    int32_t *local = xmalloc(sizeof(int32_t) * (size_t)bs); /* target index within the owned range, -1 elsewhere */
    const float *W = uid_head_w(u);
    float *dW = arena_grad(&u->arena, u->head);
    double loss = 0, *hsum = NULL; /* with smoothing: sum of the rows of H (d) */
    if (eps > 0) {
        xgrow(&u->colsum, &u->colsum_cap, 2 * (size_t)d, sizeof(double)); /* workspace kept, like the others */
        hsum = u->colsum + d;
        owned_column_sums(W, V, d, u->colsum);
        for (int c = 0; c < d; c++) hsum[c] = 0;
    }
    int bf = u->bf16 && V > 0 && dscale != 0; /* training only: evaluation's losses stay fp32 like its scores */
    if (bf) bf16_start(u, W, V, bs);
    for (int64_t r0 = 0; r0 < r.NT; r0 += bs) {
        int nb = r.NT - r0 < bs ? (int)(r.NT - r0) : bs;
        double *tl = sum + nb; /* right after sum: one all-reduce sums both (the target logit: one rank adds it) */
        const float *Hb = r.H + (size_t)r0 * d;
        block_logits(u, bf, Hb, nb, x);
        block_targets(u, x, nb, V, Hb, r.targets + r0, eps, local, tl, hsum);
        block_softmax_stats(u, x, nb, V, mx, sum);
        for (int n = 0; n < nb; n++)
            if (r0 + n >= r.first && r0 + n < r.first + N) loss += log(sum[n]) + mx[n] - tl[n];
        if (dscale == 0 || V == 0) continue;
        for (int n = 0; n < nb; n++) sumf[n] = (float)sum[n]; /* rounded once: the accumulation was in double */
        uid_block_gradients(u, bf, x, nb, V, Hb, W, sumf, local, dscale, dscale * (1 - eps), Hs, EW, dW,
                            dHall + (size_t)r0 * d);
    }
    if (bf) bf16_finish(u, V, dW);
    if (eps > 0 && dscale != 0)
        smoothing_gradients(dscale * (eps / (float)u->n_items), u->colsum, hsum, r.NT, V, d, dHall, dW);
    if (dHall && u->sharded) scatter_row_grads(&r, dHall, N, d, dH);
    free(r.rows_of);
    free(local);
    return loss;
}
