/* Tokenizer tests: GPT-2 against llama.cpp's 46 reference cases, hand-derived tokenizer.json
 * files of both BPE kinds, llama2.c's stories260K tokenizer, WordPiece against a reference
 * written from Hugging Face's BertTokenizer (tests/fixtures/wordpiece_reference.py), RoBERTa's
 * specials and templates, and malformed inputs.
 * Run from the project root; the shared data sits at ../shared. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARED_TOK "../shared/tokenizers"
#define GPT2_VOCAB SHARED_TOK "/gpt2/encoder.json"
#define GPT2_MERGES SHARED_TOK "/gpt2/vocab.bpe"
#define STORIES_TOK "../shared/models/stories260K/tok512.bin"

static const char STORY[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";
/* stories260K's greedy continuation of BOS, as listed in its README */
static const int STORY_IDS[] = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395,
                                317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322};
#define N_STORY_IDS ((int)(sizeof STORY_IDS / sizeof STORY_IDS[0]))

/* ---------------------------------------------------------------- helpers */

static char tmpdir[64];

static void write_file(const char *name, const void *data, size_t len, char *path, size_t cap) {
    assert_int_equal(lp_path_join(path, cap, tmpdir, name), LP_OK);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_text(const char *name, const char *text, char *path, size_t cap) {
    write_file(name, text, strlen(text), path, cap);
}

static void copy_file(const char *from, const char *to) {
    char *data;
    size_t len;
    assert_int_equal(lp_file_read_new(from, &data, &len), LP_OK);
    assert_int_equal(lp_file_write(to, data, len), LP_OK);
    free(data);
}

static void format_ids(char *out, size_t cap, const int *ids, int n) {
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < n && at + 16 < cap; i++) at += (size_t)snprintf(out + at, cap - at, " %d", ids[i]);
}

/* Encodes text and checks the ids, printing both sequences when they differ. */
static void check_encode(const lp_tokenizer *t, const char *text, bool bos, const int *want, int n_want) {
    int ids[256], n = -1;
    assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), bos, ids, 256, &n), LP_OK);
    bool same = n == n_want && memcmp(ids, want, (size_t)n * sizeof *ids) == 0;
    if (!same) {
        char got[2048], exp[2048];
        format_ids(got, sizeof got, ids, n);
        format_ids(exp, sizeof exp, want, n_want);
        print_error("encode \"%s\":\n  got     %s\n  expected%s\n", text, got, exp);
    }
    assert_true(same);
}

static void check_decode(const lp_tokenizer *t, const int *ids, int n, const char *want) {
    char buf[1024];
    size_t len = 0;
    assert_int_equal(lp_tokenizer_decode(t, ids, n, buf, sizeof buf, &len), LP_OK);
    assert_int_equal(len, strlen(want));
    assert_string_equal(buf, want);
}

/* ---------------------------------------------------------------- GPT-2 reference cases */

typedef struct {
    char *inp;
    size_t inp_len;
    int n;
    char *text[64];
    size_t len[64];
    int *ids[64];
    int n_ids[64];
} gpt2_cases;

/* Reads gpt2.inp/.out as llama.cpp's test-tokenizer-0 does: inputs are separated by
 * "\n__ggml_vocab_test__\n" (so the newline before each separator line is not part of
 * the input); line i of the .out file holds input i's ids. */
static gpt2_cases *read_gpt2_cases(void) {
    gpt2_cases *c = calloc(1, sizeof *c);
    assert_non_null(c);
    char *out;
    size_t out_len;
    assert_int_equal(lp_file_read_new(SHARED_TOK "/tests/gpt2.inp", &c->inp, &c->inp_len), LP_OK);
    assert_int_equal(lp_file_read_new(SHARED_TOK "/tests/gpt2.out", &out, &out_len), LP_OK);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    for (char *at = c->inp; at < c->inp + c->inp_len;) {
        char *next = strstr(at, sep);
        assert_true(c->n < 64);
        c->text[c->n] = at;
        c->len[c->n] = next ? (size_t)(next - at) : strlen(at);
        c->n++;
        if (!next) break;
        *next = '\0';
        at = next + strlen(sep);
    }
    int line = 0;
    for (char *at = out; at < out + out_len && line < 64; line++) {
        char *nl = strchr(at, '\n');
        if (nl) *nl = '\0';
        c->ids[line] = calloc(strlen(at) / 2 + 1, sizeof(int));
        assert_non_null(c->ids[line]);
        for (char *p = at, *end; *p;) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            c->ids[line][c->n_ids[line]++] = (int)v;
            p = end;
        }
        at = nl ? nl + 1 : out + out_len;
    }
    free(out);
    assert_int_equal(line, c->n);
    return c;
}

static void free_gpt2_cases(gpt2_cases *c) {
    for (int i = 0; i < c->n; i++) free(c->ids[i]);
    free(c->inp);
    free(c);
}

static lp_tokenizer *gpt2_tok;

static int gpt2_setup(void **state) {
    (void)state;
    if (lp_tokenizer_load_gpt2(&gpt2_tok, GPT2_VOCAB, GPT2_MERGES) != LP_OK) {
        fprintf(stderr, "cannot load GPT-2 tokenizer: %s\n", lp_errmsg());
        return -1;
    }
    return 0;
}

static int gpt2_teardown(void **state) {
    (void)state;
    lp_tokenizer_free(gpt2_tok);
    gpt2_tok = NULL;
    return 0;
}

static void test_gpt2_files_load_as_byte_level_bpe(void **state) {
    (void)state;
    assert_int_equal(lp_tokenizer_kind_of(gpt2_tok), LP_TOK_BYTE_BPE);
    assert_string_equal(lp_tokenizer_kind_name(gpt2_tok), "gpt2-bpe");
    assert_int_equal(lp_tokenizer_vocab_size(gpt2_tok), 50257);
    assert_int_equal(lp_tokenizer_eos(gpt2_tok), 50256);
    assert_false(lp_tokenizer_adds_bos(gpt2_tok));
    assert_int_equal(lp_tokenizer_piece_to_id(gpt2_tok, "\xc4\xa0the"), 262); /* "Ġthe" */
    assert_string_equal(lp_tokenizer_token_piece(gpt2_tok, 262), "\xc4\xa0the");
    size_t len;
    const char *b = lp_tokenizer_token_bytes(gpt2_tok, 262, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(b, " the", 4);
    assert_null(lp_tokenizer_token_bytes(gpt2_tok, 50257, &len));
    assert_int_equal(len, 0);
    assert_null(lp_tokenizer_token_bytes(gpt2_tok, -1, &len));
}

static void test_gpt2_matches_llama_cpp_reference_cases(void **state) {
    (void)state;
    gpt2_cases *c = read_gpt2_cases();
    assert_int_equal(c->n, 46);
    int failures = 0;
    for (int i = 0; i < c->n; i++) {
        int cap = (int)c->len[i] + 3, n = -1;
        int *ids = malloc((size_t)cap * sizeof *ids);
        assert_non_null(ids);
        assert_int_equal(lp_tokenizer_encode(gpt2_tok, c->text[i], c->len[i], false, ids, cap, &n), LP_OK);
        if (n != c->n_ids[i] || memcmp(ids, c->ids[i], (size_t)n * sizeof *ids) != 0) {
            char got[4096], exp[4096];
            format_ids(got, sizeof got, ids, n);
            format_ids(exp, sizeof exp, c->ids[i], c->n_ids[i]);
            print_error("case %d (%zu bytes):\n  got     %s\n  expected%s\n", i, c->len[i], got, exp);
            failures++;
        }
        free(ids);
    }
    free_gpt2_cases(c);
    assert_int_equal(failures, 0);
}

/* GPT-2's vocabulary and merges written in the layout of GPT-NeoX's tokenizer.json
 * (EleutherAI/gpt-neox-20b, Pythia): an NFC normalizer; ByteLevel pre-tokenizer,
 * post-processor and decoder without a prefix space; <|endoftext|> and <|padding|> as
 * special added tokens; a run of spaces as a non-special, normalized added token, as that
 * file has for runs of 2 to 24 spaces. The real file is not at hand (README: GPT-NeoX), so
 * this checks the format's path, not NeoX's own ids: GPT-2's ids on every reference case
 * without such a run, and the run as one token where it occurs. */
static void test_neox_layout_tokenizer_json_gives_gpt2_ids(void **state) {
    (void)state;
    json_error_t e;
    json_t *vocab = json_load_file(GPT2_VOCAB, 0, &e), *merges = json_array();
    assert_non_null(vocab);
    char *bpe;
    size_t len;
    assert_int_equal(lp_file_read_new(GPT2_MERGES, &bpe, &len), LP_OK);
    for (char *line = strtok(bpe, "\n"); line; line = strtok(NULL, "\n"))
        if (line[0] != '#') json_array_append_new(merges, json_string(line));
    free(bpe);
    json_t *root = json_pack("{s:s,s:[{s:i,s:s,s:b,s:b,s:b,s:b,s:b},{s:i,s:s,s:b,s:b,s:b,s:b,s:b},"
                             "{s:i,s:s,s:b,s:b,s:b,s:b,s:b}],s:{s:s},s:{s:s,s:b,s:b},s:{s:s,s:b,s:b},"
                             "s:{s:s,s:b,s:b},s:{s:s,s:n,s:n,s:n,s:n,s:b,s:o,s:o}}",
                             "version", "1.0", "added_tokens",
                             "id", 50256, "content", "<|endoftext|>", "single_word", 0, "lstrip", 0, "rstrip", 0,
                             "normalized", 0, "special", 1,
                             "id", 50257, "content", "<|padding|>", "single_word", 0, "lstrip", 0, "rstrip", 0,
                             "normalized", 0, "special", 1,
                             "id", 50258, "content", "    ", "single_word", 0, "lstrip", 0, "rstrip", 0,
                             "normalized", 1, "special", 0,
                             "normalizer", "type", "NFC",
                             "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                             "post_processor", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                             "decoder", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                             "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
                             "end_of_word_suffix", "fuse_unk", 0, "vocab", vocab, "merges", merges);
    assert_non_null(root);
    char path[256];
    snprintf(path, sizeof path, "%s/neox_layout.json", tmpdir);
    assert_int_equal(json_dump_file(root, path, JSON_COMPACT), 0);
    json_decref(root);
    lp_tokenizer *t = NULL;
    if (lp_tokenizer_load_json(&t, path)) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_BYTE_BPE);
    assert_int_equal(lp_tokenizer_vocab_size(t), 50259);
    gpt2_cases *c = read_gpt2_cases();
    int compared = 0, failures = 0;
    for (int i = 0; i < c->n; i++) {
        if (memmem(c->text[i], c->len[i], "    ", 4)) continue; /* the added run of spaces splits it */
        int cap = (int)c->len[i] + 3, n = -1, *ids = malloc((size_t)cap * sizeof *ids);
        assert_int_equal(lp_tokenizer_encode(t, c->text[i], c->len[i], false, ids, cap, &n), LP_OK);
        if (n != c->n_ids[i] || memcmp(ids, c->ids[i], (size_t)n * sizeof *ids) != 0) failures++;
        compared++;
        free(ids);
    }
    print_message("  NeoX-layout tokenizer.json: %d of %d reference cases compared (the rest hold a run of 4 "
                  "spaces), %d differ from GPT-2's ids\n", compared, c->n, failures);
    free_gpt2_cases(c);
    assert_true(compared >= 30);
    assert_int_equal(failures, 0);
    static const int run[] = {64, 50258, 65, 50256, 50257};
    check_encode(t, "a    b<|endoftext|><|padding|>", false, run, 5);
    lp_tokenizer_free(t);
}

