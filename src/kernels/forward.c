/* Forward kernels. Matrix products go to cblas_sgemm; the rest are short loops whose
 * reductions accumulate in double so that results stay within 1e-4 of a float64 reference. */
#include "kernels/forward.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels/decode.h"
#include "kernels/expf8.h"
#include "kernels/gelu_erf.h"
#include "kernels/v16.h"
#include "util/parallel.h"

/* Rows per chunk of element-wise work over rows of width w: about 16k floats a chunk, so
 * that a chunk outweighs waking a thread, and short runs stay on one. */
static size_t grain_rows(int w) { return w >= 16384 ? 1 : (size_t)(16384 / w); }

#define GRAIN_FLOATS ((size_t)1 << 15)

typedef struct {
    float *y;
    const float *b;
    int out;
} bias_job;

/* Rows of y set to the bias, 16 floats at a time where the width allows: a memcpy call per
 * row cost more than its copy at the narrow widths (64) of training's layers (and a loop
 * copying floats the compiler turns back into such calls). */
static void bias_fill(void *ctx, size_t i0, size_t i1) {
    const bias_job *j = ctx;
    size_t out = (size_t)j->out;
    for (size_t i = i0; i < i1; i++) {
        float *y = j->y + i * out;
        size_t k = 0;
        for (; k + V16_LANES <= out; k += V16_LANES) store16(y + k, load16(j->b + k));
        for (; k < out; k++) y[k] = j->b[k];
    }
}

void lp_linear_forward(float *y, const float *x, const lp_linear *lin, int n) {
    if (n == 1) { /* one row, the shape of every generation step: kernels/decode.c */
        lp_linear r = lp_linear_one_row(lin);
        lp_decode_linear(y, x, &r);
        return;
    }
    /* A bias goes into y first and the product is added to it (beta 1): one pass over y
     * instead of OpenBLAS zeroing it (beta 0) and a second pass adding the bias. */
    float beta = 0.0f;
    if (lin->b) {
        bias_job j = {y, lin->b, lin->out};
        lp_parallel_for((size_t)n, grain_rows(lin->out), bias_fill, &j);
        beta = 1.0f;
    }
    lp_linear r = lp_linear_rows(lin, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, r.trans ? CblasTrans : CblasNoTrans, n, r.out, r.in, 1.0f, x, r.in, r.w,
                r.ld, beta, y, r.out);
}

/* Sums of a row in double over 8 lanes, added up in a fixed order at the end: the compiler
 * can vectorise it (one running double sum cannot be), and the result does not depend on
 * how rows are shared out. */
#define LANES 8

static double sum_lanes(const double *acc) {
    double s = 0.0;
    for (int k = 0; k < LANES; k++) s += acc[k];
    return s;
}

/* x[0..n) summed in double: LANES lanes, then the tail, in that fixed order. */
static double lane_sum(const float *x, int n) {
    double acc[LANES] = {0};
    int body = n - n % LANES;
    for (int j = 0; j < body; j += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += x[j + k];
    double sum = sum_lanes(acc);
    for (int j = body; j < n; j++) sum += x[j];
    return sum;
}

double lp_row_mean(const float *x, int d) { return lane_sum(x, d) / d; }

typedef struct {
    float *y, *scale;
    const float *x, *w, *b;
    int d;
    lp_norm_kind kind;
    float eps;
} norm_job;

/* y (16) = the normalised x times w plus b, through restrict pointers: a loop -O2's cheap
 * cost model vectorises (over a runtime d it stayed scalar, most of a row's time). Without a
 * bias b is NO_BIAS_16: -0 is the additive identity (x + -0 is x, -0 included), so such a row
 * has the bare product's bits. */
static const float NO_BIAS_16[16] = {-0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f,
                                     -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f};

static void norm_out_16(float *restrict y, const float *restrict x, const float *restrict w,
                        const float *restrict b, double mean, float s) {
    for (int k = 0; k < 16; k++) y[k] = (float)((x[k] - mean) * s) * w[k] + b[k];
}

static void norm_rows(void *ctx, size_t i0, size_t i1) {
    const norm_job *jb = ctx;
    int d = jb->d, body = d - d % LANES;
    const float *w = jb->w, *b = jb->b;
    for (size_t i = i0; i < i1; i++) {
        const float *xi = jb->x + i * d;
        float *yi = jb->y + i * d;
        double mean = jb->kind == LP_NORM_LAYERNORM ? lp_row_mean(xi, d) : 0.0, acc[LANES] = {0};
        for (int j = 0; j < body; j += LANES)
            for (int k = 0; k < LANES; k++) {
                double c = xi[j + k] - mean;
                acc[k] += c * c;
            }
        double var = sum_lanes(acc);
        for (int j = body; j < d; j++) {
            double c = xi[j] - mean;
            var += c * c;
        }
        var /= d;
        float s = (float)(1.0 / sqrt(var + jb->eps));
        if (jb->scale) jb->scale[i] = s;
        int j = 0;
        for (; j + 16 <= d; j += 16) norm_out_16(yi + j, xi + j, w + j, b ? b + j : NO_BIAS_16, mean, s);
        for (; j < d; j++) yi[j] = (float)((xi[j] - mean) * s) * w[j] + (b ? b[j] : -0.0f);
    }
}

void lp_norm(float *y, float *scale, const float *x, const float *w, const float *b, int n, int d, lp_norm_kind kind,
             float eps) {
    norm_job j = {y, scale, x, w, b, d, kind, eps};
    lp_parallel_for((size_t)n, grain_rows(d), norm_rows, &j);
}

void lp_embed(float *x, const lp_model *m, const int *ids, const int *types, int t0, int n) {
    const lp_config *c = &m->cfg;
    int d = c->d_model;
    lp_embed_sum(x, m, ids, types, t0, n);
    if (c->emb_norm)
        for (int i = 0; i < n; i++) {
            float scale;
            lp_norm(x + (size_t)i * d, &scale, x + (size_t)i * d, m->emb_ln_w, m->emb_ln_b, 1, d, LP_NORM_LAYERNORM,
                    c->norm_eps);
        }
}

void lp_embed_sum(float *x, const lp_model *m, const int *ids, const int *types, int t0, int n) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, counted = 0;
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d;
        memcpy(xi, m->tok_emb + (size_t)ids[i] * d, (size_t)d * sizeof *xi);
        if (c->emb_scale) /* Gemma2Model: hidden_states * normalizer */
            for (int j = 0; j < d; j++) xi[j] *= c->emb_scale;
        if (m->pos_emb) {
            /* RoBERTa: non-padding tokens count from padding_idx + 1, padding sits at padding_idx. */
            int row = t0 + i;
            if (c->pos_offset > 0) row = ids[i] == c->pos_pad_id ? c->pos_offset - 1 : c->pos_offset + counted++;
            const float *p = m->pos_emb + (size_t)row * d;
            for (int j = 0; j < d; j++) xi[j] += p[j];
        }
        if (m->type_emb) {
            const float *p = m->type_emb + (size_t)(types ? types[i] : 0) * d;
            for (int j = 0; j < d; j++) xi[j] += p[j];
        }
    }
}

