/* Tokenizers: GPT-2 byte-level BPE, SentencePiece-style BPE from tokenizer.json, and
 * llama2.c's tokenizer.bin. This file builds the tables a loader fills (tokenizer_impl.h
 * has the struct and the builders' contract; tokenizer_load.c reads the files), runs the
 * BPE merges, and encodes, decodes and frees.
 *
 * Invalid UTF-8: GPT-2's reference tokenizers take Unicode strings, so there is no
 * reference for bytes that are not UTF-8. For the pre-split regex we treat each invalid
 * byte as if it were one character that is neither letter, number nor space (we scan a
 * copy where it is U+FFFD). That is exactly what Python's `regex` does on a string decoded
 * with errors="surrogateescape", and it keeps every byte: the byte-level map still
 * encodes the original bytes, so decode(encode(x)) == x for any x. SentencePiece-style
 * and llama2.c encoding see an invalid byte as a one-byte symbol, which byte fallback
 * then emits as <0xNN>. */
#include "tokenizers/tokenizer_impl.h"

#include "loupe/error.h"

#include <assert.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#define NONE UINT32_MAX /* tok_entry.p_off, b_off: no piece, no bytes */

/* ---------------------------------------------------------------- small helpers */

/* The length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one.
 * Strict: no overlong forms, no surrogates, nothing above U+10FFFF (as PCRE2 checks). */
static int utf8_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return 0;
    if (n < (size_t)len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

int lp_tok_utf8_len(const unsigned char *s, size_t n) { return utf8_len(s, n); }

static int put_utf8(unsigned cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68
 * bytes are given code points 256.. in byte order. */
static void gpt2_byte_map(unsigned cp_of_byte[256]) {
    unsigned n = 0;
    for (unsigned b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp_of_byte[b] = printable ? b : 256 + n++;
    }
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key) {
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

static uint32_t table_size_for(size_t n) {
    uint32_t cap = 16;
    while (cap < 2 * n + 1 && cap < (1u << 30)) cap <<= 1;
    return cap;
}

/* A growing int vector for encode's output. */
typedef lp_ivec ivec;

int lp_ivec_push(ivec *a, int x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int *v = realloc(a->v, cap * sizeof *v);
        if (!v) return lp_error(LP_ENOMEM, "tokenizer: out of memory for %zu token ids", cap);
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = x;
    return LP_OK;
}

int lp_tok_sbuf_add(sbuf *b, const void *s, size_t n) {
    if (n > SIZE_MAX / 2 - b->n) return lp_error(LP_ENOMEM, "tokenizer: text too long");
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return lp_error(LP_ENOMEM, "tokenizer: out of memory for %zu bytes", cap);
        b->s = p, b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return LP_OK;
}

/* ---------------------------------------------------------------- building a tokenizer */

lp_tokenizer *lp_tok_new(lp_tokenizer_kind kind, const char *what) {
    lp_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->kind = kind;
    snprintf(t->what, sizeof t->what, "%s", what ? what : "tokenizer");
    t->bos = t->eos = t->unk = -1;
    for (int b = 0; b < 256; b++) t->byte_sym[b] = -1;
    for (int k = 0; k < LP_SPECIAL_COUNT; k++) t->special[k] = -1;
    t->wp_max_chars = 100;
    return t;
}

void lp_tokenizer_free(lp_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->blob);
    free(t->tok);
    free(t->piece_tab);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_id);
    free(t->added);
    for (int k = 0; k < t->n_norm; k++) pcre2_code_free(t->norm[k].re);
    free(t->ug_score);
    free(t->ug_key);
    free(t->ug_child);
    free(t->ug_term);
    free(t->cm_units);
    free(t);
}

/* Appends s (and a NUL, so pieces can be handed out as C strings) to the blob. */
int lp_tok_blob_add(lp_tokenizer *t, const void *s, size_t n, uint32_t *off) {
    if (n >= UINT32_MAX / 2 || t->blob_len + n + 1 >= UINT32_MAX)
        return lp_error(LP_EFORMAT, "%s: vocabulary strings exceed 4 GiB", t->what);
    if (t->blob_len + n + 1 > t->blob_cap) {
        size_t cap = t->blob_cap ? t->blob_cap : 4096;
        while (cap < t->blob_len + n + 1) cap *= 2;
        char *p = realloc(t->blob, cap);
        if (!p) return lp_error(LP_ENOMEM, "%s: out of memory for vocabulary strings", t->what);
        t->blob = p, t->blob_cap = cap;
    }
    if (n) memcpy(t->blob + t->blob_len, s, n);
    t->blob[t->blob_len + n] = '\0';
    *off = (uint32_t)t->blob_len;
    t->blob_len += n + 1;
    return LP_OK;
}

static const char *blob_at(const lp_tokenizer *t, uint32_t off) { return t->blob + off; }

int lp_tok_alloc_vocab(lp_tokenizer *t, int n_vocab) {
    t->tok = calloc((size_t)n_vocab, sizeof *t->tok);
    if (!t->tok) return lp_error(LP_ENOMEM, "%s: out of memory for %d tokens", t->what, n_vocab);
    for (int i = 0; i < n_vocab; i++) t->tok[i].p_off = t->tok[i].b_off = NONE;
    t->n_vocab = n_vocab;
    return LP_OK;
}

/* Sets the piece of id unless it already has one (the first definition wins). */
int lp_tok_set_piece(lp_tokenizer *t, int id, const char *s, size_t n) {
    assert(id >= 0 && id < t->n_vocab);
    if (t->tok[id].p_off != NONE) return LP_OK;
    uint32_t off;
    int rc = lp_tok_blob_add(t, s, n, &off);
    if (rc) return rc;
    t->tok[id].p_off = off;
    t->tok[id].p_len = (uint32_t)n;
    if (n > t->max_piece_len) t->max_piece_len = (uint32_t)n;
    return LP_OK;
}

int lp_tok_piece_find(const lp_tokenizer *t, const char *s, size_t n) {
    if (!t->piece_tab) return -1;
    for (uint32_t h = (uint32_t)hash_bytes(s, n) & t->piece_mask;; h = (h + 1) & t->piece_mask) {
        int id = t->piece_tab[h];
        if (id < 0) return -1;
        const tok_entry *e = &t->tok[id];
        if (e->p_len == n && memcmp(blob_at(t, e->p_off), s, n) == 0) return id;
    }
}

/* Indexes every piece; where two ids share a piece the lower id is found. */
int lp_tok_index_pieces(lp_tokenizer *t) {
    uint32_t cap = table_size_for((size_t)t->n_vocab);
    t->piece_tab = malloc(cap * sizeof *t->piece_tab);
    if (!t->piece_tab) return lp_error(LP_ENOMEM, "%s: out of memory for the vocabulary index", t->what);
    memset(t->piece_tab, 0xff, cap * sizeof *t->piece_tab);
    t->piece_mask = cap - 1;
    for (int id = 0; id < t->n_vocab; id++) {
        const tok_entry *e = &t->tok[id];
        if (e->p_off == NONE || lp_tok_piece_find(t, blob_at(t, e->p_off), e->p_len) >= 0) continue;
        uint32_t h = (uint32_t)hash_bytes(blob_at(t, e->p_off), e->p_len) & t->piece_mask;
        while (t->piece_tab[h] >= 0) h = (h + 1) & t->piece_mask;
        t->piece_tab[h] = id;
    }
    return LP_OK;
}

int lp_tok_merges_alloc(lp_tokenizer *t, size_t n) {
    uint32_t cap = table_size_for(n);
    t->merge_key = malloc(cap * sizeof *t->merge_key);
    t->merge_rank = malloc(cap * sizeof *t->merge_rank);
    t->merge_id = malloc(cap * sizeof *t->merge_id);
    if (!t->merge_key || !t->merge_rank || !t->merge_id)
        return lp_error(LP_ENOMEM, "%s: out of memory for %zu merges", t->what, n);
    memset(t->merge_key, 0xff, cap * sizeof *t->merge_key);
    t->merge_mask = cap - 1;
    return LP_OK;
}

static bool merge_find(const lp_tokenizer *t, int a, int b, int *rank, int *id) {
    if (!t->merge_key) return false;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t h = (uint32_t)hash_pair(key) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        if (t->merge_key[h] == UINT64_MAX) return false;
        if (t->merge_key[h] == key) {
            *rank = t->merge_rank[h], *id = t->merge_id[h];
            return true;
        }
    }
}

