/* What the tokenizer harnesses do with a tokenizer that loaded: encode, decode (through a
 * too-small buffer first, which must report the size it needs), look up each token. */
#ifndef LOUPE_FUZZ_TOKENIZER_COMMON_H
#define LOUPE_FUZZ_TOKENIZER_COMMON_H

#include "loupe/error.h"
#include "loupe/tokenizer.h"

#include <stdbool.h>
#include <stdlib.h>

static const char FUZZ_TEXT[] = "Hello, w\xc3\xb6rld! \xe2\x80\x99 \xff\x80 \xf0\x9f\x98\x80 end";

static void fuzz_encode_decode(const lp_tokenizer *t, const char *text, size_t len, bool bos) {
    int cap = (int)len + 8, n = 0;
    int *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return;
    if (lp_tokenizer_encode(t, text, len, bos, ids, cap, &n) == LP_OK) {
        size_t need = 0;
        char small[4];
        if (lp_tokenizer_decode(t, ids, n, small, sizeof small, &need) == LP_ERANGE) {
            char *buf = malloc(need);
            if (buf && lp_tokenizer_decode(t, ids, n, buf, need, &need) != LP_OK) abort();
            free(buf);
        }
        for (int i = 0; i < n; i++) {
            size_t k;
            if (!lp_tokenizer_token_bytes(t, ids[i], &k) && ids[i] >= 0 && ids[i] < lp_tokenizer_vocab_size(t))
                (void)lp_tokenizer_token_piece(t, ids[i]);
        }
    } else if (!lp_errmsg()[0]) {
        abort(); /* a failed encode says why */
    }
    free(ids);
}

/* The pair (a, b) with and without special tokens: as many types as ids, and a buffer of
 * the size ERANGE asked for is enough. */
static void fuzz_encode_pair(const lp_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen) {
    for (int special = 0; special < 2; special++) {
        int n = 0, small[2];
        int rc = lp_tokenizer_encode_pair(t, a, alen, b, blen, special, small, NULL, 2, &n);
        if (rc == LP_OK) continue;
        if (rc != LP_ERANGE || n <= 2) { /* another failure (ERANGE too: the normalizer's limit) */
            if (!lp_errmsg()[0]) abort();
            continue;
        }
        int need = n;
        int *ids = malloc((size_t)need * sizeof *ids), *types = malloc((size_t)need * sizeof *types);
        if (ids && types && (lp_tokenizer_encode_pair(t, a, alen, b, blen, special, ids, types, need, &n) != LP_OK ||
                             n != need))
            abort();
        free(ids);
        free(types);
    }
}

#endif
