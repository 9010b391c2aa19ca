/* Training recipes: the default one, JSON in and out, and the data a recipe makes. */
#include "loupe/recipe.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"

const char *const LP_IOI_LABELS[LP_IOI_N_LABELS] = {"subject", "io"};
const char *const LP_POLARITY_LABELS[LP_POLARITY_N_LABELS] = {"negative", "positive"};

static json_t *recipe_numbers_json(const lp_recipe *r);

void lp_recipe_default(lp_recipe *r) {
    *r = (lp_recipe){0};
    r->examples = 20000;
    lp_s2s_spec_default(&r->s2s);
    lp_corpus_spec_default(&r->corpus);
    r->corpus.seed = 1;
    r->corpus.n_bytes = 48u << 20;
    r->corpus.proportion[LP_CORPUS_IOI] = 0.65;
    r->corpus.proportion[LP_CORPUS_REPEAT] = 0.25;
    r->corpus.proportion[LP_CORPUS_FILLER] = 0.1;
    r->corpus.span_min = 4;
    r->corpus.span_max = 12;
    r->corpus.letter_words = 0.2; /* more made-up words spend the vocabulary on letter pairs and split the names */
    r->random_tokens = 0.25;      /* repeats of every token, not only the corpus's words: general induction */
    r->vocab = 2048;
    r->heldout = 0.02;
    r->model = (lp_config){.n_layer = 2, .n_head = 4, .d_model = 64, .d_mlp = 256, .n_ctx = 128};
    r->init_seed = 1;
    r->embed_std = 1.0f;
    r->train = lp_train_defaults(16000);
    r->train.B = 32;
    r->train.T = 128;
    r->train.warmup = 300;
    r->train.lr = 3e-3f;
    r->train.min_lr = 1e-4f;
    r->train.eval_every = 500;
    r->train.eval_batches = 8;
    r->train.threads = 2;
}

void lp_recipe_default_encoder(lp_recipe *r, lp_train_task task) {
    lp_recipe_default(r);
    r->task = task;
    r->corpus.n_bytes = 4u << 20;
    r->random_tokens = 0.0; /* a GPT-2's induction data: not an encoder's */
    r->vocab = 1024;
    r->model = (lp_config){.n_layer = 2, .n_head = 4, .d_model = 64, .d_mlp = 256, .n_ctx = 64};
    r->embed_std = 0.02f;   /* BERT's own initialisation: the embeddings' LayerNorm spreads them */
    r->train = lp_train_defaults(3000);
    r->train.B = 32;
    r->train.T = 64;
    r->train.warmup = 100;
    r->train.lr = 1e-3f;
    r->train.min_lr = 1e-4f;
    r->train.weight_decay = 0.01f;
    r->train.eval_every = 250;
    r->train.eval_batches = 8;
    r->train.threads = 2;
}

void lp_recipe_default_seq2seq(lp_recipe *r) {
    lp_recipe_default_encoder(r, LP_TASK_S2S); /* its optimiser's settings */
    r->examples = 100000;
    r->s2s.rules = 1u << LP_S2S_COPY | 1u << LP_S2S_REVERSE | 1u << LP_S2S_SWAP;
    r->s2s.min_digits = 3;
    r->s2s.max_digits = 8;
    r->s2s.heldout_every = 10;
    int words;
    lp_s2s_words(&words);
    r->vocab = 3 + words; /* <pad>, </s>, <unk>, then one token per word (unigram_words.h) */
    r->heldout = 0.02;
    r->model = (lp_config){.n_layer = 2, .n_head = 4, .d_model = 128, .d_mlp = 512, .n_ctx = 64};
    r->train.T = r->s2s.max_digits + 2; /* the longest source: the rule, the digits, </s> */
    r->train.warmup = 200;
}

static const char *const TASK_NAMES[] = {[LP_TASK_LM] = "lm", [LP_TASK_MLM] = "mlm", [LP_TASK_IOI] = "ioi",
                                         [LP_TASK_POLARITY] = "polarity", [LP_TASK_S2S] = "s2s"};

const char *lp_train_task_name(lp_train_task t) { return TASK_NAMES[t]; }

