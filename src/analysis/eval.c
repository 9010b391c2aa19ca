/* Removal-based faithfulness of attributions (definitions in eval.h). Each measure is a set
 * of perturbed inputs, one "keep" mask over the positions judged each; the masks of all the
 * attributions judged together go through lp_forward_batch_shared at once (grouped by length when
 * removal deletes tokens; an encoder-decoder's one run each), then the measures are read off
 * their f values. */
#include "loupe/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arch/model_impl.h"
#include "kernels/forward.h"
#include "loupe/error.h"
#include "loupe/tokenizer.h"

static const char *const REMOVE_NAMES[LP_REMOVE_COUNT] = {"delete", "mask", "baseline"};

const char *lp_remove_name(lp_remove r) { return (unsigned)r < LP_REMOVE_COUNT ? REMOVE_NAMES[r] : "?"; }

int lp_remove_from_name(const char *name, lp_remove *out) {
    for (int i = 0; i < LP_REMOVE_COUNT; i++)
        if (strcmp(name, REMOVE_NAMES[i]) == 0) {
            *out = (lp_remove)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown removal '%s'; use delete, mask or baseline", name);
}

struct lp_eval {
    const lp_run *r;
    const lp_model *m;
    lp_eval_spec sp;
    bool enc;       /* an encoder: every position is read, the inputs are the sums before the embeddings' norm */
    int T;          /* the positions judged: 0..pos (decoders), all (encoders), S + pos + 1 (encoder-decoders) */
    int S;          /* encoder-decoders: the first S of them are the source's, the rest the decoder's 0..pos */
    int at;         /* where f is read, among the T (S + pos for an encoder-decoder) */
    int n;          /* removable positions */
    int *removable; /* (n) */
    double fx, fempty;
    double *loo;    /* (n) */
    int *ids, *types; /* (T) the tokens, the source's first */
    float *x, *b;   /* (T, d): the inputs, and each row with its token replaced */
};

/* A set of perturbed inputs: keep (nq, T) masks, or (keep NULL) infidelity's noise (nq, n);
 * f (nq) their values. */
typedef struct {
    const lp_eval *e;
    int nq;
    unsigned char *keep;
    const double *noise;
    double *f;
    const int *idx;  /* the queries of the current batch */
    int *ids, *types; /* (T) scratch for delete */
} queries;

static bool deleting(const queries *q) { return q->keep && q->e->sp.remove == LP_REMOVE_DELETE; }

/* Query i as the model's input: its tokens (len, the source's ns first), where f is read
 * (counted from the first row of the stack that reads it), and, when tokens are not deleted,
 * its rows (len, d), e->x's with each removed row replaced or moved toward b. Returns len. */
static int query_input(const queries *q, int i, int *ids, int *types, float *rows, int *at, int *ns) {
    const lp_eval *e = q->e;
    size_t d = (size_t)e->m->cfg.d_model;
    const unsigned char *keep = q->keep ? q->keep + (size_t)i * e->T : NULL;
    if (deleting(q)) {
        int len = 0;
        *at = *ns = 0;
        for (int t = 0; t < e->T; t++)
            if (keep[t]) {
                if (ids) ids[len] = e->ids[t];
                if (types) types[len] = e->types[t];
                len++;
                *ns += t < e->S;
                *at += t >= e->S && t < e->at; /* kept rows before f's own, in its stack */
            }
        return len;
    }
    *at = e->at - e->S;
    *ns = e->S;
    if (ids) memcpy(ids, e->ids, (size_t)e->T * sizeof *ids);
    if (types) memcpy(types, e->types, (size_t)e->T * sizeof *types);
    if (!rows) return e->T;
    if (keep) {
        for (int t = 0; t < e->T; t++) memcpy(rows + t * d, (keep[t] ? e->x : e->b) + t * d, d * sizeof *rows);
        return e->T;
    }
    memcpy(rows, e->x, (size_t)e->T * d * sizeof *rows);
    for (int j = 0; j < e->n; j++) {
        size_t t = (size_t)e->removable[j];
        float a = (float)q->noise[(size_t)i * e->n + j];
        for (size_t k = 0; k < d; k++) rows[t * d + k] -= a * (e->x[t * d + k] - e->b[t * d + k]);
    }
    return e->T;
}

static void perturbed_input(float *out, int i, void *ctx) {
    const queries *q = ctx;
    const lp_eval *e = q->e;
    int at, ns;
    if (!deleting(q)) {
        query_input(q, q->idx[i], NULL, NULL, out, &at, &ns);
        return;
    }
    int len = query_input(q, q->idx[i], q->ids, q->types, NULL, &at, &ns);
    if (e->enc) lp_embed_sum(out, e->m, q->ids, q->types, 0, len); /* positions renumbered, types kept */
    else lp_embed(out, e->m, q->ids, NULL, 0, len);
}

/* The first row where query i differs from e->x: the first removed (deleted rows shift the
 * rest; those before are the same tokens at the same positions), or noised; e->T for none. */
static int first_changed(const queries *q, int i) {
    const lp_eval *e = q->e;
    if (q->keep) {
        const unsigned char *keep = q->keep + (size_t)i * e->T, *removed = memchr(keep, 0, (size_t)e->T);
        return removed ? (int)(removed - keep) : e->T;
    }
    int first = e->T;
    for (int j = 0; j < e->n; j++)
        if (q->noise[(size_t)i * e->n + j] != 0.0 && e->removable[j] < first) first = e->removable[j];
    return first;
}

static int by_key_desc(const void *a, const void *b, void *ctx) {
    const long *key = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    return key[y] != key[x] ? (key[y] > key[x] ? 1 : -1) : x - y;
}

/* An encoder-decoder's queries, one run of both stacks each (the batches have no
 * cross-attention): the kept ids when tokens are deleted, else the rows as embeddings. */
static int evaluate_seq2seq(queries *q) {
    const lp_eval *e = q->e;
    size_t d = (size_t)e->m->cfg.d_model;
    int *ids = malloc((size_t)e->T * sizeof *ids), rc = LP_OK;
    float *rows = deleting(q) ? NULL : malloc((size_t)e->T * d * sizeof *rows);
    if (!ids || (!deleting(q) && !rows)) rc = lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; i < q->nq && !rc; i++) {
        int at, ns, len = query_input(q, i, ids, NULL, rows, &at, &ns);
        lp_run *v;
        if ((rc = lp_run_new_seq2seq_embedded(&v, e->m, ids, rows, ns, ids + ns, rows ? rows + ns * d : NULL, len - ns)))
            break;
        lp_objective o = e->sp.objective;
        o.pos = at;
        double f = lp_objective_value(&o, lp_run_logits(v, at), e->m->cfg.vocab);
        q->f[i] = e->sp.prob ? exp(f) : f;
        lp_run_free(v);
    }
    free(ids);
    free(rows);
    return rc;
}

