#include "loupe/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loupe/error.h"
#include "loupe/fileio.h"

/* The reference implementation refuses headers above 100 MB; so do we, before parsing. */
#define MAX_HEADER_BYTES 100000000u
#define PATH_CAP 4096

typedef struct {
    char *path;
    lp_mapping map; /* empty when the buffer is borrowed (lp_st_parse) */
} st_file;

typedef struct {
    const char *name;
    int index;
} name_ref;

struct lp_safetensors {
    lp_st_tensor *tensors; /* name and dtype_name share one allocation, owned here */
    int *file_of;          /* tensors[i] came from files[file_of[i]] */
    int n, cap;
    st_file *files;
    int nfiles;
    name_ref *by_name; /* sorted by name, for lp_st_find */
};

void lp_st_free(lp_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free((char *)st->tensors[i].name);
    for (int i = 0; i < st->nfiles; i++) {
        free(st->files[i].path);
        lp_file_unmap(&st->files[i].map);
    }
    free(st->tensors);
    free(st->file_of);
    free(st->files);
    free(st->by_name);
    free(st);
}

static int st_new(lp_safetensors **out) {
    *out = calloc(1, sizeof **out);
    return *out ? LP_OK : lp_error(LP_ENOMEM, "out of memory");
}

/* Adds a file record; on success the record owns map (and *map is zeroed). */
static int add_file(lp_safetensors *st, const char *path, lp_mapping *map, int *index) {
    st_file *f = realloc(st->files, (size_t)(st->nfiles + 1) * sizeof *f);
    if (!f) return lp_error(LP_ENOMEM, "%s: out of memory", path);
    st->files = f;
    char *p = strdup(path);
    if (!p) return lp_error(LP_ENOMEM, "%s: out of memory", path);
    f[st->nfiles].path = p;
    f[st->nfiles].map = map ? *map : (lp_mapping){0};
    if (map) *map = (lp_mapping){0};
    *index = st->nfiles++;
    return LP_OK;
}

static lp_st_tensor *add_tensor(lp_safetensors *st, const char *name, const char *dtype_name,
                                int file) {
    if (st->n == st->cap) {
        int cap = st->cap ? st->cap * 2 : 64;
        lp_st_tensor *t = realloc(st->tensors, (size_t)cap * sizeof *t);
        if (!t) return NULL;
        st->tensors = t;
        int *fo = realloc(st->file_of, (size_t)cap * sizeof *fo);
        if (!fo) return NULL;
        st->file_of = fo;
        st->cap = cap;
    }
    size_t nl = strlen(name), dl = strlen(dtype_name);
    char *s = malloc(nl + dl + 2);
    if (!s) return NULL;
    memcpy(s, name, nl + 1);
    memcpy(s + nl + 1, dtype_name, dl + 1);
    lp_st_tensor *t = &st->tensors[st->n];
    memset(t, 0, sizeof *t);
    t->name = s;
    t->dtype_name = s + nl + 1;
    t->dtype = lp_dtype_from_name(dtype_name);
    st->file_of[st->n] = file;
    st->n++;
    return t;
}

