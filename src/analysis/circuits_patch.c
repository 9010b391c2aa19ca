/* Activation patching (see circuits.h). In a decoder a patch of layer l at position p
 * changes nothing before p, so it re-runs layers l.. for positions p.. only, attending to
 * the base run's cached keys and values for the positions before p; in an encoder
 * (bidirectional attention) it re-runs layers l.. for every position. Patches that start at
 * the same layer run together: their rows are stacked, so each weight matrix is one sgemm
 * over all of them (lp_layer_forward_batch), in chunks that keep the workspace under a
 * budget. */
#include "loupe/circuits.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "loupe/error.h"

/* The workspace of one chunk of patches: activations of its stacked rows and each block's
 * key/value cache. */
#define WORKSPACE_BYTES ((size_t)192 << 20)

static const char *const SITE_NAMES[LP_PATCH_SITE_COUNT] = {"resid_pre", "attn_out", "mlp_out", "z"};

const char *lp_patch_site_name(lp_patch_site s) { return (unsigned)s < LP_PATCH_SITE_COUNT ? SITE_NAMES[s] : "?"; }

int lp_patch_site_from_name(const char *name, lp_patch_site *out) {
    for (int i = 0; i < LP_PATCH_SITE_COUNT; i++)
        if (strcmp(name, SITE_NAMES[i]) == 0) {
            *out = (lp_patch_site)i;
            return LP_OK;
        }
    return lp_error(LP_EINVAL, "unknown patching site '%s' (resid_pre, attn_out, mlp_out, z)", name);
}

static lp_act_kind site_act(lp_patch_site s) {
    static const lp_act_kind acts[LP_PATCH_SITE_COUNT] = {LP_ACT_RESID_PRE, LP_ACT_ATTN_OUT, LP_ACT_MLP_OUT, LP_ACT_Z};
    return acts[s];
}

typedef struct {
    const lp_run *base, *source;
    const lp_model *m;
    int T, L, d, qd, kvd, dh;
    int pos;                     /* the position read out */
    bool causal;
    float *rope;                 /* cos (T, dh/2), then sin (T, dh/2); NULL for learned positions */
    /* the workspace, for up to cap_rows stacked rows and cap_blocks blocks */
    int cap_rows, cap_blocks;
    float *ws;
    float *x, *y;                /* (cap_rows, d): residual stream into and out of a layer */
    float *kv;                   /* (cap_blocks, 2, T, kvd) */
    lp_batch_io io;
    lp_block *blocks;            /* (cap_blocks) */
    /* the chunk being run, for the edit hook */
    const lp_patch *const *chunk;
    int nblocks, layer;
} patcher;

static size_t row_floats(const lp_config *c) {
    size_t d = c->d_model, qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head;
    size_t dm = c->d_mlp, mlp = c->mlp == LP_MLP_SWIGLU ? 3 : 2;
    /* x, y, ln, resid_mid, attn_out, mlp_out (d each); q, z; k_new, v_new; MLP; two scales */
    return 6 * d + 2 * qd + 2 * kvd + mlp * dm + 2;
}

static size_t block_floats(const patcher *P) { return 2 * (size_t)P->T * P->kvd; }

static int patcher_init(patcher *P, const lp_run *base, const lp_run *source, int pos) {
    memset(P, 0, sizeof *P);
    const lp_model *m = lp_run_model(base);
    const lp_config *c = &m->cfg;
    int rc = lp_model_need_one_stack(m, "patch");
    if (rc) return rc;
    if (lp_run_model(source) != m) return lp_error(LP_EINVAL, "patching needs two runs of the same model");
    if (lp_run_len(source) != lp_run_len(base))
        return lp_error(LP_EINVAL, "patching needs two runs of the same length (%d and %d tokens)", lp_run_len(base),
                        lp_run_len(source));
    if (c->head == LP_HEAD_NONE)
        return lp_error(LP_EUNSUPPORTED, "patching reads a prediction, and %s has no output head", c->arch);
    int T = lp_run_len(base);
    if (pos < -1 || pos >= T) return lp_error(LP_EINVAL, "position %d is out of range (0..%d)", pos, T - 1);
    if (pos < 0) pos = c->head == LP_HEAD_CLASSIFIER ? 0 : T - 1;
    if (c->causal && pos != T - 1)
        return lp_error(LP_EINVAL, "patching a decoder reads its last position (%d), not %d", T - 1, pos);
    if (c->head == LP_HEAD_CLASSIFIER && pos != 0)
        return lp_error(LP_EINVAL, "a classifier's prediction is at position 0 (its [CLS]), not %d", pos);
    P->base = base, P->source = source, P->m = m, P->pos = pos, P->causal = c->causal;
    P->T = T, P->L = c->n_layer, P->d = c->d_model, P->dh = c->d_head;
    P->qd = c->n_head * c->d_head, P->kvd = c->n_kv_head * c->d_head;
    if (c->pos != LP_POS_LEARNED) {
        size_t half = (size_t)P->T * (c->d_head / 2);
        if (!(P->rope = malloc(2 * half * sizeof *P->rope))) return lp_error(LP_ENOMEM, "out of memory");
        lp_rope_tables(P->rope, P->rope + half, c, 0, P->T);
    }
    return LP_OK;
}

