/* Training GPT-2 models, and BERT encoders (below), from scratch: a trainable model (its parameters one writable float
 * block the model points into), the next-token loss and its gradient with respect to every
 * parameter, AdamW with warm-up and a cosine schedule and global-norm clipping, and saving
 * in Hugging Face layout (config.json + model.safetensors, F32), which lp_model_load and
 * transformers' GPT2LMHeadModel both read.
 *
 * The loss of a batch of B sequences of T + 1 tokens (tokens (B, T + 1), row-major) is the
 * mean over the B * T positions of -log p(tokens[b][t + 1] | tokens[b][0..t]).
 *
 * The parameter block holds the Hugging Face tensors in their order (lp_train_tensors):
 * wte, wpe, then per layer ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj
 * (weights then biases; Conv1D weights (in, out)), then ln_f. The unembedding is wte
 * (tied), so both of its uses add to wte's gradient. An attention-only model
 * (cfg->attn_only) has no ln_2 and no MLP tensors.
 *
 * Reproducible: the same seed, data and options (threads included) give the same
 * parameters, bit for bit, step for step: a batch is split into `threads` shards of whole
 * sequences whose gradients are summed in shard order, BLAS runs on one thread inside a
 * shard, and step s's batch depends only on the seed and s (so a resumed run continues
 * exactly as an uninterrupted one).
 *
 * BERT (cfg->head LP_HEAD_MLM or LP_HEAD_CLASSIFIER: src/train/train_encoder.c): post-norm
 * blocks, bidirectional attention, learned positions, token types, the embeddings'
 * LayerNorm, the exact (erf) GELU, in Hugging Face's tensor names (bert.embeddings...,
 * bert.encoder.layer.L..., then cls.predictions.* for a masked LM, whose decoder is the
 * word embeddings, or bert.pooler.dense and classifier for a classifier), saved as
 * BertForMaskedLM or BertForSequenceClassification. Its data is a list of examples, each
 * LENGTH, LABEL, then LENGTH token ids (LABEL -1 for a masked LM; the ids include [CLS] and
 * [SEP]); a batch is B examples of one length (drawn like the rest from the seed and the
 * step), since an encoder's sequences are not padded. A masked LM's batch is masked as BERT's
 * pre-training does: each token with an id >= n_special is chosen with mask_prob, and a
 * chosen one becomes mask_id 80% of the time, a random id >= n_special 10%, itself 10%; the
 * loss is the mean over the chosen tokens of -log p(original token). A classifier's loss is
 * the mean over the batch of -log p(label | the sequence), read at position 0.
 *
 * T5 (cfg->cross_attn: src/train/train_seq2seq.c): T5ForConditionalGeneration, v1.0's ReLU
 * feed-forward or (cfg->mlp LP_MLP_GEGLU) v1.1's gated GELU, with its own lm_head
 * (tie_word_embeddings false; a tied one is refused), cfg->n_layer decoder layers and
 * cfg->enc_layers encoder ones (0: as many), d_kv
 * d_model / n_head, relative buckets and distance from cfg (0: 32 and 128); initialised as
 * T5PreTrainedModel._init_weights; pad 0 = the decoder's start, eos 1. Its parameter block
 * is grad_seq2seq.h's gradient block (lp_t5_grads_tensors' order and names). Its data is a
 * list of examples, each S, T, then S source ids and T target ids (the target ending in
 * </s>); a batch is B of them drawn at random, of any lengths: each example is its own run
 * (lp_run_new_seq2seq) and backward (lp_grad_seq2seq_seeded), so nothing is padded. As
 * lp_train_encoder_loss's rows (width W >= 1 + 2 * the longest source or target): ids
 * holds S, the source, then -1s; tgt holds -1 over those 1 + S places, then the target, then
 * -1s; the decoder reads the start id and the target but its last id. The loss is the mean
 * over every target id of the batch of -log p(id | source, the target before it); o->T is
 * the longest source or target an example may have. */
#ifndef LOUPE_TRAIN_H
#define LOUPE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loupe/model.h"

