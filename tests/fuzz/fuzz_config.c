/* libFuzzer: config.json through model loading and a two-token forward pass, against the
 * two-architecture checkpoint of config_model.h (made once, in a temporary directory). Any
 * crash, sanitizer report, or error without a message fails. */
#include <stdint.h>
#include <stdlib.h>

#include "config_model.h"

static char dir[] = "/tmp/loupe-fuzz-config-XXXXXX";

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (!mkdtemp(dir) || config_model_make(dir)) {
        fprintf(stderr, "fuzz_config: cannot make the model in %s: %s\n", dir, lp_errmsg());
        abort();
    }
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (config_model_try(dir, data, size)) abort();
    return 0;
}
