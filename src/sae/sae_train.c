/* Training a sparse autoencoder (see sae_train.h): the loss and its gradient by hand, four
 * matrix products each way, and Adam. */
#include "loupe/sae_train.h"

#include <cblas.h>
#include <errno.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "loupe/ckptdir.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/generate.h"
#include "loupe/safetensors.h"

#define ADAM_B1 0.9
#define ADAM_B2 0.999
#define ADAM_EPS 1e-8

struct lp_sae_trainer {
    lp_sae_train_spec spec;
    size_t n_params;
    float *p, *m, *v, *g;       /* parameters, Adam's moments, the gradient: n_params each */
    float *w_enc, *b_enc, *w_dec, *b_dec; /* into p */
    long step;
    double scale;  /* inputs are multiplied by this (1, or set by the first step: normalize) */
    /* per-batch scratch, grown to the largest batch */
    int cap;
    float *xc, *pre, *f, *err, *df, *dxc, *xs;
    int *top;
    double *col; /* (d_in): per-column sums */
};

int lp_sae_trainer_new(lp_sae_trainer **out, const lp_sae_train_spec *spec) {
    *out = NULL;
    const lp_sae_train_spec *s = spec;
    if (s->d_in < 1 || s->d_in > LP_SAE_MAX_D_IN)
        return lp_error(LP_EINVAL, "train-sae: the site's width %d is outside 1..%d", s->d_in, LP_SAE_MAX_D_IN);
    if (s->d_sae < 1 || s->d_sae > LP_SAE_MAX_D_SAE)
        return lp_error(LP_EINVAL, "train-sae: --d-sae %d is outside 1..%d", s->d_sae, LP_SAE_MAX_D_SAE);
    if ((size_t)s->d_in * s->d_sae > ((size_t)1 << 31))
        return lp_error(LP_ERANGE, "train-sae: %d x %d weights are too many; give a smaller --d-sae", s->d_in, s->d_sae);
    if (s->arch != LP_SAE_STANDARD && s->arch != LP_SAE_TOPK)
        return lp_error(LP_EINVAL, "train-sae: only standard (ReLU + L1) and topk dictionaries are trained");
    if (s->arch == LP_SAE_TOPK && (s->k < 1 || s->k > s->d_sae))
        return lp_error(LP_EINVAL, "train-sae: --k %d is outside 1..%d (the dictionary's size)", s->k, s->d_sae);
    if (!(s->l1 >= 0 && s->l1 < 1e6)) return lp_error(LP_EINVAL, "train-sae: --l1 must be in [0, 1e6)");
    if (!(s->lr > 0 && s->lr < 10)) return lp_error(LP_EINVAL, "train-sae: --lr must be in (0, 10)");
    lp_sae_trainer *t = calloc(1, sizeof *t);
    if (!t) return lp_error(LP_ENOMEM, "out of memory");
    t->spec = *s;
    t->scale = 1.0;
    size_t d = (size_t)s->d_in, m = (size_t)s->d_sae;
    t->n_params = 2 * d * m + m + d;
    t->p = calloc(4 * t->n_params, sizeof(float));
    if (!t->p) {
        free(t);
        return lp_error(LP_ENOMEM, "out of memory for a %d x %d dictionary", s->d_in, s->d_sae);
    }
    t->m = t->p + t->n_params, t->v = t->m + t->n_params, t->g = t->v + t->n_params;
    if (!(t->col = malloc(d * sizeof *t->col))) {
        free(t->p), free(t);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    t->w_enc = t->p, t->b_enc = t->w_enc + d * m, t->w_dec = t->b_enc + m, t->b_dec = t->w_dec + m * d;
    /* Decoder rows: random directions (normal draws by Box-Muller, then unit norm); the
     * encoder starts as their transpose. */
    lp_rng rng;
    lp_rng_seed(&rng, s->seed);
    for (size_t j = 0; j < m; j++) {
        float *row = t->w_dec + j * d;
        double norm = 0.0;
        for (size_t i = 0; i < d; i++) {
            double u1 = lp_rng_uniform(&rng), u2 = lp_rng_uniform(&rng);
            double z = sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
            row[i] = (float)z;
            norm += z * z;
        }
        double inv = norm > 0 ? 1.0 / sqrt(norm) : 0.0;
        for (size_t i = 0; i < d; i++) {
            row[i] = (float)(row[i] * inv);
            t->w_enc[i * m + j] = row[i];
        }
    }
    *out = t;
    return LP_OK;
}

void lp_sae_trainer_free(lp_sae_trainer *t) {
    if (!t) return;
    free(t->p);
    free(t->col);
    free(t->xc);
    free(t->top);
    free(t);
}

float *lp_sae_trainer_params(lp_sae_trainer *t, size_t *count) {
    *count = t->n_params;
    return t->p;
}

static int reserve(lp_sae_trainer *t, int n) {
    if (n <= t->cap) return LP_OK;
    size_t d = (size_t)t->spec.d_in, m = (size_t)t->spec.d_sae;
    size_t per = 4 * d + 3 * m; /* xc, err, dxc, xs; pre, f, df */
    float *buf = malloc((size_t)n * per * sizeof *buf);
    int *top = t->spec.arch == LP_SAE_TOPK ? malloc((size_t)t->spec.k * sizeof *top) : NULL;
    if (!buf || (t->spec.arch == LP_SAE_TOPK && !top)) {
        free(buf), free(top);
        return lp_error(LP_ENOMEM, "train-sae: out of memory for a batch of %d rows", n);
    }
    free(t->xc), free(t->top);
    t->xc = buf, t->err = buf + (size_t)n * d, t->dxc = t->err + (size_t)n * d;
    t->xs = t->dxc + (size_t)n * d;
    t->pre = t->xs + (size_t)n * d, t->f = t->pre + (size_t)n * m, t->df = t->f + (size_t)n * m;
    t->top = top;
    t->cap = n;
    return LP_OK;
}

/* f from pre, row by row (standard: ReLU; topk: ReLU at the k largest). */
static void activate_rows(lp_sae_trainer *t, int n) {
    size_t m = (size_t)t->spec.d_sae;
    for (int r = 0; r < n; r++) {
        const float *pre = t->pre + r * m;
        float *f = t->f + r * m;
        if (t->spec.arch == LP_SAE_STANDARD) {
            for (size_t j = 0; j < m; j++) f[j] = pre[j] > 0 ? pre[j] : 0.0f;
        } else {
            memset(f, 0, m * sizeof *f);
            (void)lp_top_k(t->top, pre, (int)m, t->spec.k); /* k <= m is small: no allocation */
            for (int q = 0; q < t->spec.k; q++) f[t->top[q]] = pre[t->top[q]] > 0 ? pre[t->top[q]] : 0.0f;
        }
    }
}

int lp_sae_trainer_loss(lp_sae_trainer *t, const float *x, int n, lp_sae_step_stats *st, float *grads) {
    if (n < 1) return lp_error(LP_EINVAL, "train-sae: an empty batch");
    int rc = reserve(t, n);
    if (rc) return rc;
    int d = t->spec.d_in, m = t->spec.d_sae;
    size_t nd = (size_t)n * d, nm = (size_t)n * m;
    if (t->scale != 1.0) { /* the loss is the normalised inputs' */
        float c = (float)t->scale;
        for (size_t e = 0; e < nd; e++) t->xs[e] = x[e] * c;
        x = t->xs;
    }
    /* forward */
    for (size_t r = 0; r < (size_t)n; r++)
        for (int i = 0; i < d; i++) t->xc[r * d + i] = x[r * d + i] - t->b_dec[i];
    for (size_t r = 0; r < (size_t)n; r++) memcpy(t->pre + r * m, t->b_enc, (size_t)m * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, d, 1.0f, t->xc, d, t->w_enc, m, 1.0f, t->pre, m);
    activate_rows(t, n);
    for (size_t r = 0; r < (size_t)n; r++) memcpy(t->err + r * d, t->b_dec, (size_t)d * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, m, 1.0f, t->f, m, t->w_dec, d, 1.0f, t->err, d);
    double mse = 0.0, l1 = 0.0, active = 0.0, var = 0.0;
    for (size_t e = 0; e < nd; e++) {
        t->err[e] -= x[e];
        mse += (double)t->err[e] * t->err[e];
    }
    for (size_t e = 0; e < nm; e++) {
        l1 += t->f[e];
        active += t->f[e] > 0;
    }
    /* the batch's variance about its mean, summed over columns: sum |x|^2 - n |mean|^2 */
    double *col = t->col;
    for (int i = 0; i < d; i++) col[i] = 0.0;
    for (size_t r = 0; r < (size_t)n; r++)
        for (int i = 0; i < d; i++) {
            double xv = x[r * d + i];
            col[i] += xv;
            var += xv * xv;
        }
    for (int i = 0; i < d; i++) var -= col[i] * col[i] / n;
    double coef = t->spec.arch == LP_SAE_STANDARD ? t->spec.l1 : 0.0;
    if (st) {
        st->mse = mse / n;
        st->l1 = coef * l1 / n;
        st->loss = st->mse + st->l1;
        st->l0 = active / n;
        st->explained_variance = var > 0 ? 1.0 - mse / var : 0.0;
    }
    if (!grads) return LP_OK;
    /* backward: d loss / d x_hat = 2 err / n */
    float *gw_enc = grads, *gb_enc = gw_enc + (size_t)d * m, *gw_dec = gb_enc + m, *gb_dec = gw_dec + (size_t)m * d;
    float scale = 2.0f / (float)n;
    for (size_t e = 0; e < nd; e++) t->err[e] *= scale;
    /* W_dec: f^T dx_hat; b_dec: the rows' sum of dx_hat, less the rows' sum of dxc below */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, d, n, 1.0f, t->f, m, t->err, d, 0.0f, gw_dec, d);
    /* df = dx_hat W_dec^T + l1 / n where f > 0; through the activation: dpre = df where f > 0
     * (a feature at zero, or not among the top k, passes nothing) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, d, 1.0f, t->err, d, t->w_dec, d, 0.0f, t->df, m);
    float pen = (float)(coef / n);
    for (size_t e = 0; e < nm; e++) t->df[e] = t->f[e] > 0 ? t->df[e] + pen : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, m, n, 1.0f, t->xc, d, t->df, m, 0.0f, gw_enc, m);
    for (int j = 0; j < m; j++) gb_enc[j] = 0.0f;
    for (size_t r = 0; r < (size_t)n; r++)
        for (int j = 0; j < m; j++) gb_enc[j] += t->df[r * m + j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, m, 1.0f, t->df, m, t->w_enc, m, 0.0f, t->dxc, d);
    for (int i = 0; i < d; i++) col[i] = 0.0;
    for (size_t r = 0; r < (size_t)n; r++)
        for (int i = 0; i < d; i++) col[i] += (double)t->err[r * d + i] - t->dxc[r * d + i];
    for (int i = 0; i < d; i++) gb_dec[i] = (float)col[i];
    return LP_OK;
}

int lp_sae_trainer_step(lp_sae_trainer *t, const float *x, int n, lp_sae_step_stats *st) {
    int d = t->spec.d_in, m = t->spec.d_sae;
    if (t->step == 0 && n > 0) {
        /* normalize: the scale that makes the first batch's mean norm sqrt(d_in) (SAELens's
         * expected_average_only_in), so that an L1 coefficient means the same at any site */
        if (t->spec.normalize) {
            double norms = 0.0;
            for (int r = 0; r < n; r++) {
                double ss = 0.0;
                for (int i = 0; i < d; i++) ss += (double)x[(size_t)r * d + i] * x[(size_t)r * d + i];
                norms += sqrt(ss);
            }
            if (norms > 0) t->scale = sqrt((double)d) / (norms / n);
        }
        /* b_dec starts at the data's mean: x' is centred from the first step */
        for (int i = 0; i < d; i++) {
            double s = 0.0;
            for (int r = 0; r < n; r++) s += x[(size_t)r * d + i];
            t->b_dec[i] = (float)(s / n * t->scale);
        }
    }
    int rc = lp_sae_trainer_loss(t, x, n, st, t->g);
    if (rc) return rc;
    if (st && !isfinite(st->loss))
        return lp_error(LP_ERANGE, "train-sae: the loss became %g at step %ld; try a smaller --lr", st->loss, t->step);
    /* the decoder gradient's part along each (unit) row would only change its norm, which the
     * renormalisation below undoes: removed, as SAELens does */
    float *gw_dec = t->g + (size_t)d * m + m;
    for (int j = 0; j < m; j++) {
        float *g = gw_dec + (size_t)j * d;
        const float *w = t->w_dec + (size_t)j * d;
        double dot = 0.0;
        for (int i = 0; i < d; i++) dot += (double)g[i] * w[i];
        for (int i = 0; i < d; i++) g[i] -= (float)(dot * w[i]);
    }
    t->step++;
    double c1 = 1.0 - pow(ADAM_B1, (double)t->step), c2 = 1.0 - pow(ADAM_B2, (double)t->step);
    float lr = (float)(t->spec.lr / c1), b1 = (float)ADAM_B1, b2 = (float)ADAM_B2;
    float inv_c2 = (float)(1.0 / c2), eps = (float)ADAM_EPS;
    for (size_t e = 0; e < t->n_params; e++) {
        float g = t->g[e];
        t->m[e] = b1 * t->m[e] + (1.0f - b1) * g;
        t->v[e] = b2 * t->v[e] + (1.0f - b2) * g * g;
        t->p[e] -= lr * t->m[e] / (sqrtf(t->v[e] * inv_c2) + eps);
    }
    for (int j = 0; j < m; j++) {
        float *w = t->w_dec + (size_t)j * d;
        double norm = 0.0;
        for (int i = 0; i < d; i++) norm += (double)w[i] * w[i];
        if (norm > 0)
            for (int i = 0; i < d; i++) w[i] = (float)(w[i] / sqrt(norm));
    }
    return LP_OK;
}

