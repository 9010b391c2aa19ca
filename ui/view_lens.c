/* View 5, logit lens: layers x positions, each cell the token the residual stream there
 * would predict if the model stopped (lp_lens) and its probability, on the heat scale.
 * Underlined where it is the token that actually comes next. The lens is computed in
 * update, a chunk of positions at a time (lp_lens_chunk: the slow part, under the progress
 * line), only the chunks on screen: the first update the cursor's, then, when a frame
 * shows a chunk not computed yet, the view asks for another update. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/lens.h"
#include "view.h"

#define LABEL_W 6

typedef struct {
    int *ids;      /* (rows, T) top token */
    float *probs;  /* (rows, T) its probability */
    bool *done;    /* (chunks) computed */
    int rows, T;
    const lp_run *run; /* what ids and probs are of */
    unsigned gen;
    int want_lo, want_hi; /* the positions the last frame showed; hi 0: no frame yet */
    int row;       /* the row under the cursor: 0 embeddings, l + 1 after layer l */
    int top, left;
    bool failed;
} lens_state;

static void *lens_open(lp_browser *b) {
    lens_state *st = calloc(1, sizeof *st);
    if (st && b->s->model) st->row = lp_model_config(b->s->model)->n_layer;
    return st;
}

static void lens_clear(lens_state *st) {
    free(st->ids);
    free(st->probs);
    free(st->done);
    st->ids = NULL;
    st->probs = NULL;
    st->done = NULL;
    st->run = NULL;
    st->rows = st->T = 0;
}

static void lens_close(void *vst) {
    lens_state *st = vst;
    if (!st) return;
    lens_clear(st);
    free(st);
}

/* A lens needs token predictions: a decoder's or a masked LM's. */
static bool has_tokens(const lp_run *r) {
    lp_head_kind h = lp_model_config(lp_run_model(r))->head;
    return h == LP_HEAD_LM || h == LP_HEAD_MLM;
}

static int lens_update(void *vst, lp_browser *b) {
    lens_state *st = vst;
    const lp_run *r = b->s->run;
    st->failed = false;
    if (st->run != r || st->gen != b->gen || !st->ids) { /* a new run: nothing of it computed */
        lens_clear(st);
        st->want_hi = 0;
        if (!r || !has_tokens(r)) return LP_OK; /* classifiers, bare encoders: the view says why there is none */
        int rows = lp_model_config(lp_run_model(r))->n_layer + 1, T = lp_run_len(r);
        st->ids = malloc((size_t)rows * T * sizeof *st->ids);
        st->probs = malloc((size_t)rows * T * sizeof *st->probs);
        st->done = calloc((size_t)(T + LP_LENS_CHUNK - 1) / LP_LENS_CHUNK, sizeof *st->done);
        if (!st->ids || !st->probs || !st->done) {
            lens_clear(st);
            return lp_error(LP_ENOMEM, "out of memory");
        }
        st->rows = rows;
        st->T = T;
        st->run = r;
        st->gen = b->gen;
        if (st->row >= rows || st->row < 0) st->row = rows - 1;
    }
    /* before the first frame of the run: the cursor's chunk (what the status line reads);
     * the frame then asks for the rest of what it shows */
    int lo = st->want_hi ? st->want_lo : b->pos, hi = st->want_hi ? st->want_hi : b->pos + 1;
    lo = lo < 0 ? 0 : lo;
    hi = hi > st->T ? st->T : hi;
    for (int c = lo / LP_LENS_CHUNK; c * LP_LENS_CHUNK < hi; c++) {
        if (st->done[c]) continue;
        int rc = lp_cancelled() ? lp_error(LP_ECANCEL, "cancelled") : lp_lens_chunk(r, c, 1, -1, st->ids, st->probs, NULL, NULL);
        if (rc) { /* no new request from the frames until a command or Ctrl-L */
            st->failed = true;
            return rc;
        }
        st->done[c] = true;
    }
    return LP_OK;
}

static bool cell_done(const lens_state *st, int p) { return st->done[p / LP_LENS_CHUNK]; }

static void row_label(char *buf, size_t cap, int row, int rows) {
    if (row == 0) snprintf(buf, cap, "emb");
    else if (row == rows - 1) snprintf(buf, cap, "out");
    else snprintf(buf, cap, "L%d", row - 1);
}

