/* Direct logit attribution of heads, MLPs and neurons, and activation summaries (see
 * circuits.h). Everything here is a dot product with one direction in the residual stream,
 * so nothing needs more than a few vectors of d_model. */
#include "loupe/circuits.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "loupe/error.h"

static double dot(const float *a, const float *b, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* dx (in) = W dy for y = x W + b: what a direction dy (out) on the output asks of the input. */
static void pullback(const lp_linear *lin, const float *dy, float *dx) {
    if (lin->trans) /* (out, in) rows */
        cblas_sgemv(CblasRowMajor, CblasTrans, lin->out, lin->in, 1.0f, lin->w, lin->ld, dy, 1, 0.0f, dx, 1);
    else /* (in, out) rows */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, lin->in, lin->out, 1.0f, lin->w, lin->ld, dy, 1, 0.0f, dx, 1);
}

/* u (d) += sign * W_U[:, t]. */
static void add_unembed_column(const lp_model *m, int t, float sign, float *u) {
    const lp_linear *U = &m->unembed;
    for (int j = 0; j < U->in; j++)
        u[j] += sign * (U->trans ? U->w[(size_t)t * U->ld + j] : U->w[(size_t)j * U->ld + t]);
}

static int check_args(const lp_run *r, int pos, int target, int contrast) {
    const lp_config *c = lp_model_config(lp_run_model(r));
    int T = lp_run_len(r), W = lp_run_out_width(r);
    const char *range = c->head == LP_HEAD_CLASSIFIER ? "the labels" : "the vocabulary";
    if (c->head == LP_HEAD_NONE)
        return lp_error(LP_EUNSUPPORTED, "%s has no output head: there is no logit to attribute", c->arch);
    if (pos < 0 || pos >= T) return lp_error(LP_EINVAL, "position %d is out of range (0..%d)", pos, T - 1);
    if (c->head == LP_HEAD_CLASSIFIER && pos != 0)
        return lp_error(LP_EINVAL, "a classifier's output is at position 0 (its [CLS]), not %d", pos);
    if (target < 0 || target >= W) return lp_error(LP_EINVAL, "target id %d is outside %s (0..%d)", target, range, W - 1);
    if (contrast < -1 || contrast >= W)
        return lp_error(LP_EINVAL, "contrast id %d is outside %s (0..%d)", contrast, range, W - 1);
    return LP_OK;
}

/* ---- encoders: frozen post-norms, the head's gradient at the run ---- */

/* g (d) in place: a direction after a LayerNorm with frozen scale s and weight w, carried
 * to before it. The norm maps v to s w (v - mean v) + b, so g . norm(v) = g' . v + g . b
 * with g' = s w g, centred. */
static void through_frozen_norm(float *g, const float *w, float s, int d) {
    double mean = 0.0;
    for (int j = 0; j < d; j++) {
        g[j] = s * w[j] * g[j];
        mean += g[j];
    }
    mean /= d;
    for (int j = 0; j < d; j++) g[j] = (float)(g[j] - mean);
}

static float scale_at(const lp_run *r, lp_act_kind kind, int layer, int pos) {
    lp_view v;
    lp_run_view(r, kind, layer, -1, &v);
    return v.data[pos];
}

/* lp_dla for encoders (see circuits.h); heads and mlp may be NULL; when neurons is not
 * NULL, each neuron's part in layer neuron_layer goes there. */
static int encoder_dla(const lp_run *r, int pos, int target, int contrast, float *heads, float *mlp, lp_dla_sums *sums,
                       int neuron_layer, float *neurons) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int d = c->d_model, H = c->n_head, dh = c->d_head, W = lp_run_out_width(r);
    float *g = malloc(((size_t)7 * d + W + (size_t)H * dh) * sizeof *g), *gz = g + d;
    if (!g) return lp_error(LP_ENOMEM, "out of memory");
    lp_dla_sums S = {.linearised = 1};
    lp_objective o = {contrast >= 0 ? LP_OBJ_LOGIT_DIFF : LP_OBJ_LOGIT, pos, target, contrast};
    lp_view v;
    lp_run_view(r, LP_ACT_LN_FINAL, 0, -1, &v);
    int rc = encoder_head_backward(g, &S.logit, m, v.data + (size_t)pos * v.stride[0], lp_run_logits(r, pos), &o);
    if (rc) {
        free(g);
        return rc;
    }
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const lp_layer *w = &m->layers[l];
        /* resid_post = LN2(resid_mid + mlp_out) */
        S.norm_bias += dot(w->ln2_b, g, d);
        through_frozen_norm(g, w->ln2_w, scale_at(r, LP_ACT_LN2_SCALE, l, pos), d);
        lp_run_view(r, LP_ACT_MLP_OUT, l, -1, &v);
        double x = dot(v.data + (size_t)pos * v.stride[0], g, d);
        if (mlp) mlp[l] = (float)x;
        S.mlp += x;
        if (neurons && l == neuron_layer) {
            pullback(&w->down, g, neurons);
            lp_run_view(r, LP_ACT_MLP_POST, l, -1, &v);
            for (int i = 0; i < c->d_mlp; i++) neurons[i] *= v.data[(size_t)pos * v.stride[0] + i];
        }
        /* resid_mid = LN1(resid_pre + attn_out) */
        S.norm_bias += dot(w->ln1_b, g, d);
        through_frozen_norm(g, w->ln1_w, scale_at(r, LP_ACT_LN1_SCALE, l, pos), d);
        pullback(&w->o, g, gz);
        lp_run_view(r, LP_ACT_Z, l, -1, &v);
        const float *z = v.data + (size_t)pos * v.stride[0];
        for (int h = 0; h < H; h++) {
            x = dot(z + (size_t)h * dh, gz + (size_t)h * dh, dh);
            if (heads) heads[(size_t)l * H + h] = (float)x;
            S.heads += x;
        }
        if (w->o.b) S.attn_bias += dot(w->o.b, g, d);
    }
    lp_run_view(r, LP_ACT_RESID_PRE, 0, -1, &v);
    S.embed = dot(v.data + (size_t)pos * v.stride[0], g, d);
    S.bias = S.attn_bias + S.norm_bias;
    S.total = S.embed + S.heads + S.mlp + S.bias;
    S.capped = S.logit;
    S.remainder = S.logit - S.total;
    if (sums) *sums = S;
    free(g);
    return LP_OK;
}

