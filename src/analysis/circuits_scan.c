/* The head scans (see circuits.h): attention scores on repeated random sequences (decoders),
 * on [CLS] + random tokens + [SEP] (encoders), on a copy task (encoder-decoders). */
#include "loupe/circuits.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/heads.h"
#include "loupe/tokenizer.h"

static const char *const NAMES[LP_SCAN_COUNT] = {"prev_token", "duplicate_token", "induction", "first_token"};

const char *lp_scan_score_name(lp_scan_score k) { return (unsigned)k < LP_SCAN_COUNT ? NAMES[k] : "?"; }

/* splitmix64: a small generator whose sequences depend only on the seed. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* out (N): N distinct tokens below V not marked in used (marking them), from sequence
 * index's own stream, so that sequence i is the same however many are made. */
static void draw_distinct(const lp_scan_options *o, int index, int V, bool *used, int *out, int N) {
    uint64_t rng = o->seed ^ ((uint64_t)(index + 1) * 0xD1B54A32D192ED03ull);
    for (int i = 0; i < N; i++) {
        int x;
        do x = (int)(next_u64(&rng) % (uint64_t)V);
        while (used[x]);
        used[x] = true;
        out[i] = x;
    }
}

/* An encoder's drawable tokens: used[id] marks the tokenizer's special tokens; their count
 * less V, or -1 without a tokenizer. */
static int encoder_specials(const lp_model *m, bool *used) {
    const lp_tokenizer *t = lp_model_tokenizer(m);
    int V = lp_model_config(m)->vocab, allowed = V;
    if (!t) return -1;
    for (int k = 0; k < LP_SPECIAL_COUNT; k++) {
        int id = lp_tokenizer_special(t, (lp_special)k);
        if (id >= 0 && id < V && !used[id]) used[id] = true, allowed--;
    }
    return allowed;
}

static int encoder_allowed(const lp_model *m) {
    bool *used = calloc((size_t)lp_model_config(m)->vocab, sizeof *used);
    int n = used ? encoder_specials(m, used) : -1;
    free(used);
    return n;
}

/* The drawable tokens: not BOS and not the avoided ids. */
static int allowed_count(const lp_scan_options *o, int V) {
    int n = V - (o->bos >= 0 && o->bos < V);
    for (int k = 0; k < 2; k++)
        n -= o->avoid[k] >= 0 && o->avoid[k] < V && o->avoid[k] != o->bos && (k == 0 || o->avoid[1] != o->avoid[0]);
    return n;
}

static int sequence_len(const lp_config *c, const lp_scan_options *o) {
    int off = o->bos >= 0, N = o->seq_len, allowed = allowed_count(o, c->vocab);
    if (N <= 0) {
        N = (c->n_ctx - off) / 2;
        N = N > 50 ? 50 : N;
        N = N > allowed ? allowed : N;
    }
    if (N < 2 || 2 * N + off > c->n_ctx || N > allowed)
        return lp_error(LP_EINVAL, "scan: %d random tokens repeated need 2..%d distinct tokens and %d positions (the "
                        "model has %d)", N, allowed, 2 * N + off, c->n_ctx), -1;
    return N;
}

/* An encoder-decoder's drawable tokens: used[id] marks the decoder's start id, EOS and the
 * tokenizer's special tokens (when it has one); their count less V. */
static int seq2seq_specials(const lp_model *m, bool *used) {
    const lp_config *c = lp_model_config(m);
    int allowed = lp_model_tokenizer(m) ? encoder_specials(m, used) : c->vocab;
    int ids[2] = {c->start_id, c->eos_id};
    for (int k = 0; k < 2; k++)
        if (ids[k] >= 0 && ids[k] < c->vocab && !used[ids[k]]) used[ids[k]] = true, allowed--;
    return allowed;
}

/* An encoder-decoder's largest N: each stack's context holds N + 1 positions. */
static int seq2seq_max_len(const lp_model *m) {
    const lp_config *c = lp_model_config(m), *e = lp_model_config(lp_model_encoder(m));
    bool *used = calloc((size_t)c->vocab, sizeof *used);
    int allowed = used ? seq2seq_specials(m, used) : 0, N = (c->n_ctx < e->n_ctx ? c->n_ctx : e->n_ctx) - 1;
    free(used);
    return N < allowed ? N : allowed;
}

