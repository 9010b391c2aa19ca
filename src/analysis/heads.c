/* Per-head attention metrics (see heads.h for the definitions). */
#include "loupe/heads.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/vmath.h"
#include "loupe/error.h"
#include "util/parallel.h"
#include "loupe/tokenizer.h"

static const char *const NAMES[LP_HEAD_ALL_METRIC_COUNT] = {
    "entropy", "prev_token", "first_token", "duplicate_token", "induction", "max_attn",
    "next_token", "cls_sink", "sep_sink", "broad"};

const char *lp_head_metric_name(lp_head_metric k) { return k < LP_HEAD_ALL_METRIC_COUNT ? NAMES[k] : "?"; }

int lp_head_metric_from_name(const char *name, lp_head_metric *out) {
    for (int i = 0; i < LP_HEAD_ALL_METRIC_COUNT; i++)
        if (strcmp(name, NAMES[i]) == 0) {
            *out = (lp_head_metric)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown head metric '%s' (entropy, prev_token, first_token, duplicate_token, "
                    "induction, max_attn; encoders also next_token, cls_sink, sep_sink, broad)", name);
}

static float mean_or_nan(double sum, int n) { return n ? (float)(sum / n) : NAN; }

/* sum of p log p over row[0..n) (zeros add nothing): float terms through lp_vlog in lanes
 * the compiler vectorises, blocks summed in double. A double log() per entry was most of
 * the time a run took to record. */
static double row_plogp(const float *row, int n) {
    double sum = 0.0;
    float t[LP_VBLOCK];
    int b = 0;
    for (; b + LP_VBLOCK <= n; b += LP_VBLOCK) {
        for (int j = 0; j < LP_VBLOCK; j++) t[j] = row[b + j] * lp_vlog(row[b + j]);
        sum += lp_vsum_block(t);
    }
    for (; b < n; b++) sum += row[b] * lp_vlog(row[b]);
    return sum;
}

typedef struct {
    float *out;
    int *at_q, *at_k;     /* NULL, or where each metric's term is largest (lp_head_metrics_at) */
    const lp_run *r;
    const int *prev_same; /* the same token's previous position, -1: none */
} head_work;

/* The first key holding the largest of row[0..n). */
static int row_argmax(const float *row, int n) {
    int best = 0;
    for (int j = 1; j < n; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

/* Keeps (q, k) when term beats the best so far (the first of ties). */
static void take_if_larger(double term, double *best, int *q, int i, int *k, int key) {
    if (*q < 0 || term > *best) *best = term, *q = i, *k = key;
}

/* Heads lo..hi-1 (layer * n_head + head): each reads only its own pattern. */
static void head_share(void *ctx, size_t lo, size_t hi) {
    const head_work *w = ctx;
    const lp_config *c = lp_model_config(lp_run_model(w->r));
    int T = lp_run_len(w->r);
    for (int lh = (int)lo; lh < (int)hi; lh++) {
        lp_view v;
        lp_run_view(w->r, LP_ACT_PATTERN, lh / c->n_head, lh % c->n_head, &v);
        /* each row's entropy and maximum, as the softmax computed them: no pass over the row */
        const float *stats = lp_run_pattern_stats(w->r, lh / c->n_head, lh % c->n_head);
        double ent = 0, prev = 0, first = 0, dup = 0, ind = 0, mx = 0;
        int n_dup = 0, n_ind = 0;
        /* where each metric's term is largest: query, key, and the term */
        int aq[LP_HEAD_METRIC_COUNT], ak[LP_HEAD_METRIC_COUNT];
        double at_term[LP_HEAD_METRIC_COUNT] = {0};
        for (int m = 0; m < LP_HEAD_METRIC_COUNT; m++) aq[m] = ak[m] = -1;
        for (int i = 0; i < T; i++) {
            const float *row = v.data + (size_t)i * v.stride[0];
            /* a bidirectional head's row spans every key: entropy and the maximum read it
             * all; duplicate and induction keep to the earlier keys, as their definitions */
            int keys = c->causal ? i + 1 : T;
            double e = stats[2 * i];
            float rmax = stats[2 * i + 1];
            ent += e;
            mx += rmax;
            if (i >= 1) prev += row[i - 1], first += row[0];
            /* the earlier copies j of ids[i]: duplicate reads j, induction the token after
             * it (j + 1 <= i - 1) */
            double d = 0, k = 0;
            bool has_dup = false, has_ind = false;
            int dk = -1, ik = -1; /* the strongest copy, and the strongest token after one */
            for (int j = w->prev_same[i]; j >= 0; j = w->prev_same[j]) {
                d += row[j], has_dup = true;
                if (dk < 0 || row[j] > row[dk]) dk = j;
                if (j + 1 <= i - 1) {
                    k += row[j + 1], has_ind = true;
                    if (ik < 0 || row[j + 1] > row[ik]) ik = j + 1;
                }
            }
            if (has_dup) dup += d, n_dup++;
            if (has_ind) ind += k, n_ind++;
            if (!w->at_q) continue;
            int no_key = -1;
            take_if_larger(e, &at_term[LP_HEAD_ENTROPY], &aq[LP_HEAD_ENTROPY], i, &ak[LP_HEAD_ENTROPY], no_key);
            if (i >= 1) {
                take_if_larger(row[i - 1], &at_term[LP_HEAD_PREV_TOKEN], &aq[LP_HEAD_PREV_TOKEN], i,
                               &ak[LP_HEAD_PREV_TOKEN], i - 1);
                take_if_larger(row[0], &at_term[LP_HEAD_FIRST_TOKEN], &aq[LP_HEAD_FIRST_TOKEN], i,
                               &ak[LP_HEAD_FIRST_TOKEN], 0);
            }
            if (has_dup)
                take_if_larger(d, &at_term[LP_HEAD_DUPLICATE_TOKEN], &aq[LP_HEAD_DUPLICATE_TOKEN], i,
                               &ak[LP_HEAD_DUPLICATE_TOKEN], dk);
            if (has_ind)
                take_if_larger(k, &at_term[LP_HEAD_INDUCTION], &aq[LP_HEAD_INDUCTION], i, &ak[LP_HEAD_INDUCTION], ik);
            /* a causal head's first row is forced (1 on itself): never where it is strongest */
            if ((i > 0 || !c->causal) && (aq[LP_HEAD_MAX_ATTN] < 0 || rmax > at_term[LP_HEAD_MAX_ATTN]))
                take_if_larger(rmax, &at_term[LP_HEAD_MAX_ATTN], &aq[LP_HEAD_MAX_ATTN], i, &ak[LP_HEAD_MAX_ATTN],
                               row_argmax(row, keys));
        }
        if (w->at_q)
            for (int m = 0; m < LP_HEAD_METRIC_COUNT; m++)
                w->at_q[(size_t)lh * LP_HEAD_METRIC_COUNT + m] = aq[m], w->at_k[(size_t)lh * LP_HEAD_METRIC_COUNT + m] = ak[m];
        float *o = w->out + (size_t)lh * LP_HEAD_METRIC_COUNT;
        o[LP_HEAD_ENTROPY] = (float)(ent / T);
        o[LP_HEAD_PREV_TOKEN] = mean_or_nan(prev, T - 1);
        o[LP_HEAD_FIRST_TOKEN] = mean_or_nan(first, T - 1);
        o[LP_HEAD_DUPLICATE_TOKEN] = mean_or_nan(dup, n_dup);
        o[LP_HEAD_INDUCTION] = mean_or_nan(ind, n_ind);
        o[LP_HEAD_MAX_ATTN] = (float)(mx / T);
    }
}

int lp_head_metrics(float *out, const lp_run *r) { return lp_head_metrics_at(out, NULL, NULL, r); }

int lp_head_metrics_at(float *out, int *at_q, int *at_k, const lp_run *r) {
    const lp_config *c = lp_model_config(lp_run_model(r));
    const int *ids = lp_run_ids(r);
    int T = lp_run_len(r);
    /* duplicate-token and induction then visit only the keys they sum, not every key of
     * every head */
    int *prev_same = malloc((size_t)T * sizeof *prev_same);
    if (!prev_same) return lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; i < T; i++) {
        prev_same[i] = -1;
        for (int j = i - 1; j >= 0; j--)
            if (ids[j] == ids[i]) {
                prev_same[i] = j;
                break;
            }
    }
    head_work w = {out, at_q, at_k, r, prev_same};
    lp_parallel_for((size_t)c->n_layer * c->n_head, 1, head_share, &w);
    free(prev_same);
    return LP_OK;
}

void lp_head_metrics_encoder(float *out, const lp_run *r) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = lp_model_config(m);
    const lp_tokenizer *t = lp_model_tokenizer(m);
    const int *ids = lp_run_ids(r);
    int T = lp_run_len(r), cls = t ? lp_tokenizer_special(t, LP_SPECIAL_CLS) : -1;
    int sep = t ? lp_tokenizer_special(t, LP_SPECIAL_SEP) : -1, n_cls = 0, n_sep = 0;
    for (int j = 0; j < T; j++) n_cls += cls >= 0 && ids[j] == cls, n_sep += sep >= 0 && ids[j] == sep;
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < c->n_head; h++) {
            lp_view v;
            lp_run_view(r, LP_ACT_PATTERN, l, h, &v);
            double next = 0, to_cls = 0, to_sep = 0, ent = 0;
            for (int i = 0; i < T; i++) {
                const float *row = v.data + (size_t)i * v.stride[0];
                int keys = c->causal ? i + 1 : T;
                for (int j = 0; j < keys; j++) {
                    double p = row[j];
                    if (p > 0) ent -= p * log(p);
                    if (ids[j] == cls) to_cls += p;
                    if (ids[j] == sep) to_sep += p;
                }
                if (i + 1 < keys) next += row[i + 1];
            }
            float *o = out + ((size_t)l * c->n_head + h) * LP_HEAD_ENCODER_METRIC_COUNT;
            o[LP_HEAD_NEXT_TOKEN - LP_HEAD_METRIC_COUNT] = mean_or_nan(next, T - 1);
            o[LP_HEAD_CLS_SINK - LP_HEAD_METRIC_COUNT] = n_cls ? mean_or_nan(to_cls, T) : NAN;
            o[LP_HEAD_SEP_SINK - LP_HEAD_METRIC_COUNT] = n_sep ? mean_or_nan(to_sep, T) : NAN;
            o[LP_HEAD_BROAD - LP_HEAD_METRIC_COUNT] = T > 1 ? (float)(ent / T / log(T)) : NAN;
        }
}

