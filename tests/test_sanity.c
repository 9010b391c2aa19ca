/* The model-randomisation sanity check: the randomised copy leaves the user's model as it was
 * and randomises exactly the layers asked for, in cascade; Spearman's rho is checked by hand;
 * a method that ignores the model (the token embeddings' norms) fails the check, gradient x
 * input passes; eval --sanity reports it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "arch/model_impl.h"
#include "helpers.h"
#include "loupe/attr.h"
#include "loupe/commands.h"
#include "loupe/error.h"
#include "loupe/sanity.h"

#define PROMPT "When Mary and John went to the store, John gave a drink to"

static double checksum(const lp_linear *w) {
    double s = 0;
    size_t rows = w->trans ? (size_t)w->out : (size_t)w->in, cols = w->trans ? (size_t)w->in : (size_t)w->out;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) s += w->w[i * (size_t)w->ld + j] * (double)((i * 31 + j) % 97);
    return s;
}

static lp_session *open_default(char **buf, size_t *len) {
    lp_session *s = calloc(1, sizeof *s);
    lp_session_init(s, NULL);
    s->mode = LP_MODE_JSON;
    if (lp_session_load(s, "models/default") || exec_line(s, buf, len, "run " PROMPT, NULL)) fail_msg("%s", lp_errmsg());
    return s;
}

static void close_default(lp_session *s, char *buf) {
    lp_session_free(s);
    free(s);
    free(buf);
}

static void the_copy_randomises_the_top_layers_only(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len;
    lp_session *s = open_default(&buf, &len);
    const lp_model *m = s->model;
    int L = m->cfg.n_layer, T = lp_run_len(s->run);
    double before = checksum(&m->layers[L - 1].up);
    lp_randomised *r1, *r2;
    assert_int_equal(lp_randomised_new(&r1, m, 1, 7), LP_OK);
    assert_int_equal(lp_randomised_new(&r2, m, 2, 7), LP_OK);
    const lp_model *m1 = lp_randomised_model(r1), *m2 = lp_randomised_model(r2);
    /* the original is untouched; depth 1 changed the top layer only; depth 2 keeps depth 1's draws */
    assert_true(checksum(&m->layers[L - 1].up) == before);
    assert_true(checksum(&m1->layers[L - 1].up) != before);
    assert_true(checksum(&m1->layers[0].up) == checksum(&m->layers[0].up));
    assert_true(checksum(&m2->layers[L - 1].up) == checksum(&m1->layers[L - 1].up));
    assert_true(checksum(&m2->layers[0].up) != checksum(&m->layers[0].up));
    /* a random tensor keeps the original's scale */
    const lp_linear *a = &m->layers[L - 1].down, *b = &m1->layers[L - 1].down;
    double sa = 0, sb = 0;
    size_t rows = a->trans ? (size_t)a->out : (size_t)a->in, cols = a->trans ? (size_t)a->in : (size_t)a->out;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            sa += a->w[i * a->ld + j] * (double)a->w[i * a->ld + j];
            sb += b->w[i * b->ld + j] * (double)b->w[i * b->ld + j];
        }
    assert_true(fabs(sqrt(sb / sa) - 1) < 0.05);
    /* depth 0 is the model; depth 1 runs differently */
    lp_randomised *r0;
    assert_int_equal(lp_randomised_new(&r0, m, 0, 7), LP_OK);
    lp_run *x0, *x1;
    assert_int_equal(lp_run_new(&x0, lp_randomised_model(r0), lp_run_ids(s->run), T), LP_OK);
    assert_int_equal(lp_run_new(&x1, m1, lp_run_ids(s->run), T), LP_OK);
    int V = m->cfg.vocab;
    assert_memory_equal(lp_run_logits(x0, T - 1), lp_run_logits(s->run, T - 1), (size_t)V * sizeof(float));
    double diff = 0;
    for (int j = 0; j < V; j++) diff = fmax(diff, fabs(lp_run_logits(x1, T - 1)[j] - lp_run_logits(s->run, T - 1)[j]));
    assert_true(diff > 0.1);
    lp_run_free(x0), lp_run_free(x1);
    lp_randomised_free(r0), lp_randomised_free(r1), lp_randomised_free(r2);
    lp_randomised *bad;
    assert_int_equal(lp_randomised_new(&bad, m, L + 1, 7), LP_EINVAL);
    close_default(s, buf);
}

