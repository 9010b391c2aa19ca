/* attr METHOD: input attribution of one prediction of the current run, recorded in the
 * store when the run is. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/attr.h"
#include "loupe/error.h"
#include "loupe/tokenizer.h"

int lp_cmd_baseline(const lp_session *s, const char *what, const char *name, const char *id, int *out) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    *out = -1;
    if (name && id) return lp_error(LP_EINVAL, "%s: give --baseline or --baseline-id, not both", what);
    if (id) {
        long v;
        int rc = lp_cmd_int(id, "--baseline-id", 0, lp_model_config(s->model)->vocab - 1, &v);
        *out = (int)v;
        return rc;
    }
    if (!name || strcmp(name, "zero") == 0) return LP_OK;
    if (strcmp(name, "pad") == 0 || strcmp(name, "bos") == 0) {
        if (!t) return lp_error(LP_EINVAL, "%s: this model has no tokenizer to name its %s token; use --baseline-id", what, name);
        if (name[0] == 'b') *out = lp_tokenizer_bos(t);
        else {
            static const char *const pads[] = {"<pad>", "<|pad|>", "[PAD]", "<|padding|>", NULL};
            for (int i = 0; pads[i] && *out < 0; i++) *out = lp_tokenizer_piece_to_id(t, pads[i]);
            if (*out < 0) *out = lp_tokenizer_eos(t); /* GPT-2, Llama: no pad token; EOS stands in, as in HF */
        }
        if (*out < 0) return lp_error(LP_EINVAL, "%s: this tokenizer has no %s token; use --baseline-id or zero", what, name);
        return LP_OK;
    }
    int rc = lp_cmd_target(s, name, NULL, out);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lp_errmsg());
        return lp_error(rc, "--baseline: %s", msg);
    }
    return LP_OK;
}

int lp_cmd_prediction(const lp_session *s, const char *what, const char *pos_arg, const char *target,
                      const char *target_id, const char *vs, const char *vs_id, int *pos, int *target_out,
                      int *contrast) {
    bool labels = lp_model_config(s->model)->head == LP_HEAD_CLASSIFIER;
    int rc;
    *pos = 0;
    if (labels && pos_arg && strcmp(pos_arg, "0") != 0)
        return lp_error(LP_EINVAL, "%s: a classifier's prediction is at position 0 (its [CLS]); leave out --pos", what);
    if ((!labels || pos_arg) && (rc = lp_cmd_out_pos(s, what, pos_arg, pos))) return rc;
    if ((rc = labels ? lp_cmd_label(s, target, target_id, target_out) : lp_cmd_target(s, target, target_id, target_out)))
        return rc;
    const float *lg = lp_run_logits(s->run, *pos);
    if (*target_out < 0 && !lg) return lp_error(LP_EINVAL, "%s: position %d has no prediction", what, *pos);
    if (*target_out < 0) { /* the model's own top prediction */
        *target_out = 0;
        for (int j = 1; j < lp_run_out_width(s->run); j++)
            if (lg[j] > lg[*target_out]) *target_out = j;
    }
    if (vs && vs_id) return lp_error(LP_EINVAL, "%s: give --vs or --vs-id, not both", what);
    if ((rc = labels ? lp_cmd_label(s, vs, vs_id, contrast) : lp_cmd_target(s, vs, vs_id, contrast))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lp_errmsg());
        return lp_error(rc, "%s: %s: %s", what, vs_id ? "--vs-id" : "--vs", msg);
    }
    return LP_OK;
}

json_t *lp_cmd_attr_params(const lp_attr_spec *sp, const char *baseline, const char *baseline_id) {
    json_t *params = json_object();
    if (sp->method == LP_ATTR_IG) {
        json_object_set_new(params, "steps", json_integer(sp->steps));
        json_object_set_new(params, "max_steps", json_integer(sp->max_steps));
    }
    if (sp->method == LP_ATTR_IG || sp->method == LP_ATTR_OCCLUSION) {
        const char *b = baseline ? baseline : baseline_id ? "id" : "zero";
        json_object_set_new(params, "baseline", json_string(b));
        json_object_set_new(params, "baseline_id", sp->baseline < 0 ? json_null() : json_integer(sp->baseline));
    }
    if (sp->method == LP_ATTR_OCCLUSION) json_object_set_new(params, "window", json_integer(sp->window));
    if (sp->method == LP_ATTR_ATTNXNORM) json_object_set_new(params, "layer", json_integer(sp->layer));
    return params;
}

