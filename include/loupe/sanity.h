/* The model-randomisation sanity check of an attribution (Adebayo et al. 2018): the model's
 * layers randomised from the top down in cascade, on a seeded copy in memory (never the
 * user's file), and the attribution recomputed at each depth; Spearman's rank correlation
 * of |scores| with the original's says how much of the model the attribution reads. */
#ifndef LOUPE_SANITY_H
#define LOUPE_SANITY_H

#include <stdint.h>

#include "loupe/model.h"
#include "loupe/run.h"

/* A copy of a model whose top `depth` layers have random linear weights (each tensor: normal
 * with its own mean and standard deviation, drawn from `seed`; depth d + 1 keeps depth d's
 * draws and adds the next layer down). Norms, biases and embeddings stay the model's. The
 * original must outlive it. LP_EUNSUPPORTED for encoder-decoders. */
typedef struct lp_randomised lp_randomised;
int lp_randomised_new(lp_randomised **out, const lp_model *m, int depth, uint64_t seed);
const lp_model *lp_randomised_model(const lp_randomised *r);
void lp_randomised_free(lp_randomised *r);

/* An attribution of run r into scores (lp_run_len(r)). */
typedef int (*lp_sanity_fn)(float *scores, const lp_run *r, void *ctx);

/* rho[d - 1], d = 1..n_layer: Spearman's rho between |attribute(r)| and |attribute| of the
 * same tokens with the top d layers random, over positions 0..n-1 (NAN when either side is
 * constant). */
int lp_sanity_cascade(const lp_run *r, int n, lp_sanity_fn attribute, void *ctx, uint64_t seed, double *rho);

/* Spearman's rank correlation (ties averaged); NAN when n < 2 or either side is constant. */
double lp_spearman(const double *a, const double *b, int n);

#endif
