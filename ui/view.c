/* The browser's frame and dispatch: the state every view reads (selected token, layer,
 * head), the title bar, token strip, status bar, message line, output pane and help, and
 * keys looked up in the keymap. Commands from the `:` line run through lp_exec on the same
 * session with their output captured for the pane. */
#include "view.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/output.h"
#include "loupe/sae.h"
#include "loupe/tokenizer.h"
#include "tui_line.h"

static const lp_view_ops *const VIEWS[LP_VIEW_COUNT] = {
    &lp_view_attention, &lp_view_heads, &lp_view_activations, &lp_view_attributions,
    &lp_view_lens,      &lp_view_findings, &lp_view_patching, &lp_view_model,     &lp_view_examples,
    &lp_view_features,
};

const lp_view_ops *lp_view_get(int index) { return index >= 0 && index < LP_VIEW_COUNT ? VIEWS[index] : NULL; }

_Static_assert(LP_VIEW_COUNT <= 10, "views have the keys 1 to 9 and 0");
int lp_view_key(int view) { return view == 9 ? '0' : '1' + view; }

/* ---- the run's tokens ---- */

static void tokens_free(lp_browser *b) {
    for (int i = 0; i < b->T; i++) free(b->tok[i]);
    for (int i = 0; i < b->S; i++) free(b->src_tok[i]);
    free(b->tok);
    free(b->tok_w);
    free(b->tok_role);
    free(b->tok_seg);
    free(b->src_tok);
    free(b->src_tok_w);
    free(b->src_role);
    b->tok = b->src_tok = NULL;
    b->tok_w = b->src_tok_w = NULL;
    b->tok_role = b->tok_seg = b->src_role = NULL;
    b->T = b->S = 0;
}

const char *lp_browser_id_text(const lp_browser *b, int id, char *buf, size_t cap) {
    const lp_tokenizer *t = b->s->model ? lp_model_tokenizer(b->s->model) : NULL;
    size_t len = 0;
    const char *bytes = t ? lp_tokenizer_token_bytes(t, id, &len) : NULL;
    if (!bytes) snprintf(buf, cap, "#%d", id);
    else lp_screen_token_text(bytes, len, buf, cap);
    return buf;
}

/* ids (n) made safe for the screen into *tok and their widths and roles (each n); false
 * when out of memory. */
static bool safe_tokens(const lp_browser *b, const int *ids, int n, char ***tok, int **w, unsigned char **role) {
    const lp_tokenizer *t = b->s->model ? lp_model_tokenizer(b->s->model) : NULL;
    *tok = calloc((size_t)n + 1, sizeof **tok);
    *w = calloc((size_t)n + 1, sizeof **w);
    *role = calloc((size_t)n + 1, 1);
    if (!*tok || !*w || !*role) return false;
    for (int i = 0; i < n; i++) {
        char buf[256];
        (*role)[i] = (unsigned char)(t ? lp_tokenizer_role(t, ids[i]) : LP_SPECIAL_COUNT);
        (*tok)[i] = strdup(lp_browser_id_text(b, ids[i], buf, sizeof buf));
        if (!(*tok)[i]) (*tok)[i] = strdup("");
        (*w)[i] = (*tok)[i] ? lp_display_width((*tok)[i]) : 0;
    }
    return true;
}

/* An encoder-decoder's source tokens beside the run's, and what to show of its attention:
 * the cross-attention when such a run comes after one-stack runs. */
static void source_refresh(lp_browser *b, bool had_source) {
    const lp_run *src = b->s->run ? lp_run_source(b->s->run) : NULL;
    int S = src ? lp_run_len(src) : 0;
    if (S > 0 && !safe_tokens(b, lp_run_ids(src), S, &b->src_tok, &b->src_tok_w, &b->src_role)) S = 0;
    if (S > 0 && !had_source && b->attn == LP_ATTN_DEC_SELF) b->attn = b->dec_attn = LP_ATTN_CROSS;
    if (S == 0) b->attn = b->dec_attn = LP_ATTN_DEC_SELF, b->side = LP_SIDE_TARGET;
    b->S = S;
    if (b->src_pos >= S) b->src_pos = S > 0 ? S - 1 : 0;
    if (b->src_pos < 0) b->src_pos = 0;
}

/* Makes the run's tokens safe for the screen once per command, and keeps the selection on
 * the run: a new run selects its last token (where the next prediction is made). */
static void tokens_refresh(lp_browser *b) {
    if (b->tok_gen == b->gen + 1) return;
    b->tok_gen = b->gen + 1;
    bool had_source = b->S > 0;
    tokens_free(b);
    source_refresh(b, had_source);
    const lp_run *r = b->s->run;
    int T = r ? lp_run_len(r) : 0;
    const int *ids = r ? lp_run_ids(r) : NULL;
    b->tok_seg = calloc((size_t)T + 1, 1);
    if (!safe_tokens(b, ids, T, &b->tok, &b->tok_w, &b->tok_role) || !b->tok_seg) T = 0;
    const lp_tokenizer *t = b->s->model ? lp_model_tokenizer(b->s->model) : NULL;
    if (T > 0 && t) /* the second text of a pair: by token type where the model has two (BERT) */
        lp_tokenizer_segments(t, ids, lp_model_config(b->s->model)->type_vocab > 1 ? lp_run_types(r) : NULL, T, b->tok_seg);
    b->T = T;
    if (b->pos >= T) b->pos = T > 0 ? T - 1 : 0;
    if (b->pos < 0) b->pos = 0;
    if (b->s->model) {
        const lp_config *c = lp_model_config(b->s->model);
        int L = c->n_layer;
        lp_browser_attn_run(b, b->attn, NULL, &L, NULL, NULL);
        if (b->layer >= L) b->layer = L - 1;
        if (b->head >= c->n_head) b->head = c->n_head - 1;
    }
}

const lp_run *lp_browser_attn_run(const lp_browser *b, lp_attn_kind kind, lp_act_kind *act, int *n_layer,
                                  int *query_side, int *key_side) {
    const lp_run *r = b->s->run, *src = r ? lp_run_source(r) : NULL;
    if (!r || (kind != LP_ATTN_DEC_SELF && !src)) return NULL;
    const lp_run *out = kind == LP_ATTN_ENC_SELF ? src : r;
    if (act) *act = kind == LP_ATTN_CROSS ? LP_ACT_CROSS_PATTERN : LP_ACT_PATTERN;
    if (n_layer) *n_layer = lp_model_config(lp_run_model(out))->n_layer;
    if (query_side) *query_side = kind == LP_ATTN_ENC_SELF ? LP_SIDE_SOURCE : LP_SIDE_TARGET;
    if (key_side) *key_side = kind == LP_ATTN_DEC_SELF ? LP_SIDE_TARGET : LP_SIDE_SOURCE;
    return out;
}

const char *lp_browser_attn_name(const lp_browser *b, lp_attn_kind kind) {
    static const char *const NAMES[LP_ATTN_COUNT] = {"dec self", "cross", "enc self"};
    return b->S > 0 ? NAMES[kind] : NULL;
}

