/* Reading datasets (dataset.h): the three formats, item identity, skip/limit/sample, and
 * hostile input refused with FILE:LINE and never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>

#include "helpers.h"
#include "loupe/dataset.h"
#include "loupe/error.h"

/* Reads every selected item of text (as the format says) into out (texts joined by '|',
 * each as index:text[/pair][#label]); returns the status of opening or reading. */
static int read_all(const char *text, size_t len, const lp_dataset_options *o, char *out, size_t cap) {
    FILE *f = fmemopen((void *)text, len, "rb");
    assert_non_null(f);
    lp_dataset *d;
    int rc = lp_dataset_open_stream(&d, f, "in", o);
    size_t at = 0;
    out[0] = '\0';
    while (!rc) {
        lp_dataset_item it;
        bool eof;
        if ((rc = lp_dataset_next(d, &it, &eof)) || eof) break;
        at += (size_t)snprintf(out + at, cap - at, "%s%lld:%s%s%s%s%s", at ? "|" : "", (long long)it.index, it.text,
                               it.pair ? "/" : "", it.pair ? it.pair : "", it.label ? "#" : "", it.label ? it.label : "");
        lp_dataset_item_free(&it);
    }
    lp_dataset_close(d);
    fclose(f);
    return rc;
}

static int read_str(const char *text, const lp_dataset_options *o, char *out, size_t cap) {
    return read_all(text, strlen(text), o, out, cap);
}

static void text_lines_are_items_and_blank_lines_do_not_count(void **state) {
    (void)state;
    char out[512];
    lp_dataset_options o = {.format = LP_DATASET_TEXT, .limit = -1};
    assert_int_equal(read_str("\xEF\xBB\xBFone\r\n\n  \ntwo words\nthree", &o, out, sizeof out), LP_OK);
    assert_string_equal(out, "0:one|1:two words|2:three");
    assert_int_equal(read_str("", &o, out, sizeof out), LP_OK);
    assert_string_equal(out, "");
}

static void jsonl_reads_text_pair_and_label_fields(void **state) {
    (void)state;
    char out[512];
    lp_dataset_options o = {.format = LP_DATASET_JSONL, .limit = -1, .pair_field = "b", .label_field = "y"};
    const char *in = "{\"text\": \"a \\\"q\\\"\", \"b\": \"p\", \"y\": 1}\n\n{\"text\": \"c\", \"y\": \"neg\"}\n"
                     "{\"text\": \"d\", \"y\": true, \"b\": null}\n";
    assert_int_equal(read_str(in, &o, out, sizeof out), LP_OK);
    assert_string_equal(out, "0:a \"q\"/p#1|1:c#neg|2:d#true");
    o.field = "b", o.pair_field = NULL;
    assert_int_equal(read_str(in, &o, out, sizeof out), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), "in:3: no field \"b\""));
    assert_non_null(strstr(lp_errmsg(), "--field"));
}

static void csv_follows_rfc_4180(void **state) {
    (void)state;
    char out[512];
    lp_dataset_options o = {.format = LP_DATASET_CSV, .limit = -1, .label_field = "label"};
    const char *in = "id,text,label\r\n1,plain,pos\r\n2,\"a, b\",neg\n\n3,\"two\nlines \"\"q\"\"\",\n4,,x";
    assert_int_equal(read_str(in, &o, out, sizeof out), LP_OK);
    assert_string_equal(out, "0:plain#pos|1:a, b#neg|2:two\nlines \"q\"#|3:#x");
}

static void skip_limit_keep_file_indices(void **state) {
    (void)state;
    char out[512];
    lp_dataset_options o = {.format = LP_DATASET_TEXT, .skip = 2, .limit = 3};
    assert_int_equal(read_str("a\nb\n\nc\nd\ne\nf\n", &o, out, sizeof out), LP_OK);
    assert_string_equal(out, "2:c|3:d|4:e");
}

static void sample_is_seeded_and_bounded(void **state) {
    (void)state;
    char text[4000], a[4000], b[4000], c[4000];
    size_t at = 0;
    for (int i = 0; i < 200; i++) at += (size_t)snprintf(text + at, sizeof text - at, "item %d\n", i);
    lp_dataset_options o = {.format = LP_DATASET_TEXT, .limit = -1, .sample = 10, .seed = 7};
    assert_int_equal(read_str(text, &o, a, sizeof a), LP_OK);
    assert_int_equal(read_str(text, &o, b, sizeof b), LP_OK);
    assert_string_equal(a, b);
    int n = 1;
    for (const char *p = a; *p; p++) n += *p == '|';
    assert_int_equal(n, 10);
    o.seed = 8;
    assert_int_equal(read_str(text, &o, c, sizeof c), LP_OK);
    assert_string_not_equal(a, c);
    /* Fewer items than the sample: every one. */
    o.sample = 500;
    assert_int_equal(read_str("x\ny\n", &o, c, sizeof c), LP_OK);
    assert_string_equal(c, "0:x|1:y");
    o.sample = LP_DATASET_MAX_SAMPLE + 1;
    assert_int_equal(read_str("x\n", &o, c, sizeof c), LP_EINVAL);
}

