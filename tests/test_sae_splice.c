/* Dictionaries in the forward (sae splice, run/generate --steer and --clamp, sae stats' CE
 * loss recovered) against the float64 reference of tests/fixtures/sae_splice_reference.py
 * (the bundled model with the fixture dictionaries spliced, clamped, zeroed and steered),
 * and the invariants: with the error term a splice gives the original logits, clamping a
 * feature to its own value changes nothing, generation under an edit follows the edited
 * run's argmax, and features on a spliced run read the site's input, not its output.
 *
 * Worst errors measured against the float64 reference (this machine; OpenBLAS Haswell / its
 * own kernel), with the SAELens transcoders, batchtopk and the ln1, mlp_pre and mlp_post
 * sites in: logits 6.1e-6 / 1.0e-5, CE 5.9e-7 / 1.6e-6, feature attributions 6.3e-6 /
 * 1.8e-5 (the skip transcoder on mlp_post, attributions up to 3.1: 5.6e-6 relative); the
 * closure's gap 3.0e-7 / 9.8e-7. The tolerances below leave 1.7x to 3x. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "commands/cmd.h"
#include "helpers.h"
#include "loupe/error.h"
#include "loupe/sae.h"

#define FIX "tests/fixtures/sae"
#define LOGIT_TOL 2e-5 /* float32 forward vs float64, logits of magnitude ~10 */
#define CE_TOL 5e-6
#define SAME_TOL 1e-5  /* the error term, clamping to its own value */
#define ATTR_TOL 3e-5  /* float32 gradients vs autograd in float64, attributions up to ~5 */

static json_t *ref;
static char ids_arg[256];
static double worst_logit, worst_ce, worst_attr, worst_gap;

static int setup(void **state) {
    if (default_session_setup(state)) return -1;
    json_error_t je;
    ref = json_load_file(FIX "/splice_reference.json", 0, &je);
    if (!ref) return -1;
    json_t *ids = json_object_get(ref, "ids");
    size_t i, at = 0;
    json_t *v;
    json_array_foreach(ids, i, v)
        at += (size_t)snprintf(ids_arg + at, sizeof ids_arg - at, "%s%lld", i ? "," : "", json_integer_value(v));
    return 0;
}

static int teardown(void **state) {
    if (*state) default_session_teardown(state); /* NULL when the setup failed */
    json_decref(ref);
    fprintf(stderr, "worst against float64: logits %.3g, CE %.3g, attributions %.3g; closure gap %.3g\n", worst_logit,
            worst_ce, worst_attr, worst_gap);
    return 0;
}

/* |logits of s's run - the reference's| over every position and every vocab_stride-th id. */
static double logit_error(const lp_session *s, const json_t *want) {
    int stride = (int)json_integer_value(json_object_get(ref, "vocab_stride"));
    int T = lp_run_len(s->run);
    assert_int_equal(json_array_size(want), (size_t)T);
    double w = 0;
    for (int t = 0; t < T; t++) {
        const float *lg = lp_run_logits(s->run, t);
        json_t *row = json_array_get(want, (size_t)t);
        for (size_t j = 0; j < json_array_size(row); j++) {
            double e = fabs(lg[j * stride] - json_number_value(json_array_get(row, j)));
            w = e > w ? e : w;
        }
    }
    worst_logit = w > worst_logit ? w : worst_logit;
    return w;
}

/* The largest difference between the logits of two runs of one length. */
static double logits_apart(const lp_run *a, const lp_run *b) {
    int V = lp_run_out_width(a);
    double w = 0;
    for (int t = 0; t < lp_run_len(a); t++)
        for (int v = 0; v < V; v++) {
            double e = fabs(lp_run_logits(a, t)[v] - lp_run_logits(b, t)[v]);
            w = e > w ? e : w;
        }
    return w;
}

static void exec_ok(session_fixture *f, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (exec_line(f->s, &f->buf, &f->len, line, NULL) != LP_OK) fail_msg("%s: %s", line, lp_errmsg());
}

/* "F:V,F:V" from a reference case's [[F, V], ...]. */
static void pairs(const json_t *list, char *out, size_t cap) {
    size_t i, at = 0;
    json_t *p;
    out[0] = 0;
    json_array_foreach(list, i, p)
        at += (size_t)snprintf(out + at, cap - at, "%s%lld:%.9g", i ? "," : "", json_integer_value(json_array_get(p, 0)),
                               json_number_value(json_array_get(p, 1)));
}

/* Every case of the reference through the commands: splice --no-error, run --steer, run
 * --clamp; the zero case through sae stats' ce_zero. */
