/* The backward pass: kernels in llm.c's manner (outputs first, then inputs, then sizes; one
 * job each), a driver over a captured run, and a batched forward that keeps what the
 * backward reads, for many inputs at once (integrated gradients, occlusion).
 *
 * Only input gradients are computed, so each linear layer costs one matrix product backward,
 * as forward: dx = dy W^T. Rows after the objective's position cannot affect it (attention
 * is causal), so every pass stops at pos + 1 rows. Encoders (bidirectional, post-norm, a head
 * on top) have their own driver, encoder_grad, over every row, for the input gradient only. */
#include "loupe/grad.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/expf8.h"
#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "kernels/v16.h"
#include "kernels/vmath.h"
#include "loupe/error.h"
#include "util/parallel.h"

/* ---- objectives ---- */

static const char *const OBJ_NAMES[] = {"logit", "logprob", "logit_diff"};

const char *lp_objective_name(lp_objective_kind kind) {
    return (unsigned)kind < sizeof OBJ_NAMES / sizeof *OBJ_NAMES ? OBJ_NAMES[kind] : "?";
}

int lp_objective_from_name(const char *name, lp_objective_kind *out) {
    for (int i = 0; i < (int)(sizeof OBJ_NAMES / sizeof *OBJ_NAMES); i++)
        if (strcmp(name, OBJ_NAMES[i]) == 0) {
            *out = (lp_objective_kind)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown objective '%s'; use logit, logprob or logit_diff", name);
}

int lp_objective_check(const lp_objective *o, const lp_model *m, int T) {
    const lp_config *c = lp_model_config(m);
    /* A classifier's objective is one of its labels, at position 0 (where it reads). */
    bool labels = c->head == LP_HEAD_CLASSIFIER;
    int V = labels ? c->n_labels : c->vocab;
    const char *what = labels ? "label id" : "token id", *range = labels ? "the labels" : "the vocabulary";
    if (c->head == LP_HEAD_NONE) return lp_error(LP_EUNSUPPORTED, "%s has no output head to differentiate", c->arch);
    if ((unsigned)o->kind > LP_OBJ_LOGIT_DIFF) return lp_error(LP_EINVAL, "unknown objective kind %d", (int)o->kind);
    if (o->pos < 0 || o->pos >= T)
        return lp_error(LP_EINVAL, "position %d is out of range: the run has positions 0..%d", o->pos, T - 1);
    if (labels && o->pos != 0)
        return lp_error(LP_EINVAL, "a classifier's output is at position 0 (its [CLS]), not %d", o->pos);
    if (o->target < 0 || o->target >= V)
        return lp_error(LP_EINVAL, "target %s %d is outside %s (0..%d)", what, o->target, range, V - 1);
    if (o->kind == LP_OBJ_LOGIT_DIFF && (o->contrast < 0 || o->contrast >= V))
        return lp_error(LP_EINVAL, "contrast %s %d is outside %s (0..%d)", what, o->contrast, range, V - 1);
    return LP_OK;
}

static double log_sum_exp(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

double lp_objective_value(const lp_objective *o, const float *logits, int vocab) {
    switch (o->kind) {
    case LP_OBJ_LOGIT: return logits[o->target];
    case LP_OBJ_LOGPROB: return logits[o->target] - log_sum_exp(logits, vocab);
    case LP_OBJ_LOGIT_DIFF: return (double)logits[o->target] - logits[o->contrast];
    }
    return NAN;
}

/* ---- backward kernels ---- */

/* dx (n, in) = dy (n, out) W^T + beta dx, for y = x W + b. */
void linear_backward(float *dx, const float *dy, const lp_linear *lin, int n, float beta) {
    if (n == 1) {
        if (lin->trans) /* W is (out, in): dx = W^T dy */
            cblas_sgemv(CblasRowMajor, CblasTrans, lin->out, lin->in, 1.0f, lin->w, lin->ld, dy, 1, beta, dx, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasNoTrans, lin->in, lin->out, 1.0f, lin->w, lin->ld, dy, 1, beta, dx, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, lin->trans ? CblasNoTrans : CblasTrans, n, lin->in, lin->out, 1.0f, dy,
                lin->out, lin->w, lin->ld, beta, dx, lin->in);
}

/* dx (n, d) += the gradient through y = norm(x) given dy (n, d); scale (n) is the forward's
 * 1/std (LayerNorm) or 1/rms (RMSNorm). With xhat = (x - mean) * scale and g = dy * w:
 *   LayerNorm  dx = scale * (g - mean(g) - xhat * mean(g * xhat))
 *   RMSNorm    dx = scale * (g - xhat * mean(g * xhat))
 * Rows, activations' elements: shared on the worker pool, each computed alone. */
typedef struct {
    float *dx, *d_up;
    const float *dy, *x, *scale, *w, *up;
    int d;
    lp_norm_kind kind;
} elem_job;

/* dx (16) += the gradient through the norm, given its row's sums: 16 at a time through
 * restrict pointers, a loop -O2's cheap cost model vectorises. */
static void norm_input_grad_16(float *restrict dx, const float *restrict dy, const float *restrict x,
                               const float *restrict w, double mean, double s, double mg, double mgx) {
    for (int k = 0; k < 16; k++) {
        double g = (double)dy[k] * w[k], xhat = (x[k] - mean) * s;
        dx[k] += (float)(s * (g - mg - xhat * mgx));
    }
}

/* A row's sums in NORM_LANES double lanes, added up in lane order at the end: the lanes'
 * chains run side by side (one running double sum was a chain of d dependent adds, most of
 * the row's time at d = 64) and the order is fixed by d alone. */
#define NORM_LANES 8

static void norm_sums_lanes(double *restrict ag, double *restrict agx, const float *restrict dy,
                            const float *restrict w, const float *restrict x, double mean, double s) {
    for (int l = 0; l < NORM_LANES; l++) {
        double g = (double)dy[l] * w[l];
        ag[l] += g;
        agx[l] += g * (x[l] - mean) * s;
    }
}

static void norm_backward_rows(void *ctx, size_t r0, size_t r1) {
    const elem_job *j = ctx;
    int d = j->d;
    for (size_t i = r0; i < r1; i++) {
        const float *xi = j->x + i * d, *dyi = j->dy + i * d, *w = j->w;
        float *dxi = j->dx + i * d;
        double mean = 0.0, mg = 0.0, mgx = 0.0, s = j->scale[i];
        if (j->kind == LP_NORM_LAYERNORM) mean = lp_row_mean(xi, d);
        int body = d - d % NORM_LANES, k = 0;
        double ag[NORM_LANES] = {0}, agx[NORM_LANES] = {0};
        for (; k < body; k += NORM_LANES) norm_sums_lanes(ag, agx, dyi + k, w + k, xi + k, mean, s);
        for (; k < d; k++) {
            double g = (double)dyi[k] * w[k];
            mg += g;
            mgx += g * (xi[k] - mean) * s;
        }
        for (int l = 0; l < NORM_LANES; l++) mg += ag[l], mgx += agx[l];
        mg = j->kind == LP_NORM_LAYERNORM ? mg / d : 0.0;
        mgx /= d;
        k = 0;
        for (; k + 16 <= d; k += 16) norm_input_grad_16(dxi + k, dyi + k, xi + k, w + k, mean, s, mg, mgx);
        for (; k < d; k++) {
            double g = (double)dyi[k] * w[k], xhat = (xi[k] - mean) * s;
            dxi[k] += (float)(s * (g - mg - xhat * mgx));
        }
    }
}

void norm_backward(float *dx, const float *dy, const float *x, const float *scale, const float *w, int n, int d,
                   lp_norm_kind kind) {
    elem_job j = {.dx = dx, .dy = dy, .x = x, .scale = scale, .w = w, .d = d, .kind = kind};
    lp_parallel_for((size_t)n, d >= 4096 ? 1 : 4096 / (size_t)d, norm_backward_rows, &j);
}

#define GRAIN_FLOATS ((size_t)1 << 15)

/* d_pre = d_post * GELU'(pre) for the forward's x * sigmoid(2u), u = k (x + a x^3). The
 * sigmoid from e = exp(-|2u|) <= 1 (lp_vexp's domain: inline, where expf is a call) as
 * 1/2 + sign(u) (1 - e) / (2 (1 + e)). */
static inline float gelu_grad(float x, float dy) {
    const float k = 0.7978845608028654f, a = 0.044715f;
    float u2 = 2.0f * k * (x + a * x * x * x), e = lp_vexp(-fabsf(u2));
    float s = 0.5f + copysignf(0.5f * (1.0f - e) / (1.0f + e), u2);
    return dy * (s + x * s * (1.0f - s) * 2.0f * k * (1.0f + 3.0f * a * x * x));
}

/* 16 at a time through restrict pointers: a loop -O2's cheap cost model vectorises (fixed
 * count, no alias checks); written inside the range loop it is not. */
static void gelu_backward_16(float *restrict dx, const float *restrict x, const float *restrict dy) {
    for (int k = 0; k < 16; k++) dx[k] = gelu_grad(x[k], dy[k]);
}

static void gelu_backward_range(void *ctx, size_t i0, size_t i1) {
    const elem_job *j = ctx;
    size_t i = i0;
    for (; i + 16 <= i1; i += 16) gelu_backward_16(j->dx + i, j->x + i, j->dy + i);
    for (; i < i1; i++) j->dx[i] = gelu_grad(j->x[i], j->dy[i]);
}

void gelu_backward(float *d_pre, const float *d_post, const float *pre, size_t n) {
    elem_job j = {.dx = d_pre, .dy = d_post, .x = pre};
    lp_parallel_for(n, GRAIN_FLOATS, gelu_backward_range, &j);
}

/* d_pre = d_post * act'(pre) in double for a decoder's other activations (GPT-NeoX's
 * "gelu", the exact erf GELU, or "relu"). */
typedef struct {
    float *dx;
    const float *dy, *x;
    lp_head_act act;
} act_job;

static void act_backward_range(void *ctx, size_t i0, size_t i1) {
    const act_job *j = ctx;
    for (size_t i = i0; i < i1; i++) j->dx[i] = (float)(j->dy[i] * lp_head_act_deriv(j->act, j->x[i]));
}

/* An encoder batch's activation, dx = act(x), as the run computes it (in double), on the pool:
 * BERT's erf at every element was a tenth of an ig at T=128 on one thread. */
static void act_forward_range(void *ctx, size_t i0, size_t i1) {
    const act_job *j = ctx;
    for (size_t i = i0; i < i1; i++) j->dx[i] = (float)lp_head_act_value(j->act, j->x[i]);
}

/* post = SiLU(gate) * up: d_gate and d_up given d_post. */
static void swiglu_backward_range(void *ctx, size_t i0, size_t i1) {
    const elem_job *j = ctx;
    for (size_t i = i0; i < i1; i++) {
        float g = j->x[i], s = 1.0f / (1.0f + expf(-g));
        j->d_up[i] = j->dy[i] * g * s;
        j->dx[i] = j->dy[i] * j->up[i] * s * (1.0f + g * (1.0f - s));
    }
}

/* post = GELU-tanh(gate) * up (Gemma 2's GeGLU): d_gate and d_up given d_post. */
static void geglu_backward_range(void *ctx, size_t i0, size_t i1) {
    const elem_job *j = ctx;
    for (size_t i = i0; i < i1; i++) {
        j->d_up[i] = j->dy[i] * lp_gelu_tanh(j->x[i]);
        j->dx[i] = gelu_grad(j->x[i], j->dy[i] * j->up[i]);
    }
}

/* The gated MLP's backward: d_gate, d_up from d_post, for SwiGLU or GeGLU. */
static void gated_backward(float *d_gate, float *d_up, const float *d_post, const float *gate, const float *up,
                           size_t n, lp_mlp_kind kind) {
    elem_job j = {.dx = d_gate, .d_up = d_up, .dy = d_post, .x = gate, .up = up};
    lp_parallel_for(n, GRAIN_FLOATS, kind == LP_MLP_GEGLU ? geglu_backward_range : swiglu_backward_range, &j);
}

/* y (n) = a (n) + b (n). */
static void add_range(void *ctx, size_t i0, size_t i1) {
    const elem_job *j = ctx;
    for (size_t i = i0; i < i1; i++) j->dx[i] = j->x[i] + j->dy[i];
}

static void add_floats(float *y, const float *a, const float *b, size_t n) {
    elem_job j = {.dx = y, .x = a, .dy = b};
    lp_parallel_for(n, GRAIN_FLOATS, add_range, &j);
}

/* a . b over n floats in 16 lanes, summed in a fixed order: loops the compiler vectorises. */
static inline float dot_lanes(const float *a, const float *b, int n) {
    float acc[16] = {0}, s = 0.0f;
    int body = n - n % 16;
    for (int e = 0; e < body; e += 16)
        for (int k = 0; k < 16; k++) acc[k] += a[e + k] * b[e + k];
    for (int e = body; e < n; e++) s += a[e] * b[e];
    for (int k = 0; k < 16; k++) s += acc[k];
    return s;
}

/* y (16) += a x (16) through restrict pointers: a loop -O2 vectorises. */
static void axpy_16(float *restrict y, float a, const float *restrict x) {
    for (int e = 0; e < 16; e++) y[e] += a * x[e];
}

/* y (n) += a x (n), 16 at a time (over a runtime n the loop had stayed scalar: two thirds
 * of IG's attention forward); each entry as the plain loop makes it. */
static inline void axpy(float *y, float a, const float *x, int n) {
    int e = 0;
    for (; e + 16 <= n; e += 16) axpy_16(y + e, a, x + e);
    for (; e < n; e++) y[e] += a * x[e];
}

/* Attention over short sequences, a (sequence, head) pair per item on the worker pool: at
 * IG's lengths the per-head products are too small for sgemm (tens of thousands of calls on
 * one thread), and a pair's loops keep its q, k, v and pattern in cache. */
typedef struct {
    const lp_config *c;
    int T;
    long qs, ks;              /* row strides of q and of k, v */
    const float *q, *k, *v;   /* forward: (B*T, .) */
    float *pattern, *z;       /* forward: (B, H, T, T), (B*T, H*dh) */
    const grad_layer *g;      /* backward */
    const tape_layer *t;
    long dqs, dks;            /* row strides of d_q and of d_k, d_v */
    float *rows;              /* backward: (B*Hkv, T), an item's row of dP */
    int window;               /* forward: the layer's sliding window, 0: none */
    const int *row0;          /* forward: (B) each sequence's first query row wanted, or NULL: all */
} attn_job;

static void attn_forward_items(void *ctx, size_t i0, size_t i1) {
    const attn_job *j = ctx;
    const lp_config *c = j->c;
    int T = j->T, H = c->n_head, G = H / c->n_kv_head, dh = c->d_head;
    size_t qd = (size_t)H * dh;
    float scale = lp_attn_scale(c), cap = c->attn_softcap;
    for (size_t it = i0; it < i1; it++) {
        size_t b = it / H, h = it % H, row = b * T, kh = h / G;
        const float *q = j->q + row * j->qs + h * dh, *k = j->k + row * j->ks + kh * dh, *v = j->v + row * j->ks + kh * dh;
        float *P = j->pattern + it * T * T, *z = j->z + row * qd + h * dh;
        for (int i = j->row0 ? j->row0[b] : 0; i < T; i++) {
            /* keys [k0, keys): causal, and a sliding window's last `window` positions */
            int keys = c->causal ? i + 1 : T, k0 = j->window > 0 && i - j->window + 1 > 0 ? i - j->window + 1 : 0;
            float *pi = P + (size_t)i * T, *zi = z + (size_t)i * qd, mx = -INFINITY;
            const float *qi = q + (size_t)i * j->qs;
            for (int jj = k0; jj < keys; jj++) {
                pi[jj] = scale * dot_lanes(qi, k + (size_t)jj * j->ks, dh);
                if (cap > 0.0f) pi[jj] = cap * tanhf(pi[jj] / cap);
                if (pi[jj] > mx) mx = pi[jj];
            }
            double sum = 0.0;
            for (int jj = k0; jj < keys; jj++) sum += pi[jj] = expf(pi[jj] - mx);
            float inv = (float)(1.0 / sum);
            for (int jj = k0; jj < keys; jj++) pi[jj] *= inv;
            for (int jj = 0; jj < k0; jj++) pi[jj] = 0.0f;
            for (int jj = keys; jj < T; jj++) pi[jj] = 0.0f;
            memset(zi, 0, (size_t)dh * sizeof *zi);
            for (int jj = k0; jj < keys; jj++) axpy(zi, pi[jj], v + (size_t)jj * j->ks, dh);
        }
    }
}

/* The soft cap's derivative at the score of query row qi and key row kj (Gemma 2): cap *
 * tanh(s / cap) has derivative 1 - tanh^2(s / cap), s = scale q.k as the forward made it. */
static inline float softcap_deriv(const float *qi, const float *kj, int dh, float scale, float cap) {
    float th = tanhf(scale * dot_lanes(qi, kj, dh) / cap);
    return 1.0f - th * th;
}

/* A sequence's key/value head and the query heads that share it: row by row, dP's row, the
 * softmax backward dS = P * (dP - sum_j P dP), then dv_j += P_ij dz_i, dq_i = scale dS_i k,
 * dk_j += scale dS_ij q_i. */
static void attn_backward_items(void *ctx, size_t i0, size_t i1) {
    const attn_job *j = ctx;
    const lp_config *c = j->c;
    const grad_layer *g = j->g;
    const tape_layer *t = j->t;
    int T = j->T, H = c->n_head, Hkv = c->n_kv_head, G = H / Hkv, dh = c->d_head;
    size_t qd = (size_t)H * dh;
    float scale = lp_attn_scale(c), cap = c->attn_softcap;
    for (size_t it = i0; it < i1; it++) {
        size_t b = it / Hkv, kh = it % Hkv, row = b * T;
        const float *k = t->k + row * j->ks + kh * dh, *v = t->v + row * j->ks + kh * dh;
        float *dk = g->d_k + row * j->dks + kh * dh, *dv = g->d_v + row * j->dks + kh * dh, *dp = j->rows + it * T;
        for (size_t h = kh * G; h < (kh + 1) * G; h++) {
            const float *P = t->pattern + (b * H + h) * t->p_hs, *q = t->q + row * j->qs + h * dh;
            const float *dz = g->d_z + row * qd + h * dh;
            float *dq = g->d_q + row * j->dqs + h * dh;
            for (int i = 0; i < T; i++) {
                int keys = c->causal ? i + 1 : T;
                const float *pi = P + (size_t)i * t->p_ld, *dzi = dz + (size_t)i * qd, *qi = q + (size_t)i * j->qs;
                float *dqi = dq + (size_t)i * j->dqs;
                double r = 0.0;
                for (int jj = 0; jj < keys; jj++) {
                    dp[jj] = dot_lanes(dzi, v + (size_t)jj * j->ks, dh);
                    r += (double)pi[jj] * dp[jj];
                }
                if (g->d_pattern) {
                    float *out = g->d_pattern + (b * H + h) * g->dp_hs + (size_t)i * g->dp_ld;
                    memcpy(out, dp, (size_t)keys * sizeof *out);
                    for (int jj = keys; jj < T; jj++) out[jj] = 0.0f;
                }
                memset(dqi, 0, (size_t)dh * sizeof *dqi);
                for (int jj = 0; jj < keys; jj++) {
                    float ds = scale * (pi[jj] * (float)(dp[jj] - r));
                    if (cap > 0.0f && pi[jj] != 0.0f) ds *= softcap_deriv(qi, k + (size_t)jj * j->ks, dh, scale, cap);
                    axpy(dv + (size_t)jj * j->dks, pi[jj], dzi, dh);
                    axpy(dqi, ds, k + (size_t)jj * j->ks, dh);
                    axpy(dk + (size_t)jj * j->dks, ds, qi, dh);
                }
            }
        }
    }
}

/* The same backward for head widths that are a multiple of 16 (every GPT-2, the bundled
 * model's 16), restructured for speed but with every float operation of attn_backward_items,
 * in the same order: the bits do not move. Row by row it took a third of a training step at
 * the bundled model's shape, in dot products of 16 floats reduced across lanes and in axpys
 * that read and wrote a key's dk and dv rows once per query row. Here dP's rows are taken 16
 * keys at a time against v transposed (lanes are keys, no reduction across them), and
 * ATTN_BWD_ROWS query rows go together: their dq side by side, and each key's dk, dv rows
 * read and written once per block. */
#define ATTN_BWD_ROWS 4

/* Floats of an item's scratch in attn_backward_items16 for head width dh over T tokens. */
static size_t attn_scratch16(int dh, int T) {
    size_t ld = (size_t)(T + 15) / 16 * 16;
    return ((size_t)dh + 2 * ATTN_BWD_ROWS) * ld;
}

/* s[j] = dot_lanes(a, column j of bT) for j < n rounded up to 16: bT has dh rows of stride
 * ld (>= that, zero-padded); dh a multiple of 16. dot_lanes' order: lane k sums its products
 * over the 16-blocks of a, then s takes the lanes in order. */
static void dots_columns(float *s, const float *a, const float *bT, int ld, int dh, int n) {
    for (int j0 = 0; j0 < n; j0 += V16_LANES) {
        v16 acc = {0};
        for (int k = 0; k < V16_LANES; k++) {
            v16 lane = {0};
            for (int e = k; e < dh; e += V16_LANES) lane += a[e] * load16(bT + (size_t)e * ld + j0);
            acc += lane;
        }
        store16(s + j0, acc);
    }
}

/* dS (16) = scale P (dP - r), the softmax backward of 16 keys of a row whose sum_j P dP is r:
 * through restrict pointers, a loop -O2's cheap cost model vectorises. */
static void softmax_grad_16(float *restrict ds, const float *restrict p, const float *restrict dp, double r,
                            float scale) {
    for (int l = 0; l < V16_LANES; l++) ds[l] = scale * (p[l] * (float)(dp[l] - r));
}

/* A block of query rows of one head: what attn_backward_rows16 needs at every key. */
typedef struct {
    int rows, keys[ATTN_BWD_ROWS];
    const float *p[ATTN_BWD_ROWS], *ds[ATTN_BWD_ROWS], *dz[ATTN_BWD_ROWS], *q[ATTN_BWD_ROWS];
    const float *k;
    float *dk, *dv;
    long ks, dks;
} rows_block;

/* Keys [j0, j1) of a block, each row's only where it sees the key, 16 columns from e0:
 * dq (rows, 16) += dS_ij k_j; dv_j += P_ij dz_i and dk_j += dS_ij q_i in row order. */
static void rows_keys16(v16 *dq, const rows_block *r, int e0, int j0, int j1) {
    for (int jj = j0; jj < j1; jj++) {
        float *dvj = r->dv + (size_t)jj * r->dks + e0, *dkj = r->dk + (size_t)jj * r->dks + e0;
        v16 kj = load16(r->k + (size_t)jj * r->ks + e0), yv = load16(dvj), yk = load16(dkj);
        for (int a = 0; a < r->rows; a++)
            if (jj < r->keys[a]) {
                dq[a] += r->ds[a][jj] * kj;
                yv += r->p[a][jj] * load16(r->dz[a] + e0);
                yk += r->ds[a][jj] * load16(r->q[a] + e0);
            }
        store16(dvj, yv);
        store16(dkj, yk);
    }
}

/* Query rows [i0, i0 + rows) of head h of item it (attn_backward_items' meaning), the item's
 * v transposed in vT (dh, ld); dp and ds (ATTN_BWD_ROWS, ld) scratch. */
static void attn_backward_rows16(const attn_job *j, size_t it, size_t h, int i0, int rows, const float *vT, int ld,
                                 float *dp, float *ds) {
    const lp_config *c = j->c;
    const grad_layer *g = j->g;
    const tape_layer *t = j->t;
    int T = j->T, H = c->n_head, Hkv = c->n_kv_head, dh = c->d_head;
    size_t qd = (size_t)H * dh, b = it / Hkv, kh = it % Hkv, row = b * T;
    float scale = 1.0f / sqrtf((float)dh);
    const float *P = t->pattern + (b * H + h) * t->p_hs, *dz = g->d_z + row * qd + h * dh;
    float *dq = g->d_q + row * j->dqs + h * dh;
    rows_block r = {.rows = rows, .k = t->k + row * j->ks + kh * dh, .dk = g->d_k + row * j->dks + kh * dh,
                    .dv = g->d_v + row * j->dks + kh * dh, .ks = j->ks, .dks = j->dks};
    double rs[ATTN_BWD_ROWS];
    for (int a = 0; a < rows; a++) {
        int i = i0 + a;
        r.keys[a] = c->causal ? i + 1 : T;
        r.p[a] = P + (size_t)i * t->p_ld;
        r.ds[a] = ds + (size_t)a * ld;
        r.dz[a] = dz + (size_t)i * qd;
        r.q[a] = t->q + row * j->qs + h * dh + (size_t)i * j->qs;
        dots_columns(dp + (size_t)a * ld, r.dz[a], vT, ld, dh, r.keys[a]);
    }
    /* keys every row of the block sees, and keys some row sees */
    int common = r.keys[0], most = r.keys[rows - 1];
    /* The pattern was written by the forward, long out of cache: the next block's rows are
     * fetched while this one works (its first pass here stalled on them). */
    if (i0 + 2 * ATTN_BWD_ROWS <= T)
        for (int a = 0; a < ATTN_BWD_ROWS; a++)
            for (int jj = 0; jj < most + ATTN_BWD_ROWS; jj += 16)
                __builtin_prefetch(r.p[a] + (size_t)ATTN_BWD_ROWS * t->p_ld + jj);
    /* r_i = sum_j P_ij dP_ij in double, each row's in key order; four rows' chains side by side */
    if (rows == ATTN_BWD_ROWS) {
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        const float *d0 = dp, *d1 = dp + ld, *d2 = dp + 2 * ld, *d3 = dp + 3 * ld;
        for (int jj = 0; jj < common; jj++) {
            s0 += (double)r.p[0][jj] * d0[jj];
            s1 += (double)r.p[1][jj] * d1[jj];
            s2 += (double)r.p[2][jj] * d2[jj];
            s3 += (double)r.p[3][jj] * d3[jj];
        }
        rs[0] = s0, rs[1] = s1, rs[2] = s2, rs[3] = s3;
    } else {
        for (int a = 0; a < rows; a++) {
            double s = 0.0;
            for (int jj = 0; jj < common; jj++) s += (double)r.p[a][jj] * dp[(size_t)a * ld + jj];
            rs[a] = s;
        }
    }
    for (int a = 0; a < rows; a++) {
        const float *pa = r.p[a], *dpa = dp + (size_t)a * ld;
        float *dsa = ds + (size_t)a * ld;
        for (int jj = common; jj < r.keys[a]; jj++) rs[a] += (double)pa[jj] * dpa[jj];
        int jj = 0;
        for (; jj + V16_LANES <= r.keys[a]; jj += V16_LANES) softmax_grad_16(dsa + jj, pa + jj, dpa + jj, rs[a], scale);
        for (; jj < r.keys[a]; jj++) dsa[jj] = scale * (pa[jj] * (float)(dpa[jj] - rs[a]));
        if (g->d_pattern) {
            float *out = g->d_pattern + (b * H + h) * g->dp_hs + (size_t)(i0 + a) * g->dp_ld;
            memcpy(out, dpa, (size_t)r.keys[a] * sizeof *out);
            for (int jj = r.keys[a]; jj < T; jj++) out[jj] = 0.0f;
        }
    }
    for (int e0 = 0; e0 < dh; e0 += V16_LANES) {
        v16 acc[ATTN_BWD_ROWS] = {{0}}; /* dq's rows, summed from zero in key order */
        int from = 0;
        if (rows == ATTN_BWD_ROWS) { /* the keys every row sees: no tests, all in registers */
            const float *p0 = r.p[0], *p1 = r.p[1], *p2 = r.p[2], *p3 = r.p[3];
            const float *g0 = r.ds[0], *g1 = r.ds[1], *g2 = r.ds[2], *g3 = r.ds[3];
            v16 z0 = load16(r.dz[0] + e0), z1 = load16(r.dz[1] + e0), z2 = load16(r.dz[2] + e0),
                z3 = load16(r.dz[3] + e0);
            v16 x0 = load16(r.q[0] + e0), x1 = load16(r.q[1] + e0), x2 = load16(r.q[2] + e0),
                x3 = load16(r.q[3] + e0);
            v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int jj = 0; jj < common; jj++) {
                float *dvj = r.dv + (size_t)jj * r.dks + e0, *dkj = r.dk + (size_t)jj * r.dks + e0;
                v16 kj = load16(r.k + (size_t)jj * r.ks + e0);
                a0 += g0[jj] * kj;
                a1 += g1[jj] * kj;
                a2 += g2[jj] * kj;
                a3 += g3[jj] * kj;
                store16(dvj, (((load16(dvj) + p0[jj] * z0) + p1[jj] * z1) + p2[jj] * z2) + p3[jj] * z3);
                store16(dkj, (((load16(dkj) + g0[jj] * x0) + g1[jj] * x1) + g2[jj] * x2) + g3[jj] * x3);
            }
            acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
            from = common;
        }
        rows_keys16(acc, &r, e0, from, most);
        for (int a = 0; a < rows; a++) store16(dq + (size_t)(i0 + a) * j->dqs + e0, acc[a]);
    }
}

/* Items as attn_backward_items, d_head a multiple of 16; j->rows holds each item's scratch:
 * v transposed (dh, ld) and dP, dS rows (ATTN_BWD_ROWS, ld each), ld = T rounded up to 16. */
static void attn_backward_items16(void *ctx, size_t i0, size_t i1) {
    const attn_job *j = ctx;
    const lp_config *c = j->c;
    int T = j->T, G = c->n_head / c->n_kv_head, dh = c->d_head, ld = (T + V16_LANES - 1) / V16_LANES * V16_LANES;
    for (size_t it = i0; it < i1; it++) {
        size_t b = it / c->n_kv_head, kh = it % c->n_kv_head;
        const float *v = j->t->v + b * T * j->ks + kh * dh;
        float *vT = j->rows + it * attn_scratch16(dh, T), *dp = vT + (size_t)dh * ld, *ds = dp + ATTN_BWD_ROWS * ld;
        for (int e = 0; e < dh; e++) {
            float *col = vT + (size_t)e * ld;
            for (int jj = 0; jj < T; jj++) col[jj] = v[(size_t)jj * j->ks + e];
            for (int jj = T; jj < ld; jj++) col[jj] = 0.0f;
        }
        for (size_t h = kh * G; h < (kh + 1) * G; h++)
            for (int r0 = 0; r0 < T; r0 += ATTN_BWD_ROWS)
                attn_backward_rows16(j, it, h, r0, T - r0 < ATTN_BWD_ROWS ? T - r0 : ATTN_BWD_ROWS, vT, ld, dp, ds);
    }
}

/* z (B*T, H*dh) and pattern (B, H, T, T) of B sequences of T <= ATTN_LOOP_MAX_T tokens, q, k
 * and v at row strides qs, ks (a fused q|k|v: its width); with row0, only sequence b's rows
 * from row0[b] on (the others are left as they were). */
static void attention_forward_short(float *pattern, float *z, const lp_config *c, int window, const float *q,
                                    const float *k, const float *v, long qs, long ks, int B, int T,
                                    const int *row0) {
    attn_job j = {.c = c, .T = T, .qs = qs, .ks = ks, .q = q, .k = k, .v = v, .pattern = pattern, .z = z,
                  .window = window, .row0 = row0};
    lp_parallel_for((size_t)B * c->n_head, 1, attn_forward_items, &j);
}

/* For every sequence and head: z = P v with P = softmax(scale q k^T) (causal). Given dz,
 * writes dq and adds to dk, dv (query heads of a group share theirs). */
void attention_backward(const grad_layer *g, const tape_layer *t, const lp_config *c, int B, int T) {
    int H = c->n_head, G = c->n_head / c->n_kv_head, dh = c->d_head, qd = H * dh, kvd = c->n_kv_head * dh;
    int qs = t->q_ld ? (int)t->q_ld : qd, ks = t->kv_ld ? (int)t->kv_ld : kvd;
    int dqs = g->dq_ld ? (int)g->dq_ld : qd, dks = g->dkv_ld ? (int)g->dkv_ld : kvd;
    float scale = lp_attn_scale(c), cap = c->attn_softcap;
    if (T <= ATTN_LOOP_MAX_T) {
        size_t items = (size_t)B * c->n_kv_head;
        attn_job j = {.c = c, .T = T, .qs = qs, .ks = ks, .g = g, .t = t, .dqs = dqs, .dks = dks};
        bool by16 = dh % V16_LANES == 0 && cap <= 0.0f; /* the soft cap's derivative: in the plain loops */
        if ((j.rows = malloc(items * (by16 ? attn_scratch16(dh, T) : (size_t)T) * sizeof *j.rows))) {
            lp_parallel_for(items, 1, by16 ? attn_backward_items16 : attn_backward_items, &j);
            free(j.rows);
            return;
        }
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t row = (size_t)b * T;
            const float *q = t->q + row * qs + (size_t)h * dh, *k = t->k + row * ks + (size_t)(h / G) * dh;
            const float *v = t->v + row * ks + (size_t)(h / G) * dh;
            const float *P = t->pattern + ((size_t)b * H + h) * t->p_hs, *dz = g->d_z + row * qd + (size_t)h * dh;
            float *dq = g->d_q + row * dqs + (size_t)h * dh, *dk = g->d_k + row * dks + (size_t)(h / G) * dh;
            float *dv = g->d_v + row * dks + (size_t)(h / G) * dh, *dP = g->dP;
            /* dP = dz v^T, on the keys each query sees (all of them in an encoder). */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, 1.0f, dz, qd, v, ks, 0.0f, dP, T);
            for (int i = 0; i < T; i++) {
                float *dpi = dP + (size_t)i * T;
                const float *pi = P + (size_t)i * t->p_ld;
                int keys = c->causal ? i + 1 : T;
                for (int j = keys; j < T; j++) dpi[j] = 0.0f;
                if (g->d_pattern) memcpy(g->d_pattern + ((size_t)b * H + h) * g->dp_hs + (size_t)i * g->dp_ld, dpi,
                                         (size_t)T * sizeof *dpi);
                /* Softmax backward in place: dS = P * (dP - sum_j P dP). */
                double r = 0.0;
                for (int j = 0; j < keys; j++) r += (double)pi[j] * dpi[j];
                for (int j = 0; j < keys; j++) dpi[j] = pi[j] * (float)(dpi[j] - r);
                for (int j = 0; cap > 0.0f && j < keys; j++)
                    if (pi[j] != 0.0f) dpi[j] *= softcap_deriv(q + (size_t)i * qs, k + (size_t)j * ks, dh, scale, cap);
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, 1.0f, P, (int)t->p_ld, dz, qd, 1.0f, dv, dks);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, scale, dP, T, k, ks, 0.0f, dq, dqs);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, scale, dP, T, q, qs, 1.0f, dk, dks);
        }
}

