/* The browser's keys: one table binds each key, in a scope (everywhere, one view, the
 * command line, the help), to an action with a description. Dispatch looks keys up in it
 * and the help screen is written from it, so the two cannot disagree. No curses here:
 * tui.c turns curses' key codes into these. */
#ifndef LOUPE_UI_KEYMAP_H
#define LOUPE_UI_KEYMAP_H

#include <stdbool.h>

/* Keys: Unicode code points for characters (control keys are their codes: Ctrl-A is 1,
 * Esc 27), and these above Unicode for the rest. */
enum {
    LP_KEY_TAB = 9,
    LP_KEY_ENTER = 13,
    LP_KEY_ESC = 27,
    LP_KEY_UP = 0x110000,
    LP_KEY_DOWN,
    LP_KEY_LEFT,
    LP_KEY_RIGHT,
    LP_KEY_SHIFT_LEFT,
    LP_KEY_SHIFT_RIGHT,
    LP_KEY_HOME,
    LP_KEY_END,
    LP_KEY_PAGE_UP,
    LP_KEY_PAGE_DOWN,
    LP_KEY_BACKTAB,
    LP_KEY_BACKSPACE,
    LP_KEY_DELETE,
    LP_KEY_RESIZE,
};
#define LP_KEY_CTRL(c) ((c) & 0x1F)

typedef enum {
    LP_DO_NOTHING,
    /* everywhere */
    LP_DO_TOKEN_PREV,
    LP_DO_TOKEN_NEXT,
    LP_DO_TOKEN_FIRST,
    LP_DO_TOKEN_LAST,
    LP_DO_LAYER_PREV,
    LP_DO_LAYER_NEXT,
    LP_DO_HEAD_PREV,
    LP_DO_HEAD_NEXT,
    LP_DO_VIEW_NEXT,
    LP_DO_VIEW_PREV,
    LP_DO_VIEW,          /* arg: the view's index */
    LP_DO_COMMAND,
    LP_DO_SEARCH,
    LP_DO_SEARCH_NEXT,
    LP_DO_SEARCH_PREV,
    LP_DO_NOTE,
    LP_DO_OUTPUT,
    LP_DO_OUTPUT_UP,
    LP_DO_OUTPUT_DOWN,
    LP_DO_HELP,
    LP_DO_REDRAW,
    LP_DO_DISMISS,
    LP_DO_QUIT,
    LP_DO_SIDE,          /* an encoder-decoder's run: the other line of the token strip */
    /* in a view (each view says what they mean there) */
    LP_DO_UP,
    LP_DO_DOWN,
    LP_DO_LEFT,
    LP_DO_RIGHT,
    LP_DO_ENTER,
    LP_DO_METRIC_NEXT,
    LP_DO_METRIC_PREV,
    LP_DO_FOLLOW,
    LP_DO_TARGET_NEXT,
    LP_DO_ATTN_KIND,     /* an encoder-decoder's run: the next attention (self, cross, the encoder's) */
    LP_DO_UNIT_KIND,     /* the examples view: a neuron's examples, or the head's */
    LP_DO_DATASET_NEXT,  /* the examples view: the next dataset */
    LP_DO_FEATURE_UNIT,  /* the examples view: the feature selected in the features view */
    LP_DO_LOAD,          /* the features view: the command line with `sae load ` typed */
    /* the command line */
    LP_DO_EDIT_LEFT,
    LP_DO_EDIT_RIGHT,
    LP_DO_EDIT_WORD_LEFT,
    LP_DO_EDIT_WORD_RIGHT,
    LP_DO_EDIT_HOME,
    LP_DO_EDIT_END,
    LP_DO_EDIT_BACKSPACE,
    LP_DO_EDIT_DELETE,
    LP_DO_EDIT_KILL_END,
    LP_DO_EDIT_KILL_START,
    LP_DO_EDIT_KILL_WORD,
    LP_DO_EDIT_HISTORY_PREV,
    LP_DO_EDIT_HISTORY_NEXT,
    LP_DO_EDIT_COMPLETE,
    LP_DO_EDIT_ACCEPT,
    LP_DO_EDIT_CANCEL,
    /* the help */
    LP_DO_HELP_UP,
    LP_DO_HELP_DOWN,
    LP_DO_HELP_PAGE_UP,
    LP_DO_HELP_PAGE_DOWN,
    LP_DO_HELP_CLOSE,
} lp_action;

/* Where a binding holds: a view's index (LP_VIEW_*), or one of these. */
enum { LP_SCOPE_ALL = -1, LP_SCOPE_LINE = -2, LP_SCOPE_HELP = -3 };

typedef struct {
    int scope;
    int key;
    const char *key_name; /* as the help shows it: "←", "h", "Tab", "C-a" */
    lp_action action;
    int arg;
    const char *help;     /* what it does; bindings with the same scope and help are listed together */
} lp_binding;

const lp_binding *lp_keymap(int *n);
/* The binding of key in scope (not falling back to LP_SCOPE_ALL), or NULL. */
const lp_binding *lp_keymap_find(int scope, int key);

/* The help screen, generated from the table: a heading line per scope ("Everywhere",
 * "1 Attention", ...) then one line per action, its keys joined ("← h"). */
typedef struct {
    const char *heading; /* non-NULL on a heading line */
    char keys[48];
    const char *help;
} lp_help_line;
/* Fills up to cap lines; returns how many there are in all. */
int lp_keymap_help(lp_help_line *out, int cap);

#endif
