/* View 2, heads: the whole model at a glance, an L x H grid coloured by one per-head
 * metric (lp_head_metrics; cross-attention's lp_cross_metrics), with the current head's
 * metrics and the strongest heads by the chosen metric beside it. Enter opens the head in
 * the attention view. On an encoder-decoder's run the grid is the attention `x` (or `s`)
 * chose: the decoder's self-attention, its cross-attention or the encoder's.
 *
 * When the store holds a head scan (`scan`) of the loaded model, the newest one adds its
 * scores for that stack and kind (the columns of head_scan_scores it filled: a decoder's
 * prev_token .. first_token, an encoder's next_token .. broad, cross-attention's aligned ..
 * coverage) to the c/C cycle, marks the heads it labelled with a '*' in those colourings,
 * and lists the head's scan scores and labels beside the grid. The scan is read in update
 * (after every command or change of attention) and again when c/C cycles, never in draw;
 * with no run it is shown on its own. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/heads.h"
#include "view.h"

#define LABEL_W 5
#define PANEL_W 30

/* The scan's scores, in head_scan_scores' column order: those a stack and kind have. */
static const char *const SCAN_COLS[] = {"prev_token", "duplicate_token", "induction", "first_token", "next_token",
                                        "cls_sink",   "sep_sink",        "broad",     "source_eos",  "aligned",
                                        "diagonal",   "monotonic",       "coverage"};
#define SCAN_ALL ((int)(sizeof SCAN_COLS / sizeof *SCAN_COLS))
/* The colourings: the run's metrics (0 .. n_run - 1; self-attention's six, or cross's six),
 * then the scan's columns. */
#define N_COLOURINGS (LP_HEAD_METRIC_COUNT + LP_CROSS_METRIC_COUNT + SCAN_ALL)

typedef struct {
    float *m;          /* (L, H, n_run); NULL without a run */
    int n_run;         /* LP_HEAD_METRIC_COUNT, or LP_CROSS_METRIC_COUNT for cross-attention */
    bool cross;        /* the grid is an encoder-decoder's cross-attention */
    const char *stack, *kind; /* the scan rows read: head_scan_scores' stack and kind; NULL: the model's own */
    int L, H;
    float max[N_COLOURINGS]; /* largest value of each colouring: the top of its scale */
    int metric;        /* 0 .. n_run + n_scan - 1 */
    int top, left;
    /* The newest scan of the loaded model (scan_id 0: none). */
    long long scan_id, scan_run; /* scan_run 0: generated sequences */
    int n_scan, scan_col[SCAN_ALL]; /* its columns with a score for this stack and kind */
    float *scan;       /* (L, H, n_scan) */
    char **labels;     /* (L * H) NULL or a non-empty label list */
} heads_state;

static void *heads_open(lp_browser *b) {
    (void)b;
    heads_state *st = calloc(1, sizeof *st);
    if (st) st->metric = LP_HEAD_PREV_TOKEN;
    return st;
}

static void scan_clear(heads_state *st) {
    if (st->labels)
        for (int i = 0; i < st->L * st->H; i++) free(st->labels[i]);
    free(st->labels);
    free(st->scan);
    st->labels = NULL;
    st->scan = NULL;
    st->scan_id = st->scan_run = 0;
}

static void heads_close(void *vst) {
    heads_state *st = vst;
    if (!st) return;
    scan_clear(st);
    free(st->m);
    free(st);
}

static int n_colourings(const heads_state *st) { return st->n_run + st->n_scan; }
static bool is_scan(const heads_state *st, int k) { return k >= st->n_run; }
static bool available(const heads_state *st, int k) {
    return k < st->n_run ? st->m != NULL : k < n_colourings(st) && st->scan != NULL;
}

/* A colouring's metric or score name ("diagonal", "induction"). */
static const char *score_name(const heads_state *st, int k) {
    if (k < st->n_run) return st->cross ? lp_cross_metric_name((lp_cross_metric)k) : lp_head_metric_name((lp_head_metric)k);
    return k < n_colourings(st) ? SCAN_COLS[st->scan_col[k - st->n_run]] : "";
}

/* Its name in the title and status lines: a scan's score says so ("scan: induction"). */
static const char *colouring_name(const heads_state *st, int k, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s", is_scan(st, k) ? "scan: " : "", score_name(st, k));
    return buf;
}

