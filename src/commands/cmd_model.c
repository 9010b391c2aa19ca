/* The commands that work on the model and the current run: load, info, run, tokens, top,
 * logits, attn, generate, heads. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/heads.h"
#include "loupe/lens.h"
#include "loupe/tokenizer.h"

int lp_session_load(lp_session *s, const char *path) {
    lp_load_options opts = {s->tokenizer_path};
    lp_model *m;
    int rc = lp_model_load(&m, path, &opts);
    if (rc) return rc;
    lp_run_free(s->run);
    s->run = NULL;
    s->run_id = 0;
    s->model_id = 0;
    lp_cmd_sae_clear(s); /* their sites were the old model's */
    lp_model_free(s->model);
    s->model = m;
    lp_cmd_prefault(s);
    return LP_OK;
}

int lp_cmd_prefault(lp_session *s) {
    /* The first long run's arena, touched while the user reads or types; and recording's
     * buffers for that run, here (a few hundred KB: well under a millisecond). */
    int ahead = lp_run_prefault(s->model);
    if (ahead && lp_cmd_record_reserve(s, ahead)) lp_error_clear(); /* then the run grows them */
    return ahead;
}

int lp_cmd_load(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    lp_opt o[] = {{"tokenizer", false, NULL}};
    char *pos[1];
    int np, rc = lp_cmd_opts("load", argc, argv, o, 1, pos, 1, &np);
    if (rc) return rc;
    if (np != 1) return lp_error(LP_EINVAL, "load: give a model path (a Hugging Face directory or a llama2.c .bin)");
    if (o[0].value) {
        free(s->tokenizer_path);
        s->tokenizer_path = strdup(o[0].value);
    }
    if ((rc = lp_session_load(s, pos[0]))) return rc;
    const lp_config *c = lp_model_config(s->model);
    lp_cmd_emit(s, json_pack("{s:s,s:s,s:i,s:i,s:i}", "loaded", pos[0], "arch", c->arch, "layers", c->n_layer, "heads",
                      c->n_head, "d_model", c->d_model),
         NULL);
    return LP_OK;
}

int lp_cmd_info(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argv, (void)rest;
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    if (argc > 1) return lp_error(LP_EINVAL, "info takes no arguments");
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    static const char *const pos_names[] = {"learned", "rope (rotate-half)", "rope (interleaved)", "relative buckets"};
    static const char *const MLP_NAMES[] = {"gelu", "swiglu", "gelu (erf)", "relu", "geglu"};
    _Static_assert(sizeof pos_names / sizeof *pos_names == LP_POS_RELATIVE + 1, "a name for every position kind");
    _Static_assert(sizeof MLP_NAMES / sizeof *MLP_NAMES == LP_MLP_GEGLU + 1, "a name for every MLP kind");
    json_t *v = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:s,s:s,s:s,s:s,s:s,s:b,s:o}", "arch",
                          c->arch, "family", c->family, "layers", c->n_layer, "heads", c->n_head, "kv_heads",
                          c->n_kv_head, "d_model", c->d_model, "d_head", c->d_head, "d_mlp", c->d_mlp, "vocab",
                          c->vocab, "context", c->n_ctx, "params", (json_int_t)lp_model_param_count(s->model),
                          "dtype", lp_model_dtype(s->model), "path", lp_model_path(s->model), "norm",
                          c->norm == LP_NORM_LAYERNORM ? "layernorm" : "rmsnorm", "positions", pos_names[c->pos],
                          "mlp", MLP_NAMES[c->mlp], "tied_unembed", c->tied_unembed,
                          "norm_eps", lp_json_number(c->norm_eps));
    if (lp_pos_rotary(c)) {
        json_object_set_new(v, "rope_theta", lp_json_number(c->rope_theta));
        json_object_set_new(v, "rope_dims", json_integer(lp_rope_dims(c))); /* of d_head; GPT-NeoX turns a part */
    }
    char types[96], note[200];
    if (lp_model_dequantised_from(s->model, types, sizeof types)) {
        snprintf(note, sizeof note, "dequantised on load from %s to float32: analyses run in float32 on these weights",
                 types);
        json_object_set_new(v, "format", json_string("gguf"));
        json_object_set_new(v, "weights", json_string(note));
    }
    if (c->pos == LP_POS_RELATIVE) {
        json_object_set_new(v, "relative_buckets", json_integer(c->rel_buckets));
        json_object_set_new(v, "relative_max_distance", json_integer(c->rel_max_distance));
    }
    const lp_model *enc = lp_model_encoder(s->model);
    if (enc) {
        json_object_set_new(v, "encoder_layers", json_integer(lp_model_config(enc)->n_layer));
        json_object_set_new(v, "decoder_start_id", json_integer(c->start_id));
        json_object_set_new(v, "eos_id", json_integer(c->eos_id));
    }
    json_object_set_new(v, "attention", json_string(c->causal ? "causal" : "bidirectional"));
    /* parallel: GPT-NeoX's attention and MLP both read resid_pre (resid_mid is a partial sum) */
    json_object_set_new(v, "blocks", json_string(c->post_norm ? "post-norm" : c->parallel_block ? "parallel"
                                                 : c->sandwich_norm ? "pre- and post-norm" : "pre-norm"));
    if (c->sandwich_norm) { /* Gemma 2 */
        char layers[128] = "none";
        int window = 0;
        for (int l = 0, at = 0; l < c->n_layer; l++) {
            int w = lp_model_layer_window(s->model, l);
            if (!w) continue;
            window = w;
            if (at + 16 > (int)sizeof layers) { /* a long list: its start, then "..." */
                snprintf(layers + at, sizeof layers - at, ",...");
                break;
            }
            at += snprintf(layers + at, sizeof layers - at, "%s%d", at ? "," : "", l);
        }
        json_object_set_new(v, "sliding_window", json_integer(window));
        json_object_set_new(v, "sliding_layers", json_string(layers));
        json_object_set_new(v, "attn_scale", lp_json_number(c->attn_scale));
        json_object_set_new(v, "attn_softcap", c->attn_softcap > 0 ? lp_json_number(c->attn_softcap) : json_null());
        json_object_set_new(v, "final_softcap", c->final_softcap > 0 ? lp_json_number(c->final_softcap) : json_null());
        json_object_set_new(v, "emb_scale", lp_json_number(c->emb_scale));
    }
    json_object_set_new(v, "head", json_string(lp_head_kind_name(c->head)));
    if (!c->causal) {
        json_object_set_new(v, "token_types", json_integer(c->type_vocab));
        json_object_set_new(v, "position_offset", json_integer(c->pos_offset));
    }
    if (c->head == LP_HEAD_CLASSIFIER) {
        json_t *labels = json_array();
        for (int i = 0; i < lp_model_n_labels(s->model); i++)
            json_array_append_new(labels, json_string(lp_model_label(s->model, i)));
        json_object_set_new(v, "labels", labels);
    }
    json_object_set_new(v, "tokenizer", t ? json_string(lp_tokenizer_kind_name(t)) : json_null());
    lp_cmd_emit(s, v, NULL);
    return LP_OK;
}

