/* Byte-level BPE training (bpe_train.h has the rules). The text is reduced to distinct
 * words with counts; pair counts are kept for the whole corpus together with, for each
 * pair, the words it occurs in. A merge then touches only those words, and the counts it
 * changes are updated from the per-occurrence changes (as Hugging Face's trainer does).
 * The best pair comes from a max-heap with lazy entries: an entry holds the count its pair
 * had when pushed; a popped entry whose count is stale is pushed again with the current
 * one. Every increase pushes an entry, so each live pair always has an entry at least as
 * high as its count, and the first fresh entry popped is the true best. */
#include "loupe/bpe_train.h"

#include "tokenizers/tokenizer_impl.h"

#include "loupe/corpus.h"
#include "loupe/error.h"
#include "loupe/fileio.h"

#include <jansson.h>

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t key; /* left id << 32 | right id */
    int64_t count;
    uint32_t *where; /* words it has occurred in (may repeat or be stale); NULL once merged */
    uint32_t n_where, cap_where;
    bool banned; /* its concatenation is already a token */
    bool touched; /* gained count during the current merge */
} pair_t;

typedef struct {
    int64_t count;
    uint32_t pair;
} heap_entry;

typedef struct {
    uint64_t key;
    int delta;
} change_t;

struct lp_bpe {
    int vocab_size, n_tok; /* n_tok: byte symbols plus merges so far */
    uint32_t *tok_off, *tok_len; /* (vocab_size - 1) raw bytes of each token, in blob */
    char *blob;
    size_t blob_len, blob_cap;
    int32_t *tok_tab; /* open addressing: token bytes -> id, -1 empty */
    uint32_t tok_mask;
    int id_of_byte[256];
    int *merge_left, *merge_right; /* (vocab_size - 257) */

    /* words */
    size_t n_words, cap_words;
    uint32_t *w_off, *w_len; /* bytes, in blob */
    uint64_t *w_count;
    size_t *w_sym; /* first symbol in syms */
    int *w_nsym;
    int *syms;
    size_t n_syms, cap_syms;
    uint32_t *word_tab; /* open addressing: word bytes -> index + 1, 0 empty */
    size_t word_mask;

    /* pairs */
    pair_t *pairs;
    size_t n_pairs, cap_pairs;
    uint32_t *pair_tab; /* open addressing: key -> index + 1, 0 empty */
    size_t pair_mask;

    heap_entry *heap;
    size_t n_heap, cap_heap;

    bool oom;
};

