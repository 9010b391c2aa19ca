/* Corpus generator tests: determinism for a seed, the mixture's proportions, the document
 * index, the IOI form (the answer is the indirect object, both name orders) and repeated
 * spans that really repeat. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loupe/corpus.h"
#include "loupe/error.h"
#include "loupe/recipe.h"
#include "loupe/tokenizer.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void generate(uint64_t seed, size_t n_bytes, char **text, size_t *len) {
    lp_corpus_spec sp;
    lp_corpus_spec_default(&sp);
    sp.seed = seed;
    sp.n_bytes = n_bytes;
    assert_int_equal(lp_corpus_new(&sp, text, len, NULL, NULL), LP_OK);
}

static void same_seed_gives_identical_text_other_seed_differs(void **state) {
    (void)state;
    char *a, *b, *c;
    size_t na, nb, nc;
    generate(42, 100000, &a, &na);
    generate(42, 100000, &b, &nb);
    generate(43, 100000, &c, &nc);
    assert_true(na >= 100000);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    assert_true(na != nc || memcmp(a, c, na) != 0);
    assert_int_equal(strlen(a), na); /* NUL-terminated, no NUL inside */
    free(a), free(b), free(c);
}

static size_t count_eot(const char *s, size_t n) {
    size_t k = 0;
    const size_t e = strlen(LP_CORPUS_EOT);
    for (const char *p = s; (p = memmem(p, n - (size_t)(p - s), LP_CORPUS_EOT, e)); p += e) k++;
    return k;
}

static bool is_name_token(const char *s, size_t n) {
    if (n < 3 || s[0] != ' ' || !isupper((unsigned char)s[1])) return false;
    for (size_t i = 2; i < n; i++)
        if (!islower((unsigned char)s[i])) return false;
    return true;
}

static void proportions_and_document_index_hold(void **state) {
    (void)state;
    lp_corpus_spec sp;
    lp_corpus_spec_default(&sp);
    sp.seed = 7;
    sp.n_docs = 3000;
    sp.proportion[LP_CORPUS_IOI] = 0.5;
    sp.proportion[LP_CORPUS_REPEAT] = 0.2;
    sp.proportion[LP_CORPUS_FILLER] = 0.3;
    char *text;
    size_t len, n;
    lp_corpus_doc *docs;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, &docs, &n), LP_OK);
    assert_int_equal(n, 3000);
    assert_int_equal(count_eot(text, len), n);
    size_t kinds[LP_CORPUS_N_KINDS] = {0}, at = 0;
    const size_t e = strlen(LP_CORPUS_EOT);
    for (size_t i = 0; i < n; i++) {
        const lp_corpus_doc *d = &docs[i];
        assert_int_equal(d->off, at); /* documents tile the text, each followed by the separator */
        assert_memory_equal(text + d->off + d->len, LP_CORPUS_EOT, e);
        at = d->off + d->len + e;
        kinds[d->kind]++;
        if (d->kind == LP_CORPUS_IOI) {
            assert_true(is_name_token(text + d->answer_off, d->answer_len));
            assert_memory_equal(text + d->answer_off - 3, " to", 3);
            assert_int_equal(text[d->answer_off + d->answer_len], '.');
        } else if (d->kind == LP_CORPUS_REPEAT) {
            assert_true(d->span_len > 0 && d->repeat_off >= d->span_off + d->span_len);
            assert_true(d->repeat_off + d->span_len < d->off + d->len);
            assert_memory_equal(text + d->span_off, text + d->repeat_off, d->span_len);
        }
    }
    assert_int_equal(at, len);
    const double want[] = {0.5, 0.2, 0.3};
    for (int k = 0; k < LP_CORPUS_N_KINDS; k++) {
        double got = (double)kinds[k] / (double)n;
        if (fabs(got - want[k]) > 0.04) fail_msg("kind %d: %.3f of documents, expected about %.2f", k, got, want[k]);
    }
    free(text);
    free(docs);
}

static void repeated_spans_have_the_asked_length(void **state) {
    (void)state;
    lp_corpus_spec sp;
    lp_corpus_spec_default(&sp);
    sp.seed = 3;
    sp.n_docs = 400;
    sp.proportion[LP_CORPUS_IOI] = sp.proportion[LP_CORPUS_FILLER] = 0;
    sp.span_min = 3, sp.span_max = 5;
    char *text;
    size_t len, n;
    lp_corpus_doc *docs;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, &docs, &n), LP_OK);
    int seen_words[6] = {0};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(docs[i].kind, LP_CORPUS_REPEAT);
        int words = 1;
        for (size_t j = 0; j < docs[i].span_len; j++) words += text[docs[i].span_off + j] == ' ';
        assert_true(words >= 3 && words <= 5);
        seen_words[words] = 1;
    }
    assert_true(seen_words[3] && seen_words[4] && seen_words[5]);
    free(text);
    free(docs);
}

