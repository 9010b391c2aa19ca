/* expf 8 floats at a time with glibc's bits (expf8.h). */
#include "kernels/expf8.h"

#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* 2^(i/32) as doubles, less i << 47 (what adding k << 47 for k = 32 n + i puts back with
 * 2^n): glibc's __exp2f_data.tab, each entry the correctly rounded power. */
static const int64_t POW2_TAB[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};

static inline __m256d bits_pd(int64_t b) { return _mm256_castsi256_pd(_mm256_set1_epi64x(b)); }

/* expf of 4 floats with |x| < 88: glibc's e_expf.c. x 32/ln2 = k + r (k rounded to nearest
 * by adding 1.5 * 2^52), 2^(k/32) from the table and k's exponent bits, 2^(r/32) a cubic. */
static inline __m128 expf4(__m128 x) {
    const __m256d inv_ln2_32 = bits_pd(0x40471547652b82fe), shift = bits_pd(0x4338000000000000);
    const __m256d c0 = bits_pd(0x3ebc6af84b912394), c1 = bits_pd(0x3f2ebfce50fac4f3), c2 = bits_pd(0x3f962e42ff0c52d6);
    __m256d xd = _mm256_cvtps_pd(x), kd = _mm256_fmadd_pd(inv_ln2_32, xd, shift);
    __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    __m256d r = _mm256_fmsub_pd(inv_ln2_32, xd, kd);
    __m256i t = _mm256_i64gather_epi64((const long long *)POW2_TAB, _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
    __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64(ki, 47)));
    __m256d z = _mm256_fmadd_pd(c0, r, c1), r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, c2, _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
}

/* expf of 8 floats, or 0 when some lane is outside |x| < 88 (glibc's fast path: the top 12
 * bits of |x| at most 0x42a) or NaN: the caller takes those 8 with expf. */
static inline int expf8(__m256 x, __m256 *out) {
    __m256i top = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20), _mm256_set1_epi32(0x7ff));
    if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(top, _mm256_set1_epi32(0x42a)))) return 0;
    *out = _mm256_set_m128(expf4(_mm256_extractf128_ps(x, 1)), expf4(_mm256_castps256_ps128(x)));
    return 1;
}

double lp_softmax_exp(float *row, int len, float mx, float floor) {
    int j = 0;
    __m256 vmx = _mm256_set1_ps(mx), vfloor = _mm256_set1_ps(floor), zero = _mm256_setzero_ps();
    __m256d dot = _mm256_setzero_pd();
    for (; j + 8 <= len; j += 8) {
        __m256 e = _mm256_sub_ps(_mm256_loadu_ps(row + j), vmx), y;
        __m256 low = _mm256_cmp_ps(e, vfloor, _CMP_LT_OQ); /* false for NaN, as e < floor */
        e = _mm256_blendv_ps(e, zero, low); /* dropped entries: 0 * 0 in the sum, never 0 * -inf */
        if (!expf8(e, &y)) break;
        y = _mm256_blendv_ps(y, zero, low);
        _mm256_storeu_ps(row + j, y);
        __m256 ye = _mm256_mul_ps(y, e);
        dot = _mm256_add_pd(dot, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(ye)),
                                               _mm256_cvtps_pd(_mm256_extractf128_ps(ye, 1))));
    }
    double lane[4], sum = 0.0;
    _mm256_storeu_pd(lane, dot);
    for (int k = 0; k < 4; k++) sum += lane[k];
    for (; j < len; j++) {
        float e = row[j] - mx;
        row[j] = e < floor ? 0.0f : expf(e);
        if (!(e < floor)) sum += (double)(row[j] * e);
    }
    return sum;
}

void lp_gelu_tanh_n(float *y, const float *x, size_t n) {
    const __m256 c = _mm256_set1_ps(-2.0f * 0.7978845608028654f), a = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), e;
        /* -2 k (x + ((a x) x) x), as lp_gelu_tanh's expression rounds it */
        __m256 u = _mm256_mul_ps(c, _mm256_add_ps(v, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(a, v), v), v)));
        if (!expf8(u, &e)) {
            for (size_t k = i; k < i + 8; k++) y[k] = lp_gelu_tanh(x[k]);
            continue;
        }
        _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) y[i] = lp_gelu_tanh(x[i]);
}

void lp_silu_mul_n(float *y, const float *g, const float *u, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i), e;
        if (!expf8(_mm256_xor_ps(v, sign), &e)) {
            for (size_t k = i; k < i + 8; k++) y[k] = lp_silu(g[k]) * u[k];
            continue;
        }
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = lp_silu(g[i]) * u[i];
}

#else

void lp_silu_mul_n(float *y, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = lp_silu(g[i]) * u[i];
}

double lp_softmax_exp(float *row, int len, float mx, float floor) {
    double sum = 0.0;
    for (int j = 0; j < len; j++) {
        float e = row[j] - mx;
        row[j] = e < floor ? 0.0f : expf(e);
        if (!(e < floor)) sum += (double)(row[j] * e);
    }
    return sum;
}

void lp_gelu_tanh_n(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = lp_gelu_tanh(x[i]);
}

#endif

void lp_gelu_tanh_mul_n(float *y, const float *g, const float *u, size_t n) {
    enum { STEP = 256 }; /* through a buffer: y may be u */
    float a[STEP];
    for (size_t i = 0; i < n; i += STEP) {
        size_t m = n - i < STEP ? n - i : STEP;
        lp_gelu_tanh_n(a, g + i, m);
        for (size_t k = 0; k < m; k++) y[i + k] = a[k] * u[i + k];
    }
}
