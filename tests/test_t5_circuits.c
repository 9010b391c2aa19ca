/* Activation patching and the head scan on encoder-decoders (T5), against the float64
 * reference of tests/fixtures/t5_patch_reference.py (patch.json beside the fixture
 * checkpoints: ReLU and tied in F32, gated-GELU and untied in BF16): every sweep of both
 * stacks and whole patched logit vectors, within 1e-4 relative to max(1, |expected|); and the
 * scan's copy task, its scores against the metrics of its own runs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/circuits.h"
#include "loupe/error.h"
#include "loupe/heads.h"
#include "loupe/model.h"
#include "loupe/run.h"

#define TOL 1e-4
#define DIR "tests/fixtures/t5/"

static int *ints_of(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *out = malloc((size_t)(*n ? *n : 1) * sizeof *out);
    for (int i = 0; i < *n; i++) out[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return out;
}

static double rel_err(double got, double want) {
    double d = fabs(got - want) / fmax(1.0, fabs(want));
    return isnan(d) ? INFINITY : d;
}

typedef struct {
    lp_model *m;
    lp_run *clean, *corrupt;
    json_t *e;
    int target, contrast;
} fixture;

static void fixture_open(fixture *f, const char *name) {
    char dir[256], path[300];
    snprintf(dir, sizeof dir, DIR "%s", name);
    snprintf(path, sizeof path, "%s/patch.json", dir);
    json_error_t err;
    if (!(f->e = json_load_file(path, 0, &err))) fail_msg("%s: %s", path, err.text);
    assert_int_equal(lp_model_load(&f->m, dir, NULL), LP_OK);
    const char *keys[4] = {"clean_src", "clean_dec", "corrupt_src", "corrupt_dec"};
    int *ids[4], n[4];
    for (int k = 0; k < 4; k++) ids[k] = ints_of(json_object_get(f->e, keys[k]), &n[k]);
    assert_int_equal(lp_run_new_seq2seq(&f->clean, f->m, ids[0], n[0], ids[1], n[1]), LP_OK);
    assert_int_equal(lp_run_new_seq2seq(&f->corrupt, f->m, ids[2], n[2], ids[3], n[3]), LP_OK);
    for (int k = 0; k < 4; k++) free(ids[k]);
    f->target = (int)json_integer_value(json_object_get(f->e, "target"));
    f->contrast = (int)json_integer_value(json_object_get(f->e, "contrast"));
}

static void fixture_close(fixture *f) {
    lp_run_free(f->clean);
    lp_run_free(f->corrupt);
    lp_model_free(f->m);
    json_decref(f->e);
}

/* Every sweep of both stacks (encoder: resid_pre, attn_out, mlp_out by position, z by head;
 * decoder: those, cross_out by position and cross_z by head) and six whole patched logit
 * vectors equal the reference's. Worst measured: 3.4e-6 (Haswell), 3.6e-6 (default kernel); bound 1e-4. */