/* "[10, 20]" into buf, for messages. */
static const char *fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static bool as_count(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

typedef struct {
    uint64_t begin, end;
    int tensor;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Validates one header entry and appends it as a tensor of file `file`. */
static int parse_entry(lp_safetensors *st, const char *what, const char *name, json_t *e,
                       const unsigned char *data, uint64_t dsize, int file, span *sp) {
    if (!json_is_object(e))
        return lp_error(LP_EFORMAT, "%s: tensor '%s': entry is not a JSON object", what, name);
    json_t *jd = json_object_get(e, "dtype");
    json_t *js = json_object_get(e, "shape");
    json_t *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd))
        return lp_error(LP_EFORMAT, "%s: tensor '%s': missing string \"dtype\"", what, name);
    if (!json_is_array(js))
        return lp_error(LP_EFORMAT, "%s: tensor '%s': missing list \"shape\"", what, name);
    if (!json_is_array(jo))
        return lp_error(LP_EFORMAT, "%s: tensor '%s': missing list \"data_offsets\"", what, name);

    size_t ndim = json_array_size(js);
    if (ndim > LP_ST_MAX_DIMS)
        return lp_error(LP_EFORMAT, "%s: tensor '%s': %zu dimensions, more than the %d loupe handles",
                        what, name, ndim, LP_ST_MAX_DIMS);
    int64_t shape[LP_ST_MAX_DIMS];
    uint64_t count = 1, nonzero = 1;
    bool overflow = false;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t d;
        if (!as_count(json_array_get(js, i), &d))
            return lp_error(LP_EFORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                            what, name, i);
        shape[i] = (int64_t)d;
        count *= d;
        overflow |= __builtin_mul_overflow(nonzero, d ? d : 1, &nonzero);
    }
    /* Even with a zero dimension, the other dimensions' product must fit an int64, so that
     * callers multiplying a shape in any order cannot overflow. */
    char sbuf[256];
    if (overflow || nonzero > (uint64_t)INT64_MAX)
        return lp_error(LP_EFORMAT, "%s: tensor '%s': shape %s: the product of its dimensions overflows 63 bits",
                        what, name, fmt_shape(sbuf, sizeof sbuf, shape, (int)ndim));
    uint64_t begin, end;
    if (json_array_size(jo) != 2 || !as_count(json_array_get(jo, 0), &begin) ||
        !as_count(json_array_get(jo, 1), &end))
        return lp_error(LP_EFORMAT,
                        "%s: tensor '%s': data_offsets is not two non-negative integers [BEGIN, END]",
                        what, name);
    if (begin > end || end > dsize)
        return lp_error(LP_EFORMAT,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] lie outside the %" PRIu64 "-byte data region",
                        what, name, begin, end, dsize);

    const char *dtype_name = json_string_value(jd);
    lp_dtype dt = lp_dtype_from_name(dtype_name);
    if (dt != LP_DT_UNKNOWN) {
        uint64_t need;
        if (__builtin_mul_overflow(count, (uint64_t)lp_dtype_size(dt), &need))
            return lp_error(LP_EFORMAT, "%s: tensor '%s': shape %s of %s is too large", what, name,
                            fmt_shape(sbuf, sizeof sbuf, shape, (int)ndim), dtype_name);
        if (end - begin != need)
            return lp_error(LP_EFORMAT,
                            "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                            " bytes but shape %s of %s needs %" PRIu64,
                            what, name, begin, end, end - begin,
                            fmt_shape(sbuf, sizeof sbuf, shape, (int)ndim), dtype_name, need);
    }

    lp_st_tensor *t = add_tensor(st, name, dtype_name, file);
    if (!t) return lp_error(LP_ENOMEM, "%s: out of memory", what);
    t->ndim = (int)ndim;
    memcpy(t->shape, shape, ndim * sizeof shape[0]);
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    *sp = (span){begin, end, st->n - 1};
    return LP_OK;
}

/* Parses the whole file buf[0..len) and appends its tensors, tagged with file index `file`. */
static int parse_file(lp_safetensors *st, const unsigned char *buf, size_t len, const char *what,
                      int file) {
    if (len < 8)
        return lp_error(LP_EFORMAT, "%s: %zu bytes is too short for a safetensors file "
                        "(it starts with an 8-byte header length)", what, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    if (hlen > len - 8)
        return lp_error(LP_EFORMAT, "%s: header length %" PRIu64 " runs past the end of the file "
                        "(%zu bytes); the file is truncated or not safetensors", what, hlen, len);
    if (hlen > MAX_HEADER_BYTES)
        return lp_error(LP_EFORMAT, "%s: header length %" PRIu64 " is implausibly large", what, hlen);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return lp_error(LP_EFORMAT, "%s: header is not valid JSON: %s (header byte %d)", what,
                        jerr.text, jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return lp_error(LP_EFORMAT, "%s: header is not a JSON object", what);
    }

    const unsigned char *data = buf + 8 + hlen;
    uint64_t dsize = len - 8 - hlen;
    size_t nent = json_object_size(root);
    span *spans = malloc((nent ? nent : 1) * sizeof *spans);
    if (!spans) {
        json_decref(root);
        return lp_error(LP_ENOMEM, "%s: out of memory", what);
    }
    size_t ns = 0;
    int rc = LP_OK;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        /* __metadata__ should be {str: str}; nothing here depends on it, so any shape is let by. */
        if (strcmp(key, "__metadata__") == 0) continue;
        rc = parse_entry(st, what, key, value, data, dsize, file, &spans[ns]);
        if (rc != LP_OK) break;
        ns++;
    }
    if (rc == LP_OK) {
        /* Empty tensors touch no bytes, so they cannot overlap anything. */
        size_t k = 0;
        for (size_t i = 0; i < ns; i++)
            if (spans[i].end > spans[i].begin) spans[k++] = spans[i];
        qsort(spans, k, sizeof *spans, span_cmp);
        for (size_t i = 1; i < k; i++) {
            if (spans[i].begin < spans[i - 1].end) {
                const span *a = &spans[i - 1], *b = &spans[i];
                rc = lp_error(LP_EFORMAT,
                              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                              "] overlap tensor '%s' at [%" PRIu64 ", %" PRIu64 "]",
                              what, st->tensors[b->tensor].name, b->begin, b->end,
                              st->tensors[a->tensor].name, a->begin, a->end);
                break;
            }
        }
    }
    free(spans);
    json_decref(root);
    return rc;
}

