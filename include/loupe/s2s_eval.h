/* How well an encoder-decoder does the digits-to-words task (s2s_task.h), on examples it is
 * given (the held-out split, for a fair score): teacher-forced accuracy, greedy exact match,
 * and, per decoder layer and cross-attention head, how often the head looks where the rule
 * says the word comes from (lp_s2s_alignment_hits). `train --arch t5` reports it as it
 * trains; the bundled model's test holds it to thresholds. Works on a loaded model (any T5
 * with the task's tokenizer ids) or one being trained. */
#ifndef LOUPE_S2S_EVAL_H
#define LOUPE_S2S_EVAL_H

#include "loupe/model.h"
#include "loupe/s2s_task.h"

typedef struct {
    int n;               /* examples scored */
    int tokens;          /* target tokens, </s> included */
    int words;           /* target words (the alignment's rows: </s> has no source word) */
    double tf_accuracy;  /* teacher-forced: the share of target tokens that are their position's argmax */
    double exact;        /* the share of examples whose greedy decoding is the target and </s>, nothing else */
    int layers, heads;   /* the decoder's */
    double *hits;        /* (layers, heads + 1): the share of target words whose cross-attention row has its
                            largest weight on the aligned source word; column `heads` is the heads' mean pattern */
    int best_layer, best_head; /* the best of them (best_head == heads: that layer's mean); ties: the first */
    double best_hits;
} lp_s2s_score;

/* Scores m on ex[0..n). LP_EINVAL for a model without an encoder or a vocabulary smaller than
 * the task's; run errors as they come. Free with lp_s2s_score_free. */
int lp_s2s_score_new(lp_s2s_score **out, const lp_model *m, const lp_s2s_example *ex, int n);
void lp_s2s_score_free(lp_s2s_score *s);

#endif
