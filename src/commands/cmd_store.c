/* The commands that keep things: recording runs, sessions, notes and tags, listing past
 * runs and findings, saving and exporting tensors, and SQL over the store. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/heads.h"
#include "loupe/npy.h"
#include "loupe/site.h"
#include "loupe/tokenizer.h"

#define TOP_PER_POSITION 5

static int need_store(lp_session *s) {
    if (!s->store) return lp_error(LP_EINVAL, "no database is open; start loupe with -d FILE");
    return LP_OK;
}

/* The current session, creating "default" on first use. */
static int current_session(lp_session *s, int64_t *id) {
    int rc = need_store(s);
    if (rc) return rc;
    if (!s->session_id && (rc = lp_store_session_default(s->store, &s->session_id))) return rc;
    *id = s->session_id;
    return LP_OK;
}

int lp_cmd_model_row(lp_session *s, int64_t *id) {
    if (!s->model_id) {
        const lp_config *c = lp_model_config(s->model);
        char fp[17];
        lp_model_fingerprint(s->model, fp);
        lp_store_model m = {lp_model_path(s->model), c->arch, c->n_layer, c->n_head, c->n_kv_head, c->d_model, c->d_mlp,
                            c->vocab, c->n_ctx, (int64_t)lp_model_param_count(s->model), lp_model_dtype(s->model), fp,
                            lp_head_kind_name(c->head)};
        int rc = lp_store_put_model(s->store, &m, &s->model_id);
        if (rc) return rc;
    }
    *id = s->model_id;
    return LP_OK;
}

/* A run's tokens as the store keeps them: their bytes and roles (n each; NULL without a
 * tokenizer). */
typedef struct {
    const char **text, **role;
    size_t *len;
} token_rows;

static int token_rows_new(token_rows *r, const lp_tokenizer *t, const int *ids, int n) {
    r->text = calloc((size_t)n + 1, sizeof *r->text);
    r->role = calloc((size_t)n + 1, sizeof *r->role);
    r->len = calloc((size_t)n + 1, sizeof *r->len);
    if (!r->text || !r->role || !r->len) return lp_error(LP_ENOMEM, "out of memory recording the run");
    for (int i = 0; i < n && t; i++) {
        r->text[i] = lp_tokenizer_token_bytes(t, ids[i], &r->len[i]);
        r->role[i] = lp_special_name(lp_tokenizer_role(t, ids[i]));
    }
    return LP_OK;
}

static void token_rows_free(token_rows *r) {
    free(r->text);
    free(r->role);
    free(r->len);
}

/* Appends a stack's metrics of every head to rec->heads (room made by the caller): self
 * attention of run (stack "enc" or "dec"), or with cross, the decoder's cross-attention. */
static int add_head_metrics(lp_store_run *rec, lp_store_head_metric *out, const lp_run *run, const char *stack,
                            bool cross) {
    const lp_config *c = lp_model_config(lp_run_model(run));
    size_t nh = (size_t)c->n_layer * c->n_head, k = cross ? LP_CROSS_METRIC_COUNT : LP_HEAD_METRIC_COUNT;
    float *m = malloc(nh * k * sizeof *m);
    if (!m) return lp_error(LP_ENOMEM, "out of memory recording the run");
    int rc = LP_OK;
    if (cross) rc = lp_cross_metrics(m, run);
    else rc = lp_head_metrics(m, run);
    for (size_t i = 0; i < nh && !rc; i++) {
        const float *v = m + i * k;
        lp_store_head_metric *h = &out[rec->n_heads++];
        *h = (lp_store_head_metric){(int)(i / c->n_head), (int)(i % c->n_head), NAN, NAN, NAN, NAN, NAN, NAN,
                                    stack, cross ? "cross" : "self", NAN, NAN, NAN, NAN};
        if (cross) {
            h->entropy = v[LP_CROSS_ENTROPY], h->max_attn = v[LP_CROSS_MAX_ATTN];
            h->source_eos = v[LP_CROSS_SOURCE_EOS], h->diagonal = v[LP_CROSS_DIAGONAL];
            h->monotonic = v[LP_CROSS_MONOTONIC], h->coverage = v[LP_CROSS_COVERAGE];
        } else {
            h->entropy = v[LP_HEAD_ENTROPY], h->prev_token = v[LP_HEAD_PREV_TOKEN];
            h->first_token = v[LP_HEAD_FIRST_TOKEN], h->duplicate_token = v[LP_HEAD_DUPLICATE_TOKEN];
            h->induction = v[LP_HEAD_INDUCTION], h->max_attn = v[LP_HEAD_MAX_ATTN];
        }
    }
    free(m);
    return rc;
}

