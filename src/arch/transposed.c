/* GPT-2's Conv1D weights are stored (in, out). OpenBLAS 0.3.21's SkylakeX kernels multiply
 * the rows of a run by a matrix stored (out, in) (B transposed) faster: 17% over the twelve
 * layers of GPT-2 small at 128 rows, 35% at 32, 4% at 512 (the Haswell kernels: the same
 * either way), and they pack both layouts into the same panels, so the products have the
 * same bits. So after a load a thread at idle priority copies each layer's (in, out)
 * matrices as (out, in) rows into one mapping of huge pages, layer by layer (claiming the
 * next, so that lp_model_transpose_wait can share the work out), and marks a layer ready
 * when its copies are whole; lp_linear_rows and lp_linear_one_row hand them to products
 * from then on (decode.c sums both layouts alike, to the bit). The backward's dY W^T and the
 * file keep the original. The copies stop at a budget (an eighth of memory, 2 GiB at most):
 * the layers past it keep the original. */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arch/model_impl.h"
#include "util/parallel.h"

struct lp_transposed {
    pthread_t thread;
    lp_model *m;
    int n_layers;           /* layers copied: the first n_layers */
    atomic_bool stop;
    atomic_int next;        /* the first layer no thread has claimed (more once all are) */
    atomic_bool *ready;     /* (n_layers) */
    char *map;
    size_t bytes;
    pthread_mutex_t lock;   /* with cond: a layer became ready */
    pthread_cond_t cond;
};

/* A layer's matrices, in the order their copies are laid out (q, k, v one after another:
 * forward.c's fused q|k|v product finds them so). */
#define LAYER_LINEARS(L) {&(L)->q, &(L)->k, &(L)->v, &(L)->o, &(L)->gate, &(L)->up, &(L)->down}
enum { N_LAYER_LINEARS = 7 };

/* Which of a layer's matrices get a copy: the (in, out) ones; q, k and v only as the column
 * blocks of one matrix (GPT-2's c_attn), all three, so that forward.c's fused product is
 * fused on the copies exactly when it is on the originals. */
static bool wants_copy(const lp_layer *L, const lp_linear *lin) {
    if (!lin->w || lin->trans || lin->in < 1 || lin->out < 1) return false;
    return (lin != &L->q && lin != &L->k && lin != &L->v) || lp_qkv_columns(NULL, L);
}

static size_t layer_bytes(const lp_layer *L) {
    const lp_linear *lins[N_LAYER_LINEARS] = LAYER_LINEARS(L);
    size_t b = 0;
    for (int i = 0; i < N_LAYER_LINEARS; i++)
        if (wants_copy(L, lins[i])) b += (size_t)lins[i]->in * (size_t)lins[i]->out * sizeof(float);
    return b;
}

/* dst (out, in) = src (in rows ld apart, out columns) transposed, in 32 x 32 tiles. */
static void transpose(float *dst, const float *src, int in, int out, int ld) {
    enum { TILE = 32 };
    for (int i0 = 0; i0 < in; i0 += TILE)
        for (int o0 = 0; o0 < out; o0 += TILE) {
            int i1 = i0 + TILE < in ? i0 + TILE : in, o1 = o0 + TILE < out ? o0 + TILE : out;
            for (int o = o0; o < o1; o++)
                for (int i = i0; i < i1; i++) dst[(size_t)o * in + i] = src[(size_t)i * ld + o];
        }
}

/* Claims the next layer no thread has and copies it; false when none is left. */
static bool copy_next_layer(struct lp_transposed *t) {
    int l = atomic_fetch_add(&t->next, 1);
    if (l >= t->n_layers) return false;
    lp_layer *L = &t->m->layers[l];
    const lp_linear *lins[N_LAYER_LINEARS] = LAYER_LINEARS(L);
    for (int i = 0; i < N_LAYER_LINEARS; i++)
        if (lins[i]->wt) transpose((float *)lins[i]->wt, lins[i]->w, lins[i]->in, lins[i]->out, lins[i]->ld);
    pthread_mutex_lock(&t->lock);
    atomic_store_explicit(&t->ready[l], true, memory_order_release);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return true;
}

