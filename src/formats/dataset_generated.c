/* Generated datasets (dataset.h, lp_dataset_generated): the corpus generator's IOI prompts
 * and repeated-span documents written as JSONL, so that `dataset generate:ioi:200` runs them
 * as it runs a file. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/corpus.h"
#include "loupe/dataset.h"
#include "loupe/error.h"
#include "loupe/generate.h"

#define MAX_ITEMS 100000

bool lp_dataset_is_generated(const char *path) { return strncmp(path, LP_DATASET_GENERATED, strlen(LP_DATASET_GENERATED)) == 0; }

/* generate:KIND:N[:SEED] */
static int parse_spec(const char *spec, char *kind, size_t kind_cap, long *n, unsigned long long *seed) {
    const char *p = spec + strlen(LP_DATASET_GENERATED), *colon = strchr(p, ':');
    char *end = NULL;
    if (!colon || (size_t)(colon - p) >= kind_cap) goto bad;
    snprintf(kind, kind_cap, "%.*s", (int)(colon - p), p);
    *n = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *n < 1 || *n > MAX_ITEMS) goto bad;
    *seed = 0;
    if (*end == ':') {
        const char *s = end + 1;
        if (*s < '0' || *s > '9') goto bad;
        *seed = strtoull(s, &end, 10);
    }
    if (*end) goto bad;
    return LP_OK;
bad:
    return lp_error(LP_EINVAL, "'%s': a generated dataset is generate:KIND:N[:SEED] with KIND ioi, ioi-heldout or "
                    "repeat and 1 <= N <= %d (e.g. generate:ioi:200:1)", spec, MAX_ITEMS);
}

/* The prompt with its last " S" (the subject's second mention) replaced by " C". */
static void replace_last(char *out, size_t cap, const char *prompt, const char *s, const char *c) {
    const char *at = NULL;
    for (const char *p = strstr(prompt, s); p; p = strstr(p + 1, s)) at = p;
    if (!at) {
        snprintf(out, cap, "%s", prompt);
        return;
    }
    snprintf(out, cap, "%.*s%s%s", (int)(at - prompt), prompt, c, at + strlen(s));
}

static int put_line(FILE *f, json_t *o) {
    int rc = o && json_dumpf(o, f, JSON_COMPACT | JSON_SORT_KEYS) == 0 && fputc('\n', f) != EOF
                 ? LP_OK
                 : lp_error(LP_EIO, "writing the generated dataset: out of memory or disk");
    json_decref(o);
    return rc;
}

static int write_ioi(FILE *f, lp_ioi_frames frames, int n, uint64_t seed) {
    lp_ioi_prompt *pr = malloc((size_t)n * sizeof *pr);
    if (!pr) return lp_error(LP_ENOMEM, "out of memory");
    lp_corpus_ioi_prompts(seed, frames, n, pr);
    int n_names, rc = LP_OK;
    const char *const *names = lp_corpus_names(&n_names);
    for (int i = 0; i < n && !rc; i++) {
        /* the third name: the first after a seeded draw that is neither the IO nor the subject */
        char c[40], corrupt[400];
        uint64_t h = lp_mix64(seed ^ lp_mix64((uint64_t)i + 1));
        for (int k = 0; k < n_names; k++) {
            snprintf(c, sizeof c, " %s", names[(h + (uint64_t)k) % (uint64_t)n_names]);
            if (strcmp(c, pr[i].io) && strcmp(c, pr[i].subject)) break;
        }
        replace_last(corrupt, sizeof corrupt, pr[i].prompt, pr[i].subject, c);
        rc = put_line(f, json_pack("{s:s,s:s,s:s,s:s,s:b,s:i}", "text", pr[i].prompt, "target", pr[i].io, "subject",
                                   pr[i].subject, "corrupt", corrupt, "abba", pr[i].abba, "form", pr[i].form));
    }
    free(pr);
    return rc;
}

static int write_repeat(FILE *f, int n, uint64_t seed) {
    lp_corpus_spec sp;
    lp_corpus_spec_default(&sp);
    sp.seed = seed;
    sp.proportion[LP_CORPUS_IOI] = 0, sp.proportion[LP_CORPUS_REPEAT] = 1, sp.proportion[LP_CORPUS_FILLER] = 0;
    sp.n_docs = (size_t)n;
    char *text;
    size_t len, nd;
    lp_corpus_doc *docs;
    int rc = lp_corpus_new(&sp, &text, &len, &docs, &nd);
    if (rc) return rc;
    for (size_t i = 0; !rc && i < nd; i++) {
        const lp_corpus_doc *d = &docs[i];
        rc = put_line(f, json_pack("{s:s%,s:s%,s:I,s:I}", "text", text + d->off, d->len, "span", text + d->span_off,
                                   d->span_len, "span_pos", (json_int_t)(d->span_off - d->off), "repeat_pos",
                                   (json_int_t)(d->repeat_off - d->off)));
    }
    free(text), free(docs);
    return rc;
}

int lp_dataset_generated(const char *spec, FILE *f) {
    char kind[32];
    long n = 0;
    unsigned long long seed = 0;
    int rc = parse_spec(spec, kind, sizeof kind, &n, &seed);
    if (rc) return rc;
    if (!strcmp(kind, "ioi")) return write_ioi(f, LP_IOI_TRAINING, (int)n, seed);
    if (!strcmp(kind, "ioi-heldout")) return write_ioi(f, LP_IOI_HELDOUT, (int)n, seed);
    if (!strcmp(kind, "repeat")) return write_repeat(f, (int)n, seed);
    return lp_error(LP_EINVAL, "'%s': no generator '%s'; KIND is ioi, ioi-heldout or repeat", spec, kind);
}
