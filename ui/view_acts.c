/* View 3, activations at the selected token: for every layer, the norm of the residual
 * stream leaving it and of what its attention and MLP added (bars, each column on its own
 * scale), and the strongest MLP neurons of the current layer with their values. Cheap
 * enough to compute while drawing: L x 3 x d_model and one d_mlp row. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "view.h"

#define MAX_NEURONS 128

typedef struct {
    int top;
} acts_state;

static void *acts_open(lp_browser *b) {
    (void)b;
    return calloc(1, sizeof(acts_state));
}

static void acts_close(void *st) { free(st); }

static double row_norm(const lp_run *r, lp_act_kind kind, int layer, int pos) {
    lp_view v;
    if (lp_run_view(r, kind, layer, -1, &v)) return NAN;
    const float *x = v.data + (size_t)pos * v.stride[0];
    double s = 0;
    for (int i = 0; i < v.shape[1]; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

static const lp_act_kind KINDS[3] = {LP_ACT_RESID_POST, LP_ACT_ATTN_OUT, LP_ACT_MLP_OUT};
static const char *const HEADS[3] = {"|resid_post|", "|attn_out|", "|mlp_out|"};
static const lp_color BARS[3] = {LP_COLOR_BAR_RESID, LP_COLOR_BAR_ATTN, LP_COLOR_BAR_MLP};

static void draw_norms(acts_state *st, lp_browser *b, const lp_run *r, lp_screen *scr, lp_rect a, double cur[3]) {
    int L = lp_model_config(lp_run_model(r))->n_layer;
    double *n = malloc((size_t)L * 3 * sizeof *n), mx[3] = {0, 0, 0};
    if (!n) return;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 3; k++) {
            n[l * 3 + k] = row_norm(r, KINDS[k], l, b->pos);
            if (n[l * 3 + k] > mx[k]) mx[k] = n[l * 3 + k];
        }
    int col_w = (a.w - 6) / 3, bar_w = col_w - 9;
    lp_screen_put(scr, a.x, a.y, 6, "layer", LP_COLOR_LABEL, LP_ATTR_BOLD);
    for (int k = 0; k < 3; k++) lp_screen_put_clip(scr, a.x + 6 + k * col_w, a.y, col_w - 1, HEADS[k], LP_COLOR_LABEL, LP_ATTR_BOLD);
    int rows = a.h - 1;
    int top = lp_scroll(&st->top, b->layer, rows, L);
    for (int rr = 0; rr < rows && top + rr < L; rr++) {
        int l = top + rr, y = a.y + 1 + rr;
        bool sel = l == b->layer;
        char t[16];
        snprintf(t, sizeof t, "L%d", l);
        lp_screen_put_right(scr, a.x, y, 4, t, sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL, sel ? LP_ATTR_BOLD : 0);
        for (int k = 0; k < 3; k++) {
            int x = a.x + 6 + k * col_w;
            double v = n[l * 3 + k];
            char num[32];
            snprintf(num, sizeof num, "%.3g", v);
            lp_screen_put_right(scr, x, y, 7, num, sel ? LP_COLOR_SELECTED : LP_COLOR_NORMAL, 0);
            if (bar_w > 0) lp_screen_bar(scr, x + 8, y, bar_w, mx[k] > 0 ? v / mx[k] : 0, BARS[k]);
        }
    }
    for (int k = 0; k < 3; k++) cur[k] = n[b->layer * 3 + k];
    free(n);
}

typedef struct {
    int i;
    float v;
} neuron;

static int by_abs_desc(const void *x, const void *y) {
    const neuron *a = x, *b = y;
    float fa = fabsf(a->v), fb = fabsf(b->v);
    if (fa != fb) return fa < fb ? 1 : -1;
    return a->i - b->i;
}

static void draw_neurons(lp_browser *b, const lp_run *r, lp_screen *scr, lp_rect a) {
    lp_view v;
    if (lp_run_view(r, LP_ACT_MLP_POST, b->layer, -1, &v)) return;
    int dm = v.shape[1], k = a.h - 1;
    if (k > MAX_NEURONS) k = MAX_NEURONS;
    if (k > dm) k = dm;
    if (k < 1) return;
    const float *x = v.data + (size_t)b->pos * v.stride[0];
    /* The k largest |values|: a bounded insertion over the row. */
    neuron top[MAX_NEURONS];
    int n = 0;
    for (int i = 0; i < dm; i++) {
        neuron c = {i, x[i]};
        if (n == k && !(fabsf(c.v) > fabsf(top[n - 1].v))) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && fabsf(top[j - 1].v) < fabsf(c.v)) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = c;
    }
    qsort(top, (size_t)n, sizeof *top, by_abs_desc);
    lp_screen_printf(scr, a.x, a.y, a.w, LP_COLOR_LABEL, LP_ATTR_BOLD, "top MLP neurons, layer %d (mlp_post, by |value|)",
                     b->layer);
    float mx = n ? fabsf(top[0].v) : 1;
    int bar_w = a.w - 20;
    for (int i = 0; i < n && i + 1 < a.h; i++) {
        int y = a.y + 1 + i;
        bool chosen = top[i].i == b->neuron; /* the examples view's neuron */
        lp_screen_printf(scr, a.x, y, 18, chosen ? LP_COLOR_SELECTED : LP_COLOR_NORMAL, chosen ? LP_ATTR_BOLD : 0,
                         "%6d %+10.4f", top[i].i, (double)top[i].v);
        if (bar_w > 0)
            lp_screen_bar(scr, a.x + 19, y, bar_w, mx > 0 ? fabsf(top[i].v) / mx : 0,
                          top[i].v >= 0 ? LP_COLOR_BAR_MLP : LP_COLOR_BAR_ATTN);
    }
}

