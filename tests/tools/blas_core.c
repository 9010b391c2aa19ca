/* blas_core: prints the name of the kernel set OpenBLAS picked on this machine (after
 * OPENBLAS_CORETYPE, if set), lower case, e.g. "haswell", "skylakex", "zen". Used by
 * make check-kernels to choose a different one for the second pass. */
#include <cblas.h>
#include <ctype.h>
#include <stdio.h>

int main(void) {
    const char *name = openblas_get_corename();
    for (const char *p = name ? name : "unknown"; *p; p++) putchar(tolower((unsigned char)*p));
    putchar('\n');
    return 0;
}
