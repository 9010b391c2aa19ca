/* Circuits: direct logit attribution adds up to the logit, activation patching's
 * identities (and agreement between its batched and one-at-a-time paths and the plain
 * forward), and the head scan's scores against the per-head metrics of the same sequence. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "arch/model_impl.h"
#include "helpers.h"
#include "kernels/forward.h"
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
    NULL, /* stories260K */
    /* GPT-NeoX: the parallel block (attention and MLP read the same resid_pre) with a
     * quarter of each head rotated, and the sequential form */
    "--arch neox --d-model 48 --heads 3 --rotary-pct 0.25 --std 0.3 --seed 6",
    "--arch neox --sequential --rotary-pct 0.5 --std 0.3 --seed 7",
    /* Gemma 2: post-norms, soft caps small enough to bite, a window shorter than the runs,
     * heads * head_dim != d_model */
    "--arch gemma2 --layers 3 --heads 4 --head-dim 12 --kv-heads 2 --window 4 --query-scalar 12 --attn-cap 2 "
    "--final-cap 3 --std 0.3 --seed 8",
};
#define N_MODELS 7
#define NEOX_END 6 /* the GPT-NeoX models are 4 .. NEOX_END - 1 */
#define STORIES_I 3

typedef struct {
    lp_model *m;
    char *dir;
} test_model;

