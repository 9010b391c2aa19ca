/* Per-unit aggregates over a dataset (unit_stats.h): top-k heaps, token histograms and
 * bottom-s samples per bin, fed one run at a time, saved to and loaded from bytes. */
#include "loupe/unit_stats.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/model.h"
#include "kernels/v16.h"
#include "util/parallel.h"

/* 10^(-3 + j/4), j = 0..24: the bins' edges from 1e-3 to 1e3, written out so that every
 * machine bins alike. */
static const double EDGES[LP_UNIT_BINS - 2] = {
    0.001, 0.0017782794100389228, 0.0031622776601683794, 0.005623413251903491, 0.01, 0.017782794100389229,
    0.031622776601683791, 0.056234132519034911, 0.10000000000000001, 0.17782794100389229, 0.31622776601683794,
    0.56234132519034907, 1, 1.7782794100389228, 3.1622776601683795, 5.6234132519034912, 10, 17.782794100389228,
    31.622776601683793, 56.234132519034908, 100, 177.82794100389228, 316.22776601683796, 562.34132519034904, 1000};

int lp_unit_bin(double v) {
    if (!(v > 0)) return 0;
    int lo = 0, hi = LP_UNIT_BINS - 2; /* the edges <= v are EDGES[0..lo) */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (EDGES[mid] <= v) lo = mid + 1;
        else hi = mid;
    }
    return 1 + lo;
}

/* A float's bin by its bits: (bits - 1) >> 20 (sign, exponent and 3 mantissa bits) names a
 * range of floats at most 2^(1/8) wide, less than the 10^(1/4) between two edges, so the range
 * holds at most one edge: the bin of its lowest float, or the next one past that edge. The
 * edge is compared as the smallest float >= it (exact: the value is a float). Minus one puts
 * +0 with the negatives (0x80000000 - 1 is a NaN's range, 0 - 1 a negative NaN's), and
 * infinity with the floats below it, away from the NaNs: every range is of one bin or two
 * neighbours, and the bin takes no branch (GELU's outputs are about half negative: a branch
 * on the sign was mispredicted half the time). */
#define BIN_SHIFT 20
static unsigned char bin_low[1u << (32 - BIN_SHIFT)];
static float bin_next[LP_UNIT_BINS]; /* a value >= bin_next[b] is in bin b + 1; NaN: never */
static pthread_once_t bin_once = PTHREAD_ONCE_INIT;

static void bin_table(void) {
    for (uint32_t i = 0; i < 1u << (32 - BIN_SHIFT); i++) {
        uint32_t bits = (i << BIN_SHIFT) + 1; /* the range's lowest float */
        float f;
        memcpy(&f, &bits, sizeof f);
        bin_low[i] = (unsigned char)lp_unit_bin(f);
    }
    for (int b = 0; b < LP_UNIT_BINS; b++) {
        if (b < 1 || b >= LP_UNIT_BINS - 1) {
            bin_next[b] = NAN;
            continue;
        }
        float f = (float)EDGES[b - 1];
        if ((double)f < EDGES[b - 1]) f = nextafterf(f, INFINITY);
        bin_next[b] = f;
    }
}

static inline int bin_f(float v) { /* bin_table has run */
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    int b = bin_low[(bits - 1) >> BIN_SHIFT];
    return b + (v >= bin_next[b]);
}

int lp_unit_bin_f(float v) {
    pthread_once(&bin_once, bin_table);
    return bin_f(v);
}

double lp_unit_bin_lower(int bin) { return bin <= 0 ? -INFINITY : bin == 1 ? 0.0 : EDGES[bin - 2]; }

int lp_unit_head_bin(float w) {
    if (!(w > 0)) return 0;
    int b = (int)((double)w * LP_HEAD_BINS);
    return b < LP_HEAD_BINS ? b : LP_HEAD_BINS - 1;
}

double lp_unit_head_bin_lower(int bin) { return (double)bin / LP_HEAD_BINS; }

const char *lp_unit_metric_name(lp_unit_kind kind) {
    if (kind == LP_UNIT_NEURON || kind == LP_UNIT_FEATURE) return "activation";
    if (kind == LP_UNIT_HEAD) return "key";
    return lp_head_metric_name((lp_head_metric)(kind - LP_UNIT_HEAD_BY));
}

