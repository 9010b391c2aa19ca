/* WordPiece, as Hugging Face's tokenizers run BERT: the BertNormalizer (normalizers/bert.rs),
 * the BertPreTokenizer (pre_tokenizers/bert.rs), the WordPiece model (models/wordpiece) and
 * the WordPiece decoder (decoders/wordpiece.rs). The loaders (tokenizer_load.c) set the
 * options; this file runs them on one stretch of text between added tokens.
 *
 * Where Hugging Face's two BERT tokenizers differ, loupe follows tokenizers (BertTokenizerFast,
 * which is also what transformers builds from a vocab.txt by default), not the slow Python
 * BasicTokenizer: no NFC before splitting, accents stripped before lower-casing, each
 * character lower-cased on its own (Σ is always σ; İ is i + U+0307), and CJK Extension C/D
 * from U+2B920 (BasicTokenizer's range starts at U+2B820). Text that is not UTF-8 has no
 * reference: each invalid byte is read as U+FFFD, which clean_text drops. */
#include "tokenizers/tokenizer_impl.h"

#include "loupe/error.h"

#include <utf8proc.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool lp_tok_is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* tokenizers' is_control: the "Other" categories (Cc, Cf, Cs, Co, Cn) except tab, LF, CR. */
static bool is_control(uint32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: return true;
    default: return false;
    }
}

/* BERT's punctuation: ASCII punctuation (33-47, 58-64, 91-96, 123-126) and the P* categories. */
static bool is_punct(uint32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS: case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF: case UTF8PROC_CATEGORY_PO: return true;
    default: return false;
    }
}

/* The CJK Unified Ideographs blocks, as normalizers/bert.rs lists them. */
static bool is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* A growing vector of code points. */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} cpvec;

static int cp_push(cpvec *a, uint32_t c) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return lp_error(LP_ENOMEM, "tokenizer: out of memory for %zu characters", cap);
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = c;
    return LP_OK;
}

/* s[0..n) as code points; each byte that does not start a valid UTF-8 sequence is U+FFFD. */
static int decode_utf8(const char *s, size_t n, cpvec *out) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0) c = 0xFFFD, k = 1;
        int rc = cp_push(out, (uint32_t)c);
        if (rc) return rc;
        i += (size_t)k;
    }
    return LP_OK;
}

static int encode_utf8(const uint32_t *c, size_t n, sbuf *out) {
    for (size_t i = 0; i < n; i++) {
        utf8proc_uint8_t u[4];
        utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)c[i], u);
        int rc = lp_tok_sbuf_add(out, u, (size_t)k);
        if (rc) return rc;
    }
    return LP_OK;
}

/* strip_accents: NFD (canonical decomposition and ordering), then no Mn characters. */
static int strip_accents(cpvec *a) {
    sbuf u = {0};
    int rc = encode_utf8(a->v, a->n, &u);
    if (rc || u.n == 0) goto done;
    utf8proc_ssize_t need = utf8proc_decompose((const utf8proc_uint8_t *)u.s, (utf8proc_ssize_t)u.n, NULL, 0,
                                               UTF8PROC_DECOMPOSE);
    if (need < 0) {
        rc = lp_error(LP_EINVAL, "tokenizer: NFD failed: %s", utf8proc_errmsg(need));
        goto done;
    }
    utf8proc_int32_t *d = malloc(((size_t)need + 1) * sizeof *d);
    if (!d) {
        rc = lp_error(LP_ENOMEM, "tokenizer: out of memory for %zd characters", (ssize_t)need);
        goto done;
    }
    need = utf8proc_decompose((const utf8proc_uint8_t *)u.s, (utf8proc_ssize_t)u.n, d, need, UTF8PROC_DECOMPOSE);
    a->n = 0;
    for (utf8proc_ssize_t i = 0; i < need && !rc; i++)
        if (utf8proc_category(d[i]) != UTF8PROC_CATEGORY_MN) rc = cp_push(a, (uint32_t)d[i]);
    free(d);
done:
    free(u.s);
    return rc;
}

