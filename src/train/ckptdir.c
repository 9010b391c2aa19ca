/* Checkpoint directories written as one unit: staging, the commit, recovery, and the
 * check that a directory is ours to write. */
#include "loupe/ckptdir.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loupe/error.h"
#include "loupe/fileio.h"

/* 0: missing; 1: a directory (not a link to one); an error otherwise. */
static int is_dir(const char *path, bool *yes) {
    struct stat st;
    *yes = false;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return LP_OK;
        return lp_error(LP_EIO, "%s: cannot read: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return lp_error(LP_EIO, "%s: not a directory; loupe keeps its unfinished checkpoints there: remove it", path);
    *yes = true;
    return LP_OK;
}

static bool dot_entry(const char *name) { return strcmp(name, ".") == 0 || strcmp(name, "..") == 0; }

/* Removes the files of a staging directory (loupe writes no subdirectories there) and it. */
static int remove_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return lp_error(LP_EIO, "%s: cannot read: %s", path, strerror(errno));
    int rc = LP_OK;
    struct dirent *e;
    char file[4096];
    while (!rc && (e = readdir(d))) {
        if (dot_entry(e->d_name)) continue;
        if (!(rc = lp_path_join(file, sizeof file, path, e->d_name)) && unlink(file) != 0)
            rc = lp_error(LP_EIO, "%s: cannot remove: %s", file, strerror(errno));
    }
    closedir(d);
    if (!rc && rmdir(path) != 0) rc = lp_error(LP_EIO, "%s: cannot remove: %s", path, strerror(errno));
    return rc;
}

/* Moves every file of the commit directory into dir, train.json last, then removes it. */
static int roll_forward(const char *dir, const char *commit) {
    int rc = LP_OK;
    char from[4096], to[4096];
    for (int pass = 0; pass < 2 && !rc; pass++) {
        DIR *d = opendir(commit);
        if (!d) return lp_error(LP_EIO, "%s: cannot read: %s", commit, strerror(errno));
        struct dirent *e;
        while (!rc && (e = readdir(d))) {
            if (dot_entry(e->d_name) || (strcmp(e->d_name, "train.json") == 0) != (pass == 1)) continue;
            if ((rc = lp_path_join(from, sizeof from, commit, e->d_name)) ||
                (rc = lp_path_join(to, sizeof to, dir, e->d_name)))
                break;
            if (rename(from, to) != 0) rc = lp_error(LP_EIO, "%s: cannot move to %s: %s", from, to, strerror(errno));
        }
        closedir(d);
    }
    if (!rc && rmdir(commit) != 0) rc = lp_error(LP_EIO, "%s: cannot remove: %s", commit, strerror(errno));
    return rc;
}

int lp_ckptdir_recover(const char *dir) {
    char staging[4096], commit[4096];
    bool has_staging, has_commit;
    int rc;
    if ((rc = lp_path_join(staging, sizeof staging, dir, LP_CKPT_STAGING)) ||
        (rc = lp_path_join(commit, sizeof commit, dir, LP_CKPT_COMMIT)) || (rc = is_dir(commit, &has_commit)) ||
        (rc = is_dir(staging, &has_staging)))
        return rc;
    if (has_commit && (rc = roll_forward(dir, commit))) return rc;
    if (has_staging && (rc = remove_dir(staging))) return rc;
    return LP_OK;
}

int lp_ckptdir_stage(const char *dir, char *buf, size_t cap) {
    bool has;
    int rc = lp_path_join(buf, cap, dir, LP_CKPT_STAGING);
    if (rc || (rc = is_dir(buf, &has)) || (has && (rc = remove_dir(buf)))) return rc;
    if (mkdir(buf, 0755) != 0) return lp_error(LP_EIO, "%s: cannot create: %s", buf, strerror(errno));
    return LP_OK;
}

int lp_ckptdir_commit(const char *dir) {
    char staging[4096], commit[4096];
    int rc;
    if ((rc = lp_path_join(staging, sizeof staging, dir, LP_CKPT_STAGING)) ||
        (rc = lp_path_join(commit, sizeof commit, dir, LP_CKPT_COMMIT)))
        return rc;
    if (rename(staging, commit) != 0) return lp_error(LP_EIO, "%s: cannot commit: %s", staging, strerror(errno));
    return roll_forward(dir, commit);
}

/* The files that make a directory a model (Hugging Face or llama2.c): what loupe would load. */
static bool model_file(const char *name) {
    static const char *const names[] = {"config.json", "vocab.json", "merges.txt", "tokenizer.json", "vocab.txt",
                                        "tokenizer.bin", "tokenizer_config.json", "generation_config.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0) return true;
    size_t n = strlen(name);
    static const char *const exts[] = {".safetensors", ".safetensors.index.json", ".bin", ".gguf", ".pt", ".pth"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        size_t k = strlen(exts[i]);
        if (n > k && strcmp(name + n - k, exts[i]) == 0) return true;
    }
    return false;
}

int lp_ckptdir_check_new(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return LP_OK;
        return lp_error(LP_EIO, "%s: cannot read: %s", dir, strerror(errno));
    }
    char model[256] = "", other[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (dot_entry(e->d_name) || strcmp(e->d_name, LP_CKPT_STAGING) == 0) continue;
        if (model_file(e->d_name) && !model[0]) snprintf(model, sizeof model, "%s", e->d_name);
        else if (!other[0]) snprintf(other, sizeof other, "%s", e->d_name);
    }
    closedir(d);
    if (model[0])
        return lp_error(LP_EINVAL, "%s holds a model that loupe did not train (%s, and no train.json): it is never "
                                   "written; give train a new or empty directory", dir, model);
    if (other[0])
        return lp_error(LP_EINVAL, "%s is not empty (%s) and holds no loupe checkpoint: give train a new or empty "
                                   "directory", dir, other);
    return LP_OK;
}

int lp_file_digest(const char *path, char out[17]) {
    lp_mapping m;
    int rc = lp_file_map(&m, path);
    if (rc) return rc;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < m.size; i++) h = (h ^ m.data[i]) * 0x100000001b3ull;
    lp_file_unmap(&m);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return LP_OK;
}
