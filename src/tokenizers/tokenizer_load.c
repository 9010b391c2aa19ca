/* Reading tokenizer files: llama2.c's tokenizer.bin, GPT-2's vocab.json + merges.txt, BERT's
 * vocab.txt and Hugging Face's tokenizer.json (plus lp_tokenizer_load_dir, which picks
 * between them and spiece.model, read in spiece_model.c). Each loader validates what it
 * reads, fills an lp_tokenizer through the builders in tokenizer_impl.h and leaves encoding
 * to tokenizer.c. */
#include "tokenizers/tokenizer_impl.h"

#include "loupe/error.h"
#include "loupe/fileio.h"

#include <jansson.h>
#include <utf8proc.h>

#include <assert.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char GPT2_PATTERN[] = LP_TOK_GPT2_PATTERN;

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static const char *jstr(json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

static bool jbool(json_t *o, const char *key, bool dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* ---------------------------------------------------------------- llama2.c tokenizer.bin */

static int32_t read_i32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

int lp_tokenizer_load_llama2c_mem(lp_tokenizer **out, const void *buf, size_t len, int vocab_size,
                                  const char *what) {
    assert(out && (buf || len == 0));
    *out = NULL;
    if (!what) what = "tokenizer.bin";
    const unsigned char *p = buf;
    if (vocab_size <= 0) return lp_error(LP_EINVAL, "%s: vocabulary size %d must be positive", what, vocab_size);
    if (len < 4) return lp_error(LP_EFORMAT, "%s: truncated header: need 4 bytes, file has %zu", what, len);
    int32_t max_len = read_i32(p);
    if (max_len < 0) return lp_error(LP_EFORMAT, "%s: max_token_length %d is negative", what, (int)max_len);
    /* check every record before allocating anything sized by vocab_size */
    size_t at = 4;
    for (int i = 0; i < vocab_size; i++) {
        if (len - at < 8)
            return lp_error(LP_EFORMAT, "%s: truncated at token %d of %d: need 8 bytes, file has %zu", what, i,
                            vocab_size, len - at);
        int32_t n = read_i32(p + at + 4);
        if (n < 0) return lp_error(LP_EFORMAT, "%s: token %d has negative length %d", what, i, (int)n);
        if ((size_t)n > len - at - 8)
            return lp_error(LP_EFORMAT, "%s: truncated at token %d of %d: need %zu bytes, file has %zu", what, i,
                            vocab_size, 8 + (size_t)n, len - at);
        at += 8 + (size_t)n;
    }
    lp_tokenizer *t = lp_tok_new(LP_TOK_LLAMA2C, what);
    if (!t) return lp_error(LP_ENOMEM, "%s: out of memory", what);
    int rc = lp_tok_alloc_vocab(t, vocab_size);
    at = 4;
    for (int i = 0; i < vocab_size && !rc; i++) {
        float score;
        uint32_t bits = (uint32_t)read_i32(p + at);
        memcpy(&score, &bits, sizeof score);
        size_t n = (size_t)read_i32(p + at + 4);
        rc = lp_tok_set_piece(t, i, (const char *)p + at + 8, n);
        t->tok[i].score = score;
        at += 8 + n;
    }
    if (!rc) rc = lp_tok_index_pieces(t);
    if (!rc) {
        t->bos = vocab_size > 1 ? 1 : -1;
        t->eos = vocab_size > 2 ? 2 : -1;
        t->unk = 0;
        t->adds_bos = t->bos >= 0;
        t->strip_leading_space = true;
        rc = lp_tok_finish(t);
    }
    if (rc) {
        lp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LP_OK;
}

int lp_tokenizer_load_llama2c(lp_tokenizer **out, const char *path, int vocab_size) {
    assert(out && path);
    *out = NULL;
    lp_mapping m;
    int rc = lp_file_map(&m, path);
    if (rc) return rc;
    rc = lp_tokenizer_load_llama2c_mem(out, m.data, m.size, vocab_size, path);
    lp_file_unmap(&m);
    return rc;
}

/* ---------------------------------------------------------------- GPT-2 vocab.json + merges.txt */

/* Reads a JSON object of piece -> id into t (sizing the vocabulary from the largest id plus
 * extra_max, the largest id still to come from elsewhere). */
static int load_vocab_object(lp_tokenizer *t, json_t *vocab, const char *path, int extra_max) {
    if (!json_is_object(vocab)) return lp_error(LP_EFORMAT, "%s: vocabulary is not a JSON object", path);
    size_t count = json_object_size(vocab);
    long long max_id = extra_max;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24))
            return lp_error(LP_EFORMAT, "%s: token \"%.60s\" has an id that is not an integer in [0, 2^24)", path,
                            key);
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    if (max_id < 0) return lp_error(LP_EFORMAT, "%s: the vocabulary is empty", path);
    if ((size_t)max_id > 2 * count + 4096)
        return lp_error(LP_EFORMAT, "%s: token ids reach %lld but there are only %zu tokens", path, max_id, count);
    int rc = lp_tok_alloc_vocab(t, (int)max_id + 1);
    if (rc) return rc;
    json_object_foreach(vocab, key, v) {
        if ((rc = lp_tok_set_piece(t, (int)json_integer_value(v), key, strlen(key)))) return rc;
    }
    return LP_OK;
}

/* vocab.json's common form, a flat object of "piece": id, read without building a JSON tree
 * (jansson's object of 50k keys took half of GPT-2's tokenizer load). Anything this does not
 * accept outright (a float, a negative or huge id, a duplicate key, an escape it does not
 * know, bytes that are not UTF-8, \u0000) sends the file to jansson, whose answer, or error
 * message, stands: the fast path only ever agrees with it. */
typedef struct {
    uint32_t off, len; /* the decoded piece in keys */
    int id;
} flat_entry;

static size_t skip_ws(const char *s, size_t i, size_t n) {
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++;
    return i;
}

static int hex4(const char *s) {
    int v = 0;
    for (int k = 0; k < 4; k++) {
        int c = s[k], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if it is not one: no overlong
 * forms, no surrogates, nothing above U+10FFFF (what jansson accepts). */
static size_t utf8_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!len || len > n) return 0;
    for (size_t k = 1; k < len; k++)
        if ((p[k] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] >= 0x90))
        return 0;
    return len;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[2] = (char)(0x80 | (cp & 0x3f)), 3;
    o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The string whose opening quote is at s[*i], decoded onto keys + *ko; false if it is not
 * one the fast path takes. */
static bool flat_string(const char *s, size_t n, size_t *i, char *keys, size_t *ko) {
    size_t j = *i + 1, o = *ko;
    for (;;) {
        if (j >= n) return false;
        unsigned char c = (unsigned char)s[j];
        if (c == '"') break;
        if (c < 0x20) return false;
        if (c != '\\') {
            size_t len = utf8_len((const unsigned char *)s + j, n - j);
            if (!len) return false;
            memcpy(keys + o, s + j, len);
            o += len, j += len;
            continue;
        }
        if (j + 1 >= n) return false;
        char e = s[j + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            keys[o++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            j += 2;
            continue;
        }
        if (e != 'u' || j + 6 > n) return false;
        int cp = hex4(s + j + 2);
        j += 6;
        if (cp <= 0 || (cp >= 0xdc00 && cp <= 0xdfff)) return false; /* \u0000, a lone low surrogate */
        if (cp >= 0xd800 && cp <= 0xdbff) {                              /* a pair, or jansson's error */
            if (j + 6 > n || s[j] != '\\' || s[j + 1] != 'u') return false;
            int lo = hex4(s + j + 2);
            if (lo < 0xdc00 || lo > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            j += 6;
        }
        o += put_utf8(keys + o, (uint32_t)cp); /* an escape is never shorter than what it makes */
    }
    *i = j + 1;
    *ko = o;
    return true;
}

/* Parses text (len bytes) as a flat object of string keys and integer ids in [0, 2^24); on
 * success *ents and *keys are new arrays the caller frees. */
static bool parse_flat_vocab(const char *s, size_t n, flat_entry **ents, size_t *count, char **keys) {
    size_t cap = 1024, cnt = 0, ko = 0, i = skip_ws(s, 0, n);
    flat_entry *e = malloc(cap * sizeof *e);
    char *k = malloc(n + 1);
    if (!e || !k || i >= n || s[i] != '{') goto no;
    for (i++;;) {
        i = skip_ws(s, i, n);
        if (i >= n || s[i] != '"') goto no; /* also {}: jansson's path says it is empty */
        size_t start = ko;
        if (!flat_string(s, n, &i, k, &ko)) goto no;
        i = skip_ws(s, i, n);
        if (i >= n || s[i] != ':') goto no;
        i = skip_ws(s, i + 1, n);
        long id = 0;
        size_t d0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && id < (1 << 24)) id = id * 10 + (s[i++] - '0');
        if (i == d0 || id >= (1 << 24) || (s[d0] == '0' && i - d0 > 1)) goto no;
        i = skip_ws(s, i, n);
        if (cnt == cap) {
            flat_entry *g = realloc(e, 2 * cap * sizeof *e);
            if (!g) goto no;
            e = g, cap *= 2;
        }
        e[cnt++] = (flat_entry){(uint32_t)start, (uint32_t)(ko - start), (int)id};
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i >= n || s[i] != '}') goto no; /* a float, an exponent, a stray character */
        break;
    }
    if (skip_ws(s, i + 1, n) != n) goto no;
    *ents = e, *count = cnt, *keys = k;
    return true;
no:
    free(e);
    free(k);
    return false;
}

/* vocab.json through the fast path into t, indexed: true when done (or failed for want of
 * memory: *rc), false when jansson must read it instead (t is then to be made afresh). */
static bool load_vocab_fast(lp_tokenizer *t, const char *path, int *rc) {
    lp_mapping map;
    *rc = LP_OK;
    if (lp_file_map(&map, path) != LP_OK || map.size > LP_JSON_MAX_TOKENIZER) {
        lp_file_unmap(&map);
        return false;
    }
    flat_entry *e;
    size_t n;
    char *keys;
    bool ok = map.size && parse_flat_vocab((const char *)map.data, map.size, &e, &n, &keys);
    lp_file_unmap(&map);
    if (!ok) return false;
    long long max_id = -1;
    for (size_t i = 0; i < n; i++)
        if (e[i].id > max_id) max_id = e[i].id;
    ok = (size_t)max_id <= 2 * n + 4096; /* else jansson's path names the problem */
    if (ok && !(*rc = lp_tok_alloc_vocab(t, (int)max_id + 1)))
        for (size_t i = 0; i < n && !*rc; i++) *rc = lp_tok_set_piece(t, e[i].id, keys + e[i].off, e[i].len);
    if (ok && !*rc) *rc = lp_tok_index_pieces(t);
    /* a key twice (or two spellings of one): jansson keeps one id per key, so it decides */
    for (size_t i = 0; ok && !*rc && i < n; i++)
        if (lp_tok_piece_find(t, keys + e[i].off, e[i].len) != e[i].id) ok = false;
    free(e);
    free(keys);
    return ok || *rc;
}

static int load_json_file(const char *path, json_t **out) {
    return lp_json_load_file(path, LP_JSON_MAX_TOKENIZER, 0, out);
}

/* RoBERTa's special tokens (RobertaTokenizer's defaults) and the roles they play. */
static const struct {
    const char *name;
    lp_special role;
    bool lstrip;
} ROBERTA_SPECIALS[] = {{"<s>", LP_SPECIAL_CLS, false},   {"<pad>", LP_SPECIAL_PAD, false},
                        {"</s>", LP_SPECIAL_SEP, false},  {"<unk>", LP_SPECIAL_UNK, false},
                        {"<mask>", LP_SPECIAL_MASK, true}};

/* RobertaTokenizer on GPT-2's files: its specials (those in the vocabulary) are added tokens,
 * <s> and </s> are BOS/EOS and CLS/SEP, and the template is RoBERTa's. */
static int make_roberta(lp_tokenizer *t) {
    int id[5];
    for (int k = 0; k < 5; k++) {
        const char *name = ROBERTA_SPECIALS[k].name;
        id[k] = lp_tok_piece_find(t, name, strlen(name));
        if (id[k] < 0) continue;
        int rc = lp_tok_add_added(t, id[k], name, strlen(name));
        if (rc) return rc;
        lp_tok_added_strip(t, id[k], ROBERTA_SPECIALS[k].lstrip, false);
        t->special[ROBERTA_SPECIALS[k].role] = id[k];
    }
    t->unk = id[3];
    t->bos = id[0], t->eos = id[2];
    if (id[0] < 0 || id[2] < 0)
        return lp_error(LP_EFORMAT, "%s: a RoBERTa vocabulary needs <s> and </s>", t->what);
    t->adds_bos = true;
    return lp_tok_template_roberta(t, id[0], id[2]);
}

static int load_gpt2(lp_tokenizer **out, const char *vocab_json_path, const char *merges_txt_path, bool roberta) {
    assert(out && vocab_json_path && merges_txt_path);
    *out = NULL;
    json_t *vocab = NULL;
    char *merges = NULL;
    size_t merges_len = 0;
    sbuf scratch = {0};
    lp_tokenizer *t = lp_tok_new(LP_TOK_BYTE_BPE, vocab_json_path);
    if (!t) return lp_error(LP_ENOMEM, "%s: out of memory", vocab_json_path);
    int rc;
    if (!load_vocab_fast(t, vocab_json_path, &rc)) {
        lp_tokenizer_free(t); /* what the fast path left in it */
        if (!(t = lp_tok_new(LP_TOK_BYTE_BPE, vocab_json_path)))
            return lp_error(LP_ENOMEM, "%s: out of memory", vocab_json_path);
        rc = load_json_file(vocab_json_path, &vocab);
        if (!rc) rc = load_vocab_object(t, vocab, vocab_json_path, -1);
        if (!rc) rc = lp_tok_index_pieces(t);
    }
    if (!rc) rc = lp_file_read_new(merges_txt_path, &merges, &merges_len);
    if (rc) goto done;

    size_t lines = 1;
    for (size_t i = 0; i < merges_len; i++) lines += merges[i] == '\n';
    if ((rc = lp_tok_merges_alloc(t, lines))) goto done;
    snprintf(t->what, sizeof t->what, "%s", merges_txt_path);
    int rank = 0;
    size_t line_no = 0;
    for (size_t at = 0; at < merges_len;) {
        const char *line = merges + at;
        const char *nl = memchr(line, '\n', merges_len - at);
        size_t n = nl ? (size_t)(nl - line) : merges_len - at;
        at += n + (nl != NULL);
        line_no++;
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n == 0 || (line_no == 1 && n >= 8 && memcmp(line, "#version", 8) == 0)) continue;
        const char *sp = memchr(line, ' ', n);
        if (!sp || sp == line || sp == line + n - 1 || memchr(sp + 1, ' ', (size_t)(line + n - sp - 1))) {
            rc = lp_error(LP_EFORMAT, "%s: line %zu: expected two tokens separated by one space, got \"%.*s\"",
                          merges_txt_path, line_no, (int)(n > 60 ? 60 : n), line);
            goto done;
        }
        char where[32] = "line ", digits[24]; /* snprintf for each of 50k lines was 5% of a load */
        int nd = 0;
        for (size_t v = line_no; v || !nd; v /= 10) digits[nd++] = (char)('0' + v % 10);
        for (int k = 0; k < nd; k++) where[5 + k] = digits[nd - 1 - k];
        where[5 + nd] = '\0';
        rc = lp_tok_merge_add(t, line, (size_t)(sp - line), sp + 1, (size_t)(line + n - sp - 1), rank++, &scratch,
                              where);
        if (rc) goto done;
    }
    snprintf(t->what, sizeof t->what, "%s", vocab_json_path);
    if ((rc = lp_tok_compile_regex(t, GPT2_PATTERN))) goto done;
    t->merge_rounds = true;
    /* as Hugging Face's GPT2Tokenizer: <|endoftext|> is a special token, and GPT-2 uses it as
     * the start token too (never added by encode) */
    int eot = lp_tok_piece_find(t, "<|endoftext|>", 13);
    if (eot >= 0) {
        if ((rc = lp_tok_add_added(t, eot, "<|endoftext|>", 13))) goto done;
        t->bos = t->eos = eot;
    }
    if (roberta && (rc = make_roberta(t))) goto done;
    rc = lp_tok_finish(t);
done:
    json_decref(vocab);
    free(merges);
    free(scratch.s);
    if (rc) {
        lp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LP_OK;
}

int lp_tokenizer_load_gpt2(lp_tokenizer **out, const char *vocab_json_path, const char *merges_txt_path) {
    return load_gpt2(out, vocab_json_path, merges_txt_path, false);
}

int lp_tokenizer_load_roberta(lp_tokenizer **out, const char *vocab_json_path, const char *merges_txt_path) {
    return load_gpt2(out, vocab_json_path, merges_txt_path, true);
}

/* ---------------------------------------------------------------- BERT's vocab.txt */


/* A special token's name in tokenizer_config.json: a string, or an AddedToken {"content": ..}. */
static const char *config_token(json_t *cfg, const char *key, const char *dflt) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_string(json_object_get(v, "content"))) return jstr(v, "content");
    return dflt;
}

