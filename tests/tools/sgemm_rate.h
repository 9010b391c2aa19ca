/* The tools' shared timing: a monotonic clock, medians, the best sgemm rate on one shape
 * (the roofline bench, bench_seq2seq and bench_train print beside their numbers), the
 * memory's streaming rate (decoding's limit) and the benches' token ids. */
#ifndef LOUPE_TOOLS_SGEMM_RATE_H
#define LOUPE_TOOLS_SGEMM_RATE_H

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/parallel.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Ascending doubles, for qsort. */
static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of t[0..n) (the upper one of an even n), sorting t: the benches' figures. */
static inline double median_of(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return t[n / 2];
}

/* C (M, N) = A (M, K) B (K, N), A or B stored transposed when transa/transb. */
typedef struct {
    int M, N, K, transa, transb;
} shape;

static double sgemm_rate(const shape *s, double min_secs, int min_reps) {
    size_t a_n = (size_t)s->M * s->K, b_n = (size_t)s->K * s->N, c_n = (size_t)s->M * s->N;
    float *a = malloc(a_n * sizeof *a), *b = malloc(b_n * sizeof *b), *c = malloc(c_n * sizeof *c);
    if (!a || !b || !c) {
        fprintf(stderr, "tools: out of memory for a %dx%dx%d sgemm\n", s->M, s->N, s->K);
        exit(1);
    }
    for (size_t i = 0; i < a_n; i++) a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < b_n; i++) b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    enum CBLAS_TRANSPOSE ta = s->transa ? CblasTrans : CblasNoTrans, tb = s->transb ? CblasTrans : CblasNoTrans;
    int lda = s->transa ? s->M : s->K, ldb = s->transb ? s->K : s->N;
    cblas_sgemm(CblasRowMajor, ta, tb, s->M, s->N, s->K, 1.0f, a, lda, b, ldb, 0.0f, c, s->N); /* warm-up */
    double best = 1e30, start = now_s();
    for (int r = 0; r < min_reps || now_s() - start < min_secs; r++) {
        double t = now_s();
        cblas_sgemm(CblasRowMajor, ta, tb, s->M, s->N, s->K, 1.0f, a, lda, b, ldb, 0.0f, c, s->N);
        t = now_s() - t;
        if (t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * s->M * s->N * s->K / best / 1e9;
}

/* A generated token reads every weight once, so decoding is bound by how fast the machine
 * streams that many bytes from memory: a sum of every float of a buffer of `bytes` (the
 * weights a token reads), cut into 256 KB pieces that loupe's pool shares out, as decoding's
 * products are; best of 7 passes after one that faults the pages in. GB/s. (An sgemv on the
 * unembedding alone, as measured before, fits much of its 154 MB in a large L3 and reads
 * up to 1.5x faster than a token's 500 MB can stream.) */
typedef struct {
    const float *p;
} stream_job;

static void stream_pieces(void *ctx, size_t i0, size_t i1) {
    const stream_job *j = ctx;
    typedef float v16 __attribute__((vector_size(64)));
    v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (size_t i = i0 * 65536; i < i1 * 65536; i += 64) {
        v16 a, b, c, d;
        memcpy(&a, j->p + i, 64), memcpy(&b, j->p + i + 16, 64);
        memcpy(&c, j->p + i + 32, 64), memcpy(&d, j->p + i + 48, 64);
        s0 += a, s1 += b, s2 += c, s3 += d;
    }
    s0 += s1 + s2 + s3;
    volatile float keep = s0[0]; /* the sums are kept, so the loads are not optimised away */
    (void)keep;
}

static inline double stream_gbs(double bytes) {
    size_t pieces = (size_t)(bytes / 262144.0) + 1, n = pieces * 65536;
    float *w = malloc(n * sizeof *w);
    if (!w) exit(1);
    for (size_t i = 0; i < n; i++) w[i] = (float)(i % 1000) * 1e-3f;
    stream_job j = {w};
    double best = 1e30;
    for (int r = 0; r < 8; r++) {
        double t = now_s();
        lp_parallel_for(pieces, 1, stream_pieces, &j);
        t = now_s() - t;
        if (r > 0 && t < best) best = t;
    }
    free(w);
    return (double)n * sizeof(float) / best / 1e9;
}

/* The benches' input ids: a 64-bit LCG (tests/bench/torch_*.py's fill_ids is the same). */
static inline void fill_ids(int *ids, int n, int vocab) {
    unsigned long long x = 12345;
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int)((x >> 33) % (unsigned long long)vocab);
    }
}

#endif