int lp_cmd_parse_ids(const char *opt, const char *list, int vocab, int **ids, int *n) {
    size_t cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',';
    int *out = malloc(cap * sizeof *out);
    if (!out) return lp_error(LP_ENOMEM, "out of memory");
    int k = 0;
    const char *p = list;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ',')) {
            free(out);
            return lp_error(LP_EINVAL, "%s: '%s' is not a comma-separated list of token ids", opt, list);
        }
        if (v < 0 || v >= vocab) {
            free(out);
            return lp_error(LP_EINVAL, "%s: token id %ld is outside the vocabulary (0..%d)", opt, v, vocab - 1);
        }
        out[k++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (k == 0) {
        free(out);
        return lp_error(LP_EINVAL, "%s: the list is empty", opt);
    }
    *ids = out;
    *n = k;
    return LP_OK;
}

static json_t *or_null(json_t *v) { return v ? v : json_null(); }

/* What a run's table and JSON say the model predicts: the next token (decoders), the top
 * candidate at the first mask (masked LMs; null without a mask), the top label
 * (classifiers), nothing (bare encoders). */
static json_t *run_prediction(lp_session *s, const lp_run *r, const char **column) {
    const lp_config *c = lp_model_config(s->model);
    int n = lp_run_len(r), pos = c->head == LP_HEAD_MLM ? lp_cmd_first_mask(s) : n - 1;
    *column = c->head == LP_HEAD_MLM ? "mask" : c->head == LP_HEAD_CLASSIFIER ? "label" : c->head == LP_HEAD_NONE ? NULL
                                                                                                      : "next";
    if (c->head == LP_HEAD_CLASSIFIER) {
        json_t *all = lp_cmd_labels(s), *best = NULL;
        size_t i;
        json_t *row;
        json_array_foreach(all, i, row)
            if (!best || json_real_value(json_object_get(row, "prob")) > json_real_value(json_object_get(best, "prob")))
                best = row;
        json_incref(best);
        json_decref(all);
        return best ? best : json_null();
    }
    if (c->head == LP_HEAD_NONE || pos < 0) return json_null();
    json_t *top = lp_cmd_top_k(s, lp_run_logits(r, pos), lp_run_out_width(r), 1);
    json_t *next = json_incref(json_array_get(top, 0));
    json_decref(top);
    json_object_del(next, "rank");
    if (c->head == LP_HEAD_MLM) json_object_set_new(next, "pos", json_integer(pos));
    return next;
}

/* The new run of ids replacing the current one, made after the current one is freed: its
 * arena is then the new run's (a fresh arena costs the kernel's first touch of every page,
 * more than a forward at T=1024 here). Input the run would refuse is refused first; if the
 * run fails after (cancelled, out of memory), the old run is made again from its ids (the
 * same numbers: same binary, kernel and threads), so that it stays current. */
static int make_run(lp_session *s, lp_run **r, const int *ids, const int *types, int n) {
    int rc = lp_run_check(s->model, ids, types, n);
    if (rc || !s->run || lp_run_source(s->run)) return rc ? rc : lp_cmd_sae_run_new(s, r, ids, types, n);
    const lp_run *old = s->run;
    int on = lp_run_len(old);
    int *keep = malloc(2 * (size_t)on * sizeof *keep);
    if (!keep) return lp_cmd_sae_run_new(s, r, ids, types, n); /* then as before: both at once */
    memcpy(keep, lp_run_ids(old), (size_t)on * sizeof *keep);
    memcpy(keep + on, lp_run_types(old), (size_t)on * sizeof *keep);
    lp_run_free(s->run);
    s->run = NULL;
    if ((rc = lp_cmd_sae_run_new(s, r, ids, types, n))) {
        char why[512];
        snprintf(why, sizeof why, "%s", lp_errmsg());
        lp_cancel_reset(); /* the cancel was the new run's */
        if (lp_run_new_typed(&s->run, s->model, keep, keep + on, on)) s->run = NULL, s->run_id = 0;
        lp_error(rc, "%s", why);
    }
    free(keep);
    return rc;
}

int lp_cmd_set_run(lp_session *s, const int *ids, const int *types, int n, const char *text, const char *pair,
                   int64_t stored_id, int *record_rc) {
    lp_run *r;
    int rc = make_run(s, &r, ids, types, n);
    if (rc) return rc;
    *record_rc = lp_cmd_adopt_run(s, r, text, pair, stored_id);
    return LP_OK;
}

int lp_cmd_adopt_run(lp_session *s, lp_run *r, const char *text, const char *pair, int64_t stored_id) {
    lp_run_free(s->run); /* NULL when make_run freed it first */
    s->run = r;
    s->run_id = 0;
    /* The run stays current even if recording fails; the failure is still the command's. */
    if (stored_id) s->run_id = stored_id;
    else return lp_cmd_record_run(s, text, pair);
    return LP_OK;
}

