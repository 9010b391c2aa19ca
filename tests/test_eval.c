/* eval: every curve point against an explicit run of the perturbed input (deleted tokens,
 * mask tokens, the zero baseline), AOPC and the log-odds drop against their formulas,
 * Kendall's tau against hand counts, which positions are never removed, the command's JSON
 * and table, and every refusal. On real model files: models/default (GPT-2 family, trained by
 * loupe) and stories260K (llama2.c). */
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

#define IOI "When Mary and John went to the store, John gave a drink to"
#define STORY "Once upon a time, Lily found a ball. Lily liked the"
#define EOT 2047 /* models/default's <|endoftext|> */

/* The batched forward against a plain run of the same input differ by float32 rounding only:
 * |got - want| <= TOL (1 + |f(x)| + |want|) (logit differences reach 10 and more, and a
 * difference f(x) - f(x') carries the rounding of both). Worst case measured
 * over these tests: 3.9e-6 with OPENBLAS_CORETYPE=Haswell, 2.9e-6 without it. */
#define TOL 2e-5

#include "eval_check.h"

static lp_model *load(const char *which) {
    lp_model *m = NULL;
    if (strcmp(which, "stories") == 0) {
        lp_load_options o = {STORIES_TOK};
        if (lp_model_load(&m, STORIES, &o)) fail_msg("stories260K: %s", lp_errmsg());
    } else if (lp_model_load(&m, "models/default", NULL)) fail_msg("models/default: %s", lp_errmsg());
    return m;
}

static lp_run *run_text(const lp_model *m, const char *text, bool bos, int first) {
    int ids[256], n = 0, at = first >= 0;
    if (first >= 0) ids[0] = first;
    assert_int_equal(lp_tokenizer_encode(lp_model_tokenizer(m), text, strlen(text), bos, ids + at, 256 - at, &n), 0);
    lp_run *r;
    if (lp_run_new(&r, m, ids, n + at)) fail_msg("run: %s", lp_errmsg());
    return r;
}

static double f_of(const lp_eval_spec *es, const float *logits, int V, int pos) {
    lp_objective o = es->objective;
    o.pos = pos;
    double v = lp_objective_value(&o, logits, V);
    return es->prob ? exp(v) : v;
}

/* f of r's prefix 0..pos with the positions where keep is 0 removed, by a plain run of the
 * input written out: the kept ids, the mask id in place, or the embeddings with the token
 * part swapped for the baseline's. */
static double explicit_f(const lp_run *r, const lp_eval_spec *es, const unsigned char *keep) {
    const lp_model *m = lp_run_model(r);
    int T = es->objective.pos + 1, d = m->cfg.d_model, V = m->cfg.vocab, ids[256], n = 0;
    const int *src = lp_run_ids(r);
    lp_run *p = NULL;
    if (es->remove == LP_REMOVE_DELETE) {
        for (int t = 0; t < T; t++)
            if (keep[t]) ids[n++] = src[t];
        assert_int_equal(lp_run_new(&p, m, ids, n), 0);
    } else if (es->remove == LP_REMOVE_MASK) {
        for (int t = 0; t < T; t++) ids[t] = keep[t] ? src[t] : es->token;
        n = T;
        assert_int_equal(lp_run_new(&p, m, ids, n), 0);
    } else {
        float *x = malloc((size_t)T * d * sizeof *x);
        lp_embed(x, m, src, NULL, 0, T);
        for (int t = 0; t < T; t++)
            for (int k = 0; !keep[t] && k < d; k++)
                x[t * d + k] += -m->tok_emb[(size_t)src[t] * d + k] + (es->token >= 0 ? m->tok_emb[(size_t)es->token * d + k] : 0.0f);
        n = T;
        assert_int_equal(lp_run_new_embedded(&p, m, src, NULL, x, T), 0);
        free(x);
    }
    double f = f_of(es, lp_run_logits(p, n - 1), V, n - 1);
    lp_run_free(p);
    return f;
}

struct rerun {
    const lp_run *r;
    const lp_eval_spec *es;
};

static double rerun_f(const unsigned char *keep, void *ctx) {
    const struct rerun *c = ctx;
    return explicit_f(c->r, c->es, keep);
}

