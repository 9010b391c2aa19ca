/* View 2, heads: the whole model at a glance, an L x H grid coloured by one per-head
 * metric (lp_head_metrics), with the current head's metrics and the strongest heads by
 * the chosen metric beside it. Enter opens the head in the attention view. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/heads.h"
#include "view.h"

#define LABEL_W 5
#define PANEL_W 30

typedef struct {
    float *m;          /* (n_layer, n_head, LP_HEAD_METRIC_COUNT) */
    int L, H;
    float max[LP_HEAD_METRIC_COUNT]; /* largest value of each metric: the top of its scale */
    lp_head_metric metric;
    int top, left;
} heads_state;

static void *heads_open(lp_browser *b) {
    (void)b;
    heads_state *st = calloc(1, sizeof *st);
    if (st) st->metric = LP_HEAD_PREV_TOKEN;
    return st;
}

static void heads_close(void *vst) {
    heads_state *st = vst;
    if (!st) return;
    free(st->m);
    free(st);
}

static int heads_update(void *vst, lp_browser *b) {
    heads_state *st = vst;
    free(st->m);
    st->m = NULL;
    st->L = st->H = 0;
    const lp_run *r = b->s->run;
    if (!r) return LP_OK;
    const lp_config *c = lp_model_config(lp_run_model(r));
    st->m = malloc((size_t)c->n_layer * c->n_head * LP_HEAD_METRIC_COUNT * sizeof *st->m);
    if (!st->m) return lp_error(LP_ENOMEM, "out of memory");
    lp_head_metrics(st->m, r);
    st->L = c->n_layer;
    st->H = c->n_head;
    for (int k = 0; k < LP_HEAD_METRIC_COUNT; k++) {
        float mx = 0;
        for (int i = 0; i < st->L * st->H; i++) {
            float v = st->m[(size_t)i * LP_HEAD_METRIC_COUNT + k];
            if (v > mx) mx = v;
        }
        /* Probabilities read on their own scale; entropy against the largest there is. */
        st->max[k] = k == LP_HEAD_ENTROPY ? (mx > 0 ? mx : 1) : 1;
    }
    return LP_OK;
}

static float metric(const heads_state *st, int l, int h, int k) {
    return st->m[((size_t)l * st->H + h) * LP_HEAD_METRIC_COUNT + k];
}

static void cell_text(char *buf, size_t cap, float v, int w, lp_head_metric k) {
    if (isnan(v)) snprintf(buf, cap, "-");
    else if (w >= 5) snprintf(buf, cap, "%.2f", (double)v);
    else if (k == LP_HEAD_ENTROPY || v >= 0.995f) snprintf(buf, cap, "%.1f", (double)v);
    else snprintf(buf, cap, "%02.0f", (double)v * 100); /* hundredths: "87" */
}

static void heads_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    heads_state *st = vst;
    if (!lp_browser_need_run(b, scr, a) || !st->m) return;
    int k = (int)st->metric;
    lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                     "colour: %s (c C change)   rows: layers, columns: heads   Enter: the head's pattern",
                     lp_head_metric_name(st->metric));
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
            cell_text(txt, sizeof txt, v, cw - 1, st->metric);
            bool sel = l == b->layer && h == b->head;
            if (isnan(v)) {
                lp_screen_put_right(scr, x, y, cw - 1, txt, LP_COLOR_DIM, 0);
                continue;
            }
            int level = lp_heat_level(v / st->max[k]);
            lp_screen_heat_text(scr, x, y, cw - 1, level, txt, sel ? LP_ATTR_BOLD | LP_ATTR_UNDERLINE : 0);
            if (sel) lp_screen_put(scr, x - 1, y, 1, "\xE2\x96\xB8", LP_COLOR_SELECTED, LP_ATTR_BOLD); /* ▸ */
        }
    }
    if (panel) {
        int px = a.x + a.w - PANEL_W, y = a.y + 1;
        lp_screen_printf(scr, px, y++, PANEL_W, LP_COLOR_LABEL, LP_ATTR_BOLD, "layer %d head %d", b->layer, b->head);
        for (int m = 0; m < LP_HEAD_METRIC_COUNT && y < a.y + a.h; m++, y++) {
            float v = metric(st, b->layer, b->head, m);
            lp_screen_printf(scr, px, y, PANEL_W, m == k ? LP_COLOR_SELECTED : LP_COLOR_NORMAL, m == k ? LP_ATTR_BOLD : 0,
                             "%s %-16s %s", m == k ? "\xE2\x96\xB8" : " ", lp_head_metric_name((lp_head_metric)m), "");
            char num[16];
            cell_text(num, sizeof num, v, 6, (lp_head_metric)m);
            lp_screen_put_right(scr, px + 19, y, 7, num, m == k ? LP_COLOR_SELECTED : LP_COLOR_NORMAL, 0);
        }
        y++;
        if (y < a.y + a.h)
            lp_screen_printf(scr, px, y++, PANEL_W, LP_COLOR_LABEL, LP_ATTR_BOLD, "highest %s", lp_head_metric_name(st->metric));
        /* The strongest heads: a few passes of selection over the grid. */
        int n = st->L * st->H, shown = 0;
        float last = INFINITY;
        int last_i = -1;
        while (y < a.y + a.h && shown < 10) {
            int best = -1;
            float bv = -INFINITY;
            for (int i = 0; i < n; i++) {
                float v = st->m[(size_t)i * LP_HEAD_METRIC_COUNT + k];
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
    lp_browser_set_status(b, "L%d H%d  %s %.4f  (Enter: its pattern)", b->layer, b->head,
                          lp_head_metric_name(st->metric), (double)v);
}

static bool heads_act(void *vst, lp_browser *b, lp_action a) {
    heads_state *st = vst;
    switch (a) {
    case LP_DO_UP: if (b->layer > 0) b->layer--; break;
    case LP_DO_DOWN: if (b->layer + 1 < st->L) b->layer++; break;
    case LP_DO_LEFT: if (b->head > 0) b->head--; break;
    case LP_DO_RIGHT: if (b->head + 1 < st->H) b->head++; break;
    case LP_DO_METRIC_NEXT: st->metric = (lp_head_metric)((st->metric + 1) % LP_HEAD_METRIC_COUNT); break;
    case LP_DO_METRIC_PREV:
        st->metric = (lp_head_metric)((st->metric + LP_HEAD_METRIC_COUNT - 1) % LP_HEAD_METRIC_COUNT);
        break;
    case LP_DO_ENTER: b->view = LP_VIEW_ATTENTION; break;
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
