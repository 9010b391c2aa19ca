/* Activation patching (see circuits.h). In a decoder a patch of layer l at position p
 * changes nothing before p, so it re-runs layers l.. for positions p.. only, attending to
 * the base run's cached keys and values for the positions before p; in an encoder
 * (bidirectional attention) it re-runs layers l.. for every position. Patches that start at
 * the same layer run together: their rows are stacked, so each weight matrix is one sgemm
 * over all of them (lp_layer_forward_batch), in chunks that keep the workspace under a
 * budget. An encoder-decoder's decoder sites run so over the base run's encoder output; an
 * encoder site runs a second patcher over the encoder (every position from its layer on),
 * and each variant's encoder output then goes through the whole decoder. */
#include "loupe/circuits.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "loupe/error.h"

/* The workspace of one chunk of patches: activations of its stacked rows and each block's
 * key/value cache. */
#define WORKSPACE_BYTES ((size_t)192 << 20)

static const char *const SITE_NAMES[LP_PATCH_ALL_SITE_COUNT] = {"resid_pre", "attn_out", "mlp_out", "z",
                                                                 "cross_out", "cross_z"};

const char *lp_patch_site_name(lp_patch_site s) { return (unsigned)s < LP_PATCH_ALL_SITE_COUNT ? SITE_NAMES[s] : "?"; }

int lp_patch_site_from_name(const char *name, lp_patch_site *out) {
    for (int i = 0; i < LP_PATCH_ALL_SITE_COUNT; i++)
        if (strcmp(name, SITE_NAMES[i]) == 0) {
            *out = (lp_patch_site)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown patching site '%s' (resid_pre, attn_out, mlp_out, z; encoder-decoders also "
                    "cross_out, cross_z)", name);
}

static lp_act_kind site_act(lp_patch_site s) {
    static const lp_act_kind acts[LP_PATCH_ALL_SITE_COUNT] = {LP_ACT_RESID_PRE, LP_ACT_ATTN_OUT, LP_ACT_MLP_OUT,
                                                              LP_ACT_Z, LP_ACT_CROSS_OUT, LP_ACT_CROSS_Z};
    return acts[s];
}

static bool per_head(lp_patch_site s) { return s == LP_PATCH_Z || s == LP_PATCH_CROSS_Z; }

typedef struct {
    const lp_run *base, *source;
    const lp_model *m;
    int T, L, d, qd, kvd, dh;
    int pos;                     /* the position read out */
    bool causal;
    bool enc_stack;              /* this patcher runs an encoder-decoder's encoder (lp_patch.enc's sites) */
    float *rope;                 /* cos (T, dh/2), then sin (T, dh/2); NULL for learned positions */
    int *rel_bucket;             /* LP_POS_RELATIVE: (2T - 1) buckets of offsets -(T - 1) .. T - 1 */
    /* the decoder of an encoder-decoder: cross-attention over S rows of encoder output */
    int S;
    float *xkv_base;             /* (L, 2, S, qd): the base run's encoder output through each layer's xk, xv */
    const float *enc_out;        /* (nblocks, S, d): each block's own encoder output; NULL: the base run's */
    /* the workspace, for up to cap_rows stacked rows and cap_blocks blocks */
    int cap_rows, cap_blocks;
    float *ws;
    float *x, *y;                /* (cap_rows, d): residual stream into and out of a layer */
    float *kv;                   /* (cap_blocks, 2, T, kvd) */
    float *xkv;                  /* (2, cap_blocks * S, qd): enc_out's cross keys, then values */
    lp_batch_io io;
    lp_block *blocks;            /* (cap_blocks) */
    /* the chunk being run, for the edit hook */
    const lp_patch *const *chunk;
    int nblocks, layer;
} patcher;

/* Does p patch the stack P runs? (Else it is an encoder patch the decoder only follows.) */
static bool own(const patcher *P, const lp_patch *p) { return p->enc == P->enc_stack; }

static size_t row_floats(const lp_config *c) {
    size_t d = c->d_model, qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head;
    size_t dm = c->d_mlp, mlp = lp_mlp_gated(c) ? 3 : 2;
    /* x, y, ln, resid_mid, attn_out, mlp_out (d each); q, z; k_new, v_new; MLP; two scales;
     * cross-attention: lnx, xattn_out, resid_cross, xq, xz and a scale */
    size_t cross = c->cross_attn ? 3 * d + 2 * qd + 1 : 0;
    return 6 * d + 2 * qd + 2 * kvd + mlp * dm + 2 + cross;
}

static size_t block_floats(const patcher *P) { return 2 * (size_t)P->T * P->kvd + 2 * (size_t)P->S * P->qd; }

/* The geometry of patching m's runs base and source (one stack), read out at pos. */
static int patcher_setup(patcher *P, const lp_model *m, const lp_run *base, const lp_run *source, int pos) {
    const lp_config *c = &m->cfg;
    P->base = base, P->source = source, P->m = m, P->pos = pos, P->causal = c->causal;
    P->T = lp_run_len(base), P->L = c->n_layer, P->d = c->d_model, P->dh = c->d_head;
    P->qd = c->n_head * c->d_head, P->kvd = c->n_kv_head * c->d_head;
    if (lp_pos_rotary(c)) {
        size_t half = (size_t)P->T * (c->d_head / 2);
        if (!(P->rope = malloc(2 * half * sizeof *P->rope))) return lp_error(LP_ENOMEM, "out of memory");
        lp_rope_tables(P->rope, P->rope + half, c, 0, P->T);
    }
    if (c->pos == LP_POS_RELATIVE) {
        if (!(P->rel_bucket = malloc((size_t)(2 * P->T - 1) * sizeof *P->rel_bucket)))
            return lp_error(LP_ENOMEM, "out of memory");
        for (int rel = -(P->T - 1); rel <= P->T - 1; rel++)
            P->rel_bucket[rel + P->T - 1] = lp_rel_bucket(rel, !c->causal, c->rel_buckets, c->rel_max_distance);
    }
    return LP_OK;
}

/* The base run's encoder output through every decoder layer's cross keys and values, as
 * the run computed them. */
static int cross_kv_base(patcher *P) {
    const lp_model *m = P->m;
    size_t S = P->S, qd = P->qd;
    lp_view enc;
    lp_run_view(lp_run_source(P->base), LP_ACT_LN_FINAL, 0, -1, &enc);
    if (!(P->xkv_base = malloc((size_t)P->L * 2 * S * qd * sizeof *P->xkv_base)))
        return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < P->L; l++) {
        float *xk = P->xkv_base + (size_t)l * 2 * S * qd;
        lp_linear_forward(xk, enc.data, &m->layers[l].xk, (int)S);
        lp_linear_forward(xk + S * qd, enc.data, &m->layers[l].xv, (int)S);
    }
    return LP_OK;
}

