/* The screen model: a grid of cells that views draw into, measured in terminal columns
 * with utf8proc's character widths (as the output tables are). */
#include "screen.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "loupe/error.h"
#include "loupe/output.h"

lp_screen *lp_screen_new(int w, int h, int depth) {
    lp_screen *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->depth = depth;
    if (lp_screen_resize(s, w, h)) {
        free(s);
        return NULL;
    }
    return s;
}

void lp_screen_free(lp_screen *s) {
    if (!s) return;
    free(s->cells);
    free(s);
}

int lp_screen_resize(lp_screen *s, int w, int h) {
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    lp_cell *c = malloc((size_t)w * (size_t)h * sizeof *c);
    if (!c) return lp_error(LP_ENOMEM, "out of memory");
    free(s->cells);
    s->cells = c;
    s->w = w;
    s->h = h;
    lp_screen_clear(s);
    return LP_OK;
}

void lp_screen_clear(lp_screen *s) {
    static const lp_cell blank = {" ", LP_COLOR_NORMAL, 0, 1};
    size_t n = (size_t)s->w * (size_t)s->h;
    for (size_t i = 0; i < n; i++) s->cells[i] = blank;
    s->cursor_x = s->cursor_y = -1;
}

lp_cell *lp_screen_at(const lp_screen *s, int x, int y) {
    if (x < 0 || y < 0 || x >= s->w || y >= s->h) return NULL;
    return &s->cells[(size_t)y * s->w + x];
}

/* Writes one character of width 1 or 2 at (x, y), mending the wide characters it cuts. */
static void set_cell(lp_screen *s, int x, int y, const char *ch, size_t len, int width, lp_color color, int attr) {
    lp_cell *c = lp_screen_at(s, x, y);
    if (!c) return;
    if (c->width == 0 && x > 0) { /* the second half of a wide character: its first half goes */
        lp_cell *p = c - 1;
        memcpy(p->ch, " ", 2);
        p->width = 1;
    }
    if (c->width == 2 && width == 1 && x + 1 < s->w) {
        lp_cell *n = c + 1;
        memcpy(n->ch, " ", 2);
        n->width = 1;
    }
    if (len >= sizeof c->ch) len = sizeof c->ch - 1;
    memcpy(c->ch, ch, len);
    c->ch[len] = '\0';
    c->width = (uint8_t)width;
    c->color = (uint8_t)color;
    c->attr = (uint8_t)attr;
    if (width == 2) {
        lp_cell *n = c + 1;
        if (n->width == 2 && x + 2 < s->w) { /* it covers the first half of the next wide character */
            memcpy(n[1].ch, " ", 2);
            n[1].width = 1;
        }
        n->ch[0] = '\0';
        n->width = 0;
        n->color = (uint8_t)color;
        n->attr = (uint8_t)attr;
    }
}

/* Lays text out from (x, y) over at most max columns; writes only when s is not NULL.
 * Returns the columns used. */
static int emit(lp_screen *s, int x, int y, int max, const char *text, lp_color color, int attr) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    int used = 0;
    while (*p && used < max) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, -1, &cp);
        char esc[16];
        const char *out = (const char *)p;
        size_t len = n > 0 ? (size_t)n : 1;
        int width = n > 0 ? utf8proc_charwidth(cp) : 0;
        bool visible = n > 0 && cp >= 0x20 && cp != 0x7F && !(cp >= 0x80 && cp < 0xA0) && width > 0;
        if (visible) {
            utf8proc_category_t cat = utf8proc_category(cp);
            visible = cat != UTF8PROC_CATEGORY_CF && cat != UTF8PROC_CATEGORY_MN && cat != UTF8PROC_CATEGORY_ME &&
                      cat != UTF8PROC_CATEGORY_ZL && cat != UTF8PROC_CATEGORY_ZP && cat != UTF8PROC_CATEGORY_CS &&
                      cat != UTF8PROC_CATEGORY_CN;
        }
        if (!visible) {
            /* Escapes are plain ASCII, one column a character. */
            if (n <= 0) snprintf(esc, sizeof esc, "\\x%02X", *p);
            else if (cp == '\n') snprintf(esc, sizeof esc, "\\n");
            else if (cp == '\t') snprintf(esc, sizeof esc, "\\t");
            else if (cp == '\r') snprintf(esc, sizeof esc, "\\r");
            else if (cp < 0x80) snprintf(esc, sizeof esc, "\\x%02X", (unsigned)cp);
            else snprintf(esc, sizeof esc, "\\u%04X", (unsigned)cp);
            for (const char *e = esc; *e && used < max; e++, used++)
                if (s) set_cell(s, x + used, y, e, 1, 1, color, attr);
            p += len;
            continue;
        }
        if (width > 2) width = 2;
        if (used + width > max) {
            /* A wide character at the edge: a blank keeps the columns right. */
            if (s) set_cell(s, x + used, y, " ", 1, 1, color, attr);
            used++;
            break;
        }
        if (s) set_cell(s, x + used, y, out, len, width, color, attr);
        used += width;
        p += len;
    }
    return used;
}

