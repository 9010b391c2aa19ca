/* The bundled T5 (models/seq2seq/digits, or $LOUPE_SEQ2SEQ_MODEL), trained by `make
 * t5-model` to rewrite digits as number words under copy, reverse and swap, does the task
 * and shows where each word comes from, measured on the committed weights over held-out
 * digit strings (s2s_task.h: strings no training stream holds, under any seed or rule):
 *  - greedy decoding gives the target exactly on >= 95% of them;
 *  - some cross-attention head (or a layer's mean) has its largest weight on the source
 *    digit a word comes from for >= 90% of target words;
 *  - `run "reverse 4 0 7"` decodes to "seven zero four", through the tokenizer.json it came
 *    with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/s2s_eval.h"
#include "loupe/s2s_task.h"
#include "loupe/tokenizer.h"

#define EXACT_MIN 0.95
#define ALIGNED_MIN 0.90
#define HELDOUT_PAIRS 400
#define SAMPLE_SEED 20261202 /* any seed: not the training run's held-out sample */

static lp_model *model;

static int load(void **state) {
    (void)state;
    const char *dir = getenv("LOUPE_SEQ2SEQ_MODEL");
    if (!dir || !*dir) dir = "models/seq2seq/digits";
    if (lp_model_load(&model, dir, NULL)) {
        fprintf(stderr, "error: %s\n", lp_errmsg());
        return -1;
    }
    return 0;
}

static int unload(void **state) {
    (void)state;
    lp_model_free(model);
    return 0;
}

static void test_does_the_task_and_aligns_on_held_out_strings(void **state) {
    (void)state;
    lp_s2s_spec spec;
    lp_s2s_spec_default(&spec);
    spec.seed = SAMPLE_SEED;
    spec.rules = 1u << LP_S2S_COPY | 1u << LP_S2S_REVERSE | 1u << LP_S2S_SWAP;
    spec.min_digits = 3;
    spec.max_digits = 8;
    lp_s2s_example *ex = malloc(HELDOUT_PAIRS * sizeof *ex);
    assert_int_equal(lp_s2s_examples(&spec, LP_S2S_HELDOUT, HELDOUT_PAIRS, ex), LP_OK);
    lp_s2s_score *sc;
    if (lp_s2s_score_new(&sc, model, ex, HELDOUT_PAIRS)) fail_msg("%s", lp_errmsg());
    print_message("%d held-out pairs: greedy exact %.1f%%, token accuracy %.1f%%; best cross-attention alignment "
                  "%.1f%% (layer %d, %s %d)\n", sc->n, 100 * sc->exact, 100 * sc->tf_accuracy, 100 * sc->best_hits,
                  sc->best_layer, sc->best_head == sc->heads ? "mean of" : "head", sc->best_head == sc->heads ? sc->heads
                  : sc->best_head);
    assert_true(sc->exact >= EXACT_MIN);
    assert_true(sc->best_hits >= ALIGNED_MIN);
    lp_s2s_score_free(sc);
    free(ex);
}

static void test_reverses_4_0_7_into_words(void **state) {
    (void)state;
    const lp_tokenizer *tok = lp_model_tokenizer(model);
    const lp_config *c = lp_model_config(model);
    int src[16], S, out[16], n;
    assert_int_equal(lp_tokenizer_encode(tok, "reverse 4 0 7", 13, true, src, 16, &S), LP_OK);
    lp_run *enc;
    assert_int_equal(lp_run_new(&enc, lp_model_encoder(model), src, S), LP_OK);
    assert_int_equal(lp_generate_seq2seq(model, enc, &c->start_id, 1, 10, NULL, 1, out, &n), LP_OK);
    lp_run_free(enc);
    assert_true(n >= 1 && out[n - 1] == c->eos_id);
    char text[128];
    size_t len;
    assert_int_equal(lp_tokenizer_decode(tok, out, n - 1, text, sizeof text, &len), LP_OK);
    assert_string_equal(text, "seven zero four");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_does_the_task_and_aligns_on_held_out_strings),
        cmocka_unit_test(test_reverses_4_0_7_into_words),
    };
    return cmocka_run_group_tests(tests, load, unload);
}
