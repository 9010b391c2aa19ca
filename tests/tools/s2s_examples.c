/* s2s_examples: prints examples of the synthetic seq2seq task (loupe/s2s_task.h), one a line:
 *   RULE <tab> SOURCE <tab> TARGET <tab> ALIGN (comma-separated source word indices)
 *   s2s_examples [--n N] [--seed S] [--heldout] [--rules copy,reverse,swap] [--digits MIN-MAX]
 *               [--repeats] [--tokenizer DIR]
 * --repeats lets a digit occur twice in a string (the task's default: all different).
 * --tokenizer also writes DIR/tokenizer.json (the task's word-level tokenizer). For looking at
 * the data and for pilots outside loupe (a PyTorch model trained on the same examples). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/s2s_task.h"

static int usage(void) {
    fprintf(stderr, "usage: s2s_examples [--n N] [--seed S] [--heldout] [--rules copy,reverse,swap] [--digits MIN-MAX] "
                    "[--repeats] [--tokenizer DIR]\n");
    return 2;
}

int main(int argc, char **argv) {
    lp_s2s_spec sp;
    lp_s2s_spec_default(&sp);
    long n = 10;
    lp_s2s_split split = LP_S2S_TRAIN;
    const char *tokdir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--heldout")) {
            split = LP_S2S_HELDOUT;
        } else if (!strcmp(a, "--repeats")) {
            sp.distinct = false;
        } else if (!v) {
            return usage();
        } else if (!strcmp(a, "--n")) {
            n = atol(v), i++;
        } else if (!strcmp(a, "--seed")) {
            sp.seed = strtoull(v, NULL, 10), i++;
        } else if (!strcmp(a, "--digits")) {
            if (sscanf(v, "%d-%d", &sp.min_digits, &sp.max_digits) != 2) return usage();
            i++;
        } else if (!strcmp(a, "--tokenizer")) {
            tokdir = v, i++;
        } else if (!strcmp(a, "--rules")) {
            sp.rules = 0;
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *r = strtok(buf, ","); r; r = strtok(NULL, ",")) {
                int k = 0;
                while (k < LP_S2S_N_RULES && strcmp(r, lp_s2s_rule_name((lp_s2s_rule)k))) k++;
                if (k == LP_S2S_N_RULES) {
                    fprintf(stderr, "error: rule '%s': use copy, reverse or swap\n", r);
                    return 2;
                }
                sp.rules |= 1u << k;
            }
            i++;
        } else {
            return usage();
        }
    }
    if (n < 0 || n > 10000000) {
        fprintf(stderr, "error: --n %ld: use 0 to 10000000\n", n);
        return 2;
    }
    lp_s2s_example *ex = malloc((size_t)(n ? n : 1) * sizeof *ex);
    if (!ex || lp_s2s_examples(&sp, split, (size_t)n, ex) || (tokdir && lp_s2s_tokenizer_save(tokdir, NULL))) {
        fprintf(stderr, "error: %s\n", ex ? lp_errmsg() : "out of memory");
        free(ex);
        return 1;
    }
    for (long k = 0; k < n; k++) {
        printf("%s\t%s\t%s\t", lp_s2s_rule_name(ex[k].rule), ex[k].source, ex[k].target);
        for (int j = 0; j < ex[k].n; j++) printf("%s%d", j ? "," : "", ex[k].align[j]);
        printf("\n");
    }
    free(ex);
    return 0;
}
