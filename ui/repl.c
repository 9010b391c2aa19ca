/* The interactive prompt. Readline runs through its callback interface so that the loop
 * waits in select() and sees signals as events: Ctrl-C at the prompt drops the line, Ctrl-C
 * during a command asks it to stop (lp_cancel_request). Completion knows nothing about
 * particular commands: it reads each command's usage string (options, "a|b" choices,
 * alternative forms split by " | ") and maps placeholder words to value domains through
 * one small table. */
#include "repl.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "loupe/error.h"
#include "loupe/heads.h"

#define PROMPT "loupe> "
#define HISTORY_MAX 1000

/* ---- usage strings ----
 * "[K] [--pos P]", "TEXT | --ids 1,2,3 [--bos|--no-bos]", "[new NAME | list | open ID]":
 * a word starting with "--" is an option, which takes the next word as its value unless the
 * option closes a bracket or the next word opens one; "a|b|c" inside a word lists
 * alternatives (lowercase: literal choices, uppercase: placeholders); " | " standing alone
 * starts another form of the command, whose positional words are counted afresh. */

typedef struct {
    const char *p;
    int n;
} span;

#define MAX_PARTS 16
#define MAX_OPTS 32
#define MAX_FORMS 8
#define MAX_SLOTS 8

/* What one word of a command line may be. */
typedef struct {
    span part[MAX_PARTS]; /* literals ("json") and placeholders ("L") */
    int n;
    span after;           /* the usage word before this one: an option ("--site") or a literal ("open") */
} slot;

typedef struct {
    span name; /* "--pos" */
    bool takes_value;
    slot value;
} option;

typedef struct {
    option opt[MAX_OPTS];
    int n_opt;
    slot pos[MAX_FORMS][MAX_SLOTS]; /* positional words of each form */
    int n_pos[MAX_FORMS];
    int n_form;
} usage;

static bool span_is(span s, const char *z) { return (size_t)s.n == strlen(z) && memcmp(s.p, z, (size_t)s.n) == 0; }
static bool is_option(span s) { return s.n > 2 && s.p[0] == '-' && s.p[1] == '-'; }

static bool is_literal(span s) {
    for (int i = 0; i < s.n; i++)
        if (islower((unsigned char)s.p[i])) return true;
    return false;
}

static void usage_parse(const char *u, usage *out) {
    memset(out, 0, sizeof *out);
    out->n_form = 1;
    option *pending = NULL; /* an option whose value may be the next word */
    span last = {"", 0};    /* the last part of the previous word */
    const char *p = u;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        const char *b = p, *e = p;
        while (*e && !isspace((unsigned char)*e)) e++;
        p = e;
        bool opens = false, closes = false;
        while (b < e && (*b == '[' || *b == '(')) b++, opens = true;
        for (;;) {
            if (e > b && (e[-1] == ']' || e[-1] == ')')) e--, closes = true;
            else if (e - b >= 3 && memcmp(e - 3, "...", 3) == 0) e -= 3;
            else break;
        }
        if (e - b == 1 && *b == '|') {
            if (out->n_form < MAX_FORMS) out->n_form++;
            pending = NULL;
            last = (span){"", 0};
            continue;
        }
        if (opens) pending = NULL;
        slot *cur = NULL; /* where this word's non-option parts go */
        for (const char *q = b; q < e;) {
            const char *r = q;
            while (r < e && *r != '|') r++;
            span part = {q, (int)(r - q)};
            q = r < e ? r + 1 : r;
            if (!part.n) continue;
            if (is_option(part)) {
                cur = NULL;
                pending = out->n_opt < MAX_OPTS ? &out->opt[out->n_opt++] : NULL;
                if (pending) pending->name = part;
            } else {
                if (!cur && pending) {
                    pending->takes_value = true;
                    cur = &pending->value;
                    cur->after = pending->name;
                    pending = NULL;
                } else if (!cur) {
                    int f = out->n_form - 1;
                    if (out->n_pos[f] < MAX_SLOTS) {
                        cur = &out->pos[f][out->n_pos[f]++];
                        cur->after = last;
                    }
                }
                if (cur && cur->n < MAX_PARTS) cur->part[cur->n++] = part;
            }
            last = part;
        }
        if (closes) pending = NULL;
    }
}

static const option *usage_option(const usage *u, const char *name) {
    for (int i = 0; i < u->n_opt; i++)
        if (span_is(u->opt[i].name, name)) return &u->opt[i];
    return NULL;
}

/* ---- value domains ---- */

