/* eval on the two families that are not plain decoders: encoder-decoders (T5: one score per
 * source token and per decoder input, the source's first) and encoders (BERT: a masked LM's
 * candidate at its mask, a classifier's label). Every curve point, bin, AOPC, AUC, log-odds
 * drop and leave-one-out drop against the model's own run of the perturbed input written out
 * here (the kept source and target ids; the mask id in place; the embeddings with the token
 * part swapped), which positions are removable, infidelity's inputs, max-sensitivity's
 * recomputed attributions, the command's JSON, the store's sides, and the refusals. On the
 * committed fixtures: tests/fixtures/t5 (t5_relu_tok with its tokenizer, t5_relu_tied and
 * flan_gated_untied without one) and models/encoder (the bundled masked LM and polarity
 * classifier). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "arch/model_impl.h"
#include "helpers.h"
#include "kernels/forward.h"
#include "loupe/attr.h"
#include "loupe/commands.h"
#include "loupe/error.h"
#include "loupe/eval.h"
#include "loupe/tokenizer.h"

/* eval's inputs and the explicit ones below go through different code (lp_grad_batch's
 * stacked encoder against lp_run_new_typed; for T5 the same runs, but from embeddings against
 * ids): they differ by float32 rounding only, |got - want| <= TOL (1 + |f(x)| + |want|), as in
 * test_eval.c. Worst case measured over this file: 4.0e-6 with OPENBLAS_CORETYPE=Haswell,
 * 3.8e-6 without it (OpenBLAS's own Cooperlake kernel), both on the BERT classifier; the T5
 * cases 0 with either (eval's runs and these are the same runs of the same values). */
#define TOL 2e-5

#include "eval_check.h"

static lp_model *load(const char *path) {
    lp_model *m = NULL;
    if (lp_model_load(&m, path, NULL)) fail_msg("%s: %s", path, lp_errmsg());
    return m;
}

/* A T5 run of source ids and decoder input ids (the start id first). */
static lp_run *run_s2s(const lp_model *m, const int *src, int S, const int *ids, int T) {
    lp_run *r;
    if (lp_run_new_seq2seq(&r, m, src, S, ids, T)) fail_msg("run: %s", lp_errmsg());
    return r;
}

/* An encoder's run of text as `run` makes it ([CLS] text [SEP], a pair's second text typed 1). */
static lp_run *run_enc(const lp_model *m, const char *text, const char *pair) {
    const lp_tokenizer *t = lp_model_tokenizer(m);
    int ids[128], types[128], n = 0;
    if (lp_tokenizer_encode_pair(t, text, strlen(text), pair, pair ? strlen(pair) : 0, true, ids, types, 128, &n))
        fail_msg("encode: %s", lp_errmsg());
    lp_run *r;
    if (lp_run_new_typed(&r, m, ids, types, n)) fail_msg("run: %s", lp_errmsg());
    return r;
}

static double f_value(const lp_eval_spec *es, const lp_run *p, int at) {
    lp_objective o = es->objective;
    o.pos = at;
    double v = lp_objective_value(&o, lp_run_logits(p, at), lp_run_out_width(p));
    return es->prob ? exp(v) : v;
}

/* The replaced token part of row id: the token's embedding, or zero (the zero baseline, and
 * what infidelity moves toward under delete). */
static float rep_of(const lp_model *m, const lp_eval_spec *es, int k) {
    return es->remove != LP_REMOVE_DELETE && es->token >= 0 ? m->tok_emb[(size_t)es->token * m->cfg.d_model + k] : 0.0f;
}

/* f of r's input with the positions where keep is 0 removed (keep over the positions eval
 * judges: a T5 run's S source positions then its decoder's 0..pos; all of an encoder's), or
 * moved by noise (n removable, may be NULL) toward what removal puts there: a plain run of
 * the input written out. */
