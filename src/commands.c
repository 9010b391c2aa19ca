/* The command table and the commands of the engine: load, info, run, tokens, top,
 * logits, attn, generate, mode, help, quit. Each command parses its words, computes, and
 * hands one result (a JSON value, and a table where the value is not one) to the output. */
#include "loupe/commands.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/tokenizer.h"

/* ---- words and options ---- */

int lp_split_words(const char *line, char ***words) {
    size_t len = strlen(line);
    /* Worst case: every other byte starts a word. Pointers first, then the text. */
    size_t max_words = len / 2 + 2;
    char **w = malloc(max_words * sizeof *w + len + max_words + 1);
    if (!w) return lp_error(LP_ENOMEM, "out of memory"), -1;
    char *out = (char *)(w + max_words);
    int n = 0;
    const char *p = line;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        w[n++] = out;
        while (*p && !isspace((unsigned char)*p)) {
            if (*p == '"' || *p == '\'') {
                char q = *p++;
                while (*p && *p != q) {
                    if (q == '"' && *p == '\\' && p[1]) {
                        p++;
                        *out++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p;
                        p++;
                    } else {
                        *out++ = *p++;
                    }
                }
                if (*p != q) {
                    free(w);
                    *words = NULL;
                    return lp_error(LP_EINVAL, "unterminated %c quote", q), -1;
                }
                p++;
            } else {
                *out++ = *p++;
            }
        }
        *out++ = '\0';
    }
    w[n] = NULL;
    *words = w;
    return n;
}

static int parse_int(const char *s, const char *what, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return lp_error(LP_EINVAL, "%s must be an integer, not '%s'", what, s);
    if (v < lo || v > hi) return lp_error(LP_EINVAL, "%s %ld is out of range (%ld..%ld)", what, v, lo, hi);
    *out = v;
    return LP_OK;
}

static int parse_float(const char *s, const char *what, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return lp_error(LP_EINVAL, "%s must be a number, not '%s'", what, s);
    *out = v;
    return LP_OK;
}

/* An option of a command: "--name" with a value unless it is a flag. */
typedef struct {
    const char *name;
    bool flag;
    const char *value; /* set when given; "" for flags */
} opt;

/* Sorts argv[1..argc) into options (spec) and positionals (argv order kept). */
static int parse_opts(const char *cmd, int argc, char **argv, opt *spec, int nspec, char **pos, int max_pos,
                      int *npos) {
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool is_opt = a[0] == '-' && a[1] == '-' && a[2];
        if (is_opt) {
            int k = 0;
            while (k < nspec && strcmp(a + 2, spec[k].name) != 0) k++;
            if (k == nspec) return lp_error(LP_EINVAL, "%s: unknown option %s (see 'help %s')", cmd, a, cmd);
            if (spec[k].flag) {
                spec[k].value = "";
            } else {
                if (i + 1 >= argc) return lp_error(LP_EINVAL, "%s: option %s needs a value", cmd, a);
                spec[k].value = argv[++i];
            }
        } else {
            if (*npos >= max_pos) return lp_error(LP_EINVAL, "%s: unexpected argument '%s' (see 'help %s')", cmd, a, cmd);
            pos[(*npos)++] = argv[i];
        }
    }
    return LP_OK;
}

/* ---- shared pieces ---- */

static int need_model(lp_session *s) {
    if (!s->model) return lp_error(LP_EINVAL, "no model loaded; use 'load PATH' or start loupe with a model path");
    return LP_OK;
}

static int need_run(lp_session *s) {
    int rc = need_model(s);
    if (rc) return rc;
    if (!s->run) return lp_error(LP_EINVAL, "no run yet; use 'run TEXT' (or 'run --ids 1,2,3') first");
    return LP_OK;
}

