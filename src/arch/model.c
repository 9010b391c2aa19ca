/* Loading a model: find what the path holds, read config.json, hand over to the
 * architecture's loader, attach the tokenizer, and check that the pieces agree. */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loupe/dtype.h"
#include "loupe/error.h"
#include "loupe/gguf.h"
#include "arch/model_impl.h"
#include "util/parallel.h"


/* The Hugging Face architectures loupe reads: config "architectures"[0] -> loader. */
static const struct {
    const char *name;
    const char *model_type; /* used when "architectures" is absent */
    arch_loader_fn load;
} ARCHES[] = {
    {"GPT2LMHeadModel", "gpt2", lp_arch_gpt2_load},
    {"GPT2Model", NULL, lp_arch_gpt2_load},
    {"LlamaForCausalLM", "llama", lp_arch_llama_load},
    {"MistralForCausalLM", "mistral", lp_arch_llama_load},
    {"Qwen2ForCausalLM", "qwen2", lp_arch_llama_load},
    {"GPTNeoXForCausalLM", "gpt_neox", lp_arch_gpt_neox_load},
    {"Gemma2ForCausalLM", "gemma2", lp_arch_gemma2_load},
    {"BertModel", "bert", lp_arch_bert_load},
    {"BertForMaskedLM", NULL, lp_arch_bert_load},
    {"BertForSequenceClassification", NULL, lp_arch_bert_load},
    {"BertForPreTraining", NULL, lp_arch_bert_load}, /* its masked-LM head; next-sentence prediction is not read */
    {"RobertaModel", "roberta", lp_arch_bert_load},
    {"RobertaForMaskedLM", NULL, lp_arch_bert_load},
    {"RobertaForSequenceClassification", NULL, lp_arch_bert_load},
    {"DistilBertModel", "distilbert", lp_arch_distilbert_load},
    {"DistilBertForMaskedLM", NULL, lp_arch_distilbert_load},
    {"DistilBertForSequenceClassification", NULL, lp_arch_distilbert_load},
    {"T5ForConditionalGeneration", "t5", lp_arch_t5_load},
    {"MT5ForConditionalGeneration", "mt5", lp_arch_t5_load},
    {"T5EncoderModel", NULL, lp_arch_t5_load},
    {"MT5EncoderModel", NULL, lp_arch_t5_load},
};

int lp_cfg_range(long long v, const char *key, int lo, int hi, int *out, const char *path) {
    if (v < lo || v > hi)
        return lp_error(LP_EFORMAT, "%s: \"%s\" is %lld; it must be an integer from %d to %d", path, key, v, lo, hi);
    *out = (int)v;
    return LP_OK;
}

int lp_cfg_int(json_t *obj, const char *key, long long def, int lo, int hi, int *out, const char *path) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (def == LP_CFG_REQUIRED) return lp_error(LP_EFORMAT, "%s: \"%s\" is missing; the model needs it", path, key);
        return lp_cfg_range(def, key, lo, hi, out, path);
    }
    if (json_is_integer(v)) return lp_cfg_range((long long)json_integer_value(v), key, lo, hi, out, path);
    if (json_is_real(v)) {
        /* compared as a double first: converting one outside the integer range is undefined */
        double x = json_real_value(v);
        if (x == floor(x) && x >= lo && x <= hi) return lp_cfg_range((long long)x, key, lo, hi, out, path);
        return lp_error(LP_EFORMAT, "%s: \"%s\" is %g; it must be an integer from %d to %d", path, key, x, lo, hi);
    }
    return lp_error(LP_EFORMAT, "%s: \"%s\" should be an integer", path, key);
}

int lp_cfg_mul(int a, int b, const char *what, int *out, const char *path) {
    long long p = (long long)a * b; /* a, b are ints: the product fits in 64 bits */
    if (p > INT_MAX || p < INT_MIN)
        return lp_error(LP_EFORMAT, "%s: %s = %d x %d = %lld is too large", path, what, a, b, p);
    *out = (int)p;
    return LP_OK;
}

