/* A forward edited by dictionaries: splicing, clamping, zero-ablation and steering at a
 * site, through the forward's edit hook (sae.h, lp_sae_editor). */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/sae.h"

/* The order in which a layer's forward reaches the sites an edit may touch. */
static int site_order(lp_act_kind k) {
    static const lp_act_kind order[] = {LP_ACT_RESID_PRE, LP_ACT_LN1,      LP_ACT_Z,        LP_ACT_ATTN_OUT,
                                        LP_ACT_RESID_MID, LP_ACT_LN2,      LP_ACT_MLP_PRE,  LP_ACT_MLP_POST,
                                        LP_ACT_MLP_OUT,   LP_ACT_RESID_POST};
    for (int i = 0; i < (int)(sizeof order / sizeof *order); i++)
        if (order[i] == k) return i;
    return -1;
}

typedef struct {
    lp_sae_edit e;
    float *stash;    /* a transcoder's input rows, kept from its input site: (stash_rows, d_in) */
    int stash_rows;
} edit_state;

struct lp_sae_editor {
    edit_state *edits;
    int n;
    int rc;          /* the first failure inside the forward */
};

int lp_sae_editor_new(lp_sae_editor **out, const lp_sae_edit *edits, int n) {
    *out = NULL;
    for (int i = 0; i < n; i++) {
        const lp_sae_edit *e = &edits[i];
        const lp_sae_info *in = lp_sae_get_info(e->sae);
        if (site_order(e->kind) < 0 || site_order(e->out_kind) < 0)
            return lp_error(LP_EUNSUPPORTED, "a dictionary on %s or %s cannot be spliced or steered yet (sites: "
                            "resid_pre, ln1, z, attn_out, resid_mid, ln2, mlp_pre, mlp_post, mlp_out, resid_post)", lp_act_name(e->kind),
                            lp_act_name(e->out_kind));
        if (in->transcoder && e->mode != LP_SAE_PASS && e->mode != LP_SAE_ZERO &&
            e->layer * 16 + site_order(e->kind) >= e->out_layer * 16 + site_order(e->out_kind))
            return lp_error(LP_EINVAL, "a transcoder must read a site the forward reaches before the one it writes");
        for (int k = 0; k < e->n_clamp + e->n_steer; k++) {
            int f = k < e->n_clamp ? e->clamp_id[k] : e->steer_id[k - e->n_clamp];
            float v = k < e->n_clamp ? e->clamp_value[k] : e->steer_alpha[k - e->n_clamp];
            if (f < 0 || f >= in->d_sae)
                return lp_error(LP_EINVAL, "feature %d is out of range: the dictionary has features 0..%d", f,
                                in->d_sae - 1);
            if (!isfinite(v)) return lp_error(LP_EINVAL, "feature %d: the value must be a finite number", f);
        }
        if (!e->src_acts) continue;
        if (e->mode == LP_SAE_ZERO || e->mode == LP_SAE_SPLICE_NO_ERROR || (e->patch_error && !e->src_err))
            return lp_error(LP_EINVAL, "patching features needs the dictionary spliced with its error term, and "
                            "the other run's error term to patch it");
        if (e->src_rows < 1 || e->patch_pos < -1 || e->patch_pos >= e->src_rows)
            return lp_error(LP_EINVAL, "patching features: position %d is out of range (0..%d)", e->patch_pos,
                            e->src_rows - 1);
        for (int k = 0; k < e->n_patch; k++)
            if (e->patch_id[k] < 0 || e->patch_id[k] >= in->d_sae)
                return lp_error(LP_EINVAL, "feature %d is out of range: the dictionary has features 0..%d",
                                e->patch_id[k], in->d_sae - 1);
    }
    lp_sae_editor *E = calloc(1, sizeof *E);
    if (!E || !(E->edits = calloc((size_t)(n ? n : 1), sizeof *E->edits))) {
        free(E);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        E->edits[i].e = edits[i];
        if ((edits[i].n_clamp || edits[i].src_acts) && edits[i].mode == LP_SAE_PASS) E->edits[i].e.mode = LP_SAE_SPLICE;
    }
    E->n = n;
    *out = E;
    return LP_OK;
}

void lp_sae_editor_free(lp_sae_editor *E) {
    if (!E) return;
    for (int i = 0; i < E->n; i++) free(E->edits[i].stash);
    free(E->edits);
    free(E);
}

int lp_sae_editor_status(const lp_sae_editor *E) { return E->rc; }

/* Is row t one a patch from another run replaces? */
static bool patched_row(const lp_sae_edit *e, int t) { return e->src_acts && (e->patch_pos < 0 || e->patch_pos == t); }

int lp_sae_patch_source(const lp_sae *s, const float *x, const float *y, int n, float *acts, float *err) {
    int rc = lp_sae_encode(s, x, n, acts);
    if (!rc) rc = lp_sae_decode(s, acts, x, n, err);
    size_t no = (size_t)n * lp_sae_get_info(s)->d_out;
    for (size_t i = 0; !rc && i < no; i++) err[i] = (float)((double)y[i] - err[i]);
    return rc;
}

