/* bf16gemm: C = alpha A B^T + beta C on bf16 pairs, fp32 sums (see bf16gemm.h). */
#include "bf16gemm.h"
#include <math.h>
#include <string.h>

uint16_t bf16_from_float(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (isnan(f)) return (uint16_t)((u >> 16) | 0x40); /* quiet, sign kept: rounding could carry into Inf */
    u += 0x7fffu + ((u >> 16) & 1u);                    /* to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* element k of row r of the (rows, K) operand X (trans: X is (K, rows)); 0 past K */
static inline float at(const float *X, int r, int k, int K, int ld, int trans) {
    if (k >= K) return 0.0f;
    return trans ? X[(size_t)k * ld + r] : X[(size_t)r * ld + k];
}

static inline uint32_t pair(const float *X, int r, int p, int K, int ld, int trans) {
    return (uint32_t)bf16_from_float(at(X, r, 2 * p, K, ld, trans)) |
           (uint32_t)bf16_from_float(at(X, r, 2 * p + 1, K, ld, trans)) << 16;
}

static void pack_a_scalar(const float *X, int M, int K, int ld, int trans, uint32_t *A) {
    int Kp = bf16_pairs(K);
    for (int m = 0; m < M; m++)
        for (int p = 0; p < Kp; p++) A[(size_t)m * Kp + p] = pair(X, m, p, K, ld, trans);
}

static void pack_b_scalar(const float *X, int N, int K, int ld, int trans, uint32_t *B) {
    int Kp = bf16_pairs(K), panels = (N + BF16_PANEL - 1) / BF16_PANEL;
    for (int q = 0; q < panels; q++)
        for (int p = 0; p < Kp; p++) {
            uint32_t *w = B + ((size_t)q * Kp + p) * BF16_PANEL;
            for (int j = 0; j < BF16_PANEL; j++) {
                int n = q * BF16_PANEL + j;
                w[j] = n < N ? pair(X, n, p, K, ld, trans) : 0u;
            }
        }
}

/* the result of one row and column: alpha sum + beta C (beta 0: C not read, so NaN there is dropped) */
static inline void put(float *c, float alpha, float sum, float beta) { *c = beta == 0.0f ? alpha * sum : alpha * sum + beta * *c; }

/* scalar: per pair lo*lo + hi*hi added in fp32, as the instruction does (but keeping denormals) */
static void gemm_scalar(int M, int N, int Kp, float alpha, const uint32_t *A, const uint32_t *B, float beta, float *C,
                        int ldc) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const uint32_t *a = A + (size_t)m * Kp, *b = B + (size_t)(n / BF16_PANEL) * Kp * BF16_PANEL + n % BF16_PANEL;
            float sum = 0;
            for (int p = 0; p < Kp; p++) {
                uint32_t x = a[p], y = b[(size_t)p * BF16_PANEL];
                sum += bf16_to_float((uint16_t)x) * bf16_to_float((uint16_t)y) +
                       bf16_to_float((uint16_t)(x >> 16)) * bf16_to_float((uint16_t)(y >> 16));
            }
            put(C + (size_t)m * ldc + n, alpha, sum, beta);
        }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BF16_X86 1
#define BF16_TARGET __attribute__((target("avx512f,avx512bf16")))
#define TILE_ROWS 8 /* rows of A per register tile: 8 x 2 accumulators of 16 lanes */

/* C's cols (<= 32) of rows m0.. (R of them) from the R x 2 accumulators (inlined: they stay in registers) */
BF16_TARGET static inline __attribute__((always_inline)) void store_tile(__m512 acc[][2], int R, float *C, int ldc, int m0, int n0, int cols,
                                          float alpha, float beta) {
    __mmask16 k0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
    __mmask16 k1 = cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < R; r++) {
        float *c = C + (size_t)(m0 + r) * ldc + n0;
        __m512 y0 = _mm512_mul_ps(va, acc[r][0]), y1 = _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0.0f) {
            y0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, c), y0);
            y1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, c + 16), y1);
        }
        _mm512_mask_storeu_ps(c, k0, y0);
        _mm512_mask_storeu_ps(c + 16, k1, y1);
    }
}

/* R (a constant where inlined) rows from m0 against panel bp: acc = sum over pairs */
#define TILE_BODY(R)                                                                                       \
    __m512 acc[R][2];                                                                                      \
    _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();   \
    for (int p = 0; p < Kp; p++) {                                                                         \
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + (size_t)p * BF16_PANEL);                           \
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + (size_t)p * BF16_PANEL + 16);                      \
        _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++) {                                           \
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[(size_t)(m0 + r) * Kp + p]);                 \
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);                                                \
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);                                                \
        }                                                                                                  \
    }                                                                                                      \
    store_tile(acc, (R), C, ldc, m0, n0, cols, alpha, beta)

/* TILE_ROWS rows: the row loops unrolled, so the 16 accumulators live in registers */
BF16_TARGET static void tile_full(int m0, int n0, int cols, int Kp, const uint32_t *A, const uint32_t *bp, float alpha,
                                  float beta, float *C, int ldc) {
    TILE_BODY(TILE_ROWS);
}

