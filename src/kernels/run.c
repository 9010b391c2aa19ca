/* A captured run: the arena of every activation for one sequence, filled layer by layer. */
#include "loupe/run.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kernels/forward.h"
#include "loupe/error.h"

static volatile sig_atomic_t cancel_flag;
void lp_cancel_request(void) { cancel_flag = 1; }
void lp_cancel_reset(void) { cancel_flag = 0; }
int lp_cancelled(void) { return cancel_flag != 0; }

/* Arenas are large (hundreds of MB for long runs of big models) and a fresh one costs a
 * page fault per 4 KB on first touch, as much as a third of a forward. So they come from
 * mmap with transparent huge pages requested, and the largest one freed is kept for the
 * next run to reuse, grown (mremap) when that run is longer. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t done;
    float *p;
    size_t bytes;
    bool prefaulting; /* a prefault thread is touching an arena to offer (lp_run_prefault) */
    float *pf;        /* the arena it populates (offered at once: the spare, a run's, or let go) */
    bool pf_let_go;   /* pf was dropped while populated: its thread unmaps it when it stops */
    atomic_bool pf_stop; /* tells the thread to stop after the piece it is on */
} spare = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, false, NULL, false, false};

#define HUGE_PAGE ((size_t)2 << 20)

/* With the lock held: whether p, being dropped, may be unmapped now. The arena a prefault
 * thread is populating is left to that thread, told to stop. */
static bool may_unmap(const float *p) {
    if (!spare.prefaulting || p != spare.pf) return true;
    spare.pf_let_go = true;
    atomic_store(&spare.pf_stop, true);
    return false;
}

static float *arena_take(size_t want, size_t *got) {
    pthread_mutex_lock(&spare.lock);
    float *p = NULL;
    if (spare.p && spare.bytes >= want) {
        p = spare.p;
        *got = spare.bytes;
        spare.p = NULL;
        spare.bytes = 0;
    }
    size_t bytes = (want + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *m = MAP_FAILED;
    if (!p && spare.p && !may_unmap(spare.p)) { /* being populated: not moved under its thread */
        spare.p = NULL;
        spare.bytes = 0;
    }
    if (!p && spare.p) { /* too small: grown, its pages already touched stay (only the rest is new) */
        m = mremap(spare.p, spare.bytes, bytes, MREMAP_MAYMOVE);
        if (m != MAP_FAILED) spare.p = NULL, spare.bytes = 0;
    }
    pthread_mutex_unlock(&spare.lock);
    if (p) return p;
    if (m == MAP_FAILED) m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    madvise(m, bytes, MADV_HUGEPAGE); /* a hint: fine if the kernel says no */
    *got = bytes;
    return m;
}

static void arena_give(float *p, size_t bytes) {
    if (!p) return;
    pthread_mutex_lock(&spare.lock);
    if (!spare.p || spare.bytes < bytes) { /* keep the larger of the two */
        float *old = spare.p;
        size_t old_bytes = spare.bytes;
        spare.p = p;
        spare.bytes = bytes;
        p = old;
        bytes = old_bytes;
    }
    if (p && !may_unmap(p)) p = NULL;
    pthread_mutex_unlock(&spare.lock);
    if (p) munmap(p, bytes);
}

/* With the lock held: offers m (bytes) as the spare when it beats the one kept; returns
 * what is to be unmapped (the old spare, or m itself), NULL for nothing, *drop its size. */
static float *offer_locked(float *m, size_t bytes, size_t *drop) {
    *drop = bytes;
    if (spare.p && spare.bytes >= bytes) return m;
    float *old = spare.p;
    *drop = spare.bytes;
    spare.p = m;
    spare.bytes = bytes;
    return old;
}

/* Page faults the prefault threads took (off the critical path: bench tells them apart). */
static atomic_long prefault_faults;

long lp_run_prefault_faults(void) { return atomic_load(&prefault_faults); }

static long thread_faults(void) {
    struct rusage u;
    return getrusage(RUSAGE_THREAD, &u) == 0 ? u.ru_minflt : 0;
}

/* Adds this thread's faults since *since to the count. */
static void count_faults(long *since) {
    long now = thread_faults();
    atomic_fetch_add(&prefault_faults, now - *since);
    *since = now;
}

/* The prefault thread: at idle priority (it runs only on a core nothing else wants), maps an
 * arena of `bytes`, offers it at once as the spare when it beats the one kept, and populates
 * it 2 MB at a time with MADV_POPULATE_WRITE, which faults pages in without writing to them:
 * a run that takes the arena meanwhile finds the pages populated so far, and populating goes
 * on under it. Where the kernel has no MADV_POPULATE_WRITE (before Linux 5.14), the pages are
 * written instead and the arena is offered when they are all touched. */
static void *prefault_main(void *arg) {
    size_t bytes = (size_t)(uintptr_t)arg;
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none); /* a wish: fine if refused */
    long f0 = thread_faults();
    char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    float *drop = NULL;
    size_t drop_bytes = 0;
    if (m != MAP_FAILED) {
        madvise(m, bytes, MADV_HUGEPAGE);
        size_t first = bytes < HUGE_PAGE ? bytes : HUGE_PAGE;
        if (madvise(m, first, MADV_POPULATE_WRITE) == 0) {
            pthread_mutex_lock(&spare.lock);
            drop = offer_locked((float *)m, bytes, &drop_bytes);
            bool kept = drop != (float *)m; /* else a spare as large came meanwhile: m is dropped */
            if (kept) spare.pf = (float *)m;
            pthread_mutex_unlock(&spare.lock);
            if (drop) munmap(drop, drop_bytes);
            drop = NULL;
            for (size_t at = first; kept && at < bytes && !atomic_load(&spare.pf_stop); at += HUGE_PAGE) {
                if (madvise(m + at, bytes - at < HUGE_PAGE ? bytes - at : HUGE_PAGE, MADV_POPULATE_WRITE)) break;
                count_faults(&f0);
            }
            m = NULL; /* offered, or dropped */
        } else {
            size_t page = (size_t)sysconf(_SC_PAGESIZE);
            for (size_t at = 0; at < bytes; at += page) ((volatile char *)m)[at] = 0;
        }
    }
    count_faults(&f0);
    pthread_mutex_lock(&spare.lock);
    if (m && m != MAP_FAILED) drop = offer_locked((float *)m, bytes, &drop_bytes);
    if (spare.pf_let_go) drop = spare.pf, drop_bytes = bytes;
    spare.pf = NULL;
    spare.pf_let_go = false;
    atomic_store(&spare.pf_stop, false);
    spare.prefaulting = false;
    pthread_cond_broadcast(&spare.done);
    pthread_mutex_unlock(&spare.lock);
    if (drop) munmap(drop, drop_bytes);
    return NULL;
}

