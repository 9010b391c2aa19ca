/* The dictionary commands: sae (load, list, stats, drop), features, feature (the engine is
 * sae.h). A dictionary reads one site of every position of the current run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/sae.h"
#include "loupe/site.h"

void lp_cmd_sae_clear(lp_session *s) {
    for (int i = 0; i < s->n_saes; i++) lp_sae_free(s->saes[i].sae), free(s->saes[i].seen);
    free(s->saes);
    s->saes = NULL;
    s->n_saes = 0;
}

/* Resolves a hook name against the model: kind, layer, width checked against want. */
static int resolve_site(lp_session *s, const char *hook, const char *role, int want, lp_act_kind *kind, int *layer) {
    const lp_config *c = lp_model_config(s->model);
    int rc = lp_site_parse(hook, c, kind, layer);
    if (rc) return rc;
    if (*layer < 0)
        return lp_error(LP_EINVAL, "sae load: the %s site '%s' has no layer; give it as blocks.L.NAME (e.g. "
                        "blocks.0.hook_resid_post)", role, hook);
    if (*layer >= c->n_layer)
        return lp_error(LP_EINVAL, "sae load: the %s site %s is past the model's last layer (%d)", role, hook,
                        c->n_layer - 1);
    int w = lp_site_width(c, *kind);
    if (!w)
        return lp_error(LP_EUNSUPPORTED, "sae load: loupe does not read dictionaries on %s (%s) yet; sites: resid_pre, "
                        "resid_mid, resid_post, attn_out, mlp_out, ln1, ln2, z, mlp_pre, mlp_post", hook,
                        lp_act_name(*kind));
    if (w != want)
        return lp_error(LP_EINVAL, "sae load: the dictionary's %s width is %d but %s is %d wide in this model; is it "
                        "the model's SAE, at this site (--site)?", role, want, hook, w);
    return LP_OK;
}

/* The rows e reads in run r, into a new (T, d_in) array: kept by the edit when e was spliced
 * into r (its site then holds its output), else the site's. */
static int input_rows(const lp_session *s, const lp_run *r, const struct lp_session_sae *e, float **x) {
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    int T = lp_run_len(r);
    if (r != s->run || e->seen_run != r || e->seen_rows != T) return lp_site_rows(r, e->kind, e->layer, in->d_in, x);
    if (!(*x = malloc((size_t)T * in->d_in * sizeof **x))) return lp_error(LP_ENOMEM, "out of memory");
    memcpy(*x, e->seen, (size_t)T * in->d_in * sizeof **x);
    return LP_OK;
}

int lp_cmd_sae_rows(const lp_session *s, const struct lp_session_sae *e, float **x, float **y) {
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    *x = *y = NULL;
    int rc = input_rows(s, s->run, e, x);
    if (!rc) rc = lp_site_rows(s->run, e->out_kind, e->out_layer, in->d_out, y);
    if (rc) {
        free(*x), free(*y);
        *x = *y = NULL;
    }
    return rc;
}

/* Encodes (and decodes, with stats when st is not NULL) run r (the current run or one of its
 * ids) at e's site. */
static int run_sae(const lp_session *s, const lp_run *r, const struct lp_session_sae *e, float **acts_out,
                   lp_sae_stats *st) {
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    int T = lp_run_len(r);
    float *x = NULL, *y = NULL, *acts = NULL, *recon = NULL;
    int rc = input_rows(s, r, e, &x);
    if (!rc && in->transcoder) rc = lp_site_rows(r, e->out_kind, e->out_layer, in->d_out, &y);
    if (!rc && !(acts = malloc((size_t)T * in->d_sae * sizeof *acts))) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc && st && !(recon = malloc((size_t)T * in->d_out * sizeof *recon))) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = st ? lp_sae_measure(e->sae, x, y ? y : x, T, acts, recon, st) : lp_sae_encode(e->sae, x, T, acts);
    free(x), free(y), free(recon);
    if (rc || !acts_out) {
        free(acts);
        acts = NULL;
    }
    if (acts_out) *acts_out = acts;
    return rc;
}

