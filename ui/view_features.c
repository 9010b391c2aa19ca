/* View 0, features: a dictionary loaded beside the model (`sae load`) read on the current
 * run. The heat map has the run's tokens down and the features that fire over the run
 * across, strongest first (by their largest activation over the run), each cell a feature's
 * activation at a token on that feature's own scale, its number where the cell has room;
 * the cursor is the selected token (↑ ↓ here; the strip's selection) and a feature column
 * (← → here, where elsewhere they move the token). Beside it (below it on a narrow terminal)
 * the selected feature: its peak, its activation over every token of the run, its direct
 * logit effects and its nearest features by decoder cosine, the numbers `feature ID`
 * prints (lp_session_feature_effects computes both). With several dictionaries loaded, d
 * shows the next; with none, the view says how to load one, and a opens the command line
 * with `sae load ` typed.
 *
 * Encoding the run (T x d_sae) and a feature's effects (a V-wide product and d_sae
 * cosines) are done in update, never in draw. The encoding is kept with the rows it read and
 * the dictionary's serial: after a command it is made again only when the rows at the site
 * (or the dictionary) changed, which for a wide dictionary is most of the work; the effects,
 * which read the whole run, after every command and when the selected feature changes.
 * `:feature ID [--sae NAME]` on the command line opens this view on that feature's column. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/output.h"
#include "loupe/sae.h"
#include "tui_line.h"
#include "view.h"

#define LIST_K 10      /* each list of the side panel, as `feature ID` gives it by default */
#define SIDE_MIN_W 64  /* from this width the panel goes beside the heat map */

typedef struct {
    int sae;          /* the dictionary shown: its index among the session's */
    int n_seen;       /* dictionaries at the last update: a new one is shown when it comes */
    unsigned gen;     /* b->gen + 1 when encoded, 0 never */
    int enc_sae;      /* the dictionary encoded */
    unsigned enc_serial; /* its serial (lp_session_sae_input) */
    float *x;         /* (T, d_in) the rows encoded, to tell whether a command changed them */
    size_t nx;
    float *acts;      /* (T, m) */
    int T, m;
    float *peak;      /* (m) each feature's largest activation over the run */
    int *ids;         /* (m) the features that fire, strongest first: n_active of them */
    int n_active;
    char err[512];    /* why the run could not be encoded ("" when it was) */
    int col, top, left; /* the cursor's column (an index into ids); the first row and column shown */
    int feature;      /* the selected feature (kept across runs while it fires), -1: none */
    lp_feature_effects fx;
    int fx_feature;   /* what fx is of (-1: nothing), in the encoding of fx_gen and fx_sae */
    unsigned fx_gen;
    int fx_sae;
    char fx_err[512];
    bool picked;      /* a feature asked for by `:feature ID`, to select once encoded */
} features_state;

/* ---- helpers (pure: tested in test_tui.c) ---- */

int lp_feature_ranking(const float *acts, int T, int m, float *peak, int *ids) {
    int n = 0;
    for (int f = 0; f < m; f++) peak[f] = 0;
    for (int t = 0; t < T; t++) {
        const float *row = acts + (size_t)t * m;
        for (int f = 0; f < m; f++)
            if (row[f] > peak[f]) peak[f] = row[f];
    }
    for (int f = 0; f < m; f++) n += peak[f] > 0;
    /* every feature that fires has a peak above every one that does not */
    if (n > 0 && lp_top_k(ids, peak, m, n)) return -1;
    return n;
}

void lp_fit_number(double v, int w, char *buf, size_t cap) {
    static const struct {
        double scale;
        const char *unit;
    } UNITS[] = {{1, ""}, {1e3, "k"}, {1e6, "M"}, {1e9, "G"}};
    for (size_t u = 0; u < sizeof UNITS / sizeof *UNITS; u++) {
        if (u > 0 && fabs(v) < UNITS[u].scale) break;
        for (int d = 2; d >= 0; d--) {
            snprintf(buf, cap, "%.*f%s", d, v / UNITS[u].scale, UNITS[u].unit);
            if ((int)strlen(buf) <= w) return;
        }
    }
    snprintf(buf, cap, "+");
}

