/* mkmodel: writes a random checkpoint in Hugging Face layout, for tests and `make bench`.
 *   mkmodel DIR --arch gpt2|llama|mistral|qwen2|neox|bert|t5 [--layers N] [--d-model D] [--heads H]
 *          [--kv-heads K] [--d-mlp M] [--vocab V] [--ctx C] [--dtype f32|f16|bf16]
 *          [--round f16|bf16] [--seed S] [--std X] [--tied|--untied] [--shards N]
 *          [--prefix transformer.] [--gpt2-tokenizer DIR] [--labels N]
 *          [--gated] [--buckets B] [--max-distance D] [--rotary-pct P] [--sequential]
 * --gpt2-tokenizer copies encoder.json/vocab.bpe (or vocab.json/merges.txt) from DIR.
 * --arch bert writes a BertForSequenceClassification with N labels (default 2; F32 only)
 * and a vocab.txt laid out as bert-base-uncased's ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
 * [MASK] 103), for the encoder bench.
 * --arch t5 writes a T5ForConditionalGeneration with N encoder and N decoder layers, d_kv =
 * d_model / heads, --buckets B (32) and --max-distance D (128); v1.0 (ReLU, tied embeddings)
 * unless --gated (v1.1: gated GELU, untied lm_head); F32, no tokenizer.
 * --arch neox writes a GPTNeoXForCausalLM (Pythia's layout): --rotary-pct P of each head
 * rotated (0.25), parallel residual unless --sequential, untied embed_out; F32.
 * --arch gemma2 writes a Gemma2ForCausalLM: --head-dim N (default d_model / heads),
 * --window W (4096), --query-scalar S (256), --attn-cap C (50), --final-cap C (30; 0 for
 * none: null), layer_types alternating sliding/full unless --no-layer-types; tied; F32, or
 * BF16 with --dtype bf16. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "loupe/checkpoint.h"
#include "loupe/dtype.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/generate.h"
#include "loupe/safetensors.h"

static int copy_file(const char *from, const char *to) {
    char *buf;
    size_t len;
    int rc = lp_file_read_new(from, &buf, &len);
    if (rc) return rc;
    rc = lp_file_write(to, buf, len);
    free(buf);
    return rc;
}

/* ---- Encoders and encoder-decoders (lp_checkpoint_random writes decoders only) ---- */

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    float mean; /* values: mean + std * N(0, 1); norm weights near 1 */
} rand_tensor;

#define T2(mean_, d0, d1, ...) (t[n] = (rand_tensor){"", (d1) ? 2 : 1, {(d0), (d1)}, (mean_)}, \
                                snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__), n++)

static int bert_tensors(rand_tensor *t, const lp_config *c, int labels) {
    int n = 0;
    int64_t d = c->d_model, m = c->d_mlp;
    T2(0, c->vocab, d, "bert.embeddings.word_embeddings.weight");
    T2(0, c->n_ctx, d, "bert.embeddings.position_embeddings.weight");
    T2(0, 2, d, "bert.embeddings.token_type_embeddings.weight");
    T2(1, d, 0, "bert.embeddings.LayerNorm.weight");
    T2(0, d, 0, "bert.embeddings.LayerNorm.bias");
    static const char *const lin[6] = {"attention.self.query", "attention.self.key", "attention.self.value",
                                       "attention.output.dense", "intermediate.dense", "output.dense"};
    for (int l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < 6; k++) {
            int64_t out = k == 4 ? m : d, in = k == 5 ? m : d;
            T2(0, out, in, "bert.encoder.layer.%d.%s.weight", l, lin[k]);
            T2(0, out, 0, "bert.encoder.layer.%d.%s.bias", l, lin[k]);
        }
        T2(1, d, 0, "bert.encoder.layer.%d.attention.output.LayerNorm.weight", l);
        T2(0, d, 0, "bert.encoder.layer.%d.attention.output.LayerNorm.bias", l);
        T2(1, d, 0, "bert.encoder.layer.%d.output.LayerNorm.weight", l);
        T2(0, d, 0, "bert.encoder.layer.%d.output.LayerNorm.bias", l);
    }
    T2(0, d, d, "bert.pooler.dense.weight");
    T2(0, d, 0, "bert.pooler.dense.bias");
    T2(0, labels, d, "classifier.weight");
    T2(0, labels, 0, "classifier.bias");
    return n;
}

