/* The browser, off-screen: every view drawn into the screen model (no terminal, no curses)
 * on stories260K and on a tiny GPT-2-shaped model, and what lands in the cells checked:
 * token labels on the axes, values, the highlighted selection, keys moving layer, head and
 * token, the help written from the keymap, the small-terminal message, wide CJK tokens
 * keeping the grid aligned, shading characters without colour, the `:` line and its output
 * pane, notes and the findings view, the model view's thumbnails (every layer x head, a
 * previous-token head's offset diagonal, max-pooling, whole bidirectional squares), and the
 * line editor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "helpers.h"
#include "loupe/error.h"
#include "loupe/generate.h"
#include "loupe/heads.h"
#include "loupe/lens.h"
#include "loupe/tokenizer.h"
#include "../ui/keymap.h"
#include "../ui/screen.h"
#include "../ui/tui_line.h"
#include "../ui/view.h"

#define TEXT "Once upon a time, Lily found a ball. Lily liked the ball."

#define OK(call)                                                                                                       \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_ != LP_OK) fail_msg("%s -> %d: %s", #call, rc_, lp_errmsg());                                            \
    } while (0)

typedef struct {
    lp_session s;
    FILE *sink;
    lp_browser *b;
    lp_screen *scr;
    char *dir;
} fixture;

static int fixture_open(void **state, const char *model, const char *run, int depth) {
    setenv("LOUPE_HISTORY", "", 1);
    fixture *f = calloc(1, sizeof *f);
    f->sink = fopen("/dev/null", "w");
    lp_session_init(&f->s, f->sink);
    if (lp_store_open(&f->s.store, ":memory:")) return fprintf(stderr, "store: %s\n", lp_errmsg()), -1;
    if (model && lp_session_load(&f->s, model)) return fprintf(stderr, "load: %s\n", lp_errmsg()), -1;
    if (run && lp_exec(&f->s, run)) return fprintf(stderr, "%s: %s\n", run, lp_errmsg()), -1;
    f->b = lp_browser_new(&f->s, NULL);
    f->scr = lp_screen_new(120, 40, depth);
    *state = f;
    return f->b && f->scr ? 0 : -1;
}

static int stories(void **state) { return fixture_open(state, STORIES, "run " TEXT, 256); }
static int stories_mono(void **state) { return fixture_open(state, STORIES, "run " TEXT, 0); }
static int no_model(void **state) { return fixture_open(state, NULL, NULL, 256); }
static int stories_no_run(void **state) { return fixture_open(state, STORIES, NULL, 256); }
static int bert_mlm(void **state) {
    return fixture_open(state, "tests/fixtures/encoders/bert_mlm", "run the [MASK] was good", 256);
}

static int bert_mlm_pair(void **state) {
    return fixture_open(state, "tests/fixtures/encoders/bert_mlm", "run the [MASK] was good --pair a [MASK] film", 256);
}
static int roberta_pair(void **state) {
    return fixture_open(state, "tests/fixtures/encoders/roberta_mlm", "run good --pair bad", 256);
}
static int bert_cls_pair(void **state) {
    return fixture_open(state, "tests/fixtures/encoders/bert_cls", "run this movie was not good. --pair i liked the film.",
                        256);
}

static int t5_run(void **state) {
    return fixture_open(state, "tests/fixtures/t5/t5_relu_tok", "run the cat sat on the mat --target le chat", 256);
}

static int t5_run_mono(void **state) {
    return fixture_open(state, "tests/fixtures/t5/t5_relu_tok", "run the cat sat on the mat --target le chat", 0);
}
/* The bundled model (in the tree: its heads are what the test reads, whatever
 * $LOUPE_DEFAULT_MODEL says) on a sentence of its training distribution. */
#define IOI "When Mary and John went to the store, John gave a drink to"
static int default_model(void **state) { return fixture_open(state, "models/default", "run " IOI, 256); }

/* A GPT-2 made here by mkmodel (shape: its options; GPT-2's tokenizer) with run done on it;
 * the fixture removes it at the end. */
static int made_model(void **state, const char *shape, const char *run) {
    char *dir = make_temp_dir(), model[4200], args[512];
    snprintf(model, sizeof model, "%s/m", dir);
    snprintf(args, sizeof args, "--arch gpt2 %s --vocab 50257 --ctx 64 --gpt2-tokenizer " SHARED "/tokenizers/gpt2 >/dev/null",
             shape);
    if (mkmodel(model, args)) {
        rm_tree(dir);
        return -1;
    }
    int rc = fixture_open(state, model, run, 256);
    if (!rc) ((fixture *)*state)->dir = dir;
    else rm_tree(dir);
    return rc;
}

/* A tiny GPT-2 on text whose tokens are wide characters ("中", "スト"), ASCII and bytes of
 * split characters. */
static int tiny_cjk(void **state) {
    return made_model(state, "--layers 2 --d-model 32 --heads 4 --seed 3", "run 中 スト a 日本 中 テスト 中");
}

/* More layers and heads than 80 x 24 has room for: 12 layers, 24 heads. */
static int wide_model(void **state) {
    return made_model(state, "--layers 12 --d-model 48 --heads 24 --seed 4", "run The quick brown fox jumps over the lazy dog.");
}

static int fixture_close(void **state) {
    fixture *f = *state;
    if (!f) return 0;
    lp_browser_free(f->b);
    lp_screen_free(f->scr);
    lp_store_close(f->s.store);
    f->s.store = NULL;
    lp_session_free(&f->s);
    fclose(f->sink);
    rm_tree(f->dir);
    free(f);
    return 0;
}

/* ---- driving it ---- */

static void render(fixture *f) {
    if (lp_browser_stale(f->b)) lp_browser_update(f->b);
    lp_browser_draw(f->b, f->scr);
}

static void key(fixture *f, int k) {
    if (lp_browser_key(f->b, k) == LP_BROWSER_EXEC && f->b->pending) lp_browser_exec(f->b, f->b->pending);
    render(f);
}

/* Types UTF-8 text one character at a time, as a terminal would send it. */
static void type(fixture *f, const char *text) {
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        int cp = *p, n = 1;
        if (cp >= 0xF0) cp &= 0x07, n = 4;
        else if (cp >= 0xE0) cp &= 0x0F, n = 3;
        else if (cp >= 0xC0) cp &= 0x1F, n = 2;
        for (int i = 1; i < n; i++) cp = cp << 6 | (p[i] & 0x3F);
        p += n;
        lp_browser_key(f->b, cp);
    }
    render(f);
}

static const char *row(const fixture *f, int y) {
    static char buf[4096];
    return lp_screen_row_text(f->scr, 0, y, f->scr->w, buf, sizeof buf);
}

static void dump(const fixture *f) {
    for (int y = 0; y < f->scr->h; y++) fprintf(stderr, "  |%s|\n", row(f, y));
}

static bool shows(const fixture *f, const char *text) { return lp_screen_find(f->scr, text, NULL, NULL) == 0; }

#define SHOWS(f, text)                                                                                                 \
    do {                                                                                                               \
        if (!shows(f, text)) {                                                                                         \
            dump(f);                                                                                                   \
            fail_msg("'%s' is not on the screen", text);                                                              \
        }                                                                                                              \
    } while (0)

static const lp_cell *cell_of(const fixture *f, const char *text) {
    int x, y;
    if (lp_screen_find(f->scr, text, &x, &y)) {
        dump(f);
        fail_msg("'%s' is not on the screen", text);
    }
    return lp_screen_at(f->scr, x, y);
}

/* Where text first starts on or below row y0. */
static const lp_cell *find_below(const fixture *f, const char *text, int y0, int *fx, int *fy) {
    char buf[4096];
    for (int y = y0; y < f->scr->h; y++)
        for (int x = 0; x < f->scr->w; x++) {
            if (lp_screen_at(f->scr, x, y)->width == 0) continue;
            lp_screen_row_text(f->scr, x, y, f->scr->w - x, buf, sizeof buf);
            if (strncmp(buf, text, strlen(text)) == 0) {
                if (fx) *fx = x;
                if (fy) *fy = y;
                return lp_screen_at(f->scr, x, y);
            }
        }
    dump(f);
    fail_msg("'%s' is not on the screen below row %d", text, y0);
    return NULL;
}

/* The row whose label (columns 0-3) is position i, or -1. */
static int label_row(const fixture *f, int i) {
    char want[16], buf[64];
    snprintf(want, sizeof want, "%4d ", i);
    for (int y = 2; y < f->scr->h; y++)
        if (strcmp(lp_screen_row_text(f->scr, 0, y, 5, buf, sizeof buf), want) == 0) return y;
    return -1;
}

static const char *status(const fixture *f) { return row(f, f->scr->h - 2); }

/* ---- the screen model ---- */

static void wide_characters_take_two_cells_and_stay_aligned(void **state) {
    (void)state;
    lp_screen *s = lp_screen_new(8, 2, 256);
    assert_int_equal(lp_screen_put(s, 0, 0, -1, "a日本b", LP_COLOR_NORMAL, 0), 6);
    assert_string_equal(lp_screen_at(s, 1, 0)->ch, "日");
    assert_int_equal(lp_screen_at(s, 1, 0)->width, 2);
    assert_int_equal(lp_screen_at(s, 2, 0)->width, 0);
    assert_string_equal(lp_screen_at(s, 5, 0)->ch, "b");
    /* A wide character that does not fit is a blank, not half a character. */
    assert_int_equal(lp_screen_put(s, 6, 1, -1, "x日", LP_COLOR_NORMAL, 0), 2);
    assert_string_equal(lp_screen_at(s, 7, 1)->ch, " ");
    /* Writing over half of one mends the other half. */
    lp_screen_put(s, 2, 0, 1, "z", LP_COLOR_NORMAL, 0);
    assert_string_equal(lp_screen_at(s, 1, 0)->ch, " ");
    assert_int_equal(lp_screen_at(s, 1, 0)->width, 1);
    char buf[64];
    assert_string_equal(lp_screen_row_text(s, 0, 0, 8, buf, sizeof buf), "a z本b  ");
    /* Clipping keeps the width and marks the cut. */
    lp_screen_clear(s);
    assert_int_equal(lp_screen_put_clip(s, 0, 0, 4, "日本語", LP_COLOR_NORMAL, 0), 4);
    assert_string_equal(lp_screen_row_text(s, 0, 0, 4, buf, sizeof buf), "日 …");
    lp_screen_free(s);
}

static void control_characters_are_escaped_and_tokens_made_visible(void **state) {
    (void)state;
    lp_screen *s = lp_screen_new(30, 1, 256);
    char buf[128];
    lp_screen_put(s, 0, 0, -1, "a\x01" "b\x1b[2J\xff", LP_COLOR_NORMAL, 0);
    assert_string_equal(lp_screen_row_text(s, 0, 0, 20, buf, sizeof buf), "a\\x01b\\x1B[2J\\xFF   ");
    assert_string_equal(lp_screen_token_text(" the\n\t", 6, buf, sizeof buf), "·the↵⇥");
    assert_string_equal(lp_screen_token_text("\xe6\x97", 2, buf, sizeof buf), "\\xE6\\x97");
    lp_screen_free(s);
}

static void scales_have_levels_and_shades(void **state) {
    (void)state;
    assert_int_equal(lp_heat_level(0), 0);
    assert_int_equal(lp_heat_level(NAN), 0);
    assert_int_equal(lp_heat_level(1), LP_HEAT_LEVELS - 1);
    assert_int_equal(lp_div_level(0), LP_DIV_LEVELS / 2);
    assert_int_equal(lp_div_level(-1), 0);
    assert_int_equal(lp_div_level(2), LP_DIV_LEVELS - 1);
    assert_string_equal(lp_shade(0), " ");
    assert_string_equal(lp_shade(LP_HEAT_LEVELS - 1), "█");
    lp_screen *s = lp_screen_new(10, 2, 0);
    lp_screen_heat(s, 0, 0, 3, LP_HEAT_LEVELS - 1);
    assert_string_equal(lp_screen_at(s, 1, 0)->ch, "█");
    lp_screen_div(s, 0, 1, 3, 0);
    assert_string_equal(lp_screen_at(s, 0, 1)->ch, "-");
    assert_string_equal(lp_screen_at(s, 1, 1)->ch, "█");
    lp_screen_free(s);
    s = lp_screen_new(10, 1, 256);
    lp_screen_heat(s, 0, 0, 3, 5);
    assert_string_equal(lp_screen_at(s, 1, 0)->ch, " ");
    assert_int_equal(lp_screen_at(s, 1, 0)->color, LP_COLOR_HEAT(5));
    lp_screen_free(s);
}

/* ---- the frame ---- */

static void title_names_the_view_and_strip_highlights_the_token(void **state) {
    fixture *f = *state;
    render(f);
    assert_non_null(strstr(row(f, 0), "1 Attention"));
    assert_non_null(strstr(row(f, 0), "stories260K.bin"));
    int T = lp_run_len(f->s.run);
    assert_int_equal(f->b->pos, T - 1); /* a new run selects its last token */
    /* The strip: the selected token in the selection colour, the others not. */
    int x, y;
    assert_int_equal(lp_screen_find(f->scr, "·Once", &x, &y), 0);
    assert_int_equal(y, 1);
    assert_int_equal(lp_screen_at(f->scr, x, y)->color, LP_COLOR_NORMAL);
    key(f, LP_KEY_HOME);
    assert_int_equal(f->b->pos, 0);
    key(f, 'l');
    assert_int_equal(f->b->pos, 1);
    assert_int_equal(lp_screen_find(f->scr, "·Once", &x, &y), 0);
    assert_int_equal(y, 1);
    assert_int_equal(lp_screen_at(f->scr, x, y)->color, LP_COLOR_SELECTED);
    key(f, LP_KEY_LEFT);
    assert_int_equal(f->b->pos, 0);
    key(f, LP_KEY_LEFT); /* stays at the first token */
    assert_int_equal(f->b->pos, 0);
    for (int v = 0; v < LP_VIEW_COUNT; v++) {
        key(f, LP_KEY_TAB);
        char want[64];
        snprintf(want, sizeof want, "%c %s", lp_view_key((v + 1) % LP_VIEW_COUNT), lp_view_get((v + 1) % LP_VIEW_COUNT)->title);
        assert_non_null(strstr(row(f, 0), want));
    }
}

/* At 80 columns the title bar still names every view beside its key, and the layer and
 * head; the model's name and the run give way first, then the current view's title for its
 * name (ten views' names leave no room for the longer titles), still marked as current. */
static void title_bar_names_every_view_at_80_columns(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 80, 24);
    for (int v = 0; v < LP_VIEW_COUNT; v++) {
        key(f, lp_view_key(v));
        for (int w = 0; w < LP_VIEW_COUNT; w++) {
            char want[64], title[64];
            snprintf(want, sizeof want, " %c %s", lp_view_key(w), lp_view_get(w)->name);
            snprintf(title, sizeof title, " %c %s ", lp_view_key(w), lp_view_get(w)->title);
            const char *at = strstr(row(f, 0), want);
            if (!at && w == v) at = strstr(row(f, 0), title);
            if (!at) fail_msg("view %c: no '%s' in the title bar '%s'", lp_view_key(v), want, row(f, 0));
            if (w == v) assert_int_equal(lp_screen_at(f->scr, (int)(at - row(f, 0)) + 1, 0)->color, LP_COLOR_TAB);
        }
        assert_non_null(strstr(row(f, 0), " L0 H0"));
    }
}

/* The same with two digits to the layer and the head (12 layers, 24 heads). */
static void title_bar_names_every_view_with_two_digit_layers_and_heads(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 80, 24);
    for (int i = 0; i < 11; i++) key(f, ']');
    for (int i = 0; i < 23; i++) key(f, '}');
    assert_int_equal(f->b->layer, 11);
    assert_int_equal(f->b->head, 23);
    for (int v = 0; v < LP_VIEW_COUNT; v++) {
        key(f, lp_view_key(v));
        for (int w = 0; w < LP_VIEW_COUNT; w++) {
            char want[64];
            snprintf(want, sizeof want, " %c %s", lp_view_key(w), w == v ? "" : lp_view_get(w)->name);
            if (!strstr(row(f, 0), want)) fail_msg("view %c: no '%s' in the title bar '%s'", lp_view_key(v), want, row(f, 0));
        }
        assert_non_null(strstr(row(f, 0), " L11 H23"));
    }
}

/* An empty patching view says how to fill it, readable at 80 columns. */
static void empty_patching_view_says_how_to_fill_it(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 80, 24);
    key(f, '7');
    SHOWS(f, "No patching results for this run.");
    SHOWS(f, ":patch --corrupt TEXT");
    /* Without a database nothing would ever fill it: it says so. */
    lp_store *store = f->s.store;
    f->s.store = NULL;
    render(f);
    SHOWS(f, "No database is open");
    f->s.store = store;
}

