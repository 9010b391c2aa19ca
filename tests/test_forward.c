/* The forward pass against a float64 PyTorch reference (tests/fixtures), its invariants,
 * the key/value-cache path against the full run, and reduced-precision checkpoints. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "helpers.h"
#include "kernels/expf8.h"
#include "kernels/forward.h"
#include "kernels/gelu_erf.h"
#include "kernels/vmath.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/lens.h"
#include "loupe/model.h"
#include "loupe/run.h"

#define TOL 1e-4

/* Max |a - b| over a nested JSON array (any depth) and a strided view walk in row-major order. */
static double max_err_flat(json_t *expected, const float *got, size_t *at) {
    double worst = 0;
    if (json_is_array(expected)) {
        size_t i;
        json_t *e;
        json_array_foreach(expected, i, e) {
            double w = max_err_flat(e, got, at);
            if (w > worst) worst = w;
        }
        return worst;
    }
    double d = fabs(json_number_value(expected) - got[(*at)++]);
    return isnan(d) ? INFINITY : d;
}

/* Copies a view into a contiguous buffer (row-major). */
static float *gather(const lp_view *v) {
    size_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= (size_t)v->shape[i];
    float *out = malloc(n * sizeof *out);
    size_t k = 0;
    int idx[4] = {0};
    for (size_t e = 0; e < n; e++) {
        long off = 0;
        for (int i = 0; i < v->ndim; i++) off += idx[i] * v->stride[i];
        out[k++] = v->data[off];
        for (int i = v->ndim - 1; i >= 0; i--) {
            if (++idx[i] < v->shape[i]) break;
            idx[i] = 0;
        }
    }
    return out;
}

/* Compares one per-layer capture against expected[l] for every layer. */
static double compare_layers(const lp_run *r, lp_act_kind kind, json_t *expected, int n_layer) {
    double worst = 0;
    for (int l = 0; l < n_layer; l++) {
        lp_view v;
        assert_int_equal(lp_run_view(r, kind, l, -1, &v), LP_OK);
        float *flat = gather(&v);
        size_t at = 0;
        double w = max_err_flat(json_array_get(expected, l), flat, &at);
        free(flat);
        if (w > worst) worst = w;
    }
    return worst;
}

static void forward_matches_pytorch_reference(void **state) {
    (void)state;
    fixture_model models[16];
    int n = read_models(models, 16);
    assert_true(n >= 5);
    for (int i = 0; i < n; i++) {
        fixture_model *fm = &models[i];
        char *dir = make_temp_dir();
        char mdir[640], path[640];
        snprintf(mdir, sizeof mdir, "%.300s/%.60s", dir, fm->name);
        assert_int_equal(mkmodel(mdir, fm->args), 0);
        snprintf(path, sizeof path, "tests/fixtures/%.60s.json", fm->name);
        json_error_t jerr;
        json_t *exp = json_load_file(path, 0, &jerr);
        assert_non_null(exp);
        lp_model *m;
        int rc = lp_model_load(&m, mdir, NULL);
        if (rc) fail_msg("%s: %s", fm->name, lp_errmsg());
        const lp_config *c = lp_model_config(m);
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fm->ids, fm->n), LP_OK);

        lp_view v;
        assert_int_equal(lp_run_view(r, LP_ACT_LOGITS, 0, -1, &v), LP_OK);
        size_t at = 0;
        double e_logits = max_err_flat(json_object_get(exp, "logits"), v.data, &at);
        assert_int_equal(at, (size_t)fm->n * c->vocab);
        double e_attn = compare_layers(r, LP_ACT_PATTERN, json_object_get(exp, "attn"), c->n_layer);
        double e_resid = compare_layers(r, LP_ACT_RESID_PRE, json_object_get(exp, "resid"), c->n_layer);
        double e_attn_out = compare_layers(r, LP_ACT_ATTN_OUT, json_object_get(exp, "attn_out"), c->n_layer);
        double e_mlp_out = compare_layers(r, LP_ACT_MLP_OUT, json_object_get(exp, "mlp_out"), c->n_layer);
        print_message("  %-22s logits %.2e  attn %.2e  resid %.2e  attn_out %.2e  mlp_out %.2e\n", fm->name, e_logits,
                      e_attn, e_resid, e_attn_out, e_mlp_out);
        assert_true(e_logits < TOL);
        assert_true(e_attn < TOL);
        assert_true(e_resid < TOL);
        assert_true(e_attn_out < TOL);
        assert_true(e_mlp_out < TOL);
        lp_run_free(r);
        lp_model_free(m);
        json_decref(exp);
        rm_tree(dir);
    }
}

/* How many fixture models tests/fixtures/models.txt lists. */
static int fixture_count(void) {
    fixture_model models[16];
    return read_models(models, 16);
}

/* Loads fixture model i into a temp dir; returns the model (dir freed by caller). */
static lp_model *load_fixture(int i, char **dir_out, fixture_model *fm) {
    fixture_model models[16];
    int n = read_models(models, 16);
    assert_true(i < n);
    *fm = models[i];
    char *dir = make_temp_dir();
    char mdir[640];
    snprintf(mdir, sizeof mdir, "%s/m", dir);
    assert_int_equal(mkmodel(mdir, fm->args), 0);
    lp_model *m;
    assert_int_equal(lp_model_load(&m, mdir, NULL), LP_OK);
    *dir_out = dir;
    return m;
}

