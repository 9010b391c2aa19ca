/* T5 / mT5 encoder-decoders and T5EncoderModel against the float64 reference of
 * tests/fixtures/t5_reference.py (random checkpoints: ReLU and tied, gated-GELU and untied in
 * BF16, mT5 in F16, a bare encoder; heads x d_kv != d_model in each): both stacks' residual
 * streams, attention, cross-attention, every block's output and the logits within 1e-4
 * relative to max(1, |expected|); the relative position buckets exactly, against the
 * reference's float32 replay of Hugging Face's bucket function. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "helpers.h"
#include "kernels/forward.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/heads.h"
#include "loupe/lens.h"
#include "loupe/attr.h"
#include "loupe/circuits.h"
#include "loupe/grad.h"
#include "loupe/model.h"
#include "loupe/run.h"

#define TOL 1e-4
#define DIR "tests/fixtures/t5/"

static json_t *load_json(const char *path) {
    json_error_t err;
    json_t *e = json_load_file(path, 0, &err);
    if (!e) fail_msg("%s: %s", path, err.text);
    return e;
}

static int *json_ints(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *out = malloc((size_t)(*n ? *n : 1) * sizeof *out);
    for (int i = 0; i < *n; i++) out[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return out;
}

/* Worst |got - expected| / max(1, |expected|) of view v (any rank) against a nested JSON
 * array of the same shape, times scale (got * scale is compared). */
static double err_rec(json_t *e, const lp_view *v, int dim, const float *base, double scale, size_t *count) {
    if (dim == v->ndim) {
        (*count)++;
        double x = json_number_value(e), d = fabs(x - *base * scale) / fmax(1.0, fabs(x));
        return isnan(d) ? INFINITY : d;
    }
    if (!json_is_array(e) || json_array_size(e) != (size_t)v->shape[dim]) fail_msg("shape differs at dim %d", dim);
    double worst = 0;
    for (int i = 0; i < v->shape[dim]; i++) {
        double w = err_rec(json_array_get(e, (size_t)i), v, dim + 1, base + i * v->stride[dim], scale, count);
        if (w > worst) worst = w;
    }
    return worst;
}

static double view_err(const lp_run *r, lp_act_kind kind, int layer, json_t *expected, double scale) {
    lp_view v;
    if (lp_run_view(r, kind, layer, -1, &v) != LP_OK) fail_msg("%s: %s", lp_act_name(kind), lp_errmsg());
    size_t n = 0;
    return err_rec(expected, &v, 0, v.data, scale, &n);
}

/* One stack's captures against the reference's {"resid", "attn", "attn_out", ...}. */
static double check_stack(const char *name, const char *stack, const lp_run *r, json_t *s, double out_scale) {
    const lp_config *c = lp_model_config(lp_run_model(r));
    double worst = 0, w;
    json_t *resid = json_object_get(s, "resid");
    assert_int_equal(json_array_size(resid), (size_t)c->n_layer + 1);
#define CHECK(kind, layer, exp, scale, what)                                                                 \
    do {                                                                                                     \
        if ((w = view_err(r, kind, layer, exp, scale)) > worst) worst = w;                                   \
        if (w > TOL) fail_msg("%s %s: %s of layer %d off by %g", name, stack, what, layer, w);               \
    } while (0)
    for (int l = 0; l < c->n_layer; l++) {
        CHECK(LP_ACT_RESID_PRE, l, json_array_get(resid, (size_t)l), 1.0, "resid_pre");
        CHECK(LP_ACT_PATTERN, l, json_array_get(json_object_get(s, "attn"), (size_t)l), 1.0, "pattern");
        CHECK(LP_ACT_ATTN_OUT, l, json_array_get(json_object_get(s, "attn_out"), (size_t)l), 1.0, "attn_out");
        CHECK(LP_ACT_MLP_OUT, l, json_array_get(json_object_get(s, "mlp_out"), (size_t)l), 1.0, "mlp_out");
        if (c->cross_attn) {
            CHECK(LP_ACT_CROSS_PATTERN, l, json_array_get(json_object_get(s, "cross"), (size_t)l), 1.0, "cross_pattern");
            CHECK(LP_ACT_CROSS_OUT, l, json_array_get(json_object_get(s, "cross_out"), (size_t)l), 1.0, "cross_out");
        }
    }
    CHECK(LP_ACT_RESID_POST, c->n_layer - 1, json_array_get(resid, (size_t)c->n_layer), 1.0, "resid_post");
    CHECK(LP_ACT_LN_FINAL, -1, json_object_get(s, "out"), out_scale, "the final norm");
#undef CHECK
    return worst;
}

