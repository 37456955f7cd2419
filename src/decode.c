/* decode: prefill once, then one token per beam per step against cached keys/values. */
#include "decode.h"
#include "comm.h"
#include "layers.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void decoder_init(Decoder *dc, Model *m, int use_cache) {
    memset(dc, 0, sizeof *dc);
    dc->m = m;
    dc->use_cache = use_cache;
}

void decoder_free(Decoder *dc) {
    free(dc->hist_off); free(dc->kv_hist); free(dc->user); free(dc->prefix); free(dc->kv_beam);
    free(dc->user2); free(dc->prefix2); free(dc->kv_beam2); free(dc->work); free(dc->off); free(dc->x);
    memset(dc, 0, sizeof *dc);
}

static const float *param(const Model *m, int i) { return arena_param(&m->params, i); }

void decoder_prefill(Decoder *dc, const ModelBatch *b, float *h_last) {
    Model *m = dc->m;
    int d = m->spec.d_model, nl = m->spec.n_layers, C = m->C;
    for (int i = 0; i < b->B; i++)
        if (b->len[i] >= m->spec.max_chunks)
            comm_fatal("decode: a history of %d items leaves no room for the next item (max_chunks %d)", b->len[i],
                       m->spec.max_chunks);
    model_encode(m, b, h_last);
    dc->B = b->B;
    dc->hist_off = xrealloc(dc->hist_off, sizeof(int) * (size_t)(b->B + 1));
    dc->hist_off[0] = 0;
    dc->hist_max = 0;
    for (int i = 0; i < b->B; i++) {
        dc->hist_off[i + 1] = dc->hist_off[i] + b->len[i] * C;
        dc->hist_max = b->len[i] * C > dc->hist_max ? b->len[i] * C : dc->hist_max;
    }
    size_t Nh = (size_t)dc->hist_off[b->B];
    if (!dc->use_cache) { /* the inputs of the history rows, to rerun them every step */
        xgrow(&dc->kv_hist, &dc->hist_cap, Nh * d + 1, sizeof(float));
        memcpy(dc->kv_hist, m->x0, Nh * d * sizeof(float));
    } else {
        float *kv = xgrow(&dc->kv_hist, &dc->hist_cap, (size_t)nl * Nh * 2 * d + 1, sizeof(float));
        for (int l = 0; l < nl; l++)
            for (size_t r = 0; r < Nh; r++)
                memcpy(kv + ((size_t)l * Nh + r) * 2 * d, m->la[l].qkv + r * 3 * d + d, 2 * (size_t)d * sizeof(float));
    }
    dc->R = b->B;
    dc->steps = 0;
}

/* out (d) = the input of a token of level k whose chunk so far holds codes[0..k], at position pos:
 * Act-Think fusion of the SID embeddings (as fusion_forward sums them), plus position and level */
static void token_input(const Model *m, const int32_t *codes, int k, int pos, float *out) {
    int d = m->spec.d_model, mode = m->spec.fusion;
    const float *e0 = param(m, m->sid_emb[mode == FUSION_NONE ? k : 0]) + (size_t)codes[mode == FUSION_NONE ? k : 0] * d;
    memcpy(out, e0, (size_t)d * sizeof(float));
    for (int j = 1; mode != FUSION_NONE && j <= k; j++) {
        const float *e = param(m, m->sid_emb[j]) + (size_t)codes[j] * d;
        for (int c = 0; c < d; c++) out[c] = out[c] + e[c];
    }
    if (mode == FUSION_MEAN) {
        float inv = 1.0f / (float)(k + 1);
        for (int c = 0; c < d; c++) out[c] *= inv;
    }
    const float *pe = param(m, m->pos_emb) + (size_t)pos * d;
    for (int c = 0; c < d; c++) out[c] += pe[c];
    if (m->level_emb >= 0) {
        const float *le = param(m, m->level_emb) + (size_t)k * d;
        for (int c = 0; c < d; c++) out[c] += le[c];
    }
}

/* y (R,d) = attention of the beams' new tokens (their q in qkv (R,3d)) over the user's cached
 * history and the beam's own tokens 0..k (K | V in the beams' blocks of layer l). The beams of a
 * user are consecutive and share the history, so per user and head the history part is two
 * sgemms: S (n, Th) = q K^T and P V. p: scratch of (beams of a user) x (Th + k + 1) floats. */
