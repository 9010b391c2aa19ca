/* sae attr: an objective of the current run's prediction attributed to a dictionary's
 * features, its error node and its decoder's constant part (gradient x activation at the
 * written site, lp_sae_attribute), with the closure that makes them a decomposition. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/grad.h"
#include "loupe/sae.h"

typedef struct {
    int pos, f;
    float attr, act;
} node;

static int by_magnitude(const void *a, const void *b) {
    const node *x = a, *y = b;
    float ax = fabsf(x->attr), ay = fabsf(y->attr);
    if (ax != ay) return ax < ay ? 1 : -1;
    return x->pos != y->pos ? x->pos - y->pos : x->f - y->f;
}

/* The objective's gradient at e's written site (T, d_out), contiguous. */
static int site_grad(const lp_session *s, const struct lp_session_sae *e, const lp_objective *o, int width, float **out,
                     double *value) {
    lp_grad *g;
    int rc = lp_grad_new(&g, s->run, o), T = lp_run_len(s->run);
    if (rc) return rc;
    lp_view v;
    float *gr = NULL;
    if (!(rc = lp_grad_view(g, e->out_kind, e->out_layer, -1, &v)) && !(gr = malloc((size_t)T * width * sizeof *gr)))
        rc = lp_error(LP_ENOMEM, "out of memory");
    for (int t = 0; !rc && t < T; t++) { /* (T, width) or (T, H, dh): rows are contiguous in both */
        const float *row = v.data + (size_t)t * v.stride[0];
        memcpy(gr + (size_t)t * width, row, (size_t)width * sizeof *gr);
    }
    *value = lp_grad_objective(g);
    lp_grad_free(g);
    *out = gr;
    return rc;
}

int lp_cmd_sae_attr(lp_session *s, int argc, char **argv) {
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    enum { SAE, TARGET, TARGET_ID, VS, VS_ID, OBJECTIVE, POS, K, NOPT };
    lp_opt o[NOPT] = {{"sae", false, NULL}, {"target", false, NULL},    {"target-id", false, NULL},
                      {"vs", false, NULL},  {"vs-id", false, NULL},     {"objective", false, NULL},
                      {"pos", false, NULL}, {"k", false, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("sae attr", argc, argv, o, NOPT, pos, 0, &np))) return rc;
    const struct lp_session_sae *e = lp_cmd_find_sae(s, "sae attr", o[SAE].value);
    if (!e) return LP_EINVAL;
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    lp_objective ob = {LP_OBJ_LOGIT, 0, -1, -1};
    if ((rc = lp_cmd_prediction(s, "sae attr", o[POS].value, o[TARGET].value, o[TARGET_ID].value, o[VS].value,
                                o[VS_ID].value, &ob.pos, &ob.target, &ob.contrast)))
        return rc;
    if (ob.contrast >= 0) ob.kind = LP_OBJ_LOGIT_DIFF;
    if (o[OBJECTIVE].value) {
        if ((rc = lp_objective_from_name(o[OBJECTIVE].value, &ob.kind))) return rc;
        if ((ob.kind == LP_OBJ_LOGIT_DIFF) != (ob.contrast >= 0))
            return lp_error(LP_EINVAL, "sae attr: the objective is logit_diff exactly when --vs names a contrast token");
    }
    long k = 20;
    if (o[K].value && (rc = lp_cmd_int(o[K].value, "--k", 1, 100000, &k))) return rc;
    int T = lp_run_len(s->run), m = in->d_sae;
    float *x = NULL, *y = NULL, *grad = NULL, *attr = malloc((size_t)T * m * sizeof *attr);
    double *parts = malloc((size_t)T * 3 * sizeof *parts), value = 0;
    node *nodes = NULL;
    if (!attr || !parts) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = lp_cmd_sae_rows(s, e, &x, &y);
    if (!rc) rc = site_grad(s, e, &ob, in->d_out, &grad, &value);
    if (!rc) rc = lp_sae_attribute(e->sae, x, y, grad, T, attr, parts);
    if (rc) goto out;
    int n = 0; /* nodes: attr holds a_f * dO/da_f, zero where a_f is */
    double sum_f = 0, sum_err = 0, sum_const = 0, sum_total = 0;
    for (size_t i = 0; i < (size_t)T * m; i++) n += attr[i] != 0;
    if (!(nodes = malloc((size_t)(n ? n : 1) * sizeof *nodes))) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto out;
    }
    float *a = malloc((size_t)T * m * sizeof *a);
    if (!a || (rc = lp_sae_encode(e->sae, x, T, a))) { /* the activations beside their attributions */
        if (!rc) rc = lp_error(LP_ENOMEM, "out of memory");
        free(a);
        goto out;
    }
    n = 0;
    for (int t = 0; t < T; t++) {
        for (int f = 0; f < m; f++) {
            float v = attr[(size_t)t * m + f];
            sum_f += v;
            if (v != 0) nodes[n++] = (node){t, f, v, a[(size_t)t * m + f]};
        }
        sum_err += parts[3 * t], sum_const += parts[3 * t + 1], sum_total += parts[3 * t + 2];
    }
    free(a);
    qsort(nodes, (size_t)n, sizeof *nodes, by_magnitude);
    json_t *arr = json_array(), *errs = json_array(), *table = lp_table_new();
    lp_table_column(table, "node", 0, NULL);
    lp_table_column(table, "pos", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    lp_table_column(table, "act", 0, "%.4f");
    lp_table_column(table, "attr", 0, "%.5f");
    const int *ids = lp_run_ids(s->run);
    for (int j = 0; j < n && j < k; j++) {
        json_array_append_new(arr, json_pack("{s:i,s:i,s:o,s:o}", "pos", nodes[j].pos, "feature", nodes[j].f, "act",
                                             lp_json_number(nodes[j].act), "attr", lp_json_number(nodes[j].attr)));
        char nm[32];
        snprintf(nm, sizeof nm, "f%d", nodes[j].f);
        lp_table_row(table, json_pack("[s,i,o,o,o]", nm, nodes[j].pos, lp_cmd_token(s, ids[nodes[j].pos]),
                                      lp_json_number(nodes[j].act), lp_json_number(nodes[j].attr)));
    }
    for (int t = 0; t < T; t++) json_array_append_new(errs, lp_json_number(parts[3 * t]));
    double sum = sum_f + sum_err + sum_const;
    json_t *closure = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "features", lp_json_number(sum_f), "error",
                                lp_json_number(sum_err), "constant", lp_json_number(sum_const), "sum",
                                lp_json_number(sum), "grad_x", lp_json_number(sum_total), "gap",
                                lp_json_number(sum - sum_total));
    const char *names[] = {"features", "error", "constant", "grad_x"};
    double vals[] = {sum_f, sum_err, sum_const, sum_total};
    for (int j = 0; j < 4; j++)
        lp_table_row(table, json_pack("[s,n,n,n,o]", names[j], lp_json_number(vals[j])));
    json_t *v = json_pack("{s:s,s:s,s:s,s:o,s:o,s:i,s:o,s:i,s:o,s:o,s:o}", "sae", e->name, "site", e->out_site,
                          "objective", lp_objective_name(ob.kind), "target", lp_cmd_output_obj(s, ob.target), "contrast",
                          lp_cmd_output_obj(s, ob.contrast), "pos", ob.pos, "value", lp_json_number(value), "active",
                          n, "nodes", arr, "error", errs, "closure", closure);
    lp_cmd_emit(s, v, table);
out:
    free(x), free(y), free(grad), free(attr), free(parts), free(nodes);
    return rc;
}
