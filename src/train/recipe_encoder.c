/* The data a BERT recipe makes (lp_recipe_encoder_data): examples LENGTH, LABEL, ids. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/recipe.h"
#include "loupe/wordpiece_train.h"

typedef struct {
    int *ids;
    size_t n, cap;
} ints;

static int push(ints *v, const int *x, size_t n) {
    if (v->cap - v->n < n) {
        size_t cap = 2 * (v->cap + n);
        int *grown = realloc(v->ids, cap * sizeof *grown);
        if (!grown) return lp_error(LP_ENOMEM, "out of memory making the examples");
        v->ids = grown;
        v->cap = cap;
    }
    memcpy(v->ids + v->n, x, n * sizeof *x);
    v->n += n;
    return LP_OK;
}

static int special(const lp_tokenizer *t, const char *piece, int *id) {
    if ((*id = lp_tokenizer_piece_to_id(t, piece)) < 0)
        return lp_error(LP_EINVAL, "the tokenizer has no %s token (is it BERT's WordPiece?)", piece);
    return LP_OK;
}

/* The documents' tokens, each followed by [SEP], cut into [CLS] + T - 2 tokens + [SEP]. */
static int mlm_examples(const lp_tokenizer *t, const char *text, const lp_corpus_doc *docs, size_t from, size_t to,
                        int T, ints *out) {
    int cls, sep, rc;
    if ((rc = special(t, LP_WP_CLS, &cls)) || (rc = special(t, LP_WP_SEP, &sep))) return rc;
    ints stream = {0};
    for (size_t i = from; i < to && !rc; i++) {
        int cap = (int)docs[i].len + 3, got = 0;
        int *ids = malloc((size_t)cap * sizeof *ids);
        if (!ids) rc = lp_error(LP_ENOMEM, "out of memory");
        else if (!(rc = lp_tokenizer_encode(t, text + docs[i].off, docs[i].len, false, ids, cap, &got)))
            ids[got++] = sep, rc = push(&stream, ids, (size_t)got);
        free(ids);
    }
    size_t body = (size_t)T - 2;
    int row[2 + 8192];
    for (size_t at = 0; !rc && at + body <= stream.n; at += body) {
        row[0] = T, row[1] = -1, row[2] = cls;
        memcpy(row + 3, stream.ids + at, body * sizeof *row);
        row[2 + T - 1] = sep;
        rc = push(out, row, (size_t)T + 2);
    }
    free(stream.ids);
    return rc;
}

/* n prompts from seed, each with both endings: "... to Mary." (io) and "... to John." (subject). */
static int ioi_examples(const lp_tokenizer *t, uint64_t seed, int n, int T, ints *out) {
    lp_ioi_prompt *p = malloc((size_t)n * sizeof *p);
    if (!p) return lp_error(LP_ENOMEM, "out of memory");
    lp_corpus_ioi_prompts(seed, LP_IOI_TRAINING, n, p);
    int rc = LP_OK, row[2 + 512];
    for (int i = 0; i < n && !rc; i++)
        for (int label = 0; label < LP_IOI_N_LABELS && !rc; label++) {
            char text[400];
            int len = snprintf(text, sizeof text, "%s%s.", p[i].prompt, label ? p[i].io : p[i].subject), got = 0;
            if ((rc = lp_tokenizer_encode(t, text, (size_t)len, true, row + 2, 512, &got))) break;
            if (got > T)
                rc = lp_error(LP_EINVAL, "an IOI sentence has %d tokens, more than --seq %d: give a longer --seq and "
                                         "--ctx", got, T);
            row[0] = got, row[1] = label;
            if (!rc) rc = push(out, row, (size_t)got + 2);
        }
    free(p);
    return rc;
}

/* n labelled sentences from seed: "The park was not nice." (negative). */
static int polarity_examples(const lp_tokenizer *t, uint64_t seed, int n, int T, ints *out) {
    lp_polarity_sentence *p = malloc((size_t)n * sizeof *p);
    if (!p) return lp_error(LP_ENOMEM, "out of memory");
    lp_corpus_polarity_sentences(seed, n, p);
    int rc = LP_OK, row[2 + 512];
    for (int i = 0; i < n && !rc; i++) {
        int got = 0;
        if ((rc = lp_tokenizer_encode(t, p[i].text, strlen(p[i].text), true, row + 2, 512, &got))) break;
        if (got > T)
            rc = lp_error(LP_EINVAL, "a polarity sentence has %d tokens, more than --seq %d: give a longer --seq and "
                                     "--ctx", got, T);
        row[0] = got, row[1] = p[i].label;
        if (!rc) rc = push(out, row, (size_t)got + 2);
    }
    free(p);
    return rc;
}

int lp_recipe_encoder_data(const lp_recipe *r, const lp_tokenizer *t, int **train, size_t *n_train, int **held,
                           size_t *n_held) {
    *train = *held = NULL;
    *n_train = *n_held = 0;
    ints tr = {0}, he = {0};
    int rc = LP_OK, T = r->train.T;
    if (T < 3 || T > 8192) return lp_error(LP_EINVAL, "--seq %d: a BERT's examples need 3..8192 tokens", T);
    if (r->task == LP_TASK_IOI || r->task == LP_TASK_POLARITY) {
        int n_he = (int)ceil(r->heldout * r->examples);
        n_he = n_he < 64 ? 64 : n_he;
        int (*make)(const lp_tokenizer *, uint64_t, int, int, ints *) =
            r->task == LP_TASK_IOI ? ioi_examples : polarity_examples;
        if (!(rc = make(t, r->corpus.seed ^ 0x10117a5cull, r->examples, T, &tr)))
            rc = make(t, r->corpus.seed ^ 0x4e1d0e7ull, n_he, T, &he);
    } else {
        char *text;
        size_t len, n_docs;
        lp_corpus_doc *docs;
        if ((rc = lp_corpus_new(&r->corpus, &text, &len, &docs, &n_docs))) return rc;
        size_t first_held = n_docs - (size_t)ceil(r->heldout * (double)n_docs);
        if (first_held == 0 || first_held >= n_docs)
            rc = lp_error(LP_EINVAL, "the corpus has %zu documents: too few to hold out %g of them", n_docs, r->heldout);
        if (!rc) rc = mlm_examples(t, text, docs, 0, first_held, T, &tr);
        if (!rc) rc = mlm_examples(t, text, docs, first_held, n_docs, T, &he);
        if (!rc && (!tr.n || !he.n))
            rc = lp_error(LP_EINVAL, "the corpus is too small for one example of %d tokens in each part: give a larger "
                                     "--corpus-mb", T);
        free(text);
        free(docs);
    }
    if (rc) {
        free(tr.ids);
        free(he.ids);
        return rc;
    }
    *train = tr.ids, *n_train = tr.n, *held = he.ids, *n_held = he.n;
    return LP_OK;
}