static test_model load(int i) {
    test_model t = {0};
    if (i == STORIES_I) {
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

static const char *model_name(int i) { return i == STORIES_I ? "stories260K" : ARCHS[i]; }

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
                assert_true(fabs(s.capped - metric_of(lg, top, contrast)) < 1e-9);
                /* Gemma 2: the parts add up to the logit before the final cap */
                float cap = c->final_softcap;
                if (!cap) assert_true(s.logit == s.capped);
                else if (contrast < 0) assert_true(fabs(cap * tanh(s.logit / cap) - s.capped) < 1e-5);
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
                lp_patch ps[3] = {{(lp_patch_site)s, l, -1, -1, false}, {(lp_patch_site)s, l, T / 2, -1, false},
                                  {(lp_patch_site)s, l, -1, s == LP_PATCH_Z ? 1 : -1, false}};
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
            lp_patch p = {LP_PATCH_RESID_PRE, l, -1, -1, false};
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
                    lp_patch p = s == LP_PATCH_Z ? (lp_patch){LP_PATCH_Z, l, -1, j, false} : (lp_patch){(lp_patch_site)s, l, j, -1, false};
                    assert_int_equal(lp_patch_logits(clean, corrupt, &p, lg), LP_OK);
                    worst = fmax(worst, fabs(vals[l * cols + j] - metric_of(lg, target, contrast)));
                }
            free(vals);
        }
        /* z of every head at every position = the attention output at every position. */
        for (int l = 0; l < c->n_layer; l++) {
            lp_patch pz = {LP_PATCH_Z, l, -1, -1, false}, pa = {LP_PATCH_ATTN_OUT, l, -1, -1, false};
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

/* GPT-NeoX's parallel block: the MLP reads resid_pre, so attn_out patched at the last layer
 * and position changes the output by that alone: final residual = clean resid_pre + the
 * corrupt run's attn_out + the clean MLP's output, through the final norm and embed_out. In
 * the sequential form the MLP reads the patched sum, and the same sum is off. */
static void parallel_block_mlp_does_not_read_patched_attention(void **state) {
    (void)state;
    for (int i = 4; i < NEOX_END; i++) {
        test_model tm = load(i);
        const lp_config *c = lp_model_config(tm.m);
        int T = 12, V = c->vocab, d = c->d_model, L = c->n_layer, ids[12], bad[12];
        make_ids(ids, T, V, 31);
        memcpy(bad, ids, sizeof ids);
        bad[T - 1] = (ids[T - 1] + 7) % V;
        lp_run *clean, *corrupt;
        assert_int_equal(lp_run_new(&clean, tm.m, ids, T), LP_OK);
        assert_int_equal(lp_run_new(&corrupt, tm.m, bad, T), LP_OK);
        lp_patch p = {LP_PATCH_ATTN_OUT, L - 1, T - 1, -1, false};
        float *got = malloc((size_t)V * sizeof *got), *want = malloc((size_t)V * sizeof *want);
        float *x = malloc((size_t)d * sizeof *x), *xn = malloc((size_t)d * sizeof *xn), scale;
        assert_int_equal(lp_patch_logits(clean, corrupt, &p, got), LP_OK);
        lp_view pre, ao, mo;
        lp_run_view(clean, LP_ACT_RESID_PRE, L - 1, -1, &pre);
        lp_run_view(corrupt, LP_ACT_ATTN_OUT, L - 1, -1, &ao);
        lp_run_view(clean, LP_ACT_MLP_OUT, L - 1, -1, &mo);
        for (int j = 0; j < d; j++)
            x[j] = pre.data[(T - 1) * pre.stride[0] + j] + ao.data[(T - 1) * ao.stride[0] + j] +
                   mo.data[(T - 1) * mo.stride[0] + j];
        lp_norm(xn, &scale, x, tm.m->lnf_w, tm.m->lnf_b, 1, d, c->norm, c->norm_eps);
        lp_linear_forward(want, xn, &tm.m->unembed, 1);
        double err = max_diff(got, want, V), moved = max_diff(got, lp_run_logits(clean, T - 1), V);
        print_message("  %-40.40s attn_out patched at the last layer: |logits - (pre + attn' + mlp)| %.1e (patch "
                      "moved them %.2f)\n", model_name(i), err, moved);
        assert_true(moved > 0.05); /* the patch does something */
        if (c->parallel_block) assert_true(err < TOL);
        else assert_true(err > 1e-3);
        free(got), free(want), free(x), free(xn);
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
    lp_patch bad[] = {{LP_PATCH_RESID_PRE, 2, 0, -1, false}, {LP_PATCH_RESID_PRE, 0, 5, -1, false}, {LP_PATCH_ATTN_OUT, 0, 0, 1, false},
                      {LP_PATCH_Z, 0, 0, 4, false}};
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
    test_model tm = load(STORIES_I);
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

/* ---- encoders (tests/fixtures/encoders): post-norm blocks, bidirectional attention, a head ---- */

#define ENC "tests/fixtures/encoders/"
static const char *const ENCODERS[] = {"bert_mlm", "bert_cls", "roberta_mlm", "roberta_cls", "distilbert_mlm",
                                       "distilbert_cls"};
#define N_ENCODERS 6

/* A clean sentence pair and its corruption (two word ids changed, types kept): ids from the
 * fixtures' shared vocabulary ([CLS] 2, [SEP] 3, [MASK] 4; RoBERTa's <s> 0, </s> 2, <mask> 4
 * read the same rows as ordinary tokens where they differ). Position 3 is the mask. */
typedef struct {
    lp_model *m;
    lp_run *clean, *corrupt;
    int T, pos, target, contrast, W;
} enc_pair;

static int argmax_f(const float *x, int n, int not) {
    int best = not == 0 ? 1 : 0;
    for (int i = 0; i < n; i++)
        if (i != not && x[i] > x[best]) best = i;
    return best;
}

static enc_pair enc_load(const char *name) {
    enc_pair e = {0};
    char dir[256];
    snprintf(dir, sizeof dir, ENC "%s", name);
    if (lp_model_load(&e.m, dir, NULL)) fail_msg("%s: %s", name, lp_errmsg());
    const lp_config *c = lp_model_config(e.m);
    static const int clean[] = {2, 65, 100, 4, 99, 106, 5, 3, 94, 83, 72, 81, 3};
    static const int corrupt[] = {2, 65, 104, 4, 99, 106, 5, 3, 94, 84, 72, 81, 3};
    int types[13] = {0};
    for (int i = 8; i < 13 && c->type_vocab > 1; i++) types[i] = 1;
    e.T = 13;
    assert_int_equal(lp_run_new_typed(&e.clean, e.m, clean, types, e.T), LP_OK);
    assert_int_equal(lp_run_new_typed(&e.corrupt, e.m, corrupt, types, e.T), LP_OK);
    e.pos = c->head == LP_HEAD_CLASSIFIER ? 0 : 3;
    e.W = lp_run_out_width(e.clean);
    e.target = argmax_f(lp_run_logits(e.clean, e.pos), e.W, -1);
    e.contrast = argmax_f(lp_run_logits(e.corrupt, e.pos), e.W, e.target);
    return e;
}

static void enc_free(enc_pair *e) {
    lp_run_free(e->clean);
    lp_run_free(e->corrupt);
    lp_model_free(e->m);
}

static double enc_metric(const enc_pair *e, const lp_run *r) {
    const float *lg = lp_run_logits(r, e->pos);
    return (double)lg[e->target] - lg[e->contrast];
}

/* In an encoder a patch changes every position (attention looks both ways): patching the
 * whole residual stream entering any layer gives the corrupted run's metric (noising) or the
 * clean one's (denoising); re-running with the clean run's own activations changes no logit;
 * patching layer 0's stream at the one changed position is running the clean tokens with that
 * token swapped, a plain forward (the other changed token differs between the two). Measured
 * worst 1.9e-6 (Haswell kernel) and 1.4e-6 (OpenBLAS's default); bound 1e-5 of max(1, |x|). */
static void encoder_patching_identities(void **state) {
    (void)state;
    for (int k = 0; k < N_ENCODERS; k++) {
        enc_pair e = enc_load(ENCODERS[k]);
        const lp_config *c = lp_model_config(e.m);
        double m_clean = enc_metric(&e, e.clean), m_corrupt = enc_metric(&e, e.corrupt), worst = 0;
        assert_true(fabs(m_clean - m_corrupt) > 1e-3); /* the pair makes a difference */
        for (int l = 0; l < c->n_layer; l++) {
            lp_patch p = {LP_PATCH_RESID_PRE, l, -1, -1, false};
            float got[2];
            assert_int_equal(lp_patch_metric_at(e.clean, e.corrupt, &p, 1, e.pos, e.target, e.contrast, got), LP_OK);
            assert_int_equal(lp_patch_metric_at(e.corrupt, e.clean, &p, 1, e.pos, e.target, e.contrast, got + 1), LP_OK);
            worst = fmax(worst, fabs(got[0] - m_corrupt) / fmax(1, fabs(m_corrupt)));
            worst = fmax(worst, fabs(got[1] - m_clean) / fmax(1, fabs(m_clean)));
            for (int s = 0; s < LP_PATCH_SITE_COUNT; s++) { /* the clean run into itself */
                lp_patch q = {(lp_patch_site)s, l, s == LP_PATCH_Z ? -1 : 5, -1, false};
                float *lg = malloc((size_t)e.W * sizeof *lg);
                assert_int_equal(lp_patch_logits_at(e.clean, e.clean, &q, e.pos, lg), LP_OK);
                for (int j = 0; j < e.W; j++) {
                    double want = lp_run_logits(e.clean, e.pos)[j];
                    worst = fmax(worst, fabs(lg[j] - want) / fmax(1, fabs(want)));
                }
                free(lg);
            }
        }
        /* layer 0 at position 2: the clean tokens with token 2 swapped */
        int ids[13];
        memcpy(ids, lp_run_ids(e.clean), sizeof ids);
        ids[2] = lp_run_ids(e.corrupt)[2];
        lp_run *swapped;
        assert_int_equal(lp_run_new_typed(&swapped, e.m, ids, lp_run_types(e.clean), e.T), LP_OK);
        lp_patch p = {LP_PATCH_RESID_PRE, 0, 2, -1, false};
        float got;
        assert_int_equal(lp_patch_metric_at(e.clean, e.corrupt, &p, 1, e.pos, e.target, e.contrast, &got), LP_OK);
        double want = enc_metric(&e, swapped);
        worst = fmax(worst, fabs(got - want) / fmax(1, fabs(want)));
        assert_true(fabs(want - m_clean) > 1e-4); /* every position sees the swap, the mask's included */
        lp_run_free(swapped);
        printf("%s: patching identities worst %.2g\n", ENCODERS[k], worst);
        assert_true(worst < 1e-5);
        enc_free(&e);
    }
}

/* A sweep (patches stacked into one batch per layer) equals the same patches one at a time
 * through lp_patch_logits_at; patching every head's z is patching attn_out. Measured worst
 * 2.9e-6 (Haswell) and 3.3e-6 (default kernel); bound 1e-5. */
static void encoder_sweeps_match_single_patches(void **state) {
    (void)state;
    for (int k = 0; k < N_ENCODERS; k++) {
        enc_pair e = enc_load(ENCODERS[k]);
        const lp_config *c = lp_model_config(e.m);
        int L = c->n_layer, H = c->n_head;
        float *vals = malloc((size_t)L * (e.T > H ? e.T : H) * sizeof *vals), *lg = malloc((size_t)e.W * sizeof *lg);
        double worst = 0;
        for (int s = 0; s < LP_PATCH_SITE_COUNT; s++) {
            int cols = s == LP_PATCH_Z ? H : e.T;
            assert_int_equal(lp_patch_sweep_at(e.clean, e.corrupt, (lp_patch_site)s, e.pos, e.target, e.contrast, vals),
                             LP_OK);
            for (int l = 0; l < L; l++)
                for (int j = 0; j < cols; j++) {
                    lp_patch p = s == LP_PATCH_Z ? (lp_patch){LP_PATCH_Z, l, -1, j, false} : (lp_patch){(lp_patch_site)s, l, j, -1, false};
                    assert_int_equal(lp_patch_logits_at(e.clean, e.corrupt, &p, e.pos, lg), LP_OK);
                    double want = (double)lg[e.target] - lg[e.contrast];
                    worst = fmax(worst, fabs(vals[l * cols + j] - want) / fmax(1, fabs(want)));
                }
        }
        float *lz = malloc((size_t)e.W * sizeof *lz);
        for (int l = 0; l < L; l++) {
            lp_patch pz = {LP_PATCH_Z, l, -1, -1, false}, pa = {LP_PATCH_ATTN_OUT, l, -1, -1, false};
            assert_int_equal(lp_patch_logits_at(e.clean, e.corrupt, &pz, e.pos, lz), LP_OK);
            assert_int_equal(lp_patch_logits_at(e.clean, e.corrupt, &pa, e.pos, lg), LP_OK);
            for (int j = 0; j < e.W; j++) worst = fmax(worst, fabs(lz[j] - lg[j]) / fmax(1, fabs(lg[j])));
        }
        printf("%s: sweeps vs single patches worst %.2g\n", ENCODERS[k], worst);
        assert_true(worst < 1e-5);
        free(vals), free(lg), free(lz);
        enc_free(&e);
    }
}

/* Patching against the float64 reference (tests/fixtures/encoder_patch_reference.py writes
 * patch.json for bert_mlm and roberta_cls, on enc_load's pair): every sweep of every site,
 * and the clean and corrupted metrics, within 1e-4 of max(1, |x|). Measured worst 2.4e-6
 * (Haswell) and 2.0e-6 (default kernel). */
static void encoder_patching_matches_the_float64_reference(void **state) {
    (void)state;
    static const char *const sites[LP_PATCH_SITE_COUNT] = {"resid_pre", "attn_out", "mlp_out", "z"};
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "roberta_cls" : "bert_mlm";
        char path[256];
        snprintf(path, sizeof path, ENC "%s/patch.json", name);
        json_error_t err;
        json_t *ref = json_load_file(path, 0, &err);
        if (!ref) fail_msg("%s: %s", path, err.text);
        enc_pair e = enc_load(name);
        const lp_config *c = lp_model_config(e.m);
        assert_int_equal(json_integer_value(json_object_get(ref, "pos")), e.pos);
        assert_int_equal(json_integer_value(json_object_get(ref, "target")), e.target);
        assert_int_equal(json_integer_value(json_object_get(ref, "contrast")), e.contrast);
        double worst = 0, want = json_number_value(json_object_get(ref, "clean"));
        worst = fmax(worst, fabs(enc_metric(&e, e.clean) - want) / fmax(1, fabs(want)));
        want = json_number_value(json_object_get(ref, "corrupt"));
        worst = fmax(worst, fabs(enc_metric(&e, e.corrupt) - want) / fmax(1, fabs(want)));
        float *vals = malloc((size_t)c->n_layer * e.T * sizeof *vals);
        for (int s = 0; s < LP_PATCH_SITE_COUNT; s++) {
            int cols = s == LP_PATCH_Z ? c->n_head : e.T;
            json_t *rows = json_object_get(ref, sites[s]);
            assert_int_equal(json_array_size(rows), (size_t)c->n_layer);
            assert_int_equal(lp_patch_sweep_at(e.clean, e.corrupt, (lp_patch_site)s, e.pos, e.target, e.contrast, vals),
                             LP_OK);
            for (int l = 0; l < c->n_layer; l++) {
                assert_int_equal(json_array_size(json_array_get(rows, l)), (size_t)cols);
                for (int j = 0; j < cols; j++) {
                    want = json_number_value(json_array_get(json_array_get(rows, l), j));
                    worst = fmax(worst, fabs(vals[l * cols + j] - want) / fmax(1, fabs(want)));
                }
            }
        }
        printf("%s: patching vs the float64 reference worst %.2g\n", name, worst);
        assert_true(worst < 1e-4);
        free(vals);
        json_decref(ref);
        enc_free(&e);
    }
}

/* What encoder patching refuses: a classifier read anywhere but 0, labels past the
 * classifier's, a decoder read before its last position (a bare encoder: below). */
static void encoder_patching_refusals(void **state) {
    (void)state;
    enc_pair e = enc_load("bert_cls");
    lp_patch p = {LP_PATCH_RESID_PRE, 0, 1, -1, false};
    float out[4];
    assert_int_equal(lp_patch_metric_at(e.clean, e.corrupt, &p, 1, 2, 0, 1, out), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "position 0"));
    assert_int_equal(lp_patch_metric_at(e.clean, e.corrupt, &p, 1, 0, 3, 1, out), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "labels (0..2)"));
    enc_free(&e);
    lp_run *r;
    int ids[4] = {2, 65, 66, 3};
    test_model tm = load(0);
    assert_int_equal(lp_run_new(&r, tm.m, ids, 4), LP_OK);
    assert_int_equal(lp_patch_metric_at(r, r, &p, 1, 2, 0, -1, out), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "last position"));
    lp_run_free(r);
    unload(&tm);
}

