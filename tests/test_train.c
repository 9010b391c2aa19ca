/* Training: the parameter gradients against central finite differences of the loss (GPT-2
 * and attention-only, BERT, T5), a tiny model learning a token pattern, reproducibility for a
 * seed and across a resume, the schedule, and a saved checkpoint reloading to bit-identical
 * logits. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "helpers.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/train.h"
#include "loupe/grad_seq2seq.h"
#include "loupe/recipe.h"
#include "loupe/s2s_task.h"
#include "loupe/corpus.h"
#include "loupe/fileio.h"
#include "train/adamw.h"
#include <jansson.h>


static lp_config tiny_config(bool attn_only) {
    return (lp_config){.n_layer = 2, .n_head = 2, .d_model = 16, .d_mlp = 64, .vocab = 32, .n_ctx = 8,
                       .attn_only = attn_only};
}

static float normal(lp_rng *rng) {
    double u1 = lp_rng_uniform(rng), u2 = lp_rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* A BERT's targets (B, T) while its gradients are checked; NULL for a GPT-2's. */
static const int *fd_targets;

static double loss_at(const lp_model *m, const int *ids, int B, int T) {
    double l;
    if (fd_targets) assert_int_equal(lp_train_encoder_loss(m, ids, fd_targets, B, T, &l, NULL), LP_OK);
    else assert_int_equal(lp_train_loss(m, ids, B, T, &l, NULL), LP_OK);
    return l;
}

/* |analytic - numeric| / max(|analytic|, |numeric|, 1e-3 * the tensor's largest). Worst
 * measured (Haswell, SkylakeX, Sandybridge kernels, 1 and 2 threads): 5.3e-4 (GPT-2),
 * 1.2e-4 (attention-only); BERT: see test_bert_gradients_match_finite_differences. */
#define FD_TOL 1e-3

/* The loss is a float forward: its rounding (about 1e-8 here), divided by the step, is the
 * noise of a difference quotient. A coordinate whose gradient is small beside its tensor's
 * largest sits near that noise (one at 5e-4 of a loss of 4 came out 0.4% off with the AVX2
 * kernels at any single step) and wants a wide step; a strongly curved one (an embedding)
 * wants a narrow one. So the derivative is a least-squares fit, as a Savitzky-Golay filter
 * takes it: the odd differences f(x + kh) - f(x - kh), k = 1..K, fitted by
 * c1 k + c3 k^3 + c5 k^5, whose slope c1 / (2h) averages the rounding of 2K evaluations;
 * and the step is the one, of six, whose slope has the smallest standard error, so
 * neither truncation (a poor fit) nor rounding (a narrow step) dominates. */
enum { FD_K = 8, FD_P = 3 };

/* x (FD_P) = the solution of the symmetric positive definite a x = b (Gaussian elimination). */
static void solve3(double a[FD_P][FD_P], const double *b, double *x) {
    double m[FD_P][FD_P + 1];
    for (int r = 0; r < FD_P; r++) {
        for (int c = 0; c < FD_P; c++) m[r][c] = a[r][c];
        m[r][FD_P] = b[r];
    }
    for (int p = 0; p < FD_P; p++)
        for (int r = p + 1; r < FD_P; r++)
            for (int c = FD_P; c >= p; c--) m[r][c] -= m[r][p] / m[p][p] * m[p][c];
    for (int r = FD_P - 1; r >= 0; r--) {
        double v = m[r][FD_P];
        for (int c = r + 1; c < FD_P; c++) v -= m[r][c] * x[c];
        x[r] = v / m[r][r];
    }
}

/* The fitted slope at step h, and its standard error in *se. */
static double fitted_slope(const lp_model *m, const int *ids, int B, int T, float *x, double h, double *se) {
    float orig = *x;
    double g[FD_K], row[FD_K][FD_P], ata[FD_P][FD_P] = {{0}}, atg[FD_P] = {0}, c[FD_P];
    for (int k = 1; k <= FD_K; k++) {
        *x = (float)(orig + k * h);
        double up = loss_at(m, ids, B, T);
        *x = (float)(orig - k * h);
        g[k - 1] = up - loss_at(m, ids, B, T);
        for (int p = 0; p < FD_P; p++) row[k - 1][p] = pow(k, 2 * p + 1);
    }
    *x = orig;
    for (int k = 0; k < FD_K; k++)
        for (int p = 0; p < FD_P; p++) {
            for (int q = 0; q < FD_P; q++) ata[p][q] += row[k][p] * row[k][q];
            atg[p] += row[k][p] * g[k];
        }
    solve3(ata, atg, c);
    double rss = 0, e1[FD_P] = {1, 0, 0}, inv[FD_P];
    for (int k = 0; k < FD_K; k++) {
        double r = g[k];
        for (int p = 0; p < FD_P; p++) r -= c[p] * row[k][p];
        rss += r * r;
    }
    solve3(ata, e1, inv); /* inv[0] = (A^T A)^-1 [0][0] */
    *se = sqrt(rss / (FD_K - FD_P) * inv[0]) / (2 * h);
    return c[0] / (2 * h);
}

static double numeric_derivative(const lp_model *m, const int *ids, int B, int T, float *x, double *se_out) {
    double best = 0, best_se = INFINITY;
    for (double h = 2.5e-3; h <= 8e-2; h *= 2) {
        double se, d = fitted_slope(m, ids, B, T, x, h, &se);
        if (se < best_se) best = d, best_se = se;
    }
    if (se_out) *se_out = best_se;
    return best;
}

/* Every parameter tensor: its largest-gradient coordinate and two drawn ones; a BERT's
 * (c.head LP_HEAD_MLM or LP_HEAD_CLASSIFIER) on B sequences of T tokens with targets. */
/* A trainable model of shape c made with seed, each parameter then moved by N(0, 0.3^2)
 * drawn from rng (seeded rng_seed): larger than GPT-2's initial weights, so that every
 * parameter visibly moves the loss. */
static lp_model *perturbed_model(const lp_config *c, uint64_t seed, lp_rng *rng, uint64_t rng_seed) {
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, c, seed), LP_OK);
    size_t np;
    float *p = lp_train_params(m, &np);
    assert_non_null(p);
    lp_rng_seed(rng, rng_seed);
    for (size_t i = 0; i < np; i++) p[i] += 0.3f * normal(rng);
    return m;
}

