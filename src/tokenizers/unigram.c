/* SentencePiece Unigram, as T5 uses it: the Viterbi segmentation, the precompiled charsmap
 * normaliser and sentencepiece's own whitespace rules. The loaders (tokenizer_load.c for
 * tokenizer.json, spiece_model.c for spiece.model) fill the tables; tokenizer.c runs the
 * tokenizer.json pipeline around lp_tok_unigram_encode_word.
 *
 * Exactness, from the two references' code:
 *  - the search (tokenizers models/unigram/model.rs encode_optimized, after sentencepiece
 *    unigram_model.cc EncodeOptimized): best path by summed score, positions visited one
 *    character at a time; a candidate replaces the best ending at a position only when
 *    strictly higher (ties keep the first found: the shorter piece from the earlier start);
 *    a character no single piece covers gets an <unk> node scored min_score - 10
 *    (K_UNK_PENALTY / kUnkPenalty); runs of <unk> come out as one (fuse_unk; sentencepiece
 *    merges them in PopulateSentencePieceText). Scores are summed in double, as tokenizers
 *    does (sentencepiece sums floats: a tie broken differently by rounding is possible in
 *    principle, and not seen in the fixtures).
 *  - tokenizers' lattice holds every piece of model.vocab; sentencepiece's holds only
 *    normal (and user-defined) pieces, so spiece.model's loader leaves the others out.
 *  - the charsmap (spm_precompiled's DoubleArray, sentencepiece's Darts): sentencepiece
 *    (normalizer.cc NormalizePrefix) takes the longest key at each position; tokenizers
 *    (normalizers/precompiled.rs) looks up each extended grapheme cluster of under 6 bytes
 *    whole, taking the first (shortest) key that prefixes it and dropping the rest of the
 *    cluster, and otherwise each character alone. */
#include "tokenizers/tokenizer_impl.h"

#include "loupe/error.h"

#include <utf8proc.h>

#include <assert.h>
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define UNK_PENALTY 10.0
#define SPACE_SYMBOL LP_TOK_SPIECE_SPACE

/* ---------------------------------------------------------------- base64 */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* No library loupe links decodes base64 (jansson, PCRE2, utf8proc, SQLite, OpenBLAS), and
 * one field of tokenizer.json needs it: a strict decoder (tokenizers uses the base64 crate's
 * STANDARD engine, which also wants padding and nothing else) rather than a new package. */
int lp_tok_base64_decode_new(const char *s, size_t n, unsigned char **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    if (n % 4 != 0) return -1;
    unsigned char *buf = malloc(n / 4 * 3 + 1);
    if (!buf) return -1;
    size_t at = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0, pad++;
            } else if (pad > 0 || (v[k] = b64_value(c)) < 0) {
                free(buf);
                return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        buf[at++] = (unsigned char)(w >> 16);
        if (pad < 2) buf[at++] = (unsigned char)(w >> 8);
        if (pad < 1) buf[at++] = (unsigned char)w;
    }
    *out = buf, *out_len = at;
    return 0;
}

/* ---------------------------------------------------------------- the precompiled charsmap */

