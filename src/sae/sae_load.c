/* Reading dictionaries: SAELens, Gemma Scope's params.npz, sparsify and Llama Scope (see sae.h). Every
 * value of the config is range-checked and every tensor's shape checked against it before
 * anything is computed; the weights are converted to float32 and refused if not finite. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/npz.h"
#include "loupe/safetensors.h"
#include "sae/sae_impl.h"

/* Where the tensors come from: one of the two. */
typedef struct {
    const lp_safetensors *st;
    const lp_npz *npz;
    const char *what;
} source;

/* Converts n elements to float32 (F64 too, which lp_convert_to_f32 leaves out). */
static int to_f32(float *dst, const void *src, lp_dtype dt, size_t n, const char *what, const char *name) {
    if (dt == LP_DT_F64) {
        const unsigned char *p = src;
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, p + i * 8, 8);
            dst[i] = (float)v;
        }
        return LP_OK;
    }
    if (dt != LP_DT_F32 && dt != LP_DT_F16 && dt != LP_DT_BF16)
        return lp_error(LP_EFORMAT, "%s: tensor %s is %s; a dictionary's weights are floats (F32, F16, BF16, F64)", what,
                        name, lp_dtype_name(dt));
    return lp_convert_to_f32(dst, src, dt, n);
}

/* One tensor as the file holds it. */
typedef struct {
    lp_dtype dt;
    int ndim;
    const int64_t *shape;
    const void *data;
} tensor;

/* The tensor name in *t; false when the file has none. */
static bool lookup(const source *src, const char *name, tensor *t) {
    if (src->st) {
        const lp_st_tensor *s = lp_st_find(src->st, name);
        if (s) *t = (tensor){s->dtype, s->ndim, s->shape, s->data};
        return s != NULL;
    }
    const lp_npy_array *a = lp_npz_find(src->npz, name);
    if (a) *t = (tensor){a->dtype, a->ndim, a->shape, a->data};
    return a != NULL;
}

/* The tensor name, shaped (rows) or (rows, cols) in the file (cols 0: one dimension), as new
 * floats in *out, or with transpose as (cols, rows) (nn.Linear's weights, stored (out, in));
 * *out NULL and LP_OK when absent and optional. A transposed tensor is converted one stored
 * row at a time, so that no second copy of it is held. */
static int get_as(const source *src, const char *name, int rows, int cols, bool transpose, bool required,
                  float **out) {
    *out = NULL;
    tensor t;
    if (!lookup(src, name, &t)) return required ? lp_error(LP_EFORMAT, "%s: no tensor %s", src->what, name) : LP_OK;
    int want = cols ? 2 : 1;
    if (t.ndim != want || t.shape[0] != rows || (cols && t.shape[1] != cols)) {
        char got[96] = "";
        for (int i = 0, at = 0; i < t.ndim && i < 4; i++)
            at += snprintf(got + at, sizeof got - (size_t)at, "%s%lld", i ? ", " : "", (long long)t.shape[i]);
        if (cols)
            return lp_error(LP_EFORMAT, "%s: %s is (%s), but the config makes it (%d, %d)", src->what, name, got, rows, cols);
        return lp_error(LP_EFORMAT, "%s: %s is (%s), but the config makes it (%d)", src->what, name, got, rows);
    }
    transpose = transpose && cols;
    size_t width = (size_t)(cols ? cols : 1), n = (size_t)rows * width;
    float *f = malloc(n * sizeof *f), *row = transpose ? malloc(width * sizeof *row) : NULL;
    if (!f || (transpose && !row)) {
        free(f), free(row);
        return lp_error(LP_ENOMEM, "%s: out of memory for %s (%zu floats)", src->what, name, n);
    }
    int rc = LP_OK;
    size_t step = transpose ? width : n; /* elements converted at a time */
    for (size_t r = 0; !rc && r * step < n; r++) {
        float *dst = transpose ? row : f;
        rc = to_f32(dst, (const unsigned char *)t.data + r * step * lp_dtype_size(t.dt), t.dt, step, src->what, name);
        for (size_t i = 0; !rc && i < step; i++)
            if (!isfinite(dst[i]))
                rc = lp_error(LP_EFORMAT, "%s: %s holds %s at element %zu; the dictionary is damaged", src->what, name,
                              isnan(dst[i]) ? "NaN" : "inf", r * step + i);
        for (size_t i = 0; !rc && transpose && i < width; i++) f[i * (size_t)rows + r] = row[i];
    }
    free(row);
    if (rc) {
        free(f);
        return rc;
    }
    *out = f;
    return LP_OK;
}

static int get(const source *src, const char *name, int rows, int cols, bool required, float **out) {
    return get_as(src, name, rows, cols, false, required, out);
}