/* ---- encoders' DLA: frozen post-norms, the head linearised at the run ---- */

/* v (d) carried up from norm k (2l: layer l's LN1, 2l + 1: its LN2) through every norm after,
 * each with its run's scale at pos frozen and no bias: s w (v - mean v). */
static void carry_up(double *v, const lp_model *m, const lp_run *r, int pos, int k) {
    int d = m->cfg.d_model;
    for (; k < 2 * m->cfg.n_layer; k++) {
        lp_view sv;
        assert_int_equal(lp_run_view(r, k % 2 ? LP_ACT_LN2_SCALE : LP_ACT_LN1_SCALE, k / 2, -1, &sv), LP_OK);
        const float *w = k % 2 ? m->layers[k / 2].ln2_w : m->layers[k / 2].ln1_w;
        double mean = 0;
        for (int j = 0; j < d; j++) mean += v[j];
        mean /= d;
        for (int j = 0; j < d; j++) v[j] = sv.data[pos] * w[j] * (v[j] - mean);
    }
}

/* acc (d) += row `pos` of a view, carried up from norm k. */
static void add_carried(double *acc, double *tmp, const float *row, const lp_model *m, const lp_run *r, int pos, int k) {
    for (int j = 0; j < m->cfg.d_model; j++) tmp[j] = row ? row[j] : 0;
    carry_up(tmp, m, r, pos, k);
    for (int j = 0; j < m->cfg.d_model; j++) acc[j] += tmp[j];
}

