/* Datasets in the store (store_dataset.h): rows, items, checkpoints, the aggregate tables,
 * and merging shard databases (ATTACH) with every run and analysis renumbered. */
#include "loupe/store_dataset.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loupe/error.h"
#include "loupe/heads.h"
#include "loupe/unit_rows.h"
#include "store_impl.h"
#include "util/parallel.h"

enum { DQ_NEW, DQ_ITEM, DQ_CHECKPOINT, DQ_PROGRESS, DQ_GET_CHECKPOINT, DQ_UNIT, DQ_STAT };

/* 128 random bits as 32 hex digits. */
static void new_uid(char out[33]) {
    unsigned char b[16] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, b, sizeof b) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)sizeof b) { /* no urandom: the time and the process are unique enough here */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x[2] = {(uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec, (uint64_t)getpid()};
        memcpy(b, x, sizeof b);
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int lp_store_dataset_new(lp_store *st, lp_store_dataset *d) {
    sqlite3_stmt *s;
    int rc = store_prep(st, &st->dq[DQ_NEW],
                        "INSERT INTO datasets (uid, name, path, file_fingerprint, format, model_id, model_fingerprint,"
                        " session_id, commands, settings, shard_i, shard_n, k) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                        " ?10, ?11, ?12, ?13)");
    if (rc) return rc;
    s = st->dq[DQ_NEW];
    new_uid(d->uid);
    const char *text[] = {d->uid, d->name, d->path, d->file_fingerprint, d->format};
    for (int i = 0; i < 5; i++) store_bind_str(s, 1 + i, text[i]);
    if (d->model_id) sqlite3_bind_int64(s, 6, d->model_id);
    store_bind_str(s, 7, d->model_fingerprint);
    if (d->session_id) sqlite3_bind_int64(s, 8, d->session_id);
    store_bind_str(s, 9, d->commands_json);
    store_bind_str(s, 10, d->settings_json);
    sqlite3_bind_int(s, 11, d->shard_i);
    sqlite3_bind_int(s, 12, d->shard_n);
    sqlite3_bind_int(s, 13, d->k);
    if ((rc = store_done(st, s, "recording the dataset"))) return rc;
    d->id = sqlite3_last_insert_rowid(st->db);
    return LP_OK;
}

/* A text column copied into buf at *at (NULL when NULL). */
static const char *copy_col(sqlite3_stmt *s, int col, char *buf, size_t cap, size_t *at, bool *room) {
    const unsigned char *t = sqlite3_column_text(s, col);
    if (!t) return NULL;
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    if (*at + n + 1 > cap) {
        *room = false;
        return NULL;
    }
    char *out = buf + *at;
    memcpy(out, t, n);
    out[n] = '\0';
    *at += n + 1;
    return out;
}

int lp_store_dataset_unfinished(lp_store *st, const char *path, int shard_i, int shard_n, lp_store_dataset *out,
                                char *buf, size_t cap, bool *found) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db,
                                "SELECT id, uid, name, path, file_fingerprint, format, model_id, model_fingerprint, session_id,"
                                " commands, settings, shard_i, shard_n, k FROM datasets WHERE finished_at IS NULL"
                                " AND path = ?1 AND shard_i = ?2 AND shard_n = ?3 ORDER BY id DESC LIMIT 1",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, "looking for the dataset to resume");
    store_bind_str(s, 1, path);
    sqlite3_bind_int(s, 2, shard_i);
    sqlite3_bind_int(s, 3, shard_n);
    *found = false;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        size_t at = 0;
        bool room = true;
        *found = true;
        *out = (lp_store_dataset){0};
        out->id = sqlite3_column_int64(s, 0);
        snprintf(out->uid, sizeof out->uid, "%s", (const char *)sqlite3_column_text(s, 1));
        out->name = copy_col(s, 2, buf, cap, &at, &room);
        out->path = copy_col(s, 3, buf, cap, &at, &room);
        out->file_fingerprint = copy_col(s, 4, buf, cap, &at, &room);
        out->format = copy_col(s, 5, buf, cap, &at, &room);
        out->model_id = sqlite3_column_int64(s, 6);
        out->model_fingerprint = copy_col(s, 7, buf, cap, &at, &room);
        out->session_id = sqlite3_column_int64(s, 8);
        out->commands_json = copy_col(s, 9, buf, cap, &at, &room);
        out->settings_json = copy_col(s, 10, buf, cap, &at, &room);
        out->shard_i = sqlite3_column_int(s, 11);
        out->shard_n = sqlite3_column_int(s, 12);
        out->k = sqlite3_column_int(s, 13);
        rc = room ? LP_OK : lp_error(LP_ERANGE, "the dataset's row is too large to resume");
    } else {
        rc = rc == SQLITE_DONE ? LP_OK : store_fail(st, rc, "looking for the dataset to resume");
    }
    sqlite3_finalize(s);
    return rc;
}