int lp_unit_head_kind_from_name(const char *name, lp_unit_kind *out) {
    if (!strcmp(name, "key")) {
        *out = LP_UNIT_HEAD;
        return LP_OK;
    }
    for (int m = 0; m < LP_HEAD_METRIC_COUNT; m++)
        if (!strcmp(name, lp_head_metric_name((lp_head_metric)m))) {
            *out = (lp_unit_kind)(LP_UNIT_HEAD_BY + m);
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "--by: a head is ranked by key (its strongest key) or a head metric (entropy, prev_token, "
                    "first_token, duplicate_token, induction, max_attn), not '%s'", name);
}

bool lp_unit_example_before(const lp_unit_example *a, const lp_unit_example *b) {
    if (a->value != b->value) return a->value > b->value;
    if (a->item != b->item) return a->item < b->item;
    if (a->pos != b->pos) return a->pos < b->pos;
    return a->key_pos < b->key_pos;
}

/* 63 bits: SQL compares it as a signed integer when shards are merged. */
int64_t lp_unit_sample_hash(int64_t item, int unit) {
    return (int64_t)(lp_mix64(lp_mix64((uint64_t)item) ^ (uint64_t)(unsigned)unit) >> 1);
}

typedef struct {
    lp_unit_example *e; /* (samples), allocated when the bin gets its first item */
    int64_t *h;         /* (samples): e's hashes, in the same block */
    int n, worst;       /* worst: the sample that goes first, when n == samples */
} slot;

struct lp_unit_stats {
    lp_unit_stats_config c;
    int n_neurons, n_heads, n_units; /* tracked: neurons are units 0..n_neurons) when tracked; then
                                        heads, then heads by each metric (n_heads x metrics), then
                                        the features */
    int n_features, feature_at;      /* the features' count, and the unit number of the first */
    int dict_at[LP_UNIT_DICT_MAX];   /* a dictionary's first feature among the features */
    lp_unit_example *top;            /* (n_units, k): each unit's heap, its last example at the root */
    int *n_top;                      /* (n_units) */
    uint64_t *hist;                  /* (n_neurons, LP_UNIT_BINS), (n_heads, LP_HEAD_BINS), (n_features, LP_UNIT_BINS) */
    float *metrics;                  /* (n_layer, n_head, LP_HEAD_METRIC_COUNT) scratch of add_run */
    int *at_q, *at_k;                /* (n_layer, n_head, LP_HEAD_METRIC_COUNT) */
    slot *slots;                     /* (n_units, LP_UNIT_BINS) */
    float *best;                     /* (the largest d_sae) scratch of add_features */
    int *best_pos;                   /* (the largest d_sae) */
    const float **layer_data;        /* (n_layer) scratch of add_run: each layer's mlp_post */
};

static int unit_of(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index) {
    if (kind == LP_UNIT_NEURON) return layer * u->c.d_mlp + index;
    if (kind == LP_UNIT_FEATURE) return u->feature_at + u->dict_at[layer] + index;
    int head = layer * u->c.n_head + index;
    if (kind == LP_UNIT_HEAD) return u->n_neurons + head;
    return u->n_neurons + u->n_heads * (1 + (int)(kind - LP_UNIT_HEAD_BY)) + head;
}

/* The number a unit's samples hash with: its own, or for a feature 2^30 + its number among
 * the features, so that a feature's samples do not depend on which of the model's units are
 * tracked beside it. */
static int hash_unit(const lp_unit_stats *u, int unit) {
    return unit >= u->feature_at && u->n_features ? (1 << 30) + (unit - u->feature_at) : unit;
}

int lp_unit_stats_unit(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index) {
    return hash_unit(u, unit_of(u, kind, layer, index));
}

