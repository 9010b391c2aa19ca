/* The IOI probe (ioi_probe.h). */
#include "loupe/ioi_probe.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/run.h"

enum { MAX_IDS = 160 }; /* a prompt's tokens: the longest story is under 320 bytes */

typedef struct {
    int ids[MAX_IDS], n, io, s;
    bool abba;
} probe_prompt;

struct lp_ioi_probe {
    int n;
    probe_prompt *p;
};

static int first_token(const lp_tokenizer *t, const char *text, int *id) {
    int ids[16], got = 0;
    int rc = lp_tokenizer_encode(t, text, strlen(text), false, ids, 16, &got);
    if (rc || got < 1) return rc ? rc : lp_error(LP_EINVAL, "IOI probe: \"%s\" makes no token", text);
    *id = ids[0];
    return LP_OK;
}

int lp_ioi_probe_new(lp_ioi_probe **out, const lp_tokenizer *t, lp_ioi_frames frames, int n, uint64_t seed) {
    *out = NULL;
    lp_ioi_probe *p = calloc(1, sizeof *p);
    lp_ioi_prompt *q = malloc((size_t)n * sizeof *q);
    if (p) p->p = malloc((size_t)n * sizeof *p->p);
    if (!p || !q || !p->p) {
        free(q);
        lp_ioi_probe_free(p);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    p->n = n;
    lp_corpus_ioi_prompts(seed, frames, n, q);
    int rc = LP_OK;
    for (int i = 0; i < n && !rc; i++) {
        probe_prompt *r = &p->p[i];
        r->abba = q[i].abba;
        rc = lp_tokenizer_encode(t, q[i].prompt, strlen(q[i].prompt), false, r->ids, MAX_IDS, &r->n);
        if (!rc) rc = first_token(t, q[i].io, &r->io);
        if (!rc) rc = first_token(t, q[i].subject, &r->s);
    }
    free(q);
    if (rc) {
        lp_ioi_probe_free(p);
        return rc;
    }
    *out = p;
    return LP_OK;
}

void lp_ioi_probe_free(lp_ioi_probe *p) {
    if (!p) return;
    free(p->p);
    free(p);
}

int lp_ioi_probe_n(const lp_ioi_probe *p) { return p->n; }

int lp_ioi_probe_max_len(const lp_ioi_probe *p) {
    int most = 0;
    for (int i = 0; i < p->n; i++)
        if (p->p[i].n > most) most = p->p[i].n;
    return most;
}

int lp_ioi_probe_score(const lp_ioi_probe *p, const lp_model *m, int *wins, int *abba) {
    *wins = *abba = 0;
    for (int i = 0; i < p->n; i++) {
        const probe_prompt *r = &p->p[i];
        lp_run *run;
        int rc = lp_run_new(&run, m, r->ids, r->n);
        if (rc) return rc;
        const float *lg = lp_run_logits(run, r->n - 1);
        if (lg[r->io] > lg[r->s]) (*wins)++, *abba += r->abba;
        lp_run_free(run);
    }
    return LP_OK;
}
