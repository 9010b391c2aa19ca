/* GGUF models: the architecture and hyperparameters from the file's metadata, handed to
 * the Hugging Face loaders (gpt2.c, llama.c, gemma2.c, gpt_neox.c, bert.c) as the
 * config.json they would have read; the tensors those loaders ask for by their Hugging Face names are found under
 * llama.cpp's names, dequantised to float32, and brought back to the Hugging Face layout:
 * GPT-2's Conv1D weights transposed back, Llama's q/k rows un-permuted (llama.cpp's
 * converter reorders each head's rows for its interleaved RoPE; loupe computes rotate-half
 * RoPE on the original order), GPT-NeoX's fused q|k|v rows put back in per-head order. The
 * model is then the Hugging Face one, weight for weight.
 * Gemma 2 keeps what llama.cpp's converter did and what llama.cpp computes where the file
 * is silent: its RMSNorm weights hold the 1 already (gemma2.c does not add it again), the
 * attention scale is derived as llama.cpp derives it (query_pre_attn_scalar is not
 * stored), the even layers slide, and the embeddings are scaled by sqrtf(d_model). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/gguf.h"
#include "arch/model_impl.h"

typedef enum { AS_IS, TRANSPOSE, UNPERMUTE_Q, UNPERMUTE_K, NEOX_QKV } layout_fix;

typedef struct {
    const char *hf, *gguf;
    layout_fix fix;
} name_map;

static const name_map GPT2_GLOBAL[] = {
    {"wte.weight", "token_embd.weight", AS_IS},     {"wpe.weight", "position_embd.weight", AS_IS},
    {"ln_f.weight", "output_norm.weight", AS_IS},   {"ln_f.bias", "output_norm.bias", AS_IS},
    {"lm_head.weight", "output.weight", AS_IS},
};
/* llama.cpp's converter transposes GPT-2's Conv1D weights into (out, in) rows. */
static const name_map GPT2_LAYER[] = {
    {"ln_1.weight", "attn_norm.weight", AS_IS},        {"ln_1.bias", "attn_norm.bias", AS_IS},
    {"attn.c_attn.weight", "attn_qkv.weight", TRANSPOSE}, {"attn.c_attn.bias", "attn_qkv.bias", AS_IS},
    {"attn.c_proj.weight", "attn_output.weight", TRANSPOSE}, {"attn.c_proj.bias", "attn_output.bias", AS_IS},
    {"ln_2.weight", "ffn_norm.weight", AS_IS},         {"ln_2.bias", "ffn_norm.bias", AS_IS},
    {"mlp.c_fc.weight", "ffn_up.weight", TRANSPOSE},   {"mlp.c_fc.bias", "ffn_up.bias", AS_IS},
    {"mlp.c_proj.weight", "ffn_down.weight", TRANSPOSE}, {"mlp.c_proj.bias", "ffn_down.bias", AS_IS},
};
static const name_map LLAMA_GLOBAL[] = {
    {"model.embed_tokens.weight", "token_embd.weight", AS_IS},
    {"model.norm.weight", "output_norm.weight", AS_IS},
    {"lm_head.weight", "output.weight", AS_IS},
};
static const name_map LLAMA_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", AS_IS},
    {"self_attn.q_proj.weight", "attn_q.weight", UNPERMUTE_Q}, {"self_attn.q_proj.bias", "attn_q.bias", UNPERMUTE_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", UNPERMUTE_K}, {"self_attn.k_proj.bias", "attn_k.bias", UNPERMUTE_K},
    {"self_attn.v_proj.weight", "attn_v.weight", AS_IS},       {"self_attn.v_proj.bias", "attn_v.bias", AS_IS},
    {"self_attn.o_proj.weight", "attn_output.weight", AS_IS},  {"self_attn.o_proj.bias", "attn_output.bias", AS_IS},
    {"post_attention_layernorm.weight", "ffn_norm.weight", AS_IS},
    {"mlp.gate_proj.weight", "ffn_gate.weight", AS_IS},        {"mlp.gate_proj.bias", "ffn_gate.bias", AS_IS},
    {"mlp.up_proj.weight", "ffn_up.weight", AS_IS},            {"mlp.up_proj.bias", "ffn_up.bias", AS_IS},
    {"mlp.down_proj.weight", "ffn_down.weight", AS_IS},        {"mlp.down_proj.bias", "ffn_down.bias", AS_IS},
};
/* llama.cpp's converter drops Gemma 2's lm_head and llama.cpp always unembeds with
 * token_embd: no output.weight here, even when a file has one. */
static const name_map GEMMA2_GLOBAL[] = {
    {"model.embed_tokens.weight", "token_embd.weight", AS_IS},
    {"model.norm.weight", "output_norm.weight", AS_IS},
};
static const name_map GEMMA2_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", AS_IS},
    {"self_attn.q_proj.weight", "attn_q.weight", AS_IS},       {"self_attn.k_proj.weight", "attn_k.weight", AS_IS},
    {"self_attn.v_proj.weight", "attn_v.weight", AS_IS},       {"self_attn.o_proj.weight", "attn_output.weight", AS_IS},
    {"post_attention_layernorm.weight", "post_attention_norm.weight", AS_IS},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight", AS_IS},
    {"mlp.gate_proj.weight", "ffn_gate.weight", AS_IS},        {"mlp.up_proj.weight", "ffn_up.weight", AS_IS},
    {"mlp.down_proj.weight", "ffn_down.weight", AS_IS},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight", AS_IS},
};