int lp_cmd_start_run(lp_session *s, const int *ids, const int *types, int n, const char *text, const char *pair,
                     int64_t stored_id) {
    int rec, rc = lp_cmd_set_run(s, ids, types, n, text, pair, stored_id, &rec);
    if (rc) return rc;
    const lp_run *r = s->run;
    char *shown = NULL; /* a pair is shown as it could be typed again */
    if (text && pair && asprintf(&shown, "%s --pair %s", text, pair) < 0) shown = NULL;
    if (shown) text = shown;
    json_t *idarr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(idarr, json_integer(ids[i]));
    const char *column;
    json_t *next = run_prediction(s, r, &column);
    bool enc = lp_model_is_encoder(s->model);
    json_t *v = json_pack("{s:o,s:i,s:o,s:o,s:o}", "run_id", s->run_id ? json_integer(s->run_id) : json_null(),
                          "n_tokens", n, "ids", idarr, "text", text ? json_stringn_nocheck(text, strlen(text)) : json_null(),
                          enc ? "prediction" : "next", next);
    json_t *edits = lp_cmd_sae_edits_json(s); /* a spliced or steered run says so */
    if (edits) json_object_set_new(v, "edits", edits);
    if (enc) {
        json_t *tarr = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(tarr, json_integer(lp_run_types(r)[i]));
        json_object_set_new(v, "types", tarr);
    }
    json_t *table = lp_table_new();
    lp_table_column(table, "run", 0, NULL);
    lp_table_column(table, "tokens", 0, NULL);
    json_t *row = json_pack("[o,i]", s->run_id ? json_integer(s->run_id) : json_null(), n);
    if (column) { /* a bare encoder predicts nothing */
        if (strcmp(column, "mask") == 0) lp_table_column(table, "pos", 0, NULL);
        lp_table_column(table, column, 1, NULL);
        lp_table_column(table, "prob", 0, NULL);
        if (strcmp(column, "mask") == 0) json_array_append(row, or_null(json_object_get(next, "pos")));
        json_array_append(row, or_null(json_object_get(next, strcmp(column, "label") == 0 ? "label" : "token")));
        json_array_append(row, or_null(json_object_get(next, "prob")));
    }
    lp_table_row(table, row);
    lp_cmd_emit(s, v, table);
    free(shown);
    return rec;
}

const char *lp_cmd_word_after_text(const char *rest, const char *word) {
    bool text_seen = false;
    size_t n = strlen(word);
    for (const char *p = rest;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) return NULL;
        const char *w = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        size_t wl = (size_t)(p - w);
        if (wl == 2 && w[0] == '-' && w[1] == '-') return NULL;
        if (wl == n && strncmp(w, word, n) == 0) return text_seen ? w : NULL;
        if (w[0] != '-' || w[1] != '-') text_seen = true;
    }
}

/* A comma-separated list of exactly n token types (each checked against the model by the run). */
static int parse_types(const char *list, int n, int **out) {
    int *t = malloc((size_t)n * sizeof *t), k = 0;
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    for (const char *p = list; *p && k <= n;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT_MAX || (*end && *end != ',') || k == n) {
            free(t);
            if (k == n && end != p) return lp_error(LP_EINVAL, "--types: more types than the %d ids", n);
            return lp_error(LP_EINVAL, "--types: '%s' is not a comma-separated list of token types (0, 1, ...)", list);
        }
        t[k++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (k != n) {
        free(t);
        return lp_error(LP_EINVAL, "--types: %d types for %d ids; give one per id", k, n);
    }
    *out = t;
    return LP_OK;
}

int lp_cmd_encode_text(const lp_session *s, const char *text, const char *pair, int bos, int **ids, int **types, int *n) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    *ids = *types = NULL;
    *n = 0;
    if (!t) return lp_error(LP_EINVAL, "this model has no tokenizer; give token ids");
    bool add = bos < 0 ? lp_tokenizer_adds_bos(t) : bos > 0;
    size_t len = strlen(text), plen = pair ? strlen(pair) : 0, cap = len + plen + 8;
    if (cap > INT_MAX) return lp_error(LP_ERANGE, "a text of %zu bytes is more than loupe tokenizes at once", len);
    int *i = malloc(cap * sizeof *i), *ty = pair ? malloc(cap * sizeof *ty) : NULL, rc;
    if (!i || (pair && !ty)) rc = lp_error(LP_ENOMEM, "out of memory");
    else if (pair) rc = lp_tokenizer_encode_pair(t, text, len, pair, plen, add, i, ty, (int)cap, n);
    else rc = lp_tokenizer_encode(t, text, len, add, i, (int)len + 3, n);
    if (rc) {
        free(i), free(ty);
        return rc;
    }
    *ids = i, *types = ty;
    return LP_OK;
}

/* run [--bos|--no-bos] [--] TEXT [--pair TEXT2] | run --ids 1,2,3 [--types 0,0,1] [--bos|--no-bos]
 * (the free-text rule of lp_cmd_text, plus "A --pair B" for sentence pairs). --bos/--no-bos
 * add or leave out BOS before the text's tokens (with a template, such as BERT's, the
 * special tokens around it). */
