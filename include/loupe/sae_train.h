/* Training a sparse autoencoder on rows of one site (SAELens's training, the parts that
 * decide the maths):
 *   x' = x - b_dec, pre = x' W_enc + b_enc, f = ReLU(pre) (standard) or ReLU at the k
 *   largest of pre (topk; ties to the smaller index, as lp_top_k), x_hat = f W_dec + b_dec.
 *   loss = mean over rows of |x_hat - x|^2 (summed over d_in, SAELens's mse summed per row)
 *        + l1 * mean over rows of sum_j f_j            (standard only; topk has no penalty)
 * The decoder's rows are kept at unit norm (renormalised after every step, the gradient's
 * component along each row removed before it: SAELens's
 * remove_gradient_parallel_to_decoder_directions), so the L1 penalty cannot be dodged by
 * shrinking f and growing W_dec. Init: W_dec rows uniform random directions, W_enc = W_dec^T
 * (init_encoder_as_decoder_transpose), b_enc = 0, b_dec = the mean of the first rows seen.
 * AdamW without weight decay (beta1 0.9, beta2 0.999, eps 1e-8), a constant rate.
 * With normalize, every row is first multiplied by c = sqrt(d_in) / (the first batch's mean
 * norm), SAELens's expected_average_only_in, so that --l1 means the same at any site; the
 * saved weights have c folded in (W_enc c, W_dec / c, b_dec / c), so the file reads raw rows.
 * The stats' mse and l1 are in the normalised units (explained variance has none).
 * The result is saved in SAELens's layout (cfg.json + sae_weights.safetensors), which
 * lp_sae_load reads back. */
#ifndef LOUPE_SAE_TRAIN_H
#define LOUPE_SAE_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "loupe/sae.h"

typedef struct {
    int d_in, d_sae;
    lp_sae_arch arch; /* LP_SAE_STANDARD or LP_SAE_TOPK */
    int k;            /* topk: features kept per row, 1..d_sae */
    double l1;        /* standard: the penalty's coefficient, >= 0 */
    double lr;        /* > 0 */
    bool normalize;   /* scale inputs so that the first batch's mean norm is sqrt(d_in) */
    uint64_t seed;
} lp_sae_train_spec;

typedef struct {
    double loss, mse, l1;      /* means over the batch's rows, before the step */
    double l0;                 /* active features per row */
    double explained_variance; /* 1 - sum |x_hat - x|^2 / sum |x - mean(x)|^2 over the batch */
} lp_sae_step_stats;

typedef struct lp_sae_trainer lp_sae_trainer;

/* Checks the spec (one error line naming the bad value) and makes the parameters. */
int lp_sae_trainer_new(lp_sae_trainer **out, const lp_sae_train_spec *spec);
void lp_sae_trainer_free(lp_sae_trainer *t);

/* The loss on x (n, d_in) and, with grads non-NULL, its gradient into grads, laid out as
 * the parameters are (lp_sae_trainer_params): for tests against finite differences. */
int lp_sae_trainer_loss(lp_sae_trainer *t, const float *x, int n, lp_sae_step_stats *st, float *grads);
/* One optimiser step on the batch x (n, d_in); the first step also sets b_dec to the
 * batch's mean. */
int lp_sae_trainer_step(lp_sae_trainer *t, const float *x, int n, lp_sae_step_stats *st);

/* The parameters as one block: W_enc (d_in, d_sae), b_enc (d_sae), W_dec (d_sae, d_in),
 * b_dec (d_in), in that order; *count floats. Writable: tests perturb them. */
float *lp_sae_trainer_params(lp_sae_trainer *t, size_t *count);

/* Writes dir/cfg.json and dir/sae_weights.safetensors (SAELens: architecture, d_in, d_sae,
 * hook_name, apply_b_dec_to_input true, normalize_activations none, k for topk), committed
 * as one unit; dir must be new or empty. */
int lp_sae_trainer_save(const lp_sae_trainer *t, const char *dir, const char *hook_name, const char *model_name);

#endif
