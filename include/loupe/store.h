/* The analysis store: an SQLite file holding models, sessions, runs (tokens, top
 * predictions, per-head metrics), saved tensors and findings, queryable with SQL in loupe
 * or any SQLite client. The schema is versioned with PRAGMA user_version and migrated step
 * by step, each step in one transaction. Every value written goes through bound parameters.
 * The database runs in WAL mode with foreign keys on and a busy timeout, so that several
 * loupe processes can write to one file at once.
 *
 * Results of queries are JSON (jansson): an array of row objects, plus a table in the
 * output module's form ({"columns": [...], "rows": [[...]]}) that keeps the column order. */
#ifndef LOUPE_STORE_H
#define LOUPE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

typedef struct lp_store lp_store;

/* Opens (creating if needed, migrating if older) the database at path; ":memory:" works.
 * Refuses, with one clear message and the file untouched: a file that is not an SQLite
 * database, a database whose schema is newer than this loupe knows, a read-only file
 * (LP_EIO / LP_EFORMAT / LP_EUNSUPPORTED). Does not create missing parent directories. */
int lp_store_open(lp_store **out, const char *path);
void lp_store_close(lp_store *st);   /* NULL-safe */
const char *lp_store_path(const lp_store *st);
int lp_store_schema_version(const lp_store *st);

/* A batch: one transaction holding many recordings (dataset commits its items so). Between
 * begin and commit every lp_store_put_* is a savepoint inside it, undone alone when it fails;
 * nothing is on disk until commit, and all of it is then. A second begin is an error. */
int lp_store_batch_begin(lp_store *st);
int lp_store_batch_commit(lp_store *st);   /* on failure everything since begin is rolled back */
void lp_store_batch_rollback(lp_store *st); /* keeps lp_errmsg; does nothing without a batch */
bool lp_store_in_batch(const lp_store *st);
/* An item inside a batch: what is recorded after lp_store_batch_item is kept by
 * lp_store_batch_item_end(keep) or undone (keep false; lp_errmsg kept), the batch going on. */
int lp_store_batch_item(lp_store *st);
int lp_store_batch_item_end(lp_store *st, bool keep);

/* ---- recording ---- */

typedef struct {
    const char *path, *arch;
    int n_layer, n_head, n_kv_head, d_model, d_mlp, vocab, n_ctx;
    int64_t n_params;
    const char *dtype;
    const char *fingerprint;  /* identifies the weights: same fingerprint + path = same model row */
    const char *head;         /* "lm", "masked-lm", "classifier", "none" (lp_head_kind_name); NULL unknown */
} lp_store_model;

/* The model's row id, inserting it if new. */
int lp_store_put_model(lp_store *st, const lp_store_model *m, int64_t *id);

/* Sessions group runs and findings. Names are unique; "default" is created on demand. */
int lp_store_session_new(lp_store *st, const char *name, int64_t *id);          /* LP_EINVAL if the name exists */
int lp_store_session_find(lp_store *st, const char *name_or_id, int64_t *id);   /* by name, or by id if numeric */
int lp_store_session_default(lp_store *st, int64_t *id);

typedef struct {
    int pos, rank, id;
    const char *token;  /* raw token bytes (may be invalid UTF-8: stored as a BLOB-safe TEXT), or NULL */
    size_t token_len;
    double prob, logit;
} lp_store_prediction;

/* A head's metrics. Self-attention rows use entropy .. max_attn; cross-attention rows (kind
 * "cross") entropy, max_attn and source_eos .. coverage (heads.h), the others NAN. */
typedef struct {
    int layer, head;
    double entropy, prev_token, first_token, duplicate_token, induction, max_attn;
    /* schema v4 */
    const char *stack;  /* "enc" or "dec"; NULL: the run's model's ("dec" for an LM, else "enc") */
    const char *kind;   /* "self" or "cross"; NULL: "self" */
    double source_eos, diagonal, monotonic, coverage; /* cross only (stored NULL for self) */
} lp_store_head_metric;

/* Where a decoder position attends most in the source (an encoder-decoder's cross-attention):
 * per decoder layer and head, head -1 for the argmax of the layer's head-mean. */
typedef struct {
    int layer, head, target_pos, source_pos;
    double weight;
} lp_store_cross_max;

/* A dictionary's strongest features at each of a run's positions (schema v8): feature and
 * act (n_pos, k), rank order, feature -1 where a position has fewer than k active ones. The
 * dictionary's row (saes) is found by name, path and site, or added. */
typedef struct {
    const char *name, *path, *site;
    const char *out_site;           /* a transcoder's; NULL for an SAE */
    const char *architecture;
    int d_in, d_sae;
    int k, n_pos;
    const int *feature;             /* (n_pos, k) */
    const float *act;               /* (n_pos, k) */
} lp_store_features;

