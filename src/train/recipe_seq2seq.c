/* The data a T5 recipe makes (lp_recipe_seq2seq_data): examples S, T, source ids, target ids. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/recipe.h"

/* n examples of split as lp_train's data, into *out (*len ints). */
static int encode(const lp_s2s_spec *spec, lp_s2s_split split, size_t n, int **out, size_t *len) {
    *out = NULL;
    *len = 0;
    lp_s2s_example *ex = malloc(n * sizeof *ex);
    int *ids = malloc(n * (2 + 2 * (LP_S2S_MAX_DIGITS + 2)) * sizeof *ids);
    int rc = ex && ids ? lp_s2s_examples(spec, split, n, ex) : lp_error(LP_ENOMEM, "out of memory making the examples");
    size_t at = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        int S, T;
        lp_s2s_ids(&ex[k], ids + at + 2, &S, NULL, NULL);
        lp_s2s_ids(&ex[k], NULL, NULL, ids + at + 2 + S, &T);
        ids[at] = S, ids[at + 1] = T;
        at += 2 + (size_t)S + T;
    }
    free(ex);
    if (rc) {
        free(ids);
        return rc;
    }
    *out = ids;
    *len = at;
    return LP_OK;
}

int lp_recipe_seq2seq_data(const lp_recipe *r, int **train, size_t *n_train, int **held, size_t *n_held) {
    lp_s2s_spec spec = r->s2s;
    spec.seed = r->corpus.seed;
    size_t n_h = (size_t)ceil(r->heldout * r->examples);
    int rc = encode(&spec, LP_S2S_TRAIN, (size_t)r->examples, train, n_train);
    if (!rc && (rc = encode(&spec, LP_S2S_HELDOUT, n_h, held, n_held))) {
        free(*train);
        *train = NULL;
        *n_train = 0;
    }
    return rc;
}