static void test_patch_matches_reference(void **state) {
    (void)state;
    static const char *const models[] = {"t5_relu_tied", "flan_gated_untied"};
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        fixture f;
        fixture_open(&f, models[k]);
        double worst = 0;
        for (int enc = 1; enc >= 0; enc--) {
            json_t *st = json_object_get(f.e, enc ? "enc" : "dec");
            for (int s = 0; s < LP_PATCH_ALL_SITE_COUNT; s++) {
                json_t *want = json_object_get(st, lp_patch_site_name((lp_patch_site)s));
                if (!want) continue;
                size_t rows = json_array_size(want), cols = json_array_size(json_array_get(want, 0));
                float *got = malloc(rows * cols * sizeof *got);
                if (lp_patch_sweep_stack(f.clean, f.corrupt, enc, (lp_patch_site)s, -1, f.target, f.contrast, got))
                    fail_msg("%s %s: %s", models[k], lp_patch_site_name((lp_patch_site)s), lp_errmsg());
                for (size_t i = 0; i < rows * cols; i++) {
                    double w = rel_err(got[i], json_number_value(json_array_get(json_array_get(want, i / cols), i % cols)));
                    if (w > TOL)
                        fail_msg("%s %s %s: layer %zu, column %zu off by %g", models[k], enc ? "enc" : "dec",
                                 lp_patch_site_name((lp_patch_site)s), i / cols, i % cols, w);
                    worst = fmax(worst, w);
                }
                free(got);
            }
        }
        size_t i;
        json_t *pl;
        int V = lp_model_config(f.m)->vocab;
        float *lg = malloc((size_t)V * sizeof *lg);
        json_array_foreach(json_object_get(f.e, "logits"), i, pl) {
            lp_patch_site site;
            assert_int_equal(lp_patch_site_from_name(json_string_value(json_object_get(pl, "site")), &site), LP_OK);
            lp_patch p = {site, (int)json_integer_value(json_object_get(pl, "layer")),
                          (int)json_integer_value(json_object_get(pl, "pos")),
                          (int)json_integer_value(json_object_get(pl, "head")),
                          strcmp(json_string_value(json_object_get(pl, "stack")), "enc") == 0};
            if (lp_patch_logits(f.clean, f.corrupt, &p, lg)) fail_msg("%s: %s", models[k], lp_errmsg());
            json_t *want = json_object_get(pl, "logits");
            for (int j = 0; j < V; j++) {
                double w = rel_err(lg[j], json_number_value(json_array_get(want, (size_t)j)));
                if (w > TOL) fail_msg("%s: patched logits %zu, id %d off by %g", models[k], i, j, w);
                worst = fmax(worst, w);
            }
        }
        free(lg);
        print_message("%-18s patch sweeps and logits: worst %.2g\n", models[k], worst);
        fixture_close(&f);
    }
}

/* Patching a run with itself changes nothing; against a run of another source over the same
 * decoder input, patching the encoder's whole input (resid_pre 0, every position) gives that
 * run's prediction, and patching the decoder's input (equal in both) gives the clean one. */
static void test_patch_identities(void **state) {
    (void)state;
    fixture f;
    fixture_open(&f, "t5_relu_tied");
    int S, T, *src = ints_of(json_object_get(f.e, "corrupt_src"), &S), *dec = ints_of(json_object_get(f.e, "clean_dec"), &T);
    lp_run *other;
    assert_int_equal(lp_run_new_seq2seq(&other, f.m, src, S, dec, T), LP_OK);
    const float *lo = lp_run_logits(other, T - 1), *lc = lp_run_logits(f.clean, T - 1);
    double want = (double)lo[f.target] - lo[f.contrast], clean = (double)lc[f.target] - lc[f.contrast];
    float got[3];
    lp_patch ps[] = {{LP_PATCH_RESID_PRE, 0, -1, -1, true}, {LP_PATCH_RESID_PRE, 0, -1, -1, false},
                     {LP_PATCH_CROSS_Z, 1, -1, 2, false}};
    assert_int_equal(lp_patch_metric(f.clean, other, ps, 2, f.target, f.contrast, got), LP_OK);
    assert_true(fabs(got[0] - want) < 1e-5 * fmax(1.0, fabs(want)));
    assert_true(got[1] == (float)clean);
    assert_int_equal(lp_patch_metric(f.clean, f.clean, ps, 3, f.target, f.contrast, got), LP_OK);
    for (int k = 0; k < 3; k++) assert_true(got[k] == (float)clean);
    lp_run_free(other);
    free(src), free(dec);
    fixture_close(&f);
}

/* Bad patches are refused with a message: encoder sites on a one-stack model, cross sites on
 * the encoder, layers and positions out of the encoder's range, sources of other lengths. */