static void check_gradients_of(lp_config c, const char *what) {
    bool enc = c.head != LP_HEAD_LM;
    lp_rng rng;
    lp_model *m = perturbed_model(&c, 7, &rng, 11);
    size_t np;
    float *p = lp_train_params(m, &np);
    enum { B = 2, T = 8 };
    int ids[B * (T + 1)], tgt[B * T];
    for (int i = 0; i < B * (T + 1); i++) ids[i] = (int)(lp_rng_uniform(&rng) * c.vocab);
    /* A masked LM's targets at every other position; a classifier's label of each sequence. */
    for (int i = 0; enc && i < B * T; i++)
        tgt[i] = c.head == LP_HEAD_MLM ? (i % 2 ? (int)(lp_rng_uniform(&rng) * c.vocab) : -1)
                                       : (i % T ? -1 : (i / T) % c.n_labels);
    fd_targets = enc ? tgt : NULL;
    float *g = malloc(np * sizeof *g);
    double loss;
    if (enc) assert_int_equal(lp_train_encoder_loss(m, ids, tgt, B, T, &loss, g), LP_OK);
    else assert_int_equal(lp_train_loss(m, ids, B, T, &loss, g), LP_OK);

    int nt = lp_train_tensors(lp_model_config(m), NULL, 0);
    lp_param_tensor *t = malloc((size_t)nt * sizeof *t);
    lp_train_tensors(lp_model_config(m), t, nt);
    double worst = 0.0;
    const char *worst_name = "";
    int within_noise = 0;
    for (int i = 0; i < nt; i++) {
        size_t big = 0;
        double scale = 0.0;
        for (size_t j = 0; j < t[i].size; j++)
            if (fabs(g[t[i].offset + j]) > scale) scale = fabs(g[t[i].offset + j]), big = j;
        if (strstr(t[i].name, "attention.self.key.bias")) {
            /* As GPT-2's key bias below: the softmax ignores it, its gradient is rounding. */
            assert_true(scale < 1e-6);
            continue;
        }
        assert_true(scale > 0.0); /* every tensor reaches the loss */
        size_t pick[3] = {big, (size_t)(lp_rng_uniform(&rng) * t[i].size), (size_t)(lp_rng_uniform(&rng) * t[i].size)};
        if (strstr(t[i].name, "c_attn.bias")) {
            /* The key bias adds q.b to every score of a query's row, which the softmax ignores:
             * its gradient is 0 (up to rounding), below what differences of a float loss see. */
            size_t d = (size_t)c.d_model;
            for (size_t j = d; j < 2 * d; j++) assert_true(fabs(g[t[i].offset + j]) < 1e-6 * scale);
            for (int s = 0; s < 3; s++)
                if (pick[s] >= d && pick[s] < 2 * d) pick[s] += d;
        }
        if (strstr(t[i].name, "token_type_embeddings")) {
            /* Row 0 is added at every position: its gradient is the sum of the position rows'
             * (checked here to float rounding), and the loss curves B * T times as fast along
             * it, so that differences see a small coordinate of it no better than 3e-3 (one at
             * 0.5% of the largest came out 3.2e-3 off with every step): only the largest one
             * is differenced. */
            for (int j = 0; j < c.d_model; j++) {
                double sum = 0.0;
                for (int r = 0; r < T; r++) sum += g[t[i - 1].offset + (size_t)r * c.d_model + j];
                assert_true(fabs(sum - g[t[i].offset + j]) <= 1e-5 * scale);
            }
            pick[1] = pick[2] = big;
        }
        for (int s = 0; s < 3; s++) {
            double se, num = numeric_derivative(m, ids, B, T, p + t[i].offset + pick[s], &se);
            double ana = g[t[i].offset + pick[s]];
            double den = fmax(fmax(fabs(ana), fabs(num)), 1e-3 * scale), err = fabs(ana - num) / den;
            /* A classifier's loss is that of B sequences, not B * T tokens: its rounding, and so
             * the differences' noise, is larger beside a small coordinate (one at 1.6e-4 came out
             * 2.4e-7 off, its fit's standard error 1e-7; spread over steps, +-2e-5 at narrow ones):
             * there a difference within four standard errors of the fit passes. */
            if (enc && c.head == LP_HEAD_CLASSIFIER && err > FD_TOL && fabs(ana - num) <= 4 * se) {
                within_noise++;
                continue;
            }
            if (err > worst) worst = err, worst_name = t[i].name;
            if (getenv("FD_VERBOSE")) print_message("%s[%zu] %.3g %.3g %.2e\n", t[i].name, pick[s], ana, num, err);
            if (err > FD_TOL) fail_msg("%s[%zu]: analytic %.8g, numeric %.8g (error %.2e)", t[i].name, pick[s], ana, num, err);
        }
    }
    print_message("%s: worst relative error %.2e (%s) over %d tensors; %d within the differences' noise\n", what,
                  worst, worst_name, nt, within_noise);
    fd_targets = NULL;
    free(t);
    free(g);
    lp_model_free(m);
}

static void check_gradients(bool attn_only) {
    check_gradients_of(tiny_config(attn_only), attn_only ? "attention-only" : "gpt-2");
}

/* BERT, masked LM and classifier (post-norm blocks, the embeddings' norm, token types, the
 * erf GELU, the MLM head tied to the word embeddings, the pooler's tanh). Worst measured:
 * masked LM 1.9e-4, classifier 6.6e-4 (one more coordinate within the differences' noise)
 * with OPENBLAS_CORETYPE=Haswell; 4.7e-4 and 8.4e-4 with it unset (SkylakeX here). */
static void test_bert_gradients_match_finite_differences(void **state) {
    (void)state;
    lp_config c = tiny_config(false);
    c.head = LP_HEAD_MLM;
    check_gradients_of(c, "bert masked LM");
    c.head = LP_HEAD_CLASSIFIER;
    c.n_labels = 3;
    check_gradients_of(c, "bert classifier");
}

static void test_weight_gradients_match_finite_differences(void **state) {
    (void)state;
    check_gradients(false);
    /* one head 16 wide: the forward's attention in lp_attention16's loops (8 wide: the
     * inference kernel's products) */
    lp_config c = tiny_config(false);
    c.n_head = 1;
    check_gradients_of(c, "gpt-2, 16-wide head");
}

static void test_attn_only_gradients_match_finite_differences(void **state) {
    (void)state;
    check_gradients(true);
}

/* A shard runs micro-batches of 512 rows (whole sequences) one after another, each product
 * over a micro-batch's rows at once, and the loss head 128 rows at a time (train.c): a batch
 * of 14 x 40 tokens (micro-batches of 12 and 2 sequences, head chunks of 128, 128, 128, 96
 * and 80 rows, sequences across their edges) has the loss that the inference forward's
 * logits give (in double) and the mean of its sequences' gradients, each taken alone. Worst
 * measured (SkylakeX, session 17): loss 6.8e-9 relative, gradient 4.9e-7 of its largest;
 * session 15's 64-row chunks over 3 x 40 gave 1.4e-8 and 6.8e-7 with OPENBLAS_CORETYPE=Haswell. */
static void batch_matches_its_sequences(int n_head) {
    lp_config c = tiny_config(false);
    c.n_ctx = 40;
    c.n_head = n_head;
    lp_rng rng;
    lp_model *m = perturbed_model(&c, 9, &rng, 12);
    size_t np;
    lp_train_params(m, &np);
    enum { B = 14, T = 40 };
    int ids[B * (T + 1)];
    for (int i = 0; i < B * (T + 1); i++) ids[i] = (int)(lp_rng_uniform(&rng) * c.vocab);
    float *g = malloc(np * sizeof *g), *g1 = malloc(np * sizeof *g1);
    double *mean = calloc(np, sizeof *mean), loss, ref = 0.0;
    assert_int_equal(lp_train_loss(m, ids, B, T, &loss, g), LP_OK);
    for (int b = 0; b < B; b++) {
        const int *seq = ids + b * (T + 1);
        lp_run *r;
        lp_view v;
        assert_int_equal(lp_run_new(&r, m, seq, T), LP_OK);
        assert_int_equal(lp_run_view(r, LP_ACT_LOGITS, 0, -1, &v), LP_OK);
        for (int t = 0; t < T; t++) {
            const float *row = v.data + (size_t)t * c.vocab;
            double mx = row[0], sum = 0.0;
            for (int j = 1; j < c.vocab; j++) mx = fmax(mx, row[j]);
            for (int j = 0; j < c.vocab; j++) sum += exp(row[j] - mx);
            ref += mx + log(sum) - row[seq[t + 1]];
        }
        lp_run_free(r);
        assert_int_equal(lp_train_loss(m, seq, 1, T, NULL, g1), LP_OK);
        for (size_t j = 0; j < np; j++) mean[j] += g1[j] / (double)B;
    }
    ref /= B * T;
    double scale = 0.0, worst = 0.0;
    for (size_t j = 0; j < np; j++) scale = fmax(scale, fabs(g[j]));
    for (size_t j = 0; j < np; j++) worst = fmax(worst, fabs(g[j] - mean[j]) / scale);
    print_message("batch of 14 x 40, d_head %d: loss %.6f vs the forward's logits %.6f (%.1e relative); gradient "
                  "within %.1e of its largest\n", c.d_model / n_head, loss, ref, fabs(loss - ref) / ref, worst);
    assert_true(fabs(loss - ref) <= 1e-6 * ref);
    assert_true(scale > 0.0 && worst <= 5e-6);
    free(g);
    free(g1);
    free(mean);
    lp_model_free(m);
}

