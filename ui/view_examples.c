/* View 9, examples: what a dataset (`dataset FILE`) kept for one unit, the current head
 * (layer and head of the title bar), an MLP neuron of the current layer (b->neuron: `u`
 * picks the strongest at the selected token, H L step, `:examples neuron L.N` names one) or
 * a feature of a loaded dictionary (b->feature: the one selected in view 0 when coming from
 * there, or with `f`; H L step, `u` goes back, `:examples feature ID [--sae NAME]` names
 * one), from the newest finished dataset of the model that tracked the feature's dictionary
 * (lp_store_dataset_tracking, as `examples feature` finds it; d steps through those):
 * its top examples, each its item's tokens around the position with the activating token
 * highlighted (a head's key token underlined), then the quantile samples by bin and the
 * density histogram over the fixed bins (a neuron's or feature's activations over its
 * tokens, a head's attention weights off the sink). A head's examples are by its strongest
 * key, or by the head metric `c` (`C`) cycles to, as `examples head L.H --by METRIC` lists
 * them. Enter opens an example's item as the current run (its stored run again, as itself:
 * `rerun ID --reuse`) in the view that shows the unit (a feature's: view 0 on its column).
 *
 * The store is read in update (after every command, and when the unit or the dataset
 * changes: draw sees that and asks for it with lp_browser_restale), never in draw. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/output.h"
#include "loupe/sae.h"
#include "loupe/store_dataset.h"
#include "loupe/unit_stats.h"
#include "view.h"

#define CONTEXT 8   /* tokens each side of the activating one */
#define TOKEN_CAP 96
#define PREFIX_W 19 /* marker, rank, value, item before the context */

typedef struct {
    int rank, item, pos, key_pos; /* key_pos -1: a neuron's */
    long long run_id;             /* 0: the item has no run in the store */
    double value;
    char token[TOKEN_CAP], key_token[TOKEN_CAP];
    int ctx0, n_ctx; /* the context's first position and its tokens (made safe) */
    char **ctx;
    int *ctx_w;
} example;

/* What is shown: a unit of a dataset. */
typedef struct {
    lp_unit_kind kind; /* LP_UNIT_NEURON, LP_UNIT_HEAD or LP_UNIT_FEATURE */
    int layer, unit;   /* a feature's layer: its dictionary's index among the session's */
    long long pick;    /* the dataset chosen with d, 0: the latest with the unit */
    lp_unit_kind by;   /* what ranks the examples: the kind, or a head's LP_UNIT_HEAD_BY + m */
} unit_key;

/* The unit as the store names it: a feature's layer is its dictionary's number among the
 * dataset's (settings' features). */
typedef struct {
    const char *kind, *metric;
    int layer, unit;
} store_unit;

typedef struct {
    json_t *datasets; /* the loaded model's finished datasets, newest first: id, name, n_items, n_tokens */
    long long n_other; /* finished datasets of other models */
    unit_key want, loaded;
    unsigned loaded_gen; /* gen + 1 when loaded, 0 never */
    long long ds;        /* the dataset shown (0: none has the unit) */
    example *ex;
    int n_ex, sel, top;
    long long hist[LP_UNIT_BINS];
    bool has_hist;
    json_t *samples; /* bin, value, item, token, key_token: bins high to low */
    json_t *tracked; /* a feature's: the model's finished datasets that tracked its dictionary, newest first: id, dict */
    int last_neuron; /* what u goes back to, -1: the strongest at the token */
    lp_unit_kind head_by; /* what ranks a head's examples (c, C) */
} examples_state;

/* ---- helpers (pure: tested in test_tui.c) ---- */

void lp_context_window(const int *w, int n, int at, int mark, int side, int room, int *first, int *last) {
    int lo = at - side > 0 ? at - side : 0, hi = at + side < n - 1 ? at + side : n - 1;
    if (mark >= 0 && mark < n && mark < lo) lo = mark;
    if (mark >= 0 && mark < n && mark > hi) hi = mark;
    int total = 0;
    for (int i = lo; i <= hi; i++) total += w[i];
    while (total > room && lo < hi) {
        /* the end farther from at (the right one on a tie: what came before matters more),
         * keeping mark while the other end can go, and at always */
        bool left = at - lo > hi - at;
        if (left && lo == mark && hi > at) left = false;
        else if (!left && hi == mark && lo < at) left = true;
        if (left && lo == at) left = false;
        if (!left && hi == at) left = true;
        total -= left ? w[lo++] : w[hi--];
    }
    *first = lo;
    *last = hi;
}