/* An encoder-decoder's alignment: every decoder layer's cross-attention maxima, per head and
 * for the heads' mean (head -1). *out malloc'd. */
static int cross_maxima(const lp_run *run, lp_store_cross_max **out, int *n) {
    const lp_config *c = lp_model_config(lp_run_model(run));
    int T = lp_run_len(run), H = c->n_head;
    size_t count = (size_t)c->n_layer * (H + 1) * T;
    int *pos = malloc(count * sizeof *pos);
    float *w = malloc(count * sizeof *w);
    lp_store_cross_max *x = malloc(count * sizeof *x);
    int rc = !pos || !w || !x ? lp_error(LP_ENOMEM, "out of memory recording the run") : lp_cross_alignment(pos, w, run);
    for (size_t k = 0; k < count && !rc; k++) {
        int i = (int)(k % T), h = (int)(k / T % (H + 1)), l = (int)(k / T / (H + 1));
        x[k] = (lp_store_cross_max){l, h == H ? -1 : h, i, pos[k], w[k]};
    }
    free(pos);
    free(w);
    if (rc) {
        free(x);
        return rc;
    }
    *out = x;
    *n = (int)count;
    return LP_OK;
}

/* Records the current run: text (an encoder-decoder's source), a pair's second text, and an
 * encoder-decoder's target text and kind ("given", "greedy"; NULL for one-stack models). */
/* The top predictions of every position, as recording gathers them: kept in the session at
 * the largest size a run has needed (or lp_cmd_record_reserve asked), because a fresh one of
 * a longer run's size (250 KB at 1024 tokens) comes from pages the process has not touched
 * yet, which the first run of a new length then pays for. */
struct lp_record_buf {
    size_t cap; /* entries of each */
    lp_store_prediction *preds;
    int *top_ids;
    double *top_probs;
};

void lp_cmd_record_free(lp_session *s) {
    struct lp_record_buf *b = s->record;
    if (!b) return;
    free(b->preds);
    free(b->top_ids);
    free(b->top_probs);
    free(b);
    s->record = NULL;
}

/* The session's buffers with room for n entries each (touched), or NULL when out of memory. */
static struct lp_record_buf *record_buf(lp_session *s, size_t n) {
    if (s->record && s->record->cap >= n) return s->record;
    if (n > SIZE_MAX / sizeof(lp_store_prediction)) return NULL; /* the largest of the three entries */
    lp_cmd_record_free(s);
    struct lp_record_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->preds = malloc(n * sizeof *b->preds);
    b->top_ids = malloc(n * sizeof *b->top_ids);
    b->top_probs = malloc(n * sizeof *b->top_probs);
    s->record = b;
    if (!b->preds || !b->top_ids || !b->top_probs) {
        lp_cmd_record_free(s);
        return NULL;
    }
    memset(b->preds, 0, n * sizeof *b->preds); /* the first touch, here rather than in a run's recording */
    memset(b->top_ids, 0, n * sizeof *b->top_ids);
    memset(b->top_probs, 0, n * sizeof *b->top_probs);
    b->cap = n;
    return b;
}

int lp_cmd_record_reserve(lp_session *s, int n) {
    if (n < 1) return LP_OK;
    return record_buf(s, (size_t)n * TOP_PER_POSITION + 1) ? LP_OK
                                                              : lp_error(LP_ENOMEM, "out of memory for recording's buffers");
}