int lp_tok_charsmap_set(lp_tokenizer *t, const void *blob, size_t n) {
    const unsigned char *p = blob;
    if (n < 4) return lp_error(LP_EFORMAT, "%s: precompiled_charsmap of %zu bytes is shorter than its 4-byte header",
                               t->what, n);
    size_t trie = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
    /* sentencepiece refuses trie_size >= the blob's size (DecodePrecompiledCharsMap) */
    if (trie >= n - 4 + 1 || trie % 4 != 0)
        return lp_error(LP_EFORMAT, "%s: precompiled_charsmap: trie of %zu bytes in a blob of %zu (it must be a "
                        "multiple of 4 inside the blob)", t->what, trie, n);
    const unsigned char *str = p + 4 + trie;
    size_t str_len = n - 4 - trie;
    for (size_t i = 0; i < str_len;) {
        int k = lp_tok_utf8_len(str + i, str_len - i);
        if (k == 0)
            return lp_error(LP_EFORMAT, "%s: precompiled_charsmap: its normalised strings are not UTF-8 (byte %zu)",
                            t->what, 4 + trie + i);
        i += (size_t)k;
    }
    free(t->cm_units);
    t->cm_units = NULL, t->cm_n = trie / 4;
    if (t->cm_n > 0) {
        if (!(t->cm_units = malloc(t->cm_n * sizeof *t->cm_units)))
            return lp_error(LP_ENOMEM, "%s: out of memory for the charsmap", t->what);
        for (size_t i = 0; i < t->cm_n; i++) {
            const unsigned char *u = p + 4 + 4 * i;
            t->cm_units[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
        }
    }
    int rc = lp_tok_blob_add(t, str, str_len, &t->cm_str_off);
    t->cm_str_len = rc ? 0 : (uint32_t)str_len;
    return rc;
}

/* Darts units: bit 8 has_leaf, bits 0-7 (and 31) the label, the rest an offset. */
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

/* Walks the trie along s[0..n); *first and *longest get the value offset and key length of
 * the shortest and the longest key that prefix s (length 0: none). An index outside the
 * array ends the walk (a malformed charsmap matches less; it never reads out of bounds). */
static void cm_search(const lp_tokenizer *t, const unsigned char *s, size_t n, size_t *first_len,
                      uint32_t *first_val, size_t *long_len, uint32_t *long_val) {
    *first_len = *long_len = 0;
    if (t->cm_n == 0) return;
    size_t node = unit_offset(t->cm_units[0]);
    for (size_t i = 0; i < n && s[i] != 0; i++) {
        node ^= s[i];
        if (node >= t->cm_n) return;
        uint32_t u = t->cm_units[node];
        if ((u & ((1u << 31) | 0xFFu)) != s[i]) return;
        node ^= unit_offset(u);
        if (node >= t->cm_n) return;
        if ((u >> 8) & 1u) {
            uint32_t v = t->cm_units[node] & ((1u << 31) - 1);
            if (v >= t->cm_str_len) continue; /* no string there: not a rule */
            if (*first_len == 0) *first_len = i + 1, *first_val = v;
            *long_len = i + 1, *long_val = v;
        }
    }
}

/* The normalised string at value offset v (up to its NUL). */
static const char *cm_string(const lp_tokenizer *t, uint32_t v, size_t *len) {
    const char *s = t->blob + t->cm_str_off + v;
    const char *end = memchr(s, 0, t->cm_str_len - v);
    *len = end ? (size_t)(end - s) : t->cm_str_len - v;
    return s;
}

static const char REPLACEMENT[] = "\xef\xbf\xbd"; /* U+FFFD */

/* The code point at s (an invalid byte reads as U+FFFD, one byte long). */
static int next_cp(const char *s, size_t n, int32_t *cp) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &c);
    if (k <= 0) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = c;
    return (int)k;
}

/* Appends the charsmap's rule for the character at s (its first key) or the character. */
static int precompiled_char(const lp_tokenizer *t, const char *s, size_t k, sbuf *out) {
    size_t fl, ll, len;
    uint32_t fv, lv;
    if (lp_tok_utf8_len((const unsigned char *)s, k) == 0) return lp_tok_sbuf_add(out, REPLACEMENT, 3);
    cm_search(t, (const unsigned char *)s, k, &fl, &fv, &ll, &lv);
    if (fl == 0) return lp_tok_sbuf_add(out, s, k);
    const char *r = cm_string(t, fv, &len);
    return lp_tok_sbuf_add(out, r, len);
}

