/* Training recipes: the default one, JSON in and out, and the data a recipe makes. */
#include "loupe/recipe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/generate.h"

void lp_recipe_default(lp_recipe *r) {
    *r = (lp_recipe){0};
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

json_t *lp_recipe_to_json(const lp_recipe *r) {
    const lp_corpus_spec *c = &r->corpus;
    const lp_config *m = &r->model;
    const lp_train_options *o = &r->train;
    return json_pack(
        "{s:{s:I,s:{s:f,s:f,s:f},s:I,s:I,s:i,s:i,s:f,s:f},s:i,s:f,"
        "s:{s:i,s:i,s:i,s:i,s:i,s:b,s:I,s:f},"
        "s:{s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:I,s:i}}",
        "corpus", "seed", (json_int_t)c->seed, "proportion", "ioi", c->proportion[LP_CORPUS_IOI], "repeat",
        c->proportion[LP_CORPUS_REPEAT], "filler", c->proportion[LP_CORPUS_FILLER], "n_docs", (json_int_t)c->n_docs,
        "n_bytes", (json_int_t)c->n_bytes, "span_min", c->span_min, "span_max", c->span_max, "letter_words",
        c->letter_words, "random_tokens", r->random_tokens, "vocab", r->vocab, "heldout", r->heldout,
        "model", "n_layer", m->n_layer, "n_head", m->n_head, "d_model", m->d_model, "d_mlp", m->d_mlp, "n_ctx",
        m->n_ctx, "attn_only", m->attn_only, "init_seed", (json_int_t)r->init_seed, "embed_std", (double)r->embed_std,
        "train", "batch", o->B, "seq", o->T, "steps", o->steps, "warmup", o->warmup, "lr", (double)o->lr, "min_lr",
        (double)o->min_lr, "beta1", (double)o->beta1, "beta2", (double)o->beta2, "eps", (double)o->eps,
        "weight_decay", (double)o->weight_decay, "grad_clip", (double)o->grad_clip, "eval_every", o->eval_every,
        "eval_batches", o->eval_batches, "seed", (json_int_t)o->seed, "threads", o->threads);
}

/* One key of an object: missing leaves *out; the wrong type is an error. */
typedef enum { K_INT, K_U64, K_SIZE, K_DOUBLE, K_FLOAT, K_BOOL } kind;

static int get(const json_t *obj, const char *key, kind k, void *out, const char *what, const char *where) {
    json_t *v = json_object_get(obj, key);
    if (!v) return LP_OK;
    if (k == K_BOOL) {
        if (!json_is_boolean(v)) goto bad;
        *(bool *)out = json_is_true(v);
        return LP_OK;
    }
    if (!json_is_number(v)) goto bad;
    double x = json_number_value(v);
    if ((k == K_INT || k == K_U64 || k == K_SIZE) && (!json_is_integer(v) || x < (k == K_INT ? -2147483648.0 : 0.0) ||
                                                      (k == K_INT && x > 2147483647.0)))
        goto bad;
    switch (k) {
    case K_INT: *(int *)out = (int)json_integer_value(v); break;
    case K_U64: *(uint64_t *)out = (uint64_t)json_integer_value(v); break;
    case K_SIZE: *(size_t *)out = (size_t)json_integer_value(v); break;
    case K_DOUBLE: *(double *)out = x; break;
    case K_FLOAT: *(float *)out = (float)x; break;
    case K_BOOL: break;
    }
    return LP_OK;
bad:
    return lp_error(LP_EFORMAT, "%s: recipe key %s.%s has the wrong type or range", what, where, key);
}

int lp_recipe_from_json(lp_recipe *r, const json_t *j, const char *what) {
    lp_recipe_default(r);
    if (!json_is_object(j)) return lp_error(LP_EFORMAT, "%s: the recipe is not a JSON object", what);
    const json_t *c = json_object_get(j, "corpus"), *m = json_object_get(j, "model"), *o = json_object_get(j, "train");
    const json_t *p = c ? json_object_get(c, "proportion") : NULL;
    int rc = LP_OK;
#define GET(obj, key, k, field, where) \
    if (!rc && (obj)) rc = get((obj), (key), (k), &(field), what, (where))
    GET(c, "seed", K_U64, r->corpus.seed, "corpus");
    GET(p, "ioi", K_DOUBLE, r->corpus.proportion[LP_CORPUS_IOI], "corpus.proportion");
    GET(p, "repeat", K_DOUBLE, r->corpus.proportion[LP_CORPUS_REPEAT], "corpus.proportion");
    GET(p, "filler", K_DOUBLE, r->corpus.proportion[LP_CORPUS_FILLER], "corpus.proportion");
    GET(c, "n_docs", K_SIZE, r->corpus.n_docs, "corpus");
    GET(c, "n_bytes", K_SIZE, r->corpus.n_bytes, "corpus");
    GET(c, "span_min", K_INT, r->corpus.span_min, "corpus");
    GET(c, "span_max", K_INT, r->corpus.span_max, "corpus");
    GET(c, "letter_words", K_DOUBLE, r->corpus.letter_words, "corpus");
    GET(c, "random_tokens", K_DOUBLE, r->random_tokens, "corpus");
    GET(j, "vocab", K_INT, r->vocab, "recipe");
    GET(j, "heldout", K_DOUBLE, r->heldout, "recipe");
    GET(m, "n_layer", K_INT, r->model.n_layer, "model");
    GET(m, "n_head", K_INT, r->model.n_head, "model");
    GET(m, "d_model", K_INT, r->model.d_model, "model");
    GET(m, "d_mlp", K_INT, r->model.d_mlp, "model");
    GET(m, "n_ctx", K_INT, r->model.n_ctx, "model");
    GET(m, "attn_only", K_BOOL, r->model.attn_only, "model");
    GET(m, "init_seed", K_U64, r->init_seed, "model");
    GET(m, "embed_std", K_FLOAT, r->embed_std, "model");
    GET(o, "batch", K_INT, r->train.B, "train");
    GET(o, "seq", K_INT, r->train.T, "train");
    GET(o, "steps", K_INT, r->train.steps, "train");
    GET(o, "warmup", K_INT, r->train.warmup, "train");
    GET(o, "lr", K_FLOAT, r->train.lr, "train");
    GET(o, "min_lr", K_FLOAT, r->train.min_lr, "train");
    GET(o, "beta1", K_FLOAT, r->train.beta1, "train");
    GET(o, "beta2", K_FLOAT, r->train.beta2, "train");
    GET(o, "eps", K_FLOAT, r->train.eps, "train");
    GET(o, "weight_decay", K_FLOAT, r->train.weight_decay, "train");
    GET(o, "grad_clip", K_FLOAT, r->train.grad_clip, "train");
    GET(o, "eval_every", K_INT, r->train.eval_every, "train");
    GET(o, "eval_batches", K_INT, r->train.eval_batches, "train");
    GET(o, "seed", K_U64, r->train.seed, "train");
    GET(o, "threads", K_INT, r->train.threads, "train");
#undef GET
    if (!rc) rc = lp_recipe_check(r);
    return rc;
}

int lp_recipe_check(const lp_recipe *r) {
    const lp_config *m = &r->model;
    if (!(r->embed_std > 0.0f && r->embed_std <= 100.0f))
        return lp_error(LP_EINVAL, "embed_std %g: use a standard deviation in (0, 100]", (double)r->embed_std);
    if (r->vocab < 258 || r->vocab > 65536) return lp_error(LP_EINVAL, "vocab %d: use 258..65536", r->vocab);
    if (!(r->random_tokens >= 0.0 && r->random_tokens <= 1.0))
        return lp_error(LP_EINVAL, "random_tokens %g: use a share in 0..1", r->random_tokens);
    if (!(r->heldout > 0.0 && r->heldout < 0.5)) return lp_error(LP_EINVAL, "heldout %g: use a share in (0, 0.5)", r->heldout);
    if (m->n_layer < 1 || m->n_layer > 64 || m->n_head < 1 || m->d_model < 1 || m->d_model > 8192 ||
        m->d_model % m->n_head || m->n_ctx < 2 || m->n_ctx > 8192 || (!m->attn_only && (m->d_mlp < 1 || m->d_mlp > 65536)))
        return lp_error(LP_EINVAL, "model shape out of range: layers 1..64, d_model 1..8192 a multiple of heads, "
                                   "context 2..8192, d_mlp 1..65536");
    if (r->train.T > m->n_ctx || r->train.T < 1 || r->train.B < 1 || r->train.B > 4096)
        return lp_error(LP_EINVAL, "batch %d x %d: use 1..4096 sequences of 1..%d (the context) tokens", r->train.B,
                        r->train.T, m->n_ctx);
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
    for (size_t i = 0; i < n_docs && !rc; i++) {
        bool h = i >= first_held;
        if (r->random_tokens > 0 && lp_rng_uniform(&rng) < r->random_tokens)
            rc = random_repeat(&rng, V, eot, h ? held : train, h ? n_held : n_train, &cap[h]);
        if (!rc)
            rc = encode_doc(t, text + docs[i].off, docs[i].len, eot, h ? held : train, h ? n_held : n_train, &cap[h]);
    }
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
