/* Output of results: non-finite numbers are explicit nulls, never dropped (jansson's
 * json_real(NaN) is NULL, which made `logits` print [] and attention rows come out short). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/output.h"

/* What lp_output prints for value (and table) in mode, as a new string. */
static char *render(lp_mode mode, json_t *value, json_t *table) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    lp_output(f, mode, value, table);
    fclose(f);
    return buf;
}

static void nonfinite_numbers_are_null_and_keep_their_place(void **state) {
    (void)state;
    json_t *nan = lp_json_number(NAN), *inf = lp_json_number(-INFINITY), *one = lp_json_number(1.5);
    assert_true(json_is_null(nan) && json_is_null(inf) && json_is_real(one));
    json_decref(nan), json_decref(inf), json_decref(one);

    json_t *arr = json_array();
    double xs[] = {0.25, NAN, INFINITY, -1.0};
    for (int i = 0; i < 4; i++) json_array_append_new(arr, lp_json_number(xs[i]));
    assert_int_equal(json_array_size(arr), 4);
    json_t *v = json_pack("{s:i,s:o}", "pos", 0, "logits", arr);
    char *out = render(LP_MODE_JSON, v, NULL);
    if (!strstr(out, "[0.25,null,null,-1.0]")) fail_msg("json: %s", out);
    free(out);

    json_t *t = lp_table_new();
    lp_table_column(t, "id", 0, NULL);
    lp_table_column(t, "logit", 0, NULL);
    lp_table_row(t, json_pack("[i,o]", 7, lp_json_number(NAN)));
    lp_table_row(t, json_pack("[i,o]", 8, lp_json_number(2.0)));
    out = render(LP_MODE_CSV, v, t);
    if (!strstr(out, "7,\r\n8,2\r\n")) fail_msg("csv: %s", out);
    free(out);
    json_decref(t);
    json_decref(v);
}

/* An object shown as a field/value table (info): each value keeps its own digits, where a
 * column of related numbers shares one number of decimals (rope_theta 10000 made norm_eps 1e-5
 * print as 0). */
static void field_values_are_each_shown_alone(void **state) {
    (void)state;
    json_t *v = json_pack("{s:o,s:o,s:o}", "norm_eps", lp_json_number(1e-5), "rope_theta", lp_json_number(10000.0),
                          "scale", lp_json_number(0.125));
    char *out = render(LP_MODE_TABLE, v, NULL);
    if (!strstr(out, "1e-05") || !strstr(out, "10000") || !strstr(out, "0.125")) fail_msg("table: %s", out);
    free(out);
    json_decref(v);
    /* a table's column of related numbers still shares its decimals */
    json_t *t = lp_table_new();
    lp_table_column(t, "p", 0, NULL);
    lp_table_row(t, json_pack("[o]", lp_json_number(0.96875)));
    lp_table_row(t, json_pack("[o]", lp_json_number(0.0003)));
    v = json_array();
    out = render(LP_MODE_TABLE, v, t);
    if (!strstr(out, "0.9688") || !strstr(out, "0.0003")) fail_msg("table: %s", out);
    free(out);
    json_decref(t);
    json_decref(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nonfinite_numbers_are_null_and_keep_their_place),
        cmocka_unit_test(field_values_are_each_shown_alone),
    };
    return cmocka_run_group_tests_name("output", tests, NULL, NULL);
}
