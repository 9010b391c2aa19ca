/* Opening the store (refusing files it must not touch) and recording into it. The schema
 * and its migrations are in schema.c, free SQL in query.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loupe/error.h"
#include "store_impl.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "tensors are stored as little-endian float32 BLOBs: add a byte swap to lp_store_put_tensor");
_Static_assert(sizeof(float) == 4, "tensors are stored as float32");

static const char *const QUERIES[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE", /* take the write lock up front: waits (busy timeout) instead of failing later */
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    /* inside a batch (lp_store_batch_begin), each recording is a savepoint of it */
    [Q_SAVEPOINT] = "SAVEPOINT lp_record",
    [Q_RELEASE] = "RELEASE lp_record",
    [Q_ROLLBACK_TO] = "ROLLBACK TO lp_record",
    [Q_RUN_ADD] = "INSERT INTO runs (session_id, model_id, text, n_tokens, pair, target, target_kind, n_source, edits)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [Q_TOKEN_ADD] = "INSERT INTO tokens (run_id, pos, token_id, text, type, special, side)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_PRED_ADD] = "INSERT INTO predictions (run_id, pos, rank, token_id, token, prob, logit)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* A stack not given is the run's model's: an LM's heads are a decoder's. */
    [Q_HEAD_ADD] = "INSERT INTO head_metrics (run_id, layer, head, entropy, prev_token, first_token, duplicate_token,"
                   " induction, max_attn, stack, kind, source_eos, diagonal, monotonic, coverage)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, coalesce(?10, (SELECT CASE WHEN coalesce(m.head, 'lm')"
                   " = 'lm' THEN 'dec' ELSE 'enc' END FROM runs r LEFT JOIN models m ON m.id = r.model_id"
                   " WHERE r.id = ?1)), coalesce(?11, 'self'), ?12, ?13, ?14, ?15)",
    [Q_CROSS_ADD] = "INSERT INTO cross_maxima (run_id, layer, head, target_pos, source_pos, weight)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_SAE_ADD] = "INSERT INTO saes (name, path, site, out_site, architecture, d_in, d_sae)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name, path, site) DO NOTHING",
    [Q_SAE_ID] = "SELECT id FROM saes WHERE name = ?1 AND path = ?2 AND site = ?3",
    [Q_RUN_SAE_ADD] = "INSERT INTO run_saes (run_id, sae_id, k) VALUES (?1, ?2, ?3)",
    [Q_FEATURE_ADD] = "INSERT INTO feature_activations (run_id, sae_id, pos, rank, feature, act)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_MODEL_ADD] = "INSERT INTO models (path, arch, n_layer, n_head, n_kv_head, d_model, d_mlp, vocab, n_ctx, n_params,"
                    " dtype, fingerprint, head) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                    " ON CONFLICT (fingerprint, path) DO NOTHING",
    [Q_MODEL_ID] = "SELECT id FROM models WHERE fingerprint = ?1 AND path = ?2",
    [Q_SESSION_ADD] = "INSERT INTO sessions (name) VALUES (?1)",
    [Q_SESSION_ENSURE] = "INSERT INTO sessions (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
    [Q_SESSION_BY_NAME] = "SELECT id FROM sessions WHERE name = ?1",
    [Q_SESSION_BY_ID] = "SELECT id FROM sessions WHERE id = ?1",
    [Q_FINDING_ADD] = "INSERT INTO findings (session_id, run_id, kind, text, layer, head, pos, stack, attn_kind, token_id)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                      " (SELECT t.token_id FROM tokens t JOIN runs r ON r.id = t.run_id WHERE t.run_id = ?2 AND t.pos = ?7"
                      " AND t.side = CASE WHEN ?8 = 'enc' AND r.target_kind IS NOT NULL THEN 'source' ELSE 'target' END))",
    [Q_TENSOR_ADD] = "INSERT INTO tensors (run_id, name, layer, head, shape, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_RUN_GET] = "SELECT model_id, text, pair, target, target_kind, edits FROM runs WHERE id = ?1",
    [Q_RUN_TOKENS] = "SELECT token_id, type FROM tokens WHERE run_id = ?1 AND side = ?2 ORDER BY pos",
    [Q_ATTR_ADD] = "INSERT INTO attributions (run_id, method, objective, pos, target_id, contrast_id, params, delta)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, coalesce(?7, '{}'), ?8)",
    [Q_ATTR_SCORE_ADD] = "INSERT INTO attribution_scores (attribution_id, pos, score, side) VALUES (?1, ?2, ?3, ?4)",
    [Q_SERIES_ADD] = "INSERT INTO attribution_series (run_id, method, from_pos, generated) VALUES (?1, ?2, ?3, ?4)",
    [Q_EVAL_ADD] = "INSERT INTO evaluations (attribution_id, f, remove, remove_token, bins, f_x, f_empty,"
                   " comprehensiveness_aopc, sufficiency_aopc, deletion_auc, insertion_auc, logodds_drop, logodds_pct,"
                   " loo_tau, infidelity, max_sensitivity, settings)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, coalesce(?17, '{}'))",
    [Q_CURVE_ADD] = "INSERT INTO evaluation_curves (evaluation_id, curve, i, x, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_STEP_ADD] = "INSERT INTO attribution_steps (series_id, step, attribution_id, prob, entropy, contrast_diff)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_ANALYSIS_ADD] = "INSERT INTO analyses (run_id, kind, params, result) VALUES (?1, ?2, coalesce(?3, '{}'), ?4)",
    [Q_SCAN_ADD] = "INSERT INTO head_scans (model_id, run_id) VALUES (?1, ?2)",
    [Q_SCAN_SCORE_ADD] = "INSERT INTO head_scan_scores (scan_id, layer, head, prev_token, duplicate_token, induction,"
                         " first_token, labels, stack, kind, next_token, cls_sink, sep_sink, broad, source_eos, aligned,"
                         " diagonal, monotonic, coverage) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, coalesce(?8, ''),"
                         " coalesce(?9, (SELECT CASE WHEN coalesce(m.head, 'lm') = 'lm' THEN 'dec' ELSE 'enc' END"
                         " FROM head_scans h LEFT JOIN models m ON m.id = h.model_id WHERE h.id = ?1)),"
                         " coalesce(?10, 'self'), ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
};

