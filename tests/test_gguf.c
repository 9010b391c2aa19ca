/* GGUF: models written by tests/fixtures/gguf_fixtures.py (from the format spec) give the
 * logits of their safetensors originals; each quantised block layout decodes as the
 * script's reference decoder does; malformed files are refused with one message each. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/gguf.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/safetensors.h"
#include "loupe/tokenizer.h"

#define DIR_GGUF "tests/fixtures/gguf/"
/* make.sh's mkmodel arguments for the Gemma 2 files */
#define GEMMA2_EXTRA " --attn-cap 3 --final-cap 4 --query-scalar 8"
#define GEMMA2_46                                                                                                  \
    "--arch gemma2 --layers 46 --d-model 8 --heads 2 --head-dim 8 --kv-heads 1 --d-mlp 8 --vocab 16 --ctx 16 "     \
    "--window 3 --query-scalar 4 --attn-cap 3 --final-cap 4 --std 0.3 --seed 21"

/* make.sh's neox_rot30: 30 of 44 dimensions rotated */
#define NEOX_ROT30                                                                                                  \
    "--arch neox --layers 2 --d-model 44 --heads 1 --d-mlp 20 --vocab 96 --ctx 16 --rotary-pct 0.69 --std 0.3 "   \
    "--seed 22"

static const fixture_model *find_fixture(const fixture_model *fm, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(fm[i].name, name) == 0) return &fm[i];
    return NULL;
}

/* Largest |logit difference| of two models on the same ids. */
static double logit_diff(const lp_model *a, const lp_model *b, const int *ids, int n) {
    lp_run *ra, *rb;
    assert_int_equal(lp_run_new(&ra, a, ids, n), LP_OK);
    assert_int_equal(lp_run_new(&rb, b, ids, n), LP_OK);
    int V = lp_model_config(a)->vocab;
    assert_int_equal(V, lp_model_config(b)->vocab);
    double worst = 0;
    for (int t = 0; t < n; t++)
        for (int v = 0; v < V; v++) {
            double d = fabs((double)lp_run_logits(ra, t)[v] - lp_run_logits(rb, t)[v]);
            worst = isnan(d) ? INFINITY : fmax(worst, d);
        }
    lp_run_free(ra);
    lp_run_free(rb);
    return worst;
}

/* The GGUF holds the same weights (F16: those of the checkpoint made with --round f16) in
 * llama.cpp's layout; undone on load, the model computes exactly what the original does.
 * Llama's q/k rows are stored permuted (checked: the file's attn_q differs from q_proj),
 * so equal logits show that the load undoes the permutation. */
static void gguf_models_give_the_logits_of_their_originals(void **state) {
    (void)state;
    /* Gemma 2 (file "gemma2"): gemma2_nocap_mqa's weights with the caps llama.cpp always
     * applies and query_pre_attn_scalar = head_dim, the scale llama.cpp derives (make.sh). */
    static const struct {
        const char *name, *dtype;
        bool round_f16;
        const char *extra, *file;
    } CASES[] = {
        {"gpt2", "f32", false, "", NULL},           {"gpt2", "f16", true, "", NULL},
        {"gpt2_prefix_untied", "f32", false, "", NULL}, {"llama_gqa_untied", "f32", false, "", NULL},
        {"llama_gqa_untied", "f16", true, "", NULL}, {"qwen2_bias_tied", "f32", false, "", NULL},
        {"qwen2_bias_tied", "f16", true, "", NULL},
        {"gemma2_nocap_mqa", "f32", false, GEMMA2_EXTRA, "gemma2"},
        {"gemma2_nocap_mqa", "f16", true, GEMMA2_EXTRA, "gemma2"},
        {"neox_parallel", "f32", false, "", NULL},   {"neox_parallel", "f16", true, "", NULL},
        {"neox_sequential", "f32", false, "", NULL},
    };
    fixture_model fm[16];
    int n_fm = read_models(fm, 16);
    char *dir = make_temp_dir();
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        const fixture_model *f = find_fixture(fm, n_fm, CASES[i].name);
        assert_non_null(f);
        char mdir[4200], args[600], gguf[256];
        snprintf(mdir, sizeof mdir, "%s/%s%s", dir, CASES[i].name, CASES[i].round_f16 ? "_f16" : "");
        snprintf(args, sizeof args, "%s%s%s >/dev/null", f->args, CASES[i].extra,
                 CASES[i].round_f16 ? " --round f16" : "");
        snprintf(gguf, sizeof gguf, DIR_GGUF "%s.%s.gguf", CASES[i].file ? CASES[i].file : CASES[i].name,
                 CASES[i].dtype);
        assert_int_equal(mkmodel(mdir, args), 0);
        lp_model *orig, *g;
        assert_int_equal(lp_model_load(&orig, mdir, NULL), LP_OK);
        int rc = lp_model_load(&g, gguf, NULL);
        if (rc) fail_msg("%s", lp_errmsg());
        assert_string_equal(lp_model_config(g)->arch, lp_model_config(orig)->arch);
        assert_int_equal(lp_model_config(g)->tied_unembed, lp_model_config(orig)->tied_unembed);
        assert_int_equal(lp_model_param_count(g), lp_model_param_count(orig));
        assert_string_equal(lp_model_dtype(g), CASES[i].round_f16 ? "F16" : "F32");
        char from[64];
        assert_true(lp_model_dequantised_from(g, from, sizeof from) >= 1);
        assert_int_equal(lp_model_dequantised_from(orig, from, sizeof from), 0);
        if (strcmp(CASES[i].name, "llama_gqa_untied") == 0 && !CASES[i].round_f16) {
            lp_safetensors *st;
            char st_path[4300];
            snprintf(st_path, sizeof st_path, "%s/model.safetensors", mdir);
            assert_int_equal(lp_st_open(&st, st_path), LP_OK);
            lp_gguf *raw;
            assert_int_equal(lp_gguf_open(&raw, gguf), LP_OK);
            const lp_st_tensor *hf = lp_st_find(st, "model.layers.0.self_attn.q_proj.weight");
            const lp_gguf_tensor *file = lp_gguf_find_tensor(raw, "blk.0.attn_q.weight");
            assert_true(hf && file && hf->nbytes == file->nbytes);
            assert_true(memcmp(hf->data, file->data, hf->nbytes) != 0);
            lp_gguf_free(raw);
            lp_st_free(st);
        }
        double d = logit_diff(orig, g, f->ids, f->n);
        print_message("  %-20s %s  max |logit difference| %.3g\n", CASES[i].name, CASES[i].dtype, d);
        /* Gemma 2's attention scale is computed from the file's sizes, not copied: 1e-5 */
        assert_true(d <= (CASES[i].file ? 1e-5 : 1e-6));
        lp_model_free(g);
        lp_model_free(orig);
    }
    rm_tree(dir);
}