static int patcher_init(patcher *P, const lp_run *base, const lp_run *source, int pos) {
    memset(P, 0, sizeof *P);
    const lp_model *m = lp_run_model(base);
    const lp_config *c = &m->cfg;
    if (lp_run_model(source) != m) return lp_error(LP_EINVAL, "patching needs two runs of the same model");
    if (lp_run_len(source) != lp_run_len(base))
        return lp_error(LP_EINVAL, "patching needs two runs of the same length (%d and %d tokens)", lp_run_len(base),
                        lp_run_len(source));
    const lp_run *bs = lp_run_source(base), *ss = lp_run_source(source);
    if (c->cross_attn && (!bs || !ss))
        return lp_error(LP_EINVAL, "patching an encoder-decoder needs two runs with a source each");
    if (bs && ss && lp_run_len(bs) != lp_run_len(ss))
        return lp_error(LP_EINVAL, "patching needs two sources of the same length (%d and %d tokens)", lp_run_len(bs),
                        lp_run_len(ss));
    if (c->head == LP_HEAD_NONE)
        return lp_error(LP_EUNSUPPORTED, "patching reads a prediction, and %s has no output head", c->arch);
    int T = lp_run_len(base);
    if (pos < -1 || pos >= T) return lp_error(LP_EINVAL, "position %d is out of range (0..%d)", pos, T - 1);
    if (pos < 0) pos = c->head == LP_HEAD_CLASSIFIER ? 0 : T - 1;
    if (c->causal && pos != T - 1)
        return lp_error(LP_EINVAL, "patching a decoder reads its last position (%d), not %d", T - 1, pos);
    if (c->head == LP_HEAD_CLASSIFIER && pos != 0)
        return lp_error(LP_EINVAL, "a classifier's prediction is at position 0 (its [CLS]), not %d", pos);
    int rc = patcher_setup(P, m, base, source, pos);
    if (!rc && c->cross_attn) {
        P->S = lp_run_len(bs);
        rc = cross_kv_base(P);
    }
    return rc;
}

