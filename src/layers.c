/* layers: forward/backward kernels of the chunk Transformer. Matrix products via cblas_sgemm. */
#include "layers.h"
#include "config.h"
#include "rng.h"
#include "vmath.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    if (N == 0) return;
    if (bias)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, bias ? 1.0f : 0.0f, out,
                OC);
}

/* dbias (OC) += column sums of dout (N,OC) */
VMATH_CLONES_WIDE static void bias_backward(float *dbias, const float *dout, int N, int OC) {
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * OC;
#pragma omp simd
        for (int o = 0; o < OC; o++) dbias[o] += d[o];
    }
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, int accumulate) {
    if (N == 0) return;
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C,
                    accumulate ? 1.0f : 0.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) bias_backward(dbias, dout, N, OC);
}

VMATH_CLONES void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                    const float *bias, int N, int C) {
    const float eps = 1e-5f;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float m = 0;
#pragma omp simd reduction(+ : m)
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        float var = 0;
#pragma omp simd reduction(+ : var)
        for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
        var /= C;
        float s = 1.0f / sqrtf(var + eps);
#pragma omp simd
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

VMATH_CLONES void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                     const float *weight, const float *mean, const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        /* dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * weight */
        float dnorm_mean = 0, dnorm_norm_mean = 0;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s, dxhat = dy[c] * weight[c];
            dnorm_mean += dxhat;
            dnorm_norm_mean += dxhat * xhat;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s, dxhat = dy[c] * weight[c];
            dbias[c] += dy[c];
            dweight[c] += xhat * dy[c];
            dx[c] += s * (dxhat - dnorm_mean - xhat * dnorm_norm_mean);
        }
    }
}

#define GELU_SCALE 0.7978845608028654f /* sqrt(2 / pi) */

#define GELU_BLOCK 256 /* tanh is taken a block at a time (vectorised) */

/* t (nb) = tanh(sqrt(2/pi) (x + 0.044715 x^3)), the tanh both GELU passes need */
VMATH_CLONES_WIDE static void gelu_tanh_block(const float *x, size_t nb, float *t) {
#pragma omp simd
    for (size_t i = 0; i < nb; i++) t[i] = GELU_SCALE * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
    vtanh(t, nb);
}

/* t (nb) = GELU'(x), from t = the tanh gelu_tanh_block left there */
VMATH_CLONES_WIDE static void gelu_local_block(const float *x, size_t nb, float *t) {
#pragma omp simd
    for (size_t i = 0; i < nb; i++) {
        float sech2 = 1.0f - t[i] * t[i];
        t[i] = 0.5f * (1.0f + t[i]) + 0.5f * x[i] * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x[i] * x[i]);
    }
}

/* out = GELU(x); with keep_local, x is replaced by GELU'(x), so the backward takes no tanh */
VMATH_CLONES_WIDE static void gelu_forward_blocks(float *out, float *inp, size_t n, int keep_local) {
    for (size_t i0 = 0; i0 < n; i0 += GELU_BLOCK) {
        size_t nb = n - i0 < GELU_BLOCK ? n - i0 : GELU_BLOCK;
        float *x = inp + i0, t[GELU_BLOCK];
        gelu_tanh_block(x, nb, t);
#pragma omp simd
        for (size_t i = 0; i < nb; i++) out[i0 + i] = 0.5f * x[i] * (1.0f + t[i]);
        if (!keep_local) continue;
        gelu_local_block(x, nb, t);
        memcpy(x, t, nb * sizeof(float));
    }
}

void gelu_forward(float *out, const float *inp, size_t n) { gelu_forward_blocks(out, (float *)inp, n, 0); }

void gelu_forward_keep_local(float *out, float *inp, size_t n) { gelu_forward_blocks(out, inp, n, 1); }