static double explicit_f(const lp_run *r, const lp_eval_spec *es, const unsigned char *keep, const lp_eval *e,
                         const double *noise) {
    const lp_model *m = lp_run_model(r);
    const lp_run *source = lp_run_source(r);
    int d = m->cfg.d_model, pos = es->objective.pos, at = pos; /* where f is read: pos, or where its row lands */
    lp_run *p = NULL;
    if (source) {
        const lp_model *enc = lp_model_encoder(m);
        int S = lp_run_len(source), Tp = pos + 1, src[128], ids[128], ns = 0, nt = 0;
        const int *s0 = lp_run_ids(source), *t0 = lp_run_ids(r);
        if (es->remove == LP_REMOVE_DELETE && !noise) {
            for (int j = 0; j < S; j++)
                if (keep[j]) src[ns++] = s0[j];
            at = 0;
            for (int t = 0; t < Tp; t++)
                if (keep[S + t]) ids[nt++] = t0[t], at += t < pos;
            p = run_s2s(m, src, ns, ids, nt);
        } else if (es->remove == LP_REMOVE_MASK && !noise) {
            for (int j = 0; j < S; j++) src[j] = keep[j] ? s0[j] : es->token;
            for (int t = 0; t < Tp; t++) ids[t] = keep[S + t] ? t0[t] : es->token;
            p = run_s2s(m, src, S, ids, Tp);
        } else { /* the token embeddings, removed rows the baseline's or moved by the noise */
            float *x = malloc((size_t)(S + Tp) * d * sizeof *x);
            lp_embed(x, enc, s0, NULL, 0, S);
            lp_embed(x + (size_t)S * d, m, t0, NULL, 0, Tp);
            for (int i = 0; noise && i < lp_eval_n(e); i++) {
                int j = lp_eval_removable(e)[i];
                for (int k = 0; k < d; k++) x[(size_t)j * d + k] -= (float)noise[i] * (x[(size_t)j * d + k] - rep_of(m, es, k));
            }
            for (int j = 0; !noise && j < S + Tp; j++)
                for (int k = 0; !keep[j] && k < d; k++) x[(size_t)j * d + k] = rep_of(m, es, k);
            if (lp_run_new_seq2seq_embedded(&p, m, s0, x, S, t0, x + (size_t)S * d, Tp)) fail_msg("run: %s", lp_errmsg());
            free(x);
        }
    } else {
        int T = lp_run_len(r), ids[128], types[128], n = 0;
        const int *i0 = lp_run_ids(r), *y0 = lp_run_types(r);
        if (es->remove == LP_REMOVE_DELETE && !noise) {
            at = 0;
            for (int t = 0; t < T; t++)
                if (keep[t]) ids[n] = i0[t], types[n++] = y0[t], at += t < pos;
            if (lp_run_new_typed(&p, m, ids, types, n)) fail_msg("run: %s", lp_errmsg());
        } else if (es->remove == LP_REMOVE_MASK && !noise) {
            for (int t = 0; t < T; t++) ids[t] = keep[t] ? i0[t] : es->token;
            if (lp_run_new_typed(&p, m, ids, y0, T)) fail_msg("run: %s", lp_errmsg());
        } else { /* word + position + type, the word part swapped or moved */
            float *x = malloc((size_t)T * d * sizeof *x);
            lp_embed_sum(x, m, i0, y0, 0, T);
            for (int t = 0; t < T; t++) {
                double a = 0.0;
                for (int i = 0; noise && i < lp_eval_n(e); i++)
                    if (lp_eval_removable(e)[i] == t) a = noise[i];
                for (int k = 0; k < d && (noise ? a != 0.0 : !keep[t]); k++) {
                    float w = m->tok_emb[(size_t)i0[t] * d + k];
                    x[(size_t)t * d + k] -= noise ? (float)a * (w - rep_of(m, es, k)) : w - rep_of(m, es, k);
                }
            }
            if (lp_run_new_embedded(&p, m, i0, y0, x, T)) fail_msg("run: %s", lp_errmsg());
            free(x);
        }
    }
    double f = f_value(es, p, at);
    lp_run_free(p);
    return f;
}

static lp_attr_spec attr_spec(lp_attr_method method, const lp_eval_spec *es) {
    lp_attr_spec sp = {.method = method, .objective = es->objective, .baseline = -1, .layer = -1, .steps = 8};
    if (es->prob) sp.objective.kind = LP_OBJ_LOGIT;
    return sp;
}

struct rerun {
    const lp_run *r;
    const lp_eval_spec *es;
    const lp_eval *e;
};

