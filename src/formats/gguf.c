/* GGUF reader: the header, metadata and tensor infos of a mapped file, each length
 * checked against the bytes left before it is used (see include/loupe/gguf.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/gguf.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 64         /* the spec's bound on a tensor name */
#define GGUF_MAX_KEY 65535       /* and on a key */

struct lp_gguf {
    lp_mapping map;              /* owned when opened from a path */
    const unsigned char *base;
    size_t size;
    char *what;
    uint32_t version;
    int n_kv, n_tensors;
    lp_gguf_kv *kv;
    lp_gguf_tensor *tensors;
    int *kv_sorted, *tensor_sorted; /* indices sorted by key / name, for lookups */
};

/* A cursor over the file: every read checks the bytes left first. */
typedef struct {
    const unsigned char *p, *end;
    const char *what;
} reader;

static size_t left(const reader *r) { return (size_t)(r->end - r->p); }

static int need(reader *r, size_t n, const char *field) {
    if (n > left(r))
        return lp_error(LP_EFORMAT, "%s: file ends inside %s (%zu bytes needed, %zu left); truncated GGUF?", r->what,
                        field, n, left(r));
    return LP_OK;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static int read_u32(reader *r, const char *field, uint32_t *out) {
    int rc = need(r, 4, field);
    if (rc) return rc;
    *out = le32(r->p);
    r->p += 4;
    return LP_OK;
}

static int read_u64(reader *r, const char *field, uint64_t *out) {
    int rc = need(r, 8, field);
    if (rc) return rc;
    *out = le64(r->p);
    r->p += 8;
    return LP_OK;
}

/* A string: u64 length, bytes. */
static int read_str(reader *r, const char *field, const unsigned char **s, uint64_t *len) {
    int rc = read_u64(r, field, len);
    if (rc) return rc;
    if (*len > left(r))
        return lp_error(LP_EFORMAT, "%s: %s has length %llu but only %zu bytes are left; corrupt GGUF", r->what, field,
                        (unsigned long long)*len, left(r));
    *s = r->p;
    r->p += *len;
    return LP_OK;
}

static char *dup_str(const unsigned char *s, uint64_t len) {
    char *d = malloc((size_t)len + 1);
    if (d) {
        memcpy(d, s, (size_t)len);
        d[len] = '\0';
    }
    return d;
}

/* Bytes of a fixed-size value type; 0 for strings and arrays. */
static size_t scalar_size(lp_gguf_vtype t) {
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < sizeof sizes / sizeof *sizes ? sizes[t] : 0;
}

static const char *vtype_name(lp_gguf_vtype t) {
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                        "u64", "i64", "f64"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

static int check_bools(reader *r, const unsigned char *p, uint64_t n, const char *key) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return lp_error(LP_EFORMAT, "%s: key '%s' holds bool value %u; a GGUF bool is 0 or 1", r->what, key, p[i]);
    return LP_OK;
}

/* The value of kv (its key and type read), advancing r past it. */
static int read_value(reader *r, lp_gguf_kv *kv) {
    int rc;
    if (kv->type == LP_GGUF_STRING) {
        const unsigned char *s;
        if ((rc = read_str(r, "a string value", &s, &kv->n))) return rc;
        kv->data = s;
        return LP_OK;
    }
    if (kv->type != LP_GGUF_ARRAY) {
        size_t sz = scalar_size(kv->type);
        if (sz == 0)
            return lp_error(LP_EFORMAT, "%s: key '%s' has value type %u, which GGUF does not define", r->what, kv->key,
                            (unsigned)kv->type);
        if ((rc = need(r, sz, "a value"))) return rc;
        kv->data = r->p;
        r->p += sz;
        return kv->type == LP_GGUF_BOOL ? check_bools(r, kv->data, 1, kv->key) : LP_OK;
    }
    uint32_t elem;
    if ((rc = read_u32(r, "an array's element type", &elem)) || (rc = read_u64(r, "an array's length", &kv->n)))
        return rc;
    kv->elem = (lp_gguf_vtype)elem;
    kv->data = r->p;
    if (elem == LP_GGUF_ARRAY)
        return lp_error(LP_EUNSUPPORTED, "%s: key '%s' is an array of arrays; loupe reads arrays of scalars and strings",
                        r->what, kv->key);
    if (elem == LP_GGUF_STRING) {
        /* each element needs at least its 8-byte length: bounds the index below by the file size */
        if (kv->n > left(r) / 8)
            return lp_error(LP_EFORMAT, "%s: key '%s' claims %llu strings but only %zu bytes are left; corrupt GGUF",
                            r->what, kv->key, (unsigned long long)kv->n, left(r));
        uint64_t *at = malloc(kv->n ? (size_t)kv->n * sizeof *at : 1);
        if (!at) return lp_error(LP_ENOMEM, "%s: out of memory indexing '%s'", r->what, kv->key);
        kv->str_at = at;
        for (uint64_t i = 0; i < kv->n; i++) {
            const unsigned char *s;
            uint64_t len;
            at[i] = (uint64_t)(r->p - kv->data);
            if ((rc = read_str(r, "a string in an array", &s, &len))) return rc;
        }
        return LP_OK;
    }
    size_t sz = scalar_size(kv->type == LP_GGUF_ARRAY ? (lp_gguf_vtype)elem : kv->type);
    if (sz == 0)
        return lp_error(LP_EFORMAT, "%s: key '%s' is an array of value type %u, which GGUF does not define", r->what,
                        kv->key, elem);
    if (kv->n > left(r) / sz)
        return lp_error(LP_EFORMAT, "%s: key '%s' claims %llu values of %zu bytes but only %zu bytes are left; "
                        "corrupt GGUF", r->what, kv->key, (unsigned long long)kv->n, sz, left(r));
    r->p += (size_t)kv->n * sz;
    return elem == LP_GGUF_BOOL ? check_bools(r, kv->data, kv->n, kv->key) : LP_OK;
}

/* ggml types: name, values per block, bytes per block. */
static const struct {
    uint32_t type;
    const char *name;
    uint32_t block, bytes;
} TYPES[] = {
    {LP_GGML_F32, "F32", 1, 4},       {LP_GGML_F16, "F16", 1, 2},        {LP_GGML_Q4_0, "Q4_0", 32, 18},
    {LP_GGML_Q4_1, "Q4_1", 32, 20},   {LP_GGML_Q5_0, "Q5_0", 32, 22},    {LP_GGML_Q5_1, "Q5_1", 32, 24},
    {LP_GGML_Q8_0, "Q8_0", 32, 34},   {LP_GGML_Q8_1, "Q8_1", 32, 36},    {LP_GGML_Q2_K, "Q2_K", 256, 84},
    {LP_GGML_Q3_K, "Q3_K", 256, 110}, {LP_GGML_Q4_K, "Q4_K", 256, 144},  {LP_GGML_Q5_K, "Q5_K", 256, 176},
    {LP_GGML_Q6_K, "Q6_K", 256, 210}, {LP_GGML_Q8_K, "Q8_K", 256, 292},  {LP_GGML_I8, "I8", 1, 1},
    {LP_GGML_I16, "I16", 1, 2},       {LP_GGML_I32, "I32", 1, 4},        {LP_GGML_I64, "I64", 1, 8},
    {LP_GGML_F64, "F64", 1, 8},       {LP_GGML_BF16, "BF16", 1, 2},
};

static int type_index(uint32_t type) {
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (TYPES[i].type == type) return (int)i;
    return -1;
}

const char *lp_ggml_type_name(uint32_t type) {
    int i = type_index(type);
    return i < 0 ? NULL : TYPES[i].name;
}

/* One tensor info; its data pointer is set once the data section is known. */
static int read_tensor_info(reader *r, lp_gguf_tensor *t, uint64_t *offset) {
    const unsigned char *s;
    uint64_t len;
    uint32_t n_dims, type;
    int rc;
    if ((rc = read_str(r, "a tensor name", &s, &len))) return rc;
    if (len == 0 || len > GGUF_MAX_NAME || memchr(s, '\0', (size_t)len))
        return lp_error(LP_EFORMAT, "%s: a tensor name is empty, longer than %d bytes or holds a NUL byte; corrupt GGUF",
                        r->what, GGUF_MAX_NAME);
    if (!(t->name = dup_str(s, len))) return lp_error(LP_ENOMEM, "out of memory");
    if ((rc = read_u32(r, "a tensor's n_dims", &n_dims))) return rc;
    if (n_dims < 1 || n_dims > 4)
        return lp_error(LP_EFORMAT, "%s: tensor '%s' has %u dimensions; GGUF tensors have 1 to 4", r->what, t->name,
                        n_dims);
    t->n_dims = (int)n_dims;
    t->n_elem = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if ((rc = read_u64(r, "a tensor's dimensions", &t->ne[i]))) return rc;
        if (t->ne[i] < 1 || t->ne[i] > INT64_MAX / t->n_elem)
            return lp_error(LP_EFORMAT, "%s: tensor '%s' has dimension %u of size %llu; sizes must be at least 1 and "
                            "their product below 2^63", r->what, t->name, i, (unsigned long long)t->ne[i]);
        t->n_elem *= t->ne[i];
    }
    for (uint32_t i = n_dims; i < 4; i++) t->ne[i] = 1;
    if ((rc = read_u32(r, "a tensor's type", &type)) || (rc = read_u64(r, "a tensor's offset", offset))) return rc;
    int ti = type_index(type);
    if (ti < 0)
        return lp_error(LP_EUNSUPPORTED, "%s: tensor '%s' has ggml type %u, which loupe does not know (it reads F32, "
                        "F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K)", r->what, t->name, type);
    t->type = type;
    if (t->ne[0] % TYPES[ti].block)
        return lp_error(LP_EFORMAT, "%s: tensor '%s' (%s) has rows of %llu values, not a multiple of the type's block "
                        "of %u", r->what, t->name, TYPES[ti].name, (unsigned long long)t->ne[0], TYPES[ti].block);
    uint64_t blocks = t->n_elem / TYPES[ti].block;
    if (blocks > SIZE_MAX / TYPES[ti].bytes)
        return lp_error(LP_EFORMAT, "%s: tensor '%s' is too large", r->what, t->name);
    t->nbytes = (size_t)blocks * TYPES[ti].bytes;
    return LP_OK;
}

