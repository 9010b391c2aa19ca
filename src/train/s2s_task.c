/* The digits-to-words seq2seq task (loupe/s2s_task.h). Randomness only through lp_rng, so
 * examples depend on nothing but the spec and the split. */
#include "loupe/s2s_task.h"

#include <stdio.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/unigram_words.h"

static const char *const RULES[LP_S2S_N_RULES] = {"copy", "reverse", "swap"};
static const char *const NUMBER_WORDS[10] = {"zero", "one", "two",   "three", "four",
                                             "five", "six", "seven", "eight", "nine"};
static const char *const WORDS[] = {"copy", "reverse", "swap", "0",    "1",   "2",   "3",     "4",     "5",
                                    "6",    "7",       "8",    "9",    "zero", "one", "two", "three", "four",
                                    "five", "six",     "seven", "eight", "nine"};

/* A held-out split's attempts per example before giving up: at one string in heldout_every
 * (>= 2) of every length but the shortest, a few hundred always suffice. */
#define MAX_TRIES 100000

void lp_s2s_spec_default(lp_s2s_spec *spec) {
    *spec = (lp_s2s_spec){.seed = 0,
                          .rules = 1u << LP_S2S_COPY | 1u << LP_S2S_REVERSE,
                          .min_digits = 3,
                          .max_digits = 8,
                          .heldout_every = 10,
                          .distinct = true};
}

const char *lp_s2s_rule_name(lp_s2s_rule rule) { return rule < LP_S2S_N_RULES ? RULES[rule] : "?"; }

const char *const *lp_s2s_words(int *n) {
    *n = (int)(sizeof WORDS / sizeof WORDS[0]);
    return WORDS;
}

int lp_s2s_tokenizer_save(const char *dir, int *vocab) {
    int n;
    const char *const *w = lp_s2s_words(&n);
    if (vocab) *vocab = LP_UW_N_SPECIAL + n;
    return lp_unigram_words_save(dir, w, n);
}

/* FNV-1a over the length and the digits: a split that no seed or rule moves. */
bool lp_s2s_is_heldout(const int *digits, int n, int heldout_every) {
    uint64_t h = 1469598103934665603ull;
    h = (h ^ (uint64_t)n) * 1099511628211ull;
    for (int i = 0; i < n; i++) h = (h ^ (uint64_t)digits[i]) * 1099511628211ull;
    h ^= h >> 29; /* FNV's low bits mix poorly for short inputs */
    return heldout_every > 1 && h % (uint64_t)heldout_every == 0;
}

/* Which source digit target word j comes from (0-based), under rule for n digits. */
static int source_of(lp_s2s_rule rule, int j, int n) {
    switch (rule) {
    case LP_S2S_REVERSE: return n - 1 - j;
    case LP_S2S_SWAP: return (j ^ 1) < n ? j ^ 1 : j; /* an odd last digit stays */
    default: return j;
    }
}

