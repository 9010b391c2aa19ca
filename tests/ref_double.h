/* The independent float64 kernels of the suites' finite-difference references
 * (test_grad.c's decoder forward, test_encoder.c's encoder forward), reading the model's
 * float weights (header-only: each suite is one program). */
#ifndef LOUPE_TEST_REF_DOUBLE_H
#define LOUPE_TEST_REF_DOUBLE_H

#include <math.h>
#include <stddef.h>

#include "arch/model_impl.h"

/* y (n, out) = x (n, in) W + b. */
static inline void dlinear(double *y, const double *x, const lp_linear *l, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < l->out; j++) {
            double s = l->b ? l->b[j] : 0.0;
            for (int k = 0; k < l->in; k++)
                s += x[(size_t)i * l->in + k] * (l->trans ? l->w[(size_t)j * l->ld + k] : l->w[(size_t)k * l->ld + j]);
            y[(size_t)i * l->out + j] = s;
        }
}

/* y (n, d) = norm(x) w + b (b NULL: none), LayerNorm or RMSNorm. */
static inline void dnorm(double *y, const double *x, const float *w, const float *b, int n, int d, lp_norm_kind kind,
                  double eps) {
    for (int i = 0; i < n; i++) {
        const double *xi = x + (size_t)i * d;
        double mean = 0, var = 0;
        if (kind == LP_NORM_LAYERNORM) {
            for (int j = 0; j < d; j++) mean += xi[j];
            mean /= d;
        }
        for (int j = 0; j < d; j++) var += (xi[j] - mean) * (xi[j] - mean);
        double s = 1.0 / sqrt(var / d + eps);
        for (int j = 0; j < d; j++) y[(size_t)i * d + j] = (xi[j] - mean) * s * w[j] + (b ? b[j] : 0.0);
    }
}

#endif
