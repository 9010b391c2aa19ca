/* The checkpoint that fuzz_config.c and test_model.c feed config.json files to: one
 * model.safetensors holding a small GPT-2 (2 layers, d_model 16, 2 heads, d_mlp 64) and a
 * small Llama (2 layers, d_model 16, 4 heads of 4, 2 key/value heads, d_mlp 24), both with
 * vocabulary 32 and context 16, and the tensors of tests/fixtures/t5/t5_relu_tied (T5: 2 + 3
 * layers, d_model 32, 4 heads of 12, vocabulary 600; when run from the repository's root), so
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
        all = malloc((size_t)(na + nb + nt) * sizeof *all);
        if (!all) rc = LP_ENOMEM;
        for (int i = 0; all && i < na + nb + nt; i++)
            all[i] = *(i < na ? lp_st_at(a, i) : i < na + nb ? lp_st_at(b, i - na) : lp_st_at(t5, i - na - nb));
        if (all) rc = lp_st_write(out, all, na + nb + nt, NULL, NULL, 0);
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