/* The patcher of an encoder-decoder's encoder, beside D (the decoder's): every row of the
 * source is kept (run_chunk's final is (n, S, d)). */
static int patcher_init_encoder(patcher *E, const patcher *D) {
    memset(E, 0, sizeof *E);
    E->enc_stack = true;
    return patcher_setup(E, lp_model_encoder(D->m), lp_run_source(D->base), lp_run_source(D->source), 0);
}

static void patcher_free_ws(patcher *P) {
    free(P->ws);
    free(P->blocks);
    P->ws = NULL;
    P->blocks = NULL;
}

static int patcher_alloc(patcher *P, int rows, int blocks) {
    const lp_config *c = &P->m->cfg;
    size_t R = rows, d = P->d, qd = P->qd, kvd = P->kvd, dm = c->d_mlp, T = P->T, S = P->S;
    size_t pattern = (size_t)c->n_head * T * T, xpattern = (size_t)c->n_head * T * S;
    size_t total = R * row_floats(c) + (size_t)blocks * block_floats(P) + pattern + xpattern;
    patcher_free_ws(P);
    P->ws = malloc(total * sizeof *P->ws);
    P->blocks = malloc((size_t)blocks * sizeof *P->blocks);
    if (!P->ws || !P->blocks)
        return lp_error(LP_ENOMEM, "out of memory for patching (%.0f MB of workspace)", total * 4.0 / 1e6);
    P->cap_rows = rows, P->cap_blocks = blocks;
    float *at = P->ws;
#define TAKE(n) (at += (n), at - (n))
    P->x = TAKE(R * d);
    P->y = TAKE(R * d);
    P->kv = TAKE((size_t)blocks * 2 * T * kvd);
    P->xkv = TAKE((size_t)blocks * 2 * S * qd);
    lp_batch_io *io = &P->io;
    io->ln1 = io->ln2 = TAKE(R * d); /* the first norm's output is dead once q, k, v are made */
    io->ln1_scale = TAKE(R);
    io->ln2_scale = TAKE(R);
    io->q = TAKE(R * qd);
    io->z = TAKE(R * qd);
    io->k_new = TAKE(R * kvd);
    io->v_new = TAKE(R * kvd);
    io->attn_out = TAKE(R * d);
    io->resid_mid = TAKE(R * d);
    io->mlp_out = TAKE(R * d);
    io->mlp_pre = TAKE(R * dm);
    io->mlp_post = TAKE(R * dm);
    io->mlp_up = lp_mlp_gated(c) ? TAKE(R * dm) : NULL;
    io->pattern = TAKE(pattern);
    io->pattern_ld = P->T;
    if (c->cross_attn) {
        io->S = P->S;
        io->lnx = TAKE(R * d);
        io->lnx_scale = TAKE(R);
        io->xq = TAKE(R * qd);
        io->xz = TAKE(R * qd);
        io->xattn_out = TAKE(R * d);
        io->resid_cross = TAKE(R * d);
        io->xpattern = TAKE(xpattern);
    }
    io->rel_bias = P->m->rel_bias;
    io->rel_bucket = P->rel_bucket;
    io->rel_off = P->T - 1;
#undef TAKE
    return LP_OK;
}

static void patcher_free(patcher *P) {
    free(P->rope);
    free(P->rel_bucket);
    free(P->xkv_base);
    patcher_free_ws(P);
}

