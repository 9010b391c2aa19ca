/* The analysis store: migrations, files it must refuse and leave untouched, surviving
 * SIGKILL mid-recording, two processes writing at once, values stored verbatim, the `sql`
 * query function and the views. The recording and query tests run on a file and on
 * ":memory:". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "helpers.h"
#include "loupe/error.h"
#include "loupe/store.h"
#include "loupe/unit_rows.h"

#define SCHEMA_LATEST 10 /* the schema version this loupe writes */

#define OK(call)                                                                                                       \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_ != LP_OK) fail_msg("%s -> %d: %s", #call, rc_, lp_errmsg());                                            \
    } while (0)

/* Expects call to fail with code and a message containing each of the needles. */
#define EXPECT_ERROR(call, code, ...)                                                                                  \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_ != (code)) fail_msg("%s: expected %d, got %d (%s)", #call, (code), rc_, lp_errmsg());                   \
        const char *needles_[] = {__VA_ARGS__};                                                                        \
        for (size_t i_ = 0; i_ < sizeof needles_ / sizeof *needles_; i_++)                                             \
            if (!strstr(lp_errmsg(), needles_[i_])) fail_msg("message '%s' lacks '%s'", lp_errmsg(), needles_[i_]);     \
    } while (0)

/* ---- fixtures ---- */

typedef struct {
    char *dir;
    char path[4096];
    lp_store *st;
} fixture;

static int fixture_new(void **state, int memory) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    f->dir = make_temp_dir();
    snprintf(f->path, sizeof f->path, "%s/loupe.db", f->dir);
    if (lp_store_open(&f->st, memory ? ":memory:" : f->path)) {
        fprintf(stderr, "open: %s\n", lp_errmsg());
        return -1;
    }
    *state = f;
    return 0;
}

static int on_file(void **state) { return fixture_new(state, 0); }
static int on_memory(void **state) { return fixture_new(state, 1); }

/* A temporary directory and no store: for the tests about opening. */
static int in_dir(void **state) {
    if (fixture_new(state, 1)) return -1;
    fixture *f = *state;
    lp_store_close(f->st);
    f->st = NULL;
    return 0;
}

static int fixture_free(void **state) {
    fixture *f = *state;
    if (!f) return 0;
    lp_store_close(f->st);
    rm_tree(f->dir);
    free(f);
    return 0;
}

static const char *in(fixture *f, const char *name) {
    static char buf[4200];
    snprintf(buf, sizeof buf, "%s/%s", f->dir, name);
    return buf;
}

/* ---- helpers ---- */

static const char *const TOKS[] = {" the", " cat", "\xff\xfe", " sat", "\n", " on", "'", " mat"};
#define NTOKS ((int)(sizeof TOKS / sizeof *TOKS))

/* A run as the command layer records it: n tokens, top-k predictions at each position,
 * n_layer x n_head head metrics. */
typedef struct {
    lp_store_run r;
    int *ids;
    const char **tok;
    size_t *len;
    lp_store_prediction *p;
    lp_store_head_metric *h;
} fake_run;

static fake_run fake(int64_t session, int64_t model, const char *text, int n, int k, int nl, int nh) {
    fake_run f = {0};
    f.ids = calloc((size_t)n + 1, sizeof *f.ids);
    f.tok = calloc((size_t)n + 1, sizeof *f.tok);
    f.len = calloc((size_t)n + 1, sizeof *f.len);
    f.p = calloc((size_t)(n * k) + 1, sizeof *f.p);
    f.h = calloc((size_t)(nl * nh) + 1, sizeof *f.h);
    assert_true(f.ids && f.tok && f.len && f.p && f.h);
    for (int i = 0; i < n; i++) {
        f.ids[i] = 100 + i;
        f.tok[i] = TOKS[i % NTOKS];
        f.len[i] = strlen(f.tok[i]);
        for (int r = 0; r < k; r++)
            f.p[i * k + r] = (lp_store_prediction){i, r + 1, 200 + 10 * i + r, TOKS[(i + r + 1) % NTOKS],
                                                   strlen(TOKS[(i + r + 1) % NTOKS]), 0.5 / (r + 1), 10.0 - r};
    }
    for (int l = 0; l < nl; l++)
        for (int h = 0; h < nh; h++)
            f.h[l * nh + h] = (lp_store_head_metric){l, h, l + h / 10.0, 0.1, 0.2, 0.3, 0.4, 0.5, NULL, NULL, NAN, NAN, NAN, NAN};
    f.r = (lp_store_run){.session_id = session, .model_id = model, .text = text, .ids = f.ids, .token_text = f.tok,
                         .token_len = f.len, .n = n, .preds = f.p, .n_preds = n * k, .heads = f.h, .n_heads = nl * nh};
    return f;
}

static void fake_free(fake_run *f) {
    free(f->ids);
    free(f->tok);
    free(f->len);
    free(f->p);
    free(f->h);
}

static int64_t put_fake_run(lp_store *st, int64_t session, int64_t model, const char *text, int n) {
    fake_run f = fake(session, model, text, n, 2, 2, 3);
    int64_t id = 0;
    OK(lp_store_put_run(st, &f.r, &id));
    fake_free(&f);
    return id;
}

static int64_t put_test_model(lp_store *st, const char *path) {
    lp_store_model m = {path, "gpt2", 2, 3, 3, 48, 192, 512, 64, 123456, "float32", "abcdef0123456789", "lm"};
    int64_t id = 0;
    OK(lp_store_put_model(st, &m, &id));
    return id;
}

/* The q_* helpers run a read-only query and take the reference to params. */

/* The table's rows (caller decrefs). */
static json_t *q_rows(lp_store *st, const char *sql, json_t *params) {
    json_t *rows = NULL, *table = NULL;
    int rc = lp_store_query(st, sql, params, false, &rows, &table);
    json_decref(params);
    if (rc) fail_msg("%s: %s", sql, lp_errmsg());
    json_t *r = json_incref(json_object_get(table, "rows"));
    json_decref(rows);
    json_decref(table);
    return r;
}

static int64_t q_int(lp_store *st, const char *sql, json_t *params) {
    json_t *rows = q_rows(st, sql, params);
    json_t *v = json_array_get(json_array_get(rows, 0), 0);
    if (!json_is_integer(v)) fail_msg("%s: no integer result", sql);
    int64_t x = json_integer_value(v);
    json_decref(rows);
    return x;
}

/* The first row of a query as an object (caller decrefs). */
static json_t *q_obj(lp_store *st, const char *sql, json_t *params) {
    json_t *rows = NULL;
    int rc = lp_store_query(st, sql, params, false, &rows, NULL);
    json_decref(params);
    if (rc) fail_msg("%s: %s", sql, lp_errmsg());
    if (json_array_size(rows) < 1) fail_msg("%s: no rows", sql);
    json_t *o = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return o;
}

static void assert_str_field(json_t *o, const char *key, const char *want) {
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) fail_msg("%s: not a string", key);
    if (json_string_length(v) != strlen(want) || memcmp(json_string_value(v), want, strlen(want)) != 0)
        fail_msg("%s: got '%s', want '%s'", key, json_string_value(v), want);
}

static void assert_real_field(json_t *o, const char *key, double want) {
    json_t *v = json_object_get(o, key);
    if (!json_is_real(v)) fail_msg("%s: not a real", key);
    if (fabs(json_real_value(v) - want) > 1e-12) fail_msg("%s: got %g, want %g", key, json_real_value(v), want);
}

static void assert_int_field(json_t *o, const char *key, int64_t want) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("%s: not an integer", key);
    assert_int_equal(json_integer_value(v), want);
}

/* A file's bytes, mode and mtime, to show that a refusal left it alone. */
typedef struct {
    char *bytes;
    size_t len;
    struct stat sb;
} snapshot;

static snapshot snap(const char *path) {
    snapshot s = {0};
    assert_int_equal(stat(path, &s.sb), 0);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    s.bytes = malloc((size_t)s.sb.st_size + 1);
    assert_non_null(s.bytes);
    s.len = fread(s.bytes, 1, (size_t)s.sb.st_size + 1, f);
    fclose(f);
    return s;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void assert_untouched(snapshot *before, const char *path) {
    snapshot after = snap(path);
    assert_int_equal(after.len, before->len);
    assert_memory_equal(after.bytes, before->bytes, before->len);
    assert_int_equal(after.sb.st_mode, before->sb.st_mode);
    assert_int_equal(after.sb.st_mtim.tv_sec, before->sb.st_mtim.tv_sec);
    assert_int_equal(after.sb.st_mtim.tv_nsec, before->sb.st_mtim.tv_nsec);
    const char *suffixes[] = {"-wal", "-shm", "-journal"};
    for (int i = 0; i < 3; i++) {
        char side[4200];
        snprintf(side, sizeof side, "%s%s", path, suffixes[i]);
        if (exists(side)) fail_msg("%s was created", side);
    }
    free(after.bytes);
    free(before->bytes);
}

/* An SQLite file made by someone else, with sqlite3 itself. */
static void make_sqlite_file(const char *path, const char *sql) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) fail_msg("%s: %s", sql, err);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- opening and migrations ---- */

static void new_file_gets_latest_schema_wal_and_foreign_keys(void **state) {
    fixture *f = *state;
    lp_store *st;
    OK(lp_store_open(&st, f->path));
    assert_int_equal(lp_store_schema_version(st), SCHEMA_LATEST);
    assert_string_equal(lp_store_path(st), f->path);
    assert_int_equal(q_int(st, "PRAGMA user_version", NULL), SCHEMA_LATEST);
    assert_int_equal(q_int(st, "PRAGMA foreign_keys", NULL), 1);
    assert_int_equal(q_int(st, "PRAGMA application_id", NULL), 0x4C6F7570); /* "Loup" */
    json_t *rows = NULL;
    OK(lp_store_query(st, "PRAGMA journal_mode", NULL, true, &rows, NULL));
    assert_str_field(json_array_get(rows, 0), "journal_mode", "wal");
    json_decref(rows);
    lp_store_close(st);
}

static void reopening_keeps_data_and_schema_version(void **state) {
    fixture *f = *state;
    lp_store *st;
    int64_t id, again;
    OK(lp_store_open(&st, f->path));
    OK(lp_store_session_new(st, "kept", &id));
    lp_store_close(st);
    OK(lp_store_open(&st, f->path));
    assert_int_equal(lp_store_schema_version(st), SCHEMA_LATEST);
    OK(lp_store_session_find(st, "kept", &again));
    assert_int_equal(again, id);
    lp_store_close(st);
}

static void memory_database_gets_latest_schema(void **state) {
    fixture *f = *state; /* opened on ":memory:" */
    assert_int_equal(lp_store_schema_version(f->st), SCHEMA_LATEST);
    assert_int_equal(q_int(f->st, "SELECT count(*) FROM sqlite_schema WHERE name = 'runs_view'", NULL), 1);
    assert_false(exists(":memory:"));
}

static void empty_file_becomes_a_store(void **state) {
    fixture *f = *state;
    FILE *e = fopen(f->path, "w");
    assert_non_null(e);
    fclose(e);
    lp_store *st;
    OK(lp_store_open(&st, f->path));
    assert_int_equal(lp_store_schema_version(st), SCHEMA_LATEST);
    lp_store_close(st);
}

