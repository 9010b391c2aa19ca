/* GGUF files (llama.cpp's format, ggml docs/gguf.md), versions 2 and 3, little-endian:
 * read through mmap and validated before anything is trusted.
 *
 * Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count metadata pairs
 * (string key, u32 value type, value); tensor_count tensor infos (string name, u32 n_dims,
 * u64 ne[n_dims] innermost first, u32 ggml type, u64 offset); padding to general.alignment
 * (default 32); the data section, where each tensor lies at its offset. A string is a u64
 * length and that many bytes (no NUL). An array value is u32 element type, u64 count,
 * elements.
 *
 * The reader checks: magic and version; every length and count against the bytes left
 * (so that no allocation exceeds a small multiple of the file's size); value types (nested
 * arrays refused); bools 0 or 1; keys and names non-empty, unique, names at most 64 bytes;
 * n_dims from 1 to 4, dimensions >= 1, element counts and byte sizes overflow-checked;
 * ne[0] a multiple of the type's block size; general.alignment a u32 power of two; each
 * offset aligned, each tensor inside the file, no two tensors overlapping. Every failure
 * is one LP_EFORMAT / LP_EUNSUPPORTED message naming the file. */
#ifndef LOUPE_GGUF_H
#define LOUPE_GGUF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Metadata value types (the numbers are the file's). */
typedef enum {
    LP_GGUF_U8 = 0, LP_GGUF_I8, LP_GGUF_U16, LP_GGUF_I16, LP_GGUF_U32, LP_GGUF_I32, LP_GGUF_F32, LP_GGUF_BOOL,
    LP_GGUF_STRING, LP_GGUF_ARRAY, LP_GGUF_U64, LP_GGUF_I64, LP_GGUF_F64,
} lp_gguf_vtype;

/* The ggml tensor types loupe knows the size of (the numbers are the file's). */
enum {
    LP_GGML_F32 = 0, LP_GGML_F16 = 1, LP_GGML_Q4_0 = 2, LP_GGML_Q4_1 = 3, LP_GGML_Q5_0 = 6, LP_GGML_Q5_1 = 7,
    LP_GGML_Q8_0 = 8, LP_GGML_Q8_1 = 9, LP_GGML_Q2_K = 10, LP_GGML_Q3_K = 11, LP_GGML_Q4_K = 12, LP_GGML_Q5_K = 13,
    LP_GGML_Q6_K = 14, LP_GGML_Q8_K = 15, LP_GGML_I8 = 24, LP_GGML_I16 = 25, LP_GGML_I32 = 26, LP_GGML_I64 = 27,
    LP_GGML_F64 = 28, LP_GGML_BF16 = 30,
};

typedef struct {
    const char *key;             /* NUL-terminated copy */
    lp_gguf_vtype type;
    lp_gguf_vtype elem;          /* arrays: the element type */
    uint64_t n;                  /* arrays: the element count; strings: the length */
    const unsigned char *data;   /* the value's bytes in the mapping (a string's text, an array's first element) */
    const uint64_t *str_at;      /* string arrays: offset of each element's length field from data */
} lp_gguf_kv;

typedef struct {
    const char *name;            /* NUL-terminated copy */
    int n_dims;
    uint64_t ne[4];              /* innermost first: a (rows, cols) matrix is ne = {cols, rows} */
    uint32_t type;               /* ggml type */
    uint64_t n_elem;
    const unsigned char *data;   /* in the mapping; aligned to general.alignment from the data section */
    size_t nbytes;
} lp_gguf_tensor;

typedef struct lp_gguf lp_gguf;

/* Maps and parses path; the object owns the mapping. */
int lp_gguf_open(lp_gguf **out, const char *path);
/* Parses a whole file held in memory (borrowed: keep buf alive); `what` names it in messages. */
int lp_gguf_parse(lp_gguf **out, const void *buf, size_t len, const char *what);
void lp_gguf_free(lp_gguf *g);

const char *lp_gguf_path(const lp_gguf *g);
uint32_t lp_gguf_version(const lp_gguf *g);
int lp_gguf_kv_count(const lp_gguf *g);
const lp_gguf_kv *lp_gguf_kv_at(const lp_gguf *g, int i);
const lp_gguf_kv *lp_gguf_find_kv(const lp_gguf *g, const char *key); /* NULL if absent */
int lp_gguf_tensor_count(const lp_gguf *g);
const lp_gguf_tensor *lp_gguf_tensor_at(const lp_gguf *g, int i);
const lp_gguf_tensor *lp_gguf_find_tensor(const lp_gguf *g, const char *name); /* NULL if absent */

/* Typed reads of metadata. Each fails (LP_EFORMAT naming the file and key) when the key is
 * absent or of another type; integer reads accept any integer type whose value fits. */
int lp_gguf_get_uint(const lp_gguf *g, const char *key, uint64_t *out);
int lp_gguf_get_float(const lp_gguf *g, const char *key, double *out); /* F32 or F64 */
int lp_gguf_get_bool(const lp_gguf *g, const char *key, bool *out);
int lp_gguf_get_str(const lp_gguf *g, const char *key, const char **s, size_t *len);
/* Element i of a string array (i < kv->n): its bytes and length. */
void lp_gguf_str_at(const lp_gguf_kv *kv, uint64_t i, const char **s, size_t *len);
/* Element i of a numeric array as a double (integers, floats, bools). */
double lp_gguf_num_at(const lp_gguf_kv *kv, uint64_t i);

/* "F32", "Q4_K", ...; NULL for a type number loupe does not know. */
const char *lp_ggml_type_name(uint32_t type);
/* Whether loupe can dequantise the type to float32. */
bool lp_ggml_type_readable(uint32_t type);
/* Converts n values (a multiple of the type's block size) of a readable type to float32;
 * LP_EUNSUPPORTED for the others. src may be unaligned. */
int lp_ggml_dequantize(uint32_t type, const void *src, float *dst, size_t n);

#endif