int lp_store_dataset_put_item(lp_store *st, int64_t dataset_id, const lp_store_dataset_item *it) {
    int rc = store_prep(st, &st->dq[DQ_ITEM],
                        "INSERT INTO dataset_items (dataset_id, item, line, text, pair, label, run_id, n_tokens, skipped,"
                        " error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    if (rc) return rc;
    sqlite3_stmt *s = st->dq[DQ_ITEM];
    sqlite3_bind_int64(s, 1, dataset_id);
    sqlite3_bind_int64(s, 2, it->item);
    sqlite3_bind_int(s, 3, it->line);
    store_bind_str(s, 4, it->text);
    store_bind_str(s, 5, it->pair);
    store_bind_str(s, 6, it->label);
    if (it->run_id) sqlite3_bind_int64(s, 7, it->run_id);
    if (it->n_tokens >= 0) sqlite3_bind_int(s, 8, it->n_tokens);
    store_bind_str(s, 9, it->skipped);
    store_bind_str(s, 10, it->error);
    return store_done(st, s, "recording the dataset's item");
}

int lp_store_dataset_checkpoint(lp_store *st, int64_t dataset_id, const unsigned char *state, size_t len,
                                const lp_store_dataset_progress *p) {
    int rc = store_prep(st, &st->dq[DQ_CHECKPOINT],
                        "INSERT INTO dataset_checkpoints (dataset_id, last_item, state) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (dataset_id) DO UPDATE SET last_item = excluded.last_item, state = excluded.state");
    if (rc) return rc;
    sqlite3_stmt *s = st->dq[DQ_CHECKPOINT];
    sqlite3_bind_int64(s, 1, dataset_id);
    sqlite3_bind_int64(s, 2, p->last_item);
    sqlite3_bind_blob64(s, 3, len ? (const void *)state : "", len, SQLITE_STATIC);
    if ((rc = store_done(st, s, "saving the dataset's checkpoint"))) return rc;
    return lp_store_dataset_progress_put(st, dataset_id, p);
}

int lp_store_dataset_progress_put(lp_store *st, int64_t dataset_id, const lp_store_dataset_progress *p) {
    sqlite3_stmt *s;
    int rc;
    if ((rc = store_prep(st, &st->dq[DQ_PROGRESS],
                         "UPDATE datasets SET n_items = ?2, n_skipped = ?3, n_tokens = ?4, n_failed = ?5 WHERE id = ?1")))
        return rc;
    s = st->dq[DQ_PROGRESS];
    sqlite3_bind_int64(s, 1, dataset_id);
    sqlite3_bind_int64(s, 2, p->n_items);
    sqlite3_bind_int64(s, 3, p->n_skipped);
    sqlite3_bind_int64(s, 4, p->n_tokens);
    sqlite3_bind_int64(s, 5, p->n_failed);
    return store_done(st, s, "saving the dataset's progress");
}

int lp_store_dataset_get_checkpoint(lp_store *st, int64_t dataset_id, unsigned char **state, size_t *len,
                                    lp_store_dataset_progress *p) {
    *state = NULL, *len = 0;
    *p = (lp_store_dataset_progress){-1, 0, 0, 0, 0};
    int rc = store_prep(st, &st->dq[DQ_GET_CHECKPOINT],
                        "SELECT c.last_item, c.state, d.n_items, d.n_skipped, d.n_tokens, d.n_failed FROM dataset_checkpoints c"
                        " JOIN datasets d ON d.id = c.dataset_id WHERE c.dataset_id = ?1");
    if (rc) return rc;
    sqlite3_stmt *s = st->dq[DQ_GET_CHECKPOINT];
    sqlite3_bind_int64(s, 1, dataset_id);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(s, 1);
        const void *b = sqlite3_column_blob(s, 1);
        *p = (lp_store_dataset_progress){sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 2),
                                         sqlite3_column_int64(s, 3), sqlite3_column_int64(s, 4),
                                         sqlite3_column_int64(s, 5)};
        if (!(*state = malloc(n + 1))) rc = lp_error(LP_ENOMEM, "out of memory reading the checkpoint");
        else if (n) memcpy(*state, b, n);
        *len = n;
    } else if (step != SQLITE_DONE) {
        rc = store_fail(st, step, "reading the dataset's checkpoint");
    }
    sqlite3_reset(s);
    return rc;
}

/* ---- the aggregate tables ---- */


/* What a unit's row says of its kind. */
static const char *kind_name(lp_unit_kind kind) {
    return kind == LP_UNIT_NEURON ? "neuron" : kind == LP_UNIT_FEATURE ? "feature" : "head";
}

/* The three texts of a unit's unit_stats row, reused from unit to unit. */
typedef struct {
    lp_unit_text examples, samples, histogram;
    lp_unit_example *x;  /* k or samples entries, whichever is more */
    lp_unit_sample *smp; /* samples x LP_UNIT_BINS */
    int64_t *hash;       /* (samples) */
} unit_texts;

static void unit_texts_free(unit_texts *w) {
    lp_unit_text_free(&w->examples), lp_unit_text_free(&w->samples), lp_unit_text_free(&w->histogram);
    free(w->x), free(w->smp), free(w->hash);
}

/* Writes a unit_stats row: histogram NULL when h is. */
static int put_row(lp_store *st, int64_t id, const char *kind, int layer, int index, const char *metric,
                   const lp_unit_text *ex, const lp_unit_text *smp, const lp_unit_text *h) {
    int rc = store_prep(st, &st->dq[DQ_UNIT],
                        "INSERT INTO unit_stats (dataset_id, unit_kind, layer, unit, metric, examples, samples, histogram)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (rc) return rc;
    sqlite3_stmt *s = st->dq[DQ_UNIT];
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, layer);
    sqlite3_bind_int(s, 4, index);
    sqlite3_bind_text(s, 5, metric, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, ex->p, (int)ex->len, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, smp->p, (int)smp->len, SQLITE_STATIC);
    if (h) sqlite3_bind_text(s, 8, h->p, (int)h->len, SQLITE_STATIC);
    else sqlite3_bind_null(s, 8);
    return store_done(st, s, "writing the units' aggregates");
}

/* A unit's three texts into w (whose buffers are its own: threads format units side by side). */
static int unit_text(const lp_unit_stats *u, lp_unit_kind kind, int layer, int index, unit_texts *w, bool *has_hist) {
    int n;
    lp_unit_stats_top(u, kind, layer, index, w->x, &n);
    int rc = lp_unit_rows_examples(&w->examples, w->x, n);
    int bins;
    const uint64_t *h = lp_unit_stats_histogram(u, kind, layer, index, &bins);
    *has_hist = h != NULL;
    if (!rc && h) rc = lp_unit_rows_histogram(&w->histogram, h, bins);
    int ns = 0;
    for (int b = 0; b < LP_UNIT_BINS && !rc; b++) {
        lp_unit_stats_samples(u, kind, layer, index, b, w->x, w->hash, &n);
        for (int j = 0; j < n; j++) w->smp[ns++] = (lp_unit_sample){b, w->hash[j], w->x[j]};
    }
    if (!rc) rc = lp_unit_rows_samples(&w->samples, w->smp, ns);
    return rc;
}

/* The units' rows are formatted UNIT_BATCH at a time by the compute threads (lp_parallel_for),
 * then inserted in order by the caller: the rows, and their ids, are the same as one thread's. */
#define UNIT_BATCH 256

typedef struct {
    lp_unit_kind kind;
    int layer, index, rc;
    bool has_hist;
} unit_ref;

typedef struct {
    const lp_unit_stats *u;
    unit_ref *ref;
    unit_texts *w;
} unit_batch;

static void unit_batch_text(void *ctx, size_t i0, size_t i1) {
    unit_batch *b = ctx;
    for (size_t i = i0; i < i1; i++) {
        unit_ref *r = &b->ref[i];
        r->rc = unit_text(b->u, r->kind, r->layer, r->index, &b->w[i], &r->has_hist);
        if (r->rc) lp_error_clear(); /* the worker's message: the caller formats the unit again for its own */
    }
}