static json_t *stats_json(const lp_sae_stats *st) {
    return json_pack("{s:i,s:o,s:o,s:o,s:o}", "positions", st->n, "l0", lp_json_number(st->l0), "explained_variance",
                     lp_json_number(st->explained_variance), "mse", lp_json_number(st->mse), "rel_error",
                     lp_json_number(st->rel_error));
}

static json_t *describe(const struct lp_session_sae *e) {
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    json_t *v = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:s,s:b}", "name", e->name, "path", e->path, "format",
                          lp_sae_format_name(in->format), "architecture", lp_sae_arch_label(in), "site", e->site,
                          "d_in", in->d_in, "d_sae", in->d_sae, "normalize", lp_sae_norm_name(in->norm),
                          "apply_b_dec_to_input", in->apply_b_dec_to_input);
    json_object_set_new(v, "k", in->k ? json_integer(in->k) : json_null());
    json_object_set_new(v, "out_site", in->transcoder ? json_string(e->out_site) : json_null());
    json_object_set_new(v, "store_k", json_integer(e->store_k));
    json_object_set_new(v, "splice", e->splice == LP_SAE_SPLICE            ? json_string("error_term")
                                     : e->splice == LP_SAE_SPLICE_NO_ERROR ? json_string("no_error")
                                                                           : json_null());
    if (in->norm == LP_SAE_NORM_EXPECTED_AVERAGE_ONLY_IN)
        json_object_set_new(v, "norm_scaling_factor", in->norm_scale_given ? json_real(in->norm_scale) : json_null());
    return v;
}

const struct lp_session_sae *lp_cmd_find_sae(const lp_session *s, const char *cmd, const char *name) {
    if (!s->n_saes) {
        lp_error(LP_EINVAL, "%s: no dictionary loaded; use 'sae load PATH' first", cmd);
        return NULL;
    }
    if (!name) return &s->saes[s->n_saes - 1];
    for (int i = 0; i < s->n_saes; i++)
        if (strcmp(s->saes[i].name, name) == 0) return &s->saes[i];
    lp_error(LP_EINVAL, "%s: no dictionary named '%s' ('sae list' shows them)", cmd, name);
    return NULL;
}

int lp_cmd_find_saes(const lp_session *s, const char *cmd, const char *names, const struct lp_session_sae **out,
                     int *n) {
    *n = 0;
    char buf[4096];
    if (names && strlen(names) >= sizeof buf) return lp_error(LP_EINVAL, "%s: --sae is too long", cmd);
    snprintf(buf, sizeof buf, "%s", names ? names : "");
    char *save = NULL, *tok = names ? strtok_r(buf, ",", &save) : NULL;
    if (names && !tok) return lp_error(LP_EINVAL, "%s: --sae names no dictionary (NAME[,NAME...])", cmd);
    do {
        if (*n == LP_CMD_MAX_SAES) return lp_error(LP_EINVAL, "%s: at most %d dictionaries at once", cmd, LP_CMD_MAX_SAES);
        const struct lp_session_sae *e = lp_cmd_find_sae(s, cmd, tok);
        if (!e) return LP_EINVAL;
        for (int i = 0; i < *n; i++)
            if (out[i] == e) return lp_error(LP_EINVAL, "%s: --sae names %s twice", cmd, e->name);
        out[(*n)++] = e;
    } while (names && (tok = strtok_r(NULL, ",", &save)));
    return LP_OK;
}

/* Features kept per position of a stored run unless sae load --store-k says otherwise. */
#define STORE_K_DEFAULT 32