static int clip_max(const lp_screen *s, int x, int max) {
    int room = s->w - x;
    if (room < 0) room = 0;
    return max < 0 || max > room ? room : max;
}

int lp_screen_put(lp_screen *s, int x, int y, int max, const char *text, lp_color color, int attr) {
    if (y < 0 || y >= s->h || x >= s->w || !text) return 0;
    if (x < 0) return 0;
    return emit(s, x, y, clip_max(s, x, max), text, color, attr);
}

int lp_screen_printf(lp_screen *s, int x, int y, int max, lp_color color, int attr, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return lp_screen_put(s, x, y, max, buf, color, attr);
}

int lp_screen_put_clip(lp_screen *s, int x, int y, int max, const char *text, lp_color color, int attr) {
    if (y < 0 || y >= s->h || x < 0 || x >= s->w || !text) return 0;
    max = clip_max(s, x, max);
    if (max <= 0) return 0;
    int need = emit(NULL, 0, 0, 1 << 30, text, color, attr);
    if (need <= max) return emit(s, x, y, max, text, color, attr);
    int used = emit(s, x, y, max - 1, text, color, attr);
    while (used < max - 1) set_cell(s, x + used++, y, " ", 1, 1, color, attr);
    set_cell(s, x + used, y, "\xE2\x80\xA6", 3, 1, color, attr);
    return max;
}

int lp_screen_put_right(lp_screen *s, int x, int y, int w, const char *text, lp_color color, int attr) {
    int need = emit(NULL, 0, 0, 1 << 30, text, color, attr);
    if (need >= w) {
        /* Cut on the left: keep the end, which for numbers and positions is what tells. */
        const char *p = text;
        while (*p && emit(NULL, 0, 0, 1 << 30, p, color, attr) > w - 1) {
            p++;
            while ((*p & 0xC0) == 0x80) p++;
        }
        if (need == w) return emit(s, x, y, w, text, color, attr);
        set_cell(s, x, y, "\xE2\x80\xA6", 3, 1, color, attr);
        int used = 1 + emit(s, x + 1, y, w - 1, p, color, attr);
        while (used < w) set_cell(s, x + used++, y, " ", 1, 1, color, attr);
        return w;
    }
    return emit(s, x + w - need, y, need, text, color, attr) + (w - need);
}

void lp_screen_fill(lp_screen *s, int x, int y, int w, const char *ch, lp_color color, int attr) {
    size_t len = strlen(ch);
    for (int i = 0; i < w; i++)
        if (x + i >= 0) set_cell(s, x + i, y, ch, len, 1, color, attr);
}

void lp_screen_paint(lp_screen *s, int x, int y, int w, lp_color color, int attr) {
    for (int i = 0; i < w; i++) {
        lp_cell *c = lp_screen_at(s, x + i, y);
        if (!c) continue;
        c->color = (uint8_t)color;
        c->attr = (uint8_t)attr;
    }
}

char *lp_screen_token_text(const char *bytes, size_t len, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = '\0';
    size_t i = 0;
    while (i < len && o + 8 < cap) {
        size_t j = i;
        while (j < len && bytes[j] != '\n' && bytes[j] != '\t') j++;
        if (j > i) {
            lp_token_display(bytes + i, j - i, buf + o, cap - o);
            o += strlen(buf + o);
        }
        if (j < len && o + 4 < cap) {
            const char *g = bytes[j] == '\n' ? "\xE2\x86\xB5" : "\xE2\x87\xA5"; /* ↵ ⇥ */
            memcpy(buf + o, g, 3);
            o += 3;
            buf[o] = '\0';
        }
        i = j + 1;
    }
    return buf;
}

/* ---- scales ---- */

int lp_heat_level(double v) {
    if (!(v > 0)) return 0;
    if (v > 1) v = 1;
    return (int)lround(v * (LP_HEAT_LEVELS - 1));
}

int lp_div_level(double v) {
    if (isnan(v)) v = 0;
    if (v > 1) v = 1;
    if (v < -1) v = -1;
    return (LP_DIV_LEVELS / 2) + (int)lround(v * (LP_DIV_LEVELS / 2));
}

static const char *const SHADES[] = {" ", "\xE2\x96\x91", "\xE2\x96\x92", "\xE2\x96\x93", "\xE2\x96\x88"};

const char *lp_shade(int level) {
    if (level < 0) level = 0;
    if (level >= LP_HEAT_LEVELS) level = LP_HEAT_LEVELS - 1;
    return SHADES[(level * 4 + (LP_HEAT_LEVELS - 1) / 2) / (LP_HEAT_LEVELS - 1)];
}

