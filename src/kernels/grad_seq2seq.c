/* The backward pass of an encoder-decoder (T5) over a captured run: the decoder's layers from
 * the top, the encoder's output gathering what every cross-attention sends it, then the
 * encoder's layers. Both stacks are pre-norm with RMS norms and no biases; attention has no
 * 1/sqrt(d_kv) (cfg.unscaled_attn) and adds a relative position bias, a constant for the
 * input gradients whose table gets the scores' gradient summed by bucket. Parameter gradients
 * ride along when asked, each next to the input gradient of the same product. */
#include "loupe/grad_seq2seq.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "loupe/error.h"

/* ---- the gradient block ---- */

/* Lays g's tensors out from base (NULL: counts only) and, when out is not NULL, names them;
 * returns the number of tensors, *floats the block's size. */
static int walk(lp_t5_grads *g, float *base, const lp_model *m, lp_t5_grad_tensor *out, int cap, size_t *floats) {
    const lp_config *c = &m->cfg;
    size_t at = 0, d = c->d_model, qd = (size_t)c->n_head * c->d_head, dm = c->d_mlp;
    lp_t5_grads none = {0};
    lp_t5_layer_grad dummy;
    if (!g) g = &none; /* counting or naming: the slots are written and forgotten */
    int n = 0;
#define TENSOR(slot, r, k, ...)                                                                           \
    do {                                                                                                 \
        if (out && n < cap) {                                                                            \
            out[n] = (lp_t5_grad_tensor){.grad = base ? base + at : NULL, .n = (size_t)(r) * (k),        \
                                         .rows = (int)(r), .cols = (int)(k)};                            \
            snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                                      \
        }                                                                                                \
        (slot) = base ? base + at : NULL;                                                                \
        at += (size_t)(r) * (k);                                                                         \
        n++;                                                                                             \
    } while (0)
    TENSOR(g->shared, c->vocab, d, "shared.weight");
    if (!c->tied_unembed) TENSOR(g->lm_head, c->vocab, d, "lm_head.weight");
    for (int s = 0; s < 2; s++) {
        const lp_model *sm = s ? m : m->encoder;
        const char *p = s ? "decoder" : "encoder";
        bool dec = s == 1;
        int ff = dec ? 2 : 1;
        for (int l = 0; l < sm->cfg.n_layer; l++) {
            lp_t5_layer_grad *L = dec ? (g->dec ? &g->dec[l] : &dummy) : (g->enc ? &g->enc[l] : &dummy);
            TENSOR(L->ln1, d, 1, "%s.block.%d.layer.0.layer_norm.weight", p, l);
            TENSOR(L->q, qd, d, "%s.block.%d.layer.0.SelfAttention.q.weight", p, l);
            TENSOR(L->k, qd, d, "%s.block.%d.layer.0.SelfAttention.k.weight", p, l);
            TENSOR(L->v, qd, d, "%s.block.%d.layer.0.SelfAttention.v.weight", p, l);
            TENSOR(L->o, d, qd, "%s.block.%d.layer.0.SelfAttention.o.weight", p, l);
            if (dec) {
                TENSOR(L->lnx, d, 1, "%s.block.%d.layer.1.layer_norm.weight", p, l);
                TENSOR(L->xq, qd, d, "%s.block.%d.layer.1.EncDecAttention.q.weight", p, l);
                TENSOR(L->xk, qd, d, "%s.block.%d.layer.1.EncDecAttention.k.weight", p, l);
                TENSOR(L->xv, qd, d, "%s.block.%d.layer.1.EncDecAttention.v.weight", p, l);
                TENSOR(L->xo, d, qd, "%s.block.%d.layer.1.EncDecAttention.o.weight", p, l);
            }
            TENSOR(L->ln2, d, 1, "%s.block.%d.layer.%d.layer_norm.weight", p, l, ff);
            if (lp_mlp_gated(c)) {
                TENSOR(L->wi_0, dm, d, "%s.block.%d.layer.%d.DenseReluDense.wi_0.weight", p, l, ff);
                TENSOR(L->wi_1, dm, d, "%s.block.%d.layer.%d.DenseReluDense.wi_1.weight", p, l, ff);
            } else {
                TENSOR(L->wi, dm, d, "%s.block.%d.layer.%d.DenseReluDense.wi.weight", p, l, ff);
            }
            TENSOR(L->wo, d, dm, "%s.block.%d.layer.%d.DenseReluDense.wo.weight", p, l, ff);
        }
        TENSOR(*(dec ? &g->dec_rel : &g->enc_rel), c->rel_buckets, c->n_head,
               "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", p);
        TENSOR(*(dec ? &g->dec_lnf : &g->enc_lnf), d, 1, "%s.final_layer_norm.weight", p);
    }
#undef TENSOR
    *floats = at;
    return n;
}