static void test_forward_matches_reference(void **state) {
    (void)state;
    static const char *const models[] = {"t5_relu_tied", "flan_gated_untied", "mt5_gated", "t5_encoder"};
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        char dir[256], path[300];
        snprintf(dir, sizeof dir, DIR "%s", models[k]);
        snprintf(path, sizeof path, "%s/expected.json", dir);
        json_t *e = load_json(path);
        lp_model *m;
        if (lp_model_load(&m, dir, NULL) != LP_OK) fail_msg("%s: %s", models[k], lp_errmsg());
        assert_string_equal(lp_model_config(m)->arch, json_string_value(json_object_get(e, "arch")));
        int S, T;
        int *src = json_ints(json_object_get(e, "ids"), &S);
        lp_run *r;
        double worst;
        if (!json_object_get(e, "dec")) { /* T5EncoderModel: the model is the encoder */
            assert_null(lp_model_encoder(m));
            assert_int_equal(lp_run_new(&r, m, src, S), LP_OK);
            worst = check_stack(models[k], "encoder", r, json_object_get(e, "enc"), 1.0);
        } else {
            int *dec_in = json_ints(json_object_get(e, "decoder_input_ids"), &T);
            if (lp_run_new_seq2seq(&r, m, src, S, dec_in, T) != LP_OK) fail_msg("%s: %s", models[k], lp_errmsg());
            const lp_config *c = lp_model_config(m);
            worst = check_stack(models[k], "encoder", lp_run_source(r), json_object_get(e, "enc"), 1.0);
            /* ln_final holds the tied models' d_model^-0.5 rescale (folded into the norm) */
            double w = check_stack(models[k], "decoder", r, json_object_get(e, "dec"),
                                   c->tied_unembed ? sqrt((double)c->d_model) : 1.0);
            if (w > worst) worst = w;
            w = view_err(r, LP_ACT_LOGITS, -1, json_object_get(e, "logits"), 1.0);
            if (w > TOL) fail_msg("%s: logits off by %g", models[k], w);
            if (w > worst) worst = w;
            free(dec_in);
        }
        print_message("%-18s worst relative error %.2g\n", models[k], worst);
        lp_run_free(r);
        lp_model_free(m);
        free(src);
        json_decref(e);
    }
}

/* Every offset -300..300 for T5's defaults and the fixtures' small table, both directions:
 * the edges come from float32 logs, so a double computation would move some of them. */
static void test_relative_buckets_match_hugging_face(void **state) {
    (void)state;
    json_t *t = load_json(DIR "buckets.json");
    json_t *rel = json_object_get(t, "relative_positions");
    static const struct { const char *key; bool bidir; int nb, md; } tables[] = {
        {"bidirectional_32_128", true, 32, 128}, {"causal_32_128", false, 32, 128},
        {"bidirectional_8_20", true, 8, 20}, {"causal_8_20", false, 8, 20}};
    for (size_t k = 0; k < sizeof tables / sizeof *tables; k++) {
        json_t *want = json_object_get(t, tables[k].key);
        assert_int_equal(json_array_size(want), json_array_size(rel));
        for (size_t i = 0; i < json_array_size(rel); i++) {
            int r = (int)json_integer_value(json_array_get(rel, i));
            int b = lp_rel_bucket(r, tables[k].bidir, tables[k].nb, tables[k].md);
            if (b != json_integer_value(json_array_get(want, i)))
                fail_msg("%s: offset %d gives bucket %d, Hugging Face %lld", tables[k].key, r, b,
                         (long long)json_integer_value(json_array_get(want, i)));
        }
    }
    json_decref(t);
}

/* The decoder of an encoder-decoder cannot run alone, and a one-sequence model takes no
 * source: both say so instead of running something else. */