void lp_browser_set_attn(lp_browser *b, lp_attn_kind kind) {
    if (b->S == 0) return;
    if (kind != b->attn) b->updated[LP_VIEW_HEADS] = 0; /* its grid and scan rows are of the attention shown */
    b->attn = kind;
    if (kind != LP_ATTN_ENC_SELF) b->dec_attn = kind;
    b->side = kind == LP_ATTN_ENC_SELF ? LP_SIDE_SOURCE : LP_SIDE_TARGET;
    int L = 1;
    lp_browser_attn_run(b, kind, NULL, &L, NULL, NULL);
    if (b->layer >= L) b->layer = L - 1;
}

const char *lp_browser_side_token(const lp_browser *b, int side, int pos, int *width) {
    if (side == LP_SIDE_TARGET) return lp_browser_token(b, pos, width);
    if (pos < 0 || pos >= b->S || !b->src_tok[pos]) {
        if (width) *width = 0;
        return "";
    }
    if (width) *width = b->src_tok_w[pos];
    return b->src_tok[pos];
}

void lp_browser_side_style(const lp_browser *b, int side, int pos, lp_color *color, int *attr) {
    if (side == LP_SIDE_TARGET) {
        lp_browser_token_style(b, pos, color, attr);
        return;
    }
    *attr = 0;
    *color = pos >= 0 && pos < b->S && b->src_role[pos] != LP_SPECIAL_COUNT && b->src_role[pos] != LP_SPECIAL_UNK
                 ? LP_COLOR_SPECIAL
                 : LP_COLOR_NORMAL;
}

void lp_browser_token_style(const lp_browser *b, int pos, lp_color *color, int *attr) {
    *color = LP_COLOR_NORMAL;
    *attr = 0;
    if (pos < 0 || pos >= b->T) return;
    switch (b->tok_role[pos]) {
    case LP_SPECIAL_MASK: *color = LP_COLOR_MASK; break;
    case LP_SPECIAL_CLS: case LP_SPECIAL_SEP: case LP_SPECIAL_PAD: case LP_SPECIAL_BOS: case LP_SPECIAL_EOS:
        *color = LP_COLOR_SPECIAL;
        break;
    default: *color = b->tok_seg[pos] ? LP_COLOR_SEGMENT_B : LP_COLOR_NORMAL;
    }
    if (b->tok_seg[pos]) *attr |= LP_ATTR_UNDERLINE;
}

const char *lp_browser_token(const lp_browser *b, int pos, int *width) {
    if (pos < 0 || pos >= b->T || !b->tok[pos]) {
        if (width) *width = 0;
        return "";
    }
    if (width) *width = b->tok_w[pos];
    return b->tok[pos];
}

/* ---- making and freeing ---- */

lp_browser *lp_browser_new(lp_session *s, const char *history_path) {
    lp_browser *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->s = s;
    b->neuron = b->feature = -1;
    b->feature_pick = b->after_pick = -1;
    b->line = lp_line_new(history_path);
    if (!b->line) {
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->progress_lock, NULL);
    for (int v = 0; v < LP_VIEW_COUNT; v++) b->state[v] = VIEWS[v]->open(b);
    b->pos = s->run ? lp_run_len(s->run) - 1 : 0;
    tokens_refresh(b);
    return b;
}

void lp_browser_free(lp_browser *b) {
    if (!b) return;
    for (int v = 0; v < LP_VIEW_COUNT; v++)
        if (VIEWS[v]->close) VIEWS[v]->close(b->state[v]);
    tokens_free(b);
    lp_line_free(b->line);
    free(b->output);
    free(b->pending);
    pthread_mutex_destroy(&b->progress_lock);
    free(b);
}

/* ---- running commands ---- */

static int count_lines(const char *t) {
    if (!t || !*t) return 0;
    int n = 0;
    for (const char *p = t; *p; p++) n += *p == '\n';
    return n + (t[strlen(t) - 1] != '\n');
}

/* The session's progress sink while a command runs here: nothing reaches the terminal
 * behind curses' back. The live line goes to the spinner, the lines worth keeping to the
 * output pane (the command's output stream, on the same thread). */
static void progress_to_browser(void *ctx, lp_progress_kind kind, const char *text) {
    lp_browser *b = ctx;
    if (kind == LP_PROGRESS_STATUS || kind == LP_PROGRESS_END) {
        pthread_mutex_lock(&b->progress_lock);
        snprintf(b->progress, sizeof b->progress, "%s", kind == LP_PROGRESS_STATUS ? text : "");
        pthread_mutex_unlock(&b->progress_lock);
    } else if (b->s->out) {
        fprintf(b->s->out, "%s\n", text);
    }
}

void lp_browser_progress(lp_browser *b, char *buf, size_t cap) {
    pthread_mutex_lock(&b->progress_lock);
    snprintf(buf, cap, "%s", b->progress);
    pthread_mutex_unlock(&b->progress_lock);
}

int lp_browser_exec(lp_browser *b, const char *line) {
    char *cmd = strdup(line);
    if (b->pending == line) {
        free(b->pending);
        b->pending = NULL;
    }
    if (!cmd) return lp_error(LP_ENOMEM, "out of memory");
    const lp_run *before = b->s->run;
    int64_t before_id = b->s->run_id;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len), *saved = b->s->out;
    if (mem) b->s->out = mem;
    lp_progress_fn saved_progress = b->s->progress;
    void *saved_ctx = b->s->progress_ctx;
    b->s->progress = progress_to_browser;
    b->s->progress_ctx = b;
    int rc = lp_exec(b->s, cmd);
    b->s->progress = saved_progress;
    b->s->progress_ctx = saved_ctx;
    progress_to_browser(b, LP_PROGRESS_END, "");
    if (mem) {
        fclose(mem);
        b->s->out = saved;
    }
    /* The command as the message line names it: without the blanks around it. */
    char *p = cmd;
    while (*p == ' ') p++;
    for (size_t n = strlen(p); n > 0 && p[n - 1] == ' ';) p[--n] = '\0';
    bool note = strncmp(p, "note ", 5) == 0;
    free(b->output);
    b->output = text;
    b->output_lines = count_lines(text);
    b->output_scroll = 0;
    b->output_shown = b->output_lines > 0 && !note;
    b->message_error = rc != LP_OK;
    if (rc == LP_ECANCEL) snprintf(b->message, sizeof b->message, "cancelled: %s", p);
    else if (rc) snprintf(b->message, sizeof b->message, "error: %s", lp_errmsg());
    else if (note) snprintf(b->message, sizeof b->message, "finding written (6 lists them)");
    else if (b->output_lines)
        snprintf(b->message, sizeof b->message, "%s: %d line%s of output (o hides it, PgUp/PgDn scroll)", p,
                 b->output_lines, b->output_lines == 1 ? "" : "s");
    else snprintf(b->message, sizeof b->message, "%s: done", p);
    b->gen++;
    bool new_run = b->s->run != before || b->s->run_id != before_id;
    tokens_refresh(b);
    if (new_run && b->T > 0) b->pos = b->T - 1;
    if (rc == LP_OK && b->after.set) {
        lp_browser_jump(b, &b->after);
        tokens_refresh(b);
        if (b->after_pick >= 0) {
            b->feature_pick = b->after_pick;
            snprintf(b->feature_sae, sizeof b->feature_sae, "%s", b->after_sae);
        }
    }
    b->after.set = false;
    b->after_pick = -1;
    if (b->s->quit) b->quit = true;
    free(cmd);
    return rc;
}

