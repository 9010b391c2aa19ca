/* loupe's command line: options, then commands from -e, -f, stdin or the prompt. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loupe/commands.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "../ui/repl.h"
#include "../ui/tui.h"
#include "commands/cmd.h"

#define LOUPE_VERSION "0.1.0"

static const char USAGE[] =
    "usage: loupe [OPTIONS] [MODEL]\n"
    "  -e, --exec CMD       run one command; repeatable; loupe exits afterwards unless -i\n"
    "  -f, --file FILE      run the commands in FILE ('-' for stdin); -e and -f run in the order given\n"
    "  -i, --interactive    stay at the prompt after -e/-f\n"
    "  -m, --mode MODE      output mode: table (default), box, markdown, csv, json, jsonl\n"
    "      --bail           stop at the first failing command\n"
    "      --threads N      compute threads (default: all cores)\n"
    "      --tokenizer FILE tokenizer for a llama2.c checkpoint (default: tokenizer.bin beside it)\n"
    "  -d, --db FILE        analysis database (default: $XDG_DATA_HOME/loupe/loupe.db; ':memory:' allowed)\n"
    "  -t, --tui            open the full-screen browser (after the -e/-f commands)\n"
    "  -h, --help           this help;  -V, --version  the version\n"
    "MODEL is a Hugging Face model directory, a GGUF file (.gguf) or a llama2.c checkpoint (.bin).\n"
    "Type 'help' at the prompt, or run loupe -e help, for the commands.\n";

/* $XDG_DATA_HOME/loupe/loupe.db (or ~/.local/share/...), creating the directories. */
static int default_db_path(char *buf, size_t cap) {
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/loupe", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.local/share/loupe", home);
    else return -1;
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0755);
            *p = '/';
        }
    mkdir(dir, 0755);
    if (snprintf(buf, cap, "%s/loupe.db", dir) >= (int)cap) return -1;
    return 0;
}

/* Progress of long commands on stderr: on a terminal a live line (a progress bar) redrawn
 * in place, elsewhere the lines a log wants. ctx: whether a live line is showing. */
static void progress_to_stderr(void *ctx, lp_progress_kind kind, const char *text) {
    bool *live = ctx, tty = isatty(STDERR_FILENO);
    switch (kind) {
    case LP_PROGRESS_STATUS:
        if (!tty) return;
        fprintf(stderr, "\r\033[K%s", text);
        *live = true;
        break;
    case LP_PROGRESS_END:
        if (*live) fputc('\n', stderr);
        *live = false;
        break;
    case LP_PROGRESS_LOG:
        if (tty) return; /* the live line says it */
        /* fall through */
    case LP_PROGRESS_NOTE:
        fprintf(stderr, "%s%s\n", *live ? "\r\033[K" : "", text);
        break;
    }
    fflush(stderr);
}

/* The bundled model for an interactive session without MODEL: $LOUPE_MODEL, else
 * models/default here, else models/default beside the executable. */
static const char *default_model_path(char *buf, size_t cap) {
    const char *env = getenv("LOUPE_MODEL");
    if (env && *env) return env;
    struct stat st;
    if (stat("models/default/config.json", &st) == 0) return "models/default";
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = '\0';
    if (snprintf(buf, cap, "%s/models/default", exe) >= (int)cap) return NULL;
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", buf);
    return stat(cfg, &st) == 0 ? buf : NULL;
}

typedef struct {
    bool bail;
    int failures;
} runner;

/* Runs one line; prints its error. Returns false when the session should stop. */
static bool run_line(lp_session *s, runner *r, const char *line, const char *where, int lineno) {
    int rc = lp_exec(s, line);
    if (rc) {
        r->failures++;
        fflush(s->out);
        if (where) fprintf(stderr, "error: %s:%d: %s\n", where, lineno, lp_errmsg());
        else fprintf(stderr, "error: %s\n", lp_errmsg());
        if (r->bail) return false;
    }
    return !s->quit;
}

/* Runs the lines of in. A stream that cannot be read as text (a read error, a NUL byte, a
 * line over LP_LINE_MAX) counts as one failure and is read no further. */
static bool run_stream(lp_session *s, runner *r, FILE *in, const char *where) {
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    bool go = true, eof = false;
    while (go) {
        if (lp_line_read(in, where, lineno + 1, &line, &cap, NULL, &eof)) {
            r->failures++;
            fflush(s->out);
            fprintf(stderr, "error: %s\n", lp_errmsg());
            go = !r->bail;
            break;
        }
        if (eof) break;
        lineno++;
        go = run_line(s, r, line, where, lineno);
    }
    free(line);
    return go;
}