void lp_rope_tables(float *cos_t, float *sin_t, const lp_config *c, int t0, int n) {
    /* Rows of d_head / 2 whatever the rotary width: the first rope_dims / 2 entries hold the
     * angles (inv_freq = theta^(-2f / rope_dims), as GPTNeoXRotaryEmbedding over rotary_ndims),
     * the rest the identity. */
    int half = c->d_head / 2, rot = lp_rope_dims(c), rh = rot / 2;
    for (int i = 0; i < n; i++)
        for (int f = 0; f < half; f++) {
            double inv_freq = pow((double)c->rope_theta, -2.0 * f / rot);
            double angle = f < rh ? (double)(t0 + i) * inv_freq : 0.0;
            cos_t[(size_t)i * half + f] = (float)cos(angle);
            sin_t[(size_t)i * half + f] = (float)sin(angle);
        }
}

/* Rotates the first rot dims of each head's vector in x (n, heads * dh) by its position;
 * the tables' rows are dh / 2 wide. Pairs are (2f, 2f+1) in the interleaved layout, (f,
 * f + rot/2) in the rotate-half layout (rotate_half over the rotary dims only). */
static void rope(float *x, int n, int heads, int dh, int rot, lp_pos_kind kind, const float *cos_t,
                 const float *sin_t) {
    int half = dh / 2, rh = rot / 2;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)i * heads + h) * dh;
            for (int f = 0; f < rh; f++) {
                int a = kind == LP_POS_ROPE_INTERLEAVED ? 2 * f : f;
                int b = kind == LP_POS_ROPE_INTERLEAVED ? 2 * f + 1 : f + rh;
                float c = cos_t[(size_t)i * half + f], s = sin_t[(size_t)i * half + f];
                float va = v[a], vb = v[b];
                v[a] = va * c - vb * s;
                v[b] = va * s + vb * c;
            }
        }
}

/* expf of anything below -88 is under FLT_MIN (a denormal, or 0): taken as 0 without
 * calling expf, whose underflow path is slow (T5's unscaled scores reach it often). Such an
 * entry is under 1e-38, where it changes no sum the pattern enters. */
#define EXP_FLOOR (-88.0f)

/* Softmax of row[0..len) in place; row[len..ld) set to 0 (the causal mask). stats, when
 * not NULL, gets the row's entropy and its largest probability, which head metrics would
 * otherwise read the whole pattern again for (a log per entry). */
static void softmax_causal(float *row, int len, int ld, float *stats) {
    float mx = row[0];
    int body = len - len % 16;
    if (body) { /* max over 16 lanes: vectorised, and the same maximum in any order */
        float m[16];
        memcpy(m, row, sizeof m);
        for (int j = 16; j < body; j += 16)
            for (int k = 0; k < 16; k++) m[k] = row[j + k] > m[k] ? row[j + k] : m[k];
        for (int k = 0; k < 16; k++)
            if (m[k] > mx) mx = m[k];
    }
    for (int j = body; j < len; j++)
        if (row[j] > mx) mx = row[j];
    double dot = lp_softmax_exp(row, len, mx, EXP_FLOOR);
    double sum = lane_sum(row, len);
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < len; j++) row[j] *= inv;
    if (ld > len) memset(row + len, 0, (size_t)(ld - len) * sizeof *row);
    if (stats) {
        /* -sum p log p with p = e / Z, log p = (s - mx) - log Z; the largest entry is
         * expf(0) * inv = inv exactly */
        stats[0] = (float)(log(sum) - dot / sum);
        stats[1] = inv;
    }
}