int lp_train_task_from_name(const char *name, lp_train_task *t) {
    for (size_t i = 0; i < sizeof TASK_NAMES / sizeof *TASK_NAMES; i++)
        if (!strcmp(name, TASK_NAMES[i])) return *t = (lp_train_task)i, LP_OK;
    return LP_EINVAL;
}

json_t *lp_recipe_to_json(const lp_recipe *r) {
    json_t *j = recipe_numbers_json(r);
    if (j && r->task == LP_TASK_S2S) {
        const lp_s2s_spec *t = &r->s2s;
        json_object_set_new(j, "arch", json_string("t5"));
        json_object_set_new(j, "task", json_string("s2s"));
        json_object_set_new(j, "examples", json_integer(r->examples));
        json_object_set_new(json_object_get(j, "model"), "enc_layers", json_integer(r->model.enc_layers));
        json_object_set_new(j, "s2s", json_pack("{s:i,s:i,s:i,s:i}", "rules", (int)t->rules, "min_digits",
                                                t->min_digits, "max_digits", t->max_digits, "heldout_every",
                                                t->heldout_every));
    } else if (j && r->task != LP_TASK_LM) {
        json_object_set_new(j, "arch", json_string("bert"));
        json_object_set_new(j, "task", json_string(lp_train_task_name(r->task)));
        json_object_set_new(j, "examples", json_integer(r->examples));
        json_object_set_new(json_object_get(j, "train"), "mask_prob", json_real(r->train.mask_prob));
    }
    if (j && r->from[0]) json_object_set_new(j, "from", json_string(r->from)); /* a BERT's or a GPT-2's */
    return j;
}

static json_t *recipe_numbers_json(const lp_recipe *r) {
    const lp_corpus_spec *c = &r->corpus;
    const lp_config *m = &r->model;
    const lp_train_options *o = &r->train;
    return json_pack(
        "{s:{s:I,s:{s:f,s:f,s:f},s:I,s:I,s:i,s:i,s:f,s:f,s:f,s:f},s:i,s:f,"
        "s:{s:i,s:i,s:i,s:i,s:i,s:b,s:I,s:f},"
        "s:{s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:I,s:i}}",
        "corpus", "seed", (json_int_t)c->seed, "proportion", "ioi", c->proportion[LP_CORPUS_IOI], "repeat",
        c->proportion[LP_CORPUS_REPEAT], "filler", c->proportion[LP_CORPUS_FILLER], "n_docs", (json_int_t)c->n_docs,
        "n_bytes", (json_int_t)c->n_bytes, "span_min", c->span_min, "span_max", c->span_max, "letter_words",
        c->letter_words, "scrambled", c->scrambled, "random_tokens", r->random_tokens, "random_ioi", r->random_ioi, "vocab", r->vocab, "heldout", r->heldout,
        "model", "n_layer", m->n_layer, "n_head", m->n_head, "d_model", m->d_model, "d_mlp", m->d_mlp, "n_ctx",
        m->n_ctx, "attn_only", m->attn_only, "init_seed", (json_int_t)r->init_seed, "embed_std", (double)r->embed_std,
        "train", "batch", o->B, "seq", o->T, "steps", o->steps, "warmup", o->warmup, "lr", (double)o->lr, "min_lr",
        (double)o->min_lr, "beta1", (double)o->beta1, "beta2", (double)o->beta2, "eps", (double)o->eps,
        "weight_decay", (double)o->weight_decay, "grad_clip", (double)o->grad_clip, "eval_every", o->eval_every,
        "eval_batches", o->eval_batches, "seed", (json_int_t)o->seed, "threads", o->threads);
}

/* Every number of the recipe, with the values it may take: train.json and the command's
 * options are both checked against this one table, after conversion to the type the number
 * is stored in (a weight decay of 1e300 is an infinite float, and refused). The bounds keep
 * what a recipe can ask for finite: a corpus of at most 4 GiB (LP_RECIPE_MAX_BYTES), a model
 * whose shape the loaders accept, no NaN or infinity anywhere. */
typedef enum { F_INT, F_U32, F_U64, F_SIZE, F_DOUBLE, F_FLOAT } ftype;