/* Heads 8 wide (attention in the inference kernel's products) and 16 (lp_attention16's
 * loops, three 16-key blocks at 40 tokens: its pattern's exponentials are vmath's, within
 * 3e-7 of those the forward's logits come from). */
static void test_batch_loss_and_gradient_match_its_sequences(void **state) {
    (void)state;
    batch_matches_its_sequences(2);
    batch_matches_its_sequences(1);
}

/* A cycle of 7 distinct tokens: the next token follows from the current one. */
static int *pattern_data(size_t n, int shift) {
    static const int cycle[7] = {3, 9, 1, 14, 6, 11, 2};
    int *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = cycle[(i + (size_t)shift) % 7];
    return d;
}

typedef struct {
    double first, last, eval_last, tokens_per_s;
    int steps;
} curve;

static int record(const lp_train_progress *p, void *ctx) {
    curve *cv = ctx;
    if (p->step == 1) cv->first = p->loss;
    cv->last = p->loss;
    if (!isnan(p->eval_loss)) cv->eval_last = p->eval_loss;
    cv->tokens_per_s = p->tokens_per_s;
    cv->steps = p->step;
    return 0;
}

static lp_train_options small_options(int steps) {
    lp_train_options o = lp_train_defaults(steps);
    o.B = 8;
    o.T = 16;
    o.lr = 3e-3f;
    o.min_lr = 3e-4f;
    o.warmup = 20;
    o.eval_every = 100;
    o.eval_batches = 2;
    return o;
}

static void test_tiny_model_learns_a_pattern(void **state) {
    (void)state;
    lp_config c = {.n_layer = 2, .n_head = 2, .d_model = 32, .d_mlp = 128, .vocab = 16, .n_ctx = 16};
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 1), LP_OK);
    int *train = pattern_data(4096, 0), *held = pattern_data(512, 3);
    lp_train_options o = small_options(300);
    curve cv = {0};
    if (lp_train(m, train, 4096, held, 512, &o, record, &cv)) fail_msg("%s", lp_errmsg());
    print_message("loss %.4f -> %.4f (held-out %.4f) in %d steps, %.0f tokens/s\n", cv.first, cv.last, cv.eval_last,
                  cv.steps, cv.tokens_per_s);
    assert_int_equal(cv.steps, 300);
    assert_true(cv.last < 0.3 * cv.first);
    assert_true(cv.eval_last < 0.3 * cv.first);
    free(train);
    free(held);
    lp_model_free(m);
}

/* An absurd weight decay multiplies the weights by -(lr * wd - 1) per step until they overflow:
 * training must stop with an error before handing the callback (which saves checkpoints)
 * a step whose loss or weights are not finite. */
static int all_finite(const lp_train_progress *p, void *ctx) {
    lp_model *m = ctx;
    size_t np;
    const float *w = lp_train_params(m, &np);
    for (size_t j = 0; j < np; j++)
        if (!isfinite(w[j])) fail_msg("step %d reached the callback with a non-finite weight", p->step);
    if (!isfinite(p->loss)) fail_msg("step %d reached the callback with loss %g", p->step, p->loss);
    return 0;
}

static void test_training_stops_when_it_diverges(void **state) {
    (void)state;
    lp_config c = tiny_config(false);
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 1), LP_OK);
    int *train = pattern_data(512, 0);
    lp_train_options o = small_options(200);
    o.eval_every = 0;
    o.T = 8;
    o.warmup = 0;
    o.lr = 10.0f;
    o.weight_decay = 1e30f;
    assert_int_equal(lp_train(m, train, 512, NULL, 0, &o, all_finite, m), LP_ERANGE);
    assert_non_null(strstr(lp_errmsg(), "diverged"));
    free(train);
    lp_model_free(m);
}

static void test_training_is_reproducible_for_a_seed(void **state) {
    (void)state;
    lp_config c = tiny_config(false);
    c.n_ctx = 16;
    int *train = pattern_data(1024, 0);
    lp_train_options o = small_options(20);
    o.eval_every = 0;
    float *params[2];
    size_t np = 0;
    lp_model *ms[2];
    for (int k = 0; k < 2; k++) {
        assert_int_equal(lp_train_model_new(&ms[k], &c, 5), LP_OK);
        assert_int_equal(lp_train(ms[k], train, 1024, NULL, 0, &o, NULL, NULL), LP_OK);
        params[k] = lp_train_params(ms[k], &np);
    }
    assert_memory_equal(params[0], params[1], np * sizeof(float));
    lp_model_free(ms[0]);
    lp_model_free(ms[1]);
    free(train);
}

static void test_schedule_warms_up_then_decays_to_min(void **state) {
    (void)state;
    lp_train_options o = lp_train_defaults(100);
    o.warmup = 10;
    o.lr = 1.0f;
    o.min_lr = 0.1f;
    assert_float_equal(lp_train_lr(&o, 0), 0.1f, 1e-6);
    assert_float_equal(lp_train_lr(&o, 9), 1.0f, 1e-6);
    assert_float_equal(lp_train_lr(&o, 10), 1.0f, 1e-6);
    assert_float_equal(lp_train_lr(&o, 99), 0.1f, 1e-6);
    assert_true(lp_train_lr(&o, 50) < 1.0f && lp_train_lr(&o, 50) > 0.1f);
}

/* The optimiser's pieces (src/train/adamw.c) against the same sums and AdamW in double, over
 * two chunks and 37 more parameters (a short last chunk, a tail of fewer than 16), cut into
 * two threads' runs, from three shards' gradients; two tensors' parts, decay on one; the
 * gradient clipped. Worst measured: the sum of squares 6.9e-15 relative (the lanes' order),
 * a weight 1.3e-7 of its own size plus its step (float's rounding; a dropped weight decay is
 * 1e-4 off). A weight made NaN is reported. */
