/* vmath: vectorised exp and tanh (Cephes polynomial for exp on [-ln2/2, ln2/2], 2^n by exponent
 * bits), with a scalar libm path for CPUs without AVX2/FMA and for the tails. */
#include "vmath.h"
#include <math.h>

/* max of x[0..n) and seed[0..ns); NaN if any is NaN */
static float max_scalar(const float *x, size_t n, const float *seed, size_t ns) {
    float r = -INFINITY;
    for (size_t j = 0; j < ns; j++) r = seed[j] > r ? seed[j] : r;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i])) return NAN;
        r = x[i] > r ? x[i] : r;
    }
    return r;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define VMATH_AVX2 1

/* exp's constants: the clamp, log2(e), ln2 in two parts, the polynomial from its highest term */
#define EXP_LO (-87.33654f)
#define EXP_HI 88.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO (-2.12194440e-4f)
static const float exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
    /* min/max return their second operand when either is NaN: x goes second so NaN propagates */
    x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), _mm256_min_ps(_mm256_set1_ps(EXP_HI), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x); /* x - n ln2 */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(exp_poly[0]);
    for (int k = 1; k < 6; k++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_poly[k]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e)); /* p * 2^n, n in [-126, 127] by the clamp */
}

/* exp8's operations on 16 lanes (AVX-512F): every lane's result is exp8's, bit for bit */
__attribute__((target("avx512f"))) static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(EXP_LO), _mm512_min_ps(_mm512_set1_ps(EXP_HI), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(exp_poly[0]);
    for (int k = 1; k < 6; k++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_poly[k]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* x[i..n) through exp8, their sum added into the 8-lane sum s, then its lanes and the scalar tail */
__attribute__((target("avx2,fma"))) static inline float exp_shift_sum_from(float *x, size_t i, size_t n, float shift,
                                                                           __m256 s) {
    __m256 sh = _mm256_set1_ps(shift);
    for (; i + 8 <= n; i += 8) {
        __m256 y = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, y);
        s = _mm256_add_ps(s, y);
    }
    float lanes[8], sum = 0;
    _mm256_storeu_ps(lanes, s);
    for (int j = 0; j < 8; j++) sum += lanes[j];
    for (; i < n; i++) sum += x[i] = expf(x[i] - shift);
    return sum;
}

__attribute__((target("avx2,fma"))) static float exp_shift_sum_avx2(float *x, size_t n, float shift) {
    return exp_shift_sum_from(x, 0, n, shift, _mm256_setzero_ps());
}

/* 16 at a time where the CPU has AVX-512F, each half added into the 8-lane sum in exp8's order,
 * so the sum is the AVX2 path's bit for bit */
__attribute__((target("avx512f,avx2,fma"))) static float exp_shift_sum_avx512(float *x, size_t n, float shift) {
    __m256 s = _mm256_setzero_ps();
    __m512 sh = _mm512_set1_ps(shift);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 y = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        _mm512_storeu_ps(x + i, y);
        s = _mm256_add_ps(s, _mm512_castps512_ps256(y));
        s = _mm256_add_ps(s, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(y), 1)));
    }
    return exp_shift_sum_from(x, i, n, shift, s);
}

/* tanh(u) = 1 - 2 / (exp(2u) + 1); near 0 that cancels, so |u| < 0.25 uses the series
 * u - u^3/3 + 2u^5/15 - 17u^7/315 + 62u^9/2835 (its coefficients from the highest) */
static const float tanh_series[4] = {62.0f / 2835.0f, -17.0f / 315.0f, 2.0f / 15.0f, -1.0f / 3.0f};

/* tanh's two regimes for the lanes of u, in one vector width's intrinsics (P: _mm256 or _mm512, T
 * its type, EXP its exp): big = 1 - 2 / (exp(2u) + 1), small = the series */