/* The direction (d) in the final residual stream at pos whose dot product with a piece is
 * that piece's contribution: the unembedding direction u = W_U[:, target] - W_U[:, contrast]
 * scaled by the norm's weight and the run's frozen scale, mean-removed for LayerNorm (the
 * norm centres each piece, and centring x then dotting with g is dotting x with g centred).
 * Also the two terms that do not come from the residual stream: the norm's bias and the
 * unembedding's bias, dotted with u. u (d) is scratch. */
static void logit_direction(const lp_run *r, int pos, int target, int contrast, float *dir, float *u,
                            double *norm_bias, double *unembed_bias) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int d = c->d_model;
    memset(u, 0, (size_t)d * sizeof *u);
    add_unembed_column(m, target, 1.0f, u);
    if (contrast >= 0) add_unembed_column(m, contrast, -1.0f, u);
    lp_view sv;
    lp_run_view(r, LP_ACT_LN_FINAL_SCALE, 0, -1, &sv);
    float s = sv.data[pos];
    double mean = 0.0;
    for (int j = 0; j < d; j++) {
        dir[j] = s * m->lnf_w[j] * u[j];
        mean += dir[j];
    }
    if (c->norm == LP_NORM_LAYERNORM) {
        mean /= d;
        for (int j = 0; j < d; j++) dir[j] = (float)(dir[j] - mean);
    }
    *norm_bias = m->lnf_b ? dot(m->lnf_b, u, d) : 0.0;
    const float *bu = m->unembed.b;
    *unembed_bias = bu ? (double)bu[target] - (contrast >= 0 ? (double)bu[contrast] : 0.0) : 0.0;
}

/* dir (d) through a post-norm of a sandwich block (Gemma 2), its scale frozen: out = dir *
 * scale * w, the direction a piece before the norm is dotted with. Without one, out = dir. */
static const float *through_post_norm(const float *dir, const float *w, const float *scale, int pos, int d,
                                      float *out) {
    if (!w) return dir;
    for (int j = 0; j < d; j++) out[j] = dir[j] * scale[pos] * w[j];
    return out;
}

/* Each head's part: z_h at pos times its rows of W_O, dotted with dir (g: scratch, H * dh +
 * d), through the post-attention norm when the layer has one. */
static double head_parts(const lp_run *r, lp_act_kind z_kind, const lp_linear *o, int l, int pos, const float *dir,
                         float *g, float *out) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int H = c->n_head, dh = c->d_head;
    double sum = 0;
    if (z_kind == LP_ACT_Z && c->sandwich_norm) {
        const float *s1, *s2;
        lp_run_post_scales(r, l, &s1, &s2);
        dir = through_post_norm(dir, m->layers[l].post1_w, s1, pos, c->d_model, g + (size_t)H * dh);
    }
    pullback(o, dir, g);
    lp_view v;
    lp_run_view(r, z_kind, l, -1, &v);
    const float *z = v.data + (size_t)pos * v.stride[0];
    for (int h = 0; h < H; h++) {
        double x = dot(z + (size_t)h * dh, g + (size_t)h * dh, dh);
        if (out) out[(size_t)l * H + h] = (float)x;
        sum += x;
    }
    return sum;
}