static int record_run(lp_session *s, const char *text, const char *pair, const char *target, const char *target_kind) {
    if (!s->store) return LP_OK;
    lp_store_run rec = {0};
    int rc;
    if ((rc = current_session(s, &rec.session_id)) || (rc = lp_cmd_model_row(s, &rec.model_id))) return rc;
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    const lp_run *src = lp_run_source(s->run);
    /* Predictions: the top tokens at every position (decoders, masked LMs), or all of a
     * classifier's labels as the predictions of position 0 (id = label id, token = label
     * name, prob as classify gives it: a multi-label head's sigmoids, none for regression). */
    bool labels = c->head == LP_HEAD_CLASSIFIER;
    int T = lp_run_len(s->run), V = lp_run_out_width(s->run), k = V < TOP_PER_POSITION || labels ? V : TOP_PER_POSITION;
    int rows = lp_run_out_rows(s->run), S = src ? lp_run_len(src) : 0;
    const int *ids = lp_run_ids(s->run);
    /* Heads: the run's self-attention; an encoder-decoder's also its encoder's and its cross. */
    const lp_config *ec = src ? lp_model_config(lp_run_model(src)) : NULL;
    size_t nh = (size_t)c->n_layer * c->n_head * (src ? 2 : 1) + (ec ? (size_t)ec->n_layer * ec->n_head : 0);
    token_rows tok = {0}, stok = {0};
    struct lp_record_buf *buf = record_buf(s, (size_t)(T > rows ? T : rows) * k + 1);
    lp_store_prediction *preds = buf ? buf->preds : NULL;
    int *top_ids = buf ? buf->top_ids : NULL;
    double *top_probs = buf ? buf->top_probs : NULL;
    lp_store_head_metric *heads = calloc(nh, sizeof *heads);
    lp_store_cross_max *cross = NULL;
    json_t *label_probs = labels ? lp_cmd_labels(s) : NULL;
    char *decoded = NULL;
    if (!preds || !heads || !top_ids || !top_probs || (labels && !label_probs)) {
        rc = lp_error(LP_ENOMEM, "out of memory recording the run");
        goto done;
    }
    if ((rc = token_rows_new(&tok, t, ids, T)) || (src && (rc = token_rows_new(&stok, t, lp_run_ids(src), S))))
        goto done;
    /* The top predictions at every position: what the model expected next, token by token
     * (as top gives them: lp_top_k_rows is what lp_cmd_top_k computes, over all rows at once). */
    int np = 0;
    if (rows && (rc = lp_top_k_rows(top_ids, top_probs, lp_run_logits(s->run, 0), rows, V, k))) goto done;
    for (int pos = 0; pos < rows; pos++)
        for (int i = 0; i < k; i++) {
            int id = top_ids[(size_t)pos * k + i];
            double logit = lp_run_logits(s->run, pos)[id], prob = top_probs[(size_t)pos * k + i];
            lp_store_prediction *p = &preds[np++];
            *p = (lp_store_prediction){0}; /* the buffer is kept from run to run */
            p->pos = pos;
            p->rank = i + 1;
            p->id = id;
            if (labels) p->token = lp_model_label(s->model, id), p->token_len = strlen(p->token);
            else p->token = t ? lp_tokenizer_token_bytes(t, id, &p->token_len) : NULL;
            if (labels) {
                json_t *lp = json_object_get(json_array_get(label_probs, (size_t)id), "prob");
                prob = json_is_number(lp) ? json_number_value(lp) : NAN;
            }
            p->prob = isfinite(prob) ? prob : NAN; /* NaN is stored as NULL */
            p->logit = isfinite(logit) ? logit : 0.0;
        }
    if ((rc = add_head_metrics(&rec, heads, s->run, src ? "dec" : NULL, false)) ||
        (src && ((rc = add_head_metrics(&rec, heads, src, "enc", false)) ||
                 (rc = add_head_metrics(&rec, heads, s->run, "dec", true)) ||
                 (rc = cross_maxima(s->run, &cross, &rec.n_cross)))))
        goto done;
    /* A greedy target is kept as the text it decodes to (after the start id). */
    if (src && !target && target_kind && strcmp(target_kind, "greedy") == 0 && t && T > 1) {
        size_t cap = (size_t)T * 16 + 16, len = 0;
        int d = (decoded = malloc(cap)) ? lp_tokenizer_decode(t, ids + 1, T - 1, decoded, cap, &len) : LP_ENOMEM;
        if (d == LP_ERANGE && (free(decoded), decoded = malloc(cap = len)))
            d = lp_tokenizer_decode(t, ids + 1, T - 1, decoded, cap, &len);
        if (d == LP_OK) target = decoded;
        else lp_error_clear(); /* ids the tokenizer does not know: no text, the tokens say it */
    }
    rec.text = text;
    rec.ids = ids;
    rec.token_text = tok.text;
    rec.token_len = tok.len;
    rec.n = T;
    rec.preds = preds;
    rec.n_preds = np;
    rec.heads = heads;
    rec.pair = pair;
    rec.types = lp_run_types(s->run);
    rec.special = tok.role;
    if (src) {
        rec.target = target;
        rec.target_kind = target_kind;
        rec.src_ids = lp_run_ids(src);
        rec.src_text = stok.text;
        rec.src_len = stok.len;
        rec.src_special = stok.role;
        rec.n_src = S;
        rec.cross = cross;
    }
    lp_store_features *feats = NULL;
    if ((rc = lp_cmd_sae_store_rows(s, &feats, &rec.n_features))) goto done;
    rec.features = feats;
    char *edits = NULL; /* a spliced or steered run is kept as one */
    if (!(rc = lp_cmd_sae_edits_text(s, &edits))) {
        rec.edits = edits;
        rc = lp_store_put_run(s->store, &rec, &s->run_id);
    }
    free(edits);
    lp_cmd_sae_store_free(feats, rec.n_features);
done:
    json_decref(label_probs);
    token_rows_free(&tok);
    token_rows_free(&stok);
    free(heads);
    free(cross);
    free(decoded);
    return rc;
}