/* ---------------------------------------------------------------- small helpers */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_key(uint64_t key) {
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

static uint64_t pair_key(int a, int b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* Grows the array whose pointer is at pp (*cap elements of sz bytes) to hold at least need;
 * false (and the array as it was) when out of memory. The pointer is read and written
 * through memcpy, so any object pointer type can be passed. */
static bool grow(void *pp, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 4;
    while (c < need) c *= 2;
    if (c > SIZE_MAX / sz) return false;
    void *p;
    memcpy(&p, pp, sizeof p);
    void *q = realloc(p, c * sz);
    if (!q) return false;
    memcpy(pp, &q, sizeof q);
    *cap = c;
    return true;
}

static bool blob_add(lp_bpe *b, const char *s, size_t n, uint32_t *off) {
    if (b->blob_len + n >= UINT32_MAX || !grow(&b->blob, &b->blob_cap, b->blob_len + n, 1)) return false;
    memcpy(b->blob + b->blob_len, s, n);
    *off = (uint32_t)b->blob_len;
    b->blob_len += n;
    return true;
}

static const char *tok_bytes(const lp_bpe *b, int id, size_t *n) {
    *n = b->tok_len[id];
    return b->blob + b->tok_off[id];
}

/* ---------------------------------------------------------------- tokens */

static int tok_find(const lp_bpe *b, const char *s, size_t n) {
    for (uint32_t h = (uint32_t)hash_bytes(s, n) & b->tok_mask;; h = (h + 1) & b->tok_mask) {
        int id = b->tok_tab[h];
        if (id < 0) return -1;
        if (b->tok_len[id] == n && memcmp(b->blob + b->tok_off[id], s, n) == 0) return id;
    }
}

static bool tok_add(lp_bpe *b, const char *s, size_t n) {
    int id = b->n_tok;
    if (!blob_add(b, s, n, &b->tok_off[id])) return false;
    b->tok_len[id] = (uint32_t)n;
    uint32_t h = (uint32_t)hash_bytes(s, n) & b->tok_mask;
    while (b->tok_tab[h] >= 0) h = (h + 1) & b->tok_mask;
    b->tok_tab[h] = id;
    b->n_tok++;
    return true;
}

/* ---------------------------------------------------------------- words */

static bool word_tab_grow(lp_bpe *b) {
    size_t cap = b->word_tab ? 2 * (b->word_mask + 1) : 1 << 16;
    uint32_t *tab = calloc(cap, sizeof *tab);
    if (!tab) return false;
    for (size_t i = 0; i < b->n_words; i++) {
        size_t h = hash_bytes(b->blob + b->w_off[i], b->w_len[i]) & (cap - 1);
        while (tab[h]) h = (h + 1) & (cap - 1);
        tab[h] = (uint32_t)i + 1;
    }
    free(b->word_tab);
    b->word_tab = tab;
    b->word_mask = cap - 1;
    return true;
}

static int count_word(void *ctx, const char *s, size_t n) {
    lp_bpe *b = ctx;
    if (n == 0) return LP_OK;
    size_t h = hash_bytes(s, n) & b->word_mask;
    for (; b->word_tab[h]; h = (h + 1) & b->word_mask) {
        uint32_t i = b->word_tab[h] - 1;
        if (b->w_len[i] == n && memcmp(b->blob + b->w_off[i], s, n) == 0) {
            b->w_count[i]++;
            return LP_OK;
        }
    }
    size_t i = b->n_words, cap = b->cap_words;
    if (i + 1 >= UINT32_MAX) return lp_error(LP_ERANGE, "bpe: more than 2^32 distinct words");
    if (i == cap) {
        size_t c1 = cap, c2 = cap, c3 = cap, c4 = cap, c5 = cap;
        if (!grow(&b->w_off, &c1, i + 1, sizeof *b->w_off) || !grow(&b->w_len, &c2, i + 1, sizeof *b->w_len) ||
            !grow(&b->w_count, &c3, i + 1, sizeof *b->w_count) || !grow(&b->w_sym, &c4, i + 1, sizeof *b->w_sym) ||
            !grow(&b->w_nsym, &c5, i + 1, sizeof *b->w_nsym))
            return lp_error(LP_ENOMEM, "bpe: out of memory for %zu words", i + 1);
        b->cap_words = c1;
    }
    if (!blob_add(b, s, n, &b->w_off[i])) return lp_error(LP_ENOMEM, "bpe: out of memory for words");
    if (!grow(&b->syms, &b->cap_syms, b->n_syms + n, sizeof *b->syms))
        return lp_error(LP_ENOMEM, "bpe: out of memory for symbols");
    b->w_len[i] = (uint32_t)n;
    b->w_count[i] = 1;
    b->w_sym[i] = b->n_syms;
    b->w_nsym[i] = (int)n;
    for (size_t k = 0; k < n; k++) b->syms[b->n_syms++] = b->id_of_byte[(unsigned char)s[k]];
    b->word_tab[h] = (uint32_t)i + 1;
    b->n_words++;
    if (2 * b->n_words > b->word_mask && !word_tab_grow(b)) return lp_error(LP_ENOMEM, "bpe: out of memory");
    return LP_OK;
}

/* ---------------------------------------------------------------- pairs and the heap */

static bool pair_tab_grow(lp_bpe *b) {
    size_t cap = b->pair_tab ? 2 * (b->pair_mask + 1) : 1 << 16;
    uint32_t *tab = calloc(cap, sizeof *tab);
    if (!tab) return false;
    for (size_t i = 0; i < b->n_pairs; i++) {
        size_t h = hash_key(b->pairs[i].key) & (cap - 1);
        while (tab[h]) h = (h + 1) & (cap - 1);
        tab[h] = (uint32_t)i + 1;
    }
    free(b->pair_tab);
    b->pair_tab = tab;
    b->pair_mask = cap - 1;
    return true;
}

/* The index of the pair key, made (with count 0) if new; SIZE_MAX when out of memory. */
static size_t pair_get(lp_bpe *b, uint64_t key) {
    size_t h = hash_key(key) & b->pair_mask;
    for (; b->pair_tab[h]; h = (h + 1) & b->pair_mask)
        if (b->pairs[b->pair_tab[h] - 1].key == key) return b->pair_tab[h] - 1;
    if (b->n_pairs + 1 >= UINT32_MAX || !grow(&b->pairs, &b->cap_pairs, b->n_pairs + 1, sizeof *b->pairs))
        return SIZE_MAX;
    size_t i = b->n_pairs++;
    b->pairs[i] = (pair_t){.key = key};
    b->pair_tab[h] = (uint32_t)i + 1;
    if (2 * b->n_pairs > b->pair_mask && !pair_tab_grow(b)) return SIZE_MAX;
    return i;
}

static bool pair_note_word(pair_t *p, uint32_t w) {
    if (p->n_where && p->where[p->n_where - 1] == w) return true;
    size_t cap = p->cap_where;
    if (!grow(&p->where, &cap, (size_t)p->n_where + 1, sizeof *p->where)) return false;
    p->cap_where = (uint32_t)cap;
    p->where[p->n_where++] = w;
    return true;
}

/* Does entry x rank above y: more frequent, then the pair's bytes first in byte order. */
static bool heap_above(const lp_bpe *b, const heap_entry *x, const heap_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    uint64_t kx = b->pairs[x->pair].key, ky = b->pairs[y->pair].key;
    for (int side = 0; side < 2; side++) {
        int ix = (int)(side ? kx & 0xffffffff : kx >> 32), iy = (int)(side ? ky & 0xffffffff : ky >> 32);
        if (ix == iy) continue;
        size_t nx, ny;
        const char *sx = tok_bytes(b, ix, &nx), *sy = tok_bytes(b, iy, &ny);
        int c = memcmp(sx, sy, nx < ny ? nx : ny);
        if (c) return c < 0;
        return nx < ny;
    }
    return false;
}

static bool heap_push(lp_bpe *b, heap_entry e) {
    if (!grow(&b->heap, &b->cap_heap, b->n_heap + 1, sizeof *b->heap)) return false;
    size_t i = b->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!heap_above(b, &e, &b->heap[up])) break;
        b->heap[i] = b->heap[up];
        i = up;
    }
    b->heap[i] = e;
    return true;
}

