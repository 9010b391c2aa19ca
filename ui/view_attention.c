/* View 1, attention: one head's T x T pattern as a heat map. Rows are queries (the
 * selected token is the query row), columns are keys; token labels run down the left and,
 * one character a row, across the top, so wide characters keep their columns. The window
 * scrolls to keep the cursor cell in view. A causal head (no weight on any later key) has
 * its upper triangle masked; a bidirectional one (an encoder's) is drawn whole, and the
 * key cursor goes past the query.
 *
 * An encoder-decoder's run has three attentions (x cycles them, s moves between the
 * strip's lines and takes the attention along): the decoder's self-attention (target x
 * target), its cross-attention, a rectangle with the target tokens down and the source
 * tokens across, and the encoder's self-attention (source x source). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "view.h"

#define CELL_W 3

typedef struct {
    int top, left; /* first query row and key column shown */
    int key;       /* the key column under the cursor */
    bool follow;   /* the key follows the query row's strongest key */
    bool causal;   /* the head last drawn has nothing past the diagonal */
} attn_state;

static void *attn_open(lp_browser *b) {
    (void)b;
    attn_state *st = calloc(1, sizeof *st);
    if (st) st->follow = st->causal = true;
    return st;
}

static void attn_close(void *st) { free(st); }

static float at(const lp_view *v, int i, int j) { return v->data[(size_t)i * v->stride[0] + (size_t)j * v->stride[1]]; }

/* The head's pattern of the attention shown, and the strip sides of its rows and columns. */
static int pattern_of(const lp_browser *b, lp_view *v, int *qside, int *kside) {
    lp_act_kind act;
    const lp_run *r = lp_browser_attn_run(b, b->attn, &act, NULL, qside, kside);
    if (!r) return lp_error(LP_EINVAL, "this run has no such attention");
    return lp_run_view(r, act, b->layer, b->head, v);
}

bool lp_pattern_causal(const lp_view *p) {
    int T = p->shape[0];
    for (int i = 0; i < T; i++) {
        const float *row = p->data + (size_t)i * p->stride[0];
        for (int j = i + 1; j < T; j++)
            if (row[(size_t)j * p->stride[1]] != 0) return false;
    }
    return true;
}

/* Fixes the key column for the query row: the strongest key when following, and never
 * past the query when the head is causal (it sees nothing there). */
static int key_of(attn_state *st, const lp_view *v, int q, int T) {
    int last = st->causal && q < T ? q : T - 1;
    if (st->follow) {
        int best = 0;
        for (int j = 1; j <= last; j++)
            if (at(v, q, j) > at(v, q, best)) best = j;
        st->key = best;
    }
    if (st->key > last) st->key = last;
    if (st->key < 0) st->key = 0;
    return st->key;
}

/* Token j's label written downwards from (x, y), one character a row, centred in the
 * column; longer than rows: cut with '…'. */
static void vertical_label(lp_screen *scr, int x, int y, int rows, const char *text, lp_color color, int attr) {
    const char *p = text;
    for (int r = 0; r < rows && *p; r++) {
        int w;
        size_t n = lp_utf8_next(p, &w);
        char ch[8];
        bool cut = r == rows - 1 && p[n];
        if (cut) {
            memcpy(ch, "\xE2\x80\xA6", 4);
            w = 1;
        } else {
            memcpy(ch, p, n < 7 ? n : 7);
            ch[n < 7 ? n : 7] = '\0';
        }
        lp_screen_put(scr, x + (CELL_W - w) / 2, y + r, w, ch, color, attr);
        p += n;
    }
}