/* cfg.sandwich_norm: dy (n, d), the gradient with respect to a post-norm's output, through it
 * to its input raw (n, d) (g->d_raw; scale: the forward's); without post-norms, dy itself. */
static const float *post_norm_backward(const grad_layer *g, const float *dy, const float *raw, const float *scale,
                                       const float *w, int n, const lp_config *c) {
    if (!c->sandwich_norm) return dy;
    memset(g->d_raw, 0, (size_t)n * c->d_model * sizeof *g->d_raw);
    norm_backward(g->d_raw, dy, raw, scale, w, n, c->d_model, c->norm);
    return g->d_raw;
}

/* The MLP half of a layer backward over n rows: d_mid (n, d), the gradient with respect to
 * resid_mid, from d_out (n, d), the one with respect to resid_out. */
static void mlp_half_backward(float *d_mid, const grad_layer *g, const float *d_out, const tape_layer *t,
                              const lp_model *m, int layer, int n) {
    const lp_config *c = &m->cfg;
    const lp_layer *w = &m->layers[layer];
    size_t nm = (size_t)n * c->d_mlp;
    linear_backward(g->d_post, post_norm_backward(g, d_out, t->mlp_raw, t->post2_scale, w->post2_w, n, c), &w->down,
                    n, 0.0f);
    if (lp_mlp_gated(c)) {
        gated_backward(g->d_pre, g->d_up, g->d_post, t->mlp_pre, t->mlp_up, nm, c->mlp);
        linear_backward(g->d_ln2, g->d_pre, &w->gate, n, 0.0f);
        linear_backward(g->d_ln2, g->d_up, &w->up, n, 1.0f);
    } else {
        if (c->mlp == LP_MLP_GELU_TANH) {
            gelu_backward(g->d_pre, g->d_post, t->mlp_pre, nm);
        } else {
            act_job j = {g->d_pre, g->d_post, t->mlp_pre, lp_arch_head_act(c->mlp)};
            lp_parallel_for(nm, GRAIN_FLOATS, act_backward_range, &j);
        }
        linear_backward(g->d_ln2, g->d_pre, &w->up, n, 0.0f);
    }
    memcpy(d_mid, d_out, (size_t)n * c->d_model * sizeof *d_out);
    /* A parallel block's ln2 reads resid_in: g->d_ln2 is carried there after the attention
     * half (parallel_mlp_backward). */
    if (!c->parallel_block)
        norm_backward(d_mid, g->d_ln2, t->resid_mid, t->ln2_scale, w->ln2_w, n, c->d_model, c->norm);
}

