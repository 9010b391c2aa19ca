/* A GGUF file's tokenizer, from its metadata (tokenizer.ggml.*):
 *  - model "gpt2": byte-level BPE, tokens and merges ("a b", in rank order), split by the
 *    regex that tokenizer.ggml.pre names (PRETOKENIZERS below; unknown names are refused
 *    rather than split wrongly); control and user-defined tokens matched whole in text.
 *  - model "llama": SentencePiece as llama.cpp runs it, which is llama2.c's algorithm:
 *    pieces ("▁" read as a space), merged greedily by score, <0xNN> byte fallback. Only
 *    normal and user-defined pieces are formed by merges (control, unknown, unused and byte
 *    tokens get no score).
 *    tokenizer.ggml.add_space_prefix (default true) puts "▁" before the text, as llama.cpp
 *    does; Gemma's files set it false.
 *  - model "bert": WordPiece (build_bert).
 * tokenizer.ggml.bos_token_id / eos_token_id / unknown_token_id and add_bos_token set the
 * specials (llama defaults: 1, 2, 0 and BOS added; gpt2: none added, except Llama 3's
 * pre-tokenizer, which llama.cpp gives a BOS). Every length is checked against the
 * vocabulary before use; failures name the file and the key. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/gguf.h"
#include "tokenizers/tokenizer_impl.h"

/* tokenizer.ggml.pre: the names llama.cpp's llama_vocab::load gives the splits of the
 * byte-level models loupe reads, and the regex of each. The regexes are the originals of
 * the models' tokenizer.json (which llama.cpp's llm_tokenizer_bpe rewrites without (?i:),
 * its regex engine lacking it: '[sS] for (?i:'s)); PCRE2 runs them as the tokenizer.json
 * path does, so a GGUF splits as its tokenizer.json would. "default" and an absent key are
 * GPT-2's split, as loupe read them before (llama.cpp's fallback for an unrecognised
 * vocabulary splits punctuation and digit runs apart first). "olmo" is what llama.cpp's
 * converter writes for GPT-NeoX-20B's vocabulary (Pythia, OLMo): GPT-2's split, as its
 * ByteLevel pre_tokenizer does. Llama 3's takes a word that is itself a token whole
 * (ignore_merges) and adds BOS, as llama.cpp does for it. */
#define LLAMA3_PATTERN                                                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"       \
    "\\s+(?!\\S)|\\s+"
#define QWEN2_PATTERN                                                                                              \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"           \
    "\\s+(?!\\S)|\\s+"
static const struct {
    const char *name, *pattern;
    bool ignore_merges, add_bos, merge_rounds;
} PRETOKENIZERS[] = {
    {"default", LP_TOK_GPT2_PATTERN, false, false, true},
    {"gpt-2", LP_TOK_GPT2_PATTERN, false, false, true},
    {"olmo", LP_TOK_GPT2_PATTERN, false, false, true},
    {"llama-bpe", LLAMA3_PATTERN, true, true, false},
    {"llama3", LLAMA3_PATTERN, true, true, false},
    {"llama-v3", LLAMA3_PATTERN, true, true, false},
    {"qwen2", QWEN2_PATTERN, false, false, false},
};
#define N_PRETOKENIZERS (sizeof PRETOKENIZERS / sizeof *PRETOKENIZERS)

#define TOKEN_NORMAL 1
#define TOKEN_UNKNOWN 2
#define TOKEN_CONTROL 3
#define TOKEN_USER_DEFINED 4

/* The array under key with n elements of a string (want_string) or numeric type, or NULL if
 * absent (an error when required). */
static int get_array(const lp_gguf *g, const char *key, bool want_string, uint64_t n, bool required,
                     const lp_gguf_kv **out) {
    const lp_gguf_kv *kv = lp_gguf_find_kv(g, key);
    *out = NULL;
    if (!kv) return required ? lp_error(LP_EFORMAT, "%s: %s is missing; the tokenizer needs it", lp_gguf_path(g), key)
                             : LP_OK;
    bool is_string = kv->elem == LP_GGUF_STRING;
    if (kv->type != LP_GGUF_ARRAY || is_string != want_string)
        return lp_error(LP_EFORMAT, "%s: %s should be an array of %s", lp_gguf_path(g), key,
                        want_string ? "strings" : "numbers");
    if (n != UINT64_MAX && kv->n != n)
        return lp_error(LP_EFORMAT, "%s: %s has %llu entries but tokenizer.ggml.tokens has %llu", lp_gguf_path(g),
                        key, (unsigned long long)kv->n, (unsigned long long)n);
    *out = kv;
    return LP_OK;
}

