/* Causal attention of whole sequences in 16-lane loops, for training: the forward (a head's
 * scores, softmax and mix, four query rows at a time) and its backward
 * (lp_attention16_backward). The inference kernels make small sgemm calls per head and
 * sequence (lp_attention_seqs, attention_backward) and glibc-exact exponentials (expf8); at
 * the bundled model's heads, 16 wide over 128 tokens, the calls' overhead and the exact
 * exponentials were most of the attention's time. A micro-batch's 16 sequence-heads, one
 * thread: forward 0.25 ms, backward 0.34 ms (session 16's row-by-row loops: 0.48 and 0.59;
 * the inference kernels: 2.9-3.1 and 0.76). vmath's exp differs from expf by about 3e-7
 * relative, so the pattern is the inference one's to that, not to the bit. This file alone
 * is compiled with -ffp-contract=fast (Makefile): its sums of products become fused
 * multiply-adds, half the instructions of the loops that bound it, and no other kernel's
 * bits are promised to it (tests/test_grad.c bounds it against the inference kernel). */
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
    float *pattern, *z, *scratch; /* scratch: per item, k transposed (dh, ld) and four rows (4, ld) */
} attn16_job;

/* Stage s of a 16 x 16 transpose in registers: rows i and i + s (i's bit s clear) swap the
 * entries whose column has bit s set (LO and HI: the two rows' new lanes, drawn from both);
 * after the four stages row r holds column r. */
#define UNPAREN(...) __VA_ARGS__
#define TRANSPOSE_STAGE(s, LO, HI)                                                                             \
    VEC_INLINE void transpose_stage##s(v16 *r) {                                                               \
        _Pragma("GCC unroll 16") for (int i = 0; i < V16_LANES; i++) if (!(i & (s))) {                          \
            v16 a = r[i], b = r[i + (s)];                                                                      \
            r[i] = __builtin_shufflevector(a, b, UNPAREN LO);                                                  \
            r[i + (s)] = __builtin_shufflevector(a, b, UNPAREN HI);                                            \
        }                                                                                                       \
    }