int lp_unit_stats_new(lp_unit_stats **out, const lp_unit_stats_config *c) {
    *out = NULL;
    if (c->k < 1 || c->k > LP_UNIT_K_MAX) return lp_error(LP_EINVAL, "--k %d is out of range (1..%d)", c->k, LP_UNIT_K_MAX);
    if (c->samples < 1 || c->samples > LP_UNIT_SAMPLES_MAX)
        return lp_error(LP_EINVAL, "--samples %d is out of range (1..%d)", c->samples, LP_UNIT_SAMPLES_MAX);
    if (c->n_layer < 1 || c->d_mlp < 0 || c->n_head < 1)
        return lp_error(LP_EINVAL, "a model of %d layers, %d neurons and %d heads a layer has no units to track",
                        c->n_layer, c->d_mlp, c->n_head);
    int64_t neurons = c->neurons ? (int64_t)c->n_layer * c->d_mlp : 0, heads = c->heads ? (int64_t)c->n_layer * c->n_head : 0;
    if (c->n_dict < 0 || c->n_dict > LP_UNIT_DICT_MAX)
        return lp_error(LP_ERANGE, "%d dictionaries are more than a dataset tracks (at most %d)", c->n_dict,
                        LP_UNIT_DICT_MAX);
    int64_t features = 0;
    int width = 0;
    for (int d = 0; d < c->n_dict; d++) {
        if (c->d_sae[d] < 1 || c->d_sae[d] > 1 << 24)
            return lp_error(LP_EINVAL, "a dictionary of %d features is out of range (1..%d)", c->d_sae[d], 1 << 24);
        features += c->d_sae[d];
        if (c->d_sae[d] > width) width = c->d_sae[d];
    }
    /* a head by its key and by each metric */
    int64_t units = neurons + heads * (1 + LP_HEAD_METRIC_COUNT) + features;
    if (units > 1 << 26) return lp_error(LP_ERANGE, "%lld units are more than loupe tracks", (long long)units);
    /* the heaps are the largest part: units x k examples */
    if ((double)units * c->k * sizeof(lp_unit_example) > (double)(SIZE_MAX / 4))
        return lp_error(LP_ERANGE, "tracking %lld units with --k %d would not fit in memory; lower --k", (long long)units, c->k);
    lp_unit_stats *u = calloc(1, sizeof *u);
    if (!u) return lp_error(LP_ENOMEM, "out of memory");
    pthread_once(&bin_once, bin_table);
    u->c = *c;
    u->n_neurons = (int)neurons, u->n_heads = (int)heads, u->n_units = (int)units;
    u->n_features = (int)features, u->feature_at = (int)(units - features);
    for (int d = 1; d < c->n_dict; d++) u->dict_at[d] = u->dict_at[d - 1] + c->d_sae[d - 1];
    size_t nu = (size_t)units + 1;
    u->top = malloc(nu * (size_t)c->k * sizeof *u->top);
    u->n_top = calloc(nu, sizeof *u->n_top);
    u->hist = calloc(((size_t)neurons + (size_t)features) * LP_UNIT_BINS + (size_t)heads * LP_HEAD_BINS + 1,
                     sizeof *u->hist);
    size_t nm = (size_t)c->n_layer * c->n_head * LP_HEAD_METRIC_COUNT;
    u->metrics = malloc(nm * sizeof *u->metrics);
    u->at_q = malloc(nm * sizeof *u->at_q);
    u->at_k = malloc(nm * sizeof *u->at_k);
    u->slots = calloc(nu * LP_UNIT_BINS, sizeof *u->slots);
    u->best = malloc(((size_t)width + 1) * sizeof *u->best);
    u->best_pos = malloc(((size_t)width + 1) * sizeof *u->best_pos);
    u->layer_data = malloc((size_t)c->n_layer * sizeof *u->layer_data);
    if (!u->top || !u->n_top || !u->hist || !u->slots || !u->layer_data || !u->best || !u->best_pos || !u->metrics ||
        !u->at_q || !u->at_k) {
        lp_unit_stats_free(u);
        return lp_error(LP_ENOMEM, "out of memory for %lld units' top %d examples", (long long)units, c->k);
    }
    *out = u;
    return LP_OK;
}

void lp_unit_stats_free(lp_unit_stats *u) {
    if (!u) return;
    if (u->slots)
        for (size_t i = 0; i < (size_t)u->n_units * LP_UNIT_BINS; i++) free(u->slots[i].e);
    free(u->top);
    free(u->n_top);
    free(u->hist);
    free(u->slots);
    free(u->layer_data);
    free(u->best);
    free(u->best_pos);
    free(u->metrics);
    free(u->at_q);
    free(u->at_k);
    free(u);
}

/* ---- offering an example ---- */

/* The heap keeps the example that comes last in the order at its root. */
static void sift_down(lp_unit_example *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && lp_unit_example_before(&h[m], &h[l])) m = l;
        if (r < n && lp_unit_example_before(&h[m], &h[r])) m = r;
        if (m == i) return;
        lp_unit_example t = h[i];
        h[i] = h[m], h[m] = t, i = m;
    }
}

static void top_offer(lp_unit_stats *u, int unit, const lp_unit_example *x) {
    lp_unit_example *h = u->top + (size_t)unit * u->c.k;
    int *n = &u->n_top[unit];
    if (*n < u->c.k) {
        int i = (*n)++;
        h[i] = *x;
        while (i > 0 && lp_unit_example_before(&h[(i - 1) / 2], &h[i])) {
            lp_unit_example t = h[i];
            h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = t, i = (i - 1) / 2;
        }
    } else if (lp_unit_example_before(x, &h[0])) {
        h[0] = *x;
        sift_down(h, *n, 0);
    }
}