/* A tensor's first dimensions, for dictionaries whose config leaves sizes to the weights. */
static int dims_of(const source *src, const char *name, int64_t d[2]) {
    d[0] = d[1] = -1;
    tensor t;
    if (!lookup(src, name, &t)) return lp_error(LP_EFORMAT, "%s: no tensor %s", src->what, name);
    for (int i = 0; i < t.ndim && i < 2; i++) d[i] = t.shape[i];
    return LP_OK;
}

/* ---- config values ----
 * The helpers' what names the config in messages: "WEIGHTS: cfg.json". */

static int cfg_int(const json_t *cfg, const char *key, const char *what, long lo, long hi, long dflt, bool required,
                   long *out) {
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    *out = dflt;
    if (!v || json_is_null(v)) return required ? lp_error(LP_EFORMAT, "%s has no \"%s\"", what, key) : LP_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return lp_error(LP_EFORMAT, "%s's \"%s\" must be an integer in %ld..%ld", what, key, lo, hi);
    *out = (long)json_integer_value(v);
    return LP_OK;
}

static int cfg_bool(const json_t *cfg, const char *key, const char *what, bool dflt, bool *out) {
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    *out = dflt;
    if (!v || json_is_null(v)) return LP_OK;
    if (!json_is_boolean(v)) return lp_error(LP_EFORMAT, "%s's \"%s\" must be true or false", what, key);
    *out = json_is_true(v);
    return LP_OK;
}

static int cfg_str(const json_t *cfg, const char *key, const char *what, const char *dflt, const char **out) {
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    *out = dflt;
    if (!v || json_is_null(v)) return LP_OK;
    if (!json_is_string(v)) return lp_error(LP_EFORMAT, "%s's \"%s\" must be a string", what, key);
    *out = json_string_value(v);
    return LP_OK;
}

static int set_hook(char *dst, size_t cap, const char *hook, const char *what) {
    if (strlen(hook) >= cap) return lp_error(LP_EFORMAT, "%s: hook name '%.40s...' is too long", what, hook);
    snprintf(dst, cap, "%s", hook);
    return LP_OK;
}

/* hook_name's like: top level, or under "metadata"/"meta" as SAELens 6 writes it. */
static int read_hook(const json_t *cfg, const char *key, const char *what, char *dst, size_t cap) {
    const char *hook = NULL;
    int rc = cfg_str(cfg, key, what, NULL, &hook);
    for (const char *meta_key = "metadata"; !rc && !hook && meta_key;
         meta_key = strcmp(meta_key, "metadata") ? NULL : "meta") {
        json_t *meta = json_object_get(cfg, meta_key);
        if (json_is_object(meta)) rc = cfg_str(meta, key, what, NULL, &hook);
    }
    return !rc && hook ? set_hook(dst, cap, hook, what) : rc;
}

/* SAELens's architectures (sae_lens/__init__.py's registry; batchtopk and matryoshka_batchtopk
 * are training classes whose checkpoints carry the config's name): what each computes. */
static const struct {
    const char *name;
    lp_sae_arch arch;
    bool transcoder, skip;
} SAELENS_ARCHS[] = {
    {"standard", LP_SAE_STANDARD, false, false},
    {"jumprelu", LP_SAE_JUMPRELU, false, false},
    {"topk", LP_SAE_TOPK, false, false},
    {"gated", LP_SAE_GATED, false, false},
    {"batchtopk", LP_SAE_BATCHTOPK, false, false},
    {"matryoshka_batchtopk", LP_SAE_MATRYOSHKA_BATCHTOPK, false, false},
    {"transcoder", LP_SAE_STANDARD, true, false},
    {"skip_transcoder", LP_SAE_STANDARD, true, true},
    {"jumprelu_transcoder", LP_SAE_JUMPRELU, true, false},
};

static bool batchtopk(lp_sae_arch a) { return a == LP_SAE_BATCHTOPK || a == LP_SAE_MATRYOSHKA_BATCHTOPK; }

/* SAELens's fields (and a Gemma Scope npz's cfg.json, if one is beside it). d_out_dflt: the
 * output width when the config gives none (an npz's W_dec), 0 when it must. */
