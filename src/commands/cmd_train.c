/* The train command: a recipe from options (or a checkpoint's train.json), the corpus and
 * its tokenizer, the training loop with a progress bar, checkpoints and resuming. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands/cmd.h"
#include "loupe/bpe_train.h"
#include "loupe/ckptdir.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/ioi_probe.h"
#include "loupe/recipe.h"
#include "loupe/run.h"
#include "loupe/s2s_eval.h"
#include "loupe/s2s_task.h"
#include "loupe/wordpiece_train.h"

enum { O_RESUME, O_STEPS, O_LAYERS, O_HEADS, O_DMODEL, O_DMLP, O_CTX, O_ATTN_ONLY, O_VOCAB, O_CORPUS_MB, O_MIX,
       O_BATCH, O_SEQ, O_LR, O_MIN_LR, O_WARMUP, O_WD, O_CLIP, O_EVAL_EVERY, O_SAVE_EVERY, O_SEED, O_THREADS,
       O_QUIET, O_STOP_AT, O_SPANS, O_LETTER_WORDS, O_EMBED_STD, O_RANDOM_TOKENS, O_ARCH, O_TASK, O_FROM, O_MASK_PROB,
       O_EXAMPLES, O_SCRAMBLED, O_RANDOM_IOI, O_RULES, O_DIGITS, O_ENC_LAYERS, O_IOI_PROBE, N_OPTS };

/* What may change when resuming: how long, how often to look, how quietly. */
static const bool RESUMABLE[N_OPTS] = {[O_RESUME] = true, [O_STEPS] = true, [O_EVAL_EVERY] = true,
                                       [O_SAVE_EVERY] = true, [O_QUIET] = true, [O_STOP_AT] = true,
                                       [O_IOI_PROBE] = true};

typedef struct {
    const char *dir;
    lp_model *m;
    lp_train_state *st;
    const lp_recipe *r;
    json_t *log;       /* [{step, loss, heldout, lr, tokens_per_s, elapsed_s}] */
    int save_every;
    int stop_at;       /* stop after this step (checkpoint saved); 0: at the end */
    lp_session *s;     /* its progress sink gets a bar per step and a line per evaluation */
    bool quiet;
    double elapsed_before; /* seconds of earlier sessions of this checkpoint */
    double elapsed;        /* seconds of training in all, up to the last step */
    double last_loss, last_heldout, tokens_per_s;
    int save_rc;
    bool staged;       /* DIR/.train-staging already holds this save's first files (a new run's tokenizer) */
    int saved_step;    /* of the checkpoint in DIR; -1: none yet */
    const lp_s2s_example *probe; /* a T5's held-out examples scored at each evaluation (n_probe), else NULL */
    int n_probe;
    int score_rc;      /* a failed scoring stops training with it */
    lp_ioi_probe *ioi[2]; /* --ioi-probe: a GPT-2's IOI prompts of the training and held-out frames, else NULL */
} trainer;

/* The files of a checkpoint besides train.json, which records their digests: a GPT-2's, a
 * BERT's, a T5's (NULL ends each list). */
enum { N_CKPT_FILES = 5 };
static const char *const CKPT_FILES[3][N_CKPT_FILES + 1] = {
    {"config.json", "model.safetensors", "optimizer.safetensors", "vocab.json", "merges.txt", NULL},
    {"config.json", "model.safetensors", "optimizer.safetensors", "vocab.txt", "tokenizer_config.json", NULL},
    {"config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json", NULL}};

static const char *const *ckpt_files(const lp_recipe *r) {
    return CKPT_FILES[r->task == LP_TASK_LM ? 0 : r->task == LP_TASK_S2S ? 2 : 1];
}

/* The engine's last message, said by the train command. */
static int train_error(int rc) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", lp_errmsg());
    return lp_error(rc, "train: %s", msg);
}

static int int_opt(const lp_opt *o, const char *what, long lo, long hi, int *out) {
    if (!o->value) return LP_OK;
    long v;
    int rc = lp_cmd_int(o->value, what, lo, hi, &v);
    if (!rc) *out = (int)v;
    return rc;
}

static int double_opt(const lp_opt *o, const char *what, double lo, double hi, double *out) {
    if (!o->value) return LP_OK;
    double v;
    int rc = lp_cmd_float(o->value, what, &v);
    if (rc) return rc;
    if (!(v >= lo && v <= hi)) return lp_error(LP_EINVAL, "train: %s %s: use %g..%g", what, o->value, lo, hi);
    *out = v;
    return LP_OK;
}

/* The options that set one number of the recipe, by its train.json key: their ranges are the
 * recipe's own (lp_recipe_set), so that a recipe read back from train.json passes the same
 * checks as the options that made it. */
static const struct {
    int opt;
    const char *key;
} RECIPE_OPTS[] = {
    {O_STEPS, "train.steps"},      {O_LAYERS, "model.n_layer"},   {O_HEADS, "model.n_head"},
    {O_DMODEL, "model.d_model"},   {O_DMLP, "model.d_mlp"},       {O_CTX, "model.n_ctx"},
    {O_VOCAB, "vocab"},            {O_BATCH, "train.batch"},      {O_SEQ, "train.seq"},
    {O_LR, "train.lr"},            {O_MIN_LR, "train.min_lr"},    {O_WARMUP, "train.warmup"},
    {O_WD, "train.weight_decay"},  {O_CLIP, "train.grad_clip"},   {O_EVAL_EVERY, "train.eval_every"},
    {O_THREADS, "train.threads"},  {O_EMBED_STD, "model.embed_std"}, {O_RANDOM_TOKENS, "corpus.random_tokens"},
    {O_LETTER_WORDS, "corpus.letter_words"}, {O_MASK_PROB, "train.mask_prob"}, {O_EXAMPLES, "examples"},
    {O_SCRAMBLED, "corpus.scrambled"}, {O_RANDOM_IOI, "corpus.random_ioi"}, {O_ENC_LAYERS, "model.enc_layers"},
};

