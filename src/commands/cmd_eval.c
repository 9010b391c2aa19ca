/* eval [METHOD|all]: how faithful one or all attribution methods are on the current run's
 * prediction, by removing the positions they rank highest (measures in eval.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/attr.h"
#include "loupe/error.h"
#include "loupe/eval.h"
#include "loupe/sanity.h"
#include "loupe/store.h"
#include "loupe/tokenizer.h"

/* The measures: their JSON names, table headers, and whether higher is more faithful. */
enum { M_COMP, M_SUFF, M_DEL, M_INS, M_LOGODDS, M_TAU, M_INFID, M_SENS, NMEASURE };
static const struct {
    const char *key, *head;
    bool higher;
} MEASURES[NMEASURE] = {
    {"comprehensiveness_aopc", "comp AOPC", true}, {"sufficiency_aopc", "suff AOPC", false},
    {"deletion_auc", "deletion AUC", false},      {"insertion_auc", "insertion AUC", true},
    {"logodds_drop", "log-odds", true},           {"loo_tau", "LOO tau", true},
    {"infidelity", "infidelity", false},          {"max_sensitivity", "max-sens", false},
};

static double measure(const lp_eval_result *r, int k) {
    switch (k) {
    case M_COMP: return r->comp_aopc;
    case M_SUFF: return r->suff_aopc;
    case M_DEL: return r->deletion_auc;
    case M_INS: return r->insertion_auc;
    case M_LOGODDS: return r->logodds;
    case M_TAU: return r->tau;
    case M_INFID: return r->infidelity;
    default: return r->sensitivity;
    }
}

static json_t *numbers(const double *x, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, lp_json_number(x[i]));
    return a;
}

/* The token put in for --remove mask: the model's mask, pad or unk token. */
static int mask_token(const lp_session *s, int *out) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    static const lp_special roles[] = {LP_SPECIAL_MASK, LP_SPECIAL_PAD, LP_SPECIAL_UNK};
    *out = -1;
    for (int i = 0; t && i < 3 && *out < 0; i++) *out = lp_tokenizer_special(t, roles[i]);
    if (*out < 0)
        return lp_error(LP_EINVAL, "eval: --remove mask: this model's tokenizer has no mask, pad or unk token; use "
                                   "--remove delete or --remove baseline");
    return LP_OK;
}

/* The sanity check fails when the ranking with every layer random keeps rho at this or above:
 * the same ranking kept (Adebayo et al.'s similarity). A negative rho is a ranking the
 * randomisation reversed, which is a change, not a failure. */
#define SANITY_RHO 0.5

static int sanity_attr(float *scores, const lp_run *r, void *ctx) {
    double delta;
    return lp_attr(scores, &delta, r, ctx);
}

/* Records attribution spec's scores (T), with its options params (taken: freed here), and its
 * judgement r in the store. */
static int record(lp_session *s, const lp_attr_spec *sp, json_t *params, const float *scores, int T, double delta,
                  const lp_eval_spec *es, const lp_eval *e, const lp_eval_result *r, json_t *val, int64_t *id) {
    int n = lp_eval_n(e), B = lp_eval_bins(e);
    double *x = malloc((size_t)(B + n + 1) * sizeof *x);
    json_t *settings = json_pack("{s:O,s:O}", "infidelity", json_object_get(val, "infidelity_settings"), "sensitivity",
                                 json_object_get(val, "sensitivity_settings"));
    char *pj = json_dumps(params, JSON_COMPACT), *sj = json_dumps(settings, JSON_COMPACT);
    int rc = LP_OK;
    if (!x || !pj || !sj) rc = lp_error(LP_ENOMEM, "out of memory");
    else {
        for (int b = 0; b < B; b++) x[b] = 100.0 * (b + 1) / B; /* percent removed (comprehensiveness) or kept */
        for (int j = 0; j <= n; j++) x[B + j] = j;              /* positions removed (deletion) or kept */
        bool obj = lp_attr_has_objective(sp->method);
        lp_store_attribution a = {s->run_id, lp_attr_method_name(sp->method), obj ? lp_objective_name(sp->objective.kind) : "none",
                                  sp->objective.pos, obj ? sp->objective.target : -1, obj ? sp->objective.contrast : -1,
                                  pj, scores, T, delta};
        lp_store_evaluation ev = {es->prob ? "prob" : "logit_diff", lp_remove_name(es->remove), es->token, B, es->logodds_pct,
                                  {lp_eval_fx(e), lp_eval_fempty(e), r->comp_aopc, r->suff_aopc, r->deletion_auc,
                                   r->insertion_auc, r->logodds, r->tau, r->infidelity, r->sensitivity},
                                  sj, {x, x, x + B, x + B}, {r->comp, r->suff, r->deletion, r->insertion},
                                  {B, B, n + 1, n + 1}, lp_eval_n_source(e)};
        rc = lp_store_put_evaluation(s->store, &a, &ev, id);
    }
    free(x), free(pj), free(sj);
    json_decref(params);
    json_decref(settings);
    return rc;
}

