/* A synthetic training corpus with known circuits in it, deterministic for a seed.
 *
 * The mixture (each document's kind is drawn with the spec's proportions):
 *  - IOI: a name story in the indirect-object form, built from parts: a form (6 clause
 *    orders) whose slots are filled from lists of openings, activities, places (50),
 *    sentences in between (none, one or two), verbs of giving and objects (50), e.g.
 *      "When Mary and John went to the store, John gave a drink to Mary."
 *      "Then, Ruth and Dan bought a box at the camp. It was a windy day. Ruth passed it to Dan."
 *    The intro names the indirect object (IO) and the subject (S) in either order (ABBA:
 *    "IO and S ... S ... to IO"; BABA: "S and IO ... S ... to IO", equally likely), the
 *    subject acts, and the sentence ends with the IO; 100 first names. Up to two filler
 *    sentences (which may name others) come before the story and up to one after it.
 *    Held-out frames (lp_corpus_ioi_prompts with LP_IOI_HELDOUT) are never generated.
 *    A share of the stories (spec.scrambled) is scrambled: the same roles, but the words
 *    around and between the names are random words or random training parts, in random
 *    numbers, with or without punctuation, so that the frame says nothing:
 *      "oyster orange Emma and Matthew got back from the pool. Matthew lizard of money of to Emma."
 *  - Repeated span: up to two filler sentences, a span of span_min..span_max random words,
 *    then the same span again, either at once or after ". " and a filler sentence, and ".":
 *      "Tom sat down and smiled. kqe zzt wod kqe zzt wod."
 *    A span is words from a fixed list of about 100 common words, or (with probability
 *    letter_words) made-up words of 2-7 random lowercase letters, so that only copying
 *    from the first occurrence predicts the second.
 *  - Filler: 3-8 plain narrative sentences from a small grammar ("The dog ran to the
 *    park. It was a sunny day."), using the same names, places and objects, and the
 *    words of the held-out frames ("Tom threw the vase yesterday.").
 * Every document is followed by "<|endoftext|>" (GPT-2's convention), so the text is
 * doc<|endoftext|>doc<|endoftext|>... and contains nothing else. All randomness comes from
 * lp_rng, so the text is byte-identical on every machine for the same spec. */
#ifndef LOUPE_CORPUS_H
#define LOUPE_CORPUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_CORPUS_EOT "<|endoftext|>"

typedef enum { LP_CORPUS_IOI, LP_CORPUS_REPEAT, LP_CORPUS_FILLER, LP_CORPUS_N_KINDS } lp_corpus_kind;

typedef struct {
    uint64_t seed;
    double proportion[LP_CORPUS_N_KINDS]; /* of documents, by kind; >= 0, normalised by their sum */
    size_t n_docs;  /* this many documents, or when 0: */
    size_t n_bytes; /* documents until the text reaches this many bytes (the last one may pass it) */
    int span_min, span_max; /* words in a repeated span, 1 <= span_min <= span_max <= 64 */
    double letter_words;    /* share of spans made of random-letter words */
    double scrambled;       /* share of IOI stories scrambled (corpus.c): names in random words */
} lp_corpus_spec;

/* seed 0; proportions 0.4 IOI, 0.3 repeat, 0.3 filler; 1 MiB; spans of 4-12 words, half of
 * them random letters; no scrambled stories. */
void lp_corpus_spec_default(lp_corpus_spec *spec);

/* Where one document sits in the text, and the parts of it an evaluation looks at.
 * Offsets are into the whole text; the separator after the document is not included. */
typedef struct {
    lp_corpus_kind kind;
    size_t off, len;
    size_t story_off;              /* IOI: where the story starts (filler may come before) */
    size_t answer_off, answer_len; /* IOI: the final " Mary" (the IO, with its space) */
    size_t span_off, span_len;     /* repeat: the first occurrence of the span */
    size_t repeat_off;             /* repeat: the second occurrence (span_len bytes) */
} lp_corpus_doc;

/* Generates the corpus into *text (NUL-terminated, *len excludes the NUL). With docs
 * non-NULL, *docs gets the index of the *n_docs documents in order. The caller frees
 * *text and *docs. LP_EINVAL for a spec out of range, LP_ENOMEM. */
int lp_corpus_new(const lp_corpus_spec *spec, char **text, size_t *len, lp_corpus_doc **docs, size_t *n_docs);

/* An IOI prompt for evaluation: the story cut just before the answer. */
typedef struct {
    char prompt[320]; /* "When Mary and John went to the store, John gave a drink to" */
    char io[32];      /* the answer, the indirect object: " Mary" */
    char subject[32]; /* the other name, the subject: " John" */
    int form;         /* which of the grammar's forms (clause orders) */
    bool abba;        /* intro names the IO first ("Mary and John"), else the subject first */
} lp_ioi_prompt;

/* Which stories: those training generates, or held-out frames it never generates (new
 * clause orders, openings, verbs of giving, places and objects: filler sentences use these
 * words, so the model knows them, but no training story does). */
typedef enum { LP_IOI_TRAINING, LP_IOI_HELDOUT } lp_ioi_frames;

/* n IOI prompts from frames, drawn from a random stream that lp_corpus_new never uses;
 * ABBA and BABA alternate (even i is ABBA). Deterministic for seed. */
void lp_corpus_ioi_prompts(uint64_t seed, lp_ioi_frames frames, int n, lp_ioi_prompt *out);

int lp_corpus_n_forms(lp_ioi_frames frames); /* forms (clause orders) of the frames */
/* The names stories use (borrowed, *n of them). */
const char *const *lp_corpus_names(int *n);

/* Labelled sentences for a polarity classifier. The lexicon is two lists of adjectives the
 * corpus uses (so a tokenizer learnt on it has each as one token): positive ("happy", "nice",
 * "sunny", ...) and negative ("sad", "cold", "noisy", ...). A sentence says of a subject (a
 * name, "the park", "the dog", ...) that it was an adjective, maybe after a neutral sentence
 * ("Mary went to the park."); its label is the polarity of what it finally says:
 *  - plain:  "the park was nice."                         positive
 *  - not:    "the park was not nice."                     negative ("not" flips it)
 *  - but:    "the dog was sad but the park was nice."     positive (the second clause decides;
 *            the first's polarity is drawn apart from it, each clause may say "not": the first
 *            clause alone tells nothing, and where the two disagree a bag of words is at chance) */
typedef enum { LP_POLARITY_PLAIN, LP_POLARITY_NOT, LP_POLARITY_BUT, LP_POLARITY_N_KINDS } lp_polarity_kind;

typedef struct {
    char text[200];
    int label; /* 0 negative, 1 positive */
    lp_polarity_kind kind;
    int first; /* but: the first clause's polarity (0, 1); else -1 */
} lp_polarity_sentence;

/* n sentences from seed: kind i % 3, label (i / 3) % 2, so both are balanced. Deterministic
 * for seed. */
void lp_corpus_polarity_sentences(uint64_t seed, int n, lp_polarity_sentence *out);
const char *lp_polarity_kind_name(lp_polarity_kind k); /* "plain", "not", "but" */

#endif
