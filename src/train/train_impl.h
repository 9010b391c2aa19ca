/* What train.c (the loop, AdamW, checkpoints) asks of train_encoder.c (BERT: its tensors,
 * its forward and backward over a batch, its examples and saving). Not a public header. */
#ifndef LOUPE_TRAIN_IMPL_H
#define LOUPE_TRAIN_IMPL_H

#include <stdint.h>

#include "arch/model_impl.h"
#include "loupe/train.h"

/* BERT's tensors in Hugging Face's names, in the block's order (lp_train_tensors). */
int enc_tensors(const lp_config *c, lp_param_tensor *out, int cap);
/* A trainable BERT of cfg's shape (cfg->head LP_HEAD_MLM or LP_HEAD_CLASSIFIER), as
 * lp_train_model_new's other half. */
int enc_model_new(lp_model **out, const lp_config *cfg, uint64_t seed);
/* config.json (BertForMaskedLM / BertForSequenceClassification) and model.safetensors. */
int enc_save(const lp_model *m, const char *dir);

/* One shard's activations and backward scratch for up to B sequences of up to T tokens. */
typedef struct enc_work enc_work;
int enc_work_new(enc_work **out, const lp_config *c, int B, int T);
void enc_work_free(enc_work *w);
/* The summed loss of B sequences of T tokens ids (B, T) against tgt (B, T) (see
 * lp_train_encoder_loss); with grad, grad (the block's layout) = its gradient times inv_n. */
double enc_step(enc_work *w, const lp_model *m, const int *ids, const int *tgt, int B, int T, float *grad,
                const lp_param_tensor *t, float inv_n);

/* dw, db (d) += the LayerNorm weight and bias gradients given dy (n, d) for y = xhat w + b,
 * xhat recomputed from x (n, d) and the forward's scale (n) (train.c). */
void norm_weight_backward(float *dw, float *db, const float *dy, const float *x, const float *scale, int n, int d);

/* The examples of an encoder's data (lp_train's format for encoders), indexed by length. */
typedef struct enc_examples enc_examples;
int enc_examples_new(enc_examples **out, const lp_model *m, const int *data, size_t n, int T_max, const char *what);
void enc_examples_free(enc_examples *x);
/* Batch `step` of a run seeded `seed`: B examples of one length (returned) into ids (B, T)
 * and their targets into tgt (B, T), masked as o says when the model is a masked LM. */
int enc_draw(int *ids, int *tgt, const enc_examples *x, const lp_model *m, const lp_train_options *o, uint64_t seed,
             int step);

#endif
