/* The forward pass, one layer over a block of n new positions [t0, t0 + n) that attend
 * to a key/value cache holding positions [0, t0). A full captured run is the block
 * t0 = 0, n = T; generation feeds blocks of one token. Not a public header. */
#ifndef LOUPE_FORWARD_H
#define LOUPE_FORWARD_H

#include "loupe/run.h"
#include "arch/model_impl.h"

/* Where one layer's activations for the block go (shapes for the block of n rows). */
typedef struct {
    const float *resid_in;         /* (n, d) */
    float *ln1, *ln1_scale;        /* (n, d), (n) */
    float *q;                      /* (n, H*dh) */
    float *k, *v;                  /* (t0 + n, Hkv*dh): cache rows [0, t0) read, [t0, t0 + n) written */
    float *pattern;                /* (H, n, pattern_ld): row i holds keys 0 .. t0 + i, zeros after */
    int pattern_ld;                /* >= t0 + n */
    float *pattern_stats;          /* NULL, or (H, n, 2): each row's entropy and largest entry */
    /* Packed sequences (t0 = 0): rows [seg[s], seg[s + 1]) are sequence s of n_seg, and it
     * attends within itself only; pattern then holds each sequence's (H, n_s, n_s) one after
     * another (pattern_ld unused), and rotary tables give each row its position in its
     * sequence. seg NULL: the n rows are one sequence. */
    const int *seg;
    int n_seg;
    float *z;                      /* (n, H*dh) */
    float *attn_out, *resid_mid;   /* (n, d) */
    float *ln2, *ln2_scale;        /* (n, d), (n) */
    float *mlp_pre, *mlp_up, *mlp_post; /* (n, dm); mlp_up unused unless SwiGLU */
    float *mlp_out, *resid_out;    /* (n, d) */
    float *post1_scale, *post2_scale; /* cfg.sandwich_norm: (n) the scales of the norms on attention's and the
                                     MLP's outputs (attn_out, mlp_out are after them), or NULL */
    /* LP_POS_RELATIVE: the bias of head h for a key at offset rel = key - query is
     * rel_bias[rel_bucket[rel + rel_off] * H + h] */
    const float *rel_bias;
    const int *rel_bucket;
    int rel_off;
    /* cfg.cross_attn: attention over the S rows of the encoder's output, between
     * self-attention (resid_mid) and the MLP, which then reads resid_cross */
    int S;
    const float *xk, *xv;          /* (S, H*dh): the encoder's output through xk, xv */
    float *lnx, *lnx_scale;        /* (n, d), (n) */
    float *xq;                     /* (n, H*dh) */
    float *xpattern;               /* (H, n, S) */
    float *xz;                     /* (n, H*dh) */
    float *xattn_out, *resid_cross;/* (n, d) */
    /* called at z, attn_out, resid_mid, ln2, mlp_out, resid_out (as resid_post); resid_pre
     * is the caller's to edit before the layer (resid_in is read only) */
    lp_edit edit;
} lp_layer_io;

/* T5Attention._relative_position_bucket for rel = key position - query position, in the
 * float32 arithmetic Hugging Face uses (its bucket edges are float32's). */
int lp_rel_bucket(int rel, bool bidirectional, int num_buckets, int max_distance);

/* x (n, d): token embeddings of ids, plus learned positions from t0 (RoBERTa: counted from
 * pos_offset over this block's non-padding ids, so t0 must be 0), plus token-type embeddings
 * of types (n; NULL: all 0) when the model has them, then the embeddings' LayerNorm when it
 * has one. */
void lp_embed(float *x, const lp_model *m, const int *ids, const int *types, int t0, int n);
/* The same before the embeddings' LayerNorm: word + position (+ token type), what an
 * encoder's input gradient is taken with respect to. */