static int cmp_kv(const void *a, const void *b, void *ctx) {
    const lp_gguf *g = ctx;
    return strcmp(g->kv[*(const int *)a].key, g->kv[*(const int *)b].key);
}
static int cmp_tensor(const void *a, const void *b, void *ctx) {
    const lp_gguf *g = ctx;
    return strcmp(g->tensors[*(const int *)a].name, g->tensors[*(const int *)b].name);
}
static int cmp_offset(const void *a, const void *b, void *ctx) {
    const lp_gguf *g = ctx;
    const unsigned char *x = g->tensors[*(const int *)a].data, *y = g->tensors[*(const int *)b].data;
    return x < y ? -1 : x > y;
}

static int *sorted_indices(lp_gguf *g, int n, int (*cmp)(const void *, const void *, void *)) {
    int *ix = malloc((size_t)(n ? n : 1) * sizeof *ix);
    if (!ix) return NULL;
    for (int i = 0; i < n; i++) ix[i] = i;
    qsort_r(ix, (size_t)n, sizeof *ix, cmp, g);
    return ix;
}

/* Sorting by key and by name: refuses duplicates, and lookups bisect. */
static int index_names(lp_gguf *g) {
    if (!(g->kv_sorted = sorted_indices(g, g->n_kv, cmp_kv)) ||
        !(g->tensor_sorted = sorted_indices(g, g->n_tensors, cmp_tensor)))
        return lp_error(LP_ENOMEM, "out of memory");
    for (int i = 1; i < g->n_kv; i++)
        if (strcmp(g->kv[g->kv_sorted[i]].key, g->kv[g->kv_sorted[i - 1]].key) == 0)
            return lp_error(LP_EFORMAT, "%s: metadata key '%s' appears twice", g->what, g->kv[g->kv_sorted[i]].key);
    for (int i = 1; i < g->n_tensors; i++)
        if (strcmp(g->tensors[g->tensor_sorted[i]].name, g->tensors[g->tensor_sorted[i - 1]].name) == 0)
            return lp_error(LP_EFORMAT, "%s: tensor '%s' appears twice", g->what,
                            g->tensors[g->tensor_sorted[i]].name);
    return LP_OK;
}

