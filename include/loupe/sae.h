/* Sparse autoencoders and transcoders: dictionaries of features read beside a model.
 *
 * Files (a directory, or a file in one):
 *   SAELens   cfg.json + sae_weights.safetensors: W_enc (d_in, d_sae), W_dec (d_sae, d_in),
 *             b_enc (d_sae), b_dec (d_in); jumprelu adds threshold (d_sae); gated has b_gate,
 *             r_mag, b_mag (d_sae) instead of b_enc. cfg.json: architecture (standard,
 *             jumprelu, topk, gated), d_in, d_sae, k (topk; or activation_fn "topk" with
 *             activation_fn_kwargs.k), activation_fn (relu, topk, tanh-relu), apply_b_dec_to_input,
 *             rescale_acts_by_decoder_norm (topk, batchtopk),
 *             normalize_activations (none, expected_average_only_in, constant_norm_rescale,
 *             layer_norm), norm_scaling_factor (for expected_average_only_in), hook_name (top
 *             level, or under "metadata"/"meta" as SAELens 6 writes it).
 *   Gemma Scope  params.npz: W_enc, W_dec, b_enc, b_dec, threshold (JumpReLU, b_dec not
 *             subtracted from the input); the hook is not in the file: --site, or a cfg.json
 *             beside it with hook_name.
 *             Transcoders (architecture transcoder, skip_transcoder, jumprelu_transcoder): d_out,
 *             hook_name_out (top level or under metadata), W_dec (d_sae, d_out), b_dec (d_out),
 *             W_skip (d_out, d_in) for skip_transcoder, threshold for jumprelu_transcoder.
 *             batchtopk, matryoshka_batchtopk (SAELens's training checkpoints): topk_threshold, a
 *             scalar (or threshold, d_sae).
 *   sparsify  cfg.json (d_in, k, num_latents or expansion_factor, activation topk|groupmax,
 *             transcode, skip_connection) + sae.safetensors: encoder.weight (d_sae, d_in),
 *             encoder.bias (d_sae), W_dec (d_sae, d_out), b_dec (d_out), W_skip (d_out, d_in)
 *             when skip_connection. The hookpoint is the directory's name (layers.L,
 *             layers.L.mlp).
 *   Llama Scope  hyperparams.json + checkpoints/final.safetensors (fnlp's SAEs for Llama-3.1-8B),
 *             read as SAELens's llama_scope loader (get_llama_scope_config_from_hf,
 *             llama_scope_sae_huggingface_loader) and SAE.from_pretrained's folding: W_enc =
 *             encoder.weight^T (encoder.weight (d_sae, d_model)), b_enc = encoder.bias, W_dec =
 *             decoder.weight^T (decoder.weight (d_model, d_sae)), b_dec = decoder.bias; jumprelu
 *             with one threshold, jump_relu_threshold * s for every feature, s = sqrt(d_model) /
 *             dataset_average_activation_norm.in; b_dec not subtracted from the input; and
 *             expected_average_only_in with factor s (fold_activation_norm_scaling_factor: W_enc
 *             times s, W_dec and b_dec over s). The hook is hook_point_in; a hook_point_out that
 *             differs (a transcoder) is refused. dataset_average_activation_norm.out and
 *             sparsity_include_decoder_norm are not read, as SAELens reads neither.
 *
 * The maths (x one row of the site, d_in floats):
 *   norm_in: constant_norm_rescale x * c with c = sqrt(d_in) / |x|; layer_norm (x - mean) /
 *            (std + 1e-5), std with Bessel's correction (torch's x.std()); expected_average_
 *            only_in x * norm_scaling_factor (1 without one: SAELens folds the factor into the
 *            weights when it has one, and leaves the activations as they are when not).
 *   x' = norm_in(x) - b_dec (when apply_b_dec_to_input), pre = x' W_enc + b_enc
 *   standard  f = ReLU(pre); with activation_fn "tanh-relu" tanh(ReLU(pre)) (SAELens's
 *             get_activation_fn)
 *   jumprelu  f = ReLU(pre) * (pre > threshold)
 *   topk      f = ReLU at the k largest of pre, 0 elsewhere (sparsify: the k largest of
 *             ReLU(pre), the same features)
 *   groupmax  sparsify: ReLU(pre) in k groups of d_sae / k, the largest of each kept
 *   gated     f = (x' W_enc + b_gate > 0) * ReLU(x' (W_enc * exp(r_mag)) + b_mag)
 *   batchtopk, matryoshka_batchtopk: as jumprelu with every threshold topk_threshold. SAELens
 *             trains them with a per-batch top-k (batchtopk_sae.py, BatchTopK) but has no
 *             inference class for them: save_inference_model writes them as jumprelu with
 *             threshold = topk_threshold (BatchTopKTrainingSAE.process_state_dict_for_saving_
 *             inference) after folding the decoder norms; matryoshka_widths only change the
 *             training loss (matryoshka_batchtopk_sae.py). rescale_acts_by_decoder_norm
 *             (default true for these, false for topk): pre is multiplied by |W_dec[f]| and
 *             W_dec's rows divided by it (TopKSAE.encode/decode), folded into the weights at load.
 *   transcoders (SAELens): x' = norm_in(x) (b_dec, d_out wide, never subtracted), f as the
 *             architecture's, y_hat = f W_dec + b_dec (+ x W_skip^T, x unnormalised) with no
 *             norm_out for constant_norm_rescale and layer_norm (transcoder.py).
 *   decode    x_hat = norm_out(f W_dec + b_dec) (+ x W_skip^T), norm_out undoing norm_in
 *             with the statistics of the same x (layer_norm: y * std + mean, without the
 *             epsilon, as SAELens).
 * Matrix products are float32 (cblas_sgemm over all rows at once); norms and statistics
 * accumulate in double. */