void lp_features_layout_of(lp_rect a, int max_id, lp_features_layout *g) {
    memset(g, 0, sizeof *g);
    lp_rect body = {a.x, a.y + 1, a.w, a.h - 1};
    g->grid = body;
    if (a.w >= SIDE_MIN_W) {
        int sw = a.w * 2 / 5;
        sw = sw < 26 ? 26 : sw > 48 ? 48 : sw;
        g->grid.w = a.w - sw - 1;
        g->side = (lp_rect){a.x + g->grid.w + 1, body.y, sw, body.h};
    } else if (body.h >= 15) {
        g->grid.h = body.h / 2;
        g->side = (lp_rect){a.x, body.y + g->grid.h + 1, a.w, body.h - g->grid.h - 1};
    }
    g->label_w = g->grid.w / 4;
    g->label_w = g->label_w < 10 ? 10 : g->label_w > 18 ? 18 : g->label_w;
    int digits = 1;
    for (int v = max_id; v >= 10; v /= 10) digits++;
    g->cell_w = digits + 1 > 5 ? digits + 1 : 5;
    g->cols = (g->grid.w - g->label_w) / g->cell_w;
    g->rows = g->grid.h - 1;
    if (g->cols < 0) g->cols = 0;
    if (g->rows < 0) g->rows = 0;
    /* the panel: a title, the activation line, then three lists with a heading each */
    int lr = g->side.w > 0 ? (g->side.h - 5) / 3 : 0;
    g->list_rows = lr < 0 ? 0 : lr > LIST_K ? LIST_K : lr;
}

/* ---- state ---- */

static void *features_open(lp_browser *b) {
    (void)b;
    features_state *st = calloc(1, sizeof *st);
    if (st) st->feature = st->fx_feature = -1;
    return st;
}

static unsigned encodes; /* lp_features_encode_count */

unsigned lp_features_encode_count(void) { return encodes; }

static void clear_encoding(features_state *st) {
    free(st->acts), free(st->peak), free(st->ids), free(st->x);
    st->acts = st->peak = st->x = NULL;
    st->nx = 0;
    st->enc_serial = 0;
    st->ids = NULL;
    st->T = st->m = st->n_active = 0;
    st->gen = 0;
    st->err[0] = '\0';
    lp_feature_effects_clear(&st->fx);
    st->fx_feature = -1;
    st->fx_err[0] = '\0';
}

static void features_close(void *vst) {
    features_state *st = vst;
    if (!st) return;
    clear_encoding(st);
    free(st);
}

static bool encoded(const features_state *st, const lp_browser *b) {
    return st->gen == b->gen + 1 && st->enc_sae == st->sae;
}

static bool effects_ready(const features_state *st) {
    return st->feature < 0 || (st->fx_feature == st->feature && st->fx_gen == st->gen && st->fx_sae == st->enc_sae);
}

/* The column of st->feature when it fires (st->col unchanged otherwise); false when it does not. */
static bool select_feature(features_state *st) {
    for (int i = 0; i < st->n_active; i++)
        if (st->ids[i] == st->feature) {
            st->col = i;
            return true;
        }
    return false;
}

/* Encodes the run for st->sae, or keeps the encoding when the rows it reads and the
 * dictionary are those it was made of. */
static int encode(features_state *st, lp_browser *b) {
    float *x = NULL;
    unsigned serial = 0;
    int rc = lp_session_sae_input(b->s, st->sae, &x, &serial);
    const lp_sae *sae = lp_session_sae(b->s, st->sae, NULL, NULL);
    int T = lp_run_len(b->s->run);
    size_t nx = (size_t)T * lp_sae_get_info(sae)->d_in;
    if (!rc && st->acts && serial == st->enc_serial && T == st->T && nx == st->nx && !memcmp(x, st->x, nx * sizeof *x)) {
        free(x); /* the same rows, the same dictionary: the same encoding */
        st->enc_sae = st->sae;
        st->gen = b->gen + 1;
        return LP_OK;
    }
    clear_encoding(st);
    st->enc_sae = st->sae;
    st->gen = b->gen + 1; /* a failure too: it says so until the next command */
    st->m = lp_sae_get_info(sae)->d_sae;
    st->T = T;
    if (!rc && !(st->acts = malloc((size_t)T * st->m * sizeof *st->acts))) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) encodes++, rc = lp_sae_encode(sae, x, T, st->acts);
    if (!rc && (!(st->peak = malloc((size_t)st->m * sizeof *st->peak)) || !(st->ids = malloc((size_t)st->m * sizeof *st->ids))))
        rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc && (st->n_active = lp_feature_ranking(st->acts, st->T, st->m, st->peak, st->ids)) < 0) rc = LP_ENOMEM;
    if (rc) {
        snprintf(st->err, sizeof st->err, "%s", lp_errmsg());
        free(st->acts), free(st->peak), free(st->ids), free(x);
        st->acts = st->peak = NULL;
        st->ids = NULL;
        st->n_active = 0;
        return rc;
    }
    st->x = x, st->nx = nx, st->enc_serial = serial;
    /* the feature selected before, if it still fires; else the strongest */
    st->col = 0;
    select_feature(st);
    return LP_OK;
}

