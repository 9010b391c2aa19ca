/* BERT-style encoders (BERT, RoBERTa, DistilBERT; masked-LM, classifier and bare heads)
 * against the float64 reference of tests/fixtures/encoder_reference.py: every attention
 * pattern, the residual stream after the embeddings and after each layer, the stream between
 * attention and MLP, the pooled vector and the logits, within 1e-4 relative to
 * max(1, |expected|); and the loader's refusals. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "arch/model_impl.h"
#include "helpers.h"
#include "ref_double.h"
#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "loupe/attr.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/grad.h"
#include "loupe/heads.h"
#include "loupe/lens.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/safetensors.h"
#include "loupe/tokenizer.h"

#define TOL 1e-4
#define ENC "tests/fixtures/encoders/"

static const char *const MODELS[] = {"bert_mlm", "bert_cls", "bert_model", "roberta_mlm", "roberta_cls",
                                     "distilbert_mlm", "distilbert_cls"};
#define N_MODELS ((int)(sizeof MODELS / sizeof *MODELS))

/* Worst |got - expected| / max(1, |expected|) over a nested JSON array walked in row-major
 * order against got[*at ...]. */
static double rel_err(json_t *expected, const float *got, size_t *at) {
    if (json_is_array(expected)) {
        double worst = 0;
        size_t i;
        json_t *e;
        json_array_foreach(expected, i, e) {
            double w = rel_err(e, got, at);
            if (w > worst) worst = w;
        }
        return worst;
    }
    double x = json_number_value(expected), d = fabs(x - got[(*at)++]) / fmax(1.0, fabs(x));
    return isnan(d) ? INFINITY : d;
}

static size_t count_numbers(json_t *a) {
    if (!json_is_array(a)) return 1;
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(a, i, e) n += count_numbers(e);
    return n;
}

/* A 2-D view compared with a (rows, cols) JSON array. */
static double view_err(const lp_view *v, json_t *expected) {
    assert_int_equal(v->ndim, 2);
    assert_int_equal(count_numbers(expected), (size_t)v->shape[0] * v->shape[1]);
    float *flat = malloc((size_t)v->shape[0] * v->shape[1] * sizeof *flat);
    for (int i = 0; i < v->shape[0]; i++)
        for (int j = 0; j < v->shape[1]; j++) flat[(size_t)i * v->shape[1] + j] = v->data[i * v->stride[0] + j];
    size_t at = 0;
    double w = rel_err(expected, flat, &at);
    free(flat);
    return w;
}

static int *json_ints(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *out = malloc((size_t)(*n ? *n : 1) * sizeof *out);
    for (int i = 0; i < *n; i++) out[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return out;
}

static json_t *load_expected(const char *name) {
    char path[512];
    snprintf(path, sizeof path, ENC "%s/expected.json", name);
    json_error_t err;
    json_t *e = json_load_file(path, 0, &err);
    if (!e) fail_msg("%s: %s", path, err.text);
    return e;
}

/* Runs one fixture and returns the worst relative error over everything it compares. */
static double check_model(const char *name) {
    char dir[512];
    snprintf(dir, sizeof dir, ENC "%s", name);
    json_t *e = load_expected(name);
    lp_model *m;
    if (lp_model_load(&m, dir, NULL) != LP_OK) fail_msg("%s: %s", name, lp_errmsg());
    const lp_config *c = lp_model_config(m);
    assert_string_equal(c->arch, json_string_value(json_object_get(e, "arch")));
    assert_false(c->causal);
    assert_true(lp_model_is_encoder(m));
    int n, nt;
    int *ids = json_ints(json_object_get(e, "ids"), &n);
    json_t *jt = json_object_get(e, "token_type_ids"); /* null for DistilBERT */
    int *types = json_is_array(jt) ? json_ints(jt, &nt) : NULL;
    if (types) assert_int_equal(n, nt);
    lp_run *r;
    if (lp_run_new_typed(&r, m, ids, types, n) != LP_OK) fail_msg("%s: %s", name, lp_errmsg());
    double worst = 0, w;
    lp_view v;
    /* the residual stream after the embeddings' LayerNorm, then after each layer */
    json_t *resid = json_object_get(e, "resid");
    assert_int_equal(json_array_size(resid), (size_t)c->n_layer + 1);
    for (int l = 0; l <= c->n_layer; l++) {
        assert_int_equal(lp_run_view(r, l < c->n_layer ? LP_ACT_RESID_PRE : LP_ACT_RESID_POST,
                                     l < c->n_layer ? l : l - 1, -1, &v), LP_OK);
        if ((w = view_err(&v, json_array_get(resid, (size_t)l))) > worst) worst = w;
        if (w > TOL) fail_msg("%s: resid[%d] off by %g", name, l, w);
    }
    for (int l = 0; l < c->n_layer; l++) {
        static const struct { lp_act_kind kind; const char *key; } per_layer[] = {
            {LP_ACT_ATTN_OUT, "attn_out"}, {LP_ACT_RESID_MID, "mid"}, {LP_ACT_MLP_OUT, "mlp_out"}};
        for (size_t k = 0; k < sizeof per_layer / sizeof *per_layer; k++) {
            assert_int_equal(lp_run_view(r, per_layer[k].kind, l, -1, &v), LP_OK);
            if ((w = view_err(&v, json_array_get(json_object_get(e, per_layer[k].key), (size_t)l))) > worst) worst = w;
            if (w > TOL) fail_msg("%s: %s[%d] off by %g", name, per_layer[k].key, l, w);
        }
        /* post-norm: what attention and the MLP read is the stream itself */
        lp_view a, b;
        assert_int_equal(lp_run_view(r, LP_ACT_LN1, l, -1, &a), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_RESID_PRE, l, -1, &b), LP_OK);
        assert_memory_equal(a.data, b.data, (size_t)n * c->d_model * sizeof(float));
        for (int h = 0; h < c->n_head; h++) {
            assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, l, h, &v), LP_OK);
            json_t *ep = json_array_get(json_array_get(json_array_get(json_object_get(e, "attn"), (size_t)l), (size_t)h), 0);
            (void)ep;
            json_t *pat = json_array_get(json_array_get(json_object_get(e, "attn"), (size_t)l), (size_t)h);
            if ((w = view_err(&v, pat)) > worst) worst = w;
            if (w > TOL) fail_msg("%s: attention %d.%d off by %g", name, l, h, w);
            for (int i = 0; i < n; i++) { /* full rows: every key, summing to 1 */
                double sum = 0;
                for (int j = 0; j < n; j++) sum += v.data[i * v.stride[0] + j];
                assert_true(fabs(sum - 1.0) < 1e-5);
            }
        }
    }
    /* the head */
    const char *head = json_string_value(json_object_get(e, "head"));
    json_t *logits = json_object_get(e, "logits"), *pooled = json_object_get(e, "pooled");
    if (c->head == LP_HEAD_CLASSIFIER) {
        assert_int_equal(lp_run_out_rows(r), 1);
        assert_int_equal(lp_run_out_width(r), c->n_labels);
        assert_int_equal(json_array_size(logits), (size_t)c->n_labels);
        size_t at = 0;
        if ((w = rel_err(logits, lp_run_logits(r, 0), &at)) > worst) worst = w;
        if (w > TOL) fail_msg("%s: classifier logits off by %g", name, w);
        assert_null(lp_run_logits(r, 1));
        json_t *labels = json_object_get(e, "labels");
        for (int i = 0; labels && i < c->n_labels; i++) {
            json_t *lab = json_is_array(labels) ? json_array_get(labels, (size_t)i) : NULL;
            if (json_is_string(lab)) assert_string_equal(lp_model_label(m, i), json_string_value(lab));
        }
    } else if (c->head == LP_HEAD_MLM) {
        assert_int_equal(lp_run_out_rows(r), n);
        assert_int_equal(lp_run_out_width(r), c->vocab);
        assert_int_equal(lp_run_view(r, LP_ACT_LOGITS, 0, -1, &v), LP_OK);
        if ((w = view_err(&v, logits)) > worst) worst = w;
        if (w > TOL) fail_msg("%s: MLM logits off by %g", name, w);
        json_t *mh = json_object_get(e, "mlm_hidden");
        if (mh) {
            assert_int_equal(lp_run_view(r, LP_ACT_HEAD_HIDDEN, 0, -1, &v), LP_OK);
            if ((w = view_err(&v, mh)) > worst) worst = w;
            if (w > TOL) fail_msg("%s: MLM hidden off by %g", name, w);
        }
    } else {
        assert_int_equal(lp_run_out_width(r), 0);
        assert_null(lp_run_logits(r, 0));
        assert_int_not_equal(lp_run_view(r, LP_ACT_LOGITS, 0, -1, &v), LP_OK);
    }
    if (pooled && !json_is_null(pooled)) {
        assert_int_equal(lp_run_view(r, LP_ACT_HEAD_HIDDEN, 0, -1, &v), LP_OK);
        size_t at = 0;
        if ((w = rel_err(pooled, v.data, &at)) > worst) worst = w;
        if (w > TOL) fail_msg("%s: pooled off by %g", name, w);
    }
    print_message("%-15s %-36s head %-10s max rel err %.3g\n", name, c->arch, head ? head : "?", worst);
    lp_run_free(r);
    free(ids);
    free(types);
    lp_model_free(m);
    json_decref(e);
    return worst;
}