void lp_browser_jump(lp_browser *b, const lp_jump *j) {
    if (j->view >= 0) b->view = j->view;
    bool src = j->attn == LP_ATTN_ENC_SELF && b->S > 0;
    if (j->attn >= 0 && j->attn < LP_ATTN_COUNT) lp_browser_set_attn(b, (lp_attn_kind)j->attn);
    if (j->layer >= 0) b->layer = j->layer;
    if (j->head >= 0) b->head = j->head;
    if (j->pos >= 0 && j->pos < (src ? b->S : b->T)) *(src ? &b->src_pos : &b->pos) = j->pos;
}

void lp_browser_request(lp_browser *b, const char *command, lp_jump after) {
    free(b->pending);
    b->pending = strdup(command);
    b->after = after;
    b->after.set = true;
}

bool lp_browser_stale(const lp_browser *b) {
    return VIEWS[b->view]->update && b->updated[b->view] != b->gen + 1;
}

void lp_browser_restale(lp_browser *b) { b->updated[b->view] = 0; }

int lp_browser_update(lp_browser *b) {
    tokens_refresh(b);
    if (!lp_browser_stale(b)) return LP_OK;
    lp_cancel_reset();
    int rc = VIEWS[b->view]->update(b->state[b->view], b);
    /* A cancelled or failed update counts as done all the same (the view shows it has
     * nothing), so that it is not started again at once; the next command, or Ctrl-L,
     * tries again. */
    b->updated[b->view] = b->gen + 1;
    b->update_failed[b->view] = rc != LP_OK;
    if (rc) {
        b->message_error = true;
        snprintf(b->message, sizeof b->message, "%s: %s", VIEWS[b->view]->name,
                 rc == LP_ECANCEL ? "cancelled (: and a command, or Ctrl-L, try again)" : lp_errmsg());
    }
    return rc;
}

/* ---- keys ---- */

static void clamp(int *v, int lo, int hi) {
    if (*v > hi) *v = hi;
    if (*v < lo) *v = lo;
}

/* The layers the selection moves over: the attention's stack in the views that show it
 * (an encoder-decoder's encoder may have more or fewer), else the run's own. */
static int n_layer(const lp_browser *b) {
    int L = b->s->model ? lp_model_config(b->s->model)->n_layer : 1;
    if (b->view == LP_VIEW_ATTENTION || b->view == LP_VIEW_HEADS || b->view == LP_VIEW_MODEL)
        lp_browser_attn_run(b, b->attn, NULL, &L, NULL, NULL);
    return L;
}
static int n_head(const lp_browser *b) { return b->s->model ? lp_model_config(b->s->model)->n_head : 1; }

/* The examples view's feature inside its dictionary; none when the dictionary is gone. */
void lp_browser_clamp_feature(lp_browser *b) {
    const lp_sae *sae = b->feature >= 0 ? lp_session_sae(b->s, b->feature_dict, NULL, NULL) : NULL;
    if (!sae) b->feature = -1;
    else clamp(&b->feature, 0, lp_sae_get_info(sae)->d_sae - 1);
}

/* The token, layer and head inside the run and the model, whatever a key did. */
static void clamp_selection(lp_browser *b) {
    clamp(&b->pos, 0, b->T > 0 ? b->T - 1 : 0);
    clamp(&b->src_pos, 0, b->S > 0 ? b->S - 1 : 0);
    clamp(&b->layer, 0, n_layer(b) - 1);
    clamp(&b->head, 0, n_head(b) - 1);
    if (b->neuron >= 0 && b->s->model) clamp(&b->neuron, 0, lp_model_config(b->s->model)->d_mlp - 1);
    lp_browser_clamp_feature(b);
}

/* A code point as UTF-8 (what a key typed on the line inserts). */
static void utf8_put(int cp, char out[5]) {
    static const unsigned char LEAD[] = {0, 0, 0xC0, 0xE0, 0xF0};
    int n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (int i = n - 1; i > 0; i--, cp >>= 6) out[i] = (char)(0x80 | (cp & 0x3F));
    out[0] = (char)(n == 1 ? cp : LEAD[n] | cp);
    out[n] = '\0';
}

/* ---- searching the tokens (/, n, N) ---- */

/* Token i matches text, in any case, as shown (·Mary) or as its raw bytes (" Mary"). */
static bool token_matches(const lp_browser *b, int i, const char *text) {
    if (strcasestr(b->tok[i], text)) return true;
    const lp_tokenizer *t = b->s->model ? lp_model_tokenizer(b->s->model) : NULL;
    size_t len = 0;
    const char *bytes = t && b->s->run ? lp_tokenizer_token_bytes(t, lp_run_ids(b->s->run)[i], &len) : NULL;
    char raw[256];
    if (!bytes || len >= sizeof raw) return false;
    memcpy(raw, bytes, len);
    raw[len] = '\0';
    return strcasestr(raw, text) != NULL;
}

/* Moves the selected token to the next match of the last search in direction dir (+1, -1),
 * wrapping round the run as less does, and says where it landed. */
static void search_tokens(lp_browser *b, int dir) {
    b->message_error = false;
    if (!b->search[0]) {
        snprintf(b->message, sizeof b->message, "no search yet: / searches the run's tokens");
        return;
    }
    int n = 0, nth = 0, found = -1;
    for (int i = 0; i < b->T; i++) n += token_matches(b, i, b->search);
    for (int k = 1; k <= b->T && found < 0; k++) {
        int i = ((b->pos + dir * k) % b->T + b->T) % b->T;
        if (token_matches(b, i, b->search)) found = i;
    }
    if (found < 0) {
        b->message_error = true;
        snprintf(b->message, sizeof b->message, "/%s: no token matches", b->search);
        return;
    }
    bool wrapped = dir > 0 ? found <= b->pos : found >= b->pos;
    b->pos = found;
    for (int i = 0; i <= found; i++) nth += token_matches(b, i, b->search);
    snprintf(b->message, sizeof b->message, "/%s: token %d, match %d of %d%s   (n N: next, previous)", b->search, found,
             nth, n, wrapped ? " (wrapped)" : "");
}

/* ---- commands that have a view ---- */

/* `examples neuron L.N` / `examples head L.H`: the unit's layer and index into *layer and
 * *neuron or *head; false when the words are not that, or out of the model's range. */
