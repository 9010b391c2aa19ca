/* The colours of the screen model's roles on a real terminal: 256 colours, 8, or none
 * (attributes only). Only tui.c includes this (it needs curses). */
#ifndef LOUPE_UI_TUI_COLORS_H
#define LOUPE_UI_TUI_COLORS_H

#include <curses.h>
#include <stdbool.h>

/* After newterm: picks the depth the terminal has (0 when no_color) and makes its colour
 * pairs. Returns the depth: 256, 8 or 0. */
int tui_colors_init(bool no_color);
/* The curses attributes and pair of a cell: its colour role and its LP_ATTR_* bits. */
void tui_colors_style(int color, int cell_attr, attr_t *attr, short *pair);

#endif
