/* bench: how fast the engine runs a model (make bench: GPT-2 small, Pythia-160M and BERT-base,
 * random weights), set beside what this machine's sgemm allows.
 *   bench [--quick] [--threads N] [--save-logits FILE] [--compare-logits FILE] [--save-attr FILE] MODEL
 *   bench --check MODEL     exit status 0 when MODEL loads (run.sh: no need to remake it)
 *   bench --attr MODEL      the attribution lines only (to compare builds of the engine)
 *   bench --attr32 MODEL    the T=32 attribution line only, medians of 5 (quicker A/B runs)
 *   bench --record MODEL    recording's share of a run and the first run of a new length only
 *   bench --generate MODEL  generation only, with where a token's time goes (the products alone)
 *   bench --dataset MODEL [--items N]  the dataset path's tokens/s against the forward alone
 *   bench --forward MODEL [--lengths 128,512,1024]  the forward at each length, and generation
 *   bench --gguf HF_DIR FILE.gguf  the GGUF's load time beside HF_DIR's, and its logits against
 *                                  HF_DIR's (FILE made from HF_DIR by mkgguf)
 * Targets: forward within 1.3x of the roofline time at every length, recording (bench --record)
 * within 5% of it (issue 16); load under 100 ms; peak RSS
 * under the weights plus twice the arena (every activation kept) of the longest run made. An encoder (BERT) gets the
 * forward and attribution (bench_encoder_attr), not generation or patching.
 *
 * The roofline is the best sgemm rate measured here on shapes the forward uses; the forward's
 * FLOPs are counted as the engine computes them (attention over the full T x T square). */
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "loupe/attr.h"
#include "loupe/eval.h"
#include "loupe/circuits.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/gguf.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/tokenizer.h"
#include "loupe/unit_stats.h"
#include "arch/model_impl.h"
#include "commands/cmd.h"
#include "kernels/decode.h"
#include "sgemm_rate.h"


/* Where a forward's time goes: this definition of cblas_sgemm takes the engine's calls (an
 * executable's own symbols win over a shared library's) and times them by kind before
 * passing them on to OpenBLAS's. No change to the engine, and it times the real calls. */
enum { GEMM_LINEAR, GEMM_UNEMBED, GEMM_ATTENTION, GEMM_KINDS };
static struct {
    int on;
    int d_head, vocab;        /* to tell the kinds apart by shape */
    double secs[GEMM_KINDS], flops[GEMM_KINDS];
    long calls[GEMM_KINDS];
    pthread_mutex_t lock;
    int running, since_kind;  /* calls running now; the kind of the first of them */
    double since;             /* when the first of them began */
} prof = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef void (*sgemm_fn)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, blasint, blasint, blasint,
                         float, const float *, blasint, const float *, blasint, float, float *, blasint);
static sgemm_fn real_sgemm;

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C,
                 const blasint ldc) {
    if (!real_sgemm) {
        *(void **)&real_sgemm = dlsym(RTLD_NEXT, "cblas_sgemm"); /* POSIX's way to get a function from dlsym */
        if (!real_sgemm) {
            fprintf(stderr, "bench: cannot find OpenBLAS's cblas_sgemm: %s\n", dlerror());
            exit(1);
        }
    }
    if (!prof.on) {
        real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* Attention's heads run on several threads at once (kernels/forward.c): the time is
     * the span while any call runs, counted once, by the kind of the call that opened it. */
    int kind = (K == prof.d_head || N == prof.d_head) ? GEMM_ATTENTION : N == prof.vocab ? GEMM_UNEMBED : GEMM_LINEAR;
    pthread_mutex_lock(&prof.lock);
    if (prof.running++ == 0) {
        prof.since = now_s();
        prof.since_kind = kind;
    }
    prof.flops[kind] += 2.0 * M * N * K;
    prof.calls[kind]++;
    pthread_mutex_unlock(&prof.lock);
    real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    pthread_mutex_lock(&prof.lock);
    if (--prof.running == 0) prof.secs[prof.since_kind] += now_s() - prof.since;
    pthread_mutex_unlock(&prof.lock);
}

static void prof_start(const lp_config *c) {
    memset(prof.secs, 0, sizeof prof.secs);
    memset(prof.flops, 0, sizeof prof.flops);
    memset(prof.calls, 0, sizeof prof.calls);
    prof.d_head = c->d_head;
    prof.vocab = c->vocab;
    prof.on = 1;
}

/* The best sgemm rate over shapes the forward runs (M = tokens, N = outputs, K = inputs):
 * q/k/v/o, MLP up and down at T = 128 and 512, and the unembedding (B transposed). */
static double roofline(const lp_config *c, int quick) {
    int d = c->d_model, dm = c->d_mlp;
    const shape all[] = {{128, d, d, 0, 0},  {128, dm, d, 0, 0}, {128, d, dm, 0, 0},
                         {512, dm, d, 0, 0}, {512, d, dm, 0, 0}, {128, c->vocab, d, 0, 1}};
    int n = (int)(sizeof all / sizeof all[0]) - (c->head == LP_HEAD_CLASSIFIER); /* a classifier has no unembedding */
    double best = 0.0;
    char detail[512];
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        double g = sgemm_rate(&all[i], quick ? 0.1 : 0.3, 3);
        if (g > best) best = g;
        at += (size_t)snprintf(detail + at, sizeof detail - at, "%s%dx%dx%d%s %.0f", i ? ", " : "", all[i].M, all[i].N,
                               all[i].K, all[i].transb ? "T" : "", g);
    }
    printf("sgemm roofline: %.1f GFLOP/s (best of %d shapes, MxNxK GFLOP/s: %s)\n", best, n, detail);
    return best;
}

/* The process's CPU time, all threads: on a shared machine, less skewed than the wall clock. */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The honest roofline for a forward's products: the same sgemm calls the forward makes
 * (q|k|v fused where it is, o, the MLP, the unembedding, on the model's own weights, in
 * order, beta 0), back to back with nothing between them, medians of reps. The roofline's
 * shapes repeat one warm matrix; a forward streams 500 MB of weights that no cache holds,
 * so this is what its products can reach, and the forward's own sgemm time beside it shows
 * what the code between them costs the products. Seconds per forward: linear, unembed. */
static void products_alone(const lp_model *m, int T, int reps, double *lin_s, double *unemb_s) {
    const lp_config *c = lp_model_config(m);
    size_t w = (size_t)(c->d_mlp > 3 * c->d_model ? c->d_mlp : 3 * c->d_model);
    float *x = malloc((size_t)T * w * sizeof *x), *y = malloc((size_t)T * (w > (size_t)c->vocab ? w : (size_t)c->vocab) * sizeof *y);
    double *tl = malloc(2 * (size_t)reps * sizeof *tl), *tu = tl + reps;
    if (!x || !y || !tl) exit(1);
    for (size_t i = 0; i < (size_t)T * w; i++) x[i] = (float)(i % 1000) * 1e-3f - 0.5f;
    for (int r = 0; r < reps; r++) {
        double t = now_s();
        for (int l = 0; l < c->n_layer; l++) {
            const lp_layer *ly = &m->layers[l];
            lp_linear qkv = ly->q;
            bool fused = !ly->q.trans && ly->q.ld == ly->q.out + ly->k.out + ly->v.out && ly->k.w == ly->q.w + ly->q.out;
            if (fused) qkv.out = ly->q.ld;
            const lp_linear *mats[] = {&qkv, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
            for (size_t k = 0; k < sizeof mats / sizeof *mats; k++) {
                if (!mats[k]->w || (fused && (k == 1 || k == 2))) continue;
                lp_linear rows = lp_linear_rows(mats[k], T), *lin = &rows; /* the matrix the forward reads */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, lin->trans ? CblasTrans : CblasNoTrans, T, lin->out, lin->in,
                            1.0f, x, lin->in, lin->w, lin->ld, 0.0f, y, lin->out);
            }
        }
        tl[r] = now_s() - t;
        t = now_s();
        const lp_linear *u = &m->unembed;
        if (u->w)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, u->trans ? CblasTrans : CblasNoTrans, T, u->out, u->in, 1.0f, x,
                        u->in, u->w, u->ld, 0.0f, y, u->out);
        tu[r] = now_s() - t;
    }
    *lin_s = median_of(tl, reps);
    *unemb_s = median_of(tu, reps);
    free(x);
    free(y);
    free(tl);
}