/* A T5's task: --rules copy,reverse,swap (any of them) and --digits MIN,MAX. */
static int s2s_options(lp_recipe *r, const lp_opt *o) {
    const char *v = o[O_RULES].value;
    if (v) {
        unsigned rules = 0;
        bool ok = *v && v[strlen(v) - 1] != ',';
        for (const char *w = v; ok && *w;) {
            size_t n = strcspn(w, ",");
            int k = 0;
            while (k < LP_S2S_N_RULES && !(strlen(lp_s2s_rule_name((lp_s2s_rule)k)) == n &&
                                           strncmp(w, lp_s2s_rule_name((lp_s2s_rule)k), n) == 0))
                k++;
            if ((ok = k < LP_S2S_N_RULES)) rules |= 1u << k;
            w += n + (w[n] == ',');
        }
        if (!ok)
            return lp_error(LP_EINVAL, "train: --rules %s: give one or more of copy, reverse, swap, split by commas", v);
        r->s2s.rules = rules;
    }
    if (o[O_DIGITS].value) {
        int lo, hi;
        char tail;
        if (sscanf(o[O_DIGITS].value, "%d,%d%c", &lo, &hi, &tail) != 2 || lo < 1 || hi < lo || hi > LP_S2S_MAX_DIGITS)
            return lp_error(LP_EINVAL, "train: --digits %s: give MIN,MAX digits of a source, 1 <= MIN <= MAX <= %d",
                            o[O_DIGITS].value, LP_S2S_MAX_DIGITS);
        r->s2s.min_digits = lo, r->s2s.max_digits = hi;
        if (!o[O_SEQ].value) r->train.T = hi + 2; /* the longest source: the rule, the digits, </s> */
    }
    return LP_OK;
}

/* The recipe's fields from the options given. */
static int apply_options(lp_recipe *r, const lp_opt *o, bool resume, int *save_every, int *stop_at) {
    int rc = LP_OK, seed = -1;
    double corpus_mb = -1.0;
    for (size_t i = 0; i < sizeof RECIPE_OPTS / sizeof RECIPE_OPTS[0] && !rc; i++) {
        const lp_opt *opt = &o[RECIPE_OPTS[i].opt];
        char what[64];
        double v;
        if (!opt->value) continue;
        snprintf(what, sizeof what, "train: --%s", opt->name);
        if (!(rc = lp_cmd_float(opt->value, what, &v))) rc = lp_recipe_set(r, RECIPE_OPTS[i].key, v, what);
    }
    if (!rc) rc = double_opt(&o[O_CORPUS_MB], "--corpus-mb", 0.001, LP_RECIPE_MAX_BYTES / 1048576.0, &corpus_mb);
    if (!rc) rc = int_opt(&o[O_SAVE_EVERY], "--save-every", 0, 100000000, save_every);
    if (!rc) rc = int_opt(&o[O_STOP_AT], "--stop-at", 1, 100000000, stop_at);
    if (!rc) rc = int_opt(&o[O_SEED], "--seed", 0, 2147483647, &seed);
    if (!rc) rc = s2s_options(r, o);
    if (rc) return rc;
    if (o[O_ATTN_ONLY].value) r->model.attn_only = true;
    if (corpus_mb > 0) r->corpus.n_bytes = (size_t)(corpus_mb * 1048576.0), r->corpus.n_docs = 0;
    if (seed >= 0) r->corpus.seed = r->init_seed = r->train.seed = (uint64_t)seed;
    if (o[O_MIX].value) {
        double p[3];
        char tail;
        if (sscanf(o[O_MIX].value, "%lf,%lf,%lf%c", &p[0], &p[1], &p[2], &tail) != 3 ||
            lp_recipe_set(r, "corpus.proportion.ioi", p[0], "--mix") ||
            lp_recipe_set(r, "corpus.proportion.repeat", p[1], "--mix") ||
            lp_recipe_set(r, "corpus.proportion.filler", p[2], "--mix") || p[0] + p[1] + p[2] <= 0)
            return lp_error(LP_EINVAL, "train: --mix %s: give three shares IOI,REPEAT,FILLER, e.g. 0.4,0.3,0.3",
                            o[O_MIX].value);
    }
    if (o[O_SPANS].value) {
        int lo, hi;
        char tail;
        if (sscanf(o[O_SPANS].value, "%d,%d%c", &lo, &hi, &tail) != 2 || lo < 1 || hi < lo || hi > 64)
            return lp_error(LP_EINVAL, "train: --spans %s: give MIN,MAX words of a repeated span, 1 <= MIN <= MAX <= 64",
                            o[O_SPANS].value);
        r->corpus.span_min = lo, r->corpus.span_max = hi;
    }
    /* A shorter run warms up for a tenth of it, unless told (a resumed one keeps its own). */
    if (!resume && o[O_STEPS].value && !o[O_WARMUP].value && r->train.warmup > r->train.steps / 10)
        r->train.warmup = r->train.steps / 10;
    /* The sequence follows the context unless given. */
    if (o[O_CTX].value && !o[O_SEQ].value) r->train.T = r->model.n_ctx;
    return (rc = lp_recipe_check(r)) ? train_error(rc) : LP_OK;
}

/* The options of the GPT-2 and BERT corpus and tokenizer, which a T5's task replaces. */
static const int CORPUS_OPTS[] = {O_TASK, O_FROM, O_MASK_PROB, O_VOCAB, O_CORPUS_MB, O_MIX, O_SPANS, O_LETTER_WORDS,
                                  O_RANDOM_TOKENS, O_EMBED_STD, O_SCRAMBLED, O_RANDOM_IOI, O_ATTN_ONLY, O_CTX};

static int start_from(lp_recipe *r, const lp_opt *o, const char *from, bool bert);

