/* What the store's files share: the lp_store struct, its prepared statements and the
 * error mapping. Not a public header. */
#ifndef LOUPE_STORE_IMPL_H
#define LOUPE_STORE_IMPL_H

#include <sqlite3.h>

#include "loupe/store.h"

/* How long a writer waits for another's lock. SQLite's busy handler is not fair: a process
 * recording back-to-back runs can hold off another for seconds (over 5 s under
 * AddressSanitizer on a loaded 2-core machine, where test_store's two 200-run writers
 * failed), so the wait is generous; a genuinely stuck lock is still reported. */
#define STORE_BUSY_MS 30000
#define STORE_APPLICATION_ID 0x4C6F7570 /* "Loup": marks a file as loupe's (PRAGMA application_id) */

/* The statements that run on every recording, prepared once on first use (store.c). */
enum {
    Q_BEGIN, Q_COMMIT, Q_ROLLBACK, Q_SAVEPOINT, Q_RELEASE, Q_ROLLBACK_TO,
    Q_RUN_ADD, Q_TOKEN_ADD, Q_PRED_ADD, Q_HEAD_ADD,
    Q_MODEL_ADD, Q_MODEL_ID,
    Q_SESSION_ADD, Q_SESSION_ENSURE, Q_SESSION_BY_NAME, Q_SESSION_BY_ID,
    Q_FINDING_ADD, Q_TENSOR_ADD, Q_RUN_GET, Q_RUN_TOKENS,
    Q_ATTR_ADD, Q_ATTR_SCORE_ADD, Q_SERIES_ADD, Q_STEP_ADD, Q_EVAL_ADD, Q_CURVE_ADD, Q_ANALYSIS_ADD, Q_SCAN_ADD, Q_SCAN_SCORE_ADD, Q_CROSS_ADD,
    Q_SAE_ADD, Q_SAE_ID, Q_RUN_SAE_ADD, Q_FEATURE_ADD,
    Q_COUNT
};

struct lp_store {
    sqlite3 *db;
    char *path;
    int version;                /* PRAGMA user_version once open */
    int query_readonly;         /* set during lp_store_query without write: see store_authorize */
    char denied[64];            /* what store_authorize refused, for the message */
    bool batch;                 /* a batch transaction is open: recordings are its savepoints */
    sqlite3_stmt *q[Q_COUNT];
    sqlite3_stmt *dq[16];       /* dataset.c's statements, prepared on first use */
};

/* store.c: the cached statement *slot (preparing sql the first time), ready to bind. */
int store_prep(lp_store *st, sqlite3_stmt **slot, const char *sql);
/* Steps a statement that returns no rows, then resets it. */
int store_done(lp_store *st, sqlite3_stmt *s, const char *what);
/* Text parameters: NULL binds NULL; the bytes stay the caller's until the statement is reset. */
void store_bind_text(sqlite3_stmt *s, int i, const char *text, size_t len);
void store_bind_str(sqlite3_stmt *s, int i, const char *text); /* NUL-terminated */
/* Runs SQL without results (no parameters). */
int store_exec(lp_store *st, const char *sql, const char *what);

/* schema.c */
int store_schema_latest(void);
int store_migrate(lp_store *st);  /* from st->version up to the latest, one transaction per step */

/* query.c: the authorizer that keeps read-only queries read-only (ATTACH, BEGIN, PRAGMA x = y
 * pass sqlite3_stmt_readonly but change a file, the connection, or hold locks). */
int store_authorize(void *st, int action, const char *a, const char *b, const char *db, const char *trigger);

/* store.c: turns an SQLite result code into an lp_error with a message that says what
 * failed (`what`, e.g. "recording the run") and what to do about it. */
int store_fail(lp_store *st, int rc, const char *what);

#endif
