/* Training dictionaries (sae_train.h): the gradient against central differences of the same
 * loss written here again in double (independent code, so the difference beats float32's
 * rounding), a dictionary that learns a known sparse code, the saved files read back by
 * lp_sae_load with the same reconstruction, and bad specs refused. `train-sae` itself runs on
 * the bundled model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/sae.h"
#include "loupe/sae_train.h"

/* The loss of sae_train.h in double, from the parameter block p (layout of
 * lp_sae_trainer_params) at x (n, d). */
static double loss_double(const lp_sae_train_spec *sp, const double *p, const float *x, int n) {
    int d = sp->d_in, m = sp->d_sae;
    const double *we = p, *be = we + (size_t)d * m, *wd = be + m, *bd = wd + (size_t)m * d;
    double total = 0.0;
    double *pre = malloc((size_t)m * sizeof *pre), *f = malloc((size_t)m * sizeof *f);
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        for (int j = 0; j < m; j++) {
            double a = be[j];
            for (int i = 0; i < d; i++) a += (xr[i] - bd[i]) * we[(size_t)i * m + j];
            pre[j] = a;
            f[j] = a > 0 ? a : 0;
        }
        if (sp->arch == LP_SAE_TOPK) /* keep the k largest pre (ties to the smaller index) */
            for (int j = 0; j < m; j++) {
                int above = 0;
                for (int q = 0; q < m; q++) above += pre[q] > pre[j] || (pre[q] == pre[j] && q < j);
                if (above >= sp->k) f[j] = 0;
            }
        for (int i = 0; i < d; i++) {
            double y = bd[i];
            for (int j = 0; j < m; j++) y += f[j] * wd[(size_t)j * d + i];
            total += (y - xr[i]) * (y - xr[i]);
        }
        if (sp->arch == LP_SAE_STANDARD)
            for (int j = 0; j < m; j++) total += sp->l1 * f[j];
    }
    free(pre), free(f);
    return total / n;
}

/* The smallest |pre| and, for topk, the gap between the k-th and (k+1)-th pre of any row:
 * central differences with step h are exact only away from the kinks. */
static double kink_distance(const lp_sae_train_spec *sp, const float *p, const float *x, int n) {
    int d = sp->d_in, m = sp->d_sae;
    const float *we = p, *be = we + (size_t)d * m, *wd = be + m, *bd = wd + (size_t)m * d;
    double nearest = 1e30;
    double *pre = malloc((size_t)m * sizeof *pre);
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < m; j++) {
            double a = be[j];
            for (int i = 0; i < d; i++) a += (x[(size_t)r * d + i] - bd[i]) * we[(size_t)i * m + j];
            pre[j] = a;
            nearest = fmin(nearest, fabs(a));
        }
        if (sp->arch == LP_SAE_TOPK)
            for (int j = 0; j < m; j++)
                for (int q = 0; q < m; q++)
                    if (q != j) {
                        int above_j = 0, above_q = 0;
                        for (int z = 0; z < m; z++) above_j += pre[z] > pre[j], above_q += pre[z] > pre[q];
                        if (above_j == sp->k - 1 && above_q == sp->k) nearest = fmin(nearest, pre[j] - pre[q]);
                    }
    }
    free(pre);
    return nearest;
}

static float *random_rows(int n, int d, uint64_t seed) {
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    float *x = malloc((size_t)n * d * sizeof *x);
    for (size_t e = 0; e < (size_t)n * d; e++) x[e] = (float)(2.0 * lp_rng_uniform(&rng) - 1.0);
    return x;
}

