/* Input attribution: a score per input position for one prediction of a captured run.
 *
 * "The input" of the gradient methods is the embedding of each position: the residual
 * stream entering layer 0 (the token embedding, plus the learned position embedding for
 * GPT-2). Integrated gradients, gradient x input and occlusion change only the token part:
 * a position keeps its GPT-2 position embedding, as when a token is replaced by another.
 *   saliency   ||df/dx_t||_2, the gradient at position t's embedding (the same vector for
 *              the token embedding and for token + position)
 *   gxi        sum_k df/dx_t,k * e_t,k with e_t the token embedding of position t
 *   ig         integrated gradients from a baseline b: (e_t - b) . int_0^1 df/dx(b + a (e - b)) da,
 *              the integral by Gauss-Legendre quadrature on [0, 1] with `steps` nodes (Captum's
 *              default rule); delta = sum_t score_t - (f(x) - f(baseline)). When |delta| is
 *              above `tolerance` (1%) of |f(x) - f(baseline)|, the path is cut into pieces where f changes
 *              and each piece integrated again (8 nodes), until the gaps meet that bound or
 *              `max_steps` gradients are spent (the report says which)
 *   occlusion  f(x) - f(x with the token embeddings of a window of positions replaced by the
 *              baseline), windows of `window` positions sliding by one; a position scores the
 *              mean over the windows that cover it (Captum's Occlusion)
 *   rollout    attention rollout (Abnar & Zuidema 2020): per layer the heads' mean pattern A,
 *              made 0.5 A + 0.5 I for the residual stream, rows renormalised; the product
 *              over layers (last on the left); scores = its row pos. Patterns are per query
 *              head, so grouped-query attention changes nothing here.
 *   attnxnorm  Kobayashi et al. (2020): in layer `layer`, ||sum_h A_h[pos, j] (v_j W_O^h)||_2 for
 *              each key j, with v_j the value vector (bias included) of head h's key/value head
 *              and W_O^h head h's rows of the output projection.
 * Positions after pos cannot affect its prediction (attention is causal) and score 0.
 *
 * Encoder-decoders (T5; lp_run_source(r) != NULL, S source and T decoder positions): a
 * decoder token is explained by both of its inputs at once, Inseq's source/target split, in
 * one score vector of lp_attr_len(r) = S + T entries, the S source positions first, then the
 * T decoder input positions (the start id and the target prefix; those after pos score 0).
 * "The input" is the two matrices of token embeddings (T5 adds no position embedding):
 *   saliency, gxi  as above, from one backward through both stacks (grad_seq2seq.h)
 *   ig         the baseline replaces every source and every target token embedding, and the
 *              path scales both together: delta = sum over both vectors - (f(x) - f(baseline)),
 *              completeness across the source and the target
 *   occlusion  windows of `window` positions slide within the source and within the target
 *              prefix 0..pos, never across the boundary (a side shorter than the window is
 *              occluded whole)
 *   rollout    over the joint set of source and target tokens, the rollout of ALTI+ (Ferrando
 *              et al. 2022, "Towards Opening the Black Box of Neural Machine Translation",
 *              mt-upc/transformer-contributions-nmt) with Abnar & Zuidema's attention weights
 *              in place of ALTI's contributions: the encoder's rollout gives each encoder
 *              output row's mix of source tokens; in each decoder layer, self-attention mixes
 *              the target rows by 0.5 A + 0.5 I and cross-attention gives 0.5 of each target
 *              row to the encoder's outputs (the heads' mean cross pattern, hence to source
 *              tokens through the encoder's rollout) and keeps 0.5. Scores over S + T sum to 1.
 *   attnxnorm  in decoder layer `layer`, Kobayashi et al. (2020)'s norms for each sublayer
 *              (their NMT analysis applies them to source-target attention): over the source,
 *              ||sum_h X_h[pos, j] (xv_j W_xO^h)|| for cross-attention's pattern X, values xv
 *              (of the encoder's output) and output projection W_xO; over the target prefix,
 *              self-attention's as above. The two sublayers' norms share one scale. */