static void test_gpt2_decode_inverts_encode_on_reference_cases(void **state) {
    (void)state;
    gpt2_cases *c = read_gpt2_cases();
    for (int i = 0; i < c->n; i++) {
        int cap = (int)c->len[i] + 3, n = -1;
        int *ids = malloc((size_t)cap * sizeof *ids);
        char *buf = malloc(c->len[i] + 1);
        assert_true(ids && buf);
        assert_int_equal(lp_tokenizer_encode(gpt2_tok, c->text[i], c->len[i], false, ids, cap, &n), LP_OK);
        size_t len = 0;
        assert_int_equal(lp_tokenizer_decode(gpt2_tok, ids, n, buf, c->len[i] + 1, &len), LP_OK);
        if (len != c->len[i] || memcmp(buf, c->text[i], len) != 0) print_error("case %d does not round-trip\n", i);
        assert_int_equal(len, c->len[i]);
        assert_memory_equal(buf, c->text[i], len);
        free(ids);
        free(buf);
    }
    free_gpt2_cases(c);
}

static void test_gpt2_round_trips_invalid_utf8_and_split_characters(void **state) {
    (void)state;
    /* invalid bytes, a truncated sequence, an overlong form, a surrogate, NUL */
    static const char text[] = "ab\xff\xfe cd \xe2\x82 \xc0\xaf x\xed\xa0\x80y \x00z \xf0\x9f\x98\x80!";
    size_t n_text = sizeof text - 1;
    int ids[128], n = -1;
    assert_int_equal(lp_tokenizer_encode(gpt2_tok, text, n_text, false, ids, 128, &n), LP_OK);
    char buf[128];
    size_t len = 0;
    assert_int_equal(lp_tokenizer_decode(gpt2_tok, ids, n, buf, sizeof buf, &len), LP_OK);
    assert_int_equal(len, n_text);
    assert_memory_equal(buf, text, n_text);
    /* "😀" is 4 bytes spread over several tokens: each gives its raw bytes */
    int emoji[8];
    assert_int_equal(lp_tokenizer_encode(gpt2_tok, "\xf0\x9f\x98\x80", 4, false, emoji, 8, &n), LP_OK);
    assert_true(n > 1);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t k;
        assert_non_null(lp_tokenizer_token_bytes(gpt2_tok, emoji[i], &k));
        total += k;
    }
    assert_int_equal(total, 4);
}

static void test_gpt2_endoftext_is_matched_as_special_token(void **state) {
    (void)state;
    static const int want[] = {15496, 50256, 995};
    check_encode(gpt2_tok, "Hello<|endoftext|> world", false, want, 3);
    static const int bos_first[] = {50256, 15496};
    check_encode(gpt2_tok, "Hello", true, bos_first, 2);
}

static void test_encode_and_decode_report_erange_when_buffer_is_small(void **state) {
    (void)state;
    int ids[2], n = -1;
    assert_int_equal(lp_tokenizer_encode(gpt2_tok, "Hello world again", 17, false, ids, 2, &n), LP_ERANGE);
    assert_int_equal(n, 3);
    assert_true(strlen(lp_errmsg()) > 0);
    static const int hello[] = {15496, 995};
    char buf[4];
    size_t len = 0;
    assert_int_equal(lp_tokenizer_decode(gpt2_tok, hello, 2, buf, sizeof buf, &len), LP_ERANGE);
    assert_int_equal(len, strlen("Hello world") + 1);
    static const int bad[] = {15496, 99999};
    char big[64];
    assert_int_equal(lp_tokenizer_decode(gpt2_tok, bad, 2, big, sizeof big, &len), LP_EINVAL);
}

static void test_gpt2_encodes_long_text_and_long_runs(void **state) {
    (void)state;
    size_t n = 200000;
    char *text = malloc(n + 1);
    int *ids = malloc((n + 3) * sizeof *ids);
    assert_true(text && ids);
    static const char words[] = "The quick brown fox jumps over the lazy dog; 1234 times!\n  ";
    for (size_t i = 0; i < n; i++) text[i] = words[i % (sizeof words - 1)];
    int count = 0;
    assert_int_equal(lp_tokenizer_encode(gpt2_tok, text, n, false, ids, (int)n + 3, &count), LP_OK);
    assert_true(count > 0 && count < (int)n / 2);
    /* one long run of spaces and one long word stay linear-ish and exact */
    memset(text, ' ', n);
    assert_int_equal(lp_tokenizer_encode(gpt2_tok, text, n, false, ids, (int)n + 3, &count), LP_OK);
    memset(text, 'a', n);
    assert_int_equal(lp_tokenizer_encode(gpt2_tok, text, n, false, ids, (int)n + 3, &count), LP_OK);
    free(text);
    free(ids);
}

/* ---------------------------------------------------------------- tokenizer.json, byte-level */

/* A tiny byte-level BPE: enough characters and merges for "hello world!". */
static const char BYTE_LEVEL_JSON[] =
    "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 17, \"content\": \"<|endoftext|>\", \"special\": true}],"
    " \"normalizer\": null,"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true,"
    " \"use_regex\": true},"
    " \"post_processor\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null,"
    " \"vocab\": {\"!\": 0, \"d\": 1, \"e\": 2, \"h\": 3, \"l\": 4, \"o\": 5, \"r\": 6, \"w\": 7, \"\\u0120\": 8,"
    " \"he\": 9, \"ll\": 10, \"hell\": 11, \"hello\": 12, \"\\u0120w\": 13, \"or\": 14, \"\\u0120wor\": 15,"
    " \"ld\": 16, \"<|endoftext|>\": 17, \"1\": 18, \"2\": 19, \"12\": 20},"
    " \"merges\": [\"h e\", \"l l\", \"he ll\", \"hell o\", \"\\u0120 w\", \"o r\", \"\\u0120w or\", \"l d\","
    " \"1 2\"]}}";

static void test_byte_level_tokenizer_json_encodes_by_merge_rank(void **state) {
    (void)state;
    char path[256];
    write_text("bytelevel.json", BYTE_LEVEL_JSON, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_OK);
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_BYTE_BPE);
    assert_int_equal(lp_tokenizer_vocab_size(t), 21);
    assert_int_equal(lp_tokenizer_eos(t), 17);
    assert_false(lp_tokenizer_adds_bos(t));
    /* "hello" | " world" | "!": h e l l o -> he l l o -> he ll o -> hell o -> hello;
     * Ġ w o r l d -> Ġw o r l d -> Ġw or l d -> Ġwor l d -> Ġwor ld */
    static const int want[] = {12, 15, 16, 0};
    check_encode(t, "hello world!", false, want, 4);
    check_decode(t, want, 4, "hello world!");
    static const int special[] = {12, 17, 0};
    check_encode(t, "hello<|endoftext|>!", false, special, 3);
    check_decode(t, special, 3, "hello!"); /* EOS is dropped */
    static const int digits[] = {20};
    check_encode(t, "12", false, digits, 1);
    /* a byte the vocabulary lacks cannot be encoded: an error, not a crash */
    int ids[8], n;
    assert_int_equal(lp_tokenizer_encode(t, "hz", 2, false, ids, 8, &n), LP_EFORMAT);
    lp_tokenizer_free(t);
}

static void test_byte_level_tokenizer_json_uses_its_split_regex(void **state) {
    (void)state;
    /* Qwen2/Llama-3 style: Split with its own regex, then ByteLevel without one. Splitting
     * digits one by one keeps "12" from merging. */
    char json[4096];
    const char *from = "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                       "\"trim_offsets\": true, \"use_regex\": true}";
    const char *to = "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                     "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{N}| ?\\\\p{L}+|[^\\\\p{L}\\\\p{N}]+\"},"
                     " \"behavior\": \"Isolated\", \"invert\": false},"
                     "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
                     "\"use_regex\": false}]}";
    const char *at = strstr(BYTE_LEVEL_JSON, from);
    assert_non_null(at);
    snprintf(json, sizeof json, "%.*s%s%s", (int)(at - BYTE_LEVEL_JSON), BYTE_LEVEL_JSON, to, at + strlen(from));
    char path[256];
    write_text("split.json", json, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_OK);
    static const int digits[] = {18, 19};
    check_encode(t, "12", false, digits, 2);
    static const int words[] = {12, 15, 16, 0};
    check_encode(t, "hello world!", false, words, 4);
    lp_tokenizer_free(t);
}

static void test_byte_level_options_prefix_space_and_ignore_merges(void **state) {
    (void)state;
    /* add_prefix_space: "hello" is read as " hello"; ignore_merges (Llama-3): a word that is
     * in the vocabulary is taken whole even when no merge spells it ("wd" is id 21) */
    char json[4096];
    const char *from = "\"add_prefix_space\": false";
    const char *vocab_end = "\"12\": 20}";
    const char *a = strstr(BYTE_LEVEL_JSON, from), *b = strstr(BYTE_LEVEL_JSON, vocab_end);
    assert_true(a && b && a < b);
    snprintf(json, sizeof json,
             "%.*s\"add_prefix_space\": true%.*s\"12\": 20, \"wd\": 21}, \"ignore_merges\": true%s",
             (int)(a - BYTE_LEVEL_JSON), BYTE_LEVEL_JSON, (int)(b - a - strlen(from)), a + strlen(from),
             b + strlen(vocab_end));
    char path[256];
    write_text("options.json", json, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_OK);
    static const int hello[] = {8, 12}; /* Ġ hello */
    check_encode(t, "hello", false, hello, 2);
    static const int wd[] = {8, 0, 21}; /* " !" | "wd": no merge spells "wd" */
    check_encode(t, "!wd", false, wd, 3);
    lp_tokenizer_free(t);
}

/* ---------------------------------------------------------------- tokenizer.json, SentencePiece */

/* Writes a Llama-style tokenizer.json: <unk> <s> </s>, <0x00>..<0xFF> at 3..258, then
 * words built from ▁ h e l o w r d, merges as [a, b] pairs, and an extra special token. */