int lp_cfg_positive(json_t *obj, const char *key, double def, double hi, double *out, const char *path) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LP_OK;
    }
    if (!json_is_number(v)) return lp_error(LP_EFORMAT, "%s: \"%s\" should be a number", path, key);
    double x = json_number_value(v);
    if (!(x > 0 && x <= hi)) /* also refuses NaN */
        return lp_error(LP_EFORMAT, "%s: \"%s\" is %g; it must be a number above 0 and at most %g", path, key, x, hi);
    *out = x;
    return LP_OK;
}

/* The first inf or NaN in u[i0, i1): exponent bits all ones, i.e. (u & E) + 2^23 carries
 * into the sign bit. Or-ed over blocks of 256 floats with no branch per float, which the
 * compiler vectorises at -O2; the block that has one is searched again float by float. */
static long first_nonfinite_in(const uint32_t *u, size_t i0, size_t i1) {
    size_t i = i0;
    for (; i + 256 <= i1; i += 256) {
        uint32_t acc = 0;
        for (int k = 0; k < 256; k++) acc |= (u[i + k] & 0x7f800000u) + 0x00800000u;
        if (acc & 0x80000000u) break;
    }
    for (; i < i1; i++)
        if ((u[i] & 0x7f800000u) == 0x7f800000u) return (long)i;
    return -1;
}

typedef struct {
    const uint32_t *u;
    _Atomic long first; /* the lowest index found so far, LONG_MAX for none */
} scan_job;

static void scan_range(void *ctx, size_t i0, size_t i1) {
    scan_job *j = ctx;
    if ((long)i0 > atomic_load(&j->first)) return; /* an earlier chunk has one already */
    long at = first_nonfinite_in(j->u, i0, i1);
    long cur = atomic_load(&j->first);
    while (at >= 0 && at < cur && !atomic_compare_exchange_weak(&j->first, &cur, at)) {
    }
}

/* Reading the weights is most of a load (500 MB for GPT-2 small: about 80 ms on one core,
 * bound by the memory it streams), so the scan is shared among the compute threads in
 * chunks of 1 MB; the answer is the lowest index whatever the cut. */
long lp_first_nonfinite(const float *x, size_t n) {
    scan_job j = {(const uint32_t *)(const void *)x, LONG_MAX};
    lp_parallel_for(n, (size_t)1 << 18, scan_range, &j);
    long first = atomic_load(&j.first);
    return first == LONG_MAX ? -1 : first;
}

int lp_model_own(lp_model *m, float *buf) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        float **nb = realloc(m->owned, (size_t)cap * sizeof *nb);
        if (!nb) {
            free(buf);
            return lp_error(LP_ENOMEM, "out of memory");
        }
        m->owned = nb;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = buf;
    return LP_OK;
}

bool lp_model_has(const lp_model *m, const char *name) {
    return m->gguf ? lp_gguf_model_has(m, name) : lp_st_find(m->st, name) != NULL;
}

static int check_finite(const float *w, size_t n, const char *file, const char *name) {
    long bad = lp_first_nonfinite(w, n);
    if (bad >= 0)
        return lp_error(LP_EFORMAT, "%s: tensor '%s' holds %g at index %ld; weights must be finite (a corrupt or "
                        "overflowed checkpoint?)", file, name, (double)w[bad], bad);
    return LP_OK;
}

