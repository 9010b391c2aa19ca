/* bench_seq2seq: how fast the engine runs an encoder-decoder (make bench: t5-small's shape,
 * random weights), set beside what this machine's sgemm and sgemv allow.
 *   bench_seq2seq [--threads N] [--reps N] [--save-logits FILE] [--save-ids FILE] MODEL
 * Two figures, as issue 13 asks:
 *   teacher-forced: `run SOURCE --target` with a source of 128 ids and a target of 32
 *     (lp_run_new_seq2seq: the encoder over 128 positions, the decoder over the start id
 *     and the 32 target ids, 33 positions, everything captured);
 *   greedy: the encoder's run, the generator (cross keys and values once), then 64 tokens
 *     decoded one at a time through the key/value cache, as `run SOURCE` decodes.
 * Each is the minimum over --reps runs (default 7 and 3): on a shared machine the fastest run
 * is the one least disturbed. FLOPs are counted as the engine does the work (attention over
 * the full square); a decoded token also reads every decoder weight and the unembedding, so
 * decoding's other limit is sgemv's streaming rate. --save-logits writes the teacher-forced
 * logits (33 x V float32) and --save-ids the greedy ids (text) for tests/bench/torch_t5.py. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "sgemm_rate.h"

enum { SRC = 128, TGT = 32, NEW = 64 };

static void die(const char *what) {
    fprintf(stderr, "bench_seq2seq: %s: %s\n", what, lp_errmsg());
    exit(1);
}

static double min_of(const double *t, int n) {
    double m = t[0];
    for (int i = 1; i < n; i++) m = fmin(m, t[i]);
    return m;
}

/* The matrix products of one layer's linear maps on `rows` rows, FLOPs: self-attention's
 * q, k, v, o and the feed-forward (2 or 3 matrices). */
static double self_mlp_flops(const lp_config *c, double rows) {
    double d = c->d_model, qd = (double)c->n_head * c->d_head, mats = lp_mlp_gated(c) ? 3 : 2;
    return 2 * rows * (4 * d * qd + mats * d * c->d_mlp);
}

/* The teacher-forced pass: encoder over S, decoder over T with cross-attention over S. */
static double teacher_flops(const lp_config *enc, const lp_config *dec, int S, int T) {
    double qd = (double)dec->n_head * dec->d_head, hd = 4.0 * dec->n_head * dec->d_head; /* scores + pattern @ V */
    double e = enc->n_layer * (self_mlp_flops(enc, S) + hd * S * S);
    double cross = 2.0 * T * 2 * dec->d_model * qd + 2.0 * S * 2 * dec->d_model * qd + hd * T * S;
    double d = dec->n_layer * (self_mlp_flops(dec, T) + hd * T * T + cross);
    return e + d + 2.0 * T * dec->d_model * dec->vocab;
}

/* One decoded token at position t (t + 1 keys) over a source of S: the cross keys and values
 * are cached, so cross-attention costs its q and o maps and the scores over S. */
static double token_flops(const lp_config *c, int t, int S) {
    double qd = (double)c->n_head * c->d_head, hd = 4.0 * c->n_head * c->d_head;
    return c->n_layer * (self_mlp_flops(c, 1) + 2.0 * 2 * c->d_model * qd + hd * (t + 1) + hd * S) +
           2.0 * c->d_model * c->vocab;
}

/* The float32 bytes a decoded token reads: each decoder layer's self q, k, v, o, cross q and
 * o, the feed-forward, and the unembedding (the cross k and v maps ran once, over the source). */
static double token_weight_bytes(const lp_config *c) {
    double d = c->d_model, qd = (double)c->n_head * c->d_head, mats = lp_mlp_gated(c) ? 3 : 2;
    return 4.0 * (c->n_layer * (6 * d * qd + mats * d * c->d_mlp + 3 * d) + d * c->vocab);
}