/* A query row's scores row[0..len) (len - 1: the query's own position) to its pattern: soft-
 * capped to cap * tanh(s / cap) when cap > 0 (Gemma 2's attn_logit_softcapping, before the
 * mask), then softmaxed over the keys [start, len) a sliding window leaves, zeros elsewhere
 * up to ld. */
static void score_row(float *row, int len, int ld, int start, float cap, float *stats) {
    lp_softcap(row + start, (size_t)(len - start), cap);
    softmax_causal(row + start, len - start, ld - start, stats);
    if (start) memset(row, 0, (size_t)start * sizeof *row);
}

/* The first key a query at position p sees in a layer with a sliding window (0: none):
 * keys k with p - window < k <= p, as Gemma 2's sliding mask keeps. */
static int window_start(int window, int p) { return window > 0 && p - window + 1 > 0 ? p - window + 1 : 0; }

float lp_attn_scale(const lp_config *c) {
    return c->attn_scale > 0.0f ? c->attn_scale : c->unscaled_attn ? 1.0f : 1.0f / sqrtf((float)c->d_head);
}

void lp_softcap(float *x, size_t n, float cap) {
    if (cap > 0.0f)
        for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

/* Rows of queries are taken in blocks so that each block's scores cover only the keys it
 * may see: causal attention then costs about half of the full T x T square. Bidirectional
 * attention (encoders) gives every block all t0 + n keys. */
#define ATTN_BLOCK 64

int lp_rel_bucket(int rel, bool bidirectional, int num_buckets, int max_distance) {
    int bucket = 0, dist;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) bucket = num_buckets;
        dist = rel < 0 ? -rel : rel;
    } else {
        dist = rel < 0 ? -rel : 0;
    }
    int max_exact = num_buckets / 2;
    if (dist < max_exact) return bucket + dist;
    /* max_exact + (log(float(dist) / max_exact) / log(max_distance / max_exact) * (num_buckets -
     * max_exact)).to(long): each step rounded to float32 as torch does */
    float v = logf((float)dist / (float)max_exact);
    v = v / (float)log((double)max_distance / max_exact);
    v = v * (float)(num_buckets - max_exact);
    int large = max_exact + (int)v;
    return bucket + (large < num_buckets - 1 ? large : num_buckets - 1);
}

/* Adds the relative position bias of head h to rows [i0, i0 + rows) of a block of scores
 * (query row i is at position t0 + i), over keys [0, keys). */
static void add_rel_bias(float *scores, int ld, const lp_layer_io *io, int H, int h, int t0, int i0, int rows,
                         int keys) {
    for (int i = 0; i < rows; i++) {
        float *row = scores + (size_t)i * ld;
        const int *bucket = io->rel_bucket + io->rel_off - (t0 + i0 + i);
        for (int j = 0; j < keys; j++) row[j] += io->rel_bias[bucket[j] * H + h];
    }
}

/* Rows of scores softmaxed in one parallel pass between the products that make them and
 * the products that read them: row r is head h0 + r / n's query row r % n. */
typedef struct {
    const lp_layer_io *io;
    float *pattern;
    int ld, n, t0, keys, H, h0; /* keys: every row's in bidirectional attention, else 0 (causal) */
    int window;                 /* the layer's sliding window, 0: none */
    float cap;                  /* the scores' soft cap, 0: none */
} softmax_job;

static void softmax_rows(void *ctx, size_t r0, size_t r1) {
    const softmax_job *j = ctx;
    for (size_t r = r0; r < r1; r++) {
        int h = j->h0 + (int)(r / (size_t)j->n), i = (int)(r % (size_t)j->n), len = j->keys ? j->keys : j->t0 + i + 1;
        float *row = j->pattern + r * j->ld;
        if (j->io && j->io->rel_bias) add_rel_bias(row, j->ld, j->io, j->H, h, j->t0, i, 1, len);
        float *stats = j->io && j->io->pattern_stats ? j->io->pattern_stats + ((size_t)h * j->n + i) * 2 : NULL;
        score_row(row, len, j->ld, j->keys ? 0 : window_start(j->window, j->t0 + i), j->cap, stats);
    }
}

typedef struct {
    const lp_config *c;
    const lp_layer_io *io;
    int window, t0, n;
    float scale;
} heads_job;

/* Heads [h0, h1) of a block of n > 1 queries. Each block's scores cover only the keys it
 * may see; the rest of a row is zeroed by the softmax, so the second product over the
 * block's keys reads zeros beyond a row's. A head at a time, so that its scores are still
 * in cache for the second product. Inside a pool job (attention below) OpenBLAS is set to
 * one thread, so the softmax's lp_parallel_for runs on the calling thread. */
