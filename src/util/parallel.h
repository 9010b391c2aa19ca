/* A persistent pool of compute threads for the element-wise code between matrix products
 * (norms, softmax, activations). Not a public header. */
#ifndef LOUPE_PARALLEL_H
#define LOUPE_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>

/* Work on items [i0, i1) of a job. */
typedef void lp_range_fn(void *ctx, size_t i0, size_t i1);

/* Calls fn on ranges that cover [0, n) once, and returns when all are done: chunks of grain
 * items (cut at multiples of grain) shared among the compute threads, or fn(ctx, 0, n) on the
 * calling thread when n <= grain, when OpenBLAS is set to one thread (the compute threads are
 * OpenBLAS's: --threads), or when another thread is using the pool. fn must treat items
 * independently, so that results do not depend on the cut or the thread count. Call it only
 * between BLAS calls (never while OpenBLAS's threads work), and never from inside fn. */
void lp_parallel_for(size_t n, size_t grain, lp_range_fn *fn, void *ctx);

/* lp_parallel_for among at most threads threads, whatever OpenBLAS is set to: for jobs that
 * set OpenBLAS to one thread and call it from each of the pool's threads. */
void lp_parallel_for_threads(size_t n, size_t grain, int threads, lp_range_fn *fn, void *ctx);

/* lp_parallel_spin(true) ... lp_parallel_spin(false) around a run of short jobs with no
 * OpenBLAS call among them (a generation step's one-row products): meanwhile a thread that
 * finishes a job waits for the next one spinning, up to 0.1 ms, instead of going to sleep.
 * On a VM an idle CPU halts, and waking it goes through the host: about 70 wakes a GPT-2
 * step cost it 5-15% of its time. Spinning elsewhere would take the core OpenBLAS's own
 * threads want next. */
void lp_parallel_spin(bool on);

/* How many threads lp_parallel_for shares work among (at least 1): to cut work into a
 * multiple of them. */
int lp_parallel_threads(void);

#endif