static int read_saelens_cfg(lp_sae_info *in, const json_t *cfg, const char *what, const char *cw, bool npz,
                            long d_out_dflt) {
    const char *arch, *act, *norm;
    int rc;
    if ((rc = cfg_str(cfg, "architecture", cw, npz ? "jumprelu" : "standard", &arch))) return rc;
    int a = -1, na = (int)(sizeof SAELENS_ARCHS / sizeof *SAELENS_ARCHS);
    for (int i = 0; i < na; i++)
        if (strcmp(arch, SAELENS_ARCHS[i].name) == 0) a = i;
    if (a < 0)
        return lp_error(LP_EUNSUPPORTED, "%s: architecture \"%.40s\" is not one loupe computes (standard, jumprelu, "
                        "topk, gated, batchtopk, matryoshka_batchtopk, transcoder, skip_transcoder, "
                        "jumprelu_transcoder)", what, arch);
    json_t *head = json_object_get(cfg, "hook_head_index"); /* a dictionary of one head's hook_z: d_in is d_head */
    if (head && !json_is_null(head))
        return lp_error(LP_EUNSUPPORTED, "%s: hook_head_index (a dictionary on one head's z) is not read yet; loupe reads "
                        "hook_z dictionaries over all heads", what);
    in->arch = SAELENS_ARCHS[a].arch, in->transcoder = SAELENS_ARCHS[a].transcoder, in->skip = SAELENS_ARCHS[a].skip;
    if (in->transcoder) in->arch_label = SAELENS_ARCHS[a].name;
    if ((rc = cfg_str(cfg, "activation_fn", cw, in->arch == LP_SAE_TOPK ? "topk" : "relu", &act)) ||
        (rc = cfg_str(cfg, "normalize_activations", cw, "none", &norm)) ||
        (rc = cfg_bool(cfg, "apply_b_dec_to_input", cw, !npz && !in->transcoder, &in->apply_b_dec_to_input)) ||
        (rc = read_hook(cfg, "hook_name", cw, in->hook_name, sizeof in->hook_name)))
        return rc;
    if (in->transcoder) {
        long d_out;
        if ((rc = cfg_int(cfg, "d_out", cw, 1, LP_SAE_MAX_D_IN, d_out_dflt, !d_out_dflt, &d_out)) ||
            (rc = read_hook(cfg, "hook_name_out", cw, in->hook_name_out, sizeof in->hook_name_out)))
            return rc;
        in->d_out = (int)d_out;
        if (in->apply_b_dec_to_input) /* SAELens's TranscoderConfig.__post_init__ refuses it too */
            return lp_error(LP_EFORMAT, "%s: apply_b_dec_to_input is true, but a transcoder's b_dec is in its output's "
                            "space (SAELens refuses it too)", what);
        if (strcmp(act, "relu") != 0)
            return lp_error(LP_EUNSUPPORTED, "%s: activation_fn \"%.40s\" with architecture %s (a transcoder's is relu)",
                            what, act, arch);
    } else if (batchtopk(in->arch)) {
        json_t *k = json_object_get(cfg, "k"); /* a float: the mean active per row in training; unused here */
        if (k && !json_is_null(k) && (!json_is_number(k) || !(json_number_value(k) > 0)))
            return lp_error(LP_EFORMAT, "%s's \"k\" must be a positive number", cw);
    } else if (strcmp(act, "topk") == 0) {
        if (in->arch != LP_SAE_STANDARD && in->arch != LP_SAE_TOPK)
            return lp_error(LP_EFORMAT, "%s: activation_fn \"topk\" with architecture %s", what, arch);
        in->arch = LP_SAE_TOPK;
    } else if (strcmp(act, "tanh-relu") == 0) {
        if (in->arch != LP_SAE_STANDARD)
            return lp_error(LP_EFORMAT, "%s: activation_fn \"tanh-relu\" with architecture %s (it is standard's)", what,
                            arch);
        in->tanh_relu = true;
    } else if (strcmp(act, "relu") != 0) {
        return lp_error(LP_EUNSUPPORTED, "%s: activation_fn \"%.40s\" is not one loupe computes (relu, topk, tanh-relu)",
                        what, act);
    } else if (in->arch == LP_SAE_TOPK && json_object_get(cfg, "activation_fn")) {
        return lp_error(LP_EFORMAT, "%s: architecture topk with activation_fn \"relu\"", what);
    }
    if (in->arch == LP_SAE_TOPK) {
        long k;
        json_t *kw = json_object_get(cfg, "activation_fn_kwargs");
        const json_t *from = json_object_get(cfg, "k") || !json_is_object(kw) ? cfg : kw;
        /* SAELens's TopKSAEConfig defaults k to 100 */
        if ((rc = cfg_int(from, "k", cw, 1, in->d_sae > 0 ? in->d_sae : LP_SAE_MAX_D_SAE, 100, false, &k))) return rc;
        in->k = (int)k;
    }
    /* TopKSAEConfig's default false; TopKTrainingSAEConfig's (batchtopk's) true */
    if ((rc = cfg_bool(cfg, "rescale_acts_by_decoder_norm", cw, batchtopk(in->arch), &in->dec_norm_folded))) return rc;
    if (in->dec_norm_folded && in->arch != LP_SAE_TOPK && !batchtopk(in->arch))
        return lp_error(LP_EFORMAT, "%s: rescale_acts_by_decoder_norm is for topk and batchtopk, not %s", what, arch);
    static const char *const NORMS[] = {"none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"};
    int n = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(norm, NORMS[i]) == 0) n = i;
    if (n < 0)
        return lp_error(LP_EUNSUPPORTED, "%s: normalize_activations \"%.40s\" is not one loupe computes (none, "
                        "expected_average_only_in, constant_norm_rescale, layer_norm)", what, norm);
    in->norm = (lp_sae_norm)n;
    in->norm_scale = 1.0;
    json_t *f = json_object_get(cfg, "norm_scaling_factor");
    if (f && !json_is_null(f)) {
        double v = json_number_value(f);
        if (!json_is_number(f) || !isfinite(v) || v <= 0 || v > 1e12)
            return lp_error(LP_EFORMAT, "%s's \"norm_scaling_factor\" must be a positive number", cw);
        if (in->norm != LP_SAE_NORM_EXPECTED_AVERAGE_ONLY_IN)
            return lp_error(LP_EFORMAT, "%s: \"norm_scaling_factor\" is for normalize_activations "
                            "\"expected_average_only_in\", not \"%s\"", what, norm);
        in->norm_scale = v, in->norm_scale_given = true;
    }
    if (in->norm == LP_SAE_NORM_LAYER_NORM && in->d_in < 2)
        return lp_error(LP_EFORMAT, "%s: layer_norm needs d_in >= 2", what);
    in->no_norm_out = in->transcoder && (in->norm == LP_SAE_NORM_CONSTANT_NORM_RESCALE || in->norm == LP_SAE_NORM_LAYER_NORM);
    return LP_OK;
}

