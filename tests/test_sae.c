/* Dictionaries of features: loupe's encode and decode against the float64 numpy reference
 * of tests/fixtures/sae_fixtures.py (every architecture, normalisation and format), the
 * commands on the bundled model, and hostile files refused with one line.
 *
 * Worst errors measured against the float64 reference (this machine), over all seventeen
 * dictionaries: activations 2.1e-6 / 2.2e-6, reconstructions 1.4e-6 / 1.7e-6 (OpenBLAS
 * Haswell / its own kernel) - within the 1e-5 the test holds to; Llama Scope's alone 5.1e-7 /
 * 4.2e-7 and 1.1e-6 / 1.2e-6. (Before layer_norm's way back left out the epsilon, as SAELens's does, its
 * reconstruction was 3.4e-5 off: the test caught it.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "commands/cmd.h"
#include "helpers.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/sae.h"
#include "loupe/safetensors.h"

#define FIX "tests/fixtures/sae"
#define TOL 1e-5

static double worst_acts, worst_recon;

/* |a - ref| over a (rows, cols) JSON array of arrays. */
static double max_err(const float *a, const json_t *ref, int rows, int cols) {
    double w = 0;
    assert_int_equal(json_array_size(ref), (size_t)rows);
    for (int i = 0; i < rows; i++) {
        json_t *r = json_array_get(ref, (size_t)i);
        assert_int_equal(json_array_size(r), (size_t)cols);
        for (int j = 0; j < cols; j++) {
            double e = fabs(a[(size_t)i * cols + j] - json_number_value(json_array_get(r, (size_t)j)));
            if (e > w) w = e;
        }
    }
    return w;
}

static void every_dictionary_matches_the_float64_reference(void **state) {
    (void)state;
    json_error_t je;
    json_t *ref = json_load_file(FIX "/reference.json", 0, &je);
    assert_non_null(ref);
    json_t *dicts = json_object_get(ref, "dicts");
    size_t k;
    json_t *e;
    json_array_foreach(dicts, k, e) {
        /* the inputs: the dictionary's own (a d_mlp-wide site's), else the shared ones */
        json_t *in = json_object_get(e, "inputs") ? json_object_get(e, "inputs") : json_object_get(ref, "inputs");
        int n = (int)json_array_size(in), d = (int)json_array_size(json_array_get(in, 0));
        float *x = malloc((size_t)n * d * sizeof *x);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++)
                x[(size_t)i * d + j] = (float)json_number_value(json_array_get(json_array_get(in, i), j));
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", json_string_value(json_object_get(e, "path")));
        lp_sae *s;
        if (lp_sae_load(&s, path) != LP_OK) fail_msg("%s: %s", path, lp_errmsg());
        const lp_sae_info *si = lp_sae_get_info(s);
        assert_int_equal(si->d_in, d);
        float *acts = malloc((size_t)n * si->d_sae * sizeof *acts), *recon = malloc((size_t)n * si->d_out * sizeof *recon);
        assert_int_equal(lp_sae_encode(s, x, n, acts), LP_OK);
        assert_int_equal(lp_sae_decode(s, acts, x, n, recon), LP_OK);
        double ea = max_err(acts, json_object_get(e, "acts"), n, si->d_sae);
        double er = max_err(recon, json_object_get(e, "recon"), n, si->d_out);
        if (ea > TOL || er > TOL) fail_msg("%s: acts off by %g, reconstruction by %g", path, ea, er);
        worst_acts = fmax(worst_acts, ea), worst_recon = fmax(worst_recon, er);
        free(acts), free(recon), free(x);
        lp_sae_free(s);
    }
    printf("worst error against float64 (%zu dictionaries): activations %.2g, reconstructions %.2g\n",
           json_array_size(dicts), worst_acts, worst_recon);
    json_decref(ref);
}

/* The same file read from memory with one change; it must be refused, with one line. */
static void refused(lp_sae_format fmt, const char *cfg, const void *w, size_t len, const char *expect) {
    lp_sae *s = NULL;
    int rc = lp_sae_parse(&s, fmt, cfg, cfg ? strlen(cfg) : 0, w, len, "hostile");
    if (rc == LP_OK) fail_msg("accepted, expected refusal mentioning '%s'", expect);
    assert_null(s);
    const char *m = lp_errmsg();
    assert_null(strchr(m, '\n'));
    if (!strstr(m, expect)) fail_msg("message '%s' lacks '%s'", m, expect);
}

