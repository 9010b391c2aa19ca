/* mkmodel: writes a random checkpoint in Hugging Face layout, for tests and `make bench`.
 *   mkmodel DIR --arch gpt2|llama|mistral|qwen2|bert [--layers N] [--d-model D] [--heads H]
 *          [--kv-heads K] [--d-mlp M] [--vocab V] [--ctx C] [--dtype f32|f16|bf16]
 *          [--round f16|bf16] [--seed S] [--std X] [--tied|--untied] [--shards N]
 *          [--prefix transformer.] [--gpt2-tokenizer DIR] [--labels N]
 * --gpt2-tokenizer copies encoder.json/vocab.bpe (or vocab.json/merges.txt) from DIR.
 * --arch bert writes a BertForSequenceClassification with N labels (default 2; F32 only)
 * and a vocab.txt laid out as bert-base-uncased's ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
 * [MASK] 103), for the encoder bench. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "loupe/checkpoint.h"
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

/* ---- BertForSequenceClassification (lp_checkpoint_random writes decoders only) ---- */

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    float mean; /* values: mean + std * N(0, 1); LayerNorm weights near 1 */
} bert_tensor;

static int bert_tensors(bert_tensor *t, const lp_config *c, int labels) {
    int n = 0;
    int64_t d = c->d_model, m = c->d_mlp;
#define T2(mean_, d0, d1, ...) (t[n] = (bert_tensor){"", (d1) ? 2 : 1, {(d0), (d1)}, (mean_)}, \
                                snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__), n++)
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
#undef T2
    return n;
}

static int write_bert(const char *dir, const lp_config *c, int labels, uint64_t seed, float std) {
    if (mkdir(dir, 0755) != 0) return lp_error(LP_EIO, "%s: cannot create", dir);
    int cap = 16 * c->n_layer + 16, n;
    bert_tensor *t = malloc((size_t)cap * sizeof *t);
    lp_st_tensor *ts = calloc((size_t)cap, sizeof *ts);
    if (!t || !ts) return lp_error(LP_ENOMEM, "out of memory");
    n = bert_tensors(t, c, labels);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)t[i].shape[0] * (t[i].ndim == 2 ? (size_t)t[i].shape[1] : 1);
    float *data = malloc(total * sizeof *data);
    if (!data) return lp_error(LP_ENOMEM, "out of memory for %zu parameters", total);
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)t[i].shape[0] * (t[i].ndim == 2 ? (size_t)t[i].shape[1] : 1);
        ts[i] = (lp_st_tensor){.name = t[i].name, .dtype = LP_DT_F32, .ndim = t[i].ndim, .data = data + at,
                               .nbytes = k * sizeof *data, .shape = {t[i].shape[0], t[i].shape[1]}};
        for (size_t j = 0; j < k; j++) { /* Box-Muller */
            double u1 = fmax(lp_rng_uniform(&rng), 1e-300), u2 = lp_rng_uniform(&rng);
            data[at + j] = t[i].mean + std * (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        }
        at += k;
    }
    char path[4096];
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    int rc = lp_path_join(path, sizeof path, dir, "model.safetensors");
    if (!rc) rc = lp_st_write(path, ts, n, keys, vals, 1);
    free(data), free(ts), free(t);
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
    if (!rc && (rc = lp_path_join(path, sizeof path, dir, "config.json")) == 0 &&
        json_dump_file(cj, path, JSON_INDENT(2)) != 0)
        rc = lp_error(LP_EIO, "%s: cannot write", path);
    json_decref(cj);
    /* bert-base-uncased's special ids; the other entries are placeholders. */
    FILE *f = !rc && !lp_path_join(path, sizeof path, dir, "vocab.txt") ? fopen(path, "w") : NULL;
    if (!rc && !f) rc = lp_error(LP_EIO, "%s: cannot write", path);
    for (int i = 0; f && i < c->vocab; i++) {
        static const char *const special[] = {"[UNK]", "[CLS]", "[SEP]", "[MASK]"};
        if (i == 0) fputs("[PAD]\n", f);
        else if (i < 100) fprintf(f, "[unused%d]\n", i - 1);
        else if (i < 104) fprintf(f, "%s\n", special[i - 100]);
        else fprintf(f, "w%d\n", i);
    }
    if (f && fclose(f) != 0) rc = lp_error(LP_EIO, "%s: cannot write", path);
    return rc;
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
        fprintf(stderr, "usage: mkmodel DIR --arch gpt2|llama|mistral|qwen2|bert [options] (see the source)\n");
        return 2;
    }
    const char *dir = argv[1], *arch = "gpt2", *tokdir = NULL;
    lp_random_spec sp = {.dtype = LP_DT_F32, .round_to = LP_DT_F32, .seed = 1, .std = 0.02f, .shards = 1};
    lp_config *c = &sp.cfg;
    c->n_layer = 2, c->d_model = 32, c->n_head = 4, c->n_kv_head = 0, c->d_mlp = 0, c->vocab = 96, c->n_ctx = 64;
    c->rope_theta = 10000.0f;
    int tied = -1, labels = 2;
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
        else {
            fprintf(stderr, "error: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (c->n_head < 1 || c->d_model % c->n_head) {
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
        if (write_bert(dir, c, labels, sp.seed, sp.std)) {
            fprintf(stderr, "error: %s\n", lp_errmsg());
            return 1;
        }
        return 0;
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
            fprintf(stderr, "error: --arch '%s': use gpt2, llama, mistral, qwen2 or bert\n", arch);
            return 2;
        }
        if (!c->d_mlp) c->d_mlp = 3 * c->d_model;
        c->norm_eps = 1e-6f;
        c->qkv_bias = !strcmp(arch, "qwen2");
        c->tied_unembed = tied == 1;
    }
    int rc = lp_checkpoint_random(dir, &sp);
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
