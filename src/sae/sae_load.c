/* Reading dictionaries: SAELens, Gemma Scope's params.npz and sparsify (see sae.h). Every
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

/* The tensor name, shaped (rows) or (rows, cols) (cols 0: one dimension), as new floats in
 * *out; *out NULL and LP_OK when absent and optional. */
static int get(const source *src, const char *name, int rows, int cols, bool required, float **out) {
    *out = NULL;
    lp_dtype dt;
    int ndim;
    const int64_t *shape;
    const void *data;
    if (src->st) {
        const lp_st_tensor *t = lp_st_find(src->st, name);
        if (!t) goto absent;
        dt = t->dtype, ndim = t->ndim, shape = t->shape, data = t->data;
    } else {
        const lp_npy_array *a = lp_npz_find(src->npz, name);
        if (!a) goto absent;
        dt = a->dtype, ndim = a->ndim, shape = a->shape, data = a->data;
    }
    int want = cols ? 2 : 1;
    if (ndim != want || shape[0] != rows || (cols && shape[1] != cols)) {
        char got[96] = "";
        for (int i = 0, at = 0; i < ndim && i < 4; i++)
            at += snprintf(got + at, sizeof got - (size_t)at, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (cols)
            return lp_error(LP_EFORMAT, "%s: %s is (%s), but the config makes it (%d, %d)", src->what, name, got, rows, cols);
        return lp_error(LP_EFORMAT, "%s: %s is (%s), but the config makes it (%d)", src->what, name, got, rows);
    }
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    float *f = malloc(n * sizeof *f);
    if (!f) return lp_error(LP_ENOMEM, "%s: out of memory for %s (%zu floats)", src->what, name, n);
    int rc = to_f32(f, data, dt, n, src->what, name);
    for (size_t i = 0; !rc && i < n; i++)
        if (!isfinite(f[i]))
            rc = lp_error(LP_EFORMAT, "%s: %s holds %s at element %zu; the dictionary is damaged", src->what, name,
                          isnan(f[i]) ? "NaN" : "inf", i);
    if (rc) {
        free(f);
        return rc;
    }
    *out = f;
    return LP_OK;
absent:
    return required ? lp_error(LP_EFORMAT, "%s: no tensor %s", src->what, name) : LP_OK;
}

/* A tensor's first dimensions, for dictionaries whose config leaves sizes to the weights. */
static int dims_of(const source *src, const char *name, int64_t d[2]) {
    d[0] = d[1] = -1;
    if (src->st) {
        const lp_st_tensor *t = lp_st_find(src->st, name);
        if (!t) return lp_error(LP_EFORMAT, "%s: no tensor %s", src->what, name);
        for (int i = 0; i < t->ndim && i < 2; i++) d[i] = t->shape[i];
    } else {
        const lp_npy_array *a = lp_npz_find(src->npz, name);
        if (!a) return lp_error(LP_EFORMAT, "%s: no array %s", src->what, name);
        for (int i = 0; i < a->ndim && i < 2; i++) d[i] = a->shape[i];
    }
    return LP_OK;
}

/* ---- config values ---- */

static int cfg_int(const json_t *cfg, const char *key, const char *what, long lo, long hi, long dflt, bool required,
                   long *out) {
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    *out = dflt;
    if (!v || json_is_null(v)) return required ? lp_error(LP_EFORMAT, "%s: cfg.json has no \"%s\"", what, key) : LP_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return lp_error(LP_EFORMAT, "%s: cfg.json's \"%s\" must be an integer in %ld..%ld", what, key, lo, hi);
    *out = (long)json_integer_value(v);
    return LP_OK;
}

static int cfg_bool(const json_t *cfg, const char *key, const char *what, bool dflt, bool *out) {
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    *out = dflt;
    if (!v || json_is_null(v)) return LP_OK;
    if (!json_is_boolean(v)) return lp_error(LP_EFORMAT, "%s: cfg.json's \"%s\" must be true or false", what, key);
    *out = json_is_true(v);
    return LP_OK;
}

static int cfg_str(const json_t *cfg, const char *key, const char *what, const char *dflt, const char **out) {
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    *out = dflt;
    if (!v || json_is_null(v)) return LP_OK;
    if (!json_is_string(v)) return lp_error(LP_EFORMAT, "%s: cfg.json's \"%s\" must be a string", what, key);
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
static int read_saelens_cfg(lp_sae_info *in, const json_t *cfg, const char *what, bool npz, long d_out_dflt) {
    const char *arch, *act, *norm;
    int rc;
    if ((rc = cfg_str(cfg, "architecture", what, npz ? "jumprelu" : "standard", &arch))) return rc;
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
    if ((rc = cfg_str(cfg, "activation_fn", what, in->arch == LP_SAE_TOPK ? "topk" : "relu", &act)) ||
        (rc = cfg_str(cfg, "normalize_activations", what, "none", &norm)) ||
        (rc = cfg_bool(cfg, "apply_b_dec_to_input", what, !npz && !in->transcoder, &in->apply_b_dec_to_input)) ||
        (rc = read_hook(cfg, "hook_name", what, in->hook_name, sizeof in->hook_name)))
        return rc;
    if (in->transcoder) {
        long d_out;
        if ((rc = cfg_int(cfg, "d_out", what, 1, LP_SAE_MAX_D_IN, d_out_dflt, !d_out_dflt, &d_out)) ||
            (rc = read_hook(cfg, "hook_name_out", what, in->hook_name_out, sizeof in->hook_name_out)))
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
            return lp_error(LP_EFORMAT, "%s: cfg.json's \"k\" must be a positive number", what);
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
        if ((rc = cfg_int(from, "k", what, 1, in->d_sae > 0 ? in->d_sae : LP_SAE_MAX_D_SAE, 100, false, &k))) return rc;
        in->k = (int)k;
    }
    /* TopKSAEConfig's default false; TopKTrainingSAEConfig's (batchtopk's) true */
    if ((rc = cfg_bool(cfg, "rescale_acts_by_decoder_norm", what, batchtopk(in->arch), &in->dec_norm_folded))) return rc;
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
            return lp_error(LP_EFORMAT, "%s: cfg.json's \"norm_scaling_factor\" must be a positive number", what);
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

static int read_sparsify_cfg(lp_sae_info *in, const json_t *cfg, const char *what) {
    long d_in, k, latents, expansion;
    const char *act;
    int rc;
    if ((rc = cfg_int(cfg, "d_in", what, 1, LP_SAE_MAX_D_IN, 0, true, &d_in)) ||
        (rc = cfg_int(cfg, "num_latents", what, 0, LP_SAE_MAX_D_SAE, 0, false, &latents)) ||
        (rc = cfg_int(cfg, "expansion_factor", what, 1, LP_SAE_MAX_D_SAE, 32, false, &expansion)) ||
        (rc = cfg_str(cfg, "activation", what, "topk", &act)) ||
        (rc = cfg_bool(cfg, "transcode", what, false, &in->transcoder)) ||
        (rc = cfg_bool(cfg, "skip_connection", what, false, &in->skip)))
        return rc;
    if (!latents && expansion > LP_SAE_MAX_D_SAE / d_in)
        return lp_error(LP_EFORMAT, "%s: d_in %ld times expansion_factor %ld is more than %d features", what, d_in,
                        expansion, LP_SAE_MAX_D_SAE);
    in->d_in = in->d_out = (int)d_in;
    in->d_sae = (int)(latents ? latents : d_in * expansion);
    if ((rc = cfg_int(cfg, "k", what, 1, in->d_sae, 32, false, &k))) return rc;
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

/* batchtopk's threshold: the scalar buffer topk_threshold of a training checkpoint, as
 * BatchTopKTrainingSAE.process_state_dict_for_saving_inference (batchtopk_sae.py) turns it into
 * jumprelu's threshold, one value for every feature; or a threshold (d_sae) already. */
static int batchtopk_threshold(lp_sae *s, const source *src) {
    int m = s->info.d_sae;
    lp_dtype dt = LP_DT_F32;
    int ndim = -1;
    const int64_t *shape = NULL;
    const void *data = NULL;
    if (src->st) {
        const lp_st_tensor *t = lp_st_find(src->st, "topk_threshold");
        if (t) dt = t->dtype, ndim = t->ndim, shape = t->shape, data = t->data;
    } else {
        const lp_npy_array *a = lp_npz_find(src->npz, "topk_threshold");
        if (a) dt = a->dtype, ndim = a->ndim, shape = a->shape, data = a->data;
    }
    if (ndim < 0) return get(src, "threshold", m, 0, true, &s->threshold);
    if (ndim > 1 || (ndim == 1 && shape[0] != 1))
        return lp_error(LP_EFORMAT, "%s: topk_threshold must be one number (a scalar)", src->what);
    float v;
    int rc = to_f32(&v, data, dt, 1, src->what, "topk_threshold");
    if (rc) return rc;
    if (!isfinite(v)) return lp_error(LP_EFORMAT, "%s: topk_threshold is not finite; the dictionary is damaged", src->what);
    if (!(s->threshold = malloc((size_t)m * sizeof *s->threshold))) return lp_error(LP_ENOMEM, "out of memory");
    for (int f = 0; f < m; f++) s->threshold[f] = v;
    return LP_OK;
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

/* The sizes and parameters, from the config (cfg may be NULL for an npz) and the tensors. */
static int build(lp_sae **out, lp_sae_format fmt, const json_t *cfg, const source *src) {
    *out = NULL;
    const char *what = src->what;
    lp_sae *s = calloc(1, sizeof *s);
    if (!s) return lp_error(LP_ENOMEM, "out of memory");
    lp_sae_info *in = &s->info;
    in->format = fmt;
    int rc = LP_OK;
    if (fmt == LP_SAE_FMT_SPARSIFY) {
        rc = read_sparsify_cfg(in, cfg, what);
    } else {
        long d_in, d_sae;
        int64_t dims[2] = {0, 0};
        if (fmt == LP_SAE_FMT_NPZ && !(rc = dims_of(src, "W_enc", dims)) &&
            (dims[0] < 1 || dims[0] > LP_SAE_MAX_D_IN || dims[1] < 1 || dims[1] > LP_SAE_MAX_D_SAE))
            rc = lp_error(LP_EFORMAT, "%s: W_enc must be (d_in, d_sae) with d_in in 1..%d and d_sae in 1..%d", what,
                          LP_SAE_MAX_D_IN, LP_SAE_MAX_D_SAE);
        bool need = fmt == LP_SAE_FMT_SAELENS;
        if (!rc && !(rc = cfg_int(cfg, "d_in", what, 1, LP_SAE_MAX_D_IN, need ? 0 : dims[0], need, &d_in)) &&
            !(rc = cfg_int(cfg, "d_sae", what, 1, LP_SAE_MAX_D_SAE, need ? 0 : dims[1], need, &d_sae))) {
            in->d_in = in->d_out = (int)d_in, in->d_sae = (int)d_sae;
            int64_t wd[2] = {0, 0}; /* an npz transcoder's d_out, when its cfg.json gives none: W_dec's */
            if (!need && cfg && (dims_of(src, "W_dec", wd) || wd[1] < 1 || wd[1] > LP_SAE_MAX_D_IN)) wd[1] = 0;
            rc = cfg ? read_saelens_cfg(in, cfg, what, !need, (long)wd[1]) : LP_OK;
        }
        if (!rc && !cfg) in->arch = LP_SAE_JUMPRELU, in->norm_scale = 1.0; /* Gemma Scope: b_dec not subtracted */
    }
    int di = in->d_in, m = in->d_sae, dout = in->d_out;
    if (!rc && fmt == LP_SAE_FMT_SPARSIFY) {
        float *wt = NULL;
        rc = get(src, "encoder.weight", m, di, true, &wt);
        if (!rc && !(s->w_enc = malloc((size_t)di * m * sizeof *s->w_enc))) rc = lp_error(LP_ENOMEM, "out of memory");
        for (int f = 0; !rc && f < m; f++)
            for (int j = 0; j < di; j++) s->w_enc[(size_t)j * m + f] = wt[(size_t)f * di + j];
        free(wt);
        if (!rc) rc = get(src, "encoder.bias", m, 0, true, &s->b_enc);
    } else if (!rc) {
        rc = get(src, "W_enc", di, m, true, &s->w_enc);
        if (!rc && in->arch == LP_SAE_GATED) {
            if (!(rc = get(src, "b_gate", m, 0, true, &s->b_enc)) && !(rc = get(src, "r_mag", m, 0, true, &s->r_mag)))
                rc = get(src, "b_mag", m, 0, true, &s->b_mag);
            for (int j = 0; !rc && j < m; j++)
                if (!isfinite(s->r_mag[j] = expf(s->r_mag[j])))
                    rc = lp_error(LP_EFORMAT, "%s: exp(r_mag[%d]) overflows float32", what, j);
        } else if (!rc) {
            rc = get(src, "b_enc", m, 0, true, &s->b_enc);
        }
        if (!rc && in->arch == LP_SAE_JUMPRELU) rc = get(src, "threshold", m, 0, true, &s->threshold);
        if (!rc && batchtopk(in->arch)) rc = batchtopk_threshold(s, src);
    }
    if (!rc && in->skip) rc = get(src, "W_skip", dout, di, true, &s->w_skip);
    if (!rc) rc = get(src, "W_dec", m, dout, true, &s->w_dec);
    if (!rc) rc = get(src, "b_dec", dout, 0, true, &s->b_dec);
    if (!rc && in->dec_norm_folded) rc = fold_dec_norm(s, what);
    if (rc) {
        lp_sae_free(s);
        return rc;
    }
    *out = s;
    return LP_OK;
}

static int parse_cfg(const char *cfg, size_t len, const char *what, json_t **out) {
    *out = NULL;
    if (!cfg) return LP_OK;
    if (len > LP_JSON_MAX_CONFIG) return lp_error(LP_ERANGE, "%s: cfg.json is over %u bytes", what, LP_JSON_MAX_CONFIG);
    json_error_t e;
    json_t *j = json_loadb(cfg, len, JSON_REJECT_DUPLICATES, &e);
    if (!j) return lp_error(LP_EFORMAT, "%s: cfg.json line %d column %d: %s", what, e.line, e.column, e.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return lp_error(LP_EFORMAT, "%s: cfg.json is not a JSON object", what);
    }
    *out = j;
    return LP_OK;
}

int lp_sae_parse(lp_sae **out, lp_sae_format fmt, const char *cfg, size_t cfg_len, const void *weights, size_t len,
                 const char *what) {
    *out = NULL;
    if (!cfg && fmt != LP_SAE_FMT_NPZ) return lp_error(LP_EINVAL, "%s: this format needs its cfg.json", what);
    json_t *j;
    int rc = parse_cfg(cfg, cfg_len, what, &j);
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

int lp_sae_load(lp_sae **out, const char *path) {
    *out = NULL;
    char dir[4096], weights[4096], cfgp[4096];
    lp_sae_format fmt;
    const char *file = NULL;
    if (lp_dir_exists(path)) {
        snprintf(dir, sizeof dir, "%s", path);
    } else if (lp_file_exists(path)) {
        if (lp_path_dirname(dir, sizeof dir, path)) return lp_error(LP_ERANGE, "%s: path too long", path);
        file = base_name(path);
    } else {
        return lp_error(LP_EIO, "%s: no such file or directory (give an SAE's directory: cfg.json with "
                        "sae_weights.safetensors or sae.safetensors, or params.npz)", path);
    }
    static const struct {
        const char *name;
        lp_sae_format fmt;
    } LAYOUTS[] = {{"sae_weights.safetensors", LP_SAE_FMT_SAELENS}, {"sae.safetensors", LP_SAE_FMT_SPARSIFY},
                   {"params.npz", LP_SAE_FMT_NPZ}};
    int found = -1;
    for (int i = 0; i < 3 && found < 0; i++) {
        if (file && strcmp(file, "cfg.json") != 0 && strcmp(file, LAYOUTS[i].name) != 0) continue;
        if (lp_path_join(weights, sizeof weights, dir, LAYOUTS[i].name)) return lp_error(LP_ERANGE, "%s: path too long", path);
        if (lp_file_exists(weights)) found = i;
    }
    if (found < 0 && file && strlen(file) > 4 && strcmp(file + strlen(file) - 4, ".npz") == 0) {
        snprintf(weights, sizeof weights, "%s", path);
        found = 2;
    }
    if (found < 0)
        return lp_error(LP_EFORMAT, "%s: not an SAE: loupe reads SAELens (cfg.json + sae_weights.safetensors), "
                        "sparsify (cfg.json + sae.safetensors) and Gemma Scope (params.npz)", path);
    fmt = LAYOUTS[found].fmt;
    if (lp_path_join(cfgp, sizeof cfgp, dir, "cfg.json")) return lp_error(LP_ERANGE, "%s: path too long", path);
    json_t *cfg = NULL;
    int rc = LP_OK;
    if (lp_file_exists(cfgp))
        rc = lp_json_load_file(cfgp, LP_JSON_MAX_CONFIG, JSON_REJECT_DUPLICATES, &cfg);
    else if (fmt != LP_SAE_FMT_NPZ)
        rc = lp_error(LP_EIO, "%s: no cfg.json beside %s", dir, LAYOUTS[found].name);
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