static double rerun_f(const unsigned char *keep, void *ctx) {
    const struct rerun *c = ctx;
    return explicit_f(c->r, c->es, keep, c->e, NULL);
}

/* Judges the methods' scores and checks every point of both curves, every bin, both AOPCs and
 * AUCs, the log-odds drop and the leave-one-out drops against explicit runs. */
static void check_against_reruns(const lp_run *r, const lp_eval_spec *es, const lp_attr_method *methods, int nm) {
    lp_eval *e;
    if (lp_eval_new(&e, r, es)) fail_msg("lp_eval_new: %s", lp_errmsg());
    int n = lp_eval_n(e), N = lp_attr_len(r);
    float *scores = calloc((size_t)nm * N, sizeof *scores);
    const float *rows[LP_ATTR_COUNT];
    lp_eval_result res[LP_ATTR_COUNT];
    for (int i = 0; i < nm; i++) {
        lp_attr_spec sp = attr_spec(methods[i], es);
        double delta;
        rows[i] = scores + (size_t)i * N;
        if (lp_attr(scores + (size_t)i * N, &delta, r, &sp)) fail_msg("attr: %s", lp_errmsg());
    }
    if (lp_eval_judge(e, nm, rows, res)) fail_msg("judge: %s", lp_errmsg());
    unsigned char keep[256];
    memset(keep, 1, sizeof keep);
    double fx = explicit_f(r, es, keep, e, NULL);
    fscale = fabs(fx);
    near(lp_eval_fx(e), fx, "f(x)", 0);
    keep_of(keep, e, NULL, 0, true);
    near(lp_eval_fempty(e), explicit_f(r, es, keep, e, NULL), "f(empty)", 0);
    for (int i = 0; i < n; i++) {
        memset(keep, 1, sizeof keep);
        keep[lp_eval_removable(e)[i]] = 0;
        near(lp_eval_loo(e)[i], fx - explicit_f(r, es, keep, e, NULL), "loo", i);
    }
    struct rerun ctx = {r, es, e};
    for (int i = 0; i < nm; i++) {
        check_judgement(e, &res[i], rows[i], fx, es->prob, rerun_f, &ctx);
        lp_eval_result_free(&res[i]);
    }
    free(scores);
    lp_eval_free(e);
}

/* t5_relu_tok's "hello world" source (13 pieces with </s>) and a decoder input of the start
 * id and four pieces, as `run hello world --target water is` makes them. */
static lp_run *t5_run(const lp_model *m, int *S_out) {
    const lp_tokenizer *t = lp_model_tokenizer(m);
    int src[64], tgt[64], S = 0, n = 0;
    assert_int_equal(lp_tokenizer_encode(t, "hello world", 11, true, src, 64, &S), 0);
    assert_int_equal(lp_tokenizer_encode(t, "water is", 8, false, tgt + 1, 63, &n), 0);
    tgt[0] = m->cfg.start_id;
    *S_out = S;
    return run_s2s(m, src, S, tgt, n + 1);
}

static int top_at(const lp_run *r, int pos) {
    const float *lg = lp_run_logits(r, pos);
    int top = 0;
    for (int j = 1; j < lp_run_out_width(r); j++)
        if (lg[j] > lg[top]) top = j;
    return top;
}