/* Candidates that start with the text typed so far, each once, in the order found. */
typedef struct {
    char **v;
    int n, cap;
    const char *text;
    size_t text_len;
    bool files;
} cands;

static void cand_add(cands *c, const char *s, size_t n) {
    if (n < c->text_len || strncmp(s, c->text, c->text_len) != 0) return;
    for (int i = 0; i < c->n; i++)
        if (strlen(c->v[i]) == n && memcmp(c->v[i], s, n) == 0) return;
    if (c->n + 2 > c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        char **v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v) return;
        c->v = v, c->cap = cap;
    }
    char *dup = strndup(s, n);
    if (dup) c->v[c->n++] = dup;
}

static void cand_add_z(cands *c, const char *s) { cand_add(c, s, strlen(s)); }

static void add_numbers(cands *c, int n) {
    for (int i = 0; i < n; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", i);
        cand_add_z(c, buf);
    }
}

static void dom_layers(cands *c, const lp_session *s) {
    if (s->model) add_numbers(c, lp_model_config(s->model)->n_layer);
}

static void dom_heads(cands *c, const lp_session *s) {
    if (s->model) add_numbers(c, lp_model_config(s->model)->n_head);
}

static void dom_modes(cands *c, const lp_session *s) {
    (void)s;
    for (int m = LP_MODE_TABLE; m <= LP_MODE_JSONL; m++) cand_add_z(c, lp_mode_name((lp_mode)m));
}

static void dom_metrics(cands *c, const lp_session *s) {
    (void)s;
    for (int m = 0; m < LP_HEAD_METRIC_COUNT; m++) cand_add_z(c, lp_head_metric_name((lp_head_metric)m));
}

static void dom_commands(cands *c, const lp_session *s) {
    (void)s;
    int n;
    const lp_command *t = lp_command_table(&n);
    for (int i = 0; i < n; i++) cand_add_z(c, t[i].name);
}

static void dom_sessions(cands *c, const lp_session *s) {
    if (!s->store) return;
    json_t *rows = NULL;
    if (lp_store_query(s->store, "SELECT name FROM sessions ORDER BY id", NULL, false, &rows, NULL) == LP_OK) {
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row) {
            const char *name = json_string_value(json_object_get(row, "name"));
            if (name) cand_add_z(c, name);
        }
    }
    json_decref(rows);
}

static void dom_files(cands *c, const lp_session *s) {
    (void)s;
    c->files = true;
    /* Readline matches the names itself, and gives "~/x" back as "/home/me/x" (the commands
     * see the path as typed, and no shell expands it for them). */
    size_t typed = c->text_len;
    c->text_len = 0;
    char *f;
    for (int state = 0; (f = rl_filename_completion_function(c->text, state)); state++) {
        cand_add_z(c, f);
        free(f);
    }
    c->text_len = typed;
}

static const char *const METHODS[] = {"saliency", "gxi", "ig", "occlusion", "rollout", "attnxnorm", NULL};
static const char *const SITES[] = {"resid_pre", "attn_out", "mlp_out", "resid_post", NULL};

/* What a placeholder in a usage string stands for: a fixed list or a function. `after`
 * (NULL: anywhere) is the usage word before it, an option or a literal; word "*" is any
 * placeholder. The first matching row wins. Placeholders found nowhere here (TEXT, N, K,
 * P, QUERY, ...) complete nothing. */
static const struct {
    const char *word, *after;
    const char *const *list;
    void (*add)(cands *c, const lp_session *s);
} DOMAINS[] = {
    {"*", "--site", SITES, NULL},
    {"*", "--method", METHODS, NULL},
    {"*", "--sort", NULL, dom_metrics},
    {"ID", "open", NULL, dom_sessions},
    {"NAME", "open", NULL, dom_sessions},
    {"L", NULL, NULL, dom_layers},
    {"LAYER", NULL, NULL, dom_layers},
    {"H", NULL, NULL, dom_heads},
    {"HEAD", NULL, NULL, dom_heads},
    {"METHOD", NULL, METHODS, NULL},
    {"SITE", NULL, SITES, NULL},
    {"METRIC", NULL, NULL, dom_metrics},
    {"MODE", NULL, NULL, dom_modes},
    {"COMMAND", NULL, NULL, dom_commands},
    {"CMD", NULL, NULL, dom_commands},
    {"PATH", NULL, NULL, dom_files},
    {"FILE", NULL, NULL, dom_files},
    {"DIR", NULL, NULL, dom_files},
};

