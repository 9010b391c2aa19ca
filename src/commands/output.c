/* Renderers for the output modes. Tables are measured in terminal columns (utf8proc's
 * character widths) so that wide characters and escapes never break alignment. */
#include "loupe/output.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "loupe/error.h"

static const char *const MODE_NAMES[] = {"table", "box", "markdown", "csv", "json", "jsonl"};

int lp_mode_from_name(const char *name, lp_mode *out) {
    for (int i = 0; i < (int)(sizeof MODE_NAMES / sizeof *MODE_NAMES); i++)
        if (strcmp(name, MODE_NAMES[i]) == 0) {
            *out = (lp_mode)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown output mode '%s'; use table, box, markdown, csv, json or jsonl", name);
}

const char *lp_mode_name(lp_mode mode) { return MODE_NAMES[mode]; }

json_t *lp_json_number(double x) { return isfinite(x) ? json_real(x) : json_null(); }

json_t *lp_table_new(void) { return json_pack("{s:[],s:[]}", "columns", "rows"); }

void lp_table_column(json_t *table, const char *name, int is_token, const char *fmt) {
    json_t *col = json_pack("{s:s,s:b}", "name", name, "token", is_token == 1);
    if (is_token == LP_COL_SAFE) json_object_set_new(col, "safe", json_true());
    if (fmt) json_object_set_new(col, "fmt", json_string(fmt));
    json_array_append_new(json_object_get(table, "columns"), col);
}

void lp_table_row(json_t *table, json_t *row) { json_array_append_new(json_object_get(table, "rows"), row); }

/* Escapes what a terminal would mangle; spaces become '·' when visible_spaces. */
static char *escape(const char *bytes, size_t len, char *buf, size_t cap, int visible_spaces) {
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)bytes;
    for (size_t i = 0; i < len && o + 8 < cap;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (n <= 0) { /* not valid UTF-8: show the byte */
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", s[i]);
            i++;
            continue;
        }
        if (cp == ' ' && visible_spaces) o += (size_t)snprintf(buf + o, cap - o, "\xC2\xB7");
        else if (cp == '\n') o += (size_t)snprintf(buf + o, cap - o, "\\n");
        else if (cp == '\t') o += (size_t)snprintf(buf + o, cap - o, "\\t");
        else if (cp == '\r') o += (size_t)snprintf(buf + o, cap - o, "\\r");
        else if (cp == '\\') o += (size_t)snprintf(buf + o, cap - o, "\\\\");
        else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0))
            o += (size_t)snprintf(buf + o, cap - o, "\\u%04X", (unsigned)cp);
        else {
            utf8proc_category_t cat = utf8proc_category(cp);
            if (cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP ||
                cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME) {
                /* invisible or combining: would vanish or join its neighbour */
                o += (size_t)snprintf(buf + o, cap - o, "\\u%04X", (unsigned)cp);
            } else {
                memcpy(buf + o, s + i, (size_t)n);
                o += (size_t)n;
            }
        }
        i += (size_t)n;
    }
    buf[o < cap ? o : cap - 1] = '\0';
    return buf;
}

char *lp_token_display(const char *bytes, size_t len, char *buf, size_t cap) {
    return escape(bytes, len, buf, cap, 1);
}

char *lp_text_display(const char *bytes, size_t len, char *buf, size_t cap) {
    return escape(bytes, len, buf, cap, 0);
}

int lp_display_width(const char *s) {
    int w = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    while (*p) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, -1, &cp);
        if (n <= 0) {
            w++;
            p++;
            continue;
        }
        w += utf8proc_charwidth(cp);
        p += n;
    }
    return w;
}

/* ---- building the table from a value ---- */

/* An array of objects becomes a table with the first object's keys as columns (nested
 * values shown as compact JSON); an object becomes a two-column field/value table. */