/* T5ForConditionalGeneration's tensors as modeling_t5.py names them: n_layer encoder and
 * decoder blocks, d_kv = d_model / heads, the relative bias table in block 0 of each stack;
 * gated (v1.1: wi_0, wi_1, an untied lm_head) or not (v1.0: wi, tied). */
static int t5_tensors(rand_tensor *t, const lp_config *c, int gated) {
    int n = 0;
    int64_t d = c->d_model, q = (int64_t)c->n_head * c->d_head, m = c->d_mlp;
    T2(0, c->vocab, d, "shared.weight");
    static const char *const stacks[2] = {"encoder", "decoder"};
    for (int s = 0; s < 2; s++) {
        const char *st = stacks[s];
        for (int l = 0; l < c->n_layer; l++) {
            T2(1, d, 0, "%s.block.%d.layer.0.layer_norm.weight", st, l);
            for (const char *p = "qkvo"; *p; p++)
                T2(0, *p == 'o' ? d : q, *p == 'o' ? q : d, "%s.block.%d.layer.0.SelfAttention.%c.weight", st, l, *p);
            if (l == 0) T2(0, c->rel_buckets, c->n_head, "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", st);
            int ff = s ? 2 : 1;
            if (s) {
                T2(1, d, 0, "decoder.block.%d.layer.1.layer_norm.weight", l);
                for (const char *p = "qkvo"; *p; p++)
                    T2(0, *p == 'o' ? d : q, *p == 'o' ? q : d, "decoder.block.%d.layer.1.EncDecAttention.%c.weight", l, *p);
            }
            T2(1, d, 0, "%s.block.%d.layer.%d.layer_norm.weight", st, l, ff);
            if (gated) {
                T2(0, m, d, "%s.block.%d.layer.%d.DenseReluDense.wi_0.weight", st, l, ff);
                T2(0, m, d, "%s.block.%d.layer.%d.DenseReluDense.wi_1.weight", st, l, ff);
            } else {
                T2(0, m, d, "%s.block.%d.layer.%d.DenseReluDense.wi.weight", st, l, ff);
            }
            T2(0, d, m, "%s.block.%d.layer.%d.DenseReluDense.wo.weight", st, l, ff);
        }
        T2(1, d, 0, "%s.final_layer_norm.weight", st);
    }
    if (gated) T2(0, c->vocab, d, "lm_head.weight");
    return n;
}
/* GPTNeoXForCausalLM's tensors as modeling_gpt_neox.py names them (query_key_value's rows
 * per head [q | k | v], which random values do not show but the loader must undo). */
static int neox_tensors(rand_tensor *t, const lp_config *c) {
    int n = 0;
    int64_t d = c->d_model, m = c->d_mlp;
    T2(0, c->vocab, d, "gpt_neox.embed_in.weight");
    for (int l = 0; l < c->n_layer; l++) {
        T2(1, d, 0, "gpt_neox.layers.%d.input_layernorm.weight", l);
        T2(0, d, 0, "gpt_neox.layers.%d.input_layernorm.bias", l);
        T2(0, 3 * d, d, "gpt_neox.layers.%d.attention.query_key_value.weight", l);
        T2(0, 3 * d, 0, "gpt_neox.layers.%d.attention.query_key_value.bias", l);
        T2(0, d, d, "gpt_neox.layers.%d.attention.dense.weight", l);
        T2(0, d, 0, "gpt_neox.layers.%d.attention.dense.bias", l);
        T2(1, d, 0, "gpt_neox.layers.%d.post_attention_layernorm.weight", l);
        T2(0, d, 0, "gpt_neox.layers.%d.post_attention_layernorm.bias", l);
        T2(0, m, d, "gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", l);
        T2(0, m, 0, "gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", l);
        T2(0, d, m, "gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", l);
        T2(0, d, 0, "gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", l);
    }
    T2(1, d, 0, "gpt_neox.final_layer_norm.weight");
    T2(0, d, 0, "gpt_neox.final_layer_norm.bias");
    T2(0, c->vocab, d, "embed_out.weight");
    return n;
}
/* Gemma2ForCausalLM's tensors as modeling_gemma2.py names them. Its RMSNorms multiply by
 * (1 + weight): their weights are drawn around 0. */
