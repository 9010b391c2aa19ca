/* sentencepiece's spiece.model: a serialized ModelProto (sentencepiece_model.proto), read by
 * a small strict protobuf reader. What loupe takes from it:
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (NORMAL 1, UNKNOWN 2,
 *                   CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6; default NORMAL)
 *   TrainerSpec     3 model_type (UNIGRAM 1, the default; BPE 2, WORD 3, CHAR 4),
 *                   24 treat_whitespace_as_suffix, 35 byte_fallback
 *   NormalizerSpec  2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
 *                   5 escape_whitespaces (all three default true)
 * Every other field is skipped by its wire type. Each length and varint is checked against
 * the buffer before it is used; groups (wire types 3, 4) and unknown wire types are refused.
 * As sentencepiece's ModelInterface::InitializePieces, a piece may not be empty or repeated
 * and exactly one piece is UNKNOWN.
 *
 * Around the model, loupe does what transformers' T5Tokenizer does: control, unknown and
 * user-defined pieces are added tokens matched whole before anything else (sentencepiece
 * itself finds user-defined pieces inside its normaliser, which can differ in the spaces
 * around them), extra_ids sentinels follow the pieces, </s> ends each sequence. */
#include "tokenizers/tokenizer_impl.h"

#include "loupe/error.h"
#include "loupe/fileio.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3, PIECE_USER = 4, PIECE_UNUSED = 5, PIECE_BYTE = 6 };

typedef struct {
    const unsigned char *p;
    size_t n, at;
    const char *what;
} pb;

typedef struct {
    uint32_t field;
    int wire;
    uint64_t v;                /* varint, fixed32, fixed64 */
    const unsigned char *data; /* length-delimited */
    size_t len;
} pb_field;

static int pb_varint(pb *b, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->at >= b->n)
            return lp_error(LP_EFORMAT, "%s: truncated varint at byte %zu (the file may be cut short)", b->what, b->at);
        unsigned char c = b->p[b->at++];
        *v |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80) return LP_OK;
    }
    return lp_error(LP_EFORMAT, "%s: varint longer than 10 bytes at byte %zu", b->what, b->at);
}

/* The next field of b into f; LP_OK with f->field 0 at the end. */
static int pb_next(pb *b, pb_field *f) {
    f->field = 0;
    if (b->at == b->n) return LP_OK;
    size_t start = b->at;
    uint64_t key;
    int rc = pb_varint(b, &key);
    if (rc) return rc;
    f->wire = (int)(key & 7);
    if (key >> 3 == 0 || key >> 3 > 0x1FFFFFFF)
        return lp_error(LP_EFORMAT, "%s: field number %llu at byte %zu is not valid protobuf (is this a "
                        "sentencepiece model?)", b->what, (unsigned long long)(key >> 3), start);
    f->field = (uint32_t)(key >> 3);
    switch (f->wire) {
    case 0: return pb_varint(b, &f->v);
    case 1:
    case 5: {
        size_t k = f->wire == 1 ? 8 : 4;
        if (b->n - b->at < k)
            return lp_error(LP_EFORMAT, "%s: field %u at byte %zu: %zu bytes needed, %zu left", b->what, f->field, start,
                            k, b->n - b->at);
        f->v = 0;
        for (size_t i = 0; i < k; i++) f->v |= (uint64_t)b->p[b->at + i] << (8 * i);
        b->at += k;
        return LP_OK;
    }
    case 2: {
        uint64_t len;
        if ((rc = pb_varint(b, &len))) return rc;
        if (len > b->n - b->at)
            return lp_error(LP_EFORMAT, "%s: field %u at byte %zu says %llu bytes, %zu left", b->what, f->field, start,
                            (unsigned long long)len, b->n - b->at);
        f->data = b->p + b->at, f->len = (size_t)len;
        b->at += (size_t)len;
        return LP_OK;
    }
    default:
        return lp_error(LP_EFORMAT, "%s: field %u at byte %zu has wire type %d, which sentencepiece models do not use",
                        b->what, f->field, start, f->wire);
    }
}

