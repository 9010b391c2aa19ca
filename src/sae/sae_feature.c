/* What a feature writes does to the logits (sae.h, lp_sae_direction_logits). */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "arch/model_impl.h"
#include "loupe/error.h"
#include "loupe/sae.h"

/* y (out) = x (in) W, without the bias. */
static void times_linear(const lp_linear *L, const float *x, float *y) {
    if (L->trans) /* w is (out, in) */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, L->out, L->in, 1.0f, L->w, L->ld, x, 1, 0.0f, y, 1);
    else /* w is (in, out) */
        cblas_sgemv(CblasRowMajor, CblasTrans, L->in, L->out, 1.0f, L->w, L->ld, x, 1, 0.0f, y, 1);
}

int lp_sae_direction_logits(const lp_run *r, lp_act_kind kind, int layer, const float *row, int pos, float *logits) {
    const lp_model *m = lp_run_model(r);
    const lp_config *c = &m->cfg;
    int rc = lp_model_need_decoder(m, "a feature's logit effects");
    if (rc) return rc;
    if (c->head != LP_HEAD_LM || !m->lnf_w)
        return lp_error(LP_EUNSUPPORTED, "a feature's logit effects need a language model's final norm and unembedding");
    if (layer < 0 || layer >= c->n_layer || pos < 0 || pos >= lp_run_len(r))
        return lp_error(LP_EINVAL, "layer %d or position %d is out of range", layer, pos);
    int d = c->d_model;
    float *x = malloc((size_t)d * sizeof *x);
    if (!x) return lp_error(LP_ENOMEM, "out of memory");
    switch (kind) {
    case LP_ACT_RESID_PRE: case LP_ACT_RESID_MID: case LP_ACT_RESID_POST: case LP_ACT_ATTN_OUT: case LP_ACT_MLP_OUT:
        memcpy(x, row, (size_t)d * sizeof *x);
        break;
    case LP_ACT_Z:
        times_linear(&m->layers[layer].o, row, x);
        break;
    case LP_ACT_MLP_POST:
        times_linear(&m->layers[layer].down, row, x);
        break;
    default:
        free(x);
        return lp_error(LP_EUNSUPPORTED, "the %s site is not written into the residual stream, so its features have "
                        "no direct logit effect (use a dictionary on resid_*, attn_out, mlp_out, z or mlp_post)",
                        lp_act_name(kind));
    }
    lp_view sv;
    lp_run_view(r, LP_ACT_LN_FINAL_SCALE, 0, -1, &sv);
    double mean = 0;
    if (c->norm == LP_NORM_LAYERNORM) {
        for (int j = 0; j < d; j++) mean += x[j];
        mean /= d;
    }
    float s = sv.data[pos];
    for (int j = 0; j < d; j++) x[j] = (float)(((double)x[j] - mean) * s * m->lnf_w[j]);
    times_linear(&m->unembed, x, logits);
    free(x);
    return LP_OK;
}