int lp_cmd_record_run(lp_session *s, const char *text, const char *pair) {
    return record_run(s, text, pair, NULL, NULL);
}

int lp_cmd_record_seq2seq(lp_session *s, const char *source, const char *target, bool greedy) {
    return record_run(s, source, NULL, target, greedy ? "greedy" : "given");
}

/* Runs a query and prints its rows. */
static int show_query(lp_session *s, const char *sql, json_t *params) {
    json_t *rows = NULL, *table = NULL;
    int rc = lp_store_query(s->store, sql, params, false, &rows, &table);
    json_decref(params);
    if (rc) return rc;
    lp_cmd_emit(s, rows, table);
    return LP_OK;
}

int lp_cmd_session(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = need_store(s);
    if (rc) return rc;
    const char *sub = argc > 1 ? argv[1] : "";
    if (strcmp(sub, "new") == 0 || strcmp(sub, "open") == 0) {
        if (argc != 3) return lp_error(LP_EINVAL, "session %s: give one session %s", sub, sub[0] == 'n' ? "name" : "name or id");
        int64_t id;
        rc = sub[0] == 'n' ? lp_store_session_new(s->store, argv[2], &id) : lp_store_session_find(s->store, argv[2], &id);
        if (rc) return rc;
        s->session_id = id;
    } else if (strcmp(sub, "list") == 0) {
        return show_query(s,
                          "SELECT s.id, s.name, (SELECT count(*) FROM runs r WHERE r.session_id = s.id) AS runs,"
                          " (SELECT count(*) FROM findings f WHERE f.session_id = s.id) AS findings, s.created_at,"
                          " s.id = ?1 AS current FROM sessions s ORDER BY s.id",
                          json_pack("[I]", (json_int_t)s->session_id));
    } else if (argc > 1) {
        return lp_error(LP_EINVAL, "session: use 'session new NAME', 'session list' or 'session open ID|NAME'");
    }
    int64_t id;
    if ((rc = current_session(s, &id))) return rc;
    return show_query(s, "SELECT id, name, created_at FROM sessions WHERE id = ?1", json_pack("[I]", (json_int_t)id));
}

static int put_finding(lp_session *s, const char *kind, const char *text, const lp_store_place *at) {
    int64_t session, id;
    int rc = current_session(s, &session);
    if (rc) return rc;
    if ((rc = lp_store_put_finding_at(s->store, session, s->run_id, kind, text, at, &id))) return rc;
    return show_query(s, "SELECT id, kind, text, run_id, stack, attn_kind, layer, head, pos, created_at FROM findings"
                      " WHERE id = ?1", json_pack("[I]", (json_int_t)id));
}

/* The stack and attention kind a note's --layer/--head/--pos are in: an encoder-decoder's
 * decoder self-attention unless --stack enc or --cross (--kind cross) says otherwise; a
 * one-stack model's own (an LM's "dec", an encoder's "enc"). The run whose positions --pos
 * counts goes to *r (the encoder's run for --stack enc: the source). */
static int note_place(const lp_session *s, const char *stack, const char *kind, bool cross, lp_store_place *at,
                      const lp_run **r) {
    const lp_run *src = lp_run_source(s->run);
    if (kind && strcmp(kind, "self") != 0 && strcmp(kind, "cross") != 0)
        return lp_error(LP_EINVAL, "note: --kind is self or cross, not '%s'", kind);
    if (kind && cross && kind[0] != 'c') return lp_error(LP_EINVAL, "note: --cross and --kind self disagree");
    cross = cross || (kind && kind[0] == 'c');
    if (stack && strcmp(stack, "enc") != 0 && strcmp(stack, "dec") != 0)
        return lp_error(LP_EINVAL, "note: --stack is enc or dec, not '%s'", stack);
    if ((stack || cross) && !src)
        return lp_error(LP_EINVAL, "note: --stack and --cross are for encoder-decoder models; this one has one stack");
    if (cross && stack && stack[0] == 'e')
        return lp_error(LP_EINVAL, "note: cross-attention is the decoder's: --cross goes with --stack dec or alone");
    bool enc = src ? stack && stack[0] == 'e' : lp_model_config(s->model)->head != LP_HEAD_LM;
    at->stack = enc ? "enc" : "dec";
    at->attn_kind = cross ? "cross" : "self";
    *r = src && enc ? src : s->run;
    return LP_OK;
}

/* note [--layer L] [--head H] [--pos P] [--stack enc|dec] [--cross | --kind self|cross] [--]
 * TEXT: the text as typed (lp_cmd_text), quotes and all (a note about "it's" must not be a
 * quoting error). */