static void add_domain(cands *c, const lp_session *s, span word, span after) {
    for (size_t i = 0; i < sizeof DOMAINS / sizeof *DOMAINS; i++) {
        if (strcmp(DOMAINS[i].word, "*") != 0 && !span_is(word, DOMAINS[i].word)) continue;
        if (DOMAINS[i].after && !span_is(after, DOMAINS[i].after)) continue;
        if (DOMAINS[i].add) DOMAINS[i].add(c, s);
        for (const char *const *w = DOMAINS[i].list; w && *w; w++) cand_add_z(c, *w);
        return;
    }
}

static void add_slot(cands *c, const lp_session *s, const slot *sl) {
    for (int i = 0; i < sl->n; i++) {
        if (is_literal(sl->part[i])) cand_add(c, sl->part[i].p, (size_t)sl->part[i].n);
        else add_domain(c, s, sl->part[i], sl->after);
    }
}

static bool slot_accepts(const slot *sl, const char *word) {
    for (int i = 0; i < sl->n; i++)
        if (!is_literal(sl->part[i]) || span_is(sl->part[i], word)) return true;
    return false;
}

/* The options of u not yet on the line. */
static void add_options(cands *c, const usage *u, char **words, int nw) {
    for (int i = 0; i < u->n_opt; i++) {
        bool given = false;
        for (int k = 1; k < nw && !given; k++) given = span_is(u->opt[i].name, words[k]);
        if (!given) cand_add(c, u->opt[i].name.p, (size_t)u->opt[i].name.n);
    }
}

/* Completes the word after words[0..nw) (words[0] names the command). */
static void complete_args(cands *c, const lp_session *s, const lp_command *cmd, char **words, int nw) {
    usage u;
    usage_parse(cmd->usage, &u);
    const char *typed[MAX_SLOTS];
    int npos = 0;
    const option *value_of = NULL;
    for (int i = 1; i < nw; i++) {
        const char *w = words[i];
        if (value_of) {
            value_of = NULL;
        } else if (w[0] == '-' && w[1] == '-' && w[2]) {
            const option *o = usage_option(&u, w);
            if (o && o->takes_value) value_of = o;
        } else {
            if (npos < MAX_SLOTS) typed[npos] = w;
            npos++;
        }
    }
    if (value_of) {
        add_slot(c, s, &value_of->value);
        return;
    }
    if (c->text[0] != '-' && npos < MAX_SLOTS) {
        for (int f = 0; f < u.n_form; f++) {
            if (npos >= u.n_pos[f]) continue;
            bool fits = true;
            for (int i = 0; i < npos && fits; i++) fits = slot_accepts(&u.pos[f][i], typed[i]);
            if (fits) add_slot(c, s, &u.pos[f][npos]);
        }
    }
    /* Options when asked for, or when there is nothing else to offer. */
    if (c->text[0] == '-' || (c->n == 0 && !c->files && !c->text[0])) add_options(c, &u, words, nw);
}

char **lp_repl_complete_new(const lp_session *s, const char *line, int start, const char *text, bool *files) {
    cands c = {.text = text, .text_len = strlen(text)};
    *files = false;
    char *before = strndup(line, (size_t)start);
    if (!before) return NULL;
    const char *p = before;
    while (*p == ' ' || *p == '\t') p++;
    char **words = NULL;
    int nw = *p == '#' ? -1 : lp_split_words(before, &words);
    if (nw < 0 && start > 0 && strchr("\"'", before[start - 1]) && *p != '#') {
        /* The word being completed opened a quote: split what comes before it. */
        before[start - 1] = '\0';
        nw = lp_split_words(before, &words);
    }
    if (nw == 0) {
        int n;
        const lp_command *t = lp_command_table(&n);
        for (int i = 0; i < n; i++) cand_add_z(&c, t[i].name);
    } else if (nw > 0) {
        const lp_command *cmd = lp_command_find(words[0]);
        if (cmd) complete_args(&c, s, cmd, words, nw);
    }
    free(words);
    free(before);
    lp_error_clear(); /* what failed to split or find is no error of the user's */
    *files = c.files;
    if (c.n == 0) {
        free(c.v);
        return NULL;
    }
    c.v[c.n] = NULL;
    return c.v;
}

/* ---- readline glue ---- */

static const lp_session *g_session; /* readline's callbacks carry no context */
static char **g_matches;
static int g_next;

static char *next_match(const char *text, int state) {
    (void)text;
    if (!state) g_next = 0;
    return g_matches && g_matches[g_next] ? g_matches[g_next++] : NULL;
}