static void edited_forwards_match_the_float64_reference(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    exec_ok(f, "run --ids %s", ids_arg);
    assert_true(logit_error(s, json_object_get(ref, "logits")) < LOGIT_TOL);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(ref, "cases"), i, c) {
        const char *path = json_string_value(json_object_get(c, "path")), *mode = json_string_value(json_object_get(c, "mode"));
        exec_ok(f, "sae load " FIX "/%s --name c%zu%s", path, i,
                strcmp(path, "gemmascope_jumprelu") == 0 ? " --site blocks.1.hook_resid_mid" : "");
        char steer[256], clamp[256], line[1024];
        pairs(json_object_get(c, "steer"), steer, sizeof steer);
        pairs(json_object_get(c, "clamp"), clamp, sizeof clamp);
        if (strcmp(mode, "no_error") == 0) {
            exec_ok(f, "sae splice c%zu --no-error", i);
            assert_true(logit_error(s, json_object_get(c, "logits")) < LOGIT_TOL);
            exec_ok(f, "sae unsplice c%zu", i);
            /* sae stats: ce_sae is this splice's CE */
            json_t *st;
            snprintf(line, sizeof line, "sae stats c%zu", i);
            assert_int_equal(exec_line(s, &f->buf, &f->len, line, &st), LP_OK);
            json_t *row = json_array_get(st, 0);
            double ce_orig = json_number_value(json_object_get(row, "ce_orig"));
            double ce_sae = json_number_value(json_object_get(row, "ce_sae"));
            double ce_zero = json_number_value(json_object_get(row, "ce_zero"));
            double e1 = fabs(ce_orig - json_number_value(json_object_get(ref, "ce_orig")));
            double e2 = fabs(ce_sae - json_number_value(json_object_get(c, "ce")));
            worst_ce = fmax(worst_ce, fmax(e1, e2));
            assert_true(e1 < CE_TOL && e2 < CE_TOL);
            double rec = (ce_zero - ce_sae) / (ce_zero - ce_orig); /* json keeps 9 digits */
            assert_true(fabs(json_number_value(json_object_get(row, "ce_recovered")) - rec) < 1e-6 * fmax(1, fabs(rec)));
            json_decref(st);
        } else if (strcmp(mode, "zero") == 0) {
            json_t *st;
            snprintf(line, sizeof line, "sae stats c%zu", i);
            assert_int_equal(exec_line(s, &f->buf, &f->len, line, &st), LP_OK);
            double e = fabs(json_number_value(json_object_get(json_array_get(st, 0), "ce_zero")) -
                            json_number_value(json_object_get(c, "ce")));
            worst_ce = fmax(worst_ce, e);
            assert_true(e < CE_TOL);
            json_decref(st);
        } else { /* pass and error: --steer, --clamp (which splices with the error term) */
            exec_ok(f, "run --sae c%zu%s%s%s%s --ids %s", i, steer[0] ? " --steer " : "", steer,
                    clamp[0] ? " --clamp " : "", clamp, ids_arg);
            assert_true(logit_error(s, json_object_get(c, "logits")) < LOGIT_TOL);
        }
    }
    exec_ok(f, "load models/default"); /* drops the dictionaries */
}

/* With the error term kept, every dictionary gives the original logits back; clamping a
 * feature to the value it has changes nothing either (one token: one value). */
static void the_error_term_and_clamping_to_its_own_value_change_nothing(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    const char *dicts[] = {"saelens_standard", "saelens_jumprelu", "saelens_topk", "saelens_gated",
                           "saelens_z_topk_fn", "layers.0", "layers.1.mlp"};
    for (int k = 0; k < 7; k++) {
        exec_ok(f, "run --ids %s", ids_arg);
        lp_run *plain = s->run;
        s->run = NULL; /* kept aside to compare with */
        exec_ok(f, "run --ids %s", ids_arg);
        exec_ok(f, "sae load " FIX "/%s --name d%d", dicts[k], k);
        exec_ok(f, "sae splice d%d", k);
        assert_true(logits_apart(plain, s->run) < SAME_TOL);
        exec_ok(f, "sae drop d%d", k);
        lp_run_free(plain);
    }
    /* one token: a feature clamped to its own activation */
    exec_ok(f, "sae load " FIX "/saelens_standard --name std");
    exec_ok(f, "run --ids 300");
    lp_run *plain = s->run;
    s->run = NULL;
    exec_ok(f, "run --ids 300");
    json_t *fs;
    assert_int_equal(exec_line(s, &f->buf, &f->len, "features --k 1", &fs), LP_OK);
    json_t *top = json_array_get(json_object_get(json_array_get(fs, 0), "features"), 0);
    assert_non_null(top);
    long id = (long)json_integer_value(json_object_get(top, "id"));
    double act = json_number_value(json_object_get(top, "act"));
    assert_true(act > 0.1);
    exec_ok(f, "run --clamp %ld:%.9g --ids 300", id, act);
    assert_true(logits_apart(plain, s->run) < SAME_TOL);
    exec_ok(f, "run --clamp %ld:%.9g --ids 300", id, act + 1.0); /* and a control: another value moves them */
    assert_true(logits_apart(plain, s->run) > 1e-3);
    json_decref(fs);
    lp_run_free(plain);
    exec_ok(f, "load models/default");
}