static void attention_heads(void *ctx, size_t h0, size_t h1) {
    const heads_job *j = ctx;
    const lp_config *c = j->c;
    const lp_layer_io *io = j->io;
    int H = c->n_head, G = c->n_head / c->n_kv_head, dh = c->d_head, ld = io->pattern_ld, n = j->n, t0 = j->t0;
    int qd = H * dh, kvd = c->n_kv_head * dh;
    for (int h = (int)h0; h < (int)h1; h++) {
        const float *k = io->k + (size_t)(h / G) * dh, *v = io->v + (size_t)(h / G) * dh;
        float *p = io->pattern + (size_t)h * n * ld;
        for (int i0 = 0; i0 < n; i0 += ATTN_BLOCK) {
            int rows = n - i0 < ATTN_BLOCK ? n - i0 : ATTN_BLOCK, keys = c->causal ? t0 + i0 + rows : t0 + n;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, dh, j->scale,
                        io->q + (size_t)i0 * qd + h * dh, qd, k, kvd, 0.0f, p + (size_t)i0 * ld, ld);
        }
        softmax_job sj = {io, p, ld, n, t0, c->causal ? 0 : t0 + n, H, h, j->window, c->attn_softcap};
        lp_parallel_for((size_t)n, grain_rows(c->causal ? (t0 + n + 1) / 2 : t0 + n), softmax_rows, &sj);
        for (int i0 = 0; i0 < n; i0 += ATTN_BLOCK) {
            int rows = n - i0 < ATTN_BLOCK ? n - i0 : ATTN_BLOCK, keys = c->causal ? t0 + i0 + rows : t0 + n;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, keys, 1.0f, p + (size_t)i0 * ld, ld, v, kvd,
                        0.0f, io->z + (size_t)i0 * qd + h * dh, qd);
        }
    }
}

static void attention(const lp_config *c, int window, const lp_layer_io *io, int t0, int n) {
    int H = c->n_head, G = c->n_head / c->n_kv_head, dh = c->d_head, ld = io->pattern_ld;
    int kvd = c->n_kv_head * dh;
    float scale = lp_attn_scale(c);
    if (n == 1) {
        /* One query (a generation step): plain loops beat two tiny sgemm calls. */
        int keys = t0 + 1; /* also an encoder's: its runs start at t0 = 0, and T = 1 has one key */
        for (int h = 0; h < H; h++) {
            int g = h / G; /* grouped-query attention: G query heads share one key/value head */
            const float *k = io->k + (size_t)g * dh, *v = io->v + (size_t)g * dh;
            float *p = io->pattern + (size_t)h * ld;
            const float *q = io->q + (size_t)h * dh;
            float *z = io->z + (size_t)h * dh;
            lp_decode_scores(p, q, k, keys, dh, kvd, scale);
            if (io->rel_bias) add_rel_bias(p, ld, io, H, h, t0, 0, 1, keys);
            score_row(p, keys, ld, c->causal ? window_start(window, t0) : 0, c->attn_softcap,
                      io->pattern_stats ? io->pattern_stats + (size_t)h * 2 : NULL);
            lp_decode_mix(z, p, v, keys, dh, kvd);
        }
        return;
    }
    heads_job j = {c, io, window, t0, n, scale};
    int threads = lp_parallel_threads();
    if (threads > 1 && H > 1) {
        /* Whole heads on the pool's threads, OpenBLAS on one thread in each: a head's
         * products are too small for OpenBLAS to share out well (about 100 GFLOP/s on two
         * threads at T = 1024), and the head's scores stay in its thread's cache for the
         * softmax and the second product. One-thread products have the same bits whatever
         * the thread count. */
        openblas_set_num_threads(1);
        lp_parallel_for_threads((size_t)H, 1, threads, attention_heads, &j);
        openblas_set_num_threads(threads);
    } else {
        attention_heads(&j, 0, (size_t)H);
    }
}

/* Attention of packed sequences (lp_layer_io's seg), each from position 0 over its own rows. */
static void packed_attention(const lp_config *c, int window, const lp_layer_io *io) {
    size_t qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head, p = 0;
    for (int s = 0; s < io->n_seg; s++) {
        size_t r0 = (size_t)io->seg[s];
        int n = io->seg[s + 1] - io->seg[s];
        lp_layer_io one = {.q = io->q + r0 * qd, .k = io->k + r0 * kvd, .v = io->v + r0 * kvd,
                           .pattern = io->pattern + p, .pattern_ld = n, .z = io->z + r0 * qd,
                           .pattern_stats = io->pattern_stats ? io->pattern_stats + r0 * 2 * c->n_head : NULL,
                           .rel_bias = io->rel_bias, .rel_bucket = io->rel_bucket, .rel_off = io->rel_off};
        attention(c, window, &one, 0, n);
        p += (size_t)c->n_head * n * n;
    }
}

static float relu(float x) { return x > 0.0f ? x : 0.0f; }

double lp_head_act_value(lp_head_act a, double v) {
    switch (a) {
    case LP_HEAD_ACT_TANH: return tanh(v);
    case LP_HEAD_ACT_RELU: return v > 0 ? v : 0;
    case LP_HEAD_ACT_GELU_ERF: return 0.5 * v * (1.0 + erf(v * 0.70710678118654752440));
    case LP_HEAD_ACT_GELU_TANH: return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    }
    return NAN;
}

/* Element-wise maps over n floats, shared out in chunks of GRAIN_FLOATS. */
typedef enum { MAP_GELU_TANH, MAP_GELU_ERF, MAP_RELU, MAP_SWIGLU, MAP_GEGLU, MAP_ADD } map_kind;

typedef struct {
    float *y;
    const float *a, *b;
    map_kind kind;
} map_job;