/* A Gemma 2 file is what llama.cpp makes of it (its norms, holding the converter's 1, are
 * not shifted again: the test above): the lm_head is the embedding, the even layers slide, and a 46-layer model (Gemma 2 27B's depth) is scaled by (d_model / heads)^-0.5
 * rather than head_dim^-0.5: its logits are those of the checkpoint whose
 * query_pre_attn_scalar is d_model / heads, and not those of one with head_dim. */
static void gemma2_files_compute_what_llama_cpp_computes(void **state) {
    (void)state;
    lp_model *g;
    int rc = lp_model_load(&g, DIR_GGUF "gemma2.f32.gguf", NULL);
    if (rc) fail_msg("%s", lp_errmsg());
    const lp_config *c = lp_model_config(g);
    assert_string_equal(c->arch, "Gemma2ForCausalLM");
    assert_true(c->tied_unembed);
    assert_float_equal(c->attn_scale, 1 / sqrt(8.0), 1e-7);
    assert_float_equal(c->attn_softcap, 3, 0);
    assert_float_equal(c->final_softcap, 4, 0);
    assert_float_equal(c->emb_scale, sqrtf(32.0f), 0);
    lp_gguf *raw;
    assert_int_equal(lp_gguf_open(&raw, DIR_GGUF "gemma2.f32.gguf"), LP_OK);
    assert_non_null(lp_gguf_find_tensor(raw, "blk.1.post_attention_norm.weight"));
    assert_null(lp_gguf_find_tensor(raw, "output.weight"));
    lp_gguf_free(raw);

    fixture_model fm[16];
    int n_fm = read_models(fm, 16);
    const fixture_model *f = find_fixture(fm, n_fm, "gemma2_nocap_mqa");
    assert_non_null(f);
    char *dir = make_temp_dir();
    char mdir[4200], args[600];
    /* the same weights with the file's window on every layer instead of the even ones */
    snprintf(mdir, sizeof mdir, "%s/all_full", dir);
    snprintf(args, sizeof args, "%s" GEMMA2_EXTRA " --window 64 >/dev/null", f->args);
    assert_int_equal(mkmodel(mdir, args), 0);
    lp_model *full;
    assert_int_equal(lp_model_load(&full, mdir, NULL), LP_OK);
    double d_window = logit_diff(full, g, f->ids, f->n);
    print_message("  gemma2 without its window: max |logit difference| %.3g\n", d_window);
    assert_true(d_window > 1e-3);
    lp_model_free(full);
    lp_model_free(g);

    snprintf(mdir, sizeof mdir, "%s/g46", dir);
    assert_int_equal(mkmodel(mdir, GEMMA2_46 " --round f16 >/dev/null"), 0);
    lp_model *orig, *head_dim;
    assert_int_equal(lp_model_load(&orig, mdir, NULL), LP_OK);
    snprintf(mdir, sizeof mdir, "%s/g46_head_dim", dir);
    assert_int_equal(mkmodel(mdir, GEMMA2_46 " --round f16 --query-scalar 8 >/dev/null"), 0);
    assert_int_equal(lp_model_load(&head_dim, mdir, NULL), LP_OK);
    rc = lp_model_load(&g, DIR_GGUF "gemma2_46.f16.gguf", NULL);
    if (rc) fail_msg("%s", lp_errmsg());
    assert_float_equal(lp_model_config(g)->attn_scale, 0.5, 1e-7);
    int ids[10] = {1, 5, 9, 2, 14, 3, 3, 7, 0, 11};
    double d = logit_diff(orig, g, ids, 10), d_hd = logit_diff(head_dim, g, ids, 10);
    print_message("  gemma2 46 layers: max |logit difference| %.3g; %.3g from head_dim's scale\n", d, d_hd);
    assert_true(d <= 1e-5);
    assert_true(d_hd > 1e-4);
    lp_model_free(g);
    lp_model_free(head_dim);
    lp_model_free(orig);
    rm_tree(dir);
}