/* A parallel block (GPT-NeoX): the MLP's input gradient g->d_ln2 (rows, d) through ln2 to
 * resid_in, added to d_in. Row r of d_ln2 and ln2_scale is row r * stride + pos of d_in and
 * resid_in (stride 1, pos 0: every row; stride T, pos p: one row a sequence). */
static void parallel_mlp_backward(float *d_in, const grad_layer *g, const tape_layer *t, const lp_model *m, int layer,
                                  int rows, int stride, int pos) {
    const lp_config *c = &m->cfg;
    size_t d = c->d_model;
    if (!c->parallel_block) return;
    if (stride == 1) {
        norm_backward(d_in, g->d_ln2, t->resid_in, t->ln2_scale, m->layers[layer].ln2_w, rows, c->d_model, c->norm);
        return;
    }
    for (int r = 0; r < rows; r++) {
        size_t at = ((size_t)r * stride + pos) * d;
        norm_backward(d_in + at, g->d_ln2 + r * d, t->resid_in + at, t->ln2_scale + r, m->layers[layer].ln2_w, 1,
                      c->d_model, c->norm);
    }
}

/* The attention half: d_in (rows, d) from g->d_mid (rows, d). cos_t, nsin_t: rotary tables
 * for positions 0 .. T - 1 with the sines negated. */
static void attn_half_backward(float *d_in, const grad_layer *g, const tape_layer *t, const lp_model *m, int layer,
                               int B, int T, const float *cos_t, const float *nsin_t) {
    const lp_config *c = &m->cfg;
    const lp_layer *w = &m->layers[layer];
    int n = B * T, d = c->d_model, qd = c->n_head * c->d_head, kvd = c->n_kv_head * c->d_head;

    linear_backward(g->d_z, post_norm_backward(g, g->d_mid, t->attn_raw, t->post1_scale, w->post1_w, n, c), &w->o, n,
                    0.0f);
    lp_linear f;
    if (g->dq_ld && lp_qkv_columns(&f, w)) { /* d_q | d_k | d_v as one (n, f.out) matrix */
        memset(g->d_q, 0, (size_t)n * f.out * sizeof *g->d_q);
        attention_backward(g, t, c, B, T);
        linear_backward(g->d_ln1, g->d_q, &f, n, 0.0f);
        memcpy(d_in, g->d_mid, (size_t)n * d * sizeof *d_in);
        norm_backward(d_in, g->d_ln1, t->resid_in, t->ln1_scale, w->ln1_w, n, d, c->norm);
        return;
    }
    memset(g->d_k, 0, (size_t)n * kvd * sizeof *g->d_k);
    memset(g->d_v, 0, (size_t)n * kvd * sizeof *g->d_v);
    attention_backward(g, t, c, B, T);
    const float *dq = g->d_q, *dk = g->d_k;
    if (c->pos != LP_POS_LEARNED) {
        memcpy(g->d_qr, g->d_q, (size_t)n * qd * sizeof *g->d_q);
        memcpy(g->d_kr, g->d_k, (size_t)n * kvd * sizeof *g->d_k);
        for (int b = 0; b < B; b++) {
            lp_rope_rows(g->d_qr + (size_t)b * T * qd, c, T, c->n_head, cos_t, nsin_t);
            lp_rope_rows(g->d_kr + (size_t)b * T * kvd, c, T, c->n_kv_head, cos_t, nsin_t);
        }
        dq = g->d_qr;
        dk = g->d_kr;
    }
    linear_backward(g->d_ln1, dq, &w->q, n, 0.0f);
    linear_backward(g->d_ln1, dk, &w->k, n, 1.0f);
    linear_backward(g->d_ln1, g->d_v, &w->v, n, 1.0f);
    memcpy(d_in, g->d_mid, (size_t)n * d * sizeof *d_in);
    norm_backward(d_in, g->d_ln1, t->resid_in, t->ln1_scale, w->ln1_w, n, d, c->norm);
}

