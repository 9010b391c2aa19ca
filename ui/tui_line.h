/* The browser's command line (`:` and the note prompt): a one-line editor with history
 * and Tab completion, drawn into the screen model. No curses here. Its history is the
 * REPL's: the same file (read when the browser opens, appended to line by line), so the
 * prompt and the `:` line remember the same commands. */
#ifndef LOUPE_UI_TUI_LINE_H
#define LOUPE_UI_TUI_LINE_H

#include <stdbool.h>
#include <stddef.h>

#include "keymap.h"
#include "loupe/commands.h"
#include "screen.h"

typedef struct lp_line lp_line;

/* history_path: the file to read and append to, or NULL for none. NULL when out of memory. */
lp_line *lp_line_new(const char *history_path);
void lp_line_free(lp_line *l);

/* Starts editing an empty line after prompt; with_history: Up/Down walk the history. */
void lp_line_start(lp_line *l, const char *prompt, bool with_history);
/* Inserts UTF-8 text at the cursor. */
void lp_line_insert(lp_line *l, const char *text);
/* An editing action (LP_DO_EDIT_*); s is for completion (may be NULL). Returns false for
 * actions it does not know. */
bool lp_line_act(lp_line *l, lp_action a, const lp_session *s);
/* The text so far (NUL-terminated, borrowed). */
const char *lp_line_text(const lp_line *l);
/* Adds the current text to the history (and its file) unless blank or a repeat. */
void lp_line_remember(lp_line *l);
/* What the last Tab offered when it could not choose ("" when nothing). */
const char *lp_line_hint(const lp_line *l);
/* Draws prompt and text in w columns from (x, y), scrolled to keep the cursor in view,
 * and puts the screen's cursor there. */
void lp_line_draw(const lp_line *l, lp_screen *scr, int x, int y, int w);
/* History entries (oldest first), for tests. */
int lp_line_history_count(const lp_line *l);

#endif
