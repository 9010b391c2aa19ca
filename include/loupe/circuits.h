/* Circuits: forward-only analyses that take a run apart into the pieces that write to the
 * residual stream (as TransformerLens's decompose_resid and stack_head_results do), swap
 * pieces between two runs (activation patching), and classify heads by what they attend to.
 *
 * A logit direction: at position pos, the logit of a target token, or with a contrast the
 * difference logit(target) - logit(contrast). The residual stream leaving the last layer is
 * the sum of the embeddings, every head's output (its slice of z times its rows of W_O),
 * the attention output biases and every MLP's output. With the final norm's scale frozen
 * at the value the run computed (TransformerLens's apply_ln_to_stack with the cached
 * scale), the norm is linear, and each piece's direct logit attribution (DLA) is the piece,
 * mean-centred for LayerNorm, times the scale and the norm's weight, dotted with the
 * unembedding direction W_U[:, target] - W_U[:, contrast]. The pieces, plus the final
 * norm's bias and the unembedding's bias dotted with the same direction, add up to the
 * run's logit (difference). */
#ifndef LOUPE_CIRCUITS_H
#define LOUPE_CIRCUITS_H

#include <stdbool.h>
#include <stdint.h>

#include "loupe/run.h"

/* ---- direct logit attribution ---- */

typedef struct {
    double logit;        /* the run's logit(target) [- logit(contrast)] at pos; with a final soft cap
                            (Gemma 2), the logits before it: the parts are linear in them */
    double capped;       /* the run's logits as output, after the final soft cap (= logit without one) */
    double total;        /* embed + heads + mlp + bias: equals logit up to rounding */
    double embed;        /* token (and learned position) embeddings */
    double heads, mlp;   /* sums of the per-head and per-layer parts */
    double cross;        /* an encoder-decoder's decoder: the sum of its cross-attention heads' parts */
    double bias;         /* attn_bias + norm_bias + unembed_bias */
    double attn_bias;    /* the attention output projections' biases, every layer */
    double norm_bias;    /* the final norm's bias (LayerNorm); encoders: every post-norm's bias */
    double unembed_bias; /* the unembedding's bias, if it has one */
    int linearised;      /* 1 for encoders: first order in the head (below); 0: exact */
    double remainder;    /* logit - total: what the linear parts leave to the head (rounding when exact) */
} lp_dla_sums;

/* heads (n_layer, n_head) and mlp (n_layer): each head's and each MLP's (bias included)
 * direct contribution at pos to target (contrast -1: none).
 *
 * Encoders (post-norm blocks, a non-linear head): a LayerNorm follows every attention and
 * every MLP. With each one's 1/std frozen at the run's value, each is linear (affine), so the
 * last layer's output at pos is exactly the sum of the embeddings' output (resid_pre of
 * layer 0), every head's and MLP's output and every attention output bias, each carried
 * through the norms after it (centred, scaled, times the norm's weight), plus the norms'
 * biases carried the same way. The head (MLM: dense, activation, LayerNorm, decoder;
 * classifier: dense, tanh or ReLU, output layer) is not linear: the parts are dotted with
 * its gradient at the run, d logit / d x at x = the last layer's output, so each is the
 * first-order change of the logit if that part were scaled (a finite difference agrees as
 * the step goes to 0). total = embed + heads + mlp + bias is then gradient . x, not the
 * logit: remainder = logit - total is what the linearisation leaves, and linearised = 1.
 * Target and contrast are a classifier's label ids, at pos 0. Models without a head are
 * refused. */
int lp_dla(const lp_run *r, int pos, int target, int contrast, float *heads, float *mlp, lp_dla_sums *sums);
/* Gemma 2 (post-norms on attention's and the MLP's outputs, soft caps): the post-norms' scales
 * are frozen at the run's values like the final norm's, so a head's part is its z_h W_O[h]
 * times the post-attention norm's scale and weight, carried to the logit, and heads still sum
 * to attn_out exactly. The final soft cap cap * tanh(l / cap) is not linear: the parts add up
 * to the logit before it (sums.logit), and sums.capped is the run's output logit. */
