/* Forward kernels. Matrix products go to cblas_sgemm; the rest are short loops whose
 * reductions accumulate in double so that results stay within 1e-4 of a float64 reference. */
#include "kernels/forward.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

void lp_linear_forward(float *y, const float *x, const lp_linear *lin, int n) {
    if (n == 1) {
        /* One row: a matrix-vector product, the shape of every generation step. */
        if (lin->trans)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, lin->out, lin->in, 1.0f, lin->w, lin->ld, x, 1, 0.0f, y, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, lin->in, lin->out, 1.0f, lin->w, lin->ld, x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, lin->trans ? CblasTrans : CblasNoTrans, n, lin->out, lin->in, 1.0f, x,
                    lin->in, lin->w, lin->ld, 0.0f, y, lin->out);
    }
    if (lin->b)
        for (int i = 0; i < n; i++) {
            float *row = y + (size_t)i * lin->out;
            for (int j = 0; j < lin->out; j++) row[j] += lin->b[j];
        }
}

void lp_norm(float *y, float *scale, const float *x, const float *w, const float *b, int n, int d, lp_norm_kind kind,
             float eps) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double mean = 0.0, var = 0.0;
        if (kind == LP_NORM_LAYERNORM) {
            for (int j = 0; j < d; j++) mean += xi[j];
            mean /= d;
        }
        for (int j = 0; j < d; j++) {
            double c = xi[j] - mean;
            var += c * c;
        }
        var /= d;
        float s = (float)(1.0 / sqrt(var + eps));
        scale[i] = s;
        for (int j = 0; j < d; j++) yi[j] = (float)((xi[j] - mean) * s) * w[j] + (b ? b[j] : 0.0f);
    }
}

void lp_embed(float *x, const lp_model *m, const int *ids, const int *types, int t0, int n) {
    const lp_config *c = &m->cfg;
    int d = c->d_model;
    lp_embed_sum(x, m, ids, types, t0, n);
    if (c->emb_norm)
        for (int i = 0; i < n; i++) {
            float scale;
            lp_norm(x + (size_t)i * d, &scale, x + (size_t)i * d, m->emb_ln_w, m->emb_ln_b, 1, d, LP_NORM_LAYERNORM,
                    c->norm_eps);
        }
}

void lp_embed_sum(float *x, const lp_model *m, const int *ids, const int *types, int t0, int n) {
    const lp_config *c = &m->cfg;
    int d = c->d_model, counted = 0;
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d;
        memcpy(xi, m->tok_emb + (size_t)ids[i] * d, (size_t)d * sizeof *xi);
        if (m->pos_emb) {
            /* RoBERTa: non-padding tokens count from padding_idx + 1, padding sits at padding_idx. */
            int row = t0 + i;
            if (c->pos_offset > 0) row = ids[i] == c->pos_pad_id ? c->pos_offset - 1 : c->pos_offset + counted++;
            const float *p = m->pos_emb + (size_t)row * d;
            for (int j = 0; j < d; j++) xi[j] += p[j];
        }
        if (m->type_emb) {
            const float *p = m->type_emb + (size_t)(types ? types[i] : 0) * d;
            for (int j = 0; j < d; j++) xi[j] += p[j];
        }
    }
}

void lp_rope_tables(float *cos_t, float *sin_t, const lp_config *c, int t0, int n) {
    int half = c->d_head / 2;
    for (int i = 0; i < n; i++)
        for (int f = 0; f < half; f++) {
            double inv_freq = pow((double)c->rope_theta, -2.0 * f / c->d_head);
            double angle = (double)(t0 + i) * inv_freq;
            cos_t[(size_t)i * half + f] = (float)cos(angle);
            sin_t[(size_t)i * half + f] = (float)sin(angle);
        }
}

/* Rotates each head's vector in x (n, heads * dh) by its position. Pairs are (2f, 2f+1)
 * in the interleaved layout, (f, f + dh/2) in the rotate-half layout. */