static void test_patch_refusals(void **state) {
    (void)state;
    fixture f;
    fixture_open(&f, "t5_relu_tied");
    float out[64];
    lp_patch bad[] = {{LP_PATCH_CROSS_Z, 0, -1, 0, true}, {LP_PATCH_RESID_PRE, 2, 0, -1, true},
                      {LP_PATCH_RESID_PRE, 0, 10, -1, true}, {LP_PATCH_CROSS_OUT, 3, 0, -1, false},
                      {LP_PATCH_CROSS_OUT, 0, 0, 1, false}};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
        assert_int_equal(lp_patch_metric(f.clean, f.corrupt, &bad[k], 1, f.target, f.contrast, out), LP_EINVAL);
    int src[] = {37, 5, 1}, dec[] = {0, 44, 310, 9, 520};
    lp_run *shorter;
    assert_int_equal(lp_run_new_seq2seq(&shorter, f.m, src, 3, dec, 5), LP_OK);
    assert_int_equal(lp_patch_sweep_stack(f.clean, shorter, false, LP_PATCH_Z, -1, f.target, -1, out), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "sources of the same length"));
    lp_run_free(shorter);
    fixture_close(&f);
}

/* The mean of A[i, col(i)] over rows i in [from, rows) of a 2-D pattern view; col(i) =
 * i + off, or the fixed column `fixed` when it is >= 0. */
static double mean_at(const lp_view *v, int from, int off, int fixed) {
    double sum = 0;
    int rows = v->shape[0];
    for (int i = from; i < rows && (fixed >= 0 || i + off < v->shape[1]); i++)
        sum += v->data[(size_t)i * v->stride[0] + (fixed >= 0 ? fixed : i + off)];
    int n = fixed >= 0 ? rows - from : (off > 0 ? v->shape[1] - off : rows) - from;
    return sum / n;
}

/* The scan's copy task (t_1 .. t_N </s> copied by the decoder) and its scores: each the
 * mean over its sequences of what that sequence's run shows, recomputed here from the
 * patterns (prev/next token, the sinks, the aligned source position) and heads.h's cross
 * metrics; scores a kind does not have are NAN; refusals. */
