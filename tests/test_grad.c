/* The backward pass against central finite differences of an independent double-precision
 * forward (written here, reading the same float weights), for both architectures and every
 * captured activation; the batched path against the single-run one; and the gradients and
 * attributions against a float64 PyTorch autograd reference (tests/fixtures/grad_*.json). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "arch/model_impl.h"
#include "helpers.h"
#include "kernels/forward.h"
#include "kernels/grad_impl.h"
#include "ref_double.h"
#include "loupe/attr.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/grad.h"
#include "loupe/run.h"

#define FD_TOL 1e-3  /* relative error of a gradient against finite differences */
#define FD_EPS 1e-4  /* central-difference step along a unit direction, in double */

/* ---- the fixture models (tests/fixtures/models.txt) ---- */

static lp_model *load_fixture(const fixture_model *fm, char **dir_out) {
    char *dir = make_temp_dir();
    char mdir[640];
    snprintf(mdir, sizeof mdir, "%s/m", dir);
    assert_int_equal(mkmodel(mdir, fm->args), 0);
    lp_model *m;
    if (lp_model_load(&m, mdir, NULL)) fail_msg("%s: %s", fm->name, lp_errmsg());
    *dir_out = dir;
    return m;
}

/* ---- an independent forward pass in double ---- */

/* An additive change eps * dir to one activation (shapes as lp_run_view's, whole layer). */
typedef struct {
    lp_act_kind kind;
    int layer;
    const double *dir;
    double eps;
} edit;

static void apply(const edit *e, lp_act_kind kind, int layer, double *x, size_t n) {
    if (!e || e->kind != kind || (e->layer != layer && kind != LP_ACT_LN_FINAL)) return;
    for (size_t i = 0; i < n; i++) x[i] += e->eps * e->dir[i];
}

static void drope(double *x, int T, int heads, const lp_config *c) {
    int dh = c->d_head, rot = lp_rope_dims(c), half = rot / 2; /* GPT-NeoX turns the first rot dims only */
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++)
            for (int f = 0; f < half; f++) {
                double ang = t * pow(c->rope_theta, -2.0 * f / rot);
                int a = c->pos == LP_POS_ROPE_INTERLEAVED ? 2 * f : f, b = c->pos == LP_POS_ROPE_INTERLEAVED ? 2 * f + 1 : f + half;
                double *v = x + ((size_t)t * heads + h) * dh, va = v[a], vb = v[b];
                v[a] = va * cos(ang) - vb * sin(ang);
                v[b] = va * sin(ang) + vb * cos(ang);
            }
}

