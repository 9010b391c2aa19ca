/* Causal attention of whole sequences in 16-lane loops, for training: the forward (a head's
 * scores, softmax and mix row by row) and its backward (lp_attention16_backward). The
 * inference kernels make small sgemm calls per head and sequence (lp_attention_seqs,
 * attention_backward) and glibc-exact exponentials (expf8); at the bundled model's heads, 16
 * wide over 128 tokens, the calls' overhead and the exact exponentials were most of the
 * attention's time (a micro-batch's 16 sequence-heads, one thread: forward 2.1-2.3 ms against
 * 2.9-3.1, backward 0.57 against 0.76). vmath's exp differs from expf by about 3e-7
 * relative, so the pattern is the inference one's to that, not to the bit. */
#include <float.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "kernels/v16.h"
#include "kernels/vmath.h"
#include "loupe/error.h"
#include "util/parallel.h"

/* n rounded up to a whole number of 16-lane blocks. */
static int up16(int n) { return (n + V16_LANES - 1) / V16_LANES * V16_LANES; }

/* Whether these loops take the attention of c: causal, heads a multiple of 16 wide, no
 * soft cap or relative bias. */
static bool fits16(const lp_config *c) {
    return c->causal && c->d_head % V16_LANES == 0 && c->attn_softcap <= 0.0f && c->pos != LP_POS_RELATIVE;
}

/* Each lane's index: masks of the lanes before a row's end. */
static const vi16 LANE = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

typedef struct {
    const lp_config *c;
    int T, ld;                /* ld: T rounded up to 16 */
    const float *q, *k, *v;
    float *pattern, *z, *scratch; /* scratch: per item, k transposed (dh, ld) and a row (ld) */
} attn16_job;

/* xT (dh, ld) = a head's rows x (T, dh at row stride xs) transposed, zero past T. */
static void transpose_head(float *xT, const float *x, size_t xs, int T, int dh, int ld) {
    for (int e = 0; e < dh; e++) {
        float *col = xT + (size_t)e * ld;
        for (int t = 0; t < T; t++) col[t] = x[(size_t)t * xs + e];
        for (int t = T; t < ld; t++) col[t] = 0.0f;
    }
}

/* s[0..n) (n a multiple of 16) = scale q . k_j, kT the keys transposed (dh rows of stride ld). */
static void scores16(float *s, const float *q, const float *kT, int ld, int dh, int n, float scale) {
    for (int j0 = 0; j0 < n; j0 += V16_LANES) {
        v16 a0 = {0}, a1 = {0};
        int e = 0;
        for (; e + 2 <= dh; e += 2) {
            a0 += q[e] * load16(kT + (size_t)e * ld + j0);
            a1 += q[e + 1] * load16(kT + (size_t)(e + 1) * ld + j0);
        }
        if (e < dh) a0 += q[e] * load16(kT + (size_t)e * ld + j0);
        store16(s + j0, (a0 + a1) * scale);
    }
}

/* A row is short (128 keys at most here): its lanes are folded in halves, a tree in
 * registers, where a chain of 15 dependent steps was a third of the row's time. */
typedef double v8d __attribute__((vector_size(64)));