static void rope(float *x, int n, int heads, int dh, lp_pos_kind kind, const float *cos_t, const float *sin_t) {
    int half = dh / 2;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)i * heads + h) * dh;
            for (int f = 0; f < half; f++) {
                int a = kind == LP_POS_ROPE_INTERLEAVED ? 2 * f : f;
                int b = kind == LP_POS_ROPE_INTERLEAVED ? 2 * f + 1 : f + half;
                float c = cos_t[(size_t)i * half + f], s = sin_t[(size_t)i * half + f];
                float va = v[a], vb = v[b];
                v[a] = va * c - vb * s;
                v[b] = va * s + vb * c;
            }
        }
}

/* Softmax of row[0..len) in place; row[len..ld) set to 0 (the causal mask). */
static void softmax_causal(float *row, int len, int ld) {
    float mx = row[0];
    for (int j = 1; j < len; j++)
        if (row[j] > mx) mx = row[j];
    double sum = 0.0;
    for (int j = 0; j < len; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < len; j++) row[j] *= inv;
    for (int j = len; j < ld; j++) row[j] = 0.0f;
}

/* Rows of queries are taken in blocks so that each block's scores cover only the keys it
 * may see: causal attention then costs about half of the full T x T square. Bidirectional
 * attention (encoders) gives every block all t0 + n keys. */
#define ATTN_BLOCK 64

int lp_rel_bucket(int rel, bool bidirectional, int num_buckets, int max_distance) {
    int bucket = 0, dist;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) bucket = num_buckets;
        dist = rel < 0 ? -rel : rel;
    } else {
        dist = rel < 0 ? -rel : 0;
    }
    int max_exact = num_buckets / 2;
    if (dist < max_exact) return bucket + dist;
    /* max_exact + (log(float(dist) / max_exact) / log(max_distance / max_exact) * (num_buckets -
     * max_exact)).to(long): each step rounded to float32 as torch does */
    float v = logf((float)dist / (float)max_exact);
    v = v / (float)log((double)max_distance / max_exact);
    v = v * (float)(num_buckets - max_exact);
    int large = max_exact + (int)v;
    return bucket + (large < num_buckets - 1 ? large : num_buckets - 1);
}

/* Adds the relative position bias of head h to rows [i0, i0 + rows) of a block of scores
 * (query row i is at position t0 + i), over keys [0, keys). */
static void add_rel_bias(float *scores, int ld, const lp_layer_io *io, int H, int h, int t0, int i0, int rows,
                         int keys) {
    for (int i = 0; i < rows; i++) {
        float *row = scores + (size_t)i * ld;
        const int *bucket = io->rel_bucket + io->rel_off - (t0 + i0 + i);
        for (int j = 0; j < keys; j++) row[j] += io->rel_bias[bucket[j] * H + h];
    }
}

static void attention(const lp_config *c, const lp_layer_io *io, int t0, int n) {
    int H = c->n_head, G = c->n_head / c->n_kv_head, dh = c->d_head, ld = io->pattern_ld;
    int qd = H * dh, kvd = c->n_kv_head * dh;
    float scale = c->unscaled_attn ? 1.0f : 1.0f / sqrtf((float)dh);
    for (int h = 0; h < H; h++) {
        int g = h / G; /* grouped-query attention: G query heads share one key/value head */
        const float *k = io->k + (size_t)g * dh, *v = io->v + (size_t)g * dh;
        float *p = io->pattern + (size_t)h * n * ld;
        if (n == 1) {
            /* One query (a generation step): plain loops beat two tiny sgemm calls. */
            const float *q = io->q + (size_t)h * dh;
            float *z = io->z + (size_t)h * dh;
            int keys = t0 + 1; /* also an encoder's: its runs start at t0 = 0, and T = 1 has one key */
            for (int j = 0; j < keys; j++) {
                const float *kj = k + (size_t)j * kvd;
                float dot = 0.0f;
                for (int e = 0; e < dh; e++) dot += q[e] * kj[e];
                p[j] = dot * scale;
            }
            if (io->rel_bias) add_rel_bias(p, ld, io, H, h, t0, 0, 1, keys);
            softmax_causal(p, keys, ld);
            for (int e = 0; e < dh; e++) z[e] = 0.0f;
            for (int j = 0; j < keys; j++) {
                const float *vj = v + (size_t)j * kvd;
                for (int e = 0; e < dh; e++) z[e] += p[j] * vj[e];
            }
            continue;
        }
        for (int i0 = 0; i0 < n; i0 += ATTN_BLOCK) {
            int rows = n - i0 < ATTN_BLOCK ? n - i0 : ATTN_BLOCK, keys = c->causal ? t0 + i0 + rows : t0 + n;
            float *pb = p + (size_t)i0 * ld;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, dh, scale, io->q + (size_t)i0 * qd + h * dh,
                        qd, k, kvd, 0.0f, pb, ld);
            if (io->rel_bias) add_rel_bias(pb, ld, io, H, h, t0, i0, rows, keys);
            for (int i = 0; i < rows; i++) softmax_causal(pb + (size_t)i * ld, c->causal ? t0 + i0 + i + 1 : keys, ld);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, keys, 1.0f, pb, ld, v, kvd, 0.0f,
                        io->z + (size_t)i0 * qd + h * dh, qd);
        }
    }
}