/* ---- cross-attention (an encoder-decoder's decoder over the source) ---- */

static const char *const CROSS_NAMES[LP_CROSS_METRIC_COUNT] = {"entropy",  "max_attn",  "source_eos",
                                                               "diagonal", "monotonic", "coverage"};

const char *lp_cross_metric_name(lp_cross_metric k) { return k < LP_CROSS_METRIC_COUNT ? CROSS_NAMES[k] : "?"; }

int lp_cross_metric_from_name(const char *name, lp_cross_metric *out) {
    for (int i = 0; i < LP_CROSS_METRIC_COUNT; i++)
        if (strcmp(name, CROSS_NAMES[i]) == 0) {
            *out = (lp_cross_metric)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown cross-attention metric '%s' (entropy, max_attn, source_eos, diagonal, "
                    "monotonic, coverage)", name);
}

int lp_cross_metrics(float *out, const lp_run *r) {
    const lp_run *src = lp_run_source(r);
    if (!src) return lp_error(LP_EINVAL, "cross-attention metrics need an encoder-decoder's run");
    const lp_config *c = lp_model_config(lp_run_model(r));
    int T = lp_run_len(r), S = lp_run_len(src);
    bool *hit = calloc((size_t)S, sizeof *hit);
    if (!hit) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < c->n_head; h++) {
            lp_view v;
            lp_run_view(r, LP_ACT_CROSS_PATTERN, l, h, &v);
            double ent = 0, mx = 0, eos = 0, off = 0;
            int rising = 0, prev_arg = -1;
            memset(hit, 0, (size_t)S * sizeof *hit);
            for (int i = 0; i < T; i++) {
                const float *row = v.data + (size_t)i * v.stride[0];
                double e = -row_plogp(row, S), centroid = 0;
                for (int j = 0; j < S; j++) centroid += (double)row[j] * j;
                int arg = row_argmax(row, S);
                ent += e;
                mx += row[arg];
                eos += row[S - 1];
                hit[arg] = true;
                if (T > 1 && S > 1) off += fabs(centroid / (S - 1) - (double)i / (T - 1));
                if (prev_arg >= 0) rising += arg >= prev_arg;
                prev_arg = arg;
            }
            int covered = 0;
            for (int j = 0; j < S; j++) covered += hit[j];
            float *o = out + ((size_t)l * c->n_head + h) * LP_CROSS_METRIC_COUNT;
            o[LP_CROSS_ENTROPY] = (float)(ent / T);
            o[LP_CROSS_MAX_ATTN] = (float)(mx / T);
            o[LP_CROSS_SOURCE_EOS] = (float)(eos / T);
            o[LP_CROSS_DIAGONAL] = T > 1 && S > 1 ? (float)(1.0 - off / T) : NAN;
            o[LP_CROSS_MONOTONIC] = mean_or_nan(rising, T - 1);
            o[LP_CROSS_COVERAGE] = (float)covered / (float)S;
        }
    free(hit);
    return LP_OK;
}