static void attend_cached(const Decoder *dc, int l, const float *qkv, int R, float *y, float *p) {
    const Model *m = dc->m;
    int d = m->spec.d_model, NH = m->spec.n_heads, hs = d / NH, k = dc->steps, L = m->spec.levels;
    size_t Nh = (size_t)dc->hist_off[dc->B], kvb = (size_t)m->spec.n_layers * L * 2 * d;
    float scale = 1.0f / sqrtf((float)hs);
    for (int r0 = 0, r1; r0 < R; r0 = r1) {
        for (r1 = r0 + 1; r1 < R && dc->user[r1] == dc->user[r0]; r1++) {}
        int u = dc->user[r0], n = r1 - r0, Th = dc->hist_off[u + 1] - dc->hist_off[u], T = Th + k + 1;
        const float *hist = dc->kv_hist + ((size_t)l * Nh + dc->hist_off[u]) * 2 * d;
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)r0 * 3 * d + h * hs;
            if (Th) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, Th, hs, scale, q, 3 * d, hist + h * hs, 2 * d,
                                0.0f, p, T);
            for (int i = 0; i < n; i++) { /* the beam's own tokens, then the softmax over all T */
                float *row = p + (size_t)i * T, mx = -INFINITY, sum = 0;
                const float *own = dc->kv_beam + (size_t)(r0 + i) * kvb + (size_t)l * L * 2 * d + h * hs;
                for (int j = 0; j <= k; j++) {
                    float sc = 0;
                    for (int c = 0; c < hs; c++) sc += q[(size_t)i * 3 * d + c] * own[(size_t)j * 2 * d + c];
                    row[Th + j] = sc * scale;
                }
                for (int t = 0; t < T; t++) mx = fmaxf(mx, row[t]);
                for (int t = 0; t < T; t++) sum += row[t] = expf(row[t] - mx);
                for (int t = 0; t < T; t++) row[t] /= sum;
                float *o = y + (size_t)(r0 + i) * d + h * hs;
                memset(o, 0, sizeof(float) * (size_t)hs);
                for (int j = 0; j <= k; j++)
                    for (int c = 0; c < hs; c++) o[c] += row[Th + j] * own[(size_t)j * 2 * d + d + c];
            }
            if (Th) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, Th, 1.0f, p, T, hist + d + h * hs, 2 * d,
                                1.0f, y + (size_t)r0 * d + h * hs, d);
        }
    }
}

/* x (N,d) through every block and the final LayerNorm (dropout off). off: packed causal
 * sequences (no cache); NULL: the N = R rows are the beams' new tokens, attending to the cache
 * (their K | V stored into the beams' blocks first). Returns the final hidden states (N,d). */
static float *blocks_forward(Decoder *dc, float *x, int N, const int *off, int nseq) {
    Model *m = dc->m;
    int d = m->spec.d_model, nl = m->spec.n_layers, L = m->spec.levels, k = dc->steps;
    size_t A = off ? attention_size(off, nseq, m->spec.n_heads) : (size_t)N * (size_t)(dc->hist_max + L + 1);
    size_t Nd = (size_t)N * d;
    float *work = xgrow(&dc->work, &dc->work_cap, 14 * Nd + 2 * (size_t)N + A, sizeof(float));
    float *ln = work, *qkv = ln + Nd, *y = qkv + 3 * Nd, *proj = y + Nd, *fch = proj + Nd, *gl = fch + 4 * Nd,
          *mean = gl + 4 * Nd, *rstd = mean + N, *att = rstd + N;
    for (int l = 0; l < nl; l++) {
        LayerTensors w = model_layer_tensors(m, l, 0);
        layernorm_forward(ln, mean, rstd, x, w.ln1_w, w.ln1_b, N, d);
        matmul_forward(qkv, ln, w.qkv_w, w.qkv_b, N, d, 3 * d);
        if (off) {
            attention_forward(y, att, qkv, off, nseq, d, m->spec.n_heads);
        } else {
            for (int r = 0; r < N; r++)
                memcpy(dc->kv_beam + ((((size_t)r * nl + l) * L) + k) * 2 * d, qkv + (size_t)r * 3 * d + d,
                       2 * (size_t)d * sizeof(float));
            attend_cached(dc, l, qkv, N, y, att);
        }
        matmul_forward(proj, y, w.proj_w, w.proj_b, N, d, d);
        residual_forward(x, x, proj, Nd);
        layernorm_forward(ln, mean, rstd, x, w.ln2_w, w.ln2_b, N, d);
        matmul_forward(fch, ln, w.fc_w, w.fc_b, N, d, 4 * d);
        gelu_forward(gl, fch, 4 * Nd);
        matmul_forward(proj, gl, w.fcproj_w, w.fcproj_b, N, 4 * d, d);
        residual_forward(x, x, proj, Nd);
    }
    layernorm_forward(ln, mean, rstd, x, param(m, m->lnf_w), param(m, m->lnf_b), N, d);
    return ln;
}

