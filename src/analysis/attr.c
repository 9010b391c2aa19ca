/* The six input-attribution methods over a captured run (definitions in attr.h). The
 * gradient methods differentiate through the run's own activations (one backward, no forward); integrated
 * gradients send all their inputs through lp_grad_batch at once, occlusion through
 * lp_forward_batch_shared (its inputs share the run's rows before the occluded ones). */
#include "loupe/attr.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/attr_impl.h"
#include "kernels/forward.h"
#include "loupe/error.h"

static const char *const METHOD_NAMES[LP_ATTR_COUNT] = {"saliency", "gxi", "ig", "occlusion", "rollout", "attnxnorm"};

const char *lp_attr_method_name(lp_attr_method m) { return (unsigned)m < LP_ATTR_COUNT ? METHOD_NAMES[m] : "?"; }

int lp_attr_method_from_name(const char *name, lp_attr_method *out) {
    for (int i = 0; i < LP_ATTR_COUNT; i++)
        if (strcmp(name, METHOD_NAMES[i]) == 0) {
            *out = (lp_attr_method)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown attribution method '%s'; use saliency, gxi, ig, occlusion, rollout or attnxnorm",
                    name);
}

bool lp_attr_has_objective(lp_attr_method m) { return m != LP_ATTR_ROLLOUT && m != LP_ATTR_ATTNXNORM; }
bool lp_attr_has_delta(lp_attr_method m) { return m == LP_ATTR_IG; }

void lp_gauss_legendre(double *alpha, double *weight, int n) {
    /* Newton's method on the roots of the Legendre polynomial P_n, from Tricomi's estimates. */
    for (int i = 0; i < (n + 1) / 2; i++) {
        double z = cos(M_PI * (i + 0.75) / (n + 0.5)), dp = 1.0;
        for (int it = 0; it < 100; it++) {
            double p1 = 1.0, p2 = 0.0;
            for (int j = 1; j <= n; j++) {
                double p3 = p2;
                p2 = p1;
                p1 = ((2.0 * j - 1.0) * z * p2 - (j - 1.0) * p3) / j;
            }
            dp = n * (z * p1 - p2) / (z * z - 1.0);
            double z1 = z;
            z = z1 - p1 / dp;
            if (fabs(z - z1) < 1e-15) break;
        }
        double w = 1.0 / ((1.0 - z * z) * dp * dp); /* 2 / (...) on [-1, 1], halved for [0, 1] */
        alpha[i] = 0.5 * (1.0 - z);
        alpha[n - 1 - i] = 0.5 * (1.0 + z);
        weight[i] = weight[n - 1 - i] = w;
    }
}

/* ---- gradient methods ---- */

static int by_gradient(float *scores, const lp_run *r, const lp_attr_spec *sp) {
    const lp_model *m = lp_run_model(r);
    int T = lp_run_len(r), d = m->cfg.d_model;
    const int *ids = lp_run_ids(r);
    lp_grad *g;
    int rc = lp_grad_embed_new(&g, r, &sp->objective);
    if (rc) return rc;
    const float *ge = lp_grad_embed(g);
    float es = lp_model_emb_scale(m); /* the input is the scaled embedding (Gemma 2) */
    for (int t = 0; t < T; t++) {
        const float *gt = ge + (size_t)t * d, *e = m->tok_emb + (size_t)ids[t] * d;
        double s = 0.0;
        for (int k = 0; k < d; k++) s += sp->method == LP_ATTR_SALIENCY ? (double)gt[k] * gt[k] : (double)gt[k] * (e[k] * es);
        scores[t] = (float)(sp->method == LP_ATTR_SALIENCY ? sqrt(s) : s);
    }
    lp_grad_free(g);
    return LP_OK;
}

/* The inputs of ig and occlusion: the run's embeddings x (T, d) and, per position, the
 * baseline's b = x - e_t + base, where only the token embedding e_t is replaced. */
typedef struct {
    int T, d;
    const float *x;       /* (T, d) */
    float *b;             /* (T, d) */
    const double *alpha;  /* ig: (steps) */
    int window;           /* occlusion */
} path;

static void ig_input(float *out, int i, void *ctx) {
    const path *p = ctx;
    float a = (float)p->alpha[i];
    for (size_t j = 0; j < (size_t)p->T * p->d; j++) out[j] = p->b[j] + a * (p->x[j] - p->b[j]);
}

