/* View 7, patching: the activation-patching results stored for the current run (`patch`)
 * as a heat map, layers down and positions (or heads) across, on the diverging scale. The
 * numbers are the recovery, as `patch` prints it; the colour is the effect, so that what
 * matters stands out in both directions: 1 − recovery when noising (the part of the
 * difference that corrupting the site takes away; recovery 1 means it does not matter),
 * the recovery itself when denoising (the part that restoring the site brings back). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "view.h"

#define LABEL_W 5
#define CELL_W 6

typedef struct {
    json_t *list;    /* the run's patch analyses, newest first: id, params, result (parsed), created_at */
    int sel;
    long long newest;
    int top, left;
} patch_state;

/* The cell under the cursor: the browser's layer (the row), and its head (site z) or
 * token (the other sites) for the column, kept inside the result. Drawing, the status line
 * and a note (m) all take it from here, so that what is shown is what is recorded. */
typedef struct {
    json_t *res, *vals;
    bool by_head, undefined;
    int L, C;        /* rows x cols of vals */
    int layer, col;
} patch_cell;

static bool patch_selection(const patch_state *st, const lp_browser *b, patch_cell *c) {
    json_t *it = json_array_get(st->list, (size_t)st->sel);
    if (!it) return false;
    c->res = json_object_get(it, "parsed");
    c->undefined = json_is_true(json_object_get(c->res, "undefined"));
    c->vals = json_object_get(c->res, c->undefined ? "raw" : "values");
    c->by_head = strcmp(lp_row_str(c->res, "cols"), "head") == 0;
    c->L = (int)json_array_size(c->vals);
    c->C = (int)json_array_size(json_array_get(c->vals, 0));
    if (c->L == 0 || c->C == 0) return false;
    c->layer = b->layer < c->L ? b->layer : c->L - 1;
    c->col = c->by_head ? b->head : b->pos;
    if (c->col >= c->C) c->col = c->C - 1;
    if (c->col < 0) c->col = 0;
    return true;
}

static double value_at(json_t *vals, int l, int c) {
    json_t *x = json_array_get(json_array_get(vals, (size_t)l), (size_t)c);
    return json_is_number(x) ? json_number_value(x) : NAN;
}

/* What a cell's colour shows: how much the site matters (see the top of the file). */
static double effect(double recovery, bool noising) { return noising ? 1 - recovery : recovery; }

static void *patch_open(lp_browser *b) {
    (void)b;
    return calloc(1, sizeof(patch_state));
}

static void patch_close(void *vst) {
    patch_state *st = vst;
    if (!st) return;
    json_decref(st->list);
    free(st);
}

static int patch_update(void *vst, lp_browser *b) {
    patch_state *st = vst;
    json_decref(st->list);
    st->list = NULL;
    if (!b->s->store || !b->s->run_id) return LP_OK;
    st->list = lp_browser_query(b,
                                "SELECT id, params, result, created_at FROM analyses WHERE run_id = ?1 AND kind = 'patch'"
                                " ORDER BY id DESC",
                                json_pack("[I]", (json_int_t)b->s->run_id));
    size_t i;
    json_t *row;
    json_array_foreach(st->list, i, row) {
        json_t *res = json_loads(lp_row_str(row, "result"), 0, NULL);
        json_object_set_new(row, "parsed", res ? res : json_object());
    }
    long long newest = lp_row_int(json_array_get(st->list, 0), "id", 0);
    if (newest != st->newest) st->sel = 0;
    st->newest = newest;
    if (st->sel >= (int)json_array_size(st->list)) st->sel = 0;
    return LP_OK;
}