static void write_spiece_json(const char *name, bool metaspace, char *path, size_t cap) {
    static const char *const words[] = {"\xe2\x96\x81", "h", "e", "l", "o", "w", "r", "d",
                                        "\xe2\x96\x81h", "ll", "\xe2\x96\x81he", "\xe2\x96\x81hell",
                                        "\xe2\x96\x81hello", "\xe2\x96\x81w", "or", "\xe2\x96\x81wor", "ld",
                                        "\xe2\x96\x81world"};
    static const char *const merges[][2] = {
        {"\xe2\x96\x81", "h"}, {"l", "l"}, {"\xe2\x96\x81h", "e"}, {"\xe2\x96\x81he", "ll"},
        {"\xe2\x96\x81hell", "o"}, {"\xe2\x96\x81", "w"}, {"o", "r"}, {"\xe2\x96\x81w", "or"},
        {"l", "d"}, {"\xe2\x96\x81wor", "ld"}};
    size_t cap_json = 32768, at = 0;
    char *j = malloc(cap_json);
    assert_non_null(j);
#define EMIT(...) (at += (size_t)snprintf(j + at, cap_json - at, __VA_ARGS__))
    EMIT("{\"version\": \"1.0\", \"added_tokens\": ["
         "{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
         "{\"id\": 1, \"content\": \"<s>\", \"special\": true},"
         "{\"id\": 2, \"content\": \"</s>\", \"special\": true},"
         "{\"id\": 277, \"content\": \"<|sep|>\", \"special\": true}],");
    if (metaspace)
        EMIT("\"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\","
             " \"prepend_scheme\": \"first\", \"split\": false},");
    else
        EMIT("\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "
             "\"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},"
             " \"pre_tokenizer\": null,");
    EMIT("\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\","
         " \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [],"
         " \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},");
    EMIT("\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
         " \"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2");
    for (int b = 0; b < 256; b++) EMIT(", \"<0x%02X>\": %d", b, 3 + b);
    for (int i = 0; i < (int)(sizeof words / sizeof words[0]); i++) EMIT(", \"%s\": %d", words[i], 259 + i);
    EMIT("}, \"merges\": [");
    for (int i = 0; i < (int)(sizeof merges / sizeof merges[0]); i++)
        EMIT("%s[\"%s\", \"%s\"]", i ? ", " : "", merges[i][0], merges[i][1]);
    EMIT("]}}");
#undef EMIT
    assert_true(at < cap_json);
    write_text(name, j, path, cap);
    free(j);
}

enum { SP_SPACE = 259, SP_H = 260, SP_HELLO = 271, SP_WORLD = 276, SP_SEP = 277 };

static void check_spiece_tokenizer(const lp_tokenizer *t) {
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_SPIECE_BPE);
    assert_string_equal(lp_tokenizer_kind_name(t), "sentencepiece-bpe");
    assert_int_equal(lp_tokenizer_vocab_size(t), 278);
    assert_int_equal(lp_tokenizer_bos(t), 1);
    assert_int_equal(lp_tokenizer_eos(t), 2);
    assert_true(lp_tokenizer_adds_bos(t));
    /* "▁hello▁world": ▁h, ll, ▁he, ▁hell, ▁hello, then ▁w, or, ▁wor, ld, ▁world */
    static const int hello[] = {1, SP_HELLO, SP_WORLD};
    check_encode(t, "hello world", true, hello, 3);
    check_decode(t, hello, 3, "hello world");
    /* "é" is not in the vocabulary: its UTF-8 bytes C3 A9 fall back to <0xC3> <0xA9> */
    static const int accent[] = {1, SP_H + 7 /* ▁h */, 3 + 0xC3, 3 + 0xA9};
    check_encode(t, "h\xc3\xa9", true, accent, 4);
    check_decode(t, accent, 4, "h\xc3\xa9");
    /* two spaces: the first ▁ finds no partner */
    static const int two_spaces[] = {SP_HELLO, SP_SPACE, SP_WORLD};
    check_encode(t, "hello  world", false, two_spaces, 3);
    check_decode(t, two_spaces, 3, "hello  world");
    static const int empty[] = {1};
    check_encode(t, "", true, empty, 1);
    size_t len;
    const char *b = lp_tokenizer_token_bytes(t, 3 + 0x0A, &len);
    assert_int_equal(len, 1);
    assert_int_equal(b[0], '\n');
    b = lp_tokenizer_token_bytes(t, SP_HELLO, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(b, " hello", 6);
    assert_string_equal(lp_tokenizer_token_piece(t, SP_HELLO), "\xe2\x96\x81hello");
}

static void test_spiece_tokenizer_json_merges_by_rank_and_falls_back_to_bytes(void **state) {
    (void)state;
    char path[256];
    write_spiece_json("spiece.json", false, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_OK);
    check_spiece_tokenizer(t);
    /* an added special token splits the text; the legacy normalizer prepends ▁ to each part */
    static const int sep[] = {1, SP_HELLO, SP_SEP, SP_WORLD};
    check_encode(t, "hello<|sep|>world", true, sep, 4);
    check_decode(t, sep, 4, "hello<|sep|> world");
    lp_tokenizer_free(t);
}

static void test_spiece_tokenizer_json_with_metaspace_encodes_the_same(void **state) {
    (void)state;
    char path[256];
    write_spiece_json("metaspace.json", true, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_OK);
    check_spiece_tokenizer(t);
    /* prepend_scheme "first": only the text at the very start gets ▁ */
    static const int sep[] = {1, SP_HELLO, SP_SEP, 264 /* w */, 273 /* or */, 275 /* ld */};
    check_encode(t, "hello<|sep|>world", true, sep, 6);
    lp_tokenizer_free(t);
}

/* Gemma 2's tokenizer.json layout (tests/fixtures/gemma2_tokenizer.py: GemmaConverter's
 * normalizer, Split pre_tokenizer, decoder and vocabulary order, merges as "a b" strings). */
enum { G_TAB = 7 + 9, G_SPACE = 263, G_NL = 271, G_SP_HELLO = 276, G_SP_WORLD = 281, G_HELLO = 284,
       G_SPSP = 285, G_NLNL = 286, G_START = 5 };

static void test_gemma_tokenizer_json_has_no_dummy_prefix(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, "tests/fixtures/gemma2_tokenizer.json"), LP_OK);
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_SPIECE_BPE);
    assert_int_equal(lp_tokenizer_vocab_size(t), 287);
    assert_int_equal(lp_tokenizer_bos(t), 2);
    assert_int_equal(lp_tokenizer_eos(t), 1);
    assert_true(lp_tokenizer_adds_bos(t));
    /* no ▁ prepended: "hello" at the start is the word without one (Llama 2 would say ▁hello) */
    static const int hello[] = {2, G_HELLO, G_SP_WORLD};
    check_encode(t, "hello world", true, hello, 3);
    check_decode(t, hello, 3, "hello world");
    /* a leading space is a ▁ of the text, and decoding keeps it (no Strip decoder) */
    static const int spaced[] = {G_SP_HELLO};
    check_encode(t, " hello", false, spaced, 1);
    check_decode(t, spaced, 1, " hello");
    /* runs of spaces: ▁w merges before ▁▁ by rank; a tab is its own piece (not <0x09>) */
    static const int two[] = {G_SPACE, G_SP_WORLD}, three[] = {G_SPSP, G_SP_WORLD}, tab[] = {G_HELLO, G_TAB};
    check_encode(t, "  world", false, two, 2);
    check_encode(t, "   world", false, three, 2);
    check_encode(t, "hello\t", false, tab, 2);
    check_decode(t, tab, 2, "hello\t");
    /* newlines are pieces; a special token splits the text and is not normalised */
    static const int turn[] = {2, G_START, G_HELLO, G_NLNL, G_NL};
    check_encode(t, "<start_of_turn>hello\n\n\n", true, turn, 5);
    /* bytes the vocabulary lacks fall back to <0xNN> (7 + byte) */
    static const int accent[] = {264 /* h */, 7 + 0xC3, 7 + 0xA9};
    check_encode(t, "h\xc3\xa9", false, accent, 3);
    check_decode(t, accent, 3, "h\xc3\xa9");
    lp_tokenizer_free(t);
}

/* A Split on a string the normaliser does not remove would split the text: refused. */
static void test_split_on_a_kept_string_is_refused(void **state) {
    (void)state;
    char path[256];
    const char *j = "{\"added_tokens\": [], \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Split\", "
                    "\"pattern\": {\"String\": \" \"}, \"behavior\": \"MergedWithPrevious\"}, \"model\": {\"type\": "
                    "\"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0}, \"merges\": []}}";
    write_text("split_kept.json", j, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_EUNSUPPORTED);
    assert_non_null(strstr(lp_errmsg(), "a Split pre_tokenizer on the string \" \" is supported only when"));
    assert_null(t);
}

static void test_load_dir_prefers_tokenizer_json(void **state) {
    (void)state;
    char path[256];
    write_spiece_json("tokenizer.json", false, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_dir(&t, tmpdir), LP_OK);
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_SPIECE_BPE);
    lp_tokenizer_free(t);
    unlink(path);
}

static void test_load_dir_reads_vocab_json_and_merges_txt(void **state) {
    (void)state;
    char sub[128], vocab[256], merges[256];
    snprintf(sub, sizeof sub, "%s/gpt2dir", tmpdir);
    assert_int_equal(lp_path_join(vocab, sizeof vocab, sub, "vocab.json"), LP_OK);
    assert_int_equal(lp_path_join(merges, sizeof merges, sub, "merges.txt"), LP_OK);
    assert_int_equal(mkdir(sub, 0700), 0);
    copy_file(GPT2_VOCAB, vocab);
    copy_file(GPT2_MERGES, merges);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    static const int want[] = {15496, 995};
    check_encode(t, "Hello world", false, want, 2);
    lp_tokenizer_free(t);
    unlink(vocab);
    unlink(merges);
    rmdir(sub);
}

/* ---------------------------------------------------------------- llama2.c tokenizer.bin */

static void test_llama2c_stories_tokenizer_loads(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_llama2c(&t, STORIES_TOK, 512), LP_OK);
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_LLAMA2C);
    assert_string_equal(lp_tokenizer_kind_name(t), "llama2c");
    assert_int_equal(lp_tokenizer_vocab_size(t), 512);
    assert_int_equal(lp_tokenizer_bos(t), 1);
    assert_int_equal(lp_tokenizer_eos(t), 2);
    assert_true(lp_tokenizer_adds_bos(t));
    size_t len;
    const char *b = lp_tokenizer_token_bytes(t, 3 + 0x41, &len); /* <0x41> */
    assert_int_equal(len, 1);
    assert_int_equal(b[0], 'A');
    assert_string_equal(lp_tokenizer_token_piece(t, 265), " the");
    lp_tokenizer_free(t);
}