static void test_optimiser_step_matches_adamw_in_double(void **state) {
    (void)state;
    enum { N = 2 * ADAMW_CHUNK + 37, CUT = ADAMW_CHUNK, DECAYED = 1000 };
    float *p = malloc(N * sizeof *p), *m = malloc(N * sizeof *m), *v = malloc(N * sizeof *v);
    float *g = malloc(N * sizeof *g), *o1 = malloc(N * sizeof *o1), *o2 = malloc(N * sizeof *o2);
    double *ref = malloc(N * sizeof *ref), sq[3], want = 0.0;
    lp_rng rng;
    lp_rng_seed(&rng, 17);
    for (int j = 0; j < N; j++) {
        p[j] = normal(&rng), m[j] = 0.01f * normal(&rng), v[j] = 1e-4f * (float)lp_rng_uniform(&rng);
        g[j] = 0.1f * normal(&rng), o1[j] = 0.1f * normal(&rng), o2[j] = 0.1f * normal(&rng);
    }
    float *others[2] = {o1, o2}, g0[N];
    memcpy(g0, g, sizeof g0);
    adamw_reduce(g, others, 2, 0, CUT, sq);
    adamw_reduce(g, others, 2, CUT, N, sq);
    double got = sq[0] + sq[1] + sq[2];
    for (int j = 0; j < N; j++) {
        assert_true(g[j] == (g0[j] + o1[j]) + o2[j]); /* the shards' order, in float */
        want += (double)g[j] * g[j];
    }
    print_message("sum of squares within %.1e of the double sum\n", fabs(got - want) / want);
    assert_true(fabs(got - want) <= 1e-12 * want);

    adamw_step s = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .clip = 0.5f,
                    .inv_bc1 = (float)(1.0 / (1.0 - pow(0.9, 4))), .inv_bc2 = (float)(1.0 / (1.0 - pow(0.95, 4)))};
    double worst = 0.0;
    for (int j = 0; j < N; j++) {
        double wd = j < DECAYED ? 0.1 : 0.0, gj = (double)g[j] * s.clip;
        double mj = s.beta1 * (double)m[j] + (1.0 - s.beta1) * gj;
        double vj = s.beta2 * (double)v[j] + (1.0 - s.beta2) * gj * gj;
        double step = s.lr * (mj * s.inv_bc1 / (sqrt(vj * s.inv_bc2) + s.eps) + wd * p[j]);
        ref[j] = p[j] - step;
    }
    float pb[N];
    memcpy(pb, p, sizeof pb);
    assert_true(adamw_apply(p, m, v, g, 0, DECAYED, 0.1f, &s)); /* thread 0: a decayed tensor, then the */
    assert_true(adamw_apply(p, m, v, g, DECAYED, CUT, 0.0f, &s)); /* start of one without decay */
    assert_true(adamw_apply(p, m, v, g, CUT, N, 0.0f, &s));       /* thread 1 */
    for (int j = 0; j < N; j++) {
        double tol = fabs(ref[j]) + fabs(ref[j] - pb[j]);
        worst = fmax(worst, fabs(p[j] - ref[j]) / tol);
    }
    print_message("AdamW within %.1e of the double step (of a weight plus its step)\n", worst);
    assert_true(worst <= 1e-6);

    g[N - 1] = NAN; /* in the tail */
    assert_false(adamw_apply(p, m, v, g, CUT, N, 0.0f, &s));
    assert_true(isnan(p[N - 1]));
    free(p), free(m), free(v), free(g), free(o1), free(o2), free(ref);
}

/* The in-memory model and the one loaded back from its checkpoint run to the same bits. */
static void check_save_reload(bool attn_only) {
    lp_config c = tiny_config(attn_only);
    lp_model *m, *back;
    assert_int_equal(lp_train_model_new(&m, &c, 3), LP_OK);
    size_t np;
    float *p = lp_train_params(m, &np);
    lp_rng rng;
    lp_rng_seed(&rng, 4);
    for (size_t i = 0; i < np; i++) p[i] += 0.1f * normal(&rng); /* biases and norms away from 0 and 1 */
    char *dir = make_temp_dir(), path[600];
    snprintf(path, sizeof path, "%s/ckpt", dir);
    if (lp_train_save(m, path)) fail_msg("%s", lp_errmsg());
    if (lp_model_load(&back, path, NULL)) fail_msg("%s", lp_errmsg());
    assert_null(lp_train_params(back, NULL));
    int ids[8] = {1, 5, 9, 31, 0, 7, 7, 2};
    lp_run *r1, *r2;
    assert_int_equal(lp_run_new(&r1, m, ids, 8), LP_OK);
    assert_int_equal(lp_run_new(&r2, back, ids, 8), LP_OK);
    lp_view v1, v2;
    assert_int_equal(lp_run_view(r1, LP_ACT_LOGITS, 0, -1, &v1), LP_OK);
    assert_int_equal(lp_run_view(r2, LP_ACT_LOGITS, 0, -1, &v2), LP_OK);
    assert_memory_equal(v1.data, v2.data, (size_t)8 * c.vocab * sizeof(float));
    lp_run_free(r1);
    lp_run_free(r2);
    lp_model_free(back);
    lp_model_free(m);
    rm_tree(dir);
}

static void test_saved_checkpoint_reloads_to_identical_logits(void **state) {
    (void)state;
    check_save_reload(false);
}

static void test_saved_attn_only_checkpoint_reloads_to_identical_logits(void **state) {
    (void)state;
    check_save_reload(true);
}

/* A checkpoint written by `train` (attention-only, so saved as a GPT-2 whose MLPs output
 * zero), read as transformers' GPT2LMHeadModel reads it: the float64 reference
 * (tests/fixtures/reference.py mirrors its modeling code and config keys) gives loupe's logits. */
static void test_trained_checkpoint_matches_the_gpt2_reference(void **state) {
    (void)state;
    lp_model *m;
    if (lp_model_load(&m, "tests/fixtures/trained_attn_only", NULL)) fail_msg("%s", lp_errmsg());
    double worst = reference_logit_error(m, "tests/fixtures/trained_attn_only.json");
    print_message("trained checkpoint vs the GPT2LMHeadModel reference: max |logit difference| %.2e\n", worst);
    assert_true(worst >= 0 && worst < 1e-4);
    lp_model_free(m);
}

/* ---- BERT ---- */

/* What the committed encoders must reach (measured: see the README's "The bundled encoders"). */
#define ENCODER_MLM_MIN 0.55 /* measured 58.3% */
#define ENCODER_POLARITY_MIN 0.97 /* each kind of sentence; measured: see the test */

/* Examples LENGTH, LABEL, ids of a masked LM: [CLS] (2), n tokens of the 7-cycle, [SEP] (3). */
static int *cycle_examples(int count, int n, uint64_t seed, size_t *len) {
    static const int cycle[7] = {5, 9, 11, 14, 6, 17, 20};
    int *d = malloc((size_t)count * (n + 4) * sizeof *d);
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    size_t at = 0;
    for (int e = 0; e < count; e++) {
        int shift = (int)(lp_rng_uniform(&rng) * 7);
        d[at++] = n + 2, d[at++] = -1, d[at++] = 2;
        for (int i = 0; i < n; i++) d[at++] = cycle[(i + shift) % 7];
        d[at++] = 3;
    }
    *len = at;
    return d;
}

static lp_config bert_config(lp_head_kind head) {
    lp_config c = tiny_config(false);
    c.n_ctx = 16;
    c.head = head;
    c.n_labels = head == LP_HEAD_CLASSIFIER ? 2 : 0;
    return c;
}

static lp_train_options bert_options(int steps) {
    lp_train_options o = small_options(steps);
    o.T = 10;
    o.mask_id = 4;
    o.n_special = 5;
    return o;
}

/* A masked token of a cycle follows from its neighbours: the held-out loss falls from
 * ln 32 = 3.5 past ln 7 = 1.95, where a model that knows the cycle's tokens but not their
 * order stops (it sits there for the first few hundred steps; measured 0.90 at step 1500). */
static void test_bert_masked_lm_learns_a_pattern(void **state) {
    (void)state;
    lp_config c = bert_config(LP_HEAD_MLM);
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 3), LP_OK);
    size_t n, nh;
    int *train = cycle_examples(256, 8, 1, &n), *held = cycle_examples(32, 8, 2, &nh);
    lp_train_options o = bert_options(1500);
    curve cv = {0};
    if (lp_train(m, train, n, held, nh, &o, record, &cv)) fail_msg("%s", lp_errmsg());
    print_message("bert masked LM: loss %.4f -> %.4f (held-out %.4f) in %d steps\n", cv.first, cv.last, cv.eval_last,
                  cv.steps);
    assert_true(cv.first > 2.5);
    assert_true(cv.eval_last < 1.3);
    free(train);
    free(held);
    lp_model_free(m);
}

/* A classifier learns whether a token is in the sequence: label 1 when one of the 8 tokens
 * of [CLS] x x x x x x x x [SEP] is 5 (the others are 6..31), which [CLS] must gather by
 * attention. (Whether the last token repeats the first, a comparison, it learns too, but
 * slowly: held-out loss 0.55 after 3000 steps.) */