static bool parse_example_unit(const lp_browser *b, char **w, long *layer, long *neuron, long *head) {
    const lp_config *c = lp_model_config(b->s->model);
    bool is_neuron = strcmp(w[1], "neuron") == 0;
    if (!is_neuron && strcmp(w[1], "head") != 0) return false;
    char *e1 = NULL, *e2 = NULL;
    long l = strtol(w[2], &e1, 10), u = *e1 == '.' ? strtol(e1 + 1, &e2, 10) : -1;
    if (e1 == w[2] || *e1 != '.' || !e2 || *e2 || e2 == e1 + 1 || l < 0 || l >= c->n_layer || u < 0 ||
        u >= (is_neuron ? c->d_mlp : c->n_head))
        return false;
    *layer = l;
    *(is_neuron ? neuron : head) = u;
    return true;
}

/* `examples feature ID [--sae NAME]` with the dictionary loaded (the last loaded without
 * --sae): its index into *dict and the feature into *feature; false otherwise, or for a
 * feature past the dictionary's. */
static bool parse_example_feature(const lp_browser *b, char **w, int n, int *dict, int *feature) {
    if (n != 3 && (n != 5 || strcmp(w[3], "--sae") != 0)) return false;
    int d = n == 5 ? -1 : b->s->n_saes - 1;
    const char *name;
    for (int i = 0; n == 5 && i < b->s->n_saes; i++)
        if (lp_session_sae(b->s, i, &name, NULL) && strcmp(name, w[4]) == 0) d = i;
    const lp_sae *sae = lp_session_sae(b->s, d, NULL, NULL);
    char *end = NULL;
    long f = strtol(w[2], &end, 10);
    if (!sae || end == w[2] || *end || f < 0 || f >= lp_sae_get_info(sae)->d_sae) return false;
    *dict = d;
    *feature = (int)f;
    return true;
}

/* `attn L H` on the `:` line shows the head in the attention view rather than printing
 * its T x T table into the pane; `heads` and `lens` (without options) open theirs, and
 * `examples neuron L.N` (or `head L.H`, without options; `feature ID [--sae NAME]`) the
 * examples view on that unit.
 * Anything else, or a layer or head out of range, runs as a command (which says what is
 * wrong). */
static bool show_in_view(lp_browser *b, const char *line) {
    static const struct {
        const char *command;
        int view, args; /* args: 2 for a layer and a head (or a unit: examples) */
        bool run;       /* only on a run */
    } VIEW_COMMANDS[] = {{"attn", LP_VIEW_ATTENTION, 2, true},
                         {"heads", LP_VIEW_HEADS, 0, true},
                         {"lens", LP_VIEW_LENS, 0, true},
                         {"features", LP_VIEW_FEATURES, 0, true},
                         {"examples", LP_VIEW_EXAMPLES, 2, false}};
    char **w;
    int n = lp_split_words(line, &w);
    if (n < 0) {
        lp_error_clear();
        return false;
    }
    const lp_command *c = n > 0 && b->s->model ? lp_command_find(w[0]) : NULL;
    lp_error_clear();
    int view = -1;
    long layer = -1, head = -1, neuron = -1;
    int dict = -1, feature = -1;
    if (c && strcmp(c->name, "examples") == 0 && n > 1 && strcmp(w[1], "feature") == 0) {
        if (parse_example_feature(b, w, n, &dict, &feature)) view = LP_VIEW_EXAMPLES;
        c = NULL;
    }
    for (size_t i = 0; c && i < sizeof VIEW_COMMANDS / sizeof *VIEW_COMMANDS; i++) {
        if (strcmp(c->name, VIEW_COMMANDS[i].command) != 0 || n != 1 + VIEW_COMMANDS[i].args ||
            (VIEW_COMMANDS[i].run && !b->s->run))
            continue;
        if (VIEW_COMMANDS[i].view == LP_VIEW_EXAMPLES) {
            if (!parse_example_unit(b, w, &layer, &neuron, &head)) break;
        } else if (VIEW_COMMANDS[i].args == 2) {
            char *e1 = NULL, *e2 = NULL;
            layer = strtol(w[1], &e1, 10);
            head = strtol(w[2], &e2, 10);
            if (*e1 || *e2 || e1 == w[1] || e2 == w[2] || layer < 0 || layer >= n_layer(b) || head < 0 ||
                head >= n_head(b))
                break;
        }
        view = VIEW_COMMANDS[i].view;
    }
    free(w);
    if (view < 0) return false;
    b->view = view;
    if (layer >= 0) b->layer = (int)layer;
    if (head >= 0) b->head = (int)head;
    if (view == LP_VIEW_EXAMPLES && feature >= 0) b->feature = feature, b->feature_dict = dict;
    else if (view == LP_VIEW_EXAMPLES) b->neuron = (int)neuron, b->feature = -1; /* neuron -1 for a head */
    b->message_error = false;
    snprintf(b->message, sizeof b->message, "%s: shown in view %c, %s", line, lp_view_key(view), VIEWS[view]->title);
    return true;
}

/* `sae load ...`: the features view opens on the dictionary once it is loaded. */
static bool loads_dictionary(const char *line) {
    char **w;
    int n = lp_split_words(line, &w);
    const lp_command *c = n > 1 ? lp_command_find(w[0]) : NULL;
    bool yes = c && strcmp(c->name, "sae") == 0 && strcmp(w[1], "load") == 0;
    if (n >= 0) free(w);
    lp_error_clear();
    return yes;
}

/* `feature ID [--sae NAME] ...` with a dictionary loaded: its output in the pane, and (once
 * it succeeds) the features view on that feature's column. */
static bool shows_feature(lp_browser *b, const char *line) {
    char **w;
    int n = lp_split_words(line, &w);
    const lp_command *c = n > 1 && b->s->run && b->s->n_saes > 0 ? lp_command_find(w[0]) : NULL;
    bool yes = c && strcmp(c->name, "feature") == 0;
    char *end = NULL;
    long f = yes ? strtol(w[1], &end, 10) : -1;
    yes = yes && end != w[1] && !*end && f >= 0 && f < (1L << 24);
    b->after_sae[0] = '\0';
    for (int i = 2; yes && i + 1 < n; i++)
        if (strcmp(w[i], "--sae") == 0) snprintf(b->after_sae, sizeof b->after_sae, "%s", w[i + 1]);
    if (yes) b->after_pick = (int)f;
    if (n >= 0) free(w);
    lp_error_clear();
    return yes;
}

/* Where a note written with `m` on an encoder-decoder's run is: what the view says (its
 * place), the attention the view shows (attention, heads and model views follow b->attn),
 * or in the attributions view the strip line the selection is on (a source token is the
 * encoder's); "" otherwise (note's default, the decoder). */
