/* The browser's screen as a grid of cells, with no curses in it: views draw here, tui.c
 * copies the grid to the terminal, and the tests read it back cell by cell.
 *
 * A cell holds one character (UTF-8) and what it means to the eye: a colour named by its
 * role (LP_COLOR_STATUS, LP_COLOR_HEAT(3)) and attributes. A wide character (CJK, most
 * emoji) takes two cells: the first holds it (width 2), the second is its continuation
 * (width 0, empty text), so that columns stay where they are whatever the text. Text put
 * here is made safe on the way in: control characters are escaped and nothing zero-width
 * or invalid reaches the terminal.
 *
 * The colour depth says what the terminal can show: 256 or 8 colours, or 0 (a monochrome
 * terminal, or NO_COLOR set), where heat and diverging scales become shading characters
 * ( ░▒▓█) and attributes. */
#ifndef LOUPE_UI_SCREEN_H
#define LOUPE_UI_SCREEN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define LP_HEAT_LEVELS 8 /* sequential scale: 0 (nothing) .. 7 (all) */
#define LP_DIV_LEVELS 9  /* diverging scale: 0 (most negative), 4 (zero), 8 (most positive) */

/* Colours by meaning; tui.c maps them to what the terminal has. */
typedef enum {
    LP_COLOR_NORMAL,
    LP_COLOR_TITLE,      /* the title bar */
    LP_COLOR_TAB,        /* the current view's name in the title bar */
    LP_COLOR_STATUS,     /* the status bar */
    LP_COLOR_MESSAGE,    /* a command's short result on the message line */
    LP_COLOR_ERROR,      /* an error message */
    LP_COLOR_LABEL,      /* axis labels, column headers */
    LP_COLOR_DIM,        /* what is there but does not matter: masked cells, rules */
    LP_COLOR_SELECTED,   /* the selected token, layer, head or row */
    LP_COLOR_CURSOR,     /* the cell under the cursor */
    LP_COLOR_KEY,        /* key names in the help */
    LP_COLOR_BAR_RESID,  /* activation bars: residual stream, attention, MLP */
    LP_COLOR_BAR_ATTN,
    LP_COLOR_BAR_MLP,
    LP_COLOR_SPECIAL,    /* a template's token in the strip: [CLS] [SEP] <s> </s> [PAD], a decoder's BOS/EOS */
    LP_COLOR_MASK,       /* a mask token ([MASK], <mask>): what a masked LM fills in */
    LP_COLOR_SEGMENT_B,  /* the second text of a sentence pair (drawn underlined too) */
    LP_COLOR_HEAT_0,     /* LP_COLOR_HEAT(k), k < LP_HEAT_LEVELS */
    LP_COLOR_DIV_0 = LP_COLOR_HEAT_0 + LP_HEAT_LEVELS, /* LP_COLOR_DIV(k), k < LP_DIV_LEVELS */
    LP_COLOR_COUNT = LP_COLOR_DIV_0 + LP_DIV_LEVELS
} lp_color;
#define LP_COLOR_HEAT(k) ((lp_color)(LP_COLOR_HEAT_0 + (k)))
#define LP_COLOR_DIV(k) ((lp_color)(LP_COLOR_DIV_0 + (k)))

enum { LP_ATTR_BOLD = 1, LP_ATTR_UNDERLINE = 2, LP_ATTR_REVERSE = 4, LP_ATTR_DIM = 8 };

typedef struct {
    char ch[8];     /* one character, UTF-8, NUL-terminated; "" in a wide character's second cell */
    uint8_t color;  /* lp_color */
    uint8_t attr;   /* LP_ATTR_* */
    uint8_t width;  /* 1, 2 (a wide character), 0 (its continuation) */
} lp_cell;

typedef struct {
    int w, h;
    int depth;            /* 256, 8 or 0 colours */
    lp_cell *cells;       /* (h, w) */
    int cursor_x, cursor_y; /* where the terminal's cursor goes (a line being edited), or -1 */
} lp_screen;