int lp_t5_grads_new(lp_t5_grads **out, const lp_model *m) {
    *out = NULL;
    if (!m->encoder || !m->cfg.cross_attn)
        return lp_error(LP_EINVAL, "%s is not an encoder-decoder: it has no T5 gradients", m->cfg.arch);
    lp_t5_grads *g = calloc(1, sizeof *g);
    size_t n;
    walk(NULL, NULL, m, NULL, 0, &n);
    if (g) {
        g->n = n;
        g->block = calloc(n, sizeof *g->block);
        g->enc = calloc((size_t)m->encoder->cfg.n_layer, sizeof *g->enc);
        g->dec = calloc((size_t)m->cfg.n_layer, sizeof *g->dec);
    }
    if (!g || !g->block || !g->enc || !g->dec) {
        lp_t5_grads_free(g);
        return lp_error(LP_ENOMEM, "out of memory: the gradients of %zu parameters", n);
    }
    walk(g, g->block, m, NULL, 0, &n);
    *out = g;
    return LP_OK;
}

void lp_t5_grads_free(lp_t5_grads *g) {
    if (!g) return;
    free(g->block);
    free(g->enc);
    free(g->dec);
    free(g);
}

void lp_t5_grads_zero(lp_t5_grads *g) { memset(g->block, 0, g->n * sizeof *g->block); }

int lp_t5_grads_tensors(const lp_t5_grads *g, const lp_model *m, lp_t5_grad_tensor *out, int cap) {
    size_t n;
    return walk(NULL, g ? g->block : NULL, m, out, cap, &n);
}

/* ---- kernels ---- */

/* dw += the weight's gradient for y = x W (x (n, in), dy (n, out)), laid out as lin stores W
 * ((out, in) for nn.Linear, trans); dw NULL: not asked. */
static void linear_weight_grad(float *dw, const lp_linear *lin, const float *x, const float *dy, int n) {
    if (!dw) return;
    if (lin->trans)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, lin->out, lin->in, n, 1.0f, dy, lin->out, x, lin->in, 1.0f,
                    dw, lin->in);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, lin->in, lin->out, n, 1.0f, x, lin->in, dy, lin->out, 1.0f,
                    dw, lin->out);
}

/* dw (d) += factor * sum_i dy_i * x_i * scale_i: an RMS norm's weight gradient (y = x scale w). */
static void rms_weight_grad(float *dw, const float *dy, const float *x, const float *scale, int n, int d, double factor) {
    if (!dw) return;
    for (int j = 0; j < d; j++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += (double)dy[(size_t)i * d + j] * x[(size_t)i * d + j] * scale[i];
        dw[j] += (float)(s * factor);
    }
}

