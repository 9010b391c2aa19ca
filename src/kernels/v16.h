/* 16 floats as one value: one AVX-512 register or two AVX2 ones (GCC's vector extension
 * lowers it to what -march allows). Its arithmetic is lane by lane, each product and sum
 * rounded as the scalar code's (C11 mode contracts nothing into FMAs), so a loop rewritten
 * on it keeps a scalar loop's bits. Loads and stores go through memcpy: no alignment needed.
 * Not a public header. */
#ifndef LOUPE_KERNELS_V16_H
#define LOUPE_KERNELS_V16_H

#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
#define V16_LANES 16

/* GCC warns (-Wpsabi) that a 64-byte vector passed or returned without AVX-512 has another
 * ABI than with it; these helpers are always inlined, so no call ever crosses an ABI
 * boundary (the warning fires at -O1, make sanitize's level, regardless). */
#pragma GCC diagnostic ignored "-Wpsabi"
#define VEC_INLINE static inline __attribute__((always_inline))

VEC_INLINE v16 load16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

VEC_INLINE void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/* 8 doubles: half a v16's lanes widened (sums kept in double). */
typedef double v8d __attribute__((vector_size(64)));

/* 16 int32 lanes (comparisons' masks: all ones or zero) and 16 uint32 ones (bits to shift). */
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef uint32_t vu16 __attribute__((vector_size(64)));

/* Lanes 0-7 and 8-15 of x widened to double (exactly). */
VEC_INLINE v8d lo8d(v16 x) {
    return __builtin_convertvector(__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
}
VEC_INLINE v8d hi8d(v16 x) {
    return __builtin_convertvector(__builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
}

/* The larger of a and b in each lane (b where they are equal or either is NaN). */
VEC_INLINE v16 max16(v16 a, v16 b) {
    vi16 gt = a > b;
    return (v16)(((vi16)a & gt) | ((vi16)b & ~gt));
}

#endif