static void spearman_by_hand(void **state) {
    (void)state;
    double a[] = {1, 2, 3, 4, 5}, b[] = {5, 6, 7, 8, 7}, c[] = {3, 3, 3, 3, 3}, d[] = {5, 4, 3, 2, 1};
    /* b's ranks 1 2 3.5 5 3.5: the ranks' Pearson correlation is 8 / sqrt(10 x 9.5) */
    assert_true(fabs(lp_spearman(a, b, 5) - 0.8207826816681233) < 1e-12);
    assert_true(fabs(lp_spearman(a, d, 5) + 1) < 1e-12);
    assert_true(isnan(lp_spearman(a, c, 5)));
}

/* A "method" that never looks past the embeddings: the norm of each token's embedding. */
static int embedding_norms(float *scores, const lp_run *r, void *ctx) {
    (void)ctx;
    const lp_model *m = lp_run_model(r);
    int d = m->cfg.d_model;
    for (int t = 0; t < lp_run_len(r); t++) {
        double s = 0;
        const float *e = m->tok_emb + (size_t)lp_run_ids(r)[t] * d;
        for (int k = 0; k < d; k++) s += e[k] * (double)e[k];
        scores[t] = (float)sqrt(s);
    }
    return LP_OK;
}

static int gxi(float *scores, const lp_run *r, void *ctx) {
    double delta;
    return lp_attr(scores, &delta, r, ctx);
}

static void a_method_that_ignores_the_model_fails(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len;
    lp_session *s = open_default(&buf, &len);
    int L = s->model->cfg.n_layer, T = lp_run_len(s->run);
    double rho[16];
    assert_int_equal(lp_sanity_cascade(s->run, T, embedding_norms, NULL, 1, rho), LP_OK);
    for (int d = 0; d < L; d++) assert_true(rho[d] == 1.0); /* the same ranking at every depth */
    const float *lg = lp_run_logits(s->run, T - 1);
    int top = 0;
    for (int j = 1; j < s->model->cfg.vocab; j++)
        if (lg[j] > lg[top]) top = j;
    lp_attr_spec sp = {.method = LP_ATTR_GXI, .objective = {LP_OBJ_LOGIT, T - 1, top, -1}, .baseline = -1, .layer = -1};
    assert_int_equal(lp_sanity_cascade(s->run, T, gxi, &sp, 1, rho), LP_OK);
    print_message("  gxi on the IOI prompt: rho %.3f with the top layer random, %.3f with both\n", rho[0], rho[L - 1]);
    assert_true(rho[L - 1] < 0.5); /* measured -0.516 (the bundled model before its second stage: -0.086) */
    close_default(s, buf);
}

static void eval_reports_the_check(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len;
    lp_session *s = open_default(&buf, &len);
    json_t *v;
    assert_int_equal(exec_line(s, &buf, &len, "eval gxi --samples 2 --sanity", &v), LP_OK);
    json_t *r = json_object_get(json_array_get(json_object_get(v, "methods"), 0), "randomisation");
    assert_int_equal(json_array_size(json_object_get(r, "rho")), s->model->cfg.n_layer);
    assert_true(json_is_true(json_object_get(r, "passed")));
    json_decref(v);
    assert_int_equal(exec_line(s, &buf, &len, "eval gxi --samples 2", &v), LP_OK);
    assert_null(json_object_get(json_array_get(json_object_get(v, "methods"), 0), "randomisation"));
    json_decref(v);
    close_default(s, buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_copy_randomises_the_top_layers_only),
        cmocka_unit_test(spearman_by_hand),
        cmocka_unit_test(a_method_that_ignores_the_model_fails),
        cmocka_unit_test(eval_reports_the_check),
    };
    return cmocka_run_group_tests_name("sanity", tests, NULL, NULL);
}
