/* GPT-NeoX (GPTNeoXForCausalLM: Pythia, GPT-NeoX-20B) from a Hugging Face checkpoint, as
 * transformers' modeling_gpt_neox.py computes it: LayerNorm with biases, rotary embeddings
 * in the rotate-half layout on the first rotary_pct of each head, the fused query_key_value
 * whose output is per head [q | k | v], GELU (exact erf by default), the parallel residual
 * x + attn(ln1(x)) + mlp(ln2(x)) unless use_parallel_residual is false, an untied embed_out.
 * The causal-mask buffers (attention.bias, attention.masked_bias) and rotary_emb.inv_freq that
 * old checkpoints carry are not weights: they are ignored, inv_freq recomputed from the config
 * as transformers does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "arch/model_impl.h"

#define linear lp_model_linear
#define vector lp_model_vector

/* A float in [0, 1] (rotary_pct, partial_rotary_factor) from key, absent: def. */
static int cfg_fraction(json_t *config, const char *key, double def, double *out, const char *path) {
    json_t *v = json_object_get(config, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LP_OK;
    }
    double x = json_number_value(v);
    if (!json_is_number(v) || !(x >= 0.0 && x <= 1.0))
        return lp_error(LP_EFORMAT, "%s: \"%s\" should be a number from 0 to 1", path, key);
    *out = x;
    return LP_OK;
}

/* A bool key, absent or null: def. */
static int cfg_bool(json_t *config, const char *key, bool def, bool *out, const char *path) {
    json_t *v = json_object_get(config, key);
    if (!v || json_is_null(v)) *out = def;
    else if (json_is_boolean(v)) *out = json_is_true(v);
    else return lp_error(LP_EFORMAT, "%s: \"%s\" should be true or false", path, key);
    return LP_OK;
}

/* The rotary fraction and base: newer configs name them partial_rotary_factor and rope_theta
 * (transformers >= 4.47 writes both spellings; v5 nests them in rope_parameters), older ones
 * rotary_pct and rotary_emb_base. Two spellings that disagree are refused. */
static int rotary_config(json_t *config, double *pct, double *theta, const char *path) {
    json_t *rp = json_object_get(config, "rope_parameters");
    json_t *src = rp && json_is_object(rp) ? rp : config;
    const char *type = json_string_value(json_object_get(src, "rope_type"));
    if (type && strcmp(type, "default") != 0)
        return lp_error(LP_EUNSUPPORTED, "%s: rope_type '%s' is not supported (loupe has default)", path, type);
    json_t *scaling = json_object_get(config, "rope_scaling");
    if (scaling && !json_is_null(scaling))
        return lp_error(LP_EUNSUPPORTED, "%s: rope_scaling is not supported yet", path);
    double a, b, ta, tb;
    int rc;
    if ((rc = cfg_fraction(src, "partial_rotary_factor", -1.0, &a, path)) ||
        (rc = cfg_fraction(config, "rotary_pct", -1.0, &b, path)) ||
        (rc = lp_cfg_positive(src, "rope_theta", -1.0, 1e30, &ta, path)) ||
        (rc = lp_cfg_positive(config, "rotary_emb_base", -1.0, 1e30, &tb, path)))
        return rc;
    if (a >= 0 && b >= 0 && a != b)
        return lp_error(LP_EFORMAT, "%s: partial_rotary_factor %g and rotary_pct %g disagree", path, a, b);
    if (ta > 0 && tb > 0 && ta != tb)
        return lp_error(LP_EFORMAT, "%s: rope_theta %g and rotary_emb_base %g disagree", path, ta, tb);
    *pct = a >= 0 ? a : b >= 0 ? b : 0.25; /* GPTNeoXConfig's defaults */
    *theta = ta > 0 ? ta : tb > 0 ? tb : 10000.0;
    return LP_OK;
}

/* query_key_value's rows (3d, d) and bias (3d) hold, for each head h, q rows h*3dh .. +dh,
 * then k, then v (the view (heads, 3 * head_size) of _attn_projections_and_rope, split in
 * three). Copied once into q rows | k rows | v rows, so that q, k and v are plain (out, in)
 * matrices one after the other: the forward's fused product finds them so. */
static int split_qkv(lp_model *m, const float *w, const float *b, int d, int H, int dh, lp_layer *L) {
    size_t dd = (size_t)d * d;
    float *buf = malloc((3 * dd + (b ? 3 * (size_t)d : 0)) * sizeof *buf);
    if (!buf) return lp_error(LP_ENOMEM, "out of memory splitting query_key_value");
    int rc = lp_model_own(m, buf);
    if (rc) return rc;
    float *bb = b ? buf + 3 * dd : NULL;
    for (int h = 0; h < H; h++)
        for (int part = 0; part < 3; part++) {
            size_t from = ((size_t)h * 3 + part) * dh, to = (size_t)part * d + (size_t)h * dh;
            memcpy(buf + to * d, w + from * d, (size_t)dh * d * sizeof *buf);
            if (bb) memcpy(bb + to, b + from, (size_t)dh * sizeof *bb);
        }
    L->q = lp_linear_of(buf, bb, d, d, d, true);
    L->k = lp_linear_of(buf + dd, bb ? bb + d : NULL, d, d, d, true);
    L->v = lp_linear_of(buf + 2 * dd, bb ? bb + 2 * d : NULL, d, d, d, true);
    return LP_OK;
}