/* An encoder-decoder's N: o->seq_len, or 50 or what the contexts and vocabulary allow; -1
 * (with an error) when it does not fit. */
static int seq2seq_sequence_len(const lp_model *m, const lp_scan_options *o) {
    int max = seq2seq_max_len(m), N = o->seq_len;
    if (N <= 0) N = max < 50 ? max : 50;
    if (N < 2 || N > max)
        return lp_error(LP_EINVAL, "scan: a copy task of %d random tokens and </s> needs 2..%d distinct tokens within "
                        "both stacks' contexts", N, max), -1;
    return N;
}

/* t_1 .. t_N </s>: N distinct drawable tokens from sequence index's stream. */
static int seq2seq_sequence(const lp_model *m, const lp_scan_options *o, int index, int *ids, int *n) {
    const lp_config *c = lp_model_config(m);
    int V = c->vocab, N = seq2seq_sequence_len(m, o);
    if (N < 0) return LP_EINVAL;
    bool *used = calloc((size_t)V, sizeof *used);
    if (!used) return lp_error(LP_ENOMEM, "out of memory");
    seq2seq_specials(m, used);
    draw_distinct(o, index, V, used, ids, N);
    ids[N] = c->eos_id;
    *n = N + 1;
    free(used);
    return LP_OK;
}

int lp_scan_max_len(const lp_model *m, const lp_scan_options *o) {
    const lp_config *c = lp_model_config(m);
    if (lp_model_encoder(m)) return seq2seq_max_len(m);
    if (!c->causal) {
        int allowed = encoder_allowed(m), N = c->n_ctx - 2;
        return N < allowed ? N : allowed;
    }
    int N = (c->n_ctx - (o->bos >= 0)) / 2, allowed = allowed_count(o, c->vocab);
    return N < allowed ? N : allowed;
}

/* An encoder's N: o->seq_len, or 50 or what the context and vocabulary allow; -1 (with an
 * error) when it does not fit. */
static int encoder_sequence_len(const lp_model *m, const lp_scan_options *o) {
    const lp_config *c = lp_model_config(m);
    int allowed = encoder_allowed(m), N = o->seq_len;
    if (allowed < 0)
        return lp_error(LP_EINVAL, "scan: an encoder's scan needs its tokenizer (for [CLS] and [SEP])"), -1;
    if (N <= 0) {
        N = c->n_ctx - 2 < 50 ? c->n_ctx - 2 : 50;
        N = N > allowed ? allowed : N;
    }
    if (N < 2 || N + 2 > c->n_ctx || N > allowed)
        return lp_error(LP_EINVAL, "scan: %d random tokens between [CLS] and [SEP] need 2..%d distinct tokens and %d "
                        "positions (the model has %d)", N, allowed, N + 2, c->n_ctx), -1;
    return N;
}

/* [CLS] t_1 .. t_N [SEP], N distinct non-special tokens from sequence index's stream. */
static int encoder_sequence(const lp_model *m, const lp_scan_options *o, int index, int *ids, int *n) {
    int V = lp_model_config(m)->vocab, N = encoder_sequence_len(m, o);
    if (N < 0) return LP_EINVAL;
    bool *used = calloc((size_t)V, sizeof *used);
    if (!used) return lp_error(LP_ENOMEM, "out of memory");
    encoder_specials(m, used);
    const lp_tokenizer *t = lp_model_tokenizer(m);
    ids[0] = lp_tokenizer_special(t, LP_SPECIAL_CLS);
    draw_distinct(o, index, V, used, ids + 1, N);
    ids[N + 1] = lp_tokenizer_special(t, LP_SPECIAL_SEP);
    *n = N + 2;
    free(used);
    return LP_OK;
}

int lp_scan_sequence(const lp_model *m, const lp_scan_options *o, int index, int *ids, int *n) {
    const lp_config *c = lp_model_config(m);
    if (lp_model_encoder(m)) return seq2seq_sequence(m, o, index, ids, n);
    if (!c->causal) return encoder_sequence(m, o, index, ids, n);
    int V = c->vocab, N = sequence_len(c, o), at = 0;
    if (N < 0) return LP_EINVAL;
    bool *used = calloc((size_t)V, sizeof *used);
    if (!used) return lp_error(LP_ENOMEM, "out of memory");
    for (int k = 0; k < 2; k++)
        if (o->avoid[k] >= 0 && o->avoid[k] < V) used[o->avoid[k]] = true;
    if (o->bos >= 0) {
        ids[at++] = o->bos;
        if (o->bos < V) used[o->bos] = true;
    }
    draw_distinct(o, index, V, used, ids + at, N);
    memcpy(ids + at + N, ids + at, (size_t)N * sizeof *ids); /* the same tokens again */
    *n = at + 2 * N;
    free(used);
    return LP_OK;
}