static int gemma2_tensors(rand_tensor *t, const lp_config *c) {
    int n = 0;
    int64_t d = c->d_model, m = c->d_mlp, q = (int64_t)c->n_head * c->d_head, kv = (int64_t)c->n_kv_head * c->d_head;
    T2(0, c->vocab, d, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layer; l++) {
        T2(0, d, 0, "model.layers.%d.input_layernorm.weight", l);
        T2(0, q, d, "model.layers.%d.self_attn.q_proj.weight", l);
        T2(0, kv, d, "model.layers.%d.self_attn.k_proj.weight", l);
        T2(0, kv, d, "model.layers.%d.self_attn.v_proj.weight", l);
        T2(0, d, q, "model.layers.%d.self_attn.o_proj.weight", l);
        T2(0, d, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        T2(0, d, 0, "model.layers.%d.pre_feedforward_layernorm.weight", l);
        T2(0, m, d, "model.layers.%d.mlp.gate_proj.weight", l);
        T2(0, m, d, "model.layers.%d.mlp.up_proj.weight", l);
        T2(0, d, m, "model.layers.%d.mlp.down_proj.weight", l);
        T2(0, d, 0, "model.layers.%d.post_feedforward_layernorm.weight", l);
    }
    T2(0, d, 0, "model.norm.weight");
    return n;
}
#undef T2

/* Writes DIR/model.safetensors (F32) with the n tensors of t, values drawn from seed and
 * rounded to round_to (--round: F32 values that an F16 or BF16 file holds exactly). */
static int write_random(const char *dir, rand_tensor *t, int n, uint64_t seed, float std, lp_dtype round_to) {
    if (mkdir(dir, 0755) != 0) return lp_error(LP_EIO, "%s: cannot create", dir);
    lp_st_tensor *ts = calloc((size_t)n, sizeof *ts);
    if (!ts) return lp_error(LP_ENOMEM, "out of memory");
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)t[i].shape[0] * (t[i].ndim == 2 ? (size_t)t[i].shape[1] : 1);
    float *data = malloc(total * sizeof *data);
    if (!data) {
        free(ts);
        return lp_error(LP_ENOMEM, "out of memory for %zu parameters", total);
    }
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)t[i].shape[0] * (t[i].ndim == 2 ? (size_t)t[i].shape[1] : 1);
        ts[i] = (lp_st_tensor){.name = t[i].name, .dtype = LP_DT_F32, .ndim = t[i].ndim, .data = data + at,
                               .nbytes = k * sizeof *data, .shape = {t[i].shape[0], t[i].shape[1]}};
        for (size_t j = 0; j < k; j++) { /* Box-Muller */
            double u1 = fmax(lp_rng_uniform(&rng), 1e-300), u2 = lp_rng_uniform(&rng);
            float x = t[i].mean + std * (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
            data[at + j] = round_to == LP_DT_F16    ? lp_f16_to_f32(lp_f32_to_f16(x))
                           : round_to == LP_DT_BF16 ? lp_bf16_to_f32(lp_f32_to_bf16(x))
                                                    : x;
        }
        at += k;
    }
    char path[4096];
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    int rc = lp_path_join(path, sizeof path, dir, "model.safetensors");
    if (!rc) rc = lp_st_write(path, ts, n, keys, vals, 1);
    free(data), free(ts);
    return rc;
}

static int write_config(const char *dir, json_t *cj) {
    char path[4096];
    int rc = lp_path_join(path, sizeof path, dir, "config.json");
    if (!rc && json_dump_file(cj, path, JSON_INDENT(2)) != 0) rc = lp_error(LP_EIO, "%s: cannot write", path);
    json_decref(cj);
    return rc;
}