static void encoders_match_float64_reference(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) assert_true(check_model(MODELS[i]) <= TOL);
}

/* Token types change the output of a model that has them, and are refused where they do not
 * exist (RoBERTa has one type, DistilBERT none). */
static void token_types_are_checked(void **state) {
    (void)state;
    lp_model *m;
    lp_run *r;
    int ids[4] = {2, 10, 11, 3}, types[4] = {0, 0, 1, 1};
    assert_int_equal(lp_model_load(&m, ENC "bert_mlm", NULL), LP_OK);
    assert_int_equal(lp_run_new_typed(&r, m, ids, types, 4), LP_OK);
    assert_memory_equal(lp_run_types(r), types, sizeof types);
    float first = lp_run_logits(r, 3)[5];
    lp_run_free(r);
    assert_int_equal(lp_run_new(&r, m, ids, 4), LP_OK);
    assert_true(fabsf(first - lp_run_logits(r, 3)[5]) > 1e-6f);
    lp_run_free(r);
    types[2] = 2;
    assert_int_equal(lp_run_new_typed(&r, m, ids, types, 4), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "token type 2"));
    lp_model_free(m);
    types[2] = 1;
    assert_int_equal(lp_model_load(&m, ENC "distilbert_mlm", NULL), LP_OK);
    assert_int_equal(lp_run_new_typed(&r, m, ids, types, 4), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "no token types"));
    lp_model_free(m);
}

/* RoBERTa's context is max_position_embeddings less padding_idx + 1. */
static void roberta_context_leaves_the_offset(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_load(&m, ENC "roberta_mlm", NULL), LP_OK);
    const lp_config *c = lp_model_config(m);
    assert_int_equal(c->pos_offset, 2);
    assert_int_equal(c->n_ctx, 64);
    int ids[65];
    for (int i = 0; i < 65; i++) ids[i] = 5;
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, ids, 65), LP_ERANGE);
    assert_int_equal(lp_run_new(&r, m, ids, 64), LP_OK);
    lp_run_free(r);
    lp_model_free(m);
}

/* Copies a fixture into a temporary directory, with config.json's text edited. */
static char *copy_fixture(const char *name, const char *from, const char *to) {
    char *dir = make_temp_dir(), cmd[2048];
    snprintf(cmd, sizeof cmd, "cp " ENC "%s/* '%s'/", name, dir);
    assert_int_equal(system(cmd), 0);
    if (from) {
        char path[600];
        snprintf(path, sizeof path, "%s/config.json", dir);
        json_error_t err;
        json_t *cfg = json_load_file(path, 0, &err);
        assert_non_null(cfg);
        char *text = json_dumps(cfg, JSON_SORT_KEYS);
        json_decref(cfg);
        char *at = strstr(text, from);
        if (!at) fail_msg("'%s' not in %s's config", from, name);
        FILE *f = fopen(path, "w");
        fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        fclose(f);
        free(text);
    }
    return dir;
}

static void expect_refusal(const char *name, const char *from, const char *to, const char *says) {
    char *dir = copy_fixture(name, from, to);
    lp_model *m;
    int rc = lp_model_load(&m, dir, NULL);
    if (rc == LP_OK) fail_msg("%s with %s loaded", name, to);
    if (!strstr(lp_errmsg(), says)) fail_msg("%s with %s: '%s' does not say '%s'", name, to, lp_errmsg(), says);
    rm_tree(dir);
}

