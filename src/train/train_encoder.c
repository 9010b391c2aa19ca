/* Training BERT: its parameter block in Hugging Face's names, the masked-LM and
 * classification losses with their gradient with respect to every parameter, the batches
 * of examples (masked as BERT's pre-training masks them), and saving as BertForMaskedLM or
 * BertForSequenceClassification. The forward is the inference one (lp_embed_sum,
 * lp_layer_forward with the post-norm flags, the head's layers), so a model trains on exactly
 * the function loupe later inspects; train.c runs the loop, AdamW and the checkpoints. */
#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/generate.h"
#include "loupe/safetensors.h"
#include "train/train_impl.h"

/* ---- the parameter block ---- */

/* Block order: embeddings, layers, then the head (masked LM or classifier). */
enum { E_WTE, E_WPE, E_TYPE, E_LN_W, E_LN_B, E_LAYERS };
enum { Q_W, Q_B, K_W, K_B, V_W, V_B, O_W, O_B, LN1_W, LN1_B, UP_W, UP_B, DOWN_W, DOWN_B, LN2_W, LN2_B, PER_LAYER };
enum { MLM_DENSE_W, MLM_DENSE_B, MLM_LN_W, MLM_LN_B, MLM_BIAS };
enum { CLS_POOL_W, CLS_POOL_B, CLS_OUT_W, CLS_OUT_B };

static int layer_t(const lp_config *c, int l, int k) { (void)c; return E_LAYERS + l * PER_LAYER + k; }
static int head_t(const lp_config *c, int k) { return E_LAYERS + c->n_layer * PER_LAYER + k; }

static void add_tensor(lp_param_tensor *out, int cap, int *n, size_t *at, bool decay, long d0, long d1,
                       const char *name) {
    size_t size = (size_t)d0 * (d1 ? (size_t)d1 : 1);
    if (out && *n < cap) {
        lp_param_tensor *t = &out[*n];
        *t = (lp_param_tensor){.offset = *at, .size = size, .ndim = d1 ? 2 : 1, .shape = {d0, d1}, .decay = decay};
        snprintf(t->name, sizeof t->name, "%s", name);
    }
    *at += size;
    (*n)++;
}

static int enc_tensors(const lp_config *c, lp_param_tensor *out, int cap) {
    long d = c->d_model, dm = c->d_mlp;
    int n = 0;
    size_t at = 0;
    char name[96];
    add_tensor(out, cap, &n, &at, true, c->vocab, d, "bert.embeddings.word_embeddings.weight");
    add_tensor(out, cap, &n, &at, true, c->n_ctx, d, "bert.embeddings.position_embeddings.weight");
    add_tensor(out, cap, &n, &at, true, c->type_vocab, d, "bert.embeddings.token_type_embeddings.weight");
    add_tensor(out, cap, &n, &at, false, d, 0, "bert.embeddings.LayerNorm.weight");
    add_tensor(out, cap, &n, &at, false, d, 0, "bert.embeddings.LayerNorm.bias");
    /* nn.Linear weights are (out, in). */
    static const struct {
        const char *part;
        int out, in; /* 0: d, 1: d_mlp */
    } L[PER_LAYER / 2] = {{"attention.self.query", 0, 0}, {"attention.self.key", 0, 0},
                          {"attention.self.value", 0, 0}, {"attention.output.dense", 0, 0},
                          {"attention.output.LayerNorm", 0, -1}, {"intermediate.dense", 1, 0},
                          {"output.dense", 0, 1}, {"output.LayerNorm", 0, -1}};
    for (int l = 0; l < c->n_layer; l++)
        for (int k = 0; k < PER_LAYER / 2; k++) {
            long o = L[k].out ? dm : d, i = L[k].in < 0 ? 0 : L[k].in ? dm : d;
            snprintf(name, sizeof name, "bert.encoder.layer.%d.%s.weight", l, L[k].part);
            add_tensor(out, cap, &n, &at, L[k].in >= 0, o, i, name);
            snprintf(name, sizeof name, "bert.encoder.layer.%d.%s.bias", l, L[k].part);
            add_tensor(out, cap, &n, &at, false, o, 0, name);
        }
    if (c->head == LP_HEAD_MLM) {
        add_tensor(out, cap, &n, &at, true, d, d, "cls.predictions.transform.dense.weight");
        add_tensor(out, cap, &n, &at, false, d, 0, "cls.predictions.transform.dense.bias");
        add_tensor(out, cap, &n, &at, false, d, 0, "cls.predictions.transform.LayerNorm.weight");
        add_tensor(out, cap, &n, &at, false, d, 0, "cls.predictions.transform.LayerNorm.bias");
        add_tensor(out, cap, &n, &at, false, c->vocab, 0, "cls.predictions.bias");
    } else {
        add_tensor(out, cap, &n, &at, true, d, d, "bert.pooler.dense.weight");
        add_tensor(out, cap, &n, &at, false, d, 0, "bert.pooler.dense.bias");
        add_tensor(out, cap, &n, &at, true, c->n_labels, d, "classifier.weight");
        add_tensor(out, cap, &n, &at, false, c->n_labels, 0, "classifier.bias");
    }
    return n;
}

