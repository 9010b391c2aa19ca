/* Training GPT-2: the parameter block and its tensors, the loss with its gradient with
 * respect to every parameter (llm.c's manner: backward kernels outputs first, one job each),
 * the loop (its optimiser's step: adamw.c), and saving. The forward takes the inference's
 * steps and products (lp_norm, lp_linear_forward) over a micro-batch's rows at once, with
 * attention in attention16.c's loops and GELU and the loss head's softmax on vmath's exp: a
 * model trains on the function loupe later inspects, up to the last bits that a product's row
 * count and those exponentials move. This file is compiled with -ffp-contract=fast
 * (Makefile): the exponentials' polynomials and GELU's derivative take fused multiply-adds
 * (the loss head and GELU a quarter faster); no bits here are promised beyond a recipe's
 * reproducibility on one machine. */
#include "loupe/train.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "kernels/vmath.h"
#include "loupe/checkpoint.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/run.h"
#include "loupe/safetensors.h"
#include "train/adamw.h"
#include "train/train_impl.h"

/* The path such a model reports (it has no file). */
static const char TRAINABLE_PATH[] = "(trainable model in memory)";

/* ---- the parameter block ---- */

/* Tensors of a layer in block order; an attention-only layer has the first LAYER_ATTN. */
enum { P_LN1_W, P_LN1_B, P_ATTN_W, P_ATTN_B, P_PROJ_W, P_PROJ_B, LAYER_ATTN,
       P_LN2_W = LAYER_ATTN, P_LN2_B, P_FC_W, P_FC_B, P_FCPROJ_W, P_FCPROJ_B, LAYER_FULL };
enum { T_WTE, T_WPE, T_LAYERS };

static int per_layer(const lp_config *c) { return c->attn_only ? LAYER_ATTN : LAYER_FULL; }
static int layer_tensor(const lp_config *c, int l, int k) { return T_LAYERS + l * per_layer(c) + k; }
static int lnf_tensor(const lp_config *c) { return T_LAYERS + c->n_layer * per_layer(c); }