/* Adds the merge "a b" with the given rank. A pair listed twice keeps its later rank, as
 * both Python's dict(zip(merges, range(n))) and Hugging Face's map do. */
int lp_tok_merge_add(lp_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int rank,
                     sbuf *scratch, const char *where) {
    int ia = lp_tok_piece_find(t, a, na), ib = lp_tok_piece_find(t, b, nb);
    scratch->n = 0;
    int rc = lp_tok_sbuf_add(scratch, a, na);
    if (!rc) rc = lp_tok_sbuf_add(scratch, b, nb);
    if (rc) return rc;
    int iab = lp_tok_piece_find(t, scratch->s, scratch->n);
    if (ia < 0 || ib < 0 || iab < 0)
        return lp_error(LP_EFORMAT, "%s: merge %d (%s): \"%.*s\" is not in the vocabulary", t->what, rank, where,
                        (int)(ia < 0 ? na : ib < 0 ? nb : scratch->n), ia < 0 ? a : ib < 0 ? b : scratch->s);
    if ((size_t)rank + 1 > (size_t)t->merge_mask / 2 + 1)
        return lp_error(LP_EFORMAT, "%s: more merges than announced", t->what);
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    uint32_t h = (uint32_t)hash_pair(key) & t->merge_mask;
    while (t->merge_key[h] != UINT64_MAX && t->merge_key[h] != key) h = (h + 1) & t->merge_mask;
    if (t->merge_key[h] == UINT64_MAX) t->n_merges++;
    t->merge_key[h] = key;
    t->merge_rank[h] = rank;
    t->merge_id[h] = iab;
    return LP_OK;
}

static int added_cmp(const void *pa, const void *pb, void *blob) {
    const added_tok *a = pa, *b = pb;
    unsigned char ca = (unsigned char)((const char *)blob)[a->off];
    unsigned char cb = (unsigned char)((const char *)blob)[b->off];
    if (ca != cb) return ca < cb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Records an added token: its piece, that it decodes to its content, and (if it is not
 * empty) that it is matched literally in input text. */
int lp_tok_add_added(lp_tokenizer *t, int id, const char *s, size_t n) {
    int rc = lp_tok_set_piece(t, id, s, n);
    if (rc) return rc;
    t->tok[id].added = 1;
    if (n == 0) return LP_OK;
    added_tok *a = realloc(t->added, ((size_t)t->n_added + 1) * sizeof *a);
    if (!a) return lp_error(LP_ENOMEM, "%s: out of memory for added tokens", t->what);
    t->added = a;
    uint32_t off;
    if ((rc = lp_tok_blob_add(t, s, n, &off))) return rc;
    t->added[t->n_added++] = (added_tok){id, off, (uint32_t)n, false, false};
    return LP_OK;
}

void lp_tok_added_strip(lp_tokenizer *t, int id, bool lstrip, bool rstrip) {
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].id == id) t->added[k].lstrip = lstrip, t->added[k].rstrip = rstrip;
}

int lp_tok_template_add(lp_tokenizer *t, int which, int seq, int type_id, const int *ids, int n_ids) {
    assert(which == 0 || which == 1);
    if (t->n_tmpl[which] == LP_TOK_MAX_TMPL)
        return lp_error(LP_EUNSUPPORTED, "%s: a post-processing template of more than %d pieces", t->what,
                        LP_TOK_MAX_TMPL);
    tmpl_piece *p = &t->tmpl[which][t->n_tmpl[which]];
    *p = (tmpl_piece){(signed char)seq, type_id, t->n_tmpl_ids, 0};
    if (seq < 0) {
        if (n_ids > LP_TOK_MAX_TMPL_IDS - t->n_tmpl_ids)
            return lp_error(LP_EUNSUPPORTED, "%s: post-processing templates with more than %d special ids", t->what,
                            LP_TOK_MAX_TMPL_IDS);
        for (int i = 0; i < n_ids; i++) {
            if (ids[i] < 0 || ids[i] >= t->n_vocab)
                return lp_error(LP_EFORMAT, "%s: post-processor special token id %d is outside the vocabulary of %d",
                                t->what, ids[i], t->n_vocab);
            t->tmpl_ids[t->n_tmpl_ids++] = ids[i];
        }
        p->n_ids = n_ids;
    }
    t->n_tmpl[which]++;
    t->has_template = true;
    return LP_OK;
}

static int template_3(lp_tokenizer *t, int which, int a, int seq, int type_id, int b) {
    int rc = lp_tok_template_add(t, which, -1, type_id, &a, 1);
    if (!rc) rc = lp_tok_template_add(t, which, seq, type_id, NULL, 0);
    if (!rc) rc = lp_tok_template_add(t, which, -1, type_id, &b, 1);
    return rc;
}

int lp_tok_template_bert(lp_tokenizer *t, int cls, int sep) {
    int rc = template_3(t, 0, cls, 0, 0, sep);
    if (!rc) rc = template_3(t, 1, cls, 0, 0, sep);
    if (!rc) rc = lp_tok_template_add(t, 1, 1, 1, NULL, 0);
    if (!rc) rc = lp_tok_template_add(t, 1, -1, 1, &sep, 1);
    t->special[LP_SPECIAL_CLS] = cls, t->special[LP_SPECIAL_SEP] = sep;
    return rc;
}

int lp_tok_template_roberta(lp_tokenizer *t, int cls, int sep) {
    int rc = template_3(t, 0, cls, 0, 0, sep);
    if (!rc) rc = template_3(t, 1, cls, 0, 0, sep);
    if (!rc) rc = template_3(t, 1, sep, 1, 0, sep);
    t->special[LP_SPECIAL_CLS] = cls, t->special[LP_SPECIAL_SEP] = sep;
    return rc;
}

static bool parse_byte_piece(const char *s, size_t n, unsigned *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return false;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                            : 16u;
        if (d > 15) return false;
        v = v * 16 + d;
    }
    *byte = v;
    return true;
}