/* The next available colouring in direction dir (+1, -1); the same one when none is. */
static void cycle(heads_state *st, int dir) {
    int n = n_colourings(st);
    for (int i = 1; i <= n; i++) {
        int k = ((st->metric + dir * i) % n + n) % n;
        if (available(st, k)) {
            st->metric = k;
            return;
        }
    }
}

/* Reads the newest scan of the loaded model: by its row (s->model_id), or by path and
 * fingerprint when the session has not recorded the model (yet). Keeps what it has when
 * the newest is the one already read. */
static void load_scan(heads_state *st, lp_browser *b) {
    const lp_model *mo = b->s->model;
    if (!b->s->store || !mo || st->L <= 0 || st->H <= 0) {
        scan_clear(st);
        return;
    }
    char fp[17];
    lp_model_fingerprint(mo, fp);
    const char *path = lp_model_path(mo);
    json_t *rows = lp_browser_query(b,
                                    "SELECT h.id, h.run_id FROM head_scans h LEFT JOIN models m ON m.id = h.model_id"
                                    " WHERE h.model_id = ?1 OR (m.path = ?2 AND m.fingerprint = ?3)"
                                    " ORDER BY h.id DESC LIMIT 1",
                                    json_pack("[Iss]", (json_int_t)b->s->model_id, path ? path : "", fp));
    json_t *r = json_array_get(rows, 0);
    long long id = r ? lp_row_int(r, "id", 0) : 0, run = r ? lp_row_int(r, "run_id", 0) : 0;
    json_decref(rows);
    if (!id) {
        scan_clear(st);
        return;
    }
    if (id == st->scan_id && st->scan) return;
    scan_clear(st);
    size_t n = (size_t)st->L * st->H;
    st->scan = malloc(n * SCAN_ALL * sizeof *st->scan);
    st->labels = calloc(n, sizeof *st->labels);
    if (!st->scan || !st->labels) {
        free(st->scan);
        free(st->labels);
        st->scan = NULL;
        st->labels = NULL;
        return;
    }
    /* The scan's rows of the grid's stack and kind; a one-stack run's are its model's own
     * (an encoder's 'enc', an LM's 'dec'; an encoder-decoder's decoder when it has no run). */
    char cols[400] = "";
    for (int k = 0; k < SCAN_ALL; k++) lp_appendf(cols, sizeof cols, ", %s", SCAN_COLS[k]);
    char sql[900];
    snprintf(sql, sizeof sql,
             "SELECT layer, head, labels%s FROM head_scan_scores WHERE scan_id = ?1 AND kind = coalesce(?2, 'self')"
             " AND stack = coalesce(?3, (SELECT CASE WHEN count(DISTINCT stack) > 1 THEN 'dec' ELSE min(stack) END"
             " FROM head_scan_scores WHERE scan_id = ?1 AND kind = 'self'))",
             cols);
    rows = lp_browser_query(b, sql, json_pack("[Is?s?]", (json_int_t)id, st->kind, st->stack));
    /* The columns this stack and kind have: those with a score in any row. */
    st->n_scan = 0;
    for (int k = 0; k < SCAN_ALL; k++) {
        size_t i;
        json_array_foreach(rows, i, r) {
            if (!isnan(lp_row_real(r, SCAN_COLS[k]))) {
                st->scan_col[st->n_scan++] = k;
                break;
            }
        }
    }
    if (!st->n_scan) {
        json_decref(rows);
        free(st->scan), free(st->labels);
        st->scan = NULL;
        st->labels = NULL;
        return;
    }
    for (size_t i = 0; i < n * SCAN_ALL; i++) st->scan[i] = NAN;
    size_t i;
    json_array_foreach(rows, i, r) {
        long long l = lp_row_int(r, "layer", -1), h = lp_row_int(r, "head", -1);
        if (l < 0 || l >= st->L || h < 0 || h >= st->H) continue;
        size_t at = (size_t)l * st->H + (size_t)h;
        for (int k = 0; k < st->n_scan; k++)
            st->scan[at * st->n_scan + k] = (float)lp_row_real(r, SCAN_COLS[st->scan_col[k]]);
        const char *lab = lp_row_str(r, "labels");
        if (*lab && !st->labels[at]) st->labels[at] = strdup(lab);
    }
    json_decref(rows);
    st->scan_id = id;
    st->scan_run = run;
    for (int k = 0; k < st->n_scan; k++) {
        float mx = 1; /* attention probabilities: their own scale */
        for (size_t j = 0; j < n; j++) {
            float v = st->scan[j * st->n_scan + k];
            if (v > mx) mx = v;
        }
        st->max[st->n_run + k] = mx;
    }
}