static void test_bert_classifier_learns_a_label(void **state) {
    (void)state;
    lp_config c = bert_config(LP_HEAD_CLASSIFIER);
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 3), LP_OK);
    int *d[2];
    size_t n[2];
    for (int k = 0; k < 2; k++) {
        enum { COUNT = 512 };
        d[k] = malloc(COUNT * 12 * sizeof *d[k]);
        lp_rng rng;
        lp_rng_seed(&rng, 10 + k);
        size_t at = 0;
        for (int e = 0; e < COUNT; e++) {
            int label = e % 2, *row = d[k] + at;
            row[0] = 10, row[1] = label, row[2] = 2, row[11] = 3;
            for (int i = 3; i < 11; i++) row[i] = 6 + (int)(lp_rng_uniform(&rng) * 26);
            if (label) row[3 + (int)(lp_rng_uniform(&rng) * 8)] = 5;
            at += 12;
        }
        n[k] = at;
    }
    lp_train_options o = bert_options(600);
    curve cv = {0};
    if (lp_train(m, d[0], n[0], d[1], n[1], &o, record, &cv)) fail_msg("%s", lp_errmsg());
    print_message("bert classifier: loss %.4f -> %.4f (held-out %.4f) in %d steps\n", cv.first, cv.last, cv.eval_last,
                  cv.steps);
    assert_true(cv.first > 0.6);
    assert_true(cv.eval_last < 0.1);
    free(d[0]);
    free(d[1]);
    lp_model_free(m);
}

/* Refused: an example whose label does not fit the head, data that ends inside an example,
 * a batch without a target, masking options outside the vocabulary. */
static void test_bert_refuses_bad_examples(void **state) {
    (void)state;
    lp_config c = bert_config(LP_HEAD_CLASSIFIER);
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 3), LP_OK);
    lp_train_options o = bert_options(5);
    o.eval_every = 0;
    int bad_label[] = {3, 2, 2, 7, 3}, truncated[] = {3, 1, 2, 7, 3, 4, 0, 2}, ok[] = {3, 1, 2, 7, 3};
    assert_int_equal(lp_train(m, bad_label, 5, NULL, 0, &o, NULL, NULL), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "label 2"));
    assert_int_equal(lp_train(m, truncated, 8, NULL, 0, &o, NULL, NULL), LP_EINVAL);
    int tgt[3] = {-1, -1, -1};
    double loss;
    assert_int_equal(lp_train_encoder_loss(m, ok + 2, tgt, 1, 3, &loss, NULL), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "no target"));
    assert_int_equal(lp_train(m, ok, 5, NULL, 0, &o, NULL, NULL), LP_OK);
    lp_model_free(m);
    c = bert_config(LP_HEAD_MLM);
    assert_int_equal(lp_train_model_new(&m, &c, 3), LP_OK);
    int mlm[] = {3, -1, 2, 7, 3};
    o.mask_id = c.vocab;
    assert_int_equal(lp_train(m, mlm, 5, NULL, 0, &o, NULL, NULL), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "mask_id"));
    lp_model_free(m);
}

/* Saved as BertForMaskedLM / BertForSequenceClassification and loaded by loupe's BERT
 * loader: the same function, bit for bit, and the classifier's labels. */
static void test_saved_bert_reloads_to_identical_logits(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        lp_config c = bert_config(k ? LP_HEAD_CLASSIFIER : LP_HEAD_MLM);
        lp_model *m, *back;
        assert_int_equal(lp_train_model_new(&m, &c, 9), LP_OK);
        size_t np;
        float *p = lp_train_params(m, &np);
        lp_rng rng;
        lp_rng_seed(&rng, 4);
        for (size_t i = 0; i < np; i++) p[i] += 0.1f * normal(&rng);
        static const char *const labels[] = {"no", "yes"};
        if (k) assert_int_equal(lp_train_set_labels(m, labels, 2), LP_OK);
        char *dir = make_temp_dir(), path[600];
        snprintf(path, sizeof path, "%s/ckpt", dir);
        if (lp_train_save(m, path)) fail_msg("%s", lp_errmsg());
        if (lp_model_load(&back, path, NULL)) fail_msg("%s", lp_errmsg());
        assert_string_equal(lp_model_config(back)->arch, k ? "BertForSequenceClassification" : "BertForMaskedLM");
        if (k) assert_string_equal(lp_model_label(back, 1), "yes");
        int ids[8] = {2, 5, 9, 31, 4, 7, 7, 3};
        lp_run *r1, *r2;
        assert_int_equal(lp_run_new(&r1, m, ids, 8), LP_OK);
        assert_int_equal(lp_run_new(&r2, back, ids, 8), LP_OK);
        int rows = k ? 1 : 8, width = k ? 2 : c.vocab;
        assert_memory_equal(lp_run_logits(r1, 0), lp_run_logits(r2, 0), (size_t)rows * width * sizeof(float));
        lp_run_free(r1);
        lp_run_free(r2);
        lp_model_free(back);
        lp_model_free(m);
        rm_tree(dir);
    }
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int encode_text(const lp_model *m, const char *text, int *ids, int cap) {
    int n = 0;
    if (lp_tokenizer_encode(lp_model_tokenizer(m), text, strlen(text), true, ids, cap, &n)) fail_msg("%s", lp_errmsg());
    return n;
}

/* The committed encoders (models/encoder, `make encoder-model`); NULL when absent. */
static bool load_committed(lp_model **mlm, lp_model **cls) {
    if (!lp_dir_exists("models/encoder/mlm") || !lp_dir_exists("models/encoder/polarity")) return false;
    if (lp_model_load(mlm, "models/encoder/mlm", NULL) || lp_model_load(cls, "models/encoder/polarity", NULL))
        fail_msg("%s", lp_errmsg());
    return true;
}

/* The float64 reference (tests/fixtures/encoder_model_reference.py: BertTokenizer's WordPiece
 * and the Hugging Face BERT modules, reading the directories as transformers would) gives
 * loupe's tokens exactly and its logits within 3e-4 of max(1, |x|): measured 5.2e-5 with
 * Haswell's kernels, 7.6e-5 with OpenBLAS's own choice (SkylakeX here), ten times the random
 * fixtures' (tests/test_encoder.c, bound 1e-4). The worst are whole rows of the masked LM
 * (positions 6, 10, 13), off by about 5e-5 each, as if float32's rounding were amplified row
 * by row (the MLM head's LayerNorm of a low-variance row would do it; not traced further). */
static void test_committed_encoders_match_the_reference(void **state) {
    (void)state;
    lp_model *mlm, *cls;
    if (!load_committed(&mlm, &cls)) skip();
    json_error_t err;
    json_t *cases = json_load_file("tests/fixtures/encoder_model.json", 0, &err);
    assert_non_null(cases);
    double worst = 0.0;
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        const char *dir = json_string_value(json_object_get(cs, "model"));
        const lp_model *m = strstr(dir, "mlm") ? mlm : cls;
        int ids[128], n = encode_text(m, json_string_value(json_object_get(cs, "text")), ids, 128);
        json_t *want = json_object_get(cs, "ids"), *logits = json_object_get(cs, "logits");
        assert_int_equal(n, (int)json_array_size(want));
        for (int j = 0; j < n; j++) assert_int_equal(ids[j], (int)json_integer_value(json_array_get(want, (size_t)j)));
        lp_run *r;
        assert_int_equal(lp_run_new(&r, m, ids, n), LP_OK);
        bool rows = json_is_array(json_array_get(logits, 0)); /* (T, V) for the masked LM, (2) for the classifier */
        for (size_t row = 0; row < (rows ? json_array_size(logits) : 1); row++) {
            json_t *jr = rows ? json_array_get(logits, row) : logits;
            const float *got = lp_run_logits(r, (int)row);
            for (size_t j = 0; j < json_array_size(jr); j++) {
                double x = json_number_value(json_array_get(jr, j));
                worst = fmax(worst, fabs(got[j] - x) / fmax(1.0, fabs(x)));
            }
        }
        lp_run_free(r);
    }
    json_decref(cases);
    print_message("committed encoders vs the float64 reference: tokens exact, logits within %.2e\n", worst);
    assert_true(worst < 3e-4);
    lp_model_free(mlm);
    lp_model_free(cls);
}

