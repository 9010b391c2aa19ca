/* Tokenizers: text <-> token ids, exactly as the model's own tokenizer does.
 *
 * Kinds:
 *  - GPT-2 byte-level BPE (vocab.json + merges.txt, or tokenizer.json with a BPE model and
 *    a ByteLevel pre-tokenizer): pre-split with GPT-2's pattern (or the Split regex a
 *    tokenizer.json gives, e.g. Qwen2/Llama-3), bytes mapped by GPT-2's byte-to-unicode
 *    table, merges applied by rank.
 *  - SentencePiece-style BPE in tokenizer.json (Llama/Mistral/TinyLlama): normalizer that
 *    prepends "▁" and replaces " " by "▁", BPE by merge rank, byte_fallback to <0xNN>, BOS
 *    added by the post-processor.
 *  - llama2.c tokenizer.bin: score-ranked greedy merges, <0xNN> byte tokens, a dummy
 *    prefix space, BOS = 1, EOS = 2.
 *  - WordPiece (BERT, DistilBERT): vocab.txt (one token per line, id = line number, with
 *    tokenizer_config.json's do_lower_case, strip_accents, tokenize_chinese_chars) or
 *    tokenizer.json with a WordPiece model, BertNormalizer and BertPreTokenizer; greedy
 *    longest-match-first with "##" continuations, [UNK] for a word with no match or over
 *    max_input_chars_per_word (100) characters. As Hugging Face's tokenizers (and so
 *    BertTokenizerFast): no NFC, accents stripped before lower-casing.
 *  - SentencePiece Unigram (T5, Flan-T5, mT5): tokenizer.json with a Unigram model, or
 *    spiece.model (sentencepiece's ModelProto) alone. Viterbi segmentation over the piece
 *    scores, an unknown character scored 10 below the lowest piece (runs of them fused into
 *    one <unk>), the precompiled charsmap normaliser, "▁" for spaces, "</s>" appended, the
 *    <extra_id_N> sentinels matched whole. tokenizer.json runs as Hugging Face's tokenizers
 *    runs it; spiece.model as sentencepiece does (they differ in corner cases, see README).
 * Added/special tokens listed in tokenizer.json (e.g. "<|endoftext|>", "[MASK]") are matched
 * literally in the input, before normalisation, and the rest is split around them; one with
 * lstrip (RoBERTa's "<mask>") takes the whitespace before it along.
 *
 * Post-processing: a tokenizer may have a template (tokenizer.json's TemplateProcessing,
 * BertProcessing or RobertaProcessing; BERT's for vocab.txt; RoBERTa's for vocab.json +
 * merges.txt in a directory whose config.json says model_type "roberta"):
 *   BERT     single [CLS] A [SEP]           pair [CLS] A [SEP] B [SEP]       types 0.. 0 1.. 1
 *   RoBERTa  single <s> A </s>              pair <s> A </s> </s> B </s>      types all 0
 *   Llama    single <s> A
 * Without a template, add_special puts BOS first (when the tokenizer adds one) and a pair
 * is A then B with types 0 and 1. */
#ifndef LOUPE_TOKENIZER_H
#define LOUPE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct lp_tokenizer lp_tokenizer;

typedef enum {
    LP_TOK_BYTE_BPE,      /* GPT-2 style byte-level BPE */
    LP_TOK_SPIECE_BPE,    /* SentencePiece-style BPE from tokenizer.json */
    LP_TOK_LLAMA2C,       /* llama2.c tokenizer.bin */
    LP_TOK_WORDPIECE,     /* BERT's WordPiece (vocab.txt or tokenizer.json) */
    LP_TOK_UNIGRAM,       /* SentencePiece Unigram (tokenizer.json or spiece.model) */
} lp_tokenizer_kind;

/* The tokens a model gives roles; lp_tokenizer_special says which id plays each. */
typedef enum {
    LP_SPECIAL_CLS,  /* [CLS], RoBERTa's <s>: first token of an encoder's input */
    LP_SPECIAL_SEP,  /* [SEP], RoBERTa's </s>: ends each sequence */
    LP_SPECIAL_MASK, /* [MASK], <mask> */
    LP_SPECIAL_PAD,  /* [PAD], <pad> */
    LP_SPECIAL_UNK,  /* [UNK], <unk> */
    LP_SPECIAL_BOS,  /* as lp_tokenizer_bos */
    LP_SPECIAL_EOS,  /* as lp_tokenizer_eos */
    LP_SPECIAL_COUNT
} lp_special;