/* -e and -f, kept in the order given. */
typedef struct {
    char kind; /* 'e' or 'f' */
    const char *arg;
} action;

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"exec", required_argument, 0, 'e'},    {"file", required_argument, 0, 'f'},
        {"interactive", no_argument, 0, 'i'},   {"mode", required_argument, 0, 'm'},
        {"bail", no_argument, 0, 'B'},          {"threads", required_argument, 0, 'T'},
        {"tokenizer", required_argument, 0, 'k'}, {"db", required_argument, 0, 'd'},
        {"tui", no_argument, 0, 't'},           {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},       {0, 0, 0, 0}};
    action *acts = calloc((size_t)argc + 1, sizeof *acts);
    int n_act = 0;
    const char *mode = NULL, *tokenizer = NULL, *db = NULL;
    bool interactive = false, tui = false;
    runner r = {0};
    int c, status = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "e:f:im:d:thV", longopts, NULL)) != -1) {
        switch (c) {
        case 'e': acts[n_act++] = (action){'e', optarg}; break;
        case 'f': acts[n_act++] = (action){'f', optarg}; break;
        case 'i': interactive = true; break;
        case 'm': mode = optarg; break;
        case 'B': r.bail = true; break;
        case 'k': tokenizer = optarg; break;
        case 'T': {
            char *end;
            long t = strtol(optarg, &end, 10);
            if (*end || t < 1 || t > 1024) {
                fprintf(stderr, "error: --threads needs a positive number, not '%s'\n", optarg);
                goto usage;
            }
            openblas_set_num_threads((int)t);
            break;
        }
        case 'd': db = optarg; break;
        case 't': tui = true; break;
        case 'h': fputs(USAGE, stdout); free(acts); return 0;
        case 'V': printf("loupe %s\n", LOUPE_VERSION); free(acts); return 0;
        default:
            if (optopt) fprintf(stderr, "error: option -%c needs a value or is unknown (see loupe --help)\n", optopt);
            else fprintf(stderr, "error: unknown option '%s' (see loupe --help)\n", argv[optind - 1]);
            goto usage;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "error: give at most one MODEL (got '%s' and '%s')\n", argv[optind], argv[optind + 1]);
        goto usage;
    }
    if (tui && (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))) {
        fprintf(stderr, "error: --tui: the browser needs a terminal on stdin and stdout\n");
        goto usage;
    }
    /* Past a file size limit (ulimit -f) a write fails with EFBIG and is reported, instead
     * of the signal killing loupe mid-file. */
    signal(SIGXFSZ, SIG_IGN);
    lp_cmd_set_tui(lp_tui_run);
    lp_session s;
    lp_session_init(&s, stdout);
    bool progress_live = false;
    s.progress = progress_to_stderr;
    s.progress_ctx = &progress_live;
    if (mode && lp_mode_from_name(mode, &s.mode)) {
        fprintf(stderr, "error: --mode: %s\n", lp_errmsg());
        status = 2;
        goto out;
    }
    if (tokenizer) s.tokenizer_path = strdup(tokenizer);
    char db_default[4096];
    if (!db && default_db_path(db_default, sizeof db_default) == 0) db = db_default;
    if (db && lp_store_open(&s.store, db)) {
        fprintf(stderr, "error: %s\n", lp_errmsg());
        status = 1;
        goto out;
    }
    /* Interactive (the prompt or the browser) without MODEL: open the bundled model. */
    bool at_prompt = interactive || (n_act == 0 && isatty(STDIN_FILENO));
    char default_buf[4096];
    const char *model = optind < argc ? argv[optind] : NULL;
    if (!model && (tui || at_prompt) && (model = default_model_path(default_buf, sizeof default_buf)) &&
        at_prompt && !tui)
        fprintf(stderr, "loupe: no MODEL given: opened %s\n", model);
    if (model && lp_session_load(&s, model)) {
        fprintf(stderr, "error: %s\n", lp_errmsg());
        status = 1;
        goto out;
    }
    bool go = true;
    for (int i = 0; go && i < n_act; i++) {
        if (acts[i].kind == 'e') {
            go = run_line(&s, &r, acts[i].arg, NULL, 0);
            continue;
        }
        bool is_stdin = strcmp(acts[i].arg, "-") == 0;
        FILE *in = is_stdin ? stdin : fopen(acts[i].arg, "r");
        if (!in) {
            fprintf(stderr, "error: --file: cannot open '%s': %s\n", acts[i].arg, strerror(errno));
            status = 2;
            goto out;
        }
        go = run_stream(&s, &r, in, is_stdin ? "stdin" : acts[i].arg);
        if (!is_stdin) fclose(in);
    }
    if (go && tui) {
        int fails = 0;
        if (lp_tui_run(&s, &fails)) {
            fprintf(stderr, "error: %s\n", lp_errmsg());
            r.failures++;
        }
        r.failures += fails;
    } else if (go && (interactive || n_act == 0)) {
        if (isatty(STDIN_FILENO)) r.failures += lp_repl_run(&s, r.bail);
        else run_stream(&s, &r, stdin, "stdin");
    }
    status = r.failures ? 1 : 0;
out:
    lp_store_close(s.store);
    s.store = NULL;
    lp_session_free(&s);
    free(acts);
    return status;
usage:
    free(acts);
    return 2;
}