/* sparsify's hookpoint, the directory's name: layers.L (the layer's output), layers.L.mlp. */
static void sparsify_hook(lp_sae_info *in, const char *dirname) {
    long l;
    int used = 0;
    if (sscanf(dirname, "layers.%ld%n", &l, &used) != 1 || l < 0 || l > 1 << 20) return;
    const char *rest = dirname + used;
    if (!*rest) {
        snprintf(in->hook_name, sizeof in->hook_name, "blocks.%ld.hook_resid_post", l);
    } else if (strcmp(rest, ".mlp") == 0) {
        snprintf(in->hook_name, sizeof in->hook_name, in->transcoder ? "blocks.%ld.ln2.hook_normalized" :
                 "blocks.%ld.hook_mlp_out", l);
        if (in->transcoder) snprintf(in->hook_name_out, sizeof in->hook_name_out, "blocks.%ld.hook_mlp_out", l);
    }
}

static int read_sparsify_cfg(lp_sae_info *in, const json_t *cfg, const char *what, const char *cw) {
    long d_in, k, latents, expansion;
    const char *act;
    int rc;
    if ((rc = cfg_int(cfg, "d_in", cw, 1, LP_SAE_MAX_D_IN, 0, true, &d_in)) ||
        (rc = cfg_int(cfg, "num_latents", cw, 0, LP_SAE_MAX_D_SAE, 0, false, &latents)) ||
        (rc = cfg_int(cfg, "expansion_factor", cw, 1, LP_SAE_MAX_D_SAE, 32, false, &expansion)) ||
        (rc = cfg_str(cfg, "activation", cw, "topk", &act)) ||
        (rc = cfg_bool(cfg, "transcode", cw, false, &in->transcoder)) ||
        (rc = cfg_bool(cfg, "skip_connection", cw, false, &in->skip)))
        return rc;
    if (!latents && expansion > LP_SAE_MAX_D_SAE / d_in)
        return lp_error(LP_EFORMAT, "%s: d_in %ld times expansion_factor %ld is more than %d features", what, d_in,
                        expansion, LP_SAE_MAX_D_SAE);
    in->d_in = in->d_out = (int)d_in;
    in->d_sae = (int)(latents ? latents : d_in * expansion);
    if ((rc = cfg_int(cfg, "k", cw, 1, in->d_sae, 32, false, &k))) return rc;
    in->k = (int)k;
    if (strcmp(act, "topk") == 0) {
        in->arch = LP_SAE_TOPK;
    } else if (strcmp(act, "groupmax") == 0) {
        in->arch = LP_SAE_GROUPMAX;
        if (in->d_sae % in->k)
            return lp_error(LP_EFORMAT, "%s: groupmax needs k (%d) to divide the latents (%d)", what, in->k, in->d_sae);
    } else {
        return lp_error(LP_EUNSUPPORTED, "%s: activation \"%.40s\" is not one loupe computes (topk, groupmax)", what, act);
    }
    if (json_object_get(cfg, "embed_skip") && json_is_true(json_object_get(cfg, "embed_skip")))
        return lp_error(LP_EUNSUPPORTED, "%s: embed_skip (a skip from the embeddings) is not computed yet", what);
    in->apply_b_dec_to_input = !in->transcoder;
    in->norm = LP_SAE_NORM_NONE;
    in->norm_scale = 1.0;
    return LP_OK;
}

/* Llama Scope's hyperparams.json (fnlp's SAEs for Llama-3.1-8B), read as SAELens reads it:
 * get_llama_scope_config_from_hf makes a jumprelu config with apply_b_dec_to_input false,
 * normalize_activations expected_average_only_in and hook_name hook_point_in, and scales the
 * scalar jump_relu_threshold by sqrt(d_model) / dataset_average_activation_norm["in"];
 * SAE.from_pretrained then folds that same factor (the release's norm_scaling_factor) into the
 * weights (fold_activation_norm_scaling_factor: W_enc times it, W_dec and b_dec over it), which
 * is expected_average_only_in with the factor as loupe computes it. SAELens reads nothing
 * else; the other fields are checked so that a file it would misread is refused. *thr: every
 * feature's threshold, scaled. */
