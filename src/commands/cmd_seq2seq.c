/* `run` for encoder-decoders (T5): a source for the encoder and a target the decoder is
 * teacher-forced on, or, without a target, the decoder's own greedy output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands/cmd.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/output.h"
#include "loupe/run.h"
#include "loupe/tokenizer.h"
#include "kernels/forward.h"

#define GREEDY_DEFAULT 32

/* Text through the tokenizer: a source with its template (T5's appends </s>), a target
 * without (it is the decoder's prefix; write </s> to end it). */
static int encode(const lp_tokenizer *t, const char *opt, const char *text, bool templ, int **ids, int *n) {
    size_t len = strlen(text);
    int *out = malloc((len + 8) * sizeof *out);
    if (!out) return lp_error(LP_ENOMEM, "out of memory");
    int rc = lp_tokenizer_encode(t, text, len, templ && lp_tokenizer_adds_bos(t), out, (int)len + 8, n);
    if (!rc && *n == 0) rc = lp_error(LP_EINVAL, "%s: the text gives no tokens", opt);
    if (rc) {
        free(out);
        return rc;
    }
    *ids = out;
    return LP_OK;
}

/* The decoder's greedy output for src, through the key/value cache: from the start id, the
 * most likely next token until the end-of-sequence id or max tokens. */
static int greedy(const lp_model *m, const int *src, int S, int max, int **out, int *n) {
    const lp_config *c = lp_model_config(m);
    lp_run *enc;
    int rc = lp_run_new(&enc, lp_model_encoder(m), src, S);
    if (rc) return rc;
    int *tgt = malloc((size_t)max * sizeof *tgt), start = c->start_id;
    if (!tgt) rc = lp_error(LP_ENOMEM, "out of memory");
    else rc = lp_generate_seq2seq(m, enc, &start, 1, max, NULL, 1, tgt, n);
    lp_run_free(enc);
    if (rc) {
        free(tgt);
        return rc;
    }
    *out = tgt;
    return LP_OK;
}