/* The same for an encoder-decoder's decoder (T5): also cross (n_layer, n_head), each
 * cross-attention head's part (its slice of cross_z times its rows of the cross output
 * projection), which total counts (sums.cross). The final norm's scale is frozen as for
 * decoders; T5's d_model^-0.5 rescale of tied models is in that norm's weight, so it is
 * frozen with it and the parts add up to the logit. cross may be NULL; on a model without
 * cross-attention this is lp_dla. */
int lp_dla_seq2seq(const lp_run *r, int pos, int target, int contrast, float *heads, float *cross, float *mlp,
                   lp_dla_sums *sums);

/* out (d_mlp): each neuron of layer's MLP at pos, its activation (mlp_post) times its row
 * of W_down, through the frozen final norm, dotted with the direction (encoders: through the
 * frozen norms after it, dotted with the head's gradient, as lp_dla). Their sum plus the
 * MLP's output bias is lp_dla's mlp[layer]. */
int lp_dla_neurons(const lp_run *r, int layer, int pos, int target, int contrast, float *out);

/* ---- activation summaries ---- */

typedef struct {
    float norm, mean, std, min, max;  /* std: population (divided by the width) */
} lp_act_stats;

/* The summary of row `row` of a 2-D view, and its k dims of largest |value|, largest
 * first, in top_dims (k) (may be NULL when k is 0; k may exceed the width: -1 pads). */
void lp_act_summary(const lp_view *v, int row, int k, lp_act_stats *st, int *top_dims);

/* ---- activation patching ----
 * A patch names an activation of the base run to replace with the source run's (two runs
 * of the same model and length): the rest of the model runs again on the result, and
 * what comes out at the last position is read. Noising patches a corrupted run's
 * activations into the clean run (base = clean); denoising the other way round. In a
 * decoder only positions from the patch's on change (attention is causal), so a patch
 * re-runs the layers from its own on, for the positions from its own on, over the base
 * run's cached keys and values for the earlier positions; in an encoder every position
 * from the patch's layer on. Patches that start at the same layer run together, their rows
 * stacked into one matrix product per weight. */

typedef enum {
    LP_PATCH_RESID_PRE,
    LP_PATCH_ATTN_OUT,
    LP_PATCH_MLP_OUT,
    LP_PATCH_Z,
    LP_PATCH_SITE_COUNT, /* the sites of every stack; an encoder-decoder's decoder also has: */
    LP_PATCH_CROSS_OUT = LP_PATCH_SITE_COUNT, /* cross-attention's output (cross_out) */
    LP_PATCH_CROSS_Z,    /* each cross-attention head's output before its projection (cross_z) */
    LP_PATCH_ALL_SITE_COUNT
} lp_patch_site;

/* "resid_pre", "attn_out", "mlp_out", "z", "cross_out", "cross_z" */
const char *lp_patch_site_name(lp_patch_site s);
int lp_patch_site_from_name(const char *name, lp_patch_site *out); /* LP_EINVAL for unknown names */

typedef struct {
    lp_patch_site site;
    int layer;
    int pos;   /* -1: every position */
    int head;  /* z and cross_z only: -1 every head */
    bool enc;  /* an encoder-decoder's encoder site (layer and pos are the encoder's); false: the decoder's, or
                  the one stack of other models */
} lp_patch;

/* Encoder-decoders (T5): base and source are lp_run_new_seq2seq runs whose sources and
 * decoder inputs have the same lengths (S and T), and the prediction read is the decoder's
 * last position. A decoder site is patched as in any decoder, with the base run's encoder
 * output (its cross keys and values) fixed; an encoder site re-runs the encoder from the
 * patch's layer at every source position, its final norm, and the whole decoder over the
 * result (every layer's cross keys and values change). */