typedef struct {
    const char *key; /* where it sits in train.json's recipe: "train.lr" */
    ftype type;
    size_t offset;   /* in lp_recipe */
    double lo, hi;   /* allowed, inclusive */
} field;

#define SEED_MAX 9e18 /* within JSON's signed 64-bit integers */
#define F(key, type, member, lo, hi) {key, type, offsetof(lp_recipe, member), lo, hi}
static const field FIELDS[] = {
    F("corpus.seed", F_U64, corpus.seed, 0, SEED_MAX),
    F("corpus.proportion.ioi", F_DOUBLE, corpus.proportion[LP_CORPUS_IOI], 0, 1e6),
    F("corpus.proportion.repeat", F_DOUBLE, corpus.proportion[LP_CORPUS_REPEAT], 0, 1e6),
    F("corpus.proportion.filler", F_DOUBLE, corpus.proportion[LP_CORPUS_FILLER], 0, 1e6),
    F("corpus.n_docs", F_SIZE, corpus.n_docs, 0, LP_RECIPE_MAX_DOCS),
    F("corpus.n_bytes", F_SIZE, corpus.n_bytes, 0, LP_RECIPE_MAX_BYTES),
    F("corpus.span_min", F_INT, corpus.span_min, 1, 64),
    F("corpus.span_max", F_INT, corpus.span_max, 1, 64),
    F("corpus.letter_words", F_DOUBLE, corpus.letter_words, 0, 1),
    F("corpus.scrambled", F_DOUBLE, corpus.scrambled, 0, 1),
    F("corpus.random_tokens", F_DOUBLE, random_tokens, 0, 1),
    F("corpus.random_ioi", F_DOUBLE, random_ioi, 0, 1),
    F("vocab", F_INT, vocab, 4, 65536), /* a byte-level BPE's at least 258: lp_recipe_check */
    F("heldout", F_DOUBLE, heldout, 1e-6, 0.49),
    F("model.n_layer", F_INT, model.n_layer, 1, 64),
    F("model.enc_layers", F_INT, model.enc_layers, 0, 64),
    F("model.n_head", F_INT, model.n_head, 1, 1024),
    F("model.d_model", F_INT, model.d_model, 1, 8192),
    F("model.d_mlp", F_INT, model.d_mlp, 1, 65536),
    F("model.n_ctx", F_INT, model.n_ctx, 2, 8192),
    F("model.init_seed", F_U64, init_seed, 0, SEED_MAX),
    F("model.embed_std", F_FLOAT, embed_std, 1e-6, 100),
    F("train.batch", F_INT, train.B, 1, 4096),
    F("train.seq", F_INT, train.T, 1, 8192),
    F("train.steps", F_INT, train.steps, 1, 100000000),
    F("train.warmup", F_INT, train.warmup, 0, 100000000),
    F("train.lr", F_FLOAT, train.lr, 1e-9, 10),
    F("train.min_lr", F_FLOAT, train.min_lr, 0, 10),
    F("train.beta1", F_FLOAT, train.beta1, 0, 0.999999),
    F("train.beta2", F_FLOAT, train.beta2, 0, 0.999999),
    F("train.eps", F_FLOAT, train.eps, 1e-30, 1),
    F("train.weight_decay", F_FLOAT, train.weight_decay, 0, 10),
    F("train.grad_clip", F_FLOAT, train.grad_clip, 0, 1e9),
    F("train.eval_every", F_INT, train.eval_every, 0, 100000000),
    F("train.eval_batches", F_INT, train.eval_batches, 1, 100000),
    F("train.seed", F_U64, train.seed, 0, SEED_MAX),
    F("train.threads", F_INT, train.threads, 1, 256),
    F("train.mask_prob", F_FLOAT, train.mask_prob, 1e-6, 1),
    F("examples", F_INT, examples, 1, 10000000),
    F("s2s.rules", F_U32, s2s.rules, 1, (1 << LP_S2S_N_RULES) - 1),
    F("s2s.min_digits", F_INT, s2s.min_digits, 1, LP_S2S_MAX_DIGITS),
    F("s2s.max_digits", F_INT, s2s.max_digits, 1, LP_S2S_MAX_DIGITS),
    F("s2s.heldout_every", F_INT, s2s.heldout_every, 2, 1000000),
};
#undef F
enum { N_FIELDS = sizeof FIELDS / sizeof FIELDS[0] };