int store_fail(lp_store *st, int rc, const char *what) {
    const char *msg = sqlite3_errmsg(st->db);
    switch (rc & 0xff) {
    case SQLITE_READONLY:
        return lp_error(LP_EIO, "%s is read-only (%s while %s): make it and its directory writable, or choose another "
                        "file with --db", st->path, msg, what);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return lp_error(LP_EIO, "%s: %s: another process kept the database locked for over %d s; try again",
                        st->path, what, STORE_BUSY_MS / 1000);
    case SQLITE_FULL: return lp_error(LP_EIO, "%s: %s: the disk is full", st->path, what);
    case SQLITE_NOTADB: return lp_error(LP_EFORMAT, "%s is not an SQLite database (%s)", st->path, msg);
    case SQLITE_CORRUPT:
        return lp_error(LP_EFORMAT, "%s is damaged (%s while %s); `sqlite3 %s .recover` may save its contents",
                        st->path, msg, what, st->path);
    case SQLITE_NOMEM: return lp_error(LP_ENOMEM, "out of memory while %s", what);
    case SQLITE_CONSTRAINT:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG: return lp_error(LP_EINVAL, "%s: %s", what, msg);
    default: return lp_error(LP_EIO, "%s: %s: %s", st->path, what, msg);
    }
}

/* ---- opening ---- */

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static char *parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* The checks for a database opened as version `version` with application id `app` and
 * `objects` schema objects; shared by the header check and the check after opening. */
static int check_identity(const char *path, uint32_t version, uint32_t app, int64_t objects) {
    int latest = store_schema_latest();
    if (version > (uint32_t)latest)
        return lp_error(LP_EUNSUPPORTED, "%s has schema version %u; this loupe knows up to %d: use a newer loupe", path,
                        version, latest);
    if (app != 0 && app != STORE_APPLICATION_ID)
        return lp_error(LP_EFORMAT, "%s is another program's SQLite database (application id 0x%08X), not loupe's; "
                        "choose another file with --db", path, app);
    if (version == 0 && objects > 0)
        return lp_error(LP_EFORMAT, "%s is an SQLite database that loupe did not create (it has tables but no loupe "
                        "schema); choose another file with --db", path);
    return LP_OK;
}

/* What can be refused before SQLite touches the file: SQLite would create a -wal and -shm
 * beside a WAL database just to read its version, so every refusal happens here, from the
 * stat and the 100-byte header (the version at offset 60, the application id at 68). */
static int check_file(const char *path) {
    struct stat sb;
    char *dir = parent_dir(path);
    int rc = LP_OK;
    if (!dir) return lp_error(LP_ENOMEM, "out of memory");
    if (stat(path, &sb) != 0) {
        struct stat db;
        if (errno != ENOENT) rc = lp_error(LP_EIO, "cannot open %s: %s", path, strerror(errno));
        else if (stat(dir, &db) != 0 || !S_ISDIR(db.st_mode))
            rc = lp_error(LP_EIO, "cannot create %s: directory %s does not exist (create it first)", path, dir);
        else if (access(dir, W_OK) != 0)
            rc = lp_error(LP_EIO, "cannot create %s: directory %s is not writable", path, dir);
        free(dir);
        return rc;
    }
    if (S_ISDIR(sb.st_mode)) rc = lp_error(LP_EIO, "%s is a directory; give a database file, e.g. %s/loupe.db", path, path);
    else if (!S_ISREG(sb.st_mode)) rc = lp_error(LP_EIO, "%s is not a regular file; give a database file", path);
    if (!rc && sb.st_size > 0) {
        unsigned char h[100];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = lp_error(LP_EIO, "cannot open %s: %s", path, strerror(errno));
        } else {
            ssize_t n = read(fd, h, sizeof h);
            close(fd);
            if (n < 0) rc = lp_error(LP_EIO, "cannot read %s: %s", path, strerror(errno));
            else if (n < (ssize_t)sizeof h || memcmp(h, "SQLite format 3", 16) != 0)
                rc = lp_error(LP_EFORMAT, "%s is not an SQLite database (it does not begin with \"SQLite format 3\"); "
                              "choose another file with --db", path);
            else rc = check_identity(path, be32(h + 60), be32(h + 68), 0);
        }
    }
    /* The mode bits too, not just access(): root may write anywhere, but a file made read-only
     * says its owner wants it left alone. */
    if (!rc && ((sb.st_mode & 0222) == 0 || access(path, W_OK) != 0))
        rc = lp_error(LP_EIO, "%s is read-only: loupe records every run in its database; make it writable "
                      "(chmod u+w %s) or choose another file with --db", path, path);
    if (!rc && access(dir, W_OK) != 0)
        rc = lp_error(LP_EIO, "%s: its directory %s is not writable, and SQLite keeps a journal (%s-wal) beside the "
                      "database", path, dir, path);
    free(dir);
    return rc;
}

/* The same checks on what SQLite reads (the header may be stale while a -wal holds newer
 * pages), in one statement so that one snapshot answers them all. */
static int check_open(lp_store *st) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db,
                                "SELECT (SELECT user_version FROM pragma_user_version),"
                                " (SELECT application_id FROM pragma_application_id),"
                                " (SELECT count(*) FROM sqlite_schema)",
                                -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        uint32_t version = (uint32_t)sqlite3_column_int64(s, 0), app = (uint32_t)sqlite3_column_int64(s, 1);
        int64_t objects = sqlite3_column_int64(s, 2);
        sqlite3_finalize(s);
        st->version = (int)version;
        return check_identity(st->path, version, app, objects);
    }
    int err = store_fail(st, rc, "reading the schema");
    sqlite3_finalize(s);
    return err;
}

static int exec(lp_store *st, const char *sql, const char *what) {
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? LP_OK : store_fail(st, rc, what);
}

/* Switching to WAL needs an exclusive lock, and SQLite returns SQLITE_BUSY at once rather
 * than wait when another connection is reading (as when two loupes create one file at the
 * same moment): retry until the busy timeout. */