/* The BertNormalizer: clean_text, handle_chinese_chars, strip_accents, lowercase, in that order. */
static int bert_normalize(const lp_tokenizer *t, cpvec *a, cpvec *tmp) {
    int rc = LP_OK;
    tmp->n = 0;
    for (size_t i = 0; i < a->n && !rc; i++) {
        uint32_t c = a->v[i];
        if (t->bn_clean && (c == 0 || c == 0xFFFD || is_control(c))) continue;
        if (t->bn_clean && lp_tok_is_white_space(c)) c = ' ';
        if (t->bn_chinese && is_chinese(c)) {
            if (!(rc = cp_push(tmp, ' ')) && !(rc = cp_push(tmp, c))) rc = cp_push(tmp, ' ');
        } else {
            rc = cp_push(tmp, c);
        }
    }
    cpvec swap = *a;
    *a = *tmp, *tmp = swap;
    if (!rc && t->bn_strip) rc = strip_accents(a);
    if (!rc && t->bn_lower) {
        tmp->n = 0;
        for (size_t i = 0; i < a->n && !rc; i++) {
            uint32_t c = a->v[i];
            if (c == 0x130) { /* İ: the one full lower-case mapping longer than one character */
                if (!(rc = cp_push(tmp, 'i'))) rc = cp_push(tmp, 0x307);
            } else {
                rc = cp_push(tmp, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c));
            }
        }
        swap = *a;
        *a = *tmp, *tmp = swap;
    }
    return rc;
}

/* Greedy longest-match-first WordPiece of one word w[0..n) (code points); the whole word is
 * [UNK] when it is too long or some part of it matches nothing. */
static int wordpiece_word(const lp_tokenizer *t, const uint32_t *w, size_t n, sbuf *bytes, size_t *at, sbuf *piece,
                          lp_ivec *out) {
    if (n == 0) return LP_OK;
    bool bad = n > (size_t)t->wp_max_chars;
    int rc = LP_OK;
    size_t mark = out->n;
    if (!bad) {
        bytes->n = 0;
        for (size_t i = 0; i < n; i++) {
            at[i] = bytes->n;
            if ((rc = encode_utf8(w + i, 1, bytes))) return rc;
        }
        at[n] = bytes->n;
        const char *prefix = t->blob + t->wp_prefix_off;
        for (size_t start = 0; start < n && !bad;) {
            size_t end = n;
            int id = -1;
            size_t plen = start > 0 ? t->wp_prefix_len : 0;
            for (; end > start; end--) {
                size_t len = plen + at[end] - at[start];
                if (len > t->max_piece_len) continue;
                piece->n = 0;
                if ((rc = lp_tok_sbuf_add(piece, prefix, plen)) ||
                    (rc = lp_tok_sbuf_add(piece, bytes->s + at[start], at[end] - at[start])))
                    return rc;
                if ((id = lp_tok_piece_find(t, piece->s, piece->n)) >= 0) break;
            }
            if (id < 0) bad = true;
            else if ((rc = lp_ivec_push(out, id))) return rc;
            start = end;
        }
    }
    if (bad) {
        out->n = mark;
        if (t->unk < 0) {
            sbuf word = {0};
            rc = encode_utf8(w, n > 40 ? 40 : n, &word);
            rc = lp_error(LP_EFORMAT, "%s: no WordPiece tokens for \"%s%s\" and the vocabulary has no unknown token",
                          t->what, rc ? "" : word.s ? word.s : "", n > 40 ? "..." : "");
            free(word.s);
            return rc;
        }
        rc = lp_ivec_push(out, t->unk);
    }
    return rc;
}