static char **attempt_completion(const char *text, int start, int end) {
    (void)end;
    rl_attempted_completion_over = 1; /* no fallback to file names where a command takes none */
    bool files;
    g_matches = lp_repl_complete_new(g_session, rl_line_buffer, start, text, &files);
    rl_filename_completion_desired = files;
    rl_sort_completion_matches = files; /* layers, heads and the table's order read better as they are */
    char **m = g_matches ? rl_completion_matches(text, next_match) : NULL;
    free(g_matches); /* the strings now belong to readline */
    g_matches = NULL;
    return m;
}

/* ---- history ---- */

static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", a, b);
    return p;
}

/* NULL when there is to be no history file (LOUPE_HISTORY set but empty, or no home). */
static char *history_path_new(void) {
    const char *v = getenv("LOUPE_HISTORY"), *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (v) return *v ? strdup(v) : NULL;
    if (xdg && xdg[0] == '/') return path_join(xdg, "/loupe/history"); /* XDG: relative paths are invalid */
    if (home && *home) return path_join(home, "/.local/state/loupe/history");
    return NULL;
}

char *lp_repl_history_path_new(void) { return history_path_new(); }

/* Creates the file and its directories (mkdir -p) so that append_history can open it. */
static bool history_file_create(const char *path) {
    char *d = strdup(path);
    if (!d) return false;
    for (char *p = d + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(d, 0700) != 0 && errno != EEXIST) break;
            *p = '/';
        }
    free(d);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "warning: history not saved: cannot create %s (%s)\n", path, strerror(errno));
        return false;
    }
    close(fd);
    return true;
}

typedef struct {
    char *path;  /* NULL: keep no file */
    int written; /* 0 not yet, 1 file ready, -1 failed (said once) */
} history;

/* Keeps a line in memory and appends it to the file at once, so that a crash or a second
 * loupe loses nothing; blank lines and repeats of the previous line are skipped. */
static void history_add(history *h, const char *line) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, line) == 0) return;
    add_history(line);
    if (!h->path || h->written < 0) return;
    if (!h->written) h->written = history_file_create(h->path) ? 1 : -1;
    if (h->written > 0) append_history(1, h->path);
}

/* ---- signals ----
 * Handlers only note what arrived and write a byte to a pipe that the loop's select()
 * watches, so that it wakes whichever thread the signal landed on. */

static int g_wake[2] = {-1, -1};
static volatile sig_atomic_t g_sigint, g_sigwinch, g_deferred, g_running, g_interrupts;

/* At the prompt the terminal is in readline's modes: these are put off until the loop has
 * restored it. While a command runs they keep their usual effect. */
static const int PROMPT_SIGNALS[] = {SIGTSTP, SIGTERM, SIGHUP};
#define N_PROMPT_SIGNALS ((int)(sizeof PROMPT_SIGNALS / sizeof *PROMPT_SIGNALS))
static struct sigaction g_saved[N_PROMPT_SIGNALS];

static void on_signal(int sig) {
    int saved = errno;
    if (sig == SIGINT) {
        g_sigint = 1;
        lp_cancel_request();
        /* A command that never checks for cancellation: let the user out, as sqlite3 does. */
        if (g_running && ++g_interrupts >= 3) {
            static const char msg[] = "\nloupe: interrupted 3 times; quitting\n";
            ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
            (void)ignored;
            _exit(130);
        }
    } else if (sig == SIGWINCH) {
        g_sigwinch = 1;
    } else {
        g_deferred = sig;
    }
    if (g_wake[1] >= 0) {
        ssize_t ignored = write(g_wake[1], "", 1);
        (void)ignored;
    }
    errno = saved;
}

static void drain_wake(void) {
    char buf[64];
    while (g_wake[0] >= 0 && read(g_wake[0], buf, sizeof buf) > 0) {
    }
}

static void catch(int sig, struct sigaction *old) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* commands' reads and writes carry on; select() returns all the same */
    sigaction(sig, &sa, old);
    if (old && old->sa_handler == SIG_IGN) sigaction(sig, old, NULL); /* ignored by whoever started us */
}

static void prompt_signals(bool caught) {
    for (int i = 0; i < N_PROMPT_SIGNALS; i++) {
        if (caught) catch(PROMPT_SIGNALS[i], &g_saved[i]);
        else sigaction(PROMPT_SIGNALS[i], &g_saved[i], NULL);
    }
}

/* ---- the loop ---- */

static char *g_line; /* the line readline handed over */
static bool g_line_ready;