static void put(lp_param_tensor *out, int cap, int *n, size_t *at, bool decay, int ndim, long d0, long d1,
                const char *name, int layer) {
    if (*n < cap && out) {
        lp_param_tensor *t = &out[*n];
        if (layer >= 0) snprintf(t->name, sizeof t->name, "h.%d.%s", layer, name);
        else snprintf(t->name, sizeof t->name, "%s", name);
        t->offset = *at;
        t->size = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
        t->ndim = ndim;
        t->shape[0] = d0;
        t->shape[1] = ndim == 2 ? d1 : 0;
        t->decay = decay;
    }
    *at += (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
    (*n)++;
}

/* A BERT is asked for by its head, a T5 by its cross-attention (a GPT-2 has LP_HEAD_LM,
 * lp_config's zero, and no cross-attention). */
const train_arch *train_arch_of(const lp_config *c) {
    if (c->cross_attn) return &S2S_ARCH;
    if (c->head == LP_HEAD_MLM || c->head == LP_HEAD_CLASSIFIER) return &ENC_ARCH;
    return NULL;
}

int lp_train_tensors(const lp_config *c, lp_param_tensor *out, int cap) {
    const train_arch *a = train_arch_of(c);
    if (a) return a->tensors(c, out, cap);
    long d = c->d_model, dm = c->d_mlp;
    int n = 0;
    size_t at = 0;
    put(out, cap, &n, &at, true, 2, c->vocab, d, "wte.weight", -1);
    put(out, cap, &n, &at, true, 2, c->n_ctx, d, "wpe.weight", -1);
    for (int l = 0; l < c->n_layer; l++) {
        put(out, cap, &n, &at, false, 1, d, 0, "ln_1.weight", l);
        put(out, cap, &n, &at, false, 1, d, 0, "ln_1.bias", l);
        put(out, cap, &n, &at, true, 2, d, 3 * d, "attn.c_attn.weight", l);
        put(out, cap, &n, &at, false, 1, 3 * d, 0, "attn.c_attn.bias", l);
        put(out, cap, &n, &at, true, 2, d, d, "attn.c_proj.weight", l);
        put(out, cap, &n, &at, false, 1, d, 0, "attn.c_proj.bias", l);
        if (c->attn_only) continue;
        put(out, cap, &n, &at, false, 1, d, 0, "ln_2.weight", l);
        put(out, cap, &n, &at, false, 1, d, 0, "ln_2.bias", l);
        put(out, cap, &n, &at, true, 2, d, dm, "mlp.c_fc.weight", l);
        put(out, cap, &n, &at, false, 1, dm, 0, "mlp.c_fc.bias", l);
        put(out, cap, &n, &at, true, 2, dm, d, "mlp.c_proj.weight", l);
        put(out, cap, &n, &at, false, 1, d, 0, "mlp.c_proj.bias", l);
    }
    put(out, cap, &n, &at, false, 1, d, 0, "ln_f.weight", -1);
    put(out, cap, &n, &at, false, 1, d, 0, "ln_f.bias", -1);
    return n;
}

/* The tensor table of c, malloc'd; *n its length, *total the block's floats. */
static lp_param_tensor *tensors_new(const lp_config *c, int *n, size_t *total) {
    *n = lp_train_tensors(c, NULL, 0);
    lp_param_tensor *t = malloc((size_t)*n * sizeof *t);
    if (!t) return NULL;
    lp_train_tensors(c, t, *n);
    *total = t[*n - 1].offset + t[*n - 1].size;
    return t;
}

/* The weights of a layer as GPT-2's loader sets them (arch_gpt2.c): q, k, v column blocks
 * of the fused (d, 3d) c_attn. */
static void point_layer(lp_layer *L, float *p, const lp_param_tensor *t, const lp_config *c, int l) {
    int d = c->d_model, dm = c->d_mlp;
#define AT(k) (p + t[layer_tensor(c, l, (k))].offset)
    L->ln1_w = AT(P_LN1_W);
    L->ln1_b = AT(P_LN1_B);
    const float *qkv_w = AT(P_ATTN_W), *qkv_b = AT(P_ATTN_B);
    L->q = lp_linear_of(qkv_w, qkv_b, d, d, 3 * d, false);
    L->k = lp_linear_of(qkv_w + d, qkv_b + d, d, d, 3 * d, false);
    L->v = lp_linear_of(qkv_w + 2 * d, qkv_b + 2 * d, d, d, 3 * d, false);
    L->o = lp_linear_of(AT(P_PROJ_W), AT(P_PROJ_B), d, d, d, false);
    if (c->attn_only) return;
    L->ln2_w = AT(P_LN2_W);
    L->ln2_b = AT(P_LN2_B);
    L->up = lp_linear_of(AT(P_FC_W), AT(P_FC_B), d, dm, dm, false);
    L->down = lp_linear_of(AT(P_FCPROJ_W), AT(P_FCPROJ_B), dm, d, d, false);
#undef AT
}

float train_normal(lp_rng *rng) {
    double u1 = lp_rng_uniform(rng), u2 = lp_rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int lp_train_model_new(lp_model **out, const lp_config *cfg, uint64_t seed) {
    *out = NULL;
    const lp_config *c0 = cfg;
    if (c0->n_layer < 1 || c0->n_head < 1 || c0->d_model < 1 || c0->vocab < 1 || c0->n_ctx < 1 ||
        (!c0->attn_only && c0->d_mlp < 1))
        return lp_error(LP_EINVAL, "a trainable model needs positive n_layer, n_head, d_model, vocab, n_ctx and "
                                   "d_mlp (unless attention-only)");
    if (c0->d_model % c0->n_head)
        return lp_error(LP_EINVAL, "d_model %d is not a multiple of n_head %d", c0->d_model, c0->n_head);
    if (train_arch_of(c0)) return train_arch_of(c0)->model_new(out, c0, seed);
    lp_model *m = calloc(1, sizeof *m);
    if (!m) return lp_error(LP_ENOMEM, "out of memory");
    lp_config *c = &m->cfg;
    *c = *c0;
    snprintf(c->arch, sizeof c->arch, "GPT2LMHeadModel");
    snprintf(c->family, sizeof c->family, "gpt2");
    c->n_kv_head = c->n_head;
    c->d_head = c->d_model / c->n_head;
    if (c->attn_only) c->d_mlp = 0;
    if (!(c->norm_eps > 0.0f)) c->norm_eps = 1e-5f;
    c->norm = LP_NORM_LAYERNORM;
    c->pos = LP_POS_LEARNED;
    c->mlp = LP_MLP_GELU_TANH;
    c->tied_unembed = c->qkv_bias = c->mlp_bias = true;
    c->causal = true;
    c->head = LP_HEAD_LM;
    c->post_norm = c->emb_norm = false;
    c->type_vocab = c->pos_offset = c->pos_pad_id = c->n_labels = 0;

    int nt;
    size_t total;
    lp_param_tensor *t = tensors_new(c, &nt, &total);
    float *p = t ? calloc(total, sizeof *p) : NULL;
    int rc = LP_OK;
    if (!t || !p || (rc = lp_model_own(m, p))) {
        if (!rc) free(p);
        rc = lp_error(LP_ENOMEM, "out of memory for %zu parameters", total);
        goto fail;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    m->path = strdup(TRAINABLE_PATH);
    if (!m->layers || !m->path) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(m->dtype, sizeof m->dtype, "F32");
    m->trainable = p;
    m->n_params = total;

    lp_rng rng;
    lp_rng_seed(&rng, seed);
    float resid_std = 0.02f / sqrtf(2.0f * c->n_layer);
    for (int i = 0; i < nt; i++) {
        float *x = p + t[i].offset;
        bool resid_proj = strstr(t[i].name, "c_proj.weight") != NULL;
        if (strstr(t[i].name, "ln_") && strstr(t[i].name, ".weight"))
            for (size_t j = 0; j < t[i].size; j++) x[j] = 1.0f;
        else if (t[i].ndim == 2)
            for (size_t j = 0; j < t[i].size; j++) x[j] = (resid_proj ? resid_std : 0.02f) * train_normal(&rng);
    }
    m->tok_emb = p + t[T_WTE].offset;
    m->pos_emb = p + t[T_WPE].offset;
    for (int l = 0; l < c->n_layer; l++) point_layer(&m->layers[l], p, t, c, l);
    m->lnf_w = p + t[lnf_tensor(c)].offset;
    m->lnf_b = p + t[lnf_tensor(c) + 1].offset;
    m->unembed = lp_linear_of(m->tok_emb, NULL, c->d_model, c->vocab, c->d_model, true);
    free(t);
    *out = m;
    return LP_OK;
fail:
    free(t);
    lp_model_free(m);
    return rc;
}

float *lp_train_params(lp_model *m, size_t *n) {
    if (!m->trainable) return NULL;
    if (n) *n = m->n_params;
    return m->trainable;
}

/* ---- forward and backward over a batch ---- */

/* Rows of the loss head taken at a time: a chunk's logits (HEAD_ROWS x V floats, 1 MB at
 * V = 2048) stay in cache from the product that makes them, through the softmax, to the two
 * products that read their gradient, where a whole shard's (32 MB) went out to memory and
 * back five times; 128 rows rather than 64 pack the tied embeddings half as often (2-3% of a
 * step, session 16). Fixed, so that a result does not depend on anything but the shard. */
#define HEAD_ROWS 128

/* Rows of a micro-batch (batch_pass): whole sequences, at least one. Fixed, as HEAD_ROWS. */
#define MICRO_ROWS 512

static int micro_batch(int B, int T) {
    int b = MICRO_ROWS / T;
    return b < 1 ? 1 : b > B ? B : b;
}

/* Activations of B sequences of T tokens (N = B * T rows, sequence-major) for every layer,
 * and one layer's backward scratch. */
typedef struct {
    int B, T;
    float *arena;
    float *resid;                   /* (L + 1, N, d): resid[l] enters layer l */
    float *ln1, *ln1_scale;         /* (L, N, d), (L, N) */
    float *q, *k, *v, *z;           /* (L, N, d) */
    float *pattern;                 /* (L, B, H, T, T) */
    float *resid_mid;               /* (L, N, d) */
    float *ln2, *ln2_scale;         /* (L, N, d), (L, N) */
    float *mlp_pre, *mlp_post;      /* (L, N, dm) */
    float *attn_out, *mlp_out;      /* (N, d): one layer's, not kept */
    float *lnf, *lnf_scale;         /* (N, d), (N) */
    float *logits;                  /* (HEAD_ROWS, V): a chunk's, then their softmax, then their gradient */
    float *d_lnf;                   /* (N, d): the loss's gradient at the final norm's output */
    float *d_resid, *d_ln;          /* (N, d) */
    float *d_q, *d_k, *d_v, *d_z;   /* (N, d) */
    float *d_pre, *d_post;          /* (N, dm) */
    float *dP;                      /* (T, T) */
} work;

static size_t work_layout(work *w, float *base, const lp_config *c) {
    size_t L = c->n_layer, N = (size_t)w->B * w->T, d = c->d_model, dm = c->attn_only ? 0 : c->d_mlp, at = 0;
    size_t T = w->T;
#define SLICE(field, n) (w->field = base ? base + at : NULL, at += (n))
    SLICE(resid, (L + 1) * N * d);
    SLICE(ln1, L * N * d);
    SLICE(ln1_scale, L * N);
    SLICE(q, L * N * d);
    SLICE(k, L * N * d);
    SLICE(v, L * N * d);
    SLICE(z, L * N * d);
    SLICE(pattern, L * N * c->n_head * T);
    SLICE(resid_mid, L * N * d);
    SLICE(ln2, L * N * d);
    SLICE(ln2_scale, L * N);
    SLICE(mlp_pre, L * N * dm);
    SLICE(mlp_post, L * N * dm);
    SLICE(attn_out, N * d);
    SLICE(mlp_out, N * d);
    SLICE(lnf, N * d);
    SLICE(lnf_scale, N);
    SLICE(logits, (size_t)HEAD_ROWS * c->vocab);
    SLICE(d_lnf, N * d);
    SLICE(d_resid, N * d);
    SLICE(d_ln, N * d);
    SLICE(d_q, N * d);
    SLICE(d_k, N * d);
    SLICE(d_v, N * d);
    SLICE(d_z, N * d);
    SLICE(d_pre, N * dm);
    SLICE(d_post, N * dm);
    SLICE(dP, T * T);
#undef SLICE
    return at;
}

static int work_init(work *w, const lp_config *c, int B, int T) {
    *w = (work){.B = B, .T = T};
    size_t n = work_layout(w, NULL, c);
    w->arena = malloc(n * sizeof *w->arena);
    if (!w->arena)
        return lp_error(LP_ENOMEM, "out of memory: a batch of %d x %d tokens needs %.1f MB", B, T,
                        (double)n * sizeof(float) / 1e6);
    work_layout(w, w->arena, c);
    return LP_OK;
}

static void work_free(work *w) { free(w->arena); }

/* The largest of row[0..n), over 16 lanes the compiler vectorises. */
static float row_max(const float *row, int n) {
    float mx = row[0];
    int body = n - n % 16;
    if (body) {
        float m[16];
        memcpy(m, row, sizeof m);
        for (int j = 16; j < body; j += 16)
            for (int k = 0; k < 16; k++) m[k] = row[j + k] > m[k] ? row[j + k] : m[k];
        for (int k = 0; k < 16; k++) mx = m[k] > mx ? m[k] : mx;
    }
    for (int j = body; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

/* The next-token loss of one row of logits (V) whose target is `target`: the exponentials
 * 16 lanes at a time (lp_vexp16, lp_vexp's bits), summed in 16 float lanes over blocks of
 * LP_VBLOCK and in 16 double ones across blocks, then together: an order fixed by V. With
 * inv_n > 0 the row becomes the loss's gradient with respect to the logits, (softmax -
 * onehot(target)) * inv_n; else it is left holding the exponentials. */
static double row_loss(float *row, int V, int target, float inv_n) {
    float mx = row_max(row, V);
    double loss = (double)(mx - row[target]), sum = 0.0;
    v8d lanes_lo = {0}, lanes_hi = {0}; /* lanes 0-7, 8-15 */
    int j = 0;
    for (; j + LP_VBLOCK <= V; j += LP_VBLOCK) {
        v16 acc = {0};
        for (int q = j; q < j + LP_VBLOCK; q += V16_LANES) {
            v16 e = lp_vexp16(load16(row + q) - mx);
            store16(row + q, e);
            acc += e;
        }
        lanes_lo += lo8d(acc);
        lanes_hi += hi8d(acc);
    }
    for (int l = 0; l < 8; l++) sum += lanes_lo[l];
    for (int l = 0; l < 8; l++) sum += lanes_hi[l];
    for (; j < V; j++) sum += (row[j] = lp_vexp(row[j] - mx));
    if (inv_n > 0.0f) {
        float k = (float)(inv_n / sum);
        for (j = 0; j + V16_LANES <= V; j += V16_LANES) store16(row + j, load16(row + j) * k);
        for (; j < V; j++) row[j] *= k;
        row[target] -= inv_n;
    }
    return loss + log(sum);
}

/* The final norm's output w->lnf through the tied unembedding to the summed next-token loss,
 * HEAD_ROWS rows at a time; with g_wte, the unembedding's backward too: wte's gradient added
 * to g_wte and the gradient at the final norm's output into w->d_lnf, each inv_n times. */
static double head(work *w, const lp_model *m, const int *ids, float *g_wte, float inv_n) {
    int T = w->T, d = m->cfg.d_model, V = m->cfg.vocab;
    size_t N = (size_t)w->B * T;
    double loss = 0.0;
    for (size_t r0 = 0; r0 < N; r0 += HEAD_ROWS) {
        int rows = N - r0 < HEAD_ROWS ? (int)(N - r0) : HEAD_ROWS;
        const float *x = w->lnf + r0 * d;
        lp_linear_forward(w->logits, x, &m->unembed, rows);
        for (int i = 0; i < rows; i++) {
            size_t r = r0 + (size_t)i, b = r / (size_t)T, t = r % (size_t)T;
            loss += row_loss(w->logits + (size_t)i * V, V, ids[b * (T + 1) + t + 1], g_wte ? inv_n : 0.0f);
        }
        if (!g_wte) continue;
        linear_backward(w->d_lnf + r0 * d, w->logits, &m->unembed, rows, 0.0f);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, d, rows, 1.0f, w->logits, V, x, d, 1.0f, g_wte, d);
    }
    return loss;
}

/* y (16) = a + b, and gt, gp (16) += dr: through restrict pointers, loops -O2's cheap cost
 * model vectorises (over a runtime length it does not). */
static void add_16(float *restrict y, const float *restrict a, const float *restrict b) {
    for (int i = 0; i < 16; i++) y[i] = a[i] + b[i];
}

static void add_to_both_16(float *restrict gt, float *restrict gp, const float *restrict dr) {
    for (int j = 0; j < 16; j++) {
        gt[j] += dr[j];
        gp[j] += dr[j];
    }
}

/* y (n) = a + b: the residual stream's sums. */
static void add_rows(float *y, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) add_16(y + i, a + i, b + i);
    for (; i < n; i++) y[i] = a[i] + b[i];
}

/* GELU-tanh as x s(x), s the sigmoid of z = 2k (x + a x^3) (tanh u = 2 sigmoid(2u) - 1),
 * taken from exp(-|z|) with vmath's exp, which cannot overflow, so that blocks of it
 * vectorise; within a few units in the last place of the inference forward's
 * lp_gelu_tanh_n (glibc-exact expf), the forward and the backward here both use s. */
#define GELU_K 0.7978845608028654f
#define GELU_A 0.044715f

static inline float gelu_sigmoid(float x) {
    float z = 2.0f * GELU_K * (x + GELU_A * x * x * x), e = lp_vexp(-fabsf(z)), r = 1.0f / (1.0f + e);
    return z >= 0.0f ? r : e * r;
}

/* gelu_sigmoid in 16 lanes, the same operations (so its bits). */
VEC_INLINE v16 gelu_sigmoid16(v16 x) {
    v16 z = 2.0f * GELU_K * (x + GELU_A * x * x * x);
    v16 e = lp_vexp16((v16)((vi16)z | INT32_MIN)), r = 1.0f / (1.0f + e); /* exp(-|z|) */
    vi16 pos = z >= 0.0f;
    return (v16)(((vi16)r & pos) | ((vi16)(e * r) & ~pos));
}

/* y (n) = GELU-tanh(x): training's forward. */
static void gelu_rows(float *y, const float *x, size_t n) {
    size_t i = 0;
    for (; i + V16_LANES <= n; i += V16_LANES) {
        v16 xi = load16(x + i);
        store16(y + i, xi * gelu_sigmoid16(xi));
    }
    for (; i < n; i++) y[i] = x[i] * gelu_sigmoid(x[i]);
}

/* GELU-tanh's derivative times dy at x, s its gelu_sigmoid, as grad.c's gelu_backward. */
#define GELU_GRAD(x, s, dy)                                                                                   \
    ((dy) * ((s) + (x) * (s) * (1.0f - (s)) * 2.0f * GELU_K * (1.0f + 3.0f * GELU_A * (x) * (x))))

/* d_pre (n) = d_post * GELU-tanh'(pre). */
static void gelu_rows_backward(float *d_pre, const float *d_post, const float *pre, size_t n) {
    size_t i = 0;
    for (; i + V16_LANES <= n; i += V16_LANES) {
        v16 x = load16(pre + i), s = gelu_sigmoid16(x);
        store16(d_pre + i, GELU_GRAD(x, s, load16(d_post + i)));
    }
    for (; i < n; i++) {
        float s = gelu_sigmoid(pre[i]);
        d_pre[i] = GELU_GRAD(pre[i], s, d_post[i]);
    }
}

/* Layer l of GPT-2 over the shard's B * T rows: lp_layer_forward's steps and kernels, but
 * every product over all the rows at once, where lp_layer_forward takes one sequence (T
 * rows) per call and OpenBLAS packed the weights B times over; attention runs sequence by
 * sequence. q, k and v are three products on c_attn's column blocks, forward and backward:
 * over a shard's rows they ran as fast as one fused product and the copies it needs. */
static void layer_forward(work *w, const lp_model *m, int l) {
    const lp_config *c = &m->cfg;
    const lp_layer *L = &m->layers[l];
    int d = c->d_model, n = w->B * w->T;
    size_t N = (size_t)n, Nd = N * d, dm = c->attn_only ? 0 : c->d_mlp, ll = (size_t)l;
    const float *in = w->resid + ll * Nd;
    float *ln1 = w->ln1 + ll * Nd, *q = w->q + ll * Nd, *k = w->k + ll * Nd, *v = w->v + ll * Nd;
    float *mid = w->resid_mid + ll * Nd, *out = w->resid + (ll + 1) * Nd;
    lp_norm(ln1, w->ln1_scale + ll * N, in, L->ln1_w, L->ln1_b, n, d, c->norm, c->norm_eps);
    lp_linear_forward(q, ln1, &L->q, n);
    lp_linear_forward(k, ln1, &L->k, n);
    lp_linear_forward(v, ln1, &L->v, n);
    float *pattern = w->pattern + ll * N * c->n_head * w->T;
    if (lp_attention16(pattern, w->z + ll * Nd, c, q, k, v, w->B, w->T))
        lp_attention_seqs(pattern, w->z + ll * Nd, c, 0, q, k, v, w->B, w->T);
    lp_linear_forward(w->attn_out, w->z + ll * Nd, &L->o, n);
    add_rows(mid, in, w->attn_out, Nd);
    if (c->attn_only) {
        memcpy(out, mid, Nd * sizeof *out);
        return;
    }
    float *ln2 = w->ln2 + ll * Nd, *pre = w->mlp_pre + ll * N * dm, *post = w->mlp_post + ll * N * dm;
    lp_norm(ln2, w->ln2_scale + ll * N, mid, L->ln2_w, L->ln2_b, n, d, c->norm, c->norm_eps);
    lp_linear_forward(pre, ln2, &L->up, n);
    gelu_rows(post, pre, N * dm);
    lp_linear_forward(w->mlp_out, post, &L->down, n);
    add_rows(out, mid, w->mlp_out, Nd);
}

/* Every layer over every sequence, then the final norm and the loss head; returns the summed
 * next-token loss. ids (B, T + 1). With grad (the block's layout), starts adding the
 * backward to it (head's), which backward() finishes; inv_n as backward's. */
static double forward(work *w, const lp_model *m, const int *ids, float *grad, const lp_param_tensor *t,
                      float inv_n) {
    const lp_config *c = &m->cfg;
    int B = w->B, T = w->T, d = c->d_model;
    size_t N = (size_t)B * T, Nd = N * d;
    for (int b = 0; b < B; b++) lp_embed(w->resid + (size_t)b * T * d, m, ids + (size_t)b * (T + 1), NULL, 0, T);
    for (int l = 0; l < c->n_layer; l++) layer_forward(w, m, l);
    const float *x = w->resid + (size_t)c->n_layer * Nd;
    lp_norm(w->lnf, w->lnf_scale, x, m->lnf_w, m->lnf_b, (int)N, d, c->norm, c->norm_eps);
    return head(w, m, ids, grad ? grad + t[T_WTE].offset : NULL, inv_n);
}

/* db[0..64) += the sums of dy's n rows (stride out) over 64 columns, each in row order as
 * one running double: eight vectors of eight sums, independent chains held in registers. */
static void column_sums_64(float *db, const float *dy, int n, int out) {
    v8d s[8] = {0};
    for (int i = 0; i < n; i++) {
        const float *row = dy + (size_t)i * out;
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            v16 x = load16(row + 16 * q);
            s[2 * q] += lo8d(x);
            s[2 * q + 1] += hi8d(x);
        }
    }
    for (int k = 0; k < 64; k++) db[k] += (float)s[k / 8][k % 8];
}

/* dw (in, out; row stride ldw) += x (n, in)^T dy (n, out); db (out) += the column sums of dy. */
static void linear_weight_backward(float *dw, int ldw, float *db, const float *x, const float *dy, int n, int in,
                                   int out) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, out, n, 1.0f, x, in, dy, out, 1.0f, dw, ldw);
    /* Columns 64 at a time down the rows (then 16, then one), each column's sum in row order
     * as one running double: the rows are read contiguously (vectorised) instead of one
     * column at a time, and 64 columns' sums are eight independent chains of vector adds. */
    int j0 = 0;
    for (; j0 + 64 <= out; j0 += 64) column_sums_64(db + j0, dy + j0, n, out);
    for (; j0 < out; j0 += 16) {
        double s[16] = {0};
        if (out - j0 >= 16)
            for (int i = 0; i < n; i++)
                for (int k = 0; k < 16; k++) s[k] += dy[(size_t)i * out + j0 + k];
        else
            for (int i = 0; i < n; i++)
                for (int k = 0; k < out - j0; k++) s[k] += dy[(size_t)i * out + j0 + k];
        for (int k = 0; k < 16 && j0 + k < out; k++) db[j0 + k] += (float)s[k];
    }
}