int lp_tok_precompiled_apply(const lp_tokenizer *t, const char *s, size_t n, sbuf *out) {
    int rc = LP_OK;
    utf8proc_int32_t state = 0, prev = -1;
    size_t g = 0; /* the start of the current grapheme */
    for (size_t i = 0; i <= n && !rc;) {
        int32_t cp = 0;
        int k = i < n ? next_cp(s + i, n - i, &cp) : 0;
        bool brk = i == n || (prev >= 0 && utf8proc_grapheme_break_stateful(prev, cp, &state));
        if (brk && i > g) { /* the grapheme s[g..i) */
            size_t fl = 0, ll, len;
            uint32_t fv, lv;
            if (i - g < 6) cm_search(t, (const unsigned char *)s + g, i - g, &fl, &fv, &ll, &lv);
            if (fl > 0) {
                const char *r = cm_string(t, fv, &len);
                rc = lp_tok_sbuf_add(out, r, len);
            } else {
                for (size_t j = g; j < i && !rc;) {
                    int32_t c;
                    int kk = next_cp(s + j, i - j, &c);
                    rc = precompiled_char(t, s + j, (size_t)kk, out);
                    j += (size_t)kk;
                }
            }
            g = i;
        }
        if (i == n) break;
        prev = cp;
        i += (size_t)k;
    }
    return rc;
}

/* ---------------------------------------------------------------- sentencepiece's normaliser */

/* normalizer.cc Normalizer::NormalizePrefix without user-defined symbols (loupe splits
 * those off first, as added tokens): the longest rule, else one character as it is, else
 * (an invalid byte) U+FFFD for one byte. */
static const char *normalize_prefix(const lp_tokenizer *t, const char *s, size_t n, size_t *consumed, size_t *len) {
    size_t fl, ll;
    uint32_t fv, lv;
    cm_search(t, (const unsigned char *)s, n, &fl, &fv, &ll, &lv);
    if (ll > 0) {
        *consumed = ll;
        return cm_string(t, lv, len);
    }
    int k = lp_tok_utf8_len((const unsigned char *)s, n);
    if (k == 0) {
        *consumed = 1, *len = 3;
        return REPLACEMENT;
    }
    *consumed = *len = (size_t)k;
    return s;
}

/* normalizer.cc Normalizer::Normalize (treat_whitespace_as_suffix is refused at load). */
static int spm_normalize(const lp_tokenizer *t, const char *s, size_t n, sbuf *out) {
    int rc = LP_OK;
    size_t used, len;
    size_t limit = n > (SIZE_MAX - LP_TOK_NORM_SLACK) / LP_TOK_NORM_FACTOR ? SIZE_MAX
                                                                          : n * LP_TOK_NORM_FACTOR + LP_TOK_NORM_SLACK;
    out->n = 0;
    if (t->spm_remove_ws) { /* heading spaces */
        while (n > 0) {
            const char *p = normalize_prefix(t, s, n, &used, &len);
            if (!(len == 1 && p[0] == ' ')) break;
            s += used, n -= used;
        }
    }
    if (n == 0) return lp_tok_sbuf_add(out, "", 0);
    if (t->spm_dummy_prefix && (rc = lp_tok_sbuf_add(out, t->spm_escape_ws ? SPACE_SYMBOL : " ", t->spm_escape_ws ? 3 : 1)))
        return rc;
    bool prev_space = t->spm_remove_ws;
    while (n > 0 && !rc) {
        const char *p = normalize_prefix(t, s, n, &used, &len);
        if (prev_space)
            while (len > 0 && p[0] == ' ') p++, len--;
        if (len > 0) {
            for (size_t i = 0; i < len && !rc; i++)
                rc = t->spm_escape_ws && p[i] == ' ' ? lp_tok_sbuf_add(out, SPACE_SYMBOL, 3) : lp_tok_sbuf_add(out, p + i, 1);
            prev_space = p[len - 1] == ' ';
        }
        s += used, n -= used;
        if (!t->spm_remove_ws) prev_space = false;
        if (out->n > limit)
            return lp_error(LP_ERANGE, "%s: the charsmap makes more than %zu bytes of the text (the limit is %dx + %d)",
                            t->what, limit, LP_TOK_NORM_FACTOR, LP_TOK_NORM_SLACK);
    }
    if (t->spm_remove_ws) { /* trailing spaces */
        const char *sp = t->spm_escape_ws ? SPACE_SYMBOL : " ";
        size_t k = t->spm_escape_ws ? 3 : 1;
        while (out->n >= k && memcmp(out->s + out->n - k, sp, k) == 0) out->n -= k;
    }
    return rc;
}

