/* bf16gemm: rounding to bf16, and C = alpha A B^T + beta C on both paths (AVX512-BF16 where the
 * CPU has it, scalar) against a double reference on the same bf16 inputs, over shapes with every
 * kind of tail, both packings and transposes; NaN goes through; the UID head's three products
 * against cblas_sgemm within bf16's rounding. */
#include "bf16gemm.h"
#include "check.h"
#include "comm.h"
#include "rng.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

static float *randn(size_t n, uint64_t stream) {
    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(7, stream, (uint64_t)i);
    return x;
}

static uint16_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static void test_rounding(void) {
    CHECK(bf16_from_float(1.0f) == 0x3f80 && bf16_to_float(0x3f80) == 1.0f);
    CHECK(bf16_from_float(-2.0f) == 0xc000);
    CHECK(bf16_from_float(1.0f + 0x1p-8f) == 0x3f80);        /* a tie: to the even 1.0 */
    CHECK(bf16_from_float(1.0f + 3 * 0x1p-8f) == 0x3f82);    /* a tie: to the even 1 + 2^-6 */
    CHECK(bf16_from_float(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81); /* past the tie: up */
    CHECK(bf16_from_float(INFINITY) == 0x7f80 && bf16_from_float(-INFINITY) == 0xff80);
    float snan;
    uint32_t u = 0x7f800001u; /* signalling NaN: adding the rounding would carry it into Inf */
    memcpy(&snan, &u, 4);
    CHECK(isnan(bf16_to_float(bf16_from_float(snan))));
    CHECK(isnan(bf16_to_float(bf16_from_float(NAN))));
    CHECK(isnan(bf16_to_float(bf16_from_float(-NAN))) && (bf16_from_float(-NAN) & 0x8000));
    double worst = 0; /* relative error of rounding at most half an ulp: 2^-8 (8 significant bits) */
    for (int i = 1; i < 1000; i++) {
        float f = (float)i * 1.37e-3f - 0.6f;
        if (f != 0) worst = check_max(worst, fabs(bf16_to_float(bf16_from_float(f)) - f) / fabs(f));
    }
    CHECK_MSG(worst <= 0x1p-8, "bf16 rounding error %.3g", worst);
    CHECK(bits_of(bf16_to_float(0x4049)) == 0x4049);
}

/* C = alpha A B^T + beta C0 with A (M,K), B (N,K) from X, Y (transposed when asked) on the
 * path allowed, against a double sum of the bf16-rounded inputs: each entry within K ulp-sized
 * steps of fp32 accumulation of sum |a b|. Returns the worst error in those units. */
static double check_shape(int M, int N, int K, int ta, int tb, float alpha, float beta, uint64_t seed) {
    int lda = ta ? M + 3 : K + 2, ldb = tb ? N + 1 : K + 5, ldc = N + 4;
    float *X = randn((size_t)(ta ? K : M) * lda, seed), *Y = randn((size_t)(tb ? K : N) * ldb, seed + 1);
    float *C = randn((size_t)M * ldc, seed + 2), *C0 = xmalloc((size_t)M * ldc * sizeof(float));
    memcpy(C0, C, (size_t)M * ldc * sizeof(float));
    uint32_t *A = xmalloc(bf16_a_words(M, K) * 4), *B = xmalloc(bf16_b_words(N, K) * 4);
    bf16_pack_a(X, M, K, lda, ta, A);
    bf16_pack_b(Y, N, K, ldb, tb, B);
    bf16_gemm(M, N, K, alpha, A, B, beta, C, ldc);
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double a = bf16_to_float(bf16_from_float(ta ? X[(size_t)k * lda + m] : X[(size_t)m * lda + k]));
                double b = bf16_to_float(bf16_from_float(tb ? Y[(size_t)k * ldb + n] : Y[(size_t)n * ldb + k]));
                s += a * b;
                mag += fabs(a * b);
            }
            double want = alpha * s + beta * C0[(size_t)m * ldc + n];
            double unit = (K + 2) * 0x1p-24 * (fabs(alpha) * mag + fabs(beta * C0[(size_t)m * ldc + n])) + 1e-30;
            worst = check_max(worst, fabs(C[(size_t)m * ldc + n] - want) / unit);
        }
    for (int m = 0; m < M; m++) /* the padding of C's rows is not written */
        for (int n = N; n < ldc; n++) CHECK(C[(size_t)m * ldc + n] == C0[(size_t)m * ldc + n]);
    free(X), free(Y), free(C), free(C0), free(A), free(B);
    return worst;
}

static void shapes(const char *path) {
    static const int dims[][3] = {{1, 1, 1}, {8, 32, 64}, {13, 45, 7}, {21, 70, 300}, {9, 33, 2}, {7, 16, 5}, {16, 64, 1}};
    double worst = 0;
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        for (int t = 0; t < 4; t++) {
            double w = check_shape(dims[i][0], dims[i][1], dims[i][2], t & 1, t >> 1, t == 3 ? -0.5f : 1.0f,
                                   t == 2 ? 0.0f : 0.75f, 100 + 10 * i + (uint64_t)t);
            CHECK_MSG(w <= 1.0, "%s path %dx%dx%d trans %d: error %.3g of the fp32 accumulation bound", path,
                      dims[i][0], dims[i][1], dims[i][2], t, w);
            worst = check_max(worst, w);
        }
    if (comm_rank() == 0) printf("    %s path: worst error %.3f of the fp32 accumulation bound\n", path, worst);
}

static void test_gemm_paths(void) {
    shapes(bf16_gemm_native() ? "AVX512-BF16" : "scalar (no AVX512-BF16 here)");
    int was = bf16_gemm_allow_native(0);
    CHECK(!bf16_gemm_native());
    shapes("scalar");
    bf16_gemm_allow_native(was);
}