/* After the scan or the run came or went: a colouring that is there. */
static void settle_metric(heads_state *st) {
    if (available(st, st->metric) || (!st->m && !st->scan)) return;
    st->metric = st->m ? (st->cross ? LP_CROSS_DIAGONAL : LP_HEAD_PREV_TOKEN) : st->n_run;
}

static int heads_update(void *vst, lp_browser *b) {
    heads_state *st = vst;
    scan_clear(st); /* the model or the attention may have changed: read again */
    free(st->m);
    st->m = NULL;
    st->L = st->H = 0;
    const lp_run *r = b->s->run;
    const lp_model *mo = r ? lp_run_model(r) : b->s->model;
    if (!mo) return LP_OK;
    const lp_config *c = lp_model_config(mo);
    st->L = c->n_layer;
    st->H = c->n_head;
    /* An encoder-decoder's run: the attention chosen (x, s), and its scan rows. */
    static const char *const STACK[LP_ATTN_COUNT] = {"dec", "dec", "enc"}, *const KIND[LP_ATTN_COUNT] = {"self", "cross",
                                                                                                       "self"};
    const lp_run *ar = r && b->S > 0 ? lp_browser_attn_run(b, b->attn, NULL, &st->L, NULL, NULL) : NULL;
    bool cross = ar && b->attn == LP_ATTN_CROSS;
    if (cross != st->cross) st->metric = cross ? LP_CROSS_DIAGONAL : LP_HEAD_PREV_TOKEN; /* the other kind's */
    st->cross = cross;
    st->n_run = cross ? LP_CROSS_METRIC_COUNT : LP_HEAD_METRIC_COUNT;
    st->stack = ar ? STACK[b->attn] : NULL;
    st->kind = ar ? KIND[b->attn] : NULL;
    if (ar) r = ar;
    load_scan(st, b);
    if (!r) {
        settle_metric(st);
        return LP_OK;
    }
    st->m = malloc((size_t)st->L * st->H * st->n_run * sizeof *st->m);
    if (!st->m) {
        settle_metric(st);
        return lp_error(LP_ENOMEM, "out of memory");
    }
    int rc = cross ? lp_cross_metrics(st->m, r) : lp_head_metrics(st->m, r);
    if (rc) {
        free(st->m);
        st->m = NULL;
        settle_metric(st);
        return rc;
    }
    settle_metric(st);
    for (int k = 0; k < st->n_run; k++) {
        float mx = 0;
        for (int i = 0; i < st->L * st->H; i++) {
            float v = st->m[(size_t)i * st->n_run + k];
            if (v > mx) mx = v;
        }
        /* Probabilities read on their own scale; entropy against the largest there is. */
        st->max[k] = k == 0 /* entropy, of either kind */ ? (mx > 0 ? mx : 1) : 1;
    }
    return LP_OK;
}

static float metric(const heads_state *st, int l, int h, int k) {
    if (l < 0 || l >= st->L || h < 0 || h >= st->H || !available(st, k)) return NAN;
    if (is_scan(st, k)) return st->scan[((size_t)l * st->H + h) * st->n_scan + (k - st->n_run)];
    return st->m[((size_t)l * st->H + h) * st->n_run + k];
}

static const char *labels_of(const heads_state *st, int l, int h) {
    if (!st->labels || l < 0 || l >= st->L || h < 0 || h >= st->H) return NULL;
    return st->labels[(size_t)l * st->H + h];
}

static void cell_text(char *buf, size_t cap, float v, int w, int k) {
    if (isnan(v)) snprintf(buf, cap, "-");
    else if (w >= 5) snprintf(buf, cap, "%.2f", (double)v);
    else if (k == 0 /* entropy */ || v >= 0.995f) snprintf(buf, cap, "%.1f", (double)v);
    else snprintf(buf, cap, "%02.0f", (double)v * 100); /* hundredths: "87" */
}

