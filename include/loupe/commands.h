/* The command language shared by -e, -f, stdin scripts, the REPL and the browser's `:`
 * line: one table of commands drives dispatch, help and completion. */
#ifndef LOUPE_COMMANDS_H
#define LOUPE_COMMANDS_H

#include <stdbool.h>
#include <stdio.h>

#include "loupe/model.h"
#include "loupe/output.h"
#include "loupe/run.h"
#include "loupe/store.h"

/* The progress of a long command (train), for whoever shows it: the prompt writes it to
 * stderr, the browser to its spinner line and output pane. */
typedef enum {
    LP_PROGRESS_NOTE,   /* a line to keep: what is about to happen */
    LP_PROGRESS_STATUS, /* the live state, replacing the one before (a progress bar) */
    LP_PROGRESS_LOG,    /* a line for a record (each evaluation); a live display may skip it */
    LP_PROGRESS_END,    /* the live state is over (text "") */
} lp_progress_kind;
typedef void (*lp_progress_fn)(void *ctx, lp_progress_kind kind, const char *text);

/* What a sequence of commands works on. Results go to out, progress to the progress sink;
 * error lines are the caller's to print (lp_errmsg) so that the engine never writes to the
 * terminal on its own. */
typedef struct {
    lp_model *model;
    lp_run *run;
    lp_mode mode;
    FILE *out;
    char *tokenizer_path;  /* --tokenizer for the next load, or NULL */
    bool quit;             /* set by `quit` */
    lp_store *store;       /* the analysis database, or NULL when there is none */
    int64_t session_id;    /* current session in the store (0 before the first use) */
    int64_t model_id;      /* the loaded model's row in the store (0 if not recorded) */
    int64_t run_id;        /* the current run's row in the store (0 if not recorded) */
    int source_depth;      /* nesting of `source` */
    lp_progress_fn progress; /* where long commands report progress; NULL: nowhere */
    void *progress_ctx;
    struct lp_session_sae *saes; /* dictionaries loaded beside the model (sae load), n_saes of them */
    int n_saes;
    const char *sae_opts[3]; /* the running command's --sae, --steer, --clamp (run, generate): what its runs
                                and generation add to the spliced dictionaries; NULL otherwise */
    struct lp_record_buf *record; /* recording's buffers, kept at the longest run's size (cmd_store.c) */
} lp_session;

typedef int (*lp_cmd_fn)(lp_session *s, int argc, char **argv, const char *rest);

typedef struct {
    const char *name;
    const char *usage;     /* arguments and options, as in DESIGN.md */
    const char *summary;   /* one line that fits `help` on 80 columns (70 characters at most) */
    const char *example;
    lp_cmd_fn fn;
    bool raw_text;         /* takes the rest of the line as text: unbalanced quotes are not an error */
    const char *detail;    /* more than the summary says, for `help CMD`; NULL when nothing */
} lp_command;

void lp_session_init(lp_session *s, FILE *out);
void lp_session_free(lp_session *s);

/* Runs one command line (comments and blank lines do nothing). Returns LP_OK or an error
 * code with lp_errmsg() saying what failed and what to do. */
int lp_exec(lp_session *s, const char *line);

/* Loads a model into the session (replacing the current one and its run). */
int lp_session_load(lp_session *s, const char *path);

const lp_command *lp_command_table(int *n);
/* The command a name or unambiguous prefix names; NULL with an error message otherwise
 * (suggesting the nearest name for a typo). */
const lp_command *lp_command_find(const char *name);

/* Splits a command line into words: whitespace separates, "..." and '...' quote, and
 * backslash escapes inside double quotes (\n \t \" \\). Returns the count, or -1 (with a
 * message) for an unterminated quote. *words is one allocation the caller frees. */
int lp_split_words(const char *line, char ***words);

/* ---- The session's dictionaries (sae load), for the browser's features view: the numbers
 * `features` and `feature` print, computed by the same code. */

/* Dictionary i (0 .. n_saes - 1, in the order loaded), its name and the site it reads
 * ("blocks.1.resid_pre"); NULL past the end. Borrowed: valid until the next command. */
const struct lp_sae *lp_session_sae(const lp_session *s, int i, const char **name, const char **site);
/* The path dictionary i was loaded from, as a dataset that tracks its features records it
 * (settings' features: path, site); NULL past the end. Borrowed as lp_session_sae's. */
const char *lp_session_sae_path(const lp_session *s, int i);
/* Dictionary i's features at every position of the current run: *acts (T, d_sae), the
 * caller's to free (what `features` ranks; a spliced dictionary reads what came into its
 * site, kept by the splice). */
int lp_session_sae_encode(const lp_session *s, int i, float **acts);
/* The rows dictionary i reads on the current run, *x (T, d_in), the caller's to free: what
 * lp_session_sae_encode encodes. *serial: a number no other dictionary loaded in this process
 * has, so that a caller keeping an encoding knows it is of this dictionary. */
int lp_session_sae_input(const lp_session *s, int i, float **x, unsigned *serial);

typedef struct {
    int id;      /* a token or a feature */
    float value;
} lp_scored;

/* What `feature F --k K` prints after the activations. */
typedef struct {
    int pos;                 /* where the feature is strongest (the last position on a tie with it, or when it
                                never fires): the final norm's scale is frozen there */
    bool has_logits;         /* false: the dictionary writes a site outside the residual stream */
    char unavailable[256];   /* then why */
    int n_promoted, n_suppressed, n_nearest;
    lp_scored *promoted;     /* (n_promoted) tokens, largest effect per unit activation first */
    lp_scored *suppressed;   /* (n_suppressed) tokens, most negative first */
    lp_scored *nearest;      /* (n_nearest) features, largest decoder cosine first */
} lp_feature_effects;

/* Feature f of dictionary i on the current run, acts (T, d_sae) from lp_session_sae_encode:
 * k (1..1000) of each list. *out is cleared on failure; lp_feature_effects_clear frees it. */
int lp_session_feature_effects(const lp_session *s, int i, int f, const float *acts, int k, lp_feature_effects *out);
void lp_feature_effects_clear(lp_feature_effects *fx);

#endif