static lp_linear linear_at(const float *p, const lp_param_tensor *t, int w, int in, int out) {
    return lp_linear_of(p + t[w].offset, p + t[w + 1].offset, in, out, in, true);
}

static int enc_model_new(lp_model **out, const lp_config *cfg, uint64_t seed) {
    *out = NULL;
    if (cfg->attn_only) return lp_error(LP_EINVAL, "a BERT has MLPs: --attn-only is for GPT-2 models");
    if (cfg->head == LP_HEAD_CLASSIFIER && cfg->n_labels < 1)
        return lp_error(LP_EINVAL, "a classifier needs at least one label");
    lp_model *m = calloc(1, sizeof *m);
    if (!m) return lp_error(LP_ENOMEM, "out of memory");
    lp_config *c = &m->cfg;
    *c = *cfg;
    bool mlm = c->head == LP_HEAD_MLM;
    snprintf(c->arch, sizeof c->arch, mlm ? "BertForMaskedLM" : "BertForSequenceClassification");
    snprintf(c->family, sizeof c->family, "bert");
    c->n_kv_head = c->n_head;
    c->d_head = c->d_model / c->n_head;
    if (!(c->norm_eps > 0.0f)) c->norm_eps = 1e-12f;
    c->norm = LP_NORM_LAYERNORM;
    c->pos = LP_POS_LEARNED;
    c->mlp = LP_MLP_GELU_ERF;
    c->tied_unembed = mlm;
    c->qkv_bias = c->mlp_bias = true;
    c->causal = false;
    c->post_norm = c->emb_norm = true;
    c->type_vocab = 2;
    c->pos_offset = c->pos_pad_id = 0;
    if (mlm) c->n_labels = 0;

    int nt = enc_tensors(c, NULL, 0), rc = LP_OK;
    lp_param_tensor *t = malloc((size_t)nt * sizeof *t);
    size_t total = 0;
    if (t) {
        enc_tensors(c, t, nt);
        total = t[nt - 1].offset + t[nt - 1].size;
    }
    float *p = t ? calloc(total, sizeof *p) : NULL;
    if (!t || !p || (rc = lp_model_own(m, p))) {
        if (!rc) free(p);
        rc = lp_error(LP_ENOMEM, "out of memory for %zu parameters", total);
        goto fail;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    m->path = strdup("(trainable model in memory)");
    m->labels = mlm ? NULL : calloc((size_t)c->n_labels, sizeof *m->labels);
    if (!m->layers || !m->path || (!mlm && !m->labels)) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; !mlm && i < c->n_labels; i++) {
        char name[32];
        snprintf(name, sizeof name, "LABEL_%d", i);
        if (!(m->labels[i] = strdup(name))) {
            rc = lp_error(LP_ENOMEM, "out of memory");
            goto fail;
        }
    }
    snprintf(m->dtype, sizeof m->dtype, "F32");
    m->trainable = p;
    m->n_params = total;
    /* As BertPreTrainedModel._init_weights: N(0, 0.02) weights and embeddings, norms 1, biases 0. */
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    for (int i = 0; i < nt; i++) {
        float *x = p + t[i].offset;
        if (strstr(t[i].name, "LayerNorm.weight"))
            for (size_t j = 0; j < t[i].size; j++) x[j] = 1.0f;
        else if (t[i].ndim == 2)
            for (size_t j = 0; j < t[i].size; j++) x[j] = 0.02f * train_normal(&rng);
    }
    int d = c->d_model, dm = c->d_mlp;
    m->tok_emb = p + t[E_WTE].offset;
    m->pos_emb = p + t[E_WPE].offset;
    m->type_emb = p + t[E_TYPE].offset;
    m->emb_ln_w = p + t[E_LN_W].offset;
    m->emb_ln_b = p + t[E_LN_B].offset;
    for (int l = 0; l < c->n_layer; l++) {
        lp_layer *L = &m->layers[l];
        L->q = linear_at(p, t, layer_t(c, l, Q_W), d, d);
        L->k = linear_at(p, t, layer_t(c, l, K_W), d, d);
        L->v = linear_at(p, t, layer_t(c, l, V_W), d, d);
        L->o = linear_at(p, t, layer_t(c, l, O_W), d, d);
        L->up = linear_at(p, t, layer_t(c, l, UP_W), d, dm);
        L->down = linear_at(p, t, layer_t(c, l, DOWN_W), dm, d);
        L->ln1_w = p + t[layer_t(c, l, LN1_W)].offset;
        L->ln1_b = p + t[layer_t(c, l, LN1_B)].offset;
        L->ln2_w = p + t[layer_t(c, l, LN2_W)].offset;
        L->ln2_b = p + t[layer_t(c, l, LN2_B)].offset;
    }
    if (mlm) {
        m->head.dense = linear_at(p, t, head_t(c, MLM_DENSE_W), d, d);
        m->head.act = LP_HEAD_ACT_GELU_ERF;
        m->head.ln_w = p + t[head_t(c, MLM_LN_W)].offset;
        m->head.ln_b = p + t[head_t(c, MLM_LN_B)].offset;
        m->head.ln_eps = c->norm_eps;
        m->unembed = lp_linear_of(m->tok_emb, p + t[head_t(c, MLM_BIAS)].offset, d, c->vocab, d, true);
    } else {
        m->head.dense = linear_at(p, t, head_t(c, CLS_POOL_W), d, d);
        m->head.act = LP_HEAD_ACT_TANH;
        m->unembed = linear_at(p, t, head_t(c, CLS_OUT_W), d, c->n_labels);
    }
    free(t);
    *out = m;
    return LP_OK;
fail:
    free(t);
    lp_model_free(m);
    return rc;
}