static int enable_wal(lp_store *st) {
    int rc = SQLITE_BUSY;
    for (int waited = 0; waited <= STORE_BUSY_MS; waited += 5) {
        if ((rc = sqlite3_exec(st->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL)) != SQLITE_BUSY) break;
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
    return rc == SQLITE_OK ? LP_OK : store_fail(st, rc, "switching to WAL mode");
}

/* SQLite's memory statistics take a global mutex on every allocation; loupe never reads
 * them. Set once, before SQLite initialises (later it is refused, harmlessly). */
static pthread_once_t sqlite_once = PTHREAD_ONCE_INIT;
static void sqlite_setup(void) { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

int lp_store_open(lp_store **out, const char *path) {
    *out = NULL;
    pthread_once(&sqlite_once, sqlite_setup);
    if (!path || !*path) return lp_error(LP_EINVAL, "no database file given");
    int memory = strcmp(path, ":memory:") == 0, rc;
    if (!memory && (rc = check_file(path))) return rc;
    lp_store *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return lp_error(LP_ENOMEM, "out of memory opening %s", path);
    }
    /* NOMUTEX: a connection is used by one thread at a time (the browser's worker runs a
     * command while the main thread keeps the terminal, then is joined), so SQLite need not
     * lock it on every bind and step: a dataset's tables are ~20 calls a row, 1.6 million rows
     * for GPT-2 small */
    int src = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = st->db ? store_fail(st, src, "opening the database") : lp_error(LP_ENOMEM, "out of memory opening %s", path);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, STORE_BUSY_MS);
    sqlite3_set_authorizer(st->db, store_authorize, st);
    if ((rc = check_open(st))) goto fail;
    if ((rc = exec(st, "PRAGMA foreign_keys = ON", "enabling foreign keys"))) goto fail;
    /* WAL: readers never block the writer, and two loupes can record into one file. */
    if (!memory && (rc = enable_wal(st))) goto fail;
    if ((rc = store_migrate(st))) goto fail;
    *out = st;
    return LP_OK;
fail:
    lp_store_close(st);
    return rc;
}

void lp_store_close(lp_store *st) {
    if (!st) return;
    for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(st->q[i]);
    for (size_t i = 0; i < sizeof st->dq / sizeof *st->dq; i++) sqlite3_finalize(st->dq[i]);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

const char *lp_store_path(const lp_store *st) { return st->path; }

int lp_store_schema_version(const lp_store *st) { return st->version; }

/* ---- statements ---- */

/* The cached statement q, ready to bind. */
static int prep(lp_store *st, int q, sqlite3_stmt **s) {
    if (!st->q[q]) {
        int rc = sqlite3_prepare_v3(st->db, QUERIES[q], -1, SQLITE_PREPARE_PERSISTENT, &st->q[q], NULL);
        if (rc != SQLITE_OK) return store_fail(st, rc, "preparing a statement");
    }
    *s = st->q[q];
    sqlite3_clear_bindings(*s);
    return LP_OK;
}

/* Steps a statement that returns no rows, then resets it. */
static int done(lp_store *st, sqlite3_stmt *s, const char *what) {
    int rc = sqlite3_step(s);
    int err = rc == SQLITE_DONE ? LP_OK : store_fail(st, rc, what);
    sqlite3_reset(s);
    return err;
}

static int run_q(lp_store *st, int q, const char *what) {
    sqlite3_stmt *s = NULL;
    if (st->batch && q == Q_BEGIN) q = Q_SAVEPOINT;
    else if (st->batch && q == Q_COMMIT) q = Q_RELEASE;
    int rc = prep(st, q, &s);
    return rc ? rc : done(st, s, what);
}

/* Steps a one-column id lookup; *found says whether there was a row. Resets it (a statement
 * left mid-result would hold a read snapshot open). */
static int lookup(lp_store *st, sqlite3_stmt *s, int64_t *id, int *found, const char *what) {
    int rc = sqlite3_step(s), err = LP_OK;
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(s, 0);
    else if (rc != SQLITE_DONE) err = store_fail(st, rc, what);
    sqlite3_reset(s);
    return err;
}

static void bind_text(sqlite3_stmt *s, int i, const char *text, size_t len) {
    if (text) sqlite3_bind_text64(s, i, text, len, SQLITE_STATIC, SQLITE_UTF8);
    else sqlite3_bind_null(s, i);
}

/* Row ids: 0 (none) is NULL. */
static void bind_id(sqlite3_stmt *s, int i, int64_t id) {
    if (id > 0) sqlite3_bind_int64(s, i, id);
    else sqlite3_bind_null(s, i);
}

/* Layers, heads, positions: -1 (not given) is NULL. */
static void bind_index(sqlite3_stmt *s, int i, int v) {
    if (v >= 0) sqlite3_bind_int(s, i, v);
    else sqlite3_bind_null(s, i);
}

static int rollback(lp_store *st, int rc) {
    if (st->batch) { /* undo this recording only: the batch's earlier ones stay */
        char keep[1024]; /* the first failure is the one to report */
        snprintf(keep, sizeof keep, "%s", lp_errmsg());
        run_q(st, Q_ROLLBACK_TO, "undoing a recording");
        run_q(st, Q_RELEASE, "undoing a recording");
        return lp_error(rc, "%s", keep);
    }
    if (!sqlite3_get_autocommit(st->db)) {
        sqlite3_stmt *s;
        if (prep(st, Q_ROLLBACK, &s) == LP_OK) {
            sqlite3_step(s);
            sqlite3_reset(s);
        }
    }
    return rc;
}

int store_prep(lp_store *st, sqlite3_stmt **slot, const char *sql) {
    if (!*slot) {
        int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL);
        if (rc != SQLITE_OK) return store_fail(st, rc, "preparing a statement");
    }
    sqlite3_reset(*slot);
    sqlite3_clear_bindings(*slot);
    return LP_OK;
}

int store_done(lp_store *st, sqlite3_stmt *s, const char *what) { return done(st, s, what); }

static void bind_str(sqlite3_stmt *s, int i, const char *text);

void store_bind_text(sqlite3_stmt *s, int i, const char *text, size_t len) { bind_text(s, i, text, len); }

void store_bind_str(sqlite3_stmt *s, int i, const char *text) { bind_str(s, i, text); }

int store_exec(lp_store *st, const char *sql, const char *what) { return exec(st, sql, what); }

/* ---- batches ---- */

int lp_store_batch_begin(lp_store *st) {
    if (st->batch) return lp_error(LP_EINVAL, "%s: a batch is already open", st->path);
    int rc = run_q(st, Q_BEGIN, "starting a batch");
    if (!rc) st->batch = true;
    return rc;
}

int lp_store_batch_commit(lp_store *st) {
    if (!st->batch) return lp_error(LP_EINVAL, "%s: no batch is open", st->path);
    st->batch = false;
    int rc = run_q(st, Q_COMMIT, "committing a batch");
    return rc ? rollback(st, rc) : LP_OK;
}

void lp_store_batch_rollback(lp_store *st) {
    if (!st->batch) return;
    st->batch = false;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", lp_errmsg());
    rollback(st, LP_OK);
    lp_error(LP_OK, "%s", keep);
}

