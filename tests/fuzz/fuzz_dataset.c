/* libFuzzer harness for the dataset reader: the first byte picks the format and the options
 * (skip, limit, sample, a small record bound), the rest is the file. Reading must end in an
 * error with a message, or give items in ascending index order, each with text and no NUL,
 * as many as lp_dataset_n_selected says, whose fields read back (lp_dataset_item_field). */
#include "loupe/dataset.h"
#include "loupe/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t k = data[0];
    lp_dataset_options o = {.format = (lp_dataset_format)(k % 3), .limit = -1};
    if (o.format != LP_DATASET_TEXT && (k & 4)) o.pair_field = "pair", o.label_field = "label";
    if (k & 8) o.skip = 1;
    if (k & 16) o.limit = 3;
    if (k & 32) o.sample = 2, o.seed = k;
    if (k & 64) o.max_record = 64;
    FILE *f = size > 1 ? fmemopen((void *)(data + 1), size - 1, "rb") : fmemopen((void *)"", 1, "rb");
    if (!f) return 0;
    lp_dataset *d;
    int rc = lp_dataset_open_stream(&d, f, "fuzz", &o);
    int64_t n = 0, last = -1;
    while (!rc) {
        lp_dataset_item it;
        bool eof;
        if ((rc = lp_dataset_next(d, &it, &eof)) || eof) break;
        if (!it.text || it.index <= last || it.line < 1) abort();
        static const char *const names[] = {"text", "label", "pair", "x"}; /* what --each's {NAME} reads */
        for (int i = 0; i < 4 && !rc; i++) {
            char *v;
            if (lp_dataset_item_field(&it, names[i], &v) == LP_OK) {
                if (i == 0 && !v) abort();
                free(v);
            } else if (!lp_errmsg()[0]) {
                abort();
            }
        }
        last = it.index;
        n++;
        lp_dataset_item_free(&it);
    }
    if (rc && !lp_errmsg()[0]) abort();
    if (!rc && n != lp_dataset_n_selected(d)) abort();
    lp_dataset_close(d);
    fclose(f);
    return 0;
}
