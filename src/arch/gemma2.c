/* Gemma 2 (Gemma2ForCausalLM) from a Hugging Face checkpoint, as transformers'
 * modeling_gemma2.py computes it:
 * - Gemma2Model.forward: the token embeddings times normalizer = torch.tensor(hidden_size**0.5,
 *   dtype=hidden_states.dtype), i.e. sqrt(d_model) rounded to the weights' dtype (cfg.emb_scale);
 * - Gemma2RMSNorm: x * rsqrt(mean(x^2) + eps) in float32, times (1 + weight): the 1 is added
 *   here once, so that the shared RMSNorm kernel multiplies by the stored sum;
 * - Gemma2DecoderLayer.forward: x + post_attention_layernorm(attn(input_layernorm(x))), then
 *   + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(that))) (cfg.sandwich_norm);
 * - Gemma2MLP: down(act(gate(x)) * up(x)), act = hidden_activation (gelu_pytorch_tanh): GeGLU;
 * - eager_attention_forward: scores * query_pre_attn_scalar**-0.5, then attn_logit_softcapping
 *   (cap * tanh(scores / cap)) before the mask and the softmax; head_dim is its own size;
 *   grouped-query attention; rotate-half RoPE with rope_theta;
 * - sliding-window layers: layer_types[l] == "sliding_attention" (Gemma2Config's default, and
 *   older versions' Gemma2Attention: not bool(layer_idx % 2), i.e. the even layers) keep the
 *   keys k with q - sliding_window < k <= q (the mask torch.tril(ones, diagonal=-sliding_window)
 *   removes, as sliding_window_overlay's kv_idx > q_idx - sliding_window keeps);
 * - Gemma2ForCausalLM.forward: logits = final_logit_softcapping * tanh(logits / cap); the
 *   lm_head is tied to embed_tokens (tie_word_embeddings, default true). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/dtype.h"
#include "loupe/error.h"
#include "arch/model_impl.h"

#define linear lp_model_linear
#define vector lp_model_vector

/* A soft cap: absent, Gemma2Config's default; null, none (0); else a positive number. */
static int cfg_cap(json_t *config, const char *key, double def, double *out, const char *path) {
    json_t *v = json_object_get(config, key);
    if (v && json_is_null(v)) {
        *out = 0.0;
        return LP_OK;
    }
    return lp_cfg_positive(config, key, def, 1e30, out, path);
}

/* Which layers slide: layer_types when the config has it, else every even layer. */
static int layer_windows(lp_model *m, json_t *config, int window, const char *path) {
    json_t *types = json_object_get(config, "layer_types");
    int n = m->cfg.n_layer;
    if (types && !json_is_null(types) && (!json_is_array(types) || (int)json_array_size(types) != n))
        return lp_error(LP_EFORMAT, "%s: \"layer_types\" should be a list of %d strings, one a layer", path, n);
    for (int l = 0; l < n; l++) {
        bool slide = l % 2 == 0;
        if (types && !json_is_null(types)) {
            const char *t = json_string_value(json_array_get(types, l));
            if (t && strcmp(t, "sliding_attention") == 0) slide = true;
            else if (t && strcmp(t, "full_attention") == 0) slide = false;
            else
                return lp_error(LP_EFORMAT, "%s: layer_types[%d] should be \"sliding_attention\" or "
                                "\"full_attention\"", path, l);
        }
        m->layers[l].window = slide ? window : 0;
    }
    return LP_OK;
}

/* The RMSNorm weight name, (1 + w) in a buffer the model owns; as it is when the file holds
 * the sum already (GGUF: llama.cpp's converter stores w + 1, computed in float32 as here). */
static int norm_plus_one(lp_model *m, const char *name, int d, const float **out) {
    const float *w;
    int rc = vector(m, name, d, &w);
    if (rc || m->gguf_norm_shifted) {
        *out = w;
        return rc;
    }
    float *buf = malloc((size_t)d * sizeof *buf);
    if (!buf) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = lp_model_own(m, buf))) return rc;
    for (int j = 0; j < d; j++) buf[j] = 1.0f + w[j];
    *out = buf;
    return LP_OK;
}

