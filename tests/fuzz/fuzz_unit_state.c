/* libFuzzer harness for a dataset's saved aggregates (unit_stats.h: lp_unit_stats_load), which
 * --resume reads back from the database's checkpoint row: the first 4 bytes choose a small
 * config (units, k, samples, dictionaries), the rest is the state's bytes. Loading must end in
 * an error with a message, or give a state whose bytes, saved again and loaded into a fresh
 * state, save to the same bytes. */
#include "loupe/error.h"
#include "loupe/unit_stats.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    lp_unit_stats_config c = {1 + data[0] % 2, data[0] / 2 % 4, 1 + data[0] / 8 % 2, data[1] & 1, (data[1] >> 1) & 1,
                              1 + data[1] / 4 % 4, 1 + data[1] / 16 % 3, data[2] % 3, {1 + data[3] % 5, 1 + data[3] / 5 % 5}};
    lp_unit_stats *u, *again;
    if (lp_unit_stats_new(&u, &c)) abort();
    int rc = lp_unit_stats_load(u, data + 4, size - 4);
    if (rc) {
        if (!lp_errmsg()[0]) abort();
        lp_unit_stats_free(u);
        return 0;
    }
    unsigned char *blob, *blob2;
    size_t len, len2;
    if (lp_unit_stats_save(u, &blob, &len) || lp_unit_stats_new(&again, &c) || lp_unit_stats_load(again, blob, len) ||
        lp_unit_stats_save(again, &blob2, &len2))
        abort();
    if (len != len2 || memcmp(blob, blob2, len)) abort();
    free(blob), free(blob2);
    lp_unit_stats_free(u), lp_unit_stats_free(again);
    return 0;
}
