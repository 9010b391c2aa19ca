/* bench_tui: how long the browser takes to draw each view into the screen model (the
 * work of a frame: the terminal copy after it is curses' diffing, the same for every view),
 * for a run of 128 tokens on a GPT-2-small-shaped model (make bench makes one).
 *   bench_tui [--tokens T] [--frames N] [--size WxH] MODEL
 * Target: every view under 16 ms a frame (60 Hz); exit status 1 when one is over. Each
 * view's update (what it computes once per run, such as the logit lens) is shown beside. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loupe/commands.h"
#include "loupe/error.h"
#include "loupe/safetensors.h"
#include "loupe/store.h"
#include "../../ui/view.h"

#define TARGET_MS 16.0

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int fail(const char *what) {
    fprintf(stderr, "bench_tui: %s: %s\n", what, lp_errmsg());
    return 2;
}

/* A random TopK dictionary (k 32) as wide as GPT-2 small's published ones (32 x d_model
 * features) on layer's resid_pre, in SAELens's layout under dir, for the features view. */
static int write_dictionary(const char *dir, int d, int layer) {
    int m = 32 * d;
    size_t n = (size_t)d * m;
    float *enc = malloc(n * sizeof *enc), *dec = malloc(n * sizeof *dec), *zero = calloc((size_t)m, sizeof *zero);
    if (!enc || !dec || !zero) return lp_error(LP_ENOMEM, "out of memory");
    unsigned long long x = 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        enc[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
    }
    for (int f = 0; f < m; f++) /* W_dec = W_enc^T, rows at about unit norm */
        for (int j = 0; j < d; j++) dec[(size_t)f * d + j] = enc[(size_t)j * m + f] * 2.0f / sqrtf((float)d / 3.0f);
    lp_st_tensor t[4] = {{.name = "W_enc", .dtype = LP_DT_F32, .ndim = 2, .shape = {d, m}, .data = enc, .nbytes = n * 4},
                         {.name = "W_dec", .dtype = LP_DT_F32, .ndim = 2, .shape = {m, d}, .data = dec, .nbytes = n * 4},
                         {.name = "b_enc", .dtype = LP_DT_F32, .ndim = 1, .shape = {m}, .data = zero, .nbytes = (size_t)m * 4},
                         {.name = "b_dec", .dtype = LP_DT_F32, .ndim = 1, .shape = {d}, .data = zero, .nbytes = (size_t)d * 4}};
    char path[512];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    int rc = lp_st_write(path, t, 4, NULL, NULL, 0);
    free(enc), free(dec), free(zero);
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    FILE *cfg = rc ? NULL : fopen(path, "w");
    if (!rc && !cfg) return lp_error(LP_EIO, "%s: cannot write", path);
    if (cfg) {
        fprintf(cfg, "{\"architecture\": \"topk\", \"k\": 32, \"d_in\": %d, \"d_sae\": %d, \"hook_name\": "
                     "\"blocks.%d.hook_resid_pre\", \"apply_b_dec_to_input\": false, \"normalize_activations\": \"none\"}\n",
                d, m, layer);
        fclose(cfg);
    }
    return rc;
}