static void test_llama2c_decodes_stories_sample_and_encode_extends_it(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_llama2c(&t, STORIES_TOK, 512), LP_OK);
    /* The README's 27 ids stop at "in": " the park." is 5 more tokens. */
    check_decode(t, STORY_IDS, N_STORY_IDS,
                 "Once upon a time, there was a little girl named Lily. She loved to play outside in");
    int want[N_STORY_IDS + 5];
    memcpy(want, STORY_IDS, sizeof STORY_IDS);
    static const int park[] = {265, 282, 295, 433, 426}; /* " the" " p" "ar" "k" "." */
    memcpy(want + N_STORY_IDS, park, sizeof park);
    check_encode(t, STORY, true, want, N_STORY_IDS + 5);
    check_decode(t, want, N_STORY_IDS + 5, STORY);
    lp_tokenizer_free(t);
}

static void test_llama2c_round_trips_unicode_and_unknown_bytes(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_llama2c(&t, STORIES_TOK, 512), LP_OK);
    /* é and ’ are tokens of their own; 😀 and the stray bytes fall back to <0xNN> */
    static const char text[] = "Caf\xc3\xa9 \xe2\x80\x99 \xf0\x9f\x98\x80 \x80\xff\xc3 end";
    int ids[128], n = -1;
    assert_int_equal(lp_tokenizer_encode(t, text, sizeof text - 1, true, ids, 128, &n), LP_OK);
    assert_int_equal(ids[0], 1);
    check_decode(t, ids, n, text);
    assert_int_equal(lp_tokenizer_encode(t, "", 0, true, ids, 128, &n), LP_OK);
    assert_int_equal(n, 1);
    lp_tokenizer_free(t);
}

static void test_llama2c_rejects_truncated_file(void **state) {
    (void)state;
    lp_mapping m;
    assert_int_equal(lp_file_map(&m, STORIES_TOK), LP_OK);
    char path[256];
    write_file("tok.bin", m.data, 1000, path, sizeof path);
    lp_tokenizer *t = (lp_tokenizer *)1;
    assert_int_equal(lp_tokenizer_load_llama2c(&t, path, 512), LP_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(lp_errmsg(), path));
    assert_non_null(strstr(lp_errmsg(), "truncated at token"));
    /* from memory: too short for the header, and a negative vocabulary size */
    assert_int_equal(lp_tokenizer_load_llama2c_mem(&t, m.data, 3, 512, "mem"), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), "mem"));
    assert_int_equal(lp_tokenizer_load_llama2c_mem(&t, m.data, m.size, 0, "mem"), LP_EINVAL);
    assert_int_equal(lp_tokenizer_load_llama2c_mem(&t, m.data, m.size, 1 << 30, "mem"), LP_EFORMAT);
    /* a smaller vocabulary is a valid prefix of the file */
    assert_int_equal(lp_tokenizer_load_llama2c_mem(&t, m.data, m.size, 100, "mem"), LP_OK);
    int ids[64], n;
    assert_int_equal(lp_tokenizer_encode(t, "!?", 2, true, ids, 64, &n), LP_OK); /* bytes 0x20.. are ids 35.. */
    static const int bytes[] = {1, 3 + ' ', 3 + '!', 3 + '?'};
    assert_int_equal(n, 4);
    assert_memory_equal(ids, bytes, sizeof bytes);
    assert_int_equal(lp_tokenizer_encode(t, "\xff", 1, false, ids, 64, &n), LP_EFORMAT); /* 0xFF + 3 >= 100 */
    lp_tokenizer_free(t);
    lp_file_unmap(&m);
    unlink(path);
}

/* ---------------------------------------------------------------- malformed inputs */

static void test_missing_files_report_eio_naming_them(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_gpt2(&t, "/nonexistent/vocab.json", GPT2_MERGES), LP_EIO);
    assert_null(t);
    assert_non_null(strstr(lp_errmsg(), "/nonexistent/vocab.json"));
    assert_int_equal(lp_tokenizer_load_gpt2(&t, GPT2_VOCAB, "/nonexistent/merges.txt"), LP_EIO);
    assert_non_null(strstr(lp_errmsg(), "/nonexistent/merges.txt"));
    assert_int_equal(lp_tokenizer_load_json(&t, "/nonexistent/tokenizer.json"), LP_EIO);
    assert_int_equal(lp_tokenizer_load_llama2c(&t, "/nonexistent/tok.bin", 512), LP_EIO);
    char empty[128];
    snprintf(empty, sizeof empty, "%s/empty", tmpdir);
    assert_int_equal(mkdir(empty, 0700), 0);
    assert_int_equal(lp_tokenizer_load_dir(&t, empty), LP_EIO);
    assert_non_null(strstr(lp_errmsg(), "tokenizer.json"));
    assert_non_null(strstr(lp_errmsg(), "vocab.json"));
    rmdir(empty);
}

static void expect_json_error(const char *name, const char *json, int code, const char *mention) {
    char path[256];
    write_text(name, json, path, sizeof path);
    lp_tokenizer *t = NULL;
    int rc = lp_tokenizer_load_json(&t, path);
    if (rc != code) print_error("%s: got %d (%s)\n", name, rc, lp_errmsg());
    assert_int_equal(rc, code);
    assert_null(t);
    assert_non_null(strstr(lp_errmsg(), path));
    if (mention) assert_non_null(strstr(lp_errmsg(), mention));
    unlink(path);
}

static void test_malformed_tokenizer_json_is_rejected_with_a_message(void **state) {
    (void)state;
    expect_json_error("garbage.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {", LP_EFORMAT, "JSON");
    expect_json_error("notjson.json", "\x00\x01\x02 hello", LP_EFORMAT, NULL);
    expect_json_error("nomodel.json", "{\"version\": \"1.0\"}", LP_EFORMAT, "model");
    expect_json_error("wordlevel.json", "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}}",
                      LP_EUNSUPPORTED, "WordLevel");
    /* Unigram: each part checked */
    expect_json_error("ug_vocab.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": {\"a\": 0}}}", LP_EFORMAT,
                      "not a list");
    expect_json_error("ug_entry.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0], [\"b\"]]}}",
                      LP_EFORMAT, "model.vocab[1]");
    expect_json_error("ug_unk.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]], \"unk_id\": 1}}",
                      LP_EFORMAT, "unk_id 1");
    expect_json_error("ug_b64.json",
                      "{\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"AAA*\"}, "
                      "\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]], \"unk_id\": 0}}",
                      LP_EFORMAT, "base64");
    /* a trie of 16 bytes in a blob of 8 ("EAAAAAAAAAA=" is 10 00 00 00 and four zeros) */
    expect_json_error("ug_trie.json",
                      "{\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"EAAAAAAAAAA=\"}, "
                      "\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]], \"unk_id\": 0}}",
                      LP_EFORMAT, "trie of 16 bytes");
    expect_json_error("ug_regex.json",
                      "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"(\"}, \"content\": \"x\"}, "
                      "\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]], \"unk_id\": 0}}",
                      LP_EUNSUPPORTED, "regex");
    expect_json_error("badid.json",
                      "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {\"a\": -4}, \"merges\": []}}",
                      LP_EFORMAT, "\"a\"");
    expect_json_error("sparse.json",
                      "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {\"a\": 16000000}, \"merges\": []}}",
                      LP_EFORMAT, NULL);
    expect_json_error("badmerge.json",
                      "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
                      LP_EFORMAT, "\"ab\" is not in the vocabulary");
    expect_json_error("badmerge2.json",
                      "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {\"a\": 0}, \"merges\": [17]}}",
                      LP_EFORMAT, "merges[0]");
    expect_json_error("plainbpe.json",
                      "{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      LP_EUNSUPPORTED, "Whitespace");
    expect_json_error("badregex.json",
                      "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\","
                      " \"pattern\": {\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\", \"invert\": false},"
                      " {\"type\": \"ByteLevel\", \"use_regex\": false}]}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      LP_EUNSUPPORTED, "regex");
}

/* Sequences nested past loupe's depth of 4 said `"Sequence" is not supported`; a file above
 * the tokenizer size cap is refused before it is read, naming the cap. */
static void test_deep_sequences_and_huge_files_are_named(void **state) {
    (void)state;
    char json[2048];
    const char *kinds[2][2] = {{"normalizer", "normalizers"}, {"pre_tokenizer", "pretokenizers"}};
    for (int k = 0; k < 2; k++) {
        int n = snprintf(json, sizeof json, "{\"%s\": ", kinds[k][0]);
        for (int i = 0; i < 6; i++)
            n += snprintf(json + n, sizeof json - n, "{\"type\": \"Sequence\", \"%s\": [", kinds[k][1]);
        n += snprintf(json + n, sizeof json - n, "%s", k ? "{\"type\": \"ByteLevel\"}" : "{\"type\": \"NFC\"}");
        for (int i = 0; i < 6; i++) n += snprintf(json + n, sizeof json - n, "]}");
        snprintf(json + n, sizeof json - n, ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
        expect_json_error("deep.json", json, LP_EUNSUPPORTED, "nested more than 4 deep");
    }
    char path[256];
    write_text("huge.json", "", path, sizeof path);
    assert_int_equal(truncate(path, (off_t)LP_JSON_MAX_TOKENIZER + 1), 0); /* sparse: no disk used */
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_ERANGE);
    assert_non_null(strstr(lp_errmsg(), path));
    assert_non_null(strstr(lp_errmsg(), "128 MB"));
    unlink(path);
}

/* Four chained Replace a -> a x 100 would make 10^9 bytes of ten: refused at the
 * normalizer's size limit (16x + 1024) without building them; a real normalizer passes. */
static void test_expanding_normalizer_is_refused_at_the_size_limit(void **state) {
    (void)state;
    char hundred[101];
    memset(hundred, 'a', 100);
    hundred[100] = '\0';
    char json[2048];
    int at = snprintf(json, sizeof json, "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [");
    for (int i = 0; i < 4; i++)
        at += snprintf(json + at, sizeof json - (size_t)at,
                       "%s{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"%s\"}", i ? ", " : "",
                       hundred);
    snprintf(json + at, sizeof json - (size_t)at,
             "]}, \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\","
             " \"vocab\": {\"<unk>\": 0, \"a\": 1}, \"merges\": []}}");
    char path[256];
    write_text("expanding.json", json, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_OK);
    int ids[64], n = 0;
    assert_int_equal(lp_tokenizer_encode(t, "aaaaaaaaaa", 10, false, ids, 64, &n), LP_ERANGE);
    assert_non_null(strstr(lp_errmsg(), "normalizer"));
    assert_non_null(strstr(lp_errmsg(), path));
    assert_int_equal(lp_tokenizer_encode(t, "b", 1, false, ids, 64, &n), LP_OK); /* nothing to replace */
    lp_tokenizer_free(t);
    unlink(path);
}

static void test_malformed_merges_txt_is_rejected_with_line_number(void **state) {
    (void)state;
    char vocab[256], merges[256];
    write_text("v.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}", vocab, sizeof vocab);
    write_text("m.txt", "#version: 0.2\na b\nab\n", merges, sizeof merges);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_gpt2(&t, vocab, merges), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), merges));
    assert_non_null(strstr(lp_errmsg(), "line 3"));
    write_text("v.json", "[1, 2, 3]", vocab, sizeof vocab);
    assert_int_equal(lp_tokenizer_load_gpt2(&t, vocab, merges), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), vocab));
    unlink(vocab);
    unlink(merges);
}

