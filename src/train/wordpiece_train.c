/* Learning a WordPiece vocabulary by counting words (loupe/wordpiece_train.h). */
#include "loupe/wordpiece_train.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/fileio.h"

/* BERT's punctuation in ASCII: every non-alphanumeric printable character. */
static bool punct(unsigned char c) { return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126); }

typedef struct {
    char *word;
    size_t count;
} entry;

typedef struct {
    entry *e;
    size_t n, cap; /* open addressing, cap a power of two */
} table;

static size_t hash(const char *s, size_t n) {
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int grow(table *t) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    entry *e = calloc(cap, sizeof *e);
    if (!e) return lp_error(LP_ENOMEM, "out of memory");
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->e[i].word) continue;
        size_t h = hash(t->e[i].word, strlen(t->e[i].word)) & (cap - 1);
        while (e[h].word) h = (h + 1) & (cap - 1);
        e[h] = t->e[i];
    }
    free(t->e);
    t->e = e;
    t->cap = cap;
    return LP_OK;
}

static int count_word(table *t, const char *s, size_t n) {
    if (2 * (t->n + 1) > t->cap && grow(t)) return LP_ENOMEM;
    size_t h = hash(s, n) & (t->cap - 1);
    while (t->e[h].word && !(strlen(t->e[h].word) == n && memcmp(t->e[h].word, s, n) == 0)) h = (h + 1) & (t->cap - 1);
    if (!t->e[h].word) {
        if (!(t->e[h].word = strndup(s, n))) return lp_error(LP_ENOMEM, "out of memory");
        t->n++;
    }
    t->e[h].count++;
    return LP_OK;
}

static int by_count(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return strcmp(x->word, y->word);
}

int lp_wordpiece_train_save(const char *text, const size_t *off, const size_t *len, size_t n_docs, int vocab,
                            const char *dir) {
    table t = {0};
    bool seen[256] = {false};
    char word[128];
    int rc = LP_OK;
    for (size_t d = 0; d < n_docs && !rc; d++) {
        const unsigned char *s = (const unsigned char *)text + off[d];
        for (size_t i = 0; i < len[d] && !rc;) {
            if (isspace(s[i]) || s[i] < 32 || s[i] > 126) {
                i++;
                continue;
            }
            size_t n = 0;
            if (punct(s[i])) word[n++] = (char)s[i++];
            else
                while (i < len[d] && !isspace(s[i]) && !punct(s[i]) && s[i] >= 32 && s[i] <= 126) {
                    if (n < sizeof word - 1) word[n++] = (char)tolower(s[i]);
                    i++;
                }
            for (size_t k = 0; k < n; k++) seen[(unsigned char)word[k]] = true;
            rc = count_word(&t, word, n);
        }
    }
    /* The vocabulary: specials, characters (and their continuations), then words. */
    size_t cap = 4096, used = 0;
    char *out = malloc(cap);
    int n = 0;
    entry *words = rc ? NULL : malloc((t.n ? t.n : 1) * sizeof *words);
    if (!rc && (!out || !words)) rc = lp_error(LP_ENOMEM, "out of memory");
#define ADD(piece)                                                                                  \
    do {                                                                                            \
        size_t k = strlen(piece);                                                                   \
        if (used + k + 2 > cap) {                                                                   \
            char *grown = realloc(out, cap = 2 * (cap + k));                                        \
            if (!grown) { rc = lp_error(LP_ENOMEM, "out of memory"); break; }                       \
            out = grown;                                                                            \
        }                                                                                           \
        memcpy(out + used, piece, k);                                                               \
        used += k;                                                                                  \
        out[used++] = '\n';                                                                         \
        n++;                                                                                        \
    } while (0)
    static const char *const special[LP_WP_N_SPECIAL] = {LP_WP_PAD, LP_WP_UNK, LP_WP_CLS, LP_WP_SEP, LP_WP_MASK};
    for (int i = 0; i < LP_WP_N_SPECIAL && !rc; i++) ADD(special[i]);
    for (int c = 33; c < 127 && !rc; c++) {
        if (!seen[c]) continue;
        char one[4] = {(char)c, 0}, cont[4] = {'#', '#', (char)c, 0};
        ADD(one);
        if (!rc && !punct((unsigned char)c)) ADD(cont);
    }
    if (!rc && n > vocab)
        rc = lp_error(LP_EINVAL, "a vocabulary of %d cannot hold the %d special tokens and characters of the corpus: "
                                 "give --vocab %d or more", vocab, n, n + 1);
    size_t nw = 0;
    for (size_t i = 0; !rc && i < t.cap; i++)
        if (t.e[i].word && strlen(t.e[i].word) > 1) words[nw++] = t.e[i];
    if (!rc) qsort(words, nw, sizeof *words, by_count);
    for (size_t i = 0; !rc && i < nw && n < vocab; i++) ADD(words[i].word);
#undef ADD
    char path[4096];
    if (!rc && !(rc = lp_path_join(path, sizeof path, dir, "vocab.txt"))) rc = lp_file_write(path, out, used);
    static const char config[] = "{\n  \"tokenizer_class\": \"BertTokenizer\",\n  \"do_lower_case\": true,\n"
                                 "  \"unk_token\": \"[UNK]\",\n  \"sep_token\": \"[SEP]\",\n  \"pad_token\": \"[PAD]\",\n"
                                 "  \"cls_token\": \"[CLS]\",\n  \"mask_token\": \"[MASK]\"\n}\n";
    if (!rc && !(rc = lp_path_join(path, sizeof path, dir, "tokenizer_config.json")))
        rc = lp_file_write(path, config, sizeof config - 1);
    for (size_t i = 0; i < t.cap; i++) free(t.e[i].word);
    free(t.e);
    free(words);
    free(out);
    return rc;
}