int lp_cmd_run(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argc, (void)argv;
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    if (lp_model_encoder(s->model)) return lp_cmd_run_seq2seq(s, rest);
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int *ids = NULL, *types = NULL, n = 0;
    char *buf = NULL, *head = NULL, *pairbuf = NULL;
    const char *pair_at = lp_cmd_word_after_text(rest, "--pair");
    if (pair_at) {
        if (!(head = strndup(rest, (size_t)(pair_at - rest)))) return lp_error(LP_ENOMEM, "out of memory");
        if ((rc = lp_cmd_text("run", pair_at + 6, NULL, 0, &pairbuf))) {
            free(head);
            return rc;
        }
    }
    lp_opt o[] = {{"ids", false, NULL},   {"bos", true, NULL},  {"no-bos", true, NULL}, {"text", false, NULL},
                  {"types", false, NULL}, {"pair", false, NULL}, {"sae", false, NULL},   {"steer", false, NULL},
                  {"clamp", false, NULL}};
    if ((rc = lp_cmd_text("run", head ? head : rest, o, 9, &buf))) {
        free(head);
        free(pairbuf);
        return rc;
    }
    const char *text = o[3].value ? o[3].value : buf[0] ? buf : NULL, *pair = pairbuf ? pairbuf : o[5].value;
    if (o[3].value && buf[0]) rc = lp_error(LP_EINVAL, "run: give the text once: after the options or with --text");
    else if (pairbuf && o[5].value) rc = lp_error(LP_EINVAL, "run: give --pair once");
    else if (pair && !pair[0]) rc = lp_error(LP_EINVAL, "run: --pair needs the second text");
    else if (o[1].value && o[2].value) rc = lp_error(LP_EINVAL, "run: give --bos or --no-bos, not both");
    else if (o[0].value && text) rc = lp_error(LP_EINVAL, "run: give either --ids or text, not both");
    else if (o[0].value && pair)
        rc = lp_error(LP_EINVAL, "run: --pair goes with text; with --ids, give the whole sequence and its --types");
    else if (o[4].value && !o[0].value)
        rc = lp_error(LP_EINVAL, "run: --types goes with --ids (text takes its types from the tokenizer)");
    else if (o[4].value && (o[1].value || o[2].value))
        rc = lp_error(LP_EINVAL, "run: with --types, give the ids as they are (no --bos/--no-bos)");
    else if (o[0].value) rc = lp_cmd_parse_ids("--ids", o[0].value, c->vocab, &ids, &n);
    else if (!text) rc = lp_error(LP_EINVAL, "run: give the text to run, or --ids 1,2,3");
    else if (!t) rc = lp_error(LP_EINVAL, "run: this model has no tokenizer; use run --ids 1,2,3");
    if (!rc && o[4].value) rc = parse_types(o[4].value, n, &types);
    if (!rc && (o[1].value || o[2].value) && o[0].value) {
        /* --bos/--no-bos on ids: make the first id BOS, or drop it. */
        int bos = t ? lp_tokenizer_bos(t) : -1;
        if (bos < 0) rc = lp_error(LP_EINVAL, "run: this model has no BOS token; give the ids as they are");
        else if (o[1].value && ids[0] != bos) {
            int *more = realloc(ids, (size_t)(n + 1) * sizeof *ids);
            if (!more) rc = lp_error(LP_ENOMEM, "out of memory");
            else {
                ids = more;
                memmove(ids + 1, ids, (size_t)n * sizeof *ids);
                ids[0] = bos, n++;
            }
        } else if (o[2].value && ids[0] == bos) {
            memmove(ids, ids + 1, (size_t)--n * sizeof *ids);
        }
    } else if (!rc && !o[0].value) {
        rc = lp_cmd_encode_text(s, text, pair, o[1].value ? 1 : o[2].value ? 0 : -1, &ids, &types, &n);
    }
    if (!rc && n == 0) rc = lp_error(LP_EINVAL, "run: the text gives no tokens; give some text or --ids");
    if (!rc && n > c->n_ctx)
        rc = lp_error(LP_ERANGE, "run: %d tokens exceed the model's context of %d; shorten the text", n, c->n_ctx);
    s->sae_opts[0] = o[6].value, s->sae_opts[1] = o[7].value, s->sae_opts[2] = o[8].value;
    if (!rc) rc = lp_cmd_start_run(s, ids, types, n, o[0].value ? NULL : text, pair, 0);
    s->sae_opts[0] = s->sae_opts[1] = s->sae_opts[2] = NULL;
    free(ids);
    free(types);
    free(buf);
    free(head);
    free(pairbuf);
    return rc;
}

static int stack_run(const lp_session *s, const char *cmd, const char *stack, bool dec_default, const lp_run **out);

int lp_cmd_tokens(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"stack", false, NULL}};
    char *pos[1];
    int np;
    const lp_run *r;
    if ((rc = lp_cmd_opts("tokens", argc, argv, o, 1, pos, 0, &np)) ||
        (rc = stack_run(s, "tokens", o[0].value, true, &r)))
        return rc;
    json_t *arr = json_array();
    const int *ids = lp_run_ids(r), *types = lp_run_types(r);
    const lp_model *rm = lp_run_model(r);
    const lp_config *c = lp_model_config(rm);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int T = lp_run_len(r);
    bool typed = c->type_vocab > 0; /* BERT's segments: a "type" column */
    /* Encoders: each token's role and which text of a pair it is in, as the browser marks them. */
    unsigned char *seg = lp_model_is_encoder(rm) && t ? calloc((size_t)T + 1, 1) : NULL;
    if (seg) lp_tokenizer_segments(t, ids, c->type_vocab > 1 ? types : NULL, T, seg);
    for (int i = 0; i < T; i++) {
        json_t *row = json_pack("{s:i,s:i,s:o}", "pos", i, "id", ids[i], "text", lp_cmd_token(s, ids[i]));
        if (typed) json_object_set_new(row, "type", json_integer(types[i]));
        if (seg) {
            const char *role = lp_special_name(lp_tokenizer_role(t, ids[i]));
            json_object_set_new(row, "special", role ? json_string(role) : json_null());
            json_object_set_new(row, "segment", json_string(seg[i] ? "B" : "A"));
        }
        json_array_append_new(arr, row);
    }
    free(seg);
    lp_cmd_emit(s, arr, NULL);
    return LP_OK;
}

int lp_cmd_top(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"pos", false, NULL}};
    char *pos[1];
    int np, p;
    long k = 10;
    if ((rc = lp_cmd_opts("top", argc, argv, o, 1, pos, 1, &np)) || (rc = lp_cmd_need_token_head(s, "top"))) return rc;
    const lp_config *c = lp_model_config(s->model);
    if (np && (rc = lp_cmd_int(pos[0], "K", 1, c->vocab, &k))) return rc;
    if ((rc = lp_cmd_out_pos(s, "top", o[0].value, &p))) return rc;
    lp_cmd_emit(s, lp_cmd_top_k(s, lp_run_logits(s->run, p), c->vocab, (int)k), NULL);
    return LP_OK;
}