static void test_runs_need_the_right_inputs(void **state) {
    (void)state;
    lp_model *m, *e;
    assert_int_equal(lp_model_load(&m, DIR "t5_relu_tied", NULL), LP_OK);
    assert_int_equal(lp_model_load(&e, DIR "t5_encoder", NULL), LP_OK);
    int ids[] = {5, 6, 1};
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, ids, 3), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "encoder-decoder"));
    assert_int_equal(lp_run_new_seq2seq(&r, e, ids, 3, ids, 3), LP_EINVAL);
    int bad[] = {5, 600};
    assert_int_equal(lp_run_new_seq2seq(&r, m, bad, 2, ids, 3), LP_EINVAL);
    assert_int_equal(lp_run_new_seq2seq(&r, m, ids, 3, bad, 2), LP_EINVAL);
    assert_int_equal(lp_model_need_decoder(m, "dla"), LP_EUNSUPPORTED);
    /* the analyses that do not yet follow cross-attention refuse in the engine, not only in
     * the commands: the one-stack gradients (lp_grad_seq2seq has both) and lp_scan_heads
     * (lp_scan_heads_seq2seq scans them) */
    int dec[] = {0, 4, 7};
    lp_run *sr;
    assert_int_equal(lp_run_new_seq2seq(&sr, m, ids, 3, dec, 3), LP_OK);
    float heads[64];
    lp_objective obj = {LP_OBJ_LOGIT, 2, 5, -1};
    lp_grad *g;
    assert_int_equal(lp_grad_new(&g, sr, &obj), LP_EUNSUPPORTED);
    lp_scan_options so = {0};
    int len;
    assert_int_equal(lp_scan_heads(m, &so, heads, &len), LP_EUNSUPPORTED);
    lp_run_free(sr);
    /* a run of the encoder alone has no cross-attention to show */
    assert_int_equal(lp_run_new(&r, e, ids, 3), LP_OK);
    lp_view v;
    assert_int_equal(lp_run_view(r, LP_ACT_CROSS_PATTERN, 0, 0, &v), LP_EINVAL);
    lp_run_free(r);
    lp_model_free(e);
    lp_model_free(m);
}

/* Decoding step by step through the key/value cache (cross keys and values computed once,
 * one new position per step) gives the teacher-forced run's logits at every position, and
 * greedy decoding the reference's output. Worst difference measured: 5.9e-7 of the largest
 * logit (Haswell), 5.1e-7 (default kernel); bound 1e-5. */
static void test_cached_decoding_equals_the_teacher_forced_run(void **state) {
    (void)state;
    static const char *const models[] = {"t5_relu_tied", "flan_gated_untied", "mt5_gated"};
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        char dir[256], path[300];
        snprintf(dir, sizeof dir, DIR "%s", models[k]);
        snprintf(path, sizeof path, "%s/expected.json", dir);
        json_t *e = load_json(path);
        lp_model *m;
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        const lp_config *c = lp_model_config(m);
        int S, T;
        int *src = json_ints(json_object_get(e, "ids"), &S), *tgt = json_ints(json_object_get(e, "target_ids"), &T);
        int *dec = malloc((size_t)(T + 1) * sizeof *dec);
        dec[0] = c->start_id;
        memcpy(dec + 1, tgt, (size_t)T * sizeof *dec);
        lp_run *r;
        assert_int_equal(lp_run_new_seq2seq(&r, m, src, S, dec, T + 1), LP_OK);
        lp_generator *g;
        assert_int_equal(lp_generator_new_seq2seq(&g, m, T + 1, lp_run_source(r)), LP_OK);
        double worst = 0;
        for (int i = 0; i <= T; i++) {
            const float *lg, *want = lp_run_logits(r, i);
            assert_int_equal(lp_generator_feed(g, &dec[i], 1, &lg), LP_OK);
            double scale = 0, diff = 0;
            for (int j = 0; j < c->vocab; j++) {
                scale = fmax(scale, fabs(want[j]));
                diff = fmax(diff, fabs(lg[j] - want[j]));
            }
            worst = fmax(worst, diff / fmax(1.0, scale));
        }
        if (worst > 1e-5) fail_msg("%s: cached decoding differs from the run by %g", models[k], worst);
        print_message("%-18s cached vs teacher-forced %.2g\n", models[k], worst);
        lp_generator_free(g);
        /* greedy through the cache: the reference's greedy ids */
        int ng, out[16], start_id = c->start_id;
        json_t *greedy = json_object_get(e, "greedy");
        assert_int_equal(lp_generate_seq2seq(m, lp_run_source(r), &start_id, 1, (int)json_array_size(greedy), NULL, 1,
                                             out, &ng), LP_OK);
        assert_int_equal(ng, (int)json_array_size(greedy));
        for (int i = 0; i < ng; i++) assert_int_equal(out[i], json_integer_value(json_array_get(greedy, (size_t)i)));
        /* a decoder-only generator refuses an encoder-decoder, and a source must be its encoder's */
        assert_int_equal(lp_generator_new(&g, m, 8), LP_EUNSUPPORTED);
        assert_int_equal(lp_generator_new_seq2seq(&g, m, 8, r), LP_EINVAL);
        lp_run_free(r);
        lp_model_free(m);
        free(src);
        free(tgt);
        free(dec);
        json_decref(e);
    }
}