static void bad_specs_are_refused(void **state) {
    (void)state;
    lp_corpus_spec sp;
    char *text;
    size_t len;
    lp_corpus_spec_default(&sp);
    sp.proportion[0] = sp.proportion[1] = sp.proportion[2] = 0;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, NULL, NULL), LP_EINVAL);
    lp_corpus_spec_default(&sp);
    sp.proportion[1] = -1;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, NULL, NULL), LP_EINVAL);
    lp_corpus_spec_default(&sp);
    sp.span_min = 5, sp.span_max = 4;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, NULL, NULL), LP_EINVAL);
    lp_corpus_spec_default(&sp);
    sp.n_bytes = 0;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, NULL, NULL), LP_EINVAL);
    assert_null(text);
    const double bad_shares[] = {-0.1, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        lp_corpus_spec_default(&sp);
        sp.scrambled = bad_shares[i];
        assert_int_equal(lp_corpus_new(&sp, &text, &len, NULL, NULL), LP_EINVAL);
        assert_null(text);
    }
}

/* Occurrences of the word w (" Mary": its leading space stands for any word boundary,
 * the start of s included) in s, not as part of a longer word. */
static int count_word(const char *s, const char *w, const char **first) {
    int k = 0;
    if (*w == ' ') w++;
    size_t n = strlen(w);
    *first = NULL;
    for (const char *p = s; (p = strstr(p, w)); p += n)
        if ((p == s || !isalpha((unsigned char)p[-1])) && !isalpha((unsigned char)p[n])) {
            if (!k) *first = p;
            k++;
        }
    return k;
}

/* Prompts of either kind end before the IO, name it once and the subject twice, in both
 * orders, over every form; they are deterministic for a seed. */
static void check_prompts(lp_ioi_frames frames) {
    enum { N = 400 };
    static lp_ioi_prompt p[N], q[N];
    lp_corpus_ioi_prompts(5, frames, N, p);
    lp_corpus_ioi_prompts(5, frames, N, q);
    assert_memory_equal(p, q, sizeof p);
    int abba = 0, baba = 0, forms[64] = {0}, n_forms = 0;
    for (int i = 0; i < N; i++) {
        size_t n = strlen(p[i].prompt);
        assert_true(n > 20);
        assert_string_equal(p[i].prompt + n - 3, " to");
        assert_true(is_name_token(p[i].io, strlen(p[i].io)));
        assert_true(is_name_token(p[i].subject, strlen(p[i].subject)));
        assert_string_not_equal(p[i].io, p[i].subject);
        const char *io_at, *s_at;
        if (count_word(p[i].prompt, p[i].io, &io_at) != 1 || count_word(p[i].prompt, p[i].subject, &s_at) != 2)
            fail_msg("prompt %d: \"%s\" should name%s once and%s twice", i, p[i].prompt, p[i].io, p[i].subject);
        assert_int_equal(p[i].abba, io_at < s_at); /* ABBA: the IO is named first */
        abba += p[i].abba, baba += !p[i].abba;
        assert_true(p[i].form >= 0 && p[i].form < lp_corpus_n_forms(frames) && p[i].form < 64);
        if (!forms[p[i].form]++) n_forms++;
    }
    assert_int_equal(abba, N / 2);
    assert_int_equal(baba, N / 2);
    assert_true(lp_corpus_n_forms(frames) >= 6);
    assert_int_equal(n_forms, lp_corpus_n_forms(frames));
    lp_corpus_ioi_prompts(6, frames, N, q);
    assert_true(memcmp(p, q, sizeof p) != 0);
}

static void ioi_prompts_end_before_the_indirect_object(void **state) {
    (void)state;
    check_prompts(LP_IOI_TRAINING);
    check_prompts(LP_IOI_HELDOUT);
}

/* Whole-word occurrences of w (" vase") in s[0..n). */
static int count_in(const char *s, size_t n, const char *w) {
    int k = 0;
    size_t m = strlen(w);
    for (const char *q = s; (q = memmem(q, n - (size_t)(q - s), w, m)); q++) k += !isalpha((unsigned char)q[m]);
    return k;
}

/* Held-out frames are never generated for training: no held-out prompt's action (from the
 * subject's second mention to " to") occurs anywhere in a training corpus of every kind of
 * document, and the held-out verbs, places and objects occur in no training story, while
 * filler sentences use them (spans of real words only: a made-up word could be anything). */
