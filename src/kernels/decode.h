/* The single-row product of decoding (one new token through a weight matrix), on loupe's
 * pool rather than OpenBLAS's sgemv. Not a public header. */
#ifndef LOUPE_DECODE_H
#define LOUPE_DECODE_H

#include "arch/model_impl.h"

/* y (out) = x (in) W + b, for either of lp_linear's layouts. Each output's sum runs over
 * the inputs in an order set by in alone: results do not depend on the thread count. */
void lp_decode_linear(float *y, const float *x, const lp_linear *lin);

/* One query's attention over keys rows of k, v (a row every ld floats; dh used): scores
 * p[j] = scale q . k_j, then z = sum_j p[j] v_j once p is softmaxed. */
void lp_decode_scores(float *p, const float *q, const float *k, int keys, int dh, size_t ld, float scale);
void lp_decode_mix(float *z, const float *p, const float *v, int keys, int dh, size_t ld);

#endif
