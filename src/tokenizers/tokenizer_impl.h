/* The inside of lp_tokenizer, shared by the code that builds and runs a tokenizer
 * (tokenizer.c) and the file-format loaders (tokenizer_load.c). Not a public header.
 *
 * One struct serves all three kinds; they differ in how text is cut into initial symbols
 * and how a pair of adjacent symbols is ranked. Strings (vocabulary pieces, their decoded
 * bytes, added-token contents, normalizer strings) live in one growing blob and are
 * referred to by offset, so loading never leaves dangling pointers. */
#ifndef LOUPE_TOKENIZER_IMPL_H
#define LOUPE_TOKENIZER_IMPL_H

#include "loupe/tokenizer.h"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_TOK_MAX_RES 2 /* pre-split regexes applied one inside the other */
#define LP_TOK_MAX_NORM 8
/* The normalizer's output may be at most LP_TOK_NORM_FACTOR times its input plus
 * LP_TOK_NORM_SLACK bytes. Real normalizers stay far below: Llama's Replace(" ", "▁")
 * triples a space and Prepend adds "▁" (3 bytes); Unicode bounds NFC at 3x and NFKC at 11x
 * in UTF-8 bytes (UAX #15, "Expansion factors"; loupe takes NFC as identity). A chain of
 * Replaces that multiplies the text (a -> a x 100, four times) is refused before it takes
 * gigabytes. */
#define LP_TOK_NORM_FACTOR 16
#define LP_TOK_NORM_SLACK 1024
#define LP_TOK_SPIECE_SPACE "\xe2\x96\x81" /* "▁" U+2581 */

typedef struct {
    uint32_t p_off, p_len; /* the piece as stored in the vocabulary; p_off UINT32_MAX for an id gap */
    uint32_t b_off, b_len; /* the bytes it decodes to */
    float score;           /* llama2.c merge score */
    unsigned char added;   /* an added token: matched literally in text, decodes to its content */
} tok_entry;

typedef struct {
    int id;
    uint32_t off, len;
    bool lstrip, rstrip; /* the match takes the whitespace before / after it along */
} added_tok;

/* One piece of a post-processing template: a sequence (A or B) or a special token that
 * stands for n_ids ids at tmpl_ids[id_at..]; every token it gives has type type_id. */
#define LP_TOK_MAX_TMPL 16
#define LP_TOK_MAX_TMPL_IDS 64
typedef struct {
    signed char seq; /* 0: A, 1: B, -1: a special token */
    int type_id;
    int id_at, n_ids;
} tmpl_piece;

typedef enum { NORM_PREPEND, NORM_REPLACE, NORM_REPLACE_RE, NORM_STRIP, NORM_PRECOMPILED, NORM_NFC } norm_op;

typedef struct {
    norm_op op;
    uint32_t a_off, a_len; /* prepend: the text; replace: the pattern */
    uint32_t b_off, b_len; /* replace (and replace_re): the replacement */
    pcre2_code *re;        /* replace_re: the pattern */
    bool left, right;      /* strip: which ends */
} norm_step;

typedef enum { PREPEND_NEVER, PREPEND_ALWAYS, PREPEND_FIRST } prepend_scheme;

struct lp_tokenizer {
    lp_tokenizer_kind kind;
    char what[256]; /* the file it came from, for messages */

    char *blob;
    size_t blob_len, blob_cap;

    tok_entry *tok; /* (n_vocab) */
    int n_vocab;
    uint32_t max_piece_len;

    int32_t *piece_tab; /* open-addressing hash: piece -> id, -1 empty */
    uint32_t piece_mask;

    uint64_t *merge_key; /* open-addressing hash: (left id, right id) -> rank, merged id */
    int32_t *merge_rank, *merge_id;
    uint32_t merge_mask;
    size_t n_merges;

    added_tok *added; /* sorted by first byte, then longest first */
    int n_added;
    int added_first[257]; /* added[added_first[c] .. added_first[c+1]) start with byte c */

    int bos, eos, unk;
    bool adds_bos;
    int byte_sym[256]; /* the initial symbol for each byte, -1 when the vocabulary has none */

    /* byte-level BPE */
    pcre2_code *re[LP_TOK_MAX_RES];
    int n_re;
    bool add_prefix_space; /* ByteLevel add_prefix_space */

    /* how merges are applied */
    bool merge_rounds;  /* OpenAI bpe(): merge every occurrence of the best pair before looking again */
    bool ignore_merges; /* a word that is itself in the vocabulary is emitted whole (Llama-3) */

    /* SentencePiece-style */
    bool byte_fallback, fuse_unk;
    norm_step norm[LP_TOK_MAX_NORM];
    int n_norm;
    bool metaspace, metaspace_split;
    prepend_scheme metaspace_prepend;
    uint32_t ms_off, ms_len; /* the Metaspace replacement character */
    bool strip_leading_space; /* decode drops the space the encoder prepended */
    bool bytes_by_name; /* llama2.c kind: byte b is the piece <0xBB> wherever it is (GGUF), not id b + 3 */
    bool no_dummy_prefix; /* llama2.c kind: no " " before the text (GGUF add_space_prefix false: Gemma) */