/* One layer backward: d_in (rows, d) from d_out (rows, d), the gradients with respect to
 * resid_in and resid_out. d_in may be d_out (it is written last). */
static void layer_backward(float *d_in, const grad_layer *g, const float *d_out, const tape_layer *t,
                           const lp_model *m, int layer, int B, int T, const float *cos_t, const float *nsin_t) {
    mlp_half_backward(g->d_mid, g, d_out, t, m, layer, B * T);
    attn_half_backward(d_in, g, t, m, layer, B, T, cos_t, nsin_t);
    parallel_mlp_backward(d_in, g, t, m, layer, B * T, 1, 0);
}

/* The last layer of a batch whose objective reads one position: only row pos of each
 * sequence went through the MLP half (batch_layer_forward with `only_pos`), so d_out and the
 * tape's resid_mid, ln2_scale, mlp_pre, mlp_up are compact, (B, .). d_in (B*T rows) may be
 * d_out. */
static void last_layer_backward(float *d_in, const grad_layer *g, const float *d_out, const tape_layer *t,
                                const lp_model *m, int layer, int B, int T, int pos, const float *cos_t,
                                const float *nsin_t) {
    size_t d = m->cfg.d_model;
    float *d_mid_pos = g->d_ln1; /* (B, d) until the attention half needs d_ln1 */
    mlp_half_backward(d_mid_pos, g, d_out, t, m, layer, B);
    memset(g->d_mid, 0, (size_t)B * T * d * sizeof *g->d_mid);
    for (int b = 0; b < B; b++)
        memcpy(g->d_mid + ((size_t)b * T + pos) * d, d_mid_pos + (size_t)b * d, d * sizeof *g->d_mid);
    attn_half_backward(d_in, g, t, m, layer, B, T, cos_t, nsin_t);
    parallel_mlp_backward(d_in, g, t, m, layer, B, T, pos);
}

/* ---- the objective's end: final norm and unembedding ---- */

/* u (d) += a * column j of the unembedding (y = x U). */
static void unembed_column_add(float *u, const lp_linear *U, int j, float a) {
    for (int i = 0; i < U->in; i++) u[i] += a * (U->trans ? U->w[(size_t)j * U->ld + i] : U->w[(size_t)i * U->ld + j]);
}

/* For n rows of final-norm output lnf (n, d): f (n) and d_lnf (n, d). logits (n, V) are read
 * when given, else computed into `logits_buf` when the objective needs all of them (logprob);
 * dlogits (n, V) is scratch for logprob. */
/* head_backward for logits soft-capped at cap (Gemma 2's final_logit_softcapping): the
 * logits before the cap are recomputed from lnf, the objective is taken on the capped ones,
 * and each logit's gradient is carried through the cap, times 1 - tanh^2(logit / cap).
 * dlogits (n, V) is scratch for logprob. */
static void capped_head_backward(double *f, float *d_lnf, const lp_model *m, const lp_objective *o, const float *lnf,
                                 float *dlogits, int n) {
    const lp_linear *U = &m->unembed;
    int d = m->cfg.d_model, V = m->cfg.vocab;
    double cap = m->cfg.final_softcap;
    if (o->kind == LP_OBJ_LOGPROB) {
        lp_linear_forward(dlogits, lnf, U, n);
        for (int r = 0; r < n; r++) {
            float *dl = dlogits + (size_t)r * V;
            lp_softcap(dl, (size_t)V, (float)cap);
            double lse = log_sum_exp(dl, V);
            if (f) f[r] = dl[o->target] - lse;
            for (int j = 0; j < V; j++) {
                double th = dl[j] / cap;
                dl[j] = (float)(((j == o->target) - exp(dl[j] - lse)) * (1.0 - th * th));
            }
        }
        linear_backward(d_lnf, dlogits, U, n, 0.0f);
        return;
    }
    int ids[2] = {o->target, o->kind == LP_OBJ_LOGIT_DIFF ? o->contrast : -1};
    for (int r = 0; r < n; r++) {
        const float *x = lnf + (size_t)r * d;
        float *dx = d_lnf + (size_t)r * d;
        memset(dx, 0, (size_t)d * sizeof *dx);
        double value = 0.0;
        for (int k = 0; k < 2 && ids[k] >= 0; k++) {
            int j = ids[k];
            double raw = U->b ? U->b[j] : 0.0;
            for (int i = 0; i < d; i++) raw += (double)x[i] * (U->trans ? U->w[(size_t)j * U->ld + i] : U->w[(size_t)i * U->ld + j]);
            double th = tanh(raw / cap), sign = k ? -1.0 : 1.0;
            value += sign * cap * th;
            unembed_column_add(dx, U, j, (float)(sign * (1.0 - th * th)));
        }
        if (f) f[r] = value;
    }
}

static void head_backward(double *f, float *d_lnf, const lp_model *m, const lp_objective *o, const float *lnf,
                          const float *logits, float *logits_buf, float *dlogits, int n) {
    const lp_linear *U = &m->unembed;
    int d = m->cfg.d_model, V = m->cfg.vocab;
    if (m->cfg.final_softcap > 0.0f) {
        capped_head_backward(f, d_lnf, m, o, lnf, dlogits, n);
        return;
    }
    if (o->kind != LP_OBJ_LOGPROB) {
        /* Only the target's (and contrast's) logits matter: a column of U, not the whole product. */
        float *u = d_lnf;
        memset(u, 0, (size_t)d * sizeof *u);
        unembed_column_add(u, U, o->target, 1.0f);
        if (o->kind == LP_OBJ_LOGIT_DIFF) unembed_column_add(u, U, o->contrast, -1.0f);
        double bias = U->b ? (double)U->b[o->target] - (o->kind == LP_OBJ_LOGIT_DIFF ? U->b[o->contrast] : 0.0f) : 0.0;
        for (int r = 0; r < n; r++) {
            if (r) memcpy(d_lnf + (size_t)r * d, u, (size_t)d * sizeof *u);
            if (!f) continue;
            if (logits) {
                f[r] = lp_objective_value(o, logits + (size_t)r * V, V);
            } else {
                double s = bias;
                for (int i = 0; i < d; i++) s += (double)lnf[(size_t)r * d + i] * u[i];
                f[r] = s;
            }
        }
        return;
    }
    if (!logits) {
        lp_linear_forward(logits_buf, lnf, U, n);
        logits = logits_buf;
    }
    for (int r = 0; r < n; r++) {
        const float *lg = logits + (size_t)r * V;
        float *dl = dlogits + (size_t)r * V;
        double lse = log_sum_exp(lg, V);
        if (f) f[r] = lg[o->target] - lse;
        for (int j = 0; j < V; j++) dl[j] = (float)-exp(lg[j] - lse);
        dl[o->target] += 1.0f;
    }
    linear_backward(d_lnf, dlogits, U, n, 0.0f);
}

static void rope_tables_new(float **cos_t, float **sin_t, float **nsin_t, const lp_config *c, int T) {
    size_t n = (size_t)T * (c->d_head / 2);
    *cos_t = malloc((n ? n : 1) * sizeof **cos_t);
    *sin_t = malloc((n ? n : 1) * sizeof **sin_t);
    *nsin_t = malloc((n ? n : 1) * sizeof **nsin_t);
    if (!*cos_t || !*sin_t || !*nsin_t || c->pos == LP_POS_LEARNED) return;
    lp_rope_tables(*cos_t, *sin_t, c, 0, T);
    for (size_t i = 0; i < n; i++) (*nsin_t)[i] = -(*sin_t)[i];
}

/* ---- the backward of a captured run ---- */

struct lp_grad {
    const lp_model *m;
    int T;
    bool lean;                /* only the embedding gradient is kept; per-layer slices hold one layer */
    double value;
    float *arena;
    float *resid;             /* (L + 1, T, d): resid[l] enters layer l; lean: (T, d), overwritten down to resid[0] */
    float *resid_mid;         /* (L, T, d) */
    float *ln1, *ln2;         /* (L, T, d) */
    float *q, *z;             /* (L, T, H*dh) */
    float *k, *v;             /* (L, T, Hkv*dh) */
    float *pattern;           /* (L, H, T, T); lean: none */
    float *mlp_pre, *mlp_up, *mlp_post; /* (L, T, dm); mlp_up SwiGLU only */
    float *lnf;               /* (T, d) */
    float *logits;            /* (T, V); lean: none */
};

static size_t grad_layout(lp_grad *g, float *base) {
    const lp_config *c = &g->m->cfg;
    size_t L = c->n_layer, T = g->T, d = c->d_model, H = c->n_head, qd = H * c->d_head;
    size_t kvd = (size_t)c->n_kv_head * c->d_head, dm = c->d_mlp, at = 0, full = !g->lean;
    if (g->lean) L = 1;
#define SLICE(field, n) (g->field = base ? base + at : NULL, at += (n))
    SLICE(resid, (full ? L + 1 : 1) * T * d);
    SLICE(resid_mid, L * T * d);
    SLICE(ln1, L * T * d);
    SLICE(ln2, L * T * d);
    SLICE(q, L * T * qd);
    SLICE(z, L * T * qd);
    SLICE(k, L * T * kvd);
    SLICE(v, L * T * kvd);
    SLICE(pattern, full * L * H * T * T);
    SLICE(mlp_pre, L * T * dm);
    SLICE(mlp_up, lp_mlp_gated(c) ? L * T * dm : 0);
    SLICE(mlp_post, L * T * dm);
    SLICE(lnf, T * d);
    SLICE(logits, full * T * (size_t)c->vocab);
#undef SLICE
    if (!lp_mlp_gated(c)) g->mlp_up = NULL;
    return at;
}

/* This file's drivers run one stack; grad_seq2seq.c differentiates encoder-decoders. */
static int seq2seq_elsewhere(const lp_config *c) {
    return lp_error(LP_EUNSUPPORTED, "%s is an encoder-decoder: its gradients come from lp_grad_seq2seq "
                    "(grad_seq2seq.h), with respect to the source and the target", c->arch);
}

static const float *view_data(const lp_run *r, lp_act_kind kind, int layer) {
    lp_view v;
    return lp_run_view(r, kind, layer, -1, &v) == LP_OK ? v.data : NULL;
}

/* Bytes a chunk of a batch may take: enough for large matrix products. At 256 MB ig's 32
 * steps at T=32 on GPT-2 small went as two chunks of 512 rows, whose products ran at 140
 * GFLOP/s where 1024 rows reach 170 (session 15: ig 7-9% faster at 512 MB). */
#define BATCH_BUDGET ((size_t)512 << 20)

/* A batch's arena, mapped with huge pages where the kernel gives them (2 MB pages fault 512
 * times less often than 4 KB ones). One arena up to ARENA_KEEP is kept between batches: a
 * fresh mapping costs the kernel's zeroing and a fault per page, about a tenth of an ig at
 * T=32 on GPT-2 small, paid again by every attribution, eval measure and refinement round.
 * The kept one is reused dirty: every slice is written before it is read, which make sanitize
 * holds to by filling every new arena with NaN bytes (LP_POISON_ARENAS). NULL when there is
 * no memory; free with batch_arena_free. */
#define ARENA_KEEP (BATCH_BUDGET + (BATCH_BUDGET >> 2))

static struct {
    pthread_mutex_t lock;
    float *p;
    size_t bytes;
    bool busy;
} kept = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, false};

static float *arena_map(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, bytes, MADV_HUGEPAGE); /* a hint: fine if the kernel says no */
#ifdef LP_POISON_ARENAS
    memset(p, 0xff, bytes);
#endif
    return p;
}

static float *batch_arena_new(size_t floats) {
    size_t bytes = floats ? floats * sizeof(float) : 1;
    float *p = NULL;
    pthread_mutex_lock(&kept.lock);
    if (!kept.busy && bytes <= ARENA_KEEP) {
        if (kept.p && kept.bytes < bytes) {
            munmap(kept.p, kept.bytes);
            kept.p = NULL;
        }
        if (!kept.p && (kept.p = arena_map(bytes))) kept.bytes = bytes;
        if ((p = kept.p)) kept.busy = true;
    }
    pthread_mutex_unlock(&kept.lock);
    return p ? p : arena_map(bytes);
}

static void batch_arena_free(float *p, size_t floats) {
    if (!p) return;
    pthread_mutex_lock(&kept.lock);
    bool mine = p == kept.p;
    if (mine) kept.busy = false;
    pthread_mutex_unlock(&kept.lock);
    if (!mine) munmap(p, floats ? floats * sizeof(float) : 1);
}

/* ---- encoders: a head on top, post-norm blocks, full attention, the embeddings' norm ---- */

/* act'(x) for the activations of encoders' MLPs and heads. */
double lp_head_act_deriv(lp_head_act a, double x) {
    switch (a) {
    case LP_HEAD_ACT_TANH: { double t = tanh(x); return 1.0 - t * t; }
    case LP_HEAD_ACT_RELU: return x > 0 ? 1.0 : 0.0;
    case LP_HEAD_ACT_GELU_ERF: return 0.5 * (1.0 + erf(x * 0.70710678118654752440)) + x * exp(-0.5 * x * x) * 0.3989422804014327;
    case LP_HEAD_ACT_GELU_TANH: {
        const double k = 0.7978845608028654, b = 0.044715, u = k * (x + b * x * x * x), t = tanh(u);
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * b * x * x);
    }
    }
    return NAN;
}

/* What the encoder backward reads of one layer, for B sequences of T rows stacked (rows =
 * B * T): post-norm blocks keep the sums before their norms. */
