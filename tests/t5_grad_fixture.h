/* The T5 gradient fixtures (tests/fixtures/t5/NAME/grad.json, t5_grad_reference.py) opened as
 * a model, a run of the reference's source and decoder input, and the objective's position
 * and ids; for the cmocka suites of the T5 backward and attribution (include after cmocka.h). */
#ifndef LOUPE_TEST_T5_GRAD_FIXTURE_H
#define LOUPE_TEST_T5_GRAD_FIXTURE_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "loupe/error.h"
#include "loupe/model.h"
#include "loupe/run.h"

#define T5_DIR "tests/fixtures/t5/"

typedef struct {
    json_t *ref;
    lp_model *m;
    lp_run *r;
    int S, T, pos, target, contrast;
    int *src, *dec;
} fixture;

static int *ints(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *out = malloc((size_t)*n * sizeof *out);
    for (int i = 0; i < *n; i++) out[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return out;
}

static void open_fixture(fixture *f, const char *name) {
    char path[256];
    snprintf(path, sizeof path, T5_DIR "%s/grad.json", name);
    json_error_t err;
    if (!(f->ref = json_load_file(path, 0, &err))) fail_msg("%s: %s", path, err.text);
    snprintf(path, sizeof path, T5_DIR "%s", name);
    if (lp_model_load(&f->m, path, NULL)) fail_msg("%s: %s", name, lp_errmsg());
    f->src = ints(json_object_get(f->ref, "ids"), &f->S);
    f->dec = ints(json_object_get(f->ref, "decoder_input_ids"), &f->T);
    if (lp_run_new_seq2seq(&f->r, f->m, f->src, f->S, f->dec, f->T)) fail_msg("%s: %s", name, lp_errmsg());
    f->pos = (int)json_integer_value(json_object_get(f->ref, "pos"));
    f->target = (int)json_integer_value(json_object_get(f->ref, "target"));
    f->contrast = (int)json_integer_value(json_object_get(f->ref, "contrast"));
}

static void close_fixture(fixture *f) {
    lp_run_free(f->r);
    lp_model_free(f->m);
    json_decref(f->ref);
    free(f->src);
    free(f->dec);
}

#endif