static void save_floats(const char *path, const float *x, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof *x, n, f) != n || fclose(f)) {
        fprintf(stderr, "bench_seq2seq: cannot write %s\n", path);
        exit(1);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: bench_seq2seq [--threads N] [--reps N] [--save-logits FILE] [--save-ids FILE] MODEL\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *path = NULL, *save_logits = NULL, *save_ids = NULL;
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--threads") && v && atoi(v) > 0) openblas_set_num_threads(atoi(argv[++i]));
        else if (!strcmp(a, "--reps") && v && atoi(v) > 0) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--save-logits") && v) save_logits = argv[++i];
        else if (!strcmp(a, "--save-ids") && v) save_ids = argv[++i];
        else if (a[0] != '-' && !path) path = a;
        else usage();
    }
    if (!path) usage();
    lp_model *m;
    if (lp_model_load(&m, path, NULL)) die(path);
    const lp_model *em = lp_model_encoder(m);
    if (!em) {
        fprintf(stderr, "error: %s is not an encoder-decoder (bench_seq2seq times T5-style models)\n", path);
        return 1;
    }
    const lp_config *c = lp_model_config(m), *ec = lp_model_config(em);
    double load[3] = {0};
    getloadavg(load, 3);
    printf("model: %s (%s, %d+%d layers, d %d, %d heads x d_kv %d, d_ff %d %s, vocab %d, buckets %d/%d; %.1f M "
           "parameters)\n",
           path, c->arch, ec->n_layer, c->n_layer, c->d_model, c->n_head, c->d_head, c->d_mlp,
           lp_mlp_gated(c) ? "gated" : "plain", c->vocab, c->rel_buckets, c->rel_max_distance,
           lp_model_param_count(m) / 1e6);
    printf("machine: %ld CPUs, load average %.2f as this starts%s; OpenBLAS %d thread%s\n",
           sysconf(_SC_NPROCESSORS_ONLN), load[0], load[0] >= 0.5 ? " (other work is running: it skews every number)" : "",
           openblas_get_num_threads(), openblas_get_num_threads() == 1 ? "" : "s");

    /* The roofline: the best sgemm rate on the shapes of both stacks (M = rows, N = outputs,
     * K = inputs), the decoder's 33 rows included, and the tied unembedding (B transposed). */
    int d = c->d_model, qd = c->n_head * c->d_head, dm = c->d_mlp, T = TGT + 1;
    const shape shapes[] = {{SRC, qd, d, 0, 0}, {SRC, dm, d, 0, 0}, {SRC, d, dm, 0, 0},
                            {T, dm, d, 0, 0},   {T, d, dm, 0, 0},   {T, c->vocab, d, 0, 1}};
    double peak = 0.0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) peak = fmax(peak, sgemm_rate(&shapes[i], 0.3, 3));
    double bw = stream_gbs(token_weight_bytes(c));
    printf("sgemm roofline: %.1f GFLOP/s (best of 6 shapes); memory streams a token's weights at %.1f GB/s\n", peak,
           bw);

    /* (a) teacher-forced, with capture */
    int src[SRC], dec[TGT + 1];
    fill_ids(src, SRC, c->vocab);
    dec[0] = c->start_id;
    fill_ids(dec + 1, TGT, c->vocab);
    for (int i = 1; i <= TGT; i++) dec[i] = (dec[i] * 7 + 3) % c->vocab; /* not the source's ids */
    double *times = malloc((size_t)reps * sizeof *times), *enc_times = malloc((size_t)reps * sizeof *enc_times);
    if (!times || !enc_times) return 1;
    lp_run *r = NULL, *e;
    if (lp_run_new_seq2seq(&r, m, src, SRC, dec, T)) die("teacher-forced run"); /* warm-up: the arenas */
    for (int i = 0; i < reps; i++) {
        lp_run_free(r);
        double t = now_s();
        if (lp_run_new_seq2seq(&r, m, src, SRC, dec, T)) die("teacher-forced run");
        times[i] = now_s() - t;
        t = now_s();
        if (lp_run_new(&e, em, src, SRC)) die("encoder run");
        enc_times[i] = now_s() - t;
        lp_run_free(e);
    }
    double flops = teacher_flops(ec, c, SRC, T), best = min_of(times, reps), ideal = flops / (peak * 1e9);
    printf("teacher-forced S=%d T=%d (+ start): %.1f ms (min of %d; encoder alone %.1f ms) | %.2f GFLOP | roofline "
           "%.1f ms | ratio %.2f | %.0f source+target tokens/s\n",
           SRC, TGT, best * 1e3, reps, min_of(enc_times, reps) * 1e3, flops / 1e9, ideal * 1e3, best / ideal,
           (SRC + T) / best);
    if (save_logits) save_floats(save_logits, lp_run_logits(r, 0), (size_t)T * c->vocab);
    lp_run_free(r);

    /* (b) greedy decoding through the cache, as `run SOURCE` does */
    int out[NEW], dreps = reps < 3 ? reps : 3;
    double dec_best = 1e30, prefill_best = 1e30;
    lp_sampling greedy = {.temperature = 0.0f, .top_p = 1.0f};
    for (int rep = 0; rep < dreps; rep++) {
        lp_generator *g;
        const float *logits;
        double t0 = now_s();
        if (lp_run_new(&e, em, src, SRC) || lp_generator_new_seq2seq(&g, m, NEW + 1, e) ||
            lp_generator_feed(g, &c->start_id, 1, &logits))
            die("greedy decoding");
        double t1 = now_s();
        for (int i = 0; i < NEW; i++) {
            out[i] = lp_sample(logits, c->vocab, &greedy, NULL);
            if (i + 1 < NEW && lp_generator_feed(g, &out[i], 1, &logits)) die("greedy decoding");
        }
        double t2 = now_s();
        prefill_best = fmin(prefill_best, t1 - t0);
        dec_best = fmin(dec_best, t2 - t1);
        lp_generator_free(g);
        lp_run_free(e);
    }
    /* NEW tokens come from NEW - 1 feeds after the start's; the start's feed is in prefill */
    double per_tok = dec_best / (NEW - 1), tok_flops = 0.0, wbytes = token_weight_bytes(c);
    for (int t = 1; t < NEW; t++) tok_flops += token_flops(c, t, SRC);
    tok_flops /= NEW - 1;
    printf("greedy S=%d, %d new tokens: %.1f tokens/s (best of %d; encoder + cross K/V + start %.1f ms)\n", SRC, NEW,
           1.0 / per_tok, dreps, prefill_best * 1e3);
    printf("  per token %.2f ms: %.1f MFLOP (sgemm roofline %.0f tokens/s) and %.0f MB of weights read (streamed at "
           "%.1f GB/s: %.0f tokens/s at best)\n",
           per_tok * 1e3, tok_flops / 1e6, peak * 1e9 / tok_flops, wbytes / 1e6, bw, bw * 1e9 / wbytes);
    if (save_ids) {
        FILE *f = fopen(save_ids, "w");
        for (int i = 0; f && i < NEW; i++) fprintf(f, "%d%c", out[i], i + 1 < NEW ? ' ' : '\n');
        if (!f || fclose(f)) {
            fprintf(stderr, "bench_seq2seq: cannot write %s\n", save_ids);
            return 1;
        }
    }
    free(times);
    free(enc_times);
    lp_model_free(m);
    return 0;
}
