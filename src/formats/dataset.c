/* Reading datasets (dataset.h): text, JSONL and CSV records from a seekable stream, read
 * twice: once to check every record, count the items and choose the sample; once to hand
 * out the selected items. */
#include "loupe/dataset.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loupe/error.h"
#include "loupe/generate.h"

typedef struct {
    uint64_t hash;
    int64_t index;
} keyed;

struct lp_dataset {
    FILE *f;
    bool own;
    char *name;
    lp_dataset_format format;
    char *field, *pair_field, *label_field;
    int64_t skip, limit, sample;
    uint64_t seed;
    size_t max_record;
    /* the record being read: bytes (csv: its fields, each NUL-terminated, at starts[]) */
    char *buf;
    size_t len, cap;
    size_t *starts;
    int n_fields, fields_cap;
    int line;          /* the next physical line, from 1 */
    int rec_line;      /* where the record read last starts */
    int64_t next_index;
    int col_text, col_pair, col_label, n_cols; /* csv: the header's columns (-1: none) */
    char **header;                             /* csv: the n_cols columns' names */
    int64_t n_items, n_selected;
    /* the sample: the (hash, index) at or below which an item is kept */
    bool sampling;
    keyed threshold;
};

lp_dataset_format lp_dataset_format_from_path(const char *path) {
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) return LP_DATASET_TEXT;
    if (!strcmp(dot, ".jsonl") || !strcmp(dot, ".ndjson") || !strcmp(dot, ".json")) return LP_DATASET_JSONL;
    if (!strcmp(dot, ".csv")) return LP_DATASET_CSV;
    return LP_DATASET_TEXT;
}

static const char *const FORMAT_NAMES[] = {"text", "jsonl", "csv"};

const char *lp_dataset_format_name(lp_dataset_format f) { return FORMAT_NAMES[f]; }

int lp_dataset_format_from_name(const char *name, lp_dataset_format *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, FORMAT_NAMES[i])) return *out = (lp_dataset_format)i, LP_OK;
    return lp_error(LP_EINVAL, "--format is text, jsonl or csv, not '%s'", name);
}

/* ---- records ---- */

static int put_byte(lp_dataset *d, int c) {
    if (d->len >= d->max_record)
        return lp_error(LP_ERANGE, "%s:%d: a record over %zu bytes, the limit for one item (is this a text file? is a "
                        "CSV quote left open?)", d->name, d->rec_line, d->max_record);
    if (d->len + 2 > d->cap) {
        size_t want = d->cap ? d->cap * 2 : 256;
        char *nb = realloc(d->buf, want);
        if (!nb) return lp_error(LP_ENOMEM, "%s:%d: out of memory reading a record", d->name, d->rec_line);
        d->buf = nb, d->cap = want;
    }
    d->buf[d->len++] = (char)c;
    return LP_OK;
}

static int end_field(lp_dataset *d) {
    if (d->n_fields == d->fields_cap) {
        int want = d->fields_cap ? d->fields_cap * 2 : 16;
        size_t *ns = realloc(d->starts, (size_t)want * sizeof *ns);
        if (!ns) return lp_error(LP_ENOMEM, "%s:%d: out of memory reading a record", d->name, d->rec_line);
        d->starts = ns, d->fields_cap = want;
    }
    int rc = put_byte(d, '\0'); /* ends the field; the next one starts after it */
    if (!rc) d->starts[d->n_fields++] = d->len;
    return rc;
}

/* Counts a line break; the count is an int in every message and item. */
static int next_line(lp_dataset *d) {
    if (d->line == INT_MAX) return lp_error(LP_ERANGE, "%s: more than %d lines; split the file", d->name, INT_MAX);
    d->line++;
    return LP_OK;
}

/* A field's text: field i of the record just read. */
static const char *field_at(const lp_dataset *d, int i) { return d->buf + (i ? d->starts[i - 1] : 0); }

static int no_nul(lp_dataset *d) {
    return lp_error(LP_EFORMAT, "%s:%d: a NUL byte: a dataset is text (is this a binary file?)", d->name, d->line);
}

static int read_error(lp_dataset *d) {
    return lp_error(LP_EIO, "%s:%d: cannot read: %s", d->name, d->line, strerror(errno));
}