static int put_units(lp_store *st, int64_t id, const lp_unit_stats *u, const lp_unit_stats_config *c) {
    unit_texts w[UNIT_BATCH];
    unit_ref ref[UNIT_BATCH];
    int cap = c->k > c->samples ? c->k : c->samples, rc = LP_OK;
    memset(w, 0, sizeof w);
    for (int i = 0; i < UNIT_BATCH && !rc; i++) {
        w[i].x = malloc((size_t)cap * sizeof *w[i].x);
        w[i].smp = malloc((size_t)c->samples * LP_UNIT_BINS * sizeof *w[i].smp);
        w[i].hash = malloc((size_t)c->samples * sizeof *w[i].hash);
        if (!w[i].x || !w[i].smp || !w[i].hash) rc = lp_error(LP_ENOMEM, "out of memory");
    }
    /* neurons layer by layer, then heads by key and by each metric, layer by layer, then the
     * features dictionary by dictionary */
    int64_t neurons = c->neurons ? (int64_t)c->n_layer * c->d_mlp : 0, heads = (int64_t)c->n_layer * c->n_head;
    int64_t model_units = neurons + (c->heads ? (LP_UNIT_KINDS - LP_UNIT_HEAD) * heads : 0), total = model_units;
    for (int d = 0; d < c->n_dict; d++) total += c->d_sae[d];
    for (int64_t g0 = 0; g0 < total && !rc; g0 += UNIT_BATCH) {
        int n = total - g0 < UNIT_BATCH ? (int)(total - g0) : UNIT_BATCH;
        for (int i = 0; i < n; i++) {
            int64_t g = g0 + i, rem = g - neurons;
            if (g >= model_units) { /* a feature: its dictionary and number */
                int d = 0;
                int64_t f = g - model_units;
                while (f >= c->d_sae[d]) f -= c->d_sae[d++];
                ref[i] = (unit_ref){LP_UNIT_FEATURE, d, (int)f, LP_OK, false};
                continue;
            }
            ref[i] = g < neurons ? (unit_ref){LP_UNIT_NEURON, (int)(g / c->d_mlp), (int)(g % c->d_mlp), LP_OK, false}
                                 : (unit_ref){(lp_unit_kind)(LP_UNIT_HEAD + rem / heads), (int)(rem % heads / c->n_head),
                                              (int)(rem % c->n_head), LP_OK, false};
        }
        unit_batch b = {u, ref, w};
        lp_parallel_for((size_t)n, 16, unit_batch_text, &b);
        for (int i = 0; i < n && !rc; i++) {
            unit_ref *r = &ref[i];
            if (r->rc) rc = unit_text(u, r->kind, r->layer, r->index, &w[i], &r->has_hist);
            if (!rc) rc = put_row(st, id, kind_name(r->kind), r->layer, r->index, lp_unit_metric_name(r->kind),
                                  &w[i].examples, &w[i].samples, r->has_hist ? &w[i].histogram : NULL);
        }
    }
    for (int i = 0; i < UNIT_BATCH; i++) unit_texts_free(&w[i]);
    return rc;
}

/* The bins' lower edges, for the view unit_histograms. */
static int put_bins(lp_store *st) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, "INSERT OR IGNORE INTO unit_bins (unit_kind, bin, lower) VALUES (?1, ?2, ?3)", -1,
                                &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, "writing the histograms' bins");
    static const char *const kinds[] = {"head", "neuron", "feature"}; /* a feature's bins are a neuron's */
    for (int kind = 0; kind < 3 && rc == SQLITE_OK; kind++)
        for (int b = 0, head = kind == 0; b < (head ? LP_HEAD_BINS : LP_UNIT_BINS); b++) {
            sqlite3_reset(s);
            sqlite3_bind_text(s, 1, kinds[kind], -1, SQLITE_STATIC);
            sqlite3_bind_int(s, 2, b);
            if (head) sqlite3_bind_double(s, 3, lp_unit_head_bin_lower(b));
            else if (b > 0) sqlite3_bind_double(s, 3, lp_unit_bin_lower(b));
            else sqlite3_bind_null(s, 3);
            if ((rc = sqlite3_step(s)) != SQLITE_DONE) break;
            rc = SQLITE_OK;
        }
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? LP_OK : store_fail(st, rc, "writing the histograms' bins");
}

/* A statement with integer parameters ?1.. (as many as it has, from args), run to the end. */
static int run_ints(lp_store *st, const char *sql, const int64_t *args, int nargs, const char *what) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, what);
    int np = sqlite3_bind_parameter_count(s);
    for (int i = 0; i < np && i < nargs; i++) sqlite3_bind_int64(s, i + 1, args[i]);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {}
    int err = rc == SQLITE_DONE ? LP_OK : store_fail(st, rc, what);
    sqlite3_finalize(s);
    return err;
}

/* The head metrics' count, mean and spread over the dataset's runs, summed in item order in
 * double: the same stored values in the same order give the same bits, so a merged
 * dataset's statistics equal a single process's. */