#define N_OF(a) (sizeof a / sizeof *a)
#define MAP(a) a, N_OF(a)

/* GPT-NeoX as convert_hf_to_gguf.py's GPTNeoXModel writes it: modify_tensors reorders
 * query_key_value's rows (and bias) from Hugging Face's per-head [q | k | v] into all q rows,
 * then all k, then all v (NEOX_QKV puts them back); the other tensors are renamed only
 * (gguf-py's tensor_mapping.py: embed_in -> token_embd, embed_out -> output). */
static const name_map NEOX_GLOBAL[] = {
    {"gpt_neox.embed_in.weight", "token_embd.weight", AS_IS},
    {"gpt_neox.final_layer_norm.weight", "output_norm.weight", AS_IS},
    {"gpt_neox.final_layer_norm.bias", "output_norm.bias", AS_IS},
    {"embed_out.weight", "output.weight", AS_IS},
};
static const name_map NEOX_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", AS_IS},     {"input_layernorm.bias", "attn_norm.bias", AS_IS},
    {"attention.query_key_value.weight", "attn_qkv.weight", NEOX_QKV},
    {"attention.query_key_value.bias", "attn_qkv.bias", NEOX_QKV},
    {"attention.dense.weight", "attn_output.weight", AS_IS},   {"attention.dense.bias", "attn_output.bias", AS_IS},
    {"post_attention_layernorm.weight", "ffn_norm.weight", AS_IS},
    {"post_attention_layernorm.bias", "ffn_norm.bias", AS_IS},
    {"mlp.dense_h_to_4h.weight", "ffn_up.weight", AS_IS},      {"mlp.dense_h_to_4h.bias", "ffn_up.bias", AS_IS},
    {"mlp.dense_4h_to_h.weight", "ffn_down.weight", AS_IS},    {"mlp.dense_4h_to_h.bias", "ffn_down.bias", AS_IS},
};

/* BERT as convert_hf_to_gguf.py's BertModel writes it (filter_tensors): "bert." dropped, the
 * pooler and the masked-LM and next-sentence heads left out, so a file is a BertModel
 * without its pooler, whatever the original's head; the rest renamed by tensor_mapping.py. */
static const name_map BERT_GLOBAL[] = {
    {"embeddings.word_embeddings.weight", "token_embd.weight", AS_IS},
    {"embeddings.position_embeddings.weight", "position_embd.weight", AS_IS},
    {"embeddings.token_type_embeddings.weight", "token_types.weight", AS_IS},
    {"embeddings.LayerNorm.weight", "token_embd_norm.weight", AS_IS},
    {"embeddings.LayerNorm.bias", "token_embd_norm.bias", AS_IS},
};
static const name_map BERT_LAYER[] = {
    {"attention.self.query.weight", "attn_q.weight", AS_IS},   {"attention.self.query.bias", "attn_q.bias", AS_IS},
    {"attention.self.key.weight", "attn_k.weight", AS_IS},     {"attention.self.key.bias", "attn_k.bias", AS_IS},
    {"attention.self.value.weight", "attn_v.weight", AS_IS},   {"attention.self.value.bias", "attn_v.bias", AS_IS},
    {"attention.output.dense.weight", "attn_output.weight", AS_IS},
    {"attention.output.dense.bias", "attn_output.bias", AS_IS},
    {"attention.output.LayerNorm.weight", "attn_output_norm.weight", AS_IS},
    {"attention.output.LayerNorm.bias", "attn_output_norm.bias", AS_IS},
    {"intermediate.dense.weight", "ffn_up.weight", AS_IS},     {"intermediate.dense.bias", "ffn_up.bias", AS_IS},
    {"output.dense.weight", "ffn_down.weight", AS_IS},         {"output.dense.bias", "ffn_down.bias", AS_IS},
    {"output.LayerNorm.weight", "layer_output_norm.weight", AS_IS},
    {"output.LayerNorm.bias", "layer_output_norm.bias", AS_IS},
};

/* Each architecture: its loader, and where its Hugging Face tensors are in the file. */
static const struct {
    const char *gguf_arch, *hf_arch;
    arch_loader_fn load;
    const name_map *global;
    size_t n_global;
    const name_map *layer;
    size_t n_layer;
    const char *layer_prefix; /* of the Hugging Face names */
    bool unpermute;           /* q/k rows in llama.cpp's interleaved-RoPE order */
    bool norm_shifted;        /* RMSNorm weights hold Gemma's 1 (the converter added it) */
} GGUF_ARCHES[] = {
    {"gpt2", "GPT2LMHeadModel", lp_arch_gpt2_load, MAP(GPT2_GLOBAL), MAP(GPT2_LAYER), "h.", false, false},
    {"llama", "LlamaForCausalLM", lp_arch_llama_load, MAP(LLAMA_GLOBAL), MAP(LLAMA_LAYER), "model.layers.", true, false},
    {"qwen2", "Qwen2ForCausalLM", lp_arch_llama_load, MAP(LLAMA_GLOBAL), MAP(LLAMA_LAYER), "model.layers.", false, false},
    {"gemma2", "Gemma2ForCausalLM", lp_arch_gemma2_load, MAP(GEMMA2_GLOBAL), MAP(GEMMA2_LAYER), "model.layers.", false,
     true},
    {"gptneox", "GPTNeoXForCausalLM", lp_arch_gpt_neox_load, MAP(NEOX_GLOBAL), MAP(NEOX_LAYER), "gpt_neox.layers.",
     false, false},
    {"bert", "BertModel", lp_arch_bert_load, MAP(BERT_GLOBAL), MAP(BERT_LAYER), "encoder.layer.", false, false},
};