static int want_wire(const pb *b, const pb_field *f, int wire, const char *name) {
    if (f->wire == wire) return LP_OK;
    return lp_error(LP_EFORMAT, "%s: %s (field %u) has wire type %d, expected %d", b->what, name, f->field, f->wire,
                    wire);
}

typedef struct {
    const unsigned char *piece;
    size_t len;
    float score;
    int type;
} piece_rec;

typedef struct {
    piece_rec *pieces;
    size_t n_pieces;
    uint64_t model_type;
    bool byte_fallback, ws_suffix;
    const unsigned char *charsmap;
    size_t charsmap_len;
    bool dummy_prefix, remove_ws, escape_ws;
} model_rec;

static pb sub(const pb *b, const pb_field *f) { return (pb){f->data, f->len, 0, b->what}; }

static int read_piece(const pb *b, const pb_field *f, piece_rec *r) {
    pb s = sub(b, f);
    pb_field g;
    int rc;
    *r = (piece_rec){(const unsigned char *)"", 0, 0.0f, PIECE_NORMAL};
    while (!(rc = pb_next(&s, &g)) && g.field) {
        if (g.field == 1) {
            if ((rc = want_wire(&s, &g, 2, "SentencePiece.piece"))) return rc;
            r->piece = g.data, r->len = g.len;
        } else if (g.field == 2) {
            if ((rc = want_wire(&s, &g, 5, "SentencePiece.score"))) return rc;
            uint32_t bits = (uint32_t)g.v;
            memcpy(&r->score, &bits, sizeof r->score);
        } else if (g.field == 3) {
            if ((rc = want_wire(&s, &g, 0, "SentencePiece.type"))) return rc;
            r->type = g.v >= 1 && g.v <= 6 ? (int)g.v : 0;
            if (!r->type) return lp_error(LP_EFORMAT, "%s: a piece has type %llu (1..6 are defined)", b->what,
                                          (unsigned long long)g.v);
        }
    }
    return rc;
}

static int read_flag(const pb *b, const pb_field *f, const char *name, bool *out) {
    int rc = want_wire(b, f, 0, name);
    if (!rc) *out = f->v != 0;
    return rc;
}

static int read_trainer(const pb *b, const pb_field *f, model_rec *m) {
    pb s = sub(b, f);
    pb_field g;
    int rc;
    while (!(rc = pb_next(&s, &g)) && g.field) {
        if (g.field == 3) {
            if ((rc = want_wire(&s, &g, 0, "TrainerSpec.model_type"))) return rc;
            m->model_type = g.v;
        } else if (g.field == 24) {
            if ((rc = read_flag(&s, &g, "TrainerSpec.treat_whitespace_as_suffix", &m->ws_suffix))) return rc;
        } else if (g.field == 35) {
            if ((rc = read_flag(&s, &g, "TrainerSpec.byte_fallback", &m->byte_fallback))) return rc;
        }
    }
    return rc;
}

static int read_normalizer(const pb *b, const pb_field *f, model_rec *m) {
    pb s = sub(b, f);
    pb_field g;
    int rc;
    while (!(rc = pb_next(&s, &g)) && g.field) {
        if (g.field == 2) {
            if ((rc = want_wire(&s, &g, 2, "NormalizerSpec.precompiled_charsmap"))) return rc;
            m->charsmap = g.data, m->charsmap_len = g.len;
        } else if (g.field == 3) {
            rc = read_flag(&s, &g, "NormalizerSpec.add_dummy_prefix", &m->dummy_prefix);
        } else if (g.field == 4) {
            rc = read_flag(&s, &g, "NormalizerSpec.remove_extra_whitespaces", &m->remove_ws);
        } else if (g.field == 5) {
            rc = read_flag(&s, &g, "NormalizerSpec.escape_whitespaces", &m->escape_ws);
        }
        if (rc) return rc;
    }
    return rc;
}

