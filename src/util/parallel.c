/* The pool: CPUs - 1 threads made on first use, asleep on a condition between jobs. A job is
 * cut into fixed chunks that the caller and the woken threads claim one at a time, so a
 * thread that the (shared) machine does not schedule soon just leaves its chunks to the
 * others. Threads do not spin while idle: OpenBLAS's own threads need the cores next. */
#include "util/parallel.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    pthread_cond_t start;
    int workers;            /* threads made, besides callers */
    atomic_flag busy;       /* a caller owns the pool */
    uint32_t gen;           /* the job posted last (under lock) */
    lp_range_fn *fn;        /* the job (under lock) */
    void *ctx;
    size_t n, grain, chunks;
    int helpers;            /* how many workers may take chunks of it */
    /* gen << 32 | the next unclaimed chunk: a claim names its job, so a thread that wakes
     * late cannot take a chunk of the next job with the last one's fn */
    _Atomic uint64_t claim;
    atomic_size_t done;     /* chunks finished */
    atomic_int spinning;    /* lp_parallel_spin's callers inside */
} pool = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .start = PTHREAD_COND_INITIALIZER,
          .busy = ATOMIC_FLAG_INIT};

/* Claims and runs chunks of job gen until none is left. */
static void run_chunks(uint32_t gen, lp_range_fn *fn, void *ctx, size_t n, size_t grain, size_t chunks) {
    uint64_t cur = atomic_load(&pool.claim);
    for (;;) {
        if ((uint32_t)(cur >> 32) != gen || (cur & 0xffffffffu) >= chunks) return;
        if (!atomic_compare_exchange_weak(&pool.claim, &cur, cur + 1)) continue;
        size_t i0 = (size_t)(cur & 0xffffffffu) * grain, i1 = i0 + grain < n ? i0 + grain : n;
        fn(ctx, i0, i1);
        atomic_fetch_add(&pool.done, 1);
        cur = atomic_load(&pool.claim);
    }
}

/* While some caller is inside lp_parallel_spin, waits up to SPIN_NS for the job after seen
 * before the worker goes to sleep. */
#define SPIN_NS 100000L

static void spin_for_next(uint32_t seen) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* claim names the job posted last: a new job has another gen in its high half */
    for (unsigned i = 1; (uint32_t)(atomic_load(&pool.claim) >> 32) == seen; i++) {
        __builtin_ia32_pause();
        if (i % 64 == 0) {
            if (!atomic_load_explicit(&pool.spinning, memory_order_relaxed)) return;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > SPIN_NS) return;
        }
    }
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint32_t seen = 0;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.gen == seen) pthread_cond_wait(&pool.start, &pool.lock);
        seen = pool.gen;
        if (id >= pool.helpers) continue;
        lp_range_fn *fn = pool.fn;
        void *ctx = pool.ctx;
        size_t n = pool.n, grain = pool.grain, chunks = pool.chunks;
        pthread_mutex_unlock(&pool.lock);
        run_chunks(seen, fn, ctx, n, grain, chunks);
        if (atomic_load_explicit(&pool.spinning, memory_order_relaxed)) spin_for_next(seen);
        pthread_mutex_lock(&pool.lock);
    }
    return NULL;
}

/* Without threads (none could be made, or one CPU) every job runs on its caller. */
static void pool_init(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = cpus > MAX_THREADS ? MAX_THREADS - 1 : cpus > 1 ? (int)cpus - 1 : 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < want; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, worker, (void *)(intptr_t)i)) break;
        pool.workers++;
    }
    pthread_attr_destroy(&attr);
}

void lp_parallel_spin(bool on) { atomic_fetch_add(&pool.spinning, on ? 1 : -1); }

int lp_parallel_threads(void) {
    int threads = openblas_get_num_threads();
    return threads > 1 ? threads : 1;
}

void lp_parallel_for(size_t n, size_t grain, lp_range_fn *fn, void *ctx) {
    lp_parallel_for_threads(n, grain, lp_parallel_threads(), fn, ctx);
}

void lp_parallel_for_threads(size_t n, size_t grain, int threads, lp_range_fn *fn, void *ctx) {
    if (grain == 0) grain = 1;
    if (n <= grain || threads <= 1) {
        fn(ctx, 0, n);
        return;
    }
    pthread_once(&pool.once, pool_init);
    if (pool.workers == 0 || atomic_flag_test_and_set(&pool.busy)) {
        fn(ctx, 0, n);
        return;
    }
    size_t chunks = (n + grain - 1) / grain;
    pthread_mutex_lock(&pool.lock);
    uint32_t gen = ++pool.gen;
    if (gen == 0) gen = ++pool.gen; /* 0 is every worker's "seen nothing yet" */
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.grain = grain;
    pool.chunks = chunks;
    pool.helpers = threads - 1;
    atomic_store(&pool.done, 0);
    atomic_store(&pool.claim, (uint64_t)gen << 32);
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.lock);
    run_chunks(gen, fn, ctx, n, grain, chunks);
    /* Chunks still running are the workers'; they are short, so yield until they end. */
    while (atomic_load(&pool.done) < chunks) sched_yield();
    atomic_flag_clear(&pool.busy);
}