static void check_held_out_frames(double scrambled) {
    lp_corpus_spec sp;
    lp_corpus_spec_default(&sp);
    sp.seed = 13;
    sp.n_bytes = 4 << 20;
    sp.letter_words = 0;
    sp.scrambled = scrambled;
    char *text;
    size_t len, n_docs;
    lp_corpus_doc *docs;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, &docs, &n_docs), LP_OK);
    enum { N = 400 };
    static lp_ioi_prompt p[N];
    lp_corpus_ioi_prompts(9, LP_IOI_HELDOUT, N, p);
    for (int i = 0; i < N; i++) {
        const char *second = strstr(p[i].prompt + 1, p[i].subject);
        while (second && strstr(second + 1, p[i].subject)) second = strstr(second + 1, p[i].subject);
        assert_non_null(second);
        if (memmem(text, len, second, strlen(second)))
            fail_msg("held-out prompt %d: \"%s\" occurs in the training corpus", i, second);
    }
    const char *const words[] = {"threw", "sold", "lent", "mailed", "returned", "delivered", "slid", "throw", "sell",
                                 "lend", "mail", "return", "deliver", "party", "concert", "fair", "festival", "wedding",
                                 "parade", "picnic", "present", "jar", "rope", "shoe", "pie", "sweater", "vase",
                                 "parcel", "pillow"};
    for (size_t w = 0; w < sizeof words / sizeof *words; w++) {
        char word[32];
        snprintf(word, sizeof word, " %s", words[w]);
        int in_stories = 0;
        for (size_t d = 0; d < n_docs; d++)
            if (docs[d].kind == LP_CORPUS_IOI)
                in_stories += count_in(text + docs[d].story_off, docs[d].answer_off - docs[d].story_off, word);
        if (in_stories) fail_msg("held-out word \"%s\" in %d training stories", words[w], in_stories);
        if (count_in(text, len, word) < 10) fail_msg("held-out word \"%s\" is (almost) never in the corpus", words[w]);
    }
    free(text);
    free(docs);
}

static void held_out_frames_never_appear_in_training(void **state) {
    (void)state;
    check_held_out_frames(0);
    check_held_out_frames(0.5); /* scrambled stories draw none of the held-out words either */
}

/* The corpus's IOI stories have the prompts' form: the story before the answer names the
 * answer once and the subject twice, in both orders. Returns how many of them have a word
 * right before the subject's second mention that no grammar story puts there (scrambled
 * stories do). */
static int check_ioi_documents(double scrambled) {
    lp_corpus_spec sp;
    lp_corpus_spec_default(&sp);
    sp.seed = 11;
    sp.n_docs = 300;
    sp.scrambled = scrambled;
    sp.proportion[LP_CORPUS_REPEAT] = sp.proportion[LP_CORPUS_FILLER] = 0;
    char *text;
    size_t len, n;
    lp_corpus_doc *docs;
    assert_int_equal(lp_corpus_new(&sp, &text, &len, &docs, &n), LP_OK);
    int io_first = 0, s_first = 0, odd = 0;
    for (size_t i = 0; i < n; i++) {
        const lp_corpus_doc *d = &docs[i];
        char story[512], io[32], first[32], second[32];
        assert_true(d->story_off >= d->off && d->story_off < d->answer_off);
        size_t a = d->answer_off - d->story_off;
        assert_true(a < sizeof story && d->answer_len < sizeof io);
        memcpy(story, text + d->story_off, a);
        story[a] = '\0';
        memcpy(io, text + d->answer_off, d->answer_len);
        io[d->answer_len] = '\0';
        /* every template's intro is "... X and Y ..." */
        const char *and_at = strstr(story, " and ");
        assert_non_null(and_at);
        const char *x = and_at;
        while (x > story && x[-1] != ' ') x--;
        snprintf(first, sizeof first, " %.*s", (int)(and_at - x), x);
        snprintf(second, sizeof second, " %.*s", (int)strcspn(and_at + 5, " ,."), and_at + 5);
        bool abba = strcmp(first, io) == 0;
        const char *subject = abba ? second : first, *at;
        if (!abba && strcmp(second, io) != 0) fail_msg("doc %zu: \"%s\" does not introduce%s", i, story, io);
        if (count_word(story, io, &at) != 1 || count_word(story, subject, &at) != 2)
            fail_msg("doc %zu: \"%s\" should name%s once and%s twice", i, story, io, subject);
        io_first += abba, s_first += !abba;
        /* the word before the second subject: the grammar has punctuation or one of these */
        const char *s2 = strstr(strstr(story, subject) + 1, subject), *w = s2;
        while (w > story && isalpha((unsigned char)w[-1])) w--;
        static const char *const usual[] = {"then", "Then", "Soon", "soon"};
        bool known = w == s2;
        for (int k = 0; k < 4; k++) known |= (size_t)(s2 - w) == strlen(usual[k]) && !memcmp(w, usual[k], strlen(usual[k]));
        odd += !known;
    }
    assert_true(io_first > 100 && s_first > 100);
    free(text);
    free(docs);
    return odd;
}