static void bad_configs_are_refused(void **state) {
    (void)state;
    expect_refusal("bert_mlm", "\"hidden_size\": 32", "\"hidden_size\": 33", "not a multiple");
    expect_refusal("bert_mlm", "\"hidden_size\": 32", "\"hidden_size\": 1e9", "hidden_size");
    expect_refusal("bert_mlm", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 0", "num_hidden_layers");
    expect_refusal("bert_mlm", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", "encoder.layer.2");
    expect_refusal("bert_mlm", "\"type_vocab_size\": 2", "\"type_vocab_size\": -1", "type_vocab_size");
    expect_refusal("bert_mlm", "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"swish\"", "swish");
    expect_refusal("bert_mlm", "\"position_embedding_type\": \"absolute\"", "\"position_embedding_type\": \"relative_key\"",
                   "relative_key");
    expect_refusal("bert_cls", "\"id2label\": {\"0\"", "\"id2label\": {\"7\": \"x\", \"0\"", "id2label key");
    expect_refusal("roberta_mlm", "\"pad_token_id\": 1", "\"pad_token_id\": 70", "max_position_embeddings");
    expect_refusal("distilbert_mlm", "\"n_heads\": 4", "\"n_heads\": 5", "not a multiple");
    expect_refusal("distilbert_cls", "\"activation\": \"relu\"", "\"activation\": \"tanh\"", "tanh");
}

/* A missing tensor is named; an untied decoder must be in the file. */
static void missing_tensors_are_named(void **state) {
    (void)state;
    expect_refusal("bert_mlm", "\"vocab_size\": 110", "\"tie_word_embeddings\": false, \"vocab_size\": 110",
                   "cls.predictions.decoder.weight");
    expect_refusal("distilbert_mlm", "\"vocab_size\": 110", "\"tie_word_embeddings\": false, \"vocab_size\": 110",
                   "vocab_projector.weight");
    expect_refusal("bert_mlm", "\"BertForMaskedLM\"", "\"BertForSequenceClassification\"", "pooler.dense.weight");
    expect_refusal("roberta_mlm", "\"RobertaForMaskedLM\"", "\"RobertaForSequenceClassification\"",
                   "classifier.dense.weight");
}

/* F16 and BF16 checkpoints are converted (and still match: see the first test). */
static void reduced_precision_fixtures_load(void **state) {
    (void)state;
    static const struct { const char *name, *dtype; } cases[] = {{"bert_model", "BF16"}, {"roberta_cls", "F16"},
                                                                 {"bert_mlm", "F32"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[256];
        lp_model *m;
        snprintf(dir, sizeof dir, ENC "%s", cases[i].name);
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        assert_string_equal(lp_model_dtype(m), cases[i].dtype);
        lp_model_free(m);
    }
}

/* Checkpoints converted from TensorFlow name LayerNorms' parameters gamma and beta (Hugging
 * Face renames them on load): the same numbers either way. */
static void tensorflow_layernorm_names_load(void **state) {
    (void)state;
    char *dir = copy_fixture("bert_mlm", NULL, NULL), path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    lp_safetensors *st;
    assert_int_equal(lp_st_open(&st, path), LP_OK);
    int n = lp_st_count(st), renamed = 0;
    lp_st_tensor *ts = calloc((size_t)n, sizeof *ts);
    char (*names)[200] = calloc((size_t)n, sizeof *names);
    for (int i = 0; i < n; i++) {
        ts[i] = *lp_st_at(st, i);
        snprintf(names[i], sizeof names[i], "%s", ts[i].name);
        char *ln = strstr(names[i], "LayerNorm.");
        if (ln && strcmp(ln, "LayerNorm.weight") == 0) strcpy(ln, "LayerNorm.gamma"), renamed++;
        if (ln && strcmp(ln, "LayerNorm.bias") == 0) strcpy(ln, "LayerNorm.beta"), renamed++;
        ts[i].name = names[i];
    }
    char out[620];
    snprintf(out, sizeof out, "%s/renamed.safetensors", dir);
    assert_int_equal(lp_st_write(out, ts, n, NULL, NULL, 0), LP_OK);
    lp_st_free(st);
    free(ts);
    free(names);
    assert_true(renamed >= 2 * (1 + 2 * 2 + 1)); /* embeddings, two per layer, the MLM transform */
    assert_int_equal(rename(out, path), 0);
    lp_model *a, *b;
    lp_run *ra, *rb;
    int ids[5] = {2, 65, 4, 72, 3};
    assert_int_equal(lp_model_load(&a, dir, NULL), LP_OK);
    assert_int_equal(lp_model_load(&b, ENC "bert_mlm", NULL), LP_OK);
    assert_int_equal(lp_run_new(&ra, a, ids, 5), LP_OK);
    assert_int_equal(lp_run_new(&rb, b, ids, 5), LP_OK);
    assert_memory_equal(lp_run_logits(ra, 0), lp_run_logits(rb, 0), 5 * 110 * sizeof(float));
    lp_run_free(ra);
    lp_run_free(rb);
    lp_model_free(a);
    lp_model_free(b);
    rm_tree(dir);
}

/* BertForPreTraining is read as its masked-LM head (the next-sentence head is left out). */
static void pretraining_checkpoints_are_masked_lms(void **state) {
    (void)state;
    char *dir = copy_fixture("bert_mlm", "\"BertForMaskedLM\"", "\"BertForPreTraining\"");
    lp_model *m;
    assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
    assert_int_equal(lp_model_config(m)->head, LP_HEAD_MLM);
    assert_string_equal(lp_model_config(m)->arch, "BertForPreTraining");
    lp_model_free(m);
    rm_tree(dir);
}

/* info's parameter count is every float tensor of the checkpoint (a tied decoder, absent
 * from the file, counted once; the int64 position_ids buffer is no parameter). */
static void parameter_counts_are_the_checkpoints(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) {
        char dir[256], path[300];
        lp_model *m;
        lp_safetensors *st;
        snprintf(dir, sizeof dir, ENC "%s", MODELS[i]);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        assert_int_equal(lp_st_open(&st, path), LP_OK);
        size_t n = 0;
        for (int k = 0; k < lp_st_count(st); k++) {
            const lp_st_tensor *t = lp_st_at(st, k);
            if (t->dtype != LP_DT_F32 && t->dtype != LP_DT_F16 && t->dtype != LP_DT_BF16) continue;
            size_t e = 1;
            for (int j = 0; j < t->ndim; j++) e *= (size_t)t->shape[j];
            n += e;
        }
        if (lp_model_param_count(m) != n) fail_msg("%s: %zu parameters, the file has %zu", MODELS[i], lp_model_param_count(m), n);
        lp_st_free(st);
        lp_model_free(m);
    }
}

/* The post-norm captures: ln1 and ln2 are the stream attention and the MLP read, and the
 * scales are those of the norms after the sums: 1/scale is the std of resid_pre + attn_out
 * (resp. resid_mid + mlp_out); the final "norm" is the identity. */
static void post_norm_captures_are_defined(void **state) {
    (void)state;
    lp_model *m;
    lp_run *r;
    int ids[6] = {2, 65, 4, 72, 81, 3};
    assert_int_equal(lp_model_load(&m, ENC "distilbert_mlm", NULL), LP_OK);
    const lp_config *c = lp_model_config(m);
    assert_int_equal(lp_run_new(&r, m, ids, 6), LP_OK);
    int d = c->d_model;
    for (int l = 0; l < c->n_layer; l++) {
        lp_view pre, attn, mid, mlp, ln2, s1, s2;
        assert_int_equal(lp_run_view(r, LP_ACT_RESID_PRE, l, -1, &pre), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_ATTN_OUT, l, -1, &attn), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_RESID_MID, l, -1, &mid), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_MLP_OUT, l, -1, &mlp), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_LN2, l, -1, &ln2), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_LN1_SCALE, l, -1, &s1), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_LN2_SCALE, l, -1, &s2), LP_OK);
        assert_memory_equal(ln2.data, mid.data, (size_t)6 * d * sizeof(float));
        for (int i = 0; i < 6; i++) {
            double m1 = 0, v1 = 0, m2 = 0, v2 = 0;
            for (int j = 0; j < d; j++) {
                m1 += pre.data[i * d + j] + attn.data[i * d + j];
                m2 += mid.data[i * d + j] + mlp.data[i * d + j];
            }
            m1 /= d, m2 /= d;
            for (int j = 0; j < d; j++) {
                double a = pre.data[i * d + j] + attn.data[i * d + j] - m1, b = mid.data[i * d + j] + mlp.data[i * d + j] - m2;
                v1 += a * a, v2 += b * b;
            }
            assert_true(fabs(sqrt(v1 / d + c->norm_eps) * s1.data[i] - 1) < 1e-5);
            assert_true(fabs(sqrt(v2 / d + c->norm_eps) * s2.data[i] - 1) < 1e-5);
        }
    }
    lp_view fin, last, fs;
    assert_int_equal(lp_run_view(r, LP_ACT_LN_FINAL, 0, -1, &fin), LP_OK);
    assert_int_equal(lp_run_view(r, LP_ACT_RESID_POST, c->n_layer - 1, -1, &last), LP_OK);
    assert_int_equal(lp_run_view(r, LP_ACT_LN_FINAL_SCALE, 0, -1, &fs), LP_OK);
    assert_memory_equal(fin.data, last.data, (size_t)6 * d * sizeof(float));
    for (int i = 0; i < 6; i++) assert_true(fs.data[i] == 1.0f);
    lp_run_free(r);
    lp_model_free(m);
}

