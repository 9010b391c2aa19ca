/* The dataset commands: dataset (run every item of a file, the --each commands on each run,
 * and keep the aggregates of unit_stats.h, committed in batches and resumable), examples (a
 * unit's top examples from the store) and merge (shard databases into this one). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands/cmd.h"
#include "loupe/ckptdir.h"
#include "loupe/dataset.h"
#include "loupe/error.h"
#include "loupe/sae.h"
#include "loupe/store_dataset.h"
#include "loupe/tokenizer.h"
#include "loupe/unit_stats.h"

#define COMMIT_EVERY 64      /* items per transaction: a kill loses at most these */
#define BATCH_ITEMS 8        /* --batch's default: items a packed forward */
#define BATCH_MAX 256        /* --batch's bound */
#define BATCH_TOKENS 2048    /* tokens a packed forward at most, */
#define BATCH_MB 1024        /* and MB of activations (lp_run_batch_bytes): 1,200 tokens of GPT-2 small */
#define MAX_EACH 32          /* --each commands */
#define CONTEXT_TOKENS 8     /* examples: tokens shown on each side */

/* Commands that would take the dataset's run, model or session away from it. */
static const char *const NOT_EACH[] = {"dataset", "merge", "load", "run", "rerun", "generate", "session", "tui",
                                       "quit", "source", "train", "train-sae", "mode"};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static ssize_t discard(void *c, const char *buf, size_t n) {
    (void)c, (void)buf;
    return (ssize_t)n;
}

/* --shard I/N */
static int parse_shard(const char *v, int *i, int *n) {
    char *end_a = NULL, *end_b = NULL, *slash = v ? strchr(v, '/') : NULL;
    long a = slash ? strtol(v, &end_a, 10) : 0, b = slash ? strtol(slash + 1, &end_b, 10) : 0;
    if (!slash || end_a != slash || *end_b || end_b == slash + 1 || b < 1 || b > 1000000 || a < 1 || a > b)
        return lp_error(LP_EINVAL, "--shard is I/N with 1 <= I <= N <= 1000000 (e.g. 2/3), not '%s'", v ? v : "");
    *i = (int)a, *n = (int)b;
    return LP_OK;
}

/* --track neurons,heads,features (features: every loaded dictionary's). */
static int parse_track(const char *v, bool *neurons, bool *heads, bool *features) {
    *neurons = *heads = *features = false;
    char buf[128];
    if (strlen(v) >= sizeof buf) return lp_error(LP_EINVAL, "--track is a list of neurons, heads, features");
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        if (!strcmp(w, "neurons")) *neurons = true;
        else if (!strcmp(w, "heads")) *heads = true;
        else if (!strcmp(w, "features")) *features = true;
        else return lp_error(LP_EINVAL, "--track: '%s' is not neurons, heads or features", w);
    }
    if (!*neurons && !*heads && !*features) return lp_error(LP_EINVAL, "--track needs neurons, heads or features");
    return LP_OK;
}

/* The tracked dictionaries, in the order their features are numbered ("layer" of a feature
 * unit): every loaded one, as the settings name them. */
static json_t *features_json(const lp_session *s) {
    json_t *a = json_array();
    for (int i = 0; i < s->n_saes; i++) {
        const struct lp_session_sae *e = &s->saes[i];
        const lp_sae_info *in = lp_sae_get_info(e->sae);
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:s,s:i}", "name", e->name, "path", e->path, "site", e->site,
                                           "architecture", lp_sae_arch_label(in), "d_sae", in->d_sae));
    }
    return a;
}

/* The --each words out of argv (each takes the word after it), the rest left in place. */
static int take_each(int *argc, char **argv, const char **each, int *n_each) {
    int out = 1;
    *n_each = 0;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--each") != 0) {
            argv[out++] = argv[i];
            continue;
        }
        if (i + 1 >= *argc) return lp_error(LP_EINVAL, "dataset: --each needs a command, e.g. --each 'attr ig'");
        if (*n_each == MAX_EACH) return lp_error(LP_ERANGE, "dataset: more than %d --each commands", MAX_EACH);
        const char *cmd = argv[++i];
        char name[64];
        size_t nl = strcspn(cmd, " \t");
        snprintf(name, sizeof name, "%.*s", (int)(nl < sizeof name ? nl : sizeof name - 1), cmd);
        const lp_command *c = lp_command_find(name);
        if (!c) return lp_error(LP_EINVAL, "dataset: --each '%s': %s", cmd, lp_errmsg());
        for (size_t k = 0; k < sizeof NOT_EACH / sizeof *NOT_EACH; k++)
            if (!strcmp(c->name, NOT_EACH[k]))
                return lp_error(LP_EINVAL, "dataset: --each '%s': %s would take the item's run away; give commands that "
                                "read the run (attr, dla, heads, neurons, patch, eval, ...)", cmd, c->name);
        each[(*n_each)++] = cmd;
    }
    *argc = out;
    argv[out] = NULL;
    return LP_OK;
}

/* An --each command with the item's fields put in: {NAME} (letters, digits, _ . -) becomes
 * the field NAME of the item's record (lp_dataset_item_field: {text} in every format, any
 * JSONL key or CSV column) as one double-quoted word, with the escapes the command line reads
 * back; {{ and }} are braces. *out malloc'd; an item without the field is an error naming it. */