static bool sample_after(int64_t ha, const lp_unit_example *a, int64_t hb, const lp_unit_example *b) {
    return ha != hb ? ha > hb : a->item > b->item;
}

static bool slot_alloc(slot *s, int samples) {
    if (s->e) return true;
    void *p = malloc((size_t)samples * (sizeof *s->e + sizeof *s->h));
    if (!p) return false;
    s->e = p;
    s->h = (int64_t *)(s->e + samples);
    return true;
}

/* The sample that a smaller hash would replace: the last in (hash, item) order. */
static void slot_find_worst(slot *s) {
    s->worst = 0;
    for (int i = 1; i < s->n; i++)
        if (sample_after(s->h[i], &s->e[i], s->h[s->worst], &s->e[s->worst])) s->worst = i;
}

/* Keeps x among the bin's samples when its hash is among the smallest. Out of memory, the
 * sample is skipped: samples are an illustration, and the slot stays valid. mixed is
 * lp_mix64(x->item), which a run's offers share (the hash is lp_unit_sample_hash's). Offers
 * to different units touch nothing in common, so that threads may make them. */
static void sample_offer(lp_unit_stats *u, int unit, const lp_unit_example *x, uint64_t mixed) {
    slot *s = &u->slots[(size_t)unit * LP_UNIT_BINS + bin_f(x->value)];
    int64_t hx = (int64_t)(lp_mix64(mixed ^ (uint64_t)(unsigned)hash_unit(u, unit)) >> 1);
    if (!slot_alloc(s, u->c.samples)) return;
    if (s->n < u->c.samples) {
        s->h[s->n] = hx;
        s->e[s->n++] = *x;
        if (s->n == u->c.samples) slot_find_worst(s);
        return;
    }
    if (!sample_after(s->h[s->worst], &s->e[s->worst], hx, x)) return;
    s->e[s->worst] = *x, s->h[s->worst] = hx;
    slot_find_worst(s);
}

static void offer(lp_unit_stats *u, int unit, const lp_unit_example *x, uint64_t mixed) {
    top_offer(u, unit, x);
    sample_offer(u, unit, x, mixed);
}

void lp_unit_stats_offer(lp_unit_stats *u, lp_unit_kind kind, int layer, int index, const lp_unit_example *x) {
    offer(u, unit_of(u, kind, layer, index), x, lp_mix64((uint64_t)x->item));
}

/* ---- adding a run ---- */

static inline void max_step(float *restrict best, int *restrict best_pos, const float *restrict row, int n, int t) {
    float x = row[n], b = best[n];
    int take = (x > b) | (b != b);
    best[n] = take ? x : b;
    best_pos[n] = take ? t : best_pos[n];
}

typedef int vi16 __attribute__((vector_size(64)));

/* max_step on 16 lanes at once: the same choice in each (GCC's vectoriser left the scalar
 * loop's selects as branches). */
VEC_INLINE void max_step16(float *best, int *best_pos, const float *row, int t) {
    v16 x = load16(row), b = load16(best);
    vi16 p, take = (x > b) | (b != b);
    memcpy(&p, best_pos, sizeof p);
    store16(best, (v16)(((vi16)x & take) | ((vi16)b & ~take)));
    p = (((vi16){0} + t) & take) | (p & ~take);
    memcpy(best_pos, &p, sizeof p);
}

/* Each column's largest value over rows [start, T) of data (row stride ld) and the first row
 * holding it (a NaN never wins, unless every value is NaN), 16 lanes at a time. start < T. */
static void column_max(float *restrict best, int *restrict best_pos, const float *data, size_t ld, int n, int start,
                       int T) {
    memcpy(best, data + (size_t)start * ld, (size_t)n * sizeof *best);
    for (int j = 0; j < n; j++) best_pos[j] = start;
    int body = n - n % V16_LANES;
    for (int t = start + 1; t < T; t++) {
        const float *restrict row = data + (size_t)t * ld;
        for (int j = 0; j < body; j += V16_LANES) max_step16(best + j, best_pos + j, row + j, t);
        for (int j = body; j < n; j++) max_step(best, best_pos, row, j, t);
    }
}

/* add_neurons' work: a layer's neurons in blocks of NEURON_BLOCK, each block a chunk of the
 * session's compute threads (lp_parallel_for). A block's counts (NEURON_BLOCK x bins of 16
 * bits, 14 kB) stay in L1 while its rows are read; its best values too. */
#define NEURON_BLOCK 256
#define OFFER_AHEAD 4 /* units */