int lp_histogram_rows(const long long *count, int n, int rows, int *lo, int *group, long long *out) {
    int f = -1, l = -1;
    for (int i = 0; i < n; i++)
        if (count[i] > 0) {
            if (f < 0) f = i;
            l = i;
        }
    *lo = f < 0 ? 0 : f;
    *group = 1;
    if (f < 0 || rows < 1) return 0;
    int span = l - f + 1, g = (span + rows - 1) / rows, r = (span + g - 1) / g;
    for (int i = 0; i < r; i++) {
        out[i] = 0;
        for (int b = f + i * g; b < f + (i + 1) * g && b <= l; b++) out[i] += count[b];
    }
    *group = g;
    return r;
}

int lp_bar_eighths(long long count, long long max, int w) {
    if (count <= 0 || max <= 0 || w <= 0) return 0;
    long long e = (long long)llround((double)count / (double)max * w * 8);
    if (e < 1) e = 1;
    return e > (long long)w * 8 ? w * 8 : (int)e;
}

/* ---- state ---- */

static void *examples_open(lp_browser *b) {
    (void)b;
    examples_state *st = calloc(1, sizeof *st);
    if (st) st->last_neuron = -1, st->head_by = LP_UNIT_HEAD;
    return st;
}

static void clear_unit(examples_state *st) {
    for (int i = 0; i < st->n_ex; i++) {
        for (int j = 0; j < st->ex[i].n_ctx; j++) free(st->ex[i].ctx[j]);
        free(st->ex[i].ctx);
        free(st->ex[i].ctx_w);
    }
    free(st->ex);
    st->ex = NULL;
    st->n_ex = 0;
    json_decref(st->samples);
    st->samples = NULL;
    json_decref(st->tracked);
    st->tracked = NULL;
    memset(st->hist, 0, sizeof st->hist);
    st->has_hist = false;
    st->ds = 0;
}

static void examples_close(void *vst) {
    examples_state *st = vst;
    if (!st) return;
    clear_unit(st);
    json_decref(st->datasets);
    free(st);
}

/* The unit the browser's selection names now: its feature, else its neuron, else its head. */
static unit_key unit_of(const examples_state *st, const lp_browser *b) {
    if (b->feature >= 0) return (unit_key){LP_UNIT_FEATURE, b->feature_dict, b->feature, st->want.pick, LP_UNIT_FEATURE};
    if (b->neuron >= 0) return (unit_key){LP_UNIT_NEURON, b->layer, b->neuron, st->want.pick, LP_UNIT_NEURON};
    return (unit_key){LP_UNIT_HEAD, b->layer, b->head, st->want.pick, st->head_by};
}

static bool same_unit(unit_key a, unit_key b) {
    return a.kind == b.kind && a.layer == b.layer && a.unit == b.unit && a.pick == b.pick && a.by == b.by;
}

static const char *safe_text(const char *raw, char *buf, size_t cap) { return lp_screen_token_text(raw, strlen(raw), buf, cap); }

/* ---- reading the store ---- */

/* ?1 dataset, ?2 kind, ?3 layer, ?4 unit, ?5 the metric ranking the examples shown */
static json_t *params_unit(long long ds, store_unit u) {
    return json_pack("[I,s,i,i,s]", (json_int_t)ds, u.kind, u.layer, u.unit, u.metric);
}

