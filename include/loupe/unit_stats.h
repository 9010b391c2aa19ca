/* What a dataset run keeps about every unit (MLP neuron, attention head, dictionary feature)
 * across its items,
 * in memory bounded by units x k, not by the number of items:
 *
 *   top-k examples  the k items where the unit's value is highest, one example per item.
 *   histogram       neurons: how many tokens fell in each of LP_UNIT_BINS fixed bins;
 *                   heads: how many attention weights off the sink fell in each of
 *                   LP_HEAD_BINS bins of [0, 1].
 *   samples         (Neuronpedia-style quantile samples) per unit and bin of the item's
 *                   value, the s items of smallest hash(item, unit): a bottom-s sketch.
 *
 * Values. A neuron's value on an item is the largest MLP post-activation (mlp_post, what
 * `neurons` shows) over the item's positions, a leading BOS left out (the same token in every
 * item, so the same activation); the example keeps the position of that maximum (the first
 * of ties) and its token. A head's value is its strongest key: the largest attention weight
 * over query positions q >= 1 and key positions 1 <= k <= q (every k >= 1 for a bidirectional
 * encoder), position 0 left out as the attention sink most heads rest on; the example keeps
 * q (pos), k (key_pos), both tokens, and the weight (first q, then first k, of ties).
 * A head is also ranked by each head metric (heads.h: entropy, prev_token, first_token,
 * duplicate_token, induction, max_attn): its value is the metric on the item, as `heads`
 * gives it, and the example keeps where the metric's term is largest (lp_head_metrics_at:
 * the query, and the key it reads; -1 for entropy). These are units of kind
 * LP_UNIT_HEAD_BY + metric. An item with no such position (one token, or a metric that is
 * NAN on it) gives the unit no value.
 * A feature of a dictionary (an SAE or transcoder loaded beside the model) is a unit of kind
 * LP_UNIT_FEATURE whose "layer" is the dictionary's number among the tracked ones: its value
 * is its largest activation over the positions, a leading BOS left out, as a neuron's, and
 * only an item where it fires (value > 0) is an example or a sample of it; its histogram
 * counts every position's activation in the neurons' bins (bin 0: not firing).
 *
 * Every choice is a function of the items' values and indices only, through a total order
 * (value descending, then item, pos and key_pos ascending) and a hash of (item, unit): items
 * added in any order, or split across shards whose results are merged, give the same state.
 * That is what makes `merge` exact. */
#ifndef LOUPE_UNIT_STATS_H
#define LOUPE_UNIT_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loupe/heads.h"
#include "loupe/run.h"

/* LP_UNIT_HEAD ranks a head by its strongest key; LP_UNIT_HEAD_BY + m by head metric m
 * (m < LP_HEAD_METRIC_COUNT); LP_UNIT_FEATURE is a dictionary's feature. */
typedef enum {
    LP_UNIT_NEURON,
    LP_UNIT_HEAD,
    LP_UNIT_HEAD_BY,
    LP_UNIT_FEATURE = LP_UNIT_HEAD_BY + LP_HEAD_METRIC_COUNT
} lp_unit_kind;
#define LP_UNIT_KINDS LP_UNIT_FEATURE /* the model's own units' kinds: a neuron, a head by key or metric */
/* What ranks a kind's examples: "activation", "key", or the head metric's name; and back
 * (LP_EINVAL naming the choices for a name that is none of a head's). */
const char *lp_unit_metric_name(lp_unit_kind kind);
int lp_unit_head_kind_from_name(const char *name, lp_unit_kind *out);

/* The bins, shared by every unit and every shard: bin 0 holds values <= 0 (and NaN), bin 1
 * (0, 1e-3), bins 2..25 a quarter of a decade each from 1e-3 to 1e3 ([lower, upper)), bin 26
 * values >= 1e3. lp_unit_bin_lower(b) is the bin's lower edge (-inf for bin 0). */
#define LP_UNIT_BINS 27
int lp_unit_bin(double v);
int lp_unit_bin_f(float v); /* the same for a float, by a table of its bits (add_run's) */
double lp_unit_bin_lower(int bin);
/* Heads' histograms: bin b holds attention weights in [b/20, (b+1)/20), 1 in the last bin,
 * weights <= 0 (and NaN) in bin 0. */
