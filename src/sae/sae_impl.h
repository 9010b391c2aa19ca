/* The dictionary's parameters, shared by the maths (sae.c) and the loaders (sae_load.c).
 * Every array is owned, float32, row-major, converted and checked at load. */
#ifndef LOUPE_SAE_IMPL_H
#define LOUPE_SAE_IMPL_H

#include "loupe/sae.h"

struct lp_sae {
    lp_sae_info info;
    float *w_enc;     /* (d_in, d_sae); sparsify's encoder.weight transposed */
    float *b_enc;     /* (d_sae): b_enc, or gated's b_gate */
    float *w_dec;     /* (d_sae, d_out) */
    float *b_dec;     /* (d_out) */
    float *threshold; /* (d_sae) jumprelu, else NULL */
    float *r_mag;     /* (d_sae) gated: exp(r_mag) already taken, else NULL */
    float *b_mag;     /* (d_sae) gated, else NULL */
    float *w_skip;    /* (d_out, d_in) sparsify skip_connection, else NULL */
};

#endif
