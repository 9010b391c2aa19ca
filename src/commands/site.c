/* The one table of TransformerLens hook names loupe accepts, and the hooks it does not keep. */
#include "loupe/site.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"

enum { ANY_POS, LEARNED_POS, ROPE_POS }; /* where an alias applies */

/* Hooks inside blocks.L (TransformerLens's HookedTransformer names, fold_ln aside: its
 * hook_normalized is after the norm's weight and bias, as loupe's ln1). */
static const struct {
    const char *hook;
    lp_act_kind kind;
    int when;
} BLOCK_HOOKS[] = {
    {"hook_resid_pre", LP_ACT_RESID_PRE, ANY_POS},
    {"ln1.hook_normalized", LP_ACT_LN1, ANY_POS},
    {"attn.hook_q", LP_ACT_Q, LEARNED_POS},
    {"attn.hook_k", LP_ACT_K, LEARNED_POS},
    {"attn.hook_rot_q", LP_ACT_Q, ROPE_POS},
    {"attn.hook_rot_k", LP_ACT_K, ROPE_POS},
    {"attn.hook_v", LP_ACT_V, ANY_POS},
    {"attn.hook_pattern", LP_ACT_PATTERN, ANY_POS},
    {"attn.hook_z", LP_ACT_Z, ANY_POS},
    {"hook_attn_out", LP_ACT_ATTN_OUT, ANY_POS},
    {"hook_resid_mid", LP_ACT_RESID_MID, ANY_POS},
    {"ln2.hook_normalized", LP_ACT_LN2, ANY_POS},
    {"mlp.hook_pre", LP_ACT_MLP_PRE, ANY_POS},
    {"mlp.hook_pre_linear", LP_ACT_MLP_UP, ANY_POS},
    {"mlp.hook_post", LP_ACT_MLP_POST, ANY_POS},
    {"hook_mlp_out", LP_ACT_MLP_OUT, ANY_POS},
    {"hook_resid_post", LP_ACT_RESID_POST, ANY_POS},
    /* an encoder-decoder's decoder (HookedEncoderDecoder's T5Block) */
    {"cross_attn.hook_pattern", LP_ACT_CROSS_PATTERN, ANY_POS},
    {"cross_attn.hook_z", LP_ACT_CROSS_Z, ANY_POS},
    {"hook_cross_attn_out", LP_ACT_CROSS_OUT, ANY_POS},
    {"hook_resid_mid_cross", LP_ACT_RESID_MID_CROSS, ANY_POS},
};

/* TransformerLens hooks loupe does not keep, and what to use instead. */
static const struct {
    const char *hook, *instead;
} MISSING[] = {
    {"hook_embed", "loupe keeps the embeddings' sum: blocks.0.hook_resid_pre (resid_pre 0)"},
    {"hook_pos_embed", "loupe keeps the embeddings' sum: blocks.0.hook_resid_pre (resid_pre 0)"},
    {"attn.hook_attn_scores", "loupe keeps the pattern after the softmax: attn.hook_pattern"},
    {"attn.hook_result", "loupe keeps each head's output before W_O: attn.hook_z"},
    {"ln1.hook_scale", "loupe keeps 1/scale: ln1_scale"},
    {"ln2.hook_scale", "loupe keeps 1/scale: ln2_scale"},
    {"ln_final.hook_scale", "loupe keeps 1/scale: ln_final_scale"},
};

static int unsupported_hook(const char *name, const char *hook) {
    for (size_t i = 0; i < sizeof MISSING / sizeof *MISSING; i++)
        if (strcmp(hook, MISSING[i].hook) == 0)
            return lp_error(LP_EUNSUPPORTED, "%s is not captured: %s", name, MISSING[i].instead);
    return LP_OK;
}

int lp_site_parse(const char *name, const lp_config *c, lp_act_kind *kind, int *layer) {
    *layer = -1;
    if (lp_act_from_name(name, kind) == LP_OK) return LP_OK;
    lp_error_clear();
    const char *hook = name;
    if (strncmp(name, "blocks.", 7) == 0) {
        char *end;
        errno = 0;
        long l = strtol(name + 7, &end, 10);
        if (end == name + 7 || *end != '.' || errno || l < 0 || l > 1 << 20)
            return lp_error(LP_EINVAL, "'%s': a TransformerLens hook reads blocks.LAYER.NAME, e.g. blocks.0.hook_resid_post",
                            name);
        *layer = (int)l;
        hook = end + 1;
    } else if (strcmp(name, "ln_final.hook_normalized") == 0) {
        *kind = LP_ACT_LN_FINAL;
        return LP_OK;
    }
    int rc = unsupported_hook(name, hook);
    if (rc) return rc;
    bool rope = lp_pos_rotary(c);
    for (size_t i = 0; i < sizeof BLOCK_HOOKS / sizeof *BLOCK_HOOKS; i++) {
        if (strcmp(hook, BLOCK_HOOKS[i].hook) != 0) continue;
        if (BLOCK_HOOKS[i].when == LEARNED_POS && rope)
            return lp_error(LP_EUNSUPPORTED, "%s is not captured: this model rotates queries and keys, and loupe keeps "
                            "them after the rotation: attn.hook_rot_q, attn.hook_rot_k", name);
        if (BLOCK_HOOKS[i].when == ROPE_POS && !rope)
            return lp_error(LP_EINVAL, "%s: this model has no rotary embedding; use attn.hook_q, attn.hook_k", name);
        if (BLOCK_HOOKS[i].kind == LP_ACT_MLP_UP && !lp_mlp_gated(c))
            return lp_error(LP_EINVAL, "%s: this model's MLP is not gated; its input is mlp.hook_pre", name);
        *kind = BLOCK_HOOKS[i].kind;
        return LP_OK;
    }
    return lp_error(LP_EINVAL, "unknown site '%s': use resid_pre, attn_out, mlp_out, resid_post, z, pattern, ... or a "
                    "TransformerLens hook name (blocks.L.hook_resid_post, blocks.L.attn.hook_z, ...; see README)", name);
}

int lp_site_width(const lp_config *c, lp_act_kind k) {
    switch (k) {
    case LP_ACT_RESID_PRE: case LP_ACT_RESID_MID: case LP_ACT_RESID_POST: case LP_ACT_ATTN_OUT: case LP_ACT_MLP_OUT:
    case LP_ACT_LN1: case LP_ACT_LN2:
        return c->d_model;
    case LP_ACT_Z:
        return c->n_head * c->d_head;
    case LP_ACT_MLP_PRE: case LP_ACT_MLP_POST:
        return c->d_mlp;
    default:
        return 0;
    }
}

int lp_site_rows(const lp_run *r, lp_act_kind kind, int layer, int width, float **out) {
    *out = NULL;
    lp_view v;
    int rc = lp_run_view(r, kind, layer, -1, &v);
    if (rc) return rc;
    int T = lp_run_len(r);
    float *x = malloc((size_t)T * width * sizeof *x);
    if (!x) return lp_error(LP_ENOMEM, "out of memory");
    for (int t = 0; t < T; t++) {
        float *o = x + (size_t)t * width;
        const float *base = v.data + (size_t)t * v.stride[0];
        if (v.ndim == 2) {
            for (int j = 0; j < width; j++) o[j] = base[(size_t)j * v.stride[1]];
        } else { /* (T, H, dh) */
            for (int h = 0, at = 0; h < v.shape[1]; h++)
                for (int j = 0; j < v.shape[2]; j++) o[at++] = base[(size_t)h * v.stride[1] + (size_t)j * v.stride[2]];
        }
    }
    *out = x;
    return LP_OK;
}
