/* GPT-2 (GPT2LMHeadModel) from a Hugging Face checkpoint: LayerNorm, learned positions,
 * tanh-GELU MLP, Conv1D weights stored (in, out), fused q|k|v, tied unembedding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "arch/model_impl.h"

/* Checkpoints saved from GPT2LMHeadModel prefix names with "transformer."; GPT2Model's don't. */
static const char *name_prefix(const lp_model *m) {
    return lp_st_find(m->st, "transformer.wte.weight") ? "transformer." : "";
}

static int tensor(lp_model *m, const char *prefix, const char *name, int ndim, int d0, int d1, const float **out) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int shape[2] = {d0, d1};
    return lp_model_tensor(m, full, ndim, shape, out);
}

int lp_arch_gpt2_load(lp_model *m, json_t *config, const char *path) {
    lp_config *c = &m->cfg;
    int d, n_layer, n_head, n_pos, vocab, n_inner, d3, d4;
    double eps;
    int rc;
    /* Older configs name the context n_ctx. */
    json_t *np = json_object_get(config, "n_positions");
    const char *pos_key = np && !json_is_null(np) ? "n_positions" : "n_ctx";
    if ((rc = lp_cfg_int(config, "n_embd", LP_CFG_REQUIRED, 1, LP_MAX_D_MODEL, &d, path)) ||
        (rc = lp_cfg_int(config, "n_layer", LP_CFG_REQUIRED, 1, LP_MAX_LAYERS, &n_layer, path)) ||
        (rc = lp_cfg_int(config, "n_head", LP_CFG_REQUIRED, 1, LP_MAX_HEADS, &n_head, path)) ||
        (rc = lp_cfg_int(config, "vocab_size", LP_CFG_REQUIRED, 1, LP_MAX_VOCAB, &vocab, path)) ||
        (rc = lp_cfg_int(config, pos_key, LP_CFG_REQUIRED, 1, LP_MAX_CTX, &n_pos, path)) ||
        (rc = lp_cfg_mul(3, d, "the fused q|k|v width 3 * n_embd", &d3, path)) ||
        (rc = lp_cfg_mul(4, d, "the default n_inner 4 * n_embd", &d4, path)) ||
        (rc = lp_cfg_int(config, "n_inner", d4, 1, LP_MAX_D_MLP, &n_inner, path)) ||
        (rc = lp_cfg_positive(config, "layer_norm_epsilon", 1e-5, 1.0, &eps, path)))
        return rc;
    if (d % n_head)
        return lp_error(LP_EFORMAT, "%s: n_embd %d is not a multiple of n_head %d", path, d, n_head);
    const char *act = json_string_value(json_object_get(config, "activation_function"));
    if (act && strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
        return lp_error(LP_EUNSUPPORTED, "%s: activation_function '%s' is not supported (loupe has gelu_new)", path, act);
    json_t *scale = json_object_get(config, "scale_attn_weights");
    if (scale && json_is_false(scale))
        return lp_error(LP_EUNSUPPORTED, "%s: scale_attn_weights false is not supported", path);

    snprintf(c->family, sizeof c->family, "gpt2");
    c->n_layer = n_layer;
    c->n_head = c->n_kv_head = n_head;
    c->d_model = d;
    c->d_head = d / n_head;
    c->d_mlp = n_inner;
    c->vocab = vocab;
    c->n_ctx = n_pos;
    c->norm_eps = (float)eps;
    c->norm = LP_NORM_LAYERNORM;
    c->pos = LP_POS_LEARNED;
    c->mlp = LP_MLP_GELU_TANH;
    c->qkv_bias = c->mlp_bias = true;
    c->causal = true;
    c->head = LP_HEAD_LM;

    const char *p = name_prefix(m);
    if ((rc = tensor(m, p, "wte.weight", 2, vocab, d, &m->tok_emb)) || (rc = tensor(m, p, "wpe.weight", 2, n_pos, d, &m->pos_emb)) ||
        (rc = tensor(m, p, "ln_f.weight", 1, d, 0, &m->lnf_w)) || (rc = tensor(m, p, "ln_f.bias", 1, d, 0, &m->lnf_b)))
        return rc;
    m->layers = calloc((size_t)n_layer, sizeof *m->layers);
    if (!m->layers) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < n_layer; l++) {
        lp_layer *L = &m->layers[l];
        char n[12][96];
        const char *parts[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                                 "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                                 "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
        for (int i = 0; i < 12; i++) snprintf(n[i], sizeof n[i], "h.%d.%s", l, parts[i]);
        const float *qkv_w, *qkv_b, *o_w, *o_b, *fc_w, *fc_b, *pr_w, *pr_b;
        if ((rc = tensor(m, p, n[0], 1, d, 0, &L->ln1_w)) || (rc = tensor(m, p, n[1], 1, d, 0, &L->ln1_b)) ||
            (rc = tensor(m, p, n[2], 2, d, d3, &qkv_w)) || (rc = tensor(m, p, n[3], 1, d3, 0, &qkv_b)) ||
            (rc = tensor(m, p, n[4], 2, d, d, &o_w)) || (rc = tensor(m, p, n[5], 1, d, 0, &o_b)) ||
            (rc = tensor(m, p, n[6], 1, d, 0, &L->ln2_w)) || (rc = tensor(m, p, n[7], 1, d, 0, &L->ln2_b)) ||
            (rc = tensor(m, p, n[8], 2, d, n_inner, &fc_w)) || (rc = tensor(m, p, n[9], 1, n_inner, 0, &fc_b)) ||
            (rc = tensor(m, p, n[10], 2, n_inner, d, &pr_w)) || (rc = tensor(m, p, n[11], 1, d, 0, &pr_b)))
            return rc;
        /* q, k and v are column blocks of the fused (d, 3d) c_attn: no copy, row stride 3d. */
        L->q = lp_linear_of(qkv_w, qkv_b, d, d, d3, false);
        L->k = lp_linear_of(qkv_w + d, qkv_b + d, d, d, d3, false);
        L->v = lp_linear_of(qkv_w + 2 * d, qkv_b + 2 * d, d, d, d3, false);
        L->o = lp_linear_of(o_w, o_b, d, d, d, false);
        L->up = lp_linear_of(fc_w, fc_b, d, n_inner, n_inner, false);
        L->down = lp_linear_of(pr_w, pr_b, n_inner, d, d, false);
    }
    /* GPT2LMHeadModel ties lm_head to wte; a checkpoint may still carry a copy of it. */
    const float *head = m->tok_emb;
    c->tied_unembed = true;
    if (lp_model_has(m, "lm_head.weight")) {
        int shape[2] = {vocab, d};
        if ((rc = lp_model_tensor(m, "lm_head.weight", 2, shape, &head))) return rc;
        c->tied_unembed = false;
    }
    json_t *tie = json_object_get(config, "tie_word_embeddings");
    if (tie && json_is_true(tie)) {
        head = m->tok_emb;
        c->tied_unembed = true;
    }
    m->unembed = lp_linear_of(head, NULL, d, vocab, d, true);
    return LP_OK;
}
