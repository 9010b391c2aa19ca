/* The circuits commands: dla, neurons, acts, patch, scan (the engine is circuits.h). Each
 * prints one JSON value and a table; dla, neurons and patch are recorded in the store as
 * analyses of the current run, scan as a head scan of the model. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/circuits.h"
#include "loupe/error.h"
#include "loupe/site.h"
#include "loupe/tokenizer.h"


static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static json_t *token_obj(const lp_session *s, int id) { return lp_cmd_output_obj(s, id); }

static bool is_classifier(const lp_session *s) { return lp_model_config(s->model)->head == LP_HEAD_CLASSIFIER; }

/* The position whose prediction is explained: --pos (default: a decoder's last, a masked
 * LM's first mask), or a classifier's 0. */
static int output_pos(const lp_session *s, const char *what, const char *arg, int *pos) {
    const lp_config *c = lp_model_config(s->model);
    if (c->head == LP_HEAD_NONE)
        return lp_error(LP_EUNSUPPORTED, "%s: %s has no output head, so no prediction to read", what, c->arch);
    if (c->head != LP_HEAD_CLASSIFIER) return lp_cmd_out_pos(s, what, arg, pos);
    *pos = 0;
    if (arg && strcmp(arg, "0") != 0)
        return lp_error(LP_EINVAL, "%s: a classifier's prediction is at position 0 (its [CLS]); leave out --pos", what);
    return LP_OK;
}

/* --target TOKEN / --target-id ID (a classifier's: LABEL / ID), else the top of logits. */
static int pick_target(const lp_session *s, const char *token, const char *id, const float *logits, int *out) {
    int rc = is_classifier(s) ? lp_cmd_label(s, token, id, out) : lp_cmd_target(s, token, id, out);
    if (!rc && *out < 0) *out = argmax(logits, lp_run_out_width(s->run));
    return rc;
}

/* --vs TOKEN / --vs-id ID (a classifier's: LABEL / ID), or -1. */
static int pick_contrast(const lp_session *s, const char *token, const char *id, int *out) {
    if (token && id) return lp_error(LP_EINVAL, "give --vs or --vs-id, not both");
    int rc = is_classifier(s) ? lp_cmd_label(s, token, id, out) : lp_cmd_target(s, token, id, out);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lp_errmsg());
        return lp_error(rc, "%s: %s", id ? "--vs-id" : "--vs", msg);
    }
    return LP_OK;
}

/* Records an analysis of the current run (when there is a store and the run is in it) and
 * sets "analysis_id" in the printed value. */
int lp_cmd_record_analysis(lp_session *s, const char *kind, json_t *params, json_t *result) {
    int rc = LP_OK;
    int64_t id = 0;
    if (s->store && s->run_id) {
        lp_json_make_utf8(params); /* the tokens: json_dumps refuses what is not UTF-8 */
        lp_json_make_utf8(result);
        char *p = json_dumps(params, JSON_COMPACT), *r = json_dumps(result, JSON_COMPACT | JSON_REAL_PRECISION(9));
        rc = p && r ? lp_store_put_analysis(s->store, s->run_id, kind, p, r, &id) : lp_error(LP_ENOMEM, "out of memory");
        free(p);
        free(r);
    }
    json_decref(params);
    json_object_set_new(result, "analysis_id", id ? json_integer(id) : json_null());
    return rc;
}

/* ---- dla ---- */

/* dla [--target ..] [--vs ..] [--pos P]: table: layers down, heads across, then the MLP;
 * the last rows hold the embeddings, the biases, the sum and the logit (in the mlp column);
 * encoders' (linearised in the head, circuits.h) also the remainder. */