typedef struct {
    lp_unit_stats *u;
    const float **data; /* (n_layer): each layer's mlp_post, rows of d_mlp */
    const int *ids;
    int64_t item;
    uint64_t mixed; /* lp_mix64(item) */
    int start, T, blocks; /* blocks a layer */
} neuron_job;

/* Each neuron's largest value over positions [start, T) and the first position holding it
 * (a NaN never wins, unless every value is NaN: then no example), the histograms' counts, and
 * the neuron's example offered. Every unit's state is its own, so that the blocks of a layer
 * and the layers go in any order and on any thread with the same results. */
static void neuron_blocks(void *ctx, size_t c0, size_t c1) {
    const neuron_job *j = ctx;
    lp_unit_stats *u = j->u;
    int dm = u->c.d_mlp, start = j->start, T = j->T;
    float best[NEURON_BLOCK];
    int best_pos[NEURON_BLOCK];
    uint16_t count[NEURON_BLOCK * LP_UNIT_BINS]; /* T <= n_ctx < 65536 */
    for (size_t c = c0; c < c1; c++) {
        int l = (int)(c / (size_t)j->blocks), n0 = (int)(c % (size_t)j->blocks) * NEURON_BLOCK;
        int nb = dm - n0 < NEURON_BLOCK ? dm - n0 : NEURON_BLOCK;
        const float *data = j->data[l] + n0;
        memset(count, 0, (size_t)nb * LP_UNIT_BINS * sizeof *count);
        for (int n = 0; n < nb; n++) {
            float x = data[(size_t)start * dm + n];
            best[n] = x, best_pos[n] = start;
            count[n * LP_UNIT_BINS + bin_f(x)]++;
        }
        int body = nb - nb % V16_LANES;
        for (int t = start + 1; t < T; t++) {
            const float *restrict row = data + (size_t)t * dm;
            for (int n = 0; n < body; n += V16_LANES) max_step16(best + n, best_pos + n, row + n, t);
            for (int n = body; n < nb; n++) max_step(best, best_pos, row, n, t);
            for (int n = 0; n < nb; n++) count[n * LP_UNIT_BINS + bin_f(row[n])]++;
        }
        uint64_t *hist = u->hist + ((size_t)l * dm + n0) * LP_UNIT_BINS;
        for (int i = 0; i < nb * LP_UNIT_BINS; i++) hist[i] += count[i];
        int unit0 = unit_of(u, LP_UNIT_NEURON, l, n0);
        for (int n = 0; n < nb; n++) {
            /* the heaps and slots are 50 MB: their lines fetched ahead (two steps: a slot's
             * samples are where the slot points) */
            if (n + 2 * OFFER_AHEAD < nb) {
                int a = unit0 + n + 2 * OFFER_AHEAD;
                __builtin_prefetch(u->top + (size_t)a * u->c.k);
                __builtin_prefetch(&u->slots[(size_t)a * LP_UNIT_BINS + bin_f(best[n + 2 * OFFER_AHEAD])]);
            }
            if (n + OFFER_AHEAD < nb) {
                const slot *s = &u->slots[(size_t)(unit0 + n + OFFER_AHEAD) * LP_UNIT_BINS + bin_f(best[n + OFFER_AHEAD])];
                if (s->e) __builtin_prefetch(s->h + s->worst), __builtin_prefetch(s->e + s->n - (s->n == u->c.samples));
            }
            if (best[n] != best[n]) continue;
            int p = best_pos[n];
            lp_unit_example x = {j->item, p, -1, j->ids[p], -1, best[n]};
            offer(u, unit0 + n, &x, j->mixed);
        }
    }
}

static int add_neurons(lp_unit_stats *u, const lp_run *r, int64_t item, int start) {
    int T = lp_run_len(r), dm = u->c.d_mlp;
    if (start >= T || dm == 0) return LP_OK;
    for (int l = 0; l < u->c.n_layer; l++) {
        lp_view v;
        int rc = lp_run_view(r, LP_ACT_MLP_POST, l, -1, &v);
        if (rc) return rc;
        assert(v.stride[1] == 1 && v.stride[0] == dm);
        u->layer_data[l] = v.data;
    }
    neuron_job j = {u, u->layer_data, lp_run_ids(r), item, lp_mix64((uint64_t)item), start, T,
                    (dm + NEURON_BLOCK - 1) / NEURON_BLOCK};
    lp_parallel_for((size_t)u->c.n_layer * j.blocks, 1, neuron_blocks, &j);
    return LP_OK;
}

