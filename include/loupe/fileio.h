/* Reading files: whole into memory, or mapped read-only. */
#ifndef LOUPE_FILEIO_H
#define LOUPE_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* The longest line of commands loupe reads from a file or stdin (1 MiB): far more than any
 * command needs, and a bound on what a file without newlines (/dev/zero) can make it hold. */
#define LP_LINE_MAX (1 << 20)

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

/* Caps on the JSON files loupe reads, checked before parsing (jansson takes ~0.1 s a MB, and
 * the whole tree stays in memory): each is many times the largest real file of its kind, so
 * that only a wrong or hostile file reaches it. */
#define LP_JSON_MAX_CONFIG (16u << 20)     /* config.json, train.json: real ones are a few KB */
#define LP_JSON_MAX_INDEX (64u << 20)      /* model.safetensors.index.json: ~60 bytes a tensor, so
                                              a 1 MB index already maps 15000 tensors */
#define LP_JSON_MAX_TOKENIZER (128u << 20) /* tokenizer.json, vocab.json: Gemma 3's 262k-token
                                              tokenizer.json, among the largest, is 33 MB */

/* Reads and parses the JSON file at path (jansson flags), refusing one above max_bytes with
 * an LP_ERANGE message naming the file and the limit; a parse error is LP_EFORMAT naming the
 * line and column. *out is a new reference (a struct json_t *, from jansson). */
struct json_t;
int lp_json_load_file(const char *path, size_t max_bytes, size_t flags, struct json_t **out);

/* Writing a file so that a failure midway (a full disk, a file size limit) leaves the old
 * file, if any, as it was: lp_file_begin opens a temporary file beside path (path.tmp.PID)
 * to write to w->f; lp_file_commit closes it and renames it over path if every write
 * succeeded, else removes it and fails naming path; lp_file_abort gives up. */
typedef struct {
    FILE *f;
    const char *path;
    char tmp[4096];
} lp_file_tmp;
int lp_file_begin(lp_file_tmp *w, const char *path);
int lp_file_commit(lp_file_tmp *w);
void lp_file_abort(lp_file_tmp *w); /* does nothing after a commit */

/* Writes len bytes to path atomically (through lp_file_begin/commit). */
int lp_file_write(const char *path, const void *data, size_t len);

/* Reads the next line of a text file of commands into *buf (grown as needed, the caller
 * frees it; *len, if not NULL, gets its length), without its "\n" or "\r\n". At the end of
 * the file sets *eof. Errors name where:lineno and are never taken for the end: a read
 * error (a directory, EIO: LP_EIO), a NUL byte (LP_EFORMAT: the rest of the line would be
 * lost), a line longer than LP_LINE_MAX (LP_ERANGE). After an error the stream is left
 * mid-line: stop reading it. */
int lp_line_read(FILE *f, const char *where, int lineno, char **buf, size_t *cap, size_t *len, bool *eof);

bool lp_file_exists(const char *path);
/* Whether the file at path begins with the bytes of magic (at most 16). */
bool lp_file_starts_with(const char *path, const char *magic);
bool lp_dir_exists(const char *path);

/* Joins dir and name with one '/', into buf of size cap. Returns LP_ERANGE if too long. */
int lp_path_join(char *buf, size_t cap, const char *dir, const char *name);

/* Writes the directory part of path (without trailing '/', "." if none) into buf. */
int lp_path_dirname(char *buf, size_t cap, const char *path);

#endif
