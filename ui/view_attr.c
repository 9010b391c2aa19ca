/* View 4, attributions: the current run's input tokens coloured by attribution score on a
 * diverging scale (blue against, red for the target), with the numbers in a side table,
 * for the attributions stored for the run (newest first; `:attr METHOD` adds one). With
 * none stored it lists what the store holds for the run. On an encoder the header names
 * what is explained, a classifier's label or a masked LM's mask, and `t` goes to the next
 * label or mask (computing its attribution when the store has none). On an encoder-decoder
 * the source and the target prefix are two lines, as on the strip, coloured on one scale
 * (the largest |score| of both sides); the header names the decoder position explained and
 * its input token, and `t` goes to the next decoder position. An attribution that is a step
 * of a series (attr --from, generate --attr) shows the series as a matrix beside the tokens:
 * a column per explained token, a row per input position, each column on its own scale; `t`
 * walks the steps. An attribution `eval` judged shows its measures and its deletion and
 * insertion curves as a plot beside the tokens. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/output.h"
#include "loupe/tokenizer.h"
#include "view.h"

#define TABLE_W 40

typedef struct {
    json_t *list;     /* attributions of the run, newest first */
    int sel;
    long long newest; /* id of the newest: a new one is shown at once */
    float *scores;    /* (n) the run's own tokens' (side 'target') */
    int n;
    float *src;       /* (n_src) an encoder-decoder's source's (side 'source') */
    int n_src;
    double maxabs;    /* over both sides: one scale */
    json_t *stored;   /* strings: what else the store has for the run */
    bool no_table;    /* this database has no attributions table (schema before v2) */
    int top;
    /* the series the shown attribution is a step of (series 0: none) */
    long long series;
    int step, n_steps, rows; /* rows: input positions of the matrix */
    float *matrix;           /* (n_steps, rows) the steps' scores over the run's own tokens */
    int *step_pos;           /* (n_steps) the position each step explains (its token's) */
    long long *step_attr;    /* (n_steps) each step's attribution id */
    double prob, entropy;    /* the shown step's */
    json_t *judged;          /* the newest evaluation of the shown attribution (evaluations_view row), or NULL */
    double *curve[2];        /* its deletion and insertion curves (n_curve points each) */
    int n_curve;
} attr_state;

static void *attr_open(lp_browser *b) {
    (void)b;
    return calloc(1, sizeof(attr_state));
}

static void clear_series(attr_state *st) {
    free(st->matrix);
    free(st->step_pos);
    free(st->step_attr);
    st->matrix = NULL;
    st->step_pos = NULL;
    st->step_attr = NULL;
    st->series = 0;
    st->n_steps = st->rows = 0;
}

static void clear_judged(attr_state *st) {
    json_decref(st->judged);
    free(st->curve[0]);
    free(st->curve[1]);
    st->judged = NULL;
    st->curve[0] = st->curve[1] = NULL;
    st->n_curve = 0;
}

static void clear(attr_state *st) {
    clear_series(st);
    clear_judged(st);
    json_decref(st->list);
    json_decref(st->stored);
    free(st->scores);
    free(st->src);
    st->list = st->stored = NULL;
    st->scores = st->src = NULL;
    st->n = st->n_src = 0;
    st->maxabs = 0;
}

static void attr_close(void *vst) {
    attr_state *st = vst;
    if (!st) return;
    clear(st);
    free(st);
}

/* One side's scores of an attribution into *out (n of them: the largest pos + 1). */
static void load_side(lp_browser *b, long long id, const char *side, float **out, int *n, double *maxabs) {
    json_t *rows = lp_browser_query(b, "SELECT pos, score FROM attribution_scores WHERE attribution_id = ?1"
                                    " AND side = ?2 ORDER BY pos", json_pack("[Is]", (json_int_t)id, side));
    size_t i;
    json_t *row;
    int len = 0;
    json_array_foreach(rows, i, row) {
        long long p = lp_row_int(row, "pos", -1);
        if (p + 1 > len && p < 1 << 20) len = (int)p + 1;
    }
    *out = calloc((size_t)len + 1, sizeof **out);
    *n = 0;
    if (*out) {
        *n = len;
        json_array_foreach(rows, i, row) {
            long long p = lp_row_int(row, "pos", -1);
            double v = lp_row_real(row, "score");
            if (p < 0 || p >= len) continue;
            (*out)[p] = isnan(v) ? 0 : (float)v;
            if (fabs(v) > *maxabs) *maxabs = fabs(v);
        }
    }
    json_decref(rows);
}