static int write_bert(const char *dir, const lp_config *c, int labels, uint64_t seed, float std, lp_dtype round_to) {
    rand_tensor *t = malloc((size_t)(16 * c->n_layer + 16) * sizeof *t);
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    int rc = write_random(dir, t, bert_tensors(t, c, labels), seed, std, round_to);
    free(t);
    if (rc) return rc;
    json_t *id2label = json_object();
    for (int i = 0; i < labels; i++) {
        char k[16], v[32];
        snprintf(k, sizeof k, "%d", i);
        snprintf(v, sizeof v, "LABEL_%d", i);
        json_object_set_new(id2label, k, json_string(v));
    }
    json_t *cj = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:s,s:i,s:s,s:o}", "architectures",
                           "BertForSequenceClassification", "model_type", "bert", "hidden_size", c->d_model,
                           "intermediate_size", c->d_mlp, "num_hidden_layers", c->n_layer, "num_attention_heads",
                           c->n_head, "vocab_size", c->vocab, "max_position_embeddings", c->n_ctx, "type_vocab_size",
                           2, "layer_norm_eps", 1e-12, "hidden_act", "gelu", "pad_token_id", 0, "torch_dtype",
                           "float32", "id2label", id2label);
    if ((rc = write_config(dir, cj))) return rc;
    /* bert-base-uncased's special ids; the other entries are placeholders. */
    char path[4096];
    FILE *f = !lp_path_join(path, sizeof path, dir, "vocab.txt") ? fopen(path, "w") : NULL;
    if (!f) return lp_error(LP_EIO, "%s: cannot write", path);
    for (int i = 0; i < c->vocab; i++) {
        static const char *const special[] = {"[UNK]", "[CLS]", "[SEP]", "[MASK]"};
        if (i == 0) fputs("[PAD]\n", f);
        else if (i < 100) fprintf(f, "[unused%d]\n", i - 1);
        else if (i < 104) fprintf(f, "%s\n", special[i - 100]);
        else fprintf(f, "w%d\n", i);
    }
    if (fclose(f) != 0) rc = lp_error(LP_EIO, "%s: cannot write", path);
    return rc;
}

/* A T5ForConditionalGeneration without a tokenizer (runs take ids): pad 0, eos 1, the
 * decoder starting at pad, as t5-small's config.json says. */
static int write_t5(const char *dir, const lp_config *c, int gated, uint64_t seed, float std, lp_dtype round_to) {
    rand_tensor *t = malloc((size_t)(32 * c->n_layer + 8) * sizeof *t);
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    int rc = write_random(dir, t, t5_tensors(t, c, gated), seed, std, round_to);
    free(t);
    if (rc) return rc;
    json_t *cj = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:s,s:b,s:i,s:i,s:i,s:s}",
                           "architectures", "T5ForConditionalGeneration", "model_type", "t5", "d_model", c->d_model,
                           "d_kv", c->d_head, "d_ff", c->d_mlp, "num_layers", c->n_layer, "num_decoder_layers",
                           c->n_layer, "num_heads", c->n_head, "vocab_size", c->vocab,
                           "relative_attention_num_buckets", c->rel_buckets, "relative_attention_max_distance",
                           c->rel_max_distance, "n_positions", c->n_ctx, "layer_norm_epsilon", 1e-6,
                           "feed_forward_proj", gated ? "gated-gelu" : "relu", "tie_word_embeddings", !gated,
                           "pad_token_id", 0, "eos_token_id", 1, "decoder_start_token_id", 0, "torch_dtype",
                           "float32");
    return write_config(dir, cj);
}

/* A GPTNeoXForCausalLM as a Pythia config.json spells it (rotary_pct, rotary_emb_base). */
static int write_neox(const char *dir, const lp_config *c, double rotary_pct, uint64_t seed, float std,
                      lp_dtype round_to) {
    rand_tensor *t = malloc((size_t)(12 * c->n_layer + 8) * sizeof *t);
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    int rc = write_random(dir, t, neox_tensors(t, c), seed, std, round_to);
    free(t);
    if (rc) return rc;
    json_t *cj = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:s,s:b,s:b,s:b,s:i,s:i,s:s}",
                           "architectures", "GPTNeoXForCausalLM", "model_type", "gpt_neox", "hidden_size",
                           c->d_model, "intermediate_size", c->d_mlp, "num_hidden_layers", c->n_layer,
                           "num_attention_heads", c->n_head, "vocab_size", c->vocab, "max_position_embeddings",
                           c->n_ctx, "rotary_pct", rotary_pct, "rotary_emb_base", (double)c->rope_theta,
                           "layer_norm_eps", 1e-5, "hidden_act", "gelu", "use_parallel_residual", c->parallel_block,
                           "tie_word_embeddings", 0, "attention_bias", 1, "bos_token_id", 0, "eos_token_id", 0,
                           "torch_dtype", "float32");
    return write_config(dir, cj);
}