/* The GGUF name of Hugging Face tensor hf and how its layout differs; false if unmapped. */
static bool map_name(const lp_model *m, const char *hf, char *out, size_t cap, layout_fix *fix) {
    size_t a = 0;
    while (a < N_OF(GGUF_ARCHES) && strcmp(m->cfg.arch, GGUF_ARCHES[a].hf_arch) != 0) a++;
    if (a == N_OF(GGUF_ARCHES)) return false;
    const name_map *global = GGUF_ARCHES[a].global, *layer = GGUF_ARCHES[a].layer;
    size_t n_global = GGUF_ARCHES[a].n_global, n_layer = GGUF_ARCHES[a].n_layer;
    const char *prefix = GGUF_ARCHES[a].layer_prefix;
    for (size_t i = 0; i < n_global; i++)
        if (strcmp(hf, global[i].hf) == 0) {
            snprintf(out, cap, "%s", global[i].gguf);
            *fix = global[i].fix;
            return true;
        }
    size_t k = strlen(prefix);
    if (strncmp(hf, prefix, k) != 0) return false;
    char *end;
    long l = strtol(hf + k, &end, 10);
    if (end == hf + k || *end != '.' || l < 0 || l > INT_MAX) return false;
    for (size_t i = 0; i < n_layer; i++)
        if (strcmp(end + 1, layer[i].hf) == 0) {
            snprintf(out, cap, "blk.%ld.%s", l, layer[i].gguf);
            *fix = layer[i].fix;
            /* only Llama's converter permutes; Qwen2's keeps the rotate-half order */
            if ((*fix == UNPERMUTE_Q || *fix == UNPERMUTE_K) && !m->gguf_unpermute) *fix = AS_IS;
            return true;
        }
    return false;
}

/* A tensor of the model's file, or of any other part of a split one. */
static const lp_gguf_tensor *find_tensor(const lp_model *m, const char *name) {
    const lp_gguf_tensor *t = lp_gguf_find_tensor(m->gguf, name);
    for (int i = 0; !t && i < m->n_gguf_parts; i++) t = lp_gguf_find_tensor(m->gguf_parts[i], name);
    return t;
}

bool lp_gguf_model_has(const lp_model *m, const char *hf_name) {
    char name[128];
    layout_fix fix;
    return map_name(m, hf_name, name, sizeof name, &fix) && find_tensor(m, name);
}