static int read_alignment(lp_gguf *g, uint64_t *align) {
    *align = GGUF_DEFAULT_ALIGNMENT;
    const lp_gguf_kv *kv = lp_gguf_find_kv(g, "general.alignment");
    if (!kv) return LP_OK;
    if (kv->type != LP_GGUF_U32)
        return lp_error(LP_EFORMAT, "%s: general.alignment is a %s; GGUF stores it as a u32", g->what,
                        vtype_name(kv->type));
    *align = le32(kv->data);
    if (*align == 0 || (*align & (*align - 1)))
        return lp_error(LP_EFORMAT, "%s: general.alignment is %llu; it must be a power of two", g->what,
                        (unsigned long long)*align);
    return LP_OK;
}

static int parse(lp_gguf *g) {
    reader r = {g->base, g->base + g->size, g->what};
    uint32_t magic, version;
    uint64_t n_tensors, n_kv;
    int rc;
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0)
        return lp_error(LP_EFORMAT, "%s: not a GGUF file (it does not start with the bytes 'GGUF')", g->what);
    if ((rc = read_u32(&r, "the magic", &magic)) || (rc = read_u32(&r, "the version", &version))) return rc;
    if (version == 1)
        return lp_error(LP_EUNSUPPORTED, "%s: GGUF version 1 (32-bit counts) is not supported; convert the model again "
                        "with a current llama.cpp", g->what);
    if (version != 2 && version != 3)
        return lp_error(LP_EUNSUPPORTED, "%s: GGUF version %u%s; loupe reads little-endian versions 2 and 3", g->what,
                        version, (version & 0xffff) == 0 ? " (a big-endian file?)" : "");
    g->version = version;
    if ((rc = read_u64(&r, "the tensor count", &n_tensors)) || (rc = read_u64(&r, "the metadata count", &n_kv)))
        return rc;
    /* A key-value pair takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8. */
    if (n_kv > left(&r) / 14 || n_tensors > left(&r) / 33 || n_kv > INT_MAX || n_tensors > INT_MAX)
        return lp_error(LP_EFORMAT, "%s: the header claims %llu metadata pairs and %llu tensors, more than the %zu "
                        "bytes left can hold; truncated or corrupt GGUF", g->what, (unsigned long long)n_kv, (unsigned long long)n_tensors,
                        left(&r));
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    uint64_t *offsets = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *offsets);
    if (!g->kv || !g->tensors || !offsets) {
        free(offsets);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        lp_gguf_kv *kv = &g->kv[i];
        const unsigned char *s;
        uint64_t len;
        uint32_t type;
        if ((rc = read_str(&r, "a metadata key", &s, &len))) goto out;
        if (len == 0 || len > GGUF_MAX_KEY || memchr(s, '\0', (size_t)len)) {
            rc = lp_error(LP_EFORMAT, "%s: metadata key %llu is empty, longer than %d bytes or holds a NUL byte; "
                          "corrupt GGUF", g->what, (unsigned long long)i, GGUF_MAX_KEY);
            goto out;
        }
        if (!(kv->key = dup_str(s, len))) {
            rc = lp_error(LP_ENOMEM, "out of memory");
            goto out;
        }
        g->n_kv++;
        if ((rc = read_u32(&r, "a value type", &type))) goto out;
        kv->type = (lp_gguf_vtype)type;
        if ((rc = read_value(&r, kv))) goto out;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors++;
        if ((rc = read_tensor_info(&r, &g->tensors[i], &offsets[i]))) goto out;
    }
    if ((rc = index_names(g))) goto out;
    uint64_t align;
    if ((rc = read_alignment(g, &align))) goto out;
    size_t pos = (size_t)(r.p - g->base);
    size_t data_start = pos + (size_t)((align - pos % align) % align);
    if (n_tensors && data_start > g->size) {
        rc = lp_error(LP_EFORMAT, "%s: file ends before its data section (at byte %zu); truncated GGUF?", g->what,
                      data_start);
        goto out;
    }
    size_t data_size = n_tensors ? g->size - data_start : 0;
    for (int i = 0; i < g->n_tensors; i++) {
        lp_gguf_tensor *t = &g->tensors[i];
        if (offsets[i] % align || offsets[i] > data_size || t->nbytes > data_size - offsets[i]) {
            rc = lp_error(LP_EFORMAT, "%s: tensor '%s' at offset %llu (%zu bytes) is %s the data section of %zu bytes",
                          g->what, t->name, (unsigned long long)offsets[i], t->nbytes,
                          offsets[i] % align ? "not aligned to general.alignment in" : "outside", data_size);
            goto out;
        }
        t->data = g->base + data_start + offsets[i];
    }
    int *by_offset = sorted_indices(g, g->n_tensors, cmp_offset);
    if (!by_offset) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 1; i < g->n_tensors && rc == LP_OK; i++) {
        const lp_gguf_tensor *a = &g->tensors[by_offset[i - 1]], *b = &g->tensors[by_offset[i]];
        if (a->data + a->nbytes > b->data)
            rc = lp_error(LP_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data section; corrupt GGUF", g->what,
                          a->name, b->name);
    }
    free(by_offset);
