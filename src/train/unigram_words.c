/* A word-level tokenizer.json in T5's form (loupe/unigram_words.h). */
#include "loupe/unigram_words.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/fileio.h"

#define SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's "▁" */

static const char *const SPECIALS[3] = {"<pad>", "</s>", "<unk>"};

static int check_word(const char *const *words, int i) {
    const char *w = words[i];
    if (!w || !*w) return lp_error(LP_EINVAL, "word %d is empty", i);
    if (strlen(w) > 200) return lp_error(LP_EINVAL, "word %d is longer than 200 bytes", i);
    for (const unsigned char *p = (const unsigned char *)w; *p; p++)
        if (*p <= ' ' || *p == 0x7f) return lp_error(LP_EINVAL, "word %d '%s' holds a blank or control character", i, w);
    if (strstr(w, SPACE)) return lp_error(LP_EINVAL, "word %d '%s' holds the space marker U+2581", i, w);
    if (w[0] == '<' && w[strlen(w) - 1] == '>')
        return lp_error(LP_EINVAL, "word %d '%s' is written like a special token", i, w);
    for (int j = 0; j < i; j++)
        if (strcmp(words[j], w) == 0) return lp_error(LP_EINVAL, "word '%s' is given twice (%d and %d)", w, j, i);
    return LP_OK;
}

/* Metaspace as T5's tokenizer.json has it (the pre-tokenizer and the decoder alike). */
static json_t *metaspace(void) {
    return json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement", SPACE, "prepend_scheme", "always",
                     "split", 1);
}

static json_t *template_eos(void) {
    json_t *a = json_pack("{s:{s:s,s:i}}", "Sequence", "id", "A", "type_id", 0);
    json_t *b = json_pack("{s:{s:s,s:i}}", "Sequence", "id", "B", "type_id", 0);
    json_t *eos = json_pack("{s:{s:s,s:i}}", "SpecialToken", "id", "</s>", "type_id", 0);
    json_t *single = json_pack("[O,O]", a, eos), *pair = json_pack("[O,O,O,O]", a, eos, b, eos);
    json_decref(a), json_decref(b), json_decref(eos);
    return json_pack("{s:s,s:o,s:o,s:{s:{s:s,s:[i],s:[s]}}}", "type", "TemplateProcessing", "single", single, "pair",
                     pair, "special_tokens", "</s>", "id", "</s>", "ids", LP_UW_EOS, "tokens", "</s>");
}

int lp_unigram_words_save(const char *dir, const char *const *words, int n) {
    if (n < 1) return lp_error(LP_EINVAL, "a word-level tokenizer needs at least one word");
    for (int i = 0; i < n; i++) {
        int rc = check_word(words, i);
        if (rc) return rc;
    }
    json_t *vocab = json_array(), *added = json_array();
    for (int i = 0; i < 3; i++) {
        json_array_append_new(vocab, json_pack("[s,f]", SPECIALS[i], 0.0));
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i, "content", SPECIALS[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special",
                                               1));
    }
    /* Equal scores: each word has one segmentation. No lone "▁" piece: with one, an unknown
     * word would be "▁" + <unk>; without, it is one <unk>, as the header promises. */
    double score = -log((double)n);
    char piece[256];
    for (int i = 0; i < n; i++) {
        snprintf(piece, sizeof piece, SPACE "%s", words[i]);
        json_array_append_new(vocab, json_pack("[s,f]", piece, score));
    }
    json_t *root = json_pack("{s:s,s:n,s:n,s:o,s:n,s:o,s:o,s:o,s:{s:s,s:i,s:o,s:b}}", "version", "1.0", "truncation",
                             "padding", "added_tokens", added, "normalizer", "pre_tokenizer", metaspace(),
                             "post_processor", template_eos(), "decoder", metaspace(), "model", "type", "Unigram",
                             "unk_id", LP_UW_UNK, "vocab", vocab, "byte_fallback", 0);
    char path[4096];
    int rc = lp_path_join(path, sizeof path, dir, "tokenizer.json");
    if (!rc && (!root || json_dump_file(root, path, JSON_INDENT(1)) != 0))
        rc = lp_error(LP_EIO, "%s: cannot write", path);
    json_decref(root);
    return rc;
}