/* `:feature ID [--sae NAME]` asked for this feature (b->feature_pick): its dictionary shown,
 * the feature selected once encoded. */
static void take_pick(features_state *st, lp_browser *b) {
    if (b->feature_pick < 0) return;
    int idx = b->s->n_saes - 1; /* feature's default: the last loaded */
    const char *name;
    for (int i = 0; b->feature_sae[0] && i < b->s->n_saes; i++)
        if (lp_session_sae(b->s, i, &name, NULL) && strcmp(name, b->feature_sae) == 0) idx = i;
    st->sae = idx;
    st->feature = b->feature_pick;
    b->feature_pick = -1;
    st->picked = true;
}

static int features_update(void *vst, lp_browser *b) {
    features_state *st = vst;
    const lp_session *s = b->s;
    if (!s->model || !s->run || s->n_saes == 0) {
        clear_encoding(st);
        st->n_seen = s->n_saes;
        b->feature_pick = -1;
        return LP_OK;
    }
    if (st->gen != b->gen + 1) {
        if (s->n_saes > st->n_seen) st->sae = s->n_saes - 1, st->feature = -1; /* one just loaded */
        st->n_seen = s->n_saes;
    }
    take_pick(st, b);
    if (st->sae >= s->n_saes) st->sae = s->n_saes - 1;
    if (st->sae < 0) st->sae = 0;
    if (!encoded(st, b)) {
        int rc = encode(st, b);
        if (rc) return rc;
    }
    if (st->picked) {
        st->picked = false;
        if (!select_feature(st)) {
            b->message_error = true;
            snprintf(b->message, sizeof b->message, "f%d does not fire on this run: no column to select", st->feature);
        }
    }
    if (st->col >= st->n_active) st->col = st->n_active - 1;
    if (st->col < 0) st->col = 0;
    st->feature = st->n_active ? st->ids[st->col] : -1;
    if (effects_ready(st)) return LP_OK;
    lp_feature_effects_clear(&st->fx);
    st->fx_feature = st->feature, st->fx_gen = st->gen, st->fx_sae = st->enc_sae;
    st->fx_err[0] = '\0';
    int rc = lp_session_feature_effects(s, st->sae, st->feature, st->acts, LIST_K, &st->fx);
    if (rc) snprintf(st->fx_err, sizeof st->fx_err, "%s", lp_errmsg());
    return rc;
}

bool lp_features_selection(const lp_browser *b, int *dict, int *feature) {
    const features_state *st = b->state[LP_VIEW_FEATURES];
    if (!st || st->feature < 0 || st->sae < 0 || st->sae >= b->s->n_saes) return false;
    *dict = st->sae;
    *feature = st->feature;
    return true;
}

/* ---- drawing ---- */

static float act_at(const features_state *st, int t, int f) { return st->acts[(size_t)t * st->m + f]; }

