/* The one-row kernels of decoding (kernels/decode.c): products of one row with a weight
 * matrix in both of lp_linear's layouts, and one query's attention, against sums in double;
 * the same bytes on one thread and on two, and in both layouts; and generation, whose every
 * step runs them, giving the same logits on any thread count. */
#include <cblas.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "kernels/decode.h"
#include "loupe/error.h"
#include "loupe/generate.h"

/* Deterministic values in [-1, 1). */
static float value(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) % 20000) / 10000.0f - 1.0f;
}

static float *values(size_t n, uint64_t seed) {
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = value(&seed);
    return v;
}

/* A matrix for x (in) -> y (out) with room beside it: ld exceeds the row's width by pad, as a
 * column block of a fused matrix does (GPT-2's c_attn) or a row of a wider one. */
static lp_linear matrix(int in, int out, bool trans, int pad, bool bias, uint64_t seed) {
    int ld = (trans ? in : out) + pad;
    size_t rows = trans ? (size_t)out : (size_t)in;
    return lp_linear_of(values(rows * ld, seed), bias ? values((size_t)out, seed + 1) : NULL, in, out, ld, trans);
}

static void free_matrix(lp_linear *l) {
    free((void *)l->w);
    free((void *)l->b);
}

static double weight(const lp_linear *l, int i, int o) {
    return l->trans ? l->w[(size_t)o * l->ld + i] : l->w[(size_t)i * l->ld + o];
}

/* Shapes around the kernels' cuts: rows in fours, 16 lanes, column pieces of 64 or 128, and
 * large enough that the pool shares them out (pieces of 256 KB of weights). */
static const int shapes[][2] = {{1, 1}, {3, 5}, {17, 33}, {64, 130}, {100, 257}, {300, 1000}, {768, 2304}, {3072, 771}};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

/* Each output within 1e-6 of the sum of its terms' magnitudes (float32 sums over 16 lanes
 * or down the rows; worst measured 2.0e-7 of it, under the Haswell kernel and OpenBLAS's
 * own, on 1 and 2 threads: the kernel is loupe's, not OpenBLAS's). */
static void one_row_products_match_sums_in_double(void **state) {
    (void)state;
    double worst = 0;
    for (int s = 0; s < NSHAPES; s++)
        for (int t = 0; t < 2; t++)
            for (int b = 0; b < 2; b++) {
                int in = shapes[s][0], out = shapes[s][1];
                lp_linear l = matrix(in, out, t, s % 3 * 7, b, 100u + (uint64_t)s);
                float *x = values((size_t)in, 7), *y = malloc((size_t)out * sizeof *y);
                lp_decode_linear(y, x, &l);
                for (int o = 0; o < out; o++) {
                    double ref = l.b ? l.b[o] : 0.0, mag = fabs(ref);
                    for (int i = 0; i < in; i++) {
                        ref += weight(&l, i, o) * x[i];
                        mag += fabs(weight(&l, i, o) * x[i]);
                    }
                    double err = fabs(y[o] - ref) / mag;
                    if (err > worst) worst = err;
                    if (!(err <= 1e-6))
                        fail_msg("in %d out %d %s%s: y[%d] = %.9g, want %.9g", in, out, t ? "(out, in)" : "(in, out)",
                                 b ? " + bias" : "", o, y[o], ref);
                }
                free(x), free(y);
                free_matrix(&l);
            }
    print_message("  worst error %.2e of the terms' magnitudes\n", worst);
}

/* Each output is summed by one thread in an order fixed by the shape: one thread and two
 * give the same bytes (the pool runs everything on the caller with one). */
static void one_row_products_are_the_same_bytes_on_any_thread_count(void **state) {
    (void)state;
    int was = openblas_get_num_threads();
    for (int s = 0; s < NSHAPES; s++)
        for (int t = 0; t < 2; t++) {
            int in = shapes[s][0], out = shapes[s][1];
            lp_linear l = matrix(in, out, t, 3, true, 200u + (uint64_t)s);
            float *x = values((size_t)in, 9), *y[2];
            for (int n = 1; n <= 2; n++) {
                openblas_set_num_threads(n);
                y[n - 1] = malloc((size_t)out * sizeof(float));
                lp_decode_linear(y[n - 1], x, &l);
            }
            assert_memory_equal(y[0], y[1], (size_t)out * sizeof(float));
            free(x), free(y[0]), free(y[1]);
            free_matrix(&l);
        }
    openblas_set_num_threads(was);
}

/* A matrix stored (in, out) and its transpose stored (out, in) give the same bytes: decode.c
 * sums the first as it sums the second (16 lanes down the rows, their tree, the last rows,
 * the bias), so generation may read GPT-2's (out, in) copies or the file alike. Shapes
 * below and above 16 inputs and a band's width, with and without room beside the rows. */
