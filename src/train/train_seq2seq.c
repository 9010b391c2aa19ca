/* Training T5 (T5ForConditionalGeneration): its parameter block in Hugging Face's names and
 * in the order of grad_seq2seq.h's gradient block (so that lp_grad_seq2seq_seeded's block is
 * the parameters' gradient as it stands), initialised as T5PreTrainedModel._init_weights, the
 * teacher-forced cross-entropy over each example's target, and saving. The forward is the
 * inference one (lp_run_new_seq2seq) and the backward lp_grad_seq2seq_seeded, example by
 * example, so that a model trains on exactly the function loupe later inspects and nothing
 * is padded; train.c runs the loop, AdamW and the checkpoints. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/grad_seq2seq.h"
#include "loupe/run.h"
#include "train/train_impl.h"

/* ---- the parameter block ---- */

/* The two stacks' configs of a T5 of shape c: the decoder's is the model's (c itself), the
 * encoder's the same sizes, bidirectional, without cross-attention or head (as t5.c loads). */
static void stack_configs(lp_config *dec, lp_config *enc, const lp_config *c) {
    *dec = *c;
    snprintf(dec->arch, sizeof dec->arch, "T5ForConditionalGeneration");
    snprintf(dec->family, sizeof dec->family, "t5");
    dec->n_kv_head = c->n_head;
    dec->d_head = c->d_model / c->n_head;
    dec->mlp = c->mlp == LP_MLP_GEGLU ? LP_MLP_GEGLU : LP_MLP_RELU;
    if (!(dec->norm_eps > 0.0f)) dec->norm_eps = 1e-6f;
    if (dec->rel_buckets < 4) dec->rel_buckets = 32;
    if (dec->rel_max_distance <= dec->rel_buckets / 2) dec->rel_max_distance = 128;
    dec->norm = LP_NORM_RMSNORM;
    dec->pos = LP_POS_RELATIVE;
    dec->unscaled_attn = true;
    dec->qkv_bias = dec->mlp_bias = dec->attn_only = dec->post_norm = dec->emb_norm = false;
    dec->type_vocab = dec->pos_offset = dec->pos_pad_id = dec->n_labels = 0;
    dec->start_id = 0; /* <pad>, as T5's decoder_start_token_id */
    dec->eos_id = 1;   /* </s> */
    dec->causal = dec->cross_attn = true;
    dec->head = LP_HEAD_LM;
    if (dec->enc_layers < 1) dec->enc_layers = c->n_layer;
    *enc = *dec;
    enc->n_layer = dec->enc_layers;
    snprintf(enc->arch, sizeof enc->arch, "T5ForConditionalGeneration (encoder)");
    enc->causal = enc->cross_attn = false;
    enc->head = LP_HEAD_NONE;
}

static int s2s_tensors(const lp_config *c, lp_param_tensor *out, int cap) {
    lp_model dec = {0}, enc = {0};
    stack_configs(&dec.cfg, &enc.cfg, c);
    dec.encoder = &enc;
    int n = lp_t5_grads_tensors(NULL, &dec, NULL, 0);
    if (!out) return n;
    lp_t5_grad_tensor *g = malloc((size_t)n * sizeof *g);
    if (!g) return -1;
    lp_t5_grads_tensors(NULL, &dec, g, n);
    size_t at = 0;
    for (int i = 0; i < n && i < cap; i++) {
        bool vector = strstr(g[i].name, "layer_norm") != NULL;
        /* AdamW decays matrices and embeddings, not norms nor the relative bias table (biases
         * by position: decay would pull them towards attending everywhere alike). */
        bool decay = !vector && !strstr(g[i].name, "relative_attention_bias");
        out[i] = (lp_param_tensor){.offset = at, .size = g[i].n, .ndim = vector ? 1 : 2,
                                   .shape = {g[i].rows, vector ? 0 : g[i].cols}, .decay = decay};
        snprintf(out[i].name, sizeof out[i].name, "%s", g[i].name);
        at += g[i].n;
    }
    free(g);
    return n;
}

/* The table of c, malloc'd (NULL: out of memory); *n its length, *total the block's floats. */
static lp_param_tensor *table_new(const lp_config *c, int *n, size_t *total) {
    *n = s2s_tensors(c, NULL, 0);
    lp_param_tensor *t = malloc((size_t)*n * sizeof *t);
    if (!t || s2s_tensors(c, t, *n) != *n) {
        free(t);
        return NULL;
    }
    *total = t[*n - 1].offset + t[*n - 1].size;
    return t;
}

