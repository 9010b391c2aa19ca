/* T5 and mT5 from Hugging Face checkpoints (T5ForConditionalGeneration,
 * MT5ForConditionalGeneration, T5EncoderModel, MT5EncoderModel; modeling_t5.py): two
 * pre-norm stacks with T5LayerNorm (RMS, no bias), no 1/sqrt(d_kv) in the scores, a relative
 * position bias per head that layer 0 of each stack holds and every layer reuses, a ReLU
 * or gated-GELU feed-forward without biases, heads x d_kv free of d_model. The decoder is
 * the model loupe runs (causal, cross-attention in every layer, the lm head); the encoder is
 * a model of its own in m->encoder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "arch/model_impl.h"

/* feed_forward_proj "ACT" or "gated-ACT" (T5Config.__init__), where a dense_act_fn or
 * is_gated_act written in config.json wins, as PretrainedConfig sets leftover keys after
 * T5Config's own; "gated-gelu" means the tanh GELU ("gelu_new", for backwards compatibility). */
static int ff_kind(json_t *config, const char *path, lp_mlp_kind *out) {
    const char *ffp = json_string_value(json_object_get(config, "feed_forward_proj"));
    if (!ffp) ffp = "relu";
    const char *dash = strchr(ffp, '-');
    bool gated = dash && strncmp(ffp, "gated", (size_t)(dash - ffp)) == 0 && dash - ffp == 5;
    if ((dash && !gated) || (dash && strchr(dash + 1, '-')))
        return lp_error(LP_EFORMAT, "%s: feed_forward_proj '%s' is not 'ACT' or 'gated-ACT'", path, ffp);
    const char *act = dash ? dash + 1 : ffp;
    if (strcmp(ffp, "gated-gelu") == 0) act = "gelu_new";
    const char *dense = json_string_value(json_object_get(config, "dense_act_fn"));
    if (dense) act = dense;
    json_t *g = json_object_get(config, "is_gated_act");
    if (json_is_boolean(g)) gated = json_is_true(g);
    bool tanh_gelu = strcmp(act, "gelu_new") == 0 || strcmp(act, "gelu_pytorch_tanh") == 0;
    if (gated && tanh_gelu) *out = LP_MLP_GEGLU;
    else if (gated && strcmp(act, "silu") == 0) *out = LP_MLP_SWIGLU;
    else if (!gated && strcmp(act, "relu") == 0) *out = LP_MLP_RELU;
    else if (!gated && strcmp(act, "gelu") == 0) *out = LP_MLP_GELU_ERF;
    else if (!gated && tanh_gelu) *out = LP_MLP_GELU_TANH;
    else
        return lp_error(LP_EUNSUPPORTED, "%s: a %s feed-forward with activation '%s' is not supported (loupe has "
                        "relu, gelu, gelu_new, gated-gelu, gated-silu)", path, gated ? "gated" : "plain", act);
    return LP_OK;
}

/* The token embedding a stack reads: `shared`, or its own tied copy under STACK.embed_tokens
 * (save_pretrained may keep either name). */
static int embedding(lp_model *m, const char *stack, const float **out) {
    const lp_config *c = &m->cfg;
    int shape[2] = {c->vocab, c->d_model};
    char own[64];
    snprintf(own, sizeof own, "%s.embed_tokens.weight", stack);
    return lp_model_tensor(m, lp_st_find(m->st, "shared.weight") ? "shared.weight" : own, 2, shape, out);
}

