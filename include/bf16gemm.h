/* bf16gemm: C = alpha A B^T + beta C with A and B rounded to bfloat16 and the products summed in
 * fp32 (AVX512-BF16 dot products where the CPU has them, else the same sums in scalar code). The
 * lever for the UID head's three products, whose inputs bf16 holds to 3 significant digits: on a
 * CPU with AVX512-BF16 the dot product does 1.85x the fp32 FMA's work per cycle (bench_sgemm).
 * Used by the UID head when model.uid_bf16 is set (uidhead.c); bench_bf16 times it against sgemm.
 *
 * Both operands are packed once, K-contiguous (A (M,K) and B (N,K), so C = A B^T is a dot
 * product along K, each of either one transposed on the way in), into pairs of bf16 along K, the
 * unit the dot-product instruction takes: A into rows of Kp = ceil(K/2) pairs; B into panels of
 * BF16_PANEL rows, pair-interleaved, zero-padded past N and K. */
#ifndef CAR_BF16GEMM_H
#define CAR_BF16GEMM_H

#include <stddef.h>
#include <stdint.h>

#define BF16_PANEL 32 /* rows of B per panel: two 16-lane vectors */

/* round to nearest even; NaN stays NaN (a quiet one), infinities stay */
uint16_t bf16_from_float(float f);
float bf16_to_float(uint16_t h);

/* pairs per row for K */
static inline int bf16_pairs(int K) { return (K + 1) / 2; }
/* uint32 words of A packed: M rows of bf16_pairs(K) */
static inline size_t bf16_a_words(int M, int K) { return (size_t)M * (size_t)bf16_pairs(K); }
/* uint32 words of B packed: ceil(N / BF16_PANEL) panels of bf16_pairs(K) x BF16_PANEL */
static inline size_t bf16_b_words(int N, int K) {
    return (size_t)((N + BF16_PANEL - 1) / BF16_PANEL) * (size_t)bf16_pairs(K) * BF16_PANEL;
}

/* A (M,K) from X: trans 0, X (M,K) row-major with leading dimension ld; trans 1, X (K,M) */
void bf16_pack_a(const float *X, int M, int K, int ld, int trans, uint32_t *A);
/* B (N,K) from X the same way, into panels */
void bf16_pack_b(const float *X, int N, int K, int ld, int trans, uint32_t *B);

/* C (M,N) row-major, leading dimension ldc, = alpha A B^T + beta C (beta 0: C is not read) */
void bf16_gemm(int M, int N, int K, float alpha, const uint32_t *A, const uint32_t *B, float beta, float *C, int ldc);

/* 1 where bf16_gemm runs on AVX512-BF16 instructions, 0 where on the scalar path */
int bf16_gemm_native(void);
/* tests: allow the AVX512-BF16 path (1, the default; used where the CPU has it) or force the
 * scalar one (0); returns the previous setting */
int bf16_gemm_allow_native(int allow);

#endif