/* GPT-NeoX: the fused query_key_value, which the converter reorders into all q rows, then k,
 * then v, is read back in its per-head order (equal logits above); the rotary width is
 * gptneox.rope.dimension_count exactly, 30 of 44 here, where int(44 * (30 / 44.0)) would give
 * 29; the parallel residual follows gptneox.use_parallel_residual. */
static void neox_files_keep_their_rotary_width_and_residual(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char mdir[4200];
    snprintf(mdir, sizeof mdir, "%s/rot6", dir);
    assert_int_equal(mkmodel(mdir, NEOX_ROT30 " >/dev/null"), 0);
    lp_model *orig, *g;
    assert_int_equal(lp_model_load(&orig, mdir, NULL), LP_OK);
    int rc = lp_model_load(&g, DIR_GGUF "neox_rot30.f32.gguf", NULL);
    if (rc) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_model_config(g)->rope_dims, 30);
    assert_int_equal(lp_model_config(orig)->rope_dims, 30);
    int ids[8] = {1, 5, 9, 2, 14, 3, 3, 7};
    double d = logit_diff(orig, g, ids, 8);
    print_message("  neox 30 of 44 rotated: max |logit difference| %.3g\n", d);
    assert_true(d <= 1e-6);
    lp_model_free(g);
    lp_model_free(orig);
    const char *files[2] = {DIR_GGUF "neox_parallel.f32.gguf", DIR_GGUF "neox_sequential.f32.gguf"};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(lp_model_load(&g, files[k], NULL), LP_OK);
        assert_int_equal(lp_model_config(g)->parallel_block, k == 0);
        assert_int_equal(lp_model_config(g)->rope_dims, k == 0 ? 4 : 8);
        assert_false(lp_model_config(g)->tied_unembed);
        lp_model_free(g);
    }
    rm_tree(dir);
}

/* A model split by gguf-split (gguf_fixtures.py --split 3) loads from its first part with the
 * other two beside it and computes what the whole file does; another part, a missing part
 * and a part in the wrong place are refused, each naming the file. */
