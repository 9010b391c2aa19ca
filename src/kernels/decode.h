/* The single-row product of decoding (one new token through a weight matrix), on loupe's
 * pool rather than OpenBLAS's sgemv. Not a public header. */
#ifndef LOUPE_DECODE_H
#define LOUPE_DECODE_H

#include "arch/model_impl.h"

/* y (out) = x (in) W + b, for either of lp_linear's layouts. Each output's sum runs over
 * the inputs in an order set by in alone: results do not depend on the thread count. */
void lp_decode_linear(float *y, const float *x, const lp_linear *lin);
/* y[i] = x lin[i] for m matrices that read the same x (q, k and v; gate and up): the
 * same bytes as m calls of lp_decode_linear, in one job on the pool when all are (out, in)
 * of one width, so the threads wake once for them all. */
void lp_decode_linears(float *const *y, const float *x, const lp_linear *const *lin, int m);

/* One query's attention over keys rows of k, v (a row every ld floats; dh used): scores
 * p[j] = scale q . k_j, then z = sum_j p[j] v_j once p is softmaxed. */
void lp_decode_scores(float *p, const float *q, const float *k, int keys, int dh, size_t ld, float scale);
void lp_decode_mix(float *z, const float *p, const float *v, int keys, int dh, size_t ld);

#endif