TRANSPOSE_STAGE(8, (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                (8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
TRANSPOSE_STAGE(4, (0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                (4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
TRANSPOSE_STAGE(2, (0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                (2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
TRANSPOSE_STAGE(1, (0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
                (1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))

/* xT (dh, ld) = a head's rows x (T, dh at row stride xs) transposed, zero past T: blocks of
 * 16 rows by 16 columns turned in registers (a scalar copy was 1% of a training step). */
static void transpose_head(float *xT, const float *x, size_t xs, int T, int dh, int ld) {
    for (int e0 = 0; e0 < dh; e0 += V16_LANES)
        for (int t0 = 0; t0 < ld; t0 += V16_LANES) {
            v16 r[V16_LANES];
#pragma GCC unroll 16
            for (int i = 0; i < V16_LANES; i++)
                r[i] = t0 + i < T ? load16(x + (size_t)(t0 + i) * xs + e0) : (v16){0};
            transpose_stage8(r);
            transpose_stage4(r);
            transpose_stage2(r);
            transpose_stage1(r);
#pragma GCC unroll 16
            for (int e = 0; e < V16_LANES; e++) store16(xT + (size_t)(e0 + e) * ld + t0, r[e]);
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
    v8d d = lo8d(x) + hi8d(x);
    d += __builtin_shufflevector(d, d, 4, 5, 6, 7, 0, 1, 2, 3);
    d += __builtin_shufflevector(d, d, 2, 3, 0, 1, 6, 7, 4, 5);
    d += __builtin_shufflevector(d, d, 1, 0, 3, 2, 5, 4, 7, 6);
    return d[0];
}

/* Lanes of x before `left` (a row's keys past the block's start), the others `fill`. */
VEC_INLINE v16 keep_keys(v16 x, int left, float fill) {
    vi16 in = LANE < left, other = (vi16)((v16){0} + fill); /* fill in every lane */
    return (v16)(((vi16)x & in) | (other & ~in));
}

/* The softmaxes of R rows (R <= 4, a constant where it is inlined), row r of s (at stride
 * ld) over its keys0 + r keys into P's row r (stride T), zero on to T; s's blocks up to the
 * last row's keys rounded up to 16 are read (those past a row's keys are masked out) and
 * left holding its exponentials. In 16-lane blocks: the exponentials summed in 16 float
 * lanes, then those in double. The rows' chains are independent, so one row's latency hides
 * behind another's. */
VEC_INLINE void softmax_rows16(float *P, int T, float *s, int ld, int keys0, int R) {
    int n = up16(keys0 + R - 1);
    v16 m[4], lanes[4];
    float mx[4], inv[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) m[r] = keep_keys(load16(s + (size_t)r * ld), keys0 + r, -FLT_MAX);
    for (int j0 = V16_LANES; j0 < n; j0 += V16_LANES)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            m[r] = max16(keep_keys(load16(s + (size_t)r * ld + j0), keys0 + r - j0, -FLT_MAX), m[r]);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) mx[r] = fold_max(m[r]), lanes[r] = (v16){0};
    for (int j0 = 0; j0 < n; j0 += V16_LANES)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            float *sr = s + (size_t)r * ld + j0;
            v16 x = keep_keys(lp_vexp16(load16(sr) - mx[r]), keys0 + r - j0, 0.0f);
            store16(sr, x);
            lanes[r] += x;
        }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) inv[r] = (float)(1.0 / fold_sum(lanes[r]));
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        float *pr = P + (size_t)r * T;
        const float *sr = s + (size_t)r * ld;
        int j = 0;
        for (; j < n && j + V16_LANES <= T; j += V16_LANES) store16(pr + j, load16(sr + j) * inv[r]);
        if (j < n && j < T) { /* the row ends inside the block */
            float b[V16_LANES];
            store16(b, load16(sr + j) * inv[r]);
            memcpy(pr + j, b, (size_t)(T - j) * sizeof *pr);
            j = T;
        }
        for (; j + V16_LANES <= T; j += V16_LANES) store16(pr + j, (v16){0});
        for (; j < T; j++) pr[j] = 0.0f;
    }
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

/* Four query rows' scores16 at once (rows of s at stride ld, q's at stride qs), each row's
 * sums as scores16 takes them: a key block's loads serve the four. */
static void scores16x4(float *s, int ld, const float *q, size_t qs, const float *kT, int dh, int n, float scale) {
    const float *q0 = q, *q1 = q + qs, *q2 = q + 2 * qs, *q3 = q + 3 * qs;
    for (int j0 = 0; j0 < n; j0 += V16_LANES) {
        v16 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, c0 = {0}, c1 = {0}, d0 = {0}, d1 = {0};
        int e = 0;
        for (; e + 2 <= dh; e += 2) {
            v16 k0 = load16(kT + (size_t)e * ld + j0), k1 = load16(kT + (size_t)(e + 1) * ld + j0);
            a0 += q0[e] * k0, a1 += q0[e + 1] * k1;
            b0 += q1[e] * k0, b1 += q1[e + 1] * k1;
            c0 += q2[e] * k0, c1 += q2[e + 1] * k1;
            d0 += q3[e] * k0, d1 += q3[e + 1] * k1;
        }
        if (e < dh) {
            v16 k0 = load16(kT + (size_t)e * ld + j0);
            a0 += q0[e] * k0, b0 += q1[e] * k0, c0 += q2[e] * k0, d0 += q3[e] * k0;
        }
        store16(s + j0, (a0 + a1) * scale);
        store16(s + ld + j0, (b0 + b1) * scale);
        store16(s + 2 * ld + j0, (c0 + c1) * scale);
        store16(s + 3 * ld + j0, (d0 + d1) * scale);
    }
}

/* mix16 of query rows i0 .. i0 + 3 (i0 a multiple of 4; z's and p's rows at strides zs,
 * ps), each row's sums as mix16 takes them: keys below i0 four at a time for all four rows
 * (a key's loads serve the four), then each row's last keys. */
static void mix16x4(float *z, size_t zs, const float *p, size_t ps, const float *v, size_t vs, int i0, int dh) {
    for (int e0 = 0; e0 < dh; e0 += V16_LANES) {
        v16 acc[4][4] = {{{0}}};
        int j = 0;
        for (; j + 4 <= i0; j += 4) {
            v16 v0 = load16(v + (size_t)j * vs + e0), v1 = load16(v + (size_t)(j + 1) * vs + e0);
            v16 v2 = load16(v + (size_t)(j + 2) * vs + e0), v3 = load16(v + (size_t)(j + 3) * vs + e0);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                const float *pr = p + (size_t)r * ps;
                acc[r][0] += pr[j] * v0, acc[r][1] += pr[j + 1] * v1;
                acc[r][2] += pr[j + 2] * v2, acc[r][3] += pr[j + 3] * v3;
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) { /* row i0 + r has keys i0 .. i0 + r left: a fourth quad for r = 3 */
            const float *pr = p + (size_t)r * ps;
            v16 *a = acc[r];
            if (r == 3) {
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) a[k] += pr[j + k] * load16(v + (size_t)(j + k) * vs + e0);
            } else {
                for (int k = j; k <= i0 + r; k++) a[0] += pr[k] * load16(v + (size_t)k * vs + e0);
            }
            store16(z + (size_t)r * zs + e0, (a[0] + a[1]) + (a[2] + a[3]));
        }
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
        float *kT = j->scratch + it * ((size_t)dh + 4) * ld, *s = kT + (size_t)dh * ld;
        const float *k = j->k + row * kvd + kh * dh, *v = j->v + row * kvd + kh * dh;
        transpose_head(kT, k, kvd, T, dh, ld);
        float *P = j->pattern + it * T * T, *z = j->z + row * qd + h * dh;
        const float *q = j->q + row * qd + h * dh;
        int i = 0;
        for (; i + 4 <= T; i += 4) { /* four rows at a time: independent chains to overlap */
            scores16x4(s, ld, q + i * qd, qd, kT, dh, up16(i + 4), scale);
            softmax_rows16(P + (size_t)i * T, T, s, ld, i + 1, 4);
            mix16x4(z + i * qd, qd, P + (size_t)i * T, T, v, kvd, i, dh);
        }
        for (; i < T; i++) {
            int keys = i + 1, n = up16(keys);
            scores16(s, q + i * qd, kT, ld, dh, n, scale);
            softmax_rows16(P + (size_t)i * T, T, s, ld, keys, 1);
            mix16(z + i * qd, P + (size_t)i * T, v, kvd, keys, dh);
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

/* p[j0 .. j0 + 16) of a pattern row `len` long; lanes past the row's end read as 0 (those
 * past its keys are the pattern's zeros, or the next row's entries where the row ends: the
 * callers mask them). */
static v16 load_row16(const float *p, int j0, int len) {
    if (j0 + V16_LANES <= len) return load16(p + j0);
    float pb[V16_LANES] = {0};
    memcpy(pb, p + j0, (size_t)(len - j0) * sizeof *pb);
    return load16(pb);
}

/* dS rows from dp (in ds, rows at stride ld: dp_j = dz_i . v_j): scale P_ij (dp_j - r), r =
 * sum_j P_ij dp_j (16 float lanes, then double); zeros on from a row's keys to the last
 * row's keys rounded up to 16. R rows (R <= 4, a constant where it is inlined), row r with
 * keys0 + r keys; p the pattern's rows (stride pld), len long. The rows' chains are
 * independent, so one row's latency hides behind another's. */
VEC_INLINE void softmax_grad_rows16(float *ds, int ld, const float *p, size_t pld, int len, int keys0, int R,
                                    float scale) {
    int n = up16(keys0 + R - 1);
    v16 acc[4];
    float r[4];
#pragma GCC unroll 4
    for (int k = 0; k < R; k++) acc[k] = (v16){0};
    for (int j0 = 0; j0 < n; j0 += V16_LANES)
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) {
            v16 x = load_row16(p + k * pld, j0, len) * load16(ds + (size_t)k * ld + j0);
            acc[k] += keep_keys(x, keys0 + k - j0, 0.0f);
        }
#pragma GCC unroll 4
    for (int k = 0; k < R; k++) r[k] = (float)fold_sum(acc[k]);
    for (int j0 = 0; j0 < n; j0 += V16_LANES)
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) {
            float *dk = ds + (size_t)k * ld + j0;
            v16 x = scale * (load_row16(p + k * pld, j0, len) * (load16(dk) - r[k]));
            store16(dk, keep_keys(x, keys0 + k - j0, 0.0f));
        }
}

/* Keys j0 .. j0 + 7: y_j (dh, rows at stride ys) += sum_{i = j .. T-1} w[i * ws + j] x_i, x's
 * rows at stride xs: eight keys' dv (w: P) or dk (w: dS) at once, each x_i loaded once for
 * the eight, whose eight sums are independent chains (a fused multiply-add's latency hidden);
 * needs j0 + 8 <= T. */
static void columns_mix8(float *y, size_t ys, const float *w, size_t ws, const float *x, size_t xs, int j0, int T,
                         int dh) {
    for (int e0 = 0; e0 < dh; e0 += V16_LANES) {
        v16 a[8] = {0};
        /* the triangle: query i sees keys up to i */
        for (int i = j0; i < j0 + 7; i++) {
            v16 xi = load16(x + (size_t)i * xs + e0);
            const float *wi = w + (size_t)i * ws + j0;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                if (i >= j0 + k) a[k] += wi[k] * xi;
        }
        for (int i = j0 + 7; i < T; i++) {
            v16 xi = load16(x + (size_t)i * xs + e0);
            const float *wi = w + (size_t)i * ws + j0;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) a[k] += wi[k] * xi;
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            float *yk = y + (size_t)(j0 + k) * ys + e0;
            store16(yk, load16(yk) + a[k]);
        }
    }
}

/* One key j: y_j += sum_{i = j .. T-1} w[i * ws + j] x_i (the last keys, past the eights). */
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
    int i = 0;
    for (; i + 4 <= T; i += 4) { /* four rows at a time, as the forward */
        scores16x4(dS + (size_t)i * ld, ld, dz + (size_t)i * qd, qd, vT, dh, up16(i + 4), 1.0f);
        softmax_grad_rows16(dS + (size_t)i * ld, ld, P + (size_t)i * t->p_ld, t->p_ld, T, i + 1, 4, scale);
        mix16x4(dq + (size_t)i * qd, qd, dS + (size_t)i * ld, ld, k, kvd, i, dh); /* dq_i = sum_j dS_ij k_j */
    }
    for (; i < T; i++) {
        int keys = i + 1, n = up16(keys);
        float *ds = dS + (size_t)i * ld;
        scores16(ds, dz + (size_t)i * qd, vT, ld, dh, n, 1.0f);
        softmax_grad_rows16(ds, ld, P + (size_t)i * t->p_ld, t->p_ld, T, keys, 1, scale);
        mix16(dq + (size_t)i * qd, ds, k, kvd, keys, dh);
    }
    /* key j: dv_j += sum_i P_ij dz_i, dk_j += sum_i dS_ij q_i, over the queries i >= j */
    int jj = 0;
    for (; jj + 8 <= T; jj += 8) {
        columns_mix8(dv, kvd, P, (size_t)t->p_ld, dz, qd, jj, T, dh);
        columns_mix8(dk, kvd, dS, (size_t)ld, q, qd, jj, T, dh);
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
                    .scratch = malloc(items * ((size_t)c->d_head + 4) * ld * sizeof(float))};
    if (!j.scratch) return LP_ENOMEM;
    lp_parallel_for(items, 1, attn16_items, &j);
    free(j.scratch);
    return LP_OK;
}