bool lp_store_in_batch(const lp_store *st) { return st->batch; }

int lp_store_batch_item(lp_store *st) {
    if (!st->batch) return lp_error(LP_EINVAL, "%s: no batch is open", st->path);
    return exec(st, "SAVEPOINT lp_item", "starting an item");
}

int lp_store_batch_item_end(lp_store *st, bool keep) {
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", lp_errmsg());
    int rc = exec(st, keep ? "RELEASE lp_item" : "ROLLBACK TO lp_item; RELEASE lp_item", "ending an item");
    if (!keep && !rc) lp_error(LP_OK, "%s", saved); /* undoing keeps the reason it was undone */
    return rc;
}

/* ---- recording ---- */

int lp_store_put_model(lp_store *st, const lp_store_model *m, int64_t *id) {
    if (!m->path) return lp_error(LP_EINVAL, "a model needs a path");
    const char *fp = m->fingerprint ? m->fingerprint : "";
    sqlite3_stmt *s;
    int rc = prep(st, Q_MODEL_ADD, &s), found;
    if (rc) return rc;
    bind_text(s, 1, m->path, strlen(m->path));
    bind_text(s, 2, m->arch, m->arch ? strlen(m->arch) : 0);
    const int dims[] = {m->n_layer, m->n_head, m->n_kv_head, m->d_model, m->d_mlp, m->vocab, m->n_ctx};
    for (int i = 0; i < 7; i++) sqlite3_bind_int(s, 3 + i, dims[i]);
    sqlite3_bind_int64(s, 10, m->n_params);
    bind_text(s, 11, m->dtype, m->dtype ? strlen(m->dtype) : 0);
    bind_text(s, 12, fp, strlen(fp));
    bind_text(s, 13, m->head, m->head ? strlen(m->head) : 0);
    if ((rc = done(st, s, "recording the model")) || (rc = prep(st, Q_MODEL_ID, &s))) return rc;
    bind_text(s, 1, fp, strlen(fp));
    bind_text(s, 2, m->path, strlen(m->path));
    int64_t got = 0;
    if ((rc = lookup(st, s, &got, &found, "looking up the model"))) return rc;
    if (!found) return lp_error(LP_EIO, "%s: the model row vanished after it was recorded", st->path);
    if (id) *id = got;
    return LP_OK;
}

int lp_store_session_new(lp_store *st, const char *name, int64_t *id) {
    if (!name || !*name) return lp_error(LP_EINVAL, "a session needs a name");
    sqlite3_stmt *s;
    int rc = prep(st, Q_SESSION_ADD, &s);
    if (rc) return rc;
    bind_text(s, 1, name, strlen(name));
    rc = sqlite3_step(s);
    int ext = sqlite3_extended_errcode(st->db);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && ext == SQLITE_CONSTRAINT_UNIQUE)
        return lp_error(LP_EINVAL, "session '%s' already exists; open it with 'session open %s'", name, name);
    if (rc != SQLITE_DONE) return store_fail(st, rc, "creating the session");
    if (id) *id = sqlite3_last_insert_rowid(st->db);
    return LP_OK;
}

int lp_store_session_find(lp_store *st, const char *name_or_id, int64_t *id) {
    if (!name_or_id || !*name_or_id) return lp_error(LP_EINVAL, "give a session name or id");
    sqlite3_stmt *s;
    int rc, found = 0;
    int64_t got = 0;
    char *end;
    errno = 0;
    long long n = strtoll(name_or_id, &end, 10);
    if (*end == '\0' && errno == 0 && n > 0 && name_or_id[0] != '+' && name_or_id[0] != ' ') {
        if ((rc = prep(st, Q_SESSION_BY_ID, &s))) return rc;
        sqlite3_bind_int64(s, 1, n);
        if ((rc = lookup(st, s, &got, &found, "looking up the session"))) return rc;
    }
    if (!found) { /* not an id, or no such id: a session may be named "2024" */
        if ((rc = prep(st, Q_SESSION_BY_NAME, &s))) return rc;
        bind_text(s, 1, name_or_id, strlen(name_or_id));
        if ((rc = lookup(st, s, &got, &found, "looking up the session"))) return rc;
    }
    if (!found) return lp_error(LP_EINVAL, "no session '%s'; 'session list' shows them", name_or_id);
    if (id) *id = got;
    return LP_OK;
}

int lp_store_session_default(lp_store *st, int64_t *id) {
    static const char name[] = "default";
    sqlite3_stmt *s;
    int rc = prep(st, Q_SESSION_ENSURE, &s), found;
    if (rc) return rc;
    bind_text(s, 1, name, strlen(name));
    if ((rc = done(st, s, "creating the default session")) || (rc = prep(st, Q_SESSION_BY_NAME, &s))) return rc;
    bind_text(s, 1, name, strlen(name));
    int64_t got = 0;
    if ((rc = lookup(st, s, &got, &found, "looking up the default session"))) return rc;
    if (!found) return lp_error(LP_EIO, "%s: the default session vanished after it was created", st->path);
    if (id) *id = got;
    return LP_OK;
}

/* The tokens of one side of a run: ids (n), with their text, types and roles when given. */
static int put_tokens(lp_store *st, int64_t run, const char *side, const int *ids, int n, const char *const *text,
                      const size_t *len, const int *types, const char *const *special) {
    sqlite3_stmt *s;
    int rc;
    for (int i = 0; i < n; i++) {
        if ((rc = prep(st, Q_TOKEN_ADD, &s))) return rc;
        const char *t = text ? text[i] : NULL;
        sqlite3_bind_int64(s, 1, run);
        sqlite3_bind_int(s, 2, i);
        sqlite3_bind_int(s, 3, ids[i]);
        bind_text(s, 4, t, t ? (len ? len[i] : strlen(t)) : 0);
        sqlite3_bind_int(s, 5, types ? types[i] : 0);
        const char *role = special ? special[i] : NULL;
        bind_text(s, 6, role, role ? strlen(role) : 0);
        bind_text(s, 7, side, strlen(side));
        if ((rc = done(st, s, "recording the run's tokens"))) return rc;
    }
    return LP_OK;
}

static void bind_real(sqlite3_stmt *s, int i, double v);