static int head_stats(lp_store *st, int64_t id) {
    enum { M = LP_HEAD_METRIC_COUNT };
    int64_t arg[1] = {id};
    int rc = run_ints(st, "DELETE FROM head_metric_stats WHERE dataset_id = ?1", arg, 1, "writing the head statistics");
    sqlite3_stmt *s;
    if (rc) return rc;
    if ((rc = sqlite3_prepare_v2(st->db, "SELECT m.n_layer, m.n_head FROM datasets d JOIN models m ON m.id = d.model_id"
                                 " WHERE d.id = ?1", -1, &s, NULL)) != SQLITE_OK)
        return store_fail(st, rc, "reading the dataset's model");
    sqlite3_bind_int64(s, 1, id);
    int L = 0, H = 0;
    if (sqlite3_step(s) == SQLITE_ROW) L = sqlite3_column_int(s, 0), H = sqlite3_column_int(s, 1);
    sqlite3_finalize(s);
    if (L < 1 || H < 1 || L > 4096 || H > 4096) return LP_OK; /* no model row: nothing to say */
    size_t n = (size_t)L * H * M;
    double *sum = calloc(n, sizeof *sum), *sq = calloc(n, sizeof *sq);
    int64_t *cnt = calloc(n, sizeof *cnt);
    if (!sum || !sq || !cnt) {
        free(sum), free(sq), free(cnt);
        return lp_error(LP_ENOMEM, "out of memory for the head statistics");
    }
    /* The columns in lp_head_metric's order. */
    rc = sqlite3_prepare_v2(st->db,
                            "SELECT h.layer, h.head, h.entropy, h.prev_token, h.first_token, h.duplicate_token, h.induction,"
                            " h.max_attn FROM dataset_items i JOIN head_metrics h ON h.run_id = i.run_id AND h.kind = 'self'"
                            " WHERE i.dataset_id = ?1 ORDER BY i.item, h.layer, h.head",
                            -1, &s, NULL);
    if (rc != SQLITE_OK) rc = store_fail(st, rc, "reading the head metrics");
    else {
        sqlite3_bind_int64(s, 1, id);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            int l = sqlite3_column_int(s, 0), h = sqlite3_column_int(s, 1);
            if (l < 0 || l >= L || h < 0 || h >= H) continue;
            for (int k = 0; k < M; k++) {
                if (sqlite3_column_type(s, 2 + k) == SQLITE_NULL) continue;
                double v = sqlite3_column_double(s, 2 + k);
                size_t at = ((size_t)l * H + h) * M + k;
                sum[at] += v, sq[at] += v * v, cnt[at]++;
            }
        }
        rc = rc == SQLITE_DONE ? LP_OK : store_fail(st, rc, "reading the head metrics");
        sqlite3_finalize(s);
    }
    for (size_t at = 0; !rc && at < n; at++) {
        if ((rc = store_prep(st, &st->dq[DQ_STAT], "INSERT INTO head_metric_stats (dataset_id, layer, head, metric, n,"
                             " mean, std) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")))
            break;
        s = st->dq[DQ_STAT];
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_int(s, 2, (int)(at / M / H));
        sqlite3_bind_int(s, 3, (int)(at / M % H));
        store_bind_str(s, 4, lp_head_metric_name((lp_head_metric)(at % M)));
        sqlite3_bind_int64(s, 5, cnt[at]);
        if (cnt[at]) {
            double mean = sum[at] / cnt[at], var = sq[at] / cnt[at] - mean * mean;
            sqlite3_bind_double(s, 6, mean);
            sqlite3_bind_double(s, 7, sqrt(var > 0 ? var : 0));
        }
        rc = store_done(st, s, "writing the head statistics");
    }
    free(sum), free(sq), free(cnt);
    return rc;
}

static int rollback_with(lp_store *st, int rc) {
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", lp_errmsg());
    if (!sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return lp_error(rc, "%s", keep);
}

int lp_store_dataset_finish(lp_store *st, int64_t id, const lp_unit_stats *u, const lp_unit_stats_config *c,
                            const lp_tokenizer *t) {
    (void)t; /* the views read the tokens' text from the items' runs */
    int64_t arg[1] = {id};
    bool own = !lp_store_in_batch(st); /* inside the dataset's last batch, that batch commits */
    int rc = own ? store_exec(st, "BEGIN IMMEDIATE", "finishing the dataset") : LP_OK;
    if (!rc) rc = run_ints(st, "DELETE FROM unit_stats WHERE dataset_id = ?1", arg, 1, "finishing the dataset");
    if (!rc) rc = put_bins(st);
    if (!rc) rc = put_units(st, id, u, c);
    if (!rc) rc = head_stats(st, id);
    if (!rc) rc = run_ints(st, "DELETE FROM dataset_checkpoints WHERE dataset_id = ?1", arg, 1, "finishing the dataset");
    if (!rc)
        rc = run_ints(st, "UPDATE datasets SET finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1", arg, 1,
                      "finishing the dataset");
    if (!own) return rc;
    if (!rc) rc = store_exec(st, "COMMIT", "finishing the dataset");
    return rc ? rollback_with(st, rc) : LP_OK;
}

/* ---- merging ---- */

/* Which id a column holds, when it holds one of a copied table's: the map that renumbers it. */
static const struct {
    const char *column, *map;
} ID_COLUMNS[] = {{"run_id", "map_runs"},
                  {"session_id", "map_sessions"},
                  {"model_id", "map_models"},
                  {"attribution_id", "map_attributions"},
                  {"series_id", "map_attribution_series"},
                  {"evaluation_id", "map_evaluations"},
                  {"scan_id", "map_head_scans"},
                  {"sae_id", "map_saes"}};

#define RUNS_OF_SHARD "s.run_id IN (SELECT old FROM temp.map_runs)"

/* The tables a dataset's runs bring, parents first: each row chosen by filter (over the
 * shard's row s; ?1 is the shard's dataset id), renumbered when own_ids. */
static const struct {
    const char *table, *filter;
    bool own_ids;
} COPIES[] = {
    {"runs", "s.id IN (SELECT run_id FROM shard.dataset_items WHERE dataset_id = ?1)", true},
    {"tokens", RUNS_OF_SHARD, false},
    {"predictions", RUNS_OF_SHARD, false},
    {"head_metrics", RUNS_OF_SHARD, false},
    {"cross_maxima", RUNS_OF_SHARD, false},
    {"run_saes", RUNS_OF_SHARD, false},
    {"feature_activations", RUNS_OF_SHARD, false},
    {"tensors", RUNS_OF_SHARD, true},
    {"analyses", RUNS_OF_SHARD, true},
    {"findings", RUNS_OF_SHARD, true},
    {"attributions", RUNS_OF_SHARD, true},
    {"attribution_scores", "s.attribution_id IN (SELECT old FROM temp.map_attributions)", false},
    {"attribution_series", RUNS_OF_SHARD, true},
    {"attribution_steps", "s.series_id IN (SELECT old FROM temp.map_attribution_series)", false},
    {"evaluations", "s.attribution_id IN (SELECT old FROM temp.map_attributions)", true},
    {"evaluation_curves", "s.evaluation_id IN (SELECT old FROM temp.map_evaluations)", false},
    {"head_scans", RUNS_OF_SHARD, true},
    {"head_scan_scores", "s.scan_id IN (SELECT old FROM temp.map_head_scans)", false},
};

/* Appends to buf; false when it is full. */
static bool append(char *buf, size_t cap, size_t *at, const char *fmt, const char *a, const char *b) {
    int n = snprintf(buf + *at, cap - *at, fmt, a, b);
    if (n < 0 || (size_t)n >= cap - *at) return false;
    *at += (size_t)n;
    return true;
}

/* Copies the chosen rows of shard.table into main.table, every id column through its map
 * (its own id, with own_ids, through a new map_TABLE numbering them after main's last). */
static int copy_table(lp_store *st, const char *table, const char *filter, bool own_ids, int64_t shard_ds) {
    char sql[8192], cols[4096] = "", vals[4096] = "";
    size_t at = 0, ac = 0, av = 0;
    int64_t arg[1] = {shard_ds};
    int rc;
    if (own_ids) {
        snprintf(sql, sizeof sql, "CREATE TEMP TABLE map_%s (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)", table);
        if ((rc = store_exec(st, sql, "merging"))) return rc;
        snprintf(sql, sizeof sql, "INSERT INTO temp.map_%s SELECT s.id, (SELECT coalesce(max(id), 0) FROM main.%s) +"
                 " row_number() OVER (ORDER BY s.id) FROM shard.%s s WHERE %s", table, table, table, filter);
        if ((rc = run_ints(st, sql, arg, 1, "merging"))) return rc;
    }
    sqlite3_stmt *s;
    snprintf(sql, sizeof sql, "SELECT name FROM pragma_table_info('%s', 'main')", table);
    if ((rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL)) != SQLITE_OK) return store_fail(st, rc, "merging");
    bool ok = true;
    while (ok && sqlite3_step(s) == SQLITE_ROW) {
        const char *c = (const char *)sqlite3_column_text(s, 0);
        const char *map = NULL;
        char own[80];
        if (own_ids && !strcmp(c, "id")) snprintf(own, sizeof own, "map_%s", table), map = own;
        for (size_t i = 0; !map && i < sizeof ID_COLUMNS / sizeof *ID_COLUMNS; i++)
            if (!strcmp(c, ID_COLUMNS[i].column)) map = ID_COLUMNS[i].map;
        ok = append(cols, sizeof cols, &ac, "%s\"%s\"", ac ? ", " : "", c);
        if (ok && map) {
            char expr[300];
            snprintf(expr, sizeof expr, "(SELECT new FROM temp.%s WHERE old = s.\"%s\")", map, c);
            ok = append(vals, sizeof vals, &av, "%s%s", av ? ", " : "", expr);
        } else if (ok) {
            ok = append(vals, sizeof vals, &av, "%ss.\"%s\"", av ? ", " : "", c);
        }
    }
    sqlite3_finalize(s);
    if (!ok || !ac) return lp_error(LP_ERANGE, "merging: table %s has more columns than merge expects", table);
    at = (size_t)snprintf(sql, sizeof sql, "INSERT INTO main.%s (%s) SELECT %s FROM shard.%s s WHERE %s", table, cols, vals,
                          table, filter);
    if (at >= sizeof sql) return lp_error(LP_ERANGE, "merging: table %s has more columns than merge expects", table);
    return run_ints(st, sql, arg, 1, "merging the shard's runs");
}

