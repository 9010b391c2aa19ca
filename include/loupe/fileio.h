/* Reading files: whole into memory, or mapped read-only. */
#ifndef LOUPE_FILEIO_H
#define LOUPE_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

/* A read-only mapping of a whole file. Empty files map to data == NULL, size == 0. */
typedef struct {
    const unsigned char *data;
    size_t size;
} lp_mapping;

/* Maps path read-only. On failure returns LP_EIO with a message naming path. */
int lp_file_map(lp_mapping *out, const char *path);
void lp_file_unmap(lp_mapping *m); /* NULL-safe; leaves *m zeroed */

/* Reads a whole file into a new NUL-terminated buffer the caller frees. */
int lp_file_read_new(const char *path, char **out, size_t *len);

/* Writes len bytes to path atomically (a temporary file renamed into place). */
int lp_file_write(const char *path, const void *data, size_t len);

bool lp_file_exists(const char *path);
bool lp_dir_exists(const char *path);

/* Joins dir and name with one '/', into buf of size cap. Returns LP_ERANGE if too long. */
int lp_path_join(char *buf, size_t cap, const char *dir, const char *name);

/* Writes the directory part of path (without trailing '/', "." if none) into buf. */
int lp_path_dirname(char *buf, size_t cap, const char *path);

#endif
