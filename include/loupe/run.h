/* A run: one sequence through the model with every intermediate activation captured,
 * all in one arena allocated for the sequence's length.
 *
 * Captured, for every layer l (shapes per layer; T = tokens, d = d_model, H = heads,
 * Hkv = key/value heads, dh = d_head, dm = d_mlp, V = vocab):
 *   resid_pre   (T, d)       residual stream entering layer l
 *   ln1         (T, d)       normalised input to attention;   ln1_scale (T): 1/std or 1/rms
 *   q           (T, H, dh)   queries after rotary embedding (per head: (T, dh), strided)
 *   k, v        (T, Hkv, dh) keys (after rotary) and values
 *   pattern     (H, T, T)    attention probabilities, row = query, column = key
 *   z           (T, H, dh)   each head's output before the output projection
 *   attn_out    (T, d)       attention block output (added to the residual)
 *   resid_mid   (T, d)       residual stream between attention and MLP
 *   ln2         (T, d)       normalised input to the MLP;     ln2_scale (T)
 *   mlp_pre     (T, dm)      MLP pre-activation (the gate projection for SwiGLU)
 *   mlp_up      (T, dm)      SwiGLU only: the up projection
 *   mlp_post    (T, dm)      MLP hidden activation after the nonlinearity (GELU(pre), or SiLU(gate) * up)
 *   mlp_out     (T, d)       MLP block output
 *   resid_post  (T, d)       residual stream leaving layer l (== resid_pre of layer l + 1)
 * and once: ln_final (T, d), ln_final_scale (T), logits (R, W), head_hidden (R, d).
 *
 * The output (lp_run_out_rows, lp_run_out_width): decoders and masked LMs give logits
 * (T, V), one row per position; a classifier gives one row of n_labels logits, from
 * position 0 (R = 1, W = n_labels); a bare encoder (BertModel) gives none (W = 0).
 * head_hidden is an encoder head's hidden vector before its output layer: a classifier's
 * (and BertModel's pooler's) pooled vector (1, d), a masked LM's transformed stream (T, d)
 * after its LayerNorm; decoders have none.
 *
 * Post-norm blocks (BERT, RoBERTa, DistilBERT), where the norms come after the sums:
 *   resid_mid = LN1(resid_pre + attn_out), resid_post = LN2(resid_mid + mlp_out).
 * Every view keeps its meaning as "what the next part reads": ln1 is attention's input
 * (resid_pre itself), ln2 the MLP's (resid_mid itself), and ln1_scale, ln2_scale are the
 * 1/std of the post-attention and post-MLP norms. Such a model has no final norm: ln_final
 * is the last resid_post and ln_final_scale 1. resid_pre of layer 0 is after the
 * embeddings' LayerNorm (word + position + token type, then LayerNorm). */
#ifndef LOUPE_RUN_H
#define LOUPE_RUN_H

#include <stddef.h>

#include "loupe/model.h"

typedef enum {
    LP_ACT_RESID_PRE,
    LP_ACT_LN1,
    LP_ACT_LN1_SCALE,
    LP_ACT_Q,
    LP_ACT_K,
    LP_ACT_V,
    LP_ACT_PATTERN,
    LP_ACT_Z,
    LP_ACT_ATTN_OUT,
    LP_ACT_RESID_MID,
    LP_ACT_LN2,
    LP_ACT_LN2_SCALE,
    LP_ACT_MLP_PRE,
    LP_ACT_MLP_UP,
    LP_ACT_MLP_POST,
    LP_ACT_MLP_OUT,
    LP_ACT_RESID_POST,
    LP_ACT_LN_FINAL,
    LP_ACT_LN_FINAL_SCALE,
    LP_ACT_LOGITS,
    LP_ACT_HEAD_HIDDEN,
    /* the decoder of an encoder-decoder: cross-attention over the encoder's S output rows */
    LP_ACT_LN_CROSS,        /* (T, d): the normalised stream cross-attention reads */
    LP_ACT_CROSS_PATTERN,   /* (H, T, S) */
    LP_ACT_CROSS_Z,         /* (T, H, dh) */
    LP_ACT_CROSS_OUT,       /* (T, d) */
    LP_ACT_RESID_MID_CROSS, /* (T, d): resid_mid + cross_out, what the MLP reads */
    LP_ACT_COUNT
} lp_act_kind;

/* A borrowed, possibly strided, view of captured floats: element (i, j, ...) is at
 * data[i * stride[0] + j * stride[1] + ...]. */
typedef struct {
    const float *data;
    int ndim;
    int shape[4];
    long stride[4];
} lp_view;

typedef struct lp_run lp_run;

/* An edit of the forward pass (splicing a dictionary in, steering): fn is called with the n
 * rows of a site of a layer (row-major, the site's width each) once they are computed and
 * before anything reads them, and may overwrite them; what it leaves is what the run
 * captures and the layers after it read. The sites: resid_pre, ln1, z, attn_out, resid_mid,
 * ln2, mlp_pre, mlp_post, mlp_out, resid_post (activation patching's batched forward: z, attn_out, mlp_out and the
 * cross-attention's cross_z, cross_out). In a captured run the rows are positions 0..T-1;
 * in generation, the block being fed. fn NULL: no edit. */
typedef struct {
    void (*fn)(void *ctx, int layer, lp_act_kind site, float *rows, int n);
    void *ctx;
} lp_edit;

/* Runs ids[0..n) through m, capturing everything. Fails with LP_ERANGE if n exceeds the
 * model's context, LP_EINVAL for ids outside the vocabulary, LP_ECANCEL if cancelled. */