/* FLOPs of a captured run of T tokens, as the engine computes it. */
static double forward_flops(const lp_config *c, int T) {
    double t = T, d = c->d_model, qd = (double)c->n_head * c->d_head, kvd = (double)c->n_kv_head * c->d_head;
    double dm = c->d_mlp, mlp_mats = c->mlp == LP_MLP_SWIGLU ? 3 : 2;
    double linear = 2 * t * (d * qd + 2 * d * kvd + qd * d + mlp_mats * d * dm);
    double attention = (double)c->n_head * 2 * (2 * t * t * c->d_head); /* scores, then pattern @ V */
    double head = c->head == LP_HEAD_CLASSIFIER ? 2 * d * d + 2 * d * c->n_labels  /* pooler, classifier: row 0 */
                  : c->head == LP_HEAD_MLM      ? 2 * t * d * d + 2 * t * d * c->vocab
                                                : 2 * t * d * c->vocab;
    return c->n_layer * (linear + attention) + head;
}

static void die(const char *what) {
    fprintf(stderr, "bench: %s: %s\n", what, lp_errmsg());
    exit(1);
}

/* What a fresh arena's first touch costs (the kernel faulting and zeroing its pages): the
 * engine mallocs one per run, and blocks this large come straight from mmap every time. The
 * cost is linear in the size, so at most 64 MB are touched and the time scaled: the probe
 * must not raise the peak RSS it is measured beside. */
static double first_touch_secs(size_t bytes) {
    size_t probe = bytes < ((size_t)64 << 20) ? bytes : (size_t)64 << 20;
    double t = now_s();
    char *p = malloc(probe);
    if (!p) return 0.0;
    memset(p, 1, probe);
    __asm__ volatile("" : : "r"(p) : "memory"); /* or the compiler drops the malloc, memset and free */
    t = now_s() - t;
    free(p);
    return t * ((double)bytes / probe);
}

typedef struct {
    const char *save, *compare; /* logits of the T=128 run, raw float32 */
    const char *save_attr;      /* the T=32 ig scores, then occlusion's, raw float32 (torch_gpt2.py checks them) */
} logit_files;

/* Saves the logits, or compares them with a run under another OpenBLAS core or thread count:
 * the kernels differ in summation order, so only rounding may differ. */
static void check_logits(const lp_run *r, const logit_files *lf) {
    size_t n = (size_t)lp_run_out_rows(r) * lp_run_out_width(r);
    const float *lg = lp_run_logits(r, 0);
    if (lf->save) {
        FILE *f = fopen(lf->save, "wb");
        if (!f || fwrite(lg, sizeof *lg, n, f) != n || fclose(f)) {
            fprintf(stderr, "bench: cannot write %s\n", lf->save);
            exit(1);
        }
    }
    if (lf->compare) {
        float *ref = malloc(n * sizeof *ref);
        FILE *f = fopen(lf->compare, "rb");
        size_t got = ref && f ? fread(ref, sizeof *ref, n, f) : 0;
        if (f) fclose(f);
        if (got != n) {
            printf("  logits: cannot compare: %s is missing or of another shape\n", lf->compare);
        } else {
            double diff = 0.0, mag = 0.0;
            for (size_t i = 0; i < n; i++) {
                diff = fmax(diff, fabs((double)lg[i] - ref[i]));
                mag = fmax(mag, fabs((double)ref[i]));
            }
            printf("  logits vs the first run's: max |diff| %.2e (logits up to %.2f; tolerance 1e-4: %s)\n", diff, mag,
                   diff <= 1e-4 ? "same" : "DIFFERENT");
        }
        free(ref);
    }
}

/* Median wall time of a captured run of T tokens over reps runs, after one warm-up; prints
 * it beside the roofline and where the time went. */
static void bench_forward(const lp_model *m, int T, int reps, double peak, const logit_files *lf) {
    const lp_config *c = lp_model_config(m);
    int *ids = malloc((size_t)T * sizeof *ids);
    double *times = malloc(2 * (size_t)reps * sizeof *times), *cpu = times + reps;
    if (!ids || !times) exit(1);
    fill_ids(ids, T, c->vocab);
    lp_run *r;
    if (lp_run_new(&r, m, ids, T)) die("forward");
    size_t arena = lp_run_arena_bytes(r);
    lp_run_free(r);
    double touch = first_touch_secs(arena);
    prof_start(c);
    for (int i = 0; i < reps; i++) {
        if (i) lp_run_free(r); /* the last run stays, for its logits */
        double t = now_s(), u = cpu_s();
        if (lp_run_new(&r, m, ids, T)) die("forward");
        times[i] = now_s() - t;
        cpu[i] = cpu_s() - u;
    }
    prof.on = 0;
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    double med = times[reps / 2], flops = forward_flops(c, T), ideal = flops / (peak * 1e9), ratio = med / ideal;
    printf("forward T=%d: %.1f ms (median of %d, best %.1f; CPU %.1f ms, all threads) | %.1f GFLOP | roofline time "
           "%.1f ms | ratio %.2f", T, med * 1e3, reps, times[0] * 1e3, median_of(cpu, reps) * 1e3, flops / 1e9,
           ideal * 1e3, ratio);
    printf(" (target <= 1.3: %s)", ratio <= 1.3 ? "met" : "MISSED");
    printf("\n");
    static const char *const names[GEMM_KINDS] = {"linear", "unembed", "attention"};
    double in_gemm = 0.0;
    printf("  per run: sgemm");
    for (int k = 0; k < GEMM_KINDS; k++) {
        double s = prof.secs[k] / reps;
        in_gemm += s;
        printf("%s %s %.1f ms (%ld calls, %.0f GFLOP/s)", k ? "," : "", names[k], s * 1e3, prof.calls[k] / reps,
               s > 0 ? prof.flops[k] / prof.secs[k] / 1e9 : 0.0);
    }
    printf("; the rest %.1f ms\n", (med - in_gemm) * 1e3);
    if (c->head != LP_HEAD_CLASSIFIER) {
        double lin, un;
        products_alone(m, T, reps, &lin, &un);
        double fl = prof.flops[GEMM_LINEAR] / reps, fu = prof.flops[GEMM_UNEMBED] / reps;
        printf("  the same products alone (the model's weights, in order, nothing between): linear %.1f ms (%.0f "
               "GFLOP/s), unembed %.1f ms (%.0f GFLOP/s): the forward's products take %.2fx that\n",
               lin * 1e3, fl / lin / 1e9, un * 1e3, fu / un / 1e9,
               (prof.secs[GEMM_LINEAR] + prof.secs[GEMM_UNEMBED]) / reps / (lin + un));
    }
    printf("  a fresh %.0f MB arena would cost ~%.1f ms of page faults (4 KB pages); runs reuse (and grow) the last freed arena, so "
           "only a session's first run longer than any before pays it\n",
           arena / 1e6, touch * 1e3);
    if (T == 128) check_logits(r, lf);
    lp_run_free(r);
    free(ids);
    free(times);
}