/* The next line (text, jsonl), without its LF or CRLF, into buf; *eof at the end. */
static int read_line(lp_dataset *d, bool *eof) {
    int c = 0, rc = LP_OK;
    d->len = 0;
    d->rec_line = d->line;
    *eof = false;
    while ((c = getc(d->f)) != EOF && c != '\n') {
        if (c == '\0') return no_nul(d);
        if ((rc = put_byte(d, c))) return rc;
    }
    if (c == EOF && ferror(d->f)) return read_error(d);
    if (c == EOF && d->len == 0) return *eof = true, LP_OK;
    if ((rc = next_line(d))) return rc;
    if (d->len && d->buf[d->len - 1] == '\r') d->len--;
    if ((rc = put_byte(d, '\0'))) return rc;
    d->len--;
    return LP_OK;
}

/* The next CSV record (RFC 4180) into its fields; *blank for an empty line. */
static int read_csv_record(lp_dataset *d, bool *eof, bool *blank) {
    enum { START, PLAIN, QUOTED, AFTER_QUOTE } state = START;
    int rc;
    d->len = 0;
    d->n_fields = 0;
    d->rec_line = d->line;
    *eof = *blank = false;
    bool any = false; /* a byte of this record was read */
    for (;;) {
        int c = getc(d->f);
        if (c == EOF && ferror(d->f)) return read_error(d);
        if (c == '\0') return no_nul(d);
        if (c == EOF && !any) return *eof = true, LP_OK;
        any = true;
        if (c == '\r' && state != QUOTED) {
            int next = getc(d->f);
            if (next == '\n' || next == EOF) c = next == '\n' ? '\n' : EOF;
            else if (next != EOF) ungetc(next, d->f);
        }
        if (state == QUOTED) {
            if (c == EOF)
                return lp_error(LP_EFORMAT, "%s:%d: a quoted field is never closed: end it with \" (write a quote "
                                "inside it as \"\")", d->name, d->rec_line);
            if (c == '"') {
                state = AFTER_QUOTE;
                continue;
            }
            if ((c == '\n' && (rc = next_line(d))) || (rc = put_byte(d, c))) return rc;
            continue;
        }
        if (c == '\n' || c == EOF) {
            if (c == '\n' && (rc = next_line(d))) return rc;
            *blank = state == START && d->n_fields == 0;
            return end_field(d);
        }
        if (c == ',') {
            if ((rc = end_field(d))) return rc;
            state = START;
            continue;
        }
        if (state == AFTER_QUOTE) {
            if (c == '"') { /* "" inside quotes: one quote */
                state = QUOTED;
                if ((rc = put_byte(d, '"'))) return rc;
                continue;
            }
            return lp_error(LP_EFORMAT, "%s:%d: text after a closing quote: quote the whole field, and write a quote "
                            "inside it as \"\"", d->name, d->line);
        }
        if (c == '"') {
            if (state == START) {
                state = QUOTED;
                continue;
            }
            return lp_error(LP_EFORMAT, "%s:%d: a quote inside an unquoted field: quote the whole field (\"...\") and "
                            "write the quote as \"\"", d->name, d->line);
        }
        state = PLAIN;
        if ((rc = put_byte(d, c))) return rc;
    }
}

static bool is_blank_line(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return false;
    return true;
}

/* Skips a UTF-8 byte-order mark at the start of the stream. */
static void skip_bom(FILE *f) {
    int a = getc(f);
    if (a == 0xEF) {
        int b = getc(f), c = b == 0xBB ? getc(f) : EOF;
        if (b == 0xBB && c == 0xBF) return;
    }
    rewind(f);
}

/* ---- items ---- */

static char *dup_n(const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (t) memcpy(t, s, n), t[n] = '\0';
    return t;
}

/* A JSON value as an item's string: a string as it is; a number or boolean as its JSON
 * text (labels); null or missing: NULL. */
static int json_field(lp_dataset *d, json_t *obj, const char *name, bool text_only, char **out) {
    json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (!v || json_is_null(v)) return LP_OK;
    if (json_is_string(v)) {
        if (memchr(json_string_value(v), '\0', json_string_length(v))) return no_nul(d);
        *out = dup_n(json_string_value(v), json_string_length(v));
    } else if (!text_only && (json_is_number(v) || json_is_boolean(v))) {
        *out = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    } else {
        const char *kind = json_is_object(v) ? "an object" : json_is_array(v) ? "an array" : json_is_number(v) ? "a number"
                           : json_is_boolean(v) ? "a boolean" : "not a string";
        return lp_error(LP_EFORMAT, "%s:%d: field \"%s\" is %s, not a string%s", d->name, d->rec_line, name, kind,
                        text_only ? "" : " (labels may be numbers or booleans)");
    }
    return *out ? LP_OK : lp_error(LP_ENOMEM, "out of memory");
}