/* attr METHOD --from P: the run's tokens from P on, each explained by the prediction before it
 * (a series: one attribution per step, recorded together). Prints the matrix: a row per input
 * position, a column per explained token, then each step's probability and entropy. */
static int attr_series(lp_session *s, const lp_attr_spec *sp, int from, bool generated, json_t *params) {
    const lp_run *r = s->run, *src = lp_run_source(r);
    int T = lp_run_len(r), N = lp_attr_len(r), S = src ? lp_run_len(src) : 0, n = T - from;
    const int *ids = lp_run_ids(r), *src_ids = src ? lp_run_ids(src) : NULL;
    float *scores = malloc((size_t)n * N * sizeof *scores);
    lp_attr_step *steps = malloc((size_t)n * sizeof *steps);
    int64_t *attr_ids = calloc((size_t)n, sizeof *attr_ids), series_id = 0;
    int rc = !scores || !steps || !attr_ids ? lp_error(LP_ENOMEM, "out of memory") : lp_attr_steps(scores, steps, r, from, sp);
    bool needs_obj = lp_attr_has_objective(sp->method);
    const char *objective = needs_obj ? lp_objective_name(sp->objective.kind) : "none";
    char *pj = json_dumps(params, JSON_COMPACT);
    if (!rc && s->store && s->run_id) {
        lp_store_attribution *rows = calloc((size_t)n, sizeof *rows);
        lp_store_step *meta = calloc((size_t)n, sizeof *meta);
        if (!rows || !meta || !pj) rc = lp_error(LP_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < n; i++) {
            rows[i] = (lp_store_attribution){s->run_id, lp_attr_method_name(sp->method), objective, steps[i].pos,
                                             needs_obj ? steps[i].target : -1, sp->objective.contrast, pj,
                                             scores + (size_t)i * N, N, steps[i].report.delta};
            meta[i] = (lp_store_step){steps[i].prob, steps[i].entropy, steps[i].contrast_diff, &attr_ids[i]};
        }
        if (!rc) rc = lp_store_put_attribution_series(s->store, rows, meta, n, from, generated, S, &series_id);
        free(rows);
        free(meta);
    }
    free(pj);
    if (rc) {
        free(scores), free(steps), free(attr_ids);
        json_decref(params);
        return rc;
    }
    /* JSON: the steps, each with its scores; the table: the matrix, inputs down, steps across. */
    json_t *arr = json_array(), *table = lp_table_new();
    for (int i = 0; i < n; i++) {
        json_t *row = json_array();
        for (int j = 0; j < N; j++) json_array_append_new(row, lp_json_number(scores[(size_t)i * N + j]));
        json_t *st = json_pack("{s:i,s:o,s:o,s:o,s:o,s:o}", "pos", steps[i].pos, "token",
                               lp_cmd_output_obj(s, steps[i].target), "prob", lp_json_number(steps[i].prob), "entropy",
                               lp_json_number(steps[i].entropy), "scores", row, "delta",
                               lp_json_number(steps[i].report.delta));
        if (sp->objective.contrast >= 0) json_object_set_new(st, "contrast_diff", lp_json_number(steps[i].contrast_diff));
        if (sp->method == LP_ATTR_IG && !isnan(steps[i].report.f_input))
            json_object_set_new(st, "ig", json_pack("{s:i,s:b}", "steps", steps[i].report.steps, "converged",
                                                    steps[i].report.converged));
        if (attr_ids[i]) json_object_set_new(st, "attribution_id", json_integer(attr_ids[i]));
        json_array_append_new(arr, st);
    }
    lp_table_column(table, "pos", 0, NULL);
    if (src) lp_table_column(table, "side", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    for (int i = 0; i < n; i++) {
        char head[96];
        json_t *tok = lp_cmd_token(s, steps[i].target);
        const char *b = json_string_value(tok);
        if (b) lp_token_display(b, json_string_length(tok), head, sizeof head);
        else snprintf(head, sizeof head, "#%d", steps[i].target);
        json_decref(tok);
        lp_table_column(table, head, 0, "%.3g");
    }
    int rows_shown = src ? S + T - 1 : T - 1; /* the last token is explained, never explains */
    for (int j = 0; j < rows_shown; j++) {
        bool source = j < S;
        int t = source ? j : j - S;
        json_t *row = src ? json_pack("[i,s,o]", t, source ? "source" : "target", lp_cmd_token(s, source ? src_ids[t] : ids[t]))
                          : json_pack("[i,o]", t, lp_cmd_token(s, ids[t]));
        for (int i = 0; i < n; i++) /* a position after the one explained cannot matter: blank */
            json_array_append_new(row, !source && t > steps[i].pos ? json_null()
                                                                    : lp_json_number(scores[(size_t)i * N + j]));
        lp_table_row(table, row);
    }
    static const char *const ROWS[] = {"p(token)", "entropy", "p - p(vs)"};
    for (int k = 0; k < (sp->objective.contrast >= 0 ? 3 : 2); k++) {
        json_t *row = src ? json_pack("[n,n,s]", ROWS[k]) : json_pack("[n,s]", ROWS[k]);
        for (int i = 0; i < n; i++)
            json_array_append_new(row, lp_json_number(k == 0 ? steps[i].prob : k == 1 ? steps[i].entropy
                                                                                      : steps[i].contrast_diff));
        lp_table_row(table, row);
    }
    json_t *val = json_pack("{s:s,s:i,s:b,s:o,s:o,s:o,s:o}", "method", lp_attr_method_name(sp->method), "from", from,
                            "generated", generated, "objective", needs_obj ? json_string(objective) : json_null(),
                            "contrast", lp_cmd_output_obj(s, sp->objective.contrast), "params", params, "steps", arr);
    if (src) json_object_set_new(val, "n_source", json_integer(S));
    if (series_id) json_object_set_new(val, "series_id", json_integer(series_id));
    lp_cmd_emit(s, val, table);
    free(scores), free(steps), free(attr_ids);
    return LP_OK;
}

int lp_cmd_attr(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    enum { TARGET, TARGET_ID, VS, VS_ID, OBJECTIVE, POS, STEPS, MAX_STEPS, BASELINE, BASELINE_ID, WINDOW, LAYER, FROM,
           GENERATED, NOPT };
    lp_opt o[NOPT] = {{"target", false, NULL},   {"target-id", false, NULL}, {"vs", false, NULL},
                      {"vs-id", false, NULL},    {"objective", false, NULL}, {"pos", false, NULL},
                      {"steps", false, NULL},    {"max-steps", false, NULL}, {"baseline", false, NULL},
                      {"baseline-id", false, NULL},
                      {"window", false, NULL},   {"layer", false, NULL},     {"from", false, NULL},
                      {"generated", true, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("attr", argc, argv, o, NOPT, pos, 1, &np))) return rc;
    if (np != 1) return lp_error(LP_EINVAL, "attr: give a method: saliency, gxi, ig, occlusion, rollout or attnxnorm");
    const lp_config *c = lp_model_config(s->model);
    lp_attr_spec sp = {.baseline = -1, .layer = -1};
    if ((rc = lp_attr_method_from_name(pos[0], &sp.method))) return rc;
    bool labels = c->head == LP_HEAD_CLASSIFIER;
    if (c->head == LP_HEAD_NONE)
        return lp_error(LP_EUNSUPPORTED, "attr: %s has no output head to attribute", c->arch);
    /* The prediction explained: the last position's (decoders), the first mask's (masked LMs),
     * the label's at position 0 (classifiers). */
    long from = 0;
    if (o[FROM].value) { /* every token from P on, each by the prediction before it */
        if (!c->causal && !lp_run_source(s->run))
            return lp_error(LP_EINVAL, "attr --from: an encoder predicts no next token; --from is for decoders and "
                            "encoder-decoders");
        for (int k = TARGET; k <= POS; k++)
            if (k != VS && k != VS_ID && k != OBJECTIVE && o[k].value)
                return lp_error(LP_EINVAL, "attr --from: each step explains the token that follows; leave out --%s",
                                o[k].name);
        if ((rc = lp_cmd_int(o[FROM].value, "--from", 1, lp_run_len(s->run) - 1, &from))) return rc;
    } else if (o[GENERATED].value) {
        return lp_error(LP_EINVAL, "attr: --generated goes with --from");
    }
    bool needs_obj = lp_attr_has_objective(sp.method);
    /* Options that mean nothing to the method are refused rather than silently ignored. */
    static const struct {
        int opt;
        lp_attr_method only[2];
    } scope[] = {{STEPS, {LP_ATTR_IG, LP_ATTR_IG}},         {MAX_STEPS, {LP_ATTR_IG, LP_ATTR_IG}},
                 {BASELINE, {LP_ATTR_IG, LP_ATTR_OCCLUSION}},
                 {BASELINE_ID, {LP_ATTR_IG, LP_ATTR_OCCLUSION}}, {WINDOW, {LP_ATTR_OCCLUSION, LP_ATTR_OCCLUSION}},
                 {LAYER, {LP_ATTR_ATTNXNORM, LP_ATTR_ATTNXNORM}}};
    for (size_t i = 0; i < sizeof scope / sizeof *scope; i++)
        if (o[scope[i].opt].value && sp.method != scope[i].only[0] && sp.method != scope[i].only[1])
            return lp_error(LP_EINVAL, "attr %s: --%s is not an option of this method (see 'help attr')", pos[0],
                            o[scope[i].opt].name);
    for (int k = TARGET; k <= OBJECTIVE && !needs_obj; k++)
        if (o[k].value)
            return lp_error(LP_EINVAL, "attr %s: reads attention only, so it has no --%s", pos[0], o[k].name);

    int target = -1, contrast = -1;
    lp_objective_kind kind = LP_OBJ_LOGIT;
    if ((rc = lp_cmd_prediction(s, "attr", o[POS].value, o[TARGET].value, o[TARGET_ID].value, o[VS].value, o[VS_ID].value,
                                &sp.objective.pos, &target, &contrast)))
        return rc;
    if (!needs_obj) target = -1; /* rollout and attnxnorm explain no token */
    else {
        if (contrast >= 0) kind = LP_OBJ_LOGIT_DIFF;
        if (o[OBJECTIVE].value) {
            lp_objective_kind k;
            if ((rc = lp_objective_from_name(o[OBJECTIVE].value, &k))) return rc;
            if ((k == LP_OBJ_LOGIT_DIFF) != (contrast >= 0))
                return lp_error(LP_EINVAL, "attr: the objective is logit_diff exactly when --vs names a contrast token");
            kind = k;
        }
    }
    sp.objective.kind = kind;
    sp.objective.target = target;
    sp.objective.contrast = contrast;
    long v;
    if (o[STEPS].value && (rc = lp_cmd_int(o[STEPS].value, "--steps", 1, 4096, &v))) return rc;
    sp.steps = o[STEPS].value ? (int)v : 32;
    if (o[MAX_STEPS].value && (rc = lp_cmd_int(o[MAX_STEPS].value, "--max-steps", sp.steps, 65536, &v))) return rc;
    sp.max_steps = o[MAX_STEPS].value ? (int)v : 16 * sp.steps;
    const lp_run *src = lp_run_source(s->run);
    int S = src ? lp_run_len(src) : 0;
    int rows = c->causal ? sp.objective.pos + 1 : lp_run_len(s->run); /* what the prediction reads */
    if (S > rows) rows = S; /* an encoder-decoder's windows stay within the source or the target prefix */
    if (o[WINDOW].value && (rc = lp_cmd_int(o[WINDOW].value, "--window", 1, rows, &v))) return rc;
    sp.window = o[WINDOW].value ? (int)v : 1;
    if (o[LAYER].value && (rc = lp_cmd_int(o[LAYER].value, "--layer", 0, c->n_layer - 1, &v))) return rc;
    sp.layer = o[LAYER].value ? (int)v : c->n_layer - 1;
    if ((rc = lp_cmd_baseline(s, "attr", o[BASELINE].value, o[BASELINE_ID].value, &sp.baseline))) return rc;

    json_t *params = lp_cmd_attr_params(&sp, o[BASELINE].value, o[BASELINE_ID].value);
    if (from) return attr_series(s, &sp, (int)from, o[GENERATED].value != NULL, params);

    int N = lp_attr_len(s->run);
    float *scores = malloc((size_t)N * sizeof *scores);
    lp_attr_report rep;
    if ((rc = !scores ? lp_error(LP_ENOMEM, "out of memory") : lp_attr_full(scores, &rep, s->run, &sp))) {
        free(scores);
        json_decref(params);
        return rc;
    }

    /* The store keeps every attribution of a recorded run: an encoder-decoder's with the side
     * of each score (the source's first, as lp_attr gives them). */
    int rec = LP_OK;
    int64_t attr_id = 0;
    if (s->store && s->run_id) {
        char *pj = json_dumps(params, JSON_COMPACT);
        lp_store_attribution a = {s->run_id, lp_attr_method_name(sp.method),
                                  needs_obj ? lp_objective_name(kind) : "none", sp.objective.pos, needs_obj ? target : -1,
                                  contrast, pj, scores, N, rep.delta};
        rec = pj ? lp_store_put_attribution_split(s->store, &a, S, &attr_id) : lp_error(LP_ENOMEM, "out of memory");
        free(pj);
    }

    const int *ids = lp_run_ids(s->run), *src_ids = src ? lp_run_ids(src) : NULL;
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "pos", 0, NULL);
    if (src) lp_table_column(table, "side", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    /* People reading a table see what was explained in the score column's name; csv keeps "score". */
    char head[400] = "score";
    if (s->mode == LP_MODE_TABLE || s->mode == LP_MODE_BOX || s->mode == LP_MODE_MARKDOWN) {
        size_t at = (size_t)snprintf(head, sizeof head, "%s", lp_attr_method_name(sp.method));
        if (needs_obj) {
            char tok[2][96];
            for (int k = 0; k < 2; k++) {
                json_t *j = labels ? json_string(lp_model_label(s->model, k ? contrast : target))
                                   : lp_cmd_token(s, k ? contrast : target);
                const char *b = json_string_value(j);
                if (b) lp_token_display(b, json_string_length(j), tok[k], sizeof tok[k]);
                else snprintf(tok[k], sizeof tok[k], "#%d", k ? contrast : target);
                json_decref(j);
            }
            at += (size_t)snprintf(head + at, sizeof head - at, " of %s '%s'", kind == LP_OBJ_LOGPROB ? "logprob" : "logit",
                                   tok[0]);
            if (contrast >= 0) at += (size_t)snprintf(head + at, sizeof head - at, " - '%s'", tok[1]);
        }
        if (sp.method == LP_ATTR_ATTNXNORM) at += (size_t)snprintf(head + at, sizeof head - at, " in layer %d", sp.layer);
        at += (size_t)snprintf(head + at, sizeof head - at, " at %d", sp.objective.pos);
        /* ig says when refining took more than the first pass, and when it did not converge */
        if (!isnan(rep.delta)) {
            char more[40] = "";
            if (rep.steps > sp.steps) snprintf(more, sizeof more, " after %d steps", rep.steps);
            snprintf(head + at, sizeof head - at, " (delta %.3g%s%s)", rep.delta, more,
                     rep.converged || isnan(rep.f_input) ? "" : ": not converged, raise --max-steps");
        }
    }
    lp_table_column(table, head, 0, "%.4g");
    json_t *sides[2] = {json_array(), json_array()}; /* an encoder-decoder's source and target */
    for (int i = 0; i < N; i++) {
        bool source = i < S;
        int t = source ? i : i - S, id = source ? src_ids[t] : ids[t];
        json_array_append_new(arr, lp_json_number(scores[i]));
        json_array_append_new(sides[!source], lp_json_number(scores[i]));
        if (src)
            lp_table_row(table, json_pack("[i,s,o,o]", t, source ? "source" : "target", lp_cmd_token(s, id),
                                          lp_json_number(scores[i])));
        else
            lp_table_row(table, json_pack("[i,o,o]", t, lp_cmd_token(s, id), lp_json_number(scores[i])));
    }
    json_t *val = json_pack("{s:s,s:o,s:i,s:o,s:o,s:o,s:o,s:o}", "method", lp_attr_method_name(sp.method), "target",
                            lp_cmd_output_obj(s, needs_obj ? target : -1), "pos", sp.objective.pos, "scores", arr, "delta",
                            lp_json_number(rep.delta), "objective",
                            needs_obj ? json_string(lp_objective_name(kind)) : json_null(), "contrast",
                            lp_cmd_output_obj(s, contrast), "params", params);
    if (attr_id) json_object_set_new(val, "attribution_id", json_integer(attr_id));
    if (sp.method == LP_ATTR_IG && !isnan(rep.f_input)) /* completeness: what delta is measured against */
        json_object_set_new(val, "ig", json_pack("{s:o,s:o,s:i,s:b}", "f_input", lp_json_number(rep.f_input),
                                                 "f_baseline", lp_json_number(rep.f_baseline), "steps", rep.steps,
                                                 "converged", rep.converged));
    if (src) { /* "scores" is both sides, the source's first; "sides" splits them ("target" names the token) */
        json_object_set_new(val, "sides", json_pack("{s:o,s:o}", "source", sides[0], "target", sides[1]));
        json_object_set_new(val, "n_source", json_integer(S));
    } else {
        json_decref(sides[0]);
        json_decref(sides[1]);
    }
    lp_cmd_emit(s, val, table);
    free(scores);
    return rec;
}