/* A new run's recipe: GPT-2's default, a T5's (--arch t5, --rules, --digits), or a BERT's (--arch
 * bert, --task mlm|ioi|polarity, --from DIR, whose shape and vocabulary a classifier takes). */
static int choose_recipe(lp_recipe *r, const lp_opt *o) {
    const char *arch = o[O_ARCH].value, *task = o[O_TASK].value, *from = o[O_FROM].value;
    if (arch && strcmp(arch, "gpt2") && strcmp(arch, "bert") && strcmp(arch, "t5"))
        return lp_error(LP_EINVAL, "train: --arch %s: use gpt2 (the default), bert or t5", arch);
    bool bert = arch && !strcmp(arch, "bert"), t5 = arch && !strcmp(arch, "t5");
    if (!t5 && (o[O_RULES].value || o[O_DIGITS].value || o[O_ENC_LAYERS].value))
        return lp_error(LP_EINVAL, "train: --%s is for the seq2seq task: add --arch t5",
                        o[O_RULES].value ? "rules" : o[O_DIGITS].value ? "digits" : "enc-layers");
    if (t5) {
        for (size_t i = 0; i < sizeof CORPUS_OPTS / sizeof *CORPUS_OPTS; i++)
            if (o[CORPUS_OPTS[i]].value)
                return lp_error(LP_EINVAL, "train: --%s is not for --arch t5, which trains on the digits-to-words "
                                           "task (see --rules, --digits, --examples)", o[CORPUS_OPTS[i]].name);
        lp_recipe_default_seq2seq(r);
        return LP_OK;
    }
    if (!bert) {
        if (task || o[O_MASK_PROB].value || o[O_EXAMPLES].value)
            return lp_error(LP_EINVAL, "train: --%s is for encoders: add --arch bert",
                            task ? "task" : o[O_MASK_PROB].value ? "mask-prob" : "examples");
        lp_recipe_default(r);
        return from ? start_from(r, o, from, false) : LP_OK;
    }
    lp_train_task t = LP_TASK_MLM;
    if (task && (lp_train_task_from_name(task, &t) || t == LP_TASK_LM || t == LP_TASK_S2S))
        return lp_error(LP_EINVAL, "train: --task %s: use mlm (masked LM, the default), ioi (a classifier of IOI "
                                   "sentences) or polarity (a classifier of sentences' polarity)", task);
    lp_recipe_default_encoder(r, t);
    return from ? start_from(r, o, from, true) : LP_OK;
}

/* --from DIR: the recipe takes the shape and vocabulary of the model in DIR, a BERT (bert) or
 * a GPT-2 that loupe trained, whose weights and tokenizer the new run starts from. */
static int start_from(lp_recipe *r, const lp_opt *o, const char *from, bool bert) {
    static const int shape[] = {O_LAYERS, O_HEADS, O_DMODEL, O_DMLP, O_CTX, O_VOCAB};
    for (size_t i = 0; i < sizeof shape / sizeof *shape; i++)
        if (o[shape[i]].value)
            return lp_error(LP_EINVAL, "train: --%s with --from: the shape and vocabulary are --from's model's",
                            o[shape[i]].name);
    lp_model *m;
    int rc = lp_model_load(&m, from, NULL);
    if (rc) return train_error(rc);
    const lp_config *c = lp_model_config(m);
    char trained[4096];
    bool ours = bert ? strcmp(c->family, "bert") == 0 && c->type_vocab == 2
                     : strcmp(c->family, "gpt2") == 0 && !lp_path_join(trained, sizeof trained, from, "train.json") &&
                           access(trained, F_OK) == 0;
    if (!ours) {
        rc = lp_error(LP_EINVAL, "train: --from %s is a %s: give a %s that loupe trained (train%s)", from, c->arch,
                      bert ? "BERT" : "GPT-2", bert ? " --arch bert" : ", whose train.json is beside its weights");
        lp_model_free(m);
        return rc;
    }
    r->model = (lp_config){.n_layer = c->n_layer, .n_head = c->n_head, .d_model = c->d_model, .d_mlp = c->d_mlp,
                           .n_ctx = c->n_ctx};
    r->vocab = c->vocab;
    if (r->train.T > c->n_ctx) r->train.T = c->n_ctx;
    lp_model_free(m);
    if (strlen(from) >= sizeof r->from) return lp_error(LP_EINVAL, "train: --from: the path is too long");
    snprintf(r->from, sizeof r->from, "%s", from);
    return LP_OK;
}

static int write_json(const char *dir, const char *name, json_t *j) {
    char path[4096];
    int rc = lp_path_join(path, sizeof path, dir, name);
    char *text = rc ? NULL : json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!rc && !text) rc = lp_error(LP_ENOMEM, "out of memory");
    if (!rc) {
        size_t n = strlen(text);
        text[n] = '\n'; /* json_dumps leaves room for the NUL, which we write as the line's end */
        rc = lp_file_write(path, text, n + 1);
    }
    free(text);
    return rc;
}

/* The digests of the checkpoint's files: the staged copy of each where there is one, else the
 * one in dir (the tokenizer, staged only by a new run's first save). */
static int digests(const char *dir, const char *staging, const char *const *CKPT_FILES, json_t **out) {
    json_t *files = json_object();
    int rc = files ? LP_OK : lp_error(LP_ENOMEM, "out of memory");
    for (int i = 0; CKPT_FILES[i] && !rc; i++) {
        char path[4096], d[17];
        if (!(rc = lp_path_join(path, sizeof path, staging, CKPT_FILES[i])) && !lp_file_exists(path))
            rc = lp_path_join(path, sizeof path, dir, CKPT_FILES[i]);
        if (!rc) rc = lp_file_digest(path, d);
        if (!rc && json_object_set_new(files, CKPT_FILES[i], json_string(d)))
            rc = lp_error(LP_ENOMEM, "out of memory");
    }
    if (rc) json_decref(files), files = NULL;
    *out = files;
    return rc;
}