/* vocab.json is read without jansson when it is a plain object of ids: escapes, surrogate
 * pairs and raw UTF-8 decode as jansson decodes them, and whatever the fast path does not
 * take outright (a key twice, a float, bytes that are not UTF-8) is jansson's to decide,
 * with jansson's answer or message. */
static void test_vocab_json_fast_path_agrees_with_jansson(void **state) {
    (void)state;
    char vocab[256], merges[256];
    write_text("m.txt", "#version: 0.2\na b\n", merges, sizeof merges);
    write_text("v.json",
               " {\"a\": 0, \"b\":1,\n\t\"ab\" : 2, \"\\u0120\": 3, \"\xc4\xa0x\": 4, \"\\\"q\\\\\": 5,"
               " \"\\ud83d\\ude00\": 6, \"\\/\\n\": 7, \"\xe2\x82\xac\": 10, \"<|endoftext|>\": 8} \n",
               vocab, sizeof vocab);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_gpt2(&t, vocab, merges), LP_OK);
    const char *piece[] = {"a", "b", "ab", "\xc4\xa0", "\xc4\xa0x", "\"q\\", "\xf0\x9f\x98\x80", "/\n", "\xe2\x82\xac"};
    const int id[] = {0, 1, 2, 3, 4, 5, 6, 7, 10};
    for (int i = 0; i < 9; i++) assert_int_equal(lp_tokenizer_piece_to_id(t, piece[i]), id[i]);
    assert_int_equal(lp_tokenizer_vocab_size(t), 11);
    assert_int_equal(lp_tokenizer_eos(t), 8);
    lp_tokenizer_free(t);
    /* a key twice: jansson keeps its last id, so "a" is 3 and id 0 has no piece */
    write_text("v.json", "{\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0061\": 3}", vocab, sizeof vocab);
    assert_int_equal(lp_tokenizer_load_gpt2(&t, vocab, merges), LP_OK);
    assert_int_equal(lp_tokenizer_piece_to_id(t, "a"), 3);
    lp_tokenizer_free(t);
    const char *bad[][2] = {{"{\"a\": 0, \"b\": 1.5, \"ab\": 2}", "not an integer"},
                            {"{\"a\": 0, \"b\": -1, \"ab\": 2}", "not an integer"},
                            {"{\"a\": 0, \"b\": 1, \"ab\": 2,}", "not valid JSON"},
                            {"{\"a\": 0, \"\xc3\": 1, \"ab\": 2}", "not valid JSON"},
                            {"{\"a\": 0, \"b\\ud800\": 1, \"ab\": 2}", "not valid JSON"},
                            {"{}", "empty"}};
    for (int i = 0; i < 6; i++) {
        write_text("v.json", bad[i][0], vocab, sizeof vocab);
        assert_int_equal(lp_tokenizer_load_gpt2(&t, vocab, merges), LP_EFORMAT);
        if (!strstr(lp_errmsg(), bad[i][1])) fail_msg("%s: %s", bad[i][0], lp_errmsg());
    }
    unlink(vocab);
    unlink(merges);
}

/* ---------------------------------------------------------------- WordPiece (BERT) */

#define WP_DIR "tests/fixtures/wordpiece"
#define WP_REFERENCE "tests/fixtures/wordpiece.json"
enum { WP_PAD = 0, WP_UNK = 1, WP_CLS = 2, WP_SEP = 3, WP_MASK = 4 };

static void format_ints(char *out, size_t cap, const int *v, int n) { format_ids(out, cap, v, n); }

/* Checks t against every case of tests/fixtures/wordpiece.json for its casing (made by
 * wordpiece_reference.py from Hugging Face's BertTokenizer): ids and token types with the
 * special tokens, the same without them, and lp_tokenizer_encode for single texts. Returns
 * how many cases it checked. */
static int check_wordpiece_reference(const lp_tokenizer *t, bool lower) {
    json_error_t jerr;
    json_t *root = json_load_file(WP_REFERENCE, JSON_ALLOW_NUL, &jerr);
    if (!root) print_error("%s: %s\n", WP_REFERENCE, jerr.text);
    assert_non_null(root);
    json_t *cases = json_object_get(root, "cases"), *c;
    size_t i;
    int checked = 0;
    json_array_foreach(cases, i, c) {
        if (json_is_true(json_object_get(c, "lower")) != lower) continue;
        json_t *ja = json_object_get(c, "a"), *jb = json_object_get(c, "b");
        json_t *jids = json_object_get(c, "ids"), *jtypes = json_object_get(c, "types");
        const char *name = json_string_value(json_object_get(c, "name"));
        int want[512], want_types[512], n_want = (int)json_array_size(jids);
        assert_true(n_want <= 512);
        for (int k = 0; k < n_want; k++) {
            want[k] = (int)json_integer_value(json_array_get(jids, (size_t)k));
            want_types[k] = (int)json_integer_value(json_array_get(jtypes, (size_t)k));
        }
        const char *a = json_string_value(ja), *b = jb ? json_string_value(jb) : NULL;
        size_t alen = json_string_length(ja), blen = jb ? json_string_length(jb) : 0;
        int ids[512], types[512], n = -1;
        assert_int_equal(lp_tokenizer_encode_pair(t, a, alen, b, blen, true, ids, types, 512, &n), LP_OK);
        bool same = n == n_want && memcmp(ids, want, (size_t)n * sizeof *ids) == 0 &&
                    memcmp(types, want_types, (size_t)n * sizeof *types) == 0;
        if (!same) {
            char got[4096], exp[4096], gt[4096], et[4096];
            format_ints(got, sizeof got, ids, n);
            format_ints(exp, sizeof exp, want, n_want);
            format_ints(gt, sizeof gt, types, n);
            format_ints(et, sizeof et, want_types, n_want);
            print_error("%s (%s): ids\n  got     %s\n  expected%s\ntypes\n  got     %s\n  expected%s\n", name,
                        lower ? "lowercase" : "cased", got, exp, gt, et);
        }
        assert_true(same);
        /* without special tokens: the same ids less the template's [CLS] and [SEP]s (the first
         * token, the last, and for a pair the last of type 0), types kept */
        int bare[512], bare_types[512], n_bare = 0, sep_a = n_want - 1;
        while (b && want_types[sep_a] != 0) sep_a--;
        for (int k = 1; k < n_want - 1; k++)
            if (k != sep_a) bare[n_bare] = want[k], bare_types[n_bare++] = want_types[k];
        assert_int_equal(lp_tokenizer_encode_pair(t, a, alen, b, blen, false, ids, types, 512, &n), LP_OK);
        assert_int_equal(n, n_bare);
        assert_memory_equal(ids, bare, (size_t)n * sizeof *ids);
        assert_memory_equal(types, bare_types, (size_t)n * sizeof *types);
        if (!b) {
            assert_int_equal(lp_tokenizer_encode(t, a, alen, true, ids, (int)alen + 3, &n), LP_OK);
            assert_int_equal(n, n_want);
            assert_memory_equal(ids, want, (size_t)n * sizeof *ids);
        }
        checked++;
    }
    json_decref(root);
    return checked;
}

static void check_bert_specials(const lp_tokenizer *t) {
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_WORDPIECE);
    assert_string_equal(lp_tokenizer_kind_name(t), "wordpiece");
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_CLS), WP_CLS);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_SEP), WP_SEP);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_MASK), WP_MASK);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_PAD), WP_PAD);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_UNK), WP_UNK);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_BOS), -1);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_EOS), -1);
    assert_true(lp_tokenizer_adds_bos(t));
}

/* The cased vocab.txt: a directory with vocab.txt and tokenizer_config.json saying
 * do_lower_case false, read through lp_tokenizer_load_dir. */
static lp_tokenizer *load_cased_vocab_txt(char *sub, size_t cap) {
    char vocab[256], config[256];
    snprintf(sub, cap, "%s/bert_cased", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(lp_path_join(vocab, sizeof vocab, sub, "vocab.txt"), LP_OK);
    assert_int_equal(lp_path_join(config, sizeof config, sub, "tokenizer_config.json"), LP_OK);
    copy_file(WP_DIR "/vocab.txt", vocab);
    assert_int_equal(lp_file_write(config, "{\"do_lower_case\": false}", 24), LP_OK);
    assert_true(lp_tokenizer_dir_has(sub));
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    unlink(vocab);
    unlink(config);
    rmdir(sub);
    return t;
}

static void test_wordpiece_vocab_txt_matches_hf_reference(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_vocab_txt(&t, WP_DIR "/vocab.txt", NULL), LP_OK);
    check_bert_specials(t);
    assert_true(check_wordpiece_reference(t, true) >= 50);
    lp_tokenizer_free(t);
    char sub[128];
    t = load_cased_vocab_txt(sub, sizeof sub);
    check_bert_specials(t);
    assert_true(check_wordpiece_reference(t, false) >= 50);
    lp_tokenizer_free(t);
}

static void test_wordpiece_tokenizer_json_matches_hf_reference(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, WP_DIR "/tokenizer.json"), LP_OK); /* TemplateProcessing */
    check_bert_specials(t);
    assert_true(check_wordpiece_reference(t, true) >= 50);
    lp_tokenizer_free(t);
    assert_int_equal(lp_tokenizer_load_json(&t, WP_DIR "/tokenizer_cased.json"), LP_OK); /* BertProcessing */
    check_bert_specials(t);
    assert_true(check_wordpiece_reference(t, false) >= 50);
    lp_tokenizer_free(t);
}

static void check_wp_decode(const lp_tokenizer *t, const char *text, const char *want) {
    int ids[256], n = 0;
    assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), true, ids, 256, &n), LP_OK);
    check_decode(t, ids, n, want);
}

/* HF's WordPiece decoder: ## pieces glued on, other tokens after a space, " ." -> "." etc.;
 * loupe drops [CLS] and [SEP] as it drops BOS/EOS. token_bytes shows the piece itself. */
