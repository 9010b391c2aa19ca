/* Float exp and log the compiler can vectorise: glibc's expf/logf are calls it cannot, and
 * recording a run takes one of each per logit and per attention entry (tens of millions).
 * Cephes' polynomials, branch-free: relative error about 3e-7 (exp) and 2e-7 (log), against
 * 1e-5 that any stored metric or probability is compared to. Loops over them vectorise in
 * fixed blocks (LP_VBLOCK lanes summed apart, then together in double), which -O2's cheap
 * cost model accepts and which keep the sum's order fixed. */
#ifndef LOUPE_KERNELS_VMATH_H
#define LOUPE_KERNELS_VMATH_H

#include <stdint.h>
#include <string.h>

#include "kernels/v16.h"

#define LP_VBLOCK 64

/* Cephes' exp of x in [-87, 0] up to its power of two: declares n (x / ln 2 rounded to an
 * integer) and p (exp(x - n ln 2)), the same operations on a float (lp_vexp) or on 16 lanes
 * (lp_vexp16), so that both give the same bits. */
#define LP_VEXP_REDUCED(type, x, n, p)                                                                 \
    type n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */ \
    type r_ = x - n * 0.693359375f + n * 2.12194440e-4f;              /* x - n ln 2, ln 2 in two parts */ \
    type p = 1.9875691500e-4f * r_ + 1.3981999507e-3f;                                                \
    p = p * r_ + 8.3334519073e-3f;                                                                     \
    p = p * r_ + 4.1665795894e-2f;                                                                     \
    p = p * r_ + 1.6666665459e-1f;                                                                     \
    p = p * r_ + 5.0000001201e-1f;                                                                     \
    p = p * r_ * r_ + r_ + 1.0f

/* exp(x) for x <= 0 (below -87 it returns exp(-87), ~1.6e-38: softmax terms that small add
 * nothing). */
static inline float lp_vexp(float x) {
    x = x < -87.0f ? -87.0f : x;
    LP_VEXP_REDUCED(float, x, n, p);
    /* 2^n, shifted as unsigned: a NaN x (a diverging training's logits) gives some n whose
     * shift must still be defined; p is NaN then, and so is the result */
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* lp_vexp in 16 lanes, with its bits, without the round trip through memory that a loop of
 * lp_vexp over an array takes (its 16-lane loads of two 8-lane stores stall: store
 * forwarding fails). */
VEC_INLINE v16 lp_vexp16(v16 x) {
    x = max16((v16){0} - 87.0f, x); /* -87 where x < -87, else x (a NaN kept): lp_vexp's clamp */
    LP_VEXP_REDUCED(v16, x, n, p);
    vu16 bits = ((vu16)__builtin_convertvector(n, vi16) + 127u) << 23; /* unsigned: as lp_vexp's */
    return p * (v16)bits;
}

/* log(x) for x >= 0, x below FLT_MIN (zeros, subnormals) taken as FLT_MIN: log's argument
 * in a softmax's p log p, where such p add nothing. The mantissa is brought to
 * [sqrt(1/2), sqrt(2)) by integer arithmetic (musl's way), so nothing branches. */
static inline float lp_vlog(float x) {
    uint32_t ix;
    memcpy(&ix, &x, sizeof ix);
    ix = ix < 0x00800000u ? 0x00800000u : ix;
    ix += 0x3f800000u - 0x3f3504f3u;
    float e = (float)((int32_t)(ix >> 23) - 0x7f);
    ix = (ix & 0x007fffffu) + 0x3f3504f3u;
    float m;
    memcpy(&m, &ix, sizeof m);
    m -= 1.0f;
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return m + y + 0.693359375f * e;
}

/* t[0..LP_VBLOCK) summed in 16 lanes, then the lanes: an order fixed by the block alone. */
static inline float lp_vsum_block(const float *t) {
    float lane[16] = {0};
    for (int q = 0; q < LP_VBLOCK; q += 16)
        for (int i = 0; i < 16; i++) lane[i] += t[q + i];
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += lane[i];
    return s;
}

#endif