static int sae_load(lp_session *s, const char *path, const char *site, const char *name, const char *store_k) {
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    static unsigned serials; /* loads in this process */
    struct lp_session_sae e = {.store_k = STORE_K_DEFAULT, .serial = ++serials};
    long k;
    if (store_k && (rc = lp_cmd_int(store_k, "--store-k", 0, 4096, &k))) return rc;
    if (store_k) e.store_k = (int)k;
    if ((rc = lp_sae_load(&e.sae, path))) return rc;
    if (e.store_k > lp_sae_get_info(e.sae)->d_sae) e.store_k = lp_sae_get_info(e.sae)->d_sae;
    const lp_sae_info *in = lp_sae_get_info(e.sae);
    const char *hook = site ? site : in->hook_name;
    if (!hook[0])
        rc = lp_error(LP_EINVAL, "sae load: %s does not say which site it reads; give --site (e.g. --site "
                      "blocks.0.hook_resid_post)", path);
    if (!rc) rc = resolve_site(s, hook, "input", in->d_in, &e.kind, &e.layer);
    e.out_kind = e.kind, e.out_layer = e.layer;
    if (!rc && in->transcoder) {
        if (!in->hook_name_out[0])
            rc = lp_error(LP_EUNSUPPORTED, "sae load: %s is a transcoder whose output site loupe cannot tell; name its "
                          "directory as sparsify does (layers.L.mlp)", path);
        else
            rc = resolve_site(s, in->hook_name_out, "output", in->d_out, &e.out_kind, &e.out_layer);
    }
    snprintf(e.site, sizeof e.site, "blocks.%d.%s", e.layer, lp_act_name(e.kind));
    snprintf(e.out_site, sizeof e.out_site, "blocks.%d.%s", e.out_layer, lp_act_name(e.out_kind));
    if (!rc && strlen(path) >= sizeof e.path) rc = lp_error(LP_ERANGE, "sae load: path too long");
    snprintf(e.path, sizeof e.path, "%s", path);
    const char *nm = name ? name : e.site;
    if (!rc && (strlen(nm) >= sizeof e.name || !nm[0]))
        rc = lp_error(LP_EINVAL, "sae load: --name must be 1 to %zu characters", sizeof e.name - 1);
    for (int i = 0; !rc && i < s->n_saes; i++)
        if (strcmp(s->saes[i].name, nm) == 0)
            rc = lp_error(LP_EINVAL, "sae load: a dictionary named '%s' is loaded already; give another --name (or "
                          "'sae drop %s')", nm, nm);
    snprintf(e.name, sizeof e.name, "%s", nm);
    lp_sae_stats st;
    if (!rc && s->run) rc = run_sae(s, s->run, &e, NULL, &st);
    struct lp_session_sae *grown = rc ? NULL : realloc(s->saes, (size_t)(s->n_saes + 1) * sizeof *grown);
    if (!rc && !grown) rc = lp_error(LP_ENOMEM, "out of memory");
    if (rc) {
        lp_sae_free(e.sae);
        return rc;
    }
    s->saes = grown;
    s->saes[s->n_saes++] = e;
    json_t *v = describe(&e), *table = lp_table_new(), *stats = s->run ? stats_json(&st) : json_null();
    lp_table_column(table, "field", 0, NULL);
    lp_table_column(table, "value", 0, NULL);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) lp_table_row(table, json_pack("[s,O]", key, val));
    json_object_foreach(stats, key, val) lp_table_row(table, json_pack("[s,O]", key, val)); /* the run's, flat */
    json_object_set_new(v, "stats", stats);
    lp_cmd_emit(s, v, table);
    return LP_OK;
}

static int sae_stats(lp_session *s, const char *name) {
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    const struct lp_session_sae *one = name ? lp_cmd_find_sae(s, "sae stats", name) : NULL;
    if (name && !one) return LP_EINVAL;
    if (!s->n_saes) return lp_error(LP_EINVAL, "sae stats: no dictionary loaded; use 'sae load PATH' first");
    /* the model's own activations: the current run's ids without splices or steering */
    lp_run *plain = NULL;
    if (!lp_run_source(s->run) &&
        (rc = lp_run_new_typed(&plain, s->model, lp_run_ids(s->run), lp_run_types(s->run), lp_run_len(s->run))))
        return rc;
    json_t *arr = json_array(), *table = lp_table_new();
    const char *cols[] = {"name",      "site",    "positions", "l0",     "explained_variance", "mse",
                          "rel_error", "ce_orig", "ce_sae",    "ce_zero", "ce_recovered"};
    const char *fmts[] = {NULL, NULL, NULL, "%.2f", "%.4f", "%.4g", "%.4f", "%.4f", "%.4f", "%.4f", "%.4f"};
    for (int k = 0; k < 11; k++) lp_table_column(table, cols[k], 0, fmts[k]);
    for (int i = 0; i < s->n_saes; i++) {
        const struct lp_session_sae *e = &s->saes[i];
        if (one && e != one) continue;
        lp_sae_stats st;
        if ((rc = run_sae(s, plain ? plain : s->run, e, NULL, &st))) break;
        json_t *row = stats_json(&st);
        json_object_set_new(row, "name", json_string(e->name));
        json_object_set_new(row, "site", json_string(e->site));
        if ((rc = lp_cmd_sae_ce(s, e, row))) {
            json_decref(row);
            break;
        }
        json_t *trow = json_pack("[s,s,i]", e->name, e->site, st.n);
        for (int k = 3; k < 11; k++) json_array_append(trow, json_object_get(row, cols[k]));
        lp_table_row(table, trow);
        json_array_append_new(arr, row);
    }
    lp_run_free(plain);
    if (rc) {
        json_decref(arr), json_decref(table);
        return rc;
    }
    lp_cmd_emit(s, arr, table);
    return LP_OK;
}