static void hostile_input_is_refused_with_its_line(void **state) {
    (void)state;
    char out[512];
    struct {
        lp_dataset_format format;
        const char *in;
        size_t len;
        int rc;
        const char *msg;
    } cases[] = {
        {LP_DATASET_TEXT, "ok\nbad\0x\n", 9, LP_EFORMAT, "in:2: a NUL byte"},
        {LP_DATASET_JSONL, "{\"text\": \"a\"}\n{\"text\": 3}\n", 0, LP_EFORMAT, "in:2: field \"text\" is a number"},
        {LP_DATASET_JSONL, "[1, 2]\n", 0, LP_EFORMAT, "in:1: a JSON array, not an object"},
        {LP_DATASET_JSONL, "{\"text\": \"a\"\n", 0, LP_EFORMAT, "in:1: not JSON"},
        {LP_DATASET_JSONL, "{\"text\": \"a\\u0000b\"}\n", 0, LP_EFORMAT, "in:1: not JSON"},
        {LP_DATASET_CSV, "text\n\"open\n\nstill", 0, LP_EFORMAT, "in:2: a quoted field is never closed"},
        {LP_DATASET_CSV, "text\n\"a\"b\n", 0, LP_EFORMAT, "in:2: text after a closing quote"},
        {LP_DATASET_CSV, "text\na\"b\n", 0, LP_EFORMAT, "in:2: a quote inside an unquoted field"},
        {LP_DATASET_CSV, "a,text\n1,2\n3\n", 0, LP_EFORMAT, "in:3: 1 fields, and the header has 2"},
        {LP_DATASET_CSV, "a,b\n1,2\n", 0, LP_EFORMAT, "in:1: the header has no column \"text\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lp_dataset_options o = {.format = cases[i].format, .limit = -1};
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
        int rc = read_all(cases[i].in, len, &o, out, sizeof out);
        if (rc != cases[i].rc || !strstr(lp_errmsg(), cases[i].msg))
            fail_msg("case %zu: got %d '%s', want %d '%s'", i, rc, lp_errmsg(), cases[i].rc, cases[i].msg);
    }
    /* A record over the bound: refused, whatever the format, without reading on. */
    size_t big = 5000;
    char *line = malloc(big + 2);
    memset(line, 'x', big);
    line[big] = '\n', line[big + 1] = '\0';
    lp_dataset_options o = {.format = LP_DATASET_TEXT, .limit = -1, .max_record = 1000};
    assert_int_equal(read_all(line, big + 1, &o, out, sizeof out), LP_ERANGE);
    assert_non_null(strstr(lp_errmsg(), "in:1: a record over 1000 bytes"));
    o.format = LP_DATASET_CSV;
    line[0] = '"';
    assert_int_equal(read_all(line, big + 1, &o, out, sizeof out), LP_ERANGE);
    free(line);
    /* Options that do not fit the format. */
    o = (lp_dataset_options){.format = LP_DATASET_TEXT, .limit = -1, .field = "t"};
    assert_int_equal(read_str("a\n", &o, out, sizeof out), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "--format jsonl|csv"));
}

static void format_follows_the_extension(void **state) {
    (void)state;
    assert_int_equal(lp_dataset_format_from_path("a/b.jsonl"), LP_DATASET_JSONL);
    assert_int_equal(lp_dataset_format_from_path("b.csv"), LP_DATASET_CSV);
    assert_int_equal(lp_dataset_format_from_path("x.csv/b"), LP_DATASET_TEXT);
    assert_int_equal(lp_dataset_format_from_path("prompts.txt"), LP_DATASET_TEXT);
    lp_dataset_format f;
    assert_int_equal(lp_dataset_format_from_name("tsv", &f), LP_EINVAL);
    assert_int_equal(lp_dataset_format_from_name("csv", &f), LP_OK);
    assert_int_equal(f, LP_DATASET_CSV);
}

static void a_pipe_or_directory_is_refused(void **state) {
    (void)state;
    lp_dataset *d;
    lp_dataset_options o = {.format = LP_DATASET_TEXT, .limit = -1};
    assert_int_equal(lp_dataset_open(&d, "/tmp", &o), LP_EIO);
    assert_non_null(strstr(lp_errmsg(), "not a regular file"));
    assert_int_equal(lp_dataset_open(&d, "/nonexistent/x.txt", &o), LP_EIO);
    assert_null(d);
}


/* An item's fields as --each's {NAME} reads them: strings as they are, other JSON values as
 * their text, CSV columns by the header, {text} in every format, nothing for a missing one. */