static float fold_max(v16 m) {
    m = max16(m, __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
    m = max16(m, __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
    m = max16(m, __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    m = max16(m, __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
    return m[0];
}

/* The lanes' sum in double: lane l and l + 8, then halves again (an order fixed by the
 * lanes alone). */
static double fold_sum(v16 x) {
    v8d d = __builtin_convertvector(__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7), v8d) +
            __builtin_convertvector(__builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
    d += __builtin_shufflevector(d, d, 4, 5, 6, 7, 0, 1, 2, 3);
    d += __builtin_shufflevector(d, d, 2, 3, 0, 1, 6, 7, 4, 5);
    d += __builtin_shufflevector(d, d, 1, 0, 3, 2, 5, 4, 7, 6);
    return d[0];
}

/* The softmax of s[0..keys) into p[0..keys), p zero on to T; s, n (keys rounded up to 16)
 * long, is scratch. In 16-lane blocks: entries past keys masked out, the exponentials summed
 * in 16 float lanes, then those in double. */
static void softmax16(float *p, float *s, int keys, int n, int T) {
    for (int j = keys; j < n; j++) s[j] = -FLT_MAX;
    v16 m = load16(s);
    for (int j0 = V16_LANES; j0 < n; j0 += V16_LANES) m = max16(load16(s + j0), m);
    float mx = fold_max(m);
    v16 lanes = {0};
    for (int j0 = 0; j0 < n; j0 += V16_LANES) {
        v16 x = lp_vexp16(load16(s + j0) - mx);
        x = (v16)((vi16)x & (LANE < keys - j0)); /* past keys: 0 */
        store16(s + j0, x);
        lanes += x;
    }
    float inv = (float)(1.0 / fold_sum(lanes));
    if (n <= T) { /* whole blocks fit the row: straight into it, zeros past keys included */
        for (int j0 = 0; j0 < n; j0 += V16_LANES) store16(p + j0, load16(s + j0) * inv);
        int j = n;
        for (; j + V16_LANES <= T; j += V16_LANES) store16(p + j, (v16){0});
        for (; j < T; j++) p[j] = 0.0f;
        return;
    }
    for (int j0 = 0; j0 < n; j0 += V16_LANES) store16(s + j0, load16(s + j0) * inv);
    memcpy(p, s, (size_t)keys * sizeof *p);
    memset(p + keys, 0, (size_t)(T - keys) * sizeof *p);
}

/* z (dh) = sum_j<keys p_j v_j, v's rows at stride vs; four keys' sums side by side. */
static void mix16(float *z, const float *p, const float *v, size_t vs, int keys, int dh) {
    for (int e0 = 0; e0 < dh; e0 += V16_LANES) {
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int j = 0;
        for (; j + 4 <= keys; j += 4) {
            a0 += p[j] * load16(v + (size_t)j * vs + e0);
            a1 += p[j + 1] * load16(v + (size_t)(j + 1) * vs + e0);
            a2 += p[j + 2] * load16(v + (size_t)(j + 2) * vs + e0);
            a3 += p[j + 3] * load16(v + (size_t)(j + 3) * vs + e0);
        }
        for (; j < keys; j++) a0 += p[j] * load16(v + (size_t)j * vs + e0);
        store16(z + e0, (a0 + a1) + (a2 + a3));
    }
}

static void attn16_items(void *ctx, size_t i0, size_t i1) {
    const attn16_job *j = ctx;
    const lp_config *c = j->c;
    int T = j->T, ld = j->ld, H = c->n_head, G = H / c->n_kv_head, dh = c->d_head;
    size_t qd = (size_t)H * dh, kvd = (size_t)c->n_kv_head * dh;
    float scale = lp_attn_scale(c);
    for (size_t it = i0; it < i1; it++) {
        size_t b = it / H, h = it % H, row = b * T, kh = h / G;
        float *kT = j->scratch + it * ((size_t)dh + 1) * ld, *s = kT + (size_t)dh * ld;
        const float *k = j->k + row * kvd + kh * dh, *v = j->v + row * kvd + kh * dh;
        transpose_head(kT, k, kvd, T, dh, ld);
        float *P = j->pattern + it * T * T;
        for (int i = 0; i < T; i++) {
            int keys = i + 1, n = up16(keys);
            scores16(s, j->q + (row + i) * qd + h * dh, kT, ld, dh, n, scale);
            softmax16(P + (size_t)i * T, s, keys, n, T);
            mix16(j->z + (row + i) * qd + h * dh, P + (size_t)i * T, v, kvd, keys, dh);
        }
    }
}

/* ---- the backward ---- */

typedef struct {
    const lp_config *c;
    int T, ld;
    const tape_layer *t;
    const grad_layer *g;
    float *scratch; /* per item: v transposed (dh, ld), dS (T, ld) */
} attn16_bwd_job;

/* dS row i: dp_j = dz_i . v_j on its keys, then scale P_ij (dp_j - r), r = sum_j P_ij dp_j
 * (16 float lanes, then double); zeros on from keys to n (keys rounded up to 16). */
/* p[j0 .. j0 + 16) of a row with `keys` entries, those past keys (and past the row's end)
 * read as 0. */
static v16 load_keys16(const float *p, int j0, int keys) {
    float pb[V16_LANES] = {0};
    memcpy(pb, p + j0, (size_t)(keys - j0 < V16_LANES ? keys - j0 : V16_LANES) * sizeof *pb);
    return load16(pb);
}

static void softmax_grad_row16(float *ds, const float *p, const float *dz, const float *vT, int ld, int dh, int keys,
                               int n, float scale) {
    scores16(ds, dz, vT, ld, dh, n, 1.0f);
    v16 acc = {0};
    for (int j0 = 0; j0 < n; j0 += V16_LANES) {
        v16 x = load_keys16(p, j0, keys) * load16(ds + j0);
        acc += (v16)((vi16)x & (LANE < keys - j0));
    }
    float r = (float)fold_sum(acc);
    for (int j0 = 0; j0 < n; j0 += V16_LANES) {
        v16 x = scale * (load_keys16(p, j0, keys) * (load16(ds + j0) - r));
        store16(ds + j0, (v16)((vi16)x & (LANE < keys - j0)));
    }
}

/* Keys j0 .. j0 + 3: y_j (dh, rows at stride ys) += sum_{i = j .. T-1} w[i * ws + j] x_i, x's
 * rows at stride xs: four keys' dv (w: P) or dk (w: dS) at once, each x_i loaded once for
 * the four; needs j0 + 4 <= T. */
static void columns_mix4(float *y, size_t ys, const float *w, size_t ws, const float *x, size_t xs, int j0, int T,
                         int dh) {
    for (int e0 = 0; e0 < dh; e0 += V16_LANES) {
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        /* the triangle: query i sees keys up to i */
        for (int i = j0; i < j0 + 3; i++) {
            v16 xi = load16(x + (size_t)i * xs + e0);
            const float *wi = w + (size_t)i * ws + j0;
            a0 += wi[0] * xi;
            if (i >= j0 + 1) a1 += wi[1] * xi;
            if (i >= j0 + 2) a2 += wi[2] * xi;
        }
        for (int i = j0 + 3; i < T; i++) {
            v16 xi = load16(x + (size_t)i * xs + e0);
            const float *wi = w + (size_t)i * ws + j0;
            a0 += wi[0] * xi;
            a1 += wi[1] * xi;
            a2 += wi[2] * xi;
            a3 += wi[3] * xi;
        }
        float *y0 = y + (size_t)j0 * ys + e0;
        store16(y0, load16(y0) + a0);
        store16(y0 + ys, load16(y0 + ys) + a1);
        store16(y0 + 2 * ys, load16(y0 + 2 * ys) + a2);
        store16(y0 + 3 * ys, load16(y0 + 3 * ys) + a3);
    }
}

/* One key j: y_j += sum_{i = j .. T-1} w[i * ws + j] x_i (the last keys, past fours). */
static void column_mix1(float *y, size_t ys, const float *w, size_t ws, const float *x, size_t xs, int j, int T,
                        int dh) {
    for (int e0 = 0; e0 < dh; e0 += V16_LANES) {
        v16 a = {0};
        for (int i = j; i < T; i++) a += w[(size_t)i * ws + j] * load16(x + (size_t)i * xs + e0);
        float *yj = y + (size_t)j * ys + e0;
        store16(yj, load16(yj) + a);
    }
}

/* Query head h of sequence b: dq, and its share of dk, dv (k, dk, dv its key/value head's;
 * vT, dS scratch). */
static void head_backward16(const attn16_bwd_job *j, size_t b, size_t h, const float *vT, float *dS, const float *k,
                            float *dk, float *dv) {
    const lp_config *c = j->c;
    const tape_layer *t = j->t;
    const grad_layer *g = j->g;
    int T = j->T, ld = j->ld, H = c->n_head, dh = c->d_head;
    size_t qd = (size_t)H * dh, kvd = (size_t)c->n_kv_head * dh, row = b * T;
    float scale = lp_attn_scale(c);
    const float *q = t->q + row * qd + h * dh, *P = t->pattern + (b * H + h) * t->p_hs, *dz = g->d_z + row * qd + h * dh;
    float *dq = g->d_q + row * qd + h * dh;
    for (int i = 0; i < T; i++) {
        int keys = i + 1, n = up16(keys);
        float *ds = dS + (size_t)i * ld;
        softmax_grad_row16(ds, P + (size_t)i * t->p_ld, dz + (size_t)i * qd, vT, ld, dh, keys, n, scale);
        mix16(dq + (size_t)i * qd, ds, k, kvd, keys, dh); /* dq_i = sum_j dS_ij k_j */
    }
    /* key j: dv_j += sum_i P_ij dz_i, dk_j += sum_i dS_ij q_i, over the queries i >= j */
    int jj = 0;
    for (; jj + 4 <= T; jj += 4) {
        columns_mix4(dv, kvd, P, (size_t)t->p_ld, dz, qd, jj, T, dh);
        columns_mix4(dk, kvd, dS, (size_t)ld, q, qd, jj, T, dh);
    }
    for (; jj < T; jj++) {
        column_mix1(dv, kvd, P, (size_t)t->p_ld, dz, qd, jj, T, dh);
        column_mix1(dk, kvd, dS, (size_t)ld, q, qd, jj, T, dh);
    }
}

static void attn16_backward_items(void *ctx, size_t i0, size_t i1) {
    const attn16_bwd_job *j = ctx;
    const lp_config *c = j->c;
    int T = j->T, ld = j->ld, G = c->n_head / c->n_kv_head, dh = c->d_head;
    size_t kvd = (size_t)c->n_kv_head * dh;
    for (size_t it = i0; it < i1; it++) { /* a sequence's key/value head: its query heads add to one dk, dv */
        size_t b = it / c->n_kv_head, kh = it % c->n_kv_head, row = b * T;
        float *vT = j->scratch + it * ((size_t)dh + T) * ld, *dS = vT + (size_t)dh * ld;
        const float *k = j->t->k + row * kvd + kh * dh, *v = j->t->v + row * kvd + kh * dh;
        float *dk = j->g->d_k + row * kvd + kh * dh, *dv = j->g->d_v + row * kvd + kh * dh;
        transpose_head(vT, v, kvd, T, dh, ld);
        for (size_t h = kh * G; h < (kh + 1) * G; h++)
            head_backward16(j, b, h, vT, dS, k, dk, dv);
    }
}

int lp_attention16_backward(const grad_layer *g, const tape_layer *t, const lp_config *c, int B, int T) {
    if (!fits16(c) || t->q_ld || t->kv_ld || g->dq_ld || g->dkv_ld || g->d_pattern) return LP_EINVAL;
    int ld = up16(T);
    size_t items = (size_t)B * c->n_kv_head;
    attn16_bwd_job j = {.c = c, .T = T, .ld = ld, .t = t, .g = g,
                        .scratch = malloc(items * ((size_t)c->d_head + T) * ld * sizeof(float))};
    if (!j.scratch) return LP_ENOMEM;
    lp_parallel_for(items, 1, attn16_backward_items, &j);
    free(j.scratch);
    return LP_OK;
}

int lp_attention16(float *pattern, float *z, const lp_config *c, const float *q, const float *k, const float *v,
                   int B, int T) {
    if (!fits16(c)) return LP_EINVAL;
    int ld = up16(T);
    size_t items = (size_t)B * c->n_head;
    attn16_job j = {.c = c, .T = T, .ld = ld, .q = q, .k = k, .v = v, .pattern = pattern, .z = z,
                    .scratch = malloc(items * ((size_t)c->d_head + 1) * ld * sizeof(float))};
    if (!j.scratch) return LP_ENOMEM;
    lp_parallel_for(items, 1, attn16_items, &j);
    free(j.scratch);
    return LP_OK;
}