int lp_cmd_sae(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (argc > 1 && strcmp(argv[1], "attr") == 0) return lp_cmd_sae_attr(s, argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "patch") == 0) return lp_cmd_sae_patch(s, argc - 1, argv + 1);
    lp_opt o[] = {{"site", false, NULL}, {"name", false, NULL}, {"no-error", true, NULL}, {"store-k", false, NULL}};
    char *pos[2];
    int np, rc = lp_cmd_opts("sae", argc, argv, o, 4, pos, 2, &np);
    if (rc) return rc;
    const char *sub = np ? pos[0] : "list";
    if ((o[0].value || o[1].value || o[3].value) && strcmp(sub, "load") != 0)
        return lp_error(LP_EINVAL, "sae: --site, --name and --store-k go with 'sae load PATH'");
    if (o[2].value && strcmp(sub, "splice") != 0) return lp_error(LP_EINVAL, "sae: --no-error goes with 'sae splice'");
    if (strcmp(sub, "splice") == 0 || strcmp(sub, "unsplice") == 0)
        return lp_cmd_sae_splice(s, np == 2 ? pos[1] : NULL, sub[0] == 's', o[2].value != NULL);
    if (strcmp(sub, "load") == 0) {
        if (np != 2) return lp_error(LP_EINVAL, "sae load: give the dictionary's directory or file, e.g. 'sae load DIR'");
        return sae_load(s, pos[1], o[0].value, o[1].value, o[3].value);
    }
    if (strcmp(sub, "stats") == 0) return sae_stats(s, np == 2 ? pos[1] : NULL);
    if (strcmp(sub, "drop") == 0) {
        const struct lp_session_sae *e = np == 2 ? lp_cmd_find_sae(s, "sae drop", pos[1]) : NULL;
        if (np != 2) return lp_error(LP_EINVAL, "sae drop: give the name of a dictionary ('sae list' shows them)");
        if (!e) return LP_EINVAL;
        int i = (int)(e - s->saes);
        json_t *v = json_pack("{s:s}", "dropped", e->name);
        lp_sae_free(s->saes[i].sae);
        free(s->saes[i].seen);
        memmove(&s->saes[i], &s->saes[i + 1], (size_t)(s->n_saes - i - 1) * sizeof *s->saes);
        s->n_saes--;
        lp_cmd_emit(s, v, NULL);
        return LP_OK;
    }
    if (strcmp(sub, "list") != 0 || np > 1)
        return lp_error(LP_EINVAL, "sae: load PATH [--site S] [--name N], list, stats [NAME], splice [NAME] "
                        "[--no-error], unsplice [NAME], attr [options], patch [options] or drop NAME");
    json_t *arr = json_array();
    for (int i = 0; i < s->n_saes; i++) json_array_append_new(arr, describe(&s->saes[i]));
    lp_cmd_emit(s, arr, NULL);
    return LP_OK;
}

/* ---- features ---- */

/* The k largest of v (n) into top, largest first, ties by the smaller index (lp_top_k);
 * returns how many: k, or n when n is smaller. */
static int top_k(int *top, const float *v, int n, int k) {
    if (k > n) k = n;
    if (k > 0 && lp_top_k(top, v, n, k)) return -1;
    return k;
}

void lp_cmd_sae_store_free(lp_store_features *f, int n) {
    for (int i = 0; f && i < n; i++) free((void *)f[i].feature), free((void *)f[i].act);
    free(f);
}