static int jsonl_item(lp_dataset *d, lp_dataset_item *it) {
    json_error_t e;
    json_t *obj = json_loadb(d->buf, d->len, 0, &e);
    int rc = LP_OK;
    if (!obj)
        return lp_error(LP_EFORMAT, "%s:%d: not JSON (%s, column %d): each line of a JSONL file is one JSON object",
                        d->name, d->rec_line, e.text, e.column);
    if (!json_is_object(obj)) {
        rc = lp_error(LP_EFORMAT, "%s:%d: a JSON %s, not an object: each line of a JSONL file is one object such as "
                      "{\"%s\": \"...\"}", d->name, d->rec_line, json_is_array(obj) ? "array" : "value", d->field);
    } else if (!json_object_get(obj, d->field) || json_is_null(json_object_get(obj, d->field))) {
        char keys[200] = "";
        size_t at = 0;
        const char *k;
        json_t *v;
        json_object_foreach(obj, k, v) {
            if (at < sizeof keys - 1) at += (size_t)snprintf(keys + at, sizeof keys - at, "%s\"%s\"", at ? ", " : "", k);
        }
        rc = lp_error(LP_EFORMAT, "%s:%d: no field \"%s\" (it has %s); give the text's field with --field NAME", d->name,
                      d->rec_line, d->field, at ? keys : "no fields");
    } else if (!(rc = json_field(d, obj, d->field, true, &it->text)) &&
               (!d->pair_field || !(rc = json_field(d, obj, d->pair_field, true, &it->pair))) && d->label_field) {
        rc = json_field(d, obj, d->label_field, false, &it->label);
    }
    if (!rc) it->fields = obj; /* the item's now */
    else json_decref(obj);
    return rc;
}

/* The header's column named name, or -1; the error names the columns there are. */
static int csv_column(lp_dataset *d, const char *name, const char *opt, int *col) {
    *col = -1;
    if (!name) return LP_OK;
    for (int i = 0; i < d->n_fields; i++)
        if (!strcmp(field_at(d, i), name)) return *col = i, LP_OK;
    char cols[200] = "";
    size_t at = 0;
    for (int i = 0; i < d->n_fields && at < sizeof cols - 1; i++)
        at += (size_t)snprintf(cols + at, sizeof cols - at, "%s\"%s\"", i ? ", " : "", field_at(d, i));
    return lp_error(LP_EFORMAT, "%s:%d: the header has no column \"%s\" (it has %s); give it with %s NAME", d->name,
                    d->rec_line, name, cols, opt);
}

static int csv_header(lp_dataset *d) {
    bool eof, blank;
    int rc;
    do {
        if ((rc = read_csv_record(d, &eof, &blank))) return rc;
    } while (!eof && blank);
    if (eof) return LP_OK; /* an empty file: no items */
    for (int i = 0; d->header && i < d->n_cols; i++) free(d->header[i]); /* read again by restart */
    free(d->header);
    d->n_cols = d->n_fields;
    if (!(d->header = calloc((size_t)d->n_cols, sizeof *d->header))) return lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; i < d->n_cols; i++)
        if (!(d->header[i] = strdup(field_at(d, i)))) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = csv_column(d, d->field, "--field", &d->col_text)) ||
        (rc = csv_column(d, d->pair_field, "--pair-field", &d->col_pair)) ||
        (rc = csv_column(d, d->label_field, "--label-field", &d->col_label)))
        return rc;
    return LP_OK;
}

static int csv_item(lp_dataset *d, lp_dataset_item *it) {
    if (d->n_fields != d->n_cols)
        return lp_error(LP_EFORMAT, "%s:%d: %d fields, and the header has %d: quote a field that holds a comma "
                        "(\"a, b\")", d->name, d->rec_line, d->n_fields, d->n_cols);
    const int cols[3] = {d->col_text, d->col_pair, d->col_label};
    char **outs[3] = {&it->text, &it->pair, &it->label};
    for (int k = 0; k < 3; k++) {
        if (cols[k] < 0) continue;
        const char *s = field_at(d, cols[k]);
        if (!(*outs[k] = dup_n(s, strlen(s)))) return lp_error(LP_ENOMEM, "out of memory");
    }
    if (!(it->fields = json_object())) return lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; i < d->n_cols; i++) /* a column named twice: the last one's */
        if (json_object_set_new_nocheck(it->fields, d->header[i], json_string_nocheck(field_at(d, i))))
            return lp_error(LP_ENOMEM, "out of memory");
    return LP_OK;
}

