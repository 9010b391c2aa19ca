/* The T5 backward (grad_seq2seq.h) against the float64 autograd reference of
 * tests/fixtures/t5_grad_reference.py (grad.json beside t5_relu_tied: ReLU, tied, F32; and
 * flan_gated_untied: gated tanh-GELU, untied, BF16; heads x d_kv != d_model in both):
 * the input gradients of three objectives over the source and the target prefix, and every
 * parameter's gradient of the teacher-forced log-likelihood. */
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
#include "loupe/grad.h"
#include "loupe/grad_seq2seq.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "t5_grad_fixture.h"

static const char *const MODELS[] = {"t5_relu_tied", "flan_gated_untied"};

/* max |got - want| over a (rows, cols) JSON matrix, divided by max |want| (the gradient's scale). */
static double matrix_err(const float *got, json_t *want, int rows, int cols) {
    assert_int_equal(json_array_size(want), (size_t)rows);
    double diff = 0, scale = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            double w = json_number_value(json_array_get(json_array_get(want, (size_t)i), (size_t)j));
            double g = got[(size_t)i * cols + j];
            diff = isnan(g) ? INFINITY : fmax(diff, fabs(g - w));
            scale = fmax(scale, fabs(w));
        }
    return diff / fmax(scale, 1e-12);
}

/* The gradients of logit, logprob and logit_diff at decoder position 3 with respect to the
 * source's and the target's embeddings are autograd's, the rows after pos are exactly 0 and
 * the value is the reference's. Worst error / max |gradient| measured: 3.5e-6 (Haswell),
 * 3.9e-6 (default kernel), both on flan_gated_untied; bound 1e-4. */
static void test_input_gradients_match_autograd(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof MODELS / sizeof *MODELS; k++) {
        fixture f;
        open_fixture(&f, MODELS[k]);
        int d = lp_model_config(f.m)->d_model, pos = (int)json_integer_value(json_object_get(f.ref, "pos"));
        float *gs = malloc((size_t)f.S * d * sizeof *gs), *gt = malloc((size_t)f.T * d * sizeof *gt);
        double worst = 0;
        for (int kind = 0; kind <= LP_OBJ_LOGIT_DIFF; kind++) {
            lp_objective o = {(lp_objective_kind)kind, pos, (int)json_integer_value(json_object_get(f.ref, "target")),
                              (int)json_integer_value(json_object_get(f.ref, "contrast"))};
            const char *name = lp_objective_name(o.kind);
            double value;
            assert_int_equal(lp_grad_seq2seq(gs, gt, &value, f.r, &o), LP_OK);
            double want = json_number_value(json_object_get(json_object_get(f.ref, "value"), name));
            if (fabs(value - want) > 1e-4 * fmax(1, fabs(want)))
                fail_msg("%s %s: value %g, reference %g", MODELS[k], name, value, want);
            double es = matrix_err(gs, json_object_get(json_object_get(f.ref, "grad_src"), name), f.S, d);
            double et = matrix_err(gt, json_object_get(json_object_get(f.ref, "grad_tgt"), name), f.T, d);
            if (es > 1e-4 || et > 1e-4) fail_msg("%s %s: source off by %g, target by %g", MODELS[k], name, es, et);
            for (size_t i = (size_t)(pos + 1) * d; i < (size_t)f.T * d; i++) assert_true(gt[i] == 0.0f);
            worst = fmax(worst, fmax(es, et));
        }
        print_message("%-18s input gradients: worst error / max |g| %.2g\n", MODELS[k], worst);
        free(gs);
        free(gt);
        close_fixture(&f);
    }
}

/* Every parameter's gradient of sum_t log p(label_t), seeded as the trainer will seed it
 * (dlogits = onehot - softmax per position), against autograd's: each tensor's norm, its dot
 * product with a fixed pattern (a wrong entry anywhere moves it) and, for small tensors (the
 * norms, the relative bias tables), every value. The names are the checkpoint's, one for one.
 * Worst measured (Haswell; default kernel): norm 1.9e-6; 2.0e-6 relative, dot 7.8e-7; 7.4e-7 of
 * its bound, value 2.0e-6; 2.5e-6 of the tensor's norm; bounds 1e-4. */