/* Works out each token's bytes, the initial symbol of each byte, and the added-token index. */
int lp_tok_finish(lp_tokenizer *t) {
    int rc;
    unsigned cp_of_byte[256];
    int byte_of_cp[324]; /* byte-level pieces use code points below 256 + 68 */
    if (t->kind == LP_TOK_BYTE_BPE) {
        gpt2_byte_map(cp_of_byte);
        for (int i = 0; i < 324; i++) byte_of_cp[i] = -1;
        for (int b = 0; b < 256; b++) byte_of_cp[cp_of_byte[b]] = b;
    }
    sbuf tmp = {0};
    for (int id = 0; id < t->n_vocab; id++) {
        tok_entry *e = &t->tok[id];
        if (e->p_off == NONE) continue;
        const char *p = blob_at(t, e->p_off);
        size_t n = e->p_len;
        unsigned byte;
        tmp.n = 0;
        if (e->added || t->kind == LP_TOK_WORDPIECE) {
            e->b_off = e->p_off, e->b_len = e->p_len;
            continue;
        } else if (t->kind == LP_TOK_BYTE_BPE) {
            for (size_t i = 0; i < n;) {
                int k = utf8_len((const unsigned char *)p + i, n - i);
                unsigned cp = 0;
                if (k == 2) cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
                else if (k == 1) cp = (unsigned char)p[i];
                if (k >= 1 && k <= 2 && cp < 324 && byte_of_cp[cp] >= 0) {
                    char c = (char)byte_of_cp[cp];
                    rc = lp_tok_sbuf_add(&tmp, &c, 1);
                } else { /* not from the byte map: keep the text as it is */
                    if (k == 0) k = 1;
                    rc = lp_tok_sbuf_add(&tmp, p + i, (size_t)k);
                }
                if (rc) goto fail;
                i += (size_t)k;
            }
        } else if (parse_byte_piece(p, n, &byte)) {
            char c = (char)byte;
            if ((rc = lp_tok_sbuf_add(&tmp, &c, 1))) goto fail;
        } else {
            for (size_t i = 0; i < n;) {
                if (n - i >= 3 && memcmp(p + i, LP_TOK_SPIECE_SPACE, 3) == 0) {
                    rc = lp_tok_sbuf_add(&tmp, " ", 1), i += 3;
                } else {
                    rc = lp_tok_sbuf_add(&tmp, p + i, 1), i += 1;
                }
                if (rc) goto fail;
            }
        }
        if (tmp.n == n && (n == 0 || memcmp(tmp.s, p, n) == 0)) {
            e->b_off = e->p_off, e->b_len = e->p_len;
        } else {
            if ((rc = lp_tok_blob_add(t, tmp.s, tmp.n, &e->b_off))) goto fail;
            e->b_len = (uint32_t)tmp.n;
        }
    }
    free(tmp.s);

    if (t->kind == LP_TOK_BYTE_BPE) {
        for (int b = 0; b < 256; b++) {
            char s[4];
            int k = put_utf8(cp_of_byte[b], s);
            t->byte_sym[b] = lp_tok_piece_find(t, s, (size_t)k);
        }
    } else if (t->kind == LP_TOK_LLAMA2C && !t->bytes_by_name) {
        for (int b = 0; b < 256; b++) t->byte_sym[b] = b + 3 < t->n_vocab ? b + 3 : -1;
    } else {
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            t->byte_sym[b] = lp_tok_piece_find(t, s, 6);
        }
    }

    if (t->n_added > 1) qsort_r(t->added, (size_t)t->n_added, sizeof *t->added, added_cmp, t->blob);
    int k = 0;
    for (int c = 0; c <= 256; c++) {
        while (k < t->n_added && (unsigned char)t->blob[t->added[k].off] < c) k++;
        t->added_first[c] = k;
    }
    return LP_OK;
fail:
    free(tmp.s);
    return rc;
}

int lp_tok_compile_regex(lp_tokenizer *t, const char *pattern) {
    assert(t->n_re < LP_TOK_MAX_RES);
    int err;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                                   &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lp_error(LP_EUNSUPPORTED, "%s: pre-split regex does not compile at offset %zu: %s", t->what,
                        (size_t)erroff, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: plain matching works without it */
    t->re[t->n_re++] = re;
    return LP_OK;
}

/* ---------------------------------------------------------------- BPE */

typedef struct {
    double key; /* lower merges first: a merge rank, or minus a llama2.c score */
    int pos;    /* the left symbol; positions keep their order, so ties go leftmost */
    int a, b;   /* the ids the pair had when queued; a stale entry no longer matches */
    int id;     /* what they merge into */
} bpe_cand;

typedef struct {
    int *id, *next, *prev;
    bpe_cand *heap, *deferred;
    size_t n_heap, n_deferred, cap;
    sbuf scratch; /* llama2.c: the concatenation being looked up */
} bpe_work;

static void bpe_work_free(bpe_work *w) {
    free(w->id);
    free(w->next);
    free(w->prev);
    free(w->heap);
    free(w->deferred);
    free(w->scratch.s);
}

static int bpe_work_reserve(bpe_work *w, size_t n) {
    if (n <= w->cap) return LP_OK;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < n) cap *= 2;
    if (cap > SIZE_MAX / (3 * sizeof(bpe_cand))) return lp_error(LP_ENOMEM, "tokenizer: text too long");
    int *id = realloc(w->id, cap * sizeof *id);
    if (id) w->id = id;
    int *next = realloc(w->next, cap * sizeof *next);
    if (next) w->next = next;
    int *prev = realloc(w->prev, cap * sizeof *prev);
    if (prev) w->prev = prev;
    /* a word of n symbols queues at most n - 1 pairs, then 2 per merge */
    bpe_cand *heap = realloc(w->heap, 3 * cap * sizeof *heap);
    if (heap) w->heap = heap;
    bpe_cand *deferred = realloc(w->deferred, 2 * cap * sizeof *deferred);
    if (deferred) w->deferred = deferred;
    if (!id || !next || !prev || !heap || !deferred)
        return lp_error(LP_ENOMEM, "tokenizer: out of memory for a word of %zu symbols", n);
    w->cap = cap;
    return LP_OK;
}

static bool cand_less(const bpe_cand *x, const bpe_cand *y) {
    return x->key < y->key || (x->key == y->key && x->pos < y->pos);
}

static void heap_push(bpe_work *w, bpe_cand c) {
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
}