/* rows (n, d_out): the splice of es, reading x (n, d_in). */
static int splice(const edit_state *es, const float *x, float *rows, int n) {
    const lp_sae_edit *e = &es->e;
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    size_t na = (size_t)n * in->d_sae, no = (size_t)n * in->d_out;
    if (e->src_acts && n != e->src_rows)
        return lp_error(LP_EINVAL, "patching features: the other run has %d positions, this forward %d", e->src_rows, n);
    float *acts = malloc(na * sizeof *acts), *recon = malloc(2 * no * sizeof *recon), *clamped = recon + no;
    int rc = acts && recon ? LP_OK : lp_error(LP_ENOMEM, "out of memory splicing a dictionary of %d features", in->d_sae);
    if (!rc) rc = lp_sae_encode(e->sae, x, n, acts);
    if (!rc) rc = lp_sae_decode(e->sae, acts, x, n, recon);
    if (!rc && (e->n_clamp || e->src_acts)) {
        for (int t = 0; t < n; t++) {
            float *a = acts + (size_t)t * in->d_sae;
            for (int k = 0; patched_row(e, t) && k < e->n_patch; k++)
                a[e->patch_id[k]] = e->src_acts[(size_t)t * in->d_sae + e->patch_id[k]];
            for (int k = 0; k < e->n_clamp; k++) a[e->clamp_id[k]] = e->clamp_value[k];
        }
        rc = lp_sae_decode(e->sae, acts, x, n, clamped);
    } else if (!rc) {
        memcpy(clamped, recon, no * sizeof *recon);
    }
    for (size_t i = 0; !rc && i < no; i++) { /* in double: without clamps, y comes back as it was */
        bool other = e->patch_error && patched_row(e, (int)(i / (size_t)in->d_out));
        double err = other ? (double)e->src_err[i] : (double)rows[i] - recon[i];
        rows[i] = e->mode == LP_SAE_SPLICE ? (float)((double)clamped[i] + err) : clamped[i];
    }
    free(acts);
    free(recon);
    return rc;
}

static void apply(lp_sae_editor *E, edit_state *es, float *rows, int n) {
    const lp_sae_edit *e = &es->e;
    const lp_sae_info *in = lp_sae_get_info(e->sae);
    size_t nx = (size_t)n * in->d_in;
    const float *x = rows;
    bool encodes = e->mode == LP_SAE_SPLICE || e->mode == LP_SAE_SPLICE_NO_ERROR;
    if (in->transcoder && !encodes) {
        x = NULL; /* steering and zeroing need no input */
    } else if (in->transcoder && es->stash_rows != n) {
        E->rc = lp_error(LP_EINVAL, "the transcoder's input site was not seen before its output site");
        return;
    } else if (in->transcoder) {
        x = es->stash;
    }
    if (x && e->seen && n == e->seen_rows) memcpy(e->seen, x, nx * sizeof *x);
    if (e->mode == LP_SAE_ZERO) {
        memset(rows, 0, (size_t)n * in->d_out * sizeof *rows);
    } else if (e->mode != LP_SAE_PASS) {
        float *xc = in->transcoder ? NULL : malloc(nx * sizeof *xc); /* rows are overwritten as x is read */
        if (!in->transcoder && !xc) {
            E->rc = lp_error(LP_ENOMEM, "out of memory");
            return;
        }
        if (xc) memcpy(xc, rows, nx * sizeof *xc);
        int rc = splice(es, xc ? xc : x, rows, n);
        free(xc);
        if (rc) {
            E->rc = rc;
            return;
        }
    }
    for (int k = 0; k < e->n_steer; k++) {
        const float *w = lp_sae_decoder_row(e->sae, e->steer_id[k]);
        float a = e->steer_alpha[k];
        for (int t = 0; t < n; t++)
            for (int j = 0; j < in->d_out; j++) rows[(size_t)t * in->d_out + j] += a * w[j];
    }
}

static void edit_fn(void *ctx, int layer, lp_act_kind site, float *rows, int n) {
    lp_sae_editor *E = ctx;
    for (int i = 0; i < E->n && !E->rc; i++) {
        edit_state *es = &E->edits[i];
        const lp_sae_info *in = lp_sae_get_info(es->e.sae);
        if (in->transcoder && site == es->e.kind && layer == es->e.layer) {
            size_t nx = (size_t)n * in->d_in;
            float *s = realloc(es->stash, nx * sizeof *s);
            if (!s) {
                E->rc = lp_error(LP_ENOMEM, "out of memory");
                return;
            }
            memcpy(s, rows, nx * sizeof *s);
            es->stash = s, es->stash_rows = n;
        }
        if (site == es->e.out_kind && layer == es->e.out_layer) apply(E, es, rows, n);
    }
}

lp_edit lp_sae_editor_edit(lp_sae_editor *E) { return (lp_edit){edit_fn, E}; }

int lp_sae_edited_logits(const lp_run *base, const lp_sae_edit *edits, int n, int pos, float *logits) {
    int T = lp_run_len(base);
    if (pos < 0 || pos >= lp_run_out_rows(base))
        return lp_error(LP_EINVAL, "position %d has no prediction (0..%d)", pos, lp_run_out_rows(base) - 1);
    lp_sae_editor *E;
    lp_run *r = NULL;
    int rc = lp_sae_editor_new(&E, edits, n);
    if (rc) return rc;
    lp_edit ed = lp_sae_editor_edit(E);
    rc = lp_run_new_edited(&r, lp_run_model(base), lp_run_ids(base), lp_run_types(base), T, &ed);
    if (!rc) rc = lp_sae_editor_status(E);
    if (!rc) memcpy(logits, lp_run_logits(r, pos), (size_t)lp_run_out_width(r) * sizeof *logits);
    lp_run_free(r);
    lp_sae_editor_free(E);
    return rc;
}