/* A checkpoint, as one unit (loupe/ckptdir.h): weights, optimiser state and train.json, with the
 * step and the digests of the others, staged, then committed into the directory. */
static int save_checkpoint(trainer *t, double elapsed) {
    char staging[4096], path[4096];
    int rc = t->staged ? lp_path_join(staging, sizeof staging, t->dir, LP_CKPT_STAGING)
                       : lp_ckptdir_stage(t->dir, staging, sizeof staging);
    if (!rc) rc = lp_train_save(t->m, staging);
    if (!rc) rc = lp_path_join(path, sizeof path, staging, "optimizer.safetensors");
    if (!rc) rc = lp_train_state_save(t->st, t->m, path);
    json_t *files = NULL;
    if (!rc) rc = digests(t->dir, staging, ckpt_files(t->r), &files);
    if (rc) return rc;
    json_t *j = json_pack("{s:o,s:i,s:f,s:o,s:O}", "recipe", lp_recipe_to_json(t->r), "step", t->st->step,
                          "elapsed_s", elapsed, "files", files, "log", t->log);
    if (!j) return lp_error(LP_ENOMEM, "out of memory");
    rc = write_json(staging, "train.json", j);
    json_decref(j);
    if (!rc) rc = lp_ckptdir_commit(t->dir);
    if (!rc) t->staged = false, t->saved_step = t->st->step;
    return rc;
}

static void fmt_duration(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, cap, "--:--");
    else if (s >= 3600) snprintf(buf, cap, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
    else snprintf(buf, cap, "%d:%02d", (int)s / 60, (int)s % 60);
}

/* --ioi-probe's prompts: each frames', the same at every evaluation (a seed training never uses). */
enum { IOI_PROBE_N = 200, IOI_PROBE_SEED = 20261123 };

/* A T5's held-out pairs scored: PROBE_STEP at each evaluation, PROBE_FINAL at the end. */
enum { PROBE_STEP = 200, PROBE_FINAL = 1000 };

static int make_probe(const lp_recipe *r, lp_s2s_example **out, int *n) {
    lp_s2s_spec spec = r->s2s;
    spec.seed = r->corpus.seed;
    *n = PROBE_FINAL;
    *out = malloc(PROBE_FINAL * sizeof **out);
    if (!*out) return lp_error(LP_ENOMEM, "out of memory");
    return lp_s2s_examples(&spec, LP_S2S_HELDOUT, PROBE_FINAL, *out);
}

/* {"exact", "token_accuracy", "alignment": {"layer", "head" (null: the layer's mean), "hits"}}. */
static json_t *score_json(const lp_s2s_score *sc) {
    json_t *head = sc->best_head == sc->heads ? json_null() : json_integer(sc->best_head);
    return json_pack("{s:f,s:f,s:{s:i,s:o,s:f}}", "exact", sc->exact, "token_accuracy", sc->tf_accuracy,
                     "alignment", "layer", sc->best_layer, "head", head, "hits", sc->best_hits);
}

static void say_score(trainer *t, const lp_s2s_score *sc, const char *when) {
    char head[16];
    if (sc->best_head == sc->heads) snprintf(head, sizeof head, "mean");
    else snprintf(head, sizeof head, "head %d", sc->best_head);
    lp_cmd_progress(t->s, LP_PROGRESS_LOG, "train: %s: %d held-out pairs: greedy exact %.1f%%, token accuracy %.1f%%, "
                    "cross-attention aligned %.1f%% (layer %d %s)", when, sc->n, 100 * sc->exact,
                    100 * sc->tf_accuracy, 100 * sc->best_hits, sc->best_layer, head);
}

/* The final score: every decoder layer's and head's alignment as a note, the whole into the
 * log (and *out, for the command's result). */
static int final_score(trainer *t, const lp_s2s_example *ex, int n, int step, json_t **out) {
    lp_s2s_score *sc;
    int rc = lp_s2s_score_new(&sc, t->m, ex, n);
    if (rc) return train_error(rc);
    json_t *j = score_json(sc), *hits = json_array();
    for (int l = 0; l < sc->layers; l++) {
        json_t *row = json_array();
        char line[512];
        size_t at = (size_t)snprintf(line, sizeof line, "train: layer %d cross-attention aligned:", l);
        for (int h = 0; h <= sc->heads; h++) {
            double v = sc->hits[l * (sc->heads + 1) + h];
            json_array_append_new(row, json_real(v));
            char name[16] = "mean";
            if (h < sc->heads) snprintf(name, sizeof name, "h%d", h);
            if (at < sizeof line) at += (size_t)snprintf(line + at, sizeof line - at, " %s %.1f%%", name, 100 * v);
        }
        json_array_append_new(hits, row);
        if (!t->quiet) lp_cmd_progress(t->s, LP_PROGRESS_LOG, "%s", line);
    }
    if (!t->quiet) say_score(t, sc, "final");
    json_object_set_new(j, "alignment_by_head", hits); /* (layers, heads + 1): the last column the mean */
    json_object_set_new(j, "scored", json_integer(n));
    json_array_append_new(t->log, json_pack("{s:i,s:s,s:O}", "step", step, "final", "score", "score", j));
    lp_s2s_score_free(sc);
    *out = j;
    return LP_OK;
}

/* --ioi-probe at an evaluation: IO beats S on how many prompts of each frames, said and logged. */
static int ioi_probe(trainer *t, json_t *entry) {
    int w[2], abba[2], n[2];
    for (int k = 0; k < 2; k++) {
        n[k] = lp_ioi_probe_n(t->ioi[k]);
        int rc = lp_ioi_probe_score(t->ioi[k], t->m, &w[k], &abba[k]);
        if (rc) return train_error(rc);
    }
    json_object_set_new(entry, "ioi", json_pack("{s:i,s:i,s:i,s:i,s:i}", "training", w[0], "heldout", w[1],
                                                "heldout_abba", abba[1], "training_n", n[0], "heldout_n", n[1]));
    if (!t->quiet)
        lp_cmd_progress(t->s, LP_PROGRESS_LOG, "train: IOI probe: IO beats S on %d/%d in training frames, %d/%d in "
                        "held-out frames (ABBA %d/%d, BABA %d/%d)", w[0], n[0], w[1], n[1], abba[1], n[1] / 2,
                        w[1] - abba[1], n[1] - n[1] / 2);
    return LP_OK;
}