static void newer_schema_is_refused_and_file_untouched(void **state) {
    fixture *f = *state;
    /* In WAL mode: reading its version through SQLite would create a -wal and -shm. */
    make_sqlite_file(f->path, "PRAGMA journal_mode = WAL; CREATE TABLE runs (id); PRAGMA user_version = 99;");
    snapshot before = snap(f->path);
    lp_store *st = (lp_store *)1;
    EXPECT_ERROR(lp_store_open(&st, f->path), LP_EUNSUPPORTED, f->path,
                 "has schema version 99; this loupe knows up to 10: use a newer loupe");
    assert_null(st);
    assert_untouched(&before, f->path);
}

static void non_sqlite_file_is_refused_and_untouched(void **state) {
    fixture *f = *state;
    FILE *t = fopen(f->path, "w");
    assert_non_null(t);
    for (int i = 0; i < 16; i++) fputs("this is a text file, not a database; 64 bytes of it per line...\n", t);
    fclose(t);
    snapshot before = snap(f->path);
    assert_int_equal(before.len, 1024);
    lp_store *st;
    EXPECT_ERROR(lp_store_open(&st, f->path), LP_EFORMAT, f->path, "is not an SQLite database (");
    assert_true(strncmp(lp_errmsg(), f->path, strlen(f->path)) == 0);
    assert_untouched(&before, f->path);

    const char *tiny = in(f, "tiny.db"); /* shorter than an SQLite header */
    t = fopen(tiny, "w");
    fputs("SQLite", t);
    fclose(t);
    before = snap(tiny);
    EXPECT_ERROR(lp_store_open(&st, tiny), LP_EFORMAT, tiny, "is not an SQLite database");
    assert_untouched(&before, tiny);
}

/* Tests run as root, for whom access(W_OK) says yes: the mode bits decide. */
static void read_only_file_is_refused_even_for_root_and_untouched(void **state) {
    fixture *f = *state;
    lp_store *st;
    OK(lp_store_open(&st, f->path));
    OK(lp_store_session_new(st, "s", NULL));
    lp_store_close(st);
    assert_int_equal(chmod(f->path, 0444), 0);
    snapshot before = snap(f->path);
    EXPECT_ERROR(lp_store_open(&st, f->path), LP_EIO, f->path, "is read-only", "chmod u+w");
    assert_untouched(&before, f->path);
}

static void directory_path_is_refused(void **state) {
    fixture *f = *state;
    lp_store *st;
    EXPECT_ERROR(lp_store_open(&st, f->dir), LP_EIO, f->dir, "is a directory");
}

static void path_in_missing_directory_is_refused(void **state) {
    fixture *f = *state;
    lp_store *st;
    const char *path = in(f, "missing/loupe.db");
    EXPECT_ERROR(lp_store_open(&st, path), LP_EIO, path, "does not exist");
    assert_false(exists(in(f, "missing")));
}

static void other_programs_database_is_refused_and_untouched(void **state) {
    fixture *f = *state;
    lp_store *st;
    make_sqlite_file(f->path, "CREATE TABLE bookmarks (url TEXT); INSERT INTO bookmarks VALUES ('x');");
    snapshot before = snap(f->path);
    EXPECT_ERROR(lp_store_open(&st, f->path), LP_EFORMAT, f->path, "loupe did not create");
    assert_untouched(&before, f->path);

    const char *other = in(f, "other.db");
    make_sqlite_file(other, "PRAGMA application_id = 1234; CREATE TABLE t (a);");
    before = snap(other);
    EXPECT_ERROR(lp_store_open(&st, other), LP_EFORMAT, other, "another program's");
    assert_untouched(&before, other);
}

/* ---- crashes and concurrency ---- */

static int read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        got += (size_t)r;
    }
    return 1;
}

/* A batch is one transaction: nothing is seen until its commit, a rollback drops all of it,
 * and a recording that fails inside it is undone alone. */
static void a_batch_commits_or_drops_its_recordings_together(void **state) {
    fixture *f = *state;
    lp_store *st = f->st, *other;
    int64_t session, model = put_test_model(st, "m");
    OK(lp_store_session_default(st, &session));
    OK(lp_store_open(&other, f->path));
    OK(lp_store_batch_begin(st));
    EXPECT_ERROR(lp_store_batch_begin(st), LP_EINVAL, "already open");
    put_fake_run(st, session, model, "a", 3);
    put_fake_run(st, session, model, "b", 3);
    assert_int_equal(q_int(other, "SELECT count(*) FROM runs", NULL), 0);
    lp_store_batch_rollback(st);
    assert_false(lp_store_in_batch(st));
    assert_int_equal(q_int(st, "SELECT count(*) FROM runs", NULL), 0);
    OK(lp_store_batch_begin(st));
    put_fake_run(st, session, model, "c", 3);
    fake_run bad = fake(session, model, "bad", 2, 1, 1, 1);
    bad.p[0].pos = 0, bad.p[1].pos = 0, bad.p[1].rank = 1; /* the same key twice: a constraint fails */
    int64_t id;
    EXPECT_ERROR(lp_store_put_run(st, &bad.r, &id), LP_EINVAL, "recording");
    fake_free(&bad);
    put_fake_run(st, session, model, "d", 3);
    OK(lp_store_batch_commit(st));
    assert_int_equal(q_int(other, "SELECT count(*) FROM runs", NULL), 2);
    assert_int_equal(q_int(other, "SELECT count(*) FROM tokens", NULL), 6);
    EXPECT_ERROR(lp_store_batch_commit(st), LP_EINVAL, "no batch");
    lp_store_close(other);
}

/* The child records runs until killed, writing each run's id to the pipe once committed. */
static void record_until_killed(const char *path, int out) {
    lp_store *st;
    int64_t session;
    if (lp_store_open(&st, path) || lp_store_session_default(st, &session)) _exit(2);
    fake_run f = fake(session, 0, "killed mid-run", 200, 5, 4, 12); /* big enough to be caught mid-transaction */
    for (;;) {
        int64_t id;
        if (lp_store_put_run(st, &f.r, &id)) _exit(3);
        if (write(out, &id, sizeof id) != (ssize_t)sizeof id) _exit(4);
    }
}

static void sigkill_while_recording_keeps_every_committed_run(void **state) {
    fixture *f = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        record_until_killed(f->path, fds[1]);
    }
    close(fds[1]);
    enum { N = 25 };
    int64_t ids[4096];
    int n = 0;
    while (n < N && read_full(fds[0], &ids[n], sizeof *ids)) n++;
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status)) fail_msg("the recorder exited with %d before it was killed", WEXITSTATUS(status));
    while (n < 4096 && read_full(fds[0], &ids[n], sizeof *ids)) n++; /* reported before it died */
    close(fds[0]);
    assert_true(n >= N);

    lp_store *st;
    OK(lp_store_open(&st, f->path));
    json_t *rows = q_rows(st, "PRAGMA integrity_check", NULL);
    assert_string_equal(json_string_value(json_array_get(json_array_get(rows, 0), 0)), "ok");
    json_decref(rows);
    for (int i = 0; i < n; i++)
        assert_int_equal(q_int(st, "SELECT count(*) FROM runs WHERE id = ?1", json_pack("[I]", (json_int_t)ids[i])), 1);
    /* No run is there in part: each has all its tokens, predictions and head metrics. */
    assert_int_equal(q_int(st,
                           "SELECT count(*) FROM runs r WHERE (SELECT count(*) FROM tokens t WHERE t.run_id = r.id) != 200"
                           " OR (SELECT count(*) FROM predictions p WHERE p.run_id = r.id) != 1000"
                           " OR (SELECT count(*) FROM head_metrics h WHERE h.run_id = r.id) != 48",
                           NULL),
                     0);
    lp_store_close(st);
}

/* Each child waits at the gate, then records `runs` runs with a note each. */
static void record_runs(const char *path, int gate, int runs) {
    char c;
    if (read(gate, &c, 1) < 0) _exit(5);
    lp_store *st;
    int64_t session, run, finding;
    int rc = lp_store_open(&st, path);
    if (!rc) rc = lp_store_session_default(st, &session);
    for (int i = 0; !rc && i < runs; i++) {
        fake_run f = fake(session, 0, "two writers", 16, 3, 2, 2);
        rc = lp_store_put_run(st, &f.r, &run);
        if (!rc) rc = lp_store_put_finding(st, session, run, "note", "written concurrently", 0, 1, 3, &finding);
        fake_free(&f);
    }
    if (rc) fprintf(stderr, "writer %d: %s\n", (int)getpid(), lp_errmsg());
    lp_store_close(st);
    _exit(rc ? 1 : 0);
}

