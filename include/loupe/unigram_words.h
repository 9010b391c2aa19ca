/* A word-level tokenizer for closed-vocabulary synthetic tasks, written as T5's tokenizers
 * are (tokenizer.json with a SentencePiece Unigram model), so that loupe and Hugging Face's
 * tokenizers load it as they load t5-small's: the Metaspace pre-tokenizer ("▁" for spaces,
 * one prepended, split at each), the pieces <pad> 0, </s> 1, <unk> 2, then "▁WORD" for
 * each word in the order given, all scored alike, and "</s>" appended to every
 * sequence (TemplateProcessing "$A </s>"). Since each piece is a whole word after a space,
 * Viterbi has one segmentation: a word of the list is one token and any other word one
 * <unk>. Not learnt from text: the tasks that use it know every word they write. */
#ifndef LOUPE_UNIGRAM_WORDS_H
#define LOUPE_UNIGRAM_WORDS_H

#define LP_UW_PAD 0
#define LP_UW_EOS 1
#define LP_UW_UNK 2
#define LP_UW_N_SPECIAL 3 /* <pad>, </s>, <unk>: the first word's id */

/* Writes dir/tokenizer.json for words[0..n) (ids LP_UW_N_SPECIAL + i). LP_EINVAL for an empty
 * word, one holding a blank, a control character or "▁", one written like a special token
 * ("<...>"), or a word given twice; LP_EIO when the file cannot be written. */
int lp_unigram_words_save(const char *dir, const char *const *words, int n);

#endif
