/* The inside of lp_model, shared by the loaders (one file per architecture or format) and
 * the forward pass. Not a public header. */
#ifndef LOUPE_MODEL_IMPL_H
#define LOUPE_MODEL_IMPL_H

#include <jansson.h>
#include <stdatomic.h>

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
    /* A loaded model's (in, out) matrix copied as (out, in) rows (ld = in), usable once
     * *wt_ready is set (src/arch/transposed.c); NULL when there is no copy. Whoever changes
     * w clears both. */
    const float *wt;
    const atomic_bool *wt_ready;
} lp_linear;

/* A matrix with no (out, in) copy. */
static inline lp_linear lp_linear_of(const float *w, const float *b, int in, int out, int ld, bool trans) {
    return (lp_linear){.w = w, .b = b, .in = in, .out = out, .ld = ld, .trans = trans};
}

/* lin's (out, in) copy as a matrix of its own. */
static inline lp_linear lp_linear_copy(const lp_linear *lin) {
    return lp_linear_of(lin->wt, lin->b, lin->in, lin->out, lin->in, true);
}

/* The matrix a product over n rows reads: the (out, in) copy once it is whole, else lin
 * itself. OpenBLAS packs both layouts into the same panels for the same kernel, so the
 * product has the same bits either way and only its speed differs; but at most 1e6
 * multiply-adds OpenBLAS 0.3.21's SkylakeX build may take a small-matrix kernel chosen by
 * layout (interface/gemm.c, sgemm_small_kernel_permit_skylakex.c), whose sums are its own,
 * so products that small keep the original. */
static inline lp_linear lp_linear_rows(const lp_linear *lin, int n) {
    if (lin->wt && (double)n * lin->in * lin->out > 1e6 && atomic_load_explicit(lin->wt_ready, memory_order_acquire))
        return lp_linear_copy(lin);
    return *lin;
}

/* The matrix a product of one row (kernels/decode.c, every generated token) reads: the copy
 * once it is whole, else lin. decode.c sums an (in, out) matrix exactly as it sums the same
 * matrix stored (out, in), so the bytes are the same either way; the copy's contiguous rows
 * stream faster (GPT-2 small on an AMD Zen 5 VM: 52 GB/s against 46). */
static inline lp_linear lp_linear_one_row(const lp_linear *lin) {
    if (lin->wt && atomic_load_explicit(lin->wt_ready, memory_order_acquire)) return lp_linear_copy(lin);
    return *lin;
}

/* The matrix a product over n rows reads. */
static inline lp_linear lp_linear_for(const lp_linear *lin, int n) {
    return n == 1 ? lp_linear_one_row(lin) : lp_linear_rows(lin, n);
}

/* Pre-norm blocks (GPT-2, Llama) normalise the input of attention (ln1) and of the MLP (ln2);
 * post-norm blocks (BERT) hold here the norm after attention's sum (ln1) and after the
 * MLP's (ln2). */
typedef struct {
    const float *ln1_w, *ln1_b;  /* (d_model); ln*_b NULL for RMSNorm */
    lp_linear q, k, v;           /* d_model -> n_head*d_head, n_kv_head*d_head, n_kv_head*d_head */
    lp_linear o;                 /* n_head*d_head -> d_model */
    const float *ln2_w, *ln2_b;  /* (d_model) */
    lp_linear up;                /* d_model -> d_mlp: GPT-2 c_fc, Llama up_proj */
    lp_linear gate;              /* d_model -> d_mlp: Llama gate_proj (w == NULL for GPT-2) */
    lp_linear down;              /* d_mlp -> d_model: GPT-2 mlp.c_proj, Llama down_proj */
    /* The decoder of an encoder-decoder (cfg.cross_attn): attention over the encoder's output
     * between self-attention and the MLP, pre-norm (T5: layer.1.layer_norm, EncDecAttention). */
    const float *lnx_w, *lnx_b;  /* (d_model) */
    lp_linear xq, xk, xv;        /* d_model -> n_head*d_head (xk, xv read the encoder's output) */
    lp_linear xo;                /* n_head*d_head -> d_model */
    /* cfg.sandwich_norm: the RMSNorms of attention's and the MLP's outputs (Gemma 2) */
    const float *post1_w, *post2_w; /* (d_model) */
    int window;                  /* sliding-window attention: a query sees its last `window` positions
                                    (itself included); 0: every earlier position */
} lp_layer;