/* A token as a JSON string of its raw bytes (made valid UTF-8 when printed as JSON). */
static json_t *token_json(const lp_session *s, int id) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    size_t len = 0;
    const char *b = t ? lp_tokenizer_token_bytes(t, id, &len) : NULL;
    if (!b) return json_null();
    return json_stringn_nocheck(b, len);
}

/* --pos P: default the last position; negative counts from the end. */
static int resolve_pos(const lp_session *s, const char *arg, int *pos) {
    int T = lp_run_len(s->run);
    *pos = T - 1;
    if (!arg) return LP_OK;
    long v;
    int rc = parse_int(arg, "--pos", -T, T - 1, &v);
    if (rc) return rc;
    *pos = (int)(v < 0 ? T + v : v);
    return LP_OK;
}

static void emit(lp_session *s, json_t *value, json_t *table) {
    lp_output(s->out, s->mode, value, table);
    json_decref(value);
    json_decref(table);
}

typedef struct {
    int id;
    float logit;
} id_logit;

static int by_logit_desc(const void *a, const void *b) {
    const id_logit *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* The top k of logits (V) as [{"rank","id","token","prob","logit"}]. */
static json_t *top_k_json(const lp_session *s, const float *logits, int V, int k) {
    float mx = logits[0];
    for (int i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double z = 0.0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - mx);
    id_logit *all = malloc((size_t)V * sizeof *all);
    json_t *arr = json_array();
    if (!all) return arr;
    for (int i = 0; i < V; i++) all[i] = (id_logit){i, logits[i]};
    qsort(all, (size_t)V, sizeof *all, by_logit_desc);
    if (k > V) k = V;
    for (int r = 0; r < k; r++) {
        double p = exp((double)all[r].logit - mx) / z;
        json_array_append_new(arr, json_pack("{s:i,s:i,s:o,s:f,s:f}", "rank", r + 1, "id", all[r].id, "token",
                                             token_json(s, all[r].id), "prob", p, "logit", (double)all[r].logit));
    }
    free(all);
    return arr;
}

/* ---- commands ---- */

int lp_session_load(lp_session *s, const char *path) {
    lp_load_options opts = {s->tokenizer_path};
    lp_model *m;
    int rc = lp_model_load(&m, path, &opts);
    if (rc) return rc;
    lp_run_free(s->run);
    s->run = NULL;
    lp_model_free(s->model);
    s->model = m;
    return LP_OK;
}

static int cmd_load(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    opt o[] = {{"tokenizer", false, NULL}};
    char *pos[1];
    int np, rc = parse_opts("load", argc, argv, o, 1, pos, 1, &np);
    if (rc) return rc;
    if (np != 1) return lp_error(LP_EINVAL, "load: give a model path (a Hugging Face directory or a llama2.c .bin)");
    if (o[0].value) {
        free(s->tokenizer_path);
        s->tokenizer_path = strdup(o[0].value);
    }
    if ((rc = lp_session_load(s, pos[0]))) return rc;
    const lp_config *c = lp_model_config(s->model);
    emit(s, json_pack("{s:s,s:s,s:i,s:i,s:i}", "loaded", pos[0], "arch", c->arch, "layers", c->n_layer, "heads",
                      c->n_head, "d_model", c->d_model),
         NULL);
    return LP_OK;
}

static int cmd_info(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argv, (void)rest;
    int rc = need_model(s);
    if (rc) return rc;
    if (argc > 1) return lp_error(LP_EINVAL, "info takes no arguments");
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    static const char *const pos_names[] = {"learned", "rope (rotate-half)", "rope (interleaved)"};
    json_t *v = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:s,s:s,s:s,s:s,s:s,s:b,s:f}", "arch",
                          c->arch, "family", c->family, "layers", c->n_layer, "heads", c->n_head, "kv_heads",
                          c->n_kv_head, "d_model", c->d_model, "d_head", c->d_head, "d_mlp", c->d_mlp, "vocab",
                          c->vocab, "context", c->n_ctx, "params", (json_int_t)lp_model_param_count(s->model),
                          "dtype", lp_model_dtype(s->model), "path", lp_model_path(s->model), "norm",
                          c->norm == LP_NORM_LAYERNORM ? "layernorm" : "rmsnorm", "positions", pos_names[c->pos],
                          "mlp", c->mlp == LP_MLP_SWIGLU ? "swiglu" : "gelu", "tied_unembed", c->tied_unembed,
                          "norm_eps", (double)c->norm_eps);
    if (c->pos != LP_POS_LEARNED) json_object_set_new(v, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(v, "tokenizer", t ? json_string(lp_tokenizer_kind_name(t)) : json_null());
    emit(s, v, NULL);
    return LP_OK;
}

