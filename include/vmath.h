/* vmath: exp, tanh, max and scaling over arrays for the hot loops (softmax over all items, GELU). AVX2 + FMA
 * when the CPU has them (chosen once at run time), libm otherwise. Accurate to a few ulp. */
#ifndef CAR_VMATH_H
#define CAR_VMATH_H
#include <stddef.h>

/* VMATH_CLONES on a hot kernel: the compiler emits an AVX2 copy of it beside the baseline one and
 * the loader picks one per CPU (ifunc; GCC on x86-64 Linux). Its loops marked `#pragma omp simd`
 * (built with -fopenmp-simd: the pragma only, no OpenMP runtime) are then vectorised, reductions
 * included (which -O2 alone may not reorder). Not under clang: clang 14 emits no symbol for a
 * cloned function that other files call (the fuzz build, the only clang one, fails to link). */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define VMATH_CLONES __attribute__((target_clones("avx2", "default")))
/* the same with an AVX-512 copy too, for loops whose every result is computed lane by lane (no
 * reduction across lanes), so a wider vector gives the same bits */
#define VMATH_CLONES_WIDE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VMATH_CLONES
#define VMATH_CLONES_WIDE
#endif

/* x[i] = exp(x[i] - shift) for i < n; returns the sum of the new x (float accumulation). 16 lanes
 * at a time where the CPU has AVX-512F, with the AVX2 path's results bit for bit. */
float vexp_shift_sum(float *x, size_t n, float shift);
/* tests: allow the AVX-512 paths of exp and tanh (1, the default) or keep to AVX2 (0); returns the
 * previous setting. (The VMATH_CLONES_WIDE copies are chosen by the loader, per CPU.) */
int vmath_allow_avx512(int allow);
/* max of x[0..n) (-INFINITY when n = 0; NaN when any element is NaN) */
float vmax(const float *x, size_t n);
/* x[i] *= f */
void vscale(float *x, size_t n, float f);
/* x[i] = tanh(x[i]); 16 lanes at a time on AVX-512F, equal to the AVX2 path bit for bit */
void vtanh(float *x, size_t n);

#endif