static void attention_rows_sum_to_one_and_are_causal(void **state) {
    (void)state;
    for (int i = 0, n = fixture_count(); i < n; i++) {
        char *dir;
        fixture_model fm;
        lp_model *m = load_fixture(i, &dir, &fm);
        const lp_config *c = lp_model_config(m);
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fm.ids, fm.n), LP_OK);
        for (int l = 0; l < c->n_layer; l++)
            for (int h = 0; h < c->n_head; h++) {
                lp_view v;
                assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, l, h, &v), LP_OK);
                int window = lp_model_layer_window(m, l); /* Gemma 2's sliding layers: keys q - window < k <= q */
                const float *st = lp_run_pattern_stats(r, l, h); /* each row's entropy and maximum */
                for (int q = 0; q < fm.n; q++) {
                    double sum = 0, ent = 0;
                    float mx = 0;
                    for (int k = 0; k < fm.n; k++) {
                        float p = v.data[q * v.stride[0] + k];
                        if (k > q || (window && k <= q - window)) assert_true(p == 0.0f);
                        if (window && k > q - window && k <= q) assert_true(p > 0.0f);
                        assert_true(p >= 0.0f);
                        sum += p;
                        if (p > 0) ent -= p * log((double)p);
                        mx = p > mx ? p : mx;
                    }
                    assert_true(fabs(sum - 1.0) < 1e-5);
                    assert_true(st[2 * q + 1] == mx);
                    assert_true(fabs(st[2 * q] - ent) < 2e-6);
                }
            }
        /* The residual stream adds up: resid_post = resid_pre + attn_out + mlp_out. */
        for (int l = 0; l < c->n_layer; l++) {
            lp_view pre, post, a, mo;
            lp_run_view(r, LP_ACT_RESID_PRE, l, -1, &pre);
            lp_run_view(r, LP_ACT_RESID_POST, l, -1, &post);
            lp_run_view(r, LP_ACT_ATTN_OUT, l, -1, &a);
            lp_run_view(r, LP_ACT_MLP_OUT, l, -1, &mo);
            for (int t = 0; t < fm.n * c->d_model; t++)
                assert_true(fabs(post.data[t] - (pre.data[t] + a.data[t] + mo.data[t])) < 1e-5);
        }
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
}

/* Feeding a prompt then single tokens through the key/value cache gives the same logits
 * as the full captured run at every position. */
static void kv_cache_steps_match_full_run(void **state) {
    (void)state;
    for (int i = 0, n = fixture_count(); i < n; i++) {
        char *dir;
        fixture_model fm;
        lp_model *m = load_fixture(i, &dir, &fm);
        int V = lp_model_config(m)->vocab;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fm.ids, fm.n), LP_OK);
        lp_generator *g;
        assert_int_equal(lp_generator_new(&g, m, fm.n), LP_OK);
        const float *lg;
        int first = 4;
        assert_int_equal(lp_generator_feed(g, fm.ids, first, &lg), LP_OK);
        for (int t = first - 1; t < fm.n; t++) {
            if (t >= first) assert_int_equal(lp_generator_feed(g, &fm.ids[t], 1, &lg), LP_OK);
            const float *want = lp_run_logits(r, t);
            for (int k = 0; k < V; k++) assert_true(fabs(lg[k] - want[k]) < 1e-4);
        }
        assert_int_equal(lp_generator_feed(g, fm.ids, 1, &lg), LP_ERANGE); /* the cache is full */
        lp_generator_free(g);
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
}

/* Past one block of queries (the forward takes 64 at a time) the captured run still agrees
 * with one-token steps, which use a separate attention loop, and its rows stay causal. */
static void long_sequences_match_stepwise_decoding(void **state) {
    (void)state;
    const char *archs[] = {"--arch gpt2 --ctx 256 --std 0.3 --seed 21", "--arch llama --kv-heads 2 --ctx 256 --std 0.3 --seed 22"};
    for (int a = 0; a < 2; a++) {
        char *dir = make_temp_dir();
        char mdir[600];
        snprintf(mdir, sizeof mdir, "%s/m", dir);
        assert_int_equal(mkmodel(mdir, archs[a]), 0);
        lp_model *m;
        assert_int_equal(lp_model_load(&m, mdir, NULL), LP_OK);
        int T = 200, ids[200], V = lp_model_config(m)->vocab;
        for (int t = 0; t < T; t++) ids[t] = (t * 37 + 11) % V;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, ids, T), LP_OK);
        lp_generator *g;
        assert_int_equal(lp_generator_new(&g, m, T), LP_OK);
        const float *lg;
        assert_int_equal(lp_generator_feed(g, ids, 70, &lg), LP_OK); /* a block that spans two chunks */
        double worst = 0;
        for (int t = 69; t < T; t++) {
            if (t >= 70) assert_int_equal(lp_generator_feed(g, &ids[t], 1, &lg), LP_OK);
            const float *want = lp_run_logits(r, t);
            for (int k = 0; k < V; k++) worst = fmax(worst, fabs(lg[k] - want[k]));
        }
        print_message("  %s: worst logit difference %.2e over positions 69..199\n", a ? "llama" : "gpt2", worst);
        assert_true(worst < 1e-4);
        lp_view v;
        assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, 1, 3, &v), LP_OK);
        for (int q = 0; q < T; q++) {
            double sum = 0;
            for (int k = 0; k < T; k++) {
                if (k > q) assert_true(v.data[q * v.stride[0] + k] == 0.0f);
                sum += v.data[q * v.stride[0] + k];
            }
            assert_true(fabs(sum - 1) < 1e-5);
        }
        lp_generator_free(g);
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
}