int lp_cmd_sae_store_rows(const lp_session *s, lp_store_features **out, int *n) {
    *out = NULL, *n = 0;
    int m = 0, rc = LP_OK;
    for (int i = 0; i < s->n_saes; i++) m += s->saes[i].store_k > 0;
    if (!m || !s->run || lp_run_source(s->run)) return LP_OK;
    lp_store_features *f = calloc((size_t)m, sizeof *f);
    if (!f) return lp_error(LP_ENOMEM, "out of memory");
    int T = lp_run_len(s->run), got = 0;
    for (int i = 0; i < s->n_saes && !rc; i++) {
        const struct lp_session_sae *e = &s->saes[i];
        if (e->store_k <= 0) continue;
        const lp_sae_info *in = lp_sae_get_info(e->sae);
        int k = e->store_k, d = in->d_sae;
        float *acts = NULL, *act = malloc(((size_t)T * k + 1) * sizeof *act);
        int *feat = malloc(((size_t)T * k + 1) * sizeof *feat), *top = malloc((size_t)k * sizeof *top);
        f[got++] = (lp_store_features){e->name, e->path, e->site, in->transcoder ? e->out_site : NULL,
                                       lp_sae_arch_label(in), in->d_in, d, k, T, feat, act};
        rc = act && feat && top ? run_sae(s, s->run, e, &acts, NULL) : lp_error(LP_ENOMEM, "out of memory");
        for (int t = 0; !rc && t < T; t++) { /* the k largest, the active ones among them, -1 after */
            const float *a = acts + (size_t)t * d;
            int nk = top_k(top, a, d, k), j = 0;
            if (nk < 0) rc = lp_error(LP_ENOMEM, "out of memory");
            for (int r = 0; r < nk; r++)
                if (a[top[r]] > 0) feat[(size_t)t * k + j] = top[r], act[(size_t)t * k + j++] = a[top[r]];
            for (; j < k; j++) feat[(size_t)t * k + j] = -1, act[(size_t)t * k + j] = 0;
        }
        free(acts);
        free(top);
    }
    if (rc) {
        lp_cmd_sae_store_free(f, got);
        return rc;
    }
    *out = f, *n = got;
    return LP_OK;
}

json_t *lp_cmd_feature_examples(lp_session *s, const char *name, const char *id, json_int_t ds, int k, int *rc) {
    const struct lp_session_sae *e = lp_cmd_find_sae(s, "examples feature", name);
    long f;
    if (!e) {
        *rc = LP_EINVAL;
        return NULL;
    }
    if ((*rc = lp_cmd_int(id, "feature", 0, lp_sae_get_info(e->sae)->d_sae - 1, &f))) return NULL;
    json_t *rows = NULL, *found = NULL, *which = json_pack("[I,s,s,s]", ds, e->name, e->path, e->site);
    /* the dataset's runs that kept this dictionary's features: none means it was not loaded */
    *rc = lp_store_query(s->store, "SELECT count(*) AS n FROM dataset_items i JOIN run_saes r ON r.run_id = i.run_id"
                         " JOIN saes d ON d.id = r.sae_id WHERE i.dataset_id = ?1 AND d.name = ?2 AND d.path = ?3 AND"
                         " d.site = ?4", which, false, &found, NULL);
    json_decref(which);
    json_t *params = json_pack("[I,s,s,s,I,i]", ds, e->name, e->path, e->site, (json_int_t)f, k);
    json_int_t n = *rc ? 0 : json_integer_value(json_object_get(json_array_get(found, 0), "n"));
    json_decref(found);
    if (!*rc && !n)
        *rc = lp_error(LP_EINVAL, "examples feature: dataset %lld kept no features of '%s'; run the dataset with the "
                       "dictionary loaded (sae load %s)", (long long)ds, e->name, e->path);
    if (!*rc)
        *rc = lp_store_query(s->store, "SELECT row_number() OVER (ORDER BY f.act DESC, i.item, f.pos) AS rank, i.item,"
                             " i.text, 'activation' AS metric, f.pos, t.text AS token, f.act AS value, i.run_id"
                             " FROM feature_activations f JOIN saes d ON d.id = f.sae_id"
                             " JOIN dataset_items i ON i.run_id = f.run_id AND i.dataset_id = ?1"
                             " LEFT JOIN tokens t ON t.run_id = f.run_id AND t.side = 'target' AND t.pos = f.pos"
                             " WHERE d.name = ?2 AND d.path = ?3 AND d.site = ?4 AND f.feature = ?5"
                             " ORDER BY f.act DESC, i.item, f.pos LIMIT ?6", params, false, &rows, NULL);
    json_decref(params);
    return *rc ? NULL : rows;
}