static void map_range(void *ctx, size_t i0, size_t i1) {
    const map_job *j = ctx;
    float *y = j->y;
    const float *a = j->a, *b = j->b;
    switch (j->kind) {
    case MAP_GELU_TANH: lp_gelu_tanh_n(y + i0, a + i0, i1 - i0); break;
    case MAP_GELU_ERF: lp_gelu_erf_n(y + i0, a + i0, i1 - i0); break;
    case MAP_RELU: for (size_t i = i0; i < i1; i++) y[i] = relu(a[i]); break;
    case MAP_SWIGLU: lp_silu_mul_n(y + i0, a + i0, b + i0, i1 - i0); break;
    case MAP_GEGLU: lp_gelu_tanh_mul_n(y + i0, a + i0, b + i0, i1 - i0); break;
    case MAP_ADD: { /* 16 lanes at a time (y may be a or b): the plain loop stayed scalar */
        size_t i = i0;
        for (; i + V16_LANES <= i1; i += V16_LANES) store16(y + i, load16(a + i) + load16(b + i));
        for (; i < i1; i++) y[i] = a[i] + b[i];
        break;
    }
    }
}

static void map(float *y, const float *a, const float *b, size_t n, map_kind kind) {
    map_job j = {y, a, b, kind};
    lp_parallel_for(n, GRAIN_FLOATS, map_range, &j);
}

void lp_act_rows(float *y, const float *x, size_t n, lp_mlp_kind kind) {
    map(y, x, NULL, n, kind == LP_MLP_GELU_ERF ? MAP_GELU_ERF : kind == LP_MLP_RELU ? MAP_RELU : MAP_GELU_TANH);
}

static void add(float *y, const float *a, const float *b, size_t n) { map(y, a, b, n, MAP_ADD); }

/* An attention-only model's layer has no MLP: what a run captures of it is zeros (so that
 * views stay defined) and the residual stream passes through, resid_out = resid_mid. */
static void skip_mlp(float *ln2, float *ln2_scale, float *pre, float *post, float *out, float *resid_out,
                     const float *resid_mid, int n, const lp_config *c) {
    size_t nd = (size_t)n * c->d_model, nm = (size_t)n * c->d_mlp;
    memset(ln2, 0, nd * sizeof *ln2);
    memset(ln2_scale, 0, (size_t)n * sizeof *ln2_scale);
    memset(pre, 0, nm * sizeof *pre);
    memset(post, 0, nm * sizeof *post);
    memset(out, 0, nd * sizeof *out);
    memcpy(resid_out, resid_mid, nd * sizeof *resid_out);
}

/* Cross-attention's heads for n query rows xq (n, H*dh) over the S rows of xk, xv (S, H*dh):
 * no mask, no position bias; pattern (H, n, S), z (n, H*dh). */
static void cross_heads(const lp_config *c, float *pattern, float *z, const float *xq, const float *xk, const float *xv,
                        int S, int n) {
    int H = c->n_head, dh = c->d_head, qd = H * dh;
    float scale = c->unscaled_attn ? 1.0f : 1.0f / sqrtf((float)dh);
    if (n == 1) { /* a decoded token: loops, as self-attention's (kernels/decode.c) */
        for (int h = 0; h < H; h++) {
            float *p = pattern + (size_t)h * S;
            lp_decode_scores(p, xq + h * dh, xk + h * dh, S, dh, qd, scale);
            softmax_causal(p, S, S, NULL);
            lp_decode_mix(z + h * dh, p, xv + h * dh, S, dh, qd);
        }
        return;
    }
    for (int h = 0; h < H; h++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, S, dh, scale, xq + h * dh, qd, xk + h * dh, qd, 0.0f,
                    pattern + (size_t)h * n * S, S);
    softmax_job sj = {NULL, pattern, S, n, 0, S, H, 0, 0, 0.0f};
    lp_parallel_for((size_t)H * n, grain_rows(S), softmax_rows, &sj);
    for (int h = 0; h < H; h++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dh, S, 1.0f, pattern + (size_t)h * n * S, S,
                    xv + h * dh, qd, 0.0f, z + h * dh, qd);
}

/* T5LayerCrossAttention: lnx = norm(resid_mid), every query row attends to all S rows of
 * the encoder's output, resid_cross = resid_mid + its output. */
static void cross_attention(const lp_model *m, const lp_layer *w, const lp_layer_io *io, int n) {
    const lp_config *c = &m->cfg;
    lp_norm(io->lnx, io->lnx_scale, io->resid_mid, w->lnx_w, w->lnx_b, n, c->d_model, c->norm, c->norm_eps);
    lp_linear_forward(io->xq, io->lnx, &w->xq, n);
    cross_heads(c, io->xpattern, io->xz, io->xq, io->xk, io->xv, io->S, n);
    lp_linear_forward(io->xattn_out, io->xz, &w->xo, n);
    add(io->resid_cross, io->resid_mid, io->xattn_out, (size_t)n * c->d_model);
}

/* A caller's edit of a site's rows (lp_edit), when it has one. */
#define EDIT(e, layer, site, rows, n) ((e).fn ? (e).fn((e).ctx, (layer), (site), (rows), (n)) : (void)0)

/* The MLP from its normalised input ln2 (n, d) to out (n, d): pre, up (gated only) and post
 * (n, dm) captured on the way; edit (fn NULL: none) sees pre and post of layer once each is made. */