/* generate --steer goes through the key/value cache a block at a time; each token it picks
 * greedily must be the argmax of the steered run of everything before it. */
static void generation_under_an_edit_follows_the_edited_run(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    exec_ok(f, "sae load " FIX "/saelens_gated --name g");
    exec_ok(f, "sae load " FIX "/saelens_standard --name std");
    exec_ok(f, "sae splice g --no-error");
    exec_ok(f, "run --ids 5,100,200");
    json_t *gen;
    assert_int_equal(exec_line(s, &f->buf, &f->len, "generate 6 --no-stop --sae std --steer 3:2,5:-1", &gen), LP_OK);
    json_t *ids = json_object_get(gen, "ids");
    assert_int_equal(json_array_size(ids), 6);
    char prefix[256] = "5,100,200";
    for (size_t k = 0; k < 6; k++) {
        exec_ok(f, "run --sae std --steer 3:2,5:-1 --ids %s", prefix);
        const float *lg = lp_run_logits(s->run, lp_run_len(s->run) - 1);
        int best = 0;
        for (int v = 1; v < lp_run_out_width(s->run); v++) best = lg[v] > lg[best] ? v : best;
        assert_int_equal(best, (int)json_integer_value(json_array_get(ids, k)));
        size_t at = strlen(prefix);
        snprintf(prefix + at, sizeof prefix - at, ",%d", best);
    }
    json_decref(gen);
    exec_ok(f, "load models/default");
}

/* A splice without the error term leaves the dictionary's output at its site; features still
 * reads what came in. And what cannot be spliced is refused with one line. */
static void features_on_a_spliced_run_read_the_sites_input(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    exec_ok(f, "sae load " FIX "/saelens_jumprelu --name j");
    exec_ok(f, "run --ids %s", ids_arg);
    exec_ok(f, "features --k 5");
    char *plain = strdup(f->buf);
    exec_ok(f, "sae splice --no-error");
    json_t *list;
    assert_int_equal(exec_line(s, &f->buf, &f->len, "sae list", &list), LP_OK);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "splice")), "no_error");
    json_decref(list);
    exec_ok(f, "features --k 5");
    assert_string_equal(f->buf, plain);
    free(plain);
    /* refusals */
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "run --steer 32:1 --ids 5,6", NULL), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "out of range"));
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "run --steer 3 --ids 5,6", NULL), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "FEATURE:VALUE"));
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "run --steer 3:nan --ids 5,6", NULL), LP_OK);
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "run --sae nope --steer 3:1 --ids 5,6", NULL), LP_OK);
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "sae splice nope", NULL), LP_OK);
    /* a site the forward does not edit: q */
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "sae load " FIX "/gemmascope_jumprelu --name q --site "
                                   "blocks.0.attn.hook_q", NULL), LP_OK);
    exec_ok(f, "load models/default");
}

/* sae attr against autograd (the dictionary spliced with its error term as a leaf): every
 * feature's a * dO/da, the error node's err . dO/dy per position, the decoder's constant part,
 * and the closure features + error + constant = grad . y, which must hold to rounding. */
static void feature_attribution_matches_autograd_and_closes(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    exec_ok(f, "run --ids %s", ids_arg);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(ref, "attr_cases"), i, c) {
        const char *path = json_string_value(json_object_get(c, "path"));
        exec_ok(f, "sae load " FIX "/%s --name a%zu", path, i);
        json_t *contrast = json_object_get(c, "contrast"), *got;
        char line[512];
        int at = snprintf(line, sizeof line, "sae attr --sae a%zu --k 100000 --pos %lld --target-id %lld", i,
                          json_integer_value(json_object_get(c, "pos")), json_integer_value(json_object_get(c, "target")));
        if (json_is_integer(contrast)) at += snprintf(line + at, sizeof line - at, " --vs-id %lld", json_integer_value(contrast));
        if (strcmp(json_string_value(json_object_get(c, "objective")), "logprob") == 0)
            snprintf(line + at, sizeof line - at, " --objective logprob");
        if (exec_line(s, &f->buf, &f->len, line, &got) != LP_OK) fail_msg("%s: %s", line, lp_errmsg());
        assert_float_equal(json_number_value(json_object_get(got, "value")), json_number_value(json_object_get(c, "value")),
                           1e-5);
        /* the nodes, as a (T, d_sae) matrix with zeros where none is given */
        json_t *want = json_object_get(c, "attr");
        int T = (int)json_array_size(want), m = (int)json_array_size(json_array_get(want, 0));
        double *mat = calloc((size_t)T * m, sizeof *mat), worst = 0, scale = 0;
        size_t j;
        json_t *nd;
        json_array_foreach(json_object_get(got, "nodes"), j, nd)
            mat[json_integer_value(json_object_get(nd, "pos")) * m + json_integer_value(json_object_get(nd, "feature"))] =
                json_number_value(json_object_get(nd, "attr"));
        for (int t = 0; t < T; t++) {
            for (int k = 0; k < m; k++) {
                double w = json_number_value(json_array_get(json_array_get(want, t), k));
                worst = fmax(worst, fabs(mat[t * m + k] - w));
                scale = fmax(scale, fabs(w));
            }
            double e = json_number_value(json_array_get(json_object_get(got, "error"), t));
            worst = fmax(worst, fabs(e - json_number_value(json_array_get(json_object_get(c, "error"), t))));
        }
        free(mat);
        worst_attr = fmax(worst_attr, worst);
        assert_true(scale > 0.1); /* something to compare */
        assert_true(worst < ATTR_TOL);
        json_t *cl = json_object_get(got, "closure");
        double sum_const = 0, sum_gx = 0;
        for (int t = 0; t < T; t++) {
            sum_const += json_number_value(json_array_get(json_object_get(c, "constant"), t));
            sum_gx += json_number_value(json_array_get(json_object_get(c, "grad_x"), t));
        }
        assert_true(fabs(json_number_value(json_object_get(cl, "constant")) - sum_const) < ATTR_TOL);
        assert_true(fabs(json_number_value(json_object_get(cl, "grad_x")) - sum_gx) < ATTR_TOL);
        double gap = fabs(json_number_value(json_object_get(cl, "gap")));
        worst_gap = fmax(worst_gap, gap);
        assert_true(gap < 1e-5 * fmax(1, fabs(sum_gx)));
        json_decref(got);
    }
    exec_ok(f, "load models/default");
}