int lp_cmd_features(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"sae", false, NULL}, {"pos", false, NULL}, {"k", false, NULL}};
    char *pos[1];
    int np, only = -1;
    long k = 10;
    if ((rc = lp_cmd_opts("features", argc, argv, o, 3, pos, 0, &np))) return rc;
    const struct lp_session_sae *e = lp_cmd_find_sae(s, "features", o[0].value);
    if (!e) return LP_EINVAL;
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    if ((o[1].value && (rc = lp_cmd_pos(s, o[1].value, &only))) ||
        (o[2].value && (rc = lp_cmd_int(o[2].value, "--k", 1, in->d_sae, &k))))
        return rc;
    float *acts;
    if ((rc = run_sae(s, s->run, e, &acts, NULL))) return rc;
    int m = in->d_sae, T = lp_run_len(s->run);
    int *top = malloc((size_t)k * sizeof *top);
    if (!top) {
        free(acts);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "pos", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    lp_table_column(table, "feature", 0, NULL);
    lp_table_column(table, "act", 0, "%.4f");
    const int *ids = lp_run_ids(s->run);
    for (int t = only >= 0 ? only : 0; t < (only >= 0 ? only + 1 : T); t++) {
        const float *at = acts + (size_t)t * m;
        int n = top_k(top, at, m, (int)k);
        if (n < 0) {
            rc = LP_ENOMEM; /* lp_top_k said so */
            break;
        }
        json_t *fs = json_array();
        for (int j = 0; j < n && at[top[j]] > 0; j++) {
            json_array_append_new(fs, json_pack("{s:i,s:o}", "id", top[j], "act", lp_json_number(at[top[j]])));
            lp_table_row(table, json_pack("[i,o,i,o]", t, lp_cmd_token(s, ids[t]), top[j], lp_json_number(at[top[j]])));
        }
        json_array_append_new(arr, json_pack("{s:i,s:o}", "pos", t, "features", fs));
    }
    free(top);
    free(acts);
    if (rc) {
        json_decref(arr), json_decref(table);
        return rc;
    }
    lp_cmd_emit(s, arr, table);
    return LP_OK;
}

/* ---- one feature (feature ID, and the browser's features view) ---- */

const struct lp_sae *lp_session_sae(const lp_session *s, int i, const char **name, const char **site) {
    if (i < 0 || i >= s->n_saes) return NULL;
    if (name) *name = s->saes[i].name;
    if (site) *site = s->saes[i].site;
    return s->saes[i].sae;
}

const char *lp_session_sae_path(const lp_session *s, int i) { return i >= 0 && i < s->n_saes ? s->saes[i].path : NULL; }

int lp_session_sae_encode(const lp_session *s, int i, float **acts) {
    *acts = NULL;
    if (!s->run) return lp_error(LP_EINVAL, "features: no run yet; use 'run TEXT' first");
    if (i < 0 || i >= s->n_saes) return lp_error(LP_EINVAL, "features: no dictionary %d ('sae list' shows them)", i);
    return run_sae(s, s->run, &s->saes[i], acts, NULL);
}

int lp_session_sae_input(const lp_session *s, int i, float **x, unsigned *serial) {
    *x = NULL;
    if (!s->run) return lp_error(LP_EINVAL, "features: no run yet; use 'run TEXT' first");
    if (i < 0 || i >= s->n_saes) return lp_error(LP_EINVAL, "features: no dictionary %d ('sae list' shows them)", i);
    *serial = s->saes[i].serial;
    return input_rows(s, s->run, &s->saes[i], x);
}

void lp_feature_effects_clear(lp_feature_effects *fx) {
    free(fx->promoted), free(fx->suppressed), free(fx->nearest);
    memset(fx, 0, sizeof *fx);
}

