/* What the command files share: argument parsing, checks, and handing a result to the
 * output. Not a public header; commands.c holds the table that names every command. */
#ifndef LOUPE_CMD_H
#define LOUPE_CMD_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>

#include "loupe/attr.h"
#include "loupe/commands.h"

/* An option of a command: "--name VALUE", or "--name" alone when flag. */
typedef struct {
    const char *name;
    bool flag;
    const char *value; /* set when given; "" for flags */
} lp_opt;

/* Sorts argv[1..argc) into options (spec) and at most max_pos positionals, in order. */
int lp_cmd_opts(const char *cmd, int argc, char **argv, lp_opt *spec, int nspec, char **pos, int max_pos, int *npos);
/* The free-text commands (run, note, sql): `CMD [OPTIONS] [--] TEXT`. Options come first,
 * read from rest (the raw line after the command's name); "--" ends them; the rest of the
 * line, blanks around it dropped, is the text as typed, except that a text that is one
 * quoted word loses its quotes ("..." with escapes, as an option value). An unknown option
 * before the text, or one of spec written inside it (without "--"), is an error. *text is
 * one allocation the caller frees, holding the option values too. */
int lp_cmd_text(const char *cmd, const char *rest, lp_opt *spec, int nspec, char **text);
int lp_cmd_int(const char *s, const char *what, long lo, long hi, long *out);
/* A comma-separated list of token ids in 0..vocab-1 given to option opt ("--ids"): *ids
 * (malloc'd), *n >= 1; otherwise an error naming opt. */
int lp_cmd_parse_ids(const char *opt, const char *list, int vocab, int **ids, int *n);
/* "run A --pair B", "run A --target B": where word (an option written after the text) starts
 * when it follows some text and no "--" came before it (which would make it text), else NULL;
 * the options-first form ("run --pair B A") is left to lp_cmd_text. */
const char *lp_cmd_word_after_text(const char *rest, const char *word);
int lp_cmd_float(const char *s, const char *what, double *out);

int lp_cmd_need_model(lp_session *s);
int lp_cmd_need_run(lp_session *s);
/* --pos P: the last position when arg is NULL; negative counts from the end. */
int lp_cmd_pos(const lp_session *s, const char *arg, int *pos);
/* A token as a JSON string of its raw bytes (null without a tokenizer). */
json_t *lp_cmd_token(const lp_session *s, int id);
/* Encoders. The first position of the run holding the mask token ([MASK], <mask>), or -1. */
int lp_cmd_first_mask(const lp_session *s);
/* A classifier's labels for the current run: [{"id","label","prob","logit"}], by id (prob
 * the softmax over the labels, each label's sigmoid for a multi-label classifier, null for
 * a one-label regression head). */
json_t *lp_cmd_labels(const lp_session *s);
/* A target or contrast as JSON: {"id","token"}, or a classifier's {"id","label"}; null for -1. */
json_t *lp_cmd_output_obj(const lp_session *s, int id);
/* A classifier's --target/--vs LABEL (its name in id2label) or --target-id/--vs-id ID; -1 when
 * neither is given. */
int lp_cmd_label(const lp_session *s, const char *name, const char *id, int *out);
/* The current run must have token logits (a decoder or a masked LM): otherwise an error
 * for `what` saying what the model gives instead. */
int lp_cmd_need_token_head(lp_session *s, const char *what);
/* --pos for a token prediction: arg as lp_cmd_pos; without it the last position, or a
 * masked LM's first mask (an error naming the mask token when there is none). */
int lp_cmd_out_pos(const lp_session *s, const char *what, const char *arg, int *pos);
/* The top k of logits (V) as [{"rank","id","token","prob","logit"}]. */
json_t *lp_cmd_top_k(const lp_session *s, const float *logits, int V, int k);
/* The token a --target TOKEN / --target-id ID names (token: its vocabulary string, e.g.
 * "Ġthe", or text that encodes to exactly one token, e.g. " the"); *id = -1 when neither
 * is given. */
int lp_cmd_target(const lp_session *s, const char *token, const char *id, int *out);
/* --baseline zero|pad|bos|TOKEN or --baseline-id ID (attr, eval; what names the command): a
 * token id, or -1 for the zero vector. */