static int parse_ids(const char *list, int vocab, int **ids, int *n) {
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
            return lp_error(LP_EINVAL, "--ids: '%s' is not a comma-separated list of token ids", list);
        }
        if (v < 0 || v >= vocab) {
            free(out);
            return lp_error(LP_EINVAL, "--ids: token id %ld is outside the vocabulary (0..%d)", v, vocab - 1);
        }
        out[k++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (k == 0) {
        free(out);
        return lp_error(LP_EINVAL, "--ids: the list is empty");
    }
    *ids = out;
    *n = k;
    return LP_OK;
}

/* The text of `run TEXT`: the rest of the line, unquoted if it is one quoted word. */
static char *run_text(const char *rest) {
    while (*rest == ' ' || *rest == '\t') rest++;
    size_t n = strlen(rest);
    while (n > 0 && (rest[n - 1] == '\n' || rest[n - 1] == '\r')) n--;
    if (n >= 2 && (rest[0] == '"' || rest[0] == '\'') && rest[n - 1] == rest[0]) {
        char **w;
        char *line = strndup(rest, n);
        int k = line ? lp_split_words(line, &w) : -1;
        free(line);
        if (k == 1) {
            char *t = strdup(w[0]);
            free(w);
            return t;
        }
        if (k >= 0) free(w);
    }
    return strndup(rest, n);
}

