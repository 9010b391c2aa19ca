/* The interactive prompt: GNU readline with a history file, Tab completion read from the
 * command table's usage strings, and Ctrl-C that cancels the running command. */
#ifndef LOUPE_UI_REPL_H
#define LOUPE_UI_REPL_H

#include <stdbool.h>

#include "loupe/commands.h"

/* Reads commands at the "loupe> " prompt until Ctrl-D on an empty line or `quit` (or,
 * with bail, the first command that fails other than by Ctrl-C). Results go to s->out,
 * errors to stderr as "error: MESSAGE". Lines are kept in the history file: $LOUPE_HISTORY,
 * else $XDG_STATE_HOME/loupe/history, else ~/.local/state/loupe/history. stdin must be a
 * terminal. Returns the number of commands that failed. */
int lp_repl_run(lp_session *s, bool bail);

/* The completions of the word being typed, for a line whose cursor word starts at byte
 * `start` and reads `text` so far: a NULL-terminated malloc'd array of malloc'd strings
 * (NULL when there are none). *files is set when the word is a file path (the caller may
 * then list the directory). Exposed for tests; the REPL adds file names itself. */
char **lp_repl_complete_new(const lp_session *s, const char *line, int start, const char *text, bool *files);

#endif