static json_t *derive_table(json_t *value) {
    json_t *t = lp_table_new();
    if (json_is_array(value) && json_array_size(value) > 0 && json_is_object(json_array_get(value, 0))) {
        const char *k;
        json_t *v;
        json_object_foreach(json_array_get(value, 0), k, v)
            lp_table_column(t, k, strcmp(k, "token") == 0 || strcmp(k, "text") == 0, NULL);
        size_t i;
        json_t *obj;
        json_array_foreach(value, i, obj) {
            json_t *row = json_array();
            json_object_foreach(json_array_get(value, 0), k, v) {
                json_t *cell = json_object_get(obj, k);
                json_array_append(row, cell ? cell : json_null());
            }
            lp_table_row(t, row);
        }
    } else if (json_is_object(value)) {
        lp_table_column(t, "field", 0, NULL);
        lp_table_column(t, "value", 0, NULL);
        /* a field's value has nothing in common with the next field's: no shared decimals */
        json_object_set_new(json_array_get(json_object_get(t, "columns"), 1), "each", json_true());
        const char *k;
        json_t *v;
        json_object_foreach(value, k, v) {
            json_t *cell = v;
            if (json_is_array(v) || json_is_object(v)) {
                char *s = json_dumps(v, JSON_COMPACT);
                cell = json_string(s ? s : "");
                free(s);
            } else {
                json_incref(v);
            }
            lp_table_row(t, json_pack("[s,o]", k, cell));
        }
    } else if (json_is_array(value)) {
        lp_table_column(t, "value", 0, NULL);
        size_t i;
        json_t *v;
        json_array_foreach(value, i, v) lp_table_row(t, json_pack("[O]", v));
    } else if (!json_is_null(value)) {
        lp_table_column(t, "value", 0, NULL);
        lp_table_row(t, json_pack("[O]", value));
    }
    return t;
}

/* The text of a cell in a tabular mode; `safe` escapes tokens for the terminal. */
static char *cell_text(json_t *cell, json_t *col, int safe) {
    char buf[4096];
    if (json_is_string(cell)) {
        const char *s = json_string_value(cell);
        if (!safe || json_is_true(json_object_get(col, "safe"))) return strdup(s);
        size_t len = json_string_length(cell), cap = len * 6 + 16; /* worst case: every byte as \xNN */
        char *out = malloc(cap);
        if (!out) return strdup("");
        if (json_is_true(json_object_get(col, "token"))) return lp_token_display(s, len, out, cap);
        return lp_text_display(s, len, out, cap);
    }
    if (json_is_integer(cell)) snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(cell));
    else if (json_is_real(cell)) {
        const char *fmt = json_string_value(json_object_get(col, "shown"));
        double x = json_real_value(cell);
        if (!isfinite(x)) snprintf(buf, sizeof buf, "%s", isnan(x) ? "nan" : x > 0 ? "inf" : "-inf");
        else if (!safe) snprintf(buf, sizeof buf, "%.9g", x); /* csv is for machines: float32 round-trips */
        else {
            snprintf(buf, sizeof buf, fmt ? fmt : "%.4g", x);
            /* "-0.00": a negative that rounds to zero is zero */
            if (buf[0] == '-' && strspn(buf + 1, "0.") == strlen(buf + 1)) memmove(buf, buf + 1, strlen(buf));
        }
    } else if (json_is_true(cell)) snprintf(buf, sizeof buf, "true");
    else if (json_is_false(cell)) snprintf(buf, sizeof buf, "false");
    else if (json_is_null(cell)) buf[0] = '\0';
    else {
        char *s = json_dumps(cell, JSON_COMPACT);
        return s ? s : strdup("");
    }
    return strdup(buf);
}

/* A '|' inside a markdown cell would end it. */
static char *escape_pipes(char *s) {
    size_t n = 0;
    for (char *p = s; *p; p++) n += *p == '|';
    if (!n) return s;
    char *out = malloc(strlen(s) + n + 1), *o = out;
    if (!out) return s;
    for (char *p = s; *p; p++) {
        if (*p == '|') *o++ = '\\';
        *o++ = *p;
    }
    *o = '\0';
    free(s);
    return out;
}

static void pad(FILE *f, int n) {
    for (int i = 0; i < n; i++) fputc(' ', f);
}

static void repeat(FILE *f, const char *s, int n) {
    for (int i = 0; i < n; i++) fputs(s, f);
}