/* sqrt(d) as torch.tensor(d**0.5, dtype) holds it in the checkpoint's dtype; for a GGUF
 * file, in float32 as llama.cpp scales (ggml_scale(inpL, sqrtf(n_embd))): the file does
 * not say which dtype the original had (Gemma 2 9B: HF's bf16 59.75, llama.cpp's 59.866). */
static float normalizer(const lp_model *m, int d) {
    float s = (float)sqrt((double)d);
    if (m->gguf) return s;
    const char *dtype = m->dtype;
    lp_dtype dt = lp_dtype_from_name(dtype);
    if (dt == LP_DT_BF16) return lp_bf16_to_f32(lp_f32_to_bf16(s));
    if (dt == LP_DT_F16) return lp_f16_to_f32(lp_f32_to_f16(s));
    return s;
}

int lp_arch_gemma2_load(lp_model *m, json_t *config, const char *path) {
    lp_config *c = &m->cfg;
    int d, d_mlp, n_layer, n_head, n_kv, d_head, vocab, n_ctx, window, q, kv;
    double eps, theta, qscalar, attn_cap, final_cap;
    lp_mlp_kind act;
    int rc;
    json_t *rp = json_object_get(config, "rope_parameters"); /* transformers v5 */
    json_t *rope_src = rp && json_is_object(rp) ? rp : config;
    if ((rc = lp_cfg_int(config, "hidden_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MODEL, &d, path)) ||
        (rc = lp_cfg_int(config, "intermediate_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MLP, &d_mlp, path)) ||
        (rc = lp_cfg_int(config, "num_hidden_layers", LP_CFG_REQUIRED, 1, LP_MAX_LAYERS, &n_layer, path)) ||
        (rc = lp_cfg_int(config, "num_attention_heads", LP_CFG_REQUIRED, 1, LP_MAX_HEADS, &n_head, path)) ||
        (rc = lp_cfg_int(config, "num_key_value_heads", n_head, 1, n_head, &n_kv, path)) ||
        (rc = lp_cfg_int(config, "head_dim", 256, 1, LP_MAX_D_HEAD, &d_head, path)) ||
        (rc = lp_cfg_int(config, "vocab_size", LP_CFG_REQUIRED, 1, LP_MAX_VOCAB, &vocab, path)) ||
        (rc = lp_cfg_int(config, "max_position_embeddings", 8192, 1, LP_MAX_CTX, &n_ctx, path)) ||
        (rc = lp_cfg_int(config, "sliding_window", 4096, 1, LP_MAX_CTX, &window, path)) ||
        (rc = lp_cfg_mul(n_head, d_head, "the query width num_attention_heads * head_dim", &q, path)) ||
        (rc = lp_cfg_mul(n_kv, d_head, "the key/value width num_key_value_heads * head_dim", &kv, path)) ||
        (rc = lp_cfg_positive(config, "rms_norm_eps", 1e-6, 1.0, &eps, path)) ||
        (rc = lp_cfg_positive(rope_src, "rope_theta", 10000.0, 1e30, &theta, path)) ||
        (rc = lp_cfg_positive(config, "query_pre_attn_scalar", 256.0, 1e30, &qscalar, path)) ||
        (rc = cfg_cap(config, "attn_logit_softcapping", 50.0, &attn_cap, path)) ||
        (rc = cfg_cap(config, "final_logit_softcapping", 30.0, &final_cap, path)) ||
        (rc = lp_arch_act(config, "hidden_activation", "gelu_pytorch_tanh", &act, path)))
        return rc;
    if (n_head % n_kv)
        return lp_error(LP_EFORMAT, "%s: %d attention heads do not divide into %d key/value heads", path, n_head, n_kv);
    if (act != LP_MLP_GELU_TANH)
        return lp_error(LP_EUNSUPPORTED, "%s: Gemma 2's hidden_activation must be gelu_pytorch_tanh (its GeGLU); "
                        "loupe has no other gated GELU", path);
    const char *rope_type = json_string_value(json_object_get(rope_src, "rope_type"));
    json_t *scaling = json_object_get(config, "rope_scaling");
    if ((rope_type && strcmp(rope_type, "default") != 0) || (scaling && !json_is_null(scaling)))
        return lp_error(LP_EUNSUPPORTED, "%s: rope scaling is not supported (loupe has the default rotary embedding)",
                        path);
    json_t *bidi = json_object_get(config, "use_bidirectional_attention");
    if (bidi && json_is_true(bidi))
        return lp_error(LP_EUNSUPPORTED, "%s: use_bidirectional_attention is not supported (loupe reads Gemma 2 as "
                        "a causal LM)", path);
    json_t *ab = json_object_get(config, "attention_bias");
    bool bias = ab && json_is_true(ab);

    snprintf(c->family, sizeof c->family, "gemma2");
    c->n_layer = n_layer;
    c->n_head = n_head;
    c->n_kv_head = n_kv;
    c->d_model = d;
    c->d_head = d_head;
    c->d_mlp = d_mlp;
    c->vocab = vocab;
    c->n_ctx = n_ctx;
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    c->norm = LP_NORM_RMSNORM;
    c->pos = LP_POS_ROPE_HALF;
    c->mlp = LP_MLP_GEGLU;
    c->qkv_bias = bias;
    c->causal = true;
    c->head = LP_HEAD_LM;
    c->sandwich_norm = true;
    c->attn_scale = (float)pow(qscalar, -0.5); /* Gemma2Attention: query_pre_attn_scalar**-0.5 */
    c->attn_softcap = (float)attn_cap;
    c->final_softcap = (float)final_cap;

    int eshape[2] = {vocab, d};
    if ((rc = lp_model_tensor(m, "model.embed_tokens.weight", 2, eshape, &m->tok_emb)) ||
        (rc = norm_plus_one(m, "model.norm.weight", d, &m->lnf_w)))
        return rc;
    c->emb_scale = normalizer(m, d);
    m->layers = calloc((size_t)n_layer, sizeof *m->layers);
    if (!m->layers) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < n_layer; l++) {
        lp_layer *L = &m->layers[l];
        char n[11][96];
        const char *parts[11] = {"input_layernorm.weight", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                 "self_attn.o_proj", "post_attention_layernorm.weight",
                                 "pre_feedforward_layernorm.weight", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                                 "post_feedforward_layernorm.weight"};
        for (int i = 0; i < 11; i++) snprintf(n[i], sizeof n[i], "model.layers.%d.%s", l, parts[i]);
        if ((rc = norm_plus_one(m, n[0], d, &L->ln1_w)) || (rc = linear(m, n[1], d, q, bias, &L->q)) ||
            (rc = linear(m, n[2], d, kv, bias, &L->k)) || (rc = linear(m, n[3], d, kv, bias, &L->v)) ||
            (rc = linear(m, n[4], q, d, bias, &L->o)) || (rc = norm_plus_one(m, n[5], d, &L->post1_w)) ||
            (rc = norm_plus_one(m, n[6], d, &L->ln2_w)) || (rc = linear(m, n[7], d, d_mlp, false, &L->gate)) ||
            (rc = linear(m, n[8], d, d_mlp, false, &L->up)) || (rc = linear(m, n[9], d_mlp, d, false, &L->down)) ||
            (rc = norm_plus_one(m, n[10], d, &L->post2_w)))
            return rc;
    }
    if ((rc = layer_windows(m, config, window, path))) return rc;
    json_t *tie = json_object_get(config, "tie_word_embeddings");
    c->tied_unembed = !tie || json_is_null(tie) || json_is_true(tie);
    if (c->tied_unembed) m->unembed = lp_linear_of(m->tok_emb, NULL, d, vocab, d, true);
    else if ((rc = linear(m, "lm_head", d, vocab, false, &m->unembed))) return rc;
    return LP_OK;
}