/* GPT-2's tanh GELU, 0.5 x (1 + tanh(u)), written as x * sigmoid(2u): the same function,
 * and expf is several times cheaper than glibc's tanhf. */
static float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return x / (1.0f + expf(-2.0f * k * (x + 0.044715f * x * x * x)));
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* BERT's "gelu": the exact GELU, x * Phi(x), computed in double (erff is not guaranteed to
 * be correctly rounded, and this keeps the result within float rounding of the reference). */
static float gelu_erf(float x) { return (float)(0.5 * x * (1.0 + erf(x * 0.70710678118654752440))); }

static float relu(float x) { return x > 0.0f ? x : 0.0f; }

double lp_head_act_value(lp_head_act a, double v) {
    switch (a) {
    case LP_HEAD_ACT_TANH: return tanh(v);
    case LP_HEAD_ACT_RELU: return v > 0 ? v : 0;
    case LP_HEAD_ACT_GELU_ERF: return 0.5 * v * (1.0 + erf(v * 0.70710678118654752440));
    case LP_HEAD_ACT_GELU_TANH: return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    }
    return NAN;
}

/* y = act(x) over n floats for the non-gated MLPs. */
static void act_rows(float *y, const float *x, size_t n, lp_mlp_kind kind) {
    switch (kind) {
    case LP_MLP_GELU_ERF: for (size_t i = 0; i < n; i++) y[i] = gelu_erf(x[i]); break;
    case LP_MLP_RELU: for (size_t i = 0; i < n; i++) y[i] = relu(x[i]); break;
    default: for (size_t i = 0; i < n; i++) y[i] = gelu_tanh(x[i]); break;
    }
}

static void add(float *y, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

/* An attention-only model's layer has no MLP: what a run captures of it is zeros (so that
 * views stay defined) and the residual stream passes through, resid_out = resid_mid. */
static void skip_mlp(float *ln2, float *ln2_scale, float *pre, float *post, float *out, float *resid_out,
                     const float *resid_mid, int n, const lp_config *c) {
    size_t nd = (size_t)n * c->d_model, nm = (size_t)n * c->d_mlp;
    memset(ln2, 0, nd * sizeof *ln2);
    memset(ln2_scale, 0, (size_t)n * sizeof *ln2_scale);
    memset(pre, 0, nm * sizeof *pre);
    memset(post, 0, nm * sizeof *post);
    memset(out, 0, nd * sizeof *out);
    memcpy(resid_out, resid_mid, nd * sizeof *resid_out);
}

/* Cross-attention's heads for n query rows xq (n, H*dh) over the S rows of xk, xv (S, H*dh):
 * no mask, no position bias; pattern (H, n, S), z (n, H*dh). */
static void cross_heads(const lp_config *c, float *pattern, float *z, const float *xq, const float *xk, const float *xv,
                        int S, int n) {
    int H = c->n_head, dh = c->d_head, qd = H * dh;
    float scale = c->unscaled_attn ? 1.0f : 1.0f / sqrtf((float)dh);
    for (int h = 0; h < H; h++) {
        float *p = pattern + (size_t)h * n * S;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, S, dh, scale, xq + h * dh, qd, xk + h * dh, qd, 0.0f, p,
                    S);
        for (int i = 0; i < n; i++) softmax_causal(p + (size_t)i * S, S, S);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dh, S, 1.0f, p, S, xv + h * dh, qd, 0.0f, z + h * dh, qd);
    }
}

