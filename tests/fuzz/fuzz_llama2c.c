/* libFuzzer: the llama2.c checkpoint parser on arbitrary bytes; when a file parses, a
 * one-token forward pass must stay inside the weights it found. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/run.h"
#include "arch/model_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The parser needs 4-byte-aligned weights, as a mapping gives them. */
    unsigned char *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    lp_model *m = calloc(1, sizeof *m);
    if (m && lp_llama2c_parse(m, copy, size, "fuzz.bin") == 0 && m->cfg.n_layer * (size_t)m->cfg.d_model < 4096) {
        int ids[2] = {0, m->cfg.vocab - 1};
        int n = m->cfg.n_ctx >= 2 ? 2 : 1;
        lp_run *r;
        if (lp_run_new(&r, m, ids, n) == 0) lp_run_free(r);
    }
    lp_model_free(m);
    free(copy);
    return 0;
}
