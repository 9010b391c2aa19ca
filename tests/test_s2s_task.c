/* The synthetic seq2seq task and its word-level tokenizer: determinism for a seed, the
 * alignment of every rule (each target word is the number word of the source digit it
 * points at), disjoint training and held-out digit strings, refused specs, and the
 * tokenizer loaded back by loupe's loader: one token per word, </s> appended, decoding
 * gives the text back, the alignment indexes encoder positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loupe/error.h"
#include "loupe/s2s_task.h"
#include "loupe/tokenizer.h"
#include "loupe/unigram_words.h"

static const char *const NUMBER[10] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};

static lp_s2s_spec spec_all_rules(uint64_t seed) {
    lp_s2s_spec sp;
    lp_s2s_spec_default(&sp);
    sp.seed = seed;
    sp.rules = 7;
    sp.min_digits = 1;
    sp.max_digits = 12;
    return sp;
}

/* Splits s at single spaces into words (at most cap), returns the count. */
static int split_words(char *s, char **w, int cap) {
    int n = 0;
    for (char *tok = strtok(s, " "); tok && n < cap; tok = strtok(NULL, " ")) w[n++] = tok;
    return n;
}

static void same_seed_same_examples_other_seed_differs(void **state) {
    (void)state;
    enum { N = 500 };
    static lp_s2s_example a[N], b[N], c[N];
    lp_s2s_spec sp = spec_all_rules(7), other = spec_all_rules(8);
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, N, a), LP_OK);
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, N, b), LP_OK);
    assert_int_equal(lp_s2s_examples(&other, LP_S2S_TRAIN, N, c), LP_OK);
    assert_memory_equal(a, b, sizeof a);
    int same = 0;
    for (int i = 0; i < N; i++) same += strcmp(a[i].source, c[i].source) == 0;
    assert_true(same < N / 10);
    /* a prefix is the same whatever n: a trainer may ask for more later */
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 10, c), LP_OK);
    assert_memory_equal(a, c, 10 * sizeof *c);
}

static void every_target_word_is_the_number_word_of_its_aligned_source_digit(void **state) {
    (void)state;
    enum { N = 2000 };
    static lp_s2s_example ex[N];
    lp_s2s_spec sp = spec_all_rules(3);
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, N, ex), LP_OK);
    int per_rule[LP_S2S_N_RULES] = {0}, lengths[LP_S2S_MAX_DIGITS + 1] = {0};
    for (int i = 0; i < N; i++) {
        lp_s2s_example *e = &ex[i];
        char src[sizeof e->source], tgt[sizeof e->target], *sw[LP_S2S_MAX_DIGITS + 2], *tw[LP_S2S_MAX_DIGITS + 1];
        strcpy(src, e->source), strcpy(tgt, e->target);
        int ns = split_words(src, sw, LP_S2S_MAX_DIGITS + 2), nt = split_words(tgt, tw, LP_S2S_MAX_DIGITS + 1);
        assert_int_equal(ns, e->n + 1);
        assert_int_equal(nt, e->n);
        assert_string_equal(sw[0], lp_s2s_rule_name(e->rule));
        bool used[LP_S2S_MAX_DIGITS + 1] = {false};
        for (int j = 0; j < e->n; j++) {
            int a = e->align[j];
            assert_true(a >= 1 && a <= e->n);
            assert_false(used[a]); /* a permutation: each source digit written once */
            used[a] = true;
            assert_int_equal(sw[a][0] - '0', e->digits[a - 1]);
            assert_string_equal(tw[j], NUMBER[e->digits[a - 1]]);
            int want = e->rule == LP_S2S_COPY ? j + 1 : e->rule == LP_S2S_REVERSE ? e->n - j
                       : ((j ^ 1) < e->n ? (j ^ 1) : j) + 1;
            assert_int_equal(a, want);
        }
        per_rule[e->rule]++;
        lengths[e->n]++;
    }
    for (int r = 0; r < LP_S2S_N_RULES; r++) assert_true(per_rule[r] > N / 4);
    for (int n = 1; n <= 12; n++) assert_true(lengths[n] > 0);
    assert_int_equal(lengths[13] + lengths[0], 0);
}

static void hand_examples_align_as_the_rules_say(void **state) {
    (void)state;
    /* the first example of each rule among 4-digit strings, checked against its digits */
    lp_s2s_spec sp = spec_all_rules(11);
    sp.min_digits = sp.max_digits = 4;
    lp_s2s_example ex[60];
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 60, ex), LP_OK);
    static const int want[LP_S2S_N_RULES][4] = {{1, 2, 3, 4}, {4, 3, 2, 1}, {2, 1, 4, 3}};
    bool seen[LP_S2S_N_RULES] = {false};
    for (int i = 0; i < 60; i++) {
        const lp_s2s_example *e = &ex[i];
        if (seen[e->rule]) continue;
        seen[e->rule] = true;
        assert_memory_equal(e->align, want[e->rule], sizeof want[0]);
        char expect[112];
        const int *d = e->digits, *a = want[e->rule];
        snprintf(expect, sizeof expect, "%s %s %s %s", NUMBER[d[a[0] - 1]], NUMBER[d[a[1] - 1]], NUMBER[d[a[2] - 1]],
                 NUMBER[d[a[3] - 1]]);
        assert_string_equal(e->target, expect);
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    /* swap keeps an odd last digit in place */
    sp.rules = 1u << LP_S2S_SWAP;
    sp.min_digits = sp.max_digits = 5;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 1, ex), LP_OK);
    static const int five[5] = {2, 1, 4, 3, 5};
    assert_memory_equal(ex[0].align, five, sizeof five);
}

