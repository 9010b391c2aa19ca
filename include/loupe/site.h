/* Sites by name: loupe's activation names (resid_post, z, ...) and, as aliases, the
 * TransformerLens hook names of what loupe captures (blocks.L.hook_resid_post,
 * blocks.L.attn.hook_z, ln_final.hook_normalized, ...). The alias table is in src/commands/site.c
 * and README.md lists it. */
#ifndef LOUPE_SITE_H
#define LOUPE_SITE_H

#include "loupe/model.h"
#include "loupe/run.h"

/* The activation `name` names, for model config c: *layer is L for "blocks.L. ..." and -1
 * for a name without a layer (loupe's names, "hook_resid_pre", "attn.hook_z", ...); the
 * caller checks the layer's range. LP_EUNSUPPORTED, saying what to use instead, for a
 * TransformerLens hook loupe does not keep (hook_embed, attn.hook_attn_scores, ...);
 * LP_EINVAL for a name that is neither. */
int lp_site_parse(const char *name, const lp_config *c, lp_act_kind *kind, int *layer);

/* The width of a site's rows for config c (d_model; n_head * d_head for z; d_mlp for mlp_pre
 * and mlp_post): what a dictionary at the site reads; 0 for sites no dictionary reads. */
int lp_site_width(const lp_config *c, lp_act_kind k);
/* The site's rows of run r at layer, gathered into a new (T, width) array *out (z's heads side
 * by side); width is lp_site_width's. */
int lp_site_rows(const lp_run *r, lp_act_kind kind, int layer, int width, float **out);

#endif