/* The logit lens at the last row is the model's own output; at row 0 it reads the
 * embeddings; the top-k it reports are the largest probabilities, in order. */
/* Packed runs (lp_run_new_batch) against lone runs of the same sequences: every capture of
 * every layer within PACK_TOL of max(|value|, 1) (a product rounds a row by the rows beside
 * it: within about 3e-5 here), and the same batch again to the bit (what a dataset's shards
 * and resume rely on). Sequences of 1 (the decode path), n, 5 and 2 tokens; every fixture
 * architecture, and a BERT classifier with token types (bidirectional attention, a head
 * read from each sequence's first row). */
#define PACK_TOL 2e-4

static const lp_act_kind PACK_KINDS[] = {LP_ACT_RESID_PRE, LP_ACT_LN1, LP_ACT_LN1_SCALE, LP_ACT_Q, LP_ACT_K, LP_ACT_V,
                                         LP_ACT_PATTERN, LP_ACT_Z, LP_ACT_ATTN_OUT, LP_ACT_RESID_MID, LP_ACT_LN2,
                                         LP_ACT_LN2_SCALE, LP_ACT_MLP_PRE, LP_ACT_MLP_UP, LP_ACT_MLP_POST,
                                         LP_ACT_MLP_OUT, LP_ACT_RESID_POST, LP_ACT_LN_FINAL, LP_ACT_LN_FINAL_SCALE,
                                         LP_ACT_LOGITS, LP_ACT_HEAD_HIDDEN};

/* Worst |a - b| / max(|a|, 1) over every capture of runs a and b (same shapes); *bits: some
 * float differs at all. */
static double runs_apart(const lp_run *a, const lp_run *b, bool *bits) {
    const lp_config *c = lp_model_config(lp_run_model(a));
    double worst = 0;
    for (size_t k = 0; k < sizeof PACK_KINDS / sizeof *PACK_KINDS; k++)
        for (int l = 0; l < c->n_layer; l++) {
            lp_view va, vb;
            int ra = lp_run_view(a, PACK_KINDS[k], l, -1, &va), rb = lp_run_view(b, PACK_KINDS[k], l, -1, &vb);
            assert_int_equal(ra, rb);
            if (ra) { /* a kind this architecture has not (mlp_up, head_hidden) */
                lp_error_clear();
                continue;
            }
            assert_int_equal(va.ndim, vb.ndim);
            size_t n = 1;
            for (int i = 0; i < va.ndim; i++) {
                assert_int_equal(va.shape[i], vb.shape[i]);
                n *= (size_t)va.shape[i];
            }
            float *fa = gather(&va), *fb = gather(&vb);
            for (size_t i = 0; i < n; i++) {
                double d = fabs((double)fa[i] - fb[i]) / fmax(fabs((double)fa[i]), 1.0);
                if (!(d <= worst)) worst = d; /* NaN too */
                if (memcmp(&fa[i], &fb[i], sizeof *fa)) *bits = true;
            }
            free(fa);
            free(fb);
            if (PACK_KINDS[k] >= LP_ACT_LN_FINAL) break; /* not per layer */
        }
    return worst;
}

static void packed_batch_of(lp_model *m, const char *name, const int *ids, int n, const int *types) {
    enum { B = 4 };
    int lens[B] = {1, n, 5, 2}, *seq[B], *typ[B];
    for (int b = 0; b < B; b++) {
        seq[b] = malloc((size_t)lens[b] * sizeof *seq[b]);
        typ[b] = calloc((size_t)lens[b], sizeof *typ[b]);
        for (int i = 0; i < lens[b]; i++) {
            seq[b][i] = ids[(i + 3 * b) % n];
            typ[b][i] = types ? types[(i + 3 * b) % n] : 0;
        }
    }
    lp_run *packed[B], *again[B];
    if (lp_run_new_batch(packed, m, B, (const int *const *)seq, (const int *const *)typ, lens)) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_run_new_batch(again, m, B, (const int *const *)seq, (const int *const *)typ, lens), LP_OK);
    double worst = 0;
    for (int b = 0; b < B; b++) {
        lp_run *lone;
        assert_int_equal(lp_run_new_typed(&lone, m, seq[b], typ[b], lens[b]), LP_OK);
        assert_int_equal(lp_run_len(packed[b]), lens[b]);
        assert_memory_equal(lp_run_ids(packed[b]), seq[b], (size_t)lens[b] * sizeof *seq[b]);
        assert_memory_equal(lp_run_types(packed[b]), typ[b], (size_t)lens[b] * sizeof *typ[b]);
        bool differ = false, again_differ = false;
        double w = runs_apart(lone, packed[b], &differ);
        worst = fmax(worst, w);
        runs_apart(packed[b], again[b], &again_differ);
        assert_false(again_differ);
        lp_run_free(lone);
    }
    print_message("  %-22s packed vs lone: %.2e of max(|v|, 1)\n", name, worst);
    assert_true(worst < PACK_TOL);
    /* freed in another order than made: the arena goes with the last */
    for (int b = B - 1; b >= 0; b--) lp_run_free(packed[b]);
    for (int b = 0; b < B; b++) lp_run_free(again[b]);
    /* a sequence the model refuses is named, and nothing is made */
    lens[2] = lp_model_config(m)->n_ctx + 1;
    int *longer = calloc((size_t)lens[2], sizeof *longer), *keep = seq[2];
    seq[2] = longer;
    assert_int_equal(lp_run_new_batch(packed, m, B, (const int *const *)seq, NULL, lens), LP_ERANGE);
    assert_non_null(strstr(lp_errmsg(), "sequence 2 of the batch"));
    for (int b = 0; b < B; b++) assert_null(packed[b]);
    assert_int_equal(lp_run_new_batch(packed, m, 0, NULL, NULL, NULL), LP_EINVAL);
    seq[2] = keep;
    free(longer);
    for (int b = 0; b < B; b++) free(seq[b]), free(typ[b]);
}