static const char *note_place(const lp_browser *b) {
    if (b->S == 0) return "";
    const lp_view_ops *v = VIEWS[b->view];
    const char *stack = NULL, *kind = NULL;
    if (v->place) v->place(b->state[b->view], b, &stack, &kind);
    if (stack) return kind && strcmp(kind, "cross") == 0 ? " --cross" : strcmp(stack, "enc") == 0 ? " --stack enc"
                                                                                                 : " --stack dec";
    static const char *const FLAGS[LP_ATTN_COUNT] = {" --stack dec", " --cross", " --stack enc"};
    if (b->view == LP_VIEW_ATTENTION || b->view == LP_VIEW_HEADS || b->view == LP_VIEW_MODEL) return FLAGS[b->attn];
    if (b->view == LP_VIEW_ATTRIBUTIONS) return b->side == LP_SIDE_SOURCE ? " --stack enc" : " --stack dec";
    return "";
}

/* Enter on the command line: the command, a search, or for `m` a note about the view's
 * cursor. */
static lp_browser_do accept_line(lp_browser *b) {
    const char *text = lp_line_text(b->line);
    const char *p = text;
    while (*p == ' ' || *p == '\t') p++;
    lp_line_mode mode = b->line_mode;
    b->line_mode = LP_LINE_NONE;
    if (mode == LP_LINE_SEARCH) { /* Enter alone repeats the last search */
        if (*p) snprintf(b->search, sizeof b->search, "%s", text);
        search_tokens(b, 1);
        return LP_BROWSER_DRAW;
    }
    if (!*p) return LP_BROWSER_DRAW;
    free(b->pending);
    b->pending = NULL;
    if (mode == LP_LINE_COMMAND) {
        lp_line_remember(b->line);
        if (show_in_view(b, p)) return LP_BROWSER_DRAW;
        if (loads_dictionary(p)) lp_browser_request(b, text, (lp_jump){true, LP_VIEW_FEATURES, -1, -1, -1, -1});
        else if (shows_feature(b, p)) lp_browser_request(b, text, (lp_jump){true, LP_VIEW_FEATURES, -1, -1, -1, -1});
        else b->pending = strdup(text);
    } else {
        int layer = -1, head = -1, pos = -1;
        const lp_view_ops *v = VIEWS[b->view];
        if (b->s->run && v->subject) v->subject(b->state[b->view], b, &layer, &head, &pos);
        size_t n = strlen(text) + 96;
        b->pending = malloc(n);
        if (b->pending) {
            /* options first, then "--": the note's text is kept as typed */
            int o = snprintf(b->pending, n, "note%s", layer >= 0 || head >= 0 || pos >= 0 ? note_place(b) : "");
            if (layer >= 0) o += snprintf(b->pending + o, n - (size_t)o, " --layer %d", layer);
            if (head >= 0) o += snprintf(b->pending + o, n - (size_t)o, " --head %d", head);
            if (pos >= 0) o += snprintf(b->pending + o, n - (size_t)o, " --pos %d", pos);
            snprintf(b->pending + o, n - (size_t)o, " -- %s", text);
        }
    }
    return b->pending ? LP_BROWSER_EXEC : LP_BROWSER_DRAW;
}

static lp_browser_do line_key(lp_browser *b, int key) {
    const lp_binding *k = lp_keymap_find(LP_SCOPE_LINE, key);
    if (k && k->action == LP_DO_EDIT_ACCEPT) return accept_line(b);
    if (k && k->action == LP_DO_EDIT_CANCEL) {
        b->line_mode = LP_LINE_NONE;
        return LP_BROWSER_DRAW;
    }
    if (k) {
        /* Completion knows commands: on the note and search lines Tab does nothing. */
        if (k->action != LP_DO_EDIT_COMPLETE || b->line_mode == LP_LINE_COMMAND) lp_line_act(b->line, k->action, b->s);
    } else if (key >= 0x20 && key < 0x110000 && key != 0x7F && !(key >= 0x80 && key < 0xA0)) {
        char u[5];
        utf8_put(key, u);
        lp_line_insert(b->line, u);
    }
    return LP_BROWSER_DRAW;
}

static lp_browser_do help_key(lp_browser *b, int key) {
    const lp_binding *k = lp_keymap_find(LP_SCOPE_HELP, key);
    int page = b->page > 2 ? b->page - 2 : 1;
    switch (k ? k->action : LP_DO_HELP_CLOSE) {
    case LP_DO_HELP_UP: b->help_scroll--; break;
    case LP_DO_HELP_DOWN: b->help_scroll++; break;
    case LP_DO_HELP_PAGE_UP: b->help_scroll -= page; break;
    case LP_DO_HELP_PAGE_DOWN: b->help_scroll += page; break;
    default: b->help = false;
    }
    if (b->help_scroll < 0) b->help_scroll = 0;
    return LP_BROWSER_DRAW;
}

lp_browser_do lp_browser_key(lp_browser *b, int key) {
    if (key == LP_KEY_RESIZE) return LP_BROWSER_DRAW;
    if (b->line_mode != LP_LINE_NONE) return line_key(b, key);
    if (b->help) return help_key(b, key);
    tokens_refresh(b);
    const lp_binding *k = lp_keymap_find(b->view, key);
    if (k) {
        if (VIEWS[b->view]->act) VIEWS[b->view]->act(b->state[b->view], b, k->action);
        clamp_selection(b);
        return b->pending ? LP_BROWSER_EXEC : LP_BROWSER_DRAW;
    }
    k = lp_keymap_find(LP_SCOPE_ALL, key);
    if (!k) return LP_BROWSER_DRAW;
    int page = b->page > 4 ? b->page / 2 : 2;
    /* The token keys move the selection on the strip line they are on. */
    bool src = b->side == LP_SIDE_SOURCE && b->S > 0;
    int *sel = src ? &b->src_pos : &b->pos, last = src ? b->S - 1 : b->T - 1, from = b->view;
    switch (k->action) {
    case LP_DO_TOKEN_PREV: (*sel)--; break;
    case LP_DO_TOKEN_NEXT: (*sel)++; break;
    case LP_DO_TOKEN_FIRST: *sel = 0; break;
    case LP_DO_TOKEN_LAST: *sel = last; break;
    case LP_DO_SIDE:
        if (b->S == 0) {
            b->message_error = false;
            snprintf(b->message, sizeof b->message, "s: only an encoder-decoder's run has a source line");
        } else {
            lp_browser_set_attn(b, b->side == LP_SIDE_SOURCE ? b->dec_attn : LP_ATTN_ENC_SELF);
        }
        break;
    case LP_DO_LAYER_PREV: b->layer--; break;
    case LP_DO_LAYER_NEXT: b->layer++; break;
    case LP_DO_HEAD_PREV: b->head--; break;
    case LP_DO_HEAD_NEXT: b->head++; break;
    case LP_DO_VIEW_NEXT: b->view = (b->view + 1) % LP_VIEW_COUNT; break;
    case LP_DO_VIEW_PREV: b->view = (b->view + LP_VIEW_COUNT - 1) % LP_VIEW_COUNT; break;
    case LP_DO_VIEW: b->view = k->arg; break;
    case LP_DO_COMMAND:
        b->line_mode = LP_LINE_COMMAND;
        lp_line_start(b->line, ":", true);
        break;
    case LP_DO_SEARCH:
        b->line_mode = LP_LINE_SEARCH;
        lp_line_start(b->line, "/", false);
        break;
    case LP_DO_SEARCH_NEXT: search_tokens(b, 1); break;
    case LP_DO_SEARCH_PREV: search_tokens(b, -1); break;
    case LP_DO_NOTE:
        b->line_mode = LP_LINE_NOTE;
        lp_line_start(b->line, "note: ", false);
        break;
    case LP_DO_OUTPUT:
        b->output_shown = !b->output_shown && b->output_lines > 0;
        if (!b->output_lines) {
            snprintf(b->message, sizeof b->message, "no output yet: : runs a command");
            b->message_error = false;
        }
        break;
    case LP_DO_OUTPUT_UP: b->output_scroll -= page; break;
    case LP_DO_OUTPUT_DOWN: b->output_scroll += page; break;
    case LP_DO_HELP:
        b->help = true;
        b->help_scroll = 0;
        break;
    case LP_DO_DISMISS:
        b->output_shown = false;
        b->message[0] = '\0';
        break;
    case LP_DO_REDRAW:
        if (b->update_failed[b->view]) b->updated[b->view] = 0; /* and a cancelled update gets another go */
        return LP_BROWSER_REPAINT;
    case LP_DO_QUIT: b->quit = true; return LP_BROWSER_QUIT;
    default: break;
    }
    /* from the features view to the examples view: the feature selected there */
    if (from == LP_VIEW_FEATURES && b->view == LP_VIEW_EXAMPLES) lp_features_selection(b, &b->feature_dict, &b->feature);
    clamp_selection(b);
    if (b->output_scroll > b->output_lines - 1) b->output_scroll = b->output_lines - 1;
    if (b->output_scroll < 0) b->output_scroll = 0;
    return LP_BROWSER_DRAW;
}