static int by_name_cmp(const void *a, const void *b) {
    return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

/* Sorts names for lookup; duplicates (possible only across shards) are an error. */
static int build_index(lp_safetensors *st) {
    st->by_name = malloc((size_t)(st->n ? st->n : 1) * sizeof *st->by_name);
    if (!st->by_name) return lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; i < st->n; i++) st->by_name[i] = (name_ref){st->tensors[i].name, i};
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, by_name_cmp);
    for (int i = 1; i < st->n; i++) {
        const name_ref *x = &st->by_name[i - 1], *y = &st->by_name[i];
        if (strcmp(x->name, y->name) == 0)
            return lp_error(LP_EFORMAT, "tensor '%s' appears in both %s and %s", x->name,
                            st->files[st->file_of[x->index]].path, st->files[st->file_of[y->index]].path);
    }
    return LP_OK;
}

int lp_st_parse(lp_safetensors **out, const void *buf, size_t len, const char *what) {
    *out = NULL;
    if (!what) what = "buffer";
    lp_safetensors *st;
    int rc = st_new(&st), file;
    if (rc == LP_OK) rc = add_file(st, what, NULL, &file);
    if (rc == LP_OK) rc = parse_file(st, buf, len, what, file);
    if (rc == LP_OK) rc = build_index(st);
    if (rc != LP_OK) {
        lp_st_free(st);
        return rc;
    }
    *out = st;
    return LP_OK;
}

static int open_one(lp_safetensors *st, const char *path) {
    lp_mapping map;
    int rc = lp_file_map(&map, path);
    if (rc != LP_OK) return rc;
    /* Huge pages for the weights where the kernel can (a hint; refused, nothing changes): a
     * file read through this mapping is then read ahead into 2 MB folios, each mapped by one
     * page-table entry. OpenBLAS packs a weight matrix walking down its rows, a page apart;
     * with 4 KB pages the page walks took about a fifth of a forward's products (one thread's
     * CPU time at T=128 on GPT-2 small: 256-266 ms fully 2 MB-mapped, 311-375 ms mixed). */
    if (map.size >= ((size_t)2 << 20)) (void)madvise((void *)map.data, map.size, MADV_HUGEPAGE);
    int file;
    rc = add_file(st, path, &map, &file);
    if (rc != LP_OK) {
        lp_file_unmap(&map);
        return rc;
    }
    return parse_file(st, st->files[file].map.data, st->files[file].map.size, path, file);
}