static const field *find_field(const char *key) {
    for (int i = 0; i < N_FIELDS; i++)
        if (strcmp(FIELDS[i].key, key) == 0) return &FIELDS[i];
    return NULL;
}

static double field_value(const lp_recipe *r, const field *f) {
    const char *at = (const char *)r + f->offset;
    switch (f->type) {
    case F_INT: return *(const int *)at;
    case F_U32: return *(const unsigned *)at;
    case F_U64: return (double)*(const uint64_t *)at;
    case F_SIZE: return (double)*(const size_t *)at;
    case F_DOUBLE: return *(const double *)at;
    case F_FLOAT: return *(const float *)at;
    }
    return NAN;
}

static int out_of_range(const field *f, const char *what, double v) {
    return lp_error(LP_EINVAL, "%s %.10g: use %s%.10g..%.10g", what, v,
                    f->type != F_DOUBLE && f->type != F_FLOAT ? "a whole number in " : "", f->lo, f->hi);
}

/* Stores v into f's field of r: range-checked before the conversion (which would otherwise
 * be undefined for a float or integer too large) and again after it. */
static int set_field(lp_recipe *r, const field *f, double v, const char *what) {
    if (!(v >= f->lo && v <= f->hi)) return out_of_range(f, what, v);
    bool whole = f->type != F_DOUBLE && f->type != F_FLOAT;
    if (whole && v != floor(v)) return out_of_range(f, what, v);
    char *at = (char *)r + f->offset;
    switch (f->type) {
    case F_INT: *(int *)at = (int)v; break;
    case F_U32: *(unsigned *)at = (unsigned)v; break;
    case F_U64: *(uint64_t *)at = (uint64_t)v; break;
    case F_SIZE: *(size_t *)at = (size_t)v; break;
    case F_DOUBLE: *(double *)at = v; break;
    case F_FLOAT: *(float *)at = (float)v; break;
    }
    double back = field_value(r, f);
    if (!(back >= f->lo && back <= f->hi)) return out_of_range(f, what, back);
    return LP_OK;
}

int lp_recipe_set(lp_recipe *r, const char *key, double v, const char *what) {
    const field *f = find_field(key);
    if (!f) return lp_error(LP_EINVAL, "%s: no recipe number %s", what, key);
    return set_field(r, f, v, what);
}

/* The value at a dotted key of j ("train.lr"), or NULL. */
static const json_t *lookup(const json_t *j, const char *key) {
    char part[64];
    while (j && *key) {
        size_t n = strcspn(key, ".");
        if (n >= sizeof part) return NULL;
        memcpy(part, key, n);
        part[n] = '\0';
        j = json_is_object(j) ? json_object_get(j, part) : NULL;
        key += n + (key[n] == '.');
    }
    return j;
}

int lp_recipe_from_json(lp_recipe *r, const json_t *j, const char *what) {
    lp_recipe_default(r);
    if (!json_is_object(j)) return lp_error(LP_EFORMAT, "%s: the recipe is not a JSON object", what);
    for (int i = 0; i < N_FIELDS; i++) {
        const field *f = &FIELDS[i];
        const json_t *v = lookup(j, f->key);
        if (!v) continue;
        bool whole = f->type != F_DOUBLE && f->type != F_FLOAT;
        if (!json_is_number(v) || (whole && !json_is_integer(v)))
            return lp_error(LP_EFORMAT, "%s: recipe key %s has the wrong type (%s)", what, f->key,
                            whole ? "a whole number" : "a number");
        char where[160];
        snprintf(where, sizeof where, "%s: recipe key %s", what, f->key);
        /* A 64-bit integer as a double rounds, but only past 2^53, far beyond every bound but the seeds'. */
        if (f->type == F_U64 && json_integer_value(v) >= 0) {
            *(uint64_t *)((char *)r + f->offset) = (uint64_t)json_integer_value(v);
            continue;
        }
        int rc = set_field(r, f, json_number_value(v), where);
        if (rc) return rc;
    }
    const json_t *ao = lookup(j, "model.attn_only");
    if (ao) {
        if (!json_is_boolean(ao))
            return lp_error(LP_EFORMAT, "%s: recipe key model.attn_only has the wrong type (true or false)", what);
        r->model.attn_only = json_is_true(ao);
    }
    const json_t *task = lookup(j, "task"), *from = lookup(j, "from");
    if (task) {
        const char *name = json_string_value(task);
        if (!name || lp_train_task_from_name(name, &r->task))
            return lp_error(LP_EFORMAT, "%s: recipe key task should be \"lm\", \"mlm\", \"ioi\", \"polarity\" or "
                                        "\"s2s\"", what);
    }
    if (from) {
        if (!json_is_string(from) || json_string_length(from) >= sizeof r->from)
            return lp_error(LP_EFORMAT, "%s: recipe key from should be a directory's path", what);
        snprintf(r->from, sizeof r->from, "%s", json_string_value(from));
    }
    int rc = lp_recipe_check(r);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lp_errmsg());
        return lp_error(rc, "%s: %s", what, msg);
    }
    return LP_OK;
}

