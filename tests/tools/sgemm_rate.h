/* The tools' shared timing: a monotonic clock and the best sgemm rate on one shape (the
 * roofline bench and bench_train print beside their numbers). */
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

#endif
