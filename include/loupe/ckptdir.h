/* A training checkpoint directory, replaced as one unit.
 *
 * A checkpoint is several files (config.json, model.safetensors, optimizer.safetensors,
 * train.json, the tokenizer) that only make sense together: a process killed while writing
 * them one by one leaves pieces from different steps. So a save writes every file into
 * DIR/.train-staging, renames that directory to DIR/.train-commit (the commit point: one
 * rename), then renames each file into DIR (train.json last) and removes the empty
 * DIR/.train-commit. A directory cannot be renamed over a non-empty one, hence the move
 * file by file; lp_ckptdir_recover finishes a commit that was interrupted and throws away a
 * staging that never reached it, so that DIR always ends up with the files of one save.
 *
 * Each file of a checkpoint also has a digest (lp_file_digest) recorded in its train.json,
 * so that pieces mixed by hand, or damaged, are refused on resume. */
#ifndef LOUPE_CKPTDIR_H
#define LOUPE_CKPTDIR_H

#include <stddef.h>

#define LP_CKPT_STAGING ".train-staging"
#define LP_CKPT_COMMIT ".train-commit"

/* Brings dir to its last committed state (see above). Nothing to do when dir or the two
 * directories are missing; LP_EIO when one of them is not a directory or cannot be read. */
int lp_ckptdir_recover(const char *dir);

/* A new, empty DIR/.train-staging (a stale one is emptied); its path goes to buf (cap bytes). */
int lp_ckptdir_stage(const char *dir, char *buf, size_t cap);

/* Commits the staged files into dir, replacing the files of the same names. */
int lp_ckptdir_commit(const char *dir);

/* Whether a new checkpoint may be started in dir: dir is missing, empty, or holds nothing but
 * loupe's own staging. Otherwise LP_EINVAL, naming what is there: a directory with a model
 * in it (config.json, *.safetensors, vocab.json, merges.txt, tokenizer.json, ...) is another
 * model, never written; any other file is someone's, and left alone as well. */
int lp_ckptdir_check_new(const char *dir);

/* The 64-bit FNV-1a digest of a file's bytes, as 16 hex digits and a NUL into out. */
int lp_file_digest(const char *path, char out[17]);

#endif