static void one_row_products_are_the_same_bytes_in_both_layouts(void **state) {
    (void)state;
    for (int s = 0; s < NSHAPES; s++)
        for (int b = 0; b < 2; b++) {
            int in = shapes[s][0], out = shapes[s][1], pad = s % 2 * 5;
            lp_linear l = matrix(in, out, false, pad, b, 300u + (uint64_t)s);
            float *wt = malloc((size_t)out * (size_t)(in + pad) * sizeof *wt);
            assert_non_null(wt);
            for (int o = 0; o < out; o++)
                for (int i = 0; i < in; i++) wt[(size_t)o * (size_t)(in + pad) + i] = l.w[(size_t)i * (size_t)l.ld + o];
            lp_linear t = lp_linear_of(wt, l.b, in, out, in + pad, true);
            float *x = values((size_t)in, 11), *y0 = malloc((size_t)out * sizeof(float)), *y1 = malloc((size_t)out * sizeof(float));
            x[0] = -0.0f; /* a negative zero input: its products' signs too */
            lp_decode_linear(y0, x, &l);
            lp_decode_linear(y1, x, &t);
            if (memcmp(y0, y1, (size_t)out * sizeof(float)))
                fail_msg("in %d out %d%s: the layouts' bytes differ", in, out, b ? " + bias" : "");
            free(x), free(y0), free(y1), free(wt);
            free_matrix(&l);
        }
}

/* One query over keys rows of a cache (a row every ld floats): the scores within 1e-6 of
 * their terms' magnitudes, and the mix of value rows too (worst measured 6.4e-8 and 9.2e-8). */
static void single_query_attention_matches_sums_in_double(void **state) {
    (void)state;
    const int dims[] = {1, 16, 40, 64, 80};
    double worst[2] = {0, 0};
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
        int dh = dims[d], keys = 37, ld = 3 * dh + 5;
        float *q = values((size_t)dh, 11), *k = values((size_t)keys * ld, 12), *v = values((size_t)keys * ld, 13);
        float *p = malloc((size_t)keys * sizeof *p), *z = malloc((size_t)dh * sizeof *z), scale = 0.125f;
        lp_decode_scores(p, q, k, keys, dh, (size_t)ld, scale);
        for (int j = 0; j < keys; j++) {
            double ref = 0, mag = 0;
            for (int e = 0; e < dh; e++) {
                ref += (double)q[e] * k[(size_t)j * ld + e];
                mag += fabs((double)q[e] * k[(size_t)j * ld + e]);
            }
            worst[0] = fmax(worst[0], fabs(p[j] - ref * scale) / (mag * scale));
            assert_true(fabs(p[j] - ref * scale) <= 1e-6 * mag * scale);
        }
        lp_decode_mix(z, p, v, keys, dh, (size_t)ld);
        for (int e = 0; e < dh; e++) {
            double ref = 0, mag = 0;
            for (int j = 0; j < keys; j++) {
                ref += (double)p[j] * v[(size_t)j * ld + e];
                mag += fabs((double)p[j] * v[(size_t)j * ld + e]);
            }
            worst[1] = fmax(worst[1], fabs(z[e] - ref) / mag);
            assert_true(fabs(z[e] - ref) <= 1e-6 * mag);
        }
        free(q), free(k), free(v), free(p), free(z);
    }
    print_message("  worst error %.2e (scores), %.2e (mix) of the terms' magnitudes\n", worst[0], worst[1]);
}

/* Generation fed one token at a time runs only one-row steps: on one thread and on two, the
 * logits of every step are the same bytes (GPT-2's Conv1D layout, Llama's (out, in) one). */
static void generation_logits_are_the_same_bytes_on_any_thread_count(void **state) {
    (void)state;
    const char *archs[] = {"--arch gpt2 --d-model 128 --d-mlp 1024 --heads 4 --ctx 64 --vocab 4000 --std 0.3 --seed 31",
                           "--arch llama --d-model 128 --d-mlp 1024 --heads 4 --kv-heads 2 --ctx 64 --vocab 4000 --std 0.3 --seed 32"};
    int was = openblas_get_num_threads();
    for (int a = 0; a < 2; a++) {
        char *dir = make_temp_dir(), mdir[600];
        snprintf(mdir, sizeof mdir, "%s/m", dir);
        assert_int_equal(mkmodel(mdir, archs[a]), 0);
        lp_model *m;
        assert_int_equal(lp_model_load(&m, mdir, NULL), LP_OK);
        int V = lp_model_config(m)->vocab, T = 40;
        float *lg[2];
        for (int n = 1; n <= 2; n++) {
            openblas_set_num_threads(n);
            lg[n - 1] = malloc((size_t)T * V * sizeof(float));
            lp_generator *g;
            assert_int_equal(lp_generator_new(&g, m, T), LP_OK);
            for (int t = 0; t < T; t++) {
                int id = (t * 37 + 11) % V;
                const float *out;
                assert_int_equal(lp_generator_feed(g, &id, 1, &out), LP_OK);
                memcpy(lg[n - 1] + (size_t)t * V, out, (size_t)V * sizeof(float));
            }
            lp_generator_free(g);
        }
        assert_memory_equal(lg[0], lg[1], (size_t)T * V * sizeof(float));
        free(lg[0]), free(lg[1]);
        lp_model_free(m);
        rm_tree(dir);
    }
    openblas_set_num_threads(was);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_row_products_match_sums_in_double),
        cmocka_unit_test(one_row_products_are_the_same_bytes_on_any_thread_count),
        cmocka_unit_test(one_row_products_are_the_same_bytes_in_both_layouts),
        cmocka_unit_test(single_query_attention_matches_sums_in_double),
        cmocka_unit_test(generation_logits_are_the_same_bytes_on_any_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