static int check_patch(const patcher *P, const lp_patch *p) {
    const lp_config *c = &P->m->cfg;
    if ((unsigned)p->site >= LP_PATCH_ALL_SITE_COUNT) return lp_error(LP_EINVAL, "unknown patching site %d", (int)p->site);
    bool cross = p->site >= LP_PATCH_SITE_COUNT;
    if (p->enc && !c->cross_attn)
        return lp_error(LP_EINVAL, "an encoder site is for encoder-decoder models; %s has one stack", c->arch);
    if (cross && (p->enc || !c->cross_attn))
        return lp_error(LP_EINVAL, "%s: only the decoder of an encoder-decoder has cross-attention",
                        lp_patch_site_name(p->site));
    int L = p->enc ? lp_model_encoder(P->m)->cfg.n_layer : c->n_layer, T = p->enc ? P->S : P->T;
    const char *stack = !c->cross_attn ? "the model" : p->enc ? "the encoder" : "the decoder";
    if (p->layer < 0 || p->layer >= L)
        return lp_error(LP_EINVAL, "layer %d is out of range: %s has layers 0..%d", p->layer, stack, L - 1);
    if (p->pos < -1 || p->pos >= T)
        return lp_error(LP_EINVAL, "position %d is out of range: %s has positions 0..%d", p->pos, stack, T - 1);
    if (p->head < -1 || p->head >= c->n_head || (p->head >= 0 && !per_head(p->site)))
        return lp_error(LP_EINVAL, "head %d: only z and cross_z are patched per head (heads 0..%d)", p->head,
                        c->n_head - 1);
    return LP_OK;
}

/* The first position a patch changes. */
static int first_pos(const lp_patch *p) { return p->pos >= 0 ? p->pos : 0; }

/* Where its block starts: there in a decoder, at 0 in an encoder (every position attends to
 * it) and for an encoder patch's run through the decoder (every cross key changed). */
static int block_start(const patcher *P, const lp_patch *p) { return P->causal && own(P, p) ? first_pos(p) : 0; }

/* Where, in the source run's capture of p's site and layer, the patched values lie:
 * positions [t0, t1), and columns [col, col + width) of each row. */
static void patch_span(const patcher *P, const lp_patch *p, lp_view *v, int *t0, int *t1, int *col, int *width) {
    lp_run_view(P->source, site_act(p->site), p->layer, -1, v);
    *t0 = first_pos(p);
    *t1 = p->pos >= 0 ? p->pos + 1 : P->T;
    bool one_head = per_head(p->site) && p->head >= 0;
    *col = one_head ? p->head * P->dh : 0;
    *width = one_head ? P->dh : per_head(p->site) ? P->qd : P->d;
}

/* Does p replace values with equal ones? Then it changes nothing. */
static bool patch_is_noop(const patcher *P, const lp_patch *p) {
    lp_view s, b;
    int t0, t1, col, width;
    patch_span(P, p, &s, &t0, &t1, &col, &width);
    lp_run_view(P->base, site_act(p->site), p->layer, -1, &b);
    for (int t = t0; t < t1; t++)
        if (memcmp(s.data + t * s.stride[0] + col, b.data + t * b.stride[0] + col, (size_t)width * sizeof(float)))
            return false;
    return true;
}

/* Overwrites the rows of rows (stacked, width floats each) that block b's patch replaces. */
static void copy_patch(const patcher *P, const lp_patch *p, int row0, int stride, float *rows) {
    lp_view s;
    int t0, t1, col, width;
    patch_span(P, p, &s, &t0, &t1, &col, &width);
    int block_t0 = block_start(P, p);
    for (int t = t0; t < t1; t++)
        memcpy(rows + (size_t)(row0 + t - block_t0) * stride + col, s.data + t * s.stride[0] + col,
               (size_t)width * sizeof *rows);
}

/* lp_batch_io's hook: patches of the layer being run overwrite their site. In the last
 * layer only the last position's row of each block is there (last_only). */
static void edit(void *ctx, int layer, lp_act_kind site, float *rows, int n) {
    (void)layer, (void)n; /* P->layer, and the chunk's rows */
    patcher *P = ctx;
    int stride = site == LP_ACT_Z || site == LP_ACT_CROSS_Z ? P->qd : P->d;
    for (int b = 0, row0 = 0; b < P->nblocks; row0 += P->blocks[b].n, b++) {
        const lp_patch *p = P->chunk[b];
        if (!own(P, p) || p->layer != P->layer || site_act(p->site) != site) continue;
        if (!P->io.last_only) {
            copy_patch(P, p, row0, stride, rows);
        } else if (p->pos < 0 || p->pos == P->T - 1) { /* (decoders only) */
            lp_view s;
            int t0, t1, col, width;
            patch_span(P, p, &s, &t0, &t1, &col, &width);
            memcpy(rows + (size_t)b * stride + col, s.data + (P->T - 1) * s.stride[0] + col, (size_t)width * sizeof *rows);
        }
    }
}