out:
    free(offsets);
    return rc;
}

int lp_gguf_parse(lp_gguf **out, const void *buf, size_t len, const char *what) {
    *out = NULL;
    lp_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->what = strdup(what))) {
        free(g);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    g->base = buf;
    g->size = len;
    int rc = parse(g);
    if (rc) {
        lp_gguf_free(g);
        return rc;
    }
    *out = g;
    return LP_OK;
}

int lp_gguf_open(lp_gguf **out, const char *path) {
    *out = NULL;
    lp_mapping map;
    int rc = lp_file_map(&map, path);
    if (rc) return rc;
    if ((rc = lp_gguf_parse(out, map.data, map.size, path))) {
        lp_file_unmap(&map);
        return rc;
    }
    (*out)->map = map;
    return LP_OK;
}

void lp_gguf_free(lp_gguf *g) {
    if (!g) return;
    for (int i = 0; i < g->n_kv; i++) {
        free((char *)g->kv[i].key);
        free((uint64_t *)g->kv[i].str_at);
    }
    for (int i = 0; i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->kv_sorted);
    free(g->tensor_sorted);
    free(g->what);
    lp_file_unmap(&g->map);
    free(g);
}

const char *lp_gguf_path(const lp_gguf *g) { return g->what; }
uint32_t lp_gguf_version(const lp_gguf *g) { return g->version; }
int lp_gguf_kv_count(const lp_gguf *g) { return g->n_kv; }
const lp_gguf_kv *lp_gguf_kv_at(const lp_gguf *g, int i) { return &g->kv[i]; }
int lp_gguf_tensor_count(const lp_gguf *g) { return g->n_tensors; }
const lp_gguf_tensor *lp_gguf_tensor_at(const lp_gguf *g, int i) { return &g->tensors[i]; }