int lp_cmd_note(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argc, (void)argv;
    enum { LAYER, HEAD, POS, STACK, CROSS, KIND, NOPT };
    lp_opt o[NOPT] = {{"layer", false, NULL}, {"head", false, NULL},  {"pos", false, NULL},
                      {"stack", false, NULL}, {"cross", true, NULL}, {"kind", false, NULL}};
    char *text;
    int rc = lp_cmd_text("note", rest, o, NOPT, &text);
    if (rc) return rc;
    long v;
    lp_store_place at = {NULL, NULL, -1, -1, -1};
    bool placed = false;
    for (int k = 0; k < NOPT; k++) placed = placed || o[k].value;
    const lp_run *r = s->run;
    if (!text[0]) rc = lp_error(LP_EINVAL, "note: write the note's text, e.g. note head 1.2 copies the previous token");
    if (!rc && placed && !s->run)
        rc = lp_error(LP_EINVAL, "note: --layer, --head, --pos, --stack and --kind refer to the current run; run "
                      "something first");
    if (!rc && placed) rc = note_place(s, o[STACK].value, o[KIND].value, o[CROSS].value != NULL, &at, &r);
    const lp_config *c = r ? lp_model_config(lp_run_model(r)) : NULL;
    if (!rc && o[LAYER].value && !(rc = lp_cmd_int(o[LAYER].value, "--layer", 0, c->n_layer - 1, &v))) at.layer = (int)v;
    if (!rc && o[HEAD].value && !(rc = lp_cmd_int(o[HEAD].value, "--head", 0, c->n_head - 1, &v))) at.head = (int)v;
    if (!rc && o[POS].value) { /* from the end with a negative P, as --pos elsewhere */
        int T = lp_run_len(r);
        if (!(rc = lp_cmd_int(o[POS].value, "--pos", -T, T - 1, &v))) at.pos = (int)(v < 0 ? T + v : v);
    }
    if (!rc) rc = put_finding(s, "note", text, &at);
    free(text);
    return rc;
}

int lp_cmd_tag(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (argc != 2) return lp_error(LP_EINVAL, "tag: give one tag name, e.g. tag induction");
    if (!s->run_id) return lp_error(LP_EINVAL, "tag: tags mark the current run; run something first");
    return put_finding(s, "tag", argv[1], &(lp_store_place){NULL, NULL, -1, -1, -1});
}

/* Lists rows of a view for the current session, or for all with --all; the query's ?1 is
 * the session id, 0 meaning all. */
static int list_view(lp_session *s, const char *cmd, int argc, char **argv, const char *sql) {
    int rc = need_store(s);
    if (rc) return rc;
    lp_opt o[] = {{"all", true, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts(cmd, argc, argv, o, 1, pos, 0, &np))) return rc;
    int64_t session = 0;
    if (!o[0].value && (rc = current_session(s, &session))) return rc;
    return show_query(s, sql, json_pack("[I]", (json_int_t)session));
}

int lp_cmd_findings(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    return list_view(s, "findings", argc, argv,
                     "SELECT id, kind, text, run_id, stack, attn_kind, layer, head, pos, token, run_text, session, created_at"
                     " FROM findings_view WHERE ?1 = 0 OR session_id = ?1 ORDER BY id");
}

int lp_cmd_runs(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    return list_view(s, "runs", argc, argv,
                     "SELECT id, session, CASE WHEN pair IS NOT NULL THEN text || ' --pair ' || pair"
                     " WHEN target_kind = 'given' AND target IS NOT NULL THEN text || ' --target ' || target"
                     " ELSE text END AS text, CASE target_kind WHEN 'greedy' THEN target END AS greedy,"
                     " n_source, n_tokens, next_token, next_prob, model, created_at FROM runs_view"
                     " WHERE ?1 = 0 OR session_id = ?1 ORDER BY id");
}