static void t5_curves_match_explicit_runs_for_each_removal(void **state) {
    (void)state;
    lp_model *m = load("tests/fixtures/t5/t5_relu_tok");
    int S;
    lp_run *r = t5_run(m, &S);
    int T = lp_run_len(r), pos = T - 1;
    assert_true(lp_run_ids(lp_run_source(r))[S - 1] == m->cfg.eos_id);
    lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, pos, top_at(r, pos), -1}, .prob = true, .remove = LP_REMOVE_DELETE};
    lp_eval *e;
    assert_int_equal(lp_eval_new(&e, r, &es), 0);
    /* removable: the source but its </s>, the decoder's 1..pos-1 (not the start, not pos) */
    assert_int_equal(lp_eval_len(e), S + pos + 1);
    assert_int_equal(lp_eval_n_source(e), S);
    assert_int_equal(lp_eval_n(e), S - 1 + pos - 1);
    for (int i = 0; i < lp_eval_n(e); i++) assert_int_equal(lp_eval_removable(e)[i], i < S - 1 ? i : S + 1 + (i - (S - 1)));
    lp_eval_free(e);
    lp_attr_method all[] = {LP_ATTR_SALIENCY, LP_ATTR_GXI, LP_ATTR_IG, LP_ATTR_OCCLUSION, LP_ATTR_ROLLOUT, LP_ATTR_ATTNXNORM};
    check_against_reruns(r, &es, all, LP_ATTR_COUNT);
    es.remove = LP_REMOVE_MASK; /* <pad>: the tokenizer has no mask token */
    es.token = lp_tokenizer_special(lp_model_tokenizer(m), LP_SPECIAL_PAD);
    assert_true(es.token >= 0);
    check_against_reruns(r, &es, all + 1, 2);
    es.remove = LP_REMOVE_BASELINE; /* the zero vector, then a token's embedding */
    es.token = -1;
    es.bins = 4;
    check_against_reruns(r, &es, all + 3, 2);
    es.token = 7;
    check_against_reruns(r, &es, all, 1);
    /* an earlier decoder position, a logit difference */
    es = (lp_eval_spec){.objective = {LP_OBJ_LOGIT_DIFF, 2, top_at(r, 2), 5}, .remove = LP_REMOVE_DELETE, .bins = 5};
    check_against_reruns(r, &es, all + 1, 3);
    print_message("  worst difference from explicit runs so far: %.3g\n", worst);
    lp_run_free(r);
    lp_model_free(m);
}

/* Without a tokenizer the config's eos id is the source's frame; a BF16 gated checkpoint. */
static void t5_without_a_tokenizer_keeps_the_eos_and_matches_explicit_runs(void **state) {
    (void)state;
    const char *models[] = {"tests/fixtures/t5/t5_relu_tied", "tests/fixtures/t5/flan_gated_untied"};
    for (int c = 0; c < 2; c++) {
        lp_model *m = load(models[c]);
        int src[] = {37, 12, 250, 9, 81, m->cfg.eos_id}, ids[] = {m->cfg.start_id, 44, 3, 19};
        lp_run *r = run_s2s(m, src, 6, ids, 4);
        lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, 3, top_at(r, 3), -1}, .prob = true, .remove = LP_REMOVE_DELETE};
        lp_eval *e;
        assert_int_equal(lp_eval_new(&e, r, &es), 0);
        int want[] = {0, 1, 2, 3, 4, 7, 8}; /* not </s> (5), the start (6) or pos (9) */
        assert_int_equal(lp_eval_n(e), 7);
        for (int i = 0; i < 7; i++) assert_int_equal(lp_eval_removable(e)[i], want[i]);
        lp_eval_free(e);
        lp_attr_method some[] = {LP_ATTR_GXI, LP_ATTR_OCCLUSION, LP_ATTR_ROLLOUT};
        check_against_reruns(r, &es, some, 3);
        es.remove = LP_REMOVE_BASELINE;
        es.token = -1;
        check_against_reruns(r, &es, some + 1, 1);
        lp_run_free(r);
        lp_model_free(m);
    }
}