static char *field_of(const char *data, lp_dataset_format fmt, const char *name) {
    FILE *f = fmemopen((void *)data, strlen(data), "rb");
    lp_dataset_options o = {.format = fmt, .limit = -1};
    lp_dataset *d;
    assert_int_equal(lp_dataset_open_stream(&d, f, "x", &o), LP_OK);
    lp_dataset_item it;
    bool eof;
    assert_int_equal(lp_dataset_next(d, &it, &eof), LP_OK);
    assert_false(eof);
    char *v;
    assert_int_equal(lp_dataset_item_field(&it, name, &v), LP_OK);
    lp_dataset_item_free(&it);
    lp_dataset_close(d);
    fclose(f);
    return v;
}

static void fields_are_read_by_name(void **state) {
    (void)state;
    const char *j = "{\"text\": \"a \\\"b\\\"\\nc\", \"io\": \" Mary\", \"n\": 3.5, \"ok\": true, \"z\": null, \"o\": {\"k\": [1]}}\n";
    struct {
        const char *name, *want;
    } cases[] = {{"text", "a \"b\"\nc"}, {"io", " Mary"}, {"n", "3.5"}, {"ok", "true"}, {"z", NULL}, {"o", "{\"k\":[1]}"},
                 {"missing", NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *v = field_of(j, LP_DATASET_JSONL, cases[i].name);
        if (cases[i].want) assert_string_equal(v, cases[i].want);
        else assert_null(v);
        free(v);
    }
    char *v = field_of("text,corrupt\n\"x, y\",\"When \"\"Tom\"\"\"\n", LP_DATASET_CSV, "corrupt");
    assert_string_equal(v, "When \"Tom\"");
    free(v);
    v = field_of("text,corrupt\nx,y\n", LP_DATASET_CSV, "text");
    assert_string_equal(v, "x");
    free(v);
    v = field_of("one line\n", LP_DATASET_TEXT, "text");
    assert_string_equal(v, "one line");
    free(v);
    v = field_of("one line\n", LP_DATASET_TEXT, "label");
    assert_null(v);
}

/* generate:KIND:N[:SEED]: N JSONL items, the same bytes for the same spec. */
static void generated_datasets_are_deterministic(void **state) {
    (void)state;
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    FILE *f = open_memstream(&a, &la), *g = open_memstream(&b, &lb);
    assert_int_equal(lp_dataset_generated("generate:ioi:5:9", f), LP_OK);
    assert_int_equal(lp_dataset_generated("generate:ioi:5:9", g), LP_OK);
    fclose(f), fclose(g);
    assert_true(la == lb && la > 0 && memcmp(a, b, la) == 0);
    int lines = 0;
    for (size_t i = 0; i < la; i++) lines += a[i] == '\n';
    assert_int_equal(lines, 5);
    json_t *first = json_loadb(a, strchr(a, '\n') - a, 0, NULL);
    const char *text = json_string_value(json_object_get(first, "text")),
               *corrupt = json_string_value(json_object_get(first, "corrupt")),
               *s = json_string_value(json_object_get(first, "subject"));
    assert_non_null(text), assert_non_null(corrupt), assert_non_null(s);
    /* the corrupt prompt: the text with the subject's last mention (S2) replaced, all else the same */
    const char *last = NULL;
    for (const char *p = strstr(text, s); p; p = strstr(p + 1, s)) last = p;
    assert_non_null(last);
    assert_true(last != strstr(text, s)); /* S is mentioned twice */
    size_t pre = (size_t)(last - text), post = strlen(last + strlen(s));
    assert_memory_equal(text, corrupt, pre);
    assert_string_equal(corrupt + strlen(corrupt) - post, last + strlen(s));
    assert_true(strlen(corrupt) > pre + post + 1 && corrupt[pre] == ' ');
    assert_null(strstr(corrupt + pre, s) == corrupt + pre ? corrupt : NULL); /* not S again */
    json_decref(first);
    free(a), free(b);
    const char *bad[] = {"generate:ioi", "generate:ioi:0", "generate:ioi:100001", "generate:ioi:3x", "generate:ioi:3:",
                         "generate:ioi:3:-1", "generate:nope:3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *h = open_memstream(&a, &la);
        assert_int_equal(lp_dataset_generated(bad[i], h), LP_EINVAL);
        fclose(h);
        free(a);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_lines_are_items_and_blank_lines_do_not_count),
        cmocka_unit_test(jsonl_reads_text_pair_and_label_fields),
        cmocka_unit_test(csv_follows_rfc_4180),
        cmocka_unit_test(skip_limit_keep_file_indices),
        cmocka_unit_test(sample_is_seeded_and_bounded),
        cmocka_unit_test(hostile_input_is_refused_with_its_line),
        cmocka_unit_test(format_follows_the_extension),
        cmocka_unit_test(a_pipe_or_directory_is_refused),
        cmocka_unit_test(fields_are_read_by_name),
        cmocka_unit_test(generated_datasets_are_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