static void small_terminal_gets_a_message(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 30, 8);
    render(f);
    SHOWS(f, "Terminal too small");
    SHOWS(f, "30x8 is too small");
    lp_screen_resize(f->scr, LP_BROWSER_MIN_W, LP_BROWSER_MIN_H);
    for (int v = 0; v < LP_VIEW_COUNT; v++) {
        key(f, lp_view_key(v));
        assert_false(shows(f, "too small"));
        assert_non_null(strstr(row(f, 0), lp_view_get(v)->title));
    }
}

static void no_model_says_what_to_do(void **state) {
    fixture *f = *state;
    for (int v = 0; v < LP_VIEW_COUNT; v++) {
        key(f, lp_view_key(v));
        if (v != LP_VIEW_FINDINGS) SHOWS(f, "No model loaded.");
    }
}

/* ---- the views ---- */

static void attention_view_shows_labels_values_and_cursor(void **state) {
    fixture *f = *state;
    render(f);
    int T = lp_run_len(f->s.run), q = T - 1;
    /* Row labels: position and token, down the left. */
    int x, y;
    assert_int_equal(lp_screen_find(f->scr, "   6 ·Lily", &x, &y), 0);
    assert_int_equal(x, 0);
    /* Column labels: positions and tokens written downwards ("·Lily" at key 6). */
    int hx, hy;
    find_below(f, "  6  7", 2, &hx, &hy);
    const lp_cell *top = lp_screen_at(f->scr, hx + 1, hy + 1);
    assert_string_equal(top->ch, "·");
    assert_string_equal(lp_screen_at(f->scr, hx + 1, hy + 2)->ch, "L");
    assert_string_equal(lp_screen_at(f->scr, hx + 1, hy + 3)->ch, "i");
    /* The cursor: [ ] on the query row at the strongest key, its value in the status line. */
    lp_view v;
    OK(lp_run_view(f->s.run, LP_ACT_PATTERN, 0, 0, &v));
    int best = 0;
    for (int j = 1; j <= q; j++)
        if (v.data[(size_t)q * v.stride[0] + j] > v.data[(size_t)q * v.stride[0] + best]) best = j;
    char want[128];
    snprintf(want, sizeof want, "query %d . → key %d", q, best);
    assert_non_null(strstr(status(f), want));
    snprintf(want, sizeof want, "%.4f", (double)v.data[(size_t)q * v.stride[0] + best]);
    assert_non_null(strstr(status(f), want));
    find_below(f, "[ ]", 3, &x, &y);
    assert_int_equal(y, label_row(f, q));
    assert_int_equal(lp_screen_at(f->scr, x + 1, y)->color, LP_COLOR_HEAT(lp_heat_level(v.data[(size_t)q * v.stride[0] + best])));
    /* Heat cells carry the value's level; cells past the query are masked. */
    int lx, ly;
    assert_int_equal(lp_screen_find(f->scr, "  1 ·Once", &lx, &ly), 0);
    const lp_cell *c0 = lp_screen_at(f->scr, x - 3 * best + 1, ly);
    assert_int_equal(c0->color, LP_COLOR_HEAT(lp_heat_level(v.data[1 * v.stride[0] + 0])));
    assert_string_equal(lp_screen_at(f->scr, x - 3 * best + 3 * 5 + 1, ly)->ch, "·");
    /* Layer, head and key move. */
    key(f, ']');
    key(f, '}');
    key(f, '}');
    assert_int_equal(f->b->layer, 1);
    assert_int_equal(f->b->head, 2);
    assert_non_null(strstr(row(f, 0), "L1 H2"));
    assert_non_null(strstr(status(f), "L1 H2"));
    key(f, 'H');
    key(f, LP_KEY_HOME);
    OK(lp_run_view(f->s.run, LP_ACT_PATTERN, 1, 2, &v));
    assert_non_null(strstr(status(f), "query 0 ↵<s>↵ → key 0"));
    snprintf(want, sizeof want, "%.4f", (double)v.data[0]);
    assert_non_null(strstr(status(f), want));
    key(f, 'j'); /* the next query row is the next token */
    assert_int_equal(f->b->pos, 1);
    key(f, 'L');
    assert_non_null(strstr(status(f), "query 1 ·Once → key 1 ·Once"));
    key(f, '[');
    key(f, '{');
    assert_int_equal(f->b->layer, 0);
    assert_int_equal(f->b->head, 1);
}

static void attention_scrolls_to_keep_the_cursor_in_view(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 60, 16);
    key(f, LP_KEY_END);
    int T = lp_run_len(f->s.run);
    char want[32];
    snprintf(want, sizeof want, "%3d .", T - 1);
    SHOWS(f, want);
    assert_false(shows(f, "  1 ·Once"));
    key(f, LP_KEY_HOME);
    SHOWS(f, "  1 ·Once");
}

static void heads_view_colours_the_grid_by_metric(void **state) {
    fixture *f = *state;
    key(f, '2');
    assert_non_null(strstr(row(f, 0), "2 Heads"));
    const lp_config *c = lp_model_config(f->s.model);
    float *m = malloc((size_t)c->n_layer * c->n_head * LP_HEAD_METRIC_COUNT * sizeof *m);
    lp_head_metrics(m, f->s.run);
    SHOWS(f, "colour: prev_token");
    SHOWS(f, "H7");
    SHOWS(f, "L4");
    /* Layer 2, head 3: its value in its cell, coloured by its level. */
    key(f, 'j');
    key(f, 'j');
    key(f, 'L');
    key(f, 'L');
    key(f, 'L');
    float v = m[((size_t)2 * c->n_head + 3) * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN];
    char want[64];
    snprintf(want, sizeof want, "L2 H3  prev_token %.4f", (double)v);
    assert_non_null(strstr(status(f), want));
    int x, y;
    find_below(f, " L2 0.", 3, &x, &y);
    snprintf(want, sizeof want, "%.2f", (double)v);
    char cellbuf[16];
    lp_screen_row_text(f->scr, 5 + 3 * 6, y, 5, cellbuf, sizeof cellbuf);
    if (!strstr(cellbuf, want)) {
        dump(f);
        fail_msg("cell '%s', wanted '%s'", cellbuf, want);
    }
    assert_int_equal(lp_screen_at(f->scr, 5 + 3 * 6 + 1, y)->color, LP_COLOR_HEAT(lp_heat_level(v)));
    /* The head's panel sits beside the grid (its last column ends at 5 + 8 * 6), not at the
     * far edge of the terminal. */
    int px, py;
    find_below(f, "layer 2 head 3", 2, &px, &py);
    assert_int_equal(py, 3);
    if (px > 5 + 8 * 6 + 4) fail_msg("the panel starts at column %d, the grid ends at %d", px, 5 + 8 * 6);
    /* Another metric; Enter opens the head's pattern. */
    key(f, 'c');
    SHOWS(f, "colour: first_token");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_ATTENTION);
    assert_non_null(strstr(status(f), "L2 H3"));
    free(m);
}

/* The text of the grid cell of layer l, head h (120 columns: cells 6 wide from column 5). */
static const char *grid_cell(const fixture *f, int l, int h) {
    static char buf[32];
    char want[16], lab[16];
    snprintf(want, sizeof want, "  L%d", l);
    for (int y = 3; y < f->scr->h; y++)
        if (strcmp(lp_screen_row_text(f->scr, 0, y, 4, lab, sizeof lab), want) == 0)
            return lp_screen_row_text(f->scr, 5 + h * 6, y, 5, buf, sizeof buf);
    dump(f);
    fail_msg("no grid row for layer %d", l);
    return NULL;
}

/* Presses c until the title names the colouring (at most a whole cycle). */
static void colour_by(fixture *f, const char *name) {
    char want[64];
    snprintf(want, sizeof want, "colour: %s ", name);
    for (int i = 0; i < 12 && !shows(f, want); i++) key(f, 'c');
    SHOWS(f, want);
}

static void heads_view_colours_by_the_newest_scan(void **state) {
    fixture *f = *state;
    key(f, '2');
    SHOWS(f, "colour: prev_token");
    assert_false(shows(f, "scan #"));
    /* `:scan` stores a scan of the model; the view picks it up at once. */
    key(f, ':');
    type(f, "scan --seqs 1 --len 8 --threshold 0.3");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    SHOWS(f, "scan #1 of generated sequences");
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store,
                      "SELECT layer, head, induction, labels FROM head_scan_scores WHERE scan_id = 1 ORDER BY layer, head",
                      NULL, false, &rows, NULL));
    const lp_config *c = lp_model_config(f->s.model);
    assert_int_equal(json_array_size(rows), (size_t)c->n_layer * c->n_head);
    json_t *lab = NULL, *unlab = NULL, *r;
    size_t i;
    json_array_foreach(rows, i, r) {
        if (*lp_row_str(r, "labels")) {
            if (!lab) lab = r;
        } else if (!unlab) unlab = r;
    }
    assert_non_null(lab);
    colour_by(f, "scan: induction");
    /* The labelled head: its induction score and the marker in its cell, its labels below. */
    int l = (int)lp_row_int(lab, "layer", 0), h = (int)lp_row_int(lab, "head", 0);
    f->b->layer = l, f->b->head = h;
    render(f);
    char want[160];
    snprintf(want, sizeof want, "%.2f*", (double)(float)lp_row_real(lab, "induction"));
    const char *cell = grid_cell(f, l, h);
    if (!strstr(cell, want)) {
        dump(f);
        fail_msg("cell '%s', wanted '%s'", cell, want);
    }
    snprintf(want, sizeof want, "L%d H%d  scan: induction %.4f  labels: %s", l, h,
             (double)(float)lp_row_real(lab, "induction"), lp_row_str(lab, "labels"));
    if (!strstr(status(f), want)) {
        dump(f);
        fail_msg("status '%s', wanted '%s'", status(f), want);
    }
    SHOWS(f, "scan #1");
    SHOWS(f, "  labels: ");
    if (unlab) {
        l = (int)lp_row_int(unlab, "layer", 0), h = (int)lp_row_int(unlab, "head", 0);
        snprintf(want, sizeof want, "%.2f", (double)(float)lp_row_real(unlab, "induction"));
        cell = grid_cell(f, l, h);
        assert_non_null(strstr(cell, want));
        assert_null(strchr(cell, '*'));
    }
    json_decref(rows);
    /* A newer scan, of a run, found by the model's path and fingerprint when the session
     * has no row for the model: the view shows it after the next command. */
    int n = c->n_layer * c->n_head;
    lp_store_head_scan *sc = calloc((size_t)n, sizeof *sc);
    for (int k = 0; k < n; k++)
        sc[k] = (lp_store_head_scan){k / c->n_head, k % c->n_head, 0.1, 0.2, 0.01 * k, 0.3, k == 10 ? "induction" : "",
                                     NULL, NULL, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    int64_t id;
    OK(lp_store_put_head_scan(f->s.store, f->s.model_id, f->s.run_id, sc, n, &id));
    f->s.model_id = 0;
    key(f, ':');
    type(f, "info");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    snprintf(want, sizeof want, "scan #%lld of run %lld", (long long)id, (long long)f->s.run_id);
    SHOWS(f, want);
    SHOWS(f, "colour: scan: induction");
    assert_string_equal(grid_cell(f, 10 / c->n_head, 10 % c->n_head), "0.10*");
    const char *other = grid_cell(f, 11 / c->n_head, 11 % c->n_head);
    assert_non_null(strstr(other, "0.11"));
    assert_null(strchr(other, '*'));
    /* The cycle goes on through the scan's scores and back to the run's metrics. */
    key(f, 'c');
    SHOWS(f, "colour: scan: first_token");
    key(f, 'c');
    SHOWS(f, "colour: entropy");
    key(f, 'C');
    SHOWS(f, "colour: scan: first_token");
    free(sc);
}

static void heads_view_without_a_scan_cycles_the_six_metrics(void **state) {
    fixture *f = *state;
    key(f, '2');
    SHOWS(f, "colour: prev_token");
    for (int k = 1; k <= LP_HEAD_METRIC_COUNT; k++) {
        key(f, 'c');
        char want[64];
        snprintf(want, sizeof want, "colour: %s ", lp_head_metric_name((lp_head_metric)((LP_HEAD_PREV_TOKEN + k) % LP_HEAD_METRIC_COUNT)));
        SHOWS(f, want);
        assert_false(shows(f, "scan"));
        assert_false(shows(f, "labels:"));
        assert_null(strchr(row(f, 4), '*'));
    }
    key(f, 'C');
    SHOWS(f, "colour: entropy ");
}

/* A scan with no run: the grid shows the scan's scores alone. */
static void heads_view_shows_a_scan_without_a_run(void **state) {
    fixture *f = *state;
    key(f, '2');
    SHOWS(f, "No run yet.");
    key(f, ':');
    type(f, "scan --seqs 1 --len 8");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    SHOWS(f, "colour: scan: prev_token ");
    SHOWS(f, "scan #1 of generated sequences");
    key(f, 'c');
    SHOWS(f, "colour: scan: duplicate_token ");
    for (int k = 0; k < 3; k++) key(f, 'c');
    SHOWS(f, "colour: scan: prev_token ");
}

static void activations_view_shows_norms_and_top_neurons(void **state) {
    fixture *f = *state;
    key(f, '3');
    key(f, ']');
    SHOWS(f, "|resid_post|");
    SHOWS(f, "top MLP neurons, layer 1");
    lp_view v;
    OK(lp_run_view(f->s.run, LP_ACT_RESID_POST, 1, -1, &v));
    int p = f->b->pos;
    double s = 0;
    for (int i = 0; i < v.shape[1]; i++) s += (double)v.data[(size_t)p * v.stride[0] + i] * v.data[(size_t)p * v.stride[0] + i];
    char want[64];
    snprintf(want, sizeof want, "|resid_post| %.4g", sqrt(s));
    assert_non_null(strstr(status(f), want));
    OK(lp_run_view(f->s.run, LP_ACT_MLP_POST, 1, -1, &v));
    int best = 0;
    for (int i = 1; i < v.shape[1]; i++)
        if (fabsf(v.data[(size_t)p * v.stride[0] + i]) > fabsf(v.data[(size_t)p * v.stride[0] + best])) best = i;
    snprintf(want, sizeof want, "%6d %+10.4f", best, (double)v.data[(size_t)p * v.stride[0] + best]);
    SHOWS(f, want);
}

static void attributions_view_lists_the_store_then_shows_scores(void **state) {
    fixture *f = *state;
    key(f, '4');
    SHOWS(f, "No attribution stored for run 1.");
    SHOWS(f, "run 1: 21 tokens");
    int T = lp_run_len(f->s.run);
    float *scores = calloc((size_t)T, sizeof *scores);
    scores[6] = 0.5f;
    scores[14] = -0.25f;
    lp_store_attribution a = {f->s.run_id, "ig", "logit", T - 1, 432, -1, "{\"steps\":32}", scores, T, 0.0012};
    int64_t id;
    OK(lp_store_put_attribution(f->s.store, &a, &id));
    key(f, ':'); /* any command refreshes what the views read */
    type(f, "info");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    SHOWS(f, "[1/1] ig  target ,");
    SHOWS(f, "delta 0.0012");
    SHOWS(f, "+0.5000");
    SHOWS(f, "-0.2500");
    /* The tokens as text on the diverging scale: ·Lily (pos 6) strongly positive. */
    const lp_cell *c = find_below(f, "·Lily", 3, NULL, NULL);
    assert_int_equal(c->color, LP_COLOR_DIV(LP_DIV_LEVELS - 1));
    c = find_below(f, "·Once", 3, NULL, NULL);
    assert_int_equal(c->color, LP_COLOR_DIV(LP_DIV_LEVELS / 2));
    free(scores);
}

static void lens_view_shows_top_tokens_per_layer_and_position(void **state) {
    fixture *f = *state;
    key(f, '5');
    assert_non_null(strstr(row(f, 0), "5 Logit lens"));
    SHOWS(f, "emb");
    SHOWS(f, "out");
    const lp_config *c = lp_model_config(f->s.model);
    int T = lp_run_len(f->s.run), rows = c->n_layer + 1;
    int *ids = malloc((size_t)rows * T * sizeof *ids);
    float *pr = malloc((size_t)rows * T * sizeof *pr);
    OK(lp_lens(f->s.run, 1, -1, ids, pr, NULL, NULL));
    char tok[64], want[160];
    lp_browser_id_text(f->b, ids[(size_t)(rows - 1) * T + T - 1], tok, sizeof tok);
    snprintf(want, sizeof want, "out, token %d .: top %s", T - 1, tok);
    assert_non_null(strstr(status(f), want));
    key(f, 'k');
    lp_browser_id_text(f->b, ids[(size_t)(rows - 2) * T + T - 1], tok, sizeof tok);
    snprintf(want, sizeof want, "L%d, token %d .: top %s", c->n_layer - 2, T - 1, tok);
    assert_non_null(strstr(status(f), want));
    /* The view computes the chunks it shows, as they come into view, with the lens
     * command's numbers: the cursor's cell at the start, after Home, in every row. */
    key(f, LP_KEY_HOME);
    render(f); /* the loop's update for what the frame showed, then the next frame */
    for (int row = rows - 2; row >= 0; row--, key(f, 'k')) {
        size_t o = (size_t)row * T;
        lp_browser_id_text(f->b, ids[o], tok, sizeof tok);
        snprintf(want, sizeof want, ": top %s (%d) p %.4f", tok, ids[o], (double)pr[o]);
        assert_non_null(strstr(status(f), want));
    }
    free(ids);
    free(pr);
}