static int on_step(const lp_train_progress *p, void *ctx) {
    trainer *t = ctx;
    t->last_loss = p->loss;
    t->tokens_per_s = p->tokens_per_s;
    t->elapsed = t->elapsed_before + p->elapsed_s;
    if (!isnan(p->eval_loss)) {
        t->last_heldout = p->eval_loss;
        json_t *entry = json_pack("{s:i,s:f,s:f,s:f,s:f,s:f}", "step", p->step, "loss", p->loss, "heldout",
                                  p->eval_loss, "lr", (double)p->lr, "tokens_per_s", p->tokens_per_s, "elapsed_s",
                                  t->elapsed);
        lp_s2s_score *sc = NULL;
        if (t->probe && (t->score_rc = lp_s2s_score_new(&sc, t->m, t->probe, t->n_probe))) {
            t->score_rc = train_error(t->score_rc);
            json_decref(entry);
            return 1;
        }
        if (t->ioi[0] && (t->score_rc = ioi_probe(t, entry))) {
            json_decref(entry);
            return 1;
        }
        if (sc) {
            json_object_update_new(entry, score_json(sc));
            if (!t->quiet) say_score(t, sc, "held-out");
            lp_s2s_score_free(sc);
        }
        json_array_append_new(t->log, entry);
    }
    char eta[32], el[32];
    double left = p->tokens_per_s > 0 ? (double)(p->steps - p->step) * t->r->train.B * t->r->train.T / p->tokens_per_s
                                      : -1;
    fmt_duration(eta, sizeof eta, left);
    fmt_duration(el, sizeof el, t->elapsed);
    if (!t->quiet) {
        enum { WIDTH = 24 };
        int fill = (int)((double)p->step / p->steps * WIDTH);
        char bar[WIDTH + 1], heldout[32] = "";
        for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
        bar[WIDTH] = '\0';
        if (!isnan(t->last_heldout)) snprintf(heldout, sizeof heldout, " held-out %.3f", t->last_heldout);
        lp_cmd_progress(t->s, LP_PROGRESS_STATUS, "step %d/%d [%s] loss %.3f%s | %.1fk tok/s | %s, ETA %s", p->step,
                        p->steps, bar, p->loss, heldout, p->tokens_per_s / 1000, el, eta);
        if (!isnan(p->eval_loss))
            lp_cmd_progress(t->s, LP_PROGRESS_LOG, "train: step %d/%d loss %.4f held-out %.4f lr %.2e | %.0f tok/s | %s, ETA %s",
                            p->step, p->steps, p->loss, p->eval_loss, p->lr, p->tokens_per_s, el, eta);
    }
    if (t->save_every > 0 && p->step % t->save_every == 0 && p->step < p->steps) {
        if ((t->save_rc = save_checkpoint(t, t->elapsed))) return 1;
    }
    return t->stop_at > 0 && p->step >= t->stop_at && p->step < p->steps;
}

/* names[0..n) of from copied into dir: --from's tokenizer. */
static int copy_files(const char *from, const char *dir, const char *const *names, int n) {
    char path[4096], *buf;
    size_t len;
    int rc = LP_OK;
    for (int i = 0; i < n && !rc; i++) {
        if ((rc = lp_path_join(path, sizeof path, from, names[i])) || (rc = lp_file_read_new(path, &buf, &len))) break;
        if (!(rc = lp_path_join(path, sizeof path, dir, names[i]))) rc = lp_file_write(path, buf, len);
        free(buf);
    }
    return rc;
}

/* A BERT's WordPiece vocabulary from the corpus, or --from's copied. */
static int make_wordpiece(const lp_recipe *r, const char *dir) {
    if (r->from[0]) return copy_files(r->from, dir, (const char *const[]){"vocab.txt", "tokenizer_config.json"}, 2);
    int rc = LP_OK;
    char *text;
    size_t len, n_docs;
    lp_corpus_doc *docs;
    if ((rc = lp_corpus_new(&r->corpus, &text, &len, &docs, &n_docs))) return rc;
    size_t *off = malloc(n_docs * sizeof *off), *lens = malloc(n_docs * sizeof *lens);
    if (!off || !lens) rc = lp_error(LP_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n_docs; i++) off[i] = docs[i].off, lens[i] = docs[i].len;
    if (!rc) rc = lp_wordpiece_train_save(text, off, lens, n_docs, r->vocab, dir);
    free(off);
    free(lens);
    free(text);
    free(docs);
    return rc;
}

/* A new run's tokenizer, learnt from the corpus, into dir (the staging of its first save). */
static int make_tokenizer(const lp_recipe *r, const char *dir) {
    if (r->task == LP_TASK_S2S) return lp_s2s_tokenizer_save(dir, NULL);
    if (r->task != LP_TASK_LM) return make_wordpiece(r, dir);
    if (r->from[0]) return copy_files(r->from, dir, (const char *const[]){"vocab.json", "merges.txt"}, 2);
    char *text;
    size_t len;
    int rc = lp_corpus_new(&r->corpus, &text, &len, NULL, NULL);
    if (rc) return rc;
    lp_bpe *b;
    if (!(rc = lp_bpe_train_new(&b, text, len, r->vocab))) {
        rc = lp_bpe_save(b, dir);
        lp_bpe_free(b);
    }
    free(text);
    return rc;
}