static const char *kv_key(const lp_gguf *g, int i) { return g->kv[i].key; }
static const char *tensor_name(const lp_gguf *g, int i) { return g->tensors[i].name; }

/* The index whose name is want, by bisection over sorted (NULL before parsing ended); -1 if none. */
static int bisect(const lp_gguf *g, const int *sorted, int n, const char *(*name_of)(const lp_gguf *, int),
                  const char *want) {
    int lo = 0, hi = sorted ? n : 0;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(want, name_of(g, sorted[mid]));
        if (c == 0) return sorted[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return -1;
}

const lp_gguf_kv *lp_gguf_find_kv(const lp_gguf *g, const char *key) {
    int i = bisect(g, g->kv_sorted, g->n_kv, kv_key, key);
    return i < 0 ? NULL : &g->kv[i];
}

const lp_gguf_tensor *lp_gguf_find_tensor(const lp_gguf *g, const char *name) {
    int i = bisect(g, g->tensor_sorted, g->n_tensors, tensor_name, name);
    return i < 0 ? NULL : &g->tensors[i];
}

static const lp_gguf_kv *need_kv(const lp_gguf *g, const char *key, int *rc) {
    const lp_gguf_kv *kv = lp_gguf_find_kv(g, key);
    *rc = kv ? LP_OK : lp_error(LP_EFORMAT, "%s: metadata key '%s' is missing; the model needs it", g->what, key);
    return kv;
}

static int wrong_type(const lp_gguf *g, const lp_gguf_kv *kv, const char *want) {
    return lp_error(LP_EFORMAT, "%s: metadata key '%s' is a%s %s; it should be %s", g->what, kv->key,
                    kv->type == LP_GGUF_ARRAY || kv->type == LP_GGUF_I8 ? "n" : "", vtype_name(kv->type), want);
}

int lp_gguf_get_uint(const lp_gguf *g, const char *key, uint64_t *out) {
    int rc;
    const lp_gguf_kv *kv = need_kv(g, key, &rc);
    if (!kv) return rc;
    const unsigned char *p = kv->data;
    int64_t s;
    switch (kv->type) {
    case LP_GGUF_U8: *out = p[0]; return LP_OK;
    case LP_GGUF_U16: *out = (uint64_t)p[0] | (uint64_t)p[1] << 8; return LP_OK;
    case LP_GGUF_U32: *out = le32(p); return LP_OK;
    case LP_GGUF_U64: *out = le64(p); return LP_OK;
    case LP_GGUF_I8: s = (int8_t)p[0]; break;
    case LP_GGUF_I16: s = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case LP_GGUF_I32: s = (int32_t)le32(p); break;
    case LP_GGUF_I64: s = (int64_t)le64(p); break;
    default: return wrong_type(g, kv, "an integer");
    }
    if (s < 0)
        return lp_error(LP_EFORMAT, "%s: metadata key '%s' is %lld; it must not be negative", g->what, key, (long long)s);
    *out = (uint64_t)s;
    return LP_OK;
}

int lp_gguf_get_float(const lp_gguf *g, const char *key, double *out) {
    int rc;
    const lp_gguf_kv *kv = need_kv(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != LP_GGUF_F32 && kv->type != LP_GGUF_F64) return wrong_type(g, kv, "a float");
    *out = lp_gguf_num_at(&(lp_gguf_kv){.elem = kv->type, .data = kv->data}, 0);
    return LP_OK;
}

int lp_gguf_get_bool(const lp_gguf *g, const char *key, bool *out) {
    int rc;
    const lp_gguf_kv *kv = need_kv(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != LP_GGUF_BOOL) return wrong_type(g, kv, "a bool");
    *out = kv->data[0] != 0;
    return LP_OK;
}

int lp_gguf_get_str(const lp_gguf *g, const char *key, const char **s, size_t *len) {
    int rc;
    const lp_gguf_kv *kv = need_kv(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != LP_GGUF_STRING) return wrong_type(g, kv, "a string");
    *s = (const char *)kv->data;
    *len = (size_t)kv->n;
    return LP_OK;
}

void lp_gguf_str_at(const lp_gguf_kv *kv, uint64_t i, const char **s, size_t *len) {
    const unsigned char *p = kv->data + kv->str_at[i];
    *len = (size_t)le64(p);
    *s = (const char *)p + 8;
}

double lp_gguf_num_at(const lp_gguf_kv *kv, uint64_t i) {
    size_t sz = scalar_size(kv->elem);
    const unsigned char *p = kv->data + i * sz;
    float f;
    double d;
    switch (kv->elem) {
    case LP_GGUF_U8: case LP_GGUF_BOOL: return p[0];
    case LP_GGUF_I8: return (int8_t)p[0];
    case LP_GGUF_U16: return (uint16_t)(p[0] | p[1] << 8);
    case LP_GGUF_I16: return (int16_t)(uint16_t)(p[0] | p[1] << 8);
    case LP_GGUF_U32: return le32(p);
    case LP_GGUF_I32: return (int32_t)le32(p);
    case LP_GGUF_U64: return (double)le64(p);
    case LP_GGUF_I64: return (double)(int64_t)le64(p);
    case LP_GGUF_F32: {
        uint32_t u = le32(p);
        memcpy(&f, &u, 4);
        return f;
    }
    case LP_GGUF_F64: {
        uint64_t u = le64(p);
        memcpy(&d, &u, 8);
        return d;
    }
    default: return 0;
    }
}
