/* A dictionary's maths: encode, decode, and how well it reconstructs (see sae.h). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "sae/sae_impl.h"

#define LN_EPS 1e-5 /* SAELens's run_time_activation_ln_in */

void lp_sae_free(lp_sae *s) {
    if (!s) return;
    free(s->w_enc), free(s->b_enc), free(s->w_dec), free(s->b_dec);
    free(s->threshold), free(s->r_mag), free(s->b_mag), free(s->w_skip);
    free(s);
}

const lp_sae_info *lp_sae_get_info(const lp_sae *s) { return &s->info; }
const float *lp_sae_decoder_row(const lp_sae *s, int f) { return s->w_dec + (size_t)f * s->info.d_out; }

const char *lp_sae_arch_name(lp_sae_arch a) {
    static const char *const names[] = {"standard", "jumprelu",  "topk", "gated", "groupmax", "batchtopk",
                                        "matryoshka_batchtopk"};
    return names[a];
}
const char *lp_sae_arch_label(const lp_sae_info *in) { return in->arch_label ? in->arch_label : lp_sae_arch_name(in->arch); }
const char *lp_sae_norm_name(lp_sae_norm n) {
    static const char *const names[] = {"none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"};
    return names[n];
}
const char *lp_sae_format_name(lp_sae_format f) {
    static const char *const names[] = {"saelens", "gemma-scope npz", "sparsify", "llama-scope"};
    return names[f];
}

/* norm_in's parameters for one row: x -> (x - shift) * mul; norm_out: y -> y * back + shift
 * (back is 1 / mul but for layer_norm, whose way back leaves out the epsilon, as SAELens's
 * run_time_activation_ln_out does; back 1 and shift 0 for a SAELens transcoder, whose decode
 * has no norm_out, but expected_average_only_in, whose factor SAELens folds into W_dec). */
static void norm_params(const lp_sae *s, const float *x, double *mul, double *shift, double *back) {
    int d = s->info.d_in;
    *mul = 1.0, *shift = 0.0;
    *back = 1.0;
    switch (s->info.norm) {
    case LP_SAE_NORM_NONE:
        break;
    case LP_SAE_NORM_EXPECTED_AVERAGE_ONLY_IN:
        *mul = s->info.norm_scale;
        *back = 1.0 / *mul;
        break;
    case LP_SAE_NORM_CONSTANT_NORM_RESCALE: {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)x[j] * x[j];
        *mul = ss > 0 ? sqrt((double)d) / sqrt(ss) : 1.0; /* a zero row stays zero (torch gives NaN) */
        *back = 1.0 / *mul;
        break;
    }
    case LP_SAE_NORM_LAYER_NORM: {
        double mean = 0, var = 0;
        for (int j = 0; j < d; j++) mean += x[j];
        mean /= d;
        for (int j = 0; j < d; j++) var += ((double)x[j] - mean) * ((double)x[j] - mean);
        *shift = mean;
        *back = sqrt(var / (d - 1));
        *mul = 1.0 / (*back + LN_EPS);
        break;
    }
    }
    if (s->info.no_norm_out) *back = 1.0;
}

/* The shift norm_out adds back (norm_params' shift, 0 when the decoder has no norm_out). */
static double out_shift(const lp_sae *s, double shift) { return s->info.no_norm_out ? 0.0 : shift; }

/* row (d_sae) in place: pre-activations to activations. top: a TopK's scratch, k ids then
 * k floats. */