int lp_sae_trainer_save(const lp_sae_trainer *t, const char *dir, const char *hook_name, const char *model_name) {
    const lp_sae_train_spec *s = &t->spec;
    int rc = lp_ckptdir_check_new(dir);
    if (rc) return rc;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return lp_error(LP_EIO, "%s: cannot create the directory: %s", dir, strerror(errno));
    json_t *cfg = json_pack("{s:s,s:i,s:i,s:s,s:b,s:s,s:s,s:s,s:s,s:f,s:f,s:I,s:f,s:I}", "architecture",
                            lp_sae_arch_name(s->arch), "d_in", s->d_in, "d_sae", s->d_sae, "hook_name", hook_name,
                            "apply_b_dec_to_input", 1, "normalize_activations", "none", "dtype", "float32",
                            "model_name", model_name, "trained_by", "loupe train-sae", "l1_coefficient",
                            s->arch == LP_SAE_STANDARD ? s->l1 : 0.0, "lr", s->lr, "training_steps",
                            (json_int_t)t->step, "activation_scale_folded", t->scale, "seed", (json_int_t)(s->seed & 0x7fffffffffffffffULL));
    if (cfg && s->arch == LP_SAE_TOPK) json_object_set_new(cfg, "k", json_integer(s->k));
    char *text = cfg ? json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(cfg);
    if (!text) return lp_error(LP_ENOMEM, "out of memory");
    char staging[4096], path[4096];
    size_t d = (size_t)s->d_in, m = (size_t)s->d_sae;
    /* the scale folded into the weights, as SAELens saves a normalised dictionary: x c goes
     * through (x - b_dec / c) (c W_enc) and comes back as f (W_dec / c) + b_dec / c */
    float *folded = malloc(t->n_params * sizeof *folded);
    if (!folded) {
        free(text);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    float *we = folded, *be = we + d * m, *wd = be + m, *bd = wd + m * d;
    double c = t->scale;
    for (size_t e = 0; e < d * m; e++) we[e] = (float)(t->w_enc[e] * c), wd[e] = (float)(t->w_dec[e] / c);
    for (size_t j = 0; j < m; j++) be[j] = t->b_enc[j];
    for (size_t i = 0; i < d; i++) bd[i] = (float)(t->b_dec[i] / c);
    lp_st_tensor ts[] = {
        {.name = "W_enc", .dtype = LP_DT_F32, .ndim = 2, .shape = {(int64_t)d, (int64_t)m}, .data = we, .nbytes = d * m * 4},
        {.name = "b_enc", .dtype = LP_DT_F32, .ndim = 1, .shape = {(int64_t)m}, .data = be, .nbytes = m * 4},
        {.name = "W_dec", .dtype = LP_DT_F32, .ndim = 2, .shape = {(int64_t)m, (int64_t)d}, .data = wd, .nbytes = m * d * 4},
        {.name = "b_dec", .dtype = LP_DT_F32, .ndim = 1, .shape = {(int64_t)d}, .data = bd, .nbytes = d * 4},
    };
    if (!(rc = lp_ckptdir_stage(dir, staging, sizeof staging)) &&
        !(rc = lp_path_join(path, sizeof path, staging, "sae_weights.safetensors")) &&
        !(rc = lp_st_write(path, ts, 4, NULL, NULL, 0)) && !(rc = lp_path_join(path, sizeof path, staging, "cfg.json")))
        rc = lp_file_write(path, text, strlen(text));
    free(text);
    free(folded);
    return rc ? rc : lp_ckptdir_commit(dir);
}