static bpe_cand heap_pop(bpe_work *w) {
    bpe_cand top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

/* Ranks the pair (a, b): by merge rank for BPE from merges, by the score of the token
 * their concatenation spells for llama2.c (which only takes scores above -1e10). */
static bool pair_rank(const lp_tokenizer *t, bpe_work *w, int a, int b, double *key, int *id) {
    if (t->kind != LP_TOK_LLAMA2C) {
        int rank;
        if (!merge_find(t, a, b, &rank, id)) return false;
        *key = rank;
        return true;
    }
    const tok_entry *ea = &t->tok[a], *eb = &t->tok[b];
    w->scratch.n = 0;
    if (lp_tok_sbuf_add(&w->scratch, blob_at(t, ea->p_off), ea->p_len) ||
        lp_tok_sbuf_add(&w->scratch, blob_at(t, eb->p_off), eb->p_len))
        return false; /* out of memory: treat as no merge; the text still encodes */
    int m = lp_tok_piece_find(t, w->scratch.s, w->scratch.n);
    if (m < 0 || !(t->tok[m].score > -1e10f)) return false;
    *key = -(double)t->tok[m].score;
    *id = m;
    return true;
}

static void queue_pair(const lp_tokenizer *t, bpe_work *w, int pos, bool defer) {
    int r = w->next[pos];
    bpe_cand c = {.pos = pos, .a = w->id[pos], .b = w->id[r]};
    if (!pair_rank(t, w, c.a, c.b, &c.key, &c.id)) return;
    if (defer) w->deferred[w->n_deferred++] = c;
    else heap_push(w, c);
}

/* Merges the symbols w->id[0..n) in place and returns how many remain (compacted to the
 * front). With merge_rounds, all occurrences of the best pair are merged left to right
 * before pairs the merges made are considered (OpenAI's bpe()); otherwise the best pair
 * anywhere is merged next (Hugging Face, llama2.c). The two agree whenever no merge makes
 * a pair that ranks better than itself, which holds for merges learnt in order. */
static size_t bpe_merge(const lp_tokenizer *t, bpe_work *w, size_t n) {
    if (n < 2) return n;
    for (size_t i = 0; i < n; i++) {
        w->prev[i] = (int)i - 1;
        w->next[i] = i + 1 < n ? (int)i + 1 : -1;
    }
    w->n_heap = w->n_deferred = 0;
    for (size_t i = 0; i + 1 < n; i++) queue_pair(t, w, (int)i, false);
    double round_key = 0;
    while (w->n_heap > 0 || w->n_deferred > 0) {
        if (w->n_deferred > 0 && (w->n_heap == 0 || w->heap[0].key != round_key)) {
            for (size_t i = 0; i < w->n_deferred; i++) heap_push(w, w->deferred[i]);
            w->n_deferred = 0;
        }
        bpe_cand c = heap_pop(w);
        int p = c.pos, r = w->next[p];
        if (w->id[p] != c.a || r < 0 || w->id[r] != c.b) continue; /* stale */
        round_key = c.key;
        w->id[p] = c.id;
        w->id[r] = -1;
        w->next[p] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = p;
        if (w->prev[p] >= 0) queue_pair(t, w, w->prev[p], t->merge_rounds);
        if (w->next[p] >= 0) queue_pair(t, w, p, t->merge_rounds);
    }
    size_t m = 0;
    for (int i = 0; i >= 0; i = w->next[i]) w->id[m++] = w->id[i];
    return m;
}

/* ---------------------------------------------------------------- encoding */

/* Byte-level BPE of one pre-split piece. */
static int encode_bytes_piece(const lp_tokenizer *t, const unsigned char *s, size_t n, bpe_work *w, ivec *out) {
    int rc = bpe_work_reserve(w, n);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        int id = t->byte_sym[s[i]];
        if (id < 0)
            return lp_error(LP_EFORMAT, "%s: the vocabulary has no token for byte 0x%02X", t->what, s[i]);
        w->id[i] = id;
    }
    if (t->ignore_merges && n > 1) {
        unsigned cp_of_byte[256];
        gpt2_byte_map(cp_of_byte);
        w->scratch.n = 0;
        for (size_t i = 0; i < n; i++) {
            char u[4];
            if ((rc = lp_tok_sbuf_add(&w->scratch, u, (size_t)put_utf8(cp_of_byte[s[i]], u)))) return rc;
        }
        int id = lp_tok_piece_find(t, w->scratch.s, w->scratch.n);
        if (id >= 0) return lp_ivec_push(out, id);
    }
    size_t m = bpe_merge(t, w, n);
    for (size_t i = 0; i < m; i++)
        if ((rc = lp_ivec_push(out, w->id[i]))) return rc;
    return LP_OK;
}

