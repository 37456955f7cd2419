/* vmath: exp, tanh, max and scaling over arrays for the hot loops (softmax over all items, GELU). AVX2 + FMA
 * when the CPU has them (chosen once at run time), libm otherwise. Accurate to a few ulp. */
#ifndef CAR_VMATH_H
#define CAR_VMATH_H
#include <stddef.h>

/* x[i] = exp(x[i] - shift) for i < n; returns the sum of the new x (float accumulation) */
float vexp_shift_sum(float *x, size_t n, float shift);
/* max of x[0..n) (-INFINITY when n = 0; NaN when any element is NaN) */
float vmax(const float *x, size_t n);
/* x[i] *= f */
void vscale(float *x, size_t n, float f);
/* x[i] = tanh(x[i]) */
void vtanh(float *x, size_t n);

#endif
