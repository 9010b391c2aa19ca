/* Circuits: direct logit attribution adds up to the logit, activation patching's
 * identities (and agreement between its batched and one-at-a-time paths and the plain
 * forward), and the head scan's scores against the per-head metrics of the same sequence. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "loupe/circuits.h"
#include "loupe/error.h"
#include "loupe/heads.h"
#include "loupe/model.h"
#include "loupe/run.h"

#define TOL 1e-4

/* The test models: tiny random checkpoints of each family (large std so that heads and
 * norms do something), and stories260K. */
static const char *const ARCHS[] = {
    "--arch gpt2 --std 0.3 --seed 3",
    "--arch llama --kv-heads 2 --std 0.3 --seed 4",
    "--arch qwen2 --std 0.3 --seed 5",
};
#define N_MODELS 4

typedef struct {
    lp_model *m;
    char *dir;
} test_model;

static test_model load(int i) {
    test_model t = {0};
    if (i == 3) {
        lp_load_options o = {STORIES_TOK};
        if (lp_model_load(&t.m, STORIES, &o)) fail_msg("stories260K: %s", lp_errmsg());
        return t;
    }
    t.dir = make_temp_dir();
    char mdir[600];
    snprintf(mdir, sizeof mdir, "%s/m", t.dir);
    assert_int_equal(mkmodel(mdir, ARCHS[i]), 0);
    if (lp_model_load(&t.m, mdir, NULL)) fail_msg("%s: %s", ARCHS[i], lp_errmsg());
    return t;
}

static void unload(test_model *t) {
    lp_model_free(t->m);
    rm_tree(t->dir);
}

static const char *model_name(int i) { return i == 3 ? "stories260K" : ARCHS[i]; }

/* n ids, deterministic, drawn from [3, V) (past llama2.c's special tokens), ids[0] = 1 as BOS. */
static void make_ids(int *ids, int n, int V, unsigned seed) {
    uint64_t x = seed * 2654435761u + 1;
    ids[0] = 1;
    for (int i = 1; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = 3 + (int)((x >> 33) % (uint64_t)(V - 3));
    }
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static double max_diff(const float *a, const float *b, int n) {
    double w = 0;
    for (int i = 0; i < n; i++) w = fmax(w, fabs((double)a[i] - b[i]));
    return w;
}

static double metric_of(const float *logits, int target, int contrast) {
    return (double)logits[target] - (contrast >= 0 ? logits[contrast] : 0.0);
}

/* ---- direct logit attribution ---- */

/* DLA closure: embeddings + heads + MLPs + biases = the logit (and the logit difference),
 * at every position, within 1e-3; a layer's neurons add up to its MLP less its output bias. */
static void dla_parts_add_up_to_the_logit(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) {
        test_model tm = load(i);
        const lp_config *c = lp_model_config(tm.m);
        int T = 12, ids[12];
        make_ids(ids, T, c->vocab, 7 + i);
        lp_run *r;
        assert_int_equal(lp_run_new(&r, tm.m, ids, T), LP_OK);
        float *heads = malloc((size_t)c->n_layer * c->n_head * sizeof *heads), *mlp = malloc((size_t)c->n_layer * sizeof *mlp);
        float *neur = malloc((size_t)c->d_mlp * sizeof *neur);
        double worst = 0, worst_neurons = 0, biggest = 0;
        for (int pos = 0; pos < T; pos++) {
            const float *lg = lp_run_logits(r, pos);
            int top = argmax(lg, c->vocab), other = (top + 1 + pos) % c->vocab;
            for (int k = 0; k < 2; k++) {
                int contrast = k ? other : -1;
                lp_dla_sums s;
                assert_int_equal(lp_dla(r, pos, top, contrast, heads, mlp, &s), LP_OK);
                assert_true(fabs(s.logit - metric_of(lg, top, contrast)) < 1e-9);
                double sum = s.embed + s.bias;
                for (int j = 0; j < c->n_layer * c->n_head; j++) sum += heads[j];
                for (int l = 0; l < c->n_layer; l++) sum += mlp[l];
                assert_true(fabs(sum - s.total) < 1e-4);
                assert_true(fabs(s.bias - (s.attn_bias + s.norm_bias + s.unembed_bias)) < 1e-9);
                worst = fmax(worst, fabs(s.total - s.logit));
                biggest = fmax(biggest, fabs(s.logit));
                /* Neurons add up to their MLP's part (the models without an MLP output bias). */
                int layer = pos % c->n_layer;
                assert_int_equal(lp_dla_neurons(r, layer, pos, top, contrast, neur), LP_OK);
                double ns = 0;
                for (int j = 0; j < c->d_mlp; j++) ns += neur[j];
                if (!c->mlp_bias) worst_neurons = fmax(worst_neurons, fabs(ns - mlp[layer]));
            }
        }
        print_message("  %-42s DLA closure: max |total - logit| %.2e (logits up to %.1f); neurons vs MLP %.2e\n",
                      model_name(i), worst, biggest, worst_neurons);
        assert_true(worst < 1e-3);
        assert_true(worst_neurons < 1e-4);
        assert_true(biggest > 0.5); /* the models say something: the closure is not 0 = 0 */
        free(heads);
        free(mlp);
        free(neur);
        lp_run_free(r);
        unload(&tm);
    }
}