int lp_cmd_logits(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"pos", false, NULL}};
    char *pos[1];
    int np, p;
    if ((rc = lp_cmd_opts("logits", argc, argv, o, 1, pos, 0, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    bool labels = c->head == LP_HEAD_CLASSIFIER; /* one row: the labels' logits */
    if (c->head == LP_HEAD_NONE) return lp_cmd_need_token_head(s, "logits");
    if (labels && o[0].value && strcmp(o[0].value, "0") != 0)
        return lp_error(LP_EINVAL, "logits: a classifier has one row of label logits, at position 0 (its [CLS])");
    if (labels) p = 0;
    else if ((rc = lp_cmd_out_pos(s, "logits", o[0].value, &p))) return rc;
    const float *lg = lp_run_logits(s->run, p);
    int W = lp_run_out_width(s->run);
    json_t *arr = json_array();
    json_t *table = lp_table_new();
    lp_table_column(table, "id", 0, NULL);
    lp_table_column(table, labels ? "label" : "token", 1, NULL);
    lp_table_column(table, "logit", 0, "%.6g");
    for (int i = 0; i < W; i++) {
        json_array_append_new(arr, lp_json_number(lg[i]));
        json_t *name = labels ? json_string(lp_model_label(s->model, i)) : lp_cmd_token(s, i);
        lp_table_row(table, json_pack("[i,o,o]", i, name, lp_json_number(lg[i])));
    }
    lp_cmd_emit(s, json_pack("{s:i,s:o}", "pos", p, "logits", arr), table);
    return LP_OK;
}

/* --stack enc|dec of an encoder-decoder's run: the encoder's run (the default, as `attn`
 * shows) or the decoder's; other models have one stack, the run itself. */
static int stack_run(const lp_session *s, const char *cmd, const char *stack, bool dec_default, const lp_run **out) {
    const lp_run *src = lp_run_source(s->run);
    if (!stack) {
        *out = src && !dec_default ? src : s->run;
        return LP_OK;
    }
    if (!src) return lp_error(LP_EINVAL, "%s: --stack is for encoder-decoder models; this one has one stack", cmd);
    if (strcmp(stack, "enc") != 0 && strcmp(stack, "dec") != 0)
        return lp_error(LP_EINVAL, "%s: --stack is enc or dec, not '%s'", cmd, stack);
    *out = stack[0] == 'e' ? src : s->run;
    return LP_OK;
}

/* attn L H [--stack enc|dec] [--cross]: a head's pattern, query rows by key columns; for an
 * encoder-decoder the encoder's by default, the decoder's self-attention with --stack dec,
 * its attention over the source with --cross (decoder rows, source columns). */
int lp_cmd_attn(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"stack", false, NULL}, {"cross", true, NULL}};
    char *pos[2];
    int np;
    if ((rc = lp_cmd_opts("attn", argc, argv, o, 2, pos, 2, &np))) return rc;
    if (np != 2) return lp_error(LP_EINVAL, "attn: give a layer and a head, e.g. 'attn 0 3'");
    bool cross = o[1].value != NULL;
    if (cross && !lp_run_source(s->run))
        return lp_error(LP_EINVAL, "attn: --cross is for encoder-decoder models (their decoder attends to the source)");
    if (cross && o[0].value && strcmp(o[0].value, "dec") != 0)
        return lp_error(LP_EINVAL, "attn: cross-attention is the decoder's: --cross goes with --stack dec or alone");
    const lp_run *r, *keys_run;
    if ((rc = stack_run(s, "attn", o[0].value, cross, &r))) return rc;
    keys_run = cross ? lp_run_source(s->run) : r;
    const lp_config *c = lp_model_config(lp_run_model(r));
    long L, H;
    if ((rc = lp_cmd_int(pos[0], "layer", 0, c->n_layer - 1, &L)) || (rc = lp_cmd_int(pos[1], "head", 0, c->n_head - 1, &H)))
        return rc;
    lp_view v;
    if ((rc = lp_run_view(r, cross ? LP_ACT_CROSS_PATTERN : LP_ACT_PATTERN, (int)L, (int)H, &v))) return rc;
    int T = lp_run_len(r), K = lp_run_len(keys_run);
    const int *ids = lp_run_ids(r), *kids = lp_run_ids(keys_run);
    json_t *toks = json_array(), *ktoks = json_array(), *pattern = json_array(), *table = lp_table_new();
    lp_table_column(table, "pos", 0, NULL);
    lp_table_column(table, "query", 1, NULL);
    for (int i = 0; i < T; i++) json_array_append_new(toks, lp_cmd_token(s, ids[i]));
    for (int j = 0; j < K; j++) {
        json_t *tok = lp_cmd_token(s, kids[j]);
        json_array_append_new(ktoks, tok);
        /* Headers name the key: "position:token", escaped by the renderer like any token. */
        char head[96];
        const char *txt = json_string_value(tok);
        snprintf(head, sizeof head, "%d:%.80s", j, txt ? txt : "");
        lp_table_column(table, head, 1, "%.3f");
    }
    for (int i = 0; i < T; i++) {
        json_t *row = json_array(), *trow = json_pack("[i,O]", i, json_array_get(toks, i));
        for (int j = 0; j < K; j++) {
            double x = v.data[(size_t)i * v.stride[0] + j];
            json_array_append_new(row, lp_json_number(x));
            json_array_append_new(trow, lp_json_number(x));
        }
        json_array_append_new(pattern, row);
        lp_table_row(table, trow);
    }
    json_t *out = json_pack("{s:i,s:i,s:o,s:o}", "layer", (int)L, "head", (int)H, "tokens", toks, "pattern", pattern);
    if (lp_run_source(s->run)) {
        json_object_set_new(out, "stack", json_string(r == s->run ? "dec" : "enc"));
        json_object_set_new(out, "kind", json_string(cross ? "cross" : "self"));
        if (cross) json_object_set_new(out, "key_tokens", ktoks);
        else json_decref(ktoks);
    } else {
        json_decref(ktoks);
    }
    lp_cmd_emit(s, out, table);
    return LP_OK;
}

/* The text of out[0..n) after prompt[0..T): the whole sequence decoded, less the prompt's
 * text (so that a character split across the boundary and SentencePiece's leading space
 * come out right), with BOS and EOS written as their vocabulary strings where the decoder
 * leaves them out ("John.<|endoftext|>The old woman"). null when decoding fails. */
static json_t *generated_text(const lp_tokenizer *t, const int *prompt, int T, const int *out, int n) {
    int total = T + n, bos = lp_tokenizer_bos(t), eos = lp_tokenizer_eos(t);
    int *all = malloc((size_t)total * sizeof *all);
    size_t need = 0, cap = 0;
    json_t *text = json_null();
    if (!all) return text;
    memcpy(all, prompt, (size_t)T * sizeof *all);
    memcpy(all + T, out, (size_t)n * sizeof *all);
    /* Asked with no buffer, decode reports the size needed, NUL included. */
    lp_tokenizer_decode(t, all, total, NULL, 0, &need);
    for (int i = 0; i < n; i++) {
        size_t k = 0;
        if (out[i] == bos || out[i] == eos) lp_tokenizer_token_bytes(t, out[i], &k);
        cap += k;
    }
    char *full = malloc(need), *buf = malloc(need + cap + 1);
    if (full && buf && lp_tokenizer_decode(t, all, total, full, need, &need) == LP_OK) {
        /* A prefix decodes to a prefix of the whole: each token's text is the difference. */
        size_t at = 0, from, to;
        lp_tokenizer_decode(t, all, T, NULL, 0, &from);
        from--;
        for (int i = 0; i < n; i++) {
            size_t k = 0;
            lp_tokenizer_decode(t, all, T + i + 1, NULL, 0, &to);
            to--;
            const char *b = out[i] == bos || out[i] == eos ? lp_tokenizer_token_bytes(t, out[i], &k) : NULL;
            if (b) memcpy(buf + at, b, k), at += k;
            if (to > from) memcpy(buf + at, full + from, to - from), at += to - from;
            if (to > from) from = to;
        }
        text = json_stringn_nocheck(buf, at);
    }
    free(full);
    free(buf);
    free(all);
    return text;
}