static int expand_each(const char *cmd, const lp_dataset_item *it, char **out) {
    size_t len;
    FILE *f = open_memstream(out, &len);
    if (!f) return lp_error(LP_ENOMEM, "out of memory");
    int rc = LP_OK;
    for (const char *p = cmd; *p && !rc;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            fputc(*p, f), p += 2;
            continue;
        }
        size_t nl = 0;
        while (p[0] == '{' && p[1 + nl] && (isalnum((unsigned char)p[1 + nl]) || strchr("_.-", p[1 + nl]))) nl++;
        if (!nl || p[1 + nl] != '}') {
            fputc(*p++, f);
            continue;
        }
        char name[128], *value;
        snprintf(name, sizeof name, "%.*s", (int)(nl < sizeof name ? nl : sizeof name - 1), p + 1);
        if ((rc = lp_dataset_item_field(it, name, &value))) break;
        if (!value) {
            rc = lp_error(LP_EINVAL, "item has no field \"%s\" for {%s}", name, name);
            break;
        }
        fputc('"', f);
        for (const char *v = value; *v; v++) {
            const char *esc = *v == '"' ? "\\\"" : *v == '\\' ? "\\\\" : *v == '\n' ? "\\n" : *v == '\t' ? "\\t"
                              : *v == '\r' ? "\\r" : NULL;
            if (esc) fputs(esc, f);
            else fputc(*v, f);
        }
        fputc('"', f);
        free(value);
        p += nl + 2;
    }
    if (fclose(f) && !rc) rc = lp_error(LP_ENOMEM, "out of memory");
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* Everything that decides the results, in one canonical JSON text (sorted keys). */
/* "units" 2: heads ranked by each metric too, and their histograms (a dataset of version 1,
 * before them, is neither resumed nor merged with one of 2). */
#define UNITS_VERSION 2
/* "batch", "batch_tokens", "batch_mb": which items share a forward, which decides their values' last bits. */
static char *settings_json(const lp_session *s, const lp_dataset_options *o, bool neurons, bool heads, bool features,
                           int k, int samples, int bos, int batch) {
    char track[32];
    snprintf(track, sizeof track, "%s%s%s%s%s", neurons ? "neurons" : "", neurons && heads ? "," : "",
             heads ? "heads" : "", (neurons || heads) && features ? "," : "", features ? "features" : "");
    json_t *j = json_pack("{s:i,s:i,s:i,s:i,s:s,s:s?,s:s?,s:s?,s:I,s:I,s:I,s:I,s:s,s:i,s:i,s:i}", "units",
                          UNITS_VERSION, "batch", batch, "batch_tokens", BATCH_TOKENS, "batch_mb", BATCH_MB, "format",
                          lp_dataset_format_name(o->format), "field", o->field, "pair_field", o->pair_field,
                          "label_field", o->label_field, "skip", (json_int_t)o->skip, "limit", (json_int_t)o->limit,
                          "sample", (json_int_t)o->sample, "seed", (json_int_t)o->seed, "track",
                          track, "k", k, "samples", samples, "bos", bos);
    if (j && features) json_object_set_new(j, "features", features_json(s)); /* absent without: as before them */
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return text;
}

static char *commands_json(const char *const *each, int n) {
    json_t *j = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(j, json_string(each[i]));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

/* The session a dataset's runs go to: "dataset NAME", made on first use. */
static int dataset_session(lp_session *s, const char *name, int64_t *id) {
    char sname[300];
    snprintf(sname, sizeof sname, "dataset %s", name);
    if (lp_store_session_find(s->store, sname, id) == LP_OK) return LP_OK;
    lp_error_clear();
    return lp_store_session_new(s->store, sname, id);
}

/* A run of the dataset: what it needs as it goes. */
typedef struct {
    lp_session *s;
    lp_dataset *d;
    lp_unit_stats *u;
    lp_unit_stats_config uc;
    lp_store_dataset row;
    lp_store_dataset_progress p;
    const char *const *each;
    int n_each, shard_i, shard_n, bos_mode, commit_every;
    int batch;                    /* items a group: groups are ranks [g * batch, g * batch + batch) of the selection */
    bool packed;                  /* a group's items share forwards (no dictionary spliced in: those run alone) */
    uint64_t saes;                /* what the loaded dictionaries were at the start (saes_state) */
    bool stop_on_error;           /* a failing --each stops the dataset, instead of failing its item */
    int64_t done_now, tokens_now; /* by this command (not before a resume) */
    double started, shown;
    int64_t total;                /* the shard's items, roughly: for the ETA */
} ds_run;

/* The loaded dictionaries, which each is and whether it is spliced in, as one number: the
 * items' runs go through them and their features are tracked by position in the list, so an
 * --each that loads, drops, splices or unsplices one stops the dataset. */
static uint64_t saes_state(const lp_session *s) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)s->n_saes;
    for (int i = 0; i < s->n_saes; i++) {
        h = (h ^ s->saes[i].serial) * 1099511628211ull;
        h = (h ^ (uint64_t)s->saes[i].splice) * 1099511628211ull;
    }
    return h;
}

static int checkpoint(ds_run *r) {
    unsigned char *blob;
    size_t len;
    int rc = lp_unit_stats_save(r->u, &blob, &len);
    if (rc) return rc;
    rc = lp_store_dataset_checkpoint(r->s->store, r->row.id, blob, len, &r->p);
    free(blob);
    return rc;
}

static void show_progress(ds_run *r, bool force) {
    double t = now_s();
    if (!force && t - r->shown < 0.2) return;
    r->shown = t;
    double el = t - r->started, ips = el > 0 ? r->done_now / el : 0, tps = el > 0 ? r->tokens_now / el : 0;
    int64_t left = r->total - r->p.n_items;
    double eta = ips > 0 && left > 0 ? left / ips : 0;
    lp_cmd_progress(r->s, LP_PROGRESS_STATUS, "dataset: %lld/%lld items | %.1f items/s | %.0f tok/s | ETA %.0f s",
                    (long long)r->p.n_items, (long long)r->total, ips, tps, eta);
}

/* An item whose --each command failed: what it recorded is undone and its row kept with the
 * error (inside the item's savepoint, which the caller ends). */
static int fail_item(ds_run *r, lp_store_dataset_item *row) {
    char msg[800];
    snprintf(msg, sizeof msg, "%s", lp_errmsg());
    lp_store *st = r->s->store;
    int rc;
    if ((rc = lp_store_batch_item_end(st, false)) || (rc = lp_store_batch_item(st))) return rc;
    row->run_id = 0;
    row->error = msg;
    if ((rc = lp_store_dataset_put_item(st, r->row.id, row))) return rc;
    r->p.n_failed++;
    return LP_OK;
}