/* Prompts of the training frames from a stream the training data never drew (its seeds are
 * the corpus seed 1 xor two constants). */
#define HELDOUT_SEED 424242
enum { N_SENTENCES = 200 };

/* The masked LM fills every token of held-out sentences (each masked in turn). */
static void test_committed_masked_lm_fills_held_out_sentences(void **state) {
    (void)state;
    lp_model *mlm, *cls;
    if (!load_committed(&mlm, &cls)) skip();
    lp_ioi_prompt *p = malloc(N_SENTENCES * sizeof *p);
    lp_corpus_ioi_prompts(HELDOUT_SEED, LP_IOI_TRAINING, N_SENTENCES, p);
    int V = lp_model_config(mlm)->vocab, mask = lp_tokenizer_piece_to_id(lp_model_tokenizer(mlm), "[MASK]");
    int right = 0, total = 0, io_right = 0, name = 0;
    for (int k = 0; k < N_SENTENCES; k++) {
        char text[400];
        snprintf(text, sizeof text, "%s%s.", p[k].prompt, p[k].io);
        int ids[128], n = encode_text(mlm, text, ids, 128);
        for (int pos = 1; pos < n - 1; pos++) {
            int keep = ids[pos];
            ids[pos] = mask;
            lp_run *r;
            assert_int_equal(lp_run_new(&r, mlm, ids, n), LP_OK);
            int top = argmax(lp_run_logits(r, pos), V);
            right += top == keep;
            total++;
            if (pos == n - 3) { /* the final name: ... to [MASK] . [SEP] */
                io_right += top == keep;
                char sub[40];
                snprintf(sub, sizeof sub, "%s", p[k].subject + 1);
                for (char *c = sub; *c; c++) *c = (char)(*c | 0x20);
                name += top == keep || top == lp_tokenizer_piece_to_id(lp_model_tokenizer(mlm), sub);
            }
            lp_run_free(r);
            ids[pos] = keep;
        }
    }
    print_message("masked LM: top-1 %d/%d (%.1f%%) over every token of %d held-out IOI sentences; at the final "
                  "name, the IO %d/%d, one of the story's two names %d/%d\n",
                  right, total, 100.0 * right / total, N_SENTENCES, io_right, N_SENTENCES, name, N_SENTENCES);
    assert_true(right >= ENCODER_MLM_MIN * total);
    free(p);
    lp_model_free(mlm);
    lp_model_free(cls);
}

/* The polarity classifier on sentences it never saw (another seed than its training and
 * held-out ones): plain ("The park was nice."), negated ("... was not nice.") and two clauses
 * joined by "but", where the second decides; of those, the ones whose clauses disagree,
 * where counting words is at chance. Every kind must reach ENCODER_POLARITY_MIN. */
static void test_committed_classifier_tells_polarity(void **state) {
    (void)state;
    lp_model *mlm, *cls;
    if (!load_committed(&mlm, &cls)) skip();
    enum { N = 3 * 400 };
    lp_polarity_sentence *p = malloc(N * sizeof *p);
    lp_corpus_polarity_sentences(HELDOUT_SEED, N, p);
    int right[LP_POLARITY_N_KINDS] = {0}, total[LP_POLARITY_N_KINDS] = {0}, contrast = 0, contrast_right = 0;
    for (int k = 0; k < N; k++) {
        int ids[128], n = encode_text(cls, p[k].text, ids, 128);
        lp_run *r;
        assert_int_equal(lp_run_new(&r, cls, ids, n), LP_OK);
        bool ok = argmax(lp_run_logits(r, 0), 2) == p[k].label;
        lp_run_free(r);
        right[p[k].kind] += ok, total[p[k].kind]++;
        if (p[k].kind == LP_POLARITY_BUT && p[k].first != p[k].label) contrast++, contrast_right += ok;
    }
    int all = right[0] + right[1] + right[2];
    print_message("polarity classifier: %d/%d (%.1f%%) of held-out sentences; plain %d/%d, not %d/%d, but %d/%d "
                  "(clauses disagreeing %d/%d)\n",
                  all, N, 100.0 * all / N, right[0], total[0], right[1], total[1], right[2], total[2], contrast_right,
                  contrast);
    for (int k = 0; k < LP_POLARITY_N_KINDS; k++) assert_true(right[k] >= ENCODER_POLARITY_MIN * total[k]);
    assert_true(contrast_right >= ENCODER_POLARITY_MIN * contrast);
    free(p);
    lp_model_free(mlm);
    lp_model_free(cls);
}


/* ---- T5 ---- */

/* A tiny T5 (2 + 2 layers, 2 heads of d_kv 8) over the task's vocabulary. */
static lp_config tiny_t5(bool gated) {
    return (lp_config){.n_layer = 2, .n_head = 2, .d_model = 16, .d_mlp = 24, .vocab = 26, .n_ctx = 32,
                       .cross_attn = true, .mlp = gated ? LP_MLP_GEGLU : LP_MLP_RELU, .rel_buckets = 8,
                       .rel_max_distance = 16};
}

/* B held-out-free task pairs as a batch (train.h's rows of width W = 1 + 2 * Tmax). */
static void t5_batch(int *ids, int *tgt, int B, int Tmax, unsigned rules, uint64_t seed) {
    lp_s2s_spec spec;
    lp_s2s_spec_default(&spec);
    spec.seed = seed;
    spec.rules = rules;
    spec.min_digits = 2;
    spec.max_digits = Tmax - 2;
    lp_s2s_example ex[16];
    assert_true(B <= 16);
    assert_int_equal(lp_s2s_examples(&spec, LP_S2S_TRAIN, (size_t)B, ex), LP_OK);
    int W = 1 + 2 * Tmax;
    for (int b = 0; b < B; b++) {
        int *r = ids + (size_t)b * W, *t = tgt + (size_t)b * W, S, T;
        for (int i = 0; i < W; i++) r[i] = t[i] = -1;
        lp_s2s_ids(&ex[b], r + 1, &S, NULL, NULL);
        r[0] = S;
        lp_s2s_ids(&ex[b], NULL, NULL, t + 1 + S, &T);
    }
}

/* lp_train's data for a T5, as `train --arch t5` makes it: n training pairs and 3% of n
 * held-out ones. */
static void t5_data(int n, unsigned rules, int min_digits, int max_digits, int **d, size_t *len, int **h,
                    size_t *hlen) {
    lp_recipe r;
    lp_recipe_default_seq2seq(&r);
    r.corpus.seed = 9;
    r.examples = n;
    r.heldout = 0.03;
    r.s2s.rules = rules;
    r.s2s.min_digits = min_digits;
    r.s2s.max_digits = max_digits;
    if (lp_recipe_seq2seq_data(&r, d, len, h, hlen)) fail_msg("%s", lp_errmsg());
}

/* The trainer's gradient of a batch is lp_grad_seq2seq_seeded's summed over its rows' runs
 * (cross-entropy's dlogits = (softmax - onehot) / targets), and, on the gated (smooth)
 * feed-forward, central differences of the loss for every tensor's largest coordinate and
 * two drawn ones. Worst measured: see the printed line. */