static void lens_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    lens_state *st = vst;
    const lp_run *r = lp_browser_need_run(b, scr, a);
    if (!r) return;
    if (!st->ids && !has_tokens(r)) {
        lp_browser_say(scr, a, "No logit lens: this model predicts no tokens.",
                       "a classifier's or a bare encoder's layers have no vocabulary to be read through");
        return;
    }
    if (!st->ids) {
        lp_browser_say(scr, a, st->failed ? "The logit lens was not computed." : "No logit lens yet.",
                       "Ctrl-L tries again");
        return;
    }
    lp_screen_put_clip(scr, a.x + 1, a.y, a.w - 1,
                       "rows: the residual stream after each layer (emb: before any), read through the unembedding; "
                       "underlined: the token that comes next",
                       LP_COLOR_LABEL, 0);
    int cw = a.w - LABEL_W >= 12 * 6 ? 12 : 10;
    int cols = (a.w - LABEL_W) / cw, rows = a.h - 2;
    if (cols < 1 || rows < 1) return;
    int T = st->T < b->T ? st->T : b->T;
    int top = lp_scroll(&st->top, st->row, rows, st->rows), left = lp_scroll(&st->left, b->pos, cols, T);
    /* what this frame shows; chunks of it not computed yet are blank until the update it asks for */
    st->want_lo = left;
    st->want_hi = left + cols < T ? left + cols : T;
    bool missing = false;
    for (int p = st->want_lo; p < st->want_hi; p++) missing |= !cell_done(st, p);
    if (missing && !st->failed) lp_browser_restale(b);
    const int *ids = lp_run_ids(b->s->run);
    int x0 = a.x + LABEL_W, y0 = a.y + 2;
    for (int c = 0; c < cols && left + c < T; c++) {
        int p = left + c;
        bool sel = p == b->pos;
        lp_screen_put_clip(scr, x0 + c * cw + 1, a.y + 1, cw - 1, lp_browser_token(b, p, NULL),
                           sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL, sel ? LP_ATTR_BOLD : 0);
    }
    for (int rr = 0; rr < rows && top + rr < st->rows; rr++) {
        int row = top + rr, y = y0 + rr;
        char lab[16];
        row_label(lab, sizeof lab, row, st->rows);
        bool rsel = row == st->row;
        lp_screen_put_right(scr, a.x, y, LABEL_W - 1, lab, rsel ? LP_COLOR_SELECTED : LP_COLOR_LABEL,
                            rsel ? LP_ATTR_BOLD : 0);
        for (int c = 0; c < cols && left + c < T; c++) {
            int p = left + c, x = x0 + c * cw;
            if (!cell_done(st, p)) continue;
            int id = st->ids[(size_t)row * st->T + p];
            float pr = st->probs[(size_t)row * st->T + p];
            int level = lp_heat_level(pr);
            bool next = p + 1 < T && ids[p + 1] == id;
            bool cur = rsel && p == b->pos;
            int attr = (next ? LP_ATTR_UNDERLINE : 0) | (cur ? LP_ATTR_BOLD : 0);
            char tok[200], num[16];
            lp_browser_id_text(b, id, tok, sizeof tok);
            snprintf(num, sizeof num, pr >= 0.995f ? "1.0" : ".%02.0f", (double)pr * 100);
            lp_color color = scr->depth ? LP_COLOR_HEAT(level) : LP_COLOR_NORMAL;
            if (scr->depth) lp_screen_fill(scr, x, y, cw - 1, " ", color, 0);
            else lp_screen_put(scr, x, y, 1, lp_shade(level), LP_COLOR_HEAT(level), 0);
            lp_screen_put_clip(scr, x + 1, y, cw - 7, tok, color, attr);
            lp_screen_put_right(scr, x + cw - 5, y, 3, num, color, cur ? LP_ATTR_BOLD : 0);
            if (cur) lp_screen_put(scr, x + cw - 2, y, 1, "\xE2\x97\x82", LP_COLOR_SELECTED, LP_ATTR_BOLD); /* ◂ */
        }
    }
    char lab[16], tok[200];
    if (!cell_done(st, b->pos)) return;
    row_label(lab, sizeof lab, st->row, st->rows);
    int id = st->ids[(size_t)st->row * st->T + b->pos];
    lp_browser_set_status(b, "%s, token %d %s: top %s (%d) p %.4f", lab, b->pos, lp_browser_token(b, b->pos, NULL),
                          lp_browser_id_text(b, id, tok, sizeof tok), id,
                          (double)st->probs[(size_t)st->row * st->T + b->pos]);
}

static bool lens_act(void *vst, lp_browser *b, lp_action a) {
    lens_state *st = vst;
    (void)b;
    switch (a) {
    case LP_DO_UP: if (st->row > 0) st->row--; break;
    case LP_DO_DOWN: if (st->row + 1 < st->rows) st->row++; break;
    default: return false;
    }
    return true;
}

static void lens_subject(void *vst, const lp_browser *b, int *layer, int *head, int *pos) {
    lens_state *st = vst;
    *layer = st->row > 0 ? st->row - 1 : -1;
    *head = -1;
    *pos = b->pos;
}

const lp_view_ops lp_view_lens = {
    .name = "lens",
    .title = "Logit lens",
    .open = lens_open,
    .close = lens_close,
    .update = lens_update,
    .draw = lens_draw,
    .act = lens_act,
    .subject = lens_subject,
};
