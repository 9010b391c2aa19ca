/* The six attribution methods on an encoder-decoder run (definitions in attr.h): a decoder
 * token explained by the source (scores 0..S-1) and the target prefix (S..S+T-1) at once.
 * The gradient methods differentiate both stacks in one backward (grad_seq2seq.h); integrated
 * gradients and occlusion rerun the model on changed embeddings, the decoder only up to pos
 * (it is causal, so the rows after pos change nothing). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/attr_impl.h"
#include "kernels/forward.h"
#include "loupe/error.h"
#include "loupe/grad_seq2seq.h"

/* The two inputs: x the embeddings the runs were given (rows, d), e the tokens' embeddings,
 * b the baseline's, x - e + the token `baseline`'s embedding (or 0). On a run of the ids x is
 * e and b the baseline's embedding exactly; on a run of perturbed embeddings (max-sensitivity)
 * b moves with x, as a decoder's baseline keeps its position part. */
typedef struct {
    int S, Tp, d;            /* source rows, decoder rows 0..pos */
    const int *src, *ids;    /* (S), (Tp) */
    const float *xs, *xt;    /* (S, d), (Tp, d): resid_pre of layer 0 of each stack's run */
    float *es, *et, *bs, *bt; /* (S, d), (Tp, d), (S, d), (Tp, d) */
} inputs;

static void inputs_free(inputs *in) {
    free(in->es), free(in->et), free(in->bs), free(in->bt);
}

static int inputs_new(inputs *in, const lp_run *r, int pos, int baseline) {
    const lp_model *m = lp_run_model(r), *e = lp_model_encoder(m);
    const lp_run *src = lp_run_source(r);
    int S = lp_run_len(src), Tp = pos + 1, d = m->cfg.d_model;
    lp_view vs, vt;
    lp_run_view(src, LP_ACT_RESID_PRE, 0, -1, &vs);
    lp_run_view(r, LP_ACT_RESID_PRE, 0, -1, &vt);
    *in = (inputs){S, Tp, d, lp_run_ids(src), lp_run_ids(r), vs.data, vt.data, malloc((size_t)S * d * sizeof(float)),
                   malloc((size_t)Tp * d * sizeof(float)), malloc((size_t)S * d * sizeof(float)),
                   malloc((size_t)Tp * d * sizeof(float))};
    if (!in->es || !in->et || !in->bs || !in->bt) {
        inputs_free(in);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    lp_embed(in->es, e, in->src, NULL, 0, S);
    lp_embed(in->et, m, in->ids, NULL, 0, Tp);
    for (int i = 0; i < S + Tp; i++) {
        bool s = i < S;
        size_t o = (size_t)(s ? i : i - S) * d;
        float *b = (s ? in->bs : in->bt) + o;
        const float *x = (s ? in->xs : in->xt) + o, *tok = (s ? in->es : in->et) + o;
        for (int k = 0; k < d; k++) b[k] = x[k] - tok[k] + (baseline >= 0 ? m->tok_emb[(size_t)baseline * d + k] : 0.0f);
    }
    return LP_OK;
}

/* The objective on the model run with embeddings xs (S, d) and xt (Tp, d). */
static int value_at(double *f, const lp_run *r, const inputs *in, const float *xs, const float *xt,
                    const lp_objective *o) {
    lp_run *v;
    const lp_model *m = lp_run_model(r);
    int rc = lp_run_new_seq2seq_embedded(&v, m, in->src, xs, in->S, in->ids, xt, in->Tp);
    if (rc) return rc;
    *f = lp_objective_value(o, lp_run_logits(v, o->pos), m->cfg.vocab);
    lp_run_free(v);
    return LP_OK;
}

/* score_i = g_i . e_i (gxi) or ||g_i|| (saliency) for rows (n, d). */
static void row_scores(float *scores, const float *g, const float *e, int n, int d, bool norm) {
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int k = 0; k < d; k++) {
            double gk = g[(size_t)i * d + k];
            s += norm ? gk * gk : gk * e[(size_t)i * d + k];
        }
        scores[i] = (float)(norm ? sqrt(s) : s);
    }
}

static int by_gradient(float *scores, const lp_run *r, const lp_attr_spec *sp) {
    inputs in;
    int rc = inputs_new(&in, r, sp->objective.pos, -1);
    if (rc) return rc;
    int S = in.S, T = lp_run_len(r), d = in.d;
    float *gs = malloc((size_t)S * d * sizeof *gs), *gt = malloc((size_t)T * d * sizeof *gt);
    if (!gs || !gt) rc = lp_error(LP_ENOMEM, "out of memory");
    else if (!(rc = lp_grad_seq2seq(gs, gt, NULL, r, &sp->objective))) {
        bool norm = sp->method == LP_ATTR_SALIENCY;
        row_scores(scores, gs, in.es, S, d, norm);
        row_scores(scores + S, gt, in.et, in.Tp, d, norm);
    }
    free(gs), free(gt);
    inputs_free(&in);
    return rc;
}

