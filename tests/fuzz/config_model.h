/* The checkpoint that fuzz_config.c and test_model.c feed config.json files to: one
 * model.safetensors holding a small GPT-2 (2 layers, d_model 16, 2 heads, d_mlp 64) and a
 * small Llama (2 layers, d_model 16, 4 heads of 4, 2 key/value heads, d_mlp 24), both with
 * vocabulary 32 and context 16, and the tensors of tests/fixtures/t5/t5_relu_tied (T5: 2 + 3
 * layers, d_model 32, 4 heads of 12, vocabulary 600; when run from the repository's root) and a
 * small GPT-NeoX (config_model_neox), and the norms a Gemma 2 of the Llama's shapes adds
 * (config_model_gemma2), so
 * that whatever architecture a config names finds tensors of the right names. The seed corpus in tests/fuzz/corpus/config describes these shapes.
 * Header-only: the fuzz build compiles one file. */
#ifndef LOUPE_FUZZ_CONFIG_MODEL_H
#define LOUPE_FUZZ_CONFIG_MODEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/checkpoint.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/safetensors.h"

/* A small GPT-NeoX's tensors (2 layers, d_model 16, d_mlp 32, vocabulary 32), named as
 * modeling_gpt_neox.py names them, values from one small deterministic buffer (its shape,
 * not its numbers, is what a config is checked against). */
#define CONFIG_NEOX_TENSORS (12 * 2 + 4)
static inline int config_model_neox(lp_st_tensor *t, char names[][64], float *buf, size_t cap) {
    static const struct { const char *name; int d0, d1; } parts[12] = {
        {"input_layernorm.weight", 16, 0}, {"input_layernorm.bias", 16, 0},
        {"attention.query_key_value.weight", 48, 16}, {"attention.query_key_value.bias", 48, 0},
        {"attention.dense.weight", 16, 16}, {"attention.dense.bias", 16, 0},
        {"post_attention_layernorm.weight", 16, 0}, {"post_attention_layernorm.bias", 16, 0},
        {"mlp.dense_h_to_4h.weight", 32, 16}, {"mlp.dense_h_to_4h.bias", 32, 0},
        {"mlp.dense_4h_to_h.weight", 16, 32}, {"mlp.dense_4h_to_h.bias", 16, 0}};
    for (size_t i = 0; i < cap; i++) buf[i] = (float)((int)(i * 2654435761u % 2001u) - 1000) * 1e-4f;
    int n = 0;
    for (int k = 0; k < CONFIG_NEOX_TENSORS; k++, n++) {
        int l = k / 12, d0, d1;
        if (k < 24) {
            snprintf(names[n], 64, "gpt_neox.layers.%d.%s", l, parts[k % 12].name);
            d0 = parts[k % 12].d0, d1 = parts[k % 12].d1;
        } else {
            static const char *const rest[4] = {"gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm.weight",
                                                "gpt_neox.final_layer_norm.bias", "embed_out.weight"};
            snprintf(names[n], 64, "%s", rest[k - 24]);
            bool norm = k == 25 || k == 26;
            d0 = norm ? 16 : 32, d1 = norm ? 0 : 16;
        }
        size_t count = (size_t)d0 * (d1 ? d1 : 1);
        t[n] = (lp_st_tensor){.name = names[n], .dtype = LP_DT_F32, .ndim = d1 ? 2 : 1, .data = buf,
                              .nbytes = count * sizeof *buf, .shape = {d0, d1}};
    }
    return n;
}

/* What a Gemma 2 of the Llama's shapes has beyond the Llama's tensors: the pre- and post-
 * feedforward norms of its 2 layers (d_model 16), values from buf. */
#define CONFIG_GEMMA2_TENSORS 4
static inline int config_model_gemma2(lp_st_tensor *t, char names[][64], const float *buf) {
    for (int k = 0; k < CONFIG_GEMMA2_TENSORS; k++) {
        snprintf(names[k], 64, "model.layers.%d.%s_feedforward_layernorm.weight", k / 2, k % 2 ? "post" : "pre");
        t[k] = (lp_st_tensor){.name = names[k], .dtype = LP_DT_F32, .ndim = 1, .data = buf,
                              .nbytes = 16 * sizeof *buf, .shape = {16, 0}};
    }
    return CONFIG_GEMMA2_TENSORS;
}