/* The beams of the step: users, prefixes (parent's + code) and, cached, the parent's K | V. */
static void branch_beams(Decoder *dc, int R, const int *parent, const int32_t *code) {
    const Model *m = dc->m;
    int L = m->spec.levels, k = dc->steps;
    size_t kvb = (size_t)m->spec.n_layers * L * 2 * m->spec.d_model;
    xgrow(&dc->user2, &dc->user2_cap, (size_t)R + 1, sizeof(int));
    xgrow(&dc->prefix2, &dc->prefix2_cap, (size_t)R * L + 1, sizeof(int32_t));
    if (dc->use_cache) xgrow(&dc->kv_beam2, &dc->kvb2_cap, (size_t)R * kvb + 1, sizeof(float));
    for (int r = 0; r < R; r++) {
        int q = parent[r];
        if (q < 0 || q >= dc->R) comm_fatal("decode: beam %d continues beam %d of %d", r, q, dc->R);
        dc->user2[r] = k ? dc->user[q] : q;
        if (k) memcpy(dc->prefix2 + (size_t)r * L, dc->prefix + (size_t)q * L, (size_t)k * sizeof(int32_t));
        dc->prefix2[(size_t)r * L + k] = code[r];
        if (dc->use_cache && k) memcpy(dc->kv_beam2 + r * kvb, dc->kv_beam + q * kvb, kvb * sizeof(float));
    }
#define SWAP(a, b) do { void *t_ = (void *)a; a = b; b = t_; } while (0)
    SWAP(dc->user, dc->user2);
    SWAP(dc->prefix, dc->prefix2);
    SWAP(dc->kv_beam, dc->kv_beam2);
#undef SWAP
    size_t c;
    c = dc->user_cap; dc->user_cap = dc->user2_cap; dc->user2_cap = c;
    c = dc->prefix_cap; dc->prefix_cap = dc->prefix2_cap; dc->prefix2_cap = c;
    c = dc->kvb_cap; dc->kvb_cap = dc->kvb2_cap; dc->kvb2_cap = c;
    dc->R = R;
}

void decoder_step(Decoder *dc, int R, const int *parent, const int32_t *code, float *h) {
    Model *m = dc->m;
    int d = m->spec.d_model, L = m->spec.levels, k = dc->steps;
    if (k >= L) comm_fatal("decode: %d steps already, the item has %d SID levels", k, L);
    branch_beams(dc, R, parent, code);
    if (R == 0) {
        dc->steps++;
        return;
    }
    if (dc->use_cache) {
        float *x = xgrow(&dc->x, &dc->x_cap, (size_t)R * d, sizeof(float));
        for (int r = 0; r < R; r++) {
            int u = dc->user[r];
            token_input(m, dc->prefix + (size_t)r * L, k, dc->hist_off[u + 1] - dc->hist_off[u] + k, x + (size_t)r * d);
        }
        memcpy(h, blocks_forward(dc, x, R, NULL, 0), sizeof(float) * (size_t)R * d);
    } else { /* rerun history + the beam's k + 1 tokens */
        int *off = xgrow(&dc->off, &dc->off_cap, (size_t)R + 1, sizeof(int));
        off[0] = 0;
        for (int r = 0; r < R; r++) off[r + 1] = off[r] + dc->hist_off[dc->user[r] + 1] - dc->hist_off[dc->user[r]] + k + 1;
        float *x = xgrow(&dc->x, &dc->x_cap, (size_t)off[R] * d, sizeof(float));
        for (int r = 0; r < R; r++) {
            int u = dc->user[r], Th = dc->hist_off[u + 1] - dc->hist_off[u];
            memcpy(x + (size_t)off[r] * d, dc->kv_hist + (size_t)dc->hist_off[u] * d, sizeof(float) * (size_t)Th * d);
            for (int j = 0; j <= k; j++) token_input(m, dc->prefix + (size_t)r * L, j, Th + j, x + (size_t)(off[r] + Th + j) * d);
        }
        const float *hid = blocks_forward(dc, x, off[R], off, R);
        for (int r = 0; r < R; r++) memcpy(h + (size_t)r * d, hid + (size_t)(off[r + 1] - 1) * d, sizeof(float) * (size_t)d);
    }
    dc->steps++;
}