/* Each block's cross keys and values for decoder layer l: the base run's, or those of the
 * block's own encoder output (enc_out), all blocks in one product per weight. */
static void cross_kv(patcher *P, int l, int n) {
    size_t S = P->S, qd = P->qd, half = (size_t)n * S * qd;
    const lp_layer *w = &P->m->layers[l];
    if (P->enc_out) {
        lp_linear_forward(P->xkv, P->enc_out, &w->xk, n * (int)S);
        lp_linear_forward(P->xkv + half, P->enc_out, &w->xv, n * (int)S);
    }
    for (int b = 0; b < n; b++) {
        const float *k = P->enc_out ? P->xkv + b * S * qd : P->xkv_base + (size_t)l * 2 * S * qd;
        P->blocks[b].xk = k;
        P->blocks[b].xv = P->enc_out ? k + half : k + S * qd;
    }
}

/* Runs n patches that start at layer `layer` and leaves each one's residual stream after
 * the last layer in final: at the position read out (n, d), or, for an encoder-decoder's
 * encoder, at every position (n, T, d). */
static int run_chunk(patcher *P, int layer, const lp_patch *const *chunk, int n, float *final) {
    int d = P->d, kvd = P->kvd, rows = 0;
    lp_view in;
    lp_run_view(P->base, LP_ACT_RESID_PRE, layer, -1, &in);
    for (int b = 0; b < n; b++) {
        int t0 = block_start(P, chunk[b]);
        float *kv = P->kv + (size_t)b * 2 * P->T * kvd;
        P->blocks[b] = (lp_block){t0, P->T - t0, kv, kv + (size_t)P->T * kvd, NULL, NULL};
        memcpy(P->x + (size_t)rows * d, in.data + (size_t)t0 * d, (size_t)(P->T - t0) * d * sizeof *P->x);
        if (own(P, chunk[b]) && chunk[b]->site == LP_PATCH_RESID_PRE) copy_patch(P, chunk[b], rows, d, P->x);
        rows += P->T - t0;
    }
    P->chunk = chunk;
    P->nblocks = n;
    P->io.edit = (lp_edit){edit, P};
    const float *cos_t = P->rope, *sin_t = P->rope ? P->rope + (size_t)P->T * (P->dh / 2) : NULL;
    for (int l = layer; l < P->L; l++) {
        if (lp_cancelled()) return lp_error(LP_ECANCEL, "cancelled");
        lp_view k, v;
        lp_run_view(P->base, LP_ACT_K, l, -1, &k);
        lp_run_view(P->base, LP_ACT_V, l, -1, &v);
        for (int b = 0; b < n; b++) { /* the positions before the block are the base run's */
            memcpy(P->blocks[b].k, k.data, (size_t)P->blocks[b].t0 * kvd * sizeof *k.data);
            memcpy(P->blocks[b].v, v.data, (size_t)P->blocks[b].t0 * kvd * sizeof *v.data);
        }
        if (P->S) cross_kv(P, l, n);
        P->layer = l;
        P->io.resid_in = P->x;
        P->io.resid_out = P->y;
        P->io.last_only = P->causal && l == P->L - 1; /* only the last position is read out */
        lp_layer_forward_batch(P->m, l, &P->io, P->blocks, n, cos_t, sin_t);
        float *t = P->x;
        P->x = P->y;
        P->y = t;
    }
    if (P->causal) {
        memcpy(final, P->x, (size_t)n * d * sizeof *final); /* one row per block */
    } else if (P->enc_stack) {
        memcpy(final, P->x, (size_t)n * P->T * d * sizeof *final);
    } else {
        for (int b = 0; b < n; b++) /* every block holds all T positions */
            memcpy(final + (size_t)b * d, P->x + ((size_t)b * P->T + P->pos) * d, (size_t)d * sizeof *final);
    }
    return LP_OK;
}

