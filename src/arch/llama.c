/* The Llama family from Hugging Face checkpoints (LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM): RMSNorm, rotary embeddings in the rotate-half layout, SwiGLU MLP,
 * grouped-query attention, nn.Linear weights stored (out, in), optional q/k/v biases
 * (Qwen2), tied or untied lm_head. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "arch/model_impl.h"

#define linear lp_model_linear
#define vector lp_model_vector

int lp_arch_llama_load(lp_model *m, json_t *config, const char *path) {
    lp_config *c = &m->cfg;
    int d, d_mlp, n_layer, n_head, n_kv, d_head, vocab, n_ctx, window, q, kv;
    double eps, theta;
    int rc;
    if ((rc = lp_cfg_int(config, "hidden_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MODEL, &d, path)) ||
        (rc = lp_cfg_int(config, "intermediate_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MLP, &d_mlp, path)) ||
        (rc = lp_cfg_int(config, "num_hidden_layers", LP_CFG_REQUIRED, 1, LP_MAX_LAYERS, &n_layer, path)) ||
        (rc = lp_cfg_int(config, "num_attention_heads", LP_CFG_REQUIRED, 1, LP_MAX_HEADS, &n_head, path)) ||
        (rc = lp_cfg_int(config, "vocab_size", LP_CFG_REQUIRED, 1, LP_MAX_VOCAB, &vocab, path)) ||
        (rc = lp_cfg_int(config, "max_position_embeddings", 2048, 1, LP_MAX_CTX, &n_ctx, path)) ||
        (rc = lp_cfg_int(config, "num_key_value_heads", n_head, 1, n_head, &n_kv, path)))
        return rc;
    json_t *hd = json_object_get(config, "head_dim");
    if ((!hd || json_is_null(hd)) && d < n_head) /* the default head_dim, d / n_head, would be 0 */
        return lp_error(LP_EFORMAT, "%s: hidden_size %d is smaller than num_attention_heads %d; give head_dim", path,
                        d, n_head);
    if ((rc = lp_cfg_int(config, "head_dim", d / n_head, 1, LP_MAX_D_HEAD, &d_head, path)) ||
        (rc = lp_cfg_mul(n_head, d_head, "the query width num_attention_heads * head_dim", &q, path)) ||
        (rc = lp_cfg_mul(n_kv, d_head, "the key/value width num_key_value_heads * head_dim", &kv, path)) ||
        (rc = lp_cfg_int(config, "sliding_window", 0, 0, INT_MAX, &window, path)) ||
        (rc = lp_cfg_positive(config, "rms_norm_eps", 1e-6, 1.0, &eps, path)) ||
        (rc = lp_cfg_positive(config, "rope_theta", 10000.0, 1e30, &theta, path)))
        return rc;
    if (n_head % n_kv)
        return lp_error(LP_EFORMAT, "%s: %d attention heads do not divide into %d key/value heads", path, n_head, n_kv);
    const char *act = json_string_value(json_object_get(config, "hidden_act"));
    if (act && strcmp(act, "silu") != 0)
        return lp_error(LP_EUNSUPPORTED, "%s: hidden_act '%s' is not supported (loupe has silu)", path, act);
    json_t *scaling = json_object_get(config, "rope_scaling");
    if (scaling && !json_is_null(scaling))
        return lp_error(LP_EUNSUPPORTED, "%s: rope_scaling is not supported yet", path);
    /* Qwen2 always has q/k/v biases; Llama may say so with attention_bias. */
    json_t *ab = json_object_get(config, "attention_bias");
    bool qkv_bias = strcmp(c->arch, "Qwen2ForCausalLM") == 0 || (ab && json_is_true(ab));
    bool o_bias = ab && json_is_true(ab);
    json_t *mb = json_object_get(config, "mlp_bias");
    bool mlp_bias = mb && json_is_true(mb);
    /* Mistral's sliding window only matters past its length; the forward pass does not
     * apply one, so refuse sequences longer than the window instead of computing wrongly. */
    json_t *use_sw = json_object_get(config, "use_sliding_window");
    if (window > 0 && window < n_ctx && !(use_sw && json_is_false(use_sw))) n_ctx = window;

    snprintf(c->family, sizeof c->family, "llama");
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
    c->mlp = LP_MLP_SWIGLU;
    c->qkv_bias = qkv_bias;
    c->mlp_bias = mlp_bias;
    c->causal = true;
    c->head = LP_HEAD_LM;

    if ((rc = vector(m, "model.norm.weight", d, &m->lnf_w))) return rc;
    int eshape[2] = {vocab, d};
    if ((rc = lp_model_tensor(m, "model.embed_tokens.weight", 2, eshape, &m->tok_emb))) return rc;
    m->layers = calloc((size_t)n_layer, sizeof *m->layers);
    if (!m->layers) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < n_layer; l++) {
        lp_layer *L = &m->layers[l];
        char n[8][96];
        const char *parts[8] = {"input_layernorm.weight", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                "self_attn.o_proj", "post_attention_layernorm.weight", "mlp.gate_proj", "mlp.up_proj"};
        for (int i = 0; i < 8; i++) snprintf(n[i], sizeof n[i], "model.layers.%d.%s", l, parts[i]);
        char down[96];
        snprintf(down, sizeof down, "model.layers.%d.mlp.down_proj", l);
        if ((rc = vector(m, n[0], d, &L->ln1_w)) || (rc = linear(m, n[1], d, q, qkv_bias, &L->q)) ||
            (rc = linear(m, n[2], d, kv, qkv_bias, &L->k)) || (rc = linear(m, n[3], d, kv, qkv_bias, &L->v)) ||
            (rc = linear(m, n[4], q, d, o_bias, &L->o)) || (rc = vector(m, n[5], d, &L->ln2_w)) ||
            (rc = linear(m, n[6], d, d_mlp, mlp_bias, &L->gate)) || (rc = linear(m, n[7], d, d_mlp, mlp_bias, &L->up)) ||
            (rc = linear(m, down, d_mlp, d, mlp_bias, &L->down)))
            return rc;
    }
    json_t *tie = json_object_get(config, "tie_word_embeddings");
    bool has_head = lp_model_has(m, "lm_head.weight");
    c->tied_unembed = tie ? json_is_true(tie) : !has_head;
    if (c->tied_unembed) {
        m->unembed = lp_linear_of(m->tok_emb, NULL, d, vocab, d, true);
    } else if ((rc = linear(m, "lm_head", d, vocab, false, &m->unembed))) {
        return rc;
    }
    return LP_OK;
}