static void activate(const lp_sae *s, float *row, int *top) {
    int m = s->info.d_sae, k = s->info.k;
    switch (s->info.arch) {
    case LP_SAE_STANDARD:
        for (int j = 0; j < m; j++) row[j] = row[j] > 0 ? row[j] : 0;
        if (s->info.tanh_relu)
            for (int j = 0; j < m; j++) row[j] = tanhf(row[j]);
        break;
    case LP_SAE_JUMPRELU:
    case LP_SAE_BATCHTOPK:
    case LP_SAE_MATRYOSHKA_BATCHTOPK:
        for (int j = 0; j < m; j++) row[j] = row[j] > s->threshold[j] && row[j] > 0 ? row[j] : 0;
        break;
    case LP_SAE_TOPK:
        if (k > m) k = m;
        if (k < 1) k = 0; /* (the loaders take 1..d_sae) */
        else (void)lp_top_k(top, row, m, k); /* ties to the smaller index */
        float *kept = (float *)(top + k);
        for (int r = 0; r < k; r++) kept[r] = row[top[r]] > 0 ? row[top[r]] : 0;
        memset(row, 0, (size_t)m * sizeof *row);
        for (int r = 0; r < k; r++) row[top[r]] = kept[r];
        break;
    case LP_SAE_GROUPMAX: {
        int g = m / k;
        for (int b = 0; b < k; b++) {
            float *grp = row + (size_t)b * g;
            int best = 0;
            for (int j = 1; j < g; j++)
                if (grp[j] > grp[best]) best = j;
            float v = grp[best] > 0 ? grp[best] : 0;
            memset(grp, 0, (size_t)g * sizeof *grp);
            grp[best] = v;
        }
        break;
    }
    case LP_SAE_GATED:
        break; /* encode does both paths */
    }
}

int lp_sae_encode(const lp_sae *s, const float *x, int n, float *acts) {
    const lp_sae_info *si = &s->info;
    int d = si->d_in, m = si->d_sae;
    if (n <= 0) return LP_OK;
    float *xin = malloc((size_t)n * d * sizeof *xin);
    int *scratch = si->arch == LP_SAE_TOPK ? malloc((size_t)si->k * (sizeof(int) + sizeof(float))) : NULL;
    if (!xin || (si->arch == LP_SAE_TOPK && !scratch)) {
        free(xin), free(scratch);
        return lp_error(LP_ENOMEM, "out of memory encoding %d rows with %d features", n, m);
    }
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * d;
        float *o = xin + (size_t)i * d;
        double mul, shift, back;
        norm_params(s, xr, &mul, &shift, &back);
        for (int j = 0; j < d; j++) {
            double v = ((double)xr[j] - shift) * mul;
            if (si->apply_b_dec_to_input) v -= s->b_dec[j];
            o[j] = (float)v;
        }
    }
    /* pre = x' W_enc (n, d_sae), then the bias per row */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, d, 1.0f, xin, d, s->w_enc, m, 0.0f, acts, m);
    for (int i = 0; i < n; i++) {
        float *row = acts + (size_t)i * m;
        if (si->arch == LP_SAE_GATED) {
            /* x' (W_enc * exp(r_mag)) is (x' W_enc) * exp(r_mag), column by column */
            for (int j = 0; j < m; j++) {
                float mag = row[j] * s->r_mag[j] + s->b_mag[j];
                row[j] = row[j] + s->b_enc[j] > 0 && mag > 0 ? mag : 0;
            }
            continue;
        }
        for (int j = 0; j < m; j++) row[j] += s->b_enc[j];
        activate(s, row, scratch);
    }
    free(xin);
    free(scratch);
    return LP_OK;
}