static void packed_batch_matches_lone_runs(void **state) {
    (void)state;
    for (int i = 0; i < fixture_count(); i++) {
        char *dir;
        fixture_model fm;
        lp_model *m = load_fixture(i, &dir, &fm);
        packed_batch_of(m, fm.name, fm.ids, fm.n, NULL);
        lp_model_free(m);
        rm_tree(dir);
    }
    char *dir = make_temp_dir(), mdir[640];
    snprintf(mdir, sizeof mdir, "%s/bert", dir);
    assert_int_equal(mkmodel(mdir, "--arch bert --layers 2 --d-model 32 --heads 4 --d-mlp 64 --vocab 120 --ctx 16 "
                                   "--labels 3 --std 0.3 --seed 21"), 0);
    lp_model *m;
    assert_int_equal(lp_model_load(&m, mdir, NULL), LP_OK);
    int ids[9] = {101, 7, 50, 110, 102, 33, 64, 9, 102}, types[9] = {0, 0, 0, 0, 0, 1, 1, 1, 1};
    packed_batch_of(m, "bert_classifier", ids, 9, types);
    lp_model_free(m);
    rm_tree(dir);
}

static void lens_last_layer_equals_the_logits(void **state) {
    (void)state;
    for (int i = 0, n = fixture_count(); i < n; i++) {
        char *dir;
        fixture_model fm;
        lp_model *m = load_fixture(i, &dir, &fm);
        const lp_config *c = lp_model_config(m);
        int V = c->vocab, T = fm.n, R = c->n_layer + 1, k = 3;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fm.ids, T), LP_OK);
        float *lg = malloc((size_t)V * sizeof *lg);
        for (int t = 0; t < T; t++) {
            assert_int_equal(lp_lens_logits(r, c->n_layer, t, lg), LP_OK);
            for (int j = 0; j < V; j++) assert_true(fabs(lg[j] - lp_run_logits(r, t)[j]) < 1e-5);
        }
        int *ids = malloc((size_t)R * T * k * sizeof *ids), *rank = malloc((size_t)R * T * sizeof *rank);
        float *probs = malloc((size_t)R * T * k * sizeof *probs), *tp = malloc((size_t)R * T * sizeof *tp);
        int target = fm.ids[0];
        assert_int_equal(lp_lens(r, k, target, ids, probs, tp, rank), LP_OK);
        for (int row = 0; row < R; row++)
            for (int t = 0; t < T; t++) {
                size_t cell = (size_t)row * T + t;
                assert_int_equal(lp_lens_logits(r, row, t, lg), LP_OK);
                int best = 0;
                for (int j = 1; j < V; j++)
                    if (lg[j] > lg[best]) best = j;
                assert_int_equal(ids[cell * k], best);
                assert_true(probs[cell * k] >= probs[cell * k + 1] && probs[cell * k + 1] >= probs[cell * k + 2]);
                if (rank[cell] == 1) assert_int_equal(ids[cell * k], target);
                if (ids[cell * k] == target) assert_int_equal(rank[cell], 1);
            }
        assert_int_equal(lp_lens_logits(r, R, 0, lg), LP_EINVAL);
        free(ids), free(rank), free(probs), free(tp), free(lg);
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
}