/* The base run's logits (V) at its last position with patch p applied (always re-run,
 * even when the patch changes nothing, which lp_patch_metric skips). */
int lp_patch_logits(const lp_run *base, const lp_run *source, const lp_patch *p, float *logits);

/* out (n): logit(target) [- logit(contrast)] at the last position with each patch applied
 * on its own. */
int lp_patch_metric(const lp_run *base, const lp_run *source, const lp_patch *patches, int n, int target, int contrast,
                    float *out);

/* Every patch of one site, as lp_patch_metric: out (n_layer, T) for resid_pre, attn_out,
 * mlp_out and cross_out (one position of one layer each), (n_layer, n_head) for z and cross_z
 * (one head, every position). */
int lp_patch_sweep(const lp_run *base, const lp_run *source, lp_patch_site site, int target, int contrast, float *out);

/* The same three reading the output row at pos (-1: the model's own: a decoder's and a
 * masked LM's last position, a classifier's 0). Encoders: a masked LM reads the logits of
 * any position (its mask), through the MLM head; a classifier its labels at position 0
 * (target and contrast are label ids, logits has n_labels); attention is bidirectional, so
 * a patch re-runs every position from its layer on; a model without a head is refused.
 * Decoders read only their last position. */
int lp_patch_logits_at(const lp_run *base, const lp_run *source, const lp_patch *p, int pos, float *logits);
int lp_patch_metric_at(const lp_run *base, const lp_run *source, const lp_patch *patches, int n, int pos, int target,
                       int contrast, float *out);
int lp_patch_sweep_at(const lp_run *base, const lp_run *source, lp_patch_site site, int pos, int target, int contrast,
                      float *out);
/* lp_patch_sweep_at over one stack of an encoder-decoder: enc, the encoder's sites, out
 * (encoder layers, S) or (encoder layers, n_head); else the decoder's (lp_patch_sweep_at). */
int lp_patch_sweep_stack(const lp_run *base, const lp_run *source, bool enc, lp_patch_site site, int pos, int target,
                         int contrast, float *out);

/* ---- head scan ----
 * Each head scored on generated sequences: BOS (when the model has one), then N random
 * distinct tokens, then the same N tokens again (TransformerLens's induction test). Over a
 * sequence's pattern A, averaged over the sequences:
 *   prev_token       mean of A[i, i-1] over i >= 1
 *   duplicate_token  mean of A[i, i-N] over the second copy (the token's earlier copy)
 *   induction        mean of A[i, i-N+1] over the second copy (the token after the earlier copy)
 *   first_token      mean of A[i, 0] over i >= 1 (the attention sink)
 * A head is labelled with every score at or above the threshold. */

typedef enum {
    LP_SCAN_PREV_TOKEN,
    LP_SCAN_DUPLICATE_TOKEN,
    LP_SCAN_INDUCTION,
    LP_SCAN_FIRST_TOKEN,
    LP_SCAN_COUNT
} lp_scan_score;

#define LP_SCAN_THRESHOLD 0.4  /* the default label threshold, for every score */

typedef struct {
    int seq_len;     /* N; 0: 50, or what the context allows */
    int n_seqs;      /* 0: 4 */
    uint64_t seed;
    int bos;         /* prepended when >= 0 */
    int avoid[2];    /* ids never drawn (BOS, EOS), -1 for none */
} lp_scan_options;

const char *lp_scan_score_name(lp_scan_score k);  /* "prev_token", ... */
/* The largest N that works for m: 2 N (+ 1 for BOS) positions within its context and N
 * distinct drawable tokens (seq_len is not read). */
int lp_scan_max_len(const lp_model *m, const lp_scan_options *o);

/* scores (n_layer, n_head, LP_SCAN_COUNT), averaged over the sequences; *seq_len (may be
 * NULL) gets the N used. */
int lp_scan_heads(const lp_model *m, const lp_scan_options *o, float *scores, int *seq_len);