/* act(x) and act'(x) of a feed-forward's activation, in double. */
static void act_deriv(lp_mlp_kind kind, double x, double *a, double *da) {
    switch (kind) {
    case LP_MLP_RELU: *a = x > 0 ? x : 0, *da = x > 0; return;
    case LP_MLP_SWIGLU: {
        double s = 1.0 / (1.0 + exp(-x));
        *a = x * s, *da = s * (1.0 + x * (1.0 - s));
        return;
    }
    case LP_MLP_GELU_ERF:
        *a = lp_head_act_value(LP_HEAD_ACT_GELU_ERF, x), *da = lp_head_act_deriv(LP_HEAD_ACT_GELU_ERF, x);
        return;
    default:
        *a = lp_head_act_value(LP_HEAD_ACT_GELU_TANH, x), *da = lp_head_act_deriv(LP_HEAD_ACT_GELU_TANH, x);
        return;
    }
}

/* One head of z = P v, P = softmax(scale q k^T + bias) over nq queries and nk keys (causal:
 * query i sees keys 0..i). Given dz: dq = scale dS k, dk += scale dS^T q, dv += P^T dz, with
 * dS (nq, nk) the scores' gradient, left in dS for the bias table. Row strides: lq for q, dq,
 * dz; lk for k, v, dk, dv; lp for P. */
static void head_backward(float *dq, float *dk, float *dv, float *dS, const float *q, const float *k, const float *v,
                          const float *P, const float *dz, int nq, int nk, int dh, int lq, int lk, int lp, float scale,
                          bool causal) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, dh, 1.0f, dz, lq, v, lk, 0.0f, dS, nk);
    for (int i = 0; i < nq; i++) {
        float *ds = dS + (size_t)i * nk;
        const float *p = P + (size_t)i * lp;
        int keys = causal ? i + 1 : nk;
        double r = 0.0;
        for (int j = 0; j < keys; j++) r += (double)p[j] * ds[j];
        for (int j = 0; j < keys; j++) ds[j] = p[j] * (float)(ds[j] - r);
        for (int j = keys; j < nk; j++) ds[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, dh, nq, 1.0f, P, lp, dz, lq, 1.0f, dv, lk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, dh, nk, scale, dS, nk, k, lk, 0.0f, dq, lq);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, dh, nq, scale, dS, nk, q, lq, 1.0f, dk, lk);
}

/* ---- one stack ---- */

/* Scratch for a stack's backward over R rows (R the larger of S and T), with S cross keys. */
typedef struct {
    float *d_a, *d_b, *d_ln;                /* (R, d) */
    float *d_z, *d_q, *d_k, *d_v;           /* (R, H*dh) */
    float *d_xk, *d_xv;                     /* (S, H*dh) */
    float *d_post, *d_pre, *d_up;           /* (R, dm) */
    float *dS;                              /* (R, R) */
    int *bucket;                            /* (2R - 1): the bucket of offset key - query */
} work;

static const float *view(const lp_run *r, lp_act_kind kind, int layer) {
    lp_view v;
    return lp_run_view(r, kind, layer, -1, &v) == LP_OK ? v.data : NULL;
}

/* The feed-forward backward of R rows: d_ln (R, d) = d(FF input after norm) from dy (R, d). */
static void ff_backward(work *w, const lp_model *m, int l, const lp_run *r, int R, const float *dy,
                        lp_t5_layer_grad *lg) {
    const lp_config *c = &m->cfg;
    const lp_layer *L = &m->layers[l];
    size_t nm = (size_t)R * c->d_mlp;
    const float *ln2 = view(r, LP_ACT_LN2, l), *pre = view(r, LP_ACT_MLP_PRE, l), *post = view(r, LP_ACT_MLP_POST, l);
    const float *up = lp_mlp_gated(c) ? view(r, LP_ACT_MLP_UP, l) : NULL;
    linear_weight_grad(lg ? lg->wo : NULL, &L->down, post, dy, R);
    linear_backward(w->d_post, dy, &L->down, R, 0.0f);
    for (size_t i = 0; i < nm; i++) {
        double a, da;
        act_deriv(c->mlp == LP_MLP_GEGLU ? LP_MLP_GELU_TANH : c->mlp, pre[i], &a, &da);
        if (up) { /* post = act(gate) * up */
            w->d_up[i] = (float)(w->d_post[i] * a);
            w->d_pre[i] = (float)(w->d_post[i] * up[i] * da);
        } else {
            w->d_pre[i] = (float)(w->d_post[i] * da);
        }
    }
    if (up) {
        linear_weight_grad(lg ? lg->wi_0 : NULL, &L->gate, ln2, w->d_pre, R);
        linear_weight_grad(lg ? lg->wi_1 : NULL, &L->up, ln2, w->d_up, R);
        linear_backward(w->d_ln, w->d_pre, &L->gate, R, 0.0f);
        linear_backward(w->d_ln, w->d_up, &L->up, R, 1.0f);
    } else {
        linear_weight_grad(lg ? lg->wi : NULL, &L->up, ln2, w->d_pre, R);
        linear_backward(w->d_ln, w->d_pre, &L->up, R, 0.0f);
    }
}