/* The decoder's (or the one stack's) patches first, then the encoder's; each by layer. */
static int by_layer(const void *a, const void *b) {
    const lp_patch *x = *(const lp_patch *const *)a, *y = *(const lp_patch *const *)b;
    if (x->enc != y->enc) return x->enc - y->enc;
    if (x->layer != y->layer) return x->layer - y->layer;
    return x < y ? -1 : x > y; /* stable: the original order */
}

/* Runs every patch in todo (n, sorted by layer), leaving final residual rows in final (n, d). */
static int run_all(patcher *P, const lp_patch **todo, int n, float *final) {
    const lp_config *c = &P->m->cfg;
    size_t row_bytes = row_floats(c) * sizeof(float), block_bytes = block_floats(P) * sizeof(float);
    /* Chunks: runs of patches with one start layer, as many as fit the budget (at least one). */
    int max_rows = 0, max_blocks = 0;
    for (int i = 0; i < n;) {
        int rows = 0, j = i;
        while (j < n && todo[j]->layer == todo[i]->layer) {
            int r = P->T - block_start(P, todo[j]);
            if (j > i && (size_t)(rows + r) * row_bytes + (size_t)(j - i + 1) * block_bytes > WORKSPACE_BYTES) break;
            rows += r;
            j++;
        }
        max_rows = rows > max_rows ? rows : max_rows;
        max_blocks = j - i > max_blocks ? j - i : max_blocks;
        i = j;
    }
    int rc = patcher_alloc(P, max_rows, max_blocks);
    for (int i = 0; i < n && !rc;) {
        int rows = 0, j = i;
        while (j < n && todo[j]->layer == todo[i]->layer) {
            int r = P->T - block_start(P, todo[j]);
            if (j > i && (rows + r > P->cap_rows || j - i + 1 > P->cap_blocks)) break;
            rows += r;
            j++;
        }
        rc = run_chunk(P, todo[i]->layer, (const lp_patch *const *)todo + i, j - i, final + (size_t)i * P->d);
        i = j;
    }
    return rc;
}

/* Runs every encoder patch in todo (n, sorted by layer) of an encoder-decoder: the encoder
 * from the patch's layer (E), its final norm, then the whole decoder (D) over that output;
 * final (n, d) gets the decoder's last row of each. */
static int run_encoder_patches(patcher *D, patcher *E, const lp_patch **todo, int n, float *final) {
    const lp_model *enc = E->m;
    size_t S = E->T, d = D->d;
    size_t per = S * row_floats(&enc->cfg) + (size_t)D->T * row_floats(&D->m->cfg) + 2 * S * d + 1 + S +
                 block_floats(E) + block_floats(D);
    int cap = (int)(WORKSPACE_BYTES / (per * sizeof(float)));
    cap = cap < 1 ? 1 : cap > n ? n : cap;
    float *rows = malloc(((size_t)cap * S * (2 * d + 1)) * sizeof *rows);
    float *out = rows ? rows + (size_t)cap * S * d : NULL, *scale = out ? out + (size_t)cap * S * d : NULL;
    int rc = rows ? patcher_alloc(E, cap * (int)S, cap) : lp_error(LP_ENOMEM, "out of memory");
    if (!rc) rc = patcher_alloc(D, cap * D->T, cap);
    for (int i = 0; i < n && !rc;) {
        int j = i;
        while (j < n && j - i < cap && todo[j]->layer == todo[i]->layer) j++;
        rc = run_chunk(E, todo[i]->layer, (const lp_patch *const *)todo + i, j - i, rows);
        if (rc) break;
        lp_norm(out, scale, rows, enc->lnf_w, enc->lnf_b, (j - i) * (int)S, (int)d, enc->cfg.norm, enc->cfg.norm_eps);
        D->enc_out = out;
        rc = run_chunk(D, 0, (const lp_patch *const *)todo + i, j - i, final + (size_t)i * d);
        D->enc_out = NULL;
        i = j;
    }
    free(rows);
    return rc;
}

/* Runs todo (n, sorted by by_layer), leaving final residual rows in final (n, d). E: the
 * encoder's patcher of an encoder-decoder (NULL for other models). */