static void test_parameter_gradients_match_autograd(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof MODELS / sizeof *MODELS; k++) {
        fixture f;
        open_fixture(&f, MODELS[k]);
        const lp_config *c = lp_model_config(f.m);
        int V = c->vocab, n;
        int *label = ints(json_object_get(f.ref, "target_ids"), &n);
        assert_int_equal(n, f.T);
        json_t *params = json_object_get(f.ref, "params");
        float *dl = malloc((size_t)f.T * V * sizeof *dl);
        double loss = 0;
        for (int t = 0; t < f.T; t++) {
            const float *lg = lp_run_logits(f.r, t);
            int y = label[t];
            double mx = lg[0], s = 0;
            for (int j = 1; j < V; j++) mx = fmax(mx, lg[j]);
            for (int j = 0; j < V; j++) s += exp(lg[j] - mx);
            loss += lg[y] - mx - log(s);
            for (int j = 0; j < V; j++) dl[(size_t)t * V + j] = (float)(-exp(lg[j] - mx) / s);
            dl[(size_t)t * V + y] += 1.0f;
        }
        double want_loss = json_number_value(json_object_get(f.ref, "loss"));
        if (fabs(loss - want_loss) > 1e-4 * fabs(want_loss)) fail_msg("%s: loss %g, reference %g", MODELS[k], loss, want_loss);
        lp_t5_grads *g;
        assert_int_equal(lp_t5_grads_new(&g, f.m), LP_OK);
        assert_int_equal(lp_grad_seq2seq_seeded(NULL, NULL, g, f.r, dl), LP_OK);
        int nt = lp_t5_grads_tensors(g, f.m, NULL, 0);
        lp_t5_grad_tensor *ts = malloc((size_t)nt * sizeof *ts);
        assert_int_equal(lp_t5_grads_tensors(g, f.m, ts, nt), nt);
        assert_int_equal((size_t)nt, json_object_size(params));
        double wn = 0, wd = 0, wv = 0;
        size_t total = 0;
        for (int i = 0; i < nt; i++) {
            json_t *p = json_object_get(params, ts[i].name);
            if (!p) fail_msg("%s: %s is not in the reference", MODELS[k], ts[i].name);
            total += ts[i].n;
            assert_int_equal(json_integer_value(json_array_get(json_object_get(p, "shape"), 0)), ts[i].rows);
            double norm = 0, dot = 0, rn = 0;
            for (size_t j = 0; j < ts[i].n; j++) {
                double r = (double)(j * 7919 % 1009) / 1009 - 0.5, x = ts[i].grad[j];
                norm += x * x, dot += x * r, rn += r * r;
            }
            norm = sqrt(norm);
            double wnorm = json_number_value(json_object_get(p, "norm")), wdot = json_number_value(json_object_get(p, "dot"));
            double en = fabs(norm - wnorm) / fmax(wnorm, 1e-12), ed = fabs(dot - wdot) / fmax(wnorm * sqrt(rn), 1e-12);
            json_t *vals = json_object_get(p, "values");
            double ev = 0;
            for (size_t j = 0; vals && j < ts[i].n; j++)
                ev = fmax(ev, fabs(ts[i].grad[j] - json_number_value(json_array_get(vals, j))) / fmax(wnorm, 1e-12));
            if (isnan(norm) || en > 1e-4 || ed > 1e-4 || ev > 1e-4)
                fail_msg("%s %s: norm %g (reference %g), dot off by %g, values by %g", MODELS[k], ts[i].name, norm,
                         wnorm, ed, ev);
            wn = fmax(wn, en), wd = fmax(wd, ed), wv = fmax(wv, ev);
        }
        assert_int_equal(total, g->n);
        print_message("%-18s %d parameter tensors: norm %.2g, dot %.2g, values %.2g\n", MODELS[k], nt, wn, wd, wv);
        /* a second run's gradients add to the first's */
        float first = g->dec_rel[0];
        assert_int_equal(lp_grad_seq2seq_seeded(NULL, NULL, g, f.r, dl), LP_OK);
        assert_true(fabsf(g->dec_rel[0] - 2 * first) <= 1e-6f * fmaxf(1, fabsf(first)));
        free(ts);
        lp_t5_grads_free(g);
        free(dl);
        free(label);
        close_fixture(&f);
    }
}

/* Central differences of loupe's own float32 forward (both stacks run from perturbed
 * embeddings, h = 1e-2) agree with the backward on coordinates of either side, on the smooth
 * gated-GELU fixture (ReLU kinks would need a smaller h than float32 allows). Measured: worst
 * |fd - g| 4.6e-5 (Haswell), 6.1e-5 (default kernel) against gradients of 0.03..0.16; bound
 * 5e-4 + 1e-2 |g|. */