static char *replace(const char *text, const char *from, const char *to) {
    const char *at = strstr(text, from);
    assert_non_null(at);
    char *out = malloc(strlen(text) + strlen(to) + 1);
    sprintf(out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return out;
}

typedef struct {
    const char *from, *to, *expect;
} cfg_edit;

/* Each edit of a config (a SAELens cfg.json unless fmt says otherwise), with the weights w,
 * refused with its message. */
static void refused_edits_as(lp_sae_format fmt, const char *cfg, const char *w, size_t wl, const cfg_edit *edits,
                             size_t n) {
    for (size_t i = 0; i < n; i++) {
        char *c = replace(cfg, edits[i].from, edits[i].to);
        refused(fmt, c, w, wl, edits[i].expect);
        free(c);
    }
}

static void refused_edits(const char *cfg, const char *w, size_t wl, const cfg_edit *edits, size_t n) {
    refused_edits_as(LP_SAE_FMT_SAELENS, cfg, w, wl, edits, n);
}

static void hostile_files_are_refused_with_one_line(void **state) {
    (void)state;
    char *cfg, *w, *npz;
    size_t cl, wl, nl;
    assert_int_equal(lp_file_read_new(FIX "/saelens_jumprelu/cfg.json", &cfg, &cl), LP_OK);
    assert_int_equal(lp_file_read_new(FIX "/saelens_jumprelu/sae_weights.safetensors", &w, &wl), LP_OK);
    assert_int_equal(lp_file_read_new(FIX "/gemmascope_jumprelu/params.npz", &npz, &nl), LP_OK);
    lp_sae *s;
    assert_int_equal(lp_sae_parse(&s, LP_SAE_FMT_SAELENS, cfg, cl, w, wl, "ok"), LP_OK);
    lp_sae_free(s);
    assert_int_equal(lp_sae_parse(&s, LP_SAE_FMT_NPZ, NULL, 0, npz, nl, "ok"), LP_OK);
    lp_sae_free(s);

    refused(LP_SAE_FMT_SAELENS, cfg, w, wl / 2, "hostile");            /* truncated */
    refused(LP_SAE_FMT_NPZ, NULL, npz, nl - 100, "hostile");           /* truncated archive */
    refused(LP_SAE_FMT_SAELENS, "{\"d_in\": 64,", w, wl, "cfg.json");   /* not JSON */
    static const cfg_edit edits[] = {
        {"\"d_sae\": 32", "\"d_sae\": 33", "W_enc is (64, 32), but the config makes it (64, 33)"},
        {"\"d_sae\": 32", "\"d_sae\": 99999999999", "d_sae"},
        {"\"jumprelu\"", "\"matryoshka\"", "architecture \"matryoshka\""},
        {"\"constant_norm_rescale\"", "\"whiten\"", "normalize_activations"},
        {"\"jumprelu\"", "\"topk\", \"k\": 0", "\"k\""},
        {"\"jumprelu\"", "\"jumprelu\", \"hook_head_index\": 3", "hook_head_index"},
        {"\"jumprelu\"", "\"jumprelu\", \"activation_fn\": \"tanh-relu\"", "tanh-relu\" with architecture jumprelu"},
    };
    refused_edits(cfg, w, wl, edits, sizeof edits / sizeof *edits);
    /* a NaN in W_dec */
    lp_safetensors *st;
    assert_int_equal(lp_st_parse(&st, w, wl, "w"), LP_OK);
    const lp_st_tensor *t = lp_st_find(st, "W_dec");
    size_t off = (size_t)((const char *)t->data - w) + 4 * 7;
    lp_st_free(st);
    float nan = NAN;
    memcpy(w + off, &nan, 4);
    refused(LP_SAE_FMT_SAELENS, cfg, w, wl, "W_dec holds NaN at element 7");
    free(cfg), free(w), free(npz);

    /* the architectures beyond the four: a transcoder's and batchtopk's own refusals */
    assert_int_equal(lp_file_read_new(FIX "/saelens_transcoder/cfg.json", &cfg, &cl), LP_OK);
    assert_int_equal(lp_file_read_new(FIX "/saelens_transcoder/sae_weights.safetensors", &w, &wl), LP_OK);
    static const cfg_edit tc[] = {
        {"\"apply_b_dec_to_input\": false", "\"apply_b_dec_to_input\": true", "apply_b_dec_to_input"},
        {"\"d_out\": 64,", "", "\"d_out\""},
        {"\"d_out\": 64", "\"d_out\": 65", "W_dec is (32, 64), but the config makes it (32, 65)"},
        {"\"transcoder\"", "\"skip_transcoder\"", "no tensor W_skip"},
        {"\"transcoder\"", "\"jumprelu_transcoder\"", "no tensor threshold"},
        {"\"transcoder\"", "\"batchtopk\"", "no tensor threshold"},
        {"\"transcoder\"", "\"standard\", \"rescale_acts_by_decoder_norm\": true", "rescale_acts_by_decoder_norm"},
        {"\"transcoder\"", "\"transcoder\", \"activation_fn\": \"topk\"", "activation_fn"},
    };
    refused_edits(cfg, w, wl, tc, sizeof tc / sizeof *tc);
    free(cfg), free(w);
    assert_int_equal(lp_file_read_new(FIX "/saelens_batchtopk/cfg.json", &cfg, &cl), LP_OK);
    assert_int_equal(lp_file_read_new(FIX "/saelens_batchtopk/sae_weights.safetensors", &w, &wl), LP_OK);
    char *c = replace(cfg, "\"k\": 4.5", "\"k\": \"many\"");
    refused(LP_SAE_FMT_SAELENS, c, w, wl, "\"k\"");
    free(c);
    /* topk_threshold holds one number */
    assert_int_equal(lp_st_parse(&st, w, wl, "w"), LP_OK);
    t = lp_st_find(st, "topk_threshold");
    assert_non_null(t);
    assert_int_equal(t->ndim, 0);
    off = (size_t)((const char *)t->data - w);
    lp_st_free(st);
    double inf = INFINITY;
    memcpy(w + off, &inf, 8);
    refused(LP_SAE_FMT_SAELENS, cfg, w, wl, "topk_threshold is not finite");
    free(cfg), free(w);
}

/* Llama Scope's layout: found from its directory or either file, read as SAELens's llama_scope
 * loader makes it (one threshold scaled by s = sqrt(d_model) / the dataset's norm, s folded in
 * as expected_average_only_in), and a hyperparams.json it would misread refused. */
static void llama_scope_is_read_as_saelens_reads_it(void **state) {
    (void)state;
    static const char *const paths[] = {FIX "/llama_scope_l0a", FIX "/llama_scope_l0a/hyperparams.json",
                                        FIX "/llama_scope_l0a/checkpoints/final.safetensors",
                                        FIX "/llama_scope_l0a/checkpoints/"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        lp_sae *s;
        int rc = lp_sae_load(&s, paths[i]);
        if (i == 3) { /* the checkpoints folder is no dictionary's directory */
            assert_int_not_equal(rc, LP_OK);
            assert_non_null(strstr(lp_errmsg(), "Llama Scope (hyperparams.json + checkpoints/final.safetensors)"));
            continue;
        }
        if (rc) fail_msg("%s: %s", paths[i], lp_errmsg());
        const lp_sae_info *in = lp_sae_get_info(s);
        assert_int_equal(in->format, LP_SAE_FMT_LLAMA_SCOPE);
        assert_int_equal(in->arch, LP_SAE_JUMPRELU);
        assert_int_equal(in->norm, LP_SAE_NORM_EXPECTED_AVERAGE_ONLY_IN);
        assert_true(fabs(in->norm_scale - 8.0 / 11.25) < 1e-15);
        assert_false(in->apply_b_dec_to_input);
        assert_string_equal(in->hook_name, "blocks.0.hook_attn_out");
        assert_int_equal(in->d_sae, 32);
        lp_sae_free(s);
    }
    char *cfg, *w;
    size_t cl, wl;
    assert_int_equal(lp_file_read_new(FIX "/llama_scope_l0a/hyperparams.json", &cfg, &cl), LP_OK);
    assert_int_equal(lp_file_read_new(FIX "/llama_scope_l0a/checkpoints/final.safetensors", &w, &wl), LP_OK);
    static const cfg_edit edits[] = {
        {"\"d_sae\": 32", "\"d_sae\": 64", "encoder.weight is (32, 64), but the config makes it (64, 64)"},
        {"\"d_model\": 64", "\"d_model\": 1000000", "hyperparams.json's \"d_model\" must be an integer"},
        {"\"jump_relu_threshold\": 0.4375", "\"jump_relu_threshold\": -0.5", "jump_relu_threshold"},
        {"\"jump_relu_threshold\": 0.4375", "\"jump_relu_threshold\": \"high\"", "jump_relu_threshold"},
        {"\"in\": 11.25", "\"in\": 0", "dataset_average_activation_norm"},
        {"\"in\": 11.25", "\"inn\": 11.25", "dataset_average_activation_norm"},
        {"\"act_fn\": \"jumprelu\"", "\"act_fn\": \"relu\"", "act_fn \"relu\""},
        {"\"norm_activation\": \"dataset-wise\"", "\"norm_activation\": \"token-wise\"", "token-wise"},
        {"\"apply_decoder_bias_to_pre_encoder\": false", "\"apply_decoder_bias_to_pre_encoder\": true",
         "apply_decoder_bias_to_pre_encoder"},
        {"\"hook_point_in\": \"blocks.0.hook_attn_out\",", "", "no \"hook_point_in\""},
        {"\"hook_point_out\": \"blocks.0.hook_attn_out\"", "\"hook_point_out\": \"blocks.0.hook_mlp_out\"",
         "a transcoder"},
    };
    refused_edits_as(LP_SAE_FMT_LLAMA_SCOPE, cfg, w, wl, edits, sizeof edits / sizeof *edits);
    refused(LP_SAE_FMT_LLAMA_SCOPE, NULL, w, wl, "needs its hyperparams.json");
    refused(LP_SAE_FMT_LLAMA_SCOPE, cfg, w, wl - 7, "hostile"); /* truncated */
    /* SAELens's tensor names: W_enc as a SAELens file names it is not Llama Scope's */
    char *bad = malloc(wl);
    memcpy(bad, w, wl);
    char *at = memmem(bad, wl, "encoder.weight", 14);
    assert_non_null(at);
    memcpy(at, "encoder.wEIGHT", 14);
    refused(LP_SAE_FMT_LLAMA_SCOPE, cfg, bad, wl, "no tensor encoder.weight");
    free(bad), free(cfg), free(w);
}

static lp_session *session(void) {
    static lp_session s;
    lp_session_init(&s, fopen("/dev/null", "w"));
    assert_int_equal(lp_exec(&s, "load models/default"), LP_OK);
    assert_int_equal(lp_exec(&s, "run When Mary and John went to the store, John gave a drink to"), LP_OK);
    return &s;
}

static void end(lp_session *s) {
    fclose(s->out);
    lp_session_free(s);
}

static void commands_load_list_and_show_features(void **state) {
    (void)state;
    lp_session *s = session();
    assert_int_equal(lp_exec(s, "sae load " FIX "/saelens_standard --name std"), LP_OK);
    assert_int_equal(lp_exec(s, "sae load " FIX "/layers.1.mlp"), LP_OK);  /* a sparsify transcoder */
    assert_int_equal(lp_exec(s, "sae load " FIX "/llama_scope_l0a --name ls"), LP_OK); /* hook_point_in */
    assert_string_equal(s->saes[2].site, "blocks.0.attn_out");
    assert_int_equal(lp_exec(s, "sae drop ls"), LP_OK);
    assert_int_equal(s->n_saes, 2);
    assert_string_equal(s->saes[1].site, "blocks.1.ln2");
    assert_string_equal(s->saes[1].out_site, "blocks.1.mlp_out");
    /* no hook in params.npz: --site is needed, and its width must be d_in */
    assert_int_not_equal(lp_exec(s, "sae load " FIX "/gemmascope_jumprelu"), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "--site"));
    assert_int_not_equal(lp_exec(s, "sae load " FIX "/gemmascope_jumprelu --site blocks.0.mlp.hook_post"), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "256 wide"));
    assert_int_not_equal(lp_exec(s, "sae load " FIX "/saelens_standard --name std"), LP_OK); /* the name is taken */
    assert_int_equal(lp_exec(s, "sae load " FIX "/gemmascope_jumprelu --site blocks.1.hook_resid_post"), LP_OK);
    assert_int_equal(lp_exec(s, "sae stats"), LP_OK);

    /* features --mode json: one object per position, strongest first, at most K */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len), *old = s->out;
    s->out = mem, s->mode = LP_MODE_JSON;
    assert_int_equal(lp_exec(s, "features --sae std --k 4"), LP_OK);
    fclose(mem);
    s->out = old;
    json_error_t je;
    json_t *v = json_loads(buf, 0, &je);
    assert_non_null(v);
    assert_int_equal(json_array_size(v), 14);
    size_t i;
    json_t *p;
    json_array_foreach(v, i, p) {
        assert_int_equal(json_integer_value(json_object_get(p, "pos")), (json_int_t)i);
        json_t *fs = json_object_get(p, "features");
        assert_true(json_array_size(fs) <= 4);
        for (size_t j = 1; j < json_array_size(fs); j++)
            assert_true(json_real_value(json_object_get(json_array_get(fs, j - 1), "act")) >=
                        json_real_value(json_object_get(json_array_get(fs, j), "act")));
    }
    json_decref(v);
    free(buf);
    assert_int_equal(lp_exec(s, "feature 3 --sae std --k 3"), LP_OK);
    assert_int_not_equal(lp_exec(s, "feature 32 --sae std"), LP_OK);
    assert_int_equal(lp_exec(s, "sae drop std"), LP_OK);
    assert_int_equal(s->n_saes, 2);
    assert_int_equal(lp_exec(s, "load models/default"), LP_OK); /* a new model drops them */
    assert_int_equal(s->n_saes, 0);
    end(s);
}