static int patcher_alloc(patcher *P, int rows, int blocks) {
    const lp_config *c = &P->m->cfg;
    size_t R = rows, d = P->d, qd = P->qd, kvd = P->kvd, dm = c->d_mlp, T = P->T;
    size_t pattern = (size_t)c->n_head * T * T;
    size_t total = R * row_floats(c) + (size_t)blocks * block_floats(P) + pattern;
    P->ws = malloc(total * sizeof *P->ws);
    P->blocks = malloc((size_t)blocks * sizeof *P->blocks);
    if (!P->ws || !P->blocks)
        return lp_error(LP_ENOMEM, "out of memory for patching (%.0f MB of workspace)", total * 4.0 / 1e6);
    P->cap_rows = rows, P->cap_blocks = blocks;
    float *at = P->ws;
#define TAKE(n) (at += (n), at - (n))
    P->x = TAKE(R * d);
    P->y = TAKE(R * d);
    P->kv = TAKE((size_t)blocks * block_floats(P));
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
    io->mlp_up = c->mlp == LP_MLP_SWIGLU ? TAKE(R * dm) : NULL;
    io->pattern = TAKE(pattern);
    io->pattern_ld = P->T;
#undef TAKE
    return LP_OK;
}

static void patcher_free(patcher *P) {
    free(P->rope);
    free(P->ws);
    free(P->blocks);
}

static int check_patch(const patcher *P, const lp_patch *p) {
    const lp_config *c = &P->m->cfg;
    if ((unsigned)p->site >= LP_PATCH_SITE_COUNT) return lp_error(LP_EINVAL, "unknown patching site %d", (int)p->site);
    if (p->layer < 0 || p->layer >= c->n_layer)
        return lp_error(LP_EINVAL, "layer %d is out of range: the model has layers 0..%d", p->layer, c->n_layer - 1);
    if (p->pos < -1 || p->pos >= P->T) return lp_error(LP_EINVAL, "position %d is out of range (0..%d)", p->pos, P->T - 1);
    if (p->head < -1 || p->head >= c->n_head || (p->head >= 0 && p->site != LP_PATCH_Z))
        return lp_error(LP_EINVAL, "head %d: only z is patched per head (heads 0..%d)", p->head, c->n_head - 1);
    return LP_OK;
}

/* The first position a patch changes. */
static int first_pos(const lp_patch *p) { return p->pos >= 0 ? p->pos : 0; }

/* Where its block starts: there in a decoder, at 0 in an encoder (every position attends to it). */
static int block_start(const patcher *P, const lp_patch *p) { return P->causal ? first_pos(p) : 0; }

/* Where, in the source run's capture of p's site and layer, the patched values lie:
 * positions [t0, t1), and columns [col, col + width) of each row. */
static void patch_span(const patcher *P, const lp_patch *p, lp_view *v, int *t0, int *t1, int *col, int *width) {
    lp_run_view(P->source, site_act(p->site), p->layer, -1, v);
    *t0 = first_pos(p);
    *t1 = p->pos >= 0 ? p->pos + 1 : P->T;
    bool one_head = p->site == LP_PATCH_Z && p->head >= 0;
    *col = one_head ? p->head * P->dh : 0;
    *width = one_head ? P->dh : p->site == LP_PATCH_Z ? P->qd : P->d;
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
static void edit(void *ctx, lp_act_kind site, float *rows) {
    patcher *P = ctx;
    int stride = site == LP_ACT_Z ? P->qd : P->d;
    for (int b = 0, row0 = 0; b < P->nblocks; row0 += P->blocks[b].n, b++) {
        const lp_patch *p = P->chunk[b];
        if (p->layer != P->layer || site_act(p->site) != site) continue;
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

/* Runs n patches that start at layer `layer` and leaves each one's residual stream at the
 * position read out, after the last layer, in final (n, d). */
static int run_chunk(patcher *P, int layer, const lp_patch *const *chunk, int n, float *final) {
    int d = P->d, kvd = P->kvd, rows = 0;
    lp_view in;
    lp_run_view(P->base, LP_ACT_RESID_PRE, layer, -1, &in);
    for (int b = 0; b < n; b++) {
        int t0 = block_start(P, chunk[b]);
        float *kv = P->kv + (size_t)b * block_floats(P);
        P->blocks[b] = (lp_block){t0, P->T - t0, kv, kv + (size_t)P->T * kvd};
        memcpy(P->x + (size_t)rows * d, in.data + (size_t)t0 * d, (size_t)(P->T - t0) * d * sizeof *P->x);
        if (chunk[b]->site == LP_PATCH_RESID_PRE) copy_patch(P, chunk[b], rows, d, P->x);
        rows += P->T - t0;
    }
    P->chunk = chunk;
    P->nblocks = n;
    P->io.edit = edit;
    P->io.ctx = P;
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
    } else {
        for (int b = 0; b < n; b++) /* every block holds all T positions */
            memcpy(final + (size_t)b * d, P->x + ((size_t)b * P->T + P->pos) * d, (size_t)d * sizeof *final);
    }
    return LP_OK;
}

static int by_layer(const void *a, const void *b) {
    const lp_patch *x = *(const lp_patch *const *)a, *y = *(const lp_patch *const *)b;
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
            v += k == 0 ? lg : -lg;
        }
        out[i] = (float)v;
    }
    free(y);
    return LP_OK;
}