/* The series attribution id is a step of, if any: all its steps' scores (the run's own side). */
static void load_series(attr_state *st, lp_browser *b, long long id) {
    clear_series(st);
    json_t *rows = lp_browser_query(b, "SELECT series_id, step, prob, entropy FROM attribution_steps WHERE attribution_id = ?1",
                                    json_pack("[I]", (json_int_t)id));
    json_t *r = json_array_get(rows, 0);
    if (r) {
        st->series = lp_row_int(r, "series_id", 0);
        st->step = (int)lp_row_int(r, "step", 0);
        st->prob = lp_row_real(r, "prob");
        st->entropy = lp_row_real(r, "entropy");
    }
    json_decref(rows);
    if (!st->series) return;
    json_t *steps = lp_browser_query(b, "SELECT st.step, st.attribution_id, a.pos FROM attribution_steps st JOIN "
                                        "attributions a ON a.id = st.attribution_id WHERE st.series_id = ?1 ORDER BY st.step",
                                     json_pack("[I]", (json_int_t)st->series));
    int n = (int)json_array_size(steps), T = b->T;
    st->matrix = calloc((size_t)n * (T > 0 ? T : 1), sizeof *st->matrix);
    st->step_pos = calloc((size_t)n + 1, sizeof *st->step_pos);
    st->step_attr = calloc((size_t)n + 1, sizeof *st->step_attr);
    if (!st->matrix || !st->step_pos || !st->step_attr || n == 0 || T <= 0) {
        json_decref(steps);
        clear_series(st);
        return;
    }
    st->n_steps = n;
    st->rows = T;
    size_t i;
    json_array_foreach(steps, i, r) {
        st->step_pos[i] = (int)lp_row_int(r, "pos", 0) + 1;
        st->step_attr[i] = lp_row_int(r, "attribution_id", 0);
    }
    json_decref(steps);
    json_t *cells = lp_browser_query(b, "SELECT step, pos, score FROM attribution_matrix WHERE series_id = ?1 AND side = 'target'",
                                     json_pack("[I]", (json_int_t)st->series));
    json_array_foreach(cells, i, r) {
        long long k = lp_row_int(r, "step", -1), p = lp_row_int(r, "pos", -1);
        double v = lp_row_real(r, "score");
        if (k >= 0 && k < n && p >= 0 && p < T && !isnan(v)) st->matrix[k * T + p] = (float)v;
    }
    json_decref(cells);
}

/* The newest evaluation of attribution id, with its deletion and insertion curves. */
static void load_judged(attr_state *st, lp_browser *b, long long id) {
    clear_judged(st);
    json_t *rows = lp_browser_query(b, "SELECT * FROM evaluations_view WHERE attribution_id = ?1 ORDER BY id DESC LIMIT 1",
                                    json_pack("[I]", (json_int_t)id));
    json_t *e = json_array_get(rows, 0);
    if (e) st->judged = json_incref(e);
    json_decref(rows);
    if (!st->judged) return;
    static const char *const CURVES[2] = {"deletion", "insertion"};
    for (int c = 0; c < 2; c++) {
        json_t *pts = lp_browser_query(b, "SELECT i, value FROM evaluation_curves WHERE evaluation_id = ?1 AND curve = ?2 ORDER BY i",
                                       json_pack("[Is]", (json_int_t)lp_row_int(st->judged, "id", 0), CURVES[c]));
        int n = (int)json_array_size(pts);
        st->curve[c] = calloc((size_t)n + 1, sizeof *st->curve[c]);
        size_t i;
        json_t *pt;
        json_array_foreach(pts, i, pt) if (st->curve[c]) st->curve[c][i] = lp_row_real(pt, "value");
        st->n_curve = c == 0 ? n : (n < st->n_curve ? n : st->n_curve);
        json_decref(pts);
    }
    if (!st->curve[0] || !st->curve[1]) clear_judged(st);
}

static void load_scores(attr_state *st, lp_browser *b) {
    free(st->scores);
    free(st->src);
    st->scores = st->src = NULL;
    st->n = st->n_src = 0;
    st->maxabs = 0;
    json_t *a = json_array_get(st->list, (size_t)st->sel);
    if (!a) return;
    long long id = lp_row_int(a, "id", 0);
    load_side(b, id, "target", &st->scores, &st->n, &st->maxabs); /* the run's own tokens (schema 4) */
    if (b->S > 0) load_side(b, id, "source", &st->src, &st->n_src, &st->maxabs);
    if (b->S == 0) load_series(st, b, id); /* an encoder-decoder's series shows step by step */
    load_judged(st, b, id);
}

