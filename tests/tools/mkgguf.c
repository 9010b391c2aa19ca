/* mkgguf: a GPT-2 checkpoint in Hugging Face layout (float32 safetensors, as mkmodel writes
 * it) as the Q8_0 GGUF llama.cpp's converter and llama-quantize would make of it, for
 * `make bench`'s GGUF load time (tests/fixtures/gguf_fixtures.py writes the small test files
 * the same way; this one is in C because the bench's checkpoint is 500 MB).
 *   mkgguf HF_DIR OUT.gguf
 * The layout: llama.cpp's tensor names; GPT-2's Conv1D weights transposed to (out, in) rows;
 * 2-D tensors in Q8_0 (ggml's reference quantiser: d = max|x| / 127 per block of 32, q =
 * round(x / d)), 1-D tensors in F32; the gpt2.* hyperparameters; and the tokenizer of
 * HF_DIR's vocab.json and merges.txt (or encoder.json and vocab.bpe) where it has one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "loupe/dtype.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/gguf.h"
#include "loupe/safetensors.h"

#define ALIGN 32
enum { V_U32 = 4, V_I32 = 5, V_F32 = 6, V_BOOL = 7, V_STRING = 8, V_ARRAY = 9, V_U64 = 10 };

static void *need(void *p) {
    if (!p) {
        fprintf(stderr, "error: mkgguf: out of memory\n");
        exit(1);
    }
    return p;
}

/* A growing byte buffer: the header (metadata and tensor infos) before the data. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *x, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = need(realloc(b->p, b->cap));
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}
static void put32(buf *b, uint32_t v) {
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(b, x, 4);
}
static void put64(buf *b, uint64_t v) {
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}
static void put_str(buf *b, const char *s, size_t len) {
    put64(b, len);
    put(b, s, len);
}
static void kv_head(buf *b, const char *key, uint32_t type) {
    put_str(b, key, strlen(key));
    put32(b, type);
}
static void kv_u64(buf *b, const char *key, uint64_t v) { kv_head(b, key, V_U64), put64(b, v); }
static void kv_u32(buf *b, const char *key, uint32_t v) { kv_head(b, key, V_U32), put32(b, v); }
static void kv_str(buf *b, const char *key, const char *s) { kv_head(b, key, V_STRING), put_str(b, s, strlen(s)); }

static void die(const char *what) {
    fprintf(stderr, "error: mkgguf: %s: %s\n", what, lp_errmsg());
    exit(1);
}

static void cannot_write(const char *path) {
    fprintf(stderr, "error: mkgguf: cannot write %s; check that its directory exists and has room\n", path);
    exit(1);
}

static int cfg_int(json_t *cfg, const char *key, int fallback) {
    json_t *v = json_object_get(cfg, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : fallback;
}

/* The tokenizer's keys (5 of them) from vocab.json + merges.txt, or none when the directory
 * has neither pair; returns how many keys it wrote. */
