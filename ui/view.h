/* The browser without the terminal: its state (the session, the selected token, layer and
 * head, the views), the frame around the views (title bar, token strip, status bar,
 * message line, output pane, help), and key dispatch through the keymap. It draws into an
 * lp_screen, so that every view can be rendered and checked off-screen; tui.c is the only
 * part that knows curses.
 *
 * A view is an ops table over its own state: open, update (bring cached data up to date
 * with the run; may be slow), draw, act (its keys' actions), subject (what a note written
 * there is about), close. */
#ifndef LOUPE_UI_VIEW_H
#define LOUPE_UI_VIEW_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "keymap.h"
#include "loupe/commands.h"
#include "screen.h"

enum {
    LP_VIEW_ATTENTION,
    LP_VIEW_HEADS,
    LP_VIEW_ACTIVATIONS,
    LP_VIEW_ATTRIBUTIONS,
    LP_VIEW_LENS,
    LP_VIEW_FINDINGS,
    LP_VIEW_PATCHING,
    LP_VIEW_MODEL,
    LP_VIEW_EXAMPLES,
    LP_VIEW_FEATURES,
    LP_VIEW_COUNT
};
/* A view's key (1 to 9, then 0 for the tenth), as the title bar and the help show it. */
int lp_view_key(int view);

/* The smallest terminal the browser draws in; below it, a message says so. */
#define LP_BROWSER_MIN_W 50
#define LP_BROWSER_MIN_H 12

typedef struct lp_browser lp_browser;
typedef struct lp_line lp_line;

typedef struct {
    const char *name;  /* short: "attention" (title bar tabs, help headings) */
    const char *title; /* "Attention" */
    void *(*open)(lp_browser *b);
    void (*close)(void *st);
    /* Brings what the view caches up to date with b->gen; may take long and return
     * LP_ECANCEL when cancelled. NULL: the view caches nothing slow. */
    int (*update)(void *st, lp_browser *b);
    /* Draws into area (within the frame) and may write a line about the cursor into
     * b->status. Never slow: the bench holds each view to one 60 Hz frame. */
    void (*draw)(void *st, lp_browser *b, lp_screen *scr, lp_rect area);
    /* An action bound in this view's scope; returns true when it changed something. */
    bool (*act)(void *st, lp_browser *b, lp_action a);
    /* What a note written in this view is about (-1: not that). */
    void (*subject)(void *st, const lp_browser *b, int *layer, int *head, int *pos);
    /* On an encoder-decoder's run, the stack ("enc", "dec") and attention kind ("self",
     * "cross") of the subject when the view knows it (*stack NULL: it does not). NULL: the
     * attention shown (view.c's note_place). */
    void (*place)(void *st, const lp_browser *b, const char **stack, const char **kind);
} lp_view_ops;

extern const lp_view_ops lp_view_attention, lp_view_heads, lp_view_activations, lp_view_attributions, lp_view_lens,
    lp_view_findings, lp_view_patching, lp_view_model, lp_view_examples, lp_view_features;
const lp_view_ops *lp_view_get(int index);

/* State set after a command finishes successfully (a jump from the findings view). */
typedef struct {
    bool set;
    int view, layer, head, pos;
    int attn; /* an encoder-decoder's attention to show (lp_attn_kind; pos is then its queries'), or -1 */
} lp_jump;

typedef enum { LP_LINE_NONE, LP_LINE_COMMAND, LP_LINE_NOTE, LP_LINE_SEARCH } lp_line_mode;

/* The attention the attention and model views show: a one-stack run has only its own
 * (LP_ATTN_DEC_SELF, whatever the stack); an encoder-decoder's run all three. */
typedef enum { LP_ATTN_DEC_SELF, LP_ATTN_CROSS, LP_ATTN_ENC_SELF, LP_ATTN_COUNT } lp_attn_kind;
/* The token strip's lines: the run's own tokens, and an encoder-decoder's source. */
enum { LP_SIDE_TARGET, LP_SIDE_SOURCE };

struct lp_browser {
    lp_session *s;
    int pos, layer, head;   /* the selected token, and the current layer and head */
    int feature_pick;       /* a feature for the features view to select (`:feature ID`), -1 none */
    char feature_sae[160];  /* its dictionary's name, "" for the last loaded */
    int after_pick;         /* feature_pick to set when the pending command succeeds (with after), -1 none */
    char after_sae[160];
    int neuron;             /* an MLP neuron of the current layer chosen for the examples view, or -1: its unit is the head */
    int feature;            /* a dictionary's feature chosen for the examples view (before the neuron), or -1 */
    int feature_dict;       /* that feature's dictionary: its index among the session's */
    int view;               /* LP_VIEW_* on screen */
    unsigned gen;           /* bumped after every command: views refresh what they cached */
    void *state[LP_VIEW_COUNT];
    unsigned updated[LP_VIEW_COUNT]; /* gen + 1 at each view's last update; 0 never */
    bool update_failed[LP_VIEW_COUNT];