static float *tensor_at(float *p, const lp_param_tensor *t, int nt, const char *name) {
    for (int i = 0; i < nt; i++)
        if (strcmp(t[i].name, name) == 0) return p + t[i].offset;
    return NULL; /* not reached: every name asked for is one s2s_tensors made */
}

/* An nn.Linear (out, in) of the block, as t5.c's loader points one into a file. */
static lp_linear linear(const float *w, int in, int out) { return lp_linear_of(w, NULL, in, out, in, true); }

/* Points one stack's layers, relative bias table and final norm into the block. */
static void point_stack(lp_model *sm, float *p, const lp_param_tensor *t, int nt, const char *stack) {
    const lp_config *c = &sm->cfg;
    int d = c->d_model, q = c->n_head * c->d_head, dm = c->d_mlp, ff = c->cross_attn ? 2 : 1;
    char n[160];
#define AT(...) (snprintf(n, sizeof n, __VA_ARGS__), tensor_at(p, t, nt, n))
    for (int l = 0; l < c->n_layer; l++) {
        lp_layer *L = &sm->layers[l];
        L->ln1_w = AT("%s.block.%d.layer.0.layer_norm.weight", stack, l);
        L->q = linear(AT("%s.block.%d.layer.0.SelfAttention.q.weight", stack, l), d, q);
        L->k = linear(AT("%s.block.%d.layer.0.SelfAttention.k.weight", stack, l), d, q);
        L->v = linear(AT("%s.block.%d.layer.0.SelfAttention.v.weight", stack, l), d, q);
        L->o = linear(AT("%s.block.%d.layer.0.SelfAttention.o.weight", stack, l), q, d);
        if (c->cross_attn) {
            L->lnx_w = AT("%s.block.%d.layer.1.layer_norm.weight", stack, l);
            L->xq = linear(AT("%s.block.%d.layer.1.EncDecAttention.q.weight", stack, l), d, q);
            L->xk = linear(AT("%s.block.%d.layer.1.EncDecAttention.k.weight", stack, l), d, q);
            L->xv = linear(AT("%s.block.%d.layer.1.EncDecAttention.v.weight", stack, l), d, q);
            L->xo = linear(AT("%s.block.%d.layer.1.EncDecAttention.o.weight", stack, l), q, d);
        }
        L->ln2_w = AT("%s.block.%d.layer.%d.layer_norm.weight", stack, l, ff);
        if (lp_mlp_gated(c)) {
            L->gate = linear(AT("%s.block.%d.layer.%d.DenseReluDense.wi_0.weight", stack, l, ff), d, dm);
            L->up = linear(AT("%s.block.%d.layer.%d.DenseReluDense.wi_1.weight", stack, l, ff), d, dm);
        } else {
            L->up = linear(AT("%s.block.%d.layer.%d.DenseReluDense.wi.weight", stack, l, ff), d, dm);
        }
        L->down = linear(AT("%s.block.%d.layer.%d.DenseReluDense.wo.weight", stack, l, ff), dm, d);
    }
    sm->rel_bias = AT("%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", stack);
    sm->lnf_w = AT("%s.final_layer_norm.weight", stack);
    sm->tok_emb = AT("shared.weight");
#undef AT
}

/* The std of a tensor's initial values, as T5PreTrainedModel._init_weights (modeling_t5.py)
 * draws them with initializer_factor 1: the embeddings (shared, and lm_head untied) N(0, 1);
 * attention q N(0, (d_model d_kv)^-1/2), k and v N(0, d_model^-1/2), o N(0, (heads
 * d_kv)^-1/2); the feed-forward's wi (wi_0, wi_1) N(0, d_model^-1/2) and wo N(0, d_ff^-1/2);
 * the relative bias table N(0, d_model^-1/2); every norm's weight 1 (returned as 0: not drawn). */
