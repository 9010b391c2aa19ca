/* bench_train: how fast the default recipe trains (make bench), set beside what this
 * machine's sgemm allows.
 *   bench_train [SECONDS]    seconds of each timed run (default 10)
 *
 * Each thread count gets a short warm-up run, then a timed run sized from it, clocked from
 * the end of its second step to its last: its mean rate, its median step (what issue 16's
 * target is judged by, as the forward's by its median run) and, under load, the rate its
 * CPU time gives. The corpus is random ids: the cost of
 * a step does not depend on the tokens.
 *
 * FLOPs are the model's, as MFU counts them: 6 per matmul parameter per token (forward,
 * then the gradients of inputs and weights) plus attention over the causal half of the
 * T x T square. The engine does more than that (its backward takes the full square), so
 * the share of the roofline is of useful work. The roofline is the best one-thread sgemm
 * rate on the shapes training runs (the layers' products and weight gradients over a
 * micro-batch's 512 rows, the loss head 128 rows at a time: train.c's MICRO_ROWS and
 * HEAD_ROWS), times the shards run in parallel: BLAS runs on one thread inside each. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "loupe/error.h"
#include "loupe/model.h"
#include "loupe/recipe.h"
#include "loupe/train.h"
#include "sgemm_rate.h"


static void die(const char *what) {
    fprintf(stderr, "bench_train: %s: %s\n", what, lp_errmsg());
    exit(1);
}

/* ---- the sgemm roofline, measured as bench's: the best time of a few reps ---- */

/* One thread's best rate over the shapes a step runs; rows: a micro-batch's. */
static double roofline(const lp_config *c, int rows) {
    int d = c->d_model, dm = c->attn_only ? d : c->d_mlp, V = c->vocab;
    const shape all[] = {
        {rows, d, d, 0, 0},    /* q, k, v, o of a micro-batch */
        {rows, dm, d, 0, 0},   /* MLP up */
        {rows, d, dm, 0, 0},   /* MLP down */
        {128, V, d, 0, 1},     /* logits of the loss head's 128 rows */
        {128, d, V, 0, 0},     /* their gradient back to the final norm */
        {V, d, 128, 1, 0},     /* wte's gradient from them */
        {d, dm, rows, 1, 0},   /* a weight gradient (c_fc) */
    };
    int n = (int)(sizeof all / sizeof all[0]);
    double best = 0.0;
    char detail[512];
    size_t at = 0;
    openblas_set_num_threads(1);
    for (int i = 0; i < n; i++) {
        double g = sgemm_rate(&all[i], 0.2, 3);
        if (g > best) best = g;
        at += (size_t)snprintf(detail + at, sizeof detail - at, "%s%s%dx%dx%d%s %.0f", i ? ", " : "",
                               all[i].transa ? "T" : "", all[i].M, all[i].N, all[i].K, all[i].transb ? "T" : "", g);
    }
    printf("sgemm roofline, one thread: %.1f GFLOP/s (best of %d training shapes, MxNxK GFLOP/s: %s)\n", best, n,
           detail);
    return best;
}

/* ---- training ---- */

