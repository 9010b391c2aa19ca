/* Element types of checkpoint tensors and conversion to float32. */
#ifndef LOUPE_DTYPE_H
#define LOUPE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LP_DT_UNKNOWN = 0, /* a dtype loupe does not compute with (I64, BOOL, ...) */
    LP_DT_F32,
    LP_DT_F16,
    LP_DT_BF16,
    LP_DT_F64,
    LP_DT_I64,
    LP_DT_I32,
    LP_DT_I16,
    LP_DT_I8,
    LP_DT_U8,
    LP_DT_BOOL,
} lp_dtype;

/* "F32" -> LP_DT_F32 etc.; LP_DT_UNKNOWN for names not listed above. */
lp_dtype lp_dtype_from_name(const char *name);
const char *lp_dtype_name(lp_dtype dt);       /* "F32", ...; "?" for unknown */
size_t lp_dtype_size(lp_dtype dt);            /* bytes per element; 0 for unknown */

float lp_f16_to_f32(uint16_t h);
float lp_bf16_to_f32(uint16_t b);
uint16_t lp_f32_to_f16(float f);              /* round to nearest even, inf/nan preserved */
uint16_t lp_f32_to_bf16(float f);             /* round to nearest even, nan preserved */

/* Converts n elements of src (F32, F16 or BF16; src may be unaligned) to float32 dst.
 * Returns LP_EUNSUPPORTED for other dtypes. */
int lp_convert_to_f32(float *dst, const void *src, lp_dtype dt, size_t n);

#endif