static bool same_digits(const lp_s2s_example *a, const lp_s2s_example *b) {
    return a->n == b->n && memcmp(a->digits, b->digits, (size_t)a->n * sizeof *a->digits) == 0;
}

static void held_out_digit_strings_never_appear_in_training(void **state) {
    (void)state;
    enum { NT = 6000, NH = 600 };
    static lp_s2s_example tr[NT], ho[NH];
    lp_s2s_spec sp;
    lp_s2s_spec_default(&sp);
    sp.min_digits = 2, sp.max_digits = 4; /* short strings, so that collisions would happen */
    sp.seed = 1;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, NT, tr), LP_OK);
    sp.seed = 2; /* another seed: the split does not depend on it */
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_HELDOUT, NH, ho), LP_OK);
    int repeats = 0;
    for (int i = 0; i < NH; i++) {
        assert_true(lp_s2s_is_heldout(ho[i].digits, ho[i].n, sp.heldout_every));
        for (int k = 0; k < NT; k++) assert_false(same_digits(&ho[i], &tr[k]));
        repeats += i > 0 && same_digits(&ho[i], &ho[i - 1]);
    }
    for (int k = 0; k < NT; k++) assert_false(lp_s2s_is_heldout(tr[k].digits, tr[k].n, sp.heldout_every));
    assert_true(repeats < NH / 4); /* the held-out stream is not stuck on one string */
    /* about 1 in heldout_every strings is held out */
    int held = 0, total = 0, d[3];
    for (d[0] = 0; d[0] < 10; d[0]++)
        for (d[1] = 0; d[1] < 10; d[1]++)
            for (d[2] = 0; d[2] < 10; d[2]++, total++) held += lp_s2s_is_heldout(d, 3, 10);
    assert_true(held > total / 20 && held < total / 5);
}

static void bad_specs_are_refused(void **state) {
    (void)state;
    lp_s2s_example e[2];
    lp_s2s_spec sp;
    lp_s2s_spec_default(&sp);
    sp.rules = 0;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 2, e), LP_EINVAL);
    sp.rules = 1u << LP_S2S_N_RULES;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 2, e), LP_EINVAL);
    lp_s2s_spec_default(&sp);
    sp.min_digits = 0;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 2, e), LP_EINVAL);
    sp.min_digits = 5, sp.max_digits = 4;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 2, e), LP_EINVAL);
    sp.min_digits = 1, sp.max_digits = LP_S2S_MAX_DIGITS + 1;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 2, e), LP_EINVAL);
    lp_s2s_spec_default(&sp);
    sp.heldout_every = 1;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 2, e), LP_EINVAL);
    /* one-digit strings: a split that holds none of the ten is an error, not a hang */
    sp.heldout_every = 1000;
    sp.min_digits = sp.max_digits = 1;
    int held = 0;
    for (int d = 0; d < 10; d++) held += lp_s2s_is_heldout(&d, 1, 1000);
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_HELDOUT, 2, e), held ? LP_OK : LP_EINVAL);
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 2, e), held < 10 ? LP_OK : LP_EINVAL);
    assert_true(strstr(lp_errmsg(), "s2s task") != NULL || held);
}

static void alignment_hits_count_rows_whose_strongest_key_is_the_aligned_one(void **state) {
    (void)state;
    lp_s2s_spec sp = spec_all_rules(5);
    sp.rules = 1u << LP_S2S_REVERSE;
    sp.min_digits = sp.max_digits = 6;
    lp_s2s_example e;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, 1, &e), LP_OK);
    enum { ROWS = 7, S = 8 }; /* decoder: start + 6 words; encoder: rule + 6 digits + </s> */
    float p[ROWS * S];
    for (int j = 0; j < ROWS; j++)
        for (int s = 0; s < S; s++) p[j * S + s] = j < 6 && s == e.align[j] ? 0.6f : 0.4f / (S - 1);
    assert_int_equal(lp_s2s_alignment_hits(&e, p, ROWS, S), 6);
    for (int j = 0; j < 6; j++) { /* the diagonal instead: right only where it crosses the anti-diagonal */
        for (int s = 0; s < S; s++) p[j * S + s] = s == j + 1 ? 0.9f : 0.0f;
    }
    int crossings = 0;
    for (int j = 0; j < 6; j++) crossings += e.align[j] == j + 1;
    assert_int_equal(lp_s2s_alignment_hits(&e, p, ROWS, S), crossings);
}

/* ---- the tokenizer ---- */

static char tmpdir[64];