static int read_checkpoint(const char *dir, lp_recipe *r, int *step, double *elapsed, json_t **log) {
    char path[4096];
    int rc = lp_path_join(path, sizeof path, dir, "train.json");
    if (rc) return rc;
    if (access(path, F_OK) != 0)
        return lp_error(LP_EIO, "train: %s: no checkpoint to resume (no train.json); start one without --resume", dir);
    json_t *j;
    if ((rc = lp_json_load_file(path, LP_JSON_MAX_CONFIG, 0, &j))) return rc;
    json_t *jr = json_object_get(j, "recipe"), *js = json_object_get(j, "step"), *jl = json_object_get(j, "log");
    json_t *jf = json_object_get(j, "files"), *je = json_object_get(j, "elapsed_s");
    if (!json_is_integer(js) || json_integer_value(js) < 0 || json_integer_value(js) > 100000000)
        rc = lp_error(LP_EFORMAT, "%s: no valid \"step\"", path);
    else rc = lp_recipe_from_json(r, jr, path);
    if (!rc && je && !(json_is_number(je) && json_number_value(je) >= 0 && json_number_value(je) < 1e12))
        rc = lp_error(LP_EFORMAT, "%s: no valid \"elapsed_s\"", path);
    /* The pieces must be the ones this train.json was written with: not a model or an
     * optimiser state from another step, another run, or damaged. */
    const char *const *CKPT_FILES = ckpt_files(r);
    for (int i = 0; CKPT_FILES[i] && !rc; i++) {
        const char *want = json_string_value(json_object_get(jf, CKPT_FILES[i]));
        char file[4096], got[17];
        if (!want) {
            rc = lp_error(LP_EFORMAT, "%s: no digest of %s (written by an older loupe, or not by loupe): the "
                                      "checkpoint cannot be checked whole; start a new one", path, CKPT_FILES[i]);
        } else if ((rc = lp_path_join(file, sizeof file, dir, CKPT_FILES[i]))) {
        } else if (!lp_file_exists(file)) {
            rc = lp_error(LP_EFORMAT, "%s: %s is missing: the checkpoint is incomplete and cannot resume", dir,
                          CKPT_FILES[i]);
        } else if (!(rc = lp_file_digest(file, got)) && strcmp(want, got) != 0) {
            rc = lp_error(LP_EFORMAT, "%s: %s is not the one saved with train.json at step %d (replaced or damaged); "
                                      "the checkpoint's pieces do not belong together and cannot resume",
                          dir, CKPT_FILES[i], (int)json_integer_value(js));
        }
    }
    if (!rc) {
        *step = (int)json_integer_value(js);
        *elapsed = json_number_value(je);
        *log = json_is_array(jl) ? json_incref(jl) : json_array();
    }
    json_decref(j);
    return rc;
}