static void csv_field(FILE *f, const char *s) {
    if (strpbrk(s, ",\"\r\n") == NULL && s[0] != ' ' && (s[0] == '\0' || s[strlen(s) - 1] != ' ')) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Significant digits a column's largest value shows. */
#define COLUMN_DIGITS 4

/* The printf format of a column of reals in the table modes: one number of decimals for the
 * whole column, so that the points line up, chosen so that its largest |value| shows
 * COLUMN_DIGITS significant digits (0.9688 0.0287 0.0003; 35930; 17.17 9.365 -> 17.17 9.37);
 * scientific for the whole column when that would need more than 6 decimals or the values
 * reach 1e9. A command's fixed "%.Nf" is kept; "%.Ng" (or none) asks for this. */
static void column_format(json_t *col, json_t *rows, size_t c, char *fmt, size_t cap) {
    const char *given = json_string_value(json_object_get(col, "fmt"));
    if (json_is_true(json_object_get(col, "each"))) { /* unrelated values, one per row: each shown alone */
        snprintf(fmt, cap, "%%.6g");
        return;
    }
    if (given && !strchr(given, 'g')) {
        snprintf(fmt, cap, "%s", given);
        return;
    }
    double mx = 0;
    size_t r;
    json_t *row;
    json_array_foreach(rows, r, row) {
        json_t *cell = json_array_get(row, c);
        double x = json_is_real(cell) ? fabs(json_real_value(cell)) : 0;
        if (isfinite(x) && x > mx) mx = x;
    }
    int d = mx > 0 ? COLUMN_DIGITS - 1 - (int)floor(log10(mx)) : 0;
    /* rounding may carry into one more digit (9.9996 -> 10.000): recount from the rounded value */
    if (mx > 0 && d >= 0 && d <= 6 && fabs(round(mx * pow(10, d))) >= pow(10, COLUMN_DIGITS)) d--;
    if (mx >= 1e9 || d > 6) snprintf(fmt, cap, "%%.%de", COLUMN_DIGITS - 2);
    else snprintf(fmt, cap, "%%.%df", d < 0 ? 0 : d);
}

static void render_table(FILE *f, lp_mode mode, json_t *t) {
    json_t *cols = json_object_get(t, "columns"), *rows = json_object_get(t, "rows");
    size_t nc = json_array_size(cols), nr = json_array_size(rows);
    if (nc == 0) return;
    for (size_t c = 0; c < nc && mode != LP_MODE_CSV; c++) {
        char fmt[16];
        column_format(json_array_get(cols, c), rows, c, fmt, sizeof fmt);
        json_object_set_new(json_array_get(cols, c), "shown", json_string(fmt));
    }
    int safe = mode != LP_MODE_CSV;
    char **head = calloc(nc, sizeof *head), **cells = calloc(nc * (nr ? nr : 1), sizeof *cells);
    int *width = calloc(nc, sizeof *width), *right = calloc(nc, sizeof *right);
    for (size_t c = 0; c < nc; c++) {
        json_t *col = json_array_get(cols, c);
        json_t *name = json_object_get(col, "name");
        head[c] = safe ? cell_text(name, col, 1) : strdup(json_string_value(name));
        width[c] = lp_display_width(head[c]);
        right[c] = nr > 0;
        for (size_t r = 0; r < nr; r++) {
            json_t *cell = json_array_get(json_array_get(rows, r), c);
            cells[r * nc + c] = cell_text(cell, col, safe);
            if (mode == LP_MODE_MARKDOWN) cells[r * nc + c] = escape_pipes(cells[r * nc + c]);
            int w = lp_display_width(cells[r * nc + c]);
            if (w > width[c]) width[c] = w;
            if (!json_is_number(cell) && !json_is_null(cell)) right[c] = 0;
        }
    }
    if (mode == LP_MODE_CSV) {
        for (size_t c = 0; c < nc; c++) {
            if (c) fputc(',', f);
            csv_field(f, head[c]);
        }
        fputs("\r\n", f);
        for (size_t r = 0; r < nr; r++) {
            for (size_t c = 0; c < nc; c++) {
                if (c) fputc(',', f);
                csv_field(f, cells[r * nc + c]);
            }
            fputs("\r\n", f);
        }
    } else {
        /* table: "a  b" with a dashed rule; box: unicode frame; markdown: pipes. */
        const char *left = mode == LP_MODE_BOX ? "\xE2\x94\x82 " : mode == LP_MODE_MARKDOWN ? "| " : "";
        const char *sep = mode == LP_MODE_BOX ? " \xE2\x94\x82 " : mode == LP_MODE_MARKDOWN ? " | " : "  ";
        const char *end = mode == LP_MODE_BOX ? " \xE2\x94\x82" : mode == LP_MODE_MARKDOWN ? " |" : "";
        if (mode == LP_MODE_BOX) {
            fputs("\xE2\x94\x8C", f);
            for (size_t c = 0; c < nc; c++) {
                repeat(f, "\xE2\x94\x80", width[c] + 2);
                fputs(c + 1 < nc ? "\xE2\x94\xAC" : "\xE2\x94\x90\n", f);
            }
        }
        fputs(left, f);
        for (size_t c = 0; c < nc; c++) {
            int w = lp_display_width(head[c]);
            if (right[c]) pad(f, width[c] - w);
            fputs(head[c], f);
            if (!right[c] && (c + 1 < nc || *end)) pad(f, width[c] - w);
            fputs(c + 1 < nc ? sep : end, f);
        }
        fputc('\n', f);
        if (mode == LP_MODE_BOX) {
            fputs("\xE2\x94\x9C", f);
            for (size_t c = 0; c < nc; c++) {
                repeat(f, "\xE2\x94\x80", width[c] + 2);
                fputs(c + 1 < nc ? "\xE2\x94\xBC" : "\xE2\x94\xA4\n", f);
            }
        } else if (mode == LP_MODE_MARKDOWN) {
            fputc('|', f);
            for (size_t c = 0; c < nc; c++) {
                repeat(f, "-", width[c] + 1);
                fputs(right[c] ? ":|" : "-|", f);
            }
            fputc('\n', f);
        } else {
            for (size_t c = 0; c < nc; c++) {
                repeat(f, "-", width[c]);
                fputs(c + 1 < nc ? "  " : "\n", f);
            }
        }
        for (size_t r = 0; r < nr; r++) {
            fputs(left, f);
            for (size_t c = 0; c < nc; c++) {
                const char *s = cells[r * nc + c];
                int w = lp_display_width(s);
                /* numbers line up on the right, also in a column that mixes them with text */
                bool num = right[c] || json_is_number(json_array_get(json_array_get(rows, r), c));
                if (num) pad(f, width[c] - w);
                fputs(s, f);
                if (!num && (c + 1 < nc || *end)) pad(f, width[c] - w);
                fputs(c + 1 < nc ? sep : end, f);
            }
            fputc('\n', f);
        }
        if (mode == LP_MODE_BOX) {
            fputs("\xE2\x94\x94", f);
            for (size_t c = 0; c < nc; c++) {
                repeat(f, "\xE2\x94\x80", width[c] + 2);
                fputs(c + 1 < nc ? "\xE2\x94\xB4" : "\xE2\x94\x98\n", f);
            }
        }
    }
    for (size_t c = 0; c < nc; c++) free(head[c]);
    for (size_t i = 0; i < nc * nr; i++) free(cells[i]);
    free(head);
    free(cells);
    free(width);
    free(right);
}

/* float32 values round-trip through 9 significant digits. */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(9))

