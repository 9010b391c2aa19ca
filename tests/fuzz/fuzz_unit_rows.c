/* libFuzzer harness for the JSON text of a unit's aggregates (unit_rows.h), which merge reads
 * from shard databases it did not write: the first byte picks examples, samples or a
 * histogram and the cap, the rest is the text. Parsing must end in an error with a message,
 * or give at most cap entries in range, whose text written again parses to the same. */
#include "loupe/error.h"
#include "loupe/unit_rows.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 3, cap = 1 + (data[0] >> 2) % 40, n = -1, m = -1;
    const char *s = (const char *)data + 1;
    size_t len = size - 1;
    lp_unit_example ex[40], ex2[40];
    lp_unit_sample sm[40], sm2[40];
    uint64_t h[40], h2[40];
    lp_unit_text t = {0};
    int rc = which == 0   ? lp_unit_rows_parse_examples(s, len, ex, cap, &n)
             : which == 1 ? lp_unit_rows_parse_samples(s, len, sm, cap, &n)
                          : lp_unit_rows_parse_histogram(s, len, h, cap, &n);
    if (rc) {
        if (!lp_errmsg()[0]) abort();
        return 0;
    }
    if (n < 0 || n > cap) abort();
    for (int i = 0; which == 0 && i < n; i++)
        if (ex[i].item < 0 || ex[i].pos < 0 || ex[i].key_pos < -1) abort();
    for (int i = 0; which == 1 && i < n; i++)
        if (sm[i].bin < 0 || sm[i].bin >= LP_UNIT_BINS || sm[i].hash < 0) abort();
    rc = which == 0   ? lp_unit_rows_examples(&t, ex, n)
         : which == 1 ? lp_unit_rows_samples(&t, sm, n)
                      : lp_unit_rows_histogram(&t, h, n);
    if (rc) abort();
    rc = which == 0   ? lp_unit_rows_parse_examples(t.p, t.len, ex2, cap, &m)
         : which == 1 ? lp_unit_rows_parse_samples(t.p, t.len, sm2, cap, &m)
                      : lp_unit_rows_parse_histogram(t.p, t.len, h2, cap, &m);
    if (rc || m != n) abort();
    for (int i = 0; i < n; i++) {
        const lp_unit_example *a = which == 0 ? &ex[i] : &sm[i].x, *b = which == 0 ? &ex2[i] : &sm2[i].x;
        if (which == 2 ? h[i] != h2[i]
                       : a->item != b->item || a->pos != b->pos || a->key_pos != b->key_pos ||
                             (a->value == a->value && memcmp(&a->value, &b->value, sizeof a->value)))
            abort();
    }
    lp_unit_text_free(&t);
    return 0;
}