int lp_train_set_labels(lp_model *m, const char *const *names, int n) {
    if (!m->trainable || m->cfg.head != LP_HEAD_CLASSIFIER || n != m->cfg.n_labels)
        return lp_error(LP_EINVAL, "labels: the model is not a trainable classifier of %d labels", n);
    for (int i = 0; i < n; i++) {
        char *s = strdup(names[i]);
        if (!s) return lp_error(LP_ENOMEM, "out of memory");
        free(m->labels[i]);
        m->labels[i] = s;
    }
    return LP_OK;
}

/* ---- forward and backward over a batch ---- */

typedef struct {
    int Bmax, Tmax;
    float *arena;
    int *rows, *rtgt;             /* (N): the head's rows (positions of resid[L]) and their targets */
    float *emb, *emb_scale;       /* (N, d), (N): summed embeddings, their norm's 1/std */
    float *resid;                 /* (L + 1, N, d): resid[l] enters layer l */
    float *q, *k, *v, *z;         /* (L, N, d) */
    float *pattern;               /* (L, B, H, T, T) */
    float *attn_out, *resid_mid;  /* (L, N, d) */
    float *ln1_scale, *ln2_scale; /* (L, N) */
    float *mlp_pre, *mlp_post;    /* (L, N, dm) */
    float *mlp_out;               /* (L, N, d) */
    float *tmp;                   /* (N, d): the forward's copies of what attention and the MLP read; a sum */
    float *hx, *ha, *hu, *hh;     /* (N, d): the head's input, pre-activation, activation, normed */
    float *h_scale;               /* (N) */
    float *logits;                /* (N, W): softmax, then the logits' gradient */
    float *d_resid, *d_s, *d_mid; /* (N, d) */
    float *d_q, *d_k, *d_v, *d_z; /* (N, d) */
    float *d_pre, *d_post;        /* (N, dm) */
    float *dP;                    /* (T, T) */
} enc_work;

static size_t enc_layout(enc_work *w, float *base, const lp_config *c, int B, int T) {
    size_t L = c->n_layer, N = (size_t)B * T, d = c->d_model, dm = c->d_mlp, at = 0;
    size_t W = c->head == LP_HEAD_MLM ? (size_t)c->vocab : (size_t)c->n_labels;
#define SLICE(field, n) (w->field = base ? base + at : NULL, at += (n))
    SLICE(emb, N * d);
    SLICE(emb_scale, N);
    SLICE(resid, (L + 1) * N * d);
    SLICE(q, L * N * d);
    SLICE(k, L * N * d);
    SLICE(v, L * N * d);
    SLICE(z, L * N * d);
    SLICE(pattern, L * N * c->n_head * T);
    SLICE(attn_out, L * N * d);
    SLICE(resid_mid, L * N * d);
    SLICE(ln1_scale, L * N);
    SLICE(ln2_scale, L * N);
    SLICE(mlp_pre, L * N * dm);
    SLICE(mlp_post, L * N * dm);
    SLICE(mlp_out, L * N * d);
    SLICE(tmp, N * d);
    SLICE(hx, N * d);
    SLICE(ha, N * d);
    SLICE(hu, N * d);
    SLICE(hh, N * d);
    SLICE(h_scale, N);
    SLICE(logits, N * W);
    SLICE(d_resid, N * d);
    SLICE(d_s, N * d);
    SLICE(d_mid, N * d);
    SLICE(d_q, N * d);
    SLICE(d_k, N * d);
    SLICE(d_v, N * d);
    SLICE(d_z, N * d);
    SLICE(d_pre, N * dm);
    SLICE(d_post, N * dm);
    SLICE(dP, (size_t)T * T);
#undef SLICE
    return at;
}