/* ---- helpers for the views ---- */

void lp_browser_set_status(lp_browser *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->status, sizeof b->status, fmt, ap);
    va_end(ap);
}

void lp_browser_say(lp_screen *scr, lp_rect a, const char *line1, const char *line2) {
    int y = a.y + a.h / 2 - 1;
    if (y < a.y) y = a.y;
    int w1 = lp_display_width(line1), w2 = line2 ? lp_display_width(line2) : 0;
    lp_screen_put_clip(scr, a.x + (w1 < a.w ? (a.w - w1) / 2 : 0), y, a.w, line1, LP_COLOR_NORMAL, LP_ATTR_BOLD);
    if (line2 && y + 1 < a.y + a.h)
        lp_screen_put_clip(scr, a.x + (w2 < a.w ? (a.w - w2) / 2 : 0), y + 1, a.w, line2, LP_COLOR_DIM, 0);
}

const lp_run *lp_browser_need_run(lp_browser *b, lp_screen *scr, lp_rect area) {
    if (!b->s->model) {
        lp_browser_say(scr, area, "No model loaded.", ":load PATH loads one (a Hugging Face directory, a .gguf or a llama2.c .bin)");
        lp_browser_set_status(b, "no model");
        return NULL;
    }
    if (!b->s->run || b->T == 0) {
        lp_browser_say(scr, area, "No run yet.", ":run TEXT runs the model on a text (or :run --ids 1,2,3)");
        lp_browser_set_status(b, "no run");
        return NULL;
    }
    return b->s->run;
}

json_t *lp_browser_query(const lp_browser *b, const char *sql, json_t *params) {
    json_t *rows = NULL;
    if (!b->s->store) {
        json_decref(params);
        return NULL;
    }
    int rc = lp_store_query(b->s->store, sql, params, false, &rows, NULL);
    json_decref(params);
    if (rc) {
        lp_error_clear();
        json_decref(rows);
        return NULL;
    }
    return rows;
}

long long lp_row_int(json_t *row, const char *col, long long dflt) {
    json_t *v = json_object_get(row, col);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_real(v)) return (long long)json_real_value(v);
    return dflt;
}