/* The objective on the head at x (d) + eps * p (d). */
static double head_objective(const lp_model *m, const float *x, const double *p, double eps, int target, int contrast) {
    int d = m->cfg.d_model, W = m->unembed.out;
    float *buf = malloc(((size_t)3 * d + W) * sizeof *buf), *h = buf + d, *lg = buf + 2 * d;
    for (int j = 0; j < d; j++) buf[j] = (float)(x[j] + eps * p[j]);
    lp_head_forward(h, lg, m, buf, 1);
    double f = (double)lg[target] - (contrast >= 0 ? lg[contrast] : 0.0);
    free(buf);
    return f;
}

/* The first-order part of p (d, at the top): a central difference of the head's objective. */
static double fd_part(const lp_model *m, const float *x, const double *p, int target, int contrast) {
    const double eps = 1e-2;
    return (head_objective(m, x, p, eps, target, contrast) - head_objective(m, x, p, -eps, target, contrast)) / (2 * eps);
}

/* The closure that must hold: every part (the embeddings, each head's z_h W_O[h], the output
 * biases, each MLP, each norm's bias) carried up through the frozen norms adds up to the last
 * layer's output (measured worst 1.8e-7 relative with the Haswell kernel, 1.4e-7 with the
 * default; bound 1e-5). Then each of lp_dla's parts against a central difference of the
 * head's objective along that part's carried vector (step 1e-2, float heads; measured worst
 * 1.1e-4 of max(1, |part|) Haswell, 1.0e-4 default; bound 1e-3), the parts' sum against the same along x itself, the remainder, and a layer's
 * neurons against its MLP less its output bias. */