static void test_wordpiece_decodes_like_hf_and_shows_pieces(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_vocab_txt(&t, WP_DIR "/vocab.txt", NULL), LP_OK);
    check_wp_decode(t, "Unaffable playing!", "unaffable playing!");
    check_wp_decode(t, "hello , world . don't", "hello, world. don ' t"); /* cleanup sees one token at a time */
    check_wp_decode(t, "the [MASK] is blue?", "the [MASK] is blue?");
    check_wp_decode(t, "Señor 中国", "senor 中 国");
    int id = lp_tokenizer_piece_to_id(t, "##aff");
    assert_true(id > 0);
    size_t len;
    const char *b = lp_tokenizer_token_bytes(t, id, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(b, "##aff", 5);
    assert_string_equal(lp_tokenizer_token_piece(t, WP_MASK), "[MASK]");
    /* a buffer too small for [CLS] ... [SEP] says how many ids it needs */
    int ids[3], n = 0;
    assert_int_equal(lp_tokenizer_encode_pair(t, "hello", 5, "world", 5, true, ids, NULL, 3, &n), LP_ERANGE);
    assert_int_equal(n, 5);
    lp_tokenizer_free(t);
}

static void expect_vocab_txt(const char *text, size_t len, int code, const char *mention, lp_tokenizer **out) {
    char path[256];
    write_file("vocab.txt", text, len, path, sizeof path);
    lp_tokenizer *t = NULL;
    int rc = lp_tokenizer_load_vocab_txt(&t, path, NULL);
    if (rc != code) print_error("got %d (%s)\n", rc, lp_errmsg());
    assert_int_equal(rc, code);
    if (code) {
        assert_null(t);
        assert_non_null(strstr(lp_errmsg(), path));
        if (mention) assert_non_null(strstr(lp_errmsg(), mention));
    }
    unlink(path);
    if (out) *out = t;
    else lp_tokenizer_free(t);
}

/* vocab.txt as tokenizers reads it: trailing whitespace trimmed, a token listed twice keeps
 * its last line; not UTF-8 or empty is an error naming the file; no [UNK] fails on the
 * first word nothing matches. */
static void test_vocab_txt_lines_duplicates_and_errors(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    static const char dup[] = "[UNK]\r\n[CLS]\n[SEP]\nab \nab\n##c\n";
    expect_vocab_txt(dup, sizeof dup - 1, LP_OK, NULL, &t);
    assert_int_equal(lp_tokenizer_vocab_size(t), 6);
    assert_int_equal(lp_tokenizer_piece_to_id(t, "ab"), 4);
    assert_null(lp_tokenizer_token_piece(t, 3)); /* the first "ab" is a gap */
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_UNK), 0);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_MASK), -1);
    static const int abc[] = {1, 4, 5, 2}, unknown[] = {1, 0, 2};
    check_encode(t, "ABC", true, abc, 4);
    check_encode(t, "abd", true, unknown, 3);
    lp_tokenizer_free(t);
    expect_vocab_txt("a\n\xff\n", 4, LP_EFORMAT, "line 2", NULL);
    expect_vocab_txt("", 0, LP_EFORMAT, "empty", NULL);
    static const char no_unk[] = "a\nb\n";
    expect_vocab_txt(no_unk, sizeof no_unk - 1, LP_OK, NULL, &t);
    int ids[8], n;
    assert_int_equal(lp_tokenizer_encode(t, "a b", 3, true, ids, 8, &n), LP_OK); /* no [CLS]/[SEP]: no template */
    assert_int_equal(n, 2);
    assert_int_equal(lp_tokenizer_encode(t, "a c", 3, true, ids, 8, &n), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), "\"c\""));
    lp_tokenizer_free(t);
    char missing[256];
    assert_int_equal(lp_path_join(missing, sizeof missing, tmpdir, "nothere.txt"), LP_OK);
    assert_int_equal(lp_tokenizer_load_vocab_txt(&t, missing, NULL), LP_EIO);
    assert_non_null(strstr(lp_errmsg(), "nothere.txt"));
}

/* ---------------------------------------------------------------- RoBERTa */

/* A tiny RoBERTa vocabulary in GPT-2's byte-level form (Ġ is the space byte). */
static const char ROBERTA_VOCAB[] =
    "{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"h\": 4, \"e\": 5, \"l\": 6, \"o\": 7, \"\\u0120\": 8,"
    " \"w\": 9, \"r\": 10, \"d\": 11, \"he\": 12, \"ll\": 13, \"hell\": 14, \"hello\": 15, \"\\u0120w\": 16,"
    " \"or\": 17, \"\\u0120wor\": 18, \"ld\": 19, \"\\u0120world\": 20, \"!\": 21, \"<mask>\": 22}";
static const char ROBERTA_MERGES[] =
    "#version: 0.2\nh e\nl l\nhe ll\nhell o\n\xc4\xa0 w\no r\n\xc4\xa0w or\nl d\n\xc4\xa0wor ld\n";
enum { RB_S = 0, RB_PAD = 1, RB_END = 2, RB_UNK = 3, RB_HELLO = 15, RB_SPACE = 8, RB_WORLD = 20, RB_BANG = 21,
       RB_MASK = 22 };

static void check_roberta(const lp_tokenizer *t) {
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_BYTE_BPE);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_CLS), RB_S);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_SEP), RB_END);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_MASK), RB_MASK);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_PAD), RB_PAD);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_UNK), RB_UNK);
    assert_int_equal(lp_tokenizer_bos(t), RB_S);
    assert_int_equal(lp_tokenizer_eos(t), RB_END);
    static const int single[] = {RB_S, RB_HELLO, RB_WORLD, RB_END};
    check_encode(t, "hello world", true, single, 4);
    /* <s> A </s></s> B </s>, all type 0; "world" alone has no Ġ: w or ld */
    int ids[16], types[16], n = 0;
    static const int pair[] = {RB_S, RB_HELLO, RB_END, RB_END, 9, 17, 19, RB_END}, zeros[8] = {0};
    assert_int_equal(lp_tokenizer_encode_pair(t, "hello", 5, "world", 5, true, ids, types, 16, &n), LP_OK);
    assert_int_equal(n, 8);
    assert_memory_equal(ids, pair, sizeof pair);
    assert_memory_equal(types, zeros, sizeof zeros);
    /* <mask> has lstrip: the space before it goes with it; none is eaten after it */
    static const int mask[] = {RB_S, RB_HELLO, RB_MASK, RB_BANG, RB_END};
    check_encode(t, "hello <mask>!", true, mask, 5);
    static const int mask2[] = {RB_HELLO, RB_MASK, RB_SPACE, RB_BANG};
    check_encode(t, "hello   <mask> !", false, mask2, 4);
    check_decode(t, single, 4, "hello world");
}

static void test_roberta_from_vocab_json_merges_and_config(void **state) {
    (void)state;
    char sub[128], vocab[256], merges[256], config[256];
    snprintf(sub, sizeof sub, "%s/roberta", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(lp_path_join(vocab, sizeof vocab, sub, "vocab.json"), LP_OK);
    assert_int_equal(lp_path_join(merges, sizeof merges, sub, "merges.txt"), LP_OK);
    assert_int_equal(lp_path_join(config, sizeof config, sub, "config.json"), LP_OK);
    assert_int_equal(lp_file_write(vocab, ROBERTA_VOCAB, strlen(ROBERTA_VOCAB)), LP_OK);
    assert_int_equal(lp_file_write(merges, ROBERTA_MERGES, strlen(ROBERTA_MERGES)), LP_OK);
    static const char cfg[] = "{\"model_type\": \"roberta\"}";
    assert_int_equal(lp_file_write(config, cfg, strlen(cfg)), LP_OK);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    check_roberta(t);
    lp_tokenizer_free(t);
    /* the same files without config.json are GPT-2's: no template, <mask> is text */
    unlink(config);
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_CLS), -1);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_MASK), -1);
    lp_tokenizer_free(t);
    unlink(vocab);
    unlink(merges);
    rmdir(sub);
}

static void test_roberta_tokenizer_json_with_roberta_processing(void **state) {
    (void)state;
    char json[4096], path[256];
    snprintf(json, sizeof json,
             "{\"version\": \"1.0\", \"added_tokens\": ["
             "{\"id\": 0, \"content\": \"<s>\", \"lstrip\": false, \"rstrip\": false, \"special\": true},"
             "{\"id\": 1, \"content\": \"<pad>\", \"lstrip\": false, \"rstrip\": false, \"special\": true},"
             "{\"id\": 2, \"content\": \"</s>\", \"lstrip\": false, \"rstrip\": false, \"special\": true},"
             "{\"id\": 3, \"content\": \"<unk>\", \"lstrip\": false, \"rstrip\": false, \"special\": true},"
             "{\"id\": 22, \"content\": \"<mask>\", \"lstrip\": true, \"rstrip\": false, \"special\": true}],"
             " \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false,"
             " \"trim_offsets\": true, \"use_regex\": true},"
             " \"post_processor\": {\"type\": \"RobertaProcessing\", \"sep\": [\"</s>\", 2], \"cls\": [\"<s>\", 0],"
             " \"trim_offsets\": true, \"add_prefix_space\": false},"
             " \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"unk_token\": null,"
             " \"continuing_subword_prefix\": \"\", \"end_of_word_suffix\": \"\", \"vocab\": %s, \"merges\": ["
             "\"h e\", \"l l\", \"he ll\", \"hell o\", \"\\u0120 w\", \"o r\", \"\\u0120w or\", \"l d\","
             " \"\\u0120wor ld\"]}}",
             ROBERTA_VOCAB);
    write_text("roberta.json", json, path, sizeof path);
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_json(&t, path), LP_OK);
    check_roberta(t);
    lp_tokenizer_free(t);
    unlink(path);
}


/* ---------------------------------------------------------------- SentencePiece Unigram (T5) */

#define UG_DIR "tests/fixtures/unigram"
#define UG_REFERENCE "tests/fixtures/unigram.json"

/* Checks t against every case of tests/fixtures/unigram.json (sentencepiece's own ids, made
 * by unigram_reference.py): hf selects the ids tokenizers gives where the two differ. Each
 * text is encoded with </s> and without it, and with a buffer one id too small. Returns
 * the number of cases checked; prints each mismatch (up to 10) before failing. */