/* Judges the given methods' scores and checks every point of both curves, every bin, the
 * log-odds drop and the leave-one-out drops against explicit runs. */
static void check_against_reruns(const lp_run *r, const lp_eval_spec *es, const lp_attr_method *methods, int nm) {
    lp_eval *e;
    if (lp_eval_new(&e, r, es)) fail_msg("lp_eval_new: %s", lp_errmsg());
    int n = lp_eval_n(e);
    float *scores = calloc((size_t)nm * lp_run_len(r), sizeof *scores);
    const float *rows[LP_ATTR_COUNT];
    lp_eval_result res[LP_ATTR_COUNT];
    for (int i = 0; i < nm; i++) {
        lp_attr_spec sp = {.method = methods[i], .objective = es->objective, .baseline = -1, .layer = -1, .steps = 16};
        if (es->prob) sp.objective.kind = LP_OBJ_LOGIT;
        double delta;
        rows[i] = scores + (size_t)i * lp_run_len(r);
        if (lp_attr(scores + (size_t)i * lp_run_len(r), &delta, r, &sp)) fail_msg("attr: %s", lp_errmsg());
    }
    if (lp_eval_judge(e, nm, rows, res)) fail_msg("judge: %s", lp_errmsg());
    unsigned char keep[256];
    double fx = explicit_f(r, es, memset(keep, 1, sizeof keep));
    fscale = fabs(fx);
    near(lp_eval_fx(e), fx, "f(x)", 0);
    for (int i = 0; i < n; i++) {
        memset(keep, 1, sizeof keep);
        keep[lp_eval_removable(e)[i]] = 0;
        near(lp_eval_loo(e)[i], fx - explicit_f(r, es, keep), "loo", i);
    }
    struct rerun ctx = {r, es};
    for (int i = 0; i < nm; i++) {
        check_judgement(e, &res[i], rows[i], fx, es->prob, rerun_f, &ctx);
        lp_eval_result_free(&res[i]);
    }
    free(scores);
    lp_eval_free(e);
}

static void deletion_curves_match_explicit_runs_with_shorter_inputs(void **state) {
    (void)state;
    lp_model *m = load("default");
    lp_run *r = run_text(m, IOI, false, -1);
    int T = lp_run_len(r), mary = lp_tokenizer_piece_to_id(lp_model_tokenizer(m), "\xc4\xa0Mary");
    lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, T - 1, mary, -1}, .prob = true, .remove = LP_REMOVE_DELETE};
    lp_attr_method all[] = {LP_ATTR_SALIENCY, LP_ATTR_GXI, LP_ATTR_IG, LP_ATTR_OCCLUSION, LP_ATTR_ROLLOUT, LP_ATTR_ATTNXNORM};
    check_against_reruns(r, &es, all, LP_ATTR_COUNT);
    es.objective.pos = 7; /* an earlier prediction: the prefix 0..7 only */
    es.bins = 4;
    check_against_reruns(r, &es, all + 1, 1);
    lp_run_free(r);
    lp_model_free(m);
}

static void mask_curves_match_explicit_runs_on_llama2c(void **state) {
    (void)state;
    lp_model *m = load("stories");
    lp_run *r = run_text(m, STORY, true, -1);
    int T = lp_run_len(r);
    const float *lg = lp_run_logits(r, T - 1);
    int top = 0;
    for (int j = 1; j < m->cfg.vocab; j++)
        if (lg[j] > lg[top]) top = j;
    lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, T - 1, top, -1}, .prob = true, .remove = LP_REMOVE_MASK,
                       .token = lp_tokenizer_special(lp_model_tokenizer(m), LP_SPECIAL_UNK)};
    assert_true(es.token >= 0);
    lp_attr_method some[] = {LP_ATTR_GXI, LP_ATTR_OCCLUSION, LP_ATTR_ROLLOUT};
    check_against_reruns(r, &es, some, 3);
    es.remove = LP_REMOVE_DELETE; /* RoPE: deleting renumbers the rotary positions too */
    check_against_reruns(r, &es, some, 1);
    lp_run_free(r);
    lp_model_free(m);
}