static void encoder_dla_is_first_order_in_the_head(void **state) {
    (void)state;
    for (int k = 0; k < N_ENCODERS; k++) {
        enc_pair e = enc_load(ENCODERS[k]);
        const lp_model *m = e.m;
        const lp_config *c = &m->cfg;
        int d = c->d_model, L = c->n_layer, H = c->n_head, dh = c->d_head, pos = e.pos;
        float *heads = malloc((size_t)L * H * sizeof *heads), *mlp = malloc((size_t)L * sizeof *mlp);
        float *neur = malloc((size_t)c->d_mlp * sizeof *neur);
        double *sum = calloc((size_t)d, sizeof *sum), *tmp = malloc((size_t)d * sizeof *tmp);
        double *attn_b = calloc((size_t)d, sizeof *attn_b), *norm_b = calloc((size_t)d, sizeof *norm_b);
        double *part = malloc((size_t)d * sizeof *part), worst_closure = 0, worst_fd = 0;
        lp_dla_sums S;
        assert_int_equal(lp_dla(e.clean, pos, e.target, e.contrast, heads, mlp, &S), LP_OK);
        assert_int_equal(S.linearised, 1);
        lp_view v, top;
        assert_int_equal(lp_run_view(e.clean, LP_ACT_LN_FINAL, 0, -1, &top), LP_OK);
        const float *x = top.data + (size_t)pos * top.stride[0];
        assert_true(fabs(S.logit - enc_metric(&e, e.clean)) < 1e-4);
        lp_run_view(e.clean, LP_ACT_RESID_PRE, 0, -1, &v);
        add_carried(sum, tmp, v.data + (size_t)pos * v.stride[0], m, e.clean, pos, 0);
        worst_fd = fmax(worst_fd, fabs(fd_part(m, x, tmp, e.target, e.contrast) - S.embed) / fmax(1, fabs(S.embed)));
        for (int l = 0; l < L; l++) {
            const lp_layer *w = &m->layers[l];
            lp_run_view(e.clean, LP_ACT_Z, l, -1, &v);
            const float *z = v.data + (size_t)pos * v.stride[0];
            for (int h = 0; h < H; h++) { /* z_h W_O[h]: its rows of W_O */
                for (int j = 0; j < d; j++) {
                    double a = 0;
                    for (int i = h * dh; i < (h + 1) * dh; i++)
                        a += (double)z[i] * (w->o.trans ? w->o.w[(size_t)j * w->o.ld + i] : w->o.w[(size_t)i * w->o.ld + j]);
                    part[j] = a;
                }
                carry_up(part, m, e.clean, pos, 2 * l);
                for (int j = 0; j < d; j++) sum[j] += part[j];
                double fd = fd_part(m, x, part, e.target, e.contrast), got = heads[l * H + h];
                worst_fd = fmax(worst_fd, fabs(fd - got) / fmax(1, fabs(got)));
            }
            add_carried(attn_b, tmp, w->o.b, m, e.clean, pos, 2 * l);
            add_carried(norm_b, tmp, w->ln1_b, m, e.clean, pos, 2 * l + 1);
            add_carried(norm_b, tmp, w->ln2_b, m, e.clean, pos, 2 * l + 2);
            lp_run_view(e.clean, LP_ACT_MLP_OUT, l, -1, &v);
            add_carried(sum, tmp, v.data + (size_t)pos * v.stride[0], m, e.clean, pos, 2 * l + 1);
            double fd = fd_part(m, x, tmp, e.target, e.contrast);
            worst_fd = fmax(worst_fd, fabs(fd - mlp[l]) / fmax(1, fabs(mlp[l])));
            /* neurons: the MLP less its output bias */
            assert_int_equal(lp_dla_neurons(e.clean, l, pos, e.target, e.contrast, neur), LP_OK);
            double ns = 0;
            for (int i = 0; i < c->d_mlp; i++) ns += neur[i];
            add_carried(part, tmp, w->down.b, m, e.clean, pos, 2 * l + 1); /* part: scratch */
            double fb = fd_part(m, x, tmp, e.target, e.contrast);
            worst_fd = fmax(worst_fd, fabs(ns + fb - mlp[l]) / fmax(1, fabs(mlp[l])));
        }
        for (int j = 0; j < d; j++) sum[j] += attn_b[j] + norm_b[j];
        for (int j = 0; j < d; j++) worst_closure = fmax(worst_closure, fabs(sum[j] - x[j]) / fmax(1, fabs(x[j])));
        double fa = fd_part(m, x, attn_b, e.target, e.contrast), fn = fd_part(m, x, norm_b, e.target, e.contrast);
        worst_fd = fmax(worst_fd, fabs(fa - S.attn_bias) / fmax(1, fabs(S.attn_bias)));
        worst_fd = fmax(worst_fd, fabs(fn - S.norm_bias) / fmax(1, fabs(S.norm_bias)));
        for (int j = 0; j < d; j++) part[j] = x[j];
        double fx = fd_part(m, x, part, e.target, e.contrast);
        worst_fd = fmax(worst_fd, fabs(fx - S.total) / fmax(1, fabs(S.total)));
        double parts = S.embed + S.bias;
        for (int j = 0; j < L * H; j++) parts += heads[j];
        for (int l = 0; l < L; l++) parts += mlp[l];
        assert_true(fabs(parts - S.total) < 1e-4);
        assert_true(fabs(S.remainder - (S.logit - S.total)) < 1e-9);
        assert_true(fabs(S.remainder) > 1e-3); /* the head is not linear: no pretence of closure */
        printf("%s: frozen-norm closure %.2g, first order vs finite difference %.2g, remainder %.3f of %.3f\n",
               ENCODERS[k], worst_closure, worst_fd, S.remainder, S.logit);
        assert_true(worst_closure < 1e-5);
        assert_true(worst_fd < 1e-3);
        free(heads), free(mlp), free(neur), free(sum), free(tmp), free(attn_b), free(norm_b), free(part);
        enc_free(&e);
    }
}

