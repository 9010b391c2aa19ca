/* libFuzzer harness for train.json's recipe: the input as JSON; when it parses, reading the
 * recipe must either fail with a message or give one that passes its own check and writes
 * back to JSON that reads again to the same recipe. */
#include "loupe/error.h"
#include "loupe/recipe.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t e;
    json_t *j = json_loadb((const char *)data, size, 0, &e);
    if (!j) return 0;
    lp_recipe r, back;
    if (lp_recipe_from_json(&r, j, "fuzz") == LP_OK) {
        if (lp_recipe_check(&r) != LP_OK) abort();
        json_t *again = lp_recipe_to_json(&r);
        if (!again || lp_recipe_from_json(&back, again, "again") != LP_OK) abort();
        if (back.vocab != r.vocab || back.model.n_layer != r.model.n_layer || back.train.steps != r.train.steps ||
            back.corpus.n_bytes != r.corpus.n_bytes || back.corpus.seed != r.corpus.seed)
            abort();
        json_decref(again);
    } else if (!lp_errmsg()[0]) {
        abort();
    }
    json_decref(j);
    return 0;
}