/* Finds the next match of re in s[at..n); *found false when there is none. */
static int regex_match(const lp_tokenizer *t, pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                       size_t at, bool *found, size_t *m0, size_t *m1) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    *found = rc >= 0;
    if (rc == PCRE2_ERROR_NOMATCH) return LP_OK;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return lp_error(LP_ERANGE, "%s: pre-split regex failed at byte %zu: %s", t->what, at, (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *m0 = ov[0], *m1 = ov[1];
    return LP_OK;
}

typedef struct {
    const char *orig;     /* the segment's bytes */
    const char *scan;     /* what the regexes see: orig, or a copy with U+FFFD for invalid bytes */
    const size_t *orig_at; /* scan offset -> orig offset, NULL when scan == orig */
    pcre2_match_data *md[LP_TOK_MAX_RES];
    lp_tok_piece_fn fn; /* lp_tok_presplit: pieces go here instead of to BPE */
    void *fn_ctx;
} split_ctx;

/* Splits scan[a..b) with regex k (matches and the text between them are pieces, as in
 * Hugging Face's Split "Isolated"), recursing into the next regex, then BPE each piece. */
static int split_and_encode(const lp_tokenizer *t, split_ctx *cx, int k, size_t a, size_t b, bpe_work *w,
                            ivec *out) {
    if (a >= b) return LP_OK;
    if (k == t->n_re) {
        size_t oa = cx->orig_at ? cx->orig_at[a] : a, ob = cx->orig_at ? cx->orig_at[b] : b;
        if (cx->fn) return cx->fn(cx->fn_ctx, cx->orig + oa, ob - oa);
        return encode_bytes_piece(t, (const unsigned char *)cx->orig + oa, ob - oa, w, out);
    }
    size_t at = a, last = a;
    int rc;
    while (at < b) {
        size_t m0, m1;
        bool found;
        if ((rc = regex_match(t, t->re[k], cx->md[k], cx->scan, b, at, &found, &m0, &m1))) return rc;
        if (!found) break;
        if (m1 == m0) { /* empty match: step over one character and look again */
            int len = utf8_len((const unsigned char *)cx->scan + m0, b - m0);
            at = m0 + (size_t)(len > 0 ? len : 1);
            continue;
        }
        if (m0 > last && (rc = split_and_encode(t, cx, k + 1, last, m0, w, out))) return rc;
        if ((rc = split_and_encode(t, cx, k + 1, m0, m1, w, out))) return rc;
        last = at = m1;
    }
    return split_and_encode(t, cx, k + 1, last, b, w, out);
}

/* Pre-splits s and byte-level BPEs each piece into out, or hands each piece to fn. */
static int byte_level_split(const lp_tokenizer *t, const char *s, size_t n, bpe_work *w, ivec *out,
                            lp_tok_piece_fn fn, void *fn_ctx) {
    sbuf pre = {0}, scan = {0};
    size_t *orig_at = NULL;
    split_ctx cx = {.fn = fn, .fn_ctx = fn_ctx};
    int rc = LP_OK;
    if (n == 0) return LP_OK;
    if (t->add_prefix_space && s[0] != ' ') {
        if ((rc = lp_tok_sbuf_add(&pre, " ", 1)) || (rc = lp_tok_sbuf_add(&pre, s, n))) goto done;
        s = pre.s, n = pre.n;
    }
    cx.orig = cx.scan = s;
    size_t scan_len = n;
    if (t->n_re > 0) {
        size_t i = 0;
        while (i < n) {
            int k = utf8_len((const unsigned char *)s + i, n - i);
            if (k == 0) break;
            i += (size_t)k;
        }
        if (i < n) { /* invalid UTF-8: scan a copy with U+FFFD in place of each bad byte */
            orig_at = malloc((3 * n + 1) * sizeof *orig_at);
            if (!orig_at) { rc = lp_error(LP_ENOMEM, "tokenizer: out of memory for %zu bytes of text", n); goto done; }
            for (i = 0; i < n;) {
                int k = utf8_len((const unsigned char *)s + i, n - i);
                const char *src = k ? s + i : "\xef\xbf\xbd";
                size_t len = k ? (size_t)k : 3;
                for (size_t j = 0; j < len; j++) orig_at[scan.n + j] = i;
                if ((rc = lp_tok_sbuf_add(&scan, src, len))) goto done;
                i += k ? (size_t)k : 1;
            }
            orig_at[scan.n] = n;
            cx.scan = scan.s, cx.orig_at = orig_at, scan_len = scan.n;
        }
        for (int k = 0; k < t->n_re; k++) {
            cx.md[k] = pcre2_match_data_create_from_pattern(t->re[k], NULL);
            if (!cx.md[k]) { rc = lp_error(LP_ENOMEM, "tokenizer: out of memory for regex match data"); goto done; }
        }
    }
    rc = split_and_encode(t, &cx, 0, 0, scan_len, w, out);
done:
    for (int k = 0; k < LP_TOK_MAX_RES; k++) pcre2_match_data_free(cx.md[k]);
    free(orig_at);
    free(pre.s);
    free(scan.s);
    return rc;
}

static int normalize_steps(const lp_tokenizer *t, const char *s, size_t n, sbuf *out, sbuf *tmp);

/* Byte-level BPE: the normalizer's steps (GPT-NeoX's NFC), then the pre-tokenizer's split. */
static int encode_byte_level(const lp_tokenizer *t, const char *s, size_t n, bpe_work *w, ivec *out) {
    if (t->n_norm == 0) return byte_level_split(t, s, n, w, out, NULL, NULL);
    sbuf norm = {0}, tmp = {0};
    int rc = normalize_steps(t, s, n, &norm, &tmp);
    if (!rc) rc = byte_level_split(t, norm.s ? norm.s : "", norm.n, w, out, NULL, NULL);
    free(norm.s);
    free(tmp.s);
    return rc;
}

int lp_tok_presplit(const lp_tokenizer *t, const char *text, size_t len, lp_tok_piece_fn fn, void *ctx) {
    assert(t && fn && (text || len == 0));
    return byte_level_split(t, text, len, NULL, NULL, fn, ctx);
}

int lp_tok_byte_piece(unsigned char byte, char out[2]) {
    unsigned cp_of_byte[256];
    gpt2_byte_map(cp_of_byte);
    char buf[4];
    int k = put_utf8(cp_of_byte[byte], buf); /* code points below 324: at most 2 bytes */
    memcpy(out, buf, (size_t)k);
    return k;
}

/* Pushes the initial symbols of one character (or invalid byte) of a SentencePiece-style
 * word: its token, else its bytes as <0xNN> tokens, else <unk>. */
static int spiece_char_syms(const lp_tokenizer *t, const char *c, size_t k, bpe_work *w, size_t *n) {
    int id = lp_tok_piece_find(t, c, k);
    if (id >= 0) { w->id[(*n)++] = id; return LP_OK; }
    bool bytes_known = t->byte_fallback;
    for (size_t j = 0; j < k && bytes_known; j++) bytes_known = t->byte_sym[(unsigned char)c[j]] >= 0;
    if (bytes_known) {
        for (size_t j = 0; j < k; j++) w->id[(*n)++] = t->byte_sym[(unsigned char)c[j]];
        return LP_OK;
    }
    if (t->unk < 0)
        return lp_error(LP_EFORMAT, "%s: no token for \"%.*s\" and no byte fallback or unknown token", t->what,
                        (int)k, c);
    if (!(t->fuse_unk && *n > 0 && w->id[*n - 1] == t->unk)) w->id[(*n)++] = t->unk;
    return LP_OK;
}

static int encode_spiece_word(const lp_tokenizer *t, const char *s, size_t len, bpe_work *w, ivec *out) {
    int rc = bpe_work_reserve(w, len);
    if (rc) return rc;
    if (t->ignore_merges) {
        int id = lp_tok_piece_find(t, s, len);
        if (id >= 0) return lp_ivec_push(out, id);
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        int k = utf8_len((const unsigned char *)s + i, len - i);
        if (k == 0) k = 1;
        if ((rc = spiece_char_syms(t, s + i, (size_t)k, w, &n))) return rc;
        i += (size_t)k;
    }
    size_t m = bpe_merge(t, w, n);
    for (size_t i = 0; i < m; i++)
        if ((rc = lp_ivec_push(out, w->id[i]))) return rc;
    return LP_OK;
}

static int norm_too_long(const lp_tokenizer *t, size_t n, size_t limit) {
    return lp_error(LP_ERANGE, "%s: the normalizer makes more than %zu bytes of %zu bytes of text (the limit is %dx + %d); "
                    "its Replace or Prepend steps expand too much for a real tokenizer", t->what, limit, n,
                    LP_TOK_NORM_FACTOR, LP_TOK_NORM_SLACK);
}

static size_t space_before(const char *s, size_t n);
static size_t space_at(const char *s, size_t n);

/* Replace with a Regex pattern: every match (non-overlapping, left to right) becomes the
 * replacement; an empty match replaces nothing (tokenizers' patterns for it, " {2,}", never
 * match empty). The pattern is compiled to match in text that is not UTF-8 too. */
static int replace_regex(const lp_tokenizer *t, const norm_step *st, sbuf *in, sbuf *out, size_t n, size_t limit) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(st->re, NULL);
    if (!md) return lp_error(LP_ENOMEM, "tokenizer: out of memory for regex match data");
    int rc = LP_OK;
    size_t at = 0, last = 0;
    while (at <= in->n && !rc) {
        int m = pcre2_match(st->re, (PCRE2_SPTR)in->s, in->n, at, 0, md, NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            rc = lp_error(LP_ERANGE, "%s: Replace regex failed at byte %zu: %s", t->what, at, (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) {
            at = ov[0] + 1;
            continue;
        }
        if (!(rc = lp_tok_sbuf_add(out, in->s + last, ov[0] - last)))
            rc = lp_tok_sbuf_add(out, blob_at(t, st->b_off), st->b_len);
        last = at = ov[1];
        if (!rc && out->n > limit) rc = norm_too_long(t, n, limit);
    }
    if (!rc) rc = lp_tok_sbuf_add(out, in->s + last, in->n - last);
    pcre2_match_data_free(md);
    return rc;
}

/* Unicode NFC (tokenizers' NFC normalizer) of s[0..n) appended to out: each stretch of valid
 * UTF-8 composed by utf8proc, bytes that are not UTF-8 copied as they are (tokenizers only
 * ever sees valid text; loupe encodes bytes too). */
static int nfc_append(const char *s, size_t n, sbuf *out) {
    size_t i = 0;
    while (i < n) {
        size_t a = i;
        utf8proc_int32_t c;
        utf8proc_ssize_t k;
        while (i < n && (k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c)) > 0)
            i += (size_t)k;
        if (i > a) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s + a, (utf8proc_ssize_t)(i - a), &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0) return lp_error(LP_ENOMEM, "tokenizer: NFC normalization failed: %s", utf8proc_errmsg(m));
            int rc = lp_tok_sbuf_add(out, nfc, (size_t)m);
            free(nfc);
            if (rc) return rc;
        }
        if (i < n) { /* one byte that does not start a valid character */
            int rc = lp_tok_sbuf_add(out, s + i, 1);
            if (rc) return rc;
            i++;
        }
    }
    return LP_OK;
}

