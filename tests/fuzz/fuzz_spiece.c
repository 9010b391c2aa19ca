/* libFuzzer harness for sentencepiece's spiece.model (the protobuf reader, the precompiled
 * charsmap, the Unigram search): the input as the model, with 3 sentinels; if it loads,
 * encode a fixed text and slices of the input (with and without </s>) and a pair, decode what
 * came out, and look up each token. A load or an encode may fail, with a message; nothing may
 * crash, hang or allocate without bound. */
#include "loupe/error.h"
#include "loupe/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tokenizer_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_tokenizer *t = NULL;
    if (lp_tokenizer_load_spiece_mem(&t, data, size, 3, "spiece.model") != LP_OK) {
        if (t || !lp_errmsg()[0]) abort(); /* a failure leaves nothing and says why */
        return 0;
    }
    static const char text[] = "\xef\xbc\xa1\xcc\x81 \xef\xac\x81ne  <extra_id_1>\xe3\x80\x80x </s>";
    fuzz_encode_decode(t, FUZZ_TEXT, sizeof FUZZ_TEXT - 1, true);
    fuzz_encode_decode(t, text, sizeof text - 1, false);
    size_t k = size < 64 ? size : 64;
    fuzz_encode_decode(t, (const char *)data, k, false);
    fuzz_encode_decode(t, (const char *)data + size - k, k, true);
    fuzz_encode_pair(t, (const char *)data, k, text, sizeof text - 1);
    lp_tokenizer_free(t);
    return 0;
}