static void split_files_load_as_one(void **state) {
    (void)state;
    lp_model *whole, *split;
    assert_int_equal(lp_model_load(&whole, DIR_GGUF "llama_gqa_untied.f32.gguf", NULL), LP_OK);
    int rc = lp_model_load(&split, DIR_GGUF "llama_split.f32-00001-of-00003.gguf", NULL);
    if (rc) fail_msg("%s", lp_errmsg());
    int ids[6] = {1, 5, 9, 2, 14, 3};
    double d = logit_diff(whole, split, ids, 6);
    print_message("  3 parts: max |logit difference| %.3g from the one file\n", d);
    assert_true(d == 0);
    assert_non_null(lp_model_tokenizer(split));
    lp_model_free(split);
    lp_model_free(whole);
    lp_model *m = NULL;
    assert_int_not_equal(lp_model_load(&m, DIR_GGUF "llama_split.f32-00002-of-00003.gguf", NULL), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "open its first part"));
    char *dir = make_temp_dir();
    char cmd[8600], first[4300];
    snprintf(first, sizeof first, "%s/m-00001-of-00003.gguf", dir);
    /* part 3 missing; then part 3 where part 2 should be */
    snprintf(cmd, sizeof cmd, "cp " DIR_GGUF "llama_split.f32-00001-of-00003.gguf '%s' && cp " DIR_GGUF
             "llama_split.f32-00002-of-00003.gguf '%s/m-00002-of-00003.gguf'", first, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_not_equal(lp_model_load(&m, first, NULL), LP_OK);
    if (!strstr(lp_errmsg(), "m-00003-of-00003.gguf")) fail_msg("'%s' does not name the missing part", lp_errmsg());
    snprintf(cmd, sizeof cmd, "cp " DIR_GGUF "llama_split.f32-00003-of-00003.gguf '%s/m-00002-of-00003.gguf'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_not_equal(lp_model_load(&m, first, NULL), LP_OK);
    if (!strstr(lp_errmsg(), "says it is part 3 of 3, not part 2 of 3"))
        fail_msg("'%s' does not say the part is out of place", lp_errmsg());
    assert_null(m);
    rm_tree(dir);
}

/* Largest |difference| of two runs' resid_post over every layer and position. */
static double resid_diff(const lp_run *a, const lp_run *b, int n_layer) {
    double worst = 0;
    for (int l = 0; l < n_layer; l++) {
        lp_view va, vb;
        assert_int_equal(lp_run_view(a, LP_ACT_RESID_POST, l, -1, &va), LP_OK);
        assert_int_equal(lp_run_view(b, LP_ACT_RESID_POST, l, -1, &vb), LP_OK);
        for (int t = 0; t < va.shape[0]; t++)
            for (int j = 0; j < va.shape[1]; j++) {
                double d = fabs((double)va.data[t * va.stride[0] + j * va.stride[1]] -
                                vb.data[t * vb.stride[0] + j * vb.stride[1]]);
                worst = isnan(d) ? INFINITY : fmax(worst, d);
            }
    }
    return worst;
}

/* BERT: the converter keeps the BertModel of a BertForMaskedLM (no pooler, no heads). Its F32
 * file gives exactly the original's hidden states at every layer (F16: within F16's
 * rounding), with token types; its WordPiece vocabulary, stored in the converter's
 * "phantom space" form, tokenizes as the original's vocab.txt does: lowercased, accents
 * stripped, punctuation and CJK apart, "##" pieces, [MASK] whole, [CLS] A [SEP]. */
static void bert_files_give_the_hidden_states_of_their_originals(void **state) {
    (void)state;
    lp_model *orig, *g;
    assert_int_equal(lp_model_load(&orig, "tests/fixtures/encoders/bert_mlm", NULL), LP_OK);
    static const char *const texts[] = {
        "the cat sat on the mat.", "The QUICK brown fox, jumped over the lazy dog!", "He ran; she said: very good",
        "Caf\xc3\xa9 na\xc3\xafve \xc3\x89T\xc3\x89", "a [MASK] movie", "jumping   quickly\tran\n\npark",
        "\xe4\xb8\xad\xe6\x96\x87 text", "unknownword xyzzy's", "",
    };
    const char *files[2] = {DIR_GGUF "bert_mlm.f32.gguf", DIR_GGUF "bert_mlm.f16.gguf"};
    for (int k = 0; k < 2; k++) {
        int rc = lp_model_load(&g, files[k], NULL);
        if (rc) fail_msg("%s", lp_errmsg());
        const lp_config *c = lp_model_config(g);
        assert_string_equal(c->arch, "BertModel");
        assert_false(c->causal);
        assert_int_equal(c->type_vocab, 2);
        const lp_tokenizer *tg = lp_model_tokenizer(g), *to = lp_model_tokenizer(orig);
        assert_non_null(tg);
        double worst = 0;
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            int a[64], b[64], na, nb;
            const char *s = texts[i];
            assert_int_equal(lp_tokenizer_encode(tg, s, strlen(s), true, a, 64, &na), LP_OK);
            assert_int_equal(lp_tokenizer_encode(to, s, strlen(s), true, b, 64, &nb), LP_OK);
            if (na != nb || memcmp(a, b, (size_t)na * sizeof *a)) fail_msg("'%s': %d ids, vocab.txt %d", s, na, nb);
            int types[64] = {0};
            for (int j = na / 2; j < na; j++) types[j] = 1;
            lp_run *ra, *rb;
            assert_int_equal(lp_run_new_typed(&ra, orig, b, types, nb), LP_OK);
            assert_int_equal(lp_run_new_typed(&rb, g, a, types, na), LP_OK);
            worst = fmax(worst, resid_diff(ra, rb, c->n_layer));
            lp_run_free(ra);
            lp_run_free(rb);
        }
        print_message("  bert_mlm %s: %zu texts tokenized as vocab.txt does; max |hidden state difference| %.3g\n",
                      k ? "f16" : "f32", sizeof texts / sizeof *texts, worst);
        assert_true(k == 0 ? worst == 0 : worst < 0.05);
        lp_model_free(g);
    }
    lp_model_free(orig);
}

/* A Q8_0 file (quantised by the script as llama.cpp's reference quantiser does) gives the
 * logits of the F32 file of its values as the script's reference decoder reads them: the
 * quantised rows are decoded and then un-permuted like the others. And they are not the
 * original's: the quantised weights are the ones in use. */
static void q8_0_model_computes_with_its_decoded_weights(void **state) {
    (void)state;
    fixture_model fm[16];
    int n_fm = read_models(fm, 16);
    const fixture_model *f = find_fixture(fm, n_fm, "llama_gqa_untied");
    assert_non_null(f);
    lp_model *q, *ref, *orig;
    assert_int_equal(lp_model_load(&q, DIR_GGUF "llama_gqa_untied.q8_0.gguf", NULL), LP_OK);
    assert_int_equal(lp_model_load(&ref, DIR_GGUF "llama_gqa_untied.q8_0-decoded.gguf", NULL), LP_OK);
    assert_int_equal(lp_model_load(&orig, DIR_GGUF "llama_gqa_untied.f32.gguf", NULL), LP_OK);
    assert_string_equal(lp_model_dtype(q), "Q8_0");
    char from[64];
    assert_int_equal(lp_model_dequantised_from(q, from, sizeof from), 3);
    assert_string_equal(from, "F32, Q8_0, F16"); /* norms; q (rows of 32: whole blocks); down (rows of 48) */
    double d = logit_diff(ref, q, f->ids, f->n), d_orig = logit_diff(orig, q, f->ids, f->n);
    print_message("  Q8_0 max |logit difference| %.3g from its decoded weights, %.3g from the F32 original\n", d,
                  d_orig);
    assert_true(d <= 1e-6);
    assert_true(d_orig > 1e-3);
    lp_model_free(orig);
    lp_model_free(ref);
    lp_model_free(q);
}