static void baseline_curves_match_explicit_runs_for_a_logit_difference(void **state) {
    (void)state;
    lp_model *m = load("default");
    lp_run *r = run_text(m, IOI, false, EOT);
    const lp_tokenizer *t = lp_model_tokenizer(m);
    int T = lp_run_len(r);
    lp_eval_spec es = {.objective = {LP_OBJ_LOGIT_DIFF, T - 1, lp_tokenizer_piece_to_id(t, "\xc4\xa0Mary"),
                                     lp_tokenizer_piece_to_id(t, "\xc4\xa0John")},
                       .remove = LP_REMOVE_BASELINE, .token = -1, .bins = 5};
    lp_attr_method some[] = {LP_ATTR_IG, LP_ATTR_OCCLUSION};
    check_against_reruns(r, &es, some, 2);
    es.token = lp_tokenizer_piece_to_id(t, "\xc4\xa0the"); /* a token's embedding as the baseline */
    check_against_reruns(r, &es, some + 1, 1);
    print_message("  worst difference from explicit runs (relative to 1 + |f(x)| + |value|): %.3g\n", worst);
    lp_run_free(r);
    lp_model_free(m);
}

/* Occlusion with window 1 and the zero baseline IS the leave-one-out drop under baseline
 * removal of the same objective: it must agree with it perfectly. */
static void occlusion_agrees_with_leave_one_out_by_construction(void **state) {
    (void)state;
    lp_model *m = load("default");
    lp_run *r = run_text(m, IOI, false, -1);
    const lp_tokenizer *t = lp_model_tokenizer(m);
    int T = lp_run_len(r);
    lp_eval_spec es = {.objective = {LP_OBJ_LOGIT_DIFF, T - 1, lp_tokenizer_piece_to_id(t, "\xc4\xa0Mary"),
                                     lp_tokenizer_piece_to_id(t, "\xc4\xa0John")},
                       .remove = LP_REMOVE_BASELINE, .token = -1};
    lp_eval *e;
    assert_int_equal(lp_eval_new(&e, r, &es), 0);
    float scores[64];
    double delta;
    lp_attr_spec sp = {.method = LP_ATTR_OCCLUSION, .objective = es.objective, .baseline = -1, .layer = -1};
    assert_int_equal(lp_attr(scores, &delta, r, &sp), 0);
    const float *rows[1] = {scores};
    lp_eval_result R;
    assert_int_equal(lp_eval_judge(e, 1, rows, &R), 0);
    assert_true(fabs(R.tau - 1.0) < 1e-12);
    for (int i = 0; i < lp_eval_n(e); i++) assert_true(fabs(scores[lp_eval_removable(e)[i]] - lp_eval_loo(e)[i]) < 1e-4);
    lp_eval_result_free(&R);
    lp_eval_free(e);
    lp_run_free(r);
    lp_model_free(m);
}

/* Infidelity: each perturbed input against an explicit run of its embeddings, then the
 * formula with and without beta; the same seed draws the same noise. */