static void dla_rejects_bad_arguments(void **state) {
    (void)state;
    test_model tm = load(0);
    int ids[4] = {1, 5, 9, 2};
    lp_run *r;
    assert_int_equal(lp_run_new(&r, tm.m, ids, 4), LP_OK);
    float heads[64], mlp[8], neur[512];
    assert_int_equal(lp_dla(r, 4, 1, -1, heads, mlp, NULL), LP_EINVAL);
    assert_int_equal(lp_dla(r, 0, 96, -1, heads, mlp, NULL), LP_EINVAL);
    assert_int_equal(lp_dla(r, 0, 1, -2, heads, mlp, NULL), LP_EINVAL);
    assert_int_equal(lp_dla_neurons(r, 2, 0, 1, -1, neur), LP_EINVAL);
    lp_run_free(r);
    unload(&tm);
}

/* ---- activation patching ---- */

/* Patching the clean run with itself changes nothing: every patch's logits are the clean
 * ones (re-run through the batched layers), and every sweep value is the clean metric. */
static void patching_with_the_clean_run_changes_nothing(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) {
        test_model tm = load(i);
        const lp_config *c = lp_model_config(tm.m);
        int T = 10, ids[10], V = c->vocab;
        make_ids(ids, T, V, 11 + i);
        lp_run *clean, *again;
        assert_int_equal(lp_run_new(&clean, tm.m, ids, T), LP_OK);
        assert_int_equal(lp_run_new(&again, tm.m, ids, T), LP_OK);
        const float *want = lp_run_logits(clean, T - 1);
        float *got = malloc((size_t)V * sizeof *got);
        double worst = 0;
        for (int s = 0; s < LP_PATCH_SITE_COUNT; s++)
            for (int l = 0; l < c->n_layer; l++) {
                lp_patch ps[3] = {{(lp_patch_site)s, l, -1, -1}, {(lp_patch_site)s, l, T / 2, -1},
                                  {(lp_patch_site)s, l, -1, s == LP_PATCH_Z ? 1 : -1}};
                for (int k = 0; k < 3; k++) {
                    assert_int_equal(lp_patch_logits(clean, again, &ps[k], got), LP_OK);
                    worst = fmax(worst, max_diff(got, want, V));
                }
            }
        int target = argmax(want, V), contrast = (target + 1) % V;
        double m0 = metric_of(want, target, contrast);
        for (int s = 0; s < LP_PATCH_SITE_COUNT; s++) {
            int cols = s == LP_PATCH_Z ? c->n_head : T;
            float *vals = malloc((size_t)c->n_layer * cols * sizeof *vals);
            assert_int_equal(lp_patch_sweep(clean, again, (lp_patch_site)s, target, contrast, vals), LP_OK);
            for (int j = 0; j < c->n_layer * cols; j++) assert_true(vals[j] == (float)m0);
            free(vals);
        }
        print_message("  %-42s clean patched with itself: max logit change %.2e\n", model_name(i), worst);
        assert_true(worst < TOL);
        free(got);
        lp_run_free(clean);
        lp_run_free(again);
        unload(&tm);
    }
}

/* Patching the whole residual stream (every position) at any layer gives the corrupted
 * run's logits: from there on the model sees only the corrupted run. */