static void check_t5_gradients(bool gated) {
    lp_config c = tiny_t5(gated);
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 7), LP_OK);
    size_t np;
    float *p = lp_train_params(m, &np);
    /* HF's N(0, 1) embeddings and lm_head make logits of std sqrt(d_model) and a loss of 10 or
     * more, whose float rounding drowns small coordinates' differences: a fifth of them here. */
    for (size_t i = 0; i < 2 * (size_t)c.vocab * c.d_model; i++) p[i] *= 0.2f;
    enum { B = 2, TM = 6, W = 1 + 2 * TM };
    int ids[B * W], tgt[B * W], targets = 0;
    t5_batch(ids, tgt, B, TM, 7u, 3);
    for (int i = 0; i < B * W; i++) targets += tgt[i] >= 0;
    float *g = malloc(np * sizeof *g);
    double loss;
    assert_int_equal(lp_train_encoder_loss(m, ids, tgt, B, W, &loss, g), LP_OK);
    assert_true(isfinite(loss) && loss > 0);

    /* the same through the public backward, run by run */
    lp_t5_grads *pg;
    assert_int_equal(lp_t5_grads_new(&pg, m), LP_OK);
    assert_int_equal(pg->n, np);
    const lp_config *mc = lp_model_config(m);
    int V = mc->vocab;
    for (int b = 0; b < B; b++) {
        const int *r = ids + b * W, *t = tgt + b * W + 1 + r[0];
        int S = r[0], T = 0, dec[W];
        while (1 + S + T < W && t[T] >= 0) T++;
        dec[0] = mc->start_id;
        for (int k = 1; k < T; k++) dec[k] = t[k - 1];
        lp_run *run;
        assert_int_equal(lp_run_new_seq2seq(&run, m, r + 1, S, dec, T), LP_OK);
        float *dl = calloc((size_t)T * V, sizeof *dl);
        for (int k = 0; k < T; k++) {
            const float *lg = lp_run_logits(run, k);
            double mx = lg[0], sum = 0;
            for (int j = 1; j < V; j++) mx = fmax(mx, lg[j]);
            for (int j = 0; j < V; j++) sum += exp(lg[j] - mx);
            for (int j = 0; j < V; j++) dl[k * V + j] = (float)(exp(lg[j] - mx) / sum / targets);
            dl[k * V + t[k]] -= 1.0f / targets;
        }
        assert_int_equal(lp_grad_seq2seq_seeded(NULL, NULL, pg, run, dl), LP_OK);
        free(dl);
        lp_run_free(run);
    }
    double worst_b = 0, scale_b = 0;
    for (size_t i = 0; i < np; i++) {
        worst_b = fmax(worst_b, fabs(g[i] - pg->block[i]));
        scale_b = fmax(scale_b, fabs(pg->block[i]));
    }
    lp_t5_grads_free(pg);
    assert_true(worst_b <= 1e-6 * scale_b);

    int nt = lp_train_tensors(mc, NULL, 0);
    lp_param_tensor *t = malloc((size_t)nt * sizeof *t);
    lp_train_tensors(mc, t, nt);
    assert_int_equal(t[nt - 1].offset + t[nt - 1].size, np);
    double worst = 0;
    const char *worst_name = "";
    int within_noise = 0;
    lp_rng rng;
    lp_rng_seed(&rng, 5);
    fd_targets = tgt;
    for (int i = 0; gated && i < nt; i++) {
        size_t big = 0;
        double scale = 0;
        for (size_t j = 0; j < t[i].size; j++)
            if (fabs(g[t[i].offset + j]) > scale) scale = fabs(g[t[i].offset + j]), big = j;
        assert_true(scale > 0.0); /* every tensor reaches the loss */
        size_t pick[3] = {big, (size_t)(lp_rng_uniform(&rng) * t[i].size), (size_t)(lp_rng_uniform(&rng) * t[i].size)};
        for (int k = 0; k < 3; k++) {
            double se, num = numeric_derivative(m, ids, B, W, p + t[i].offset + pick[k], &se);
            double ana = g[t[i].offset + pick[k]];
            double err = fabs(ana - num) / fmax(fmax(fabs(ana), fabs(num)), 1e-3 * scale);
            /* as the BERT classifier's: a loss of 2 pairs is noisy beside a small coordinate */
            if (err > FD_TOL && fabs(ana - num) <= 4 * se) {
                within_noise++;
                continue;
            }
            if (err > worst) worst = err, worst_name = t[i].name;
            if (err > FD_TOL) fail_msg("%s[%zu]: analytic %.8g, numeric %.8g (error %.2e)", t[i].name, pick[k], ana, num, err);
        }
    }
    fd_targets = NULL;
    print_message("t5 (%s): the backward's block within %.1e of its scale", gated ? "gated" : "relu",
                  worst_b / fmax(scale_b, 1e-30));
    if (gated) print_message("; finite differences' worst %.2e (%s), %d within their noise\n", worst, worst_name,
                             within_noise);
    else print_message(" (no differences across ReLU's kinks)\n");
    free(t);
    free(g);
    lp_model_free(m);
}

static void test_t5_gradients_match_the_backward_and_finite_differences(void **state) {
    (void)state;
    check_t5_gradients(false);
    check_t5_gradients(true);
}

/* A batch that is not one: every such row refused with a message, nothing computed. */
static void test_t5_refuses_bad_batches(void **state) {
    (void)state;
    lp_config c = tiny_t5(false);
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 1), LP_OK);
    enum { B = 1, TM = 5, W = 1 + 2 * TM };
    int ids[W], tgt[W];
    double loss;
    t5_batch(ids, tgt, B, TM, 1u, 1);
    ids[0] = 0; /* no source */
    assert_int_equal(lp_train_encoder_loss(m, ids, tgt, B, W, &loss, NULL), LP_EINVAL);
    t5_batch(ids, tgt, B, TM, 1u, 1);
    ids[1] = 26; /* outside the vocabulary */
    assert_int_equal(lp_train_encoder_loss(m, ids, tgt, B, W, &loss, NULL), LP_EINVAL);
    t5_batch(ids, tgt, B, TM, 1u, 1);
    tgt[0] = 4; /* a target on the source's length */
    assert_int_equal(lp_train_encoder_loss(m, ids, tgt, B, W, &loss, NULL), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "target"));
    t5_batch(ids, tgt, B, TM, 1u, 1);
    for (int i = 0; i < W; i++) tgt[i] = -1;
    assert_int_equal(lp_train_encoder_loss(m, ids, tgt, B, W, &loss, NULL), LP_EINVAL);
    assert_int_equal(lp_train_loss(m, ids, 1, 4, &loss, NULL), LP_EINVAL); /* a GPT-2's loss */
    lp_config tied = c;
    tied.tied_unembed = true;
    lp_model *bad;
    assert_int_equal(lp_train_model_new(&bad, &tied, 1), LP_EINVAL);
    lp_model_free(m);
}

static lp_train_options t5_options(int steps) {
    lp_train_options o = small_options(steps);
    o.T = 6;
    o.lr = 3e-3f;
    o.weight_decay = 0.01f;
    o.eval_every = 0;
    return o;
}

/* Copying 2..4 digits as words: the loss falls by more than half in 80 steps. */
static void test_t5_training_reduces_the_loss(void **state) {
    (void)state;
    lp_config c = tiny_t5(false);
    c.d_model = 32;
    lp_model *m;
    assert_int_equal(lp_train_model_new(&m, &c, 1), LP_OK);
    size_t n, nh;
    int *d, *h;
    t5_data(2000, 1u << LP_S2S_COPY, 2, 4, &d, &n, &h, &nh);
    lp_train_options o = t5_options(80);
    o.eval_every = 80;
    curve cv = {0};
    if (lp_train(m, d, n, h, nh, &o, record, &cv)) fail_msg("%s", lp_errmsg());
    print_message("t5: loss %.3f -> %.3f (held-out %.3f) in %d steps\n", cv.first, cv.last, cv.eval_last, cv.steps);
    assert_int_equal(cv.steps, 80);
    assert_true(cv.last < 0.5 * cv.first);
    assert_true(cv.eval_last < 0.5 * cv.first);
    free(d);
    free(h);
    lp_model_free(m);
}

