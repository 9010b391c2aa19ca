/* Reading a dataset: the items (prompts) that `dataset` runs one by one.
 *
 * Formats:
 *   text   one item per line; lines that are empty or only blanks are skipped.
 *   jsonl  one JSON object per line (blank lines skipped); the item's text is the string
 *          field `field` ("text" unless given), and optionally a pair's second text
 *          (pair_field, a string) and a label (label_field: a string, or a number or boolean
 *          kept as its JSON text). A missing pair or label is NULL; a missing text an error.
 *   csv    RFC 4180: the first record is the header that names the fields; fields are
 *          separated by commas, records by LF or CRLF; a field in double quotes may hold
 *          commas, newlines and "" (a quote). Every record has the header's field count.
 * A UTF-8 byte-order mark at the start is ignored, and a line's trailing CR is dropped.
 *
 * Identity: every item has an index, its place among the file's items from 0 (blank lines
 * and the CSV header do not count). --skip, --limit and --sample choose among them but never
 * renumber: the index is what shards, resume and merge go by.
 *
 * Selection, in this order: the first `skip` items are left out, then at most `limit` are
 * kept; of those, `sample` (when > 0) keeps the `sample` items whose hash of (seed, index)
 * is smallest (ties by index), in file order. That choice depends on the file, skip, limit,
 * sample and seed only, not on the order of reading or a shard.
 *
 * Bounds: a record (a line, or a CSV record over several lines) longer than max_record bytes
 * is an error, as is a NUL byte, malformed JSON or CSV, or a text field that is not a
 * string: each names FILE:LINE and the fix. Opening reads the whole file once to check it,
 * count its items and choose the sample (memory: at most `sample` entries), so that a bad
 * line is found before any work. The file must be seekable (a regular file, not a pipe). */
#ifndef LOUPE_DATASET_H
#define LOUPE_DATASET_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { LP_DATASET_TEXT, LP_DATASET_JSONL, LP_DATASET_CSV } lp_dataset_format;

#define LP_DATASET_MAX_RECORD (1 << 20) /* 1 MiB: far beyond any prompt a model's context holds */
#define LP_DATASET_MAX_SAMPLE 10000000  /* --sample's bound: its choice keeps 16 bytes an item */

typedef struct {
    lp_dataset_format format;
    const char *field;        /* jsonl, csv: the text's field; NULL: "text" */
    const char *pair_field;   /* jsonl, csv: the pair's field, or NULL */
    const char *label_field;  /* jsonl, csv: the label's field, or NULL */
    int64_t skip;             /* >= 0 */
    int64_t limit;            /* < 0: no limit */
    int64_t sample;           /* 0: every item; else 1..LP_DATASET_MAX_SAMPLE */
    uint64_t seed;            /* the sample's */
    size_t max_record;        /* 0: LP_DATASET_MAX_RECORD */
} lp_dataset_options;

struct json_t;
typedef struct {
    int64_t index;  /* among the file's items, from 0 */
    int line;       /* the line it starts on, from 1 */
    char *text;     /* NUL-terminated (no NUL inside) */
    char *pair;     /* or NULL */
    char *label;    /* or NULL */
    struct json_t *fields; /* jsonl: the record's object; csv: {column: value} of every column; text: NULL */
} lp_dataset_item;

typedef struct lp_dataset lp_dataset;

/* The format a file name's extension says: .jsonl, .ndjson, .json: jsonl; .csv: csv; else text. */
lp_dataset_format lp_dataset_format_from_path(const char *path);
const char *lp_dataset_format_name(lp_dataset_format f);               /* "text", "jsonl", "csv" */
int lp_dataset_format_from_name(const char *name, lp_dataset_format *out); /* LP_EINVAL naming the three */

/* Opens path and checks every record (see above). Errors: LP_EIO (cannot open, a pipe),
 * LP_EFORMAT (malformed; the message names path:line), LP_ERANGE (a record too long),
 * LP_EINVAL (options that do not fit the format). */
int lp_dataset_open(lp_dataset **out, const char *path, const lp_dataset_options *o);
/* The same over an open seekable stream, name used in messages; the stream stays the caller's. */
int lp_dataset_open_stream(lp_dataset **out, FILE *f, const char *name, const lp_dataset_options *o);
void lp_dataset_close(lp_dataset *d); /* NULL-safe */

int64_t lp_dataset_n_items(const lp_dataset *d);    /* the file's items */
int64_t lp_dataset_n_selected(const lp_dataset *d); /* those skip, limit and sample keep */

/* The next selected item (its strings malloc'd: lp_dataset_item_free), or *eof. */
int lp_dataset_next(lp_dataset *d, lp_dataset_item *item, bool *eof);
void lp_dataset_item_free(lp_dataset_item *item); /* NULL-safe; leaves it zeroed */

/* Generated datasets: a "file" named generate:KIND:N[:SEED] is the corpus generator's
 * (corpus.h), N items from SEED (default 0), written as JSONL:
 *   ioi, ioi-heldout  {"text": prompt cut before the answer, "target": " IO" (the answer),
 *                      "subject": " S", "corrupt": the prompt with S's second mention replaced
 *                      by a third name (the ABC counterpart), "abba": bool, "form": int}
 *   repeat            {"text": the document, "span": the repeated words, "span_pos" and
 *                      "repeat_pos": their two byte offsets in the text}
 * lp_dataset_generated writes it to f; LP_EINVAL naming the form for a bad spec. */
#define LP_DATASET_GENERATED "generate:"
bool lp_dataset_is_generated(const char *path);
int lp_dataset_generated(const char *spec, FILE *f);

/* The item's field name as text, into *out (malloc'd): a string as it is, any other JSON value
 * as its compact JSON text; "text" is the item's text in every format. *out NULL when the
 * item has no such field (or it is null). LP_EFORMAT for a string holding a NUL. */
int lp_dataset_item_field(const lp_dataset_item *item, const char *name, char **out);

#endif