void lp_embed_sum(float *x, const lp_model *m, const int *ids, const int *types, int t0, int n);
/* lp_run_new_typed with the input given as embeddings sum (n, d) instead of looked up from
 * ids: the summed embeddings before their LayerNorm (encoders; lp_embed_sum's), or the
 * embeddings themselves (decoders). ids still name the tokens (for display; NULL: all 0). For the
 * attributions that vary the input (integrated gradients, occlusion) one run at a time. */
int lp_run_new_embedded(lp_run **out, const lp_model *m, const int *ids, const int *types, const float *sum, int n);
/* (T, d): the summed embeddings before their LayerNorm that r ran on (given to
 * lp_run_new_embedded, or looked up from its ids); NULL for models without that norm, whose
 * input is resid_pre of layer 0. */
const float *lp_run_embed_sum(const lp_run *r);
/* lp_run_new_seq2seq with either stack's input given as its token embeddings: src_x (S, d)
 * for the encoder, x (n, d) for the decoder (NULL: looked up from src, ids, which still name
 * the tokens). For the attributions that vary both inputs (integrated gradients, occlusion). */
int lp_run_new_seq2seq_embedded(lp_run **out, const lp_model *m, const int *src, const float *src_x, int S,
                                const int *ids, const float *x, int n);
/* What an encoder-decoder run's cross-attention captured that lp_run_view does not show,
 * for the backward (grad_seq2seq.c): layer l's lnx_scale (T), xq (T, H*dh), xk and xv
 * (S, H*dh), the encoder's output through the layer's cross keys and values. */
void lp_run_cross_tape(const lp_run *r, int layer, const float **lnx_scale, const float **xq, const float **xk,
                       const float **xv);
/* cfg.sandwich_norm: layer's post-attention and post-MLP norm scales (T), NULL otherwise. */
void lp_run_post_scales(const lp_run *r, int layer, const float **post1, const float **post2);
/* The head of an encoder over rows x (rows, d): h (rows, d) = [LN](act(dense(x))), then
 * logits (rows, W) = h W_out + b when there is an output layer. */
void lp_head_forward(float *h, float *logits, const lp_model *m, const float *x, int rows);
/* An encoder head's activation of v, in double. */
double lp_head_act_value(lp_head_act a, double v);
/* Rotary tables for positions t0 .. t0 + n - 1: cos, sin (n, d_head / 2). */
void lp_rope_tables(float *cos_t, float *sin_t, const lp_config *c, int t0, int n);
void lp_layer_forward(const lp_model *m, int layer, const lp_layer_io *io, const float *cos_t, const float *sin_t,
                      int t0, int n);
/* y (n, d), scale (n) = norm of x (n, d) with weight w and bias b (b NULL for RMSNorm);
 * scale may be NULL. */
void lp_norm(float *y, float *scale, const float *x, const float *w, const float *b, int n, int d, lp_norm_kind kind,
             float eps);
/* y (n, out) = x (n, in) W + b. */
void lp_linear_forward(float *y, const float *x, const lp_linear *lin, int n);

/* ---- several blocks through one layer at once ----
 * Activation patching re-runs many variants of one sequence, each from some position on.
 * Block b holds positions [t0, t0 + n) of its own variant, whose key/value cache for the
 * layer is (k, v); the blocks' rows are stacked (block 0's first) in every array of
 * lp_batch_io, so that the projections and the MLP run as one matrix product over all rows
 * while attention runs block by block. */
typedef struct {
    int t0, n;
    float *k, *v;                  /* (t0 + n, Hkv*dh): rows [0, t0) read, [t0, t0 + n) written */
    const float *xk, *xv;          /* cfg.cross_attn: (S, H*dh), this variant's encoder output through xk, xv */
} lp_block;

