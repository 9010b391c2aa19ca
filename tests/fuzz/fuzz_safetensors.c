/* libFuzzer harness for the safetensors parser: any bytes must give either an error or
 * tensors whose every byte lies inside the buffer. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loupe/dtype.h"
#include "loupe/error.h"
#include "loupe/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_safetensors *st;
    if (lp_st_parse(&st, data, size, "fuzz") != LP_OK) {
        (void)lp_errmsg();
        return 0;
    }
    static float scratch[4096];
    volatile uint8_t sink = 0;
    int n = lp_st_count(st);
    for (int i = 0; i < n; i++) {
        const lp_st_tensor *t = lp_st_at(st, i);
        if (lp_st_find(st, t->name) != t) __builtin_trap();
        if (!lp_st_path(st, t)) __builtin_trap();
        if (t->ndim < 0 || t->ndim > LP_ST_MAX_DIMS) __builtin_trap();
        if (t->nbytes == 0) continue;
        /* ASan reports these reads if a tensor strays outside the input. */
        const uint8_t *p = t->data;
        sink ^= p[0];
        sink ^= p[t->nbytes - 1];
        size_t es = lp_dtype_size(t->dtype);
        if ((t->dtype == LP_DT_F32 || t->dtype == LP_DT_F16 || t->dtype == LP_DT_BF16) &&
            t->nbytes / es <= sizeof scratch / sizeof scratch[0]) {
            if (t->nbytes % es != 0) __builtin_trap();
            if (lp_convert_to_f32(scratch, t->data, t->dtype, t->nbytes / es) != LP_OK) __builtin_trap();
        }
    }
    (void)sink;
    lp_st_free(st);
    return 0;
}
