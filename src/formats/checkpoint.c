/* Random checkpoints in Hugging Face layout, with the tensor names and shapes each
 * architecture's loader reads (arch_gpt2.c, arch_llama.c). */
#include "loupe/checkpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/generate.h"
#include "loupe/safetensors.h"

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    float mean, std;   /* values: mean + std * N(0, 1) */
} tensor_spec;

typedef struct {
    tensor_spec *t;
    int n, cap;
} spec_list;

static int add(spec_list *l, float mean, float std, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static int add(spec_list *l, float mean, float std, int ndim, int64_t d0, int64_t d1, const char *fmt, ...) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        tensor_spec *nt = realloc(l->t, (size_t)cap * sizeof *nt);
        if (!nt) return lp_error(LP_ENOMEM, "out of memory");
        l->t = nt;
        l->cap = cap;
    }
    tensor_spec *t = &l->t[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->mean = mean;
    t->std = std;
    return LP_OK;
}

static int gpt2_tensors(spec_list *l, const lp_config *c, float s, const char *p) {
    int64_t d = c->d_model, m = c->d_mlp;
    int rc = 0;
    rc |= add(l, 0, s, 2, c->vocab, d, "%swte.weight", p);
    rc |= add(l, 0, s, 2, c->n_ctx, d, "%swpe.weight", p);
    for (int i = 0; i < c->n_layer; i++) {
        rc |= add(l, 1, s, 1, d, 0, "%sh.%d.ln_1.weight", p, i);
        rc |= add(l, 0, s, 1, d, 0, "%sh.%d.ln_1.bias", p, i);
        rc |= add(l, 0, s, 2, d, 3 * d, "%sh.%d.attn.c_attn.weight", p, i);
        rc |= add(l, 0, s, 1, 3 * d, 0, "%sh.%d.attn.c_attn.bias", p, i);
        rc |= add(l, 0, s, 2, d, d, "%sh.%d.attn.c_proj.weight", p, i);
        rc |= add(l, 0, s, 1, d, 0, "%sh.%d.attn.c_proj.bias", p, i);
        rc |= add(l, 1, s, 1, d, 0, "%sh.%d.ln_2.weight", p, i);
        rc |= add(l, 0, s, 1, d, 0, "%sh.%d.ln_2.bias", p, i);
        rc |= add(l, 0, s, 2, d, m, "%sh.%d.mlp.c_fc.weight", p, i);
        rc |= add(l, 0, s, 1, m, 0, "%sh.%d.mlp.c_fc.bias", p, i);
        rc |= add(l, 0, s, 2, m, d, "%sh.%d.mlp.c_proj.weight", p, i);
        rc |= add(l, 0, s, 1, d, 0, "%sh.%d.mlp.c_proj.bias", p, i);
    }
    rc |= add(l, 1, s, 1, d, 0, "%sln_f.weight", p);
    rc |= add(l, 0, s, 1, d, 0, "%sln_f.bias", p);
    if (!c->tied_unembed) rc |= add(l, 0, s, 2, c->vocab, d, "lm_head.weight");
    return rc ? LP_ENOMEM : LP_OK;
}