/* T5LayerCrossAttention: lnx = norm(resid_mid), every query row attends to all S rows of
 * the encoder's output, resid_cross = resid_mid + its output. */
static void cross_attention(const lp_model *m, const lp_layer *w, const lp_layer_io *io, int n) {
    const lp_config *c = &m->cfg;
    lp_norm(io->lnx, io->lnx_scale, io->resid_mid, w->lnx_w, w->lnx_b, n, c->d_model, c->norm, c->norm_eps);
    lp_linear_forward(io->xq, io->lnx, &w->xq, n);
    cross_heads(c, io->xpattern, io->xz, io->xq, io->xk, io->xv, io->S, n);
    lp_linear_forward(io->xattn_out, io->xz, &w->xo, n);
    add(io->resid_cross, io->resid_mid, io->xattn_out, (size_t)n * c->d_model);
}

/* The MLP from its normalised input ln2 (n, d) to out (n, d): pre, up (gated only) and post
 * (n, dm) captured on the way. */
static void mlp_rows(const lp_config *c, const lp_layer *w, const float *ln2, float *pre, float *up, float *post,
                     float *out, int n) {
    size_t nm = (size_t)n * c->d_mlp;
    if (lp_mlp_gated(c)) {
        lp_linear_forward(pre, ln2, &w->gate, n);
        lp_linear_forward(up, ln2, &w->up, n);
        if (c->mlp == LP_MLP_SWIGLU)
            for (size_t i = 0; i < nm; i++) post[i] = silu(pre[i]) * up[i];
        else
            for (size_t i = 0; i < nm; i++) post[i] = gelu_tanh(pre[i]) * up[i];
    } else {
        lp_linear_forward(pre, ln2, &w->up, n);
        act_rows(post, pre, nm, c->mlp);
    }
    lp_linear_forward(out, post, &w->down, n);
}

void lp_layer_forward(const lp_model *m, int layer, const lp_layer_io *io, const float *cos_t, const float *sin_t,
                      int t0, int n) {
    const lp_config *c = &m->cfg;
    const lp_layer *w = &m->layers[layer];
    int d = c->d_model, kvd = c->n_kv_head * c->d_head;
    size_t nd = (size_t)n * d;

    /* ln1 is what attention reads: the normalised stream (pre-norm), or the stream itself
     * (post-norm, whose norms come after the sums: their scales go to ln1_scale, ln2_scale). */
    if (c->post_norm) memcpy(io->ln1, io->resid_in, nd * sizeof *io->ln1);
    else lp_norm(io->ln1, io->ln1_scale, io->resid_in, w->ln1_w, w->ln1_b, n, d, c->norm, c->norm_eps);
    float *k_new = io->k + (size_t)t0 * kvd, *v_new = io->v + (size_t)t0 * kvd;
    lp_linear_forward(io->q, io->ln1, &w->q, n);
    lp_linear_forward(k_new, io->ln1, &w->k, n);
    lp_linear_forward(v_new, io->ln1, &w->v, n);
    if (lp_pos_rotary(c)) {
        rope(io->q, n, c->n_head, c->d_head, c->pos, cos_t, sin_t);
        rope(k_new, n, c->n_kv_head, c->d_head, c->pos, cos_t, sin_t);
    }
    attention(c, io, t0, n);
    lp_linear_forward(io->attn_out, io->z, &w->o, n);
    add(io->resid_mid, io->resid_in, io->attn_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_mid, io->ln1_scale, io->resid_mid, w->ln1_w, w->ln1_b, n, d, c->norm, c->norm_eps);
    const float *mlp_in = io->resid_mid; /* what the MLP block reads and adds to */
    if (c->cross_attn) {
        cross_attention(m, w, io, n);
        mlp_in = io->resid_cross;
    }
    if (c->attn_only) {
        skip_mlp(io->ln2, io->ln2_scale, io->mlp_pre, io->mlp_post, io->mlp_out, io->resid_out, mlp_in, n, c);
        return;
    }

    if (c->post_norm) memcpy(io->ln2, io->resid_mid, nd * sizeof *io->ln2);
    else lp_norm(io->ln2, io->ln2_scale, mlp_in, w->ln2_w, w->ln2_b, n, d, c->norm, c->norm_eps);
    mlp_rows(c, w, io->ln2, io->mlp_pre, io->mlp_up, io->mlp_post, io->mlp_out, n);
    add(io->resid_out, mlp_in, io->mlp_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_out, io->ln2_scale, io->resid_out, w->ln2_w, w->ln2_b, n, d, c->norm, c->norm_eps);
}

