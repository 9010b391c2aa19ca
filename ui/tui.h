/* The full-screen browser on a terminal (ncurses). This header has no curses in it: the
 * command line (main.c) and the `tui` command call it. */
#ifndef LOUPE_UI_TUI_H
#define LOUPE_UI_TUI_H

#include "loupe/commands.h"

/* Opens the browser on s's model and current run until q (or `quit` on its `:` line,
 * which also sets s->quit). Commands typed at `:` run on s. Needs a terminal on stdin and
 * stdout; refuses (LP_EINVAL) without one, or when a browser is already open. *failures
 * (may be NULL) counts the commands that failed, as lp_repl_run's result does. */
int lp_tui_run(lp_session *s, int *failures);

#endif