/* sae attr over several dictionaries at once: every dictionary's nodes, error nodes and
 * closure are what it gets alone (one backward serves them all), and each closure holds. */
static void several_dictionaries_attribute_as_each_alone(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    exec_ok(f, "run --ids %s", ids_arg);
    static const char *const dicts[] = {"saelens_topk", "layers.1.mlp", "saelens_skip_transcoder", "saelens_batchtopk"};
    for (int d = 0; d < 4; d++) exec_ok(f, "sae load " FIX "/%s --name m%d", dicts[d], d);
    json_t *all;
    const char *opts = "--k 100000 --pos 9 --target-id 13 --vs-id 265";
    char line[512];
    snprintf(line, sizeof line, "sae attr --sae m0,m1,m2,m3 %s", opts);
    if (exec_line(s, &f->buf, &f->len, line, &all) != LP_OK) fail_msg("%s: %s", line, lp_errmsg());
    json_t *saes = json_object_get(all, "saes"), *nodes = json_object_get(all, "nodes");
    assert_int_equal(json_array_size(saes), 4);
    double total = 0, gx = 0;
    size_t matched = 0;
    for (int d = 0; d < 4; d++) {
        json_t *one;
        snprintf(line, sizeof line, "sae attr --sae m%d %s", d, opts);
        assert_int_equal(exec_line(s, &f->buf, &f->len, line, &one), LP_OK);
        json_t *part = json_array_get(saes, (size_t)d);
        char name[16];
        snprintf(name, sizeof name, "m%d", d);
        assert_string_equal(json_string_value(json_object_get(part, "sae")), name);
        assert_true(json_equal(json_object_get(part, "error"), json_object_get(one, "error")));
        assert_true(json_equal(json_object_get(part, "closure"), json_object_get(one, "closure")));
        json_t *cl = json_object_get(one, "closure");
        assert_true(fabs(json_number_value(json_object_get(cl, "gap"))) <
                    1e-5 * fmax(1, fabs(json_number_value(json_object_get(cl, "grad_x")))));
        total += json_number_value(json_object_get(cl, "sum")), gx += json_number_value(json_object_get(cl, "grad_x"));
        /* its nodes, in the same order, are the ones of all tagged with its name */
        size_t i = 0, j;
        json_t *nd;
        json_array_foreach(nodes, j, nd) {
            if (strcmp(json_string_value(json_object_get(nd, "sae")), name) != 0) continue;
            json_t *want = json_array_get(json_object_get(one, "nodes"), i++);
            assert_non_null(want);
            json_object_del(nd, "sae");
            assert_true(json_equal(nd, want));
            json_object_set_new(nd, "sae", json_string(name));
        }
        assert_int_equal(i, json_array_size(json_object_get(one, "nodes")));
        matched += i;
        json_decref(one);
    }
    assert_int_equal(matched, json_array_size(nodes));
    json_t *cl = json_object_get(all, "closure");
    assert_true(fabs(json_number_value(json_object_get(cl, "sum")) - total) < 1e-6 * fmax(1, fabs(total)));
    assert_true(fabs(json_number_value(json_object_get(cl, "grad_x")) - gx) < 1e-6 * fmax(1, fabs(gx)));
    json_decref(all);
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "sae attr --sae m0,m0", NULL), LP_OK);
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, "sae attr --sae m0,nope", NULL), LP_OK);
    exec_ok(f, "load models/default");
}