/* The objective at ids[0..T), with an optional edit, all in double. */
static double ref_objective(const lp_model *m, const int *ids, int T, const lp_objective *o, const edit *e) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, H = c->n_head, Hk = c->n_kv_head, dh = c->d_head, dm = c->d_mlp, V = c->vocab;
    int qd = H * dh, kvd = Hk * dh;
    size_t Td = (size_t)T * d;
    double *x = malloc(Td * sizeof *x), *h = malloc(Td * sizeof *h), *q = malloc((size_t)T * qd * sizeof *q);
    double *k = malloc((size_t)T * kvd * sizeof *k), *v = malloc((size_t)T * kvd * sizeof *v);
    double *P = calloc((size_t)H * T * T, sizeof *P), *z = malloc((size_t)T * qd * sizeof *z);
    double *ao = malloc(Td * sizeof *ao), *pre = malloc((size_t)T * dm * sizeof *pre);
    double *up = malloc((size_t)T * dm * sizeof *up), *post = malloc((size_t)T * dm * sizeof *post);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < d; j++)
            x[(size_t)t * d + j] = (double)m->tok_emb[(size_t)ids[t] * d + j] * lp_model_emb_scale(m) +
                                   (m->pos_emb ? m->pos_emb[(size_t)t * d + j] : 0.0);
    for (int l = 0; l < c->n_layer; l++) {
        const lp_layer *w = &m->layers[l];
        apply(e, LP_ACT_RESID_PRE, l, x, Td);
        dnorm(h, x, w->ln1_w, w->ln1_b, T, d, c->norm, c->norm_eps);
        apply(e, LP_ACT_LN1, l, h, Td);
        dlinear(q, h, &w->q, T);
        dlinear(k, h, &w->k, T);
        dlinear(v, h, &w->v, T);
        if (c->pos != LP_POS_LEARNED) {
            drope(q, T, H, c);
            drope(k, T, Hk, c);
        }
        apply(e, LP_ACT_Q, l, q, (size_t)T * qd);
        apply(e, LP_ACT_K, l, k, (size_t)T * kvd);
        apply(e, LP_ACT_V, l, v, (size_t)T * kvd);
        for (int hh = 0; hh < H; hh++) {
            int g = hh / (H / Hk);
            /* Gemma 2: scores scaled by attn_scale, soft-capped, keys in a sliding window */
            double scale = c->attn_scale > 0 ? c->attn_scale : 1.0 / sqrt((double)dh), cap = c->attn_softcap;
            int window = lp_model_layer_window(m, l);
            for (int i = 0; i < T; i++) {
                double *p = P + ((size_t)hh * T + i) * T, mx = -INFINITY, sum = 0;
                int j0 = window && i - window + 1 > 0 ? i - window + 1 : 0;
                for (int j = j0; j <= i; j++) {
                    double s = 0;
                    for (int e2 = 0; e2 < dh; e2++) s += q[(size_t)i * qd + hh * dh + e2] * k[(size_t)j * kvd + g * dh + e2];
                    p[j] = s * scale;
                    if (cap > 0) p[j] = cap * tanh(p[j] / cap);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = j0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = j0; j <= i; j++) p[j] /= sum;
                for (int j = 0; j < j0; j++) p[j] = 0;
                for (int j = i + 1; j < T; j++) p[j] = 0;
            }
        }
        apply(e, LP_ACT_PATTERN, l, P, (size_t)H * T * T);
        for (int hh = 0; hh < H; hh++) {
            int g = hh / (H / Hk);
            for (int i = 0; i < T; i++)
                for (int e2 = 0; e2 < dh; e2++) {
                    double s = 0;
                    for (int j = 0; j <= i; j++) s += P[((size_t)hh * T + i) * T + j] * v[(size_t)j * kvd + g * dh + e2];
                    z[(size_t)i * qd + hh * dh + e2] = s;
                }
        }
        apply(e, LP_ACT_Z, l, z, (size_t)T * qd);
        dlinear(ao, z, &w->o, T);
        if (c->sandwich_norm) dnorm(ao, ao, w->post1_w, NULL, T, d, c->norm, c->norm_eps);
        apply(e, LP_ACT_ATTN_OUT, l, ao, Td);
        /* a parallel block (GPT-NeoX) normalises the layer's input for its MLP */
        if (c->parallel_block) dnorm(h, x, w->ln2_w, w->ln2_b, T, d, c->norm, c->norm_eps);
        for (size_t i = 0; i < Td; i++) x[i] += ao[i];
        apply(e, LP_ACT_RESID_MID, l, x, Td);
        if (!c->parallel_block) dnorm(h, x, w->ln2_w, w->ln2_b, T, d, c->norm, c->norm_eps);
        apply(e, LP_ACT_LN2, l, h, Td);
        size_t nm = (size_t)T * dm;
        if (lp_mlp_gated(c)) {
            dlinear(pre, h, &w->gate, T);
            dlinear(up, h, &w->up, T);
            apply(e, LP_ACT_MLP_PRE, l, pre, nm);
            apply(e, LP_ACT_MLP_UP, l, up, nm);
            for (size_t i = 0; i < nm; i++)
                post[i] = (c->mlp == LP_MLP_GEGLU ? 0.5 * pre[i] * (1 + tanh(sqrt(2 / M_PI) * (pre[i] + 0.044715 * pre[i] *
                                                                                                 pre[i] * pre[i])))
                                                  : pre[i] / (1 + exp(-pre[i]))) * up[i];
        } else {
            dlinear(pre, h, &w->up, T);
            apply(e, LP_ACT_MLP_PRE, l, pre, nm);
            for (size_t i = 0; i < nm; i++)
                post[i] = c->mlp == LP_MLP_GELU_ERF ? 0.5 * pre[i] * (1 + erf(pre[i] / sqrt(2.0)))
                          : 0.5 * pre[i] * (1 + tanh(sqrt(2 / M_PI) * (pre[i] + 0.044715 * pre[i] * pre[i] * pre[i])));
        }
        apply(e, LP_ACT_MLP_POST, l, post, nm);
        dlinear(ao, post, &w->down, T);
        if (c->sandwich_norm) dnorm(ao, ao, w->post2_w, NULL, T, d, c->norm, c->norm_eps);
        apply(e, LP_ACT_MLP_OUT, l, ao, Td);
        for (size_t i = 0; i < Td; i++) x[i] += ao[i];
        apply(e, LP_ACT_RESID_POST, l, x, Td);
    }
    dnorm(h, x, m->lnf_w, m->lnf_b, T, d, c->norm, c->norm_eps);
    apply(e, LP_ACT_LN_FINAL, 0, h, Td);
    double *logits = malloc((size_t)V * sizeof *logits);
    dlinear(logits, h + (size_t)o->pos * d, &m->unembed, 1);
    for (int j = 0; c->final_softcap > 0 && j < V; j++) logits[j] = c->final_softcap * tanh(logits[j] / c->final_softcap);
    double f = logits[o->target];
    if (o->kind == LP_OBJ_LOGIT_DIFF) f -= logits[o->contrast];
    if (o->kind == LP_OBJ_LOGPROB) {
        double mx = logits[0], s = 0;
        for (int j = 1; j < V; j++) mx = fmax(mx, logits[j]);
        for (int j = 0; j < V; j++) s += exp(logits[j] - mx);
        f -= mx + log(s);
    }
    free(x), free(h), free(q), free(k), free(v), free(P), free(z), free(ao), free(pre), free(up), free(post);
    free(logits);
    return f;
}

static double fd(const lp_model *m, const int *ids, int T, const lp_objective *o, lp_act_kind kind, int layer,
                 const double *dir) {
    edit plus = {kind, layer, dir, FD_EPS}, minus = {kind, layer, dir, -FD_EPS};
    return (ref_objective(m, ids, T, o, &plus) - ref_objective(m, ids, T, o, &minus)) / (2 * FD_EPS);
}

/* ---- helpers ---- */

static uint64_t rng_state = 88172645463325252ull;
static double gauss(void) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
        u[i] = ((rng_state >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2 * log(u[0])) * cos(2 * M_PI * u[1]);
}

/* Copies a view into a contiguous double buffer (row-major); returns its size. */
static size_t gather(const lp_view *v, double **out) {
    size_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= (size_t)v->shape[i];
    double *o = malloc(n * sizeof *o);
    int idx[4] = {0};
    for (size_t e = 0; e < n; e++) {
        long off = 0;
        for (int i = 0; i < v->ndim; i++) off += idx[i] * v->stride[i];
        o[e] = v->data[off];
        for (int i = v->ndim - 1; i >= 0; i--) {
            if (++idx[i] < v->shape[i]) break;
            idx[i] = 0;
        }
    }
    *out = o;
    return n;
}