static void acts_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    acts_state *st = vst;
    const lp_run *r = lp_browser_need_run(b, scr, a);
    if (!r) return;
    lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                     "token %d %s   norms per layer; each column on its own scale   \xE2\x86\x91\xE2\x86\x93 or [ ] layer",
                     b->pos, lp_browser_token(b, b->pos, NULL));
    lp_rect body = {a.x + 1, a.y + 2, a.w - 2, a.h - 2};
    lp_rect norms = body, neurons = body;
    if (body.w >= 100) { /* side by side */
        norms.w = body.w * 3 / 5;
        neurons.x = body.x + norms.w + 2;
        neurons.w = body.w - norms.w - 2;
    } else { /* one above the other */
        norms.h = body.h / 2;
        neurons.y = body.y + norms.h + 1;
        neurons.h = body.h - norms.h - 1;
    }
    double cur[3] = {NAN, NAN, NAN};
    draw_norms(st, b, r, scr, norms, cur);
    draw_neurons(b, r, scr, neurons);
    lp_view v;
    if (b->neuron >= 0 && !lp_run_view(r, LP_ACT_MLP_POST, b->layer, -1, &v) && b->neuron < v.shape[1])
        /* the neuron chosen in the examples view (9) first: what Enter there came to see */
        lp_browser_set_status(b, "token %d %s  layer %d  neuron %d %+.4f  |resid_post| %.4g  |attn_out| %.4g  |mlp_out| %.4g",
                              b->pos, lp_browser_token(b, b->pos, NULL), b->layer, b->neuron,
                              (double)v.data[(size_t)b->pos * v.stride[0] + (size_t)b->neuron], cur[0], cur[1], cur[2]);
    else
        lp_browser_set_status(b, "token %d %s  layer %d  |resid_post| %.4g  |attn_out| %.4g  |mlp_out| %.4g", b->pos,
                              lp_browser_token(b, b->pos, NULL), b->layer, cur[0], cur[1], cur[2]);
}

static bool acts_act(void *st, lp_browser *b, lp_action a) {
    (void)st;
    int L = b->s->model ? lp_model_config(b->s->model)->n_layer : 1;
    switch (a) {
    case LP_DO_UP: if (b->layer > 0) b->layer--; break;
    case LP_DO_DOWN: if (b->layer + 1 < L) b->layer++; break;
    default: return false;
    }
    return true;
}

static void acts_subject(void *st, const lp_browser *b, int *layer, int *head, int *pos) {
    (void)st;
    *layer = b->layer;
    *head = -1;
    *pos = b->pos;
}

const lp_view_ops lp_view_activations = {
    .name = "acts",
    .title = "Activations",
    .open = acts_open,
    .close = acts_close,
    .draw = acts_draw,
    .act = acts_act,
    .subject = acts_subject,
};