/* The shard's sessions and models in this database (added when missing), as maps. */
static int map_sessions_models(lp_store *st, int64_t shard_ds) {
    int64_t arg[1] = {shard_ds};
    const char *sql[] = {
        "INSERT INTO main.sessions (name) SELECT name FROM shard.sessions WHERE id IN (SELECT session_id FROM shard.runs"
        " WHERE id IN (SELECT run_id FROM shard.dataset_items WHERE dataset_id = ?1)"
        " UNION SELECT session_id FROM shard.datasets WHERE id = ?1) ON CONFLICT (name) DO NOTHING",
        "CREATE TEMP TABLE map_sessions AS SELECT s.id AS old, m.id AS new FROM shard.sessions s"
        " JOIN main.sessions m ON m.name = s.name",
        "INSERT INTO main.models (path, arch, n_layer, n_head, n_kv_head, d_model, d_mlp, vocab, n_ctx, n_params, dtype,"
        " fingerprint, created_at, head) SELECT path, arch, n_layer, n_head, n_kv_head, d_model, d_mlp, vocab, n_ctx,"
        " n_params, dtype, fingerprint, created_at, head FROM shard.models WHERE true"
        " ON CONFLICT (fingerprint, path) DO NOTHING",
        "CREATE TEMP TABLE map_models AS SELECT s.id AS old, m.id AS new FROM shard.models s"
        " JOIN main.models m ON m.fingerprint = s.fingerprint AND m.path = s.path",
        "INSERT INTO main.saes (name, path, site, out_site, architecture, d_in, d_sae, created_at) SELECT name, path,"
        " site, out_site, architecture, d_in, d_sae, created_at FROM shard.saes WHERE true"
        " ON CONFLICT (name, path, site) DO NOTHING",
        "CREATE TEMP TABLE map_saes AS SELECT s.id AS old, m.id AS new FROM shard.saes s"
        " JOIN main.saes m ON m.name = s.name AND m.path = s.path AND m.site = s.site",
    };
    int rc = LP_OK;
    for (size_t i = 0; i < sizeof sql / sizeof *sql && !rc; i++) rc = run_ints(st, sql[i], arg, 1, "merging");
    return rc;
}

static int drop_maps(lp_store *st) {
    const char *maps[] = {"map_sessions", "map_models", "map_saes"};
    char sql[128];
    int rc = LP_OK;
    for (size_t i = 0; i < sizeof maps / sizeof *maps && !rc; i++) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS temp.%s", maps[i]);
        rc = store_exec(st, sql, "merging");
    }
    for (size_t i = 0; i < sizeof COPIES / sizeof *COPIES && !rc; i++) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS temp.map_%s", COPIES[i].table);
        rc = store_exec(st, sql, "merging");
    }
    if (!rc) rc = store_exec(st, "DROP TABLE IF EXISTS temp.merge_units", "merging");
    return rc;
}

static int cmp_example(const void *a, const void *b) {
    const lp_unit_example *x = a, *y = b;
    return lp_unit_example_before(x, y) ? -1 : lp_unit_example_before(y, x) ? 1 : 0;
}

static int cmp_sample(const void *a, const void *b) {
    const lp_unit_sample *x = a, *y = b;
    if (x->bin != y->bin) return x->bin < y->bin ? -1 : 1;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return x->x.item < y->x.item ? -1 : x->x.item > y->x.item;
}

/* Column col of s as text and its length ("" for NULL). */
static const char *col_text(sqlite3_stmt *s, int col, size_t *len) {
    const char *t = (const char *)sqlite3_column_text(s, col);
    *len = t ? (size_t)sqlite3_column_bytes(s, col) : 0;
    return t ? t : "";
}

/* One unit's aggregates of the merged dataset (columns 4.. of s: the shard's examples,
 * samples, histogram, then the merged dataset's, NULL where it has no row for the unit yet)
 * into w's texts: the top k of the union by the total order, the bottom `samples` of the
 * union per bin, the histograms' counts summed. *has_hist: a histogram to write. */