/* A head's histogram of every weight its strongest key ranges over (queries q >= 1, keys
 * 1 <= k <= q, or every k >= 1 for an encoder), and its strongest key. */
static int add_heads(lp_unit_stats *u, const lp_run *r, int64_t item) {
    int T = lp_run_len(r);
    const int *ids = lp_run_ids(r);
    bool causal = lp_model_config(lp_run_model(r))->causal;
    if (T < 2) return LP_OK;
    for (int l = 0; l < u->c.n_layer; l++)
        for (int h = 0; h < u->c.n_head; h++) {
            lp_view v;
            int rc = lp_run_view(r, LP_ACT_PATTERN, l, h, &v);
            if (rc) return rc;
            uint64_t *hist = u->hist + (size_t)u->n_neurons * LP_UNIT_BINS + ((size_t)l * u->c.n_head + h) * LP_HEAD_BINS;
            lp_unit_example x = {item, -1, -1, -1, -1, 0};
            for (int q = 1; q < T; q++) {
                const float *row = v.data + (size_t)q * v.stride[0];
                for (int k = 1; k <= (causal ? q : T - 1); k++) {
                    float w = row[(size_t)k * v.stride[1]];
                    hist[lp_unit_head_bin(w)]++;
                    if (w == w && (x.pos < 0 || w > x.value)) x.value = w, x.pos = q, x.key_pos = k;
                }
            }
            if (x.pos < 0) continue;
            x.token = ids[x.pos], x.key_token = ids[x.key_pos];
            lp_unit_stats_offer(u, LP_UNIT_HEAD, l, h, &x);
        }
    return LP_OK;
}

/* Each head metric on the item, where it is strongest (heads.h: lp_head_metrics_at). */
static int add_head_metrics(lp_unit_stats *u, const lp_run *r, int64_t item) {
    const int *ids = lp_run_ids(r);
    if (lp_run_len(r) < 2) return LP_OK;
    int rc = lp_head_metrics_at(u->metrics, u->at_q, u->at_k, r);
    if (rc) return rc;
    for (int l = 0; l < u->c.n_layer; l++)
        for (int h = 0; h < u->c.n_head; h++)
            for (int m = 0; m < LP_HEAD_METRIC_COUNT; m++) {
                size_t at = ((size_t)l * u->c.n_head + h) * LP_HEAD_METRIC_COUNT + m;
                float value = u->metrics[at];
                int q = u->at_q[at], k = u->at_k[at];
                if (value != value || q < 0) continue;
                lp_unit_example x = {item, q, k, ids[q], k >= 0 ? ids[k] : -1, value};
                lp_unit_stats_offer(u, (lp_unit_kind)(LP_UNIT_HEAD_BY + m), l, h, &x);
            }
    return LP_OK;
}

/* Dictionary dict's features' histograms: (d_sae, LP_UNIT_BINS) after the neurons' and heads'. */
static uint64_t *feature_hist(const lp_unit_stats *u, int dict) {
    return u->hist + (size_t)u->n_neurons * LP_UNIT_BINS + (size_t)u->n_heads * LP_HEAD_BINS +
           (size_t)u->dict_at[dict] * LP_UNIT_BINS;
}

int lp_unit_stats_add_features(lp_unit_stats *u, int dict, const float *acts, int T, const int *ids, int64_t item,
                               bool bos) {
    if (dict < 0 || dict >= u->c.n_dict)
        return lp_error(LP_EINVAL, "no tracked dictionary %d (the dataset tracks %d)", dict, u->c.n_dict);
    int m = u->c.d_sae[dict], start = bos ? 1 : 0;
    if (start >= T) return LP_OK;
    uint64_t *hist = feature_hist(u, dict);
    column_max(u->best, u->best_pos, acts, (size_t)m, m, start, T);
    for (int t = start; t < T; t++) {
        const float *row = acts + (size_t)t * m;
        for (int f = 0; f < m; f++) hist[(size_t)f * LP_UNIT_BINS + bin_f(row[f])]++;
    }
    for (int f = 0; f < m; f++) {
        if (!(u->best[f] > 0)) continue; /* it does not fire on the item */
        int p = u->best_pos[f];
        lp_unit_example x = {item, p, -1, ids[p], -1, u->best[f]};
        lp_unit_stats_offer(u, LP_UNIT_FEATURE, dict, f, &x);
    }
    return LP_OK;
}