/* An F16 (or BF16) checkpoint gives the same logits as an F32 one holding its upcast. */
static void half_precision_matches_f32_upcast(void **state) {
    (void)state;
    const char *kinds[] = {"f16", "bf16"};
    const char *archs[] = {"gpt2", "llama"};
    int ids[] = {3, 1, 4, 1, 5, 9, 2, 6};
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 2; k++) {
            char *dir = make_temp_dir();
            char half[512], full[512], args[256];
            snprintf(half, sizeof half, "%s/half", dir);
            snprintf(full, sizeof full, "%s/full", dir);
            snprintf(args, sizeof args, "--arch %s --dtype %s --seed 7 --std 0.3", archs[a], kinds[k]);
            assert_int_equal(mkmodel(half, args), 0);
            snprintf(args, sizeof args, "--arch %s --dtype f32 --round %s --seed 7 --std 0.3", archs[a], kinds[k]);
            assert_int_equal(mkmodel(full, args), 0);
            lp_model *mh, *mf;
            assert_int_equal(lp_model_load(&mh, half, NULL), LP_OK);
            assert_int_equal(lp_model_load(&mf, full, NULL), LP_OK);
            assert_string_equal(lp_model_dtype(mh), k == 0 ? "F16" : "BF16");
            lp_run *rh, *rf;
            assert_int_equal(lp_run_new(&rh, mh, ids, 8), LP_OK);
            assert_int_equal(lp_run_new(&rf, mf, ids, 8), LP_OK);
            int V = lp_model_config(mh)->vocab;
            for (int t = 0; t < 8; t++)
                for (int j = 0; j < V; j++) assert_true(lp_run_logits(rh, t)[j] == lp_run_logits(rf, t)[j]);
            lp_run_free(rh);
            lp_run_free(rf);
            lp_model_free(mh);
            lp_model_free(mf);
            rm_tree(dir);
        }
}

static void stories260k_greedy_gives_known_ids(void **state) {
    (void)state;
    static const int expected[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395,
                                   317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322};
    int n = (int)(sizeof expected / sizeof *expected);
    lp_load_options o = {STORIES_TOK};
    lp_model *m;
    if (lp_model_load(&m, STORIES, &o)) fail_msg("%s", lp_errmsg());
    int bos = 1, out[32], got;
    lp_sampling greedy = {0};
    assert_int_equal(lp_generate(m, &bos, 1, n, &greedy, 1, out, &got), LP_OK);
    assert_int_equal(got, n);
    assert_memory_equal(out, expected, sizeof expected);
    /* The captured run agrees with the cache: its argmax at each position is the next id. */
    int seq[27] = {1};
    memcpy(seq + 1, expected, sizeof expected);
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, seq, 26), LP_OK);
    for (int t = 0; t < 26; t++) {
        const float *lg = lp_run_logits(r, t);
        int best = 0;
        for (int j = 1; j < 512; j++)
            if (lg[j] > lg[best]) best = j;
        assert_int_equal(best, seq[t + 1]);
    }
    lp_run_free(r);
    lp_model_free(m);
}

/* Each pattern row's entropy and maximum, as the softmax keeps them (what head metrics read),
 * against -sum p log p in double over the stored row and its largest entry: rows of every
 * length up to 256 (the vector path, its tails, and rows where some scores fall below the
 * exp floor do not arise here; test_forward's fixtures cover short rows). */
static void pattern_stats_match_the_rows(void **state) {
    (void)state;
    lp_load_options o = {STORIES_TOK};
    lp_model *m;
    if (lp_model_load(&m, STORIES, &o)) fail_msg("%s", lp_errmsg());
    const lp_config *c = lp_model_config(m);
    enum { T = 256 };
    int ids[T];
    uint64_t x = 12345;
    for (int i = 0; i < T; i++) x = x * 6364136223846793005ull + 1442695040888963407ull, ids[i] = (int)(x >> 33) % 512;
    /* a lone run, then three packed ones (each its own rows of the batch's stats) */
    enum { B = 4 };
    lp_run *runs[B];
    const int *seqs[B - 1] = {ids, ids + 37, ids + 100};
    const int lens[B - 1] = {37, 63, 156};
    assert_int_equal(lp_run_new(&runs[0], m, ids, T), LP_OK);
    assert_int_equal(lp_run_new_batch(runs + 1, m, B - 1, seqs, NULL, lens), LP_OK);
    double worst = 0;
    for (int b = 0; b < B; b++)
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < c->n_head; h++) {
            lp_run *r = runs[b];
            int n = lp_run_len(r);
            lp_view v;
            assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, l, h, &v), LP_OK);
            const float *st = lp_run_pattern_stats(r, l, h);
            for (int q = 0; q < n; q++) {
                const float *row = v.data + (size_t)q * v.stride[0];
                double ent = 0;
                float mx = 0;
                for (int k = 0; k <= q; k++) {
                    if (row[k] > 0) ent -= row[k] * log((double)row[k]);
                    if (row[k] > mx) mx = row[k];
                }
                assert_true(st[2 * q + 1] == mx); /* exact: expf(0) * (1 / Z) */
                double err = fabs(st[2 * q] - ent);
                if (err > worst) worst = err;
            }
        }
    /* the row's p are floats rounded from e / Z; the stats use e and Z themselves */
    print_message("  pattern entropy: largest difference %.2g over %d rows\n", worst, 2 * c->n_layer * c->n_head * T);
    if (worst > 2e-6) fail_msg("pattern entropy off by %g", worst);
    for (int b = 0; b < B; b++) lp_run_free(runs[b]);
    lp_model_free(m);
}