static void patching_the_whole_residual_stream_gives_the_corrupt_logits(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) {
        test_model tm = load(i);
        const lp_config *c = lp_model_config(tm.m);
        int T = 9, a[9], b[9], V = c->vocab;
        make_ids(a, T, V, 21 + i);
        make_ids(b, T, V, 91 + i);
        lp_run *clean, *corrupt;
        assert_int_equal(lp_run_new(&clean, tm.m, a, T), LP_OK);
        assert_int_equal(lp_run_new(&corrupt, tm.m, b, T), LP_OK);
        const float *want = lp_run_logits(corrupt, T - 1);
        float *got = malloc((size_t)V * sizeof *got);
        double worst = 0, moved = max_diff(lp_run_logits(clean, T - 1), want, V);
        for (int l = 0; l < c->n_layer; l++) {
            lp_patch p = {LP_PATCH_RESID_PRE, l, -1, -1};
            assert_int_equal(lp_patch_logits(clean, corrupt, &p, got), LP_OK);
            worst = fmax(worst, max_diff(got, want, V));
        }
        print_message("  %-42s whole resid_pre patched: max diff from corrupt logits %.2e (clean vs corrupt %.2f)\n",
                      model_name(i), worst, moved);
        assert_true(worst < TOL);
        assert_true(moved > 0.1);
        free(got);
        lp_run_free(clean);
        lp_run_free(corrupt);
        unload(&tm);
    }
}

/* Patching the residual stream entering layer 0 at one position is running the clean
 * tokens with the corrupted token there: the batched sweep agrees with plain runs. */
static void patching_layer0_at_a_position_is_swapping_the_token(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) {
        test_model tm = load(i);
        const lp_config *c = lp_model_config(tm.m);
        int T = 8, a[8], b[8], V = c->vocab;
        make_ids(a, T, V, 31 + i);
        make_ids(b, T, V, 71 + i);
        lp_run *clean, *corrupt;
        assert_int_equal(lp_run_new(&clean, tm.m, a, T), LP_OK);
        assert_int_equal(lp_run_new(&corrupt, tm.m, b, T), LP_OK);
        int target = argmax(lp_run_logits(clean, T - 1), V), contrast = argmax(lp_run_logits(corrupt, T - 1), V);
        if (contrast == target) contrast = (target + 1) % V;
        float *vals = malloc((size_t)c->n_layer * T * sizeof *vals);
        assert_int_equal(lp_patch_sweep(clean, corrupt, LP_PATCH_RESID_PRE, target, contrast, vals), LP_OK);
        double worst = 0;
        for (int p = 0; p < T; p++) {
            int hybrid[8];
            memcpy(hybrid, a, sizeof hybrid);
            hybrid[p] = b[p];
            lp_run *h;
            assert_int_equal(lp_run_new(&h, tm.m, hybrid, T), LP_OK);
            worst = fmax(worst, fabs(vals[p] - metric_of(lp_run_logits(h, T - 1), target, contrast)));
            lp_run_free(h);
        }
        print_message("  %-42s layer-0 patches vs token swaps: max diff %.2e\n", model_name(i), worst);
        assert_true(worst < TOL);
        free(vals);
        lp_run_free(clean);
        lp_run_free(corrupt);
        unload(&tm);
    }
}

/* Every sweep (all sites) run batched agrees with the same patches run one at a time, and
 * patching every head's z at a layer is patching that layer's attention output. */