/* tokenizer.ggml.tokens: 1 to 2^22 strings. */
static int get_tokens(const lp_gguf *g, const lp_gguf_kv **tokens) {
    int rc = get_array(g, "tokenizer.ggml.tokens", true, UINT64_MAX, true, tokens);
    if (!rc && ((*tokens)->n < 1 || (*tokens)->n > (1u << 22)))
        rc = lp_error(LP_EFORMAT, "%s: tokenizer.ggml.tokens has %llu tokens; loupe reads 1 to %d", lp_gguf_path(g),
                      (unsigned long long)(*tokens)->n, 1 << 22);
    return rc;
}

/* Token i's type (normal when the file has no types). llama.cpp's token types are 0..6;
 * anything else (a u32 of 4e9 converted to int is undefined) is a damaged file. */
static int token_type(const lp_gguf *g, const lp_gguf_kv *types, uint64_t i, int *out) {
    double tv = types ? lp_gguf_num_at(types, i) : TOKEN_NORMAL;
    if (!(tv >= 0 && tv <= 6 && tv == (int)tv))
        return lp_error(LP_EFORMAT, "%s: tokenizer.ggml.token_type[%llu] is %g; token types are 0..6", lp_gguf_path(g),
                        (unsigned long long)i, tv);
    *out = (int)tv;
    return LP_OK;
}

/* An optional token id key into *id (left as it is when absent). */
static int get_id(const lp_gguf *g, const char *key, int n_vocab, int *id) {
    if (!lp_gguf_find_kv(g, key)) return LP_OK;
    uint64_t v;
    int rc = lp_gguf_get_uint(g, key, &v);
    if (rc) return rc;
    if (v >= (uint64_t)n_vocab)
        return lp_error(LP_EFORMAT, "%s: %s is %llu, outside the vocabulary of %d tokens", lp_gguf_path(g), key,
                        (unsigned long long)v, n_vocab);
    *id = (int)v;
    return LP_OK;
}

/* A llama piece with each "▁" (U+2581, e2 96 81) read as a space. */
static int set_spm_piece(lp_tokenizer *t, int id, const char *s, size_t n, sbuf *buf) {
    buf->n = 0;
    for (size_t i = 0; i < n; i++) {
        bool meta = i + 2 < n && memcmp(s + i, "\xe2\x96\x81", 3) == 0;
        int rc = lp_tok_sbuf_add(buf, meta ? " " : s + i, 1);
        if (rc) return rc;
        if (meta) i += 2;
    }
    return lp_tok_set_piece(t, id, buf->s ? buf->s : "", buf->n);
}

static int load_pieces(lp_tokenizer *t, const lp_gguf *g, const lp_gguf_kv *tokens, const lp_gguf_kv *scores,
                       const lp_gguf_kv *types, bool spm, sbuf *buf) {
    int rc = LP_OK;
    for (uint64_t i = 0; i < tokens->n && !rc; i++) {
        const char *s;
        size_t n;
        lp_gguf_str_at(tokens, i, &s, &n);
        /* checked here, so the added-token pass below may convert */
        int type;
        if ((rc = token_type(g, types, i, &type))) return rc;
        rc = spm ? set_spm_piece(t, (int)i, s, n, buf) : lp_tok_set_piece(t, (int)i, s, n);
        float score = scores ? (float)lp_gguf_num_at(scores, i) : 0.0f;
        if (!isfinite(score))
            rc = lp_error(LP_EFORMAT, "%s: tokenizer.ggml.scores[%llu] is not finite", lp_gguf_path(g),
                          (unsigned long long)i);
        /* pair_rank merges only into pieces scored above -1e10 */
        t->tok[i].score = type == TOKEN_NORMAL || type == TOKEN_USER_DEFINED ? score : -1e30f;
    }
    return rc;
}

static int load_merges(lp_tokenizer *t, const lp_gguf *g, const lp_gguf_kv *merges) {
    sbuf scratch = {0};
    int rc = lp_tok_merges_alloc(t, (size_t)merges->n);
    for (uint64_t i = 0; i < merges->n && !rc; i++) {
        const char *s, *sp;
        size_t n;
        lp_gguf_str_at(merges, i, &s, &n);
        char where[48];
        snprintf(where, sizeof where, "tokenizer.ggml.merges[%llu]", (unsigned long long)i);
        sp = memchr(s, ' ', n);
        if (!sp || sp == s || sp == s + n - 1 || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1)))
            rc = lp_error(LP_EFORMAT, "%s: %s is \"%.*s\"; a merge is two tokens separated by one space",
                          lp_gguf_path(g), where, (int)(n > 60 ? 60 : n), s);
        else
            rc = lp_tok_merge_add(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), (int)i, &scratch, where);
    }
    free(scratch.s);
    return rc;
}

