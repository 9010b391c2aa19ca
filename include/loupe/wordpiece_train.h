/* A WordPiece vocabulary for the encoders loupe trains (BERT's vocab.txt), learnt from a
 * corpus by counting words: the special tokens, every character seen (alone and as a "##"
 * continuation), then the most frequent words (lower-cased, split as BERT's pre-tokenizer
 * splits: at blanks and around each punctuation character) until the vocabulary is full.
 * Greedy longest-match WordPiece then keeps a frequent word whole and spells a rare one in
 * characters. Not BERT's likelihood-driven merges: a corpus of a few hundred words needs
 * none. */
#ifndef LOUPE_WORDPIECE_TRAIN_H
#define LOUPE_WORDPIECE_TRAIN_H

#include <stddef.h>

/* The special tokens, ids 0..4 in this order. */
#define LP_WP_N_SPECIAL 5
#define LP_WP_PAD "[PAD]"
#define LP_WP_UNK "[UNK]"
#define LP_WP_CLS "[CLS]"
#define LP_WP_SEP "[SEP]"
#define LP_WP_MASK "[MASK]"

/* Learns a vocabulary of at most `vocab` tokens from the n_docs documents text[off[i] ..
 * off[i] + len[i]) and writes dir/vocab.txt and dir/tokenizer_config.json (BertTokenizer,
 * lower case). LP_EINVAL when vocab cannot hold the special tokens and the characters. */
int lp_wordpiece_train_save(const char *text, const size_t *off, const size_t *len, size_t n_docs, int vocab,
                            const char *dir);

#endif