static void ioi_documents_answer_with_the_indirect_object(void **state) {
    (void)state;
    int odd = check_ioi_documents(0);
    assert_int_equal(odd, 0);
    odd = check_ioi_documents(1);
    print_message("scrambled stories: %d of 300 have a new word before the second subject\n", odd);
    assert_true(odd >= 100);
}

/* Polarity sentences: kinds and labels balanced, deterministic for a seed; the label is what
 * the last clause says (its adjective's polarity, flipped by "not"), "not" only where the kind
 * allows it, "but" only in two-clause sentences, whose first clause agrees about half the time. */
static void polarity_sentences_are_labelled_by_their_last_clause(void **state) {
    (void)state;
    enum { N = 600 };
    static lp_polarity_sentence p[N], q[N];
    lp_corpus_polarity_sentences(5, N, p);
    lp_corpus_polarity_sentences(5, N, q);
    assert_memory_equal(p, q, sizeof p);
    lp_corpus_polarity_sentences(6, N, q);
    assert_true(memcmp(p, q, sizeof p) != 0);
    static const char *const positive[] = {"happy", "nice", "fun", "sunny", "bright", "warm", "calm", "proud",
                                           "excited"};
    int labels[LP_POLARITY_N_KINDS][2] = {{0}}, agree = 0;
    for (int i = 0; i < N; i++) {
        const char *t = p[i].text, *last = strrchr(t, ' ') + 1;
        size_t len = strlen(t);
        assert_int_equal(p[i].kind, i % 3);
        assert_true(isupper((unsigned char)t[0]) && t[len - 1] == '.');
        int nots = count_in(t, len, " not"), buts = count_in(t, len, " but");
        const char *clause = buts ? strstr(t, " but ") : t;
        bool negated = strstr(clause, " not ") != NULL, pos = false;
        for (size_t w = 0; w < sizeof positive / sizeof *positive; w++)
            pos |= !strncmp(last, positive[w], strlen(positive[w])) && last[strlen(positive[w])] == '.';
        if (p[i].label != (pos != negated)) fail_msg("sentence %d, \"%s\", has label %d", i, t, p[i].label);
        switch (p[i].kind) {
        case LP_POLARITY_PLAIN: assert_true(nots == 0 && buts == 0 && p[i].first == -1); break;
        case LP_POLARITY_NOT: assert_true(nots == 1 && buts == 0 && p[i].first == -1); break;
        default: assert_true(nots <= 2 && buts == 1 && (p[i].first == 0 || p[i].first == 1)); break;
        }
        labels[p[i].kind][p[i].label]++;
        agree += p[i].kind == LP_POLARITY_BUT && p[i].first == p[i].label;
    }
    for (int k = 0; k < LP_POLARITY_N_KINDS; k++) assert_true(labels[k][0] == N / 6 && labels[k][1] == N / 6);
    assert_true(agree > N / 3 / 3 && agree < 2 * N / 3 / 3);
}

/* The ids of " name" for every story name (one token each in models/default's vocabulary). */
static int name_of(const lp_tokenizer *t, int id) {
    int n;
    const char *const *names = lp_corpus_names(&n);
    for (int i = 0; i < n; i++) {
        char text[64];
        int got, ids[4];
        snprintf(text, sizeof text, " %s", names[i]);
        assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), false, ids, 4, &got), LP_OK);
        assert_int_equal(got, 1);
        if (ids[0] == id) return i;
    }
    return -1;
}

/* The name whose bare spelling ("Mary", as a document's first word) is ids[0..n), or -1. */
static int bare_name_of(const lp_tokenizer *t, const int *ids, int n) {
    int count;
    const char *const *names = lp_corpus_names(&count);
    for (int i = 0; i < count; i++) {
        int got, want[8];
        assert_int_equal(lp_tokenizer_encode(t, names[i], strlen(names[i]), false, want, 8, &got), LP_OK);
        if (got == n && memcmp(want, ids, (size_t)n * sizeof *ids) == 0) return i;
    }
    return -1;
}

