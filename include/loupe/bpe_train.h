/* Learning a byte-level BPE tokenizer in GPT-2's form from text.
 *
 * The text is cut at "<|endoftext|>" (a special token: never split or merged), each part is
 * pre-split with GPT-2's pattern by the tokenizer's own code, and the pieces ("words") are
 * counted. The base vocabulary is the 256 byte symbols of GPT-2's byte-to-unicode map, in
 * GPT-2's order (ids 0..187 the printable bytes "!".."ÿ", then the other 68 bytes in byte
 * order, so " " is id 220 "Ġ"). Then, until the vocabulary has vocab_size - 1 tokens, the
 * most frequent adjacent pair of symbols over all words (counted with word frequency) is
 * merged everywhere, left to right, into a new token with the next id. Ties go to the
 * pair whose left token's bytes come first in byte order, then the right token's. A pair
 * whose concatenation is already a token is never merged, so each token is made by one
 * merge and encoding a training word with the learnt merges gives exactly the trainer's
 * segmentation. "<|endoftext|>" takes the last id, vocab_size - 1.
 *
 * lp_bpe_save writes vocab.json (piece -> id) and merges.txt ("#version: 0.2", then one
 * "left right" line per merge in training order), which lp_tokenizer_load_gpt2 and
 * lp_tokenizer_load_dir read. */
#ifndef LOUPE_BPE_TRAIN_H
#define LOUPE_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct lp_bpe lp_bpe;

/* Learns vocab_size - 257 merges from text[0..len). vocab_size in [257, 1 << 20].
 * LP_EINVAL if the text has fewer distinct pairs to merge than that (the message says how
 * many merges it could learn), LP_ENOMEM. */
int lp_bpe_train_new(lp_bpe **out, const char *text, size_t len, int vocab_size);
void lp_bpe_free(lp_bpe *b);

/* Writes dir/vocab.json and dir/merges.txt (each atomically). dir must exist. */
int lp_bpe_save(const lp_bpe *b, const char *dir);

int lp_bpe_vocab_size(const lp_bpe *b);

/* The distinct pre-split words of the training text, in order of first occurrence: the
 * word's bytes (borrowed), how often it occurred, and its segmentation after all merges
 * (token ids of the saved vocabulary, *ids borrowed; returns the number of tokens). */
size_t lp_bpe_n_words(const lp_bpe *b);
const char *lp_bpe_word(const lp_bpe *b, size_t i, size_t *len, uint64_t *count);
int lp_bpe_word_ids(const lp_bpe *b, size_t i, const int **ids);

#endif