int lp_tok_unigram_encode_spm(const lp_tokenizer *t, const char *s, size_t n, lp_ivec *out) {
    sbuf norm = {0};
    int rc = spm_normalize(t, s, n, &norm);
    if (!rc && norm.n > 0) rc = lp_tok_unigram_encode_word(t, norm.s, norm.n, out);
    free(norm.s);
    return rc;
}

/* ---------------------------------------------------------------- the lattice */

int lp_tok_unigram_alloc(lp_tokenizer *t) {
    t->ug_score = calloc((size_t)t->n_vocab, sizeof *t->ug_score);
    if (!t->ug_score) return lp_error(LP_ENOMEM, "%s: out of memory for %d scores", t->what, t->n_vocab);
    return LP_OK;
}

static uint64_t hash_key(uint64_t key) {
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 29);
}

/* The child of node along byte c, or -1. */
static int32_t trie_child(const lp_tokenizer *t, uint32_t node, unsigned char c) {
    uint64_t key = (uint64_t)node << 8 | c;
    for (uint32_t h = (uint32_t)hash_key(key) & t->ug_mask;; h = (h + 1) & t->ug_mask) {
        if (t->ug_key[h] == UINT64_MAX) return -1;
        if (t->ug_key[h] == key) return t->ug_child[h];
    }
}

int lp_tok_unigram_index(lp_tokenizer *t, bool (*in_lattice)(const lp_tokenizer *, int, void *), void *ctx) {
    size_t bytes = 0;
    double min_score = DBL_MAX;
    for (int id = 0; id < t->n_vocab; id++) {
        const tok_entry *e = &t->tok[id];
        if (e->p_off == UINT32_MAX || e->p_len == 0 || (in_lattice && !in_lattice(t, id, ctx))) continue;
        bytes += e->p_len;
        if (t->ug_score[id] < min_score) min_score = t->ug_score[id];
    }
    t->ug_unk_score = (min_score == DBL_MAX ? 0.0 : min_score) - UNK_PENALTY;
    if (bytes >= (1u << 29)) return lp_error(LP_EFORMAT, "%s: vocabulary pieces exceed 512 MiB", t->what);
    uint32_t cap = 16;
    while (cap < 2 * bytes + 2) cap <<= 1;
    t->ug_key = malloc(cap * sizeof *t->ug_key);
    t->ug_child = malloc(cap * sizeof *t->ug_child);
    t->ug_term = malloc((bytes + 1) * sizeof *t->ug_term);
    if (!t->ug_key || !t->ug_child || !t->ug_term)
        return lp_error(LP_ENOMEM, "%s: out of memory for the vocabulary trie", t->what);
    memset(t->ug_key, 0xff, cap * sizeof *t->ug_key);
    t->ug_mask = cap - 1;
    t->ug_term[0] = -1;
    uint32_t n_nodes = 1;
    /* tokenizers maps a piece listed twice to its last id (token_to_ids.insert in order) */
    for (int id = 0; id < t->n_vocab; id++) {
        const tok_entry *e = &t->tok[id];
        if (e->p_off == UINT32_MAX || e->p_len == 0 || (in_lattice && !in_lattice(t, id, ctx))) continue;
        const unsigned char *p = (const unsigned char *)t->blob + e->p_off;
        uint32_t node = 0;
        for (uint32_t i = 0; i < e->p_len; i++) {
            int32_t c = trie_child(t, node, p[i]);
            if (c < 0) {
                uint64_t key = (uint64_t)node << 8 | p[i];
                uint32_t h = (uint32_t)hash_key(key) & t->ug_mask;
                while (t->ug_key[h] != UINT64_MAX) h = (h + 1) & t->ug_mask;
                t->ug_key[h] = key;
                t->ug_child[h] = c = (int32_t)n_nodes;
                t->ug_term[n_nodes++] = -1;
            }
            node = (uint32_t)c;
        }
        t->ug_term[node] = id;
    }
    return LP_OK;
}