/* FLOPs per training token, printed as its formula. */
static double train_flops(const lp_config *c, int T) {
    double d = c->d_model, dm = c->d_mlp, L = c->n_layer, t_avg = (T + 1) / 2.0;
    double per_layer = d * 3 * d + d * d + (c->attn_only ? 0.0 : 2 * d * dm);
    double matmul = L * per_layer + (double)c->vocab * d;
    double attention = L * 3 * 2 * 2 * t_avg * d; /* fwd + bwd, QK^T and AV, over the causal half */
    printf("FLOP/token = 6 x %.0f matmul params (%d x (d*3d + d*d%s) + V*d) + %.0f attention "
           "(%d layers x 3 fwd+bwd x 2x2 QK,AV x T_avg %.1f x d %d) = %.2f MFLOP\n",
           matmul, c->n_layer, c->attn_only ? "" : " + 2*d*d_mlp", attention, c->n_layer, t_avg, c->d_model,
           (6 * matmul + attention) / 1e6);
    return 6 * matmul + attention;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* A run's clock from the end of its second step (the first ones fault in a new run's
 * activations) to the end of its last: wall and CPU (the process's threads together) seconds,
 * and each step's wall time (for their median). */
typedef struct {
    int from, steps, n_step;
    double wall, cpu, last, *step;
} timing;

static int clock_steps(const lp_train_progress *p, void *ctx) {
    timing *t = ctx;
    double now = now_s();
    if (p->step > t->from) t->step[t->n_step++] = now - t->last;
    t->last = now;
    if (p->step == t->from) {
        t->wall = -now;
        t->cpu = -cpu_s();
    } else if (p->step == t->steps) {
        t->wall += now;
        t->cpu += cpu_s();
    }
    return 0;
}

static timing train_run(lp_model *m, const int *data, size_t n, lp_train_options o, int steps) {
    timing t = {.from = 2, .steps = steps, .step = malloc((size_t)steps * sizeof(double))};
    if (!t.step) {
        fprintf(stderr, "bench_train: out of memory\n");
        exit(1);
    }
    o.steps = steps;
    if (lp_train(m, data, n, NULL, 0, &o, clock_steps, &t)) die("training");
    return t;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 10.0;
    if (argc > 2 || !(secs > 0.0)) {
        fprintf(stderr, "usage: bench_train [SECONDS]\n");
        return 2;
    }
    lp_recipe r;
    lp_recipe_default(&r);
    lp_config cfg = r.model;
    cfg.vocab = r.vocab;
    lp_model *m;
    if (lp_train_model_new(&m, &cfg, r.init_seed)) die("making the model");
    const lp_config *c = lp_model_config(m);

    size_t n = 400000;
    int *data = malloc(n * sizeof *data);
    if (!data) {
        fprintf(stderr, "bench_train: out of memory for the data\n");
        return 1;
    }
    uint64_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        data[i] = (int)((x >> 33) % (uint64_t)c->vocab);
    }

    lp_train_options o = r.train;
    o.eval_every = 0;
    int B = o.B, T = o.T, threads = o.threads ? o.threads : 1;
    double flops = train_flops(c, T);
    double one = roofline(c, T >= 512 ? T : 512 / T * T); /* train.c's micro-batch: whole sequences */
    double load;
    if (getloadavg(&load, 1) == 1 && load > 0.5)
        printf("note: load average %.2f before the runs: other work shares the cores\n", load);

    int counts[] = {threads, 1};
    for (int i = 0; i < (threads > 1 ? 2 : 1); i++) {
        o.threads = counts[i];
        timing warm = train_run(m, data, n, o, 3);
        int steps = 2 + (int)(secs / warm.wall);
        if (steps < 7) steps = 7;
        free(warm.step);
        timing t = train_run(m, data, n, o, steps);
        double tok = (double)(steps - 2) * B * T, rate = tok / t.wall, gflops = rate * flops / 1e9;
        double roof = one * o.threads, med = median_of(t.step, t.n_step), med_gflops = (double)B * T / med * flops / 1e9;
        printf("train (default recipe: %d layers, d %d, %d heads, vocab %d, batch %d x %d): %d thread%s %.1fk tok/s "
               "= %.1f GFLOP/s (%d steps in %.1f s) | roofline %d x %.0f GFLOP/s | %.0f%% of roofline\n",
               c->n_layer, c->d_model, c->n_head, c->vocab, B, T, o.threads, o.threads == 1 ? "" : "s", rate / 1e3,
               gflops, steps - 2, t.wall, o.threads, one, 100.0 * gflops / roof);
        /* The median step, as the forward's figures are medians of their runs: a step that
         * waited for a core another tenant held moves the mean, not the median. */
        printf("  median step %.1f ms (fastest %.1f): %.1f GFLOP/s = %.0f%% of roofline (target >= 50%%: %s)\n",
               1e3 * med, 1e3 * t.step[0], med_gflops, 100.0 * med_gflops / roof,
               med_gflops >= 0.5 * roof ? "met" : "MISSED");
        free(t.step);
        /* On a shared machine the run waits for the cores: its CPU time is what it had of
         * them, so tokens per CPU-second times its threads is its rate on cores of its own
         * (a little under that: the other work shares the caches and memory too). */
        if (load > 0.5 && t.cpu > 0.0) {
            double own = tok / t.cpu * o.threads;
            printf("  by its CPU time (%.1f s): %.1fk tok/s = %.0f%% of roofline on cores of its own\n", t.cpu,
                   own / 1e3, 100.0 * own * flops / 1e9 / roof);
        }
    }
    free(data);
    lp_model_free(m);
    return 0;
}