int lp_tok_wordpiece_defaults(lp_tokenizer *t, const char *prefix) {
    t->kind = LP_TOK_WORDPIECE;
    t->wp_max_chars = 100;
    t->wp_cleanup = true;
    t->wp_prefix_len = (uint32_t)strlen(prefix);
    return lp_tok_blob_add(t, prefix, t->wp_prefix_len, &t->wp_prefix_off);
}

int lp_tok_keep_last_duplicates(lp_tokenizer *t) {
    int n = t->n_vocab, rc = LP_OK;
    int *last = malloc((size_t)n * sizeof *last);
    if (!last) return lp_error(LP_ENOMEM, "%s: out of memory", t->what);
    bool dup = false;
    for (int id = 0; id < n; id++) {
        const tok_entry *e = &t->tok[id];
        int first = e->p_off == UINT32_MAX ? -1 : lp_tok_piece_find(t, t->blob + e->p_off, e->p_len);
        last[id] = -1;
        if (first >= 0) last[first] = id, dup |= first != id;
    }
    if (dup) {
        /* last[first] is the id that wins: the others lose their piece (in a second pass, as
         * the lookups need every piece in place) */
        unsigned char *lose = calloc((size_t)n, 1);
        if (!lose) {
            free(last);
            return lp_error(LP_ENOMEM, "%s: out of memory", t->what);
        }
        for (int id = 0; id < n; id++) {
            const tok_entry *e = &t->tok[id];
            int first = e->p_off == UINT32_MAX ? -1 : lp_tok_piece_find(t, t->blob + e->p_off, e->p_len);
            lose[id] = first >= 0 && last[first] != id;
        }
        for (int id = 0; id < n; id++)
            if (lose[id]) t->tok[id].p_off = UINT32_MAX;
        free(lose);
        free(t->piece_tab);
        t->piece_tab = NULL;
        rc = lp_tok_index_pieces(t);
    }
    free(last);
    return rc;
}

