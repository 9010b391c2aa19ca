/* The exact GELU (BERT's, GPT-NeoX's "gelu"), 8 lanes at a time. Not a public header. */
#ifndef LOUPE_KERNELS_GELU_ERF_H
#define LOUPE_KERNELS_GELU_ERF_H

#include <math.h>
#include <stddef.h>

/* x Phi(x) computed in double (erff is not guaranteed to be correctly rounded, and this keeps
 * the result within float rounding of the reference). */
static inline float lp_gelu_erf(float x) { return (float)(0.5 * x * (1.0 + erf(x * 0.70710678118654752440))); }

/* y[i] = lp_gelu_erf(x[i]) for i < n (to the bit on all 2^32 floats with glibc 2.36; see
 * gelu_erf.c); y may be x. */
void lp_gelu_erf_n(float *y, const float *x, size_t n);

#endif