static long minor_faults(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

/* The stories model and ids (*T: its context's length) for the prefault's tests. */
static lp_model *stories_full_length(int **ids, int *T) {
    lp_load_options o = {STORIES_TOK};
    lp_model *m;
    if (lp_model_load(&m, STORIES, &o)) fail_msg("%s", lp_errmsg());
    *T = lp_model_config(m)->n_ctx;
    *ids = malloc((size_t)*T * sizeof **ids);
    for (int i = 0; i < *T; i++) (*ids)[i] = 1 + (i * 7919) % 511;
    return m;
}

/* After lp_run_prefault has finished, the longest run takes its arena already touched: its
 * page faults beyond those of a run that reuses a kept arena ("again": the rest of the
 * process, e.g. a sanitizer's allocator, faults too) are a small part of a run's from no
 * arena kept (bench --record times both). */
static void prefault_takes_the_first_touch(void **state) {
    (void)state;
#ifdef __SANITIZE_ADDRESS__
    /* AddressSanitizer's shadow (an eighth of every address written) takes its own first-touch
     * faults, which no prefault of the arena can take: 64 MB populated, then written, still
     * took 2048 faults here, 16384 without populating. */
    print_message("  skip: under AddressSanitizer a run's first touch is its shadow memory's too\n");
    skip();
#endif
    int T, *ids;
    lp_model *m = stories_full_length(&ids, &T);
    long faults[3]; /* from nothing kept, again, after the prefault */
    for (int pass = 0; pass < 3; pass++) {
        if (pass != 1) lp_run_release_cache();
        if (pass == 2) {
            assert_int_equal(lp_run_prefault(m), T);
            assert_int_equal(lp_run_prefault(m), 0); /* one under way, or done: nothing more */
            lp_run_prefault_wait();
        }
        long f0 = minor_faults();
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, ids, T), LP_OK);
        faults[pass] = minor_faults() - f0;
        lp_run_free(r);
    }
    print_message("  page faults of a %d-token run: %ld from nothing kept, %ld again, %ld after the prefault\n", T,
                  faults[0], faults[1], faults[2]);
    assert_true(faults[0] > faults[1]);
    assert_true((faults[2] - faults[1]) * 4 < faults[0] - faults[1]);
    lp_run_release_cache();
    free(ids);
    lp_model_free(m);
}

/* A run made at once after lp_run_prefault takes the arena the prefault is still touching,
 * which goes on touching it under the run (MADV_POPULATE_WRITE, which never writes): the
 * run's logits are those of a run in an arena of its own, bit for bit, and the touching is
 * counted as the prefault's page faults. Releasing the cache meanwhile stops it. (With a
 * touching that writes, memset, the logits compare unequal once it has gone past them.) */
static void a_run_during_the_prefault_is_exact(void **state) {
    (void)state;
    int T, *ids;
    lp_model *m = stories_full_length(&ids, &T);
    lp_run_release_cache();
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, ids, T), LP_OK);
    size_t V = (size_t)lp_run_out_width(r), n = (size_t)T * V;
    float *want = malloc(n * sizeof *want);
    memcpy(want, lp_run_logits(r, 0), n * sizeof *want);
    lp_run_free(r);
    for (int rep = 0; rep < 3; rep++) {
        lp_run_release_cache();
        long f0 = lp_run_prefault_faults();
        assert_int_equal(lp_run_prefault(m), T);
        /* its faults are counted from its second piece on, after the arena is offered */
        for (int waited = 0; lp_run_prefault_faults() == f0 && waited < 10000; waited++) usleep(1000);
        assert_int_equal(lp_run_new(&r, m, ids, T), LP_OK);
        if (rep < 2) lp_run_prefault_wait(); /* the touching done, the logits (at the arena's end) still the run's */
        assert_memory_equal(lp_run_logits(r, 0), want, n * sizeof *want);
        lp_run_free(r);
        lp_run_release_cache(); /* with a prefault under way (rep 2): it stops it, then waits for it */
        assert_true(lp_run_prefault_faults() > f0);
    }
    free(want);
    free(ids);
    lp_model_free(m);
}

/* Sampling is reproducible for a seed and differs across seeds. */
static void sampling_is_reproducible_for_a_seed(void **state) {
    (void)state;
    lp_load_options o = {STORIES_TOK};
    lp_model *m;
    assert_int_equal(lp_model_load(&m, STORIES, &o), LP_OK);
    int bos = 1, a[40], b[40], c2[40], na, nb, nc;
    lp_sampling s = {1.0f, 40, 0.9f, 1234};
    assert_int_equal(lp_generate(m, &bos, 1, 40, &s, 0, a, &na), LP_OK);
    assert_int_equal(lp_generate(m, &bos, 1, 40, &s, 0, b, &nb), LP_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof *a);
    s.seed = 99;
    assert_int_equal(lp_generate(m, &bos, 1, 40, &s, 0, c2, &nc), LP_OK);
    assert_true(nc != na || memcmp(a, c2, (size_t)na * sizeof *a) != 0);
    lp_model_free(m);
}

static void top_k_one_is_greedy(void **state) {
    (void)state;
    float logits[5] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};
    lp_rng rng;
    lp_rng_seed(&rng, 5);
    lp_sampling s = {1.0f, 1, 1.0f, 5};
    for (int i = 0; i < 20; i++) assert_int_equal(lp_sample(logits, 5, &s, &rng), 1);
    /* top-k 2 never picks outside the two best */
    s.top_k = 2;
    for (int i = 0; i < 200; i++) {
        int id = lp_sample(logits, 5, &s, &rng);
        assert_true(id == 1 || id == 3);
    }
    /* top-p small keeps only the best */
    s.top_k = 0;
    s.top_p = 0.01f;
    for (int i = 0; i < 50; i++) assert_int_equal(lp_sample(logits, 5, &s, &rng), 1);
}