static void check_gradient(lp_sae_train_spec sp) {
    const int n = 7;
    lp_sae_trainer *t;
    assert_int_equal(lp_sae_trainer_new(&t, &sp), LP_OK);
    size_t np;
    float *p = lp_sae_trainer_params(t, &np);
    /* biases away from zero and a b_dec, so that every block's gradient is exercised; the
     * first perturbation (of a fixed sequence) whose pre-activations all lie away from the
     * kinks. Each parameter moves a pre by at most h * max|x - b_dec| (< 2h): a kink 10x
     * further away cannot be crossed. */
    const double h = 1e-4;
    float *p0 = malloc(np * sizeof *p0), *x = random_rows(n, sp.d_in, 7);
    memcpy(p0, p, np * sizeof *p0);
    double kink = 0.0;
    for (uint64_t seed = 1; seed < 200 && kink <= 20 * h; seed++) {
        lp_rng rng;
        lp_rng_seed(&rng, seed);
        for (size_t e = 0; e < np; e++) p[e] = p0[e] + (float)(0.2 * (lp_rng_uniform(&rng) - 0.5));
        kink = kink_distance(&sp, p, x, n);
    }
    free(p0);
    assert_true(kink > 20 * h);
    float *g = malloc(np * sizeof *g);
    lp_sae_step_stats st;
    assert_int_equal(lp_sae_trainer_loss(t, x, n, &st, g), LP_OK);
    double *pd = malloc(np * sizeof *pd);
    for (size_t e = 0; e < np; e++) pd[e] = p[e];
    double l0 = loss_double(&sp, pd, x, n);
    assert_true(fabs(st.loss - l0) <= 1e-5 * fabs(l0));
    double worst = 0.0, gmax = 0.0;
    for (size_t e = 0; e < np; e++) {
        double keep = pd[e];
        pd[e] = keep + h;
        double up = loss_double(&sp, pd, x, n);
        pd[e] = keep - h;
        double down = loss_double(&sp, pd, x, n);
        pd[e] = keep;
        double fd = (up - down) / (2 * h);
        worst = fmax(worst, fabs(fd - g[e]));
        gmax = fmax(gmax, fabs(fd));
    }
    print_message("%s: %zu parameters, worst |grad - central difference| %.2e (largest gradient %.2e, nearest kink "
                  "%.2e)\n", lp_sae_arch_name(sp.arch), np, worst, gmax, kink);
    assert_true(gmax > 0.1);
    assert_true(worst <= 1e-4 * gmax);
    free(pd), free(g), free(x);
    lp_sae_trainer_free(t);
}

static void the_gradient_matches_central_differences(void **state) {
    (void)state;
    check_gradient((lp_sae_train_spec){.d_in = 6, .d_sae = 10, .arch = LP_SAE_STANDARD, .l1 = 0.3, .lr = 1e-3, .seed = 5});
    check_gradient((lp_sae_train_spec){.d_in = 6, .d_sae = 10, .arch = LP_SAE_TOPK, .k = 3, .lr = 1e-3, .seed = 5});
}

/* Rows made of 1 or 2 of 16 fixed unit directions in 12 dimensions with positive weights:
 * a dictionary of 32 should find a code close to it. */
static float *sparse_rows(int n, float *truth) {
    const int d = 12, m = 16;
    lp_rng rng;
    lp_rng_seed(&rng, 3);
    for (int j = 0; j < m; j++) {
        double norm = 0;
        for (int i = 0; i < d; i++) norm += pow(truth[j * d + i] = (float)(lp_rng_uniform(&rng) - 0.5), 2);
        for (int i = 0; i < d; i++) truth[j * d + i] /= (float)sqrt(norm);
    }
    float *x = calloc((size_t)n * d, sizeof *x);
    for (int r = 0; r < n; r++) {
        int active = 1 + (lp_rng_uniform(&rng) < 0.5);
        for (int a = 0; a < active; a++) {
            int j = (int)(lp_rng_uniform(&rng) * m) % m;
            double w = 0.5 + 2.0 * lp_rng_uniform(&rng);
            for (int i = 0; i < d; i++) x[(size_t)r * d + i] += (float)(w * truth[j * d + i]);
        }
    }
    return x;
}