/* Cross-attention metrics against the definitions (heads.h) computed here from the reference's
 * own cross patterns (expected.json), for every decoder layer and head of one fixture. */
static void test_cross_metrics_follow_their_definitions(void **state) {
    (void)state;
    json_t *e = load_json(DIR "t5_relu_tied/expected.json");
    lp_model *m;
    assert_int_equal(lp_model_load(&m, DIR "t5_relu_tied", NULL), LP_OK);
    const lp_config *c = lp_model_config(m);
    int S, T;
    int *src = json_ints(json_object_get(e, "ids"), &S), *dec = json_ints(json_object_get(e, "decoder_input_ids"), &T);
    lp_run *r;
    assert_int_equal(lp_run_new_seq2seq(&r, m, src, S, dec, T), LP_OK);
    float *got = malloc((size_t)c->n_layer * c->n_head * LP_CROSS_METRIC_COUNT * sizeof *got);
    assert_int_equal(lp_cross_metrics(got, r), LP_OK);
    json_t *cross = json_object_get(json_object_get(e, "dec"), "cross");
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < c->n_head; h++) {
            json_t *A = json_array_get(json_array_get(cross, (size_t)l), (size_t)h);
            double ent = 0, mx = 0, eos = 0, off = 0, rising = 0;
            int prev = -1, hit[64] = {0};
            for (int i = 0; i < T; i++) {
                json_t *row = json_array_get(A, (size_t)i);
                double cen = 0;
                int arg = 0;
                for (int j = 0; j < S; j++) {
                    double p = json_number_value(json_array_get(row, (size_t)j));
                    ent -= p > 0 ? p * log(p) : 0;
                    cen += p * j;
                    if (p > json_number_value(json_array_get(row, (size_t)arg))) arg = j;
                }
                mx += json_number_value(json_array_get(row, (size_t)arg));
                eos += json_number_value(json_array_get(row, (size_t)S - 1));
                off += fabs(cen / (S - 1) - (double)i / (T - 1));
                if (prev >= 0) rising += arg >= prev;
                prev = arg;
                hit[arg] = 1;
            }
            int covered = 0;
            for (int j = 0; j < S; j++) covered += hit[j];
            double want[LP_CROSS_METRIC_COUNT] = {ent / T, mx / T, eos / T, 1 - off / T, rising / (T - 1),
                                                  (double)covered / S};
            const float *g = got + ((size_t)l * c->n_head + h) * LP_CROSS_METRIC_COUNT;
            for (int k = 0; k < LP_CROSS_METRIC_COUNT; k++)
                if (fabs(g[k] - want[k]) > 1e-4)
                    fail_msg("layer %d head %d: %s %g, by definition %g", l, h,
                             lp_cross_metric_name((lp_cross_metric)k), g[k], want[k]);
        }
    /* a run without a source has no cross-attention to measure */
    lp_model *enc;
    assert_int_equal(lp_model_load(&enc, DIR "t5_encoder", NULL), LP_OK);
    lp_run *er;
    assert_int_equal(lp_run_new(&er, enc, src, S), LP_OK);
    assert_int_equal(lp_cross_metrics(got, er), LP_EINVAL);
    lp_run_free(er);
    lp_model_free(enc);
    free(got);
    free(src);
    free(dec);
    lp_run_free(r);
    lp_model_free(m);
    json_decref(e);
}

/* The logit lens on the decoder: the last row is the model's own output (the final norm, with
 * the tied models' rescale in its weight, then the unembedding), at every position. */