int lp_run_new(lp_run **out, const lp_model *m, const int *ids, int n);
/* The same with token types (segment ids) types[0..n), each below the model's type_vocab;
 * types NULL: all 0 (what lp_run_new runs). A model without token types accepts only 0s. */
int lp_run_new_typed(lp_run **out, const lp_model *m, const int *ids, const int *types, int n);
/* What lp_run_new_typed refuses before it computes anything (length, ids, types), with the
 * same errors: a caller can check before it lets the current run go. */
/* lp_run_new_typed with edit (NULL: none) applied to every layer; decoders and encoders
 * of one stack. */
int lp_run_new_edited(lp_run **out, const lp_model *m, const int *ids, const int *types, int n, const lp_edit *edit);
int lp_run_check(const lp_model *m, const int *ids, const int *types, int n);
/* An encoder-decoder's run (lp_model_encoder(m) != NULL): the encoder over src (S ids), then
 * the decoder over its n input ids (teacher forcing: the decoder start id, then the target
 * but its last token), each decoder layer attending to the encoder's output. The decoder's
 * captures are the run's; lp_run_source gives the encoder's. */
int lp_run_new_seq2seq(lp_run **out, const lp_model *m, const int *src, int S, const int *ids, int n);
const lp_run *lp_run_source(const lp_run *r);          /* the encoder's run, or NULL */
/* B sequences (ids[b], n[b] tokens; types NULL, or types[b] NULL: all 0) through m in one
 * packed forward: their rows one after another through every norm and matrix product,
 * attention within each sequence (no padding, no mask). out[b] is sequence b's run, captured
 * as lp_run_new_typed's, its own to free; the B runs share one arena, returned when the
 * last is freed. Values equal lone runs' within float rounding, not to the bit: a product
 * rounds a row by the rows beside it (up to about 3e-5 of max(|value|, 1)); they are a
 * function of the B sequences, in order. Not for encoder-decoders (LP_EUNSUPPORTED). Errors as
 * lp_run_new_typed's, naming the sequence; on an error no run is made (out[b] NULL). */
#define LP_RUN_BATCH_MAX 4096
int lp_run_new_batch(lp_run **out, const lp_model *m, int B, const int *const *ids, const int *const *types,
                     const int *n);
/* The bytes of activations lp_run_new_batch would capture for sequences of n[0..B) tokens. */
size_t lp_run_batch_bytes(const lp_model *m, int B, const int *n);
void lp_run_free(lp_run *r);

/* Freed runs leave their arena for the next run to reuse; this returns it to the system
 * (after waiting for a prefault under way). */
void lp_run_release_cache(void);
/* Touches, on a thread of idle priority, the arena of the longest run of m that fits in an
 * eighth of memory (2 GiB at most), and keeps it for the next run, so that a session's first
 * run of a new length pays no first-touch page faults (zeroing hundreds of MB) when the
 * session had idle time before it. The arena is offered from the start: a run that comes
 * before the touching is done takes it as it is, and the touching goes on under the run. Returns that length, or 0 when nothing was started (one
 * is under way, the kept arena is as large, or an encoder-decoder). */
int lp_run_prefault(const lp_model *m);
/* Waits until a prefault under way has touched its arena (or stopped: the arena let go). */
void lp_run_prefault_wait(void);
/* The minor page faults prefault threads have taken so far in this process: what a count of
 * the process's faults (getrusage) includes that was off the critical path. */
long lp_run_prefault_faults(void);

const lp_model *lp_run_model(const lp_run *r);
int lp_run_len(const lp_run *r);
const int *lp_run_ids(const lp_run *r);
const int *lp_run_types(const lp_run *r);             /* (T) token types; all 0 unless given */
size_t lp_run_arena_bytes(const lp_run *r);

/* The captured activation `kind` of `layer` (ignored for ln_final*, logits); for the
 * per-head kinds (q, k, v, z, pattern) head >= 0 selects one head, head = -1 gives all.
 * Returns LP_EINVAL (with a message) for a layer or head out of range, or a kind the
 * architecture does not have (mlp_up outside SwiGLU). */
int lp_run_view(const lp_run *r, lp_act_kind kind, int layer, int head, lp_view *out);

/* Row pos of the logits: (W) floats, W = lp_run_out_width; for a classifier only row 0
 * exists (its n_labels logits); NULL for a row that does not exist (pos >= out_rows). */
const float *lp_run_logits(const lp_run *r, int pos);
/* Self-attention of (layer, head), both in range: (T, 2) floats, each query row's entropy
 * (-sum p log p, natural log) and its largest probability, taken in the softmax. */
const float *lp_run_pattern_stats(const lp_run *r, int layer, int head);
int lp_run_out_rows(const lp_run *r);   /* T (LM, MLM), 1 (classifier), 0 (no head) */
int lp_run_out_width(const lp_run *r);  /* vocab (LM, MLM), n_labels (classifier), 0 (no head) */

const char *lp_act_name(lp_act_kind kind);            /* "resid_pre", ... */
int lp_act_from_name(const char *name, lp_act_kind *out); /* LP_EINVAL for unknown names; "pooled" is head_hidden */

/* Cooperative cancellation: a signal handler may call lp_cancel_request(); long
 * computations check it between layers and return LP_ECANCEL. lp_cancel_reset() clears it. */
void lp_cancel_request(void);
void lp_cancel_reset(void);
int lp_cancelled(void);

#endif