void lp_screen_heat(lp_screen *s, int x, int y, int w, int level) {
    lp_screen_fill(s, x, y, w, s->depth ? " " : lp_shade(level), LP_COLOR_HEAT(level), 0);
}

/* The shade of a diverging level's distance from zero. */
static const char *div_shade(int level) {
    int m = abs(level - LP_DIV_LEVELS / 2);
    return SHADES[m > 4 ? 4 : m];
}

void lp_screen_div(lp_screen *s, int x, int y, int w, int level) {
    if (s->depth) {
        lp_screen_fill(s, x, y, w, " ", LP_COLOR_DIV(level), 0);
        return;
    }
    lp_screen_fill(s, x, y, w, div_shade(level), LP_COLOR_DIV(level), 0);
    if (w > 1 && level != LP_DIV_LEVELS / 2)
        lp_screen_fill(s, x, y, 1, level < LP_DIV_LEVELS / 2 ? "-" : "+", LP_COLOR_DIV(level), 0);
}

static void scale_text(lp_screen *s, int x, int y, int w, lp_color color, const char *shade, const char *text,
                       int attr) {
    int need = emit(NULL, 0, 0, 1 << 30, text, color, 0);
    if (need > w) need = w;
    if (s->depth) {
        lp_screen_fill(s, x, y, w, " ", color, 0);
        lp_screen_put(s, x + (w - need) / 2, y, w, text, color, attr);
    } else {
        /* Monochrome: the text stays plain and the cells around it carry the shade. */
        lp_screen_fill(s, x, y, w - need, shade, color, 0);
        lp_screen_put(s, x + w - need, y, need, text, LP_COLOR_NORMAL, attr);
    }
}

void lp_screen_heat_text(lp_screen *s, int x, int y, int w, int level, const char *text, int attr) {
    scale_text(s, x, y, w, LP_COLOR_HEAT(level), lp_shade(level), text, attr);
}

void lp_screen_div_text(lp_screen *s, int x, int y, int w, int level, const char *text, int attr) {
    scale_text(s, x, y, w, LP_COLOR_DIV(level), div_shade(level), text, attr);
}

void lp_screen_bar(lp_screen *s, int x, int y, int w, double v, lp_color color) {
    static const char *const EIGHTHS[] = {"", "\xE2\x96\x8F", "\xE2\x96\x8E", "\xE2\x96\x8D", "\xE2\x96\x8C",
                                          "\xE2\x96\x8B", "\xE2\x96\x8A", "\xE2\x96\x89"};
    if (!(v > 0)) v = 0;
    if (v > 1) v = 1;
    long eighths = lround(v * w * 8);
    int full = (int)(eighths / 8), part = (int)(eighths % 8);
    lp_screen_fill(s, x, y, full, "\xE2\x96\x88", color, 0);
    if (full < w) {
        lp_screen_fill(s, x + full, y, w - full, " ", color, 0);
        if (part) lp_screen_fill(s, x + full, y, 1, EIGHTHS[part], color, 0);
    }
}

size_t lp_utf8_next(const char *text, int *width) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    if (!*p) {
        *width = 0;
        return 0;
    }
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p, -1, &cp);
    if (n <= 0) {
        *width = 1;
        return 1;
    }
    int w = utf8proc_charwidth(cp);
    *width = w < 1 ? 1 : w > 2 ? 2 : w;
    return (size_t)n;
}

/* ---- reading back ---- */

char *lp_screen_row_text(const lp_screen *s, int x, int y, int w, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < w; i++) {
        const lp_cell *c = lp_screen_at(s, x + i, y);
        if (!c || c->width == 0) continue;
        size_t n = strlen(c->ch);
        if (o + n + 1 > cap) break;
        memcpy(buf + o, c->ch, n);
        o += n;
    }
    buf[o] = '\0';
    return buf;
}

int lp_screen_find(const lp_screen *s, const char *text, int *x, int *y) {
    size_t need = (size_t)s->w * 8 + 1;
    char *row = malloc(need);
    int *col = malloc(need * sizeof *col);
    int found = -1;
    for (int r = 0; row && col && r < s->h && found; r++) {
        size_t o = 0;
        for (int i = 0; i < s->w; i++) {
            const lp_cell *c = &s->cells[(size_t)r * s->w + i];
            if (c->width == 0) continue;
            for (const char *p = c->ch; *p; p++) {
                col[o] = i;
                row[o++] = *p;
            }
        }
        row[o] = '\0';
        const char *hit = strstr(row, text);
        if (hit) {
            if (x) *x = col[hit - row];
            if (y) *y = r;
            found = 0;
        }
    }
    free(row);
    free(col);
    return found;
}