/* f of every query: one batch per length and reading position (one in all for mask
 * and baseline removal; with delete the objective moves to where its row lands). */
static int evaluate(queries *q) {
    const lp_eval *e = q->e;
    if (e->S) return evaluate_seq2seq(q);
    int *idx = malloc((size_t)q->nq * sizeof *idx), *first = malloc((size_t)q->nq * sizeof *first), rc = LP_OK;
    long *key = malloc((size_t)q->nq * sizeof *key);
    double *f = malloc((size_t)q->nq * sizeof *f);
    q->ids = malloc((size_t)e->T * sizeof *q->ids);
    q->types = malloc((size_t)e->T * sizeof *q->types);
    if (!idx || !first || !key || !f || !q->ids || !q->types) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < q->nq; i++) {
        int at, ns, len = query_input(q, i, NULL, NULL, NULL, &at, &ns);
        idx[i] = i;
        key[i] = (long)len * (e->T + 1) + at;
    }
    qsort_r(idx, (size_t)q->nq, sizeof *idx, by_key_desc, key);
    for (int i0 = 0; i0 < q->nq && !rc;) {
        int i1 = i0;
        while (i1 < q->nq && key[idx[i1]] == key[idx[i0]]) i1++;
        lp_objective o = e->sp.objective;
        int len = (int)(key[idx[i0]] / (e->T + 1));
        o.pos = (int)(key[idx[i0]] % (e->T + 1));
        q->idx = idx + i0;
        /* a causal model computes the rows before a query's first change as e->x's */
        for (int i = i0; i < i1; i++) first[i - i0] = first_changed(q, idx[i]);
        if (!(rc = lp_forward_batch_shared(e->m, len, i1 - i0, perturbed_input, q, e->x, first, &o, f)))
            for (int i = i0; i < i1; i++) q->f[idx[i]] = e->sp.prob ? exp(f[i - i0]) : f[i - i0];
        i0 = i1;
    }