static void encoder_curves_match_explicit_runs(void **state) {
    (void)state;
    lp_model *mlm = load("models/encoder/mlm");
    const lp_tokenizer *t = lp_model_tokenizer(mlm);
    lp_run *r = run_enc(mlm, "the cat [MASK] on the mat .", NULL);
    int T = lp_run_len(r), mask = lp_tokenizer_special(t, LP_SPECIAL_MASK), pos = 3;
    assert_int_equal(lp_run_ids(r)[pos], mask);
    lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, pos, top_at(r, pos), -1}, .prob = true, .remove = LP_REMOVE_DELETE};
    lp_eval *e;
    assert_int_equal(lp_eval_new(&e, r, &es), 0);
    /* every position but [CLS], [SEP] and the mask judged */
    assert_int_equal(lp_eval_len(e), T);
    assert_int_equal(lp_eval_n(e), T - 3);
    for (int i = 0; i < lp_eval_n(e); i++) {
        int p = lp_eval_removable(e)[i];
        assert_true(p != 0 && p != pos && p != T - 1);
    }
    lp_eval_free(e);
    lp_attr_method all[] = {LP_ATTR_SALIENCY, LP_ATTR_GXI, LP_ATTR_IG, LP_ATTR_OCCLUSION, LP_ATTR_ROLLOUT, LP_ATTR_ATTNXNORM};
    check_against_reruns(r, &es, all, LP_ATTR_COUNT); /* the mask moves left as tokens before it go */
    es.remove = LP_REMOVE_MASK;
    es.token = mask;
    check_against_reruns(r, &es, all + 1, 2);
    es.remove = LP_REMOVE_BASELINE;
    es.token = -1;
    check_against_reruns(r, &es, all + 2, 2);
    lp_run_free(r);
    lp_model_free(mlm);

    /* the classifier: a label's probability and a logit difference, on a pair (types kept) */
    lp_model *cls = load("models/encoder/polarity");
    r = run_enc(cls, "this movie was not good", "i liked it");
    T = lp_run_len(r);
    es = (lp_eval_spec){.objective = {LP_OBJ_LOGPROB, 0, top_at(r, 0), -1}, .prob = true, .remove = LP_REMOVE_DELETE};
    assert_int_equal(lp_eval_new(&e, r, &es), 0);
    int seps = 0;
    for (int p = 0; p < T; p++) seps += lp_tokenizer_role(lp_model_tokenizer(cls), lp_run_ids(r)[p]) == LP_SPECIAL_SEP;
    assert_int_equal(seps, 2);
    assert_int_equal(lp_eval_n(e), T - 3);
    assert_int_equal(lp_eval_removable(e)[0], 1);
    lp_eval_free(e);
    check_against_reruns(r, &es, all, LP_ATTR_COUNT);
    es = (lp_eval_spec){.objective = {LP_OBJ_LOGIT_DIFF, 0, 0, 1}, .remove = LP_REMOVE_MASK,
                        .token = lp_tokenizer_special(lp_model_tokenizer(cls), LP_SPECIAL_MASK), .bins = 3};
    check_against_reruns(r, &es, all + 3, 1);
    print_message("  worst difference from explicit runs: %.3g\n", worst);
    lp_run_free(r);
    lp_model_free(cls);
}

/* Infidelity's perturbed inputs against explicit runs of the moved embeddings. */
static void infidelity_drops_match_explicit_runs(void **state) {
    (void)state;
    lp_model *t5 = load("tests/fixtures/t5/t5_relu_tok"), *cls = load("models/encoder/polarity");
    int S;
    lp_run *runs[2] = {t5_run(t5, &S), run_enc(cls, "a fine film with a dull end", NULL)};
    for (int c = 0; c < 2; c++)
        for (int rm = 0; rm < 2; rm++) {
            lp_run *r = runs[c];
            int pos = c ? 0 : lp_run_len(r) - 1;
            lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, pos, top_at(r, pos), -1}, .prob = true,
                               .remove = rm ? LP_REMOVE_BASELINE : LP_REMOVE_DELETE, .token = rm ? 4 : -1};
            lp_eval *e;
            assert_int_equal(lp_eval_new(&e, r, &es), 0);
            int n = lp_eval_n(e), N = lp_attr_len(r), samples = 6;
            float *sc = calloc((size_t)N, sizeof *sc);
            lp_attr_spec sp = attr_spec(LP_ATTR_GXI, &es);
            double delta, infid, raw, noise[6 * 64], drop[6];
            assert_int_equal(lp_attr(sc, &delta, r, &sp), 0);
            const float *rows[1] = {sc};
            assert_int_equal(lp_eval_infidelity(e, 1, rows, samples, 0.1, 5, &infid, &raw, noise, drop), 0);
            fscale = fabs(lp_eval_fx(e));
            for (int s = 0; s < samples; s++)
                near(drop[s], lp_eval_fx(e) - explicit_f(r, &es, NULL, e, noise + (size_t)s * n), "infidelity drop", s);
            assert_true(isfinite(infid) && infid <= raw + 1e-12);
            free(sc);
            lp_eval_free(e);
        }
    lp_run_free(runs[0]);
    lp_run_free(runs[1]);
    lp_model_free(t5);
    lp_model_free(cls);
}