static heap_entry heap_pop(lp_bpe *b) {
    heap_entry top = b->heap[0], last = b->heap[--b->n_heap];
    size_t i = 0, n = b->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_above(b, &b->heap[c + 1], &b->heap[c])) c++;
        if (!heap_above(b, &b->heap[c], &last)) break;
        b->heap[i] = b->heap[c];
        i = c;
    }
    if (n > 0) b->heap[i] = last;
    return top;
}

/* ---------------------------------------------------------------- merging */

static void note_change(change_t *ch, int *n, uint64_t key, int delta) {
    for (int i = 0; i < *n; i++)
        if (ch[i].key == key) {
            ch[i].delta += delta;
            return;
        }
    ch[(*n)++] = (change_t){key, delta};
}

/* Merges every (a, b) in word w, left to right, into z; adds the word's pair-count
 * changes to the totals and lists the pairs that gained in *touched. */
static int merge_word(lp_bpe *b, uint32_t w, int a, int bb, int z, change_t **ch_buf, size_t *ch_cap,
                      uint32_t **touched, size_t *n_touched, size_t *cap_touched) {
    int *sy = b->syms + b->w_sym[w];
    int len = b->w_nsym[w];
    /* at most 5 changes per occurrence, and at most len / 2 occurrences */
    if (!grow(ch_buf, ch_cap, 5 * (size_t)len / 2 + 1, sizeof **ch_buf)) return LP_ENOMEM;
    change_t *ch = *ch_buf;
    int nch = 0, out = 0;
    for (int i = 0; i < len;) {
        if (i + 1 < len && sy[i] == a && sy[i + 1] == bb) {
            note_change(ch, &nch, pair_key(a, bb), -1);
            if (out > 0) {
                note_change(ch, &nch, pair_key(sy[out - 1], a), -1);
                note_change(ch, &nch, pair_key(sy[out - 1], z), +1);
            }
            if (i + 2 < len) {
                note_change(ch, &nch, pair_key(bb, sy[i + 2]), -1);
                note_change(ch, &nch, pair_key(z, sy[i + 2]), +1);
            }
            sy[out++] = z;
            i += 2;
        } else {
            sy[out++] = sy[i++];
        }
    }
    b->w_nsym[w] = out;
    int64_t count = (int64_t)b->w_count[w];
    for (int i = 0; i < nch; i++) {
        if (ch[i].delta == 0) continue;
        size_t p = pair_get(b, ch[i].key);
        if (p == SIZE_MAX) return LP_ENOMEM;
        pair_t *pp = &b->pairs[p];
        pp->count += ch[i].delta * count;
        assert(pp->count >= 0);
        if (ch[i].delta > 0) {
            if (!pair_note_word(pp, w)) return LP_ENOMEM;
            if (!pp->touched) {
                if (!grow(touched, cap_touched, *n_touched + 1, sizeof **touched)) return LP_ENOMEM;
                (*touched)[(*n_touched)++] = (uint32_t)p;
                pp->touched = true;
            }
        }
    }
    return LP_OK;
}