/* t in a series: the next step's attribution (wrapping). */
static bool next_step(attr_state *st, lp_browser *b) {
    long long want = st->step_attr[(st->step + 1) % st->n_steps];
    size_t i;
    json_t *row;
    json_array_foreach(st->list, i, row)
        if (lp_row_int(row, "id", 0) == want) {
            st->sel = (int)i;
            load_scores(st, b);
            return true;
        }
    return false;
}

/* What the store holds for a run, when it has no attribution: a few lines. */
static json_t *stored_lines(lp_browser *b, json_t *id) {
    json_t *lines = json_array();
    json_t *rows = lp_browser_query(b, "SELECT text, n_tokens, session, created_at FROM runs_view WHERE id = ?1",
                                    json_pack("[O]", id));
    json_t *r = json_array_get(rows, 0);
    if (r) {
        char buf[600];
        snprintf(buf, sizeof buf, "run %lld: %lld tokens, session %s, %s", (long long)json_integer_value(id),
                 lp_row_int(r, "n_tokens", 0), lp_row_str(r, "session"), lp_row_str(r, "created_at"));
        json_array_append_new(lines, json_string(buf));
    }
    json_decref(rows);
    rows = lp_browser_query(b, "SELECT name, layer, head, shape FROM tensors WHERE run_id = ?1 ORDER BY id", json_pack("[O]", id));
    size_t i;
    json_array_foreach(rows, i, r) {
        char buf[300];
        snprintf(buf, sizeof buf, "tensor %s", lp_row_str(r, "name"));
        if (lp_row_int(r, "layer", -1) >= 0) lp_appendf(buf, sizeof buf, " layer %lld", lp_row_int(r, "layer", 0));
        if (lp_row_int(r, "head", -1) >= 0) lp_appendf(buf, sizeof buf, " head %lld", lp_row_int(r, "head", 0));
        lp_appendf(buf, sizeof buf, " %s", lp_row_str(r, "shape"));
        json_array_append_new(lines, json_string(buf));
    }
    json_decref(rows);
    rows = lp_browser_query(b, "SELECT kind, count(*) AS n FROM findings WHERE run_id = ?1 GROUP BY kind", json_pack("[O]", id));
    json_array_foreach(rows, i, r) {
        char buf[100];
        snprintf(buf, sizeof buf, "%lld %s%s (view 6)", lp_row_int(r, "n", 0), lp_row_str(r, "kind"),
                 lp_row_int(r, "n", 0) == 1 ? "" : "s");
        json_array_append_new(lines, json_string(buf));
    }
    json_decref(rows);
    rows = lp_browser_query(b, "SELECT kind, count(*) AS n FROM analyses WHERE run_id = ?1 GROUP BY kind", json_pack("[O]", id));
    json_array_foreach(rows, i, r) {
        char buf[100];
        snprintf(buf, sizeof buf, "%lld %s analys%s", lp_row_int(r, "n", 0), lp_row_str(r, "kind"),
                 lp_row_int(r, "n", 0) == 1 ? "is" : "es");
        json_array_append_new(lines, json_string(buf));
    }
    json_decref(rows);
    return lines;
}

static int attr_update(void *vst, lp_browser *b) {
    attr_state *st = vst;
    clear(st);
    st->no_table = false;
    if (!b->s->store || !b->s->run_id) return LP_OK;
    json_t *id = json_integer(b->s->run_id);
    st->list = lp_browser_query(b,
                                "SELECT id, method, objective, pos, target_id, contrast_id, params, delta, created_at"
                                " FROM attributions WHERE run_id = ?1 ORDER BY id DESC",
                                json_pack("[O]", id));
    st->no_table = st->list == NULL;
    long long newest = lp_row_int(json_array_get(st->list, 0), "id", 0);
    if (newest != st->newest) st->sel = 0;
    st->newest = newest;
    if (st->sel >= (int)json_array_size(st->list)) st->sel = 0;
    if (json_array_size(st->list)) load_scores(st, b);
    else st->stored = stored_lines(b, id);
    json_decref(id);
    return LP_OK;
}

/* A target's name: a classifier's label, or a token. */
static const char *target_name(const lp_browser *b, int id, char *buf, size_t cap) {
    const lp_model *m = b->s->model;
    if (lp_model_config(m)->head == LP_HEAD_CLASSIFIER) {
        const char *label = id >= 0 && id < lp_model_n_labels(m) ? lp_model_label(m, id) : NULL;
        if (label) snprintf(buf, cap, "%s", label);
        else snprintf(buf, cap, "#%d", id);
        return buf;
    }
    return lp_browser_id_text(b, id, buf, cap);
}

