/* Backward kernels of grad.c that training (train.c) shares: the gradients with respect to
 * a kernel's input. Not a public header. */
#ifndef LOUPE_GRAD_IMPL_H
#define LOUPE_GRAD_IMPL_H

#include <stddef.h>

#include "model_impl.h"

/* dx (n, in) = dy (n, out) W^T + beta dx, for y = x W + b. */
void linear_backward(float *dx, const float *dy, const lp_linear *lin, int n, float beta);
/* dx (n, d) += the gradient through y = norm(x) given dy (n, d); scale (n) is the forward's. */
void norm_backward(float *dx, const float *dy, const float *x, const float *scale, const float *w, int n, int d,
                   lp_norm_kind kind);
/* d_pre (n) = d_post * GELU-tanh'(pre). */
void gelu_backward(float *d_pre, const float *d_post, const float *pre, size_t n);

#endif