/* q, k and v as one (in, H*dh + 2 Hkv*dh) matrix, into f when f is not NULL: GPT-2's c_attn,
 * whose column blocks they are (their biases too). One product over the whole width, forward
 * and backward (grad.c), instead of three strided ones; transposed.c copies them together. */
static inline bool lp_qkv_columns(lp_linear *f, const lp_layer *w) {
    const lp_linear *q = &w->q, *k = &w->k, *v = &w->v;
    int out = q->out + k->out + v->out;
    if (q->trans || k->trans || v->trans || q->in != k->in || q->in != v->in || q->ld != out || k->ld != out ||
        v->ld != out || k->w != q->w + q->out || v->w != k->w + k->out)
        return false;
    if (q->b ? (k->b != q->b + q->out || v->b != k->b + k->out) : (k->b || v->b)) return false;
    if (f) *f = lp_linear_of(q->w, q->b, q->in, out, out, false);
    return true;
}

/* The activation of a head's dense layer. */
typedef enum { LP_HEAD_ACT_TANH, LP_HEAD_ACT_RELU, LP_HEAD_ACT_GELU_ERF, LP_HEAD_ACT_GELU_TANH } lp_head_act;

/* An encoder's head, one shape for all of them: on every position (MLM) or on position 0
 * (classifier, pooler), h = act(dense(x)), then h = LayerNorm(h) when ln_w is set (MLM),
 * then logits = h W_out + b (the model's unembed). BERT MLM: transform.dense, hidden_act,
 * transform.LayerNorm, decoder + cls.predictions.bias; BERT classifier: pooler.dense, tanh,
 * classifier; RoBERTa classifier: classifier.dense, tanh, out_proj; DistilBERT MLM:
 * vocab_transform, activation, vocab_layer_norm, vocab_projector; DistilBERT classifier:
 * pre_classifier, ReLU, classifier; BertModel: pooler.dense, tanh, no output. */
typedef struct {
    lp_linear dense;             /* d_model -> d_model; w NULL: no dense layer (decoders) */
    lp_head_act act;
    const float *ln_w, *ln_b;    /* (d_model) or NULL */
    float ln_eps;
} lp_head;

struct lp_model {
    lp_config cfg;
    const float *tok_emb;        /* (vocab, d_model) */
    const float *pos_emb;        /* (n_ctx + pos_offset, d_model) or NULL */
    const float *type_emb;       /* (type_vocab, d_model) or NULL */
    const float *emb_ln_w, *emb_ln_b; /* (d_model): the embeddings' LayerNorm (cfg.emb_norm) */
    lp_layer *layers;            /* (n_layer) */
    const float *rel_bias;       /* LP_POS_RELATIVE: (rel_buckets, n_head), one table every layer reuses */
    struct lp_model *encoder;    /* an encoder-decoder's encoder (owned; its tensors point into this model's
                                    file, its st and tok are NULL) */
    const float *lnf_w, *lnf_b;  /* (d_model); NULL for post-norm encoders (the last block ends in a norm) */
    lp_head head;                /* encoders' head; dense.w NULL for decoders */
    lp_linear unembed;           /* the output layer: d_model -> vocab (LM, MLM decoder), -> n_labels
                                    (classifier); w NULL for LP_HEAD_NONE */
    char **labels;               /* (n_labels) classifier label names, owned */

    lp_tokenizer *tok;
    char *path;
    char weights[4096];          /* the safetensors file or index a Hugging Face model came from */
    char dtype[8];
    size_t n_params;

