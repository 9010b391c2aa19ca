/* Models: load a checkpoint (Hugging Face directory or llama2.c .bin) into one struct the
 * forward pass reads, whatever the architecture.
 *
 * Weights are float32. F32 tensors are used in place from the mmapped file (zero-copy);
 * F16/BF16 tensors, and F32 ones that are not 4-byte aligned in the file, are converted
 * once into buffers the model owns. */
#ifndef LOUPE_MODEL_H
#define LOUPE_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "loupe/tokenizer.h"

typedef enum { LP_NORM_LAYERNORM, LP_NORM_RMSNORM } lp_norm_kind;
typedef enum {
    LP_POS_LEARNED,          /* GPT-2: a learned position embedding added to the input */
    LP_POS_ROPE_HALF,        /* Hugging Face Llama: rotate-half pairs (i, i + d_head/2) */
    LP_POS_ROPE_INTERLEAVED, /* llama2.c / Meta: adjacent pairs (2i, 2i + 1) */
} lp_pos_kind;
typedef enum { LP_MLP_GELU_TANH, LP_MLP_SWIGLU } lp_mlp_kind;

typedef struct {
    char arch[64];       /* "GPT2LMHeadModel", "LlamaForCausalLM", "llama2.c", ... */
    char family[16];     /* "gpt2" or "llama" */
    int n_layer;
    int n_head;
    int n_kv_head;       /* == n_head unless grouped-query attention */
    int d_model;
    int d_head;
    int d_mlp;
    int vocab;
    int n_ctx;           /* longest sequence the model takes */
    float norm_eps;
    float rope_theta;
    lp_norm_kind norm;
    lp_pos_kind pos;
    lp_mlp_kind mlp;
    bool tied_unembed;   /* the unembedding is the token embedding */
    bool qkv_bias;       /* attention q/k/v projections have biases */
    bool mlp_bias;
    bool attn_only;      /* no MLP blocks (transformer-circuits toy models): resid_post = resid_mid;
                            only models made for training (train.h) set it, no loader does */
} lp_config;

typedef struct lp_model lp_model;

typedef struct {
    const char *tokenizer_path; /* llama2.c: tokenizer.bin if not beside the checkpoint */
} lp_load_options;

/* path: a Hugging Face model directory, a .safetensors / index.json inside one, or a
 * llama2.c checkpoint. opts may be NULL. */
int lp_model_load(lp_model **out, const char *path, const lp_load_options *opts);
void lp_model_free(lp_model *m);

const lp_config *lp_model_config(const lp_model *m);
/* The tokenizer, or NULL when the checkpoint came without one (then only ids can be run). */
const lp_tokenizer *lp_model_tokenizer(const lp_model *m);
const char *lp_model_path(const lp_model *m);
const char *lp_model_dtype(const lp_model *m);       /* dtype of the checkpoint's weights: "F32", "F16", "BF16" */
size_t lp_model_param_count(const lp_model *m);      /* parameters, tied ones counted once */
size_t lp_model_weight_bytes(const lp_model *m);     /* float32 bytes the forward reads */
/* 16 hex digits identifying the architecture and the weights (sampled, so it is fast for
 * large checkpoints): the store uses it to tell models apart. */
void lp_model_fingerprint(const lp_model *m, char out[17]);

#endif