/* dinp = (or +=) local * dout, local = GELU'(x) given, or computed from x (local NULL) a block at a time */
VMATH_CLONES_WIDE static void gelu_backward_blocks(float *dinp, const float *inp, const float *local, const float *dout,
                                              size_t n, int accumulate) {
    for (size_t i0 = 0; i0 < n; i0 += GELU_BLOCK) {
        size_t nb = n - i0 < GELU_BLOCK ? n - i0 : GELU_BLOCK;
        const float *dy = dout + i0, *g = local + i0;
        float t[GELU_BLOCK], *dx = dinp + i0;
        if (!local) {
            gelu_tanh_block(inp + i0, nb, t);
            gelu_local_block(inp + i0, nb, t);
            g = t;
        }
        if (accumulate) {
#pragma omp simd
            for (size_t i = 0; i < nb; i++) dx[i] += g[i] * dy[i];
        } else {
#pragma omp simd
            for (size_t i = 0; i < nb; i++) dx[i] = g[i] * dy[i];
        }
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n, int accumulate) {
    gelu_backward_blocks(dinp, inp, NULL, dout, n, accumulate);
}

void gelu_backward_local(float *dinp, const float *local, const float *dout, size_t n) {
    gelu_backward_blocks(dinp, NULL, local, dout, n, 0);
}

VMATH_CLONES_WIDE void residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

size_t attention_size(const int *off, int B, int NH) {
    size_t s = 0;
    for (int b = 0; b < B; b++) {
        size_t T = (size_t)(off[b + 1] - off[b]);
        s += (size_t)NH * T * T;
    }
    return s;
}

/* One head of one sequence of T rows (q, k, v: its first row, rows 3C apart). Every row: P (T,T)
 * = softmax(q k^T * scale) over j <= i, out (T,hs) = P v (rows C apart). Last row only: P (T) =
 * softmax(k q_last * scale), out (hs) = v^T P. */
static void head_forward(float *out, float *P, const float *q, const float *k, const float *v, int T, int hs, int C,
                         float scale, int last_only) {
    if (last_only) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, T, hs, scale, k, 3 * C, q + (size_t)(T - 1) * 3 * C, 1, 0.0f, P, 1);
        vscale(P, (size_t)T, 1.0f / vexp_shift_sum(P, (size_t)T, vmax(P, (size_t)T)));
        cblas_sgemv(CblasRowMajor, CblasTrans, T, hs, 1.0f, v, 3 * C, P, 1, 0.0f, out, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, 3 * C, k, 3 * C, 0.0f, P, T);
    for (int i = 0; i < T; i++) {
        float *row = P + (size_t)i * T;
        float sum = vexp_shift_sum(row, (size_t)i + 1, vmax(row, (size_t)i + 1));
        vscale(row, (size_t)i + 1, 1.0f / sum);
        memset(row + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, P, T, v, 3 * C, 0.0f, out, C);
}

/* attention_forward (last_only 0: att keeps every head's P) and attention_forward_last (1: att is
 * one head's scratch, out has a row per non-empty sequence) */
static void attention_heads(float *out, float *att, const float *qkv, const int *off, int B, int C, int NH,
                            int last_only) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++) {
        int T = off[b + 1] - off[b];
        if (T == 0) continue;
        float *o = last_only ? out : out + (size_t)off[b] * C;
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)off[b] * 3 * C + h * hs;
            head_forward(o + h * hs, att, q, q + C, q + 2 * C, T, hs, C, scale, last_only);
            if (!last_only) att += (size_t)T * T;
        }
        if (last_only) out += C;
    }
}

void attention_forward(float *out, float *att, const float *qkv, const int *off, int B, int C, int NH) {
    attention_heads(out, att, qkv, off, B, C, NH, 0);
}

void attention_forward_last(float *out, float *p, const float *qkv, const int *off, int B, int C, int NH) {
    attention_heads(out, p, qkv, off, B, C, NH, 1);
}

