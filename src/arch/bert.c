/* BERT and RoBERTa encoders from Hugging Face checkpoints (BertModel, BertForMaskedLM,
 * BertForSequenceClassification and the RoBERTa three): the same post-norm blocks under
 * other names. What differs is data: the prefix (bert. / roberta.), the heads' tensor names,
 * RoBERTa's positions starting after padding_idx, and its MLM head's activation (always
 * the exact GELU, where BERT's follows hidden_act). One loader, one table of names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "arch/model_impl.h"

/* What a BERT-like architecture calls things. */
typedef struct {
    const char *prefix;       /* the base model's prefix in task checkpoints */
    const char *probe;        /* a tensor that is there exactly when the prefix is */
    /* masked-LM head */
    const char *mlm_dense, *mlm_ln, *mlm_decoder, *mlm_bias, *mlm_decoder_bias;
    /* classifier head: dense (pooler or classifier.dense) then out */
    const char *cls_dense, *cls_out;
    bool cls_dense_in_base;   /* BERT's pooler lives in the base model, under the prefix */
} bert_names;

static const bert_names BERT = {"bert.", "bert.embeddings.word_embeddings.weight",
                                "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                                "cls.predictions.decoder.weight", "cls.predictions.bias",
                                "cls.predictions.decoder.bias", "pooler.dense", "classifier", true};
static const bert_names ROBERTA = {"roberta.", "roberta.embeddings.word_embeddings.weight", "lm_head.dense",
                                   "lm_head.layer_norm", "lm_head.decoder.weight", "lm_head.bias",
                                   "lm_head.decoder.bias", "classifier.dense", "classifier.out_proj", false};

int lp_arch_act(json_t *config, const char *key, const char *def, lp_mlp_kind *out, const char *path) {
    json_t *v = json_object_get(config, key);
    const char *act = v && !json_is_null(v) ? json_string_value(v) : def;
    if (!act) return lp_error(LP_EFORMAT, "%s: \"%s\" should be a string", path, key);
    if (!strcmp(act, "gelu")) *out = LP_MLP_GELU_ERF;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) *out = LP_MLP_GELU_TANH;
    else if (!strcmp(act, "relu")) *out = LP_MLP_RELU;
    else
        return lp_error(LP_EUNSUPPORTED, "%s: %s '%s' is not supported (loupe has gelu, gelu_new, "
                        "gelu_pytorch_tanh and relu)", path, key, act);
    return LP_OK;
}

lp_head_act lp_arch_head_act(lp_mlp_kind k) {
    return k == LP_MLP_RELU ? LP_HEAD_ACT_RELU : k == LP_MLP_GELU_TANH ? LP_HEAD_ACT_GELU_TANH : LP_HEAD_ACT_GELU_ERF;
}