/* Head metrics read a bidirectional head's whole row: entropy over all T keys. */
static void head_metrics_read_full_rows(void **state) {
    (void)state;
    lp_model *m;
    lp_run *r;
    int ids[5] = {2, 65, 4, 65, 3};
    assert_int_equal(lp_model_load(&m, ENC "bert_mlm", NULL), LP_OK);
    const lp_config *c = lp_model_config(m);
    assert_int_equal(lp_run_new(&r, m, ids, 5), LP_OK);
    float *mt = malloc((size_t)c->n_layer * c->n_head * LP_HEAD_METRIC_COUNT * sizeof *mt);
    lp_head_metrics(mt, r);
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < c->n_head; h++) {
            lp_view v;
            assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, l, h, &v), LP_OK);
            double ent = 0, mx = 0;
            for (int i = 0; i < 5; i++) {
                double best = 0;
                for (int j = 0; j < 5; j++) {
                    double p = v.data[i * v.stride[0] + j];
                    if (p > 0) ent -= p * log(p);
                    if (p > best) best = p;
                }
                mx += best;
            }
            const float *o = mt + ((size_t)l * c->n_head + h) * LP_HEAD_METRIC_COUNT;
            assert_true(fabs(o[LP_HEAD_ENTROPY] - ent / 5) < 1e-5);
            assert_true(fabs(o[LP_HEAD_MAX_ATTN] - mx / 5) < 1e-6);
        }
    free(mt);
    lp_run_free(r);
    lp_model_free(m);
}

/* The analyses that assume a causal next-token model refuse encoders in the engine too; the
 * logit lens works on masked LMs. */
static void engine_refuses_decoder_analyses(void **state) {
    (void)state;
    lp_model *m;
    lp_run *r;
    int ids[4] = {2, 65, 4, 3}, out[2], got;
    assert_int_equal(lp_model_load(&m, ENC "bert_mlm", NULL), LP_OK);
    assert_int_equal(lp_run_new(&r, m, ids, 4), LP_OK);
    int top[64];
    float probs[64];
    /* a masked LM's lens reads the layers through its head: the last row is the output */
    assert_int_equal(lp_lens(r, 1, -1, top, probs, NULL, NULL), LP_OK);
    float last[110];
    assert_int_equal(lp_lens_logits(r, lp_model_config(m)->n_layer, 2, last), LP_OK);
    for (int j = 0; j < 110; j++) /* one row (sgemv) against the run's T rows (sgemm): not bit-equal */
        assert_true(fabsf(last[j] - lp_run_logits(r, 2)[j]) <= 1e-4f * fmaxf(1.0f, fabsf(last[j])));
    lp_sampling smp = {0};
    assert_int_equal(lp_generate(m, ids, 4, 2, &smp, false, out, &got), LP_EUNSUPPORTED);
    assert_int_equal(lp_model_need_decoder(m, "x"), LP_EUNSUPPORTED);
    lp_run_free(r);
    lp_model_free(m);
    assert_int_equal(lp_model_load(&m, ENC "bert_cls", NULL), LP_OK); /* a classifier has no lens */
    assert_int_equal(lp_run_new(&r, m, ids, 4), LP_OK);
    assert_int_equal(lp_lens(r, 1, -1, top, probs, NULL, NULL), LP_EUNSUPPORTED);
    assert_non_null(strstr(lp_errmsg(), "lens: BertForSequenceClassification has no token predictions"));
    lp_run_free(r);
    lp_model_free(m);
    assert_int_equal(lp_model_load(&m, STORIES, NULL), LP_OK);
    assert_int_equal(lp_model_need_decoder(m, "x"), LP_OK);
    assert_false(lp_model_is_encoder(m));
    lp_model_free(m);
}

/* The input gradient of every objective against the float64 reference's (grad.json: d f /
 * d embed_sum, T x d), and every attribution method (saliency, gxi, ig with its completeness
 * delta, occlusion, rollout, attnxnorm), within 1e-4 of the largest value. */
