/* Splitting independent work over the compute threads, for the serial parts around the
 * matrix products (recording a run's metrics and predictions), where OpenBLAS's threads
 * are idle. */
#ifndef LOUPE_PARALLEL_H
#define LOUPE_PARALLEL_H

/* Calls fn(ctx, lo, hi) on contiguous shares of [0, n) from up to as many threads as
 * OpenBLAS computes with (what --threads sets), the caller's thread taking the first share
 * (all of it when a thread cannot be started). Each index's work must not depend on the
 * others, so that results do not depend on the thread count. */
void lp_parallel_for(int n, void (*fn)(void *ctx, int lo, int hi), void *ctx);

#endif
