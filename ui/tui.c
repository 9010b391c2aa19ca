/* The browser's terminal side, and with tui_colors.c the only code that speaks curses:
 * setting the terminal up, reading keys (turned into keymap codes), copying the screen
 * model to the terminal, and running commands without freezing the screen.
 *
 * A command (and a view's slow update, the logit lens) runs on a worker thread while this
 * thread keeps the terminal: it shows a spinner with the elapsed time, Esc or Ctrl-C asks
 * the engine to stop (lp_cancel_request), and keys typed meanwhile are kept for after.
 * The browser's state belongs to the worker until it is done: nothing here reads it then
 * but the command's live progress (lp_browser_progress, under its lock), which the
 * spinner line shows. */
#define NCURSES_WIDECHAR 1
#include "tui.h"

#include <curses.h>
#include <langinfo.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>
#include <wchar.h>

#include "loupe/error.h"
#include "repl.h"
#include "tui_colors.h"
#include "view.h"

#define POLL_MS 100
#define SPINNER_AFTER_S 0.15
#define TYPEAHEAD 64

static volatile sig_atomic_t g_winch, g_sigint, g_job_running;
static bool g_active;

static void on_signal(int sig) {
    if (sig == SIGWINCH) g_winch = 1;
    if (sig == SIGINT) {
        g_sigint = 1;
        if (g_job_running) lp_cancel_request();
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- keys ---- */

/* Reads one key within POLL_MS; -1 when none came. */
static int read_key(void) {
    wint_t ch;
    int r = wget_wch(stdscr, &ch);
    if (r == ERR) return -1;
    if (r == KEY_CODE_YES) {
        switch (ch) {
        case KEY_UP: return LP_KEY_UP;
        case KEY_DOWN: return LP_KEY_DOWN;
        case KEY_LEFT: return LP_KEY_LEFT;
        case KEY_RIGHT: return LP_KEY_RIGHT;
        case KEY_SLEFT: return LP_KEY_SHIFT_LEFT;
        case KEY_SRIGHT: return LP_KEY_SHIFT_RIGHT;
        case KEY_HOME: return LP_KEY_HOME;
        case KEY_END: return LP_KEY_END;
        case KEY_PPAGE: return LP_KEY_PAGE_UP;
        case KEY_NPAGE: return LP_KEY_PAGE_DOWN;
        case KEY_BTAB: return LP_KEY_BACKTAB;
        case KEY_BACKSPACE: return LP_KEY_BACKSPACE;
        case KEY_DC: return LP_KEY_DELETE;
        case KEY_ENTER: return LP_KEY_ENTER;
        case KEY_RESIZE: return LP_KEY_RESIZE;
        default: return -1;
        }
    }
    if (ch == '\n' || ch == '\r') return LP_KEY_ENTER;
    if (ch == 127 || ch == 8) return LP_KEY_BACKSPACE;
    return (int)ch;
}

/* ---- drawing ---- */

/* One cell of the model to curses. A character whose width the C library sees differently
 * from the model's (utf8proc's) tables is drawn as '?', so that nothing after it on the row
 * moves. */
static void put_cell(const lp_cell *c, int y, int x) {
    utf8proc_int32_t cp = '?';
    if (utf8proc_iterate((const utf8proc_uint8_t *)c->ch, -1, &cp) <= 0) cp = '?';
    wchar_t wc[2] = {(wchar_t)cp, 0};
    int w = wcwidth(wc[0]);
    attr_t attr;
    short pair;
    tui_colors_style(c->color, c->attr, &attr, &pair);
    cchar_t cc;
    if (w != c->width) wc[0] = L'?';
    setcchar(&cc, wc, attr, pair, NULL);
    mvadd_wch(y, x, &cc);
    if (w != c->width && c->width == 2 && x + 1 < COLS) {
        wc[0] = L' ';
        setcchar(&cc, wc, attr, pair, NULL);
        mvadd_wch(y, x + 1, &cc);
    }
}

/* Rows [from, to) of the model to curses (curses sends the terminal only what changed). */
static void blit_rows(const lp_screen *scr, int from, int to) {
    for (int y = from; y < to && y < scr->h && y < LINES; y++)
        for (int x = 0; x < scr->w && x < COLS; x++) {
            const lp_cell *c = lp_screen_at(scr, x, y);
            if (c->width) put_cell(c, y, x);
        }
    if (scr->cursor_x >= 0 && scr->cursor_y >= 0) {
        curs_set(1);
        move(scr->cursor_y, scr->cursor_x);
    } else {
        curs_set(0);
    }
    refresh();
}

static void fit_to_terminal(lp_screen *scr) {
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0 &&
        (ws.ws_row != LINES || ws.ws_col != COLS)) {
        resize_term(ws.ws_row, ws.ws_col);
        clearok(curscr, TRUE); /* the terminal rewrapped what it showed: paint it all again */
    }
    if (scr->w != COLS || scr->h != LINES) lp_screen_resize(scr, COLS, LINES);
}

/* ---- running commands on the worker ---- */

typedef struct {
    lp_browser *b;
    bool exec;          /* run b->pending, then update; or only update */
    int rc;
    atomic_int done;
} job;

static void *job_main(void *arg) {
    job *j = arg;
    j->rc = LP_OK;
    if (j->exec) j->rc = lp_browser_exec(j->b, j->b->pending);
    if (!j->b->quit && lp_browser_stale(j->b)) {
        int rc = lp_browser_update(j->b);
        if (!j->exec) j->rc = rc;
    }
    atomic_store(&j->done, 1);
    return NULL;
}

typedef struct {
    int keys[TYPEAHEAD];
    int n;
} key_queue;

/* Runs the job on a worker and keeps the terminal alive meanwhile: the spinner on the
 * last row after a moment, Esc/Ctrl-C to cancel, resizes followed. Returns the job's status. */
static int run_job(lp_browser *b, bool exec, const char *what, lp_screen *scr, key_queue *ta) {
    job j = {.b = b, .exec = exec};
    atomic_init(&j.done, 0);
    char label[256];
    snprintf(label, sizeof label, "%s", what);
    lp_cancel_reset();
    g_sigint = 0;
    g_job_running = 1;
    pthread_t th;
    if (pthread_create(&th, NULL, job_main, &j) != 0) { /* no thread: run it here, frozen but working */
        job_main(&j);
        g_job_running = 0;
        return j.rc;
    }
    static const char *const SPIN[] = {"\xE2\xA0\x8B", "\xE2\xA0\x99", "\xE2\xA0\xB9", "\xE2\xA0\xB8", "\xE2\xA0\xBC",
                                       "\xE2\xA0\xB4", "\xE2\xA0\xA6", "\xE2\xA0\xA7", "\xE2\xA0\x87", "\xE2\xA0\x8F"};
    double t0 = now_s();
    bool cancelling = false;
    int frame = 0;
    while (!atomic_load(&j.done)) {
        int k = read_key();
        if (g_sigint || k == LP_KEY_ESC || k == LP_KEY_CTRL('c')) {
            g_sigint = 0;
            lp_cancel_request();
            cancelling = true;
        } else if (k >= 0 && k != LP_KEY_RESIZE && ta->n < TYPEAHEAD) {
            ta->keys[ta->n++] = k;
        }
        if (g_winch || k == LP_KEY_RESIZE) {
            g_winch = 0;
            fit_to_terminal(scr);
            erase();
        }
        double t = now_s() - t0;
        if (t >= SPINNER_AFTER_S && !atomic_load(&j.done)) {
            char line[768], progress[256];
            lp_browser_progress(b, progress, sizeof progress);
            const char *cancel = cancelling ? "cancelling\xE2\x80\xA6" : "Esc or Ctrl-C cancels";
            if (progress[0]) /* the command's own progress first, named by its first word */
                snprintf(line, sizeof line, " %s %.*s  %.1f s  %s  (%s)", SPIN[frame++ % 10], (int)strcspn(label, " "),
                         label, t, progress, cancel);
            else snprintf(line, sizeof line, " %s %s  %.1f s   %s", SPIN[frame++ % 10], label, t, cancel);
            lp_screen_fill(scr, 0, scr->h - 1, scr->w, " ", LP_COLOR_STATUS, 0);
            lp_screen_put_clip(scr, 0, scr->h - 1, scr->w, line, LP_COLOR_STATUS, LP_ATTR_BOLD);
            scr->cursor_x = -1;
            /* Only the last row: the rest of the screen is the browser's, which the worker owns. */
            blit_rows(scr, scr->h - 1, scr->h);
        }
    }
    pthread_join(th, NULL);
    g_job_running = 0;
    g_sigint = 0;
    return j.rc;
}

/* A view's update (the logit lens is the slow one) under the same progress line. */
static void update_view(lp_browser *b, lp_screen *scr, key_queue *ta) {
    char what[96];
    snprintf(what, sizeof what, "%s: computing", lp_view_get(b->view)->title);
    run_job(b, false, what, scr, ta);
}

/* ---- the loop ---- */

static bool utf8_locale(void) {
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);
}