static void patch_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    patch_state *st = vst;
    if (!lp_browser_need_run(b, scr, a)) return;
    if (!b->s->store) {
        lp_browser_say(scr, a, "No database is open: this view shows the patching results stored in one.",
                       "start loupe with the default database or -d FILE, then :patch --corrupt TEXT");
        lp_browser_set_status(b, "no store");
        return;
    }
    if (!json_array_size(st->list)) {
        lp_browser_say(scr, a, "No patching results for this run.",
                       ":patch --corrupt TEXT makes one (TEXT: a corrupted prompt with as many tokens)");
        lp_browser_set_status(b, "no patching results");
        return;
    }
    patch_cell cur;
    if (!patch_selection(st, b, &cur)) {
        lp_browser_say(scr, a, "This patching result has no values.", NULL);
        return;
    }
    json_t *res = cur.res, *vals = cur.vals;
    bool undefined = cur.undefined, by_head = cur.by_head;
    bool noising = !undefined && strcmp(lp_row_str(res, "direction"), "denoising") != 0;
    int L = cur.L, C = cur.C, row_sel = cur.layer, col_sel = cur.col;
    double mx = 0;
    for (int l = 0; l < L; l++)
        for (int c = 0; c < C; c++) {
            double e = effect(value_at(vals, l, c), noising);
            if (fabs(e) > mx) mx = fabs(e);
        }
    if (mx < 1 && !undefined) mx = 1; /* recovery: 1 is all of it */
    json_t *target = json_object_get(res, "target"), *contrast = json_object_get(res, "contrast");
    char tt[128], ct[128];
    const char *ts = lp_row_str(target, "token"), *cs = lp_row_str(contrast, "token");
    lp_screen_token_text(ts, strlen(ts), tt, sizeof tt);
    lp_screen_token_text(cs, strlen(cs), ct, sizeof ct);
    lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, LP_ATTR_BOLD, "[%d/%zu] site %s  %s  %s vs %s  %s",
                     st->sel + 1, json_array_size(st->list), lp_row_str(res, "site"), lp_row_str(res, "direction"), tt,
                     ct, undefined ? "raw logit difference (clean = corrupt)" : "logit-difference recovery");
    lp_screen_put_clip(scr, a.x + 1, a.y + 1, a.w - 1,
                       undefined ? "colour and numbers: the patched logit difference"
                       : noising ? "colour: effect = 1 \xE2\x88\x92 recovery (blank: corrupting it changes nothing); "
                                   "numbers: recovery"
                                 : "colour: effect = recovery (blank: restoring it brings nothing back); numbers: recovery",
                       LP_COLOR_DIM, 0);
    int cols = (a.w - LABEL_W) / CELL_W, rows = a.h - 3;
    if (cols < 1 || rows < 1) return;
    int top = lp_scroll(&st->top, row_sel, rows, L), left = lp_scroll(&st->left, col_sel, cols, C);
    json_t *toks = json_object_get(res, "tokens");
    for (int c = 0; c < cols && left + c < C; c++) {
        int j = left + c;
        char lab[128];
        if (by_head) snprintf(lab, sizeof lab, "H%d", j);
        else {
            const char *t = json_string_value(json_array_get(toks, (size_t)j));
            if (t) lp_screen_token_text(t, strlen(t), lab, sizeof lab);
            else snprintf(lab, sizeof lab, "%d", j);
        }
        bool sel = j == col_sel;
        lp_screen_put_clip(scr, a.x + LABEL_W + c * CELL_W, a.y + 2, CELL_W - 1, lab,
                           sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL, sel ? LP_ATTR_BOLD : 0);
    }
    for (int r = 0; r < rows && top + r < L; r++) {
        int l = top + r, y = a.y + 3 + r;
        char lab[16];
        snprintf(lab, sizeof lab, "L%d", l);
        lp_screen_put_right(scr, a.x, y, LABEL_W - 1, lab, l == row_sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL,
                            l == row_sel ? LP_ATTR_BOLD : 0);
        json_t *rowv = json_array_get(vals, (size_t)l);
        for (int c = 0; c < cols && left + c < C; c++) {
            int j = left + c;
            json_t *x = json_array_get(rowv, (size_t)j);
            double v = json_is_number(x) ? json_number_value(x) : NAN;
            char num[16];
            if (isnan(v)) snprintf(num, sizeof num, "-");
            else snprintf(num, sizeof num, "%.2f", v);
            bool here = l == row_sel && j == col_sel;
            double e = effect(v, noising);
            lp_screen_div_text(scr, a.x + LABEL_W + c * CELL_W, y, CELL_W - 1, lp_div_level(isnan(e) ? 0 : e / mx), num,
                               here ? LP_ATTR_BOLD | LP_ATTR_UNDERLINE : 0);
        }
    }
    double v = value_at(vals, row_sel, col_sel);
    char eff[48] = "";
    if (!undefined) snprintf(eff, sizeof eff, "  (effect %.4f)", effect(v, noising));
    lp_browser_set_status(b, "L%d %s %d: %.4f%s   (%s moves the column)", row_sel, by_head ? "head" : "position",
                          col_sel, v, eff, by_head ? "{ }" : "\xE2\x86\x90\xE2\x86\x92");
}

static bool patch_act(void *vst, lp_browser *b, lp_action a) {
    patch_state *st = vst;
    int n = (int)json_array_size(st->list);
    switch (a) {
    case LP_DO_UP: if (b->layer > 0) b->layer--; break;
    case LP_DO_DOWN: b->layer++; break; /* clamped to the model by the browser */
    case LP_DO_METRIC_NEXT: if (n) st->sel = (st->sel + 1) % n; break;
    default: return false;
    }
    return true;
}

/* The cell under the cursor: a head's output (site z, over all positions) or one layer
 * and position. */
static void patch_subject(void *vst, const lp_browser *b, int *layer, int *head, int *pos) {
    patch_cell c;
    *layer = *head = *pos = -1;
    if (!patch_selection(vst, b, &c)) return;
    *layer = c.layer;
    if (c.by_head) *head = c.col;
    else *pos = c.col;
}

/* An encoder-decoder's result says its stack and kind (`patch --stack`, cross sites). */
static void patch_place(void *vst, const lp_browser *b, const char **stack, const char **kind) {
    patch_cell c;
    *stack = *kind = NULL;
    if (!patch_selection(vst, b, &c) || !json_is_string(json_object_get(c.res, "stack"))) return;
    *stack = lp_row_str(c.res, "stack");
    *kind = json_is_string(json_object_get(c.res, "kind")) ? lp_row_str(c.res, "kind") : "self";
}

const lp_view_ops lp_view_patching = {
    .name = "patch",
    .title = "Patching",
    .open = patch_open,
    .close = patch_close,
    .update = patch_update,
    .draw = patch_draw,
    .act = patch_act,
    .subject = patch_subject,
    .place = patch_place,
};
