/* What train.c (the loop, AdamW, checkpoints) asks of the architectures trained on examples
 * rather than on windows of one token stream: BERT (train_encoder.c) and T5
 * (train_seq2seq.c). Each fills one train_arch; train.c calls it wherever GPT-2 (its own)
 * would do the work itself. Not a public header. */
#ifndef LOUPE_TRAIN_IMPL_H
#define LOUPE_TRAIN_IMPL_H

#include <stdint.h>

#include "arch/model_impl.h"
#include "loupe/generate.h"
#include "loupe/train.h"

/* A batch is B rows of `width` ints in ids and in tgt (the row layouts are the
 * architecture's: train.h). tgt's entries >= 0 are the targets the loss averages over. */
typedef struct {
    /* The tensors of a model of shape c in Hugging Face's names, in the block's order. */
    int (*tensors)(const lp_config *c, lp_param_tensor *out, int cap);
    /* A trainable model of shape cfg, initialised as its Hugging Face class does. */
    int (*model_new)(lp_model **out, const lp_config *cfg, uint64_t seed);
    /* config.json and model.safetensors. */
    int (*save)(const lp_model *m, const char *dir);
    /* LP_EINVAL unless ids and tgt (B, width) are a batch this model takes; *targets = the
     * targets in it (>= 1). */
    int (*check)(const lp_model *m, const int *ids, const int *tgt, int B, int width, int *targets);
    /* One shard's scratch for up to B rows of width ints (void: each architecture's own). */
    int (*work_new)(void **out, const lp_config *c, int B, int width);
    void (*work_free)(void *w);
    /* The summed loss of the batch; with grad, grad (the block's layout) = its gradient
     * times inv_n. */
    double (*step)(void *w, const lp_model *m, const int *ids, const int *tgt, int B, int width, float *grad,
                   const lp_param_tensor *t, float inv_n);
    /* The examples of lp_train's data (what = "training" or "held-out" for messages). */
    int (*examples_new)(void **out, const lp_model *m, const int *data, size_t n, const lp_train_options *o,
                        const char *what);
    void (*examples_free)(void *x);
    /* The widest row of a batch under o: what ids and tgt are allocated for. */
    int (*max_width)(const lp_train_options *o);
    /* Batch `step` of a run seeded `seed` into ids and tgt; returns its width. */
    int (*draw)(int *ids, int *tgt, const void *x, const lp_model *m, const lp_train_options *o, uint64_t seed,
                int step);
} train_arch;

extern const train_arch ENC_ARCH; /* BERT: cfg->head LP_HEAD_MLM or LP_HEAD_CLASSIFIER */
extern const train_arch S2S_ARCH; /* T5: cfg->cross_attn */

/* The architecture of a trainable model of shape c, or NULL for GPT-2 (train.c's own). */
const train_arch *train_arch_of(const lp_config *c);

/* dw, db (d) += the LayerNorm weight and bias gradients given dy (n, d) for y = xhat w + b,
 * xhat recomputed from x (n, d) and the forward's scale (n) (train.c). */
void norm_weight_backward(float *dw, float *db, const float *dy, const float *x, const float *scale, int n, int d);

/* N(0, 1) by Box-Muller (train.c): every initialisation draws through it. */
float train_normal(lp_rng *rng);

/* dir (created if missing) gets model.safetensors, every tensor of m's block (lp_train_tensors)
 * as F32 under its name, then config.json from config, which this takes (NULL: out of
 * memory). BERT's and T5's save. */
int train_save_hf(const lp_model *m, const char *dir, json_t *config);

/* A float as the shortest decimal that reads back to it (1e-12, not 9.99999996e-13), for
 * config.json (train_encoder.c). */
double train_short_decimal(float x);

#endif