/* lp_top_k gives the same ids, in the same order (ties by smaller id), for small k (the
 * insertion path) and large k (the heap path, from 65), up to every id, as a plain selection
 * would; with many ties, some across the k-th place. */
static void top_k_orders_by_logit_then_id(void **state) {
    (void)state;
    enum { V = 500 };
    float lg[V];
    for (int i = 0; i < V; i++) lg[i] = (float)((i * 7919) % 97) / 8.0f; /* many ties */
    int got[V];
    static const int ks[] = {1, 5, 64, 65, 66, 100, 199, 200, 333, 499, 500};
    for (size_t t = 0; t < sizeof ks / sizeof *ks; t++) {
        int k = ks[t];
        assert_int_equal(lp_top_k(got, lg, V, k), LP_OK);
        bool used[V] = {false};
        for (int r = 0; r < k; r++) {
            int best = -1;
            for (int j = 0; j < V; j++)
                if (!used[j] && (best < 0 || lg[j] > lg[best])) best = j;
            used[best] = true;
            assert_int_equal(got[r], best);
        }
    }
}

/* GELU (tanh form) and SiLU, computed in float, against double: both signs far out (where
 * exp overflows or underflows), near zero, and a length that leaves a tail in every chunk.
 * Worst measured: 1.2e-6 relative (no BLAS in it: the same under every OpenBLAS kernel). */
static void activations_match_double(void **state) {
    (void)state;
    enum { N = 64 * 5 + 37 };
    float x[N], up[N], y[N], z[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)((i * 37) % N - N / 2) * 0.09f; /* about -15 .. 15, not in order */
        up[i] = 1.0f + 0.01f * (float)i;
    }
    x[0] = -100.0f, x[1] = 100.0f, x[2] = 0.0f, x[N - 1] = -30.0f, x[N - 2] = 1e-3f;
    lp_gelu_rows(y, x, N);
    lp_swiglu_rows(z, x, up, N);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        double v = x[i], u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
        double gelu = 0.5 * v * (1.0 + tanh(u)), silu = v / (1.0 + exp(-v)) * up[i];
        double eg = fabs(y[i] - gelu) / fmax(fabs(gelu), 1e-6), es = fabs(z[i] - silu) / fmax(fabs(silu), 1e-6);
        if (fabs(gelu) < 1e-30) eg = fabs(y[i]); /* far left: 0, or a denormal */
        if (fabs(silu) < 1e-30) es = fabs(z[i]);
        worst = fmax(worst, fmax(eg, es));
    }
    print_message("  gelu, silu vs double: worst relative error %.2g\n", worst);
    assert_true(worst < 2e-6);
}

/* expf8's vector loops against the scalar expf they replace, bit for bit: every 251st float
 * bit pattern (both signs, denormals, the |x| >= 88 lanes that fall back, infinities, NaNs),
 * through the softmax's exponentials (shift 0, no floor), GPT-2's GELU and the gated MLPs'
 * SiLU and GELU times up (NaN == NaN by bits: the same expression gives the same NaN); then rows with a
 * shift whose entries straddle the -88 floor. Checked over all 2^32 floats when written. */