/* Max-sensitivity: each attribution recomputed on an explicit run of the perturbed
 * embeddings (T5: both stacks' token embeddings; BERT: the sums before the embeddings' norm),
 * and attr on such a run taken at its own input: occlusion's score is f there minus f with
 * the row's token part swapped, both at the perturbed point. */
static void max_sensitivity_matches_recomputed_attributions(void **state) {
    (void)state;
    lp_model *t5 = load("tests/fixtures/t5/t5_relu_tok"), *mlm = load("models/encoder/mlm");
    int S;
    lp_run *runs[2] = {t5_run(t5, &S), run_enc(mlm, "the cat [MASK] on the mat .", NULL)};
    for (int c = 0; c < 2; c++) {
        lp_run *r = runs[c];
        const lp_model *m = lp_run_model(r);
        int pos = c ? 3 : lp_run_len(r) - 1, d = m->cfg.d_model, draws = 3;
        lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, pos, top_at(r, pos), -1}, .prob = true};
        lp_eval *e;
        assert_int_equal(lp_eval_new(&e, r, &es), 0);
        int T = lp_eval_len(e), N = lp_attr_len(r);
        lp_attr_method ms[3] = {LP_ATTR_GXI, LP_ATTR_IG, LP_ATTR_OCCLUSION};
        lp_attr_spec specs[3];
        float *sc = calloc((size_t)3 * N, sizeof *sc), *phi = calloc((size_t)N, sizeof *phi);
        const float *rows[3];
        for (int i = 0; i < 3; i++) {
            double delta;
            specs[i] = attr_spec(ms[i], &es);
            rows[i] = sc + (size_t)i * N;
            assert_int_equal(lp_attr(sc + (size_t)i * N, &delta, r, &specs[i]), 0);
        }
        float *noise = malloc((size_t)draws * T * d * sizeof *noise), *x = malloc((size_t)T * d * sizeof *x);
        double sens[3], want[3] = {0, 0, 0};
        assert_int_equal(lp_eval_sensitivity(e, 3, specs, rows, draws, 0.02, 9, sens, noise), 0);
        for (int s = 0; s < draws; s++) {
            lp_run *p;
            const int *ids = lp_run_ids(r);
            if (c == 0) {
                const lp_run *src = lp_run_source(r);
                lp_embed(x, lp_model_encoder(m), lp_run_ids(src), NULL, 0, S);
                lp_embed(x + (size_t)S * d, m, ids, NULL, 0, pos + 1);
            } else lp_embed_sum(x, m, ids, lp_run_types(r), 0, T);
            for (size_t j = 0; j < (size_t)T * d; j++) {
                assert_true(fabsf(noise[(size_t)s * T * d + j]) <= 0.02f * (1 + 1e-5f));
                x[j] += noise[(size_t)s * T * d + j];
            }
            if (c == 0) assert_int_equal(lp_run_new_seq2seq_embedded(&p, m, lp_run_ids(lp_run_source(r)), x, S, ids,
                                                                     x + (size_t)S * d, pos + 1), 0);
            else assert_int_equal(lp_run_new_embedded(&p, m, ids, lp_run_types(r), x, T), 0);
            for (int i = 0; i < 3; i++) {
                double delta, num = 0, den = 0;
                assert_int_equal(lp_attr(phi, &delta, p, &specs[i]), 0);
                for (int t = 0; t < T; t++) {
                    num += (phi[t] - rows[i][t]) * (double)(phi[t] - rows[i][t]);
                    den += rows[i][t] * (double)rows[i][t];
                }
                want[i] = fmax(want[i], sqrt(num / den));
            }
            if (s == 0) { /* occlusion at the perturbed point, one position by hand */
                int j = lp_eval_removable(e)[0], row = c == 0 && j >= S ? j - S : j;
                const float *w = (c == 0 && j < S ? lp_model_encoder(m) : m)->tok_emb +
                                 (size_t)(c == 0 && j < S ? lp_run_ids(lp_run_source(r))[j] : ids[row]) * d;
                lp_attr_spec sp = specs[2];
                sp.objective.kind = LP_OBJ_LOGIT;
                assert_int_equal(lp_attr(phi, &(double){0}, p, &sp), 0);
                for (int k = 0; k < d; k++) x[(size_t)j * d + k] -= w[k]; /* the zero baseline keeps the noise */
                lp_run *q;
                if (c == 0) assert_int_equal(lp_run_new_seq2seq_embedded(&q, m, lp_run_ids(lp_run_source(r)), x, S, ids,
                                                                         x + (size_t)S * d, pos + 1), 0);
                else assert_int_equal(lp_run_new_embedded(&q, m, ids, lp_run_types(r), x, T), 0);
                double f0 = lp_objective_value(&sp.objective, lp_run_logits(p, pos), lp_run_out_width(p));
                double f1 = lp_objective_value(&sp.objective, lp_run_logits(q, pos), lp_run_out_width(q));
                fscale = fabs(f0);
                near(phi[j], f0 - f1, "occlusion on a perturbed run", j);
                lp_run_free(q);
            }
            lp_run_free(p);
        }
        for (int i = 0; i < 3; i++)
            if (!(fabs(sens[i] - want[i]) <= 1e-3 * want[i] + 1e-7))
                fail_msg("%s: max-sensitivity %.9g, recomputed %.9g", lp_attr_method_name(ms[i]), sens[i], want[i]);
        free(noise), free(x), free(sc), free(phi);
        lp_eval_free(e);
    }
    print_message("  worst difference from explicit runs over the file: %.3g\n", worst);
    lp_run_free(runs[0]);
    lp_run_free(runs[1]);
    lp_model_free(t5);
    lp_model_free(mlm);
}