/* Applies the normalizer steps (Prepend, Replace, NFC, ...) to s into out, up to the size limit. */
static int normalize_steps(const lp_tokenizer *t, const char *s, size_t n, sbuf *out, sbuf *tmp) {
    int rc;
    size_t limit = n > (SIZE_MAX - LP_TOK_NORM_SLACK) / LP_TOK_NORM_FACTOR ? SIZE_MAX
                                                                          : n * LP_TOK_NORM_FACTOR + LP_TOK_NORM_SLACK;
    out->n = 0;
    if ((rc = lp_tok_sbuf_add(out, s, n))) return rc;
    for (int k = 0; k < t->n_norm; k++) {
        const norm_step *st = &t->norm[k];
        const char *a = blob_at(t, st->a_off), *b = blob_at(t, st->b_off);
        tmp->n = 0;
        if (st->op == NORM_PREPEND) {
            if (out->n == 0) continue;
            if ((rc = lp_tok_sbuf_add(tmp, a, st->a_len)) || (rc = lp_tok_sbuf_add(tmp, out->s, out->n))) return rc;
        } else if (st->op == NORM_PRECOMPILED) {
            if ((rc = lp_tok_precompiled_apply(t, out->s, out->n, tmp))) return rc;
        } else if (st->op == NORM_NFC) {
            if ((rc = nfc_append(out->s, out->n, tmp))) return rc;
        } else if (st->op == NORM_STRIP) {
            size_t a0 = 0, b0 = out->n, k;
            while (st->left && a0 < b0 && (k = space_at(out->s + a0, b0 - a0)) > 0) a0 += k;
            while (st->right && b0 > a0 && (k = space_before(out->s + a0, b0 - a0)) > 0) b0 -= k;
            if ((rc = lp_tok_sbuf_add(tmp, out->s + a0, b0 - a0))) return rc;
        } else if (st->op == NORM_REPLACE_RE) {
            if ((rc = replace_regex(t, st, out, tmp, n, limit))) return rc;
        } else {
            for (size_t i = 0; i < out->n;) {
                if (out->n - i >= st->a_len && memcmp(out->s + i, a, st->a_len) == 0) {
                    rc = lp_tok_sbuf_add(tmp, b, st->b_len), i += st->a_len;
                } else {
                    rc = lp_tok_sbuf_add(tmp, out->s + i, 1), i++;
                }
                if (rc) return rc;
                if (tmp->n > limit) return norm_too_long(t, n, limit);
            }
        }
        if (tmp->n > limit) return norm_too_long(t, n, limit);
        if ((rc = lp_tok_sbuf_add(tmp, "", 0))) return rc; /* tmp->s non-NULL even when empty */
        sbuf swap = *out;
        *out = *tmp, *tmp = swap;
    }
    return LP_OK;
}

/* One word of a SentencePiece-style tokenizer: Unigram's Viterbi search or BPE merges. */
static int encode_spiece_piece(const lp_tokenizer *t, const char *s, size_t n, bpe_work *w, ivec *out) {
    return t->kind == LP_TOK_UNIGRAM ? lp_tok_unigram_encode_word(t, s, n, out) : encode_spiece_word(t, s, n, w, out);
}

/* Metaspace (pre_tokenizers/metaspace.rs) on one piece: spaces become the replacement, which
 * is prepended (scheme permitting) unless the piece then starts with it; with split, each
 * word starts at a replacement character. */
static int metaspace_encode(const lp_tokenizer *t, const char *s, size_t n, bool at_start, bpe_work *w, ivec *out,
                            sbuf *tmp) {
    const char *ms = blob_at(t, t->ms_off);
    size_t ml = t->ms_len;
    int rc = LP_OK;
    tmp->n = 0;
    bool starts = n > 0 && (s[0] == ' ' || (n >= ml && memcmp(s, ms, ml) == 0));
    bool prepend = t->metaspace_prepend == PREPEND_ALWAYS || (t->metaspace_prepend == PREPEND_FIRST && at_start);
    if (prepend && !starts && (rc = lp_tok_sbuf_add(tmp, ms, ml))) return rc;
    for (size_t i = 0; i < n && !rc; i++)
        rc = s[i] == ' ' ? lp_tok_sbuf_add(tmp, ms, ml) : lp_tok_sbuf_add(tmp, s + i, 1);
    if (rc || tmp->n == 0) return rc;
    if (!t->metaspace_split || ml == 0) return encode_spiece_piece(t, tmp->s, tmp->n, w, out);
    size_t start = 0;
    for (size_t i = 1; i <= tmp->n && !rc; i++) {
        if (i < tmp->n && !(tmp->n - i >= ml && memcmp(tmp->s + i, ms, ml) == 0)) continue;
        rc = encode_spiece_piece(t, tmp->s + start, i - start, w, out);
        start = i;
    }
    return rc;
}

static int encode_spiece(const lp_tokenizer *t, const char *s, size_t n, bool at_start, bpe_work *w, ivec *out) {
    sbuf norm = {0}, tmp = {0};
    int rc = normalize_steps(t, s, n, &norm, &tmp);
    if (rc || norm.n == 0) goto done;
    if (t->whitespace_split) { /* WhitespaceSplit: words between White_Space, each on its own */
        size_t i = 0, k;
        while (i < norm.n && !rc) {
            while (i < norm.n && (k = space_at(norm.s + i, norm.n - i)) > 0) i += k;
            size_t a = i;
            while (i < norm.n && space_at(norm.s + i, norm.n - i) == 0) i++;
            if (i == a) break;
            /* a word after the first no longer starts the text (PrependScheme::First) */
            rc = t->metaspace ? metaspace_encode(t, norm.s + a, i - a, at_start && a == 0, w, out, &tmp)
                              : encode_spiece_piece(t, norm.s + a, i - a, w, out);
        }
    } else if (t->metaspace) {
        rc = metaspace_encode(t, norm.s, norm.n, at_start, w, out, &tmp);
    } else {
        rc = encode_spiece_piece(t, norm.s, norm.n, w, out);
    }
done:
    free(norm.s);
    free(tmp.s);
    return rc;
}

/* llama2.c run.c encode(): a dummy prefix " " (unless no_dummy_prefix), each code point
 * (up to 4 bytes, grouped the way run.c groups them, stray continuation bytes included)
 * looked up whole or else as byte tokens (byte + 3), then greedy merges by score. BOS
 * takes part in the merging, as it does in run.c. */
static int encode_llama2c(const lp_tokenizer *t, const char *s, size_t len, bool add_bos, bpe_work *w,
                          ivec *out) {
    int rc = bpe_work_reserve(w, len + 2);
    if (rc) return rc;
    size_t n = 0;
    if (add_bos && t->bos >= 0) w->id[n++] = t->bos;
    if (len > 0 && !t->no_dummy_prefix) {
        int sp = lp_tok_piece_find(t, " ", 1);
        if (sp < 0) sp = t->byte_sym[' '];
        if (sp < 0) return lp_error(LP_EFORMAT, "%s: no token for the dummy prefix \" \"", t->what);
        w->id[n++] = sp;
    }
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) start = i;
        size_t k = i + 1 - start;
        if (i + 1 < len && ((unsigned char)s[i + 1] & 0xC0) == 0x80 && k < 4) continue;
        int id = lp_tok_piece_find(t, s + start, k);
        if (id >= 0) {
            w->id[n++] = id;
        } else {
            for (size_t j = start; j <= i; j++) {
                int b = t->byte_sym[(unsigned char)s[j]];
                if (b < 0)
                    return lp_error(LP_EFORMAT, "%s: no token for byte 0x%02X (the vocabulary has %d tokens)",
                                    t->what, (unsigned char)s[j], t->n_vocab);
                w->id[n++] = b;
            }
        }
        start = i + 1;
    }
    size_t m = bpe_merge(t, w, n);
    for (size_t i = 0; i < m; i++)
        if ((rc = lp_ivec_push(out, w->id[i]))) return rc;
    return LP_OK;
}

