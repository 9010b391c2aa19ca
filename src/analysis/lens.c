/* Logit lens (see lens.h): every layer's residual stream through the final norm and the
 * unembedding, a chunk of positions at a time (every row of it in one product), so memory
 * stays at one (rows * LP_LENS_CHUNK, V) block. */
#include "loupe/lens.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "loupe/generate.h"
#include "loupe/error.h"

/* The residual stream of lens row `row`: embeddings for 0, leaving layer row - 1 after. */
static const float *row_resid(const lp_run *r, int row) {
    lp_view v;
    if (row == 0) lp_run_view(r, LP_ACT_RESID_PRE, 0, -1, &v);
    else lp_run_view(r, LP_ACT_RESID_POST, row - 1, -1, &v);
    return v.data;
}

/* logits (n, V) of the n residual vectors x (n, d): through the final norm and the
 * unembedding, or a masked LM's head (whose last layer ends in its own norm). */
static int lens_block(const lp_model *m, const float *x, int n, float *logits) {
    const lp_config *c = lp_model_config(m);
    float *y = malloc((size_t)n * c->d_model * sizeof *y), *scale = malloc((size_t)n * sizeof *scale);
    if (!y || !scale) {
        free(y);
        free(scale);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    if (c->head == LP_HEAD_MLM) {
        lp_head_forward(y, logits, m, x, n);
    } else {
        lp_norm(y, scale, x, m->lnf_w, m->lnf_b, n, c->d_model, c->norm, c->norm_eps);
        lp_linear_forward(logits, y, &m->unembed, n);
        /* Gemma 2's final soft cap, as the model applies it: the last row is the run's output */
        lp_softcap(logits, (size_t)n * c->vocab, c->final_softcap);
    }
    free(y);
    free(scale);
    return LP_OK;
}

/* A lens reads every position's tokens: decoders and masked LMs. */
static int need_token_head(const lp_model *m) {
    const lp_config *c = lp_model_config(m);
    if (c->head == LP_HEAD_LM || c->head == LP_HEAD_MLM) return LP_OK;
    return lp_error(LP_EUNSUPPORTED, "lens: %s has no token predictions to read the layers through (its head: %s)",
                    c->arch, lp_head_kind_name(c->head));
}

int lp_lens_logits(const lp_run *r, int row, int pos, float *logits) {
    if (need_token_head(lp_run_model(r))) return LP_EUNSUPPORTED;
    const lp_model *m = lp_run_model(r);
    const lp_config *c = lp_model_config(m);
    if (row < 0 || row > c->n_layer) return lp_error(LP_EINVAL, "lens row %d is out of range (0..%d)", row, c->n_layer);
    if (pos < 0 || pos >= lp_run_len(r)) return lp_error(LP_EINVAL, "position %d is out of range", pos);
    return lens_block(m, row_resid(r, row) + (size_t)pos * c->d_model, 1, logits);
}

int lp_lens_chunk(const lp_run *r, int chunk, int k, int target, int *top_ids, float *top_probs, float *target_prob,
                  int *target_rank) {
    if (need_token_head(lp_run_model(r))) return LP_EUNSUPPORTED;
    const lp_model *m = lp_run_model(r);
    const lp_config *c = lp_model_config(m);
    int T = lp_run_len(r), V = c->vocab, d = c->d_model, rows = c->n_layer + 1;
    if (k < 1 || k > V) return lp_error(LP_EINVAL, "k must be 1..%d", V);
    if (target >= V) return lp_error(LP_EINVAL, "target id %d is outside the vocabulary", target);
    int p0 = chunk * LP_LENS_CHUNK, n = T - p0 < LP_LENS_CHUNK ? T - p0 : LP_LENS_CHUNK;
    if (chunk < 0 || n < 1) return lp_error(LP_EINVAL, "lens chunk %d is out of range", chunk);
    /* every row's residual vectors at the chunk's positions, as one product (rows * n, V) */
    float *x = malloc((size_t)rows * n * d * sizeof *x), *logits = malloc((size_t)rows * n * V * sizeof *logits);
    int *ids = malloc((size_t)rows * n * k * sizeof *ids);
    double *probs = malloc((size_t)rows * n * k * sizeof *probs);
    int rc = !x || !logits || !ids || !probs ? lp_error(LP_ENOMEM, "out of memory for the lens (%d x %d logits)", rows * n, V)
                                             : LP_OK;
    for (int row = 0; row < rows && !rc; row++)
        memcpy(x + (size_t)row * n * d, row_resid(r, row) + (size_t)p0 * d, (size_t)n * d * sizeof *x);
    if (!rc && !(rc = lens_block(m, x, rows * n, logits)))
        rc = lp_top_k_rows(ids, probs, logits, rows * n, V, k);
    for (int row = 0; row < rows && !rc; row++)
        for (int t = 0; t < n; t++) {
            size_t cell = (size_t)row * n + t, o = (size_t)row * T + p0 + t;
            const float *lg = logits + cell * V;
            for (int i = 0; i < k; i++) {
                top_ids[o * k + i] = ids[cell * k + i];
                top_probs[o * k + i] = (float)probs[cell * k + i];
            }
            if (target < 0) continue;
            float mx;
            double z = lp_softmax_norm(lg, V, &mx);
            if (target_prob) target_prob[o] = (float)(exp((double)lg[target] - mx) / z);
            if (target_rank) {
                int rank = 1; /* 1 = top, as top's ranks */
                for (int j = 0; j < V; j++) rank += lg[j] > lg[target] || (lg[j] == lg[target] && j < target);
                target_rank[o] = rank;
            }
        }
    free(x);
    free(logits);
    free(ids);
    free(probs);
    return rc;
}

int lp_lens(const lp_run *r, int k, int target, int *top_ids, float *top_probs, float *target_prob, int *target_rank) {
    int rc = LP_OK, T = lp_run_len(r);
    for (int chunk = 0; chunk * LP_LENS_CHUNK < T && !rc; chunk++) {
        if (lp_cancelled()) return lp_error(LP_ECANCEL, "cancelled");
        rc = lp_lens_chunk(r, chunk, k, target, top_ids, top_probs, target_prob, target_rank);
    }
    return rc;
}
