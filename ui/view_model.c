/* View 8, the model view (bertviz's): every layer x head at once, each a thumbnail of its
 * T x T attention pattern (queries down, keys across), a row of thumbnails per layer and a
 * column per head. The cursor is the browser's layer and head; Enter opens it in the
 * attention view.
 *
 * A pattern larger than its thumbnail is max-pooled: a cell shows the largest weight among
 * the queries and keys it covers, so a sharp head (previous token, first token) stays bright
 * however long the run, where a mean would fade it by the size of the cell. Nothing is taken
 * to be masked: the whole square is drawn from the weights, so an encoder's pattern shows
 * whole and a causal head's upper triangle is the empty end of the scale.
 *
 * Pooling reads every weight of a head, so the levels are kept per thumbnail size and run
 * and worked out only for the heads on screen: moving the cursor or the token redraws from
 * them.
 *
 * An encoder-decoder's run has a row per layer and kind: the encoder's layers (E, self-
 * attention over the source), then each decoder layer's self-attention (D) and its
 * cross-attention (X: target down, source across). The cursor's row is the attention the
 * attention view shows. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "view.h"

#define MIN_TH 2 /* rows of a thumbnail: below this, layers scroll */
#define MIN_TW 3 /* columns */
#define NO_PATTERN 0xFF

typedef struct {
    int top, left; /* first layer and head on screen */
    /* Levels of every head at one thumbnail size, filled as heads come on screen. */
    uint8_t *levels; /* (L, H, th, tw) */
    bool *ready;     /* (L, H) */
    unsigned gen;    /* b->gen + 1 when made; 0: nothing */
    int L, H, T, th, tw;
} model_state;

/* Where things go: a label column, then per head a gap column (the cursor's bar) and tw
 * columns; per layer th rows and a gap row. */
typedef struct {
    int label_w, x0, y0;
    int th, tw;
    int rows, cols; /* layers and heads that fit */
} layout;

/* The rows: what row r shows (the attention kind and its layer), and how many there are. */
static int n_rows(const lp_browser *b) {
    int Le = 0, Ld = 1;
    lp_browser_attn_run(b, LP_ATTN_DEC_SELF, NULL, &Ld, NULL, NULL);
    if (!lp_browser_attn_run(b, LP_ATTN_ENC_SELF, NULL, &Le, NULL, NULL)) return Ld;
    return Le + 2 * Ld;
}

static lp_attn_kind row_kind(const lp_browser *b, int r, int *layer) {
    int Le = 0;
    if (!lp_browser_attn_run(b, LP_ATTN_ENC_SELF, NULL, &Le, NULL, NULL)) {
        *layer = r;
        return LP_ATTN_DEC_SELF;
    }
    if (r < Le) {
        *layer = r;
        return LP_ATTN_ENC_SELF;
    }
    *layer = (r - Le) / 2;
    return (r - Le) % 2 ? LP_ATTN_CROSS : LP_ATTN_DEC_SELF;
}

static int row_of(const lp_browser *b) {
    int Le = 0;
    if (!lp_browser_attn_run(b, LP_ATTN_ENC_SELF, NULL, &Le, NULL, NULL)) return b->layer;
    if (b->attn == LP_ATTN_ENC_SELF) return b->layer;
    return Le + 2 * b->layer + (b->attn == LP_ATTN_CROSS);
}

/* Row r's label: L3 for a one-stack run; E3, D3, X3 for an encoder-decoder's. */
static void row_label(const lp_browser *b, int r, char *buf, size_t cap) {
    int l;
    lp_attn_kind k = row_kind(b, r, &l);
    snprintf(buf, cap, "%s%d", b->S == 0 ? "L" : k == LP_ATTN_ENC_SELF ? "E" : k == LP_ATTN_CROSS ? "X" : "D", l);
}

static void *model_open(lp_browser *b) {
    (void)b;
    return calloc(1, sizeof(model_state));
}

static void model_close(void *vst) {
    model_state *st = vst;
    if (!st) return;
    free(st->levels);
    free(st->ready);
    free(st);
}

