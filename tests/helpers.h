/* Small helpers shared by the cmocka suites (header-only: each suite is one program). */
#ifndef LOUPE_TEST_HELPERS_H
#define LOUPE_TEST_HELPERS_H

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loupe/commands.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/store.h"

/* A fresh temporary directory, removed by rm_tree; aborts the suite if none can be made. */
static inline char *make_temp_dir(void) {
    char *t = strdup("/tmp/loupe-test-XXXXXX");
    if (!t || !mkdtemp(t)) {
        perror("mkdtemp");
        abort();
    }
    return t;
}

static inline void rm_tree(char *dir) {
    if (!dir) return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    free(dir);
}

/* Where the build put its tools (BUILD in the environment, as tests/run.sh sets it). */
static inline const char *build_dir(void) {
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Runs build/tools/mkmodel DIR ARGS; returns its exit status. */
static inline int mkmodel(const char *dir, const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s/tools/mkmodel '%s' %s", build_dir(), dir, args);
    return system(cmd);
}

/* A tiny random checkpoint of the forward-pass fixtures. */
typedef struct {
    char name[64];
    char args[400];
    int ids[64];
    int n;
} fixture_model;

/* The lines of tests/fixtures/models.txt: NAME | mkmodel arguments | token ids. */
static inline int read_models(fixture_model *out, int cap) {
    FILE *f = fopen("tests/fixtures/models.txt", "r");
    if (!f) return -1;
    char line[1024];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char *a = strchr(line, '|'), *b = a ? strchr(a + 1, '|') : NULL;
        if (!b) continue;
        *a = *b = '\0';
        fixture_model *m = &out[n++];
        sscanf(line, "%63s", m->name);
        snprintf(m->args, sizeof m->args, "%s", a + 1);
        m->n = 0;
        for (char *p = b + 1; *p && m->n < 64;) {
            m->ids[m->n++] = (int)strtol(p, &p, 10);
            while (*p == ',' || *p == ' ' || *p == '\n') p++;
        }
    }
    fclose(f);
    return n;
}

#define SHARED "../shared"
#define STORIES SHARED "/models/stories260K/stories260K.bin"
#define STORIES_TOK SHARED "/models/stories260K/tok512.bin"

/* The largest |logit difference| between m and a reference fixture {"ids": [...], "logits":
 * T x V} (reference.py's output); -1 (with a line on stderr) if the fixture cannot be read
 * or does not fit the model. */
static inline double reference_logit_error(const lp_model *m, const char *fixture) {
    json_error_t e;
    json_t *j = json_load_file(fixture, 0, &e);
    if (!j) {
        fprintf(stderr, "%s: %s (tests/fixtures/make_fixtures.sh makes it)\n", fixture, e.text);
        return -1;
    }
    json_t *jids = json_object_get(j, "ids"), *jlog = json_object_get(j, "logits");
    int T = (int)json_array_size(jids), V = lp_model_config(m)->vocab;
    int *ids = malloc((size_t)(T > 0 ? T : 1) * sizeof *ids);
    lp_run *r = NULL;
    double worst = -1;
    for (int i = 0; i < T; i++) ids[i] = (int)json_integer_value(json_array_get(jids, i));
    if (T > 0 && (int)json_array_size(jlog) == T && lp_run_new(&r, m, ids, T) == 0) {
        worst = 0;
        for (int t = 0; t < T && worst >= 0; t++) {
            json_t *row = json_array_get(jlog, t);
            if ((int)json_array_size(row) != V) worst = -1;
            for (int v = 0; v < V && worst >= 0; v++)
                worst = fmax(worst, fabs(lp_run_logits(r, t)[v] - json_real_value(json_array_get(row, v))));
        }
    }
    if (worst < 0) fprintf(stderr, "%s: does not fit the model (%d ids)\n", fixture, T);
    lp_run_free(r);
    free(ids);
    json_decref(j);
    return worst;
}

/* Runs one command line in session s, its output into *buf (freed and replaced; length *len);
 * returns its status and, when out is not NULL, the JSON it printed (NULL if none). */
static inline int exec_line(lp_session *s, char **buf, size_t *len, const char *line, json_t **out) {
    free(*buf);
    *buf = NULL;
    s->out = open_memstream(buf, len);
    int rc = lp_exec(s, line);
    fclose(s->out);
    s->out = NULL;
    if (out) {
        json_error_t e;
        *out = rc ? NULL : json_loadb(*buf, *len, 0, &e);
    }
    return rc;
}

/* A session on model (a path) in JSON mode, with an in-memory store when store is true;
 * NULL if either cannot be opened. session_close frees it. */
static inline lp_session *session_open(const char *model, bool store) {
    lp_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    lp_session_init(s, NULL);
    s->mode = LP_MODE_JSON;
    if ((store && lp_store_open(&s->store, ":memory:")) || lp_session_load(s, model)) {
        lp_store_close(s->store);
        lp_session_free(s);
        free(s);
        return NULL;
    }
    return s;
}

static inline void session_close(lp_session *s) {
    if (!s) return;
    lp_store_close(s->store);
    lp_session_free(s);
    free(s);
}

/* A cmocka group state: a session on the bundled model with an in-memory store, and the
 * output buffer of exec_line. */
typedef struct {
    lp_session *s;
    char *buf;
    size_t len;
} session_fixture;

static inline int default_session_setup(void **state) {
    session_fixture *f = calloc(1, sizeof *f);
    if (!f || !(f->s = session_open("models/default", true))) return -1;
    *state = f;
    return 0;
}

static inline int default_session_teardown(void **state) {
    session_fixture *f = *state;
    session_close(f->s);
    free(f->buf);
    free(f);
    return 0;
}

#endif