static int put_tokenizer(buf *b, const char *dir) {
    char vp[4096], mp[4096];
    snprintf(vp, sizeof vp, "%s/vocab.json", dir);
    snprintf(mp, sizeof mp, "%s/merges.txt", dir);
    if (!lp_file_exists(vp)) {
        snprintf(vp, sizeof vp, "%s/encoder.json", dir);
        snprintf(mp, sizeof mp, "%s/vocab.bpe", dir);
        if (!lp_file_exists(vp)) return 0;
    }
    json_error_t je;
    json_t *vocab = json_load_file(vp, 0, &je);
    if (!json_is_object(vocab)) {
        fprintf(stderr, "error: mkgguf: %s: not a JSON object of token ids (%s)\n", vp, je.text);
        exit(1);
    }
    size_t n = json_object_size(vocab);
    const char **tok = need(calloc(n ? n : 1, sizeof *tok));
    const char *key;
    json_t *id;
    int eos = -1;
    json_object_foreach(vocab, key, id) {
        json_int_t i = json_integer_value(id);
        if (!json_is_integer(id) || i < 0 || (size_t)i >= n || tok[i]) {
            fprintf(stderr, "error: mkgguf: %s: token ids must be 0..%zu, each once\n", vp, n - 1);
            exit(1);
        }
        tok[i] = key;
        if (!strcmp(key, "<|endoftext|>")) eos = (int)i;
    }
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_str(b, "tokenizer.ggml.pre", "gpt-2");
    kv_head(b, "tokenizer.ggml.tokens", V_ARRAY);
    put32(b, V_STRING);
    put64(b, n);
    for (size_t i = 0; i < n; i++) put_str(b, tok[i], strlen(tok[i]));
    kv_head(b, "tokenizer.ggml.token_type", V_ARRAY);
    put32(b, V_I32);
    put64(b, n);
    for (size_t i = 0; i < n; i++) put32(b, (int)i == eos ? 3 : 1); /* control, normal */
    char *text;
    size_t len;
    if (lp_file_read_new(mp, &text, &len)) die(mp);
    size_t n_merges = 0;
    buf merges = {0};
    for (char *line = text, *next; line < text + len; line = next) {
        next = memchr(line, '\n', (size_t)(text + len - line));
        next = next ? next + 1 : text + len;
        size_t l = (size_t)(next - line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) l--;
        if (l == 0 || (line == text && !strncmp(line, "#version", 8))) continue;
        put_str(&merges, line, l);
        n_merges++;
    }
    kv_head(b, "tokenizer.ggml.merges", V_ARRAY);
    put32(b, V_STRING);
    put64(b, n_merges);
    put(b, merges.p, merges.n);
    free(merges.p);
    free(text);
    free(tok);
    json_decref(vocab);
    if (eos < 0) return 5;
    kv_u32(b, "tokenizer.ggml.bos_token_id", (uint32_t)eos);
    kv_u32(b, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    return 7;
}

/* llama.cpp's name for Hugging Face GPT-2 tensor hf (its "transformer." dropped); NULL if none. */
static const char *gguf_name(const char *hf, char *out, size_t cap, int *conv1d) {
    static const char *const global[][2] = {{"wte.weight", "token_embd.weight"}, {"wpe.weight", "position_embd.weight"},
                                            {"ln_f.weight", "output_norm.weight"}, {"ln_f.bias", "output_norm.bias"},
                                            {"lm_head.weight", "output.weight"}};
    static const char *const layer[][2] = {
        {"ln_1.weight", "attn_norm.weight"},         {"ln_1.bias", "attn_norm.bias"},
        {"attn.c_attn.weight", "attn_qkv.weight"},   {"attn.c_attn.bias", "attn_qkv.bias"},
        {"attn.c_proj.weight", "attn_output.weight"}, {"attn.c_proj.bias", "attn_output.bias"},
        {"ln_2.weight", "ffn_norm.weight"},          {"ln_2.bias", "ffn_norm.bias"},
        {"mlp.c_fc.weight", "ffn_up.weight"},        {"mlp.c_fc.bias", "ffn_up.bias"},
        {"mlp.c_proj.weight", "ffn_down.weight"},    {"mlp.c_proj.bias", "ffn_down.bias"}};
    if (!strncmp(hf, "transformer.", 12)) hf += 12;
    *conv1d = 0;
    for (size_t i = 0; i < sizeof global / sizeof *global; i++)
        if (!strcmp(hf, global[i][0])) return snprintf(out, cap, "%s", global[i][1]), out;
    int l, at = 0;
    if (sscanf(hf, "h.%d.%n", &l, &at) != 1 || at == 0) return NULL;
    for (size_t i = 0; i < sizeof layer / sizeof *layer; i++)
        if (!strcmp(hf + at, layer[i][0])) {
            *conv1d = strstr(hf, "_attn.weight") || strstr(hf, "_proj.weight") || strstr(hf, "_fc.weight");
            return snprintf(out, cap, "blk.%d.%s", l, layer[i][1]), out;
        }
    return NULL;
}

/* ggml's reference Q8_0 of n values (n a multiple of 32) into 34-byte blocks. */
static void quantize_q8_0(unsigned char *out, const float *x, size_t n) {
    for (size_t b = 0; b < n / 32; b++, x += 32, out += 34) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = lp_f32_to_f16(d);
        out[0] = (unsigned char)h, out[1] = (unsigned char)(h >> 8);
        for (int i = 0; i < 32; i++) out[2 + i] = (unsigned char)(int8_t)roundf(x[i] * id);
    }
}