/* A dictionary's row id, added when new. */
static int sae_id(lp_store *st, const lp_store_features *f, int64_t *id) {
    sqlite3_stmt *s;
    int rc = prep(st, Q_SAE_ADD, &s);
    if (rc) return rc;
    bind_str(s, 1, f->name);
    bind_str(s, 2, f->path);
    bind_str(s, 3, f->site);
    bind_str(s, 4, f->out_site);
    bind_str(s, 5, f->architecture);
    sqlite3_bind_int(s, 6, f->d_in);
    sqlite3_bind_int(s, 7, f->d_sae);
    if ((rc = done(st, s, "recording a dictionary")) || (rc = prep(st, Q_SAE_ID, &s))) return rc;
    bind_str(s, 1, f->name);
    bind_str(s, 2, f->path);
    bind_str(s, 3, f->site);
    int step = sqlite3_step(s);
    *id = step == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return step == SQLITE_ROW ? LP_OK : store_fail(st, step == SQLITE_DONE ? SQLITE_ERROR : step, "finding a dictionary");
}

/* A dictionary's features at the run's positions: the ids in range, ranks counted from 1
 * over the kept ones (a -1 ends a position's list). */
static int put_features(lp_store *st, const lp_store_features *f, int64_t run) {
    if (!f->name || !f->path || !f->site || !f->architecture || f->k < 1 || f->n_pos < 0 || f->d_sae < 1 ||
        (f->n_pos > 0 && (!f->feature || !f->act)))
        return lp_error(LP_EINVAL, "recording a run's features: counts and arrays disagree");
    int64_t sae;
    sqlite3_stmt *s;
    int rc = sae_id(st, f, &sae);
    if (rc || (rc = prep(st, Q_RUN_SAE_ADD, &s))) return rc;
    sqlite3_bind_int64(s, 1, run);
    sqlite3_bind_int64(s, 2, sae);
    sqlite3_bind_int(s, 3, f->k);
    if ((rc = done(st, s, "recording a run's dictionary"))) return rc;
    for (int t = 0; t < f->n_pos; t++)
        for (int j = 0; j < f->k; j++) {
            size_t at = (size_t)t * f->k + j;
            if (f->feature[at] < 0) break;
            if (f->feature[at] >= f->d_sae || !isfinite(f->act[at]))
                return lp_error(LP_EINVAL, "recording a run's features: feature %d (act %g) at position %d is not one "
                                "of %d", f->feature[at], f->act[at], t, f->d_sae);
            if ((rc = prep(st, Q_FEATURE_ADD, &s))) return rc;
            sqlite3_bind_int64(s, 1, run);
            sqlite3_bind_int64(s, 2, sae);
            sqlite3_bind_int(s, 3, t);
            sqlite3_bind_int(s, 4, j + 1);
            sqlite3_bind_int(s, 5, f->feature[at]);
            sqlite3_bind_double(s, 6, f->act[at]);
            if ((rc = done(st, s, "recording a run's features"))) return rc;
        }
    return LP_OK;
}

static int put_run_rows(lp_store *st, const lp_store_run *r, int64_t run) {
    sqlite3_stmt *s;
    int rc;
    if ((rc = put_tokens(st, run, "target", r->ids, r->n, r->token_text, r->token_len, r->types, r->special)) ||
        (rc = put_tokens(st, run, "source", r->src_ids, r->n_src, r->src_text, r->src_len, NULL, r->src_special)))
        return rc;
    for (int i = 0; i < r->n_preds; i++) {
        const lp_store_prediction *p = &r->preds[i];
        if ((rc = prep(st, Q_PRED_ADD, &s))) return rc;
        sqlite3_bind_int64(s, 1, run);
        sqlite3_bind_int(s, 2, p->pos);
        sqlite3_bind_int(s, 3, p->rank);
        sqlite3_bind_int(s, 4, p->id);
        bind_text(s, 5, p->token, p->token && !p->token_len ? strlen(p->token) : p->token_len);
        sqlite3_bind_double(s, 6, p->prob);
        sqlite3_bind_double(s, 7, p->logit);
        if ((rc = done(st, s, "recording the run's predictions"))) return rc;
    }
    for (int i = 0; i < r->n_heads; i++) {
        const lp_store_head_metric *h = &r->heads[i];
        if ((rc = prep(st, Q_HEAD_ADD, &s))) return rc;
        sqlite3_bind_int64(s, 1, run);
        sqlite3_bind_int(s, 2, h->layer);
        sqlite3_bind_int(s, 3, h->head);
        const double v[] = {h->entropy, h->prev_token, h->first_token, h->duplicate_token, h->induction, h->max_attn};
        for (int k = 0; k < 6; k++) bind_real(s, 4 + k, v[k]);
        bind_str(s, 10, h->stack);
        bind_str(s, 11, h->kind);
        if (h->kind && strcmp(h->kind, "cross") == 0) { /* zeros of a self row's unset fields are not metrics */
            const double x[] = {h->source_eos, h->diagonal, h->monotonic, h->coverage};
            for (int k = 0; k < 4; k++) bind_real(s, 12 + k, x[k]);
        }
        if ((rc = done(st, s, "recording the run's head metrics"))) return rc;
    }
    for (int i = 0; i < r->n_cross; i++) {
        const lp_store_cross_max *x = &r->cross[i];
        if ((rc = prep(st, Q_CROSS_ADD, &s))) return rc;
        sqlite3_bind_int64(s, 1, run);
        sqlite3_bind_int(s, 2, x->layer);
        bind_index(s, 3, x->head);
        sqlite3_bind_int(s, 4, x->target_pos);
        sqlite3_bind_int(s, 5, x->source_pos);
        bind_real(s, 6, x->weight);
        if ((rc = done(st, s, "recording the run's cross-attention maxima"))) return rc;
    }
    for (int i = 0; i < r->n_features; i++)
        if ((rc = put_features(st, &r->features[i], run))) return rc;
    return LP_OK;
}

