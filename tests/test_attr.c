/* The attr command: its JSON shape for every method, the default target, token and
 * baseline arguments, options refused where they mean nothing, recording in the store; and
 * properties of the methods (rollout rows are distributions, occlusion of the whole prefix,
 * causality). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "helpers.h"
#include "loupe/attr.h"
#include "loupe/commands.h"
#include "loupe/error.h"
#include "loupe/tokenizer.h"

#define TEXT "When Mary and John went to the store, John gave a drink to"

typedef struct {
    char *dir;
    lp_session s;
    char *buf;
    size_t len;
} fixture;

/* A small GPT-2 with GPT-2's own tokenizer, loaded into a session with an in-memory store. */
static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = make_temp_dir();
    char mdir[600];
    snprintf(mdir, sizeof mdir, "%s/m", f->dir);
    if (mkmodel(mdir, "--arch gpt2 --vocab 50257 --std 0.3 --seed 9 --gpt2-tokenizer " SHARED "/tokenizers/gpt2")) return -1;
    lp_session_init(&f->s, NULL);
    if (lp_store_open(&f->s.store, ":memory:") || lp_session_load(&f->s, mdir)) return -1;
    f->s.mode = LP_MODE_JSON;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    lp_store_close(f->s.store);
    lp_session_free(&f->s);
    rm_tree(f->dir);
    free(f->buf);
    free(f);
    return 0;
}

/* Runs one command; returns its status and, when it printed JSON, the value (caller frees). */
static int exec(fixture *f, const char *line, json_t **out) {
    int rc = exec_line(&f->s, &f->buf, &f->len, line, out);
    if (out && !rc && !*out) fail_msg("'%s' printed no JSON: %s", line, f->buf);
    return rc;
}

static json_t *ok(fixture *f, const char *line) {
    json_t *v;
    if (exec(f, line, &v)) fail_msg("'%s' failed: %s", line, lp_errmsg());
    return v;
}

static void every_method_prints_the_promised_shape(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " TEXT));
    int T = lp_run_len(f->s.run), V = lp_model_config(f->s.model)->vocab, top = 0;
    const float *lg = lp_run_logits(f->s.run, T - 1);
    for (int j = 1; j < V; j++)
        if (lg[j] > lg[top]) top = j;
    for (int m = 0; m < LP_ATTR_COUNT; m++) {
        char line[64];
        snprintf(line, sizeof line, "attr %s", lp_attr_method_name((lp_attr_method)m));
        json_t *v = ok(f, line);
        assert_string_equal(json_string_value(json_object_get(v, "method")), lp_attr_method_name((lp_attr_method)m));
        assert_int_equal(json_integer_value(json_object_get(v, "pos")), T - 1);
        json_t *scores = json_object_get(v, "scores"), *target = json_object_get(v, "target");
        assert_int_equal(json_array_size(scores), T);
        if (lp_attr_has_objective((lp_attr_method)m)) {
            /* The default target is the model's own top prediction. */
            assert_int_equal(json_integer_value(json_object_get(target, "id")), top);
            assert_true(json_is_string(json_object_get(target, "token")));
            assert_string_equal(json_string_value(json_object_get(v, "objective")), "logit");
        } else {
            assert_true(json_is_null(target));
        }
        assert_true(m == LP_ATTR_IG ? json_is_number(json_object_get(v, "delta")) : json_is_null(json_object_get(v, "delta")));
        assert_true(json_is_integer(json_object_get(v, "attribution_id")));
        json_decref(v);
    }
}

static void tokens_and_baselines_are_resolved(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " TEXT));
    const lp_tokenizer *t = lp_model_tokenizer(f->s.model);
    int mary = lp_tokenizer_piece_to_id(t, "\xC4\xA0Mary"), john = lp_tokenizer_piece_to_id(t, "\xC4\xA0John");
    assert_true(mary >= 0 && john >= 0);
    /* Text of one token, and the vocabulary string, name the same id. */
    json_t *v = ok(f, "attr gxi --target ' Mary' --vs \xC4\xA0John --pos 10");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "target"), "id")), mary);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "contrast"), "id")), john);
    assert_string_equal(json_string_value(json_object_get(v, "objective")), "logit_diff");
    json_t *scores = json_object_get(v, "scores");
    for (size_t i = 11; i < json_array_size(scores); i++) assert_true(json_real_value(json_array_get(scores, i)) == 0.0);
    json_decref(v);
    /* GPT-2 has no pad token: EOS stands in. */
    v = ok(f, "attr occlusion --baseline pad --window 2");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "params"), "baseline_id")),
                     lp_tokenizer_eos(t));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "params"), "window")), 2);
    json_decref(v);
    v = ok(f, "attr ig --baseline ' the' --steps 8 --objective logprob");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "params"), "steps")), 8);
    assert_true(json_integer_value(json_object_get(json_object_get(v, "params"), "baseline_id")) ==
                lp_tokenizer_piece_to_id(t, "\xC4\xA0the"));
    json_decref(v);
}