int lp_cmd_eval(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    enum { TARGET, TARGET_ID, VS, VS_ID, POS, REMOVE, BINS, LOGODDS, STEPS, BASELINE, BASELINE_ID, SAMPLES, SIGMA, SEED, RADIUS,
           SANITY, NOPT };
    lp_opt o[NOPT] = {{"target", false, NULL}, {"target-id", false, NULL}, {"vs", false, NULL},
                      {"vs-id", false, NULL},   {"pos", false, NULL},       {"remove", false, NULL},
                      {"bins", false, NULL},    {"logodds", false, NULL},   {"steps", false, NULL},
                      {"baseline", false, NULL}, {"baseline-id", false, NULL}, {"samples", false, NULL},
                      {"sigma", false, NULL},   {"seed", false, NULL},       {"radius", false, NULL},
                      {"sanity", true, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("eval", argc, argv, o, NOPT, pos, 1, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    const lp_run *src = lp_run_source(s->run);
    if (c->head == LP_HEAD_NONE)
        return lp_error(LP_EUNSUPPORTED, "eval: %s has no output head, so no prediction to judge attributions of", c->arch);
    /* The randomised copy (sanity.c) replaces one stack's layers; an encoder-decoder has two. */
    if (o[SANITY].value && src)
        return lp_error(LP_EUNSUPPORTED, "eval --sanity: the randomisation check does not randomise encoder-decoders "
                        "(%s) yet; leave out --sanity", c->arch);
    bool all = np == 0 || strcmp(pos[0], "all") == 0;
    lp_attr_method one = LP_ATTR_SALIENCY;
    if (!all && (rc = lp_attr_method_from_name(pos[0], &one)))
        return lp_error(rc, "eval: unknown method '%s'; use all, saliency, gxi, ig, occlusion, rollout or attnxnorm",
                        pos[0]);

    lp_eval_spec es = {.prob = true, .token = -1};
    int target = -1, contrast = -1;
    if ((rc = lp_cmd_prediction(s, "eval", o[POS].value, o[TARGET].value, o[TARGET_ID].value, o[VS].value,
                                o[VS_ID].value, &es.objective.pos, &target, &contrast)))
        return rc;
    /* f: the target's probability, or with --vs the logit difference the attributions explain. */
    es.prob = contrast < 0;
    es.objective.kind = es.prob ? LP_OBJ_LOGPROB : LP_OBJ_LOGIT_DIFF;
    es.objective.target = target;
    es.objective.contrast = contrast;
    long v;
    if (o[REMOVE].value && (rc = lp_remove_from_name(o[REMOVE].value, &es.remove)))
        return lp_error(rc, "eval: --remove %s: use delete, mask or baseline", o[REMOVE].value);
    if (o[BINS].value && (rc = lp_cmd_int(o[BINS].value, "--bins", 1, 100, &v))) return rc;
    es.bins = o[BINS].value ? (int)v : 10;
    if (o[LOGODDS].value && (rc = lp_cmd_int(o[LOGODDS].value, "--logodds", 1, 100, &v))) return rc;
    es.logodds_pct = o[LOGODDS].value ? (int)v : 20;
    lp_attr_spec sp = {.objective = {contrast < 0 ? LP_OBJ_LOGIT : LP_OBJ_LOGIT_DIFF, es.objective.pos, target, contrast},
                       .steps = 32, .window = 1, .layer = -1};
    if (o[STEPS].value && (rc = lp_cmd_int(o[STEPS].value, "--steps", 1, 4096, &v))) return rc;
    if (o[STEPS].value) sp.steps = (int)v;
    sp.max_steps = 16 * sp.steps; /* attr's default budget, written out as attr records it */
    /* Infidelity: Captum's 10 perturbations; sigma a fraction of each token's embedding. Max-sensitivity
     * takes as many (each recomputes the attributions, hence at most 1000). */
    int samples = 10;
    double sigma = 0.1;
    unsigned long long seed = 1;
    if (o[SAMPLES].value && (rc = lp_cmd_int(o[SAMPLES].value, "--samples", 1, 1000, &v))) return rc;
    if (o[SAMPLES].value) samples = (int)v;
    if (o[SIGMA].value && (rc = lp_cmd_float(o[SIGMA].value, "--sigma", &sigma))) return rc;
    if (!(sigma > 0.0 && sigma <= 10.0))
        return lp_error(LP_EINVAL, "eval: --sigma %s is out of range: give a fraction in (0, 10], e.g. 0.1", o[SIGMA].value);
    /* Max-sensitivity: Captum's uniform perturbation of radius 0.02, the same --samples. */
    double radius = 0.02;
    if (o[RADIUS].value && (rc = lp_cmd_float(o[RADIUS].value, "--radius", &radius))) return rc;
    if (!(radius > 0.0 && radius <= 10.0))
        return lp_error(LP_EINVAL, "eval: --radius %s is out of range: give a radius in (0, 10], e.g. 0.02", o[RADIUS].value);
    if (o[SEED].value && (rc = lp_cmd_int(o[SEED].value, "--seed", 0, 2147483647L, &v))) return rc;
    if (o[SEED].value) seed = (unsigned long long)v;
    if ((rc = lp_cmd_baseline(s, "eval", o[BASELINE].value, o[BASELINE_ID].value, &sp.baseline))) return rc;
    if (es.remove == LP_REMOVE_MASK && (rc = mask_token(s, &es.token))) return rc;
    if (es.remove == LP_REMOVE_BASELINE) es.token = sp.baseline;

    int nm = all ? LP_ATTR_COUNT : 1, T = lp_attr_len(s->run);
    float *scores = malloc((size_t)nm * T * sizeof *scores);
    const float **rows = malloc((size_t)nm * sizeof *rows);
    lp_eval_result *res = calloc((size_t)nm, sizeof *res);
    lp_eval *e = NULL;
    double *delta = malloc((size_t)nm * sizeof *delta);
    if (!scores || !rows || !res || !delta) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = lp_eval_new(&e, s->run, &es))) goto done;
    lp_attr_spec specs[LP_ATTR_COUNT];
    for (int i = 0; i < nm; i++) {
        sp.method = all ? (lp_attr_method)i : one;
        specs[i] = sp;
        rows[i] = scores + (size_t)i * T;
        if ((rc = lp_attr(scores + (size_t)i * T, &delta[i], s->run, &sp))) goto done;
    }
    if ((rc = lp_eval_judge(e, nm, rows, res))) goto done;
    double infid[LP_ATTR_COUNT], raw[LP_ATTR_COUNT];
    if ((rc = lp_eval_infidelity(e, nm, rows, samples, sigma, seed, infid, raw, NULL, NULL))) goto done;
    for (int i = 0; i < nm; i++) res[i].infidelity = infid[i], res[i].infidelity_raw = raw[i];
    if ((rc = lp_eval_sensitivity(e, nm, specs, rows, samples, radius, seed, raw, NULL))) goto done;
    for (int i = 0; i < nm; i++) res[i].sensitivity = raw[i];
    /* --sanity: the cascading randomisation check, rho at each depth per method */
    int L = c->n_layer;
    double *rho = o[SANITY].value ? calloc((size_t)nm * L, sizeof *rho) : NULL;
    if (o[SANITY].value && !rho) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; rho && !rc && i < nm; i++)
        rc = lp_sanity_cascade(s->run, lp_eval_len(e), sanity_attr, &specs[i], seed, rho + (size_t)i * L);
    if (rc) {
        free(rho);
        goto done;
    }

    int n = lp_eval_n(e), B = lp_eval_bins(e), best[NMEASURE];
    for (int k = 0; k < NMEASURE; k++) {
        best[k] = -1;
        for (int i = 0; i < nm; i++) {
            double x = measure(&res[i], k), y = best[k] >= 0 ? measure(&res[best[k]], k) : NAN;
            if (!isnan(x) && (isnan(y) || (MEASURES[k].higher ? x > y : x < y))) best[k] = i;
        }
    }
    json_t *table = lp_table_new(), *methods = json_array(), *bins = json_array(), *bestj = json_object();
    bool human = s->mode == LP_MODE_TABLE || s->mode == LP_MODE_BOX || s->mode == LP_MODE_MARKDOWN;
    /* People reading a table see what f is and how positions were removed in the first header. */
    char first[400] = "method";
    if (human) {
        char tok[2][96];
        for (int k = 0; k < 2; k++) {
            json_t *j = c->head == LP_HEAD_CLASSIFIER ? json_string(lp_model_label(s->model, k ? contrast : target))
                                                      : lp_cmd_token(s, k ? contrast : target);
            const char *b = json_string_value(j);
            if (b) lp_token_display(b, json_string_length(j), tok[k], sizeof tok[k]);
            else snprintf(tok[k], sizeof tok[k], "#%d", k ? contrast : target);
            json_decref(j);
        }
        if (es.prob) snprintf(first, sizeof first, "p('%s') = %.4g, %s", tok[0], lp_eval_fx(e), lp_remove_name(es.remove));
        else
            snprintf(first, sizeof first, "logit '%s' - '%s' = %.4g, %s", tok[0], tok[1], lp_eval_fx(e),
                     lp_remove_name(es.remove));
    }
    lp_table_column(table, first, LP_COL_SAFE, NULL);
    for (int k = 0; k < NMEASURE; k++) {
        char head[64];
        snprintf(head, sizeof head, "%s%s", human ? MEASURES[k].head : MEASURES[k].key,
                 human ? (MEASURES[k].higher ? " ^" : " v") : "");
        lp_table_column(table, head, 0, "%.4g");
    }
    if (rho) lp_table_column(table, human ? "random rho v" : "randomised_rho", 0, "%.4g");
    for (int b = 0; b < B; b++) json_array_append_new(bins, lp_json_number(100.0 * (b + 1) / B));
    for (int i = 0; i < nm; i++) {
        const lp_eval_result *R = &res[i];
        const char *name = lp_attr_method_name(all ? (lp_attr_method)i : one);
        json_t *row = json_pack("[s]", name), *order = json_array();
        for (int k = 0; k < NMEASURE; k++) {
            double x = measure(R, k);
            if (human) { /* the best of each column marked */
                char cell[48];
                snprintf(cell, sizeof cell, isnan(x) ? "-" : "%.4g%s", x, best[k] == i && nm > 1 ? " *" : "");
                json_array_append_new(row, json_string(cell));
            } else json_array_append_new(row, lp_json_number(x));
        }
        if (rho) { /* rho with every layer random; near 1: the attribution ignores the model */
            double last = rho[(size_t)i * L + L - 1];
            bool fail = !(last < SANITY_RHO);
            if (human) {
                char cell[48];
                snprintf(cell, sizeof cell, isnan(last) ? "- FAIL" : fail ? "%.3g FAIL" : "%.3g", last);
                json_array_append_new(row, json_string(cell));
            } else json_array_append_new(row, lp_json_number(last));
        }
        lp_table_row(table, row);
        for (int j = 0; j < n; j++) json_array_append_new(order, json_integer(R->order[j]));
        json_t *m = json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "method", name, "scores",
                              json_array(), "order", order, "comprehensiveness", numbers(R->comp, B), "sufficiency",
                              numbers(R->suff, B), "deletion", numbers(R->deletion, n + 1), "insertion",
                              numbers(R->insertion, n + 1), "delta", lp_json_number(delta[i]));
        for (int t = 0; t < lp_eval_len(e); t++) json_array_append_new(json_object_get(m, "scores"), lp_json_number(rows[i][t]));
        for (int k = 0; k < NMEASURE; k++) json_object_set_new(m, MEASURES[k].key, lp_json_number(measure(R, k)));
        json_object_set_new(m, "infidelity_raw", lp_json_number(R->infidelity_raw));
        if (rho) {
            double last = rho[(size_t)i * L + L - 1];
            json_object_set_new(m, "randomisation", json_pack("{s:o,s:b}", "rho", numbers(rho + (size_t)i * L, L), "passed",
                                                              last < SANITY_RHO));
        }
        json_array_append_new(methods, m);
    }
    for (int k = 0; k < NMEASURE; k++)
        json_object_set_new(bestj, MEASURES[k].key,
                            best[k] >= 0 ? json_string(json_string_value(json_object_get(json_array_get(methods, best[k]), "method")))
                                         : json_null());
    json_t *removable = json_array();
    for (int j = 0; j < n; j++) json_array_append_new(removable, json_integer(lp_eval_removable(e)[j]));
    json_t *val = json_pack("{s:o,s:o,s:i,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:i,s:o,s:o}", "target",
                            lp_cmd_output_obj(s, target), "contrast", lp_cmd_output_obj(s, contrast), "pos",
                            es.objective.pos, "f", es.prob ? "prob" : "logit_diff", "remove", lp_remove_name(es.remove),
                            "remove_token", es.token >= 0 ? json_integer(es.token) : json_null(), "f_x",
                            lp_json_number(lp_eval_fx(e)), "f_empty", lp_json_number(lp_eval_fempty(e)), "removable",
                            removable, "loo", numbers(lp_eval_loo(e), n), "bins", bins, "logodds_pct", es.logodds_pct,
                            "methods", methods, "best", bestj);
    if (src) json_object_set_new(val, "n_source", json_integer(lp_eval_n_source(e))); /* positions: the source's first */
    json_object_set_new(val, "infidelity_settings",
                        json_pack("{s:i,s:o,s:I}", "samples", samples, "sigma", lp_json_number(sigma), "seed", (json_int_t)seed));
    json_object_set_new(val, "sensitivity_settings",
                        json_pack("{s:i,s:o,s:I}", "samples", samples, "radius", lp_json_number(radius), "seed", (json_int_t)seed));
    /* A recorded run keeps each judged attribution with its evaluation (evaluations_view). */
    for (int i = 0; i < nm && s->store && s->run_id && !rc; i++) {
        int64_t id;
        if (!(rc = record(s, &specs[i], lp_cmd_attr_params(&specs[i], o[BASELINE].value, o[BASELINE_ID].value), rows[i], T,
                          delta[i], &es, e, &res[i], val, &id)))
            json_object_set_new(json_array_get(methods, i), "evaluation_id", json_integer(id));
    }
    if (rho) json_object_set_new(val, "randomisation_settings", json_pack("{s:I,s:o}", "seed", (json_int_t)seed, "threshold",
                                                                          lp_json_number(SANITY_RHO)));
    free(rho);
    lp_cmd_emit(s, val, table);
done:
    for (int i = 0; res && i < nm; i++) lp_eval_result_free(&res[i]);
    lp_eval_free(e);
    free(scores);
    free(rows);
    free(res);
    free(delta);
    return rc;
}