/* An item of the group being run: its tokens, and its run when a packed forward made it. */
typedef struct {
    lp_dataset_item it;
    int *ids, *types, n;
    int rc;            /* its tokenization's status: an error is the item's when its turn comes, */
    char err[600];     /* with this message */
    char why[96];      /* not run: why ("" when it runs) */
    bool done;         /* committed before (a resume): in the forward, not done again */
    lp_run *run;       /* NULL: made alone when its turn comes */
} ds_slot;

/* One item: its run recorded, the --each commands on it, its values added, its row kept.
 * A failing --each fails the item alone (fail_item), unless stop_on_error or it was
 * stopped (Ctrl-C) or out of memory: then it is the dataset's error.
 * *counted: its values reached the aggregates (then a failure after them spoils the batch). */
static int do_item(ds_run *r, ds_slot *sl, bool *counted) {
    lp_session *s = r->s;
    const lp_dataset_item *it = &sl->it;
    int n = sl->n, rc = sl->rc, rec = LP_OK;
    const char *why = sl->why;
    lp_store_dataset_item row = {it->index, it->line, it->text, it->pair, it->label, 0, -1, NULL, NULL};
    *counted = false;
    if (rc) return lp_error(rc, "%s", sl->err);
    row.n_tokens = n;
    if (!why[0]) {
        if (sl->run) {
            rec = lp_cmd_adopt_run(s, sl->run, it->text, it->pair, 0);
            sl->run = NULL;
        } else if ((rc = lp_cmd_set_run(s, sl->ids, sl->types, n, it->text, it->pair, 0, &rec))) {
            return rc;
        }
        if ((rc = rec)) return rc;
        for (int i = 0; i < r->n_each && !rc; i++) {
            char *line = NULL;
            if ((rc = expand_each(r->each[i], it, &line)) || (rc = lp_exec(s, line))) {
                char msg[700];
                snprintf(msg, sizeof msg, "%s", lp_errmsg());
                rc = lp_error(rc, "%s: %s", r->each[i], msg);
            }
            free(line);
        }
        if (!rc && saes_state(s) != r->saes)
            return lp_error(LP_EINVAL, "the --each commands loaded, dropped, spliced or unspliced a dictionary; do "
                            "that before 'dataset', which runs every item through the same ones");
        if (rc && (r->stop_on_error || rc == LP_ECANCEL || rc == LP_ENOMEM)) return rc;
        if (rc) {
            if ((rc = fail_item(r, &row))) return rc;
            goto counted_in;
        }
        row.run_id = s->run_id;
    }
    row.skipped = why[0] ? why : NULL; /* kept, and counted, but not run */
    if ((rc = lp_store_dataset_put_item(s->store, r->row.id, &row))) return rc;
    if (!why[0]) {
        const lp_tokenizer *t = lp_model_tokenizer(s->model);
        bool bos = t && lp_tokenizer_bos(t) >= 0 && sl->ids[0] == lp_tokenizer_bos(t);
        *counted = true;
        if ((rc = lp_unit_stats_add_run(r->u, s->run, it->index, bos))) return rc;
        for (int d = 0; d < r->uc.n_dict; d++) {
            float *acts;
            if ((rc = lp_session_sae_encode(s, d, &acts))) return rc;
            rc = lp_unit_stats_add_features(r->u, d, acts, n, lp_run_ids(s->run), it->index, bos);
            free(acts);
            if (rc) return rc;
        }
        r->p.n_tokens += n;
        r->tokens_now += n;
    } else {
        r->p.n_skipped++;
    }
counted_in:
    r->p.n_items++;
    r->p.last_item = it->index;
    r->done_now++;
    return LP_OK;
}

static void slot_clear(ds_slot *sl) {
    lp_dataset_item_free(&sl->it);
    free(sl->ids);
    free(sl->types);
    lp_run_free(sl->run);
    memset(sl, 0, sizeof *sl);
}

/* The packed forwards of a group: its items that run, in order, BATCH_TOKENS and BATCH_MB
 * at most a forward (an item alone when it is larger), each forward a function of the
 * group's items and the model only, so that any shard and any resume make the same. A
 * forward of one item, or any when items are not packed, is left to do_item
 * (lp_cmd_set_run: the lone run, with any spliced dictionary). A forward the model refuses (a value overflowed) leaves its items to run
 * alone, where each fails or not by itself; a stop or running out of memory is the
 * dataset's error. */
static int group_forwards(ds_run *r, ds_slot *g, int ng) {
    if (!r->packed) return LP_OK;
    /* the current run is the last group's: let its arena go before this group's is taken */
    lp_run_free(r->s->run);
    r->s->run = NULL;
    r->s->run_id = 0;
    int at[BATCH_MAX], lens[BATCH_MAX];
    const int *ids[BATCH_MAX], *types[BATCH_MAX];
    lp_run *out[BATCH_MAX];
    for (int k = 0; k < ng;) {
        int B = 0, tokens = 0;
        bool todo = false;
        for (; k < ng; k++) {
            ds_slot *sl = &g[k];
            if (sl->rc || sl->why[0]) continue;
            lens[B] = sl->n;
            if (B && (tokens + sl->n > BATCH_TOKENS ||
                      lp_run_batch_bytes(r->s->model, B + 1, lens) > ((size_t)BATCH_MB << 20)))
                break;
            at[B] = k, ids[B] = sl->ids, types[B] = sl->types;
            tokens += sl->n;
            todo |= !sl->done;
            B++;
        }
        if (B < 2 || !todo) continue;
        int rc = lp_run_new_batch(out, r->s->model, B, ids, types, lens);
        if (rc == LP_ECANCEL || rc == LP_ENOMEM) return rc;
        if (rc) {
            lp_error_clear();
            continue;
        }
        for (int b = 0; b < B; b++) {
            if (g[at[b]].done) lp_run_free(out[b]);
            else g[at[b]].run = out[b];
        }
    }
    return LP_OK;
}

/* The group's items tokenized (an item longer than the model's context, or with no tokens,
 * is kept as not run) and its forwards made. */