/* "1,2,3" from a json array of ids. */
static void id_list(const json_t *ids, char *out, size_t cap) {
    size_t i, at = 0;
    json_t *v;
    json_array_foreach(ids, i, v) at += (size_t)snprintf(out + at, cap - at, "%s%lld", i ? "," : "", json_integer_value(v));
}

/* sae patch against the float64 reference: every feature whose activation differs, the error
 * term and everything, patched from the corrupted run into the clean one (noising), one at a
 * time, read as the logit difference at the last position. */
static void feature_patching_matches_the_float64_reference(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    char corrupt[256];
    id_list(json_object_get(ref, "corrupt_ids"), corrupt, sizeof corrupt);
    exec_ok(f, "run --ids %s", ids_arg);
    size_t i;
    json_t *c;
    double worst = 0;
    json_array_foreach(json_object_get(ref, "patch_cases"), i, c) {
        exec_ok(f, "sae load " FIX "/%s --name p%zu", json_string_value(json_object_get(c, "path")), i);
        json_t *pos = json_object_get(c, "pos"), *got;
        char line[1024];
        int at = snprintf(line, sizeof line, "sae patch --sae p%zu --corrupt-ids %s --k 100000 --target-id %lld --vs-id %lld",
                          i, corrupt, json_integer_value(json_object_get(c, "target")),
                          json_integer_value(json_object_get(c, "contrast")));
        if (json_is_integer(pos)) snprintf(line + at, sizeof line - at, " --pos %lld", json_integer_value(pos));
        if (exec_line(s, &f->buf, &f->len, line, &got) != LP_OK) fail_msg("%s: %s", line, lp_errmsg());
        double clean = json_number_value(json_object_get(got, "clean"));
        worst = fmax(worst, fabs(clean - json_number_value(json_object_get(c, "clean"))));
        worst = fmax(worst, fabs(json_number_value(json_object_get(got, "corrupt")) -
                                 json_number_value(json_object_get(c, "corrupt"))));
        worst = fmax(worst, fabs(json_number_value(json_object_get(json_object_get(got, "all"), "value")) -
                                 json_number_value(json_object_get(c, "all"))));
        json_t *want = json_object_get(c, "features"), *nodes = json_object_get(got, "nodes"), *nd;
        assert_int_equal(json_integer_value(json_object_get(got, "changed")), json_array_size(want));
        assert_int_equal(json_array_size(nodes), json_array_size(want) + 1); /* and the error term */
        size_t j;
        double last = INFINITY;
        json_array_foreach(nodes, j, nd) {
            json_t *feat = json_object_get(nd, "feature");
            double v = json_number_value(json_object_get(nd, "value")), w = NAN, d = json_number_value(json_object_get(nd, "delta"));
            assert_true(fabs(d - (v - clean)) < 1e-6);
            assert_true(fabs(d) <= last); /* strongest first */
            last = fabs(d);
            if (!json_is_integer(feat)) {
                w = json_number_value(json_object_get(c, "error"));
            } else {
                size_t k;
                json_t *p;
                json_array_foreach(want, k, p)
                    if (json_integer_value(json_array_get(p, 0)) == json_integer_value(feat))
                        w = json_number_value(json_array_get(p, 1));
            }
            assert_false(isnan(w)); /* a feature the reference has too */
            worst = fmax(worst, fabs(v - w));
        }
        json_decref(got);
    }
    fprintf(stderr, "feature patching against float64: %.3g\n", worst);
    worst_logit = fmax(worst_logit, worst);
    assert_true(worst < LOGIT_TOL);
    exec_ok(f, "load models/default");
}

/* The independent forward for sae patch over several dictionaries: at position pos, the
 * sites listed take the corrupted run's rows (what patching every feature and the error term
 * of a dictionary whose decoder reads nothing but its features gives). */
typedef struct {
    int pos, n;
    lp_act_kind kind[2];
    int layer[2], width[2];
    const float *rows[2];
} row_copy;

static void copy_rows(void *ctx, int layer, lp_act_kind site, float *rows, int n) {
    const row_copy *c = ctx;
    for (int i = 0; i < c->n; i++)
        if (site == c->kind[i] && layer == c->layer[i] && c->pos < n)
            memcpy(rows + (size_t)c->pos * c->width[i], c->rows[i] + (size_t)c->pos * c->width[i],
                   (size_t)c->width[i] * sizeof *rows);
}

/* sae patch over several dictionaries: each one's nodes, changed count and "all" are what
 * sae patch gives it alone, ranked together; the shared "all" patches every dictionary in one
 * forward, checked against a forward that copies the corrupted run's rows at both sites. */