/* Where a token's time goes: every weight matrix a token reads, through the one-row kernel
 * alone (lp_decode_linear, as decoding calls it; q, k and v apart), fastest of 9 passes,
 * beside a token's median step. */
static void decode_products_alone(const lp_model *m, double step) {
    const lp_config *c = &m->cfg;
    float *x = malloc(sizeof(float) * 65536), *y = malloc(sizeof(float) * (size_t)(c->vocab > 65536 ? c->vocab : 65536));
    if (!x || !y) exit(1);
    for (int i = 0; i < 65536; i++) x[i] = (float)(i % 1000) * 1e-3f - 0.5f;
    double best = 1e30, bytes = 0.0;
    for (int r = 0; r < 9; r++) {
        double t = now_s();
        bytes = 0.0;
        for (int l = 0; l < c->n_layer; l++) {
            const lp_layer *w = &m->layers[l];
            const lp_linear *mats[] = {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down};
            for (size_t k = 0; k < sizeof mats / sizeof *mats; k++)
                if (mats[k]->w) {
                    lp_linear one = lp_linear_one_row(mats[k]); /* the matrix decoding reads */
                    lp_decode_linear(y, x, &one);
                    bytes += 4.0 * mats[k]->in * mats[k]->out;
                }
        }
        lp_decode_linear(y, x, &m->unembed);
        bytes += 4.0 * m->unembed.in * m->unembed.out;
        best = fmin(best, now_s() - t);
    }
    printf("  per token: the products alone %.2f ms (%.0f MB at %.1f GB/s; fastest of 9), the rest of a median step "
           "%.2f ms\n",
           best * 1e3, bytes / 1e6, bytes / best / 1e9, (step - best) * 1e3);
    free(x);
    free(y);
}

/* Greedy decoding through the key/value cache: tokens per second beside the rate at which
 * memory streams as many bytes as the weights here. With profile, where a token's time goes:
 * its products alone (decode_products_alone) and the rest. */
static void bench_generate(const lp_model *m, int n_prompt, int n_new, bool profile) {
    const lp_config *c = lp_model_config(m);
    int *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    if (!prompt) exit(1);
    fill_ids(prompt, n_prompt, c->vocab);
    lp_generator *g;
    if (lp_generator_new(&g, m, n_prompt + n_new)) die("generate");
    const float *logits;
    lp_sampling greedy = {.temperature = 0.0f, .top_p = 1.0f};
    double t0 = now_s();
    if (lp_generator_feed(g, prompt, n_prompt, &logits)) die("generate");
    double t1 = now_s();
    double *step = malloc((size_t)n_new * sizeof *step);
    if (!step) exit(1);
    for (int i = 0; i < n_new; i++) {
        double t = now_s();
        int next = lp_sample(logits, c->vocab, &greedy, NULL);
        if (lp_generator_feed(g, &next, 1, &logits)) die("generate");
        step[i] = now_s() - t;
    }
    double decode = now_s() - t1, bytes = (double)lp_model_weight_bytes(m);
    qsort(step, (size_t)n_new, sizeof *step, cmp_double);
    double bw = stream_gbs(bytes), share = bytes * (n_new / decode) / 1e9 / bw;
    printf("generate: %.1f tokens/s (prompt %d in %.1f ms, then %d new tokens, greedy, KV cache)\n", n_new / decode,
           n_prompt, (t1 - t0) * 1e3, n_new);
    /* On a shared machine the fastest steps are the least disturbed: what a quiet one gives. */
    printf("  a token: median %.2f ms, fastest %.2f ms (%.1f tokens/s at that pace)\n", step[n_new / 2] * 1e3,
           step[0] * 1e3, 1.0 / step[0]);
    printf("  each token reads the %.0f MB of weights: %.1f GB/s; memory streams %.1f GB/s here (a sum over as many "
           "bytes, all threads): ~%.1f tokens/s at best; %.0f%% of that (target >= 75%%: %s)\n",
           bytes / 1e6, bytes * (n_new / decode) / 1e9, bw, bw * 1e9 / bytes, 100.0 * share,
           share >= 0.75 ? "met" : "MISSED");
    if (profile) decode_products_alone(m, step[n_new / 2]);
    lp_generator_free(g);
    free(prompt);
    free(step);
}

/* path: where the last ig and occlusion scores go (raw float32, T each), or NULL. */
static void save_scores(const char *path, const float *ig, const float *occ, int T) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(ig, sizeof *ig, (size_t)T, f) != (size_t)T || fwrite(occ, sizeof *occ, (size_t)T, f) != (size_t)T ||
        fclose(f)) {
        fprintf(stderr, "bench: cannot write %s\n", path);
        exit(1);
    }
}

/* Attribution at T tokens, each as a multiple of one forward at T measured alongside (all
 * medians of reps): one backward (lp_grad_new on a captured run; an encoder's: its input
 * gradient, lp_grad_embed_new), integrated gradients with 32 steps (32 interpolated inputs
 * forward and backward, plus the baseline's forward) and occlusion (T occluded inputs
 * forward: every position for an encoder, whose output reads them all; a decoder's
 * objective is at T - 1, so it reads them all too). ig's rate is in tokens through forward
 * and backward per second, 33 T / its time, to set models and lengths side by side. The
 * objective: a decoder's logit of a token at the last position; a classifier's label 0; a
 * masked LM's token at the middle position. Targets at T=32: backward < 3, ig-32 < 40.
 * make bench runs T=32 on GPT-2 and BERT alike, and ig at T=128 once on each (occlusion
 * there would be 128 more forwards). */
static void bench_attr(const lp_model *m, int T, int reps, bool with_occlusion, const char *save) {
    const lp_config *c = lp_model_config(m);
    bool enc = lp_model_is_encoder(m);
    int *ids = malloc((size_t)T * sizeof *ids);
    double *fwd = malloc(5 * (size_t)reps * sizeof *fwd), *bwd = fwd + reps, *ig = bwd + reps, *occ = ig + reps;
    double *ig_cpu = occ + reps; /* the process's CPU time: less skewed by other work than the wall clock */
    float *scores = malloc(2 * (size_t)T * sizeof *scores), *occ_scores = scores + T;
    if (!ids || !fwd || !scores) exit(1);
    fill_ids(ids, T, c->vocab);
    lp_run *r;
    lp_grad *g;
    double delta;
    lp_objective o = {LP_OBJ_LOGIT, T - 1, ids[0], -1};
    if (c->head == LP_HEAD_CLASSIFIER) o.pos = 0, o.target = 0;
    else if (enc) o.pos = T / 2;
    lp_attr_spec sp = {.objective = o, .steps = 32, .baseline = -1, .layer = -1};
    if (lp_run_new(&r, m, ids, T)) die("forward");
    for (int i = 0; i < reps; i++) {
        lp_run_free(r);
        double t = now_s();
        if (lp_run_new(&r, m, ids, T)) die("forward");
        fwd[i] = now_s() - t;
        t = now_s();
        if ((enc ? lp_grad_embed_new : lp_grad_new)(&g, r, &sp.objective)) die("backward");
        bwd[i] = now_s() - t;
        lp_grad_free(g);
        sp.method = LP_ATTR_IG;
        t = now_s();
        double cpu = cpu_s();
        if (lp_attr(scores, &delta, r, &sp)) die("attr ig");
        ig[i] = now_s() - t;
        ig_cpu[i] = cpu_s() - cpu;
        sp.method = LP_ATTR_OCCLUSION;
        t = now_s();
        if (with_occlusion && lp_attr(occ_scores, &delta, r, &sp)) die("attr occlusion");
        occ[i] = now_s() - t;
    }
    lp_run_free(r);
    if (save && with_occlusion) save_scores(save, scores, occ_scores, T);
    double f = median_of(fwd, reps), b = median_of(bwd, reps) / f, i = median_of(ig, reps);
    printf("attr T=%d (x one forward of %.1f ms, medians of %d): %s %.2fx", T, f * 1e3, reps,
           enc ? "input gradient" : "backward", b);
    if (T == 32) printf(" (target < 3: %s)", b < 3 ? "met" : "MISSED");
    printf(", ig-32 %.1fx = %.2f s (CPU %.2f s), %.0f tokens/s", i / f, i, median_of(ig_cpu, reps), 33.0 * T / i);
    if (T == 32) printf(" (target < 40: %s)", i / f < 40 ? "met" : "MISSED");
    if (with_occlusion) printf(", occlusion %.1fx = %.0f ms", median_of(occ, reps) / f, median_of(occ, reps) * 1e3);
    printf("\n");
    free(ids);
    free(fwd);
    free(scores);
}