int lp_sae_decode(const lp_sae *s, const float *acts, const float *x, int n, float *out) {
    const lp_sae_info *si = &s->info;
    int m = si->d_sae, dout = si->d_out, din = si->d_in;
    bool needs_x = si->skip || (!si->no_norm_out && (si->norm == LP_SAE_NORM_CONSTANT_NORM_RESCALE ||
                                                      si->norm == LP_SAE_NORM_LAYER_NORM));
    if (n <= 0) return LP_OK;
    if (needs_x && !x)
        return lp_error(LP_EINVAL, "decoding this dictionary needs the input it encoded (its normalisation or skip)");
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * dout, s->b_dec, (size_t)dout * sizeof *out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dout, m, 1.0f, acts, m, s->w_dec, dout, 1.0f, out, dout);
    bool unnorm = si->norm != LP_SAE_NORM_NONE && !si->no_norm_out;
    for (int i = 0; i < n && unnorm; i++) {
        double mul, shift, back;
        norm_params(s, x ? x + (size_t)i * din : NULL, &mul, &shift, &back);
        float *o = out + (size_t)i * dout;
        shift = out_shift(s, shift);
        for (int j = 0; j < dout; j++) o[j] = (float)((double)o[j] * back + shift);
    }
    if (si->skip) /* out += x W_skip^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, dout, din, 1.0f, x, din, s->w_skip, din, 1.0f, out, dout);
    return LP_OK;
}

int lp_sae_measure(const lp_sae *s, const float *x, const float *y, int n, float *acts, float *recon,
                   lp_sae_stats *out) {
    const lp_sae_info *si = &s->info;
    int m = si->d_sae, d = si->d_out, rc;
    memset(out, 0, sizeof *out);
    out->n = n;
    if (n <= 0) return lp_error(LP_EINVAL, "no positions to measure the dictionary on");
    if ((rc = lp_sae_encode(s, x, n, acts)) || (rc = lp_sae_decode(s, acts, x, n, recon))) return rc;
    double *mean = calloc((size_t)d, sizeof *mean);
    if (!mean) return lp_error(LP_ENOMEM, "out of memory");
    double nz = 0, err = 0, var = 0, norm = 0;
    for (int i = 0; i < n; i++) {
        const float *a = acts + (size_t)i * m, *yr = y + (size_t)i * d, *r = recon + (size_t)i * d;
        for (int j = 0; j < m; j++) nz += a[j] != 0;
        for (int j = 0; j < d; j++) {
            double e = (double)yr[j] - r[j];
            err += e * e;
            norm += (double)yr[j] * yr[j];
            mean[j] += yr[j];
        }
    }
    for (int j = 0; j < d; j++) mean[j] /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double c = (double)y[(size_t)i * d + j] - mean[j];
            var += c * c;
        }
    free(mean);
    out->l0 = nz / n;
    out->mse = err / ((double)n * d);
    out->explained_variance = var > 0 ? 1.0 - err / var : NAN;
    out->rel_error = norm > 0 ? sqrt(err / norm) : NAN;
    return LP_OK;
}

int lp_sae_attribute(const lp_sae *s, const float *x, const float *y, const float *grad, int n, float *attr,
                     double *parts) {
    const lp_sae_info *si = &s->info;
    int m = si->d_sae, dout = si->d_out, din = si->d_in, rc;
    if (n <= 0) return LP_OK;
    float *recon = malloc((size_t)n * dout * sizeof *recon), *zero = calloc((size_t)m, sizeof *zero);
    float *base = malloc((size_t)dout * sizeof *base);
    if (!recon || !zero || !base) {
        free(recon), free(zero), free(base);
        return lp_error(LP_ENOMEM, "out of memory attributing to %d features", m);
    }
    if ((rc = lp_sae_encode(s, x, n, attr)) || (rc = lp_sae_decode(s, attr, x, n, recon))) goto out;
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * din, *g = grad + (size_t)i * dout, *yr = y + (size_t)i * dout;
        const float *rr = recon + (size_t)i * dout;
        float *a = attr + (size_t)i * m;
        double mul, shift, back, err = 0, total = 0, cst = 0;
        norm_params(s, xr, &mul, &shift, &back);
        if ((rc = lp_sae_decode(s, zero, xr, 1, base))) goto out; /* the decoder's constant part for this row */
        for (int j = 0; j < dout; j++) {
            err += (double)g[j] * ((double)yr[j] - rr[j]);
            total += (double)g[j] * yr[j];
            cst += (double)g[j] * base[j];
        }
        for (int f = 0; f < m; f++) {
            if (a[f] == 0) continue; /* inactive: no attribution, and most are */
            const float *w = s->w_dec + (size_t)f * dout;
            double gw = 0;
            for (int j = 0; j < dout; j++) gw += (double)g[j] * w[j];
            a[f] = (float)(a[f] * back * gw);
        }
        parts[3 * i] = err, parts[3 * i + 1] = cst, parts[3 * i + 2] = total;
    }
out:
    free(recon), free(zero), free(base);
    return rc;
}
