/* An IOI probe for a GPT-2 in training (train --ioi-probe): prompts of the corpus's frames
 * (lp_corpus_ioi_prompts), tokenized once, scored at each evaluation by whether the indirect
 * object's logit beats the subject's at the last position (each name's first token). */
#ifndef LOUPE_IOI_PROBE_H
#define LOUPE_IOI_PROBE_H

#include <stdint.h>

#include "loupe/corpus.h"
#include "loupe/model.h"
#include "loupe/tokenizer.h"

typedef struct lp_ioi_probe lp_ioi_probe;

/* n prompts of frames from seed, in t's tokens. Free with lp_ioi_probe_free. */
int lp_ioi_probe_new(lp_ioi_probe **out, const lp_tokenizer *t, lp_ioi_frames frames, int n, uint64_t seed);
void lp_ioi_probe_free(lp_ioi_probe *p);

/* How many prompts m gets right (*wins), of them how many name the IO first (*abba, of n / 2). */
int lp_ioi_probe_score(const lp_ioi_probe *p, const lp_model *m, int *wins, int *abba);
int lp_ioi_probe_n(const lp_ioi_probe *p);
int lp_ioi_probe_max_len(const lp_ioi_probe *p); /* the longest prompt's tokens */

#endif