int main(int argc, char **argv) {
    int T = 128, frames = 100, W = 200, H = 60;
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--frames") && i + 1 < argc) frames = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) sscanf(argv[++i], "%dx%d", &W, &H);
        else if (argv[i][0] != '-') model = argv[i];
        else {
            fprintf(stderr, "usage: bench_tui [--tokens T] [--frames N] [--size WxH] MODEL\n");
            return 2;
        }
    }
    if (!model || T < 2 || frames < 1) {
        fprintf(stderr, "usage: bench_tui [--tokens T] [--frames N] [--size WxH] MODEL\n");
        return 2;
    }
    setenv("LOUPE_HISTORY", "", 1);
    FILE *sink = fopen("/dev/null", "w");
    lp_session s;
    lp_session_init(&s, sink);
    if (lp_store_open(&s.store, ":memory:")) return fail("store");
    if (lp_session_load(&s, model)) return fail(model);
    const lp_config *c = lp_model_config(s.model);

    /* T tokens of text-like ids (a stride through the vocabulary), run and recorded. */
    size_t cap = (size_t)T * 12 + 16;
    char *cmd = malloc(cap);
    int o = snprintf(cmd, cap, "run --ids ");
    for (int i = 0; i < T; i++) o += snprintf(cmd + o, cap - (size_t)o, "%s%d", i ? "," : "", (int)((i * 7919L + 13) % c->vocab));
    double t0 = now_ms();
    if (lp_exec(&s, cmd)) return fail("run");
    double t_run = now_ms() - t0;
    free(cmd);

    /* Something in the store for the attribution and patching views to draw. */
    float *scores = malloc((size_t)T * sizeof *scores);
    for (int i = 0; i < T; i++) scores[i] = sinf((float)i * 0.37f);
    lp_store_attribution a = {s.run_id, "ig", "logit", T - 1, 100, -1, "{\"steps\":32}", scores, T, 0.001};
    int64_t id;
    if (lp_store_put_attribution(s.store, &a, &id)) return fail("attribution");
    free(scores);
    json_t *vals = json_array(), *toks = json_array();
    for (int l = 0; l < c->n_layer; l++) {
        json_t *row = json_array();
        for (int p = 0; p < T; p++) json_array_append_new(row, json_real(cos(l * 0.5 + p * 0.1)));
        json_array_append_new(vals, row);
    }
    for (int p = 0; p < T; p++) json_array_append_new(toks, json_string("tok"));
    json_t *res = json_pack("{s:s,s:s,s:s,s:s,s:o,s:b,s:{s:i,s:s},s:{s:i,s:s},s:o}", "site", "resid_pre", "direction",
                            "noising", "rows", "layer", "cols", "position", "values", vals, "undefined", 0, "target", "id",
                            100, "token", " the", "contrast", "id", 101, "token", " a", "tokens", toks);
    char *rj = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    if (lp_store_put_analysis(s.store, s.run_id, "patch", "{}", rj, NULL)) return fail("analysis");
    free(rj);
    for (int i = 0; i < 20; i++) {
        char note[128];
        snprintf(note, sizeof note, "note --layer %d --head %d --pos %d finding %d", i % c->n_layer, i % c->n_head, i % T, i);
        if (lp_exec(&s, note)) return fail("note");
    }

    char dir[] = "/tmp/loupe-bench-sae-XXXXXX", load[128];
    if (!mkdtemp(dir)) return fail("mkdtemp");
    int rc = write_dictionary(dir, c->d_model, c->n_layer / 2);
    snprintf(load, sizeof load, "sae load %s", dir);
    if (!rc) rc = lp_exec(&s, load);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    if (system(rm) != 0) fprintf(stderr, "bench_tui: could not remove %s\n", dir);
    if (rc) return fail("dictionary");

    lp_browser *b = lp_browser_new(&s, NULL);
    lp_screen *scr = lp_screen_new(W, H, 256);
    if (!b || !scr) return fail("out of memory");
    b->pos = T / 2;
    b->layer = c->n_layer / 2;
    b->head = c->n_head / 2;
    printf("browser: %s, %d layers, %d heads, d_model %d, vocab %d; T=%d (run %.0f ms); %dx%d cells, %d frames a view\n",
           lp_model_path(s.model), c->n_layer, c->n_head, c->d_model, c->vocab, T, t_run, W, H, frames);
    printf("%-14s %10s %12s %12s   %s\n", "view", "update ms", "draw ms", "max ms", "target < 16 ms a frame");
    int over = 0;
    for (int v = 0; v < LP_VIEW_COUNT; v++) {
        b->view = v;
        t0 = now_ms();
        if (lp_browser_stale(b) && lp_browser_update(b)) return fail(lp_view_get(v)->name);
        double t_up = now_ms() - t0;
        lp_browser_draw(b, scr); /* warm */
        double sum = 0, mx = 0;
        for (int f = 0; f < frames; f++) {
            /* Move the token each frame, as a user holding an arrow key does. */
            b->pos = (T / 2 + f) % T;
            double t = now_ms();
            lp_browser_draw(b, scr);
            t = now_ms() - t;
            sum += t;
            if (t > mx) mx = t;
        }
        double mean = sum / frames;
        bool ok = mx < TARGET_MS;
        over += !ok;
        printf("%-14s %10.2f %12.3f %12.3f   %s\n", lp_view_get(v)->name, t_up, mean, mx, ok ? "ok" : "OVER");
    }
    /* The features view's update when the selected feature moves (a key: its logit effects
     * over the vocabulary and its decoder cosines with every feature), before the frame. */
    b->view = LP_VIEW_FEATURES;
    double sum = 0, mx = 0;
    for (int f = 0; f < 10; f++) {
        lp_browser_key(b, f < 5 ? 'l' : 'h');
        t0 = now_ms();
        if (lp_browser_stale(b) && lp_browser_update(b)) return fail("feat");
        double t = now_ms() - t0;
        sum += t;
        if (t > mx) mx = t;
    }
    printf("%-14s %10.2f (mean, max %.2f) a feature's panel after \xE2\x86\x90/\xE2\x86\x92 (%d features, vocab %d)\n",
           "feat \xE2\x86\x90\xE2\x86\x92", sum / 10, mx, 32 * c->d_model, c->vocab);
    /* ... and after a command that leaves the run as it was: the encoding is kept (the rows
     * compared), the selected feature's panel made again. */
    sum = mx = 0;
    unsigned enc0 = lp_features_encode_count();
    for (int f = 0; f < 5; f++) {
        if (lp_browser_exec(b, "sae list")) return fail("sae list");
        t0 = now_ms();
        if (lp_browser_stale(b) && lp_browser_update(b)) return fail("feat");
        double t = now_ms() - t0;
        sum += t;
        if (t > mx) mx = t;
    }
    printf("%-14s %10.2f (mean, max %.2f) after a command that keeps the run (%u encodings)\n", "feat :cmd", sum / 5, mx,
           lp_features_encode_count() - enc0);
    lp_screen_free(scr);
    lp_browser_free(b);
    lp_store_close(s.store);
    s.store = NULL;
    lp_session_free(&s);
    fclose(sink);
    return over ? 1 : 0;
}