typedef struct {
    const float *s1, *scale1;  /* (rows, d), (rows): resid_in + attn_out, LN1's input, and its 1/std */
    const float *s2, *scale2;  /* (rows, d), (rows): resid_mid + mlp_out, LN2's input, and its 1/std */
    const float *pre;          /* (rows, dm): the MLP's activation input */
    const float *q, *k, *v;    /* (rows, H*dh), (rows, Hkv*dh) x 2 */
    const float *pattern;      /* (B, H, T, T) */
} enc_tape;

/* The encoder backward's scratch for rows = B * T. */
typedef struct {
    float *d_s, *d_mid;        /* (rows, d) */
    float *d_z, *d_q;          /* (rows, H*dh) */
    float *d_k, *d_v;          /* (rows, Hkv*dh) */
    float *d_mlp;              /* (rows, dm) */
    float *dP;                 /* (T, T) */
} enc_scratch;

/* One post-norm layer backward: dy (rows, d), the gradient with respect to the layer's
 * output, becomes the one with respect to its input. Every row carries gradient: attention
 * is not causal. */
static void enc_layer_backward(float *dy, const enc_scratch *s, const enc_tape *t, const lp_model *m, int l, int B,
                               int T) {
    const lp_config *c = &m->cfg;
    const lp_layer *w = &m->layers[l];
    int n = B * T, d = c->d_model;
    size_t nd = (size_t)n * d, nm = (size_t)n * c->d_mlp, kvd = (size_t)c->n_kv_head * c->d_head;
    lp_head_act act = lp_arch_head_act(c->mlp);
    /* resid_out = LN2(mid + mlp_out): back to mid, directly and through the MLP. */
    memset(s->d_s, 0, nd * sizeof *s->d_s);
    norm_backward(s->d_s, dy, t->s2, t->scale2, w->ln2_w, n, d, LP_NORM_LAYERNORM);
    linear_backward(s->d_mlp, s->d_s, &w->down, n, 0.0f);
    act_job aj = {s->d_mlp, s->d_mlp, t->pre, act};
    lp_parallel_for(nm, GRAIN_FLOATS, act_backward_range, &aj);
    memcpy(s->d_mid, s->d_s, nd * sizeof *s->d_mid);
    linear_backward(s->d_mid, s->d_mlp, &w->up, n, 1.0f);
    /* mid = LN1(x + attn_out): back to x, directly and through attention. */
    memset(s->d_s, 0, nd * sizeof *s->d_s);
    norm_backward(s->d_s, s->d_mid, t->s1, t->scale1, w->ln1_w, n, d, LP_NORM_LAYERNORM);
    linear_backward(s->d_z, s->d_s, &w->o, n, 0.0f);
    memset(s->d_k, 0, (size_t)n * kvd * sizeof *s->d_k);
    memset(s->d_v, 0, (size_t)n * kvd * sizeof *s->d_v);
    tape_layer tl = {.q = t->q, .k = t->k, .v = t->v, .pattern = t->pattern, .p_ld = T, .p_hs = (long)T * T};
    grad_layer gl = {.d_z = s->d_z, .d_q = s->d_q, .d_k = s->d_k, .d_v = s->d_v, .dP = s->dP};
    attention_backward(&gl, &tl, c, B, T);
    memcpy(dy, s->d_s, nd * sizeof *dy);
    linear_backward(dy, s->d_q, &w->q, n, 1.0f);
    linear_backward(dy, s->d_k, &w->k, n, 1.0f);
    linear_backward(dy, s->d_v, &w->v, n, 1.0f);
}

/* An encoder's head at B rows x (B, d), one per sequence: a = dense(x), u = act(a), h =
 * LN(u) (masked LM), logits = h U + b. f (B) = the objective; with d_x (B, d) not NULL, its
 * gradient with respect to x. logits (B, W) are read when given (a run's), else computed. */
