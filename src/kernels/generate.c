/* Generation: a key/value cache per layer, blocks of new tokens through the same layer
 * kernels as a captured run, and sampling (greedy, temperature, top-k, top-p). */
#include "loupe/generate.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/vmath.h"
#include "loupe/error.h"
#include "util/parallel.h"
#include "loupe/run.h"

struct lp_generator {
    const lp_model *m;
    int max_len, len;
    float *k, *v;        /* (L, max_len, Hkv * dh) */
    int S;               /* an encoder-decoder's source length; 0 otherwise */
    float *xk, *xv;      /* (L, S, H * dh): the encoder's output through each layer's cross keys, values */
    int *rel_bucket;     /* LP_POS_RELATIVE: buckets of offsets -(max_len - 1) .. max_len - 1 */
    int cap;             /* rows the scratch below holds */
    float *scratch;      /* one block's activations, reused by every layer */
    float *logits;       /* (V) */
    lp_edit edit;        /* applied to every block fed (lp_generator_set_edit) */
};

static int generator_new(lp_generator **out, const lp_model *m, int max_len, const lp_run *source) {
    *out = NULL;
    const lp_config *c = &m->cfg;
    if (max_len < 1 || max_len > c->n_ctx) max_len = c->n_ctx;
    lp_generator *g = calloc(1, sizeof *g);
    if (!g) return lp_error(LP_ENOMEM, "out of memory");
    size_t cache = (size_t)c->n_layer * max_len * c->n_kv_head * c->d_head;
    g->m = m;
    g->max_len = max_len;
    g->k = malloc(cache * sizeof(float));
    g->v = malloc(cache * sizeof(float));
    g->logits = malloc((size_t)c->vocab * sizeof(float));
    bool ok = g->k && g->v && g->logits;
    if (ok && c->pos == LP_POS_RELATIVE) {
        ok = (g->rel_bucket = malloc((size_t)(2 * max_len - 1) * sizeof *g->rel_bucket)) != NULL;
        for (int rel = -(max_len - 1); ok && rel < max_len; rel++)
            g->rel_bucket[rel + max_len - 1] = lp_rel_bucket(rel, !c->causal, c->rel_buckets, c->rel_max_distance);
    }
    if (ok && source) {
        /* the cross keys and values, once: what every new token's cross-attention reads */
        lp_view enc;
        g->S = lp_run_len(source);
        size_t qd = (size_t)c->n_head * c->d_head, n = (size_t)c->n_layer * g->S * qd;
        ok = lp_run_view(source, LP_ACT_LN_FINAL, -1, -1, &enc) == LP_OK && (g->xk = malloc(n * sizeof(float))) &&
             (g->xv = malloc(n * sizeof(float)));
        for (int l = 0; ok && l < c->n_layer; l++) {
            lp_linear_forward(g->xk + (size_t)l * g->S * qd, enc.data, &m->layers[l].xk, g->S);
            lp_linear_forward(g->xv + (size_t)l * g->S * qd, enc.data, &m->layers[l].xv, g->S);
        }
    }
    if (!ok) {
        lp_generator_free(g);
        return lp_error(LP_ENOMEM, "out of memory for a key/value cache of %d positions", max_len);
    }
    *out = g;
    return LP_OK;
}

int lp_generator_new(lp_generator **out, const lp_model *m, int max_len) {
    *out = NULL;
    if (lp_model_need_decoder(m, "generate")) return LP_EUNSUPPORTED;
    return generator_new(out, m, max_len, NULL);
}

int lp_generator_new_seq2seq(lp_generator **out, const lp_model *m, int max_len, const lp_run *source) {
    *out = NULL;
    if (!m->cfg.cross_attn || !source || lp_run_model(source) != m->encoder)
        return lp_error(LP_EINVAL, "a decoder with a source needs an encoder-decoder and its encoder's run");
    return generator_new(out, m, max_len, source);
}

void lp_generator_free(lp_generator *g) {
    if (!g) return;
    free(g->k);
    free(g->v);
    free(g->scratch);
    free(g->logits);
    free(g->xk);
    free(g->xv);
    free(g->rel_bucket);
    free(g);
}

