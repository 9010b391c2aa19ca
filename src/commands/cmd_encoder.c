/* The commands of encoders' heads: classify (a sequence classifier's labels) and fill (a
 * masked LM's candidates for every mask of the run). */
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"

/* classify: one row per label, by id: id, label, probability (softmax over the labels), logit. */
int lp_cmd_classify(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argv, (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    if (argc > 1) return lp_error(LP_EINVAL, "classify takes no arguments");
    const lp_config *c = lp_model_config(s->model);
    if (c->head != LP_HEAD_CLASSIFIER)
        return lp_error(LP_EUNSUPPORTED, "classify: %s is not a sequence classifier (its head: %s); load a "
                        "...ForSequenceClassification model%s", c->arch, lp_head_kind_name(c->head),
                        c->head == LP_HEAD_MLM ? ", or use fill and top for a masked LM" : "");
    lp_cmd_emit(s, lp_cmd_labels(s), NULL);
    return LP_OK;
}

/* fill [K]: for each mask of the run, in order, its top K (default 5) candidates.
 * JSON: [{"pos":P,"candidates":[{"rank","id","token","prob","logit"}...]}...]; the table has a
 * row per candidate. */
int lp_cmd_fill(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    char *pos[1];
    int np;
    long k = 5;
    if ((rc = lp_cmd_opts("fill", argc, argv, NULL, 0, pos, 1, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    if (c->head != LP_HEAD_MLM)
        return lp_error(LP_EUNSUPPORTED, "fill: %s is not a masked language model (its head: %s)%s", c->arch,
                        lp_head_kind_name(c->head), c->head == LP_HEAD_CLASSIFIER ? "; use classify" : "");
    if (np && (rc = lp_cmd_int(pos[0], "K", 1, c->vocab, &k))) return rc;
    int first;
    if ((rc = lp_cmd_out_pos(s, "fill", NULL, &first))) return rc;
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int mask = lp_tokenizer_special(t, LP_SPECIAL_MASK), T = lp_run_len(s->run);
    const int *ids = lp_run_ids(s->run);
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "pos", 0, NULL);
    lp_table_column(table, "rank", 0, NULL);
    lp_table_column(table, "id", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    lp_table_column(table, "prob", 0, NULL);
    lp_table_column(table, "logit", 0, NULL);
    for (int p = first; p < T; p++) {
        if (ids[p] != mask) continue;
        json_t *top = lp_cmd_top_k(s, lp_run_logits(s->run, p), c->vocab, (int)k);
        size_t i;
        json_t *row;
        json_array_foreach(top, i, row)
            lp_table_row(table, json_pack("[i,O,O,O,O,O]", p, json_object_get(row, "rank"), json_object_get(row, "id"),
                                          json_object_get(row, "token"), json_object_get(row, "prob"),
                                          json_object_get(row, "logit")));
        json_array_append_new(arr, json_pack("{s:i,s:o}", "pos", p, "candidates", top));
    }
    lp_cmd_emit(s, arr, table);
    return LP_OK;
}

json_t *lp_cmd_output_obj(const lp_session *s, int id) {
    if (id < 0) return json_null();
    if (lp_model_config(s->model)->head == LP_HEAD_CLASSIFIER)
        return json_pack("{s:i,s:s}", "id", id, "label", lp_model_label(s->model, id));
    return json_pack("{s:i,s:o}", "id", id, "token", lp_cmd_token(s, id));
}

int lp_cmd_label(const lp_session *s, const char *name, const char *id, int *out) {
    int n = lp_model_n_labels(s->model);
    *out = -1;
    if (name && id) return lp_error(LP_EINVAL, "give the label by name or by id, not both");
    if (id) {
        long v;
        int rc = lp_cmd_int(id, "label id", 0, n - 1, &v);
        *out = (int)v;
        return rc;
    }
    if (!name) return LP_OK;
    for (int i = 0; i < n; i++)
        if (strcmp(name, lp_model_label(s->model, i)) == 0) return *out = i, LP_OK;
    return lp_error(LP_EINVAL, "'%s' is not one of this classifier's labels (see info or classify)", name);
}