static void batched_sweeps_match_single_patches(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) {
        test_model tm = load(i);
        const lp_config *c = lp_model_config(tm.m);
        int T = 7, a[7], b[7], V = c->vocab;
        make_ids(a, T, V, 41 + i);
        make_ids(b, T, V, 61 + i);
        b[2] = a[2]; /* one position alike: its patches at layer 0 change nothing */
        lp_run *clean, *corrupt;
        assert_int_equal(lp_run_new(&clean, tm.m, a, T), LP_OK);
        assert_int_equal(lp_run_new(&corrupt, tm.m, b, T), LP_OK);
        int target = argmax(lp_run_logits(clean, T - 1), V), contrast = argmax(lp_run_logits(corrupt, T - 1), V);
        if (contrast == target) contrast = (target + 1) % V;
        float *lg = malloc((size_t)V * sizeof *lg);
        double worst = 0;
        for (int s = 0; s < LP_PATCH_SITE_COUNT; s++) {
            int cols = s == LP_PATCH_Z ? c->n_head : T;
            float *vals = malloc((size_t)c->n_layer * cols * sizeof *vals);
            assert_int_equal(lp_patch_sweep(clean, corrupt, (lp_patch_site)s, target, contrast, vals), LP_OK);
            for (int l = 0; l < c->n_layer; l++)
                for (int j = 0; j < cols; j++) {
                    lp_patch p = s == LP_PATCH_Z ? (lp_patch){LP_PATCH_Z, l, -1, j} : (lp_patch){(lp_patch_site)s, l, j, -1};
                    assert_int_equal(lp_patch_logits(clean, corrupt, &p, lg), LP_OK);
                    worst = fmax(worst, fabs(vals[l * cols + j] - metric_of(lg, target, contrast)));
                }
            free(vals);
        }
        /* z of every head at every position = the attention output at every position. */
        for (int l = 0; l < c->n_layer; l++) {
            lp_patch pz = {LP_PATCH_Z, l, -1, -1}, pa = {LP_PATCH_ATTN_OUT, l, -1, -1};
            float *lz = malloc((size_t)V * sizeof *lz);
            assert_int_equal(lp_patch_logits(clean, corrupt, &pz, lz), LP_OK);
            assert_int_equal(lp_patch_logits(clean, corrupt, &pa, lg), LP_OK);
            worst = fmax(worst, max_diff(lz, lg, V));
            free(lz);
        }
        print_message("  %-42s batched sweeps vs single patches: max diff %.2e\n", model_name(i), worst);
        assert_true(worst < TOL);
        free(lg);
        lp_run_free(clean);
        lp_run_free(corrupt);
        unload(&tm);
    }
}

static void patching_rejects_mismatched_runs_and_bad_patches(void **state) {
    (void)state;
    test_model tm = load(0);
    int a[5] = {1, 2, 3, 4, 5}, b[4] = {1, 2, 3, 4};
    lp_run *r5, *r4;
    assert_int_equal(lp_run_new(&r5, tm.m, a, 5), LP_OK);
    assert_int_equal(lp_run_new(&r4, tm.m, b, 4), LP_OK);
    float out[64];
    assert_int_equal(lp_patch_sweep(r5, r4, LP_PATCH_RESID_PRE, 1, -1, out), LP_EINVAL);
    lp_patch bad[] = {{LP_PATCH_RESID_PRE, 2, 0, -1}, {LP_PATCH_RESID_PRE, 0, 5, -1}, {LP_PATCH_ATTN_OUT, 0, 0, 1},
                      {LP_PATCH_Z, 0, 0, 4}};
    for (int k = 0; k < 4; k++) assert_int_equal(lp_patch_metric(r5, r5, &bad[k], 1, 1, -1, out), LP_EINVAL);
    lp_patch_site s;
    assert_int_equal(lp_patch_site_from_name("mlp_out", &s), LP_OK);
    assert_int_equal(s, LP_PATCH_MLP_OUT);
    assert_int_equal(lp_patch_site_from_name("pattern", &s), LP_EINVAL);
    lp_run_free(r5);
    lp_run_free(r4);
    unload(&tm);
}

/* ---- head scan ---- */

/* On one sequence the scan's scores are the per-head metrics of a run of that sequence
 * (whose definitions coincide there); sequences are BOS + N distinct tokens twice. */