    /* post-processing: [0] single, [1] pair */
    bool has_template;
    tmpl_piece tmpl[2][LP_TOK_MAX_TMPL];
    int n_tmpl[2];
    int tmpl_ids[LP_TOK_MAX_TMPL_IDS];
    int n_tmpl_ids;
    int special[LP_SPECIAL_COUNT]; /* the roles CLS .. UNK (BOS and EOS are bos, eos; UNK falls back to unk) */

    /* WordPiece (tokenizer_wordpiece.c) */
    uint32_t wp_prefix_off, wp_prefix_len; /* continuing_subword_prefix, "##" */
    int wp_max_chars;                      /* max_input_chars_per_word */
    bool wp_cleanup;                       /* the decoder's cleanup */
    bool bert_norm;                        /* BertNormalizer, with: */
    bool bn_clean, bn_chinese, bn_strip, bn_lower;
    bool bert_pretok; /* BertPreTokenizer; without it a segment is one word */

    /* Unigram (unigram.c) */
    bool whitespace_split; /* WhitespaceSplit pre-tokenizer (before Metaspace) */
    double *ug_score;      /* (n_vocab) piece scores */
    double ug_unk_score;   /* the score of an unknown character: the lowest score - 10 */
    uint64_t *ug_key;      /* the lattice's trie: (node << 8 | byte) -> child, open addressing */
    int32_t *ug_child;
    uint32_t ug_mask;
    int32_t *ug_term; /* (node) the id of the piece that ends there, or -1 */
    uint32_t *cm_units;    /* the precompiled charsmap's double-array trie (cm_n units) */
    size_t cm_n;
    uint32_t cm_str_off, cm_str_len; /* its normalised strings, in the blob */
    /* spiece.model: sentencepiece's own normaliser (normalizer.cc) instead of the steps */
    bool spm_norm, spm_dummy_prefix, spm_remove_ws, spm_escape_ws;
};

/* A growing byte buffer (NUL-terminated once anything is added); zero-initialise, free s. */
typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

/* Building a tokenizer (tokenizer.c). A loader makes one with lp_tok_new, sizes it with
 * lp_tok_alloc_vocab, sets pieces (lp_tok_set_piece, lp_tok_add_added), indexes them, adds
 * merges, sets the options in the struct, then calls lp_tok_finish; on any error it calls
 * lp_tokenizer_free. The int ones return LP_OK or an error code with the message set. */

/* A tokenizer of the given kind with no vocabulary; what names it in messages. NULL when
 * out of memory (no message set). */
lp_tokenizer *lp_tok_new(lp_tokenizer_kind kind, const char *what);
/* Appends s (and a NUL, so pieces can be handed out as C strings) to the blob. */
int lp_tok_blob_add(lp_tokenizer *t, const void *s, size_t n, uint32_t *off);
/* Allocates n_vocab entries, all gaps. */
int lp_tok_alloc_vocab(lp_tokenizer *t, int n_vocab);
/* Sets the piece of id unless it already has one (the first definition wins). */
int lp_tok_set_piece(lp_tokenizer *t, int id, const char *s, size_t n);
/* Indexes every piece; where two ids share a piece the lower id is found. Call once, after
 * the pieces are set and before lp_tok_piece_find, lp_tok_merge_add or lp_tok_finish. */
int lp_tok_index_pieces(lp_tokenizer *t);
/* The id of the piece s[0..n), or -1 (also before lp_tok_index_pieces). */
int lp_tok_piece_find(const lp_tokenizer *t, const char *s, size_t n);
/* Sizes the merge table for at most n merges; call before lp_tok_merge_add. */
int lp_tok_merges_alloc(lp_tokenizer *t, size_t n);
/* Adds the merge "a b" with the given rank (where names it in messages, e.g. "line 7");
 * scratch is a caller-owned buffer reused across calls. */
int lp_tok_merge_add(lp_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int rank,
                     sbuf *scratch, const char *where);
/* Records an added token: its piece, that it decodes to its content, and (if it is not
 * empty) that it is matched literally in input text. */
int lp_tok_add_added(lp_tokenizer *t, int id, const char *s, size_t n);
/* GPT-2's pre-split pattern (tokenizer_load.c compiles it for GPT-2's files, bpe_train.c
 * learns merges on the pieces it cuts). */
#define LP_TOK_GPT2_PATTERN \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Compiles a pre-split regex (UTF, Unicode properties) and appends it to t->re. */
int lp_tok_compile_regex(lp_tokenizer *t, const char *pattern);
/* Works out each token's bytes, the initial symbol of each byte, and the added-token index.
 * Call last, once kind and the vocabulary are final. */
int lp_tok_finish(lp_tokenizer *t);