/* Finds a special token's id and makes it an added token (matched whole in text). */
static int add_named_special(lp_tokenizer *t, const char *name, lp_special role) {
    int id = name ? lp_tok_piece_find(t, name, strlen(name)) : -1;
    t->special[role] = id;
    if (id < 0 || t->tok[id].added) return LP_OK;
    return lp_tok_add_added(t, id, name, strlen(name));
}

int lp_tokenizer_load_vocab_txt(lp_tokenizer **out, const char *path, const char *config_path) {
    assert(out && path);
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    json_t *cfg = NULL;
    lp_tokenizer *t = lp_tok_new(LP_TOK_WORDPIECE, path);
    if (!t) return lp_error(LP_ENOMEM, "%s: out of memory", path);
    int rc = lp_file_read_new(path, &text, &len);
    if (!rc && config_path) rc = load_json_file(config_path, &cfg);
    if (!rc && cfg && !json_is_object(cfg)) rc = lp_error(LP_EFORMAT, "%s: not a JSON object", config_path);
    if (rc) goto done;
    /* one token a line (the last needs no newline), its id the line number; trailing
     * whitespace is not part of it (as tokenizers' WordPiece::read_file) */
    size_t lines = 0;
    for (size_t at = 0; at < len; lines++) {
        const char *nl = memchr(text + at, '\n', len - at);
        at = nl ? (size_t)(nl - text) + 1 : len;
    }
    if (lines == 0) {
        rc = lp_error(LP_EFORMAT, "%s: the vocabulary is empty", path);
        goto done;
    }
    if (lines > (1u << 24)) {
        rc = lp_error(LP_EFORMAT, "%s: %zu lines; a vocabulary of more than 2^24 tokens is not supported", path, lines);
        goto done;
    }
    if ((rc = lp_tok_alloc_vocab(t, (int)lines))) goto done;
    size_t at = 0;
    for (int id = 0; id < (int)lines; id++) {
        const char *line = text + at, *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        at += n + 1;
        for (size_t i = 0; i < n;) {
            int k = (int)utf8proc_iterate((const utf8proc_uint8_t *)line + i, (utf8proc_ssize_t)(n - i),
                                          &(utf8proc_int32_t){0});
            if (k <= 0) {
                rc = lp_error(LP_EFORMAT, "%s: line %d: not UTF-8 (byte 0x%02X at column %zu)", path, id + 1,
                              (unsigned char)line[i], i + 1);
                goto done;
            }
            i += (size_t)k;
        }
        while (n > 0) { /* trim_end: White_Space, one character at a time from the end */
            size_t k = 1;
            while (k < n && k < 4 && ((unsigned char)line[n - k] & 0xC0) == 0x80) k++;
            utf8proc_int32_t c;
            utf8proc_iterate((const utf8proc_uint8_t *)line + n - k, (utf8proc_ssize_t)k, &c);
            if (!lp_tok_is_white_space((uint32_t)c)) break;
            n -= k;
        }
        if ((rc = lp_tok_set_piece(t, id, line, n))) goto done;
    }
    if ((rc = lp_tok_index_pieces(t)) || (rc = lp_tok_keep_last_duplicates(t))) goto done;

    bool lower = jbool(cfg, "do_lower_case", true);
    json_t *strip = json_object_get(cfg, "strip_accents");
    if ((rc = lp_tok_wordpiece_defaults(t, "##"))) goto done;
    t->bert_norm = t->bert_pretok = true;
    t->bn_clean = true;
    t->bn_chinese = jbool(cfg, "tokenize_chinese_chars", true);
    t->bn_lower = lower;
    t->bn_strip = json_is_boolean(strip) ? json_is_true(strip) : lower;
    const char *unk = config_token(cfg, "unk_token", "[UNK]");
    if ((rc = add_named_special(t, config_token(cfg, "pad_token", "[PAD]"), LP_SPECIAL_PAD)) ||
        (rc = add_named_special(t, unk, LP_SPECIAL_UNK)) ||
        (rc = add_named_special(t, config_token(cfg, "cls_token", "[CLS]"), LP_SPECIAL_CLS)) ||
        (rc = add_named_special(t, config_token(cfg, "sep_token", "[SEP]"), LP_SPECIAL_SEP)) ||
        (rc = add_named_special(t, config_token(cfg, "mask_token", "[MASK]"), LP_SPECIAL_MASK)))
        goto done;
    t->unk = lp_tok_piece_find(t, unk, strlen(unk));
    if (t->special[LP_SPECIAL_CLS] >= 0 && t->special[LP_SPECIAL_SEP] >= 0) {
        if ((rc = lp_tok_template_bert(t, t->special[LP_SPECIAL_CLS], t->special[LP_SPECIAL_SEP]))) goto done;
        t->adds_bos = true;
    }
    rc = lp_tok_finish(t);
done:
    free(text);
    json_decref(cfg);
    if (rc) {
        lp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LP_OK;
}

/* ---------------------------------------------------------------- tokenizer.json */

typedef struct {
    bool byte_level, bl_use_regex, bl_add_prefix_space;
    const char *split_regex;
    bool metaspace, whitespace_split;
} pretok_info;


static int add_norm_string(lp_tokenizer *t, const char *s, uint32_t *off, uint32_t *len) {
    *len = (uint32_t)strlen(s);
    return lp_tok_blob_add(t, s, *len, off);
}

static int parse_normalizer(lp_tokenizer *t, json_t *nz, const char *path, int depth) {
    if (json_is_null(nz) || !nz) return LP_OK;
    const char *type = jstr(nz, "type");
    if (!type) return lp_error(LP_EFORMAT, "%s: normalizer has no \"type\"", path);
    if (strcmp(type, "Sequence") == 0) {
        if (depth >= 4)
            return lp_error(LP_EUNSUPPORTED, "%s: normalizer Sequences nested more than 4 deep are not supported; "
                            "flatten them into one Sequence", path);
        json_t *list = json_object_get(nz, "normalizers");
        size_t i;
        json_t *v;
        if (!json_is_array(list)) return lp_error(LP_EFORMAT, "%s: normalizer Sequence has no list", path);
        json_array_foreach(list, i, v) {
            int rc = parse_normalizer(t, v, path, depth + 1);
            if (rc) return rc;
        }
        return LP_OK;
    }
    if (t->n_norm == LP_TOK_MAX_NORM)
        return lp_error(LP_EUNSUPPORTED, "%s: more than %d normalizer steps", path, LP_TOK_MAX_NORM);
    norm_step *st = &t->norm[t->n_norm];
    if (strcmp(type, "Prepend") == 0 && jstr(nz, "prepend")) {
        st->op = NORM_PREPEND;
        int rc = add_norm_string(t, jstr(nz, "prepend"), &st->a_off, &st->a_len);
        if (rc) return rc;
    } else if (strcmp(type, "Replace") == 0 && jstr(json_object_get(nz, "pattern"), "String") &&
               jstr(nz, "content")) {
        st->op = NORM_REPLACE;
        int rc = add_norm_string(t, jstr(json_object_get(nz, "pattern"), "String"), &st->a_off, &st->a_len);
        if (!rc) rc = add_norm_string(t, jstr(nz, "content"), &st->b_off, &st->b_len);
        if (rc) return rc;
        if (st->a_len == 0) return lp_error(LP_EFORMAT, "%s: Replace normalizer with an empty pattern", path);
    } else if (strcmp(type, "Replace") == 0 && jstr(json_object_get(nz, "pattern"), "Regex") && jstr(nz, "content")) {
        const char *re = jstr(json_object_get(nz, "pattern"), "Regex");
        int err;
        PCRE2_SIZE erroff;
        st->op = NORM_REPLACE_RE;
        st->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                               &err, &erroff, NULL);
        if (!st->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            return lp_error(LP_EUNSUPPORTED, "%s: Replace normalizer regex does not compile at offset %zu: %s", path,
                            (size_t)erroff, (const char *)msg);
        }
        t->n_norm++; /* counted now, so lp_tokenizer_free frees the pattern whatever comes next */
        int rc = add_norm_string(t, jstr(nz, "content"), &st->b_off, &st->b_len);
        return rc;
    } else if (strcmp(type, "NFC") == 0) {
        st->op = NORM_NFC;
    } else if (strcmp(type, "Strip") == 0) {
        st->op = NORM_STRIP;
        st->left = jbool(nz, "strip_left", true);
        st->right = jbool(nz, "strip_right", true);
    } else if (strcmp(type, "Precompiled") == 0) {
        const char *b64 = jstr(nz, "precompiled_charsmap");
        unsigned char *cm = NULL;
        size_t cm_len = 0;
        if (!b64 || lp_tok_base64_decode_new(b64, strlen(b64), &cm, &cm_len) != 0)
            return lp_error(LP_EFORMAT, "%s: Precompiled normalizer: precompiled_charsmap is not a base64 string", path);
        if (t->cm_units || t->cm_str_len) {
            free(cm);
            return lp_error(LP_EUNSUPPORTED, "%s: more than one Precompiled normalizer", path);
        }
        int rc = lp_tok_charsmap_set(t, cm, cm_len);
        free(cm);
        if (rc) return rc;
        st->op = NORM_PRECOMPILED;
    } else {
        return lp_error(LP_EUNSUPPORTED, "%s: normalizer \"%s\" is not supported (only Prepend, Replace, Strip, "
                                         "Precompiled, NFC)", path, type);
    }
    t->n_norm++;
    return LP_OK;
}