static void input_gradients_match_the_reference(void **state) {
    (void)state;
    static const char *const with_logits[] = {"bert_mlm", "bert_cls", "roberta_mlm", "roberta_cls", "distilbert_mlm",
                                              "distilbert_cls"};
    static const lp_objective_kind kinds[] = {LP_OBJ_LOGIT, LP_OBJ_LOGPROB, LP_OBJ_LOGIT_DIFF};
    for (size_t i = 0; i < sizeof with_logits / sizeof *with_logits; i++) {
        char path[300], dir[256];
        snprintf(dir, sizeof dir, ENC "%s", with_logits[i]);
        snprintf(path, sizeof path, "%s/grad.json", dir);
        json_error_t err;
        json_t *e = json_load_file(path, 0, &err);
        if (!e) fail_msg("%s: %s", path, err.text);
        lp_model *m;
        lp_run *r;
        int n, nt;
        int *ids = json_ints(json_object_get(e, "ids"), &n);
        json_t *jt = json_object_get(e, "token_type_ids");
        int *types = json_is_array(jt) ? json_ints(jt, &nt) : NULL;
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        assert_int_equal(lp_run_new_typed(&r, m, ids, types, n), LP_OK);
        int d = lp_model_config(m)->d_model;
        double worst = 0;
        for (size_t k = 0; k < 3; k++) {
            lp_objective o = {kinds[k], (int)json_integer_value(json_object_get(e, "pos")),
                              (int)json_integer_value(json_object_get(e, "target")),
                              (int)json_integer_value(json_object_get(e, "contrast"))};
            lp_grad *g;
            if (lp_grad_embed_new(&g, r, &o) != LP_OK) fail_msg("%s: %s", with_logits[i], lp_errmsg());
            json_t *want = json_object_get(json_object_get(e, "grad"), lp_objective_name(kinds[k]));
            double value = json_number_value(json_object_get(json_object_get(e, "value"), lp_objective_name(kinds[k])));
            double top = 0, err_max = 0;
            for (int t = 0; t < n; t++)
                for (int j = 0; j < d; j++) {
                    double x = json_number_value(json_array_get(json_array_get(want, (size_t)t), (size_t)j));
                    top = fmax(top, fabs(x));
                    err_max = fmax(err_max, fabs(x - lp_grad_embed(g)[(size_t)t * d + j]));
                }
            double rel = err_max / fmax(top, 1e-30);
            if (rel > worst) worst = rel;
            if (rel > TOL) fail_msg("%s %s: gradient off by %g of its largest value", with_logits[i],
                                    lp_objective_name(kinds[k]), rel);
            assert_true(fabs(lp_grad_objective(g) - value) <= 1e-4 * fmax(1.0, fabs(value)));
            lp_grad_free(g);
        }
        /* saliency and gxi, every objective, against the reference's scores */
        json_t *a;
        size_t ai;
        json_array_foreach(json_object_get(e, "attr"), ai, a) {
            const char *method = json_string_value(json_object_get(a, "method"));
            lp_attr_spec sp = {.baseline = -1, .layer = -1};
            assert_int_equal(lp_attr_method_from_name(method, &sp.method), LP_OK);
            assert_int_equal(lp_objective_from_name(json_string_value(json_object_get(a, "objective")), &sp.objective.kind),
                             LP_OK);
            sp.objective.pos = (int)json_integer_value(json_object_get(e, "pos"));
            sp.objective.target = (int)json_integer_value(json_object_get(e, "target"));
            sp.objective.contrast = (int)json_integer_value(json_object_get(e, "contrast"));
            sp.layer = (int)json_integer_value(json_object_get(a, "layer"));
            sp.steps = (int)json_integer_value(json_object_get(a, "steps"));
            sp.max_steps = sp.steps; /* the reference integrates by Captum's rule alone */
            sp.baseline = (int)json_integer_value(json_object_get(a, "baseline"));
            sp.window = (int)json_integer_value(json_object_get(a, "window"));
            float *scores = malloc((size_t)n * sizeof *scores);
            double delta;
            assert_int_equal(lp_attr(scores, &delta, r, &sp), LP_OK);
            json_t *jd = json_object_get(a, "delta");
            if (json_is_number(jd)) assert_true(fabs(delta - json_number_value(jd)) < 1e-4);
            json_t *want = json_object_get(a, "scores");
            double top = 0, err_max = 0;
            for (int t = 0; t < n; t++) {
                double x = json_number_value(json_array_get(want, (size_t)t));
                top = fmax(top, fabs(x));
                err_max = fmax(err_max, fabs(x - scores[t]));
            }
            if (err_max / fmax(top, 1e-30) > TOL)
                fail_msg("%s attr %s (%s): off by %g of the largest score", with_logits[i], method,
                         lp_objective_name(sp.objective.kind), err_max / top);
            if (err_max / fmax(top, 1e-30) > worst) worst = err_max / fmax(top, 1e-30);
            free(scores);
        }
        print_message("%-15s gradients and every attribution method: max error %.3g of the largest value\n", with_logits[i], worst);
        /* the full backward and batches are not there for encoders yet */
        lp_objective o = {LP_OBJ_LOGIT, (int)json_integer_value(json_object_get(e, "pos")),
                          (int)json_integer_value(json_object_get(e, "target")), 0};
        lp_grad *g;
        assert_int_equal(lp_grad_new(&g, r, &o), LP_EUNSUPPORTED);
        lp_run_free(r);
        lp_model_free(m);
        free(ids);
        free(types);
        json_decref(e);
    }
}

/* ---- the input gradient against finite differences of an independent float64 forward ---- */

/* |analytic . u - central difference along u| / |analytic|, worst over the directions.
 * Measured (bert/roberta/distilbert, MLM and classifier, every objective, the batch path
 * too), worst 3.0e-6 with OPENBLAS_CORETYPE=Haswell and 3.7e-6 with OpenBLAS's own choice
 * (SkylakeX here): the float32 forward's and backward's rounding. A GELU derivative off in
 * one term gives 5e-2. The difference quotient is in double from a double forward, so
 * its own error (step 1e-4 along a unit direction: truncation ~1e-9, rounding ~1e-12)
 * is far below. */
#define ENC_FD_TOL 1e-4
#define ENC_FD_EPS 1e-4