/* eval all at T=32 (decoders): the six attributions as attr computes them, then every
 * perturbed input of the removal measures (deletion, so grouped by length), against one
 * forward at T=32. The target: seconds, not minutes. */
static void bench_eval(const lp_model *m) {
    enum { T = 32 };
    int ids[T];
    fill_ids(ids, T, lp_model_config(m)->vocab);
    lp_run *r;
    if (lp_run_new(&r, m, ids, T)) die("forward");
    double t = now_s();
    lp_run_free(r);
    if (lp_run_new(&r, m, ids, T)) die("forward");
    double f = now_s() - t;
    lp_objective o = {LP_OBJ_LOGIT, T - 1, ids[0], -1};
    float scores[LP_ATTR_COUNT][T];
    const float *rows[LP_ATTR_COUNT];
    double delta;
    t = now_s();
    for (int i = 0; i < LP_ATTR_COUNT; i++) {
        lp_attr_spec sp = {.method = (lp_attr_method)i, .objective = o, .steps = 32, .baseline = -1, .layer = -1};
        if (lp_attr(scores[i], &delta, r, &sp)) die("attr");
        rows[i] = scores[i];
    }
    double ta = now_s() - t;
    lp_eval_spec es = {.objective = o, .prob = true, .remove = LP_REMOVE_DELETE};
    es.objective.kind = LP_OBJ_LOGPROB;
    lp_eval *e;
    lp_eval_result res[LP_ATTR_COUNT];
    t = now_s();
    if (lp_eval_new(&e, r, &es) || lp_eval_judge(e, LP_ATTR_COUNT, rows, res)) die("eval");
    double te = now_s() - t;
    int n = lp_eval_n(e), inputs = n + 2 + LP_ATTR_COUNT * 2 * (n - 1);
    printf("eval all T=32 (delete): %.2f s = attributions %.2f s + %d perturbed inputs %.2f s (%.2fx one forward "
           "of %.1f ms each)\n", ta + te, ta, inputs, te, te / inputs / f, f * 1e3);
    for (int i = 0; i < LP_ATTR_COUNT; i++) lp_eval_result_free(&res[i]);
    lp_eval_free(e);
    lp_run_free(r);
}

/* A full residual-stream patching sweep at T=32 (every layer x position: L*T patches, each
 * from a corrupted run with a different token at every position) as a multiple of one
 * forward at T=32 measured alongside (medians). Re-running every patch in full would be
 * L*T forwards; a patch re-runs only the layers and positions from its own on. */
static void bench_patch(const lp_model *m) {
    enum { T = 32, REPS = 3 };
    const lp_config *c = lp_model_config(m);
    int clean[T], corrupt[T];
    fill_ids(clean, T, c->vocab);
    for (int i = 0; i < T; i++) corrupt[i] = (clean[i] + 1 + i) % c->vocab;
    float *out = malloc((size_t)c->n_layer * T * sizeof *out);
    double fwd[REPS], sweep[REPS];
    lp_run *r, *x;
    if (!out || lp_run_new(&x, m, corrupt, T) || lp_run_new(&r, m, clean, T)) die("forward");
    for (int i = 0; i < REPS; i++) {
        lp_run_free(r);
        double t = now_s();
        if (lp_run_new(&r, m, clean, T)) die("forward");
        fwd[i] = now_s() - t;
        t = now_s();
        if (lp_patch_sweep(r, x, LP_PATCH_RESID_PRE, clean[1], corrupt[1], out)) die("patch sweep");
        sweep[i] = now_s() - t;
    }
    double f = median_of(fwd, REPS), s = median_of(sweep, REPS);
    printf("patch T=%d: resid_pre sweep of %d patches %.0f ms = %.1fx one forward of %.1f ms (each patch in full: "
           "%dx)\n",
           T, c->n_layer * T, s * 1e3, s / f, f * 1e3, c->n_layer * T);
    lp_run_free(r);
    lp_run_free(x);
    free(out);
}

/* What a `run` costs beyond its forward: recording it (lp_cmd_record_run: top-5 predictions
 * at every position and the head metrics, into an in-memory store) as a share of the forward
 * (target: <= 5%), minima of reps at each length. */
static void bench_record(lp_session *s, int reps) {
    static const int lens[] = {128, 512, 1024};
    const lp_config *c = lp_model_config(s->model);
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        int T = lens[k];
        if (T > c->n_ctx) break;
        int *ids = malloc((size_t)T * sizeof *ids);
        if (!ids) exit(1);
        fill_ids(ids, T, c->vocab);
        double fwd = 1e30, rec = 1e30;
        for (int i = 0; i < reps; i++) {
            lp_run_free(s->run);
            s->run = NULL;
            double t = now_s();
            if (lp_run_new(&s->run, s->model, ids, T)) die("forward");
            fwd = fmin(fwd, now_s() - t);
            t = now_s();
            if (lp_cmd_record_run(s, NULL, NULL)) die("record");
            rec = fmin(rec, now_s() - t);
        }
        printf("record T=%d: %.1f ms beside a forward of %.1f ms (minima of %d): %.1f%% (target <= 5%%: %s)\n", T,
               rec * 1e3, fwd * 1e3, reps, 100 * rec / fwd, rec <= 0.05 * fwd ? "met" : "MISSED");
        free(ids);
    }
}

/* The first `run` of a length longer than any before in a session, then the same command
 * twice more: what the arena's first touch adds (target: nothing). Through the command
 * layer, which decides when the old run's arena is given back; the session's sequence
 * (T = 128, 512, 1024, from no arena kept) repeated reps times, minima of each. */
/* idle: after the session's load, wait for its prefault (lp_run_prefault) to finish, as a
 * session whose user read or typed for that long; else the runs start at once. */