/* Learns merges until the vocabulary is full. */
static int learn(lp_bpe *b) {
    int rc = LP_OK;
    change_t *ch = NULL;
    size_t ch_cap = 0;
    uint32_t *touched = NULL;
    size_t n_touched = 0, cap_touched = 0;
    char *cat = NULL;
    size_t cat_cap = 0;
    int n_merges = b->vocab_size - 257;
    while (b->n_tok - 256 < n_merges) {
        /* the best fresh pair */
        size_t best = SIZE_MAX;
        while (b->n_heap > 0) {
            heap_entry e = heap_pop(b);
            pair_t *p = &b->pairs[e.pair];
            if (p->banned || p->count == 0) continue;
            if (p->count != e.count) {
                if (!heap_push(b, (heap_entry){p->count, e.pair})) goto oom;
                continue;
            }
            int l = (int)(p->key >> 32), r = (int)(p->key & 0xffffffff);
            size_t nl, nr;
            const char *sl = tok_bytes(b, l, &nl), *sr = tok_bytes(b, r, &nr);
            if (!grow(&cat, &cat_cap, nl + nr, 1)) goto oom;
            memcpy(cat, sl, nl);
            memcpy(cat + nl, sr, nr);
            if (tok_find(b, cat, nl + nr) >= 0) {
                p->banned = true;
                continue;
            }
            best = e.pair;
            break;
        }
        if (best == SIZE_MAX) {
            rc = lp_error(LP_EINVAL, "bpe: the text allows only %d merges (vocabulary %d), not the %d a vocabulary "
                                     "of %d needs; give more text or a smaller size",
                          b->n_tok - 256, b->n_tok + 1, n_merges, b->vocab_size);
            goto done;
        }
        pair_t *p = &b->pairs[best];
        int l = (int)(p->key >> 32), r = (int)(p->key & 0xffffffff), z = b->n_tok;
        size_t nl = b->tok_len[l], nr = b->tok_len[r];
        if (!tok_add(b, cat, nl + nr)) goto oom;
        b->merge_left[z - 256] = l, b->merge_right[z - 256] = r;
        uint32_t *where = p->where, n_where = p->n_where;
        p->where = NULL, p->n_where = p->cap_where = 0; /* merged: never listed again */
        n_touched = 0;
        for (uint32_t k = 0; k < n_where && !rc; k++) {
            rc = merge_word(b, where[k], l, r, z, &ch, &ch_cap, &touched, &n_touched, &cap_touched);
        }
        free(where);
        if (rc) goto oom;
        assert(b->pairs[best].count == 0);
        for (size_t k = 0; k < n_touched; k++) {
            pair_t *t = &b->pairs[touched[k]];
            t->touched = false;
            if (!heap_push(b, (heap_entry){t->count, touched[k]})) goto oom;
        }
    }
    goto done;
oom:
    rc = lp_error(LP_ENOMEM, "bpe: out of memory after %d merges", b->n_tok - 256);
done:
    free(ch);
    free(touched);
    free(cat);
    return rc;
}

/* ---------------------------------------------------------------- public */