static int llama_tensors(spec_list *l, const lp_config *c, float s) {
    int64_t d = c->d_model, m = c->d_mlp, q = (int64_t)c->n_head * c->d_head, kv = (int64_t)c->n_kv_head * c->d_head;
    int rc = 0;
    rc |= add(l, 0, s, 2, c->vocab, d, "model.embed_tokens.weight");
    for (int i = 0; i < c->n_layer; i++) {
        const char *p = "model.layers";
        rc |= add(l, 1, s, 1, d, 0, "%s.%d.input_layernorm.weight", p, i);
        rc |= add(l, 0, s, 2, q, d, "%s.%d.self_attn.q_proj.weight", p, i);
        rc |= add(l, 0, s, 2, kv, d, "%s.%d.self_attn.k_proj.weight", p, i);
        rc |= add(l, 0, s, 2, kv, d, "%s.%d.self_attn.v_proj.weight", p, i);
        if (c->qkv_bias) {
            rc |= add(l, 0, s, 1, q, 0, "%s.%d.self_attn.q_proj.bias", p, i);
            rc |= add(l, 0, s, 1, kv, 0, "%s.%d.self_attn.k_proj.bias", p, i);
            rc |= add(l, 0, s, 1, kv, 0, "%s.%d.self_attn.v_proj.bias", p, i);
        }
        rc |= add(l, 0, s, 2, d, q, "%s.%d.self_attn.o_proj.weight", p, i);
        rc |= add(l, 1, s, 1, d, 0, "%s.%d.post_attention_layernorm.weight", p, i);
        rc |= add(l, 0, s, 2, m, d, "%s.%d.mlp.gate_proj.weight", p, i);
        rc |= add(l, 0, s, 2, m, d, "%s.%d.mlp.up_proj.weight", p, i);
        rc |= add(l, 0, s, 2, d, m, "%s.%d.mlp.down_proj.weight", p, i);
    }
    rc |= add(l, 1, s, 1, d, 0, "model.norm.weight");
    if (!c->tied_unembed) rc |= add(l, 0, s, 2, c->vocab, d, "lm_head.weight");
    return rc ? LP_ENOMEM : LP_OK;
}

static json_t *config_json(const lp_config *c, lp_dtype dtype) {
    const char *dt = dtype == LP_DT_F16 ? "float16" : dtype == LP_DT_BF16 ? "bfloat16" : "float32";
    if (strcmp(c->arch, "GPT2LMHeadModel") == 0)
        return json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:s,s:b,s:s}", "architectures", c->arch, "model_type",
                         "gpt2", "n_embd", c->d_model, "n_layer", c->n_layer, "n_head", c->n_head, "n_positions",
                         c->n_ctx, "vocab_size", c->vocab, "n_inner", c->d_mlp, "layer_norm_epsilon",
                         (double)c->norm_eps, "activation_function", "gelu_new", "tie_word_embeddings",
                         c->tied_unembed, "torch_dtype", dt);
    const char *type = strcmp(c->arch, "Qwen2ForCausalLM") == 0     ? "qwen2"
                       : strcmp(c->arch, "MistralForCausalLM") == 0 ? "mistral"
                                                                    : "llama";
    json_t *j = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:s,s:b,s:s}", "architectures", c->arch,
                          "model_type", type, "hidden_size", c->d_model, "intermediate_size", c->d_mlp,
                          "num_hidden_layers", c->n_layer, "num_attention_heads", c->n_head, "num_key_value_heads",
                          c->n_kv_head, "head_dim", c->d_head, "max_position_embeddings", c->n_ctx, "vocab_size",
                          c->vocab, "rms_norm_eps", (double)c->norm_eps, "rope_theta", (double)c->rope_theta,
                          "hidden_act", "silu", "tie_word_embeddings", c->tied_unembed, "torch_dtype", dt);
    if (strcmp(type, "mistral") == 0) json_object_set_new(j, "sliding_window", json_null());
    return j;
}

int lp_checkpoint_write_config(const char *dir, const lp_config *c, lp_dtype dtype) {
    char path[4096];
    int rc = lp_path_join(path, sizeof path, dir, "config.json");
    if (rc) return rc;
    json_t *cj = config_json(c, dtype);
    char *text = cj ? json_dumps(cj, JSON_INDENT(2)) : NULL;
    json_decref(cj);
    if (!text) return lp_error(LP_ENOMEM, "out of memory");
    rc = lp_file_write(path, text, strlen(text)); /* a temporary file renamed into place */
    free(text);
    return rc;
}