static void shape_text(char *buf, size_t cap, int n, const uint64_t *v) {
    buf[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%llu", i ? ", " : "", (unsigned long long)v[i]);
}

/* Rows of a (rows, cols) matrix back from llama.cpp's order: within each of `heads` heads
 * of d rows, row 2i + j (j = 0, 1) of the file is row j d/2 + i of the original. */
static void unpermute_rows(float *dst, const float *src, size_t rows, size_t cols, size_t heads) {
    size_t d = rows / heads, half = d / 2;
    for (size_t h = 0; h < heads; h++)
        for (size_t i = 0; i < half; i++)
            for (size_t j = 0; j < 2; j++)
                memcpy(dst + (h * d + j * half + i) * cols, src + (h * d + 2 * i + j) * cols, cols * sizeof *dst);
}

/* GPT-NeoX's fused rows back from the converter's order: file row part d + h dh + i (part
 * 0, 1, 2 for q, k, v) is row (3 h + part) dh + i of query_key_value (GPTNeoXModel.
 * modify_tensors: reshape (n_head, 3, dh, d), then cat of [:, 0], [:, 1], [:, 2]). */
static void neox_qkv_rows(float *dst, const float *src, size_t rows, size_t cols, size_t heads) {
    size_t d = rows / 3, dh = d / heads;
    for (size_t part = 0; part < 3; part++)
        for (size_t h = 0; h < heads; h++)
            memcpy(dst + (3 * h + part) * dh * cols, src + (part * d + h * dh) * cols, dh * cols * sizeof *dst);
}

/* dst (cols, rows) = src (rows, cols) transposed, in 32 x 32 tiles so that both sides stay
 * in cache (element by element, the strided writes made GPT-2 small's load 2 s slower). */
static void transpose(float *dst, const float *src, size_t rows, size_t cols) {
    for (size_t r0 = 0; r0 < rows; r0 += 32)
        for (size_t c0 = 0; c0 < cols; c0 += 32)
            for (size_t r = r0; r < rows && r < r0 + 32; r++)
                for (size_t c = c0; c < cols && c < c0 + 32; c++) dst[c * rows + r] = src[r * cols + c];
}

int lp_gguf_model_tensor(lp_model *m, const char *hf_name, int ndim, const int *shape, const float **out,
                         size_t *n_out) {
    char name[128];
    layout_fix fix;
    const char *file = lp_gguf_path(m->gguf);
    const lp_gguf_tensor *t = map_name(m, hf_name, name, sizeof name, &fix) ? find_tensor(m, name) : NULL;
    if (!t)
        return lp_error(LP_EFORMAT, "%s: tensor '%s' (%s) is missing from the GGUF file", file,
                        map_name(m, hf_name, name, sizeof name, &fix) ? name : "no GGUF name", hf_name);
    /* ne lists the innermost dimension first: the reverse of the row-major shape, except for
     * the transposed Conv1D weights, whose file shape is the Hugging Face one reversed twice. */
    uint64_t want[4];
    for (int i = 0; i < ndim; i++) want[i] = (uint64_t)shape[fix == TRANSPOSE ? i : ndim - 1 - i];
    bool ok = t->n_dims == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->ne[i] == want[i];
    if (!ok) {
        char got[96], exp[96];
        shape_text(got, sizeof got, t->n_dims, t->ne);
        shape_text(exp, sizeof exp, ndim, want);
        return lp_error(LP_EFORMAT, "%s: tensor '%s' has ne [%s] but the metadata implies [%s]", file, name, got, exp);
    }
    if (!lp_ggml_type_readable(t->type))
        return lp_error(LP_EUNSUPPORTED, "%s: tensor '%s' is %s; loupe dequantises F32, F16, BF16, Q8_0, Q4_0, Q4_K, "
                        "Q5_K and Q6_K (requantise the model to one of them with llama-quantize)", file, name,
                        lp_ggml_type_name(t->type));
    size_t n = (size_t)t->n_elem;
    float *buf = malloc(n * sizeof *buf), *fixed = NULL;
    if (!buf) return lp_error(LP_ENOMEM, "%s: out of memory dequantising '%s'", file, name);
    int rc = lp_ggml_dequantize(t->type, t->data, buf, n);
    size_t rows = ndim == 2 ? (size_t)t->ne[1] : n, cols = ndim == 2 ? (size_t)t->ne[0] : 1;
    size_t heads = fix == UNPERMUTE_K ? (size_t)m->cfg.n_kv_head : (size_t)m->cfg.n_head;
    if (rc == LP_OK && (fix == UNPERMUTE_Q || fix == UNPERMUTE_K) && (heads == 0 || rows % (2 * heads)))
        rc = lp_error(LP_EFORMAT, "%s: tensor '%s' has %zu rows, not an even number per each of %zu heads", file, name,
                      rows, heads);
    if (rc == LP_OK && fix == NEOX_QKV && (heads == 0 || rows % (3 * heads)))
        rc = lp_error(LP_EFORMAT, "%s: tensor '%s' has %zu rows, not 3 x %zu heads of equal size", file, name, rows,
                      heads);
    if (rc == LP_OK && fix != AS_IS && !(fixed = malloc(n * sizeof *fixed)))
        rc = lp_error(LP_ENOMEM, "%s: out of memory reordering '%s'", file, name);
    if (rc == LP_OK && fix == TRANSPOSE) {
        transpose(fixed, buf, rows, cols);
    } else if (rc == LP_OK && fix == NEOX_QKV) {
        neox_qkv_rows(fixed, buf, rows, cols, heads);
    } else if (rc == LP_OK && fix != AS_IS) {
        unpermute_rows(fixed, buf, rows, cols, heads);
    }
    if (fixed) {
        free(buf);
        buf = fixed;
    }
    if (rc) {
        free(buf);
        return rc;
    }
    if ((rc = lp_model_own(m, buf))) return rc;
    int i = 0;
    while (i < m->n_gguf_types && m->gguf_types[i].type != t->type) i++;
    if (i == m->n_gguf_types && i < (int)N_OF(m->gguf_types)) m->gguf_types[m->n_gguf_types++].type = t->type;
    if (i < (int)N_OF(m->gguf_types)) m->gguf_types[i].n_elem += n;
    *out = buf;
    *n_out = n;
    return LP_OK;
}

/* An integer hyperparameter ARCH.SUFFIX into config[hf_key] (hf_key NULL: into *out only),
 * range-checked under its GGUF name; an absent optional key leaves the Hugging Face default
 * to the loader. */
static int copy_int(const lp_gguf *g, const char *arch, const char *suffix, bool required, int lo, int hi,
                    json_t *config, const char *hf_key, int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!required && !lp_gguf_find_kv(g, key)) return LP_OK;
    uint64_t v;
    int x, rc;
    if ((rc = lp_gguf_get_uint(g, key, &v)) ||
        (rc = lp_cfg_range(v > (uint64_t)INT_MAX ? (long long)INT_MAX + 1 : (long long)v, key, lo, hi, &x,
                           lp_gguf_path(g))))
        return rc;
    if (out) *out = x;
    if (hf_key) json_object_set_new(config, hf_key, json_integer(x));
    return LP_OK;
}

static int copy_float(const lp_gguf *g, const char *arch, const char *suffix, json_t *config, const char *hf_key) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!lp_gguf_find_kv(g, key)) return LP_OK;
    double v;
    int rc = lp_gguf_get_float(g, key, &v);
    if (rc == LP_OK) json_object_set_new(config, hf_key, json_real(v));
    return rc;
}