static int read_llama_scope_cfg(lp_sae_info *in, const json_t *cfg, const char *cw, double *thr) {
    long d_model, d_sae;
    const char *act, *norm, *hook_in, *hook_out;
    bool pre_bias;
    int rc;
    if ((rc = cfg_int(cfg, "d_model", cw, 1, LP_SAE_MAX_D_IN, 0, true, &d_model)) ||
        (rc = cfg_int(cfg, "d_sae", cw, 1, LP_SAE_MAX_D_SAE, 0, true, &d_sae)) ||
        (rc = cfg_str(cfg, "act_fn", cw, "jumprelu", &act)) ||
        (rc = cfg_str(cfg, "norm_activation", cw, "dataset-wise", &norm)) ||
        (rc = cfg_bool(cfg, "apply_decoder_bias_to_pre_encoder", cw, false, &pre_bias)) ||
        (rc = cfg_str(cfg, "hook_point_in", cw, NULL, &hook_in)) ||
        (rc = cfg_str(cfg, "hook_point_out", cw, NULL, &hook_out)))
        return rc;
    in->d_in = in->d_out = (int)d_model, in->d_sae = (int)d_sae;
    json_t *t = json_object_get(cfg, "jump_relu_threshold"), *norms = json_object_get(cfg, "dataset_average_activation_norm");
    json_t *n_in = json_is_object(norms) ? json_object_get(norms, "in") : NULL;
    double v = json_number_value(t), avg = json_number_value(n_in);
    if (!json_is_number(t) || !isfinite(v) || v < 0 || v > 1e12)
        return lp_error(LP_EFORMAT, "%s's \"jump_relu_threshold\" must be a number in 0..1e12", cw);
    if (!json_is_number(n_in) || !(avg >= 1e-12 && avg <= 1e12))
        return lp_error(LP_EFORMAT, "%s's \"dataset_average_activation_norm\" must hold \"in\", a number in "
                        "1e-12..1e12", cw);
    if (strcmp(act, "jumprelu") != 0 && !(strcmp(act, "topk") == 0 && v > 0)) /* lm_saes runs topk as jumprelu then */
        return lp_error(LP_EUNSUPPORTED, "%s's act_fn \"%.40s\" is not one SAELens's llama_scope loader reads (jumprelu)",
                        cw, act);
    if (strcmp(norm, "dataset-wise") != 0)
        return lp_error(LP_EUNSUPPORTED, "%s's norm_activation \"%.40s\" is not dataset-wise, which SAELens's "
                        "llama_scope loader assumes", cw, norm);
    if (pre_bias)
        return lp_error(LP_EUNSUPPORTED, "%s: apply_decoder_bias_to_pre_encoder is true, but SAELens's llama_scope "
                        "loader never subtracts b_dec from the input", cw);
    if (!hook_in) return lp_error(LP_EFORMAT, "%s has no \"hook_point_in\"", cw);
    if (hook_out && strcmp(hook_out, hook_in) != 0)
        return lp_error(LP_EUNSUPPORTED, "%s: hook_point_out %.60s is not hook_point_in %.60s: a transcoder, which "
                        "SAELens's llama_scope loader does not read (not done)", cw, hook_out, hook_in);
    in->arch = LP_SAE_JUMPRELU, in->apply_b_dec_to_input = false;
    in->norm = LP_SAE_NORM_EXPECTED_AVERAGE_ONLY_IN, in->norm_scale_given = true;
    in->norm_scale = sqrt((double)d_model) / avg; /* d_in**0.5 / dataset_average_activation_norm["in"] */
    *thr = v * in->norm_scale;
    if (!isfinite((float)in->norm_scale) || !isfinite((float)*thr))
        return lp_error(LP_EFORMAT, "%s: sqrt(d_model) / dataset_average_activation_norm[\"in\"] overflows float32", cw);
    return set_hook(in->hook_name, sizeof in->hook_name, hook_in, cw);
}

/* One threshold for every feature. */
static int fill_threshold(lp_sae *s, float v) {
    if (!(s->threshold = malloc((size_t)s->info.d_sae * sizeof *s->threshold))) return lp_error(LP_ENOMEM, "out of memory");
    for (int f = 0; f < s->info.d_sae; f++) s->threshold[f] = v;
    return LP_OK;
}

/* batchtopk's threshold: the scalar buffer topk_threshold of a training checkpoint, as
 * BatchTopKTrainingSAE.process_state_dict_for_saving_inference (batchtopk_sae.py) turns it into
 * jumprelu's threshold, one value for every feature; or a threshold (d_sae) already. */