static void enc_work_free(void *wv);

static int enc_work_new(void **out, const lp_config *c, int B, int T) {
    enc_work *w = calloc(1, sizeof *w);
    size_t n = enc_layout(w, NULL, c, B, T);
    if (w) {
        w->Bmax = B, w->Tmax = T;
        w->arena = malloc(n * sizeof *w->arena);
        w->rows = malloc((size_t)B * T * sizeof *w->rows);
        w->rtgt = malloc((size_t)B * T * sizeof *w->rtgt);
    }
    if (!w || !w->arena || !w->rows || !w->rtgt) {
        enc_work_free(w);
        return lp_error(LP_ENOMEM, "out of memory: a batch of %d x %d tokens needs %.1f MB", B, T,
                        (double)n * sizeof(float) / 1e6);
    }
    *out = w;
    return LP_OK;
}

static void enc_work_free(void *wv) {
    enc_work *w = wv;
    if (!w) return;
    free(w->arena);
    free(w->rows);
    free(w->rtgt);
    free(w);
}

/* dw (out, in) += dy (n, out)^T x (n, in); db (out) += the column sums of dy: nn.Linear's. */
static void linear_t_weight_backward(float *dw, float *db, const float *x, const float *dy, int n, int in, int out) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
    for (int j = 0; j < out; j++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += dy[(size_t)i * out + j];
        db[j] += (float)s;
    }
}

static double forward(enc_work *w, const lp_model *m, const int *ids, const int *tgt, int B, int T, int *R) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, H = c->n_head, W = c->head == LP_HEAD_MLM ? c->vocab : c->n_labels;
    size_t N = (size_t)B * T, Nd = N * d, dm = c->d_mlp;
    for (int b = 0; b < B; b++) lp_embed_sum(w->emb + (size_t)b * T * d, m, ids + (size_t)b * T, NULL, 0, T);
    lp_norm(w->resid, w->emb_scale, w->emb, m->emb_ln_w, m->emb_ln_b, (int)N, d, LP_NORM_LAYERNORM, c->norm_eps);
    for (int l = 0; l < c->n_layer; l++) {
        size_t L = l;
        for (int b = 0; b < B; b++) {
            size_t r = (size_t)b * T, rd = r * d, rm = r * dm;
            lp_layer_io io = {
                .resid_in = w->resid + L * Nd + rd, .ln1 = w->tmp + rd, .ln1_scale = w->ln1_scale + L * N + r,
                .q = w->q + L * Nd + rd, .k = w->k + L * Nd + rd, .v = w->v + L * Nd + rd,
                .pattern = w->pattern + (L * N + r) * H * T, .pattern_ld = T, .z = w->z + L * Nd + rd,
                .attn_out = w->attn_out + L * Nd + rd, .resid_mid = w->resid_mid + L * Nd + rd,
                .ln2 = w->tmp + rd, .ln2_scale = w->ln2_scale + L * N + r,
                .mlp_pre = w->mlp_pre + L * N * dm + rm, .mlp_post = w->mlp_post + L * N * dm + rm,
                .mlp_out = w->mlp_out + L * Nd + rd, .resid_out = w->resid + (L + 1) * Nd + rd,
            };
            lp_layer_forward(m, l, &io, NULL, NULL, 0, T);
        }
    }
    /* The head reads the masked positions (masked LM) or each sequence's first ([CLS]). */
    int n = 0;
    for (size_t i = 0; i < N; i++)
        if (tgt[i] >= 0 && (c->head == LP_HEAD_MLM || i % (size_t)T == 0)) w->rows[n] = (int)i, w->rtgt[n++] = tgt[i];
    *R = n;
    const float *top = w->resid + (size_t)c->n_layer * Nd;
    for (int r = 0; r < n; r++) memcpy(w->hx + (size_t)r * d, top + (size_t)w->rows[r] * d, (size_t)d * sizeof(float));
    lp_linear_forward(w->ha, w->hx, &m->head.dense, n);
    for (size_t i = 0; i < (size_t)n * d; i++) w->hu[i] = (float)lp_head_act_value(m->head.act, w->ha[i]);
    const float *h = w->hu;
    if (m->head.ln_w) {
        lp_norm(w->hh, w->h_scale, w->hu, m->head.ln_w, m->head.ln_b, n, d, LP_NORM_LAYERNORM, m->head.ln_eps);
        h = w->hh;
    }
    lp_linear_forward(w->logits, h, &m->unembed, n);
    /* The softmax in place, exponentials once in float; the loss's sums in double. */
    double loss = 0.0;
    for (int r = 0; r < n; r++) {
        float *row = w->logits + (size_t)r * W, mx = row[0];
        for (int j = 1; j < W; j++)
            if (row[j] > mx) mx = row[j];
        loss += mx - row[w->rtgt[r]];
        double sum = 0.0;
        for (int j = 0; j < W; j++) sum += (row[j] = expf(row[j] - mx));
        loss += log(sum);
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < W; j++) row[j] *= inv;
    }
    return loss;
}