double lp_row_real(json_t *row, const char *col) {
    json_t *v = json_object_get(row, col);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

const char *lp_row_str(json_t *row, const char *col) {
    const char *s = json_string_value(json_object_get(row, col));
    return s ? s : "";
}

void lp_appendf(char *buf, size_t cap, const char *fmt, ...) {
    size_t o = strlen(buf);
    if (o + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + o, cap - o, fmt, ap);
    va_end(ap);
}

int lp_scroll(int *top, int sel, int rows, int total) {
    if (rows < 1) rows = 1;
    if (sel < *top) *top = sel;
    if (sel >= *top + rows) *top = sel - rows + 1;
    if (*top > total - rows) *top = total - rows;
    if (*top < 0) *top = 0;
    return *top;
}

/* ---- the frame ---- */

static const char *basename_of(const char *path) {
    const char *s = strrchr(path, '/');
    if (s && s[1]) return s + 1;
    if (s && s != path) {
        /* "dir/": the directory's name */
        const char *e = s;
        while (s > path && s[-1] != '/') s--;
        static char buf[256];
        snprintf(buf, sizeof buf, "%.*s", (int)(e - s), s);
        return buf;
    }
    return path;
}

/* A view's tab: " 3 acts", or " 3 " without names; the current one " 3 Activations ", or
 * " 3 acts" when its title gives way (its colour marks it). */
static int tab_text(const lp_browser *b, int v, bool names, bool title, char *buf, size_t cap) {
    int k = lp_view_key(v);
    if (v == b->view) return snprintf(buf, cap, title ? " %c %s " : " %c %s", k, title ? VIEWS[v]->title : VIEWS[v]->name);
    if (names) return snprintf(buf, cap, " %c %s", k, VIEWS[v]->name);
    return snprintf(buf, cap, " %c ", k);
}

static int tabs_width(const lp_browser *b, bool names, bool title) {
    int w = 0;
    char tab[64];
    for (int v = 0; v < LP_VIEW_COUNT; v++) w += tab_text(b, v, names, title, tab, sizeof tab);
    return w;
}

/* The title bar: loupe, every view's key and name (the current one by its title), then the
 * layer and head, the model and the run. What does not fit goes first: the model, the run,
 * loupe's own name, the current view's title (for its name), then the other views' names;
 * never a view's key or the layer and head. Ten views with names fit 80 columns, the current
 * one by its name (without the blank after it), up to L99 H99. */
static void draw_title(lp_browser *b, lp_screen *scr) {
    static const char BRAND[] = " loupe ";
    lp_screen_fill(scr, 0, 0, scr->w, " ", LP_COLOR_TITLE, 0);
    const lp_config *c = b->s->model ? lp_model_config(b->s->model) : NULL;
    char rights[3][256];
    if (c) {
        const char *model = basename_of(lp_model_path(b->s->model)), *kind = lp_browser_attn_name(b, b->attn);
        long long run = (long long)b->s->run_id;
        char lh[48]; /* an encoder-decoder's: which attention the layer and head are in */
        snprintf(lh, sizeof lh, "L%d H%d%s%s", b->layer, b->head, kind ? " " : "", kind ? kind : "");
        snprintf(rights[0], sizeof rights[0], " %s \xE2\x94\x82 %.60s \xE2\x94\x82 run %lld ", lh, model, run);
        snprintf(rights[1], sizeof rights[1], " %s \xE2\x94\x82 run %lld ", lh, run);
        snprintf(rights[2], sizeof rights[2], " %s", lh); /* to the edge: ten views and L11 H23 fit 80 columns */
    } else {
        for (int i = 0; i < 3; i++) snprintf(rights[i], sizeof rights[i], " no model ");
    }
    static const struct {
        bool brand, names, title;
        int right;
    } FITS[] = {
        {true, true, true, 0},  {true, true, true, 1},   {true, true, true, 2},   {false, true, true, 2},
        {false, true, false, 2}, {false, false, true, 2}, {false, false, false, 2},
    };
    int n_fits = (int)(sizeof FITS / sizeof *FITS), f = 0;
    while (f < n_fits - 1 && (FITS[f].brand ? (int)strlen(BRAND) : 0) + tabs_width(b, FITS[f].names, FITS[f].title) +
                                     lp_display_width(rights[FITS[f].right]) >
                                 scr->w)
        f++;
    int x = FITS[f].brand ? lp_screen_put(scr, 0, 0, -1, BRAND, LP_COLOR_TITLE, LP_ATTR_BOLD) : 0;
    for (int v = 0; v < LP_VIEW_COUNT; v++) {
        char tab[64];
        tab_text(b, v, FITS[f].names, FITS[f].title, tab, sizeof tab);
        x += lp_screen_put(scr, x, 0, scr->w - x, tab, v == b->view ? LP_COLOR_TAB : LP_COLOR_TITLE,
                           v == b->view ? LP_ATTR_BOLD : 0);
    }
    const char *right = rights[FITS[f].right];
    int rw = lp_display_width(right);
    if (x + rw <= scr->w) lp_screen_put(scr, scr->w - rw, 0, rw, right, LP_COLOR_TITLE, 0);
}

/* One side's tokens along row y from column x0, its selected one kept in view: highlighted
 * on the line the token keys move, underlined on the other. */
static void draw_strip_line(lp_browser *b, lp_screen *scr, int y, int x0, int side) {
    bool src = side == LP_SIDE_SOURCE;
    int T = src ? b->S : b->T, pos = src ? b->src_pos : b->pos, w = scr->w - 1 - x0;
    const int *tw = src ? b->src_tok_w : b->tok_w;
    bool active = side == b->side;
    /* Start so that the selection sits about a third of the way in. */
    int first = pos, used = tw[pos] + 1;
    while (first > 0 && used + tw[first - 1] + 1 <= w / 3) used += tw[--first] + 1;
    /* Near the end of the run, use the room the tokens after it leave. */
    int total = 0;
    for (int i = first; i < T && total <= w; i++) total += tw[i] + 1;
    while (first > 0 && total + tw[first - 1] + 1 <= w) total += tw[--first] + 1;
    int x = x0;
    if (first > 0) lp_screen_put(scr, x0 - 1, y, 1, "\xE2\x80\xB9", LP_COLOR_DIM, 0);
    for (int i = first; i < T && x < scr->w - 1; i++) {
        int room = scr->w - 1 - x;
        bool sel = i == pos;
        lp_color color;
        int attr;
        lp_browser_side_style(b, side, i, &color, &attr);
        if (sel) color = active ? LP_COLOR_SELECTED : LP_COLOR_LABEL, attr |= active ? LP_ATTR_BOLD : LP_ATTR_UNDERLINE;
        int n = lp_screen_put_clip(scr, x, y, room, lp_browser_side_token(b, side, i, NULL), color, attr);
        x += n + 1;
        if (x >= scr->w - 1 && i + 1 < T) lp_screen_put(scr, scr->w - 1, y, 1, "\xE2\x80\xBA", LP_COLOR_DIM, 0);
    }
}

/* The run's tokens along one row; an encoder-decoder's source on the row above them, each
 * line named. */
static void draw_strip(lp_browser *b, lp_screen *scr, int y) {
    if (b->T == 0) {
        lp_screen_put(scr, 1, y, scr->w - 1, b->s->model ? "(no run: :run TEXT)" : "(no model: :load PATH)",
                      LP_COLOR_DIM, 0);
        return;
    }
    if (b->S == 0) {
        draw_strip_line(b, scr, y, 1, LP_SIDE_TARGET);
        return;
    }
    for (int side = LP_SIDE_SOURCE; side >= LP_SIDE_TARGET; side--, y++) {
        bool active = side == b->side;
        lp_screen_put(scr, 0, y, 4, side == LP_SIDE_SOURCE ? "src" : "tgt", active ? LP_COLOR_LABEL : LP_COLOR_DIM,
                      active ? LP_ATTR_BOLD : 0);
        draw_strip_line(b, scr, y, 5, side);
    }
}

static void draw_output(lp_browser *b, lp_screen *scr, lp_rect a) {
    char rule[160];
    snprintf(rule, sizeof rule, "\xE2\x94\x80 output: %d line%s (PgUp/PgDn scroll, o hides) ", b->output_lines,
             b->output_lines == 1 ? "" : "s");
    lp_screen_fill(scr, a.x, a.y, a.w, "\xE2\x94\x80", LP_COLOR_DIM, 0);
    lp_screen_put(scr, a.x, a.y, a.w, rule, LP_COLOR_LABEL, 0);
    const char *p = b->output;
    for (int i = 0; p && *p && i < b->output_scroll; i++) {
        const char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : p + strlen(p);
    }
    char line[4096];
    for (int y = a.y + 1; p && *p && y < a.y + a.h; y++) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        /* Tabs to spaces; anything else unprintable is escaped by the screen. */
        size_t o = 0;
        for (size_t i = 0; i < n && o + 9 < sizeof line; i++) {
            if (p[i] == '\t') do line[o++] = ' '; while (o % 8);
            else if (p[i] != '\r') line[o++] = p[i];
        }
        line[o] = '\0';
        lp_screen_put(scr, a.x, y, a.w, line, LP_COLOR_NORMAL, 0);
        p = nl ? nl + 1 : p + n;
    }
}

/* The bytes of text's next row of at most w columns: up to its last space that fits (the
 * space itself left out), or w columns' worth when no space does. */
static size_t wrap_row(const char *text, int w, size_t *skip) {
    size_t at = 0, cut = 0;
    int cols = 0;
    for (;;) {
        int cw;
        size_t n = lp_utf8_next(text + at, &cw);
        if (n == 0) {
            *skip = at;
            return at;
        }
        if (cols + cw > w) break;
        if (text[at] == ' ') cut = at;
        at += n, cols += cw;
    }
    if (cut == 0) cut = at ? at : lp_utf8_next(text, &cols); /* no space fits: cut the word */
    *skip = text[cut] == ' ' ? cut + 1 : cut;
    return cut;
}