static void mlp_rows(const lp_config *c, const lp_layer *w, const float *ln2, float *pre, float *up, float *post,
                     float *out, int n, lp_edit edit, int layer) {
    size_t nm = (size_t)n * c->d_mlp;
    if (lp_mlp_gated(c)) {
        lp_linear_forward(pre, ln2, &w->gate, n);
        lp_linear_forward(up, ln2, &w->up, n);
        EDIT(edit, layer, LP_ACT_MLP_PRE, pre, n);
        map(post, pre, up, nm, c->mlp == LP_MLP_SWIGLU ? MAP_SWIGLU : MAP_GEGLU);
    } else {
        lp_linear_forward(pre, ln2, &w->up, n);
        EDIT(edit, layer, LP_ACT_MLP_PRE, pre, n);
        lp_act_rows(post, pre, nm, c->mlp);
    }
    EDIT(edit, layer, LP_ACT_MLP_POST, post, n);
    lp_linear_forward(out, post, &w->down, n);
}

/* q, k and v as one matrix when the checkpoint stores them so: GPT-2's fused c_attn (column
 * blocks of one (d, 3d) matrix), or separate (out, in) matrices that happen to lie one after
 * another in the mapped file. One product over the whole width runs at the rate of a wide
 * product where three strided ones do not, and nothing is copied for it. */
static bool qkv_fused(lp_linear *f, const lp_layer *w, int n) {
    /* The (out, in) copies: all three or none (q's look decides), so that the product is
     * fused or not whatever the copying thread has done; transposed.c copies q, k and v only
     * together (one layer, one ready flag) and only when they are one matrix's column blocks,
     * and lays the copies one after another. */
    lp_linear rq = w->q, rk = w->k, rv = w->v;
    if ((rq = lp_linear_for(&w->q, n)).w != w->q.w) rk = lp_linear_copy(&w->k), rv = lp_linear_copy(&w->v);
    const lp_linear *q = &rq, *k = &rk, *v = &rv;
    int out = q->out + k->out + v->out;
    if (q->trans != k->trans || q->trans != v->trans || q->in != k->in || q->in != v->in || q->ld != k->ld ||
        q->ld != v->ld)
        return false;
    /* the next matrix starts where the last one's columns (or rows, transposed) end */
    size_t qs = q->trans ? (size_t)q->out * q->ld : (size_t)q->out, ks = k->trans ? (size_t)k->out * k->ld : (size_t)k->out;
    if (k->w != q->w + qs || v->w != k->w + ks || (q->trans ? q->ld != q->in : q->ld != out)) return false;
    if (q->b ? (k->b != q->b + q->out || v->b != k->b + k->out) : (k->b || v->b)) return false;
    *f = lp_linear_of(q->w, q->b, q->in, out, q->ld, q->trans);
    return true;
}

typedef struct {
    float *q, *k, *v;
    const float *qkv;
    int qd, kd, vd;
} split_job;

static void split_rows(void *ctx, size_t i0, size_t i1) {
    const split_job *j = ctx;
    for (size_t i = i0; i < i1; i++) {
        const float *row = j->qkv + i * (size_t)(j->qd + j->kd + j->vd);
        memcpy(j->q + i * j->qd, row, (size_t)j->qd * sizeof *row);
        memcpy(j->k + i * j->kd, row + j->qd, (size_t)j->kd * sizeof *row);
        memcpy(j->v + i * j->vd, row + j->qd + j->kd, (size_t)j->vd * sizeof *row);
    }
}

/* ln1 (n, d) through q, k and v: q into q (n, qd), k and v into rows of the caches (n, kvd);
 * scratch (n, qd + 2 kvd) holds the fused product before it is split. */
static void qkv_forward(float *q, float *k, float *v, float *scratch, const float *ln1, const lp_layer *w, int n) {
    lp_linear f;
    if (!scratch || !qkv_fused(&f, w, n)) {
        lp_linear_forward(q, ln1, &w->q, n);
        lp_linear_forward(k, ln1, &w->k, n);
        lp_linear_forward(v, ln1, &w->v, n);
        return;
    }
    lp_linear_forward(scratch, ln1, &f, n);
    split_job j = {q, k, v, scratch, w->q.out, w->k.out, w->v.out};
    lp_parallel_for((size_t)n, grain_rows(f.out), split_rows, &j);
}