int lp_generator_len(const lp_generator *g) { return g->len; }
void lp_generator_set_edit(lp_generator *g, const lp_edit *e) { g->edit = e ? *e : (lp_edit){0}; }
void lp_generator_reset(lp_generator *g) { g->len = 0; }

int lp_generator_feed(lp_generator *g, const int *ids, int n, const float **logits) {
    const lp_model *m = g->m;
    const lp_config *c = &m->cfg;
    if (n < 1) return lp_error(LP_EINVAL, "nothing to feed");
    if (g->len + n > g->max_len)
        return lp_error(LP_ERANGE, "%d tokens exceed the context of %d", g->len + n, g->max_len);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return lp_error(LP_EINVAL, "token id %d is outside the vocabulary (0..%d)", ids[i], c->vocab - 1);
    size_t d = c->d_model, qd = (size_t)c->n_head * c->d_head, dm = c->d_mlp, half = c->d_head / 2;
    size_t S = g->S;
    size_t per_row = 7 * d + 2 * qd + 3 * dm + 2 + 2 * half + (size_t)c->n_head * g->max_len +
                     (S ? 3 * d + 2 * qd + 1 + (size_t)c->n_head * S : 0);
    if (n > g->cap) {
        float *s = realloc(g->scratch, per_row * n * sizeof(float));
        if (!s) return lp_error(LP_ENOMEM, "out of memory");
        g->scratch = s;
        g->cap = n;
    }
    size_t N = n;
    float *p = g->scratch;
    float *x = p; p += N * d;          /* residual stream, updated in place layer by layer */
    float *ln1 = p; p += N * d;
    float *ln2 = p; p += N * d;
    float *attn_out = p; p += N * d;
    float *mid = p; p += N * d;
    float *mlp_out = p; p += N * d;
    float *lnf = p; p += N * d;
    float *q = p; p += N * qd;
    float *z = p; p += N * qd;
    float *pre = p; p += N * dm;
    float *up = p; p += N * dm;
    float *post = p; p += N * dm;
    float *s1 = p; p += N;
    float *s2 = p; p += N;
    float *cos_t = p; p += N * half;
    float *sin_t = p; p += N * half;
    float *pattern = p; p += N * c->n_head * g->max_len;
    float *lnx = p; p += N * d * !!S; /* cross-attention's, when there is a source */
    float *xq = p; p += N * qd * !!S;
    float *xz = p; p += N * qd * !!S;
    float *xattn = p; p += N * d * !!S;
    float *xresid = p; p += N * d * !!S;
    float *sx = p; p += N * !!S;
    float *xpattern = p;

    int t0 = g->len, rc = LP_OK;
    if (n == 1) lp_parallel_spin(true); /* one-row steps: many short jobs (util/parallel.h) */
    lp_embed(x, m, ids, NULL, t0, n);
    if (lp_pos_rotary(c)) lp_rope_tables(cos_t, sin_t, c, t0, n);
    size_t layer_cache = (size_t)g->max_len * c->n_kv_head * c->d_head;
    for (int l = 0; l < c->n_layer; l++) {
        if (lp_cancelled()) {
            rc = lp_error(LP_ECANCEL, "cancelled");
            break;
        }
        if (g->edit.fn) g->edit.fn(g->edit.ctx, l, LP_ACT_RESID_PRE, x, n);
        lp_layer_io io = {
            .resid_in = x, .ln1 = ln1, .ln1_scale = s1, .q = q,
            .k = g->k + l * layer_cache, .v = g->v + l * layer_cache,
            .pattern = pattern, .pattern_ld = t0 + n, .z = z, .attn_out = attn_out, .resid_mid = mid,
            .ln2 = ln2, .ln2_scale = s2, .mlp_pre = pre, .mlp_up = up, .mlp_post = post,
            .mlp_out = mlp_out, .resid_out = x, /* safe: read only through resid_mid before written */
            .rel_bias = m->rel_bias, .rel_bucket = g->rel_bucket, .rel_off = g->max_len - 1, .edit = g->edit,
        };
        if (S) {
            size_t at = (size_t)l * S * qd;
            io.S = (int)S, io.xk = g->xk + at, io.xv = g->xv + at, io.lnx = lnx, io.lnx_scale = sx, io.xq = xq;
            io.xpattern = xpattern, io.xz = xz, io.xattn_out = xattn, io.resid_cross = xresid;
        }
        lp_layer_forward(m, l, &io, cos_t, sin_t, t0, n);
    }
    if (rc == LP_OK) {
        g->len += n;
        /* Only the last position's logits are needed to continue. */
        float *last = x + (N - 1) * d;
        lp_norm(lnf, s1, last, m->lnf_w, m->lnf_b, 1, (int)d, c->norm, c->norm_eps);
        lp_linear_forward(g->logits, lnf, &m->unembed, 1);
        lp_softcap(g->logits, (size_t)c->vocab, c->final_softcap);
    }
    if (n == 1) lp_parallel_spin(false);
    if (rc) return rc;
    if (lp_first_nonfinite(g->logits, (size_t)c->vocab) >= 0) /* as lp_run_new: never sample from NaN */
        return lp_error(LP_ERANGE, "the forward pass overflowed float32 at position %d: the logits hold inf or NaN "
                        "(weights too large for this input?)", g->len - 1);
    if (logits) *logits = g->logits;
    return LP_OK;
}