static void scan_scores_are_the_head_metrics_of_its_sequence(void **state) {
    (void)state;
    for (int i = 0; i < N_MODELS; i++) {
        test_model tm = load(i);
        const lp_config *c = lp_model_config(tm.m);
        lp_scan_options o = {.seq_len = 0, .n_seqs = 1, .seed = 5, .bos = 1, .avoid = {2, -1}};
        int nh = c->n_layer * c->n_head, N;
        float *sc = malloc((size_t)nh * LP_SCAN_COUNT * sizeof *sc), *hm = malloc((size_t)nh * LP_HEAD_METRIC_COUNT * sizeof *hm);
        assert_int_equal(lp_scan_heads(tm.m, &o, sc, &N), LP_OK);
        int ids[128], n;
        assert_int_equal(lp_scan_sequence(tm.m, &o, 0, ids, &n), LP_OK);
        assert_int_equal(n, 2 * N + 1);
        assert_int_equal(ids[0], 1);
        for (int k = 1; k <= N; k++) {
            assert_int_equal(ids[k], ids[k + N]);
            assert_true(ids[k] != 1 && ids[k] != 2);
            for (int j = 1; j < k; j++) assert_true(ids[j] != ids[k]);
        }
        lp_run *r;
        assert_int_equal(lp_run_new(&r, tm.m, ids, n), LP_OK);
        lp_head_metrics(hm, r);
        static const int pairs[LP_SCAN_COUNT] = {LP_HEAD_PREV_TOKEN, LP_HEAD_DUPLICATE_TOKEN, LP_HEAD_INDUCTION,
                                                 LP_HEAD_FIRST_TOKEN};
        for (int h = 0; h < nh; h++)
            for (int k = 0; k < LP_SCAN_COUNT; k++) {
                float a = sc[h * LP_SCAN_COUNT + k], b = hm[h * LP_HEAD_METRIC_COUNT + pairs[k]];
                assert_true(a >= 0.0f && a <= 1.0f);
                assert_true(fabs(a - b) < 1e-5);
            }
        lp_run_free(r);
        /* More sequences: the same seed gives the same scores. */
        o.n_seqs = 3;
        float *again = malloc((size_t)nh * LP_SCAN_COUNT * sizeof *again);
        assert_int_equal(lp_scan_heads(tm.m, &o, sc, NULL), LP_OK);
        assert_int_equal(lp_scan_heads(tm.m, &o, again, NULL), LP_OK);
        assert_memory_equal(sc, again, (size_t)nh * LP_SCAN_COUNT * sizeof *sc);
        free(again);
        free(sc);
        free(hm);
        unload(&tm);
    }
}

/* stories260K, a trained model, has a strong previous-token head (3.6); it is too small
 * for induction heads (its best scores about 0.01 on random tokens, 0.06 on repeated text). */
static void scan_finds_the_previous_token_head_of_stories260k(void **state) {
    (void)state;
    test_model tm = load(3);
    const lp_config *c = lp_model_config(tm.m);
    lp_scan_options o = {.seed = 1, .bos = 1, .avoid = {2, 0}};
    int nh = c->n_layer * c->n_head;
    float *sc = malloc((size_t)nh * LP_SCAN_COUNT * sizeof *sc);
    assert_int_equal(lp_scan_heads(tm.m, &o, sc, NULL), LP_OK);
    float best[LP_SCAN_COUNT] = {0};
    int at[LP_SCAN_COUNT] = {0};
    for (int h = 0; h < nh; h++)
        for (int k = 0; k < LP_SCAN_COUNT; k++)
            if (sc[h * LP_SCAN_COUNT + k] > best[k]) best[k] = sc[h * LP_SCAN_COUNT + k], at[k] = h;
    for (int k = 0; k < LP_SCAN_COUNT; k++)
        print_message("  stories260K best %-15s head %d.%d: %.3f\n", lp_scan_score_name((lp_scan_score)k),
                      at[k] / c->n_head, at[k] % c->n_head, best[k]);
    assert_true(best[LP_SCAN_PREV_TOKEN] >= LP_SCAN_THRESHOLD);
    assert_int_equal(at[LP_SCAN_PREV_TOKEN], 3 * c->n_head + 6);
    assert_true(best[LP_SCAN_INDUCTION] < LP_SCAN_THRESHOLD);
    free(sc);
    unload(&tm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dla_parts_add_up_to_the_logit),
        cmocka_unit_test(dla_rejects_bad_arguments),
        cmocka_unit_test(patching_with_the_clean_run_changes_nothing),
        cmocka_unit_test(patching_the_whole_residual_stream_gives_the_corrupt_logits),
        cmocka_unit_test(patching_layer0_at_a_position_is_swapping_the_token),
        cmocka_unit_test(batched_sweeps_match_single_patches),
        cmocka_unit_test(patching_rejects_mismatched_runs_and_bad_patches),
        cmocka_unit_test(scan_scores_are_the_head_metrics_of_its_sequence),
        cmocka_unit_test(scan_finds_the_previous_token_head_of_stories260k),
    };
    return cmocka_run_group_tests_name("circuits", tests, NULL, NULL);
}