typedef struct {
    const lp_st_tensor *t;
    char name[64];
    int conv1d, q8;
    uint64_t ne[2], offset;
    size_t nbytes;
} out_tensor;

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mkgguf HF_DIR OUT.gguf   (a float32 GPT-2 checkpoint as a Q8_0 GGUF)\n");
        return 2;
    }
    const char *dir = argv[1], *out = argv[2];
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    const char *type = cfg ? json_string_value(json_object_get(cfg, "model_type")) : NULL;
    if (!type || strcmp(type, "gpt2")) {
        fprintf(stderr, "error: mkgguf: %s: not a GPT-2 config.json (mkgguf converts GPT-2 checkpoints)\n", path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    lp_safetensors *st;
    if (lp_st_open(&st, path)) die(path);
    int n = lp_st_count(st);
    out_tensor *ts = need(calloc(n ? (size_t)n : 1, sizeof *ts));
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        out_tensor *o = &ts[i];
        o->t = lp_st_at(st, i);
        if (!gguf_name(o->t->name, o->name, sizeof o->name, &o->conv1d)) {
            fprintf(stderr, "error: mkgguf: %s: tensor '%s' is not GPT-2's\n", path, o->t->name);
            exit(1);
        }
        if (o->t->dtype != LP_DT_F32 || o->t->ndim < 1 || o->t->ndim > 2) {
            fprintf(stderr, "error: mkgguf: %s: tensor '%s' is not a float32 vector or matrix; mkgguf reads what "
                    "mkmodel writes\n", path, o->t->name);
            exit(1);
        }
        /* ne lists the innermost dimension first: a (rows, cols) matrix is (cols, rows); Conv1D's
         * (in, out) is written as (out, in) rows, so its ne is (in, out) */
        int two = o->t->ndim == 2;
        o->ne[0] = (uint64_t)o->t->shape[two && !o->conv1d ? 1 : 0];
        o->ne[1] = two ? (uint64_t)o->t->shape[o->conv1d ? 1 : 0] : 1;
        o->q8 = two && o->ne[0] % 32 == 0;
        size_t elems = (size_t)(o->ne[0] * o->ne[1]);
        o->nbytes = o->q8 ? elems / 32 * 34 : elems * 4;
        o->offset = offset;
        offset += (o->nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    buf h = {0}, kv = {0};
    int n_kv = 0;
    kv_str(&kv, "general.architecture", "gpt2"), n_kv++;
    kv_str(&kv, "general.name", "loupe bench"), n_kv++;
    kv_u32(&kv, "general.file_type", 7), n_kv++; /* MOSTLY_Q8_0 */
    kv_u32(&kv, "general.quantization_version", 2), n_kv++;
    int d = cfg_int(cfg, "n_embd", 0);
    kv_u64(&kv, "gpt2.context_length", (uint64_t)cfg_int(cfg, "n_positions", 1024)), n_kv++;
    kv_u64(&kv, "gpt2.embedding_length", (uint64_t)d), n_kv++;
    kv_u64(&kv, "gpt2.block_count", (uint64_t)cfg_int(cfg, "n_layer", 0)), n_kv++;
    kv_u64(&kv, "gpt2.feed_forward_length", (uint64_t)cfg_int(cfg, "n_inner", 4 * d)), n_kv++;
    kv_u64(&kv, "gpt2.attention.head_count", (uint64_t)cfg_int(cfg, "n_head", 0)), n_kv++;
    json_t *eps = json_object_get(cfg, "layer_norm_epsilon");
    float e = json_is_number(eps) ? (float)json_number_value(eps) : 1e-5f;
    kv_head(&kv, "gpt2.attention.layer_norm_epsilon", V_F32), put(&kv, &e, 4), n_kv++; /* little-endian hosts */
    n_kv += put_tokenizer(&kv, dir);
    put(&h, "GGUF", 4);
    put32(&h, 3);
    put64(&h, (uint64_t)n);
    put64(&h, (uint64_t)n_kv);
    put(&h, kv.p, kv.n);
    for (int i = 0; i < n; i++) {
        const out_tensor *o = &ts[i];
        put_str(&h, o->name, strlen(o->name));
        put32(&h, o->t->ndim);
        for (int k = 0; k < o->t->ndim; k++) put64(&h, o->ne[k]);
        put32(&h, o->q8 ? LP_GGML_Q8_0 : LP_GGML_F32);
        put64(&h, o->offset);
    }
    static const unsigned char zeros[ALIGN];
    put(&h, zeros, (ALIGN - h.n % ALIGN) % ALIGN);
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(h.p, 1, h.n, f) != h.n) cannot_write(out);
    for (int i = 0; i < n; i++) {
        const out_tensor *o = &ts[i];
        size_t elems = (size_t)(o->ne[0] * o->ne[1]);
        float *x = need(malloc(elems * sizeof *x));
        unsigned char *q = need(malloc(o->nbytes));
        memcpy(x, o->t->data, elems * sizeof *x);
        if (o->conv1d) { /* the checkpoint's (in, out) rows as (out, in) */
            float *y = need(malloc(elems * sizeof *y));
            size_t in = (size_t)o->ne[0], outs = (size_t)o->ne[1];
            for (size_t r = 0; r < in; r++)
                for (size_t c = 0; c < outs; c++) y[c * in + r] = x[r * outs + c];
            free(x);
            x = y;
        }
        if (o->q8) quantize_q8_0(q, x, elems);
        else memcpy(q, x, o->nbytes);
        size_t pad = (ALIGN - o->nbytes % ALIGN) % ALIGN;
        if (fwrite(q, 1, o->nbytes, f) != o->nbytes || fwrite(zeros, 1, pad, f) != pad) cannot_write(out);
        free(x);
        free(q);
    }
    if (fclose(f)) cannot_write(out);
    free(h.p);
    free(kv.p);
    free(ts);
    lp_st_free(st);
    json_decref(cfg);
    return 0;
}