/* splitmix64: small, fast, and the same stream for a seed on every machine. */
void lp_rng_seed(lp_rng *rng, uint64_t seed) { rng->state = seed; }

uint64_t lp_mix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(lp_rng *rng) {
    uint64_t z = lp_mix64(rng->state);
    rng->state += 0x9E3779B97F4A7C15ull;
    return z;
}

double lp_rng_uniform(lp_rng *rng) { return (double)(rng_next(rng) >> 11) * (1.0 / 9007199254740992.0); }

typedef struct {
    float p;
    int id;
} prob_id;

static int by_prob_desc(const void *a, const void *b) {
    const prob_id *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id; /* ties broken by id, so the order never depends on qsort */
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

#define TOP_K_INSERTION_MAX 64

static int by_logit_desc(const void *a, const void *b, void *logits) {
    const float *lg = logits;
    int x = *(const int *)a, y = *(const int *)b;
    if (lg[x] != lg[y]) return lg[x] < lg[y] ? 1 : -1;
    return x - y;
}

/* The largest of x[0..LP_VBLOCK), in lanes the compiler vectorises. */
static float block_max(const float *x) {
    float lane[16];
    for (int i = 0; i < 16; i++) lane[i] = x[i];
    for (int b = 16; b < LP_VBLOCK; b += 16)
        for (int i = 0; i < 16; i++) lane[i] = x[b + i] > lane[i] ? x[b + i] : lane[i];
    float m = lane[0];
    for (int i = 1; i < 16; i++) m = lane[i] > m ? lane[i] : m;
    return m;
}

/* id a ranks below id b in by_logit_desc's order (a smaller logit, or the same at a larger id). */
static bool ranks_below(const float *lg, int a, int b) { return by_logit_desc(&a, &b, (void *)lg) > 0; }

/* The k best ids of logits (V) for a large k: a heap whose root ranks lowest, so each later id
 * is one comparison with the root (it ties with no kept id, whose ids are smaller: it enters
 * only with a larger logit), O(V log k) at worst; then the k in order. Sorting all V was
 * O(V log V) and an allocation. */
static void top_k_heap(int *ids, const float *lg, int vocab, int k) {
    for (int j = 0; j < vocab; j++) {
        int at;
        if (j < k) { /* sift up */
            for (at = j; at > 0 && ranks_below(lg, j, ids[(at - 1) / 2]); at = (at - 1) / 2) ids[at] = ids[(at - 1) / 2];
            ids[at] = j;
            continue;
        }
        if (!(lg[j] > lg[ids[0]])) continue;
        for (at = 0;;) { /* the root replaced, sifted down */
            int c = 2 * at + 1;
            if (c >= k) break;
            if (c + 1 < k && ranks_below(lg, ids[c + 1], ids[c])) c++;
            if (!ranks_below(lg, ids[c], j)) break;
            ids[at] = ids[c];
            at = c;
        }
        ids[at] = j;
    }
    qsort_r(ids, (size_t)k, sizeof *ids, by_logit_desc, (void *)lg);
}

int lp_top_k(int *ids, const float *logits, int vocab, int k) {
    if (k > TOP_K_INSERTION_MAX) {
        top_k_heap(ids, logits, vocab, k);
        return LP_OK;
    }
    /* Keep the best k seen so far in order; a later id enters only if strictly larger, so
     * ties keep the smaller id first. Once k are kept, a block whose largest does not beat
     * the k-th can hold nothing that enters: most of a vocabulary is skipped a block at a
     * time. */
    int have = 0;
    for (int b = 0; b < vocab; b += LP_VBLOCK) {
        int end = vocab - b < LP_VBLOCK ? vocab : b + LP_VBLOCK;
        if (have == k && end == b + LP_VBLOCK && !(block_max(logits + b) > logits[ids[k - 1]])) continue;
        for (int j = b; j < end; j++) {
            if (have == k && !(logits[j] > logits[ids[k - 1]])) continue;
            int i = have < k ? have++ : k - 1;
            while (i > 0 && logits[ids[i - 1]] < logits[j]) {
                ids[i] = ids[i - 1];
                i--;
            }
            ids[i] = j;
        }
    }
    return LP_OK;
}

double lp_softmax_norm(const float *logits, int vocab, float *max) {
    float lane[16], mx = logits[0];
    int b = 0;
    for (int i = 0; i < 16; i++) lane[i] = logits[0];
    for (; b + 16 <= vocab; b += 16)
        for (int i = 0; i < 16; i++) lane[i] = logits[b + i] > lane[i] ? logits[b + i] : lane[i];
    for (int i = 0; i < 16; i++) mx = lane[i] > mx ? lane[i] : mx;
    for (; b < vocab; b++) mx = logits[b] > mx ? logits[b] : mx;
    /* Each block's terms in float (16 lanes, then summed), the blocks in double. */
    double z = 0.0;
    float t[LP_VBLOCK];
    for (b = 0; b + LP_VBLOCK <= vocab; b += LP_VBLOCK) {
        for (int i = 0; i < LP_VBLOCK; i++) t[i] = lp_vexp(logits[b + i] - mx);
        z += lp_vsum_block(t);
    }
    for (; b < vocab; b++) z += lp_vexp(logits[b] - mx);
    *max = mx;
    return z;
}

typedef struct {
    int *ids;
    double *probs;
    const float *logits;
    int vocab, k;
    atomic_int failed;
} top_rows;

static void top_rows_share(void *ctx, size_t lo, size_t hi) {
    top_rows *w = ctx;
    for (size_t r = lo; r < hi; r++) {
        const float *lg = w->logits + (size_t)r * w->vocab;
        int *ids = w->ids + (size_t)r * w->k;
        float mx;
        double z = lp_softmax_norm(lg, w->vocab, &mx);
        if (lp_top_k(ids, lg, w->vocab, w->k)) {
            atomic_store(&w->failed, 1);
            continue;
        }
        for (int i = 0; i < w->k; i++) w->probs[(size_t)r * w->k + i] = exp((double)lg[ids[i]] - mx) / z;
    }
}

int lp_top_k_rows(int *ids, double *probs, const float *logits, int rows, int vocab, int k) {
    top_rows w = {ids, probs, logits, vocab, k, 0};
    lp_parallel_for((size_t)rows, 8, top_rows_share, &w); /* 8 rows a chunk: each a pass over the vocabulary */
    return atomic_load(&w.failed) ? lp_error(LP_ENOMEM, "out of memory") : LP_OK;
}

int lp_sample(const float *logits, int vocab, const lp_sampling *s, lp_rng *rng) {
    if (!s || s->temperature <= 0.0f || s->top_k == 1) return argmax(logits, vocab);
    prob_id *pi = malloc((size_t)vocab * sizeof *pi);
    if (!pi) return argmax(logits, vocab);
    float mx = logits[argmax(logits, vocab)];
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) {
        pi[i].id = i;
        pi[i].p = expf((logits[i] - mx) / s->temperature);
        sum += pi[i].p;
    }
    qsort(pi, (size_t)vocab, sizeof *pi, by_prob_desc);
    int keep = vocab;
    if (s->top_k > 0 && s->top_k < keep) keep = s->top_k;
    double kept = 0.0;
    for (int i = 0; i < keep; i++) kept += pi[i].p;
    if (s->top_p > 0.0f && s->top_p < 1.0f) {
        /* The smallest prefix whose probability reaches top_p (of what top-k kept). */
        double acc = 0.0;
        for (int i = 0; i < keep; i++) {
            acc += pi[i].p;
            if (acc >= s->top_p * kept) {
                keep = i + 1;
                kept = acc;
                break;
            }
        }
    }
    (void)sum;
    double r = lp_rng_uniform(rng) * kept, acc = 0.0;
    int pick = pi[keep - 1].id;
    for (int i = 0; i < keep; i++) {
        acc += pi[i].p;
        if (r < acc) {
            pick = pi[i].id;
            break;
        }
    }
    free(pi);
    return pick;
}