enum { NOPT_MAX = 12 };

/* generate --attr METHOD: the prompt and what was generated become the current run (recorded
 * as ids), then attr METHOD --from (prompt length) --generated with the options given. An
 * encoder-decoder's run keeps its source; its decoder's ids (the start id, the target) and
 * the generated tokens become the new target, so that the attribution spans both sides. */
static int attr_generated(lp_session *s, const int *out, int got, const char *method, const lp_opt *o, int n_opts) {
    int T = lp_run_len(s->run), rec, rc;
    int *all = malloc((size_t)(T + got) * sizeof *all);
    if (!all) return lp_error(LP_ENOMEM, "out of memory");
    memcpy(all, lp_run_ids(s->run), (size_t)T * sizeof *all);
    memcpy(all + T, out, (size_t)got * sizeof *all);
    const lp_run *src = lp_run_source(s->run);
    if (src) { /* the target without the decoder's start id, which lp_cmd_set_run_seq2seq puts back */
        int S = lp_run_len(src), *sids = malloc((size_t)S * sizeof *sids);
        if (!sids) rc = lp_error(LP_ENOMEM, "out of memory");
        else {
            memcpy(sids, lp_run_ids(src), (size_t)S * sizeof *sids); /* src is freed with the old run */
            rc = lp_cmd_set_run_seq2seq(s, sids, S, all + 1, T - 1 + got, NULL, NULL, true, 0, &rec);
        }
        free(sids);
    } else
        rc = lp_cmd_set_run(s, all, NULL, T + got, NULL, NULL, 0, &rec);
    free(all);
    if (rc) return rc;
    char from[16], name[NOPT_MAX][40];
    char *argv[4 + 2 * NOPT_MAX] = {"attr", (char *)method, "--from", from, "--generated"};
    int argc = 5;
    snprintf(from, sizeof from, "%d", T);
    for (int k = 0; k < n_opts && k < NOPT_MAX; k++)
        if (o[k].value) {
            snprintf(name[k], sizeof name[k], "--%s", o[k].name);
            argv[argc++] = name[k];
            argv[argc++] = (char *)o[k].value;
        }
    rc = lp_cmd_attr(s, argc, argv, NULL);
    return rc ? rc : rec;
}

static int generate(lp_session *s, int argc, char **argv);

/* generate's --sae, --steer and --clamp hold for the whole command: the generation and the
 * run it may make (--attr). */
int lp_cmd_generate(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = generate(s, argc, argv);
    s->sae_opts[0] = s->sae_opts[1] = s->sae_opts[2] = NULL;
    return rc;
}

static int generate(lp_session *s, int argc, char **argv) {
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    /* --attr METHOD and the attr options it passes on (ATTR_FIRST..): attr --from's */
    enum { SAE = 5, ATTR = 8, ATTR_FIRST, NOPT = ATTR_FIRST + 9 };
    lp_opt o[NOPT] = {{"temp", false, NULL},      {"top-k", false, NULL},     {"top-p", false, NULL},
                      {"seed", false, NULL},      {"no-stop", true, NULL},    {"sae", false, NULL},
                      {"steer", false, NULL},     {"clamp", false, NULL},     {"attr", false, NULL},
                      {"vs", false, NULL},        {"vs-id", false, NULL},     {"objective", false, NULL},
                      {"steps", false, NULL},     {"max-steps", false, NULL}, {"baseline", false, NULL},
                      {"baseline-id", false, NULL}, {"window", false, NULL},  {"layer", false, NULL}};
    char *pos[1];
    int np;
    const lp_run *source = lp_run_source(s->run); /* an encoder-decoder's decoder continues over it */
    if ((rc = lp_cmd_opts("generate", argc, argv, o, NOPT, pos, 1, &np)) ||
        (!source && (rc = lp_model_need_decoder(s->model, "generate"))))
        return rc;
    for (int k = ATTR_FIRST; k < NOPT && !o[ATTR].value; k++)
        if (o[k].value) return lp_error(LP_EINVAL, "generate: --%s is an option of --attr METHOD", o[k].name);
    const lp_config *c = lp_model_config(s->model);
    long n = 20, k = 0, seed = 0;
    double temp = 0.0, top_p = 1.0;
    if (np && (rc = lp_cmd_int(pos[0], "N", 1, c->n_ctx, &n))) return rc;
    if (o[0].value && (rc = lp_cmd_float(o[0].value, "--temp", &temp))) return rc;
    if (o[1].value && (rc = lp_cmd_int(o[1].value, "--top-k", 0, c->vocab, &k))) return rc;
    if (o[2].value && (rc = lp_cmd_float(o[2].value, "--top-p", &top_p))) return rc;
    if (o[3].value && (rc = lp_cmd_int(o[3].value, "--seed", 0, LONG_MAX, &seed))) return rc;
    if (temp < 0) return lp_error(LP_EINVAL, "--temp must be >= 0 (0 is greedy)");
    if (top_p <= 0 || top_p > 1) return lp_error(LP_EINVAL, "--top-p must be in (0, 1]");
    lp_sampling smp = {(float)temp, (int)k, (float)top_p, (uint64_t)seed};
    int T = lp_run_len(s->run);
    for (int j = 0; j < 3; j++) s->sae_opts[j] = o[SAE + j].value;
    struct lp_cmd_sae_edits *edits = NULL;
    if ((rc = lp_cmd_sae_edit_new(s, 0, &edits))) return rc;
    if (edits && source) {
        lp_cmd_sae_edit_free(edits);
        return lp_error(LP_EUNSUPPORTED, "generate: dictionaries are not spliced into an encoder-decoder yet");
    }
    lp_edit ed = edits ? lp_cmd_sae_edit(edits) : (lp_edit){0};
    int *out = malloc((size_t)n * sizeof *out), got = 0;
    if (!out) rc = lp_error(LP_ENOMEM, "out of memory");
    else if (source) rc = lp_generate_seq2seq(s->model, source, lp_run_ids(s->run), T, (int)n, &smp, !o[4].value, out, &got);
    else rc = lp_generate_edited(s->model, lp_run_ids(s->run), T, (int)n, &smp, !o[4].value, &ed, out, &got);
    if (!rc && edits) rc = lp_cmd_sae_edit_status(edits);
    lp_cmd_sae_edit_free(edits);
    if (rc) {
        free(out);
        return rc;
    }
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    json_t *ids = json_array(), *toks = json_array();
    for (int i = 0; i < got; i++) {
        json_array_append_new(ids, json_integer(out[i]));
        json_array_append_new(toks, lp_cmd_token(s, out[i]));
    }
    /* Why it stopped: the end-of-text token, the context's end, or N tokens. */
    int eos = source ? c->eos_id : t ? lp_tokenizer_eos(t) : -1;
    const char *stop = !o[4].value && got > 0 && out[got - 1] == eos ? "eos" : got < n ? "context" : "length";
    json_t *text = t ? generated_text(t, lp_run_ids(s->run), T, out, got) : json_null();
    json_t *v = json_pack("{s:i,s:o,s:o,s:o,s:s}", "prompt_tokens", T, "ids", ids, "tokens", toks, "text", text, "stop",
                          stop);
    /* The table says why in words. */
    const char *why = stop[0] == 'e' ? "end-of-text" : stop[0] == 'c' ? "context full" : "N tokens";
    json_t *table = lp_table_new();
    lp_table_column(table, "generated", 0, NULL);
    lp_table_column(table, "stop", 0, NULL);
    lp_table_column(table, "text", 0, NULL);
    lp_table_row(table, json_pack("[i,s,O]", got, why, json_object_get(v, "text")));
    lp_cmd_emit(s, v, table);
    if (o[ATTR].value && got > 0) rc = attr_generated(s, out, got, o[ATTR].value, o + ATTR_FIRST, NOPT - ATTR_FIRST);
    free(out);
    return rc;
}