static int build(lp_tokenizer *t, const lp_gguf *g, bool spm, size_t pre) {
    const lp_gguf_kv *tokens, *scores, *types, *merges = NULL;
    int rc;
    if ((rc = get_tokens(g, &tokens))) return rc;
    int n_vocab = (int)tokens->n;
    if ((rc = get_array(g, "tokenizer.ggml.scores", false, tokens->n, false, &scores)) ||
        (rc = get_array(g, "tokenizer.ggml.token_type", false, tokens->n, false, &types)) ||
        (!spm && (rc = get_array(g, "tokenizer.ggml.merges", true, UINT64_MAX, true, &merges))))
        return rc;
    sbuf buf = {0};
    if (!(rc = lp_tok_alloc_vocab(t, n_vocab))) rc = load_pieces(t, g, tokens, scores, types, spm, &buf);
    free(buf.s);
    if (rc || (rc = lp_tok_index_pieces(t))) return rc;
    if (merges && (rc = load_merges(t, g, merges))) return rc;
    /* control, user-defined and unknown tokens are matched whole in text, as llama.cpp's
     * tokenizer_st_partition does with parse_special (and tokenizer.json's added tokens) */
    for (int i = 0; types && i < n_vocab; i++) {
        int type = (int)lp_gguf_num_at(types, (uint64_t)i);
        if (type != TOKEN_CONTROL && type != TOKEN_USER_DEFINED && type != TOKEN_UNKNOWN) continue;
        const char *s;
        size_t n;
        lp_gguf_str_at(tokens, (uint64_t)i, &s, &n);
        if ((rc = lp_tok_add_added(t, i, s, n))) return rc;
    }
    bool add_bos = spm || PRETOKENIZERS[pre].add_bos;
    t->bos = spm && n_vocab > 1 ? 1 : -1;
    t->eos = spm && n_vocab > 2 ? 2 : -1;
    t->unk = spm ? 0 : -1;
    if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", n_vocab, &t->bos)) ||
        (rc = get_id(g, "tokenizer.ggml.eos_token_id", n_vocab, &t->eos)) ||
        (rc = get_id(g, "tokenizer.ggml.unknown_token_id", n_vocab, &t->unk)) ||
        (lp_gguf_find_kv(g, "tokenizer.ggml.add_bos_token") &&
         (rc = lp_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos))))
        return rc;
    t->adds_bos = add_bos && t->bos >= 0;
    if (spm) {
        bool prefix = true;
        if (lp_gguf_find_kv(g, "tokenizer.ggml.add_space_prefix") &&
            (rc = lp_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix)))
            return rc;
        t->no_dummy_prefix = !prefix;
        t->strip_leading_space = prefix;
        t->bytes_by_name = true;
    } else {
        if ((rc = lp_tok_compile_regex(t, PRETOKENIZERS[pre].pattern))) return rc;
        t->merge_rounds = PRETOKENIZERS[pre].merge_rounds;
        t->ignore_merges = PRETOKENIZERS[pre].ignore_merges;
    }
    return lp_tok_finish(t);
}

/* Model "bert": WordPiece on the vocabulary vocab.txt had, undoing the converter's
 * "phantom space" (BertModel.set_vocab): control tokens are kept as they are, "##x" was
 * written "x" and a word-initial "x" as "▁x". BERT's normaliser lowercases and strips
 * accents, as bert-base-uncased's does (do_lower_case is not in the file; llama.cpp's WPM
 * lowercases every model too); control tokens are matched whole in text, and the text is
 * wrapped in [CLS] A [SEP] (the ids of tokenizer.ggml.cls_token_id and
 * seperator_token_id, the key's spelling, else 101 and 102 as llama.cpp defaults). */