int lp_recipe_check(const lp_recipe *r) {
    for (int i = 0; i < N_FIELDS; i++) {
        double v = field_value(r, &FIELDS[i]);
        if (!(v >= FIELDS[i].lo && v <= FIELDS[i].hi)) return out_of_range(&FIELDS[i], FIELDS[i].key, v);
    }
    const lp_config *m = &r->model;
    if (r->task != LP_TASK_S2S && r->vocab < 258)
        return lp_error(LP_EINVAL, "vocab %d: use 258..65536 (the bytes, and room to merge)", r->vocab);
    if (r->s2s.min_digits > r->s2s.max_digits)
        return lp_error(LP_EINVAL, "digits %d..%d: the least cannot pass the most", r->s2s.min_digits,
                        r->s2s.max_digits);
    if (r->task == LP_TASK_S2S && r->train.T < r->s2s.max_digits + 2)
        return lp_error(LP_EINVAL, "sequences of %d tokens: a source of %d digits takes %d (the rule and </s>)",
                        r->train.T, r->s2s.max_digits, r->s2s.max_digits + 2);
    if (r->task != LP_TASK_LM && m->attn_only)
        return lp_error(LP_EINVAL, "--attn-only: a BERT has MLPs (attention-only models are GPT-2s)");
    if (m->d_model % m->n_head)
        return lp_error(LP_EINVAL, "model shape: d_model %d is not a multiple of heads %d", m->d_model, m->n_head);
    if (r->train.T > m->n_ctx)
        return lp_error(LP_EINVAL, "batch %d x %d: use sequences of 1..%d (the context) tokens", r->train.B, r->train.T,
                        m->n_ctx);
    if (r->corpus.span_min > r->corpus.span_max)
        return lp_error(LP_EINVAL, "spans of %d..%d words: the least cannot pass the most", r->corpus.span_min,
                        r->corpus.span_max);
    const double *p = r->corpus.proportion;
    if (!(p[0] + p[1] + p[2] > 0)) return lp_error(LP_EINVAL, "corpus proportions add up to 0: give one a share");
    if (r->corpus.n_bytes == 0 && r->corpus.n_docs == 0)
        return lp_error(LP_EINVAL, "the corpus needs a size (bytes or documents)");
    return LP_OK;
}

/* Appends the tokens of text[0..len) and <|endoftext|> to *ids (cap grows). */
/* Room for `more` ids after the *n in *ids (capacity *cap), doubling as it grows. */
static int reserve(int **ids, size_t n, size_t *cap, size_t more) {
    if (*cap - n >= more) return LP_OK;
    size_t want = (*cap + more) * 2;
    int *grown = realloc(*ids, want * sizeof *grown);
    if (!grown) return lp_error(LP_ENOMEM, "out of memory encoding the corpus");
    *ids = grown;
    *cap = want;
    return LP_OK;
}