void lp_layer_forward(const lp_model *m, int layer, const lp_layer_io *io, const float *cos_t, const float *sin_t,
                      int t0, int n) {
    const lp_config *c = &m->cfg;
    const lp_layer *w = &m->layers[layer];
    int d = c->d_model, kvd = c->n_kv_head * c->d_head;
    size_t nd = (size_t)n * d;

    /* ln1 is what attention reads: the normalised stream (pre-norm), or the stream itself
     * (post-norm, whose norms come after the sums: their scales go to ln1_scale, ln2_scale). */
    if (c->post_norm) memcpy(io->ln1, io->resid_in, nd * sizeof *io->ln1);
    else lp_norm(io->ln1, io->ln1_scale, io->resid_in, w->ln1_w, w->ln1_b, n, d, c->norm, c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_LN1, io->ln1, n);
    float *k_new = io->k + (size_t)t0 * kvd, *v_new = io->v + (size_t)t0 * kvd;
    /* mlp_pre is free until the MLP: scratch for a fused q|k|v product when it is wide enough */
    bool room = io->mlp_pre && c->d_mlp >= c->n_head * c->d_head + 2 * kvd;
    qkv_forward(io->q, k_new, v_new, room ? io->mlp_pre : NULL, io->ln1, w, n);
    if (lp_pos_rotary(c)) {
        rope(io->q, n, c->n_head, c->d_head, lp_rope_dims(c), c->pos, cos_t, sin_t);
        rope(k_new, n, c->n_kv_head, c->d_head, lp_rope_dims(c), c->pos, cos_t, sin_t);
    }
    if (io->seg) packed_attention(c, w->window, io);
    else attention(c, w->window, io, t0, n);
    EDIT(io->edit, layer, LP_ACT_Z, io->z, n);
    lp_linear_forward(io->attn_out, io->z, &w->o, n);
    if (c->sandwich_norm) lp_norm(io->attn_out, io->post1_scale, io->attn_out, w->post1_w, NULL, n, d, c->norm, c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_ATTN_OUT, io->attn_out, n);
    add(io->resid_mid, io->resid_in, io->attn_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_mid, io->ln1_scale, io->resid_mid, w->ln1_w, w->ln1_b, n, d, c->norm, c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_RESID_MID, io->resid_mid, n);
    const float *mlp_in = io->resid_mid; /* what the MLP block reads and adds to */
    if (c->cross_attn) {
        cross_attention(m, w, io, n);
        mlp_in = io->resid_cross;
    }
    if (c->attn_only) {
        skip_mlp(io->ln2, io->ln2_scale, io->mlp_pre, io->mlp_post, io->mlp_out, io->resid_out, mlp_in, n, c);
        EDIT(io->edit, layer, LP_ACT_RESID_POST, io->resid_out, n);
        return;
    }

    /* A parallel block's MLP reads the layer's input (GPTNeoXLayer: mlp(post_attention_layernorm(
     * hidden_states))) and its output is added to resid_mid; resid_in is read before resid_out is
     * written (generation passes one buffer as both). */
    if (c->post_norm) memcpy(io->ln2, io->resid_mid, nd * sizeof *io->ln2);
    else lp_norm(io->ln2, io->ln2_scale, c->parallel_block ? io->resid_in : mlp_in, w->ln2_w, w->ln2_b, n, d, c->norm,
                 c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_LN2, io->ln2, n);
    mlp_rows(c, w, io->ln2, io->mlp_pre, io->mlp_up, io->mlp_post, io->mlp_out, n, io->edit, layer);
    if (c->sandwich_norm) lp_norm(io->mlp_out, io->post2_scale, io->mlp_out, w->post2_w, NULL, n, d, c->norm, c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_MLP_OUT, io->mlp_out, n);
    add(io->resid_out, mlp_in, io->mlp_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_out, io->ln2_scale, io->resid_out, w->ln2_w, w->ln2_b, n, d, c->norm, c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_RESID_POST, io->resid_out, n);
}