void lp_thumbnail_levels(uint8_t *out, int th, int tw, const lp_view *p) {
    int Tq = p->shape[0], Tk = p->shape[1];
    for (int r = 0; r < th; r++) {
        int i0 = r * Tq / th, i1 = (r + 1) * Tq / th;
        if (i1 <= i0) i1 = i0 + 1;
        for (int c = 0; c < tw; c++) {
            int j0 = c * Tk / tw, j1 = (c + 1) * Tk / tw;
            if (j1 <= j0) j1 = j0 + 1;
            float mx = 0;
            for (int i = i0; i < i1 && i < Tq; i++) {
                const float *row = p->data + (size_t)i * p->stride[0];
                for (int j = j0; j < j1 && j < Tk; j++) {
                    float v = row[(size_t)j * p->stride[1]];
                    if (v > mx) mx = v; /* NaN never is */
                }
            }
            out[r * tw + c] = (uint8_t)lp_heat_level(mx);
        }
    }
}

/* Thumbnails as large as the area allows, between twice as wide as tall (in the eye: a
 * column is half a row) and as tall as wide, never finer than a token: a short run gets
 * whole rows and one or two columns a token, so nothing is pooled. */
static layout layout_of(const lp_browser *b, lp_rect a, int L, int H, int T) {
    layout g = {0};
    char lab[16];
    for (int r = 0; r < L; r++) {
        row_label(b, r, lab, sizeof lab);
        if ((int)strlen(lab) + 1 > g.label_w) g.label_w = (int)strlen(lab) + 1;
    }
    g.x0 = a.x + g.label_w + 1; /* past the first gap column */
    g.y0 = a.y + 2;             /* below the header and the head labels */
    int grid_w = a.w - g.label_w - 1, grid_h = a.h - 3; /* less the right bar; the legend */
    int th = grid_h / L - 1, tw = grid_w / H - 1;
    if (th < MIN_TH) th = MIN_TH;
    if (tw < MIN_TW) tw = MIN_TW;
    if (tw > 4 * th) tw = 4 * th;
    if (th > tw) th = tw;
    if (th > T) th = T;
    if (tw >= 2 * T) tw = 2 * T;
    else if (tw >= T) tw = T;
    g.th = th;
    g.tw = tw;
    g.rows = grid_h / (th + 1);
    g.cols = grid_w / (tw + 1);
    if (g.rows > L) g.rows = L;
    if (g.cols > H) g.cols = H;
    if (g.rows < 1) g.rows = 1;
    if (g.cols < 1) g.cols = 1;
    return g;
}

/* The levels of head (l, h) at the layout's size, pooled the first time they are asked for
 * since the run or the size changed. NULL when out of memory. */
static const uint8_t *levels_of(model_state *st, const lp_browser *b, const lp_run *r, const layout *g, int l, int h,
                                int L, int H) {
    int T = lp_run_len(r);
    if (st->gen != b->gen + 1 || st->L != L || st->H != H || st->T != T || st->th != g->th || st->tw != g->tw) {
        free(st->levels);
        free(st->ready);
        st->levels = malloc((size_t)L * H * g->th * g->tw);
        st->ready = calloc((size_t)L * H, sizeof *st->ready);
        if (!st->levels || !st->ready) {
            free(st->levels);
            free(st->ready);
            st->levels = NULL;
            st->ready = NULL;
            st->gen = 0;
            return NULL;
        }
        st->gen = b->gen + 1;
        st->L = L, st->H = H, st->T = T, st->th = g->th, st->tw = g->tw;
    }
    size_t k = (size_t)l * H + h, n = (size_t)g->th * g->tw;
    uint8_t *out = st->levels + k * n;
    if (!st->ready[k]) {
        lp_view v;
        int layer;
        lp_act_kind act;
        const lp_run *of = lp_browser_attn_run(b, row_kind(b, l, &layer), &act, NULL, NULL, NULL);
        if (!of || lp_run_view(of, act, layer, h, &v) || v.ndim != 2) {
            lp_error_clear();
            memset(out, NO_PATTERN, n);
        } else {
            lp_thumbnail_levels(out, g->th, g->tw, &v);
        }
        st->ready[k] = true;
    }
    return out;
}