/* dla on encoders refuses what has no logit: a classifier away from 0, labels past the
 * classifier's, and (with patch) a bare encoder. */
static void encoder_dla_refusals(void **state) {
    (void)state;
    enc_pair e = enc_load("bert_cls");
    float heads[64], mlp[8], neur[512];
    assert_int_equal(lp_dla(e.clean, 3, 0, -1, heads, mlp, NULL), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "position 0"));
    assert_int_equal(lp_dla(e.clean, 0, 3, -1, heads, mlp, NULL), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "the labels (0..2)"));
    assert_int_equal(lp_dla_neurons(e.clean, 2, 0, 0, -1, neur), LP_EINVAL);
    enc_free(&e);
    /* a bare encoder has no logit: patch, dla and neurons' dla refuse it */
    lp_model *m;
    lp_run *r;
    int ids[4] = {2, 65, 66, 3};
    lp_patch p = {LP_PATCH_RESID_PRE, 0, 1, -1, false};
    float out[1];
    assert_int_equal(lp_model_load(&m, ENC "bert_model", NULL), LP_OK);
    assert_int_equal(lp_run_new(&r, m, ids, 4), LP_OK);
    assert_int_equal(lp_patch_metric_at(r, r, &p, 1, 0, 0, -1, out), LP_EUNSUPPORTED);
    assert_non_null(strstr(lp_errmsg(), "no output head"));
    assert_int_equal(lp_dla(r, 0, 0, -1, heads, mlp, NULL), LP_EUNSUPPORTED);
    assert_non_null(strstr(lp_errmsg(), "no output head"));
    assert_int_equal(lp_dla_neurons(r, 0, 0, 0, -1, neur), LP_EUNSUPPORTED);
    lp_run_free(r);
    lp_model_free(m);
}

