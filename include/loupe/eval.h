/* Judging attributions: how faithful a score vector Phi is to the model, measured by what
 * happens to the model's prediction when the positions Phi ranks highest are removed.
 *
 * f is the objective judged, on the prediction at pos: the target's probability
 * (LP_OBJ_LOGPROB read as exp), or a logit difference (LP_OBJ_LOGIT_DIFF), or any other
 * objective as lp_objective_value defines it: a next token (decoders), a masked LM's
 * candidate at pos, a classifier's label (pos 0), a decoder token of an encoder-decoder.
 *
 * The positions judged are those attr scores (lp_attr_len's first T, lp_eval_len):
 *   decoders          the prefix 0..pos (later positions cannot affect pos);
 *   encoders          all T positions (attention looks both ways);
 *   encoder-decoders  the S source positions, then the decoder's inputs 0..pos: S + pos + 1.
 * Removable positions: those except
 *   - the frame: on decoders BOS, [CLS], [SEP], and an end-of-text token at position 0
 *     (GPT-2's <|endoftext|> used as BOS); on encoders and encoder-decoders every special
 *     token but <unk> ([CLS], [SEP], [MASK], [PAD], </s>, ...; the eos id of an
 *     encoder-decoder without a tokenizer), and the decoder's start at decoder position 0:
 *     they are the frame of the input, not its content;
 *   - pos itself, the position whose output f reads (a masked LM's mask, a classifier's
 *     position 0, the judged decoder position): removing it would change which prediction
 *     is judged, not what it rests on.
 * Their n positions are ranked by Phi, highest first (signed: a negative score speaks
 * against the target), ties by position; an encoder-decoder's source and decoder positions
 * are ranked together. top(j) = the first j of them.
 *
 * Removing a set of positions (lp_remove):
 *   delete    the tokens are taken out and the rest closes up (positions renumbered; an
 *             encoder keeps each token's type; an encoder-decoder's source and decoder input
 *             each shorten, and f is read where the judged row lands);
 *   mask      each token is replaced by a token id (the model's mask, pad or unk token);
 *   baseline  each token's embedding is replaced by a baseline: a token's embedding, or the
 *             zero vector (learned position and token-type embeddings stay, as in attr's
 *             baselines; T5 has none).
 *
 * The measures, for bins q_b = 100 b / B percent (b = 1..B) and k(q) = ceil(q n / 100):
 *   comprehensiveness(q) = f(x) - f(x without top(k(q)))           (ERASER, DeYoung et al. 2020)
 *   sufficiency(q)       = f(x) - f(x with only top(k(q)) kept)
 *   their AOPC           = the mean over the B bins (ERASER's 1/(B+1) also counts q = 0, where both are 0)
 *   deletion[j]  = f(x without top(j)), insertion[j] = f(x with only top(j)), j = 0..n
 *                  (Petsiuk et al. 2018); AUC = trapezoid area over j, divided by n
 *   log-odds drop at the top `logodds_pct`% (k = k(logodds_pct)): with a probability,
 *                  logit(p(x)) - logit(p(x without top(k))), logit(p) = log(p / (1 - p))
 *                  (Shrikumar et al. 2017; Chen et al. 2020); otherwise f(x) - f(x without top(k))
 *                  (a logit difference is already a log-odds ratio of the two tokens)
 *   leave-one-out agreement: Kendall's tau-b between Phi and loo_i = f(x) - f(x without i)
 *                  over the n removable positions (NAN when either side is constant)
 *
 * Every perturbed input of a decoder or an encoder goes through lp_forward_batch_shared (a
 * decoder's rows before an input's first change are the original's, computed once a chunk):
 * all of them at once with mask and baseline removal, grouped by length (and, on a masked LM,
 * where the mask lands) with delete. An encoder-decoder's go through a run of both stacks each
 * (lp_run_new_seq2seq_embedded): the batches have no cross-attention. */
#ifndef LOUPE_EVAL_H
#define LOUPE_EVAL_H

#include <stdbool.h>

#include "loupe/attr.h"
#include "loupe/grad.h"
#include "loupe/run.h"

typedef enum { LP_REMOVE_DELETE, LP_REMOVE_MASK, LP_REMOVE_BASELINE, LP_REMOVE_COUNT } lp_remove;

const char *lp_remove_name(lp_remove r);                    /* "delete", "mask", "baseline" */
int lp_remove_from_name(const char *name, lp_remove *out); /* LP_EINVAL listing the three */

typedef struct {
    lp_objective objective; /* f, read at objective.pos */
    bool prob;              /* f = exp(objective) (objective.kind LP_OBJ_LOGPROB): the target's probability */
    lp_remove remove;
    int token;              /* mask: the id put in; baseline: the id whose embedding stands in, -1 the zero vector */
    int bins;               /* B (0: 10), at most 100 */
    int logodds_pct;        /* the log-odds drop's k% (0: 20) */
} lp_eval_spec;

/* What is shared by every attribution judged on one run: the removable positions, f(x),
 * f with all of them removed, and the leave-one-out drops. */