static void test_lens_last_row_is_the_decoders_logits(void **state) {
    (void)state;
    static const char *const models[] = {"t5_relu_tied", "flan_gated_untied"};
    for (size_t k = 0; k < 2; k++) {
        char dir[256];
        snprintf(dir, sizeof dir, DIR "%s", models[k]);
        lp_model *m;
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        const lp_config *c = lp_model_config(m);
        int src[] = {37, 5, 212, 90, 1}, dec[] = {0, 44, 310, 9};
        lp_run *r;
        assert_int_equal(lp_run_new_seq2seq(&r, m, src, 5, dec, 4), LP_OK);
        float *lg = malloc((size_t)c->vocab * sizeof *lg);
        for (int pos = 0; pos < 4; pos++) {
            assert_int_equal(lp_lens_logits(r, c->n_layer, pos, lg), LP_OK);
            const float *want = lp_run_logits(r, pos);
            for (int j = 0; j < c->vocab; j++)
                if (fabsf(lg[j] - want[j]) > 1e-5f * fmaxf(1.0f, fabsf(want[j])))
                    fail_msg("%s: lens %g, logits %g at pos %d id %d", models[k], lg[j], want[j], pos, j);
        }
        free(lg);
        lp_run_free(r);
        lp_model_free(m);
    }
}

/* DLA on the decoder: the embeddings, every self- and cross-attention head and every MLP,
 * through the frozen final norm (T5's rescale in its weight), add up to the logit at every
 * position, for the argmax and for a contrast; the cross heads' share is not negligible
 * (without it the sum would miss). Worst |total - logit| measured: 3.4e-7 (Haswell), 3.2e-7
 * (default kernel); bound 1e-4. */
static void test_dla_on_the_decoder_closes(void **state) {
    (void)state;
    static const char *const models[] = {"t5_relu_tied", "flan_gated_untied", "mt5_gated"};
    for (size_t k = 0; k < 3; k++) {
        char dir[256];
        snprintf(dir, sizeof dir, DIR "%s", models[k]);
        lp_model *m;
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        const lp_config *c = lp_model_config(m);
        int src[] = {37, 5, 212, 90, 41, 41, 7, 1}, dec[] = {0, 44, 310, 9, 9};
        lp_run *r;
        assert_int_equal(lp_run_new_seq2seq(&r, m, src, 8, dec, 5), LP_OK);
        size_t n = (size_t)c->n_layer * c->n_head;
        float *heads = malloc(n * sizeof *heads), *cross = malloc(n * sizeof *cross), *mlp = malloc((size_t)c->n_layer * sizeof *mlp);
        double worst = 0, cross_share = 0;
        for (int pos = 0; pos < 5; pos++) {
            const float *lg = lp_run_logits(r, pos);
            int top = 0;
            for (int j = 1; j < c->vocab; j++)
                if (lg[j] > lg[top]) top = j;
            for (int contrast = -1; contrast <= 0; contrast++) {
                int vs = contrast < 0 ? -1 : (top + 1) % c->vocab;
                lp_dla_sums S;
                assert_int_equal(lp_dla_seq2seq(r, pos, top, vs, heads, cross, mlp, &S), LP_OK);
                double sh = 0, sx = 0, sm = 0;
                for (size_t i = 0; i < n; i++) sh += heads[i], sx += cross[i];
                for (int l = 0; l < c->n_layer; l++) sm += mlp[l];
                assert_true(fabs(sh - S.heads) < 1e-4 && fabs(sx - S.cross) < 1e-4 && fabs(sm - S.mlp) < 1e-4);
                assert_false(S.linearised);
                worst = fmax(worst, fabs(S.total - S.logit) / fmax(1.0, fabs(S.logit)));
                cross_share = fmax(cross_share, fabs(S.cross) / fmax(1.0, fabs(S.logit)));
            }
        }
        if (worst > 1e-4) fail_msg("%s: dla's parts miss the logit by %g", models[k], worst);
        if (cross_share < 1e-2) fail_msg("%s: the cross heads' parts are all ~0 (%g)", models[k], cross_share);
        print_message("%-18s dla closure %.2g, largest cross share %.2f\n", models[k], worst, cross_share);
        free(heads), free(cross), free(mlp);
        lp_run_free(r);
        lp_model_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_relative_buckets_match_hugging_face),
        cmocka_unit_test(test_runs_need_the_right_inputs),
        cmocka_unit_test(test_cached_decoding_equals_the_teacher_forced_run),
        cmocka_unit_test(test_cross_metrics_follow_their_definitions),
        cmocka_unit_test(test_lens_last_row_is_the_decoders_logits),
        cmocka_unit_test(test_dla_on_the_decoder_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