/* ---- encoders' head metrics and scan (Clark et al. 2019) ---- */

/* The four metrics of heads.h recomputed by hand from each head's pattern, on a BERT
 * sentence pair (two [SEP]s), a RoBERTa pair (<s> A </s></s> B </s>), a two-token run
 * ([CLS] [SEP]: the sinks add up to 1, next_token is A[0, 1], broad the entropy over ln 2)
 * and a run without special tokens (sinks undefined). Bound 1e-6 (float patterns summed in
 * double both ways). */
static void encoder_head_metrics_by_hand(void **state) {
    (void)state;
    static const struct {
        const char *model;
        int ids[16], n;
    } runs[] = {
        {"bert_mlm", {2, 65, 100, 4, 99, 106, 5, 3, 94, 83, 72, 3}, 12},
        {"roberta_mlm", {0, 65, 100, 4, 99, 2, 2, 94, 83, 72, 2}, 11},
        {"bert_cls", {2, 3}, 2},
        {"distilbert_mlm", {65, 100, 99}, 3},
    };
    for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
        char dir[256];
        snprintf(dir, sizeof dir, ENC "%s", runs[k].model);
        lp_model *m;
        lp_run *r;
        assert_int_equal(lp_model_load(&m, dir, NULL), LP_OK);
        const lp_config *c = lp_model_config(m);
        int T = runs[k].n, cls = runs[k].model[0] == 'r' ? 0 : 2, sep = runs[k].model[0] == 'r' ? 2 : 3;
        assert_int_equal(lp_run_new(&r, m, runs[k].ids, T), LP_OK);
        float *em = malloc((size_t)c->n_layer * c->n_head * LP_HEAD_ENCODER_METRIC_COUNT * sizeof *em);
        lp_head_metrics_encoder(em, r);
        bool specials = false;
        for (int j = 0; j < T; j++) specials |= runs[k].ids[j] == cls || runs[k].ids[j] == sep;
        for (int l = 0; l < c->n_layer; l++)
            for (int h = 0; h < c->n_head; h++) {
                lp_view v;
                assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, l, h, &v), LP_OK);
                double next = 0, to_cls = 0, to_sep = 0, ent = 0;
                for (int i = 0; i < T; i++) {
                    const float *row = v.data + (size_t)i * v.stride[0];
                    if (i + 1 < T) next += row[i + 1];
                    for (int j = 0; j < T; j++) {
                        if (row[j] > 0) ent -= row[j] * log(row[j]);
                        if (runs[k].ids[j] == cls) to_cls += row[j];
                        if (runs[k].ids[j] == sep) to_sep += row[j];
                    }
                }
                const float *o = em + ((size_t)l * c->n_head + h) * LP_HEAD_ENCODER_METRIC_COUNT;
                assert_true(fabs(o[LP_HEAD_NEXT_TOKEN - LP_HEAD_METRIC_COUNT] - next / (T - 1)) < 1e-6);
                assert_true(fabs(o[LP_HEAD_BROAD - LP_HEAD_METRIC_COUNT] - ent / T / log(T)) < 1e-6);
                if (!specials) {
                    assert_true(isnan(o[LP_HEAD_CLS_SINK - LP_HEAD_METRIC_COUNT]));
                    assert_true(isnan(o[LP_HEAD_SEP_SINK - LP_HEAD_METRIC_COUNT]));
                    continue;
                }
                assert_true(fabs(o[LP_HEAD_CLS_SINK - LP_HEAD_METRIC_COUNT] - to_cls / T) < 1e-6);
                assert_true(fabs(o[LP_HEAD_SEP_SINK - LP_HEAD_METRIC_COUNT] - to_sep / T) < 1e-6);
                if (T == 2) { /* every key is [CLS] or [SEP] */
                    assert_true(fabs(o[LP_HEAD_CLS_SINK - LP_HEAD_METRIC_COUNT] + o[LP_HEAD_SEP_SINK - LP_HEAD_METRIC_COUNT] - 1) < 1e-6);
                    assert_true(fabs(o[LP_HEAD_NEXT_TOKEN - LP_HEAD_METRIC_COUNT] - v.data[1]) < 1e-7);
                }
            }
        free(em);
        lp_run_free(r);
        lp_model_free(m);
    }
}