static double norm2(const double *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

/* Worst error of the gradient g (n) against finite differences along the gradient's own
 * direction and `dirs` random unit directions, as |g.u - D_u f| / |g|. For the pattern only
 * entries a query may see (j <= i) are moved. */
static double check_site(const lp_model *m, const int *ids, int T, const lp_objective *o, lp_act_kind kind, int layer,
                         const double *g, size_t n, int dirs) {
    double gn = norm2(g, n), worst = 0;
    if (gn == 0) return 0;
    double *u = malloc(n * sizeof *u);
    for (int r = 0; r <= dirs; r++) {
        for (size_t i = 0; i < n; i++) u[i] = r == 0 ? g[i] : gauss();
        if (kind == LP_ACT_PATTERN)
            for (size_t i = 0; i < n; i++)
                if ((int)(i % T) > (int)((i / T) % T)) u[i] = 0;
        double un = norm2(u, n), dot = 0;
        for (size_t i = 0; i < n; i++) dot += g[i] * (u[i] /= un);
        double err = fabs(dot - fd(m, ids, T, o, kind, layer, u)) / gn;
        if (err > worst) worst = err;
    }
    free(u);
    return worst;
}

static lp_objective objective_for(const lp_model *m, int kind, int pos, int salt) {
    int V = m->cfg.vocab;
    return (lp_objective){(lp_objective_kind)kind, pos, (17 + 31 * salt) % V, (5 + 13 * salt) % V};
}

/* ---- tests ---- */

/* The embedding gradient of every objective, on every fixture model: coordinate by
 * coordinate for one objective (a different one per model), along random directions for
 * the others, at the last position and at one in the middle (whose pass stops at pos + 1). */
static void embedding_gradients_match_finite_differences(void **state) {
    (void)state;
    fixture_model fms[16];
    int nm = read_models(fms, 16);
    assert_true(nm >= 5);
    for (int i = 0; i < nm; i++) {
        char *dir;
        lp_model *m = load_fixture(&fms[i], &dir);
        int T = fms[i].n, d = m->cfg.d_model;
        size_t n = (size_t)T * d;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fms[i].ids, T), LP_OK);
        double worst[3] = {0};
        for (int kind = 0; kind < 3; kind++)
            for (int pos = T - 1; pos >= T / 2; pos -= T - 1 - T / 2) {
                lp_objective o = objective_for(m, kind, pos, i + kind);
                lp_grad *g;
                assert_int_equal(lp_grad_new(&g, r, &o), LP_OK);
                double f = ref_objective(m, fms[i].ids, T, &o, NULL);
                assert_true(fabs(lp_grad_objective(g) - f) < 1e-4 * fmax(1, fabs(f)));
                const float *ge = lp_grad_embed(g);
                double *gd = malloc(n * sizeof *gd), err;
                for (size_t j = 0; j < n; j++) {
                    gd[j] = ge[j];
                    if ((int)(j / d) > pos) assert_true(ge[j] == 0.0f);
                }
                if (kind == i % 3 && pos == T - 1) {
                    /* ||g - g_fd|| / ||g_fd|| over every coordinate */
                    double *e = calloc(n, sizeof *e), diff = 0, ref = 0;
                    for (size_t j = 0; j < n; j++) {
                        e[j] = 1;
                        double want = fd(m, fms[i].ids, T, &o, LP_ACT_RESID_PRE, 0, e);
                        e[j] = 0;
                        diff += (gd[j] - want) * (gd[j] - want);
                        ref += want * want;
                    }
                    err = sqrt(diff / ref);
                    free(e);
                } else {
                    err = check_site(m, fms[i].ids, T, &o, LP_ACT_RESID_PRE, 0, gd, n, 6);
                }
                worst[kind] = fmax(worst[kind], err);
                free(gd);
                lp_grad_free(g);
            }
        print_message("  %-22s embeddings: relative error logit %.1e  logprob %.1e  logit_diff %.1e\n", fms[i].name,
                      worst[0], worst[1], worst[2]);
        for (int kind = 0; kind < 3; kind++) assert_true(worst[kind] < FD_TOL);
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
}

/* Gradients with respect to every captured activation, along random directions. */
static void activation_gradients_match_finite_differences(void **state) {
    (void)state;
    static const lp_act_kind kinds[] = {LP_ACT_RESID_PRE, LP_ACT_LN1,      LP_ACT_Q,        LP_ACT_K,
                                        LP_ACT_V,         LP_ACT_PATTERN,  LP_ACT_Z,        LP_ACT_ATTN_OUT,
                                        LP_ACT_RESID_MID, LP_ACT_LN2,      LP_ACT_MLP_PRE,  LP_ACT_MLP_UP,
                                        LP_ACT_MLP_POST,  LP_ACT_MLP_OUT,  LP_ACT_RESID_POST, LP_ACT_LN_FINAL};
    fixture_model fms[16];
    int nm = read_models(fms, 16);
    for (int i = 0; i < nm; i++) {
        char *dir;
        lp_model *m = load_fixture(&fms[i], &dir);
        int T = fms[i].n;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fms[i].ids, T), LP_OK);
        lp_objective o = objective_for(m, i % 3, T - 2, i);
        lp_grad *g;
        assert_int_equal(lp_grad_new(&g, r, &o), LP_OK);
        double worst = 0;
        const char *worst_at = "";
        int worst_layer = 0;
        for (int l = 0; l < m->cfg.n_layer; l++)
            for (size_t s = 0; s < sizeof kinds / sizeof *kinds; s++) {
                if (kinds[s] == LP_ACT_MLP_UP && !lp_mlp_gated(&m->cfg)) continue;
                if (kinds[s] == LP_ACT_LN_FINAL && l > 0) continue;
                lp_view v;
                assert_int_equal(lp_grad_view(g, kinds[s], l, -1, &v), LP_OK);
                double *gv;
                size_t n = gather(&v, &gv);
                double err = check_site(m, fms[i].ids, T, &o, kinds[s], l, gv, n, 3);
                if (err > worst) worst = err, worst_at = lp_act_name(kinds[s]), worst_layer = l;
                free(gv);
            }
        print_message("  %-22s %s: worst relative error %.1e (%s, layer %d)\n", fms[i].name,
                      lp_objective_name(o.kind), worst, worst_at, worst_layer);
        assert_true(worst < FD_TOL);
        lp_view v;
        assert_int_equal(lp_grad_view(g, LP_ACT_LN1_SCALE, 0, -1, &v), LP_EINVAL);
        lp_grad_free(g);
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
}