static int group_prepare(ds_run *r, ds_slot *g, int ng) {
    const lp_config *c = lp_model_config(r->s->model);
    for (int k = 0; k < ng; k++) {
        ds_slot *sl = &g[k];
        sl->done = sl->it.index <= r->p.last_item;
        if ((sl->rc = lp_cmd_encode_text(r->s, sl->it.text, sl->it.pair, r->bos_mode, &sl->ids, &sl->types, &sl->n))) {
            snprintf(sl->err, sizeof sl->err, "%s", lp_errmsg()); /* for its turn, after the items before it */
            continue;
        }
        if (sl->n == 0) snprintf(sl->why, sizeof sl->why, "no tokens");
        else if (sl->n > c->n_ctx)
            snprintf(sl->why, sizeof sl->why, "%d tokens, more than the model's context of %d", sl->n, c->n_ctx);
    }
    return group_forwards(r, g, ng);
}

/* The shard's groups after the checkpoint: group g is the selected items of ranks
 * [g * batch, g * batch + batch), the shard's when g mod N = I - 1. A group's items share
 * packed forwards (group_forwards), and their transaction: it is committed, with the
 * aggregates' state, before a group once commit_every items are in it. An item that fails
 * or is stopped (Ctrl-C in its --each) is undone alone, and the items before it are
 * committed; a resume then runs its group's forwards again with the items done before (the
 * same forwards, so the same values) and goes on after them. Ctrl-C stops before a group.
 * When every item is done, the last transaction is left open: the finished tables go in it
 * (lp_store_dataset_finish), so it needs no checkpoint (45 MB for GPT-2 small). */
static int run_items(ds_run *r) {
    lp_store *st = r->s->store;
    int rc = LP_OK, in_batch = 0;
    bool eof = false, spoiled = false;
    ds_slot *g = calloc((size_t)r->batch, sizeof *g);
    if (!g) return lp_error(LP_ENOMEM, "out of memory");
    for (int64_t gi = 0; !rc && !eof; gi++) {
        int ng = 0;
        while (ng < r->batch && !(rc = lp_dataset_next(r->d, &g[ng].it, &eof)) && !eof) ng++;
        int todo = 0;
        bool mine = gi % r->shard_n + 1 == r->shard_i;
        for (int k = 0; mine && k < ng; k++) todo += g[k].it.index > r->p.last_item;
        if (!rc && todo && in_batch >= r->commit_every) {
            in_batch = 0;
            if (!(rc = checkpoint(r))) rc = lp_store_batch_commit(st);
        }
        if (!rc && todo && lp_cancelled()) rc = LP_ECANCEL;
        if (!rc && todo && !in_batch && !lp_store_in_batch(st)) rc = lp_store_batch_begin(st);
        if (!rc && todo) rc = group_prepare(r, g, ng);
        for (int k = 0; !rc && todo && k < ng; k++) {
            ds_slot *sl = &g[k];
            if (sl->done) continue;
            if ((rc = lp_store_batch_item(st))) break;
            bool counted;
            in_batch++;
            if ((rc = do_item(r, sl, &counted))) {
                spoiled = counted;
                char msg[800];
                snprintf(msg, sizeof msg, "%s", lp_errmsg());
                rc = lp_error(rc, "dataset: item %lld (line %d): %s", (long long)sl->it.index, sl->it.line, msg);
            }
            int end = lp_store_batch_item_end(st, rc == LP_OK);
            if (!rc) rc = end;
            if (rc) in_batch--;
            show_progress(r, false);
        }
        for (int k = 0; k < ng; k++) slot_clear(&g[k]);
    }
    free(g);
    if (!rc) return LP_OK; /* the last batch (if any) stays open for the finished tables */
    /* What is done is kept, unless an item failed after its values reached the aggregates:
     * then the batch goes (its items are done again on --resume). */
    if (in_batch && !spoiled) {
        int crc = checkpoint(r);
        if (!crc) crc = lp_store_batch_commit(st);
        if (crc && !rc) rc = crc;
    }
    if (lp_store_in_batch(st)) lp_store_batch_rollback(st);
    return rc;
}

/* Resuming: the unfinished dataset of this file and shard, refused when it differs. */
static int resume_row(ds_run *r, const char *path, char *buf, size_t cap) {
    const lp_store_dataset want = r->row;
    bool found;
    int rc = lp_store_dataset_unfinished(r->s->store, path, r->shard_i, r->shard_n, &r->row, buf, cap, &found);
    if (rc) return rc;
    if (!found)
        return lp_error(LP_EINVAL, "dataset --resume: %s has no unfinished dataset of %s (shard %d/%d) to resume; run "
                        "it without --resume", lp_store_path(r->s->store), path, r->shard_i, r->shard_n);
    const char *what = NULL, *then = "", *now = "";
    if (strcmp(want.file_fingerprint, r->row.file_fingerprint)) what = "a file whose bytes were different";
    else if (strcmp(want.model_fingerprint, r->row.model_fingerprint)) what = "another model";
    else if (strcmp(want.settings_json, r->row.settings_json))
        what = "other options", then = r->row.settings_json, now = want.settings_json;
    else if (strcmp(want.commands_json, r->row.commands_json))
        what = "other --each commands", then = r->row.commands_json, now = want.commands_json;
    if (what)
        return lp_error(LP_EINVAL, "dataset --resume: dataset %lld was started with %s%s%s%s%s%s; give the same file, "
                        "model and options, or run without --resume to start again", (long long)r->row.id, what,
                        *then ? " (" : "", then, *then ? " then, " : "", now, *then ? " now)" : "");
    unsigned char *blob;
    size_t len;
    if ((rc = lp_store_dataset_get_checkpoint(r->s->store, r->row.id, &blob, &len, &r->p))) return rc;
    if (blob) rc = lp_unit_stats_load(r->u, blob, len);
    free(blob);
    return rc;
}