static double init_std(const char *name, const lp_config *c) {
    double d = c->d_model, kv = c->d_head, H = c->n_head;
    const char *last = strrchr(name, '.'), *part = last;
    while (part > name && part[-1] != '.') part--; /* the module's last component: "q", "wi_0", ... */
    size_t len = (size_t)(last - part);
#define IS(s) (len == strlen(s) && strncmp(part, s, len) == 0)
    if (strstr(name, "layer_norm")) return 0.0;
    if (IS("shared") || IS("lm_head")) return 1.0;
    if (IS("relative_attention_bias")) return 1.0 / sqrt(d);
    if (IS("q")) return 1.0 / sqrt(d * kv);
    if (IS("k") || IS("v")) return 1.0 / sqrt(d);
    if (IS("o")) return 1.0 / sqrt(H * kv);
    if (IS("wo")) return 1.0 / sqrt((double)c->d_mlp);
    return 1.0 / sqrt(d); /* wi, wi_0, wi_1 */
#undef IS
}

static int s2s_model_new(lp_model **out, const lp_config *cfg, uint64_t seed) {
    *out = NULL;
    if (cfg->attn_only) return lp_error(LP_EINVAL, "a T5 has feed-forward layers: --attn-only is for GPT-2 models");
    if (cfg->tied_unembed)
        return lp_error(LP_EINVAL, "a trainable T5 has its own lm_head (tie_word_embeddings false, as T5 v1.1)");
    lp_model *m = calloc(1, sizeof *m), *e = calloc(1, sizeof *e);
    if (!m || !e) {
        free(m);
        free(e);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    m->encoder = e;
    stack_configs(&m->cfg, &e->cfg, cfg);
    const lp_config *c = &m->cfg;
    int nt = 0, rc = LP_OK;
    size_t total = 0;
    lp_param_tensor *t = table_new(c, &nt, &total);
    float *p = t ? calloc(total, sizeof *p) : NULL;
    if (!t || !p || (rc = lp_model_own(m, p))) {
        if (!rc) free(p);
        rc = lp_error(LP_ENOMEM, "out of memory for %zu parameters", total);
        goto fail;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    e->layers = calloc((size_t)e->cfg.n_layer, sizeof *e->layers);
    m->path = strdup("(trainable model in memory)");
    if (!m->layers || !e->layers || !m->path) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(m->dtype, sizeof m->dtype, "F32");
    snprintf(e->dtype, sizeof e->dtype, "F32");
    m->trainable = p;
    m->n_params = total;
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    for (int i = 0; i < nt; i++) {
        float *x = p + t[i].offset;
        double std = init_std(t[i].name, c);
        for (size_t j = 0; j < t[i].size; j++) x[j] = std > 0 ? (float)(std * train_normal(&rng)) : 1.0f;
    }
    point_stack(e, p, t, nt, "encoder");
    point_stack(m, p, t, nt, "decoder");
    m->unembed = linear(tensor_at(p, t, nt, "lm_head.weight"), c->d_model, c->vocab);
    free(t);
    *out = m;
    return LP_OK;
fail:
    free(t);
    lp_model_free(m);
    return rc;
}

/* ---- batches: one run per example ---- */

/* A batch row (width W) is the example's source length S, its S source ids, then -1s; its
 * targets row is -1 over those 1 + S places, then the target's ids (</s> last), then -1s. The
 * decoder reads the start id and the target but its last id. */
typedef struct {
    const int *src, *labels;
    int S, T;
} row_view;

static row_view row_at(const int *ids, const int *tgt, int W, int b) {
    const int *r = ids + (size_t)b * W, *t = tgt + (size_t)b * W;
    row_view v = {.src = r + 1, .S = r[0], .labels = t + 1 + r[0]};
    while (1 + v.S + v.T < W && v.labels[v.T] >= 0) v.T++;
    return v;
}

static int s2s_check(const lp_model *m, const int *ids, const int *tgt, int B, int W, int *targets) {
    const lp_config *c = &m->cfg;
    if (B < 1 || W < 3)
        return lp_error(LP_EINVAL, "a batch of %d rows of %d ints: a T5 row needs its source length, a source id and "
                                   "a target id", B, W);
    *targets = 0;
    for (int b = 0; b < B; b++) {
        const int *r = ids + (size_t)b * W, *t = tgt + (size_t)b * W;
        if (r[0] < 1 || r[0] > W - 2)
            return lp_error(LP_EINVAL, "row %d: source length %d: use 1..%d (the row's width less 2)", b, r[0], W - 2);
        row_view v = row_at(ids, tgt, W, b);
        for (int i = 0; i < W; i++) {
            bool is_src = i >= 1 && i <= v.S, is_tgt = i > v.S && i <= v.S + v.T;
            if (is_src && (r[i] < 0 || r[i] >= c->vocab))
                return lp_error(LP_EINVAL, "row %d: source id %d is outside the vocabulary (0..%d)", b, r[i],
                                c->vocab - 1);
            if (is_tgt && t[i] >= c->vocab)
                return lp_error(LP_EINVAL, "row %d: target id %d is outside the vocabulary (0..%d)", b, t[i],
                                c->vocab - 1);
            if (!is_tgt && t[i] >= 0)
                return lp_error(LP_EINVAL, "row %d: a target at place %d, outside the one run of targets after the "
                                           "source", b, i);
        }
        if (v.T < 1) return lp_error(LP_EINVAL, "row %d has no target", b);
        *targets += v.T;
    }
    return LP_OK;
}

typedef struct {
    lp_t5_grads *g;  /* the shard's gradient, summed over its rows */
    int *dec;        /* (W): a row's decoder input */
    float *dlogits;  /* (W, V) */
} s2s_work;

static void s2s_work_free(void *wv) {
    s2s_work *w = wv;
    if (!w) return;
    lp_t5_grads_free(w->g);
    free(w->dec);
    free(w->dlogits);
    free(w);
}

static int s2s_work_new(void **out, const lp_config *c, int B, int W) {
    (void)B;
    s2s_work *w = calloc(1, sizeof *w);
    if (w) {
        w->dec = malloc((size_t)W * sizeof *w->dec);
        w->dlogits = malloc((size_t)W * c->vocab * sizeof *w->dlogits);
    }
    if (!w || !w->dec || !w->dlogits) {
        s2s_work_free(w);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    *out = w;
    return LP_OK;
}

/* Each row's run, its loss (-log p of every target id, the logits' log-softmax in double)
 * and, with grad, lp_grad_seq2seq_seeded's gradient of it times inv_n, summed. A run that
 * fails (cancelled, out of memory) makes the loss NaN, which ends training. */
static double s2s_step(void *wv, const lp_model *m, const int *ids, const int *tgt, int B, int W, float *grad,
                       const lp_param_tensor *t, float inv_n) {
    (void)t;
    s2s_work *w = wv;
    int V = m->cfg.vocab;
    if (grad && !w->g && lp_t5_grads_new(&w->g, m)) return NAN;
    if (grad) lp_t5_grads_zero(w->g);
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        row_view v = row_at(ids, tgt, W, b);
        w->dec[0] = m->cfg.start_id;
        memcpy(w->dec + 1, v.labels, (size_t)(v.T - 1) * sizeof *w->dec);
        lp_run *r;
        if (lp_run_new_seq2seq(&r, m, v.src, v.S, w->dec, v.T)) return NAN;
        for (int k = 0; k < v.T; k++) {
            const float *lg = lp_run_logits(r, k);
            float *dl = w->dlogits + (size_t)k * V;
            double mx = lg[0], sum = 0.0;
            for (int j = 1; j < V; j++) mx = fmax(mx, lg[j]);
            for (int j = 0; j < V; j++) sum += exp(lg[j] - mx);
            double lse = mx + log(sum);
            loss += lse - lg[v.labels[k]];
            for (int j = 0; j < V; j++) dl[j] = (float)(exp(lg[j] - lse) * inv_n);
            dl[v.labels[k]] -= inv_n;
        }
        int rc = grad ? lp_grad_seq2seq_seeded(NULL, NULL, w->g, r, w->dlogits) : LP_OK;
        lp_run_free(r);
        if (rc) return NAN;
    }
    if (grad) memcpy(grad, w->g->block, w->g->n * sizeof *grad);
    return loss;
}

/* ---- examples ---- */

/* lp_train's data for a T5: examples S, T, S source ids, T target ids. */
typedef struct {
    int n;
    const int **ex; /* (n): each example's header */
} s2s_examples;

static void s2s_examples_free(void *xv) {
    s2s_examples *x = xv;
    if (!x) return;
    free(x->ex);
    free(x);
}

static int s2s_examples_new(void **out, const lp_model *m, const int *data, size_t n, const lp_train_options *o,
                            const char *what) {
    *out = NULL;
    int V = m->cfg.vocab, count = 0;
    for (size_t i = 0; i < n; count++) {
        if (n - i < 2) return lp_error(LP_EINVAL, "the %s data ends inside an example", what);
        int S = data[i], T = data[i + 1];
        if (S < 1 || S > o->T || T < 1 || T > o->T)
            return lp_error(LP_EINVAL, "the %s data's example %d has a source of %d and a target of %d tokens: use "
                                       "1..%d each (the sequence length)", what, count, S, T, o->T);
        if ((size_t)S + T > n - i - 2) return lp_error(LP_EINVAL, "the %s data ends inside an example", what);
        for (int j = 0; j < S + T; j++)
            if (data[i + 2 + j] < 0 || data[i + 2 + j] >= V)
                return lp_error(LP_EINVAL, "the %s data's example %d holds token id %d, outside the vocabulary (0..%d)",
                                what, count, data[i + 2 + j], V - 1);
        i += 2 + (size_t)S + T;
    }
    if (count == 0) return lp_error(LP_EINVAL, "the %s data holds no example", what);
    s2s_examples *x = calloc(1, sizeof *x);
    if (x) x->ex = malloc((size_t)count * sizeof *x->ex);
    if (!x || !x->ex) {
        s2s_examples_free(x);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    x->n = count;
    for (size_t i = 0, e = 0; i < n; i += 2 + (size_t)data[i] + data[i + 1]) x->ex[e++] = data + i;
    *out = x;
    return LP_OK;
}

static int s2s_max_width(const lp_train_options *o) { return 1 + 2 * o->T; }

/* B examples drawn at random (any lengths: each is its own run, nothing is padded). */
static int s2s_draw(int *ids, int *tgt, const void *xv, const lp_model *m, const lp_train_options *o, uint64_t seed,
                    int step) {
    (void)m;
    const s2s_examples *x = xv;
    int W = s2s_max_width(o);
    lp_rng rng;
    lp_rng_seed(&rng, seed * 0x9e3779b97f4a7c15ull + (uint64_t)step + 1);
    for (int b = 0; b < o->B; b++) {
        int k = (int)(lp_rng_uniform(&rng) * x->n);
        const int *e = x->ex[k < x->n ? k : x->n - 1];
        int S = e[0], T = e[1], *r = ids + (size_t)b * W, *t = tgt + (size_t)b * W;
        for (int i = 0; i < W; i++) r[i] = t[i] = -1;
        r[0] = S;
        memcpy(r + 1, e + 2, (size_t)S * sizeof *r);
        memcpy(t + 1 + S, e + 2 + S, (size_t)T * sizeof *t);
    }
    return W;
}

/* ---- saving ---- */

/* config.json's object, as T5Config writes it (the keys loupe's loader and Hugging Face read). */
static json_t *config_json(const lp_model *m) {
    const lp_config *c = &m->cfg;
    bool gated = lp_mlp_gated(c);
    json_t *j = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:b,s:f,s:i,s:i,s:i,s:f,s:f,s:b,s:s}",
                          "architectures", "T5ForConditionalGeneration", "model_type", "t5", "vocab_size", c->vocab,
                          "d_model", c->d_model, "d_kv", c->d_head, "d_ff", c->d_mlp, "num_layers",
                          m->encoder->cfg.n_layer, "num_decoder_layers", c->n_layer, "num_heads", c->n_head,
                          "relative_attention_num_buckets", c->rel_buckets, "relative_attention_max_distance",
                          c->rel_max_distance, "feed_forward_proj", gated ? "gated-gelu" : "relu",
                          "tie_word_embeddings", c->tied_unembed, "layer_norm_epsilon",
                          train_short_decimal(c->norm_eps), "pad_token_id", 0, "eos_token_id", c->eos_id,
                          "decoder_start_token_id", c->start_id, "dropout_rate", 0.0, "initializer_factor", 1.0,
                          "is_encoder_decoder", 1, "torch_dtype", "float32");
    return j;
}

static int s2s_save(const lp_model *m, const char *dir) { return train_save_hf(m, dir, config_json(m)); }

const train_arch S2S_ARCH = {s2s_tensors,  s2s_model_new,      s2s_save,          s2s_check,
                             s2s_work_new, s2s_work_free,      s2s_step,          s2s_examples_new,
                             s2s_examples_free, s2s_max_width, s2s_draw};