/* A new run is made after the current one is freed (its arena is then the new run's): a
 * run cancelled half-way leaves the run before current, the same ids and the same numbers,
 * and one the model refuses never lets it go. */
static void a_failed_run_leaves_the_run_before_current(void **state) {
    fixture *f = *state;
    const lp_run *r = f->s.run;
    int T = lp_run_len(r), V = lp_run_out_width(r);
    int *ids = malloc((size_t)T * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof *logits);
    memcpy(ids, lp_run_ids(r), (size_t)T * sizeof *ids);
    memcpy(logits, lp_run_logits(r, T - 1), (size_t)V * sizeof *logits);
    int64_t id = f->s.run_id;
    lp_cancel_request(); /* as Ctrl-C during the forward */
    assert_int_equal(lp_exec(&f->s, "run --ids 5,6,7,8"), LP_ECANCEL);
    assert_false(lp_cancelled());
    assert_non_null(f->s.run);
    assert_int_equal(lp_run_len(f->s.run), T);
    assert_memory_equal(lp_run_ids(f->s.run), ids, (size_t)T * sizeof *ids);
    assert_memory_equal(lp_run_logits(f->s.run, T - 1), logits, (size_t)V * sizeof *logits);
    assert_true(f->s.run_id == id);
    r = f->s.run;
    assert_int_equal(lp_exec(&f->s, "run --ids 999999"), LP_EINVAL);
    assert_ptr_equal(f->s.run, r);
    free(ids);
    free(logits);
}

/* An encoder's attention is bidirectional: every cell of a row is a value (none masked), the
 * cursor may go past the query and the strongest key may lie after it; a masked LM has a
 * logit lens. */
static void encoder_attention_rows_are_full(void **state) {
    fixture *f = *state;
    render(f);
    int T = lp_run_len(f->s.run);
    key(f, LP_KEY_HOME); /* query 0, [CLS]: every key is after it */
    lp_view v;
    OK(lp_run_view(f->s.run, LP_ACT_PATTERN, 0, 0, &v));
    int best = 0;
    for (int j = 1; j < T; j++)
        if (v.data[j] > v.data[best]) best = j;
    char want[128];
    snprintf(want, sizeof want, "query 0 [CLS] → key %d", best);
    assert_non_null(strstr(status(f), want));
    int y = label_row(f, 0), x;
    assert_true(y > 0);
    assert_int_equal(lp_screen_find(f->scr, "   0 [CLS]", &x, NULL), 0);
    for (int c = 0; c < 96; c++) assert_string_not_equal(lp_screen_at(f->scr, c, y)->ch, "·");
    for (int j = 0; j < T; j++) key(f, 'L'); /* the key cursor walks to the last key */
    snprintf(want, sizeof want, "query 0 [CLS] → key %d [SEP]", T - 1);
    assert_non_null(strstr(status(f), want));
    key(f, '5'); /* a masked LM's lens reads the layers through its head */
    SHOWS(f, "emb");
    SHOWS(f, "out");
}

/* An encoder-decoder's run: the strip's source line above its target line; the cross-
 * attention first, a target x source rectangle whose cells carry the cross pattern's
 * levels; x on to the encoder's (source x source, its query the source's selection), s back
 * to the target line and the decoder's attention; rectangular thumbnails pool each axis. */
static void cross_attention_is_a_target_by_source_heat_map(void **state) {
    fixture *f = *state;
    render(f);
    const lp_run *r = f->s.run, *src = lp_run_source(r);
    int T = lp_run_len(r), S = lp_run_len(src);
    assert_int_equal(f->b->S, S);
    assert_true(strncmp(row(f, 1), "src  ·the ·cat", 14) == 0);
    assert_true(strncmp(row(f, 2), "tgt  <pad>", 10) == 0);
    assert_non_null(strstr(row(f, 0), "L0 H0 cross"));
    lp_view v;
    OK(lp_run_view(r, LP_ACT_CROSS_PATTERN, 0, 0, &v));
    assert_int_equal(v.shape[0], T);
    assert_int_equal(v.shape[1], S);
    int q = T - 1, best = 0;
    for (int j = 1; j < S; j++)
        if (v.data[(size_t)q * v.stride[0] + j] > v.data[(size_t)q * v.stride[0] + best]) best = j;
    char want[128];
    snprintf(want, sizeof want, "cross L0 H0  query %d t → key %d %s  %.4f", q, best,
             lp_browser_side_token(f->b, LP_SIDE_SOURCE, best, NULL), (double)v.data[(size_t)q * v.stride[0] + best]);
    assert_non_null(strstr(status(f), want));
    /* The cells: row i of the target, column j of the source. */
    int x, y;
    find_below(f, "[ ]", 3, &x, &y);
    int x0 = x - 3 * best, y1 = label_row(f, 1);
    for (int j = 0; j < S; j++)
        assert_int_equal(lp_screen_at(f->scr, x0 + 3 * j + 1, y1)->color,
                         LP_COLOR_HEAT(lp_heat_level(v.data[1 * v.stride[0] + (size_t)j * v.stride[1]])));
    key(f, 'x');
    assert_int_equal(f->b->attn, LP_ATTN_ENC_SELF);
    assert_int_equal(f->b->side, LP_SIDE_SOURCE);
    key(f, 'l');
    assert_int_equal(f->b->src_pos, 1);
    assert_non_null(strstr(status(f), "enc self L0 H0  query 1 ·cat → key"));
    key(f, 's');
    assert_int_equal(f->b->attn, LP_ATTN_CROSS);
    assert_int_equal(f->b->side, LP_SIDE_TARGET);
    key(f, 'h'); /* the token keys move the target's selection again */
    assert_int_equal(f->b->pos, T - 2);
    assert_int_equal(f->b->src_pos, 1);
    /* A 2 x 3 pattern pooled into a 1 x 3 thumbnail: each column the larger of its two rows. */
    float p[6] = {0.1f, 0.9f, 0.0f, 0.8f, 0.05f, 0.15f};
    lp_view pv = {p, 2, {2, 3}, {3, 1}};
    uint8_t lv[3];
    lp_thumbnail_levels(lv, 1, 3, &pv);
    assert_int_equal(lv[0], lp_heat_level(0.8f));
    assert_int_equal(lv[1], lp_heat_level(0.9f));
    assert_int_equal(lv[2], lp_heat_level(0.15f));
}

/* The strip cell where the token at pos starts (the strip is row 1; every token of these
 * short runs fits), found by walking the tokens as the strip lays them out. */
/* Writes a note with m about what is under the cursor. */
static void write_note(fixture *f, const char *text) {
    key(f, 'm');
    type(f, text);
    key(f, LP_KEY_ENTER);
    assert_false(f->b->message_error);
}

/* Runs a command from the browser's command line, as a user would (the views refresh). */
static void command(fixture *f, const char *line) {
    key(f, ':');
    type(f, line);
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
}

/* The cell of token pos on an attribution view's line (found by its name, "src" or "tgt",
 * below the strip), as draw_flow lays them out: after the name, one space between tokens. */
static const lp_cell *attr_token_cell(const fixture *f, int side, int pos, int *y_out) {
    int x, y;
    find_below(f, side == LP_SIDE_SOURCE ? "src " : "tgt ", 5, &x, &y);
    x += 4;
    for (int p = 0; p < pos; p++) {
        int w;
        lp_browser_side_token(f->b, side, p, &w);
        x += w + 1;
    }
    if (y_out) *y_out = y;
    return lp_screen_at(f->scr, x, y);
}

/* An encoder-decoder's attribution: the source and the target prefix as two lines coloured
 * on one scale (the largest |score| of both), the header naming the decoder position and
 * its input token, the table's rows saying their side; t explains the next position. */
static void t5_attributions_colour_source_and_target_on_one_scale(void **state) {
    fixture *f = *state;
    render(f);
    int S = f->b->S, T = f->b->T;
    float *scores = calloc((size_t)(S + T), sizeof *scores);
    scores[1] = 0.5f;       /* ·cat: half the scale */
    scores[S + 2] = -1.0f;  /* the target's 'l': the largest, against */
    lp_store_attribution a = {f->s.run_id, "saliency", "logit", T - 1, 97, -1, NULL, scores, S + T, NAN};
    int64_t id;
    OK(lp_store_put_attribution_split(f->s.store, &a, S, &id));
    command(f, "info");
    key(f, '4');
    SHOWS(f, "[1/1] saliency");
    SHOWS(f, "at dec 8 (t)");
    SHOWS(f, "(t: next position)");
    assert_int_equal(attr_token_cell(f, LP_SIDE_SOURCE, 1, NULL)->color, LP_COLOR_DIV(lp_div_level(0.5)));
    assert_int_equal(attr_token_cell(f, LP_SIDE_SOURCE, 0, NULL)->color, LP_COLOR_DIV(LP_DIV_LEVELS / 2));
    assert_int_equal(attr_token_cell(f, LP_SIDE_TARGET, 2, NULL)->color, LP_COLOR_DIV(0));
    SHOWS(f, "s  1 ·cat");
    SHOWS(f, "t  2 l");
    SHOWS(f, "-1.0000");
    /* The status line follows the strip's selection, on either line. */
    assert_non_null(strstr(status(f), "target token 8 t"));
    key(f, 's');
    key(f, 'l');
    assert_non_null(strstr(status(f), "source token 1 ·cat  score +0.50000"));
    /* t: the next decoder position (after the last, the first), computed by attr. */
    key(f, 's');
    key(f, 't');
    assert_false(f->b->message_error);
    SHOWS(f, "[1/2] saliency");
    SHOWS(f, "at dec 0 (<pad>)");
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, "SELECT count(*) AS n, sum(side = 'source') AS s FROM attribution_scores"
                      " WHERE attribution_id = (SELECT max(id) FROM attributions)", NULL, false, &rows, NULL));
    assert_int_equal(lp_row_int(json_array_get(rows, 0), "n", 0), S + T);
    assert_int_equal(lp_row_int(json_array_get(rows, 0), "s", 0), S);
    json_decref(rows);
    free(scores);
}

/* Without colour the two lines stay readable: a shade row under each line's tokens. */
static void t5_attributions_without_colour_shade_both_lines(void **state) {
    fixture *f = *state;
    render(f);
    int S = f->b->S, T = f->b->T;
    float *scores = calloc((size_t)(S + T), sizeof *scores);
    scores[1] = 1.0f;
    scores[S + 2] = -1.0f;
    lp_store_attribution a = {f->s.run_id, "saliency", "logit", T - 1, 97, -1, NULL, scores, S + T, NAN};
    OK(lp_store_put_attribution_split(f->s.store, &a, S, NULL));
    command(f, "info");
    key(f, '4');
    int ys, yt;
    attr_token_cell(f, LP_SIDE_SOURCE, 1, &ys);
    attr_token_cell(f, LP_SIDE_TARGET, 2, &yt);
    assert_true(yt > ys + 1);
    char buf[512];
    lp_screen_row_text(f->scr, 0, ys + 1, f->scr->w, buf, sizeof buf);
    assert_non_null(strchr(buf, '+')); /* ·cat: for */
    assert_int_equal(f->scr->depth, 0);
    /* l (one column: no room for a sign) against, on the darkest shade; <pad> on none */
    const lp_cell *l = attr_token_cell(f, LP_SIDE_TARGET, 2, NULL), *p0 = attr_token_cell(f, LP_SIDE_TARGET, 0, NULL);
    const lp_cell *under_l = l + f->scr->w, *under_pad = p0 + f->scr->w; /* the cells one row down */
    assert_string_not_equal(under_l->ch, under_pad->ch);
    assert_int_equal(under_l->color, LP_COLOR_DIV(0));
    free(scores);
}

/* The heads view of an encoder-decoder's run follows the attention (x): the cross-attention's
 * metrics and its scan rows, then the encoder's, then the decoder's self-attention. */
static void t5_heads_view_shows_each_stacks_scan(void **state) {
    fixture *f = *state;
    command(f, "scan --len 6 --seqs 1");
    key(f, '2');
    SHOWS(f, "[cross, x: next] colour: ");
    SHOWS(f, "scan #1 of generated sequences");
    colour_by(f, "scan: aligned");
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, "SELECT stack, kind, aligned, next_token, first_token FROM head_scans_view"
                      " WHERE layer = 1 AND head = 2 ORDER BY stack, kind", NULL, false, &rows, NULL));
    assert_int_equal(json_array_size(rows), 3); /* dec cross, dec self, enc self */
    char want[16];
    key(f, ']'), key(f, '}'), key(f, '}');
    snprintf(want, sizeof want, "%.2f", (double)(float)lp_row_real(json_array_get(rows, 0), "aligned"));
    assert_non_null(strstr(grid_cell(f, 1, 2), want));
    SHOWS(f, "  coverage");
    key(f, 'x');
    SHOWS(f, "[enc self, x: next]");
    colour_by(f, "scan: next_token");
    snprintf(want, sizeof want, "%.2f", (double)(float)lp_row_real(json_array_get(rows, 2), "next_token"));
    assert_non_null(strstr(grid_cell(f, 1, 2), want));
    assert_false(shows(f, "  aligned"));
    key(f, 'x');
    SHOWS(f, "[dec self, x: next]");
    colour_by(f, "scan: first_token");
    snprintf(want, sizeof want, "%.2f", (double)(float)lp_row_real(json_array_get(rows, 1), "first_token"));
    assert_non_null(strstr(grid_cell(f, 1, 2), want));
    json_decref(rows);
    /* 80x24: the grid, the panel's scores and the status line fit. */
    lp_screen_free(f->scr);
    f->scr = lp_screen_new(80, 24, 256);
    render(f);
    SHOWS(f, "[dec self, x: next]");
    SHOWS(f, "  L2");
    SHOWS(f, "first_token");
}

/* m on an encoder-decoder's run: the note says the attention shown (--cross, --stack enc),
 * and the encoder's position is the source's. */
static void t5_note_says_stack_and_kind(void **state) {
    fixture *f = *state;
    render(f);
    write_note(f, "aligned");
    key(f, 'x');
    key(f, 'l');
    write_note(f, "looks at the cat");
    key(f, '2');
    write_note(f, "a head");
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, "SELECT stack, attn_kind, layer, head, pos, token FROM findings_view ORDER BY id",
                      NULL, false, &rows, NULL));
    assert_int_equal(json_array_size(rows), 3);
    json_t *r = json_array_get(rows, 0);
    assert_string_equal(lp_row_str(r, "stack"), "dec");
    assert_string_equal(lp_row_str(r, "attn_kind"), "cross");
    assert_int_equal(lp_row_int(r, "pos", -1), f->b->T - 1);
    r = json_array_get(rows, 1);
    assert_string_equal(lp_row_str(r, "stack"), "enc");
    assert_string_equal(lp_row_str(r, "attn_kind"), "self");
    assert_int_equal(lp_row_int(r, "pos", -1), 1);
    assert_string_equal(lp_row_str(r, "token"), " cat");
    r = json_array_get(rows, 2);
    assert_string_equal(lp_row_str(r, "stack"), "enc");
    assert_int_equal(lp_row_int(r, "pos", -1), -1);
    json_decref(rows);
    /* The findings view names the attention; Enter goes back to it, on the source's token. */
    key(f, '1');
    key(f, 'x'); /* the decoder's self-attention */
    key(f, 's');
    key(f, 'h'); /* the source's first token */
    key(f, 's');
    key(f, '6');
    SHOWS(f, "cross L0 H0 @8 t");
    SHOWS(f, "enc L0 H0 @1 ·cat");
    key(f, 'j');
    key(f, 'j');
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_ATTENTION);
    assert_int_equal(f->b->attn, LP_ATTN_ENC_SELF);
    assert_int_equal(f->b->src_pos, 1);
    assert_non_null(strstr(status(f), "enc self L0 H0  query 1 ·cat"));
}

/* m in the patching view on an encoder-decoder's run: the result's stack and kind. */
static void t5_note_in_the_patching_view_says_the_results_site(void **state) {
    fixture *f = *state;
    command(f, "patch --corrupt-target-ids 5,6,7,8,9,10,11,12 --site cross_z");
    key(f, '7');
    write_note(f, "a cross head");
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, "SELECT stack, attn_kind, head FROM findings", NULL, false, &rows, NULL));
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(lp_row_str(json_array_get(rows, 0), "stack"), "dec");
    assert_string_equal(lp_row_str(json_array_get(rows, 0), "attn_kind"), "cross");
    json_decref(rows);
}