done:
    free(idx);
    free(first);
    free(key);
    free(f);
    free(q->ids);
    free(q->types);
    q->ids = q->types = NULL;
    return rc;
}

static int queries_alloc(queries *q, const lp_eval *e, int nq) {
    *q = (queries){.e = e, .nq = nq, .keep = malloc((size_t)nq * e->T), .f = malloc((size_t)nq * sizeof(double))};
    if (!q->keep || !q->f) {
        free(q->keep);
        free(q->f);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    return LP_OK;
}

static void queries_free(queries *q) {
    free(q->keep);
    free(q->f);
}

/* keep row i: everything but the removable positions order[0..j) (remove) or but the
 * removable positions other than order[0..j) (only). */
static void set_keep(const lp_eval *e, unsigned char *keep, const int *order, int j, bool only) {
    memset(keep, 1, (size_t)e->T);
    if (only)
        for (int i = 0; i < e->n; i++) keep[e->removable[i]] = 0;
    for (int i = 0; i < j; i++) keep[order[i]] = only;
}

/* A decoder's frame: BOS, [CLS], [SEP], and an end-of-text token at position 0 (GPT-2's
 * <|endoftext|> used as BOS). */
static bool is_special(const lp_tokenizer *t, int id, int pos) {
    if (!t) return false;
    lp_special s = lp_tokenizer_role(t, id);
    return s == LP_SPECIAL_BOS || s == LP_SPECIAL_CLS || s == LP_SPECIAL_SEP || (pos == 0 && s == LP_SPECIAL_EOS);
}

/* An encoder's or an encoder-decoder's frame: every special token but <unk> (which stands for
 * a word), and an encoder-decoder's </s> when no tokenizer names it. */
static bool is_frame(const lp_model *m, const lp_tokenizer *t, int id) {
    lp_special s = t ? lp_tokenizer_role(t, id) : LP_SPECIAL_COUNT;
    return (s != LP_SPECIAL_COUNT && s != LP_SPECIAL_UNK) || (m->encoder && id == m->cfg.eos_id);
}

void lp_eval_free(lp_eval *e) {
    if (!e) return;
    free(e->removable);
    free(e->loo);
    free(e->ids);
    free(e->types);
    free(e->x);
    free(e->b);
    free(e);
}

/* The inputs: a decoder's embeddings 0..pos (resid_pre of layer 0), an encoder's sums before
 * their norm, an encoder-decoder's source and decoder token embeddings; b the same with the
 * token part replaced, x - e_t + e_token (zero for the zero baseline), the position part kept. */
static void inputs(lp_eval *e) {
    const lp_model *m = e->m, *enc = lp_model_encoder(m);
    const lp_run *src = lp_run_source(e->r);
    size_t d = (size_t)m->cfg.d_model;
    lp_view v;
    if (src) {
        lp_run_view(src, LP_ACT_RESID_PRE, 0, -1, &v);
        memcpy(e->x, v.data, (size_t)e->S * d * sizeof *e->x);
        memcpy(e->ids, lp_run_ids(src), (size_t)e->S * sizeof *e->ids);
    }
    lp_run_view(e->r, LP_ACT_RESID_PRE, 0, -1, &v);
    const float *x = e->enc ? lp_run_embed_sum(e->r) : v.data;
    memcpy(e->x + (size_t)e->S * d, x, (size_t)(e->T - e->S) * d * sizeof *e->x);
    memcpy(e->ids + e->S, lp_run_ids(e->r), (size_t)(e->T - e->S) * sizeof *e->ids);
    memset(e->types, 0, (size_t)e->T * sizeof *e->types);
    if (e->enc) memcpy(e->types, lp_run_types(e->r), (size_t)e->T * sizeof *e->types);
    const float *rep = e->sp.remove != LP_REMOVE_DELETE && e->sp.token >= 0 ? m->tok_emb + (size_t)e->sp.token * d : NULL;
    float es = lp_model_emb_scale(m); /* Gemma 2's input: the embeddings scaled */
    for (int t = 0; t < e->T; t++) {
        const float *tok = (t < e->S ? enc : m)->tok_emb + (size_t)e->ids[t] * d;
        for (size_t k = 0; k < d; k++) {
            size_t j = (size_t)t * d + k;
            e->b[j] = e->x[j] - tok[k] * es + (rep ? rep[k] * es : 0.0f);
        }
    }
}

int lp_eval_new(lp_eval **out, const lp_run *r, const lp_eval_spec *spec) {
    *out = NULL;
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    const lp_run *src = lp_run_source(r);
    int rc = lp_objective_check(&spec->objective, m, lp_run_len(r));
    if (rc) return rc;
    if ((unsigned)spec->remove >= LP_REMOVE_COUNT) return lp_error(LP_EINVAL, "unknown removal %d", (int)spec->remove);
    if (spec->remove != LP_REMOVE_DELETE && (spec->token < (spec->remove == LP_REMOVE_BASELINE ? -1 : 0) || spec->token >= c->vocab))
        return lp_error(LP_EINVAL, "%s token id %d is outside the vocabulary (0..%d)", lp_remove_name(spec->remove),
                        spec->token, c->vocab - 1);
    if (spec->bins < 0 || spec->bins > 100) return lp_error(LP_EINVAL, "bins %d is out of range (1..100)", spec->bins);
    if (spec->logodds_pct < 0 || spec->logodds_pct > 100)
        return lp_error(LP_EINVAL, "log-odds percentage %d is out of range (1..100)", spec->logodds_pct);
    lp_eval *e = calloc(1, sizeof *e);
    if (!e) return lp_error(LP_ENOMEM, "out of memory");
    e->r = r;
    e->m = m;
    e->sp = *spec;
    if (!e->sp.bins) e->sp.bins = 10;
    if (!e->sp.logodds_pct) e->sp.logodds_pct = 20;
    int pos = spec->objective.pos;
    e->enc = !c->causal && !src;
    e->S = src ? lp_run_len(src) : 0;
    e->T = e->enc ? lp_run_len(r) : e->S + pos + 1;
    e->at = e->S + pos;
    size_t d = (size_t)c->d_model;
    e->removable = malloc((size_t)e->T * sizeof *e->removable);
    e->loo = malloc((size_t)e->T * sizeof *e->loo);
    e->ids = malloc((size_t)e->T * sizeof *e->ids);
    e->types = malloc((size_t)e->T * sizeof *e->types);
    e->x = malloc((size_t)e->T * d * sizeof *e->x);
    e->b = malloc((size_t)e->T * d * sizeof *e->b);
    if (!e->removable || !e->loo || !e->ids || !e->types || !e->x || !e->b) {
        lp_eval_free(e);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    inputs(e);
    /* Never removed: the frame, f's own position, and an encoder-decoder's decoder start. */
    const lp_tokenizer *tok = lp_model_tokenizer(m);
    int kept_source = 0;
    for (int t = 0; t < e->T; t++) {
        bool frame = c->causal && !src ? is_special(tok, e->ids[t], t) : is_frame(m, tok, e->ids[t]);
        if (t == e->at || frame || (src && t == e->S)) kept_source += t < e->S;
        else e->removable[e->n++] = t;
    }
    if (!e->n) {
        lp_eval_free(e);
        if (src)
            return lp_error(LP_EINVAL, "eval: the source and the decoder's positions before %d hold no token to remove "
                            "(</s> and the decoder's start stay); run a longer source or judge a later --pos", pos);
        if (!c->causal)
            return lp_error(LP_EINVAL, "eval: the run holds no token to remove (special tokens%s stay); run a longer text",
                            c->head == LP_HEAD_MLM ? " and the mask position read" : "");
        return lp_error(LP_EINVAL, "eval: positions 0..%d hold no token to remove (special tokens and the predicting "
                                   "position %d stay); run a longer text", pos, pos);
    }
    if (src && !kept_source && spec->remove == LP_REMOVE_DELETE) {
        lp_eval_free(e);
        return lp_error(LP_EINVAL, "eval: --remove delete: every source token is removable (no </s>), so removing them "
                        "all leaves no source; use --remove mask or --remove baseline");
    }
    /* f(x), f(empty), then x without each removable position. */
    queries q;
    if ((rc = queries_alloc(&q, e, e->n + 2))) {
        lp_eval_free(e);
        return rc;
    }
    set_keep(e, q.keep, NULL, 0, false);
    set_keep(e, q.keep + e->T, NULL, 0, true);
    for (int i = 0; i < e->n; i++) {
        set_keep(e, q.keep + (size_t)(i + 2) * e->T, NULL, 0, false);
        q.keep[(size_t)(i + 2) * e->T + e->removable[i]] = 0;
    }
    if (!(rc = evaluate(&q))) {
        e->fx = q.f[0];
        e->fempty = q.f[1];
        for (int i = 0; i < e->n; i++) e->loo[i] = e->fx - q.f[i + 2];
    }
    queries_free(&q);
    if (rc) lp_eval_free(e);
    else *out = e;
    return rc;
}

int lp_eval_n(const lp_eval *e) { return e->n; }
const int *lp_eval_removable(const lp_eval *e) { return e->removable; }
const double *lp_eval_loo(const lp_eval *e) { return e->loo; }
double lp_eval_fx(const lp_eval *e) { return e->fx; }
double lp_eval_fempty(const lp_eval *e) { return e->fempty; }
int lp_eval_bins(const lp_eval *e) { return e->sp.bins; }
int lp_eval_len(const lp_eval *e) { return e->T; }
int lp_eval_n_source(const lp_eval *e) { return e->S; }

int lp_eval_k(const lp_eval *e, double pct) {
    int k = (int)ceil(pct * e->n / 100.0 - 1e-9);
    return k < 0 ? 0 : k > e->n ? e->n : k;
}

/* splitmix64, then Box-Muller: a reproducible N(0, 1) stream from a seed. */
static double uniform01(unsigned long long *st) {
    unsigned long long z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return ((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static double gaussian(unsigned long long *st) {
    double u = uniform01(st), v = uniform01(st);
    return sqrt(-2.0 * log1p(-u)) * cos(2.0 * M_PI * v);
}

int lp_eval_infidelity(const lp_eval *e, int m, const float *const *scores, int samples, double sigma,
                       unsigned long long seed, double *infid, double *raw, double *noise, double *drop) {
    if (samples < 1 || samples > 10000) return lp_error(LP_EINVAL, "samples %d is out of range (1..10000)", samples);
    if (!(sigma > 0.0) || sigma > 10.0) return lp_error(LP_EINVAL, "sigma %g is out of range (0..10]", sigma);
    int n = e->n, rc;
    double *I = malloc((size_t)samples * n * sizeof *I), *f = malloc((size_t)samples * sizeof *f);
    if (!I || !f) {
        free(I);
        free(f);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    unsigned long long st = seed;
    for (size_t j = 0; j < (size_t)samples * n; j++) I[j] = sigma * gaussian(&st);
    queries q = {.e = e, .nq = samples, .noise = I, .f = f};
    if (!(rc = evaluate(&q))) {
        for (int s = 0; s < samples; s++) f[s] = e->fx - f[s];
        for (int i = 0; i < m; i++) {
            double aa = 0.0, ad = 0.0, sq = 0.0, sq1 = 0.0;
            for (int s = 0; s < samples; s++) {
                double a = 0.0;
                for (int t = 0; t < n; t++) a += I[(size_t)s * n + t] * scores[i][e->removable[t]];
                aa += a * a;
                ad += a * f[s];
            }
            double beta = aa > 0.0 ? ad / aa : 0.0;
            for (int s = 0; s < samples; s++) {
                double a = 0.0;
                for (int t = 0; t < n; t++) a += I[(size_t)s * n + t] * scores[i][e->removable[t]];
                sq += (beta * a - f[s]) * (beta * a - f[s]);
                sq1 += (a - f[s]) * (a - f[s]);
            }
            infid[i] = sq / samples;
            if (raw) raw[i] = sq1 / samples;
        }
        if (noise) memcpy(noise, I, (size_t)samples * n * sizeof *I);
        if (drop) memcpy(drop, f, (size_t)samples * sizeof *f);
    }
    free(I);
    free(f);
    return rc;
}

int lp_eval_sensitivity(const lp_eval *e, int m, const lp_attr_spec *specs, const float *const *scores, int samples,
                        double radius, unsigned long long seed, double *sens, float *noise) {
    if (samples < 1 || samples > 1000) return lp_error(LP_EINVAL, "samples %d is out of range (1..1000)", samples);
    if (!(radius > 0.0) || radius > 10.0) return lp_error(LP_EINVAL, "radius %g is out of range (0..10]", radius);
    size_t d = (size_t)e->m->cfg.d_model, nx = (size_t)e->T * d;
    float *x = malloc(nx * sizeof *x), *phi = malloc((size_t)e->T * sizeof *phi);
    if (!x || !phi) {
        free(x);
        free(phi);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    int rc = LP_OK;
    for (int i = 0; i < m; i++) sens[i] = 0.0;
    unsigned long long st = seed;
    for (int s = 0; s < samples && !rc; s++) {
        for (size_t j = 0; j < nx; j++) x[j] = e->x[j] + (float)(radius * (2.0 * uniform01(&st) - 1.0));
        if (noise)
            for (size_t j = 0; j < nx; j++) noise[(size_t)s * nx + j] = x[j] - e->x[j];
        lp_run *r;
        if ((rc = e->S ? lp_run_new_seq2seq_embedded(&r, e->m, e->ids, x, e->S, e->ids + e->S, x + (size_t)e->S * d,
                                                     e->T - e->S)
                       : lp_run_new_embedded(&r, e->m, e->ids, e->enc ? e->types : NULL, x, e->T)))
            break;
        for (int i = 0; i < m && !rc; i++) {
            double delta, num = 0.0, den = 0.0;
            if ((rc = lp_attr(phi, &delta, r, &specs[i]))) break;
            for (int t = 0; t < e->T; t++) {
                num += ((double)phi[t] - scores[i][t]) * ((double)phi[t] - scores[i][t]);
                den += (double)scores[i][t] * scores[i][t];
            }
            double v = den > 0.0 ? sqrt(num / den) : sqrt(num);
            if (v > sens[i]) sens[i] = v;
        }
        lp_run_free(r);
    }
    free(x);
    free(phi);
    return rc;
}

double lp_kendall_tau(const double *a, const double *b, int n) {
    double conc = 0, disc = 0, ta = 0, tb = 0, pairs = 0.5 * n * (n - 1.0);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double s = (a[i] - a[j]) * (b[i] - b[j]);
            ta += a[i] == a[j];
            tb += b[i] == b[j];
            conc += s > 0;
            disc += s < 0;
        }
    double den = sqrt((pairs - ta) * (pairs - tb));
    return den > 0 ? (conc - disc) / den : NAN;
}

void lp_eval_result_free(lp_eval_result *r) {
    if (!r) return;
    free(r->order);
    free(r->comp);
    free(r->suff);
    free(r->deletion);
    free(r->insertion);
    memset(r, 0, sizeof *r);
}

static int by_score_desc(const void *a, const void *b, void *ctx) {
    const float *s = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    float sx = s[x], sy = s[y];
    return sx > sy ? -1 : sx < sy ? 1 : x - y;
}

static double logit_of(double p) { return log(p) - log1p(-p); }

int lp_eval_judge(lp_eval *e, int m, const float *const *scores, lp_eval_result *res) {
    int n = e->n, B = e->sp.bins, rc;
    for (int i = 0; i < m; i++) {
        res[i] = (lp_eval_result){.n = n, .bins = B, .infidelity = NAN, .infidelity_raw = NAN, .sensitivity = NAN};
        res[i].order = malloc((size_t)n * sizeof(int));
        res[i].comp = malloc((size_t)B * sizeof(double));
        res[i].suff = malloc((size_t)B * sizeof(double));
        res[i].deletion = malloc((size_t)(n + 1) * sizeof(double));
        res[i].insertion = malloc((size_t)(n + 1) * sizeof(double));
        if (!res[i].order || !res[i].comp || !res[i].suff || !res[i].deletion || !res[i].insertion) {
            for (int k = 0; k <= i; k++) lp_eval_result_free(&res[k]);
            return lp_error(LP_ENOMEM, "out of memory");
        }
        memcpy(res[i].order, e->removable, (size_t)n * sizeof(int));
        qsort_r(res[i].order, (size_t)n, sizeof(int), by_score_desc, (void *)scores[i]);
    }
    /* Per attribution, the curves' inner points: without top(j) and with only top(j), j = 1..n-1.
     * Their ends are f(x) and f(empty); the bins and the log-odds read points of the curves. */
    int per = 2 * (n - 1);
    queries q;
    if ((rc = queries_alloc(&q, e, m * per > 0 ? m * per : 1))) goto fail;
    q.nq = m * per;
    for (int i = 0; i < m; i++)
        for (int j = 1; j < n; j++) {
            set_keep(e, q.keep + (size_t)(i * per + 2 * (j - 1)) * e->T, res[i].order, j, false);
            set_keep(e, q.keep + (size_t)(i * per + 2 * (j - 1) + 1) * e->T, res[i].order, j, true);
        }
    if ((rc = evaluate(&q))) {
        queries_free(&q);
        goto fail;
    }
    double *phi = malloc((size_t)n * sizeof *phi);
    for (int i = 0; i < m && phi; i++) {
        lp_eval_result *R = &res[i];
        R->deletion[0] = R->insertion[n] = e->fx;
        R->deletion[n] = R->insertion[0] = e->fempty;
        for (int j = 1; j < n; j++) {
            R->deletion[j] = q.f[i * per + 2 * (j - 1)];
            R->insertion[j] = q.f[i * per + 2 * (j - 1) + 1];
        }
        R->comp_aopc = R->suff_aopc = 0.0;
        for (int b = 0; b < B; b++) {
            int k = lp_eval_k(e, 100.0 * (b + 1) / B);
            R->comp[b] = e->fx - R->deletion[k];
            R->suff[b] = e->fx - R->insertion[k];
            R->comp_aopc += R->comp[b] / B;
            R->suff_aopc += R->suff[b] / B;
        }
        double da = 0.0, ia = 0.0;
        for (int j = 0; j < n; j++) {
            da += 0.5 * (R->deletion[j] + R->deletion[j + 1]);
            ia += 0.5 * (R->insertion[j] + R->insertion[j + 1]);
        }
        R->deletion_auc = da / n;
        R->insertion_auc = ia / n;
        double fk = R->deletion[lp_eval_k(e, e->sp.logodds_pct)];
        R->logodds = e->sp.prob ? logit_of(e->fx) - logit_of(fk) : e->fx - fk;
        for (int t = 0; t < n; t++) phi[t] = scores[i][e->removable[t]];
        R->tau = lp_kendall_tau(phi, e->loo, n);
    }
    queries_free(&q);
    if (!phi) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto fail;
    }
    free(phi);
    return LP_OK;
fail:
    for (int i = 0; i < m; i++) lp_eval_result_free(&res[i]);
    return rc;
}
