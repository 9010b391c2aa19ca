/* Per-head summary metrics of a run's attention patterns: what each head looks at.
 * For a head's pattern A (T x T), averaged over query positions i:
 *   entropy          -sum_j A[i,j] ln A[i,j] (nats): low = focused, high = spread out
 *   prev_token       A[i, i-1] over i >= 1
 *   first_token      A[i, 0] over i >= 1 (the "attention sink")
 *   duplicate_token  the attention i pays to earlier copies of its own token, over the
 *                    positions that have one
 *   induction        the attention i pays to tokens that followed an earlier copy of its
 *                    own token (j <= i-1 with ids[j-1] == ids[i]), over the positions that have one
 *   max_attn         max_j A[i,j]
 * A metric with no position to average over (e.g. no repeated token) is NAN.
 *
 * Encoders' heads also get the metrics of Clark et al. 2019, "What does BERT look at?"
 * (lp_head_metrics_encoder), over every query position i of the bidirectional pattern:
 *   next_token       A[i, i+1] over i <= T-2
 *   cls_sink         the attention i pays to the [CLS] (<s>) tokens of the run
 *   sep_sink         the attention i pays to the [SEP] (</s>) tokens of the run
 *   broad            the mean row entropy over ln T, the entropy of uniform attention: 1 when
 *                    every row is spread evenly over all T keys, 0 when each is on one key */
#ifndef LOUPE_HEADS_H
#define LOUPE_HEADS_H

#include "loupe/run.h"

typedef enum {
    LP_HEAD_ENTROPY,
    LP_HEAD_PREV_TOKEN,
    LP_HEAD_FIRST_TOKEN,
    LP_HEAD_DUPLICATE_TOKEN,
    LP_HEAD_INDUCTION,
    LP_HEAD_MAX_ATTN,
    LP_HEAD_METRIC_COUNT,
    /* encoders' (lp_head_metrics_encoder, indexed from LP_HEAD_METRIC_COUNT) */
    LP_HEAD_NEXT_TOKEN = LP_HEAD_METRIC_COUNT,
    LP_HEAD_CLS_SINK,
    LP_HEAD_SEP_SINK,
    LP_HEAD_BROAD,
    LP_HEAD_ALL_METRIC_COUNT
} lp_head_metric;

#define LP_HEAD_ENCODER_METRIC_COUNT (LP_HEAD_ALL_METRIC_COUNT - LP_HEAD_METRIC_COUNT)

const char *lp_head_metric_name(lp_head_metric k);           /* "entropy", "prev_token", ..., "broad" */
int lp_head_metric_from_name(const char *name, lp_head_metric *out); /* any of the ten */

/* out (n_layer, n_head, LP_HEAD_METRIC_COUNT). LP_ENOMEM when out of memory. */
int lp_head_metrics(float *out, const lp_run *r);
/* The same metrics, and where each is strongest in the run: at_q and at_k (n_layer, n_head,
 * LP_HEAD_METRIC_COUNT) the query position whose term of the mean is largest (the first of
 * ties) and the key that term reads: i-1 (prev_token), 0 (first_token), the earlier copy
 * with the most attention (duplicate_token), the token after a copy with the most attention
 * (induction), the row's largest key (max_attn; a causal head's query 0, whose one key is
 * itself, left out), -1 for entropy. -1, -1 where the metric has
 * no position (it is then NAN). */
int lp_head_metrics_at(float *out, int *at_q, int *at_k, const lp_run *r);
/* out (n_layer, n_head, LP_HEAD_ENCODER_METRIC_COUNT): next_token, cls_sink, sep_sink, broad
 * of any run (the sinks are NAN when the run has no such token or the model's tokenizer
 * names none; next_token and broad are NAN for one token). */
void lp_head_metrics_encoder(float *out, const lp_run *r);

/* An encoder-decoder's cross-attention (decoder query i over source key j, A (T x S)), per
 * decoder layer and head, averaged over the decoder's positions:
 *   entropy     -sum_j A[i,j] ln A[i,j] (nats)
 *   max_attn    max_j A[i,j]
 *   source_eos  A[i, S-1]: the source's last token (T5's </s>), where idle heads rest
 *   diagonal    1 - mean_i |c_i / (S-1) - i / (T-1)|, c_i = sum_j j A[i,j] the attended
 *               position: 1 when the attention moves through the source as the target does
 *               (a monotonic alignment); NAN when T or S is 1
 *   monotonic   the share of consecutive positions whose most-attended source position does
 *               not move back (NAN for T = 1)
 *   coverage    the share of source positions that some decoder position attends to most */
typedef enum {
    LP_CROSS_ENTROPY,
    LP_CROSS_MAX_ATTN,
    LP_CROSS_SOURCE_EOS,
    LP_CROSS_DIAGONAL,
    LP_CROSS_MONOTONIC,
    LP_CROSS_COVERAGE,
    LP_CROSS_METRIC_COUNT
} lp_cross_metric;

const char *lp_cross_metric_name(lp_cross_metric k);
int lp_cross_metric_from_name(const char *name, lp_cross_metric *out);
/* out (n_layer, n_head, LP_CROSS_METRIC_COUNT) for r, a run with a source (lp_run_source). */
int lp_cross_metrics(float *out, const lp_run *r);
/* Where each decoder position attends most in the source (an alignment, as the store's
 * `alignments` view gives it): for decoder layer l, head h and position i, pos[(l, h, i)] the
 * most attended source position (the first of ties) and weight its weight; h = n_head is the
 * mean of the layer's heads. pos, weight (n_layer, n_head + 1, T). */
int lp_cross_alignment(int *pos, float *weight, const lp_run *r);

#endif
