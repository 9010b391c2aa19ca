/* sae patch: activation patching by feature. The dictionary is spliced in with its error
 * term into the clean and the corrupted run; one node at a time (a feature, or the error
 * term) takes the other run's value at the patched positions, the forward runs on, and the
 * logit difference at the last position is read (the engine is sae.h's lp_sae_edit patch
 * fields, lp_sae_edited_logits). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/sae.h"
#include "loupe/site.h"

typedef struct {
    int f;                /* feature, or -1 the error term */
    double value, delta;  /* the metric patched, and its change from the base run's */
    double act[2];        /* the feature's activation in the clean and corrupted runs, summed over the patched positions */
} node;

static int by_effect(const void *a, const void *b) {
    const node *x = a, *y = b;
    double ax = fabs(x->delta), ay = fabs(y->delta);
    if (ax != ay) return ax < ay ? 1 : -1;
    return x->f - y->f;
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

static json_t *node_json(const node *n, double clean, double corrupt) {
    char nm[32];
    if (n->f >= 0) snprintf(nm, sizeof nm, "f%d", n->f);
    return json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o}", "node", n->f >= 0 ? nm : "error", "feature",
                     n->f >= 0 ? json_integer(n->f) : json_null(), "act_clean",
                     n->f >= 0 ? lp_json_number(n->act[0]) : json_null(), "act_corrupt",
                     n->f >= 0 ? lp_json_number(n->act[1]) : json_null(), "value", lp_json_number(n->value), "delta",
                     lp_json_number(n->delta), "recovery", recovery(n->value, clean, corrupt));
}

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
    const struct lp_session_sae *e = lp_cmd_find_sae(s, "sae patch", o[SAE].value);
    if (!e) return LP_EINVAL;
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    int T = lp_run_len(s->run), at = T - 1, pp = -1, V = lp_run_out_width(s->run), target, contrast = -1;
    long k = 20;
    if ((o[POS].value && (rc = lp_cmd_pos(s, o[POS].value, &pp))) ||
        (o[K].value && (rc = lp_cmd_int(o[K].value, "--k", 1, 1 << 24, &k))))
        return rc;
    if (o[VS].value && o[VS_ID].value) return lp_error(LP_EINVAL, "sae patch: give --vs or --vs-id, not both");
    int *ids = NULL, *types = NULL, n, *all_ids = NULL;
    lp_run *clean = NULL, *corrupt = NULL;
    float *acts[2] = {NULL, NULL}, *err[2] = {NULL, NULL}, *lg = malloc((size_t)V * sizeof *lg);
    node *nodes = NULL;
    if (!lg) rc = lp_error(LP_ENOMEM, "out of memory");
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
    if (!rc) rc = encode_run(e, clean, &acts[0], &err[0]);
    if (!rc) rc = encode_run(e, corrupt, &acts[1], &err[1]);
    if (rc) goto done;
    bool denoise = o[DENOISE].value != NULL;
    const lp_run *base = denoise ? corrupt : clean;
    int src = denoise ? 0 : 1, m = in->d_sae, t0 = pp < 0 ? 0 : pp, t1 = pp < 0 ? T : pp + 1, nn = 0;
    double m_clean = metric(lp_run_logits(clean, at), target, contrast);
    double m_corrupt = metric(lp_run_logits(corrupt, at), target, contrast), m_base = denoise ? m_corrupt : m_clean;
    /* The nodes: the features whose activation differs at a patched position (the others'
     * patches change nothing), then the error term. */
    if (!(nodes = malloc(((size_t)m + 1) * sizeof *nodes)) || !(all_ids = malloc((size_t)m * sizeof *all_ids))) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    for (int f = 0; f < m; f++) {
        node nd = {f, 0, 0, {0, 0}};
        bool differs = false;
        for (int t = t0; t < t1; t++) {
            float a = acts[0][(size_t)t * m + f], b = acts[1][(size_t)t * m + f];
            nd.act[0] += a, nd.act[1] += b, differs |= a != b;
        }
        if (differs) nodes[nn++] = nd;
        all_ids[f] = f;
    }
    nodes[nn++] = (node){-1, 0, 0, {0, 0}};
    lp_sae_edit ed = {.sae = e->sae, .kind = e->kind, .out_kind = e->out_kind, .layer = e->layer,
                      .out_layer = e->out_layer, .mode = LP_SAE_SPLICE, .src_acts = acts[src], .src_err = err[src],
                      .src_rows = T, .patch_pos = pp};
    for (int i = 0; i < nn && !rc; i++) {
        ed.n_patch = nodes[i].f >= 0, ed.patch_id = &nodes[i].f, ed.patch_error = nodes[i].f < 0;
        if (!(rc = lp_sae_edited_logits(base, &ed, at, lg)))
            nodes[i].value = metric(lg, target, contrast), nodes[i].delta = nodes[i].value - m_base;
    }
    node everything = {-1, 0, 0, {0, 0}};
    ed.n_patch = m, ed.patch_id = all_ids, ed.patch_error = true;
    if (!rc && !(rc = lp_sae_edited_logits(base, &ed, at, lg)))
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
        json_t *j = node_json(&nodes[i], m_clean, m_corrupt);
        json_array_append_new(arr, j);
        lp_table_row(table, json_pack("[O,O,O,O,O]", json_object_get(j, "node"), json_object_get(j, "act_clean"),
                                      json_object_get(j, "act_corrupt"), json_object_get(j, "delta"),
                                      json_object_get(j, "recovery")));
    }
    json_t *jall = json_pack("{s:o,s:o,s:o}", "value", lp_json_number(everything.value), "delta",
                             lp_json_number(everything.delta), "recovery", recovery(everything.value, m_clean, m_corrupt));
    lp_table_row(table, json_pack("[s,n,n,O,O]", "all", json_object_get(jall, "delta"), json_object_get(jall, "recovery")));
    json_t *toks = json_array(), *ctoks = json_array(), *cid = json_array();
    for (int t = 0; t < T; t++) {
        json_array_append_new(toks, lp_cmd_token(s, lp_run_ids(clean)[t]));
        json_array_append_new(ctoks, lp_cmd_token(s, ids[t]));
        json_array_append_new(cid, json_integer(ids[t]));
    }
    json_t *v = json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:i,s:o,s:o,s:b,s:i,s:o,s:o,s:o,s:o}", "sae", e->name, "site",
                          e->out_site, "direction", denoise ? "denoising" : "noising", "patched_pos",
                          pp < 0 ? json_null() : json_integer(pp), "target", lp_cmd_output_obj(s, target), "contrast",
                          lp_cmd_output_obj(s, contrast), "pos", at, "clean", lp_json_number(m_clean), "corrupt",
                          lp_json_number(m_corrupt), "undefined", fabs(m_clean - m_corrupt) < LP_RECOVERY_MIN_GAP,
                          "changed", nn - 1, "nodes", arr, "all", jall, "tokens", toks, "corrupt_tokens", ctoks);
    json_t *params = json_pack("{s:s,s:s,s:o,s:i,s:i,s:s,s:o}", "sae", e->name, "site", e->out_site, "patched_pos",
                               pp < 0 ? json_null() : json_integer(pp), "target", target, "contrast", contrast,
                               "direction", denoise ? "denoising" : "noising", "corrupt_ids", cid);
    if (o[CORRUPT].value)
        json_object_set_new(params, "corrupt", json_stringn_nocheck(o[CORRUPT].value, strlen(o[CORRUPT].value)));
    rc = lp_cmd_record_analysis(s, "sae_patch", params, v);
    lp_cmd_emit(s, v, table);
done:
    lp_run_free(clean), lp_run_free(corrupt);
    for (int i = 0; i < 2; i++) free(acts[i]), free(err[i]);
    free(ids), free(types), free(lg), free(nodes), free(all_ids);
    return rc;
}
