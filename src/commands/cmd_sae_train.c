/* train-sae: a sparse autoencoder trained on one site of the loaded model, over a corpus
 * (the engine is sae_train.h). The model runs windows of the corpus's tokens; each window's
 * rows at the site (all but its first position, the attention sink whose norms are outliers)
 * go into a shuffled buffer that batches are drawn from. One batch from the first fill is
 * held out: every report and the final line measure it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands/cmd.h"
#include "loupe/ckptdir.h"
#include "loupe/corpus.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/generate.h"
#include "loupe/sae_train.h"
#include "loupe/site.h"
#include "loupe/tokenizer.h"

#define MAX_CORPUS_BYTES ((size_t)1 << 30)
#define DEFAULT_CORPUS_BYTES ((size_t)16 << 20)
#define PIECE_BYTES 65536          /* text encoded a piece at a time, cut after a newline */
#define BUFFER_BYTES ((size_t)64 << 20) /* rows kept for shuffling, at most */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* The corpus's text: the file, or the synthetic corpus (corpus.h) for seed. */
static int corpus_text(const char *path, uint64_t seed, char **text, size_t *len) {
    if (path) {
        int rc = lp_file_read_new(path, text, len);
        if (rc) return rc;
        if (*len > MAX_CORPUS_BYTES) {
            free(*text);
            return lp_error(LP_ERANGE, "train-sae: %s is over 1 GiB; give a part of it", path);
        }
        return LP_OK;
    }
    lp_corpus_spec spec;
    lp_corpus_spec_default(&spec);
    spec.seed = seed;
    spec.n_bytes = DEFAULT_CORPUS_BYTES;
    return lp_corpus_new(&spec, text, len, NULL, NULL);
}

/* The text's tokens, encoded a piece at a time (cut after a newline where there is one). */
static int corpus_tokens(const lp_tokenizer *tok, const char *text, size_t len, int **ids, size_t *n) {
    size_t cap = len + 16, at = 0;
    int *out = malloc(cap * sizeof *out);
    if (!out) return lp_error(LP_ENOMEM, "train-sae: out of memory for the corpus's tokens");
    for (size_t off = 0; off < len;) {
        size_t end = off + PIECE_BYTES < len ? off + PIECE_BYTES : len;
        if (end < len) {
            const char *nl = memchr(text + off + PIECE_BYTES / 2, '\n', end - off - PIECE_BYTES / 2);
            if (nl) end = (size_t)(nl - text) + 1;
        }
        int got = 0, rc = LP_ERANGE;
        while (rc == LP_ERANGE) {
            size_t room = cap - at;
            rc = lp_tokenizer_encode(tok, text + off, end - off, false, out + at, room > INT32_MAX ? INT32_MAX : (int)room,
                                     &got);
            if (rc == LP_ERANGE) {
                int *grown = realloc(out, (cap = cap * 2 + (size_t)got) * sizeof *out);
                if (!grown) {
                    free(out);
                    return lp_error(LP_ENOMEM, "train-sae: out of memory for the corpus's tokens");
                }
                out = grown;
                lp_error_clear();
            }
        }
        if (rc) {
            free(out);
            return rc;
        }
        at += (size_t)got;
        off = end;
    }
    *ids = out;
    *n = at;
    return LP_OK;
}

typedef struct {
    lp_session *s;
    lp_act_kind kind;
    int layer, width, seq;
    const int *ids;
    size_t n_ids, next; /* the next window starts at next (wrapping round the corpus) */
    float *rows;        /* the buffer: cap rows of width */
    size_t cap, filled, used;
    lp_rng rng;
    size_t epochs;      /* times the corpus wrapped */
    double secs;        /* spent running the model and shuffling */
} row_source;