int lp_store_put_run(lp_store *st, const lp_store_run *r, int64_t *run_id) {
    if (r->n < 0 || (r->n > 0 && !r->ids) || r->n_preds < 0 || (r->n_preds > 0 && !r->preds) || r->n_heads < 0 ||
        (r->n_heads > 0 && !r->heads) || r->n_src < 0 || (r->n_src > 0 && !r->src_ids) || r->n_cross < 0 ||
        (r->n_cross > 0 && !r->cross) || r->n_features < 0 || (r->n_features > 0 && !r->features))
        return lp_error(LP_EINVAL, "recording a run: counts and arrays disagree");
    if (r->n_src > 0 && !r->target_kind)
        return lp_error(LP_EINVAL, "recording a run: source tokens belong to an encoder-decoder's run (give its target_kind)");
    sqlite3_stmt *s;
    int rc;
    if ((rc = run_q(st, Q_BEGIN, "recording the run"))) return rc;
    if ((rc = prep(st, Q_RUN_ADD, &s))) return rollback(st, rc);
    bind_id(s, 1, r->session_id);
    bind_id(s, 2, r->model_id);
    bind_text(s, 3, r->text, r->text ? strlen(r->text) : 0);
    sqlite3_bind_int(s, 4, r->n);
    bind_text(s, 5, r->pair, r->pair ? strlen(r->pair) : 0);
    bind_str(s, 6, r->target);
    bind_str(s, 7, r->target_kind);
    if (r->target_kind) sqlite3_bind_int(s, 8, r->n_src);
    bind_str(s, 9, r->edits);
    if ((rc = done(st, s, "recording the run"))) return rollback(st, rc);
    int64_t run = sqlite3_last_insert_rowid(st->db);
    if ((rc = put_run_rows(st, r, run)) || (rc = run_q(st, Q_COMMIT, "committing the run"))) return rollback(st, rc);
    if (run_id) *run_id = run;
    return LP_OK;
}

void lp_store_saved_run_free(lp_store_saved_run *r) {
    if (!r) return;
    free(r->ids);
    free(r->types);
    free(r->text);
    free(r->pair);
    free(r->target);
    free(r->target_kind);
    free(r->src_ids);
    free(r->edits);
    *r = (lp_store_saved_run){0};
}

/* A column of the run's row as a malloc'd string (NULL when NULL). */
static int column_dup(sqlite3_stmt *s, int col, char **out) {
    const unsigned char *t = sqlite3_column_text(s, col);
    *out = NULL;
    if (t && !(*out = strndup((const char *)t, (size_t)sqlite3_column_bytes(s, col))))
        return lp_error(LP_ENOMEM, "out of memory reading a run");
    return LP_OK;
}

/* Stored ids and types are read as they are or not at all: 2^32 + 1 is not 1, nor 'abc' 0. */
static int column_index(sqlite3_stmt *s, int col, int64_t run_id, int pos, const char *what, int *out) {
    bool integer = sqlite3_column_type(s, col) == SQLITE_INTEGER; /* asked before any conversion */
    sqlite3_int64 v = sqlite3_column_int64(s, col);
    if (!integer || v < 0 || v > INT_MAX) {
        const unsigned char *raw = sqlite3_column_text(s, col);
        return lp_error(LP_EFORMAT, "run %lld: the %s at position %d is '%.40s', not a %s (was the database edited?)",
                        (long long)run_id, what, pos, raw ? (const char *)raw : "NULL", what);
    }
    *out = (int)v;
    return LP_OK;
}

/* The tokens of one side: ids and types (*ids, *types malloc'd, even when there are none). */
static int read_tokens(lp_store *st, int64_t run_id, const char *side, int **ids, int **types, int *n) {
    sqlite3_stmt *s;
    int rc = prep(st, Q_RUN_TOKENS, &s), step, cap = 0;
    if (rc) return rc;
    sqlite3_bind_int64(s, 1, run_id);
    bind_text(s, 2, side, strlen(side));
    struct {
        int *ids, *types, n;
    } got = {0}, *r = &got;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (r->n == cap) {
            if (cap > INT_MAX / 4) {
                rc = lp_error(LP_ERANGE, "run %lld has too many tokens", (long long)run_id);
                break;
            }
            cap = cap ? cap * 2 : 64;
            int *g = realloc(r->ids, (size_t)cap * sizeof *g), *h = g ? realloc(r->types, (size_t)cap * sizeof *h) : NULL;
            if (g) r->ids = g;
            if (h) r->types = h;
            if (!g || !h) {
                rc = lp_error(LP_ENOMEM, "out of memory reading run %lld", (long long)run_id);
                break;
            }
        }
        if ((rc = column_index(s, 0, run_id, r->n, "token id", &r->ids[r->n])) ||
            (rc = column_index(s, 1, run_id, r->n, "token type", &r->types[r->n])))
            break;
        r->n++;
    }
    if (!rc && step != SQLITE_DONE) rc = store_fail(st, step, "reading the run's tokens");
    sqlite3_reset(s);
    /* malloc'd even when the run has no tokens */
    if (!rc && !r->ids && (!(r->ids = malloc(sizeof *r->ids)) || !(r->types = malloc(sizeof *r->types))))
        rc = lp_error(LP_ENOMEM, "out of memory");
    if (rc) {
        free(r->ids);
        free(r->types);
        return rc;
    }
    *ids = r->ids;
    *n = r->n;
    if (types) *types = r->types;
    else free(r->types);
    return LP_OK;
}

int lp_store_get_run(lp_store *st, int64_t run_id, lp_store_saved_run *out) {
    *out = (lp_store_saved_run){0};
    sqlite3_stmt *s;
    int rc = prep(st, Q_RUN_GET, &s);
    if (rc) return rc;
    sqlite3_bind_int64(s, 1, run_id);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        out->model_id = sqlite3_column_int64(s, 0); /* 0 when NULL */
        if (!(rc = column_dup(s, 1, &out->text)) && !(rc = column_dup(s, 2, &out->pair)) &&
            !(rc = column_dup(s, 3, &out->target)) && !(rc = column_dup(s, 4, &out->target_kind)))
            rc = column_dup(s, 5, &out->edits);
    } else {
        rc = step == SQLITE_DONE ? lp_error(LP_EINVAL, "no run %lld; 'runs' lists them", (long long)run_id)
                                 : store_fail(st, step, "reading the run");
    }
    sqlite3_reset(s);
    if (!rc) rc = read_tokens(st, run_id, "target", &out->ids, &out->types, &out->n);
    if (!rc) rc = read_tokens(st, run_id, "source", &out->src_ids, NULL, &out->n_src);
    if (rc) lp_store_saved_run_free(out);
    return rc;
}

