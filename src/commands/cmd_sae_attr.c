/* sae attr: an objective of the current run's prediction attributed to the features of one
 * dictionary or several, each one's error node and its decoder's constant part (gradient x
 * activation at its written site, lp_sae_attribute), with the closure that makes them a
 * decomposition, per dictionary. One backward pass serves every dictionary: with their error
 * terms the splices leave the forward as it is, so dO/dy at each written site is the run's
 * own gradient there (as Marks et al.'s sparse feature circuits take it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/grad.h"
#include "loupe/sae.h"

typedef struct {
    int pos, f, d; /* d: which dictionary */
    float attr, act;
} node;

static int by_magnitude(const void *a, const void *b) {
    const node *x = a, *y = b;
    float ax = fabsf(x->attr), ay = fabsf(y->attr);
    if (ax != ay) return ax < ay ? 1 : -1;
    if (x->d != y->d) return x->d - y->d;
    return x->pos != y->pos ? x->pos - y->pos : x->f - y->f;
}

/* The objective's gradient at e's written site (T, d_out), contiguous, from g. */
static int site_grad(const lp_grad *g, const struct lp_session_sae *e, int T, int width, float **out) {
    lp_view v;
    float *gr = NULL;
    int rc = lp_grad_view(g, e->out_kind, e->out_layer, -1, &v);
    if (!rc && !(gr = malloc((size_t)T * width * sizeof *gr))) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int t = 0; !rc && t < T; t++) { /* (T, width) or (T, H, dh): rows are contiguous in both */
        const float *row = v.data + (size_t)t * v.stride[0];
        memcpy(gr + (size_t)t * width, row, (size_t)width * sizeof *gr);
    }
    *out = gr;
    return rc;
}

/* One dictionary's part: its nodes (appended to *nodes, *n of them), per-position error node
 * and the closure's sums (features, error, constant, grad_x). */
typedef struct {
    const struct lp_session_sae *e;
    double *parts; /* (T, 3): error, constant, grad . y */
    double sum[4];
} dict_attr;

static int attribute_one(const lp_session *s, const lp_grad *g, dict_attr *da, int d, node **nodes, int *n) {
    const struct lp_session_sae *e = da->e;
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    int T = lp_run_len(s->run), m = in->d_sae, rc;
    float *x = NULL, *y = NULL, *grad = NULL, *attr = malloc((size_t)T * m * sizeof *attr);
    float *a = malloc((size_t)T * m * sizeof *a);
    da->parts = malloc((size_t)T * 3 * sizeof *da->parts);
    rc = attr && a && da->parts ? LP_OK : lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = lp_cmd_sae_rows(s, e, &x, &y);
    if (!rc) rc = site_grad(g, e, T, in->d_out, &grad);
    if (!rc) rc = lp_sae_attribute(e->sae, x, y, grad, T, attr, da->parts);
    if (!rc) rc = lp_sae_encode(e->sae, x, T, a); /* the activations beside their attributions */
    int more = 0; /* nodes: attr holds a_f * dO/da_f, zero where a_f is */
    for (size_t i = 0; !rc && i < (size_t)T * m; i++) more += attr[i] != 0;
    node *nn = rc ? NULL : realloc(*nodes, (size_t)(*n + more + 1) * sizeof *nn);
    if (!rc && !nn) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int t = 0; !rc && t < T; t++) {
        for (int f = 0; f < m; f++) {
            float v = attr[(size_t)t * m + f];
            da->sum[0] += v;
            if (v != 0) nn[(*n)++] = (node){t, f, d, v, a[(size_t)t * m + f]};
        }
        for (int j = 0; j < 3; j++) da->sum[j + 1] += da->parts[3 * t + j];
    }
    if (nn) *nodes = nn;
    free(x), free(y), free(grad), free(attr), free(a);
    return rc;
}

static json_t *closure_json(const double *sum) {
    double total = sum[0] + sum[1] + sum[2];
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "features", lp_json_number(sum[0]), "error", lp_json_number(sum[1]),
                     "constant", lp_json_number(sum[2]), "sum", lp_json_number(total), "grad_x", lp_json_number(sum[3]),
                     "gap", lp_json_number(total - sum[3]));
}