static json_t *summary(const ds_run *r, bool finished, int64_t resumed_after, double secs) {
    return json_pack("{s:I,s:s,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:o,s:b,s:f,s:f,s:f}", "dataset_id", (json_int_t)r->row.id,
                     "name", r->row.name, "shard_i", r->shard_i, "shard_n", r->shard_n, "items", (json_int_t)r->p.n_items,
                     "skipped", (json_int_t)r->p.n_skipped, "failed", (json_int_t)r->p.n_failed, "tokens", (json_int_t)r->p.n_tokens, "items_now",
                     (json_int_t)r->done_now, "resumed_after",
                     resumed_after >= 0 ? json_integer(resumed_after) : json_null(), "finished", finished, "seconds", secs,
                     "items_per_s", secs > 0 ? r->done_now / secs : 0.0, "tokens_per_s",
                     secs > 0 ? r->tokens_now / secs : 0.0);
}

/* The items of path, and the digest of its bytes: a file, or a generated dataset
 * (generate:KIND:N[:SEED], dataset.h) written to a temporary file first, JSONL whose label
 * is its "target" unless --label-field says otherwise. */
static int open_items(lp_dataset **d, const char *path, lp_dataset_options *o, char fp[17]) {
    if (!lp_dataset_is_generated(path)) {
        int rc = lp_dataset_open(d, path, o);
        if (!rc && (rc = lp_file_digest(path, fp))) lp_dataset_close(*d), *d = NULL;
        return rc;
    }
    const char *dir = getenv("TMPDIR");
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/loupe-dataset-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(tmp);
    if (fd < 0) return lp_error(LP_EIO, "%s: cannot make a temporary file in %s (%s); set TMPDIR", path, tmp, strerror(errno));
    FILE *f = fdopen(fd, "w");
    int rc = f ? lp_dataset_generated(path, f) : lp_error(LP_EIO, "%s: %s", tmp, strerror(errno));
    if (f && fclose(f) && !rc) rc = lp_error(LP_EIO, "%s: %s", tmp, strerror(errno));
    if (!f) close(fd);
    o->format = LP_DATASET_JSONL;
    if (!o->label_field) o->label_field = "target";
    if (!rc && !(rc = lp_file_digest(tmp, fp))) rc = lp_dataset_open(d, tmp, o); /* open: it stays readable unlinked */
    unlink(tmp);
    return rc;
}

/* dataset FILE [--format F] [--field F] [--pair-field F] [--label-field F] [--skip N] [--limit N]
 * [--sample N --seed S] [--each CMD]... [--track neurons,heads] [--k K] [--samples S]
 * [--shard I/N] [--resume] [--commit-every N] [--bos|--no-bos] [--stop-on-error] */
