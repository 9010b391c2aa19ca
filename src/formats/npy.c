/* .npy and .csv writers (see npy.h). */
#include "loupe/npy.h"

#include <stdio.h>

#include "loupe/error.h"
#include "loupe/fileio.h"

static size_t count(const int *shape, int ndim) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

int lp_npy_write(const char *path, const float *data, const int *shape, int ndim) {
    char dict[256];
    int at = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++) at += snprintf(dict + at, sizeof dict - (size_t)at, "%d%s", shape[i], ndim == 1 || i + 1 < ndim ? ", " : "");
    at += snprintf(dict + at, sizeof dict - (size_t)at, "), }");
    /* magic (6) + version (2) + header length (2) + dict, padded with spaces and a final
     * newline to a multiple of 64 bytes, as the format asks. */
    int total = 10 + at + 1;
    int pad = (64 - total % 64) % 64;
    unsigned short hlen = (unsigned short)(at + pad + 1);
    lp_file_tmp w;
    int rc = lp_file_begin(&w, path);
    if (rc) return rc;
    FILE *f = w.f;
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    unsigned char le[2] = {(unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    fwrite(le, 1, 2, f);
    fwrite(dict, 1, (size_t)at, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    size_t n = count(shape, ndim);
    fwrite(data, sizeof(float), n, f); /* this machine is little-endian, as '<f4' says */
    return lp_file_commit(&w); /* a failed write (ferror) leaves any old file in place */
}

int lp_csv_write(const char *path, const float *data, const int *shape, int ndim, const char *const *dim_names) {
    if (ndim < 1 || ndim > 8) return lp_error(LP_EINVAL, "%s: CSV takes tensors of 1 to 8 dimensions", path);
    lp_file_tmp w;
    int rc = lp_file_begin(&w, path);
    if (rc) return rc;
    FILE *f = w.f;
    int cols = shape[ndim - 1];
    size_t rows = count(shape, ndim - 1);
    for (int i = 0; i < ndim - 1; i++) fprintf(f, "%s,", dim_names && dim_names[i] ? dim_names[i] : "index");
    for (int j = 0; j < cols; j++) fprintf(f, "%d%s", j, j + 1 < cols ? "," : "\r\n");
    for (size_t r = 0; r < rows; r++) {
        size_t rest = r;
        int idx[8] = {0};
        for (int i = ndim - 2; i >= 0; i--) {
            idx[i] = (int)(rest % (size_t)shape[i]);
            rest /= (size_t)shape[i];
        }
        for (int i = 0; i < ndim - 1; i++) fprintf(f, "%d,", idx[i]);
        const float *row = data + r * (size_t)cols;
        for (int j = 0; j < cols; j++) fprintf(f, "%.9g%s", row[j], j + 1 < cols ? "," : "\r\n");
        if (ferror(f)) break;
    }
    return lp_file_commit(&w);
}
