/* DistilBERT (DistilBertModel, DistilBertForMaskedLM, DistilBertForSequenceClassification)
 * from Hugging Face checkpoints: BERT's post-norm blocks without token types, every
 * LayerNorm at eps 1e-12 (fixed in its code, not in config.json), its own names, and a
 * classifier that is pre_classifier -> ReLU -> classifier on position 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "arch/model_impl.h"

#define DISTILBERT_EPS 1e-12

int lp_arch_distilbert_load(lp_model *m, json_t *config, const char *path) {
    lp_config *c = &m->cfg;
    int d, d_mlp, n_layer, n_head, vocab, n_pos, rc;
    lp_mlp_kind act;
    if ((rc = lp_cfg_int(config, "dim", LP_CFG_REQUIRED, 1, LP_MAX_D_MODEL, &d, path)) ||
        (rc = lp_cfg_int(config, "hidden_dim", LP_CFG_REQUIRED, 1, LP_MAX_D_MLP, &d_mlp, path)) ||
        (rc = lp_cfg_int(config, "n_layers", LP_CFG_REQUIRED, 1, LP_MAX_LAYERS, &n_layer, path)) ||
        (rc = lp_cfg_int(config, "n_heads", LP_CFG_REQUIRED, 1, LP_MAX_HEADS, &n_head, path)) ||
        (rc = lp_cfg_int(config, "vocab_size", LP_CFG_REQUIRED, 1, LP_MAX_VOCAB, &vocab, path)) ||
        (rc = lp_cfg_int(config, "max_position_embeddings", 512, 1, LP_MAX_CTX, &n_pos, path)) ||
        (rc = lp_arch_act(config, "activation", "gelu", &act, path)))
        return rc;
    if (d % n_head) return lp_error(LP_EFORMAT, "%s: dim %d is not a multiple of n_heads %d", path, d, n_head);

    snprintf(c->family, sizeof c->family, "distilbert");
    c->n_layer = n_layer;
    c->n_head = c->n_kv_head = n_head;
    c->d_model = d;
    c->d_head = d / n_head;
    c->d_mlp = d_mlp;
    c->vocab = vocab;
    c->n_ctx = n_pos;
    c->norm_eps = (float)DISTILBERT_EPS;
    c->norm = LP_NORM_LAYERNORM;
    c->pos = LP_POS_LEARNED;
    c->mlp = act;
    c->qkv_bias = c->mlp_bias = true;
    c->causal = false;
    c->post_norm = c->emb_norm = true;
    c->head = strstr(c->arch, "ForMaskedLM") ? LP_HEAD_MLM
              : strstr(c->arch, "ForSequenceClassification") ? LP_HEAD_CLASSIFIER : LP_HEAD_NONE;

    const char *p = lp_st_find(m->st, "distilbert.embeddings.word_embeddings.weight") ? "distilbert." : "";
    char n[8][192];
    snprintf(n[0], sizeof n[0], "%sembeddings.word_embeddings.weight", p);
    snprintf(n[1], sizeof n[1], "%sembeddings.position_embeddings.weight", p);
    snprintf(n[2], sizeof n[2], "%sembeddings.LayerNorm", p);
    int we[2] = {vocab, d}, pe[2] = {n_pos, d};
    if ((rc = lp_model_tensor(m, n[0], 2, we, &m->tok_emb)) || (rc = lp_model_tensor(m, n[1], 2, pe, &m->pos_emb)) ||
        (rc = lp_arch_norm(m, n[2], d, &m->emb_ln_w, &m->emb_ln_b)))
        return rc;
    static const char *const parts[8] = {"attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                                         "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm"};
    if ((rc = lp_arch_encoder_layers(m, p, "transformer.layer", parts))) return rc;
    if (c->head == LP_HEAD_MLM) {
        m->head.act = lp_arch_head_act(act);
        m->head.ln_eps = (float)DISTILBERT_EPS;
        if ((rc = lp_model_linear(m, "vocab_transform", d, d, true, &m->head.dense)) ||
            (rc = lp_arch_norm(m, "vocab_layer_norm", d, &m->head.ln_w, &m->head.ln_b)))
            return rc;
        return lp_arch_mlm_decoder(m, config, "vocab_projector.weight", "vocab_projector.bias", "vocab_projector.bias");
    }
    if (c->head == LP_HEAD_CLASSIFIER) {
        m->head.act = LP_HEAD_ACT_RELU;
        if ((rc = lp_arch_labels(m, config, path)) ||
            (rc = lp_model_linear(m, "pre_classifier", d, d, true, &m->head.dense)) ||
            (rc = lp_model_linear(m, "classifier", d, c->n_labels, true, &m->unembed)))
            return rc;
    }
    return LP_OK;
}