static void draw_grid(features_state *st, lp_browser *b, lp_screen *scr, const lp_features_layout *g) {
    lp_rect a = g->grid;
    int cw = g->cell_w, lw = g->label_w, x0 = a.x + lw;
    if (g->cols < 1 || g->rows < 1) return;
    int top = lp_scroll(&st->top, b->pos, g->rows, st->T), left = lp_scroll(&st->left, st->col, g->cols, st->n_active);
    lp_screen_put_right(scr, a.x, a.y, lw - 1, "feature", LP_COLOR_LABEL, 0);
    if (left > 0) lp_screen_put(scr, x0 - 1, a.y, 1, "\xE2\x80\xB9", LP_COLOR_DIM, 0);
    for (int c = 0; c < g->cols && left + c < st->n_active; c++) {
        int j = left + c;
        bool sel = j == st->col;
        char id[16];
        snprintf(id, sizeof id, "%d", st->ids[j]);
        lp_screen_put_right(scr, x0 + c * cw, a.y, cw - 1, id, sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL,
                            sel ? LP_ATTR_BOLD : 0);
    }
    if (left + g->cols < st->n_active) lp_screen_put(scr, x0 + g->cols * cw - 1, a.y, 1, "\xE2\x80\xBA", LP_COLOR_DIM, 0);
    int pw = 1;
    for (int v = st->T - 1; v >= 10; v /= 10) pw++;
    for (int r = 0; r < g->rows && top + r < st->T; r++) {
        int t = top + r, y = a.y + 1 + r;
        bool row_sel = t == b->pos;
        lp_color lc = row_sel ? LP_COLOR_SELECTED : LP_COLOR_LABEL;
        char num[16];
        snprintf(num, sizeof num, "%d", t);
        lp_screen_fill(scr, a.x, y, lw - 1, " ", lc, 0);
        lp_screen_put_right(scr, a.x, y, pw, num, lc, 0);
        lp_screen_put_clip(scr, a.x + pw + 1, y, lw - pw - 2, lp_browser_token(b, t, NULL), lc, row_sel ? LP_ATTR_BOLD : 0);
        for (int c = 0; c < g->cols && left + c < st->n_active; c++) {
            int j = left + c, f = st->ids[j], x = x0 + c * cw;
            bool sel = row_sel && j == st->col;
            float v = act_at(st, t, f);
            if (sel) lp_screen_put(scr, x - 1, y, 1, "\xE2\x96\xB8", LP_COLOR_SELECTED, LP_ATTR_BOLD); /* ▸ */
            if (!(v > 0)) { /* does not fire here */
                lp_screen_put_right(scr, x, y, cw - 1, "\xC2\xB7", sel ? LP_COLOR_SELECTED : LP_COLOR_DIM,
                                    sel ? LP_ATTR_BOLD : 0);
                continue;
            }
            char txt[24];
            lp_fit_number(v, cw - 1, txt, sizeof txt);
            lp_screen_heat_text(scr, x, y, cw - 1, lp_heat_level(v / st->peak[f]), txt,
                                sel ? LP_ATTR_BOLD | LP_ATTR_UNDERLINE : 0);
        }
    }
}

/* The feature's activation over every token on one row, a cell a token (the largest of a
 * group when they are more than w), ▁ to █ of its peak; the selected token's cell marked. */
static void draw_activation_line(const features_state *st, const lp_browser *b, lp_screen *scr, int x, int y, int w) {
    static const char *const BARS[LP_HEAT_LEVELS] = {"\xE2\x96\x81", "\xE2\x96\x82", "\xE2\x96\x83", "\xE2\x96\x84",
                                                     "\xE2\x96\x85", "\xE2\x96\x86", "\xE2\x96\x87", "\xE2\x96\x88"};
    int f = st->feature, cells = st->T < w ? st->T : w;
    float *col = malloc((size_t)st->T * sizeof *col);
    uint8_t *lev = malloc((size_t)(cells > 0 ? cells : 1));
    if (cells > 0 && col && lev) {
        for (int t = 0; t < st->T; t++) col[t] = st->peak[f] > 0 ? act_at(st, t, f) / st->peak[f] : 0;
        lp_view v = {.data = col, .ndim = 2, .shape = {1, st->T}, .stride = {st->T, 1}};
        lp_thumbnail_levels(lev, 1, cells, &v);
        int sel = (int)((long long)b->pos * cells / st->T);
        for (int c = 0; c < cells; c++)
            lp_screen_put(scr, x + c, y, 1, BARS[lev[c]], c == sel ? LP_COLOR_SELECTED : LP_COLOR_BAR_MLP, 0);
    }
    free(col);
    free(lev);
}

/* One line of a list: a token (or feature) and its value, right-aligned. */
static void list_line(lp_screen *scr, int x, int y, int w, const char *name, double v) {
    char num[24];
    snprintf(num, sizeof num, "%.4f", v);
    lp_screen_put_clip(scr, x + 1, y, w - 10, name, LP_COLOR_NORMAL, 0);
    lp_screen_put_right(scr, x + w - 9, y, 9, num, LP_COLOR_NORMAL, 0);
}