static int bench_new_length(lp_session *s, int reps, bool idle) {
    enum { NL = 3, AGAIN = 3 };
    static const int lens[NL] = {128, 512, 1024};
    const lp_config *c = lp_model_config(s->model);
    char *cmd[NL] = {0};
    double t[NL][AGAIN], cpu[NL][AGAIN]; /* wall, and CPU of the process's threads */
    long faults[NL][AGAIN]; /* minor page faults: what first touch costs, whatever the load */
    int longest = 0; /* the longest run made, the prefault's included */
    for (int k = 0; k < NL && lens[k] <= c->n_ctx; k++) {
        int T = longest = lens[k];
        size_t cap = (size_t)T * 8 + 16;
        int *ids = malloc((size_t)T * sizeof *ids);
        if (!(cmd[k] = malloc(cap)) || !ids) exit(1);
        fill_ids(ids, T, c->vocab);
        int o = snprintf(cmd[k], cap, "run --ids ");
        for (int i = 0; i < T; i++) o += snprintf(cmd[k] + o, cap - (size_t)o, "%s%d", i ? "," : "", ids[i]);
        free(ids);
        for (int i = 0; i < AGAIN; i++) t[k][i] = cpu[k][i] = 1e30, faults[k][i] = 0;
    }
    for (int r = 0; r < reps; r++) {
        lp_run_free(s->run);
        s->run = NULL;
        lp_run_release_cache(); /* as a fresh session: no arena, nor recording's buffers, kept from before */
        lp_cmd_record_free(s);
        double p0 = now_s();
        int ahead = lp_cmd_prefault(s); /* what lp_session_load starts */
        if (ahead > longest) longest = ahead;
        if (idle) lp_run_prefault_wait();
        if (r == 0 && idle) printf("prefault: the arena of a %d-token run touched in %.0f ms after load\n", ahead, (now_s() - p0) * 1e3);
        for (int k = 0; k < NL && cmd[k]; k++)
            for (int i = 0; i < AGAIN; i++) {
                struct rusage u0, u1;
                long pf0 = lp_run_prefault_faults();
                getrusage(RUSAGE_SELF, &u0);
                double t0 = now_s(), c0 = cpu_s();
                if (lp_exec(s, cmd[k])) die("run");
                t[k][i] = fmin(t[k][i], now_s() - t0);
                cpu[k][i] = fmin(cpu[k][i], cpu_s() - c0);
                getrusage(RUSAGE_SELF, &u1);
                long f = u1.ru_minflt - u0.ru_minflt - (lp_run_prefault_faults() - pf0); /* the run's own */
                if (r == 0 || f < faults[k][i]) faults[k][i] = f;
            }
    }
    printf("first run of a new length (run --ids, recorded, in a session that ran the shorter ones, %s; minima of %d; "
           "CPU of all the process's threads%s; page faults the run's own):",
           idle ? "after its load's prefault finished" : "at once after its load", reps,
           idle ? "" : ", the prefault's too");
    for (int k = 0; k < NL && cmd[k]; k++) {
        double again = fmin(t[k][1], t[k][2]);
        double cpu_again = fmin(cpu[k][1], cpu[k][2]);
        printf("%s T=%d %.0f ms, then %.0f ms, %.0f ms (penalty %+.0f ms; CPU %.0f, then %.0f, %.0f ms: %+.0f ms; "
               "page faults %ld, then %ld, %ld)",
               k ? ";" : "", lens[k], t[k][0] * 1e3, t[k][1] * 1e3, t[k][2] * 1e3, (t[k][0] - again) * 1e3,
               cpu[k][0] * 1e3, cpu[k][1] * 1e3, cpu[k][2] * 1e3, (cpu[k][0] - cpu_again) * 1e3, faults[k][0],
               faults[k][1], faults[k][2]);
        free(cmd[k]);
    }
    printf("\n");
    return longest;
}

/* A session as the command line makes one, with an in-memory store. Returns the longest run
 * it made (the prefault's included), 0 for none. */
static int bench_session(const char *path, int reps) {
    FILE *sink = fopen("/dev/null", "w");
    lp_session s;
    lp_session_init(&s, sink);
    if (lp_store_open(&s.store, ":memory:") || lp_session_load(&s, path)) die(path);
    int longest = 0;
    if (!lp_model_is_encoder(s.model)) {
        longest = bench_new_length(&s, reps, false);
        int again = bench_new_length(&s, reps, true);
        if (again > longest) longest = again;
        bench_record(&s, reps);
    }
    lp_store_close(s.store);
    s.store = NULL;
    lp_session_free(&s);
    fclose(sink);
    return longest;
}

/* The dataset path against the pure forward on the same items (issue 15's target: the
 * dataset's tokens/s within 1.3x of the forward alone). n items of 16..48 tokens of text
 * made from the vocabulary by the benches' LCG (printable pieces only, so that a line is an
 * item), written to a temporary file and tokenized as `dataset` does; then (a) lp_run_new on
 * each item's ids, with lp_unit_stats_add_run (neurons and heads tracked, the defaults) timed
 * beside it: the aggregates' share; (b) `dataset FILE` itself, into a temporary store. Wall
 * and CPU time (all threads) of each; the better of reps rounds, alternated. */

/* dataset's progress ends (LP_PROGRESS_END) when its items are done, before it writes the
 * aggregates' tables: the time and CPU time then. */
static void items_done(void *ctx, lp_progress_kind kind, const char *text) {
    (void)text;
    if (kind == LP_PROGRESS_END) ((double *)ctx)[0] = now_s(), ((double *)ctx)[1] = cpu_s();
}

static void bench_dataset(const char *path, int n, int reps) {
    if (n < 1 || n > 1000000 || reps < 1) die("--items 1..1000000 and --reps >= 1");
    FILE *sink = fopen("/dev/null", "w");
    lp_session s;
    lp_session_init(&s, sink);
    char dir[] = "/tmp/loupe-bench-dsXXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");
    char items[64], db[64];
    snprintf(items, sizeof items, "%s/items.txt", dir);
    snprintf(db, sizeof db, "%s/ds.db", dir);
    if (lp_session_load(&s, path)) die(path);
    const lp_config *c = lp_model_config(s.model);
    const lp_tokenizer *tok = lp_model_tokenizer(s.model);
    if (!tok) die("the model has no tokenizer");
    FILE *f = fopen(items, "w");
    if (!f) die(items);
    unsigned long long x = 12345;
#define LCG() (x = x * 6364136223846793005ull + 1442695040888963407ull, (int)(x >> 33))
    for (int i = 0; i < n; i++) {
        int want = 16 + LCG() % 33, got = 0;
        while (got < want) {
            size_t len;
            const char *b = lp_tokenizer_token_bytes(tok, LCG() % c->vocab, &len);
            bool ok = b && len > 0 && !(got == 0 && b[0] == ' ');
            for (size_t j = 0; ok && j < len; j++) ok = b[j] >= 0x21 && b[j] <= 0x7e ? true : b[j] == ' ';
            if (!ok) continue;
            fwrite(b, 1, len, f);
            got++;
        }
        fputc('\n', f);
    }
