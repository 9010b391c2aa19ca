/* The `:` line's editor: a UTF-8 buffer with a cursor, Emacs-style keys (as readline's
 * defaults), the REPL's history file, and the REPL's completion (read from the command
 * table). It draws into the screen model, not the terminal. */
#include "tui_line.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loupe/output.h"
#include "repl.h"

#define HISTORY_MAX 1000

struct lp_line {
    char *buf;
    size_t len, cap, cur;   /* bytes; cur is on a character boundary */
    char prompt[64];
    bool with_history;
    char **hist;            /* oldest first */
    int n_hist, cap_hist;
    int hist_pos;           /* n_hist: the line being typed */
    char *scratch;          /* the line being typed while walking the history */
    char *path;
    int path_state;         /* 0 not yet written, 1 ready, -1 cannot be written */
    char hint[512];
};

static bool reserve(lp_line *l, size_t need) {
    if (need + 1 <= l->cap) return true;
    size_t cap = l->cap ? l->cap : 64;
    while (cap < need + 1) cap *= 2;
    char *b = realloc(l->buf, cap);
    if (!b) return false;
    l->buf = b;
    l->cap = cap;
    return true;
}

static void set_text(lp_line *l, const char *text) {
    size_t n = strlen(text);
    if (!reserve(l, n)) return;
    memcpy(l->buf, text, n + 1);
    l->len = l->cur = n;
}

static void hist_push(lp_line *l, const char *line) {
    if (l->n_hist == HISTORY_MAX) {
        free(l->hist[0]);
        memmove(l->hist, l->hist + 1, (size_t)(l->n_hist - 1) * sizeof *l->hist);
        l->n_hist--;
    }
    if (l->n_hist == l->cap_hist) {
        int cap = l->cap_hist ? 2 * l->cap_hist : 64;
        char **h = realloc(l->hist, (size_t)cap * sizeof *h);
        if (!h) return;
        l->hist = h;
        l->cap_hist = cap;
    }
    char *d = strdup(line);
    if (d) l->hist[l->n_hist++] = d;
}

lp_line *lp_line_new(const char *history_path) {
    lp_line *l = calloc(1, sizeof *l);
    if (!l || !reserve(l, 64)) {
        free(l);
        return NULL;
    }
    l->buf[0] = '\0';
    if (history_path) {
        l->path = strdup(history_path);
        FILE *f = fopen(history_path, "r");
        if (f) {
            char *line = NULL;
            size_t cap = 0;
            ssize_t n;
            while ((n = getline(&line, &cap, f)) >= 0) {
                while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
                if (n > 0) hist_push(l, line);
            }
            free(line);
            fclose(f);
            l->path_state = 1;
        }
    }
    l->hist_pos = l->n_hist;
    return l;
}

void lp_line_free(lp_line *l) {
    if (!l) return;
    for (int i = 0; i < l->n_hist; i++) free(l->hist[i]);
    free(l->hist);
    free(l->scratch);
    free(l->path);
    free(l->buf);
    free(l);
}

void lp_line_start(lp_line *l, const char *prompt, bool with_history) {
    snprintf(l->prompt, sizeof l->prompt, "%s", prompt);
    l->with_history = with_history;
    l->len = l->cur = 0;
    l->buf[0] = '\0';
    l->hist_pos = l->n_hist;
    free(l->scratch);
    l->scratch = NULL;
    l->hint[0] = '\0';
}

const char *lp_line_text(const lp_line *l) { return l->buf; }
const char *lp_line_hint(const lp_line *l) { return l->hint; }
int lp_line_history_count(const lp_line *l) { return l->n_hist; }

void lp_line_insert(lp_line *l, const char *text) {
    size_t n = strlen(text);
    if (!n || !reserve(l, l->len + n)) return;
    memmove(l->buf + l->cur + n, l->buf + l->cur, l->len - l->cur + 1);
    memcpy(l->buf + l->cur, text, n);
    l->len += n;
    l->cur += n;
}

static void delete_range(lp_line *l, size_t from, size_t to) {
    memmove(l->buf + from, l->buf + to, l->len - to + 1);
    l->len -= to - from;
    l->cur = from;
}

static size_t prev_char(const lp_line *l, size_t i) {
    if (i == 0) return 0;
    i--;
    while (i > 0 && ((unsigned char)l->buf[i] & 0xC0) == 0x80) i--;
    return i;
}

static size_t next_char(const lp_line *l, size_t i) {
    if (i >= l->len) return l->len;
    i++;
    while (i < l->len && ((unsigned char)l->buf[i] & 0xC0) == 0x80) i++;
    return i;
}

static size_t word_left(const lp_line *l, size_t i) {
    while (i > 0 && l->buf[i - 1] == ' ') i--;
    while (i > 0 && l->buf[i - 1] != ' ') i--;
    return i;
}

static size_t word_right(const lp_line *l, size_t i) {
    while (i < l->len && l->buf[i] == ' ') i++;
    while (i < l->len && l->buf[i] != ' ') i++;
    return i;
}

static void history_move(lp_line *l, int step) {
    int to = l->hist_pos + step;
    if (!l->with_history || to < 0 || to > l->n_hist) return;
    if (l->hist_pos == l->n_hist) {
        free(l->scratch);
        l->scratch = strdup(l->buf);
    }
    l->hist_pos = to;
    set_text(l, to == l->n_hist ? (l->scratch ? l->scratch : "") : l->hist[to]);
}