/* The examples of unit u in dataset st->ds, with the tokens around each: one query each. */
static void load_examples(examples_state *st, lp_browser *b, store_unit u) {
    json_t *rows = lp_browser_query(b,
                                    "SELECT e.rank, e.item, e.pos, e.key_pos, e.token, e.key_token, e.value, i.run_id"
                                    " FROM unit_examples e LEFT JOIN dataset_items i ON i.dataset_id = e.dataset_id AND"
                                    " i.item = e.item WHERE e.dataset_id = ?1 AND e.unit_kind = ?2 AND e.layer = ?3 AND"
                                    " e.unit = ?4 AND e.metric = ?5 ORDER BY e.rank",
                                    params_unit(st->ds, u));
    json_t *toks = lp_browser_query(b,
                                    "SELECT e.rank, t.pos, t.text FROM unit_examples e JOIN dataset_items i ON"
                                    " i.dataset_id = e.dataset_id AND i.item = e.item JOIN tokens t ON t.run_id = i.run_id"
                                    " AND t.side = 'target' AND t.pos BETWEEN min(coalesce(e.key_pos, e.pos), e.pos - ?6)"
                                    " AND e.pos + ?6 WHERE e.dataset_id = ?1 AND e.unit_kind = ?2 AND e.layer = ?3 AND"
                                    " e.unit = ?4 AND e.metric = ?5 ORDER BY e.rank, t.pos",
                                    json_pack("[I,s,i,i,s,i]", (json_int_t)st->ds, u.kind, u.layer, u.unit, u.metric,
                                              CONTEXT));
    size_t n = json_array_size(rows), nt = json_array_size(toks), t = 0;
    st->ex = n ? calloc(n, sizeof *st->ex) : NULL;
    if (!st->ex) n = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(rows, i);
        example *e = &st->ex[st->n_ex++];
        e->rank = (int)lp_row_int(r, "rank", 0);
        e->item = (int)lp_row_int(r, "item", 0);
        e->pos = (int)lp_row_int(r, "pos", 0);
        e->key_pos = (int)lp_row_int(r, "key_pos", -1);
        e->run_id = lp_row_int(r, "run_id", 0);
        e->value = lp_row_real(r, "value");
        safe_text(lp_row_str(r, "token"), e->token, sizeof e->token);
        safe_text(lp_row_str(r, "key_token"), e->key_token, sizeof e->key_token);
        /* its tokens: the rows of toks with its rank, in position order */
        while (t < nt && lp_row_int(json_array_get(toks, t), "rank", 0) < e->rank) t++;
        size_t t0 = t;
        while (t < nt && lp_row_int(json_array_get(toks, t), "rank", 0) == e->rank) t++;
        int m = (int)(t - t0);
        e->ctx = m ? calloc((size_t)m, sizeof *e->ctx) : NULL;
        e->ctx_w = m ? calloc((size_t)m, sizeof *e->ctx_w) : NULL;
        if (!e->ctx || !e->ctx_w) m = 0;
        e->ctx0 = m ? (int)lp_row_int(json_array_get(toks, t0), "pos", 0) : e->pos;
        for (int j = 0; j < m; j++) {
            char buf[TOKEN_CAP];
            e->ctx[j] = strdup(safe_text(lp_row_str(json_array_get(toks, t0 + (size_t)j), "text"), buf, sizeof buf));
            e->ctx_w[j] = e->ctx[j] ? lp_display_width(e->ctx[j]) : 0;
            e->n_ctx = j + 1;
        }
        /* positions missing in the middle (a run stored in part) would shift the rest: drop the context */
        if (e->n_ctx && lp_row_int(json_array_get(toks, t0 + (size_t)e->n_ctx - 1), "pos", 0) != e->ctx0 + e->n_ctx - 1) {
            for (int j = 0; j < e->n_ctx; j++) free(e->ctx[j]);
            e->n_ctx = 0;
        }
    }
    json_decref(rows);
    json_decref(toks);
}

/* A feature's dataset: the one chosen, if it tracked the feature's dictionary; else the
 * newest that did (lp_store_dataset_tracking, as `examples feature` finds it). The
 * dictionary's number in it into u->layer; 0 when none did. */
static long long feature_dataset(examples_state *st, lp_browser *b, unit_key k, const char *fp, store_unit *u) {
    const char *site = NULL, *path = lp_session_sae_path(b->s, k.layer);
    const lp_sae *sae = lp_session_sae(b->s, k.layer, NULL, &site);
    if (!sae || !path) return 0;
    if (lp_store_dataset_tracking(b->s->store, fp, path, site, lp_sae_get_info(sae)->d_sae, &st->tracked)) {
        lp_error_clear(); /* as lp_browser_query: the view shows none */
        json_decref(st->tracked);
        st->tracked = NULL;
    }
    json_t *row = json_array_get(st->tracked, 0), *r;
    size_t i;
    json_array_foreach(st->tracked, i, r) if (k.pick && lp_row_int(r, "id", 0) == k.pick) row = r;
    u->layer = (int)lp_row_int(row, "dict", 0);
    return lp_row_int(row, "id", 0);
}