/* Feeds the prompt, then samples up to n_new tokens into out, stopping after eos (>= 0). */
static int generate_with(lp_generator *g, const int *prompt, int n_prompt, int n_new, const lp_sampling *s, int eos,
                         int *out, int *n_out) {
    const lp_config *c = &g->m->cfg;
    lp_rng rng;
    lp_rng_seed(&rng, s ? s->seed : 0);
    const float *logits;
    int rc = lp_generator_feed(g, prompt, n_prompt, &logits);
    for (int i = 0; rc == LP_OK && i < n_new; i++) {
        int next = lp_sample(logits, c->vocab, s, &rng);
        out[(*n_out)++] = next;
        if (next == eos || i + 1 == n_new) break;
        rc = lp_generator_feed(g, &next, 1, &logits);
    }
    return rc;
}

/* Shortens n_new so that the sequence stays within the context (the model must stop there). */
static int fit_context(const lp_config *c, int n_prompt, int *n_new) {
    if (n_prompt < 1) return lp_error(LP_EINVAL, "generation needs at least one prompt token");
    if (n_prompt + *n_new > c->n_ctx) {
        if (n_prompt >= c->n_ctx)
            return lp_error(LP_ERANGE, "the prompt already fills the context of %d tokens", c->n_ctx);
        *n_new = c->n_ctx - n_prompt;
    }
    return LP_OK;
}

