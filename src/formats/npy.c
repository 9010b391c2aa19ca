/* .npy and .csv writers (see npy.h). */
#include "loupe/npy.h"

#include <stdio.h>
#include <string.h>

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

/* ---- reading ---- */

/* The value of 'key' in the header dict: a pointer just after "'key':" and blanks, or NULL. */
static const char *dict_value(const char *h, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(h, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static const struct {
    const char *descr;
    lp_dtype dt;
} NPY_TYPES[] = {
    {"f4", LP_DT_F32}, {"f8", LP_DT_F64}, {"f2", LP_DT_F16}, {"i8", LP_DT_I64}, {"i4", LP_DT_I32},
    {"i2", LP_DT_I16}, {"i1", LP_DT_I8},  {"u1", LP_DT_U8},  {"b1", LP_DT_BOOL},
};

int lp_npy_parse(lp_npy_array *out, const void *buf, size_t len, const char *what) {
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return lp_error(LP_EFORMAT, "%s: not a .npy array (no \\x93NUMPY magic)", what);
    size_t hlen, at;
    if (b[6] == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8, at = 10;
    } else if ((b[6] == 2 || b[6] == 3) && len >= 12) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24, at = 12;
    } else {
        return lp_error(LP_EFORMAT, "%s: .npy version %d.%d is not one loupe reads (1.0 to 3.0)", what, b[6], b[7]);
    }
    if (hlen > LP_NPY_MAX_HEADER || hlen > len - at)
        return lp_error(LP_EFORMAT, "%s: the .npy header (%zu bytes) runs past the end of the array (%zu bytes)", what,
                        hlen, len);
    char h[LP_NPY_MAX_HEADER + 1];
    memcpy(h, b + at, hlen);
    h[hlen] = '\0';
    if (strlen(h) != hlen) return lp_error(LP_EFORMAT, "%s: the .npy header holds a NUL byte", what);
    const char *d = dict_value(h, "descr"), *fo = dict_value(h, "fortran_order"), *sh = dict_value(h, "shape");
    if (!d || !fo || !sh)
        return lp_error(LP_EFORMAT, "%s: the .npy header lacks 'descr', 'fortran_order' or 'shape'", what);
    if (strncmp(fo, "False", 5) != 0)
        return lp_error(LP_EUNSUPPORTED, "%s: a Fortran-order array; save it in C order (np.ascontiguousarray)", what);
    char q = *d;
    if ((q != '\'' && q != '"') || !(d[1] == '<' || d[1] == '|' || d[1] == '=') || !d[2] || !d[3] || d[4] != q)
        return lp_error(LP_EUNSUPPORTED, "%s: .npy dtype %.8s: loupe reads little-endian numbers ('<f4', '<f8', ...)",
                        what, d);
    out->dtype = LP_DT_UNKNOWN;
    for (size_t i = 0; i < sizeof NPY_TYPES / sizeof *NPY_TYPES; i++)
        if (strncmp(d + 2, NPY_TYPES[i].descr, 2) == 0) out->dtype = NPY_TYPES[i].dt;
    if (out->dtype == LP_DT_UNKNOWN)
        return lp_error(LP_EUNSUPPORTED, "%s: .npy dtype %.5s is not a number type loupe reads", what, d);
    if (*sh != '(') return lp_error(LP_EFORMAT, "%s: the .npy 'shape' is not a tuple", what);
    const char *p = sh + 1;
    uint64_t n = 1;
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        if (*p < '0' || *p > '9' || out->ndim == LP_NPY_MAX_DIMS)
            return lp_error(LP_EFORMAT, "%s: the .npy 'shape' is not a tuple of at most %d sizes", what, LP_NPY_MAX_DIMS);
        uint64_t v = 0;
        while (*p >= '0' && *p <= '9') {
            if (v > (UINT64_C(1) << 48)) return lp_error(LP_EFORMAT, "%s: a .npy dimension is too large", what);
            v = v * 10 + (uint64_t)(*p++ - '0');
        }
        if (*p == 'L') p++; /* Python 2's longs */
        if (v && n > (UINT64_C(1) << 60) / v) return lp_error(LP_EFORMAT, "%s: the .npy shape's product overflows", what);
        n *= v;
        out->shape[out->ndim++] = (int64_t)v;
    }
    size_t es = lp_dtype_size(out->dtype), data_at = at + hlen;
    if (n > (SIZE_MAX - data_at) / es || n * es != len - data_at)
        return lp_error(LP_EFORMAT, "%s: the .npy data is %zu bytes, but its shape and dtype make %llu", what,
                        len - data_at, (unsigned long long)(n * es));
    out->data = b + data_at;
    out->nbytes = (size_t)(n * es);
    return LP_OK;
}