/* Sequence `index` (0 ..) of a scan into ids (room for 2 N + 1: 101 with the default N),
 * its length in *n. */
int lp_scan_sequence(const lp_model *m, const lp_scan_options *o, int index, int *ids, int *n);

/* ---- head scan of an encoder ----
 * Induction and duplicate-token scores assume a model that reads left to right; an encoder's
 * heads are scored instead with Clark et al. 2019's metrics (heads.h: prev_token, next_token,
 * cls_sink, sep_sink, broad) on generated sequences [CLS] t_1 .. t_N [SEP] (RoBERTa: <s> ..
 * </s>) of N distinct random tokens that are none of the tokenizer's special tokens (its
 * [CLS], [SEP], [MASK], [PAD], [UNK], BOS, EOS): what a head does on text with no meaning is
 * what its position and the special tokens make it do. lp_scan_sequence and lp_scan_max_len
 * give these sequences and their largest N (the context less 2) for encoders; o->bos and
 * o->avoid are not read. The model needs its tokenizer (for [CLS] and [SEP]). */

typedef enum {
    LP_ESCAN_PREV_TOKEN,
    LP_ESCAN_NEXT_TOKEN,
    LP_ESCAN_CLS_SINK,
    LP_ESCAN_SEP_SINK,
    LP_ESCAN_BROAD,
    LP_ESCAN_COUNT
} lp_encoder_scan_score;

const char *lp_encoder_scan_score_name(lp_encoder_scan_score k); /* "prev_token", "next_token", ... */
/* scores (n_layer, n_head, LP_ESCAN_COUNT), averaged over the sequences (each the run's
 * lp_head_metrics / lp_head_metrics_encoder value); *seq_len (may be NULL) gets N. */
int lp_scan_heads_encoder(const lp_model *m, const lp_scan_options *o, float *scores, int *seq_len);

/* ---- head scan of an encoder-decoder ----
 * A copy task whose right alignment is known: the source is N distinct random tokens then
 * EOS (t_1 .. t_N </s>; none of them the decoder's start id, EOS or a special token of the
 * tokenizer), the decoder is teacher-forced on the same tokens (its input: the start id, then
 * t_1 .. t_N; T = S = N + 1), so decoder position i emits t_{i+1} (</s> at N), which is
 * source position i. Per head, averaged over the sequences (NAN where a kind has no such score):
 *   encoder self-attention (pattern A, S x S, bidirectional): prev_token, next_token and broad
 *     as heads.h defines them, source_eos = mean_i A[i, S-1] (the source's </s>)
 *   decoder self-attention (causal): prev_token, first_token (the start id: the sink)
 *   cross-attention (T x S): aligned = mean_i A[i, i] (the source token being copied next), and
 *     heads.h's source_eos, diagonal, monotonic, coverage (lp_cross_metrics)
 * lp_scan_sequence gives the source (room for N + 1 ids) and lp_scan_max_len the largest N
 * (each stack's context less 1, the drawable tokens); o->bos and o->avoid are not read. */

typedef enum {
    LP_S2S_PREV_TOKEN,
    LP_S2S_NEXT_TOKEN,
    LP_S2S_FIRST_TOKEN,
    LP_S2S_BROAD,
    LP_S2S_SOURCE_EOS,
    LP_S2S_ALIGNED,
    LP_S2S_DIAGONAL,
    LP_S2S_MONOTONIC,
    LP_S2S_COVERAGE,
    LP_S2S_COUNT
} lp_seq2seq_scan_score;

const char *lp_seq2seq_scan_score_name(lp_seq2seq_scan_score k); /* "prev_token", ..., "coverage" */
/* enc (encoder layers, n_head, LP_S2S_COUNT), dec and cross (decoder layers, n_head,
 * LP_S2S_COUNT); *seq_len (may be NULL) gets N. */
int lp_scan_heads_seq2seq(const lp_model *m, const lp_scan_options *o, float *enc, float *dec, float *cross,
                          int *seq_len);

#endif