/* d_x (R, d) = dy + the gradient through norm(x) * w given d_ln; w's gradient to dw. */
static void rms_backward(float *d_x, const float *dy, const float *d_ln, const float *x, const float *scale,
                         const float *w, int R, int d, float *dw) {
    rms_weight_grad(dw, d_ln, x, scale, R, d, 1.0);
    if (d_x != dy) memcpy(d_x, dy, (size_t)R * d * sizeof *d_x);
    norm_backward(d_x, d_ln, x, scale, w, R, d, LP_NORM_RMSNORM);
}

/* The decoder layer's cross-attention backward: from dy (T, d), the gradient at resid_cross,
 * writes d_ln (the gradient at lnx), adds to d_enc (S, d) what reaches the encoder's output
 * enc (S, d), and the weights' gradients to lg. */
static void cross_backward(work *w, const lp_model *m, int l, const lp_run *r, int T, int S, const float *dy,
                           const float *enc, float *d_enc, lp_t5_layer_grad *lg) {
    const lp_config *c = &m->cfg;
    const lp_layer *L = &m->layers[l];
    int H = c->n_head, dh = c->d_head, qd = H * dh;
    float scale = c->unscaled_attn ? 1.0f : 1.0f / sqrtf((float)dh);
    const float *lnx = view(r, LP_ACT_LN_CROSS, l), *xz = view(r, LP_ACT_CROSS_Z, l);
    const float *xP = view(r, LP_ACT_CROSS_PATTERN, l), *sx, *xq, *xk, *xv;
    lp_run_cross_tape(r, l, &sx, &xq, &xk, &xv);
    linear_weight_grad(lg ? lg->xo : NULL, &L->xo, xz, dy, T);
    linear_backward(w->d_z, dy, &L->xo, T, 0.0f);
    memset(w->d_xk, 0, (size_t)S * qd * sizeof *w->d_xk);
    memset(w->d_xv, 0, (size_t)S * qd * sizeof *w->d_xv);
    for (int h = 0; h < H; h++)
        head_backward(w->d_q + h * dh, w->d_xk + h * dh, w->d_xv + h * dh, w->dS, xq + h * dh, xk + h * dh,
                      xv + h * dh, xP + (size_t)h * T * S, w->d_z + h * dh, T, S, dh, qd, qd, S, scale, false);
    linear_weight_grad(lg ? lg->xq : NULL, &L->xq, lnx, w->d_q, T);
    linear_weight_grad(lg ? lg->xk : NULL, &L->xk, enc, w->d_xk, S);
    linear_weight_grad(lg ? lg->xv : NULL, &L->xv, enc, w->d_xv, S);
    linear_backward(d_enc, w->d_xk, &L->xk, S, 1.0f);
    linear_backward(d_enc, w->d_xv, &L->xv, S, 1.0f);
    linear_backward(w->d_ln, w->d_q, &L->xq, T, 0.0f);
    rms_backward(w->d_a, dy, w->d_ln, view(r, LP_ACT_RESID_MID, l), sx, L->lnx_w, T, c->d_model,
                 lg ? lg->lnx : NULL);
}