/* The legend: the scale, and how many tokens a cell stands for. */
static void draw_legend(lp_screen *scr, lp_rect a, const layout *g, int T) {
    int y = a.y + a.h - 1, x = a.x + 1;
    x += lp_screen_put(scr, x, y, a.w - 1, "0 ", LP_COLOR_LABEL, 0);
    for (int k = 0; k < LP_HEAT_LEVELS && x < a.x + a.w; k++) lp_screen_heat(scr, x++, y, 1, k);
    x += lp_screen_put(scr, x, y, a.x + a.w - x, " 1  ", LP_COLOR_LABEL, 0);
    int per_q = (T + g->th - 1) / g->th, per_k = g->tw >= T ? 1 : (T + g->tw - 1) / g->tw;
    if (per_q == 1 && per_k == 1)
        lp_screen_printf(scr, x, y, a.x + a.w - x, LP_COLOR_LABEL, 0,
                         "attention weight; a cell is one query \xC3\x97 one key (%d column%s a key)", g->tw / T,
                         g->tw / T == 1 ? "" : "s");
    else
        lp_screen_printf(scr, x, y, a.x + a.w - x, LP_COLOR_LABEL, 0,
                         "max-pooled: a cell is the largest of up to %d quer%s \xC3\x97 %d key%s", per_q,
                         per_q == 1 ? "y" : "ies", per_k, per_k == 1 ? "" : "s");
}