static int parse_pretokenizer(lp_tokenizer *t, json_t *pt, pretok_info *pi, const char *path, int depth) {
    if (json_is_null(pt) || !pt) return LP_OK;
    const char *type = jstr(pt, "type");
    if (!type) return lp_error(LP_EFORMAT, "%s: pre_tokenizer has no \"type\"", path);
    if (strcmp(type, "Sequence") == 0) {
        if (depth >= 4)
            return lp_error(LP_EUNSUPPORTED, "%s: pre_tokenizer Sequences nested more than 4 deep are not supported; "
                            "flatten them into one Sequence", path);
        json_t *list = json_object_get(pt, "pretokenizers");
        size_t i;
        json_t *v;
        if (!json_is_array(list)) return lp_error(LP_EFORMAT, "%s: pre_tokenizer Sequence has no list", path);
        json_array_foreach(list, i, v) {
            int rc = parse_pretokenizer(t, v, pi, path, depth + 1);
            if (rc) return rc;
        }
        return LP_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        pi->byte_level = true;
        pi->bl_use_regex = jbool(pt, "use_regex", true);
        pi->bl_add_prefix_space = jbool(pt, "add_prefix_space", false);
        return LP_OK;
    }
    if (strcmp(type, "Split") == 0 && jstr(json_object_get(pt, "pattern"), "String")) {
        /* Gemma's Split(" ", merged_with_previous) (transformers' GemmaConverter) runs on the
         * normalised text, whose Replace(" ", "▁") left no " " in it: nothing to split. A
         * string the normaliser does not remove would split, which loupe does not do. */
        const char *str = jstr(json_object_get(pt, "pattern"), "String");
        for (int k = 0; k < t->n_norm; k++) {
            const norm_step *st = &t->norm[k];
            if (st->op == NORM_REPLACE && st->a_len == strlen(str) && memcmp(t->blob + st->a_off, str, st->a_len) == 0 &&
                !strstr(t->blob + st->b_off, str))
                return LP_OK;
        }
        return lp_error(LP_EUNSUPPORTED, "%s: a Split pre_tokenizer on the string \"%.20s\" is supported only when a "
                        "Replace normalizer removes that string first (Gemma's files)", path, str);
    }
    if (strcmp(type, "Split") == 0) {
        const char *re = jstr(json_object_get(pt, "pattern"), "Regex");
        const char *behavior = jstr(pt, "behavior");
        if (!re || pi->split_regex || jbool(pt, "invert", false) || !behavior || strcmp(behavior, "Isolated") != 0)
            return lp_error(LP_EUNSUPPORTED, "%s: only one Split pre_tokenizer, with a Regex pattern and behavior "
                                             "\"Isolated\", is supported", path);
        pi->split_regex = re;
        return LP_OK;
    }
    if (strcmp(type, "WhitespaceSplit") == 0) {
        if (pi->metaspace)
            return lp_error(LP_EUNSUPPORTED, "%s: WhitespaceSplit after Metaspace is not supported (T5's files put it "
                            "first)", path);
        pi->whitespace_split = true;
        return LP_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *repl = jstr(pt, "replacement");
        const char *scheme = jstr(pt, "prepend_scheme");
        pi->metaspace = t->metaspace = true;
        int rc = add_norm_string(t, repl ? repl : LP_TOK_SPIECE_SPACE, &t->ms_off, &t->ms_len);
        if (rc) return rc;
        if (scheme) {
            t->metaspace_prepend = strcmp(scheme, "always") == 0 ? PREPEND_ALWAYS
                                   : strcmp(scheme, "first") == 0 ? PREPEND_FIRST
                                                                  : PREPEND_NEVER;
        } else {
            t->metaspace_prepend = jbool(pt, "add_prefix_space", true) ? PREPEND_ALWAYS : PREPEND_NEVER;
        }
        t->metaspace_split = jbool(pt, "split", true);
        return LP_OK;
    }
    return lp_error(LP_EUNSUPPORTED, "%s: pre_tokenizer \"%s\" is not supported (only ByteLevel, Split, Metaspace, "
                                     "WhitespaceSplit, Sequence)", path, type);
}