typedef struct lp_eval lp_eval;

/* Checks the spec against r and computes f(x), f(empty) and the n leave-one-out drops in one
 * batch. LP_EINVAL when no position is removable (or, deleting on an encoder-decoder, when
 * no source token would stay), for an out-of-range token, bins or percentage. */
int lp_eval_new(lp_eval **out, const lp_run *r, const lp_eval_spec *spec);
void lp_eval_free(lp_eval *e);

int lp_eval_len(const lp_eval *e);               /* T, the positions judged (above) */
int lp_eval_n_source(const lp_eval *e);          /* S, the first of them that are an encoder-decoder's source; else 0 */
int lp_eval_n(const lp_eval *e);                 /* n, the removable positions */
const int *lp_eval_removable(const lp_eval *e);  /* (n) their positions among the T, ascending */
const double *lp_eval_loo(const lp_eval *e);     /* (n) f(x) - f(x without position removable[i]) */
double lp_eval_fx(const lp_eval *e);             /* f(x) */
double lp_eval_fempty(const lp_eval *e);         /* f with every removable position removed */
int lp_eval_bins(const lp_eval *e);              /* B */
int lp_eval_k(const lp_eval *e, double pct);     /* k(pct) = ceil(pct n / 100), 0..n */

/* One attribution's measures; arrays allocated by lp_eval_judge, freed by lp_eval_result_free. */
typedef struct {
    int n, bins;
    int *order;             /* (n) removable positions, highest Phi first */
    double *comp, *suff;    /* (bins) at q_b = 100 (b + 1) / bins */
    double comp_aopc, suff_aopc;
    double *deletion, *insertion; /* (n + 1) */
    double deletion_auc, insertion_auc;
    double logodds;         /* the log-odds drop at the top logodds_pct% */
    double tau;             /* Kendall's tau-b against leave-one-out, NAN when undefined */
    double infidelity, infidelity_raw; /* NAN: lp_eval_judge leaves them to lp_eval_infidelity */
    double sensitivity;     /* NAN: left to lp_eval_sensitivity */
} lp_eval_result;

/* Judges m score vectors at once: scores[i] (lp_attr_len floats as attr gives them; only the
 * first T are read) into res[i]. Every perturbed input of all m goes through the
 * model together. LP_ENOMEM, LP_ECANCEL. */
int lp_eval_judge(lp_eval *e, int m, const float *const *scores, lp_eval_result *res);
void lp_eval_result_free(lp_eval_result *r);

/* Infidelity (Yeh et al. 2019; Captum's `infidelity` with normalize=True) of m score vectors,
 * on position-level perturbations: sample s moves each removable position's token part toward
 * what removal puts there by a Gaussian fraction, x'_t = x_t - I_st (x_t - b_t) with
 * I_st ~ N(0, sigma^2) (b_t the baseline or mask row; the zero vector for delete), the same
 * `samples` draws (seeded) for every vector. With a_s = sum_t I_st Phi_t and
 * d_s = f(x) - f(x'_s): infid[i] = mean_s (beta a_s - d_s)^2, beta = sum a d / sum a^2 (0 when
 * every a_s is 0), which makes it blind to the scores' scale, as the methods' units differ;
 * raw[i] (may be NULL) the same with beta = 1. noise (samples, n) and drop (samples) may be
 * NULL: the I drawn and the d measured. One batch (lp_forward_batch_shared). */
int lp_eval_infidelity(const lp_eval *e, int m, const float *const *scores, int samples, double sigma,
                       unsigned long long seed, double *infid, double *raw, double *noise, double *drop);

/* Max-sensitivity (Yeh et al. 2019; Captum's `sensitivity_max` with its default perturbation):
 * for `samples` draws delta ~ U(-radius, radius) over every element of the inputs of the T
 * positions judged (T, d: a decoder's embeddings 0..pos, an encoder's sums before their norm,
 * an encoder-decoder's source and decoder token embeddings), seeded, the attribution specs[i]
 * recomputed on a run of x + delta (lp_run_new_embedded, lp_run_new_seq2seq_embedded; the
 * token parts, and ig's and occlusion's baseline paths, stay the tokens': delta moves the
 * point at which the attribution is taken); sens[i] = max over the draws of
 * ||Phi(x + delta) - Phi(x)||_2 / ||Phi(x)||_2 over the T (not divided when ||Phi(x)|| is 0,
 * as Captum). noise (samples, T, d) may be NULL: the deltas drawn. */
int lp_eval_sensitivity(const lp_eval *e, int m, const lp_attr_spec *specs, const float *const *scores, int samples,
                        double radius, unsigned long long seed, double *sens, float *noise);

/* Kendall's tau-b of (a_i, b_i), i < n: (C - D) / sqrt((P - Ta)(P - Tb)), P = n(n-1)/2, Ta and
 * Tb the pairs tied in a and in b; NAN when a or b is constant. */
double lp_kendall_tau(const double *a, const double *b, int n);

#endif