static void model_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    model_state *st = vst;
    const lp_run *r = lp_browser_need_run(b, scr, a);
    if (!r) return;
    const lp_config *c = lp_model_config(lp_run_model(r));
    /* L rows (layers; an encoder-decoder's layers and kinds), T the longer side. */
    int L = n_rows(b), H = c->n_head, T = b->S > lp_run_len(r) ? b->S : lp_run_len(r), cur = row_of(b);
    if (b->S == 0)
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                         "rows: layers, columns: heads; in each, queries \xE2\x86\x93 keys \xE2\x86\x92   Enter: zoom in");
    else
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                         "E encoder self, D decoder self, X cross (target \xE2\x86\x93 source \xE2\x86\x92)   Enter: zoom in");
    layout g = layout_of(b, a, L, H, T);
    int top = lp_scroll(&st->top, cur, g.rows, L), left = lp_scroll(&st->left, b->head, g.cols, H);
    for (int cc = 0; cc < g.cols && left + cc < H; cc++) {
        int h = left + cc, x = g.x0 + cc * (g.tw + 1);
        char t[16];
        int n = snprintf(t, sizeof t, "H%d", h);
        bool sel = h == b->head;
        lp_screen_put(scr, x + (n < g.tw ? (g.tw - n) / 2 : 0), a.y + 1, g.tw, t,
                      sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL, sel ? LP_ATTR_BOLD : 0);
    }
    for (int rr = 0; rr < g.rows && top + rr < L; rr++) {
        int l = top + rr, y = g.y0 + rr * (g.th + 1);
        char t[16];
        row_label(b, l, t, sizeof t);
        bool lsel = l == cur;
        lp_screen_put_right(scr, a.x, y + (g.th - 1) / 2, g.label_w - 1, t, lsel ? LP_COLOR_SELECTED : LP_COLOR_LABEL,
                            lsel ? LP_ATTR_BOLD : 0);
        for (int cc = 0; cc < g.cols && left + cc < H; cc++) {
            int h = left + cc, x = g.x0 + cc * (g.tw + 1);
            const uint8_t *lv = levels_of(st, b, r, &g, l, h, L, H);
            if (!lv) {
                lp_browser_say(scr, a, "Out of memory.", NULL);
                return;
            }
            for (int i = 0; i < g.th; i++)
                for (int j = 0; j < g.tw; j++) {
                    uint8_t k = lv[i * g.tw + j];
                    if (k == NO_PATTERN) lp_screen_put(scr, x + j, y + i, 1, "\xC2\xB7", LP_COLOR_DIM, 0);
                    else lp_screen_heat(scr, x + j, y + i, 1, k);
                }
            if (lsel && h == b->head) /* bars either side, in the gap columns */
                for (int i = 0; i < g.th; i++) {
                    lp_screen_fill(scr, x - 1, y + i, 1, " ", LP_COLOR_SELECTED, 0);
                    lp_screen_fill(scr, x + g.tw, y + i, 1, " ", LP_COLOR_SELECTED, 0);
                }
        }
    }
    /* More layers or heads than fit: arrows where the others are (the cursor scrolls). */
    int shown_l = L - top < g.rows ? L - top : g.rows, shown_h = H - left < g.cols ? H - left : g.cols;
    if (top > 0) lp_screen_put(scr, a.x, a.y + 1, 1, "\xE2\x96\xB2", LP_COLOR_DIM, 0); /* ▲ */
    if (top + shown_l < L) lp_screen_put(scr, a.x, g.y0 + shown_l * (g.th + 1) - 1, 1, "\xE2\x96\xBC", LP_COLOR_DIM, 0);
    if (left > 0) lp_screen_put(scr, g.x0 - 1, a.y + 1, 1, "\xE2\x97\x80", LP_COLOR_DIM, 0); /* ◀ */
    if (left + shown_h < H) lp_screen_put(scr, g.x0 + shown_h * (g.tw + 1) - 1, a.y + 1, 1, "\xE2\x96\xB6", LP_COLOR_DIM, 0);
    draw_legend(scr, a, &g, T);

    /* The status line: where the selected token looks in the cursor's head. */
    lp_view v;
    lp_act_kind act;
    int qs, ks;
    const lp_run *of = lp_browser_attn_run(b, b->attn, &act, NULL, &qs, &ks);
    const char *kind = lp_browser_attn_name(b, b->attn);
    if (!of || lp_run_view(of, act, b->layer, b->head, &v)) {
        lp_error_clear();
        lp_browser_set_status(b, "L%d H%d  (no pattern)", b->layer, b->head);
        return;
    }
    int q = qs == LP_SIDE_SOURCE ? b->src_pos : b->pos;
    if (q >= v.shape[0]) q = v.shape[0] - 1;
    const float *row = v.data + (size_t)q * v.stride[0];
    int best = 0;
    for (int j = 1; j < v.shape[1]; j++)
        if (row[(size_t)j * v.stride[1]] > row[(size_t)best * v.stride[1]]) best = j;
    lp_browser_set_status(b, "%s%sL%d H%d  query %d %s \xE2\x86\x92 strongest key %d %s  %.4f", kind ? kind : "",
                          kind ? " " : "", b->layer, b->head, q, lp_browser_side_token(b, qs, q, NULL), best,
                          lp_browser_side_token(b, ks, best, NULL), (double)row[(size_t)best * v.stride[1]]);
}

/* The cursor to row r (an encoder-decoder's: its attention kind too). */
static void move_to_row(lp_browser *b, int r) {
    int L = n_rows(b), layer;
    if (r < 0) r = 0;
    if (r >= L) r = L - 1;
    lp_attn_kind k = row_kind(b, r, &layer);
    lp_browser_set_attn(b, k);
    b->layer = layer;
}

static bool model_act(void *vst, lp_browser *b, lp_action a) {
    (void)vst;
    /* Past the last layer or head: the browser clamps the selection after every key. */
    switch (a) {
    case LP_DO_UP: move_to_row(b, row_of(b) - 1); break;
    case LP_DO_DOWN: move_to_row(b, row_of(b) + 1); break;
    case LP_DO_LEFT: b->head--; break;
    case LP_DO_RIGHT: b->head++; break;
    case LP_DO_ENTER: b->view = LP_VIEW_ATTENTION; break;
    default: return false;
    }
    return true;
}

static void model_subject(void *st, const lp_browser *b, int *layer, int *head, int *pos) {
    (void)st;
    *layer = b->layer;
    *head = b->head;
    *pos = -1;
}

const lp_view_ops lp_view_model = {
    .name = "model",
    .title = "Model view",
    .open = model_open,
    .close = model_close,
    .draw = model_draw,
    .act = model_act,
    .subject = model_subject,
};