/* feature's logit effects are the decoder row through the frozen final norm: for a resid_post
 * dictionary of the last layer, the effect of adding a * W_dec[f] at the position is, to first
 * order, a times it. Checked here against the row dotted by hand with dla's direction. */
static void logit_effects_are_dla_of_the_decoder_row(void **state) {
    (void)state;
    lp_session *s = session();
    const lp_config *c = lp_model_config(s->model);
    int d = c->d_model, V = c->vocab;
    float *row = calloc((size_t)d, sizeof *row), *lg = malloc((size_t)V * sizeof *lg), *lg2 = malloc((size_t)V * sizeof *lg2);
    row[5] = 1.0f;
    assert_int_equal(lp_sae_direction_logits(s->run, LP_ACT_RESID_POST, 1, row, 3, lg), LP_OK);
    /* linear in the row */
    row[5] = 2.0f;
    assert_int_equal(lp_sae_direction_logits(s->run, LP_ACT_RESID_POST, 1, row, 3, lg2), LP_OK);
    for (int v = 0; v < V; v++) assert_true(fabs(lg2[v] - 2 * lg[v]) < 1e-4);
    /* a constant row is removed by the LayerNorm's centring */
    for (int j = 0; j < d; j++) row[j] = 1.0f;
    assert_int_equal(lp_sae_direction_logits(s->run, LP_ACT_RESID_POST, 1, row, 3, lg), LP_OK);
    for (int v = 0; v < V; v++) assert_true(fabs(lg[v]) < 1e-4);
    assert_int_equal(lp_sae_direction_logits(s->run, LP_ACT_LN2, 1, row, 3, lg), LP_EUNSUPPORTED);
    free(row), free(lg), free(lg2);
    end(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_dictionary_matches_the_float64_reference),
        cmocka_unit_test(hostile_files_are_refused_with_one_line),
        cmocka_unit_test(llama_scope_is_read_as_saelens_reads_it),
        cmocka_unit_test(commands_load_list_and_show_features),
        cmocka_unit_test(logit_effects_are_dla_of_the_decoder_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
