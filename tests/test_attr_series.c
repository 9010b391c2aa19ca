/* Attribution series: every token of a run from one position on, explained in turn by the
 * prediction before it (attr METHOD --from P), and generate N --attr METHOD, which makes the
 * prompt and its continuation the run and explains each generated token. Each step is the
 * attribution `attr` gives for that position and token; its probability and entropy are
 * those of the run's logits; the store keeps the series and its matrix. */
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
#include "loupe/store.h"

#define PROMPT "When Mary and John went to the store, John gave a drink to"

typedef session_fixture fixture;

static json_t *ok(fixture *f, const char *line) {
    json_t *v;
    if (exec_line(f->s, &f->buf, &f->len, line, &v) || !v) fail_msg("'%s' failed: %s", line, lp_errmsg());
    return v;
}

static long long q_int(fixture *f, const char *sql) {
    json_t *rows;
    if (lp_store_query(f->s->store, sql, NULL, false, &rows, NULL)) fail_msg("%s: %s", sql, lp_errmsg());
    const char *k;
    json_t *v, *row = json_array_get(rows, 0);
    long long x = -1;
    json_object_foreach(row, k, v) x = json_integer_value(v);
    json_decref(rows);
    return x;
}

/* Each step is lp_attr at its position and token, bit for bit; prob and entropy are the
 * softmax's, computed here in double from the logits. */
static void steps_are_the_attributions_attr_gives(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " PROMPT " Mary."));
    const lp_run *r = f->s->run;
    int T = lp_run_len(r), V = lp_run_out_width(r), from = 9, n = T - from;
    const int *ids = lp_run_ids(r);
    lp_attr_method methods[] = {LP_ATTR_GXI, LP_ATTR_IG, LP_ATTR_OCCLUSION};
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
        lp_attr_spec sp = {.method = methods[m], .objective = {LP_OBJ_LOGPROB, 0, 0, ids[3]}, .baseline = -1,
                           .layer = -1};
        sp.objective.kind = LP_OBJ_LOGIT_DIFF;
        float *rows = malloc((size_t)n * T * sizeof *rows), one[64];
        lp_attr_step *st = malloc((size_t)n * sizeof *st);
        assert_int_equal(lp_attr_steps(rows, st, r, from, &sp), LP_OK);
        for (int i = 0; i < n; i++) {
            lp_attr_spec each = sp;
            each.objective.pos = from + i - 1;
            each.objective.target = ids[from + i];
            lp_attr_report rep;
            assert_int_equal(lp_attr_full(one, &rep, r, &each), LP_OK);
            assert_memory_equal(one, rows + (size_t)i * T, (size_t)T * sizeof *one);
            assert_int_equal(st[i].pos, from + i - 1);
            assert_int_equal(st[i].target, ids[from + i]);
            const float *lg = lp_run_logits(r, st[i].pos);
            double z = 0, h = 0;
            for (int j = 0; j < V; j++) z += exp((double)lg[j]);
            for (int j = 0; j < V; j++) {
                double p = exp((double)lg[j]) / z;
                h -= p > 0 ? p * log(p) : 0;
            }
            double p = exp((double)lg[st[i].target]) / z, pc = exp((double)lg[ids[3]]) / z;
            assert_true(fabs(st[i].prob - p) < 1e-9 && fabs(st[i].entropy - h) < 1e-9);
            assert_true(fabs(st[i].contrast_diff - (p - pc)) < 1e-9);
        }
        free(rows);
        free(st);
    }
}

