/* lp_parallel_for: one pthread per share beyond the first; started per call, as the work
 * it splits (tens of milliseconds) dwarfs starting a thread. */
#include "loupe/parallel.h"

#include <cblas.h>
#include <pthread.h>

#define MAX_SHARES 64

typedef struct {
    void (*fn)(void *ctx, int lo, int hi);
    void *ctx;
    int lo, hi;
} share;

static void *run_share(void *arg) {
    share *s = arg;
    s->fn(s->ctx, s->lo, s->hi);
    return NULL;
}

void lp_parallel_for(int n, void (*fn)(void *ctx, int lo, int hi), void *ctx) {
    int k = openblas_get_num_threads();
    if (k > MAX_SHARES) k = MAX_SHARES;
    if (k > n) k = n;
    if (k < 2) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    share sh[MAX_SHARES];
    pthread_t th[MAX_SHARES];
    int started[MAX_SHARES] = {0};
    for (int i = 0; i < k; i++) sh[i] = (share){fn, ctx, (int)((long)n * i / k), (int)((long)n * (i + 1) / k)};
    for (int i = 1; i < k; i++) started[i] = pthread_create(&th[i], NULL, run_share, &sh[i]) == 0;
    fn(ctx, sh[0].lo, sh[0].hi);
    for (int i = 1; i < k; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        else fn(ctx, sh[i].lo, sh[i].hi); /* no thread: the caller does it */
    }
}