int lp_store_put_tensor(lp_store *st, int64_t run_id, const char *name, int layer, int head, const int *shape,
                        int ndim, const float *data, int64_t *tensor_id) {
    enum { MAX_DIMS = 8 };
    if (!name || !*name) return lp_error(LP_EINVAL, "a saved tensor needs a name");
    if (ndim < 0 || ndim > MAX_DIMS || (ndim > 0 && !shape))
        return lp_error(LP_EINVAL, "tensor %s: %d dimensions (0..%d allowed)", name, ndim, MAX_DIMS);
    char json[MAX_DIMS * 12 + 3];
    size_t count = 1, o = 0;
    json[o++] = '[';
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return lp_error(LP_EINVAL, "tensor %s: dimension %d is %d", name, i, shape[i]);
        if (shape[i] > 0 && count > (SIZE_MAX / 4) / (size_t)shape[i])
            return lp_error(LP_ERANGE, "tensor %s is too large to store", name);
        count *= (size_t)shape[i];
        o += (size_t)snprintf(json + o, sizeof json - o, "%s%d", i ? "," : "", shape[i]);
    }
    json[o++] = ']';
    json[o] = '\0';
    if (count > 0 && !data) return lp_error(LP_EINVAL, "tensor %s has no data", name);
    sqlite3_stmt *s;
    int rc = prep(st, Q_TENSOR_ADD, &s);
    if (rc) return rc;
    bind_id(s, 1, run_id);
    bind_text(s, 2, name, strlen(name));
    bind_index(s, 3, layer);
    bind_index(s, 4, head);
    bind_text(s, 5, json, o);
    if (count) sqlite3_bind_blob64(s, 6, data, count * sizeof *data, SQLITE_STATIC);
    else sqlite3_bind_zeroblob(s, 6, 0); /* a NULL pointer would bind NULL */
    if ((rc = done(st, s, "saving the tensor"))) return rc;
    if (tensor_id) *tensor_id = sqlite3_last_insert_rowid(st->db);
    return LP_OK;
}

int lp_store_put_finding(lp_store *st, int64_t session_id, int64_t run_id, const char *kind, const char *text,
                         int layer, int head, int pos, int64_t *finding_id) {
    lp_store_place at = {NULL, NULL, layer, head, pos};
    return lp_store_put_finding_at(st, session_id, run_id, kind, text, &at, finding_id);
}

int lp_store_put_finding_at(lp_store *st, int64_t session_id, int64_t run_id, const char *kind, const char *text,
                            const lp_store_place *at, int64_t *finding_id) {
    if (!kind || (strcmp(kind, "note") != 0 && strcmp(kind, "tag") != 0))
        return lp_error(LP_EINVAL, "a finding is a 'note' or a 'tag', not '%s'", kind ? kind : "(null)");
    if (!text) return lp_error(LP_EINVAL, "a %s needs text", kind);
    if (at->stack && strcmp(at->stack, "enc") != 0 && strcmp(at->stack, "dec") != 0)
        return lp_error(LP_EINVAL, "a finding's stack is 'enc' or 'dec', not '%s'", at->stack);
    if (at->attn_kind && strcmp(at->attn_kind, "self") != 0 && strcmp(at->attn_kind, "cross") != 0)
        return lp_error(LP_EINVAL, "a finding's attention kind is 'self' or 'cross', not '%s'", at->attn_kind);
    sqlite3_stmt *s;
    int rc = prep(st, Q_FINDING_ADD, &s);
    if (rc) return rc;
    bind_id(s, 1, session_id);
    bind_id(s, 2, run_id);
    bind_text(s, 3, kind, strlen(kind));
    bind_text(s, 4, text, strlen(text));
    bind_index(s, 5, at->layer);
    bind_index(s, 6, at->head);
    bind_index(s, 7, at->pos);
    bind_str(s, 8, at->stack);
    bind_str(s, 9, at->attn_kind);
    if ((rc = done(st, s, "recording the finding"))) return rc;
    if (finding_id) *finding_id = sqlite3_last_insert_rowid(st->db);
    return LP_OK;
}

/* ---- analyses (schema v2) ---- */

static void bind_real(sqlite3_stmt *s, int i, double v) {
    if (isnan(v) || isinf(v)) sqlite3_bind_null(s, i);
    else sqlite3_bind_double(s, i, v);
}

static void bind_str(sqlite3_stmt *s, int i, const char *text) { bind_text(s, i, text, text ? strlen(text) : 0); }

int lp_store_put_attribution(lp_store *st, const lp_store_attribution *a, int64_t *id) {
    return lp_store_put_attribution_split(st, a, 0, id);
}

/* The rows of one attribution, inside the caller's transaction. */
static int put_attribution_rows(lp_store *st, const lp_store_attribution *a, int n_source, int64_t *id) {
    if (!a->method || !a->objective) return lp_error(LP_EINVAL, "an attribution needs a method and an objective");
    if (a->n < 0 || (a->n > 0 && !a->scores)) return lp_error(LP_EINVAL, "an attribution needs its scores");
    if (n_source < 0 || n_source > a->n)
        return lp_error(LP_EINVAL, "an attribution of %d scores cannot have %d over the source", a->n, n_source);
    sqlite3_stmt *s;
    int rc;
    if ((rc = prep(st, Q_ATTR_ADD, &s))) return rc;
    bind_id(s, 1, a->run_id);
    bind_str(s, 2, a->method);
    bind_str(s, 3, a->objective);
    sqlite3_bind_int(s, 4, a->pos);
    bind_index(s, 5, a->target_id);
    bind_index(s, 6, a->contrast_id);
    bind_str(s, 7, a->params_json);
    bind_real(s, 8, a->delta);
    if ((rc = done(st, s, "recording the attribution"))) return rc;
    int64_t aid = sqlite3_last_insert_rowid(st->db);
    for (int i = 0; i < a->n; i++) {
        bool source = i < n_source;
        if ((rc = prep(st, Q_ATTR_SCORE_ADD, &s))) return rc;
        sqlite3_bind_int64(s, 1, aid);
        sqlite3_bind_int(s, 2, source ? i : i - n_source);
        bind_real(s, 3, a->scores[i]);
        bind_str(s, 4, source ? "source" : "target");
        if ((rc = done(st, s, "recording the attribution's scores"))) return rc;
    }
    *id = aid;
    return LP_OK;
}

int lp_store_put_attribution_split(lp_store *st, const lp_store_attribution *a, int n_source, int64_t *id) {
    int64_t aid;
    int rc;
    if ((rc = run_q(st, Q_BEGIN, "recording the attribution"))) return rc;
    if ((rc = put_attribution_rows(st, a, n_source, &aid))) return rollback(st, rc);
    if ((rc = run_q(st, Q_COMMIT, "committing the attribution"))) return rollback(st, rc);
    if (id) *id = aid;
    return LP_OK;
}

