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
#include "loupe/tokenizer.h"
#include "loupe/train.h"

typedef struct {
    lp_corpus_spec corpus;
    int vocab;               /* BPE vocabulary, "<|endoftext|>" included */
    double heldout;          /* share of the documents (the last ones) kept for the held-out loss */
    double random_tokens;    /* per corpus document, the chance that a document of random token ids
                              * repeated (N ids, the same N again, N in 8..48) comes before it: made
                              * at the token level, after the tokenizer, so that every token of the
                              * vocabulary appears in a repeat (see lp_recipe_data) */
    lp_config model;         /* n_layer, n_head, d_model, d_mlp, n_ctx, attn_only; vocab is set from above */
    uint64_t init_seed;      /* the initial weights */
    float embed_std;         /* std of the initial token embeddings (GPT-2: 0.02; see lp_train_set_embed_std) */
    lp_train_options train;
} lp_recipe;

/* The default recipe: the Makefile's MODEL_RECIPE for models/default (make model). */
void lp_recipe_default(lp_recipe *r);

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

#endif