int lp_scan_heads(const lp_model *m, const lp_scan_options *o, float *scores, int *seq_len) {
    const lp_config *c = lp_model_config(m);
    if (lp_model_encoder(m))
        return lp_error(LP_EUNSUPPORTED, "scan: %s is an encoder-decoder; its heads are scored by "
                        "lp_scan_heads_seq2seq", c->arch);
    if (!c->causal)
        return lp_error(LP_EUNSUPPORTED, "scan: %s is an encoder; its heads are scored by lp_scan_heads_encoder", c->arch);
    int H = c->n_head, B = o->n_seqs > 0 ? o->n_seqs : 4, off = o->bos >= 0, N = sequence_len(c, o);
    if (N < 0) return LP_EINVAL;
    int T = 2 * N + off;
    int *ids = malloc((size_t)T * sizeof *ids);
    double *sum = calloc((size_t)c->n_layer * H * LP_SCAN_COUNT, sizeof *sum);
    int rc = LP_OK;
    if (!ids || !sum) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int s = 0; s < B && !rc; s++) {
        lp_run *r;
        int n;
        if ((rc = lp_scan_sequence(m, o, s, ids, &n)) || (rc = lp_run_new(&r, m, ids, T))) break;
        for (int l = 0; l < c->n_layer; l++)
            for (int h = 0; h < H; h++) {
                lp_view v;
                lp_run_view(r, LP_ACT_PATTERN, l, h, &v);
                double prev = 0, first = 0, dup = 0, ind = 0;
                for (int i = 1; i < T; i++) {
                    const float *row = v.data + (size_t)i * v.stride[0];
                    prev += row[i - 1];
                    first += row[0];
                    if (i >= off + N) { /* the second copy: t_i's earlier copy is at i - N */
                        dup += row[i - N];
                        ind += row[i - N + 1];
                    }
                }
                double *o2 = sum + ((size_t)l * H + h) * LP_SCAN_COUNT;
                o2[LP_SCAN_PREV_TOKEN] += prev / (T - 1);
                o2[LP_SCAN_FIRST_TOKEN] += first / (T - 1);
                o2[LP_SCAN_DUPLICATE_TOKEN] += dup / N;
                o2[LP_SCAN_INDUCTION] += ind / N;
            }
        lp_run_free(r);
    }
    if (!rc) {
        for (size_t i = 0; i < (size_t)c->n_layer * H * LP_SCAN_COUNT; i++) scores[i] = (float)(sum[i] / B);
        if (seq_len) *seq_len = N;
    }
    free(ids);
    free(sum);
    return rc;
}

static const char *const ENC_NAMES[LP_ESCAN_COUNT] = {"prev_token", "next_token", "cls_sink", "sep_sink", "broad"};

const char *lp_encoder_scan_score_name(lp_encoder_scan_score k) {
    return (unsigned)k < LP_ESCAN_COUNT ? ENC_NAMES[k] : "?";
}

