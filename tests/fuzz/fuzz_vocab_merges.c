/* libFuzzer harness for a GPT-2 style vocab.json + merges.txt: the input split at its first
 * NUL byte (vocab.json before, merges.txt after; without one, merges.txt is empty); if they
 * load, encode a fixed text and a slice of the input, and decode. */
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
    char vocab[512], merges[512];
    fuzz_write_file("vocab.json", data, vocab_len, vocab, sizeof vocab);
    fuzz_write_file("merges.txt", nul ? nul + 1 : data, nul ? size - vocab_len - 1 : 0, merges, sizeof merges);
    lp_tokenizer *t = NULL;
    if (lp_tokenizer_load_gpt2(&t, vocab, merges) != LP_OK) {
        if (t || !lp_errmsg()[0]) abort();
        return 0;
    }
    fuzz_encode_decode(t, FUZZ_TEXT, sizeof FUZZ_TEXT - 1, false);
    size_t k = size - vocab_len < 64 ? size - vocab_len : 64;
    fuzz_encode_decode(t, (const char *)data + vocab_len, k, false); /* the start of merges.txt */
    fuzz_encode_decode(t, (const char *)data, vocab_len < 64 ? vocab_len : 64, false);
    fuzz_encode_pair(t, (const char *)data, vocab_len < 64 ? vocab_len : 64, FUZZ_TEXT, sizeof FUZZ_TEXT - 1);
    lp_tokenizer_free(t);
    return 0;
}