int lp_arch_labels(lp_model *m, json_t *config, const char *path) {
    json_t *map = json_object_get(config, "id2label");
    if (map && !json_is_null(map) && !json_is_object(map))
        return lp_error(LP_EFORMAT, "%s: \"id2label\" should be an object", path);
    int n, rc;
    /* As Hugging Face's PretrainedConfig: id2label, when given, decides the count (a
     * num_labels that disagrees is overridden); num_labels otherwise, 2 by default. */
    size_t given = map && json_is_object(map) ? json_object_size(map) : 0;
    if (given) rc = lp_cfg_range((long long)given, "id2label's size", 1, 1 << 16, &n, path);
    else rc = lp_cfg_int(config, "num_labels", 2, 1, 1 << 16, &n, path);
    if (rc) return rc;
    m->labels = calloc((size_t)n, sizeof *m->labels);
    if (!m->labels) return lp_error(LP_ENOMEM, "out of memory");
    m->cfg.n_labels = n;
    const char *problem = json_string_value(json_object_get(config, "problem_type"));
    m->cfg.multi_label = problem && strcmp(problem, "multi_label_classification") == 0;
    const char *key;
    json_t *val;
    if (map && json_is_object(map)) json_object_foreach(map, key, val) {
        char *end;
        long id = strtol(key, &end, 10);
        if (end == key || *end || id < 0 || id >= n)
            return lp_error(LP_EFORMAT, "%s: id2label key '%s' is not a label id from 0 to %d", path, key, n - 1);
        if (!json_is_string(val)) return lp_error(LP_EFORMAT, "%s: id2label[\"%s\"] should be a string", path, key);
        free(m->labels[id]);
        if (!(m->labels[id] = strdup(json_string_value(val)))) return lp_error(LP_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++)
        if (!m->labels[i]) {
            char name[32];
            snprintf(name, sizeof name, "LABEL_%d", i);
            if (!(m->labels[i] = strdup(name))) return lp_error(LP_ENOMEM, "out of memory");
        }
    return LP_OK;
}

/* The decoder of a masked-LM head: the word embeddings when tied (Hugging Face's default,
 * and the usual checkpoint leaves the copy out), else its own weight; its bias under one
 * of two names. */
int lp_arch_mlm_decoder(lp_model *m, json_t *config, const char *weight, const char *bias, const char *bias2) {
    const lp_config *c = &m->cfg;
    json_t *tie = json_object_get(config, "tie_word_embeddings");
    bool tied = !(tie && json_is_false(tie));
    int wshape[2] = {c->vocab, c->d_model}, bshape[1] = {c->vocab}, rc;
    const float *w = m->tok_emb, *b;
    if (!tied && (rc = lp_model_tensor(m, weight, 2, wshape, &w))) return rc;
    m->cfg.tied_unembed = tied;
    const char *bname = lp_st_find(m->st, bias) || !lp_st_find(m->st, bias2) ? bias : bias2;
    if ((rc = lp_model_tensor(m, bname, 1, bshape, &b))) return rc;
    m->unembed = lp_linear_of(w, b, c->d_model, c->vocab, c->d_model, true);
    return LP_OK;
}

int lp_arch_norm(lp_model *m, const char *base, int d, const float **w, const float **b) {
    char wn[256], bn[256];
    snprintf(wn, sizeof wn, "%s.weight", base);
    snprintf(bn, sizeof bn, "%s.bias", base);
    if (!lp_st_find(m->st, wn)) { /* checkpoints converted from TensorFlow keep its names, which HF renames */
        char gn[256];
        snprintf(gn, sizeof gn, "%s.gamma", base);
        if (lp_st_find(m->st, gn)) {
            snprintf(wn, sizeof wn, "%s", gn);
            snprintf(bn, sizeof bn, "%s.beta", base);
        }
    }
    int rc = lp_model_vector(m, wn, d, w);
    return rc ? rc : lp_model_vector(m, bn, d, b);
}

int lp_arch_encoder_layers(lp_model *m, const char *prefix, const char *stack, const char *const parts[8]) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, rc;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < c->n_layer; l++) {
        lp_layer *L = &m->layers[l];
        char n[8][192];
        for (int i = 0; i < 8; i++) snprintf(n[i], sizeof n[i], "%s%s.%d.%s", prefix, stack, l, parts[i]);
        /* Post-norm: ln1 is the norm after attention, ln2 the one after the MLP. */
        if ((rc = lp_model_linear(m, n[0], d, d, true, &L->q)) || (rc = lp_model_linear(m, n[1], d, d, true, &L->k)) ||
            (rc = lp_model_linear(m, n[2], d, d, true, &L->v)) || (rc = lp_model_linear(m, n[3], d, d, true, &L->o)) ||
            (rc = lp_arch_norm(m, n[4], d, &L->ln1_w, &L->ln1_b)) ||
            (rc = lp_model_linear(m, n[5], d, c->d_mlp, true, &L->up)) ||
            (rc = lp_model_linear(m, n[6], c->d_mlp, d, true, &L->down)) ||
            (rc = lp_arch_norm(m, n[7], d, &L->ln2_w, &L->ln2_b)))
            return rc;
    }
    return LP_OK;
}

/* The head that cfg.head names, from the names of this family. */
static int load_head(lp_model *m, json_t *config, const bert_names *nm, const char *p, lp_mlp_kind mlm_act,
                     double eps, const char *path) {
    lp_config *c = &m->cfg;
    int d = c->d_model, rc;
    char a[192], b[208];
    if (c->head == LP_HEAD_MLM) {
        if ((rc = lp_model_linear(m, nm->mlm_dense, d, d, true, &m->head.dense)) ||
            (rc = lp_arch_norm(m, nm->mlm_ln, d, &m->head.ln_w, &m->head.ln_b)))
            return rc;
        m->head.act = lp_arch_head_act(mlm_act);
        m->head.ln_eps = (float)eps;
        return lp_arch_mlm_decoder(m, config, nm->mlm_decoder, nm->mlm_bias, nm->mlm_decoder_bias);
    }
    m->head.act = LP_HEAD_ACT_TANH;
    snprintf(a, sizeof a, "%s%s", nm->cls_dense_in_base ? p : "", nm->cls_dense);
    if (c->head == LP_HEAD_NONE) { /* the pooler when the checkpoint has one */
        snprintf(a, sizeof a, "%spooler.dense", p);
        snprintf(b, sizeof b, "%s.weight", a);
        return lp_st_find(m->st, b) ? lp_model_linear(m, a, d, d, true, &m->head.dense) : LP_OK;
    }
    if ((rc = lp_arch_labels(m, config, path)) || (rc = lp_model_linear(m, a, d, d, true, &m->head.dense)) ||
        (rc = lp_model_linear(m, nm->cls_out, d, c->n_labels, true, &m->unembed)))
        return rc;
    return LP_OK;
}