static double enc_act(lp_head_act a, double x) {
    switch (a) {
    case LP_HEAD_ACT_TANH: return tanh(x);
    case LP_HEAD_ACT_RELU: return x > 0 ? x : 0.0;
    case LP_HEAD_ACT_GELU_ERF: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case LP_HEAD_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    return NAN;
}

/* The objective o of an encoder at summed embeddings e (T, d) (before their LayerNorm):
 * post-norm blocks over full attention, then the head at o->pos, all in double. */
static double enc_objective(const lp_model *m, const double *e, int T, const lp_objective *o) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, H = c->n_head, dh = c->d_head, dm = c->d_mlp, W = m->unembed.out;
    size_t Td = (size_t)T * d;
    double *x = malloc(Td * sizeof *x), *s = malloc(Td * sizeof *s), *q = malloc(Td * sizeof *q);
    double *k = malloc(Td * sizeof *k), *v = malloc(Td * sizeof *v), *z = malloc(Td * sizeof *z);
    double *pre = malloc((size_t)T * dm * sizeof *pre), *p = malloc((size_t)T * sizeof *p);
    double *a = malloc((size_t)d * sizeof *a), *logits = malloc((size_t)W * sizeof *logits);
    dnorm(x, e, m->emb_ln_w, m->emb_ln_b, T, d, LP_NORM_LAYERNORM, c->norm_eps);
    lp_head_act mlp_act = lp_arch_head_act(c->mlp);
    for (int l = 0; l < c->n_layer; l++) {
        const lp_layer *w = &m->layers[l];
        dlinear(q, x, &w->q, T);
        dlinear(k, x, &w->k, T);
        dlinear(v, x, &w->v, T);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) { /* every key: attention is not causal */
                    double dot = 0;
                    for (int t = 0; t < dh; t++) dot += q[(size_t)i * d + h * dh + t] * k[(size_t)j * d + h * dh + t];
                    p[j] = dot / sqrt((double)dh);
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j < T; j++) sum += (p[j] = exp(p[j] - mx));
                for (int t = 0; t < dh; t++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++) acc += p[j] / sum * v[(size_t)j * d + h * dh + t];
                    z[(size_t)i * d + h * dh + t] = acc;
                }
            }
        dlinear(s, z, &w->o, T);
        for (size_t i = 0; i < Td; i++) s[i] += x[i];
        dnorm(x, s, w->ln1_w, w->ln1_b, T, d, LP_NORM_LAYERNORM, c->norm_eps); /* x = mid */
        dlinear(pre, x, &w->up, T);
        for (size_t i = 0; i < (size_t)T * dm; i++) pre[i] = enc_act(mlp_act, pre[i]);
        dlinear(s, pre, &w->down, T);
        for (size_t i = 0; i < Td; i++) s[i] += x[i];
        dnorm(x, s, w->ln2_w, w->ln2_b, T, d, LP_NORM_LAYERNORM, c->norm_eps);
    }
    dlinear(a, x + (size_t)o->pos * d, &m->head.dense, 1);
    for (int j = 0; j < d; j++) a[j] = enc_act(m->head.act, a[j]);
    if (m->head.ln_w) {
        memcpy(s, a, (size_t)d * sizeof *a);
        dnorm(a, s, m->head.ln_w, m->head.ln_b, 1, d, LP_NORM_LAYERNORM, m->head.ln_eps);
    }
    dlinear(logits, a, &m->unembed, 1);
    double f = logits[o->target], mx = -INFINITY, sum = 0;
    if (o->kind == LP_OBJ_LOGIT_DIFF) f -= logits[o->contrast];
    if (o->kind == LP_OBJ_LOGPROB) {
        for (int j = 0; j < W; j++) mx = fmax(mx, logits[j]);
        for (int j = 0; j < W; j++) sum += exp(logits[j] - mx);
        f -= mx + log(sum);
    }
    free(x), free(s), free(q), free(k), free(v), free(z), free(pre), free(p), free(a), free(logits);
    return f;
}

/* The central difference of the objective at e along u (T * d). */
static double enc_fd(const lp_model *m, const double *e, const double *u, int T, const lp_objective *o) {
    size_t n = (size_t)T * m->cfg.d_model;
    double *x = malloc(n * sizeof *x), f[2];
    for (int sgn = 0; sgn < 2; sgn++) {
        for (size_t i = 0; i < n; i++) x[i] = e[i] + (sgn ? -ENC_FD_EPS : ENC_FD_EPS) * u[i];
        f[sgn] = enc_objective(m, x, T, o);
    }
    free(x);
    return (f[0] - f[1]) / (2 * ENC_FD_EPS);
}

/* Directions: the gradient's own, then unit Gaussian ones (xorshift, Box-Muller). */
static void enc_direction(double *u, const float *g, size_t n, int which, uint64_t *rng) {
    double norm = 0;
    for (size_t i = 0; i < n; i++) {
        if (which == 0) {
            u[i] = g[i];
        } else {
            double r[2];
            for (int t = 0; t < 2; t++) {
                *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
                r[t] = ((*rng >> 11) + 0.5) / 9007199254740992.0;
            }
            u[i] = sqrt(-2 * log(r[0])) * cos(2 * M_PI * r[1]);
        }
        norm += u[i] * u[i];
    }
    for (size_t i = 0; i < n; i++) u[i] /= sqrt(norm);
}

/* Coordinates [j0, j1) of g against their central differences: the squared error and the
 * differences' squares, added to *diff and *ref. u (T * d) is zero scratch, left zero. */
static void enc_coords(const lp_model *m, const double *e, const float *g, int T, const lp_objective *o, size_t j0,
                       size_t j1, double *u, double *diff, double *ref) {
    for (size_t i = j0; i < j1; i++) {
        u[i] = 1;
        double want = enc_fd(m, e, u, T, o);
        u[i] = 0;
        *diff += (g[i] - want) * (g[i] - want);
        *ref += want * want;
    }
}

/* The worst |g . u - D_u f| / |g| over the gradient's direction and `dirs` random ones;
 * with `every`, also ||g - g_fd|| / ||g_fd|| coordinate by coordinate. */
static double enc_check(const lp_model *m, const double *e, const float *g, int T, const lp_objective *o, int dirs,
                        bool every, uint64_t *rng) {
    size_t n = (size_t)T * m->cfg.d_model;
    double *u = malloc(n * sizeof *u), gn = 0, worst = 0;
    for (size_t i = 0; i < n; i++) gn += (double)g[i] * g[i];
    gn = sqrt(gn);
    assert_true(gn > 0);
    for (int r = 0; r <= dirs; r++) {
        enc_direction(u, g, n, r, rng);
        double dot = 0;
        for (size_t i = 0; i < n; i++) dot += g[i] * u[i];
        worst = fmax(worst, fabs(dot - enc_fd(m, e, u, T, o)) / gn);
    }
    if (every) {
        double diff = 0, ref = 0;
        memset(u, 0, n * sizeof *u);
        enc_coords(m, e, g, T, o, 0, n, u, &diff, &ref);
        worst = fmax(worst, sqrt(diff / ref));
    }
    free(u);
    return worst;
}