    /* The current run's tokens, made safe for the screen once per gen. */
    int T;
    char **tok;   /* (T) */
    int *tok_w;   /* (T) display widths */
    unsigned char *tok_role; /* (T) lp_special of each token, LP_SPECIAL_COUNT for a word */
    unsigned char *tok_seg;  /* (T) 1 for the second text of a sentence pair, else 0 */
    unsigned tok_gen;
    /* An encoder-decoder's run (S > 0): the source's tokens, the strip's first line, and the
     * selected one; which line the token keys move (LP_SIDE_*); the attention shown, and
     * the decoder's last, for coming back to it from the source. */
    int S;
    char **src_tok;          /* (S) */
    int *src_tok_w;          /* (S) */
    unsigned char *src_role; /* (S) */
    int src_pos, side;
    lp_attn_kind attn, dec_attn;

    char status[512];   /* the view's line about its cursor */
    char message[1024]; /* the last command's result or error */
    bool message_error;
    char *output;       /* what the last command printed */
    int output_lines, output_scroll;
    bool output_shown;
    bool help;
    int help_scroll;
    lp_line *line;      /* the command line and its history */
    lp_line_mode line_mode;
    char search[256];   /* the last text searched for in the tokens (/), "" before any */
    char *pending;      /* a command line for the caller to run (lp_browser_exec) */
    lp_jump after;      /* applied when the pending command succeeds */
    bool quit;
    int page;           /* rows of the last view area: a page for PgUp/PgDn */
    /* A running command's live progress (train's bar), written by the worker and read by
     * the spinner while the command runs: the one field shared then, under its lock. */
    pthread_mutex_t progress_lock;
    char progress[256];
};

/* Makes a browser over s (which it does not own) with the command line's history in
 * history_path (NULL: none). NULL when out of memory. */
lp_browser *lp_browser_new(lp_session *s, const char *history_path);
void lp_browser_free(lp_browser *b);

/* What the caller must do after a key. */
typedef enum {
    LP_BROWSER_DRAW,    /* redraw */
    LP_BROWSER_EXEC,    /* run b->pending with lp_browser_exec (it may be slow), then redraw */
    LP_BROWSER_REPAINT, /* redraw everything (Ctrl-L: the terminal may be garbled) */
    LP_BROWSER_QUIT,
} lp_browser_do;
lp_browser_do lp_browser_key(lp_browser *b, int key);

/* Runs one command line on the session with its output captured into the output pane
 * and its error on the message line; returns its status. Frees b->pending if line is it.
 * The caller resets the cancel flag (lp_cancel_reset) before: a Ctrl-C that comes
 * between then and here must not be lost. */
int lp_browser_exec(lp_browser *b, const char *line);
/* The running command's live progress line into buf ("" when it has none); safe to call
 * from another thread while lp_browser_exec runs. */
void lp_browser_progress(lp_browser *b, char *buf, size_t cap);
/* True when the current view has to update before it can draw what is current. */
bool lp_browser_stale(const lp_browser *b);
/* From a view's draw: it shows something its update has not computed yet (the lens's
 * chunks come as they scroll into view), so the loop runs the update again after the frame. */
void lp_browser_restale(lp_browser *b);
/* Updates the current view (may be slow; LP_ECANCEL when cancelled). */
int lp_browser_update(lp_browser *b);
/* Draws the whole frame into scr (which may be any size: too small gets a message). */
void lp_browser_draw(lp_browser *b, lp_screen *scr);

/* ---- for the views ---- */

/* The current run's token at pos made safe (""/0 outside the run). */
const char *lp_browser_token(const lp_browser *b, int pos, int *width);
/* The same on either side of the strip (LP_SIDE_SOURCE: an encoder-decoder's source). */
const char *lp_browser_side_token(const lp_browser *b, int side, int pos, int *width);
/* Of the attention `kind`: the run that captured it (an encoder-decoder's encoder run for
 * LP_ATTN_ENC_SELF), its activation (pattern or cross pattern), its layers, and the strip
 * sides of its queries and keys; NULL when the current run has no such attention. */
const lp_run *lp_browser_attn_run(const lp_browser *b, lp_attn_kind kind, lp_act_kind *act, int *n_layer,
                                  int *query_side, int *key_side);
/* "enc self", "dec self", "cross" for an encoder-decoder's run; NULL for a one-stack run. */
const char *lp_browser_attn_name(const lp_browser *b, lp_attn_kind kind);
/* Shows attention kind: the selection moves to the strip line of its queries, and the
 * layer into its stack. */
void lp_browser_set_attn(lp_browser *b, lp_attn_kind kind);
/* How the token strip draws the token at pos: its colour and attributes (a template's
 * specials, masks, the second text of a pair), so that views showing the tokens agree. */