int lp_arch_bert_load(lp_model *m, json_t *config, const char *path) {
    lp_config *c = &m->cfg;
    bool roberta = strncmp(c->arch, "Roberta", 7) == 0;
    const bert_names *nm = roberta ? &ROBERTA : &BERT;
    int d, d_mlp, n_layer, n_head, vocab, n_pos, n_types, pad = 0, rc;
    double eps;
    lp_mlp_kind act;
    if ((rc = lp_cfg_int(config, "hidden_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MODEL, &d, path)) ||
        (rc = lp_cfg_int(config, "intermediate_size", LP_CFG_REQUIRED, 1, LP_MAX_D_MLP, &d_mlp, path)) ||
        (rc = lp_cfg_int(config, "num_hidden_layers", LP_CFG_REQUIRED, 1, LP_MAX_LAYERS, &n_layer, path)) ||
        (rc = lp_cfg_int(config, "num_attention_heads", LP_CFG_REQUIRED, 1, LP_MAX_HEADS, &n_head, path)) ||
        (rc = lp_cfg_int(config, "vocab_size", LP_CFG_REQUIRED, 1, LP_MAX_VOCAB, &vocab, path)) ||
        (rc = lp_cfg_int(config, "max_position_embeddings", 512, 1, LP_MAX_CTX, &n_pos, path)) ||
        (rc = lp_cfg_int(config, "type_vocab_size", 2, 1, 1 << 16, &n_types, path)) ||
        (roberta && (rc = lp_cfg_int(config, "pad_token_id", 1, 0, vocab - 1, &pad, path))) ||
        (rc = lp_cfg_positive(config, "layer_norm_eps", 1e-12, 1.0, &eps, path)) ||
        (rc = lp_arch_act(config, "hidden_act", "gelu", &act, path)))
        return rc;
    if (d % n_head) return lp_error(LP_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, d, n_head);
    const char *pet = json_string_value(json_object_get(config, "position_embedding_type"));
    if (pet && strcmp(pet, "absolute") != 0)
        return lp_error(LP_EUNSUPPORTED, "%s: position_embedding_type '%s' is not supported (loupe has absolute)", path, pet);
    json_t *dec = json_object_get(config, "is_decoder");
    if (dec && json_is_true(dec))
        return lp_error(LP_EUNSUPPORTED, "%s: is_decoder true (a causal BERT) is not supported", path);
    int offset = roberta ? pad + 1 : 0;
    if (n_pos <= offset)
        return lp_error(LP_EFORMAT, "%s: max_position_embeddings %d leaves no positions after the first %d (padding_idx "
                        "%d + 1)", path, n_pos, offset, pad);

    snprintf(c->family, sizeof c->family, roberta ? "roberta" : "bert");
    c->n_layer = n_layer;
    c->n_head = c->n_kv_head = n_head;
    c->d_model = d;
    c->d_head = d / n_head;
    c->d_mlp = d_mlp;
    c->vocab = vocab;
    c->n_ctx = n_pos - offset;
    c->norm_eps = (float)eps;
    c->norm = LP_NORM_LAYERNORM;
    c->pos = LP_POS_LEARNED;
    c->mlp = act;
    c->qkv_bias = c->mlp_bias = true;
    c->causal = false;
    c->post_norm = c->emb_norm = true;
    c->type_vocab = n_types;
    c->pos_offset = offset;
    c->pos_pad_id = pad;
    c->head = strstr(c->arch, "ForMaskedLM") || strstr(c->arch, "ForPreTraining") ? LP_HEAD_MLM
              : strstr(c->arch, "ForSequenceClassification") ? LP_HEAD_CLASSIFIER : LP_HEAD_NONE;

    const char *p = lp_st_find(m->st, nm->probe) ? nm->prefix : "";
    char n[8][192];
    snprintf(n[0], sizeof n[0], "%sembeddings.word_embeddings.weight", p);
    snprintf(n[1], sizeof n[1], "%sembeddings.position_embeddings.weight", p);
    snprintf(n[2], sizeof n[2], "%sembeddings.token_type_embeddings.weight", p);
    snprintf(n[3], sizeof n[3], "%sembeddings.LayerNorm", p);
    int we[2] = {vocab, d}, pe[2] = {n_pos, d}, te[2] = {n_types, d};
    if ((rc = lp_model_tensor(m, n[0], 2, we, &m->tok_emb)) || (rc = lp_model_tensor(m, n[1], 2, pe, &m->pos_emb)) ||
        (rc = lp_model_tensor(m, n[2], 2, te, &m->type_emb)) || (rc = lp_arch_norm(m, n[3], d, &m->emb_ln_w, &m->emb_ln_b)))
        return rc;
    static const char *const parts[8] = {"attention.self.query", "attention.self.key", "attention.self.value",
                                         "attention.output.dense", "attention.output.LayerNorm",
                                         "intermediate.dense", "output.dense", "output.LayerNorm"};
    if ((rc = lp_arch_encoder_layers(m, p, "encoder.layer", parts))) return rc;
    /* RoBERTa's MLM head applies the exact GELU whatever hidden_act says. */
    return load_head(m, config, nm, p, roberta ? LP_MLP_GELU_ERF : act, eps, path);
}