void lp_layer_forward_batch(const lp_model *m, int layer, const lp_batch_io *io, const lp_block *blocks, int nblocks,
                            const float *cos_t, const float *sin_t) {
    const lp_config *c = &m->cfg;
    /* Encoders' blocks start at position 0 (a patch anywhere changes every position), and
     * every row is read out, not only the last. */
    assert(c->causal || !io->last_only);
    const lp_layer *w = &m->layers[layer];
    int d = c->d_model, qd = c->n_head * c->d_head, kvd = c->n_kv_head * c->d_head, half = c->d_head / 2, N = 0;
    for (int b = 0; b < nblocks; b++) N += blocks[b].n;
    size_t nd = (size_t)N * d;

    /* Post-norm blocks: attention reads the stream itself, as lp_layer_forward. */
    if (c->post_norm) memcpy(io->ln1, io->resid_in, nd * sizeof *io->ln1);
    else lp_norm(io->ln1, io->ln1_scale, io->resid_in, w->ln1_w, w->ln1_b, N, d, c->norm, c->norm_eps);
    lp_linear_forward(io->q, io->ln1, &w->q, N);
    lp_linear_forward(io->k_new, io->ln1, &w->k, N);
    lp_linear_forward(io->v_new, io->ln1, &w->v, N);
    for (int b = 0, row = 0; b < nblocks; row += blocks[b].n, b++) {
        const lp_block *bl = &blocks[b];
        float *q = io->q + (size_t)row * qd, *k = io->k_new + (size_t)row * kvd, *v = io->v_new + (size_t)row * kvd;
        if (lp_pos_rotary(c)) {
            const float *cb = cos_t + (size_t)bl->t0 * half, *sb = sin_t + (size_t)bl->t0 * half;
            rope(q, bl->n, c->n_head, c->d_head, c->pos, cb, sb);
            rope(k, bl->n, c->n_kv_head, c->d_head, c->pos, cb, sb);
        }
        memcpy(bl->k + (size_t)bl->t0 * kvd, k, (size_t)bl->n * kvd * sizeof *k);
        memcpy(bl->v + (size_t)bl->t0 * kvd, v, (size_t)bl->n * kvd * sizeof *v);
        int skip = io->last_only ? bl->n - 1 : 0; /* queries that need not be answered */
        lp_layer_io one = {.q = q + (size_t)skip * qd, .k = bl->k, .v = bl->v, .pattern = io->pattern,
                           .pattern_ld = io->pattern_ld, .z = io->z + (size_t)(io->last_only ? b : row) * qd,
                           .rel_bias = io->rel_bias, .rel_bucket = io->rel_bucket, .rel_off = io->rel_off};
        attention(c, &one, bl->t0 + skip, bl->n - skip);
    }
    if (io->last_only) { /* from here on, one row per block: its last */
        for (int b = 0, row = 0; b < nblocks; row += blocks[b].n, b++)
            memcpy(io->resid_mid + (size_t)b * d, io->resid_in + (size_t)(row + blocks[b].n - 1) * d, (size_t)d * sizeof(float));
        N = nblocks;
        nd = (size_t)N * d;
    }
    if (io->edit) io->edit(io->ctx, LP_ACT_Z, io->z);
    lp_linear_forward(io->attn_out, io->z, &w->o, N);
    if (io->edit) io->edit(io->ctx, LP_ACT_ATTN_OUT, io->attn_out);
    add(io->resid_mid, io->last_only ? io->resid_mid : io->resid_in, io->attn_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_mid, io->ln1_scale, io->resid_mid, w->ln1_w, w->ln1_b, N, d, c->norm, c->norm_eps);
    const float *mlp_in = io->resid_mid; /* what the MLP reads and adds to, as lp_layer_forward */
    if (c->cross_attn) { /* the norm and projections over all rows, the heads block by block */
        lp_norm(io->lnx, io->lnx_scale, io->resid_mid, w->lnx_w, w->lnx_b, N, d, c->norm, c->norm_eps);
        lp_linear_forward(io->xq, io->lnx, &w->xq, N);
        for (int b = 0, row = 0; b < nblocks; row += blocks[b].n, b++) {
            int r0 = io->last_only ? b : row, rows = io->last_only ? 1 : blocks[b].n;
            cross_heads(c, io->xpattern, io->xz + (size_t)r0 * qd, io->xq + (size_t)r0 * qd, blocks[b].xk, blocks[b].xv,
                        io->S, rows);
        }
        if (io->edit) io->edit(io->ctx, LP_ACT_CROSS_Z, io->xz);
        lp_linear_forward(io->xattn_out, io->xz, &w->xo, N);
        if (io->edit) io->edit(io->ctx, LP_ACT_CROSS_OUT, io->xattn_out);
        add(io->resid_cross, io->resid_mid, io->xattn_out, nd);
        mlp_in = io->resid_cross;
    }
    if (c->attn_only) {
        skip_mlp(io->ln2, io->ln2_scale, io->mlp_pre, io->mlp_post, io->mlp_out, io->resid_out, mlp_in, N, c);
        if (io->edit) io->edit(io->ctx, LP_ACT_MLP_OUT, io->mlp_out);
        add(io->resid_out, mlp_in, io->mlp_out, nd);
        return;
    }

    /* From here on rows are independent: the same steps as lp_layer_forward, over N rows. */
    if (c->post_norm) memcpy(io->ln2, io->resid_mid, nd * sizeof *io->ln2);
    else lp_norm(io->ln2, io->ln2_scale, mlp_in, w->ln2_w, w->ln2_b, N, d, c->norm, c->norm_eps);
    mlp_rows(c, w, io->ln2, io->mlp_pre, io->mlp_up, io->mlp_post, io->mlp_out, N);
    if (io->edit) io->edit(io->ctx, LP_ACT_MLP_OUT, io->mlp_out);
    add(io->resid_out, mlp_in, io->mlp_out, nd);
    if (c->post_norm)
        lp_norm(io->resid_out, io->ln2_scale, io->resid_out, w->ln2_w, w->ln2_b, N, d, c->norm, c->norm_eps);
}

void lp_attention_seqs(float *pattern, float *z, const lp_config *c, const float *q, const float *k, const float *v,
                       int B, int T) {
    size_t qd = (size_t)c->n_head * c->d_head, kvd = (size_t)c->n_kv_head * c->d_head, TT = T;
    for (int b = 0; b < B; b++) {
        size_t row = (size_t)b * TT;
        lp_layer_io one = {.q = (float *)q + row * qd, .k = (float *)k + row * kvd, .v = (float *)v + row * kvd,
                           .pattern = pattern + row * c->n_head * TT, .pattern_ld = T, .z = z + row * qd};
        attention(c, &one, 0, T);
    }
}

void lp_rope_rows(float *x, const lp_config *c, int n, int heads, const float *cos_t, const float *sin_t) {
    rope(x, n, heads, c->d_head, c->pos, cos_t, sin_t);
}

void lp_gelu_rows(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = gelu_tanh(x[i]);
}

void lp_swiglu_rows(float *y, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = silu(gate[i]) * up[i];
}