/* An encoder's scan on one sequence is the head metrics of a run of it, and on two their
 * mean; its sequences are [CLS], distinct non-special tokens, [SEP]. Bound 1e-6. */
static void encoder_scan_is_the_metrics_of_its_sequences(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        lp_model *m;
        assert_int_equal(lp_model_load(&m, k ? ENC "roberta_cls" : ENC "bert_mlm", NULL), LP_OK);
        const lp_config *c = lp_model_config(m);
        int cls = k ? 0 : 2, sep = k ? 2 : 3, nh = c->n_layer * c->n_head, ids[64], n;
        lp_scan_options o = {.seq_len = 12, .n_seqs = 2, .seed = 5, .bos = -1, .avoid = {-1, -1}};
        float *sc = malloc((size_t)nh * LP_ESCAN_COUNT * sizeof *sc), *want = calloc((size_t)nh * LP_ESCAN_COUNT, sizeof *want);
        float *hm = malloc((size_t)nh * LP_HEAD_METRIC_COUNT * sizeof *hm);
        float *em = malloc((size_t)nh * LP_HEAD_ENCODER_METRIC_COUNT * sizeof *em);
        int N;
        assert_int_equal(lp_scan_heads_encoder(m, &o, sc, &N), LP_OK);
        assert_int_equal(N, 12);
        for (int b = 0; b < 2; b++) {
            assert_int_equal(lp_scan_sequence(m, &o, b, ids, &n), LP_OK);
            assert_int_equal(n, 14);
            assert_int_equal(ids[0], cls);
            assert_int_equal(ids[13], sep);
            for (int i = 1; i < 13; i++) {
                assert_true(ids[i] > 4); /* the fixtures' specials are 0..4 */
                for (int j = 1; j < i; j++) assert_int_not_equal(ids[i], ids[j]);
            }
            lp_run *r;
            assert_int_equal(lp_run_new(&r, m, ids, n), LP_OK);
            lp_head_metrics(hm, r);
            lp_head_metrics_encoder(em, r);
            for (int i = 0; i < nh; i++) {
                float *w = want + (size_t)i * LP_ESCAN_COUNT;
                w[LP_ESCAN_PREV_TOKEN] += hm[i * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN] / 2;
                for (int q = 0; q < 4; q++) w[LP_ESCAN_NEXT_TOKEN + q] += em[i * LP_HEAD_ENCODER_METRIC_COUNT + q] / 2;
            }
            lp_run_free(r);
        }
        for (int i = 0; i < nh * LP_ESCAN_COUNT; i++) assert_true(fabs(sc[i] - want[i]) < 1e-6);
        /* refusals: too long, and each scan for its kind of model */
        o.seq_len = c->n_ctx;
        assert_int_equal(lp_scan_heads_encoder(m, &o, sc, NULL), LP_EINVAL);
        assert_non_null(strstr(lp_errmsg(), "between [CLS] and [SEP]"));
        assert_int_equal(lp_scan_max_len(m, &o), c->n_ctx - 2);
        assert_int_equal(lp_scan_heads(m, &o, sc, NULL), LP_EUNSUPPORTED);
        free(sc), free(want), free(hm), free(em);
        lp_model_free(m);
    }
    test_model tm = load(0);
    lp_scan_options o = {.bos = -1, .avoid = {-1, -1}};
    float sc[4096];
    assert_int_equal(lp_scan_heads_encoder(tm.m, &o, sc, NULL), LP_EINVAL);
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
        cmocka_unit_test(parallel_block_mlp_does_not_read_patched_attention),
        cmocka_unit_test(scan_scores_are_the_head_metrics_of_its_sequence),
        cmocka_unit_test(scan_finds_the_previous_token_head_of_stories260k),
        cmocka_unit_test(encoder_patching_identities),
        cmocka_unit_test(encoder_sweeps_match_single_patches),
        cmocka_unit_test(encoder_patching_matches_the_float64_reference),
        cmocka_unit_test(encoder_patching_refusals),
        cmocka_unit_test(encoder_dla_is_first_order_in_the_head),
        cmocka_unit_test(encoder_dla_refusals),
        cmocka_unit_test(encoder_head_metrics_by_hand),
        cmocka_unit_test(encoder_scan_is_the_metrics_of_its_sequences),
    };
    return cmocka_run_group_tests_name("circuits", tests, NULL, NULL);
}