static void draw_digits(lp_rng *rng, int *digits, int n, bool distinct) {
    int pool[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    for (int i = 0; i < n; i++) {
        if (!distinct) {
            digits[i] = (int)(lp_rng_uniform(rng) * 10);
            continue;
        }
        int k = i + (int)(lp_rng_uniform(rng) * (10 - i)); /* Fisher-Yates, the first n places */
        int t = pool[i];
        pool[i] = pool[k], pool[k] = t;
        digits[i] = pool[i];
    }
}

static void fill(lp_s2s_example *e) {
    size_t at = (size_t)snprintf(e->source, sizeof e->source, "%s", RULES[e->rule]);
    for (int i = 0; i < e->n; i++) at += (size_t)snprintf(e->source + at, sizeof e->source - at, " %d", e->digits[i]);
    at = 0;
    e->target[0] = '\0';
    for (int j = 0; j < e->n; j++) {
        int from = source_of(e->rule, j, e->n);
        e->align[j] = 1 + from;
        at += (size_t)snprintf(e->target + at, sizeof e->target - at, "%s%s", j ? " " : "",
                               NUMBER_WORDS[e->digits[from]]);
    }
}

static int check_spec(const lp_s2s_spec *sp) {
    if (!sp->rules || sp->rules >> LP_S2S_N_RULES)
        return lp_error(LP_EINVAL, "s2s task: rules 0x%x: choose one or more of copy, reverse, swap", sp->rules);
    if (sp->min_digits < 1 || sp->max_digits > LP_S2S_MAX_DIGITS || sp->min_digits > sp->max_digits)
        return lp_error(LP_EINVAL, "s2s task: digits %d..%d: need 1 <= min <= max <= %d", sp->min_digits,
                        sp->max_digits, LP_S2S_MAX_DIGITS);
    if (sp->distinct && sp->max_digits > 10)
        return lp_error(LP_EINVAL, "s2s task: %d distinct digits: there are only 10", sp->max_digits);
    if (sp->heldout_every < 2)
        return lp_error(LP_EINVAL, "s2s task: heldout_every %d: need at least 2 (1 string in N held out)",
                        sp->heldout_every);
    return LP_OK;
}

int lp_s2s_examples(const lp_s2s_spec *sp, lp_s2s_split split, size_t n, lp_s2s_example *out) {
    int rc = check_spec(sp);
    if (rc) return rc;
    int rules[LP_S2S_N_RULES], n_rules = 0;
    for (int r = 0; r < LP_S2S_N_RULES; r++)
        if (sp->rules & 1u << r) rules[n_rules++] = r;
    lp_rng rng;
    /* separate streams: the held-out examples are not a filtered prefix of the training ones */
    lp_rng_seed(&rng, sp->seed * 2 + (split == LP_S2S_HELDOUT));
    int span = sp->max_digits - sp->min_digits + 1;
    for (size_t k = 0; k < n; k++) {
        lp_s2s_example *e = &out[k];
        memset(e, 0, sizeof *e);
        int tries = 0;
        do {
            if (++tries > MAX_TRIES)
                return lp_error(LP_EINVAL, "s2s task: the %s split holds no digit strings of %d..%d digits (1 in %d "
                                "held out): allow longer strings", split == LP_S2S_HELDOUT ? "held-out" : "training",
                                sp->min_digits, sp->max_digits, sp->heldout_every);
            e->n = sp->min_digits + (int)(lp_rng_uniform(&rng) * span);
            draw_digits(&rng, e->digits, e->n, sp->distinct);
        } while (lp_s2s_is_heldout(e->digits, e->n, sp->heldout_every) != (split == LP_S2S_HELDOUT));
        e->rule = (lp_s2s_rule)rules[(int)(lp_rng_uniform(&rng) * n_rules)];
        fill(e);
    }
    return LP_OK;
}

int lp_s2s_alignment_hits(const lp_s2s_example *e, const float *pattern, int rows, int S) {
    int hits = 0;
    for (int j = 0; j < e->n && j < rows; j++) {
        const float *row = pattern + (size_t)j * S;
        int best = 0;
        for (int s = 1; s < S; s++)
            if (row[s] > row[best]) best = s;
        hits += best == e->align[j];
    }
    return hits;
}

/* Ids by the word's place in WORDS: the rules first, then "0".."9", then the number words. */
void lp_s2s_ids(const lp_s2s_example *e, int *src, int *S, int *tgt, int *T) {
    enum { DIGIT0 = LP_S2S_N_RULES, WORD0 = DIGIT0 + 10 };
    if (src) {
        src[0] = LP_UW_N_SPECIAL + (int)e->rule;
        for (int i = 0; i < e->n; i++) src[1 + i] = LP_UW_N_SPECIAL + DIGIT0 + e->digits[i];
        src[e->n + 1] = LP_UW_EOS;
    }
    if (tgt) {
        for (int j = 0; j < e->n; j++) tgt[j] = LP_UW_N_SPECIAL + WORD0 + e->digits[e->align[j] - 1];
        tgt[e->n] = LP_UW_EOS;
    }
    if (S) *S = e->n + 2;
    if (T) *T = e->n + 1;
}