void lp_json_make_utf8(json_t *v) {
    if (json_is_string(v)) {
        const unsigned char *s = (const unsigned char *)json_string_value(v);
        size_t len = json_string_length(v), i = 0;
        utf8proc_int32_t cp;
        while (i < len) {
            utf8proc_ssize_t n = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
            if (n <= 0) break;
            i += (size_t)n;
        }
        if (i == len) return;
        char *fixed = malloc(len * 3 + 1);
        if (!fixed) return;
        size_t o = 0;
        for (i = 0; i < len;) {
            utf8proc_ssize_t n = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
            if (n <= 0) {
                memcpy(fixed + o, "\xEF\xBF\xBD", 3);
                o += 3;
                i++;
            } else {
                memcpy(fixed + o, s + i, (size_t)n);
                o += (size_t)n;
                i += (size_t)n;
            }
        }
        json_string_setn_nocheck(v, fixed, o);
        free(fixed);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) lp_json_make_utf8(e);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e) lp_json_make_utf8(e);
    }
}

static void dump_line(FILE *f, json_t *v) {
    lp_json_make_utf8(v);
    json_dumpf(v, f, JSON_FLAGS | JSON_ENCODE_ANY);
    fputc('\n', f);
}

void lp_output(FILE *f, lp_mode mode, json_t *value, json_t *table) {
    if (mode == LP_MODE_JSON) {
        dump_line(f, value ? value : json_null());
    } else if (mode == LP_MODE_JSONL) {
        if (json_is_array(value)) {
            size_t i;
            json_t *v;
            json_array_foreach(value, i, v) dump_line(f, v);
        } else if (value) {
            dump_line(f, value);
        }
    } else {
        json_t *t = table ? json_incref(table) : derive_table(value);
        render_table(f, mode, t);
        json_decref(t);
    }
    fflush(f);
}
