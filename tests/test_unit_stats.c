/* Per-unit aggregates (unit_stats.h): the fixed bins, the total order of examples, a state
 * that does not depend on the order items arrive in (what makes merged shards equal one
 * process), bytes that load back to the same state, and values that are the run's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/heads.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/tokenizer.h"
#include "loupe/unit_stats.h"

static void bins_are_fixed_edges(void **state) {
    (void)state;
    assert_int_equal(lp_unit_bin(0.0), 0);
    assert_int_equal(lp_unit_bin(-3.0), 0);
    assert_int_equal(lp_unit_bin(NAN), 0);
    assert_int_equal(lp_unit_bin(1e-4), 1);
    assert_int_equal(lp_unit_bin(1e-3), 2);
    assert_int_equal(lp_unit_bin(0.0017), 2);
    assert_int_equal(lp_unit_bin(0.0018), 3);
    assert_int_equal(lp_unit_bin(1.0), 14);
    assert_int_equal(lp_unit_bin(999.0), 25);
    assert_int_equal(lp_unit_bin(1000.0), 26);
    assert_int_equal(lp_unit_bin(INFINITY), 26);
    assert_true(lp_unit_bin_lower(14) == 1.0);
    assert_true(lp_unit_bin_lower(1) == 0.0);
    assert_true(isinf(lp_unit_bin_lower(0)));
    for (int b = 2; b < LP_UNIT_BINS; b++) assert_int_equal(lp_unit_bin(lp_unit_bin_lower(b)), b);
    /* heads' bins: twentieths of [0, 1], 1 in the last, nothing outside */
    assert_int_equal(lp_unit_head_bin(0.0f), 0);
    assert_int_equal(lp_unit_head_bin(-0.5f), 0);
    assert_int_equal(lp_unit_head_bin(NAN), 0);
    assert_int_equal(lp_unit_head_bin(0.049f), 0);
    assert_int_equal(lp_unit_head_bin(0.051f), 1);
    assert_int_equal(lp_unit_head_bin(0.5f), 10);
    assert_int_equal(lp_unit_head_bin(0.999f), 19);
    assert_int_equal(lp_unit_head_bin(1.0f), 19);
    assert_int_equal(lp_unit_head_bin(1.5f), 19);
    for (int b = 1; b < LP_HEAD_BINS; b++) {
        float lo = (float)lp_unit_head_bin_lower(b);
        assert_int_equal(lp_unit_head_bin(nextafterf(lo, 2.0f)), b);
        assert_int_equal(lp_unit_head_bin(nextafterf(lo, 0.0f)), b - 1);
    }
}

static void metric_names_go_both_ways(void **state) {
    (void)state;
    assert_string_equal(lp_unit_metric_name(LP_UNIT_NEURON), "activation");
    assert_string_equal(lp_unit_metric_name(LP_UNIT_HEAD), "key");
    for (int k = LP_UNIT_HEAD; k < LP_UNIT_KINDS; k++) {
        lp_unit_kind back;
        assert_int_equal(lp_unit_head_kind_from_name(lp_unit_metric_name((lp_unit_kind)k), &back), LP_OK);
        assert_int_equal(back, k);
    }
    assert_string_equal(lp_unit_metric_name((lp_unit_kind)(LP_UNIT_HEAD_BY + LP_HEAD_INDUCTION)), "induction");
    lp_unit_kind k;
    assert_int_equal(lp_unit_head_kind_from_name("activation", &k), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "induction"));
}

/* add_run bins floats by a table of their bits: the same bin as lp_unit_bin for every float
 * that could differ (a few ulps around every edge, each power of two's range, the ends) and
 * for a sweep of every sign's bit patterns, NaNs' too. */