int lp_cmd_dla(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"target", false, NULL}, {"target-id", false, NULL}, {"vs", false, NULL}, {"vs-id", false, NULL},
                  {"pos", false, NULL}};
    char *pos[1];
    int np, p, target, contrast;
    if ((rc = lp_cmd_opts("dla", argc, argv, o, 5, pos, 0, &np)) || (rc = output_pos(s, "dla", o[4].value, &p)) ||
        (rc = pick_target(s, o[0].value, o[1].value, lp_run_logits(s->run, p), &target)) ||
        (rc = pick_contrast(s, o[2].value, o[3].value, &contrast)))
        return rc;
    if (contrast == target)
        return lp_error(LP_EINVAL, "dla: the target and --vs are the same %s", is_classifier(s) ? "label" : "token");
    const lp_config *c = lp_model_config(s->model);
    int L = c->n_layer, H = c->n_head;
    bool x_on = c->cross_attn; /* an encoder-decoder's decoder: cross-attention heads x0.. beside h0.. */
    float *heads = malloc((size_t)L * H * sizeof *heads), *mlp = malloc((size_t)L * sizeof *mlp);
    float *cross = x_on ? malloc((size_t)L * H * sizeof *cross) : NULL;
    lp_dla_sums S;
    rc = heads && mlp && (!x_on || cross) ? lp_dla_seq2seq(s->run, p, target, contrast, heads, cross, mlp, &S)
                                          : lp_error(LP_ENOMEM, "out of memory");
    if (rc) {
        free(heads), free(mlp), free(cross);
        return rc;
    }
    json_t *jh = json_array(), *jm = json_array(), *jx = json_array(), *table = lp_table_new();
    lp_table_column(table, S.linearised ? "layer (linearised at the run)" : "layer", 0, NULL);
    char name[32];
    for (int h = 0; h < H; h++) {
        snprintf(name, sizeof name, "h%d", h);
        lp_table_column(table, name, 0, "%.3f");
    }
    for (int h = 0; x_on && h < H; h++) {
        snprintf(name, sizeof name, "x%d", h);
        lp_table_column(table, name, 0, "%.3f");
    }
    lp_table_column(table, "mlp", 0, "%.3f");
    for (int l = 0; l < L; l++) {
        json_t *row = json_array();
        snprintf(name, sizeof name, "%d", l);
        json_array_append_new(row, json_string(name));
        for (int h = 0; h < H; h++) {
            double x = heads[(size_t)l * H + h];
            json_array_append_new(jh, json_pack("{s:i,s:i,s:o}", "layer", l, "head", h, "dla", lp_json_number(x)));
            json_array_append_new(row, lp_json_number(x));
        }
        for (int h = 0; x_on && h < H; h++) {
            double x = cross[(size_t)l * H + h];
            json_array_append_new(jx, json_pack("{s:i,s:i,s:o}", "layer", l, "head", h, "dla", lp_json_number(x)));
            json_array_append_new(row, lp_json_number(x));
        }
        json_array_append_new(jm, json_pack("{s:i,s:o}", "layer", l, "dla", lp_json_number(mlp[l])));
        json_array_append_new(row, lp_json_number(mlp[l]));
        lp_table_row(table, row);
    }
    /* a final soft cap (Gemma 2): the parts sum to the logit before it; the capped one follows */
    bool capped = c->final_softcap > 0.0f;
    const char *labels[] = {"embed", "bias", "total", capped ? "logit (before cap)" : "logit",
                            S.linearised ? "remainder" : "logit (capped)"};
    double values[] = {S.embed, S.bias, S.total, S.logit, S.linearised ? S.remainder : S.capped};
    for (int k = 0; k < (S.linearised || capped ? 5 : 4); k++) {
        json_t *row = json_pack("[s]", labels[k]);
        for (int h = 0; h < (x_on ? 2 * H : H); h++) json_array_append_new(row, json_null());
        json_array_append_new(row, lp_json_number(values[k]));
        lp_table_row(table, row);
    }
    free(heads);
    free(mlp);
    free(cross);
    json_t *v = json_pack("{s:o,s:o,s:i,s:o,s:o,s:o,s:o,s:{s:o,s:o,s:o},s:o,s:o,s:o,s:o}", "target", token_obj(s, target),
                          "contrast", token_obj(s, contrast), "pos", p, "total", lp_json_number(S.total), "logit",
                          lp_json_number(S.logit), "embed", lp_json_number(S.embed), "bias", lp_json_number(S.bias),
                          "bias_parts", "attn_out", lp_json_number(S.attn_bias), "ln_final", lp_json_number(S.norm_bias),
                          "unembed", lp_json_number(S.unembed_bias), "heads_total", lp_json_number(S.heads), "mlp_total",
                          lp_json_number(S.mlp), "heads", jh, "mlp", jm);
    if (x_on) { /* the decoder's cross-attention heads, in the table's x columns */
        json_object_set_new(v, "cross", jx);
        json_object_set_new(v, "cross_total", lp_json_number(S.cross));
    } else {
        json_decref(jx);
    }
    json_object_set_new(v, "linearised", json_boolean(S.linearised));
    json_object_set_new(v, "remainder", lp_json_number(S.remainder));
    if (capped) json_object_set_new(v, "capped_logit", lp_json_number(S.capped));
    if (S.linearised) /* an encoder's biases: attention outputs and every post-norm */
        json_object_set_new(v, "bias_parts", json_pack("{s:o,s:o}", "attn_out", lp_json_number(S.attn_bias), "norms",
                                                       lp_json_number(S.norm_bias)));
    rc = lp_cmd_record_analysis(s, "dla",
                json_pack("{s:i,s:i,s:o}", "pos", p, "target", target, "contrast",
                          contrast >= 0 ? json_integer(contrast) : json_null()),
                v);
    lp_cmd_emit(s, v, table);
    return rc;
}

/* ---- neurons ---- */

typedef struct {
    int i;
    float key;
} ranked;

static int by_key_desc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? 1 : -1;
    return x->i - y->i;
}

/* neurons L [--pos P] [K] [--sort act|abs|dla] [--target ..] [--vs ..]. Encoders: dla as
 * lp_dla's (linearised in the head) where the head reads the position (a masked LM's any,
 * default the first mask; a classifier's 0); a bare encoder has activations only. */
