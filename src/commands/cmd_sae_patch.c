/* sae patch: activation patching by feature. The dictionary is spliced in with its error
 * term into the clean and the corrupted run; one node at a time (a feature, or the error
 * term) takes the other run's value at the patched positions, the forward runs on, and the
 * logit difference at the last position is read (the engine is sae.h's lp_sae_edit patch
 * fields, lp_sae_edited_logits). With several dictionaries (--sae A,B) a node patches its
 * own dictionary only: the others are left out of its forward (spliced with their error
 * terms they would give their sites back unchanged), so each dictionary's nodes are those
 * of sae patch --sae on it alone; "all" patches every node of every one in one forward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/sae.h"
#include "loupe/site.h"

typedef struct {
    int f;                /* feature, or -1 the error term */
    int d;                /* which dictionary */
    double value, delta;  /* the metric patched, and its change from the base run's */
    double act[2];        /* the feature's activation in the clean and corrupted runs, summed over the patched positions */
} node;

static int by_effect(const void *a, const void *b) {
    const node *x = a, *y = b;
    double ax = fabs(x->delta), ay = fabs(y->delta);
    if (ax != ay) return ax < ay ? 1 : -1;
    return x->d != y->d ? x->d - y->d : x->f - y->f;
}

/* One side of the patch: run r's encoding acts (T, d_sae) and error term err (T, d_out). */
static int encode_run(const struct lp_session_sae *e, const lp_run *r, float **acts, float **err) {
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    int T = lp_run_len(r);
    float *x = NULL, *y = NULL;
    *acts = malloc((size_t)T * in->d_sae * sizeof **acts);
    *err = malloc((size_t)T * in->d_out * sizeof **err);
    int rc = *acts && *err ? LP_OK : lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = lp_site_rows(r, e->kind, e->layer, in->d_in, &x);
    if (!rc) rc = lp_site_rows(r, e->out_kind, e->out_layer, in->d_out, &y);
    if (!rc) rc = lp_sae_patch_source(e->sae, x, y, T, *acts, *err);
    free(x), free(y);
    return rc;
}

static double metric(const float *lg, int target, int contrast) { return (double)lg[target] - lg[contrast]; }

static json_t *recovery(double v, double clean, double corrupt) {
    return fabs(clean - corrupt) < LP_RECOVERY_MIN_GAP ? json_null() : lp_json_number((v - corrupt) / (clean - corrupt));
}

/* The node's name: f6 or error, after its dictionary's (A/f6) when sae names one. */
static json_t *node_json(const node *n, const char *sae, double clean, double corrupt) {
    char nm[200];
    snprintf(nm, sizeof nm, "%s%s", sae ? sae : "", sae ? "/" : "");
    size_t at = strlen(nm);
    if (n->f >= 0) snprintf(nm + at, sizeof nm - at, "f%d", n->f);
    else snprintf(nm + at, sizeof nm - at, "error");
    json_t *j = json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o}", "node", nm, "feature",
                     n->f >= 0 ? json_integer(n->f) : json_null(), "act_clean",
                     n->f >= 0 ? lp_json_number(n->act[0]) : json_null(), "act_corrupt",
                     n->f >= 0 ? lp_json_number(n->act[1]) : json_null(), "value", lp_json_number(n->value), "delta",
                     lp_json_number(n->delta), "recovery", recovery(n->value, clean, corrupt));
    if (sae) json_object_set_new(j, "sae", json_string(sae));
    return j;
}

static json_t *all_json(const node *n, double clean, double corrupt) {
    return json_pack("{s:o,s:o,s:o}", "value", lp_json_number(n->value), "delta", lp_json_number(n->delta), "recovery",
                     recovery(n->value, clean, corrupt));
}

/* One dictionary's side: both runs' encodings (T, d_sae) and error terms (T, d_out), its
 * edit patching from the other run, every feature's id, how many differ, and all of its
 * nodes patched at once. */