static void two_processes_recording_at_once_both_succeed(void **state) {
    fixture *f = *state; /* the file does not exist yet: both children race to create it too */
    enum { RUNS = 200 };
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            record_runs(f->path, gate[0], RUNS);
        }
    }
    close(gate[0]);
    close(gate[1]); /* opens the gate: both reads return 0 at once */
    for (int i = 0; i < 2; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    lp_store *st;
    OK(lp_store_open(&st, f->path));
    assert_int_equal(q_int(st, "SELECT count(*) FROM runs", NULL), 2 * RUNS);
    assert_int_equal(q_int(st, "SELECT count(*) FROM findings WHERE token_id = 103", NULL), 2 * RUNS);
    assert_int_equal(q_int(st, "SELECT count(*) FROM sessions", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM tokens", NULL), 2 * RUNS * 16);
    lp_store_close(st);
}

/* ---- recording (on a file and on :memory:) ---- */

static void run_round_trips_through_get_run(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, model = put_test_model(st, "/models/gpt2");
    OK(lp_store_session_default(st, &session));
    int64_t id = put_fake_run(st, session, model, "The cat sat", 5);
    lp_store_saved_run r;
    OK(lp_store_get_run(st, id, &r));
    assert_int_equal(r.model_id, model);
    assert_int_equal(r.n, 5);
    for (int i = 0; i < r.n; i++) assert_int_equal(r.ids[i], 100 + i), assert_int_equal(r.types[i], 0);
    assert_string_equal(r.text, "The cat sat");
    assert_null(r.pair);
    lp_store_saved_run_free(&r);

    int64_t by_ids = put_fake_run(st, session, model, NULL, 3); /* `run --ids`: no text */
    OK(lp_store_get_run(st, by_ids, &r));
    assert_int_equal(r.n, 3);
    assert_null(r.text);
    lp_store_saved_run_free(&r);
    assert_int_equal(q_int(st, "SELECT text IS NULL FROM runs WHERE id = ?1", json_pack("[I]", (json_int_t)by_ids)), 1);

    EXPECT_ERROR(lp_store_get_run(st, 999, &r), LP_EINVAL, "no run 999");
    assert_null(r.ids);
}

/* Schema v3: an encoder's sentence pair comes back as it was run, its second text and token
 * types included (rerun runs it from these), and each token's role is kept. */
static void pair_types_and_roles_round_trip(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session;
    OK(lp_store_session_default(st, &session));
    lp_store_model m = {"/models/bert", "BertForSequenceClassification", 2, 4, 4, 32, 64, 110, 64, 1, "F32", "0123",
                        "classifier"};
    int64_t model;
    OK(lp_store_put_model(st, &m, &model));
    int ids[7] = {2, 94, 4, 3, 21, 98, 3}, types[7] = {0, 0, 0, 0, 1, 1, 1};
    const char *tok[7] = {"[CLS]", "this", "[MASK]", "[SEP]", "i", "like", "[SEP]"};
    const char *role[7] = {"cls", NULL, "mask", "sep", NULL, NULL, "sep"};
    lp_store_run run = {.session_id = session, .model_id = model, .text = "this [MASK]", .ids = ids, .token_text = tok,
                        .n = 7, .pair = "i like", .types = types, .special = role};
    int64_t id;
    OK(lp_store_put_run(st, &run, &id));
    lp_store_saved_run r;
    OK(lp_store_get_run(st, id, &r));
    assert_int_equal(r.n, 7);
    assert_memory_equal(r.ids, ids, sizeof ids);
    assert_memory_equal(r.types, types, sizeof types);
    assert_string_equal(r.text, "this [MASK]");
    assert_string_equal(r.pair, "i like");
    lp_store_saved_run_free(&r);
    assert_int_equal(q_int(st, "SELECT group_concat(coalesce(special, '-'), ' ') IS 'cls - mask sep - - sep' FROM"
                               " (SELECT special FROM tokens WHERE run_id = ?1 ORDER BY pos)",
                           json_pack("[I]", (json_int_t)id)), 1);
    assert_int_equal(q_int(st, "SELECT pos FROM tokens WHERE run_id = ?1 AND special = 'mask'",
                           json_pack("[I]", (json_int_t)id)), 2);
    json_t *o = q_obj(st, "SELECT * FROM runs_view WHERE id = ?1", json_pack("[I]", (json_int_t)id));
    assert_str_field(o, "pair", "i like");
    assert_str_field(o, "head", "classifier");
    json_decref(o);
    /* A type that is not a type is reported, not read as 0. */
    json_t *params = json_pack("[I]", (json_int_t)id), *rows = NULL, *table = NULL;
    OK(lp_store_query(st, "UPDATE tokens SET type = 'x' WHERE run_id = ?1 AND pos = 4", params, true, &rows, &table));
    json_decref(params);
    EXPECT_ERROR(lp_store_get_run(st, id, &r), LP_EFORMAT, "token type at position 4 is 'x'");
}

/* Schema v8: a run's feature activations, per dictionary and position its strongest active
 * ones in rank order; the dictionary's row is shared by the runs that name it; feature_acts
 * gives each with its token, and the index answers where a feature fires most. */
static void feature_activations_are_kept_per_run_and_dictionary(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, model = put_test_model(st, "/models/gpt2"), a, b;
    OK(lp_store_session_default(st, &session));
    int ids[3] = {10, 11, 12};
    const char *tok[3] = {"The", " cat", " sat"};
    int feat[3 * 2] = {7, 3, 7, -1, -1, -1}; /* position 2: nothing active */
    float act[3 * 2] = {2.5f, 1.0f, 4.0f, 0, 0, 0};
    lp_store_features f = {"ds", "/saes/ds", "blocks.1.resid_pre", NULL, "topk", 64, 512, 2, 3, feat, act};
    lp_store_run run = {.session_id = session, .model_id = model, .text = "The cat sat", .ids = ids, .token_text = tok,
                        .n = 3, .features = &f, .n_features = 1};
    OK(lp_store_put_run(st, &run, &a));
    feat[0] = 9, act[0] = 6.0f;
    OK(lp_store_put_run(st, &run, &b));
    assert_int_equal(q_int(st, "SELECT count(*) FROM saes", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM feature_activations", NULL), 6);
    assert_int_equal(q_int(st, "SELECT k FROM run_saes WHERE run_id = ?1", json_pack("[I]", (json_int_t)a)), 2);
    json_t *o = q_obj(st, "SELECT * FROM feature_acts WHERE run_id = ?1 AND pos = 0 AND rank = 2",
                      json_pack("[I]", (json_int_t)a));
    assert_str_field(o, "sae", "ds");
    assert_str_field(o, "site", "blocks.1.resid_pre");
    assert_str_field(o, "token", "The");
    assert_int_field(o, "feature", 3);
    assert_real_field(o, "act", 1.0);
    json_decref(o);
    /* where feature 7 fires most: run a's position 1, through the index */
    o = q_obj(st, "SELECT run_id, pos, act FROM feature_acts WHERE sae = 'ds' AND feature = 7 ORDER BY act DESC LIMIT 1",
              NULL);
    assert_int_field(o, "run_id", a);
    assert_int_field(o, "pos", 1);
    json_decref(o);
    o = q_obj(st, "SELECT count(*) AS n FROM (SELECT 1) WHERE EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index'"
                  " AND name = 'feature_activations_by_feature')", NULL);
    assert_int_field(o, "n", 1);
    json_decref(o);
    o = q_obj(st, "SELECT * FROM feature_summary WHERE feature = 7", NULL);
    assert_int_field(o, "tokens", 3);
    assert_int_field(o, "runs", 2);
    assert_real_field(o, "max_act", 4.0);
    json_decref(o);
    /* refused, with nothing recorded: a feature beyond the dictionary, a NaN, k 0 */
    int64_t id;
    feat[1] = 512;
    EXPECT_ERROR(lp_store_put_run(st, &run, &id), LP_EINVAL, "feature 512");
    feat[1] = 3, act[1] = NAN;
    EXPECT_ERROR(lp_store_put_run(st, &run, &id), LP_EINVAL, "feature 3");
    act[1] = 1.0f, f.k = 0;
    EXPECT_ERROR(lp_store_put_run(st, &run, &id), LP_EINVAL, "counts and arrays");
    assert_int_equal(q_int(st, "SELECT count(*) FROM runs", NULL), 2);
    /* a run deleted takes its features with it */
    json_t *rows = NULL, *table = NULL, *p = json_pack("[I]", (json_int_t)a);
    OK(lp_store_query(st, "DELETE FROM runs WHERE id = ?1", p, true, &rows, &table));
    json_decref(p), json_decref(rows), json_decref(table);
    assert_int_equal(q_int(st, "SELECT count(*) FROM feature_activations", NULL), 3);
    assert_int_equal(q_int(st, "SELECT count(*) FROM run_saes", NULL), 1);
}

static void run_is_recorded_all_or_nothing(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, id;
    OK(lp_store_session_default(st, &session));
    fake_run f = fake(session, 0, "duplicate head", 4, 2, 1, 2);
    f.h[1] = f.h[0]; /* the same (layer, head) twice: the last insert fails */
    assert_int_not_equal(lp_store_put_run(st, &f.r, &id), LP_OK);
    fake_free(&f);
    assert_int_equal(q_int(st, "SELECT count(*) FROM runs", NULL), 0);
    assert_int_equal(q_int(st, "SELECT count(*) FROM tokens", NULL), 0);
    put_fake_run(st, session, 0, "after the failure", 2); /* no transaction was left open */
    assert_int_equal(q_int(st, "SELECT count(*) FROM runs", NULL), 1);
    EXPECT_ERROR(lp_store_put_run(st, &(lp_store_run){.session_id = 777, .n = 0}, &id), LP_EINVAL, "FOREIGN KEY");
}

static void quotes_and_sql_text_are_stored_verbatim(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    const char *evil = "'); DROP TABLE runs; --";
    const char *quoted = "it's \"quoted\" \\ and 100% %s";
    int64_t session, run, note;
    OK(lp_store_session_new(st, evil, &session));
    int ids[3] = {1, 2, 3};
    const char *tok[3] = {"a\0b", "\xff\xfe\x80", evil};
    size_t len[3] = {3, 3, strlen(evil)};
    lp_store_prediction p = {2, 1, 7, "\"x\0y", 4, 0.25, -1.5};
    lp_store_run r = {.session_id = session, .text = evil, .ids = ids, .token_text = tok, .token_len = len, .n = 3,
                      .preds = &p, .n_preds = 1};
    OK(lp_store_put_run(st, &r, &run));
    OK(lp_store_put_finding(st, session, run, "note", quoted, -1, -1, 1, &note));
    assert_int_equal(q_int(st, "SELECT count(*) FROM sqlite_schema WHERE name = 'runs'", NULL), 1);

    json_t *o = q_obj(st, "SELECT text FROM runs WHERE id = ?1", json_pack("[I]", (json_int_t)run));
    assert_str_field(o, "text", evil);
    json_decref(o);
    o = q_obj(st, "SELECT name FROM sessions WHERE id = ?1", json_pack("[I]", (json_int_t)session));
    assert_str_field(o, "name", evil);
    json_decref(o);
    json_t *rows = q_rows(st, "SELECT text FROM tokens WHERE run_id = ?1 ORDER BY pos", json_pack("[I]", (json_int_t)run));
    for (int i = 0; i < 3; i++) {
        json_t *v = json_array_get(json_array_get(rows, (size_t)i), 0);
        assert_int_equal(json_string_length(v), len[i]); /* NULs and invalid UTF-8 kept */
        assert_memory_equal(json_string_value(v), tok[i], len[i]);
    }
    json_decref(rows);
    o = q_obj(st, "SELECT token, length(CAST(token AS BLOB)) AS n FROM predictions", NULL);
    assert_int_equal(json_string_length(json_object_get(o, "token")), 4);
    assert_memory_equal(json_string_value(json_object_get(o, "token")), "\"x\0y", 4);
    assert_int_field(o, "n", 4);
    json_decref(o);
    o = q_obj(st, "SELECT text FROM findings WHERE id = ?1", json_pack("[I]", (json_int_t)note));
    assert_str_field(o, "text", quoted);
    json_decref(o);
    int64_t found;
    OK(lp_store_session_find(st, evil, &found));
    assert_int_equal(found, session);
}

static void model_is_recorded_once_per_fingerprint_and_path(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t a = put_test_model(st, "/models/a"), again = put_test_model(st, "/models/a");
    int64_t b = put_test_model(st, "/models/b");
    assert_int_equal(a, again);
    assert_int_not_equal(a, b);
    lp_store_model other = {"/models/a", "gpt2", 2, 3, 3, 48, 192, 512, 64, 123456, "float32", "ffffffffffffffff", "lm"};
    int64_t c;
    OK(lp_store_put_model(st, &other, &c)); /* retrained weights at the same path */
    assert_int_not_equal(c, a);
    json_t *o = q_obj(st, "SELECT * FROM models WHERE id = ?1", json_pack("[I]", (json_int_t)a));
    assert_str_field(o, "arch", "gpt2");
    assert_int_field(o, "n_layer", 2);
    assert_int_field(o, "d_mlp", 192);
    assert_int_field(o, "n_params", 123456);
    assert_str_field(o, "fingerprint", "abcdef0123456789");
    json_decref(o);
}

static void sessions_default_new_and_find(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t d1, d2, a, found, year;
    OK(lp_store_session_default(st, &d1));
    OK(lp_store_session_default(st, &d2));
    assert_int_equal(d1, d2);
    OK(lp_store_session_new(st, "induction", &a));
    EXPECT_ERROR(lp_store_session_new(st, "induction", NULL), LP_EINVAL, "session 'induction' already exists");
    OK(lp_store_session_find(st, "induction", &found));
    assert_int_equal(found, a);
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)a);
    OK(lp_store_session_find(st, num, &found));
    assert_int_equal(found, a);
    OK(lp_store_session_new(st, "2024", &year)); /* a numeric name that is no id */
    OK(lp_store_session_find(st, "2024", &found));
    assert_int_equal(found, year);
    EXPECT_ERROR(lp_store_session_find(st, "nope", &found), LP_EINVAL, "no session 'nope'");
    EXPECT_ERROR(lp_store_session_new(st, "", NULL), LP_EINVAL, "name");
    json_t *o = q_obj(st, "SELECT created_at FROM sessions WHERE id = ?1", json_pack("[I]", (json_int_t)a));
    const char *at = json_string_value(json_object_get(o, "created_at")); /* 2025-01-31T12:34:56.789Z */
    assert_int_equal(strlen(at), 24);
    assert_true(at[10] == 'T' && at[19] == '.' && at[23] == 'Z');
    json_decref(o);
}

static void tensor_is_stored_as_little_endian_float32(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, run, t, empty;
    OK(lp_store_session_default(st, &session));
    run = put_fake_run(st, session, 0, "x", 2);
    const float data[6] = {1.0f, -2.0f, 0.5f, 0, 0, 0};
    OK(lp_store_put_tensor(st, run, "pattern", 3, -1, (int[]){2, 3}, 2, data, &t));
    json_t *o = q_obj(st, "SELECT run_id, name, layer, head, dtype, shape, length(data) AS bytes, hex(data) AS hex, data"
                          " FROM tensors WHERE id = ?1", json_pack("[I]", (json_int_t)t));
    assert_int_field(o, "run_id", run);
    assert_str_field(o, "name", "pattern");
    assert_int_field(o, "layer", 3);
    assert_true(json_is_null(json_object_get(o, "head")));
    assert_str_field(o, "dtype", "float32");
    assert_str_field(o, "shape", "[2,3]");
    assert_int_field(o, "bytes", 24);
    assert_str_field(o, "hex", "0000803F000000C00000003F000000000000000000000000");
    assert_int_field(json_object_get(o, "data"), "blob_bytes", 24);
    json_decref(o);
    OK(lp_store_put_tensor(st, run, "empty", -1, -1, (int[]){0, 4}, 2, NULL, &empty));
    assert_int_equal(q_int(st, "SELECT length(data) FROM tensors WHERE id = ?1", json_pack("[I]", (json_int_t)empty)), 0);
    EXPECT_ERROR(lp_store_put_tensor(st, run, "bad", 0, 0, (int[]){-1}, 1, data, NULL), LP_EINVAL, "bad");
}

static void finding_gets_the_token_at_its_position(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, run, note, bare, tag;
    OK(lp_store_session_default(st, &session));
    run = put_fake_run(st, session, 0, "The cat sat", 4);
    OK(lp_store_put_finding(st, session, run, "note", "copies the previous token", 1, 2, 3, &note));
    json_t *o = q_obj(st, "SELECT * FROM findings WHERE id = ?1", json_pack("[I]", (json_int_t)note));
    assert_str_field(o, "kind", "note");
    assert_int_field(o, "run_id", run);
    assert_int_field(o, "layer", 1);
    assert_int_field(o, "head", 2);
    assert_int_field(o, "pos", 3);
    assert_int_field(o, "token_id", 103);
    json_decref(o);
    OK(lp_store_put_finding(st, session, 0, "note", "no run, no place", -1, -1, -1, &bare));
    o = q_obj(st, "SELECT run_id, layer, head, pos, token_id FROM findings WHERE id = ?1",
              json_pack("[I]", (json_int_t)bare));
    const char *keys[] = {"run_id", "layer", "head", "pos", "token_id"};
    for (int i = 0; i < 5; i++) assert_true(json_is_null(json_object_get(o, keys[i])));
    json_decref(o);
    OK(lp_store_put_finding(st, session, run, "tag", "induction", -1, -1, -1, &tag));
    assert_int_equal(q_int(st, "SELECT count(*) FROM findings WHERE kind = 'tag' AND text = 'induction'", NULL), 1);
    EXPECT_ERROR(lp_store_put_finding(st, session, run, "idea", "x", -1, -1, -1, NULL), LP_EINVAL, "'note' or a 'tag'");
}

/* ---- sql ---- */

static void sql_refuses_writes_without_write(void **state) {
    fixture *f = *state;
    lp_store *st = f->st;
    OK(lp_store_session_new(st, "s", NULL));
    char attach[4400];
    snprintf(attach, sizeof attach, "ATTACH '%s' AS other", in(f, "attached.db"));
    const char *writes[] = {"INSERT INTO sessions (name) VALUES ('t')",
                            "DELETE FROM sessions",
                            "UPDATE sessions SET name = 'u'",
                            "CREATE TABLE mine (a)",
                            "DROP VIEW runs_view",
                            "CREATE TEMP TABLE scratch (a)",
                            "PRAGMA user_version = 5",
                            "PRAGMA foreign_keys = OFF",
                            "PRAGMA query_only = 1",
                            "BEGIN",
                            "SAVEPOINT sp",
                            "VACUUM",
                            attach,
                            "SELECT 1; DELETE FROM sessions"};
    for (size_t i = 0; i < sizeof writes / sizeof *writes; i++) {
        json_t *rows = (json_t *)1, *table = (json_t *)1;
        int rc = lp_store_query(st, writes[i], NULL, false, &rows, &table);
        if (rc != LP_EINVAL || !strstr(lp_errmsg(), "read-only") || !strstr(lp_errmsg(), "--write"))
            fail_msg("%s: got %d (%s)", writes[i], rc, lp_errmsg());
        assert_null(rows);
        assert_null(table);
    }
    assert_int_equal(q_int(st, "SELECT count(*) FROM sessions WHERE name = 's'", NULL), 1);
    assert_int_equal(q_int(st, "PRAGMA user_version", NULL), SCHEMA_LATEST);
    assert_int_equal(q_int(st, "PRAGMA foreign_keys", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM sqlite_schema WHERE name IN ('mine', 'runs_view')", NULL), 1);
    assert_false(exists(in(f, "attached.db")));
    /* What reads is allowed, PRAGMAs included. */
    json_t *rows = q_rows(st, "PRAGMA table_info(runs)", NULL);
    assert_true(json_array_size(rows) >= 6);
    json_decref(rows);
    assert_int_equal(q_int(st, "SELECT count(*) FROM pragma_table_info('findings')", NULL), 12);
}

static void sql_allows_writes_with_write(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    json_t *rows = (json_t *)1, *table = (json_t *)1;
    OK(lp_store_query(st, "CREATE TABLE mine (a TEXT); INSERT INTO mine VALUES ('x'), ('y')", NULL, true, &rows, &table));
    assert_null(rows); /* nothing returned columns */
    assert_null(table);
    assert_int_equal(q_int(st, "SELECT count(*) FROM mine", NULL), 2);
    json_t *p = json_pack("[s]", "x");
    OK(lp_store_query(st, "DELETE FROM mine WHERE a = ?1", p, true, NULL, NULL));
    json_decref(p);
    assert_int_equal(q_int(st, "SELECT count(*) FROM mine", NULL), 1);
    OK(lp_store_query(st, "BEGIN; INSERT INTO mine VALUES ('z'); COMMIT", NULL, true, NULL, NULL));
    assert_int_equal(q_int(st, "SELECT count(*) FROM mine", NULL), 2);
    OK(lp_store_query(st, "PRAGMA user_version = 1", NULL, true, NULL, NULL));
}

static void sql_unfinished_transaction_is_rolled_back(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session;
    OK(lp_store_session_default(st, &session));
    EXPECT_ERROR(lp_store_query(st, "BEGIN; INSERT INTO sessions (name) VALUES ('half')", NULL, true, NULL, NULL),
                 LP_EINVAL, "sql:", "rolled back");
    assert_int_equal(q_int(st, "SELECT count(*) FROM sessions WHERE name = 'half'", NULL), 0);
    EXPECT_ERROR(lp_store_query(st, "BEGIN; INSERT INTO sessions (name) VALUES ('half'); SELEC", NULL, true, NULL, NULL),
                 LP_EINVAL, "sql:", "syntax error");
    assert_int_equal(q_int(st, "SELECT count(*) FROM sessions WHERE name = 'half'", NULL), 0);
    put_fake_run(st, session, 0, "recording still works", 2);
}

static void sql_last_statement_with_columns_gives_the_result(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    json_t *rows, *table;
    OK(lp_store_query(st, "SELECT 1 AS a; -- a comment\n SELECT 2 AS b, 'x' AS c;  /* trailing */ ", NULL, false, &rows,
                      &table));
    json_t *cols = json_object_get(table, "columns");
    assert_int_equal(json_array_size(cols), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 0), "name")), "b");
    assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 1), "name")), "c");
    assert_int_equal(json_array_size(rows), 1);
    assert_int_field(json_array_get(rows, 0), "b", 2);
    assert_str_field(json_array_get(rows, 0), "c", "x");
    json_decref(rows);
    json_decref(table);
    OK(lp_store_query(st,
                      "INSERT INTO sessions (name) VALUES ('a'); SELECT count(*) AS n FROM sessions;"
                      " INSERT INTO sessions (name) VALUES ('b')",
                      NULL, true, &rows, &table));
    assert_int_field(json_array_get(rows, 0), "n", 1);
    json_decref(rows);
    json_decref(table);
    assert_int_equal(q_int(st, "SELECT count(*) FROM sessions", NULL), 2);
}