/* Tensor name of a safetensors checkpoint as float32: in place when F32 and aligned. */
static int st_tensor(lp_model *m, const char *name, int ndim, const int *shape, const float **out, size_t *n_out) {
    const lp_st_tensor *t = lp_st_find(m->st, name);
    if (!t) return lp_error(LP_EFORMAT, "%s: tensor '%s' is missing from the checkpoint", m->weights, name);
    const char *file = lp_st_path(m->st, t);
    int shape_ok = t->ndim == ndim;
    for (int i = 0; shape_ok && i < ndim; i++) {
        assert(shape[i] >= 1); /* sizes come from lp_cfg_*: never "any" */
        if (t->shape[i] != shape[i]) shape_ok = 0;
    }
    if (!shape_ok) {
        char want[128] = "", got[128] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? ", " : "", shape[i]);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        return lp_error(LP_EFORMAT, "%s: tensor '%s' has shape [%s] but config.json implies [%s]", file, name, got, want);
    }
    if (t->dtype != LP_DT_F32 && t->dtype != LP_DT_F16 && t->dtype != LP_DT_BF16)
        return lp_error(LP_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; loupe reads F32, F16 and BF16", file, name,
                        t->dtype_name);
    if (m->dtype[0] == '\0') snprintf(m->dtype, sizeof m->dtype, "%s", lp_dtype_name(t->dtype));
    size_t n = t->nbytes / lp_dtype_size(t->dtype);
    const float *w = t->data; /* zero-copy from the mapping when F32 and aligned */
    int rc;
    if (t->dtype != LP_DT_F32 || ((uintptr_t)t->data % _Alignof(float)) != 0) {
        float *buf = malloc(n ? n * sizeof(float) : 1);
        if (!buf) return lp_error(LP_ENOMEM, "%s: out of memory converting '%s'", file, name);
        if ((rc = lp_convert_to_f32(buf, t->data, t->dtype, n))) {
            free(buf);
            return rc;
        }
        if ((rc = lp_model_own(m, buf))) return rc;
        w = buf;
    }
    *out = w;
    *n_out = n;
    return check_finite(w, n, file, name);
}

int lp_model_tensor(lp_model *m, const char *name, int ndim, const int *shape, const float **out) {
    const float *w;
    size_t n;
    int rc = m->gguf ? lp_gguf_model_tensor(m, name, ndim, shape, &w, &n) : st_tensor(m, name, ndim, shape, &w, &n);
    if (rc || (m->gguf && (rc = check_finite(w, n, lp_gguf_path(m->gguf), name)))) return rc;
    *out = w;
    return LP_OK;
}

int lp_model_linear(lp_model *m, const char *name, int in, int out, bool bias, lp_linear *lin) {
    char full[256];
    int wshape[2] = {out, in}, bshape[1] = {out};
    int rc;
    snprintf(full, sizeof full, "%s.weight", name);
    *lin = lp_linear_of(NULL, NULL, in, out, in, true);
    if ((rc = lp_model_tensor(m, full, 2, wshape, &lin->w))) return rc;
    snprintf(full, sizeof full, "%s.bias", name);
    if (bias && (rc = lp_model_tensor(m, full, 1, bshape, &lin->b))) return rc;
    return LP_OK;
}

int lp_model_vector(lp_model *m, const char *name, int n, const float **out) {
    int shape[1] = {n};
    return lp_model_tensor(m, name, 1, shape, out);
}

/* Finds the weights file of a Hugging Face directory. */
static int find_weights(const char *dir, char *buf, size_t cap) {
    static const char *const names[] = {"model.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (lp_path_join(buf, cap, dir, names[i])) return LP_ERANGE;
        if (lp_file_exists(buf)) return LP_OK;
    }
    char bin[4096];
    if (lp_path_join(bin, sizeof bin, dir, "pytorch_model.bin") == LP_OK && lp_file_exists(bin))
        return lp_error(LP_EUNSUPPORTED,
                        "%s: only pytorch_model.bin found; loupe reads safetensors (convert it, see models/README.md)",
                        dir);
    return lp_error(LP_EIO, "%s: no model.safetensors or model.safetensors.index.json in this directory", dir);
}