/* At most this much is touched ahead: an eighth of the machine's memory, and 2 GiB. */
static size_t prefault_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t phys = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0, cap = (size_t)2 << 30;
    return phys / 8 < cap ? phys / 8 : cap;
}

int lp_run_prefault(const lp_model *m) {
    if (m->cfg.cross_attn || m->cfg.n_ctx < 1) return 0; /* an encoder-decoder's runs take two arenas */
    /* the longest run whose arena fits the budget (arenas grow with the length) */
    size_t budget = prefault_budget();
    int lo = 0, hi = m->cfg.n_ctx;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (lp_run_batch_bytes(m, 1, &mid) <= budget) lo = mid;
        else hi = mid - 1;
    }
    if (lo < 1) return 0;
    size_t bytes = (lp_run_batch_bytes(m, 1, &lo) + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    pthread_mutex_lock(&spare.lock);
    bool start = !spare.prefaulting && spare.bytes < bytes;
    pthread_t t;
    if (start && pthread_create(&t, NULL, prefault_main, (void *)(uintptr_t)bytes) == 0) {
        pthread_detach(t);
        spare.prefaulting = true;
    } else {
        start = false;
    }
    pthread_mutex_unlock(&spare.lock);
    return start ? lo : 0;
}

void lp_run_prefault_wait(void) {
    pthread_mutex_lock(&spare.lock);
    while (spare.prefaulting) pthread_cond_wait(&spare.done, &spare.lock);
    pthread_mutex_unlock(&spare.lock);
}

void lp_run_release_cache(void) {
    pthread_mutex_lock(&spare.lock);
    if (spare.prefaulting) atomic_store(&spare.pf_stop, true); /* it stops after the piece it is on */
    while (spare.prefaulting) pthread_cond_wait(&spare.done, &spare.lock);
    float *p = spare.p;
    size_t bytes = spare.bytes;
    spare.p = NULL;
    spare.bytes = 0;
    pthread_mutex_unlock(&spare.lock);
    if (p) munmap(p, bytes);
}

/* An arena and how many runs point into it: one, or the runs of one packed forward. */
typedef struct {
    float *p;
    size_t bytes;          /* mapped */
    int refs;
} arena_share;

/* Every capture is a slice of one arena; the shape comments give the whole slice. A run of a
 * packed forward (lp_run_new_batch) holds rows [row0, row0 + T) of the batch's slices, whose
 * layers are LT rows apart (the batch's rows together); a layer's patterns are every
 * sequence's (H, T, T) one after another, LP floats. A lone run: LT = T, LP = H * T * T. */
struct lp_run {
    const lp_model *m;
    int T;
    int *ids;              /* (T) */
    int *types;            /* (T) token types */
    int out_rows, out_w;   /* logits (out_rows, out_w); head_rows rows of head_hidden */
    int head_rows;
    arena_share *arena;
    size_t arena_floats;   /* what a lone run of T uses */
    size_t LT, LP;
    float *resid;          /* (L + 1, T, d): resid[l] enters layer l, resid[L] leaves the last */
    float *ln1, *ln1_scale;/* (L, T, d), (L, T) */
    float *q;              /* (L, T, H * dh) */
    float *k, *v;          /* (L, T, Hkv * dh) */
    float *pattern;        /* (L, H, T, T) */
    float *pattern_stats;  /* (L, H, T, 2), layers 2 H LT floats apart: each pattern row's entropy
                            * and largest entry */
    float *z;              /* (L, T, H * dh) */
    float *attn_out;       /* (L, T, d) */
    float *resid_mid;      /* (L, T, d) */
    float *ln2, *ln2_scale;/* (L, T, d), (L, T) */
    float *mlp_pre;        /* (L, T, dm) */
    float *mlp_up;         /* (L, T, dm), SwiGLU only, else NULL */
    float *mlp_post;       /* (L, T, dm) */
    float *mlp_out;        /* (L, T, d) */
    float *lnf, *lnf_scale;/* (T, d), (T) */
    float *logits;         /* (out_rows, out_w): (T, V), (1, n_labels) or nothing */
    float *head_hidden;    /* (head_rows, d): the head's vector before its output layer */
    float *rope_cos, *rope_sin; /* (T, dh / 2) */
    /* an encoder-decoder's decoder (cfg.cross_attn): the encoder's run and the cross-attention */
    lp_run *src;           /* owned */
    int S;                 /* source length; 0 for other runs */
    float *lnx, *lnx_scale;/* (L, T, d), (L, T) */
    float *xq, *xk, *xv;   /* (L, T, H * dh), (L, S, H * dh) x 2 */
    float *xpattern;       /* (L, H, T, S) */
    float *xz;             /* (L, T, H * dh) */
    float *xattn_out, *resid_cross; /* (L, T, d) */
    float *emb_sum;        /* (T, d) cfg.emb_norm: the summed embeddings before their LayerNorm, the
                            * input an encoder's attributions vary (given or looked up) */
    float *post1_scale, *post2_scale; /* (L, T) cfg.sandwich_norm: the scales of the norms on attention's
                            * and the MLP's outputs; else NULL */
};