/* Every quantised tensor of quant.gguf beside NAME.expected, the script's decoding: equal
 * bit for bit (the products are formed in float in the same order). */
static void blocks_decode_as_the_reference_does(void **state) {
    (void)state;
    lp_gguf *g;
    int rc = lp_gguf_open(&g, DIR_GGUF "quant.gguf");
    if (rc) fail_msg("%s", lp_errmsg());
    static const char *const NAMES[] = {"q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "bf16", "f16"};
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++) {
        char ename[64];
        snprintf(ename, sizeof ename, "%s.expected", NAMES[i]);
        const lp_gguf_tensor *t = lp_gguf_find_tensor(g, NAMES[i]), *e = lp_gguf_find_tensor(g, ename);
        assert_non_null(t);
        assert_non_null(e);
        assert_int_equal(e->type, LP_GGML_F32);
        assert_int_equal(t->n_elem, e->n_elem);
        assert_true(lp_ggml_type_readable(t->type));
        float *got = malloc(t->n_elem * sizeof *got);
        assert_int_equal(lp_ggml_dequantize(t->type, t->data, got, t->n_elem), LP_OK);
        size_t mismatches = 0;
        double scale = 0;
        for (size_t k = 0; k < t->n_elem; k++) {
            float want;
            memcpy(&want, e->data + 4 * k, 4);
            mismatches += memcmp(&want, &got[k], 4) != 0;
            scale = fmax(scale, fabs(want));
        }
        print_message("  %-5s %zu values, %zu differ, max |value| %.3g\n", NAMES[i], (size_t)t->n_elem, mismatches,
                      scale);
        assert_int_equal(mismatches, 0);
        assert_true(scale > 0);
        free(got);
    }
    lp_gguf_free(g);
}

/* The tokenizers in the metadata (gpt2: tokens and merges; llama: tokens, scores, types,
 * byte fallback, BOS; gemma: llama's without the space prefix, tokenizer.ggml.add_space_prefix
 * false) give the ids of the script's reference tokenizers (tokens.json). */
static void metadata_tokenizers_match_the_reference(void **state) {
    (void)state;
    json_error_t e;
    json_t *ref = json_load_file(DIR_GGUF "tokens.json", 0, &e);
    if (!ref) fail_msg("tokens.json: %s", e.text);
    const char *kinds[3] = {"gpt2", "llama", "gemma"},
               *files[3] = {DIR_GGUF "gpt2.f32.gguf", DIR_GGUF "llama_gqa_untied.f32.gguf", DIR_GGUF "gemma2.f32.gguf"};
    for (int k = 0; k < 3; k++) {
        lp_model *m;
        assert_int_equal(lp_model_load(&m, files[k], NULL), LP_OK);
        const lp_tokenizer *t = lp_model_tokenizer(m);
        assert_non_null(t);
        assert_int_equal(lp_tokenizer_adds_bos(t), k >= 1); /* tokenizer.ggml.add_bos_token */
        size_t i;
        json_t *c;
        int checked = 0;
        json_array_foreach(json_object_get(ref, kinds[k]), i, c) {
            const char *text = json_string_value(json_object_get(c, "text"));
            json_t *want = json_object_get(c, "ids");
            int ids[64], n;
            assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), lp_tokenizer_adds_bos(t), ids, 64, &n), LP_OK);
            bool same = n == (int)json_array_size(want);
            for (int j = 0; same && j < n; j++) same = ids[j] == json_integer_value(json_array_get(want, (size_t)j));
            if (!same) fail_msg("%s: '%s' gave %d ids, the reference %zu", kinds[k], text, n, json_array_size(want));
            checked++;
        }
        print_message("  %-5s %d texts tokenized as the reference does\n", kinds[k], checked);
        assert_true(checked >= 5);
        /* decoding gives the text back: the prefix space, when there is one, is dropped */
        int ids[16], n;
        char text[64];
        size_t len;
        assert_int_equal(lp_tokenizer_encode(t, " hello world", 12, false, ids, 16, &n), LP_OK);
        assert_int_equal(lp_tokenizer_decode(t, ids, n, text, sizeof text, &len), LP_OK);
        assert_string_equal(text, " hello world");
        lp_model_free(m);
    }
    json_decref(ref);
}

/* tokenizer.ggml.pre: each name splits as the model's tokenizer.json does. The same
 * byte-level vocabulary (gguf_fixtures.py pretok) as GGUF metadata and as tokenizer.json
 * gives the same ids on llama.cpp's 47 GPT-2 test strings and on strings whose splits tell
 * the names apart; those are checked against splits worked out by hand (the ids of a text
 * are those of its pieces encoded one by one): digits whole (GPT-2), in threes (Llama 3)
 * or one by one (Qwen2); "'S" a contraction only under (?i:); a punctuation mark joined to
 * the letters after it, newlines kept together; and Llama 3 takes "wxyz", a token no merge
 * spells, whole (ignore_merges) and adds BOS. */
#define SHARED_TOK "../shared/tokenizers"
static void encode_ok(const lp_tokenizer *t, const char *s, int *ids, int cap, int *n) {
    if (lp_tokenizer_encode(t, s, strlen(s), false, ids, cap, n)) fail_msg("'%s': %s", s, lp_errmsg());
}