/* The id of a special token named in a post-processor, from its own table or the vocabulary. */
static int template_token_id(lp_tokenizer *t, json_t *pp, const char *name) {
    json_t *ids = json_object_get(json_object_get(json_object_get(pp, "special_tokens"), name), "ids");
    json_t *first = json_array_get(ids, 0);
    if (json_is_integer(first) && json_integer_value(first) >= 0 && json_integer_value(first) < t->n_vocab)
        return (int)json_integer_value(first);
    return lp_tok_piece_find(t, name, strlen(name));
}

/* Finds a TemplateProcessing (possibly inside a Sequence) that puts a special token before $A. */
static int template_bos(lp_tokenizer *t, json_t *pp, int depth) {
    const char *type = jstr(pp, "type");
    if (!type || depth > 4) return -1;
    if (strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(pp, "processors"), i, v) {
            int id = template_bos(t, v, depth + 1);
            if (id >= 0) return id;
        }
        return -1;
    }
    if (strcmp(type, "TemplateProcessing") != 0) return -1;
    json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    const char *name = jstr(json_object_get(first, "SpecialToken"), "id");
    return name ? template_token_id(t, pp, name) : -1;
}

static int first_piece(const lp_tokenizer *t, const char *const *names) {
    for (; *names; names++) {
        int id = lp_tok_piece_find(t, *names, strlen(*names));
        if (id >= 0) return id;
    }
    return -1;
}

static int merge_strings(json_t *m, const char **a, size_t *na, const char **b, size_t *nb, char *split_buf,
                         size_t buf_cap) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = strlen(s);
        const char *sp = strchr(s, ' ');
        if (!sp || sp == s || sp == s + n - 1 || strchr(sp + 1, ' ') || n >= buf_cap) return -1;
        memcpy(split_buf, s, n + 1);
        *a = split_buf, *na = (size_t)(sp - s);
        *b = split_buf + *na + 1, *nb = n - *na - 1;
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0)), *na = strlen(*a);
        *b = json_string_value(json_array_get(m, 1)), *nb = strlen(*b);
        return 0;
    }
    return -1;
}

/* The ids of a special token a TemplateProcessing names: its "ids" in special_tokens, else
 * the vocabulary's id for the name. */
static int template_special_ids(lp_tokenizer *t, json_t *pp, const char *name, int *ids, int *n_ids,
                                const char *path) {
    json_t *list = json_object_get(json_object_get(json_object_get(pp, "special_tokens"), name), "ids");
    if (!json_is_array(list)) {
        ids[0] = lp_tok_piece_find(t, name, strlen(name));
        if (ids[0] < 0)
            return lp_error(LP_EFORMAT, "%s: post_processor: special token \"%.60s\" has no ids and is not in the "
                            "vocabulary", path, name);
        *n_ids = 1;
        return LP_OK;
    }
    size_t n = json_array_size(list), i;
    json_t *v;
    if (n > LP_TOK_MAX_TMPL_IDS)
        return lp_error(LP_EUNSUPPORTED, "%s: post_processor: special token \"%.60s\" has %zu ids (at most %d)", path,
                        name, n, LP_TOK_MAX_TMPL_IDS);
    json_array_foreach(list, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= t->n_vocab)
            return lp_error(LP_EFORMAT, "%s: post_processor: special token \"%.60s\" has an id outside the "
                            "vocabulary of %d", path, name, t->n_vocab);
        ids[i] = (int)json_integer_value(v);
    }
    *n_ids = (int)n;
    return LP_OK;
}