int lp_dla_seq2seq(const lp_run *r, int pos, int target, int contrast, float *heads, float *cross, float *mlp,
                   lp_dla_sums *sums) {
    int rc = check_args(r, pos, target, contrast);
    if (rc) return rc;
    if (!lp_model_config(lp_run_model(r))->causal) return encoder_dla(r, pos, target, contrast, heads, mlp, sums, -1, NULL);
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int d = c->d_model, H = c->n_head, dh = c->d_head;
    float *dir = malloc((size_t)(3 * d + H * dh) * sizeof *dir), *g = dir + 2 * (size_t)d;
    if (!dir) return lp_error(LP_ENOMEM, "out of memory");
    lp_dla_sums S = {0};
    logit_direction(r, pos, target, contrast, dir, dir + d, &S.norm_bias, &S.unembed_bias);
    lp_view v;
    lp_run_view(r, LP_ACT_RESID_PRE, 0, -1, &v);
    S.embed = dot(v.data + (size_t)pos * v.stride[0], dir, d);
    for (int l = 0; l < c->n_layer; l++) {
        const lp_layer *w = &m->layers[l];
        /* A head writes z_h W_O[h] (its rows of W_O): its contribution is z_h . (W_O[h] dir). */
        S.heads += head_parts(r, LP_ACT_Z, &w->o, l, pos, dir, g, heads);
        if (w->o.b) S.attn_bias += dot(w->o.b, dir, d);
        if (c->cross_attn) S.cross += head_parts(r, LP_ACT_CROSS_Z, &w->xo, l, pos, dir, g, cross);
        lp_run_view(r, LP_ACT_MLP_OUT, l, -1, &v);
        double x = dot(v.data + (size_t)pos * v.stride[0], dir, d);
        mlp[l] = (float)x;
        S.mlp += x;
    }
    S.bias = S.attn_bias + S.norm_bias + S.unembed_bias;
    S.total = S.embed + S.heads + S.cross + S.mlp + S.bias;
    const float *lg = lp_run_logits(r, pos);
    S.logit = S.capped = (double)lg[target] - (contrast >= 0 ? (double)lg[contrast] : 0.0);
    if (c->final_softcap > 0.0f) { /* the logits before the cap, from the final norm's output */
        lp_run_view(r, LP_ACT_LN_FINAL, 0, -1, &v);
        S.logit = dot(v.data + (size_t)pos * v.stride[0], dir + d, d) + S.unembed_bias;
    }
    S.remainder = S.logit - S.total;
    if (sums) *sums = S;
    free(dir);
    return LP_OK;
}

int lp_dla(const lp_run *r, int pos, int target, int contrast, float *heads, float *mlp, lp_dla_sums *sums) {
    return lp_dla_seq2seq(r, pos, target, contrast, heads, NULL, mlp, sums);
}

int lp_dla_neurons(const lp_run *r, int layer, int pos, int target, int contrast, float *out) {
    int rc = check_args(r, pos, target, contrast);
    if (rc) return rc;
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    if (layer < 0 || layer >= c->n_layer)
        return lp_error(LP_EINVAL, "layer %d is out of range: the model has layers 0..%d", layer, c->n_layer - 1);
    if (!c->causal) return encoder_dla(r, pos, target, contrast, NULL, NULL, NULL, layer, out);
    float *dir = malloc((size_t)3 * c->d_model * sizeof *dir);
    if (!dir) return lp_error(LP_ENOMEM, "out of memory");
    double nb, ub;
    logit_direction(r, pos, target, contrast, dir, dir + c->d_model, &nb, &ub);
    const float *s1, *s2, *to = dir;
    if (c->sandwich_norm) {
        lp_run_post_scales(r, layer, &s1, &s2);
        to = through_post_norm(dir, m->layers[layer].post2_w, s2, pos, c->d_model, dir + 2 * (size_t)c->d_model);
    }
    /* Neuron i writes post_i W_down[i]: its contribution is post_i (W_down dir)_i. */
    pullback(&m->layers[layer].down, to, out);
    lp_view v;
    lp_run_view(r, LP_ACT_MLP_POST, layer, -1, &v);
    const float *post = v.data + (size_t)pos * v.stride[0];
    for (int i = 0; i < c->d_mlp; i++) out[i] *= post[i];
    free(dir);
    return LP_OK;
}

void lp_act_summary(const lp_view *v, int row, int k, lp_act_stats *st, int *top_dims) {
    int n = v->shape[1];
    const float *x = v->data + (size_t)row * v->stride[0];
    long step = v->stride[1];
    double sum = 0.0, sq = 0.0;
    float mn = INFINITY, mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        float a = x[j * step];
        sum += a;
        sq += (double)a * a;
        mn = a < mn ? a : mn;
        mx = a > mx ? a : mx;
    }
    double mean = sum / n, var = 0.0;
    for (int j = 0; j < n; j++) {
        double c = x[j * step] - mean;
        var += c * c;
    }
    *st = (lp_act_stats){(float)sqrt(sq), (float)mean, (float)sqrt(var / n), mn, mx};
    /* The k largest |x| by insertion into a short sorted list: k is small. */
    int have = 0;
    for (int j = 0; j < n && k > 0; j++) {
        float a = fabsf(x[j * step]);
        if (have == k && a <= fabsf(x[top_dims[k - 1] * step])) continue;
        int i = have < k ? have++ : k - 1;
        while (i > 0 && fabsf(x[top_dims[i - 1] * step]) < a) {
            top_dims[i] = top_dims[i - 1];
            i--;
        }
        top_dims[i] = j;
    }
    for (int i = have; i < k; i++) top_dims[i] = -1;
}