static void several_dictionaries_patch_as_each_alone(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    char corrupt[256], line[1024];
    id_list(json_object_get(ref, "corrupt_ids"), corrupt, sizeof corrupt);
    exec_ok(f, "run --ids %s", ids_arg);
    /* z and mlp_post of layer 0 (decoders that read only their features), and a transcoder */
    static const char *const dicts[] = {"saelens_z_topk_fn", "saelens_topk_rescale", "layers.1.mlp"};
    for (int d = 0; d < 3; d++) exec_ok(f, "sae load " FIX "/%s --name q%d", dicts[d], d);
    const char *opts = "--k 100000 --pos 5 --target-id 2047 --vs-id 271";
    json_t *all, *one;
    snprintf(line, sizeof line, "sae patch --sae q0,q1,q2 --corrupt-ids %s %s", corrupt, opts);
    if (exec_line(s, &f->buf, &f->len, line, &all) != LP_OK) fail_msg("%s: %s", line, lp_errmsg());
    json_t *saes = json_object_get(all, "saes"), *nodes = json_object_get(all, "nodes");
    assert_int_equal(json_array_size(saes), 3);
    long long changed = 0;
    size_t matched = 0;
    for (int d = 0; d < 3; d++) {
        snprintf(line, sizeof line, "sae patch --sae q%d --corrupt-ids %s %s", d, corrupt, opts);
        assert_int_equal(exec_line(s, &f->buf, &f->len, line, &one), LP_OK);
        json_t *part = json_array_get(saes, (size_t)d);
        char name[16], prefix[16];
        snprintf(name, sizeof name, "q%d", d);
        snprintf(prefix, sizeof prefix, "q%d/", d);
        assert_string_equal(json_string_value(json_object_get(part, "sae")), name);
        assert_true(json_equal(json_object_get(part, "changed"), json_object_get(one, "changed")));
        assert_true(json_equal(json_object_get(part, "all"), json_object_get(one, "all")));
        changed += json_integer_value(json_object_get(one, "changed"));
        size_t i = 0, j; /* its nodes, in the same order, are the ones of all tagged with its name */
        json_t *nd;
        json_array_foreach(nodes, j, nd) {
            if (strcmp(json_string_value(json_object_get(nd, "sae")), name) != 0) continue;
            json_t *want = json_array_get(json_object_get(one, "nodes"), i++), *cp = json_deep_copy(nd);
            assert_non_null(want);
            const char *nm = json_string_value(json_object_get(cp, "node"));
            assert_true(strncmp(nm, prefix, strlen(prefix)) == 0);
            json_object_set_new(cp, "node", json_string(nm + strlen(prefix)));
            json_object_del(cp, "sae");
            assert_true(json_equal(cp, want));
            json_decref(cp);
        }
        assert_int_equal(i, json_array_size(json_object_get(one, "nodes")));
        matched += i;
        json_decref(one);
    }
    assert_int_equal(matched, json_array_size(nodes));
    assert_int_equal(json_integer_value(json_object_get(all, "changed")), changed);
    json_decref(all);

    /* the shared "all" of z and mlp_post: both sites' rows at position 5 from the corrupted run */
    snprintf(line, sizeof line, "sae patch --sae q0,q1 --corrupt-ids %s %s", corrupt, opts);
    assert_int_equal(exec_line(s, &f->buf, &f->len, line, &all), LP_OK);
    const lp_model *m = s->model;
    int T = lp_run_len(s->run);
    lp_run *bad, *r;
    int ids[64];
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(ref, "corrupt_ids"), i, v) ids[i] = (int)json_integer_value(v);
    assert_int_equal(lp_run_new(&bad, m, ids, T), LP_OK);
    row_copy rc = {.pos = 5, .n = 2, .kind = {LP_ACT_Z, LP_ACT_MLP_POST}, .layer = {0, 0}, .width = {64, 256}};
    lp_view vz, vm;
    assert_int_equal(lp_run_view(bad, LP_ACT_Z, 0, -1, &vz), LP_OK);
    assert_int_equal(lp_run_view(bad, LP_ACT_MLP_POST, 0, -1, &vm), LP_OK);
    rc.rows[0] = vz.data, rc.rows[1] = vm.data;
    lp_edit ed = {copy_rows, &rc};
    assert_int_equal(lp_run_new_edited(&r, m, lp_run_ids(s->run), NULL, T, &ed), LP_OK);
    const float *lg = lp_run_logits(r, T - 1);
    double want = (double)lg[2047] - lg[271], got = json_number_value(json_object_get(json_object_get(all, "all"), "value"));
    double alone[2];
    for (int d = 0; d < 2; d++)
        alone[d] = json_number_value(json_object_get(json_object_get(json_array_get(json_object_get(all, "saes"), (size_t)d), "all"), "value"));
    fprintf(stderr, "patching z and mlp_post at once: %.6f, rows copied %.6f (each alone %.4f, %.4f)\n", got, want,
            alone[0], alone[1]);
    assert_true(fabs(got - want) < SAME_TOL * fmax(1, fabs(want)));
    assert_true(fabs(got - alone[0]) > 1e-3 && fabs(got - alone[1]) > 1e-3); /* both edits count */
    lp_run_free(r), lp_run_free(bad);
    json_decref(all);
    snprintf(line, sizeof line, "sae patch --sae q0,q0 --corrupt-ids %s", corrupt);
    assert_int_not_equal(exec_line(s, &f->buf, &f->len, line, NULL), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "--sae names q0 twice"));
    exec_ok(f, "load models/default");
}