typedef struct {
    double score;
    int id;     /* the piece ending here on the best path (maybe unk) */
    size_t from; /* where it starts; SIZE_MAX: no path yet */
} best_node;

/* Pushes id, or the bytes of s[a..b) as <0xNN> under byte fallback when id is the unknown
 * piece and every byte has one (tokenizers' Unigram::tokenize). */
static int push_piece(const lp_tokenizer *t, int id, const char *s, size_t a, size_t b, lp_ivec *out) {
    if (id == t->unk && t->byte_fallback) {
        bool all = true;
        for (size_t i = a; i < b && all; i++) all = t->byte_sym[(unsigned char)s[i]] >= 0;
        if (all) {
            for (size_t i = a; i < b; i++) {
                int rc = lp_ivec_push(out, t->byte_sym[(unsigned char)s[i]]);
                if (rc) return rc;
            }
            return LP_OK;
        }
    }
    return lp_ivec_push(out, id);
}

int lp_tok_unigram_encode_word(const lp_tokenizer *t, const char *s, size_t n, lp_ivec *out) {
    if (n == 0) return LP_OK;
    if (n > SIZE_MAX / sizeof(best_node) - 1) return lp_error(LP_ENOMEM, "tokenizer: text too long");
    best_node *best = malloc((n + 1) * sizeof *best);
    if (!best) return lp_error(LP_ENOMEM, "%s: out of memory for a word of %zu bytes", t->what, n);
    for (size_t i = 0; i <= n; i++) best[i] = (best_node){0.0, -1, SIZE_MAX};
    best[0].from = 0;
    int rc = LP_OK;
    for (size_t at = 0; at < n;) {
        int mb = lp_tok_utf8_len((const unsigned char *)s + at, n - at);
        size_t mblen = mb > 0 ? (size_t)mb : 1;
        double here = best[at].score;
        bool single = false;
        int32_t node = 0;
        for (size_t end = at; end < n;) {
            node = trie_child(t, (uint32_t)node, (unsigned char)s[end++]);
            if (node < 0) break;
            int id = t->ug_term[node];
            if (id < 0) continue;
            double cand = here + t->ug_score[id];
            if (best[end].from == SIZE_MAX || cand > best[end].score) best[end] = (best_node){cand, id, at};
            single |= end - at == mblen;
        }
        if (!single) {
            if (t->unk < 0) {
                rc = lp_error(LP_EFORMAT, "%s: no piece for \"%.*s\" and no unknown token (unk_id)", t->what,
                              (int)mblen, s + at);
                goto done;
            }
            double cand = here + t->ug_unk_score;
            if (best[at + mblen].from == SIZE_MAX || cand > best[at + mblen].score)
                best[at + mblen] = (best_node){cand, t->unk, at};
        }
        at += mblen;
    }
    /* back from the end; the pieces come out reversed, then are put in order */
    size_t first = out->n;
    for (size_t end = n; end > 0;) {
        size_t from = best[end].from;
        int id = best[end].id;
        if (id == t->unk) /* fuse the run of unknowns that ends here */
            while (from > 0 && best[from].id == t->unk) from = best[from].from;
        size_t before = out->n;
        if ((rc = push_piece(t, id, s, from, end, out))) goto done;
        /* byte fallback pushed several: keep them in order once the whole is reversed */
        for (size_t i = before, j = out->n - 1; i < j; i++, j--) {
            int x = out->v[i];
            out->v[i] = out->v[j], out->v[j] = x;
        }
        end = from;
    }
    for (size_t i = first, j = out->n ? out->n - 1 : 0; i < j; i++, j--) {
        int x = out->v[i];
        out->v[i] = out->v[j], out->v[j] = x;
    }
done:
    free(best);
    return rc;
}