int lp_unit_stats_add_run(lp_unit_stats *u, const lp_run *r, int64_t item, bool bos) {
    const lp_config *c = lp_model_config(lp_run_model(r));
    if (c->n_layer != u->c.n_layer || c->d_mlp != u->c.d_mlp || c->n_head != u->c.n_head)
        return lp_error(LP_EINVAL, "a run of another model's shape (%d layers, %d neurons, %d heads) than the dataset's",
                        c->n_layer, c->d_mlp, c->n_head);
    int rc = LP_OK;
    if (u->c.neurons) rc = add_neurons(u, r, item, bos ? 1 : 0);
    if (!rc && u->c.heads) rc = add_heads(u, r, item);
    if (!rc && u->c.heads) rc = add_head_metrics(u, r, item);
    return rc;
}

/* ---- reading ---- */

static int by_order(const void *a, const void *b) {
    const lp_unit_example *x = a, *y = b;
    return lp_unit_example_before(x, y) ? -1 : lp_unit_example_before(y, x) ? 1 : 0;
}

void lp_unit_stats_top(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index, lp_unit_example *out, int *n) {
    int unit = unit_of(u, kind, layer, index);
    *n = u->n_top[unit];
    memcpy(out, u->top + (size_t)unit * u->c.k, (size_t)*n * sizeof *out);
    qsort(out, (size_t)*n, sizeof *out, by_order);
}

const uint64_t *lp_unit_stats_histogram(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index, int *bins) {
    *bins = 0;
    if (kind == LP_UNIT_NEURON && u->c.neurons) {
        *bins = LP_UNIT_BINS;
        return u->hist + ((size_t)layer * u->c.d_mlp + index) * LP_UNIT_BINS;
    }
    if (kind == LP_UNIT_HEAD && u->c.heads) {
        *bins = LP_HEAD_BINS;
        return u->hist + (size_t)u->n_neurons * LP_UNIT_BINS + ((size_t)layer * u->c.n_head + index) * LP_HEAD_BINS;
    }
    if (kind == LP_UNIT_FEATURE && layer >= 0 && layer < u->c.n_dict) {
        *bins = LP_UNIT_BINS;
        return feature_hist(u, layer) + (size_t)index * LP_UNIT_BINS;
    }
    return NULL;
}

void lp_unit_stats_samples(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index, int bin,
                           lp_unit_example *out, int64_t *hash, int *n) {
    int unit = unit_of(u, kind, layer, index);
    const slot *s = &u->slots[(size_t)unit * LP_UNIT_BINS + bin];
    int64_t h[LP_UNIT_SAMPLES_MAX];
    *n = s->n;
    if (s->n) memcpy(out, s->e, (size_t)s->n * sizeof *out), memcpy(h, s->h, (size_t)s->n * sizeof *h);
    /* insertion sort by (hash, item), each sample's hash the one it was kept by: s is small */
    for (int i = 1; i < *n; i++)
        for (int j = i; j > 0 && sample_after(h[j - 1], &out[j - 1], h[j], &out[j]); j--) {
            lp_unit_example t = out[j];
            int64_t th = h[j];
            out[j] = out[j - 1], out[j - 1] = t;
            h[j] = h[j - 1], h[j - 1] = th;
        }
    if (hash && *n) memcpy(hash, h, (size_t)*n * sizeof *hash);
}

/* ---- bytes ---- */

#define MAGIC "LPUSTAT2" /* 2: heads by metric, heads' histograms */

typedef struct {
    unsigned char *p;
    size_t n, cap;
    bool oom;
} writer;

static void put(writer *w, const void *x, size_t n) {
    if (w->oom) return;
    if (w->n + n > w->cap) {
        size_t want = w->cap ? w->cap * 2 : 4096;
        while (want < w->n + n) want *= 2;
        unsigned char *np = realloc(w->p, want);
        if (!np) {
            w->oom = true;
            return;
        }
        w->p = np, w->cap = want;
    }
    memcpy(w->p + w->n, x, n);
    w->n += n;
}

static void put_i32(writer *w, int32_t v) { put(w, &v, sizeof v); }

/* An example field by field, so that no padding byte reaches the blob. */
static void put_example(writer *w, const lp_unit_example *x) {
    put(w, &x->item, sizeof x->item);
    int32_t f[4] = {x->pos, x->key_pos, x->token, x->key_token};
    put(w, f, sizeof f);
    put(w, &x->value, sizeof x->value);
}


static size_t hist_len(const lp_unit_stats *u) {
    return ((size_t)u->n_neurons + (size_t)u->n_features) * LP_UNIT_BINS + (size_t)u->n_heads * LP_HEAD_BINS;
}