typedef struct {
    int64_t session_id, model_id;
    const char *text;               /* NULL for runs given as ids */
    const int *ids;                 /* (n) */
    const char *const *token_text;  /* (n) raw bytes each, or NULL */
    const size_t *token_len;        /* (n) */
    int n;
    const lp_store_prediction *preds; /* (n_preds) */
    int n_preds;
    const lp_store_head_metric *heads;  /* (n_heads) */
    int n_heads;
    /* schema v3 */
    const char *pair;               /* a sentence pair's second text, or NULL */
    const int *types;               /* (n) token types, or NULL: all 0 */
    const char *const *special;     /* (n) each token's role ("cls", "sep", "mask", ...; NULL a word), or NULL */
    /* schema v4: an encoder-decoder's run (target_kind set). text is the source, the tokens
     * above the decoder's positions (side 'target'), these the encoder's (side 'source'). */
    const char *target;             /* the target text (given, or the greedy output decoded); NULL: none */
    const char *target_kind;        /* "given" or "greedy"; NULL: a one-stack model */
    const int *src_ids;             /* (n_src) */
    const char *const *src_text;    /* (n_src) raw bytes each, or NULL */
    const size_t *src_len;          /* (n_src) */
    const char *const *src_special; /* (n_src), or NULL */
    int n_src;
    const lp_store_cross_max *cross; /* (n_cross) */
    int n_cross;
    /* schema v8: the loaded dictionaries' features */
    const lp_store_features *features; /* (n_features) */
    int n_features;
    /* schema v10: what the forward was made through (dictionaries spliced in, steering,
     * clamps) as JSON, the run's "edits"; NULL: the model alone */
    const char *edits;
} lp_store_run;

/* Records a run with its tokens, predictions and head metrics in one transaction. */
int lp_store_put_run(lp_store *st, const lp_store_run *run, int64_t *run_id);

/* A stored run as `rerun` needs it to run it again exactly. */
typedef struct {
    int64_t model_id;  /* 0 when NULL */
    int *ids, *types;  /* (n) */
    int n;
    char *text, *pair; /* NULL when the run had none */
    /* schema v4: an encoder-decoder's run: target_kind "given" or "greedy" (NULL: one stack),
     * the source's ids (n_src 0 when the file did not keep them: version 3), the target text;
     * ids above are then the decoder's input (the start id, then the target). */
    char *target, *target_kind;
    int *src_ids;      /* (n_src) */
    int n_src;
    char *edits;       /* schema v10: the run's edits (lp_store_run.edits), or NULL */
} lp_store_saved_run;
/* Reads a stored run into *out (its arrays and strings malloc'd: lp_store_saved_run_free). */
int lp_store_get_run(lp_store *st, int64_t run_id, lp_store_saved_run *out);
void lp_store_saved_run_free(lp_store_saved_run *r); /* frees the members, NULL-safe */

/* A float32 tensor of a run (e.g. name "pattern", layer 3, head -1 = all heads), stored as
 * a little-endian BLOB with dtype 'float32' and its shape as a JSON array. */
int lp_store_put_tensor(lp_store *st, int64_t run_id, const char *name, int layer, int head, const int *shape,
                        int ndim, const float *data, int64_t *tensor_id);

/* A finding: kind "note" (text) or "tag" (text = the tag's name); layer/head/pos = -1 when
 * not given; run_id 0 when there is no run. */
int lp_store_put_finding(lp_store *st, int64_t session_id, int64_t run_id, const char *kind, const char *text,
                         int layer, int head, int pos, int64_t *finding_id);
/* Where a finding is (schema v4): the stack ("enc" or "dec") and attention kind ("self" or
 * "cross") its layer and head are in, NULL when it has no place; pos is a position of that
 * stack's side (an encoder-decoder's encoder: the source). */
typedef struct {
    const char *stack, *attn_kind;
    int layer, head, pos; /* -1: not given */
} lp_store_place;
int lp_store_put_finding_at(lp_store *st, int64_t session_id, int64_t run_id, const char *kind, const char *text,
                            const lp_store_place *at, int64_t *finding_id);

/* ---- analyses (schema v2) ---- */

/* An input attribution of a run: one score per input position (attributions table, scores
 * in attribution_scores; attributions_view joins them with the tokens). */