/* The next item of the file, selected or not; *eof at the end. */
static int read_item(lp_dataset *d, lp_dataset_item *it, bool *eof) {
    *it = (lp_dataset_item){0};
    int rc;
    for (;;) {
        bool blank = false;
        if (d->format == LP_DATASET_CSV) {
            if (d->n_cols == 0) return *eof = true, LP_OK; /* no header: an empty file */
            rc = read_csv_record(d, eof, &blank);
        } else {
            rc = read_line(d, eof);
            blank = !rc && !*eof && is_blank_line(d->buf, d->len);
        }
        if (rc || *eof) return rc;
        if (!blank) break;
    }
    it->index = d->next_index++;
    it->line = d->rec_line;
    if (d->format == LP_DATASET_TEXT) rc = (it->text = dup_n(d->buf, d->len)) ? LP_OK : lp_error(LP_ENOMEM, "out of memory");
    else if (d->format == LP_DATASET_JSONL) rc = jsonl_item(d, it);
    else rc = csv_item(d, it);
    if (rc) lp_dataset_item_free(it);
    return rc;
}

void lp_dataset_item_free(lp_dataset_item *it) {
    if (!it) return;
    free(it->text);
    free(it->pair);
    free(it->label);
    json_decref(it->fields);
    *it = (lp_dataset_item){0};
}

int lp_dataset_item_field(const lp_dataset_item *it, const char *name, char **out) {
    *out = NULL;
    json_t *v = it->fields ? json_object_get(it->fields, name) : NULL;
    if (!v && !strcmp(name, "text")) {
        if (!(*out = strdup(it->text ? it->text : ""))) return lp_error(LP_ENOMEM, "out of memory");
        return LP_OK;
    }
    if (!v || json_is_null(v)) return LP_OK;
    if (json_is_string(v)) {
        if (memchr(json_string_value(v), '\0', json_string_length(v)))
            return lp_error(LP_EFORMAT, "item %lld (line %d): field \"%s\" holds a NUL byte", (long long)it->index,
                            it->line, name);
        *out = dup_n(json_string_value(v), json_string_length(v));
    } else {
        *out = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    }
    return *out ? LP_OK : lp_error(LP_ENOMEM, "out of memory");
}

/* ---- selection ---- */

static bool keyed_less(keyed a, keyed b) { return a.hash != b.hash ? a.hash < b.hash : a.index < b.index; }

static keyed sample_key(const lp_dataset *d, int64_t index) {
    return (keyed){lp_mix64(d->seed ^ lp_mix64((uint64_t)index)), index};
}

static bool in_window(const lp_dataset *d, int64_t index) {
    return index >= d->skip && (d->limit < 0 || index - d->skip < d->limit);
}

static bool past_window(const lp_dataset *d, int64_t index) { return d->limit >= 0 && index - d->skip >= d->limit; }

static bool selected(const lp_dataset *d, int64_t index) {
    return in_window(d, index) && (!d->sampling || !keyed_less(d->threshold, sample_key(d, index)));
}

/* A max-heap of the sample's smallest keys so far. */
typedef struct {
    keyed *k;
    int64_t n, cap, max;
} heap;

static void sift_down(heap *h, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && keyed_less(h->k[m], h->k[l])) m = l;
        if (r < h->n && keyed_less(h->k[m], h->k[r])) m = r;
        if (m == i) return;
        keyed t = h->k[i];
        h->k[i] = h->k[m], h->k[m] = t, i = m;
    }
}

static int heap_offer(heap *h, keyed x) {
    if (h->n == h->max) {
        if (keyed_less(x, h->k[0])) h->k[0] = x, sift_down(h, 0);
        return LP_OK;
    }
    if (h->n == h->cap) { /* grows with the items seen: bounded by the file as well as by max */
        int64_t want = h->cap ? h->cap * 2 : 1024;
        if (want > h->max) want = h->max;
        keyed *nk = realloc(h->k, (size_t)want * sizeof *nk);
        if (!nk) return lp_error(LP_ENOMEM, "out of memory choosing the sample");
        h->k = nk, h->cap = want;
    }
    int64_t i = h->n++;
    h->k[i] = x;
    while (i > 0 && keyed_less(h->k[(i - 1) / 2], h->k[i])) {
        keyed t = h->k[i];
        h->k[i] = h->k[(i - 1) / 2], h->k[(i - 1) / 2] = t, i = (i - 1) / 2;
    }
    return LP_OK;
}

/* Back to the first item: the stream's start, the BOM and a CSV header read again. */
static int restart(lp_dataset *d) {
    if (fseek(d->f, 0, SEEK_SET) != 0)
        return lp_error(LP_EIO, "%s: cannot read it twice (%s): give a regular file, not a pipe", d->name, strerror(errno));
    clearerr(d->f);
    skip_bom(d->f);
    d->line = 1;
    d->next_index = 0;
    return d->format == LP_DATASET_CSV ? csv_header(d) : LP_OK;
}

