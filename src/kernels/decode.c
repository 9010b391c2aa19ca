/* One row through a weight matrix: what every generated token does with every weight
 * matrix. The time is in streaming the weights from memory, so the matrix is cut into
 * contiguous pieces that loupe's pool shares out (no OpenBLAS thread wake-up per matrix, no
 * zeroing pass), and the sums' order is fixed by the shapes alone: the same result on any
 * number of threads, under any OpenBLAS kernel, and for either layout of the same matrix. */
#include "kernels/decode.h"

#include <string.h>

#include "kernels/v16.h"
#include "util/parallel.h"

#define LANES V16_LANES

/* The lanes summed in halves, a tree of a few vector adds rather than a chain of 16 scalar
 * ones, in the same order on every machine. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

VEC_INLINE float hsum16(v16 v) {
    v8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
            __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

typedef struct {
    float *y;
    const float *x;
    const lp_linear *lin;
} gemv_job;

/* nn.Linear's (out, in) rows: each output is a dot product of one contiguous row with x,
 * four rows at a time (x read once for four). Rows [o0, o1). */
static void dot_rows(void *ctx, size_t o0, size_t o1) {
    const gemv_job *j = ctx;
    const lp_linear *l = j->lin;
    const float *x = j->x;
    int in = l->in, body = in - in % LANES;
    size_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *w0 = l->w + o * l->ld, *w1 = w0 + l->ld, *w2 = w1 + l->ld, *w3 = w2 + l->ld;
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int i = 0; i < body; i += LANES) {
            v16 xv = load16(x + i);
            a0 += load16(w0 + i) * xv;
            a1 += load16(w1 + i) * xv;
            a2 += load16(w2 + i) * xv;
            a3 += load16(w3 + i) * xv;
        }
        float s0 = hsum16(a0), s1 = hsum16(a1), s2 = hsum16(a2), s3 = hsum16(a3);
        for (int i = body; i < in; i++) {
            s0 += w0[i] * x[i];
            s1 += w1[i] * x[i];
            s2 += w2[i] * x[i];
            s3 += w3[i] * x[i];
        }
        float *y = j->y + o;
        if (l->b) s0 += l->b[o], s1 += l->b[o + 1], s2 += l->b[o + 2], s3 += l->b[o + 3];
        y[0] = s0, y[1] = s1, y[2] = s2, y[3] = s3;
    }
    for (; o < o1; o++) { /* the same sums, one row */
        const float *w = l->w + o * l->ld;
        v16 a = {0};
        for (int i = 0; i < body; i += LANES) a += load16(w + i) * load16(x + i);
        float s = hsum16(a);
        for (int i = body; i < in; i++) s += w[i] * x[i];
        j->y[o] = l->b ? s + l->b[o] : s;
    }
}

/* GPT-2's Conv1D (in, out) rows, summed exactly as dot_rows sums the same matrix stored (out,
 * in): for each column 16 running sums, row i going to sum i mod 16 in the order of the rows,
 * over the rows below in - in % 16; those 16 added by hsum16's tree; then the last rows one
 * by one; then the bias. So a matrix gives the same bytes in either layout, and generation
 * reads GPT-2's (out, in) copies (arch/transposed.c), which stream faster, from the moment
 * each is made, and the file before. Each piece is a band of up to BAND columns run down
 * every row: a row's part of the band is contiguous (2 KB), and the 16 sums (32 KB) stay in
 * L1. */
#define BAND 512
typedef struct {
    gemv_job g;
    int band; /* columns per piece: a multiple of LANES, at most BAND */
} band_job;

VEC_INLINE v16 splat16(float f) {
    v16 v;
    for (int k = 0; k < LANES; k++) v[k] = f;
    return v;
}