void lp_browser_token_style(const lp_browser *b, int pos, lp_color *color, int *attr);
void lp_browser_side_style(const lp_browser *b, int side, int pos, lp_color *color, int *attr);
/* The run, or NULL (with a line in area saying what to do) when there is none. */
const lp_run *lp_browser_need_run(lp_browser *b, lp_screen *scr, lp_rect area);
/* A token id's text made safe, into buf. */
const char *lp_browser_id_text(const lp_browser *b, int id, char *buf, size_t cap);
/* Centred message in area (a view with nothing to show). */
void lp_browser_say(lp_screen *scr, lp_rect area, const char *line1, const char *line2);
void lp_browser_set_status(lp_browser *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* b->feature inside its dictionary's features, -1 when that dictionary is no longer loaded. */
void lp_browser_clamp_feature(lp_browser *b);
/* Goes where j says: its view, attention, layer, head and position (-1: as it is). */
void lp_browser_jump(lp_browser *b, const lp_jump *j);
/* Asks the caller to run a command (e.g. a jump that needs `rerun`), then apply after. */
void lp_browser_request(lp_browser *b, const char *command, lp_jump after);
/* The rows of a read-only query on the store, an array of objects; NULL without a store
 * or when the query fails (a table this database does not have yet). Takes params. */
json_t *lp_browser_query(const lp_browser *b, const char *sql, json_t *params);
/* Helpers for the rows: a column as an integer (dflt when null or missing), a double
 * (NAN when null), a string ("" when null). */
long long lp_row_int(json_t *row, const char *col, long long dflt);
double lp_row_real(json_t *row, const char *col);
const char *lp_row_str(json_t *row, const char *col);

/* An attention pattern (a (Tq, Tk) view: T x T for self-attention, T x S for
 * cross-attention; every weight read: nothing is taken to be masked) downsampled to th x tw
 * cells of heat levels, out (th, tw): each cell the largest weight among the queries (rows)
 * and keys (columns) it covers. A thumbnail no larger than the pattern gives each token
 * whole cells. */
void lp_thumbnail_levels(uint8_t *out, int th, int tw, const lp_view *pattern);
/* True when no query of a T x T pattern has weight on a later key (a causal head); an
 * encoder's bidirectional head has. */
bool lp_pattern_causal(const lp_view *pattern);

/* The examples view's layout (view_examples.c). A context line's tokens: [*first, *last] of
 * n tokens (display widths w) around at, at most side each way and back (or on) to mark, a
 * head's key (-1: none), when it is further; cut from the end farther from at (never at,
 * and mark only when the other end cannot go) until their widths fit room columns. */
void lp_context_window(const int *w, int n, int at, int mark, int side, int room, int *first, int *last);
/* A histogram of n bins in at most rows rows: the bins from the first to the last with a
 * count, *group (the fewest that fit) to a row from bin *lo, the rows' counts into out;
 * returns the rows (0: every count is 0). */
int lp_histogram_rows(const long long *count, int n, int rows, int *lo, int *group, long long *out);
/* A bar's length in eighths of a cell over w cells for count of max: a count above 0 gets
 * at least one, so that no bin with tokens looks empty. */
int lp_bar_eighths(long long count, long long max, int w);

/* The features view's pieces (view_features.c).
 * The features active over a run, acts (T, m): peak (m) each one's largest activation, ids
 * (m) those above 0, strongest first, ties by the smaller id; returns how many (-1: out of
 * memory, with the message set). */
int lp_feature_ranking(const float *acts, int T, int m, float *peak, int *ids);
/* v (>= 0) in at most w (1..15) characters, as precise as they allow: "5.00", "12.3", "123",
 * "12k"; "+" when even that does not fit. */
void lp_fit_number(double v, int w, char *buf, size_t cap);
/* Where the features view puts things in area a (the whole view, its header line first)
 * for feature ids up to max_id: the heat map (row labels of label_w, cells of cell_w, cols
 * and rows of them after the header row) and the selected feature's panel (beside it from
 * 64 columns, below it on a narrow tall area, else none: side.w 0), whose three lists
 * (promoted, suppressed, nearest) get list_rows rows each (at most 10). */
typedef struct {
    lp_rect grid, side;
    int label_w, cell_w, cols, rows, list_rows;
} lp_features_layout;
/* The features view's selected feature and its dictionary (the session's index); false when
 * it has none (no dictionary, or no feature fires on the run it encoded). */
bool lp_features_selection(const lp_browser *b, int *dict, int *feature);
/* How many times the features view has encoded a run (a test's check that it keeps one). */
unsigned lp_features_encode_count(void);
void lp_features_layout_of(lp_rect a, int max_id, lp_features_layout *out);

/* snprintf at the end of what buf already holds. */
void lp_appendf(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The first row to show so that row sel stays visible in rows of a window, keeping *top
 * where it was when it can. */
int lp_scroll(int *top, int sel, int rows, int total);

#endif