static int check_unigram_reference(const lp_tokenizer *t, bool hf) {
    json_error_t jerr;
    json_t *root = json_load_file(UG_REFERENCE, 0, &jerr);
    if (!root) print_error("%s: %s\n", UG_REFERENCE, jerr.text);
    assert_non_null(root);
    json_t *cases = json_object_get(root, "cases"), *c;
    size_t i;
    int checked = 0, bad = 0;
    json_array_foreach(cases, i, c) {
        json_t *jt = json_object_get(c, "text"), *jids = json_object_get(c, "ids");
        if (hf && json_object_get(c, "hf_ids")) jids = json_object_get(c, "hf_ids");
        const char *text = json_string_value(jt);
        size_t len = json_string_length(jt);
        int want[1024], n_want = (int)json_array_size(jids), ids[1024], n = -1;
        assert_true(n_want <= 1024);
        for (int k = 0; k < n_want; k++) want[k] = (int)json_integer_value(json_array_get(jids, (size_t)k));
        assert_int_equal(lp_tokenizer_encode(t, text, len, true, ids, 1024, &n), LP_OK);
        if (n != n_want || memcmp(ids, want, (size_t)n * sizeof *ids) != 0) {
            char got[8192], exp[8192];
            format_ids(got, sizeof got, ids, n);
            format_ids(exp, sizeof exp, want, n_want);
            if (bad++ < 10) print_error("case %zu \"%s\":\n  got      %s\n  expected %s\n", i, text, got, exp);
            continue;
        }
        assert_int_equal(lp_tokenizer_encode(t, text, len, false, ids, 1024, &n), LP_OK);
        assert_int_equal(n, n_want - 1);
        assert_memory_equal(ids, want, (size_t)n * sizeof *ids);
        assert_int_equal(lp_tokenizer_encode(t, text, len, true, ids, n_want - 1, &n), LP_ERANGE);
        assert_int_equal(n, n_want);
        checked++;
    }
    if (bad) print_error("%d of %zu cases differ\n", bad, json_array_size(cases));
    json_decref(root);
    assert_int_equal(bad, 0);
    return checked;
}

/* T5's roles: </s> ends each sequence (the template), <pad> and <unk>, no <s>. */
static void check_t5_specials(const lp_tokenizer *t, int n_vocab) {
    assert_int_equal(lp_tokenizer_kind_of(t), LP_TOK_UNIGRAM);
    assert_string_equal(lp_tokenizer_kind_name(t), "unigram");
    assert_int_equal(lp_tokenizer_vocab_size(t), n_vocab);
    assert_int_equal(lp_tokenizer_eos(t), 1);
    assert_int_equal(lp_tokenizer_bos(t), -1);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_PAD), 0);
    assert_int_equal(lp_tokenizer_special(t, LP_SPECIAL_UNK), 2);
    assert_true(lp_tokenizer_adds_bos(t)); /* encode adds what the template says: </s> */
    assert_int_equal(lp_tokenizer_piece_to_id(t, "<extra_id_0>"), n_vocab - 1);
    assert_int_equal(lp_tokenizer_piece_to_id(t, "<extra_id_9>"), n_vocab - 10);
    /* a pair is A </s> B </s> */
    int ids[16], types[16], n = 0;
    assert_int_equal(lp_tokenizer_encode_pair(t, "<extra_id_0>", 12, "<extra_id_1>", 12, true, ids, types, 16, &n), LP_OK);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], n_vocab - 1);
    assert_int_equal(ids[1], 1);
    assert_int_equal(ids[2], n_vocab - 2);
    assert_int_equal(ids[3], 1);
}

static void check_unigram_decode(const lp_tokenizer *t, const char *text, const char *want) {
    int ids[256], n = 0;
    char buf[512];
    size_t len = 0;
    assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), true, ids, 256, &n), LP_OK);
    assert_int_equal(lp_tokenizer_decode(t, ids, n, buf, sizeof buf, &len), LP_OK);
    assert_string_equal(buf, want);
}

static void test_unigram_tokenizer_json_matches_sentencepiece(void **state) {
    (void)state;
    static const char *const files[] = {UG_DIR "/tokenizer.json", UG_DIR "/tokenizer_old.json"};
    for (int f = 0; f < 2; f++) {
        lp_tokenizer *t = NULL;
        int rc = lp_tokenizer_load_json(&t, files[f]);
        if (rc) print_error("%s\n", lp_errmsg());
        assert_int_equal(rc, LP_OK);
        check_t5_specials(t, 330);
        assert_true(check_unigram_reference(t, true) >= 2000);
        check_unigram_decode(t, "  the   quick <extra_id_3> fox ", "the quick<extra_id_3> fox");
        check_unigram_decode(t, "ﬁne ＡＢＣ", "fine ABC");
        lp_tokenizer_free(t);
    }
}

/* Writes a Unigram tokenizer.json with the given "vocab" list and model options, and no
 * normalizer or pre-tokenizer, and loads it. */
static lp_tokenizer *unigram_json(const char *vocab, const char *options) {
    char json[2048], path[256];
    snprintf(json, sizeof json, "{\"model\": {\"type\": \"Unigram\", \"vocab\": %s%s}}", vocab, options);
    write_text("unigram.json", json, path, sizeof path);
    lp_tokenizer *t = NULL;
    int rc = lp_tokenizer_load_json(&t, path);
    if (rc) print_error("%s\n", lp_errmsg());
    assert_int_equal(rc, LP_OK);
    return t;
}

static void expect_ids(const lp_tokenizer *t, const char *text, const int *want, int n_want) {
    int ids[64], n = 0;
    assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), false, ids, 64, &n), LP_OK);
    char got[512], exp[512];
    format_ids(got, sizeof got, ids, n);
    format_ids(exp, sizeof exp, want, n_want);
    assert_string_equal(got, exp);
}

/* The search itself, on vocabularies built to decide: tokenizers' own example
 * (models/unigram/model.rs: "abcdacdxx" -> abcd a cd xx, the unknown x's fused), a tie kept
 * by the path found first, an unknown character scored 10 below the lowest piece (with
 * "b" at +1, unk + b beats "ab" at -20 only if the penalty were 0), byte fallback for the
 * fused unknown run, and no unk_id at all. */
static void test_unigram_viterbi_ties_unknowns_and_byte_fallback(void **state) {
    (void)state;
    lp_tokenizer *t = unigram_json("[[\"<unk>\", 0.0], [\"a\", 0.0], [\"b\", 0.0], [\"c\", 0.0], [\"d\", 0.0], "
                                   "[\"cd\", 1.0], [\"ab\", 2.0], [\"abc\", 5.0], [\"abcd\", 10.0]]",
                                   ", \"unk_id\": 0");
    expect_ids(t, "abcdacdxx", (const int[]){8, 1, 5, 0}, 4);
    lp_tokenizer_free(t);
    t = unigram_json("[[\"<unk>\", 0.0], [\"a\", -1.0], [\"b\", -1.0], [\"ab\", -2.0]]", ", \"unk_id\": 0");
    expect_ids(t, "ab", (const int[]){3}, 1); /* ties: "ab" ends at 2 first */
    expect_ids(t, "ba", (const int[]){2, 1}, 2);
    lp_tokenizer_free(t);
    t = unigram_json("[[\"<unk>\", 0.0], [\"b\", 1.0], [\"ab\", -20.0]]", ", \"unk_id\": 0");
    expect_ids(t, "ab", (const int[]){2}, 1);
    expect_ids(t, "xb", (const int[]){0, 1}, 2);
    lp_tokenizer_free(t);
    t = unigram_json("[[\"<unk>\", 0.0], [\"a\", -1.0], [\"<0x78>\", 0.0], [\"<0xC3>\", 0.0], [\"<0xA9>\", 0.0]]",
                     ", \"unk_id\": 0, \"byte_fallback\": true");
    expect_ids(t, "ax\xc3\xa9" "a", (const int[]){1, 2, 3, 4, 1}, 5);
    expect_ids(t, "ay", (const int[]){1, 0}, 2); /* no <0x79>: the run stays <unk> */
    lp_tokenizer_free(t);
    t = unigram_json("[[\"a\", -1.0]]", ", \"unk_id\": null");
    int ids[8], n;
    assert_int_equal(lp_tokenizer_encode(t, "ab", 2, false, ids, 8, &n), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), "unk_id"));
    lp_tokenizer_free(t);
}

static void test_unigram_spiece_model_matches_sentencepiece(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    int rc = lp_tokenizer_load_spiece(&t, UG_DIR "/spiece.model", 10);
    if (rc) print_error("%s\n", lp_errmsg());
    assert_int_equal(rc, LP_OK);
    check_t5_specials(t, 330);
    assert_true(check_unigram_reference(t, false) >= 2000);
    check_unigram_decode(t, "  the   quick <extra_id_3> fox ", "the quick<extra_id_3> fox");
    lp_tokenizer_free(t);
}

static void expect_spiece_error(const char *bytes, size_t len, int code, const char *mention) {
    lp_tokenizer *t = NULL;
    int rc = lp_tokenizer_load_spiece_mem(&t, bytes, len, 0, "bad.model");
    if (rc != code || !strstr(lp_errmsg(), mention)) print_error("got %d (%s), wanted \"%s\"\n", rc, lp_errmsg(), mention);
    assert_int_equal(rc, code);
    assert_null(t);
    assert_non_null(strstr(lp_errmsg(), "bad.model"));
    assert_non_null(strstr(lp_errmsg(), mention));
}

/* Hand-written ModelProtos: the smallest that loads (defaults: Unigram, dummy prefix, no
 * charsmap, no </s> so no template), and each way a file can be wrong, refused in one line
 * naming it; the fixture cut short loads (between fields) or is refused, never crashes. */
static void test_spiece_model_reader_is_strict(void **state) {
    (void)state;
    /* pieces <unk> (type 2), "a" -1.0, "b" -2.0 (score fixed32 0xBF800000, 0xC0000000) */
    static const char ok[] = "\x0a\x09\x0a\x05<unk>\x18\x02"
                             "\x0a\x08\x0a\x01" "a\x15\x00\x00\x80\xbf"
                             "\x0a\x08\x0a\x01" "b\x15\x00\x00\x00\xc0";
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_spiece_mem(&t, ok, sizeof ok - 1, 0, "ok.model"), LP_OK);
    expect_ids(t, "ab  a", (const int[]){0, 1, 2, 0, 1}, 5); /* "▁" is unknown: <unk> a b <unk> a */
    assert_false(lp_tokenizer_adds_bos(t));
    lp_tokenizer_free(t);
    expect_spiece_error("", 0, LP_EFORMAT, "no pieces");
    expect_spiece_error("\x0b", 1, LP_EFORMAT, "wire type 3");
    expect_spiece_error("\x08\x01", 2, LP_EFORMAT, "ModelProto.pieces (field 1) has wire type 0");
    expect_spiece_error("\x0a\x7f\x0a", 3, LP_EFORMAT, "says 127 bytes, 1 left");
    expect_spiece_error("\x0a\xff\xff", 3, LP_EFORMAT, "truncated varint");
    expect_spiece_error("\x0a\x03\x0a\x01" "a", 5, LP_EFORMAT, "no unknown piece");
    expect_spiece_error("\x0a\x03\x0a\x01" "a\x0a\x03\x0a\x01" "a\x0a\x02\x18\x02", 14, LP_EFORMAT, "piece 2 is empty");
    expect_spiece_error("\x0a\x05\x0a\x01" "a\x18\x02\x0a\x03\x0a\x01" "a", 12, LP_EFORMAT, "is already piece 0");
    expect_spiece_error("\x0a\x05\x0a\x01" "a\x18\x09", 7, LP_EFORMAT, "type 9");
    expect_spiece_error("\x0a\x05\x0a\x01" "a\x18\x02\x12\x02\x18\x02", 11, LP_EUNSUPPORTED, "model_type 2");
    /* a charsmap whose trie is longer than itself */
    expect_spiece_error("\x0a\x05\x0a\x01" "a\x18\x02\x1a\x06\x12\x04\x08\x00\x00\x00", 15, LP_EFORMAT, "trie of 8 bytes");
    char *model;
    size_t len;
    assert_int_equal(lp_file_read_new(UG_DIR "/spiece.model", &model, &len), LP_OK);
    int loaded = 0, refused = 0;
    for (size_t cut = 1; cut < len; cut += cut < 64 ? 1 : 4999) {
        /* a cut between two fields is a shorter valid message; inside one, an error */
        if (lp_tokenizer_load_spiece_mem(&t, model, cut, 10, "cut.model") == LP_OK) {
            lp_tokenizer_free(t);
            loaded++;
        } else {
            assert_null(t);
            assert_non_null(strstr(lp_errmsg(), "cut.model"));
            refused++;
        }
    }
    assert_true(refused > 50 && loaded < refused);
    free(model);
}

