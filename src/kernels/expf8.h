/* The forward's two loops of expf (softmax rows, GPT-2's GELU), 8 floats at a time with the
 * same bits as glibc's expf: its algorithm (since 2.28: a 32-entry table of 2^(i/32), a
 * cubic, all in double) step for step, each FMA where the FMA build that glibc's ifunc picks
 * on such a CPU has one. Scalar expf took most of these loops' time (calls the compiler cannot
 * vectorise), and inference and training must keep their bits. Lanes out of the fast path's
 * range (|x| >= 88, NaN) and builds without AVX2 and FMA call expf. Not a public header. */
#ifndef LOUPE_KERNELS_EXPF8_H
#define LOUPE_KERNELS_EXPF8_H

#include <math.h>
#include <stddef.h>

/* GPT-2's tanh GELU, 0.5 x (1 + tanh(u)), written as x * sigmoid(2u): the same function,
 * and expf is several times cheaper than glibc's tanhf. */
static inline float lp_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return x / (1.0f + expf(-2.0f * k * (x + 0.044715f * x * x * x)));
}

/* row[j] = e < floor ? 0 : expf(e), e = row[j] - mx, for j < len; returns the sum of
 * row[j] * e over the entries kept (the softmax's entropy is log Z - that / Z, Z the row's
 * sum: no log per entry). */
double lp_softmax_exp(float *row, int len, float mx, float floor);

/* y[i] = lp_gelu_tanh(x[i]) for i < n; y may be x. */
void lp_gelu_tanh_n(float *y, const float *x, size_t n);

/* SiLU, Llama's gate activation. */
static inline float lp_silu(float x) { return x / (1.0f + expf(-x)); }

/* The gated MLPs' y[i] = act(g[i]) * u[i] for i < n, act lp_silu (SwiGLU) or lp_gelu_tanh
 * (GeGLU), with those expressions' bits; y may be g or u. */
void lp_silu_mul_n(float *y, const float *g, const float *u, size_t n);
void lp_gelu_tanh_mul_n(float *y, const float *g, const float *u, size_t n);

#endif