int lp_arch_gpt_neox_load(lp_model *m, json_t *config, const char *path) {
    lp_config *c = &m->cfg;
    int d, d_mlp, n_layer, n_head, vocab, n_ctx, d3;
    double eps, pct = 0.25, theta = 10000.0;
    bool parallel, attn_bias, tied;
    lp_mlp_kind act;
    int rc;
    if ((rc = lp_cfg_int(config, "hidden_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MODEL, &d, path)) ||
        (rc = lp_cfg_int(config, "intermediate_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MLP, &d_mlp, path)) ||
        (rc = lp_cfg_int(config, "num_hidden_layers", LP_CFG_REQUIRED, 1, LP_MAX_LAYERS, &n_layer, path)) ||
        (rc = lp_cfg_int(config, "num_attention_heads", LP_CFG_REQUIRED, 1, LP_MAX_HEADS, &n_head, path)) ||
        (rc = lp_cfg_int(config, "vocab_size", LP_CFG_REQUIRED, 1, LP_MAX_VOCAB, &vocab, path)) ||
        (rc = lp_cfg_int(config, "max_position_embeddings", 2048, 1, LP_MAX_CTX, &n_ctx, path)) ||
        (rc = lp_cfg_mul(3, d, "the fused query_key_value width 3 * hidden_size", &d3, path)) ||
        (rc = lp_cfg_positive(config, "layer_norm_eps", 1e-5, 1.0, &eps, path)) ||
        (rc = rotary_config(config, &pct, &theta, path)) ||
        (rc = lp_arch_act(config, "hidden_act", "gelu", &act, path)) ||
        (rc = cfg_bool(config, "use_parallel_residual", true, &parallel, path)) ||
        (rc = cfg_bool(config, "attention_bias", true, &attn_bias, path)) ||
        (rc = cfg_bool(config, "tie_word_embeddings", false, &tied, path)))
        return rc;
    if (d % n_head)
        return lp_error(LP_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, d, n_head);
    int dh = d / n_head, rot = (int)(dh * pct); /* GPTNeoXAttention: int(head_size * rotary_pct) */
    if (rot == 0) /* rope_dims 0 would mean the whole head */
        return lp_error(LP_EUNSUPPORTED, "%s: the rotary width int(%d * %g) is 0: a GPT-NeoX without rotary "
                        "embeddings is not supported", path, dh, pct);
    if (rot % 2)
        return lp_error(LP_EFORMAT, "%s: the rotary width int(%d * %g) = %d is odd; rotate_half needs an even one",
                        path, dh, pct, rot);

    snprintf(c->family, sizeof c->family, "gpt_neox");
    c->n_layer = n_layer;
    c->n_head = c->n_kv_head = n_head;
    c->d_model = d;
    c->d_head = dh;
    c->d_mlp = d_mlp;
    c->vocab = vocab;
    c->n_ctx = n_ctx;
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    c->rope_dims = rot;
    c->norm = LP_NORM_LAYERNORM;
    c->pos = LP_POS_ROPE_HALF;
    c->mlp = act;
    c->qkv_bias = attn_bias;
    c->mlp_bias = true;
    c->parallel_block = parallel;
    c->causal = true;
    c->head = LP_HEAD_LM;

    int eshape[2] = {vocab, d};
    if ((rc = lp_model_tensor(m, "gpt_neox.embed_in.weight", 2, eshape, &m->tok_emb)) ||
        (rc = vector(m, "gpt_neox.final_layer_norm.weight", d, &m->lnf_w)) ||
        (rc = vector(m, "gpt_neox.final_layer_norm.bias", d, &m->lnf_b)))
        return rc;
    m->layers = calloc((size_t)n_layer, sizeof *m->layers);
    if (!m->layers) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < n_layer; l++) {
        lp_layer *L = &m->layers[l];
        char n[8][96];
        const char *parts[8] = {"input_layernorm.weight", "input_layernorm.bias", "attention.query_key_value",
                                "attention.dense", "post_attention_layernorm.weight", "post_attention_layernorm.bias",
                                "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"};
        for (int i = 0; i < 8; i++) snprintf(n[i], sizeof n[i], "gpt_neox.layers.%d.%s", l, parts[i]);
        lp_linear qkv;
        if ((rc = vector(m, n[0], d, &L->ln1_w)) || (rc = vector(m, n[1], d, &L->ln1_b)) ||
            (rc = linear(m, n[2], d, d3, attn_bias, &qkv)) || (rc = linear(m, n[3], d, d, attn_bias, &L->o)) ||
            (rc = vector(m, n[4], d, &L->ln2_w)) || (rc = vector(m, n[5], d, &L->ln2_b)) ||
            (rc = linear(m, n[6], d, d_mlp, true, &L->up)) || (rc = linear(m, n[7], d_mlp, d, true, &L->down)) ||
            (rc = split_qkv(m, qkv.w, qkv.b, d, n_head, dh, L)))
            return rc;
    }
    /* GPTNeoXForCausalLM's embed_out, unless a config ties it to embed_in. */
    c->tied_unembed = tied;
    if (tied) m->unembed = lp_linear_of(m->tok_emb, NULL, d, vocab, d, true);
    else if ((rc = linear(m, "embed_out", d, vocab, false, &m->unembed))) return rc;
    return LP_OK;
}
