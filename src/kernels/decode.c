/* One row through a weight matrix: what every generated token does with every weight
 * matrix. The time is in streaming the weights from memory, so the matrix is cut into
 * contiguous pieces that loupe's pool shares out (no OpenBLAS thread wake-up per matrix, no
 * zeroing pass), and the sums' order is fixed by the shapes alone: the same result on any
 * number of threads and under any OpenBLAS kernel. */
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

/* Columns per piece of a Conv1D (in, out) matrix: each piece runs down every row over its
 * columns with its partial outputs in registers (eight vectors: 128 floats in AVX-512's
 * registers, 64 in AVX2's, which have half as many lanes... and as many registers). */
#ifdef __AVX512F__
#define VECS 8
#else
#define VECS 4
#endif
#define COLS (VECS * LANES)

/* GPT-2's Conv1D (in, out) rows: y is x's combination of rows, in the order of the rows.
 * Column pieces [p0, p1) of COLS columns. */
static void axpy_cols(void *ctx, size_t p0, size_t p1) {
    const gemv_job *j = ctx;
    const lp_linear *l = j->lin;
    const float *x = j->x;
    size_t ld = l->ld;
    int in = l->in;
    for (size_t p = p0; p < p1; p++) {
        int c0 = (int)p * COLS, n = l->out - c0 < COLS ? l->out - c0 : COLS;
        const float *w = l->w + c0;
        float out[COLS];
        if (n == COLS) {
            v16 a[VECS] = {0};
            for (int i = 0; i < in; i++) {
                const float *wi = w + i * ld;
                v16 xi = {0};
                xi += x[i];
#pragma GCC unroll 8
                for (int k = 0; k < VECS; k++) a[k] += load16(wi + k * LANES) * xi;
            }
            memcpy(out, a, sizeof out);
        } else { /* a last, narrower piece: the same sums */
            for (int c = 0; c < n; c++) out[c] = 0.0f;
            for (int i = 0; i < in; i++)
                for (int c = 0; c < n; c++) out[c] += w[i * ld + c] * x[i];
        }
        if (l->b)
            for (int c = 0; c < n; c++) out[c] += l->b[c0 + c];
        memcpy(j->y + c0, out, (size_t)n * sizeof *out);
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
        size_t pieces = ((size_t)lin->out + COLS - 1) / COLS;
        size_t per = PIECE_BYTES / ((size_t)lin->in * COLS * sizeof(float));
        lp_parallel_for(pieces, per ? per : 1, axpy_cols, &j);
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
