/* What test_eval.c and test_eval_seq2seq.c check of one judgement against explicit runs:
 * every curve point, bin, AOPC, AUC, the log-odds drop and Kendall's tau, given a function
 * that runs the model on the input with some positions removed. Header-only; the including
 * suite defines TOL (the bound on |got - want| / (1 + |f(x)| + |want|)). */
#ifndef LOUPE_TEST_EVAL_CHECK_H
#define LOUPE_TEST_EVAL_CHECK_H

#include <math.h>
#include <string.h>

#include "loupe/eval.h"

static double worst;  /* the largest difference seen, for the tolerance's comment */
static double fscale; /* |f(x)| of the input being judged: differences of f carry its rounding */

static void near(double got, double want, const char *what, int j) {
    double diff = fabs(got - want) / (1.0 + fscale + fabs(want));
    if (diff > worst) worst = diff;
    if (!(diff <= TOL)) fail_msg("%s[%d] = %.9g, an explicit run gives %.9g", what, j, got, want);
}

/* keep over the positions judged: all but order[0..j) (only = false), or only order[0..j)
 * of the removable. */
static void keep_of(unsigned char *keep, const lp_eval *e, const int *order, int j, bool only) {
    memset(keep, 1, (size_t)lp_eval_len(e));
    for (int i = 0; only && i < lp_eval_n(e); i++) keep[lp_eval_removable(e)[i]] = 0;
    for (int i = 0; i < j; i++) keep[order[i]] = only;
}

/* f of the judged input with the positions where keep is 0 removed, by an explicit run. */
typedef double (*explicit_fn)(const unsigned char *keep, void *ctx);

/* R, the judgement of scores, against explicit runs: the order, both curves point by point,
 * the bins, both AOPCs and AUCs, the log-odds drop at 20% (prob: f is a probability) and tau
 * against the leave-one-out drops. fx is f(x) from an explicit run. */
static void check_judgement(const lp_eval *e, const lp_eval_result *R, const float *scores, double fx, bool prob,
                            explicit_fn f, void *ctx) {
    int n = lp_eval_n(e), B = lp_eval_bins(e);
    unsigned char keep[256];
    assert_int_equal(R->n, n);
    for (int j = 1; j < n; j++) /* ranked by score, highest first */
        assert_true(scores[R->order[j - 1]] >= scores[R->order[j]]);
    double del[257], ins[257];
    for (int j = 0; j <= n; j++) {
        keep_of(keep, e, R->order, j, false);
        near(R->deletion[j], del[j] = f(keep, ctx), "deletion", j);
        keep_of(keep, e, R->order, j, true);
        near(R->insertion[j], ins[j] = f(keep, ctx), "insertion", j);
    }
    /* AOPC: the mean over the bins of f(x) - f(perturbed), k = ceil(n b / B). */
    double comp = 0.0, suff = 0.0, da = 0.0, ia = 0.0;
    for (int b = 1; b <= B; b++) {
        int k = (n * b + B - 1) / B;
        near(R->comp[b - 1], fx - del[k], "comprehensiveness", b);
        near(R->suff[b - 1], fx - ins[k], "sufficiency", b);
        comp += (fx - del[k]) / B;
        suff += (fx - ins[k]) / B;
    }
    near(R->comp_aopc, comp, "comprehensiveness AOPC", 0);
    near(R->suff_aopc, suff, "sufficiency AOPC", 0);
    for (int j = 0; j < n; j++) {
        da += (del[j] + del[j + 1]) / 2;
        ia += (ins[j] + ins[j + 1]) / 2;
    }
    near(R->deletion_auc, da / n, "deletion AUC", 0);
    near(R->insertion_auc, ia / n, "insertion AUC", 0);
    int k20 = (n * 20 + 99) / 100;
    double lo = prob ? log(fx / (1 - fx)) - log(del[k20] / (1 - del[k20])) : fx - del[k20];
    if (!(fabs(R->logodds - lo) <= 1e-3)) fail_msg("log-odds drop %.9g, the formula gives %.9g", R->logodds, lo);
    double phi[256];
    for (int t = 0; t < n; t++) phi[t] = scores[lp_eval_removable(e)[t]];
    double tau = lp_kendall_tau(phi, lp_eval_loo(e), n);
    assert_true(isnan(tau) ? isnan(R->tau) : R->tau == tau);
}

#endif