static double learn_and_reload(lp_sae_train_spec sp, double gain, double min_ev, double max_l0) {
    const int n = 4096, batch = 256;
    float truth[16 * 12];
    float *x = sparse_rows(n, truth);
    for (size_t e = 0; e < (size_t)n * sp.d_in; e++) x[e] *= (float)gain;
    lp_sae_trainer *t;
    assert_int_equal(lp_sae_trainer_new(&t, &sp), LP_OK);
    lp_sae_step_stats first = {0}, st = {0};
    for (int step = 0; step < 1500; step++) {
        const float *b = x + (size_t)(step % (n / batch)) * batch * sp.d_in;
        assert_int_equal(lp_sae_trainer_step(t, b, batch, &st), LP_OK);
        if (step == 0) first = st;
    }
    assert_int_equal(lp_sae_trainer_loss(t, x, n, &st, NULL), LP_OK);
    print_message("%s%s: explained variance %.3f -> %.4f, L0 %.2f -> %.2f (the data has 1.5 per row)\n",
                  lp_sae_arch_name(sp.arch), sp.normalize ? (gain == 1.0 ? " (normalised)" : " (normalised, rows x 40)") : "", first.explained_variance, st.explained_variance, first.l0, st.l0);
    assert_true(st.explained_variance >= min_ev);
    assert_true(st.l0 <= max_l0);
    assert_true(st.loss < first.loss);

    /* saved in SAELens's layout, read back by the loader: the same reconstruction */
    char *dir = make_temp_dir(), path[512];
    snprintf(path, sizeof path, "%s/sae", dir);
    assert_int_equal(lp_sae_trainer_save(t, path, "blocks.0.hook_resid_pre", "test"), LP_OK);
    lp_sae *s;
    if (lp_sae_load(&s, path) != LP_OK) fail_msg("%s", lp_errmsg());
    const lp_sae_info *in = lp_sae_get_info(s);
    assert_int_equal(in->arch, sp.arch);
    assert_int_equal(in->d_sae, sp.d_sae);
    assert_int_equal(in->k, sp.arch == LP_SAE_TOPK ? sp.k : 0);
    assert_true(in->apply_b_dec_to_input);
    assert_string_equal(in->hook_name, "blocks.0.hook_resid_pre");
    float *acts = malloc((size_t)n * sp.d_sae * sizeof *acts), *recon = malloc((size_t)n * sp.d_in * sizeof *recon);
    lp_sae_stats ls;
    assert_int_equal(lp_sae_measure(s, x, x, n, acts, recon, &ls), LP_OK);
    print_message("  reloaded: explained variance %.6f (trainer %.6f), L0 %.4f (trainer %.4f)\n", ls.explained_variance,
                  st.explained_variance, ls.l0, st.l0);
    assert_true(fabs(ls.l0 - st.l0) <= 1e-3 * st.l0); /* a feature at the edge of zero may flip */
    assert_true(fabs(ls.explained_variance - st.explained_variance) <= 1e-4);
    /* a second save into the same directory is refused: the first is a dictionary now */
    assert_int_not_equal(lp_sae_trainer_save(t, path, "blocks.0.hook_resid_pre", "test"), LP_OK);
    assert_non_null(strstr(lp_errmsg(), path));
    free(acts), free(recon), free(x);
    lp_sae_free(s);
    lp_sae_trainer_free(t);
    rm_tree(dir);
    return st.explained_variance;
}

static void a_dictionary_learns_a_known_sparse_code(void **state) {
    (void)state;
    learn_and_reload((lp_sae_train_spec){.d_in = 12, .d_sae = 32, .arch = LP_SAE_STANDARD, .l1 = 0.3, .lr = 3e-3,
                                         .seed = 1},
                     1.0, 0.94, 5.0); /* measured 0.971 and 4.1 (Haswell and AVX-512 kernels) */
    learn_and_reload((lp_sae_train_spec){.d_in = 12, .d_sae = 32, .arch = LP_SAE_TOPK, .k = 2, .lr = 3e-3, .seed = 1},
                     1.0, 0.95, 2.0); /* measured 0.981 */
    /* normalised, rows 40 times larger train the same dictionary up to rounding (the
     * penalty means the same at any scale), and the saved file, with the scale folded into
     * its weights, reads the raw rows */
    lp_sae_train_spec norm = {.d_in = 12, .d_sae = 32, .arch = LP_SAE_STANDARD, .l1 = 0.3, .lr = 3e-3,
                              .normalize = true, .seed = 1};
    double ev1 = learn_and_reload(norm, 1.0, 0.9, 8.0), ev40 = learn_and_reload(norm, 40.0, 0.9, 8.0);
    assert_true(fabs(ev1 - ev40) <= 1e-3);
}