/* Self-attention's backward: from dy (R, d), the gradient at resid_mid, writes the gradient
 * at resid_pre to d_x; the scores' gradient goes to the bias table drel by bucket. */
static void self_backward(work *w, const lp_model *m, int l, const lp_run *r, int R, const float *dy, float *d_x,
                          lp_t5_layer_grad *lg, float *drel) {
    const lp_config *c = &m->cfg;
    const lp_layer *L = &m->layers[l];
    int H = c->n_head, dh = c->d_head, qd = H * dh;
    float scale = c->unscaled_attn ? 1.0f : 1.0f / sqrtf((float)dh);
    const float *ln1 = view(r, LP_ACT_LN1, l), *z = view(r, LP_ACT_Z, l), *P = view(r, LP_ACT_PATTERN, l);
    const float *q = view(r, LP_ACT_Q, l), *k = view(r, LP_ACT_K, l), *v = view(r, LP_ACT_V, l);
    linear_weight_grad(lg ? lg->o : NULL, &L->o, z, dy, R);
    linear_backward(w->d_z, dy, &L->o, R, 0.0f);
    memset(w->d_k, 0, (size_t)R * qd * sizeof *w->d_k);
    memset(w->d_v, 0, (size_t)R * qd * sizeof *w->d_v);
    for (int h = 0; h < H; h++) {
        head_backward(w->d_q + h * dh, w->d_k + h * dh, w->d_v + h * dh, w->dS, q + h * dh, k + h * dh, v + h * dh,
                      P + (size_t)h * R * R, w->d_z + h * dh, R, R, dh, qd, qd, R, scale, c->causal);
        for (int i = 0; drel && i < R; i++)
            for (int j = 0; j < (c->causal ? i + 1 : R); j++)
                drel[w->bucket[j - i + R - 1] * H + h] += w->dS[(size_t)i * R + j];
    }
    linear_weight_grad(lg ? lg->q : NULL, &L->q, ln1, w->d_q, R);
    linear_weight_grad(lg ? lg->k : NULL, &L->k, ln1, w->d_k, R);
    linear_weight_grad(lg ? lg->v : NULL, &L->v, ln1, w->d_v, R);
    linear_backward(w->d_ln, w->d_q, &L->q, R, 0.0f);
    linear_backward(w->d_ln, w->d_k, &L->k, R, 1.0f);
    linear_backward(w->d_ln, w->d_v, &L->v, R, 1.0f);
    rms_backward(d_x, dy, w->d_ln, view(r, LP_ACT_RESID_PRE, l), view(r, LP_ACT_LN1_SCALE, l), L->ln1_w, R,
                 c->d_model, lg ? lg->ln1 : NULL);
}

/* One stack's backward over run r (m its model): d_x (R, d) holds the gradient at the final
 * norm's output on entry and the gradient at the embeddings on return. The decoder (S > 0)
 * adds to d_enc (S, d) the gradient at the encoder's output enc. lnf_factor scales the final
 * norm's weight gradient (the decoder's folded rescale). */