static int merge_unit(sqlite3_stmt *s, int k, int samples, unit_texts *w, bool *has_hist) {
    size_t len;
    const char *t;
    int n = 0, m = 0, rc = LP_OK;
    for (int side = 0; side < 2 && !rc; side++) {
        int got = 0;
        if (side && sqlite3_column_type(s, 7) == SQLITE_NULL) break;
        t = col_text(s, 4 + 3 * side, &len);
        rc = lp_unit_rows_parse_examples(t, len, w->x + n, k, &got);
        n += got;
        if (rc) break;
        t = col_text(s, 5 + 3 * side, &len);
        rc = lp_unit_rows_parse_samples(t, len, w->smp + m, samples * LP_UNIT_BINS, &got);
        m += got;
    }
    if (rc) return rc;
    qsort(w->x, (size_t)n, sizeof *w->x, cmp_example);
    qsort(w->smp, (size_t)m, sizeof *w->smp, cmp_sample);
    int kept = 0, in_bin = 0;
    for (int i = 0; i < m; i++) { /* the first `samples` of each bin */
        in_bin = i && w->smp[i - 1].bin == w->smp[i].bin ? in_bin + 1 : 0;
        if (in_bin < samples) w->smp[kept++] = w->smp[i];
    }
    if ((rc = lp_unit_rows_examples(&w->examples, w->x, n < k ? n : k)) ||
        (rc = lp_unit_rows_samples(&w->samples, w->smp, kept)))
        return rc;
    uint64_t h[2][LP_UNIT_BINS];
    int nb[2] = {0, 0};
    *has_hist = false;
    for (int side = 0; side < 2 && !rc; side++) {
        if (sqlite3_column_type(s, 6 + 3 * side) == SQLITE_NULL) continue;
        t = col_text(s, 6 + 3 * side, &len);
        rc = lp_unit_rows_parse_histogram(t, len, h[side], LP_UNIT_BINS, &nb[side]);
    }
    if (rc || (!nb[0] && !nb[1])) return rc;
    if (nb[0] && nb[1] && nb[0] != nb[1])
        return lp_error(LP_EFORMAT, "merge: a unit's histograms have %d and %d bins; were the shards made by "
                        "different versions of loupe?", nb[0], nb[1]);
    int bins = nb[0] ? nb[0] : nb[1];
    for (int b = 0; b < bins; b++) {
        uint64_t a = nb[0] ? h[0][b] : 0, c = nb[1] ? h[1][b] : 0;
        if (a > INT64_MAX - c) return lp_error(LP_ERANGE, "merge: a histogram count over 2^63");
        h[0][b] = a + c;
    }
    *has_hist = true;
    return lp_unit_rows_histogram(&w->histogram, h[0], bins);
}

/* The shard's aggregates merged into the merged dataset's, unit by unit (unit_rows.h): a
 * unit only the merged dataset has is left as it is. */
static int merge_aggregates(lp_store *st, int64_t into, int64_t from) {
    sqlite3_stmt *s = NULL, *ins = NULL;
    int k = 0, samples = 0;
    int rc = sqlite3_prepare_v2(st->db, "SELECT k, json_extract(settings, '$.samples') FROM main.datasets WHERE id = ?1",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, "merging the aggregates");
    sqlite3_bind_int64(s, 1, into);
    if (sqlite3_step(s) == SQLITE_ROW) k = sqlite3_column_int(s, 0), samples = sqlite3_column_int(s, 1);
    sqlite3_finalize(s);
    if (k < 1 || k > LP_UNIT_K_MAX || samples < 1 || samples > LP_UNIT_SAMPLES_MAX)
        return lp_error(LP_EFORMAT, "merge: the dataset's k (%d) or samples (%d) is out of range", k, samples);
    unit_texts w = {0};
    w.x = malloc((size_t)2 * k * sizeof *w.x);
    w.smp = malloc((size_t)2 * samples * LP_UNIT_BINS * sizeof *w.smp);
    if (!w.x || !w.smp) {
        unit_texts_free(&w);
        return lp_error(LP_ENOMEM, "out of memory merging");
    }
    rc = store_exec(st, "CREATE TEMP TABLE merge_units (unit_kind TEXT, layer INTEGER, unit INTEGER, metric TEXT,"
                    " examples TEXT, samples TEXT, histogram TEXT)", "merging the aggregates");
    if (!rc && (rc = sqlite3_prepare_v2(st->db, "INSERT INTO temp.merge_units VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1,
                                        &ins, NULL)) != SQLITE_OK)
        rc = store_fail(st, rc, "merging the aggregates");
    if (!rc && (rc = sqlite3_prepare_v2(st->db,
                                        "SELECT s.unit_kind, s.layer, s.unit, s.metric, s.examples, s.samples, s.histogram,"
                                        " m.examples, m.samples, m.histogram FROM shard.unit_stats s LEFT JOIN"
                                        " main.unit_stats m ON m.dataset_id = ?1 AND m.unit_kind = s.unit_kind AND m.layer"
                                        " = s.layer AND m.unit = s.unit AND m.metric = s.metric WHERE s.dataset_id = ?2",
                                        -1, &s, NULL)) != SQLITE_OK)
        rc = store_fail(st, rc, "merging the aggregates");
    if (!rc) {
        sqlite3_bind_int64(s, 1, into);
        sqlite3_bind_int64(s, 2, from);
        int step;
        while (!rc && (step = sqlite3_step(s)) == SQLITE_ROW) {
            bool has_hist;
            if ((rc = merge_unit(s, k, samples, &w, &has_hist))) break;
            sqlite3_reset(ins);
            for (int c = 0; c < 4; c++) sqlite3_bind_value(ins, c + 1, sqlite3_column_value(s, c));
            sqlite3_bind_text(ins, 5, w.examples.p, (int)w.examples.len, SQLITE_STATIC);
            sqlite3_bind_text(ins, 6, w.samples.p, (int)w.samples.len, SQLITE_STATIC);
            if (has_hist) sqlite3_bind_text(ins, 7, w.histogram.p, (int)w.histogram.len, SQLITE_STATIC);
            else sqlite3_bind_null(ins, 7);
            if (sqlite3_step(ins) != SQLITE_DONE) rc = store_fail(st, sqlite3_errcode(st->db), "merging the aggregates");
        }
        if (!rc && step != SQLITE_DONE) rc = store_fail(st, step, "merging the aggregates");
    }
    sqlite3_finalize(s);
    sqlite3_finalize(ins);
    unit_texts_free(&w);
    int64_t args[1] = {into};
    if (!rc) rc = put_bins(st);
    if (!rc)
        rc = run_ints(st, "INSERT OR REPLACE INTO main.unit_stats (dataset_id, unit_kind, layer, unit, metric, examples,"
                      " samples, histogram) SELECT ?1, unit_kind, layer, unit, metric, examples, samples, histogram FROM"
                      " temp.merge_units", args, 1, "merging the aggregates");
    if (!rc) rc = store_exec(st, "DROP TABLE temp.merge_units", "merging the aggregates");
    return rc;
}