static int batchtopk_threshold(lp_sae *s, const source *src) {
    tensor t;
    if (!lookup(src, "topk_threshold", &t)) return get(src, "threshold", s->info.d_sae, 0, true, &s->threshold);
    if (t.ndim > 1 || (t.ndim == 1 && t.shape[0] != 1))
        return lp_error(LP_EFORMAT, "%s: topk_threshold must be one number (a scalar)", src->what);
    float v;
    int rc = to_f32(&v, t.data, t.dt, 1, src->what, "topk_threshold");
    if (rc) return rc;
    if (!isfinite(v)) return lp_error(LP_EFORMAT, "%s: topk_threshold is not finite; the dictionary is damaged", src->what);
    return fill_threshold(s, v);
}

/* rescale_acts_by_decoder_norm folded into the weights, as SAELens's _fold_norm_topk
 * (topk_sae.py): W_dec[f] / |W_dec[f]|, W_enc[:, f] and b_enc[f] times it. The activations
 * are then those of TopKSAE.encode (pre times the norm) and decode (acts over the norm) with
 * the unfolded weights. In double, rounded once. */
static int fold_dec_norm(lp_sae *s, const char *what) {
    int m = s->info.d_sae, di = s->info.d_in, dout = s->info.d_out;
    for (int f = 0; f < m; f++) {
        float *w = s->w_dec + (size_t)f * dout;
        double ss = 0;
        for (int j = 0; j < dout; j++) ss += (double)w[j] * w[j];
        double nrm = sqrt(ss);
        if (!(nrm > 0) || !isfinite((float)nrm))
            return lp_error(LP_EFORMAT, "%s: W_dec row %d has norm %g; rescale_acts_by_decoder_norm cannot divide by it",
                            what, f, nrm);
        for (int j = 0; j < dout; j++) w[j] = (float)(w[j] / nrm);
        bool ok = isfinite(s->b_enc[f] = (float)(s->b_enc[f] * nrm));
        for (int j = 0; j < di; j++) {
            float *e = &s->w_enc[(size_t)j * m + f];
            ok &= isfinite(*e = (float)(*e * nrm));
        }
        if (!ok)
            return lp_error(LP_EFORMAT, "%s: folding W_dec's norms overflows float32 at feature %d", what, f);
    }
    return LP_OK;
}

/* Each format's files, inside the dictionary's directory, and its tensors' names; a transposed
 * tensor is stored as nn.Linear keeps its weight, (out, in). */
typedef struct {
    const char *weights, *cfg;
    bool cfg_needed;
    const char *w_enc, *b_enc, *w_dec, *b_dec;
    bool enc_t, dec_t;
} format_files;

static const format_files FORMATS[] = {
    [LP_SAE_FMT_SAELENS] = {"sae_weights.safetensors", "cfg.json", true, "W_enc", "b_enc", "W_dec", "b_dec", false, false},
    [LP_SAE_FMT_NPZ] = {"params.npz", "cfg.json", false, "W_enc", "b_enc", "W_dec", "b_dec", false, false},
    [LP_SAE_FMT_SPARSIFY] = {"sae.safetensors", "cfg.json", true, "encoder.weight", "encoder.bias", "W_dec", "b_dec",
                             true, false},
    /* SAELens's llama_scope_sae_huggingface_loader: W_enc encoder.weight.T, W_dec decoder.weight.T */
    [LP_SAE_FMT_LLAMA_SCOPE] = {"checkpoints/final.safetensors", "hyperparams.json", true, "encoder.weight",
                                "encoder.bias", "decoder.weight", "decoder.bias", true, true},
};
#define N_FORMATS ((int)(sizeof FORMATS / sizeof *FORMATS))