static void draw_side(const features_state *st, lp_browser *b, lp_screen *scr, const lp_features_layout *g,
                      const char *site) {
    lp_rect a = g->side;
    if (a.w < 12 || a.h < 1) return;
    int f = st->feature, y = a.y, end = a.y + a.h;
    char line[256];
    snprintf(line, sizeof line, "f%d", f);
    int x = a.x + lp_screen_put(scr, a.x, y, a.w, line, LP_COLOR_SELECTED, LP_ATTR_BOLD);
    lp_screen_printf(scr, x, y++, a.x + a.w - x, LP_COLOR_LABEL, 0, "  peak %.4f at %d %s", (double)st->peak[f],
                     st->fx.pos, lp_browser_token(b, st->fx.pos, NULL));
    if (y < end) draw_activation_line(st, b, scr, a.x, y++, a.w);
    if (!effects_ready(st)) {
        if (y < end) lp_screen_put_clip(scr, a.x, y, a.w, "\xE2\x80\xA6", LP_COLOR_DIM, 0);
        return;
    }
    if (st->fx_err[0]) {
        if (y < end) lp_screen_put_clip(scr, a.x, y, a.w, st->fx_err, LP_COLOR_ERROR, 0);
        return;
    }
    char buf[256];
    if (g->list_rows == 0 && st->fx.has_logits) return; /* a narrow panel: its title and the line above */
    if (!st->fx.has_logits) {
        snprintf(line, sizeof line, "%s is not", site);
        if (y < end) lp_screen_put_clip(scr, a.x, y++, a.w, "no direct logit effect:", LP_COLOR_LABEL, LP_ATTR_BOLD);
        if (y < end) lp_screen_put_clip(scr, a.x + 1, y++, a.w - 1, line, LP_COLOR_DIM, 0);
        if (y < end) lp_screen_put_clip(scr, a.x + 1, y++, a.w - 1, "in the residual stream", LP_COLOR_DIM, 0);
    } else {
        const struct {
            const char *head;
            const lp_scored *v;
            int n;
        } LISTS[2] = {{"promotes (logit per unit)", st->fx.promoted, st->fx.n_promoted},
                      {"suppresses", st->fx.suppressed, st->fx.n_suppressed}};
        for (int l = 0; l < 2; l++) {
            if (y < end) lp_screen_put_clip(scr, a.x, y++, a.w, LISTS[l].head, LP_COLOR_LABEL, LP_ATTR_BOLD);
            for (int i = 0; i < LISTS[l].n && i < g->list_rows && y < end; i++)
                list_line(scr, a.x, y++, a.w, lp_browser_id_text(b, LISTS[l].v[i].id, buf, sizeof buf),
                          LISTS[l].v[i].value);
        }
    }
    if (y < end) lp_screen_put_clip(scr, a.x, y++, a.w, "nearest (decoder cosine)", LP_COLOR_LABEL, LP_ATTR_BOLD);
    /* the rows the lists above did not take */
    for (int i = 0; i < st->fx.n_nearest && y < end && (i < g->list_rows || !st->fx.has_logits); i++) {
        snprintf(buf, sizeof buf, "f%d", st->fx.nearest[i].id);
        list_line(scr, a.x, y++, a.w, buf, st->fx.nearest[i].value);
    }
}

