/* ggml's tensor encodings to float32, block by block, as the format defines them (ggml
 * docs and its block structs). The products are formed in the order ggml forms them, in
 * float, so that the values are the ones llama.cpp itself computes.
 *
 * Q8_0 (34 bytes / 32 values): f16 d, int8 q[32]; x = d q.
 * Q4_0 (18 / 32): f16 d, u8 qs[16]; x[j] = d ((qs[j] & 15) - 8), x[j+16] = d ((qs[j] >> 4) - 8).
 * Q4_K (144 / 256): f16 d, f16 dmin, u8 scales[12] (8 six-bit scales and mins), u8 qs[128];
 *   eight sub-blocks of 32: x = d sc q - dmin m.
 * Q5_K (176 / 256): as Q4_K plus u8 qh[32] holding each value's fifth bit.
 * Q6_K (210 / 256): u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), int8 scales[16],
 *   f16 d; sixteen sub-blocks of 16: x = d sc (q - 32). */
#include <string.h>

#include "loupe/dtype.h"
#include "loupe/error.h"
#include "loupe/gguf.h"

static float half(const unsigned char *p) { return lp_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void q8_0(const unsigned char *b, float *y) {
    float d = half(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

static void q4_0(const unsigned char *b, float *y) {
    float d = half(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

/* Scale and min j (0..7) of a K-quant's 12 packed bytes: 6 bits each. */
static void scale_min_k4(int j, const unsigned char *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K and Q5_K (qh NULL for Q4_K). */
static void q45_k(const unsigned char *b, const unsigned char *qh, const unsigned char *ql, float *y) {
    float d = half(b), dmin = half(b + 2);
    const unsigned char *scales = b + 4;
    int u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
        int sc, m;
        scale_min_k4(is, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        scale_min_k4(is + 1, scales, &sc, &m);
        float d2 = d * (float)sc, m2 = dmin * (float)m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0x0f) + (qh && (qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh && (qh[l] & u2) ? 16 : 0)) - m2;
    }
}

static void q4_k(const unsigned char *b, float *y) { q45_k(b, NULL, b + 16, y); }
static void q5_k(const unsigned char *b, float *y) { q45_k(b, b + 16, b + 48, y); }

static void q6_k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half(b + 208);
    for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0 & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2 & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

static const struct {
    uint32_t type;
    int block, bytes;
    void (*decode)(const unsigned char *, float *);
} BLOCKS[] = {
    {LP_GGML_Q8_0, 32, 34, q8_0}, {LP_GGML_Q4_0, 32, 18, q4_0}, {LP_GGML_Q4_K, 256, 144, q4_k},
    {LP_GGML_Q5_K, 256, 176, q5_k}, {LP_GGML_Q6_K, 256, 210, q6_k},
};

bool lp_ggml_type_readable(uint32_t type) {
    if (type == LP_GGML_F32 || type == LP_GGML_F16 || type == LP_GGML_BF16) return true;
    for (size_t i = 0; i < sizeof BLOCKS / sizeof *BLOCKS; i++)
        if (BLOCKS[i].type == type) return true;
    return false;
}

int lp_ggml_dequantize(uint32_t type, const void *src, float *dst, size_t n) {
    if (type == LP_GGML_F32) return lp_convert_to_f32(dst, src, LP_DT_F32, n);
    if (type == LP_GGML_F16) return lp_convert_to_f32(dst, src, LP_DT_F16, n);
    if (type == LP_GGML_BF16) return lp_convert_to_f32(dst, src, LP_DT_BF16, n);
    for (size_t i = 0; i < sizeof BLOCKS / sizeof *BLOCKS; i++) {
        if (BLOCKS[i].type != type) continue;
        if (n % (size_t)BLOCKS[i].block)
            return lp_error(LP_EINVAL, "%zu values are not whole blocks of %d", n, BLOCKS[i].block);
        const unsigned char *b = src;
        for (size_t k = 0; k < n / (size_t)BLOCKS[i].block; k++)
            BLOCKS[i].decode(b + k * (size_t)BLOCKS[i].bytes, dst + k * (size_t)BLOCKS[i].block);
        return LP_OK;
    }
    const char *name = lp_ggml_type_name(type);
    return lp_error(LP_EUNSUPPORTED, "ggml type %s (%u) cannot be dequantised by loupe; it reads F32, F16, BF16, Q8_0, "
                    "Q4_0, Q4_K, Q5_K and Q6_K (requantise the model to one of them with llama-quantize)",
                    name ? name : "?", type);
}
