/* Gradients of an encoder-decoder (T5, mT5, Flan-T5): reverse mode through a captured run,
 * the decoder's layers from the top, each cross-attention handing a gradient to the
 * encoder's output, then the encoder's layers. Reads only what the run captured (no forward).
 *
 * A run r of such a model (lp_run_source(r) != NULL) has S source positions (the encoder's)
 * and T decoder positions (the decoder start id, then the target but its last token). Its
 * inputs are two matrices of token embeddings, neither with a position embedding added (T5
 * knows order only through its relative position bias):
 *   the source's   (S, d)  shared[src_ids]
 *   the target's   (T, d)  shared[decoder input ids]
 *
 * Two entry points:
 *   lp_grad_seq2seq          an objective (grad.h's lp_objective, at decoder position pos):
 *                            its gradient with respect to both inputs (attribution).
 *   lp_grad_seq2seq_seeded   any scalar loss given as its gradient with respect to the run's
 *                            logits (T, V): the same input gradients and, when asked, the
 *                            gradient of every parameter (training: for the teacher-forced
 *                            cross-entropy, dlogits = (softmax(logits) - onehot(label)) / N).
 *
 * Parameter gradients are with respect to the tensors as the checkpoint names and shapes them
 * (lp_t5_grads_tensors lists them): nn.Linear weights (out, in) row-major; the final norm of
 * the decoder is the file's weight, before the d_model^-0.5 rescale that loupe's loader folds
 * into it for tied models (that factor is applied here); `shared` collects the encoder's
 * and the decoder's input embeddings and, when tied, the output layer; each stack's relative
 * bias table (buckets, H) collects every layer's use of it (a checkpoint holding only
 * encoder/decoder.embed_tokens has them tied in Hugging Face: its gradient is still "shared").
 *
 * For training (`train --arch t5`), per example or shard:
 *     lp_t5_grads *g;  lp_t5_grads_new(&g, m);              once; lp_t5_grads_zero per step
 *     lp_run_new_seq2seq(&r, m, src, S, dec_in, T);         the forward, everything captured
 *     dlogits[t] = (softmax(logits[t]) - onehot(label[t])) / N_tokens
 *     lp_grad_seq2seq_seeded(NULL, NULL, g, r, dlogits);    adds this example's gradients
 * then an optimiser over g->block (g->n floats; lp_t5_grads_tensors names each slice, e.g.
 * for weight decay by tensor). The backward reads the weights through m (its lp_layer
 * pointers), so a trainer's model must point into the parameters it updates, and for tied
 * embeddings refresh the decoder's folded final-norm copy (file weight * d_model^-0.5) after
 * each update. */
#ifndef LOUPE_GRAD_SEQ2SEQ_H
#define LOUPE_GRAD_SEQ2SEQ_H

#include <stddef.h>

#include "loupe/grad.h"
#include "loupe/model.h"
#include "loupe/run.h"

/* One layer's parameter gradients (HF: STACK.block.L.layer.K...). Unused fields are NULL:
 * the cross-attention ones in the encoder, wi without a gated MLP, wi_0 and wi_1 with one. */
typedef struct {
    float *ln1;                 /* (d)        layer.0.layer_norm.weight */
    float *q, *k, *v;           /* (H*dh, d)  layer.0.SelfAttention.q/k/v.weight */
    float *o;                   /* (d, H*dh)  layer.0.SelfAttention.o.weight */
    float *lnx;                 /* (d)        layer.1.layer_norm.weight (decoder) */
    float *xq, *xk, *xv;        /* (H*dh, d)  layer.1.EncDecAttention.q/k/v.weight */
    float *xo;                  /* (d, H*dh)  layer.1.EncDecAttention.o.weight */
    float *ln2;                 /* (d)        layer.F.layer_norm.weight (F = 2 decoder, 1 encoder) */
    float *wi, *wi_0, *wi_1;    /* (dm, d)    layer.F.DenseReluDense.wi / wi_0 (gate) / wi_1 (up) */
    float *wo;                  /* (d, dm)    layer.F.DenseReluDense.wo */
} lp_t5_layer_grad;

/* Every parameter gradient of a T5, slices of one zeroed block. */
typedef struct {
    float *block;               /* n floats, every tensor below, in lp_t5_grads_tensors' order */
    size_t n;
    float *shared;              /* (V, d)     shared.weight */
    float *lm_head;             /* (V, d)     lm_head.weight; NULL when tied */
    lp_t5_layer_grad *enc;      /* (encoder layers) */
    float *enc_rel, *enc_lnf;   /* (buckets, H) encoder.block.0...relative_attention_bias.weight; (d) final_layer_norm */
    lp_t5_layer_grad *dec;      /* (decoder layers) */
    float *dec_rel, *dec_lnf;
} lp_t5_grads;

/* A gradient block for m's parameters, zeroed. LP_EINVAL unless m is an encoder-decoder. */
int lp_t5_grads_new(lp_t5_grads **out, const lp_model *m);
void lp_t5_grads_free(lp_t5_grads *g);
void lp_t5_grads_zero(lp_t5_grads *g);

typedef struct {
    char name[96];              /* the Hugging Face tensor name */
    float *grad;                /* into g->block */
    size_t n;                   /* floats */
    int rows, cols;             /* its shape (vectors: rows = n, cols = 1) */
} lp_t5_grad_tensor;

/* The tensors of g (made for m) by their checkpoint names, in block order: shared, lm_head
 * (untied), then each stack's layers, relative bias table and final norm. Writes up to cap
 * (out may be NULL) and returns how many there are. */
int lp_t5_grads_tensors(const lp_t5_grads *g, const lp_model *m, lp_t5_grad_tensor *out, int cap);

/* For an encoder-decoder run r and objective o at decoder position o->pos: d_src (S, d) and
 * d_tgt (T, d), the gradients with respect to the source's and the target's token embeddings
 * (rows of d_tgt after o->pos are 0: the decoder is causal; every source row carries
 * gradient); either may be NULL; *value (may be NULL) = o on the run's logits.
 * LP_EINVAL for a run without a source or a bad objective, LP_ENOMEM. */
int lp_grad_seq2seq(float *d_src, float *d_tgt, double *value, const lp_run *r, const lp_objective *o);

/* The backward of the loss whose gradient with respect to r's logits is dlogits (T, V):
 * d_src, d_tgt as lp_grad_seq2seq's (either NULL), and when pg is not NULL (made by
 * lp_t5_grads_new for r's model) every parameter's gradient ADDED to it, so that a batch
 * accumulates over its examples' runs. */
int lp_grad_seq2seq_seeded(float *d_src, float *d_tgt, lp_t5_grads *pg, const lp_run *r, const float *dlogits);

#endif