/* A Hugging Face directory, the one place that decides which files make its tokenizer:
 *  1. tokenizer.json;
 *  2. vocab.json + merges.txt (RoBERTa's specials and template when config.json says
 *     model_type "roberta", GPT-2's otherwise);
 *  3. vocab.txt (WordPiece, options from tokenizer_config.json when there is one);
 *  4. spiece.model (Unigram, read as T5Tokenizer does: extra_ids from
 *     tokenizer_config.json, else 100 when config.json says model_type t5, mt5 or umt5,
 *     else 0).
 * Returns LP_EIO if the directory holds none (message says which files were looked for). */
int lp_tokenizer_load_dir(lp_tokenizer **out, const char *dir);
/* Does dir hold the files of one of the tokenizers lp_tokenizer_load_dir reads? */
bool lp_tokenizer_dir_has(const char *dir);
int lp_tokenizer_load_json(lp_tokenizer **out, const char *tokenizer_json_path);
int lp_tokenizer_load_gpt2(lp_tokenizer **out, const char *vocab_json_path, const char *merges_txt_path);
/* GPT-2's files read as RoBERTa's (RobertaTokenizer): <s> <pad> </s> <unk> <mask> are special
 * tokens (<mask> with lstrip), the template is RoBERTa's, add_prefix_space is false. */
int lp_tokenizer_load_roberta(lp_tokenizer **out, const char *vocab_json_path, const char *merges_txt_path);
/* BERT's vocab.txt, as Hugging Face's BertTokenizer(Fast) reads it: do_lower_case (default
 * true), strip_accents (default: as do_lower_case), tokenize_chinese_chars (default true)
 * and the special tokens' names come from tokenizer_config_path when it is not NULL. */
int lp_tokenizer_load_vocab_txt(lp_tokenizer **out, const char *vocab_txt_path, const char *tokenizer_config_path);
/* vocab_size comes from the checkpoint header (the file does not state it). */
int lp_tokenizer_load_llama2c(lp_tokenizer **out, const char *path, int vocab_size);
/* The same from memory, for fuzzing: buf holds the whole tokenizer.bin. */
int lp_tokenizer_load_llama2c_mem(lp_tokenizer **out, const void *buf, size_t len, int vocab_size, const char *what);
/* sentencepiece's spiece.model (a serialized ModelProto) as T5Tokenizer reads it: its
 * control and unknown pieces and extra_ids sentinels <extra_id_0> .. (ids from the end,
 * <extra_id_0> last) are special tokens, "</s>" ends each sequence. Unigram models only. */
int lp_tokenizer_load_spiece(lp_tokenizer **out, const char *path, int extra_ids);
/* The same from memory, for fuzzing. */
/* The tokenizer a GGUF file's metadata describes (tokenizer.ggml.model gpt2 or llama;
 * tokenizer_gguf.c); *out stays NULL when the file has none. */
struct lp_gguf;
int lp_tokenizer_load_gguf(lp_tokenizer **out, const struct lp_gguf *g);
int lp_tokenizer_load_spiece_mem(lp_tokenizer **out, const void *buf, size_t len, int extra_ids, const char *what);
void lp_tokenizer_free(lp_tokenizer *t);

lp_tokenizer_kind lp_tokenizer_kind_of(const lp_tokenizer *t);
const char *lp_tokenizer_kind_name(const lp_tokenizer *t); /* "gpt2-bpe", "sentencepiece-bpe", "llama2c", "wordpiece", "unigram" */
int lp_tokenizer_vocab_size(const lp_tokenizer *t);          /* 1 + the largest id it knows */
int lp_tokenizer_bos(const lp_tokenizer *t);                 /* -1 if none */
int lp_tokenizer_eos(const lp_tokenizer *t);                 /* -1 if none */
bool lp_tokenizer_adds_bos(const lp_tokenizer *t);           /* does encode add special tokens by default */
/* The id that plays the role which, or -1 if the tokenizer has none. */
int lp_tokenizer_special(const lp_tokenizer *t, lp_special which);
/* The role token id plays: the first in lp_special's order whose id it is (RoBERTa's <s> is
 * CLS before BOS), or LP_SPECIAL_COUNT for an ordinary token. */