/* one row (the rows past the last full tile) */
BF16_TARGET static void tile_row(int m0, int n0, int cols, int Kp, const uint32_t *A, const uint32_t *bp, float alpha,
                                 float beta, float *C, int ldc) {
    TILE_BODY(1);
}

/* a tile of rows against every panel in turn: C is written row by row, and the tile of A (8 rows
 * of Kp words) stays in cache while the panels pass it */
BF16_TARGET static void gemm_avx512(int M, int N, int Kp, float alpha, const uint32_t *A, const uint32_t *B, float beta,
                                    float *C, int ldc) {
    int m0 = 0;
    for (; m0 + TILE_ROWS <= M; m0 += TILE_ROWS)
        for (int n0 = 0; n0 < N; n0 += BF16_PANEL) {
            int cols = N - n0 < BF16_PANEL ? N - n0 : BF16_PANEL;
            tile_full(m0, n0, cols, Kp, A, B + (size_t)(n0 / BF16_PANEL) * Kp * BF16_PANEL, alpha, beta, C, ldc);
        }
    for (; m0 < M; m0++)
        for (int n0 = 0; n0 < N; n0 += BF16_PANEL) {
            int cols = N - n0 < BF16_PANEL ? N - n0 : BF16_PANEL;
            tile_row(m0, n0, cols, Kp, A, B + (size_t)(n0 / BF16_PANEL) * Kp * BF16_PANEL, alpha, beta, C, ldc);
        }
}

/* A from rows of X in order: a row of K floats rounded is its Kp pairs already (cvtne2ps: to
 * nearest even, NaN kept quiet; unlike the scalar path it flushes denormals to zero) */
BF16_TARGET static void pack_a_rows(const float *X, int M, int K, int ld, uint32_t *A) {
    int Kp = bf16_pairs(K);
    for (int m = 0; m < M; m++) {
        const float *x = X + (size_t)m * ld;
        uint32_t *a = A + (size_t)m * Kp;
        for (int k = 0; k < K; k += 32) {
            int left = K - k;
            __mmask16 lo = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            __mmask16 hi = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + k + 16), _mm512_maskz_loadu_ps(lo, x + k));
            int words = (left >= 32 ? 32 : left + 1) / 2; /* an odd K's last pair is padded with zero */
            _mm512_mask_storeu_epi32(a + k / 2, (__mmask16)(words >= 16 ? 0xffff : (1u << words) - 1), (__m512i)v);
        }
    }
}

/* B's panels from X (K,N): pair p of column n is (X[2p][n], X[2p+1][n]), 16 columns at a time from
 * two rows, each rounded to bf16 and widened, the second shifted into the high half */
BF16_TARGET static void pack_b_cols(const float *X, int N, int K, int ld, uint32_t *B) {
    int Kp = bf16_pairs(K), panels = (N + BF16_PANEL - 1) / BF16_PANEL;
    for (int q = 0; q < panels; q++)
        for (int p = 0; p < Kp; p++) {
            const float *r0 = X + (size_t)(2 * p) * ld, *r1 = r0 + ld;
            uint32_t *w = B + ((size_t)q * Kp + p) * BF16_PANEL;
            for (int h = 0; h < BF16_PANEL; h += 16) {
                int n = q * BF16_PANEL + h, left = N - n;
                __mmask16 k = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
                __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, r0 + n)));
                __m512i hi = _mm512_setzero_si512();
                if (2 * p + 1 < K)
                    hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, r1 + n)));
                _mm512_storeu_si512(w + h, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
        }
}
#endif

static int allow_native = 1;

int bf16_gemm_allow_native(int allow) {
    int was = allow_native;
    allow_native = allow;
    return was;
}

int bf16_gemm_native(void) {
#ifdef BF16_X86
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    return have && allow_native;
#else
    return 0;
#endif
}

void bf16_gemm(int M, int N, int K, float alpha, const uint32_t *A, const uint32_t *B, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef BF16_X86
    if (bf16_gemm_native()) {
        gemm_avx512(M, N, bf16_pairs(K), alpha, A, B, beta, C, ldc);
        return;
    }
#endif
    gemm_scalar(M, N, bf16_pairs(K), alpha, A, B, beta, C, ldc);
}

void bf16_pack_a(const float *X, int M, int K, int ld, int trans, uint32_t *A) {
#ifdef BF16_X86
    if (!trans && bf16_gemm_native()) {
        pack_a_rows(X, M, K, ld, A);
        return;
    }
#endif
    pack_a_scalar(X, M, K, ld, trans, A);
}

void bf16_pack_b(const float *X, int N, int K, int ld, int trans, uint32_t *B) {
#ifdef BF16_X86
    if (trans && bf16_gemm_native()) {
        pack_b_cols(X, N, K, ld, B);
        return;
    }
#endif
    pack_b_scalar(X, N, K, ld, trans, B);
}