static int encode_doc(const lp_tokenizer *t, const char *text, size_t len, int eot, int **ids, size_t *n, size_t *cap) {
    /* A byte-level BPE never makes more tokens than bytes. */
    if (reserve(ids, *n, cap, len + 2)) return LP_ENOMEM;
    int got = 0;
    int rc = len ? lp_tokenizer_encode(t, text, len, false, *ids + *n, (int)(*cap - *n), &got) : LP_OK;
    if (rc) return rc;
    *n += (size_t)got;
    (*ids)[(*n)++] = eot;
    return LP_OK;
}

/* N random ids (never <|endoftext|>), the same N again, then <|endoftext|>; N in 8..48. */
static int random_repeat(lp_rng *rng, int V, int eot, int **ids, size_t *n, size_t *cap) {
    enum { MIN_N = 8, MAX_N = 48 };
    if (reserve(ids, *n, cap, 2 * MAX_N + 1)) return LP_ENOMEM;
    int N = MIN_N + (int)(lp_rng_uniform(rng) * (MAX_N - MIN_N + 1));
    if (N > MAX_N) N = MAX_N;
    int *at = *ids + *n;
    for (int k = 0; k < N; k++) {
        int id = (int)(lp_rng_uniform(rng) * (V - 1));
        at[k] = id >= eot ? id + 1 : id; /* skip the separator */
    }
    memcpy(at + N, at, (size_t)N * sizeof *at);
    at[2 * N] = eot;
    *n += 2 * (size_t)N + 1;
    return LP_OK;
}

/* The token ids of the story's fixed words: each name, " and", " to" (each text's ids, at most
 * MAX_PIECE of them; a name the tokenizer splits keeps all its pieces). */
enum { MAX_PIECE = 4 };
typedef struct {
    int n_names;
    int name[128][MAX_PIECE + 1]; /* [0]: how many ids follow */
    int bare[128][MAX_PIECE + 1]; /* the name without its space, as a document's first word */
    int and_[MAX_PIECE + 1], to[MAX_PIECE + 1];
    bool fixed[65536]; /* ids the random words never draw: these, and <|endoftext|> */
} ioi_words;

static int piece(const lp_tokenizer *t, const char *text, int *out, bool *fixed) {
    int got = 0;
    if (lp_tokenizer_encode(t, text, strlen(text), false, out + 1, MAX_PIECE, &got) || got < 1)
        return lp_error(LP_EINVAL, "--random-ioi: \"%s\" takes more than %d tokens of this vocabulary: use a larger "
                                   "--vocab", text + (text[0] == ' '), MAX_PIECE);
    out[0] = got;
    for (int i = 1; i <= got; i++) fixed[out[i]] = true;
    return LP_OK;
}

static int ioi_words_init(ioi_words *w, const lp_tokenizer *t, int eot) {
    int n;
    const char *const *names = lp_corpus_names(&n);
    if (n > 128) n = 128;
    w->n_names = n;
    w->fixed[eot] = true;
    int rc = piece(t, " and", w->and_, w->fixed);
    if (!rc) rc = piece(t, " to", w->to, w->fixed);
    for (int i = 0; i < n && !rc; i++) {
        char text[64];
        snprintf(text, sizeof text, " %s", names[i]);
        rc = piece(t, text, w->name[i], w->fixed);
        /* a bare spelling too long for the vocabulary: that name opens no story */
        if (!rc && piece(t, text + 1, w->bare[i], w->fixed)) {
            lp_error_clear();
            w->bare[i][0] = 0;
        }
    }
    return rc;
}

static int draw(lp_rng *rng, int n) {
    int i = (int)(lp_rng_uniform(rng) * n);
    return i < n ? i : n - 1;
}

static void put_ids(int *ids, size_t *n, const int *p) {
    memcpy(ids + *n, p + 1, (size_t)p[0] * sizeof *ids);
    *n += (size_t)p[0];
}

/* lo..hi random ids, none of w's fixed ones. */
static void random_ids(lp_rng *rng, const ioi_words *w, int V, int lo, int hi, int *ids, size_t *n) {
    for (int k = lo + draw(rng, hi - lo + 1); k > 0; k--) {
        int id;
        do id = draw(rng, V);
        while (w->fixed[id]);
        ids[(*n)++] = id;
    }
}