#define LP_HEAD_BINS 20
int lp_unit_head_bin(float w);
double lp_unit_head_bin_lower(int bin);

#define LP_UNIT_K_MAX 1000      /* --k's bound */
#define LP_UNIT_SAMPLES_MAX 100 /* --samples' bound */
#define LP_UNIT_DICT_MAX 16     /* dictionaries whose features are tracked */

typedef struct {
    int64_t item;
    int pos, key_pos;     /* key_pos -1 for neurons */
    int token, key_token; /* ids; key_token -1 for neurons */
    float value;
} lp_unit_example;

/* The total order of examples: a before b when its value is higher, then its item, pos and
 * key_pos lower. */
bool lp_unit_example_before(const lp_unit_example *a, const lp_unit_example *b);
/* The sample hash of (item, unit), in [0, 2^63): unit as lp_unit_stats_unit numbers it. */
int64_t lp_unit_sample_hash(int64_t item, int unit);

typedef struct {
    int n_layer, d_mlp, n_head;
    bool neurons, heads; /* which units are tracked */
    int k;               /* 1..LP_UNIT_K_MAX */
    int samples;         /* per unit and bin, 1..LP_UNIT_SAMPLES_MAX */
    int n_dict;          /* dictionaries whose features are tracked, 0..LP_UNIT_DICT_MAX */
    int d_sae[LP_UNIT_DICT_MAX]; /* their features */
} lp_unit_stats_config;

typedef struct lp_unit_stats lp_unit_stats;

/* LP_EINVAL for a config out of range, LP_ERANGE when its units x k would not fit memory. */
int lp_unit_stats_new(lp_unit_stats **out, const lp_unit_stats_config *c);
void lp_unit_stats_free(lp_unit_stats *u); /* NULL-safe */

/* The number the unit's samples hash with: neurons first, layer by layer, then heads, then
 * heads by each metric; a feature 2^30 + its number among the features, dictionary by
 * dictionary (whatever else is tracked, the same samples). */
int lp_unit_stats_unit(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index);

/* Adds item (its index in the dataset) as run r computed it; bos: r's first token is a BOS
 * to leave out of the neurons' values. r's model must have the config's shape. */
int lp_unit_stats_add_run(lp_unit_stats *u, const lp_run *r, int64_t item, bool bos);
/* Adds dictionary dict's features on item: acts (T, d_sae[dict]) their activations at the
 * item's T positions, ids its tokens; bos: position 0 is a BOS to leave out. */
int lp_unit_stats_add_features(lp_unit_stats *u, int dict, const float *acts, int T, const int *ids, int64_t item,
                               bool bos);
/* Adds one example of a unit (what add_run does per unit; for tests and loading). */
void lp_unit_stats_offer(lp_unit_stats *u, lp_unit_kind kind, int layer, int index, const lp_unit_example *x);

/* A unit's top examples in the total order: *n of them (<= k) into out (k entries). */
void lp_unit_stats_top(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index, lp_unit_example *out, int *n);
/* A neuron's or feature's token counts per bin (LP_UNIT_BINS) or a head's weight counts
 * (LP_HEAD_BINS; kind LP_UNIT_HEAD), *bins of them; NULL when that kind is not tracked (or
 * has none). */
const uint64_t *lp_unit_stats_histogram(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index, int *bins);
/* A unit's samples of one bin, by hash ascending: *n (<= samples) into out, and their
 * hashes (lp_unit_sample_hash) into hash when it is not NULL. */
void lp_unit_stats_samples(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index, int bin,
                           lp_unit_example *out, int64_t *hash, int *n);

/* The whole state as bytes (*blob malloc'd), and back into a state made with the same config
 * (LP_EFORMAT, naming what disagrees, for bytes that are not such a state). */
int lp_unit_stats_save(const lp_unit_stats *u, unsigned char **blob, size_t *len);
int lp_unit_stats_load(lp_unit_stats *u, const unsigned char *blob, size_t len);

#endif