static int cmd_run(lp_session *s, int argc, char **argv, const char *rest) {
    int rc = need_model(s);
    if (rc) return rc;
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int *ids = NULL, n = 0;
    char *text = NULL;
    bool option_form = argc > 1 && strncmp(argv[1], "--", 2) == 0 && argv[1][2] != '\0';
    if (option_form) {
        opt o[] = {{"ids", false, NULL}, {"bos", true, NULL}, {"no-bos", true, NULL}, {"text", false, NULL}};
        char *pos[1];
        int np;
        if ((rc = parse_opts("run", argc, argv, o, 4, pos, 1, &np))) return rc;
        if (o[0].value) {
            if (np || o[3].value) return lp_error(LP_EINVAL, "run: give either --ids or text, not both");
            if ((rc = parse_ids(o[0].value, c->vocab, &ids, &n))) return rc;
        } else {
            const char *src = o[3].value ? o[3].value : np ? pos[0] : NULL;
            if (!src) return lp_error(LP_EINVAL, "run: give the text to run, or --ids 1,2,3");
            text = strdup(src);
        }
        if (text && !t) return lp_error(LP_EINVAL, "run: this model has no tokenizer; use run --ids");
        if (text) {
            bool bos = o[1].value ? true : o[2].value ? false : lp_tokenizer_adds_bos(t);
            size_t len = strlen(text);
            ids = malloc((len + 3) * sizeof *ids);
            if (!ids) return free(text), lp_error(LP_ENOMEM, "out of memory");
            if ((rc = lp_tokenizer_encode(t, text, len, bos, ids, (int)len + 3, &n))) goto done;
        }
    } else {
        if (!t) return lp_error(LP_EINVAL, "run: this model has no tokenizer; use run --ids 1,2,3");
        text = run_text(rest);
        if (!text) return lp_error(LP_ENOMEM, "out of memory");
        size_t len = strlen(text);
        ids = malloc((len + 3) * sizeof *ids);
        if (!ids) {
            free(text);
            return lp_error(LP_ENOMEM, "out of memory");
        }
        if ((rc = lp_tokenizer_encode(t, text, len, lp_tokenizer_adds_bos(t), ids, (int)len + 3, &n))) goto done;
    }
    if (n == 0) {
        rc = lp_error(LP_EINVAL, "run: the text gives no tokens; give some text or --ids");
        goto done;
    }
    if (n > c->n_ctx) {
        rc = lp_error(LP_ERANGE, "run: %d tokens exceed the model's context of %d; shorten the text", n, c->n_ctx);
        goto done;
    }
    lp_run *r;
    if ((rc = lp_run_new(&r, s->model, ids, n))) goto done;
    lp_run_free(s->run);
    s->run = r;
    json_t *idarr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(idarr, json_integer(ids[i]));
    json_t *top = top_k_json(s, lp_run_logits(r, n - 1), c->vocab, 1);
    json_t *next = json_incref(json_array_get(top, 0));
    json_decref(top);
    json_object_del(next, "rank");
    json_t *v = json_pack("{s:i,s:o,s:o,s:o}", "n_tokens", n, "ids", idarr, "text",
                          text ? json_stringn_nocheck(text, strlen(text)) : json_null(), "next", next);
    json_t *table = lp_table_new();
    lp_table_column(table, "tokens", 0, NULL);
    lp_table_column(table, "next", 1, NULL);
    lp_table_column(table, "prob", 0, NULL);
    lp_table_row(table, json_pack("[i,O,O]", n, json_object_get(next, "token"), json_object_get(next, "prob")));
    emit(s, v, table);
done:
    free(ids);
    free(text);
    return rc;
}

static int cmd_tokens(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argv, (void)rest;
    int rc = need_run(s);
    if (rc) return rc;
    if (argc > 1) return lp_error(LP_EINVAL, "tokens takes no arguments");
    json_t *arr = json_array();
    const int *ids = lp_run_ids(s->run);
    for (int i = 0; i < lp_run_len(s->run); i++)
        json_array_append_new(arr, json_pack("{s:i,s:i,s:o}", "pos", i, "id", ids[i], "text", token_json(s, ids[i])));
    emit(s, arr, NULL);
    return LP_OK;
}