static void load_unit(examples_state *st, lp_browser *b, unit_key k) {
    clear_unit(st);
    char fp[17];
    lp_model_fingerprint(b->s->model, fp);
    bool head = k.kind == LP_UNIT_HEAD;
    store_unit u = {k.kind == LP_UNIT_FEATURE ? "feature" : head ? "head" : "neuron", lp_unit_metric_name(k.by), k.layer,
                    k.unit};
    if (k.kind == LP_UNIT_FEATURE) {
        st->ds = feature_dataset(st, b, k, fp, &u);
    } else { /* the dataset chosen, if it is still there; else the newest with examples for the unit */
        json_t *found = lp_browser_query(b,
                                         "SELECT max(dataset_id) AS id FROM unit_examples WHERE unit_kind = ?2 AND layer"
                                         " = ?3 AND unit = ?4 AND dataset_id IN (SELECT id FROM datasets WHERE"
                                         " finished_at IS NOT NULL AND model_fingerprint = ?5 AND (?1 = 0 OR id = ?1))",
                                         json_pack("[I,s,i,i,s]", (json_int_t)k.pick, u.kind, u.layer, u.unit, fp));
        st->ds = lp_row_int(json_array_get(found, 0), "id", 0);
        json_decref(found);
    }
    if (!st->ds) return;
    load_examples(st, b, u);
    json_t *h = lp_browser_query(b,
                                 "SELECT bin, count FROM unit_histograms WHERE dataset_id = ?1 AND unit_kind = ?2 AND"
                                 " layer = ?3 AND unit = ?4",
                                 json_pack("[I,s,i,i]", (json_int_t)st->ds, u.kind, u.layer, u.unit));
    size_t i;
    json_t *r;
    json_array_foreach(h, i, r) {
        long long bin = lp_row_int(r, "bin", -1);
        if (bin >= 0 && bin < (head ? LP_HEAD_BINS : LP_UNIT_BINS))
            st->hist[bin] = lp_row_int(r, "count", 0), st->has_hist = true;
    }
    json_decref(h);
    st->samples = lp_browser_query(b,
                                   "SELECT bin, value, item, token, key_token FROM unit_quantile_samples WHERE dataset_id"
                                   " = ?1 AND unit_kind = ?2 AND layer = ?3 AND unit = ?4 AND metric = ?5"
                                   " ORDER BY bin DESC, hash, item",
                                   params_unit(st->ds, u));
}

static int examples_update(void *vst, lp_browser *b) {
    examples_state *st = vst;
    lp_browser_clamp_feature(b); /* its dictionary may have gone */
    st->want = unit_of(st, b);
    if (!b->s->model || !b->s->store) {
        clear_unit(st);
        st->loaded_gen = b->gen + 1;
        st->loaded = st->want;
        return LP_OK;
    }
    if (st->loaded_gen != b->gen + 1) { /* after a command: a dataset may have come, or the model changed */
        char fp[17];
        lp_model_fingerprint(b->s->model, fp);
        json_decref(st->datasets);
        st->datasets = lp_browser_query(b,
                                        "SELECT id, name, n_items, n_tokens FROM datasets WHERE finished_at IS NOT NULL"
                                        " AND model_fingerprint = ?1 ORDER BY id DESC",
                                        json_pack("[s]", fp));
        json_t *other = lp_browser_query(b,
                                         "SELECT count(*) AS n FROM datasets WHERE finished_at IS NOT NULL AND"
                                         " model_fingerprint != ?1",
                                         json_pack("[s]", fp));
        st->n_other = lp_row_int(json_array_get(other, 0), "n", 0);
        json_decref(other);
    }
    bool moved = !same_unit(st->want, st->loaded);
    load_unit(st, b, st->want);
    if (moved) st->sel = st->top = 0;
    st->loaded = st->want;
    st->loaded_gen = b->gen + 1;
    if (st->sel >= st->n_ex) st->sel = st->n_ex > 0 ? st->n_ex - 1 : 0;
    return LP_OK;
}

/* ---- drawing ---- */

/* The row of rows (datasets: id first) with id, and its index. */
static json_t *dataset_row(json_t *rows, long long id, int *index) {
    size_t i;
    json_t *d;
    json_array_foreach(rows, i, d) if (lp_row_int(d, "id", 0) == id) {
        if (index) *index = (int)i;
        return d;
    }
    return NULL;
}

/* The datasets d steps through: for a feature those that tracked its dictionary. */
static json_t *choices(const examples_state *st) { return st->loaded.kind == LP_UNIT_FEATURE ? st->tracked : st->datasets; }

static void unit_name(const lp_browser *b, unit_key k, char *buf, size_t cap) {
    const char *dict = "";
    if (k.kind == LP_UNIT_FEATURE) lp_session_sae(b->s, k.layer, &dict, NULL);
    if (k.kind == LP_UNIT_NEURON) snprintf(buf, cap, "neuron %d.%d", k.layer, k.unit);
    else if (k.kind == LP_UNIT_FEATURE) snprintf(buf, cap, "feature %d of %s", k.unit, dict ? dict : "");
    else snprintf(buf, cap, "head %d.%d by %s", k.layer, k.unit, lp_unit_metric_name(k.by));
}