static const char *const ACT_NAMES[LP_ACT_COUNT] = {
    "resid_pre", "ln1", "ln1_scale", "q", "k", "v", "pattern", "z", "attn_out", "resid_mid", "ln2", "ln2_scale",
    "mlp_pre", "mlp_up", "mlp_post", "mlp_out", "resid_post", "ln_final", "ln_final_scale", "logits", "head_hidden",
    "ln_cross", "cross_pattern", "cross_z", "cross_out", "resid_mid_cross"};

const char *lp_act_name(lp_act_kind kind) { return kind < LP_ACT_COUNT ? ACT_NAMES[kind] : "?"; }

int lp_act_from_name(const char *name, lp_act_kind *out) {
    if (strcmp(name, "pooled") == 0) name = "head_hidden";
    for (int i = 0; i < LP_ACT_COUNT; i++)
        if (strcmp(name, ACT_NAMES[i]) == 0) {
            *out = (lp_act_kind)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown activation '%s' (try resid_pre, attn_out, mlp_out, resid_post, pattern, ...)",
                    name);
}

/* Lays the slices out in the arena (or, with base NULL, just counts the floats). */
static size_t layout(lp_run *r, float *base) {
    const lp_config *c = &r->m->cfg;
    size_t L = c->n_layer, T = r->T, d = c->d_model, H = c->n_head, dh = c->d_head;
    size_t qd = H * dh, kvd = (size_t)c->n_kv_head * dh, dm = c->d_mlp;
    size_t at = 0;
#define SLICE(field, n) (r->field = base ? base + at : NULL, at += (n))
    SLICE(resid, (L + 1) * T * d);
    SLICE(ln1, L * T * d);
    SLICE(ln1_scale, L * T);
    SLICE(q, L * T * qd);
    SLICE(k, L * T * kvd);
    SLICE(v, L * T * kvd);
    SLICE(pattern, L * r->LP);
    SLICE(pattern_stats, L * H * T * 2);
    SLICE(z, L * T * qd);
    SLICE(attn_out, L * T * d);
    SLICE(resid_mid, L * T * d);
    SLICE(ln2, L * T * d);
    SLICE(ln2_scale, L * T);
    SLICE(mlp_pre, L * T * dm);
    SLICE(mlp_up, lp_mlp_gated(c) ? L * T * dm : 0);
    SLICE(mlp_post, L * T * dm);
    SLICE(mlp_out, L * T * d);
    SLICE(lnf, T * d);
    SLICE(lnf_scale, T);
    SLICE(logits, (size_t)r->out_rows * r->out_w);
    SLICE(head_hidden, (size_t)r->head_rows * d);
    SLICE(rope_cos, T * (dh / 2));
    SLICE(rope_sin, T * (dh / 2));
    size_t S = r->S; /* 0 unless cross-attention: the slices below are then empty */
    SLICE(lnx, L * T * d * !!S);
    SLICE(lnx_scale, L * T * !!S);
    SLICE(xq, L * T * qd * !!S);
    SLICE(xk, L * S * qd);
    SLICE(xv, L * S * qd);
    SLICE(xpattern, L * H * T * S);
    SLICE(xz, L * T * qd * !!S);
    SLICE(xattn_out, L * T * d * !!S);
    SLICE(resid_cross, L * T * d * !!S);
    SLICE(emb_sum, c->emb_norm ? T * d : 0);
    SLICE(post1_scale, c->sandwich_norm ? L * T : 0);
    SLICE(post2_scale, c->sandwich_norm ? L * T : 0);
#undef SLICE
    if (!lp_mlp_gated(c)) r->mlp_up = NULL;
    if (!c->emb_norm) r->emb_sum = NULL;
    if (!c->sandwich_norm) r->post1_scale = r->post2_scale = NULL;
    return at;
}

void lp_head_forward(float *h, float *logits, const lp_model *m, const float *x, int rows) {
    const lp_head *hd = &m->head;
    int d = m->cfg.d_model;
    size_t n = (size_t)rows * d;
    lp_linear_forward(h, x, &hd->dense, rows);
    for (size_t i = 0; i < n; i++) h[i] = (float)lp_head_act_value(hd->act, h[i]);
    if (hd->ln_w)
        for (int i = 0; i < rows; i++) {
            float scale;
            lp_norm(h + (size_t)i * d, &scale, h + (size_t)i * d, hd->ln_w, hd->ln_b, 1, d, LP_NORM_LAYERNORM, hd->ln_eps);
        }
    if (m->unembed.w) lp_linear_forward(logits, h, &m->unembed, rows);
}