/* What an attribution explains, for its header and the status line: "  label negative",
 * "  mask 3 → it", "  target ,". */
static void describe_target(const lp_browser *b, json_t *at, char *buf, size_t cap) {
    long long tid = lp_row_int(at, "target_id", -1), pos = lp_row_int(at, "pos", -1);
    const lp_config *c = lp_model_config(b->s->model);
    char t[200];
    buf[0] = '\0';
    if (c->head == LP_HEAD_CLASSIFIER) {
        if (tid >= 0) snprintf(buf, cap, "  label %s", target_name(b, (int)tid, t, sizeof t));
    } else if (c->head == LP_HEAD_MLM) {
        snprintf(buf, cap, "  mask %lld", pos);
        if (pos >= 0 && pos < b->T && b->tok_role[pos] != LP_SPECIAL_MASK)
            lp_appendf(buf, cap, " (%s, not a mask)", lp_browser_token(b, (int)pos, NULL));
        if (tid >= 0) lp_appendf(buf, cap, " \xE2\x86\x92 %s", target_name(b, (int)tid, t, sizeof t));
    } else if (tid >= 0) {
        snprintf(buf, cap, "  target %s (%lld)", target_name(b, (int)tid, t, sizeof t), tid);
    }
    if (b->S > 0 && pos >= 0) /* the decoder position explained, and what it reads there */
        lp_appendf(buf, cap, "  at dec %lld (%s)", pos, lp_browser_token(b, (int)pos, NULL));
}

/* t: the next label after the shown attribution's (classifier) or the next mask after its
 * position (masked LM), explained by the same method: the newest stored attribution that
 * explains it, or `attr` computes one (its default objective; saliency when none is shown). */
static bool next_target(attr_state *st, lp_browser *b) {
    if (st->series && st->n_steps > 0 && next_step(st, b)) return true;
    const lp_config *c = lp_model_config(b->s->model);
    json_t *at = json_array_get(st->list, (size_t)st->sel);
    const char *method = at ? lp_row_str(at, "method") : "saliency";
    char cmd[160];
    int want = -1;
    if (!at && (c->head == LP_HEAD_CLASSIFIER || c->head == LP_HEAD_MLM)) { /* the top label, the first mask */
        lp_browser_request(b, "attr saliency", (lp_jump){true, LP_VIEW_ATTRIBUTIONS, -1, -1, -1, -1});
        return true;
    }
    if (c->head == LP_HEAD_CLASSIFIER) {
        int n = lp_model_n_labels(b->s->model);
        if (n < 2) return false;
        want = at ? (int)((lp_row_int(at, "target_id", -1) + 1) % n) : 0;
        snprintf(cmd, sizeof cmd, "attr %s --target-id %d", method, want);
    } else if (b->S > 0 && b->T > 0) { /* an encoder-decoder: the next decoder position */
        want = at ? (int)((lp_row_int(at, "pos", -1) + 1) % b->T) : b->T - 1;
        snprintf(cmd, sizeof cmd, "attr %s --pos %d", method, want);
    } else if (c->head == LP_HEAD_MLM) {
        int from = at ? (int)lp_row_int(at, "pos", -1) : -1;
        for (int k = 1; k <= b->T && want < 0; k++) {
            int p = ((from < 0 ? -1 : from) + k + b->T) % b->T;
            if (b->tok_role[p] == LP_SPECIAL_MASK) want = p;
        }
        if (want < 0) {
            snprintf(b->message, sizeof b->message, "the run has no mask token to explain");
            b->message_error = true;
            return true;
        }
        snprintf(cmd, sizeof cmd, "attr %s --pos %d", method, want);
    } else {
        snprintf(b->message, sizeof b->message, "t steps through a classifier's labels, a masked LM's masks or an "
                 "encoder-decoder's positions; :attr METHOD --target TOKEN explains another token");
        b->message_error = true;
        return true;
    }
    size_t i;
    json_t *row;
    json_array_foreach(st->list, i, row) {
        bool same = strcmp(lp_row_str(row, "method"), method) == 0;
        if (same && (c->head == LP_HEAD_CLASSIFIER ? lp_row_int(row, "target_id", -1) == want
                                                   : lp_row_int(row, "pos", -1) == want)) {
            st->sel = (int)i;
            load_scores(st, b);
            return true;
        }
    }
    lp_browser_request(b, cmd, (lp_jump){true, LP_VIEW_ATTRIBUTIONS, -1, -1,
                                         c->head == LP_HEAD_MLM || b->S > 0 ? want : -1, -1});
    return true;
}