static void axpy_band(void *ctx, size_t p0, size_t p1) {
    const band_job *bj = ctx;
    const lp_linear *l = bj->g.lin;
    const float *x = bj->g.x;
    size_t ld = l->ld;
    int in = l->in, rows = in - in % LANES;
    for (size_t p = p0; p < p1; p++) {
        int c0 = (int)p * bj->band, n = l->out - c0 < bj->band ? l->out - c0 : bj->band;
        int body = n - n % LANES;
        const float *w = l->w + c0;
        float acc[LANES][BAND] __attribute__((aligned(64)));
        for (int k = 0; k < LANES; k++) memset(acc[k], 0, (size_t)n * sizeof(float));
        /* four rows 16 apart into one sum per pass (one load and store of it for four rows),
         * in 64-row groups, then the rows left one at a time: each sum takes its rows in order */
        int i = 0;
        for (; i + 4 * LANES <= rows; i += 4 * LANES)
            for (int k = 0; k < LANES; k++) {
                const float *w0 = w + (size_t)(i + k) * ld, *w1 = w0 + LANES * ld, *w2 = w1 + LANES * ld,
                            *w3 = w2 + LANES * ld;
                const float *xk = x + i + k;
                v16 x0 = splat16(xk[0]), x1 = splat16(xk[LANES]), x2 = splat16(xk[2 * LANES]), x3 = splat16(xk[3 * LANES]);
                float *a = acc[k];
                for (int c = 0; c < body; c += LANES) {
                    v16 v = load16(a + c);
                    v += load16(w0 + c) * x0;
                    v += load16(w1 + c) * x1;
                    v += load16(w2 + c) * x2;
                    v += load16(w3 + c) * x3;
                    store16(a + c, v);
                }
                for (int c = body; c < n; c++) {
                    float v = a[c];
                    v += w0[c] * xk[0];
                    v += w1[c] * xk[LANES];
                    v += w2[c] * xk[2 * LANES];
                    v += w3[c] * xk[3 * LANES];
                    a[c] = v;
                }
            }
        for (; i < rows; i++) {
            const float *wi = w + (size_t)i * ld;
            v16 xi = splat16(x[i]);
            float *a = acc[i % LANES];
            for (int c = 0; c < body; c += LANES) store16(a + c, load16(a + c) + load16(wi + c) * xi);
            for (int c = body; c < n; c++) a[c] += wi[c] * x[i];
        }
        float *y = bj->g.y + c0;
        const float *b = l->b ? l->b + c0 : NULL;
        for (int c = 0; c < body; c += LANES) { /* hsum16's tree, then the last rows and the bias */
            v16 s8[8], s4[4];
            for (int k = 0; k < 8; k++) s8[k] = load16(acc[k] + c) + load16(acc[k + 8] + c);
            for (int k = 0; k < 4; k++) s4[k] = s8[k] + s8[k + 4];
            v16 s = (s4[0] + s4[2]) + (s4[1] + s4[3]);
            for (int i = rows; i < in; i++) s += load16(w + (size_t)i * ld + c) * splat16(x[i]);
            store16(y + c, b ? s + load16(b + c) : s);
        }
        for (int c = body; c < n; c++) { /* the same, a column at a time */
            float s8[8], s4[4];
            for (int k = 0; k < 8; k++) s8[k] = acc[k][c] + acc[k + 8][c];
            for (int k = 0; k < 4; k++) s4[k] = s8[k] + s8[k + 4];
            float s = (s4[0] + s4[2]) + (s4[1] + s4[3]);
            for (int i = rows; i < in; i++) s += w[(size_t)i * ld + c] * x[i];
            y[c] = b ? s + b[c] : s;
        }
    }
}

/* About this many bytes of weights per piece of work: enough that claiming it costs
 * nothing beside streaming it, small enough that a thread the shared machine does not
 * schedule leaves little for the other to wait on. */
#define PIECE_BYTES ((size_t)256 << 10)

void lp_decode_linear(float *y, const float *x, const lp_linear *lin) {
    gemv_job j = {y, x, lin};
    if (lin->trans) {
        size_t rows = PIECE_BYTES / ((size_t)lin->in * sizeof(float));
        rows = rows < 4 ? 4 : rows - rows % 4;
        lp_parallel_for((size_t)lin->out, rows, dot_rows, &j);
    } else {
        /* bands as wide as BAND allows, as many as a multiple of the threads (each thread
         * streams its share of every row); a band's width changes no sum's order */
        size_t threads = (size_t)lp_parallel_threads(), out = (size_t)lin->out;
        size_t bands = (out + BAND - 1) / BAND;
        bands = (bands + threads - 1) / threads * threads;
        size_t width = (out + bands - 1) / bands;
        width = (width + LANES - 1) / LANES * LANES;
        band_job bj = {j, (int)width};
        lp_parallel_for((out + width - 1) / width, 1, axpy_band, &bj);
    }
}

void lp_decode_scores(float *p, const float *q, const float *k, int keys, int dh, size_t ld, float scale) {
    int body = dh - dh % LANES;
    for (int j = 0; j < keys; j++) {
        const float *kj = k + (size_t)j * ld;
        v16 a = {0};
        for (int e = 0; e < body; e += LANES) a += load16(q + e) * load16(kj + e);
        float dot = hsum16(a);
        for (int e = body; e < dh; e++) dot += q[e] * kj[e];
        p[j] = dot * scale;
    }
}

void lp_decode_mix(float *z, const float *p, const float *v, int keys, int dh, size_t ld) {
    for (int e = 0; e < dh; e++) z[e] = 0.0f;
    for (int j = 0; j < keys; j++) {
        const float *vj = v + (size_t)j * ld;
        for (int e = 0; e < dh; e++) z[e] += p[j] * vj[e];
    }
}