/* x(a) = b + a (x - b) on both inputs at once, so that completeness holds over both. */
static int integrated_gradients(float *scores, double *delta, const lp_run *r, const lp_attr_spec *sp) {
    const lp_objective *o = &sp->objective;
    const lp_model *m = lp_run_model(r);
    inputs in;
    int rc = inputs_new(&in, r, o->pos, sp->baseline), n = sp->steps ? sp->steps : 32;
    if (rc) return rc;
    int S = in.S, Tp = in.Tp, d = in.d;
    size_t ns = (size_t)S * d, nt = (size_t)Tp * d;
    double *alpha = malloc((size_t)n * sizeof *alpha), *w = malloc((size_t)n * sizeof *w);
    double *acc = calloc(ns + nt, sizeof *acc);
    float *x = malloc((ns + nt) * sizeof *x), *g = malloc((ns + nt) * sizeof *g);
    if (!alpha || !w || !acc || !x || !g) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    lp_gauss_legendre(alpha, w, n);
    for (int k = 0; k < n; k++) {
        for (size_t j = 0; j < ns + nt; j++) {
            float xj = j < ns ? in.xs[j] : in.xt[j - ns], bj = j < ns ? in.bs[j] : in.bt[j - ns];
            x[j] = bj + (float)alpha[k] * (xj - bj);
        }
        lp_run *v;
        if ((rc = lp_run_new_seq2seq_embedded(&v, m, in.src, x, S, in.ids, x + ns, Tp))) goto done;
        rc = lp_grad_seq2seq(g, g + ns, NULL, v, o);
        lp_run_free(v);
        if (rc) goto done;
        for (size_t j = 0; j < ns + nt; j++) acc[j] += w[k] * g[j];
    }
    double fb, sum = 0.0;
    if ((rc = value_at(&fb, r, &in, in.bs, in.bt, o))) goto done;
    for (int i = 0; i < S + Tp; i++) {
        double s = 0.0;
        for (int k = 0; k < d; k++) {
            size_t j = (size_t)i * d + k;
            float xj = j < ns ? in.xs[j] : in.xt[j - ns], bj = j < ns ? in.bs[j] : in.bt[j - ns];
            s += ((double)xj - bj) * acc[j];
        }
        scores[i] = (float)s;
        sum += s;
    }
    *delta = sum - (lp_objective_value(o, lp_run_logits(r, o->pos), m->cfg.vocab) - fb);
done:
    free(alpha), free(w), free(acc), free(x), free(g);
    inputs_free(&in);
    return rc;
}

/* Windows of W rows slide within the source and within the target prefix, never across. */
static int occlusion(float *scores, const lp_run *r, const lp_attr_spec *sp) {
    const lp_objective *o = &sp->objective;
    inputs in;
    int rc = inputs_new(&in, r, o->pos, sp->baseline);
    if (rc) return rc;
    int d = in.d, W = sp->window ? sp->window : 1;
    double fx = lp_objective_value(o, lp_run_logits(r, o->pos), lp_model_config(lp_run_model(r))->vocab);
    for (int side = 0; side < 2 && !rc; side++) {
        int n = side ? in.Tp : in.S, w = W < n ? W : n, windows = n - w + 1;
        const float *x = side ? in.xt : in.xs, *b = side ? in.bt : in.bs;
        float *out = side ? scores + in.S : scores;
        float *y = malloc((size_t)n * d * sizeof *y);
        double *f = malloc((size_t)windows * sizeof *f);
        if (!y || !f) rc = lp_error(LP_ENOMEM, "out of memory");
        for (int s = 0; !rc && s < windows; s++) {
            memcpy(y, x, (size_t)n * d * sizeof *y);
            memcpy(y + (size_t)s * d, b + (size_t)s * d, (size_t)w * d * sizeof *y);
            rc = value_at(&f[s], r, &in, side ? in.xs : y, side ? y : in.xt, o);
        }
        for (int t = 0; !rc && t < n; t++) { /* windows [s, s + w) covering t */
            int s0 = t - w + 1 > 0 ? t - w + 1 : 0, s1 = t < windows - 1 ? t : windows - 1;
            double s = 0.0;
            for (int k = s0; k <= s1; k++) s += fx - f[k];
            out[t] = (float)(s / (s1 - s0 + 1));
        }
        free(y);
        free(f);
    }
    inputs_free(&in);
    return rc;
}