static void float_bins_by_table_equal_the_edges(void **state) {
    (void)state;
    const float special[] = {0.0f, -0.0f, -1.0f, NAN, -NAN, INFINITY, -INFINITY, 1e-45f, 1.17549435e-38f, 3.4028235e38f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        assert_int_equal(lp_unit_bin_f(special[i]), lp_unit_bin(special[i]));
    for (int b = 2; b < LP_UNIT_BINS; b++) {
        float f = (float)lp_unit_bin_lower(b);
        for (int k = 0; k < 8; k++) f = nextafterf(f, 0.0f);
        for (int k = 0; k < 16; k++, f = nextafterf(f, INFINITY)) assert_int_equal(lp_unit_bin_f(f), lp_unit_bin(f));
    }
    for (uint64_t b64 = 1; b64 <= 0xffffffffu; b64 += 997) { /* positive, negative, NaN payloads */
        uint32_t bits = (uint32_t)b64;
        float f;
        memcpy(&f, &bits, sizeof f);
        assert_int_equal(lp_unit_bin_f(f), lp_unit_bin(f));
    }
}

static void examples_have_a_total_order(void **state) {
    (void)state;
    lp_unit_example a = {5, 2, -1, 0, -1, 1.5f}, b = a;
    assert_false(lp_unit_example_before(&a, &b));
    b.value = 2.0f;
    assert_true(lp_unit_example_before(&b, &a));
    b = a, b.item = 4;
    assert_true(lp_unit_example_before(&b, &a));
    b = a, b.pos = 1;
    assert_true(lp_unit_example_before(&b, &a));
    b = a, b.key_pos = -2;
    assert_true(lp_unit_example_before(&b, &a));
}

static const lp_unit_stats_config CFG = {2, 3, 2, true, true, 4, 2, 0, {0}};

/* Offers n examples (values with many ties) to every unit, in the order perm gives. */
static lp_unit_stats *fed(const int *perm, int n) {
    lp_unit_stats *u;
    assert_int_equal(lp_unit_stats_new(&u, &CFG), LP_OK);
    for (int j = 0; j < n; j++) {
        int i = perm[j];
        lp_unit_example x = {i, i % 5, -1, 100 + i, -1, (float)((i * 7) % 4) * 0.5f};
        for (int l = 0; l < 2; l++) {
            for (int k = 0; k < 3; k++) lp_unit_stats_offer(u, LP_UNIT_NEURON, l, k, &x);
            x.key_pos = 1;
            for (int kind = LP_UNIT_HEAD; kind < LP_UNIT_KINDS; kind++)
                for (int h = 0; h < 2; h++) lp_unit_stats_offer(u, (lp_unit_kind)kind, l, h, &x);
            x.key_pos = -1;
        }
    }
    return u;
}

static void assert_same(const lp_unit_stats *a, const lp_unit_stats *b) {
    lp_unit_example ea[8], eb[8];
    int na, nb;
    for (int kind = 0; kind < LP_UNIT_KINDS; kind++)
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < (kind ? 2 : 3); i++) {
                lp_unit_stats_top(a, (lp_unit_kind)kind, l, i, ea, &na);
                lp_unit_stats_top(b, (lp_unit_kind)kind, l, i, eb, &nb);
                assert_int_equal(na, nb);
                for (int j = 0; j < na; j++) /* field by field: the struct has padding */
                    assert_true(ea[j].item == eb[j].item && ea[j].pos == eb[j].pos && ea[j].key_pos == eb[j].key_pos &&
                                ea[j].token == eb[j].token && ea[j].value == eb[j].value);
                for (int bin = 0; bin < LP_UNIT_BINS; bin++) {
                    lp_unit_stats_samples(a, (lp_unit_kind)kind, l, i, bin, ea, NULL, &na);
                    lp_unit_stats_samples(b, (lp_unit_kind)kind, l, i, bin, eb, NULL, &nb);
                    assert_int_equal(na, nb);
                    for (int j = 0; j < na; j++) assert_int_equal(ea[j].item, eb[j].item);
                }
            }
}