/* One example along row y: marker, rank, value, item, then its context. */
static void draw_example(const example *e, bool sel, lp_screen *scr, int x0, int y, int w) {
    lp_color c = sel ? LP_COLOR_CURSOR : LP_COLOR_NORMAL;
    char head[64];
    snprintf(head, sizeof head, "%s%3d %8.4g #%-4d", sel ? "\xE2\x96\xB8" : " ", e->rank, e->value, e->item);
    lp_screen_put_clip(scr, x0, y, w < PREFIX_W ? w : PREFIX_W, head, c, sel ? LP_ATTR_BOLD : 0);
    int x = x0 + PREFIX_W + 1, room = x0 + w - x;
    if (room < 4) return;
    if (e->n_ctx == 0) { /* no tokens stored for its run: the token alone */
        lp_screen_put_clip(scr, x, y, room, e->token, LP_COLOR_SELECTED, LP_ATTR_BOLD);
        return;
    }
    int at = e->pos - e->ctx0, mark = e->key_pos >= 0 ? e->key_pos - e->ctx0 : -1, first, last;
    /* a column each side for the marks that say the item goes on */
    lp_context_window(e->ctx_w, e->n_ctx, at, mark, CONTEXT, room - 2, &first, &last);
    bool before = first > 0 || e->ctx0 > 0, after = last < e->n_ctx - 1;
    if (before) lp_screen_put(scr, x, y, 1, "\xE2\x80\xA6", LP_COLOR_DIM, 0);
    x++;
    int end = x0 + w - 1;
    for (int i = first; i <= last && x < end; i++) {
        lp_color col = LP_COLOR_NORMAL;
        int attr = 0;
        /* the selected colour as the strip draws its token (reversed without colours) */
        if (i == at) col = LP_COLOR_SELECTED, attr = LP_ATTR_BOLD;
        if (i == mark) attr |= LP_ATTR_UNDERLINE | LP_ATTR_BOLD, col = i == at ? col : LP_COLOR_LABEL;
        x += lp_screen_put_clip(scr, x, y, end - x, e->ctx[i], col, attr);
    }
    if (after && x < x0 + w) lp_screen_put(scr, x, y, 1, "\xE2\x80\xA6", LP_COLOR_DIM, 0);
}

/* A bin's label: "≤0", ">0", "≥0.56"; a head's bins "≥0.05". */
static void bin_label(int bin, bool head, char *buf, size_t cap) {
    if (head) snprintf(buf, cap, "%s%.2g", bin ? "\xE2\x89\xA5" : "<", lp_unit_head_bin_lower(bin ? bin : 1));
    else if (bin <= 0) snprintf(buf, cap, "\xE2\x89\xA4" "0");
    else if (bin == 1) snprintf(buf, cap, ">0");
    else snprintf(buf, cap, "\xE2\x89\xA5%.2g", lp_unit_bin_lower(bin));
}

/* The quantile samples: a line per bin, highest first, as many as fit. */
static void draw_samples(const examples_state *st, bool head, lp_screen *scr, lp_rect a) {
    lp_screen_put_clip(scr, a.x, a.y, a.w, "quantile samples (by the item's value)", LP_COLOR_LABEL, LP_ATTR_BOLD);
    int y = a.y + 1;
    size_t n = json_array_size(st->samples), i = 0;
    if (n == 0 && a.h > 1) lp_screen_put_clip(scr, a.x, y, a.w, "none kept for this unit", LP_COLOR_DIM, 0);
    while (i < n && y < a.y + a.h) {
        long long bin = lp_row_int(json_array_get(st->samples, i), "bin", 0);
        char label[32];
        bin_label((int)bin, false, label, sizeof label); /* the samples' bins are the values' (lp_unit_bin) */
        lp_screen_put_clip(scr, a.x, y, 7, label, LP_COLOR_LABEL, 0);
        int x = a.x + 8;
        for (; i < n && lp_row_int(json_array_get(st->samples, i), "bin", 0) == bin; i++) {
            json_t *s = json_array_get(st->samples, i);
            char tok[TOKEN_CAP], key[TOKEN_CAP], one[320];
            safe_text(lp_row_str(s, "token"), tok, sizeof tok);
            snprintf(one, sizeof one, "%.3g %s%s%s #%lld", lp_row_real(s, "value"), tok, head ? "\xE2\x86\x92" : "",
                     head ? safe_text(lp_row_str(s, "key_token"), key, sizeof key) : "", lp_row_int(s, "item", 0));
            int w = lp_display_width(one);
            if (x + w > a.x + a.w) { /* the rest of this bin does not fit */
                if (x < a.x + a.w) lp_screen_put(scr, x, y, 1, "\xE2\x80\xA6", LP_COLOR_DIM, 0);
                while (i < n && lp_row_int(json_array_get(st->samples, i), "bin", 0) == bin) i++;
                break;
            }
            lp_screen_put(scr, x, y, w, one, LP_COLOR_NORMAL, 0);
            x += w + 2;
        }
        y++;
    }
}