static void sql_binds_parameters_by_position(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    json_t *rows, *table;
    json_t *params = json_pack("[I,f,s,n,b,b]", (json_int_t)1 << 40, 2.5, "it's'; --", 1, 0);
    OK(lp_store_query(st, "SELECT ?1 AS i, ?2 AS r, ?3 AS s, ?4 IS NULL AS z, ?5 AS t, ?6 AS f, typeof(?2) AS ty", params,
                      false, &rows, &table));
    json_t *o = json_array_get(rows, 0);
    assert_int_field(o, "i", (int64_t)1 << 40);
    assert_real_field(o, "r", 2.5);
    assert_str_field(o, "s", "it's'; --");
    assert_int_field(o, "z", 1);
    assert_int_field(o, "t", 1);
    assert_int_field(o, "f", 0);
    assert_str_field(o, "ty", "real");
    json_t *row = json_array_get(json_object_get(table, "rows"), 0);
    assert_int_equal(json_array_size(row), 7);
    assert_string_equal(json_string_value(json_array_get(row, 2)), "it's'; --");
    json_decref(rows);
    json_decref(table);
    json_decref(params);
    params = json_pack("[i]", 1);
    EXPECT_ERROR(lp_store_query(st, "SELECT ?1, ?2", params, false, &rows, &table), LP_EINVAL, "sql:", "2 parameters");
    json_decref(params);
    params = json_pack("[[]]");
    EXPECT_ERROR(lp_store_query(st, "SELECT ?1", params, false, &rows, &table), LP_EINVAL, "sql:", "array");
    json_decref(params);
}