/* llama2.c checkpoints rotate interleaved pairs: stories260K (GQA, 5 layers) checks that layout. */
static void interleaved_rope_gradients_match_finite_differences(void **state) {
    (void)state;
    lp_load_options lo = {STORIES_TOK};
    lp_model *m;
    if (lp_model_load(&m, STORIES, &lo)) fail_msg("%s", lp_errmsg());
    assert_int_equal(m->cfg.pos, LP_POS_ROPE_INTERLEAVED);
    int ids[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376}, T = 10;
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, ids, T), LP_OK);
    lp_objective o = {LP_OBJ_LOGPROB, T - 1, 298, -1};
    lp_grad *g;
    assert_int_equal(lp_grad_new(&g, r, &o), LP_OK);
    double worst = 0;
    lp_act_kind kinds[] = {LP_ACT_RESID_PRE, LP_ACT_Q, LP_ACT_K, LP_ACT_PATTERN, LP_ACT_MLP_UP};
    for (int s = 0; s < 5; s++) {
        lp_view v;
        assert_int_equal(lp_grad_view(g, kinds[s], kinds[s] == LP_ACT_RESID_PRE ? 0 : 2, -1, &v), LP_OK);
        double *gv;
        size_t n = gather(&v, &gv);
        worst = fmax(worst, check_site(m, ids, T, &o, kinds[s], kinds[s] == LP_ACT_RESID_PRE ? 0 : 2, gv, n, 3));
        free(gv);
    }
    print_message("  stories260K (interleaved RoPE) logprob: worst relative error %.1e\n", worst);
    assert_true(worst < FD_TOL);
    lp_grad_free(g);
    lp_run_free(r);
    lp_model_free(m);
}

/* A run of ids on m, and its embeddings (resid_pre of layer 0): the batches' inputs. */
static const float *run_embeddings(lp_run **r, lp_model *m, const int *ids, int T) {
    assert_int_equal(lp_run_new(r, m, ids, T), LP_OK);
    lp_view x0;
    lp_run_view(*r, LP_ACT_RESID_PRE, 0, -1, &x0);
    return x0.data;
}

/* Fixture `name` with a context of 150 tokens, for runs past ATTN_LOOP_MAX_T. */
static lp_model *long_fixture(const fixture_model *fms, int nm, const char *name, fixture_model *fm, char **dir) {
    int at = 0;
    while (at < nm && strcmp(fms[at].name, name) != 0) at++;
    assert_true(at < nm);
    *fm = fms[at];
    char *ctx = strstr(fm->args, "--ctx 64");
    assert_non_null(ctx);
    memmove(ctx + 9, ctx + 8, strlen(ctx + 8) + 1);
    memcpy(ctx, "--ctx 150", 9);
    return load_fixture(fm, dir);
}

typedef struct {
    const float *x;
    int T, d;
    double scale[4];
} scaled;

static void scaled_input(float *out, int i, void *ctx) {
    const scaled *s = ctx;
    for (size_t j = 0; j < (size_t)s->T * s->d; j++) out[j] = (float)(s->x[j] * s->scale[i]);
}

/* The batched forward and backward agree with the run and with the run's backward, and
 * so does the backward that keeps the embeddings' gradient only. */