static void test_input_gradients_match_finite_differences(void **state) {
    (void)state;
    fixture f;
    open_fixture(&f, "flan_gated_untied");
    const lp_model *e = lp_model_encoder(f.m);
    int d = lp_model_config(f.m)->d_model, Tp = f.pos + 1;
    lp_objective o = {LP_OBJ_LOGPROB, f.pos, f.target, -1};
    float *gs = malloc((size_t)f.S * d * sizeof *gs), *gt = malloc((size_t)f.T * d * sizeof *gt);
    float *xs = malloc((size_t)f.S * d * sizeof *xs), *xt = malloc((size_t)Tp * d * sizeof *xt);
    assert_int_equal(lp_grad_seq2seq(gs, gt, NULL, f.r, &o), LP_OK);
    lp_embed(xs, e, f.src, NULL, 0, f.S);
    lp_embed(xt, f.m, f.dec, NULL, 0, Tp);
    static const int coords[][3] = {{0, 0, 3}, {0, 7, 30}, {0, 19, 11}, {1, 1, 5}, {1, 2, 17}, {1, 3, 0}};
    const float h = 1e-2f;
    double worst = 0, gmin = INFINITY, gmax = 0;
    for (size_t k = 0; k < sizeof coords / sizeof *coords; k++) {
        float *x = coords[k][0] ? xt : xs, g = (coords[k][0] ? gt : gs)[coords[k][1] * d + coords[k][2]];
        float keep = x[coords[k][1] * d + coords[k][2]];
        double fv[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            x[coords[k][1] * d + coords[k][2]] = keep + (sgn ? -h : h);
            lp_run *r;
            assert_int_equal(lp_run_new_seq2seq_embedded(&r, f.m, f.src, xs, f.S, f.dec, xt, Tp), LP_OK);
            fv[sgn] = lp_objective_value(&o, lp_run_logits(r, f.pos), lp_model_config(f.m)->vocab);
            lp_run_free(r);
        }
        x[coords[k][1] * d + coords[k][2]] = keep;
        double fd = (fv[0] - fv[1]) / (2 * h), e2 = fabs(fd - g);
        if (e2 > 5e-4 + 1e-2 * fabs(g))
            fail_msg("%s row %d col %d: finite differences %g, backward %g", coords[k][0] ? "target" : "source",
                     coords[k][1], coords[k][2], fd, g);
        worst = fmax(worst, e2);
        gmin = fmin(gmin, fabs(g)), gmax = fmax(gmax, fabs(g));
    }
    print_message("finite differences vs backward: worst %.2g (|g| %.2g..%.2g)\n", worst, gmin, gmax);
    free(gs), free(gt), free(xs), free(xt);
    close_fixture(&f);
}

/* What is not an encoder-decoder run, or not a valid objective, is refused with a message;
 * the one-stack backward refuses encoder-decoders instead of differentiating the decoder
 * alone. */
static void test_refusals(void **state) {
    (void)state;
    fixture f;
    open_fixture(&f, "t5_relu_tied");
    float g[64 * 32];
    lp_objective bad_pos = {LP_OBJ_LOGIT, f.T, 5, -1}, bad_id = {LP_OBJ_LOGIT_DIFF, 0, 5, 600};
    assert_int_equal(lp_grad_seq2seq(g, NULL, NULL, f.r, &bad_pos), LP_EINVAL);
    assert_int_equal(lp_grad_seq2seq(g, NULL, NULL, f.r, &bad_id), LP_EINVAL);
    lp_objective ok = {LP_OBJ_LOGIT, 0, 5, -1};
    lp_grad *gr;
    assert_int_equal(lp_grad_new(&gr, f.r, &ok), LP_EUNSUPPORTED);
    assert_non_null(strstr(lp_errmsg(), "lp_grad_seq2seq"));
    lp_model *e;
    assert_int_equal(lp_model_load(&e, T5_DIR "t5_encoder", NULL), LP_OK);
    int ids[] = {5, 6, 1};
    lp_run *er;
    assert_int_equal(lp_run_new(&er, e, ids, 3), LP_OK);
    assert_int_equal(lp_grad_seq2seq(g, NULL, NULL, er, &ok), LP_EINVAL);
    lp_t5_grads *tg;
    assert_int_equal(lp_t5_grads_new(&tg, e), LP_EINVAL);
    lp_run_free(er);
    lp_model_free(e);
    close_fixture(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_gradients_match_autograd),
        cmocka_unit_test(test_parameter_gradients_match_autograd),
        cmocka_unit_test(test_input_gradients_match_finite_differences),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