/* dS (T,T) = P * (dP - rowsum(P * dP)) on and below the diagonal, 0 above, in place of dP */
VMATH_CLONES static void softmax_causal_backward(float *dP, const float *P, int T) {
    for (int i = 0; i < T; i++) {
        const float *p = P + (size_t)i * T;
        float *d = dP + (size_t)i * T, dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j <= i; j++) dot += p[j] * d[j];
#pragma omp simd
        for (int j = 0; j <= i; j++) d[j] = p[j] * (d[j] - dot);
        memset(d + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const int *off, int B,
                        int C, int NH, float *scratch, int accumulate) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs), beta = accumulate ? 1.0f : 0.0f; /* each head's columns are written once */
    for (int b = 0; b < B; b++) {
        int T = off[b + 1] - off[b];
        if (T == 0) continue;
        for (int h = 0; h < NH; h++) {
            size_t o3 = (size_t)off[b] * 3 * C + h * hs;
            const float *q = qkv + o3, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + o3, *dk = dq + C, *dv = dq + 2 * C;
            const float *dO = dout + (size_t)off[b] * C + h * hs;
            const float *P = att;
            att += (size_t)T * T;
            float *dP = scratch;
            /* dP (T,T) = dO v^T; dv += (or =) P^T dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dO, C, v, 3 * C, 0.0f, dP, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, P, T, dO, C, beta, dv, 3 * C);
            /* softmax backward: dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik), zero above the diagonal */
            softmax_causal_backward(dP, P, T);
            /* dq += (or =) scale dS k; dk += (or =) scale dS^T q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, dP, T, k, 3 * C, beta, dq, 3 * C);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, dP, T, q, 3 * C, beta, dk, 3 * C);
        }
    }
}

/* row r continues the chunk of row r - 1 */
static inline int continues(const int8_t *level, int r) { return r > 0 && level[r] == level[r - 1] + 1; }

void fusion_forward(float *out, const float *inp, const int8_t *level, int N, int C, int mode) {
    if (mode == FUSION_NONE) {
        memcpy(out, inp, (size_t)N * C * sizeof(float));
        return;
    }
    /* first the running sum over the chunk, then the mean divides it */
    for (int r = 0; r < N; r++) {
        float *y = out + (size_t)r * C;
        const float *x = inp + (size_t)r * C;
        if (continues(level, r)) {
            const float *acc = y - C;
            for (int c = 0; c < C; c++) y[c] = acc[c] + x[c];
        } else {
            memcpy(y, x, (size_t)C * sizeof(float));
        }
    }
    if (mode == FUSION_MEAN)
        for (int r = 0; r < N; r++) {
            float inv = 1.0f / (float)(level[r] + 1);
            float *y = out + (size_t)r * C;
            for (int c = 0; c < C; c++) y[c] *= inv;
        }
}

void fusion_backward(float *dinp, const float *dout, const int8_t *level, int N, int C, int mode) {
    if (mode == FUSION_NONE) {
        for (size_t i = 0; i < (size_t)N * C; i++) dinp[i] += dout[i];
        return;
    }
    /* dinp_r = sum over the chunk's rows r' >= r of dout_r' (/ (level[r'] + 1) for the mean):
     * a reverse running sum, carried in acc */
    float acc[C];
    for (int r = N - 1; r >= 0; r--) {
        const float *dy = dout + (size_t)r * C;
        float w = mode == FUSION_MEAN ? 1.0f / (float)(level[r] + 1) : 1.0f;
        int fresh = r == N - 1 || !continues(level, r + 1);
        for (int c = 0; c < C; c++) acc[c] = (fresh ? 0.0f : acc[c]) + w * dy[c];
        float *dx = dinp + (size_t)r * C;
        for (int c = 0; c < C; c++) dx[c] += acc[c];
    }
}

void embedding_forward(float *out, const int *rows, const int32_t *ids, int n, const float *table, int C) {
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)(rows ? rows[i] : i) * C, table + (size_t)ids[i] * C, (size_t)C * sizeof(float));
}