int lp_tui_run(lp_session *s, int *failures) {
    if (failures) *failures = 0;
    if (g_active) return lp_error(LP_EINVAL, "tui: the browser is already open");
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        return lp_error(LP_EINVAL, "tui: the browser needs a terminal on stdin and stdout");

    /* Characters go out as UTF-8 whatever the environment says; numbers keep the C locale. */
    char *old_locale = strdup(setlocale(LC_CTYPE, NULL));
    if (!setlocale(LC_CTYPE, "") || !utf8_locale()) setlocale(LC_CTYPE, "C.UTF-8");

    struct sigaction sa, old_int, old_winch;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGWINCH, &sa, &old_winch);

    int rc = LP_OK;
    char *hist = lp_repl_history_path_new();
    lp_browser *b = lp_browser_new(s, hist);
    free(hist);
    SCREEN *term = b ? newterm(NULL, stdout, stdin) : NULL;
    if (!b) rc = lp_error(LP_ENOMEM, "out of memory");
    else if (!term) rc = lp_error(LP_EINVAL, "tui: cannot drive this terminal (TERM=%s)", getenv("TERM") ? getenv("TERM") : "");
    lp_screen *scr = NULL;
    if (!rc) {
        g_active = true;
        set_term(term);
        cbreak();
        noecho();
        nonl();
        keypad(stdscr, TRUE);
        set_escdelay(25);
        timeout(POLL_MS);
        const char *nc = getenv("NO_COLOR");
        scr = lp_screen_new(COLS, LINES, tui_colors_init(nc && *nc));
        if (!scr) rc = lp_error(LP_ENOMEM, "out of memory");
    }
    key_queue ta = {.n = 0};
    int fails = 0;
    bool dirty = true;
    /* The view may need its update before the first frame (the heads' metrics, the lens). */
    if (!rc && lp_browser_stale(b)) update_view(b, scr, &ta);
    while (!rc && !b->quit) {
        if (g_winch) {
            g_winch = 0;
            dirty = true;
        }
        if (dirty) {
            fit_to_terminal(scr);
            lp_browser_draw(b, scr);
            blit_rows(scr, 0, scr->h);
            dirty = false;
            if (lp_browser_stale(b) && !b->quit) { /* the frame showed what the view has yet to compute */
                update_view(b, scr, &ta);
                dirty = true;
                continue;
            }
        }
        int k;
        if (ta.n > 0) {
            k = ta.keys[0];
            memmove(ta.keys, ta.keys + 1, (size_t)--ta.n * sizeof *ta.keys);
        } else {
            k = read_key();
        }
        if (g_sigint) {
            g_sigint = 0;
            k = LP_KEY_CTRL('c');
        }
        if (k < 0) continue;
        dirty = true;
        lp_browser_do d = lp_browser_key(b, k);
        if (d == LP_BROWSER_QUIT) break;
        if (d == LP_BROWSER_REPAINT) clearok(curscr, TRUE);
        if (d == LP_BROWSER_EXEC && b->pending) {
            char what[300];
            snprintf(what, sizeof what, "%.280s", b->pending);
            if (run_job(b, true, what, scr, &ta)) fails++;
        }
        if (lp_browser_stale(b) && !b->quit) update_view(b, scr, &ta);
    }
    if (term) {
        endwin();
        delscreen(term);
    }
    lp_screen_free(scr);
    lp_browser_free(b);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGWINCH, &old_winch, NULL);
    if (old_locale) setlocale(LC_CTYPE, old_locale);
    free(old_locale);
    g_active = false;
    if (failures) *failures = fails;
    return rc;
}