/* sentencepiece's byte fallback: a character no piece covers is its UTF-8 bytes as <0xNN>
 * pieces; the model is the fuzzing seed (byte_fallback on, a charsmap of five rules), its
 * ids in unigram.json's byte_fallback_cases. */
static void test_spiece_model_byte_fallback_matches_sentencepiece(void **state) {
    (void)state;
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_spiece(&t, "tests/fuzz/corpus/spiece/tiny.model", 0), LP_OK);
    json_t *root = json_load_file(UG_REFERENCE, 0, NULL);
    assert_non_null(root);
    json_t *cases = json_object_get(root, "byte_fallback_cases"), *c;
    size_t i;
    assert_true(json_array_size(cases) >= 8);
    json_array_foreach(cases, i, c) {
        json_t *jids = json_object_get(c, "ids");
        int want[64], n_want = (int)json_array_size(jids);
        assert_true(n_want <= 64);
        for (int k = 0; k < n_want; k++) want[k] = (int)json_integer_value(json_array_get(jids, (size_t)k));
        int ids[64], n = 0;
        const char *text = json_string_value(json_object_get(c, "text"));
        assert_int_equal(lp_tokenizer_encode(t, text, strlen(text), true, ids, 64, &n), LP_OK);
        char got[512], exp[512];
        format_ids(got, sizeof got, ids, n);
        format_ids(exp, sizeof exp, want, n_want);
        assert_string_equal(got, exp);
    }
    json_decref(root);
    lp_tokenizer_free(t);
}

/* A directory with spiece.model alone: extra_ids from tokenizer_config.json, else 100 for
 * config.json's model_type t5, else none; tokenizer.json, when there, comes first. */
static void test_unigram_load_dir_reads_spiece_model_as_t5tokenizer(void **state) {
    (void)state;
    char sub[128], model[256], config[256], tok_config[256], json[256];
    snprintf(sub, sizeof sub, "%s/t5", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(lp_path_join(model, sizeof model, sub, "spiece.model"), LP_OK);
    assert_int_equal(lp_path_join(config, sizeof config, sub, "config.json"), LP_OK);
    assert_int_equal(lp_path_join(tok_config, sizeof tok_config, sub, "tokenizer_config.json"), LP_OK);
    assert_int_equal(lp_path_join(json, sizeof json, sub, "tokenizer.json"), LP_OK);
    copy_file(UG_DIR "/spiece.model", model);
    assert_true(lp_tokenizer_dir_has(sub));
    lp_tokenizer *t = NULL;
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    assert_int_equal(lp_tokenizer_vocab_size(t), 320);
    lp_tokenizer_free(t);
    assert_int_equal(lp_file_write(config, "{\"model_type\": \"t5\"}", 20), LP_OK);
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    assert_int_equal(lp_tokenizer_vocab_size(t), 420);
    assert_int_equal(lp_tokenizer_piece_to_id(t, "<extra_id_0>"), 419);
    lp_tokenizer_free(t);
    assert_int_equal(lp_file_write(tok_config, "{\"extra_ids\": 10}", 17), LP_OK);
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    check_t5_specials(t, 330);
    lp_tokenizer_free(t);
    assert_int_equal(lp_file_write(tok_config, "{\"extra_ids\": -1}", 17), LP_OK);
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), "extra_ids"));
    copy_file(UG_DIR "/tokenizer.json", json);
    assert_int_equal(lp_tokenizer_load_dir(&t, sub), LP_OK);
    check_t5_specials(t, 330);
    lp_tokenizer_free(t);
    unlink(model), unlink(config), unlink(tok_config), unlink(json);
    rmdir(sub);
}

/* The texts where tokenizers and sentencepiece part ways give each its own ids: a full-width
 * letter with a combining accent (one grapheme: tokenizers maps the letter and drops the
 * accent, sentencepiece's longest rule composes them) and trailing U+0085 (Strip removes
 * it). The fixture's hf_ids differ from its ids there, so each path is told apart. */
static void test_unigram_paths_differ_where_tokenizers_and_sentencepiece_do(void **state) {
    (void)state;
    lp_tokenizer *hf = NULL, *spm = NULL;
    assert_int_equal(lp_tokenizer_load_json(&hf, UG_DIR "/tokenizer.json"), LP_OK);
    assert_int_equal(lp_tokenizer_load_spiece(&spm, UG_DIR "/spiece.model", 10), LP_OK);
    static const char *const texts[] = {"\xef\xbc\xa1\xcc\x81 x", "end\xc2\x85"};
    for (int k = 0; k < 2; k++) {
        int a[64], b[64], na = 0, nb = 0;
        assert_int_equal(lp_tokenizer_encode(hf, texts[k], strlen(texts[k]), false, a, 64, &na), LP_OK);
        assert_int_equal(lp_tokenizer_encode(spm, texts[k], strlen(texts[k]), false, b, 64, &nb), LP_OK);
        assert_false(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0);
    }
    lp_tokenizer_free(hf);
    lp_tokenizer_free(spm);
}

/* SentencePiece tokenizer.json vs llama2.c tokenizer.bin: not cross-checked, because the
 * two merge rules differ. llama2.c merges any adjacent pair whose concatenation is a
 * token, best score first, leftmost on ties; Hugging Face's converted merges list ranks
 * each (a, b) pair separately, so when two different pairs spell the same token and
 * overlap (e.g. [ab, a, ba] -> "aba" either way) the two pick different merges. */

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/loupe-test-tokenizer-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest gpt2_tests[] = {
        cmocka_unit_test(test_gpt2_files_load_as_byte_level_bpe),
        cmocka_unit_test(test_gpt2_matches_llama_cpp_reference_cases),
        cmocka_unit_test(test_neox_layout_tokenizer_json_gives_gpt2_ids),
        cmocka_unit_test(test_gpt2_decode_inverts_encode_on_reference_cases),
        cmocka_unit_test(test_gpt2_round_trips_invalid_utf8_and_split_characters),
        cmocka_unit_test(test_gpt2_endoftext_is_matched_as_special_token),
        cmocka_unit_test(test_encode_and_decode_report_erange_when_buffer_is_small),
        cmocka_unit_test(test_gpt2_encodes_long_text_and_long_runs),
    };
    const struct CMUnitTest other_tests[] = {
        cmocka_unit_test(test_byte_level_tokenizer_json_encodes_by_merge_rank),
        cmocka_unit_test(test_byte_level_tokenizer_json_uses_its_split_regex),
        cmocka_unit_test(test_byte_level_options_prefix_space_and_ignore_merges),
        cmocka_unit_test(test_spiece_tokenizer_json_merges_by_rank_and_falls_back_to_bytes),
        cmocka_unit_test(test_spiece_tokenizer_json_with_metaspace_encodes_the_same),
        cmocka_unit_test(test_gemma_tokenizer_json_has_no_dummy_prefix),
        cmocka_unit_test(test_split_on_a_kept_string_is_refused),
        cmocka_unit_test(test_load_dir_prefers_tokenizer_json),
        cmocka_unit_test(test_load_dir_reads_vocab_json_and_merges_txt),
        cmocka_unit_test(test_llama2c_stories_tokenizer_loads),
        cmocka_unit_test(test_llama2c_decodes_stories_sample_and_encode_extends_it),
        cmocka_unit_test(test_llama2c_round_trips_unicode_and_unknown_bytes),
        cmocka_unit_test(test_llama2c_rejects_truncated_file),
        cmocka_unit_test(test_missing_files_report_eio_naming_them),
        cmocka_unit_test(test_malformed_tokenizer_json_is_rejected_with_a_message),
        cmocka_unit_test(test_deep_sequences_and_huge_files_are_named),
        cmocka_unit_test(test_malformed_merges_txt_is_rejected_with_line_number),
        cmocka_unit_test(test_vocab_json_fast_path_agrees_with_jansson),
        cmocka_unit_test(test_expanding_normalizer_is_refused_at_the_size_limit),
        cmocka_unit_test(test_wordpiece_vocab_txt_matches_hf_reference),
        cmocka_unit_test(test_wordpiece_tokenizer_json_matches_hf_reference),
        cmocka_unit_test(test_wordpiece_decodes_like_hf_and_shows_pieces),
        cmocka_unit_test(test_vocab_txt_lines_duplicates_and_errors),
        cmocka_unit_test(test_roberta_from_vocab_json_merges_and_config),
        cmocka_unit_test(test_roberta_tokenizer_json_with_roberta_processing),
        cmocka_unit_test(test_unigram_tokenizer_json_matches_sentencepiece),
        cmocka_unit_test(test_unigram_viterbi_ties_unknowns_and_byte_fallback),
        cmocka_unit_test(test_unigram_spiece_model_matches_sentencepiece),
        cmocka_unit_test(test_unigram_load_dir_reads_spiece_model_as_t5tokenizer),
        cmocka_unit_test(test_spiece_model_reader_is_strict),
        cmocka_unit_test(test_spiece_model_byte_fallback_matches_sentencepiece),
        cmocka_unit_test(test_unigram_paths_differ_where_tokenizers_and_sentencepiece_do),
    };
    int failed = cmocka_run_group_tests_name("tokenizer_gpt2", gpt2_tests, gpt2_setup, gpt2_teardown);
    failed += cmocka_run_group_tests_name("tokenizer", other_tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return failed ? 1 : 0;
}