    /* What the pointers above point into, released by lp_model_free. */
    lp_safetensors *st;
    lp_mapping file;             /* llama2.c checkpoints */
    struct lp_gguf *gguf;        /* GGUF files (gguf_model.c); a split model's first part */
    struct lp_gguf **gguf_parts; /* (n_gguf_parts) a split model's other parts, in order */
    int n_gguf_parts;
    bool gguf_unpermute;         /* its q/k rows are in llama.cpp's interleaved-RoPE order */
    bool gguf_norm_shifted;      /* its RMSNorm weights hold Gemma's 1 (llama.cpp's converter added it) */
    struct {
        uint32_t type;           /* a ggml type the weights were dequantised from */
        size_t n_elem;           /* how many weights had it */
    } gguf_types[8];
    int n_gguf_types;
    float **owned;               /* converted tensors */
    float *trainable;            /* the parameter block of a model made for training (train.c), else NULL */
    struct lp_transposed *transposed; /* the (out, in) copies being made or made (transposed.c) */
    int n_owned, cap_owned;
};

/* Loaders fill m->cfg and the weights; m->tok and m->path are set by lp_model_load. */
int lp_load_llama2c(lp_model *m, const char *path);
/* After a load: starts the thread that copies (in, out) weights as (out, in) rows
 * (lp_linear.wt); nothing when there are none, or no memory or thread for it. */
void lp_model_transpose_start(lp_model *m);
/* Until the copies are made (tests, benchmarks); at once when none are being made. */
void lp_model_transpose_wait(const lp_model *m);
/* The copies' size: what they add to the process's memory. */
size_t lp_model_transpose_bytes(const lp_model *m);
/* Stops the copying thread and frees the copies (lp_model_free). */
void lp_model_transpose_stop(lp_model *m);
/* The same from memory (data must outlive m and be 4-byte aligned); for the fuzzer. */
int lp_llama2c_parse(lp_model *m, const unsigned char *data, size_t size, const char *path);
/* GGUF files: the architecture's loader below, fed a config made from the metadata. */
int lp_load_gguf(lp_model *m, const char *path);
/* The same from memory (buf must outlive m), for the fuzzer. */
int lp_gguf_model_parse(lp_model *m, const void *buf, size_t len, const char *what);
/* The Hugging Face tensor hf_name of a GGUF model, found under its GGUF name, checked
 * against shape, dequantised and brought to the Hugging Face layout (owned by m). */
int lp_gguf_model_tensor(lp_model *m, const char *hf_name, int ndim, const int *shape, const float **out,
                         size_t *n);
bool lp_gguf_model_has(const lp_model *m, const char *hf_name);
/* Whether the checkpoint (safetensors or GGUF) has tensor name. */
bool lp_model_has(const lp_model *m, const char *name);
typedef int (*arch_loader_fn)(lp_model *, json_t *, const char *);
/* Hugging Face architectures: config parsed from config.json, tensors from m->st. */
int lp_arch_gpt2_load(lp_model *m, json_t *config, const char *config_path);
int lp_arch_llama_load(lp_model *m, json_t *config, const char *config_path);
int lp_arch_gpt_neox_load(lp_model *m, json_t *config, const char *config_path);   /* Pythia, GPT-NeoX */
int lp_arch_bert_load(lp_model *m, json_t *config, const char *config_path);       /* BERT and RoBERTa */
int lp_arch_distilbert_load(lp_model *m, json_t *config, const char *config_path);
int lp_arch_t5_load(lp_model *m, json_t *config, const char *config_path);         /* T5, mT5, T5EncoderModel */
int lp_arch_gemma2_load(lp_model *m, json_t *config, const char *config_path);     /* Gemma 2 */
/* Shared by the encoders' loaders (bert.c): an activation name from config key (absent:
 * def) -> kind; the head's activation for one; a masked-LM decoder (tied to the word
 * embeddings unless tie_word_embeddings is false) with its bias under bias or bias2. */
