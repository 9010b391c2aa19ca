/* libFuzzer harness for the command language: the input as lines of commands, each run by
 * lp_exec on the stories260K model (../shared/models/stories260K/stories260K.bin, loaded
 * once; run from the project root) with an in-memory database opened afresh for each input.
 * A command may fail, with a message; nothing may crash, hang or allocate without bound.
 * Commands that reach outside the process are not run: load, source, export, train, tui
 * (they read or write files that the fuzzer names; their parsing is shared with the rest).
 * A fixture dictionary is loaded beside the model (as std, at blocks.0.hook_resid_post) so
 * that sae splice / attr / stats / patch, features and run/generate --steer and --clamp are fuzzed;
 * sae load and sae drop are not run (fuzz_sae fuzzes the loaders) and every splice is undone
 * after each input, so that one input never changes the next. */
#include "loupe/commands.h"
#include "loupe/error.h"

#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "../shared/models/stories260K/stories260K.bin"
#define MAX_LINES 8

static lp_session s;
static int ready; /* 1 loaded, -1 no model */

static bool allowed(const char *line) {
    const char *p = line + strspn(line, " \t");
    size_t n = strcspn(p, " \t\r\n\v\f");
    char name[64];
    if (n == 0 || n >= sizeof name) return true; /* blank, or unknown: lp_exec says so */
    memcpy(name, p, n);
    name[n] = '\0';
    const lp_command *c = lp_command_find(name);
    static const char *const banned[] = {"load", "source", "export", "train", "tui"};
    for (size_t i = 0; c && i < sizeof banned / sizeof *banned; i++)
        if (strcmp(c->name, banned[i]) == 0) return false;
    if (c && strcmp(c->name, "sae") == 0) { /* its loading and dropping: fuzz_sae */
        const char *sub = p + n + strspn(p + n, " \t");
        if (strncmp(sub, "load", 4) == 0 || strncmp(sub, "drop", 4) == 0) return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ready) {
        openblas_set_num_threads(1);
        FILE *out = fopen("/dev/null", "w");
        if (!out) abort();
        lp_session_init(&s, out);
        ready = lp_session_load(&s, MODEL) == LP_OK &&
                        lp_exec(&s, "sae load tests/fixtures/sae/saelens_standard --site blocks.0.hook_resid_post --name "
                                    "std") == LP_OK
                    ? 1
                    : -1;
        if (ready < 0) fprintf(stderr, "fuzz_exec: %s: run from the project root\n", lp_errmsg());
    }
    if (ready < 0) return 0;
    if (lp_store_open(&s.store, ":memory:") != LP_OK) abort();
    s.session_id = s.model_id = s.run_id = 0;
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    char *line = text;
    for (int i = 0; i < MAX_LINES && line && !s.quit; i++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (allowed(line) && lp_exec(&s, line) != LP_OK && !lp_errmsg()[0]) abort(); /* a failure says why */
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    lp_run_free(s.run);
    s.run = NULL;
    if (lp_exec(&s, "sae unsplice std") != LP_OK) abort(); /* no run now: nothing is made again */
    s.quit = false;
    s.mode = LP_MODE_TABLE;
    lp_store_close(s.store);
    s.store = NULL;
    return 0;
}