static void prompt_hide(void) {
    prompt_signals(false);
    rl_callback_handler_remove();
}

static void on_line(char *line) {
    g_line = line;
    g_line_ready = true;
    /* Here, not after: readline would otherwise prompt again at once. The command runs in
     * the terminal's own modes: its output, the echo of what is typed ahead, Ctrl-C. */
    prompt_hide();
}

static void prompt_show(void) {
    rl_callback_handler_install(PROMPT, on_line);
    prompt_signals(true);
}

/* Ctrl-C at the prompt: abandon the line, as bash does. */
static void drop_line(void) {
    rl_point = rl_end;
    rl_redisplay();
    fputs("^C\n", rl_outstream);
    fflush(rl_outstream);
    rl_free_line_state();
    rl_callback_sigcleanup();
    rl_replace_line("", 1);
    rl_point = rl_mark = 0;
    prompt_hide();
}

/* Ctrl-Z, kill, hangup at the prompt: the terminal as it was, then the signal's own effect
 * (for Ctrl-Z: stop until `fg`, then redraw the line). */
static void deliver(int sig) {
    rl_cleanup_after_signal();
    prompt_signals(false);
    raise(sig);
    prompt_signals(true);
    rl_reset_after_signal();
    rl_forced_update_display();
}

static int run_command(lp_session *s, const char *line) {
    lp_cancel_reset();
    g_sigint = 0;
    g_interrupts = 0;
    g_running = 1;
    int rc = lp_exec(s, line);
    g_running = 0;
    fflush(s->out);
    if (rc) {
        if (g_sigint) fputc('\n', stderr); /* after the terminal's ^C */
        fprintf(stderr, "error: %s\n", lp_errmsg());
    }
    g_sigint = 0;
    drain_wake();
    return rc;
}

int lp_repl_run(lp_session *s, bool bail) {
    g_session = s;
    rl_readline_name = "loupe";
    rl_attempted_completion_function = attempt_completion;
    rl_completer_word_break_characters = " \t\n";
    rl_completer_quote_characters = "\"'";
    rl_filename_quote_characters = " \t\"'\\";
    rl_variable_bind("expand-tilde", "on");
    rl_catch_signals = 0; /* the loop handles signals itself */
    rl_catch_sigwinch = 0;

    history h = {history_path_new(), 0};
    using_history();
    stifle_history(HISTORY_MAX);
    if (h.path) read_history(h.path);

    struct sigaction old_int, old_winch;
    if (pipe2(g_wake, O_NONBLOCK | O_CLOEXEC) != 0) g_wake[0] = g_wake[1] = -1;
    catch(SIGINT, &old_int);
    catch(SIGWINCH, &old_winch);

    int failures = 0;
    bool prompting = false;
    for (;;) {
        if (!prompting) {
            prompt_show();
            prompting = true;
        }
        if (g_sigwinch) {
            g_sigwinch = 0;
            rl_resize_terminal();
        }
        if (g_deferred) {
            int sig = g_deferred;
            g_deferred = 0;
            deliver(sig);
        }
        if (g_sigint) {
            g_sigint = 0;
            drop_line();
            prompting = false;
            continue;
        }
        int in = fileno(rl_instream ? rl_instream : stdin), top = in > g_wake[0] ? in : g_wake[0];
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(in, &fds);
        if (g_wake[0] >= 0) FD_SET(g_wake[0], &fds);
        if (select(top + 1, &fds, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (g_wake[0] >= 0 && FD_ISSET(g_wake[0], &fds)) drain_wake();
        if (!FD_ISSET(in, &fds)) continue;
        rl_callback_read_char();
        if (!g_line_ready) continue;
        g_line_ready = false;
        prompting = false;
        char *line = g_line;
        g_line = NULL;
        if (!line) { /* Ctrl-D on an empty line */
            fputc('\n', rl_outstream);
            break;
        }
        history_add(&h, line);
        int rc = run_command(s, line);
        free(line);
        if (rc) failures++;
        if (s->quit || (bail && rc && rc != LP_ECANCEL)) break;
    }
    if (prompting) prompt_hide();
    fflush(rl_outstream);

    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGWINCH, &old_winch, NULL);
    for (int i = 0; i < 2; i++)
        if (g_wake[i] >= 0) close(g_wake[i]), g_wake[i] = -1;
    if (h.written > 0) history_truncate_file(h.path, HISTORY_MAX);
    clear_history();
    free(h.path);
    g_session = NULL;
    return failures;
}