/* An indirect-object story of random ids: "A and B" (either order) after 1..6 ids, or, half
 * the time, opening the document with A without its space ("Mary", another token than
 * " Mary", as a story that starts a document has it); 1..16 ids, the subject, 1..8 ids, " to",
 * the other name, <|endoftext|>. */
static int random_ioi(lp_rng *rng, const ioi_words *w, int V, int eot, int **ids, size_t *n, size_t *cap) {
    if (reserve(ids, *n, cap, 6 + 16 + 8 + 5 * MAX_PIECE + 2)) return LP_ENOMEM;
    int io = draw(rng, w->n_names), s = draw(rng, w->n_names - 1);
    if (s >= io) s++;
    bool abba = lp_rng_uniform(rng) < 0.5, first = lp_rng_uniform(rng) < 0.5 && w->bare[abba ? io : s][0] > 0;
    if (!first) random_ids(rng, w, V, 1, 6, *ids, n);
    put_ids(*ids, n, (first ? w->bare : w->name)[abba ? io : s]);
    put_ids(*ids, n, w->and_);
    put_ids(*ids, n, w->name[abba ? s : io]);
    random_ids(rng, w, V, 1, 16, *ids, n);
    put_ids(*ids, n, w->name[s]);
    random_ids(rng, w, V, 1, 8, *ids, n);
    put_ids(*ids, n, w->to);
    put_ids(*ids, n, w->name[io]);
    (*ids)[(*n)++] = eot;
    return LP_OK;
}

int lp_recipe_data(const lp_recipe *r, const lp_tokenizer *t, int **train, size_t *n_train, int **held,
                   size_t *n_held) {
    *train = *held = NULL;
    *n_train = *n_held = 0;
    int eot = lp_tokenizer_piece_to_id(t, LP_CORPUS_EOT);
    if (eot < 0) return lp_error(LP_EINVAL, "the tokenizer has no %s token to separate documents", LP_CORPUS_EOT);
    char *text;
    size_t len, n_docs;
    lp_corpus_doc *docs;
    int rc = lp_corpus_new(&r->corpus, &text, &len, &docs, &n_docs);
    if (rc) return rc;
    size_t first_held = n_docs - (size_t)ceil(r->heldout * (double)n_docs), cap[2] = {0, 0};
    if (first_held == 0 || first_held >= n_docs) {
        rc = lp_error(LP_EINVAL, "the corpus has %zu documents: too few to hold out %g of them", n_docs, r->heldout);
    }
    lp_rng rng;
    lp_rng_seed(&rng, r->corpus.seed ^ 0x7a2d0c5e11ull);
    int V = lp_tokenizer_vocab_size(t);
    /* a stream of its own, drawn only when asked: a recipe without them gives the data it gave before */
    lp_rng ioi_rng;
    lp_rng_seed(&ioi_rng, r->corpus.seed ^ 0x10117a2dull);
    ioi_words *w = NULL;
    if (!rc && r->random_ioi > 0) {
        if (!(w = calloc(1, sizeof *w))) rc = lp_error(LP_ENOMEM, "out of memory");
        else if (V > 65536) rc = lp_error(LP_EINVAL, "random IOI stories: a vocabulary of %d is over 65536", V);
        else rc = ioi_words_init(w, t, eot);
    }
    for (size_t i = 0; i < n_docs && !rc; i++) {
        bool h = i >= first_held;
        if (r->random_tokens > 0 && lp_rng_uniform(&rng) < r->random_tokens)
            rc = random_repeat(&rng, V, eot, h ? held : train, h ? n_held : n_train, &cap[h]);
        if (!rc && w && lp_rng_uniform(&ioi_rng) < r->random_ioi)
            rc = random_ioi(&ioi_rng, w, V, eot, h ? held : train, h ? n_held : n_train, &cap[h]);
        if (!rc)
            rc = encode_doc(t, text + docs[i].off, docs[i].len, eot, h ? held : train, h ? n_held : n_train, &cap[h]);
    }
    free(w);
    free(text);
    free(docs);
    if (rc) {
        free(*train);
        free(*held);
        *train = *held = NULL;
        *n_train = *n_held = 0;
    }
    return rc;
}