int lp_cmd_train(lp_session *s, int argc, char **argv, const char *rest) {
    (void)rest;
    lp_opt o[N_OPTS] = {
        [O_RESUME] = {"resume", true, NULL},      [O_STEPS] = {"steps", false, NULL},
        [O_LAYERS] = {"layers", false, NULL},     [O_HEADS] = {"heads", false, NULL},
        [O_DMODEL] = {"d-model", false, NULL},    [O_DMLP] = {"d-mlp", false, NULL},
        [O_CTX] = {"ctx", false, NULL},           [O_ATTN_ONLY] = {"attn-only", true, NULL},
        [O_VOCAB] = {"vocab", false, NULL},       [O_CORPUS_MB] = {"corpus-mb", false, NULL},
        [O_MIX] = {"mix", false, NULL},           [O_BATCH] = {"batch", false, NULL},
        [O_SEQ] = {"seq", false, NULL},           [O_LR] = {"lr", false, NULL},
        [O_MIN_LR] = {"min-lr", false, NULL},     [O_WARMUP] = {"warmup", false, NULL},
        [O_WD] = {"weight-decay", false, NULL},   [O_CLIP] = {"clip", false, NULL},
        [O_EVAL_EVERY] = {"eval-every", false, NULL}, [O_SAVE_EVERY] = {"save-every", false, NULL},
        [O_SEED] = {"seed", false, NULL},         [O_THREADS] = {"threads", false, NULL},
        [O_QUIET] = {"quiet", true, NULL},        [O_STOP_AT] = {"stop-at", false, NULL},
        [O_SPANS] = {"spans", false, NULL},       [O_LETTER_WORDS] = {"letter-words", false, NULL},
        [O_EMBED_STD] = {"embed-std", false, NULL}, [O_RANDOM_TOKENS] = {"random-tokens", false, NULL},
        [O_ARCH] = {"arch", false, NULL},         [O_TASK] = {"task", false, NULL},
        [O_FROM] = {"from", false, NULL},         [O_MASK_PROB] = {"mask-prob", false, NULL},
        [O_EXAMPLES] = {"examples", false, NULL},
        [O_SCRAMBLED] = {"scrambled", false, NULL}, [O_RANDOM_IOI] = {"random-ioi", false, NULL},
        [O_RULES] = {"rules", false, NULL},       [O_DIGITS] = {"digits", false, NULL},
        [O_ENC_LAYERS] = {"enc-layers", false, NULL}, [O_IOI_PROBE] = {"ioi-probe", true, NULL},
    };
    char *pos[1];
    int np, rc = lp_cmd_opts("train", argc, argv, o, N_OPTS, pos, 1, &np);
    if (rc) return rc;
    if (np != 1) return lp_error(LP_EINVAL, "train: give the checkpoint directory to write (see 'help train')");
    const char *dir = pos[0];
    bool resume = o[O_RESUME].value != NULL;
    lp_recipe r;
    int step = 0, save_every = 0, stop_at = 0;
    double elapsed = 0.0;
    json_t *log = NULL;
    lp_tokenizer *tok = NULL;
    lp_model *m = NULL;
    lp_train_state st = {0};
    int *train = NULL, *held = NULL, n_probe = 0;
    size_t n_train = 0, n_held = 0;
    lp_s2s_example *probe = NULL;
    lp_ioi_probe *ioi[2] = {NULL, NULL};
    char path[4096], staging[4096];
    if ((rc = lp_path_join(path, sizeof path, dir, "train.json"))) return rc;
    if (resume) {
        for (int i = 0; i < N_OPTS; i++)
            if (o[i].value && !RESUMABLE[i])
                return lp_error(LP_EINVAL, "train: --%s cannot change when resuming (the recipe is in %s)", o[i].name,
                                path);
        if ((rc = lp_ckptdir_recover(dir)) || (rc = read_checkpoint(dir, &r, &step, &elapsed, &log))) return rc;
        if ((rc = apply_options(&r, o, resume, &save_every, &stop_at))) goto out;
        if (step > r.train.steps) {
            rc = lp_error(LP_EINVAL, "train: %s is at step %d, past --steps %d", dir, step, r.train.steps);
            goto out;
        }
    } else {
        if ((rc = choose_recipe(&r, o))) return rc;
        if ((rc = apply_options(&r, o, resume, &save_every, &stop_at))) return rc;
        if (lp_dir_exists(dir) && (rc = lp_ckptdir_recover(dir))) return rc;
        if (access(path, F_OK) == 0)
            return lp_error(LP_EINVAL, "train: %s already holds a checkpoint: add --resume to continue it, or choose "
                                       "another directory", dir);
        if ((rc = lp_ckptdir_check_new(dir))) return train_error(rc);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return lp_error(LP_EIO, "train: %s: cannot create: %s", dir, strerror(errno));
        if ((rc = lp_ckptdir_stage(dir, staging, sizeof staging)) || (rc = make_tokenizer(&r, staging))) return rc;
        log = json_array();
    }

    if ((rc = lp_tokenizer_load_dir(&tok, resume ? dir : staging))) goto out;
    if (r.task == LP_TASK_S2S && lp_tokenizer_vocab_size(tok) != r.vocab) {
        rc = lp_error(LP_EINVAL, "train: %s: the tokenizer holds %d tokens, the task %d", dir,
                      lp_tokenizer_vocab_size(tok), r.vocab);
        goto out;
    }
    if (r.task != LP_TASK_LM && r.task != LP_TASK_S2S) {
        r.train.mask_id = lp_tokenizer_piece_to_id(tok, LP_WP_MASK);
        r.train.n_special = LP_WP_N_SPECIAL;
        /* A corpus of fewer words than --vocab asks for makes a smaller vocabulary: the
         * recipe (train.json) records the size it has. */
        if (!resume && lp_tokenizer_vocab_size(tok) < r.vocab) r.vocab = lp_tokenizer_vocab_size(tok);
        if (lp_tokenizer_vocab_size(tok) != r.vocab) {
            rc = lp_error(LP_EINVAL, "train: %s: the vocabulary holds %d tokens, the recipe %d", dir,
                          lp_tokenizer_vocab_size(tok), r.vocab);
            goto out;
        }
    }
    if (r.task == LP_TASK_LM) rc = lp_recipe_data(&r, tok, &train, &n_train, &held, &n_held);
    else if (r.task == LP_TASK_S2S) rc = lp_recipe_seq2seq_data(&r, &train, &n_train, &held, &n_held);
    else rc = lp_recipe_encoder_data(&r, tok, &train, &n_train, &held, &n_held);
    if (rc) goto out;
    r.model.vocab = r.vocab;
    bool classifier = r.task == LP_TASK_IOI || r.task == LP_TASK_POLARITY;
    const char *const *labels = r.task == LP_TASK_IOI ? LP_IOI_LABELS : LP_POLARITY_LABELS;
    r.model.head = r.task == LP_TASK_MLM ? LP_HEAD_MLM : classifier ? LP_HEAD_CLASSIFIER : LP_HEAD_LM;
    r.model.n_labels = classifier ? 2 : 0;
    r.model.cross_attn = r.task == LP_TASK_S2S;
    if ((rc = lp_train_model_new(&m, &r.model, r.init_seed)) || (rc = lp_train_state_new(&st, m))) goto out;
    if (classifier && (rc = lp_train_set_labels(m, labels, r.model.n_labels))) goto out;
    if (!resume && r.task != LP_TASK_S2S) lp_train_set_embed_std(m, r.embed_std); /* a T5's is HF's N(0, 1) */
    if (!resume && r.from[0] &&
        (rc = r.task == LP_TASK_LM ? lp_train_load_params(m, r.from) : lp_train_start_from(m, r.from)))
        goto out;
    if (resume) {
        char opt_path[4096];
        if ((rc = lp_train_load_params(m, dir)) ||
            (rc = lp_path_join(opt_path, sizeof opt_path, dir, "optimizer.safetensors")) ||
            (rc = lp_train_state_load(&st, m, opt_path, step)))
            goto out;
    }
    size_t n_params;
    lp_train_params(m, &n_params);
    trainer t = {.dir = dir, .m = m, .st = &st, .r = &r, .log = log, .save_every = save_every, .stop_at = stop_at,
                 .s = s, .quiet = o[O_QUIET].value != NULL, .elapsed_before = elapsed, .elapsed = elapsed,
                 .last_heldout = NAN, .last_loss = NAN, .staged = !resume,
                 .saved_step = resume ? step : -1};
    /* A BERT's data is examples (LENGTH, LABEL, ids), a T5's (S, T, ids): count those. */
    size_t counts[2] = {n_train, n_held};
    for (int k = 0; k < 2 && r.task != LP_TASK_LM; k++) {
        const int *d = k ? held : train;
        size_t n = k ? n_held : n_train, at = 0;
        for (counts[k] = 0; at + 2 <= n; counts[k]++) at += 2 + (size_t)d[at] + (r.task == LP_TASK_S2S ? d[at + 1] : 0);
    }
    if (r.task == LP_TASK_S2S && (rc = make_probe(&r, &probe, &n_probe))) goto out;
    t.probe = probe;
    t.n_probe = n_probe < PROBE_STEP ? n_probe : PROBE_STEP;
    if (o[O_IOI_PROBE].value && r.task != LP_TASK_LM) {
        rc = lp_error(LP_EINVAL, "train: --ioi-probe scores a GPT-2's next-token logits: drop it with --arch %s",
                      r.task == LP_TASK_S2S ? "t5" : "bert");
        goto out;
    }
    for (int k = 0; k < 2 && o[O_IOI_PROBE].value; k++)
        if ((rc = lp_ioi_probe_new(&ioi[k], tok, k ? LP_IOI_HELDOUT : LP_IOI_TRAINING, IOI_PROBE_N, IOI_PROBE_SEED))) {
            rc = train_error(rc);
            goto out;
        }
    for (int k = 0; k < 2 && ioi[k]; k++)
        if (lp_ioi_probe_max_len(ioi[k]) > r.model.n_ctx) {
            rc = lp_error(LP_EINVAL, "train: --ioi-probe: its prompts run to %d tokens, more than the context (--ctx "
                          "%d): give a longer context", lp_ioi_probe_max_len(ioi[k]), r.model.n_ctx);
            goto out;
        }
    t.ioi[0] = ioi[0], t.ioi[1] = ioi[1];
    const char *what = r.task == LP_TASK_LM ? "tokens" : r.task == LP_TASK_MLM ? "masked-LM examples"
                       : r.task == LP_TASK_IOI ? "IOI sentences" : r.task == LP_TASK_S2S ? "pairs" : "polarity sentences";
    char layers[64];
    if (r.task == LP_TASK_S2S)
        snprintf(layers, sizeof layers, "T5, %d encoder + %d decoder layers",
                 r.model.enc_layers ? r.model.enc_layers : r.model.n_layer, r.model.n_layer);
    else
        snprintf(layers, sizeof layers, "%s%d layers", r.task == LP_TASK_LM ? "" : r.task == LP_TASK_MLM ?
                 "BERT masked LM, " : "BERT classifier, ", r.model.n_layer);
    if (!t.quiet)
        lp_cmd_progress(s, LP_PROGRESS_NOTE,
                        "train: %s: %s, d_model %d, %d heads%s, %zu parameters (%.1f MB); %zu training %s, "
                        "%zu held out; steps %d..%d of %d x %d tokens on %d thread%s",
                dir, layers, r.model.d_model, r.model.n_head, r.model.attn_only ? " (attention-only)" : "",
                n_params, n_params * 4.0 / 1e6, counts[0], what, counts[1], st.step + 1, r.train.steps, r.train.B,
                r.train.T, r.train.threads, r.train.threads == 1 ? "" : "s");
    struct sigaction old_signals[2];
    lp_cmd_catch_stop_signals(old_signals);
    rc = st.step < r.train.steps ? lp_train_resume(m, &st, train, n_train, held, n_held, &r.train, on_step, &t) : LP_OK;
    lp_cmd_restore_stop_signals(old_signals);
    if (!t.quiet) lp_cmd_progress(s, LP_PROGRESS_END, "%s", "");
    if (t.save_rc || t.score_rc) {
        rc = t.save_rc ? t.save_rc : t.score_rc;
        goto out;
    }
    if (rc == LP_ERANGE) { /* diverged: nothing saved of it */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lp_errmsg());
        if (t.saved_step >= 0) rc = lp_error(rc, "train: %s (%s keeps the checkpoint of step %d)", msg, dir, t.saved_step);
        else rc = lp_error(rc, "train: %s (nothing was saved)", msg);
        goto out;
    }
    double total_s = t.elapsed;
    if (rc == LP_ECANCEL && stop_at > 0 && st.step == stop_at && !lp_cancelled()) {
        /* --stop-at: a checkpoint to resume later; the command succeeds. */
        if ((rc = save_checkpoint(&t, total_s))) goto out;
        lp_cmd_emit(s, json_pack("{s:s,s:i,s:i,s:f,s:f}", "stopped", dir, "step", st.step, "steps", r.train.steps,
                                 "loss", t.last_loss, "tokens_per_s", t.tokens_per_s),
                    NULL);
        goto out;
    }
    if (rc == LP_ECANCEL) {
        /* Keep what was learnt: the checkpoint at the step reached, then say how to go on. */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lp_errmsg());
        int src = save_checkpoint(&t, total_s);
        rc = src ? src : lp_error(LP_ECANCEL, "%s; checkpoint saved: train %s --resume continues it", msg, dir);
        goto out;
    }
    if (rc) goto out;
    /* A T5's final score, on more held-out pairs than the progress lines', goes into the log. */
    json_t *final = NULL;
    if (probe && (rc = final_score(&t, probe, n_probe, st.step, &final))) goto out;
    if ((rc = save_checkpoint(&t, total_s))) {
        json_decref(final);
        goto out;
    }
    if ((rc = lp_session_load(s, dir))) {
        json_decref(final);
        goto out;
    }
    json_t *v = json_pack("{s:s,s:i,s:I,s:f,s:f,s:f,s:f}", "trained", dir, "steps", st.step, "params",
                          (json_int_t)n_params, "loss", t.last_loss, "heldout", t.last_heldout, "tokens_per_s",
                          t.tokens_per_s, "elapsed_s", total_s);
    if (final) json_object_update(v, final), json_decref(final);
    lp_cmd_emit(s, v, NULL);
out:
    free(probe);
    lp_ioi_probe_free(ioi[0]);
    lp_ioi_probe_free(ioi[1]);
    json_decref(log);
    lp_train_state_free(&st);
    lp_model_free(m);
    lp_tokenizer_free(tok);
    free(train);
    free(held);
    return rc;
}
