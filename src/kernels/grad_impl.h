/* Backward kernels of grad.c that training (train.c) shares: the gradients with respect to
 * a kernel's input, and the attention backward with the layer types it reads and writes.
 * Not a public header. */
#ifndef LOUPE_GRAD_IMPL_H
#define LOUPE_GRAD_IMPL_H

#include <stddef.h>

#include "arch/model_impl.h"
#include "loupe/grad.h"

/* dx (n, in) = dy (n, out) W^T + beta dx, for y = x W + b. */
void linear_backward(float *dx, const float *dy, const lp_linear *lin, int n, float beta);
/* dx (n, d) += the gradient through y = norm(x) given dy (n, d); scale (n) is the forward's. */
void norm_backward(float *dx, const float *dy, const float *x, const float *scale, const float *w, int n, int d,
                   lp_norm_kind kind);
/* d_pre (n) = d_post * GELU-tanh'(pre). */
void gelu_backward(float *d_pre, const float *d_post, const float *pre, size_t n);
/* act'(x) for the activations of encoders' MLPs and heads. */
double lp_head_act_deriv(lp_head_act a, double x);

/* An encoder's head backward: dx (d) = d o / d x for x (d), the last layer's output at
 * o->pos, whose head gave logits (W = the output width); *value = o on logits. LP_ENOMEM
 * if its scratch cannot be had. */
int encoder_head_backward(float *dx, double *value, const lp_model *m, const float *x, const float *logits,
                          const lp_objective *o);

/* A layer's saved activations as the backward reads them; rows = B * T, sequence-major. */
typedef struct {
    const float *resid_in, *ln1_scale;  /* (rows, d), (rows) */
    const float *q, *k, *v;             /* (rows, H*dh), (rows, Hkv*dh), (rows, Hkv*dh): q, k after rotary */
    const float *pattern;               /* (B, H, T, .): row stride p_ld, head stride p_hs, sequence stride H * p_hs */
    long p_ld, p_hs;
    const float *resid_mid, *ln2_scale; /* (rows, d), (rows) */
    const float *mlp_pre, *mlp_up;      /* (rows, dm); mlp_up SwiGLU only */
    long q_ld, kv_ld;                   /* row strides of q and of k, v; 0: H*dh and Hkv*dh (a fused q|k|v: its width) */
    /* cfg.sandwich_norm (Gemma 2): attention's and the MLP's outputs before their post-norms, (rows, d),
     * and those norms' scales (rows) */
    const float *attn_raw, *mlp_raw, *post1_scale, *post2_scale;
} tape_layer;

/* Where a layer's gradients go: every one is kept by lp_grad, scratch in batches and training. */
typedef struct {
    float *d_mid;                 /* (rows, d): resid_mid, which is also attn_out's */
    float *d_ln1, *d_ln2;         /* (rows, d) */
    float *d_q, *d_z;             /* (rows, H*dh) */
    float *d_k, *d_v;             /* (rows, Hkv*dh) */
    float *d_qr, *d_kr;           /* (rows, H*dh), (rows, Hkv*dh): d_q, d_k rotated back (scratch) */
    float *d_pattern;             /* NULL, or as pattern with strides dp_ld, dp_hs */
    long dp_ld, dp_hs;
    float *d_pre, *d_up, *d_post; /* (rows, dm) */
    float *dP;                    /* (T, T) scratch */
    long dq_ld, dkv_ld;           /* row strides of d_q and of d_k, d_v; 0: H*dh and Hkv*dh */
    float *d_raw;                 /* (rows, d) scratch: cfg.sandwich_norm, a post-norm's input gradient */
} grad_layer;

/* For every sequence and head: z = P v with P = softmax(scale q k^T) (causal; the scores soft-
 * capped first when cfg.attn_softcap, and P zero outside a sliding window). Given g->d_z,
 * writes g->d_q and adds to g->d_k, g->d_v (query heads of a group share theirs; zero them
 * first). Reads t->q, k, v, pattern; g->dP (T, T) is scratch; g->d_pattern, if not NULL, gets dP.
 * Up to ATTN_LOOP_MAX_T tokens, a sequence's key/value head (and its query heads) at a time on
 * the worker pool, in loops: the same sums in a fixed order whatever the thread count. Past
 * it, per-head matrix products: on the Intel VM (session 15) ig at T=128 took 14.0-14.4 s in
 * the loops (GPT-2 small; BERT-base 19.7-20.5 s, whose full square doubles them) and
 * 11.5-12.4 s (BERT 14.3-15.4 s) in products; at T=96 the products were 5% ahead, at T=64
 * level; at T=32 the loops are what made ig fast (it had made 28,000 products of 32 x 32 x 64). */
#define ATTN_LOOP_MAX_T 64
void attention_backward(const grad_layer *g, const tape_layer *t, const lp_config *c, int B, int T);

/* Causal attention of B sequences of T tokens from position 0 (no soft cap, window or
 * relative bias; d_head a multiple of 16), as lp_attention_seqs writes it (pattern (B, H, T,
 * T), z (B*T, H*dh)) but in 16-lane loops with vmath's exp (kernels/attention16.c): for
 * training. Nonzero, and nothing written, where it does not apply or memory ran out. */
int lp_attention16(float *pattern, float *z, const lp_config *c, const float *q, const float *k, const float *v,
                   int B, int T);

/* lp_attention16's backward, as attention_backward (dq written, dk and dv added to; zero them
 * first) for the pattern lp_attention16 wrote, unit row strides and no d_pattern. Nonzero,
 * and nothing written, where it does not apply or memory ran out. */
int lp_attention16_backward(const grad_layer *g, const tape_layer *t, const lp_config *c, int B, int T);

#endif
