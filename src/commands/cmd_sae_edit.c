/* Dictionaries in the forward: the session's spliced dictionaries ('sae splice'), the
 * running command's --steer and --clamp (run, generate), and the CE loss recovered that
 * 'sae stats' measures by splicing (the engine is sae.h's lp_sae_editor). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/sae.h"

#define MAX_FEATURE_VALUES 256 /* --steer / --clamp pairs a command may give */

struct lp_cmd_sae_edits {
    lp_sae_edit *edits;
    int n;
    int ids[2 * MAX_FEATURE_VALUES];
    float vals[2 * MAX_FEATURE_VALUES];
    lp_sae_editor *editor;
};

/* "F:V,F:V,...": feature ids and values into ids, vals (at most MAX_FEATURE_VALUES). */
static int parse_pairs(const char *opt, const char *list, int *ids, float *vals, int *n) {
    *n = 0;
    for (const char *p = list;;) {
        char *end;
        errno = 0;
        long f = strtol(p, &end, 10);
        bool ok = end != p && !errno && f >= 0 && f <= 1 << 30 && *end == ':';
        double v = 0;
        if (ok) {
            p = end + 1;
            v = strtod(p, &end);
            ok = end != p && !errno && isfinite(v) && fabs(v) < 1e30 && (*end == ',' || !*end);
        }
        if (!ok)
            return lp_error(LP_EINVAL, "%s: '%s' is not a list of FEATURE:VALUE pairs (e.g. %s 12:4.5,7:-2)", opt, list,
                            opt);
        if (*n == MAX_FEATURE_VALUES) return lp_error(LP_ERANGE, "%s: more than %d pairs", opt, MAX_FEATURE_VALUES);
        ids[*n] = (int)f, vals[*n] = (float)v, (*n)++;
        if (!*end) return LP_OK;
        p = end + 1;
    }
}

void lp_cmd_sae_edit_free(struct lp_cmd_sae_edits *e) {
    if (!e) return;
    lp_sae_editor_free(e->editor);
    free(e->edits);
    free(e);
}

lp_edit lp_cmd_sae_edit(struct lp_cmd_sae_edits *e) { return lp_sae_editor_edit(e->editor); }
int lp_cmd_sae_edit_status(const struct lp_cmd_sae_edits *e) { return lp_sae_editor_status(e->editor); }

