/* A training recipe: everything that decides a trained model — the corpus, the tokenizer's
 * vocabulary size, the model's shape and initialisation, the optimiser's options — and
 * the data it makes: the corpus encoded with the learnt tokenizer, split into training
 * and held-out tokens by document.
 *
 * A checkpoint directory keeps its recipe in train.json ({"recipe": {...}, "step": N,
 * "log": [...]}), so that `train --resume` rebuilds the same data and continues, and so
 * that anyone can read how a model was made. */
#ifndef LOUPE_RECIPE_H
#define LOUPE_RECIPE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "loupe/corpus.h"
#include "loupe/model.h"
#include "loupe/s2s_task.h"
#include "loupe/tokenizer.h"
#include "loupe/train.h"

/* What a recipe trains: a GPT-2 on next tokens, a T5 (--arch t5) on the digits-to-words task
 * (s2s_task.h), or a BERT (--arch bert) as a masked LM or as
 * a classifier: of IOI sentences, does the sentence end on the indirect object ("When Mary
 * and John went to the store, John gave a drink to Mary.": label io) or on the subject
 * repeated ("... to John.": label subject); or of a sentence's polarity ("The park was not
 * nice.": negative; lp_corpus_polarity_sentences). */
typedef enum { LP_TASK_LM, LP_TASK_MLM, LP_TASK_IOI, LP_TASK_POLARITY, LP_TASK_S2S } lp_train_task;
#define LP_IOI_N_LABELS 2
extern const char *const LP_IOI_LABELS[LP_IOI_N_LABELS]; /* "subject", "io" */
#define LP_POLARITY_N_LABELS 2
extern const char *const LP_POLARITY_LABELS[LP_POLARITY_N_LABELS]; /* "negative", "positive" */

typedef struct {
    lp_train_task task;
    char from[1024];         /* a BERT whose encoder weights start this one (--from), or "" */
    int examples;            /* ioi: prompts made, each with both endings (two examples); polarity: sentences;
                              * s2s: training pairs */
    lp_s2s_spec s2s;         /* s2s: the task's rules, lengths and held-out split (its seed is corpus.seed) */
    lp_corpus_spec corpus;
    int vocab;               /* BPE vocabulary, "<|endoftext|>" included */
    double heldout;          /* share of the documents (the last ones) kept for the held-out loss */
    double random_tokens;    /* per corpus document, the chance that a document of random token ids
                              * repeated (N ids, the same N again, N in 8..48) comes before it: made
                              * at the token level, after the tokenizer, so that every token of the
                              * vocabulary appears in a repeat (see lp_recipe_data) */
    double random_ioi;       /* per corpus document, the chance that an indirect-object story of random
                              * token ids comes before it: "A and B", random ids, B, random ids, " to",
                              * A (lp_recipe_data): nothing but the names' roles predicts the answer */
    lp_config model;         /* n_layer, n_head, d_model, d_mlp, n_ctx, attn_only, a T5's enc_layers (0: n_layer);
                              * vocab is set from above */
    uint64_t init_seed;      /* the initial weights */
    float embed_std;         /* std of the initial token embeddings (GPT-2: 0.02; see lp_train_set_embed_std) */
    lp_train_options train;
} lp_recipe;

/* The default recipe: the Makefile's MODEL_RECIPE for models/default (make model). */
void lp_recipe_default(lp_recipe *r);
/* A BERT's (task LP_TASK_MLM, LP_TASK_IOI or LP_TASK_POLARITY): a smaller corpus, vocabulary and context, a
 * few thousand steps (the Makefile's ENCODER_RECIPE). */
void lp_recipe_default_encoder(lp_recipe *r, lp_train_task task);
/* A T5's (task LP_TASK_S2S): 2 + 2 layers, d_model 128, the three rules on 3..8 digits (the
 * Makefile's T5_RECIPE). */
void lp_recipe_default_seq2seq(lp_recipe *r);
const char *lp_train_task_name(lp_train_task t); /* "lm", "mlm", "ioi", "polarity", "s2s" */
int lp_train_task_from_name(const char *name, lp_train_task *t); /* LP_EINVAL (no message) for another name */

/* The recipe as a JSON object, and back. Reading starts from lp_recipe_default, so keys
 * may be missing; a key of the wrong type is an error naming it. */
json_t *lp_recipe_to_json(const lp_recipe *r);
int lp_recipe_from_json(lp_recipe *r, const json_t *j, const char *what);

/* The largest corpus a recipe may ask for: 4 GiB of text, or this many documents. */
#define LP_RECIPE_MAX_BYTES 4294967296.0
#define LP_RECIPE_MAX_DOCS 20000000.0

/* Checks every number against its range (one table, the same for train.json and the
 * command's options), then the relations between them (d_model a multiple of heads, the
 * sequence within the context, ...). */
int lp_recipe_check(const lp_recipe *r);

/* Sets the number at key (its train.json key, e.g. "train.lr") to v, refusing a value
 * outside the key's range, not whole for an integer, or out of range once converted to the
 * type it is kept in; the message starts with what (e.g. "train: --lr"). */
int lp_recipe_set(lp_recipe *r, const char *key, double v, const char *what);

/* Generates the corpus and encodes it with t: each document's tokens then <|endoftext|>,
 * with random-token repeats (r->random_tokens) mixed in, drawn from the corpus seed.
 * The last ceil(heldout * documents) documents make *held; the rest *train. The caller
 * frees both. */
int lp_recipe_data(const lp_recipe *r, const lp_tokenizer *t, int **train, size_t *n_train, int **held,
                   size_t *n_held);

/* A BERT's data (lp_train's examples: LENGTH, LABEL, ids), tokenized by t (WordPiece with
 * [CLS], [SEP]): a masked LM's, the corpus's documents each followed by [SEP], cut into
 * examples [CLS] + train.seq - 2 tokens + [SEP], held out by document as lp_recipe_data;
 * an IOI classifier's, `examples` prompts of the training frames (lp_corpus_ioi_prompts) with
 * both endings, held out: ceil(heldout * examples) prompts from another seed; a polarity
 * classifier's, `examples` sentences (lp_corpus_polarity_sentences), held out the same way. */
int lp_recipe_encoder_data(const lp_recipe *r, const lp_tokenizer *t, int **train, size_t *n_train, int **held,
                           size_t *n_held);

/* A T5's data (lp_train's examples: S, T, source ids, target ids; lp_s2s_ids): `examples`
 * training pairs of the task and ceil(heldout * examples) held-out ones (s2s_task.h's split:
 * digit strings never trained on), drawn from corpus.seed. */
int lp_recipe_seq2seq_data(const lp_recipe *r, int **train, size_t *n_train, int **held, size_t *n_held);

#endif