/* A score on a side of the strip (LP_SIDE_*): NAN outside it. */
static double score_of(const attr_state *st, int side, int p) {
    const float *v = side == LP_SIDE_SOURCE ? st->src : st->scores;
    int n = side == LP_SIDE_SOURCE ? st->n_src : st->n;
    return p >= 0 && p < n ? v[p] : NAN;
}

static int level_of(const attr_state *st, int side, int p) {
    double v = score_of(st, side, p);
    return lp_div_level(st->maxabs > 0 && !isnan(v) ? v / st->maxabs : 0);
}

/* The selection on a side: the strip's, underlined where the token keys do not move it. */
static int selected(const lp_browser *b, int side) { return side == LP_SIDE_SOURCE ? b->src_pos : b->pos; }

/* One side's tokens as running text from row y, each on its score's colour; two rows a
 * line: the tokens, and under them the shade of their score on a monochrome screen. An
 * encoder-decoder's line starts with its name, as the strip's. Returns the next free row. */
static int draw_flow(attr_state *st, lp_browser *b, lp_screen *scr, lp_rect a, int y, int side) {
    int n = side == LP_SIDE_SOURCE ? st->n_src : st->n, T = side == LP_SIDE_SOURCE ? b->S : b->T, x0 = a.x;
    if (b->S > 0) {
        lp_screen_put(scr, a.x, y, 4, side == LP_SIDE_SOURCE ? "src" : "tgt", LP_COLOR_LABEL, LP_ATTR_BOLD);
        x0 += 4;
    }
    int x = x0, sel = selected(b, side);
    bool active = b->S == 0 || side == b->side;
    for (int p = 0; p < n && p < T; p++) {
        int w;
        const char *t = lp_browser_side_token(b, side, p, &w);
        if (w > a.w - (x0 - a.x)) w = a.w - (x0 - a.x);
        if (x + w > a.x + a.w) {
            x = x0;
            y += 2;
        }
        if (y >= a.y + a.h) return y;
        int level = level_of(st, side, p);
        int attr = p == sel ? (active ? LP_ATTR_BOLD | LP_ATTR_UNDERLINE : LP_ATTR_UNDERLINE) : 0;
        if (scr->depth) {
            lp_screen_fill(scr, x, y, w, " ", LP_COLOR_DIV(level), 0);
            lp_screen_put_clip(scr, x, y, w, t, LP_COLOR_DIV(level), attr);
        } else {
            lp_screen_put_clip(scr, x, y, w, t, LP_COLOR_NORMAL, attr);
            if (y + 1 < a.y + a.h) lp_screen_div(scr, x, y + 1, w, level);
        }
        if (p == sel && active && y + 1 < a.y + a.h && scr->depth)
            lp_screen_put(scr, x, y + 1, 1, "\xE2\x96\xB2", LP_COLOR_SELECTED, LP_ATTR_BOLD); /* ▲ */
        x += w + 1;
    }
    return y + 2;
}

/* The table's rows: an encoder-decoder's source rows, then the target's. */
static int table_rows(const attr_state *st) { return st->n_src + st->n; }
static void table_row(const attr_state *st, int r, int *side, int *p) {
    *side = r < st->n_src ? LP_SIDE_SOURCE : LP_SIDE_TARGET;
    *p = r < st->n_src ? r : r - st->n_src;
}

static void draw_table(attr_state *st, lp_browser *b, lp_screen *scr, lp_rect a) {
    bool two = b->S > 0;
    lp_screen_put(scr, a.x, a.y, a.w, two ? " pos  token         score" : " pos token           score", LP_COLOR_LABEL,
                  LP_ATTR_BOLD);
    int n = table_rows(st), side_sel = two ? b->side : LP_SIDE_TARGET;
    int cur = (side_sel == LP_SIDE_SOURCE ? 0 : st->n_src) + selected(b, side_sel);
    int rows = a.h - 1, top = lp_scroll(&st->top, cur < n ? cur : 0, rows, n);
    for (int r = 0; r < rows && top + r < n; r++) {
        int side, p, y = a.y + 1 + r;
        table_row(st, top + r, &side, &p);
        bool sel = top + r == cur;
        lp_color c = sel ? LP_COLOR_SELECTED : LP_COLOR_NORMAL;
        char num[32];
        lp_screen_fill(scr, a.x, y, 21, " ", c, 0);
        /* an encoder-decoder's rows say their side: "s 3", "t 0" */
        if (two) snprintf(num, sizeof num, "%c%3d", side == LP_SIDE_SOURCE ? 's' : 't', p);
        else snprintf(num, sizeof num, "%d", p);
        lp_screen_put_right(scr, a.x, y, 4, num, c, 0);
        lp_screen_put_clip(scr, a.x + 5, y, 15, lp_browser_side_token(b, side, p, NULL), c, sel ? LP_ATTR_BOLD : 0);
        double v = score_of(st, side, p);
        snprintf(num, sizeof num, "%+.4f", v);
        lp_screen_div_text(scr, a.x + 21, y, 10, level_of(st, side, p), num, sel ? LP_ATTR_BOLD : 0);
        if (a.w > 33) lp_screen_bar(scr, a.x + 32, y, a.w - 32, st->maxabs > 0 ? fabs(v) / st->maxabs : 0,
                                    v < 0 ? LP_COLOR_BAR_ATTN : LP_COLOR_BAR_MLP);
    }
}