/* The mean over heads of row i of a pattern view (H, rows, keys): a (keys). */
static void head_mean(double *a, const lp_view *v, int i, int keys, int H) {
    for (int j = 0; j < keys; j++) {
        double s = 0.0;
        for (int h = 0; h < H; h++) s += v->data[h * v->stride[0] + i * v->stride[1] + j];
        a[j] = s / H;
    }
}

/* Rollout over the joint set of S source and Tp target tokens (ALTI+'s rollout with
 * attention weights): M (Tp, S + Tp) says what each decoder row is made of, the first S
 * columns counting encoder output rows until the encoder's rollout maps them to source
 * tokens. Each decoder layer: self-attention M <- (0.5 A + 0.5 I) M, cross-attention
 * M <- 0.5 M + 0.5 [X | 0]; the MLP keeps it. Every row keeps summing to 1. */
static int rollout(float *scores, const lp_run *r, int pos) {
    const lp_config *c = lp_model_config(lp_run_model(r));
    const lp_run *src = lp_run_source(r);
    int S = lp_run_len(src), Tp = pos + 1, C = S + Tp, H = c->n_head;
    double *M = calloc((size_t)Tp * C, sizeof *M), *N = malloc((size_t)Tp * C * sizeof *N);
    double *a = malloc((size_t)(S > Tp ? S : Tp) * sizeof *a);
    if (!M || !N || !a) {
        free(M), free(N), free(a);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    for (int i = 0; i < Tp; i++) M[(size_t)i * C + S + i] = 1.0;
    for (int l = 0; l < c->n_layer; l++) {
        lp_view self, cross;
        lp_run_view(r, LP_ACT_PATTERN, l, -1, &self);
        lp_run_view(r, LP_ACT_CROSS_PATTERN, l, -1, &cross);
        for (int i = 0; i < Tp; i++) {
            double *ni = N + (size_t)i * C, sum = 0.0;
            head_mean(a, &self, i, i + 1, H);
            for (int j = 0; j <= i; j++) sum += (a[j] = 0.5 * a[j] + (i == j ? 0.5 : 0.0));
            memset(ni, 0, (size_t)C * sizeof *ni);
            for (int j = 0; j <= i; j++)
                for (int k = 0; k < C; k++) ni[k] += a[j] / sum * M[(size_t)j * C + k];
            head_mean(a, &cross, i, S, H);
            sum = 0.0;
            for (int j = 0; j < S; j++) sum += a[j];
            for (int k = 0; k < C; k++) ni[k] *= 0.5;
            for (int j = 0; j < S; j++) ni[j] += 0.5 * a[j] / sum;
        }
        memcpy(M, N, (size_t)Tp * C * sizeof *M);
    }
    /* row pos: its encoder-output share through the encoder's rollout to source tokens */
    double *row = M + (size_t)pos * C;
    int rc = attr_rollout_row(row, src, S);
    for (int k = 0; !rc && k < C; k++) scores[k] = (float)row[k];
    free(M), free(N), free(a);
    return rc;
}

/* Decoder layer `layer`: cross-attention's norms over the source, self-attention's over the
 * target prefix. */
static int attn_x_norm(float *scores, const lp_run *r, int pos, int layer) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int S = lp_run_len(lp_run_source(r));
    lp_view pat, val, xpat;
    const float *sx, *xq, *xk, *xv;
    lp_run_view(r, LP_ACT_PATTERN, layer, -1, &pat);
    lp_run_view(r, LP_ACT_V, layer, -1, &val);
    lp_run_view(r, LP_ACT_CROSS_PATTERN, layer, -1, &xpat);
    lp_run_cross_tape(r, layer, &sx, &xq, &xk, &xv);
    int rc = attr_attn_norms(scores, c, xpat.data, xpat.stride[0], xpat.stride[1], xv, c->n_head,
                             &m->layers[layer].xo, pos, S);
    if (rc) return rc;
    return attr_attn_norms(scores + S, c, pat.data, pat.stride[0], pat.stride[1], val.data, c->n_kv_head,
                           &m->layers[layer].o, pos, pos + 1);
}

int attr_seq2seq(float *scores, double *delta, const lp_run *r, const lp_attr_spec *sp, int layer) {
    switch (sp->method) {
    case LP_ATTR_SALIENCY:
    case LP_ATTR_GXI: return by_gradient(scores, r, sp);
    case LP_ATTR_IG: return integrated_gradients(scores, delta, r, sp);
    case LP_ATTR_OCCLUSION: return occlusion(scores, r, sp);
    case LP_ATTR_ROLLOUT: return rollout(scores, r, sp->objective.pos);
    case LP_ATTR_ATTNXNORM: return attn_x_norm(scores, r, sp->objective.pos, layer);
    default: break;
    }
    return lp_error(LP_EINVAL, "unknown attribution method %d", (int)sp->method);
}