int lp_cmd_baseline(const lp_session *s, const char *what, const char *name, const char *id, int *out);
/* Prints a result in the session's mode and releases it (table may be NULL). */
void lp_cmd_emit(lp_session *s, json_t *value, json_t *table);
/* Hands a line of progress to the session's sink (nothing without one). */
void lp_cmd_progress(lp_session *s, lp_progress_kind kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Tokenizes text (and a pair's second text, or NULL) as `run` does: bos 1 adds BOS (or the
 * template's specials), 0 leaves it out, -1 as the tokenizer does by default. *ids and
 * *types (NULL without a pair) malloc'd; *n may be 0. */
int lp_cmd_encode_text(const lp_session *s, const char *text, const char *pair, int bos, int **ids, int **types, int *n);
/* While a long command runs from a script, SIGINT and SIGTERM ask it to stop (lp_cancel_request)
 * instead of ending loupe; only signals at their default are caught. Restore afterwards. */
void lp_cmd_catch_stop_signals(struct sigaction old[2]);
void lp_cmd_restore_stop_signals(const struct sigaction old[2]);
/* Makes ids[0..n) (with token types, NULL: all 0) the current run, records it in the store
 * (if any, with its text and a pair's second text, pair NULL otherwise) and prints it (a
 * pair's text as "A --pair B", as it could be typed again); with stored_id, it is that
 * stored run again and nothing new is recorded. */
int lp_cmd_start_run(lp_session *s, const int *ids, const int *types, int n, const char *text, const char *pair,
                     int64_t stored_id);
/* lp_cmd_start_run without printing: *record_rc is the recording's status (the run is current
 * even when recording failed); the return value is the run's. */
int lp_cmd_set_run(lp_session *s, const int *ids, const int *types, int n, const char *text, const char *pair,
                   int64_t stored_id, int *record_rc);
/* r, a run the caller made (dataset's packed forward), becomes the current run (taken over)
 * and is recorded as lp_cmd_set_run's; returns the recording's status. */
int lp_cmd_adopt_run(lp_session *s, lp_run *r, const char *text, const char *pair, int64_t stored_id);
/* `run` for an encoder-decoder (lp_model_encoder set): the raw text after "run". */
int lp_cmd_run_seq2seq(lp_session *s, const char *rest);
/* patch's corrupted run of an encoder-decoder: the source from src_text (tokenized with its
 * template) or src_ids, the target from tgt_text or tgt_ids (NULL: the current run's own),
 * each as long as the current run's; at least one given. */
int lp_cmd_corrupt_seq2seq(const lp_session *s, const char *src_text, const char *src_ids, const char *tgt_text,
                           const char *tgt_ids, lp_run **out);
/* Makes an encoder-decoder's run current: the encoder over src (S), the decoder over the
 * start id and tgt (T); records it with its source and target texts (NULL for ids) and
 * prints it, as lp_cmd_start_run does (greedy: the decoder made tgt). */
int lp_cmd_start_seq2seq(lp_session *s, const int *src, int S, const int *tgt, int T, const char *source,
                         const char *target, bool greedy, int64_t stored_id);
/* lp_cmd_start_seq2seq without printing: *record_rc as lp_cmd_set_run's. */
int lp_cmd_set_run_seq2seq(lp_session *s, const int *src, int S, const int *tgt, int T, const char *source,
                           const char *target, bool greedy, int64_t stored_id, int *record_rc);
/* The prediction attr and eval explain (what names the command): *pos from pos_arg (a
 * classifier's is 0, where it reads; a masked LM's default its first mask; else the last
 * position), *target from target/target_id (a classifier's label by name; default the model's
 * top prediction at *pos), *contrast from vs/vs_id (-1 when neither is given). */
int lp_cmd_prediction(const lp_session *s, const char *what, const char *pos_arg, const char *target,
                      const char *target_id, const char *vs, const char *vs_id, int *pos, int *target_out,
                      int *contrast);
/* An attribution's options as the store records them (attributions.params): ig's steps and
 * max_steps, the baseline as given (--baseline NAME, --baseline-id: "id", else "zero") and its
 * id, occlusion's window, attnxnorm's layer. */
json_t *lp_cmd_attr_params(const lp_attr_spec *sp, const char *baseline, const char *baseline_id);
/* The loaded model's row in the store, recording the model on first use (s->store set). */
int lp_cmd_model_row(lp_session *s, int64_t *id);
/* Records the current run (tokens, top predictions, head metrics) in the store, setting
 * s->run_id; does nothing without a store. */
int lp_cmd_record_run(lp_session *s, const char *text, const char *pair);
/* The same for an encoder-decoder's run (its source, encoder heads, cross-attention metrics
 * and alignment too): the source text (NULL for ids), the target text (NULL: given as ids,
 * or greedy, kept as the output decoded), greedy when the decoder made the target. */
int lp_cmd_record_seq2seq(lp_session *s, const char *source, const char *target, bool greedy);
/* Makes recording's buffers (the top predictions of every position) room for runs of n
 * tokens and touches them, so that the first run of that length does not pay their first
 * touch (the heap grown, or pages mapped afresh); they are kept at the largest size asked.
 * lp_cmd_record_free returns them (the session's end). */
int lp_cmd_record_reserve(lp_session *s, int n);
void lp_cmd_record_free(lp_session *s);
/* What a model's load starts for its first long run (lp_run_prefault) and makes ready for
 * its recording; returns the length prefaulted, 0 when nothing was started. */
int lp_cmd_prefault(lp_session *s);

/* A dictionary loaded beside the model: its name, its site(s) resolved against the model. */
struct lp_session_sae {
    char name[160];
    char path[4096];
    struct lp_sae *sae;
    lp_act_kind kind, out_kind; /* the site read and (a transcoder's) the site written; out_kind == kind for SAEs */
    int layer, out_layer;
    char site[160], out_site[160];
    int splice;                 /* lp_sae_splice: LP_SAE_PASS unless 'sae splice' */
    float *seen;                /* (seen_rows, d_in): the rows it read in the current run when it was spliced
                                   into it (what features reads: the site itself then holds its output) */
    int seen_rows;
    const lp_run *seen_run;     /* the run seen belongs to */
    int store_k;                /* features kept per position when a run is stored (sae load --store-k); 0 none */
    unsigned serial;            /* distinct for every dictionary loaded in the process (lp_session_sae_input) */
};
/* The dictionary called name (NULL: the last loaded), or NULL with the error set naming cmd. */
const struct lp_session_sae *lp_cmd_find_sae(const lp_session *s, const char *cmd, const char *name);
/* The dictionaries names lists (NAME[,NAME...]; NULL: the last loaded), each once, into out
 * (*n of them, at most LP_CMD_MAX_SAES), or the error set naming cmd. */
#define LP_CMD_MAX_SAES 64
int lp_cmd_find_saes(const lp_session *s, const char *cmd, const char *names, const struct lp_session_sae **out,
                     int *n);
/* e's rows in the current run: *x (T, d_in) what it reads (kept by a splice, whose site then
 * holds its output), *y (T, d_out) what its written site holds; both the caller's to free. */
int lp_cmd_sae_rows(const lp_session *s, const struct lp_session_sae *e, float **x, float **y);
/* The loaded dictionaries' strongest features at each position of the current run, as the
 * store keeps them (each one's store_k per position, the active ones only): *out (*n) and its
 * arrays are the caller's, freed by lp_cmd_sae_store_free. None for an encoder-decoder's run. */
int lp_cmd_sae_store_rows(const lp_session *s, lp_store_features **out, int *n);
void lp_cmd_sae_store_free(lp_store_features *f, int n);
/* examples feature ID: the k strongest activations of feature id (its text) of the dictionary
 * called name (NULL: the last loaded) over dataset ds's runs, from the features the store kept
 * for them; rows as examples gives them (rank, item, text, metric, pos, token, value, run_id).
 * NULL with *rc set on failure. */
json_t *lp_cmd_feature_examples(lp_session *s, const char *name, const char *id, json_int_t ds, int k, int *rc);
/* sae attr [--sae NAME] [--target T|--target-id ID] [--vs T|--vs-id ID] [--objective O] [--pos P]
 * [--k K]: gradient x activation of the objective for each feature, the error node and the
 * decoder's constant part, with the closure (argv from "attr" on). */
int lp_cmd_sae_attr(lp_session *s, int argc, char **argv);
/* sae patch --corrupt TEXT|--corrupt-ids L [--sae NAME] [--pos P] [--target ..] [--vs ..] [--denoise]
 * [--k K]: each feature's (and the error term's) activation taken from the other run, the
 * logit difference's change (argv from "patch" on). */
int lp_cmd_sae_patch(lp_session *s, int argc, char **argv);
/* A patching recovery is undefined when the clean and corrupted metrics are closer than
 * this: the ratio would be rounding noise over rounding noise (patch, sae patch). */
#define LP_RECOVERY_MIN_GAP 1e-4
/* The corrupted prompt of patching (what names the command): text tokenized as the run was,
 * or list as ids, with the run's length and token types; pair an encoder's second text.
 * *ids and *types are the caller's to free. */
int lp_cmd_corrupt_ids(const lp_session *s, const char *what, const char *text, const char *list, const char *pair,
                       int **ids, int **types, int *n);
/* Records an analysis of the current run of kind (when there is a store and the run is in it;
 * params is taken) and sets "analysis_id" in result. */
int lp_cmd_record_analysis(lp_session *s, const char *kind, json_t *params, json_t *result);
/* sae splice NAME [--no-error] / sae unsplice NAME: on, with or without the error term, or
 * off; the current run is made again through the new forward. */
int lp_cmd_sae_splice(lp_session *s, const char *name, bool on, bool no_error);
/* row gets ce_orig, ce_sae (spliced alone, no error term), ce_zero (its written site
 * zeroed) and ce_recovered = (ce_zero - ce_sae) / (ce_zero - ce_orig) over the current run's
 * next tokens; nulls where there are none (one token, not a language model). */
int lp_cmd_sae_ce(const lp_session *s, const struct lp_session_sae *e, json_t *row);
/* A new run of ids (types: NULL for all 0) through the session's spliced dictionaries and the
 * running command's --steer and --clamp (s->sae_opts); the plain run when there are none. */
int lp_cmd_sae_run_new(lp_session *s, lp_run **r, const int *ids, const int *types, int n);
/* What the session's runs go through now, for a run's output: {"spliced":[{"sae","splice"}],
 * "sae","steer","clamp"}, or NULL when nothing (a new reference). */
json_t *lp_cmd_sae_edits_json(const lp_session *s);
/* The same as canonical JSON text (sorted keys, compact: what runs.edits keeps and rerun
 * compares), *text NULL when nothing; LP_ENOMEM. */
int lp_cmd_sae_edits_text(const lp_session *s, char **text);
/* The edit lp_generate_edited applies for the same: *editor NULL when there is none; free it
 * with lp_cmd_sae_edit_free. */
struct lp_cmd_sae_edits;
int lp_cmd_sae_edit_new(lp_session *s, int seen_rows, struct lp_cmd_sae_edits **out);
lp_edit lp_cmd_sae_edit(struct lp_cmd_sae_edits *e);
int lp_cmd_sae_edit_status(const struct lp_cmd_sae_edits *e);
void lp_cmd_sae_edit_free(struct lp_cmd_sae_edits *e);
/* Drops every loaded dictionary (a new model, the session's end). */
void lp_cmd_sae_clear(lp_session *s);

/* The commands, one function each: (session, words, raw text after the command's name). */
#define LP_COMMAND_FN(name) int lp_cmd_##name(lp_session *s, int argc, char **argv, const char *rest)
LP_COMMAND_FN(load);
LP_COMMAND_FN(info);
LP_COMMAND_FN(run);
LP_COMMAND_FN(tokens);
LP_COMMAND_FN(top);
LP_COMMAND_FN(logits);
LP_COMMAND_FN(attn);
LP_COMMAND_FN(generate);
LP_COMMAND_FN(heads);
LP_COMMAND_FN(attr);
LP_COMMAND_FN(eval);
LP_COMMAND_FN(lens);
LP_COMMAND_FN(dla);
LP_COMMAND_FN(neurons);
LP_COMMAND_FN(acts);
LP_COMMAND_FN(patch);
LP_COMMAND_FN(scan);
LP_COMMAND_FN(session);
LP_COMMAND_FN(note);
LP_COMMAND_FN(tag);
LP_COMMAND_FN(findings);
LP_COMMAND_FN(runs);
LP_COMMAND_FN(rerun);
LP_COMMAND_FN(save);
LP_COMMAND_FN(export);
LP_COMMAND_FN(sql);
LP_COMMAND_FN(train);
LP_COMMAND_FN(classify);
LP_COMMAND_FN(fill);
LP_COMMAND_FN(relbias);
LP_COMMAND_FN(dataset);
LP_COMMAND_FN(examples);
LP_COMMAND_FN(merge);
LP_COMMAND_FN(sae);
LP_COMMAND_FN(features);
LP_COMMAND_FN(feature);
LP_COMMAND_FN(train_sae);

/* The `tui` command opens the full-screen browser, which lives in ui/ (curses) where the
 * engine does not reach: main registers it. Without it, `tui` says it is not there. */
typedef int (*lp_tui_fn)(lp_session *s, int *failures);
void lp_cmd_set_tui(lp_tui_fn fn);

#endif