static void the_state_does_not_depend_on_the_order_of_items(void **state) {
    (void)state;
    enum { N = 50 };
    int fwd[N], rev[N], shards[N], n = 0;
    for (int i = 0; i < N; i++) fwd[i] = i, rev[i] = N - 1 - i;
    for (int s = 2; s >= 0; s--) /* as three shards' items would come: 2, 5, 8, ... then 1, 4, ... */
        for (int i = s; i < N; i += 3) shards[n++] = i;
    lp_unit_stats *a = fed(fwd, N), *b = fed(rev, N), *c = fed(shards, N);
    assert_same(a, b);
    assert_same(a, c);
    /* The top is the total order's first k: the highest value (1.5, where 7i % 4 == 3: i %
     * 4 == 1), lowest items first among ties. */
    lp_unit_example top[4];
    int nt;
    lp_unit_stats_top(a, LP_UNIT_NEURON, 1, 2, top, &nt);
    assert_int_equal(nt, 4);
    for (int j = 0; j < 4; j++) assert_true(top[j].value == 1.5f);
    assert_int_equal(top[0].item, 1);
    assert_int_equal(top[1].item, 5);
    assert_int_equal(top[3].item, 13);
    lp_unit_stats_free(a);
    lp_unit_stats_free(b);
    lp_unit_stats_free(c);
}

static void bytes_load_back_to_the_same_state(void **state) {
    (void)state;
    int perm[30];
    for (int i = 0; i < 30; i++) perm[i] = (i * 11) % 30;
    lp_unit_stats *a = fed(perm, 30), *b;
    unsigned char *blob, *again;
    size_t len, len2;
    assert_int_equal(lp_unit_stats_save(a, &blob, &len), LP_OK);
    assert_int_equal(lp_unit_stats_new(&b, &CFG), LP_OK);
    assert_int_equal(lp_unit_stats_load(b, blob, len), LP_OK);
    assert_same(a, b);
    assert_int_equal(lp_unit_stats_save(b, &again, &len2), LP_OK);
    assert_int_equal(len, len2);
    assert_memory_equal(blob, again, len);
    /* Going on from the loaded state is going on from the first. */
    lp_unit_example x = {99, 0, -1, 7, -1, 9.0f};
    lp_unit_stats_offer(a, LP_UNIT_NEURON, 0, 0, &x);
    lp_unit_stats_offer(b, LP_UNIT_NEURON, 0, 0, &x);
    assert_same(a, b);
    /* Damaged bytes and another config are refused. */
    assert_int_equal(lp_unit_stats_load(b, blob, len - 3), LP_EFORMAT);
    assert_non_null(strstr(lp_errmsg(), "damaged"));
    lp_unit_stats_config other = CFG;
    other.k = 5;
    lp_unit_stats *c;
    assert_int_equal(lp_unit_stats_new(&c, &other), LP_OK);
    assert_int_equal(lp_unit_stats_load(c, blob, len), LP_EFORMAT);
    blob[8 + 7 * 4] = 99; /* a top-k count over k */
    assert_int_equal(lp_unit_stats_load(b, blob, len), LP_EFORMAT);
    free(blob);
    free(again);
    lp_unit_stats_free(a);
    lp_unit_stats_free(b);
    lp_unit_stats_free(c);
}

static void config_ranges_are_checked(void **state) {
    (void)state;
    lp_unit_stats *u;
    lp_unit_stats_config c = CFG;
    c.k = 0;
    assert_int_equal(lp_unit_stats_new(&u, &c), LP_EINVAL);
    c.k = LP_UNIT_K_MAX + 1;
    assert_int_equal(lp_unit_stats_new(&u, &c), LP_EINVAL);
    c = CFG, c.samples = 0;
    assert_int_equal(lp_unit_stats_new(&u, &c), LP_EINVAL);
    c = CFG, c.n_layer = 1 << 20, c.d_mlp = 1 << 20;
    assert_int_equal(lp_unit_stats_new(&u, &c), LP_ERANGE);
    assert_null(u);
}

