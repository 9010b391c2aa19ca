/* Reading tokenizer files: llama2.c's tokenizer.bin, GPT-2's vocab.json + merges.txt, and
 * Hugging Face's tokenizer.json (plus lp_tokenizer_load_dir, which picks between the last
 * two). Each loader validates what it reads, fills an lp_tokenizer through the builders in
 * tokenizer_impl.h and leaves encoding to tokenizer.c. */
#include "tokenizers/tokenizer_impl.h"

#include "loupe/error.h"
#include "loupe/fileio.h"

#include <jansson.h>

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

static int load_json_file(const char *path, json_t **out) {
    return lp_json_load_file(path, LP_JSON_MAX_TOKENIZER, 0, out);
}

int lp_tokenizer_load_gpt2(lp_tokenizer **out, const char *vocab_json_path, const char *merges_txt_path) {
    assert(out && vocab_json_path && merges_txt_path);
    *out = NULL;
    json_t *vocab = NULL;
    char *merges = NULL;
    size_t merges_len = 0;
    sbuf scratch = {0};
    lp_tokenizer *t = lp_tok_new(LP_TOK_BYTE_BPE, vocab_json_path);
    if (!t) return lp_error(LP_ENOMEM, "%s: out of memory", vocab_json_path);
    int rc = load_json_file(vocab_json_path, &vocab);
    if (!rc) rc = lp_file_read_new(merges_txt_path, &merges, &merges_len);
    if (!rc) rc = load_vocab_object(t, vocab, vocab_json_path, -1);
    if (!rc) rc = lp_tok_index_pieces(t);
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
        char where[32];
        snprintf(where, sizeof where, "line %zu", line_no);
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

/* ---------------------------------------------------------------- tokenizer.json */

typedef struct {
    bool byte_level, bl_use_regex, bl_add_prefix_space;
    const char *split_regex;
    bool metaspace;
} pretok_info;

static const char *jstr(json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

static bool jbool(json_t *o, const char *key, bool dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

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
    if (strcmp(type, "NFC") == 0) return LP_OK; /* treated as identity: exact for text already in NFC */
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
    } else {
        return lp_error(LP_EUNSUPPORTED, "%s: normalizer \"%s\" is not supported (only Prepend, Replace of a "
                                         "string, NFC)", path, type);
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
    if (strcmp(type, "Split") == 0) {
        const char *re = jstr(json_object_get(pt, "pattern"), "Regex");
        const char *behavior = jstr(pt, "behavior");
        if (!re || pi->split_regex || jbool(pt, "invert", false) || !behavior || strcmp(behavior, "Isolated") != 0)
            return lp_error(LP_EUNSUPPORTED, "%s: only one Split pre_tokenizer, with a Regex pattern and behavior "
                                             "\"Isolated\", is supported", path);
        pi->split_regex = re;
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
                                     "Sequence)", path, type);
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
    if (type ? strcmp(type, "BPE") != 0 : !json_object_get(model, "merges")) {
        rc = lp_error(LP_EUNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", path,
                      type ? type : "(none)");
        goto done;
    }
    const char *cont = jstr(model, "continuing_subword_prefix"), *suffix = jstr(model, "end_of_word_suffix");
    if ((cont && *cont) || (suffix && *suffix)) {
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
    if ((rc = load_vocab_object(t, json_object_get(model, "vocab"), path, (int)added_max))) goto done;
    json_array_foreach(added, i, v) {
        const char *content = jstr(v, "content");
        if ((rc = lp_tok_add_added(t, (int)json_integer_value(json_object_get(v, "id")), content, strlen(content))))
            goto done;
    }
    if ((rc = lp_tok_index_pieces(t))) goto done;

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

int lp_tokenizer_load_dir(lp_tokenizer **out, const char *dir) {
    assert(out && dir);
    *out = NULL;
    char json[4096], vocab[4096], merges[4096];
    if (lp_path_join(json, sizeof json, dir, "tokenizer.json") ||
        lp_path_join(vocab, sizeof vocab, dir, "vocab.json") ||
        lp_path_join(merges, sizeof merges, dir, "merges.txt"))
        return lp_error(LP_ERANGE, "%s: path too long", dir);
    if (lp_file_exists(json)) return lp_tokenizer_load_json(out, json);
    if (lp_file_exists(vocab) && lp_file_exists(merges)) return lp_tokenizer_load_gpt2(out, vocab, merges);
    return lp_error(LP_EIO, "%s: no tokenizer: looked for %s, and for %s with %s", dir, base_name(json),
                    base_name(vocab), base_name(merges));
}