/* Keys that would change the computation in ways loupe does not implement. */
static int refuse_unsupported(const lp_gguf *g, const char *arch, int d_head) {
    const char *file = lp_gguf_path(g);
    char key[128];
    uint64_t v;
    int rc;
    snprintf(key, sizeof key, "%s.expert_count", arch);
    if (lp_gguf_find_kv(g, key) && (rc = lp_gguf_get_uint(g, key, &v))) return rc;
    if (lp_gguf_find_kv(g, key) && v > 0)
        return lp_error(LP_EUNSUPPORTED, "%s: a mixture of experts (%s = %llu) is not supported", file, key,
                        (unsigned long long)v);
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *s;
    size_t len;
    if (lp_gguf_find_kv(g, key) && (rc = lp_gguf_get_str(g, key, &s, &len))) return rc;
    if (lp_gguf_find_kv(g, key) && !(len == 4 && !memcmp(s, "none", 4)))
        return lp_error(LP_EUNSUPPORTED, "%s: RoPE scaling (%s = %.*s) is not supported yet", file, key,
                        (int)(len < 32 ? len : 32), s);
    snprintf(key, sizeof key, "%s.rope.dimension_count", arch);
    if (d_head && lp_gguf_find_kv(g, key)) {
        if ((rc = lp_gguf_get_uint(g, key, &v))) return rc;
        if (v != (uint64_t)d_head)
            return lp_error(LP_EUNSUPPORTED, "%s: %s is %llu but heads have %d dimensions; partial rotary embeddings "
                            "are not supported", file, key, (unsigned long long)v, d_head);
    }
    snprintf(key, sizeof key, "%s.attention.value_length", arch);
    if (d_head && lp_gguf_find_kv(g, key) && (rc = lp_gguf_get_uint(g, key, &v))) return rc;
    if (d_head && lp_gguf_find_kv(g, key) && v != (uint64_t)d_head)
        return lp_error(LP_EUNSUPPORTED, "%s: %s is %llu but the key length is %d; loupe needs them equal", file, key,
                        (unsigned long long)v, d_head);
    return LP_OK;
}

/* A soft cap ARCH.SUFFIX into config[hf_key]; absent, llama.cpp's Gemma 2 default. llama.cpp
 * always caps (it divides by the cap), so a cap must be a positive number. */
static int copy_cap(const lp_gguf *g, const char *suffix, double def, json_t *config, const char *hf_key) {
    char key[128];
    snprintf(key, sizeof key, "gemma2.%s", suffix);
    double v = def;
    int rc = lp_gguf_find_kv(g, key) ? lp_gguf_get_float(g, key, &v) : LP_OK;
    if (rc) return rc;
    if (!(v > 0 && v <= 1e30))
        return lp_error(LP_EFORMAT, "%s: %s is %g; llama.cpp divides by it, so it must be above 0", lp_gguf_path(g),
                        key, v);
    json_object_set_new(config, hf_key, json_real(v));
    return LP_OK;
}

/* Gemma 2's keys, and what llama.cpp (llama_model_gemma2::load_arch_hparams) makes of a
 * file that does not say: caps 50 and 30 (Gemma2Config's), a window of 4096 on the even
 * layers (set_swa_pattern(2): layer l slides when l % 2 < 1; gemma2.c's default without
 * layer_types), head_dim d_model / n_head, and an attention scale of head_dim^-0.5 except
 * for 46-layer models (Gemma 2 27B), whose scale is (d_model / n_head)^-0.5, integer
 * division (gemma_pytorch's config); it is handed over as query_pre_attn_scalar. The
 * converter writes neither lm_head nor rope.freq_base (10000). */
static int gemma2_config(const lp_gguf *g, int d, int n_head, int *d_head, json_t *config) {
    int rc, n_layer = (int)json_integer_value(json_object_get(config, "num_hidden_layers"));
    if (*d_head == 0 && d % n_head)
        return lp_error(LP_EFORMAT, "%s: gemma2.attention.key_length is missing and %d heads do not divide "
                        "gemma2.embedding_length %d; the head size is unknown", lp_gguf_path(g), n_head, d);
    if (*d_head == 0) {
        *d_head = d / n_head;
        json_object_set_new(config, "head_dim", json_integer(*d_head));
    }
    if ((rc = copy_int(g, "gemma2", "attention.sliding_window", false, 1, LP_MAX_CTX, config, "sliding_window", NULL)) ||
        (rc = copy_cap(g, "attn_logit_softcapping", 50.0, config, "attn_logit_softcapping")) ||
        (rc = copy_cap(g, "final_logit_softcapping", 30.0, config, "final_logit_softcapping")))
        return rc;
    json_object_set_new(config, "query_pre_attn_scalar", json_integer(n_layer == 46 ? d / n_head : *d_head));
    json_object_set_new(config, "tie_word_embeddings", json_true());
    return LP_OK;
}

/* GPT-NeoX's keys as GPTNeoXModel.set_gguf_parameters writes them; llama.cpp requires
 * attention.layer_norm_epsilon and use_parallel_residual (llama_model::load_hparams), and
 * rope.dimension_count defaults to the whole head. The converter writes
 * rope.dimension_count = int(rotary_pct * head_size), the width GPTNeoXAttention rotates;
 * it is handed to gpt_neox.c as a rotary_pct whose int(head_size * pct) gives it back
 * (r / head_size itself may not: int(22 * (15 / 22.0)) is 14). Neither the rotary base
 * (freq_base when present, else 10000 as llama.cpp) nor the activation is written: GELU is
 * GPTNeoXConfig's exact "gelu" (llama.cpp computes ggml_gelu, the tanh approximation).
 * Biases on attention when blk.0.attn_qkv.bias is there (attention_bias). */
