/* View 6, findings and sessions: every session with its notes and tags under it, each with
 * the run it belongs to. Enter on a finding goes there (running the stored run again when
 * it is not the current one, as itself and in its session: `rerun --reuse`); on a session,
 * makes it the current session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "view.h"

typedef struct {
    json_t *items; /* objects: sessions ("session": true) each followed by its findings */
    int sel, top;
} findings_state;

static void *findings_open(lp_browser *b) {
    (void)b;
    return calloc(1, sizeof(findings_state));
}

static void findings_close(void *vst) {
    findings_state *st = vst;
    if (!st) return;
    json_decref(st->items);
    free(st);
}

static int findings_update(void *vst, lp_browser *b) {
    findings_state *st = vst;
    json_decref(st->items);
    st->items = json_array();
    json_t *sessions = lp_browser_query(b,
                                        "SELECT s.id, s.name, (SELECT count(*) FROM runs r WHERE r.session_id = s.id) AS runs"
                                        " FROM sessions s ORDER BY s.id",
                                        NULL);
    json_t *findings = lp_browser_query(b,
                                        "SELECT id, session_id, kind, text, stack, attn_kind, layer, head, pos, token,"
                                        " run_id, run_text, (SELECT target_kind FROM runs r WHERE r.id = run_id) AS"
                                        " target_kind, created_at FROM findings_view ORDER BY session_id, id",
                                        NULL);
    size_t i, j;
    json_t *s, *f;
    json_array_foreach(sessions, i, s) {
        json_object_set_new(s, "session", json_true());
        json_array_append(st->items, s);
        json_array_foreach(findings, j, f)
            if (lp_row_int(f, "session_id", -1) == lp_row_int(s, "id", -2)) json_array_append(st->items, f);
    }
    json_decref(sessions);
    json_decref(findings);
    int n = (int)json_array_size(st->items);
    if (st->sel >= n) st->sel = n - 1;
    if (st->sel < 0) st->sel = 0;
    return LP_OK;
}

static int count_findings(const findings_state *st) {
    int n = 0;
    size_t i;
    json_t *it;
    json_array_foreach(st->items, i, it) n += !json_is_true(json_object_get(it, "session"));
    return n;
}

/* An encoder-decoder's finding's attention (lp_attn_kind), or -1: a one-stack run's, or
 * one with no place. */
static int attn_of(json_t *f) {
    const char *stack = lp_row_str(f, "stack"), *kind = lp_row_str(f, "attn_kind");
    if (!lp_row_str(f, "target_kind")[0] || !stack[0]) return -1;
    return strcmp(kind, "cross") == 0 ? LP_ATTN_CROSS : strcmp(stack, "enc") == 0 ? LP_ATTN_ENC_SELF : LP_ATTN_DEC_SELF;
}

/* "L1 H4 @5 'tok'": where a finding points, as far as it says; an encoder-decoder's says
 * the attention first ("enc L0 H1 @2 ·cat", "cross L1 H0"). */
static void where(json_t *f, char *buf, size_t cap) {
    static const char *const NAMES[LP_ATTN_COUNT] = {"dec ", "cross ", "enc "};
    int attn = attn_of(f);
    snprintf(buf, cap, "%s", attn >= 0 ? NAMES[attn] : "");
    long long l = lp_row_int(f, "layer", -1), h = lp_row_int(f, "head", -1), p = lp_row_int(f, "pos", -1);
    if (l >= 0) lp_appendf(buf, cap, "L%lld ", l);
    if (h >= 0) lp_appendf(buf, cap, "H%lld ", h);
    if (p >= 0) {
        char tok[128];
        const char *t = lp_row_str(f, "token");
        lp_screen_token_text(t, strlen(t), tok, sizeof tok);
        lp_appendf(buf, cap, "@%lld %s", p, tok);
    }
}