/* heads [--sort METRIC] [--layer L] [--stack enc|dec] [--kind self|cross]: every head's
 * metrics (heads.h); an encoder-decoder's encoder by default, as attn, its decoder's
 * self-attention with --stack dec, its cross-attention with --kind cross. */
int lp_cmd_heads(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"sort", false, NULL}, {"layer", false, NULL}, {"stack", false, NULL}, {"kind", false, NULL}};
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("heads", argc, argv, o, 4, pos, 0, &np))) return rc;
    const char *kind = o[3].value ? o[3].value : "self";
    if (strcmp(kind, "self") != 0 && strcmp(kind, "cross") != 0)
        return lp_error(LP_EINVAL, "heads: --kind is self or cross, not '%s'", kind);
    bool cross = kind[0] == 'c';
    if (cross && !lp_run_source(s->run))
        return lp_error(LP_EINVAL, "heads: --kind cross is for encoder-decoder models (their decoder attends to the "
                        "source)");
    if (cross && o[2].value && strcmp(o[2].value, "dec") != 0)
        return lp_error(LP_EINVAL, "heads: cross-attention is the decoder's: --kind cross goes with --stack dec or "
                        "alone");
    const lp_run *r;
    if ((rc = stack_run(s, "heads", o[2].value, cross, &r))) return rc;
    const lp_config *c = lp_model_config(lp_run_model(r));
    /* Self-attention: the six metrics, and for a bidirectional stack Clark et al.'s four
     * (next_token, cls_sink, sep_sink, broad) after them; cross-attention: its own six. */
    const int NM = cross ? LP_CROSS_METRIC_COUNT : c->causal ? LP_HEAD_METRIC_COUNT : LP_HEAD_ALL_METRIC_COUNT;
    int sort = NM;
    long only = -1;
    if (o[0].value && cross) {
        lp_cross_metric k;
        if ((rc = lp_cross_metric_from_name(o[0].value, &k))) return rc;
        sort = (int)k;
    } else if (o[0].value) {
        lp_head_metric k;
        if ((rc = lp_head_metric_from_name(o[0].value, &k))) return rc;
        if ((int)k >= NM)
            return lp_error(LP_EINVAL, "heads: --sort %s is an encoder's metric; a decoder has entropy, prev_token, "
                            "first_token, duplicate_token, induction, max_attn", o[0].value);
        sort = (int)k;
    }
    if (o[1].value && (rc = lp_cmd_int(o[1].value, "--layer", 0, c->n_layer - 1, &only))) return rc;
    size_t nh = (size_t)c->n_layer * c->n_head;
    float *m = malloc(nh * (NM + LP_HEAD_ALL_METRIC_COUNT) * sizeof *m), *part = m + nh * NM;
    int *order = malloc(nh * sizeof *order);
    if (!m || !order) {
        free(m);
        free(order);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    if (cross) {
        rc = lp_cross_metrics(m, r);
    } else {
        rc = lp_head_metrics(part, r);
        if (NM > LP_HEAD_METRIC_COUNT) lp_head_metrics_encoder(part + nh * LP_HEAD_METRIC_COUNT, r);
        for (size_t i = 0; i < nh; i++)
            for (int q = 0; q < NM; q++)
                m[i * NM + q] = q < LP_HEAD_METRIC_COUNT ? part[i * LP_HEAD_METRIC_COUNT + q]
                              : part[nh * LP_HEAD_METRIC_COUNT + i * LP_HEAD_ENCODER_METRIC_COUNT + q - LP_HEAD_METRIC_COUNT];
    }
    int n = 0;
    for (size_t i = 0; !rc && i < nh; i++)
        if (only < 0 || (long)(i / c->n_head) == only) order[n++] = (int)i;
    if (sort < NM) {
        /* Highest first, heads without a value last; insertion sort keeps ties in model order. */
        for (int i = 1; i < n; i++) {
            int x = order[i], j = i;
            float vx = m[(size_t)x * NM + sort];
            while (j > 0) {
                float vy = m[(size_t)order[j - 1] * NM + sort];
                if (!(isnan(vy) && !isnan(vx)) && !(vx > vy)) break;
                order[j] = order[j - 1];
                j--;
            }
            order[j] = x;
        }
    }
    json_t *arr = json_array();
    for (int k = 0; k < n; k++) {
        int i = order[k];
        json_t *row = json_pack("{s:i,s:i}", "layer", i / c->n_head, "head", i % c->n_head);
        for (int q = 0; q < NM; q++) {
            float v = m[(size_t)i * NM + q];
            const char *name = cross ? lp_cross_metric_name((lp_cross_metric)q) : lp_head_metric_name((lp_head_metric)q);
            json_object_set_new(row, name, lp_json_number(v));
        }
        json_array_append_new(arr, row);
    }
    free(m);
    free(order);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    lp_cmd_emit(s, arr, NULL);
    return LP_OK;
}