static void stack_backward(work *w, const lp_model *m, const lp_run *r, float *d_x, int S, const float *enc,
                           float *d_enc, lp_t5_layer_grad *lgs, float *drel, float *dlnf, double lnf_factor) {
    const lp_config *c = &m->cfg;
    int R = lp_run_len(r), d = c->d_model, Lc = c->n_layer;
    for (int rel = -(R - 1); rel <= R - 1; rel++)
        w->bucket[rel + R - 1] = lp_rel_bucket(rel, !c->causal, c->rel_buckets, c->rel_max_distance);
    const float *last = view(r, LP_ACT_RESID_POST, Lc - 1), *sf = view(r, LP_ACT_LN_FINAL_SCALE, -1);
    rms_weight_grad(dlnf, d_x, last, sf, R, d, lnf_factor);
    memcpy(w->d_ln, d_x, (size_t)R * d * sizeof *d_x);
    memset(d_x, 0, (size_t)R * d * sizeof *d_x);
    norm_backward(d_x, w->d_ln, last, sf, m->lnf_w, R, d, LP_NORM_RMSNORM);
    for (int l = Lc - 1; l >= 0; l--) {
        lp_t5_layer_grad *lg = lgs ? &lgs[l] : NULL;
        const lp_layer *L = &m->layers[l];
        /* the feed-forward reads resid_cross (decoder) or resid_mid (encoder) */
        const float *ff_in = view(r, S ? LP_ACT_RESID_MID_CROSS : LP_ACT_RESID_MID, l);
        ff_backward(w, m, l, r, R, d_x, lg);
        rms_backward(w->d_b, d_x, w->d_ln, ff_in, view(r, LP_ACT_LN2_SCALE, l), L->ln2_w, R, d, lg ? lg->ln2 : NULL);
        const float *dy = w->d_b; /* at resid_mid */
        if (S) {
            cross_backward(w, m, l, r, R, S, w->d_b, enc, d_enc, lg);
            dy = w->d_a;
        }
        self_backward(w, m, l, r, R, dy, d_x, lg, drel);
    }
}

/* ---- the two entry points ---- */

static void work_free(work *w) {
    free(w->d_a), free(w->d_b), free(w->d_ln), free(w->d_z), free(w->d_q), free(w->d_k), free(w->d_v);
    free(w->d_xk), free(w->d_xv), free(w->d_post), free(w->d_pre), free(w->d_up), free(w->dS), free(w->bucket);
}

static int work_new(work *w, const lp_config *c, int R, int S) {
    size_t d = c->d_model, qd = (size_t)c->n_head * c->d_head, dm = c->d_mlp, RR = R;
    *w = (work){malloc(RR * d * sizeof(float)), malloc(RR * d * sizeof(float)), malloc(RR * d * sizeof(float)),
                malloc(RR * qd * sizeof(float)), malloc(RR * qd * sizeof(float)), malloc(RR * qd * sizeof(float)),
                malloc(RR * qd * sizeof(float)), malloc((size_t)S * qd * sizeof(float)),
                malloc((size_t)S * qd * sizeof(float)), malloc(RR * dm * sizeof(float)), malloc(RR * dm * sizeof(float)),
                malloc(RR * dm * sizeof(float)), malloc(RR * RR * sizeof(float)), malloc((2 * RR - 1) * sizeof(int))};
    if (w->d_a && w->d_b && w->d_ln && w->d_z && w->d_q && w->d_k && w->d_v && w->d_xk && w->d_xv && w->d_post &&
        w->d_pre && w->d_up && w->dS && w->bucket)
        return LP_OK;
    work_free(w);
    return lp_error(LP_ENOMEM, "out of memory: the backward of %d positions", R);
}

static int need_source(const lp_run *r) {
    const lp_model *m = lp_run_model(r);
    if (!lp_run_source(r) || !m->encoder)
        return lp_error(LP_EINVAL, "this run has no source: lp_grad_seq2seq differentiates encoder-decoder runs");
    return LP_OK;
}

/* The backward from dlogits: (T, V) when pos < 0, else one row (V), that of position pos (an
 * objective's: the other rows are 0, and a product over all of them would cost as much as
 * the rest of an integrated-gradients step). */
