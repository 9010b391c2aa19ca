/* A synthetic seq2seq task whose right alignment is known, for training a small T5 whose
 * cross-attention can be checked by eye (issue 13: `train --arch t5`).
 *
 * The task: digit strings rewritten as words under a rule named by the source's first word.
 *   copy    4 0 7 2    ->  four zero seven two     (alignment: the diagonal)
 *   reverse 4 0 7 2    ->  two seven zero four     (the anti-diagonal)
 *   swap    4 0 7 2 9  ->  zero four two seven nine (adjacent pairs exchanged: a zigzag)
 * Every target word comes from exactly one source digit, so the alignment is a function
 * target word -> source word, and a heat map of a cross-attention head that learnt it shows
 * the rule's line (diagonal, anti-diagonal, zigzag); a wrong one shows it broken. By
 * default the digits of a string are all different (spec.distinct), so that the source
 * digit a target word spells is found by its content and the alignment is unambiguous
 * (a PyTorch pilot with repeats allowed learnt far more slowly, tests/tools/s2s_pilot.py);
 * with repeats ("4 4 7") the alignment is still by position, which is what a model that
 * learnt the rule must attend to.
 *
 * Words and tokens: the source is "RULE D1 ... Dn" and the target "W1 ... Wn", words split
 * by single spaces. lp_s2s_tokenizer_save writes a word-level tokenizer for the task's
 * whole vocabulary (unigram_words.h: ids <pad> 0, </s> 1, <unk> 2, then one piece per
 * word), so every word is one token and, as T5's tokenizers do, encoding appends </s>:
 *   encoder positions: 0 the rule, 1 .. n the digits, n + 1 </s>;
 *   decoder input:     start (= <pad>, 0), W1 .. Wn; position j predicts target word j
 *                      (j = 0 .. n - 1) and position n predicts </s>.
 * So align[j] is both the source word index and the encoder position the decoder's
 * position j should attend to when it writes target word j (lp_s2s_alignment_hits scores
 * a cross-attention pattern against it).
 *
 * Splits: a digit string is held out when a hash of its digits (not of the seed or the
 * rule) falls in 1 of spec.heldout_every buckets, so a training stream never contains a
 * held-out string under any rule, for any seed, and the held-out examples test rules
 * applied to strings never seen. The two splits draw from separate random streams.
 *
 * For the trainer: lp_s2s_spec_default, set seed (and rules, lengths), then
 * lp_s2s_examples(&spec, LP_S2S_TRAIN, n, buf) for training pairs and LP_S2S_HELDOUT for
 * evaluation; lp_s2s_tokenizer_save(dir) once into the model directory (pad 0, eos 1 and
 * decoder_start 0 in config.json match it). Deterministic: the same spec, split and n
 * give the same examples on every machine (lp_rng only). */
#ifndef LOUPE_S2S_TASK_H
#define LOUPE_S2S_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_S2S_MAX_DIGITS 16

typedef enum { LP_S2S_COPY, LP_S2S_REVERSE, LP_S2S_SWAP, LP_S2S_N_RULES } lp_s2s_rule;
typedef enum { LP_S2S_TRAIN, LP_S2S_HELDOUT } lp_s2s_split;

typedef struct {
    uint64_t seed;
    unsigned rules;            /* which rules to draw (uniformly): bits 1u << lp_s2s_rule, at least one */
    int min_digits, max_digits; /* lengths drawn uniformly, 1 <= min <= max <= LP_S2S_MAX_DIGITS */
    int heldout_every;         /* 1 digit string in this many is held out; >= 2 */
    bool distinct;             /* no digit twice in a string (then max_digits <= 10) */
} lp_s2s_spec;

/* seed 0; copy and reverse; 3 to 8 distinct digits; 1 in 10 strings held out. */
void lp_s2s_spec_default(lp_s2s_spec *spec);

typedef struct {
    lp_s2s_rule rule;
    int n;                          /* digits (= target words) */
    int digits[LP_S2S_MAX_DIGITS];  /* the source's digits, in order */
    int align[LP_S2S_MAX_DIGITS];   /* target word j comes from source word align[j] (1 .. n; 0 is the rule) */
    char source[48];                /* "reverse 4 0 7" */
    char target[112];               /* "seven zero four" */
} lp_s2s_example;

/* n examples of split into out (n of them). LP_EINVAL for a spec out of range, or when the
 * split holds no digit string of the spec's lengths (e.g. one-digit strings only). */
int lp_s2s_examples(const lp_s2s_spec *spec, lp_s2s_split split, size_t n, lp_s2s_example *out);

/* Is this digit string held out (in 1 of heldout_every)? Independent of seed and rule. */
bool lp_s2s_is_heldout(const int *digits, int n, int heldout_every);

const char *lp_s2s_rule_name(lp_s2s_rule rule); /* "copy", "reverse", "swap" */

/* Every word the task writes, in a fixed order (the rules' names, the digits "0" .. "9",
 * the number words "zero" .. "nine"); *n gets the count. Borrowed, static. */
const char *const *lp_s2s_words(int *n);

/* Writes dir/tokenizer.json: the word-level tokenizer of lp_s2s_words (unigram_words.h).
 * *vocab (optional) gets its size, the vocab_size the model needs. */
int lp_s2s_tokenizer_save(const char *dir, int *vocab);

/* The example's token ids as lp_s2s_tokenizer_save's tokenizer encodes them: src (S) the
 * rule, the digits, </s> (S = n + 2); tgt (T) the number words, </s> (T = n + 1). Either array
 * may be NULL; each needs room for LP_S2S_MAX_DIGITS + 2. */
void lp_s2s_ids(const lp_s2s_example *e, int *src, int *S, int *tgt, int *T);

/* How many of the example's target words j have a cross-attention row whose largest weight
 * lies on align[j]: pattern (rows, S), row j the decoder position that writes target word
 * j (rows >= e->n; S >= e->n + 1, the encoder positions). One head, or a mean over heads. */
int lp_s2s_alignment_hits(const lp_s2s_example *e, const float *pattern, int rows, int S);

#endif