static void features_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    features_state *st = vst;
    if (!lp_browser_need_run(b, scr, a)) return;
    if (b->s->n_saes == 0) {
        lp_browser_say(scr, a, "No dictionary loaded: :sae load PATH loads one (a types it)", NULL);
        lp_browser_set_status(b, "no dictionary");
        return;
    }
    if (!encoded(st, b) || !effects_ready(st)) lp_browser_restale(b); /* the selection moved since the update */
    if (!encoded(st, b)) {
        lp_browser_say(scr, a, "Encoding the run\xE2\x80\xA6", NULL);
        return;
    }
    const char *name = "", *site = "";
    lp_session_sae(b->s, st->sae, &name, &site);
    if (st->err[0]) {
        lp_browser_say(scr, a, "This dictionary could not be read on the run.", st->err);
        lp_browser_set_status(b, "%s: not encoded", name);
        return;
    }
    char more[64] = "";
    if (b->s->n_saes > 1) snprintf(more, sizeof more, "  [%d/%d, d: next]", st->sae + 1, b->s->n_saes);
    int x = a.x + 1 + lp_screen_put(scr, a.x + 1, a.y, a.w - 1, name, LP_COLOR_LABEL, LP_ATTR_BOLD);
    if (strcmp(name, site) != 0) x += lp_screen_printf(scr, x, a.y, a.x + a.w - x, LP_COLOR_LABEL, 0, " (%s)", site);
    lp_screen_printf(scr, x, a.y, a.x + a.w - x, LP_COLOR_LABEL, 0,
                     "%s  %d of %d fire; colour: each one's own peak  \xE2\x86\x90\xE2\x86\x92 feature  Enter: "
                     "feature ID",
                     more, st->n_active, st->m);
    if (st->n_active == 0) {
        lp_browser_say(scr, a, "No feature of this dictionary fires on this run.", NULL);
        lp_browser_set_status(b, "%s: no active feature", name);
        return;
    }
    lp_features_layout g;
    lp_features_layout_of(a, st->m - 1, &g); /* cells as wide for every column */
    draw_grid(st, b, scr, &g);
    if (g.side.w > 0 && effects_ready(st)) draw_side(st, b, scr, &g, site);
    else if (g.side.w > 0) lp_screen_put(scr, g.side.x, g.side.y, 1, "\xE2\x80\xA6", LP_COLOR_DIM, 0);
    int f = st->feature, pos = b->pos < st->T ? b->pos : st->T - 1; /* the strip's run is the one encoded */
    lp_browser_set_status(b, "token %d %s  f%d %.4f  column %d/%d", pos, lp_browser_token(b, pos, NULL), f,
                          (double)act_at(st, pos, f), st->col + 1, st->n_active);
}

/* ---- keys ---- */

/* `feature F --sae NAME` for the output pane: the name quoted as the command line splits it. */
static void request_feature(const features_state *st, lp_browser *b) {
    const char *name = "";
    if (st->feature < 0 || !lp_session_sae(b->s, st->sae, &name, NULL)) return;
    char cmd[512];
    int o = snprintf(cmd, sizeof cmd, "feature %d --sae \"", st->feature);
    for (const char *p = name; *p && o < (int)sizeof cmd - 3; p++) {
        if (*p == '"' || *p == '\\') cmd[o++] = '\\';
        cmd[o++] = *p;
    }
    snprintf(cmd + o, sizeof cmd - (size_t)o, "\"");
    free(b->pending);
    b->pending = strdup(cmd);
}

static bool features_act(void *vst, lp_browser *b, lp_action a) {
    features_state *st = vst;
    switch (a) {
    case LP_DO_UP: if (b->pos > 0) b->pos--; return true;
    case LP_DO_DOWN: if (b->pos + 1 < b->T) b->pos++; return true;
    case LP_DO_LEFT:
    case LP_DO_RIGHT: {
        int col = st->col + (a == LP_DO_LEFT ? -1 : 1);
        if (col < 0 || col >= st->n_active) return false;
        st->col = col;
        st->feature = st->ids[col];
        lp_browser_restale(b); /* its effects: update, before the next frame */
        return true;
    }
    case LP_DO_METRIC_NEXT:
        if (b->s->n_saes < 2) {
            b->message_error = false;
            snprintf(b->message, sizeof b->message, "d: one dictionary is loaded (:sae load PATH loads another)");
            return false;
        }
        st->sae = (st->sae + 1) % b->s->n_saes;
        st->feature = -1;
        st->col = st->left = 0;
        lp_browser_restale(b);
        return true;
    case LP_DO_ENTER: request_feature(st, b); return true;
    case LP_DO_LOAD:
        b->line_mode = LP_LINE_COMMAND;
        lp_line_start(b->line, ":", true);
        lp_line_insert(b->line, "sae load ");
        return true;
    default: return false;
    }
}

/* A note here is about the dictionary's layer and the selected token. */
static void features_subject(void *vst, const lp_browser *b, int *layer, int *head, int *pos) {
    const features_state *st = vst;
    const char *site = NULL;
    *layer = *head = -1;
    *pos = b->pos;
    if (lp_session_sae(b->s, st->sae, NULL, &site) && sscanf(site, "blocks.%d.", layer) != 1) *layer = -1;
}

const lp_view_ops lp_view_features = {
    .name = "feat",
    .title = "Features",
    .open = features_open,
    .close = features_close,
    .update = features_update,
    .draw = features_draw,
    .act = features_act,
    .subject = features_subject,
};
