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

int lp_cmd_attr(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    enum { TARGET, TARGET_ID, VS, VS_ID, OBJECTIVE, POS, STEPS, BASELINE, BASELINE_ID, WINDOW, LAYER, NOPT };
    lp_opt o[NOPT] = {{"target", false, NULL},   {"target-id", false, NULL}, {"vs", false, NULL},
                      {"vs-id", false, NULL},    {"objective", false, NULL}, {"pos", false, NULL},
                      {"steps", false, NULL},    {"baseline", false, NULL},  {"baseline-id", false, NULL},
                      {"window", false, NULL},   {"layer", false, NULL}};
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
    if (labels) sp.objective.pos = 0;
    if (labels && o[POS].value && strcmp(o[POS].value, "0") != 0)
        return lp_error(LP_EINVAL, "attr: a classifier's prediction is at position 0 (its [CLS]); leave out --pos");
    if ((!labels || o[POS].value) && (rc = lp_cmd_out_pos(s, "attr", o[POS].value, &sp.objective.pos))) return rc;
    bool needs_obj = lp_attr_has_objective(sp.method);
    /* Options that mean nothing to the method are refused rather than silently ignored. */
    static const struct {
        int opt;
        lp_attr_method only[2];
    } scope[] = {{STEPS, {LP_ATTR_IG, LP_ATTR_IG}},         {BASELINE, {LP_ATTR_IG, LP_ATTR_OCCLUSION}},
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
    if (needs_obj) {
        if ((rc = labels ? lp_cmd_label(s, o[TARGET].value, o[TARGET_ID].value, &target)
                         : lp_cmd_target(s, o[TARGET].value, o[TARGET_ID].value, &target)))
            return rc;
        const float *lg = lp_run_logits(s->run, sp.objective.pos);
        if (target < 0 && !lg) return lp_error(LP_EINVAL, "attr: position %d has no prediction", sp.objective.pos);
        if (target < 0) { /* the model's own top prediction */
            target = 0;
            for (int j = 1; j < lp_run_out_width(s->run); j++)
                if (lg[j] > lg[target]) target = j;
        }
        if (o[VS].value && o[VS_ID].value) return lp_error(LP_EINVAL, "attr: give --vs or --vs-id, not both");
        if ((rc = labels ? lp_cmd_label(s, o[VS].value, o[VS_ID].value, &contrast)
                         : lp_cmd_target(s, o[VS].value, o[VS_ID].value, &contrast))) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", lp_errmsg());
            return lp_error(rc, "%s: %s", o[VS_ID].value ? "--vs-id" : "--vs", msg);
        }
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
    const lp_run *src = lp_run_source(s->run);
    int S = src ? lp_run_len(src) : 0;
    int rows = c->causal ? sp.objective.pos + 1 : lp_run_len(s->run); /* what the prediction reads */
    if (S > rows) rows = S; /* an encoder-decoder's windows stay within the source or the target prefix */
    if (o[WINDOW].value && (rc = lp_cmd_int(o[WINDOW].value, "--window", 1, rows, &v))) return rc;
    sp.window = o[WINDOW].value ? (int)v : 1;
    if (o[LAYER].value && (rc = lp_cmd_int(o[LAYER].value, "--layer", 0, c->n_layer - 1, &v))) return rc;
    sp.layer = o[LAYER].value ? (int)v : c->n_layer - 1;
    if ((rc = lp_cmd_baseline(s, "attr", o[BASELINE].value, o[BASELINE_ID].value, &sp.baseline))) return rc;

    int N = lp_attr_len(s->run);
    float *scores = malloc((size_t)N * sizeof *scores);
    if (!scores) return lp_error(LP_ENOMEM, "out of memory");
    double delta;
    if ((rc = lp_attr(scores, &delta, s->run, &sp))) {
        free(scores);
        return rc;
    }

    json_t *params = json_object();
    if (sp.method == LP_ATTR_IG) json_object_set_new(params, "steps", json_integer(sp.steps));
    if (sp.method == LP_ATTR_IG || sp.method == LP_ATTR_OCCLUSION) {
        const char *b = o[BASELINE].value ? o[BASELINE].value : o[BASELINE_ID].value ? "id" : "zero";
        json_object_set_new(params, "baseline", json_string(b));
        json_object_set_new(params, "baseline_id", sp.baseline < 0 ? json_null() : json_integer(sp.baseline));
    }
    if (sp.method == LP_ATTR_OCCLUSION) json_object_set_new(params, "window", json_integer(sp.window));
    if (sp.method == LP_ATTR_ATTNXNORM) json_object_set_new(params, "layer", json_integer(sp.layer));

    /* The store keeps every attribution of a recorded run: an encoder-decoder's with the side
     * of each score (the source's first, as lp_attr gives them). */
    int rec = LP_OK;
    int64_t attr_id = 0;
    if (s->store && s->run_id) {
        char *pj = json_dumps(params, JSON_COMPACT);
        lp_store_attribution a = {s->run_id, lp_attr_method_name(sp.method),
                                  needs_obj ? lp_objective_name(kind) : "none", sp.objective.pos, needs_obj ? target : -1,
                                  contrast, pj, scores, N, delta};
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
        if (!isnan(delta)) snprintf(head + at, sizeof head - at, " (delta %.3g)", delta);
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
                            lp_json_number(delta), "objective",
                            needs_obj ? json_string(lp_objective_name(kind)) : json_null(), "contrast",
                            lp_cmd_output_obj(s, contrast), "params", params);
    if (attr_id) json_object_set_new(val, "attribution_id", json_integer(attr_id));
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