/* On the bundled model: a neuron's example is the run's largest mlp_post over its positions,
 * a head's the largest weight off position 0, and the histogram counts every token. */
static void values_are_the_runs(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_load(&m, "models/default", NULL), LP_OK);
    const lp_config *c = lp_model_config(m);
    int ids[32], n = 0;
    const char *text = "When Mary and John went to the store, John gave a drink to";
    assert_int_equal(lp_tokenizer_encode(lp_model_tokenizer(m), text, strlen(text), false, ids, 32, &n), LP_OK);
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, ids, n), LP_OK);
    lp_unit_stats_config cfg = {c->n_layer, c->d_mlp, c->n_head, true, true, 3, 2, 0, {0}};
    lp_unit_stats *u;
    assert_int_equal(lp_unit_stats_new(&u, &cfg), LP_OK);
    assert_int_equal(lp_unit_stats_add_run(u, r, 17, false), LP_OK);
    lp_view v;
    assert_int_equal(lp_run_view(r, LP_ACT_MLP_POST, 1, -1, &v), LP_OK);
    lp_unit_example top[3];
    int nt;
    for (int neuron = 0; neuron < c->d_mlp; neuron += 37) {
        float best = -INFINITY;
        int at = -1;
        uint64_t counted = 0;
        for (int t = 0; t < n; t++) {
            float x = v.data[(size_t)t * v.stride[0] + (size_t)neuron * v.stride[1]];
            if (x > best) best = x, at = t;
        }
        lp_unit_stats_top(u, LP_UNIT_NEURON, 1, neuron, top, &nt);
        assert_int_equal(nt, 1);
        assert_int_equal(top[0].item, 17);
        assert_int_equal(top[0].pos, at);
        assert_int_equal(top[0].token, ids[at]);
        assert_true(top[0].value == best);
        int bins;
        const uint64_t *h = lp_unit_stats_histogram(u, LP_UNIT_NEURON, 1, neuron, &bins);
        assert_int_equal(bins, LP_UNIT_BINS);
        for (int b = 0; b < LP_UNIT_BINS; b++) counted += h[b];
        assert_int_equal(counted, (uint64_t)n);
    }
    assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, 0, 3, &v), LP_OK);
    float best = -1;
    int bq = -1, bk = -1;
    for (int q = 1; q < n; q++)
        for (int k = 1; k <= q; k++) {
            float w = v.data[(size_t)q * v.stride[0] + (size_t)k * v.stride[1]];
            if (w > best) best = w, bq = q, bk = k;
        }
    lp_unit_stats_top(u, LP_UNIT_HEAD, 0, 3, top, &nt);
    assert_int_equal(nt, 1);
    assert_int_equal(top[0].pos, bq);
    assert_int_equal(top[0].key_pos, bk);
    assert_true(top[0].value == best);
    /* The head's histogram: every weight its strongest key ranges over, binned by hand. */
    uint64_t want[LP_HEAD_BINS] = {0};
    for (int q = 1; q < n; q++)
        for (int k = 1; k <= q; k++) {
            double w = v.data[(size_t)q * v.stride[0] + (size_t)k * v.stride[1]];
            int b = (int)floor(w * 20);
            want[b > 19 ? 19 : b]++;
        }
    int hb;
    const uint64_t *hh = lp_unit_stats_histogram(u, LP_UNIT_HEAD, 0, 3, &hb);
    assert_int_equal(hb, LP_HEAD_BINS);
    assert_memory_equal(hh, want, sizeof want);
    assert_null(lp_unit_stats_histogram(u, (lp_unit_kind)(LP_UNIT_HEAD_BY + 1), 0, 3, &hb));
    /* By each metric: the value is what heads computes for the run, the example where the
     * metric's term is largest, found here by hand over the pattern. */
    float metrics[64 * LP_HEAD_METRIC_COUNT];
    assert_true(c->n_layer * c->n_head <= 64);
    assert_int_equal(lp_head_metrics(metrics, r), LP_OK);
    for (int l = 0; l < c->n_layer; l++)
        for (int hd = 0; hd < c->n_head; hd++) {
            assert_int_equal(lp_run_view(r, LP_ACT_PATTERN, l, hd, &v), LP_OK);
            const float *m = metrics + ((size_t)l * c->n_head + hd) * LP_HEAD_METRIC_COUNT;
            int pq = 1, fq = 1, mq = 1, mk = 0; /* max_attn: query 0 (forced onto itself) left out */
            for (int q = 1; q < n; q++) {
                const float *row = v.data + (size_t)q * v.stride[0], *prow = v.data + (size_t)pq * v.stride[0];
                if (row[q - 1] > prow[pq - 1]) pq = q;
                if (row[0] > v.data[(size_t)fq * v.stride[0]]) fq = q;
            }
            mk = v.data[(size_t)v.stride[0] + 1] > v.data[(size_t)v.stride[0]] ? 1 : 0;
            for (int q = 1; q < n; q++) {
                const float *row = v.data + (size_t)q * v.stride[0];
                float rmax = 0;
                int arg = 0;
                for (int k = 0; k <= q; k++)
                    if (row[k] > rmax) rmax = row[k], arg = k;
                if (rmax > v.data[(size_t)mq * v.stride[0] + (size_t)mk * v.stride[1]]) mq = q, mk = arg;
            }
            const struct {
                lp_head_metric m;
                int q, k;
            } want_at[] = {{LP_HEAD_PREV_TOKEN, pq, pq - 1}, {LP_HEAD_FIRST_TOKEN, fq, 0}, {LP_HEAD_MAX_ATTN, mq, mk}};
            for (size_t i = 0; i < sizeof want_at / sizeof *want_at; i++) {
                lp_unit_stats_top(u, (lp_unit_kind)(LP_UNIT_HEAD_BY + want_at[i].m), l, hd, top, &nt);
                assert_int_equal(nt, 1);
                assert_true(top[0].value == m[want_at[i].m]);
                if (top[0].pos != want_at[i].q || top[0].key_pos != want_at[i].k)
                    fail_msg("head %d.%d %s: at (%d, %d), want (%d, %d)", l, hd, lp_head_metric_name(want_at[i].m),
                             top[0].pos, top[0].key_pos, want_at[i].q, want_at[i].k);
                assert_int_equal(top[0].token, ids[top[0].pos]);
                assert_int_equal(top[0].key_token, ids[top[0].key_pos]);
            }
            /* every metric that is not NAN on the run gave its example; entropy's has no key */
            for (int k = 0; k < LP_HEAD_METRIC_COUNT; k++) {
                lp_unit_stats_top(u, (lp_unit_kind)(LP_UNIT_HEAD_BY + k), l, hd, top, &nt);
                assert_int_equal(nt, isnan(m[k]) ? 0 : 1);
                if (nt) assert_true(top[0].value == m[k]);
                if (nt && k == LP_HEAD_ENTROPY) assert_int_equal(top[0].key_pos, -1);
            }
        }
    /* With a BOS to leave out, position 0 never wins and is not counted. */
    lp_unit_stats *ub;
    assert_int_equal(lp_unit_stats_new(&ub, &cfg), LP_OK);
    assert_int_equal(lp_unit_stats_add_run(ub, r, 3, true), LP_OK);
    for (int neuron = 0; neuron < c->d_mlp; neuron += 51) {
        lp_unit_stats_top(ub, LP_UNIT_NEURON, 0, neuron, top, &nt);
        assert_true(top[0].pos >= 1);
        uint64_t counted = 0;
        int bins;
        const uint64_t *h = lp_unit_stats_histogram(ub, LP_UNIT_NEURON, 0, neuron, &bins);
        for (int b = 0; b < bins; b++) counted += h[b];
        assert_int_equal(counted, (uint64_t)n - 1);
    }
    lp_unit_stats_free(ub);
    lp_unit_stats_free(u);
    lp_run_free(r);
    lp_model_free(m);
}