/* N(0, 1) by Box-Muller from the same generator sampling uses. */
static float normal(lp_rng *rng) {
    double u1 = lp_rng_uniform(rng), u2 = lp_rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static float round_to(float x, lp_dtype dt) {
    if (dt == LP_DT_F16) return lp_f16_to_f32(lp_f32_to_f16(x));
    if (dt == LP_DT_BF16) return lp_bf16_to_f32(lp_f32_to_bf16(x));
    return x;
}

int lp_checkpoint_random(const char *dir, const lp_random_spec *sp) {
    if (sp->dtype != LP_DT_F32 && sp->dtype != LP_DT_F16 && sp->dtype != LP_DT_BF16)
        return lp_error(LP_EINVAL, "random checkpoints are F32, F16 or BF16");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return lp_error(LP_EIO, "%s: cannot create: %s", dir, strerror(errno));
    spec_list l = {0};
    bool gpt2 = strcmp(sp->cfg.arch, "GPT2LMHeadModel") == 0;
    int rc = gpt2 ? gpt2_tensors(&l, &sp->cfg, sp->std, sp->gpt2_prefix ? sp->gpt2_prefix : "")
                  : llama_tensors(&l, &sp->cfg, sp->std);
    if (rc) goto done;

    size_t esz = lp_dtype_size(sp->dtype), total = 0;
    for (int i = 0; i < l.n; i++) total += (size_t)l.t[i].shape[0] * (l.t[i].ndim == 2 ? (size_t)l.t[i].shape[1] : 1);
    unsigned char *data = malloc(total * esz + 1);
    lp_st_tensor *ts = calloc((size_t)l.n, sizeof *ts);
    if (!data || !ts) {
        free(data);
        free(ts);
        rc = lp_error(LP_ENOMEM, "out of memory for a %zu-parameter checkpoint", total);
        goto done;
    }
    lp_rng rng;
    lp_rng_seed(&rng, sp->seed);
    size_t at = 0;
    for (int i = 0; i < l.n; i++) {
        tensor_spec *t = &l.t[i];
        size_t n = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        ts[i] = (lp_st_tensor){.name = t->name, .dtype = sp->dtype, .ndim = t->ndim, .data = data + at * esz,
                               .nbytes = n * esz};
        ts[i].shape[0] = t->shape[0];
        ts[i].shape[1] = t->shape[1];
        for (size_t j = 0; j < n; j++) {
            float x = round_to(t->mean + t->std * normal(&rng), sp->round_to);
            if (sp->dtype == LP_DT_F32) memcpy(data + (at + j) * 4, &x, 4);
            else {
                uint16_t h = sp->dtype == LP_DT_F16 ? lp_f32_to_f16(x) : lp_f32_to_bf16(x);
                memcpy(data + (at + j) * 2, &h, 2);
            }
        }
        at += n;
    }
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    char path[4096];
    int shards = sp->shards > 1 ? sp->shards : 1;
    if (shards > l.n) shards = l.n;
    if (shards == 1) {
        if (!(rc = lp_path_join(path, sizeof path, dir, "model.safetensors")))
            rc = lp_st_write(path, ts, l.n, keys, vals, 1);
    } else {
        json_t *map = json_object();
        int per = (l.n + shards - 1) / shards;
        for (int s = 0; s < shards && !rc; s++) {
            char name[64];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
            int from = s * per, to = from + per < l.n ? from + per : l.n;
            for (int i = from; i < to; i++) json_object_set_new(map, ts[i].name, json_string(name));
            if (!(rc = lp_path_join(path, sizeof path, dir, name))) rc = lp_st_write(path, ts + from, to - from, keys, vals, 1);
        }
        json_t *index = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)(total * esz), "weight_map", map);
        if (!rc && !(rc = lp_path_join(path, sizeof path, dir, "model.safetensors.index.json")) &&
            json_dump_file(index, path, JSON_INDENT(2)) != 0)
            rc = lp_error(LP_EIO, "%s: cannot write", path);
        json_decref(index);
    }
    if (!rc) rc = lp_checkpoint_write_config(dir, &sp->cfg, sp->dtype);
    free(data);
    free(ts);
done:
    free(l.t);
    return rc;
}