/* A row of the help: a heading, or a key's description from byte `from`, `len` bytes (its
 * keys shown on its first row only). */
typedef struct {
    const lp_help_line *line;
    size_t from, len;
} help_row;

static void draw_help(lp_browser *b, lp_screen *scr, lp_rect a) {
    int n = lp_keymap_help(NULL, 0);
    lp_help_line *lines = malloc((size_t)n * sizeof *lines);
    if (!lines) return;
    lp_keymap_help(lines, n);
    lp_screen_put_clip(scr, a.x + 1, a.y, a.w - 1,
                       "Keys (from the key table) \xE2\x80\x94 \xE2\x86\x91\xE2\x86\x93 PgUp PgDn scroll, any other key "
                       "closes",
                       LP_COLOR_LABEL, LP_ATTR_BOLD);
    int kw = 0;
    for (int i = 0; i < n; i++)
        if (!lines[i].heading && lp_display_width(lines[i].keys) > kw) kw = lp_display_width(lines[i].keys);
    if (kw > a.w / 3) kw = a.w / 3;
    /* long descriptions wrap onto rows of their own under their first */
    int tw = a.w - 5 - kw > 8 ? a.w - 5 - kw : 8;
    size_t cap = 0, count = 0;
    for (int i = 0; i < n; i++) cap += lines[i].heading ? 1 : strlen(lines[i].help) / 2 + 1;
    help_row *rows_of = malloc(cap * sizeof *rows_of);
    if (!rows_of) {
        free(lines);
        return;
    }
    for (int i = 0; i < n && count < cap; i++) {
        if (lines[i].heading) {
            rows_of[count++] = (help_row){&lines[i], 0, 0};
            continue;
        }
        size_t at = 0, total = strlen(lines[i].help);
        do {
            size_t skip, len = wrap_row(lines[i].help + at, tw, &skip);
            rows_of[count++] = (help_row){&lines[i], at, len};
            at += skip ? skip : total - at;
        } while (at < total && count < cap);
    }
    int rows = a.h - 1, total_rows = (int)count;
    if (b->help_scroll > total_rows - rows) b->help_scroll = total_rows - rows > 0 ? total_rows - rows : 0;
    for (int r = 0; r < rows && b->help_scroll + r < total_rows; r++) {
        const help_row *hr = &rows_of[b->help_scroll + r];
        const lp_help_line *h = hr->line;
        int y = a.y + 1 + r;
        if (h->heading) {
            lp_screen_put_clip(scr, a.x + 1, y, a.w - 1, h->heading, LP_COLOR_LABEL, LP_ATTR_BOLD | LP_ATTR_UNDERLINE);
        } else {
            char text[4096];
            size_t len = hr->len < sizeof text - 1 ? hr->len : sizeof text - 1;
            memcpy(text, h->help + hr->from, len);
            text[len] = '\0';
            if (hr->from == 0) lp_screen_put_clip(scr, a.x + 3, y, kw, h->keys, LP_COLOR_KEY, LP_ATTR_BOLD);
            lp_screen_put_clip(scr, a.x + 5 + kw, y, tw, text, LP_COLOR_NORMAL, 0);
        }
    }
    free(rows_of);
    free(lines);
    lp_browser_set_status(b, "help: %d lines", n);
}

static void draw_too_small(lp_screen *scr) {
    char size[64], need[64];
    snprintf(size, sizeof size, "%dx%d is too small", scr->w, scr->h);
    snprintf(need, sizeof need, "loupe needs %dx%d", LP_BROWSER_MIN_W, LP_BROWSER_MIN_H);
    const char *lines[] = {"Terminal too small", size, need, "q quits"};
    int n = 4, y0 = (scr->h - n) / 2;
    if (y0 < 0) y0 = 0;
    for (int i = 0; i < n && y0 + i < scr->h; i++) {
        int w = lp_display_width(lines[i]);
        lp_screen_put_clip(scr, w < scr->w ? (scr->w - w) / 2 : 0, y0 + i, scr->w, lines[i],
                           i == 0 ? LP_COLOR_ERROR : LP_COLOR_NORMAL, i == 0 ? LP_ATTR_BOLD : 0);
    }
}

void lp_browser_draw(lp_browser *b, lp_screen *scr) {
    lp_screen_clear(scr);
    tokens_refresh(b);
    if (scr->w < LP_BROWSER_MIN_W || scr->h < LP_BROWSER_MIN_H) {
        draw_too_small(scr);
        return;
    }
    b->status[0] = '\0';
    draw_title(b, scr);
    draw_strip(b, scr, 1);
    int strip = b->S > 0 && b->T > 0 ? 2 : 1; /* an encoder-decoder's source has a line of its own */
    lp_rect area = {0, 1 + strip, scr->w, scr->h - 3 - strip};
    if (b->output_shown && !b->help && b->output_lines > 0) {
        int ph = b->output_lines + 1;
        if (ph > area.h / 2) ph = area.h / 2;
        if (ph < 2) ph = 2;
        area.h -= ph;
        draw_output(b, scr, (lp_rect){0, area.y + area.h, scr->w, ph});
    }
    b->page = area.h;
    if (b->help) draw_help(b, scr, area);
    else if (lp_browser_stale(b))
        lp_browser_say(scr, area, "Working\xE2\x80\xA6", "Esc cancels");
    else VIEWS[b->view]->draw(b->state[b->view], b, scr, area);

    int ys = scr->h - 2, ym = scr->h - 1;
    lp_screen_fill(scr, 0, ys, scr->w, " ", LP_COLOR_STATUS, 0);
    static const char KEYS[] = " ? help  : command  m note  q quit ";
    int kw = (int)strlen(KEYS);
    const char *hint = b->line_mode ? lp_line_hint(b->line) : "";
    lp_screen_put_clip(scr, 1, ys, scr->w - kw - 2, hint[0] ? hint : b->status, LP_COLOR_STATUS, 0);
    lp_screen_put(scr, scr->w - kw, ys, kw, KEYS, LP_COLOR_STATUS, LP_ATTR_BOLD);
    if (b->line_mode) lp_line_draw(b->line, scr, 0, ym, scr->w);
    else if (b->message[0])
        lp_screen_put_clip(scr, 0, ym, scr->w, b->message, b->message_error ? LP_COLOR_ERROR : LP_COLOR_MESSAGE,
                           b->message_error ? LP_ATTR_BOLD : 0);
    else {
        char keys[160];
        snprintf(keys, sizeof keys,
                 "%c-%c Tab: views  \xE2\x86\x90\xE2\x86\x92: token  %s[ ]: layer  { }: head  /: search  :: command  ?: help",
                 LP_VIEW_COUNT == 10 ? '0' : '1', LP_VIEW_COUNT == 10 ? '9' : lp_view_key(LP_VIEW_COUNT - 1), b->S > 0 ? "s: src/tgt  " : "");
        lp_screen_put_clip(scr, 0, ym, scr->w, keys, LP_COLOR_DIM, 0);
    }
}