/* One of TemplateProcessing's lists ("single" or "pair") into template which. */
static int parse_template(lp_tokenizer *t, json_t *pp, int which, const char *path) {
    json_t *list = json_object_get(pp, which ? "pair" : "single"), *v;
    size_t i;
    if (!json_is_array(list))
        return lp_error(LP_EFORMAT, "%s: TemplateProcessing has no \"%s\" list", path, which ? "pair" : "single");
    json_array_foreach(list, i, v) {
        json_t *sp = json_object_get(v, "SpecialToken"), *sq = json_object_get(v, "Sequence");
        json_t *piece = sp ? sp : sq, *type = json_object_get(piece, "type_id");
        const char *id = jstr(piece, "id");
        if (!id || !json_is_integer(type) || json_integer_value(type) < 0 || json_integer_value(type) > 1 << 16)
            return lp_error(LP_EFORMAT, "%s: TemplateProcessing %s[%zu] is neither a SpecialToken nor a Sequence "
                            "with an \"id\" and a \"type_id\"", path, which ? "pair" : "single", i);
        int rc, type_id = (int)json_integer_value(type);
        if (sp) {
            int ids[LP_TOK_MAX_TMPL_IDS], n = 0;
            if ((rc = template_special_ids(t, pp, id, ids, &n, path))) return rc;
            if (n == 0) continue;
            rc = lp_tok_template_add(t, which, -1, type_id, ids, n);
        } else {
            if (strcmp(id, "A") != 0 && strcmp(id, "B") != 0)
                return lp_error(LP_EFORMAT, "%s: TemplateProcessing sequence \"%.20s\" is neither A nor B", path, id);
            rc = lp_tok_template_add(t, which, id[0] - 'A', type_id, NULL, 0);
        }
        if (rc) return rc;
    }
    return LP_OK;
}

/* BertProcessing's and RobertaProcessing's ["name", id] pairs. */
static int processing_token(lp_tokenizer *t, json_t *pp, const char *key, const char *path) {
    json_t *v = json_object_get(pp, key), *id = json_array_get(v, 1);
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= t->n_vocab) {
        lp_error(LP_EFORMAT, "%s: post_processor \"%s\" is not [\"token\", id] with an id in the vocabulary of %d",
                 path, key, t->n_vocab);
        return -1;
    }
    return (int)json_integer_value(id);
}

/* The post_processor: TemplateProcessing, BertProcessing, RobertaProcessing (in a Sequence
 * too) become the tokenizer's template; ByteLevel changes only offsets; others are not read. */
static int parse_post_processor(lp_tokenizer *t, json_t *pp, const char *path, int depth) {
    const char *type = jstr(pp, "type");
    if (!type) return LP_OK;
    if (strcmp(type, "Sequence") == 0) {
        if (depth >= 4)
            return lp_error(LP_EUNSUPPORTED, "%s: post_processor Sequences nested more than 4 deep", path);
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(pp, "processors"), i, v) {
            int rc = parse_post_processor(t, v, path, depth + 1);
            if (rc) return rc;
        }
        return LP_OK;
    }
    bool tmpl = strcmp(type, "TemplateProcessing") == 0, bert = strcmp(type, "BertProcessing") == 0,
         roberta = strcmp(type, "RobertaProcessing") == 0;
    if (!tmpl && !bert && !roberta) return LP_OK;
    if (t->has_template)
        return lp_error(LP_EUNSUPPORTED, "%s: more than one post_processor that adds special tokens", path);
    if (tmpl) {
        int rc = parse_template(t, pp, 0, path);
        if (!rc) rc = parse_template(t, pp, 1, path);
        if (rc) return rc;
        t->has_template = true;
        /* [CLS] $A [SEP]: a special token on each side of A gives the CLS and SEP roles */
        const tmpl_piece *p = t->tmpl[0];
        if (t->n_tmpl[0] == 3 && p[0].seq < 0 && p[0].n_ids == 1 && p[1].seq == 0 && p[2].seq < 0 && p[2].n_ids == 1) {
            t->special[LP_SPECIAL_CLS] = t->tmpl_ids[p[0].id_at];
            t->special[LP_SPECIAL_SEP] = t->tmpl_ids[p[2].id_at];
        }
        return LP_OK;
    }
    int cls = processing_token(t, pp, "cls", path), sep = cls < 0 ? -1 : processing_token(t, pp, "sep", path);
    if (cls < 0 || sep < 0) return LP_EFORMAT;
    return bert ? lp_tok_template_bert(t, cls, sep) : lp_tok_template_roberta(t, cls, sep);
}

/* The parts of a WordPiece tokenizer.json besides the vocabulary and the added tokens:
 * model options, BertNormalizer, BertPreTokenizer, the WordPiece decoder. */
static int load_wordpiece_json(lp_tokenizer *t, json_t *root, json_t *model, const char *path) {
    const char *prefix = jstr(model, "continuing_subword_prefix");
    json_t *max = json_object_get(model, "max_input_chars_per_word");
    int rc = lp_tok_wordpiece_defaults(t, prefix ? prefix : "##");
    if (rc) return rc;
    if (json_is_integer(max)) {
        if (json_integer_value(max) < 0)
            return lp_error(LP_EFORMAT, "%s: model.max_input_chars_per_word is negative", path);
        t->wp_max_chars = json_integer_value(max) > INT_MAX ? INT_MAX : (int)json_integer_value(max);
    }
    const char *unk = jstr(model, "unk_token");
    if (!unk) unk = "[UNK]";
    t->unk = lp_tok_piece_find(t, unk, strlen(unk));
    t->special[LP_SPECIAL_UNK] = t->unk;

    json_t *nz = json_object_get(root, "normalizer");
    const char *type = jstr(nz, "type");
    if (type && strcmp(type, "BertNormalizer") == 0) {
        t->bert_norm = true;
        t->bn_clean = jbool(nz, "clean_text", true);
        t->bn_chinese = jbool(nz, "handle_chinese_chars", true);
        t->bn_lower = jbool(nz, "lowercase", true);
        t->bn_strip = jbool(nz, "strip_accents", t->bn_lower); /* null: as lowercase */
    } else if (nz && !json_is_null(nz)) {
        return lp_error(LP_EUNSUPPORTED, "%s: normalizer \"%s\" is not supported with WordPiece (only "
                        "BertNormalizer)", path, type ? type : "(no type)");
    }
    json_t *pt = json_object_get(root, "pre_tokenizer");
    type = jstr(pt, "type");
    if (type && strcmp(type, "BertPreTokenizer") == 0) {
        t->bert_pretok = true;
    } else if (pt && !json_is_null(pt)) {
        return lp_error(LP_EUNSUPPORTED, "%s: pre_tokenizer \"%s\" is not supported with WordPiece (only "
                        "BertPreTokenizer)", path, type ? type : "(no type)");
    }
    json_t *dec = json_object_get(root, "decoder");
    if (jstr(dec, "type") && strcmp(jstr(dec, "type"), "WordPiece") == 0) {
        t->wp_cleanup = jbool(dec, "cleanup", true);
        const char *dp = jstr(dec, "prefix");
        if (dp && strcmp(dp, prefix ? prefix : "##") != 0)
            return lp_error(LP_EUNSUPPORTED, "%s: the WordPiece decoder's prefix \"%.20s\" is not the model's", path,
                            dp);
    }
    t->bos = t->eos = -1;
    return LP_OK;
}

/* A Unigram model's "vocab": [[piece, score], ...], the id a piece's index. Sized for the
 * added tokens too (which may lie beyond it); *n_model gets its length. */
