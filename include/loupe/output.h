/* Output modes: one renderer each, all fed the same result.
 *
 * A command's result is a JSON value in the shape DESIGN.md promises (what --mode json
 * prints) plus, for the tabular modes, a table: {"columns": [COL, ...], "rows": [[cell,
 * ...], ...]} where COL is {"name": str, "token": bool, "fmt": printf-format for reals}.
 * Token columns (and token-named headers) are shown safely in table, box and markdown
 * modes (control characters escaped, spaces made visible), raw in csv/json. jsonl prints
 * each element of an array result on its own line, any other result on one line. When the
 * result is an array of flat objects, the table is derived from it. */
#ifndef LOUPE_OUTPUT_H
#define LOUPE_OUTPUT_H

#include <jansson.h>
#include <stdio.h>

typedef enum { LP_MODE_TABLE, LP_MODE_BOX, LP_MODE_MARKDOWN, LP_MODE_CSV, LP_MODE_JSON, LP_MODE_JSONL } lp_mode;

int lp_mode_from_name(const char *name, lp_mode *out); /* LP_EINVAL, listing the modes */
const char *lp_mode_name(lp_mode mode);

/* Writes value (and table, which may be NULL) to f in mode. Takes no references. */
void lp_output(FILE *f, lp_mode mode, json_t *value, json_t *table);

/* A number for a result: a JSON real, or JSON null when x is NaN or infinite (JSON has
 * neither; jansson's json_real would return NULL and the value would silently go missing).
 * Tabular modes show null as an empty cell. Every real in a command's result goes through here. */
json_t *lp_json_number(double x);

/* Makes every string in v valid UTF-8 in place (token bytes may hold part of a character):
 * invalid sequences become U+FFFD, as Hugging Face's decode shows them. json_dumps refuses
 * a value that is not. */
void lp_json_make_utf8(json_t *v);

/* Table building helpers. */
json_t *lp_table_new(void);
/* is_token for a column whose text (and header) the command has already made safe with
 * lp_token_display: printed as it is. */
#define LP_COL_SAFE 2
/* Appends a column; is_token: 0 text, 1 token, LP_COL_SAFE; fmt may be NULL (reals then
 * print with %.4g). */
void lp_table_column(json_t *table, const char *name, int is_token, const char *fmt);
/* Appends a row; steals the reference to row (a JSON array of scalars). */
void lp_table_row(json_t *table, json_t *row);

/* Writes a token's bytes made safe for a terminal into buf: invalid UTF-8 and control
 * bytes as \xNN (\n, \t, \r by name), spaces as '·'. Returns buf. */
char *lp_token_display(const char *bytes, size_t len, char *buf, size_t cap);
/* The same, but spaces stay spaces: for running text. */
char *lp_text_display(const char *bytes, size_t len, char *buf, size_t cap);
/* Terminal columns a UTF-8 string occupies (wide characters count 2). */
int lp_display_width(const char *s);

#endif