static int make_dir(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/loupe_s2s_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

/* Encodes text with the template, checks one token per word and </s> last, decodes back. */
static int round_trip(const lp_tokenizer *t, const char *text, int *ids, int cap) {
    int n = 0;
    assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), true, ids, cap, &n), LP_OK);
    char copy[256], *w[LP_S2S_MAX_DIGITS + 2], piece[64];
    snprintf(copy, sizeof copy, "%s", text);
    int nw = split_words(copy, w, LP_S2S_MAX_DIGITS + 2);
    assert_int_equal(n, nw + 1);
    assert_int_equal(ids[n - 1], LP_UW_EOS);
    for (int i = 0; i < nw; i++) {
        snprintf(piece, sizeof piece, "\xe2\x96\x81%s", w[i]);
        assert_int_equal(ids[i], lp_tokenizer_piece_to_id(t, piece));
        assert_true(ids[i] >= LP_UW_N_SPECIAL);
    }
    char back[256];
    size_t len;
    assert_int_equal(lp_tokenizer_decode(t, ids, n, back, sizeof back, &len), LP_OK);
    assert_string_equal(back, text);
    return n;
}

static void tokenizer_loads_back_and_round_trips_the_task(void **state) {
    (void)state;
    int vocab = 0, n_words;
    lp_s2s_words(&n_words);
    assert_int_equal(lp_s2s_tokenizer_save(tmpdir, &vocab), LP_OK);
    assert_int_equal(vocab, LP_UW_N_SPECIAL + n_words);
    lp_tokenizer *t;
    assert_int_equal(lp_tokenizer_load_dir(&t, tmpdir), LP_OK);
    assert_string_equal(lp_tokenizer_kind_name(t), "unigram");
    assert_int_equal(lp_tokenizer_vocab_size(t), vocab);
    assert_int_equal(lp_tokenizer_eos(t), LP_UW_EOS);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_PAD), LP_UW_PAD);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_UNK), LP_UW_UNK);
    enum { N = 400 };
    static lp_s2s_example ex[N];
    lp_s2s_spec sp = spec_all_rules(9);
    sp.max_digits = LP_S2S_MAX_DIGITS;
    assert_int_equal(lp_s2s_examples(&sp, LP_S2S_TRAIN, N, ex), LP_OK);
    int ids[64], tids[64];
    for (int i = 0; i < N; i++) {
        const lp_s2s_example *e = &ex[i];
        assert_int_equal(round_trip(t, e->source, ids, 64), e->n + 2);
        assert_int_equal(round_trip(t, e->target, tids, 64), e->n + 1);
        /* align[j] is the encoder position of the digit that target word j spells */
        for (int j = 0; j < e->n; j++) {
            char digit[8];
            snprintf(digit, sizeof digit, "\xe2\x96\x81%d", e->digits[e->align[j] - 1]);
            assert_int_equal(ids[e->align[j]], lp_tokenizer_piece_to_id(t, digit));
        }
    }
    /* a word outside the task is one <unk>; the specials written out are matched whole */
    int n = 0;
    assert_int_equal(lp_tokenizer_encode(t, "copy eleven 4", 13, false, ids, 64, &n), LP_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], LP_UW_UNK);
    assert_int_equal(lp_tokenizer_encode(t, "four</s>", 8, false, ids, 64, &n), LP_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], LP_UW_EOS);
    lp_tokenizer_free(t);
}

static void word_lists_that_cannot_be_a_tokenizer_are_refused(void **state) {
    (void)state;
    const char *dup[] = {"a", "b", "a"}, *blank[] = {"a b"}, *empty[] = {""}, *special[] = {"<pad>"},
               *marker[] = {"x\xe2\x96\x81y"};
    assert_int_equal(lp_unigram_words_save(tmpdir, dup, 3), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "twice"));
    assert_int_equal(lp_unigram_words_save(tmpdir, blank, 1), LP_EINVAL);
    assert_int_equal(lp_unigram_words_save(tmpdir, empty, 1), LP_EINVAL);
    assert_int_equal(lp_unigram_words_save(tmpdir, special, 1), LP_EINVAL);
    assert_int_equal(lp_unigram_words_save(tmpdir, marker, 1), LP_EINVAL);
    assert_int_equal(lp_unigram_words_save(tmpdir, dup, 0), LP_EINVAL);
    assert_int_equal(lp_unigram_words_save("/nonexistent/dir", dup, 2), LP_EIO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_seed_same_examples_other_seed_differs),
        cmocka_unit_test(every_target_word_is_the_number_word_of_its_aligned_source_digit),
        cmocka_unit_test(hand_examples_align_as_the_rules_say),
        cmocka_unit_test(held_out_digit_strings_never_appear_in_training),
        cmocka_unit_test(bad_specs_are_refused),
        cmocka_unit_test(alignment_hits_count_rows_whose_strongest_key_is_the_aligned_one),
        cmocka_unit_test(tokenizer_loads_back_and_round_trips_the_task),
        cmocka_unit_test(word_lists_that_cannot_be_a_tokenizer_are_refused),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