/* Runs windows until the buffer holds cap rows, then shuffles it (Fisher-Yates). */
static int refill(row_source *src) {
    double t0 = now_s();
    src->filled = src->used = 0;
    while (src->filled < src->cap) {
        if (lp_cancelled()) return lp_error(LP_ECANCEL, "cancelled");
        if (src->next + (size_t)src->seq > src->n_ids) src->next = 0, src->epochs++;
        lp_run *r = NULL;
        float *x = NULL;
        int rc = lp_run_new(&r, src->s->model, src->ids + src->next, src->seq);
        if (!rc) rc = lp_site_rows(r, src->kind, src->layer, src->width, &x);
        lp_run_free(r);
        if (rc) return rc;
        src->next += (size_t)src->seq;
        size_t take = (size_t)src->seq - 1, room = src->cap - src->filled;
        if (take > room) take = room;
        memcpy(src->rows + src->filled * src->width, x + src->width, take * src->width * sizeof *x);
        src->filled += take;
        free(x);
    }
    size_t w = (size_t)src->width;
    float *tmp = malloc(w * sizeof *tmp);
    if (!tmp) return lp_error(LP_ENOMEM, "out of memory");
    for (size_t i = src->filled - 1; i > 0; i--) {
        size_t j = (size_t)(lp_rng_uniform(&src->rng) * (double)(i + 1));
        if (j > i) j = i;
        memcpy(tmp, src->rows + i * w, w * sizeof *tmp);
        memcpy(src->rows + i * w, src->rows + j * w, w * sizeof *tmp);
        memcpy(src->rows + j * w, tmp, w * sizeof *tmp);
    }
    free(tmp);
    src->secs += now_s() - t0;
    return LP_OK;
}

/* The next batch of n rows (a pointer into the buffer, refilled when it runs out). */
static int next_batch(row_source *src, int n, const float **out) {
    if (src->used + (size_t)n > src->filled) {
        int rc = refill(src);
        if (rc) return rc;
    }
    *out = src->rows + src->used * src->width;
    src->used += (size_t)n;
    return LP_OK;
}

static json_t *stats_json(const lp_sae_step_stats *st) {
    return json_pack("{s:o,s:o,s:o,s:o}", "mse", lp_json_number(st->mse), "l0", lp_json_number(st->l0),
                     "explained_variance", lp_json_number(st->explained_variance), "loss", lp_json_number(st->loss));
}

enum { O_SITE, O_DSAE, O_ARCH, O_K, O_L1, O_LR, O_STEPS, O_BATCH, O_SEQ, O_CORPUS, O_SEED, O_QUIET, N_OPTS };