int lp_cmd_dataset(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    if (!s->store) return lp_error(LP_EINVAL, "dataset: no database is open; start loupe with -d FILE");
    if (lp_model_encoder(s->model))
        return lp_error(LP_EUNSUPPORTED, "dataset: encoder-decoder models are not supported yet; use a decoder or an "
                        "encoder");
    if (!lp_model_tokenizer(s->model)) return lp_error(LP_EINVAL, "dataset: this model has no tokenizer to read text with");
    const char *each[MAX_EACH];
    int n_each;
    if ((rc = take_each(&argc, argv, each, &n_each))) return rc;
    lp_opt o[] = {{"format", false, NULL}, {"field", false, NULL},  {"pair-field", false, NULL}, {"label-field", false, NULL},
                  {"skip", false, NULL},   {"limit", false, NULL},  {"sample", false, NULL},     {"seed", false, NULL},
                  {"track", false, NULL},  {"k", false, NULL},      {"samples", false, NULL},    {"shard", false, NULL},
                  {"resume", true, NULL},  {"commit-every", false, NULL}, {"bos", true, NULL},   {"no-bos", true, NULL},
                  {"stop-on-error", true, NULL}, {"batch", false, NULL}};
    enum { NO = sizeof o / sizeof *o };
    char *pos[1];
    int np;
    if ((rc = lp_cmd_opts("dataset", argc, argv, o, NO, pos, 1, &np))) return rc;
    if (np < 1) return lp_error(LP_EINVAL, "dataset: give a file of items, e.g. 'dataset prompts.txt --each heads'");
    const char *path = pos[0];
    lp_dataset_options dopt = {.format = lp_dataset_format_from_path(path), .field = o[1].value, .pair_field = o[2].value,
                               .label_field = o[3].value, .limit = -1};
    long skip = 0, limit = -1, sample = 0, seed = 0, k = 20, samples = 5, every = COMMIT_EVERY, batch = BATCH_ITEMS;
    bool neurons = true, heads = true, features = s->n_saes > 0; /* by default every loaded dictionary's */
    ds_run r = {.s = s, .each = each, .n_each = n_each, .shard_i = 1, .shard_n = 1};
    r.p = (lp_store_dataset_progress){-1, 0, 0, 0, 0};
    if ((o[0].value && (rc = lp_dataset_format_from_name(o[0].value, &dopt.format))) ||
        (o[4].value && (rc = lp_cmd_int(o[4].value, "--skip", 0, LONG_MAX, &skip))) ||
        (o[5].value && (rc = lp_cmd_int(o[5].value, "--limit", 0, LONG_MAX, &limit))) ||
        (o[6].value && (rc = lp_cmd_int(o[6].value, "--sample", 1, LP_DATASET_MAX_SAMPLE, &sample))) ||
        (o[7].value && (rc = lp_cmd_int(o[7].value, "--seed", 0, LONG_MAX, &seed))) ||
        (o[8].value && (rc = parse_track(o[8].value, &neurons, &heads, &features))) ||
        (o[9].value && (rc = lp_cmd_int(o[9].value, "--k", 1, LP_UNIT_K_MAX, &k))) ||
        (o[10].value && (rc = lp_cmd_int(o[10].value, "--samples", 1, LP_UNIT_SAMPLES_MAX, &samples))) ||
        (o[11].value && (rc = parse_shard(o[11].value, &r.shard_i, &r.shard_n))) ||
        (o[13].value && (rc = lp_cmd_int(o[13].value, "--commit-every", 1, 1000000, &every))) ||
        (o[17].value && (rc = lp_cmd_int(o[17].value, "--batch", 1, BATCH_MAX, &batch))))
        return rc;
    if (o[7].value && !o[6].value) return lp_error(LP_EINVAL, "dataset: --seed goes with --sample N");
    if (o[0].value && lp_dataset_is_generated(path) && dopt.format != LP_DATASET_JSONL)
        return lp_error(LP_EINVAL, "dataset: %s is generated as JSONL; leave out --format %s", path, o[0].value);
    if (o[14].value && o[15].value) return lp_error(LP_EINVAL, "dataset: give --bos or --no-bos, not both");
    dopt.skip = skip, dopt.limit = limit, dopt.sample = sample, dopt.seed = (uint64_t)seed;
    r.bos_mode = o[14].value ? 1 : o[15].value ? 0 : -1;
    r.commit_every = (int)every;
    r.batch = (int)batch;
    /* A dictionary spliced in changes the forward, which packed forwards do not make; loaded
     * ones are only read, from the runs as they are. */
    r.saes = saes_state(s);
    r.packed = !lp_model_encoder(s->model);
    for (int i = 0; i < s->n_saes; i++) r.packed &= s->saes[i].splice == LP_SAE_PASS;
    r.stop_on_error = o[16].value != NULL;
    const lp_config *c = lp_model_config(s->model);
    r.uc = (lp_unit_stats_config){c->n_layer, c->d_mlp, c->n_head, neurons, heads, (int)k, (int)samples, 0, {0}};
    if (features && !s->n_saes)
        return lp_error(LP_EINVAL, "dataset --track features: no dictionary is loaded; 'sae load PATH' first (each "
                        "loaded dictionary's features are tracked)");
    if (features && s->n_saes > LP_UNIT_DICT_MAX)
        return lp_error(LP_ERANGE, "dataset --track features: %d dictionaries are loaded, at most %d are tracked; "
                        "'sae drop NAME' some", s->n_saes, LP_UNIT_DICT_MAX);
    for (int i = 0; features && i < s->n_saes; i++) r.uc.d_sae[r.uc.n_dict++] = lp_sae_get_info(s->saes[i].sae)->d_sae;

    char real[PATH_MAX], file_fp[17], model_fp[17], *settings = NULL, *commands = NULL, *rowbuf = NULL;
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    int64_t model_id, session_id, saved_session = s->session_id, resumed_after = -1;
    FILE *saved_out = s->out, *null_out = NULL;
    struct sigaction old_signals[2];
    bool caught = false, finished = false;
    if ((rc = open_items(&r.d, path, &dopt, file_fp))) goto done;
    if (lp_dataset_is_generated(path) || !realpath(path, real)) snprintf(real, sizeof real, "%s", path);
    if ((rc = lp_cmd_model_row(s, &model_id)) ||
        (rc = dataset_session(s, name, &session_id)) || (rc = lp_unit_stats_new(&r.u, &r.uc)))
        goto done;
    lp_model_fingerprint(s->model, model_fp);
    settings = settings_json(s, &dopt, neurons, heads, features, (int)k, (int)samples, r.bos_mode, r.batch);
    commands = commands_json(each, n_each);
    rowbuf = malloc(1 << 16);
    null_out = fopencookie(NULL, "w", (cookie_io_functions_t){.write = discard});
    if (!settings || !commands || !rowbuf || !null_out) {
        rc = lp_error(LP_ENOMEM, "out of memory");
        goto done;
    }
    r.row = (lp_store_dataset){0, "", name, real, file_fp, lp_dataset_format_name(dopt.format), model_id, session_id,
                               model_fp, commands, settings, r.shard_i, r.shard_n, (int)k};
    if (o[12].value) rc = resume_row(&r, real, rowbuf, 1 << 16);
    else rc = lp_store_dataset_new(s->store, &r.row);
    if (rc) goto done;
    resumed_after = o[12].value ? r.p.last_item : -1;
    for (int64_t n = lp_dataset_n_selected(r.d), g = r.shard_i - 1; g * r.batch < n; g += r.shard_n)
        r.total += n - g * r.batch < r.batch ? n - g * r.batch : r.batch; /* the shard's groups' items */
    s->session_id = r.row.session_id ? r.row.session_id : session_id;
    s->out = null_out; /* the items' runs and --each results go to the store, not the screen */
    lp_cmd_catch_stop_signals(old_signals);
    caught = true;
    r.started = r.shown = now_s();
    rc = run_items(&r);
    lp_cmd_progress(s, LP_PROGRESS_END, "%s", "");
    if (!rc && lp_store_in_batch(s->store)) rc = lp_store_dataset_progress_put(s->store, r.row.id, &r.p);
    if (!rc) rc = lp_store_dataset_finish(s->store, r.row.id, r.u, &r.uc, lp_model_tokenizer(s->model));
    if (!rc && lp_store_in_batch(s->store)) rc = lp_store_batch_commit(s->store);
    if (lp_store_in_batch(s->store)) lp_store_batch_rollback(s->store); /* the last batch is done again on --resume */
    finished = rc == LP_OK;
    if (rc == LP_ECANCEL)
        rc = lp_error(LP_ECANCEL, "dataset: stopped after %lld items, every one committed; 'dataset %s --resume' (with "
                      "the same options) continues it", (long long)r.p.n_items, path);
done:
    if (caught) lp_cmd_restore_stop_signals(old_signals);
    s->out = saved_out;
    s->session_id = saved_session;
    if (r.row.id && (finished || rc == LP_ECANCEL)) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", lp_errmsg());
        json_t *v = summary(&r, finished, resumed_after, now_s() - r.started);
        json_t *table = lp_table_new();
        const char *cols[] = {"dataset_id", "items", "skipped", "failed", "tokens", "items_per_s", "tokens_per_s",
                              "finished"};
        json_t *trow = json_array();
        for (int i = 0; i < 8; i++) {
            lp_table_column(table, cols[i], 0, i == 5 || i == 6 ? "%.1f" : NULL);
            json_array_append(trow, json_object_get(v, cols[i]));
        }
        lp_table_row(table, trow);
        if (finished) lp_cmd_emit(s, v, table);
        else json_decref(v), json_decref(table);
        lp_error(rc, "%s", keep);
    }
    if (null_out) fclose(null_out);
    lp_dataset_close(r.d);
    lp_unit_stats_free(r.u);
    free(settings);
    free(commands);
    free(rowbuf);
    return rc;
}