/* ---- the command ---- */

typedef struct {
    lp_session *s;
    char *buf;
    size_t len;
} session;

static json_t *exec_json(session *f, const char *line) {
    json_t *v;
    if (exec_line(f->s, &f->buf, &f->len, line, &v) || !v) fail_msg("%s: %s", line, lp_errmsg());
    return v;
}

static json_t *rows_of(session *f, const char *sql) {
    json_t *rows;
    if (lp_store_query(f->s->store, sql, NULL, false, &rows, NULL)) fail_msg("%s: %s", sql, lp_errmsg());
    return rows;
}

static void command_judges_t5_and_stores_both_sides(void **state) {
    (void)state;
    session f = {session_open("tests/fixtures/t5/t5_relu_tok", true), NULL, 0};
    assert_non_null(f.s);
    json_decref(exec_json(&f, "run hello world --target water is"));
    int S = lp_run_len(lp_run_source(f.s->run)), T = lp_run_len(f.s->run);
    json_t *v = exec_json(&f, "eval all --samples 2");
    assert_int_equal(json_integer_value(json_object_get(v, "n_source")), S);
    assert_int_equal(json_integer_value(json_object_get(v, "pos")), T - 1);
    json_t *ms = json_object_get(v, "methods");
    assert_int_equal(json_array_size(ms), LP_ATTR_COUNT);
    int n = (int)json_array_size(json_object_get(v, "removable"));
    assert_int_equal(n, S - 1 + T - 2);
    for (size_t i = 0; i < json_array_size(ms); i++) {
        json_t *m = json_array_get(ms, i);
        assert_int_equal(json_array_size(json_object_get(m, "scores")), S + T);
        assert_int_equal(json_array_size(json_object_get(m, "deletion")), n + 1);
        assert_true(json_is_number(json_object_get(m, "max_sensitivity")));
        assert_true(json_is_number(json_object_get(m, "infidelity")));
        /* stored by side, as attr stores an encoder-decoder's attribution */
        char sql[300];
        snprintf(sql, sizeof sql, "SELECT s.side, count(*) AS n, max(s.pos) AS last FROM evaluations e JOIN "
                                  "attribution_scores s ON s.attribution_id = e.attribution_id WHERE e.id = %lld "
                                  "GROUP BY s.side ORDER BY s.side",
                 (long long)json_integer_value(json_object_get(m, "evaluation_id")));
        json_t *rows = rows_of(&f, sql);
        assert_int_equal(json_array_size(rows), 2);
        json_t *src = json_array_get(rows, 0), *tgt = json_array_get(rows, 1);
        assert_string_equal(json_string_value(json_object_get(src, "side")), "source");
        assert_int_equal(json_integer_value(json_object_get(src, "n")), S);
        assert_int_equal(json_integer_value(json_object_get(src, "last")), S - 1);
        assert_string_equal(json_string_value(json_object_get(tgt, "side")), "target");
        assert_int_equal(json_integer_value(json_object_get(tgt, "n")), T);
        assert_int_equal(json_integer_value(json_object_get(tgt, "last")), T - 1);
        json_decref(rows);
    }
    json_decref(v);
    /* --sanity cannot randomise two stacks: one error line naming the option */
    assert_int_not_equal(exec_line(f.s, &f.buf, &f.len, "eval gxi --sanity", NULL), 0);
    assert_non_null(strstr(lp_errmsg(), "--sanity"));
    assert_null(strchr(lp_errmsg(), '\n'));
    /* nothing to remove: a one-token source (its </s>) and the first prediction */
    json_decref(exec_json(&f, "run --ids 1 --target-ids 5"));
    assert_int_not_equal(exec_line(f.s, &f.buf, &f.len, "eval --pos 0", NULL), 0);
    assert_non_null(strstr(lp_errmsg(), "no token to remove"));
    free(f.buf);
    session_close(f.s);
}