lp_special lp_tokenizer_role(const lp_tokenizer *t, int id);
/* A role's short name as the store and the displays write it: "cls", "sep", "mask", "pad",
 * "unk", "bos", "eos"; NULL for LP_SPECIAL_COUNT. */
const char *lp_special_name(lp_special which);
/* Which text of a sentence pair each of ids[0..n) belongs to, into seg (0, or 1 for the
 * second): with types (a model with token types, BERT), type 1 is the second; without
 * (NULL: RoBERTa's <s> A </s></s> B </s>), the second begins after the first run of SEP
 * tokens that has tokens after it. A single text is all 0. */
void lp_tokenizer_segments(const lp_tokenizer *t, const int *ids, const int *types, int n, unsigned char *seg);

/* Encodes len bytes of text (any bytes; invalid UTF-8 is handled the way the reference
 * tokenizer handles it) into ids[0..*n). With add_bos, BOS is put first when the tokenizer
 * has one. cap >= len + 3 is enough unless the vocabulary lacks "▁", an added token is a
 * single byte or a charsmap expands the text (NFKC: U+FDFA is 18 characters). Returns
 * LP_ERANGE (with *n = the count needed) if cap is too small.
 * Invalid UTF-8 is not an error: for the pre-split regex each invalid byte counts as one
 * character that is not a letter, number or space (as Python's regex on a string decoded
 * with errors="surrogateescape"), and byte-level/byte-fallback tokens keep its value. */
int lp_tokenizer_encode(const lp_tokenizer *t, const char *text, size_t len, bool add_bos,
                        int *ids, int cap, int *n);
/* With a template (see the top), add_bos applies the single template instead: BERT's encode
 * gives [CLS] ... [SEP]. cap >= len + 3 is still enough for BERT and RoBERTa.
 *
 * Encodes text a and, when b is not NULL, the pair (a, b), as Hugging Face's
 * tokenizer(a, b, add_special_tokens=...) does: each text is encoded on its own, then the
 * template (single or pair) puts the special tokens around them when add_special is set.
 * types (NULL if not wanted) gets each token's token type id. cap >= alen + blen + 6 is
 * enough for BERT and RoBERTa. Returns LP_ERANGE (with *n = the count needed) if cap is too
 * small. */
int lp_tokenizer_encode_pair(const lp_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                             bool add_special, int *ids, int *types, int cap, int *n);

/* The raw bytes a token stands for (byte-level map undone, "▁" -> " ", <0xNN> -> byte),
 * which may be part of a UTF-8 character. Special tokens give their text ("<s>"); WordPiece
 * tokens give their piece ("##ing"), as a display shows them.
 * NULL (and *len 0) for ids out of range. Borrowed: valid until the tokenizer is freed. */
const char *lp_tokenizer_token_bytes(const lp_tokenizer *t, int id, size_t *len);

/* The token's string as stored in the vocabulary ("Ġthe", "▁the", "<0x0A>"). */
const char *lp_tokenizer_token_piece(const lp_tokenizer *t, int id);

/* The id whose vocabulary string is piece, or -1. */
int lp_tokenizer_piece_to_id(const lp_tokenizer *t, const char *piece);

/* Decodes ids into buf (NUL-terminated; *len excludes the NUL): concatenated token bytes,
 * with BOS/EOS dropped and, for SentencePiece-style tokenizers, the one leading space the
 * encoder prepended removed. WordPiece: as Hugging Face's WordPiece decoder (cleanup on),
 * "##" pieces glued to the token before, others after a space, " ." -> "." and the like;
 * the template's specials ([CLS], [SEP]) and [PAD] are dropped. Returns LP_ERANGE (with *len = the size needed, NUL included) if
 * cap is too small, LP_EINVAL for an id outside [0, vocab size). */
int lp_tokenizer_decode(const lp_tokenizer *t, const int *ids, int n, char *buf, size_t cap, size_t *len);

#endif