/* ---- examples ---- */

/* NEURON L.N or HEAD L.H */
static int parse_unit(const char *kind, const char *v, const lp_config *c, lp_unit_kind *k, int *layer, int *unit) {
    if (!strcmp(kind, "neuron")) *k = LP_UNIT_NEURON;
    else if (!strcmp(kind, "head")) *k = LP_UNIT_HEAD;
    else return lp_error(LP_EINVAL, "examples: give 'neuron L.N', 'head L.H' or 'feature ID', not '%s'", kind);
    const char *dot = v ? strchr(v, '.') : NULL;
    char lbuf[32];
    long l, u;
    int n = *k == LP_UNIT_NEURON ? c->d_mlp : c->n_head;
    if (!dot || dot - v >= (long)sizeof lbuf)
        return lp_error(LP_EINVAL, "examples: the unit is LAYER.INDEX, e.g. %s 1.%d", kind, n > 7 ? 7 : 0);
    snprintf(lbuf, sizeof lbuf, "%.*s", (int)(dot - v), v);
    int rc;
    if ((rc = lp_cmd_int(lbuf, "layer", 0, c->n_layer - 1, &l)) ||
        (rc = lp_cmd_int(dot + 1, *k == LP_UNIT_NEURON ? "neuron" : "head", 0, n - 1, &u)))
        return rc;
    *layer = (int)l, *unit = (int)u;
    return LP_OK;
}

static json_t *query1(lp_session *s, const char *sql, json_t *params, int *rc) {
    json_t *rows = NULL;
    *rc = lp_store_query(s->store, sql, params, false, &rows, NULL);
    json_decref(params);
    return rows;
}

/* Feature id of the session's dictionary name (NULL: the last loaded) as a unit of dataset ds,
 * which tracked n_dicts dictionaries: *dict its number among them (lp_store_dataset_tracking),
 * -1 when ds tracked none (its runs may have kept features: lp_cmd_feature_examples reads
 * those). */
static int tracked_feature(lp_session *s, const char *name, const char *id, json_int_t ds, json_int_t n_dicts,
                           int *dict, int *unit) {
    *dict = -1;
    const struct lp_session_sae *e = lp_cmd_find_sae(s, "examples feature", name);
    if (!e) return LP_EINVAL;
    int d_sae = lp_sae_get_info(e->sae)->d_sae;
    long f;
    int rc = lp_cmd_int(id, "feature", 0, d_sae - 1, &f);
    if (rc || n_dicts == 0) return rc;
    char fp[17];
    lp_model_fingerprint(s->model, fp);
    json_t *rows = NULL, *r;
    size_t i;
    if ((rc = lp_store_dataset_tracking(s->store, fp, e->path, e->site, d_sae, &rows))) return rc;
    json_array_foreach(rows, i, r)
        if (json_integer_value(json_object_get(r, "id")) == ds) *dict = (int)json_integer_value(json_object_get(r, "dict"));
    json_decref(rows);
    if (*dict < 0)
        return lp_error(LP_EINVAL, "examples feature: the dataset tracked other dictionaries than '%s' (%s at %s); load "
                        "one of those ('sql SELECT settings FROM datasets' lists them)", e->name, e->path, e->site);
    *unit = (int)f;
    return LP_OK;
}

/* examples neuron L.N | head L.H [--by METRIC] | feature ID [--sae NAME] [--k K] [--dataset ID]
 * [--context C] */
