/* libFuzzer harness for the tokenizer.
 * (a) The input as a llama2.c tokenizer.bin (vocabulary size 1 + data[0] % 300, the rest is
 *     the file): if it loads, encode a fixed text and a slice of the input, and decode.
 * (b) The input as text for the GPT-2 tokenizer from ../shared/tokenizers/gpt2 (run from the
 *     project root; skipped if it is not there): decode(encode(x)) must give x back. */
#include "loupe/error.h"
#include "loupe/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tokenizer_common.h"

static lp_tokenizer *gpt2;
static int gpt2_tried;

static void fuzz_llama2c(const uint8_t *data, size_t size) {
    if (size < 1) return;
    lp_tokenizer *t = NULL;
    int vocab = 1 + data[0] % 300;
    if (lp_tokenizer_load_llama2c_mem(&t, data + 1, size - 1, vocab, "fuzz.bin") != LP_OK) return;
    fuzz_encode_decode(t, FUZZ_TEXT, sizeof FUZZ_TEXT - 1, true);
    fuzz_encode_decode(t, (const char *)data, size < 64 ? size : 64, false);
    fuzz_encode_pair(t, (const char *)data, size < 64 ? size : 64, FUZZ_TEXT, sizeof FUZZ_TEXT - 1);
    lp_tokenizer_free(t);
}

static void fuzz_gpt2(const uint8_t *data, size_t size) {
    if (!gpt2_tried) {
        gpt2_tried = 1;
        if (lp_tokenizer_load_gpt2(&gpt2, "../shared/tokenizers/gpt2/encoder.json",
                                   "../shared/tokenizers/gpt2/vocab.bpe") != LP_OK)
            gpt2 = NULL;
    }
    if (!gpt2) return;
    int cap = (int)size + 3, n = 0;
    int *ids = malloc((size_t)cap * sizeof *ids);
    char *buf = malloc(size + 1);
    if (!ids || !buf) goto done;
    if (lp_tokenizer_encode(gpt2, (const char *)data, size, false, ids, cap, &n) != LP_OK) abort();
    bool special = false;
    for (int i = 0; i < n; i++) special |= ids[i] == lp_tokenizer_eos(gpt2);
    size_t len = 0;
    if (lp_tokenizer_decode(gpt2, ids, n, buf, size + 1, &len) != LP_OK) abort();
    /* <|endoftext|> is dropped by decode; everything else comes back byte for byte */
    if (!special && (len != size || memcmp(buf, data, size) != 0)) abort();
done:
    free(ids);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_llama2c(data, size);
    fuzz_gpt2(data, size);
    return 0;
}
