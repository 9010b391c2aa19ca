/* libFuzzer harness for BERT's vocab.txt: the input split at its first NUL byte (vocab.txt
 * before, tokenizer_config.json after; without one, no config); if they load, encode a fixed
 * text, slices of the input, and a pair, and decode. */
#include "loupe/error.h"
#include "loupe/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "fuzz_tokenizer_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t vocab_len = nul ? (size_t)(nul - data) : size;
    char vocab[512], config[512];
    fuzz_write_file("vocab.txt", data, vocab_len, vocab, sizeof vocab);
    if (nul) fuzz_write_file("tokenizer_config.json", nul + 1, size - vocab_len - 1, config, sizeof config);
    lp_tokenizer *t = NULL;
    if (lp_tokenizer_load_vocab_txt(&t, vocab, nul ? config : NULL) != LP_OK) {
        if (t || !lp_errmsg()[0]) abort();
        return 0;
    }
    fuzz_encode_decode(t, FUZZ_TEXT, sizeof FUZZ_TEXT - 1, true);
    size_t k = vocab_len < 64 ? vocab_len : 64;
    fuzz_encode_decode(t, (const char *)data, k, true);
    fuzz_encode_decode(t, (const char *)data + vocab_len - k, k, false);
    fuzz_encode_pair(t, (const char *)data, k, FUZZ_TEXT, sizeof FUZZ_TEXT - 1);
    lp_tokenizer_free(t);
    return 0;
}