static int added_at(const lp_tokenizer *t, const char *s, size_t n);

/* llama2.c's encode on a text that may hold added tokens (a GGUF's control, user-defined and
 * unknown tokens: llama.cpp's tokenize with parse_special): each found whole, and each
 * stretch between them encoded on its own, with its own dummy prefix, as llama.cpp's SPM
 * session prefixes every stretch that follows a special token or starts the text. */
static int encode_llama2c_added(const lp_tokenizer *t, const char *text, size_t len, bool add_bos, bpe_work *w,
                                ivec *out) {
    if (t->n_added == 0) return encode_llama2c(t, text, len, add_bos, w, out);
    int rc = add_bos && t->bos >= 0 ? lp_ivec_push(out, t->bos) : LP_OK;
    size_t seg = 0;
    for (size_t i = 0; i <= len && !rc; i++) {
        int k = i < len ? added_at(t, text + i, len - i) : -1;
        if (k < 0 && i < len) continue;
        rc = encode_llama2c(t, text + seg, i - seg, false, w, out);
        if (rc || k < 0) break;
        rc = lp_ivec_push(out, t->added[k].id);
        i += t->added[k].len;
        seg = i--;
    }
    return rc;
}

/* The longest added token at s[0..n), or -1 (its index in t->added). */
static int added_at(const lp_tokenizer *t, const char *s, size_t n) {
    unsigned char c = (unsigned char)s[0];
    for (int k = t->added_first[c]; k < t->added_first[c + 1]; k++) {
        const added_tok *a = &t->added[k];
        if (a->len <= n && memcmp(blob_at(t, a->off), s, a->len) == 0) return k;
    }
    return -1;
}

/* The length of the White_Space character that ends s[0..n), or 0. */
static size_t space_before(const char *s, size_t n) {
    size_t k = 1;
    while (k < n && k < 4 && ((unsigned char)s[n - k] & 0xC0) == 0x80) k++;
    int len = utf8_len((const unsigned char *)s + n - k, k);
    if (len != (int)k) return 0;
    uint32_t c = (unsigned char)s[n - k];
    if (k > 1) {
        c &= 0x3Fu >> (k - 1);
        for (size_t j = 1; j < k; j++) c = (c << 6) | ((unsigned char)s[n - k + j] & 0x3Fu);
    }
    return lp_tok_is_white_space(c) ? k : 0;
}

/* The length of the White_Space character at s[0..n), or 0. */
static size_t space_at(const char *s, size_t n) {
    int k = utf8_len((const unsigned char *)s, n);
    return k > 0 && space_before(s, (size_t)k) == (size_t)k ? (size_t)k : 0;
}

/* Encodes text without special tokens around it: the added tokens found in it, and each
 * stretch between them by the tokenizer's own kind. */
static int encode_text(const lp_tokenizer *t, const char *text, size_t len, bpe_work *w, ivec *out) {
    int rc = LP_OK;
    size_t seg = 0;
    for (size_t i = 0; i <= len && !rc; i++) {
        int k = i < len ? added_at(t, text + i, len - i) : -1;
        if (k < 0 && i < len) continue;
        const char *s = text + seg;
        size_t end = i, step;
        if (k >= 0 && t->added[k].lstrip)
            while (end > seg && (step = space_before(s, end - seg)) > 0) end -= step;
        if (t->kind == LP_TOK_BYTE_BPE) rc = encode_byte_level(t, s, end - seg, w, out);
        else if (t->kind == LP_TOK_WORDPIECE) rc = lp_tok_wordpiece_encode(t, s, end - seg, out);
        else if (t->spm_norm) rc = lp_tok_unigram_encode_spm(t, s, end - seg, out);
        else rc = encode_spiece(t, s, end - seg, seg == 0, w, out);
        if (rc || k < 0) break;
        rc = lp_ivec_push(out, t->added[k].id);
        i += t->added[k].len;
        if (t->added[k].rstrip)
            while (i < len && (step = space_at(text + i, len - i)) > 0) i += step;
        seg = i--;
    }
    return rc;
}

/* Puts the ids of seqs[0] (and seqs[1] for a pair) into ids/types as the template (or, with
 * none, BOS when add_special and the tokenizer adds it, then A, then B with type 1) says. */
static int assemble(const lp_tokenizer *t, const ivec *seqs, int n_seqs, bool add_special, int *ids, int *types,
                    int cap, int *n) {
    size_t need = 0;
    const int which = n_seqs - 1;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
#define PUT(id_, type_)                                                                                                \
    do {                                                                                                               \
        if (pass == 1) {                                                                                               \
            ids[at] = (id_);                                                                                           \
            if (types) types[at] = (type_);                                                                            \
        }                                                                                                              \
        at++;                                                                                                          \
    } while (0)
        if (t->has_template && t->n_tmpl[which] > 0) {
            for (int p = 0; p < t->n_tmpl[which]; p++) {
                const tmpl_piece *pc = &t->tmpl[which][p];
                if (pc->seq < 0) {
                    if (add_special)
                        for (int j = 0; j < pc->n_ids; j++) PUT(t->tmpl_ids[pc->id_at + j], pc->type_id);
                } else if (pc->seq < n_seqs) {
                    for (size_t j = 0; j < seqs[pc->seq].n; j++) PUT(seqs[pc->seq].v[j], pc->type_id);
                }
            }
        } else {
            if (add_special && t->bos >= 0) PUT(t->bos, 0);
            for (int s = 0; s < n_seqs; s++)
                for (size_t j = 0; j < seqs[s].n; j++) PUT(seqs[s].v[j], s);
        }
#undef PUT
        need = at;
        if (pass == 0 && need > (size_t)(cap > 0 ? cap : 0)) {
            *n = need > INT_MAX ? INT_MAX : (int)need;
            return lp_error(LP_ERANGE, "%s: encoding needs %zu ids, buffer holds %d", t->what, need, cap);
        }
    }
    *n = (int)need;
    return LP_OK;
}

int lp_tokenizer_encode(const lp_tokenizer *t, const char *text, size_t len, bool add_bos, int *ids, int cap,
                        int *n) {
    assert(t && n && (text || len == 0) && (ids || cap <= 0));
    *n = 0;
    if (t->kind != LP_TOK_LLAMA2C) return lp_tokenizer_encode_pair(t, text, len, NULL, 0, add_bos, ids, NULL, cap, n);
    ivec out = {0};
    bpe_work w = {0};
    int rc = encode_llama2c_added(t, text, len, add_bos, &w, &out);
    if (!rc) {
        if (out.n > (size_t)(cap > 0 ? cap : 0)) {
            *n = out.n > INT_MAX ? INT_MAX : (int)out.n;
            rc = lp_error(LP_ERANGE, "%s: encoding needs %zu ids, buffer holds %d", t->what, out.n, cap);
        } else {
            if (out.n) memcpy(ids, out.v, out.n * sizeof *ids);
            *n = (int)out.n;
        }
    }
    free(out.v);
    bpe_work_free(&w);
    return rc;
}