static int stop_at_10(const lp_train_progress *p, void *ctx) {
    (void)ctx;
    return p->step == 10;
}

/* Stopped at step 10, saved (weights and optimiser state), loaded into a new model and
 * resumed to 20: the same bits as 20 steps straight, on two threads. */
static void test_t5_resume_is_bit_identical(void **state) {
    (void)state;
    lp_config c = tiny_t5(false);
    size_t n, nh;
    int *d, *h;
    t5_data(500, 7u, 2, 4, &d, &n, &h, &nh);
    free(h);
    lp_train_options o = t5_options(20);
    o.threads = 2;
    lp_model *straight, *first, *second;
    assert_int_equal(lp_train_model_new(&straight, &c, 2), LP_OK);
    assert_int_equal(lp_train(straight, d, n, NULL, 0, &o, NULL, NULL), LP_OK);

    assert_int_equal(lp_train_model_new(&first, &c, 2), LP_OK);
    lp_train_state st;
    assert_int_equal(lp_train_state_new(&st, first), LP_OK);
    assert_int_equal(lp_train_resume(first, &st, d, n, NULL, 0, &o, stop_at_10, NULL), LP_ECANCEL);
    assert_int_equal(st.step, 10);
    char *dir = make_temp_dir(), path[600];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if (lp_train_save(first, dir) || lp_train_state_save(&st, first, path)) fail_msg("%s", lp_errmsg());
    lp_train_state_free(&st);

    assert_int_equal(lp_train_model_new(&second, &c, 99), LP_OK); /* other weights, all replaced */
    assert_int_equal(lp_train_state_new(&st, second), LP_OK);
    if (lp_train_load_params(second, dir) || lp_train_state_load(&st, second, path, 10)) fail_msg("%s", lp_errmsg());
    assert_int_equal(lp_train_resume(second, &st, d, n, NULL, 0, &o, NULL, NULL), LP_OK);
    size_t np;
    const float *a = lp_train_params(straight, &np), *b = lp_train_params(second, NULL);
    assert_memory_equal(a, b, np * sizeof *a);
    lp_train_state_free(&st);
    lp_model_free(straight);
    lp_model_free(first);
    lp_model_free(second);
    free(d);
    rm_tree(dir);
}

/* Saved with the task's tokenizer, the directory loads as a T5ForConditionalGeneration whose
 * logits and cross-attention are the in-memory model's, bit for bit. */
static void test_saved_t5_reloads_to_identical_logits(void **state) {
    (void)state;
    lp_config c = tiny_t5(true);
    lp_model *m, *back;
    assert_int_equal(lp_train_model_new(&m, &c, 3), LP_OK);
    size_t np;
    float *p = lp_train_params(m, &np);
    lp_rng rng;
    lp_rng_seed(&rng, 4);
    for (size_t i = 0; i < np; i++) p[i] += 0.1f * normal(&rng); /* norms away from 1 */
    char *dir = make_temp_dir();
    if (lp_train_save(m, dir) || lp_s2s_tokenizer_save(dir, NULL)) fail_msg("%s", lp_errmsg());
    if (lp_model_load(&back, dir, NULL)) fail_msg("%s", lp_errmsg());
    assert_null(lp_train_params(back, NULL));
    const lp_config *bc = lp_model_config(back);
    assert_string_equal(bc->arch, "T5ForConditionalGeneration");
    assert_int_equal(bc->mlp, LP_MLP_GEGLU);
    assert_false(bc->tied_unembed);
    assert_int_equal(bc->rel_buckets, 8);
    /* the tokenizer writes the ids lp_s2s_ids says */
    lp_s2s_example e = {.rule = LP_S2S_REVERSE, .n = 3, .digits = {4, 0, 7}, .align = {3, 2, 1}};
    int src[8], tgt[8], S, T, got[16], n;
    lp_s2s_ids(&e, src, &S, tgt, &T);
    assert_int_equal(lp_tokenizer_encode(lp_model_tokenizer(back), "reverse 4 0 7", 13, true, got, 16, &n), LP_OK);
    assert_int_equal(n, S);
    assert_memory_equal(got, src, (size_t)S * sizeof *got);
    assert_int_equal(lp_tokenizer_encode(lp_model_tokenizer(back), "seven zero four", 15, true, got, 16, &n), LP_OK);
    assert_int_equal(n, T);
    assert_memory_equal(got, tgt, (size_t)T * sizeof *got);
    int dec[4] = {0, tgt[0], tgt[1], tgt[2]};
    lp_run *r1, *r2;
    assert_int_equal(lp_run_new_seq2seq(&r1, m, src, S, dec, 4), LP_OK);
    assert_int_equal(lp_run_new_seq2seq(&r2, back, src, S, dec, 4), LP_OK);
    lp_view v1, v2;
    assert_int_equal(lp_run_view(r1, LP_ACT_LOGITS, 0, -1, &v1), LP_OK);
    assert_int_equal(lp_run_view(r2, LP_ACT_LOGITS, 0, -1, &v2), LP_OK);
    assert_memory_equal(v1.data, v2.data, (size_t)4 * c.vocab * sizeof(float));
    assert_int_equal(lp_run_view(r1, LP_ACT_CROSS_PATTERN, 1, -1, &v1), LP_OK);
    assert_int_equal(lp_run_view(r2, LP_ACT_CROSS_PATTERN, 1, -1, &v2), LP_OK);
    assert_memory_equal(v1.data, v2.data, (size_t)c.n_head * 4 * S * sizeof(float));
    lp_run_free(r1);
    lp_run_free(r2);
    lp_model_free(back);
    lp_model_free(m);
    rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weight_gradients_match_finite_differences),
        cmocka_unit_test(test_attn_only_gradients_match_finite_differences),
        cmocka_unit_test(test_batch_loss_and_gradient_match_its_sequences),
        cmocka_unit_test(test_bert_gradients_match_finite_differences),
        cmocka_unit_test(test_tiny_model_learns_a_pattern),
        cmocka_unit_test(test_training_stops_when_it_diverges),
        cmocka_unit_test(test_training_is_reproducible_for_a_seed),
        cmocka_unit_test(test_schedule_warms_up_then_decays_to_min),
        cmocka_unit_test(test_optimiser_step_matches_adamw_in_double),
        cmocka_unit_test(test_saved_checkpoint_reloads_to_identical_logits),
        cmocka_unit_test(test_saved_attn_only_checkpoint_reloads_to_identical_logits),
        cmocka_unit_test(test_trained_checkpoint_matches_the_gpt2_reference),
        cmocka_unit_test(test_bert_masked_lm_learns_a_pattern),
        cmocka_unit_test(test_bert_classifier_learns_a_label),
        cmocka_unit_test(test_bert_refuses_bad_examples),
        cmocka_unit_test(test_saved_bert_reloads_to_identical_logits),
        cmocka_unit_test(test_committed_encoders_match_the_reference),
        cmocka_unit_test(test_committed_masked_lm_fills_held_out_sentences),
        cmocka_unit_test(test_committed_classifier_tells_polarity),
        cmocka_unit_test(test_t5_gradients_match_the_backward_and_finite_differences),
        cmocka_unit_test(test_t5_refuses_bad_batches),
        cmocka_unit_test(test_t5_training_reduces_the_loss),
        cmocka_unit_test(test_t5_resume_is_bit_identical),
        cmocka_unit_test(test_saved_t5_reloads_to_identical_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
