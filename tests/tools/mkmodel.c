/* mkmodel: writes a random checkpoint in Hugging Face layout, for tests and `make bench`.
 *   mkmodel DIR --arch gpt2|llama|mistral|qwen2 [--layers N] [--d-model D] [--heads H]
 *          [--kv-heads K] [--d-mlp M] [--vocab V] [--ctx C] [--dtype f32|f16|bf16]
 *          [--round f16|bf16] [--seed S] [--std X] [--tied|--untied] [--shards N]
 *          [--prefix transformer.] [--gpt2-tokenizer DIR]
 * --gpt2-tokenizer copies encoder.json/vocab.bpe (or vocab.json/merges.txt) from DIR. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/checkpoint.h"
#include "loupe/error.h"
#include "loupe/fileio.h"

static int copy_file(const char *from, const char *to) {
    char *buf;
    size_t len;
    int rc = lp_file_read_new(from, &buf, &len);
    if (rc) return rc;
    rc = lp_file_write(to, buf, len);
    free(buf);
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
        fprintf(stderr, "usage: mkmodel DIR --arch gpt2|llama|mistral|qwen2 [options] (see the source)\n");
        return 2;
    }
    const char *dir = argv[1], *arch = "gpt2", *tokdir = NULL;
    lp_random_spec sp = {.dtype = LP_DT_F32, .round_to = LP_DT_F32, .seed = 1, .std = 0.02f, .shards = 1};
    lp_config *c = &sp.cfg;
    c->n_layer = 2, c->d_model = 32, c->n_head = 4, c->n_kv_head = 0, c->d_mlp = 0, c->vocab = 96, c->n_ctx = 64;
    c->rope_theta = 10000.0f;
    int tied = -1;
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
            fprintf(stderr, "error: --arch '%s': use gpt2, llama, mistral or qwen2\n", arch);
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