int lp_scan_heads_encoder(const lp_model *m, const lp_scan_options *o, float *scores, int *seq_len) {
    const lp_config *c = lp_model_config(m);
    if (c->causal) return lp_error(LP_EINVAL, "lp_scan_heads_encoder: %s is a decoder; use lp_scan_heads", c->arch);
    int N = encoder_sequence_len(m, o), B = o->n_seqs > 0 ? o->n_seqs : 4;
    if (N < 0) return LP_EINVAL;
    size_t nh = (size_t)c->n_layer * c->n_head;
    int *ids = malloc((size_t)(N + 2) * sizeof *ids), rc = LP_OK;
    float *hm = malloc(nh * LP_HEAD_ALL_METRIC_COUNT * sizeof *hm), *em = hm ? hm + nh * LP_HEAD_METRIC_COUNT : NULL;
    double *sum = calloc(nh * LP_ESCAN_COUNT, sizeof *sum);
    if (!ids || !hm || !sum) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int b = 0; b < B && !rc; b++) {
        lp_run *r;
        int n;
        if ((rc = encoder_sequence(m, o, b, ids, &n)) || (rc = lp_run_new(&r, m, ids, n))) break;
        if ((rc = lp_head_metrics(hm, r))) {
            lp_run_free(r);
            break;
        }
        lp_head_metrics_encoder(em, r);
        for (size_t i = 0; i < nh; i++) {
            const float *e = em + i * LP_HEAD_ENCODER_METRIC_COUNT;
            double *x = sum + i * LP_ESCAN_COUNT;
            x[LP_ESCAN_PREV_TOKEN] += hm[i * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN];
            x[LP_ESCAN_NEXT_TOKEN] += e[LP_HEAD_NEXT_TOKEN - LP_HEAD_METRIC_COUNT];
            x[LP_ESCAN_CLS_SINK] += e[LP_HEAD_CLS_SINK - LP_HEAD_METRIC_COUNT];
            x[LP_ESCAN_SEP_SINK] += e[LP_HEAD_SEP_SINK - LP_HEAD_METRIC_COUNT];
            x[LP_ESCAN_BROAD] += e[LP_HEAD_BROAD - LP_HEAD_METRIC_COUNT];
        }
        lp_run_free(r);
    }
    if (!rc) {
        for (size_t i = 0; i < nh * LP_ESCAN_COUNT; i++) scores[i] = (float)(sum[i] / B);
        if (seq_len) *seq_len = N;
    }
    free(ids);
    free(hm);
    free(sum);
    return rc;
}

static const char *const S2S_NAMES[LP_S2S_COUNT] = {"prev_token", "next_token", "first_token", "broad",   "source_eos",
                                                    "aligned",    "diagonal",   "monotonic",   "coverage"};

const char *lp_seq2seq_scan_score_name(lp_seq2seq_scan_score k) {
    return (unsigned)k < LP_S2S_COUNT ? S2S_NAMES[k] : "?";
}

/* Adds one copy-task run's scores to the sums (n_layer * H rows of LP_S2S_COUNT each). hm,
 * em, xm: scratch for heads.h's metrics. */
static int seq2seq_add(const lp_run *r, double *enc, double *dec, double *cross, float *hm, float *em, float *xm) {
    const lp_run *src = lp_run_source(r);
    const lp_config *ce = lp_model_config(lp_run_model(src)), *cd = lp_model_config(lp_run_model(r));
    int H = cd->n_head, S = lp_run_len(src), T = lp_run_len(r);
    int rc = lp_head_metrics(hm, src);
    if (rc) return rc;
    lp_head_metrics_encoder(em, src);
    for (int i = 0; i < ce->n_layer * H; i++) {
        double *x = enc + (size_t)i * LP_S2S_COUNT, eos = 0;
        lp_view v;
        lp_run_view(src, LP_ACT_PATTERN, i / H, i % H, &v);
        for (int q = 0; q < S; q++) eos += v.data[(size_t)q * v.stride[0] + S - 1];
        x[LP_S2S_PREV_TOKEN] += hm[(size_t)i * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN];
        x[LP_S2S_NEXT_TOKEN] += em[(size_t)i * LP_HEAD_ENCODER_METRIC_COUNT + LP_HEAD_NEXT_TOKEN - LP_HEAD_METRIC_COUNT];
        x[LP_S2S_BROAD] += em[(size_t)i * LP_HEAD_ENCODER_METRIC_COUNT + LP_HEAD_BROAD - LP_HEAD_METRIC_COUNT];
        x[LP_S2S_SOURCE_EOS] += eos / S;
    }
    if ((rc = lp_head_metrics(hm, r)) || (rc = lp_cross_metrics(xm, r))) return rc;
    for (int i = 0; i < cd->n_layer * H; i++) {
        double *x = dec + (size_t)i * LP_S2S_COUNT, *y = cross + (size_t)i * LP_S2S_COUNT, aligned = 0;
        const float *m = xm + (size_t)i * LP_CROSS_METRIC_COUNT;
        lp_view v;
        lp_run_view(r, LP_ACT_CROSS_PATTERN, i / H, i % H, &v);
        for (int q = 0; q < T; q++) aligned += v.data[(size_t)q * v.stride[0] + q];
        x[LP_S2S_PREV_TOKEN] += hm[(size_t)i * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN];
        x[LP_S2S_FIRST_TOKEN] += hm[(size_t)i * LP_HEAD_METRIC_COUNT + LP_HEAD_FIRST_TOKEN];
        y[LP_S2S_ALIGNED] += aligned / T;
        y[LP_S2S_SOURCE_EOS] += m[LP_CROSS_SOURCE_EOS];
        y[LP_S2S_DIAGONAL] += m[LP_CROSS_DIAGONAL];
        y[LP_S2S_MONOTONIC] += m[LP_CROSS_MONOTONIC];
        y[LP_S2S_COVERAGE] += m[LP_CROSS_COVERAGE];
    }
    return LP_OK;
}