/* A shard's dataset row, as merge compares it. */
typedef struct {
    int64_t id, n_items, n_skipped, n_tokens, n_failed, session_id, model_id;
    char uid[33], fields[5][2048]; /* file_fingerprint, model_fingerprint, settings, commands, path */
    int shard_i, shard_n, k;
    bool finished;
} shard_row;

enum { F_FILE, F_MODEL, F_SETTINGS, F_COMMANDS, F_PATH };
static const char *const FIELD_SAYS[] = {"another dataset file (its bytes differ)", "another model",
                                         "other options (settings)", "other --each commands", "another path"};

/* The merged dataset in this database for the shard's file, or 0: refused when it differs. */
static int find_merged(lp_store *st, const shard_row *sh, const char *path, int64_t *into) {
    sqlite3_stmt *s;
    *into = 0;
    int rc = sqlite3_prepare_v2(st->db, "SELECT id, model_fingerprint, settings, commands, shard_n FROM main.datasets"
                                " WHERE shard_i = 0 AND file_fingerprint = ?1 ORDER BY id DESC LIMIT 1", -1, &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, "merging");
    store_bind_str(s, 1, sh->fields[F_FILE]);
    rc = LP_OK;
    if (sqlite3_step(s) == SQLITE_ROW) {
        *into = sqlite3_column_int64(s, 0);
        for (int f = F_MODEL; f <= F_COMMANDS && !rc; f++) {
            const char *have = (const char *)sqlite3_column_text(s, f);
            if (!have || strcmp(have, sh->fields[f]))
                rc = lp_error(LP_EINVAL, "merge: %s: shard %d/%d was made with %s than the merged dataset %lld "
                              "holds; merge it into another database", path, sh->shard_i, sh->shard_n, FIELD_SAYS[f],
                              (long long)*into);
        }
        if (!rc && sqlite3_column_int(s, 4) != sh->shard_n)
            rc = lp_error(LP_EINVAL, "merge: %s: shard %d/%d is from another split than the merged dataset %lld's "
                          "(%d shards); merge the shards of one split", path, sh->shard_i, sh->shard_n,
                          (long long)*into, sqlite3_column_int(s, 4));
    }
    sqlite3_finalize(s);
    return rc;
}

/* "new", "merged" or "already merged": whether shard i of the merged dataset is there, and
 * from which shard run; another run's shard i is refused. */
static int shard_status(lp_store *st, int64_t into, const shard_row *sh, const char *path, bool *already) {
    sqlite3_stmt *s;
    *already = false;
    int rc = sqlite3_prepare_v2(st->db, "SELECT uid, source FROM main.dataset_shards WHERE dataset_id = ?1 AND shard_i = ?2",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, "merging");
    sqlite3_bind_int64(s, 1, into);
    sqlite3_bind_int(s, 2, sh->shard_i);
    rc = LP_OK;
    if (sqlite3_step(s) == SQLITE_ROW) {
        if (!strcmp((const char *)sqlite3_column_text(s, 0), sh->uid)) *already = true;
        else
            rc = lp_error(LP_EINVAL, "merge: %s: shard %d/%d is already merged, from another run of it (%s); each "
                          "shard is merged once", path, sh->shard_i, sh->shard_n, (const char *)sqlite3_column_text(s, 1));
    }
    sqlite3_finalize(s);
    return rc;
}

static int new_merged(lp_store *st, const shard_row *sh, int64_t *into) {
    char uid[33];
    new_uid(uid);
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(
        st->db,
        "INSERT INTO main.datasets (uid, name, path, file_fingerprint, format, model_id, model_fingerprint, session_id,"
        " commands, settings, shard_i, shard_n, k, finished_at) SELECT ?1, name, path, file_fingerprint, format,"
        " (SELECT new FROM temp.map_models WHERE old = d.model_id), model_fingerprint,"
        " (SELECT new FROM temp.map_sessions WHERE old = d.session_id), commands, settings, 0, shard_n, k,"
        " strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM shard.datasets d WHERE id = ?2",
        -1, &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, "merging");
    store_bind_str(s, 1, uid);
    sqlite3_bind_int64(s, 2, sh->id);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return store_fail(st, rc, "merging");
    *into = sqlite3_last_insert_rowid(st->db);
    return LP_OK;
}

static int merge_one(lp_store *st, const shard_row *sh, const char *path, json_t *report) {
    int64_t into;
    bool already = false;
    int rc = find_merged(st, sh, path, &into);
    if (!rc && into) rc = shard_status(st, into, sh, path, &already);
    if (rc) return rc;
    if (already) {
        json_array_append_new(report, json_pack("{s:s,s:i,s:i,s:I,s:s,s:I}", "shard", path, "shard_i", sh->shard_i,
                                                "shard_n", sh->shard_n, "dataset_id", (json_int_t)into, "result",
                                                "already merged", "items", (json_int_t)0));
        return LP_OK;
    }
    if ((rc = map_sessions_models(st, sh->id))) return rc;
    if (!into && (rc = new_merged(st, sh, &into))) return rc;
    for (size_t i = 0; i < sizeof COPIES / sizeof *COPIES && !rc; i++)
        rc = copy_table(st, COPIES[i].table, COPIES[i].filter, COPIES[i].own_ids, sh->id);
    int64_t args[2] = {into, sh->id};
    if (!rc) {
        rc = run_ints(st, "INSERT INTO main.dataset_items (dataset_id, item, line, text, pair, label, run_id, n_tokens,"
                      " skipped, error) SELECT ?1, item, line, text, pair, label, (SELECT new FROM temp.map_runs WHERE"
                      " old = s.run_id), n_tokens, skipped, error FROM shard.dataset_items s WHERE dataset_id = ?2", args, 2,
                      "merging the shard's items");
        if (rc && strstr(lp_errmsg(), "UNIQUE"))
            rc = lp_error(LP_EINVAL, "merge: %s: shard %d/%d holds items the merged dataset %lld already has: were "
                          "the shards made with other --shard splits?", path, sh->shard_i, sh->shard_n, (long long)into);
    }
    if (!rc) rc = merge_aggregates(st, into, sh->id);
    if (!rc) {
        sqlite3_stmt *s;
        rc = sqlite3_prepare_v2(st->db, "INSERT INTO main.dataset_shards (dataset_id, shard_i, shard_n, uid, source)"
                                " VALUES (?1, ?2, ?3, ?4, ?5)", -1, &s, NULL);
        if (rc != SQLITE_OK) return store_fail(st, rc, "merging");
        sqlite3_bind_int64(s, 1, into);
        sqlite3_bind_int(s, 2, sh->shard_i);
        sqlite3_bind_int(s, 3, sh->shard_n);
        store_bind_str(s, 4, sh->uid);
        store_bind_str(s, 5, path);
        rc = sqlite3_step(s) == SQLITE_DONE ? LP_OK : store_fail(st, sqlite3_errcode(st->db), "merging");
        sqlite3_finalize(s);
    }
    if (!rc) {
        int64_t counts[5] = {into, sh->n_items, sh->n_skipped, sh->n_tokens, sh->n_failed};
        rc = run_ints(st, "UPDATE main.datasets SET n_items = n_items + ?2, n_skipped = n_skipped + ?3, n_tokens ="
                      " n_tokens + ?4, n_failed = n_failed + ?5, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
                      " WHERE id = ?1", counts, 5, "merging");
    }
    if (!rc) rc = head_stats(st, into);
    if (!rc) rc = drop_maps(st);
    if (!rc)
        json_array_append_new(report, json_pack("{s:s,s:i,s:i,s:I,s:s,s:I}", "shard", path, "shard_i", sh->shard_i,
                                                "shard_n", sh->shard_n, "dataset_id", (json_int_t)into, "result", "merged",
                                                "items", (json_int_t)sh->n_items));
    return rc;
}

