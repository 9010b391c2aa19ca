/* Training recipes: train.json's numbers are range-checked after conversion to the type they
 * are kept in (one table, shared with the train command's options), so that no recipe can
 * ask for an infinite weight decay or a corpus larger than memory; the default recipe
 * writes and reads back unchanged. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "loupe/error.h"
#include "loupe/recipe.h"

/* Reads the recipe text; returns its status, the message in lp_errmsg. */
static int read_recipe(const char *text, lp_recipe *r) {
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) fail_msg("bad test JSON: %s", e.text);
    int rc = lp_recipe_from_json(r, j, "train.json");
    json_decref(j);
    return rc;
}

static void refused(const char *text, const char *key) {
    lp_recipe r;
    lp_error_clear();
    if (read_recipe(text, &r) == LP_OK) fail_msg("accepted: %s", text);
    if (!strstr(lp_errmsg(), key)) fail_msg("%s: the message does not name %s: %s", text, key, lp_errmsg());
}

static void test_a_float_too_large_for_its_type_is_refused(void **state) {
    (void)state;
    /* A double that passes (1e300 >= 0) but is infinite as the float it is kept in. */
    refused("{\"train\": {\"weight_decay\": 1e300}}", "train.weight_decay");
    refused("{\"train\": {\"lr\": 1e300}}", "train.lr");
    refused("{\"train\": {\"lr\": 1e-300}}", "train.lr"); /* 0 as a float */
    refused("{\"train\": {\"eps\": 1e-50}}", "train.eps");
    refused("{\"train\": {\"grad_clip\": 1e39}}", "train.grad_clip");
    refused("{\"train\": {\"beta2\": 1.0}}", "train.beta2");
    refused("{\"model\": {\"embed_std\": 1e300}}", "model.embed_std");
}

/* fuzz_recipe's crash (kept in its corpus): eps 9.9e209, an infinite float, was accepted and
 * then could not be written back to JSON. */
static void test_the_fuzzers_crash_is_refused(void **state) {
    (void)state;
    json_error_t e;
    json_t *j = json_load_file("tests/fuzz/corpus/recipe/crash-eps-inf.json", 0, &e);
    if (!j) fail_msg("tests/fuzz/corpus/recipe/crash-eps-inf.json: %s", e.text);
    lp_recipe r;
    assert_int_equal(lp_recipe_from_json(&r, j, "crash"), LP_EINVAL);
    json_decref(j);
    refused("{\"train\": {\"eps\": 9.9993922529e209}}", "train.eps");
}

static void test_the_corpus_size_is_capped(void **state) {
    (void)state;
    refused("{\"corpus\": {\"n_bytes\": 1125899906842624}}", "corpus.n_bytes"); /* 2^50 */
    refused("{\"corpus\": {\"n_docs\": 1099511627776}}", "corpus.n_docs");
    refused("{\"corpus\": {\"proportion\": {\"ioi\": 1e308, \"repeat\": 1e308}}}", "corpus.proportion.ioi");
    refused("{\"corpus\": {\"n_bytes\": 0, \"n_docs\": 0}}", "corpus needs a size");
}

static void test_integers_are_whole_and_in_range(void **state) {
    (void)state;
    refused("{\"train\": {\"steps\": 1099511627776}}", "train.steps");
    refused("{\"train\": {\"steps\": 2.5}}", "train.steps");
    refused("{\"train\": {\"eval_batches\": 2000000000}}", "train.eval_batches");
    refused("{\"train\": {\"threads\": 0}}", "train.threads");
    refused("{\"vocab\": -1}", "vocab");
    refused("{\"model\": {\"n_head\": 3}}", "multiple of heads");
    refused("{\"corpus\": {\"span_min\": 9, \"span_max\": 3}}", "spans");
    refused("{\"model\": {\"attn_only\": 1}}", "model.attn_only");
}

static void test_options_share_the_recipe_ranges(void **state) {
    (void)state;
    lp_recipe r;
    lp_recipe_default(&r);
    assert_int_equal(lp_recipe_set(&r, "train.weight_decay", 1e300, "--weight-decay"), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "--weight-decay"));
    assert_int_equal(lp_recipe_set(&r, "corpus.n_bytes", 1125899906842624.0, "corpus"), LP_EINVAL);
    assert_int_equal(lp_recipe_set(&r, "train.lr", 1e-3, "--lr"), LP_OK);
    assert_true(r.train.lr == 1e-3f);
    /* A recipe filled in by hand goes through the same table. */
    r.train.weight_decay = INFINITY;
    assert_int_equal(lp_recipe_check(&r), LP_EINVAL);
    r.train.weight_decay = 0.1f;
    r.train.min_lr = NAN;
    assert_int_equal(lp_recipe_check(&r), LP_EINVAL);
}

static void test_the_default_recipe_round_trips(void **state) {
    (void)state;
    lp_recipe r, back;
    lp_recipe_default(&r);
    assert_int_equal(lp_recipe_check(&r), LP_OK);
    json_t *j = lp_recipe_to_json(&r);
    assert_non_null(j);
    assert_int_equal(lp_recipe_from_json(&back, j, "again"), LP_OK);
    json_t *again = lp_recipe_to_json(&back);
    assert_true(json_equal(j, again));
    json_decref(j);
    json_decref(again);
}

/* A T5's recipe keeps its task (rules, digits, held-out split) and its encoder's layers
 * through train.json; a rule mask past the three rules is refused. */
static void test_a_seq2seq_recipe_round_trips(void **state) {
    (void)state;
    lp_recipe r, back;
    lp_recipe_default_seq2seq(&r);
    r.s2s.rules = 1u << LP_S2S_SWAP;
    r.s2s.max_digits = 12;
    r.train.T = 14;
    r.model.enc_layers = 1;
    assert_int_equal(lp_recipe_check(&r), LP_OK);
    json_t *j = lp_recipe_to_json(&r);
    assert_int_equal(lp_recipe_from_json(&back, j, "again"), LP_OK);
    assert_int_equal(back.task, LP_TASK_S2S);
    assert_int_equal(back.s2s.rules, 1u << LP_S2S_SWAP);
    assert_int_equal(back.s2s.max_digits, 12);
    assert_int_equal(back.model.enc_layers, 1);
    assert_int_equal(back.vocab, 26);
    json_t *again = lp_recipe_to_json(&back);
    assert_true(json_equal(j, again));
    json_decref(again);
    json_object_set_new(json_object_get(j, "s2s"), "rules", json_integer(8));
    assert_int_equal(lp_recipe_from_json(&back, j, "bad"), LP_EINVAL);
    json_decref(j);
    r.train.T = 13; /* a source of 12 digits is 14 tokens */
    assert_int_equal(lp_recipe_check(&r), LP_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_float_too_large_for_its_type_is_refused),
        cmocka_unit_test(test_the_fuzzers_crash_is_refused),
        cmocka_unit_test(test_the_corpus_size_is_capped),
        cmocka_unit_test(test_integers_are_whole_and_in_range),
        cmocka_unit_test(test_options_share_the_recipe_ranges),
        cmocka_unit_test(test_the_default_recipe_round_trips),
        cmocka_unit_test(test_a_seq2seq_recipe_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
