/* Colour roles to terminal colours. The scales are chosen to read on dark and light
 * backgrounds alike; each scale step carries its own foreground (dark on light steps,
 * light on dark ones) so that labels and numbers drawn on it stay readable. Without
 * colours, roles become attributes and the scales are already shading characters. */
#include "tui_colors.h"

#include "screen.h"

typedef struct {
    short fg, bg;  /* -1: the terminal's default */
    attr_t attr;
} style;

static int g_depth;
static attr_t g_attr[LP_COLOR_COUNT];

/* 256 colours. Heat: near-black through violet, blue, teal and green to yellow (a
 * viridis-like ramp); diverging: blue through light grey to red. */
static const short HEAT256[LP_HEAT_LEVELS] = {235, 54, 61, 25, 30, 36, 113, 220};
static const short DIV256[LP_DIV_LEVELS] = {18, 26, 68, 110, 250, 217, 203, 160, 88};
/* 8 colours: the same ideas in what there is, ordered by brightness. */
static const short HEAT8[LP_HEAT_LEVELS] = {-1, COLOR_BLUE, COLOR_MAGENTA, COLOR_RED, COLOR_GREEN, COLOR_CYAN, COLOR_YELLOW, COLOR_WHITE};
static const short DIV8[LP_DIV_LEVELS] = {COLOR_BLUE, COLOR_BLUE, COLOR_CYAN, COLOR_CYAN, -1, COLOR_YELLOW, COLOR_YELLOW, COLOR_RED, COLOR_RED};

/* Light backgrounds get black text, dark ones white. */
static short fg_on(short bg, int depth) {
    if (bg < 0) return -1;
    if (depth == 8) return bg == COLOR_BLUE || bg == COLOR_MAGENTA || bg == COLOR_RED || bg == COLOR_BLACK ? COLOR_WHITE : COLOR_BLACK;
    static const short DARK[] = {235, 54, 61, 25, 30, 36, 18, 26, 160, 88, 24, 238};
    for (unsigned i = 0; i < sizeof DARK / sizeof *DARK; i++)
        if (DARK[i] == bg) return 255;
    return 16;
}

static style style_of(int c, int depth) {
    bool d256 = depth >= 256;
    if (c >= LP_COLOR_HEAT_0 && c < LP_COLOR_HEAT_0 + LP_HEAT_LEVELS) {
        int k = c - LP_COLOR_HEAT_0;
        short bg = d256 ? HEAT256[k] : HEAT8[k];
        return (style){fg_on(bg, depth), bg, 0};
    }
    if (c >= LP_COLOR_DIV_0 && c < LP_COLOR_DIV_0 + LP_DIV_LEVELS) {
        int k = c - LP_COLOR_DIV_0;
        short bg = d256 ? DIV256[k] : DIV8[k];
        return (style){fg_on(bg, depth), bg, 0};
    }
    switch (c) {
    case LP_COLOR_TITLE: return d256 ? (style){255, 24, 0} : (style){COLOR_WHITE, COLOR_BLUE, 0};
    case LP_COLOR_TAB: return d256 ? (style){16, 214, A_BOLD} : (style){COLOR_BLACK, COLOR_YELLOW, A_BOLD};
    case LP_COLOR_STATUS: return d256 ? (style){255, 238, 0} : (style){COLOR_BLACK, COLOR_WHITE, 0};
    case LP_COLOR_MESSAGE: return d256 ? (style){114, -1, 0} : (style){COLOR_GREEN, -1, 0};
    case LP_COLOR_ERROR: return d256 ? (style){203, -1, A_BOLD} : (style){COLOR_RED, -1, A_BOLD};
    case LP_COLOR_LABEL: return d256 ? (style){110, -1, 0} : (style){COLOR_CYAN, -1, 0};
    case LP_COLOR_DIM: return d256 ? (style){243, -1, 0} : (style){-1, -1, A_DIM};
    case LP_COLOR_SELECTED: return d256 ? (style){16, 221, A_BOLD} : (style){COLOR_BLACK, COLOR_YELLOW, A_BOLD};
    case LP_COLOR_CURSOR: return d256 ? (style){16, 51, A_BOLD} : (style){COLOR_BLACK, COLOR_CYAN, A_BOLD};
    case LP_COLOR_KEY: return d256 ? (style){221, -1, A_BOLD} : (style){COLOR_YELLOW, -1, A_BOLD};
    case LP_COLOR_BAR_RESID: return d256 ? (style){75, -1, 0} : (style){COLOR_BLUE, -1, 0};
    case LP_COLOR_BAR_ATTN: return d256 ? (style){209, -1, 0} : (style){COLOR_RED, -1, 0};
    case LP_COLOR_BAR_MLP: return d256 ? (style){114, -1, 0} : (style){COLOR_GREEN, -1, 0};
    case LP_COLOR_SPECIAL: return d256 ? (style){246, -1, 0} : (style){-1, -1, A_DIM};
    case LP_COLOR_MASK: return d256 ? (style){16, 177, A_BOLD} : (style){COLOR_BLACK, COLOR_MAGENTA, A_BOLD};
    case LP_COLOR_SEGMENT_B: return d256 ? (style){117, -1, 0} : (style){COLOR_CYAN, -1, 0};
    default: return (style){-1, -1, 0};
    }
}

/* Without colours: what each role looks like in attributes alone. */
static attr_t mono_attr(int c) {
    switch (c) {
    case LP_COLOR_TITLE: return A_REVERSE;
    case LP_COLOR_TAB: return A_BOLD | A_UNDERLINE;
    case LP_COLOR_STATUS: return A_REVERSE;
    case LP_COLOR_ERROR: return A_BOLD;
    case LP_COLOR_DIM: return A_DIM;
    case LP_COLOR_SELECTED: return A_REVERSE | A_BOLD;
    case LP_COLOR_CURSOR: return A_REVERSE;
    case LP_COLOR_KEY: return A_BOLD;
    case LP_COLOR_SPECIAL: return A_DIM;
    case LP_COLOR_MASK: return A_BOLD;
    default: return 0;
    }
}

int tui_colors_init(bool no_color) {
    /* COLORS and COLOR_PAIRS are known once start_color has run. */
    g_depth = no_color || !has_colors() || start_color() != OK ? 0 : COLORS >= 256 ? 256 : COLORS >= 8 ? 8 : 0;
    if (g_depth && COLOR_PAIRS <= LP_COLOR_COUNT) g_depth = 0;
    if (g_depth) use_default_colors();
    for (int c = 0; c < LP_COLOR_COUNT; c++) {
        if (!g_depth) {
            g_attr[c] = mono_attr(c);
            continue;
        }
        style s = style_of(c, g_depth);
        init_pair((short)(c + 1), s.fg, s.bg);
        g_attr[c] = s.attr;
    }
    return g_depth;
}

void tui_colors_style(int color, int cell_attr, attr_t *attr, short *pair) {
    if (color < 0 || color >= LP_COLOR_COUNT) color = LP_COLOR_NORMAL;
    attr_t a = g_attr[color];
    if (cell_attr & LP_ATTR_BOLD) a |= A_BOLD;
    if (cell_attr & LP_ATTR_UNDERLINE) a |= A_UNDERLINE;
    if (cell_attr & LP_ATTR_REVERSE) a |= A_REVERSE;
    if (cell_attr & LP_ATTR_DIM) a |= A_DIM;
    *attr = a;
    *pair = g_depth ? (short)(color + 1) : 0;
}
