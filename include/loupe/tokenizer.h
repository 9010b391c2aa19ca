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
 * Added/special tokens listed in tokenizer.json (e.g. "<|endoftext|>") are matched
 * literally in the input before the rest is split. */
#ifndef LOUPE_TOKENIZER_H
#define LOUPE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct lp_tokenizer lp_tokenizer;

typedef enum {
    LP_TOK_BYTE_BPE,      /* GPT-2 style byte-level BPE */
    LP_TOK_SPIECE_BPE,    /* SentencePiece-style BPE from tokenizer.json */
    LP_TOK_LLAMA2C,       /* llama2.c tokenizer.bin */
} lp_tokenizer_kind;

/* A Hugging Face directory: tokenizer.json if present, else vocab.json + merges.txt.
 * Returns LP_EIO if the directory holds neither (message says which files were looked for). */
int lp_tokenizer_load_dir(lp_tokenizer **out, const char *dir);
int lp_tokenizer_load_json(lp_tokenizer **out, const char *tokenizer_json_path);
int lp_tokenizer_load_gpt2(lp_tokenizer **out, const char *vocab_json_path, const char *merges_txt_path);
/* vocab_size comes from the checkpoint header (the file does not state it). */
int lp_tokenizer_load_llama2c(lp_tokenizer **out, const char *path, int vocab_size);
/* The same from memory, for fuzzing: buf holds the whole tokenizer.bin. */
int lp_tokenizer_load_llama2c_mem(lp_tokenizer **out, const void *buf, size_t len, int vocab_size, const char *what);
void lp_tokenizer_free(lp_tokenizer *t);

lp_tokenizer_kind lp_tokenizer_kind_of(const lp_tokenizer *t);
const char *lp_tokenizer_kind_name(const lp_tokenizer *t); /* "gpt2-bpe", "sentencepiece-bpe", "llama2c" */
int lp_tokenizer_vocab_size(const lp_tokenizer *t);          /* 1 + the largest id it knows */
int lp_tokenizer_bos(const lp_tokenizer *t);                 /* -1 if none */
int lp_tokenizer_eos(const lp_tokenizer *t);                 /* -1 if none */
bool lp_tokenizer_adds_bos(const lp_tokenizer *t);           /* does encode add BOS by default */

/* Encodes len bytes of text (any bytes; invalid UTF-8 is handled the way the reference
 * tokenizer handles it) into ids[0..*n). With add_bos, BOS is put first when the tokenizer
 * has one. cap >= len + 3 is enough unless the vocabulary lacks "▁" or an added token is a
 * single byte. Returns LP_ERANGE (with *n = the count needed) if cap is too small.
 * Invalid UTF-8 is not an error: for the pre-split regex each invalid byte counts as one
 * character that is not a letter, number or space (as Python's regex on a string decoded
 * with errors="surrogateescape"), and byte-level/byte-fallback tokens keep its value. */
int lp_tokenizer_encode(const lp_tokenizer *t, const char *text, size_t len, bool add_bos,
                        int *ids, int cap, int *n);

/* The raw bytes a token stands for (byte-level map undone, "▁" -> " ", <0xNN> -> byte),
 * which may be part of a UTF-8 character. Special tokens give their text ("<s>").
 * NULL (and *len 0) for ids out of range. Borrowed: valid until the tokenizer is freed. */
const char *lp_tokenizer_token_bytes(const lp_tokenizer *t, int id, size_t *len);

/* The token's string as stored in the vocabulary ("Ġthe", "▁the", "<0x0A>"). */
const char *lp_tokenizer_token_piece(const lp_tokenizer *t, int id);

/* The id whose vocabulary string is piece, or -1. */
int lp_tokenizer_piece_to_id(const lp_tokenizer *t, const char *piece);

/* Decodes ids into buf (NUL-terminated; *len excludes the NUL): concatenated token bytes,
 * with BOS/EOS dropped and, for SentencePiece-style tokenizers, the one leading space the
 * encoder prepended removed. Returns LP_ERANGE (with *len = the size needed, NUL included) if
 * cap is too small, LP_EINVAL for an id outside [0, vocab size). */
int lp_tokenizer_decode(const lp_tokenizer *t, const int *ids, int n, char *buf, size_t cap, size_t *len);

#endif