#ifndef LOUPE_SAE_H
#define LOUPE_SAE_H

#include <stdbool.h>
#include <stddef.h>

#include "loupe/run.h"

/* batchtopk and matryoshka_batchtopk compute as jumprelu (see above); the name is the file's. */
typedef enum {
    LP_SAE_STANDARD,
    LP_SAE_JUMPRELU,
    LP_SAE_TOPK,
    LP_SAE_GATED,
    LP_SAE_GROUPMAX,
    LP_SAE_BATCHTOPK,
    LP_SAE_MATRYOSHKA_BATCHTOPK
} lp_sae_arch;
typedef enum {
    LP_SAE_NORM_NONE,
    LP_SAE_NORM_EXPECTED_AVERAGE_ONLY_IN,
    LP_SAE_NORM_CONSTANT_NORM_RESCALE,
    LP_SAE_NORM_LAYER_NORM
} lp_sae_norm;
typedef enum { LP_SAE_FMT_SAELENS, LP_SAE_FMT_NPZ, LP_SAE_FMT_SPARSIFY, LP_SAE_FMT_LLAMA_SCOPE } lp_sae_format;

/* Bounds on what a file may declare: beyond any published dictionary (Gemma Scope's widest
 * is 1M features on a 4608-wide site), short of sizes whose products overflow. */
#define LP_SAE_MAX_D_IN (1 << 17)
#define LP_SAE_MAX_D_SAE (1 << 24)

typedef struct {
    lp_sae_format format;
    lp_sae_arch arch;
    lp_sae_norm norm;
    int d_in, d_sae, d_out;    /* d_out == d_in except for transcoders */
    int k;                     /* topk, groupmax; 0 otherwise */
    bool apply_b_dec_to_input;
    bool transcoder;           /* reads one site, writes another (sparsify transcode; SAELens transcoder,
                                  skip_transcoder, jumprelu_transcoder) */
    bool skip;                 /* W_skip */
    bool tanh_relu;            /* standard with activation_fn "tanh-relu": f = tanh(ReLU(pre)) */
    bool no_norm_out;          /* the decoder does not undo norm_in (SAELens transcoders: transcoder.py's
                                  Transcoder.decode leaves run_time_activation_norm_fn_out out) */
    const char *arch_label;    /* the file's architecture when it names the maths differently (a SAELens
                                  transcoder's, batchtopk's): a static string; NULL otherwise */
    bool dec_norm_folded;      /* rescale_acts_by_decoder_norm: W_dec's row norms folded into the encoder at
                                  load, as SAELens's _fold_norm_topk (topk_sae.py) */
    double norm_scale;         /* expected_average_only_in: the factor (1.0 when the config gives none) */
    bool norm_scale_given;
    char hook_name[128];       /* the site read, a TransformerLens hook name from the files; "" when they
                                  name none */
    char hook_name_out[128];   /* a transcoder's output site; "" otherwise */
} lp_sae_info;

