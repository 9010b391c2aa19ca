#include "loupe/dtype.h"

#include <stdbool.h>
#include <string.h>

#include "loupe/error.h"

/* -DLP_NO_F16C builds the portable path alone, for testing it on x86. */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(LP_NO_F16C)
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#define LP_HAVE_F16C_PATH 1
#endif

/* Checkpoint bytes are little-endian and are read by plain loads. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "loupe reads little-endian tensor data with native loads; big-endian hosts are not supported"
#endif

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [LP_DT_UNKNOWN] = {"?", 0},  [LP_DT_F32] = {"F32", 4}, [LP_DT_F16] = {"F16", 2},
    [LP_DT_BF16] = {"BF16", 2},  [LP_DT_F64] = {"F64", 8}, [LP_DT_I64] = {"I64", 8},
    [LP_DT_I32] = {"I32", 4},    [LP_DT_I16] = {"I16", 2}, [LP_DT_I8] = {"I8", 1},
    [LP_DT_U8] = {"U8", 1},      [LP_DT_BOOL] = {"BOOL", 1},
};
#define N_DTYPES (int)(sizeof dtypes / sizeof dtypes[0])

lp_dtype lp_dtype_from_name(const char *name) {
    if (!name) return LP_DT_UNKNOWN;
    for (int i = 1; i < N_DTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) return (lp_dtype)i;
    return LP_DT_UNKNOWN;
}

const char *lp_dtype_name(lp_dtype dt) {
    return (int)dt > 0 && (int)dt < N_DTYPES ? dtypes[dt].name : "?";
}

size_t lp_dtype_size(lp_dtype dt) {
    return (int)dt > 0 && (int)dt < N_DTYPES ? dtypes[dt].size : 0;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Branch-free so that the bulk loop vectorises: every case is computed and one selected.
 * Subnormal halves are mant * 2^-24, which int->float and a power-of-two scale give exactly.
 * NaNs come out quiet with their payload, as F16C's vcvtph2ps does. */
static inline uint32_t half_to_f32_bits(uint32_t h) {
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t exp = h & 0x7c00u;
    uint32_t mant = h & 0x03ffu;
    uint32_t normal = ((h & 0x7fffu) << 13) + ((127u - 15u) << 23);
    uint32_t infnan = 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0);
    uint32_t sub = f32_bits((float)mant * 0x1p-24f);
    uint32_t r = exp == 0 ? sub : exp == 0x7c00u ? infnan : normal;
    return r | sign;
}

float lp_f16_to_f32(uint16_t h) { return bits_f32(half_to_f32_bits(h)); }

float lp_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t lp_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: keep the top payload bits, force quiet so it stays NaN */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x03ffu));
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds (ties to even) to inf */
    if (ax >= 0x38800000u) {                      /* normal half: >= 2^-14 */
        uint32_t h = (ax - 0x38000000u) >> 13;    /* rebias exponent 127 -> 15 */
        uint32_t rem = ax & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* a carry into the exponent is right */
        return (uint16_t)(sign | h);
    }
    /* Subnormal half (units of 2^-24) or zero. The value is mant * 2^(e-150), so in
     * half units it is mant >> (126 - e). Float subnormals (e == 0) are far below 2^-25. */
    uint32_t e = ax >> 23;
    uint32_t shift = 126u - e;
    if (e == 0 || shift > 24) return sign; /* < 2^-25 (or exactly the tie 2^-25 -> even 0) */
    uint32_t mant = (ax & 0x007fffffu) | 0x00800000u;
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

uint16_t lp_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    /* Truncating a NaN whose payload sits in the low 16 bits would make it inf. */
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Chunks keep a fixed inner trip count so the compiler vectorises the loops at -O2;
 * memcpy into the chunk buffer is what makes an unaligned source safe. */
enum { CHUNK = 256 };

static void f16_to_f32_portable(float *dst, const unsigned char *src, size_t n) {
    uint16_t buf[CHUNK];
    uint32_t out[CHUNK];
    while (n >= CHUNK) {
        memcpy(buf, src, sizeof buf);
        for (int i = 0; i < CHUNK; i++) out[i] = half_to_f32_bits(buf[i]);
        memcpy(dst, out, sizeof out);
        src += sizeof buf;
        dst += CHUNK;
        n -= CHUNK;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = lp_f16_to_f32(h);
    }
}

#ifdef LP_HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(float *dst, const unsigned char *src,
                                                                 size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const void *)(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = lp_f16_to_f32(h);
    }
}

/* clang's __builtin_cpu_supports does not know "f16c", so ask cpuid; "avx" also checks
 * that the OS saves the YMM registers. Cached: cpuid serialises and costs ~100 cycles. */
static bool have_f16c(void) {
    static atomic_int cached; /* 0 unknown, 1 no, 2 yes */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v == 0) {
        unsigned a, b, c, d;
        bool yes = __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        v = yes ? 2 : 1;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v == 2;
}
#endif

static void bf16_to_f32(float *dst, const unsigned char *src, size_t n) {
    uint16_t buf[CHUNK];
    uint32_t out[CHUNK];
    while (n > 0) {
        size_t m = n < CHUNK ? n : CHUNK;
        memcpy(buf, src, m * 2);
        if (m == CHUNK)
            for (int i = 0; i < CHUNK; i++) out[i] = (uint32_t)buf[i] << 16;
        else
            for (size_t i = 0; i < m; i++) out[i] = (uint32_t)buf[i] << 16;
        memcpy(dst, out, m * 4);
        src += m * 2;
        dst += m;
        n -= m;
    }
}

int lp_convert_to_f32(float *dst, const void *src, lp_dtype dt, size_t n) {
    if (n == 0) return LP_OK;
    switch (dt) {
    case LP_DT_F32:
        memmove(dst, src, n * sizeof(float));
        return LP_OK;
    case LP_DT_F16:
#ifdef LP_HAVE_F16C_PATH
        if (have_f16c()) {
            f16_to_f32_f16c(dst, src, n);
            return LP_OK;
        }
#endif
        f16_to_f32_portable(dst, src, n);
        return LP_OK;
    case LP_DT_BF16:
        bf16_to_f32(dst, src, n);
        return LP_OK;
    default:
        return lp_error(LP_EUNSUPPORTED, "cannot convert %s tensors to F32", lp_dtype_name(dt));
    }
}