static void sql_shows_blobs_as_byte_counts(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    json_t *rows, *table;
    OK(lp_store_query(st, "SELECT zeroblob(7) AS b, x'00ff' AS c", NULL, false, &rows, &table));
    assert_int_field(json_object_get(json_array_get(rows, 0), "b"), "blob_bytes", 7);
    assert_int_field(json_object_get(json_array_get(rows, 0), "c"), "blob_bytes", 2);
    json_t *cell = json_array_get(json_array_get(json_object_get(table, "rows"), 0), 0);
    assert_int_field(cell, "blob_bytes", 7);
    json_decref(rows);
    json_decref(table);
}

static void sql_error_is_einval_with_sqlites_message(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    json_t *rows = (json_t *)1, *table = (json_t *)1;
    EXPECT_ERROR(lp_store_query(st, "SELEC 1", NULL, false, &rows, &table), LP_EINVAL, "syntax error");
    assert_true(strncmp(lp_errmsg(), "sql: ", 5) == 0);
    assert_null(rows);
    assert_null(table);
    EXPECT_ERROR(lp_store_query(st, "SELECT * FROM foo", NULL, false, &rows, &table), LP_EINVAL, "foo");
    assert_string_equal(lp_errmsg(), "sql: no such table: foo");
    EXPECT_ERROR(lp_store_query(st, "SELECT 1; SELECT * FROM foo", NULL, false, &rows, &table), LP_EINVAL, "foo");
    assert_null(rows);
    EXPECT_ERROR(lp_store_query(st, "INSERT INTO findings (session_id, kind, text) VALUES (1, 'idea', 'x')", NULL, true,
                                &rows, &table),
                 LP_EINVAL, "sql: ", "constraint");
}

static void sql_empty_result_keeps_its_columns(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    json_t *rows, *table;
    OK(lp_store_query(st, "SELECT id, name FROM sessions WHERE 0", NULL, false, &rows, &table));
    assert_true(json_is_array(rows));
    assert_int_equal(json_array_size(rows), 0);
    assert_int_equal(json_array_size(json_object_get(table, "rows")), 0);
    json_t *cols = json_object_get(table, "columns");
    assert_int_equal(json_array_size(cols), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 1), "name")), "name");
    json_decref(rows);
    json_decref(table);
}

/* ---- views ---- */

static void views_answer_the_common_questions(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t model = put_test_model(st, "/models/gpt2"), session, run, note;
    OK(lp_store_session_new(st, "heads", &session));
    run = put_fake_run(st, session, model, "The cat sat on", 4); /* tokens " the", " cat", "\xff\xfe", " sat" */
    OK(lp_store_put_finding(st, session, run, "note", "looks back", 1, 2, 1, &note));
    json_t *p = json_pack("[I]", (json_int_t)run);

    json_t *o = q_obj(st, "SELECT * FROM runs_view WHERE id = ?1", json_incref(p));
    assert_int_field(o, "session_id", session);
    assert_str_field(o, "session", "heads");
    assert_int_field(o, "model_id", model);
    assert_str_field(o, "model", "/models/gpt2");
    assert_str_field(o, "text", "The cat sat on");
    assert_int_field(o, "n_tokens", 4);
    assert_str_field(o, "next_token", TOKS[4]); /* rank 1 at position 3 */
    assert_int_field(o, "next_token_id", 230);
    assert_real_field(o, "next_prob", 0.5);
    assert_true(json_is_string(json_object_get(o, "created_at")));
    json_decref(o);

    o = q_obj(st, "SELECT * FROM findings_view WHERE id = ?1", json_pack("[I]", (json_int_t)note));
    assert_int_field(o, "session_id", session);
    assert_str_field(o, "session", "heads");
    assert_str_field(o, "kind", "note");
    assert_str_field(o, "text", "looks back");
    assert_int_field(o, "layer", 1);
    assert_int_field(o, "head", 2);
    assert_int_field(o, "pos", 1);
    assert_str_field(o, "token", " cat");
    assert_int_field(o, "token_id", 101);
    assert_int_field(o, "run_id", run);
    assert_str_field(o, "run_text", "The cat sat on");
    assert_str_field(o, "model", "/models/gpt2");
    json_decref(o);

    assert_int_equal(q_int(st, "SELECT count(*) FROM head_metrics_view WHERE run_id = ?1", json_incref(p)), 6);
    o = q_obj(st, "SELECT * FROM head_metrics_view WHERE run_id = ?1 AND layer = 1 AND head = 2", json_incref(p));
    assert_str_field(o, "session", "heads");
    assert_str_field(o, "model", "/models/gpt2");
    assert_str_field(o, "arch", "gpt2");
    assert_str_field(o, "run_text", "The cat sat on");
    assert_real_field(o, "entropy", 1.2);
    assert_real_field(o, "induction", 0.4);
    assert_real_field(o, "max_attn", 0.5);
    json_decref(o);

    assert_int_equal(q_int(st, "SELECT count(*) FROM predictions_view WHERE run_id = ?1", json_incref(p)), 8);
    o = q_obj(st, "SELECT * FROM predictions_view WHERE run_id = ?1 AND pos = 1 AND rank = 2", json_incref(p));
    assert_str_field(o, "run_text", "The cat sat on");
    assert_str_field(o, "input_token", " cat");
    assert_int_field(o, "token_id", 211);
    assert_str_field(o, "token", TOKS[3]);
    assert_real_field(o, "prob", 0.25);
    assert_real_field(o, "logit", 9.0);
    json_decref(o);

    /* Token columns show as tokens; the prev_token metric does not. */
    json_t *rows, *table;
    OK(lp_store_query(st, "SELECT next_token, text FROM runs_view; ", NULL, false, &rows, &table));
    json_t *cols = json_object_get(table, "columns");
    assert_true(json_is_true(json_object_get(json_array_get(cols, 0), "token")));
    assert_true(json_is_false(json_object_get(json_array_get(cols, 1), "token")));
    json_decref(rows);
    json_decref(table);
    OK(lp_store_query(st, "SELECT prev_token FROM head_metrics_view", NULL, false, &rows, &table));
    assert_true(json_is_false(json_object_get(json_array_get(json_object_get(table, "columns"), 0), "token")));
    json_decref(rows);
    json_decref(table);
    json_decref(p);
}

/* Schema v2: attributions with their scores, analyses as JSON, head scans with labels. */
/* A head scan row's encoder and encoder-decoder scores: none. */
#define NO_SCORES NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN

static void analyses_are_recorded_and_viewed(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t model = put_test_model(st, "/models/gpt2"), session, run, attr, analysis, scan;
    OK(lp_store_session_new(st, "circuits", &session));
    run = put_fake_run(st, session, model, "The cat sat on", 4);
    float scores[4] = {0.5f, -0.25f, 1.0f, 0.125f};
    lp_store_attribution a = {run, "ig", "logit", 3, 230, -1, "{\"steps\":32}", scores, 4, 0.001};
    OK(lp_store_put_attribution(st, &a, &attr));
    assert_int_equal(q_int(st, "SELECT count(*) FROM attributions_view WHERE id = ?1", json_pack("[I]", (json_int_t)attr)), 4);
    json_t *o = q_obj(st, "SELECT * FROM attributions_view WHERE id = ?1 AND pos = 1", json_pack("[I]", (json_int_t)attr));
    assert_str_field(o, "method", "ig");
    assert_str_field(o, "token", " cat");
    assert_str_field(o, "run_text", "The cat sat on");
    assert_real_field(o, "score", -0.25);
    assert_real_field(o, "delta", 0.001);
    assert_int_field(o, "target_pos", 3);
    assert_true(json_is_null(json_object_get(o, "contrast_id")));
    json_decref(o);
    /* A method without a completeness gap stores NULL, not NaN. */
    lp_store_attribution r = {run, "rollout", "logit", 3, -1, -1, NULL, scores, 4, NAN};
    OK(lp_store_put_attribution(st, &r, &attr));
    assert_int_equal(q_int(st, "SELECT count(*) FROM attributions WHERE id = ?1 AND delta IS NULL AND params = '{}'",
                           json_pack("[I]", (json_int_t)attr)), 1);

    OK(lp_store_put_analysis(st, run, "patch", "{\"site\":\"resid_pre\"}", "{\"values\":[[1,0]]}", &analysis));
    assert_int_equal(q_int(st, "SELECT json_extract(result, '$.values[0][0]') FROM analyses WHERE id = ?1",
                           json_pack("[I]", (json_int_t)analysis)), 1);

    lp_store_head_scan rows[2] = {{0, 1, 0.9, 0.1, 0.05, 0.2, "prev_token", NULL, NULL, NO_SCORES},
                                  {1, 0, 0.1, 0.2, 0.7, 0.3, "induction", NULL, NULL, NO_SCORES}};
    OK(lp_store_put_head_scan(st, model, 0, rows, 2, &scan));
    o = q_obj(st, "SELECT * FROM head_scans_view WHERE scan_id = ?1 AND layer = 1", json_pack("[I]", (json_int_t)scan));
    assert_str_field(o, "labels", "induction");
    assert_str_field(o, "model", "/models/gpt2");
    assert_real_field(o, "induction", 0.7);
    assert_true(json_is_null(json_object_get(o, "run_id")));
    json_decref(o);
    /* Deleting the run takes its attributions and analyses with it. */
    json_t *rows_, *table;
    json_t *params = json_pack("[I]", (json_int_t)run); /* lp_store_query borrows its params */
    OK(lp_store_query(st, "DELETE FROM runs WHERE id = ?1", params, true, &rows_, &table));
    json_decref(params);
    assert_int_equal(q_int(st, "SELECT count(*) FROM attribution_scores", NULL), 0);
    assert_int_equal(q_int(st, "SELECT count(*) FROM analyses", NULL), 0);
}

/* A file made by the previous version (schema 1) is migrated to the latest on open, its
 * data kept. */
static void copy_fixture(const char *from, const char *to) {
    FILE *src = fopen(from, "rb"), *dst = fopen(to, "wb");
    assert_non_null(src);
    assert_non_null(dst);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, src)) > 0) assert_int_equal(fwrite(buf, 1, n, dst), n);
    fclose(src);
    assert_int_equal(fclose(dst), 0);
}

/* A file made by an older version (schema 1: loupe's version-2 file without what version 2
 * added) is migrated to the latest on open, step by step, its data kept. */
static void version_1_file_is_migrated(void **state) {
    fixture *f = *state;
    copy_fixture("tests/fixtures/store_v2.db", f->path);
    make_sqlite_file(f->path, "DROP VIEW attributions_view; DROP VIEW head_scans_view; DROP TABLE attribution_scores;"
                              " DROP TABLE attributions; DROP TABLE analyses; DROP TABLE head_scan_scores;"
                              " DROP TABLE head_scans; PRAGMA user_version = 1;");
    lp_store *st;
    OK(lp_store_open(&st, f->path));
    assert_int_equal(lp_store_schema_version(st), SCHEMA_LATEST);
    assert_int_equal(q_int(st, "SELECT count(*) FROM sessions WHERE name = 'enc'", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM sqlite_schema WHERE name = 'attributions_view'", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM classifications", NULL), 4);
    lp_store_close(st);
}

/* tests/fixtures/store_v2.db was written by loupe's schema-2 binary (make_store_v2.sh): a
 * BERT classifier's pair with an attribution, a run given as ids with types (which version 2
 * dropped), a BERT masked LM's pair with two masks, a text that holds the words " --pair "
 * (one [SEP]: not a pair), a RoBERTa pair (types all 0) and a decoder's run. Opening it
 * migrates it to the latest; what version 2 kept in other forms is filled in. */
