/* .npz archives through libzip (see npz.h). */
#include "loupe/npz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "loupe/error.h"

typedef struct {
    char *name;          /* without .npy */
    unsigned char *data; /* the member, inflated */
    lp_npy_array arr;    /* points into data */
} member;

struct lp_npz {
    member *m;
    int n;
};

void lp_npz_free(lp_npz *z) {
    if (!z) return;
    for (int i = 0; i < z->n; i++) free(z->m[i].name), free(z->m[i].data);
    free(z->m);
    free(z);
}

int lp_npz_count(const lp_npz *z) { return z->n; }
const char *lp_npz_name(const lp_npz *z, int i) { return z->m[i].name; }
const lp_npy_array *lp_npz_at(const lp_npz *z, int i) { return &z->m[i].arr; }

const lp_npy_array *lp_npz_find(const lp_npz *z, const char *name) {
    for (int i = 0; i < z->n; i++)
        if (strcmp(z->m[i].name, name) == 0) return &z->m[i].arr;
    return NULL;
}

/* Reads member i of za into *m; total is the archive's size, which bounds a stored member. */
static int read_member(zip_t *za, zip_uint64_t i, const char *what, uint64_t total, member *m) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za, i, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE) || !(st.valid & ZIP_STAT_COMP_SIZE))
        return lp_error(LP_EFORMAT, "%s: member %llu of the archive cannot be read: %s", what, (unsigned long long)i,
                        zip_strerror(za));
    /* deflate cannot expand more than ~1032 to 1: a larger claim is a lie. */
    uint64_t bound = st.comp_size > (LP_NPZ_MAX_MEMBER / 1100) ? LP_NPZ_MAX_MEMBER : st.comp_size * 1100 + 1024;
    if (st.size > bound || st.comp_size > total)
        return lp_error(LP_EFORMAT, "%s: member %s claims %llu bytes from %llu compressed: not a real archive", what,
                        st.name, (unsigned long long)st.size, (unsigned long long)st.comp_size);
    size_t nl = strlen(st.name);
    m->name = malloc(nl - 3);
    m->data = malloc(st.size ? (size_t)st.size : 1);
    if (!m->name || !m->data) return lp_error(LP_ENOMEM, "%s: out of memory reading %s", what, st.name);
    memcpy(m->name, st.name, nl - 4);
    m->name[nl - 4] = '\0';
    zip_file_t *f = zip_fopen_index(za, i, 0);
    if (!f) return lp_error(LP_EFORMAT, "%s: cannot open member %s: %s", what, st.name, zip_strerror(za));
    zip_int64_t got = zip_fread(f, m->data, st.size);
    int bad = got < 0 || (zip_uint64_t)got != st.size;
    char msg[256];
    if (bad) snprintf(msg, sizeof msg, "%s", zip_file_strerror(f));
    zip_fclose(f);
    if (bad)
        return lp_error(LP_EFORMAT, "%s: member %s is damaged (read %lld of %llu bytes: %s)", what, st.name,
                        (long long)got, (unsigned long long)st.size, msg);
    char where[512];
    snprintf(where, sizeof where, "%s: %s", what, st.name);
    return lp_npy_parse(&m->arr, m->data, (size_t)st.size, where);
}

static int read_archive(lp_npz **out, zip_t *za, const char *what, uint64_t total) {
    *out = NULL;
    lp_npz *z = calloc(1, sizeof *z);
    zip_int64_t n = zip_get_num_entries(za, 0);
    int rc = LP_OK;
    if (!z) rc = lp_error(LP_ENOMEM, "out of memory");
    /* an entry takes at least a 46-byte central directory record */
    else if (n < 0 || (uint64_t)n > total / 46 + 1)
        rc = lp_error(LP_EFORMAT, "%s: the archive's entry count %lld is impossible", what, (long long)n);
    else if (n && !(z->m = calloc((size_t)n, sizeof *z->m)))
        rc = lp_error(LP_ENOMEM, "out of memory");
    for (zip_int64_t i = 0; !rc && i < n; i++) {
        const char *name = zip_get_name(za, (zip_uint64_t)i, 0);
        size_t nl = name ? strlen(name) : 0;
        if (nl <= 4 || strcmp(name + nl - 4, ".npy") != 0) continue;
        for (int k = 0; k < z->n; k++)
            if (strncmp(z->m[k].name, name, nl - 4) == 0 && !z->m[k].name[nl - 4])
                rc = lp_error(LP_EFORMAT, "%s: two members are named %s", what, name);
        if (!rc) rc = read_member(za, (zip_uint64_t)i, what, total, &z->m[z->n++]);
    }
    zip_discard(za);
    if (rc) {
        lp_npz_free(z);
        return rc;
    }
    *out = z;
    return LP_OK;
}

int lp_npz_open(lp_npz **out, const char *path) {
    *out = NULL;
    int err = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY, &err);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        int rc = lp_error(err == ZIP_ER_NOENT || err == ZIP_ER_OPEN ? LP_EIO : LP_EFORMAT, "%s: %s (an .npz is a zip "
                          "of .npy arrays, as np.savez writes)", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return rc;
    }
    FILE *f = fopen(path, "rb");
    uint64_t total = 0;
    if (f && fseek(f, 0, SEEK_END) == 0) {
        long t = ftell(f);
        total = t > 0 ? (uint64_t)t : 0;
    }
    if (f) fclose(f);
    return read_archive(out, za, path, total);
}

int lp_npz_parse(lp_npz **out, const void *buf, size_t len, const char *what) {
    *out = NULL;
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(buf, len, 0, &ze);
    zip_t *za = src ? zip_open_from_source(src, ZIP_RDONLY, &ze) : NULL;
    if (!za) {
        int rc = lp_error(LP_EFORMAT, "%s: %s (an .npz is a zip of .npy arrays, as np.savez writes)", what,
                          zip_error_strerror(&ze));
        if (src) zip_source_free(src);
        zip_error_fini(&ze);
        return rc;
    }
    zip_error_fini(&ze);
    return read_archive(out, za, what, len);
}
