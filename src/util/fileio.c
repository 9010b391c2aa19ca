#include "loupe/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loupe/error.h"

int lp_file_map(lp_mapping *out, const char *path) {
    out->data = NULL;
    out->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lp_error(LP_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lp_error(LP_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lp_error(LP_EIO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lp_error(LP_EIO, "%s: cannot map: %s", path, strerror(e));
        }
        out->data = p;
        out->size = (size_t)st.st_size;
    }
    close(fd);
    return LP_OK;
}

void lp_file_unmap(lp_mapping *m) {
    if (!m) return;
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

/* Reads at most max bytes; more is LP_ERANGE. Sized from fstat when the file has one, and
 * read until EOF regardless (the size may change, and pipes have none). */
static int read_capped(const char *path, size_t max, const char *limit_note, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lp_error(LP_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    size_t cap = 4096, n = 0;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) {
        if ((unsigned long long)st.st_size > max) {
            fclose(f);
            return lp_error(LP_ERANGE, "%s: %lld bytes is more than the %s loupe reads from such a file; is it the "
                            "right file?", path, (long long)st.st_size, limit_note);
        }
        cap = (size_t)st.st_size + 1;
    }
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return lp_error(LP_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = n > max ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return n > max ? lp_error(LP_ERANGE, "%s: more than the %s loupe reads from such a file; is it the "
                                          "right file?", path, limit_note)
                               : lp_error(LP_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || n > max) {
        free(buf);
        return bad ? lp_error(LP_EIO, "%s: read error", path)
                   : lp_error(LP_ERANGE, "%s: more than the %s loupe reads from such a file; is it the right file?",
                              path, limit_note);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return LP_OK;
}

int lp_file_read_new(const char *path, char **out, size_t *len) {
    return read_capped(path, SIZE_MAX - 1, "", out, len);
}

int lp_json_load_file(const char *path, size_t max_bytes, size_t flags, json_t **out) {
    *out = NULL;
    char *text, note[32];
    size_t len;
    snprintf(note, sizeof note, "%zu MB", max_bytes >> 20);
    int rc = read_capped(path, max_bytes, note, &text, &len);
    if (rc) return rc;
    json_error_t err;
    *out = json_loadb(text, len, flags, &err);
    free(text);
    if (!*out)
        return lp_error(LP_EFORMAT, "%s: not valid JSON (line %d, column %d): %s", path, err.line, err.column,
                        err.text);
    return LP_OK;
}

int lp_file_begin(lp_file_tmp *w, const char *path) {
    w->f = NULL;
    w->path = path;
    if (snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof w->tmp)
        return lp_error(LP_ERANGE, "%s: path too long", path);
    w->f = fopen(w->tmp, "wb");
    if (!w->f) return lp_error(LP_EIO, "%s: cannot create: %s", w->tmp, strerror(errno));
    return LP_OK;
}

int lp_file_commit(lp_file_tmp *w) {
    if (!w->f) return lp_error(LP_EIO, "%s: not open for writing", w->path);
    /* A failed fwrite left its errno (EFBIG, ENOSPC, ...) and the stream's error flag. */
    int e = errno;
    bool ok = !ferror(w->f);
    if (ok && fflush(w->f) != 0) ok = false, e = errno;
    if (fclose(w->f) != 0 && ok) ok = false, e = errno;
    w->f = NULL;
    if (ok && rename(w->tmp, w->path) != 0) ok = false, e = errno;
    if (ok) return LP_OK;
    remove(w->tmp);
    return lp_error(LP_EIO, "%s: cannot write: %s (the file, if there was one, is unchanged)", w->path,
                    e ? strerror(e) : "write error");
}

void lp_file_abort(lp_file_tmp *w) {
    if (!w->f) return;
    fclose(w->f);
    w->f = NULL;
    remove(w->tmp);
}

int lp_file_write(const char *path, const void *data, size_t len) {
    lp_file_tmp w;
    int rc = lp_file_begin(&w, path);
    if (rc) return rc;
    if (len) fwrite(data, 1, len, w.f);
    return lp_file_commit(&w);
}

int lp_line_read(FILE *f, const char *where, int lineno, char **buf, size_t *cap, size_t *len, bool *eof) {
    size_t n = 0;
    *eof = false;
    int rc = LP_OK, c = 0;
    flockfile(f);
    for (;;) {
        c = getc_unlocked(f);
        if (c == EOF || c == '\n') break;
        if (c == '\0') {
            rc = lp_error(LP_EFORMAT, "%s:%d: a NUL byte at column %zu: commands are text (is this a binary file?)", where,
                          lineno, n + 1);
            break;
        }
        if (n >= LP_LINE_MAX) {
            rc = lp_error(LP_ERANGE, "%s:%d: line longer than %d bytes (1 MiB), the limit for one command (is this a "
                          "text file?)", where, lineno, LP_LINE_MAX);
            break;
        }
        if (n + 2 > *cap) {
            size_t want = *cap ? *cap * 2 : 256;
            char *nb = realloc(*buf, want);
            if (!nb) {
                rc = lp_error(LP_ENOMEM, "%s:%d: out of memory reading a line", where, lineno);
                break;
            }
            *buf = nb, *cap = want;
        }
        (*buf)[n++] = (char)c;
    }
    if (!rc && c == EOF && ferror(f))
        rc = lp_error(LP_EIO, "%s:%d: cannot read: %s", where, lineno, strerror(errno));
    funlockfile(f);
    if (rc) return rc;
    if (c == EOF && n == 0) {
        *eof = true;
        return LP_OK;
    }
    if (!*buf && !(*buf = malloc(*cap = 1))) return lp_error(LP_ENOMEM, "%s:%d: out of memory", where, lineno);
    if (n > 0 && (*buf)[n - 1] == '\r') n--;
    (*buf)[n] = '\0';
    if (len) *len = n;
    return LP_OK;
}

bool lp_file_starts_with(const char *path, const char *magic) {
    size_t n = strlen(magic);
    char buf[16];
    FILE *f = n <= sizeof buf ? fopen(path, "rb") : NULL;
    if (!f) return false;
    bool yes = fread(buf, 1, n, f) == n && memcmp(buf, magic, n) == 0;
    fclose(f);
    return yes;
}

bool lp_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool lp_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int lp_path_join(char *buf, size_t cap, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    int n = snprintf(buf, cap, "%.*s/%s", (int)dl, dir, name);
    if (n < 0 || (size_t)n >= cap) return lp_error(LP_ERANGE, "%s/%s: path too long", dir, name);
    return LP_OK;
}

int lp_path_dirname(char *buf, size_t cap, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        if (cap < 2) return lp_error(LP_ERANGE, "path too long");
        strcpy(buf, ".");
        return LP_OK;
    }
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n + 1 > cap) return lp_error(LP_ERANGE, "%s: path too long", path);
    memcpy(buf, path, n);
    buf[n] = '\0';
    return LP_OK;
}