typedef struct lp_sae lp_sae;

/* Loads the dictionary at path: a directory holding one of the layouts above, or one of
 * its files (the config, or the weights). Every shape, size and value is checked (NaN or inf refused). */
int lp_sae_load(lp_sae **out, const char *path);
/* The same from memory, for fuzzing and tests: cfg (cfg.json, or Llama Scope's
 * hyperparams.json; may be NULL for npz) and the weights file's bytes (a safetensors or an
 * npz), what names them in messages. Nothing is kept pointing into the buffers. */
int lp_sae_parse(lp_sae **out, lp_sae_format fmt, const char *cfg, size_t cfg_len, const void *weights, size_t len,
                 const char *what);
void lp_sae_free(lp_sae *s);

const lp_sae_info *lp_sae_get_info(const lp_sae *s);
const char *lp_sae_arch_name(lp_sae_arch a);
/* What to call the dictionary's architecture: the file's name for it (arch_label), else the maths'. */
const char *lp_sae_arch_label(const lp_sae_info *in);
const char *lp_sae_norm_name(lp_sae_norm n);
const char *lp_sae_format_name(lp_sae_format f);

/* acts (n, d_sae) from x (n, d_in). */
int lp_sae_encode(const lp_sae *s, const float *x, int n, float *acts);
/* out (n, d_out) from acts (n, d_sae); x (n, d_in) is the input they came from, which the
 * normalisations and W_skip read (NULL allowed when the dictionary has neither). */
int lp_sae_decode(const lp_sae *s, const float *acts, const float *x, int n, float *out);
/* Feature f's decoder row W_dec[f] (d_out floats). */
const float *lp_sae_decoder_row(const lp_sae *s, int f);

typedef struct {
    int n;                     /* rows measured */
    double l0;                 /* mean number of non-zero features per row */
    double mse;                /* mean over rows and dimensions of (y - y_hat)^2 */
    double explained_variance; /* 1 - sum |y - y_hat|^2 / sum |y - mean(y)|^2 (mean over rows); NaN when
                                  the rows do not vary */
    double rel_error;          /* |y - y_hat| / |y| over all rows */
} lp_sae_stats;

/* How well the dictionary reconstructs y (n, d_out) from x (n, d_in) (y == x for an SAE).
 * acts (n, d_sae) and recon (n, d_out) receive the encoding and the reconstruction. */
int lp_sae_measure(const lp_sae *s, const float *x, const float *y, int n, float *acts, float *recon,
                   lp_sae_stats *out);

/* A feature's direct effect on the logits: row (a decoder row, in the space of site kind of
 * layer) as it is written into the residual stream (resid_*, attn_out, mlp_out: as it is;
 * z: through the layer's W_O; mlp_post: through W_down; biases left out), then through the
 * final norm with its scale frozen at the run's value at pos, as lp_dla does (centred for
 * LayerNorm, times the norm's weight and 1/std), dotted with every unembedding column:
 * logits (V), per unit of the feature's activation. Decoders only; LP_EUNSUPPORTED for a site
 * that is not written into the residual stream (ln1, ln2, q, k, v, ...). */
int lp_sae_direction_logits(const lp_run *r, lp_act_kind kind, int layer, const float *row, int pos, float *logits);

/* Attribution to features (gradient x activation, as Marks et al.'s sparse feature circuits
 * with the dictionary spliced in with its error term): x (n, d_in) the rows read, y (n, d_out)
 * the rows at the written site, grad (n, d_out) an objective's gradient with respect to y.
 * With a = encode(x), the decoder y = (a W_dec + b_dec) * back + shift (+ x W_skip^T) + err
 * is linear in a, so per row
 *   attr (n, d_sae)  a_f * back * (grad . W_dec[f])      each feature
 *   parts (n, 3)     grad . err                           the error node, err = y - decode(a)
 *                    grad . (b_dec * back + shift + x W_skip^T)  the decoder's constant part
 *                    grad . y                              the site's own grad x activation
 * and sum_f attr + error + constant = grad . y exactly (up to rounding): what closes. (back,
 * shift: the normalisation's way back for the row, 1 and 0 without one.) */