/* One parameter tensor: where it sits in the block and whether AdamW decays it. */
typedef struct {
    char name[96];   /* Hugging Face name, e.g. "h.0.attn.c_attn.weight" */
    size_t offset;   /* floats from the start of the block */
    size_t size;     /* floats */
    int ndim;
    long shape[2];
    bool decay;      /* weight decay: matrices and embeddings yes, biases and norms no (as nanoGPT) */
} lp_param_tensor;

/* The tensors of a trainable model of shape c: writes up to cap of them to out (out may be
 * NULL) and returns how many there are. */
int lp_train_tensors(const lp_config *c, lp_param_tensor *out, int cap);

/* A trainable GPT-2 of shape cfg (a BERT when cfg->head is LP_HEAD_MLM or
 * LP_HEAD_CLASSIFIER with cfg->n_labels: initialised as BertPreTrainedModel, N(0, 0.02),
 * norms 1, biases 0; its labels LABEL_i until lp_train_set_labels) (cfg->family/norm/pos/mlp are set to GPT-2's; d_head is
 * d_model / n_head; the unembedding is tied), initialised as GPT-2 is: weights N(0, 0.02),
 * the residual projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 n_layer)), norm
 * weights 1, biases 0. Free with lp_model_free. */
int lp_train_model_new(lp_model **out, const lp_config *cfg, uint64_t seed);
/* Scales the token embeddings (drawn with std 0.02) to std: a wider spread keeps tokens
 * that the data treats alike (the corpus's names, its random words) apart after the
 * LayerNorm, which copying needs; at 0.02 they collapse onto one direction and copying
 * never starts (measured: IOI-only corpus, 2 layers, d 64: IO top-1 2/200 at 0.02, 117/200
 * at 1.0 after 2000 steps). */
void lp_train_set_embed_std(lp_model *m, float std);
/* The writable parameter block (n floats) of a model from lp_train_model_new; NULL for a
 * model that was loaded. The model reads it on every forward. */
float *lp_train_params(lp_model *m, size_t *n);
/* Starts a trainable BERT from dir/model.safetensors (a BERT loupe trained, of the same
 * shape): its embeddings and layers, and its head when it has this one (a classifier from a
 * masked LM keeps its new pooler and output layer). On failure the model is unchanged. */
int lp_train_start_from(lp_model *m, const char *dir);
/* Names the n labels of a trainable classifier (n must be its n_labels). */
int lp_train_set_labels(lp_model *m, const char *const *names, int n);
/* A trainable BERT's loss on B sequences of T tokens ids (B, T): a masked LM's mean over the
 * positions whose target tgt (B, T) is >= 0 of -log p(tgt); a classifier's mean over the
 * sequences of -log p(tgt[b * T] | sequence b) (the rest of tgt is ignored); a T5's over B
 * rows of width T as above. With grad, its gradient (n params). */
int lp_train_encoder_loss(const lp_model *m, const int *ids, const int *tgt, int B, int T, double *loss, float *grad);

/* loss = the batch's mean next-token loss; when grad is not NULL, grad (n params) = its
 * gradient. tokens (B, T + 1), T <= n_ctx, every id in the vocabulary. */
int lp_train_loss(const lp_model *m, const int *tokens, int B, int T, double *loss, float *grad);

typedef struct {
    int B, T;              /* batches of B sequences of T tokens (and T + 1 for their targets) */
    int steps;             /* optimiser steps */
    int warmup;            /* steps of linear warm-up to lr */
    float lr, min_lr;      /* peak learning rate; the cosine decays it to min_lr at the last step */
    float beta1, beta2, eps;
    float weight_decay;    /* decoupled (AdamW), on tensors with decay set */
    float grad_clip;       /* clip the gradient's global L2 norm to this; 0: no clipping */
    int eval_every;        /* held-out loss every this many steps (and at the last); 0: never */
    int eval_batches;      /* batches of the held-out loss */
    uint64_t seed;         /* which windows of the data each batch takes */
    int threads;           /* shards of each batch, run in parallel; the result depends on it (1..256) */
    /* Masked LMs (BERT) only: */
    float mask_prob;       /* the share of tokens chosen (BERT: 0.15) */
    int mask_id;           /* the [MASK] token */
    int n_special;         /* ids below this ([PAD], [UNK], [CLS], [SEP], [MASK]) are never chosen nor drawn */
} lp_train_options;

