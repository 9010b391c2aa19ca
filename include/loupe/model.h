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
    LP_POS_RELATIVE,         /* T5: a learned bias per head added to each attention score, by the bucket of
                                the key's offset from the query (rel_buckets, rel_max_distance) */
} lp_pos_kind;
typedef enum {
    LP_MLP_GELU_TANH,        /* GPT-2 "gelu_new", "gelu_pytorch_tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    LP_MLP_SWIGLU,           /* Llama: SiLU(gate) * up */
    LP_MLP_GELU_ERF,         /* BERT "gelu": the exact 0.5 x (1 + erf(x / sqrt 2)) */
    LP_MLP_RELU,             /* "relu" */
    LP_MLP_GEGLU,            /* T5 v1.1 "gated-gelu": GELU-tanh(gate) * up */
} lp_mlp_kind;
/* What sits on top of the last layer. */
typedef enum {
    LP_HEAD_LM,              /* decoders: final norm, unembedding; logits (T, vocab) */
    LP_HEAD_MLM,             /* masked LM: dense -> act -> LayerNorm -> decoder + bias; logits (T, vocab) */
    LP_HEAD_CLASSIFIER,      /* sequence classification from position 0: dense -> tanh/ReLU -> out; logits (1, n_labels) */
    LP_HEAD_NONE,            /* a bare encoder (BertModel): no logits; its pooler, if any, gives the pooled vector */
} lp_head_kind;

typedef struct {
    char arch[64];       /* "GPT2LMHeadModel", "LlamaForCausalLM", "llama2.c", ... */
    char family[16];     /* "gpt2", "llama", "bert", "roberta" or "distilbert" */
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
    int rope_dims;       /* rotary: the first rope_dims of each head's d_head dims are rotated (pairs
                            (f, f + rope_dims/2) in the rotate-half layout), the rest pass through;
                            0: the whole head (GPT-NeoX's rotary_pct < 1 sets it) */
    lp_norm_kind norm;
    lp_pos_kind pos;
    lp_mlp_kind mlp;
    bool tied_unembed;   /* the unembedding is the token embedding */
    bool qkv_bias;       /* attention q/k/v projections have biases */
    bool mlp_bias;
    bool parallel_block; /* GPT-NeoX use_parallel_residual: attention and the MLP both read the layer's input,
                            resid_post = resid_pre + attn_out + mlp_out; resid_mid is still captured as
                            resid_pre + attn_out (a partial sum that no module reads; ln2 normalises
                            resid_pre) */
    bool attn_only;      /* no MLP blocks (transformer-circuits toy models): resid_post = resid_mid;
                            only models made for training (train.h) set it, no loader does */
    /* What varies between decoders and BERT-style encoders, read by the one forward pass: */
    bool causal;         /* causal attention (decoders); false: every query sees all T keys */
    bool post_norm;      /* BERT's blocks: resid_mid = LN1(resid_in + attn_out), resid_out = LN2(resid_mid +
                            mlp_out), attention and MLP reading the un-normalised stream; false: GPT-2's pre-norm */
    bool emb_norm;       /* a LayerNorm over the summed embeddings (BERT); resid_pre of layer 0 is after it */
    int type_vocab;      /* token-type (segment) embeddings: 0 none, else ids 0 .. type_vocab - 1 */
    int pos_offset;      /* learned positions start at this row (RoBERTa: padding_idx + 1); n_ctx leaves room */
    int pos_pad_id;      /* with pos_offset > 0 (RoBERTa): this token id (padding_idx) takes position row
                            pos_offset - 1 and does not advance the count, as Hugging Face's
                            create_position_ids_from_input_ids; unused when pos_offset is 0 */
    lp_head_kind head;
    int n_labels;        /* classifier: the width of its logits; 0 otherwise */
    bool multi_label;    /* classifier with problem_type "multi_label_classification": each label's
                            probability is its own sigmoid, not a softmax over the labels */
    /* T5: */
    bool unscaled_attn;  /* scores are q.k, without the 1/sqrt(d_head) (Mesh TensorFlow folds it into q) */
    int rel_buckets;     /* LP_POS_RELATIVE: relative_attention_num_buckets */
    int rel_max_distance;/* LP_POS_RELATIVE: relative_attention_max_distance */
    bool cross_attn;     /* the decoder of an encoder-decoder: every layer attends to the encoder's output
                            after its self-attention (lp_model_encoder gives the encoder) */
    int start_id;        /* encoder-decoders: the decoder's first input id (decoder_start_token_id) */
    int eos_id;          /* encoder-decoders: the id that ends generation (eos_token_id) */
    int enc_layers;      /* encoder-decoders: the encoder's layers (num_layers; n_layer is the decoder's); a
                            model made for training takes 0 as n_layer */
    /* Gemma 2 (0 / false elsewhere): */
    float emb_scale;     /* the token embeddings are multiplied by it (sqrt(d_model), rounded to the
                            checkpoint's dtype as Gemma2Model's normalizer); 0: not scaled */
    float attn_scale;    /* scores are scale * q.k with this scale (query_pre_attn_scalar^-0.5); 0: 1/sqrt(d_head) */
    float attn_softcap;  /* scores become cap * tanh(scores / cap) before the mask and softmax; 0: none */
    float final_softcap; /* logits become cap * tanh(logits / cap); 0: none */
    bool sandwich_norm;  /* RMSNorms on the outputs of attention and the MLP before they are added
                            (post_attention_layernorm, post_feedforward_layernorm): attn_out and mlp_out
                            are the normalised outputs, what the residual stream receives */
} lp_config;