static void version_2_file_made_by_loupe_is_migrated(void **state) {
    fixture *f = *state;
    copy_fixture("tests/fixtures/store_v2.db", f->path);
    lp_store *st;
    OK(lp_store_open(&st, f->path));
    assert_int_equal(lp_store_schema_version(st), SCHEMA_LATEST);
    json_t *rows = q_rows(st, "SELECT id, head FROM models ORDER BY id", NULL);
    const char *heads[4] = {"classifier", "masked-lm", "classifier", "lm"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_array_get(json_array_get(rows, (size_t)i), 1)), heads[i]);
    json_decref(rows);
    /* Pairs split into their two texts; the text that only held the words is left whole. */
    json_t *o = q_obj(st, "SELECT text, pair FROM runs WHERE id = 1", NULL);
    assert_str_field(o, "text", "this movie was not good.");
    assert_str_field(o, "pair", "i liked the film.");
    json_decref(o);
    o = q_obj(st, "SELECT text, pair FROM runs WHERE id = 4", NULL);
    assert_str_field(o, "text", "the quick [MASK] jumped .");
    assert_str_field(o, "pair", "the [MASK] was good");
    json_decref(o);
    assert_int_equal(q_int(st, "SELECT text = 'a --pair b' AND pair IS NULL FROM runs WHERE id = 5", NULL), 1);
    assert_int_equal(q_int(st, "SELECT text = 'good' AND pair = 'bad' FROM runs WHERE id = 6", NULL), 1);
    /* Token types: BERT pairs 0 through the first [SEP], then 1; RoBERTa's stay 0. */
    const char *types_sql = "SELECT group_concat(type, '') FROM (SELECT type FROM tokens WHERE run_id = ?1 ORDER BY pos)";
    o = q_obj(st, types_sql, json_pack("[i]", 1));
    json_t *v = json_object_get(o, "group_concat(type, '')");
    assert_string_equal(json_string_value(v), "000000001111111");
    json_decref(o);
    o = q_obj(st, types_sql, json_pack("[i]", 6));
    assert_string_equal(json_string_value(json_object_get(o, "group_concat(type, '')")), "00000000000");
    json_decref(o);
    /* Roles from the encoders' token names; masks found by SQL. */
    assert_int_equal(q_int(st, "SELECT group_concat(pos) = '3,9' FROM tokens WHERE run_id = 4 AND special = 'mask'", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM tokens WHERE run_id = 6 AND special = 'sep'", NULL), 3);
    assert_int_equal(q_int(st, "SELECT count(*) FROM tokens WHERE run_id = 7 AND special IS NOT NULL", NULL), 0);
    /* rerun reads the pair back exactly. */
    lp_store_saved_run r;
    OK(lp_store_get_run(st, 1, &r));
    assert_string_equal(r.pair, "i liked the film.");
    assert_int_equal(r.types[7], 0);
    assert_int_equal(r.types[8], 1);
    lp_store_saved_run_free(&r);
    /* The views over the migrated rows. */
    o = q_obj(st, "SELECT * FROM classifications WHERE run_id = 1", NULL);
    assert_str_field(o, "label", "negative");
    assert_str_field(o, "pair", "i liked the film.");
    assert_real_field(o, "prob", 0.726186215475241);
    json_decref(o);
    o = q_obj(st, "SELECT * FROM classification_attributions WHERE run_id = 1", NULL);
    assert_str_field(o, "method", "ig");
    assert_str_field(o, "explained", "negative");
    assert_str_field(o, "top_token", "good");
    assert_int_field(o, "top_pos", 5);
    json_decref(o);
    assert_int_equal(q_int(st, "SELECT count(*) FROM fills WHERE run_id = 4", NULL), 10); /* 2 masks x top 5 */
    o = q_obj(st, "SELECT * FROM runs_view WHERE id = 4", NULL);
    assert_int_field(o, "next_token_id", 73); /* the first mask's top candidate, not the [SEP]'s */
    json_decref(o);
    lp_store_close(st);
}

/* ---- encoder-decoders (schema v4) ---- */

static int64_t put_t5_model(lp_store *st) {
    lp_store_model m = {"/models/t5", "T5ForConditionalGeneration", 3, 4, 4, 32, 48, 600, 512, 1000, "float32",
                        "0123456789abcdef", "lm"};
    int64_t id = 0;
    OK(lp_store_put_model(st, &m, &id));
    return id;
}

/* A T5 run as the command layer records it: 4 source tokens, the decoder's start and 2
 * target tokens, self metrics of both stacks and the decoder's cross metrics, and cross
 * maxima for one layer (two heads and their mean). */
static int64_t put_t5_run(lp_store *st, int64_t session, int64_t model, const char *target_kind) {
    static const int src[] = {47, 62, 5, 1}, dec[] = {0, 47, 42};
    static const char *const src_tok[] = {" the", " cat", "\xe2\x96\x81", "</s>"}, *const dec_tok[] = {"<pad>", " le",
                                                                                                       " chat"};
    static const char *const src_role[] = {NULL, NULL, NULL, "eos"}, *const dec_role[] = {"pad", NULL, NULL};
    lp_store_head_metric heads[] = {
        {0, 0, 1.0, 0.5, 0.1, NAN, NAN, 0.7, "enc", "self", 0, 0, 0, 0},
        {0, 0, 0.9, 0.6, 0.2, NAN, NAN, 0.8, "dec", "self", 0, 0, 0, 0},
        {0, 0, 0.4, NAN, NAN, NAN, NAN, 0.9, "dec", "cross", 0.05, 0.75, 1.0, 0.5},
    };
    lp_store_cross_max cross[] = {
        {0, 0, 1, 0, 0.9}, {0, 0, 2, 1, 0.8}, {0, 1, 1, 3, 0.6}, {0, 1, 2, 3, 0.7}, {0, -1, 1, 0, 0.5}, {0, -1, 2, 1, 0.45},
    };
    lp_store_run r = {.session_id = session, .model_id = model, .text = "the cat", .ids = dec, .token_text = dec_tok,
                      .n = 3, .special = dec_role, .heads = heads, .n_heads = 3, .target = "le chat",
                      .target_kind = target_kind, .src_ids = src, .src_text = src_tok, .src_special = src_role,
                      .n_src = 4, .cross = cross, .n_cross = 6};
    int64_t id = 0;
    OK(lp_store_put_run(st, &r, &id));
    return id;
}

/* A source and a target: both texts, both sides' tokens, and get_run gives back what
 * `rerun` needs (the source ids, the decoder's ids, the target and how it came). */
static void seq2seq_run_keeps_source_and_target(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, model = put_t5_model(st);
    OK(lp_store_session_default(st, &session));
    int64_t run = put_t5_run(st, session, model, "given");
    json_t *o = q_obj(st, "SELECT * FROM runs_view WHERE id = ?1", json_pack("[I]", (json_int_t)run));
    assert_str_field(o, "text", "the cat");
    assert_str_field(o, "source", "the cat");
    assert_str_field(o, "target", "le chat");
    assert_str_field(o, "target_kind", "given");
    assert_int_field(o, "n_source", 4);
    assert_int_field(o, "n_tokens", 3);
    json_decref(o);
    assert_int_equal(q_int(st, "SELECT count(*) FROM tokens WHERE run_id = ?1 AND side = 'source'",
                           json_pack("[I]", (json_int_t)run)), 4);
    assert_int_equal(q_int(st, "SELECT pos FROM tokens WHERE run_id = ?1 AND side = 'source' AND special = 'eos'",
                           json_pack("[I]", (json_int_t)run)), 3);
    lp_store_saved_run r;
    OK(lp_store_get_run(st, run, &r));
    assert_int_equal(r.n_src, 4);
    assert_int_equal(r.src_ids[1], 62);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.ids[0], 0);
    assert_int_equal(r.ids[2], 42);
    assert_string_equal(r.text, "the cat");
    assert_string_equal(r.target, "le chat");
    assert_string_equal(r.target_kind, "given");
    lp_store_saved_run_free(&r);
    /* A one-stack run has none of it. */
    int64_t plain = put_fake_run(st, session, put_test_model(st, "/models/gpt2"), "The cat", 2);
    OK(lp_store_get_run(st, plain, &r));
    assert_int_equal(r.n_src, 0);
    assert_null(r.target_kind);
    lp_store_saved_run_free(&r);
    o = q_obj(st, "SELECT * FROM runs_view WHERE id = ?1", json_pack("[I]", (json_int_t)plain));
    assert_true(json_is_null(json_object_get(o, "source")) && json_is_null(json_object_get(o, "n_source")));
    json_decref(o);
    assert_int_equal(q_int(st, "SELECT count(DISTINCT side) FROM tokens WHERE run_id = ?1",
                           json_pack("[I]", (json_int_t)plain)), 1);
    /* Source tokens without an encoder-decoder's target kind are refused. */
    int ids[1] = {3};
    lp_store_run bad = {.session_id = session, .ids = ids, .n = 1, .src_ids = ids, .n_src = 1};
    EXPECT_ERROR(lp_store_put_run(st, &bad, NULL), LP_EINVAL, "source tokens");
}

/* Heads say their stack and kind; cross metrics are stored for cross rows only, and the self
 * metrics of cross rows are NULL. */
static void seq2seq_heads_say_stack_and_kind(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, model = put_t5_model(st);
    OK(lp_store_session_default(st, &session));
    int64_t run = put_t5_run(st, session, model, "greedy");
    assert_int_equal(q_int(st, "SELECT count(*) FROM head_metrics WHERE run_id = ?1 AND layer = 0 AND head = 0",
                           json_pack("[I]", (json_int_t)run)), 3);
    json_t *o = q_obj(st, "SELECT * FROM head_metrics_view WHERE run_id = ?1 AND kind = 'cross'",
                      json_pack("[I]", (json_int_t)run));
    assert_str_field(o, "stack", "dec");
    assert_real_field(o, "diagonal", 0.75);
    assert_real_field(o, "source_eos", 0.05);
    assert_real_field(o, "coverage", 0.5);
    assert_true(json_is_null(json_object_get(o, "prev_token")));
    json_decref(o);
    o = q_obj(st, "SELECT * FROM head_metrics_view WHERE run_id = ?1 AND stack = 'enc'", json_pack("[I]", (json_int_t)run));
    assert_str_field(o, "kind", "self");
    assert_real_field(o, "prev_token", 0.5);
    assert_true(json_is_null(json_object_get(o, "diagonal")) && json_is_null(json_object_get(o, "monotonic")));
    json_decref(o);
    /* A one-stack model's heads, stack not given: its model's (an LM's are a decoder's). */
    int64_t plain = put_fake_run(st, session, put_test_model(st, "/models/gpt2"), "The cat", 2);
    assert_int_equal(q_int(st, "SELECT count(*) FROM head_metrics WHERE run_id = ?1 AND stack = 'dec' AND kind = 'self'"
                               " AND source_eos IS NULL", json_pack("[I]", (json_int_t)plain)), 6);
}

/* The alignments view: which source token each target token attended to most, per head
 * and for the heads' mean (head NULL). */