static int neox_config(const lp_model *m, int d, int n_head, json_t *config) {
    const lp_gguf *g = m->gguf;
    const char *file = lp_gguf_path(g);
    int rc;
    if (d % n_head)
        return lp_error(LP_EFORMAT, "%s: gptneox.embedding_length %d is not a multiple of gptneox.attention.head_count "
                        "%d", file, d, n_head);
    int dh = d / n_head, rot = dh;
    if ((rc = copy_int(g, "gptneox", "rope.dimension_count", false, 1, dh, config, NULL, &rot))) return rc;
    json_object_set_new(config, "rotary_pct", json_real(rot == dh ? 1.0 : nextafter((double)rot / dh, 2.0)));
    bool parallel;
    if (!lp_gguf_find_kv(g, "gptneox.use_parallel_residual"))
        return lp_error(LP_EFORMAT, "%s: gptneox.use_parallel_residual is missing (llama.cpp requires it)", file);
    if ((rc = lp_gguf_get_bool(g, "gptneox.use_parallel_residual", &parallel))) return rc;
    json_object_set_new(config, "use_parallel_residual", json_boolean(parallel));
    if (!lp_gguf_find_kv(g, "gptneox.attention.layer_norm_epsilon"))
        return lp_error(LP_EFORMAT, "%s: gptneox.attention.layer_norm_epsilon is missing (llama.cpp requires it)", file);
    json_object_set_new(config, "attention_bias", json_boolean(find_tensor(m, "blk.0.attn_qkv.bias") != NULL));
    return LP_OK;
}

/* BERT's keys (TextModel.set_gguf_parameters, BertModel's attention.causal false): the
 * token types from token_types.weight's rows (the converter writes their count under a
 * tokenizer key llama.cpp only checks against them). GELU is BertConfig's exact "gelu", as
 * for GPT-NeoX; llama.cpp's pooling_type is how it pools embeddings and is not read. */
static int bert_config(const lp_model *m, json_t *config) {
    const lp_gguf *g = m->gguf;
    const char *file = lp_gguf_path(g);
    int rc;
    if (lp_gguf_find_kv(g, "bert.attention.causal")) {
        bool causal;
        if ((rc = lp_gguf_get_bool(g, "bert.attention.causal", &causal))) return rc;
        if (causal) return lp_error(LP_EUNSUPPORTED, "%s: bert.attention.causal is true; a causal BERT is not supported", file);
    }
    const lp_gguf_tensor *types = find_tensor(m, "token_types.weight");
    if (!types || types->n_dims != 2 || types->ne[1] > (1 << 16))
        return lp_error(LP_EFORMAT, "%s: no 2-D token_types.weight of at most 65536 rows; BERT needs its token-type "
                        "embeddings", file);
    json_object_set_new(config, "type_vocab_size", json_integer((json_int_t)types->ne[1]));
    if (!lp_gguf_find_kv(g, "bert.context_length"))
        return lp_error(LP_EFORMAT, "%s: bert.context_length is missing; it sizes position_embd.weight", file);
    return LP_OK;
}

