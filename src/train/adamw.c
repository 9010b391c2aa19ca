/* The optimiser's step in 16 lanes (v16.h). This file alone is compiled with
 * -fno-math-errno (Makefile): sqrtf of the second moment, never negative, then becomes one
 * vector instruction, where a sqrtf that may have to set errno kept the loop scalar (with the
 * double divisions it had, most of a two-thread step's serial tail). */
#include "train/adamw.h"

#include <math.h>

#include "kernels/v16.h"

void adamw_reduce(float *grad, float *const *others, int n_others, size_t a, size_t b, double *sq) {
    for (size_t c0 = a; c0 < b; c0 += ADAMW_CHUNK) {
        size_t c1 = b - c0 < ADAMW_CHUNK ? b : c0 + ADAMW_CHUNK, j = c0;
        v8d lo = {0}, hi = {0};
        for (; j + V16_LANES <= c1; j += V16_LANES) {
            v16 g = load16(grad + j);
            for (int i = 0; i < n_others; i++) g += load16(others[i] + j);
            store16(grad + j, g);
            v8d gl = lo8d(g), gh = hi8d(g);
            lo += gl * gl;
            hi += gh * gh;
        }
        double sum = 0.0;
        for (; j < c1; j++) {
            for (int i = 0; i < n_others; i++) grad[j] += others[i][j];
            sum += (double)grad[j] * grad[j];
        }
        for (int k = 0; k < 8; k++) sum += lo[k] + hi[k];
        sq[c0 / ADAMW_CHUNK] = sum;
    }
}

VEC_INLINE v16 sqrt16(v16 x) {
    for (int k = 0; k < V16_LANES; k++) x[k] = sqrtf(x[k]);
    return x;
}

/* The step on 16 parameters; returns p * 0 lane by lane, 0 unless a weight became infinite
 * or NaN. */
VEC_INLINE v16 adamw16(float *p, float *mom, float *vel, v16 grad, float wd, const adamw_step *s) {
    v16 g = grad * s->clip, w = load16(p);
    v16 m = s->beta1 * load16(mom) + (1.0f - s->beta1) * g;
    v16 v = s->beta2 * load16(vel) + (1.0f - s->beta2) * g * g;
    w -= s->lr * ((m * s->inv_bc1) / (sqrt16(v * s->inv_bc2) + s->eps) + wd * w);
    store16(mom, m);
    store16(vel, v);
    store16(p, w);
    return w * 0.0f;
}

bool adamw_apply(float *p, float *mom, float *vel, const float *grad, size_t a, size_t b, float wd,
                 const adamw_step *s) {
    v16 zero = {0};
    size_t j = a;
    for (; j + V16_LANES <= b; j += V16_LANES) zero += adamw16(p + j, mom + j, vel + j, load16(grad + j), wd, s);
    if (j < b) { /* the last few through a block's copy */
        float pb[V16_LANES] = {0}, mb[V16_LANES] = {0}, vb[V16_LANES] = {0}, gb[V16_LANES] = {0};
        size_t n = (b - j) * sizeof(float);
        memcpy(pb, p + j, n), memcpy(mb, mom + j, n), memcpy(vb, vel + j, n), memcpy(gb, grad + j, n);
        zero += adamw16(pb, mb, vb, load16(gb), wd, s);
        memcpy(p + j, pb, n), memcpy(mom + j, mb, n), memcpy(vel + j, vb, n);
    }
    for (int k = 0; k < V16_LANES; k++)
        if (zero[k] != 0.0f) return false;
    return true;
}