static void alignments_view_answers_which_source_token(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, model = put_t5_model(st);
    OK(lp_store_session_default(st, &session));
    int64_t run = put_t5_run(st, session, model, "given");
    json_t *rows = q_rows(st, "SELECT target_pos, target_token, source_pos, source_token, weight FROM alignments"
                              " WHERE run_id = ?1 AND layer = 0 AND head IS NULL ORDER BY target_pos",
                          json_pack("[I]", (json_int_t)run));
    assert_int_equal(json_array_size(rows), 2);
    json_t *r0 = json_array_get(rows, 0), *r1 = json_array_get(rows, 1);
    assert_int_equal(json_integer_value(json_array_get(r0, 0)), 1);
    assert_string_equal(json_string_value(json_array_get(r0, 1)), " le");
    assert_string_equal(json_string_value(json_array_get(r0, 3)), " the");
    assert_string_equal(json_string_value(json_array_get(r1, 1)), " chat");
    assert_string_equal(json_string_value(json_array_get(r1, 3)), " cat");
    assert_true(fabs(json_real_value(json_array_get(r1, 4)) - 0.45) < 1e-12);
    json_decref(rows);
    json_t *o = q_obj(st, "SELECT * FROM alignments WHERE run_id = ?1 AND head = 1 AND target_pos = 2",
                      json_pack("[I]", (json_int_t)run));
    assert_str_field(o, "source_token", "</s>");
    json_decref(o);
    /* Deleting the run deletes its alignment. */
    OK(lp_store_query(st, "DELETE FROM runs", NULL, true, NULL, NULL));
    assert_int_equal(q_int(st, "SELECT count(*) FROM cross_maxima", NULL), 0);
}

/* An encoder-decoder's attribution (the attr contract: S source scores, then T decoder
 * scores) is stored split by side, each side's positions from 0, and attributions_view
 * names each score's token on its side. */
static void seq2seq_attribution_is_split_by_side(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, model = put_t5_model(st), attr;
    OK(lp_store_session_default(st, &session));
    int64_t run = put_t5_run(st, session, model, "given");
    float scores[7] = {0.1f, 0.2f, 0.3f, 0.4f, 1.5f, 2.5f, 3.5f}; /* S = 4, then T = 3 */
    lp_store_attribution a = {run, "gxi", "logit", 2, 42, -1, NULL, scores, 7, NAN};
    OK(lp_store_put_attribution_split(st, &a, 4, &attr));
    json_t *params = json_pack("[I]", (json_int_t)attr);
    assert_int_equal(q_int(st, "SELECT count(*) FROM attribution_scores WHERE attribution_id = ?1 AND side = 'source'",
                           json_incref(params)), 4);
    assert_int_equal(q_int(st, "SELECT group_concat(pos) = '0,1,2' FROM (SELECT pos FROM attribution_scores"
                               " WHERE attribution_id = ?1 AND side = 'target' ORDER BY pos)", json_incref(params)), 1);
    json_t *o = q_obj(st, "SELECT * FROM attributions_view WHERE id = ?1 AND side = 'source' AND pos = 1",
                      json_incref(params));
    assert_str_field(o, "token", " cat");
    assert_real_field(o, "score", 0.2f);
    json_decref(o);
    o = q_obj(st, "SELECT * FROM attributions_view WHERE id = ?1 AND side = 'target' AND pos = 1", json_incref(params));
    assert_str_field(o, "token", " le");
    assert_real_field(o, "score", 2.5);
    json_decref(o);
    assert_int_equal(q_int(st, "SELECT count(*) FROM attributions_view WHERE id = ?1", params), 7);
    /* More source scores than scores: refused. */
    EXPECT_ERROR(lp_store_put_attribution_split(st, &a, 8, NULL), LP_EINVAL, "over the source");
}

/* Head scans take a stack and kind; without them, the model's stack and self. */
static void head_scan_rows_say_stack_and_kind(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t t5 = put_t5_model(st), scan;
    lp_store_head_scan rows[3] = {{0, 0, 0.1, 0.2, 0.3, 0.4, "", "enc", "self", NO_SCORES},
                                  {0, 0, 0.5, 0.6, 0.7, 0.8, "", "dec", NULL, NO_SCORES},
                                  {0, 0, NAN, NAN, NAN, NAN, "", "dec", "cross", NO_SCORES}};
    OK(lp_store_put_head_scan(st, t5, 0, rows, 3, &scan));
    assert_int_equal(q_int(st, "SELECT count(DISTINCT stack || kind) FROM head_scans_view WHERE scan_id = ?1",
                           json_pack("[I]", (json_int_t)scan)), 3);
    lp_store_model bert = {"/models/bert", "BertForMaskedLM", 2, 2, 2, 16, 32, 100, 64, 10, "float32", "b", "masked-lm"};
    int64_t mid;
    OK(lp_store_put_model(st, &bert, &mid));
    lp_store_head_scan one = {1, 1, 0.1, 0.1, 0.1, 0.1, NULL, NULL, NULL, NO_SCORES};
    OK(lp_store_put_head_scan(st, mid, 0, &one, 1, &scan));
    assert_int_equal(q_int(st, "SELECT stack = 'enc' AND kind = 'self' FROM head_scan_scores WHERE scan_id = ?1",
                           json_pack("[I]", (json_int_t)scan)), 1);
}

/* A scan's rows keep an encoder's and an encoder-decoder's scores in columns of their own;
 * NAN is NULL, not 0. */
static void head_scan_rows_keep_every_kinds_scores(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t t5 = put_t5_model(st), scan;
    lp_store_head_scan enc = {0, 1, 0.1, NAN, NAN, NAN, "broad", "enc", "self", 0.2, NAN, NAN, 0.6, 0.3, NAN, NAN, NAN, NAN};
    lp_store_head_scan cross = {1, 2, NAN, NAN, NAN, NAN, "aligned", "dec", "cross", NAN, NAN, NAN, NAN, 0.05, 0.9,
                                0.8, 0.7, 0.4};
    lp_store_head_scan rows[2] = {enc, cross};
    OK(lp_store_put_head_scan(st, t5, 0, rows, 2, &scan));
    json_t *o = q_obj(st, "SELECT * FROM head_scans_view WHERE scan_id = ?1 AND kind = 'cross'",
                      json_pack("[I]", (json_int_t)scan));
    assert_int_field(o, "layer", 1);
    assert_real_field(o, "aligned", 0.9);
    assert_real_field(o, "diagonal", 0.8);
    assert_real_field(o, "monotonic", 0.7);
    assert_real_field(o, "coverage", 0.4);
    assert_real_field(o, "source_eos", 0.05);
    assert_true(json_is_null(json_object_get(o, "prev_token")));
    assert_true(json_is_null(json_object_get(o, "next_token")));
    assert_str_field(o, "labels", "aligned");
    json_decref(o);
    o = q_obj(st, "SELECT * FROM head_scans_view WHERE scan_id = ?1 AND stack = 'enc'", json_pack("[I]", (json_int_t)scan));
    assert_real_field(o, "prev_token", 0.1);
    assert_real_field(o, "next_token", 0.2);
    assert_real_field(o, "broad", 0.6);
    assert_true(json_is_null(json_object_get(o, "induction")));
    assert_true(json_is_null(json_object_get(o, "cls_sink")));
    json_decref(o);
}

/* A finding on an encoder-decoder's run says its stack and kind; the encoder's pos is a
 * source position, so its token is the source's. Bad names are refused. */
static void seq2seq_finding_says_stack_and_kind(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, model = put_t5_model(st), enc, cross;
    OK(lp_store_session_default(st, &session));
    int64_t run = put_t5_run(st, session, model, "given");
    OK(lp_store_put_finding_at(st, session, run, "note", "looks at the cat", &(lp_store_place){"enc", "self", 0, 1, 1},
                               &enc));
    OK(lp_store_put_finding_at(st, session, run, "note", "aligns", &(lp_store_place){"dec", "cross", 2, 3, 2}, &cross));
    json_t *o = q_obj(st, "SELECT * FROM findings_view WHERE id = ?1", json_pack("[I]", (json_int_t)enc));
    assert_str_field(o, "stack", "enc");
    assert_str_field(o, "attn_kind", "self");
    assert_str_field(o, "token", " cat");
    assert_int_field(o, "token_id", 62);
    json_decref(o);
    o = q_obj(st, "SELECT * FROM findings_view WHERE id = ?1", json_pack("[I]", (json_int_t)cross));
    assert_str_field(o, "stack", "dec");
    assert_str_field(o, "attn_kind", "cross");
    assert_str_field(o, "token", " chat");
    assert_int_field(o, "token_id", 42);
    json_decref(o);
    EXPECT_ERROR(lp_store_put_finding_at(st, session, run, "note", "x", &(lp_store_place){"mid", NULL, -1, -1, -1}, NULL),
                 LP_EINVAL, "'enc' or 'dec'");
    EXPECT_ERROR(lp_store_put_finding_at(st, session, run, "note", "x", &(lp_store_place){"dec", "both", -1, -1, -1}, NULL),
                 LP_EINVAL, "'self' or 'cross'");
}

/* tests/fixtures/store_v3.db was written by loupe's schema-3 binary (make_store_v3.sh): a
 * decoder's run with an attribution, a scan and a note, T5 runs whose text held
 * "SOURCE --target TARGET", a greedy one and one given as ids, and a BERT pair. Opening it
 * migrates it: texts split, the T5 runs' target kinds, every token on side 'target', heads
 * on their model's stack; its T5 runs cannot be run again (their source was not kept). */