int lp_sae_attribute(const lp_sae *s, const float *x, const float *y, const float *grad, int n, float *attr,
                     double *parts);

/* ---- A forward edited by dictionaries (an lp_edit for lp_run_new_edited, lp_generate_edited)
 * At the written site of each edit, for each row y there (x: the row of the site read, y
 * itself for an SAE), as SAELens's HookedSAETransformer does:
 *   splice          y <- decode(a') + (y - decode(a)), a = encode(x), a' = a with the clamps
 *                   set (use_error_term: without clamps y is unchanged)
 *   splice_no_error y <- decode(a')                  (the dictionary alone)
 *   zero            y <- 0                            (the site zero-ablated)
 *   pass            y as it is
 * and then steering: y <- y + sum of alpha * W_dec[f]. Clamps need an encoding: with mode
 * pass they make it splice. A transcoder's input rows are kept when the forward passes its
 * input site, which must come before its output site. */
typedef enum { LP_SAE_PASS, LP_SAE_SPLICE, LP_SAE_SPLICE_NO_ERROR, LP_SAE_ZERO } lp_sae_splice;

typedef struct {
    const lp_sae *sae;           /* borrowed */
    lp_act_kind kind, out_kind;  /* the site read and the site written (the same for an SAE) */
    int layer, out_layer;
    lp_sae_splice mode;
    int n_clamp;                 /* features set to values: clamp_id (n_clamp), clamp_value (n_clamp) */
    const int *clamp_id;
    const float *clamp_value;
    int n_steer;                 /* alpha * W_dec[f] added: steer_id (n_steer), steer_alpha (n_steer) */
    const int *steer_id;
    const float *steer_alpha;
    float *seen;                 /* optional (seen_rows, d_in): the rows read, as the edit saw them, when a
                                    call has seen_rows rows (a captured run of that length); else NULL */
    int seen_rows;
    /* Patching from another run (src_acts not NULL; mode splice): at position patch_pos (-1: every
     * row), features patch_id (n_patch) take the values src_acts (src_rows, d_sae) holds, and with
     * patch_error the error term is src_err (src_rows, d_out) instead of the row's own, so
     *   y <- decode(a') + err'     a' = a with the patched features, err' = y - decode(a) or src_err
     * (lp_sae_patch_source makes both from the other run; clamps apply after). A call must have
     * src_rows rows (a captured run of that length). */
    const float *src_acts, *src_err;
    int src_rows, patch_pos, n_patch;
    const int *patch_id;
    bool patch_error;
} lp_sae_edit;

/* A run's side of a patch: acts (n, d_sae) = encode(x) and err (n, d_out) = y - decode(acts, x)
 * from x (n, d_in), the rows read, and y (n, d_out), the rows of the written site (y == x for an
 * SAE). Patching every feature and the error term of a row gives back y, up to rounding, for
 * dictionaries whose decoder does not read x (no normalisation, no W_skip); otherwise the
 * decoder reads the patched run's own x. */
int lp_sae_patch_source(const lp_sae *s, const float *x, const float *y, int n, float *acts, float *err);

typedef struct lp_sae_editor lp_sae_editor;

/* Checks edits (n; sites that can be edited, feature ids, finite values) and keeps a copy of
 * the array (the pointers in it stay borrowed). */
int lp_sae_editor_new(lp_sae_editor **out, const lp_sae_edit *edits, int n);
void lp_sae_editor_free(lp_sae_editor *e);
/* The lp_edit that applies them; valid while e lives. */
lp_edit lp_sae_editor_edit(lp_sae_editor *e);
/* The logits (W) at position pos of base's ids run again through edits (n of them, applied
 * in one forward): a patch, clamp or steer of base, as lp_run_new_edited makes it. */
int lp_sae_edited_logits(const lp_run *base, const lp_sae_edit *edits, int n, int pos, float *logits);
/* LP_OK, or what failed inside the forward (out of memory; the message is set then): a
 * forward that ran with a failed edit must be thrown away. */
int lp_sae_editor_status(const lp_sae_editor *e);

#endif