/* Features: add_features against a direct count (random activations, most zero, one
 * dictionary of 37 features and one of 5), items in any order giving the same state, the
 * bytes loading back, and a feature's samples the same whether or not neurons and heads are
 * tracked beside it. */
enum { FT = 9, FD0 = 37, FD1 = 5, FN = 30 };

static float feature_act(int item, int t, int f) {
    uint64_t h = lp_mix64((uint64_t)(item * 1000003 + t * 1009 + f));
    if (h % 4) return 0.0f;                          /* three in four do not fire */
    return (float)((h >> 8) % 100000) * 1e-3f + (h % 7 == 0 ? 0.0f : 1e-4f); /* ties, and values across bins */
}

static lp_unit_stats *features_fed(const int *perm, bool model_units) {
    lp_unit_stats_config c = {2, 3, 2, model_units, model_units, 3, 2, 2, {FD0, FD1}};
    lp_unit_stats *u;
    assert_int_equal(lp_unit_stats_new(&u, &c), LP_OK);
    float acts[FT * FD0];
    int ids[FT];
    for (int j = 0; j < FN; j++) {
        int i = perm[j];
        for (int t = 0; t < FT; t++) ids[t] = 10 * i + t;
        for (int d = 0; d < 2; d++) {
            int m = d ? FD1 : FD0;
            for (int t = 0; t < FT; t++)
                for (int f = 0; f < m; f++) acts[t * m + f] = feature_act(i, t, f + 100 * d);
            assert_int_equal(lp_unit_stats_add_features(u, d, acts, FT, ids, i, true), LP_OK);
        }
    }
    return u;
}

