/* eval's judgements in the store: each judged attribution is recorded with its evaluation
 * (every measure, the four curves), read back through evaluations_view exactly as the JSON
 * printed them, so that SQL over many runs can ask which method is most faithful. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "helpers.h"
#include "loupe/commands.h"
#include "loupe/error.h"
#include "loupe/store.h"

typedef session_fixture fixture;

static json_t *rows_of(fixture *f, const char *sql) {
    json_t *rows;
    if (lp_store_query(f->s->store, sql, NULL, false, &rows, NULL)) fail_msg("%s: %s", sql, lp_errmsg());
    return rows;
}

static double num(json_t *v) { return json_is_null(v) ? NAN : json_number_value(v); }
/* JSON prints 9 significant digits (float32's round trip); the store keeps the double */
static bool same(double a, double b) { return (isnan(a) && isnan(b)) || fabs(a - b) <= 1e-8 * fmax(1, fabs(b)); }

static void judgements_are_stored_as_printed(void **state) {
    fixture *f = *state;
    json_t *v;
    if (exec_line(f->s, &f->buf, &f->len, "run When Mary and John went to the store, John gave a drink to", NULL) ||
        exec_line(f->s, &f->buf, &f->len, "eval all --samples 2 --bins 5", &v) || !v)
        fail_msg("%s", lp_errmsg());
    json_t *methods = json_object_get(v, "methods");
    assert_int_equal(json_array_size(methods), 6);
    static const char *const KEYS[] = {"comprehensiveness_aopc", "sufficiency_aopc", "deletion_auc", "insertion_auc",
                                       "logodds_drop", "loo_tau", "infidelity", "max_sensitivity"};
    static const char *const CURVES[] = {"comprehensiveness", "sufficiency", "deletion", "insertion"};
    size_t i;
    json_t *m;
    json_array_foreach(methods, i, m) {
        long long id = json_integer_value(json_object_get(m, "evaluation_id"));
        assert_true(id > 0);
        char sql[300];
        snprintf(sql, sizeof sql, "SELECT * FROM evaluations_view WHERE id = %lld", id);
        json_t *rows = rows_of(f, sql), *row = json_array_get(rows, 0);
        assert_non_null(row);
        assert_string_equal(json_string_value(json_object_get(row, "method")), json_string_value(json_object_get(m, "method")));
        assert_string_equal(json_string_value(json_object_get(row, "remove")), "delete");
        assert_int_equal(json_integer_value(json_object_get(row, "bins")), 5);
        assert_true(same(num(json_object_get(row, "f_x")), num(json_object_get(v, "f_x"))));
        for (size_t k = 0; k < sizeof KEYS / sizeof *KEYS; k++)
            if (!same(num(json_object_get(row, KEYS[k])), num(json_object_get(m, KEYS[k]))))
                fail_msg("%s %s: stored %g, printed %g", json_string_value(json_object_get(m, "method")), KEYS[k],
                         num(json_object_get(row, KEYS[k])), num(json_object_get(m, KEYS[k])));
        /* the attribution judged: the scores eval printed */
        long long aid = json_integer_value(json_object_get(row, "attribution_id"));
        json_decref(rows);
        snprintf(sql, sizeof sql, "SELECT pos, score FROM attribution_scores WHERE attribution_id = %lld ORDER BY pos", aid);
        rows = rows_of(f, sql);
        json_t *scores = json_object_get(m, "scores");
        for (size_t p = 0; p < json_array_size(scores); p++)
            assert_true(fabs(num(json_object_get(json_array_get(rows, p), "score")) - num(json_array_get(scores, p))) <
                        1e-6 * fmax(1, fabs(num(json_array_get(scores, p)))));
        json_decref(rows);
        /* the curves, point by point */
        for (int c = 0; c < 4; c++) {
            snprintf(sql, sizeof sql, "SELECT x, value FROM evaluation_curves WHERE evaluation_id = %lld AND curve = '%s' ORDER BY i",
                     id, CURVES[c]);
            rows = rows_of(f, sql);
            json_t *want = json_object_get(m, CURVES[c]);
            assert_int_equal(json_array_size(rows), json_array_size(want));
            for (size_t p = 0; p < json_array_size(want); p++)
                assert_true(same(num(json_object_get(json_array_get(rows, p), "value")), num(json_array_get(want, p))));
            double last = num(json_object_get(json_array_get(rows, json_array_size(rows) - 1), "x"));
            assert_true(c < 2 ? last == 100.0 : last == (double)json_array_size(json_object_get(v, "removable")));
            json_decref(rows);
        }
    }
    json_decref(v);
    /* the question the store is for */
    json_t *rows = rows_of(f, "SELECT method, avg(comprehensiveness_aopc) AS c FROM evaluations_view GROUP BY method");
    assert_int_equal(json_array_size(rows), 6);
    json_decref(rows);
}

/* Without a store nothing is recorded and the JSON has no evaluation ids. */
static void no_store_no_ids(void **state) {
    (void)state;
    fixture g = {session_open("models/default", false), NULL, 0};
    if (!g.s) fail_msg("%s", lp_errmsg());
    json_t *v;
    if (exec_line(g.s, &g.buf, &g.len, "run When Mary and John went to the store, John gave a drink to", NULL) ||
        exec_line(g.s, &g.buf, &g.len, "eval gxi --samples 2", &v) || !v)
        fail_msg("%s", lp_errmsg());
    assert_null(json_object_get(json_array_get(json_object_get(v, "methods"), 0), "evaluation_id"));
    json_decref(v);
    session_close(g.s);
    free(g.buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(judgements_are_stored_as_printed),
        cmocka_unit_test(no_store_no_ids),
    };
    return cmocka_run_group_tests_name("eval_store", tests, default_session_setup, default_session_teardown);
}