static int load_hf(lp_model *m, const char *dir) {
    char config_path[4096], *weights = m->weights;
    int rc = lp_path_join(config_path, sizeof config_path, dir, "config.json");
    if (rc) return rc;
    if (!lp_file_exists(config_path))
        return lp_error(LP_EIO, "%s: no config.json; give a Hugging Face model directory, a .gguf or a llama2.c .bin", dir);
    if ((rc = find_weights(dir, weights, sizeof m->weights))) return rc;

    json_t *config;
    if ((rc = lp_json_load_file(config_path, LP_JSON_MAX_CONFIG, 0, &config))) return rc;
    if (!json_is_object(config)) {
        json_decref(config);
        return lp_error(LP_EFORMAT, "%s: not a JSON object", config_path);
    }
    const char *arch = json_string_value(json_array_get(json_object_get(config, "architectures"), 0));
    const char *model_type = json_string_value(json_object_get(config, "model_type"));
    arch_loader_fn load = NULL;
    for (size_t i = 0; i < sizeof ARCHES / sizeof *ARCHES && !load; i++) {
        if (arch ? strcmp(arch, ARCHES[i].name) == 0
                 : (model_type && ARCHES[i].model_type && strcmp(model_type, ARCHES[i].model_type) == 0)) {
            load = ARCHES[i].load;
            snprintf(m->cfg.arch, sizeof m->cfg.arch, "%s", ARCHES[i].name);
        }
    }
    if (!load) {
        rc = lp_error(LP_EUNSUPPORTED,
                      "%s: architecture '%s' is not supported; loupe reads GPT2LMHeadModel, LlamaForCausalLM, "
                      "MistralForCausalLM, Qwen2ForCausalLM, GPTNeoXForCausalLM, Gemma2ForCausalLM, Bert, Roberta and DistilBert as Model, ForMaskedLM "
                      "and ForSequenceClassification, and T5/MT5 as ForConditionalGeneration and EncoderModel",
                      config_path, arch ? arch : model_type ? model_type : "(none given)");
        json_decref(config);
        return rc;
    }
    rc = lp_st_open(&m->st, weights);
    if (rc == LP_OK) rc = load(m, config, config_path);
    json_decref(config);
    return rc;
}

/* Sanity of a loaded config: everything the forward pass assumes. */
static int check_config(const lp_config *c, const char *path) {
    if (c->n_layer < 1 || c->n_head < 1 || c->d_model < 1 || c->d_head < 1 || c->d_mlp < 1 || c->vocab < 1 ||
        c->n_ctx < 1 || c->n_kv_head < 1)
        return lp_error(LP_EFORMAT, "%s: sizes must be positive (layers %d, heads %d, kv heads %d, d_model %d, "
                        "d_head %d, d_mlp %d, vocab %d, context %d)", path, c->n_layer, c->n_head, c->n_kv_head,
                        c->d_model, c->d_head, c->d_mlp, c->vocab, c->n_ctx);
    if (c->n_head % c->n_kv_head != 0)
        return lp_error(LP_EFORMAT, "%s: %d attention heads do not divide into %d key/value heads", path, c->n_head,
                        c->n_kv_head);
    if (lp_pos_rotary(c) && c->d_head % 2 != 0)
        return lp_error(LP_EFORMAT, "%s: rotary embeddings need an even head size, not %d", path, c->d_head);
    if (c->rope_dims < 0 || c->rope_dims > c->d_head || c->rope_dims % 2 != 0)
        return lp_error(LP_EFORMAT, "%s: the rotary width %d must be even and at most the head size %d", path,
                        c->rope_dims, c->d_head);
    if (c->n_layer > LP_MAX_LAYERS || c->n_head > LP_MAX_HEADS || c->n_ctx > LP_MAX_CTX || c->vocab > LP_MAX_VOCAB ||
        c->d_model > LP_MAX_D_MODEL || c->d_head > LP_MAX_D_HEAD || c->d_mlp > LP_MAX_D_MLP)
        return lp_error(LP_EFORMAT, "%s: implausible sizes in the model's configuration", path);
    return LP_OK;
}

static size_t linear_params(const lp_linear *l) {
    return l->w ? (size_t)l->in * l->out + (l->b ? (size_t)l->out : 0) : 0;
}