int lp_run_new(lp_run **out, const lp_model *m, const int *ids, int n) {
    return lp_run_new_typed(out, m, ids, NULL, n);
}

int lp_run_new_typed(lp_run **out, const lp_model *m, const int *ids, const int *types, int n) {
    return lp_run_new_embedded(out, m, ids, types, NULL, n);
}

int lp_run_check(const lp_model *m, const int *ids, const int *types, int n) {
    const lp_config *c = &m->cfg;
    if (n < 1) return lp_error(LP_EINVAL, "nothing to run: the sequence is empty");
    if (n > c->n_ctx)
        return lp_error(LP_ERANGE, "%d tokens exceed the model's context of %d; shorten the input", n, c->n_ctx);
    for (int i = 0; ids && i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return lp_error(LP_EINVAL, "token id %d at position %d is outside the vocabulary (0..%d)", ids[i], i,
                            c->vocab - 1);
    for (int i = 0; types && i < n; i++)
        if (types[i] < 0 || types[i] >= (c->type_vocab ? c->type_vocab : 1)) {
            if (!c->type_vocab)
                return lp_error(LP_EINVAL, "token type %d at position %d: this model has no token types (all must be 0)",
                                types[i], i);
            return lp_error(LP_EINVAL, "token type %d at position %d is outside the model's types (0..%d)", types[i], i,
                            c->type_vocab - 1);
        }
    return LP_OK;
}

/* The shape of a stack of seqs sequences, T rows in all, LP pattern floats a layer: what
 * layout lays out. */
static void shape(lp_run *r, size_t T, size_t LP, int seqs) {
    const lp_config *c = &r->m->cfg;
    bool per_token = c->head != LP_HEAD_CLASSIFIER && c->head != LP_HEAD_NONE; /* a logits row a position */
    r->T = (int)T;
    r->LT = T;
    r->LP = LP;
    r->out_rows = per_token ? (int)T : c->head == LP_HEAD_CLASSIFIER ? seqs : 0;
    r->out_w = c->head == LP_HEAD_CLASSIFIER ? c->n_labels : c->head == LP_HEAD_NONE ? 0 : c->vocab;
    r->head_rows = !r->m->head.dense.w ? 0 : c->head == LP_HEAD_MLM ? (int)T : seqs;
}

/* Run r as sequence b of the stack st: its rows from row0, its patterns from poff in each
 * layer's; r's T and the shape of its head are set. The cross-attention's slices are a lone
 * run's (a stack of one). */
static void member(lp_run *r, const lp_run *st, size_t row0, size_t poff, int b) {
    const lp_config *c = &st->m->cfg;
    size_t d = c->d_model, qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head;
    size_t dm = c->d_mlp, half = (size_t)c->d_head / 2, T = (size_t)r->T;
    shape(r, T, (size_t)c->n_head * T * T, 1);
    r->LT = st->LT;
    r->LP = st->LP;
    r->resid = st->resid + row0 * d;
    r->ln1 = st->ln1 + row0 * d;
    r->ln1_scale = st->ln1_scale + row0;
    r->q = st->q + row0 * qd;
    r->k = st->k + row0 * kvd;
    r->v = st->v + row0 * kvd;
    r->pattern = st->pattern + poff;
    r->pattern_stats = st->pattern_stats + row0 * 2 * (size_t)c->n_head;
    r->z = st->z + row0 * qd;
    r->attn_out = st->attn_out + row0 * d;
    r->resid_mid = st->resid_mid + row0 * d;
    r->ln2 = st->ln2 + row0 * d;
    r->ln2_scale = st->ln2_scale + row0;
    r->mlp_pre = st->mlp_pre + row0 * dm;
    r->mlp_up = st->mlp_up ? st->mlp_up + row0 * dm : NULL;
    r->mlp_post = st->mlp_post + row0 * dm;
    r->mlp_out = st->mlp_out + row0 * d;
    r->lnf = st->lnf + row0 * d;
    r->lnf_scale = st->lnf_scale + row0;
    r->logits = st->logits + (r->out_rows == r->T ? row0 : (size_t)b) * r->out_w;
    r->head_hidden = st->head_hidden + (r->head_rows == r->T ? row0 : (size_t)b) * d;
    r->rope_cos = st->rope_cos + row0 * half;
    r->rope_sin = st->rope_sin + row0 * half;
    r->emb_sum = st->emb_sum ? st->emb_sum + row0 * d : NULL;
    r->post1_scale = st->post1_scale ? st->post1_scale + row0 : NULL;
    r->post2_scale = st->post2_scale ? st->post2_scale + row0 : NULL;
    r->lnx = st->lnx, r->lnx_scale = st->lnx_scale, r->xq = st->xq, r->xk = st->xk, r->xv = st->xv;
    r->xpattern = st->xpattern, r->xz = st->xz, r->xattn_out = st->xattn_out, r->resid_cross = st->resid_cross;
}

/* Frees the runs out[0..B) and clears them. */
static void free_runs(lp_run **out, int B) {
    for (int b = 0; b < B; b++) {
        lp_run_free(out[b]);
        out[b] = NULL;
    }
}

/* The runs of B sequences (ids[b] or, for one sequence, the embeddings sum) through m, packed:
 * their rows one after another through every norm and product, attention within each
 * sequence (forward.h's seg). A lone run is the stack of one. src: the encoder's run when m
 * is an encoder-decoder's decoder (taken over: freed with the run, or here on failure); src,
 * sum and edit are for one sequence only. */
static int runs_new(lp_run **out, const lp_model *m, int B, const int *const *ids, const int *const *types,
                    const int *lens, const float *sum, lp_run *src, const lp_edit *edit) {
    lp_edit none = {0};
    if (!edit) edit = &none;
    const lp_config *c = &m->cfg;
    assert(B >= 1 && (B == 1 || (!src && !sum && !edit->fn)));
    for (int b = 0; b < B; b++) out[b] = NULL;
    if (c->cross_attn && !src)
        return lp_error(LP_EINVAL, "%s is an encoder-decoder: a run needs a source for the encoder and the decoder's "
                        "input (run SOURCE --target TEXT)", c->arch);
    if (!ids && !sum) {
        lp_run_free(src);
        return lp_error(LP_EINVAL, "a run needs ids or embeddings");
    }
    size_t N = 0, P = 0, H = c->n_head;
    int maxn = 0;
    for (int b = 0; b < B; b++) {
        int rc = lp_run_check(m, ids ? ids[b] : NULL, types ? types[b] : NULL, lens[b]);
        if (rc) {
            lp_run_free(src);
            if (B == 1) return rc;
            char why[512];
            snprintf(why, sizeof why, "%s", lp_errmsg());
            return lp_error(rc, "sequence %d of the batch: %s", b, why);
        }
        N += (size_t)lens[b];
        P += H * lens[b] * lens[b];
        maxn = lens[b] > maxn ? lens[b] : maxn;
    }
    lp_run st = {.m = m, .src = src, .S = src ? src->T : 0};
    shape(&st, N, P, B);
    size_t floats = layout(&st, NULL);
    arena_share *ar = calloc(1, sizeof *ar);
    int *rel = c->pos == LP_POS_RELATIVE ? malloc((size_t)(2 * maxn - 1) * sizeof *rel) : NULL;
    int *seg = B > 1 ? malloc((size_t)(B + 1) * sizeof *seg) : NULL;
    bool ok = ar && (c->pos != LP_POS_RELATIVE || rel) && (B == 1 || seg);
    if (ok) ar->p = arena_take(floats * sizeof(float), &ar->bytes);
    ok = ok && ar->p;
    for (int b = 0; ok && b < B; b++) { /* each run made holds a reference to the arena */
        lp_run *r = out[b] = calloc(1, sizeof *r);
        if (!r) {
            ok = false;
            break;
        }
        r->m = m;
        r->T = lens[b];
        r->arena = ar;
        ar->refs++;
        r->ids = malloc((size_t)lens[b] * sizeof *r->ids);
        r->types = calloc((size_t)lens[b], sizeof *r->types);
        ok = r->ids && r->types;
    }
    if (!ok) {
        bool held = ar && ar->refs; /* then freeing the runs returns the arena */
        if (out[0]) out[0]->src = src;
        else lp_run_free(src);
        free_runs(out, B);
        if (ar && !held) {
            if (ar->p) arena_give(ar->p, ar->bytes);
            free(ar);
        }
        free(rel);
        free(seg);
        double mb = (double)floats * sizeof(float) / 1e6;
        if (B == 1) return lp_error(LP_ENOMEM, "out of memory: a run of %d tokens needs %.1f MB of activations", lens[0], mb);
        return lp_error(LP_ENOMEM, "out of memory: a batch of %d runs (%zu tokens) needs %.1f MB of activations", B, N, mb);
    }
    layout(&st, ar->p);
    out[0]->src = src;
    out[0]->S = st.S;

    size_t d = c->d_model, qd = H * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head, dm = c->d_mlp, S = st.S;
    size_t half = (size_t)c->d_head / 2, row0 = 0, poff = 0;
    for (int b = 0; b < B; b++) {
        lp_run *r = out[b];
        size_t n = (size_t)lens[b];
        member(r, &st, row0, poff, b);
        lp_run tmp = {.m = m, .S = st.S};
        shape(&tmp, n, H * n * n, 1);
        r->arena_floats = layout(&tmp, NULL);
        if (ids) memcpy(r->ids, ids[b], n * sizeof *r->ids);
        else memset(r->ids, 0, n * sizeof *r->ids);
        if (types && types[b]) memcpy(r->types, types[b], n * sizeof *r->types);
        if (seg) seg[b] = (int)row0, seg[b + 1] = (int)(row0 + n);
        if (!c->emb_norm) {
            if (sum) memcpy(r->resid, sum, n * d * sizeof *r->resid);
            else lp_embed(r->resid, m, r->ids, r->types, 0, (int)n);
        } else { /* the sum is kept: an encoder's gradient and attributions are taken with respect to it */
            if (sum) memcpy(r->emb_sum, sum, n * d * sizeof *r->emb_sum);
            else lp_embed_sum(r->emb_sum, m, r->ids, r->types, 0, (int)n);
            for (size_t i = 0; i < n; i++) {
                float scale;
                lp_norm(r->resid + i * d, &scale, r->emb_sum + i * d, m->emb_ln_w, m->emb_ln_b, 1, (int)d,
                        LP_NORM_LAYERNORM, c->norm_eps);
            }
        }
        if (lp_pos_rotary(c)) lp_rope_tables(st.rope_cos + row0 * half, st.rope_sin + row0 * half, c, 0, (int)n);
        row0 += n;
        poff += H * n * n;
    }
    for (int k = -(maxn - 1); rel && k <= maxn - 1; k++)
        rel[k + maxn - 1] = lp_rel_bucket(k, !c->causal, c->rel_buckets, c->rel_max_distance);
    size_t T = N;
    int rc = LP_OK;
    for (int l = 0; l < c->n_layer && !rc; l++) {
        if (lp_cancelled()) {
            rc = lp_error(LP_ECANCEL, "cancelled");
            break;
        }
        size_t L = l;
        if (edit->fn) edit->fn(edit->ctx, l, LP_ACT_RESID_PRE, st.resid + L * T * d, (int)T);
        lp_layer_io io = {
            .resid_in = st.resid + L * T * d,
            .ln1 = st.ln1 + L * T * d,
            .ln1_scale = st.ln1_scale + L * T,
            .q = st.q + L * T * qd,
            .k = st.k + L * T * kvd,
            .v = st.v + L * T * kvd,
            .pattern = st.pattern + L * P,
            .pattern_ld = (int)T,
            .pattern_stats = st.pattern_stats + L * H * T * 2,
            .seg = seg,
            .n_seg = B,
            .z = st.z + L * T * qd,
            .attn_out = st.attn_out + L * T * d,
            .resid_mid = st.resid_mid + L * T * d,
            .ln2 = st.ln2 + L * T * d,
            .ln2_scale = st.ln2_scale + L * T,
            .mlp_pre = st.mlp_pre + L * T * dm,
            .mlp_up = st.mlp_up ? st.mlp_up + L * T * dm : NULL,
            .mlp_post = st.mlp_post + L * T * dm,
            .mlp_out = st.mlp_out + L * T * d,
            .resid_out = st.resid + (L + 1) * T * d,
            .post1_scale = st.post1_scale ? st.post1_scale + L * T : NULL,
            .post2_scale = st.post2_scale ? st.post2_scale + L * T : NULL,
            .rel_bias = m->rel_bias,
            .rel_bucket = rel,
            .rel_off = maxn - 1,
            .edit = *edit,
        };
        if (S) {
            /* the encoder's output through this layer's cross keys and values, once */
            float *xk = st.xk + L * S * qd, *xv = st.xv + L * S * qd;
            lp_linear_forward(xk, src->lnf, &m->layers[l].xk, (int)S);
            lp_linear_forward(xv, src->lnf, &m->layers[l].xv, (int)S);
            io.S = (int)S;
            io.xk = xk;
            io.xv = xv;
            io.lnx = st.lnx + L * T * d;
            io.lnx_scale = st.lnx_scale + L * T;
            io.xq = st.xq + L * T * qd;
            io.xpattern = st.xpattern + L * H * T * S;
            io.xz = st.xz + L * T * qd;
            io.xattn_out = st.xattn_out + L * T * d;
            io.resid_cross = st.resid_cross + L * T * d;
        }
        lp_layer_forward(m, l, &io, st.rope_cos, st.rope_sin, 0, (int)T);
    }
    free(rel);
    free(seg);
    if (!rc) {
        const float *last = st.resid + (size_t)c->n_layer * T * d;
        if (m->lnf_w) {
            lp_norm(st.lnf, st.lnf_scale, last, m->lnf_w, m->lnf_b, (int)T, (int)d, c->norm, c->norm_eps);
        } else { /* post-norm: the last block's norm was the final one */
            memcpy(st.lnf, last, T * d * sizeof *st.lnf);
            for (size_t i = 0; i < T; i++) st.lnf_scale[i] = 1.0f;
        }
        if (c->head == LP_HEAD_LM) {
            lp_linear_forward(st.logits, st.lnf, &m->unembed, (int)T);
            lp_softcap(st.logits, T * (size_t)c->vocab, c->final_softcap); /* Gemma2ForCausalLM */
        } else
            for (int b = 0; b < B && out[b]->head_rows; b++)
                lp_head_forward(out[b]->head_hidden, out[b]->logits, m, out[b]->lnf, out[b]->head_rows);
    }
    /* Finite weights can still overflow float32 on the way; say where rather than hand on
     * results that every reader would have to doubt. */
    for (int b = 0; b < B && !rc; b++) {
        const lp_run *r = out[b];
        size_t n = (size_t)r->T;
        if (lp_first_nonfinite(r->logits, (size_t)r->out_rows * r->out_w) < 0 && lp_first_nonfinite(r->lnf, n * d) < 0)
            continue;
        int l = 0;
        while (l < c->n_layer && lp_first_nonfinite(r->resid + (size_t)(l + 1) * T * d, n * d) < 0) l++;
        char which[48] = "";
        if (B > 1) snprintf(which, sizeof which, "sequence %d of the batch: ", b);
        if (l < c->n_layer)
            rc = lp_error(LP_ERANGE, "%sthe forward pass overflowed float32: the output of layer %d holds inf or NaN "
                          "(weights too large for this input?)", which, l);
        else
            rc = lp_error(LP_ERANGE, "%sthe forward pass overflowed float32: the logits hold inf or NaN (weights too "
                          "large for this input?)", which);
    }
    if (rc) free_runs(out, B);
    return rc;
}

static int run_new(lp_run **out, const lp_model *m, const int *ids, const int *types, const float *sum, int n,
                   lp_run *src, const lp_edit *edit) {
    const int *const idv[1] = {ids}, *const tv[1] = {types};
    return runs_new(out, m, 1, ids ? idv : NULL, tv, &n, sum, src, edit);
}

size_t lp_run_batch_bytes(const lp_model *m, int B, const int *n) {
    size_t N = 0, P = 0, H = m->cfg.n_head;
    for (int b = 0; b < B; b++) N += (size_t)n[b], P += H * n[b] * n[b];
    lp_run st = {.m = m};
    shape(&st, N, P, B);
    return layout(&st, NULL) * sizeof(float);
}

int lp_run_new_batch(lp_run **out, const lp_model *m, int B, const int *const *ids, const int *const *types,
                     const int *n) {
    for (int b = 0; b < B; b++) out[b] = NULL;
    if (B < 1 || B > LP_RUN_BATCH_MAX)
        return lp_error(LP_EINVAL, "a batch holds 1 to %d sequences, not %d", LP_RUN_BATCH_MAX, B);
    if (m->cfg.cross_attn)
        return lp_error(LP_EUNSUPPORTED, "%s is an encoder-decoder: its runs are made one at a time", m->cfg.arch);
    return runs_new(out, m, B, ids, types, n, NULL, NULL, NULL);
}

int lp_run_new_embedded(lp_run **out, const lp_model *m, const int *ids, const int *types, const float *sum, int n) {
    return run_new(out, m, ids, types, sum, n, NULL, NULL);
}

int lp_run_new_edited(lp_run **out, const lp_model *m, const int *ids, const int *types, int n, const lp_edit *edit) {
    return run_new(out, m, ids, types, NULL, n, NULL, edit);
}

int lp_run_new_seq2seq(lp_run **out, const lp_model *m, const int *src, int S, const int *ids, int n) {
    return lp_run_new_seq2seq_embedded(out, m, src, NULL, S, ids, NULL, n);
}

int lp_run_new_seq2seq_embedded(lp_run **out, const lp_model *m, const int *src, const float *src_x, int S,
                                const int *ids, const float *x, int n) {
    *out = NULL;
    if (!m->encoder)
        return lp_error(LP_EINVAL, "%s is not an encoder-decoder: it takes one sequence, not a source and a target",
                        m->cfg.arch);
    lp_run *enc;
    int rc = lp_run_new_embedded(&enc, m->encoder, src, NULL, src_x, S);
    if (rc) return rc;
    return run_new(out, m, ids, NULL, x, n, enc, NULL);
}

const lp_run *lp_run_source(const lp_run *r) { return r->src; }

void lp_run_cross_tape(const lp_run *r, int layer, const float **lnx_scale, const float **xq, const float **xk,
                       const float **xv) {
    size_t L = layer, T = r->T, S = r->S, qd = (size_t)r->m->cfg.n_head * r->m->cfg.d_head;
    *lnx_scale = r->lnx_scale + L * T;
    *xq = r->xq + L * T * qd;
    *xk = r->xk + L * S * qd;
    *xv = r->xv + L * S * qd;
}

void lp_run_post_scales(const lp_run *r, int layer, const float **post1, const float **post2) {
    size_t L = layer, T = r->LT; /* layers are the batch's rows apart */
    *post1 = r->post1_scale ? r->post1_scale + L * T : NULL;
    *post2 = r->post2_scale ? r->post2_scale + L * T : NULL;
}

void lp_run_free(lp_run *r) {
    if (!r) return;
    lp_run_free(r->src);
    free(r->ids);
    free(r->types);
    if (r->arena && __atomic_sub_fetch(&r->arena->refs, 1, __ATOMIC_ACQ_REL) == 0) { /* the last run of its batch */
        arena_give(r->arena->p, r->arena->bytes);
        free(r->arena);
    }
    free(r);
}

const lp_model *lp_run_model(const lp_run *r) { return r->m; }
int lp_run_len(const lp_run *r) { return r->T; }
const int *lp_run_ids(const lp_run *r) { return r->ids; }
size_t lp_run_arena_bytes(const lp_run *r) { return r->arena_floats * sizeof(float); }
const float *lp_run_pattern_stats(const lp_run *r, int layer, int head) {
    size_t H = (size_t)r->m->cfg.n_head;
    return r->pattern_stats + (size_t)layer * 2 * H * r->LT + (size_t)head * (size_t)r->T * 2;
}
const int *lp_run_types(const lp_run *r) { return r->types; }
const float *lp_run_embed_sum(const lp_run *r) { return r->emb_sum; }
int lp_run_out_rows(const lp_run *r) { return r->out_rows; }
int lp_run_out_width(const lp_run *r) { return r->out_w; }
const float *lp_run_logits(const lp_run *r, int pos) {
    return pos >= 0 && pos < r->out_rows ? r->logits + (size_t)pos * r->out_w : NULL;
}

static void view2(lp_view *v, const float *data, int rows, int cols, long row_stride) {
    *v = (lp_view){data, 2, {rows, cols}, {row_stride, 1}};
}

int lp_run_view(const lp_run *r, lp_act_kind kind, int layer, int head, lp_view *out) {
    const lp_config *c = &r->m->cfg;
    int T = r->T, d = c->d_model, dh = c->d_head, H = c->n_head, Hkv = c->n_kv_head, dm = c->d_mlp;
    bool per_layer = kind != LP_ACT_LN_FINAL && kind != LP_ACT_LN_FINAL_SCALE && kind != LP_ACT_LOGITS &&
                     kind != LP_ACT_HEAD_HIDDEN;
    if ((unsigned)kind >= LP_ACT_COUNT) return lp_error(LP_EINVAL, "unknown activation kind %d", (int)kind);
    bool cross = kind >= LP_ACT_LN_CROSS && kind <= LP_ACT_RESID_MID_CROSS;
    if (cross && !r->S)
        return lp_error(LP_EINVAL, "%s: only the decoder of an encoder-decoder has cross-attention", lp_act_name(kind));
    if (per_layer && (layer < 0 || layer >= c->n_layer))
        return lp_error(LP_EINVAL, "layer %d is out of range: the model has layers 0..%d", layer, c->n_layer - 1);
    bool per_head = kind == LP_ACT_Q || kind == LP_ACT_K || kind == LP_ACT_V || kind == LP_ACT_Z ||
                    kind == LP_ACT_PATTERN || kind == LP_ACT_CROSS_PATTERN || kind == LP_ACT_CROSS_Z;
    int heads = (kind == LP_ACT_K || kind == LP_ACT_V) ? Hkv : H;
    if (per_head && (head < -1 || head >= heads))
        return lp_error(LP_EINVAL, "head %d is out of range: %s has heads 0..%d", head, lp_act_name(kind), heads - 1);
    if (!per_head && head != -1 && head != 0)
        return lp_error(LP_EINVAL, "%s is not per head", lp_act_name(kind));
    size_t L = layer, TT = T, LT = r->LT;
    switch (kind) {
    case LP_ACT_RESID_PRE: view2(out, r->resid + L * LT * d, T, d, d); break;
    case LP_ACT_RESID_POST: view2(out, r->resid + (L + 1) * LT * d, T, d, d); break;
    case LP_ACT_RESID_MID: view2(out, r->resid_mid + L * LT * d, T, d, d); break;
    case LP_ACT_LN1: view2(out, r->ln1 + L * LT * d, T, d, d); break;
    case LP_ACT_LN2: view2(out, r->ln2 + L * LT * d, T, d, d); break;
    case LP_ACT_ATTN_OUT: view2(out, r->attn_out + L * LT * d, T, d, d); break;
    case LP_ACT_MLP_OUT: view2(out, r->mlp_out + L * LT * d, T, d, d); break;
    case LP_ACT_MLP_PRE: view2(out, r->mlp_pre + L * LT * dm, T, dm, dm); break;
    case LP_ACT_MLP_POST: view2(out, r->mlp_post + L * LT * dm, T, dm, dm); break;
    case LP_ACT_MLP_UP:
        if (!r->mlp_up) return lp_error(LP_EINVAL, "mlp_up exists only for SwiGLU models");
        view2(out, r->mlp_up + L * LT * dm, T, dm, dm);
        break;
    case LP_ACT_LN1_SCALE: *out = (lp_view){r->ln1_scale + L * LT, 1, {T}, {1}}; break;
    case LP_ACT_LN2_SCALE: *out = (lp_view){r->ln2_scale + L * LT, 1, {T}, {1}}; break;
    case LP_ACT_LN_FINAL: view2(out, r->lnf, T, d, d); break;
    case LP_ACT_LN_FINAL_SCALE: *out = (lp_view){r->lnf_scale, 1, {T}, {1}}; break;
    case LP_ACT_LOGITS:
        if (!r->out_w) return lp_error(LP_EINVAL, "logits: %s has no output head", c->arch);
        view2(out, r->logits, r->out_rows, r->out_w, r->out_w);
        break;
    case LP_ACT_HEAD_HIDDEN:
        if (!r->head_rows) return lp_error(LP_EINVAL, "head_hidden: %s has no pooler or head layer", c->arch);
        view2(out, r->head_hidden, r->head_rows, d, d);
        break;
    case LP_ACT_PATTERN:
        if (head >= 0) view2(out, r->pattern + L * r->LP + head * TT * TT, T, T, T);
        else *out = (lp_view){r->pattern + L * r->LP, 3, {H, T, T}, {(long)TT * TT, T, 1}};
        break;
    case LP_ACT_Q: case LP_ACT_K: case LP_ACT_V: case LP_ACT_Z: {
        const float *base = kind == LP_ACT_Q ? r->q : kind == LP_ACT_K ? r->k : kind == LP_ACT_V ? r->v : r->z;
        long row = (long)heads * dh;
        base += L * LT * row;
        if (head >= 0) view2(out, base + (size_t)head * dh, T, dh, row);
        else *out = (lp_view){base, 3, {T, heads, dh}, {row, dh, 1}};
        break;
    }
    case LP_ACT_LN_CROSS: view2(out, r->lnx + L * LT * d, T, d, d); break;
    case LP_ACT_CROSS_OUT: view2(out, r->xattn_out + L * LT * d, T, d, d); break;
    case LP_ACT_RESID_MID_CROSS: view2(out, r->resid_cross + L * LT * d, T, d, d); break;
    case LP_ACT_CROSS_PATTERN: {
        int S = r->S;
        if (head >= 0) view2(out, r->xpattern + ((L * H + head) * TT) * S, T, S, S);
        else *out = (lp_view){r->xpattern + L * H * TT * S, 3, {H, T, S}, {(long)TT * S, S, 1}};
        break;
    }
    case LP_ACT_CROSS_Z: {
        long row = (long)H * dh;
        const float *base = r->xz + L * LT * row;
        if (head >= 0) view2(out, base + (size_t)head * dh, T, dh, row);
        else *out = (lp_view){base, 3, {T, H, dh}, {row, dh, 1}};
        break;
    }
    default: return lp_error(LP_EINVAL, "unknown activation kind %d", (int)kind);
    }
    return LP_OK;
}