static void batches_match_the_run(void **state) {
    (void)state;
    fixture_model fms[16];
    int nm = read_models(fms, 16);
    double worst_f = 0;
    for (int i = 0; i < nm; i++) {
        char *dir;
        lp_model *m = load_fixture(&fms[i], &dir);
        int T = fms[i].n, d = m->cfg.d_model;
        lp_run *r;
        const float *x0 = run_embeddings(&r, m, fms[i].ids, T);
        for (int kind = 0; kind < 3; kind++) {
            lp_objective o = objective_for(m, kind, T - 1 - kind, i);
            lp_grad *g;
            assert_int_equal(lp_grad_new(&g, r, &o), LP_OK);
            /* Inputs x, 0.5 x, x with weights 2, 0, -1: the sum is the run's gradient. */
            scaled s = {x0, T, d, {1.0, 0.5, 1.0, 0}};
            double w[3] = {2.0, 0.0, -1.0}, f[3];
            int Tp = o.pos + 1;
            float *gs = malloc((size_t)Tp * d * sizeof *gs);
            assert_int_equal(lp_grad_batch(m, Tp, 3, scaled_input, &s, &o, w, f, gs), LP_OK);
            double want = lp_objective_value(&o, lp_run_logits(r, o.pos), m->cfg.vocab), worst = 0, big = 0;
            /* Items 0 and 2 are the same input in different rows of one batch; the sgemm
             * kernel may round rows differently by where they fall in its tiles (AVX2
             * kernels do: 3.1e-7 apart, AVX-512: 0), so they agree to float32 rounding of
             * the objective, not bit for bit. Worst measured (Haswell, SkylakeX, 1 and 2
             * threads): |f0 - f| 1.6e-6, |f0 - f2| 2.5e-6; since batches run attention in their
             * own loops (grad.c), the largest of the two is 4.3e-6 (Haswell), 1.9e-6 (Cooperlake). */
            worst_f = fmax(worst_f, fmax(fabs(f[0] - want), fabs(f[0] - f[2])));
            assert_true(fabs(f[0] - want) < 1e-4 * fmax(1, fabs(want)));
            assert_true(fabs(f[0] - f[2]) < 1e-5 * fmax(1, fabs(want)));
            assert_true(fabs(f[1] - want) > 1e-3);
            const float *ge = lp_grad_embed(g);
            /* Keeping only the embeddings' gradient gives the same one. */
            lp_grad *lean;
            lp_view lv;
            assert_int_equal(lp_grad_embed_new(&lean, r, &o), LP_OK);
            assert_memory_equal(lp_grad_embed(lean), ge, (size_t)T * d * sizeof *ge);
            assert_true(lp_grad_objective(lean) == lp_grad_objective(g));
            assert_int_equal(lp_grad_view(lean, LP_ACT_RESID_PRE, 0, -1, &lv), LP_OK);
            assert_int_equal(lp_grad_view(lean, LP_ACT_RESID_MID, 0, -1, &lv), LP_EINVAL);
            lp_grad_free(lean);
            for (size_t j = 0; j < (size_t)Tp * d; j++) {
                worst = fmax(worst, fabs(gs[j] - ge[j]));
                big = fmax(big, fabs(ge[j]));
            }
            assert_true(worst <= 1e-5 * fmax(1, big));
            /* Forward only gives the same values. */
            double f2[3];
            assert_int_equal(lp_grad_batch(m, Tp, 3, scaled_input, &s, &o, NULL, f2, NULL), LP_OK);
            for (int k = 0; k < 3; k++) assert_true(fabs(f2[k] - f[k]) < 1e-5 * fmax(1, fabs(f[k])));
            free(gs);
            lp_grad_free(g);
        }
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
    print_message("  batched objective vs the run, and two copies in one batch: worst %.1e\n", worst_f);
}

/* Inputs for lp_forward_batch_shared: the base x, and input i = x with its rows from
 * first[i] on scaled by 1 + (i + 1) / 8. */
typedef struct {
    const float *x;
    const int *first;
    int T, d;
} suffixed;

static void suffixed_input(float *out, int i, void *ctx) {
    const suffixed *s = ctx;
    for (int t = 0; t < s->T; t++)
        for (int j = 0; j < s->d; j++) {
            size_t k = (size_t)t * s->d + j;
            out[k] = t < s->first[i] ? s->x[k] : s->x[k] * (1.0f + (float)(i + 1) / 8.0f);
        }
}

/* Inputs that share their first rows with a base go through only their other rows
 * (lp_forward_batch_shared) and give what the whole inputs give (lp_grad_batch): every
 * fixture model (each family's attention, norms and blocks), each objective at the last row
 * and before it (inputs whose rows differ only after pos), firsts in no order; and at 140
 * tokens, past the attention loops (ATTN_LOOP_MAX_T), on GPT-2 and Gemma 2. */
static double shared_vs_whole(const lp_model *m, const float *x, int T, int pos, int kind, int salt) {
    static const int firsts[] = {3, 0, 1, 100, 7, 2, 5, 4};
    enum { N = sizeof firsts / sizeof firsts[0] };
    int first[N];
    for (int i = 0; i < N; i++) first[i] = firsts[i] == 100 ? T + 2 : firsts[i] % T;
    first[6] = T - 1;
    lp_objective o = objective_for(m, kind, pos, salt);
    suffixed s = {x, first, T, m->cfg.d_model};
    double shared[N], whole[N], worst = 0;
    assert_int_equal(lp_forward_batch_shared(m, T, N, suffixed_input, &s, x, first, &o, shared), LP_OK);
    assert_int_equal(lp_grad_batch(m, T, N, suffixed_input, &s, &o, NULL, whole, NULL), LP_OK);
    for (int i = 0; i < N; i++) {
        double e = fabs(shared[i] - whole[i]) / fmax(1, fabs(whole[i]));
        worst = fmax(worst, e);
        assert_true(e < 1e-5);
    }
    /* the inputs differ where the objective reads them: the check compares different values */
    assert_true(fabs(whole[1] - whole[0]) > 1e-4 || first[0] > pos);
    return worst;
}

static void shared_prefixes_match_the_whole_inputs(void **state) {
    (void)state;
    fixture_model fms[16];
    int nm = read_models(fms, 16);
    double worst = 0;
    for (int i = 0; i < nm; i++) {
        char *dir;
        lp_model *m = load_fixture(&fms[i], &dir);
        int T = fms[i].n;
        lp_run *r;
        const float *x0 = run_embeddings(&r, m, fms[i].ids, T);
        for (int kind = 0; kind < 3; kind++) {
            worst = fmax(worst, shared_vs_whole(m, x0, T, T - 1, kind, i));
            worst = fmax(worst, shared_vs_whole(m, x0, T, T - 3, kind, i));
        }
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
    static const char *const names[] = {"gpt2", "gemma2_sliding"};
    for (int mi = 0; mi < 2; mi++) {
        fixture_model fm;
        char *dir;
        lp_model *m = long_fixture(fms, nm, names[mi], &fm, &dir);
        int T = 140, *ids = malloc((size_t)T * sizeof *ids);
        for (int t = 0; t < T; t++) ids[t] = fm.ids[t % fm.n];
        lp_run *r;
        const float *x0 = run_embeddings(&r, m, ids, T);
        worst = fmax(worst, shared_vs_whole(m, x0, T, T - 1, LP_OBJ_LOGPROB, mi));
        lp_run_free(r);
        free(ids);
        lp_model_free(m);
        rm_tree(dir);
    }
    print_message("  shared prefixes vs whole inputs: worst %.1e of the objective\n", worst);
}

/* Attention's backward runs in loops on the worker pool up to ATTN_LOOP_MAX_T (64) tokens
 * (batches then fuse GPT-2's q|k|v) and as per-head matrix products beyond: on either side
 * of that length the run's gradient matches central differences and a batch matches the
 * run. Worst measured (Haswell and Cooperlake kernels, 2 threads): relative error 7.9e-7
 * against differences (bound 1e-3), 5.6e-7 of the largest value between batch and run
 * (bound 1e-5). */
static void both_attention_paths_match_finite_differences(void **state) {
    (void)state;
    fixture_model fms[16];
    int nm = read_models(fms, 16);
    /* gpt2, and Gemma 2 (soft cap, sliding window: the long path's own softcap derivative) */
    static const char *const names[] = {"gpt2", "gemma2_sliding"};
    for (int mi = 0; mi < 2; mi++) {
        fixture_model fm;
        char *dir;
        lp_model *m = long_fixture(fms, nm, names[mi], &fm, &dir);
        static const int lengths[] = {ATTN_LOOP_MAX_T - 4, ATTN_LOOP_MAX_T + 12};
        for (int li = 0; li < 2; li++) {
            int T = lengths[li], d = m->cfg.d_model, *ids = malloc((size_t)T * sizeof *ids);
            for (int t = 0; t < T; t++) ids[t] = fm.ids[t % fm.n];
            lp_run *r;
            assert_int_equal(lp_run_new(&r, m, ids, T), LP_OK);
            lp_objective o = objective_for(m, LP_OBJ_LOGPROB, T - 1, li);
            lp_grad *g;
            assert_int_equal(lp_grad_new(&g, r, &o), LP_OK);
            size_t n = (size_t)T * d;
            const float *ge = lp_grad_embed(g);
            double *gd = malloc(n * sizeof *gd);
            for (size_t j = 0; j < n; j++) gd[j] = ge[j];
            double err = check_site(m, ids, T, &o, LP_ACT_RESID_PRE, 0, gd, n, 4);
            lp_view x0;
            lp_run_view(r, LP_ACT_RESID_PRE, 0, -1, &x0);
            scaled s = {x0.data, T, d, {1.0, 0.5}};
            double w[2] = {1.0, 0.0}, f[2], worst = 0, big = 0;
            float *gs = malloc(n * sizeof *gs);
            assert_int_equal(lp_grad_batch(m, T, 2, scaled_input, &s, &o, w, f, gs), LP_OK);
            for (size_t j = 0; j < n; j++) {
                worst = fmax(worst, fabs(gs[j] - ge[j]));
                big = fmax(big, fabs(ge[j]));
            }
            print_message("  %s T=%d: relative error %.1e against differences; batch vs run %.1e of the largest\n",
                          names[mi], T, err, worst / fmax(1, big));
            assert_true(err < FD_TOL);
            assert_true(worst <= 1e-5 * fmax(1, big));
            assert_true(fabs(f[0] - lp_grad_objective(g)) < 1e-4 * fmax(1, fabs(f[0])));
            free(gs);
            free(gd);
            lp_grad_free(g);
            lp_run_free(r);
            free(ids);
        }
        lp_model_free(m);
        rm_tree(dir);
    }
}

/* Training's attention (lp_attention16: 16-lane loops, vmath's exp) against the inference
 * kernel (lp_attention_seqs), on grouped heads 16 and 32 wide over lengths that end inside a
 * 16-key block (1, 37) and span several (128): the pattern's rows sum to 1 with zeros past
 * the query, and pattern and z agree to the exponentials' difference (vmath's exp is within
 * about 3e-7 of expf); its backward (lp_attention16_backward) gives attention_backward's dq,
 * dk and dv from that pattern. Worst measured (SkylakeX, fused multiply-adds since session
 * 17): pattern 1.2e-7, z 1.8e-7 of its largest, dq, dk, dv 2.6e-7. Where it does not apply
 * it refuses and writes nothing. */
static void training_attention_matches_the_inference_kernel(void **state) {
    (void)state;
    lp_rng rng;
    lp_rng_seed(&rng, 5);
    static const int widths[] = {16, 32}, lengths[] = {1, 37, 128};
    enum { B = 2, H = 4, HKV = 2 };
    for (int wi = 0; wi < 2; wi++)
        for (int li = 0; li < 3; li++) {
            int dh = widths[wi], T = lengths[li];
            lp_config c = {.n_head = H, .n_kv_head = HKV, .d_head = dh, .d_model = H * dh, .causal = true,
                           .pos = LP_POS_LEARNED};
            size_t nq = (size_t)B * T * H * dh, nkv = (size_t)B * T * HKV * dh, np = (size_t)B * H * T * T;
            float *q = malloc(nq * sizeof *q), *k = malloc(nkv * sizeof *k), *v = malloc(nkv * sizeof *v);
            float *p1 = malloc(np * sizeof *p1), *p2 = malloc(np * sizeof *p2);
            float *z1 = malloc(nq * sizeof *z1), *z2 = malloc(nq * sizeof *z2);
            /* scores of a few units either way: rows neither flat nor one-hot */
            for (size_t i = 0; i < nq; i++) q[i] = (float)(lp_rng_uniform(&rng) * 4.0 - 2.0);
            for (size_t i = 0; i < nkv; i++) k[i] = (float)(lp_rng_uniform(&rng) * 2.0 - 1.0);
            for (size_t i = 0; i < nkv; i++) v[i] = (float)(lp_rng_uniform(&rng) * 2.0 - 1.0);
            assert_int_equal(lp_attention16(p1, z1, &c, q, k, v, B, T), LP_OK);
            lp_attention_seqs(p2, z2, &c, 0, q, k, v, B, T);
            double dp = 0.0, dz = 0.0, big = 0.0, rows = 0.0;
            for (size_t r = 0; r < (size_t)B * H * T; r++) {
                const float *row = p1 + r * T;
                size_t i = r % (size_t)T;
                double sum = 0.0;
                for (size_t j = 0; j < (size_t)T; j++) {
                    if (j > i) assert_true(row[j] == 0.0f);
                    sum += row[j];
                    dp = fmax(dp, fabs(row[j] - p2[r * T + j]));
                }
                rows = fmax(rows, fabs(sum - 1.0));
            }
            for (size_t i = 0; i < nq; i++) {
                dz = fmax(dz, fabs(z1[i] - z2[i]));
                big = fmax(big, fabs(z2[i]));
            }
            /* the backward from the same pattern and a drawn dz: lp_attention16_backward's
             * dq, dk, dv against attention_backward's */
            float *dz_ = malloc(nq * sizeof *dz_), *g[2][3], *dP = malloc((size_t)T * T * sizeof *dP);
            for (size_t i = 0; i < nq; i++) dz_[i] = (float)(lp_rng_uniform(&rng) * 2.0 - 1.0);
            tape_layer ta = {.q = q, .k = k, .v = v, .pattern = p1, .p_ld = T, .p_hs = (long)T * T};
            double dg = 0.0, gbig = 0.0;
            for (int pass = 0; pass < 2; pass++) {
                g[pass][0] = malloc(nq * sizeof(float));
                g[pass][1] = calloc(nkv, sizeof(float));
                g[pass][2] = calloc(nkv, sizeof(float));
                grad_layer ga = {.d_q = g[pass][0], .d_z = dz_, .d_k = g[pass][1], .d_v = g[pass][2], .dP = dP};
                if (pass == 0) assert_int_equal(lp_attention16_backward(&ga, &ta, &c, B, T), LP_OK);
                else attention_backward(&ga, &ta, &c, B, T);
            }
            for (int w = 0; w < 3; w++)
                for (size_t i = 0; i < (w ? nkv : nq); i++) {
                    dg = fmax(dg, fabs(g[0][w][i] - g[1][w][i]));
                    gbig = fmax(gbig, fabs(g[1][w][i]));
                }
            print_message("  d_head %d, T=%d: pattern within %.1e, z within %.1e of its largest; rows sum to 1 "
                          "within %.1e; dq, dk, dv within %.1e of their largest\n", dh, T, dp, dz / big, rows,
                          dg / gbig);
            assert_true(dp <= 1e-6);
            assert_true(dz <= 1e-6 * big);
            assert_true(rows <= 1e-6);
            assert_true(gbig > 0.0 && dg <= 1e-5 * gbig);
            for (int pass = 0; pass < 2; pass++) free(g[pass][0]), free(g[pass][1]), free(g[pass][2]);
            free(dz_), free(dP);
            free(q), free(k), free(v), free(p1), free(p2), free(z1), free(z2);
        }
    float x = 1.0f;
    lp_config c = {.n_head = 1, .n_kv_head = 1, .d_head = 16, .d_model = 16, .causal = false};
    assert_int_not_equal(lp_attention16(&x, &x, &c, &x, &x, &x, 1, 1), LP_OK); /* an encoder's */
    c.causal = true;
    c.d_head = 8;
    assert_int_not_equal(lp_attention16(&x, &x, &c, &x, &x, &x, 1, 1), LP_OK);
    c.d_head = 16;
    c.attn_softcap = 50.0f;
    assert_int_not_equal(lp_attention16(&x, &x, &c, &x, &x, &x, 1, 1), LP_OK);
    tape_layer ta = {.q = &x, .k = &x, .v = &x, .pattern = &x, .p_ld = 1, .p_hs = 1};
    grad_layer ga = {.d_q = &x, .d_z = &x, .d_k = &x, .d_v = &x};
    assert_int_not_equal(lp_attention16_backward(&ga, &ta, &c, 1, 1), LP_OK);
    c.attn_softcap = 0.0f;
    ta.q_ld = 48; /* a fused q|k|v's stride */
    assert_int_not_equal(lp_attention16_backward(&ga, &ta, &c, 1, 1), LP_OK);
    assert_true(x == 1.0f);
}

/* Integrated gradients add up: |delta| < 1% of f(x) - f(baseline) at 64 steps, for the
 * default target (the top prediction) and each objective. The zero baseline is left out for
 * models without position embeddings (Llama's RMSNorm, GPT-NeoX's LayerNorm), whose first norm
 * then reads a x alone: norm(a x) = norm(x) once a >> sqrt(eps) / std(x), which for these
 * fixtures (embeddings of std 0.3, eps 1e-6 or 1e-5) puts most of f's change at a < 1e-2,
 * between the first quadrature nodes; delta says so (3% for neox_parallel, tens of percent for
 * RMSNorm), and token baselines are fine. */
static void integrated_gradients_are_complete(void **state) {
    (void)state;
    fixture_model fms[16];
    int nm = read_models(fms, 16);
    for (int i = 0; i < nm; i++) {
        char *dir;
        lp_model *m = load_fixture(&fms[i], &dir);
        int T = fms[i].n, V = m->cfg.vocab, top = 0;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fms[i].ids, T), LP_OK);
        const float *lg = lp_run_logits(r, T - 1);
        for (int j = 1; j < V; j++)
            if (lg[j] > lg[top]) top = j;
        double worst = 0;
        for (int b = m->pos_emb ? -1 : 0; b <= 1; b++)
            for (int kind = 0; kind < 3; kind++) {
                lp_attr_spec sp = {LP_ATTR_IG, {(lp_objective_kind)kind, T - 1, top, (top + 1) % V}, 64, b, 0, -1, 64, 0};
                float scores[64];
                double delta, sum = 0;
                assert_int_equal(lp_attr(scores, &delta, r, &sp), LP_OK);
                for (int t = 0; t < T; t++) sum += scores[t];
                /* f(x) - f(baseline); a gap under 1 counts as 1, so that a baseline that nearly
                 * ties the input (gemma2_sliding's token 1 under logit_diff: 0.035, with delta
                 * 1.5e-3 at 64 nodes, 3e-8 at 256) asks |delta| < 0.01 in the objective's units,
                 * not a relative precision that 64 nodes on a soft-capped path do not give */
                double gap = sum - delta;
                worst = fmax(worst, fabs(delta) / fmax(fabs(gap), 1.0));
            }
        print_message("  %-22s ig-64: worst |delta| / max(1, |f(x) - f(b)|) = %.2g%% (baselines %stoken 0, token 1)\n",
                      fms[i].name, 100 * worst, m->pos_emb ? "zero, " : "");
        assert_true(worst < 0.01);
        lp_run_free(r);
        lp_model_free(m);
        rm_tree(dir);
    }
}