/* The config.json a Hugging Face checkpoint of this GGUF's architecture would have. */
static int make_config(lp_model *m, const char *arch, json_t *config) {
    const lp_gguf *g = m->gguf;
    const lp_gguf_tensor *emb = find_tensor(m, "token_embd.weight");
    if (!emb || emb->n_dims != 2)
        return lp_error(LP_EFORMAT, "%s: no 2-D token_embd.weight; not a %s model?", lp_gguf_path(g), arch);
    if (emb->ne[1] > LP_MAX_VOCAB)
        return lp_error(LP_EFORMAT, "%s: token_embd.weight has %llu rows, more than loupe's limit of %d tokens",
                        lp_gguf_path(g), (unsigned long long)emb->ne[1], LP_MAX_VOCAB);
    json_object_set_new(config, "vocab_size", json_integer((json_int_t)emb->ne[1]));
    bool untied = find_tensor(m, "output.weight") != NULL;
    json_object_set_new(config, "tie_word_embeddings", json_boolean(!untied));
    int rc, d = 0, n_head = 0, d_head = 0;
    if (strcmp(arch, "gpt2") == 0) {
        if ((rc = copy_int(g, arch, "embedding_length", true, 1, LP_MAX_D_MODEL, config, "n_embd", NULL)) ||
            (rc = copy_int(g, arch, "block_count", true, 1, LP_MAX_LAYERS, config, "n_layer", NULL)) ||
            (rc = copy_int(g, arch, "attention.head_count", true, 1, LP_MAX_HEADS, config, "n_head", NULL)) ||
            (rc = copy_int(g, arch, "context_length", true, 1, LP_MAX_CTX, config, "n_positions", NULL)) ||
            (rc = copy_int(g, arch, "feed_forward_length", false, 1, LP_MAX_D_MLP, config, "n_inner", NULL)) ||
            (rc = copy_float(g, arch, "attention.layer_norm_epsilon", config, "layer_norm_epsilon")))
            return rc;
        return refuse_unsupported(g, arch, 0);
    }
    if (strcmp(arch, "bert") == 0) {
        if ((rc = copy_int(g, arch, "embedding_length", true, 1, LP_MAX_D_MODEL, config, "hidden_size", NULL)) ||
            (rc = copy_int(g, arch, "feed_forward_length", true, 1, LP_MAX_D_MLP, config, "intermediate_size", NULL)) ||
            (rc = copy_int(g, arch, "block_count", true, 1, LP_MAX_LAYERS, config, "num_hidden_layers", NULL)) ||
            (rc = copy_int(g, arch, "attention.head_count", true, 1, LP_MAX_HEADS, config, "num_attention_heads",
                           NULL)) ||
            (rc = bert_config(m, config)) ||
            (rc = copy_int(g, arch, "context_length", true, 1, LP_MAX_CTX, config, "max_position_embeddings", NULL)) ||
            (rc = copy_float(g, arch, "attention.layer_norm_epsilon", config, "layer_norm_eps")))
            return rc;
        return refuse_unsupported(g, arch, 0);
    }
    if (strcmp(arch, "gptneox") == 0) {
        if ((rc = copy_int(g, arch, "embedding_length", true, 1, LP_MAX_D_MODEL, config, "hidden_size", &d)) ||
            (rc = copy_int(g, arch, "feed_forward_length", true, 1, LP_MAX_D_MLP, config, "intermediate_size", NULL)) ||
            (rc = copy_int(g, arch, "block_count", true, 1, LP_MAX_LAYERS, config, "num_hidden_layers", NULL)) ||
            (rc = copy_int(g, arch, "attention.head_count", true, 1, LP_MAX_HEADS, config, "num_attention_heads",
                           &n_head)) ||
            (rc = copy_int(g, arch, "context_length", false, 1, LP_MAX_CTX, config, "max_position_embeddings", NULL)) ||
            (rc = copy_float(g, arch, "attention.layer_norm_epsilon", config, "layer_norm_eps")) ||
            (rc = copy_float(g, arch, "rope.freq_base", config, "rope_theta")) ||
            (rc = neox_config(m, d, n_head, config)))
            return rc;
        return refuse_unsupported(g, arch, 0);
    }
    if ((rc = copy_int(g, arch, "embedding_length", true, 1, LP_MAX_D_MODEL, config, "hidden_size", &d)) ||
        (rc = copy_int(g, arch, "feed_forward_length", true, 1, LP_MAX_D_MLP, config, "intermediate_size", NULL)) ||
        (rc = copy_int(g, arch, "block_count", true, 1, LP_MAX_LAYERS, config, "num_hidden_layers", NULL)) ||
        (rc = copy_int(g, arch, "attention.head_count", true, 1, LP_MAX_HEADS, config, "num_attention_heads",
                       &n_head)) ||
        (rc = copy_int(g, arch, "attention.head_count_kv", false, 1, LP_MAX_HEADS, config, "num_key_value_heads",
                       NULL)) ||
        (rc = copy_int(g, arch, "context_length", false, 1, LP_MAX_CTX, config, "max_position_embeddings", NULL)) ||
        (rc = copy_int(g, arch, "attention.key_length", false, 1, LP_MAX_D_HEAD, config, "head_dim", &d_head)) ||
        (rc = copy_float(g, arch, "attention.layer_norm_rms_epsilon", config, "rms_norm_eps")) ||
        (rc = copy_float(g, arch, "rope.freq_base", config, "rope_theta")))
        return rc;
    if (strcmp(arch, "gemma2") == 0 && (rc = gemma2_config(g, d, n_head, &d_head, config))) return rc;
    return refuse_unsupported(g, arch, d_head ? d_head : d / n_head);
}

/* The model of m->gguf, named path in messages. */
static int load(lp_model *m, const char *path) {
    int rc;
    const char *s;
    size_t len;
    if ((rc = lp_gguf_get_str(m->gguf, "general.architecture", &s, &len))) return rc;
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(len < sizeof arch ? len : sizeof arch - 1), s);
    size_t a = 0;
    while (a < N_OF(GGUF_ARCHES) && !(strlen(GGUF_ARCHES[a].gguf_arch) == len && !memcmp(s, GGUF_ARCHES[a].gguf_arch, len)))
        a++;
    if (a == N_OF(GGUF_ARCHES))
        return lp_error(LP_EUNSUPPORTED, "%s: general.architecture '%s' is not supported; loupe reads GGUF models of "
                        "architecture gpt2, llama, qwen2, gemma2, gptneox and bert", path, arch);
    snprintf(m->cfg.arch, sizeof m->cfg.arch, "%s", GGUF_ARCHES[a].hf_arch);
    m->gguf_unpermute = GGUF_ARCHES[a].unpermute;
    m->gguf_norm_shifted = GGUF_ARCHES[a].norm_shifted;
    json_t *config = json_object();
    if (!config) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = make_config(m, arch, config)) == LP_OK) rc = GGUF_ARCHES[a].load(m, config, path);
    json_decref(config);
    if (rc) return rc;
    /* the type that holds most of the weights names the checkpoint's dtype */
    size_t most = 0;
    for (int i = 0; i < m->n_gguf_types; i++)
        if (m->gguf_types[i].n_elem > most) {
            most = m->gguf_types[i].n_elem;
            snprintf(m->dtype, sizeof m->dtype, "%s", lp_ggml_type_name(m->gguf_types[i].type));
        }
    return LP_OK;
}

