/* A persistent pool of compute threads for the element-wise code between matrix products
 * (norms, softmax, activations). Not a public header. */
#ifndef LOUPE_PARALLEL_H
#define LOUPE_PARALLEL_H

#include <stddef.h>

/* Work on items [i0, i1) of a job. */
typedef void lp_range_fn(void *ctx, size_t i0, size_t i1);

/* Calls fn on ranges that cover [0, n) once, each at most grain items long and cut at
 * multiples of grain, and returns when all are done. The ranges depend only on n and grain,
 * never on how many threads take them, so work whose items are independent gives the same
 * bytes on any thread count. Runs fn(ctx, 0, n) on the calling thread when n <= grain, when
 * OpenBLAS is set to one thread (the compute threads are OpenBLAS's: --threads), or when
 * another thread is using the pool. Call it only between BLAS calls, never from inside fn. */
void lp_parallel_for(size_t n, size_t grain, lp_range_fn *fn, void *ctx);

#endif