static int enc_head(double *f, float *d_x, const lp_model *m, const lp_objective *o, const float *x,
                    const float *logits, int B) {
    int d = m->cfg.d_model, W = m->unembed.out;
    size_t Bd = (size_t)B * d, BW = (size_t)B * W;
    float *a = malloc(5 * Bd * sizeof *a), *lg = logits ? NULL : malloc(BW * sizeof *lg);
    float *dlog = d_x ? malloc(BW * sizeof *dlog) : NULL, *sc = malloc((size_t)B * sizeof *sc);
    if (!a || (!logits && !lg) || (d_x && !dlog) || !sc) {
        free(a), free(lg), free(dlog), free(sc);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    float *u = a + Bd, *h = u + Bd, *dh = h + Bd, *du = dh + Bd;
    lp_linear_forward(a, x, &m->head.dense, B);
    for (size_t j = 0; j < Bd; j++) u[j] = (float)lp_head_act_value(m->head.act, a[j]);
    if (m->head.ln_w) lp_norm(h, sc, u, m->head.ln_w, m->head.ln_b, B, d, LP_NORM_LAYERNORM, m->head.ln_eps);
    if (!logits) {
        lp_linear_forward(lg, m->head.ln_w ? h : u, &m->unembed, B);
        logits = lg;
    }
    for (int b = 0; b < B; b++) {
        const float *lb = logits + (size_t)b * W;
        f[b] = lp_objective_value(o, lb, W);
        if (!d_x) continue;
        float *db = dlog + (size_t)b * W;
        double lse = o->kind == LP_OBJ_LOGPROB ? log_sum_exp(lb, W) : 0.0;
        for (int j = 0; j < W; j++) db[j] = o->kind == LP_OBJ_LOGPROB ? (float)-exp(lb[j] - lse) : 0.0f;
        db[o->target] += 1.0f;
        if (o->kind == LP_OBJ_LOGIT_DIFF) db[o->contrast] -= 1.0f;
    }
    if (d_x) {
        linear_backward(dh, dlog, &m->unembed, B, 0.0f);
        if (m->head.ln_w) {
            memset(du, 0, Bd * sizeof *du);
            norm_backward(du, dh, u, sc, m->head.ln_w, B, d, LP_NORM_LAYERNORM);
        } else {
            memcpy(du, dh, Bd * sizeof *du);
        }
        for (size_t j = 0; j < Bd; j++) du[j] = (float)(du[j] * lp_head_act_deriv(m->head.act, a[j]));
        linear_backward(d_x, du, &m->head.dense, B, 0.0f);
    }
    free(a), free(lg), free(dlog), free(sc);
    return LP_OK;
}

int encoder_head_backward(float *dx, double *value, const lp_model *m, const float *x, const float *logits,
                          const lp_objective *o) {
    return enc_head(value, dx, m, o, x, logits, 1);
}

/* dy (rows, d) = the gradient through the embeddings' LayerNorm, given dy with respect to
 * its output; e (rows, d) its input, scale (rows) its 1/std; d_s (rows, d) scratch. */
static void enc_embed_backward(float *dy, float *d_s, const lp_model *m, const float *e, const float *scale, int n) {
    size_t nd = (size_t)n * m->cfg.d_model;
    memcpy(d_s, dy, nd * sizeof *dy);
    memset(dy, 0, nd * sizeof *dy);
    norm_backward(dy, d_s, e, scale, m->emb_ln_w, n, m->cfg.d_model, LP_NORM_LAYERNORM);
}

/* The input gradient of an encoder's run, with respect to the summed embeddings before their
 * LayerNorm (word + position + token type), into g->resid (T, d); g is laid out lean, and
 * its one-layer slices serve as scratch. */
static int encoder_grad(lp_grad *g, const lp_run *r, const lp_objective *o) {
    const lp_model *m = g->m;
    const lp_config *c = &m->cfg;
    int T = g->T, d = c->d_model, rc;
    size_t nd = (size_t)T * d;
    float *dP = malloc((size_t)T * T * sizeof *dP);
    if (!dP) return lp_error(LP_ENOMEM, "out of memory");
    float *dy = g->resid;
    memset(dy, 0, nd * sizeof *dy);
    const float *x = view_data(r, LP_ACT_LN_FINAL, 0) + (size_t)o->pos * d;
    if ((rc = enc_head(&g->value, dy + (size_t)o->pos * d, m, o, x, lp_run_logits(r, o->pos), 1))) {
        free(dP);
        return rc;
    }
    enc_scratch sc = {.d_s = g->ln2, .d_mid = g->resid_mid, .d_z = g->z, .d_q = g->q, .d_k = g->k, .d_v = g->v,
                      .d_mlp = g->mlp_pre, .dP = dP};
    float *s1 = g->lnf, *s2 = g->ln1;
    for (int l = c->n_layer - 1; l >= 0; l--) {
        if (lp_cancelled()) {
            free(dP);
            return lp_error(LP_ECANCEL, "cancelled");
        }
        const float *x_in = view_data(r, LP_ACT_RESID_PRE, l), *attn = view_data(r, LP_ACT_ATTN_OUT, l);
        const float *mid = view_data(r, LP_ACT_RESID_MID, l), *mlp = view_data(r, LP_ACT_MLP_OUT, l);
        for (size_t i = 0; i < nd; i++) s1[i] = x_in[i] + attn[i], s2[i] = mid[i] + mlp[i];
        enc_tape t = {s1, view_data(r, LP_ACT_LN1_SCALE, l), s2, view_data(r, LP_ACT_LN2_SCALE, l),
                      view_data(r, LP_ACT_MLP_PRE, l), view_data(r, LP_ACT_Q, l), view_data(r, LP_ACT_K, l),
                      view_data(r, LP_ACT_V, l), view_data(r, LP_ACT_PATTERN, l)};
        enc_layer_backward(dy, &sc, &t, m, l, 1, T);
    }
    /* resid_pre[0] = LN(embed_sum), the sum the run was given (a perturbed one for max-sensitivity) */
    float *e = g->lnf, *scale = dP;
    memcpy(e, lp_run_embed_sum(r), nd * sizeof *e);
    lp_norm(g->ln1, scale, e, m->emb_ln_w, m->emb_ln_b, T, d, LP_NORM_LAYERNORM, c->norm_eps);
    enc_embed_backward(dy, g->ln2, m, e, scale, T);
    free(dP);
    return LP_OK;
}

/* A lean gradient for an encoder's run of T tokens. */
static int encoder_grad_new(lp_grad **out, const lp_model *m, int T) {
    lp_grad *g = calloc(1, sizeof *g);
    if (!g) return lp_error(LP_ENOMEM, "out of memory");
    g->m = m;
    g->T = T;
    g->lean = true;
    size_t floats = grad_layout(g, NULL);
    if (!(g->arena = calloc(floats, sizeof *g->arena))) {
        free(g);
        return lp_error(LP_ENOMEM, "out of memory: the gradients of a run of %d tokens", T);
    }
    grad_layout(g, g->arena);
    *out = g;
    return LP_OK;
}

/* ---- encoders' batches: B inputs stacked, as the decoders' ---- */

/* A chunk of Bmax sequences of T rows: with `keep`, every layer's tape, else one layer's. */
typedef struct {
    int Bmax, T, keep;
    float *e, *e_scale;        /* (rows, d), (rows): the summed embeddings and their LayerNorm's 1/std */
    float *x[2];               /* (rows, d): a layer's input and output, in turn */
    float *q, *k, *v;          /* (L or 1, rows, H*dh / Hkv*dh) */
    float *pattern;            /* (L or 1, Bmax, H, T, T) */
    float *s1, *s2;            /* (L or 1, rows, d) */
    float *scale1, *scale2;    /* (L or 1, rows) */
    float *pre;                /* (L or 1, rows, dm) */
    float *z, *mid, *post;     /* one layer: (rows, H*dh), (rows, d), (rows, dm) */
    float *xh, *d_xh;          /* (Bmax, d): the rows at pos, and their gradient */
    float *dy;                 /* (rows, d) */
    enc_scratch g;
} enc_batch;

static size_t enc_batch_layout(enc_batch *bt, float *base, const lp_config *c) {
    size_t rows = (size_t)bt->Bmax * bt->T, d = c->d_model, qd = (size_t)c->n_head * c->d_head;
    size_t kvd = (size_t)c->n_kv_head * c->d_head, dm = c->d_mlp, D = bt->keep ? c->n_layer : 1, at = 0;
    size_t K = bt->keep, T = bt->T;
#define SLICE(field, n) (bt->field = base ? base + at : NULL, at += (n))
    SLICE(e, rows * d);
    SLICE(e_scale, rows);
    SLICE(x[0], rows * d);
    SLICE(x[1], rows * d);
    SLICE(q, D * rows * qd);
    SLICE(k, D * rows * kvd);
    SLICE(v, D * rows * kvd);
    SLICE(pattern, D * bt->Bmax * c->n_head * T * T);
    SLICE(s1, D * rows * d);
    SLICE(s2, D * rows * d);
    SLICE(scale1, D * rows);
    SLICE(scale2, D * rows);
    SLICE(pre, D * rows * dm);
    SLICE(z, rows * qd);
    SLICE(mid, rows * d);
    SLICE(post, rows * dm);
    SLICE(xh, bt->Bmax * d);
    SLICE(d_xh, K * bt->Bmax * d);
    SLICE(dy, K * rows * d);
    SLICE(g.d_s, K * rows * d);
    SLICE(g.d_mid, K * rows * d);
    SLICE(g.d_z, K * rows * qd);
    SLICE(g.d_q, K * rows * qd);
    SLICE(g.d_k, K * rows * kvd);
    SLICE(g.d_v, K * rows * kvd);
    SLICE(g.d_mlp, K * rows * dm);
    SLICE(g.dP, K * T * T);
#undef SLICE
    return at;
}

static enc_tape enc_batch_tape(const enc_batch *bt, const lp_config *c, int l) {
    size_t rows = (size_t)bt->Bmax * bt->T, D = bt->keep ? (size_t)l : 0, d = c->d_model;
    size_t qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head;
    return (enc_tape){bt->s1 + D * rows * d, bt->scale1 + D * rows, bt->s2 + D * rows * d, bt->scale2 + D * rows,
                      bt->pre + D * rows * c->d_mlp, bt->q + D * rows * qd, bt->k + D * rows * kvd,
                      bt->v + D * rows * kvd, bt->pattern + D * bt->Bmax * c->n_head * (size_t)bt->T * bt->T};
}

/* The chunk's B sequences through post-norm layer l, from x[l & 1] to x[(l + 1) & 1]: the
 * computation of lp_layer_forward for an encoder, every linear layer over all B * T rows. */
static void enc_batch_layer_forward(enc_batch *bt, const lp_model *m, int l, int B) {
    const lp_config *c = &m->cfg;
    const lp_layer *w = &m->layers[l];
    int T = bt->T, n = B * T, d = c->d_model;
    size_t nd = (size_t)n * d, nm = (size_t)n * c->d_mlp;
    enc_tape t = enc_batch_tape(bt, c, l);
    float *s1 = (float *)t.s1, *s2 = (float *)t.s2, *sc1 = (float *)t.scale1, *sc2 = (float *)t.scale2;
    float *pre = (float *)t.pre, *q = (float *)t.q, *k = (float *)t.k, *v = (float *)t.v;
    const float *x = bt->x[l & 1];
    lp_linear_forward(q, x, &w->q, n);
    lp_linear_forward(k, x, &w->k, n);
    lp_linear_forward(v, x, &w->v, n);
    if (T <= ATTN_LOOP_MAX_T)
        attention_forward_short((float *)t.pattern, bt->z, c, 0, q, k, v, c->n_head * (long)c->d_head,
                                c->n_kv_head * (long)c->d_head, B, T, NULL);
    else lp_attention_seqs((float *)t.pattern, bt->z, c, 0, q, k, v, B, T);
    lp_linear_forward(s1, bt->z, &w->o, n);
    for (size_t i = 0; i < nd; i++) s1[i] += x[i];
    lp_norm(bt->mid, sc1, s1, w->ln1_w, w->ln1_b, n, d, LP_NORM_LAYERNORM, c->norm_eps);
    lp_linear_forward(pre, bt->mid, &w->up, n);
    act_job aj = {bt->post, NULL, pre, lp_arch_head_act(c->mlp)};
    lp_parallel_for(nm, GRAIN_FLOATS, act_forward_range, &aj);
    lp_linear_forward(s2, bt->post, &w->down, n);
    for (size_t i = 0; i < nd; i++) s2[i] += bt->mid[i];
    lp_norm(bt->x[(l + 1) & 1], sc2, s2, w->ln2_w, w->ln2_b, n, d, LP_NORM_LAYERNORM, c->norm_eps);
}

/* lp_grad_batch for encoders: the inputs are summed embeddings before their LayerNorm;
 * chunks of them go through the post-norm layers stacked, and back. */
static int encoder_batch(const lp_model *m, int T, int n, lp_embed_fn input, void *ctx, const lp_objective *o,
                         const double *weight, double *f, float *grad_sum) {
    const lp_config *c = &m->cfg;
    enc_batch bt = {.Bmax = 1, .T = T, .keep = grad_sum != NULL};
    size_t per_seq = enc_batch_layout(&bt, NULL, c);
    bt.Bmax = (int)(BATCH_BUDGET / (per_seq * sizeof(float)));
    if (bt.Bmax < 1) bt.Bmax = 1;
    if (bt.Bmax > n) bt.Bmax = n;
    int chunks = (n + bt.Bmax - 1) / bt.Bmax, rc = LP_OK;
    bt.Bmax = (n + chunks - 1) / chunks; /* chunks of even size */
    size_t floats = enc_batch_layout(&bt, NULL, c), d = c->d_model, nd = (size_t)T * d;
    float *arena = batch_arena_new(floats);
    double *fb = malloc((size_t)bt.Bmax * sizeof *fb), *acc = calloc(nd, sizeof *acc);
    if (!arena || !fb || !acc) {
        rc = lp_error(LP_ENOMEM, "out of memory: a batch of %d sequences of %d tokens needs %.1f MB", bt.Bmax, T,
                      (double)floats * sizeof(float) / 1e6);
        goto done;
    }
    enc_batch_layout(&bt, arena, c);
    for (int i0 = 0; i0 < n && !rc; i0 += bt.Bmax) {
        int B = n - i0 < bt.Bmax ? n - i0 : bt.Bmax, rows = B * T;
        for (int b = 0; b < B; b++) input(bt.e + (size_t)b * nd, i0 + b, ctx);
        lp_norm(bt.x[0], bt.e_scale, bt.e, m->emb_ln_w, m->emb_ln_b, rows, (int)d, LP_NORM_LAYERNORM, c->norm_eps);
        for (int l = 0; l < c->n_layer; l++) {
            if (lp_cancelled()) {
                rc = lp_error(LP_ECANCEL, "cancelled");
                goto done;
            }
            enc_batch_layer_forward(&bt, m, l, B);
        }
        const float *last = bt.x[c->n_layer & 1];
        for (int b = 0; b < B; b++) memcpy(bt.xh + (size_t)b * d, last + ((size_t)b * T + o->pos) * d, d * sizeof *bt.xh);
        if ((rc = enc_head(fb, bt.keep ? bt.d_xh : NULL, m, o, bt.xh, NULL, B))) goto done;
        for (int b = 0; b < B; b++)
            if (!isfinite(fb[b])) {
                rc = lp_error(LP_ERANGE, "the forward pass overflowed float32: the objective is %g for input %d "
                              "(weights too large for this input?)", fb[b], i0 + b);
                goto done;
            }
        if (f) memcpy(f + i0, fb, (size_t)B * sizeof *fb);
        if (!bt.keep) continue;

        memset(bt.dy, 0, (size_t)rows * d * sizeof *bt.dy);
        for (int b = 0; b < B; b++)
            memcpy(bt.dy + ((size_t)b * T + o->pos) * d, bt.d_xh + (size_t)b * d, d * sizeof *bt.dy);
        for (int l = c->n_layer - 1; l >= 0; l--) {
            if (lp_cancelled()) {
                rc = lp_error(LP_ECANCEL, "cancelled");
                goto done;
            }
            enc_tape t = enc_batch_tape(&bt, c, l);
            enc_layer_backward(bt.dy, &bt.g, &t, m, l, B, T);
        }
        enc_embed_backward(bt.dy, bt.g.d_s, m, bt.e, bt.e_scale, rows);
        for (int b = 0; b < B; b++) {
            double wb = weight ? weight[i0 + b] : 1.0;
            const float *gb = bt.dy + (size_t)b * nd;
            for (size_t j = 0; j < nd; j++) acc[j] += wb * gb[j];
        }
    }
    if (!rc && grad_sum)
        for (size_t j = 0; j < nd; j++) grad_sum[j] = (float)acc[j];
done:
    batch_arena_free(arena, floats);
    free(fb);
    free(acc);
    return rc;
}

static int grad_run(lp_grad **out, const lp_run *r, const lp_objective *o, bool lean) {
    *out = NULL;
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int T = lp_run_len(r), rc = lp_objective_check(o, m, T);
    if (!rc && c->cross_attn) rc = seq2seq_elsewhere(c);
    if (rc) return rc;
    if (!c->causal && !lean)
        return lp_error(LP_EUNSUPPORTED, "gradients: for encoder models (%s) only the embeddings' gradient is "
                        "available yet (lp_grad_embed_new, lp_grad_batch)", c->arch);
    if (!c->causal) {
        lp_grad *g = NULL;
        if ((rc = encoder_grad_new(&g, m, T))) return rc;
        if ((rc = encoder_grad(g, r, o))) {
            lp_grad_free(g);
            return rc;
        }
        *out = g;
        return LP_OK;
    }
    lp_grad *g = calloc(1, sizeof *g);
    if (!g) return lp_error(LP_ENOMEM, "out of memory");
    g->m = m;
    g->T = T;
    g->lean = lean;
    size_t floats = grad_layout(g, NULL);
    g->arena = calloc(floats, sizeof *g->arena);
    /* Rows after pos carry no gradient: the pass runs over n = pos + 1 rows. */
    int n = o->pos + 1, d = c->d_model, V = c->vocab, qd = c->n_head * c->d_head, kvd = c->n_kv_head * c->d_head;
    float *d_qr = malloc((size_t)n * qd * sizeof *d_qr), *d_kr = malloc((size_t)n * kvd * sizeof *d_kr);
    float *dP = malloc((size_t)n * n * sizeof *dP), *dlog = malloc((size_t)V * sizeof *dlog);
    /* post-norms (Gemma 2): attention's and the MLP's outputs before them, recomputed a layer at a time */
    float *raw = c->sandwich_norm ? malloc((size_t)3 * n * d * sizeof *raw) : NULL;
    float *cos_t, *sin_t, *nsin_t;
    rope_tables_new(&cos_t, &sin_t, &nsin_t, c, n);
    if (!g->arena || !d_qr || !d_kr || !dP || !dlog || !cos_t || !sin_t || !nsin_t || (c->sandwich_norm && !raw)) {
        rc = lp_error(LP_ENOMEM, "out of memory: the gradients of a run of %d tokens need %.1f MB", T,
                      (double)floats * sizeof(float) / 1e6);
        goto done;
    }
    grad_layout(g, g->arena);
    size_t TT = T, L = c->n_layer;
    /* The objective: logits row pos -> final norm -> resid[L] row pos. */
    const float *logits = lp_run_logits(r, o->pos), *x_last = view_data(r, LP_ACT_RESID_POST, c->n_layer - 1);
    const float *lnf_scale = view_data(r, LP_ACT_LN_FINAL_SCALE, 0), *lnf = view_data(r, LP_ACT_LN_FINAL, 0);
    float *d_lnf = g->lnf + (size_t)o->pos * d;
    head_backward(&g->value, d_lnf, m, o, lnf + (size_t)o->pos * d, logits, NULL, dlog, 1);
    float *d_logits = lean ? NULL : g->logits + (size_t)o->pos * V;
    if (!d_logits) {
    } else if (o->kind == LP_OBJ_LOGPROB && c->final_softcap > 0.0f) { /* dlog is before the cap: these are after */
        double lse = log_sum_exp(logits, V);
        for (int j = 0; j < V; j++) d_logits[j] = (float)((j == o->target) - exp(logits[j] - lse));
    } else if (o->kind == LP_OBJ_LOGPROB) {
        memcpy(d_logits, dlog, (size_t)V * sizeof *dlog);
    } else {
        d_logits[o->target] += 1.0f;
        if (o->kind == LP_OBJ_LOGIT_DIFF) d_logits[o->contrast] -= 1.0f;
    }
    norm_backward(g->resid + ((lean ? 0 : L) * TT + o->pos) * d, d_lnf, x_last + (size_t)o->pos * d, lnf_scale + o->pos, m->lnf_w, 1,
                  d, c->norm);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        if (lp_cancelled()) {
            rc = lp_error(LP_ECANCEL, "cancelled");
            goto done;
        }
        size_t ll = lean ? 0 : l; /* where this layer's gradients go */
        tape_layer t = {view_data(r, LP_ACT_RESID_PRE, l), view_data(r, LP_ACT_LN1_SCALE, l), view_data(r, LP_ACT_Q, l),
                        view_data(r, LP_ACT_K, l), view_data(r, LP_ACT_V, l), view_data(r, LP_ACT_PATTERN, l),
                        (long)TT, (long)(TT * TT), view_data(r, LP_ACT_RESID_MID, l), view_data(r, LP_ACT_LN2_SCALE, l),
                        view_data(r, LP_ACT_MLP_PRE, l),
                        lp_mlp_gated(c) ? view_data(r, LP_ACT_MLP_UP, l) : NULL, 0, 0, NULL, NULL, NULL, NULL};
        if (raw) {
            lp_linear_forward(raw, view_data(r, LP_ACT_Z, l), &m->layers[l].o, n);
            lp_linear_forward(raw + (size_t)n * d, view_data(r, LP_ACT_MLP_POST, l), &m->layers[l].down, n);
            t.attn_raw = raw;
            t.mlp_raw = raw + (size_t)n * d;
            lp_run_post_scales(r, l, &t.post1_scale, &t.post2_scale);
        }
        size_t dm = c->d_mlp;
        grad_layer gl = {
            .d_mid = g->resid_mid + ll * TT * d,
            .d_ln1 = g->ln1 + ll * TT * d,
            .d_ln2 = g->ln2 + ll * TT * d,
            .d_q = g->q + ll * TT * qd,
            .d_z = g->z + ll * TT * qd,
            .d_k = g->k + ll * TT * kvd,
            .d_v = g->v + ll * TT * kvd,
            .d_qr = d_qr,
            .d_kr = d_kr,
            .d_pattern = lean ? NULL : g->pattern + ll * c->n_head * TT * TT,
            .dp_ld = (long)TT,
            .dp_hs = (long)(TT * TT),
            .d_pre = g->mlp_pre + ll * TT * dm,
            .d_up = g->mlp_up ? g->mlp_up + ll * TT * dm : NULL,
            .d_post = g->mlp_post + ll * TT * dm,
            .dP = dP,
            .d_raw = raw ? raw + 2 * (size_t)n * d : NULL,
        };
        layer_backward(g->resid + ll * TT * d, &gl, g->resid + (lean ? 0 : ll + 1) * TT * d, &t, m, l, 1, n, cos_t,
                       nsin_t);
    }
    *out = g;
    g = NULL;
done:
    lp_grad_free(g);
    free(d_qr);
    free(d_kr);
    free(dP);
    free(dlog);
    free(raw);
    free(cos_t);
    free(sin_t);
    free(nsin_t);
    return rc;
}

int lp_grad_new(lp_grad **out, const lp_run *r, const lp_objective *o) { return grad_run(out, r, o, false); }
int lp_grad_embed_new(lp_grad **out, const lp_run *r, const lp_objective *o) { return grad_run(out, r, o, true); }

void lp_grad_free(lp_grad *g) {
    if (!g) return;
    free(g->arena);
    free(g);
}

