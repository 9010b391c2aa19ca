/* libFuzzer: the GGUF reader on arbitrary bytes. When a file parses, every value and
 * tensor it reports must lie inside the input (ASan checks the reads), small tensors of a
 * readable type must decode, its tokenizer (if any) must encode a string, and when it
 * makes a model, a two-token forward pass must stay
 * inside the weights. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/gguf.h"
#include "loupe/run.h"
#include "loupe/tokenizer.h"
#include "arch/model_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch_parsed(const lp_gguf *g) {
    volatile unsigned char sink = 0;
    volatile double sum = 0;
    for (int i = 0; i < lp_gguf_kv_count(g); i++) {
        const lp_gguf_kv *kv = lp_gguf_kv_at(g, i);
        if (lp_gguf_find_kv(g, kv->key) != kv) __builtin_trap();
        if (kv->type == LP_GGUF_STRING && kv->n) sink ^= kv->data[0] ^ kv->data[kv->n - 1];
        if (kv->type != LP_GGUF_ARRAY) continue;
        for (uint64_t k = 0; k < kv->n && k < 4096; k++) {
            if (kv->elem == LP_GGUF_STRING) {
                const char *s;
                size_t len;
                lp_gguf_str_at(kv, k, &s, &len);
                if (len) sink ^= (unsigned char)(s[0] ^ s[len - 1]);
            } else {
                sum += lp_gguf_num_at(kv, k);
            }
        }
    }
    static float scratch[1 << 14];
    for (int i = 0; i < lp_gguf_tensor_count(g); i++) {
        const lp_gguf_tensor *t = lp_gguf_tensor_at(g, i);
        if (lp_gguf_find_tensor(g, t->name) != t || !lp_ggml_type_name(t->type)) __builtin_trap();
        if (t->nbytes) sink ^= t->data[0] ^ t->data[t->nbytes - 1];
        if (lp_ggml_type_readable(t->type) && t->n_elem <= sizeof scratch / sizeof *scratch &&
            lp_ggml_dequantize(t->type, t->data, scratch, (size_t)t->n_elem) != LP_OK)
            __builtin_trap();
    }
    (void)sink;
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_gguf *g;
    if (lp_gguf_parse(&g, data, size, "fuzz.gguf") == LP_OK) {
        touch_parsed(g);
        lp_tokenizer *t;
        if (lp_tokenizer_load_gguf(&t, g) == LP_OK && t) {
            static const char text[] = "hello w\xc3\xa9rld <|endoftext|>! <s>[MASK] 12345 \n\n##a";
            int ids[64], n;
            (void)lp_tokenizer_encode(t, text, sizeof text - 1, true, ids, 64, &n);
            lp_tokenizer_free(t);
        }
        lp_gguf_free(g);
    }
    lp_model *m = calloc(1, sizeof *m);
    if (m && lp_gguf_model_parse(m, data, size, "fuzz.gguf") == LP_OK &&
        m->cfg.n_layer * (size_t)m->cfg.d_model < 4096) {
        int ids[2] = {0, m->cfg.vocab - 1};
        int n = m->cfg.n_ctx >= 2 ? 2 : 1;
        lp_run *r;
        if (lp_run_new(&r, m, ids, n) == LP_OK) lp_run_free(r);
    }
    lp_model_free(m);
    return 0;
}