static void pretokenizers_split_as_their_tokenizer_json(void **state) {
    (void)state;
    static const char *const pres[3] = {"gpt-2", "llama-bpe", "qwen2"};
    /* a text, then its pieces under gpt-2, llama-bpe and qwen2 ("|" separated) */
    static const char *const split[][4] = {
        {"3333", "3333", "333|3", "3|3|3|3"},
        {"HELLO'S", "HELLO|'|S", "HELLO|'S", "HELLO|'S"},
        {"a,wow", "a|,|wow", "a|,wow", "a|,wow"},
        {"a\n\nb", "a|\n|\n|b", "a|\n\n|b", "a|\n\n|b"},
        {" 12345 x", " 12345| x", " |123|45| x", " |1|2|3|4|5| x"},
    };
    char *inp;
    size_t inp_len;
    assert_int_equal(lp_file_read_new(SHARED_TOK "/tests/gpt2.inp", &inp, &inp_len), LP_OK);
    int first[5][16], n_first[5];
    for (int p = 0; p < 3; p++) {
        char path[256];
        snprintf(path, sizeof path, DIR_GGUF "pre_%s.gguf", pres[p]);
        lp_gguf *g;
        lp_tokenizer *tg = NULL, *tj = NULL;
        assert_int_equal(lp_gguf_open(&g, path), LP_OK);
        if (lp_tokenizer_load_gguf(&tg, g)) fail_msg("%s", lp_errmsg());
        snprintf(path, sizeof path, DIR_GGUF "pre_%s.tokenizer.json", pres[p]);
        if (lp_tokenizer_load_json(&tj, path)) fail_msg("%s", lp_errmsg());
        assert_int_equal(lp_tokenizer_adds_bos(tg), p == 1);
        int texts = 0, a[512], b[512], na, nb;
        static const char sep[] = "\n__ggml_vocab_test__\n";
        for (char *at = inp; at < inp + inp_len; texts++) {
            char *next = strstr(at, sep);
            size_t len = next ? (size_t)(next - at) : strlen(at);
            assert_int_equal(lp_tokenizer_encode(tg, at, len, false, a, 512, &na), LP_OK);
            assert_int_equal(lp_tokenizer_encode(tj, at, len, false, b, 512, &nb), LP_OK);
            bool same = na == nb;
            for (int i = 0; same && i < na; i++) same = a[i] == b[i];
            if (!same) fail_msg("%s: text %d (%.*s) gives %d ids, tokenizer.json %d", pres[p], texts, (int)len, at, na, nb);
            if (!next) break;
            at = next + strlen(sep);
        }
        for (size_t k = 0; k < sizeof split / sizeof *split; k++) {
            encode_ok(tg, split[k][0], a, 512, &na);
            encode_ok(tj, split[k][0], b, 512, &nb);
            assert_int_equal(na, nb);
            assert_memory_equal(a, b, (size_t)na * sizeof *a);
            char pieces[64];
            snprintf(pieces, sizeof pieces, "%s", split[k][1 + p]);
            nb = 0;
            for (char *piece = strtok(pieces, "|"); piece; piece = strtok(NULL, "|")) {
                int n;
                encode_ok(tg, piece, b + nb, 512 - nb, &n);
                nb += n;
            }
            if (na != nb || memcmp(a, b, (size_t)na * sizeof *a))
                fail_msg("%s: '%s' is not split as %s", pres[p], split[k][0], split[k][1 + p]);
            if (k == 0) { /* the digits tell all three apart */
                for (int q = 0; q < p; q++)
                    assert_true(n_first[q] != na || memcmp(first[q], a, (size_t)na * sizeof *a));
                memcpy(first[p], a, (size_t)na * sizeof *a);
                n_first[p] = na;
            }
        }
        encode_ok(tg, "wxyz", a, 512, &na);
        assert_int_equal(na, p == 1 ? 1 : 4);
        print_message("  %-9s %d test strings as its tokenizer.json, %zu splits as worked out\n", pres[p], texts + 1,
                      sizeof split / sizeof *split);
        assert_int_equal(texts + 1, 47);
        lp_tokenizer_free(tj);
        lp_tokenizer_free(tg);
        lp_gguf_free(g);
    }
    free(inp);
}

/* ---- malformed files, built byte by byte ---- */

typedef struct {
    unsigned char b[4096];
    size_t n;
} bytes;