int lp_cmd_neurons(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"pos", false, NULL},    {"target", false, NULL}, {"target-id", false, NULL},
                  {"vs", false, NULL},     {"vs-id", false, NULL},  {"sort", false, NULL}};
    char *pos[2];
    int np, p, target, contrast;
    if ((rc = lp_cmd_opts("neurons", argc, argv, o, 6, pos, 2, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    long layer, k = 10;
    if (np < 1) return lp_error(LP_EINVAL, "neurons: give a layer, e.g. 'neurons 3'");
    if ((rc = lp_cmd_int(pos[0], "layer", 0, c->n_layer - 1, &layer))) return rc;
    if (np > 1 && (rc = lp_cmd_int(pos[1], "K", 1, c->d_mlp, &k))) return rc;
    const char *sort = o[5].value ? o[5].value : "act";
    if (strcmp(sort, "act") && strcmp(sort, "abs") && strcmp(sort, "dla"))
        return lp_error(LP_EINVAL, "neurons: --sort act (highest activation), abs (largest |activation|) or dla "
                        "(largest |contribution|)");
    bool wants_dla = strcmp(sort, "dla") == 0 || o[1].value || o[2].value || o[3].value || o[4].value;
    bool with_dla = c->head != LP_HEAD_NONE;
    if (!with_dla && wants_dla)
        return lp_error(LP_EUNSUPPORTED, "neurons: %s has no output head, so no logit to attribute (--sort dla, "
                        "--target, --vs); use --sort act or abs", c->arch);
    target = contrast = -1;
    if (c->head == LP_HEAD_CLASSIFIER && !wants_dla && o[0].value) {
        if ((rc = lp_cmd_pos(s, o[0].value, &p))) return rc;
        with_dla = p == 0; /* activations elsewhere; the label is read at 0 */
    } else if (c->head == LP_HEAD_MLM && !o[0].value && lp_cmd_first_mask(s) < 0) {
        rc = lp_cmd_pos(s, NULL, &p); /* no mask: the last position, as for activations */
    } else {
        rc = with_dla ? output_pos(s, "neurons", o[0].value, &p) : lp_cmd_pos(s, o[0].value, &p);
    }
    if (rc ||
        (with_dla && (rc = pick_target(s, o[1].value, o[2].value, lp_run_logits(s->run, p), &target))) ||
        (with_dla && (rc = pick_contrast(s, o[3].value, o[4].value, &contrast))))
        return rc;
    int dm = c->d_mlp;
    float *dla = calloc((size_t)dm, sizeof *dla);
    ranked *order = malloc((size_t)dm * sizeof *order);
    rc = !dla || !order ? lp_error(LP_ENOMEM, "out of memory")
         : with_dla ? lp_dla_neurons(s->run, (int)layer, p, target, contrast, dla) : LP_OK;
    if (rc) {
        free(dla), free(order);
        return rc;
    }
    lp_view v;
    lp_run_view(s->run, LP_ACT_MLP_POST, (int)layer, -1, &v);
    const float *act = v.data + (size_t)p * v.stride[0];
    bool by_act = strcmp(sort, "act") == 0, by_abs = strcmp(sort, "abs") == 0;
    for (int i = 0; i < dm; i++) order[i] = (ranked){i, by_act ? act[i] : by_abs ? fabsf(act[i]) : fabsf(dla[i])};
    qsort(order, (size_t)dm, sizeof *order, by_key_desc);
    json_t *arr = json_array();
    for (int r = 0; r < k; r++) {
        int i = order[r].i;
        json_array_append_new(arr, json_pack("{s:i,s:i,s:o,s:o}", "rank", r + 1, "neuron", i, "act",
                                             lp_json_number(act[i]), "dla",
                                             with_dla ? lp_json_number(dla[i]) : json_null()));
    }
    free(dla);
    free(order);
    json_t *table = lp_table_new();
    lp_table_column(table, "rank", 0, NULL);
    lp_table_column(table, "neuron", 0, NULL);
    lp_table_column(table, "act", 0, "%.4g");
    if (with_dla) lp_table_column(table, "dla", 0, "%.4g");
    size_t i;
    json_t *row;
    json_array_foreach(arr, i, row) {
        json_t *trow = json_pack("[O,O,O]", json_object_get(row, "rank"), json_object_get(row, "neuron"),
                                 json_object_get(row, "act"));
        if (with_dla) json_array_append(trow, json_object_get(row, "dla"));
        lp_table_row(table, trow);
    }
    json_t *val = json_pack("{s:i,s:i,s:s,s:o,s:o,s:o}", "layer", (int)layer, "pos", p, "sort", sort, "target",
                            token_obj(s, target), "contrast", token_obj(s, contrast), "neurons", arr);
    rc = lp_cmd_record_analysis(s, "neurons",
                json_pack("{s:i,s:i,s:i,s:s,s:i,s:o}", "layer", (int)layer, "pos", p, "k", (int)k, "sort", sort, "target",
                          target, "contrast", contrast >= 0 ? json_integer(contrast) : json_null()),
                val);
    lp_cmd_emit(s, val, table);
    return rc;
}

/* ---- acts ---- */

/* acts L [--site SITE] [--pos P] [--top K]: SITE is any per-layer activation with one row
 * per position (resid_pre, attn_out, mlp_out, resid_post, resid_mid, ln1, ln2, mlp_pre,
 * mlp_post, ...); default resid_post, the residual stream the layer leaves. */
int lp_cmd_acts(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"site", false, NULL}, {"pos", false, NULL}, {"top", false, NULL}};
    char *pos[1];
    int np, only = -1;
    long layer, k = 5;
    if ((rc = lp_cmd_opts("acts", argc, argv, o, 3, pos, 1, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    lp_act_kind kind = LP_ACT_RESID_POST;
    int hook_layer = -1;
    if (o[0].value && (rc = lp_site_parse(o[0].value, c, &kind, &hook_layer))) return rc;
    layer = hook_layer; /* --site blocks.L.NAME gives the layer */
    if (np < 1 && hook_layer < 0) return lp_error(LP_EINVAL, "acts: give a layer, e.g. 'acts 3 --site mlp_out'");
    if (np && (rc = lp_cmd_int(pos[0], "layer", 0, c->n_layer - 1, &layer))) return rc;
    if (hook_layer >= 0 && layer != hook_layer)
        return lp_error(LP_EINVAL, "acts: layer %ld and --site %s disagree; give the layer once", layer, o[0].value);
    if (layer >= c->n_layer) return lp_error(LP_EINVAL, "layer %ld is out of range (0..%d)", layer, c->n_layer - 1);
    if (o[1].value && (rc = lp_cmd_pos(s, o[1].value, &only))) return rc;
    if (o[2].value && (rc = lp_cmd_int(o[2].value, "--top", 0, 64, &k))) return rc;
    lp_view v;
    if (kind == LP_ACT_LN_FINAL || kind == LP_ACT_LOGITS || kind == LP_ACT_LN_FINAL_SCALE || kind == LP_ACT_HEAD_HIDDEN)
        return lp_error(LP_EINVAL, "acts: %s is not per layer", lp_act_name(kind));
    if ((rc = lp_run_view(s->run, kind, (int)layer, -1, &v))) return rc;
    if (v.ndim != 2)
        return lp_error(LP_EINVAL, "acts: %s has no one row per position; use resid_pre, attn_out, mlp_out, "
                        "resid_post, mlp_post, ...", lp_act_name(kind));
    int T = lp_run_len(s->run), from = only >= 0 ? only : 0, to = only >= 0 ? only + 1 : T;
    const int *ids = lp_run_ids(s->run);
    int top[64];
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "pos", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    const char *names[] = {"norm", "mean", "std", "min", "max"};
    for (int i = 0; i < 5; i++) lp_table_column(table, names[i], 0, "%.4g");
    if (k) lp_table_column(table, "top |value| (dim:value)", 0, NULL);
    for (int t = from; t < to; t++) {
        lp_act_stats st;
        lp_act_summary(&v, t, (int)k, &st, top);
        const float *row = v.data + (size_t)t * v.stride[0];
        json_t *jt = json_array();
        char cell[64 * 24] = "";
        size_t at = 0;
        for (int i = 0; i < k && top[i] >= 0; i++) {
            json_array_append_new(jt, json_pack("{s:i,s:o}", "dim", top[i], "value", lp_json_number(row[top[i]])));
            at += (size_t)snprintf(cell + at, sizeof cell - at, "%s%d:%+.3g", i ? " " : "", top[i], (double)row[top[i]]);
        }
        json_array_append_new(arr, json_pack("{s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "pos", t, "token",
                                             lp_cmd_token(s, ids[t]), "norm", lp_json_number(st.norm), "mean",
                                             lp_json_number(st.mean), "std", lp_json_number(st.std), "min",
                                             lp_json_number(st.min), "max", lp_json_number(st.max), "top", jt));
        json_t *trow = json_pack("[i,o,o,o,o,o,o]", t, lp_cmd_token(s, ids[t]), lp_json_number(st.norm),
                                 lp_json_number(st.mean), lp_json_number(st.std), lp_json_number(st.min),
                                 lp_json_number(st.max));
        if (k) json_array_append_new(trow, json_string(cell));
        lp_table_row(table, trow);
    }
    lp_cmd_emit(s, json_pack("{s:i,s:s,s:i,s:o}", "layer", (int)layer, "site", lp_act_name(kind), "width", v.shape[1],
                             "positions", arr),
                table);
    return LP_OK;
}

/* ---- patch ---- */

static int parse_id_list(const char *list, int vocab, int **ids, int *n) {
    size_t cap = 1;
    for (const char *q = list; *q; q++) cap += *q == ',';
    int *out = malloc(cap * sizeof *out), k = 0;
    if (!out) return lp_error(LP_ENOMEM, "out of memory");
    for (const char *q = list; *q;) {
        char *end;
        errno = 0;
        long v = strtol(q, &end, 10);
        if (end == q || errno || (*end && *end != ',') || v < 0 || v >= vocab) {
            free(out);
            return lp_error(LP_EINVAL, "--corrupt-ids: '%s' is not a list of token ids in 0..%d", list, vocab - 1);
        }
        out[k++] = (int)v;
        q = *end ? end + 1 : end;
    }
    *ids = out;
    *n = k;
    return LP_OK;
}

/* An encoder's corrupted text in place of the run's first segment (through its first
 * [SEP] or </s>): the rest of the run, a pair's second text, follows it with its types. */
static int keep_second_segment(const lp_session *s, int **ids, int **types, int *n) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int sep = lp_tokenizer_special(t, LP_SPECIAL_SEP), T = lp_run_len(s->run), from = 0;
    const int *cids = lp_run_ids(s->run), *ctypes = lp_run_types(s->run);
    while (from < T && cids[from] != sep) from++;
    if (sep < 0 || ++from >= T) return LP_OK; /* one segment */
    int *more = realloc(*ids, (size_t)(*n + T - from) * sizeof *more), *moret = NULL;
    if (more) *ids = more;
    if (more && (moret = realloc(*types, (size_t)(*n + T - from) * sizeof *moret))) *types = moret;
    if (!more || !moret) return lp_error(LP_ENOMEM, "out of memory");
    memcpy(*ids + *n, cids + from, (size_t)(T - from) * sizeof **ids);
    memcpy(*types + *n, ctypes + from, (size_t)(T - from) * sizeof **types);
    *n += T - from;
    return LP_OK;
}

/* The corrupted prompt's ids and token types: text tokenized as the run was (BOS, or an
 * encoder's [CLS] ... [SEP], if the run starts with it); in an encoder it replaces the
 * run's first segment, and a pair's second text is the run's unless pair gives its own.
 * --corrupt-ids take the run's types. Length and types must be the run's. */
int lp_cmd_corrupt_ids(const lp_session *s, const char *what, const char *text, const char *list, const char *pair,
                       int **ids, int **types, int *n) {
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int rc, T = lp_run_len(s->run);
    *types = NULL;
    if ((text != NULL) == (list != NULL)) return lp_error(LP_EINVAL, "%s: give --corrupt TEXT or --corrupt-ids 1,2,3", what);
    if (pair && c->type_vocab == 0 && c->causal)
        return lp_error(LP_EINVAL, "%s: --pair is for encoders' sentence pairs (BERT, RoBERTa)", what);
    if (pair && list) return lp_error(LP_EINVAL, "%s: --pair goes with --corrupt TEXT; --corrupt-ids are the whole sequence", what);
    if (list) {
        rc = parse_id_list(list, c->vocab, ids, n);
        if (!rc && !(*types = malloc((size_t)(*n > T ? *n : T) * sizeof **types))) rc = lp_error(LP_ENOMEM, "out of memory");
        if (!rc) memcpy(*types, lp_run_types(s->run), (size_t)T * sizeof **types);
    } else {
        if (!t) return lp_error(LP_EINVAL, "%s: this model has no tokenizer; use --corrupt-ids", what);
        int bos = c->causal ? lp_tokenizer_bos(t) : lp_tokenizer_special(t, LP_SPECIAL_CLS);
        size_t len = strlen(text), plen = pair ? strlen(pair) : 0, cap = len + plen + 8;
        bool with_bos = bos >= 0 && lp_run_ids(s->run)[0] == bos;
        *ids = malloc(cap * sizeof **ids);
        *types = calloc(cap, sizeof **types);
        if (!*ids || !*types) rc = lp_error(LP_ENOMEM, "out of memory");
        else if (pair) rc = lp_tokenizer_encode_pair(t, text, len, pair, plen, with_bos, *ids, *types, (int)cap, n);
        else rc = lp_tokenizer_encode(t, text, len, with_bos, *ids, (int)cap, n);
        if (!rc && !pair && !c->causal) rc = keep_second_segment(s, ids, types, n);
    }
    if (!rc && *n != T)
        rc = lp_error(LP_EINVAL, "%s: the corrupted prompt is %d tokens and the run %d; patching needs the same "
                      "length (see 'tokens')", what, *n, T);
    for (int i = 0; !rc && i < T; i++)
        if ((*types)[i] != lp_run_types(s->run)[i])
            rc = lp_error(LP_EINVAL, "%s: the corrupted prompt's token type at position %d is %d, the run's %d; "
                          "give segments as long as the run's (see 'tokens')", what, i, (*types)[i], lp_run_types(s->run)[i]);
    if (rc) {
        free(*ids);
        free(*types);
        *ids = *types = NULL;
    }
    return rc;
}

/* The best token of logits (V) other than `not`. */
static int best_other(const float *logits, int V, int not) {
    int best = not == 0 ? 1 : 0;
    for (int i = 0; i < V; i++)
        if (i != not && logits[i] > logits[best]) best = i;
    return best;
}

static json_t *matrix(const float *x, int rows, int cols, double clean, double corrupt, bool recovery) {
    json_t *m = json_array();
    for (int r = 0; r < rows; r++) {
        json_t *row = json_array();
        for (int j = 0; j < cols; j++) {
            double v = x[(size_t)r * cols + j];
            json_array_append_new(row, !recovery ? lp_json_number(v) : isnan(clean) ? json_null()
                                                                : lp_json_number((v - corrupt) / (clean - corrupt)));
        }
        json_array_append_new(m, row);
    }
    return m;
}

/* The table of a patch result v: layers down, positions (or, with heads > 0, heads) across,
 * and `all` where v has layer_all; the recovery, or the raw logit difference when it is
 * undefined. */
static json_t *patch_table(json_t *v, int heads) {
    bool undefined = json_is_true(json_object_get(v, "undefined"));
    json_t *vals = json_object_get(v, undefined ? "raw" : "values"), *toks = json_object_get(v, "tokens");
    json_t *all = json_object_get(v, undefined ? "layer_all_raw" : "layer_all"); /* NULL unless attn_out, mlp_out */
    json_t *table = lp_table_new();
    lp_table_column(table, undefined ? "layer (logit diff: clean = corrupt)" : "layer", 0, NULL);
    char head[128];
    int cols = heads > 0 ? heads : (int)json_array_size(toks);
    for (int j = 0; j < cols; j++) {
        const char *txt = json_string_value(json_array_get(toks, (size_t)j));
        if (heads > 0) snprintf(head, sizeof head, "h%d", j);
        else snprintf(head, sizeof head, "%d:%.80s", j, txt ? txt : "");
        lp_table_column(table, head, heads == 0, "%.2f"); /* token headers are escaped when shown */
    }
    if (all) lp_table_column(table, "all", 0, "%.2f");
    for (size_t l = 0; l < json_array_size(vals); l++) {
        json_t *row = json_pack("[i]", (int)l);
        json_array_extend(row, json_array_get(vals, l));
        if (all) json_array_append(row, json_array_get(all, l));
        lp_table_row(table, row);
    }
    return table;
}

/* --site: resid_pre, attn_out, mlp_out, z, or their TransformerLens hooks without a layer
 * (hook_resid_pre, hook_attn_out, hook_mlp_out, attn.hook_z); an encoder-decoder's decoder
 * also cross_out, cross_z (hook_cross_attn_out, cross_attn.hook_z): patch sweeps every layer. */
static int patch_site(const lp_session *s, const char *name, lp_patch_site *site) {
    lp_act_kind kind;
    int layer;
    if (lp_site_parse(name, lp_model_config(s->model), &kind, &layer) == LP_OK && layer >= 0)
        return lp_error(LP_EINVAL, "patch: --site %s names one layer, and patch sweeps them all; give %s", name,
                        strchr(strchr(name, '.') + 1, '.') + 1);
    lp_error_clear();
    return lp_patch_site_from_name(lp_site_parse(name, lp_model_config(s->model), &kind, &layer) == LP_OK ?
                                   lp_act_name(kind) : name, site);
}

/* An encoder-decoder's stack to patch: --stack enc|dec; without it the encoder's (as attn
 * and heads show), the decoder's for the cross-attention sites. */
static int patch_stack(const lp_session *s, const char *arg, lp_patch_site site, bool *enc) {
    bool cross = site >= LP_PATCH_SITE_COUNT;
    *enc = false;
    if (!lp_model_encoder(s->model)) {
        if (arg) return lp_error(LP_EINVAL, "patch: --stack is for encoder-decoder models; this one has one stack");
        return cross ? lp_error(LP_EINVAL, "patch: --site %s: only the decoder of an encoder-decoder has "
                                "cross-attention", lp_patch_site_name(site)) : LP_OK;
    }
    if (arg && strcmp(arg, "enc") != 0 && strcmp(arg, "dec") != 0)
        return lp_error(LP_EINVAL, "patch: --stack is enc or dec, not '%s'", arg);
    if (cross && arg && arg[0] == 'e')
        return lp_error(LP_EINVAL, "patch: %s is the decoder's (cross-attention); use --stack dec or leave it out",
                        lp_patch_site_name(site));
    *enc = !cross && (!arg || arg[0] == 'e');
    return LP_OK;
}

/* patch --corrupt TEXT [--pair TEXT2] [--site S] [--target ..] [--vs ..] [--pos P] [--denoise]:
 * a layer x position (or layer x head for z) table of the logit-difference recovery.
 * Encoder-decoders: --corrupt is the source, --corrupt-target the target (either or both),
 * --stack picks the stack whose sites are swept; the prediction is the decoder's last. */
int lp_cmd_patch(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"corrupt", false, NULL},        {"corrupt-ids", false, NULL}, {"site", false, NULL},
                  {"target", false, NULL},         {"target-id", false, NULL},   {"vs", false, NULL},
                  {"vs-id", false, NULL},          {"denoise", true, NULL},      {"pos", false, NULL},
                  {"pair", false, NULL},           {"stack", false, NULL},       {"corrupt-target", false, NULL},
                  {"corrupt-target-ids", false, NULL}};
    char *pos[1];
    int np, target, contrast, n, at, *ids = NULL, *types = NULL;
    if ((rc = lp_cmd_opts("patch", argc, argv, o, 13, pos, 0, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    bool seq2seq = lp_model_encoder(s->model) != NULL, enc;
    if (!seq2seq && (o[11].value || o[12].value))
        return lp_error(LP_EINVAL, "patch: --corrupt-target is for encoder-decoder models (the decoder's input)");
    if (seq2seq && o[9].value) return lp_error(LP_EINVAL, "patch: --pair is for encoders' sentence pairs (BERT, RoBERTa)");
    lp_patch_site site = LP_PATCH_RESID_PRE;
    if ((o[2].value && (rc = patch_site(s, o[2].value, &site))) || (rc = patch_stack(s, o[10].value, site, &enc)))
        return rc;
    const lp_run *clean = s->run, *stack = enc ? lp_run_source(clean) : clean;
    const lp_config *sc = enc ? lp_model_config(lp_model_encoder(s->model)) : c;
    int T = lp_run_len(stack), L = sc->n_layer, V = lp_run_out_width(s->run);
    if (c->causal && o[8].value) {
        if ((rc = lp_cmd_pos(s, o[8].value, &at))) return rc;
        if (at != lp_run_len(clean) - 1)
            return lp_error(LP_EINVAL, "patch: a decoder's patching reads its last position (%d); leave out --pos",
                            lp_run_len(clean) - 1);
    }
    lp_run *corrupt = NULL;
    if ((rc = output_pos(s, "patch", c->causal ? NULL : o[8].value, &at)))
        goto done;
    if (seq2seq) {
        rc = lp_cmd_corrupt_seq2seq(s, o[0].value, o[1].value, o[11].value, o[12].value, &corrupt);
        if (!rc && !(ids = malloc((size_t)T * sizeof *ids))) rc = lp_error(LP_ENOMEM, "out of memory");
        if (!rc) memcpy(ids, lp_run_ids(enc ? lp_run_source(corrupt) : corrupt), (size_t)T * sizeof *ids);
    } else if (!(rc = lp_cmd_corrupt_ids(s, "patch", o[0].value, o[1].value, o[9].value, &ids, &types, &n))) {
        rc = lp_run_new_typed(&corrupt, s->model, ids, types, n);
    }
    if (rc || (rc = pick_target(s, o[3].value, o[4].value, lp_run_logits(clean, at), &target)) ||
        (rc = pick_contrast(s, o[5].value, o[6].value, &contrast)))
        goto done;
    /* The contrast by default: what the corrupted run predicts instead (its runner-up if
     * that is the target too). */
    if (contrast < 0) contrast = best_other(lp_run_logits(corrupt, at), V, target);
    if (contrast == target) {
        rc = lp_error(LP_EINVAL, "patch: the target and --vs are the same token");
        goto done;
    }
    bool denoise = o[7].value != NULL, by_head = site == LP_PATCH_Z || site == LP_PATCH_CROSS_Z;
    const lp_run *base = denoise ? corrupt : clean, *source = denoise ? clean : corrupt;
    int cols = by_head ? c->n_head : T;
    bool per_layer_too = site == LP_PATCH_ATTN_OUT || site == LP_PATCH_MLP_OUT || site == LP_PATCH_CROSS_OUT;
    float *raw = malloc(((size_t)L * cols + L) * sizeof *raw), *all = raw ? raw + (size_t)L * cols : NULL;
    lp_patch *whole = malloc((size_t)L * sizeof *whole);
    if (!raw || !whole) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = lp_patch_sweep_stack(base, source, enc, site, at, target, contrast, raw);
    for (int l = 0; l < L; l++) whole[l] = (lp_patch){site, l, -1, -1, enc};
    if (!rc && per_layer_too) rc = lp_patch_metric_at(base, source, whole, L, at, target, contrast, all);
    free(whole);
    if (rc) {
        free(raw);
        goto done;
    }
    const float *lc = lp_run_logits(clean, at), *lx = lp_run_logits(corrupt, at);
    double m_clean = (double)lc[target] - lc[contrast], m_corrupt = (double)lx[target] - lx[contrast];
    bool undefined = fabs(m_clean - m_corrupt) < LP_RECOVERY_MIN_GAP;
    double rc_clean = undefined ? NAN : m_clean;
    const int *cids = lp_run_ids(stack);
    json_t *toks = json_array(), *ctoks = json_array();
    for (int t = 0; t < T; t++) {
        json_array_append_new(toks, lp_cmd_token(s, cids[t]));
        json_array_append_new(ctoks, lp_cmd_token(s, ids[t]));
    }
    json_t *v = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:b,s:o,s:o,s:i,s:o,s:o}", "site", lp_patch_site_name(site),
                          "metric", "logit_diff_recovery", "direction", denoise ? "denoising" : "noising", "rows", "layer",
                          "cols", by_head ? "head" : "position", "values",
                          matrix(raw, L, cols, rc_clean, m_corrupt, true), "raw", matrix(raw, L, cols, 0, 0, false),
                          "clean", lp_json_number(m_clean), "corrupt", lp_json_number(m_corrupt), "undefined", undefined,
                          "target", token_obj(s, target),
                          "contrast", token_obj(s, contrast), "pos", at, "tokens", toks, "corrupt_tokens", ctoks);
    if (per_layer_too) { /* every position of a layer at once */
        json_t *rec = matrix(all, 1, L, rc_clean, m_corrupt, true), *raw_all = matrix(all, 1, L, 0, 0, false);
        json_object_set(v, "layer_all", json_array_get(rec, 0));
        json_object_set(v, "layer_all_raw", json_array_get(raw_all, 0));
        json_decref(rec);
        json_decref(raw_all);
    }
    json_t *params = json_pack("{s:s,s:i,s:i,s:s}", "site", lp_patch_site_name(site), "target", target, "contrast",
                               contrast, "direction", denoise ? "denoising" : "noising");
    if (seq2seq) { /* the stack swept, its tokens in the table; the corrupted run's two inputs */
        json_object_set_new(v, "stack", json_string(enc ? "enc" : "dec"));
        json_object_set_new(v, "kind", json_string(site >= LP_PATCH_SITE_COUNT ? "cross" : "self"));
        json_object_set_new(params, "stack", json_string(enc ? "enc" : "dec"));
        const lp_run *cs = lp_run_source(corrupt);
        json_t *src_ids = json_array(), *dec_ids = json_array();
        for (int t = 0; t < lp_run_len(cs); t++) json_array_append_new(src_ids, json_integer(lp_run_ids(cs)[t]));
        for (int t = 0; t < lp_run_len(corrupt); t++) json_array_append_new(dec_ids, json_integer(lp_run_ids(corrupt)[t]));
        json_object_set_new(params, "corrupt_source_ids", src_ids);
        json_object_set_new(params, "corrupt_ids", dec_ids);
        if (o[11].value)
            json_object_set_new(params, "corrupt_target", json_stringn_nocheck(o[11].value, strlen(o[11].value)));
    } else {
        json_t *cid = json_array();
        for (int t = 0; t < T; t++) json_array_append_new(cid, json_integer(ids[t]));
        json_object_set_new(params, "corrupt_ids", cid);
    }
    json_t *table = patch_table(v, by_head ? c->n_head : 0);
    free(raw);
    if (o[0].value) json_object_set_new(params, "corrupt", json_stringn_nocheck(o[0].value, strlen(o[0].value)));
    if (o[9].value) json_object_set_new(params, "pair", json_stringn_nocheck(o[9].value, strlen(o[9].value)));
    if (!c->causal) json_object_set_new(params, "pos", json_integer(at));
    rc = lp_cmd_record_analysis(s, "patch", params, v);
    lp_cmd_emit(s, v, table);
done:
    lp_run_free(corrupt);
    free(ids);
    free(types);
    return rc;
}

/* ---- scan ---- */

/* A score's name: a decoder's (lp_scan_score) or an encoder's (lp_encoder_scan_score). */
static const char *scan_name(bool enc, int k) {
    return enc ? lp_encoder_scan_score_name((lp_encoder_scan_score)k) : lp_scan_score_name((lp_scan_score)k);
}

/* The labels of an encoder-decoder's head: the scores of its kind at or above thr, of those
 * that say what a head does (diagonal, monotonic and coverage are high for heads that
 * spread evenly too, so they are shown, not labelled). */
static void seq2seq_labels(const float *x, double thr, char *out, size_t cap) {
    static const lp_seq2seq_scan_score labelled[] = {LP_S2S_PREV_TOKEN, LP_S2S_NEXT_TOKEN, LP_S2S_FIRST_TOKEN,
                                                     LP_S2S_BROAD,      LP_S2S_SOURCE_EOS, LP_S2S_ALIGNED};
    size_t at = 0;
    out[0] = '\0';
    for (size_t k = 0; k < sizeof labelled / sizeof *labelled; k++)
        if (!isnan(x[labelled[k]]) && x[labelled[k]] >= thr)
            at += (size_t)snprintf(out + at, cap - at, "%s%s", at ? " " : "", lp_seq2seq_scan_score_name(labelled[k]));
}

/* A head scan's row for the store: its scores by name, NAN where the scan has none. */
static lp_store_head_scan scan_row(int l, int h, const char *stack, const char *kind, const char *labels) {
    return (lp_store_head_scan){.layer = l, .head = h, .labels = labels, .stack = stack, .kind = kind,
                                .prev_token = NAN, .duplicate_token = NAN, .induction = NAN, .first_token = NAN,
                                .next_token = NAN, .cls_sink = NAN, .sep_sink = NAN, .broad = NAN, .source_eos = NAN,
                                .aligned = NAN, .diagonal = NAN, .monotonic = NAN, .coverage = NAN};
}

/* scan on an encoder-decoder: the copy task (circuits.h), every head of the encoder's
 * self-attention, the decoder's self-attention and its cross-attention, each row saying its
 * stack and kind, and stored so. */
static int scan_seq2seq(lp_session *s, lp_scan_options *so, double thr, bool labelled_only) {
    const lp_config *cd = lp_model_config(s->model), *ce = lp_model_config(lp_model_encoder(s->model));
    int H = cd->n_head, N, rc;
    size_t ne = (size_t)ce->n_layer * H, nd = (size_t)cd->n_layer * H, nr = ne + 2 * nd;
    float *sc = malloc(nr * LP_S2S_COUNT * sizeof *sc);
    lp_store_head_scan *stored = malloc(nr * sizeof *stored);
    char (*labels)[160] = malloc(nr * sizeof *labels);
    if (!sc || !stored || !labels) {
        free(sc), free(stored), free(labels);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    float *dec = sc + ne * LP_S2S_COUNT, *cross = dec + nd * LP_S2S_COUNT;
    if ((rc = lp_scan_heads_seq2seq(s->model, so, sc, dec, cross, &N))) {
        free(sc), free(stored), free(labels);
        return rc;
    }
    json_t *arr = json_array(), *table = lp_table_new();
    const char *front[] = {"stack", "kind", "layer", "head"};
    for (int k = 0; k < 4; k++) lp_table_column(table, front[k], 0, NULL);
    for (int k = 0; k < LP_S2S_COUNT; k++) lp_table_column(table, lp_seq2seq_scan_score_name(k), 0, "%.3f");
    lp_table_column(table, "labels", 0, NULL);
    const char *stacks[3] = {"enc", "dec", "dec"}, *kinds[3] = {"self", "self", "cross"};
    const float *parts[3] = {sc, dec, cross};
    size_t rows[3] = {ne, nd, nd}, at = 0;
    for (int p = 0; p < 3; p++)
        for (size_t i = 0; i < rows[p]; i++) {
            const float *x = parts[p] + i * LP_S2S_COUNT;
            char *lab = labels[at];
            seq2seq_labels(x, thr, lab, sizeof labels[at]);
            int l = (int)(i / H), h = (int)(i % H);
            lp_store_head_scan *sr = &stored[at++];
            *sr = scan_row(l, h, stacks[p], kinds[p], lab);
            sr->prev_token = x[LP_S2S_PREV_TOKEN], sr->next_token = x[LP_S2S_NEXT_TOKEN];
            sr->first_token = x[LP_S2S_FIRST_TOKEN], sr->broad = x[LP_S2S_BROAD];
            sr->source_eos = x[LP_S2S_SOURCE_EOS], sr->aligned = x[LP_S2S_ALIGNED];
            sr->diagonal = x[LP_S2S_DIAGONAL], sr->monotonic = x[LP_S2S_MONOTONIC], sr->coverage = x[LP_S2S_COVERAGE];
            if (labelled_only && !lab[0]) continue;
            json_t *row = json_pack("{s:s,s:s,s:i,s:i}", "stack", stacks[p], "kind", kinds[p], "layer", l, "head", h);
            json_t *trow = json_pack("[s,s,i,i]", stacks[p], kinds[p], l, h);
            for (int k = 0; k < LP_S2S_COUNT; k++) {
                if (!isnan(x[k])) json_object_set_new(row, lp_seq2seq_scan_score_name(k), lp_json_number(x[k]));
                json_array_append_new(trow, isnan(x[k]) ? json_null() : lp_json_number(x[k]));
            }
            json_object_set_new(row, "labels", json_string(lab));
            json_array_append_new(trow, json_string(lab));
            json_array_append_new(arr, row);
            lp_table_row(table, trow);
        }
    int64_t model_id, scan_id = 0;
    if (s->store && !(rc = lp_cmd_model_row(s, &model_id)))
        rc = lp_store_put_head_scan(s->store, model_id, 0, stored, (int)nr, &scan_id);
    free(sc), free(stored), free(labels);
    json_t *v = json_pack("{s:o,s:i,s:i,s:I,s:o,s:s,s:o}", "scan_id", scan_id ? json_integer(scan_id) : json_null(),
                          "seq_len", N, "n_seqs", so->n_seqs, "seed", (json_int_t)so->seed, "threshold",
                          lp_json_number(thr), "sequence", "copy", "heads", arr);
    lp_cmd_emit(s, v, table);
    return rc;
}

/* scan [--len N] [--seqs B] [--seed S] [--threshold X] [--labelled]: every head is stored;
 * --labelled shows only the heads that got a label. Encoders: Clark et al.'s scores on
 * [CLS] + random tokens + [SEP] (circuits.h), stored in their own columns. */
int lp_cmd_scan(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    lp_opt o[] = {{"len", false, NULL},       {"seqs", false, NULL},    {"seed", false, NULL},
                  {"threshold", false, NULL}, {"labelled", true, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("scan", argc, argv, o, 5, pos, 0, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    long len = 0, seqs = 4, seed = 0;
    double thr = LP_SCAN_THRESHOLD;
    lp_scan_options so = {0, 0, 0, t ? lp_tokenizer_bos(t) : -1, {t ? lp_tokenizer_eos(t) : -1, -1}};
    /* --len's range is what this model's context (and vocabulary) allows. */
    int max_len = lp_scan_max_len(s->model, &so);
    if (o[0].value && (rc = lp_cmd_int(o[0].value, "--len", 2, LONG_MAX, &len))) return rc;
    bool enc = !c->causal, seq2seq = lp_model_encoder(s->model) != NULL;
    if (enc && !t) return lp_error(LP_EINVAL, "scan: an encoder's scan needs its tokenizer (for [CLS] and [SEP])");
    if (len > max_len && seq2seq)
        return lp_error(LP_EINVAL, "scan: --len %ld is out of range (2..%d): the source is %ld distinct random tokens "
                        "and </s>, the target their copy, and the model's contexts hold %d", len, max_len, len,
                        max_len + 1);
    if (len > max_len && enc)
        return lp_error(LP_EINVAL, "scan: --len %ld is out of range (2..%d): the sequence is [CLS], %ld distinct random "
                        "tokens and [SEP], and the model's context holds %d", len, max_len, len, c->n_ctx);
    if (len > max_len)
        return lp_error(LP_EINVAL, "scan: --len %ld is out of range (2..%d): the sequence is %s%ld random tokens twice, "
                        "and the model's context holds %d", len, max_len, so.bos >= 0 ? "BOS and " : "", len, c->n_ctx);
    if ((o[1].value && (rc = lp_cmd_int(o[1].value, "--seqs", 1, 1000, &seqs))) ||
        (o[1].value && (rc = lp_cmd_int(o[1].value, "--seqs", 1, 1000, &seqs))) ||
        (o[2].value && (rc = lp_cmd_int(o[2].value, "--seed", 0, LONG_MAX, &seed))) ||
        (o[3].value && (rc = lp_cmd_float(o[3].value, "--threshold", &thr))))
        return rc;
    so.seq_len = (int)len, so.n_seqs = (int)seqs, so.seed = (uint64_t)seed;
    if (seq2seq) return scan_seq2seq(s, &so, thr, o[4].value != NULL);
    int L = c->n_layer, H = c->n_head, N, K = enc ? LP_ESCAN_COUNT : LP_SCAN_COUNT;
    float *sc = malloc((size_t)L * H * K * sizeof *sc);
    lp_store_head_scan *rows = malloc((size_t)L * H * sizeof *rows);
    char (*labels)[80] = malloc((size_t)L * H * sizeof *labels);
    if (!sc || !rows || !labels) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = enc ? lp_scan_heads_encoder(s->model, &so, sc, &N) : lp_scan_heads(s->model, &so, sc, &N);
    if (rc) {
        free(sc), free(rows), free(labels);
        return rc;
    }
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "layer", 0, NULL);
    lp_table_column(table, "head", 0, NULL);
    for (int k = 0; k < K; k++) lp_table_column(table, scan_name(enc, k), 0, "%.3f");
    lp_table_column(table, "labels", 0, NULL);
    for (int i = 0; i < L * H; i++) {
        const float *x = sc + (size_t)i * K;
        size_t at = 0;
        labels[i][0] = '\0';
        for (int k = 0; k < K; k++)
            if (x[k] >= thr)
                at += (size_t)snprintf(labels[i] + at, sizeof labels[i] - at, "%s%s", at ? " " : "", scan_name(enc, k));
        lp_store_head_scan *sr = &rows[i];
        *sr = scan_row(i / H, i % H, NULL, NULL, labels[i]);
        sr->prev_token = x[enc ? LP_ESCAN_PREV_TOKEN : LP_SCAN_PREV_TOKEN];
        if (enc) {
            sr->next_token = x[LP_ESCAN_NEXT_TOKEN], sr->cls_sink = x[LP_ESCAN_CLS_SINK];
            sr->sep_sink = x[LP_ESCAN_SEP_SINK], sr->broad = x[LP_ESCAN_BROAD];
        } else {
            sr->duplicate_token = x[LP_SCAN_DUPLICATE_TOKEN], sr->induction = x[LP_SCAN_INDUCTION];
            sr->first_token = x[LP_SCAN_FIRST_TOKEN];
        }
        json_t *row = json_pack("{s:i,s:i}", "layer", i / H, "head", i % H), *trow = json_pack("[i,i]", i / H, i % H);
        for (int k = 0; k < K; k++) {
            json_object_set_new(row, scan_name(enc, k), lp_json_number(x[k]));
            json_array_append_new(trow, lp_json_number(x[k]));
        }
        json_object_set_new(row, "labels", json_string(labels[i]));
        json_array_append_new(trow, json_string(labels[i]));
        if (o[4].value && !labels[i][0]) {
            json_decref(row);
            json_decref(trow);
            continue;
        }
        json_array_append_new(arr, row);
        lp_table_row(table, trow);
    }
    int64_t model_id, scan_id = 0;
    if (s->store && !(rc = lp_cmd_model_row(s, &model_id)))
        rc = lp_store_put_head_scan(s->store, model_id, 0, rows, L * H, &scan_id);
    free(sc), free(rows), free(labels);
    json_t *v = json_pack("{s:o,s:i,s:i,s:I,s:i,s:o,s:o}", "scan_id", scan_id ? json_integer(scan_id) : json_null(),
                          "seq_len", N, "n_seqs", (int)seqs, "seed", (json_int_t)seed, "bos", so.bos, "threshold",
                          lp_json_number(thr), "heads", arr);
    if (enc) { /* what was scanned: [CLS] (or <s>), N random tokens, [SEP] (or </s>) */
        json_object_set_new(v, "bos", json_integer(lp_tokenizer_special(t, LP_SPECIAL_CLS)));
        json_object_set_new(v, "sequence", json_string("cls_random_sep"));
    }
    lp_cmd_emit(s, v, table);
    return rc;
}