/* Gemma 2's knobs for --arch gemma2. */
typedef struct {
    double query_scalar, attn_cap, final_cap; /* caps 0: written as null (none) */
    int window;
    int layer_types;                          /* write layer_types (newer configs); 0: leave it out */
} gemma2_opts;

/* DIR/model.safetensors (F32) rewritten as BF16, rounded to nearest even. */
static int rewrite_bf16(const char *dir) {
    char path[4096];
    lp_safetensors *st = NULL;
    int rc = lp_path_join(path, sizeof path, dir, "model.safetensors");
    if (!rc) rc = lp_st_open(&st, path);
    if (rc) return rc;
    int n = lp_st_count(st);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += lp_st_at(st, i)->nbytes / 4;
    lp_st_tensor *ts = calloc((size_t)n, sizeof *ts);
    uint16_t *half = malloc((total ? total : 1) * sizeof *half);
    if (!ts || !half) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0, at = 0; !rc && i < n; i++) {
        const lp_st_tensor *t = lp_st_at(st, i);
        size_t k = t->nbytes / 4;
        for (size_t j = 0; j < k; j++) half[at + j] = lp_f32_to_bf16(((const float *)t->data)[j]);
        ts[i] = *t;
        ts[i].dtype = LP_DT_BF16;
        ts[i].data = half + at;
        ts[i].nbytes = k * sizeof *half;
        at += (int)k;
    }
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    if (!rc) rc = lp_st_write(path, ts, n, keys, vals, 1); /* the mapping stays valid: the file is replaced */
    free(ts), free(half);
    lp_st_free(st);
    return rc;
}

/* A Gemma2ForCausalLM config.json as transformers writes one (tied embeddings); BF16 weights
 * with dtype LP_DT_BF16. */
static int write_gemma2(const char *dir, const lp_config *c, const gemma2_opts *g, lp_dtype dtype, uint64_t seed,
                        float std, lp_dtype round_to) {
    rand_tensor *t = malloc((size_t)(11 * c->n_layer + 4) * sizeof *t);
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    int rc = write_random(dir, t, gemma2_tensors(t, c), seed, std, round_to);
    free(t);
    if (!rc && dtype == LP_DT_BF16) rc = rewrite_bf16(dir);
    if (rc) return rc;
    json_t *cj = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:s,s:f,s:i,s:b,s:b,s:i,s:i,s:i,s:s}",
                           "architectures", "Gemma2ForCausalLM", "model_type", "gemma2", "hidden_size", c->d_model,
                           "intermediate_size", c->d_mlp, "num_hidden_layers", c->n_layer, "num_attention_heads",
                           c->n_head, "num_key_value_heads", c->n_kv_head, "head_dim", c->d_head, "vocab_size",
                           c->vocab, "max_position_embeddings", c->n_ctx, "rms_norm_eps", 1e-6, "rope_theta",
                           (double)c->rope_theta, "hidden_activation", "gelu_pytorch_tanh", "query_pre_attn_scalar",
                           g->query_scalar, "sliding_window", g->window, "tie_word_embeddings", 1, "attention_bias", 0,
                           "pad_token_id", 0, "bos_token_id", 2, "eos_token_id", 1, "torch_dtype",
                           dtype == LP_DT_BF16 ? "bfloat16" : "float32");
    json_object_set_new(cj, "attn_logit_softcapping", g->attn_cap > 0 ? json_real(g->attn_cap) : json_null());
    json_object_set_new(cj, "final_logit_softcapping", g->final_cap > 0 ? json_real(g->final_cap) : json_null());
    if (g->layer_types) {
        json_t *types = json_array();
        for (int l = 0; l < c->n_layer; l++)
            json_array_append_new(types, json_string((l + 1) % 2 ? "sliding_attention" : "full_attention"));
        json_object_set_new(cj, "layer_types", types);
    }
    return write_config(dir, cj);
}