/* A row's share of the norm's weight and bias gradients, 16 columns from restrict pointers:
 * a loop -O2's cheap cost model vectorises (written over the row's d it is not). */
static void norm_weight_backward_16(float *restrict dw, float *restrict db, const float *restrict dy,
                                    const float *restrict x, double mean, double scale) {
    for (int j = 0; j < 16; j++) {
        dw[j] += (float)(dy[j] * (x[j] - mean) * scale);
        db[j] += dy[j];
    }
}

void norm_weight_backward(float *dw, float *db, const float *dy, const float *x, const float *scale, int n, int d) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d, *dyi = dy + (size_t)i * d;
        double mean = lp_row_mean(xi, d);
        int j = 0;
        for (; j + 16 <= d; j += 16) norm_weight_backward_16(dw + j, db + j, dyi + j, xi + j, mean, scale[i]);
        for (; j < d; j++) {
            dw[j] += (float)(dyi[j] * (xi[j] - mean) * scale[i]);
            db[j] += dyi[j];
        }
    }
}

/* grad (the block's layout) = the gradient of forward's summed loss times inv_n (1 / the
tokens of the whole batch, of which this work may be a shard); forward must have just run,
with grad, which it began (wte's gradient from the unembedding, w->d_lnf). */
static void backward(work *w, const lp_model *m, const int *ids, float *grad, const lp_param_tensor *t) {
    const lp_config *c = &m->cfg;
    int B = w->B, T = w->T, d = c->d_model, n = B * T, dm = c->attn_only ? 0 : c->d_mlp;
    size_t N = n, Nd = N * d;
    float *g_wte = grad + t[T_WTE].offset, *g_wpe = grad + t[T_WPE].offset;
    const float *x = w->resid + (size_t)c->n_layer * Nd;
    norm_weight_backward(grad + t[lnf_tensor(c)].offset, grad + t[lnf_tensor(c) + 1].offset, w->d_lnf, x,
                         w->lnf_scale, n, d);
    memset(w->d_resid, 0, Nd * sizeof *w->d_resid);
    norm_backward(w->d_resid, w->d_lnf, x, w->lnf_scale, m->lnf_w, n, d, c->norm);

    for (int l = c->n_layer - 1; l >= 0; l--) {
        const lp_layer *L = &m->layers[l];
        size_t ll = l;
#define G(k) (grad + t[layer_tensor(c, l, (k))].offset)
        const float *mid = w->resid_mid + ll * Nd, *in = w->resid + ll * Nd;
        /* w->d_resid holds the gradient at the layer's output, then (the MLP's share added in
         * place) at resid_mid, then (attention's) at its input */
        if (!c->attn_only) {
            const float *pre = w->mlp_pre + ll * N * dm, *post = w->mlp_post + ll * N * dm;
            const float *ln2 = w->ln2 + ll * Nd, *s2 = w->ln2_scale + ll * N;
            linear_weight_backward(G(P_FCPROJ_W), d, G(P_FCPROJ_B), post, w->d_resid, n, dm, d);
            linear_backward(w->d_post, w->d_resid, &L->down, n, 0.0f);
            gelu_rows_backward(w->d_pre, w->d_post, pre, N * dm);
            linear_weight_backward(G(P_FC_W), dm, G(P_FC_B), ln2, w->d_pre, n, d, dm);
            linear_backward(w->d_ln, w->d_pre, &L->up, n, 0.0f);
            norm_weight_backward(G(P_LN2_W), G(P_LN2_B), w->d_ln, mid, s2, n, d);
            norm_backward(w->d_resid, w->d_ln, mid, s2, L->ln2_w, n, d, c->norm);
        }
        const float *z = w->z + ll * Nd, *ln1 = w->ln1 + ll * Nd, *s1 = w->ln1_scale + ll * N;
        linear_weight_backward(G(P_PROJ_W), d, G(P_PROJ_B), z, w->d_resid, n, d, d);
        linear_backward(w->d_z, w->d_resid, &L->o, n, 0.0f);
        /* Only the attention fields are read: pattern (B, H, T, T) as the forward saved it. */
        tape_layer ta = {.q = w->q + ll * Nd, .k = w->k + ll * Nd, .v = w->v + ll * Nd,
                         .pattern = w->pattern + ll * N * c->n_head * T, .p_ld = T, .p_hs = (long)T * T};
        grad_layer ga = {.d_q = w->d_q, .d_z = w->d_z, .d_k = w->d_k, .d_v = w->d_v, .dP = w->dP};
        memset(w->d_k, 0, Nd * sizeof *w->d_k);
        memset(w->d_v, 0, Nd * sizeof *w->d_v);
        if (lp_attention16_backward(&ga, &ta, c, B, T)) attention_backward(&ga, &ta, c, B, T);
        float *g_qkv = G(P_ATTN_W), *g_qkv_b = G(P_ATTN_B);
        linear_weight_backward(g_qkv, 3 * d, g_qkv_b, ln1, w->d_q, n, d, d);
        linear_weight_backward(g_qkv + d, 3 * d, g_qkv_b + d, ln1, w->d_k, n, d, d);
        linear_weight_backward(g_qkv + 2 * d, 3 * d, g_qkv_b + 2 * d, ln1, w->d_v, n, d, d);
        linear_backward(w->d_ln, w->d_q, &L->q, n, 0.0f);
        linear_backward(w->d_ln, w->d_k, &L->k, n, 1.0f);
        linear_backward(w->d_ln, w->d_v, &L->v, n, 1.0f);
        norm_weight_backward(G(P_LN1_W), G(P_LN1_B), w->d_ln, in, s1, n, d);
        norm_backward(w->d_resid, w->d_ln, in, s1, L->ln1_w, n, d, c->norm);
#undef G
    }
    /* The embeddings: x = wte[id] + wpe[position]. */
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            const float *dr = w->d_resid + ((size_t)b * T + i) * d;
            float *gt = g_wte + (size_t)ids[(size_t)b * (T + 1) + i] * d, *gp = g_wpe + (size_t)i * d;
            int j = 0;
            for (; j + 16 <= d; j += 16) add_to_both_16(gt + j, gp + j, dr + j);
            for (; j < d; j++) {
                gt[j] += dr[j];
                gp[j] += dr[j];
            }
        }
}