static void infidelity_matches_explicit_runs_and_its_formula(void **state) {
    (void)state;
    lp_model *m = load("default");
    lp_run *r = run_text(m, IOI, false, EOT);
    const lp_tokenizer *t = lp_model_tokenizer(m);
    int T = lp_run_len(r), d = m->cfg.d_model;
    lp_eval_spec specs[2] = {
        {.objective = {LP_OBJ_LOGIT_DIFF, T - 1, lp_tokenizer_piece_to_id(t, "\xc4\xa0Mary"),
                       lp_tokenizer_piece_to_id(t, "\xc4\xa0John")},
         .remove = LP_REMOVE_BASELINE, .token = lp_tokenizer_piece_to_id(t, "\xc4\xa0the")},
        {.objective = {LP_OBJ_LOGPROB, T - 1, lp_tokenizer_piece_to_id(t, "\xc4\xa0Mary"), -1}, .prob = true,
         .remove = LP_REMOVE_DELETE}, /* delete: toward the zero vector */
    };
    for (int c = 0; c < 2; c++) {
        lp_eval_spec *es = &specs[c];
        lp_eval *e;
        assert_int_equal(lp_eval_new(&e, r, es), 0);
        int n = lp_eval_n(e), S = 12;
        float scores[2][64];
        lp_attr_method ms[2] = {LP_ATTR_GXI, LP_ATTR_ROLLOUT};
        for (int i = 0; i < 2; i++) {
            lp_attr_spec sp = {.method = ms[i], .objective = es->objective, .baseline = -1, .layer = -1};
            if (es->prob) sp.objective.kind = LP_OBJ_LOGIT;
            double delta;
            assert_int_equal(lp_attr(scores[i], &delta, r, &sp), 0);
        }
        const float *rows[2] = {scores[0], scores[1]};
        double infid[2], raw[2], noise[12 * 64], drop[12], again[2];
        assert_int_equal(lp_eval_infidelity(e, 2, rows, S, 0.1, 7, infid, raw, noise, drop), 0);
        double fx = lp_eval_fx(e);
        fscale = fabs(fx);
        float *x = malloc((size_t)T * d * sizeof *x);
        const int *ids = lp_run_ids(r);
        double sd = 0.0;
        for (int s = 0; s < S; s++) {
            lp_embed(x, m, ids, NULL, 0, T);
            for (int i = 0; i < n; i++) {
                int p = lp_eval_removable(e)[i];
                sd += noise[s * n + i] * noise[s * n + i];
                for (int k = 0; k < d; k++) {
                    float tok = m->tok_emb[(size_t)ids[p] * d + k],
                          rep = es->remove == LP_REMOVE_BASELINE ? m->tok_emb[(size_t)es->token * d + k] : 0.0f;
                    x[p * d + k] -= (float)noise[s * n + i] * (tok - rep);
                }
            }
            lp_run *p;
            assert_int_equal(lp_run_new_embedded(&p, m, ids, NULL, x, T), 0);
            near(drop[s], fx - f_of(es, lp_run_logits(p, T - 1), m->cfg.vocab, T - 1), "infidelity drop", s);
            lp_run_free(p);
        }
        sd = sqrt(sd / (S * n));
        assert_true(sd > 0.05 && sd < 0.2); /* drawn with sigma 0.1 */
        for (int i = 0; i < 2; i++) {
            double a[12], aa = 0, ad = 0, sq = 0, sq1 = 0;
            for (int s = 0; s < S; s++) {
                a[s] = 0;
                for (int j = 0; j < n; j++) a[s] += noise[s * n + j] * scores[i][lp_eval_removable(e)[j]];
                aa += a[s] * a[s];
                ad += a[s] * drop[s];
            }
            for (int s = 0; s < S; s++) {
                sq += (ad / aa * a[s] - drop[s]) * (ad / aa * a[s] - drop[s]) / S;
                sq1 += (a[s] - drop[s]) * (a[s] - drop[s]) / S;
            }
            assert_true(fabs(infid[i] - sq) <= 1e-12 * (1 + sq));
            assert_true(fabs(raw[i] - sq1) <= 1e-12 * (1 + sq1));
            assert_true(infid[i] <= raw[i] + 1e-12); /* beta is the least-squares scale */
        }
        assert_int_equal(lp_eval_infidelity(e, 2, rows, S, 0.1, 7, again, NULL, NULL, NULL), 0);
        assert_true(again[0] == infid[0] && again[1] == infid[1]);
        assert_int_equal(lp_eval_infidelity(e, 2, rows, S, 0.1, 8, again, NULL, NULL, NULL), 0);
        assert_true(again[0] != infid[0]);
        assert_int_not_equal(lp_eval_infidelity(e, 2, rows, 0, 0.1, 7, again, NULL, NULL, NULL), 0);
        assert_int_not_equal(lp_eval_infidelity(e, 2, rows, S, 0.0, 7, again, NULL, NULL, NULL), 0);
        free(x);
        lp_eval_free(e);
    }
    print_message("  worst difference so far, infidelity's drops included: %.3g\n", worst);
    lp_run_free(r);
    lp_model_free(m);
}

