/* Free SQL over the store (the `sql` command, and the commands that list runs and
 * findings): statements run one after another; the last one that returns columns gives the
 * result. Read-only unless asked: sqlite3_stmt_readonly catches what writes to the database,
 * and the authorizer what it lets through (ATTACH creates files, BEGIN holds locks across
 * commands, PRAGMA foreign_keys = OFF changes later writes). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "loupe/error.h"
#include "loupe/output.h"
#include "store_impl.h"

/* PRAGMAs that take an argument and only read. Without an argument a PRAGMA reads, except
 * optimize, which may run ANALYZE. */
static int pragma_reads(const char *name, const char *arg) {
    static const char *const with_arg[] = {"table_info", "table_xinfo", "table_list", "index_info", "index_xinfo",
                                           "index_list", "foreign_key_list", "foreign_key_check", "integrity_check",
                                           "quick_check"};
    if (!name) return 0;
    if (!arg) return strcasecmp(name, "optimize") != 0;
    for (size_t i = 0; i < sizeof with_arg / sizeof *with_arg; i++)
        if (strcasecmp(name, with_arg[i]) == 0) return 1;
    return 0;
}

int store_authorize(void *arg, int action, const char *a, const char *b, const char *db, const char *trigger) {
    lp_store *st = arg;
    (void)db, (void)trigger;
    if (!st->query_readonly) return SQLITE_OK;
    const char *what = NULL;
    if (action == SQLITE_ATTACH) what = "ATTACH";
    else if (action == SQLITE_DETACH) what = "DETACH";
    else if (action == SQLITE_TRANSACTION) what = a ? a : "BEGIN";
    else if (action == SQLITE_SAVEPOINT) what = "SAVEPOINT";
    else if (action == SQLITE_PRAGMA && !pragma_reads(a, b)) what = a ? a : "PRAGMA";
    if (!what) return SQLITE_OK;
    snprintf(st->denied, sizeof st->denied, "%s", what);
    return SQLITE_DENY;
}

/* The start of a statement for a message: one line, at most 60 bytes. */
static void excerpt(const char *sql, char *buf, size_t cap) {
    while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r') sql++;
    size_t o = 0;
    for (; *sql && *sql != ';' && o + 4 < cap && o < 60; sql++) buf[o++] = *sql == '\n' || *sql == '\r' ? ' ' : *sql;
    if (*sql && *sql != ';') o += (size_t)snprintf(buf + o, cap - o, "...");
    buf[o] = '\0';
}

static int refuse(const char *sql) {
    char ex[80];
    excerpt(sql, ex, sizeof ex);
    return lp_error(LP_EINVAL, "sql: read-only: '%s' would change the database; add --write to allow it", ex);
}

static int check_params(json_t *params) {
    if (!params) return LP_OK;
    if (!json_is_array(params)) return lp_error(LP_EINVAL, "sql: parameters must be a JSON array");
    size_t i;
    json_t *v;
    json_array_foreach(params, i, v) if (json_is_object(v) || json_is_array(v)) return lp_error(
        LP_EINVAL, "sql: parameter %zu is a JSON %s; give numbers, strings, booleans or null", i + 1,
        json_is_object(v) ? "object" : "array");
    return LP_OK;
}

static int bind_params(sqlite3_stmt *s, json_t *params) {
    int n = sqlite3_bind_parameter_count(s);
    size_t have = params ? json_array_size(params) : 0;
    if ((size_t)n > have)
        return lp_error(LP_EINVAL, "sql: the statement takes %d parameter%s but %zu %s given", n, n == 1 ? "" : "s",
                        have, have == 1 ? "was" : "were");
    for (int i = 1; i <= n; i++) {
        json_t *v = json_array_get(params, (size_t)i - 1);
        if (json_is_integer(v)) sqlite3_bind_int64(s, i, json_integer_value(v));
        else if (json_is_real(v)) sqlite3_bind_double(s, i, json_real_value(v));
        else if (json_is_string(v))
            sqlite3_bind_text64(s, i, json_string_value(v), json_string_length(v), SQLITE_STATIC, SQLITE_UTF8);
        else if (json_is_boolean(v)) sqlite3_bind_int(s, i, json_is_true(v));
        else sqlite3_bind_null(s, i);
    }
    return LP_OK;
}

static json_t *cell(sqlite3_stmt *s, int i) {
    switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(s, i));
    case SQLITE_FLOAT: {
        double x = sqlite3_column_double(s, i);
        return isfinite(x) ? json_real(x) : json_null(); /* JSON has no infinity */
    }
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(s, i);
        /* tokens are raw bytes: not necessarily UTF-8, and may hold NULs */
        return json_stringn_nocheck(t ? t : "", (size_t)sqlite3_column_bytes(s, i));
    }
    case SQLITE_BLOB: return json_pack("{s:I}", "blob_bytes", (json_int_t)sqlite3_column_bytes(s, i));
    default: return json_null();
    }
}

/* A column shows as a token (spaces made visible) when its values come from a column that
 * holds tokens: tokens.text or predictions.token, through any view or alias
 * ("SELECT token AS predicted FROM predictions_view" is a token; the metric prev_token, a
 * note's text or an expression are not). Its name does not decide. */