typedef struct {
    const struct lp_session_sae *e;
    float *acts[2], *err[2];
    int *every;
    lp_sae_edit ed;
    int changed;
    node all;
} dict_patch;

int lp_cmd_sae_patch(lp_session *s, int argc, char **argv) {
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    enum { SAE, CORRUPT, CORRUPT_IDS, POS, TARGET, TARGET_ID, VS, VS_ID, DENOISE, K, NOPT };
    lp_opt o[NOPT] = {{"sae", false, NULL},    {"corrupt", false, NULL},   {"corrupt-ids", false, NULL},
                      {"pos", false, NULL},    {"target", false, NULL},    {"target-id", false, NULL},
                      {"vs", false, NULL},     {"vs-id", false, NULL},     {"denoise", true, NULL},
                      {"k", false, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("sae patch", argc, argv, o, NOPT, pos, 0, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    if (!c->causal || c->head != LP_HEAD_LM || lp_model_encoder(s->model))
        return lp_error(LP_EUNSUPPORTED, "sae patch: reads a decoder's next-token prediction; %s is not a decoder "
                        "language model (use patch)", c->arch);
    const struct lp_session_sae *es[LP_CMD_MAX_SAES];
    int nd;
    if ((rc = lp_cmd_find_saes(s, "sae patch", o[SAE].value, es, &nd))) return rc;
    bool several = nd > 1;
    int T = lp_run_len(s->run), at = T - 1, pp = -1, V = lp_run_out_width(s->run), target, contrast = -1;
    long k = 20;
    if ((o[POS].value && (rc = lp_cmd_pos(s, o[POS].value, &pp))) ||
        (o[K].value && (rc = lp_cmd_int(o[K].value, "--k", 1, 1 << 24, &k))))
        return rc;
    if (o[VS].value && o[VS_ID].value) return lp_error(LP_EINVAL, "sae patch: give --vs or --vs-id, not both");
    int *ids = NULL, *types = NULL, n, nn = 0;
    lp_run *clean = NULL, *corrupt = NULL;
    float *lg = malloc((size_t)V * sizeof *lg);
    node *nodes = NULL;
    dict_patch *dp = calloc((size_t)nd, sizeof *dp);
    lp_sae_edit *eds = calloc((size_t)nd, sizeof *eds);
    if (!lg || !dp || !eds) rc = lp_error(LP_ENOMEM, "out of memory");
    /* Both runs through the plain model: whatever the session splices or steers is left out. */
    if (!rc) rc = lp_cmd_corrupt_ids(s, "sae patch", o[CORRUPT].value, o[CORRUPT_IDS].value, NULL, &ids, &types, &n);
    if (!rc) rc = lp_run_new_typed(&clean, s->model, lp_run_ids(s->run), lp_run_types(s->run), T);
    if (!rc) rc = lp_run_new_typed(&corrupt, s->model, ids, types, n);
    if (!rc) rc = lp_cmd_target(s, o[TARGET].value, o[TARGET_ID].value, &target);
    if (!rc && target < 0) {
        const float *l = lp_run_logits(clean, at);
        target = 0;
        for (int i = 1; i < V; i++) target = l[i] > l[target] ? i : target;
    }
    if (!rc && (o[VS].value || o[VS_ID].value)) rc = lp_cmd_target(s, o[VS].value, o[VS_ID].value, &contrast);
    if (!rc && contrast < 0) { /* what the corrupted run predicts instead (its runner-up if that is the target) */
        const float *l = lp_run_logits(corrupt, at);
        contrast = target == 0 ? 1 : 0;
        for (int i = 0; i < V; i++) contrast = i != target && l[i] > l[contrast] ? i : contrast;
    }
    if (!rc && contrast == target) rc = lp_error(LP_EINVAL, "sae patch: the target and --vs are the same token");
    if (rc) goto done;
    bool denoise = o[DENOISE].value != NULL;
    const lp_run *base = denoise ? corrupt : clean;
    int src = denoise ? 0 : 1, t0 = pp < 0 ? 0 : pp, t1 = pp < 0 ? T : pp + 1;
    double m_clean = metric(lp_run_logits(clean, at), target, contrast);
    double m_corrupt = metric(lp_run_logits(corrupt, at), target, contrast), m_base = denoise ? m_corrupt : m_clean;
    /* The nodes, dictionary by dictionary: the features whose activation differs at a patched
     * position (the others' patches change nothing), then the error term. */
    size_t cap = 0;
    for (int d = 0; d < nd; d++) cap += (size_t)lp_sae_get_info(es[d]->sae)->d_sae + 1;
    if (!(nodes = malloc(cap * sizeof *nodes))) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int d = 0; d < nd && !rc; d++) {
        dict_patch *p = &dp[d];
        const struct lp_session_sae *e = p->e = es[d];
        int m = lp_sae_get_info(e->sae)->d_sae;
        if (!(rc = encode_run(e, clean, &p->acts[0], &p->err[0])) && !(rc = encode_run(e, corrupt, &p->acts[1], &p->err[1])) &&
            !(p->every = malloc((size_t)m * sizeof *p->every)))
            rc = lp_error(LP_ENOMEM, "out of memory");
        for (int f = 0; !rc && f < m; f++) {
            node nd_f = {f, d, 0, 0, {0, 0}};
            bool differs = false;
            for (int t = t0; t < t1; t++) {
                float a = p->acts[0][(size_t)t * m + f], b = p->acts[1][(size_t)t * m + f];
                nd_f.act[0] += a, nd_f.act[1] += b, differs |= a != b;
            }
            if (differs) nodes[nn++] = nd_f, p->changed++;
            p->every[f] = f;
        }
        nodes[nn++] = (node){-1, d, 0, 0, {0, 0}};
        p->ed = (lp_sae_edit){.sae = e->sae, .kind = e->kind, .out_kind = e->out_kind, .layer = e->layer,
                              .out_layer = e->out_layer, .mode = LP_SAE_SPLICE, .src_acts = p->acts[src],
                              .src_err = p->err[src], .src_rows = T, .patch_pos = pp};
    }
    for (int i = 0; i < nn && !rc; i++) { /* one node: its own dictionary's edit alone */
        lp_sae_edit ed = dp[nodes[i].d].ed;
        ed.n_patch = nodes[i].f >= 0, ed.patch_id = &nodes[i].f, ed.patch_error = nodes[i].f < 0;
        if (!(rc = lp_sae_edited_logits(base, &ed, 1, at, lg)))
            nodes[i].value = metric(lg, target, contrast), nodes[i].delta = nodes[i].value - m_base;
    }
    for (int d = 0; d < nd && !rc; d++) { /* all of a dictionary's nodes; with several, all of them together */
        eds[d] = dp[d].ed;
        eds[d].n_patch = lp_sae_get_info(dp[d].e->sae)->d_sae, eds[d].patch_id = dp[d].every, eds[d].patch_error = true;
        if (several && !(rc = lp_sae_edited_logits(base, &eds[d], 1, at, lg)))
            dp[d].all.value = metric(lg, target, contrast), dp[d].all.delta = dp[d].all.value - m_base;
    }
    node everything = {-1, -1, 0, 0, {0, 0}};
    if (!rc && !(rc = lp_sae_edited_logits(base, eds, nd, at, lg)))
        everything.value = metric(lg, target, contrast), everything.delta = everything.value - m_base;
    if (rc) goto done;
    qsort(nodes, (size_t)nn, sizeof *nodes, by_effect);
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "node", 0, NULL);
    lp_table_column(table, "act_clean", 0, "%.4f");
    lp_table_column(table, "act_corrupt", 0, "%.4f");
    lp_table_column(table, "delta", 0, "%.4f");
    lp_table_column(table, "recovery", 0, "%.3f");
    for (int i = 0; i < nn && i < k; i++) {
        json_t *j = node_json(&nodes[i], several ? dp[nodes[i].d].e->name : NULL, m_clean, m_corrupt);
        json_array_append_new(arr, j);
        lp_table_row(table, json_pack("[O,O,O,O,O]", json_object_get(j, "node"), json_object_get(j, "act_clean"),
                                      json_object_get(j, "act_corrupt"), json_object_get(j, "delta"),
                                      json_object_get(j, "recovery")));
    }
    json_t *saes = json_array(), *names = json_array(), *sites = json_array();
    for (int d = 0; several && d < nd; d++) {
        json_t *ja = all_json(&dp[d].all, m_clean, m_corrupt);
        char nm[200];
        snprintf(nm, sizeof nm, "%s/all", dp[d].e->name);
        lp_table_row(table, json_pack("[s,n,n,O,O]", nm, json_object_get(ja, "delta"), json_object_get(ja, "recovery")));
        json_array_append_new(saes, json_pack("{s:s,s:s,s:i,s:o}", "sae", dp[d].e->name, "site", dp[d].e->out_site,
                                              "changed", dp[d].changed, "all", ja));
        json_array_append_new(names, json_string(dp[d].e->name));
        json_array_append_new(sites, json_string(dp[d].e->out_site));
    }
    json_t *jall = all_json(&everything, m_clean, m_corrupt);
    lp_table_row(table, json_pack("[s,n,n,O,O]", "all", json_object_get(jall, "delta"), json_object_get(jall, "recovery")));
    json_t *toks = json_array(), *ctoks = json_array(), *cid = json_array();
    for (int t = 0; t < T; t++) {
        json_array_append_new(toks, lp_cmd_token(s, lp_run_ids(clean)[t]));
        json_array_append_new(ctoks, lp_cmd_token(s, ids[t]));
        json_array_append_new(cid, json_integer(ids[t]));
    }
    /* one dictionary: its name and site at the top, as before several were taken; several: "saes" */
    json_t *jsae = several ? json_incref(names) : json_string(dp[0].e->name);
    json_t *jsite = several ? json_incref(sites) : json_string(dp[0].e->out_site);
    json_t *v = json_pack("{s:O,s:O,s:s,s:o,s:o,s:o,s:i,s:o,s:o,s:b,s:i,s:o,s:o,s:o,s:o}", "sae", jsae, "site", jsite,
                          "direction", denoise ? "denoising" : "noising", "patched_pos",
                          pp < 0 ? json_null() : json_integer(pp), "target", lp_cmd_output_obj(s, target), "contrast",
                          lp_cmd_output_obj(s, contrast), "pos", at, "clean", lp_json_number(m_clean), "corrupt",
                          lp_json_number(m_corrupt), "undefined", fabs(m_clean - m_corrupt) < LP_RECOVERY_MIN_GAP,
                          "changed", nn - nd, "nodes", arr, "all", jall, "tokens", toks, "corrupt_tokens", ctoks);
    if (several) json_object_set(v, "saes", saes);
    json_t *params = json_pack("{s:O,s:O,s:o,s:i,s:i,s:s,s:o}", "sae", jsae, "site", jsite, "patched_pos",
                               pp < 0 ? json_null() : json_integer(pp), "target", target, "contrast", contrast,
                               "direction", denoise ? "denoising" : "noising", "corrupt_ids", cid);
    json_decref(jsae), json_decref(jsite), json_decref(saes), json_decref(names), json_decref(sites);
    if (o[CORRUPT].value)
        json_object_set_new(params, "corrupt", json_stringn_nocheck(o[CORRUPT].value, strlen(o[CORRUPT].value)));
    rc = lp_cmd_record_analysis(s, "sae_patch", params, v);
    lp_cmd_emit(s, v, table);
done:
    lp_run_free(clean), lp_run_free(corrupt);
    for (int d = 0; dp && d < nd; d++) {
        for (int i = 0; i < 2; i++) free(dp[d].acts[i]), free(dp[d].err[i]);
        free(dp[d].every);
    }
    free(ids), free(types), free(lg), free(nodes), free(dp), free(eds);
    return rc;
}