static const lp_cell *strip_cell(const fixture *f, int pos) {
    int x = 1;
    for (int i = 0; i < pos; i++) x += f->b->tok_w[i] + 1;
    return lp_screen_at(f->scr, x, 1);
}

/* An encoder's strip: the template's [CLS] and [SEP] in the specials' colour, masks in
 * theirs, the second text of a pair underlined in its own colour, the first text plain. */
static void strip_marks_specials_masks_and_the_second_text(void **state) {
    fixture *f = *state;
    render(f);
    int T = lp_run_len(f->s.run);
    assert_int_equal(lp_run_types(f->s.run)[T - 1], 1); /* [CLS] the [MASK] was good [SEP] a [MASK] film [SEP] */
    assert_string_equal(lp_browser_token(f->b, 2, NULL), "[MASK]");
    const int want_color[] = {LP_COLOR_SPECIAL, LP_COLOR_NORMAL, LP_COLOR_MASK, LP_COLOR_NORMAL, LP_COLOR_NORMAL,
                              LP_COLOR_SPECIAL, LP_COLOR_SEGMENT_B, LP_COLOR_MASK, LP_COLOR_SEGMENT_B};
    for (int i = 0; i < T - 1; i++) { /* the last is selected */
        const lp_cell *c = strip_cell(f, i);
        if (c->color != want_color[i]) fail_msg("token %d (%s): colour %d, want %d", i, lp_browser_token(f->b, i, NULL),
                                                c->color, want_color[i]);
        assert_int_equal(!!(c->attr & LP_ATTR_UNDERLINE), i > 5); /* B: after the first [SEP] */
    }
    const lp_cell *last = strip_cell(f, T - 1); /* the selection keeps the underline of its text */
    assert_int_equal(last->color, LP_COLOR_SELECTED);
    assert_true(last->attr & LP_ATTR_UNDERLINE);
    key(f, LP_KEY_HOME);
    assert_int_equal(strip_cell(f, T - 1)->color, LP_COLOR_SPECIAL);
}

/* RoBERTa gives a pair no token types: its second text begins after the </s></s>. */
static void strip_marks_a_roberta_pair_by_its_separators(void **state) {
    fixture *f = *state;
    key(f, LP_KEY_HOME);
    int T = lp_run_len(f->s.run), seps = 0;
    for (int i = 0; i < T; i++) {
        const lp_cell *c = strip_cell(f, i);
        bool sep = strcmp(lp_browser_token(f->b, i, NULL), "</s>") == 0;
        seps += sep;
        if (i > 0) assert_int_equal(c->color, sep ? LP_COLOR_SPECIAL : seps >= 2 ? LP_COLOR_SEGMENT_B : LP_COLOR_NORMAL);
        assert_int_equal(!!(c->attr & LP_ATTR_UNDERLINE), seps >= 2 && !(sep && seps == 2));
    }
    assert_int_equal(seps, 3);
}

/* A classifier's attribution names its label, and t steps through the labels: computing the
 * ones the store lacks with the same method, going back to the stored ones. */
static void attributions_view_names_the_label_and_t_steps_through_labels(void **state) {
    fixture *f = *state;
    key(f, '4');
    SHOWS(f, "No attribution stored for run 1.");
    key(f, 't'); /* saliency for the top label */
    SHOWS(f, "[1/1] saliency  label negative  logit");
    assert_non_null(strstr(status(f), "saliency  label negative: token"));
    key(f, 't');
    SHOWS(f, "[1/2] saliency  label neutral");
    key(f, 't');
    key(f, 't'); /* positive, then negative again: the stored one */
    SHOWS(f, "saliency  label negative");
    json_t *n = lp_browser_query(f->b, "SELECT count(*) AS n FROM attributions", NULL);
    assert_int_equal(lp_row_int(json_array_get(n, 0), "n", 0), 3);
    json_decref(n);
    key(f, ':');
    type(f, "attr gxi --target positive --vs negative");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    SHOWS(f, "gxi  label positive vs negative");
}

/* Going to a finding on a sentence pair runs the pair again as it was, its second text's
 * token types included (the label's probability is the pair's, not the types-0 one's). */
static void going_to_a_finding_on_a_pair_restores_its_token_types(void **state) {
    fixture *f = *state;
    int T = lp_run_len(f->s.run);
    float p0 = lp_run_logits(f->s.run, 0)[0];
    OK(lp_exec(&f->s, "note --pos 9 the second text"));
    OK(lp_exec(&f->s, "run the film"));
    key(f, '6');
    key(f, 'j'); /* session default, its finding */
    SHOWS(f, "finding #1 of run");
    key(f, LP_KEY_ENTER);
    assert_false(f->b->message_error);
    assert_int_equal(f->s.run_id, 1);
    assert_int_equal(lp_run_len(f->s.run), T);
    int ones = 0;
    for (int i = 0; i < T; i++) ones += lp_run_types(f->s.run)[i];
    assert_int_equal(ones, 7); /* i like ##d the film . [SEP] */
    assert_float_equal(lp_run_logits(f->s.run, 0)[0], p0, 1e-6);
    assert_true(strip_cell(f, T - 2)->attr & LP_ATTR_UNDERLINE);
}

/* A masked LM's attribution names the mask and its candidate; t goes to the next mask. */
static void attributions_view_names_the_mask_and_t_steps_through_masks(void **state) {
    fixture *f = *state;
    key(f, '4');
    key(f, 't');
    char want[128];
    char tok[64];
    int top;
    OK(lp_top_k(&top, lp_run_logits(f->s.run, 2), lp_run_out_width(f->s.run), 1));
    snprintf(want, sizeof want, "saliency  mask 2 \xE2\x86\x92 %s", lp_browser_id_text(f->b, top, tok, sizeof tok));
    SHOWS(f, want);
    key(f, 't');
    SHOWS(f, "saliency  mask 7 ");
    assert_int_equal(f->b->pos, 7);
}

static void note_is_written_and_listed_with_its_run(void **state) {
    fixture *f = *state;
    key(f, ']');
    key(f, '}');
    key(f, LP_KEY_HOME);
    key(f, 'l');
    key(f, 'm');
    SHOWS(f, "note: ");
    type(f, "looks back «日本»");
    key(f, LP_KEY_ENTER);
    assert_false(f->b->message_error);
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, "SELECT text, layer, head, pos FROM findings", NULL, false, &rows, NULL));
    assert_int_equal(json_array_size(rows), 1);
    json_t *r = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(r, "text")), "looks back «日本»");
    assert_int_equal(json_integer_value(json_object_get(r, "layer")), 1);
    assert_int_equal(json_integer_value(json_object_get(r, "head")), 1);
    assert_int_equal(json_integer_value(json_object_get(r, "pos")), 1);
    json_decref(rows);
    key(f, '6');
    SHOWS(f, "1 finding in 1 session");
    SHOWS(f, "L1 H1 @1 ·Once");
    SHOWS(f, "looks back «日本»");
    SHOWS(f, "run 1: " TEXT);
    /* Enter on it goes there. */
    key(f, '[');
    key(f, LP_KEY_END);
    key(f, 'j');
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_ATTENTION);
    assert_int_equal(f->b->layer, 1);
    assert_int_equal(f->b->head, 1);
    assert_int_equal(f->b->pos, 1);
}

static void findings_of_another_run_rerun_it(void **state) {
    fixture *f = *state;
    OK(lp_exec(&f->s, "note --layer 2 --pos 3 about the first run"));
    OK(lp_exec(&f->s, "run Lily liked the ball."));
    key(f, '6');
    key(f, 'j');
    key(f, LP_KEY_ENTER);
    assert_int_equal(lp_run_len(f->s.run), 21); /* the first run again, as run 1 */
    assert_int_equal(f->s.run_id, 1);
    assert_int_equal(f->b->view, LP_VIEW_ACTIVATIONS);
    assert_int_equal(f->b->layer, 2);
    assert_int_equal(f->b->pos, 3);
}

static long long count_of(fixture *f, const char *sql) {
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, sql, NULL, false, &rows, NULL));
    long long n = lp_row_int(json_array_get(rows, 0), "n", -1);
    json_decref(rows);
    return n;
}

/* Going to a finding of another session, again and again, reuses its run in its session:
 * no new runs (it made runs 2, 3, 4 in the current session). */
static void going_to_a_finding_reuses_its_run_and_session(void **state) {
    fixture *f = *state;
    OK(lp_exec(&f->s, "session new ioi"));
    OK(lp_exec(&f->s, "run Lily liked the ball."));
    OK(lp_exec(&f->s, "note --layer 1 --head 2 --pos 3 the ball"));
    int64_t ioi = f->s.session_id, run = f->s.run_id;
    OK(lp_exec(&f->s, "session open default"));
    OK(lp_exec(&f->s, "run Once upon a time"));
    long long runs = count_of(f, "SELECT count(*) AS n FROM runs");
    key(f, '6');
    key(f, 'j');
    key(f, 'j'); /* session default, session ioi, its finding */
    SHOWS(f, "finding #1 of run");
    for (int i = 0; i < 3; i++) {
        key(f, '6');
        key(f, LP_KEY_ENTER);
        assert_false(f->b->message_error);
        assert_int_equal(f->s.run_id, run);
        assert_int_equal(f->s.session_id, ioi);
        assert_int_equal(f->b->view, LP_VIEW_ATTENTION);
        assert_int_equal(f->b->layer, 1);
        assert_int_equal(f->b->head, 2);
        assert_int_equal(f->b->pos, 3);
        assert_int_equal(count_of(f, "SELECT count(*) AS n FROM runs"), runs);
    }
    /* A note written there belongs to that session and run. */
    OK(lp_browser_exec(f->b, "note still the ball"));
    assert_int_equal(count_of(f, "SELECT count(*) AS n FROM findings WHERE session_id = 2 AND run_id = 2"), 2);
}

static void store_z_result(fixture *f, const char *direction);

static void patching_view_shows_a_stored_result(void **state) {
    fixture *f = *state;
    key(f, '7');
    SHOWS(f, "No patching results for this run.");
    OK(lp_store_put_analysis(f->s.store, f->s.run_id, "patch", "{}",
                             "{\"site\":\"resid_pre\",\"direction\":\"noising\",\"rows\":\"layer\",\"cols\":\"position\","
                             "\"values\":[[0.1,0.9,null],[0.25,-0.5,1.0]],\"undefined\":false,"
                             "\"target\":{\"id\":432,\"token\":\",\"},\"contrast\":{\"id\":383,\"token\":\" there\"},"
                             "\"tokens\":[\"a\",\"b\",\"c\"]}",
                             NULL));
    key(f, ':');
    type(f, "info");
    key(f, LP_KEY_ENTER);
    SHOWS(f, "site resid_pre");
    SHOWS(f, "0.90");
    SHOWS(f, "-0.50");
    SHOWS(f, "·there");
    /* Noising: the colour is the effect, 1 - recovery, and the legend says so. A site whose
     * corruption leaves the prediction (recovery 1) is blank; the one that takes most of it
     * away (-0.50: 1.5) is the strongest. */
    SHOWS(f, "colour: effect = 1 − recovery");
    assert_int_equal(cell_of(f, "1.00")->color, LP_COLOR_DIV(LP_DIV_LEVELS / 2));
    assert_int_equal(cell_of(f, "-0.50")->color, LP_COLOR_DIV(LP_DIV_LEVELS - 1));
    assert_int_equal(cell_of(f, "0.10")->color, LP_COLOR_DIV(lp_div_level(0.9 / 1.5)));
    assert_true(cell_of(f, "0.10")->color > cell_of(f, "0.90")->color);
}

/* Denoising: restoring a site brings the recovery back, so the colour is the recovery. */
static void patching_view_colours_denoising_by_recovery(void **state) {
    fixture *f = *state;
    key(f, '7');
    store_z_result(f, "denoising");
    SHOWS(f, "colour: effect = recovery");
    assert_int_equal(find_below(f, "4.70", 3, NULL, NULL)->color, LP_COLOR_DIV(LP_DIV_LEVELS - 1));
    assert_int_equal(find_below(f, "0.00", 3, NULL, NULL)->color, LP_COLOR_DIV(LP_DIV_LEVELS / 2));
}

/* A site-z result (layers x heads) stored for the run: 5 x 8, cell (l, h) = l + h / 10. */
static void store_z_result(fixture *f, const char *direction) {
    char res[2048] = "{\"site\":\"z\",\"direction\":\"";
    lp_appendf(res, sizeof res, "%s\",\"rows\":\"layer\",\"cols\":\"head\",\"values\":[", direction);
    for (int l = 0; l < 5; l++) {
        lp_appendf(res, sizeof res, "%s[", l ? "," : "");
        for (int h = 0; h < 8; h++) lp_appendf(res, sizeof res, "%s%.1f", h ? "," : "", l + h / 10.0);
        lp_appendf(res, sizeof res, "]");
    }
    lp_appendf(res, sizeof res, "],\"undefined\":false,\"target\":{\"id\":432,\"token\":\",\"},"
                                "\"contrast\":{\"id\":383,\"token\":\" there\"}}");
    OK(lp_store_put_analysis(f->s.store, f->s.run_id, "patch", "{}", res, NULL));
    OK(lp_browser_exec(f->b, "info")); /* any command refreshes what the views read */
    render(f);
}

/* One selection in the patching view: its row is the title bar's layer ([ ] and j k move
 * both), its column (site z) the title bar's head, and m records that layer and head. */
static void patching_view_site_z_cursor_is_the_title_bars_and_the_notes(void **state) {
    fixture *f = *state;
    key(f, ']');
    key(f, '7');
    store_z_result(f, "noising");
    SHOWS(f, "site z");
    key(f, '}');
    key(f, '}');
    assert_non_null(strstr(row(f, 0), "L1 H2"));
    assert_non_null(strstr(status(f), "L1 head 2: 1.2000"));
    assert_int_equal(find_below(f, "L1 ", 3, NULL, NULL)->color, LP_COLOR_SELECTED);
    key(f, 'j');
    assert_non_null(strstr(row(f, 0), "L2 H2"));
    assert_non_null(strstr(status(f), "L2 head 2: 2.2000"));
    assert_int_equal(find_below(f, "L2 ", 3, NULL, NULL)->color, LP_COLOR_SELECTED);
    key(f, 'm');
    type(f, "name mover?");
    key(f, LP_KEY_ENTER);
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, "SELECT layer, head, pos FROM findings", NULL, false, &rows, NULL));
    assert_int_equal(json_array_size(rows), 1);
    json_t *r = json_array_get(rows, 0);
    assert_int_equal(lp_row_int(r, "layer", -1), 2);
    assert_int_equal(lp_row_int(r, "head", -1), 2);
    assert_int_equal(lp_row_int(r, "pos", -1), -1); /* z patches every position at once */
    json_decref(rows);
    /* [ moves the same row back. */
    key(f, '[');
    assert_non_null(strstr(status(f), "L1 head 2:"));
}

/* ---- the command line ---- */

static void command_output_goes_to_the_pane_and_errors_to_the_message_line(void **state) {
    fixture *f = *state;
    key(f, ':');
    type(f, "tok");
    key(f, LP_KEY_TAB);
    assert_string_equal(lp_line_text(f->b->line), "tokens ");
    key(f, LP_KEY_ENTER);
    SHOWS(f, "output: 23 lines");
    SHOWS(f, "pos   id  text");
    SHOWS(f, "  1  403  ·Once");
    SHOWS(f, "tokens: 23 lines of output");
    key(f, 'o');
    assert_false(shows(f, "output: 23 lines"));
    key(f, ':');
    type(f, "atn 0 0");
    key(f, LP_KEY_ENTER);
    const lp_cell *c = cell_of(f, "error: unknown command 'atn' (did you mean 'attn'?)");
    assert_int_equal(c->color, LP_COLOR_ERROR);
    /* Esc leaves the line without running it. */
    key(f, ':');
    type(f, "run nothing");
    key(f, LP_KEY_ESC);
    assert_int_equal(f->b->line_mode, LP_LINE_NONE);
    assert_int_equal(f->s.run_id, 1);
    /* A new run from the line is shown at once. */
    key(f, ':');
    type(f, "run Lily liked the ball.");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->s.run_id, 2);
    assert_non_null(strstr(row(f, 0), "run 2"));
    assert_non_null(strstr(row(f, 1), "·Lily ·li ked ·the"));
}

/* A long command's progress (train's bar and its lines) stays inside the browser: the lines
 * in the output pane, nothing on the terminal's stderr, where it would scroll the screen
 * under curses. */