double lp_grad_objective(const lp_grad *g) { return g->value; }
const float *lp_grad_embed(const lp_grad *g) { return g->resid; }

static void view2(lp_view *v, const float *data, int rows, int cols) {
    *v = (lp_view){data, 2, {rows, cols}, {cols, 1}};
}

int lp_grad_view(const lp_grad *g, lp_act_kind kind, int layer, int head, lp_view *out) {
    const lp_config *c = &g->m->cfg;
    int T = g->T, d = c->d_model, dh = c->d_head, H = c->n_head, Hkv = c->n_kv_head, dm = c->d_mlp;
    if ((unsigned)kind >= LP_ACT_COUNT) return lp_error(LP_EINVAL, "unknown activation kind %d", (int)kind);
    if (kind == LP_ACT_LN1_SCALE || kind == LP_ACT_LN2_SCALE || kind == LP_ACT_LN_FINAL_SCALE)
        return lp_error(LP_EINVAL, "%s has no gradient of its own: it is a function of the residual stream; "
                                   "differentiate resid_pre or resid_mid instead", lp_act_name(kind));
    bool per_layer = kind != LP_ACT_LN_FINAL && kind != LP_ACT_LOGITS;
    if (per_layer && (layer < 0 || layer >= c->n_layer))
        return lp_error(LP_EINVAL, "layer %d is out of range: the model has layers 0..%d", layer, c->n_layer - 1);
    bool per_head = kind == LP_ACT_Q || kind == LP_ACT_K || kind == LP_ACT_V || kind == LP_ACT_Z || kind == LP_ACT_PATTERN;
    int heads = (kind == LP_ACT_K || kind == LP_ACT_V) ? Hkv : H;
    if (per_head && (head < -1 || head >= heads))
        return lp_error(LP_EINVAL, "head %d is out of range: %s has heads 0..%d", head, lp_act_name(kind), heads - 1);
    if (!per_head && head != -1 && head != 0) return lp_error(LP_EINVAL, "%s is not per head", lp_act_name(kind));
    if (!c->causal)
        return lp_error(LP_EINVAL, "an encoder's gradient is kept for its summed embeddings only (lp_grad_embed)");
    if (g->lean && !(kind == LP_ACT_RESID_PRE && layer == 0))
        return lp_error(LP_EINVAL, "this gradient kept the embeddings' only (lp_grad_embed_new); use lp_grad_new");
    size_t L = layer, TT = T;
    switch (kind) {
    case LP_ACT_RESID_PRE: view2(out, g->resid + L * TT * d, T, d); break;
    case LP_ACT_RESID_POST: case LP_ACT_MLP_OUT: view2(out, g->resid + (L + 1) * TT * d, T, d); break;
    case LP_ACT_RESID_MID: case LP_ACT_ATTN_OUT: view2(out, g->resid_mid + L * TT * d, T, d); break;
    case LP_ACT_LN1: view2(out, g->ln1 + L * TT * d, T, d); break;
    case LP_ACT_LN2: view2(out, g->ln2 + L * TT * d, T, d); break;
    case LP_ACT_MLP_PRE: view2(out, g->mlp_pre + L * TT * dm, T, dm); break;
    case LP_ACT_MLP_POST: view2(out, g->mlp_post + L * TT * dm, T, dm); break;
    case LP_ACT_MLP_UP:
        if (!g->mlp_up) return lp_error(LP_EINVAL, "mlp_up exists only for gated MLPs (SwiGLU, GeGLU)");
        view2(out, g->mlp_up + L * TT * dm, T, dm);
        break;
    case LP_ACT_LN_FINAL: view2(out, g->lnf, T, d); break;
    case LP_ACT_LOGITS: view2(out, g->logits, T, c->vocab); break;
    case LP_ACT_PATTERN:
        if (head >= 0) view2(out, g->pattern + (L * H + head) * TT * TT, T, T);
        else *out = (lp_view){g->pattern + L * H * TT * TT, 3, {H, T, T}, {(long)(TT * TT), T, 1}};
        break;
    case LP_ACT_Q: case LP_ACT_K: case LP_ACT_V: case LP_ACT_Z: {
        const float *base = kind == LP_ACT_Q ? g->q : kind == LP_ACT_K ? g->k : kind == LP_ACT_V ? g->v : g->z;
        long row = (long)heads * dh;
        base += L * TT * row;
        if (head >= 0) *out = (lp_view){base + (size_t)head * dh, 2, {T, dh}, {row, 1}};
        else *out = (lp_view){base, 3, {T, heads, dh}, {row, dh, 1}};
        break;
    }
    default: return lp_error(LP_EINVAL, "unknown activation kind %d", (int)kind);
    }
    return LP_OK;
}

/* ---- batches ---- */

/* What a chunk of B sequences keeps: with `keep`, every layer's tape (the backward reads
 * it); without, one layer's worth, reused. */
typedef struct {
    int Bmax, T, keep;
    int qkv_ld;                     /* q, k and v fused as the columns of one (rows, qkv_ld) matrix (d_q, d_k,
                                     * d_v too), or 0: apart */
    float *resid;                   /* (L + 1, rows, d) kept, else (2, rows, d) */
    float *ln1_scale, *ln2_scale;   /* (L or 1, rows) */
    float *q, *k, *v;               /* (L or 1, rows, H*dh / Hkv*dh) */
    float *pattern;                 /* (L or 1, Bmax, H, T, T) */
    float *resid_mid;               /* (L or 1, rows, d) */
    float *mlp_pre, *mlp_up;        /* (L or 1, rows, dm) */
    float *attn_raw, *mlp_raw;      /* cfg.sandwich_norm: (L or 1, rows, d), the outputs before the post-norms */
    float *post1_scale, *post2_scale; /* cfg.sandwich_norm: (L or 1, rows) */
    float *ln1, *z, *attn_out, *ln2, *mlp_post, *mlp_out; /* one layer: (rows, d / H*dh / dm) */
    float *xf, *lnf, *lnf_scale;    /* (Bmax, d), (Bmax, d), (Bmax): the rows at pos */
    float *logits, *dlogits;        /* (Bmax, V): logprob only */
    float *d_lnf;                   /* (Bmax, d) */
    float *d_resid;                 /* (rows, d) */
    grad_layer g;                   /* backward scratch, one layer */
    double *acc;                    /* (T, d) */
    /* Shared prefixes (lp_forward_batch_shared; forward only): sequence 0 of a chunk is the
     * base and sequence b's rows before first[b] are the base's, so a layer's rows are only
     * the sequences' suffixes, one after another (rows off[b] .. off[b + 1]); q, k and v are
     * put back together whole in qa, ka, va for rotary and attention, whose z (zf) gives the
     * suffixes' rows back. */
    bool shared;
    const int *first;               /* (Bmax) */
    const size_t *off;              /* (Bmax + 1) */
    float *qa, *ka, *va, *zf;       /* (rows, q's width / H*dh) */
} batch;

static size_t batch_layout(batch *bt, float *base, const lp_config *c, bool logprob) {
    size_t rows = (size_t)bt->Bmax * bt->T, d = c->d_model, qd = (size_t)c->n_head * c->d_head;
    size_t kvd = (size_t)c->n_kv_head * c->d_head, dm = c->d_mlp, D = bt->keep ? c->n_layer : 1, at = 0;
    size_t V = logprob ? c->vocab : 0, B = bt->Bmax, T = bt->T, swi = lp_mlp_gated(c), K = bt->keep;
    size_t sw = c->sandwich_norm;
    size_t qw = bt->qkv_ld ? (size_t)bt->qkv_ld : qd, sep = !bt->qkv_ld; /* q's width, then k's and v's apart */
#define SLICE(field, n) (bt->field = base ? base + at : NULL, at += (n))
    SLICE(resid, (K ? c->n_layer + 1 : 2) * rows * d);
    SLICE(ln1_scale, D * rows);
    SLICE(ln2_scale, D * rows);
    SLICE(q, D * rows * qw);
    SLICE(k, sep * D * rows * kvd);
    SLICE(v, sep * D * rows * kvd);
    SLICE(pattern, D * B * c->n_head * T * T);
    SLICE(resid_mid, D * rows * d);
    SLICE(mlp_pre, D * rows * dm);
    SLICE(mlp_up, swi ? D * rows * dm : 0);
    SLICE(attn_raw, sw * D * rows * d);
    SLICE(mlp_raw, sw * D * rows * d);
    SLICE(post1_scale, sw * D * rows);
    SLICE(post2_scale, sw * D * rows);
    SLICE(ln1, rows * d);
    SLICE(z, rows * qd);
    SLICE(attn_out, rows * d);
    SLICE(ln2, rows * d);
    SLICE(mlp_post, rows * dm);
    SLICE(mlp_out, rows * d);
    SLICE(xf, B * d);
    SLICE(lnf, B * d);
    SLICE(lnf_scale, B);
    SLICE(logits, B * V);
    SLICE(dlogits, B * V);
    SLICE(d_lnf, B * d);
    SLICE(d_resid, K * rows * d);
    SLICE(g.d_mid, K * rows * d);
    SLICE(g.d_ln1, K * rows * d);
    SLICE(g.d_ln2, K * rows * d);
    SLICE(g.d_q, K * rows * qw);
    SLICE(g.d_z, K * rows * qd);
    SLICE(g.d_k, sep * K * rows * kvd);
    SLICE(g.d_v, sep * K * rows * kvd);
    SLICE(g.d_qr, sep * K * rows * qd);
    SLICE(g.d_kr, sep * K * rows * kvd);
    SLICE(g.d_pre, K * rows * dm);
    SLICE(g.d_up, K * swi * rows * dm);
    SLICE(g.d_post, K * rows * dm);
    SLICE(g.dP, K * T * T);
    SLICE(g.d_raw, sw * K * rows * d);
    size_t sh = bt->shared;
    SLICE(qa, sh * rows * qw);
    SLICE(ka, sh * sep * rows * kvd);
    SLICE(va, sh * sep * rows * kvd);
    SLICE(zf, sh * rows * qd);
#undef SLICE
    if (bt->qkv_ld && base) {
        bt->g.d_k = bt->g.d_q + qd;
        bt->g.d_v = bt->g.d_k + kvd;
        bt->g.dq_ld = bt->g.dkv_ld = bt->qkv_ld;
    }
    return at;
}

/* Layer l's q, k, v on the tape (D: its slot), and their row strides. */
static void batch_qkv(float **q, float **k, float **v, long *qs, long *ks, const batch *bt, const lp_config *c, size_t D) {
    size_t rows = (size_t)bt->Bmax * bt->T, qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head;
    if (bt->qkv_ld) {
        *q = bt->q + D * rows * bt->qkv_ld;
        *k = *q + qd;
        *v = *k + kvd;
        *qs = *ks = bt->qkv_ld;
        return;
    }
    *q = bt->q + D * rows * qd;
    *k = bt->k + D * rows * kvd;
    *v = bt->v + D * rows * kvd;
    *qs = (long)qd;
    *ks = (long)kvd;
}

/* Where row t of sequence b is in a layer's rows (t >= first[b] when the prefixes are shared). */
static size_t batch_row(const batch *bt, int b, int t) {
    return bt->shared ? bt->off[b] + (size_t)(t - bt->first[b]) : (size_t)b * bt->T + (size_t)t;
}

/* Shared prefixes: each sequence's T rows of width w into whole (B, T, w) from the layer's
 * rows (src), those before first[b] from the base's (sequence 0, whose rows are all there). */
static void shared_whole(float *whole, const float *src, size_t w, const batch *bt, int B) {
    size_t T = bt->T;
    for (int b = 0; b < B; b++) {
        size_t f = (size_t)bt->first[b];
        memcpy(whole + b * T * w, src, f * w * sizeof *whole);
        memcpy(whole + (b * T + f) * w, src + bt->off[b] * w, (T - f) * w * sizeof *whole);
    }
}

/* The chunk's sequences through one layer. With only_pos >= 0 (the last layer, whose output
 * the objective reads at one position) the MLP half runs on that row of each sequence alone:
 * z's rows are gathered to the front and attn_out, resid_mid, the norm, the MLP and resid_out
 * are compact (B, .): a twelfth of GPT-2 small's work is spared. */