static void *transpose_main(void *arg) {
    struct lp_transposed *t = arg;
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none); /* a wish: fine if refused */
    while (!atomic_load(&t->stop) && copy_next_layer(t)) {
    }
    return NULL;
}

/* Pool work: copies claimed layers until none is left. */
static void copy_layers(void *ctx, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1 && copy_next_layer(ctx); i++) {
    }
}

/* The first n layers' matrices without their copies. */
static void forget_copies(lp_model *m, int n) {
    for (int l = 0; l < n; l++) {
        lp_layer *L = &m->layers[l];
        lp_linear *lins[N_LAYER_LINEARS] = LAYER_LINEARS(L);
        for (int i = 0; i < N_LAYER_LINEARS; i++) lins[i]->wt = NULL, lins[i]->wt_ready = NULL;
    }
}

static size_t copy_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t phys = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0, cap = (size_t)2 << 30;
    return phys / 8 < cap ? phys / 8 : cap;
}

void lp_model_transpose_start(lp_model *m) {
    if (m->transposed || !m->layers) return;
    size_t budget = copy_budget(), bytes = 0;
    int n = 0;
    while (n < m->cfg.n_layer && layer_bytes(&m->layers[n]) <= budget - bytes) bytes += layer_bytes(&m->layers[n++]);
    if (bytes == 0) return;
    struct lp_transposed *t = calloc(1, sizeof *t);
    atomic_bool *ready = calloc((size_t)n, sizeof *ready);
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!t || !ready || map == MAP_FAILED) goto fail;
    madvise(map, bytes, MADV_HUGEPAGE); /* 4 KB pages would cost the packing most of the gain */
    *t = (struct lp_transposed){.m = m, .n_layers = n, .ready = ready, .map = map, .bytes = bytes};
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    float *at = map;
    for (int l = 0; l < n; l++) {
        lp_layer *L = &m->layers[l];
        lp_linear *lins[N_LAYER_LINEARS] = LAYER_LINEARS(L);
        for (int i = 0; i < N_LAYER_LINEARS; i++)
            if (wants_copy(L, lins[i])) {
                lins[i]->wt = at;
                lins[i]->wt_ready = &ready[l];
                at += (size_t)lins[i]->in * (size_t)lins[i]->out;
            }
    }
    if (pthread_create(&t->thread, NULL, transpose_main, t) == 0) {
        m->transposed = t;
        return;
    }
    forget_copies(m, n);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
fail:
    if (map != MAP_FAILED) munmap(map, bytes);
    free(ready);
    free(t);
}

/* The layers no thread has claimed go to the pool's threads and this one (about 50 ms for
 * GPT-2 small's 340 MB on two threads, where the idle thread alone takes 250); then the
 * wait is for those another thread is still copying. */
void lp_model_transpose_wait(const lp_model *m) {
    struct lp_transposed *t = m->transposed;
    if (!t) return;
    lp_parallel_for((size_t)t->n_layers, 1, copy_layers, t);
    pthread_mutex_lock(&t->lock);
    for (int l = 0; l < t->n_layers; l++)
        while (!atomic_load_explicit(&t->ready[l], memory_order_acquire)) pthread_cond_wait(&t->cond, &t->lock);
    pthread_mutex_unlock(&t->lock);
}

size_t lp_model_transpose_bytes(const lp_model *m) { return m->transposed ? m->transposed->bytes : 0; }

void lp_model_transpose_stop(lp_model *m) {
    struct lp_transposed *t = m->transposed;
    if (!t) return;
    atomic_store(&t->stop, true);
    pthread_join(t->thread, NULL);
    forget_copies(m, t->n_layers);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    munmap(t->map, t->bytes);
    free(t->ready);
    free(t);
    m->transposed = NULL;
}