static int load_unigram_vocab(lp_tokenizer *t, json_t *vocab, const char *path, int extra_max, int *n_model) {
    if (!json_is_array(vocab)) return lp_error(LP_EFORMAT, "%s: model.vocab of a Unigram model is not a list", path);
    size_t n = json_array_size(vocab), i;
    if (n == 0) return lp_error(LP_EFORMAT, "%s: the vocabulary is empty", path);
    if (n >= (1 << 24)) return lp_error(LP_EFORMAT, "%s: %zu pieces; more than 2^24 is not supported", path, n);
    if (extra_max >= 0 && (size_t)extra_max > 2 * n + 4096)
        return lp_error(LP_EFORMAT, "%s: added token ids reach %d but there are only %zu pieces", path, extra_max, n);
    int rc = lp_tok_alloc_vocab(t, (int)n > extra_max + 1 ? (int)n : extra_max + 1);
    if (!rc) rc = lp_tok_unigram_alloc(t);
    if (rc) return rc;
    json_t *v;
    json_array_foreach(vocab, i, v) {
        json_t *p = json_array_get(v, 0), *sc = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_string(p) || !json_is_number(sc))
            return lp_error(LP_EFORMAT, "%s: model.vocab[%zu] is not [\"piece\", score]", path, i);
        double score = json_number_value(sc);
        if (!(score > -1e30 && score < 1e30))
            return lp_error(LP_EFORMAT, "%s: model.vocab[%zu] has score %g; scores must be finite", path, i, score);
        if ((rc = lp_tok_set_piece(t, (int)i, json_string_value(p), json_string_length(p)))) return rc;
        t->ug_score[i] = score;
    }
    *n_model = (int)n;
    return LP_OK;
}

static bool in_model(const lp_tokenizer *t, int id, void *n_model) {
    (void)t;
    return id < *(int *)n_model;
}

/* The parts of a Unigram tokenizer.json besides the vocabulary and the added tokens: unk_id,
 * byte_fallback, the normalizer (Precompiled, Strip, Replace, ...), the pre-tokenizer
 * (Metaspace, WhitespaceSplit), the lattice. */
static int load_unigram_json(lp_tokenizer *t, json_t *root, json_t *model, int n_model, const char *path) {
    t->kind = LP_TOK_UNIGRAM;
    json_t *unk = json_object_get(model, "unk_id");
    t->unk = -1;
    if (json_is_integer(unk)) {
        if (json_integer_value(unk) < 0 || json_integer_value(unk) >= n_model)
            return lp_error(LP_EFORMAT, "%s: model.unk_id %lld is outside the vocabulary of %d", path,
                            (long long)json_integer_value(unk), n_model);
        t->unk = (int)json_integer_value(unk);
    } else if (unk && !json_is_null(unk)) {
        return lp_error(LP_EFORMAT, "%s: model.unk_id is neither an integer nor null", path);
    }
    t->byte_fallback = jbool(model, "byte_fallback", false);
    int rc = parse_normalizer(t, json_object_get(root, "normalizer"), path, 0);
    pretok_info pi = {0};
    if (!rc) rc = parse_pretokenizer(t, json_object_get(root, "pre_tokenizer"), &pi, path, 0);
    if (rc) return rc;
    if (pi.byte_level || pi.split_regex)
        return lp_error(LP_EUNSUPPORTED, "%s: a Unigram model with a ByteLevel or Split pre_tokenizer is not supported",
                        path);
    t->whitespace_split = pi.whitespace_split;
    t->strip_leading_space = t->metaspace && t->metaspace_prepend != PREPEND_NEVER;
    for (int k = 0; k < t->n_norm; k++)
        if (t->norm[k].op == NORM_PREPEND) t->strip_leading_space = true;
    static const char *const eos_names[] = {"</s>", NULL}, *const bos_names[] = {"<s>", NULL};
    t->eos = first_piece(t, eos_names);
    t->bos = first_piece(t, bos_names);
    return lp_tok_unigram_index(t, in_model, &n_model);
}

