/* libFuzzer harness for the dictionary loaders (sae.h): byte 0 picks the format (SAELens,
 * Gemma Scope npz, sparsify, Llama Scope), bytes 1-2 the length L of the cfg.json (Llama
 * Scope: hyperparams.json) that follows (little endian; 0: none), then the weights file
 * (safetensors or npz). Loading must fail with a
 * message, or give a dictionary that encodes and decodes a row to finite numbers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/sae.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    lp_sae_format fmt = (lp_sae_format)(data[0] % 4);
    size_t cl = (size_t)data[1] | (size_t)data[2] << 8;
    if (cl > size - 3) return 0;
    char *cfg = cl ? malloc(cl) : NULL;
    if (cl && !cfg) return 0;
    if (cl) memcpy(cfg, data + 3, cl);
    lp_sae *s;
    int rc = lp_sae_parse(&s, fmt, cfg, cl, data + 3 + cl, size - 3 - cl, "fuzz");
    free(cfg);
    if (rc) {
        if (!lp_errmsg()[0]) abort();
        return 0;
    }
    const lp_sae_info *in = lp_sae_get_info(s);
    /* small dictionaries only: the point is the loader, not the BLAS */
    if ((size_t)in->d_in * in->d_sae <= (1u << 20) && in->d_out <= 4096) {
        float *x = calloc((size_t)in->d_in, sizeof *x), *a = malloc((size_t)in->d_sae * sizeof *a);
        float *y = malloc((size_t)in->d_out * sizeof *y);
        if (x && a && y) {
            for (int j = 0; j < in->d_in; j++) x[j] = (float)(j % 7) - 3.0f;
            if (lp_sae_encode(s, x, 1, a) || lp_sae_decode(s, a, x, 1, y)) abort();
            for (int j = 0; j < in->d_sae; j++)
                if (isnan(a[j]) || a[j] < 0) abort();
        }
        free(x), free(a), free(y);
    }
    lp_sae_free(s);
    return 0;
}