/* attr --from: the JSON's steps, the table's matrix, and the store's series and matrix. */
static void the_command_prints_and_stores_the_series(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " PROMPT " Mary."));
    int T = lp_run_len(f->s->run);
    json_t *v = ok(f, "attr gxi --from 12");
    json_t *steps = json_object_get(v, "steps");
    assert_int_equal(json_array_size(steps), T - 12);
    assert_int_equal(json_integer_value(json_object_get(v, "from")), 12);
    assert_true(json_is_false(json_object_get(v, "generated")));
    size_t i;
    json_t *st;
    json_array_foreach(steps, i, st) {
        assert_int_equal(json_integer_value(json_object_get(st, "pos")), 12 + (int)i - 1);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "token"), "id")),
                         lp_run_ids(f->s->run)[12 + i]);
        assert_int_equal(json_array_size(json_object_get(st, "scores")), T);
        /* positions after the one explained cannot matter */
        for (int t = 12 + (int)i; t < T; t++)
            assert_true(json_real_value(json_array_get(json_object_get(st, "scores"), t)) == 0.0);
    }
    long long series = json_integer_value(json_object_get(v, "series_id"));
    assert_true(series > 0);
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM attribution_matrix WHERE series_id = %lld", series);
    assert_int_equal(q_int(f, sql), (long long)(T - 12) * T);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM attribution_matrix m JOIN tokens t ON t.run_id = m.run_id AND t.pos = m.explained_pos "
             "WHERE series_id = %lld AND t.token_id = m.explained_id",
             series);
    assert_int_equal(q_int(f, sql), (long long)(T - 12) * T);
    json_decref(v);
    /* the table: a column per explained token, blank where the position comes after it */
    f->s->mode = LP_MODE_TABLE;
    assert_int_equal(exec_line(f->s, &f->buf, &f->len, "attr gxi --from 12", NULL), LP_OK);
    assert_non_null(strstr(f->buf, "p(token)"));
    assert_non_null(strstr(f->buf, "entropy"));
    f->s->mode = LP_MODE_JSON;
}

/* generate --attr: the continuation becomes the run, every generated token is explained. */
static void generate_attributes_each_generated_token(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " PROMPT));
    int T = lp_run_len(f->s->run);
    assert_int_equal(exec_line(f->s, &f->buf, &f->len, "generate 3 --no-stop --attr ig --steps 8 --max-steps 8", NULL),
                     LP_OK);
    /* two values: the generation, then the series */
    json_error_t e;
    json_t *gen = json_loadb(f->buf, f->len, JSON_DISABLE_EOF_CHECK, &e);
    assert_non_null(gen);
    json_t *series = json_loads(f->buf + e.position, 0, &e);
    assert_non_null(series);
    assert_int_equal(json_array_size(json_object_get(gen, "ids")), 3);
    assert_int_equal(lp_run_len(f->s->run), T + 3);
    assert_true(json_is_true(json_object_get(series, "generated")));
    assert_int_equal(json_integer_value(json_object_get(series, "from")), T);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(series, "params"), "steps")), 8);
    json_t *steps = json_object_get(series, "steps");
    assert_int_equal(json_array_size(steps), 3);
    for (size_t i = 0; i < 3; i++)
        assert_true(json_equal(json_object_get(json_object_get(json_array_get(steps, i), "token"), "id"),
                               json_array_get(json_object_get(gen, "ids"), i)));
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT generated FROM attribution_series WHERE id = %lld",
             json_integer_value(json_object_get(series, "series_id")));
    assert_int_equal(q_int(f, sql), 1);
    json_decref(gen);
    json_decref(series);
}

static void bad_series_are_refused(void **state) {
    fixture *f = *state;
    json_decref(ok(f, "run " PROMPT));
    int T = lp_run_len(f->s->run);
    char line[100];
    const char *bad[] = {"attr gxi --from 0", "attr gxi --from 3 --target ' Mary'", "attr gxi --from 3 --pos 5",
                         "attr gxi --generated", "generate 3 --steps 8", "generate 3 --vs ' John'"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (exec_line(f->s, &f->buf, &f->len, bad[i], NULL) != LP_EINVAL) fail_msg("'%s' was accepted", bad[i]);
        assert_null(strchr(lp_errmsg(), '\n'));
    }
    snprintf(line, sizeof line, "attr gxi --from %d", T);
    assert_int_equal(exec_line(f->s, &f->buf, &f->len, line, NULL), LP_EINVAL);
    float s[64];
    lp_attr_step st[64];
    lp_attr_spec sp = {.method = LP_ATTR_GXI, .objective = {LP_OBJ_LOGIT, 0, 0, -1}, .baseline = -1, .layer = -1};
    assert_int_equal(lp_attr_steps(s, st, f->s->run, 0, &sp), LP_EINVAL);
    assert_int_equal(lp_attr_steps(s, st, f->s->run, T, &sp), LP_EINVAL);
}

/* An encoder-decoder: attr --from over the decoder's tokens, scores over source and target;
 * generate --attr continues the target and explains what it adds; an encoder has no next
 * token to explain. */