static void train_reports_progress_in_the_browser_not_on_the_terminal(void **state) {
    fixture *f = *state;
    char *dir = make_temp_dir(), cmd[4400];
    snprintf(cmd, sizeof cmd,
             "train %s/t --layers 1 --heads 2 --d-model 16 --d-mlp 32 --ctx 16 --vocab 280 --corpus-mb 0.05 --steps 4 "
             "--eval-every 2 --batch 2 --seq 16 --threads 1",
             dir);
    fflush(stderr);
    FILE *err = tmpfile();
    int saved = dup(2);
    dup2(fileno(err), 2);
    key(f, ':');
    type(f, cmd);
    key(f, LP_KEY_ENTER);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    long n = ftell(err) > 0 ? ftell(err) : (fseek(err, 0, SEEK_END), ftell(err));
    char got[512] = "";
    rewind(err);
    got[fread(got, 1, sizeof got - 1, err)] = '\0';
    fclose(err);
    if (n != 0) fail_msg("train wrote %ld bytes to stderr: %s", n, got);
    assert_false(f->b->message_error);
    assert_non_null(f->b->output);
    assert_non_null(strstr(f->b->output, "train: "));
    assert_non_null(strstr(f->b->output, "train: step 4/4 loss"));
    char live[256];
    lp_browser_progress(f->b, live, sizeof live);
    assert_string_equal(live, ""); /* over with the command */
    assert_non_null(strstr(row(f, 0), " loupe "));
    rm_tree(dir);
}

static void line_editor_edits_and_walks_history(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[4200];
    snprintf(path, sizeof path, "%s/sub/history", dir);
    lp_line *l = lp_line_new(path);
    lp_line_start(l, ":", true);
    lp_line_insert(l, "helo");
    lp_line_act(l, LP_DO_EDIT_LEFT, NULL);
    lp_line_insert(l, "l");
    assert_string_equal(lp_line_text(l), "hello");
    lp_line_act(l, LP_DO_EDIT_END, NULL);
    lp_line_insert(l, " 日本");
    lp_line_act(l, LP_DO_EDIT_BACKSPACE, NULL);
    assert_string_equal(lp_line_text(l), "hello 日");
    lp_line_act(l, LP_DO_EDIT_KILL_WORD, NULL);
    assert_string_equal(lp_line_text(l), "hello ");
    lp_line_act(l, LP_DO_EDIT_HOME, NULL);
    lp_line_act(l, LP_DO_EDIT_KILL_END, NULL);
    assert_string_equal(lp_line_text(l), "");
    lp_line_insert(l, "first");
    lp_line_remember(l);
    lp_line_start(l, ":", true);
    lp_line_insert(l, "second");
    lp_line_remember(l);
    lp_line_remember(l); /* a repeat is kept once */
    lp_line_start(l, ":", true);
    lp_line_insert(l, "typing");
    lp_line_act(l, LP_DO_EDIT_HISTORY_PREV, NULL);
    assert_string_equal(lp_line_text(l), "second");
    lp_line_act(l, LP_DO_EDIT_HISTORY_PREV, NULL);
    assert_string_equal(lp_line_text(l), "first");
    lp_line_act(l, LP_DO_EDIT_HISTORY_NEXT, NULL);
    lp_line_act(l, LP_DO_EDIT_HISTORY_NEXT, NULL);
    assert_string_equal(lp_line_text(l), "typing");
    lp_line_free(l);
    /* The file has them, and a new editor (a new browser, or the REPL) reads them back. */
    l = lp_line_new(path);
    assert_int_equal(lp_line_history_count(l), 2);
    lp_line_free(l);
    FILE *fh = fopen(path, "r");
    char buf[64] = "";
    assert_non_null(fh);
    size_t n = fread(buf, 1, sizeof buf - 1, fh);
    buf[n] = '\0';
    fclose(fh);
    assert_string_equal(buf, "first\nsecond\n");
    rm_tree(dir);
}

/* / searches the tokens (as shown or as raw text, any case), n and N step through the
 * matches wrapping round, g and G go to the first and last token; every view follows. */
static void slash_searches_the_tokens_and_n_steps_through_matches(void **state) {
    fixture *f = *state;
    render(f);
    int T = lp_run_len(f->s.run);
    assert_int_equal(f->b->pos, T - 1);
    key(f, '/');
    assert_non_null(strstr(row(f, f->scr->h - 1), "/"));
    type(f, "lily");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->pos, 6); /* from the last token, wrapped round to the first ·Lily */
    SHOWS(f, "/lily: token 6, match 1 of 2 (wrapped)");
    assert_non_null(strstr(status(f), "query 6 ·Lily"));
    key(f, 'n');
    assert_int_equal(f->b->pos, 14);
    key(f, 'n');
    assert_int_equal(f->b->pos, 6);
    key(f, 'N');
    assert_int_equal(f->b->pos, 14);
    key(f, 'g');
    assert_int_equal(f->b->pos, 0);
    key(f, '/');
    key(f, LP_KEY_ENTER); /* Enter alone: the same search again */
    assert_int_equal(f->b->pos, 6);
    key(f, '/');
    type(f, " a"); /* the raw text, with its space: ·a, not ·ball's "all" */
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->pos, 10);
    key(f, '2'); /* other views follow the token too */
    key(f, '5');
    assert_non_null(strstr(status(f), "token 10"));
    key(f, 'G');
    assert_int_equal(f->b->pos, T - 1);
    key(f, '/');
    type(f, "zebra");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->pos, T - 1);
    assert_int_equal(cell_of(f, "/zebra: no token matches")->color, LP_COLOR_ERROR);
}

/* `:attn L H` switches the attention view to that head instead of printing its table;
 * `:heads` and `:lens` open their views; anything else still runs. */
static void view_commands_switch_the_view(void **state) {
    fixture *f = *state;
    key(f, '3');
    key(f, ':');
    type(f, "attn 2 3");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_ATTENTION);
    assert_int_equal(f->b->layer, 2);
    assert_int_equal(f->b->head, 3);
    assert_false(f->b->output_shown);
    assert_non_null(strstr(row(f, 0), "L2 H3"));
    SHOWS(f, "attn 2 3: shown in view 1");
    key(f, ':');
    type(f, "heads");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_HEADS);
    key(f, ':');
    type(f, "lens");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_LENS);
    /* Out of range: the command runs and says why. */
    key(f, ':');
    type(f, "attn 9 0");
    key(f, LP_KEY_ENTER);
    assert_true(f->b->message_error);
    assert_int_equal(f->b->view, LP_VIEW_LENS);
    /* With options, heads still prints its table. */
    key(f, ':');
    type(f, "heads --sort induction");
    key(f, LP_KEY_ENTER);
    assert_true(f->b->output_shown);
}

/* ---- keys and help ---- */

static void keymap_has_one_binding_per_key_and_scope(void **state) {
    (void)state;
    int n;
    const lp_binding *k = lp_keymap(&n);
    for (int i = 0; i < n; i++) {
        assert_true(k[i].help && k[i].help[0]);
        assert_true(k[i].key_name && k[i].key_name[0]);
        for (int j = i + 1; j < n; j++)
            if (k[i].scope == k[j].scope && k[i].key == k[j].key)
                fail_msg("key %s bound twice in scope %d", k[i].key_name, k[i].scope);
    }
}

static void help_is_written_from_the_keymap(void **state) {
    fixture *f = *state;
    key(f, '?');
    SHOWS(f, "Keys (from the key table)");
    SHOWS(f, "Everywhere");
    /* Every binding's description is on some page of the help, beside its key. */
    int n;
    const lp_binding *k = lp_keymap(&n);
    bool *seen = calloc((size_t)n, sizeof *seen);
    for (int page = 0; page < 20; page++) {
        for (int y = 3; y < f->scr->h - 2; y++) {
            const char *line = row(f, y);
            for (int i = 0; i < n; i++) {
                char want[200];
                snprintf(want, sizeof want, "%.40s", k[i].help);
                const char *h = strstr(line, want);
                if (!h) continue;
                /* the key names, before the description */
                char keys[256];
                snprintf(keys, sizeof keys, "%.*s", (int)(h - line), line);
                char name[64];
                snprintf(name, sizeof name, " %s ", k[i].key_name);
                seen[i] = seen[i] || strstr(keys, name) != NULL;
            }
        }
        key(f, LP_KEY_PAGE_DOWN);
    }
    for (int i = 0; i < n; i++)
        if (!seen[i]) fail_msg("help lacks '%s' for %s", k[i].help, k[i].key_name);
    free(seen);
    key(f, 'q'); /* q closes the help, not the browser */
    assert_false(f->b->help);
    assert_false(f->b->quit);
    assert_int_equal(lp_browser_key(f->b, 'q'), LP_BROWSER_QUIT);
}

/* At 80 columns a long description wraps onto rows under its first, at spaces: every
 * binding's whole text is there (the rows joined), and no row is cut with '…'. The screen
 * is tall enough for the whole help on one page. */
static void help_wraps_long_descriptions_at_80_columns(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 80, 900);
    key(f, '?');
    SHOWS(f, "Keys (from the key table)");
    size_t cap = 1 << 18, at = 0;
    char *all = calloc(cap, 1);
    assert_non_null(all);
    for (int y = 2; y < f->scr->h - 1; y++) {
        const char *line = row(f, y);
        if (strstr(line, "\xE2\x80\xA6")) fail_msg("help row %d is cut: '%s'", y, line);
        /* the row's words, single-spaced */
        for (const char *p = line; *p; p++) {
            if (*p == ' ' && (at == 0 || all[at - 1] == ' ')) continue;
            if (at + 2 < cap) all[at++] = *p;
        }
        if (at > 0 && all[at - 1] != ' ' && at + 2 < cap) all[at++] = ' ';
    }
    int n;
    const lp_binding *k = lp_keymap(&n);
    int wrapped = 0;
    for (int i = 0; i < n; i++) {
        if (!strstr(all, k[i].help)) fail_msg("help lacks the whole of '%s' (%s)", k[i].help, k[i].key_name);
        wrapped += lp_display_width(k[i].help) > 60;
    }
    assert_true(wrapped > 0); /* some descriptions are longer than a row: the test wraps something */
    free(all);
    key(f, 'q');
    lp_screen_resize(f->scr, 120, 40);
}

/* ---- the model view ---- */

static bool is_heat(const lp_cell *c) { return c && c->color >= LP_COLOR_HEAT_0 && c->color < LP_COLOR_HEAT_0 + LP_HEAT_LEVELS; }

/* The thumbnails on screen, found from the cells alone: runs of heat cells on a row are
 * thumbnails side by side, rows of them one after another a layer. Fills the top-left
 * corner of each (up to max) in reading order; returns how many layers (bands of rows)
 * there are and sets *per_row to the runs on every row of them (-1: rows disagree). The
 * legend's scale, on the view's last row, is left out. */
typedef struct {
    int x, y, w, h;
} thumb;
static int find_thumbnails(const fixture *f, thumb *out, int max, int *n_out, int *per_row) {
    int bands = 0, n = 0, band_first = 0;
    *per_row = 0;
    bool in_band = false;
    for (int y = 2; y < f->scr->h - 3; y++) {
        int runs = 0;
        for (int x = 0; x < f->scr->w; x++) {
            if (!is_heat(lp_screen_at(f->scr, x, y)) || is_heat(lp_screen_at(f->scr, x - 1, y))) continue;
            int w = 0;
            while (is_heat(lp_screen_at(f->scr, x + w, y))) w++;
            if (!in_band && n < max) out[n++] = (thumb){x, y, w, 0};
            runs++;
        }
        if (runs && !in_band) {
            bands++;
            band_first = n - runs;
            if (*per_row == 0) *per_row = runs;
        }
        if (runs && *per_row != runs) *per_row = -1;
        if (in_band && !runs)
            for (int i = band_first; i < n; i++) out[i].h = y - out[i].y;
        in_band = runs > 0;
    }
    *n_out = n;
    return bands;
}

/* bertviz's model view: every layer x head a thumbnail of its pattern, at the smallest
 * terminal the browser is made for and at twice that, with the layers and heads labelled. */
static void model_view_shows_every_layer_and_head(void **state) {
    fixture *f = *state;
    const lp_config *c = lp_model_config(f->s.model);
    static const int SIZES[][2] = {{80, 24}, {160, 48}};
    for (int k = 0; k < 2; k++) {
        lp_screen_resize(f->scr, SIZES[k][0], SIZES[k][1]);
        key(f, '8');
        assert_non_null(strstr(row(f, 0), k == 0 ? " 8 model " : " 8 Model view "));
        thumb t[64];
        int n, per_row, bands = find_thumbnails(f, t, 64, &n, &per_row);
        if (bands != c->n_layer || per_row != c->n_head) {
            dump(f);
            fail_msg("%dx%d: %d bands of %d thumbnails, wanted %d x %d", f->scr->w, f->scr->h, bands, per_row,
                     c->n_layer, c->n_head);
        }
        /* Each is a whole rectangle, all the same size, at least 2 x 3. */
        for (int i = 0; i < n; i++) {
            assert_int_equal(t[i].w, t[0].w);
            assert_int_equal(t[i].h, t[0].h);
            for (int y = t[i].y; y < t[i].y + t[i].h; y++)
                for (int x = t[i].x; x < t[i].x + t[i].w; x++) assert_true(is_heat(lp_screen_at(f->scr, x, y)));
        }
        assert_true(t[0].h >= 2 && t[0].w >= 3);
        for (int l = 0; l < c->n_layer; l++) {
            char lab[16];
            snprintf(lab, sizeof lab, "L%d ", l);
            int x, y;
            find_below(f, lab, 3, &x, &y);
            assert_int_equal(x, 0);
            assert_true(y >= t[l * c->n_head].y && y < t[l * c->n_head].y + t[0].h);
        }
        for (int h = 0; h < c->n_head; h++) {
            char lab[16];
            snprintf(lab, sizeof lab, "H%d", h);
            int x, y;
            find_below(f, lab, 2, &x, &y);
            assert_int_equal(y, t[h].y - 1);
            assert_true(x >= t[h].x && x < t[h].x + t[h].w);
        }
        SHOWS(f, "max-pooled: a cell is the largest of up to ");
        if (k == 1) assert_true(t[0].h > 2 * 2 && t[0].w > 2 * 3); /* more room, larger thumbnails */
    }
    /* At 160 x 48 the thumbnails are 7 rows by 18 columns for 21 tokens: 3 queries, 2 keys. */
    SHOWS(f, "up to 3 queries × 2 keys");
    /* The cursor's head has bars either side; its labels are the selection's. */
    key(f, 'j');
    key(f, 'l');
    thumb t[64];
    int n, per_row;
    find_thumbnails(f, t, 64, &n, &per_row);
    const thumb *sel = &t[1 * c->n_head + 1];
    for (int y = sel->y; y < sel->y + sel->h; y++) {
        assert_int_equal(lp_screen_at(f->scr, sel->x - 1, y)->color, LP_COLOR_SELECTED);
        assert_int_equal(lp_screen_at(f->scr, sel->x + sel->w, y)->color, LP_COLOR_SELECTED);
    }
    assert_int_equal(lp_screen_at(f->scr, t[0].x - 1, t[0].y)->color, LP_COLOR_NORMAL);
    assert_int_equal(find_below(f, "H1", 2, NULL, NULL)->color, LP_COLOR_SELECTED);
    assert_int_equal(find_below(f, "H2", 2, NULL, NULL)->color, LP_COLOR_LABEL);
}

/* More layers and heads than fit: the thumbnails keep their smallest size, the cursor
 * scrolls them, and arrows in the margins say where the others are. With twice the room
 * all 12 x 24 fit. */
static void model_view_scrolls_layers_and_heads_that_do_not_fit(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 80, 24);
    key(f, '8');
    thumb t[600];
    int n, per_row;
    int bands = find_thumbnails(f, t, 600, &n, &per_row);
    if (bands >= 12 || bands < 4 || per_row >= 24 || per_row < 12) {
        dump(f);
        fail_msg("%d bands of %d thumbnails at 80x24", bands, per_row);
    }
    assert_true(t[0].h >= 2 && t[0].w >= 3);
    SHOWS(f, "▼");
    SHOWS(f, "▶");
    assert_false(shows(f, "▲"));
    assert_false(shows(f, "◀"));
    for (int i = 0; i < 30; i++) key(f, 'j'), key(f, 'l');
    assert_int_equal(f->b->layer, 11);
    assert_int_equal(f->b->head, 23);
    find_below(f, "L11", 2, NULL, NULL);
    find_below(f, "H23", 2, NULL, NULL);
    assert_false(shows(f, " L0 "));
    SHOWS(f, "▲");
    SHOWS(f, "◀");
    assert_false(shows(f, "▼"));
    assert_false(shows(f, "▶"));
    /* the cursor's thumbnail is the last one on screen, with its bars */
    find_thumbnails(f, t, 600, &n, &per_row);
    const thumb *last = &t[n - 1];
    assert_int_equal(lp_screen_at(f->scr, last->x - 1, last->y)->color, LP_COLOR_SELECTED);
    assert_int_equal(lp_screen_at(f->scr, last->x + last->w, last->y)->color, LP_COLOR_SELECTED);
    lp_screen_resize(f->scr, 160, 48);
    render(f);
    assert_int_equal(find_thumbnails(f, t, 600, &n, &per_row), 12);
    assert_int_equal(per_row, 24);
    assert_false(shows(f, "▲"));
    assert_false(shows(f, "▶"));
}

