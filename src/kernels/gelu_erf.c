/* The exact GELU, 0.5 x (1 + erf(x / sqrt 2)) in double rounded to float, 8 lanes at a time.
 * glibc's erf is a call per element the compiler cannot vectorise: 5 ns an element for
 * |x| < 1, 17 beyond, most of Pythia's and BERT's element-wise time. This is the same
 * algorithm (fdlibm's s_erf.c, which glibc's dbl-64 erf is: the same intervals, split at the
 * same high words, the same rational approximations), each interval computed for the lanes
 * in it, with exp a polynomial of its own: 1.4 ns an element for |x| < 1, 5.5-6.6 across
 * [-10, 10] (AVX-512, Zen 5). Its erf may differ from glibc's in the last bits, far below
 * float rounding: over all 2^32 floats the GELUs were glibc's, bit for bit (Debian 12's glibc
 * 2.36); test_forward allows a rare 1-ulp difference, as another glibc could round apart. */
#include "kernels/gelu_erf.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kernels/v16.h"

typedef int64_t vi8 __attribute__((vector_size(64)));
typedef uint64_t vu8 __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));

#define SPLAT(c) ((v8d){c, c, c, c, c, c, c, c})

VEC_INLINE v8d blend(vi8 mask, v8d a, v8d b) { return (v8d)(((vi8)a & mask) | ((vi8)b & ~mask)); }
VEC_INLINE bool any(vi8 mask) {
    int64_t m = 0;
    for (int k = 0; k < 8; k++) m |= mask[k];
    return m != 0;
}

/* exp(v) for -40 < v <= 0 (what erfc's tail needs): v = k ln2 + r, |r| <= ln2 / 2, ln2 in
 * two parts so that k ln2 is exact; exp(r) by its Taylor series to r^13 (error below 2^-60 on
 * that interval); 2^k from k's exponent bits (k >= -58: no subnormals). */
VEC_INLINE v8d exp8(v8d v) {
    const v8d ln2_hi = SPLAT(6.93147180369123816490e-01), ln2_lo = SPLAT(1.90821492927058770002e-10);
    const v8d inv_ln2 = SPLAT(1.44269504088896338700e+00), shift = SPLAT(6755399441055744.0); /* 1.5 * 2^52 */
    v8d kd = v * inv_ln2 + shift;
    vu8 k = (vu8)kd - (vu8)shift; /* k in two's complement: the rounded v / ln2 */
    kd -= shift;
    v8d r = (v - kd * ln2_hi) - kd * ln2_lo;
    v8d p = SPLAT(1.0 / 6227020800.0);
    static const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                      1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,     1.0 / 120.0,
                                      1.0 / 24.0,        1.0 / 6.0,        0.5,             1.0, 1.0};
    for (int i = 0; i < 13; i++) p = p * r + SPLAT(inv_fact[i]);
    v8d two_k = (v8d)((k + 1023) << 52);
    return p * two_k;
}

/* fdlibm's coefficients, lowest power first: erf on [0, 0.84375) = x + x PP(x^2) / QQ(x^2);
 * on [0.84375, 1.25) = sign (erx + PA(s) / QA(s)), s = |x| - 1; erfc beyond = exp(-x^2 -
 * 0.5625 + R(s) / S(s)) / |x|, s = 1 / x^2, with RA/SA below 1/0.35 and RB/SB above. */
static const double PP[] = {1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
                            -5.77027029648944159157e-03, -2.37630166566501626084e-05};
static const double QQ[] = {1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
                            1.32494738004321644526e-04, -3.96022827877536812320e-06};
static const double PA[] = {-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
                            3.18346619901161753674e-01,  -1.10894694282396677476e-01, 3.54783043256182359371e-02,
                            -2.16637559486879084300e-03};
static const double QA[] = {1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
                            1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02};
static const double RA[] = {-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
                            -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
                            -8.12874355063065934246e+01, -9.81432934416914548592e+00};
static const double SA[] = {1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
                            6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
                            6.57024977031928170135e+00, -6.04244152148580987438e-02};
static const double RB[] = {-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
                            -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
                            -4.83519191608651397019e+02};
static const double SB[] = {1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
                            3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
                            -2.24409524465858183362e+01};
#define HORNER(c, s) horner8(c, (int)(sizeof c / sizeof *c), s)

/* c[0] + s (c[1] + s (c[2] + ...)), as fdlibm nests it. */
VEC_INLINE v8d horner8(const double *c, int n, v8d s) {
    v8d p = SPLAT(c[n - 1]);
    for (int i = n - 2; i >= 0; i--) p = SPLAT(c[i]) + s * p;
    return p;
}

/* erf of 8 doubles, by fdlibm's intervals of |x|: [0, 0.84375), [0.84375, 1.25), [1.25,
 * 1/0.35), [1/0.35, 6), [6, inf]; each computed only when some lane is in it. */
static v8d erf8(v8d x) {
    vi8 bits = (vi8)x, hi = (vi8)(((vu8)bits >> 32) & 0x7fffffff), neg = bits < 0;
    v8d ax = (v8d)(bits & INT64_MAX), one = SPLAT(1.0);
    v8d out = blend(neg, SPLAT(-1.0), one); /* |x| >= 6, and NaN (the GELU's x * ... keeps it) */
    vi8 small = hi < 0x3feb0000, mid = (hi >= 0x3feb0000) & (hi < 0x3ff40000);
    vi8 tail = (hi >= 0x3ff40000) & (hi < 0x40180000), near = hi < 0x4006db6e; /* |x| < 1/0.35 */
    if (any(small)) {
        v8d z = x * x;
        out = blend(small, x + x * (HORNER(PP, z) / HORNER(QQ, z)), out);
    }
    if (any(mid)) {
        v8d s = ax - one, e = SPLAT(8.45062911510467529297e-01) + HORNER(PA, s) / HORNER(QA, s);
        out = blend(mid, blend(neg, -e, e), out);
    }
    if (any(tail)) { /* exp(-z^2 - 0.5625) exp((z - |x|)(z + |x|) + R/S) / |x|, z = |x| to 32 bits */
        v8d s = one / (ax * ax), r = SPLAT(0.0), q = SPLAT(0.0);
        if (any(near & tail)) r = HORNER(RA, s), q = HORNER(SA, s);
        if (any(~near & tail)) r = blend(near, r, HORNER(RB, s)), q = blend(near, q, HORNER(SB, s));
        v8d z = (v8d)((vu8)ax & 0xffffffff00000000u);
        v8d e = exp8(-z * z - SPLAT(0.5625)) * exp8((z - ax) * (z + ax) + r / q) / ax;
        out = blend(tail, blend(neg, e - one, one - e), out);
    }
    return out;
}

void lp_gelu_erf_n(float *y, const float *x, size_t n) {
    const v8d half = SPLAT(0.5), one = SPLAT(1.0), inv_sqrt2 = SPLAT(0.70710678118654752440);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f in;
        memcpy(&in, x + i, sizeof in);
        v8d v = __builtin_convertvector(in, v8d);
        v8f out = __builtin_convertvector(half * v * (one + erf8(v * inv_sqrt2)), v8f);
        memcpy(y + i, &out, sizeof out);
    }
    for (; i < n; i++) y[i] = lp_gelu_erf(x[i]);
}