typedef struct {
    int x, y, w, h;
} lp_rect;

lp_screen *lp_screen_new(int w, int h, int depth); /* NULL when out of memory */
void lp_screen_free(lp_screen *s);
int lp_screen_resize(lp_screen *s, int w, int h);  /* clears; LP_ENOMEM */
void lp_screen_clear(lp_screen *s);

/* The cell at (x, y), or NULL outside the screen. */
lp_cell *lp_screen_at(const lp_screen *s, int x, int y);

/* Writes UTF-8 text from (x, y), at most max columns (max < 0: to the edge), and returns
 * the columns written. Control characters and invalid bytes come out escaped (\n, \x01);
 * a wide character that does not fit is replaced by a space. */
int lp_screen_put(lp_screen *s, int x, int y, int max, const char *text, lp_color color, int attr);
int lp_screen_printf(lp_screen *s, int x, int y, int max, lp_color color, int attr, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Text that does not fit in max columns is cut with '…' in the last column. */
int lp_screen_put_clip(lp_screen *s, int x, int y, int max, const char *text, lp_color color, int attr);
/* Right-aligned in w columns (cut on the left with '…' when longer). */
int lp_screen_put_right(lp_screen *s, int x, int y, int w, const char *text, lp_color color, int attr);
/* Fills w cells with one character (a single-column one, e.g. " " or "─"). */
void lp_screen_fill(lp_screen *s, int x, int y, int w, const char *ch, lp_color color, int attr);
/* Sets colour and attributes of w cells, keeping their text. */
void lp_screen_paint(lp_screen *s, int x, int y, int w, lp_color color, int attr);

/* A token's bytes made safe and visible: spaces as '·', newlines as '↵', tabs as '⇥',
 * other controls and bytes that are not UTF-8 as \xNN (lp_token_display). */
char *lp_screen_token_text(const char *bytes, size_t len, char *buf, size_t cap);

/* Scales. level: which of the scale's colours value in [0, 1] (sequential) or [-1, 1]
 * (diverging) falls in; NaN counts as 0. */
int lp_heat_level(double v01);
int lp_div_level(double v11);
/* The shading character of a heat level, for monochrome screens: " ", "░", "▒", "▓", "█". */
const char *lp_shade(int heat_level);
/* w cells of heat: coloured blanks, or shading characters on a monochrome screen. */
void lp_screen_heat(lp_screen *s, int x, int y, int w, int level);
/* w cells of the diverging scale: coloured blanks, or the shade of |level - 4| with the
 * sign in the first cell on a monochrome screen. */
void lp_screen_div(lp_screen *s, int x, int y, int w, int level);
/* Text over a heat (or diverging) cell range, centred, in colours that stay readable on
 * it; on a monochrome screen the text is kept and the rest of the range shaded. */
void lp_screen_heat_text(lp_screen *s, int x, int y, int w, int level, const char *text, int attr);
void lp_screen_div_text(lp_screen *s, int x, int y, int w, int level, const char *text, int attr);
/* A horizontal bar of v in [0, 1] over w cells with eighth blocks (▏▎▍▌▋▊▉█). */
void lp_screen_bar(lp_screen *s, int x, int y, int w, double v01, lp_color color);

/* The next character of UTF-8 text: its length in bytes (0 at the end) and its width in
 * columns (*width: 1 or 2; an invalid byte counts as one byte of width 1). For text that
 * is already safe (lp_screen_token_text), where every character is visible. */
size_t lp_utf8_next(const char *s, int *width);

/* The text of row y from column x, w columns (wide characters once), into buf; for tests
 * and for finding things on screen. */
char *lp_screen_row_text(const lp_screen *s, int x, int y, int w, char *buf, size_t cap);
/* The first (x, y) where text starts on screen, searching rows top to bottom; 0 if found. */
int lp_screen_find(const lp_screen *s, const char *text, int *x, int *y);

#endif
