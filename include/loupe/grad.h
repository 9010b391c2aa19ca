/* Gradients: reverse-mode differentiation of one scalar objective of a model's prediction,
 * with respect to its input embeddings and to every activation a run captures. The weights
 * are constants here (no parameter gradients).
 *
 * The objective reads the logits (V) of one position `pos`:
 *   LP_OBJ_LOGIT       logits[target]
 *   LP_OBJ_LOGPROB     logits[target] - log sum_j exp(logits[j])
 *   LP_OBJ_LOGIT_DIFF  logits[target] - logits[contrast]
 * The input is the residual stream entering layer 0, "the embeddings" (T, d): the token
 * embeddings, plus the learned position embeddings for GPT-2. Since that is a sum, the
 * gradient with respect to it is also the gradient with respect to the token embeddings. */
#ifndef LOUPE_GRAD_H
#define LOUPE_GRAD_H

#include "loupe/model.h"
#include "loupe/run.h"

typedef enum { LP_OBJ_LOGIT, LP_OBJ_LOGPROB, LP_OBJ_LOGIT_DIFF } lp_objective_kind;

typedef struct {
    lp_objective_kind kind;
    int pos;       /* the position whose prediction is differentiated */
    int target;    /* a token id */
    int contrast;  /* a token id (LP_OBJ_LOGIT_DIFF only) */
} lp_objective;

const char *lp_objective_name(lp_objective_kind kind);               /* "logit", "logprob", "logit_diff" */
int lp_objective_from_name(const char *name, lp_objective_kind *out); /* LP_EINVAL for other names */
/* LP_EINVAL (with a message) unless pos < T and the ids are in the model's vocabulary. */
int lp_objective_check(const lp_objective *o, const lp_model *m, int T);
/* The objective's value on one position's logits (V), in double. */
double lp_objective_value(const lp_objective *o, const float *logits, int vocab);

/* ---- the backward of one captured run ---- */

typedef struct lp_grad lp_grad;

/* Differentiates o through the activations r captured: one backward pass, no forward. The
 * gradients are for the whole run (positions after o->pos get zeros: the model is causal). */
int lp_grad_new(lp_grad **out, const lp_run *r, const lp_objective *o);
/* The same backward keeping only the embedding gradient (lp_grad_embed): one layer's
 * gradients at a time instead of every layer's (which, with the attention patterns', take as
 * much memory as the run). lp_grad_view then has resid_pre of layer 0 only. */
int lp_grad_embed_new(lp_grad **out, const lp_run *r, const lp_objective *o);
void lp_grad_free(lp_grad *g);

double lp_grad_objective(const lp_grad *g);   /* the objective's value on the run */
/* (T, d): the gradient with respect to the embeddings (resid_pre of layer 0); for encoders,
 * with respect to the summed embeddings before their LayerNorm (word + position + token
 * type: the same as with respect to the word embeddings), all T rows carrying gradient.
 * Encoders have lp_grad_embed_new and lp_grad_batch (whose inputs are then the summed
 * embeddings before the LayerNorm, run one at a time); lp_grad_new refuses them. A
 * classifier's objective is a label at position 0. */
const float *lp_grad_embed(const lp_grad *g);
/* The gradient with respect to captured activation `kind`, with lp_run_view's shapes and
 * arguments: each activation is taken as an input of what follows it (q and k after rotary
 * embedding; pattern as the weights of z = pattern @ v, given where a query may look, j <= i,
 * zero elsewhere; mlp_pre before the nonlinearity; resid_post[l] is resid_pre[l + 1]).
 * LP_EINVAL for the norms' scales, which are functions of the residual stream, not inputs. */
int lp_grad_view(const lp_grad *g, lp_act_kind kind, int layer, int head, lp_view *out);

/* ---- many inputs of one length at once ---- */

/* Writes input i of a batch, its embeddings (T, d), into x. */
typedef void (*lp_embed_fn)(float *x, int i, void *ctx);

/* For n inputs x_i = input(i), each T tokens long: f[i] = o at x_i (f may be NULL) and, when
 * grad_sum is not NULL, grad_sum (T, d) = sum_i weight[i] * df/dx (x_i) (weight NULL: all 1).
 * Inputs go through the model as a batch: chunks of as many sequences as fit a fixed memory
 * budget (a few hundred MB), whose rows take every linear layer as one matrix product, with
 * attention sequence by sequence. Without grad_sum it is a forward pass only and keeps
 * nothing per layer. LP_ECANCEL if cancelled, LP_ENOMEM. o->pos < T. */
int lp_grad_batch(const lp_model *m, int T, int n, lp_embed_fn input, void *ctx, const lp_objective *o,
                  const double *weight, double *f, float *grad_sum);

/* lp_grad_batch's forward alone (f) for inputs that share their first rows with one input,
 * base (T, d): input i equals base on its rows before first[i]. A causal model computes
 * those rows as base's at every layer, so they are base's, computed once a chunk, and only
 * each input's rows from first[i] on go through the layers (occlusion's inputs at T tokens:
 * about half the rows). An encoder's attention sees every row: then as lp_grad_batch. */
int lp_forward_batch_shared(const lp_model *m, int T, int n, lp_embed_fn input, void *ctx, const float *base,
                            const int *first, const lp_objective *o, double *f);

#endif