static void batch_layer_forward(batch *bt, const lp_model *m, int l, int B, int only_pos, const float *cos_t,
                                const float *sin_t) {
    const lp_config *c = &m->cfg;
    const lp_layer *w = &m->layers[l];
    int T = bt->T, n = bt->shared ? (int)bt->off[B] : B * T, d = c->d_model;
    size_t rows = (size_t)bt->Bmax * T, qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head;
    size_t dm = c->d_mlp, D = bt->keep ? (size_t)l : 0, nd = (size_t)n * d, nm = (size_t)n * dm;
    const float *x = bt->resid + (bt->keep ? (size_t)l : (size_t)(l & 1)) * rows * d;
    float *y = bt->resid + (bt->keep ? (size_t)l + 1 : (size_t)((l + 1) & 1)) * rows * d;
    float *q, *k, *v, *mid = bt->resid_mid + D * rows * d, *pre = bt->mlp_pre + D * rows * dm;
    long qs, ks;
    batch_qkv(&q, &k, &v, &qs, &ks, bt, c, D);
    float *up = bt->mlp_up ? bt->mlp_up + D * rows * dm : NULL;

    lp_norm(bt->ln1, bt->ln1_scale + D * rows, x, w->ln1_w, w->ln1_b, n, d, c->norm, c->norm_eps);
    lp_linear f;
    float *pattern = bt->pattern + D * bt->Bmax * c->n_head * (size_t)T * T;
    if (bt->qkv_ld && lp_qkv_columns(&f, w)) {
        lp_linear_forward(q, bt->ln1, &f, n);
    } else {
        lp_linear_forward(q, bt->ln1, &w->q, n);
        lp_linear_forward(k, bt->ln1, &w->k, n);
        lp_linear_forward(v, bt->ln1, &w->v, n);
    }
    float *z = bt->z;
    if (bt->shared) { /* from here to z, whole sequences */
        if (bt->qkv_ld) {
            shared_whole(bt->qa, q, (size_t)bt->qkv_ld, bt, B);
            q = bt->qa, k = q + qd, v = k + kvd;
        } else {
            shared_whole(bt->qa, q, qd, bt, B);
            shared_whole(bt->ka, k, kvd, bt, B);
            shared_whole(bt->va, v, kvd, bt, B);
            q = bt->qa, k = bt->ka, v = bt->va;
        }
        z = bt->zf;
    }
    if (c->pos != LP_POS_LEARNED)
        for (int b = 0; b < B; b++) {
            lp_rope_rows(q + (size_t)b * T * qd, c, T, c->n_head, cos_t, sin_t);
            lp_rope_rows(k + (size_t)b * T * kvd, c, T, c->n_kv_head, cos_t, sin_t);
        }
    if (T <= ATTN_LOOP_MAX_T)
        attention_forward_short(pattern, z, c, w->window, q, k, v, qs, ks, B, T, bt->shared ? bt->first : NULL);
    else lp_attention_seqs(pattern, z, c, w->window, q, k, v, B, T);
    if (only_pos >= 0) { /* row b takes row (b, only_pos): never one a later b still reads */
        for (int b = 0; b < B; b++)
            memmove(bt->z + (size_t)b * qd, z + ((size_t)b * T + only_pos) * qd, qd * sizeof *bt->z);
        n = B, nd = (size_t)B * d, nm = (size_t)B * dm;
    } else if (bt->shared) { /* the suffixes' rows back */
        for (int b = 0; b < B; b++)
            memcpy(bt->z + bt->off[b] * qd, z + ((size_t)b * T + bt->first[b]) * qd,
                   (bt->off[b + 1] - bt->off[b]) * qd * sizeof *bt->z);
    }
    if (c->sandwich_norm) { /* Gemma 2: attn_out = post-norm(o(z)), the input kept for the backward */
        float *raw = bt->attn_raw + D * rows * d;
        lp_linear_forward(raw, bt->z, &w->o, n);
        lp_norm(bt->attn_out, bt->post1_scale + D * rows, raw, w->post1_w, NULL, n, d, c->norm, c->norm_eps);
    } else {
        lp_linear_forward(bt->attn_out, bt->z, &w->o, n);
    }
    if (only_pos >= 0)
        for (int b = 0; b < B; b++) {
            const float *xb = x + batch_row(bt, b, only_pos) * d;
            for (int i = 0; i < d; i++) mid[(size_t)b * d + i] = xb[i] + bt->attn_out[(size_t)b * d + i];
        }
    else add_floats(mid, x, bt->attn_out, nd);
    /* A parallel block's MLP reads the layer's input: x's rows, or (compact) its rows at only_pos,
     * gathered into y until resid_out is written there. */
    const float *mlp_in = mid;
    if (c->parallel_block && only_pos >= 0) {
        for (int b = 0; b < B; b++)
            memcpy(y + (size_t)b * d, x + batch_row(bt, b, only_pos) * d, (size_t)d * sizeof *y);
        mlp_in = y;
    } else if (c->parallel_block) {
        mlp_in = x;
    }
    lp_norm(bt->ln2, bt->ln2_scale + D * rows, mlp_in, w->ln2_w, w->ln2_b, n, d, c->norm, c->norm_eps);
    if (lp_mlp_gated(c)) {
        lp_linear_forward(pre, bt->ln2, &w->gate, n);
        lp_linear_forward(up, bt->ln2, &w->up, n);
        lp_gated_rows(bt->mlp_post, pre, up, nm, c->mlp);
    } else {
        lp_linear_forward(pre, bt->ln2, &w->up, n);
        lp_act_rows(bt->mlp_post, pre, nm, c->mlp);
    }
    if (c->sandwich_norm) {
        float *raw = bt->mlp_raw + D * rows * d;
        lp_linear_forward(raw, bt->mlp_post, &w->down, n);
        lp_norm(bt->mlp_out, bt->post2_scale + D * rows, raw, w->post2_w, NULL, n, d, c->norm, c->norm_eps);
    } else {
        lp_linear_forward(bt->mlp_out, bt->mlp_post, &w->down, n);
    }
    add_floats(y, mid, bt->mlp_out, nd);
}

/* Sequence i0 + b - 1 of a chunk with shared prefixes into its rows (the base is sequence 0):
 * its first row clamped to pos (rows up to pos are what the objective reads), its suffix
 * from the whole input, which `whole` (T, d) takes. */
static void shared_inputs(batch *bt, int *first, size_t *off, int B, int i0, const int *firsts, int pos,
                          const float *base, lp_embed_fn input, void *ctx, float *whole, size_t d) {
    size_t T = bt->T;
    first[0] = 0, off[0] = 0, off[1] = T;
    memcpy(bt->resid, base, T * d * sizeof *bt->resid);
    for (int b = 1; b < B; b++) {
        int fb = firsts[i0 + b - 1];
        first[b] = fb < 0 ? 0 : fb > pos ? pos : fb;
        off[b + 1] = off[b] + T - (size_t)first[b];
        input(whole, i0 + b - 1, ctx);
        memcpy(bt->resid + off[b] * d, whole + (size_t)first[b] * d, (T - (size_t)first[b]) * d * sizeof *whole);
    }
}

/* lp_grad_batch, and with base (T, d) and firsts (n) lp_forward_batch_shared's forward. */
static int grad_batch(const lp_model *m, int T, int n, lp_embed_fn input, void *ctx, const lp_objective *o,
                      const double *weight, double *f, float *grad_sum, const float *base, const int *firsts) {
    const lp_config *c = &m->cfg;
    int rc = lp_objective_check(o, m, T);
    if (!rc && c->cross_attn) rc = seq2seq_elsewhere(c);
    if (rc) return rc;
    if (T < 1 || T > c->n_ctx) return lp_error(LP_ERANGE, "%d tokens: the model takes 1..%d", T, c->n_ctx);
    if (n < 1) {
        if (grad_sum) memset(grad_sum, 0, (size_t)T * c->d_model * sizeof *grad_sum);
        return LP_OK;
    }
    if (!c->causal) return encoder_batch(m, T, n, input, ctx, o, weight, f, grad_sum);
    bool shared = base && firsts && !grad_sum;
    bool logprob = o->kind == LP_OBJ_LOGPROB;
    /* The last layer's MLP half runs on row pos alone, except under post-norms (Gemma 2),
     * whose backward reads whole layers of the tape. */
    bool compact = !c->sandwich_norm;
    batch bt = {.Bmax = 1, .T = T, .keep = grad_sum != NULL, .shared = shared};
    int S = shared; /* sequences a chunk has beside the inputs: the base */
    lp_linear fused;
    /* fused q|k|v: a layout the short attention reads (rotary rotates q and k apart) */
    if (c->pos == LP_POS_LEARNED && T <= ATTN_LOOP_MAX_T && lp_qkv_columns(&fused, &m->layers[0])) {
        bt.qkv_ld = fused.out;
        for (int l = 1; l < c->n_layer; l++)
            if (!lp_qkv_columns(&fused, &m->layers[l])) bt.qkv_ld = 0;
    }
    size_t per_seq = batch_layout(&bt, NULL, c, logprob);
    int most = (int)(BATCH_BUDGET / (per_seq * sizeof(float))) - S; /* inputs a chunk may take */
    if (most < 1) most = 1;
    if (most > n) most = n;
    int chunks = (n + most - 1) / most;
    most = (n + chunks - 1) / chunks; /* chunks of even size */
    bt.Bmax = most + S;
    size_t floats = batch_layout(&bt, NULL, c, logprob), d = c->d_model;
    float *arena = batch_arena_new(floats), *cos_t, *sin_t, *nsin_t;
    double *fb = malloc((size_t)bt.Bmax * sizeof *fb);
    bt.acc = calloc((size_t)T * d, sizeof *bt.acc);
    int *first = shared ? malloc((size_t)bt.Bmax * sizeof *first) : NULL;
    size_t *off = shared ? malloc(((size_t)bt.Bmax + 1) * sizeof *off) : NULL;
    float *whole = shared ? malloc((size_t)T * d * sizeof *whole) : NULL;
    bt.first = first, bt.off = off;
    rope_tables_new(&cos_t, &sin_t, &nsin_t, c, T);
    if (!arena || !fb || !bt.acc || !cos_t || !sin_t || !nsin_t || (shared && (!first || !off || !whole))) {
        rc = lp_error(LP_ENOMEM, "out of memory: a batch of %d sequences of %d tokens needs %.1f MB", bt.Bmax, T,
                      (double)floats * sizeof(float) / 1e6);
        goto done;
    }
    batch_layout(&bt, arena, c, logprob);
    size_t rows = (size_t)bt.Bmax * T, L = c->n_layer;
    for (int i0 = 0; i0 < n; i0 += most) {
        int B = (n - i0 < most ? n - i0 : most) + S;
        if (shared) shared_inputs(&bt, first, off, B, i0, firsts, o->pos, base, input, ctx, whole, d);
        else
            for (int b = 0; b < B; b++) input(bt.resid + (size_t)b * T * d, i0 + b, ctx);
        for (int l = 0; l < c->n_layer; l++) {
            if (lp_cancelled()) {
                rc = lp_error(LP_ECANCEL, "cancelled");
                goto done;
            }
            batch_layer_forward(&bt, m, l, B, compact && l == c->n_layer - 1 ? o->pos : -1, cos_t, sin_t);
        }
        /* Each sequence's row pos (the last layer's output is compact, or its row pos) through
         * the final norm to the objective. */
        const float *out_rows = bt.resid + (bt.keep ? L : L & 1) * rows * d;
        for (int b = 0; b < B; b++)
            memcpy(bt.xf + (size_t)b * d, out_rows + (compact ? (size_t)b : batch_row(&bt, b, o->pos)) * d,
                   d * sizeof *bt.xf);
        lp_norm(bt.lnf, bt.lnf_scale, bt.xf, m->lnf_w, m->lnf_b, B, (int)d, c->norm, c->norm_eps);
        head_backward(fb, bt.d_lnf, m, o, bt.lnf, NULL, bt.logits, bt.dlogits, B);
        if (f) memcpy(f + i0, fb + S, (size_t)(B - S) * sizeof *fb);
        if (!bt.keep) continue;

        /* the gradient with respect to the last layer's compact output, (B, d), or its rows pos */
        memset(bt.d_resid, 0, (size_t)B * (compact ? 1 : T) * d * sizeof *bt.d_resid);
        if (compact) norm_backward(bt.d_resid, bt.d_lnf, bt.xf, bt.lnf_scale, m->lnf_w, B, (int)d, c->norm);
        for (int b = 0; !compact && b < B; b++)
            norm_backward(bt.d_resid + ((size_t)b * T + o->pos) * d, bt.d_lnf + (size_t)b * d, bt.xf + (size_t)b * d,
                          bt.lnf_scale + b, m->lnf_w, 1, (int)d, c->norm);
        size_t dm = c->d_mlp;
        for (int l = c->n_layer - 1; l >= 0; l--) {
            if (lp_cancelled()) {
                rc = lp_error(LP_ECANCEL, "cancelled");
                goto done;
            }
            size_t ll = l;
            float *q, *k, *v;
            long qs, ks;
            batch_qkv(&q, &k, &v, &qs, &ks, &bt, c, ll);
            tape_layer t = {bt.resid + ll * rows * d, bt.ln1_scale + ll * rows, q, k, v,
                            bt.pattern + ll * bt.Bmax * c->n_head * (size_t)T * T, T, (long)T * T,
                            bt.resid_mid + ll * rows * d, bt.ln2_scale + ll * rows, bt.mlp_pre + ll * rows * dm,
                            bt.mlp_up ? bt.mlp_up + ll * rows * dm : NULL, qs, ks, NULL, NULL, NULL, NULL};
            if (c->sandwich_norm) {
                t.attn_raw = bt.attn_raw + ll * rows * d;
                t.mlp_raw = bt.mlp_raw + ll * rows * d;
                t.post1_scale = bt.post1_scale + ll * rows;
                t.post2_scale = bt.post2_scale + ll * rows;
            }
            if (compact && l == c->n_layer - 1) last_layer_backward(bt.d_resid, &bt.g, bt.d_resid, &t, m, l, B, T, o->pos, cos_t, nsin_t);
            else layer_backward(bt.d_resid, &bt.g, bt.d_resid, &t, m, l, B, T, cos_t, nsin_t);
        }
        for (int b = 0; b < B; b++) {
            double wb = weight ? weight[i0 + b] : 1.0;
            const float *gb = bt.d_resid + (size_t)b * T * d;
            for (size_t j = 0; j < (size_t)T * d; j++) bt.acc[j] += wb * gb[j];
        }
    }
    if (grad_sum)
        for (size_t j = 0; j < (size_t)T * d; j++) grad_sum[j] = (float)bt.acc[j];
done:
    batch_arena_free(arena, floats);
    free(fb);
    free(bt.acc);
    free(first);
    free(off);
    free(whole);
    free(cos_t);
    free(sin_t);
    free(nsin_t);
    return rc;
}

int lp_grad_batch(const lp_model *m, int T, int n, lp_embed_fn input, void *ctx, const lp_objective *o,
                  const double *weight, double *f, float *grad_sum) {
    return grad_batch(m, T, n, input, ctx, o, weight, f, grad_sum, NULL, NULL);
}

int lp_forward_batch_shared(const lp_model *m, int T, int n, lp_embed_fn input, void *ctx, const float *base,
                            const int *first, const lp_objective *o, double *f) {
    return grad_batch(m, T, n, input, ctx, o, NULL, f, NULL, base, first);
}
