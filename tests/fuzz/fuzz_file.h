/* For harnesses of loaders that read paths: the fuzzed bytes as a file in a scratch
 * directory of this process (under $TMPDIR, else /tmp), rewritten for each input. */
#ifndef LOUPE_FUZZ_FILE_H
#define LOUPE_FUZZ_FILE_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir[256];

static void fuzz_remove_dir(void) {
    DIR *d = opendir(fuzz_dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", fuzz_dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(fuzz_dir);
}

/* Writes len bytes to NAME in the scratch directory; path receives its path. Returns 0 on
 * success (aborts if the scratch directory cannot be made: the harness would test nothing). */
static int fuzz_write_file(const char *name, const void *data, size_t len, char *path, size_t cap) {
    if (!fuzz_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/loupe-fuzz-%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
        if (mkdir(fuzz_dir, 0700) != 0) {
            struct stat st;
            if (stat(fuzz_dir, &st) != 0 || !S_ISDIR(st.st_mode)) abort();
        }
        atexit(fuzz_remove_dir);
    }
    snprintf(path, cap, "%s/%s", fuzz_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (len && fwrite(data, 1, len, f) != len) abort();
    if (fclose(f) != 0) abort();
    return 0;
}

#endif