/* gguf-split's keys of file g: split.no, split.count (1 and 0 when absent). */
static int split_keys(const lp_gguf *g, uint64_t *no, uint64_t *count) {
    *no = 0;
    *count = 1;
    int rc = LP_OK;
    if (lp_gguf_find_kv(g, "split.count") && (rc = lp_gguf_get_uint(g, "split.count", count))) return rc;
    if (lp_gguf_find_kv(g, "split.no") && (rc = lp_gguf_get_uint(g, "split.no", no))) return rc;
    if (*count < 1 || *count > 99999 || *no >= *count)
        return lp_error(LP_EFORMAT, "%s: split.no %llu of split.count %llu; a file is part 0 to count - 1 of 1 to "
                        "99999", lp_gguf_path(g), (unsigned long long)*no, (unsigned long long)*count);
    return LP_OK;
}

/* The other parts of a split model whose first part m->gguf is (gguf-split, as llama.cpp's
 * llama_split_path names them: PREFIX-00001-of-0000N.gguf ... PREFIX-0000N-of-0000N.gguf).
 * Each part is read and validated as a GGUF of its own; it must say that it is part i of
 * the same count, no tensor may be in two parts, and the parts hold split.tensors.count
 * tensors in all. The metadata is the first part's (gguf-split writes it there only). */
static int open_parts(lp_model *m, const char *path) {
    uint64_t no, count, total;
    int rc = split_keys(m->gguf, &no, &count);
    if (rc || count == 1) return rc;
    size_t n = strlen(path);
    char tail[32];
    snprintf(tail, sizeof tail, "-%05d-of-%05d.gguf", 1, (int)count);
    if (no != 0 || n < strlen(tail) || strcmp(path + n - strlen(tail), tail) != 0)
        return lp_error(LP_EFORMAT, "%s: part %llu of a model split in %llu files; open its first part, "
                        "PREFIX%s", path, (unsigned long long)no + 1, (unsigned long long)count, tail);
    if (!lp_gguf_find_kv(m->gguf, "split.tensors.count"))
        return lp_error(LP_EFORMAT, "%s: split.tensors.count is missing from the first part", path);
    if ((rc = lp_gguf_get_uint(m->gguf, "split.tensors.count", &total))) return rc;
    if (!(m->gguf_parts = calloc((size_t)count - 1, sizeof *m->gguf_parts)))
        return lp_error(LP_ENOMEM, "out of memory");
    uint64_t seen = (uint64_t)lp_gguf_tensor_count(m->gguf);
    for (uint64_t i = 1; i < count; i++) {
        char part[4200];
        if (n - strlen(tail) + 32 > sizeof part) return lp_error(LP_ERANGE, "%s: path too long", path);
        snprintf(part, sizeof part, "%.*s-%05d-of-%05d.gguf", (int)(n - strlen(tail)), path, (int)i + 1, (int)count);
        if ((rc = lp_gguf_open(&m->gguf_parts[m->n_gguf_parts], part))) return rc;
        const lp_gguf *g = m->gguf_parts[m->n_gguf_parts++];
        uint64_t pno, pcount;
        if ((rc = split_keys(g, &pno, &pcount))) return rc;
        if (pno != i || pcount != count)
            return lp_error(LP_EFORMAT, "%s: says it is part %llu of %llu, not part %llu of %llu", part,
                            (unsigned long long)pno + 1, (unsigned long long)pcount, (unsigned long long)i + 1,
                            (unsigned long long)count);
        for (int k = 0; k < lp_gguf_tensor_count(g); k++) {
            const char *name = lp_gguf_tensor_at(g, k)->name;
            bool twice = lp_gguf_find_tensor(m->gguf, name) != NULL;
            for (int j = 0; !twice && j + 1 < m->n_gguf_parts; j++) twice = lp_gguf_find_tensor(m->gguf_parts[j], name);
            if (twice) return lp_error(LP_EFORMAT, "%s: tensor '%s' is also in an earlier part", part, name);
        }
        seen += (uint64_t)lp_gguf_tensor_count(g);
    }
    if (seen != total)
        return lp_error(LP_EFORMAT, "%s: the %llu parts hold %llu tensors but split.tensors.count is %llu", path,
                        (unsigned long long)count, (unsigned long long)seen, (unsigned long long)total);
    return LP_OK;
}

int lp_load_gguf(lp_model *m, const char *path) {
    int rc = lp_gguf_open(&m->gguf, path);
    if (!rc) rc = open_parts(m, path);
    return rc ? rc : load(m, path);
}

int lp_gguf_model_parse(lp_model *m, const void *buf, size_t len, const char *what) {
    int rc = lp_gguf_parse(&m->gguf, buf, len, what);
    uint64_t no, count;
    if (!rc && !(rc = split_keys(m->gguf, &no, &count)) && count > 1)
        rc = lp_error(LP_EUNSUPPORTED, "%s: one part of a split model; its parts are read from files", what);
    return rc ? rc : load(m, what);
}