static lp_dtype dtype_arg(const char *s) {
    if (strcmp(s, "f32") == 0) return LP_DT_F32;
    if (strcmp(s, "f16") == 0) return LP_DT_F16;
    if (strcmp(s, "bf16") == 0) return LP_DT_BF16;
    fprintf(stderr, "error: dtype '%s': use f32, f16 or bf16\n", s);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: mkmodel DIR --arch gpt2|llama|mistral|qwen2|neox|bert|t5 [options] (see the source)\n");
        return 2;
    }
    const char *dir = argv[1], *arch = "gpt2", *tokdir = NULL;
    lp_random_spec sp = {.dtype = LP_DT_F32, .round_to = LP_DT_F32, .seed = 1, .std = 0.02f, .shards = 1};
    lp_config *c = &sp.cfg;
    c->n_layer = 2, c->d_model = 32, c->n_head = 4, c->n_kv_head = 0, c->d_mlp = 0, c->vocab = 96, c->n_ctx = 64;
    c->rope_theta = 10000.0f;
    c->rel_buckets = 32, c->rel_max_distance = 128;
    int tied = -1, labels = 2, gated = 0;
    double rotary_pct = 0.25;
    int sequential = 0, head_dim = 0;
    gemma2_opts g2 = {256.0, 50.0, 30.0, 4096, 1};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL() (v ? (i++, v) : (fprintf(stderr, "error: %s needs a value\n", a), exit(2), ""))
        if (!strcmp(a, "--arch")) arch = VAL();
        else if (!strcmp(a, "--layers")) c->n_layer = atoi(VAL());
        else if (!strcmp(a, "--d-model")) c->d_model = atoi(VAL());
        else if (!strcmp(a, "--heads")) c->n_head = atoi(VAL());
        else if (!strcmp(a, "--kv-heads")) c->n_kv_head = atoi(VAL());
        else if (!strcmp(a, "--d-mlp")) c->d_mlp = atoi(VAL());
        else if (!strcmp(a, "--vocab")) c->vocab = atoi(VAL());
        else if (!strcmp(a, "--ctx")) c->n_ctx = atoi(VAL());
        else if (!strcmp(a, "--dtype")) sp.dtype = dtype_arg(VAL());
        else if (!strcmp(a, "--round")) sp.round_to = dtype_arg(VAL());
        else if (!strcmp(a, "--seed")) sp.seed = strtoull(VAL(), NULL, 10);
        else if (!strcmp(a, "--std")) sp.std = strtof(VAL(), NULL);
        else if (!strcmp(a, "--shards")) sp.shards = atoi(VAL());
        else if (!strcmp(a, "--prefix")) sp.gpt2_prefix = VAL();
        else if (!strcmp(a, "--rope-theta")) c->rope_theta = strtof(VAL(), NULL);
        else if (!strcmp(a, "--gpt2-tokenizer")) tokdir = VAL();
        else if (!strcmp(a, "--tied")) tied = 1;
        else if (!strcmp(a, "--untied")) tied = 0;
        else if (!strcmp(a, "--labels")) labels = atoi(VAL());
        else if (!strcmp(a, "--gated")) gated = 1;
        else if (!strcmp(a, "--buckets")) c->rel_buckets = atoi(VAL());
        else if (!strcmp(a, "--max-distance")) c->rel_max_distance = atoi(VAL());
        else if (!strcmp(a, "--rotary-pct")) rotary_pct = strtod(VAL(), NULL);
        else if (!strcmp(a, "--sequential")) c->parallel_block = false, sequential = 1;
        else if (!strcmp(a, "--head-dim")) head_dim = atoi(VAL());
        else if (!strcmp(a, "--window")) g2.window = atoi(VAL());
        else if (!strcmp(a, "--query-scalar")) g2.query_scalar = strtod(VAL(), NULL);
        else if (!strcmp(a, "--attn-cap")) g2.attn_cap = strtod(VAL(), NULL);
        else if (!strcmp(a, "--final-cap")) g2.final_cap = strtod(VAL(), NULL);
        else if (!strcmp(a, "--no-layer-types")) g2.layer_types = 0;
        else {
            fprintf(stderr, "error: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (c->n_head < 1 || (c->d_model % c->n_head && !head_dim)) {
        fprintf(stderr, "error: --d-model must be a multiple of --heads\n");
        return 2;
    }
    if (!c->n_kv_head) c->n_kv_head = c->n_head;
    c->d_head = c->d_model / c->n_head;
    if (!strcmp(arch, "bert")) {
        if (!c->d_mlp) c->d_mlp = 4 * c->d_model;
        if (labels < 1 || c->vocab < 104) {
            fprintf(stderr, "error: --arch bert needs --labels >= 1 and --vocab >= 104 (its special tokens)\n");
            return 2;
        }
        if (write_bert(dir, c, labels, sp.seed, sp.std, sp.round_to)) {
            fprintf(stderr, "error: %s\n", lp_errmsg());
            return 1;
        }
        return 0;
    }
    if (!strcmp(arch, "t5")) {
        if (!c->d_mlp) c->d_mlp = 4 * c->d_model;
        if (c->rel_buckets < 4 || c->rel_max_distance <= c->rel_buckets / 2) {
            fprintf(stderr, "error: --arch t5 needs --buckets >= 4 and --max-distance above half of it\n");
            return 2;
        }
        if (write_t5(dir, c, gated, sp.seed, sp.std, sp.round_to)) {
            fprintf(stderr, "error: %s\n", lp_errmsg());
            return 1;
        }
        return 0;
    }
    int rc;
    if (!strcmp(arch, "gemma2")) {
        if (!c->d_mlp) c->d_mlp = 4 * c->d_model;
        if (head_dim > 0) c->d_head = head_dim;
        if (c->n_head % c->n_kv_head || g2.window < 1 || g2.query_scalar <= 0) {
            fprintf(stderr, "error: --arch gemma2 needs --heads a multiple of --kv-heads, --window >= 1 and "
                    "--query-scalar > 0\n");
            return 2;
        }
        if (sp.dtype != LP_DT_F32 && sp.dtype != LP_DT_BF16) {
            fprintf(stderr, "error: --arch gemma2 writes f32 or bf16\n");
            return 2;
        }
        rc = write_gemma2(dir, c, &g2, sp.dtype, sp.seed, sp.std, sp.round_to);
        goto tokenizer;
    }
    if (!strcmp(arch, "neox")) {
        if (!c->d_mlp) c->d_mlp = 4 * c->d_model;
        c->parallel_block = !sequential;
        rc = write_neox(dir, c, rotary_pct, sp.seed, sp.std, sp.round_to);
        goto tokenizer;
    }
    if (!strcmp(arch, "gpt2")) {
        snprintf(c->arch, sizeof c->arch, "GPT2LMHeadModel");
        if (!c->d_mlp) c->d_mlp = 4 * c->d_model;
        c->norm_eps = 1e-5f;
        c->tied_unembed = tied != 0;
    } else {
        snprintf(c->arch, sizeof c->arch, "%s",
                 !strcmp(arch, "llama") ? "LlamaForCausalLM" : !strcmp(arch, "mistral") ? "MistralForCausalLM"
                 : !strcmp(arch, "qwen2") ? "Qwen2ForCausalLM" : "");
        if (!c->arch[0]) {
            fprintf(stderr, "error: --arch '%s': use gpt2, llama, mistral, qwen2, neox, bert or t5\n", arch);
            return 2;
        }
        if (!c->d_mlp) c->d_mlp = 3 * c->d_model;
        c->norm_eps = 1e-6f;
        c->qkv_bias = !strcmp(arch, "qwen2");
        c->tied_unembed = tied == 1;
    }
    rc = lp_checkpoint_random(dir, &sp);
tokenizer:
    if (!rc && tokdir) {
        char from[4096], to[4096];
        const char *pairs[2][3] = {{"encoder.json", "vocab.json", "vocab.json"}, {"vocab.bpe", "merges.txt", "merges.txt"}};
        for (int k = 0; k < 2 && !rc; k++) {
            lp_path_join(from, sizeof from, tokdir, pairs[k][0]);
            if (!lp_file_exists(from)) lp_path_join(from, sizeof from, tokdir, pairs[k][1]);
            lp_path_join(to, sizeof to, dir, pairs[k][2]);
            rc = copy_file(from, to);
        }
    }
    if (rc) {
        fprintf(stderr, "error: %s\n", lp_errmsg());
        return 1;
    }
    return 0;
}