void lp_layer_forward_batch(const lp_model *m, int layer, const lp_batch_io *io, const lp_block *blocks, int nblocks,
                            const float *cos_t, const float *sin_t) {
    const lp_config *c = &m->cfg;
    /* Encoders' blocks start at position 0 (a patch anywhere changes every position), and
     * every row is read out, not only the last. */
    assert(c->causal || !io->last_only);
    const lp_layer *w = &m->layers[layer];
    int d = c->d_model, qd = c->n_head * c->d_head, kvd = c->n_kv_head * c->d_head, half = c->d_head / 2, N = 0;
    for (int b = 0; b < nblocks; b++) N += blocks[b].n;
    size_t nd = (size_t)N * d;

    /* Post-norm blocks: attention reads the stream itself, as lp_layer_forward. */
    if (c->post_norm) memcpy(io->ln1, io->resid_in, nd * sizeof *io->ln1);
    else lp_norm(io->ln1, io->ln1_scale, io->resid_in, w->ln1_w, w->ln1_b, N, d, c->norm, c->norm_eps);
    lp_linear_forward(io->q, io->ln1, &w->q, N);
    lp_linear_forward(io->k_new, io->ln1, &w->k, N);
    lp_linear_forward(io->v_new, io->ln1, &w->v, N);
    for (int b = 0, row = 0; b < nblocks; row += blocks[b].n, b++) {
        const lp_block *bl = &blocks[b];
        float *q = io->q + (size_t)row * qd, *k = io->k_new + (size_t)row * kvd, *v = io->v_new + (size_t)row * kvd;
        if (lp_pos_rotary(c)) {
            const float *cb = cos_t + (size_t)bl->t0 * half, *sb = sin_t + (size_t)bl->t0 * half;
            rope(q, bl->n, c->n_head, c->d_head, lp_rope_dims(c), c->pos, cb, sb);
            rope(k, bl->n, c->n_kv_head, c->d_head, lp_rope_dims(c), c->pos, cb, sb);
        }
        memcpy(bl->k + (size_t)bl->t0 * kvd, k, (size_t)bl->n * kvd * sizeof *k);
        memcpy(bl->v + (size_t)bl->t0 * kvd, v, (size_t)bl->n * kvd * sizeof *v);
        int skip = io->last_only ? bl->n - 1 : 0; /* queries that need not be answered */
        lp_layer_io one = {.q = q + (size_t)skip * qd, .k = bl->k, .v = bl->v, .pattern = io->pattern,
                           .pattern_ld = io->pattern_ld, .z = io->z + (size_t)(io->last_only ? b : row) * qd,
                           .rel_bias = io->rel_bias, .rel_bucket = io->rel_bucket, .rel_off = io->rel_off};
        attention(c, w->window, &one, bl->t0 + skip, bl->n - skip);
    }
    if (io->last_only) { /* from here on, one row per block: its last */
        for (int b = 0, row = 0; b < nblocks; row += blocks[b].n, b++)
            memcpy(io->resid_mid + (size_t)b * d, io->resid_in + (size_t)(row + blocks[b].n - 1) * d, (size_t)d * sizeof(float));
        N = nblocks;
        nd = (size_t)N * d;
    }
    /* A parallel block's MLP reads the layer's input: its norm now, while resid_mid holds just
     * that (compact rows) or before resid_in is needed no more. */
    if (c->parallel_block)
        lp_norm(io->ln2, io->ln2_scale, io->last_only ? io->resid_mid : io->resid_in, w->ln2_w, w->ln2_b, N, d, c->norm,
                c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_Z, io->z, N);
    lp_linear_forward(io->attn_out, io->z, &w->o, N);
    if (c->sandwich_norm) lp_norm(io->attn_out, NULL, io->attn_out, w->post1_w, NULL, N, d, c->norm, c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_ATTN_OUT, io->attn_out, N);
    add(io->resid_mid, io->last_only ? io->resid_mid : io->resid_in, io->attn_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_mid, io->ln1_scale, io->resid_mid, w->ln1_w, w->ln1_b, N, d, c->norm, c->norm_eps);
    const float *mlp_in = io->resid_mid; /* what the MLP reads and adds to, as lp_layer_forward */
    if (c->cross_attn) { /* the norm and projections over all rows, the heads block by block */
        lp_norm(io->lnx, io->lnx_scale, io->resid_mid, w->lnx_w, w->lnx_b, N, d, c->norm, c->norm_eps);
        lp_linear_forward(io->xq, io->lnx, &w->xq, N);
        for (int b = 0, row = 0; b < nblocks; row += blocks[b].n, b++) {
            int r0 = io->last_only ? b : row, rows = io->last_only ? 1 : blocks[b].n;
            cross_heads(c, io->xpattern, io->xz + (size_t)r0 * qd, io->xq + (size_t)r0 * qd, blocks[b].xk, blocks[b].xv,
                        io->S, rows);
        }
        EDIT(io->edit, layer, LP_ACT_CROSS_Z, io->xz, N);
        lp_linear_forward(io->xattn_out, io->xz, &w->xo, N);
        EDIT(io->edit, layer, LP_ACT_CROSS_OUT, io->xattn_out, N);
        add(io->resid_cross, io->resid_mid, io->xattn_out, nd);
        mlp_in = io->resid_cross;
    }
    if (c->attn_only) {
        skip_mlp(io->ln2, io->ln2_scale, io->mlp_pre, io->mlp_post, io->mlp_out, io->resid_out, mlp_in, N, c);
        EDIT(io->edit, layer, LP_ACT_MLP_OUT, io->mlp_out, N);
        add(io->resid_out, mlp_in, io->mlp_out, nd);
        return;
    }

    /* From here on rows are independent: the same steps as lp_layer_forward, over N rows. */
    if (c->post_norm) memcpy(io->ln2, io->resid_mid, nd * sizeof *io->ln2);
    else if (!c->parallel_block) lp_norm(io->ln2, io->ln2_scale, mlp_in, w->ln2_w, w->ln2_b, N, d, c->norm, c->norm_eps);
    mlp_rows(c, w, io->ln2, io->mlp_pre, io->mlp_up, io->mlp_post, io->mlp_out, N, (lp_edit){0}, layer);
    if (c->sandwich_norm) lp_norm(io->mlp_out, NULL, io->mlp_out, w->post2_w, NULL, N, d, c->norm, c->norm_eps);
    EDIT(io->edit, layer, LP_ACT_MLP_OUT, io->mlp_out, N);
    add(io->resid_out, mlp_in, io->mlp_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_out, io->ln2_scale, io->resid_out, w->ln2_w, w->ln2_b, N, d, c->norm, c->norm_eps);
}

void lp_attention_seqs(float *pattern, float *z, const lp_config *c, int window, const float *q, const float *k,
                       const float *v, int B, int T) {
    size_t qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head, TT = T;
    for (int b = 0; b < B; b++) {
        size_t row = (size_t)b * TT;
        lp_layer_io one = {.q = (float *)q + row * qd, .k = (float *)k + row * kvd, .v = (float *)v + row * kvd,
                           .pattern = pattern + row * c->n_head * TT, .pattern_ld = T, .z = z + row * qd};
        attention(c, window, &one, 0, T);
    }
}

void lp_rope_rows(float *x, const lp_config *c, int n, int heads, const float *cos_t, const float *sin_t) {
    rope(x, n, heads, c->d_head, lp_rope_dims(c), c->pos, cos_t, sin_t);
}

void lp_gelu_rows(float *y, const float *x, size_t n) { map(y, x, NULL, n, MAP_GELU_TANH); }

void lp_swiglu_rows(float *y, const float *gate, const float *up, size_t n) { map(y, gate, up, n, MAP_SWIGLU); }

void lp_gated_rows(float *y, const float *gate, const float *up, size_t n, lp_mlp_kind kind) {
    map(y, gate, up, n, kind == LP_MLP_GEGLU ? MAP_GEGLU : MAP_SWIGLU);
}
