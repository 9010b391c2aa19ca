/* tokcases: encodes each case of a llama.cpp-style test file with a tokenizer.json and
 * prints the ids, one line per case, separated by spaces (the layout of llama.cpp's .out
 * files, without their leading space), for tests/e2e/tokenizers.sh.
 *   tokcases TOKENIZER.json CASES.inp
 * CASES.inp holds each input followed by a line "__ggml_vocab_test__" (llama.cpp's
 * test-tokenizer-0 layout). No BOS or other template tokens are added. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/tokenizer.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: tokcases TOKENIZER.json CASES.inp\n");
        return 2;
    }
    lp_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    if (lp_tokenizer_load_json(&t, argv[1]) != LP_OK || lp_file_read_new(argv[2], &text, &len) != LP_OK) {
        fprintf(stderr, "error: %s\n", lp_errmsg());
        return 1;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int cap = (int)(len < 1000 ? 1000 : len > (1 << 24) ? (1 << 24) : len) + 16, rc = 0;
    int *ids = malloc((size_t)cap * sizeof *ids);
    for (const char *p = text, *end = text + len; ids && p < end;) {
        const char *q = memmem(p, (size_t)(end - p), sep, sizeof sep - 1);
        size_t n = q ? (size_t)(q - p) : (size_t)(end - p);
        int m = 0;
        if (lp_tokenizer_encode(t, p, n, false, ids, cap, &m) != LP_OK) {
            fprintf(stderr, "error: %s\n", lp_errmsg());
            rc = 1;
            break;
        }
        for (int i = 0; i < m; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
        if (!q) break;
        p = q + sizeof sep - 1;
    }
    if (!ids) fprintf(stderr, "error: out of memory\n"), rc = 1;
    free(ids);
    free(text);
    lp_tokenizer_free(t);
    return rc;
}