/* A series as a matrix: a column per explained token (the shown step's bold), a row per input
 * position, each column coloured on its own scale; columns scroll to keep the shown step in. */
static void draw_matrix(attr_state *st, lp_browser *b, lp_screen *scr, lp_rect a) {
    enum { LABEL = 12, CELL = 7 };
    int cols = (a.w - LABEL) / CELL, n = st->n_steps;
    if (cols < 1 || a.h < 3) return;
    int first = st->step - cols / 2;
    if (first + cols > n) first = n - cols;
    if (first < 0) first = 0;
    lp_screen_put(scr, a.x, a.y, LABEL, "explained:", LP_COLOR_LABEL, LP_ATTR_BOLD);
    for (int k = first; k < n && k < first + cols; k++) {
        int x = a.x + LABEL + (k - first) * CELL, p = st->step_pos[k];
        lp_screen_put_clip(scr, x, a.y, CELL - 1, p < b->T ? lp_browser_token(b, p, NULL) : "?",
                           k == st->step ? LP_COLOR_SELECTED : LP_COLOR_LABEL, LP_ATTR_BOLD);
    }
    int last = st->step_pos[n - 1] - 1, rows = a.h - 1; /* the last token explains nothing */
    int top = b->pos - rows / 2;
    if (top + rows > last + 1) top = last + 1 - rows;
    if (top < 0) top = 0;
    for (int r = 0; r < rows && top + r <= last; r++) {
        int p = top + r, y = a.y + 1 + r;
        lp_screen_put_clip(scr, a.x, y, LABEL - 1, lp_browser_token(b, p, NULL), p == b->pos ? LP_COLOR_SELECTED : LP_COLOR_NORMAL,
                           p == b->pos ? LP_ATTR_BOLD : 0);
        for (int k = first; k < n && k < first + cols; k++) {
            int x = a.x + LABEL + (k - first) * CELL;
            if (p >= st->step_pos[k]) continue; /* after the position that predicts it: blank */
            double mx = 0;
            for (int q = 0; q < st->step_pos[k]; q++) mx = fmax(mx, fabs(st->matrix[(size_t)k * st->rows + q]));
            float v = st->matrix[(size_t)k * st->rows + p];
            char num[16];
            snprintf(num, sizeof num, "%+.2f", v);
            lp_screen_div_text(scr, x, y, CELL - 1, lp_div_level(mx > 0 ? v / mx : 0), num,
                               k == st->step ? LP_ATTR_BOLD : 0);
        }
    }
}

/* eval's judgement: the measures, then the deletion (d) and insertion (i) curves of f as
 * positions are removed most-important-first / kept, on one plot: x the positions removed or
 * kept (0..n), y from the lowest to the highest value of either curve. */