int lp_cmd_rerun(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = need_store(s);
    if (rc || (rc = lp_cmd_need_model(s))) return rc;
    long id;
    lp_opt o[] = {{"reuse", true, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("rerun", argc, argv, o, 1, pos, 1, &np))) return rc;
    if (np != 1) return lp_error(LP_EINVAL, "rerun: give a run id (see 'runs')");
    if ((rc = lp_cmd_int(pos[0], "run id", 1, INT64_MAX, &id))) return rc;
    int64_t current;
    lp_store_saved_run r;
    if ((rc = lp_store_get_run(s->store, id, &r))) return rc;
    if ((rc = lp_cmd_model_row(s, &current)) == LP_OK && r.model_id != current)
        rc = lp_error(LP_EINVAL, "rerun: run %ld was made with another model (model %lld in the store); load that "
                      "model first", id, (long long)r.model_id);
    int V = lp_model_config(s->model)->vocab, types = lp_model_config(s->model)->type_vocab;
    bool seq2seq = lp_model_encoder(s->model) != NULL;
    if (!rc && seq2seq && (!r.target_kind || r.n_src == 0 || r.n < 1))
        rc = r.target_kind ? lp_error(LP_EINVAL, "rerun: run %ld was recorded without its source tokens (by a loupe "
                                      "before schema 4); run it again with run SOURCE --target TEXT", id)
                           : lp_error(LP_EINVAL, "rerun: run %ld has no source, and this encoder-decoder needs one", id);
    for (int i = 0; !rc && i < r.n_src; i++)
        if (r.src_ids[i] < 0 || r.src_ids[i] >= V)
            rc = lp_error(LP_EINVAL, "rerun: run %ld has source token id %d at position %d, outside this model's "
                          "vocabulary (0..%d)", id, r.src_ids[i], i, V - 1);
    for (int i = 0; !rc && i < r.n; i++)
        if (r.ids[i] >= V)
            rc = lp_error(LP_EINVAL, "rerun: run %ld has token id %d at position %d, outside this model's vocabulary "
                          "(0..%d)", id, r.ids[i], i, V - 1);
        else if (r.types[i] > 0 && r.types[i] >= types)
            rc = types > 1 ? lp_error(LP_EINVAL, "rerun: run %ld has token type %d at position %d, and this model's "
                                      "types are 0..%d (was the database edited?)", id, r.types[i], i, types - 1)
                           : lp_error(LP_EINVAL, "rerun: run %ld has token type %d at position %d, and this model has "
                                      "no second token type (was the database edited?)", id, r.types[i], i);
    /* A run made through a spliced dictionary or steering is that run only through the same
     * edits: refused, naming them, when the session applies others now. */
    char *now = NULL;
    if (!rc) rc = lp_cmd_sae_edits_text(s, &now);
    if (!rc && strcmp(r.edits ? r.edits : "", now ? now : ""))
        rc = lp_error(LP_EINVAL, "rerun: run %ld was made through %s, and the session's runs now go through %s; "
                      "splice, unsplice or steer (run --sae NAME --steer F:A TEXT) as it was first", id,
                      r.edits ? r.edits : "the model alone", now ? now : "the model alone");
    free(now);
    /* --reuse (going back to a finding): the same run again, in its own session, so that
     * going there twice does not make two more runs. */
    if (!rc && o[0].value) {
        json_t *rows = NULL, *params = json_pack("[I]", (json_int_t)id);
        rc = lp_store_query(s->store, "SELECT session_id FROM runs WHERE id = ?1", params, false, &rows, NULL);
        json_int_t session = json_integer_value(json_object_get(json_array_get(rows, 0), "session_id"));
        if (!rc && session > 0) s->session_id = session;
        json_decref(params);
        json_decref(rows);
    }
    /* With its token types: a sentence pair runs again as the pair it was. */
    /* An encoder-decoder's: the source, and the target after the decoder's start id. */
    if (!rc && seq2seq)
        rc = lp_cmd_start_seq2seq(s, r.src_ids, r.n_src, r.ids + 1, r.n - 1, r.text,
                                  strcmp(r.target_kind, "given") == 0 ? r.target : NULL,
                                  strcmp(r.target_kind, "greedy") == 0, o[0].value ? id : 0);
    else if (!rc) rc = lp_cmd_start_run(s, r.ids, r.types, r.n, r.text, r.pair, o[0].value ? id : 0);
    lp_store_saved_run_free(&r);
    return rc;
}

/* ---- tensors ---- */

/* A tensor of the current run named by words: "attn L [H]" (attention patterns),
 * "logits", or an activation name ("resid_post L", "mlp_post L", "q L [H]", ...).
 * The result is a contiguous copy the caller frees. */
typedef struct {
    char name[32];
    int layer, head, ndim, shape[4];
    float *data;
    const char *dims[3];  /* names of the leading dimensions, for CSV */
} tensor;