/* One stack's layers, final norm and relative bias table from tensors STACK.block.L.layer.K. */
static int load_stack(lp_model *m, const char *stack) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, q = c->n_head * c->d_head, dm = c->d_mlp, rc;
    char n[160];
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return lp_error(LP_ENOMEM, "out of memory");
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    for (int l = 0; l < c->n_layer; l++) {
        lp_layer *L = &m->layers[l];
        int ff = c->cross_attn ? 2 : 1;
        if ((rc = lp_model_vector(m, NAME("%s.block.%d.layer.0.layer_norm.weight", stack, l), d, &L->ln1_w)) ||
            (rc = lp_model_linear(m, NAME("%s.block.%d.layer.0.SelfAttention.q", stack, l), d, q, false, &L->q)) ||
            (rc = lp_model_linear(m, NAME("%s.block.%d.layer.0.SelfAttention.k", stack, l), d, q, false, &L->k)) ||
            (rc = lp_model_linear(m, NAME("%s.block.%d.layer.0.SelfAttention.v", stack, l), d, q, false, &L->v)) ||
            (rc = lp_model_linear(m, NAME("%s.block.%d.layer.0.SelfAttention.o", stack, l), q, d, false, &L->o)) ||
            (rc = lp_model_vector(m, NAME("%s.block.%d.layer.%d.layer_norm.weight", stack, l, ff), d, &L->ln2_w)) ||
            (rc = lp_model_linear(m, NAME("%s.block.%d.layer.%d.DenseReluDense.wo", stack, l, ff), dm, d, false,
                                  &L->down)))
            return rc;
        if (lp_mlp_gated(c)) {
            if ((rc = lp_model_linear(m, NAME("%s.block.%d.layer.%d.DenseReluDense.wi_0", stack, l, ff), d, dm, false,
                                      &L->gate)) ||
                (rc = lp_model_linear(m, NAME("%s.block.%d.layer.%d.DenseReluDense.wi_1", stack, l, ff), d, dm, false,
                                      &L->up)))
                return rc;
        } else if ((rc = lp_model_linear(m, NAME("%s.block.%d.layer.%d.DenseReluDense.wi", stack, l, ff), d, dm, false,
                                         &L->up))) {
            return rc;
        }
        if (c->cross_attn &&
            ((rc = lp_model_vector(m, NAME("%s.block.%d.layer.1.layer_norm.weight", stack, l), d, &L->lnx_w)) ||
             (rc = lp_model_linear(m, NAME("%s.block.%d.layer.1.EncDecAttention.q", stack, l), d, q, false, &L->xq)) ||
             (rc = lp_model_linear(m, NAME("%s.block.%d.layer.1.EncDecAttention.k", stack, l), d, q, false, &L->xk)) ||
             (rc = lp_model_linear(m, NAME("%s.block.%d.layer.1.EncDecAttention.v", stack, l), d, q, false, &L->xv)) ||
             (rc = lp_model_linear(m, NAME("%s.block.%d.layer.1.EncDecAttention.o", stack, l), q, d, false, &L->xo))))
            return rc;
    }
    int bshape[2] = {c->rel_buckets, c->n_head};
    if ((rc = lp_model_tensor(m, NAME("%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", stack), 2,
                              bshape, &m->rel_bias)) ||
        (rc = lp_model_vector(m, NAME("%s.final_layer_norm.weight", stack), d, &m->lnf_w)))
        return rc;
#undef NAME
    return embedding(m, stack, &m->tok_emb);
}