static int backward(float *d_src, float *d_tgt, lp_t5_grads *pg, const lp_run *r, const float *dlogits, int pos) {
    int rc = need_source(r);
    if (rc) return rc;
    const lp_model *m = lp_run_model(r), *e = m->encoder;
    const lp_run *src = lp_run_source(r);
    const lp_config *c = &m->cfg;
    int T = lp_run_len(r), S = lp_run_len(src), d = c->d_model, R = S > T ? S : T;
    work w;
    float *dt = malloc((size_t)T * d * sizeof *dt), *ds = calloc((size_t)S * d, sizeof *ds);
    if (!dt || !ds || (rc = work_new(&w, c, R, S))) {
        free(dt), free(ds);
        return rc ? rc : lp_error(LP_ENOMEM, "out of memory");
    }
    const float *lnf = view(r, LP_ACT_LN_FINAL, -1), *enc = view(src, LP_ACT_LN_FINAL, -1);
    /* logits = lnf U: the output layer's gradient (tied: the shared embedding's) and lnf's */
    if (pg) {
        float *dU = c->tied_unembed ? pg->shared : pg->lm_head;
        if (pos < 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c->vocab, d, T, 1.0f, dlogits, c->vocab, lnf, d, 1.0f,
                        dU, d);
        else
            cblas_sger(CblasRowMajor, c->vocab, d, 1.0f, dlogits, 1, lnf + (size_t)pos * d, 1, dU, d);
    }
    if (pos < 0) {
        linear_backward(dt, dlogits, &m->unembed, T, 0.0f);
    } else {
        memset(dt, 0, (size_t)T * d * sizeof *dt);
        linear_backward(dt + (size_t)pos * d, dlogits, &m->unembed, 1, 0.0f);
    }
    /* the tied models' d_model^-0.5 sits in the decoder's final norm weight (t5.c) */
    stack_backward(&w, m, r, dt, S, enc, ds, pg ? pg->dec : NULL, pg ? pg->dec_rel : NULL, pg ? pg->dec_lnf : NULL,
                   c->tied_unembed ? 1.0 / sqrt((double)d) : 1.0);
    stack_backward(&w, e, src, ds, 0, NULL, NULL, pg ? pg->enc : NULL, pg ? pg->enc_rel : NULL,
                   pg ? pg->enc_lnf : NULL, 1.0);
    if (pg) { /* both stacks read shared[id] */
        const int *ids[2] = {lp_run_ids(r), lp_run_ids(src)};
        const float *g[2] = {dt, ds};
        int n[2] = {T, S};
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < n[s]; i++) {
                float *row = pg->shared + (size_t)ids[s][i] * d;
                for (int j = 0; j < d; j++) row[j] += g[s][(size_t)i * d + j];
            }
    }
    if (d_src) memcpy(d_src, ds, (size_t)S * d * sizeof *ds);
    if (d_tgt) memcpy(d_tgt, dt, (size_t)T * d * sizeof *dt);
    work_free(&w);
    free(dt);
    free(ds);
    return LP_OK;
}

int lp_grad_seq2seq_seeded(float *d_src, float *d_tgt, lp_t5_grads *pg, const lp_run *r, const float *dlogits) {
    return backward(d_src, d_tgt, pg, r, dlogits, -1);
}

int lp_grad_seq2seq(float *d_src, float *d_tgt, double *value, const lp_run *r, const lp_objective *o) {
    int rc = need_source(r);
    if (rc) return rc;
    const lp_model *m = lp_run_model(r);
    int T = lp_run_len(r), V = m->cfg.vocab;
    if ((rc = lp_objective_check(o, m, T))) return rc;
    float *row = calloc((size_t)V, sizeof *row); /* dlogits at pos, the only row that is not 0 */
    if (!row) return lp_error(LP_ENOMEM, "out of memory");
    const float *lg = lp_run_logits(r, o->pos);
    if (o->kind == LP_OBJ_LOGPROB) { /* d (l_t - logsumexp l) / d l = e_t - softmax(l) */
        double lse = lg[o->target] - lp_objective_value(o, lg, V);
        for (int j = 0; j < V; j++) row[j] = (float)-exp(lg[j] - lse);
    }
    row[o->target] += 1.0f;
    if (o->kind == LP_OBJ_LOGIT_DIFF) row[o->contrast] -= 1.0f;
    if (value) *value = lp_objective_value(o, lg, V);
    rc = backward(d_src, d_tgt, NULL, r, row, o->pos);
    free(row);
    return rc;
}