/* Sensible defaults for a small model: B 8, T 64, lr 1e-3 to 1e-4, warm-up 10% of steps,
 * betas (0.9, 0.95), eps 1e-8, weight decay 0.1, clip 1.0, eval every 100 steps over 8 batches,
 * seed 1, one thread. */
lp_train_options lp_train_defaults(int steps);
/* The learning rate at step (0-based) of o's schedule. */
float lp_train_lr(const lp_train_options *o, int step);

typedef struct {
    int step, steps;       /* this step (1-based) of steps */
    double loss;           /* training loss of this step's batch, before the update */
    double grad_norm;      /* global L2 norm of its gradient, before clipping */
    float lr;
    double tokens_per_s;   /* training tokens per second so far */
    double elapsed_s;
    double eval_loss;      /* held-out loss after this step's update, or NAN when not evaluated */
} lp_train_progress;

/* Called after every step; non-zero stops training (lp_train then returns LP_ECANCEL). */
typedef int (*lp_train_fn)(const lp_train_progress *p, void *ctx);

/* AdamW's state: the moments of every parameter and the steps taken. */
typedef struct {
    int step;          /* steps taken; training continues at this one */
    size_t n;          /* parameters */
    float *exp_avg;    /* (n) first moment */
    float *exp_avg_sq; /* (n) second moment */
} lp_train_state;

/* A fresh state (step 0, zero moments) for m's parameters; free with lp_train_state_free. */
int lp_train_state_new(lp_train_state *s, const lp_model *m);
void lp_train_state_free(lp_train_state *s);

/* Trains m from st->step up to o->steps, updating st; lp_train is the same from a fresh
 * state. */
int lp_train_resume(lp_model *m, lp_train_state *st, const int *data, size_t n, const int *heldout,
                    size_t n_heldout, const lp_train_options *o, lp_train_fn cb, void *ctx);

/* Trains m (from lp_train_model_new) on windows of T + 1 tokens drawn from data (n ids),
 * evaluating on windows of heldout (n_heldout ids; may be NULL when eval_every is 0). cb may
 * be NULL. LP_EINVAL for a model that is not trainable, options out of range or data shorter
 * than a window; LP_ECANCEL when cb or lp_cancel_request stops it; LP_ERANGE when training
 * diverges (the loss, the gradient, a weight or the held-out loss infinite or NaN): then it
 * stops before calling cb on that step, and m holds the diverged weights. */
int lp_train(lp_model *m, const int *data, size_t n, const int *heldout, size_t n_heldout,
             const lp_train_options *o, lp_train_fn cb, void *ctx);

/* The mean loss of `batches` batches of B windows of T + 1 tokens from data, drawn by seed.
 * GPT-2 only: a BERT's held-out loss is lp_train's (eval_every), which has its masking. */
int lp_train_eval(const lp_model *m, const int *data, size_t n, int B, int T, int batches, uint64_t seed,
                  double *loss);

/* Saves a trainable model into dir (created if missing): config.json and model.safetensors,
 * F32. An attention-only model is saved as the GPT-2 it equals (MLP of width 1, all zeros),
 * so that any GPT-2 reader computes the same function. */
int lp_train_save(const lp_model *m, const char *dir);

/* Reads dir/model.safetensors (as lp_train_save writes it, same shape) into the parameters
 * of a trainable model; on failure the model is unchanged. */
int lp_train_load_params(lp_model *m, const char *dir);

/* The optimiser state as optimizer.safetensors at path: "exp_avg.NAME" and
 * "exp_avg_sq.NAME" (F32) for every tensor NAME, the step in the metadata. Loading takes
 * the step from the caller (the recipe records it) and replaces *s only on success. */
int lp_train_state_save(const lp_train_state *s, const lp_model *m, const char *path);
int lp_train_state_load(lp_train_state *s, const lp_model *m, const char *path, int step);

#endif