static void assert_same_features(const lp_unit_stats *a, const lp_unit_stats *b) {
    lp_unit_example ea[8], eb[8];
    int na, nb, ba, bb;
    for (int d = 0; d < 2; d++)
        for (int f = 0; f < (d ? FD1 : FD0); f++) {
            lp_unit_stats_top(a, LP_UNIT_FEATURE, d, f, ea, &na);
            lp_unit_stats_top(b, LP_UNIT_FEATURE, d, f, eb, &nb);
            assert_int_equal(na, nb);
            for (int j = 0; j < na; j++)
                assert_true(ea[j].item == eb[j].item && ea[j].pos == eb[j].pos && ea[j].value == eb[j].value);
            const uint64_t *ha = lp_unit_stats_histogram(a, LP_UNIT_FEATURE, d, f, &ba);
            const uint64_t *hb = lp_unit_stats_histogram(b, LP_UNIT_FEATURE, d, f, &bb);
            assert_int_equal(ba, bb);
            assert_memory_equal(ha, hb, (size_t)ba * sizeof *ha);
            for (int bin = 0; bin < LP_UNIT_BINS; bin++) {
                lp_unit_stats_samples(a, LP_UNIT_FEATURE, d, f, bin, ea, NULL, &na);
                lp_unit_stats_samples(b, LP_UNIT_FEATURE, d, f, bin, eb, NULL, &nb);
                assert_int_equal(na, nb);
                for (int j = 0; j < na; j++) assert_int_equal(ea[j].item, eb[j].item);
            }
        }
}