static void other_families(void **state) {
    (void)state;
    fixture g = {session_open("tests/fixtures/t5/t5_relu_tok", false), NULL, 0};
    if (!g.s) fail_msg("%s", lp_errmsg());
    json_decref(ok(&g, "run the cat sat --target the dog sat"));
    json_t *v = ok(&g, "attr gxi --from 1");
    int S = (int)json_integer_value(json_object_get(v, "n_source")), T = lp_run_len(g.s->run);
    assert_true(S > 0);
    assert_int_equal(json_array_size(json_object_get(v, "steps")), T - 1);
    assert_int_equal(json_array_size(json_object_get(json_array_get(json_object_get(v, "steps"), 0), "scores")), S + T);
    json_decref(v);
    /* generate --attr: the source stays, the target grows by what was generated, and each step
     * is what attr --from gives on that run typed out by ids (bit for bit: the same inputs). */
    const lp_run *src = lp_run_source(g.s->run);
    int S0 = lp_run_len(src), src_ids[64], T0 = lp_run_len(g.s->run);
    memcpy(src_ids, lp_run_ids(src), (size_t)S0 * sizeof *src_ids);
    assert_int_equal(exec_line(g.s, &g.buf, &g.len, "generate 2 --no-stop --attr gxi", NULL), LP_OK);
    json_error_t je;
    json_t *gen = json_loadb(g.buf, g.len, JSON_DISABLE_EOF_CHECK, &je), *series = json_loads(g.buf + je.position, 0, &je);
    assert_non_null(gen);
    assert_non_null(series);
    assert_int_equal(lp_run_len(g.s->run), T0 + 2);
    assert_int_equal(lp_run_len(lp_run_source(g.s->run)), S0);
    assert_memory_equal(lp_run_ids(lp_run_source(g.s->run)), src_ids, (size_t)S0 * sizeof *src_ids);
    assert_int_equal(json_integer_value(json_object_get(series, "from")), T0);
    assert_int_equal(json_integer_value(json_object_get(series, "n_source")), S0);
    assert_true(json_is_true(json_object_get(series, "generated")));
    char line[400];
    int n = snprintf(line, sizeof line, "run --ids ");
    for (int i = 0; i < S0; i++) n += snprintf(line + n, sizeof line - n, "%s%d", i ? "," : "", src_ids[i]);
    n += snprintf(line + n, sizeof line - n, " --target-ids ");
    for (int i = 1; i < T0 + 2; i++) /* the decoder's ids after its start id */
        n += snprintf(line + n, sizeof line - n, "%s%d", i > 1 ? "," : "", lp_run_ids(g.s->run)[i]);
    json_decref(ok(&g, line));
    snprintf(line, sizeof line, "attr gxi --from %d", T0);
    json_t *again = ok(&g, line);
    for (size_t i = 0; i < 2; i++) {
        json_t *a = json_array_get(json_object_get(series, "steps"), i), *b = json_array_get(json_object_get(again, "steps"), i);
        assert_true(json_equal(json_object_get(a, "scores"), json_object_get(b, "scores")));
        assert_true(json_equal(json_object_get(json_object_get(a, "token"), "id"),
                               json_array_get(json_object_get(gen, "ids"), i)));
    }
    json_decref(gen);
    json_decref(series);
    json_decref(again);
    session_close(g.s);
    free(g.buf);
    fixture e = {session_open("tests/fixtures/encoders/bert_mlm", false), NULL, 0};
    if (!e.s) fail_msg("%s", lp_errmsg());
    assert_int_equal(exec_line(e.s, &e.buf, &e.len, "run --ids 2,5,6,7,3", NULL), LP_OK);
    assert_int_equal(exec_line(e.s, &e.buf, &e.len, "attr gxi --from 2", NULL), LP_EINVAL);
    session_close(e.s);
    free(e.buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(steps_are_the_attributions_attr_gives),
        cmocka_unit_test(the_command_prints_and_stores_the_series),
        cmocka_unit_test(generate_attributes_each_generated_token),
        cmocka_unit_test(bad_series_are_refused),
        cmocka_unit_test(other_families),
    };
    return cmocka_run_group_tests_name("attr_series", tests, default_session_setup, default_session_teardown);
}