/* The scores a kind has: the others are NAN. */
static const bool S2S_HAS[3][LP_S2S_COUNT] = {
    [0] = {[LP_S2S_PREV_TOKEN] = 1, [LP_S2S_NEXT_TOKEN] = 1, [LP_S2S_BROAD] = 1, [LP_S2S_SOURCE_EOS] = 1},
    [1] = {[LP_S2S_PREV_TOKEN] = 1, [LP_S2S_FIRST_TOKEN] = 1},
    [2] = {[LP_S2S_ALIGNED] = 1, [LP_S2S_SOURCE_EOS] = 1, [LP_S2S_DIAGONAL] = 1, [LP_S2S_MONOTONIC] = 1,
           [LP_S2S_COVERAGE] = 1},
};

int lp_scan_heads_seq2seq(const lp_model *m, const lp_scan_options *o, float *enc, float *dec, float *cross,
                          int *seq_len) {
    const lp_model *e = lp_model_encoder(m);
    if (!e) return lp_error(LP_EINVAL, "lp_scan_heads_seq2seq: %s is not an encoder-decoder", lp_model_config(m)->arch);
    const lp_config *ce = lp_model_config(e), *cd = lp_model_config(m);
    int N = seq2seq_sequence_len(m, o), B = o->n_seqs > 0 ? o->n_seqs : 4, H = cd->n_head;
    if (N < 0) return LP_EINVAL;
    size_t ne = (size_t)ce->n_layer * H, nd = (size_t)cd->n_layer * H, nmax = ne > nd ? ne : nd;
    int *src = malloc((size_t)(2 * N + 2) * sizeof *src), *tgt = src ? src + N + 1 : NULL, rc = LP_OK;
    float *hm = malloc(nmax * (LP_HEAD_METRIC_COUNT + LP_HEAD_ENCODER_METRIC_COUNT + LP_CROSS_METRIC_COUNT) * sizeof *hm);
    float *em = hm ? hm + nmax * LP_HEAD_METRIC_COUNT : NULL, *xm = em ? em + nmax * LP_HEAD_ENCODER_METRIC_COUNT : NULL;
    double *sum = calloc((ne + 2 * nd) * LP_S2S_COUNT, sizeof *sum);
    if (!src || !hm || !sum) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int b = 0; b < B && !rc; b++) {
        lp_run *r;
        int n;
        if ((rc = seq2seq_sequence(m, o, b, src, &n))) break;
        tgt[0] = cd->start_id; /* the decoder reads the start id, then the copy */
        memcpy(tgt + 1, src, (size_t)N * sizeof *tgt);
        if ((rc = lp_run_new_seq2seq(&r, m, src, n, tgt, n))) break;
        rc = seq2seq_add(r, sum, sum + ne * LP_S2S_COUNT, sum + (ne + nd) * LP_S2S_COUNT, hm, em, xm);
        lp_run_free(r);
    }
    if (!rc) {
        float *outs[3] = {enc, dec, cross};
        size_t rows[3] = {ne, nd, nd}, at = 0;
        for (int k = 0; k < 3; k++)
            for (size_t i = 0; i < rows[k] * LP_S2S_COUNT; i++, at++)
                outs[k][i] = S2S_HAS[k][i % LP_S2S_COUNT] ? (float)(sum[at] / B) : NAN;
        if (seq_len) *seq_len = N;
    }
    free(src);
    free(hm);
    free(sum);
    return rc;
}
