/* BPE training tests: a tokenizer learnt from a generated corpus loads through the GPT-2
 * loader, round-trips the corpus, compresses it, has the asked size, lists its merges in
 * training order, and encodes every training word exactly as the trainer segmented it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "loupe/bpe_train.h"
#include "loupe/corpus.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define VOCAB 512

typedef struct {
    char *dir;
    char *text;
    size_t len, n_docs;
    lp_bpe *bpe;
    lp_tokenizer *tok;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    lp_corpus_spec sp;
    lp_corpus_spec_default(&sp);
    sp.seed = 2024;
    sp.n_bytes = 200000;
    lp_corpus_doc *docs;
    char vocab[4200], merges[4200];
    f->dir = make_temp_dir();
    if (lp_corpus_new(&sp, &f->text, &f->len, &docs, &f->n_docs) || lp_bpe_train_new(&f->bpe, f->text, f->len, VOCAB) ||
        lp_bpe_save(f->bpe, f->dir) || lp_path_join(vocab, sizeof vocab, f->dir, "vocab.json") ||
        lp_path_join(merges, sizeof merges, f->dir, "merges.txt") || lp_tokenizer_load_gpt2(&f->tok, vocab, merges)) {
        fprintf(stderr, "setup: %s\n", lp_errmsg());
        return -1;
    }
    free(docs);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (!f) return 0;
    lp_tokenizer_free(f->tok);
    lp_bpe_free(f->bpe);
    free(f->text);
    rm_tree(f->dir);
    free(f);
    return 0;
}

static int *encode_new(const lp_tokenizer *t, const char *s, size_t len, int *n) {
    int cap = (int)len + 3;
    int *ids = malloc((size_t)cap * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(lp_tokenizer_encode(t, s, len, false, ids, cap, n), LP_OK);
    return ids;
}

static void corpus_round_trips_and_compresses(void **state) {
    fixture *f = *state;
    int n;
    int *ids = encode_new(f->tok, f->text, f->len, &n);
    char *back = malloc(f->len + 1);
    size_t at = 0, eots = 0;
    for (int i = 0; i < n; i++) {
        size_t k;
        const char *b = lp_tokenizer_token_bytes(f->tok, ids[i], &k);
        assert_non_null(b);
        assert_true(at + k <= f->len);
        memcpy(back + at, b, k);
        at += k;
        eots += ids[i] == VOCAB - 1;
    }
    assert_int_equal(at, f->len);
    assert_memory_equal(back, f->text, f->len);
    assert_int_equal(eots, f->n_docs); /* the separator is one token, never split */
    double ratio = (double)f->len / n;
    if (ratio <= 2.0) fail_msg("%zu bytes in %d tokens: %.2f bytes per token", f->len, n, ratio);
    free(back);
    free(ids);
}

static void vocabulary_has_the_asked_size_in_gpt2_order(void **state) {
    fixture *f = *state;
    assert_int_equal(lp_bpe_vocab_size(f->bpe), VOCAB);
    assert_int_equal(lp_tokenizer_vocab_size(f->tok), VOCAB);
    for (int id = 0; id < VOCAB; id++) assert_non_null(lp_tokenizer_token_piece(f->tok, id));
    assert_int_equal(lp_tokenizer_piece_to_id(f->tok, "<|endoftext|>"), VOCAB - 1);
    assert_int_equal(lp_tokenizer_eos(f->tok), VOCAB - 1);
    /* GPT-2's own base ids */
    assert_int_equal(lp_tokenizer_piece_to_id(f->tok, "!"), 0);
    assert_int_equal(lp_tokenizer_piece_to_id(f->tok, "\xc4\xa0"), 220); /* "Ġ", the space */
    assert_int_equal(lp_tokenizer_piece_to_id(f->tok, "\xc4\x80"), 188); /* "Ā", byte 0 */
    assert_int_equal(lp_tokenizer_piece_to_id(f->tok, "\xc3\xbf"), 187); /* "ÿ", byte 255 */
}

static void merges_are_listed_in_training_order(void **state) {
    fixture *f = *state;
    char path[4200], *text;
    size_t len;
    assert_int_equal(lp_path_join(path, sizeof path, f->dir, "merges.txt"), LP_OK);
    assert_int_equal(lp_file_read_new(path, &text, &len), LP_OK);
    char *line = strtok(text, "\n");
    assert_string_equal(line, "#version: 0.2");
    int k = 0;
    while ((line = strtok(NULL, "\n"))) {
        char *sp = strchr(line, ' ');
        assert_non_null(sp);
        *sp = '\0';
        int a = lp_tokenizer_piece_to_id(f->tok, line), b = lp_tokenizer_piece_to_id(f->tok, sp + 1);
        char cat[256];
        snprintf(cat, sizeof cat, "%s%s", line, sp + 1);
        /* merge k makes token 256 + k, from tokens made before it */
        assert_int_equal(lp_tokenizer_piece_to_id(f->tok, cat), 256 + k);
        assert_true(a >= 0 && a < 256 + k && b >= 0 && b < 256 + k);
        k++;
    }
    assert_int_equal(k, VOCAB - 257);
    free(text);
}

