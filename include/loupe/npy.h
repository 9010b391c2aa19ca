/* Writing tensors for other tools: NumPy's .npy (version 1.0, little-endian float32, C
 * order; np.load reads it) and CSV (RFC 4180; the last dimension across, leading
 * dimensions as index columns). */
#ifndef LOUPE_NPY_H
#define LOUPE_NPY_H

/* data holds the product of shape[0..ndim) floats, row-major. dim_names (ndim - 1
 * names for the index columns of CSV) may be NULL. */
int lp_npy_write(const char *path, const float *data, const int *shape, int ndim);
int lp_csv_write(const char *path, const float *data, const int *shape, int ndim, const char *const *dim_names);

#endif
