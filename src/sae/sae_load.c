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

/* SAELens's fields (and a Gemma Scope npz's cfg.json, if one is beside it). */
static int read_saelens_cfg(lp_sae_info *in, const json_t *cfg, const char *what, bool npz) {
    const char *arch, *act, *norm, *hook = NULL;
    int rc;
    if ((rc = cfg_str(cfg, "architecture", what, npz ? "jumprelu" : "standard", &arch)) ||
        (rc = cfg_str(cfg, "activation_fn", what, arch && strcmp(arch, "topk") == 0 ? "topk" : "relu", &act)) ||
        (rc = cfg_str(cfg, "normalize_activations", what, "none", &norm)) ||
        (rc = cfg_bool(cfg, "apply_b_dec_to_input", what, !npz, &in->apply_b_dec_to_input)) ||
        (rc = cfg_str(cfg, "hook_name", what, NULL, &hook)))
        return rc;
    for (const char *meta_key = "metadata"; !hook && meta_key; meta_key = strcmp(meta_key, "metadata") ? NULL : "meta") {
        json_t *meta = json_object_get(cfg, meta_key);
        if (json_is_object(meta) && (rc = cfg_str(meta, "hook_name", what, NULL, &hook))) return rc;
    }
    if (hook && (rc = set_hook(in->hook_name, sizeof in->hook_name, hook, what))) return rc;
    static const char *const ARCHS[] = {"standard", "jumprelu", "topk", "gated"};
    int a = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(arch, ARCHS[i]) == 0) a = i;
    if (a < 0)
        return lp_error(LP_EUNSUPPORTED, "%s: architecture \"%.40s\" is not one loupe computes (standard, jumprelu, "
                        "topk, gated)", what, arch);
    in->arch = (lp_sae_arch)a;
    if (strcmp(act, "topk") == 0) {
        if (in->arch != LP_SAE_STANDARD && in->arch != LP_SAE_TOPK)
            return lp_error(LP_EFORMAT, "%s: activation_fn \"topk\" with architecture %s", what, arch);
        in->arch = LP_SAE_TOPK;
    } else if (strcmp(act, "relu") != 0) {
        return lp_error(LP_EUNSUPPORTED, "%s: activation_fn \"%.40s\" is not one loupe computes (relu, topk)", what, act);
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
            rc = cfg ? read_saelens_cfg(in, cfg, what, !need) : LP_OK;
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
        if (!rc && in->skip) rc = get(src, "W_skip", dout, di, true, &s->w_skip);
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
    }
    if (!rc) rc = get(src, "W_dec", m, dout, true, &s->w_dec);
    if (!rc) rc = get(src, "b_dec", dout, 0, true, &s->b_dec);
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