int lp_cmd_examples(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    int rc = lp_cmd_need_model(s);
    if (rc) return rc;
    if (!s->store) return lp_error(LP_EINVAL, "examples: no database is open; start loupe with -d FILE");
    lp_opt o[] = {{"k", false, NULL},  {"dataset", false, NULL}, {"context", false, NULL}, {"by", false, NULL},
                  {"sae", false, NULL}};
    char *pos[2];
    int np, layer = 0, unit = 0;
    long k = 20, ds = 0, ctx = CONTEXT_TOKENS;
    lp_unit_kind kind = LP_UNIT_NEURON;
    if ((rc = lp_cmd_opts("examples", argc, argv, o, 5, pos, 2, &np))) return rc;
    if (np < 2) return lp_error(LP_EINVAL, "examples: give a unit: 'examples neuron 1.7' or 'examples head 0.3'");
    bool feature = !strcmp(pos[0], "feature"); /* from the store's feature_activations (lp_cmd_feature_examples) */
    if (o[4].value && !feature) return lp_error(LP_EINVAL, "examples: --sae goes with 'examples feature ID'");
    if (feature && o[3].value) return lp_error(LP_EINVAL, "examples: a feature's examples are by its activation");
    if ((!feature && (rc = parse_unit(pos[0], pos[1], lp_model_config(s->model), &kind, &layer, &unit))) ||
        (o[0].value && (rc = lp_cmd_int(o[0].value, "--k", 1, LP_UNIT_K_MAX, &k))) ||
        (o[1].value && (rc = lp_cmd_int(o[1].value, "--dataset", 1, LONG_MAX, &ds))) ||
        (o[2].value && (rc = lp_cmd_int(o[2].value, "--context", 0, 64, &ctx))))
        return rc;
    lp_unit_kind by = kind;
    if (o[3].value && kind == LP_UNIT_NEURON && strcmp(o[3].value, "activation"))
        return lp_error(LP_EINVAL, "examples: --by is for heads (a neuron's examples are by its activation)");
    if (o[3].value && kind == LP_UNIT_HEAD && (rc = lp_unit_head_kind_from_name(o[3].value, &by))) return rc;
    char fp[17];
    lp_model_fingerprint(s->model, fp);
    json_t *found = query1(s, "SELECT id, CASE WHEN json_valid(settings) THEN coalesce(json_array_length(settings,"
                           " '$.features'), 0) ELSE 0 END AS n_dicts FROM datasets WHERE finished_at IS NOT NULL AND"
                           " model_fingerprint = ?1"
                           " AND (?2 = 0 OR id = ?2) ORDER BY id DESC LIMIT 1", json_pack("[s,I]", fp, (json_int_t)ds), &rc);
    if (rc) return rc;
    json_t *idv = json_object_get(json_array_get(found, 0), "id");
    if (!idv) {
        json_decref(found);
        return ds ? lp_error(LP_EINVAL, "examples: no finished dataset %ld of this model in %s ('sql SELECT * FROM "
                             "datasets' lists them)", ds, lp_store_path(s->store))
                  : lp_error(LP_EINVAL, "examples: %s has no finished dataset of this model; run 'dataset FILE' first",
                             lp_store_path(s->store));
    }
    json_int_t id = json_integer_value(idv);
    int dict = -1; /* the feature's dictionary among those the dataset tracked; -1: it tracked none */
    if (feature)
        rc = tracked_feature(s, o[4].value, pos[1], id,
                             json_integer_value(json_object_get(json_array_get(found, 0), "n_dicts")), &dict, &unit);
    json_decref(found);
    if (rc) return rc;
    if (dict >= 0) kind = LP_UNIT_FEATURE, by = kind, layer = dict;
    const char *kname = kind == LP_UNIT_NEURON ? "neuron" : kind == LP_UNIT_FEATURE ? "feature" : "head";
    json_t *rows =
        feature && dict < 0 ? lp_cmd_feature_examples(s, o[4].value, pos[1], id, (int)k, &rc)
                : query1(s, "SELECT e.rank, e.item, i.text, e.metric, e.pos, e.token, e.key_pos, e.key_token, e.value,"
                         " i.run_id FROM unit_examples e LEFT JOIN dataset_items i ON i.dataset_id = e.dataset_id AND"
                         " i.item = e.item WHERE e.dataset_id = ?1 AND e.unit_kind = ?2 AND e.layer = ?3 AND e.unit = ?4"
                         " AND e.metric = ?6 ORDER BY e.rank LIMIT ?5",
                         json_pack("[I,s,i,i,i,s]", id, kname, layer, unit, (int)k, lp_unit_metric_name(by)), &rc);
    if (rc) return rc;
    json_t *table = lp_table_new();
    const char *cols[] = {"rank", "item", "value", "pos", "token", "key_pos", "key_token", "context"};
    for (int i = 0; i < 8; i++) /* a head's key beside its query; neurons have none */
        if (kind == LP_UNIT_HEAD || (i != 5 && i != 6)) lp_table_column(table, cols[i], i == 4 || i == 6, i == 2 ? "%.4g" : NULL);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        json_t *run = json_object_get(row, "run_id"), *p = json_object_get(row, "pos");
        json_int_t at = json_integer_value(p);
        json_t *toks = run && json_is_integer(run)
                           ? query1(s, "SELECT pos, text FROM tokens WHERE run_id = ?1 AND side = 'target' AND pos"
                                    " BETWEEN ?2 AND ?3 ORDER BY pos",
                                    json_pack("[O,I,I]", run, at - ctx, at + ctx), &rc)
                           : json_array();
        if (rc) break;
        json_t *ctx_tokens = json_array();
        char shown[2048];
        size_t n = 0;
        shown[0] = '\0';
        size_t j;
        json_t *t;
        json_array_foreach(toks, j, t) {
            json_t *text = json_object_get(t, "text");
            const char *tx = json_is_string(text) ? json_string_value(text) : "";
            bool here = json_integer_value(json_object_get(t, "pos")) == at;
            json_array_append(ctx_tokens, text ? text : json_null());
            if (n < sizeof shown) n += (size_t)snprintf(shown + n, sizeof shown - n, here ? "[%s]" : "%s", tx);
        }
        json_object_set_new(row, "context", ctx_tokens);
        json_object_set_new(row, "context_start",
                            json_integer(json_array_size(toks) ? json_integer_value(json_object_get(json_array_get(toks, 0), "pos")) : at));
        json_decref(toks);
        json_t *trow = json_pack("[O,O,O,O,O]", json_object_get(row, "rank"), json_object_get(row, "item"),
                                 json_object_get(row, "value"), p, json_object_get(row, "token"));
        if (kind == LP_UNIT_HEAD) {
            json_array_append(trow, json_object_get(row, "key_pos"));
            json_array_append(trow, json_object_get(row, "key_token"));
        }
        json_array_append_new(trow, json_stringn_nocheck(shown, strlen(shown)));
        lp_table_row(table, trow);
        if (kind != LP_UNIT_HEAD) {
            json_object_del(row, "key_pos");
            json_object_del(row, "key_token");
        }
    }
    if (rc) {
        json_decref(rows);
        json_decref(table);
        return rc;
    }
    lp_cmd_emit(s, rows, table);
    return LP_OK;
}

/* ---- merge ---- */

/* merge SHARD.db... : into the database of -d. */
int lp_cmd_merge(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    if (!s->store) return lp_error(LP_EINVAL, "merge: no database is open; start loupe with -d OUT.db");
    if (argc < 2) return lp_error(LP_EINVAL, "merge: give the shards' databases, e.g. 'merge shard1.db shard2.db'");
    json_t *all = json_array();
    int rc = LP_OK;
    for (int i = 1; i < argc && !rc; i++) {
        if (argv[i][0] == '-' && argv[i][1] == '-') {
            rc = lp_error(LP_EINVAL, "merge: unknown option %s (see 'help merge')", argv[i]);
            break;
        }
        json_t *rep;
        if (!(rc = lp_store_dataset_merge(s->store, argv[i], &rep))) {
            json_array_extend(all, rep);
            json_decref(rep);
        }
    }
    if (rc) {
        json_decref(all);
        return rc;
    }
    json_t *table = lp_table_new();
    const char *cols[] = {"shard", "shard_i", "shard_n", "dataset_id", "result", "items"};
    for (int c = 0; c < 6; c++) lp_table_column(table, cols[c], 0, NULL);
    size_t i;
    json_t *row;
    json_array_foreach(all, i, row) {
        json_t *trow = json_array();
        for (int c = 0; c < 6; c++) json_array_append(trow, json_object_get(row, cols[c]));
        lp_table_row(table, trow);
    }
    lp_cmd_emit(s, all, table);
    return LP_OK;
}