static json_t *id_array(const int *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* The decoder reads the start id and then the target, so that position i predicts target
 * token i and the last position what would follow. */
int lp_cmd_set_run_seq2seq(lp_session *s, const int *src, int S, const int *tgt, int T, const char *source,
                           const char *target, bool greedy_out, int64_t stored_id, int *record_rc) {
    const lp_config *c = lp_model_config(s->model);
    int *dec = malloc((size_t)(T + 1) * sizeof *dec);
    if (!dec) return lp_error(LP_ENOMEM, "out of memory");
    dec[0] = c->start_id; /* T5PreTrainedModel._shift_right */
    memcpy(dec + 1, tgt, (size_t)T * sizeof *dec);
    lp_run *r;
    int rc = lp_run_new_seq2seq(&r, s->model, src, S, dec, T + 1);
    free(dec);
    if (rc) return rc;
    lp_run_free(s->run);
    s->run = r;
    s->run_id = stored_id;
    /* The run stays current even if recording fails; the failure is still the command's. */
    *record_rc = stored_id ? LP_OK : lp_cmd_record_seq2seq(s, source, target, greedy_out);
    return LP_OK;
}

int lp_cmd_start_seq2seq(lp_session *s, const int *src, int S, const int *tgt, int T, const char *source,
                         const char *target, bool greedy_out, int64_t stored_id) {
    const lp_config *c = lp_model_config(s->model);
    int rec, rc = lp_cmd_set_run_seq2seq(s, src, S, tgt, T, source, target, greedy_out, stored_id, &rec);
    if (rc) return rc;
    const lp_run *r = s->run;
    int correct = 0;
    for (int i = 0; i < T; i++) {
        const float *lg = lp_run_logits(r, i);
        int best;
        lp_top_k(&best, lg, c->vocab, 1); /* k = 1: one pass, ties to the smaller id, never fails */
        correct += best == tgt[i];
    }
    json_t *v = json_pack("{s:o,s:i,s:i,s:o,s:o,s:o,s:s,s:i}", "run_id",
                          s->run_id ? json_integer(s->run_id) : json_null(), "n_source", S, "n_tokens", T + 1,
                          "source_ids", id_array(src, S), "ids", id_array(lp_run_ids(r), T + 1), "target_ids",
                          id_array(tgt, T), "target", greedy_out ? "greedy" : "given", "target_top1", correct);
    char tgt_col[32], top1[32];
    snprintf(tgt_col, sizeof tgt_col, "%d (%s)", T, greedy_out ? "greedy" : "given");
    snprintf(top1, sizeof top1, "%d/%d", correct, T);
    json_t *table = lp_table_new();
    lp_table_column(table, "run", 0, NULL);
    lp_table_column(table, "source", 0, NULL);
    lp_table_column(table, "target", 0, NULL);
    lp_table_column(table, "top1", 0, NULL);
    lp_table_row(table, json_pack("[o,i,s,s]", s->run_id ? json_integer(s->run_id) : json_null(), S, tgt_col, top1));
    lp_cmd_emit(s, v, table);
    return rec;
}

/* run [--max N] [--] SOURCE [--target TARGET] | run --ids SRC [--target-ids TGT] [--max N] */
int lp_cmd_run_seq2seq(lp_session *s, const char *rest) {
    const lp_config *c = lp_model_config(s->model);
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    char *head = NULL, *buf = NULL, *tgtbuf = NULL;
    int *src = NULL, *tgt = NULL, S = 0, T = 0, rc;
    const char *target_at = lp_cmd_word_after_text(rest, "--target");
    if (target_at) {
        if (!(head = strndup(rest, (size_t)(target_at - rest)))) return lp_error(LP_ENOMEM, "out of memory");
        if ((rc = lp_cmd_text("run", target_at + 8, NULL, 0, &tgtbuf))) goto done;
    }
    lp_opt o[] = {{"ids", false, NULL}, {"target-ids", false, NULL}, {"target", false, NULL}, {"max", false, NULL},
                  {"text", false, NULL}};
    if ((rc = lp_cmd_text("run", head ? head : rest, o, 5, &buf))) goto done;
    const char *text = o[4].value ? o[4].value : buf[0] ? buf : NULL;
    const char *target = tgtbuf ? tgtbuf : o[2].value;
    long max = GREEDY_DEFAULT;
    if (o[4].value && buf[0]) rc = lp_error(LP_EINVAL, "run: give the source once: after the options or with --text");
    else if (tgtbuf && o[2].value) rc = lp_error(LP_EINVAL, "run: give --target once");
    else if (o[0].value && text) rc = lp_error(LP_EINVAL, "run: give either --ids or the source text, not both");
    else if (o[1].value && target) rc = lp_error(LP_EINVAL, "run: give either --target-ids or --target, not both");
    else if (target && !target[0]) rc = lp_error(LP_EINVAL, "run: --target needs the target text");
    else if (o[3].value && (o[1].value || target))
        rc = lp_error(LP_EINVAL, "run: --max limits greedy decoding; with a target there is none");
    else if (o[3].value) rc = lp_cmd_int(o[3].value, "--max", 1, c->n_ctx, &max);
    if (rc) goto done;
    if (o[0].value) rc = lp_cmd_parse_ids("--ids", o[0].value, c->vocab, &src, &S);
    else if (!text) rc = lp_error(LP_EINVAL, "run: give the source text, or --ids 1,2,3 (and a --target, or none "
                                  "to decode greedily)");
    else if (!t) rc = lp_error(LP_EINVAL, "run: this model has no tokenizer; use run --ids 1,2,3 --target-ids 4,5");
    else rc = encode(t, "run", text, true, &src, &S);
    if (rc) goto done;
    if (o[1].value) rc = lp_cmd_parse_ids("--target-ids", o[1].value, c->vocab, &tgt, &T);
    else if (target && !t) rc = lp_error(LP_EINVAL, "run: this model has no tokenizer; use --target-ids 4,5");
    else if (target) rc = encode(t, "--target", target, false, &tgt, &T);
    else rc = greedy(s->model, src, S, (int)max, &tgt, &T);
    if (!rc && T == 0) rc = lp_error(LP_EINVAL, "run: the decoder produced nothing");
    if (!rc && T + 1 > c->n_ctx)
        rc = lp_error(LP_ERANGE, "run: a target of %d tokens exceeds the decoder's context of %d (with its start)", T,
                      c->n_ctx);
    if (rc) goto done;
    rc = lp_cmd_start_seq2seq(s, src, S, tgt, T, text, target, !o[1].value && !target, 0);
done:
    free(head);
    free(buf);
    free(tgtbuf);
    free(src);
    free(tgt);
    return rc;
}

/* relbias L H on the current run: how head H of layer L scores each key it may see, split
 * into what the tokens say (content = q.k, unscaled as T5 scores) and what the offset says
 * (the bias), with their sum (the score) and the softmax of the row (the pattern). */
static int relbias_scores(lp_session *s, const lp_model *m, const char *layer, const char *head) {
    int rc = lp_cmd_need_run(s);
    if (rc) return rc;
    const lp_run *r = m == s->model ? s->run : lp_run_source(s->run);
    const lp_config *c = lp_model_config(m);
    const float *table = lp_model_rel_bias(m);
    long L, H;
    if ((rc = lp_cmd_int(layer, "layer", 0, c->n_layer - 1, &L)) || (rc = lp_cmd_int(head, "head", 0, c->n_head - 1, &H)))
        return rc;
    lp_view q, k, p;
    if ((rc = lp_run_view(r, LP_ACT_Q, (int)L, (int)H, &q)) || (rc = lp_run_view(r, LP_ACT_K, (int)L, (int)H, &k)) ||
        (rc = lp_run_view(r, LP_ACT_PATTERN, (int)L, (int)H, &p)))
        return rc;
    int T = lp_run_len(r);
    const int *ids = lp_run_ids(r);
    double scale = c->unscaled_attn ? 1.0 : 1.0 / sqrt((double)c->d_head);
    json_t *content = json_array(), *bias = json_array(), *scores = json_array(), *pattern = json_array();
    json_t *tbl = lp_table_new();
    const char *cols[] = {"query", "q_token", "key", "k_token", "offset", "content", "bias", "score", "weight"};
    for (int j = 0; j < 9; j++) lp_table_column(tbl, cols[j], j == 1 || j == 3, j < 5 ? NULL : "%.3f");
    for (int i = 0; i < T; i++) {
        json_t *rc_ = json_array(), *rb = json_array(), *rs = json_array(), *rp = json_array();
        for (int j = 0; j < T; j++) {
            if (c->causal && j > i) { /* masked: the decoder never sees later keys */
                json_array_append_new(rc_, json_null()), json_array_append_new(rb, json_null());
                json_array_append_new(rs, json_null()), json_array_append_new(rp, lp_json_number(0));
                continue;
            }
            double dot = 0;
            for (int e = 0; e < c->d_head; e++)
                dot += (double)q.data[(size_t)i * q.stride[0] + e] * k.data[(size_t)j * k.stride[0] + e];
            dot *= scale;
            double b = table[(size_t)lp_rel_bucket(j - i, !c->causal, c->rel_buckets, c->rel_max_distance) * c->n_head + H];
            double w = p.data[(size_t)i * p.stride[0] + j];
            json_array_append_new(rc_, lp_json_number(dot)), json_array_append_new(rb, lp_json_number(b));
            json_array_append_new(rs, lp_json_number(dot + b)), json_array_append_new(rp, lp_json_number(w));
            lp_table_row(tbl, json_pack("[i,o,i,o,i,o,o,o,o]", i, lp_cmd_token(s, ids[i]), j, lp_cmd_token(s, ids[j]),
                                        j - i, lp_json_number(dot), lp_json_number(b), lp_json_number(dot + b),
                                        lp_json_number(w)));
        }
        json_array_append_new(content, rc_), json_array_append_new(bias, rb);
        json_array_append_new(scores, rs), json_array_append_new(pattern, rp);
    }
    json_t *toks = json_array();
    for (int i = 0; i < T; i++) json_array_append_new(toks, lp_cmd_token(s, ids[i]));
    json_t *v = json_pack("{s:i,s:i,s:o,s:o,s:o,s:o,s:o}", "layer", (int)L, "head", (int)H, "tokens", toks, "content",
                          content, "bias", bias, "scores", scores, "pattern", pattern);
    if (lp_model_encoder(s->model)) json_object_set_new(v, "stack", json_string(m == s->model ? "dec" : "enc"));
    lp_cmd_emit(s, v, tbl);
    return LP_OK;
}

/* relbias [L H] [--stack enc|dec] [--range R]: T5's relative position bias per head, by
 * offset (key - query): what the stack adds to every score before the softmax, the same in
 * every layer (layer 0 holds the table); with L H, its part in each score of the run. */
int lp_cmd_relbias(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    lp_opt o[] = {{"stack", false, NULL}, {"range", false, NULL}};
    char *pos[2];
    int np;
    if ((rc = lp_cmd_opts("relbias", argc, argv, o, 2, pos, 2, &np))) return rc;
    if (np == 1) return lp_error(LP_EINVAL, "relbias: give a layer and a head (e.g. 'relbias 0 1'), or neither");
    const lp_model *m = s->model, *enc = lp_model_encoder(m);
    if (o[0].value && !enc)
        return lp_error(LP_EINVAL, "relbias: --stack is for encoder-decoder models; this one has one stack");
    if (o[0].value && strcmp(o[0].value, "enc") != 0 && strcmp(o[0].value, "dec") != 0)
        return lp_error(LP_EINVAL, "relbias: --stack is enc or dec, not '%s'", o[0].value);
    if (enc && (!o[0].value || o[0].value[0] == 'e')) m = enc;
    const lp_config *c = lp_model_config(m);
    const float *table = lp_model_rel_bias(m);
    if (c->pos != LP_POS_RELATIVE || !table)
        return lp_error(LP_EINVAL, "relbias: %s has no relative position bias (it is T5's)", c->arch);
    if (np == 2) {
        if (o[1].value) return lp_error(LP_EINVAL, "relbias: --range is for the curve (no layer and head)");
        return relbias_scores(s, m, pos[0], pos[1]);
    }
    long R = c->rel_max_distance + 2;
    if (o[1].value && (rc = lp_cmd_int(o[1].value, "--range", 1, 4096, &R))) return rc;
    json_t *offsets = json_array(), *bias = json_array(), *buckets = json_array(), *table_out = lp_table_new();
    lp_table_column(table_out, "offset", 0, NULL);
    lp_table_column(table_out, "bucket", 0, NULL);
    for (int h = 0; h < c->n_head; h++) {
        char name[16];
        snprintf(name, sizeof name, "h%d", h);
        lp_table_column(table_out, name, 0, "%.3f");
        json_array_append_new(bias, json_array());
    }
    for (int rel = -(int)R; rel <= (int)R; rel++) {
        if (c->causal && rel > 0) break; /* a decoder's queries never see later keys */
        int b = lp_rel_bucket(rel, !c->causal, c->rel_buckets, c->rel_max_distance);
        json_array_append_new(offsets, json_integer(rel));
        json_array_append_new(buckets, json_integer(b));
        json_t *row = json_pack("[i,i]", rel, b);
        for (int h = 0; h < c->n_head; h++) {
            double x = table[(size_t)b * c->n_head + h];
            json_array_append_new(json_array_get(bias, (size_t)h), lp_json_number(x));
            json_array_append_new(row, lp_json_number(x));
        }
        lp_table_row(table_out, row);
    }
    json_t *v = json_pack("{s:s,s:b,s:i,s:i,s:o,s:o,s:o}", "stack", m == s->model ? "dec" : "enc", "bidirectional",
                          !c->causal, "buckets", c->rel_buckets, "max_distance", c->rel_max_distance, "offsets",
                          offsets, "bucket", buckets, "bias", bias);
    if (!enc) json_object_del(v, "stack");
    lp_cmd_emit(s, v, table_out);
    return LP_OK;
}

/* One side of patch's corrupted run: text (tokenized as run does: a source with its
 * template, a target without), ids, or else the clean run's own (from keep, skipping `skip`
 * leading ids: the decoder's start). Its length must be the clean one's. */
static int corrupt_side(const lp_session *s, const char *what, const char *opt, const char *text, const char *list,
                        bool source, const int *keep, int n_keep, int **ids, int *n) {
    const lp_tokenizer *t = lp_model_tokenizer(s->model);
    int rc;
    if (text && list) return lp_error(LP_EINVAL, "patch: give %s or %s-ids, not both", opt, opt);
    if (list) {
        char ids_opt[40];
        snprintf(ids_opt, sizeof ids_opt, "%s-ids", opt);
        rc = lp_cmd_parse_ids(ids_opt, list, lp_model_config(s->model)->vocab, ids, n);
    } else if (text) {
        if (!t) return lp_error(LP_EINVAL, "patch: this model has no tokenizer; use %s-ids", opt);
        rc = encode(t, opt, text, source, ids, n);
    } else {
        if (!(*ids = malloc((size_t)n_keep * sizeof **ids))) return lp_error(LP_ENOMEM, "out of memory");
        memcpy(*ids, keep, (size_t)n_keep * sizeof **ids);
        *n = n_keep;
        return LP_OK;
    }
    if (!rc && *n != n_keep) {
        rc = lp_error(LP_EINVAL, "patch: the corrupted %s is %d tokens and the run's %d; patching needs the same length "
                      "(see 'tokens%s')", what, *n, n_keep, source ? " --stack enc" : "");
        free(*ids);
        *ids = NULL;
    }
    return rc;
}

int lp_cmd_corrupt_seq2seq(const lp_session *s, const char *src_text, const char *src_ids, const char *tgt_text,
                           const char *tgt_ids, lp_run **out) {
    *out = NULL;
    if (!src_text && !src_ids && !tgt_text && !tgt_ids)
        return lp_error(LP_EINVAL, "patch: give the corrupted source (--corrupt TEXT or --corrupt-ids 1,2,3), the "
                        "corrupted target (--corrupt-target TEXT or --corrupt-target-ids 4,5), or both");
    const lp_run *clean = s->run, *csrc = lp_run_source(clean);
    int *src = NULL, *tgt = NULL, S, n;
    int rc = corrupt_side(s, "source", "--corrupt", src_text, src_ids, true, lp_run_ids(csrc), lp_run_len(csrc), &src, &S);
    if (!rc)
        rc = corrupt_side(s, "target", "--corrupt-target", tgt_text, tgt_ids, false, lp_run_ids(clean) + 1,
                          lp_run_len(clean) - 1, &tgt, &n);
    int *dec = rc ? NULL : malloc((size_t)(n + 1) * sizeof *dec);
    if (!rc && !dec) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) {
        dec[0] = lp_run_ids(clean)[0]; /* the decoder's start id */
        memcpy(dec + 1, tgt, (size_t)n * sizeof *dec);
        rc = lp_run_new_seq2seq(out, s->model, src, S, dec, n + 1);
    }
    free(src);
    free(tgt);
    free(dec);
    return rc;
}