static int take_tensor(lp_session *s, char **w, int n, tensor *t) {
    const lp_config *c = lp_model_config(s->model);
    if (n < 1) return lp_error(LP_EINVAL, "say which tensor: attn L [H], logits, or an activation and a layer (resid_post L)");
    lp_act_kind kind;
    const char *name = strcmp(w[0], "attn") == 0 ? "pattern" : w[0];
    int hook_layer, rc = lp_site_parse(name, c, &kind, &hook_layer);
    if (rc) return rc;
    long layer = 0, head = -1;
    bool per_layer = kind != LP_ACT_LOGITS && kind != LP_ACT_LN_FINAL && kind != LP_ACT_LN_FINAL_SCALE &&
                     kind != LP_ACT_HEAD_HIDDEN;
    if (hook_layer >= 0) { /* blocks.L.NAME [H] */
        if (hook_layer >= c->n_layer) return lp_error(LP_EINVAL, "%s: layer %d is out of range (0..%d)", w[0], hook_layer, c->n_layer - 1);
        layer = hook_layer;
        if (n > 1 && (rc = lp_cmd_int(w[1], "head", 0, c->n_head - 1, &head))) return rc;
        if (n > 2) return lp_error(LP_EINVAL, "unexpected '%s' after the tensor", w[2]);
    } else if (per_layer) {
        if (n < 2) return lp_error(LP_EINVAL, "%s needs a layer (0..%d)", w[0], c->n_layer - 1);
        if ((rc = lp_cmd_int(w[1], "layer", 0, c->n_layer - 1, &layer))) return rc;
        if (n > 2 && (rc = lp_cmd_int(w[2], "head", 0, c->n_head - 1, &head))) return rc;
        if (n > 3) return lp_error(LP_EINVAL, "unexpected '%s' after the tensor", w[3]);
    } else if (n > 1) {
        return lp_error(LP_EINVAL, "%s takes no layer", w[0]);
    }
    lp_view v;
    if ((rc = lp_run_view(s->run, kind, (int)layer, (int)head, &v))) return rc;
    size_t count = 1;
    for (int i = 0; i < v.ndim; i++) count *= (size_t)v.shape[i];
    float *data = malloc(count * sizeof *data);
    if (!data) return lp_error(LP_ENOMEM, "out of memory");
    size_t k = 0;
    int idx[4] = {0};
    for (size_t e = 0; e < count; e++) {
        long off = 0;
        for (int i = 0; i < v.ndim; i++) off += idx[i] * v.stride[i];
        data[k++] = v.data[off];
        for (int i = v.ndim - 1; i >= 0; i--) {
            if (++idx[i] < v.shape[i]) break;
            idx[i] = 0;
        }
    }
    snprintf(t->name, sizeof t->name, "%s", lp_act_name(kind));
    t->layer = per_layer ? (int)layer : -1;
    t->head = (int)head;
    t->ndim = v.ndim;
    memcpy(t->shape, v.shape, sizeof t->shape);
    t->data = data;
    bool per_head_first = kind == LP_ACT_PATTERN && head < 0;
    t->dims[0] = per_head_first ? "head" : v.ndim == 3 ? "pos" : kind == LP_ACT_PATTERN ? "query" : "pos";
    t->dims[1] = per_head_first ? "query" : "head";
    t->dims[2] = NULL;
    return LP_OK;
}

static json_t *shape_json(const tensor *t) {
    json_t *a = json_array();
    for (int i = 0; i < t->ndim; i++) json_array_append_new(a, json_integer(t->shape[i]));
    return a;
}

/* save attn (every layer) | save acts L (resid_pre, attn_out, mlp_out, resid_post) |
 * save TENSOR (as export names it: attn L [H], logits, resid_post L, ...) */