/* The first reading: every record checked (up to the end of --limit's window), the items
 * counted and the sample chosen. */
static int first_pass(lp_dataset *d) {
    heap h = {NULL, 0, 0, d->sample};
    int rc;
    bool eof = false;
    if ((rc = restart(d))) return rc;
    while (!rc) {
        lp_dataset_item it;
        if ((rc = read_item(d, &it, &eof)) || eof) break;
        bool past = past_window(d, it.index);
        if (!past) d->n_items = it.index + 1;
        if (!past && in_window(d, it.index)) {
            d->n_selected++;
            if (d->sample) rc = heap_offer(&h, sample_key(d, it.index));
        }
        lp_dataset_item_free(&it);
        if (past) break;
    }
    if (!rc && d->sample && h.n == d->sample) {
        d->sampling = true;
        d->threshold = h.k[0];
        d->n_selected = d->sample;
    }
    free(h.k);
    return rc ? rc : restart(d);
}

/* ---- opening ---- */

static int check_options(const char *name, const lp_dataset_options *o) {
    bool fields = o->format != LP_DATASET_TEXT;
    if (!fields && (o->field || o->pair_field || o->label_field))
        return lp_error(LP_EINVAL, "%s is read as text (one item a line): --field, --pair-field and --label-field go "
                        "with JSONL or CSV (--format jsonl|csv)", name);
    if (o->skip < 0) return lp_error(LP_EINVAL, "--skip must be 0 or more");
    if (o->sample < 0 || o->sample > LP_DATASET_MAX_SAMPLE)
        return lp_error(LP_EINVAL, "--sample %lld is out of range (1..%d)", (long long)o->sample, LP_DATASET_MAX_SAMPLE);
    const char *f[3] = {o->field, o->pair_field, o->label_field};
    for (int i = 0; i < 3; i++)
        if (f[i] && !*f[i]) return lp_error(LP_EINVAL, "a field's name cannot be empty");
    return LP_OK;
}

int lp_dataset_open_stream(lp_dataset **out, FILE *f, const char *name, const lp_dataset_options *o) {
    *out = NULL;
    int rc = check_options(name, o);
    if (rc) return rc;
    lp_dataset *d = calloc(1, sizeof *d);
    if (!d) return lp_error(LP_ENOMEM, "out of memory");
    d->f = f;
    d->format = o->format;
    d->skip = o->skip, d->limit = o->limit, d->sample = o->sample, d->seed = o->seed;
    d->max_record = o->max_record ? o->max_record : LP_DATASET_MAX_RECORD;
    d->col_text = d->col_pair = d->col_label = -1;
    d->name = strdup(name);
    d->field = strdup(o->field ? o->field : "text");
    d->pair_field = o->pair_field ? strdup(o->pair_field) : NULL;
    d->label_field = o->label_field ? strdup(o->label_field) : NULL;
    if (!d->name || !d->field || (o->pair_field && !d->pair_field) || (o->label_field && !d->label_field))
        rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = first_pass(d);
    if (rc) {
        lp_dataset_close(d);
        return rc;
    }
    *out = d;
    return LP_OK;
}

int lp_dataset_open(lp_dataset **out, const char *path, const lp_dataset_options *o) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lp_error(LP_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return lp_error(LP_EIO, "%s is not a regular file: a dataset is read twice, so give a file (not a pipe or a "
                        "directory)", path);
    }
    int rc = lp_dataset_open_stream(out, f, path, o);
    if (rc) fclose(f);
    else (*out)->own = true;
    return rc;
}

void lp_dataset_close(lp_dataset *d) {
    if (!d) return;
    if (d->own) fclose(d->f);
    free(d->name);
    free(d->field);
    free(d->pair_field);
    free(d->label_field);
    free(d->buf);
    free(d->starts);
    for (int i = 0; d->header && i < d->n_cols; i++) free(d->header[i]);
    free(d->header);
    free(d);
}

int64_t lp_dataset_n_items(const lp_dataset *d) { return d->n_items; }

int64_t lp_dataset_n_selected(const lp_dataset *d) { return d->n_selected; }

int lp_dataset_next(lp_dataset *d, lp_dataset_item *it, bool *eof) {
    for (;;) {
        int rc = read_item(d, it, eof);
        if (rc || *eof) return rc;
        if (past_window(d, it->index)) {
            lp_dataset_item_free(it);
            return *eof = true, LP_OK;
        }
        if (selected(d, it->index)) return LP_OK;
        lp_dataset_item_free(it);
    }
}