static void backward(enc_work *w, const lp_model *m, const int *ids, int B, int T, int R, float *grad,
                     const lp_param_tensor *t, float inv_n) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, dm = c->d_mlp, W = c->head == LP_HEAD_MLM ? c->vocab : c->n_labels, n = B * T;
    size_t N = n, Nd = N * d;
    bool mlm = c->head == LP_HEAD_MLM;
    memset(grad, 0, m->n_params * sizeof *grad);
    for (int r = 0; r < R; r++) {
        float *row = w->logits + (size_t)r * W;
        row[w->rtgt[r]] -= 1.0f;
        for (int j = 0; j < W; j++) row[j] *= inv_n;
    }
    /* The output layer: the tied word embeddings (masked LM) or the classifier. */
    const float *h = mlm ? w->hh : w->hu;
    float *g_out = grad + t[mlm ? E_WTE : head_t(c, CLS_OUT_W)].offset;
    float *g_out_b = grad + t[mlm ? head_t(c, MLM_BIAS) : head_t(c, CLS_OUT_B)].offset;
    if (R > 0) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, W, d, R, 1.0f, w->logits, W, h, d, 1.0f, g_out, d);
    for (int j = 0; j < W; j++) {
        double s = 0.0;
        for (int r = 0; r < R; r++) s += w->logits[(size_t)r * W + j];
        g_out_b[j] += (float)s;
    }
    float *d_h = w->d_s, *d_u = w->d_mid;
    linear_backward(d_h, w->logits, &m->unembed, R, 0.0f);
    if (mlm) {
        norm_weight_backward(grad + t[head_t(c, MLM_LN_W)].offset, grad + t[head_t(c, MLM_LN_B)].offset, d_h, w->hu,
                             w->h_scale, R, d);
        memset(d_u, 0, (size_t)R * d * sizeof *d_u);
        norm_backward(d_u, d_h, w->hu, w->h_scale, m->head.ln_w, R, d, LP_NORM_LAYERNORM);
    } else {
        memcpy(d_u, d_h, (size_t)R * d * sizeof *d_u);
    }
    for (size_t i = 0; i < (size_t)R * d; i++) d_u[i] = (float)(d_u[i] * lp_head_act_deriv(m->head.act, w->ha[i]));
    int dense = head_t(c, mlm ? MLM_DENSE_W : CLS_POOL_W);
    linear_t_weight_backward(grad + t[dense].offset, grad + t[dense + 1].offset, w->hx, d_u, R, d, d);
    linear_backward(d_h, d_u, &m->head.dense, R, 0.0f);
    memset(w->d_resid, 0, Nd * sizeof *w->d_resid);
    for (int r = 0; r < R; r++) {
        float *dr = w->d_resid + (size_t)w->rows[r] * d;
        for (int j = 0; j < d; j++) dr[j] += d_h[(size_t)r * d + j];
    }

    for (int l = c->n_layer - 1; l >= 0; l--) {
        const lp_layer *L = &m->layers[l];
        size_t ll = l;
#define G(k) (grad + t[layer_t(c, l, (k))].offset)
        const float *in = w->resid + ll * Nd, *mid = w->resid_mid + ll * Nd, *attn = w->attn_out + ll * Nd;
        const float *mlp = w->mlp_out + ll * Nd, *pre = w->mlp_pre + ll * N * dm, *post = w->mlp_post + ll * N * dm;
        const float *s1 = w->ln1_scale + ll * N, *s2 = w->ln2_scale + ll * N;
        /* resid_out = LN2(mid + mlp_out). */
        for (size_t i = 0; i < Nd; i++) w->tmp[i] = mid[i] + mlp[i];
        norm_weight_backward(G(LN2_W), G(LN2_B), w->d_resid, w->tmp, s2, n, d);
        memset(w->d_s, 0, Nd * sizeof *w->d_s);
        norm_backward(w->d_s, w->d_resid, w->tmp, s2, L->ln2_w, n, d, LP_NORM_LAYERNORM);
        linear_t_weight_backward(G(DOWN_W), G(DOWN_B), post, w->d_s, n, dm, d);
        linear_backward(w->d_post, w->d_s, &L->down, n, 0.0f);
        for (size_t i = 0; i < N * dm; i++)
            w->d_pre[i] = (float)(w->d_post[i] * lp_head_act_deriv(LP_HEAD_ACT_GELU_ERF, pre[i]));
        linear_t_weight_backward(G(UP_W), G(UP_B), mid, w->d_pre, n, d, dm);
        memcpy(w->d_mid, w->d_s, Nd * sizeof *w->d_mid);
        linear_backward(w->d_mid, w->d_pre, &L->up, n, 1.0f);
        /* resid_mid = LN1(in + attn_out). */
        for (size_t i = 0; i < Nd; i++) w->tmp[i] = in[i] + attn[i];
        norm_weight_backward(G(LN1_W), G(LN1_B), w->d_mid, w->tmp, s1, n, d);
        memset(w->d_s, 0, Nd * sizeof *w->d_s);
        norm_backward(w->d_s, w->d_mid, w->tmp, s1, L->ln1_w, n, d, LP_NORM_LAYERNORM);
        linear_t_weight_backward(G(O_W), G(O_B), w->z + ll * Nd, w->d_s, n, d, d);
        linear_backward(w->d_z, w->d_s, &L->o, n, 0.0f);
        tape_layer ta = {.q = w->q + ll * Nd, .k = w->k + ll * Nd, .v = w->v + ll * Nd,
                         .pattern = w->pattern + ll * N * c->n_head * T, .p_ld = T, .p_hs = (long)T * T};
        grad_layer ga = {.d_q = w->d_q, .d_z = w->d_z, .d_k = w->d_k, .d_v = w->d_v, .dP = w->dP};
        memset(w->d_k, 0, Nd * sizeof *w->d_k);
        memset(w->d_v, 0, Nd * sizeof *w->d_v);
        attention_backward(&ga, &ta, c, B, T);
        linear_t_weight_backward(G(Q_W), G(Q_B), in, w->d_q, n, d, d);
        linear_t_weight_backward(G(K_W), G(K_B), in, w->d_k, n, d, d);
        linear_t_weight_backward(G(V_W), G(V_B), in, w->d_v, n, d, d);
        memcpy(w->d_resid, w->d_s, Nd * sizeof *w->d_resid);
        linear_backward(w->d_resid, w->d_q, &L->q, n, 1.0f);
        linear_backward(w->d_resid, w->d_k, &L->k, n, 1.0f);
        linear_backward(w->d_resid, w->d_v, &L->v, n, 1.0f);
#undef G
    }
    /* resid[0] = LN(word + position + type 0). */
    norm_weight_backward(grad + t[E_LN_W].offset, grad + t[E_LN_B].offset, w->d_resid, w->emb, w->emb_scale, n, d);
    memset(w->d_s, 0, Nd * sizeof *w->d_s);
    norm_backward(w->d_s, w->d_resid, w->emb, w->emb_scale, m->emb_ln_w, n, d, LP_NORM_LAYERNORM);
    float *g_wte = grad + t[E_WTE].offset, *g_wpe = grad + t[E_WPE].offset, *g_type = grad + t[E_TYPE].offset;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            const float *dr = w->d_s + ((size_t)b * T + i) * d;
            float *gt = g_wte + (size_t)ids[(size_t)b * T + i] * d, *gp = g_wpe + (size_t)i * d;
            for (int j = 0; j < d; j++) {
                gt[j] += dr[j];
                gp[j] += dr[j];
                g_type[j] += dr[j];
            }
        }
}