static void meaningless_options_are_refused(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " TEXT));
    static const struct {
        const char *line, *says;
    } bad[] = {
        {"attr", "give a method"},
        {"attr shapley", "unknown attribution method"},
        {"attr saliency --steps 4", "--steps is not an option"},
        {"attr rollout --target ' Mary'", "reads attention only"},
        {"attr attnxnorm --layer 9", "--layer 9 is out of range"},
        {"attr ig --objective logit_diff", "logit_diff exactly when --vs"},
        {"attr ig --target ' Mary and'", "not one"},
        {"attr occlusion --window 0", "--window 0 is out of range"},
        {"attr ig --baseline pad --baseline-id 3", "not both"},
        {"attr gxi --pos 99", "--pos 99 is out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(exec(f, bad[i].line, NULL), LP_EINVAL);
        if (!strstr(lp_errmsg(), bad[i].says)) fail_msg("'%s': '%s' does not say '%s'", bad[i].line, lp_errmsg(), bad[i].says);
    }
}

static void attributions_are_recorded_with_their_scores(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " TEXT));
    json_t *v = ok(f, "attr ig --vs ' John' --steps 8");
    json_t *rows;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT method, objective, contrast_id, pos, score, delta, params FROM attributions_view WHERE id = %lld "
             "ORDER BY pos",
             (long long)json_integer_value(json_object_get(v, "attribution_id")));
    assert_int_equal(lp_store_query(f->s.store, sql, NULL, false, &rows, NULL), LP_OK);
    json_t *scores = json_object_get(v, "scores");
    assert_int_equal(json_array_size(rows), json_array_size(scores));
    json_t *r0 = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(r0, "method")), "ig");
    assert_string_equal(json_string_value(json_object_get(r0, "objective")), "logit_diff");
    assert_int_equal(json_integer_value(json_object_get(r0, "contrast_id")),
                     json_integer_value(json_object_get(json_object_get(v, "contrast"), "id")));
    assert_true(fabs(json_real_value(json_object_get(r0, "delta")) - json_real_value(json_object_get(v, "delta"))) < 1e-6);
    for (size_t i = 0; i < json_array_size(rows); i++)
        assert_true(fabs(json_real_value(json_object_get(json_array_get(rows, i), "score")) -
                         json_real_value(json_array_get(scores, i))) < 1e-6);
    json_decref(rows);
    json_decref(v);
}

static void methods_keep_their_invariants(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " TEXT));
    lp_run *r = f->s.run;
    int T = lp_run_len(r);
    float s[64];
    double delta;
    for (int pos = 0; pos < T; pos += 4) {
        /* Rollout's rows are distributions over the positions a query can see. */
        lp_attr_spec sp = {LP_ATTR_ROLLOUT, {LP_OBJ_LOGIT, pos, 0, -1}, 0, -1, 0, -1, 0, 0};
        assert_int_equal(lp_attr(s, &delta, r, &sp), LP_OK);
        double sum = 0;
        for (int t = 0; t < T; t++) {
            assert_true(s[t] >= 0 && (t <= pos || s[t] == 0));
            sum += s[t];
        }
        assert_true(fabs(sum - 1) < 1e-5 && isnan(delta));
        /* Occluding the whole prefix gives every position f(x) - f(baseline), which is
         * what integrated gradients' scores add up to. */
        sp = (lp_attr_spec){LP_ATTR_OCCLUSION, {LP_OBJ_LOGIT, pos, 42, -1}, 0, -1, pos + 1, -1, 0, 0};
        assert_int_equal(lp_attr(s, &delta, r, &sp), LP_OK);
        float whole = s[0];
        for (int t = 0; t <= pos; t++) assert_true(s[t] == whole);
        sp.method = LP_ATTR_IG;
        sp.steps = 64;
        assert_int_equal(lp_attr(s, &delta, r, &sp), LP_OK);
        double total = 0;
        for (int t = 0; t < T; t++) total += s[t];
        assert_true(fabs(total - delta - whole) < 1e-4 * fmax(1, fabs(whole)));
        /* attnxnorm: norms, zero after pos. */
        sp = (lp_attr_spec){LP_ATTR_ATTNXNORM, {LP_OBJ_LOGIT, pos, 0, -1}, 0, -1, 0, 0, 0, 0};
        assert_int_equal(lp_attr(s, &delta, r, &sp), LP_OK);
        for (int t = 0; t < T; t++) assert_true(s[t] >= 0 && (t <= pos || s[t] == 0));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_method_prints_the_promised_shape),
        cmocka_unit_test(tokens_and_baselines_are_resolved),
        cmocka_unit_test(meaningless_options_are_refused),
        cmocka_unit_test(attributions_are_recorded_with_their_scores),
        cmocka_unit_test(methods_keep_their_invariants),
    };
    return cmocka_run_group_tests_name("attr", tests, setup, teardown);
}