#ifndef LOUPE_ATTR_H
#define LOUPE_ATTR_H

#include <stdbool.h>

#include "loupe/grad.h"
#include "loupe/run.h"

typedef enum {
    LP_ATTR_SALIENCY,
    LP_ATTR_GXI,
    LP_ATTR_IG,
    LP_ATTR_OCCLUSION,
    LP_ATTR_ROLLOUT,
    LP_ATTR_ATTNXNORM,
    LP_ATTR_COUNT
} lp_attr_method;

const char *lp_attr_method_name(lp_attr_method m);                 /* "saliency", ... */
int lp_attr_method_from_name(const char *name, lp_attr_method *out); /* LP_EINVAL listing the methods */
bool lp_attr_has_objective(lp_attr_method m);   /* false for rollout and attnxnorm, which read attention only */
bool lp_attr_has_delta(lp_attr_method m);       /* ig */

typedef struct {
    lp_attr_method method;
    lp_objective objective; /* what is explained; rollout and attnxnorm read only its pos */
    int steps;              /* ig: quadrature nodes (0: 32) */
    int baseline;           /* ig, occlusion: the token whose embedding stands in; -1: the zero vector */
    int window;             /* occlusion: positions replaced at once (0: 1) */
    int layer;              /* attnxnorm: the layer (-1: the last; the decoder's for encoder-decoders) */
    int max_steps;          /* ig: gradients it may spend refining (0: 16 x steps; steps: Captum's rule only) */
    double tolerance;       /* ig: the completeness it refines to, a share of |f(x) - f(baseline)| (0: 0.01) */
} lp_attr_spec;

/* The number of scores lp_attr gives for r: S + T for an encoder-decoder's run, else T. */
int lp_attr_len(const lp_run *r);

/* scores (lp_attr_len(r)): one per position of r (encoder-decoders: the source's, then the
 * decoder's); *delta: the completeness gap (NAN for methods without
 * one). LP_EINVAL for an out-of-range position, token, layer, step count or window. */
int lp_attr(float *scores, double *delta, const lp_run *r, const lp_attr_spec *spec);

/* What an attribution measured beside its scores. */
typedef struct {
    double delta;               /* the completeness gap; NAN for methods without one */
    double f_input, f_baseline; /* ig: the objective at the input and at the baseline (else NAN) */
    int steps;                  /* ig: gradients evaluated (else 0) */
    bool converged;             /* ig: |delta| <= tolerance x |f(x) - f(baseline)| (or float32's noise) */
} lp_attr_report;

/* lp_attr, with the report. */
int lp_attr_full(float *scores, lp_attr_report *rep, const lp_run *r, const lp_attr_spec *spec);

/* One step of lp_attr_steps: the prediction at pos of the token that follows it. */
typedef struct {
    int pos, target;        /* the position explained, the token it predicts there (the run's next) */
    double prob, entropy;   /* that token's probability, the distribution's entropy (nats) */
    double contrast_diff;   /* p(target) - p(contrast) with a contrast, else NAN */
    lp_attr_report report;  /* delta, ig's steps and convergence */
} lp_attr_step;

/* Every token of r from position `from` on, explained in turn (Inseq's attribution of a
 * generated or given continuation): step i attributes the prediction at from + i - 1 of the
 * run's token at from + i, with spec's method, objective kind, contrast and options (its
 * pos and target are set per step). scores (n, lp_attr_len(r)) row by row, n = T - from
 * steps (T the decoder's positions of an encoder-decoder). LP_EINVAL unless 1 <= from < T. */
int lp_attr_steps(float *scores, lp_attr_step *steps, const lp_run *r, int from, const lp_attr_spec *spec);

/* Gauss-Legendre quadrature on [0, 1]: nodes alpha (n) ascending, weights (n) summing to 1;
 * exact for polynomials of degree up to 2n - 1. */
void lp_gauss_legendre(double *alpha, double *weight, int n);

#endif