/* Shard names come from the checkpoint: keep them inside the index's directory. */
static bool shard_name_ok(const char *s) {
    if (!*s || *s == '/') return false;
    for (const char *p = s; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return false;
        p += n + (slash != NULL);
    }
    return true;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int open_index(lp_safetensors *st, const char *path) {
    json_t *root;
    int rc = lp_json_load_file(path, LP_JSON_MAX_INDEX, JSON_REJECT_DUPLICATES, &root);
    if (rc != LP_OK) return rc;
    json_t *wm = json_object_get(root, "weight_map");
    const char **shards = NULL;
    char dir[PATH_CAP], shard_path[PATH_CAP];
    if (!json_is_object(root) || !json_is_object(wm)) {
        rc = lp_error(LP_EFORMAT, "%s: no \"weight_map\" object; not a safetensors index", path);
        goto done;
    }
    size_t nmap = json_object_size(wm), nshards = 0;
    shards = malloc((nmap ? nmap : 1) * sizeof *shards);
    if (!shards) {
        rc = lp_error(LP_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(wm, key, value) {
        if (!json_is_string(value) || !shard_name_ok(json_string_value(value))) {
            rc = lp_error(LP_EFORMAT,
                          "%s: weight_map entry for tensor '%s' is not a shard file name in this directory",
                          path, key);
            goto done;
        }
        shards[nshards++] = json_string_value(value);
    }
    qsort(shards, nshards, sizeof *shards, str_cmp);
    if ((rc = lp_path_dirname(dir, sizeof dir, path)) != LP_OK) goto done;
    for (size_t i = 0; i < nshards; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0) continue;
        if ((rc = lp_path_join(shard_path, sizeof shard_path, dir, shards[i])) != LP_OK) goto done;
        if (!lp_file_exists(shard_path)) {
            rc = lp_error(LP_EFORMAT, "%s: weight_map names shard %s, but %s does not exist", path,
                          shards[i], shard_path);
            goto done;
        }
        if ((rc = open_one(st, shard_path)) != LP_OK) goto done;
    }
    if ((rc = build_index(st)) != LP_OK) goto done;
    json_object_foreach(wm, key, value) {
        if ((rc = lp_path_join(shard_path, sizeof shard_path, dir, json_string_value(value))) != LP_OK)
            break;
        const lp_st_tensor *t = lp_st_find(st, key);
        if (!t)
            rc = lp_error(LP_EFORMAT, "%s: weight_map puts tensor '%s' in %s, but that shard has no such tensor",
                          path, key, shard_path);
        else if (strcmp(lp_st_path(st, t), shard_path) != 0)
            rc = lp_error(LP_EFORMAT, "%s: weight_map puts tensor '%s' in %s, but it is in %s", path,
                          key, shard_path, lp_st_path(st, t));
        if (rc != LP_OK) break;
    }
done:
    free(shards);
    json_decref(root);
    return rc;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int lp_st_open(lp_safetensors **out, const char *path) {
    *out = NULL;
    lp_safetensors *st;
    int rc = st_new(&st);
    if (rc != LP_OK) return rc;
    if (ends_with(path, ".json")) {
        rc = open_index(st, path);
    } else {
        rc = open_one(st, path);
        if (rc == LP_OK) rc = build_index(st);
    }
    if (rc != LP_OK) {
        lp_st_free(st);
        return rc;
    }
    *out = st;
    return LP_OK;
}

int lp_st_count(const lp_safetensors *st) { return st ? st->n : 0; }

const lp_st_tensor *lp_st_at(const lp_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const lp_st_tensor *lp_st_find(const lp_safetensors *st, const char *name) {
    if (!st || !name || !st->by_name) return NULL;
    int lo = 0, hi = st->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->by_name[mid].name);
        if (c == 0) return &st->tensors[st->by_name[mid].index];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *lp_st_path(const lp_safetensors *st, const lp_st_tensor *t) {
    if (!st || !t || st->n == 0) return NULL;
    uintptr_t p = (uintptr_t)t, base = (uintptr_t)st->tensors;
    if (p < base || p >= base + (uintptr_t)st->n * sizeof *t) return NULL;
    return st->files[st->file_of[t - st->tensors]].path;
}

/* ---- writing ---- */

static int check_tensor(const char *path, const lp_st_tensor *t) {
    if (!t->name || strcmp(t->name, "__metadata__") == 0)
        return lp_error(LP_EINVAL, "%s: a tensor has no name or is named __metadata__", path);
    const char *dn = t->dtype != LP_DT_UNKNOWN ? lp_dtype_name(t->dtype) : t->dtype_name;
    if (!dn || !*dn)
        return lp_error(LP_EINVAL, "%s: tensor '%s': unknown dtype and no dtype_name", path, t->name);
    lp_dtype dt = lp_dtype_from_name(dn);
    if (t->ndim < 0 || t->ndim > LP_ST_MAX_DIMS)
        return lp_error(LP_EINVAL, "%s: tensor '%s': %d dimensions", path, t->name, t->ndim);
    if (t->nbytes > 0 && !t->data)
        return lp_error(LP_EINVAL, "%s: tensor '%s': no data", path, t->name);
    uint64_t count = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0 || __builtin_mul_overflow(count, (uint64_t)t->shape[i], &count))
            return lp_error(LP_EINVAL, "%s: tensor '%s': bad shape", path, t->name);
    }
    if (dt != LP_DT_UNKNOWN) {
        uint64_t need;
        if (__builtin_mul_overflow(count, (uint64_t)lp_dtype_size(dt), &need) ||
            need != t->nbytes) {
            char sbuf[256];
            return lp_error(LP_EINVAL, "%s: tensor '%s': %zu bytes given but shape %s of %s needs %" PRIu64,
                            path, t->name, t->nbytes, fmt_shape(sbuf, sizeof sbuf, t->shape, t->ndim),
                            dn, need);
        }
    }
    return LP_OK;
}

static json_t *json_i64(uint64_t v) { return json_integer((json_int_t)v); }

/* Builds the header text; *out is freed with free(). */
static int build_header(const char *path, const lp_st_tensor *tensors, int n,
                        const char *const *meta_keys, const char *const *meta_values, int n_meta,
                        char **out) {
    int rc = LP_OK;
    json_t *root = json_object();
    if (!root) return lp_error(LP_ENOMEM, "%s: out of memory", path);
    bool nomem = false;
    if (n_meta > 0) {
        json_t *meta = json_object();
        for (int i = 0; meta && i < n_meta; i++) {
            if (!meta_keys[i] || !meta_values[i]) {
                json_decref(meta);
                json_decref(root);
                return lp_error(LP_EINVAL, "%s: metadata entry %d is NULL", path, i);
            }
            nomem |= json_object_set_new(meta, meta_keys[i], json_string(meta_values[i])) != 0;
        }
        nomem |= json_object_set_new(root, "__metadata__", meta) != 0;
    }
    uint64_t offset = 0;
    for (int i = 0; i < n && rc == LP_OK; i++) {
        const lp_st_tensor *t = &tensors[i];
        if ((rc = check_tensor(path, t)) != LP_OK) break;
        if (json_object_get(root, t->name)) {
            rc = lp_error(LP_EINVAL, "%s: tensor '%s' given twice", path, t->name);
            break;
        }
        if (offset + t->nbytes > (uint64_t)INT64_MAX) {
            rc = lp_error(LP_EINVAL, "%s: tensors total more than 2^63 bytes", path);
            break;
        }
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        for (int d = 0; shape && d < t->ndim; d++)
            nomem |= json_array_append_new(shape, json_i64((uint64_t)t->shape[d])) != 0;
        if (offs) {
            nomem |= json_array_append_new(offs, json_i64(offset)) != 0;
            nomem |= json_array_append_new(offs, json_i64(offset + t->nbytes)) != 0;
        }
        const char *dn = t->dtype != LP_DT_UNKNOWN ? lp_dtype_name(t->dtype) : t->dtype_name;
        if (e) {
            nomem |= json_object_set_new(e, "dtype", json_string(dn)) != 0;
            nomem |= json_object_set_new(e, "shape", shape) != 0;
            nomem |= json_object_set_new(e, "data_offsets", offs) != 0;
        } else {
            json_decref(shape);
            json_decref(offs);
        }
        nomem |= json_object_set_new(root, t->name, e) != 0;
        offset += t->nbytes;
    }
    if (rc == LP_OK && nomem) rc = lp_error(LP_ENOMEM, "%s: out of memory (or a name is not UTF-8)", path);
    if (rc == LP_OK) {
        *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!*out) rc = lp_error(LP_ENOMEM, "%s: out of memory", path);
    }
    json_decref(root);
    return rc;
}

int lp_st_write(const char *path, const lp_st_tensor *tensors, int n,
                const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    if (n < 0 || n_meta < 0 || (n > 0 && !tensors) || (n_meta > 0 && (!meta_keys || !meta_values)))
        return lp_error(LP_EINVAL, "%s: bad arguments to lp_st_write", path);
    char *header = NULL;
    int rc = build_header(path, tensors, n, meta_keys, meta_values, n_meta, &header);
    if (rc != LP_OK) return rc;

    /* Pad with spaces (still valid JSON) so the data region starts 8-byte aligned. */
    size_t hlen = strlen(header);
    size_t padded = (hlen + 7) & ~(size_t)7;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));

    lp_file_tmp w;
    if ((rc = lp_file_begin(&w, path))) {
        free(header);
        return rc;
    }
    FILE *f = w.f;
    /* Streamed, not assembled in memory: checkpoints run to gigabytes. */
    fwrite(lenbuf, 1, 8, f);
    fwrite(header, 1, hlen, f);
    fwrite("        ", 1, padded - hlen, f);
    free(header);
    for (int i = 0; i < n && !ferror(f); i++)
        if (tensors[i].nbytes > 0) fwrite(tensors[i].data, 1, tensors[i].nbytes, f);
    return lp_file_commit(&w); /* a failed write (ferror) leaves any old file in place */
}