int lp_cmd_save(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = need_store(s);
    if (rc || (rc = lp_cmd_need_run(s))) return rc;
    if (!s->run_id) return lp_error(LP_EINVAL, "save: the current run is not in the store");
    if (argc < 2) return lp_error(LP_EINVAL, "save: say what, e.g. save attn, save acts 3, save resid_post 2");
    if (argc > 4) return lp_error(LP_EINVAL, "save: unexpected '%s'", argv[4]);
    int L = lp_model_config(s->model)->n_layer;
    static char *const acts[] = {"resid_pre", "attn_out", "mlp_out", "resid_post"};
    bool all_attn = argc == 2 && strcmp(argv[1], "attn") == 0;
    bool acts_of = argc == 3 && strcmp(argv[1], "acts") == 0;
    int items = all_attn ? L : acts_of ? 4 : 1;
    json_t *saved = json_array();
    for (int i = 0; i < items && !rc; i++) {
        char layer[16], *w[3];
        int n = argc - 1;
        if (all_attn) {
            snprintf(layer, sizeof layer, "%d", i);
            w[0] = "attn", w[1] = layer, n = 2;
        } else if (acts_of) {
            w[0] = acts[i], w[1] = argv[2], n = 2;
        } else {
            for (int k = 0; k < n; k++) w[k] = argv[k + 1];
        }
        tensor t;
        if ((rc = take_tensor(s, w, n, &t))) break;
        int64_t id;
        rc = lp_store_put_tensor(s->store, s->run_id, t.name, t.layer, t.head, t.shape, t.ndim, t.data, &id);
        if (!rc)
            json_array_append_new(saved, json_pack("{s:I,s:s,s:o,s:o,s:o}", "tensor_id", (json_int_t)id, "name", t.name,
                                                   "layer", t.layer >= 0 ? json_integer(t.layer) : json_null(), "head",
                                                   t.head >= 0 ? json_integer(t.head) : json_null(), "shape",
                                                   shape_json(&t)));
        free(t.data);
    }
    if (rc) {
        json_decref(saved);
        return rc;
    }
    lp_cmd_emit(s, saved, NULL);
    return LP_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* export TENSOR... FILE: .npy or .csv by the file's extension. */
int lp_cmd_export(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    if (argc < 3) return lp_error(LP_EINVAL, "export: give a tensor and a file, e.g. export attn 0 1 pattern.npy");
    const char *path = argv[argc - 1];
    bool npy = ends_with(path, ".npy"), csv = ends_with(path, ".csv");
    if (!npy && !csv) return lp_error(LP_EINVAL, "export: '%s' should end in .npy or .csv", path);
    tensor t;
    if ((rc = take_tensor(s, argv + 1, argc - 2, &t))) return rc;
    rc = npy ? lp_npy_write(path, t.data, t.shape, t.ndim) : lp_csv_write(path, t.data, t.shape, t.ndim, t.dims);
    if (!rc)
        lp_cmd_emit(s, json_pack("{s:s,s:s,s:o,s:s}", "exported", t.name, "file", path, "shape", shape_json(&t), "format",
                                 npy ? "npy" : "csv"),
                    NULL);
    free(t.data);
    return rc;
}

/* The sqlite3 shell's .tables and .schema [NAME], as queries; other dot commands get a hint.
 * *sql is NULL when q is plain SQL. */
static int dot_command(const char *q, const char **sql, json_t **params) {
    *sql = NULL;
    *params = NULL;
    if (q[0] != '.') return LP_OK;
    char name[16] = "", arg[128] = "", extra[2] = "";
    sscanf(q, ".%15s %127s %1s", name, arg, extra);
    if (strcmp(name, "tables") == 0 && !arg[0]) {
        *sql = "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
               " ORDER BY type, name";
        return LP_OK;
    }
    if (strcmp(name, "schema") == 0 && !extra[0]) {
        *sql = "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
               " AND (?1 = '' OR name = ?1) ORDER BY type = 'view', rowid";
        *params = json_pack("[s]", arg);
        return LP_OK;
    }
    return lp_error(LP_EINVAL, "sql: '.%s' is a sqlite3 shell command; sql takes SQL, and .tables and .schema [NAME] "
                    "(or open the file in sqlite3)", name);
}

/* sql [--write] [--] QUERY (the free-text rule of lp_cmd_text): every statement runs, in
 * order, and each that returns rows prints them, as the sqlite3 shell does. */
int lp_cmd_sql(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argc, (void)argv;
    int rc = need_store(s);
    if (rc) return rc;
    lp_opt o[] = {{"write", true, NULL}};
    char *q;
    if ((rc = lp_cmd_text("sql", rest, o, 1, &q))) return rc;
    const char *dot;
    json_t *params, *results = NULL;
    if (!q[0]) rc = lp_error(LP_EINVAL, "sql: give a query, e.g. sql SELECT * FROM runs_view");
    if (!rc) rc = dot_command(q, &dot, &params);
    if (!rc && dot) {
        json_t *rows, *table;
        if (!(rc = lp_store_query(s->store, dot, params, false, &rows, &table)) && params) {
            /* .schema: the statements line by line, as the shell prints them (json keeps each whole) */
            json_decref(table);
            table = lp_table_new();
            lp_table_column(table, "sql", 0, NULL);
            size_t i;
            json_t *row;
            json_array_foreach(rows, i, row) {
                const char *sql = json_string_value(json_object_get(row, "sql"));
                for (const char *line = sql; line && *line;) {
                    size_t n = strcspn(line, "\n");
                    bool last = !line[n];
                    char *l = malloc(n + 2);
                    if (l) {
                        snprintf(l, n + 2, "%.*s%s", (int)n, line, last ? ";" : "");
                        lp_table_row(table, json_pack("[s]", l));
                    }
                    free(l);
                    line += n + !last;
                }
            }
        }
        json_decref(params);
        if (!rc) lp_cmd_emit(s, rows, table);
    } else if (!rc) {
        rc = lp_store_query_all(s->store, q, o[0].value != NULL, &results);
    }
    free(q);
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r) lp_cmd_emit(s, json_incref(json_object_get(r, "rows")), json_incref(json_object_get(r, "table")));
    json_decref(results);
    return rc;
}