static int build_bert(lp_tokenizer *t, const lp_gguf *g) {
    const lp_gguf_kv *tokens, *types;
    int rc;
    if ((rc = get_tokens(g, &tokens))) return rc;
    int n_vocab = (int)tokens->n;
    if ((rc = get_array(g, "tokenizer.ggml.token_type", false, tokens->n, true, &types)) ||
        (rc = lp_tok_alloc_vocab(t, n_vocab)))
        return rc;
    sbuf buf = {0};
    for (int i = 0; i < n_vocab && !rc; i++) {
        const char *s;
        size_t n;
        lp_gguf_str_at(tokens, (uint64_t)i, &s, &n);
        int type;
        if ((rc = token_type(g, types, (uint64_t)i, &type))) break;
        buf.n = 0;
        if (type == TOKEN_CONTROL) rc = lp_tok_sbuf_add(&buf, s, n);
        else if (n >= 3 && memcmp(s, LP_TOK_SPIECE_SPACE, 3) == 0) rc = lp_tok_sbuf_add(&buf, s + 3, n - 3);
        else if (!(rc = lp_tok_sbuf_add(&buf, "##", 2))) rc = lp_tok_sbuf_add(&buf, s, n);
        if (!rc) rc = lp_tok_set_piece(t, i, buf.s ? buf.s : "", buf.n);
    }
    free(buf.s);
    if (rc || (rc = lp_tok_index_pieces(t)) || (rc = lp_tok_keep_last_duplicates(t)) ||
        (rc = lp_tok_wordpiece_defaults(t, "##")))
        return rc;
    t->bert_norm = t->bert_pretok = t->bn_clean = t->bn_chinese = t->bn_lower = t->bn_strip = true;
    for (int i = 0; i < n_vocab; i++) {
        if ((int)lp_gguf_num_at(types, (uint64_t)i) != TOKEN_CONTROL || t->tok[i].p_off == UINT32_MAX) continue;
        const char *s;
        size_t n;
        lp_gguf_str_at(tokens, (uint64_t)i, &s, &n);
        if (n && (rc = lp_tok_add_added(t, i, s, n))) return rc;
    }
    int cls = n_vocab > 101 ? 101 : -1, sep = n_vocab > 102 ? 102 : -1;
    int unk = n_vocab > 100 ? 100 : -1, pad = 0, mask = n_vocab > 103 ? 103 : -1;
    if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", n_vocab, &cls)) ||
        (rc = get_id(g, "tokenizer.ggml.cls_token_id", n_vocab, &cls)) ||
        (rc = get_id(g, "tokenizer.ggml.seperator_token_id", n_vocab, &sep)) ||
        (rc = get_id(g, "tokenizer.ggml.unknown_token_id", n_vocab, &unk)) ||
        (rc = get_id(g, "tokenizer.ggml.padding_token_id", n_vocab, &pad)) ||
        (rc = get_id(g, "tokenizer.ggml.mask_token_id", n_vocab, &mask)))
        return rc;
    if (cls < 0 || sep < 0)
        return lp_error(LP_EFORMAT, "%s: a bert tokenizer of %d tokens without tokenizer.ggml.cls_token_id and "
                        "seperator_token_id; [CLS] and [SEP] are unknown", lp_gguf_path(g), n_vocab);
    t->unk = unk;
    t->special[LP_SPECIAL_UNK] = unk;
    t->special[LP_SPECIAL_PAD] = pad;
    t->special[LP_SPECIAL_MASK] = mask;
    if ((rc = lp_tok_template_bert(t, cls, sep))) return rc;
    t->adds_bos = true;
    return lp_tok_finish(t);
}

int lp_tokenizer_load_gguf(lp_tokenizer **out, const lp_gguf *g) {
    *out = NULL;
    const lp_gguf_kv *model = lp_gguf_find_kv(g, "tokenizer.ggml.model");
    if (!model) return LP_OK;
    const char *s, *pre = "default";
    size_t n, pre_len = 7;
    int rc = lp_gguf_get_str(g, "tokenizer.ggml.model", &s, &n);
    if (rc) return rc;
    bool spm = n == 5 && memcmp(s, "llama", 5) == 0, gpt2 = n == 4 && memcmp(s, "gpt2", 4) == 0;
    if (n == 4 && memcmp(s, "bert", 4) == 0) {
        lp_tokenizer *t = lp_tok_new(LP_TOK_WORDPIECE, lp_gguf_path(g));
        if (!t) return lp_error(LP_ENOMEM, "out of memory");
        if ((rc = build_bert(t, g))) {
            lp_tokenizer_free(t);
            return rc;
        }
        *out = t;
        return LP_OK;
    }
    if (!spm && !gpt2)
        return lp_error(LP_EUNSUPPORTED, "%s: tokenizer.ggml.model '%.*s' is not supported (loupe reads gpt2, llama "
                        "and bert); pass the model's tokenizer with --tokenizer", lp_gguf_path(g),
                        (int)(n < 40 ? n : 40), s);
    if (gpt2 && lp_gguf_find_kv(g, "tokenizer.ggml.pre") && (rc = lp_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_len)))
        return rc;
    size_t p = 0;
    while (p < N_PRETOKENIZERS && !(strlen(PRETOKENIZERS[p].name) == pre_len && !memcmp(pre, PRETOKENIZERS[p].name, pre_len)))
        p++;
    if (gpt2 && p == N_PRETOKENIZERS) {
        char known[256] = "";
        for (size_t k = 0; k < N_PRETOKENIZERS; k++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", k ? ", " : "", PRETOKENIZERS[k].name);
        return lp_error(LP_EUNSUPPORTED, "%s: tokenizer.ggml.pre '%.*s' is not supported (loupe knows %s); pass the "
                        "model's tokenizer.json with --tokenizer", lp_gguf_path(g), (int)(pre_len < 40 ? pre_len : 40),
                        pre, known);
    }
    if (!gpt2) p = 0;
    lp_tokenizer *t = lp_tok_new(spm ? LP_TOK_LLAMA2C : LP_TOK_BYTE_BPE, lp_gguf_path(g));
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = build(t, g, spm, p))) {
        lp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LP_OK;
}
