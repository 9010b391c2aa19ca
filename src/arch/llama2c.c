/* llama2.c checkpoints (Karpathy's run.c format), mmapped and used in place.
 *
 * Legacy (v0): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len; vocab_size < 0 means an unshared classifier), then float32 tensors:
 * token_embedding (vocab, dim), rms_att (L, dim), wq (L, dim, dim), wk (L, kv_dim, dim),
 * wv (L, kv_dim, dim), wo (L, dim, dim), rms_ffn (L, dim), w1 (L, hidden, dim),
 * w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final (dim), two RoPE tables of
 * seq_len * head_size / 2 floats (unused), then wcls (vocab, dim) if unshared.
 * Version 1: 256-byte header: uint32 magic "ak42" (0x616b3432), int32 version = 1, the
 * same 7 int32, uint8 shared_classifier, zero padding; then rms_att, rms_ffn, rms_final,
 * token_embedding, wq, wk, wv, wo, w1, w2, w3, and wcls if not shared.
 * Rotary embeddings use interleaved pairs; norms are RMSNorm with eps 1e-5. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "arch/model_impl.h"

#define LLAMA2C_MAGIC 0x616b3432u

typedef struct {
    const float *p;  /* next tensor */
    size_t left;     /* floats left in the file */
    const char *path;
} cursor;

static int take(cursor *c, size_t n, const char *what, const float **out) {
    if (n > c->left)
        return lp_error(LP_EFORMAT, "%s: file ends inside %s (needs %zu more floats, %zu left); truncated checkpoint?",
                        c->path, what, n, c->left);
    long bad = lp_first_nonfinite(c->p, n);
    if (bad >= 0)
        return lp_error(LP_EFORMAT, "%s: %s holds %g at index %ld; weights must be finite (a corrupt checkpoint?)",
                        c->path, what, (double)c->p[bad], bad);
    *out = c->p;
    c->p += n;
    c->left -= n;
    return LP_OK;
}

int lp_load_llama2c(lp_model *m, const char *path) {
    int rc = lp_file_map(&m->file, path);
    if (rc) return rc;
    return lp_llama2c_parse(m, m->file.data, m->file.size, path);
}

