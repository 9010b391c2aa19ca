/* What attr.c (one stack) and attr_seq2seq.c (encoder-decoders) share. Not a public header. */
#ifndef LOUPE_ATTR_IMPL_H
#define LOUPE_ATTR_IMPL_H

#include "arch/model_impl.h"
#include "loupe/attr.h"

/* row (T) <- row A_{L-1} ... A_0, the rollout matrices (0.5 mean-head pattern + 0.5 I, rows
 * renormalised) of the first T positions of r's stack. LP_ENOMEM. */
int attr_rollout_row(double *row, const lp_run *r, int T);
/* scores (keys) = ||sum_h P_h[pos, j] v_j W_O^h||_2 for keys j < keys: P (H, ., .) with head
 * stride p_hs and row stride p_ld, v (keys, kv_heads * dh), out the output projection (its bias,
 * no key's, left out). LP_ENOMEM. */
int attr_attn_norms(float *scores, const lp_config *c, const float *P, long p_hs, long p_ld, const float *v,
                    int kv_heads, const lp_linear *out, int pos, int keys);
/* lp_attr on an encoder-decoder run, its arguments checked (layer resolved): scores (S + T). */
int attr_seq2seq(float *scores, double *delta, const lp_run *r, const lp_attr_spec *sp, int layer);

#endif