static void test_scan_is_the_metrics_of_its_copy_task(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_load(&m, DIR "t5_relu_tied", NULL), LP_OK);
    const lp_config *c = lp_model_config(m), *ce = lp_model_config(lp_model_encoder(m));
    int H = c->n_head, N = 7, B = 3;
    lp_scan_options o = {N, B, 5, -1, {-1, -1}};
    size_t ne = (size_t)ce->n_layer * H, nd = (size_t)c->n_layer * H;
    float *enc = malloc((ne + 2 * nd) * LP_S2S_COUNT * sizeof *enc), *dec = enc + ne * LP_S2S_COUNT,
          *cross = dec + nd * LP_S2S_COUNT;
    int got_n;
    assert_int_equal(lp_scan_heads_seq2seq(m, &o, enc, dec, cross, &got_n), LP_OK);
    assert_int_equal(got_n, N);
    double *want = calloc((ne + 2 * nd) * LP_S2S_COUNT, sizeof *want), *wd = want + ne * LP_S2S_COUNT,
           *wx = wd + nd * LP_S2S_COUNT;
    float *xm = malloc(nd * LP_CROSS_METRIC_COUNT * sizeof *xm);
    for (int b = 0; b < B; b++) {
        int src[16], tgt[16], n;
        assert_int_equal(lp_scan_sequence(m, &o, b, src, &n), LP_OK);
        assert_int_equal(n, N + 1);
        assert_int_equal(src[N], c->eos_id);
        for (int i = 0; i < N; i++) {
            assert_true(src[i] != c->eos_id && src[i] != c->start_id);
            for (int j = 0; j < i; j++) assert_true(src[i] != src[j]);
        }
        tgt[0] = c->start_id;
        memcpy(tgt + 1, src, (size_t)N * sizeof *tgt);
        lp_run *r;
        assert_int_equal(lp_run_new_seq2seq(&r, m, src, n, tgt, n), LP_OK);
        const lp_run *er = lp_run_source(r);
        lp_view v;
        for (size_t i = 0; i < ne; i++) {
            assert_int_equal(lp_run_view(er, LP_ACT_PATTERN, (int)(i / H), (int)(i % H), &v), LP_OK);
            double *w = want + i * LP_S2S_COUNT, ent = 0;
            w[LP_S2S_PREV_TOKEN] += mean_at(&v, 1, -1, -1);
            w[LP_S2S_NEXT_TOKEN] += mean_at(&v, 0, 1, -1);
            w[LP_S2S_SOURCE_EOS] += mean_at(&v, 0, 0, N);
            for (int q = 0; q < n; q++)
                for (int k = 0; k < n; k++) {
                    double a = v.data[(size_t)q * v.stride[0] + k];
                    if (a > 0) ent -= a * log(a);
                }
            w[LP_S2S_BROAD] += ent / n / log(n);
        }
        assert_int_equal(lp_cross_metrics(xm, r), LP_OK);
        for (size_t i = 0; i < nd; i++) {
            assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, (int)(i / H), (int)(i % H), &v), LP_OK);
            wd[i * LP_S2S_COUNT + LP_S2S_PREV_TOKEN] += mean_at(&v, 1, -1, -1);
            wd[i * LP_S2S_COUNT + LP_S2S_FIRST_TOKEN] += mean_at(&v, 1, 0, 0);
            assert_int_equal(lp_run_view(r, LP_ACT_CROSS_PATTERN, (int)(i / H), (int)(i % H), &v), LP_OK);
            double *w = wx + i * LP_S2S_COUNT;
            const float *x = xm + i * LP_CROSS_METRIC_COUNT;
            w[LP_S2S_ALIGNED] += mean_at(&v, 0, 0, -1);
            w[LP_S2S_SOURCE_EOS] += mean_at(&v, 0, 0, N);
            assert_true(fabs(x[LP_CROSS_SOURCE_EOS] - mean_at(&v, 0, 0, N)) < 1e-6);
            w[LP_S2S_DIAGONAL] += x[LP_CROSS_DIAGONAL];
            w[LP_S2S_MONOTONIC] += x[LP_CROSS_MONOTONIC];
            w[LP_S2S_COVERAGE] += x[LP_CROSS_COVERAGE];
        }
        lp_run_free(r);
    }
    static const int has[3][LP_S2S_COUNT] = {{1, 1, 0, 1, 1, 0, 0, 0, 0}, {1, 0, 1, 0, 0, 0, 0, 0, 0},
                                             {0, 0, 0, 0, 1, 1, 1, 1, 1}};
    const float *got[3] = {enc, dec, cross};
    const double *exp_[3] = {want, wd, wx};
    size_t rows[3] = {ne, nd, nd};
    double worst = 0;
    for (int p = 0; p < 3; p++)
        for (size_t i = 0; i < rows[p] * LP_S2S_COUNT; i++) {
            int k = (int)(i % LP_S2S_COUNT);
            if (!has[p][k]) {
                assert_true(isnan(got[p][i]));
                continue;
            }
            double d = fabs(got[p][i] - exp_[p][i] / B);
            if (d > 1e-5) fail_msg("kind %d, head %zu, %s: %g, want %g", p, i / LP_S2S_COUNT,
                                   lp_seq2seq_scan_score_name((lp_seq2seq_scan_score)k), got[p][i], exp_[p][i] / B);
            worst = fmax(worst, d);
        }
    print_message("scan scores vs their runs: worst %.2g\n", worst);
    /* refusals: the one-stack scan, N too long, an encoder-decoder's scan of another model */
    float scores[64];
    assert_int_equal(lp_scan_heads(m, &o, scores, NULL), LP_EUNSUPPORTED);
    o.seq_len = lp_scan_max_len(m, &o) + 1;
    assert_int_equal(lp_scan_heads_seq2seq(m, &o, enc, dec, cross, NULL), LP_EINVAL);
    lp_model *e;
    assert_int_equal(lp_model_load(&e, DIR "t5_encoder", NULL), LP_OK);
    assert_int_equal(lp_scan_heads_seq2seq(e, &o, enc, dec, cross, NULL), LP_EINVAL);
    lp_model_free(e);
    free(enc), free(want), free(xm);
    lp_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patch_matches_reference),
        cmocka_unit_test(test_patch_identities),
        cmocka_unit_test(test_patch_refusals),
        cmocka_unit_test(test_scan_is_the_metrics_of_its_copy_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