/* The shard database's finished shard datasets (at most cap). */
static int read_shards(lp_store *st, const char *path, shard_row *rows, int cap, int *n, int *unfinished) {
    sqlite3_stmt *s;
    *n = *unfinished = 0;
    int rc = sqlite3_prepare_v2(st->db, "SELECT id, uid, file_fingerprint, model_fingerprint, settings, commands, path,"
                                " shard_i, shard_n, k, finished_at IS NOT NULL, n_items, n_skipped, n_tokens, n_failed FROM"
                                " shard.datasets WHERE shard_i > 0 ORDER BY id", -1, &s, NULL);
    if (rc != SQLITE_OK) return store_fail(st, rc, "reading the shard's datasets");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (!sqlite3_column_int(s, 10)) {
            (*unfinished)++;
            continue;
        }
        if (*n == cap) {
            sqlite3_finalize(s);
            return lp_error(LP_ERANGE, "merge: %s holds more than %d dataset shards", path, cap);
        }
        shard_row *r = &rows[(*n)++];
        r->id = sqlite3_column_int64(s, 0);
        snprintf(r->uid, sizeof r->uid, "%s", (const char *)sqlite3_column_text(s, 1));
        for (int f = 0; f < 5; f++) {
            const unsigned char *t = sqlite3_column_text(s, 2 + f);
            snprintf(r->fields[f], sizeof r->fields[f], "%s", t ? (const char *)t : "");
        }
        r->shard_i = sqlite3_column_int(s, 7);
        r->shard_n = sqlite3_column_int(s, 8);
        r->k = sqlite3_column_int(s, 9);
        r->n_items = sqlite3_column_int64(s, 11);
        r->n_skipped = sqlite3_column_int64(s, 12);
        r->n_tokens = sqlite3_column_int64(s, 13);
        r->n_failed = sqlite3_column_int64(s, 14);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? LP_OK : store_fail(st, rc, "reading the shard's datasets");
}

enum { MAX_SHARDS_PER_FILE = 64 };

int lp_store_dataset_merge(lp_store *st, const char *path, json_t **report) {
    *report = NULL;
    struct stat a, b;
    if (stat(path, &a) != 0) return lp_error(LP_EIO, "merge: no file %s", path);
    if (stat(st->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return lp_error(LP_EINVAL, "merge: %s is this database; give the shards' databases", path);
    /* Opening it as a store checks that it is loupe's and brings its schema up to this one's. */
    lp_store *sh;
    int rc = lp_store_open(&sh, path);
    if (rc) return rc;
    lp_store_close(sh);
    if (lp_store_in_batch(st)) return lp_error(LP_EINVAL, "merge: not inside a batch");
    sqlite3_stmt *s;
    if ((rc = sqlite3_prepare_v2(st->db, "ATTACH ?1 AS shard", -1, &s, NULL)) != SQLITE_OK)
        return store_fail(st, rc, "attaching the shard");
    store_bind_str(s, 1, path);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return store_fail(st, rc, "attaching the shard");
    shard_row *rows = calloc(MAX_SHARDS_PER_FILE, sizeof *rows);
    int n = 0, unfinished = 0;
    json_t *rep = json_array();
    rc = rows ? read_shards(st, path, rows, MAX_SHARDS_PER_FILE, &n, &unfinished) : lp_error(LP_ENOMEM, "out of memory");
    if (!rc && n == 0)
        rc = lp_error(LP_EINVAL, "merge: %s holds no finished dataset shard (%d unfinished): finish a shard with "
                      "'dataset FILE --shard I/N --resume' on it first", path, unfinished);
    if (!rc) rc = store_exec(st, "BEGIN IMMEDIATE", "merging");
    for (int i = 0; i < n && !rc; i++) rc = merge_one(st, &rows[i], path, rep);
    if (!rc) rc = store_exec(st, "COMMIT", "merging");
    if (rc) {
        rollback_with(st, rc);
        drop_maps(st);
    }
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", lp_errmsg());
    sqlite3_exec(st->db, "DETACH shard", NULL, NULL, NULL);
    lp_error(rc, "%s", keep);
    free(rows);
    if (rc) {
        json_decref(rep);
        return rc;
    }
    *report = rep;
    return LP_OK;
}

int lp_store_dataset_tracking(lp_store *st, const char *fp, const char *path, const char *site, int d_sae,
                              json_t **rows) {
    json_t *params = json_pack("[s,s,s,i]", fp, path, site, d_sae);
    int rc = lp_store_query(st,
                            "SELECT d.id AS id, min(CAST(f.key AS INTEGER)) AS dict FROM datasets d, json_each(CASE"
                            " WHEN json_valid(d.settings) THEN d.settings ELSE '{}' END, '$.features') f WHERE"
                            " d.finished_at IS NOT NULL AND d.model_fingerprint = ?1 AND f.value ->> 'path' = ?2"
                            " AND f.value ->> 'site' = ?3 AND f.value ->> 'd_sae' = ?4 GROUP BY d.id ORDER BY d.id DESC",
                            params, false, rows, NULL);
    json_decref(params);
    return rc;
}