static void command_judges_encoders_with_the_sanity_check(void **state) {
    (void)state;
    session f = {session_open("models/encoder/polarity", true), NULL, 0};
    assert_non_null(f.s);
    json_decref(exec_json(&f, "run this movie was not good --pair i liked it"));
    json_t *v = exec_json(&f, "eval all --sanity --samples 2 --target-id 1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "target"), "label")),
                        lp_model_label(f.s->model, 1));
    assert_int_equal(json_integer_value(json_object_get(v, "pos")), 0);
    json_t *ms = json_object_get(v, "methods");
    for (size_t i = 0; i < json_array_size(ms); i++) {
        json_t *rho = json_object_get(json_object_get(json_array_get(ms, i), "randomisation"), "rho");
        assert_int_equal(json_array_size(rho), lp_model_config(f.s->model)->n_layer);
    }
    json_decref(v);
    assert_int_not_equal(exec_line(f.s, &f.buf, &f.len, "eval --pos 2", NULL), 0); /* a classifier reads position 0 */
    assert_non_null(strstr(lp_errmsg(), "position 0"));
    f.s->mode = LP_MODE_TABLE; /* the header names the label */
    assert_int_equal(exec_line(f.s, &f.buf, &f.len, "eval gxi --target-id 0 --remove mask", NULL), 0);
    char head[128];
    snprintf(head, sizeof head, "p('%s') = ", lp_model_label(f.s->model, 0));
    assert_non_null(strstr(f.buf, head));
    free(f.buf);
    session_close(f.s);

    /* a masked LM: nothing to remove around a lone mask; a bare encoder has no prediction */
    f = (session){session_open("models/encoder/mlm", false), NULL, 0};
    json_decref(exec_json(&f, "run [MASK]"));
    assert_int_not_equal(exec_line(f.s, &f.buf, &f.len, "eval", NULL), 0);
    assert_non_null(strstr(lp_errmsg(), "no token to remove"));
    free(f.buf);
    session_close(f.s);
    f = (session){session_open("tests/fixtures/encoders/bert_model", false), NULL, 0};
    json_decref(exec_json(&f, "run --ids 2,10,3"));
    assert_int_not_equal(exec_line(f.s, &f.buf, &f.len, "eval", NULL), 0);
    assert_non_null(strstr(lp_errmsg(), "no output head"));
    free(f.buf);
    session_close(f.s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t5_curves_match_explicit_runs_for_each_removal),
        cmocka_unit_test(t5_without_a_tokenizer_keeps_the_eos_and_matches_explicit_runs),
        cmocka_unit_test(encoder_curves_match_explicit_runs),
        cmocka_unit_test(infidelity_drops_match_explicit_runs),
        cmocka_unit_test(max_sensitivity_matches_recomputed_attributions),
        cmocka_unit_test(command_judges_t5_and_stores_both_sides),
        cmocka_unit_test(command_judges_encoders_with_the_sanity_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
