/* The inside of lp_model, shared by the loaders (one file per architecture or format) and
 * the forward pass. Not a public header. */
#ifndef LOUPE_MODEL_IMPL_H
#define LOUPE_MODEL_IMPL_H

#include <jansson.h>

#include "loupe/fileio.h"
#include "loupe/model.h"
#include "loupe/safetensors.h"

/* A weight matrix used as y = x W + b for x (n, in), y (n, out). W is stored either as
 * (in, out) rows (GPT-2 Conv1D: trans = false) or as (out, in) rows (nn.Linear, llama2.c:
 * trans = true), with ld floats between the starts of its rows, so that a column block of
 * a fused matrix (GPT-2's c_attn) is a matrix too without a copy. */
typedef struct {
    const float *w;
    const float *b;   /* (out) or NULL */
    int in, out, ld;
    bool trans;
} lp_linear;

typedef struct {
    const float *ln1_w, *ln1_b;  /* (d_model); ln*_b NULL for RMSNorm */
    lp_linear q, k, v;           /* d_model -> n_head*d_head, n_kv_head*d_head, n_kv_head*d_head */
    lp_linear o;                 /* n_head*d_head -> d_model */
    const float *ln2_w, *ln2_b;  /* (d_model) */
    lp_linear up;                /* d_model -> d_mlp: GPT-2 c_fc, Llama up_proj */
    lp_linear gate;              /* d_model -> d_mlp: Llama gate_proj (w == NULL for GPT-2) */
    lp_linear down;              /* d_mlp -> d_model: GPT-2 mlp.c_proj, Llama down_proj */
} lp_layer;

struct lp_model {
    lp_config cfg;
    const float *tok_emb;        /* (vocab, d_model) */
    const float *pos_emb;        /* (n_ctx, d_model) or NULL */
    lp_layer *layers;            /* (n_layer) */
    const float *lnf_w, *lnf_b;  /* (d_model) */
    lp_linear unembed;           /* d_model -> vocab */

    lp_tokenizer *tok;
    char *path;
    char dtype[8];
    size_t n_params;

    /* What the pointers above point into, released by lp_model_free. */
    lp_safetensors *st;
    lp_mapping file;             /* llama2.c checkpoints */
    float **owned;               /* converted tensors */
    float *trainable;            /* the parameter block of a model made for training (train.c), else NULL */
    int n_owned, cap_owned;
};

/* Loaders fill m->cfg and the weights; m->tok and m->path are set by lp_model_load. */
int lp_load_llama2c(lp_model *m, const char *path);
/* The same from memory (data must outlive m and be 4-byte aligned); for the fuzzer. */
int lp_llama2c_parse(lp_model *m, const unsigned char *data, size_t size, const char *path);
/* Hugging Face architectures: config parsed from config.json, tensors from m->st. */
int lp_arch_gpt2_load(lp_model *m, json_t *config, const char *config_path);
int lp_arch_llama_load(lp_model *m, json_t *config, const char *config_path);

/* Fetches tensor `name` from m->st as float32 with exactly the given shape (ndim dims,
 * -1 = any), converting if needed. On failure, an LP_EFORMAT message naming the file. */
int lp_model_tensor(lp_model *m, const char *name, int ndim, const long *shape, const float **out);
/* Takes ownership of a malloc'd buffer. */
int lp_model_own(lp_model *m, float *buf);

/* config.json helpers: integer / float field or default (when absent or null); a present
 * field of the wrong type is an error naming path and key. */
int lp_json_int(json_t *obj, const char *key, long def, long *out, const char *path);
int lp_json_float(json_t *obj, const char *key, double def, double *out, const char *path);

#endif