static double enc_step(void *wv, const lp_model *m, const int *ids, const int *tgt, int B, int T, float *grad,
                       const lp_param_tensor *t, float inv_n) {
    enc_work *w = wv;
    enc_layout(w, w->arena, &m->cfg, B, T); /* within the arena: B <= Bmax, T <= Tmax */
    int R;
    double loss = forward(w, m, ids, tgt, B, T, &R);
    if (grad) backward(w, m, ids, B, T, R, grad, t, inv_n);
    return loss;
}

/* ---- examples and batches ---- */

typedef struct {
    int n;
    const int **ex;   /* (n): each example's header (length, label, ids) */
    int *by_len;      /* (n): example indices by length */
    int *first;       /* (T_max + 2): by_len[first[L] .. first[L + 1]) have length L */
} enc_examples;

static void enc_examples_free(void *xv) {
    enc_examples *x = xv;
    if (!x) return;
    free(x->ex);
    free(x->by_len);
    free(x->first);
    free(x);
}

static int enc_examples_new(void **out, const lp_model *m, const int *data, size_t n, const lp_train_options *o,
                            const char *what) {
    *out = NULL;
    int T_max = o->T;
    const lp_config *c = &m->cfg;
    bool mlm = c->head == LP_HEAD_MLM;
    int count = 0;
    for (size_t i = 0; i + 2 <= n; count++) {
        int len = data[i], label = data[i + 1];
        if (len < 1 || len > T_max || (size_t)len > n - i - 2)
            return lp_error(LP_EINVAL, "the %s data's example %d has %d tokens: use 1..%d (the sequence length)", what,
                            count, len, T_max);
        if (mlm ? label != -1 : label < 0 || label >= c->n_labels)
            return lp_error(LP_EINVAL, "the %s data's example %d has label %d: %s", what, count, label,
                            mlm ? "a masked LM's examples have none (-1)" : "use 0 .. the labels - 1");
        for (int j = 0; j < len; j++)
            if (data[i + 2 + j] < 0 || data[i + 2 + j] >= c->vocab)
                return lp_error(LP_EINVAL, "the %s data's example %d holds token id %d, outside the vocabulary (0..%d)",
                                what, count, data[i + 2 + j], c->vocab - 1);
        i += 2 + (size_t)len;
        if (i + 2 > n && i != n) return lp_error(LP_EINVAL, "the %s data ends inside an example", what);
    }
    if (count == 0) return lp_error(LP_EINVAL, "the %s data holds no example", what);
    enc_examples *x = calloc(1, sizeof *x);
    if (x) {
        x->n = count;
        x->ex = malloc((size_t)count * sizeof *x->ex);
        x->by_len = malloc((size_t)count * sizeof *x->by_len);
        x->first = calloc((size_t)T_max + 2, sizeof *x->first);
    }
    if (!x || !x->ex || !x->by_len || !x->first) {
        enc_examples_free(x);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    size_t at = 0;
    for (int e = 0; e < count; e++) {
        x->ex[e] = data + at;
        x->first[data[at] + 1]++;
        at += 2 + (size_t)data[at];
    }
    for (int L = 1; L <= T_max + 1; L++) x->first[L] += x->first[L - 1];
    int *fill = calloc((size_t)T_max + 1, sizeof *fill);
    if (!fill) {
        enc_examples_free(x);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    for (int e = 0; e < count; e++) {
        int L = x->ex[e][0];
        x->by_len[x->first[L] + fill[L]++] = e;
    }
    free(fill);
    *out = x;
    return LP_OK;
}

static int uniform_int(lp_rng *rng, int n) {
    int i = (int)(lp_rng_uniform(rng) * n);
    return i >= n ? n - 1 : i;
}

static int enc_draw(int *ids, int *tgt, const void *xv, const lp_model *m, const lp_train_options *o, uint64_t seed,
                    int step) {
    const enc_examples *x = xv;
    const lp_config *c = &m->cfg;
    lp_rng rng;
    lp_rng_seed(&rng, seed * 0x9e3779b97f4a7c15ull + (uint64_t)step + 1);
    /* One length per batch (there is no padding): that of an example drawn at random. */
    int T = x->ex[uniform_int(&rng, x->n)][0], lo = x->first[T], span = x->first[T + 1] - lo, chosen = 0;
    for (int b = 0; b < o->B; b++) {
        const int *e = x->ex[x->by_len[lo + uniform_int(&rng, span)]];
        int *row = ids + (size_t)b * T, *tr = tgt + (size_t)b * T;
        memcpy(row, e + 2, (size_t)T * sizeof *row);
        for (int i = 0; i < T; i++) tr[i] = -1;
        if (c->head != LP_HEAD_MLM) {
            tr[0] = e[1];
            continue;
        }
        /* BERT's masking: each ordinary token is chosen with mask_prob; a chosen one becomes
         * [MASK] 80% of the time, a random ordinary token 10%, itself 10%. */
        for (int i = 0; i < T; i++) {
            if (row[i] < o->n_special || lp_rng_uniform(&rng) >= o->mask_prob) continue;
            tr[i] = row[i];
            chosen++;
            double u = lp_rng_uniform(&rng);
            if (u < 0.8) row[i] = o->mask_id;
            else if (u < 0.9) row[i] = o->n_special + uniform_int(&rng, c->vocab - o->n_special);
        }
    }
    /* A batch with nothing chosen has no loss: choose its first ordinary token. */
    for (int i = 0; c->head == LP_HEAD_MLM && !chosen && i < o->B * T; i++)
        if (ids[i] >= o->n_special) tgt[i] = ids[i], ids[i] = o->mask_id, chosen = 1;
    return T;
}

/* ---- saving ---- */

double train_short_decimal(float x) {
    char buf[32];
    for (int digits = 1; digits < 10; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    return strtod(buf, NULL);
}

/* config.json's object (BertForMaskedLM or BertForSequenceClassification), or NULL. */
static json_t *config_json(const lp_model *m) {
    const lp_config *c = &m->cfg;
    bool mlm = c->head == LP_HEAD_MLM;
    json_t *j = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:f,s:f,s:f,s:f,s:i,s:s,s:b,s:s}",
                          "architectures", c->arch, "model_type", "bert", "vocab_size", c->vocab, "hidden_size",
                          c->d_model, "num_hidden_layers", c->n_layer, "num_attention_heads", c->n_head,
                          "intermediate_size", c->d_mlp, "max_position_embeddings", c->n_ctx, "type_vocab_size",
                          c->type_vocab, "hidden_act", "gelu", "layer_norm_eps", train_short_decimal(c->norm_eps),
                          "initializer_range", 0.02, "hidden_dropout_prob", 0.0, "attention_probs_dropout_prob", 0.0,
                          "pad_token_id", 0, "position_embedding_type", "absolute", "tie_word_embeddings", true,
                          "torch_dtype", "float32");
    if (j && !mlm) {
        json_t *id2 = json_object(), *l2id = json_object();
        for (int i = 0; i < c->n_labels; i++) {
            char key[16];
            snprintf(key, sizeof key, "%d", i);
            json_object_set_new(id2, key, json_string(m->labels[i]));
            json_object_set_new(l2id, m->labels[i], json_integer(i));
        }
        json_object_set_new(j, "id2label", id2);
        json_object_set_new(j, "label2id", l2id);
        json_object_set_new(j, "problem_type", json_string("single_label_classification"));
    }
    return j;
}

static int enc_save(const lp_model *m, const char *dir) { return train_save_hf(m, dir, config_json(m)); }

int lp_train_start_from(lp_model *m, const char *dir) {
    const lp_config *c = &m->cfg;
    if (!m->trainable || c->head == LP_HEAD_LM)
        return lp_error(LP_EINVAL, "only a trainable BERT starts from another's weights");
    char path[4096];
    lp_safetensors *st;
    int rc = lp_path_join(path, sizeof path, dir, "model.safetensors");
    if (rc || (rc = lp_st_open(&st, path))) return rc;
    int nt = enc_tensors(c, NULL, 0);
    lp_param_tensor *t = malloc((size_t)nt * sizeof *t);
    float *tmp = malloc(m->n_params * sizeof *tmp);
    if (!t || !tmp) rc = lp_error(LP_ENOMEM, "out of memory");
    else {
        enc_tensors(c, t, nt);
        memcpy(tmp, m->trainable, m->n_params * sizeof *tmp);
    }
    /* The encoder (bert.embeddings, bert.encoder) must all be there, as this model has them;
     * a head is taken when the other model has the same one, else it keeps its initial values. */
    for (int i = 0; i < nt && !rc; i++) {
        const lp_st_tensor *x = lp_st_find(st, t[i].name);
        bool encoder = strncmp(t[i].name, "bert.embeddings.", 16) == 0 || strncmp(t[i].name, "bert.encoder.", 13) == 0;
        bool fits = x && x->dtype == LP_DT_F32 && x->nbytes == t[i].size * sizeof(float) && x->ndim == t[i].ndim &&
                    x->shape[0] == t[i].shape[0];
        if (encoder && !fits)
            rc = lp_error(LP_EFORMAT, "%s: %s %s: --from needs a BERT that loupe trained, of this shape (F32 %ld x %ld)",
                          path, t[i].name, x ? "has another shape or type" : "is missing", t[i].shape[0],
                          t[i].shape[1] ? t[i].shape[1] : 1);
        else if (fits) {
            memcpy(tmp + t[i].offset, x->data, x->nbytes);
        }
    }
    if (!rc) memcpy(m->trainable, tmp, m->n_params * sizeof *tmp);
    free(t);
    free(tmp);
    lp_st_free(st);
    return rc;
}

/* ---- what train.c calls ---- */

static int enc_check(const lp_model *m, const int *ids, const int *tgt, int B, int T, int *targets) {
    const lp_config *c = &m->cfg;
    if (B < 1 || T < 1 || T > c->n_ctx)
        return lp_error(LP_EINVAL, "a batch of %d x %d tokens: the model takes 1..%d tokens", B, T, c->n_ctx);
    int W = c->head == LP_HEAD_MLM ? c->vocab : c->n_labels;
    *targets = 0;
    for (size_t i = 0; i < (size_t)B * T; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return lp_error(LP_EINVAL, "token id %d is outside the vocabulary (0..%d)", ids[i], c->vocab - 1);
        bool read = c->head == LP_HEAD_MLM || i % (size_t)T == 0;
        if (read && tgt[i] >= W) return lp_error(LP_EINVAL, "target %d is outside 0..%d", tgt[i], W - 1);
        *targets += read && tgt[i] >= 0;
    }
    if (!*targets) return lp_error(LP_EINVAL, "the batch has no target (every one is -1)");
    return LP_OK;
}

static int enc_max_width(const lp_train_options *o) { return o->T; }

const train_arch ENC_ARCH = {enc_tensors, enc_model_new, enc_save, enc_check, enc_work_new, enc_work_free, enc_step,
                             enc_examples_new, enc_examples_free, enc_max_width, enc_draw};
