/* Logit lens: each layer's residual stream read out through the final norm and the
 * unembedding, as if the model stopped there. Row 0 is the embeddings (the residual stream
 * entering layer 0); row l + 1 is the residual stream leaving layer l; the last row is the
 * model's own output. The norm's scale is recomputed for each row (as TransformerLens's
 * accumulated_resid with apply_ln does). */
#ifndef LOUPE_LENS_H
#define LOUPE_LENS_H

#include "loupe/run.h"

/* For rows 0..n_layer and positions 0..T-1: the top k tokens and their probabilities,
 * top_ids/top_probs (n_layer + 1, T, k); and, when target >= 0, the target's probability
 * and rank (1 = top) in target_prob/target_rank (n_layer + 1, T) (either may be NULL).
 * LP_ECANCEL (checked between chunks) if cancelled. */
int lp_lens(const lp_run *r, int k, int target, int *top_ids, float *top_probs, float *target_prob, int *target_rank);

/* The lens is computed in chunks of positions (chunk c: c * LP_LENS_CHUNK onwards), every
 * row of a chunk in one matrix product: a cell's numbers are the chunk's whoever asks (the
 * browser's lens view computes only the chunks it shows; a product's rows may differ in
 * their last bits with the rows around them, so cells are never computed another way). */
#define LP_LENS_CHUNK 4
/* lp_lens's outputs, same arrays and layout, for the positions of chunk c only. */
int lp_lens_chunk(const lp_run *r, int c, int k, int target, int *top_ids, float *top_probs, float *target_prob,
                  int *target_rank);

/* The lens logits of one row and position into logits (V). */
int lp_lens_logits(const lp_run *r, int row, int pos, float *logits);

#endif