/* B sequences ids (B, T + 1) in micro-batches of w->B sequences (the work's size), one after
 * another: their summed loss and, with grad, its gradient (zeroed first; inv_n as
 * backward's). A micro-batch of 512 rows keeps its activations (about 8 MB at the default
 * recipe) in cache from its forward to its backward, where a shard's 2048 rows at once (34
 * MB) went out to memory between them; its products are as fast. */
static double batch_pass(work *w, const lp_model *m, const int *ids, int B, float *grad, const lp_param_tensor *t,
                         float inv_n) {
    int T = w->T, mb = w->B;
    double loss = 0.0;
    if (grad) memset(grad, 0, m->n_params * sizeof *grad);
    for (int b0 = 0; b0 < B; b0 += mb) {
        const int *x = ids + (size_t)b0 * (T + 1);
        w->B = B - b0 < mb ? B - b0 : mb;
        loss += forward(w, m, x, grad, t, inv_n);
        if (grad) backward(w, m, x, grad, t);
    }
    w->B = mb;
    return loss;
}

static int check_batch(const lp_model *m, const int *ids, int B, int T) {
    const lp_config *c = &m->cfg;
    if (B < 1 || T < 1 || T > c->n_ctx)
        return lp_error(LP_EINVAL, "a batch of %d x %d tokens: the model takes 1..%d tokens", B, T, c->n_ctx);
    if (ids)
        for (size_t i = 0; i < (size_t)B * (T + 1); i++)
            if (ids[i] < 0 || ids[i] >= c->vocab)
                return lp_error(LP_EINVAL, "token id %d is outside the vocabulary (0..%d)", ids[i], c->vocab - 1);
    return LP_OK;
}