/* Arrows and hjkl move the cursor over layers and heads (h and l: not the token, here),
 * stopping at the edges; the title bar and the status line follow; Enter zooms into the
 * head in the attention view. */
static void model_view_moves_the_cursor_and_enter_zooms_in(void **state) {
    fixture *f = *state;
    const lp_config *c = lp_model_config(f->s.model);
    key(f, '8');
    int pos = f->b->pos;
    key(f, 'k'); /* already on the first layer */
    key(f, LP_KEY_LEFT);
    assert_int_equal(f->b->layer, 0);
    assert_int_equal(f->b->head, 0);
    key(f, 'j');
    key(f, LP_KEY_DOWN);
    key(f, 'l');
    key(f, LP_KEY_RIGHT);
    key(f, LP_KEY_RIGHT);
    key(f, 'h');
    key(f, LP_KEY_UP);
    assert_int_equal(f->b->layer, 1);
    assert_int_equal(f->b->head, 2);
    assert_int_equal(f->b->pos, pos);
    assert_non_null(strstr(row(f, 0), " L1 H2 "));
    char want[128];
    snprintf(want, sizeof want, "L1 H2  query %d ", pos);
    assert_non_null(strstr(status(f), want));
    for (int i = 0; i < c->n_head + 2; i++) key(f, 'l');
    for (int i = 0; i < c->n_layer + 2; i++) key(f, 'j');
    assert_int_equal(f->b->layer, c->n_layer - 1);
    assert_int_equal(f->b->head, c->n_head - 1);
    key(f, 'k');
    key(f, 'h');
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_ATTENTION);
    snprintf(want, sizeof want, " L%d H%d ", c->n_layer - 2, c->n_head - 2);
    assert_non_null(strstr(row(f, 0), want));
    assert_non_null(strstr(row(f, 0), " 1 Attention "));
    snprintf(want, sizeof want, "L%d H%d  query %d ", c->n_layer - 2, c->n_head - 2, pos);
    assert_non_null(strstr(status(f), want));
    /* and back: the same head under the cursor */
    key(f, '8');
    assert_int_equal(f->b->layer, c->n_layer - 2);
    assert_int_equal(f->b->head, c->n_head - 2);
}

/* A previous-token head of the bundled model (0.0 when it was trained: found again here
 * by its score) is drawn as the diagonal one key to the left: at 120 x 40 each query is a
 * row and each key two columns, so every cell is the weight itself; at 80 x 24 two queries
 * share a row and the row's strongest cells are still their previous tokens. The rest of
 * the square is there too, at the bottom of the scale (a causal head's upper triangle). */
static void model_view_draws_a_previous_token_head_off_the_diagonal(void **state) {
    fixture *f = *state;
    const lp_config *c = lp_model_config(f->s.model);
    int T = lp_run_len(f->s.run), L = c->n_layer, H = c->n_head;
    float *m = malloc((size_t)L * H * LP_HEAD_METRIC_COUNT * sizeof *m);
    lp_head_metrics(m, f->s.run);
    int best = 0;
    for (int i = 1; i < L * H; i++)
        if (m[(size_t)i * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN] > m[(size_t)best * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN])
            best = i;
    if (m[(size_t)best * LP_HEAD_METRIC_COUNT + LP_HEAD_PREV_TOKEN] < 0.8f) fail_msg("no previous-token head");
    free(m);
    lp_view v;
    OK(lp_run_view(f->s.run, LP_ACT_PATTERN, best / H, best % H, &v));
#define W(i, j) v.data[(size_t)(i) * v.stride[0] + (size_t)(j) * v.stride[1]]
    key(f, '8');
    thumb t[64];
    int n, per_row;
    assert_int_equal(find_thumbnails(f, t, 64, &n, &per_row), L);
    assert_int_equal(per_row, H);
    const thumb *p = &t[best];
    assert_int_equal(p->h, T);
    assert_int_equal(p->w, 2 * T);
    SHOWS(f, "a cell is one query × one key (2 columns a key)");
    int on_prev = 0;
    for (int i = 0; i < T; i++) {
        int strongest = 0;
        for (int j = 0; j < 2 * T; j++) {
            int lv = lp_screen_at(f->scr, p->x + j, p->y + i)->color - LP_COLOR_HEAT_0;
            assert_int_equal(lv, lp_heat_level(W(i, j / 2)));
            if (j > 2 * i + 1) assert_int_equal(lv, 0);
            if (lv > strongest) strongest = lv;
        }
        /* the previous token is the brightest (or as bright as any), on nearly every row */
        int prev = i > 0 ? i - 1 : 0;
        on_prev += lp_screen_at(f->scr, p->x + 2 * prev, p->y + i)->color - LP_COLOR_HEAT_0 == strongest;
    }
    assert_true(on_prev >= T - 2);
    /* Pooled: rows of two queries, a column a key. */
    lp_screen_resize(f->scr, 80, 24);
    render(f);
    assert_int_equal(find_thumbnails(f, t, 64, &n, &per_row), L);
    p = &t[best];
    assert_int_equal(p->w, T);
    assert_true(p->h < T);
    SHOWS(f, "max-pooled: a cell is the largest of up to 2 queries × 1 key");
    int on_diagonal = 0;
    for (int r = 0; r < p->h; r++) {
        int q0 = r * T / p->h, q1 = (r + 1) * T / p->h, strongest = 0, where = -1;
        for (int j = 0; j < T; j++) {
            int lv = lp_screen_at(f->scr, p->x + j, p->y + r)->color - LP_COLOR_HEAT_0;
            float mx = 0;
            for (int i = q0; i < q1; i++) mx = W(i, j) > mx ? W(i, j) : mx;
            assert_int_equal(lv, lp_heat_level(mx)); /* the largest, not the mean */
            if (j >= q1) assert_int_equal(lv, 0);
            if (lv > strongest) strongest = lv, where = j;
        }
        on_diagonal += where >= q0 - 1 && where < q1 - 1;
    }
    assert_true(on_diagonal >= p->h - 1);
#undef W
}

/* Thumbnails of a full bidirectional pattern (an encoder's: weight above the diagonal as
 * well as below) keep the whole square: here the anti-diagonal, every query on the key
 * mirrored from it, and a transposed (strided) view of it. Pooling takes the largest
 * weight a cell covers. */
static void thumbnails_draw_the_whole_square(void **state) {
    (void)state;
    enum { T = 6 };
    float a[T * T] = {0};
    for (int i = 0; i < T; i++) a[i * T + (T - 1 - i)] = 1.0f;
    a[0 * T + 0] = 0.3f; /* a weak second key in the first row */
    lp_view v = {.data = a, .ndim = 2, .shape = {T, T}, .stride = {T, 1}};
    uint8_t lv[2 * T * T];
    lp_thumbnail_levels(lv, T, 2 * T, &v); /* one row a query, two columns a key */
    for (int i = 0; i < T; i++)
        for (int j = 0; j < 2 * T; j++) {
            int want = j / 2 == T - 1 - i ? LP_HEAT_LEVELS - 1 : i == 0 && j / 2 == 0 ? lp_heat_level(0.3) : 0;
            assert_int_equal(lv[i * 2 * T + j], want);
        }
    lp_thumbnail_levels(lv, 3, 3, &v); /* 2 x 2 tokens a cell: the anti-diagonal, at full strength */
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) assert_int_equal(lv[r * 3 + c], c == 2 - r ? LP_HEAT_LEVELS - 1 : r == 0 && c == 0 ? lp_heat_level(0.3) : 0);
    lp_view tr = {.data = a, .ndim = 2, .shape = {T, T}, .stride = {1, T}}; /* transposed */
    lp_thumbnail_levels(lv, T, T, &tr);
    assert_int_equal(lv[0 * T + 0], lp_heat_level(0.3));
    for (int i = 0; i < T; i++) assert_int_equal(lv[i * T + (T - 1 - i)], LP_HEAT_LEVELS - 1);
    /* The attention view masks the upper triangle of a causal head only. */
    assert_false(lp_pattern_causal(&v));
    assert_false(lp_pattern_causal(&tr));
    float low[T * T] = {0};
    for (int i = 0; i < T; i++) low[i * T + (i > 0 ? i - 1 : 0)] = 1.0f;
    lp_view lo = {.data = low, .ndim = 2, .shape = {T, T}, .stride = {T, 1}};
    assert_true(lp_pattern_causal(&lo));
    /* A lone strong weight in a large cell keeps the cell bright (a mean would not). */
    float big[64 * 64] = {0};
    big[40 * 64 + 50] = 0.9f;
    lp_view bv = {.data = big, .ndim = 2, .shape = {64, 64}, .stride = {64, 1}};
    lp_thumbnail_levels(lv, 4, 4, &bv);
    for (int k = 0; k < 16; k++) assert_int_equal(lv[k], k == 2 * 4 + 3 ? lp_heat_level(0.9) : 0);
}

/* ---- terminals ---- */

static void no_color_draws_shading_characters(void **state) {
    fixture *f = *state;
    render(f);
    /* The query row at the end: the heat cells are shading characters, not colour. */
    int T = lp_run_len(f->s.run), x, y;
    char want[32];
    snprintf(want, sizeof want, "%3d .", T - 1);
    assert_int_equal(lp_screen_find(f->scr, want, &x, &y), 0);
    int shaded = 0;
    for (int i = 16; i < f->scr->w; i++) {
        const char *ch = lp_screen_at(f->scr, i, y)->ch;
        shaded += !strcmp(ch, "░") || !strcmp(ch, "▒") || !strcmp(ch, "▓") || !strcmp(ch, "█");
    }
    assert_true(shaded > 0);
    /* The heads grid too, with its numbers kept readable beside the shade. */
    key(f, '2');
    int hx, hy;
    assert_int_equal(lp_screen_find(f->scr, "  L1 ", &hx, &hy), 0);
    char line[512];
    lp_screen_row_text(f->scr, 0, hy, f->scr->w, line, sizeof line);
    assert_non_null(strstr(line, "0."));
    /* The model view's thumbnails: shades on the layers' rows (not only in the legend). */
    key(f, '8');
    find_below(f, "L0 ", 2, &hx, &hy);
    lp_screen_row_text(f->scr, 3, hy, f->scr->w - 3, line, sizeof line);
    assert_true(strstr(line, "░") || strstr(line, "▒") || strstr(line, "▓") || strstr(line, "█"));
}

static void wide_tokens_keep_the_grid_aligned(void **state) {
    fixture *f = *state;
    render(f);
    SHOWS(f, "中");
    SHOWS(f, "スト");
    int T = lp_run_len(f->s.run), x0 = -1;
    /* The cell columns start at the same x on every row, whatever the labels hold. */
    const int *ids = lp_run_ids(f->s.run);
    for (int i = 0; i < T; i++) {
        int y = label_row(f, i);
        if (y < 0) continue;
        int first = -1;
        for (int c = 0; c < f->scr->w; c++) {
            lp_color col = lp_screen_at(f->scr, c, y)->color;
            if (col >= LP_COLOR_HEAT_0 && col < LP_COLOR_HEAT_0 + LP_HEAT_LEVELS) {
                first = c;
                break;
            }
        }
        if (x0 < 0) x0 = first;
        assert_int_equal(first, x0);
        /* and each row has exactly i + 1 heat cells of 3 columns */
        int heat = 0;
        for (int c = 0; c < f->scr->w; c++) {
            lp_color col = lp_screen_at(f->scr, c, y)->color;
            heat += col >= LP_COLOR_HEAT_0 && col < LP_COLOR_HEAT_0 + LP_HEAT_LEVELS;
        }
        assert_int_equal(heat, 3 * (i + 1));
    }
    assert_true(x0 > 0);
    /* A wide character in the key header sits inside its 3-column cell: token 0 is "中". */
    assert_int_equal(ids[0], lp_tokenizer_piece_to_id(lp_model_tokenizer(f->s.model), "ä¸Ń"));
    int wx, wy;
    find_below(f, "中", 3, &wx, &wy);
    assert_true(wy < label_row(f, 0));
    assert_int_equal(wx, x0);
    assert_int_equal(lp_screen_at(f->scr, wx, wy)->width, 2);
    assert_int_equal(lp_screen_at(f->scr, wx + 1, wy)->width, 0);
    /* The strip, the lens and the activations take them too. */
    for (int v = 0; v < LP_VIEW_COUNT; v++) key(f, lp_view_key(v));
    key(f, '5');
    SHOWS(f, "中");
}

/* ---- the features view ---- */

/* Its columns: the features that fire somewhere in the run, by their largest activation,
 * ties by the smaller id; a feature at 0 (or below) everywhere is left out. */
static void feature_ranking_orders_by_peak_and_leaves_out_silent_features(void **state) {
    (void)state;
    const float acts[3 * 6] = {0, 1, 0, 2, 0, 0, /* t0 */
                               0, 3, 0, 2, 0, -1, /* t1 */
                               0, 0, 0, 3, 0.5f, 0 /* t2 */};
    float peak[6];
    int ids[6];
    assert_int_equal(lp_feature_ranking(acts, 3, 6, peak, ids), 3);
    assert_int_equal(ids[0], 1), assert_int_equal(ids[1], 3), assert_int_equal(ids[2], 4);
    assert_true(peak[1] == 3 && peak[3] == 3 && peak[4] == 0.5f && peak[0] == 0 && peak[5] == 0);
    const float none[2 * 2] = {0, -1, 0, 0};
    assert_int_equal(lp_feature_ranking(none, 2, 2, peak, ids), 0);
}

/* A cell's number: as many decimals as the width allows, then thousands, then '+'. */
static void fit_number_keeps_what_the_width_allows(void **state) {
    (void)state;
    static const struct {
        double v;
        int w;
        const char *want;
    } CASES[] = {{5.8011, 4, "5.80"}, {12.34, 4, "12.3"}, {123.4, 4, "123"}, {1234, 4, "1234"}, {12345, 4, "12k"},
                 {5.8011, 6, "5.80"}, {0.004, 4, "0.00"}, {7, 1, "7"},          {2.5e6, 4, "2.5M"}, {1e12, 3, "+"}};
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        char buf[32];
        lp_fit_number(CASES[i].v, CASES[i].w, buf, sizeof buf);
        if (strcmp(buf, CASES[i].want) != 0) fail_msg("%g in %d: '%s', not '%s'", CASES[i].v, CASES[i].w, buf, CASES[i].want);
    }
}

/* The panel beside the heat map from 64 columns, below it on a narrow tall area, else none;
 * cells as wide as the widest id needs; the lists share what height is left. */
static void features_layout_puts_the_panel_beside_below_or_nowhere(void **state) {
    (void)state;
    lp_features_layout g;
    lp_features_layout_of((lp_rect){0, 2, 80, 20}, 511, &g); /* 80 x 24 */
    assert_int_equal(g.side.w, 32), assert_int_equal(g.side.x, 48), assert_int_equal(g.side.y, 3);
    assert_int_equal(g.grid.w, 47), assert_int_equal(g.label_w, 11), assert_int_equal(g.cell_w, 5);
    assert_int_equal(g.cols, 7), assert_int_equal(g.rows, 18), assert_int_equal(g.list_rows, 4);
    assert_true(g.grid.x + g.grid.w < g.side.x);
    lp_features_layout_of((lp_rect){0, 2, 50, 17}, 511, &g); /* narrow: below */
    assert_int_equal(g.side.x, 0), assert_int_equal(g.side.w, 50);
    assert_int_equal(g.grid.h, 8), assert_int_equal(g.side.y, 3 + 8 + 1), assert_int_equal(g.side.h, 7);
    assert_int_equal(g.rows, 7);
    lp_features_layout_of((lp_rect){0, 2, 50, 8}, 511, &g); /* 50 x 12: no room for it */
    assert_int_equal(g.side.w, 0), assert_int_equal(g.list_rows, 0), assert_int_equal(g.rows, 6);
    assert_int_equal(g.label_w, 12), assert_int_equal(g.cols, 7);
    lp_features_layout_of((lp_rect){0, 2, 200, 56}, 16383, &g);
    assert_int_equal(g.cell_w, 6), assert_int_equal(g.side.w, 48), assert_int_equal(g.list_rows, 10);
    lp_features_layout_of((lp_rect){0, 2, 200, 56}, (1 << 24) - 1, &g);
    assert_int_equal(g.cell_w, 9);
}