int lp_tokenizer_encode_pair(const lp_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                             bool add_special, int *ids, int *types, int cap, int *n) {
    assert(t && n && (a || alen == 0) && (ids || cap <= 0));
    ivec seqs[2] = {{0}, {0}};
    bpe_work w = {0};
    int n_seqs = b ? 2 : 1, rc = LP_OK;
    *n = 0;
    if (t->kind == LP_TOK_LLAMA2C) {
        for (int s = 0; s < n_seqs && !rc; s++)
            rc = encode_llama2c_added(t, s ? b : a, s ? blen : alen, add_special && s == 0, &w, &seqs[s]);
        add_special = false; /* BOS is in already */
    } else {
        for (int s = 0; s < n_seqs && !rc; s++) rc = encode_text(t, s ? b : a, s ? blen : alen, &w, &seqs[s]);
    }
    if (!rc) rc = assemble(t, seqs, n_seqs, add_special, ids, types, cap, n);
    free(seqs[0].v);
    free(seqs[1].v);
    bpe_work_free(&w);
    return rc;
}

/* ---------------------------------------------------------------- decoding and lookups */

lp_tokenizer_kind lp_tokenizer_kind_of(const lp_tokenizer *t) { return t->kind; }

const char *lp_tokenizer_kind_name(const lp_tokenizer *t) {
    switch (t->kind) {
    case LP_TOK_BYTE_BPE: return "gpt2-bpe";
    case LP_TOK_SPIECE_BPE: return "sentencepiece-bpe";
    case LP_TOK_LLAMA2C: return "llama2c";
    case LP_TOK_WORDPIECE: return "wordpiece";
    case LP_TOK_UNIGRAM: return "unigram";
    }
    return "?";
}

int lp_tokenizer_vocab_size(const lp_tokenizer *t) { return t->n_vocab; }
int lp_tokenizer_bos(const lp_tokenizer *t) { return t->bos; }
int lp_tokenizer_eos(const lp_tokenizer *t) { return t->eos; }
bool lp_tokenizer_adds_bos(const lp_tokenizer *t) { return t->adds_bos; }

int lp_tokenizer_special(const lp_tokenizer *t, lp_special which) {
    switch (which) {
    case LP_SPECIAL_BOS: return t->bos;
    case LP_SPECIAL_EOS: return t->eos;
    case LP_SPECIAL_UNK: return t->special[which] >= 0 ? t->special[which] : t->unk;
    case LP_SPECIAL_CLS: case LP_SPECIAL_SEP: case LP_SPECIAL_MASK: case LP_SPECIAL_PAD: return t->special[which];
    case LP_SPECIAL_COUNT: break;
    }
    return -1;
}

lp_special lp_tokenizer_role(const lp_tokenizer *t, int id) {
    for (int k = 0; id >= 0 && k < LP_SPECIAL_COUNT; k++)
        if (lp_tokenizer_special(t, (lp_special)k) == id) return (lp_special)k;
    return LP_SPECIAL_COUNT;
}

void lp_tokenizer_segments(const lp_tokenizer *t, const int *ids, const int *types, int n, unsigned char *seg) {
    int i = 0, sep = lp_tokenizer_special(t, LP_SPECIAL_SEP);
    if (types) {
        for (i = 0; i < n; i++) seg[i] = types[i] != 0;
        return;
    }
    for (int k = 0; k < n; k++) seg[k] = 0;
    while (i < n && (sep < 0 || ids[i] != sep)) i++;
    while (i < n && ids[i] == sep) i++;
    for (; i < n; i++) seg[i] = 1;
}

const char *lp_special_name(lp_special which) {
    static const char *const names[LP_SPECIAL_COUNT] = {"cls", "sep", "mask", "pad", "unk", "bos", "eos"};
    return (unsigned)which < LP_SPECIAL_COUNT ? names[which] : NULL;
}

/* The tokens decode leaves out: BOS and EOS, and for WordPiece the template's [CLS] and
 * [SEP] and [PAD] too. */
static bool decode_skips(const lp_tokenizer *t, int id) {
    if (id == t->bos || id == t->eos) return true;
    return t->kind == LP_TOK_WORDPIECE && (id == t->special[LP_SPECIAL_CLS] || id == t->special[LP_SPECIAL_SEP] ||
                                          id == t->special[LP_SPECIAL_PAD]);
}

const char *lp_tokenizer_token_bytes(const lp_tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab || t->tok[id].b_off == NONE) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->tok[id].b_len;
    return blob_at(t, t->tok[id].b_off);
}

const char *lp_tokenizer_token_piece(const lp_tokenizer *t, int id) {
    if (id < 0 || id >= t->n_vocab || t->tok[id].p_off == NONE) return NULL;
    return blob_at(t, t->tok[id].p_off);
}

int lp_tokenizer_piece_to_id(const lp_tokenizer *t, const char *piece) {
    return piece ? lp_tok_piece_find(t, piece, strlen(piece)) : -1;
}

int lp_tokenizer_decode(const lp_tokenizer *t, const int *ids, int n, char *buf, size_t cap, size_t *len) {
    assert(t && len && (ids || n <= 0) && (buf || cap == 0));
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return lp_error(LP_EINVAL, "%s: token id %d (at %d) is outside the vocabulary of %d", t->what, ids[i], i,
                            t->n_vocab);
    if (t->kind == LP_TOK_WORDPIECE) {
        sbuf out = {0};
        int rc = lp_tok_wordpiece_decode(t, ids, n, decode_skips, &out);
        if (!rc && cap < out.n + 1) {
            *len = out.n + 1;
            rc = lp_error(LP_ERANGE, "%s: decoded text needs %zu bytes, buffer holds %zu", t->what, out.n + 1, cap);
        } else if (!rc) {
            if (out.n) memcpy(buf, out.s, out.n);
            buf[out.n] = '\0';
            *len = out.n;
        }
        free(out.s);
        return rc;
    }
    size_t need = 0;
    bool first = true, strip = false;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab)
            return lp_error(LP_EINVAL, "%s: token id %d (at %d) is outside the vocabulary of %d", t->what, id, i,
                            t->n_vocab);
        if (id == t->bos || id == t->eos) continue;
        size_t k;
        const char *b = lp_tokenizer_token_bytes(t, id, &k);
        if (!b || k == 0) continue;
        if (first && t->strip_leading_space && b[0] == ' ') strip = true;
        first = false;
        need += k;
    }
    if (strip) need--;
    if (cap < need + 1) {
        *len = need + 1;
        return lp_error(LP_ERANGE, "%s: decoded text needs %zu bytes, buffer holds %zu", t->what, need + 1, cap);
    }
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] == t->bos || ids[i] == t->eos) continue;
        size_t k;
        const char *b = lp_tokenizer_token_bytes(t, ids[i], &k);
        if (!b || k == 0) continue;
        if (strip) b++, k--, strip = false;
        memcpy(buf + at, b, k);
        at += k;
    }
    buf[at] = '\0';
    *len = at;
    return LP_OK;
}