void lp_bpe_free(lp_bpe *b) {
    if (!b) return;
    free(b->tok_off);
    free(b->tok_len);
    free(b->blob);
    free(b->tok_tab);
    free(b->merge_left);
    free(b->merge_right);
    free(b->w_off);
    free(b->w_len);
    free(b->w_count);
    free(b->w_sym);
    free(b->w_nsym);
    free(b->syms);
    free(b->word_tab);
    for (size_t i = 0; i < b->n_pairs; i++) free(b->pairs[i].where);
    free(b->pairs);
    free(b->pair_tab);
    free(b->heap);
    free(b);
}

/* Counts the words of text: the parts between "<|endoftext|>"s, pre-split. */
static int count_words(lp_bpe *b, const char *text, size_t len) {
    lp_tokenizer *split = lp_tok_new(LP_TOK_BYTE_BPE, "bpe training text");
    if (!split) return lp_error(LP_ENOMEM, "bpe: out of memory");
    int rc = lp_tok_compile_regex(split, LP_TOK_GPT2_PATTERN);
    const size_t eot_len = strlen(LP_CORPUS_EOT);
    for (size_t at = 0; at < len && !rc;) {
        const char *e = memmem(text + at, len - at, LP_CORPUS_EOT, eot_len);
        size_t end = e ? (size_t)(e - text) : len;
        rc = lp_tok_presplit(split, text + at, end - at, count_word, b);
        at = e ? end + eot_len : len;
    }
    lp_tokenizer_free(split);
    return rc;
}

int lp_bpe_train_new(lp_bpe **out, const char *text, size_t len, int vocab_size) {
    assert(out && (text || len == 0));
    *out = NULL;
    if (vocab_size < 257 || vocab_size > (1 << 20))
        return lp_error(LP_EINVAL, "bpe: vocabulary size %d is not in [257, 2^20] (256 bytes + merges + "
                                   "<|endoftext|>)", vocab_size);
    lp_bpe *b = calloc(1, sizeof *b);
    if (!b) return lp_error(LP_ENOMEM, "bpe: out of memory");
    b->vocab_size = vocab_size;
    size_t n_tok = (size_t)vocab_size - 1, tab = 16;
    while (tab < 2 * n_tok) tab *= 2;
    b->tok_off = malloc(n_tok * sizeof *b->tok_off);
    b->tok_len = malloc(n_tok * sizeof *b->tok_len);
    b->tok_tab = malloc(tab * sizeof *b->tok_tab);
    b->tok_mask = (uint32_t)tab - 1;
    b->merge_left = malloc((n_tok - 256 + 1) * sizeof *b->merge_left);
    b->merge_right = malloc((n_tok - 256 + 1) * sizeof *b->merge_right);
    int rc = LP_OK;
    if (!b->tok_off || !b->tok_len || !b->tok_tab || !b->merge_left || !b->merge_right || !word_tab_grow(b) ||
        !pair_tab_grow(b)) {
        rc = lp_error(LP_ENOMEM, "bpe: out of memory");
        goto fail;
    }
    memset(b->tok_tab, 0xff, tab * sizeof *b->tok_tab);
    /* GPT-2's order is the order of the code points the bytes map to */
    unsigned order[256];
    for (int byte = 0, n = 0; byte < 256; byte++) {
        bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
        if (printable) order[n++] = (unsigned)byte;
    }
    for (int byte = 0, n = 188; byte < 256; byte++) {
        bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
        if (!printable) order[n++] = (unsigned)byte;
    }
    for (int id = 0; id < 256; id++) {
        char c = (char)order[id];
        b->id_of_byte[order[id]] = id;
        if (!tok_add(b, &c, 1)) {
            rc = lp_error(LP_ENOMEM, "bpe: out of memory");
            goto fail;
        }
    }

    if ((rc = count_words(b, text, len))) goto fail;
    for (size_t w = 0; w < b->n_words; w++) {
        const int *sy = b->syms + b->w_sym[w];
        for (int i = 0; i + 1 < b->w_nsym[w]; i++) {
            size_t p = pair_get(b, pair_key(sy[i], sy[i + 1]));
            if (p == SIZE_MAX || !pair_note_word(&b->pairs[p], (uint32_t)w)) {
                rc = lp_error(LP_ENOMEM, "bpe: out of memory for pair counts");
                goto fail;
            }
            b->pairs[p].count += (int64_t)b->w_count[w];
        }
    }
    for (size_t p = 0; p < b->n_pairs; p++)
        if (!heap_push(b, (heap_entry){b->pairs[p].count, (uint32_t)p})) {
            rc = lp_error(LP_ENOMEM, "bpe: out of memory for the pair queue");
            goto fail;
        }
    if ((rc = learn(b))) goto fail;
    /* what training needed and the getters do not */
    for (size_t i = 0; i < b->n_pairs; i++) free(b->pairs[i].where);
    free(b->pairs), b->pairs = NULL, b->n_pairs = b->cap_pairs = 0;
    free(b->pair_tab), b->pair_tab = NULL;
    free(b->heap), b->heap = NULL, b->n_heap = b->cap_heap = 0;
    *out = b;
    return LP_OK;
fail:
    lp_bpe_free(b);
    return rc;
}