/* Two passes over the top level: count the pieces, then read everything. */
static int read_model(pb *b, model_rec *m) {
    pb_field f;
    int rc;
    size_t n = 0;
    while (!(rc = pb_next(b, &f)) && f.field) n += f.field == 1;
    if (rc) return rc;
    if (n == 0) return lp_error(LP_EFORMAT, "%s: no pieces (is this a sentencepiece model?)", b->what);
    if (n >= (1u << 24)) return lp_error(LP_EFORMAT, "%s: %zu pieces; more than 2^24 is not supported", b->what, n);
    if (!(m->pieces = malloc(n * sizeof *m->pieces))) return lp_error(LP_ENOMEM, "%s: out of memory", b->what);
    b->at = 0;
    m->model_type = 1;
    m->dummy_prefix = m->remove_ws = m->escape_ws = true;
    while (!(rc = pb_next(b, &f)) && f.field) {
        if (f.field == 1) {
            if ((rc = want_wire(b, &f, 2, "ModelProto.pieces")) || (rc = read_piece(b, &f, &m->pieces[m->n_pieces++])))
                return rc;
        } else if (f.field == 2) {
            if ((rc = want_wire(b, &f, 2, "ModelProto.trainer_spec")) || (rc = read_trainer(b, &f, m))) return rc;
        } else if (f.field == 3) {
            if ((rc = want_wire(b, &f, 2, "ModelProto.normalizer_spec")) || (rc = read_normalizer(b, &f, m))) return rc;
        }
    }
    return rc;
}

static bool normal_piece(const lp_tokenizer *t, int id, void *types) {
    (void)t;
    return ((const unsigned char *)types)[id] == PIECE_NORMAL;
}