/* One bar of the histogram along row y. */
static void draw_bin(lp_screen *scr, lp_rect a, int y, const char *label, long long count, long long max) {
    char num[24];
    snprintf(num, sizeof num, "%lld", count);
    lp_screen_put_clip(scr, a.x, y, 7, label, LP_COLOR_LABEL, 0);
    lp_screen_put_right(scr, a.x + 7, y, 6, num, LP_COLOR_NORMAL, 0);
    int bar_w = a.w - 14;
    if (bar_w > 0) lp_screen_bar(scr, a.x + 14, y, bar_w, lp_bar_eighths(count, max, bar_w) / (8.0 * bar_w), LP_COLOR_BAR_MLP);
}

/* The density histogram: a neuron's tokens at or below 0 (what the density leaves out), or
 * a head's weights under 0.05 (most of every row), then a bar per bin (or group of bins)
 * from the lowest above that with counts to the highest. */
static void draw_histogram(const examples_state *st, bool head, lp_screen *scr, lp_rect a) {
    int bins = head ? LP_HEAD_BINS : LP_UNIT_BINS;
    long long total = 0, strong = 0;
    for (int i = 0; i < bins; i++) total += st->hist[i], strong += i >= LP_HEAD_BINS / 2 ? st->hist[i] : 0;
    char line[160];
    if (head)
        snprintf(line, sizeof line, "%.3g of %lld weights \xE2\x89\xA5" "0.5", total ? (double)strong / (double)total : 0.0,
                 total);
    else
        snprintf(line, sizeof line, "density %.3g (%lld/%lld tokens > 0)",
                 total ? 1.0 - (double)st->hist[0] / (double)total : 0.0, total - st->hist[0], total);
    lp_screen_put_clip(scr, a.x, a.y, a.w, line, LP_COLOR_LABEL, LP_ATTR_BOLD);
    if (a.h < 2) return;
    long long rows[LP_UNIT_BINS], max = st->hist[0];
    int lo, g, n = lp_histogram_rows(st->hist + 1, bins - 1, a.h - 2, &lo, &g, rows);
    for (int i = 0; i < n; i++)
        if (rows[i] > max) max = rows[i];
    char first[32];
    bin_label(0, head, first, sizeof first);
    draw_bin(scr, a, a.y + 1, first, st->hist[0], max);
    for (int i = 0; i < n; i++) {
        char label[32];
        bin_label(1 + lo + i * g, head, label, sizeof label);
        if (g > 1) lp_appendf(label, sizeof label, "+");
        draw_bin(scr, a, a.y + 2 + i, label, rows[i], max);
    }
}