static void vector_expf_gives_glibc_bits(void **state) {
    (void)state;
    enum { B = 1 << 16 };
    static float x[B], y[B], g[B], u[B], sw[B], gg[B];
    size_t bad_exp = 0, bad_gelu = 0, bad_gated = 0, n = 0;
    for (uint64_t b = 0; b < (1ull << 32);) {
        for (n = 0; n < B && b < (1ull << 32); n++, b += 251) {
            uint32_t bits = (uint32_t)b;
            memcpy(&x[n], &bits, sizeof bits);
        }
        memcpy(y, x, n * sizeof *x);
        lp_softmax_exp(y, (int)n, 0.0f, -INFINITY);
        lp_gelu_tanh_n(g, x, n);
        for (size_t i = 0; i < n; i++) u[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
        lp_silu_mul_n(sw, x, u, n);
        memcpy(gg, u, n * sizeof *u);
        lp_gelu_tanh_mul_n(gg, x, gg, n); /* y the same array as u */
        for (size_t i = 0; i < n; i++) {
            float e = expf(x[i] - 0.0f), gl = lp_gelu_tanh(x[i]), s = lp_silu(x[i]) * u[i], q = gl * u[i];
            bad_exp += memcmp(&e, &y[i], sizeof e) != 0;
            bad_gelu += memcmp(&gl, &g[i], sizeof gl) != 0;
            bad_gated += memcmp(&s, &sw[i], sizeof s) != 0 || memcmp(&q, &gg[i], sizeof q) != 0;
        }
    }
    size_t bad_rows = 0;
    for (int t = 0; t < 20000; t++) {
        float row[37], ref[37], mx = (float)(t % 1000) * 0.37f - 100.0f;
        for (int j = 0; j < 37; j++) row[j] = ref[j] = mx - (float)((t * 31 + j * 7919) % 20000) * 0.0097f;
        lp_softmax_exp(row, 37, mx, -88.0f);
        for (int j = 0; j < 37; j++) {
            float e = ref[j] - mx;
            ref[j] = e < -88.0f ? 0.0f : expf(e);
        }
        bad_rows += memcmp(row, ref, sizeof row) != 0;
    }
    print_message("  vector expf vs expf: %zu exp, %zu gelu, %zu gated (silu, gelu) x up, %zu floored rows differ\n", bad_exp,
                  bad_gelu, bad_gated, bad_rows);
    assert_int_equal(bad_exp + bad_gelu + bad_gated + bad_rows, 0);
}

/* gelu_erf.c's lanes against the scalar exact GELU they replace (glibc's erf in double):
 * every 251st float bit pattern (both signs, denormals, |x| past 6 where erf is +-1,
 * infinities, NaNs), then 2^20 values in [-10, 10], where each of fdlibm's intervals is hit.
 * A float may differ only where the double lies within the two erfs' difference of a
 * rounding boundary, and then by 1 ulp; none differed in 2^32 + 2^26 values when written. */
static void gelu_erf_lanes_give_the_scalar_floats(void **state) {
    (void)state;
    enum { B = 1 << 16 };
    static float x[B], y[B];
    size_t differ = 0, far = 0, total = 0;
    for (uint64_t b = 0, pass = 0; pass < 16 + (1ull << 32) / 251 / B + 1; pass++) {
        size_t n = 0;
        if (b < (1ull << 32))
            for (; n < B && b < (1ull << 32); n++, b += 251) {
                uint32_t bits = (uint32_t)b;
                memcpy(&x[n], &bits, sizeof bits);
            }
        else
            for (; n < B; n++) x[n] = (float)((double)((pass * B + n) * 2654435761u % 2000003u) / 100000.0 - 10.0);
        lp_gelu_erf_n(y, x, n);
        for (size_t i = 0; i < n; i++) {
            float want = lp_gelu_erf(x[i]);
            if (isnan(want) && isnan(y[i])) continue;
            if (memcmp(&want, &y[i], sizeof want) == 0) continue;
            differ++;
            int32_t a, c;
            memcpy(&a, &want, sizeof a);
            memcpy(&c, &y[i], sizeof c);
            if (a - c > 1 || c - a > 1) far++;
        }
        total += n;
    }
    print_message("  exact GELU lanes vs scalar: %zu of %zu floats differ, %zu by more than 1 ulp\n", differ, total, far);
    assert_int_equal(far, 0);
    assert_true(differ <= total / 1000000);
}

/* vmath's exp: lp_vexp16 (16 lanes) gives lp_vexp's bits on every 61st float bit pattern
 * of x <= 0 (the -87 clamp, denormals, -infinity) and on NaNs (a NaN then too), and lp_vexp
 * is within 3e-7 of exp in double where it is meant to be (x in [-87, 0]). */
static void vmath_exp_lanes_give_the_scalar_bits(void **state) {
    (void)state;
    size_t bad = 0, n = 0;
    double worst = 0.0;
    for (uint64_t b = 0x80000000u; b <= 0xffffffffu; b += 16 * 61) {
        float x[16], y[16];
        for (int l = 0; l < 16; l++) {
            uint32_t bits = (uint32_t)(b + (uint64_t)l * 61 > 0xffffffffu ? 0xffffffffu : b + (uint64_t)l * 61);
            memcpy(&x[l], &bits, sizeof bits);
        }
        store16(y, lp_vexp16(load16(x)));
        for (int l = 0; l < 16; l++, n++) {
            float e = lp_vexp(x[l]);
            bad += isnan(x[l]) ? !isnan(y[l]) || !isnan(e) : memcmp(&e, &y[l], sizeof e) != 0;
            if (x[l] >= -87.0f) worst = fmax(worst, fabs(e - exp(x[l])) / exp(x[l]));
        }
    }
    print_message("  vmath exp: %zu of %zu lanes differ from the scalar's; worst relative error %.2g\n", bad, n, worst);
    assert_int_equal(bad, 0);
    assert_true(worst < 3e-7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forward_matches_pytorch_reference),
        cmocka_unit_test(attention_rows_sum_to_one_and_are_causal),
        cmocka_unit_test(kv_cache_steps_match_full_run),
        cmocka_unit_test(long_sequences_match_stepwise_decoding),
        cmocka_unit_test(packed_batch_matches_lone_runs),
        cmocka_unit_test(lens_last_layer_equals_the_logits),
        cmocka_unit_test(half_precision_matches_f32_upcast),
        cmocka_unit_test(stories260k_greedy_gives_known_ids),
        cmocka_unit_test(pattern_stats_match_the_rows),
        cmocka_unit_test(prefault_takes_the_first_touch),
        cmocka_unit_test(a_run_during_the_prefault_is_exact),
        cmocka_unit_test(sampling_is_reproducible_for_a_seed),
        cmocka_unit_test(top_k_one_is_greedy),
        cmocka_unit_test(top_k_orders_by_logit_then_id),
        cmocka_unit_test(activations_match_double),
        cmocka_unit_test(vector_expf_gives_glibc_bits),
        cmocka_unit_test(vmath_exp_lanes_give_the_scalar_bits),
        cmocka_unit_test(gelu_erf_lanes_give_the_scalar_floats),
    };
    return cmocka_run_group_tests_name("forward", tests, NULL, NULL);
}