typedef struct {
    const float *resid_in;         /* (N, d), N = the blocks' rows together */
    float *ln1, *ln1_scale;        /* (N, d), (N) */
    float *q, *k_new, *v_new;      /* (N, H*dh), (N, Hkv*dh), (N, Hkv*dh) */
    float *pattern;                /* (H, n_max, pattern_ld): scratch, reused block by block */
    int pattern_ld;                /* >= every block's t0 + n */
    float *z;                      /* (N, H*dh) */
    float *attn_out, *resid_mid;   /* (N, d) */
    float *ln2, *ln2_scale;        /* (N, d), (N) */
    float *mlp_pre, *mlp_up, *mlp_post; /* (N, dm) */
    float *mlp_out, *resid_out;    /* (N, d) */
    /* LP_POS_RELATIVE: as lp_layer_io's, for positions counted from 0 in every block */
    const float *rel_bias;
    const int *rel_bucket;
    int rel_off;
    /* cfg.cross_attn: attention over each block's S rows of encoder output (lp_block's xk, xv) */
    int S;
    float *lnx, *lnx_scale;        /* (N, d), (N) */
    float *xq, *xz;                /* (N, H*dh) */
    float *xpattern;               /* (H, n_max, S): scratch, reused block by block */
    float *xattn_out, *resid_cross;/* (N, d) */
    /* When set, called with each of z, attn_out, cross_z, cross_out and mlp_out (all N rows,
     * or nblocks under last_only) once it is computed and before it is used, so that a caller
     * can overwrite rows of it. */
    lp_edit edit;
    /* When set (for the last layer, when only the last position is read out), only each
     * block's last row goes on past its keys and values: z, attn_out, resid_mid, the cross
     * attention, ln2, the MLP and resid_out then hold one row per block, nblocks rows. */
    int last_only;
} lp_batch_io;

/* The same computation as lp_layer_forward for every block; cos_t, sin_t: rotary tables
 * for positions from 0 (block b reads them from row t0). */
void lp_layer_forward_batch(const lp_model *m, int layer, const lp_batch_io *io, const lp_block *blocks, int nblocks,
                            const float *cos_t, const float *sin_t);

/* ---- B whole sequences of T tokens each (rows b * T .. b * T + T - 1 are sequence b), for
 * the backward pass and its batches: the same kernels as lp_layer_forward ---- */

/* Causal attention of every sequence from position 0: q (B*T, H*dh), k and v (B*T, Hkv*dh),
 * after rotary embedding; writes pattern (B, H, T, T) and z (B*T, H*dh). */
void lp_attention_seqs(float *pattern, float *z, const lp_config *c, int window, const float *q, const float *k,
                       const float *v, int B, int T);
/* The mean of x[0..d) in double, summed in lanes (a fixed order): LayerNorm's, which its
 * backward (grad.c, training) recomputes to the same bits. */
double lp_row_mean(const float *x, int d);

/* The scale of attention scores: cfg.attn_scale, else 1/sqrt(d_head) (1 when unscaled). */
float lp_attn_scale(const lp_config *c);
/* x (n) = cap * tanh(x / cap) in place when cap > 0 (Gemma 2's soft caps). */
void lp_softcap(float *x, size_t n, float cap);
/* Rotary embedding of x (n, heads*dh) in place, row i at the angles of row i of the tables
 * (n, dh/2); with the sines negated it is the inverse rotation (the backward's). */
void lp_rope_rows(float *x, const lp_config *c, int n, int heads, const float *cos_t, const float *sin_t);
/* y = GELU-tanh(x), and y = SiLU(gate) * up, over n floats, as lp_layer_forward computes them
 * for decoders (the backward pass knows no other activation yet). */
void lp_gelu_rows(float *y, const float *x, size_t n);
/* y = act(gate) * up over n floats, act SiLU (SwiGLU) or GELU-tanh (GeGLU). */
void lp_gated_rows(float *y, const float *gate, const float *up, size_t n, lp_mlp_kind kind);
/* y = act(x) over n floats for the non-gated MLPs (GELU-tanh, GELU-erf, ReLU). */
void lp_act_rows(float *y, const float *x, size_t n, lp_mlp_kind kind);
void lp_swiglu_rows(float *y, const float *gate, const float *up, size_t n);

#endif