static void heads_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    heads_state *st = vst;
    if (!st->scan && (!lp_browser_need_run(b, scr, a) || !st->m)) return;
    int k = st->metric;
    bool scan_colour = is_scan(st, k);
    char name[64], what[40] = "";
    colouring_name(st, k, name, sizeof name);
    if (st->stack) snprintf(what, sizeof what, "[%s, x: next] ", lp_browser_attn_name(b, b->attn));
    if (!st->scan)
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                         "%scolour: %s (c C change)   rows: layers, columns: heads   Enter: the head's pattern", what,
                         name);
    else {
        char from[48];
        if (st->scan_run) snprintf(from, sizeof from, "run %lld", st->scan_run);
        else snprintf(from, sizeof from, "generated sequences");
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                         "%scolour: %s (c C change)   scan #%lld of %s (* labelled)   Enter: the head's pattern", what,
                         name, st->scan_id, from);
    }
    bool panel = a.w >= LABEL_W + st->H * 3 + PANEL_W + 2;
    int grid_w = a.w - LABEL_W - (panel ? PANEL_W + 2 : 0);
    int cw = grid_w / st->H;
    if (cw > 6) cw = 6;
    if (cw < 3) cw = 3;
    int cols = grid_w / cw, rows = a.h - 2;
    if (cols < 1 || rows < 1) return;
    int top = lp_scroll(&st->top, b->layer, rows, st->L), left = lp_scroll(&st->left, b->head, cols, st->H);
    int x0 = a.x + LABEL_W, y0 = a.y + 2;
    for (int c = 0; c < cols && left + c < st->H; c++) {
        int h = left + c;
        char t[16];
        snprintf(t, sizeof t, "H%d", h);
        lp_screen_put_right(scr, x0 + c * cw, a.y + 1, cw - 1, t, h == b->head ? LP_COLOR_SELECTED : LP_COLOR_LABEL,
                            h == b->head ? LP_ATTR_BOLD : 0);
    }
    for (int rr = 0; rr < rows && top + rr < st->L; rr++) {
        int l = top + rr, y = y0 + rr;
        char t[16];
        snprintf(t, sizeof t, "L%d", l);
        lp_screen_put_right(scr, a.x, y, LABEL_W - 1, t, l == b->layer ? LP_COLOR_SELECTED : LP_COLOR_LABEL,
                            l == b->layer ? LP_ATTR_BOLD : 0);
        for (int c = 0; c < cols && left + c < st->H; c++) {
            int h = left + c, x = x0 + c * cw;
            float v = metric(st, l, h, k);
            char txt[16];
            cell_text(txt, sizeof txt, v, cw - 1, k);
            bool sel = l == b->layer && h == b->head;
            /* A labelled head in a scan colouring: a trailing '*', or one before the cell
             * when the cell has no room for it. */
            bool mark = scan_colour && labels_of(st, l, h), mark_before = false;
            if (mark) {
                size_t n = strlen(txt);
                if ((int)n < cw - 1 && n + 1 < sizeof txt) txt[n] = '*', txt[n + 1] = '\0';
                else mark_before = !sel;
            }
            if (mark_before) lp_screen_put(scr, x - 1, y, 1, "*", LP_COLOR_LABEL, LP_ATTR_BOLD);
            if (isnan(v)) {
                lp_screen_put_right(scr, x, y, cw - 1, txt, LP_COLOR_DIM, 0);
                continue;
            }
            int level = lp_heat_level(v / st->max[k]);
            lp_screen_heat_text(scr, x, y, cw - 1, level, txt, sel ? LP_ATTR_BOLD | LP_ATTR_UNDERLINE : 0);
            if (sel) lp_screen_put(scr, x - 1, y, 1, "\xE2\x96\xB8", LP_COLOR_SELECTED, LP_ATTR_BOLD); /* ▸ */
        }
    }
    if (panel) { /* beside the grid, not at the far edge of a wide terminal */
        int px = x0 + (cols < st->H ? cols : st->H) * cw + 2, y = a.y + 1;
        lp_screen_printf(scr, px, y++, PANEL_W, LP_COLOR_LABEL, LP_ATTR_BOLD, "layer %d head %d", b->layer, b->head);
        for (int m = 0; m < n_colourings(st) && y < a.y + a.h; m++) {
            if (!available(st, m)) continue;
            if (m == st->n_run) {
                lp_screen_printf(scr, px, y++, PANEL_W, LP_COLOR_LABEL, LP_ATTR_BOLD, "scan #%lld", st->scan_id);
                if (y >= a.y + a.h) break;
            }
            float v = metric(st, b->layer, b->head, m);
            lp_screen_printf(scr, px, y, PANEL_W, m == k ? LP_COLOR_SELECTED : LP_COLOR_NORMAL, m == k ? LP_ATTR_BOLD : 0,
                             "%s %-16s %s", m == k ? "\xE2\x96\xB8" : " ", score_name(st, m), "");
            char num[16];
            cell_text(num, sizeof num, v, 6, m);
            lp_screen_put_right(scr, px + 19, y, 7, num, m == k ? LP_COLOR_SELECTED : LP_COLOR_NORMAL, 0);
            y++;
        }
        if (st->scan && y < a.y + a.h) {
            const char *lab = labels_of(st, b->layer, b->head);
            lp_screen_printf(scr, px, y++, PANEL_W, lab ? LP_COLOR_NORMAL : LP_COLOR_DIM, lab ? LP_ATTR_BOLD : 0,
                             "  labels: %s", lab ? lab : "none");
        }
        y++;
        if (y < a.y + a.h)
            lp_screen_printf(scr, px, y++, PANEL_W, LP_COLOR_LABEL, LP_ATTR_BOLD, "highest %s", name);
        /* The strongest heads: a few passes of selection over the grid. */
        int n = st->L * st->H, shown = 0;
        float last = INFINITY;
        int last_i = -1;
        while (y < a.y + a.h && shown < 10) {
            int best = -1;
            float bv = -INFINITY;
            for (int i = 0; i < n; i++) {
                float v = metric(st, i / st->H, i % st->H, k);
                if (isnan(v)) continue;
                bool after = v < last || (v == last && i > last_i);
                if (after && v > bv) bv = v, best = i;
            }
            if (best < 0) break;
            lp_screen_printf(scr, px, y++, PANEL_W, LP_COLOR_NORMAL, 0, "  L%-3d H%-3d %8.3f", best / st->H, best % st->H,
                             (double)bv);
            last = bv;
            last_i = best;
            shown++;
        }
    }
    float v = metric(st, b->layer, b->head, k);
    const char *lab = st->scan ? labels_of(st, b->layer, b->head) : NULL;
    lp_browser_set_status(b, "%s%sL%d H%d  %s %.4f%s%s  (Enter: its pattern)", st->stack ? lp_browser_attn_name(b, b->attn) : "",
                          st->stack ? "  " : "", b->layer, b->head, name, (double)v, lab ? "  labels: " : "", lab ? lab : "");
}