static int run_patches(patcher *D, patcher *E, const lp_patch **todo, int n, float *final) {
    int m = 0;
    while (m < n && !todo[m]->enc) m++;
    int rc = m ? run_all(D, todo, m, final) : LP_OK;
    if (!rc && m < n) rc = run_encoder_patches(D, E, todo + m, n - m, final + (size_t)m * D->d);
    return rc;
}

/* An encoder's metric on final residual rows x (n, d): its head, row by row. */
static int head_metric(const lp_model *m, const float *x, int n, int target, int contrast, float *out) {
    int d = m->cfg.d_model, W = m->unembed.out;
    float *h = malloc(((size_t)d + W) * sizeof *h), *lg = h + d;
    if (!h) return lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        lp_head_forward(h, lg, m, x + (size_t)i * d, 1);
        out[i] = (float)((double)lg[target] - (contrast >= 0 ? (double)lg[contrast] : 0.0));
    }
    free(h);
    return LP_OK;
}

/* The metric on final residual rows x (n, d): the final norm, then the unembedding's two
 * columns (decoders); the head (encoders). */
static int readout_metric(const lp_model *m, const float *x, int n, int target, int contrast, float *out) {
    const lp_config *c = &m->cfg;
    const lp_linear *U = &m->unembed;
    int d = c->d_model;
    if (m->head.dense.w) return head_metric(m, x, n, target, contrast, out);
    float *y = malloc(((size_t)n * d + n) * sizeof *y);
    if (!y) return lp_error(LP_ENOMEM, "out of memory");
    lp_norm(y, y + (size_t)n * d, x, m->lnf_w, m->lnf_b, n, d, c->norm, c->norm_eps);
    for (int i = 0; i < n; i++) {
        const float *yi = y + (size_t)i * d;
        double v = 0.0;
        for (int k = 0; k < 2; k++) {
            int t = k == 0 ? target : contrast;
            if (t < 0) continue;
            double lg = U->b ? U->b[t] : 0.0;
            for (int j = 0; j < d; j++) lg += (double)yi[j] * (U->trans ? U->w[(size_t)t * U->ld + j] : U->w[(size_t)j * U->ld + t]);
            if (c->final_softcap > 0.0f) lg = c->final_softcap * tanh(lg / c->final_softcap); /* as the run's logits */
            v += k == 0 ? lg : -lg;
        }
        out[i] = (float)v;
    }
    free(y);
    return LP_OK;
}

/* The patcher of base's stack (an encoder-decoder's decoder) and, for an encoder-decoder,
 * its encoder's in E (else E stays empty). */
static int patchers_init(patcher *P, patcher *E, const lp_run *base, const lp_run *source, int pos) {
    memset(E, 0, sizeof *E);
    int rc = patcher_init(P, base, source, pos);
    if (!rc && P->S) rc = patcher_init_encoder(E, P);
    return rc;
}

int lp_patch_logits(const lp_run *base, const lp_run *source, const lp_patch *p, float *logits) {
    return lp_patch_logits_at(base, source, p, -1, logits);
}

int lp_patch_logits_at(const lp_run *base, const lp_run *source, const lp_patch *p, int pos, float *logits) {
    patcher P, E;
    int rc = patchers_init(&P, &E, base, source, pos);
    if (!rc) rc = check_patch(&P, p);
    float *x = NULL, *y = NULL;
    if (!rc && (!(x = malloc((size_t)P.d * sizeof *x)) || !(y = malloc(((size_t)P.d + 1) * sizeof *y))))
        rc = lp_error(LP_ENOMEM, "out of memory");
    const lp_patch *one = p;
    if (!rc) rc = run_patches(&P, &E, &one, 1, x);
    if (!rc) {
        const lp_model *m = P.m;
        if (m->head.dense.w) {
            lp_head_forward(y, logits, m, x, 1);
        } else {
            lp_norm(y, y + P.d, x, m->lnf_w, m->lnf_b, 1, P.d, m->cfg.norm, m->cfg.norm_eps);
            lp_linear_forward(logits, y, &m->unembed, 1);
            lp_softcap(logits, (size_t)m->cfg.vocab, m->cfg.final_softcap);
        }
    }
    free(x);
    free(y);
    patcher_free(&P);
    patcher_free(&E);
    return rc;
}