int lp_train_loss(const lp_model *m, const int *tokens, int B, int T, double *loss, float *grad) {
    if (train_arch_of(&m->cfg))
        return lp_error(LP_EINVAL, "a %s's loss needs targets: lp_train_encoder_loss", m->cfg.family);
    int rc = check_batch(m, tokens, B, T);
    if (rc) return rc;
    if (grad && !lp_train_params((lp_model *)m, NULL))
        return lp_error(LP_EINVAL, "parameter gradients need a trainable model (lp_train_model_new)");
    int nt;
    size_t total;
    lp_param_tensor *t = tensors_new(&m->cfg, &nt, &total);
    work w;
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = work_init(&w, &m->cfg, micro_batch(B, T), T))) {
        free(t);
        return rc;
    }
    double l = batch_pass(&w, m, tokens, B, grad, t, 1.0f / ((float)B * T)) / ((double)B * T);
    if (loss) *loss = l;
    work_free(&w);
    free(t);
    return LP_OK;
}

int lp_train_encoder_loss(const lp_model *m, const int *ids, const int *tgt, int B, int T, double *loss, float *grad) {
    const lp_config *c = &m->cfg;
    const train_arch *a = train_arch_of(c);
    if (!a) return lp_error(LP_EINVAL, "lp_train_encoder_loss is for a BERT or a T5; a GPT-2's is lp_train_loss");
    int targets, rc = a->check(m, ids, tgt, B, T, &targets);
    if (rc) return rc;
    if (grad && !m->trainable) return lp_error(LP_EINVAL, "parameter gradients need a trainable model");
    int nt;
    size_t total;
    lp_param_tensor *t = tensors_new(c, &nt, &total);
    void *w = NULL;
    rc = t ? a->work_new(&w, c, B, T) : lp_error(LP_ENOMEM, "out of memory");
    if (!rc) {
        double l = a->step(w, m, ids, tgt, B, T, grad, t, 1.0f / (float)targets);
        if (loss) *loss = l / targets;
    }
    if (w) a->work_free(w);
    free(t);
    return rc;
}

/* ---- the optimiser and the loop ---- */

lp_train_options lp_train_defaults(int steps) {
    return (lp_train_options){.B = 8, .T = 64, .steps = steps, .warmup = steps / 10, .lr = 1e-3f, .min_lr = 1e-4f,
                              .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f,
                              .eval_every = 100, .eval_batches = 8, .seed = 1, .threads = 1, .mask_prob = 0.15f,
                              .mask_id = -1, .n_special = 0};
}

float lp_train_lr(const lp_train_options *o, int step) {
    if (step < o->warmup) return o->lr * (float)(step + 1) / (float)o->warmup;
    int span = o->steps - o->warmup;
    if (span <= 1) return o->lr;
    double ratio = (double)(step - o->warmup) / (span - 1);
    if (ratio > 1.0) ratio = 1.0;
    return (float)(o->min_lr + 0.5 * (1.0 + cos(M_PI * ratio)) * (o->lr - o->min_lr));
}

/* B windows of T + 1 tokens at offsets drawn from rng. */
static void draw_batch(int *ids, const int *data, size_t n, int B, int T, lp_rng *rng) {
    size_t span = n - (size_t)T; /* window starts 0 .. n - T - 1 */
    for (int b = 0; b < B; b++) {
        size_t at = (size_t)(lp_rng_uniform(rng) * (double)span);
        if (at >= span) at = span - 1;
        memcpy(ids + (size_t)b * (T + 1), data + at, (size_t)(T + 1) * sizeof *ids);
    }
}

/* Step s's batch depends on the seed and s only, so that a resumed run draws what an
 * uninterrupted one would have. */
static void draw_step(int *ids, const int *data, size_t n, int B, int T, uint64_t seed, int step) {
    lp_rng rng;
    lp_rng_seed(&rng, seed * 0x9e3779b97f4a7c15ull + (uint64_t)step + 1);
    draw_batch(ids, data, n, B, T, &rng);
}

static int check_data(const lp_model *m, const int *data, size_t n, int T, const char *what) {
    if (!data || n < (size_t)T + 1)
        return lp_error(LP_EINVAL, "the %s data has %zu tokens: a window needs %d", what, data ? n : 0, T + 1);
    for (size_t i = 0; i < n; i++)
        if (data[i] < 0 || data[i] >= m->cfg.vocab)
            return lp_error(LP_EINVAL, "the %s data's token %zu (id %d) is outside the vocabulary (0..%d)", what, i,
                            data[i], m->cfg.vocab - 1);
    return LP_OK;
}

/* A batch is split into shards of whole sequences, one per thread; each shard has its own
 * activations and gradient, and the gradients are summed in shard order, so the result
 * depends on the number of shards but not on which thread ran which. BLAS runs on one
 * thread inside a shard (small matrices: OpenBLAS's own threads mostly spin). */
typedef struct {
    const lp_model *m;
    const lp_param_tensor *t;
    work w;
    const train_arch *a; /* a BERT's or a T5's (aw its work instead of w), or NULL */
    void *aw;
    int B, T;        /* this step's: B sequences (a BERT's or T5's T, the row width, varies by step) */
    const int *ids;  /* (B, T + 1): this shard's rows of the batch; a BERT's or T5's (B, T) */
    const int *tgt;  /* a BERT's or T5's targets (B, T) */
    float *grad;     /* (n params), or NULL for a forward only */
    float inv_n;
    double loss_sum; /* the shard's summed token losses */
} shard;

typedef struct {
    int n;
    shard *s;
    float **grads; /* n - 1 private gradients; shard 0 writes the caller's */
} shards;

static void *shard_run(void *arg) {
    shard *s = arg;
    if (s->a) {
        s->loss_sum = s->a->step(s->aw, s->m, s->ids, s->tgt, s->B, s->T, s->grad, s->t, s->inv_n);
        return NULL;
    }
    s->loss_sum = batch_pass(&s->w, s->m, s->ids, s->B, s->grad, s->t, s->inv_n);
    return NULL;
}

static void shards_free(shards *S) {
    for (int i = 0; i < S->n; i++) {
        work_free(&S->s[i].w);
        if (S->s[i].aw) S->s[i].a->work_free(S->s[i].aw);
        if (i > 0 && S->grads) free(S->grads[i - 1]);
    }
    free(S->s);
    free(S->grads);
}

static int shards_init(shards *S, const lp_model *m, const lp_param_tensor *t, int B, int T, int threads,
                       bool grads) {
    int n = threads < 1 ? 1 : threads > B ? B : threads, rc = LP_OK;
    *S = (shards){.n = n, .s = calloc((size_t)n, sizeof *S->s), .grads = calloc((size_t)n, sizeof *S->grads)};
    if (!S->s || !S->grads) return lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        int b = B / n + (i < B % n); /* sequences in shard i */
        const train_arch *a = train_arch_of(&m->cfg);
        S->s[i] = (shard){.m = m, .t = t, .a = a, .B = b, .T = T, .inv_n = 1.0f / ((float)B * T)};
        rc = a ? a->work_new(&S->s[i].aw, &m->cfg, b, T) : work_init(&S->s[i].w, &m->cfg, micro_batch(b, T), T);
        if (!rc && grads && i > 0 && !(S->grads[i - 1] = malloc(m->n_params * sizeof(float))))
            rc = lp_error(LP_ENOMEM, "out of memory for a gradient");
    }
    if (rc) shards_free(S);
    return rc;
}

