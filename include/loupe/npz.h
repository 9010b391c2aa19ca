/* NumPy's .npz (np.savez, np.savez_compressed): a zip archive whose members NAME.npy each
 * hold one array (npy.h). Gemma Scope ships its SAEs as params.npz. The archive is read with
 * libzip; each member is checked before it is inflated (its claimed size bounded by the
 * archive's and by LP_NPZ_MAX_MEMBER) and after (the bytes read are the bytes claimed), and
 * then parsed as a .npy. */
#ifndef LOUPE_NPZ_H
#define LOUPE_NPZ_H

#include <stddef.h>

#include "loupe/npy.h"

/* No member above this (64 GiB): far beyond any dictionary's matrix, short of an absurd claim. */
#define LP_NPZ_MAX_MEMBER (UINT64_C(64) << 30)

typedef struct lp_npz lp_npz;

/* Opens path and reads every member whose name ends in .npy. */
int lp_npz_open(lp_npz **out, const char *path);
/* The same from memory (what names it in messages); buf is read during the call only. */
int lp_npz_parse(lp_npz **out, const void *buf, size_t len, const char *what);
void lp_npz_free(lp_npz *z);

int lp_npz_count(const lp_npz *z);
/* Member i's array name (without .npy) and array. */
const char *lp_npz_name(const lp_npz *z, int i);
const lp_npy_array *lp_npz_at(const lp_npz *z, int i);
/* The array named name (without .npy), or NULL. */
const lp_npy_array *lp_npz_find(const lp_npz *z, const char *name);

#endif