static void features_are_units(void **state) {
    (void)state;
    int fwd[FN], rev[FN];
    for (int i = 0; i < FN; i++) fwd[i] = i, rev[i] = FN - 1 - i;
    lp_unit_stats *a = features_fed(fwd, true), *b = features_fed(rev, true), *alone = features_fed(fwd, false);
    assert_same_features(a, b);
    assert_same_features(a, alone); /* the hash does not see the model's units */
    /* against a direct count: each feature's best item values, its histogram, its samples' bins */
    for (int d = 0; d < 2; d++)
        for (int f = 0; f < (d ? FD1 : FD0); f++) {
            uint64_t want[LP_UNIT_BINS] = {0};
            float best[FN];
            int best_t[FN];
            for (int i = 0; i < FN; i++) {
                best[i] = -1, best_t[i] = -1;
                for (int t = 1; t < FT; t++) { /* position 0 is the BOS */
                    float v = feature_act(i, t, f + 100 * d);
                    want[lp_unit_bin(v)]++;
                    if (v > best[i]) best[i] = v, best_t[i] = t;
                }
            }
            int bins;
            const uint64_t *h = lp_unit_stats_histogram(a, LP_UNIT_FEATURE, d, f, &bins);
            assert_int_equal(bins, LP_UNIT_BINS);
            assert_memory_equal(h, want, sizeof want);
            lp_unit_example top[3];
            int nt, firing = 0;
            lp_unit_stats_top(a, LP_UNIT_FEATURE, d, f, top, &nt);
            for (int i = 0; i < FN; i++) firing += best[i] > 0;
            assert_int_equal(nt, firing < 3 ? firing : 3);
            for (int j = 0; j < nt; j++) {
                int i = (int)top[j].item;
                assert_true(top[j].value == best[i] && top[j].pos == best_t[i] && top[j].token == 10 * i + best_t[i]);
                assert_int_equal(top[j].key_pos, -1);
                for (int o = 0; o < FN; o++) /* nothing outside the top comes before it */
                    if (best[o] > 0 && (best[o] > top[j].value || (best[o] == top[j].value && o < i))) {
                        bool in = false;
                        for (int q = 0; q < j; q++) in |= top[q].item == o;
                        assert_true(in);
                    }
            }
            for (int bin = 0; bin < LP_UNIT_BINS; bin++) {
                lp_unit_example smp[2];
                int ns;
                lp_unit_stats_samples(a, LP_UNIT_FEATURE, d, f, bin, smp, NULL, &ns);
                if (bin == 0) assert_int_equal(ns, 0); /* only items where it fires */
                for (int j = 0; j < ns; j++) assert_int_equal(lp_unit_bin(smp[j].value), bin);
            }
        }
    /* bytes: back to the same state; refused by a state made for other dictionaries */
    unsigned char *blob;
    size_t len;
    assert_int_equal(lp_unit_stats_save(a, &blob, &len), LP_OK);
    lp_unit_stats_config c = {2, 3, 2, true, true, 3, 2, 2, {FD0, FD1}};
    lp_unit_stats *back;
    assert_int_equal(lp_unit_stats_new(&back, &c), LP_OK);
    assert_int_equal(lp_unit_stats_load(back, blob, len), LP_OK);
    assert_same_features(a, back);
    lp_unit_stats_free(back);
    c.d_sae[1] = FD1 + 1;
    assert_int_equal(lp_unit_stats_new(&back, &c), LP_OK);
    assert_int_equal(lp_unit_stats_load(back, blob, len), LP_EFORMAT);
    lp_unit_stats_free(back);
    free(blob);
    /* out of range */
    assert_int_equal(lp_unit_stats_add_features(a, 2, NULL, 1, NULL, 0, false), LP_EINVAL);
    c.n_dict = LP_UNIT_DICT_MAX + 1;
    assert_int_equal(lp_unit_stats_new(&back, &c), LP_ERANGE);
    c.n_dict = 1, c.d_sae[0] = 0;
    assert_int_equal(lp_unit_stats_new(&back, &c), LP_EINVAL);
    lp_unit_stats_free(a), lp_unit_stats_free(b), lp_unit_stats_free(alone);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bins_are_fixed_edges),
        cmocka_unit_test(float_bins_by_table_equal_the_edges),
        cmocka_unit_test(metric_names_go_both_ways),
        cmocka_unit_test(examples_have_a_total_order),
        cmocka_unit_test(the_state_does_not_depend_on_the_order_of_items),
        cmocka_unit_test(bytes_load_back_to_the_same_state),
        cmocka_unit_test(config_ranges_are_checked),
        cmocka_unit_test(values_are_the_runs),
        cmocka_unit_test(features_are_units),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