#define TANH_PARTS(P, T, EXP, u, big, small)                                                                 \
    do {                                                                                                   \
        T one_ = P##_set1_ps(1.0f), two_ = P##_set1_ps(2.0f), u2_ = P##_mul_ps(u, u);                     \
        T q_ = P##_set1_ps(tanh_series[0]);                                                                \
        for (int k_ = 1; k_ < 4; k_++) q_ = P##_fmadd_ps(u2_, q_, P##_set1_ps(tanh_series[k_]));           \
        big = P##_sub_ps(one_, P##_div_ps(two_, P##_add_ps(EXP(P##_mul_ps(two_, u)), one_)));              \
        small = P##_fmadd_ps(P##_mul_ps(u2_, u), q_, u);                                                   \
    } while (0)

/* x[i..n) in place, 8 lanes at a time, then the scalar tail */
__attribute__((target("avx2,fma"))) static inline void tanh_from(float *x, size_t i, size_t n) {
    for (; i + 8 <= n; i += 8) {
        __m256 u = _mm256_loadu_ps(x + i), big, small;
        TANH_PARTS(_mm256, __m256, exp8, u, big, small);
        __m256 near0 = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), u), _mm256_set1_ps(0.25f), _CMP_LT_OQ);
        _mm256_storeu_ps(x + i, _mm256_blendv_ps(big, small, near0));
    }
    for (; i < n; i++) x[i] = tanhf(x[i]);
}

__attribute__((target("avx2,fma"))) static void tanh_avx2(float *x, size_t n) { tanh_from(x, 0, n); }

/* 16 lanes at a time, the same operations: every value is the AVX2 path's, bit for bit */
__attribute__((target("avx512f,avx2,fma"))) static void tanh_avx512(float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 u = _mm512_loadu_ps(x + i), big, small;
        TANH_PARTS(_mm512, __m512, exp16, u, big, small);
        __mmask16 near0 = _mm512_cmp_ps_mask(_mm512_abs_ps(u), _mm512_set1_ps(0.25f), _CMP_LT_OQ);
        _mm512_storeu_ps(x + i, _mm512_mask_blend_ps(near0, big, small));
    }
    tanh_from(x, i, n);
}

/* max_ps drops NaN lanes, so NaNs are collected apart: the max of anything with a NaN is NaN */
__attribute__((target("avx2,fma"))) static float max_avx2(const float *x, size_t n) {
    __m256 m = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        m = _mm256_max_ps(m, v);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) return NAN;
    float lanes[8];
    _mm256_storeu_ps(lanes, m);
    return max_scalar(x + i, n - i, lanes, 8);
}

__attribute__((target("avx2,fma"))) static void scale_avx2(float *x, size_t n, float f) {
    __m256 vf = _mm256_set1_ps(f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vf));
    for (; i < n; i++) x[i] *= f;
}

static int have_avx2(void) {
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return have;
}

static int allow_avx512 = 1;
static int have_avx512(void) {
    static int have = -1;
    if (have < 0) have = have_avx2() && __builtin_cpu_supports("avx512f");
    return have && allow_avx512;
}
#endif

int vmath_allow_avx512(int allow) {
#ifdef VMATH_AVX2
    int was = allow_avx512;
    allow_avx512 = allow;
    return was;
#else
    (void)allow;
    return 0;
#endif
}

float vexp_shift_sum(float *x, size_t n, float shift) {
#ifdef VMATH_AVX2
    if (have_avx512()) return exp_shift_sum_avx512(x, n, shift);
    if (have_avx2()) return exp_shift_sum_avx2(x, n, shift);
#endif
    float sum = 0;
    for (size_t i = 0; i < n; i++) sum += x[i] = expf(x[i] - shift);
    return sum;
}

void vtanh(float *x, size_t n) {
#ifdef VMATH_AVX2
    if (have_avx512()) {
        tanh_avx512(x, n);
        return;
    }
    if (have_avx2()) {
        tanh_avx2(x, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
}

float vmax(const float *x, size_t n) {
#ifdef VMATH_AVX2
    if (have_avx2()) return max_avx2(x, n);
#endif
    return max_scalar(x, n, NULL, 0);
}

void vscale(float *x, size_t n, float f) {
#ifdef VMATH_AVX2
    if (have_avx2()) {
        scale_avx2(x, n, f);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) x[i] *= f;
}