static bool heads_act(void *vst, lp_browser *b, lp_action a) {
    heads_state *st = vst;
    switch (a) {
    case LP_DO_UP: if (b->layer > 0) b->layer--; break;
    case LP_DO_DOWN: if (b->layer + 1 < st->L) b->layer++; break;
    case LP_DO_LEFT: if (b->head > 0) b->head--; break;
    case LP_DO_RIGHT: if (b->head + 1 < st->H) b->head++; break;
    case LP_DO_METRIC_NEXT:
    case LP_DO_METRIC_PREV:
        load_scan(st, b); /* a scan written since the last update (another loupe) joins the cycle */
        settle_metric(st);
        cycle(st, a == LP_DO_METRIC_NEXT ? 1 : -1);
        break;
    case LP_DO_ENTER: b->view = LP_VIEW_ATTENTION; break;
    case LP_DO_ATTN_KIND: /* the grid and the scan's rows follow (lp_browser_set_attn makes this view stale) */
        if (b->S == 0) return false;
        lp_browser_set_attn(b, (lp_attn_kind)((b->attn + 1) % LP_ATTN_COUNT));
        break;
    default: return false;
    }
    return true;
}

static void heads_subject(void *st, const lp_browser *b, int *layer, int *head, int *pos) {
    (void)st;
    *layer = b->layer;
    *head = b->head;
    *pos = -1;
}

const lp_view_ops lp_view_heads = {
    .name = "heads",
    .title = "Heads",
    .open = heads_open,
    .close = heads_close,
    .update = heads_update,
    .draw = heads_draw,
    .act = heads_act,
    .subject = heads_subject,
};