/* Fixture model `name`'s directory (into dir) and its grad.json. */
static json_t *grad_fixture(char *dir, size_t cap, const char *name) {
    char path[300];
    snprintf(dir, cap, ENC "%s", name);
    snprintf(path, sizeof path, "%s/grad.json", dir);
    json_error_t err;
    json_t *e = json_load_file(path, 0, &err);
    if (!e) fail_msg("%s: %s", path, err.text);
    return e;
}

/* lp_grad_batch's inputs: the summed embeddings scaled by alpha[i] (an ig path from zero). */
typedef struct {
    const float *e;
    size_t n;
    const double *alpha;
} scaled_inputs;

static void scaled_input(float *x, int i, void *ctx) {
    const scaled_inputs *s = ctx;
    for (size_t j = 0; j < s->n; j++) x[j] = (float)(s->alpha[i] * s->e[j]);
}

/* The gradient attr uses (with respect to the summed embeddings, so to the word
 * embeddings) of every objective of the six fixture encoders with a head, against central
 * differences of enc_objective: along the gradient and random directions, coordinate by
 * coordinate for one objective per model; and lp_grad_batch's weighted sum over three
 * inputs of an ig path against the same sum of differences. */
static void input_gradients_match_finite_differences(void **state) {
    (void)state;
    static const char *const with_logits[] = {"bert_mlm", "bert_cls", "roberta_mlm", "roberta_cls", "distilbert_mlm",
                                              "distilbert_cls"};
    uint64_t rng = 88172645463325252ull;
    double worst_all = 0;
    for (int i = 0; i < (int)(sizeof with_logits / sizeof *with_logits); i++) {
        char dir[256];
        json_t *e = grad_fixture(dir, sizeof dir, with_logits[i]);
        int T, nt;
        int *ids = json_ints(json_object_get(e, "ids"), &T);
        json_t *jt = json_object_get(e, "token_type_ids");
        int *types = json_is_array(jt) ? json_ints(jt, &nt) : NULL;
        lp_model *m;
        lp_run *r;
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        assert_int_equal(lp_run_new_typed(&r, m, ids, types, T), LP_OK);
        const lp_config *c = lp_model_config(m);
        size_t n = (size_t)T * c->d_model;
        float *ef = malloc(n * sizeof *ef), *gsum = malloc(n * sizeof *gsum);
        double *ed = malloc(n * sizeof *ed), worst[4] = {0};
        lp_embed_sum(ef, m, ids, types, 0, T);
        for (size_t j = 0; j < n; j++) ed[j] = ef[j];
        int V = c->head == LP_HEAD_CLASSIFIER ? c->n_labels : c->vocab, pos = c->head == LP_HEAD_CLASSIFIER ? 0 : T / 2;
        for (int kind = 0; kind < 3; kind++) {
            lp_objective o = {(lp_objective_kind)kind, pos, (7 + 5 * i + kind) % V, (3 + 2 * i) % V};
            if (o.contrast == o.target) o.contrast = (o.contrast + 1) % V;
            lp_grad *g;
            assert_int_equal(lp_grad_embed_new(&g, r, &o), LP_OK);
            double f = enc_objective(m, ed, T, &o);
            if (fabs(lp_grad_objective(g) - f) > 1e-4 * fmax(1, fabs(f)))
                fail_msg("%s: objective %.8g, float64 forward %.8g", with_logits[i], lp_grad_objective(g), f);
            worst[kind] = enc_check(m, ed, lp_grad_embed(g), T, &o, 6, kind == i % 3, &rng);
            lp_grad_free(g);
            if (kind != LP_OBJ_LOGPROB) continue;
            /* the batch path: three points of an ig path, weighted */
            static const double alpha[3] = {1.0, 0.6, 0.25}, w[3] = {0.5, 0.3, 0.2};
            scaled_inputs si = {ef, n, alpha};
            double fb[3], *u = malloc(n * sizeof *u), *xs = malloc(n * sizeof *xs);
            assert_int_equal(lp_grad_batch(m, T, 3, scaled_input, &si, &o, w, fb, gsum), LP_OK);
            double gn = 0;
            for (size_t j = 0; j < n; j++) gn += (double)gsum[j] * gsum[j];
            for (int dirn = 0; dirn < 3; dirn++) {
                enc_direction(u, gsum, n, dirn, &rng);
                double dot = 0, want = 0;
                for (size_t j = 0; j < n; j++) dot += gsum[j] * u[j];
                for (int b = 0; b < 3; b++) {
                    for (size_t j = 0; j < n; j++) xs[j] = (double)(float)(alpha[b] * ef[j]);
                    want += w[b] * enc_fd(m, xs, u, T, &o);
                    if (dirn == 0) {
                        double fr = enc_objective(m, xs, T, &o);
                        if (fabs(fb[b] - fr) > 1e-4 * fmax(1, fabs(fr)))
                            fail_msg("%s: batch input %d: objective %.8g, float64 forward %.8g", with_logits[i], b, fb[b], fr);
                    }
                }
                worst[3] = fmax(worst[3], fabs(dot - want) / sqrt(gn));
            }
            free(u);
            free(xs);
        }
        print_message("  %-15s input gradient vs finite differences: logit %.1e  logprob %.1e  logit_diff %.1e  "
                      "batch %.1e\n", with_logits[i], worst[0], worst[1], worst[2], worst[3]);
        for (int k = 0; k < 4; k++) {
            if (worst[k] > ENC_FD_TOL) fail_msg("%s: relative error %.2e > %.0e", with_logits[i], worst[k], ENC_FD_TOL);
            worst_all = fmax(worst_all, worst[k]);
        }
        free(ef), free(gsum), free(ed);
        lp_run_free(r);
        lp_model_free(m);
        free(ids);
        free(types);
        json_decref(e);
    }
    print_message("  worst %.2e (bound %.0e)\n", worst_all, ENC_FD_TOL);
}

/* Past ATTN_LOOP_MAX_T tokens attention's forward and backward are per-head matrix products
 * instead of the pool's loops: on either side of it a BERT classifier's input gradient (the
 * run's) matches central differences of the float64 forward, and a batch (encoder_batch)
 * gives the run's objective and, weighted 1, 0, 0, its gradient. */