/* Records that added token id also takes the whitespace before (lstrip) or after (rstrip)
 * it when matched; call after lp_tok_add_added. */
void lp_tok_added_strip(lp_tokenizer *t, int id, bool lstrip, bool rstrip);
/* Appends a template piece to template which (0 single, 1 pair): seq 0/1 for A/B, or -1
 * and the ids of a special token. */
int lp_tok_template_add(lp_tokenizer *t, int which, int seq, int type_id, const int *ids, int n_ids);
/* Sets BERT's templates ([CLS] A [SEP], [CLS] A [SEP] B:1 [SEP]:1) or RoBERTa's (<s> A </s>,
 * <s> A </s> </s> B </s>, all type 0) from the two ids. */
int lp_tok_template_bert(lp_tokenizer *t, int cls, int sep);
int lp_tok_template_roberta(lp_tokenizer *t, int cls, int sep);

/* WordPiece with BERT's defaults (100 characters a word, the decoder's cleanup on) and the
 * given continuing-subword prefix (tokenizer_load.c). */
int lp_tok_wordpiece_defaults(lp_tokenizer *t, const char *prefix);
/* A token listed twice keeps its last id, as the map Hugging Face fills line by line from
 * vocab.txt does; the earlier ids become gaps. lp_tok_index_pieces finds the first, so
 * this indexes again. */
int lp_tok_keep_last_duplicates(lp_tokenizer *t);

/* WordPiece (tokenizer_wordpiece.c): encodes one segment of text (between added tokens):
 * the BertNormalizer, the BertPreTokenizer, then greedy longest-match-first per word. */
typedef struct lp_ivec {
    int *v;
    size_t n, cap;
} lp_ivec;
int lp_ivec_push(lp_ivec *a, int x);
int lp_tok_wordpiece_encode(const lp_tokenizer *t, const char *s, size_t n, lp_ivec *out);
/* Decodes ids as Hugging Face's WordPiece decoder into out; skip(id) drops a token. */
int lp_tok_wordpiece_decode(const lp_tokenizer *t, const int *ids, int n, bool (*skip)(const lp_tokenizer *, int),
                            sbuf *out);
int lp_tok_sbuf_add(sbuf *b, const void *s, size_t n);

/* Unigram (unigram.c). A loader sets the scores (lp_tok_unigram_alloc, then ug_score[id]),
 * the unknown id (t->unk) and, when it has one, the charsmap, then calls
 * lp_tok_unigram_index once the pieces are final; in_lattice(id) says which pieces the
 * Viterbi search may use (NULL: every piece). */
int lp_tok_unigram_alloc(lp_tokenizer *t);
int lp_tok_unigram_index(lp_tokenizer *t, bool (*in_lattice)(const lp_tokenizer *, int, void *), void *ctx);
/* Checks and keeps a precompiled_charsmap (a little-endian u32 trie size, the Darts double
 * array, then NUL-separated normalised strings). */
int lp_tok_charsmap_set(lp_tokenizer *t, const void *blob, size_t n);
/* Decodes standard base64 (padding required, nothing else allowed) into a new buffer. */
int lp_tok_base64_decode_new(const char *s, size_t n, unsigned char **out, size_t *out_len);
/* tokenizers' Precompiled normalizer on s[0..n) into out (appended). */
int lp_tok_precompiled_apply(const lp_tokenizer *t, const char *s, size_t n, sbuf *out);
/* Viterbi segmentation of one word (already normalised) into ids. */
int lp_tok_unigram_encode_word(const lp_tokenizer *t, const char *s, size_t n, lp_ivec *out);
/* A stretch of text between added tokens, normalised the way sentencepiece does
 * (spm_norm), then segmented. */
int lp_tok_unigram_encode_spm(const lp_tokenizer *t, const char *s, size_t n, lp_ivec *out);
/* The length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one. */
int lp_tok_utf8_len(const unsigned char *s, size_t n);

/* Unicode White_Space (Rust's char::is_whitespace, which Hugging Face's tokenizers use). */
bool lp_tok_is_white_space(uint32_t c);

/* Pre-splitting without encoding, for code that learns from text the way encode will cut
 * it (bpe_train.c). fn gets each piece's original bytes; a nonzero return stops the split
 * and is returned. */
typedef int (*lp_tok_piece_fn)(void *ctx, const char *piece, size_t len);
/* Cuts text[0..len) with t's pre-split regexes exactly as byte-level encode does (invalid
 * UTF-8 included; added tokens are not looked for), calling fn for each piece in order. */
int lp_tok_presplit(const lp_tokenizer *t, const char *text, size_t len, lp_tok_piece_fn fn, void *ctx);
/* The vocabulary string of one byte under GPT-2's byte-to-unicode map, as UTF-8 (1 or 2
 * bytes, returned), written to out (not NUL-terminated). */
int lp_tok_byte_piece(unsigned char byte, char out[2]);

#endif