int lp_tokenizer_load_json(lp_tokenizer **out, const char *path) {
    assert(out && path);
    *out = NULL;
    json_t *root = NULL;
    sbuf scratch = {0};
    char *split_buf = NULL;
    lp_tokenizer *t = lp_tok_new(LP_TOK_BYTE_BPE, path);
    if (!t) return lp_error(LP_ENOMEM, "%s: out of memory", path);
    int rc = load_json_file(path, &root);
    if (rc) goto done;
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        rc = lp_error(LP_EFORMAT, "%s: no \"model\" object (is this a Hugging Face tokenizer.json?)", path);
        goto done;
    }
    const char *type = jstr(model, "type");
    bool wordpiece = type ? strcmp(type, "WordPiece") == 0
                          : !json_object_get(model, "merges") && json_object_get(model, "max_input_chars_per_word");
    bool unigram = type && strcmp(type, "Unigram") == 0;
    if (!wordpiece && !unigram && (type ? strcmp(type, "BPE") != 0 : !json_object_get(model, "merges"))) {
        rc = lp_error(LP_EUNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE, WordPiece and Unigram)",
                      path, type ? type : "(none)");
        goto done;
    }
    const char *cont = jstr(model, "continuing_subword_prefix"), *suffix = jstr(model, "end_of_word_suffix");
    if (!wordpiece && ((cont && *cont) || (suffix && *suffix))) {
        rc = lp_error(LP_EUNSUPPORTED, "%s: BPE with a subword prefix or word suffix is not supported", path);
        goto done;
    }

    /* vocabulary, then added tokens (which may lie beyond it) */
    json_t *added = json_object_get(root, "added_tokens");
    long long added_max = -1;
    size_t i;
    json_t *v;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24) ||
            !jstr(v, "content")) {
            rc = lp_error(LP_EFORMAT, "%s: added_tokens[%zu] needs an \"id\" in [0, 2^24) and a \"content\"", path, i);
            goto done;
        }
        if (json_integer_value(id) > added_max) added_max = json_integer_value(id);
    }
    int n_model = 0; /* Unigram: the model's own pieces, which its lattice holds */
    if (unigram) rc = load_unigram_vocab(t, json_object_get(model, "vocab"), path, (int)added_max, &n_model);
    else rc = load_vocab_object(t, json_object_get(model, "vocab"), path, (int)added_max);
    if (rc) goto done;
    json_array_foreach(added, i, v) {
        const char *content = jstr(v, "content");
        int id = (int)json_integer_value(json_object_get(v, "id"));
        if ((rc = lp_tok_add_added(t, id, content, strlen(content)))) goto done;
        lp_tok_added_strip(t, id, jbool(v, "lstrip", false), jbool(v, "rstrip", false));
    }
    if ((rc = lp_tok_index_pieces(t))) goto done;
    if (wordpiece) {
        if ((rc = load_wordpiece_json(t, root, model, path))) goto done;
        goto specials;
    }
    if (unigram) {
        if ((rc = load_unigram_json(t, root, model, n_model, path))) goto done;
        goto specials;
    }

    json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) {
        rc = lp_error(LP_EFORMAT, "%s: model.merges is not a list", path);
        goto done;
    }
    if ((rc = lp_tok_merges_alloc(t, json_array_size(merges)))) goto done;
    size_t buf_cap = 4096;
    if (!(split_buf = malloc(buf_cap))) {
        rc = lp_error(LP_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        size_t na, nb;
        if (merge_strings(v, &a, &na, &b, &nb, split_buf, buf_cap) != 0) {
            rc = lp_error(LP_EFORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
            goto done;
        }
        char where[48];
        snprintf(where, sizeof where, "model.merges[%zu]", i);
        if (i > INT_MAX || (rc = lp_tok_merge_add(t, a, na, b, nb, (int)i, &scratch, where))) goto done;
    }

    if ((rc = parse_normalizer(t, json_object_get(root, "normalizer"), path, 0))) goto done;
    pretok_info pi = {0};
    if ((rc = parse_pretokenizer(t, json_object_get(root, "pre_tokenizer"), &pi, path, 0))) goto done;
    t->byte_fallback = jbool(model, "byte_fallback", false);
    t->fuse_unk = jbool(model, "fuse_unk", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    const char *unk = jstr(model, "unk_token");
    t->unk = unk ? lp_tok_piece_find(t, unk, strlen(unk)) : -1;

    if (pi.byte_level) {
        t->kind = LP_TOK_BYTE_BPE;
        t->add_prefix_space = pi.bl_add_prefix_space;
        if (pi.split_regex && (rc = lp_tok_compile_regex(t, pi.split_regex))) goto done;
        if (pi.bl_use_regex && (rc = lp_tok_compile_regex(t, GPT2_PATTERN))) goto done;
    } else if (t->byte_fallback || pi.metaspace || t->n_norm > 0) {
        t->kind = LP_TOK_SPIECE_BPE;
        if (pi.split_regex) {
            rc = lp_error(LP_EUNSUPPORTED, "%s: a Split pre_tokenizer without ByteLevel is not supported", path);
            goto done;
        }
        for (int k = 0; k < t->n_norm; k++)
            if (t->norm[k].op == NORM_PREPEND) t->strip_leading_space = true;
        if (t->metaspace && t->metaspace_prepend != PREPEND_NEVER) t->strip_leading_space = true;
    } else {
        rc = lp_error(LP_EUNSUPPORTED, "%s: BPE that is neither byte-level (ByteLevel pre_tokenizer) nor "
                                       "SentencePiece-style (byte_fallback, Metaspace, Prepend) is not supported", path);
        goto done;
    }

    static const char *const eos_names[] = {"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", NULL};
    static const char *const bos_names[] = {"<s>", NULL};
    static const char *const start_names[] = {"<|endoftext|>", NULL};
    t->eos = first_piece(t, eos_names);
    t->bos = template_bos(t, json_object_get(root, "post_processor"), 0);
    if (t->bos < 0) t->bos = first_piece(t, bos_names);
    t->adds_bos = t->bos >= 0;
    if (t->bos < 0) t->bos = first_piece(t, start_names); /* GPT-2 style: a start token never added */
specials:
    if ((rc = parse_post_processor(t, json_object_get(root, "post_processor"), path, 0))) goto done;
    if (t->has_template) { /* encode adds what the template says, which may be nothing */
        t->adds_bos = false;
        for (int p = 0; p < t->n_tmpl[0]; p++) t->adds_bos |= t->tmpl[0][p].seq < 0;
    }
    static const char *const mask_names[] = {"[MASK]", "<mask>", NULL}, *const pad_names[] = {"[PAD]", "<pad>", NULL},
                             *const unk_names[] = {"[UNK]", "<unk>", NULL};
    t->special[LP_SPECIAL_MASK] = first_piece(t, mask_names);
    t->special[LP_SPECIAL_PAD] = first_piece(t, pad_names);
    /* the role, not the model's fallback: RoBERTa's BPE has unk_token null, yet <unk> is its UNK */
    t->special[LP_SPECIAL_UNK] = t->unk >= 0 ? t->unk : first_piece(t, unk_names);
    rc = lp_tok_finish(t);
done:
    json_decref(root);
    free(scratch.s);
    free(split_buf);
    if (rc) {
        lp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LP_OK;
}

/* The files of a model directory that lp_tokenizer_load_dir looks at. */
typedef struct {
    char json[4096], vocab[4096], merges[4096], txt[4096], config[4096], tok_config[4096], spiece[4096];
} dir_files;

static int dir_paths(dir_files *f, const char *dir) {
    if (lp_path_join(f->json, sizeof f->json, dir, "tokenizer.json") ||
        lp_path_join(f->vocab, sizeof f->vocab, dir, "vocab.json") ||
        lp_path_join(f->merges, sizeof f->merges, dir, "merges.txt") ||
        lp_path_join(f->txt, sizeof f->txt, dir, "vocab.txt") ||
        lp_path_join(f->config, sizeof f->config, dir, "config.json") ||
        lp_path_join(f->tok_config, sizeof f->tok_config, dir, "tokenizer_config.json") ||
        lp_path_join(f->spiece, sizeof f->spiece, dir, "spiece.model"))
        return lp_error(LP_ERANGE, "%s: path too long", dir);
    return LP_OK;
}

bool lp_tokenizer_dir_has(const char *dir) {
    dir_files f;
    if (dir_paths(&f, dir)) return false;
    /* vocab.json without merges.txt counts: loading it says that merges.txt is missing */
    return lp_file_exists(f.json) || lp_file_exists(f.vocab) || lp_file_exists(f.txt) || lp_file_exists(f.spiece);
}

/* The directory's config.json model_type, copied to type ("" when there is none, or no
 * config.json, or one that does not read: the model loader reports a bad one itself). */
static void config_model_type(const char *config, char *type, size_t cap) {
    json_t *cfg = NULL;
    type[0] = '\0';
    if (!lp_file_exists(config) || lp_json_load_file(config, LP_JSON_MAX_CONFIG, 0, &cfg) != LP_OK) {
        lp_error_clear();
        return;
    }
    if (jstr(cfg, "model_type")) snprintf(type, cap, "%s", jstr(cfg, "model_type"));
    json_decref(cfg);
}

static bool config_says_roberta(const char *config) {
    char type[64];
    config_model_type(config, type, sizeof type);
    return strcmp(type, "roberta") == 0;
}

/* T5Tokenizer's extra_ids: tokenizer_config.json's, else 100 for the T5 family (its
 * default), else 0. */
static int spiece_extra_ids(const dir_files *f, int *extra_ids) {
    char type[64];
    config_model_type(f->config, type, sizeof type);
    *extra_ids = strcmp(type, "t5") == 0 || strcmp(type, "mt5") == 0 || strcmp(type, "umt5") == 0 ? 100 : 0;
    if (!lp_file_exists(f->tok_config)) return LP_OK;
    json_t *cfg = NULL;
    int rc = load_json_file(f->tok_config, &cfg);
    if (rc) return rc;
    json_t *v = json_object_get(cfg, "extra_ids");
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 100000)
        *extra_ids = (int)json_integer_value(v);
    else if (v && !json_is_null(v))
        rc = lp_error(LP_EFORMAT, "%s: extra_ids is not an integer in [0, 100000]", f->tok_config);
    json_decref(cfg);
    return rc;
}

int lp_tokenizer_load_dir(lp_tokenizer **out, const char *dir) {
    assert(out && dir);
    *out = NULL;
    dir_files f;
    int rc = dir_paths(&f, dir);
    if (rc) return rc;
    if (lp_file_exists(f.json)) return lp_tokenizer_load_json(out, f.json);
    if (lp_file_exists(f.vocab) && lp_file_exists(f.merges))
        return config_says_roberta(f.config) ? lp_tokenizer_load_roberta(out, f.vocab, f.merges)
                                             : lp_tokenizer_load_gpt2(out, f.vocab, f.merges);
    if (lp_file_exists(f.txt))
        return lp_tokenizer_load_vocab_txt(out, f.txt, lp_file_exists(f.tok_config) ? f.tok_config : NULL);
    if (lp_file_exists(f.spiece)) {
        int extra_ids;
        if ((rc = spiece_extra_ids(&f, &extra_ids))) return rc;
        return lp_tokenizer_load_spiece(out, f.spiece, extra_ids);
    }
    return lp_error(LP_EIO, "%s: no tokenizer: looked for %s, for %s with %s, for %s, and for %s", dir,
                    base_name(f.json), base_name(f.vocab), base_name(f.merges), base_name(f.txt), base_name(f.spiece));
}
