/* The optimiser's step over a block of parameters, in pieces that threads can share: the
 * shards' gradients summed with the sum of squares taken on the way (for clipping), then
 * AdamW. Not a public header. */
#ifndef LOUPE_ADAMW_H
#define LOUPE_ADAMW_H

#include <stdbool.h>
#include <stddef.h>

/* The sum of squares is taken per chunk of this many parameters and the chunks' sums added
 * in order: the norm depends on the parameters alone, not on how threads cut them. */
#define ADAMW_CHUNK 4096

/* grad[a, b) += each of the n_others gradients in turn; sq[c] = the sum of squares of chunk
 * c's entries for each chunk in [a, b) (a a multiple of ADAMW_CHUNK). */
void adamw_reduce(float *grad, float *const *others, int n_others, size_t a, size_t b, double *sq);

/* One step's settings: the gradient is scaled by clip; inv_bc1, inv_bc2 are 1 over the
 * moments' bias corrections. */
typedef struct {
    float lr, beta1, beta2, eps, clip, inv_bc1, inv_bc2;
} adamw_step;

/* AdamW (Loshchilov & Hutter: the decay applied to the weights, not through the moments)
 * on p[a, b) with weight decay wd; false when a weight became infinite or NaN. */
bool adamw_apply(float *p, float *mom, float *vel, const float *grad, size_t a, size_t b, float wd,
                 const adamw_step *s);

#endif