typedef void thread_fn(void *ctx, int i, int n);

typedef struct {
    thread_fn *fn;
    void *ctx;
    int i, n;
} thread_call;

static void *thread_call_run(void *arg) {
    thread_call *c = arg;
    c->fn(c->ctx, c->i, c->n);
    return NULL;
}

/* fn(ctx, i, n) for each i < n, each on a thread of its own (i = 0 on this one); returns when
 * all are done. A thread that cannot be had runs its part here. */
static void on_threads(int n, thread_fn *fn, void *ctx) {
    pthread_t th[n];
    thread_call calls[n];
    bool started[n];
    for (int i = 0; i < n; i++) {
        calls[i] = (thread_call){.fn = fn, .ctx = ctx, .i = i, .n = n};
        started[i] = i > 0 && pthread_create(&th[i], NULL, thread_call_run, &calls[i]) == 0;
    }
    fn(ctx, 0, n);
    for (int i = 1; i < n; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        else fn(ctx, i, n);
    }
}

static void shard_part(void *ctx, int i, int n) {
    (void)n;
    shard_run(&((shards *)ctx)->s[i]);
}

/* The mean loss of the batch ids (B, T + 1) (a BERT's or T5's: ids (B, T) against tgt (B,
 * T), T the width of this step's rows); with grad, its gradient, each shard's own (the
 * first's in grad, the others' in S->grads: adamw_reduce sums them). */
static double shards_step(shards *S, const int *ids, const int *tgt, int T, float *grad) {
    const int *at = ids, *at_tgt = tgt;
    size_t targets = 0, B = 0;
    for (int i = 0; i < S->n; i++) B += (size_t)S->s[i].B;
    for (size_t i = 0; tgt && i < B * (size_t)T; i++) targets += tgt[i] >= 0;
    for (int i = 0; i < S->n; i++) {
        shard *s = &S->s[i];
        s->ids = at;
        if (tgt) {
            s->T = T;
            s->tgt = at_tgt;
            s->inv_n = 1.0f / (float)targets;
            at += (size_t)s->B * T;
            at_tgt += (size_t)s->B * T;
        } else {
            at += (size_t)s->B * (s->w.T + 1);
        }
        s->grad = grad ? (i == 0 ? grad : S->grads[i - 1]) : NULL;
    }
    on_threads(S->n, shard_part, S);
    double loss = 0.0;
    size_t tokens = 0;
    for (int i = 0; i < S->n; i++) {
        loss += S->s[i].loss_sum;
        tokens += (size_t)S->s[i].B * S->s[i].w.T;
    }
    return loss / (double)(tgt ? targets : tokens);
}

/* The optimiser's step, shared by the shards' threads: thread i of n takes the i-th of n
 * runs of whole chunks (ADAMW_CHUNK), first to sum the shards' gradients and their squares,
 * then (after the norm) for AdamW. */
typedef struct {
    float *p, *mom, *vel, *grad;
    float *const *others; /* the shards' gradients past the first */
    int n_others, nt;
    size_t np;
    const lp_param_tensor *t;
    double *sq; /* per chunk */
    adamw_step step;
    float weight_decay;
    bool finite[256]; /* per thread (lp_train_options.threads <= 256) */
} optim_job;

static void chunk_run(size_t np, int i, int n, size_t *a, size_t *b) {
    size_t chunks = (np + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
    *a = chunks * i / n * ADAMW_CHUNK;
    *b = chunks * (i + 1) / n * ADAMW_CHUNK;
    if (*a > np) *a = np;
    if (*b > np) *b = np;
}

static void optim_reduce_part(void *ctx, int i, int n) {
    optim_job *o = ctx;
    size_t a, b;
    chunk_run(o->np, i, n, &a, &b);
    adamw_reduce(o->grad, o->others, o->n_others, a, b, o->sq);
}

static void optim_apply_part(void *ctx, int i, int n) {
    optim_job *o = ctx;
    size_t a, b;
    chunk_run(o->np, i, n, &a, &b);
    bool finite = true;
    for (int k = 0; k < o->nt; k++) { /* the tensors' parts in [a, b) */
        size_t t0 = o->t[k].offset, t1 = t0 + o->t[k].size, lo = t0 > a ? t0 : a, hi = t1 < b ? t1 : b;
        if (lo < hi)
            finite &= adamw_apply(o->p, o->mom, o->vel, o->grad, lo, hi, o->t[k].decay ? o->weight_decay : 0.0f,
                                  &o->step);
    }
    o->finite[i] = finite;
}

/* The mean loss of `batches` batches drawn by seed: windows of data (a GPT-2's) or
 * examples of x (a BERT's, masked as o says, or a T5's; tgt their targets). */
static double eval_loss(shards *S, int *ids, int *tgt, const lp_model *m, const int *data, size_t n,
                        const void *x, const lp_train_options *o, int B, int T, int batches, uint64_t seed) {
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    double sum = 0.0;
    for (int i = 0; i < batches; i++) {
        if (x) {
            int Ti = train_arch_of(&m->cfg)->draw(ids, tgt, x, m, o, seed, i);
            sum += shards_step(S, ids, tgt, Ti, NULL);
            continue;
        }
        draw_batch(ids, data, n, B, T, &rng);
        sum += shards_step(S, ids, NULL, T, NULL);
    }
    return sum / batches;
}

/* OpenBLAS on one thread while the shards run, as it was afterwards. */
static int blas_single(void) {
    int was = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return was;
}

int lp_train_eval(const lp_model *m, const int *data, size_t n, int B, int T, int batches, uint64_t seed,
                  double *loss) {
    if (train_arch_of(&m->cfg))
        return lp_error(LP_EINVAL, "a %s's held-out loss is lp_train's (eval_every): it needs its examples",
                        m->cfg.family);
    int rc = check_batch(m, NULL, B, T);
    if (rc || (rc = check_data(m, data, n, T, "evaluation"))) return rc;
    if (batches < 1) return lp_error(LP_EINVAL, "evaluation needs at least one batch");
    shards S;
    int *ids = malloc((size_t)B * (T + 1) * sizeof *ids);
    if (!ids) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = shards_init(&S, m, NULL, B, T, 1, false))) {
        free(ids);
        return rc;
    }
    *loss = eval_loss(&S, ids, NULL, m, data, n, NULL, NULL, B, T, batches, seed);
    shards_free(&S);
    free(ids);
    return LP_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Held-out batches are the same at every evaluation, so that their losses compare. */
#define EVAL_SEED_MIX 0x5eed0e7a1ull

int lp_train_state_new(lp_train_state *s, const lp_model *m) {
    *s = (lp_train_state){0};
    if (!m->trainable) return lp_error(LP_EINVAL, "this model was loaded, not made for training (lp_train_model_new)");
    s->n = m->n_params;
    s->exp_avg = calloc(s->n, sizeof *s->exp_avg);
    s->exp_avg_sq = calloc(s->n, sizeof *s->exp_avg_sq);
    if (!s->exp_avg || !s->exp_avg_sq) {
        lp_train_state_free(s);
        return lp_error(LP_ENOMEM, "out of memory for the optimiser state");
    }
    return LP_OK;
}

void lp_train_state_free(lp_train_state *s) {
    free(s->exp_avg);
    free(s->exp_avg_sq);
    *s = (lp_train_state){0};
}

static int check_options(const lp_train_options *o) {
    if (o->steps < 1 || o->warmup < 0 || !(o->lr > 0.0f) || o->min_lr < 0.0f || o->beta1 < 0.0f ||
        o->beta1 >= 1.0f || o->beta2 < 0.0f || o->beta2 >= 1.0f || !(o->eps > 0.0f) || o->weight_decay < 0.0f ||
        o->grad_clip < 0.0f || o->eval_every < 0 || (o->eval_every > 0 && o->eval_batches < 1) || o->threads < 0 ||
        o->threads > 256)
        return lp_error(LP_EINVAL, "training options out of range (steps >= 1, lr > 0, betas in [0, 1), eps > 0, "
                                   "weight decay and clip >= 0, eval batches >= 1, threads 0..256)");
    return LP_OK;
}