int lp_patch_logits(const lp_run *base, const lp_run *source, const lp_patch *p, float *logits) {
    return lp_patch_logits_at(base, source, p, -1, logits);
}

int lp_patch_logits_at(const lp_run *base, const lp_run *source, const lp_patch *p, int pos, float *logits) {
    patcher P;
    int rc = patcher_init(&P, base, source, pos);
    if (!rc) rc = check_patch(&P, p);
    float *x = NULL, *y = NULL;
    if (!rc && (!(x = malloc((size_t)P.d * sizeof *x)) || !(y = malloc(((size_t)P.d + 1) * sizeof *y))))
        rc = lp_error(LP_ENOMEM, "out of memory");
    const lp_patch *one = p;
    if (!rc) rc = run_all(&P, &one, 1, x);
    if (!rc) {
        const lp_model *m = P.m;
        if (m->head.dense.w) {
            lp_head_forward(y, logits, m, x, 1);
        } else {
            lp_norm(y, y + P.d, x, m->lnf_w, m->lnf_b, 1, P.d, m->cfg.norm, m->cfg.norm_eps);
            lp_linear_forward(logits, y, &m->unembed, 1);
        }
    }
    free(x);
    free(y);
    patcher_free(&P);
    return rc;
}

int lp_patch_metric(const lp_run *base, const lp_run *source, const lp_patch *patches, int n, int target, int contrast,
                    float *out) {
    return lp_patch_metric_at(base, source, patches, n, -1, target, contrast, out);
}

int lp_patch_metric_at(const lp_run *base, const lp_run *source, const lp_patch *patches, int n, int pos, int target,
                       int contrast, float *out) {
    patcher P;
    int rc = patcher_init(&P, base, source, pos);
    if (rc) return rc;
    int V = lp_run_out_width(base);
    if (target < 0 || target >= V || contrast < -1 || contrast >= V)
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
            if (patch_is_noop(&P, &patches[i])) out[i] = base_value;
            else todo[m++] = &patches[i];
        qsort(todo, (size_t)m, sizeof *todo, by_layer);
        for (int i = 0; i < m; i++) where[i] = (int)(todo[i] - patches);
        final = malloc(((size_t)(m ? m : 1) * P.d) * sizeof *final);
        got = malloc((size_t)(m ? m : 1) * sizeof *got);
        if (!final || !got) rc = lp_error(LP_ENOMEM, "out of memory");
    }
    if (!rc && m) rc = run_all(&P, todo, m, final);
    if (!rc && m) rc = readout_metric(P.m, final, m, target, contrast, got);
    if (!rc)
        for (int i = 0; i < m; i++) out[where[i]] = got[i];
    free(todo);
    free(where);
    free(final);
    free(got);
    patcher_free(&P);
    return rc;
}

int lp_patch_sweep(const lp_run *base, const lp_run *source, lp_patch_site site, int target, int contrast, float *out) {
    return lp_patch_sweep_at(base, source, site, -1, target, contrast, out);
}

int lp_patch_sweep_at(const lp_run *base, const lp_run *source, lp_patch_site site, int pos, int target, int contrast,
                      float *out) {
    const lp_config *c = lp_model_config(lp_run_model(base));
    if ((unsigned)site >= LP_PATCH_SITE_COUNT) return lp_error(LP_EINVAL, "unknown patching site %d", (int)site);
    int cols = site == LP_PATCH_Z ? c->n_head : lp_run_len(base), n = c->n_layer * cols;
    lp_patch *p = malloc((size_t)n * sizeof *p);
    if (!p) return lp_error(LP_ENOMEM, "out of memory");
    for (int l = 0; l < c->n_layer; l++)
        for (int j = 0; j < cols; j++)
            p[l * cols + j] = site == LP_PATCH_Z ? (lp_patch){site, l, -1, j} : (lp_patch){site, l, j, -1};
    int rc = lp_patch_metric_at(base, source, p, n, pos, target, contrast, out);
    free(p);
    return rc;
}