static void draw_judged(attr_state *st, lp_screen *scr, lp_rect a) {
    json_t *e = st->judged;
    lp_screen_printf(scr, a.x, a.y, a.w, LP_COLOR_LABEL, LP_ATTR_BOLD, "eval (%s, f %s = %.4g)", lp_row_str(e, "remove"),
                     lp_row_str(e, "f"), lp_row_real(e, "f_x"));
    lp_screen_printf(scr, a.x, a.y + 1, a.w, LP_COLOR_NORMAL, 0,
                     "comp AOPC %.3g  suff AOPC %.3g  deletion AUC %.3g  insertion AUC %.3g  log-odds %.3g  LOO tau %.3g",
                     lp_row_real(e, "comprehensiveness_aopc"), lp_row_real(e, "sufficiency_aopc"),
                     lp_row_real(e, "deletion_auc"), lp_row_real(e, "insertion_auc"), lp_row_real(e, "logodds_drop"),
                     lp_row_real(e, "loo_tau"));
    int h = a.h - 3, n = st->n_curve, w = a.w - 8;
    if (h < 3 || n < 2 || w < 4) return;
    double lo = INFINITY, hi = -INFINITY;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < n; i++)
            if (!isnan(st->curve[c][i])) lo = fmin(lo, st->curve[c][i]), hi = fmax(hi, st->curve[c][i]);
    if (!(hi > lo)) hi = lo + 1;
    int y0 = a.y + 2;
    lp_screen_printf(scr, a.x, y0, 7, LP_COLOR_DIM, 0, "%.2g", hi);
    lp_screen_printf(scr, a.x, y0 + h - 1, 7, LP_COLOR_DIM, 0, "%.2g", lo);
    for (int y = 0; y < h; y++) lp_screen_put(scr, a.x + 7, y0 + y, 1, "|", LP_COLOR_DIM, 0);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < n; i++) {
            double v = st->curve[c][i];
            if (isnan(v)) continue;
            int x = a.x + 8 + (n == 1 ? 0 : (int)lround((double)i * (w - 1) / (n - 1)));
            int y = y0 + (int)lround((hi - v) / (hi - lo) * (h - 1));
            lp_screen_put(scr, x, y, 1, c == 0 ? "d" : "i", c == 0 ? LP_COLOR_BAR_ATTN : LP_COLOR_BAR_MLP, LP_ATTR_BOLD);
        }
    lp_screen_printf(scr, a.x + 8, y0 + h, w, LP_COLOR_DIM, 0, "0 .. %d positions removed (d: deletion) or kept (i: insertion)",
                     n - 1);
}

/* The tokens: an encoder-decoder's source line above its target line. */
static void draw_flows(attr_state *st, lp_browser *b, lp_screen *scr, lp_rect a) {
    int y = a.y;
    if (b->S > 0) y = draw_flow(st, b, scr, a, y, LP_SIDE_SOURCE);
    draw_flow(st, b, scr, a, y, LP_SIDE_TARGET);
}