typedef struct {
    int64_t run_id;
    const char *method;       /* saliency, gxi, ig, occlusion, rollout, attnxnorm */
    const char *objective;    /* logit, logprob, logit_diff */
    int pos;                  /* the position whose prediction is explained */
    int target_id;            /* -1 when the method has no target (rollout, attnxnorm) */
    int contrast_id;          /* -1 unless logit_diff */
    const char *params_json;  /* e.g. {"steps":32,"baseline":"zero"}; NULL = {} */
    const float *scores;      /* (n) one per input position */
    int n;
    double delta;             /* completeness gap; NAN when the method has none */
} lp_store_attribution;
int lp_store_put_attribution(lp_store *st, const lp_store_attribution *a, int64_t *id);
/* The same for an encoder-decoder's run (schema v4), whose attribution scores its source and
 * its decoder's input: scores[0..n_source) are the source's (side 'source', positions from
 * 0), the other n - n_source the decoder's positions (side 'target', from 0). */
int lp_store_put_attribution_split(lp_store *st, const lp_store_attribution *a, int n_source, int64_t *id);

/* A step of an attribution series beside its attribution. */
typedef struct {
    double prob, entropy, contrast_diff; /* NAN when there is none */
    int64_t *attribution_id;             /* where to write the step's attribution id (may be NULL) */
} lp_store_step;

/* eval's judgement of an attribution (schema v5): measure[] in the evaluations table's order,
 * f_x, f_empty, comprehensiveness_aopc, sufficiency_aopc, deletion_auc, insertion_auc,
 * logodds_drop, loo_tau, infidelity, max_sensitivity (NAN: none); its four curves by
 * LP_STORE_CURVES' names, each curve_n[c] points (x, value). */
enum { LP_STORE_EVAL_MEASURES = 10 };
extern const char *const LP_STORE_CURVES[4]; /* comprehensiveness, sufficiency, deletion, insertion */
typedef struct {
    const char *f;            /* "prob" or "logit_diff" */
    const char *remove;       /* delete, mask, baseline */
    int remove_token;         /* -1: none or the zero vector */
    int bins, logodds_pct;
    double measure[LP_STORE_EVAL_MEASURES];
    const char *settings_json; /* NULL = {} */
    const double *curve_x[4], *curve[4];
    int curve_n[4];
    int n_source;             /* an encoder-decoder's: the attribution's first n_source scores are the source's */
} lp_store_evaluation;
/* Records the attribution a judged and its evaluation together (evaluations,
 * evaluation_curves; evaluations_view joins the attribution's method and run); *id the
 * evaluation's. */
int lp_store_put_evaluation(lp_store *st, const lp_store_attribution *a, const lp_store_evaluation *ev, int64_t *id);

/* An attribution series (schema v5): n steps, each explaining the run's token at from + i by
 * the prediction before it, recorded in one transaction (attribution_series, attribution_steps,
 * each step's attribution and scores; attribution_matrix joins them). generated: the tokens
 * came from generate --attr. n_source as for lp_store_put_attribution_split. */
int lp_store_put_attribution_series(lp_store *st, const lp_store_attribution *steps, const lp_store_step *meta, int n,
                                    int from, bool generated, int n_source, int64_t *series_id);

/* Any other analysis of a run (kind "dla", "patch", "lens", ...): its parameters and its
 * result as JSON text (analyses table). */
int lp_store_put_analysis(lp_store *st, int64_t run_id, const char *kind, const char *params_json,
                          const char *result_json, int64_t *id);

/* Automatic head classification (`scan`): per-head scores and the labels given (a
 * space-separated list such as "induction prev_token", or ""), for a model; run_id 0 when
 * the scan used generated sequences rather than a stored run. */
typedef struct {
    int layer, head;
    double prev_token, duplicate_token, induction, first_token;
    const char *labels;
    const char *stack, *kind; /* schema v4: NULL: the model's stack ("dec" for an LM, else "enc"), "self" */
    /* schema v4: an encoder's scores (Clark et al.) and an encoder-decoder's (circuits.h);
     * NAN: not scored (stored NULL). Set every one: a zero is stored as a score. */
    double next_token, cls_sink, sep_sink, broad, source_eos, aligned, diagonal, monotonic, coverage;
} lp_store_head_scan;
int lp_store_put_head_scan(lp_store *st, int64_t model_id, int64_t run_id, const lp_store_head_scan *rows, int n,
                           int64_t *scan_id);

/* ---- reading ---- */

/* Runs one or more SQL statements; the last statement that returns columns gives *rows
 * (array of objects) and *table (see above); either pointer may be NULL. Unless `write`,
 * statements that would change the database are refused (LP_EINVAL, nothing changed).
 * params: a JSON array of values bound to ?1, ?2, ... (NULL for none). BLOB columns come
 * back as {"blob_bytes": N}. */
int lp_store_query(lp_store *st, const char *sql, json_t *params, bool write, json_t **rows, json_t **table);
/* The same, keeping every result: *results is an array of {"rows", "table"}, one per
 * statement that returns columns, in order (the sql command prints each). */
int lp_store_query_all(lp_store *st, const char *sql, bool write, json_t **results);

#endif
