/* Scoring a T5 on the digits-to-words task (loupe/s2s_eval.h): one teacher-forced run per
 * example gives the accuracy and every cross-attention pattern; greedy decoding reuses that
 * run's encoder. */
#include "loupe/s2s_eval.h"

#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/run.h"
#include "loupe/unigram_words.h"

void lp_s2s_score_free(lp_s2s_score *s) {
    if (!s) return;
    free(s->hits);
    free(s);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Adds one example's alignment hits to counts (layers, heads + 1); pat has room for (T, S). */
static int add_hits(const lp_run *r, const lp_s2s_example *e, int T, int S, int L, int H, long *counts, float *pat,
                    float *mean) {
    for (int l = 0; l < L; l++) {
        memset(mean, 0, (size_t)T * S * sizeof *mean);
        for (int h = 0; h < H; h++) {
            lp_view v;
            int rc = lp_run_view(r, LP_ACT_CROSS_PATTERN, l, h, &v);
            if (rc) return rc;
            for (int i = 0; i < T; i++)
                for (int j = 0; j < S; j++) {
                    float x = v.data[i * v.stride[0] + j * v.stride[1]];
                    pat[(size_t)i * S + j] = x;
                    mean[(size_t)i * S + j] += x / (float)H;
                }
            counts[l * (H + 1) + h] += lp_s2s_alignment_hits(e, pat, T, S);
        }
        counts[l * (H + 1) + H] += lp_s2s_alignment_hits(e, mean, T, S);
    }
    return LP_OK;
}

int lp_s2s_score_new(lp_s2s_score **out, const lp_model *m, const lp_s2s_example *ex, int n) {
    *out = NULL;
    const lp_config *c = lp_model_config(m);
    int words;
    lp_s2s_words(&words);
    if (!lp_model_encoder(m)) return lp_error(LP_EINVAL, "%s is not an encoder-decoder: the task needs one", c->arch);
    if (c->vocab < LP_UW_N_SPECIAL + words)
        return lp_error(LP_EINVAL, "the model's vocabulary of %d is smaller than the task's %d words and 3 specials",
                        c->vocab, words);
    if (n < 1) return lp_error(LP_EINVAL, "no examples to score");
    int L = c->n_layer, H = c->n_head, K = LP_S2S_MAX_DIGITS + 2, rc = LP_OK;
    lp_s2s_score *s = calloc(1, sizeof *s);
    long *counts = calloc((size_t)L * (H + 1), sizeof *counts);
    float *pat = malloc((size_t)K * K * sizeof *pat), *mean = malloc((size_t)K * K * sizeof *mean);
    if (s) s->hits = calloc((size_t)L * (H + 1), sizeof *s->hits);
    if (!s || !s->hits || !counts || !pat || !mean) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    long correct = 0, exact = 0;
    for (int k = 0; k < n && !rc; k++) {
        const lp_s2s_example *e = &ex[k];
        int src[LP_S2S_MAX_DIGITS + 2], tgt[LP_S2S_MAX_DIGITS + 2], dec[LP_S2S_MAX_DIGITS + 2], got[LP_S2S_MAX_DIGITS + 3];
        int S, T, n_got;
        lp_s2s_ids(e, src, &S, tgt, &T);
        dec[0] = c->start_id;
        memcpy(dec + 1, tgt, (size_t)(T - 1) * sizeof *dec);
        lp_run *r;
        if ((rc = lp_run_new_seq2seq(&r, m, src, S, dec, T))) break;
        for (int i = 0; i < T; i++) correct += argmax(lp_run_logits(r, i), c->vocab) == tgt[i];
        rc = add_hits(r, e, T, S, L, H, counts, pat, mean);
        /* one token past </s>: a model that does not stop is not exact */
        if (!rc) rc = lp_generate_seq2seq(m, lp_run_source(r), &c->start_id, 1, T + 1, NULL, 1, got, &n_got);
        exact += !rc && n_got == T && memcmp(got, tgt, (size_t)T * sizeof *got) == 0;
        lp_run_free(r);
        s->tokens += T;
        s->words += e->n;
    }
    if (rc) goto done;
    s->n = n;
    s->tf_accuracy = (double)correct / s->tokens;
    s->exact = (double)exact / n;
    s->layers = L, s->heads = H;
    s->best_hits = -1.0;
    for (int l = 0; l < L; l++)
        for (int h = 0; h <= H; h++) {
            double v = s->hits[l * (H + 1) + h] = (double)counts[l * (H + 1) + h] / s->words;
            if (v > s->best_hits) s->best_hits = v, s->best_layer = l, s->best_head = h;
        }
done:
    free(counts);
    free(pat);
    free(mean);
    if (rc) lp_s2s_score_free(s);
    else *out = s;
    return rc;
}