int lp_bpe_vocab_size(const lp_bpe *b) { return b->vocab_size; }
size_t lp_bpe_n_words(const lp_bpe *b) { return b->n_words; }

const char *lp_bpe_word(const lp_bpe *b, size_t i, size_t *len, uint64_t *count) {
    assert(i < b->n_words);
    if (len) *len = b->w_len[i];
    if (count) *count = b->w_count[i];
    return b->blob + b->w_off[i];
}

int lp_bpe_word_ids(const lp_bpe *b, size_t i, const int **ids) {
    assert(i < b->n_words && ids);
    *ids = b->syms + b->w_sym[i];
    return b->w_nsym[i];
}

/* A token's vocabulary string: its bytes through GPT-2's byte-to-unicode map. */
static bool piece_of(const lp_bpe *b, int id, char *buf, size_t cap) {
    size_t n, at = 0;
    const char *s = tok_bytes(b, id, &n);
    for (size_t i = 0; i < n; i++) {
        if (at + 3 > cap) return false;
        at += (size_t)lp_tok_byte_piece((unsigned char)s[i], buf + at);
    }
    buf[at] = '\0';
    return true;
}

int lp_bpe_save(const lp_bpe *b, const char *dir) {
    assert(b && dir);
    char vocab_path[4096], merges_path[4096];
    if (lp_path_join(vocab_path, sizeof vocab_path, dir, "vocab.json") ||
        lp_path_join(merges_path, sizeof merges_path, dir, "merges.txt"))
        return lp_error(LP_ERANGE, "%s: path too long", dir);
    size_t max_len = 0;
    for (int id = 0; id < b->n_tok; id++)
        if (b->tok_len[id] > max_len) max_len = b->tok_len[id];
    size_t cap = 2 * max_len + 3;
    char *piece = malloc(cap), *left = malloc(cap);
    json_t *vocab = json_object();
    sbuf merges = {0};
    char *json = NULL;
    int rc = LP_OK;
    if (!piece || !left || !vocab) goto oom;
    for (int id = 0; id < b->n_tok; id++) {
        if (!piece_of(b, id, piece, cap) || json_object_set_new(vocab, piece, json_integer(id))) goto oom;
    }
    if (json_object_set_new(vocab, LP_CORPUS_EOT, json_integer(b->vocab_size - 1))) goto oom;
    if (!(json = json_dumps(vocab, JSON_COMPACT | JSON_PRESERVE_ORDER))) goto oom;

    static const char header[] = "#version: 0.2\n";
    size_t need = sizeof header;
    for (int k = 0; k + 256 < b->n_tok; k++) need += 2 * (b->tok_len[b->merge_left[k]] + b->tok_len[b->merge_right[k]]) + 2;
    if (!(merges.s = malloc(need))) goto oom;
    memcpy(merges.s, header, sizeof header - 1);
    merges.n = sizeof header - 1;
    for (int k = 0; k + 256 < b->n_tok; k++) {
        if (!piece_of(b, b->merge_left[k], left, cap) || !piece_of(b, b->merge_right[k], piece, cap)) goto oom;
        merges.n += (size_t)sprintf(merges.s + merges.n, "%s %s\n", left, piece);
    }
    rc = lp_file_write(vocab_path, json, strlen(json));
    if (!rc) rc = lp_file_write(merges_path, merges.s, merges.n);
    goto done;
oom:
    rc = lp_error(LP_ENOMEM, "bpe: out of memory writing %s", dir);
done:
    free(piece);
    free(left);
    free(json);
    free(merges.s);
    json_decref(vocab);
    return rc;
}