/* Feature f of e on the current run, acts (T, d_sae) its encoding: the position where it is
 * strongest (the last position when it is as strong there, or never fires), its logit effects
 * through the final norm frozen there and its decoder-cosine neighbours, k of each. */
static int feature_effects(const lp_session *s, const struct lp_session_sae *e, int f, const float *acts, int k,
                           lp_feature_effects *fx) {
    memset(fx, 0, sizeof *fx);
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    int m = in->d_sae, T = lp_run_len(s->run), V = lp_model_config(s->model)->vocab;
    int best = T - 1;
    for (int t = 0; t < T; t++)
        if (acts[(size_t)t * m + f] > acts[(size_t)best * m + f]) best = t;
    fx->pos = best;
    int kk = k > V ? V : k, km = k > m - 1 ? m - 1 : k, rc = LP_OK;
    float *buf = malloc((size_t)(V > m ? V : m) * sizeof *buf);
    int *top = malloc((size_t)(kk > km ? kk : km) * sizeof *top);
    fx->promoted = malloc((size_t)kk * sizeof *fx->promoted);
    fx->suppressed = malloc((size_t)kk * sizeof *fx->suppressed);
    fx->nearest = malloc((size_t)(km > 0 ? km : 1) * sizeof *fx->nearest);
    if (!buf || !top || !fx->promoted || !fx->suppressed || !fx->nearest) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto out;
    }
    /* logit effects: the written site's decoder row */
    const float *row = lp_sae_decoder_row(e->sae, f);
    rc = lp_sae_direction_logits(s->run, e->out_kind, e->out_layer, row, best, buf);
    if (rc == LP_EUNSUPPORTED) { /* no direct effect to show: say why, keep the rest */
        snprintf(fx->unavailable, sizeof fx->unavailable, "%s", lp_errmsg());
        lp_error_clear();
        rc = LP_OK;
    } else if (rc) {
        goto out;
    } else {
        fx->has_logits = true;
        int n = top_k(top, buf, V, kk);
        for (int j = 0; j < n; j++) fx->promoted[j] = (lp_scored){top[j], buf[top[j]]};
        for (int j = 0; j < V; j++) buf[j] = -buf[j];
        int n2 = n < 0 ? -1 : top_k(top, buf, V, kk);
        for (int j = 0; j < n2; j++) fx->suppressed[j] = (lp_scored){top[j], -buf[top[j]]};
        if (n2 < 0) {
            rc = LP_ENOMEM; /* lp_top_k said so */
            goto out;
        }
        fx->n_promoted = n, fx->n_suppressed = n2;
    }
    /* nearest features by decoder cosine */
    int d = in->d_out;
    double nf = 0;
    for (int j = 0; j < d; j++) nf += (double)row[j] * row[j];
    for (int g = 0; g < m; g++) {
        const float *w = lp_sae_decoder_row(e->sae, g);
        double dot = 0, ng = 0;
        for (int j = 0; j < d; j++) dot += (double)w[j] * row[j], ng += (double)w[j] * w[j];
        buf[g] = g == f ? -INFINITY : nf > 0 && ng > 0 ? (float)(dot / sqrt(nf * ng)) : 0.0f;
    }
    int n = top_k(top, buf, m, km);
    if (n < 0) {
        rc = LP_ENOMEM; /* lp_top_k said so */
        goto out;
    }
    for (int j = 0; j < n; j++) fx->nearest[j] = (lp_scored){top[j], buf[top[j]]};
    fx->n_nearest = n;
out:
    free(buf);
    free(top);
    if (rc) lp_feature_effects_clear(fx);
    return rc;
}

int lp_session_feature_effects(const lp_session *s, int i, int f, const float *acts, int k, lp_feature_effects *out) {
    memset(out, 0, sizeof *out);
    if (!s->run) return lp_error(LP_EINVAL, "feature: no run yet; use 'run TEXT' first");
    if (i < 0 || i >= s->n_saes) return lp_error(LP_EINVAL, "feature: no dictionary %d ('sae list' shows them)", i);
    int m = lp_sae_get_info(s->saes[i].sae)->d_sae;
    if (f < 0 || f >= m) return lp_error(LP_ERANGE, "feature: id %d is outside 0..%d", f, m - 1);
    if (k < 1 || k > 1000) return lp_error(LP_ERANGE, "feature: k %d is outside 1..1000", k);
    return feature_effects(s, &s->saes[i], f, acts, k, out);
}

