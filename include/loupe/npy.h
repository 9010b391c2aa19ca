/* Writing tensors for other tools: NumPy's .npy (version 1.0, little-endian float32, C
 * order; np.load reads it) and CSV (RFC 4180; the last dimension across, leading
 * dimensions as index columns). Reading .npy from memory (a member of an .npz).
 *
 * .npy format (numpy.lib.format): the magic "\x93NUMPY", a major and a minor version byte;
 * version 1: a little-endian u16 header length, versions 2 and 3: a u32; then the header, a
 * Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (A, B), } padded
 * with spaces and a newline; then the data, C order. */
#ifndef LOUPE_NPY_H
#define LOUPE_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "loupe/dtype.h"

#define LP_NPY_MAX_DIMS 8
/* Headers above this are refused before they are parsed (numpy writes a few hundred bytes). */
#define LP_NPY_MAX_HEADER (1u << 16)

/* data holds the product of shape[0..ndim) floats, row-major. dim_names (ndim - 1
 * names for the index columns of CSV) may be NULL. */
int lp_npy_write(const char *path, const float *data, const int *shape, int ndim);
/* An array read from a .npy held in memory: data points into the buffer (unaligned). */
typedef struct {
    lp_dtype dtype;
    int ndim;
    int64_t shape[LP_NPY_MAX_DIMS];
    const void *data;
    size_t nbytes;
} lp_npy_array;

/* Parses the .npy in buf[0..len) (what names it in messages). Checks the magic, the
 * version, that the header lies inside the buffer and is a dict with a little-endian
 * 'descr' loupe knows (f2, f4, f8, integers, bool), 'fortran_order': False and a shape of
 * at most LP_NPY_MAX_DIMS non-negative dimensions, and that the data is exactly the shape's
 * product times the element size (products checked for overflow). */
int lp_npy_parse(lp_npy_array *out, const void *buf, size_t len, const char *what);

int lp_csv_write(const char *path, const float *data, const int *shape, int ndim, const char *const *dim_names);

#endif