static void findings_draw(void *vst, lp_browser *b, lp_screen *scr, lp_rect a) {
    findings_state *st = vst;
    if (!b->s->store) {
        lp_browser_say(scr, a, "No database is open: findings are kept in one.",
                       "start loupe with the default database or -d FILE");
        lp_browser_set_status(b, "no store");
        return;
    }
    int n = (int)json_array_size(st->items), nf = count_findings(st);
    lp_screen_printf(scr, a.x + 1, a.y, a.w - 1, LP_COLOR_LABEL, 0,
                     "%d finding%s in %d session%s   m writes one about what is under the cursor   Enter goes there", nf,
                     nf == 1 ? "" : "s", n - nf, n - nf == 1 ? "" : "s");
    if (nf == 0)
        lp_screen_put_clip(scr, a.x + 1, a.y + 1, a.w - 1, "Nothing noted yet: m (or :note TEXT) writes a finding.",
                           LP_COLOR_DIM, 0);
    int rows = a.h - 2, top = lp_scroll(&st->top, st->sel, rows, n);
    for (int r = 0; r < rows && top + r < n; r++) {
        int k = top + r, y = a.y + 2 + r;
        json_t *it = json_array_get(st->items, (size_t)k);
        bool sel = k == st->sel;
        lp_color c = sel ? LP_COLOR_SELECTED : LP_COLOR_NORMAL;
        if (sel) lp_screen_fill(scr, a.x, y, a.w, " ", c, 0);
        if (json_is_true(json_object_get(it, "session"))) {
            bool cur = lp_row_int(it, "id", 0) == b->s->session_id;
            lp_screen_printf(scr, a.x + 1, y, a.w - 1, sel ? c : LP_COLOR_LABEL, LP_ATTR_BOLD, "session %lld %s%s: %lld run%s",
                             lp_row_int(it, "id", 0), lp_row_str(it, "name"), cur ? " (current)" : "",
                             lp_row_int(it, "runs", 0), lp_row_int(it, "runs", 0) == 1 ? "" : "s");
            continue;
        }
        long long run = lp_row_int(it, "run_id", 0);
        char w[200], head[320];
        where(it, w, sizeof w);
        snprintf(head, sizeof head, "%s#%lld %-4s %-16s", run && run == b->s->run_id ? "\xE2\x97\x8F " : "  ",
                 lp_row_int(it, "id", 0), lp_row_str(it, "kind"), w);
        int x = a.x + 3;
        x += lp_screen_put_clip(scr, x, y, 32, head, c, 0) + 1;
        int tw = (a.w - (x - a.x)) * 3 / 5;
        x += lp_screen_put_clip(scr, x, y, tw, lp_row_str(it, "text"), c, LP_ATTR_BOLD) + 2;
        char rt[400];
        if (run) snprintf(rt, sizeof rt, "run %lld: %s", run, lp_row_str(it, "run_text"));
        else snprintf(rt, sizeof rt, "(no run)");
        if (x < a.x + a.w) lp_screen_put_clip(scr, x, y, a.x + a.w - x, rt, sel ? c : LP_COLOR_DIM, 0);
    }
    json_t *it = json_array_get(st->items, (size_t)st->sel);
    if (!it) lp_browser_set_status(b, "no sessions yet");
    else if (json_is_true(json_object_get(it, "session")))
        lp_browser_set_status(b, "session %s: Enter makes it the current session", lp_row_str(it, "name"));
    else
        lp_browser_set_status(b, "finding #%lld of run %lld: Enter goes there", lp_row_int(it, "id", 0),
                              lp_row_int(it, "run_id", 0));
}

static void go(findings_state *st, lp_browser *b) {
    json_t *it = json_array_get(st->items, (size_t)st->sel);
    if (!it) return;
    char cmd[64];
    if (json_is_true(json_object_get(it, "session"))) {
        snprintf(cmd, sizeof cmd, "session open %lld", lp_row_int(it, "id", 0));
        lp_browser_request(b, cmd, (lp_jump){.view = -1, .layer = -1, .head = -1, .pos = -1, .attn = -1});
        return;
    }
    long long run = lp_row_int(it, "run_id", 0);
    int layer = (int)lp_row_int(it, "layer", -1), head = (int)lp_row_int(it, "head", -1),
        pos = (int)lp_row_int(it, "pos", -1);
    /* The view that shows what the finding names: a head's pattern, a layer's activations;
     * an encoder-decoder's in the attention the finding is about. */
    lp_jump j = {true, head >= 0 || layer < 0 ? LP_VIEW_ATTENTION : LP_VIEW_ACTIVATIONS, layer, head, pos,
                 attn_of(it)};
    if (j.attn >= 0) j.view = LP_VIEW_ATTENTION;
    if (!run) {
        snprintf(b->message, sizeof b->message, "finding #%lld belongs to no run", lp_row_int(it, "id", 0));
        b->message_error = true;
        return;
    }
    if (run != b->s->run_id) { /* the stored run again, as itself: no new run each time */
        snprintf(cmd, sizeof cmd, "rerun %lld --reuse", run);
        lp_browser_request(b, cmd, j);
        return;
    }
    lp_browser_jump(b, &j);
}

static bool findings_act(void *vst, lp_browser *b, lp_action a) {
    findings_state *st = vst;
    int n = (int)json_array_size(st->items);
    switch (a) {
    case LP_DO_UP: if (st->sel > 0) st->sel--; break;
    case LP_DO_DOWN: if (st->sel + 1 < n) st->sel++; break;
    case LP_DO_ENTER: go(st, b); break;
    default: return false;
    }
    return true;
}

static void findings_subject(void *st, const lp_browser *b, int *layer, int *head, int *pos) {
    (void)st, (void)b;
    *layer = *head = *pos = -1;
}

const lp_view_ops lp_view_findings = {
    .name = "notes",
    .title = "Findings",
    .open = findings_open,
    .close = findings_close,
    .update = findings_update,
    .draw = findings_draw,
    .act = findings_act,
    .subject = findings_subject,
};