static void examples_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    examples_state *st = vst;
    if (!b->s->model) {
        lp_browser_say(scr, a, "No model loaded.", ":load PATH loads one, then :dataset FILE keeps its units' examples");
        lp_browser_set_status(b, "no model");
        return;
    }
    if (!b->s->store) {
        lp_browser_say(scr, a, "No database is open: dataset examples are kept in one.",
                       "start loupe with the default database or -d FILE");
        lp_browser_set_status(b, "no store");
        return;
    }
    unit_key k = unit_of(st, b);
    if (!same_unit(k, st->loaded) || st->loaded_gen != b->gen + 1) { /* the selection moved: read the store again */
        st->want = k;
        lp_browser_restale(b);
        lp_browser_say(scr, a, "Reading the store\xE2\x80\xA6", NULL);
        return;
    }
    char name[224];
    unit_name(b, k, name, sizeof name);
    bool feature = k.kind == LP_UNIT_FEATURE;
    if (json_array_size(st->datasets) == 0) {
        lp_browser_say(scr, a, "No dataset examples in this store for this model.",
                       feature ? ":dataset FILE with the dictionary loaded keeps each feature's top examples"
                               : ":dataset FILE runs a file's items and keeps each neuron's and head's top examples");
        lp_browser_set_status(b, "%s: no dataset%s", name,
                              st->n_other ? " of this model (the store has some of other models)" : "");
        return;
    }
    if (!st->ds && feature) {
        lp_browser_say(scr, a, "No dataset of this model tracked this dictionary's features.",
                       "run :dataset FILE with the dictionary loaded; u goes back to the neuron or head");
        lp_browser_set_status(b, "%s: no dataset tracked it", name);
        return;
    }
    if (!st->ds) {
        lp_browser_say(scr, a, "No examples of this unit in the datasets of this model.",
                       "dataset FILE --track neurons,heads keeps both; u switches neuron/head, d the dataset");
        lp_browser_set_status(b, "%s: no examples", name);
        return;
    }
    int di = 0;
    json_t *d = dataset_row(st->datasets, st->ds, NULL);
    dataset_row(choices(st), st->ds, &di);
    /* the unit and its dataset, then the keys where the row has room for them (the help
     * lists them too): at 80 columns a long unit name or dataset name left them cut */
    char info[512], keys[128];
    snprintf(info, sizeof info, "%s  dataset %lld %s (%lld items, %d of %d)", name, st->ds, lp_row_str(d, "name"),
             lp_row_int(d, "n_items", 0), di + 1, (int)json_array_size(choices(st)));
    snprintf(keys, sizeof keys, "  u neuron/head  H L %s%s  d dataset  Enter opens", feature ? "feature" : "unit",
             k.kind == LP_UNIT_HEAD ? "  c metric" : "");
    int at = lp_screen_put_clip(scr, a.x + 1, a.y, a.w - 1, info, LP_COLOR_LABEL, 0);
    if (lp_display_width(info) + lp_display_width(keys) <= a.w - 1)
        lp_screen_put(scr, a.x + 1 + at, a.y, a.w - 1 - at, keys, LP_COLOR_LABEL, 0);
    lp_screen_put(scr, a.x + 1, a.y, lp_display_width(name), name, LP_COLOR_LABEL, LP_ATTR_BOLD);
    /* top: the examples; below: the samples and the histogram side by side */
    int body = a.h - 1, ex_rows = st->n_ex < (body - 1) / 2 ? st->n_ex : (body - 1) / 2;
    if (ex_rows < 1) ex_rows = 1;
    int top = lp_scroll(&st->top, st->sel, ex_rows, st->n_ex);
    for (int r = 0; r < ex_rows && top + r < st->n_ex; r++)
        draw_example(&st->ex[top + r], top + r == st->sel, scr, a.x, a.y + 1 + r, a.w);
    if (st->n_ex == 0 && feature) /* only an item where a feature fires is an example of it */
        lp_screen_put_clip(scr, a.x + 1, a.y + 1, a.w - 1, "it fired on none of the dataset's items", LP_COLOR_DIM, 0);
    if (st->n_ex > ex_rows) {
        char more[48];
        snprintf(more, sizeof more, " %d-%d of %d ", top + 1, top + ex_rows, st->n_ex);
        lp_screen_put_right(scr, a.x, a.y + 1 + ex_rows, a.w - 1, more, LP_COLOR_DIM, 0);
    }
    lp_rect low = {a.x + 1, a.y + 2 + ex_rows, a.w - 2, a.h - 2 - ex_rows};
    if (low.h >= 2) {
        lp_rect samples = low, hist = low;
        if (st->has_hist) {
            samples.w = low.w * 11 / 20;
            hist.x = low.x + samples.w + 2;
            hist.w = low.x + low.w - hist.x;
            draw_histogram(st, k.kind == LP_UNIT_HEAD, scr, hist);
        }
        draw_samples(st, k.kind == LP_UNIT_HEAD, scr, samples);
    }
    const example *e = st->n_ex ? &st->ex[st->sel] : NULL;
    if (!e) lp_browser_set_status(b, "%s: no examples", name);
    else if (e->key_pos >= 0)
        lp_browser_set_status(b, "#%d item %d: %d %s \xE2\x86\x92 %d %s  %.4g  (Enter: run %lld)", e->rank, e->item,
                              e->pos, e->token, e->key_pos, e->key_token, e->value, e->run_id);
    else
        lp_browser_set_status(b, "#%d item %d: %d %s  %.4g  (Enter: run %lld)", e->rank, e->item, e->pos, e->token,
                              e->value, e->run_id);
}

/* ---- keys ---- */

/* The strongest MLP neuron (by |value|) of the layer at the selected token, as view 3
 * lists first; 0 without a run. */
static int strongest_neuron(const lp_browser *b) {
    lp_view v;
    if (!b->s->run || lp_run_view(b->s->run, LP_ACT_MLP_POST, b->layer, -1, &v) || b->pos >= v.shape[0]) return 0;
    const float *x = v.data + (size_t)b->pos * v.stride[0];
    int best = 0;
    for (int i = 1; i < v.shape[1]; i++)
        if (fabsf(x[i]) > fabsf(x[best])) best = i;
    return best;
}