static void attr_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    attr_state *st = vst;
    if (!lp_browser_need_run(b, scr, a)) return;
    if (!b->s->store || !b->s->run_id) {
        lp_browser_say(scr, a, "Attributions are kept in the store, and this run is not in one.",
                       "start loupe with a database (the default, or -d FILE) to keep them");
        lp_browser_set_status(b, "no store");
        return;
    }
    size_t n = json_array_size(st->list);
    if (!n) {
        int y = a.y + 1;
        lp_screen_printf(scr, a.x + 1, y++, a.w - 1, LP_COLOR_NORMAL, LP_ATTR_BOLD, "No attribution stored for run %lld.",
                         (long long)b->s->run_id);
        lp_screen_put_clip(scr, a.x + 1, y++, a.w - 1,
                           st->no_table ? "This database predates attributions; the attribution commands add them "
                                          "(:attr METHOD, methods saliency gxi ig occlusion rollout attnxnorm)."
                                        : ":attr METHOD computes one (saliency, gxi, ig, occlusion, rollout, attnxnorm); "
                                          "it shows here.",
                           LP_COLOR_DIM, 0);
        y++;
        lp_screen_put(scr, a.x + 1, y++, a.w - 1, "Stored for this run:", LP_COLOR_LABEL, LP_ATTR_BOLD);
        size_t i;
        json_t *line;
        json_array_foreach(st->stored, i, line) {
            if (y >= a.y + a.h) break;
            lp_screen_put_clip(scr, a.x + 3, y++, a.w - 3, json_string_value(line), LP_COLOR_NORMAL, 0);
        }
        lp_browser_set_status(b, "run %lld: no attributions", (long long)b->s->run_id);
        return;
    }
    json_t *at = json_array_get(st->list, (size_t)st->sel);
    char target[256] = "", contrast[256] = "", delta[64];
    long long cid = lp_row_int(at, "contrast_id", -1);
    describe_target(b, at, target, sizeof target);
    if (cid >= 0) {
        char t[200];
        snprintf(contrast, sizeof contrast, " vs %s", target_name(b, (int)cid, t, sizeof t));
    }
    double d = lp_row_real(at, "delta");
    if (isnan(d)) snprintf(delta, sizeof delta, "no completeness delta");
    else snprintf(delta, sizeof delta, "delta %.4g", d);
    const lp_config *c = lp_model_config(b->s->model);
    if (c->head == LP_HEAD_CLASSIFIER || c->head == LP_HEAD_MLM || b->S > 0) /* the target says where */
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, LP_ATTR_BOLD, "[%d/%zu] %s%s%s  %s  %s  (t: next %s)",
                         st->sel + 1, n, lp_row_str(at, "method"), target, contrast, lp_row_str(at, "objective"), delta,
                         c->head == LP_HEAD_CLASSIFIER ? "label" : b->S > 0 ? "position" : "mask");
    else
        lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, LP_ATTR_BOLD, "[%d/%zu] %s%s%s  at pos %lld  %s  %s",
                         st->sel + 1, n, lp_row_str(at, "method"), target, contrast, lp_row_int(at, "pos", -1),
                         lp_row_str(at, "objective"), delta);
    if (st->series && st->n_steps > 0)
        lp_screen_printf(scr, a.x + 1, a.y + 1, a.w - 1, LP_COLOR_DIM, 0,
                         "series %lld step %d/%d: p %.3f, entropy %.3f   t: next step   params %s", st->series,
                         st->step + 1, st->n_steps, st->prob, st->entropy, lp_row_str(at, "params"));
    else
        lp_screen_printf(scr, a.x + 1, a.y + 1, a.w - 1, LP_COLOR_DIM, 0, "params %s  %s   \xE2\x86\x91\xE2\x86\x93 other attributions",
                         lp_row_str(at, "params"), lp_row_str(at, "created_at"));
    lp_rect body = {a.x + 1, a.y + 3, a.w - 2, a.h - 3};
    if (st->judged && !st->series && body.h > 12) { /* the tokens and their table above, eval's plot below */
        int top = body.h - 11;
        lp_rect flow = {body.x, body.y, body.w - TABLE_W - 2, top}, table = {body.x + body.w - TABLE_W, body.y, TABLE_W, top};
        if (body.w < 60 + TABLE_W) flow.w = body.w, table.h = 0;
        lp_rect plot = {body.x, body.y + top + 1, body.w, 10};
        draw_flows(st, b, scr, flow);
        if (table.h > 0) draw_table(st, b, scr, table);
        draw_judged(st, scr, plot);
    } else if (st->series && st->n_steps > 0 && body.h > 8) { /* the tokens above, the series' matrix below */
        lp_rect flow = {body.x, body.y, body.w, 4};
        lp_rect matrix = {body.x, body.y + 5, body.w, body.h - 5};
        draw_flows(st, b, scr, flow);
        draw_matrix(st, b, scr, matrix);
    } else if (body.w >= 60 + TABLE_W) {
        lp_rect flow = {body.x, body.y, body.w - TABLE_W - 2, body.h};
        lp_rect table = {body.x + body.w - TABLE_W, body.y, TABLE_W, body.h};
        draw_flows(st, b, scr, flow);
        draw_table(st, b, scr, table);
    } else {
        lp_rect flow = {body.x, body.y, body.w, body.h / 2};
        lp_rect table = {body.x, body.y + body.h / 2 + 1, body.w, body.h - body.h / 2 - 1};
        draw_flows(st, b, scr, flow);
        draw_table(st, b, scr, table);
    }
    int side = b->S > 0 ? b->side : LP_SIDE_TARGET, p = selected(b, side);
    lp_browser_set_status(b, "%s%s: %stoken %d %s  score %+.5f", lp_row_str(at, "method"), target,
                          b->S == 0 ? "" : side == LP_SIDE_SOURCE ? "source " : "target ", p,
                          lp_browser_side_token(b, side, p, NULL), score_of(st, side, p));
}

static bool attr_act(void *vst, lp_browser *b, lp_action a) {
    attr_state *st = vst;
    int n = (int)json_array_size(st->list);
    switch (a) {
    case LP_DO_UP: if (st->sel > 0) st->sel--; break;
    case LP_DO_DOWN: if (st->sel + 1 < n) st->sel++; break;
    case LP_DO_TARGET_NEXT: return b->s->run && b->s->store && b->s->run_id ? next_target(st, b) : false;
    default: return false;
    }
    load_scores(st, b);
    return true;
}

static void attr_subject(void *st, const lp_browser *b, int *layer, int *head, int *pos) {
    (void)st;
    *layer = -1;
    *head = -1;
    *pos = b->side == LP_SIDE_SOURCE && b->S > 0 ? b->src_pos : b->pos; /* on the line the selection is on */
}

const lp_view_ops lp_view_attributions = {
    .name = "attr",
    .title = "Attributions",
    .open = attr_open,
    .close = attr_close,
    .update = attr_update,
    .draw = attr_draw,
    .act = attr_act,
    .subject = attr_subject,
};