/* Max-sensitivity: the deltas drawn lie in the radius, and every attribution recomputed on
 * the perturbed embeddings gives the ratio whose maximum the engine reports. */
static void max_sensitivity_matches_recomputed_attributions(void **state) {
    (void)state;
    const char *models[2] = {"default", "stories"};
    for (int c = 0; c < 2; c++) {
        lp_model *m = load(models[c]);
        lp_run *r = c ? run_text(m, STORY, true, -1) : run_text(m, IOI, false, -1);
        int T = lp_run_len(r), d = m->cfg.d_model, S = 4;
        lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, T - 1, 5, -1}, .prob = true};
        lp_eval *e;
        assert_int_equal(lp_eval_new(&e, r, &es), 0);
        lp_attr_spec specs[3];
        lp_attr_method ms[3] = {LP_ATTR_GXI, LP_ATTR_IG, LP_ATTR_ROLLOUT};
        float scores[3][64], phi[64];
        const float *rows[3];
        for (int i = 0; i < 3; i++) {
            specs[i] = (lp_attr_spec){.method = ms[i], .objective = {LP_OBJ_LOGIT, T - 1, 5, -1}, .steps = 8,
                                      .baseline = -1, .layer = -1};
            double delta;
            assert_int_equal(lp_attr(scores[i], &delta, r, &specs[i]), 0);
            rows[i] = scores[i];
        }
        float *noise = malloc((size_t)S * T * d * sizeof *noise), *x = malloc((size_t)T * d * sizeof *x);
        double sens[3], again[3], want[3] = {0, 0, 0};
        assert_int_equal(lp_eval_sensitivity(e, 3, specs, rows, S, 0.02, 3, sens, noise), 0);
        double mx = 0.0, mean = 0.0;
        for (size_t j = 0; j < (size_t)S * T * d; j++) {
            mx = fmax(mx, fabs(noise[j]));
            mean += noise[j] / ((double)S * T * d);
        }
        assert_true(mx <= 0.02 * (1 + 1e-5) && mx > 0.019); /* U(-0.02, 0.02) */
        assert_true(fabs(mean) < 1e-3);
        lp_view v;
        lp_run_view(r, LP_ACT_RESID_PRE, 0, -1, &v);
        for (int s = 0; s < S; s++) {
            for (int j = 0; j < T * d; j++) x[j] = v.data[j] + noise[(size_t)s * T * d + j];
            lp_run *p;
            assert_int_equal(lp_run_new_embedded(&p, m, lp_run_ids(r), NULL, x, T), 0);
            for (int i = 0; i < 3; i++) {
                double delta, num = 0, den = 0;
                assert_int_equal(lp_attr(phi, &delta, p, &specs[i]), 0);
                for (int t = 0; t < T; t++) {
                    num += (phi[t] - scores[i][t]) * (double)(phi[t] - scores[i][t]);
                    den += scores[i][t] * (double)scores[i][t];
                }
                want[i] = fmax(want[i], sqrt(num / den));
            }
            lp_run_free(p);
        }
        for (int i = 0; i < 3; i++)
            if (!(fabs(sens[i] - want[i]) <= 1e-3 * want[i] + 1e-7))
                fail_msg("%s %s: max-sensitivity %.9g, recomputed %.9g", models[c], lp_attr_method_name(ms[i]), sens[i], want[i]);
        assert_int_equal(lp_eval_sensitivity(e, 3, specs, rows, S, 0.02, 3, again, NULL), 0);
        assert_true(again[0] == sens[0] && again[2] == sens[2]);
        assert_int_not_equal(lp_eval_sensitivity(e, 3, specs, rows, 0, 0.02, 3, again, NULL), 0);
        assert_int_not_equal(lp_eval_sensitivity(e, 3, specs, rows, S, 0.0, 3, again, NULL), 0);
        free(noise);
        free(x);
        lp_eval_free(e);
        lp_run_free(r);
        lp_model_free(m);
    }
}