/* Writes dir/model.safetensors (dir must exist); scratch files go in dir/g and dir/l. */
static inline int config_model_make(const char *dir) {
    lp_random_spec g = {.dtype = LP_DT_F32, .round_to = LP_DT_F32, .seed = 1, .std = 0.1f, .shards = 1};
    g.cfg = (lp_config){.arch = "GPT2LMHeadModel", .n_layer = 2, .n_head = 2, .n_kv_head = 2, .d_model = 16,
                        .d_head = 8, .d_mlp = 64, .vocab = 32, .n_ctx = 16, .norm_eps = 1e-5f, .tied_unembed = true};
    lp_random_spec l = g;
    l.cfg = (lp_config){.arch = "LlamaForCausalLM", .n_layer = 2, .n_head = 4, .n_kv_head = 2, .d_model = 16,
                        .d_head = 4, .d_mlp = 24, .vocab = 32, .n_ctx = 16, .norm_eps = 1e-6f, .rope_theta = 10000.0f,
                        .tied_unembed = true};
    char gd[4096], ld[4096], gst[4200], lst[4200], out[4200];
    snprintf(gd, sizeof gd, "%s/g", dir);
    snprintf(ld, sizeof ld, "%s/l", dir);
    snprintf(gst, sizeof gst, "%s/model.safetensors", gd);
    snprintf(lst, sizeof lst, "%s/model.safetensors", ld);
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    lp_safetensors *a = NULL, *b = NULL, *t5 = NULL;
    int rc = lp_checkpoint_random(gd, &g);
    if (!rc) rc = lp_checkpoint_random(ld, &l);
    if (!rc) rc = lp_st_open(&a, gst);
    if (!rc) rc = lp_st_open(&b, lst);
    if (!rc && lp_file_exists("tests/fixtures/t5/t5_relu_tied/model.safetensors"))
        rc = lp_st_open(&t5, "tests/fixtures/t5/t5_relu_tied/model.safetensors");
    lp_st_tensor *all = NULL;
    if (!rc) {
        int na = lp_st_count(a), nb = lp_st_count(b), nt = t5 ? lp_st_count(t5) : 0;
        all = malloc((size_t)(na + nb + nt + CONFIG_NEOX_TENSORS + CONFIG_GEMMA2_TENSORS) * sizeof *all);
        if (!all) rc = LP_ENOMEM;
        for (int i = 0; all && i < na + nb + nt; i++)
            all[i] = *(i < na ? lp_st_at(a, i) : i < na + nb ? lp_st_at(b, i - na) : lp_st_at(t5, i - na - nb));
        static char neox_names[CONFIG_NEOX_TENSORS][64];
        static float neox_buf[48 * 16]; /* the largest tensor's floats; every tensor reads a prefix */
        int nn = all ? config_model_neox(all + na + nb + nt, neox_names, neox_buf, 48 * 16) : 0;
        static char gemma_names[CONFIG_GEMMA2_TENSORS][64];
        if (all) nn += config_model_gemma2(all + na + nb + nt + nn, gemma_names, neox_buf);
        if (all) rc = lp_st_write(out, all, na + nb + nt + nn, NULL, NULL, 0);
    }
    free(all);
    lp_st_free(a);
    lp_st_free(b);
    lp_st_free(t5);
    return rc;
}

/* Loads dir with data as its config.json and, if it loads, runs two tokens (or one). Returns
 * 0, or -1 if a failure came without a message (the rule every error must keep). */
static inline int config_model_try(const char *dir, const void *data, size_t size) {
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (lp_file_write(cfg, data, size)) return 0;
    lp_error_clear();
    lp_model *m = NULL;
    if (lp_model_load(&m, dir, NULL) != LP_OK) return lp_errmsg()[0] ? 0 : -1;
    const lp_config *c = lp_model_config(m);
    int ids[2] = {0, c->vocab - 1};
    lp_run *r = NULL;
    lp_error_clear();
    int n = c->n_ctx >= 2 ? 2 : 1;
    const lp_model *enc = lp_model_encoder(m);
    int rc = enc && lp_model_config(enc)->n_ctx >= n ? lp_run_new_seq2seq(&r, m, ids, n, ids, n)
                                                     : lp_run_new(&r, m, ids, n);
    int bad = rc != LP_OK && !lp_errmsg()[0];
    lp_run_free(r);
    lp_model_free(m);
    return bad ? -1 : 0;
}

#endif