static void gauss_legendre_integrates_polynomials_exactly(void **state) {
    (void)state;
    for (int n = 1; n <= 64; n *= 2) {
        double a[64], w[64];
        lp_gauss_legendre(a, w, n);
        for (int k = 0; k <= 2 * n - 1; k++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += w[i] * pow(a[i], k);
            assert_true(fabs(s - 1.0 / (k + 1)) < 1e-13);
        }
        for (int i = 1; i < n; i++) assert_true(a[i] > a[i - 1]);
    }
}

/* ---- against PyTorch autograd (tests/fixtures/grad_*.json) ---- */

static double max_err(json_t *expected, const float *got, size_t n, double *scale) {
    double worst = 0;
    *scale = 0;
    assert_int_equal(json_array_size(expected), n);
    for (size_t i = 0; i < n; i++) {
        double e = json_number_value(json_array_get(expected, i));
        worst = fmax(worst, fabs(e - got[i]));
        *scale = fmax(*scale, fabs(e));
    }
    return worst;
}

static json_t *flatten(json_t *a) {
    json_t *out = json_array();
    if (!json_is_array(json_array_get(a, 0))) return json_incref(a), json_decref(out), a;
    size_t i;
    json_t *row;
    json_array_foreach(a, i, row) {
        json_t *f = flatten(row);
        json_array_extend(out, f);
        json_decref(f);
    }
    return out;
}