/* The dictionaries --sae names, into da. */
static int find_dicts(const lp_session *s, const char *names, dict_attr *da, int *nd) {
    const struct lp_session_sae *es[LP_CMD_MAX_SAES];
    int rc = lp_cmd_find_saes(s, "sae attr", names, es, nd);
    for (int i = 0; !rc && i < *nd; i++) da[i] = (dict_attr){.e = es[i]};
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
    int np, nd = 0;
    if ((rc = lp_cmd_opts("sae attr", argc, argv, o, NOPT, pos, 0, &np))) return rc;
    dict_attr *da = calloc(LP_CMD_MAX_SAES, sizeof *da);
    if (!da) return lp_error(LP_ENOMEM, "out of memory");
    lp_objective ob = {LP_OBJ_LOGIT, 0, -1, -1};
    long k = 20;
    lp_grad *g = NULL;
    node *nodes = NULL;
    int n = 0, T = lp_run_len(s->run);
    if ((rc = find_dicts(s, o[SAE].value, da, &nd)) ||
        (rc = lp_cmd_prediction(s, "sae attr", o[POS].value, o[TARGET].value, o[TARGET_ID].value, o[VS].value,
                                o[VS_ID].value, &ob.pos, &ob.target, &ob.contrast)))
        goto out;
    if (ob.contrast >= 0) ob.kind = LP_OBJ_LOGIT_DIFF;
    if (o[OBJECTIVE].value) {
        if ((rc = lp_objective_from_name(o[OBJECTIVE].value, &ob.kind))) goto out;
        if ((ob.kind == LP_OBJ_LOGIT_DIFF) != (ob.contrast >= 0)) {
            rc = lp_error(LP_EINVAL, "sae attr: the objective is logit_diff exactly when --vs names a contrast token");
            goto out;
        }
    }
    if ((o[K].value && (rc = lp_cmd_int(o[K].value, "--k", 1, 100000, &k))) || (rc = lp_grad_new(&g, s->run, &ob)))
        goto out;
    for (int d = 0; d < nd && !rc; d++) rc = attribute_one(s, g, &da[d], d, &nodes, &n);
    if (rc) goto out;
    qsort(nodes, (size_t)n, sizeof *nodes, by_magnitude);
    bool several = nd > 1;
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "node", 0, NULL);
    lp_table_column(table, "pos", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    lp_table_column(table, "act", 0, "%.4f");
    lp_table_column(table, "attr", 0, "%.5f");
    const int *ids = lp_run_ids(s->run);
    for (int j = 0; j < n && j < k; j++) {
        json_t *nd_j = json_pack("{s:i,s:i,s:o,s:o}", "pos", nodes[j].pos, "feature", nodes[j].f, "act",
                                 lp_json_number(nodes[j].act), "attr", lp_json_number(nodes[j].attr));
        if (several) json_object_set_new(nd_j, "sae", json_string(da[nodes[j].d].e->name));
        json_array_append_new(arr, nd_j);
        char nm[200];
        snprintf(nm, sizeof nm, "%s%sf%d", several ? da[nodes[j].d].e->name : "", several ? "/" : "", nodes[j].f);
        lp_table_row(table, json_pack("[s,i,o,o,o]", nm, nodes[j].pos, lp_cmd_token(s, ids[nodes[j].pos]),
                                      lp_json_number(nodes[j].act), lp_json_number(nodes[j].attr)));
    }
    const char *names[] = {"features", "error", "constant", "grad_x"};
    double total[4] = {0, 0, 0, 0};
    json_t *dicts = json_array();
    for (int d = 0; d < nd; d++) {
        json_t *errs = json_array();
        for (int t = 0; t < T; t++) json_array_append_new(errs, lp_json_number(da[d].parts[3 * t]));
        json_array_append_new(dicts, json_pack("{s:s,s:s,s:o,s:o}", "sae", da[d].e->name, "site", da[d].e->out_site,
                                               "error", errs, "closure", closure_json(da[d].sum)));
        for (int j = 0; j < 4; j++) {
            total[j] += da[d].sum[j];
            char nm[200];
            snprintf(nm, sizeof nm, "%s%s%s", several ? da[d].e->name : "", several ? " " : "", names[j]);
            lp_table_row(table, json_pack("[s,n,n,n,o]", nm, lp_json_number(da[d].sum[j])));
        }
    }
    json_t *v = json_pack("{s:s,s:o,s:o,s:i,s:o,s:i,s:o}", "objective", lp_objective_name(ob.kind), "target",
                          lp_cmd_output_obj(s, ob.target), "contrast", lp_cmd_output_obj(s, ob.contrast), "pos", ob.pos,
                          "value", lp_json_number(lp_grad_objective(g)), "active", n, "nodes", arr);
    if (several) { /* each dictionary's error nodes and closure, and the sums over them */
        json_object_set_new(v, "saes", dicts);
        json_object_set_new(v, "closure", closure_json(total));
    } else { /* one: as it was, the dictionary's fields at the top */
        json_t *one = json_array_get(dicts, 0);
        const char *key;
        json_t *val;
        json_object_foreach(one, key, val) json_object_set(v, key, val);
        json_decref(dicts);
    }
    lp_cmd_emit(s, v, table);
out:
    for (int d = 0; d < nd; d++) free(da[d].parts);
    free(da), free(nodes);
    lp_grad_free(g);
    return rc;
}