int lp_cmd_sae_edit_new(lp_session *s, int seen_rows, struct lp_cmd_sae_edits **out) {
    *out = NULL;
    const char *name = s->sae_opts[0], *steer = s->sae_opts[1], *clamp = s->sae_opts[2];
    const struct lp_session_sae *target = NULL;
    if ((name || steer || clamp) && !(target = lp_cmd_find_sae(s, steer ? "--steer" : clamp ? "--clamp" : "--sae", name)))
        return LP_EINVAL;
    if (name && !steer && !clamp) return lp_error(LP_EINVAL, "--sae names the dictionary of --steer or --clamp");
    bool any = target != NULL;
    for (int i = 0; i < s->n_saes; i++) any |= s->saes[i].splice != LP_SAE_PASS;
    if (!any) return LP_OK;
    struct lp_cmd_sae_edits *E = calloc(1, sizeof *E);
    if (!E || !(E->edits = calloc((size_t)s->n_saes, sizeof *E->edits))) {
        free(E);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    int ns = 0, nc = 0, rc = LP_OK;
    if (steer) rc = parse_pairs("--steer", steer, E->ids, E->vals, &ns);
    if (!rc && clamp) rc = parse_pairs("--clamp", clamp, E->ids + MAX_FEATURE_VALUES, E->vals + MAX_FEATURE_VALUES, &nc);
    for (int i = 0; !rc && i < s->n_saes; i++) {
        struct lp_session_sae *e = &s->saes[i];
        if (e->splice == LP_SAE_PASS && e != target) continue;
        const lp_sae_info *in = lp_sae_get_info(e->sae);
        lp_sae_edit *ed = &E->edits[E->n++];
        *ed = (lp_sae_edit){.sae = e->sae, .kind = e->kind, .out_kind = e->out_kind, .layer = e->layer,
                            .out_layer = e->out_layer, .mode = (lp_sae_splice)e->splice};
        if (e == target) {
            ed->n_steer = ns, ed->steer_id = E->ids, ed->steer_alpha = E->vals;
            ed->n_clamp = nc, ed->clamp_id = E->ids + MAX_FEATURE_VALUES, ed->clamp_value = E->vals + MAX_FEATURE_VALUES;
        }
        if (seen_rows > 0 && (ed->mode != LP_SAE_PASS || nc)) { /* the site will hold its output: keep its input */
            float *seen = realloc(e->seen, (size_t)seen_rows * in->d_in * sizeof *seen);
            if (!seen) rc = lp_error(LP_ENOMEM, "out of memory");
            else e->seen = ed->seen = seen, ed->seen_rows = seen_rows;
        }
    }
    if (!rc) rc = lp_sae_editor_new(&E->editor, E->edits, E->n);
    if (rc) {
        lp_cmd_sae_edit_free(E);
        return rc;
    }
    *out = E;
    return LP_OK;
}

int lp_cmd_sae_run_new(lp_session *s, lp_run **r, const int *ids, const int *types, int n) {
    struct lp_cmd_sae_edits *E;
    *r = NULL;
    int rc = lp_cmd_sae_edit_new(s, n, &E);
    for (int i = 0; i < s->n_saes; i++) s->saes[i].seen_run = NULL, s->saes[i].seen_rows = 0;
    if (rc) return rc;
    if (!E) return lp_run_new_typed(r, s->model, ids, types, n);
    lp_edit ed = lp_cmd_sae_edit(E);
    rc = lp_run_new_edited(r, s->model, ids, types, n, &ed);
    if (!rc && (rc = lp_cmd_sae_edit_status(E))) {
        lp_run_free(*r);
        *r = NULL;
    }
    for (int i = 0; !rc && i < E->n; i++)
        for (int j = 0; j < s->n_saes; j++)
            if (E->edits[i].seen && E->edits[i].seen == s->saes[j].seen)
                s->saes[j].seen_run = *r, s->saes[j].seen_rows = n;
    lp_cmd_sae_edit_free(E);
    return rc;
}

json_t *lp_cmd_sae_edits_json(const lp_session *s) {
    json_t *spliced = json_array();
    for (int i = 0; i < s->n_saes; i++)
        if (s->saes[i].splice != LP_SAE_PASS)
            json_array_append_new(spliced, json_pack("{s:s,s:s}", "sae", s->saes[i].name, "splice",
                                                     s->saes[i].splice == LP_SAE_SPLICE ? "error_term" : "no_error"));
    const char *steer = s->sae_opts[1], *clamp = s->sae_opts[2];
    if (!json_array_size(spliced) && !steer && !clamp) {
        json_decref(spliced);
        return NULL;
    }
    const struct lp_session_sae *t = steer || clamp ? lp_cmd_find_sae(s, "--steer", s->sae_opts[0]) : NULL;
    return json_pack("{s:o,s:o,s:o,s:o}", "spliced", spliced, "sae", t ? json_string(t->name) : json_null(), "steer",
                     steer ? json_string(steer) : json_null(), "clamp", clamp ? json_string(clamp) : json_null());
}

int lp_cmd_sae_edits_text(const lp_session *s, char **text) {
    json_t *edits = lp_cmd_sae_edits_json(s);
    *text = edits ? json_dumps(edits, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(edits);
    return edits && !*text ? lp_error(LP_ENOMEM, "out of memory") : LP_OK;
}

/* ---- sae splice / unsplice ---- */

int lp_cmd_sae_splice(lp_session *s, const char *name, bool on, bool no_error) {
    struct lp_session_sae *e = (struct lp_session_sae *)lp_cmd_find_sae(s, on ? "sae splice" : "sae unsplice", name);
    if (!e) return LP_EINVAL;
    if (on && lp_model_encoder(s->model)) /* its runs are made apart (cmd_seq2seq.c), not through the edit */
        return lp_error(LP_EUNSUPPORTED, "sae splice: dictionaries are not spliced into an encoder-decoder yet");
    int was = e->splice;
    e->splice = !on ? LP_SAE_PASS : no_error ? LP_SAE_SPLICE_NO_ERROR : LP_SAE_SPLICE;
    if (on) { /* refused now rather than at the next run */
        lp_sae_editor *ed;
        lp_sae_edit one = {.sae = e->sae, .kind = e->kind, .out_kind = e->out_kind, .layer = e->layer,
                           .out_layer = e->out_layer, .mode = (lp_sae_splice)e->splice};
        int rc = lp_sae_editor_new(&ed, &one, 1);
        lp_sae_editor_free(ed);
        if (rc) {
            e->splice = was;
            return rc;
        }
    }
    json_t *v = json_pack("{s:s,s:s,s:o}", "sae", e->name, "site", e->out_site, "splice",
                          !on ? json_null() : json_string(no_error ? "no_error" : "error_term"));
    int rec = LP_OK;
    if (s->run && !lp_run_source(s->run)) { /* the current run again, through the new forward */
        int T = lp_run_len(s->run);
        int *keep = malloc(2 * (size_t)T * sizeof *keep);
        if (!keep) {
            json_decref(v);
            return lp_error(LP_ENOMEM, "out of memory");
        }
        memcpy(keep, lp_run_ids(s->run), (size_t)T * sizeof *keep);
        memcpy(keep + T, lp_run_types(s->run), (size_t)T * sizeof *keep);
        int rc = lp_cmd_set_run(s, keep, keep + T, T, NULL, NULL, 0, &rec);
        free(keep);
        if (rc) {
            json_decref(v);
            return rc;
        }
        json_object_set_new(v, "run_id", s->run_id ? json_integer(s->run_id) : json_null());
    }
    lp_cmd_emit(s, v, NULL);
    return rec;
}

/* ---- CE loss recovered ---- */

/* The mean next-token cross-entropy of a run of ids (n >= 2) through edit (NULL: none). */
static int next_token_ce(const lp_session *s, const int *ids, const int *types, int n, const lp_sae_edit *edit,
                         double *ce) {
    lp_sae_editor *E = NULL;
    lp_run *r = NULL;
    int rc = edit ? lp_sae_editor_new(&E, edit, 1) : LP_OK;
    lp_edit ed = E ? lp_sae_editor_edit(E) : (lp_edit){0};
    if (!rc) rc = lp_run_new_edited(&r, s->model, ids, types, n, &ed);
    if (!rc && E) rc = lp_sae_editor_status(E);
    double sum = 0;
    int V = rc ? 0 : lp_run_out_width(r);
    for (int t = 0; !rc && t + 1 < n; t++) {
        const float *lg = lp_run_logits(r, t);
        float mx;
        double z = lp_softmax_norm(lg, V, &mx);
        sum += log(z) + mx - lg[ids[t + 1]];
    }
    lp_run_free(r);
    lp_sae_editor_free(E);
    *ce = sum / (n - 1);
    return rc;
}

int lp_cmd_sae_ce(const lp_session *s, const struct lp_session_sae *e, json_t *row) {
    const lp_config *c = lp_model_config(s->model);
    int T = lp_run_len(s->run);
    const char *keys[] = {"ce_orig", "ce_sae", "ce_zero", "ce_recovered"};
    for (int k = 0; k < 4; k++) json_object_set_new(row, keys[k], json_null());
    if (c->head != LP_HEAD_LM || !c->causal || T < 2 || lp_run_source(s->run)) return LP_OK; /* no next tokens */
    lp_sae_edit ed = {.sae = e->sae, .kind = e->kind, .out_kind = e->out_kind, .layer = e->layer,
                      .out_layer = e->out_layer, .mode = LP_SAE_SPLICE_NO_ERROR};
    double ce[3];
    const int *ids = lp_run_ids(s->run), *types = lp_run_types(s->run);
    int rc = next_token_ce(s, ids, types, T, NULL, &ce[0]);
    if (!rc) rc = next_token_ce(s, ids, types, T, &ed, &ce[1]);
    ed.mode = LP_SAE_ZERO;
    if (!rc) rc = next_token_ce(s, ids, types, T, &ed, &ce[2]);
    if (rc) return rc;
    double den = ce[2] - ce[0];
    for (int k = 0; k < 3; k++) json_object_set_new(row, keys[k], lp_json_number(ce[k]));
    json_object_set_new(row, keys[3], den != 0 ? lp_json_number((ce[2] - ce[1]) / den) : json_null());
    return LP_OK;
}