static void bad_specs_are_refused(void **state) {
    (void)state;
    lp_sae_trainer *t = (lp_sae_trainer *)1;
    struct {
        lp_sae_train_spec sp;
        const char *says;
    } bad[] = {
        {{.d_in = 0, .d_sae = 4, .arch = LP_SAE_STANDARD, .lr = 1e-3}, "width"},
        {{.d_in = 4, .d_sae = 0, .arch = LP_SAE_STANDARD, .lr = 1e-3}, "--d-sae"},
        {{.d_in = 4, .d_sae = 8, .arch = LP_SAE_TOPK, .k = 9, .lr = 1e-3}, "--k 9"},
        {{.d_in = 4, .d_sae = 8, .arch = LP_SAE_TOPK, .k = 0, .lr = 1e-3}, "--k 0"},
        {{.d_in = 4, .d_sae = 8, .arch = LP_SAE_JUMPRELU, .lr = 1e-3}, "topk"},
        {{.d_in = 4, .d_sae = 8, .arch = LP_SAE_STANDARD, .lr = 0}, "--lr"},
        {{.d_in = 4, .d_sae = 8, .arch = LP_SAE_STANDARD, .l1 = -1, .lr = 1e-3}, "--l1"},
        {{.d_in = 4, .d_sae = 8, .arch = LP_SAE_STANDARD, .l1 = NAN, .lr = 1e-3}, "--l1"},
        {{.d_in = 65536, .d_sae = 1 << 16, .arch = LP_SAE_STANDARD, .lr = 1e-3}, "too many"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_not_equal(lp_sae_trainer_new(&t, &bad[i].sp), LP_OK);
        assert_null(t);
        if (!strstr(lp_errmsg(), bad[i].says)) fail_msg("case %zu: '%s' does not say '%s'", i, lp_errmsg(), bad[i].says);
    }
}

/* train-sae on the bundled model: a few steps, the directory loads as a dictionary of the
 * site, and a second run into it is refused. */
static void the_command_trains_on_the_bundled_model(void **state) {
    (void)state;
    char *dir = make_temp_dir(), out[512], line[1024];
    snprintf(out, sizeof out, "%s/sae", dir);
    lp_session s;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    lp_session_init(&s, f);
    assert_int_equal(lp_exec(&s, "load models/default"), LP_OK);
    assert_int_equal(lp_exec(&s, "mode json"), LP_OK);
    snprintf(line, sizeof line, "train-sae %s --steps 30 --batch 256 --d-sae 128 --quiet", out);
    if (lp_exec(&s, line) != LP_OK) fail_msg("%s", lp_errmsg());
    fflush(f);
    json_error_t je;
    json_t *res = json_loads(strrchr(text, '{') ? strstr(text, "{\"dir\"") : text, JSON_DISABLE_EOF_CHECK, &je);
    assert_non_null(res);
    assert_string_equal(json_string_value(json_object_get(res, "site")), "blocks.1.hook_resid_pre");
    assert_int_equal(json_integer_value(json_object_get(res, "steps")), 30);
    double ev = json_number_value(json_object_get(json_object_get(res, "held_out"), "explained_variance"));
    print_message("train-sae, 30 steps on models/default: held-out explained variance %.3f\n", ev);
    assert_true(ev > -50 && ev < 1);
    json_decref(res);
    snprintf(line, sizeof line, "run When Mary and John went to the store, John gave a drink to");
    assert_int_equal(lp_exec(&s, line), LP_OK);
    snprintf(line, sizeof line, "sae load %s", out);
    if (lp_exec(&s, line) != LP_OK) fail_msg("%s", lp_errmsg());
    snprintf(line, sizeof line, "train-sae %s --steps 1", out);
    assert_int_not_equal(lp_exec(&s, line), LP_OK);
    assert_int_not_equal(lp_exec(&s, "train-sae /tmp/x --arch gated"), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "--arch gated"));
    assert_int_not_equal(lp_exec(&s, "train-sae /tmp/x --site blocks.9.hook_resid_pre"), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "layer 0..1"));
    assert_int_not_equal(lp_exec(&s, "train-sae /tmp/x --l1 2 --arch topk"), LP_OK);
    lp_session_free(&s);
    fclose(f);
    free(text);
    rm_tree(dir);
}

/* The committed dictionary (make sae-model) on the bundled model: it reads the site its
 * cfg.json names and reconstructs runs it was not trained on. */
static void the_bundled_dictionary_reconstructs_the_bundled_model(void **state) {
    (void)state;
    static const char *const texts[] = {
        "When Mary and John went to the store, John gave a drink to",
        "The dog ran to the park. It was a sunny day. Tom sat down and smiled.",
        "Tom sat down and smiled. kqe zzt wod kqe zzt wod.",
    };
    lp_session s;
    char *text = NULL, line[256];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    lp_session_init(&s, f);
    assert_int_equal(lp_exec(&s, "load models/default"), LP_OK);
    assert_int_equal(lp_exec(&s, "mode json"), LP_OK);
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        snprintf(line, sizeof line, "run %s", texts[i]);
        assert_int_equal(lp_exec(&s, line), LP_OK);
        if (i == 0 && lp_exec(&s, "sae load models/default-sae --name bundled") != LP_OK) fail_msg("%s", lp_errmsg());
        fflush(f);
        size_t at = len;
        assert_int_equal(lp_exec(&s, "sae stats bundled"), LP_OK);
        fflush(f);
        json_error_t je;
        json_t *all = json_loads(text + at, JSON_DISABLE_EOF_CHECK, &je), *st = json_array_get(all, 0);
        if (!st) fail_msg("not a json array: %s", text + at);
        double ev = json_number_value(json_object_get(st, "explained_variance")),
               l0 = json_number_value(json_object_get(st, "l0"));
        print_message("%s: L0 %.2f, explained variance %.3f\n", texts[i], l0, ev);
        assert_true(l0 > 0 && l0 <= 16.0);
        assert_true(ev >= 0.8);
        json_decref(all);
    }
    lp_session_free(&s);
    fclose(f);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_gradient_matches_central_differences),
        cmocka_unit_test(a_dictionary_learns_a_known_sparse_code),
        cmocka_unit_test(bad_specs_are_refused),
        cmocka_unit_test(the_command_trains_on_the_bundled_model),
        cmocka_unit_test(the_bundled_dictionary_reconstructs_the_bundled_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