static int token_column(sqlite3_stmt *s, int i) {
    const char *table = sqlite3_column_table_name(s, i), *col = sqlite3_column_origin_name(s, i);
    if (!table || !col) return 0;
    return (strcmp(table, "tokens") == 0 && strcmp(col, "text") == 0) ||
           (strcmp(table, "predictions") == 0 && strcmp(col, "token") == 0);
}

/* Steps s to the end; when it has columns, *rows and *table hold its result. */
static int step_all(lp_store *st, sqlite3_stmt *s, json_t **rows, json_t **table) {
    int ncol = sqlite3_column_count(s), rc;
    json_t *r = ncol ? json_array() : NULL, *t = ncol ? lp_table_new() : NULL;
    if (ncol && (!r || !t)) {
        rc = lp_error(LP_ENOMEM, "sql: out of memory");
        goto out;
    }
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *obj = json_object(), *arr = json_array();
        if (!obj || !arr) {
            json_decref(obj);
            json_decref(arr);
            rc = lp_error(LP_ENOMEM, "sql: out of memory");
            goto out;
        }
        for (int i = 0; i < ncol; i++) {
            json_t *v = cell(s, i);
            const char *name = sqlite3_column_name(s, i);
            json_object_set(obj, name ? name : "", v);
            json_array_append_new(arr, v);
        }
        json_array_append_new(r, obj);
        lp_table_row(t, arr);
    }
    if (step != SQLITE_DONE) {
        const char *msg = sqlite3_errmsg(st->db);
        switch (step & 0xff) {
        case SQLITE_ERROR:
        case SQLITE_CONSTRAINT:
        case SQLITE_MISMATCH:
        case SQLITE_RANGE:
        case SQLITE_TOOBIG:
        case SQLITE_AUTH: rc = lp_error(LP_EINVAL, "sql: %s", msg); break;
        default: rc = store_fail(st, step, "running the query");
        }
        goto out;
    }
    for (int i = 0; i < ncol; i++) {
        const char *name = sqlite3_column_name(s, i);
        name = name ? name : "";
        lp_table_column(t, name, token_column(s, i), NULL);
    }
    *rows = r;
    *table = t;
    return LP_OK;
out:
    json_decref(r);
    json_decref(t);
    return rc;
}

/* Runs the statements of sql in order; each that returns columns appends {"rows", "table"}
 * to results. */
static int run_all(lp_store *st, const char *sql, json_t *params, bool write, json_t *results) {
    if (!sql) return lp_error(LP_EINVAL, "sql: no query");
    int rc = check_params(params);
    if (rc) return rc;
    int was_autocommit = sqlite3_get_autocommit(st->db);
    const char *tail = sql;
    st->query_readonly = !write;
    while (!rc && *tail) {
        sqlite3_stmt *s = NULL;
        const char *next = NULL;
        st->denied[0] = '\0';
        int src = sqlite3_prepare_v2(st->db, tail, -1, &s, &next);
        if (src != SQLITE_OK) {
            rc = st->denied[0] ? refuse(tail) : lp_error(LP_EINVAL, "sql: %s", sqlite3_errmsg(st->db));
            break;
        }
        if (!s) { /* only a comment or whitespace was left */
            tail = next;
            continue;
        }
        if (!write && !sqlite3_stmt_readonly(s)) rc = refuse(sqlite3_sql(s));
        if (!rc) rc = bind_params(s, params);
        json_t *r = NULL, *t = NULL;
        if (!rc) rc = step_all(st, s, &r, &t);
        sqlite3_finalize(s);
        if (r) json_array_append_new(results, json_pack("{s:o,s:o}", "rows", r, "table", t));
        tail = next;
    }
    st->query_readonly = 0;
    /* A transaction left open would hold the write lock, and make the next recording fail. */
    if (was_autocommit && !sqlite3_get_autocommit(st->db)) {
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        if (!rc)
            rc = lp_error(LP_EINVAL, "sql: BEGIN without COMMIT: the transaction was rolled back; end it in the same "
                          "command");
    }
    return rc;
}

int lp_store_query_all(lp_store *st, const char *sql, bool write, json_t **results) {
    json_t *all = json_array();
    int rc = all ? run_all(st, sql, NULL, write, all) : lp_error(LP_ENOMEM, "sql: out of memory");
    if (rc) json_decref(all);
    *results = rc ? NULL : all;
    return rc;
}

int lp_store_query(lp_store *st, const char *sql, json_t *params, bool write, json_t **rows, json_t **table) {
    if (rows) *rows = NULL;
    if (table) *table = NULL;
    json_t *all = json_array();
    int rc = all ? run_all(st, sql, params, write, all) : lp_error(LP_ENOMEM, "sql: out of memory");
    json_t *last = rc ? NULL : json_array_get(all, json_array_size(all) - 1);
    if (last && rows) *rows = json_incref(json_object_get(last, "rows"));
    if (last && table) *table = json_incref(json_object_get(last, "table"));
    json_decref(all);
    return rc;
}