int lp_tok_wordpiece_encode(const lp_tokenizer *t, const char *s, size_t n, lp_ivec *out) {
    cpvec a = {0}, tmp = {0};
    sbuf bytes = {0}, piece = {0};
    size_t *at = NULL;
    int rc = decode_utf8(s, n, &a);
    if (!rc && t->bert_norm) rc = bert_normalize(t, &a, &tmp);
    if (!rc && a.n > 0 && !(at = malloc((a.n + 1) * sizeof *at)))
        rc = lp_error(LP_ENOMEM, "tokenizer: out of memory for %zu characters", a.n);
    if (rc || a.n == 0) goto done;
    if (!t->bert_pretok) {
        rc = wordpiece_word(t, a.v, a.n, &bytes, at, &piece, out);
        goto done;
    }
    /* the BertPreTokenizer: whitespace ends a word and is dropped; punctuation is a word */
    size_t start = 0;
    for (size_t i = 0; i <= a.n && !rc; i++) {
        bool space = i < a.n && lp_tok_is_white_space(a.v[i]), punct = i < a.n && !space && is_punct(a.v[i]);
        if (i < a.n && !space && !punct) continue;
        rc = wordpiece_word(t, a.v + start, i - start, &bytes, at, &piece, out);
        if (!rc && punct) rc = wordpiece_word(t, a.v + i, 1, &bytes, at, &piece, out);
        start = i + 1;
    }
done:
    free(a.v);
    free(tmp.v);
    free(bytes.s);
    free(piece.s);
    free(at);
    return rc;
}

/* decoders/wordpiece.rs cleanup(): each replacement over the whole token, in this order. */
static const char *const CLEANUP[][2] = {{" .", "."},       {" ?", "?"},    {" !", "!"},   {" ,", ","},
                                         {" ' ", "'"},      {" n't", "n't"}, {" 'm", "'m"}, {" do not", " don't"},
                                         {" 's", "'s"},     {" 've", "'ve"}, {" 're", "'re"}};

static int replace_all(sbuf *s, const char *from, const char *to, sbuf *tmp) {
    size_t nf = strlen(from), nt = strlen(to);
    if (s->n < nf) return LP_OK;
    tmp->n = 0;
    int rc = LP_OK;
    for (size_t i = 0; i < s->n && !rc;) {
        if (s->n - i >= nf && memcmp(s->s + i, from, nf) == 0) rc = lp_tok_sbuf_add(tmp, to, nt), i += nf;
        else rc = lp_tok_sbuf_add(tmp, s->s + i, 1), i++;
    }
    if (!rc) rc = lp_tok_sbuf_add(tmp, "", 0);
    sbuf swap = *s;
    *s = *tmp, *tmp = swap;
    return rc;
}

int lp_tok_wordpiece_decode(const lp_tokenizer *t, const int *ids, int n, bool (*skip)(const lp_tokenizer *, int),
                            sbuf *out) {
    sbuf tok = {0}, tmp = {0};
    const char *prefix = t->blob + t->wp_prefix_off;
    size_t plen = t->wp_prefix_len;
    bool first = true;
    int rc = lp_tok_sbuf_add(out, "", 0);
    for (int i = 0; i < n && !rc; i++) {
        const char *p = lp_tokenizer_token_piece(t, ids[i]);
        if (!p || skip(t, ids[i])) continue;
        size_t len = t->tok[ids[i]].p_len;
        tok.n = 0;
        if (!first && plen > 0 && len >= plen && memcmp(p, prefix, plen) == 0) rc = lp_tok_sbuf_add(&tok, p + plen, len - plen);
        else if (!first && !(rc = lp_tok_sbuf_add(&tok, " ", 1))) rc = lp_tok_sbuf_add(&tok, p, len);
        else if (first) rc = lp_tok_sbuf_add(&tok, p, len);
        first = false;
        if (t->wp_cleanup)
            for (size_t k = 0; k < sizeof CLEANUP / sizeof CLEANUP[0] && !rc; k++)
                rc = replace_all(&tok, CLEANUP[k][0], CLEANUP[k][1], &tmp);
        if (!rc) rc = lp_tok_sbuf_add(out, tok.s, tok.n);
    }
    free(tok.s);
    free(tmp.s);
    return rc;
}