int lp_cross_alignment(int *pos, float *weight, const lp_run *r) {
    const lp_run *src = lp_run_source(r);
    if (!src) return lp_error(LP_EINVAL, "an alignment needs an encoder-decoder's run");
    const lp_config *c = lp_model_config(lp_run_model(r));
    int T = lp_run_len(r), S = lp_run_len(src), H = c->n_head;
    float *mean = malloc((size_t)S * sizeof *mean);
    lp_view *v = malloc((size_t)H * sizeof *v);
    if (!mean || !v) {
        free(mean);
        free(v);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    for (int l = 0; l < c->n_layer; l++) {
        for (int h = 0; h < H; h++) lp_run_view(r, LP_ACT_CROSS_PATTERN, l, h, &v[h]);
        for (int i = 0; i < T; i++) {
            memset(mean, 0, (size_t)S * sizeof *mean);
            for (int h = 0; h <= H; h++) {
                const float *row = h < H ? v[h].data + (size_t)i * v[h].stride[0] : mean;
                if (h < H)
                    for (int j = 0; j < S; j++) mean[j] += row[j] / (float)H;
                size_t k = ((size_t)l * (H + 1) + h) * T + i;
                pos[k] = row_argmax(row, S);
                weight[k] = row[pos[k]];
            }
        }
    }
    free(mean);
    free(v);
    return LP_OK;
}