int lp_llama2c_parse(lp_model *m, const unsigned char *data, size_t size, const char *path) {
    int rc;
    int32_t h[7];
    uint32_t magic = 0;
    int version = 0, shared = 0;
    size_t header;
    if (size >= 4) memcpy(&magic, data, 4);
    if (magic == LLAMA2C_MAGIC) {
        int32_t v;
        if (size < 256) return lp_error(LP_EFORMAT, "%s: truncated llama2.c v1 header (%zu of 256 bytes)", path, size);
        memcpy(&v, data + 4, 4);
        if (v != 1)
            return lp_error(LP_EUNSUPPORTED, "%s: llama2.c format version %d; loupe reads the float32 versions 0 and 1",
                            path, v);
        memcpy(h, data + 8, sizeof h);
        shared = data[36];
        version = 1;
        header = 256;
    } else {
        if (size < sizeof h)
            return lp_error(LP_EFORMAT, "%s: too short for a llama2.c header (%zu bytes); not a checkpoint?", path, size);
        memcpy(h, data, sizeof h);
        shared = h[5] > 0;
        header = sizeof h;
    }
    /* The header's sizes go through the same checks as config.json's; the sign of vocab_size
     * flags the classifier, so its magnitude is taken in 64 bits (-INT_MIN overflows an int). */
    int dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len, kv_dim;
    if ((rc = lp_cfg_range(h[0], "dim", 1, LP_MAX_D_MODEL, &dim, path)) ||
        (rc = lp_cfg_range(h[1], "hidden_dim", 1, LP_MAX_D_MLP, &hidden, path)) ||
        (rc = lp_cfg_range(h[2], "n_layers", 1, LP_MAX_LAYERS, &n_layers, path)) ||
        (rc = lp_cfg_range(h[3], "n_heads", 1, dim < LP_MAX_HEADS ? dim : LP_MAX_HEADS, &n_heads, path)) ||
        (rc = lp_cfg_range(h[4], "n_kv_heads", 1, n_heads, &n_kv, path)) ||
        (rc = lp_cfg_range(version == 0 && h[5] < 0 ? -(long long)h[5] : h[5], "vocab_size", 1, LP_MAX_VOCAB, &vocab,
                           path)) ||
        (rc = lp_cfg_range(h[6], "seq_len", 1, LP_MAX_CTX, &seq_len, path)))
    {
        char why[512];
        snprintf(why, sizeof why, "%s", lp_errmsg());
        return lp_error(rc, "%s; not a valid llama2.c checkpoint header", why);
    }
    if (dim % n_heads || n_heads % n_kv || (dim / n_heads) % 2)
        return lp_error(LP_EFORMAT, "%s: header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, "
                        "seq_len %d) is not a valid llama2.c checkpoint", path, dim, hidden, n_layers, n_heads,
                        n_kv, vocab, seq_len);
    if ((rc = lp_cfg_mul(n_kv, dim / n_heads, "kv_dim", &kv_dim, path))) return rc;

    lp_config *c = &m->cfg;
    snprintf(c->arch, sizeof c->arch, "llama2.c");
    snprintf(c->family, sizeof c->family, "llama");
    snprintf(m->dtype, sizeof m->dtype, "F32");
    c->n_layer = n_layers;
    c->n_head = n_heads;
    c->n_kv_head = n_kv;
    c->d_model = dim;
    c->d_head = dim / n_heads;
    c->d_mlp = hidden;
    c->vocab = vocab;
    c->n_ctx = seq_len;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->norm = LP_NORM_RMSNORM;
    c->pos = LP_POS_ROPE_INTERLEAVED;
    c->mlp = LP_MLP_SWIGLU;
    c->causal = true;
    c->head = LP_HEAD_LM;
    c->tied_unembed = shared != 0;

    if ((uintptr_t)(data + header) % _Alignof(float))
        return lp_error(LP_EFORMAT, "%s: weights are not 4-byte aligned in memory", path);
    size_t L = (size_t)n_layers, d = (size_t)dim, hd = (size_t)hidden, kvd = (size_t)n_kv * c->d_head;
    size_t V = (size_t)vocab, hs = (size_t)c->d_head;
    cursor cur = {(const float *)(data + header), (size - header) / sizeof(float), path};
    const float *rms_att = NULL, *rms_ffn = NULL, *wq = NULL, *wk = NULL, *wv = NULL, *wo = NULL, *w1 = NULL,
                *w2 = NULL, *w3 = NULL, *skip = NULL;
    if (version == 0) {
        if ((rc = take(&cur, V * d, "token_embedding", &m->tok_emb)) || (rc = take(&cur, L * d, "rms_att", &rms_att)) ||
            (rc = take(&cur, L * d * d, "wq", &wq)) || (rc = take(&cur, L * kvd * d, "wk", &wk)) ||
            (rc = take(&cur, L * kvd * d, "wv", &wv)) || (rc = take(&cur, L * d * d, "wo", &wo)) ||
            (rc = take(&cur, L * d, "rms_ffn", &rms_ffn)) || (rc = take(&cur, L * hd * d, "w1", &w1)) ||
            (rc = take(&cur, L * d * hd, "w2", &w2)) || (rc = take(&cur, L * hd * d, "w3", &w3)) ||
            (rc = take(&cur, d, "rms_final", &m->lnf_w)) ||
            (rc = take(&cur, (size_t)seq_len * hs, "the RoPE tables", &skip)))
            return rc;
    } else {
        if ((rc = take(&cur, L * d, "rms_att", &rms_att)) || (rc = take(&cur, L * d, "rms_ffn", &rms_ffn)) ||
            (rc = take(&cur, d, "rms_final", &m->lnf_w)) || (rc = take(&cur, V * d, "token_embedding", &m->tok_emb)) ||
            (rc = take(&cur, L * d * d, "wq", &wq)) || (rc = take(&cur, L * kvd * d, "wk", &wk)) ||
            (rc = take(&cur, L * kvd * d, "wv", &wv)) || (rc = take(&cur, L * d * d, "wo", &wo)) ||
            (rc = take(&cur, L * hd * d, "w1", &w1)) || (rc = take(&cur, L * d * hd, "w2", &w2)) ||
            (rc = take(&cur, L * hd * d, "w3", &w3)))
            return rc;
    }
    const float *wcls = m->tok_emb;
    if (!shared && (rc = take(&cur, V * d, "wcls (the unshared classifier)", &wcls))) return rc;

    m->layers = calloc(L, sizeof *m->layers);
    if (!m->layers) return lp_error(LP_ENOMEM, "out of memory");
    for (size_t l = 0; l < L; l++) {
        lp_layer *y = &m->layers[l];
        y->ln1_w = rms_att + l * d;
        y->ln2_w = rms_ffn + l * d;
        y->q = lp_linear_of(wq + l * d * d, NULL, dim, dim, dim, true);
        y->k = lp_linear_of(wk + l * kvd * d, NULL, dim, kv_dim, dim, true);
        y->v = lp_linear_of(wv + l * kvd * d, NULL, dim, kv_dim, dim, true);
        y->o = lp_linear_of(wo + l * d * d, NULL, dim, dim, dim, true);
        y->gate = lp_linear_of(w1 + l * hd * d, NULL, dim, hidden, dim, true);
        y->down = lp_linear_of(w2 + l * d * hd, NULL, hidden, dim, hidden, true);
        y->up = lp_linear_of(w3 + l * hd * d, NULL, dim, hidden, dim, true);
    }
    m->unembed = lp_linear_of(wcls, NULL, dim, vocab, dim, true);
    return LP_OK;
}