static int check_masking(const lp_model *m, const lp_train_options *o) {
    int V = m->cfg.vocab;
    if (m->cfg.head != LP_HEAD_MLM) return LP_OK;
    if (!(o->mask_prob > 0.0f && o->mask_prob <= 1.0f) || o->mask_id < 0 || o->mask_id >= V || o->n_special < 0 ||
        o->n_special >= V)
        return lp_error(LP_EINVAL, "masking options out of range (mask_prob in (0, 1], mask_id and n_special in "
                                   "0..%d)", V - 1);
    return LP_OK;
}

static int check_finite(const float *p, size_t np, double loss, double grad_norm, int step) {
    const char *what = !isfinite(loss) ? "the loss" : !isfinite(grad_norm) ? "the gradient" : NULL;
    for (size_t j = 0; !what && j < np; j++)
        if (!isfinite(p[j])) what = "the weights";
    if (!what) return LP_OK;
    return lp_error(LP_ERANGE, "training diverged at step %d: %s became infinite or NaN; lower the learning rate "
                               "or the weight decay", step, what);
}

int lp_train_resume(lp_model *m, lp_train_state *st, const int *data, size_t n, const int *heldout,
                    size_t n_heldout, const lp_train_options *o, lp_train_fn cb, void *ctx) {
    size_t np;
    float *p = lp_train_params(m, &np);
    if (!p) return lp_error(LP_EINVAL, "this model was loaded, not made for training (lp_train_model_new)");
    int rc = check_batch(m, NULL, o->B, o->T);
    if (rc || (rc = check_options(o))) return rc;
    if (st->n != np || !st->exp_avg || !st->exp_avg_sq || st->step < 0)
        return lp_error(LP_EINVAL, "the optimiser state does not belong to this model (%zu values for %zu parameters)",
                        st->n, np);
    const train_arch *a = train_arch_of(&m->cfg);
    bool enc = a != NULL;
    void *xt = NULL, *xh = NULL;
    if (enc) {
        if ((rc = check_masking(m, o)) || (rc = a->examples_new(&xt, m, data, n, o, "training")) ||
            (o->eval_every > 0 && (rc = a->examples_new(&xh, m, heldout, n_heldout, o, "held-out")))) {
            if (xt) a->examples_free(xt);
            return rc;
        }
    } else {
        if ((rc = check_data(m, data, n, o->T, "training"))) return rc;
        if (o->eval_every > 0 && (rc = check_data(m, heldout, n_heldout, o->T, "held-out"))) return rc;
    }

    int nt;
    size_t total;
    lp_param_tensor *t = tensors_new(&m->cfg, &nt, &total);
    float *grad = malloc(np * sizeof *grad), *mom = st->exp_avg, *vel = st->exp_avg_sq;
    size_t width = enc ? (size_t)a->max_width(o) : (size_t)o->T + 1; /* ints per row */
    int *ids = malloc((size_t)o->B * width * sizeof *ids);
    int *tgt = enc ? malloc((size_t)o->B * width * sizeof *tgt) : NULL;
    shards S = {0};
    size_t chunks = (np + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
    optim_job optim = {.p = p, .mom = mom, .vel = vel, .grad = grad, .nt = nt, .np = np, .t = t,
                       .sq = malloc(chunks * sizeof *optim.sq), .weight_decay = o->weight_decay};
    if (!t || !grad || !ids || (enc && !tgt) || !optim.sq) rc = lp_error(LP_ENOMEM, "out of memory for training");
    else rc = shards_init(&S, m, t, o->B, enc ? a->max_width(o) : o->T, o->threads ? o->threads : 1, true);
    optim.others = S.grads;
    optim.n_others = S.n - 1;
    int blas_threads = blas_single();
    double t0 = now_s();
    int first = st->step;
    for (int step = st->step; step < o->steps && !rc; step++) {
        double loss;
        if (enc) {
            int T = a->draw(ids, tgt, xt, m, o, o->seed, step);
            loss = shards_step(&S, ids, tgt, T, grad);
        } else {
            draw_step(ids, data, n, o->B, o->T, o->seed, step);
            loss = shards_step(&S, ids, NULL, o->T, grad);
        }
        /* Stopped inside the step (a run refuses to start once asked): the step is dropped
         * whole, so that a checkpoint saved now is the state after the last complete one. */
        if (lp_cancelled()) {
            rc = lp_error(LP_ECANCEL, "training stopped at step %d", step);
            break;
        }

        on_threads(S.n, optim_reduce_part, &optim);
        double sq = 0.0;
        for (size_t c = 0; c < chunks; c++) sq += optim.sq[c];
        double norm = sqrt(sq);
        float clip = o->grad_clip > 0.0f && norm > o->grad_clip ? (float)(o->grad_clip / norm) : 1.0f;
        float lr = lp_train_lr(o, step);
        optim.step = (adamw_step){.lr = lr, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps, .clip = clip,
                                  .inv_bc1 = (float)(1.0 / (1.0 - pow(o->beta1, step + 1))),
                                  .inv_bc2 = (float)(1.0 / (1.0 - pow(o->beta2, step + 1)))};
        on_threads(S.n, optim_apply_part, &optim);
        bool finite = true;
        for (int i = 0; i < S.n; i++) finite &= optim.finite[i];
        /* A step that made the loss, the gradient or a weight infinite or NaN ends training
         * before the callback, which may save a checkpoint: none may hold such weights. */
        if ((rc = check_finite(p, finite ? 0 : np, loss, norm, step + 1))) break;
        st->step = step + 1;

        double el = now_s() - t0;
        lp_train_progress pr = {.step = step + 1, .steps = o->steps, .loss = loss, .grad_norm = norm, .lr = lr,
                                .tokens_per_s = el > 0 ? (double)(step + 1 - first) * o->B * o->T / el : 0.0,
                                .elapsed_s = el, .eval_loss = NAN};
        if (o->eval_every > 0 && ((step + 1) % o->eval_every == 0 || step + 1 == o->steps)) {
            pr.eval_loss = eval_loss(&S, ids, tgt, m, heldout, n_heldout, xh, o, o->B, o->T, o->eval_batches,
                                     o->seed ^ EVAL_SEED_MIX);
            if ((rc = check_finite(NULL, 0, pr.eval_loss, 0.0, step + 1))) break;
        }
        if ((cb && cb(&pr, ctx)) || lp_cancelled()) rc = lp_error(LP_ECANCEL, "training stopped at step %d", step + 1);
    }
    openblas_set_num_threads(blas_threads);
    if (S.s) shards_free(&S);
    free(t);
    free(grad);
    free(optim.sq);
    free(ids);
    free(tgt);
    if (xt) a->examples_free(xt);
    if (xh) a->examples_free(xh);
    return rc;
}

int lp_train(lp_model *m, const int *data, size_t n, const int *heldout, size_t n_heldout,
             const lp_train_options *o, lp_train_fn cb, void *ctx) {
    lp_train_state st;
    int rc = lp_train_state_new(&st, m);
    if (rc) return rc;
    rc = lp_train_resume(m, &st, data, n, heldout, n_heldout, o, cb, ctx);
    lp_train_state_free(&st);
    return rc;
}

/* ---- saving ---- */

int lp_train_save(const lp_model *m, const char *dir) {
    size_t np;
    const float *p = lp_train_params((lp_model *)m, &np);
    if (!p) return lp_error(LP_EINVAL, "only a trainable model (lp_train_model_new) can be saved");
    if (train_arch_of(&m->cfg)) return train_arch_of(&m->cfg)->save(m, dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return lp_error(LP_EIO, "%s: cannot create: %s", dir, strerror(errno));
    lp_config c = m->cfg;
    int nt, rc;
    size_t total;
    lp_param_tensor *t = tensors_new(&c, &nt, &total);
    int extra = c.attn_only ? c.n_layer * (LAYER_FULL - LAYER_ATTN) : 0, n = 0;
    lp_st_tensor *ts = t ? calloc((size_t)(nt + extra), sizeof *ts) : NULL;
    /* An attention-only layer as GPT-2: ln_2 the identity, an MLP of width 1 that outputs 0. */
    float *ones = calloc((size_t)c.d_model, sizeof *ones), *zeros = calloc((size_t)c.d_model, sizeof *zeros);
    char(*names)[64] = calloc((size_t)extra + 1, sizeof *names);
    if (!ts || !ones || !zeros || !names) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    for (int j = 0; j < c.d_model; j++) ones[j] = 1.0f;
    for (int i = 0; i < nt; i++) {
        ts[n++] = (lp_st_tensor){.name = t[i].name, .dtype = LP_DT_F32, .ndim = t[i].ndim,
                                 .shape = {t[i].shape[0], t[i].shape[1]}, .data = p + t[i].offset,
                                 .nbytes = t[i].size * sizeof(float)};
        if (!c.attn_only || i < T_LAYERS || i >= lnf_tensor(&c) || (i - T_LAYERS) % LAYER_ATTN != LAYER_ATTN - 1)
            continue;
        int l = (i - T_LAYERS) / LAYER_ATTN;
        static const char *const part[] = {"ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                                           "mlp.c_proj.weight", "mlp.c_proj.bias"};
        long shape[][2] = {{c.d_model, 0}, {c.d_model, 0}, {c.d_model, 1}, {1, 0}, {1, c.d_model}, {c.d_model, 0}};
        for (int k = 0; k < LAYER_FULL - LAYER_ATTN; k++) {
            char *name = names[l * (LAYER_FULL - LAYER_ATTN) + k];
            snprintf(name, 64, "h.%d.%s", l, part[k]);
            int nd = shape[k][1] ? 2 : 1;
            size_t size = (size_t)shape[k][0] * (nd == 2 ? (size_t)shape[k][1] : 1);
            ts[n++] = (lp_st_tensor){.name = name, .dtype = LP_DT_F32, .ndim = nd, .shape = {shape[k][0], shape[k][1]},
                                     .data = k == 0 ? ones : zeros, .nbytes = size * sizeof(float)};
        }
    }
    if (c.attn_only) {
        c.attn_only = false;
        c.d_mlp = 1;
    }
    char path[4096];
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    if (!(rc = lp_path_join(path, sizeof path, dir, "model.safetensors")) &&
        !(rc = lp_st_write(path, ts, n, keys, vals, 1)))
        rc = lp_checkpoint_write_config(dir, &c, LP_DT_F32);
done:
    free(t);
    free(ts);
    free(ones);
    free(zeros);
    free(names);
    return rc;
}

int train_save_hf(const lp_model *m, const char *dir, json_t *config) {
    int nt, rc = LP_OK;
    size_t total;
    lp_param_tensor *t = config ? tensors_new(&m->cfg, &nt, &total) : NULL;
    lp_st_tensor *ts = t ? calloc((size_t)nt, sizeof *ts) : NULL;
    char path[4096], *text = NULL;
    if (!ts) rc = lp_error(LP_ENOMEM, "out of memory");
    else if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        rc = lp_error(LP_EIO, "%s: cannot create: %s", dir, strerror(errno));
    for (int i = 0; !rc && i < nt; i++)
        ts[i] = (lp_st_tensor){.name = t[i].name, .dtype = LP_DT_F32, .ndim = t[i].ndim,
                               .shape = {t[i].shape[0], t[i].shape[1]}, .data = m->trainable + t[i].offset,
                               .nbytes = t[i].size * sizeof(float)};
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    if (!rc && !(rc = lp_path_join(path, sizeof path, dir, "model.safetensors")) &&
        !(rc = lp_st_write(path, ts, nt, keys, vals, 1)) && !(rc = lp_path_join(path, sizeof path, dir, "config.json"))) {
        text = json_dumps(config, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = text ? lp_file_write(path, text, strlen(text)) : lp_error(LP_ENOMEM, "out of memory");
    }
    free(text);
    free(t);
    free(ts);
    json_decref(config);
    return rc;
}

/* ---- reading back: parameters and the optimiser state ---- */

/* Copies each of m's tensors from st (by name, F32, same shape) into dst (the block's layout). */
static int read_block(const lp_model *m, const lp_safetensors *st, const char *path, float *dst,
                      const char *prefix) {
    int nt;
    size_t total;
    lp_param_tensor *t = tensors_new(&m->cfg, &nt, &total);
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    int rc = LP_OK;
    for (int i = 0; i < nt && !rc; i++) {
        char name[128]; /* a prefix ("exp_avg_sq.") and a tensor name */
        snprintf(name, sizeof name, "%s%s", prefix, t[i].name);
        const lp_st_tensor *x = lp_st_find(st, name);
        if (!x) rc = lp_error(LP_EFORMAT, "%s: no tensor %s; was it written by loupe's train for this shape?", path, name);
        else if (x->dtype != LP_DT_F32 || x->nbytes != t[i].size * sizeof(float))
            rc = lp_error(LP_EFORMAT, "%s: %s is %s of %zu bytes, expected F32 of %zu", path, name, x->dtype_name,
                          x->nbytes, t[i].size * sizeof(float));
        else memcpy(dst + t[i].offset, x->data, x->nbytes);
    }
    free(t);
    return rc;
}

int lp_train_load_params(lp_model *m, const char *dir) {
    size_t np;
    float *p = lp_train_params(m, &np);
    if (!p) return lp_error(LP_EINVAL, "only a trainable model (lp_train_model_new) can take parameters");
    char path[4096];
    lp_safetensors *st;
    int rc = lp_path_join(path, sizeof path, dir, "model.safetensors");
    if (rc || (rc = lp_st_open(&st, path))) return rc;
    /* Read into a copy first, so that a failure leaves the model as it was. */
    float *tmp = malloc(np * sizeof *tmp);
    if (!tmp) rc = lp_error(LP_ENOMEM, "out of memory");
    else if (!(rc = read_block(m, st, path, tmp, ""))) memcpy(p, tmp, np * sizeof *p);
    free(tmp);
    lp_st_free(st);
    return rc;
}

/* optimizer.safetensors: the moments as "exp_avg.NAME" and "exp_avg_sq.NAME" per tensor
 * (PyTorch's names for AdamW's state), the step in the metadata. */
int lp_train_state_save(const lp_train_state *s, const lp_model *m, const char *path) {
    int nt;
    size_t total;
    lp_param_tensor *t = tensors_new(&m->cfg, &nt, &total);
    lp_st_tensor *ts = t ? calloc((size_t)nt * 2, sizeof *ts) : NULL;
    char(*names)[128] = ts ? calloc((size_t)nt * 2, sizeof *names) : NULL;
    int rc = LP_OK;
    if (!names) rc = lp_error(LP_ENOMEM, "out of memory");
    else if (total != s->n) rc = lp_error(LP_EINVAL, "the optimiser state does not belong to this model");
    for (int k = 0; k < 2 && !rc; k++)
        for (int i = 0; i < nt; i++) {
            char *name = names[k * nt + i];
            snprintf(name, 128, "%s.%s", k ? "exp_avg_sq" : "exp_avg", t[i].name);
            ts[k * nt + i] = (lp_st_tensor){.name = name, .dtype = LP_DT_F32, .ndim = t[i].ndim,
                                            .shape = {t[i].shape[0], t[i].shape[1]},
                                            .data = (k ? s->exp_avg_sq : s->exp_avg) + t[i].offset,
                                            .nbytes = t[i].size * sizeof(float)};
        }
    char step[32];
    snprintf(step, sizeof step, "%d", s->step);
    const char *keys[] = {"step", "optimizer"}, *vals[] = {step, "AdamW"};
    if (!rc) rc = lp_st_write(path, ts, 2 * nt, keys, vals, 2);
    free(t);
    free(ts);
    free(names);
    return rc;
}

int lp_train_state_load(lp_train_state *s, const lp_model *m, const char *path, int step) {
    lp_safetensors *st;
    int rc = lp_st_open(&st, path);
    if (rc) return rc;
    lp_train_state fresh;
    if ((rc = lp_train_state_new(&fresh, m))) {
        lp_st_free(st);
        return rc;
    }
    if (!(rc = read_block(m, st, path, fresh.exp_avg, "exp_avg.")) &&
        !(rc = read_block(m, st, path, fresh.exp_avg_sq, "exp_avg_sq."))) {
        fresh.step = step;
        lp_train_state_free(s);
        *s = fresh;
    } else lp_train_state_free(&fresh);
    lp_st_free(st);
    return rc;
}

void lp_train_set_embed_std(lp_model *m, float std) {
    size_t n = (size_t)m->cfg.vocab * m->cfg.d_model;
    float k = std / 0.02f;
    if (!m->trainable || k == 1.0f) return;
    for (size_t i = 0; i < n; i++) m->trainable[i] *= k; /* wte is the block's first tensor */
}