int lp_unit_stats_save(const lp_unit_stats *u, unsigned char **blob, size_t *len) {
    writer w = {0};
    put(&w, MAGIC, 8);
    const int32_t cfg[7] = {u->c.n_layer, u->c.d_mlp, u->c.n_head, u->c.neurons, u->c.heads, u->c.k, u->c.samples};
    put(&w, cfg, sizeof cfg);
    if (u->c.n_dict) { /* a state without features has the bytes it had before them (a resume reads it) */
        put_i32(&w, u->c.n_dict);
        put(&w, u->c.d_sae, (size_t)u->c.n_dict * sizeof *u->c.d_sae);
    }
    for (int i = 0; i < u->n_units; i++) {
        put_i32(&w, u->n_top[i]);
        for (int j = 0; j < u->n_top[i]; j++) put_example(&w, &u->top[(size_t)i * u->c.k + j]);
    }
    put(&w, u->hist, hist_len(u) * sizeof *u->hist);
    for (size_t i = 0; i < (size_t)u->n_units * LP_UNIT_BINS; i++) {
        put_i32(&w, u->slots[i].n);
        for (int j = 0; j < u->slots[i].n; j++) put_example(&w, &u->slots[i].e[j]);
    }
    if (w.oom) {
        free(w.p);
        return lp_error(LP_ENOMEM, "out of memory saving the dataset's aggregates");
    }
    *blob = w.p, *len = w.n;
    return LP_OK;
}

typedef struct {
    const unsigned char *p;
    size_t n, at;
} reader;

static bool get(reader *r, void *x, size_t n) {
    if (r->n - r->at < n) return false;
    memcpy(x, r->p + r->at, n);
    r->at += n;
    return true;
}

static bool get_example(reader *r, lp_unit_example *x) {
    int32_t f[4];
    if (!get(r, &x->item, sizeof x->item) || !get(r, f, sizeof f) || !get(r, &x->value, sizeof x->value)) return false;
    x->pos = f[0], x->key_pos = f[1], x->token = f[2], x->key_token = f[3];
    return x->item >= 0 && x->pos >= 0;
}

static int damaged(const char *what) {
    return lp_error(LP_EFORMAT, "the dataset's saved aggregates are damaged (%s); start the dataset again without "
                    "--resume", what);
}

int lp_unit_stats_load(lp_unit_stats *u, const unsigned char *blob, size_t len) {
    reader r = {blob, len, 0};
    char magic[8];
    int32_t cfg[7];
    if (!get(&r, magic, 8) || memcmp(magic, MAGIC, 8) || !get(&r, cfg, sizeof cfg)) return damaged("no header");
    const int32_t want[7] = {u->c.n_layer, u->c.d_mlp, u->c.n_head, u->c.neurons, u->c.heads, u->c.k, u->c.samples};
    if (memcmp(cfg, want, sizeof cfg)) return damaged("made for other units, k or samples");
    if (u->c.n_dict) {
        int32_t nd;
        int d_sae[LP_UNIT_DICT_MAX];
        if (!get(&r, &nd, sizeof nd) || nd != u->c.n_dict || !get(&r, d_sae, (size_t)nd * sizeof *d_sae) ||
            memcmp(d_sae, u->c.d_sae, (size_t)nd * sizeof *d_sae))
            return damaged("made for other dictionaries");
    }
    for (int i = 0; i < u->n_units; i++) {
        int32_t n;
        if (!get(&r, &n, sizeof n) || n < 0 || n > u->c.k) return damaged("a top-k count");
        u->n_top[i] = n;
        for (int j = 0; j < n; j++)
            if (!get_example(&r, &u->top[(size_t)i * u->c.k + j])) return damaged("an example");
    }
    if (!get(&r, u->hist, hist_len(u) * sizeof *u->hist)) return damaged("the histograms");
    for (size_t i = 0; i < (size_t)u->n_units * LP_UNIT_BINS; i++) {
        slot *s = &u->slots[i];
        int32_t n;
        if (!get(&r, &n, sizeof n) || n < 0 || n > u->c.samples) return damaged("a sample count");
        if (n && !slot_alloc(s, u->c.samples)) return lp_error(LP_ENOMEM, "out of memory loading the dataset's aggregates");
        s->n = n;
        for (int j = 0; j < n; j++) {
            if (!get_example(&r, &s->e[j])) return damaged("a sample");
            s->h[j] = lp_unit_sample_hash(s->e[j].item, hash_unit(u, (int)(i / LP_UNIT_BINS)));
        }
        if (n == u->c.samples) slot_find_worst(s);
    }
    if (r.at != r.n) return damaged("bytes left over");
    return LP_OK;
}