/* The row of the heat map's column headers (the features' ids, right-aligned in cells of w)
 * for ids[0..n), as drawn from column x0. */
static void feature_header(const int *ids, int n, int w, char *buf, size_t cap) {
    buf[0] = '\0';
    for (int i = 0; i < n; i++) lp_appendf(buf, cap, "%*d%s", w - 1, ids[i], i + 1 < n ? " " : "");
}

/* On the bundled model and dictionary at 80 x 24: the empty state names `sae load`, `a`
 * types it; the heat map's columns are the run's features by peak, the status line the
 * selected cell's activation, the panel the selected feature's peak, logit effects and
 * neighbours as lp_session_feature_effects (`feature`'s code) gives them; ← → move the
 * feature, ↑ ↓ the token, Enter prints `feature ID`, d goes to the next dictionary and
 * `:sae load` from another view opens this one on the dictionary. */
static void features_view_shows_the_runs_features_and_the_selected_one(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 80, 24);
    key(f, '0');
    assert_int_equal(f->b->view, LP_VIEW_FEATURES);
    SHOWS(f, "No dictionary loaded: :sae load PATH");
    key(f, 'a');
    assert_int_equal(f->b->line_mode, LP_LINE_COMMAND);
    assert_string_equal(lp_line_text(f->b->line), "sae load ");
    type(f, "models/default-sae");
    key(f, LP_KEY_ENTER);
    assert_false(f->b->message_error);
    key(f, LP_KEY_ESC); /* the output pane away */
    SHOWS(f, "blocks.1.resid_pre");
    float *acts = NULL, peak[512];
    int ids[512], T = lp_run_len(f->s.run);
    OK(lp_session_sae_encode(&f->s, 0, &acts));
    int n = lp_feature_ranking(acts, T, 512, peak, ids);
    assert_true(n > 7);
    char want[256];
    snprintf(want, sizeof want, "%d of 512 fire", n);
    SHOWS(f, want);
    /* the header row: the first seven features, strongest first */
    feature_header(ids, 7, 5, want, sizeof want);
    assert_non_null(strstr(row(f, 3), want));
    /* the cursor: the last token, the strongest feature */
    assert_int_equal(f->b->pos, T - 1);
    for (int col = 0; col < 2; col++) {
        int fid = ids[col];
        snprintf(want, sizeof want, "token %d ·to  f%d %.4f  column %d/%d", T - 1, fid, (double)acts[(size_t)(T - 1) * 512 + fid],
                 col + 1, n);
        if (!strstr(status(f), want)) fail_msg("status '%s', not '%s'", status(f), want);
        lp_feature_effects fx;
        OK(lp_session_feature_effects(&f->s, 0, fid, acts, 10, &fx));
        snprintf(want, sizeof want, "f%d  peak %.4f at %d", fid, (double)peak[fid], fx.pos);
        SHOWS(f, want);
        assert_true(fx.has_logits && fx.n_promoted == 10 && fx.n_nearest == 10);
        snprintf(want, sizeof want, "%.4f", (double)fx.promoted[0].value);
        SHOWS(f, want);
        snprintf(want, sizeof want, "%.4f", (double)fx.suppressed[0].value);
        SHOWS(f, want);
        snprintf(want, sizeof want, "f%d ", fx.nearest[0].id);
        SHOWS(f, want);
        lp_feature_effects_clear(&fx);
        key(f, 'l');
    }
    key(f, LP_KEY_LEFT);
    key(f, 'h'); /* no column before the first */
    key(f, 'k');
    assert_int_equal(f->b->pos, T - 2);
    snprintf(want, sizeof want, "token %d ·drink  f%d %.4f", T - 2, ids[0], (double)acts[(size_t)(T - 2) * 512 + ids[0]]);
    if (!strstr(status(f), want)) fail_msg("status '%s', not '%s'", status(f), want);
    /* Enter: the feature command's own table in the pane */
    key(f, LP_KEY_ENTER);
    assert_false(f->b->message_error);
    assert_true(f->b->output_shown);
    snprintf(want, sizeof want, "feature %d --sae \"blocks.1.resid_pre\":", ids[0]);
    SHOWS(f, want);
    SHOWS(f, "promotes");
    key(f, LP_KEY_ESC);
    /* m: a note about the dictionary's layer and the token */
    key(f, 'm');
    type(f, "a feature");
    key(f, LP_KEY_ENTER);
    json_t *rows = NULL;
    OK(lp_store_query(f->s.store, "SELECT layer, pos FROM findings WHERE text = 'a feature'", NULL, false, &rows, NULL));
    assert_int_equal(lp_row_int(json_array_get(rows, 0), "layer", -1), 1);
    assert_int_equal(lp_row_int(json_array_get(rows, 0), "pos", -1), T - 2);
    json_decref(rows);
    /* a second dictionary: shown once loaded; d goes round them */
    key(f, ':');
    type(f, "sae load tests/fixtures/sae/saelens_jumprelu --name jr");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    SHOWS(f, "jr (blocks.1.resid_pre)  [2/2, d: next]");
    key(f, 'd');
    SHOWS(f, "blocks.1.resid_pre  [1/2, d: next]");
    /* from another view, :sae load opens this one on the new dictionary, :features too */
    key(f, '1');
    key(f, ':');
    type(f, "sae load tests/fixtures/sae/saelens_topk --name tk");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_FEATURES);
    key(f, LP_KEY_ESC);
    SHOWS(f, "tk (blocks.0.mlp_out)  [3/3, d: next]");
    key(f, '1');
    key(f, ':');
    type(f, "features");
    key(f, LP_KEY_ENTER);
    assert_int_equal(f->b->view, LP_VIEW_FEATURES);
    assert_false(f->b->output_shown);
    /* every size from the smallest: no panel, then below, then beside with ten to a list */
    static const int SIZES[][2] = {{50, 12}, {50, 24}, {200, 60}, {80, 24}};
    for (int i = 0; i < 4; i++) {
        lp_screen_resize(f->scr, SIZES[i][0], SIZES[i][1]);
        render(f);
        SHOWS(f, "tk (blocks.0.mlp_out)");
        assert_false(shows(f, "too small"));
    }
    free(acts);
}

/* A dictionary on a site outside the residual stream has no direct logit effect: the panel
 * says so and still lists the neighbours. */
/* The view keeps its encoding while the rows its dictionary reads stay the same (a command
 * that makes no run, or runs the same text again), encodes again when they change; `:feature
 * ID [--sae NAME]` opens it on that feature's column, and says so when the feature is silent. */
static void features_view_keeps_its_encoding_and_feature_selects_a_column(void **state) {
    fixture *f = *state;
    lp_screen_resize(f->scr, 80, 24);
    key(f, ':');
    type(f, "sae load models/default-sae --name ds");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    assert_int_equal(f->b->view, LP_VIEW_FEATURES);
    SHOWS(f, "ds (blocks.1.resid_pre)");
    unsigned n0 = lp_features_encode_count();
    static const char *const SAME[] = {"sae list", "top 3", "run " IOI}; /* the same text: the same rows */
    for (int i = 0; i < 3; i++) {
        key(f, ':');
        type(f, SAME[i]);
        key(f, LP_KEY_ENTER);
        key(f, LP_KEY_ESC);
        assert_false(f->b->message_error);
        if (lp_features_encode_count() != n0) fail_msg("'%s' encoded the run again", SAME[i]);
    }
    float *acts = NULL, peak[512];
    int ids[512], T = lp_run_len(f->s.run);
    OK(lp_session_sae_encode(&f->s, 0, &acts));
    int n = lp_feature_ranking(acts, T, 512, peak, ids);
    assert_true(n > 5);
    /* :feature ID: the pane shows the command's table, the view that feature's column */
    key(f, '1');
    key(f, ':');
    char line[128], want[128];
    snprintf(line, sizeof line, "feature %d --sae ds", ids[4]);
    type(f, line);
    key(f, LP_KEY_ENTER);
    assert_false(f->b->message_error);
    assert_int_equal(f->b->view, LP_VIEW_FEATURES);
    SHOWS(f, "promotes");
    key(f, LP_KEY_ESC);
    snprintf(want, sizeof want, "f%d %.4f  column 5/%d", ids[4], (double)acts[(size_t)(T - 1) * 512 + ids[4]], n);
    if (!strstr(status(f), want)) fail_msg("status '%s', not '%s'", status(f), want);
    assert_int_equal(lp_features_encode_count(), n0);
    /* a silent feature: no column, and the message says why */
    int silent = -1;
    for (int i = 0; i < 512 && silent < 0; i++)
        if (!(peak[i] > 0)) silent = i;
    assert_true(silent >= 0);
    key(f, ':');
    snprintf(line, sizeof line, "feature %d", silent);
    type(f, line);
    key(f, LP_KEY_ENTER);
    snprintf(want, sizeof want, "f%d does not fire on this run", silent);
    SHOWS(f, want);
    key(f, LP_KEY_ESC);
    /* another text: other rows, encoded again */
    key(f, ':');
    type(f, "run Then, Anna and Tom went to the park.");
    key(f, LP_KEY_ENTER);
    key(f, LP_KEY_ESC);
    assert_int_equal(lp_features_encode_count(), n0 + 1);
    free(acts);
}

static void features_view_says_when_a_site_has_no_logit_effect(void **state) {
    fixture *f = *state;
    OK(lp_exec(&f->s, "sae load tests/fixtures/sae/saelens_standard --site blocks.0.ln2.hook_normalized"));
    lp_screen_resize(f->scr, 80, 24);
    key(f, '0');
    SHOWS(f, "no direct logit effect:");
    SHOWS(f, "blocks.0.ln2 is not");
    SHOWS(f, "in the residual stream");
    SHOWS(f, "nearest (decoder cosine)");
    assert_false(shows(f, "promotes"));
}

/* ---- the examples view ---- */

/* Its context line: up to 8 tokens each side of the activating one, back to a head's key,
 * cut from the end farther away until they fit; the token itself always stays. */
static void context_window_keeps_the_token_and_cuts_the_far_end(void **state) {
    (void)state;
    int w[20], first, last;
    for (int i = 0; i < 20; i++) w[i] = 5;
    lp_context_window(w, 20, 10, -1, 8, 1000, &first, &last);
    assert_int_equal(first, 2), assert_int_equal(last, 18);
    lp_context_window(w, 20, 0, -1, 8, 1000, &first, &last); /* nothing before the first token */
    assert_int_equal(first, 0), assert_int_equal(last, 8);
    lp_context_window(w, 20, 19, -1, 8, 1000, &first, &last);
    assert_int_equal(first, 11), assert_int_equal(last, 19);
    /* room for five: both ends cut in turn, the one after the token first on a tie */
    lp_context_window(w, 20, 10, -1, 8, 25, &first, &last);
    assert_int_equal(first, 8), assert_int_equal(last, 12);
    lp_context_window(w, 20, 10, -1, 8, 20, &first, &last);
    assert_int_equal(first, 8), assert_int_equal(last, 11);
    /* a head's key further back than 8: kept while the tokens after the query can go */
    lp_context_window(w, 20, 15, 2, 8, 1000, &first, &last);
    assert_int_equal(first, 2), assert_int_equal(last, 19);
    lp_context_window(w, 20, 15, 2, 8, 70, &first, &last);
    assert_int_equal(first, 2), assert_int_equal(last, 15);
    lp_context_window(w, 20, 15, 2, 8, 30, &first, &last); /* then it has to go */
    assert_int_equal(first, 10), assert_int_equal(last, 15);
    /* a token wider than the room stays, alone (the screen clips it) */
    w[10] = 100;
    lp_context_window(w, 20, 10, -1, 8, 30, &first, &last);
    assert_int_equal(first, 10), assert_int_equal(last, 10);
}

/* The histogram: the bins from the first to the last with tokens (empty ones between kept),
 * grouped when the rows are fewer; a bin with tokens never gets an empty bar. */
static void histogram_rows_group_bins_and_bars_never_hide_a_count(void **state) {
    (void)state;
    long long c[10] = {0, 0, 3, 0, 5, 1, 0, 0, 2, 0}, out[10];
    int lo, g;
    assert_int_equal(lp_histogram_rows(c, 10, 10, &lo, &g, out), 7);
    assert_int_equal(lo, 2), assert_int_equal(g, 1);
    long long want7[] = {3, 0, 5, 1, 0, 0, 2};
    for (int i = 0; i < 7; i++) assert_int_equal(out[i], want7[i]);
    assert_int_equal(lp_histogram_rows(c, 10, 3, &lo, &g, out), 3);
    assert_int_equal(g, 3);
    assert_int_equal(out[0], 8), assert_int_equal(out[1], 1), assert_int_equal(out[2], 2);
    assert_int_equal(lp_histogram_rows(c, 10, 0, &lo, &g, out), 0);
    long long none[4] = {0};
    assert_int_equal(lp_histogram_rows(none, 4, 4, &lo, &g, out), 0);
    assert_int_equal(lp_bar_eighths(0, 10, 5), 0);
    assert_int_equal(lp_bar_eighths(10, 10, 5), 40);
    assert_int_equal(lp_bar_eighths(5, 10, 5), 20);
    assert_int_equal(lp_bar_eighths(1, 100000, 5), 1);
    assert_int_equal(lp_bar_eighths(3, 0, 5), 0);
}

/* Renders until the view has read what it shows (a unit change is read on the next update). */
static void settle(fixture *f) {
    for (int i = 0; i < 3 && (lp_browser_stale(f->b) || shows(f, "Reading the store")); i++) render(f);
}

/* Row y's cells drawn as the activating token (the selected colour, bold), as text. */
static const char *highlighted(const fixture *f, int y) {
    static char buf[512];
    buf[0] = '\0';
    for (int x = 0; x < f->scr->w; x++) {
        const lp_cell *c = lp_screen_at(f->scr, x, y);
        if (c->color == LP_COLOR_SELECTED && (c->attr & LP_ATTR_BOLD)) strncat(buf, c->ch, sizeof buf - strlen(buf) - 1);
    }
    return buf;
}

static json_t *top_example(fixture *f, const char *kind, int layer, int unit, int rank) {
    json_t *rows = NULL, *params = json_pack("[s,i,i,i]", kind, layer, unit, rank); /* lp_store_query borrows it */
    OK(lp_store_query(f->s.store,
                      "SELECT e.value, e.token, e.pos, e.key_pos, e.key_token, e.item, i.run_id FROM unit_examples e"
                      " JOIN dataset_items i USING (dataset_id, item) WHERE e.unit_kind = ?1 AND e.layer = ?2 AND"
                      " e.unit = ?3 AND e.rank = ?4 AND e.metric IN ('activation', 'key')",
                      params, false, &rows, NULL));
    json_decref(params);
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    assert_non_null(row);
    return row;
}

