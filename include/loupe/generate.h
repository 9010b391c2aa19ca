/* Generation with a key/value cache: each new token costs one position of compute. */
#ifndef LOUPE_GENERATE_H
#define LOUPE_GENERATE_H

#include <stdint.h>

#include "loupe/model.h"
#include "loupe/run.h"

typedef struct {
    float temperature;  /* 0 = greedy (argmax) */
    int top_k;          /* 0 = no limit */
    float top_p;        /* 1 = no nucleus cut */
    uint64_t seed;
} lp_sampling;

typedef struct lp_generator lp_generator;

/* A cache for sequences of up to max_len tokens (<= the model's context). */
int lp_generator_new(lp_generator **out, const lp_model *m, int max_len);
/* The decoder of an encoder-decoder (T5) attending to source, its encoder's run: the cross
 * keys and values are computed here, once. */
int lp_generator_new_seq2seq(lp_generator **out, const lp_model *m, int max_len, const lp_run *source);
void lp_generator_free(lp_generator *g);
/* Appends ids[0..n) to the cached sequence in one block (so a prompt costs a few large
 * matrix products); *logits (optional) receives the last position's logits (V), borrowed
 * until the next call. */
int lp_generator_feed(lp_generator *g, const int *ids, int n, const float **logits);
int lp_generator_len(const lp_generator *g);
/* Every later feed runs with e applied (lp_edit; NULL: none), each call seeing the block fed. */
void lp_generator_set_edit(lp_generator *g, const lp_edit *e);
void lp_generator_reset(lp_generator *g);

/* Picks the next token from logits (V) as s says; the rng state advances. */
typedef struct { uint64_t state; } lp_rng;
void lp_rng_seed(lp_rng *rng, uint64_t seed);
/* splitmix64's output for state x (what lp_rng gives next from state x): a 64-bit hash of x
 * whose every bit depends on every bit of x. */
uint64_t lp_mix64(uint64_t x);
double lp_rng_uniform(lp_rng *rng);  /* [0, 1) */
int lp_sample(const float *logits, int vocab, const lp_sampling *s, lp_rng *rng);

/* The ids of the k largest logits (V), largest first, ties by smaller id: ids (k). A few
 * passes of insertion for small k (the per-position top-5 every run records), a heap for
 * large k (a TopK dictionary's). 1 <= k <= V. Returns LP_OK (an int for its callers' chains). */
int lp_top_k(int *ids, const float *logits, int vocab, int k);
/* The softmax of logits (V) as its normaliser: returns z = sum exp(logit - *max), *max the
 * largest logit, so that a token's probability is exp(logit - *max) / z. Vectorised float
 * terms summed in double: within 1e-6 relative of the double sum. */
double lp_softmax_norm(const float *logits, int vocab, float *max);
/* The top k of each of rows logit vectors, logits (rows, vocab): ids (rows, k) as lp_top_k
 * and probs (rows, k) their softmax probabilities (exp(logit - max) / lp_softmax_norm), the
 * rows split over the compute threads (lp_parallel_for). LP_ENOMEM only for large k. */
int lp_top_k_rows(int *ids, double *probs, const float *logits, int rows, int vocab, int k);

/* Continues prompt[0..n_prompt) by up to n_new tokens into out (capacity n_new); stops
 * early at the tokenizer's EOS when stop_at_eos. *n_out = tokens generated. */
int lp_generate(const lp_model *m, const int *prompt, int n_prompt, int n_new, const lp_sampling *s,
                int stop_at_eos, int *out, int *n_out);
/* lp_generate with edit (NULL: none) applied to the prompt and every token after it. */
int lp_generate_edited(const lp_model *m, const int *prompt, int n_prompt, int n_new, const lp_sampling *s,
                       int stop_at_eos, const lp_edit *edit, int *out, int *n_out);
/* The same for an encoder-decoder's decoder over source (its encoder's run); prompt starts
 * with the decoder start id; stops at the model's eos_token_id when stop_at_eos. */
int lp_generate_seq2seq(const lp_model *m, const lp_run *source, const int *prompt, int n_prompt, int n_new,
                        const lp_sampling *s, int stop_at_eos, int *out, int *n_out);

#endif