#undef LCG
    fclose(f);
    /* every item's ids, as dataset tokenizes the line (read back: the file is the truth) */
    int **ids = calloc((size_t)n, sizeof *ids), *lens = calloc((size_t)n, sizeof *lens);
    long tokens = 0;
    char line[8192];
    f = fopen(items, "r");
    for (int i = 0; i < n && f && fgets(line, sizeof line, f); i++) {
        line[strcspn(line, "\n")] = '\0';
        int *types = NULL;
        if (lp_cmd_encode_text(&s, line, NULL, -1, &ids[i], &types, &lens[i])) die("encode");
        free(types);
        tokens += lens[i];
    }
    if (f) fclose(f);
    lp_unit_stats_config uc = {c->n_layer, c->d_mlp, c->n_head, true, true, 20, 5, 0, {0}};
    const lp_tokenizer *t = tok;
    double fw = 1e30, fc = 1e30, aw = 1e30, ac_best = 1e30, dw = 1e30, dc = 1e30, steady = 1e30, iw = 1e30, ic = 1e30;
    double pw = 1e30, pc = 1e30; /* the forward packed as dataset packs it: 8 items a forward */
    double mark[2] = {0};
    s.progress = items_done;
    s.progress_ctx = mark;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "dataset %s", items);
    for (int r = 0; r < reps; r++) {
        lp_unit_stats *u;
        if (lp_unit_stats_new(&u, &uc)) die("unit stats");
        double w0 = now_s(), c0 = cpu_s(), add = 0, add_cpu = 0, skip_w = 0, skip_c = 0;
        for (int i = 0; i < n; i++) {
            lp_run *run;
            if (lp_run_new(&run, s.model, ids[i], lens[i])) die("forward");
            double a0 = now_s(), ac = cpu_s();
            bool bos = lp_tokenizer_bos(t) >= 0 && ids[i][0] == lp_tokenizer_bos(t);
            if (lp_unit_stats_add_run(u, run, i, bos)) die("add_run");
            add += now_s() - a0;
            add_cpu += cpu_s() - ac;
            if (i == n - 1) { /* the last run again as 32 more items: the aggregates once their heaps are full */
                double sw = now_s(), sc = cpu_s();
                for (int j = 1; j <= 32; j++)
                    if (lp_unit_stats_add_run(u, run, n + j, bos)) die("add_run");
                steady = fmin(steady, (cpu_s() - sc) / 32);
                skip_w = now_s() - sw, skip_c = cpu_s() - sc;
            }
            lp_run_free(run);
        }
        /* add_run between the forwards: its wall and CPU time (the compute threads share it) apart */
        double w = now_s() - w0 - add - skip_w, cpu = cpu_s() - c0 - add_cpu - skip_c;
        fw = fmin(fw, w), fc = fmin(fc, cpu), aw = fmin(aw, add), ac_best = fmin(ac_best, add_cpu);
        lp_unit_stats_free(u);
        w0 = now_s(), c0 = cpu_s();
        for (int i = 0; i < n; i += 8) {
            int B = n - i < 8 ? n - i : 8;
            lp_run *runs[8];
            if (lp_run_new_batch(runs, s.model, B, (const int *const *)ids + i, NULL, lens + i)) die("packed forward");
            for (int b = 0; b < B; b++) lp_run_free(runs[b]);
        }
        pw = fmin(pw, now_s() - w0), pc = fmin(pc, cpu_s() - c0);
        unlink(db);
        if (lp_store_open(&s.store, db)) die(db);
        w0 = now_s(), c0 = cpu_s();
        if (lp_exec(&s, cmd)) die("dataset");
        dw = fmin(dw, now_s() - w0), dc = fmin(dc, cpu_s() - c0);
        iw = fmin(iw, mark[0] - w0), ic = fmin(ic, mark[1] - c0);
        lp_store_close(s.store);
        s.store = NULL;
        s.session_id = s.model_id = s.run_id = 0; /* rows of the store just closed */
    }
    double ratio = dw / fw;
    printf("dataset: %d items of %.1f tokens on average (%ld tokens), neurons (%d) and heads (%d) tracked, k 20; best of %d:\n",
           n, (double)tokens / n, tokens, c->n_layer * c->d_mlp, c->n_layer * c->n_head, reps);
    printf("  forward alone (lp_run_new per item): %.0f tokens/s (%.2f s, CPU %.2f s)\n", tokens / fw, fw, fc);
    printf("  forward packed (lp_run_new_batch, 8 items a forward, as dataset): %.0f tokens/s (%.2f s, CPU %.2f s)\n",
           tokens / pw, pw, pc);
    printf("  dataset command (recorded, tracked, stored): %.0f tokens/s (%.2f s, CPU %.2f s); its items %.2f s (CPU "
           "%.2f s), then writing the aggregates' tables %.2f s (CPU %.2f s), once a dataset\n", tokens / dw, dw, dc, iw,
           ic, dw - iw, dc - ic);
    printf("  the aggregates alone (lp_unit_stats_add_run, on the compute threads): %.2f s (CPU %.2f s, %.1f ms an item), %.0f%% of "
           "the forward's wall time; %.1f ms an item once every unit's top k is full\n", aw, ac_best, 1e3 * ac_best / n,
           100 * aw / fw, 1e3 * steady);
    printf("  dataset / forward: %.2fx wall, %.2fx CPU (target <= 1.3: %s); its items alone %.2fx wall, %.2fx CPU "
           "(%s)\n", ratio, dc / fc, ratio <= 1.3 ? "met" : "MISSED", iw / fw, ic / fc, iw / fw <= 1.3 ? "met" : "MISSED");
    printf("  dataset / packed forward: %.2fx wall, %.2fx CPU (target <= 1.3: wall %s, CPU %s); its items alone %.2fx "
           "wall, %.2fx CPU\n", dw / pw, dc / pc, dw / pw <= 1.3 ? "met" : "MISSED", dc / pc <= 1.3 ? "met" : "MISSED",
           iw / pw, ic / pc);
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
    unlink(db);
    unlink(items);
    rmdir(dir);
    lp_session_free(&s);
    fclose(sink);
}

static void print_blas(void) {
    const char *cfg = openblas_get_config(), *ver = strchr(cfg, ' '), *forced = getenv("OPENBLAS_CORETYPE");
    int threads = openblas_get_num_threads();
    printf("openblas: %.*s, core %s (%s%s), %d thread%s\n", ver ? (int)strcspn(ver + 1, " ") : 0, ver ? ver + 1 : "",
           openblas_get_corename(), forced ? "OPENBLAS_CORETYPE=" : "OpenBLAS's own choice", forced ? forced : "",
           threads, threads == 1 ? "" : "s");
}

/* The model, the machine and the BLAS every report starts with. */
static void print_model(const lp_model *m, const char *path, double load) {
    const lp_config *c = lp_model_config(m);
    printf("model: %s (%s, %d layers, d %d, %d heads, d_mlp %d, vocab %d", path, c->arch, c->n_layer, c->d_model,
           c->n_head, c->d_mlp, c->vocab);
    if (c->head == LP_HEAD_CLASSIFIER) printf(", %d labels", c->n_labels);
    printf("; %.1f M parameters, %.0f MB)\n", lp_model_param_count(m) / 1e6, lp_model_weight_bytes(m) / 1e6);
    printf("machine: %ld CPUs, load average %.2f as the bench starts%s\n", sysconf(_SC_NPROCESSORS_ONLN), load,
           load >= 0.5 ? " (other work is running: it skews every number below)" : "");
    print_blas();
}

/* Median wall and CPU time of reps loads of path (after one to warm the page cache), with the
 * last model kept in *keep when keep is not NULL. */
static void time_load(const char *path, int reps, double *wall, double *cpu, lp_model **keep) {
    double w[16], u[16];
    lp_model *m;
    if (reps > 16) reps = 16;
    if (lp_model_load(&m, path, NULL)) die(path);
    for (int i = 0; i < reps; i++) {
        lp_model_free(m);
        double t = now_s(), c0 = cpu_s();
        if (lp_model_load(&m, path, NULL)) die(path);
        w[i] = now_s() - t, u[i] = cpu_s() - c0;
    }
    *wall = median_of(w, reps);
    *cpu = median_of(u, reps);
    if (keep) {
        lp_model_transpose_wait(m); /* timed runs read the copies the forward will */
        *keep = m;
    } else {
        lp_model_free(m);
    }
}