int lp_patch_metric(const lp_run *base, const lp_run *source, const lp_patch *patches, int n, int target, int contrast,
                    float *out) {
    return lp_patch_metric_at(base, source, patches, n, -1, target, contrast, out);
}

int lp_patch_metric_at(const lp_run *base, const lp_run *source, const lp_patch *patches, int n, int pos, int target,
                       int contrast, float *out) {
    patcher P, E;
    int rc = patchers_init(&P, &E, base, source, pos);
    int V = rc ? 0 : lp_run_out_width(base);
    if (!rc && (target < 0 || target >= V || contrast < -1 || contrast >= V))
        rc = lp_error(LP_EINVAL, "target and contrast ids must be in the %s (0..%d)",
                      P.m->cfg.head == LP_HEAD_CLASSIFIER ? "labels" : "vocabulary", V - 1);
    for (int i = 0; i < n && !rc; i++) rc = check_patch(&P, &patches[i]);
    const lp_patch **todo = malloc((size_t)(n ? n : 1) * sizeof *todo);
    int *where = malloc((size_t)(n ? n : 1) * sizeof *where);
    float *final = NULL, *got = NULL;
    if (!rc && (!todo || !where)) rc = lp_error(LP_ENOMEM, "out of memory");
    /* Patches that change nothing give the base run's own value. */
    float base_value = 0.0f;
    int m = 0;
    if (!rc) {
        const float *lg = lp_run_logits(base, P.pos);
        base_value = (float)((double)lg[target] - (contrast >= 0 ? (double)lg[contrast] : 0.0));
        for (int i = 0; i < n; i++)
            if (patch_is_noop(patches[i].enc ? &E : &P, &patches[i])) out[i] = base_value;
            else todo[m++] = &patches[i];
        qsort(todo, (size_t)m, sizeof *todo, by_layer);
        for (int i = 0; i < m; i++) where[i] = (int)(todo[i] - patches);
        final = malloc(((size_t)(m ? m : 1) * P.d) * sizeof *final);
        got = malloc((size_t)(m ? m : 1) * sizeof *got);
        if (!final || !got) rc = lp_error(LP_ENOMEM, "out of memory");
    }
    if (!rc && m) rc = run_patches(&P, &E, todo, m, final);
    if (!rc && m) rc = readout_metric(P.m, final, m, target, contrast, got);
    if (!rc)
        for (int i = 0; i < m; i++) out[where[i]] = got[i];
    free(todo);
    free(where);
    free(final);
    free(got);
    patcher_free(&P);
    patcher_free(&E);
    return rc;
}

int lp_patch_sweep(const lp_run *base, const lp_run *source, lp_patch_site site, int target, int contrast, float *out) {
    return lp_patch_sweep_at(base, source, site, -1, target, contrast, out);
}

int lp_patch_sweep_at(const lp_run *base, const lp_run *source, lp_patch_site site, int pos, int target, int contrast,
                      float *out) {
    return lp_patch_sweep_stack(base, source, false, site, pos, target, contrast, out);
}

int lp_patch_sweep_stack(const lp_run *base, const lp_run *source, bool enc, lp_patch_site site, int pos, int target,
                         int contrast, float *out) {
    const lp_model *m = lp_run_model(base);
    if ((unsigned)site >= LP_PATCH_ALL_SITE_COUNT) return lp_error(LP_EINVAL, "unknown patching site %d", (int)site);
    if (enc && (!lp_model_encoder(m) || !lp_run_source(base)))
        return lp_error(LP_EINVAL, "an encoder site is for encoder-decoder runs; %s has one stack",
                        lp_model_config(m)->arch);
    const lp_config *c = lp_model_config(enc ? lp_model_encoder(m) : m);
    int T = lp_run_len(enc ? lp_run_source(base) : base);
    int cols = per_head(site) ? c->n_head : T, n = c->n_layer * cols;
    lp_patch *p = malloc((size_t)n * sizeof *p);
    if (!p) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < c->n_layer; l++)
        for (int j = 0; j < cols; j++)
            p[l * cols + j] = per_head(site) ? (lp_patch){site, l, -1, j, enc} : (lp_patch){site, l, j, -1, enc};
    int rc = lp_patch_metric_at(base, source, p, n, pos, target, contrast, out);
    free(p);
    return rc;
}