/* Relative to the largest expected value: gradients and scores are float32 computations
 * checked against float64 ones. */
#define REF_TOL 1e-4

static void attributions_match_pytorch_reference(void **state) {
    (void)state;
    fixture_model fms[16];
    int nm = read_models(fms, 16), checked = 0;
    for (int i = 0; i < nm; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/grad_%.60s.json", fms[i].name);
        json_error_t jerr;
        json_t *exp = json_load_file(path, 0, &jerr);
        if (!exp) continue;
        checked++;
        char *dir;
        lp_model *m = load_fixture(&fms[i], &dir);
        int T = fms[i].n, d = m->cfg.d_model;
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, fms[i].ids, T), LP_OK);
        int pos = (int)json_integer_value(json_object_get(exp, "pos"));
        int target = (int)json_integer_value(json_object_get(exp, "target"));
        int contrast = (int)json_integer_value(json_object_get(exp, "contrast"));
        double worst = 0, scale;
        for (int kind = 0; kind < 3; kind++) {
            lp_objective o = {(lp_objective_kind)kind, pos, target, contrast};
            lp_grad *g;
            assert_int_equal(lp_grad_new(&g, r, &o), LP_OK);
            json_t *want = flatten(json_object_get(json_object_get(exp, "grad"), lp_objective_name(o.kind)));
            double e = max_err(want, lp_grad_embed(g), (size_t)T * d, &scale) / scale;
            worst = fmax(worst, e);
            json_decref(want);
            lp_grad_free(g);
        }
        double worst_attr = 0;
        json_t *methods = json_object_get(exp, "attr"), *case_;
        size_t k;
        json_array_foreach(methods, k, case_) {
            lp_attr_spec sp = {0};
            assert_int_equal(lp_attr_method_from_name(json_string_value(json_object_get(case_, "method")), &sp.method),
                             LP_OK);
            assert_int_equal(lp_objective_from_name(json_string_value(json_object_get(case_, "objective")),
                                                    &sp.objective.kind),
                             LP_OK);
            sp.objective.pos = pos, sp.objective.target = target, sp.objective.contrast = contrast;
            sp.steps = (int)json_integer_value(json_object_get(case_, "steps"));
            sp.max_steps = sp.steps; /* the reference integrates by Captum's rule alone */
            sp.baseline = (int)json_integer_value(json_object_get(case_, "baseline"));
            sp.window = (int)json_integer_value(json_object_get(case_, "window"));
            sp.layer = (int)json_integer_value(json_object_get(case_, "layer"));
            float scores[64];
            double delta;
            assert_int_equal(lp_attr(scores, &delta, r, &sp), LP_OK);
            double e = max_err(json_object_get(case_, "scores"), scores, (size_t)T, &scale) / fmax(scale, 1e-3);
            json_t *dj = json_object_get(case_, "delta");
            if (json_is_number(dj)) e = fmax(e, fabs(delta - json_number_value(dj)) / fmax(scale, 1e-3));
            else assert_true(isnan(delta));
            if (e > worst_attr) worst_attr = e;
            if (e > REF_TOL)
                print_message("    %s %s: relative error %.1e\n", lp_attr_method_name(sp.method),
                              lp_objective_name(sp.objective.kind), e);
        }
        print_message("  %-22s vs PyTorch: gradients %.1e, %zu attributions %.1e (relative to the largest value)\n",
                      fms[i].name, worst, json_array_size(methods), worst_attr);
        assert_true(worst < REF_TOL);
        assert_true(worst_attr < REF_TOL);
        lp_run_free(r);
        lp_model_free(m);
        json_decref(exp);
        rm_tree(dir);
    }
    assert_true(checked >= 3);
}