static void occluded_input(float *out, int i, void *ctx) {
    const path *p = ctx;
    size_t d = p->d, from = (size_t)i * d, to = (size_t)(i + p->window) * d;
    memcpy(out, p->x, (size_t)p->T * d * sizeof *out);
    memcpy(out + from, p->b + from, (to - from) * sizeof *out);
}

/* The rows of the run that can affect the prediction at pos: 0..pos in a causal model, all of
 * an encoder's. */
static int rows_before(const lp_run *r, int pos) {
    return lp_model_config(lp_run_model(r))->causal ? pos + 1 : lp_run_len(r);
}

static void free_path(path *p) { free(p->b); }

static int make_path(path *p, const lp_run *r, int T, int baseline) {
    const lp_model *m = lp_run_model(r);
    int d = m->cfg.d_model;
    const int *ids = lp_run_ids(r);
    lp_view v;
    lp_run_view(r, LP_ACT_RESID_PRE, 0, -1, &v);
    *p = (path){.T = T, .d = d, .x = v.data, .b = malloc((size_t)T * d * sizeof(float))};
    if (!p->b) return lp_error(LP_ENOMEM, "out of memory");
    if (lp_run_embed_sum(r)) p->x = lp_run_embed_sum(r); /* an encoder's input: the sum before its LayerNorm */
    float es = lp_model_emb_scale(m);
    for (int t = 0; t < T; t++) {
        const float *e = m->tok_emb + (size_t)ids[t] * d, *base = baseline >= 0 ? m->tok_emb + (size_t)baseline * d : NULL;
        for (int k = 0; k < d; k++) {
            size_t j = (size_t)t * d + k;
            p->b[j] = p->x[j] - e[k] * es + (base ? base[k] * es : 0.0f);
        }
    }
    return LP_OK;
}

/* Integrated gradients, adaptively. The path integral is split into pieces [a0, a1], each
 * integrated by Gauss-Legendre; a piece's projection q = (x - b) . sum of its weighted
 * gradients should equal f(a1) - f(a0), and the difference is the piece's own completeness
 * gap. The first piece is [0, 1] with the spec's nodes (Captum's rule: when it meets the
 * tolerance nothing else is computed, and the scores are Captum's). Otherwise the piece with
 * the largest gap is cut where f changes most between its neighbouring nodes (f at every
 * node comes with its gradient), so the cuts close in on a narrow change — an RMSNorm
 * model's zero baseline changes f at alpha ~ sqrt(eps) — in a few rounds, until the gaps
 * add up to at most 1% of |f(x) - f(b)| or the budget of gradients is spent. */
typedef struct {
    double a0, a1, f0, f1, q; /* its ends, f there, and the projection of its integral */
    int m;                    /* nodes */
    double *alpha, *f;        /* (m) */
    float *g;                 /* (T, d): sum of weight x gradient over its nodes */
} ig_piece;

/* Pieces keep their gradient sums (T x d floats each) within IG_PIECES_BYTES. */
enum { IG_PIECE_NODES = 8, IG_DECADES = 20, IG_MAX_PIECES = 256 };
#define IG_PIECES_BYTES ((size_t)256 << 20)

static void ig_piece_free(ig_piece *pc) {
    free(pc->alpha);
    free(pc->f);
    free(pc->g);
}

/* With fb, f at the baseline too (*fb), as one more input of the batch (alpha 0, weight 0):
 * alone it was a forward of T rows, whose products run at a fraction of a batch's rate. */