static void attn_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    attn_state *st = vst;
    const lp_run *r = lp_browser_need_run(b, scr, a);
    if (!r) return;
    lp_view v;
    int qs, ks;
    if (pattern_of(b, &v, &qs, &ks)) {
        lp_browser_say(scr, a, "This head has no pattern.", lp_errmsg());
        return;
    }
    /* Tq queries (rows) by Tk keys (columns): T x T, or an encoder-decoder's T x S or S x S. */
    int Tq = v.shape[0], Tk = v.shape[1], q = qs == LP_SIDE_SOURCE ? b->src_pos : b->pos;
    if (q >= Tq) q = Tq - 1;
    st->causal = Tq == Tk && b->attn != LP_ATTN_CROSS && lp_pattern_causal(&v);
    int k = key_of(st, &v, q, Tk);
    const char *kind = lp_browser_attn_name(b, b->attn);

    if (!kind)
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                         "layer %d  head %d   rows: queries, columns: keys   [ ] layer  { } head  H L key  a follow",
                         b->layer, b->head);
    else
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0, "%s L%d H%d   rows: %s, columns: %s   x: %s",
                         kind, b->layer, b->head, qs == LP_SIDE_SOURCE ? "source" : "target",
                         ks == LP_SIDE_SOURCE ? "source" : "target",
                         b->attn == LP_ATTN_DEC_SELF ? "cross" : b->attn == LP_ATTN_CROSS ? "enc self" : "dec self");
    /* Layout: row labels (position and token), then the key header, then the cells. */
    int label_w = a.w / 4;
    if (label_w > 16) label_w = 16;
    if (label_w < 8) label_w = 8;
    int head_rows = a.h >= 24 ? 5 : a.h >= 16 ? 3 : 1;
    int x0 = a.x + label_w + 1, y_pos = a.y + 1, y_tok = y_pos + 1, y0 = y_tok + head_rows;
    int rows = a.y + a.h - y0, cols = (a.x + a.w - x0) / CELL_W;
    if (rows < 1 || cols < 1) return;
    int top = lp_scroll(&st->top, q, rows, Tq), left = lp_scroll(&st->left, k, cols, Tk);

    for (int c = 0; c < cols && left + c < Tk; c++) {
        int j = left + c, x = x0 + c * CELL_W;
        bool sel = j == k;
        lp_color color = sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL;
        char num[16];
        snprintf(num, sizeof num, "%d", j);
        /* Positions of three digits would run together: every other one, and the cursor's. */
        if (j < 100 || j % 2 == 0 || sel) lp_screen_put_right(scr, x, y_pos, CELL_W, num, color, sel ? LP_ATTR_BOLD : 0);
        vertical_label(scr, x, y_tok, head_rows, lp_browser_side_token(b, ks, j, NULL), color, sel ? LP_ATTR_BOLD : 0);
    }
    for (int rr = 0; rr < rows && top + rr < Tq; rr++) {
        int i = top + rr, y = y0 + rr;
        bool sel = i == q;
        lp_color color = sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL;
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        lp_screen_fill(scr, a.x, y, label_w, " ", color, 0);
        lp_screen_put_right(scr, a.x, y, 4, num, color, 0);
        lp_screen_put_clip(scr, a.x + 5, y, label_w - 5, lp_browser_side_token(b, qs, i, NULL), color,
                           sel ? LP_ATTR_BOLD : 0);
        for (int c = 0; c < cols && left + c < Tk; c++) {
            int j = left + c, x = x0 + c * CELL_W;
            if (j > i && st->causal) { /* masked: the query cannot see this key */
                lp_screen_put(scr, x + 1, y, 1, "\xC2\xB7", LP_COLOR_DIM, 0);
                continue;
            }
            int level = lp_heat_level(at(&v, i, j));
            lp_screen_heat(scr, x, y, CELL_W, level);
            if (sel && j == k) {
                lp_screen_put(scr, x, y, 1, "[", LP_COLOR_HEAT(level), LP_ATTR_BOLD);
                lp_screen_put(scr, x + CELL_W - 1, y, 1, "]", LP_COLOR_HEAT(level), LP_ATTR_BOLD);
            }
        }
    }
    lp_browser_set_status(b, "%s%sL%d H%d  query %d %s \xE2\x86\x92 key %d %s  %.4f%s", kind ? kind : "",
                          kind ? " " : "", b->layer, b->head, q, lp_browser_side_token(b, qs, q, NULL), k,
                          lp_browser_side_token(b, ks, k, NULL), (double)at(&v, q, k),
                          st->follow ? "  (strongest key)" : "");
}

static bool attn_act(void *vst, lp_browser *b, lp_action a) {
    attn_state *st = vst;
    lp_view v;
    int qs = LP_SIDE_TARGET, ks = LP_SIDE_TARGET;
    if (pattern_of(b, &v, &qs, &ks)) { /* no run: nothing to move over */
        lp_error_clear();
        v.shape[0] = v.shape[1] = 0;
    }
    int *q = qs == LP_SIDE_SOURCE ? &b->src_pos : &b->pos, Tk = v.shape[1];
    switch (a) {
    case LP_DO_UP: if (*q > 0) (*q)--; break;
    case LP_DO_DOWN: if (*q + 1 < v.shape[0]) (*q)++; break;
    case LP_DO_LEFT: st->follow = false; if (st->key > 0) st->key--; break;
    case LP_DO_RIGHT: st->follow = false; if (st->key < (st->causal ? *q : Tk - 1)) st->key++; break;
    case LP_DO_FOLLOW: st->follow = true; break;
    case LP_DO_ATTN_KIND:
        if (b->S == 0) {
            b->message_error = false;
            snprintf(b->message, sizeof b->message, "x: only an encoder-decoder's run has more than one attention");
            return false;
        }
        lp_browser_set_attn(b, (lp_attn_kind)((b->attn + 1) % LP_ATTN_COUNT));
        break;
    default: return false;
    }
    return true;
}

static void attn_subject(void *st, const lp_browser *b, int *layer, int *head, int *pos) {
    (void)st;
    *layer = b->layer;
    *head = b->head;
    *pos = b->attn == LP_ATTN_ENC_SELF ? b->src_pos : b->pos; /* the query: the encoder's is a source position */
}

const lp_view_ops lp_view_attention = {
    .name = "attn",
    .title = "Attention",
    .open = attn_open,
    .close = attn_close,
    .draw = attn_draw,
    .act = attn_act,
    .subject = attn_subject,
};