static void long_inputs_match_finite_differences(void **state) {
    (void)state;
    char *dir = make_temp_dir(), m_dir[600];
    snprintf(m_dir, sizeof m_dir, "%s/bert", dir);
    assert_int_equal(mkmodel(m_dir, "--arch bert --layers 2 --d-model 32 --heads 4 --d-mlp 64 --vocab 120 --ctx 200 "
                                    "--labels 3 --seed 5"), 0);
    lp_model *m;
    if (lp_model_load(&m, m_dir, NULL)) fail_msg("%s", lp_errmsg());
    uint64_t rng = 88172645463325252ull;
    static const int lengths[] = {ATTN_LOOP_MAX_T - 16, ATTN_LOOP_MAX_T + 16};
    for (int li = 0; li < 2; li++) {
        int T = lengths[li], *ids = malloc((size_t)T * sizeof *ids);
        for (int t = 0; t < T; t++) ids[t] = t == 0 ? 101 : t == T - 1 ? 102 : 104 + (t * 7) % 16;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, ids, T), LP_OK);
        size_t n = (size_t)T * lp_model_config(m)->d_model;
        float *ef = malloc(n * sizeof *ef), *gsum = malloc(n * sizeof *gsum);
        double *ed = malloc(n * sizeof *ed);
        lp_embed_sum(ef, m, ids, NULL, 0, T);
        for (size_t j = 0; j < n; j++) ed[j] = ef[j];
        lp_objective o = {LP_OBJ_LOGPROB, 0, 1, -1};
        lp_grad *g;
        assert_int_equal(lp_grad_embed_new(&g, r, &o), LP_OK);
        const float *ge = lp_grad_embed(g);
        double err = enc_check(m, ed, ge, T, &o, 3, false, &rng), f = enc_objective(m, ed, T, &o);
        /* coordinate by coordinate on two rows far from the objective's, which reach it only
         * through attention: when the long path dropped the keys past each query, the
         * directions above moved to 2.5e-6 only, these rows to 7.9e-3 (here 3e-7) */
        double *u = calloc(n, sizeof *u), diff = 0, ref = 0;
        size_t d = (size_t)lp_model_config(m)->d_model;
        const size_t rows[2] = {(size_t)T / 2, (size_t)T - 2};
        for (int ri = 0; ri < 2; ri++) enc_coords(m, ed, ge, T, &o, rows[ri] * d, rows[ri] * d + d, u, &diff, &ref);
        free(u);
        double err_rows = sqrt(diff / ref);
        static const double alpha[3] = {1.0, 1.0, 0.5}, w[3] = {1.0, 0.0, 0.0};
        scaled_inputs si = {ef, n, alpha};
        double fb[3], worst = 0, big = 0;
        assert_int_equal(lp_grad_batch(m, T, 3, scaled_input, &si, &o, w, fb, gsum), LP_OK);
        for (size_t j = 0; j < n; j++) {
            worst = fmax(worst, fabs(gsum[j] - ge[j]));
            big = fmax(big, fabs(ge[j]));
        }
        print_message("  T=%d: input gradient vs finite differences %.1e, on two far rows %.1e; batch's objective "
                      "%.1e off, its gradient %.1e of the largest off the run's\n", T, err, err_rows, fabs(fb[0] - f),
                      worst / big);
        assert_true(err < ENC_FD_TOL);
        assert_true(err_rows < 1e-4);
        assert_true(fabs(fb[0] - f) < 1e-4 * fmax(1, fabs(f)));
        assert_true(fabs(fb[1] - fb[0]) < 1e-5 * fmax(1, fabs(f)));
        assert_true(worst <= 1e-5 * fmax(1, big));
        lp_grad_free(g);
        lp_run_free(r);
        free(ef), free(gsum), free(ed), free(ids);
    }
    lp_model_free(m);
    rm_tree(dir);
}

/* mkmodel --arch bert (make bench's BERT-base, here small): a BertForSequenceClassification
 * that loads with its labels and a vocab.txt whose special ids are bert-base-uncased's, and
 * classifies; a vocabulary too small for those ids is refused. */
static void mkmodel_writes_bert_classifiers(void **state) {
    (void)state;
    char *dir = make_temp_dir(), m_dir[600], small[600];
    snprintf(m_dir, sizeof m_dir, "%s/bert", dir);
    snprintf(small, sizeof small, "%s/small", dir);
    assert_int_equal(mkmodel(m_dir, "--arch bert --layers 2 --d-model 32 --heads 4 --d-mlp 64 --vocab 120 --ctx 16 "
                                    "--labels 3 --seed 3"), 0);
    lp_model *m;
    if (lp_model_load(&m, m_dir, NULL)) fail_msg("%s", lp_errmsg());
    const lp_config *c = lp_model_config(m);
    assert_true(lp_model_is_encoder(m));
    assert_int_equal(c->head, LP_HEAD_CLASSIFIER);
    assert_int_equal(c->n_labels, 3);
    assert_int_equal(c->n_layer, 2);
    assert_int_equal(c->d_mlp, 64);
    const lp_tokenizer *tok = lp_model_tokenizer(m);
    assert_non_null(tok);
    assert_int_equal(lp_tokenizer_special(tok, LP_SPECIAL_CLS), 101);
    int ids[5] = {101, 110, 111, 103, 102};
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, ids, 5), LP_OK);
    assert_int_equal(lp_run_out_width(r), 3);
    double sum = 0;
    for (int i = 0; i < 3; i++) sum += exp(lp_run_logits(r, 0)[i]);
    assert_true(isfinite(sum) && sum > 0);
    lp_run_free(r);
    lp_model_free(m);
    assert_true(mkmodel(small, "--arch bert --vocab 50 2>/dev/null") != 0);
    rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encoders_match_float64_reference),
        cmocka_unit_test(token_types_are_checked),
        cmocka_unit_test(roberta_context_leaves_the_offset),
        cmocka_unit_test(bad_configs_are_refused),
        cmocka_unit_test(missing_tensors_are_named),
        cmocka_unit_test(reduced_precision_fixtures_load),
        cmocka_unit_test(parameter_counts_are_the_checkpoints),
        cmocka_unit_test(tensorflow_layernorm_names_load),
        cmocka_unit_test(pretraining_checkpoints_are_masked_lms),
        cmocka_unit_test(post_norm_captures_are_defined),
        cmocka_unit_test(head_metrics_read_full_rows),
        cmocka_unit_test(engine_refuses_decoder_analyses),
        cmocka_unit_test(input_gradients_match_the_reference),
        cmocka_unit_test(input_gradients_match_finite_differences),
        cmocka_unit_test(long_inputs_match_finite_differences),
        cmocka_unit_test(mkmodel_writes_bert_classifiers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