void embedding_backward(float *dtable, const int *rows, const int32_t *ids, int n, const float *dout, int C) {
    for (int i = 0; i < n; i++) {
        float *dt = dtable + (size_t)ids[i] * C;
        const float *dy = dout + (size_t)(rows ? rows[i] : i) * C;
        for (int c = 0; c < C; c++) dt[c] += dy[c];
    }
}

/* units (4 groups) = the 16-bit dropout units of one row: draw g's bits 16j..16j+15 are unit 4g + j */
VMATH_CLONES_WIDE static void dropout_units(uint16_t *units, uint64_t key, uint64_t base, int groups) {
    uint64_t bits[groups];
#pragma omp simd
    for (int g = 0; g < groups; g++) bits[g] = rng_mix(key ^ (base + (uint64_t)g));
#pragma omp simd
    for (int g = 0; g < groups; g++) {
        units[4 * g + 0] = (uint16_t)bits[g];
        units[4 * g + 1] = (uint16_t)(bits[g] >> 16);
        units[4 * g + 2] = (uint16_t)(bits[g] >> 32);
        units[4 * g + 3] = (uint16_t)(bits[g] >> 48);
    }
}

VMATH_CLONES_WIDE void dropout_forward(float *out, const float *inp, const float *res, int N, int C, float p, uint64_t seed,
                                  uint64_t stream, const uint64_t *row_key) {
    uint32_t thr = p > 0 ? (uint32_t)lround((double)p * 65536.0) : 0;
    if (thr > 65536) thr = 65536;
    float scale = thr < 65536 ? (float)(65536.0 / (65536.0 - thr)) : 0.0f;
    uint64_t key = rng_mix(rng_mix(seed) ^ stream); /* rng_u64(seed, stream, c) = rng_mix(key ^ c) */
    int groups = (C + 3) / 4;                         /* one 64-bit draw gives four 16-bit units */
    uint16_t units[4 * groups];
    for (int r = 0; r < N; r++) {
        dropout_units(units, key, row_key[r] * (uint64_t)groups, groups);
        const float *x = inp + (size_t)r * C, *a = res ? res + (size_t)r * C : NULL;
        float *y = out + (size_t)r * C;
        if (a) {
#pragma omp simd
            for (int c = 0; c < C; c++) y[c] = a[c] + x[c] * (units[c] >= thr ? scale : 0.0f);
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++) y[c] = x[c] * (units[c] >= thr ? scale : 0.0f);
        }
    }
}

void softmax_rows_max(const float *x, int N, int K, int ld, float *mx) {
    for (int n = 0; n < N; n++) {
        float m = vmax(x + (size_t)n * ld, (size_t)K);
        mx[n] = m > mx[n] ? m : mx[n];
    }
}

void softmax_rows_exp(float *x, int N, int K, int ld, const float *mx, float *sum) {
    for (int n = 0; n < N; n++) sum[n] += vexp_shift_sum(x + (size_t)n * ld, (size_t)K, mx[n]);
}

void softmax_rows_grad(float *x, int N, int K, int ld, const float *sum, const int32_t *target, float dscale) {
    for (int n = 0; n < N; n++) {
        float *row = x + (size_t)n * ld;
        vscale(row, (size_t)K, dscale / sum[n]);
        if (target[n] >= 0 && target[n] < K) row[target[n]] -= dscale;
    }
}

double crossentropy_forward_backward(float *x, int N, int K, const int32_t *target, float dscale, float *mx,
                                     float *sum) {
    double loss = 0;
    for (int n = 0; n < N; n++) {
        mx[n] = -INFINITY;
        sum[n] = 0;
    }
    softmax_rows_max(x, N, K, K, mx);
    for (int n = 0; n < N; n++) loss -= x[(size_t)n * K + target[n]] - mx[n];
    softmax_rows_exp(x, N, K, K, mx, sum);
    for (int n = 0; n < N; n++) loss += log(sum[n]);
    if (dscale != 0) softmax_rows_grad(x, N, K, K, sum, target, dscale);
    return loss;
}
