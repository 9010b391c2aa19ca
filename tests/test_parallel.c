/* The worker pool: every item of a job is done exactly once, in ranges cut at multiples of
 * the grain when threads share it, and callers from several threads at once are safe. */
#include <cblas.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "util/parallel.h"

#define N 100003

typedef struct {
    _Atomic int hits[N];
    size_t grain;
    atomic_int bad_cut;
} count_job;

static void count(void *ctx, size_t i0, size_t i1) {
    count_job *j = ctx;
    if (i0 % j->grain || (i1 - i0 > j->grain) || (i1 % j->grain && i1 != N)) atomic_fetch_add(&j->bad_cut, 1);
    for (size_t i = i0; i < i1; i++) atomic_fetch_add(&j->hits[i], 1);
}

static void run_and_check(size_t n, size_t grain, bool cut) {
    static count_job j;
    for (size_t i = 0; i < N; i++) atomic_store(&j.hits[i], 0);
    atomic_store(&j.bad_cut, 0);
    j.grain = grain;
    lp_parallel_for(n, grain, count, &j);
    for (size_t i = 0; i < N; i++) assert_int_equal(atomic_load(&j.hits[i]), i < n ? 1 : 0);
    if (cut && n > grain) assert_int_equal(atomic_load(&j.bad_cut), 0);
}

static void every_item_once_on_any_thread_count(void **state) {
    (void)state;
    int was = openblas_get_num_threads();
    for (int t = 1; t <= 2; t++) {
        openblas_set_num_threads(t);
        for (int rep = 0; rep < 50; rep++) { /* many jobs back to back: no worker takes a stale one */
            run_and_check(N, 997, t > 1); /* one thread: one call over everything */
            run_and_check(N, 1, t > 1);
            run_and_check(1000, 1000, t > 1);
            run_and_check(0, 16, t > 1);
        }
    }
    openblas_set_num_threads(was);
}

/* With a thread spinning between jobs (generation's steps), jobs back to back, with and
 * without gaps longer than the spin: a spinning thread takes each new job whole and once. */
static void spinning_threads_take_each_job_once(void **state) {
    (void)state;
    int was = openblas_get_num_threads();
    openblas_set_num_threads(2);
    lp_parallel_spin(true);
    for (int rep = 0; rep < 200; rep++) {
        run_and_check(N, 997, true);
        if (rep % 50 == 0) {
            struct timespec gap = {0, 300000}; /* past the spin: the thread sleeps, then wakes */
            nanosleep(&gap, NULL);
        }
        run_and_check(4000, 16, true);
    }
    lp_parallel_spin(false);
    for (int rep = 0; rep < 20; rep++) run_and_check(N, 997, true);
    openblas_set_num_threads(was);
}

typedef struct {
    double *y;
} square_job;

static void square(void *ctx, size_t i0, size_t i1) {
    square_job *j = ctx;
    for (size_t i = i0; i < i1; i++) j->y[i] = (double)i * (double)i;
}

static void *caller(void *arg) {
    static _Thread_local double y[4096];
    square_job j = {y};
    for (int rep = 0; rep < 200; rep++) {
        lp_parallel_for(4096, 64, square, &j);
        for (int i = 0; i < 4096; i++)
            if (y[i] != (double)i * i) return arg;
    }
    return NULL;
}

static void concurrent_callers_each_get_their_job_done(void **state) {
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, caller, (void *)1), 0);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        assert_null(bad);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_item_once_on_any_thread_count),
        cmocka_unit_test(concurrent_callers_each_get_their_job_done),
        cmocka_unit_test(spinning_threads_take_each_job_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