/* The invariants of patching by feature, on the bundled model and dictionary (its residual
 * stream between the layers, so the site is the whole state there): patching every feature
 * and the error term gives the corrupted run's logits at every position, patching nothing
 * the clean run's, and one feature patched from activations that hold a value v everywhere
 * is the clamp to v. */
static void feature_patching_invariants(void **state) {
    (void)state;
    const lp_model *m = ((session_fixture *)*state)->s->model;
    lp_sae *sae;
    assert_int_equal(lp_sae_load(&sae, "models/default-sae"), LP_OK);
    const lp_sae_info *in = lp_sae_get_info(sae);
    int clean_ids[] = {464, 5335, 290, 1757, 1816, 284, 262, 3650}, bad_ids[] = {464, 5335, 290, 1757, 1816, 284, 262, 1110};
    for (int i = 0; i < 8; i++) clean_ids[i] %= 2048, bad_ids[i] %= 2048;
    int T = 8, d = in->d_out, ns = in->d_sae, V = 2048;
    lp_run *clean, *bad;
    assert_int_equal(lp_run_new(&clean, m, clean_ids, T), LP_OK);
    assert_int_equal(lp_run_new(&bad, m, bad_ids, T), LP_OK);
    float *acts = malloc((size_t)T * ns * sizeof *acts), *err = malloc((size_t)T * d * sizeof *err);
    float *lg = malloc((size_t)V * sizeof *lg), *lg2 = malloc((size_t)V * sizeof *lg2);
    int *every = malloc((size_t)ns * sizeof *every);
    for (int k = 0; k < ns; k++) every[k] = k;
    lp_view x;
    assert_int_equal(lp_run_view(bad, LP_ACT_RESID_PRE, 1, -1, &x), LP_OK);
    assert_int_equal(lp_sae_patch_source(sae, x.data, x.data, T, acts, err), LP_OK);
    lp_sae_edit ed = {.sae = sae, .kind = LP_ACT_RESID_PRE, .out_kind = LP_ACT_RESID_PRE, .layer = 1, .out_layer = 1,
                      .mode = LP_SAE_SPLICE, .src_acts = acts, .src_err = err, .src_rows = T, .patch_pos = -1,
                      .n_patch = ns, .patch_id = every, .patch_error = true};
    double w_all = 0, w_none = 0, w_clamp = 0, moved = 0;
    for (int t = 0; t < T; t++) {
        assert_int_equal(lp_sae_edited_logits(clean, &ed, 1, t, lg), LP_OK);
        for (int v = 0; v < V; v++) w_all = fmax(w_all, fabs(lg[v] - lp_run_logits(bad, t)[v]));
    }
    ed.n_patch = 0, ed.patch_error = false;
    for (int t = 0; t < T; t++) {
        assert_int_equal(lp_sae_edited_logits(clean, &ed, 1, t, lg), LP_OK);
        for (int v = 0; v < V; v++) w_none = fmax(w_none, fabs(lg[v] - lp_run_logits(clean, t)[v]));
    }
    /* the strongest feature of the clean run's last position, set to 3.5 everywhere */
    assert_int_equal(lp_run_view(clean, LP_ACT_RESID_PRE, 1, -1, &x), LP_OK);
    assert_int_equal(lp_sae_patch_source(sae, x.data, x.data, T, acts, err), LP_OK);
    int f = 0;
    for (int k = 1; k < ns; k++) f = acts[(size_t)(T - 1) * ns + k] > acts[(size_t)(T - 1) * ns + f] ? k : f;
    for (int t = 0; t < T; t++) acts[(size_t)t * ns + f] = 3.5f;
    float v = 3.5f;
    ed.n_patch = 1, ed.patch_id = &f;
    lp_sae_edit cl = {.sae = sae, .kind = LP_ACT_RESID_PRE, .out_kind = LP_ACT_RESID_PRE, .layer = 1, .out_layer = 1,
                      .mode = LP_SAE_SPLICE, .n_clamp = 1, .clamp_id = &f, .clamp_value = &v};
    assert_int_equal(lp_sae_edited_logits(clean, &ed, 1, T - 1, lg), LP_OK);
    assert_int_equal(lp_sae_edited_logits(clean, &cl, 1, T - 1, lg2), LP_OK);
    for (int k = 0; k < V; k++) {
        w_clamp = fmax(w_clamp, fabs(lg[k] - lg2[k]));
        moved = fmax(moved, fabs(lg[k] - lp_run_logits(clean, T - 1)[k]));
    }
    fprintf(stderr, "patching: everything vs corrupted %.3g, nothing vs clean %.3g, one feature vs clamp %.3g\n", w_all,
            w_none, w_clamp);
    assert_true(w_all < SAME_TOL);
    assert_true(w_none < SAME_TOL);
    assert_true(w_clamp < 1e-6);
    assert_true(moved > 1e-2); /* the control: the clamp does something */
    /* refused: a position out of range, a feature out of range, another length */
    lp_sae_editor *E = NULL;
    ed.patch_pos = T;
    assert_int_not_equal(lp_sae_editor_new(&E, &ed, 1), LP_OK);
    ed.patch_pos = -1, f = ns;
    assert_int_not_equal(lp_sae_editor_new(&E, &ed, 1), LP_OK);
    f = 0, ed.src_rows = T - 1;
    assert_int_not_equal(lp_sae_edited_logits(clean, &ed, 1, T - 1, lg), LP_OK);
    assert_non_null(strstr(lp_errmsg(), "positions"));
    free(acts), free(err), free(lg), free(lg2), free(every);
    lp_run_free(clean), lp_run_free(bad);
    lp_sae_free(sae);
}

