/* libFuzzer harness for tokenizer.json (BPE of both kinds, WordPiece, the post-processors):
 * the input as the file; if it loads, encode a fixed text and a slice of the input (with and
 * without BOS) and a pair, decode what came out, and look up each token. A load or an encode may fail, with a message; nothing may crash, hang or
 * allocate without bound. */
#include "loupe/error.h"
#include "loupe/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "fuzz_tokenizer_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_write_file("tokenizer.json", data, size, path, sizeof path);
    lp_tokenizer *t = NULL;
    if (lp_tokenizer_load_json(&t, path) != LP_OK) {
        if (t || !lp_errmsg()[0]) abort(); /* a failure leaves nothing and says why */
        return 0;
    }
    fuzz_encode_decode(t, FUZZ_TEXT, sizeof FUZZ_TEXT - 1, true);
    /* slices of the input: its first and last 64 bytes */
    size_t k = size < 64 ? size : 64;
    fuzz_encode_decode(t, (const char *)data, k, false);
    fuzz_encode_decode(t, (const char *)data + size - k, k, true);
    fuzz_encode_pair(t, (const char *)data, k, FUZZ_TEXT, sizeof FUZZ_TEXT - 1);
    lp_tokenizer_free(t);
    return 0;
}