/* The sizes and parameters, from the config (cfg may be NULL for an npz) and the tensors. */
static int build(lp_sae **out, lp_sae_format fmt, const json_t *cfg, const source *src) {
    *out = NULL;
    const char *what = src->what;
    const format_files *ff = &FORMATS[fmt];
    char cw[4200];
    snprintf(cw, sizeof cw, "%s: %s", what, ff->cfg);
    lp_sae *s = calloc(1, sizeof *s);
    if (!s) return lp_error(LP_ENOMEM, "out of memory");
    lp_sae_info *in = &s->info;
    in->format = fmt;
    int rc = LP_OK;
    double thr = 0; /* Llama Scope's one threshold */
    if (fmt == LP_SAE_FMT_SPARSIFY) {
        rc = read_sparsify_cfg(in, cfg, what, cw);
    } else if (fmt == LP_SAE_FMT_LLAMA_SCOPE) {
        rc = read_llama_scope_cfg(in, cfg, cw, &thr);
    } else {
        long d_in, d_sae;
        int64_t dims[2] = {0, 0};
        if (fmt == LP_SAE_FMT_NPZ && !(rc = dims_of(src, "W_enc", dims)) &&
            (dims[0] < 1 || dims[0] > LP_SAE_MAX_D_IN || dims[1] < 1 || dims[1] > LP_SAE_MAX_D_SAE))
            rc = lp_error(LP_EFORMAT, "%s: W_enc must be (d_in, d_sae) with d_in in 1..%d and d_sae in 1..%d", what,
                          LP_SAE_MAX_D_IN, LP_SAE_MAX_D_SAE);
        bool need = fmt == LP_SAE_FMT_SAELENS;
        if (!rc && !(rc = cfg_int(cfg, "d_in", cw, 1, LP_SAE_MAX_D_IN, need ? 0 : dims[0], need, &d_in)) &&
            !(rc = cfg_int(cfg, "d_sae", cw, 1, LP_SAE_MAX_D_SAE, need ? 0 : dims[1], need, &d_sae))) {
            in->d_in = in->d_out = (int)d_in, in->d_sae = (int)d_sae;
            int64_t wd[2] = {0, 0}; /* an npz transcoder's d_out, when its cfg.json gives none: W_dec's */
            if (!need && cfg && (dims_of(src, "W_dec", wd) || wd[1] < 1 || wd[1] > LP_SAE_MAX_D_IN)) wd[1] = 0;
            rc = cfg ? read_saelens_cfg(in, cfg, what, cw, !need, (long)wd[1]) : LP_OK;
        }
        if (!rc && !cfg) in->arch = LP_SAE_JUMPRELU, in->norm_scale = 1.0; /* Gemma Scope: b_dec not subtracted */
    }
    int di = in->d_in, m = in->d_sae, dout = in->d_out;
    if (!rc) rc = get_as(src, ff->w_enc, ff->enc_t ? m : di, ff->enc_t ? di : m, ff->enc_t, true, &s->w_enc);
    if (!rc && in->arch == LP_SAE_GATED) {
        if (!(rc = get(src, "b_gate", m, 0, true, &s->b_enc)) && !(rc = get(src, "r_mag", m, 0, true, &s->r_mag)))
            rc = get(src, "b_mag", m, 0, true, &s->b_mag);
        for (int j = 0; !rc && j < m; j++)
            if (!isfinite(s->r_mag[j] = expf(s->r_mag[j])))
                rc = lp_error(LP_EFORMAT, "%s: exp(r_mag[%d]) overflows float32", what, j);
    } else if (!rc) {
        rc = get(src, ff->b_enc, m, 0, true, &s->b_enc);
    }
    if (!rc && fmt == LP_SAE_FMT_LLAMA_SCOPE) rc = fill_threshold(s, (float)thr);
    else if (!rc && in->arch == LP_SAE_JUMPRELU) rc = get(src, "threshold", m, 0, true, &s->threshold);
    if (!rc && batchtopk(in->arch)) rc = batchtopk_threshold(s, src);
    if (!rc && in->skip) rc = get(src, "W_skip", dout, di, true, &s->w_skip);
    if (!rc) rc = get_as(src, ff->w_dec, ff->dec_t ? dout : m, ff->dec_t ? m : dout, ff->dec_t, true, &s->w_dec);
    if (!rc) rc = get(src, ff->b_dec, dout, 0, true, &s->b_dec);
    if (!rc && in->dec_norm_folded) rc = fold_dec_norm(s, what);
    if (rc) {
        lp_sae_free(s);
        return rc;
    }
    *out = s;
    return LP_OK;
}

static int parse_cfg(const char *cfg, size_t len, const char *cw, json_t **out) {
    *out = NULL;
    if (!cfg) return LP_OK;
    if (len > LP_JSON_MAX_CONFIG) return lp_error(LP_ERANGE, "%s is over %u bytes", cw, LP_JSON_MAX_CONFIG);
    json_error_t e;
    json_t *j = json_loadb(cfg, len, JSON_REJECT_DUPLICATES, &e);
    if (!j) return lp_error(LP_EFORMAT, "%s line %d column %d: %s", cw, e.line, e.column, e.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return lp_error(LP_EFORMAT, "%s is not a JSON object", cw);
    }
    *out = j;
    return LP_OK;
}

int lp_sae_parse(lp_sae **out, lp_sae_format fmt, const char *cfg, size_t cfg_len, const void *weights, size_t len,
                 const char *what) {
    *out = NULL;
    if ((int)fmt < 0 || (int)fmt >= N_FORMATS) return lp_error(LP_EINVAL, "%s: no dictionary format %d", what, (int)fmt);
    if (!cfg && FORMATS[fmt].cfg_needed) return lp_error(LP_EINVAL, "%s: this format needs its %s", what, FORMATS[fmt].cfg);
    char cw[4200];
    snprintf(cw, sizeof cw, "%s: %s", what, FORMATS[fmt].cfg);
    json_t *j;
    int rc = parse_cfg(cfg, cfg_len, cw, &j);
    if (rc) return rc;
    source src = {.what = what};
    lp_safetensors *st = NULL;
    lp_npz *z = NULL;
    rc = fmt == LP_SAE_FMT_NPZ ? lp_npz_parse(&z, weights, len, what) : lp_st_parse(&st, weights, len, what);
    src.st = st, src.npz = z;
    if (!rc) rc = build(out, fmt, j, &src);
    lp_st_free(st);
    lp_npz_free(z);
    json_decref(j);
    return rc;
}

