/* The model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency
 * Maps", cascading randomisation): the layers' weights are replaced by random ones from the
 * top layer down, one more layer at each depth, on a copy of the model in memory (the user's
 * file is never written: the copy's randomised tensors are its own buffers, the others still
 * point into the mapped file), and the attribution is computed again on the same tokens.
 * An attribution that explains the model must change as the model is destroyed; one that
 * keeps its ranking (Spearman's rho of |scores| near 1 with every layer random) explains
 * something else: the input alone, or nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arch/model_impl.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/sanity.h"

/* A random matrix of w's shape with its mean and standard deviation (the same scale, none of
 * its structure), stored densely: ld = its row length. */
static int randomise_linear(lp_linear *w, lp_rng *rng, float **own) {
    if (!w->w) return LP_OK;
    size_t rows = w->trans ? (size_t)w->out : (size_t)w->in, cols = w->trans ? (size_t)w->in : (size_t)w->out;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double x = w->w[i * (size_t)w->ld + j];
            s += x, s2 += x * x;
        }
    double n = (double)rows * cols, mean = s / n, sd = sqrt(fmax(s2 / n - mean * mean, 0));
    float *m = malloc(rows * cols * sizeof *m);
    if (!m) return lp_error(LP_ENOMEM, "out of memory");
    for (size_t i = 0; i < rows * cols; i += 2) { /* Box-Muller, two normals a draw */
        double u1 = lp_rng_uniform(rng), u2 = lp_rng_uniform(rng), r = sqrt(-2.0 * log(1.0 - u1));
        m[i] = (float)(mean + sd * r * cos(2 * M_PI * u2));
        if (i + 1 < rows * cols) m[i + 1] = (float)(mean + sd * r * sin(2 * M_PI * u2));
    }
    *w = lp_linear_of(m, w->b, w->in, w->out, (int)cols, w->trans); /* without the original's (out, in) copy */
    *own = m;
    return LP_OK;
}

struct lp_randomised {
    lp_model m;        /* a shallow copy: what is not randomised still points into the original */
    lp_layer *layers;  /* its own copy of the layer table */
    float **own;       /* the random tensors */
    int n_own;
};

int lp_randomised_new(lp_randomised **out, const lp_model *orig, int depth, uint64_t seed) {
    const lp_config *c = &orig->cfg;
    *out = NULL;
    if (depth < 0 || depth > c->n_layer)
        return lp_error(LP_EINVAL, "randomisation depth %d is out of range (0..%d layers)", depth, c->n_layer);
    if (orig->encoder) return lp_error(LP_EUNSUPPORTED, "the randomisation check is for one-stack models");
    lp_randomised *r = calloc(1, sizeof *r);
    enum { PER_LAYER = 8 };
    if (!r || !(r->layers = malloc((size_t)c->n_layer * sizeof *r->layers)) ||
        !(r->own = calloc((size_t)depth * PER_LAYER + 1, sizeof *r->own))) {
        lp_randomised_free(r);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    r->m = *orig;
    memcpy(r->layers, orig->layers, (size_t)c->n_layer * sizeof *r->layers);
    r->m.layers = r->layers;
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    /* the top `depth` layers, top first, so that depth d + 1's draws extend depth d's */
    for (int l = c->n_layer - 1; l >= c->n_layer - depth; l--) {
        lp_layer *L = &r->layers[l];
        lp_linear *w[PER_LAYER] = {&L->q, &L->k, &L->v, &L->o, &L->up, &L->gate, &L->down, NULL};
        for (int k = 0; w[k]; k++) {
            int rc = randomise_linear(w[k], &rng, &r->own[r->n_own]);
            if (r->own[r->n_own]) r->n_own++;
            if (rc) {
                lp_randomised_free(r);
                return rc;
            }
        }
    }
    *out = r;
    return LP_OK;
}

const lp_model *lp_randomised_model(const lp_randomised *r) { return &r->m; }

void lp_randomised_free(lp_randomised *r) {
    if (!r) return;
    for (int i = 0; i < r->n_own; i++) free(r->own[i]);
    free(r->own);
    free(r->layers);
    free(r);
}

/* Ranks with ties averaged (1-based), for Spearman's rho. */
static void ranks(const double *x, int n, double *rk, int *idx) {
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort by value: n is a prompt's length */
        for (int j = i; j > 0 && x[idx[j]] < x[idx[j - 1]]; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && x[idx[j + 1]] == x[idx[i]]) j++;
        for (int k = i; k <= j; k++) rk[idx[k]] = (i + j) / 2.0 + 1;
        i = j + 1;
    }
}

double lp_spearman(const double *a, const double *b, int n) {
    double *ra = malloc((size_t)n * sizeof *ra), *rb = malloc((size_t)n * sizeof *rb);
    int *idx = malloc((size_t)n * sizeof *idx);
    double rho = NAN;
    if (ra && rb && idx && n >= 2) {
        ranks(a, n, ra, idx);
        ranks(b, n, rb, idx);
        double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
        for (int i = 0; i < n; i++) ma += ra[i], mb += rb[i];
        ma /= n, mb /= n;
        for (int i = 0; i < n; i++) {
            sab += (ra[i] - ma) * (rb[i] - mb);
            saa += (ra[i] - ma) * (ra[i] - ma);
            sbb += (rb[i] - mb) * (rb[i] - mb);
        }
        if (saa > 0 && sbb > 0) rho = sab / sqrt(saa * sbb);
    }
    free(ra), free(rb), free(idx);
    return rho;
}

int lp_sanity_cascade(const lp_run *r, int n, lp_sanity_fn attribute, void *ctx, uint64_t seed, double *rho) {
    const lp_model *m = lp_run_model(r);
    int L = m->cfg.n_layer, T = lp_run_len(r);
    if (n < 2 || n > T) return lp_error(LP_EINVAL, "the sanity check compares %d positions: give 2..%d", n, T);
    float *base = malloc((size_t)T * sizeof *base), *now = malloc((size_t)T * sizeof *now);
    double *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    int rc = !base || !now || !a || !b ? lp_error(LP_ENOMEM, "out of memory") : attribute(base, r, ctx);
    for (int i = 0; !rc && i < n; i++) a[i] = fabs(base[i]);
    for (int depth = 1; !rc && depth <= L; depth++) {
        lp_randomised *rm = NULL;
        lp_run *rr = NULL;
        if (!(rc = lp_randomised_new(&rm, m, depth, seed)) &&
            !(rc = lp_run_new_typed(&rr, lp_randomised_model(rm), lp_run_ids(r), lp_run_types(r), T)) && !(rc = attribute(now, rr, ctx))) {
            for (int i = 0; i < n; i++) b[i] = fabs(now[i]);
            rho[depth - 1] = lp_spearman(a, b, n);
        }
        lp_run_free(rr);
        lp_randomised_free(rm);
    }
    free(base), free(now), free(a), free(b);
    return rc;
}