/* path's model, loaded, once its (out, in) copies are made: timed runs read what a forward will. */
static lp_model *load_ready(const char *path) {
    lp_model *m;
    if (lp_model_load(&m, path, NULL)) die(path);
    lp_model_transpose_wait(m);
    return m;
}

static double file_mb(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END)) {
        fprintf(stderr, "bench: cannot read %s\n", path);
        exit(1);
    }
    double mb = (double)ftell(f) / 1e6;
    fclose(f);
    return mb;
}

/* Adds sum (a - b)^2 and sum b^2 over one weight matrix of two models of one layout. */
static void linear_err(const lp_linear *a, const lp_linear *b, double *err, double *ref) {
    if (!a->w || !b->w) return;
    for (int i = 0; i < a->in; i++)
        for (int j = 0; j < a->out; j++) {
            size_t k = a->trans ? (size_t)j * a->ld + i : (size_t)i * a->ld + j;
            double d = (double)a->w[k] - b->w[k];
            *err += d * d;
            *ref += (double)b->w[k] * b->w[k];
        }
}

/* Where a GGUF's load goes: the tokenizer built from its metadata, and every tensor
 * dequantised alone into one warm buffer (no page faults, no transposes), and what the
 * model's float32 bytes cost in fresh pages; medians of reps. */
static void gguf_parts(const char *path, size_t floats, int reps) {
    lp_gguf *g;
    if (lp_gguf_open(&g, path)) die(path);
    size_t most = 0;
    for (int i = 0; i < lp_gguf_tensor_count(g); i++)
        if ((size_t)lp_gguf_tensor_at(g, i)->n_elem > most) most = (size_t)lp_gguf_tensor_at(g, i)->n_elem;
    float *out = malloc(most * sizeof *out);
    double tok[16], deq[16];
    if (!out) die("out of memory");
    memset(out, 0, most * sizeof *out);
    if (reps > 16) reps = 16;
    for (int r = 0; r < reps; r++) {
        lp_tokenizer *t;
        double t0 = now_s();
        if (lp_tokenizer_load_gguf(&t, g)) die(path);
        tok[r] = now_s() - t0;
        lp_tokenizer_free(t);
        t0 = now_s();
        for (int i = 0; i < lp_gguf_tensor_count(g); i++) {
            const lp_gguf_tensor *x = lp_gguf_tensor_at(g, i);
            if (lp_ggml_dequantize(x->type, x->data, out, (size_t)x->n_elem)) die(path);
        }
        deq[r] = now_s() - t0;
    }
    printf("  of which: the tokenizer from the metadata %.1f ms; dequantising every tensor alone (one warm buffer) "
           "%.1f ms; fresh pages for the %.0f MB of float32 ~%.1f ms; the rest (transposes, checks) is the "
           "difference\n", median_of(tok, reps) * 1e3, median_of(deq, reps) * 1e3, floats / 1e6,
           first_touch_secs(floats) * 1e3);
    free(out);
    lp_gguf_free(g);
}

/* A GGUF's load against the safetensors checkpoint it was made from (tests/tools/mkgguf):
 * lp_model_load's median wall and CPU time for each (mmap, and for the GGUF dequantising every
 * tensor to float32, GPT-2's Conv1D weights transposed back), with MB/s of the file; then the
 * T=128 logits of both. Q8_0 rounds each weight to its block's step, d = max|w| / 127: the
 * matrices' relative RMS error e_w is measured here. Each product on the way to the logits
 * (4 a layer, and the unembedding) adds an error of about e_w of its output, independent of
 * the others'; no branch outweighs the residual it is added to, and layer norms keep the
 * residual's scale, so the logits' relative RMS error is at most about sqrt(4 L + 1) e_w
 * (the errors adding in quadrature). The check: that, and the same top token at 90% of the
 * positions. */
static void bench_gguf(const char *dir, const char *gguf, int reps) {
    char st[4096];
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    double sw, sc, gw, gc, st_mb = file_mb(st), gg_mb = file_mb(gguf);
    lp_model *f32, *q8;
    time_load(dir, reps, &sw, &sc, &f32);
    time_load(gguf, reps, &gw, &gc, &q8);
    const lp_config *c = lp_model_config(f32);
    char types[64];
    lp_model_dequantised_from(q8, types, sizeof types);
    printf("load, safetensors F32 (%s, %.0f MB): %.1f ms (CPU %.1f ms; median of %d, warm page cache): %.0f MB/s\n",
           dir, st_mb, sw * 1e3, sc * 1e3, reps, st_mb / sw);
    printf("load, GGUF %s (%s, %.0f MB; tensors %s): %.1f ms (CPU %.1f ms; median of %d): %.0f MB/s of file, "
           "%.0f MB/s of float32 out; %.1fx the safetensors load\n", lp_model_dtype(q8), gguf, gg_mb, types, gw * 1e3,
           gc * 1e3, reps, gg_mb / gw, lp_model_weight_bytes(q8) / 1e6 / gw, gw / sw);
    gguf_parts(gguf, lp_model_weight_bytes(q8), reps);
    double err = 0, ref = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const lp_layer *a = &q8->layers[l], *b = &f32->layers[l];
        const lp_linear *la[] = {&a->q, &a->k, &a->v, &a->o, &a->gate, &a->up, &a->down};
        const lp_linear *lb[] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
        for (size_t k = 0; k < sizeof la / sizeof *la; k++) linear_err(la[k], lb[k], &err, &ref);
    }
    linear_err(&q8->unembed, &f32->unembed, &err, &ref);
    double ew = sqrt(err / ref);
    enum { T = 128 };
    int ids[T];
    fill_ids(ids, T, c->vocab);
    lp_run *ra, *rb;
    if (lp_run_new(&ra, q8, ids, T) || lp_run_new(&rb, f32, ids, T)) die("forward");
    int V = lp_run_out_width(rb), same = 0;
    double d2 = 0, r2 = 0, dmax = 0;
    for (int t = 0; t < T; t++) {
        const float *a = lp_run_logits(ra, t), *b = lp_run_logits(rb, t);
        int ta = 0, tb = 0;
        for (int v = 0; v < V; v++) {
            double d = (double)a[v] - b[v];
            d2 += d * d, r2 += (double)b[v] * b[v], dmax = fmax(dmax, fabs(d));
            if (a[v] > a[ta]) ta = v;
            if (b[v] > b[tb]) tb = v;
        }
        same += ta == tb;
    }
    double el = sqrt(d2 / r2), bound = sqrt(4.0 * c->n_layer + 1);
    bool ok = el <= bound * ew && same >= T * 9 / 10;
    printf("  Q8_0 against F32: weights' relative RMS error e_w %.2e; T=%d logits' relative RMS error %.2e (%.2f e_w; "
           "max |diff| %.3f), same top token at %d of %d positions (expected: <= sqrt(4 L + 1) e_w = %.1f e_w, >= 90%%: "
           "%s)\n", ew, T, el, el / ew, dmax, same, T, bound, ok ? "met" : "MISSED");
    lp_run_free(ra);
    lp_run_free(rb);
    lp_model_free(q8);
    lp_model_free(f32);
    if (!ok) exit(1);
}