/* ---- files ---- */

static const char *base_name(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

/* When path is the file rel (a path inside a directory) of some directory: that directory in
 * dir ("." for a bare rel). */
static bool dir_of(char *dir, size_t cap, const char *path, const char *rel) {
    size_t n = strlen(path), r = strlen(rel);
    if (n < r || strcmp(path + n - r, rel) != 0 || (n > r && path[n - r - 1] != '/')) return false;
    size_t keep = n > r ? n - r - 1 : 0; /* what comes before the '/' */
    if (keep >= cap) return false;
    if (n == r) snprintf(dir, cap, ".");
    else if (!keep) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)keep, path);
    return true;
}

#define LAYOUTS_TEXT "SAELens (cfg.json + sae_weights.safetensors), sparsify (cfg.json + sae.safetensors), Gemma " \
                     "Scope (params.npz) and Llama Scope (hyperparams.json + checkpoints/final.safetensors)"

int lp_sae_load(lp_sae **out, const char *path) {
    *out = NULL;
    char dir[4096], weights[4096], cfgp[4096];
    bool is_dir = lp_dir_exists(path);
    if (!is_dir && !lp_file_exists(path))
        return lp_error(LP_EIO, "%s: no such file or directory (give a dictionary's directory: " LAYOUTS_TEXT ")", path);
    if (is_dir && strlen(path) >= sizeof dir) return lp_error(LP_ERANGE, "%s: path too long", path);
    /* a directory holding more than one layout reads as the first of these */
    static const lp_sae_format ORDER[] = {LP_SAE_FMT_SAELENS, LP_SAE_FMT_SPARSIFY, LP_SAE_FMT_NPZ, LP_SAE_FMT_LLAMA_SCOPE};
    int found = -1;
    for (int i = 0; i < (int)(sizeof ORDER / sizeof *ORDER) && found < 0; i++) {
        const format_files *ff = &FORMATS[ORDER[i]];
        if (is_dir)
            snprintf(dir, sizeof dir, "%s", path);
        else if (!dir_of(dir, sizeof dir, path, ff->cfg) && !dir_of(dir, sizeof dir, path, ff->weights))
            continue;
        if (lp_path_join(weights, sizeof weights, dir, ff->weights)) return lp_error(LP_ERANGE, "%s: path too long", path);
        if (lp_file_exists(weights)) found = (int)ORDER[i];
    }
    size_t pl = strlen(path);
    if (found < 0 && !is_dir && pl > 4 && strcmp(path + pl - 4, ".npz") == 0) { /* an npz of any name */
        if (lp_path_dirname(dir, sizeof dir, path)) return lp_error(LP_ERANGE, "%s: path too long", path);
        snprintf(weights, sizeof weights, "%s", path);
        found = LP_SAE_FMT_NPZ;
    }
    if (found < 0) return lp_error(LP_EFORMAT, "%s: not a dictionary: loupe reads " LAYOUTS_TEXT, path);
    lp_sae_format fmt = (lp_sae_format)found;
    const format_files *ff = &FORMATS[fmt];
    if (lp_path_join(cfgp, sizeof cfgp, dir, ff->cfg)) return lp_error(LP_ERANGE, "%s: path too long", path);
    json_t *cfg = NULL;
    int rc = LP_OK;
    if (lp_file_exists(cfgp))
        rc = lp_json_load_file(cfgp, LP_JSON_MAX_CONFIG, JSON_REJECT_DUPLICATES, &cfg);
    else if (ff->cfg_needed)
        rc = lp_error(LP_EIO, "%s: no %s beside %s", dir, ff->cfg, ff->weights);
    if (!rc && cfg && !json_is_object(cfg)) rc = lp_error(LP_EFORMAT, "%s: not a JSON object", cfgp);
    if (rc) {
        json_decref(cfg);
        return rc;
    }
    source src = {.what = weights};
    lp_safetensors *st = NULL;
    lp_npz *z = NULL;
    rc = fmt == LP_SAE_FMT_NPZ ? lp_npz_open(&z, weights) : lp_st_open(&st, weights);
    src.st = st, src.npz = z;
    if (!rc) rc = build(out, fmt, cfg, &src);
    if (!rc && fmt == LP_SAE_FMT_SPARSIFY) {
        char real[4096];
        snprintf(real, sizeof real, "%s", dir);
        size_t n = strlen(real);
        while (n > 1 && real[n - 1] == '/') real[--n] = '\0';
        sparsify_hook(&(*out)->info, base_name(real));
    }
    lp_st_free(st);
    lp_npz_free(z);
    json_decref(cfg);
    return rc;
}