/* Rotary position embeddings (Llama, llama2.c): q and k are rotated by position. */
static inline bool lp_pos_rotary(const lp_config *c) {
    return c->pos == LP_POS_ROPE_HALF || c->pos == LP_POS_ROPE_INTERLEAVED;
}
/* How many leading dims of each head the rotary embedding turns (even, <= d_head). */
static inline int lp_rope_dims(const lp_config *c) { return c->rope_dims ? c->rope_dims : c->d_head; }
/* A gated MLP: act(gate) * up, with both captured (mlp_pre is the gate, mlp_up the up). */
static inline bool lp_mlp_gated(const lp_config *c) { return c->mlp == LP_MLP_SWIGLU || c->mlp == LP_MLP_GEGLU; }

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
const char *lp_model_dtype(const lp_model *m);       /* dtype of the checkpoint's weights: "F32", "F16", "BF16";
                                                        a GGUF's most common type: "Q8_0", "Q4_K", ... */
/* A GGUF model's weights were dequantised to float32 on load: writes the ggml types they
 * came from ("Q4_K, Q6_K, F32") into buf and returns how many; 0 for other checkpoints. */
int lp_model_dequantised_from(const lp_model *m, char *buf, size_t cap);
size_t lp_model_param_count(const lp_model *m);      /* parameters, tied ones counted once */
size_t lp_model_weight_bytes(const lp_model *m);     /* float32 bytes the forward reads */
/* A classifier's label names (id2label, "LABEL_i" where config.json names none), n_labels of
 * them; NULL for other heads. */
const char *lp_model_label(const lp_model *m, int id);
int lp_model_n_labels(const lp_model *m);
/* True for BERT-style encoders (bidirectional attention): the analyses that assume a causal
 * next-token model (attr, lens, dla, patch, generate, scan) refuse them. */
bool lp_model_is_encoder(const lp_model *m);
/* LP_OK for a causal decoder; for an encoder, LP_EUNSUPPORTED with the message "WHAT: not yet
 * available for encoder models (ARCH) ...": the guard of every analysis that assumes a
 * causal next-token model (logit lens, DLA, gradients and attribution, patching, head scans,
 * generation), in the engine and in the commands. */
int lp_model_need_decoder(const lp_model *m, const char *what);
/* The encoder of an encoder-decoder (T5): a model of its own (bidirectional, no head) whose
 * output the decoder's cross-attention reads; NULL for every other model. */
const lp_model *lp_model_encoder(const lp_model *m);
/* LP_POS_RELATIVE: the (rel_buckets, n_head) bias table every layer of the model's stack
 * reuses; NULL for other models. */
const float *lp_model_rel_bias(const lp_model *m);
/* What a token's embedding row is multiplied by before layer 0 reads it (Gemma 2's
 * sqrt(d_model) normalizer), 1 for other models: a decoder's input, resid_pre of layer 0,
 * is this times the rows of the embedding. */
float lp_model_emb_scale(const lp_model *m);
/* The sliding window of layer's attention (a query sees its last `window` positions, itself
 * included: Gemma 2's sliding layers), 0 for attention over every earlier position. */
int lp_model_layer_window(const lp_model *m, int layer);
/* "masked-lm", "classifier", "lm" or "none". */
const char *lp_head_kind_name(lp_head_kind k);
/* 16 hex digits identifying the architecture and the weights (sampled, so it is fast for
 * large checkpoints): the store uses it to tell models apart. */
void lp_model_fingerprint(const lp_model *m, char out[17]);

#endif