static void bad_arguments_are_refused(void **state) {
    (void)state;
    fixture_model fms[16];
    read_models(fms, 16);
    char *dir;
    lp_model *m = load_fixture(&fms[0], &dir);
    lp_run *r;
    assert_int_equal(lp_run_new(&r, m, fms[0].ids, fms[0].n), LP_OK);
    lp_grad *g = NULL;
    lp_objective bad[] = {{LP_OBJ_LOGIT, fms[0].n, 1, -1}, {LP_OBJ_LOGIT, 0, m->cfg.vocab, -1},
                          {LP_OBJ_LOGIT_DIFF, 0, 1, -1}, {(lp_objective_kind)7, 0, 1, 1}};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(lp_grad_new(&g, r, &bad[i]), LP_EINVAL);
        assert_null(g);
    }
    float scores[64];
    double delta;
    lp_attr_spec sp = {LP_ATTR_ATTNXNORM, {LP_OBJ_LOGIT, 0, 0, -1}, 0, -1, 0, m->cfg.n_layer, 0, 0};
    assert_int_equal(lp_attr(scores, &delta, r, &sp), LP_EINVAL);
    sp = (lp_attr_spec){LP_ATTR_OCCLUSION, {LP_OBJ_LOGIT, 0, 0, -1}, 0, -1, fms[0].n + 1, -1, 0, 0};
    assert_int_equal(lp_attr(scores, &delta, r, &sp), LP_EINVAL);
    sp = (lp_attr_spec){LP_ATTR_IG, {LP_OBJ_LOGIT, 0, 0, -1}, 0, m->cfg.vocab, 0, -1, 0, 0};
    assert_int_equal(lp_attr(scores, &delta, r, &sp), LP_EINVAL);
    lp_run_free(r);
    lp_model_free(m);
    rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(embedding_gradients_match_finite_differences),
        cmocka_unit_test(activation_gradients_match_finite_differences),
        cmocka_unit_test(interleaved_rope_gradients_match_finite_differences),
        cmocka_unit_test(batches_match_the_run),
        cmocka_unit_test(shared_prefixes_match_the_whole_inputs),
        cmocka_unit_test(both_attention_paths_match_finite_differences),
        cmocka_unit_test(training_attention_matches_the_inference_kernel),
        cmocka_unit_test(integrated_gradients_are_complete),
        cmocka_unit_test(gauss_legendre_integrates_polynomials_exactly),
        cmocka_unit_test(attributions_match_pytorch_reference),
        cmocka_unit_test(bad_arguments_are_refused),
    };
    return cmocka_run_group_tests_name("grad", tests, NULL, NULL);
}