/* The sizes both stacks share, from T5Config's keys and defaults. */
static int read_config(lp_config *c, json_t *config, const char *path, int *n_dec) {
    int d, d_kv, d_ff, n_layer, n_head, vocab, n_ctx, buckets, max_dist, pad, eos, start, q;
    double eps;
    int rc;
    if ((rc = lp_cfg_int(config, "vocab_size", LP_CFG_REQUIRED, 1, LP_MAX_VOCAB, &vocab, path)) ||
        (rc = lp_cfg_int(config, "d_model", 512, 1, LP_MAX_D_MODEL, &d, path)) ||
        (rc = lp_cfg_int(config, "d_kv", 64, 1, LP_MAX_D_HEAD, &d_kv, path)) ||
        (rc = lp_cfg_int(config, "d_ff", 2048, 1, LP_MAX_D_MLP, &d_ff, path)) ||
        (rc = lp_cfg_int(config, "num_layers", 6, 1, LP_MAX_LAYERS, &n_layer, path)) ||
        (rc = lp_cfg_int(config, "num_decoder_layers", n_layer, 1, LP_MAX_LAYERS, n_dec, path)) ||
        (rc = lp_cfg_int(config, "num_heads", 8, 1, LP_MAX_HEADS, &n_head, path)) ||
        (rc = lp_cfg_mul(n_head, d_kv, "the attention width num_heads * d_kv", &q, path)) ||
        (rc = lp_cfg_int(config, "n_positions", 512, 1, LP_MAX_CTX, &n_ctx, path)) ||
        /* _relative_position_bucket halves the buckets twice (bidirectional) and takes the log
         * of distance / max_exact: at least 4 buckets, and a max distance past max_exact */
        (rc = lp_cfg_int(config, "relative_attention_num_buckets", 32, 4, 1 << 16, &buckets, path)) ||
        (rc = lp_cfg_int(config, "relative_attention_max_distance", 128, buckets / 2 + 1, LP_MAX_CTX, &max_dist,
                         path)) ||
        (rc = lp_cfg_int(config, "pad_token_id", 0, 0, vocab - 1, &pad, path)) ||
        (rc = lp_cfg_int(config, "eos_token_id", 1, 0, vocab - 1, &eos, path)) ||
        (rc = lp_cfg_int(config, "decoder_start_token_id", pad, 0, vocab - 1, &start, path)) ||
        (rc = lp_cfg_positive(config, "layer_norm_epsilon", 1e-6, 1.0, &eps, path)) ||
        (rc = ff_kind(config, path, &c->mlp)))
        return rc;
    (void)q;
    c->n_layer = n_layer;
    c->n_head = c->n_kv_head = n_head;
    c->d_model = d;
    c->d_head = d_kv;
    c->d_mlp = d_ff;
    c->vocab = vocab;
    c->n_ctx = n_ctx;
    c->norm_eps = (float)eps;
    c->norm = LP_NORM_RMSNORM;
    c->pos = LP_POS_RELATIVE;
    c->rel_buckets = buckets;
    c->rel_max_distance = max_dist;
    c->unscaled_attn = true;
    c->start_id = start;
    c->eos_id = eos;
    return LP_OK;
}

int lp_arch_t5_load(lp_model *m, json_t *config, const char *path) {
    lp_config *c = &m->cfg;
    int n_dec, rc;
    if ((rc = read_config(c, config, path, &n_dec))) return rc;
    snprintf(c->family, sizeof c->family, "t5");
    bool encoder_only = strstr(c->arch, "EncoderModel") != NULL;
    c->causal = false;
    c->head = LP_HEAD_NONE;
    if (encoder_only) return load_stack(m, "encoder");

    /* The encoder: a model of its own reading this model's file. */
    lp_model *e = calloc(1, sizeof *e);
    if (!e) return lp_error(LP_ENOMEM, "out of memory");
    m->encoder = e;
    e->cfg = *c;
    snprintf(e->cfg.arch, sizeof e->cfg.arch, "%s (encoder)", c->arch);
    e->st = m->st;
    memcpy(e->weights, m->weights, sizeof e->weights);
    rc = load_stack(e, "encoder");
    e->st = NULL; /* the decoder's: freed once, with m */
    if (rc) return rc;

    c->n_layer = n_dec;
    c->enc_layers = e->cfg.n_layer;
    c->causal = true;
    c->cross_attn = true;
    c->head = LP_HEAD_LM;
    if ((rc = load_stack(m, "decoder"))) return rc;
    json_t *tie = json_object_get(config, "tie_word_embeddings");
    c->tied_unembed = !json_is_false(tie); /* PretrainedConfig's default is true; MT5's config says false */
    if (c->tied_unembed) {
        /* T5ForConditionalGeneration.forward scales the decoder's output by d_model^-0.5
         * before the tied lm_head: folded into the final norm's weight, so that ln_final is
         * what the unembedding reads, as for every other model. */
        float *w = malloc((size_t)c->d_model * sizeof *w);
        if (!w) return lp_error(LP_ENOMEM, "out of memory");
        if ((rc = lp_model_own(m, w))) return rc; /* it frees w on failure */
        double s = 1.0 / sqrt((double)c->d_model);
        for (int j = 0; j < c->d_model; j++) w[j] = (float)(m->lnf_w[j] * s);
        m->lnf_w = w;
        m->unembed = lp_linear_of(m->tok_emb, NULL, c->d_model, c->vocab, c->d_model, true);
    } else if ((rc = lp_model_linear(m, "lm_head", c->d_model, c->vocab, false, &m->unembed))) {
        return rc;
    }
    return LP_OK;
}