/* On one token a feature patched from the corrupted run is the clamp to the corrupted run's
 * value (run --clamp); the command's errors. */
static void a_patched_feature_is_a_clamp_to_the_other_runs_value(void **state) {
    session_fixture *f = *state;
    lp_session *s = f->s;
    exec_ok(f, "sae load models/default-sae --name ds");
    exec_ok(f, "run --ids 300");
    json_t *got;
    assert_int_equal(exec_line(s, &f->buf, &f->len, "sae patch --corrupt-ids 301 --target-id 5 --vs-id 9", &got), LP_OK);
    json_t *nd = json_array_get(json_object_get(got, "nodes"), 0);
    if (!json_is_integer(json_object_get(nd, "feature"))) nd = json_array_get(json_object_get(got, "nodes"), 1);
    int feat = (int)json_integer_value(json_object_get(nd, "feature"));
    double v = json_number_value(json_object_get(nd, "value")), act = json_number_value(json_object_get(nd, "act_corrupt"));
    exec_ok(f, "run --clamp %d:%.9g --ids 300", feat, act);
    const float *lg = lp_run_logits(s->run, 0);
    assert_true(fabs(((double)lg[5] - lg[9]) - v) < SAME_TOL);
    json_decref(got);
    /* both ways on the bundled dictionary's residual site: everything patched is the other run */
    exec_ok(f, "run When Mary and John went to the store, John gave a drink to");
    for (int denoise = 0; denoise < 2; denoise++) {
        char line[256];
        snprintf(line, sizeof line, "sae patch --corrupt \"When Mary and John went to the store, Mary gave a drink to\"%s",
                 denoise ? " --denoise" : "");
        assert_int_equal(exec_line(s, &f->buf, &f->len, line, &got), LP_OK);
        double clean = json_number_value(json_object_get(got, "clean")), bad = json_number_value(json_object_get(got, "corrupt"));
        double all = json_number_value(json_object_get(json_object_get(got, "all"), "value"));
        assert_true(fabs(clean - bad) > 0.1); /* the two runs differ */
        assert_true(fabs(all - (denoise ? clean : bad)) < SAME_TOL);
        assert_string_equal(json_string_value(json_object_get(got, "direction")), denoise ? "denoising" : "noising");
        json_decref(got);
    }
    exec_ok(f, "run --ids 300");
    const char *bad[][2] = {
        {"sae patch --corrupt-ids 301,302 --target-id 5", "same length"},
        {"sae patch --target-id 5", "--corrupt"},
        {"sae patch --corrupt-ids 301 --pos 3", "out of range"},
        {"sae patch --corrupt-ids 301 --sae nope", "nope"},
        {"sae patch --corrupt-ids 301 --target-id 5 --vs-id 5", "same token"},
        {"sae patch --corrupt-ids 301 --k 0", "--k"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_not_equal(exec_line(s, &f->buf, &f->len, bad[i][0], NULL), LP_OK);
        if (!strstr(lp_errmsg(), bad[i][1])) fail_msg("%s: '%s' lacks '%s'", bad[i][0], lp_errmsg(), bad[i][1]);
    }
    exec_ok(f, "load models/default");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(edited_forwards_match_the_float64_reference),
        cmocka_unit_test(the_error_term_and_clamping_to_its_own_value_change_nothing),
        cmocka_unit_test(generation_under_an_edit_follows_the_edited_run),
        cmocka_unit_test(features_on_a_spliced_run_read_the_sites_input),
        cmocka_unit_test(feature_attribution_matches_autograd_and_closes),
        cmocka_unit_test(several_dictionaries_attribute_as_each_alone),
        cmocka_unit_test(feature_patching_matches_the_float64_reference),
        cmocka_unit_test(several_dictionaries_patch_as_each_alone),
        cmocka_unit_test(feature_patching_invariants),
        cmocka_unit_test(a_patched_feature_is_a_clamp_to_the_other_runs_value),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