static void open_example(examples_state *st, lp_browser *b) {
    if (st->sel >= st->n_ex) return;
    const example *e = &st->ex[st->sel];
    unit_key k = st->loaded;
    /* a neuron's token in the activations view (its layer), a head's query in its pattern, a
     * feature's token in the features view with its column selected */
    lp_jump j = {true, k.kind == LP_UNIT_NEURON ? LP_VIEW_ACTIVATIONS : LP_VIEW_ATTENTION, k.layer,
                 k.kind == LP_UNIT_HEAD ? k.unit : -1, e->pos, -1};
    const char *dict = "";
    if (k.kind == LP_UNIT_FEATURE) {
        j.view = LP_VIEW_FEATURES, j.layer = -1;
        if (!lp_session_sae(b->s, k.layer, &dict, NULL)) return;
    }
    if (!e->run_id) {
        snprintf(b->message, sizeof b->message, "item %d has no run in this store", e->item);
        b->message_error = true;
        return;
    }
    if (e->run_id != b->s->run_id) { /* its stored run again, as itself: no new run each time */
        char cmd[64];
        snprintf(cmd, sizeof cmd, "rerun %lld --reuse", e->run_id);
        lp_browser_request(b, cmd, j);
        if (k.kind == LP_UNIT_FEATURE) b->after_pick = k.unit, snprintf(b->after_sae, sizeof b->after_sae, "%s", dict);
        return;
    }
    lp_browser_jump(b, &j);
    if (k.kind == LP_UNIT_FEATURE) { /* the features view selects it in its next update */
        b->feature_pick = k.unit;
        snprintf(b->feature_sae, sizeof b->feature_sae, "%s", dict);
        lp_browser_restale(b);
    }
}

static bool examples_act(void *vst, lp_browser *b, lp_action a) {
    examples_state *st = vst;
    int d_mlp = b->s->model ? lp_model_config(b->s->model)->d_mlp : 1;
    switch (a) {
    case LP_DO_UP: if (st->sel > 0) st->sel--; break;
    case LP_DO_DOWN: if (st->sel + 1 < st->n_ex) st->sel++; break;
    case LP_DO_ENTER: open_example(st, b); break;
    case LP_DO_UNIT_KIND:
        if (b->feature >= 0) b->feature = -1; /* back to the neuron or head shown before */
        else if (b->neuron >= 0) st->last_neuron = b->neuron, b->neuron = -1;
        else b->neuron = st->last_neuron >= 0 && st->last_neuron < d_mlp ? st->last_neuron : strongest_neuron(b);
        break;
    case LP_DO_FEATURE_UNIT:
        if (!lp_features_selection(b, &b->feature_dict, &b->feature)) {
            b->message_error = false;
            snprintf(b->message, sizeof b->message, "%s",
                     b->s->n_saes ? "f: no feature selected in view 0; :examples feature ID names one"
                                  : "f: no dictionary loaded (:sae load PATH loads one)");
            return false;
        }
        break;
    case LP_DO_LEFT:
    case LP_DO_RIGHT:
        if (b->feature >= 0) b->feature += a == LP_DO_LEFT ? (b->feature > 0 ? -1 : 0) : 1; /* kept in its dictionary */
        else if (b->neuron < 0) b->head += a == LP_DO_LEFT ? -1 : 1; /* the browser keeps it in range */
        else b->neuron = a == LP_DO_LEFT ? (b->neuron > 0 ? b->neuron - 1 : 0) : (b->neuron + 1 < d_mlp ? b->neuron + 1 : b->neuron);
        break;
    case LP_DO_METRIC_NEXT:
    case LP_DO_METRIC_PREV: { /* a head's examples by the next (previous) metric, round to its key again */
        if (b->neuron >= 0 || b->feature >= 0) return false;
        int n_by = LP_UNIT_KINDS - LP_UNIT_HEAD, step = a == LP_DO_METRIC_NEXT ? 1 : n_by - 1;
        st->head_by = (lp_unit_kind)(LP_UNIT_HEAD + (st->head_by - LP_UNIT_HEAD + step) % n_by);
        break;
    }
    case LP_DO_DATASET_NEXT: { /* the next dataset of the model, round to the latest again */
        json_t *rows = choices(st);
        int n = (int)json_array_size(rows), i = -1;
        dataset_row(rows, st->ds, &i);
        st->want.pick = n > 0 ? lp_row_int(json_array_get(rows, (size_t)((i + 1) % n)), "id", 0) : 0;
        break;
    }
    default: return false;
    }
    return true;
}

static void examples_subject(void *vst, const lp_browser *b, int *layer, int *head, int *pos) {
    (void)vst;
    const char *site = NULL;
    *layer = b->layer;
    *head = b->neuron >= 0 || b->feature >= 0 ? -1 : b->head;
    *pos = -1; /* the examples are other runs' tokens */
    /* a feature's: its dictionary's layer, as the features view says */
    if (b->feature >= 0 && (!lp_session_sae(b->s, b->feature_dict, NULL, &site) || sscanf(site, "blocks.%d.", layer) != 1))
        *layer = -1;
}

const lp_view_ops lp_view_examples = {
    .name = "ex",
    .title = "Examples",
    .open = examples_open,
    .close = examples_close,
    .update = examples_update,
    .draw = examples_draw,
    .act = examples_act,
    .subject = examples_subject,
};