static size_t count_params(const lp_model *m) {
    const lp_config *c = &m->cfg;
    size_t d = (size_t)c->d_model, q = (size_t)c->n_head * c->d_head, kv = (size_t)c->n_kv_head * c->d_head;
    size_t norm = c->norm == LP_NORM_LAYERNORM ? 2 * d : d;
    size_t attn = d * (q + 2 * kv) + q * d + (c->qkv_bias ? q + 2 * kv : 0) +
                  (c->norm == LP_NORM_LAYERNORM && c->qkv_bias ? d : 0); /* the output's bias */
    size_t mlp = (lp_mlp_gated(c) ? 3 : 2) * d * (size_t)c->d_mlp + (c->mlp_bias ? (size_t)c->d_mlp + d : 0);
    size_t n = (size_t)c->vocab * d + (!lp_pos_rotary(c) && c->pos != LP_POS_RELATIVE ? (size_t)(c->n_ctx + c->pos_offset) * d : 0);
    n += (size_t)c->n_layer * ((c->sandwich_norm ? 4 : 2) * norm + attn + mlp) + (m->lnf_w ? norm : 0);
    n += (size_t)c->type_vocab * d + (c->emb_norm ? 2 * d : 0);
    n += linear_params(&m->head.dense) + (m->head.ln_w ? 2 * d : 0);
    if (c->pos == LP_POS_RELATIVE) n += (size_t)c->rel_buckets * c->n_head;
    if (c->cross_attn) n += (size_t)c->n_layer * (d * q + 2 * d * q + q * d + norm);
    if (m->encoder) n += count_params(m->encoder) - (size_t)c->vocab * d; /* the embedding is shared */
    if (c->head == LP_HEAD_LM || c->head == LP_HEAD_MLM) {
        if (!c->tied_unembed) n += (size_t)c->vocab * d;
        if (m->unembed.b) n += (size_t)c->vocab;
    } else {
        n += linear_params(&m->unembed);
    }
    return n;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int lp_model_load(lp_model **out, const char *path, const lp_load_options *opts) {
    *out = NULL;
    lp_model *m = calloc(1, sizeof *m);
    if (!m) return lp_error(LP_ENOMEM, "out of memory");
    m->path = strdup(path);
    if (!m->path) {
        free(m);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    char dir[4096];
    int rc;
    bool is_hf = lp_dir_exists(path);
    if (is_hf) {
        snprintf(dir, sizeof dir, "%s", path);
    } else if (ends_with(path, ".safetensors") || ends_with(path, ".json")) {
        is_hf = true;
        lp_path_dirname(dir, sizeof dir, path);
    }
    if (!is_hf && !lp_file_exists(path)) {
        struct stat st;
        rc = stat(path, &st) != 0
                 ? lp_error(LP_EIO, "%s: %s", path, strerror(errno))
                 : lp_error(LP_EIO, "%s: not a regular file; give a Hugging Face model directory, a .gguf or a llama2.c .bin",
                            path);
        goto fail;
    }
    bool is_gguf = !is_hf && (ends_with(path, ".gguf") || lp_file_starts_with(path, "GGUF"));
    rc = is_hf ? load_hf(m, dir) : is_gguf ? lp_load_gguf(m, path) : lp_load_llama2c(m, path);
    if (rc) goto fail;
    if ((rc = check_config(&m->cfg, path)) || (m->encoder && (rc = check_config(&m->encoder->cfg, path)))) goto fail;
    m->n_params = count_params(m);

    const char *tok_path = opts ? opts->tokenizer_path : NULL;
    if (tok_path) {
        rc = lp_dir_exists(tok_path) ? lp_tokenizer_load_dir(&m->tok, tok_path)
             : ends_with(tok_path, ".json") ? lp_tokenizer_load_json(&m->tok, tok_path)
             /* a SentencePiece model; T5's 100 sentinels when the model is a T5 */
             : ends_with(tok_path, ".model") ? lp_tokenizer_load_spiece(&m->tok, tok_path, m->encoder ? 100 : 0)
                                             : lp_tokenizer_load_llama2c(&m->tok, tok_path, m->cfg.vocab);
        if (rc) goto fail;
    } else if (is_hf) {
        if (lp_tokenizer_dir_has(dir) && (rc = lp_tokenizer_load_dir(&m->tok, dir))) goto fail;
    } else if (is_gguf) {
        if ((rc = lp_tokenizer_load_gguf(&m->tok, m->gguf))) goto fail;
    } else {
        /* llama2.c's own names: tokenizer.bin, or tok<vocab>.bin for its custom vocabularies. */
        char tb[4096], name[64];
        lp_path_dirname(dir, sizeof dir, path);
        snprintf(name, sizeof name, "tok%d.bin", m->cfg.vocab);
        const char *names[] = {"tokenizer.bin", name};
        for (int i = 0; i < 2 && !m->tok; i++)
            if (lp_path_join(tb, sizeof tb, dir, names[i]) == LP_OK && lp_file_exists(tb) &&
                (rc = lp_tokenizer_load_llama2c(&m->tok, tb, m->cfg.vocab)))
                goto fail;
    }
    /* A tokenizer may know fewer ids than the embedding has rows (padded vocabularies), but
     * never more: those ids would index past the embedding. */
    if (m->tok && lp_tokenizer_vocab_size(m->tok) > m->cfg.vocab) {
        rc = lp_error(LP_EFORMAT, "%s: tokenizer has %d tokens but the model's vocabulary is %d; pass the matching "
                      "tokenizer with --tokenizer", path, lp_tokenizer_vocab_size(m->tok), m->cfg.vocab);
        goto fail;
    }
    lp_model_transpose_start(m);
    *out = m;
    return LP_OK;
fail:
    lp_model_free(m);
    return rc;
}

void lp_model_free(lp_model *m) {
    if (!m) return;
    lp_model_transpose_stop(m);
    lp_model_free(m->encoder);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    for (int i = 0; m->labels && i < m->cfg.n_labels; i++) free(m->labels[i]);
    free(m->labels);
    lp_st_free(m->st);
    lp_file_unmap(&m->file);
    lp_gguf_free(m->gguf);
    for (int i = 0; i < m->n_gguf_parts; i++) lp_gguf_free(m->gguf_parts[i]);
    free(m->gguf_parts);
    lp_tokenizer_free(m->tok);
    free(m->path);
    free(m);
}

const lp_config *lp_model_config(const lp_model *m) { return &m->cfg; }
const lp_tokenizer *lp_model_tokenizer(const lp_model *m) { return m->tok; }
const char *lp_model_path(const lp_model *m) { return m->path; }
const char *lp_model_dtype(const lp_model *m) { return m->dtype; }

int lp_model_dequantised_from(const lp_model *m, char *buf, size_t cap) {
    if (cap) buf[0] = '\0';
    for (int i = 0; i < m->n_gguf_types; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ", " : "", lp_ggml_type_name(m->gguf_types[i].type));
    return m->n_gguf_types;
}
size_t lp_model_param_count(const lp_model *m) { return m->n_params; }
const char *lp_model_label(const lp_model *m, int id) {
    return m->labels && id >= 0 && id < m->cfg.n_labels ? m->labels[id] : NULL;
}
int lp_model_n_labels(const lp_model *m) { return m->labels ? m->cfg.n_labels : 0; }
bool lp_model_is_encoder(const lp_model *m) { return !m->cfg.causal; }
const lp_model *lp_model_encoder(const lp_model *m) { return m->encoder; }
const float *lp_model_rel_bias(const lp_model *m) { return m->rel_bias; }
float lp_model_emb_scale(const lp_model *m) { return m->cfg.emb_scale ? m->cfg.emb_scale : 1.0f; }
int lp_model_layer_window(const lp_model *m, int layer) {
    return layer >= 0 && layer < m->cfg.n_layer ? m->layers[layer].window : 0;
}

int lp_model_need_decoder(const lp_model *m, const char *what) {
    if (m->cfg.cross_attn)
        return lp_error(LP_EUNSUPPORTED, "%s: not yet available for encoder-decoder models (%s)", what, m->cfg.arch);
    if (m->cfg.causal) return LP_OK;
    return lp_error(LP_EUNSUPPORTED, "%s: not yet available for encoder models (%s); it assumes a causal next-token "
                    "model", what, m->cfg.arch);
}

const char *lp_head_kind_name(lp_head_kind k) {
    static const char *const names[] = {"lm", "masked-lm", "classifier", "none"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

size_t lp_model_weight_bytes(const lp_model *m) { return m->n_params * sizeof(float); }

/* FNV-1a over bytes: the fingerprint needs to tell checkpoints apart, not resist attack. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Samples up to 3 x 1 KB (start, middle, end) of a tensor of n floats. */
static uint64_t hash_tensor(uint64_t h, const float *w, size_t n) {
    if (!w) return fnv1a(h, "-", 1);
    size_t k = n < 256 ? n : 256;
    h = fnv1a(h, w, k * sizeof *w);
    if (n > 256) {
        h = fnv1a(h, w + n / 2 - 128, 256 * sizeof *w);
        h = fnv1a(h, w + n - 256, 256 * sizeof *w);
    }
    return h;
}

static uint64_t hash_linear(uint64_t h, const lp_linear *l) {
    /* rows of ld floats: sample the first and last rows the matrix spans */
    size_t rows = l->w ? (size_t)(l->trans ? l->out : l->in) : 0;
    h = hash_tensor(h, l->w, rows ? (size_t)l->ld * (rows - 1) + (l->trans ? l->in : l->out) : 0);
    return hash_tensor(h, l->b, l->b ? (size_t)l->out : 0);
}

void lp_model_fingerprint(const lp_model *m, char out[17]) {
    const lp_config *c = &m->cfg;
    uint64_t h = 0xcbf29ce484222325ull;
    int dims[] = {c->n_layer, c->n_head, c->n_kv_head, c->d_model, c->d_head, c->d_mlp, c->vocab, c->n_ctx,
                  (int)c->norm, (int)c->pos, (int)c->mlp};
    h = fnv1a(h, c->arch, strlen(c->arch));
    h = fnv1a(h, dims, sizeof dims);
    h = hash_tensor(h, m->tok_emb, (size_t)c->vocab * c->d_model);
    for (int l = 0; l < c->n_layer; l++) {
        const lp_layer *y = &m->layers[l];
        h = hash_tensor(h, y->ln1_w, (size_t)c->d_model);
        const lp_linear *lin[] = {&y->q, &y->k, &y->v, &y->o, &y->up, &y->gate, &y->down};
        for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) h = hash_linear(h, lin[i]);
    }
    h = hash_linear(h, &m->unembed);
    if (c->parallel_block || c->rope_dims) { /* GPT-NeoX only: other decoders keep their fingerprints */
        int neox[] = {c->parallel_block, c->rope_dims};
        h = fnv1a(h, neox, sizeof neox);
    }
    if (c->sandwich_norm) { /* Gemma 2 only */
        float g[] = {c->emb_scale, c->attn_scale, c->attn_softcap, c->final_softcap};
        h = fnv1a(h, g, sizeof g);
        for (int l = 0; l < c->n_layer; l++) {
            h = hash_tensor(h, m->layers[l].post1_w, (size_t)c->d_model);
            h = hash_tensor(h, m->layers[l].post2_w, (size_t)c->d_model);
            h = fnv1a(h, &m->layers[l].window, sizeof m->layers[l].window);
        }
    }
    if (!c->causal) { /* encoders only, so that decoders keep the fingerprints stores already hold */
        int more[] = {(int)c->head, c->n_labels, c->type_vocab, c->pos_offset};
        h = fnv1a(h, more, sizeof more);
        h = hash_linear(h, &m->head.dense);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