/* A token made safe for the terminal (lp_token_display), "?" without a tokenizer. */
static const char *safe_token(json_t *tok, char *buf, size_t cap) {
    if (!json_is_string(tok)) return "?";
    return lp_token_display(json_string_value(tok), json_string_length(tok), buf, cap);
}

/* lens [--k K] [--pos P] [--target ...]: rows "embed", 0 .. L-1 (the residual stream after
 * each layer); the last row is the model's output. JSON: one object per (row, position),
 * "layer" -1 for embed (with "site" naming the row). Tables: without --pos, layers down and
 * positions across, each cell the top k tokens with their probabilities, or with a target
 * its probability and rank; with --pos, layers down and the top k across, then the target. */
int lp_cmd_lens(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    lp_opt o[] = {{"k", false, NULL}, {"pos", false, NULL}, {"target", false, NULL}, {"target-id", false, NULL}};
    char *pos[1];
    int np, only = -1, target;
    long k = 1;
    if ((rc = lp_cmd_opts("lens", argc, argv, o, 4, pos, 0, &np)) || (rc = lp_cmd_need_token_head(s, "lens")))
        return rc;
    const lp_config *c = lp_model_config(s->model);
    if (o[0].value && (rc = lp_cmd_int(o[0].value, "--k", 1, 50, &k))) return rc;
    if (o[1].value && (rc = lp_cmd_pos(s, o[1].value, &only))) return rc;
    if ((rc = lp_cmd_target(s, o[2].value, o[3].value, &target))) return rc;
    if (only < 0 && target >= 0 && o[0].value)
        return lp_error(LP_EINVAL, "lens: across positions a cell shows either the top --k tokens or the target's "
                        "probability and rank; add --pos P for one table with both");
    int T = lp_run_len(s->run), R = c->n_layer + 1;
    size_t cells = (size_t)R * T;
    int *ids = malloc(cells * k * sizeof *ids), *rank = malloc(cells * sizeof *rank);
    float *probs = malloc(cells * k * sizeof *probs), *tprob = malloc(cells * sizeof *tprob);
    if (!ids || !rank || !probs || !tprob) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = lp_lens(s->run, (int)k, target, ids, probs, tprob, rank);
    if (rc) {
        free(ids), free(rank), free(probs), free(tprob);
        return rc;
    }
    json_t *arr = json_array(), *table = lp_table_new();
    lp_table_column(table, "layer", 0, NULL);
    int from = only >= 0 ? only : 0, to = only >= 0 ? only + 1 : T;
    char head[128];
    const int *run_ids = lp_run_ids(s->run);
    if (only >= 0) {
        for (int i = 0; i < k; i++) {
            snprintf(head, sizeof head, "top%d", i + 1);
            lp_table_column(table, head, 1, NULL);
            lp_table_column(table, "prob", 0, "%.3f");
        }
        if (target >= 0) {
            json_t *tok = lp_cmd_token(s, target);
            char shown[96];
            snprintf(head, sizeof head, "p(%s)", safe_token(tok, shown, sizeof shown));
            json_decref(tok);
            lp_table_column(table, head, LP_COL_SAFE, "%.3g");
            lp_table_column(table, "rank", 0, NULL);
        }
    } else {
        for (int t = 0; t < T; t++) {
            json_t *tok = lp_cmd_token(s, run_ids[t]);
            char shown[96];
            snprintf(head, sizeof head, "%d:%s", t, safe_token(tok, shown, sizeof shown));
            json_decref(tok);
            lp_table_column(table, head, LP_COL_SAFE, NULL);
        }
    }
    for (int row = 0; row < R; row++) {
        json_t *trow = json_array();
        json_array_append_new(trow, row == 0 ? json_string("embed") : json_integer(row - 1));
        for (int t = from; t < to; t++) {
            size_t cell = (size_t)row * T + t;
            json_t *top = json_array();
            for (int i = 0; i < k; i++)
                json_array_append_new(top, json_pack("{s:i,s:o,s:o}", "id", ids[cell * k + i], "token",
                                                     lp_cmd_token(s, ids[cell * k + i]), "prob",
                                                     lp_json_number(probs[cell * k + i])));
            json_t *o2 = json_pack("{s:i,s:s,s:i,s:o}", "layer", row - 1, "site", row == 0 ? "embed" : "resid_post",
                                   "pos", t, "top", top);
            if (target >= 0) {
                json_object_set_new(o2, "target_prob", lp_json_number(tprob[cell]));
                json_object_set_new(o2, "target_rank", json_integer(rank[cell]));
            }
            json_array_append_new(arr, o2);
            if (only >= 0) {
                for (int i = 0; i < k; i++) {
                    json_array_append_new(trow, lp_cmd_token(s, ids[cell * k + i]));
                    json_array_append_new(trow, lp_json_number(probs[cell * k + i]));
                }
                if (target >= 0) {
                    json_array_append_new(trow, lp_json_number(tprob[cell]));
                    json_array_append_new(trow, json_integer(rank[cell]));
                }
                continue;
            }
            /* "·Mary 0.42 ·John 0.13": the top k and their probabilities in one cell, or
             * the target's probability and rank: "0.013 #4" */
            char cellbuf[2048], shown[120];
            size_t at = 0;
            if (target >= 0)
                at += (size_t)snprintf(cellbuf, sizeof cellbuf, "%.2g #%d", (double)tprob[cell], rank[cell]);
            for (int i = 0; target < 0 && i < k && at < sizeof cellbuf - 160; i++) {
                json_t *tok = lp_cmd_token(s, ids[cell * k + i]);
                at += (size_t)snprintf(cellbuf + at, sizeof cellbuf - at, "%s%s %.2f", i ? "  " : "",
                                       safe_token(tok, shown, sizeof shown), (double)probs[cell * k + i]);
                json_decref(tok);
            }
            json_array_append_new(trow, json_stringn_nocheck(cellbuf, at));
        }
        lp_table_row(table, trow);
    }
    free(ids), free(rank), free(probs), free(tprob);
    lp_cmd_emit(s, arr, table);
    return LP_OK;
}
