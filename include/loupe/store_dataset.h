/* Datasets in the store (schema v6, v7): a dataset run's row, its items, the checkpoint that
 * --resume continues from, the aggregate tables written when it finishes, and merging the
 * datasets of shard databases into one. */
#ifndef LOUPE_STORE_DATASET_H
#define LOUPE_STORE_DATASET_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loupe/store.h"
#include "loupe/tokenizer.h"
#include "loupe/unit_stats.h"

/* What identifies a dataset run: resume and merge refuse what differs. */
typedef struct {
    int64_t id;                 /* 0 when new */
    char uid[33];               /* random: this run's fingerprint */
    const char *name, *path, *file_fingerprint, *format;
    int64_t model_id, session_id;
    const char *model_fingerprint;
    const char *commands_json;  /* the --each lines, a JSON array */
    const char *settings_json;  /* canonical JSON (sorted keys) of the options that shape the results */
    int shard_i, shard_n, k;
} lp_store_dataset;

int lp_store_dataset_new(lp_store *st, lp_store_dataset *d);   /* sets d->id and d->uid */

/* The latest unfinished dataset of shard i/n over a file at path (--resume's), into *found.
 * Its strings are copied into buf (cap bytes) and pointed at from *out. */
int lp_store_dataset_unfinished(lp_store *st, const char *path, int shard_i, int shard_n, lp_store_dataset *out,
                                char *buf, size_t cap, bool *found);

typedef struct {
    int64_t item;
    int line;
    const char *text, *pair, *label;
    int64_t run_id;     /* 0: not run */
    int n_tokens;       /* -1: unknown */
    const char *skipped; /* why it was not run, or NULL */
    const char *error;   /* why its --each failed (its run undone), or NULL */
} lp_store_dataset_item;
int lp_store_dataset_put_item(lp_store *st, int64_t dataset_id, const lp_store_dataset_item *it);

/* The counts a dataset keeps as it goes. */
typedef struct {
    int64_t last_item; /* -1: none yet */
    int64_t n_items, n_skipped, n_tokens, n_failed;
} lp_store_dataset_progress;

/* The aggregates' state as of the last item done, and the counts (inside the caller's batch). */
int lp_store_dataset_checkpoint(lp_store *st, int64_t dataset_id, const unsigned char *state, size_t len,
                                const lp_store_dataset_progress *p);
/* The counts alone (what the checkpoint also writes). */
int lp_store_dataset_progress_put(lp_store *st, int64_t dataset_id, const lp_store_dataset_progress *p);
/* The checkpoint back (*state malloc'd; NULL when there is none: nothing was committed). */
int lp_store_dataset_get_checkpoint(lp_store *st, int64_t dataset_id, unsigned char **state, size_t *len,
                                    lp_store_dataset_progress *p);

/* Writes the aggregates as tables (unit_examples, unit_histograms, unit_quantile_samples),
 * the head metrics' statistics over the items' runs, and finished_at, dropping the
 * checkpoint: one transaction (inside an open batch, that batch's: the caller commits it, or
 * rolls it back on failure). t names the tokens (NULL: no token text). */
int lp_store_dataset_finish(lp_store *st, int64_t dataset_id, const lp_unit_stats *u, const lp_unit_stats_config *c,
                            const lp_tokenizer *t);

/* Merges every finished shard dataset of the database at path into this one (see README,
 * "Shards and merging"); *report (a new JSON array) says per shard what was done. */
int lp_store_dataset_merge(lp_store *st, const char *path, json_t **report);

/* The finished datasets of the model with fingerprint fp that tracked the features of the
 * dictionary at path and site with d_sae features (settings' "features": the same path, site
 * and width), newest first: *rows [{"id", "dict"}], dict its number among that dataset's
 * dictionaries (the "layer" of its feature units). What `examples feature` and the browser's
 * examples view both go by. */
int lp_store_dataset_tracking(lp_store *st, const char *fp, const char *path, const char *site, int d_sae,
                              json_t **rows);

#endif