int lp_generate(const lp_model *m, const int *prompt, int n_prompt, int n_new, const lp_sampling *s,
                int stop_at_eos, int *out, int *n_out) {
    return lp_generate_edited(m, prompt, n_prompt, n_new, s, stop_at_eos, NULL, out, n_out);
}

int lp_generate_edited(const lp_model *m, const int *prompt, int n_prompt, int n_new, const lp_sampling *s,
                       int stop_at_eos, const lp_edit *edit, int *out, int *n_out) {
    *n_out = 0;
    int rc = fit_context(&m->cfg, n_prompt, &n_new);
    if (rc) return rc;
    lp_generator *g;
    if ((rc = lp_generator_new(&g, m, n_prompt + n_new))) return rc;
    lp_generator_set_edit(g, edit);
    rc = generate_with(g, prompt, n_prompt, n_new, s, m->tok && stop_at_eos ? lp_tokenizer_eos(m->tok) : -1, out,
                       n_out);
    lp_generator_free(g);
    return rc;
}

int lp_generate_seq2seq(const lp_model *m, const lp_run *source, const int *prompt, int n_prompt, int n_new,
                        const lp_sampling *s, int stop_at_eos, int *out, int *n_out) {
    *n_out = 0;
    int rc = fit_context(&m->cfg, n_prompt, &n_new);
    if (rc) return rc;
    lp_generator *g;
    if ((rc = lp_generator_new_seq2seq(&g, m, n_prompt + n_new, source))) return rc;
    rc = generate_with(g, prompt, n_prompt, n_new, s, stop_at_eos ? m->cfg.eos_id : -1, out, n_out);
    lp_generator_free(g);
    return rc;
}