/* 20 IOI prompts, a line each, in path (items.txt in a new directory, returned for rm_tree). */
static char *write_items(char *path, size_t cap) {
    char *dir = make_temp_dir();
    snprintf(path, cap, "%s/items.txt", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    const char *names[] = {"Mary", "John", "Anna", "Tom", "Lily"}, *places[] = {"store", "park", "school", "garden"};
    for (int i = 0; i < 20; i++)
        fprintf(fp, "When %s and Kate went to the %s, Kate gave a drink to\n", names[i / 4], places[i % 4]);
    fclose(fp);
    return dir;
}

/* View 9 on the bundled model: empty until `dataset` runs, then the head's and a neuron's
 * top examples with the token highlighted, the samples and histogram; Enter opens an
 * example's stored run at its token without recording a new one; :examples names a unit. */
static void examples_view_shows_a_units_examples_and_enter_opens_one(void **state) {
    fixture *f = *state;
    key(f, '9');
    SHOWS(f, "No dataset examples in this store");
    SHOWS(f, ":dataset FILE");
    char path[4200], cmd[4300], *dir = write_items(path, sizeof path);
    snprintf(cmd, sizeof cmd, "dataset %s --k 5", path);
    OK(lp_browser_exec(f->b, cmd));
    render(f);
    SHOWS(f, "head 0.0 by key  dataset 1 items.txt (20 items, 1 of 1)");
    /* the head's top example: its weight, its query token highlighted, its key in the status */
    json_t *top = top_example(f, "head", 0, 0, 1);
    char want[256], tok[96];
    snprintf(want, sizeof want, "  1 %8.4g #%-4lld", lp_row_real(top, "value"), lp_row_int(top, "item", 0));
    SHOWS(f, want);
    const char *t = lp_row_str(top, "token");
    lp_screen_token_text(t, strlen(t), tok, sizeof tok);
    assert_string_equal(highlighted(f, 3), tok);
    snprintf(want, sizeof want, "#1 item %lld: %lld %s \xE2\x86\x92 %lld", lp_row_int(top, "item", 0),
             lp_row_int(top, "pos", 0), tok, lp_row_int(top, "key_pos", 0));
    assert_non_null(strstr(status(f), want));
    json_decref(top);
    SHOWS(f, "quantile samples");
    assert_false(shows(f, "density")); /* a head's histogram is of its weights off the sink */
    long long strong = count_of(f, "SELECT sum(count) AS n FROM unit_histograms WHERE unit_kind = 'head' AND layer = 0"
                                   " AND unit = 0 AND bin >= 10"),
              weights = count_of(f, "SELECT sum(n_tokens * (n_tokens - 1) / 2) AS n FROM dataset_items");
    snprintf(want, sizeof want, "%.3g of %lld weights \xE2\x89\xA5" "0.5", (double)strong / (double)weights, weights);
    SHOWS(f, want);
    SHOWS(f, "<0.05");
    /* u: the neuron view 3 lists first at the selected token */
    key(f, 'u');
    settle(f);
    int n = f->b->neuron;
    assert_true(n >= 0);
    snprintf(want, sizeof want, "neuron 0.%d  dataset 1", n);
    SHOWS(f, want);
    SHOWS(f, "density ");
    SHOWS(f, "/284 tokens > 0)");
    key(f, 'L');
    settle(f);
    assert_int_equal(f->b->neuron, n + 1);
    top = top_example(f, "neuron", 0, n + 1, 1);
    t = lp_row_str(top, "token");
    lp_screen_token_text(t, strlen(t), tok, sizeof tok);
    assert_string_equal(highlighted(f, 3), tok);
    json_decref(top);
    /* Enter on the second: its run, at its token, in the activations view; no new run */
    long long runs = count_of(f, "SELECT count(*) AS n FROM runs");
    json_t *second = top_example(f, "neuron", 0, n + 1, 2);
    key(f, 'j');
    assert_non_null(strstr(status(f), "#2 item"));
    for (int i = 0; i < 2; i++) {
        key(f, '9');
        settle(f);
        if (i == 1) assert_non_null(strstr(status(f), "#2 item")); /* back on the same example */
        key(f, LP_KEY_ENTER);
        assert_false(f->b->message_error);
        assert_int_equal(f->s.run_id, lp_row_int(second, "run_id", 0));
        assert_int_equal(f->b->view, LP_VIEW_ACTIVATIONS);
        assert_int_equal(f->b->layer, 0);
        assert_int_equal(f->b->pos, lp_row_int(second, "pos", 0));
        assert_int_equal(count_of(f, "SELECT count(*) AS n FROM runs"), runs);
        /* view 3 gives the neuron's value there: the example's */
        snprintf(want, sizeof want, "neuron %d %+.4f ", n + 1, lp_row_real(second, "value"));
        assert_non_null(strstr(status(f), want));
    }
    json_decref(second);
    /* :examples head L.H (no options) shows it here; with options it prints */
    key(f, ':');
    type(f, "examples head 1.2");
    key(f, LP_KEY_ENTER);
    settle(f);
    assert_int_equal(f->b->view, LP_VIEW_EXAMPLES);
    assert_int_equal(f->b->neuron, -1);
    SHOWS(f, "head 1.2 by key  dataset 1");
    json_t *h = top_example(f, "head", 1, 2, 1);
    key(f, LP_KEY_ENTER); /* a head's: its query in the attention view */
    assert_int_equal(f->s.run_id, lp_row_int(h, "run_id", 0));
    assert_int_equal(f->b->view, LP_VIEW_ATTENTION);
    assert_int_equal(f->b->layer, 1), assert_int_equal(f->b->head, 2);
    assert_int_equal(f->b->pos, lp_row_int(h, "pos", 0));
    json_decref(h);
    key(f, ':');
    type(f, "examples neuron 1.7");
    key(f, LP_KEY_ENTER);
    settle(f);
    assert_int_equal(f->b->neuron, 7);
    assert_int_equal(f->b->layer, 1);
    SHOWS(f, "neuron 1.7  dataset 1");
    key(f, ':');
    type(f, "examples neuron 1.7 --k 1");
    key(f, LP_KEY_ENTER);
    assert_true(f->b->output_shown);
    /* 80 x 24: the examples, the samples and the histogram all there */
    key(f, LP_KEY_ESC);
    lp_screen_resize(f->scr, 80, 24);
    render(f);
    settle(f);
    SHOWS(f, "neuron 1.7");
    SHOWS(f, "\xE2\x96\xB8  1 ");
    SHOWS(f, "quantile samples");
    SHOWS(f, "density ");
    assert_non_null(strstr(highlighted(f, 3), "\xC2\xB7"));
    /* a second dataset: the newest shown, d goes to the other */
    snprintf(cmd, sizeof cmd, "dataset %s --k 3", path);
    OK(lp_browser_exec(f->b, cmd));
    rm_tree(dir);
    render(f);
    SHOWS(f, "neuron 1.7  dataset 2 items.txt (20 items, 1 of 2)");
    key(f, 'd');
    settle(f);
    SHOWS(f, "neuron 1.7  dataset 1 items.txt (20 items, 2 of 2)");
    key(f, 'd');
    settle(f);
    SHOWS(f, "dataset 2 items.txt (20 items, 1 of 2)");
}

/* View 9 on a dictionary's feature: only the datasets that tracked its dictionary (the line
 * that says how to make one when none did; d steps through those alone), its top example
 * with the token highlighted and its density; f and coming from view 0 take view 0's
 * feature, H L u move; Enter opens the item in view 0 on the feature's column; the feature
 * goes when its dictionary is dropped. */
static void examples_view_shows_a_features_examples_and_enter_opens_one(void **state) {
    fixture *f = *state;
    char path[4200], cmd[4300], want[256], tok[96], *dir = write_items(path, sizeof path);
    snprintf(cmd, sizeof cmd, "dataset %s --k 3", path);
    OK(lp_browser_exec(f->b, cmd)); /* 1: no dictionary loaded */
    OK(lp_browser_exec(f->b, "sae load models/default-sae --name ds"));
    key(f, ':');
    type(f, "examples feature 3");
    key(f, LP_KEY_ENTER);
    settle(f);
    assert_int_equal(f->b->view, LP_VIEW_EXAMPLES);
    assert_int_equal(f->b->feature, 3);
    SHOWS(f, "No dataset of this model tracked this dictionary's features");
    SHOWS(f, "run :dataset FILE with the dictionary loaded");
    OK(lp_browser_exec(f->b, cmd)); /* 2: with it */
    snprintf(cmd, sizeof cmd, "dataset %s --k 3 --track neurons,heads", path);
    OK(lp_browser_exec(f->b, cmd)); /* 3: without its features */
    int x = (int)count_of(f, "SELECT unit AS n FROM unit_examples WHERE unit_kind = 'feature' AND rank = 1"
                             " ORDER BY value DESC, unit LIMIT 1");
    assert_true(x > 0);
    key(f, ':');
    snprintf(cmd, sizeof cmd, "examples feature %d --sae ds", x);
    type(f, cmd);
    key(f, LP_KEY_ENTER);
    settle(f);
    snprintf(want, sizeof want, "feature %d of ds  dataset 2 items.txt (20 items, 1 of 1)", x);
    SHOWS(f, want);
    key(f, 'd'); /* the only dataset that tracked it */
    settle(f);
    SHOWS(f, want);
    json_t *top = top_example(f, "feature", 0, x, 1);
    const char *t = lp_row_str(top, "token");
    lp_screen_token_text(t, strlen(t), tok, sizeof tok);
    assert_string_equal(highlighted(f, 3), tok);
    snprintf(want, sizeof want, "  1 %8.4g #%-4lld", lp_row_real(top, "value"), lp_row_int(top, "item", 0));
    SHOWS(f, want);
    snprintf(want, sizeof want, "/%lld tokens > 0)",
             count_of(f, "SELECT sum(n_tokens) AS n FROM dataset_items WHERE dataset_id = 2"));
    SHOWS(f, want);
    /* Enter: view 0 on the item's run, its token, the feature's column; no new run */
    long long runs = count_of(f, "SELECT count(*) AS n FROM runs");
    key(f, LP_KEY_ENTER);
    render(f);
    assert_false(f->b->message_error);
    assert_int_equal(f->s.run_id, lp_row_int(top, "run_id", 0));
    assert_int_equal(f->b->view, LP_VIEW_FEATURES);
    assert_int_equal(f->b->pos, lp_row_int(top, "pos", 0));
    assert_int_equal(count_of(f, "SELECT count(*) AS n FROM runs"), runs);
    snprintf(want, sizeof want, "f%d %.4f  column", x, lp_row_real(top, "value"));
    assert_non_null(strstr(status(f), want));
    json_decref(top);
    /* coming from view 0: its feature; u back to the head; f the feature again; H L step */
    key(f, LP_KEY_RIGHT);
    render(f);
    int dict = -1, y = -1;
    assert_true(lp_features_selection(f->b, &dict, &y));
    assert_int_equal(dict, 0);
    assert_int_not_equal(y, x);
    key(f, '9');
    settle(f);
    assert_int_equal(f->b->feature, y);
    key(f, 'u');
    settle(f);
    assert_int_equal(f->b->feature, -1);
    SHOWS(f, "head 0.0 by key  dataset 2 items.txt (20 items, 2 of 3)"); /* the dataset d chose */
    key(f, 'f');
    settle(f);
    assert_int_equal(f->b->feature, y);
    key(f, 'L');
    assert_int_equal(f->b->feature, y + 1);
    for (int i = 0; i < y + 3; i++) key(f, 'H');
    assert_int_equal(f->b->feature, 0); /* kept in the dictionary */
    /* a second dataset with it: the one d chose kept, then d steps between the two */
    snprintf(cmd, sizeof cmd, "dataset %s --k 2", path);
    OK(lp_browser_exec(f->b, cmd)); /* 4 */
    rm_tree(dir);
    settle(f);
    SHOWS(f, "feature 0 of ds  dataset 2 items.txt (20 items, 2 of 2)");
    key(f, 'd');
    settle(f);
    SHOWS(f, "feature 0 of ds  dataset 4 items.txt (20 items, 1 of 2)");
    key(f, 'd');
    settle(f);
    SHOWS(f, "feature 0 of ds  dataset 2 items.txt (20 items, 2 of 2)");
    /* its dictionary dropped: the feature goes */
    OK(lp_browser_exec(f->b, "sae drop ds"));
    settle(f);
    assert_int_equal(f->b->feature, -1);
    assert_false(shows(f, "feature 0 of ds"));
}

#define STORIES_TEST(t) {#t, t, stories, fixture_close, NULL}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wide_characters_take_two_cells_and_stay_aligned),
        cmocka_unit_test(control_characters_are_escaped_and_tokens_made_visible),
        cmocka_unit_test(scales_have_levels_and_shades),
        cmocka_unit_test(keymap_has_one_binding_per_key_and_scope),
        cmocka_unit_test(line_editor_edits_and_walks_history),
        cmocka_unit_test(context_window_keeps_the_token_and_cuts_the_far_end),
        cmocka_unit_test(histogram_rows_group_bins_and_bars_never_hide_a_count),
        STORIES_TEST(title_names_the_view_and_strip_highlights_the_token),
        STORIES_TEST(small_terminal_gets_a_message),
        STORIES_TEST(title_bar_names_every_view_at_80_columns),
        {"title_bar_names_every_view_with_two_digit_layers_and_heads",
         title_bar_names_every_view_with_two_digit_layers_and_heads, wide_model, fixture_close, NULL},
        STORIES_TEST(empty_patching_view_says_how_to_fill_it),
        {"no_model_says_what_to_do", no_model_says_what_to_do, no_model, fixture_close, NULL},
        STORIES_TEST(attention_view_shows_labels_values_and_cursor),
        STORIES_TEST(attention_scrolls_to_keep_the_cursor_in_view),
        STORIES_TEST(heads_view_colours_the_grid_by_metric),
        STORIES_TEST(heads_view_colours_by_the_newest_scan),
        STORIES_TEST(heads_view_without_a_scan_cycles_the_six_metrics),
        {"heads_view_shows_a_scan_without_a_run", heads_view_shows_a_scan_without_a_run, stories_no_run, fixture_close,
         NULL},
        STORIES_TEST(activations_view_shows_norms_and_top_neurons),
        STORIES_TEST(attributions_view_lists_the_store_then_shows_scores),
        STORIES_TEST(lens_view_shows_top_tokens_per_layer_and_position),
        STORIES_TEST(a_failed_run_leaves_the_run_before_current),
        cmocka_unit_test_setup_teardown(encoder_attention_rows_are_full, bert_mlm, fixture_close),
        cmocka_unit_test_setup_teardown(cross_attention_is_a_target_by_source_heat_map, t5_run, fixture_close),
        cmocka_unit_test_setup_teardown(t5_attributions_colour_source_and_target_on_one_scale, t5_run, fixture_close),
        cmocka_unit_test_setup_teardown(t5_attributions_without_colour_shade_both_lines, t5_run_mono, fixture_close),
        cmocka_unit_test_setup_teardown(t5_heads_view_shows_each_stacks_scan, t5_run, fixture_close),
        cmocka_unit_test_setup_teardown(t5_note_says_stack_and_kind, t5_run, fixture_close),
        cmocka_unit_test_setup_teardown(t5_note_in_the_patching_view_says_the_results_site, t5_run, fixture_close),
        cmocka_unit_test_setup_teardown(strip_marks_specials_masks_and_the_second_text, bert_mlm_pair, fixture_close),
        cmocka_unit_test_setup_teardown(strip_marks_a_roberta_pair_by_its_separators, roberta_pair, fixture_close),
        cmocka_unit_test_setup_teardown(attributions_view_names_the_label_and_t_steps_through_labels, bert_cls_pair,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(attributions_view_names_the_mask_and_t_steps_through_masks, bert_mlm_pair,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(going_to_a_finding_on_a_pair_restores_its_token_types, bert_cls_pair,
                                        fixture_close),
        STORIES_TEST(note_is_written_and_listed_with_its_run),
        STORIES_TEST(findings_of_another_run_rerun_it),
        STORIES_TEST(going_to_a_finding_reuses_its_run_and_session),
        STORIES_TEST(patching_view_shows_a_stored_result),
        STORIES_TEST(patching_view_site_z_cursor_is_the_title_bars_and_the_notes),
        STORIES_TEST(patching_view_colours_denoising_by_recovery),
        STORIES_TEST(model_view_shows_every_layer_and_head),
        STORIES_TEST(model_view_moves_the_cursor_and_enter_zooms_in),
        {"model_view_scrolls_layers_and_heads_that_do_not_fit", model_view_scrolls_layers_and_heads_that_do_not_fit,
         wide_model, fixture_close, NULL},
        {"model_view_draws_a_previous_token_head_off_the_diagonal", model_view_draws_a_previous_token_head_off_the_diagonal,
         default_model, fixture_close, NULL},
        cmocka_unit_test(thumbnails_draw_the_whole_square),
        cmocka_unit_test(feature_ranking_orders_by_peak_and_leaves_out_silent_features),
        cmocka_unit_test(fit_number_keeps_what_the_width_allows),
        cmocka_unit_test(features_layout_puts_the_panel_beside_below_or_nowhere),
        {"features_view_shows_the_runs_features_and_the_selected_one",
         features_view_shows_the_runs_features_and_the_selected_one, default_model, fixture_close, NULL},
        {"features_view_keeps_its_encoding_and_feature_selects_a_column",
         features_view_keeps_its_encoding_and_feature_selects_a_column, default_model, fixture_close, NULL},
        {"features_view_says_when_a_site_has_no_logit_effect", features_view_says_when_a_site_has_no_logit_effect,
         default_model, fixture_close, NULL},
        {"examples_view_shows_a_units_examples_and_enter_opens_one", examples_view_shows_a_units_examples_and_enter_opens_one,
         default_model, fixture_close, NULL},
        {"examples_view_shows_a_features_examples_and_enter_opens_one",
         examples_view_shows_a_features_examples_and_enter_opens_one, default_model, fixture_close, NULL},
        STORIES_TEST(command_output_goes_to_the_pane_and_errors_to_the_message_line),
        STORIES_TEST(help_is_written_from_the_keymap),
        STORIES_TEST(help_wraps_long_descriptions_at_80_columns),
        STORIES_TEST(slash_searches_the_tokens_and_n_steps_through_matches),
        STORIES_TEST(view_commands_switch_the_view),
        STORIES_TEST(train_reports_progress_in_the_browser_not_on_the_terminal),
        {"no_color_draws_shading_characters", no_color_draws_shading_characters, stories_mono, fixture_close, NULL},
        {"wide_tokens_keep_the_grid_aligned", wide_tokens_keep_the_grid_aligned, tiny_cjk, fixture_close, NULL},
    };
    return cmocka_run_group_tests_name("tui", tests, NULL, NULL);
}