static void put(bytes *o, const void *p, size_t n) {
    assert_true(o->n + n <= sizeof o->b);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void u32(bytes *o, uint32_t v) { put(o, &v, 4); }
static void u64(bytes *o, uint64_t v) { put(o, &v, 8); }
static void str(bytes *o, const char *s) {
    u64(o, strlen(s));
    put(o, s, strlen(s));
}
/* Bytes after a cut-short field, so that the header's counts are plausible for the file size. */
static void filler(bytes *o) {
    for (int i = 0; i < 8; i++) u64(o, 0);
}
static void pad_to(bytes *o, size_t align) {
    while (o->n % align) o->b[o->n++] = 0;
}

/* GGUF v3 with n_kv pairs and n_t tensors to follow. */
static void header(bytes *o, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    o->n = 0;
    put(o, "GGUF", 4);
    u32(o, version);
    u64(o, n_t);
    u64(o, n_kv);
}

static void tensor_info(bytes *o, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    str(o, name);
    u32(o, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) u64(o, ne[i]);
    u32(o, type);
    u64(o, off);
}

static void expect_error(const bytes *o, const char *needle) {
    lp_gguf *g = NULL;
    int rc = lp_gguf_parse(&g, o->b, o->n, "bad.gguf");
    if (rc == LP_OK) fail_msg("accepted a file that should fail with '%s'", needle);
    assert_null(g);
    const char *msg = lp_errmsg();
    if (!strstr(msg, needle) || strncmp(msg, "bad.gguf: ", 10) != 0)
        fail_msg("message '%s' does not start with the file and say '%s'", msg, needle);
}

static void malformed_files_are_refused_with_one_clear_message(void **state) {
    (void)state;
    bytes o;
    uint64_t ne2[2] = {32, 2}, ne1[1] = {8};
    /* a valid file first, so that each case below differs from it in one field */
    header(&o, 3, 1, 1);
    str(&o, "general.alignment");
    u32(&o, LP_GGUF_U32);
    u32(&o, 64);
    tensor_info(&o, "w", 2, ne2, LP_GGML_F32, 0);
    pad_to(&o, 64);
    for (int i = 0; i < 64; i++) u32(&o, 0x3f800000u); /* 1.0f */
    lp_gguf *g;
    assert_int_equal(lp_gguf_parse(&g, o.b, o.n, "ok.gguf"), LP_OK);
    assert_int_equal(lp_gguf_tensor_count(g), 1);
    assert_int_equal(lp_gguf_find_tensor(g, "w")->data - o.b, 128);
    lp_gguf_free(g);
    bytes bad = o;
    bad.n = 10;
    expect_error(&bad, "truncated");
    bad = o;
    bad.b[0] = 'X';
    expect_error(&bad, "not a GGUF file");
    header(&bad, 1, 0, 0);
    expect_error(&bad, "version 1");
    header(&bad, 0x03000000u, 0, 0);
    expect_error(&bad, "big-endian");
    header(&bad, 3, 1u << 30, 0);
    expect_error(&bad, "more than");
    header(&bad, 3, 0, 1);
    u64(&bad, 1000);
    filler(&bad);
    expect_error(&bad, "length 1000");
    header(&bad, 3, 0, 1);
    str(&bad, "k");
    u32(&bad, LP_GGUF_ARRAY);
    u32(&bad, LP_GGUF_U32);
    u64(&bad, 1000000);
    filler(&bad);
    expect_error(&bad, "claims 1000000 values");
    header(&bad, 3, 0, 1);
    str(&bad, "k");
    u32(&bad, LP_GGUF_ARRAY);
    u32(&bad, LP_GGUF_STRING);
    u64(&bad, 1000000);
    filler(&bad);
    expect_error(&bad, "claims 1000000 strings");
    header(&bad, 3, 0, 1);
    str(&bad, "k");
    u32(&bad, LP_GGUF_ARRAY);
    u32(&bad, LP_GGUF_ARRAY);
    u64(&bad, 0);
    filler(&bad);
    expect_error(&bad, "array of arrays");
    header(&bad, 3, 0, 1);
    str(&bad, "k");
    u32(&bad, LP_GGUF_BOOL);
    put(&bad, "\2\0\0\0", 4);
    filler(&bad);
    expect_error(&bad, "bool value 2");
    header(&bad, 3, 0, 1);
    str(&bad, "k");
    u32(&bad, 13);
    u64(&bad, 0);
    filler(&bad);
    expect_error(&bad, "value type 13");
    header(&bad, 3, 0, 2);
    str(&bad, "k");
    u32(&bad, LP_GGUF_U8);
    put(&bad, "\1", 1);
    str(&bad, "k");
    u32(&bad, LP_GGUF_U8);
    put(&bad, "\1", 1);
    u64(&bad, 0);
    filler(&bad);
    expect_error(&bad, "'k' appears twice");
    /* general.alignment: a u32 power of two */
    bad = o;
    bad.b[24 + 8 + 17 + 4] = 48;
    expect_error(&bad, "power of two");
    uint64_t ne5[5] = {1, 1, 1, 1, 1}, ne0[2] = {32, 0}, nebig[2] = {1ull << 40, 1ull << 40}, ne31[1] = {31};
    const struct {
        const char *name;
        uint32_t n_dims;
        const uint64_t *ne;
        uint32_t type;
        uint64_t off;
        const char *needle;
    } TI[] = {
        {"w", 5, ne5, LP_GGML_F32, 0, "5 dimensions"},
        {"w", 2, ne0, LP_GGML_F32, 0, "size 0"},
        {"w", 2, nebig, LP_GGML_F32, 0, "below 2^63"},
        {"w", 1, ne31, LP_GGML_Q8_0, 0, "not a multiple of the type's block of 32"},
        {"w", 1, ne1, 4, 0, "ggml type 4"},
        {"w", 1, ne1, LP_GGML_F32, 4, "not aligned"},
        {"w", 1, ne1, LP_GGML_F32, 1u << 20, "outside the data section"},
        {"", 1, ne1, LP_GGML_F32, 0, "tensor name is empty"},
        {"a_name_of_sixty_five_bytes_is_one_byte_longer_than_the_spec_allows", 1, ne1, LP_GGML_F32, 0,
         "longer than 64 bytes"},
    };
    for (size_t i = 0; i < sizeof TI / sizeof *TI; i++) {
        header(&bad, 3, 1, 0);
        tensor_info(&bad, TI[i].name, TI[i].n_dims, TI[i].ne, TI[i].type, TI[i].off);
        pad_to(&bad, 32);
        for (int k = 0; k < 16; k++) u32(&bad, 0);
        expect_error(&bad, TI[i].needle);
    }
    /* two tensors: the same name; overlapping data */
    for (int k = 0; k < 2; k++) {
        header(&bad, 3, 2, 0);
        tensor_info(&bad, "w", 1, ne1, LP_GGML_F32, 0);
        tensor_info(&bad, k ? "v" : "w", 1, ne1, LP_GGML_F32, k ? 0 : 32);
        pad_to(&bad, 32);
        for (int j = 0; j < 16; j++) u32(&bad, 0);
        expect_error(&bad, k ? "overlap" : "'w' appears twice");
    }
}

/* Files that parse but cannot make a model: each refused naming the file and the reason. */
static void unsupported_models_are_refused(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    bytes o;
    /* architecture gptj; then llama without its sizes; then a Q4_1 embedding; a gpt2 tokenizer
     * with another pre-tokenizer; gemma2 without its sizes; gemma2 with a soft cap of 0 */
    const char *arch[] = {"gptj", "llama", "llama", "llama", "gemma2", "gemma2"};
    const char *needle[] = {"'gptj' is not supported", "llama.embedding_length' is missing", "is Q4_1",
                            "tokenizer.ggml.pre 'falcon' is not supported (loupe knows default, gpt-2, olmo, llama-bpe",
                            "gemma2.embedding_length' is missing", "gemma2.attn_logit_softcapping is 0"};
    for (int k = 0; k < 6; k++) {
        header(&o, 3, k == 2 ? 2 : 1, k == 2 ? 6 : k == 3 ? 3 : k == 5 ? 7 : 1);
        str(&o, "general.architecture");
        u32(&o, LP_GGUF_STRING);
        str(&o, arch[k]);
        if (k == 2 || k == 5) {
            const char *keys[] = {"embedding_length", "feed_forward_length", "block_count", "attention.head_count",
                                  "context_length"};
            for (int i = 0; i < 5; i++) {
                char key[64];
                snprintf(key, sizeof key, "%s.%s", arch[k], keys[i]);
                str(&o, key);
                u32(&o, LP_GGUF_U32);
                u32(&o, i == 3 ? 1 : 32);
            }
        }
        if (k == 5) {
            str(&o, "gemma2.attn_logit_softcapping");
            u32(&o, LP_GGUF_F32);
            u32(&o, 0);
        }
        if (k == 3) { /* read by the tokenizer loader directly: the model would fail first */
            str(&o, "tokenizer.ggml.model");
            u32(&o, LP_GGUF_STRING);
            str(&o, "gpt2");
            str(&o, "tokenizer.ggml.pre");
            u32(&o, LP_GGUF_STRING);
            str(&o, "falcon");
        }
        uint64_t ne[2] = {32, 4};
        tensor_info(&o, "token_embd.weight", 2, ne, LP_GGML_F32, 0);
        if (k == 2) tensor_info(&o, "output_norm.weight", 1, ne, LP_GGML_Q4_1, 512);
        pad_to(&o, 32);
        for (int i = 0; i < 128 + 32; i++) u32(&o, 0);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(o.b, 1, o.n, f), o.n);
        fclose(f);
        lp_model *m = NULL;
        if (k == 3) {
            lp_gguf *g;
            lp_tokenizer *t = NULL;
            assert_int_equal(lp_gguf_open(&g, path), LP_OK);
            assert_int_equal(lp_tokenizer_load_gguf(&t, g), LP_EUNSUPPORTED);
            assert_null(t);
            lp_gguf_free(g);
        } else {
            assert_int_not_equal(lp_model_load(&m, path, NULL), LP_OK);
            assert_null(m);
        }
        if (!strstr(lp_errmsg(), needle[k]) || !strstr(lp_errmsg(), path))
            fail_msg("'%s' does not name the file and say '%s'", lp_errmsg(), needle[k]);
    }
    rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gguf_models_give_the_logits_of_their_originals),
        cmocka_unit_test(gemma2_files_compute_what_llama_cpp_computes),
        cmocka_unit_test(neox_files_keep_their_rotary_width_and_residual),
        cmocka_unit_test(bert_files_give_the_hidden_states_of_their_originals),
        cmocka_unit_test(split_files_load_as_one),
        cmocka_unit_test(q8_0_model_computes_with_its_decoded_weights),
        cmocka_unit_test(blocks_decode_as_the_reference_does),
        cmocka_unit_test(metadata_tokenizers_match_the_reference),
        cmocka_unit_test(pretokenizers_split_as_their_tokenizer_json),
        cmocka_unit_test(malformed_files_are_refused_with_one_clear_message),
        cmocka_unit_test(unsupported_models_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