int lp_store_put_attribution_series(lp_store *st, const lp_store_attribution *steps, const lp_store_step *meta, int n,
                                    int from, bool generated, int n_source, int64_t *series_id) {
    if (n < 1 || !steps || !meta) return lp_error(LP_EINVAL, "an attribution series needs its steps");
    sqlite3_stmt *s;
    int rc;
    if ((rc = run_q(st, Q_BEGIN, "recording the attribution series"))) return rc;
    if ((rc = prep(st, Q_SERIES_ADD, &s))) return rollback(st, rc);
    bind_id(s, 1, steps[0].run_id);
    bind_str(s, 2, steps[0].method);
    sqlite3_bind_int(s, 3, from);
    sqlite3_bind_int(s, 4, generated);
    if ((rc = done(st, s, "recording the attribution series"))) return rollback(st, rc);
    int64_t gid = sqlite3_last_insert_rowid(st->db);
    for (int i = 0; i < n; i++) {
        int64_t aid;
        if ((rc = put_attribution_rows(st, &steps[i], n_source, &aid)) || (rc = prep(st, Q_STEP_ADD, &s)))
            return rollback(st, rc);
        sqlite3_bind_int64(s, 1, gid);
        sqlite3_bind_int(s, 2, i);
        sqlite3_bind_int64(s, 3, aid);
        bind_real(s, 4, meta[i].prob);
        bind_real(s, 5, meta[i].entropy);
        bind_real(s, 6, meta[i].contrast_diff);
        if ((rc = done(st, s, "recording the attribution series' step"))) return rollback(st, rc);
        if (meta[i].attribution_id) *meta[i].attribution_id = aid;
    }
    if ((rc = run_q(st, Q_COMMIT, "committing the attribution series"))) return rollback(st, rc);
    if (series_id) *series_id = gid;
    return LP_OK;
}

int lp_store_put_evaluation(lp_store *st, const lp_store_attribution *a, const lp_store_evaluation *ev, int64_t *id) {
    if (!ev->f || !ev->remove) return lp_error(LP_EINVAL, "an evaluation needs its f and its removal");
    sqlite3_stmt *s;
    int64_t aid;
    int rc;
    if ((rc = run_q(st, Q_BEGIN, "recording the evaluation"))) return rc;
    if ((rc = put_attribution_rows(st, a, ev->n_source, &aid)) || (rc = prep(st, Q_EVAL_ADD, &s))) return rollback(st, rc);
    sqlite3_bind_int64(s, 1, aid);
    bind_str(s, 2, ev->f);
    bind_str(s, 3, ev->remove);
    bind_index(s, 4, ev->remove_token);
    sqlite3_bind_int(s, 5, ev->bins);
    for (int k = 0; k < LP_STORE_EVAL_MEASURES; k++) bind_real(s, 6 + k + (k >= 7), ev->measure[k]);
    sqlite3_bind_int(s, 13, ev->logodds_pct);
    bind_str(s, 17, ev->settings_json);
    if ((rc = done(st, s, "recording the evaluation"))) return rollback(st, rc);
    int64_t eid = sqlite3_last_insert_rowid(st->db);
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < ev->curve_n[c]; i++) {
            if ((rc = prep(st, Q_CURVE_ADD, &s))) return rollback(st, rc);
            sqlite3_bind_int64(s, 1, eid);
            bind_str(s, 2, LP_STORE_CURVES[c]);
            sqlite3_bind_int(s, 3, i);
            bind_real(s, 4, ev->curve_x[c][i]);
            bind_real(s, 5, ev->curve[c][i]);
            if ((rc = done(st, s, "recording the evaluation's curves"))) return rollback(st, rc);
        }
    if ((rc = run_q(st, Q_COMMIT, "committing the evaluation"))) return rollback(st, rc);
    if (id) *id = eid;
    return LP_OK;
}

const char *const LP_STORE_CURVES[4] = {"comprehensiveness", "sufficiency", "deletion", "insertion"};

int lp_store_put_analysis(lp_store *st, int64_t run_id, const char *kind, const char *params_json,
                          const char *result_json, int64_t *id) {
    if (!kind || !result_json) return lp_error(LP_EINVAL, "an analysis needs a kind and a result");
    sqlite3_stmt *s;
    int rc = prep(st, Q_ANALYSIS_ADD, &s);
    if (rc) return rc;
    bind_id(s, 1, run_id);
    bind_str(s, 2, kind);
    bind_str(s, 3, params_json);
    bind_str(s, 4, result_json);
    if ((rc = done(st, s, "recording the analysis"))) return rc;
    if (id) *id = sqlite3_last_insert_rowid(st->db);
    return LP_OK;
}

int lp_store_put_head_scan(lp_store *st, int64_t model_id, int64_t run_id, const lp_store_head_scan *rows, int n,
                           int64_t *scan_id) {
    if (n < 0 || (n > 0 && !rows)) return lp_error(LP_EINVAL, "a head scan needs its rows");
    sqlite3_stmt *s;
    int rc;
    if ((rc = run_q(st, Q_BEGIN, "recording the head scan"))) return rc;
    if ((rc = prep(st, Q_SCAN_ADD, &s))) return rollback(st, rc);
    bind_id(s, 1, model_id);
    bind_id(s, 2, run_id);
    if ((rc = done(st, s, "recording the head scan"))) return rollback(st, rc);
    int64_t sid = sqlite3_last_insert_rowid(st->db);
    for (int i = 0; i < n; i++) {
        const lp_store_head_scan *r = &rows[i];
        if ((rc = prep(st, Q_SCAN_SCORE_ADD, &s))) return rollback(st, rc);
        sqlite3_bind_int64(s, 1, sid);
        sqlite3_bind_int(s, 2, r->layer);
        sqlite3_bind_int(s, 3, r->head);
        bind_real(s, 4, r->prev_token);
        bind_real(s, 5, r->duplicate_token);
        bind_real(s, 6, r->induction);
        bind_real(s, 7, r->first_token);
        bind_str(s, 8, r->labels);
        bind_str(s, 9, r->stack);
        bind_str(s, 10, r->kind);
        const double more[] = {r->next_token, r->cls_sink, r->sep_sink,  r->broad,   r->source_eos,
                               r->aligned,    r->diagonal, r->monotonic, r->coverage};
        for (int k = 0; k < (int)(sizeof more / sizeof *more); k++) bind_real(s, 11 + k, more[k]);
        if ((rc = done(st, s, "recording the head scan's scores"))) return rollback(st, rc);
    }
    if ((rc = run_q(st, Q_COMMIT, "committing the head scan"))) return rollback(st, rc);
    if (scan_id) *scan_id = sid;
    return LP_OK;
}