/* beta 0 does not read C (NaN there is dropped); a NaN in A's row m makes row m NaN, only it */
static void test_gemm_nan(void) {
    for (int native = 0; native < 2; native++) {
        int was = bf16_gemm_allow_native(native);
        int M = 11, N = 40, K = 9;
        float *X = randn((size_t)M * K, 50), *Y = randn((size_t)N * K, 51), *C = xmalloc((size_t)M * N * 4);
        for (int i = 0; i < M * N; i++) C[i] = NAN;
        X[4 * K + 6] = NAN;
        uint32_t *A = xmalloc(bf16_a_words(M, K) * 4), *B = xmalloc(bf16_b_words(N, K) * 4);
        bf16_pack_a(X, M, K, K, 0, A);
        bf16_pack_b(Y, N, K, K, 0, B);
        bf16_gemm(M, N, K, 1.0f, A, B, 0.0f, C, N);
        int nan_rows_ok = 1;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) nan_rows_ok &= (m == 4) == (isnan(C[(size_t)m * N + n]) != 0);
        CHECK_MSG(nan_rows_ok, "NaN rows wrong (native allowed %d)", native);
        bf16_gemm_allow_native(was);
        free(X), free(Y), free(C), free(A), free(B);
    }
}

/* logits = H W^T, dH = G W, dW = G^T H at small UID-head shapes, against fp32 sgemm: within
 * bf16's rounding of the inputs (2^-8 relative each) of sum |a b| */
static void test_uid_products(void) {
    int nb = 37, V = 301, d = 64;
    float *H = randn((size_t)nb * d, 60), *W = randn((size_t)V * d, 61), *G = randn((size_t)nb * V, 62);
    float *ref = xmalloc((size_t)V * d * 4), *got = xmalloc((size_t)V * d * 4), *mag = xmalloc((size_t)V * d * 4);
    uint32_t *A = xmalloc(bf16_a_words(V, V) * 4), *B = xmalloc(bf16_b_words(V, V) * 4);
    float *Ha = xmalloc((size_t)nb * d * 4), *Wa = xmalloc((size_t)V * d * 4), *Ga = xmalloc((size_t)nb * V * 4);
    for (size_t i = 0; i < (size_t)nb * d; i++) Ha[i] = fabsf(H[i]);
    for (size_t i = 0; i < (size_t)V * d; i++) Wa[i] = fabsf(W[i]);
    for (size_t i = 0; i < (size_t)nb * V; i++) Ga[i] = fabsf(G[i]);
    const char *name[3] = {"logits = H W^T", "dH = G W", "dW = G^T H"};
    for (int which = 0; which < 3; which++) {
        int M = which == 2 ? V : nb, N = which == 0 ? V : d, K = which == 0 ? d : which == 1 ? V : nb;
        if (which == 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, H, d, W, d, 0, ref, N);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, Ha, d, Wa, d, 0, mag, N);
            bf16_pack_a(H, M, K, d, 0, A);
            bf16_pack_b(W, N, K, d, 0, B);
        } else if (which == 1) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, G, V, W, d, 0, ref, N);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, Ga, V, Wa, d, 0, mag, N);
            bf16_pack_a(G, M, K, V, 0, A);
            bf16_pack_b(W, N, K, d, 1, B); /* W^T: (d, V) from W (V, d) */
        } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1, G, V, H, d, 0, ref, N);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1, Ga, V, Ha, d, 0, mag, N);
            bf16_pack_a(G, M, K, V, 1, A); /* G^T: (V, nb) from G (nb, V) */
            bf16_pack_b(H, N, K, d, 1, B); /* H^T: (d, nb) from H (nb, d) */
        }
        bf16_gemm(M, N, K, 1.0f, A, B, 0.0f, got, N);
        double worst = 0;
        for (size_t i = 0; i < (size_t)M * N; i++) worst = check_max(worst, fabs(got[i] - ref[i]) / (mag[i] + 1e-30));
        CHECK_MSG(worst < 0x1p-7, "%s: error %.3g of sum |a b|", name[which], worst);
        if (comm_rank() == 0) printf("    %s: worst error %.2e of sum |a b| (bf16 rounds each input by <= 2^-8)\n", name[which], worst);
    }
    free(H), free(W), free(G), free(ref), free(got), free(mag), free(A), free(B), free(Ha), free(Wa), free(Ga);
}

/* the vector packers (rows of A; B's panels from columns) give the scalar ones' words, tails included */
static void test_pack_paths(void) {
    int M = 19, K = 45, N = 70;
    float *X = randn((size_t)M * K, 70), *Y = randn((size_t)K * N, 71);
    uint32_t *a[2], *b[2];
    for (int native = 0; native < 2; native++) {
        int was = bf16_gemm_allow_native(native);
        a[native] = xmalloc(bf16_a_words(M, K) * 4);
        b[native] = xmalloc(bf16_b_words(N, K) * 4);
        bf16_pack_a(X, M, K, K, 0, a[native]);
        bf16_pack_b(Y, N, K, N, 1, b[native]);
        bf16_gemm_allow_native(was);
    }
    CHECK(memcmp(a[0], a[1], bf16_a_words(M, K) * 4) == 0);
    CHECK(memcmp(b[0], b[1], bf16_b_words(N, K) * 4) == 0);
    free(X), free(Y), free(a[0]), free(a[1]), free(b[0]), free(b[1]);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_bf16gemm");
    RUN_TEST(test_rounding);
    RUN_TEST(test_gemm_paths);
    RUN_TEST(test_gemm_nan);
    RUN_TEST(test_pack_paths);
    RUN_TEST(test_uid_products);
    return check_finish();
}