static int ig_piece_eval(ig_piece *pc, path *p, const lp_model *m, const lp_objective *o, int n, const double *gl_a,
                         const double *gl_w, double *fb) {
    size_t Td = (size_t)p->T * p->d;
    int all = n + (fb != NULL);
    double *w = malloc((size_t)all * sizeof *w);
    pc->m = n;
    pc->alpha = malloc((size_t)all * sizeof *pc->alpha);
    pc->f = malloc((size_t)all * sizeof *pc->f);
    pc->g = malloc(Td * sizeof *pc->g);
    if (!w || !pc->alpha || !pc->f || !pc->g) {
        free(w);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    double h = pc->a1 - pc->a0;
    for (int i = 0; i < n; i++) {
        pc->alpha[i] = pc->a0 + h * gl_a[i];
        w[i] = h * gl_w[i];
    }
    if (fb) pc->alpha[n] = 0.0, w[n] = 0.0;
    p->alpha = pc->alpha;
    int rc = lp_grad_batch(m, p->T, all, ig_input, p, o, w, pc->f, pc->g);
    free(w);
    if (rc) return rc;
    if (fb) *fb = pc->f[n];
    double q = 0.0;
    for (size_t j = 0; j < Td; j++) q += ((double)p->x[j] - p->b[j]) * pc->g[j];
    pc->q = q;
    return LP_OK;
}

static double ig_piece_gap(const ig_piece *pc) { return pc->q - (pc->f1 - pc->f0); }

/* k where f changes most between neighbouring points of the piece: between node k - 1 (its
 * start when k = 0) and node k (its end when k = m). */
static int ig_steepest(const ig_piece *pc) {
    int k = 0;
    double big = -1.0;
    for (int i = 0; i <= pc->m; i++) {
        double fl = i ? pc->f[i - 1] : pc->f0, fr = i < pc->m ? pc->f[i] : pc->f1;
        if (fabs(fr - fl) > big) big = fabs(fr - fl), k = i;
    }
    return k;
}

static int integrated_gradients(float *scores, lp_attr_report *rep, const lp_run *r, const lp_attr_spec *sp) {
    const lp_model *m = lp_run_model(r);
    const lp_objective *o = &sp->objective;
    int T = rows_before(r, o->pos), d = m->cfg.d_model, n = sp->steps ? sp->steps : 32;
    int budget = sp->max_steps ? sp->max_steps : 16 * n, sub = n < IG_PIECE_NODES ? n : IG_PIECE_NODES;
    path p;
    int rc = make_path(&p, r, T, sp->baseline);
    if (rc) return rc;
    size_t fit = IG_PIECES_BYTES / ((size_t)T * d * sizeof(float));
    int cap = fit < 4 ? 4 : fit > IG_MAX_PIECES ? IG_MAX_PIECES : (int)fit, np = 0;
    ig_piece *pc = calloc((size_t)cap, sizeof *pc);
    double *gl_a = malloc((size_t)n * sizeof *gl_a), *gl_w = malloc((size_t)n * sizeof *gl_w);
    double *sa = malloc((size_t)sub * sizeof *sa), *sw = malloc((size_t)sub * sizeof *sw), fb;
    if (!pc || !gl_a || !gl_w || !sa || !sw) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    lp_gauss_legendre(gl_a, gl_w, n);
    lp_gauss_legendre(sa, sw, sub);
    double fx = lp_objective_value(o, lp_run_logits(r, o->pos), lp_run_out_width(r));
    pc[np++] = (ig_piece){.a0 = 0.0, .a1 = 1.0, .f1 = fx};
    if ((rc = ig_piece_eval(&pc[0], &p, m, o, n, gl_a, gl_w, &fb))) goto done;
    pc[0].f0 = fb;
    int used = n;
    /* float32's noise in f and in the projections: below it no gap can be told from zero */
    double tol = fmax((sp->tolerance > 0 ? sp->tolerance : 0.01) * fabs(fx - fb), 1e-5 * (1.0 + fabs(fx) + fabs(fb)));
    /* Past the first pass, the path by decades of alpha from 1e-10: a scale-invariant norm
     * makes f change at every scale of alpha near 0 (stories260K: from 0 at alpha = 0 to 4.5
     * at 1.4e-8 and -4.5 at 3.6e-6), which even pieces of alpha would take dozens of rounds
     * to reach. */
    if (fabs(ig_piece_gap(&pc[0])) > tol && ig_steepest(&pc[0]) == 0 && used + IG_DECADES * sub <= budget &&
        IG_DECADES + 2 <= cap) {
        double cut[IG_DECADES + 1], fc[IG_DECADES + 1];
        cut[0] = 0.0, fc[0] = fb, cut[IG_DECADES] = 1.0, fc[IG_DECADES] = fx;
        for (int k = 1; k < IG_DECADES; k++) cut[k] = pow(10.0, k - IG_DECADES);
        p.alpha = cut + 1; /* f at the cuts: one forward pass for all of them */
        if ((rc = lp_grad_batch(m, T, IG_DECADES - 1, ig_input, &p, o, NULL, fc + 1, NULL))) goto done;
        ig_piece_free(&pc[0]);
        for (np = 0; np < IG_DECADES; np++) {
            pc[np] = (ig_piece){.a0 = cut[np], .a1 = cut[np + 1], .f0 = fc[np], .f1 = fc[np + 1]};
            used += sub;
            if ((rc = ig_piece_eval(&pc[np], &p, m, o, sub, sa, sw, NULL))) {
                np++;
                goto done;
            }
        }
    }
    for (;;) {
        double err = 0.0, worst = -1.0;
        int wi = 0;
        for (int i = 0; i < np; i++) {
            double e = fabs(ig_piece_gap(&pc[i]));
            err += e;
            if (e > worst) worst = e, wi = i;
        }
        if (err <= tol || used + 3 * sub > budget || np + 2 > cap) break;
        /* Cut the worst piece around the largest step of f between its neighbouring points. */
        ig_piece old = pc[wi];
        int k = ig_steepest(&old);
        double cut[4] = {old.a0, k ? old.alpha[k - 1] : old.a0, k < old.m ? old.alpha[k] : old.a1, old.a1};
        double fc[4] = {old.f0, k ? old.f[k - 1] : old.f0, k < old.m ? old.f[k] : old.f1, old.f1};
        if (old.a1 - old.a0 < 1e-12) break;
        pc[wi] = pc[--np]; /* the old piece leaves; its parts join at the end */
        for (int j = 0; j < 3; j++) {
            if (cut[j + 1] <= cut[j]) continue;
            pc[np] = (ig_piece){.a0 = cut[j], .a1 = cut[j + 1], .f0 = fc[j], .f1 = fc[j + 1]};
            rc = ig_piece_eval(&pc[np], &p, m, o, sub, sa, sw, NULL);
            np++;
            used += sub;
            if (rc) break;
        }
        ig_piece_free(&old);
        if (rc) goto done;
    }
    /* The scores: the pieces' gradient sums in order of alpha, so the result does not depend on
     * the order the refinement found them in. */
    for (int i = 1; i < np; i++)
        for (int j = i; j > 0 && pc[j].a0 < pc[j - 1].a0; j--) {
            ig_piece t = pc[j];
            pc[j] = pc[j - 1];
            pc[j - 1] = t;
        }
    double sum = 0.0;
    for (int t = 0; t < T; t++) {
        double s = 0.0;
        for (int i = 0; i < np; i++)
            for (int k = 0; k < d; k++) {
                size_t j = (size_t)t * d + k;
                s += ((double)p.x[j] - p.b[j]) * pc[i].g[j];
            }
        scores[t] = (float)s;
        sum += s;
    }
    rep->delta = sum - (fx - fb);
    rep->f_input = fx;
    rep->f_baseline = fb;
    rep->steps = used;
    rep->converged = fabs(rep->delta) <= tol;
done:
    for (int i = 0; i < np; i++) ig_piece_free(&pc[i]);
    free(pc);
    free_path(&p);
    free(gl_a);
    free(gl_w);
    free(sa);
    free(sw);
    return rc;
}

static int occlusion(float *scores, const lp_run *r, const lp_attr_spec *sp) {
    const lp_model *m = lp_run_model(r);
    const lp_objective *o = &sp->objective;
    int T = rows_before(r, o->pos), W = sp->window ? sp->window : 1;
    if (W > T) W = T;
    int n = T - W + 1;
    path p;
    int rc = make_path(&p, r, T, sp->baseline);
    if (rc) return rc;
    p.window = W;
    double *f = malloc((size_t)n * sizeof *f);
    int *first = malloc((size_t)n * sizeof *first); /* input k differs from the run from row k on */
    if (!f || !first) {
        free(f);
        free(first);
        free_path(&p);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    for (int k = 0; k < n; k++) first[k] = k;
    if (!(rc = lp_forward_batch_shared(m, T, n, occluded_input, &p, p.x, first, o, f))) {
        double fx = lp_objective_value(o, lp_run_logits(r, o->pos), lp_run_out_width(r));
        for (int t = 0; t < T; t++) {
            /* Windows [s, s + W) that cover t: s from max(0, t - W + 1) to min(t, n - 1). */
            int s0 = t - W + 1 > 0 ? t - W + 1 : 0, s1 = t < n - 1 ? t : n - 1;
            double s = 0.0;
            for (int k = s0; k <= s1; k++) s += fx - f[k];
            scores[t] = (float)(s / (s1 - s0 + 1));
        }
    }
    free(f);
    free(first);
    free_path(&p);
    return rc;
}

/* ---- attention methods ---- */

/* Rollout and attention x norm read row pos of the patterns: its keys are 0..pos in a causal
 * model, every position in an encoder. */
int attr_rollout_row(double *row, const lp_run *r, int T) {
    const lp_config *c = lp_model_config(lp_run_model(r));
    double *next = malloc((size_t)T * sizeof *next), *A = malloc((size_t)T * T * sizeof *A);
    if (!next || !A) {
        free(next);
        free(A);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    /* row <- row A_l, last layer first: row A_{L-1} ... A_0. */
    for (int l = c->n_layer - 1; l >= 0; l--) {
        lp_view v;
        lp_run_view(r, LP_ACT_PATTERN, l, -1, &v);
        for (int i = 0; i < T; i++) {
            double sum = 0.0;
            int keys = c->causal ? i + 1 : T;
            for (int j = 0; j < keys; j++) {
                double a = 0.0;
                for (int h = 0; h < c->n_head; h++) a += v.data[h * v.stride[0] + i * v.stride[1] + j];
                a = 0.5 * a / c->n_head + (i == j ? 0.5 : 0.0);
                A[(size_t)i * T + j] = a;
                sum += a;
            }
            for (int j = 0; j < keys; j++) A[(size_t)i * T + j] /= sum;
        }
        for (int j = 0; j < T; j++) {
            double s = 0.0;
            for (int i = c->causal ? j : 0; i < T; i++) s += row[i] * A[(size_t)i * T + j];
            next[j] = s;
        }
        memcpy(row, next, (size_t)T * sizeof *row);
    }
    free(next);
    free(A);
    return LP_OK;
}

static int rollout(float *scores, const lp_run *r, int pos) {
    const lp_config *c = lp_model_config(lp_run_model(r));
    int T = c->causal ? pos + 1 : lp_run_len(r);
    double *row = calloc((size_t)T, sizeof *row);
    if (!row) return lp_error(LP_ENOMEM, "out of memory");
    row[pos] = 1.0;
    int rc = attr_rollout_row(row, r, T);
    for (int j = 0; !rc && j < T; j++) scores[j] = (float)row[j];
    free(row);
    return rc;
}

int attr_attn_norms(float *scores, const lp_config *c, const float *P, long p_hs, long p_ld, const float *v,
                    int kv_heads, const lp_linear *out, int pos, int keys) {
    int H = c->n_head, G = H / kv_heads, dh = c->d_head, d = c->d_model;
    long v_ld = (long)kv_heads * dh;
    float *y = calloc((size_t)keys * H * dh, sizeof *y), *s = malloc((size_t)keys * d * sizeof *s);
    if (!y || !s) {
        free(y);
        free(s);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    /* y[j] = [A_h[pos, j] v_j of head h's kv head]_h, then s = y W_O: sum_h A_h[pos, j] v_j W_O^h. */
    for (int j = 0; j < keys; j++)
        for (int h = 0; h < H; h++) {
            float a = P[h * p_hs + pos * p_ld + j];
            const float *vj = v + j * v_ld + (h / G) * dh;
            for (int e = 0; e < dh; e++) y[((size_t)j * H + h) * dh + e] = a * vj[e];
        }
    lp_linear o = *out;
    o.b = NULL; /* the output bias is not any one key's */
    lp_linear_forward(s, y, &o, keys);
    for (int j = 0; j < keys; j++) {
        double n2 = 0.0;
        for (int k = 0; k < d; k++) n2 += (double)s[(size_t)j * d + k] * s[(size_t)j * d + k];
        scores[j] = (float)sqrt(n2);
    }
    free(y);
    free(s);
    return LP_OK;
}

static int attn_x_norm(float *scores, const lp_run *r, int pos, int layer) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    lp_view pat, val;
    lp_run_view(r, LP_ACT_PATTERN, layer, -1, &pat);
    lp_run_view(r, LP_ACT_V, layer, -1, &val);
    return attr_attn_norms(scores, c, pat.data, pat.stride[0], pat.stride[1], val.data, c->n_kv_head,
                           &m->layers[layer].o, pos, c->causal ? pos + 1 : lp_run_len(r));
}

int lp_attr_len(const lp_run *r) {
    const lp_run *src = lp_run_source(r);
    return lp_run_len(r) + (src ? lp_run_len(src) : 0);
}

int lp_attr(float *scores, double *delta, const lp_run *r, const lp_attr_spec *sp) {
    lp_attr_report rep;
    int rc = lp_attr_full(scores, &rep, r, sp);
    *delta = rep.delta;
    return rc;
}

int lp_attr_full(float *scores, lp_attr_report *rep, const lp_run *r, const lp_attr_spec *sp) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int T = lp_run_len(r), pos = sp->objective.pos, rc;
    *rep = (lp_attr_report){.delta = NAN, .f_input = NAN, .f_baseline = NAN};
    if ((unsigned)sp->method >= LP_ATTR_COUNT) return lp_error(LP_EINVAL, "unknown attribution method %d", (int)sp->method);
    if (pos < 0 || pos >= T)
        return lp_error(LP_EINVAL, "position %d is out of range: the run has positions 0..%d", pos, T - 1);
    if (lp_attr_has_objective(sp->method) && (rc = lp_objective_check(&sp->objective, m, T))) return rc;
    if (sp->baseline < -1 || sp->baseline >= c->vocab)
        return lp_error(LP_EINVAL, "baseline token id %d is outside the vocabulary (0..%d)", sp->baseline, c->vocab - 1);
    if (sp->steps < 0 || sp->steps > 4096) return lp_error(LP_EINVAL, "steps %d is out of range (1..4096)", sp->steps);
    int steps = sp->steps ? sp->steps : 32;
    if (!(sp->tolerance >= 0 && sp->tolerance < 1))
        return lp_error(LP_EINVAL, "ig tolerance %g is out of range ([0, 1): a share of |f(x) - f(baseline)|)", sp->tolerance);
    if (sp->max_steps && (sp->max_steps < steps || sp->max_steps > 65536))
        return lp_error(LP_EINVAL, "max_steps %d is out of range (%d..65536: at least steps)", sp->max_steps, steps);
    const lp_run *src = lp_run_source(r);
    int span = src && lp_run_len(src) > T ? lp_run_len(src) : T; /* occlusion's windows stay within one side */
    if (sp->window < 0 || sp->window > span)
        return lp_error(LP_EINVAL, "window %d is out of range (1..%d)", sp->window, span);
    int layer = sp->layer < 0 ? c->n_layer - 1 : sp->layer;
    if (layer >= c->n_layer)
        return lp_error(LP_EINVAL, "layer %d is out of range: the model has layers 0..%d", sp->layer, c->n_layer - 1);
    for (int t = 0; t < lp_attr_len(r); t++) scores[t] = 0.0f;
    if (src) return attr_seq2seq(scores, &rep->delta, r, sp, layer);
    switch (sp->method) {
    case LP_ATTR_SALIENCY:
    case LP_ATTR_GXI: return by_gradient(scores, r, sp);
    case LP_ATTR_IG: return integrated_gradients(scores, rep, r, sp);
    case LP_ATTR_OCCLUSION: return occlusion(scores, r, sp);
    case LP_ATTR_ROLLOUT: return rollout(scores, r, pos);
    case LP_ATTR_ATTNXNORM: return attn_x_norm(scores, r, pos, layer);
    default: break;
    }
    return lp_error(LP_EINVAL, "unknown attribution method %d", (int)sp->method);
}

int lp_attr_steps(float *scores, lp_attr_step *steps, const lp_run *r, int from, const lp_attr_spec *spec) {
    int T = lp_run_len(r), N = lp_attr_len(r), V = lp_run_out_width(r);
    const int *ids = lp_run_ids(r);
    if (from < 1 || from >= T)
        return lp_error(LP_EINVAL, "from %d is out of range: the tokens explained start at 1..%d", from, T - 1);
    for (int i = 0; i < T - from; i++) {
        lp_attr_spec sp = *spec;
        lp_attr_step *st = &steps[i];
        sp.objective.pos = from + i - 1;
        sp.objective.target = ids[from + i];
        int rc = lp_attr_full(scores + (size_t)i * N, &st->report, r, &sp);
        if (rc) return rc;
        /* the step's own scores: its token's probability and the distribution's entropy */
        const float *lg = lp_run_logits(r, sp.objective.pos);
        double mx = lg[0], z = 0.0, ez = 0.0;
        for (int j = 1; j < V; j++) mx = fmax(mx, lg[j]);
        for (int j = 0; j < V; j++) {
            double e = exp(lg[j] - mx);
            z += e;
            ez += e * (lg[j] - mx);
        }
        st->pos = sp.objective.pos;
        st->target = sp.objective.target;
        st->prob = exp(lg[st->target] - mx) / z;
        st->entropy = log(z) - ez / z;
        st->contrast_diff = sp.objective.contrast >= 0 ? st->prob - exp(lg[sp.objective.contrast] - mx) / z : NAN;
    }
    return LP_OK;
}