static void kendall_tau_matches_hand_counts(void **state) {
    (void)state;
    double a[] = {1, 2, 3, 4}, b[] = {1, 3, 2, 4}, c[] = {4, 3, 2, 1}, k[] = {5, 5, 5, 5};
    assert_true(fabs(lp_kendall_tau(a, a, 4) - 1.0) < 1e-15);
    assert_true(fabs(lp_kendall_tau(a, c, 4) + 1.0) < 1e-15);
    assert_true(fabs(lp_kendall_tau(a, b, 4) - 4.0 / 6.0) < 1e-15); /* 5 concordant, 1 discordant of 6 */
    /* tau-b with ties: (0,1) tied in x, (2,3) tied in y; the other 4 pairs concordant:
     * 4 / sqrt((6 - 1) (6 - 1)) = 0.8. */
    double x[] = {1, 1, 2, 3}, y[] = {1, 2, 3, 3};
    assert_true(fabs(lp_kendall_tau(x, y, 4) - 0.8) < 1e-15);
    assert_true(isnan(lp_kendall_tau(a, k, 4))); /* a constant side has no ranking */
    assert_true(isnan(lp_kendall_tau(a, a, 1)));
}

static void specials_and_the_predicting_position_are_never_removed(void **state) {
    (void)state;
    struct {
        const char *model, *text;
        bool bos;
        int first, first_removable;
    } cases[] = {{"stories", STORY, true, -1, 1},  /* llama2.c's BOS at 0 */
                 {"default", IOI, false, EOT, 1},  /* <|endoftext|> as BOS */
                 {"default", IOI, false, -1, 0}};  /* nothing special: position 0 is content */
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lp_model *m = load(cases[c].model);
        lp_run *r = run_text(m, cases[c].text, cases[c].bos, cases[c].first);
        int T = lp_run_len(r);
        lp_eval_spec es = {.objective = {LP_OBJ_LOGPROB, T - 1, 5, -1}, .prob = true};
        lp_eval *e;
        assert_int_equal(lp_eval_new(&e, r, &es), 0);
        assert_int_equal(lp_eval_removable(e)[0], cases[c].first_removable);
        assert_int_equal(lp_eval_n(e), T - 1 - cases[c].first_removable);
        assert_int_equal(lp_eval_removable(e)[lp_eval_n(e) - 1], T - 2);
        /* The all-removed input keeps exactly the specials and the last position. */
        unsigned char keep[256];
        keep_of(keep, e, NULL, 0, true);
        assert_true(fabs(lp_eval_fempty(e) - explicit_f(r, &es, keep)) <= TOL);
        lp_eval_free(e);
        lp_run_free(r);
        lp_model_free(m);
    }
}

/* ---- the command ---- */

typedef struct {
    lp_session s;
    char *buf;
    size_t len;
} session;

static int exec(session *f, const char *line) {
    free(f->buf);
    f->buf = NULL;
    f->s.out = open_memstream(&f->buf, &f->len);
    int rc = lp_exec(&f->s, line);
    fclose(f->s.out);
    f->s.out = NULL;
    return rc;
}

static void open_session(session *f, const char *model) {
    memset(f, 0, sizeof *f);
    lp_session_init(&f->s, NULL);
    if (lp_store_open(&f->s.store, ":memory:") || lp_session_load(&f->s, model)) fail_msg("%s: %s", model, lp_errmsg());
}

static void close_session(session *f) {
    lp_store_close(f->s.store);
    lp_session_free(&f->s);
    free(f->buf);
}