static void encoding_a_training_word_gives_the_trainers_segmentation(void **state) {
    fixture *f = *state;
    size_t n_words = lp_bpe_n_words(f->bpe), checked = 0;
    assert_true(n_words > 100);
    for (size_t i = 0; i < n_words; i++) {
        size_t len;
        uint64_t count;
        const char *w = lp_bpe_word(f->bpe, i, &len, &count);
        assert_true(count >= 1 && len >= 1);
        const int *want;
        int n_want = lp_bpe_word_ids(f->bpe, i, &want), n;
        int *ids = encode_new(f->tok, w, len, &n);
        if (n != n_want || memcmp(ids, want, (size_t)n * sizeof *ids) != 0)
            fail_msg("word %zu \"%.*s\": encode gives %d tokens, training %d", i, (int)len, w, n, n_want);
        free(ids);
        checked++;
    }
    assert_int_equal(checked, n_words);
}

static char *read_all(const char *dir, const char *name, size_t *len) {
    char path[4200], *text;
    assert_int_equal(lp_path_join(path, sizeof path, dir, name), LP_OK);
    assert_int_equal(lp_file_read_new(path, &text, len), LP_OK);
    return text;
}

static void training_twice_writes_identical_files(void **state) {
    fixture *f = *state;
    char *dir = make_temp_dir();
    lp_bpe *again;
    assert_int_equal(lp_bpe_train_new(&again, f->text, f->len, VOCAB), LP_OK);
    assert_int_equal(lp_bpe_save(again, dir), LP_OK);
    const char *names[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        size_t na, nb;
        char *a = read_all(f->dir, names[i], &na), *b = read_all(dir, names[i], &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na);
        free(a), free(b);
    }
    lp_bpe_free(again);
    rm_tree(dir);
}

/* Bytes that are not UTF-8 are still symbols of their own and round-trip. */
static void any_bytes_train_and_round_trip(void **state) {
    (void)state;
    char text[4096];
    uint64_t x = 99;
    for (size_t i = 0; i < sizeof text; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        text[i] = (char)(i % 7 == 0 ? ' ' : (x >> 56) | 0x80);
    }
    lp_bpe *b;
    assert_int_equal(lp_bpe_train_new(&b, text, sizeof text, 300), LP_OK);
    char *dir = make_temp_dir();
    lp_tokenizer *t;
    assert_int_equal(lp_bpe_save(b, dir), LP_OK);
    assert_int_equal(lp_tokenizer_load_dir(&t, dir), LP_OK);
    int n;
    int *ids = encode_new(t, text, sizeof text, &n);
    char back[sizeof text + 1];
    size_t len;
    assert_int_equal(lp_tokenizer_decode(t, ids, n, back, sizeof back, &len), LP_OK);
    assert_int_equal(len, sizeof text);
    assert_memory_equal(back, text, sizeof text);
    assert_true(n < (int)sizeof text);
    free(ids);
    lp_tokenizer_free(t);
    lp_bpe_free(b);
    rm_tree(dir);
}

static void too_little_text_for_the_vocabulary_is_an_error(void **state) {
    (void)state;
    lp_bpe *b = NULL;
    assert_int_equal(lp_bpe_train_new(&b, "ab ab ab", 8, 300), LP_EINVAL);
    assert_null(b);
    assert_non_null(strstr(lp_errmsg(), "only"));
    assert_int_equal(lp_bpe_train_new(&b, "ab", 2, 256), LP_EINVAL);
    assert_int_equal(lp_bpe_train_new(&b, "ab ab", 5, 257), LP_OK); /* no merges: bytes and the separator */
    assert_int_equal(lp_bpe_vocab_size(b), 257);
    lp_bpe_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(corpus_round_trips_and_compresses),
        cmocka_unit_test(vocabulary_has_the_asked_size_in_gpt2_order),
        cmocka_unit_test(merges_are_listed_in_training_order),
        cmocka_unit_test(encoding_a_training_word_gives_the_trainers_segmentation),
        cmocka_unit_test(training_twice_writes_identical_files),
        cmocka_unit_test(any_bytes_train_and_round_trip),
        cmocka_unit_test(too_little_text_for_the_vocabulary_is_an_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