/* corpus.random_ioi: before each corpus document (at 1), a story of random ids in which
 * the names' roles are all that is not random: "A and B", ids, B, ids, " to", A, where A is
 * " A" after 1..6 ids or, opening the story, A's bare spelling; at 0 none. */
static void random_ioi_stories_end_with_the_name_said_once(void **state) {
    (void)state;
    lp_tokenizer *t;
    assert_int_equal(lp_tokenizer_load_dir(&t, "models/default"), LP_OK);
    int eot = lp_tokenizer_piece_to_id(t, LP_CORPUS_EOT), ids[2];
    assert_int_equal(lp_tokenizer_encode(t, " and", 4, false, ids, 2, &(int){0}), LP_OK);
    int and_ = ids[0];
    assert_int_equal(lp_tokenizer_encode(t, " to", 3, false, ids, 2, &(int){0}), LP_OK);
    int to = ids[0];
    lp_recipe r;
    lp_recipe_default(&r);
    r.corpus.n_bytes = 50000;
    r.random_tokens = 0;
    int *plain, *held, *mixed, *held2;
    size_t n_plain, n_held, n_mixed, n_held2;
    assert_int_equal(lp_recipe_data(&r, t, &plain, &n_plain, &held, &n_held), LP_OK);
    r.random_ioi = 1;
    assert_int_equal(lp_recipe_data(&r, t, &mixed, &n_mixed, &held2, &n_held2), LP_OK);
    /* documents alternate: a random story, then the corpus's next document, unchanged */
    size_t i = 0, j = 0;
    int stories = 0, abba = 0, bare = 0;
    while (i < n_mixed) {
        size_t end = i;
        while (mixed[end] != eot) end++;
        const int *st = mixed + i;
        int len = (int)(end - i), at_and = -1, who[4], found = 1;
        for (int k = 0; k < len; k++)
            if (st[k] == and_) {
                assert_int_equal(at_and, -1); /* one " and" */
                at_and = k;
            }
        assert_true(at_and >= 1 && len >= at_and + 6);
        assert_int_equal(st[len - 2], to);
        /* A: " A" just before " and" after 1..6 ids, or the story's first tokens, A bare */
        int first = name_of(t, st[at_and - 1]);
        if (first >= 0) assert_true(at_and - 1 >= 1 && at_and - 1 <= 6);
        else {
            first = bare_name_of(t, st, at_and);
            bare++;
        }
        assert_true(first >= 0);
        who[0] = first;
        for (int k = at_and + 1; k < len; k++) { /* B, the subject, the answer: " Name" tokens */
            int w = name_of(t, st[k]);
            if (w < 0) continue;
            assert_true(found < 4);
            who[found++] = w;
        }
        assert_int_equal(found, 4);
        assert_int_equal(name_of(t, st[at_and + 1]), who[1]);
        assert_int_equal(name_of(t, st[len - 1]), who[3]);
        assert_true(who[0] != who[1] && who[3] != who[2]); /* the answer is not the subject */
        assert_true(who[2] == who[0] || who[2] == who[1]);
        assert_true(who[3] == who[0] || who[3] == who[1]);
        abba += who[3] == who[0];
        stories++;
        i = end + 1;
        end = i; /* the corpus's document */
        while (mixed[end] != eot) end++;
        assert_true(j + (end - i) < n_plain);
        assert_memory_equal(mixed + i, plain + j, (end - i + 1) * sizeof *mixed);
        j += end - i + 1, i = end + 1;
    }
    assert_int_equal(j, n_plain);
    print_message("random IOI stories: %d, %d with the indirect object first, %d opening with a bare name\n", stories,
                  abba, bare);
    assert_true(stories > 100 && abba > stories / 3 && abba < 2 * stories / 3);
    assert_true(bare > stories / 3 && bare < 2 * stories / 3);
    free(plain), free(held), free(mixed), free(held2);
    lp_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_seed_gives_identical_text_other_seed_differs),
        cmocka_unit_test(proportions_and_document_index_hold),
        cmocka_unit_test(repeated_spans_have_the_asked_length),
        cmocka_unit_test(bad_specs_are_refused),
        cmocka_unit_test(ioi_prompts_end_before_the_indirect_object),
        cmocka_unit_test(held_out_frames_never_appear_in_training),
        cmocka_unit_test(ioi_documents_answer_with_the_indirect_object),
        cmocka_unit_test(polarity_sentences_are_labelled_by_their_last_clause),
        cmocka_unit_test(random_ioi_stories_end_with_the_name_said_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