int lp_arch_act(json_t *config, const char *key, const char *def, lp_mlp_kind *out, const char *path);
lp_head_act lp_arch_head_act(lp_mlp_kind k);
int lp_arch_mlm_decoder(lp_model *m, json_t *config, const char *weight, const char *bias, const char *bias2);
/* A LayerNorm's weight and bias (d) under BASE.weight and BASE.bias, or BASE.gamma and
 * BASE.beta, the TensorFlow names of converted checkpoints (Hugging Face renames them). */
int lp_arch_norm(lp_model *m, const char *base, int d, const float **w, const float **b);
/* The post-norm layers of an encoder, m->cfg's sizes set: tensors PREFIX STACK.L.PART for
 * parts q, k, v, attention output, post-attention LayerNorm, MLP in, MLP out, output
 * LayerNorm (nn.Linear layers with biases; the norms' .weight and .bias). */
int lp_arch_encoder_layers(lp_model *m, const char *prefix, const char *stack, const char *const parts[8]);
/* A classifier's labels from config.json's id2label ("LABEL_i" where it names none); sets
 * cfg.n_labels from num_labels or id2label's size. */
int lp_arch_labels(lp_model *m, json_t *config, const char *config_path);

/* Fetches tensor `name` from m->st as float32 with exactly the given shape (ndim dims, each
 * a validated config size >= 1: there is no "any" size), converting if needed, and checks
 * that every value is finite. On failure, an LP_EFORMAT message naming the file. */
int lp_model_tensor(lp_model *m, const char *name, int ndim, const int *shape, const float **out);
/* nn.Linear `name`.weight (out, in) and, with bias, `name`.bias (out); a vector (n). */
int lp_model_linear(lp_model *m, const char *name, int in, int out, bool bias, lp_linear *lin);
int lp_model_vector(lp_model *m, const char *name, int n, const float **out);
/* Takes ownership of a malloc'd buffer. */
int lp_model_own(lp_model *m, float *buf);
/* The first non-finite value among n floats, or -1: the load-time weight scan. Shared among
 * the compute threads (lp_parallel_for: call it between BLAS calls, as a load and a run do). */
long lp_first_nonfinite(const float *x, size_t n);

/* The sizes loupe accepts from any checkpoint (config.json or a llama2.c header): far above
 * any released model (Llama 3 405B: d_model 16384, d_mlp 53248, 126 layers, 128 heads;
 * Gemma: vocab 256000, d_head 256; Qwen2.5-1M: context 1010000), and small enough that
 * every product of two of them the forward pass forms fits in an int. */
#define LP_MAX_LAYERS 1024
#define LP_MAX_HEADS 1024
#define LP_MAX_D_MODEL (1 << 16)
#define LP_MAX_D_HEAD (1 << 14)
#define LP_MAX_D_MLP (1 << 18)
#define LP_MAX_VOCAB (1 << 22)
#define LP_MAX_CTX (1 << 20)

/* Config integers, one mechanism for every loader: each size is read once, as an int in
 * [lo, hi], before anything uses it. lp_cfg_int reads obj[key] (absent or null: def, or an
 * error if def is LP_CFG_REQUIRED); lp_cfg_range checks a value read elsewhere (a llama2.c
 * header); lp_cfg_mul forms a product of sizes, refusing one that overflows an int. A value
 * of the wrong type, with a fraction, or out of range is an LP_EFORMAT error naming the
 * file, the key, the value and the range. */
#define LP_CFG_REQUIRED (-1LL - 0x7fffffffffffffffLL)
int lp_cfg_int(json_t *obj, const char *key, long long def, int lo, int hi, int *out, const char *path);
int lp_cfg_range(long long v, const char *key, int lo, int hi, int *out, const char *path);
int lp_cfg_mul(int a, int b, const char *what, int *out, const char *path);
/* A float in (0, hi], finite (norm epsilons, rope_theta); absent or null: def. */
int lp_cfg_positive(json_t *obj, const char *key, double def, double hi, double *out, const char *path);

#endif
