/* A unit's aggregates as the store keeps them (schema 9: one unit_stats row per unit and
 * metric), as JSON text that plain sqlite3 reads with json_each (the views unit_examples,
 * unit_quantile_samples and unit_histograms expand them into a row each):
 *
 *   examples   [[item, pos, key_pos, value], ...]  in rank order
 *   samples    [[bin, hash, item, pos, key_pos, value], ...]  by bin, then hash and item
 *   histogram  [count of bin 0, count of bin 1, ...]  every bin, zeros included
 *
 * key_pos is null where the example has none (-1). The tokens are not kept: they are the
 * item's run's at pos and key_pos (the views join them; parsing gives token and key_token
 * -1). value is the float with 9 significant digits: read back and rounded to float it is
 * the same float, so writing, reading and writing again gives the same text (what keeps
 * merge exact). */
#ifndef LOUPE_UNIT_ROWS_H
#define LOUPE_UNIT_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "loupe/unit_stats.h"

typedef struct {
    char *p; /* NUL-terminated while len < cap */
    size_t len, cap;
} lp_unit_text;
void lp_unit_text_free(lp_unit_text *t);

typedef struct {
    int bin;
    int64_t hash;
    lp_unit_example x;
} lp_unit_sample;

/* Each replaces t's text (LP_ENOMEM when it cannot grow). */
int lp_unit_rows_examples(lp_unit_text *t, const lp_unit_example *x, int n);
int lp_unit_rows_samples(lp_unit_text *t, const lp_unit_sample *s, int n);
int lp_unit_rows_histogram(lp_unit_text *t, const uint64_t *h, int n);

/* The text back: at most cap entries into out, *n of them; LP_EFORMAT (naming what is wrong)
 * for text that is not such an array, a number out of its range, or more than cap entries.
 * A histogram's counts are below 2^63. */
int lp_unit_rows_parse_examples(const char *s, size_t len, lp_unit_example *out, int cap, int *n);
int lp_unit_rows_parse_samples(const char *s, size_t len, lp_unit_sample *out, int cap, int *n);
int lp_unit_rows_parse_histogram(const char *s, size_t len, uint64_t *out, int cap, int *n);

#endif