/* A list of scored tokens (or features: f) as json and as the table's rows named part. */
static json_t *scored_json(const lp_session *s, const lp_scored *v, int n, bool tokens, const char *value,
                           const char *part, json_t *table) {
    json_t *arr = json_array();
    for (int j = 0; j < n; j++) {
        char nm[32];
        snprintf(nm, sizeof nm, "f%d", v[j].id);
        if (tokens)
            json_array_append_new(arr, json_pack("{s:i,s:o,s:o}", "id", v[j].id, "token", lp_cmd_token(s, v[j].id),
                                                 value, lp_json_number(v[j].value)));
        else json_array_append_new(arr, json_pack("{s:i,s:o}", "id", v[j].id, value, lp_json_number(v[j].value)));
        lp_table_row(table, json_pack("[s,i,o,o]", part, j + 1, tokens ? lp_cmd_token(s, v[j].id) : json_string(nm),
                                      lp_json_number(v[j].value)));
    }
    return arr;
}

int lp_cmd_feature(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"sae", false, NULL}, {"k", false, NULL}};
    char *pos[1];
    int np;
    long f, k = 10;
    if ((rc = lp_cmd_opts("feature", argc, argv, o, 2, pos, 1, &np))) return rc;
    const struct lp_session_sae *e = lp_cmd_find_sae(s, "feature", o[0].value);
    if (!e) return LP_EINVAL;
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    int m = in->d_sae, T = lp_run_len(s->run);
    if (np != 1) return lp_error(LP_EINVAL, "feature: give a feature id, e.g. 'feature 12'");
    if ((rc = lp_cmd_int(pos[0], "feature id", 0, m - 1, &f)) || (o[1].value && (rc = lp_cmd_int(o[1].value, "--k", 1,
                                                                                                   1000, &k))))
        return rc;
    float *acts;
    if ((rc = run_sae(s, s->run, e, &acts, NULL))) return rc;
    const int *ids = lp_run_ids(s->run);
    json_t *ja = json_array(), *table = lp_table_new();
    lp_table_column(table, "part", 0, NULL);
    lp_table_column(table, "#", 0, NULL);
    lp_table_column(table, "token or feature", 1, NULL);
    lp_table_column(table, "value", 0, "%.4f");
    for (int t = 0; t < T; t++) {
        float a = acts[(size_t)t * m + f];
        json_array_append_new(ja, json_pack("{s:i,s:o,s:o}", "pos", t, "token", lp_cmd_token(s, ids[t]), "act",
                                            lp_json_number(a)));
        lp_table_row(table, json_pack("[s,i,o,o]", "act", t, lp_cmd_token(s, ids[t]), lp_json_number(a)));
    }
    lp_feature_effects fx;
    rc = feature_effects(s, e, (int)f, acts, (int)k, &fx);
    free(acts);
    if (rc) {
        json_decref(ja), json_decref(table);
        return rc;
    }
    json_t *v = json_pack("{s:s,s:i,s:o}", "sae", e->name, "feature", (int)f, "acts", ja);
    if (!fx.has_logits) {
        json_object_set_new(v, "logits", json_pack("{s:s}", "unavailable", fx.unavailable));
    } else {
        json_t *pro = scored_json(s, fx.promoted, fx.n_promoted, true, "effect", "promotes", table);
        json_t *sup = scored_json(s, fx.suppressed, fx.n_suppressed, true, "effect", "suppresses", table);
        json_object_set_new(v, "logits", json_pack("{s:i,s:s,s:o,s:o}", "norm_scale_frozen_at_pos", fx.pos, "per",
                                                   "unit activation", "promoted", pro, "suppressed", sup));
    }
    json_object_set_new(v, "nearest", scored_json(s, fx.nearest, fx.n_nearest, false, "cos", "nearest", table));
    lp_feature_effects_clear(&fx);
    lp_cmd_emit(s, v, table);
    return LP_OK;
}