int lp_cmd_train_sae(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    lp_opt o[N_OPTS] = {
        [O_SITE] = {"site", false, NULL},   [O_DSAE] = {"d-sae", false, NULL}, [O_ARCH] = {"arch", false, NULL},
        [O_K] = {"k", false, NULL},         [O_L1] = {"l1", false, NULL},      [O_LR] = {"lr", false, NULL},
        [O_STEPS] = {"steps", false, NULL}, [O_BATCH] = {"batch", false, NULL}, [O_SEQ] = {"seq", false, NULL},
        [O_CORPUS] = {"corpus", false, NULL}, [O_SEED] = {"seed", false, NULL}, [O_QUIET] = {"quiet", true, NULL},
    };
    char *pos[1];
    int np, rc = lp_cmd_opts("train-sae", argc, argv, o, N_OPTS, pos, 1, &np);
    if (rc) return rc;
    if ((rc = lp_cmd_need_model(s))) return rc;
    if (np != 1) return lp_error(LP_EINVAL, "train-sae: give the directory to write the dictionary to (see 'help train-sae')");
    const char *dir = pos[0];
    const lp_config *c = lp_model_config(s->model);
    if (lp_model_encoder(s->model)) return lp_error(LP_EUNSUPPORTED, "train-sae: encoder-decoders are not supported yet");
    if (!lp_model_tokenizer(s->model)) return lp_error(LP_EINVAL, "train-sae: the model has no tokenizer to read a corpus with");

    char site[128];
    if (o[O_SITE].value) snprintf(site, sizeof site, "%s", o[O_SITE].value);
    else snprintf(site, sizeof site, "blocks.%d.hook_resid_pre", c->n_layer / 2);
    lp_act_kind kind;
    int layer;
    if ((rc = lp_site_parse(site, c, &kind, &layer))) return rc;
    if (layer < 0 || layer >= c->n_layer)
        return lp_error(LP_EINVAL, "train-sae: --site %s: give a layer 0..%d as blocks.L.NAME (e.g. blocks.0.hook_resid_post)",
                        site, c->n_layer - 1);
    int width = lp_site_width(c, kind);
    if (!width)
        return lp_error(LP_EUNSUPPORTED, "train-sae: --site %s: dictionaries read resid_pre, resid_mid, resid_post, attn_out, "
                        "mlp_out, ln1, ln2, z, mlp_pre or mlp_post", site);

    lp_sae_train_spec spec = {.d_in = width, .arch = LP_SAE_STANDARD, .l1 = 1.0, .lr = 4e-4, .normalize = true};
    long v, steps = 2000, batch = 4096, seq = c->n_ctx < 128 ? c->n_ctx : 128;
    if (o[O_ARCH].value) {
        if (!strcmp(o[O_ARCH].value, "topk")) spec.arch = LP_SAE_TOPK;
        else if (strcmp(o[O_ARCH].value, "standard"))
            return lp_error(LP_EINVAL, "train-sae: --arch %s: use standard (ReLU + L1) or topk", o[O_ARCH].value);
    }
    v = 8L * width;
    if (o[O_DSAE].value && (rc = lp_cmd_int(o[O_DSAE].value, "--d-sae", 1, LP_SAE_MAX_D_SAE, &v))) return rc;
    spec.d_sae = (int)v;
    v = spec.d_sae < 32 ? spec.d_sae : 32;
    if (o[O_K].value) {
        if (spec.arch != LP_SAE_TOPK) return lp_error(LP_EINVAL, "train-sae: --k is for --arch topk");
        if ((rc = lp_cmd_int(o[O_K].value, "--k", 1, spec.d_sae, &v))) return rc;
    }
    spec.k = spec.arch == LP_SAE_TOPK ? (int)v : 0;
    if (o[O_L1].value) {
        if (spec.arch != LP_SAE_STANDARD) return lp_error(LP_EINVAL, "train-sae: --l1 is for --arch standard (topk has none)");
        if ((rc = lp_cmd_float(o[O_L1].value, "--l1", &spec.l1))) return rc;
    }
    if (o[O_LR].value && (rc = lp_cmd_float(o[O_LR].value, "--lr", &spec.lr))) return rc;
    if (o[O_STEPS].value && (rc = lp_cmd_int(o[O_STEPS].value, "--steps", 1, 10000000, &steps))) return rc;
    if (o[O_BATCH].value && (rc = lp_cmd_int(o[O_BATCH].value, "--batch", 1, 1 << 20, &batch))) return rc;
    if (o[O_SEQ].value && (rc = lp_cmd_int(o[O_SEQ].value, "--seq", 2, c->n_ctx, &seq))) return rc;
    long seed = 0;
    if (o[O_SEED].value && (rc = lp_cmd_int(o[O_SEED].value, "--seed", 0, 2147483647L, &seed))) return rc;
    spec.seed = (uint64_t)seed;
    bool quiet = o[O_QUIET].value != NULL;
    if ((rc = lp_ckptdir_check_new(dir))) return rc; /* before minutes of training, not after */

    lp_sae_trainer *t = NULL;
    if ((rc = lp_sae_trainer_new(&t, &spec))) return rc;
    char *text = NULL;
    size_t len = 0, n_ids = 0;
    int *ids = NULL;
    rc = corpus_text(o[O_CORPUS].value, spec.seed + 1, &text, &len);
    if (!rc) rc = corpus_tokens(lp_model_tokenizer(s->model), text, len, &ids, &n_ids);
    free(text);
    if (!rc && n_ids < (size_t)seq)
        rc = lp_error(LP_EINVAL, "train-sae: the corpus has %zu tokens, fewer than one window of --seq %ld", n_ids, seq);
    /* the buffer: 16 batches where that fits BUFFER_BYTES, never less than two */
    size_t row_bytes = (size_t)width * sizeof(float), cap = 16 * (size_t)batch;
    if (cap * row_bytes > BUFFER_BYTES) cap = BUFFER_BYTES / row_bytes;
    if (cap < 2 * (size_t)batch) cap = 2 * (size_t)batch;
    row_source src = {.s = s, .kind = kind, .layer = layer, .width = width, .seq = (int)seq, .ids = ids, .n_ids = n_ids,
                      .cap = cap};
    lp_rng_seed(&src.rng, spec.seed + 2);
    float *held = NULL;
    if (!rc && !(src.rows = malloc(cap * row_bytes))) rc = lp_error(LP_ENOMEM, "train-sae: out of memory for %zu rows", cap);
    if (!rc && !(held = malloc((size_t)batch * row_bytes))) rc = lp_error(LP_ENOMEM, "out of memory");
    const float *x = NULL;
    if (!rc && !(rc = next_batch(&src, (int)batch, &x))) memcpy(held, x, (size_t)batch * row_bytes);

    struct sigaction old_signals[2];
    lp_cmd_catch_stop_signals(old_signals);
    lp_sae_step_stats st = {0}, ho = {0};
    double t0 = now_s();
    long step = 0;
    for (; !rc && step < steps; step++) {
        if ((rc = next_batch(&src, (int)batch, &x)) || (rc = lp_sae_trainer_step(t, x, (int)batch, &st))) break;
        double el = now_s() - t0, rate = (step + 1) * (double)batch / (el > 0 ? el : 1e-9);
        bool report = (step + 1) % (steps >= 10 ? steps / 10 : 1) == 0 || step + 1 == steps;
        if (!quiet)
            lp_cmd_progress(s, LP_PROGRESS_STATUS, "train-sae: step %ld/%ld mse %.4g L0 %.1f EV %.3f | %.0f rows/s | ETA %.0f s",
                            step + 1, steps, st.mse, st.l0, st.explained_variance, rate,
                            (steps - step - 1) * (double)batch / rate);
        if (report && !quiet && !(rc = lp_sae_trainer_loss(t, held, (int)batch, &ho, NULL)))
            lp_cmd_progress(s, LP_PROGRESS_LOG,
                            "train-sae: step %ld/%ld held-out mse %.4g L0 %.1f explained variance %.3f | %.0f rows/s",
                            step + 1, steps, ho.mse, ho.l0, ho.explained_variance, rate);
    }
    lp_cmd_restore_stop_signals(old_signals);
    bool stopped = rc == LP_ECANCEL;
    if (stopped) lp_error_clear(), rc = LP_OK;
    if (!rc && step == 0) rc = lp_error(LP_ECANCEL, "train-sae: stopped before the first step; nothing written");
    if (!rc) rc = lp_sae_trainer_loss(t, held, (int)batch, &ho, NULL);
    if (!rc) rc = lp_sae_trainer_save(t, dir, site, lp_model_path(s->model));
    if (!rc) {
        json_t *res = json_pack("{s:s,s:s,s:s,s:i,s:i,s:I,s:I,s:b,s:o}", "dir", dir, "site", site, "architecture",
                                lp_sae_arch_name(spec.arch), "d_in", width, "d_sae", spec.d_sae, "steps", (json_int_t)step,
                                "rows", (json_int_t)(step * batch), "stopped", stopped, "held_out", stats_json(&ho));
        json_object_set_new(res, "corpus_epochs", json_integer((json_int_t)src.epochs));
        json_object_set_new(res, "seconds", lp_json_number(now_s() - t0));
        json_object_set_new(res, "model_seconds", lp_json_number(src.secs));
        lp_cmd_emit(s, res, NULL);
    }
    lp_sae_trainer_free(t);
    free(src.rows);
    free(held);
    free(ids);
    return rc;
}
