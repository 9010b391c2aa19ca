/* The tools' shared timing: a monotonic clock, the best sgemm rate on one shape (the
 * roofline bench, bench_seq2seq and bench_train print beside their numbers), sgemv's
 * streaming rate (decoding's limit) and the benches' token ids. */
#ifndef LOUPE_TOOLS_SGEMM_RATE_H
#define LOUPE_TOOLS_SGEMM_RATE_H

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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

/* A generated token is one matrix-vector product per weight matrix, so decoding is bound by
 * how fast sgemv streams matrices too large for the caches. Measured on a (rows, cols)
 * matrix (the unembedding's size) in both layouts the engine uses (out x in rows: NoTrans;
 * GPT-2's in x out rows: Trans), as OpenBLAS's two kernels stream at different rates. GB/s. */
static inline double sgemv_gbs(int rows, int cols) {
    size_t n = (size_t)rows * cols, big = (size_t)(rows > cols ? rows : cols);
    float *w = malloc(n * sizeof *w), *x = malloc(big * sizeof *x), *y = malloc(big * sizeof *y);
    if (!w || !x || !y) exit(1);
    for (size_t i = 0; i < n; i++) w[i] = (float)(i % 1000) * 1e-3f;
    for (size_t i = 0; i < big; i++) x[i] = 1.0f;
    double best = 1e30;
    for (int trans = 0; trans < 2; trans++) {
        int r = trans ? cols : rows, c = trans ? rows : cols;
        enum CBLAS_TRANSPOSE t_op = trans ? CblasTrans : CblasNoTrans;
        cblas_sgemv(CblasRowMajor, t_op, r, c, 1.0f, w, c, x, 1, 0.0f, y, 1); /* warm-up */
        double start = now_s();
        for (int k = 0; k < 5 || now_s() - start < 0.15; k++) {
            double t = now_s();
            cblas_sgemv(CblasRowMajor, t_op, r, c, 1.0f, w, c, x, 1, 0.0f, y, 1);
            t = now_s() - t;
            if (t < best) best = t;
        }
    }
    free(w);
    free(x);
    free(y);
    return n * sizeof(float) / best / 1e9;
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