static void usage(void) {
    fprintf(stderr, "usage: bench [--quick] [--threads N] [--save-logits FILE] [--compare-logits FILE] [--save-attr FILE] MODEL\n"
                    "       bench --check MODEL | --attr MODEL | --attr32 MODEL | --record MODEL | --generate MODEL\n"
                    "       bench --dataset MODEL [--items N] [--reps R]\n"
                    "       bench --forward MODEL [--lengths T,T,...]\n"
                    "       bench --gguf HF_DIR FILE.gguf [--reps R]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int quick = 0, check = 0, attr_only = 0, record_only = 0, generate_only = 0, dataset_only = 0, items = 256, reps = 2;
    int forward_only = 0;
    const char *lengths = "128,512,1024", *gguf = NULL;
    logit_files lf = {0};
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) quick = 1;
        else if (!strcmp(a, "--check")) check = 1;
        else if (!strcmp(a, "--attr")) attr_only = 1;
        else if (!strcmp(a, "--attr32")) attr_only = 2;
        else if (!strcmp(a, "--record")) record_only = 1;
        else if (!strcmp(a, "--generate")) generate_only = 1;
        else if (!strcmp(a, "--dataset")) dataset_only = 1;
        else if (!strcmp(a, "--forward")) forward_only = 1;
        else if (!strcmp(a, "--lengths") && v) lengths = argv[++i];
        else if (!strcmp(a, "--gguf") && v) gguf = argv[++i];
        else if (!strcmp(a, "--items") && v && atoi(v) > 0) items = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v && atoi(v) > 0) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v && atoi(v) > 0) openblas_set_num_threads(atoi(argv[++i]));
        else if (!strcmp(a, "--save-logits") && v) lf.save = argv[++i];
        else if (!strcmp(a, "--compare-logits") && v) lf.compare = argv[++i];
        else if (!strcmp(a, "--save-attr") && v) lf.save_attr = argv[++i];
        else if (a[0] != '-' && !path) path = a;
        else usage();
    }
    if (gguf && path) {
        bench_gguf(gguf, path, reps < 5 ? 5 : reps);
        return 0;
    }
    if (!path || gguf) usage();
    lp_model *m;
    if (check) {
        if (lp_model_load(&m, path, NULL)) return 1;
        lp_model_free(m);
        return 0;
    }
    double load[3] = {0};
    getloadavg(load, 3);
    if (record_only) {
        print_blas();
        printf("load average %.2f\n", load[0]);
        bench_session(path, 5);
        return 0;
    }
    if (dataset_only) {
        print_blas();
        printf("load average %.2f\n", load[0]);
        bench_dataset(path, items, reps);
        getloadavg(load, 3);
        printf("load average %.2f after\n", load[0]);
        return 0;
    }
    if (generate_only) {
        m = load_ready(path);
        print_blas();
        printf("load average %.2f\n", load[0]);
        bench_generate(m, 16, 128, true);
        lp_model_free(m);
        return 0;
    }
    if (attr_only) {
        m = load_ready(path);
        print_blas();
        printf("load average %.2f\n", load[0]);
        bench_attr(m, 32, attr_only == 2 ? 5 : 3, true, lf.save_attr);
        if (attr_only == 1) bench_attr(m, 128, 1, false, NULL);
        if (attr_only == 1 && !lp_model_is_encoder(m)) bench_eval(m);
        lp_model_free(m);
        return 0;
    }

    /* The forward with capture at each length, beside the roofline (make bench: Pythia's shape). */
    if (forward_only) {
        m = load_ready(path);
        int lens[16], n_lens = 0;
        for (const char *p = lengths; *p;) {
            char *end;
            long T = strtol(p, &end, 10);
            if (end == p || T < 1 || T > lp_model_config(m)->n_ctx || (*end && *end != ',') || n_lens == 16) {
                fprintf(stderr, "error: --lengths %s: give up to 16 lengths from 1 to the model's context (%d), "
                        "separated by commas\n", lengths, lp_model_config(m)->n_ctx);
                return 2;
            }
            lens[n_lens++] = (int)T;
            p = *end ? end + 1 : end;
        }
        print_model(m, path, load[0]);
        double peak = roofline(lp_model_config(m), 0);
        for (int i = 0; i < n_lens; i++) bench_forward(m, lens[i], lens[i] <= 128 ? 7 : 3, peak, &lf);
        if (!lp_model_is_encoder(m)) bench_generate(m, 16, 32, false);
        lp_model_free(m);
        return 0;
    }

    /* Quick: what depends on the BLAS core and threads, for comparing them. */
    if (quick) {
        m = load_ready(path);
        print_blas();
        double peak = roofline(lp_model_config(m), 1);
        bench_forward(m, 128, 3, peak, &lf);
        if (!lp_model_is_encoder(m)) bench_generate(m, 16, 32, false);
        lp_model_free(m);
        return 0;
    }

    double t0 = now_s();
    if (lp_model_load(&m, path, NULL)) die(path);
    double first = now_s() - t0;
    lp_model_free(m);
    t0 = now_s();
    if (lp_model_load(&m, path, NULL)) die(path);
    double warm = now_s() - t0;
    lp_model_transpose_wait(m); /* timed runs read the copies the forward will */
    /* The weights are mapped, not read, so a load is mostly the tokenizer's. */
    lp_tokenizer *tok = NULL;
    t0 = now_s();
    int tok_rc = lp_tokenizer_load_dir(&tok, path);
    double tok_secs = now_s() - t0;
    lp_tokenizer_free(tok);
    const lp_config *c = lp_model_config(m);
    print_model(m, path, load[0]);
    double peak = roofline(c, 0);
    printf("load: %.1f ms first, %.1f ms warm (target < 100 ms: %s)", first * 1e3, warm * 1e3,
           fmax(first, warm) < 0.1 ? "met" : "MISSED");
    if (tok_rc == LP_OK) printf("; the tokenizer alone %.1f ms", tok_secs * 1e3);
    printf("\n");
    bool enc = lp_model_is_encoder(m);
    bench_forward(m, 32, 9, peak, &lf);
    bench_forward(m, 128, 7, peak, &lf);
    bench_forward(m, 512, 3, peak, &lf);
    /* The session loads the model itself: the bench's copy is let go meanwhile, or the peak
     * RSS would count the weights twice (each mapping's pages count), which no user's
     * process does. */
    lp_model_free(m);
    int longest = bench_session(path, 3);
    m = load_ready(path);
    if (longest < 512) longest = 512;
    bench_attr(m, 32, enc ? 3 : 5, true, lf.save_attr);
    bench_attr(m, 128, 1, false, NULL);
    if (!enc) {
        bench_eval(m);
        bench_patch(m);
        bench_generate(m, 16, 128, false);
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* A run's arena holds every activation it keeps; the longest run's is the one a session
     * holds at its peak (one arena at a time: the spare is reused, grown or let go). */
    double rss = ru.ru_maxrss * 1024.0, weights = (double)lp_model_weight_bytes(m);
    double act = (double)lp_run_batch_bytes(m, 1, &longest), budget = weights + 2.0 * act;
    double copies = (double)lp_model_transpose_bytes(m);
    printf("peak RSS: %.0f MB = weights %.0f MB + the arena of the longest run (T=%d) %.0f MB + the (out, in) "
           "copies %.0f MB + %.0f MB else; target < weights + twice that arena = %.0f MB: %s\n", rss / 1e6,
           weights / 1e6, longest, act / 1e6, copies / 1e6, (rss - weights - act - copies) / 1e6, budget / 1e6,
           rss < budget ? "met" : "MISSED");
    lp_model_free(m);
    return 0;
}