static int cmd_top(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = need_run(s);
    if (rc) return rc;
    opt o[] = {{"pos", false, NULL}};
    char *pos[1];
    int np, p;
    long k = 10;
    if ((rc = parse_opts("top", argc, argv, o, 1, pos, 1, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    if (np && (rc = parse_int(pos[0], "K", 1, c->vocab, &k))) return rc;
    if ((rc = resolve_pos(s, o[0].value, &p))) return rc;
    emit(s, top_k_json(s, lp_run_logits(s->run, p), c->vocab, (int)k), NULL);
    return LP_OK;
}

static int cmd_logits(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = need_run(s);
    if (rc) return rc;
    opt o[] = {{"pos", false, NULL}};
    char *pos[1];
    int np, p;
    if ((rc = parse_opts("logits", argc, argv, o, 1, pos, 0, &np))) return rc;
    if ((rc = resolve_pos(s, o[0].value, &p))) return rc;
    const lp_config *c = lp_model_config(s->model);
    const float *lg = lp_run_logits(s->run, p);
    json_t *arr = json_array();
    json_t *table = lp_table_new();
    lp_table_column(table, "id", 0, NULL);
    lp_table_column(table, "token", 1, NULL);
    lp_table_column(table, "logit", 0, "%.6g");
    for (int i = 0; i < c->vocab; i++) {
        json_array_append_new(arr, json_real(lg[i]));
        lp_table_row(table, json_pack("[i,o,f]", i, token_json(s, i), (double)lg[i]));
    }
    emit(s, json_pack("{s:i,s:o}", "pos", p, "logits", arr), table);
    return LP_OK;
}

static int cmd_attn(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = need_run(s);
    if (rc) return rc;
    const lp_config *c = lp_model_config(s->model);
    char *pos[2];
    int np;
    if ((rc = parse_opts("attn", argc, argv, NULL, 0, pos, 2, &np))) return rc;
    if (np != 2) return lp_error(LP_EINVAL, "attn: give a layer and a head, e.g. 'attn 0 3'");
    long L, H;
    if ((rc = parse_int(pos[0], "layer", 0, c->n_layer - 1, &L)) || (rc = parse_int(pos[1], "head", 0, c->n_head - 1, &H)))
        return rc;
    lp_view v;
    if ((rc = lp_run_view(s->run, LP_ACT_PATTERN, (int)L, (int)H, &v))) return rc;
    int T = lp_run_len(s->run);
    const int *ids = lp_run_ids(s->run);
    json_t *toks = json_array(), *pattern = json_array(), *table = lp_table_new();
    lp_table_column(table, "pos", 0, NULL);
    lp_table_column(table, "query", 1, NULL);
    for (int j = 0; j < T; j++) {
        json_t *tok = token_json(s, ids[j]);
        json_array_append(toks, tok);
        /* Headers name the key: "position:token", escaped by the renderer like any token. */
        char head[96];
        const char *txt = json_string_value(tok);
        snprintf(head, sizeof head, "%d:%.80s", j, txt ? txt : "");
        lp_table_column(table, head, 1, "%.3f");
        json_decref(tok);
    }
    for (int i = 0; i < T; i++) {
        json_t *row = json_array(), *trow = json_pack("[i,O]", i, json_array_get(toks, i));
        for (int j = 0; j < T; j++) {
            double x = v.data[(size_t)i * v.stride[0] + j];
            json_array_append_new(row, json_real(x));
            json_array_append_new(trow, json_real(x));
        }
        json_array_append_new(pattern, row);
        lp_table_row(table, trow);
    }
    emit(s, json_pack("{s:i,s:i,s:o,s:o}", "layer", (int)L, "head", (int)H, "tokens", toks, "pattern", pattern), table);
    return LP_OK;
}

static int cmd_generate(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = need_run(s);
    if (rc) return rc;
    opt o[] = {{"temp", false, NULL}, {"top-k", false, NULL}, {"top-p", false, NULL}, {"seed", false, NULL},
               {"no-stop", true, NULL}};
    char *pos[1];
    int np;
    if ((rc = parse_opts("generate", argc, argv, o, 5, pos, 1, &np))) return rc;
    const lp_config *c = lp_model_config(s->model);
    long n = 20, k = 0, seed = 0;
    double temp = 0.0, top_p = 1.0;
    if (np && (rc = parse_int(pos[0], "N", 1, c->n_ctx, &n))) return rc;
    if (o[0].value && (rc = parse_float(o[0].value, "--temp", &temp))) return rc;
    if (o[1].value && (rc = parse_int(o[1].value, "--top-k", 0, c->vocab, &k))) return rc;
    if (o[2].value && (rc = parse_float(o[2].value, "--top-p", &top_p))) return rc;
    if (o[3].value && (rc = parse_int(o[3].value, "--seed", 0, LONG_MAX, &seed))) return rc;
    if (temp < 0) return lp_error(LP_EINVAL, "--temp must be >= 0 (0 is greedy)");
    if (top_p <= 0 || top_p > 1) return lp_error(LP_EINVAL, "--top-p must be in (0, 1]");
    lp_sampling smp = {(float)temp, (int)k, (float)top_p, (uint64_t)seed};
    int T = lp_run_len(s->run);
    int *out = malloc((size_t)n * sizeof *out), got = 0;
    if (!out) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = lp_generate(s->model, lp_run_ids(s->run), T, (int)n, &smp, !o[4].value, out, &got))) {
        free(out);
        return rc;
    }
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    json_t *ids = json_array(), *toks = json_array();
    for (int i = 0; i < got; i++) {
        json_array_append_new(ids, json_integer(out[i]));
        json_array_append_new(toks, token_json(s, out[i]));
    }
    json_t *text = json_null();
    if (t) {
        /* Decode the whole sequence and cut off the prompt's text, so that a character
         * split across the boundary and SentencePiece's leading space come out right. */
        int total = T + got;
        int *all = malloc((size_t)total * sizeof *all);
        size_t need = 0, plen = 0;
        if (all) {
            memcpy(all, lp_run_ids(s->run), (size_t)T * sizeof *all);
            memcpy(all + T, out, (size_t)got * sizeof *all);
            /* Asked with no buffer, decode reports the size needed, NUL included. */
            lp_tokenizer_decode(t, all, total, NULL, 0, &need);
            lp_tokenizer_decode(t, all, T, NULL, 0, &plen);
            char *buf = malloc(need);
            if (buf && lp_tokenizer_decode(t, all, total, buf, need, &need) == LP_OK) {
                size_t from = plen - 1 <= need ? plen - 1 : need;
                text = json_stringn_nocheck(buf + from, need - from);
            }
            free(buf);
            free(all);
        }
    }
    json_t *v = json_pack("{s:i,s:o,s:o,s:o}", "prompt_tokens", T, "ids", ids, "tokens", toks, "text", text);
    json_t *table = lp_table_new();
    lp_table_column(table, "generated", 0, NULL);
    lp_table_column(table, "text", 0, NULL);
    lp_table_row(table, json_pack("[i,O]", got, json_object_get(v, "text")));
    emit(s, v, table);
    free(out);
    return LP_OK;
}

static int cmd_mode(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (argc == 1) {
        emit(s, json_pack("{s:s}", "mode", lp_mode_name(s->mode)), NULL);
        return LP_OK;
    }
    if (argc != 2) return lp_error(LP_EINVAL, "mode: give one of table, box, markdown, csv, json, jsonl");
    lp_mode m;
    int rc = lp_mode_from_name(argv[1], &m);
    if (rc) return rc;
    s->mode = m;
    return LP_OK;
}

static int cmd_help(lp_session *s, int argc, char **argv, const char *rest);

static int cmd_quit(lp_session *s, int argc, char **argv, const char *rest) {
    (void)argc, (void)argv, (void)rest;
    s->quit = true;
    return LP_OK;
}

static const lp_command COMMANDS[] = {
    {"load", "PATH [--tokenizer FILE]", "load a model: a Hugging Face directory or a llama2.c .bin",
     "load ../shared/models/stories260K/stories260K.bin", cmd_load},
    {"info", "", "describe the model: architecture, sizes, parameters, dtype, path", "info", cmd_info},
    {"run", "TEXT | --ids 1,2,3 [--bos|--no-bos]",
     "tokenize (or take ids), run the model, capture every activation; becomes the current run",
     "run Once upon a time", cmd_run},
    {"tokens", "", "position, id and text of each token of the current run", "tokens", cmd_tokens},
    {"top", "[K] [--pos P]", "the K (default 10) most likely next tokens at position P (default: last)",
     "top 5 --pos 2", cmd_top},
    {"logits", "[--pos P]", "the full logit vector at position P (default: last)", "logits --pos -1", cmd_logits},
    {"attn", "L H", "the T x T attention pattern of head H in layer L (rows: queries, columns: keys)", "attn 0 1",
     cmd_attn},
    {"generate", "[N] [--temp T] [--top-k K] [--top-p P] [--seed S] [--no-stop]",
     "continue the current run by N tokens (default 20); greedy unless --temp > 0", "generate 20 --temp 0.8 --seed 1",
     cmd_generate},
    {"mode", "[table|box|markdown|csv|json|jsonl]", "show or set the output mode", "mode json", cmd_mode},
    {"help", "[COMMAND]", "list the commands, or show one command's usage and an example", "help attn", cmd_help},
    {"quit", "", "leave loupe", "quit", cmd_quit},
};
#define N_COMMANDS ((int)(sizeof COMMANDS / sizeof *COMMANDS))

const lp_command *lp_command_table(int *n) {
    *n = N_COMMANDS;
    return COMMANDS;
}

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 32 || lb > 32) return 99;
    int d[33][33];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

