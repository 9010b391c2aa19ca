/* The interactive prompt: GNU readline with a history file, Tab completion read from the
 * command table's usage strings, and Ctrl-C that cancels the running command. */
#ifndef LOUPE_UI_REPL_H
#define LOUPE_UI_REPL_H

#include <stdbool.h>

#include "loupe/commands.h"

/* Reads commands at the "loupe> " prompt until Ctrl-D on an empty line or `quit` (or,
 * with bail, the first command that fails other than by Ctrl-C). Results go to s->out,
 * errors to stderr as "error: MESSAGE". Each line is appended to the history file at once:
 * $LOUPE_HISTORY (set but empty: no file), else $XDG_STATE_HOME/loupe/history, else
 * ~/.local/state/loupe/history. stdin must be a terminal. Returns how many commands failed
 * (a cancelled one included). */
int lp_repl_run(lp_session *s, bool bail);

/* The history file's path (malloc'd), or NULL when there is to be none: the browser's `:`
 * line reads and appends to the same file. */
char *lp_repl_history_path_new(void);

/* What Tab offers for the word that starts at byte `start` of line and reads `text` so
 * far, from the command table's usage strings: a NULL-terminated malloc'd array of
 * malloc'd strings, or NULL when there is nothing. *files says the candidates are file
 * names (to be quoted, directories ending in '/'). */
char **lp_repl_complete_new(const lp_session *s, const char *line, int start, const char *text, bool *files);

#endif
