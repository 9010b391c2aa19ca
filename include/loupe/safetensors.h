/* safetensors files: read (mmapped, validated) and write.
 *
 * Format (https://huggingface.co/docs/safetensors): 8 bytes little-endian u64 N = header
 * length; N bytes of UTF-8 JSON {"NAME": {"dtype": "F32", "shape": [..], "data_offsets":
 * [BEGIN, END]}, ..., "__metadata__": {str: str}}; then the data region. Offsets are
 * relative to the start of the data region. The reader checks, before trusting anything:
 * N fits in the file; the JSON parses and every entry has a known-shaped dtype/shape/offsets;
 * BEGIN <= END <= data size; END - BEGIN == product(shape) * sizeof(dtype) (for the dtypes
 * it knows); entries do not overlap. Failures name the file and the tensor.
 *
 * A sharded checkpoint is a `model.safetensors.index.json` whose "weight_map" maps each
 * tensor name to a shard file in the same directory; lp_st_open accepts it and merges
 * the shards into one name space. */
#ifndef LOUPE_SAFETENSORS_H
#define LOUPE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "loupe/dtype.h"

#define LP_ST_MAX_DIMS 8

typedef struct {
    const char *name;
    lp_dtype dtype;
    const char *dtype_name;      /* as written in the file, e.g. "F32", "I64" */
    int ndim;
    int64_t shape[LP_ST_MAX_DIMS];
    const void *data;            /* points into the mapping; NOT aligned in general */
    size_t nbytes;
} lp_st_tensor;

typedef struct lp_safetensors lp_safetensors;

/* Opens a .safetensors file or a model.safetensors.index.json. */
int lp_st_open(lp_safetensors **out, const char *path);
void lp_st_free(lp_safetensors *st);

/* Parses a header from memory (buf = the whole file), for fuzzing and tests; `what` names
 * the buffer in messages. The returned object borrows buf: keep it alive. */
int lp_st_parse(lp_safetensors **out, const void *buf, size_t len, const char *what);

int lp_st_count(const lp_safetensors *st);
const lp_st_tensor *lp_st_at(const lp_safetensors *st, int i);
const lp_st_tensor *lp_st_find(const lp_safetensors *st, const char *name); /* NULL if absent */
/* Which file a tensor came from (for error messages). */
const char *lp_st_path(const lp_safetensors *st, const lp_st_tensor *t);

/* Writes tensors (data in the given dtype) to path, data 8-byte aligned, with optional
 * metadata pairs (keys[i], values[i]); n_meta may be 0. Tensors are written in the order given. */
int lp_st_write(const char *path, const lp_st_tensor *tensors, int n,
                const char *const *meta_keys, const char *const *meta_values, int n_meta);

#endif