static void version_3_file_made_by_loupe_is_migrated(void **state) {
    fixture *f = *state;
    copy_fixture("tests/fixtures/store_v3.db", f->path);
    lp_store *st;
    OK(lp_store_open(&st, f->path));
    assert_int_equal(lp_store_schema_version(st), SCHEMA_LATEST);
    assert_int_equal(q_int(st, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check <> 'ok'", NULL), 0);
    json_t *o = q_obj(st, "SELECT * FROM runs_view WHERE id = 2", NULL);
    assert_str_field(o, "text", "the cat sat");
    assert_str_field(o, "source", "the cat sat");
    assert_str_field(o, "target", "the dog");
    assert_str_field(o, "target_kind", "given");
    assert_true(json_is_null(json_object_get(o, "n_source")));
    json_decref(o);
    assert_int_equal(q_int(st, "SELECT target_kind = 'greedy' AND text = 'hello world' AND target IS NULL FROM runs"
                               " WHERE id = 3", NULL), 1);
    assert_int_equal(q_int(st, "SELECT target_kind = 'given' AND text IS NULL FROM runs WHERE id = 4", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM runs WHERE target_kind IS NOT NULL", NULL), 3);
    assert_int_equal(q_int(st, "SELECT count(*) FROM tokens WHERE side <> 'target'", NULL), 0);
    assert_int_equal(q_int(st, "SELECT count(*) FROM tokens", NULL), 38);
    assert_int_equal(q_int(st, "SELECT count(DISTINCT run_id) FROM head_metrics WHERE stack = 'enc'", NULL), 1);
    assert_int_equal(q_int(st, "SELECT count(*) FROM head_metrics WHERE run_id = 5 AND stack = 'dec'", NULL), 0);
    assert_int_equal(q_int(st, "SELECT count(*) FROM head_scans_view WHERE stack = 'dec' AND kind = 'self'", NULL), 8);
    assert_int_equal(q_int(st, "SELECT count(*) FROM attributions_view WHERE side = 'target' AND token IS NOT NULL",
                           NULL), 14);
    o = q_obj(st, "SELECT * FROM findings_view", NULL);
    assert_str_field(o, "text", "the IOI prompt");
    json_decref(o);
    o = q_obj(st, "SELECT * FROM classifications WHERE run_id = 5", NULL);
    assert_str_field(o, "pair", "i liked it");
    json_decref(o);
    lp_store_saved_run r;
    OK(lp_store_get_run(st, 2, &r));
    assert_string_equal(r.target_kind, "given");
    assert_int_equal(r.n_src, 0);
    assert_int_equal(r.n, 3);
    lp_store_saved_run_free(&r);
    lp_store_close(st);
}

/* A classifier's label ids are not token ids: an attribution's target is named from the
 * run's own model (version 2's attributions_view took any prediction with that id, from any
 * model, and gave a row for each). */
static void classifier_views_name_labels_not_tokens(void **state) {
    lp_store *st = ((fixture *)*state)->st;
    int64_t session, gpt = put_test_model(st, "/models/gpt2"), cls, run, attr;
    OK(lp_store_session_default(st, &session));
    put_fake_run(st, session, gpt, "tokens with small ids", 3);
    OK(lp_store_query(st, "UPDATE predictions SET token_id = 1 WHERE pos = 0", NULL, true, NULL, NULL));
    lp_store_model m = {"/models/cls", "BertForSequenceClassification", 2, 4, 4, 32, 64, 110, 64, 1, "F32", "c1",
                        "classifier"};
    OK(lp_store_put_model(st, &m, &cls));
    int ids[4] = {2, 50, 60, 3};
    const char *tok[4] = {"[CLS]", "so", "good", "[SEP]"}, *role[4] = {"cls", NULL, NULL, "sep"};
    lp_store_prediction labels[3] = {{0, 1, 2, "positive", 8, 0.7, 2.0}, {0, 2, 1, "neutral", 7, 0.2, 0.7},
                                     {0, 3, 0, "negative", 8, 0.1, 0.1}};
    lp_store_run r = {.session_id = session, .model_id = cls, .text = "so good", .ids = ids, .token_text = tok, .n = 4,
                      .preds = labels, .n_preds = 3, .special = role};
    OK(lp_store_put_run(st, &r, &run));
    float scores[4] = {5.0f, 0.5f, 2.0f, 4.0f}; /* the specials score highest */
    lp_store_attribution a = {run, "saliency", "logit", 0, 1, -1, NULL, scores, 4, NAN};
    OK(lp_store_put_attribution(st, &a, &attr));
    json_t *p = json_pack("[I]", (json_int_t)attr);
    assert_int_equal(q_int(st, "SELECT count(*) FROM attributions_view WHERE id = ?1", json_incref(p)), 4);
    json_t *o = q_obj(st, "SELECT * FROM attributions_view WHERE id = ?1 AND pos = 2", json_incref(p));
    assert_str_field(o, "target_token", "neutral");
    json_decref(o);
    o = q_obj(st, "SELECT * FROM classification_attributions WHERE attribution_id = ?1", p);
    assert_str_field(o, "predicted", "positive");
    assert_str_field(o, "explained", "neutral");
    assert_str_field(o, "top_token", "good");
    assert_real_field(o, "top_score", 2.0);
    json_decref(o);
    assert_int_equal(q_int(st, "SELECT count(*) FROM labels_view WHERE run_id = ?1", json_pack("[I]", (json_int_t)run)), 3);
    assert_int_equal(q_int(st, "SELECT count(*) FROM classifications", NULL), 1); /* the decoder's run is not one */
}

/* A unit's aggregates as JSON text (unit_rows.h): every float, written and read back, is
 * the same float, and its text the same text written again (what keeps merge exact); the
 * text is what %.9g prints within the last digit; bad text is refused with a message. */
static void unit_rows_round_trip(void **state) {
    (void)state;
    lp_unit_text t = {0}, t2 = {0};
    uint32_t x = 12345;
    for (int i = 0; i < 200000; i++) {
        x = x * 1664525u + 1013904223u;
        float f;
        uint32_t bits = i < 100000 ? x : (x & 0x807fffffu) | (uint32_t)(100 + i % 60) << 23; /* any, then 1e-8..1e10 */
        memcpy(&f, &bits, sizeof f);
        if (isnan(f)) continue;
        lp_unit_example e = {.item = i, .pos = i % 7, .key_pos = i % 3 ? -1 : 2, .token = -1, .key_token = -1, .value = f};
        OK(lp_unit_rows_examples(&t, &e, 1));
        lp_unit_example back;
        int n = 0;
        OK(lp_unit_rows_parse_examples(t.p, t.len, &back, 1, &n));
        assert_int_equal(n, 1);
        assert_memory_equal(&back.value, &f, sizeof f);
        assert_true(back.item == e.item && back.pos == e.pos && back.key_pos == e.key_pos);
        OK(lp_unit_rows_examples(&t2, &back, 1));
        assert_string_equal(t.p, t2.p);
        if (isfinite(f) && f != 0) { /* within a unit of the 9th digit of %.9g's */
            char ref[40];
            snprintf(ref, sizeof ref, "%.9g", (double)f);
            double a = strtod(ref, NULL), b = strtod(strrchr(t.p, ',') + 1, NULL);
            assert_true(fabs(a - b) <= fabs(a) * 1.01e-8);
        }
    }
    lp_unit_sample smp[3] = {{0, 5, {1, 2, -1, -1, -1, 0.5f}}, {0, INT64_MAX, {3, 4, 1, -1, -1, -0.0f}},
                             {26, 0, {INT64_MAX, 7, -1, -1, -1, INFINITY}}};
    OK(lp_unit_rows_samples(&t, smp, 3));
    assert_string_equal(t.p, "[[0,5,1,2,null,0.5],[0,9223372036854775807,3,4,1,-0],[26,0,9223372036854775807,7,null,9e999]]");
    lp_unit_sample sb[3];
    int n = 0;
    OK(lp_unit_rows_parse_samples(t.p, t.len, sb, 3, &n));
    assert_int_equal(n, 3);
    assert_true(sb[1].hash == INT64_MAX && sb[2].x.item == INT64_MAX && isinf(sb[2].x.value) && sb[0].x.key_pos == -1);
    assert_int_equal(lp_unit_rows_parse_samples(t.p, t.len, sb, 2, &n), LP_EFORMAT); /* more than the cap */
    uint64_t h[3] = {0, 7, (uint64_t)INT64_MAX}, hb[3];
    OK(lp_unit_rows_histogram(&t, h, 3));
    assert_string_equal(t.p, "[0,7,9223372036854775807]");
    const char *spaced = " [ 0 , 7,9223372036854775807 ] ";
    OK(lp_unit_rows_parse_histogram(spaced, strlen(spaced), hb, 3, &n));
    assert_true(n == 3 && hb[2] == (uint64_t)INT64_MAX);
    const char *bad[] = {"", "[", "[1,2]x", "[9223372036854775808]", "[-1]", "[1.5]", "[[1,2,null,0.5]", "{}", "[1,,2]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(lp_unit_rows_parse_histogram(bad[i], strlen(bad[i]), hb, 3, &n), LP_EFORMAT);
        assert_non_null(strstr(lp_errmsg(), "a unit's histogram"));
    }
    const char *bad_ex[] = {"[[1,2,null]]", "[[1,2,3,4,5]]", "[[1,2147483648,null,1]]", "[[1,2,null,1e39]]",
                            "[[1,2,-1,1]]", "[[1,2,null,1e]]", "[[1,2,null,.5]]", "[[1,2,nul,1]]"};
    lp_unit_example eb[2];
    for (size_t i = 0; i < sizeof bad_ex / sizeof *bad_ex; i++)
        assert_int_equal(lp_unit_rows_parse_examples(bad_ex[i], strlen(bad_ex[i]), eb, 2, &n), LP_EFORMAT);
    OK(lp_unit_rows_parse_examples("[]", 2, eb, 2, &n));
    assert_int_equal(n, 0);
    lp_unit_text_free(&t), lp_unit_text_free(&t2);
}

#define ON_FILE(t) {#t " (file)", t, on_file, fixture_free, NULL}
#define ON_MEMORY(t) {#t " (:memory:)", t, on_memory, fixture_free, NULL}
#define BOTH(t) ON_FILE(t), ON_MEMORY(t)
#define IN_DIR(t) {#t, t, in_dir, fixture_free, NULL}

int main(void) {
    const struct CMUnitTest tests[] = {
        IN_DIR(new_file_gets_latest_schema_wal_and_foreign_keys),
        cmocka_unit_test(unit_rows_round_trip),
        IN_DIR(reopening_keeps_data_and_schema_version),
        ON_MEMORY(memory_database_gets_latest_schema),
        IN_DIR(empty_file_becomes_a_store),
        IN_DIR(newer_schema_is_refused_and_file_untouched),
        IN_DIR(non_sqlite_file_is_refused_and_untouched),
        IN_DIR(read_only_file_is_refused_even_for_root_and_untouched),
        IN_DIR(directory_path_is_refused),
        IN_DIR(path_in_missing_directory_is_refused),
        IN_DIR(other_programs_database_is_refused_and_untouched),
        ON_FILE(a_batch_commits_or_drops_its_recordings_together),
        IN_DIR(sigkill_while_recording_keeps_every_committed_run),
        IN_DIR(two_processes_recording_at_once_both_succeed),
        BOTH(run_round_trips_through_get_run),
        BOTH(pair_types_and_roles_round_trip),
        BOTH(feature_activations_are_kept_per_run_and_dictionary),
        BOTH(run_is_recorded_all_or_nothing),
        BOTH(quotes_and_sql_text_are_stored_verbatim),
        BOTH(model_is_recorded_once_per_fingerprint_and_path),
        BOTH(sessions_default_new_and_find),
        BOTH(tensor_is_stored_as_little_endian_float32),
        BOTH(finding_gets_the_token_at_its_position),
        BOTH(sql_refuses_writes_without_write),
        BOTH(sql_allows_writes_with_write),
        BOTH(sql_unfinished_transaction_is_rolled_back),
        BOTH(sql_last_statement_with_columns_gives_the_result),
        BOTH(sql_binds_parameters_by_position),
        BOTH(sql_shows_blobs_as_byte_counts),
        BOTH(sql_error_is_einval_with_sqlites_message),
        BOTH(sql_empty_result_keeps_its_columns),
        BOTH(views_answer_the_common_questions),
        BOTH(analyses_are_recorded_and_viewed),
        IN_DIR(version_1_file_is_migrated),
        IN_DIR(version_2_file_made_by_loupe_is_migrated),
        BOTH(classifier_views_name_labels_not_tokens),
        BOTH(seq2seq_run_keeps_source_and_target),
        BOTH(seq2seq_heads_say_stack_and_kind),
        BOTH(alignments_view_answers_which_source_token),
        BOTH(seq2seq_attribution_is_split_by_side),
        BOTH(head_scan_rows_say_stack_and_kind),
        BOTH(head_scan_rows_keep_every_kinds_scores),
        BOTH(seq2seq_finding_says_stack_and_kind),
        IN_DIR(version_3_file_made_by_loupe_is_migrated),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