static int build(lp_tokenizer *t, const model_rec *m, int extra_ids, unsigned char *types) {
    const char *what = t->what;
    if (m->model_type != 1)
        return lp_error(LP_EUNSUPPORTED, "%s: model_type %llu is not Unigram (1); loupe reads BPE sentencepiece models "
                        "from their tokenizer.json", what, (unsigned long long)m->model_type);
    if (m->ws_suffix)
        return lp_error(LP_EUNSUPPORTED, "%s: treat_whitespace_as_suffix is not supported", what);
    int n = (int)m->n_pieces;
    int rc = lp_tok_alloc_vocab(t, n + extra_ids);
    if (!rc) rc = lp_tok_unigram_alloc(t);
    if (rc) return rc;
    t->unk = -1;
    for (int id = 0; id < n; id++) {
        const piece_rec *r = &m->pieces[id];
        if (r->len == 0) return lp_error(LP_EFORMAT, "%s: piece %d is empty", what, id);
        for (size_t i = 0; i < r->len;) {
            int k = lp_tok_utf8_len(r->piece + i, r->len - i);
            if (k == 0) return lp_error(LP_EFORMAT, "%s: piece %d is not UTF-8", what, id);
            i += (size_t)k;
        }
        if (!(r->score > -1e30f && r->score < 1e30f))
            return lp_error(LP_EFORMAT, "%s: piece %d has score %g; scores must be finite", what, id, (double)r->score);
        types[id] = (unsigned char)r->type;
        t->ug_score[id] = r->score;
        if (r->type == PIECE_UNKNOWN) {
            if (t->unk >= 0) return lp_error(LP_EFORMAT, "%s: pieces %d and %d are both the unknown piece", what, t->unk, id);
            t->unk = id;
        }
        bool added = r->type == PIECE_UNKNOWN || r->type == PIECE_CONTROL || r->type == PIECE_USER;
        rc = added ? lp_tok_add_added(t, id, (const char *)r->piece, r->len)
                   : lp_tok_set_piece(t, id, (const char *)r->piece, r->len);
        if (rc) return rc;
    }
    if (t->unk < 0) return lp_error(LP_EFORMAT, "%s: no unknown piece (type UNKNOWN); sentencepiece needs one", what);
    for (int k = 0; k < extra_ids; k++) { /* T5Tokenizer: <extra_id_0> is the last id */
        char s[32];
        int len = snprintf(s, sizeof s, "<extra_id_%d>", k);
        if ((rc = lp_tok_add_added(t, n + extra_ids - 1 - k, s, (size_t)len))) return rc;
    }
    if ((rc = lp_tok_index_pieces(t))) return rc;
    for (int id = 0; id < n; id++) {
        const tok_entry *e = &t->tok[id];
        if (lp_tok_piece_find(t, t->blob + e->p_off, e->p_len) != id)
            return lp_error(LP_EFORMAT, "%s: piece %d \"%.40s\" is already piece %d", what, id, t->blob + e->p_off,
                            lp_tok_piece_find(t, t->blob + e->p_off, e->p_len));
    }
    if (m->charsmap_len > 0 && (rc = lp_tok_charsmap_set(t, m->charsmap, m->charsmap_len))) return rc;
    t->kind = LP_TOK_UNIGRAM;
    t->spm_norm = true;
    t->spm_dummy_prefix = m->dummy_prefix;
    t->spm_remove_ws = m->remove_ws;
    t->spm_escape_ws = m->escape_ws;
    t->byte_fallback = m->byte_fallback;
    t->strip_leading_space = m->dummy_prefix;
    t->eos = lp_tok_piece_find(t, "</s>", 4);
    t->bos = lp_tok_piece_find(t, "<s>", 3);
    t->special[LP_SPECIAL_PAD] = lp_tok_piece_find(t, "<pad>", 5);
    t->special[LP_SPECIAL_UNK] = t->unk;
    if (t->eos >= 0) { /* T5Tokenizer.build_inputs_with_special_tokens: A </s>, A </s> B </s> */
        if ((rc = lp_tok_template_add(t, 0, 0, 0, NULL, 0)) || (rc = lp_tok_template_add(t, 0, -1, 0, &t->eos, 1)) ||
            (rc = lp_tok_template_add(t, 1, 0, 0, NULL, 0)) || (rc = lp_tok_template_add(t, 1, -1, 0, &t->eos, 1)) ||
            (rc = lp_tok_template_add(t, 1, 1, 0, NULL, 0)) || (rc = lp_tok_template_add(t, 1, -1, 0, &t->eos, 1)))
            return rc;
        t->adds_bos = true;
    }
    if ((rc = lp_tok_unigram_index(t, normal_piece, types))) return rc;
    return lp_tok_finish(t);
}

int lp_tokenizer_load_spiece_mem(lp_tokenizer **out, const void *buf, size_t len, int extra_ids, const char *what) {
    assert(out && (buf || len == 0));
    *out = NULL;
    if (!what) what = "spiece.model";
    if (extra_ids < 0 || extra_ids > 100000)
        return lp_error(LP_EINVAL, "%s: extra_ids %d is outside [0, 100000]", what, extra_ids);
    pb b = {buf, len, 0, what};
    model_rec m = {0};
    unsigned char *types = NULL;
    lp_tokenizer *t = NULL;
    int rc = read_model(&b, &m);
    if (rc) goto done;
    t = lp_tok_new(LP_TOK_UNIGRAM, what);
    types = calloc(m.n_pieces + (size_t)extra_ids, 1);
    if (!t || !types) {
        rc = lp_error(LP_ENOMEM, "%s: out of memory", what);
        goto done;
    }
    rc = build(t, &m, extra_ids, types);
done:
    free(m.pieces);
    free(types);
    if (rc) {
        lp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LP_OK;
}

int lp_tokenizer_load_spiece(lp_tokenizer **out, const char *path, int extra_ids) {
    assert(out && path);
    *out = NULL;
    lp_mapping mp;
    int rc = lp_file_map(&mp, path);
    if (rc) return rc;
    rc = lp_tokenizer_load_spiece_mem(out, mp.data, mp.size, extra_ids, path);
    lp_file_unmap(&mp);
    return rc;
}
