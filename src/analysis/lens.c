/* Logit lens (see lens.h): every layer's residual stream through the final norm and the
 * unembedding, one layer at a time so memory stays at one (T, V) block. */
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

int lp_lens(const lp_run *r, int k, int target, int *top_ids, float *top_probs, float *target_prob, int *target_rank) {
    if (need_token_head(lp_run_model(r))) return LP_EUNSUPPORTED;
    const lp_model *m = lp_run_model(r);
    const lp_config *c = lp_model_config(m);
    int T = lp_run_len(r), V = c->vocab;
    if (k < 1 || k > V) return lp_error(LP_EINVAL, "k must be 1..%d", V);
    if (target >= V) return lp_error(LP_EINVAL, "target id %d is outside the vocabulary", target);
    float *logits = malloc((size_t)T * V * sizeof *logits);
    if (!logits) return lp_error(LP_ENOMEM, "out of memory for the lens (%d x %d logits)", T, V);
    int rc = LP_OK;
    for (int row = 0; row <= c->n_layer && !rc; row++) {
        if (lp_cancelled()) {
            rc = lp_error(LP_ECANCEL, "cancelled");
            break;
        }
        if ((rc = lens_block(m, row_resid(r, row), T, logits))) break;
        for (int t = 0; t < T; t++) {
            const float *lg = logits + (size_t)t * V;
            float mx;
            double z = lp_softmax_norm(lg, V, &mx);
            size_t at = ((size_t)row * T + t) * k;
            int *ids = top_ids + at;
            float *probs = top_probs + at;
            if ((rc = lp_top_k(ids, lg, V, k))) break;
            for (int i = 0; i < k; i++) probs[i] = (float)(exp((double)lg[ids[i]] - mx) / z);
            if (target >= 0) {
                size_t o = (size_t)row * T + t;
                if (target_prob) target_prob[o] = (float)(exp((double)lg[target] - mx) / z);
                if (target_rank) {
                    int rank = 1; /* 1 = top, as top's ranks */
                    for (int j = 0; j < V; j++) rank += lg[j] > lg[target] || (lg[j] == lg[target] && j < target);
                    target_rank[o] = rank;
                }
            }
        }
    }
    free(logits);
    return rc;
}