/* Tab: the REPL's completion for the word before the cursor. One candidate replaces the
 * word; several give their common prefix and are listed in the hint. */
static void complete(lp_line *l, const lp_session *s) {
    l->hint[0] = '\0';
    if (!s) return;
    size_t start = l->cur;
    while (start > 0 && l->buf[start - 1] != ' ') start--;
    char *text = strndup(l->buf + start, l->cur - start);
    if (!text) return;
    bool files = false;
    char **c = lp_repl_complete_new(s, l->buf, (int)start, text, &files);
    if (c && c[0]) {
        size_t common = strlen(c[0]);
        int n = 0;
        for (; c[n]; n++) {
            size_t k = 0;
            while (k < common && c[n][k] == c[0][k]) k++;
            common = k;
        }
        char *ins = strndup(c[0], common);
        if (ins && common >= strlen(text)) {
            delete_range(l, start, l->cur);
            lp_line_insert(l, ins);
            bool dir = common > 0 && ins[common - 1] == '/';
            if (n == 1 && !(files && dir)) lp_line_insert(l, " ");
        }
        free(ins);
        if (n > 1) {
            size_t o = 0;
            for (int i = 0; i < n && o + 2 < sizeof l->hint; i++)
                o += (size_t)snprintf(l->hint + o, sizeof l->hint - o, "%s%s", i ? "  " : "", c[i]);
        }
    }
    for (int i = 0; c && c[i]; i++) free(c[i]);
    free(c);
    free(text);
}

bool lp_line_act(lp_line *l, lp_action a, const lp_session *s) {
    if (a != LP_DO_EDIT_COMPLETE) l->hint[0] = '\0';
    switch (a) {
    case LP_DO_EDIT_LEFT: l->cur = prev_char(l, l->cur); break;
    case LP_DO_EDIT_RIGHT: l->cur = next_char(l, l->cur); break;
    case LP_DO_EDIT_WORD_LEFT: l->cur = word_left(l, l->cur); break;
    case LP_DO_EDIT_WORD_RIGHT: l->cur = word_right(l, l->cur); break;
    case LP_DO_EDIT_HOME: l->cur = 0; break;
    case LP_DO_EDIT_END: l->cur = l->len; break;
    case LP_DO_EDIT_BACKSPACE: delete_range(l, prev_char(l, l->cur), l->cur); break;
    case LP_DO_EDIT_DELETE: delete_range(l, l->cur, next_char(l, l->cur)); break;
    case LP_DO_EDIT_KILL_END: delete_range(l, l->cur, l->len); break;
    case LP_DO_EDIT_KILL_START: delete_range(l, 0, l->cur); break;
    case LP_DO_EDIT_KILL_WORD: delete_range(l, word_left(l, l->cur), l->cur); break;
    case LP_DO_EDIT_HISTORY_PREV: history_move(l, -1); break;
    case LP_DO_EDIT_HISTORY_NEXT: history_move(l, +1); break;
    case LP_DO_EDIT_COMPLETE: complete(l, s); break;
    default: return false;
    }
    return true;
}

/* mkdir -p for the file's directory, as the REPL does for the same file. */
static bool make_parent(const char *path) {
    char *d = strdup(path);
    if (!d) return false;
    bool ok = true;
    for (char *p = d + 1; *p && ok; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(d, 0700) != 0 && errno != EEXIST) ok = false;
            *p = '/';
        }
    free(d);
    return ok;
}

void lp_line_remember(lp_line *l) {
    const char *p = l->buf;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p || !l->with_history) return;
    if (l->n_hist > 0 && strcmp(l->hist[l->n_hist - 1], l->buf) == 0) return;
    hist_push(l, l->buf);
    l->hist_pos = l->n_hist;
    if (!l->path || l->path_state < 0) return;
    if (l->path_state == 0) l->path_state = make_parent(l->path) ? 1 : -1;
    FILE *f = l->path_state > 0 ? fopen(l->path, "a") : NULL;
    if (!f) {
        l->path_state = -1; /* said nowhere: a browser has no stderr to say it on */
        return;
    }
    fprintf(f, "%s\n", l->buf);
    fclose(f);
}

void lp_line_draw(const lp_line *l, lp_screen *scr, int x, int y, int w) {
    int pw = lp_screen_put(scr, x, y, w, l->prompt, LP_COLOR_LABEL, LP_ATTR_BOLD);
    int room = w - pw - 1;
    if (room < 1) return;
    /* Scroll: drop characters from the left until the text before the cursor fits. */
    size_t from = 0;
    char *before = strndup(l->buf, l->cur);
    if (!before) return;
    while (from < l->cur && lp_display_width(before + from) > room - (from > 0)) from = next_char(l, from);
    int cx = x + pw;
    if (from > 0) cx += lp_screen_put(scr, cx, y, 1, "\xE2\x80\xA6", LP_COLOR_DIM, 0);
    int before_w = lp_display_width(before + from);
    lp_screen_put(scr, cx, y, x + w - cx, l->buf + from, LP_COLOR_NORMAL, 0);
    scr->cursor_x = cx + before_w;
    scr->cursor_y = y;
    free(before);
}