static void command_prints_every_method_and_marks_the_best(void **state) {
    (void)state;
    session f;
    open_session(&f, "models/default");
    f.s.mode = LP_MODE_JSON;
    assert_int_equal(exec(&f, "run " IOI), 0);
    if (exec(&f, "eval all --target ' Mary' --bins 5")) fail_msg("eval: %s", lp_errmsg());
    json_error_t je;
    json_t *v = json_loadb(f.buf, f.len, 0, &je);
    assert_non_null(v);
    json_t *ms = json_object_get(v, "methods");
    assert_int_equal(json_array_size(ms), LP_ATTR_COUNT);
    int n = (int)json_array_size(json_object_get(v, "removable"));
    assert_int_equal(n, lp_run_len(f.s.run) - 1);
    assert_string_equal(json_string_value(json_object_get(v, "f")), "prob");
    assert_int_equal(json_array_size(json_object_get(v, "bins")), 5);
    double best_comp = -INFINITY;
    const char *best = NULL;
    for (size_t i = 0; i < json_array_size(ms); i++) {
        json_t *m = json_array_get(ms, i);
        assert_int_equal(json_array_size(json_object_get(m, "comprehensiveness")), 5);
        assert_int_equal(json_array_size(json_object_get(m, "deletion")), n + 1);
        assert_int_equal(json_array_size(json_object_get(m, "scores")), lp_run_len(f.s.run));
        double c = json_real_value(json_object_get(m, "comprehensiveness_aopc"));
        if (c > best_comp) best_comp = c, best = json_string_value(json_object_get(m, "method"));
    }
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "best"), "comprehensiveness_aopc")), best);
    json_decref(v);
    /* The table marks the best of each column once. */
    f.s.mode = LP_MODE_TABLE;
    assert_int_equal(exec(&f, "eval all --target ' Mary'"), 0);
    int stars = 0;
    for (char *p = f.buf; (p = strstr(p, " *")); p++) stars++;
    assert_int_equal(stars, 8);
    /* One method: no mark, one row. */
    f.s.mode = LP_MODE_CSV;
    assert_int_equal(exec(&f, "eval ig --vs ' John' --target ' Mary' --remove baseline"), 0);
    assert_null(strchr(f.buf, '*'));
    assert_non_null(strstr(f.buf, "\nig,"));
    close_session(&f);
}

static void refusals_name_the_argument_and_the_fix(void **state) {
    (void)state;
    session f;
    open_session(&f, "models/default");
    assert_int_not_equal(exec(&f, "eval"), 0);
    assert_non_null(strstr(lp_errmsg(), "run"));
    assert_int_equal(exec(&f, "run " IOI), 0);
    static const struct {
        const char *line, *says;
    } bad[] = {
        {"eval --remove mask", "--remove delete or --remove baseline"}, /* GPT-2 has no mask, pad or unk */
        {"eval --remove cut", "use delete, mask or baseline"},
        {"eval nothing", "use all, saliency"},
        {"eval --bins 0", "--bins"},
        {"eval --bins 101", "--bins"},
        {"eval --logodds 0", "--logodds"},
        {"eval --target ' Mary' --vs", "--vs"},
        {"eval --target 'not one token'", "token"},
        {"eval --pos 99", "pos"},
        {"eval --baseline zero --baseline-id 3", "not both"},
        {"eval --samples 0", "--samples"},
        {"eval --sigma 0", "--sigma"},
        {"eval --sigma lots", "--sigma"},
        {"eval --samples 1001", "--samples"},
        {"eval --radius 0", "--radius"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (exec(&f, bad[i].line) == 0) fail_msg("'%s' was accepted", bad[i].line);
        if (!strstr(lp_errmsg(), bad[i].says)) fail_msg("'%s': '%s' does not say '%s'", bad[i].line, lp_errmsg(), bad[i].says);
    }
    assert_int_equal(exec(&f, "run --ids 5"), 0);
    assert_int_not_equal(exec(&f, "eval"), 0);
    assert_non_null(strstr(lp_errmsg(), "no token to remove"));
    close_session(&f); /* encoders' and encoder-decoders' refusals: test_eval_seq2seq.c */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deletion_curves_match_explicit_runs_with_shorter_inputs),
        cmocka_unit_test(mask_curves_match_explicit_runs_on_llama2c),
        cmocka_unit_test(baseline_curves_match_explicit_runs_for_a_logit_difference),
        cmocka_unit_test(occlusion_agrees_with_leave_one_out_by_construction),
        cmocka_unit_test(infidelity_matches_explicit_runs_and_its_formula),
        cmocka_unit_test(max_sensitivity_matches_recomputed_attributions),
        cmocka_unit_test(kendall_tau_matches_hand_counts),
        cmocka_unit_test(specials_and_the_predicting_position_are_never_removed),
        cmocka_unit_test(command_prints_every_method_and_marks_the_best),
        cmocka_unit_test(refusals_name_the_argument_and_the_fix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