const lp_command *lp_command_find(const char *name) {
    const lp_command *hit = NULL;
    int hits = 0;
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
        if (strncmp(COMMANDS[i].name, name, strlen(name)) == 0) {
            hit = &COMMANDS[i];
            hits++;
        }
    }
    if (hits == 1) return hit;
    if (hits > 1) {
        char list[256] = "";
        for (int i = 0; i < N_COMMANDS; i++)
            if (strncmp(COMMANDS[i].name, name, strlen(name)) == 0)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", COMMANDS[i].name);
        lp_error(LP_EINVAL, "ambiguous command '%s' (%s)", name, list);
        return NULL;
    }
    int best = -1, best_d = 3;
    for (int i = 0; i < N_COMMANDS; i++) {
        int d = edit_distance(name, COMMANDS[i].name);
        if (d < best_d) best_d = d, best = i;
    }
    if (best >= 0) lp_error(LP_EINVAL, "unknown command '%s' (did you mean '%s'?)", name, COMMANDS[best].name);
    else lp_error(LP_EINVAL, "unknown command '%s' (type 'help' for the list)", name);
    return NULL;
}

static int cmd_help(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (argc > 2) return lp_error(LP_EINVAL, "help: give at most one command name");
    if (argc == 2) {
        const lp_command *c = lp_command_find(argv[1]);
        if (!c) return LP_EINVAL;
        char usage[256];
        snprintf(usage, sizeof usage, "%s%s%s", c->name, c->usage[0] ? " " : "", c->usage);
        emit(s, json_pack("{s:s,s:s,s:s,s:s}", "command", c->name, "usage", usage, "summary", c->summary, "example",
                          c->example),
             NULL);
        return LP_OK;
    }
    json_t *arr = json_array();
    for (int i = 0; i < N_COMMANDS; i++)
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "command", COMMANDS[i].name, "usage", COMMANDS[i].usage,
                                             "summary", COMMANDS[i].summary));
    emit(s, arr, NULL);
    return LP_OK;
}

void lp_session_init(lp_session *s, FILE *out) {
    memset(s, 0, sizeof *s);
    s->out = out;
    s->mode = LP_MODE_TABLE;
}

void lp_session_free(lp_session *s) {
    lp_run_free(s->run);
    lp_run_release_cache();
    lp_model_free(s->model);
    free(s->tokenizer_path);
    memset(s, 0, sizeof *s);
}

int lp_exec(lp_session *s, const char *line) {
    lp_error_clear();
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0' || *p == '\n' || *p == '#') return LP_OK;
    /* The command's name ends at the first blank; what follows, raw, is `rest`. */
    const char *name_end = p;
    while (*name_end && !isspace((unsigned char)*name_end)) name_end++;
    char name[64];
    size_t nl = (size_t)(name_end - p);
    if (nl >= sizeof name) nl = sizeof name - 1;
    memcpy(name, p, nl);
    name[nl] = '\0';
    const lp_command *cmd = lp_command_find(name);
    if (!cmd) return LP_EINVAL;
    char **argv;
    int argc = lp_split_words(p, &argv);
    if (argc < 0) return LP_EINVAL;
    int rc = cmd->fn(s, argc, argv, name_end);
    free(argv);
    return rc;
}
