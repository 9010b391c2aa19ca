/* Loading models: both llama2.c header versions, Hugging Face layouts, and every kind of
 * bad input giving an error code and a message that names the file, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <dirent.h>
#include <float.h>
#include <math.h>

#include "fuzz/config_model.h"
#include "helpers.h"
#include "arch/model_impl.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/generate.h"
#include "loupe/model.h"
#include "loupe/run.h"
#include "loupe/sanity.h"

static void write_bytes(const char *path, const void *data, size_t n) {
    assert_int_equal(lp_file_write(path, data, n), LP_OK);
}

/* Expects lp_model_load(path) to fail with code and a message containing `needle`. */
static void expect_load_error(const char *path, const char *tok, int code, const char *needle) {
    lp_model *m = (lp_model *)1;
    lp_load_options o = {tok};
    int rc = lp_model_load(&m, path, &o);
    if (rc != code) fail_msg("%s: expected code %d, got %d (%s)", path, code, rc, lp_errmsg());
    assert_null(m);
    if (!strstr(lp_errmsg(), needle)) fail_msg("message '%s' lacks '%s'", lp_errmsg(), needle);
}

static void missing_path_is_an_io_error_naming_it(void **state) {
    (void)state;
    expect_load_error("/nonexistent/model.bin", NULL, LP_EIO, "/nonexistent/model.bin");
    char *dir = make_temp_dir();
    expect_load_error(dir, NULL, LP_EIO, "no config.json");
    rm_tree(dir);
    expect_load_error("/dev/zero", NULL, LP_EIO, "/dev/zero: not a regular file"); /* said "no such file" */
}

static void truncated_llama2c_checkpoint_is_rejected(void **state) {
    (void)state;
    lp_mapping map;
    assert_int_equal(lp_file_map(&map, STORIES), LP_OK);
    char *dir = make_temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/cut.bin", dir);
    size_t cuts[] = {0, 3, 27, 28, 1000, map.size / 2, map.size - 4};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_bytes(path, map.data, cuts[i]);
        expect_load_error(path, STORIES_TOK, LP_EFORMAT, path);
    }
    /* A header of nonsense sizes. */
    int32_t bad[7] = {64, 172, 5, 7, 4, 512, 512}; /* 64 is not a multiple of 7 heads */
    write_bytes(path, bad, sizeof bad);
    expect_load_error(path, STORIES_TOK, LP_EFORMAT, "not a valid llama2.c checkpoint");
    int32_t huge[7] = {1 << 30, 1, 1, 1, 1, 1, 1};
    write_bytes(path, huge, sizeof huge);
    expect_load_error(path, STORIES_TOK, LP_EFORMAT, "not a valid");
    lp_file_unmap(&map);
    rm_tree(dir);
}

/* Rewrites stories260K in the v1 ("ak42") layout: same numbers, different order. */
static void llama2c_v1_header_gives_the_same_logits(void **state) {
    (void)state;
    lp_mapping map;
    assert_int_equal(lp_file_map(&map, STORIES), LP_OK);
    int32_t h[7];
    memcpy(h, map.data, sizeof h);
    size_t d = h[0], hd = h[1], L = h[2], nh = h[3], kv = h[4], V = (size_t)abs(h[5]), seq = h[6];
    size_t kvd = d / nh * kv;
    const float *p = (const float *)(map.data + 28);
    const float *emb = p, *rms_att = emb + V * d, *wq = rms_att + L * d, *wk = wq + L * d * d, *wv = wk + L * kvd * d,
                *wo = wv + L * kvd * d, *rms_ffn = wo + L * d * d, *w1 = rms_ffn + L * d, *w2 = w1 + L * hd * d,
                *w3 = w2 + L * d * hd, *rms_final = w3 + L * hd * d;
    (void)seq;
    size_t total = 256 + 4 * (2 * L * d + d + V * d + 2 * L * d * d + 2 * L * kvd * d + 3 * L * hd * d);
    unsigned char *out = calloc(1, total), *o = out;
    uint32_t magic = 0x616b3432;
    int32_t version = 1;
    memcpy(o, &magic, 4);
    memcpy(o + 4, &version, 4);
    memcpy(o + 8, h, sizeof h);
    o[36] = 1; /* shared classifier */
    o += 256;
#define PUT(src, n) (memcpy(o, (src), (n) * 4), o += (n) * 4)
    PUT(rms_att, L * d);
    PUT(rms_ffn, L * d);
    PUT(rms_final, d);
    PUT(emb, V * d);
    PUT(wq, L * d * d);
    PUT(wk, L * kvd * d);
    PUT(wv, L * kvd * d);
    PUT(wo, L * d * d);
    PUT(w1, L * hd * d);
    PUT(w2, L * d * hd);
    PUT(w3, L * hd * d);
#undef PUT
    assert_int_equal((size_t)(o - out), total);
    char *dir = make_temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/v1.bin", dir);
    write_bytes(path, out, total);
    free(out);
    lp_load_options opts = {STORIES_TOK};
    lp_model *a, *b;
    assert_int_equal(lp_model_load(&a, STORIES, &opts), LP_OK);
    if (lp_model_load(&b, path, &opts)) fail_msg("%s", lp_errmsg());
    int ids[] = {1, 403, 407, 261, 378};
    lp_run *ra, *rb;
    assert_int_equal(lp_run_new(&ra, a, ids, 5), LP_OK);
    assert_int_equal(lp_run_new(&rb, b, ids, 5), LP_OK);
    for (int t = 0; t < 5; t++) assert_memory_equal(lp_run_logits(ra, t), lp_run_logits(rb, t), 512 * sizeof(float));
    lp_run_free(ra);
    lp_run_free(rb);
    lp_model_free(a);
    lp_model_free(b);
    lp_file_unmap(&map);
    rm_tree(dir);
}

static void stories260k_finds_its_tokenizer_by_vocab_size(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_load(&m, STORIES, NULL), LP_OK); /* tok512.bin beside it */
    assert_non_null(lp_model_tokenizer(m));
    const lp_config *c = lp_model_config(m);
    assert_int_equal(c->n_layer, 5);
    assert_int_equal(c->n_kv_head, 4);
    assert_int_equal(c->pos, LP_POS_ROPE_INTERLEAVED);
    assert_true(c->tied_unembed);
    assert_int_equal(lp_model_param_count(m), 260032 - 0); /* header-derived count: weights only */
    lp_model_free(m);
}

/* Makes a random GPT-2 in dir/m and returns that path in buf. */
static void make_gpt2(const char *dir, char *buf, size_t cap, const char *extra) {
    snprintf(buf, cap, "%s/m", dir);
    char args[256];
    snprintf(args, sizeof args, "--arch gpt2 --seed 3 %s", extra);
    assert_int_equal(mkmodel(buf, args), 0);
}

static void edit_config(const char *mdir, const char *key, json_t *value) {
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", mdir);
    json_t *c = json_load_file(path, 0, NULL);
    assert_non_null(c);
    json_object_set_new(c, key, value);
    assert_int_equal(json_dump_file(c, path, 0), 0);
    json_decref(c);
}

static void safetensors_with_lying_header_is_rejected(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512], st[600];
    make_gpt2(dir, m, sizeof m, "");
    snprintf(st, sizeof st, "%s/model.safetensors", m);
    lp_mapping map;
    assert_int_equal(lp_file_map(&map, st), LP_OK);
    size_t size = map.size;
    unsigned char *copy = malloc(size);
    memcpy(copy, map.data, size);
    lp_file_unmap(&map);
    /* Truncated: offsets now point past the end. */
    write_bytes(st, copy, size - 100);
    expect_load_error(m, NULL, LP_EFORMAT, "model.safetensors");
    /* A header length past the end of the file. */
    uint64_t big = (uint64_t)size * 2;
    unsigned char *lie = malloc(size);
    memcpy(lie, copy, size);
    memcpy(lie, &big, 8);
    write_bytes(st, lie, size);
    expect_load_error(m, NULL, LP_EFORMAT, "model.safetensors");
    /* Too short to hold a header. */
    write_bytes(st, copy, 5);
    expect_load_error(m, NULL, LP_EFORMAT, "model.safetensors");
    free(lie);
    free(copy);
    rm_tree(dir);
}

static void config_disagreeing_with_tensors_is_rejected(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512];
    make_gpt2(dir, m, sizeof m, "");
    edit_config(m, "n_embd", json_integer(64));
    expect_load_error(m, NULL, LP_EFORMAT, "config.json implies");
    rm_tree(dir);

    dir = make_temp_dir();
    make_gpt2(dir, m, sizeof m, "");
    edit_config(m, "n_layer", json_integer(5)); /* tensors for layers 2..4 are missing */
    expect_load_error(m, NULL, LP_EFORMAT, "h.2.ln_1.weight");
    assert_null(strstr(lp_errmsg(), "(null)")); /* was "(null): tensor ... is missing" */
    assert_non_null(strstr(lp_errmsg(), "/model.safetensors: tensor 'h.2.ln_1.weight' is missing"));
    rm_tree(dir);

    dir = make_temp_dir();
    make_gpt2(dir, m, sizeof m, "");
    edit_config(m, "n_head", json_string("four"));
    expect_load_error(m, NULL, LP_EFORMAT, "n_head");
    rm_tree(dir);
}

static void unknown_architecture_is_unsupported(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512];
    make_gpt2(dir, m, sizeof m, "");
    edit_config(m, "architectures", json_pack("[s]", "BartForConditionalGeneration"));
    expect_load_error(m, NULL, LP_EUNSUPPORTED, "BartForConditionalGeneration");
    rm_tree(dir);
}

static void config_that_is_not_json_is_rejected(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512], cfg[600];
    make_gpt2(dir, m, sizeof m, "");
    snprintf(cfg, sizeof cfg, "%s/config.json", m);
    write_bytes(cfg, "{\"n_embd\": 32,", 14);
    expect_load_error(m, NULL, LP_EFORMAT, "config.json");
    rm_tree(dir);
}

static void tokenizer_larger_than_vocabulary_is_rejected(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512];
    make_gpt2(dir, m, sizeof m, "--gpt2-tokenizer " SHARED "/tokenizers/gpt2"); /* vocab 96 < 50257 */
    expect_load_error(m, NULL, LP_EFORMAT, "vocabulary");
    rm_tree(dir);
}

static void unsupported_dtype_is_named(void **state) {
    (void)state;
    /* A checkpoint whose wte is I32: right size, wrong type. */
    char *dir = make_temp_dir();
    char m[512], st[600];
    make_gpt2(dir, m, sizeof m, "");
    snprintf(st, sizeof st, "%s/model.safetensors", m);
    char *buf;
    size_t len;
    assert_int_equal(lp_file_read_new(st, &buf, &len), LP_OK);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    char *hdr = buf + 8, *wte = memmem(hdr, hl, "\"wte.weight\"", 12);
    assert_non_null(wte);
    char *f32 = memmem(wte, hl - (size_t)(wte - hdr), "\"F32\"", 5);
    memcpy(f32, "\"I32\"", 5);
    write_bytes(st, buf, len);
    free(buf);
    expect_load_error(m, NULL, LP_EUNSUPPORTED, "I32");
    rm_tree(dir);
}

static void sequence_longer_than_context_is_a_range_error(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512];
    make_gpt2(dir, m, sizeof m, "--ctx 8");
    lp_model *model;
    assert_int_equal(lp_model_load(&model, m, NULL), LP_OK);
    int ids[9] = {0};
    lp_run *r = (lp_run *)1;
    assert_int_equal(lp_run_new(&r, model, ids, 9), LP_ERANGE);
    assert_non_null(strstr(lp_errmsg(), "context"));
    ids[3] = 96;
    assert_int_equal(lp_run_new(&r, model, ids, 8), LP_EINVAL);
    assert_non_null(strstr(lp_errmsg(), "vocabulary"));
    lp_model_free(model);
    rm_tree(dir);
}

static void transformer_prefix_and_sharded_checkpoints_load(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    assert_int_equal(mkmodel(a, "--arch gpt2 --seed 9"), 0);
    assert_int_equal(mkmodel(b, "--arch gpt2 --seed 9 --prefix transformer. --shards 3"), 0);
    lp_model *ma, *mb;
    assert_int_equal(lp_model_load(&ma, a, NULL), LP_OK);
    if (lp_model_load(&mb, b, NULL)) fail_msg("%s", lp_errmsg());
    int ids[] = {4, 8, 15, 16, 23, 42};
    lp_run *ra, *rb;
    assert_int_equal(lp_run_new(&ra, ma, ids, 6), LP_OK);
    assert_int_equal(lp_run_new(&rb, mb, ids, 6), LP_OK);
    assert_memory_equal(lp_run_logits(ra, 5), lp_run_logits(rb, 5), 96 * sizeof(float));
    lp_run_free(ra);
    lp_run_free(rb);
    lp_model_free(ma);
    lp_model_free(mb);
    lp_model_free(NULL); /* NULL-safe */
    rm_tree(dir);
}

/* Makes a random model of mkmodel's --arch `arch` in dir/m. */
static void make_arch(const char *dir, char *buf, size_t cap, const char *arch) {
    snprintf(buf, cap, "%s/m", dir);
    char args[128];
    snprintf(args, sizeof args, "--arch %s --seed 5", arch);
    assert_int_equal(mkmodel(buf, args), 0);
}

/* Hostile config.json sizes: each is refused at load with a message naming the key, never
 * truncated to an int, wrapped in a product, or taken as "any shape" (these crashed in sgemm,
 * or were undefined behaviour under UBSan, before sizes were read through lp_cfg_int). */
static void config_sizes_out_of_range_are_refused(void **state) {
    (void)state;
    static const struct {
        const char *arch, *key, *json, *needle;
    } cases[] = {
        {"gpt2", "n_inner", "-4294867296", "\"n_inner\" is -4294867296"},   /* was (int) 100000: SIGSEGV */
        {"gpt2", "n_inner", "0", "\"n_inner\" is 0"},
        {"gpt2", "n_embd", "1073741824", "\"n_embd\" is 1073741824"},       /* 4 * n_embd overflowed */
        {"gpt2", "n_embd", "4.67e54", "\"n_embd\" is 4.67e+54"},           /* (long) of it was undefined */
        {"gpt2", "n_embd", "32.5", "\"n_embd\" is 32.5"},
        {"gpt2", "n_positions", "4294967312", "\"n_positions\" is 4294967312"}, /* 2^32 + 16 became 16 */
        {"gpt2", "n_layer", "-1", "\"n_layer\" is -1"},
        {"gpt2", "vocab_size", "null", "\"vocab_size\" is missing"},
        {"gpt2", "layer_norm_epsilon", "-1", "\"layer_norm_epsilon\" is -1"},
        {"gpt2", "layer_norm_epsilon", "0", "\"layer_norm_epsilon\" is 0"},
        {"gpt2", "layer_norm_epsilon", "1e300", "\"layer_norm_epsilon\" is 1e+300"},
        {"llama", "head_dim", "4611686018427387968", "\"head_dim\" is 4611686018427387968"}, /* 2^62 + 64 */
        {"llama", "head_dim", "0", "\"head_dim\" is 0"},                   /* said: heads do not divide */
        {"llama", "max_position_embeddings", "4294967312", "\"max_position_embeddings\" is 4294967312"},
        {"llama", "num_key_value_heads", "-2147483648", "\"num_key_value_heads\" is -2147483648"},
        {"llama", "num_key_value_heads", "5", "\"num_key_value_heads\" is 5"}, /* more than the 4 heads */
        {"llama", "hidden_size", "1e19", "\"hidden_size\" is 1e+19"},
        {"llama", "sliding_window", "-1", "\"sliding_window\" is -1"},
        {"llama", "rms_norm_eps", "-0.5", "\"rms_norm_eps\" is -0.5"},
        {"llama", "rope_theta", "0", "\"rope_theta\" is 0"},
        {"neox", "hidden_size", "33", "hidden_size 33 is not a multiple of num_attention_heads 4"},
        {"neox", "rotary_pct", "1.5", "\"rotary_pct\" should be a number from 0 to 1"},
        {"neox", "rotary_pct", "0.375", "the rotary width int(8 * 0.375) = 3 is odd"},
        {"neox", "partial_rotary_factor", "0.5", "partial_rotary_factor 0.5 and rotary_pct 0.25 disagree"},
        {"neox", "rope_theta", "500", "rope_theta 500 and rotary_emb_base 10000 disagree"},
        {"neox", "rotary_emb_base", "-1", "\"rotary_emb_base\" is -1"},
        {"neox", "use_parallel_residual", "\"yes\"", "\"use_parallel_residual\" should be true or false"},
        {"neox", "layer_norm_eps", "0", "\"layer_norm_eps\" is 0"},
        {"neox", "intermediate_size", "0", "\"intermediate_size\" is 0"},
        {"gemma2", "head_dim", "0", "\"head_dim\" is 0"},
        {"gemma2", "head_dim", "4294967328", "\"head_dim\" is 4294967328"},
        {"gemma2", "sliding_window", "0", "\"sliding_window\" is 0"},
        {"gemma2", "query_pre_attn_scalar", "-1", "\"query_pre_attn_scalar\" is -1"},
        {"gemma2", "attn_logit_softcapping", "0", "\"attn_logit_softcapping\" is 0"},
        {"gemma2", "final_logit_softcapping", "\"30\"", "\"final_logit_softcapping\" should be a number"},
        {"gemma2", "num_key_value_heads", "3", "4 attention heads do not divide into 3 key/value heads"},
        {"gemma2", "layer_types", "[\"sliding_attention\"]", "\"layer_types\" should be a list of 2 strings"},
        {"gemma2", "layer_types", "[\"sliding_attention\", \"local\"]", "layer_types[1] should be"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dir = make_temp_dir();
        char m[512];
        make_arch(dir, m, sizeof m, cases[i].arch);
        json_error_t e;
        json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, &e);
        assert_non_null(v);
        edit_config(m, cases[i].key, v);
        expect_load_error(m, NULL, LP_EFORMAT, cases[i].needle);
        assert_non_null(strstr(lp_errmsg(), "config.json"));
        rm_tree(dir);
    }
    /* without head_dim, d_model / n_head must not be 0 */
    char *dir = make_temp_dir();
    char m[512];
    make_arch(dir, m, sizeof m, "llama");
    edit_config(m, "head_dim", json_null());
    edit_config(m, "num_attention_heads", json_integer(64));
    expect_load_error(m, NULL, LP_EFORMAT, "hidden_size 32 is smaller than num_attention_heads 64; give head_dim");
    rm_tree(dir);
    /* Gemma 2: what loupe does not compute is refused, not approximated */
    static const struct {
        const char *key, *json, *needle;
    } gemma[] = {
        {"hidden_activation", "\"gelu\"", "hidden_activation must be gelu_pytorch_tanh"},
        {"use_bidirectional_attention", "true", "use_bidirectional_attention is not supported"},
        {"rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 2}", "rope scaling is not supported"},
    };
    for (size_t i = 0; i < sizeof gemma / sizeof *gemma; i++) {
        dir = make_temp_dir();
        make_arch(dir, m, sizeof m, "gemma2");
        edit_config(m, gemma[i].key, json_loads(gemma[i].json, JSON_DECODE_ANY, NULL));
        expect_load_error(m, NULL, LP_EUNSUPPORTED, gemma[i].needle);
        rm_tree(dir);
    }
    /* GPT-NeoX with no rotary dims (rope_dims 0 would read as the whole head) */
    dir = make_temp_dir();
    make_arch(dir, m, sizeof m, "neox");
    edit_config(m, "rotary_pct", json_real(0.1));
    expect_load_error(m, NULL, LP_EUNSUPPORTED, "the rotary width int(8 * 0.1) is 0");
    rm_tree(dir);
}

/* The same mechanism for llama2.c headers: vocab_size INT_MIN was negated as an int. */
static void llama2c_header_int_min_is_refused(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/h.bin", dir);
    int32_t h[7] = {64, 172, 5, 8, 4, INT32_MIN, 512};
    write_bytes(path, h, sizeof h);
    expect_load_error(path, STORIES_TOK, LP_EFORMAT, "\"vocab_size\" is 2147483648");
    int32_t h2[7] = {64, 172, 5, 8, INT32_MIN, 512, 512};
    write_bytes(path, h2, sizeof h2);
    expect_load_error(path, STORIES_TOK, LP_EFORMAT, "\"n_kv_heads\" is -2147483648");
    rm_tree(dir);
}

/* Overwrites element `at` (of `size` bytes) of tensor `name` in the safetensors file st. */
static void poke_tensor(const char *st, const char *name, size_t at, const void *value, size_t size) {
    char *buf;
    size_t len;
    assert_int_equal(lp_file_read_new(st, &buf, &len), LP_OK);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    json_t *hdr = json_loadb(buf + 8, hl, 0, NULL);
    assert_non_null(hdr);
    json_t *t = json_object_get(hdr, name);
    assert_non_null(t);
    size_t begin = (size_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
    memcpy(buf + 8 + hl + begin + at * size, value, size);
    json_decref(hdr);
    write_bytes(st, buf, len);
    free(buf);
}

/* A checkpoint's mapping asks for huge pages (VmFlags "hg" in /proc/self/smaps): read ahead
 * into 2 MB folios, the weights cost OpenBLAS's packing far fewer page walks. */
static void weights_are_mapped_with_huge_pages_requested(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512], st[600];
    make_gpt2(dir, m, sizeof m, "--vocab 16384 --d-model 64"); /* 4 MB of embeddings */
    snprintf(st, sizeof st, "%s/model.safetensors", m);
    lp_model *model;
    assert_int_equal(lp_model_load(&model, m, NULL), LP_OK);
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[1024];
    bool in_map = false, found = false, huge = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) /* a mapping's first line */
            in_map = strstr(line, st) != NULL, found |= in_map;
        else if (in_map && strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " hg")) huge = true;
    }
    fclose(f);
    lp_model_free(model);
    rm_tree(dir);
    assert_true(found);
    assert_true(huge);
}

/* GPT-2's (in, out) matrices get (out, in) copies in the background after a load
 * (arch/transposed.c): they hold the transposes, q, k and v lie one after another, products
 * over enough rows read them and have the bits of products reading the file, a randomised
 * copy of the model (sanity.c) drops the randomised layers' copies, and a model freed while
 * its copies are being made is freed cleanly. */
static void conv1d_weights_get_transposed_copies_with_the_same_bits(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512];
    make_gpt2(dir, m, sizeof m, "--d-model 128 --heads 4 --d-mlp 384 --layers 2 --vocab 512 --ctx 96");
    lp_model *model;
    assert_int_equal(lp_model_load(&model, m, NULL), LP_OK);
    lp_model_free(model); /* at once: the copying thread is stopped mid-way */
    assert_int_equal(lp_model_load(&model, m, NULL), LP_OK);
    lp_model_transpose_wait(model);
    for (int l = 0; l < 2; l++) {
        const lp_layer *L = &model->layers[l];
        const lp_linear *lins[] = {&L->q, &L->k, &L->v, &L->o, &L->up, &L->down};
        for (int i = 0; i < 6; i++) {
            const lp_linear *lin = lins[i];
            assert_non_null(lin->wt);
            assert_true(atomic_load(lin->wt_ready));
            long differ = 0;
            for (int r = 0; r < lin->in; r++)
                for (int c = 0; c < lin->out; c++)
                    differ += memcmp(&lin->wt[(size_t)c * lin->in + r], &lin->w[(size_t)r * lin->ld + c], sizeof(float)) != 0;
            assert_int_equal(differ, 0);
        }
        assert_ptr_equal(L->k.wt, L->q.wt + 128 * 128);
        assert_ptr_equal(L->v.wt, L->k.wt + 128 * 128);
    }
    const lp_linear *up = &model->layers[0].up;
    assert_ptr_equal(lp_linear_rows(up, 80).w, up->wt);
    assert_ptr_equal(lp_linear_rows(up, 4).w, up->w); /* OpenBLAS's small-matrix range keeps the original */

    lp_randomised *rnd;
    assert_int_equal(lp_randomised_new(&rnd, model, 1, 7), LP_OK);
    const lp_model *rm = lp_randomised_model(rnd);
    assert_null(rm->layers[1].up.wt);
    assert_ptr_equal(rm->layers[0].up.wt, up->wt);
    lp_randomised_free(rnd);

    int ids[80];
    for (int i = 0; i < 80; i++) ids[i] = (i * 37 + 5) % 512;
    lp_run *with, *without;
    assert_int_equal(lp_run_new(&with, model, ids, 80), LP_OK);
    lp_model_transpose_stop(model);
    assert_null(model->layers[0].q.wt);
    assert_int_equal(lp_run_new(&without, model, ids, 80), LP_OK);
    for (int t = 0; t < 80; t++)
        assert_memory_equal(lp_run_logits(with, t), lp_run_logits(without, t), 512 * sizeof(float));
    lp_run_free(with);
    lp_run_free(without);
    lp_model_free(model);
    rm_tree(dir);
}

/* Decoding's one-row products read a layer's (out, in) copies once they are made and the
 * file before, and decode.c sums both layouts alike: generation gives the same bytes at once
 * after a load (the copies being made), after lp_model_transpose_wait (every copy whole; it
 * checks them) and after lp_model_transpose_stop (none). */
static void generation_has_the_same_bits_with_and_without_the_copies(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512];
    make_gpt2(dir, m, sizeof m, "--d-model 264 --heads 4 --d-mlp 1000 --layers 8 --vocab 512 --ctx 64");
    enum { PROMPT = 5, STEPS = 6, V = 512 };
    float logits[3][STEPS][V];
    for (int pass = 0; pass < 3; pass++) {
        lp_model *model;
        assert_int_equal(lp_model_load(&model, m, NULL), LP_OK);
        if (pass == 1) {
            lp_model_transpose_wait(model);
            const lp_linear *down = &model->layers[7].down;
            assert_ptr_equal(lp_linear_one_row(down).w, down->wt);
            for (int r = 0; r < down->in; r++)
                for (int c = 0; c < down->out; c++)
                    if (memcmp(&down->wt[(size_t)c * down->in + r], &down->w[(size_t)r * down->ld + c], sizeof(float)))
                        fail_msg("layer 7's down copy differs at (%d, %d)", r, c);
        }
        if (pass == 2) {
            lp_model_transpose_stop(model);
            assert_ptr_equal(lp_linear_one_row(&model->layers[7].down).w, model->layers[7].down.w);
        }
        lp_generator *g;
        assert_int_equal(lp_generator_new(&g, model, PROMPT + STEPS), LP_OK);
        int ids[PROMPT] = {3, 141, 59, 265, 35};
        const float *lg;
        assert_int_equal(lp_generator_feed(g, ids, PROMPT, &lg), LP_OK);
        for (int s = 0; s < STEPS; s++) {
            int next = (s * 97 + 11) % V;
            assert_int_equal(lp_generator_feed(g, &next, 1, &lg), LP_OK);
            memcpy(logits[pass][s], lg, sizeof logits[pass][s]);
        }
        lp_generator_free(g);
        lp_model_free(model);
    }
    assert_memory_equal(logits[0], logits[1], sizeof logits[0]);
    assert_memory_equal(logits[0], logits[2], sizeof logits[0]);
    rm_tree(dir);
}

/* The scan is cut into chunks shared among threads: it must still name the first bad float,
 * not the first one a thread happened to find, in every position of a block and chunk. */
static void nonfinite_scan_names_the_first_index(void **state) {
    (void)state;
    size_t n = ((size_t)1 << 20) + 77; /* four chunks of 2^18 and a tail */
    float *x = calloc(n, sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 1000) - 500.0f;
    assert_int_equal(lp_first_nonfinite(x, n), -1);
    x[n - 1] = NAN; /* in the tail */
    assert_int_equal(lp_first_nonfinite(x, n), (long)(n - 1));
    x[(size_t)3 << 18] = INFINITY; /* a later chunk's first float */
    x[((size_t)1 << 18) + 300] = -INFINITY; /* an earlier chunk, inside a block */
    assert_int_equal(lp_first_nonfinite(x, n), (long)(((size_t)1 << 18) + 300));
    x[5] = NAN;
    assert_int_equal(lp_first_nonfinite(x, n), 5);
    assert_int_equal(lp_first_nonfinite(x, 5), -1);
    x[3] = FLT_MAX; /* large, but finite */
    assert_int_equal(lp_first_nonfinite(x, 5), -1);
    free(x);
}

/* Inf or NaN in the weights made runs print "null" or short arrays; now the load refuses
 * them, naming the tensor and the index. */
static void nonfinite_weights_are_refused_at_load(void **state) {
    (void)state;
    float bad[] = {NAN, INFINITY, -INFINITY};
    const char *names[] = {"h.1.mlp.c_fc.weight", "wte.weight", "ln_f.bias"};
    for (int i = 0; i < 3; i++) {
        char *dir = make_temp_dir();
        char m[512], st[600];
        make_gpt2(dir, m, sizeof m, "");
        snprintf(st, sizeof st, "%s/model.safetensors", m);
        poke_tensor(st, names[i], 7, &bad[i], sizeof bad[i]);
        expect_load_error(m, NULL, LP_EFORMAT, names[i]);
        assert_non_null(strstr(lp_errmsg(), "index 7"));
        rm_tree(dir);
    }
    /* F16 weights are converted first, then scanned */
    char *dir = make_temp_dir();
    char m[512], st[600];
    snprintf(m, sizeof m, "%s/m", dir);
    assert_int_equal(mkmodel(m, "--arch llama --dtype f16 --seed 2"), 0);
    snprintf(st, sizeof st, "%s/model.safetensors", m);
    uint16_t f16_nan = 0x7e00;
    poke_tensor(st, "model.layers.1.mlp.up_proj.weight", 3, &f16_nan, sizeof f16_nan);
    expect_load_error(m, NULL, LP_EFORMAT, "'model.layers.1.mlp.up_proj.weight' holds nan at index 3");
    rm_tree(dir);
    /* llama2.c: an inf in wq */
    lp_mapping map;
    assert_int_equal(lp_file_map(&map, STORIES), LP_OK);
    unsigned char *copy = malloc(map.size);
    memcpy(copy, map.data, map.size);
    int32_t h[7];
    memcpy(h, copy, sizeof h);
    size_t at = 28 + 4 * ((size_t)abs(h[5]) * h[0] + (size_t)h[2] * h[0] + 11); /* wq[11] */
    float inf = INFINITY;
    memcpy(copy + at, &inf, 4);
    dir = make_temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/s.bin", dir);
    write_bytes(path, copy, map.size);
    expect_load_error(path, STORIES_TOK, LP_EFORMAT, "wq holds inf at index 11");
    free(copy);
    lp_file_unmap(&map);
    rm_tree(dir);
}

/* A 1 GB config.json took 100 s to parse; files above the caps are refused unread. */
static void json_files_above_the_size_caps_are_refused(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512], f[600];
    make_gpt2(dir, m, sizeof m, "");
    snprintf(f, sizeof f, "%s/config.json", m);
    assert_int_equal(truncate(f, (off_t)LP_JSON_MAX_CONFIG + 1), 0); /* sparse */
    expect_load_error(m, NULL, LP_ERANGE, "16 MB");
    assert_non_null(strstr(lp_errmsg(), "config.json"));
    rm_tree(dir);
    dir = make_temp_dir();
    snprintf(m, sizeof m, "%s/m", dir);
    assert_int_equal(mkmodel(m, "--arch gpt2 --shards 2"), 0);
    snprintf(f, sizeof f, "%s/model.safetensors.index.json", m);
    assert_int_equal(truncate(f, (off_t)LP_JSON_MAX_INDEX + 1), 0);
    expect_load_error(m, NULL, LP_ERANGE, "64 MB");
    rm_tree(dir);
}

/* Finite weights large enough to overflow float32 in the forward pass: the run is refused
 * with the layer where it happened, instead of logits of NaN printed as null or dropped. */
static void forward_overflow_is_a_clear_error(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    char m[512];
    make_gpt2(dir, m, sizeof m, "--std 1e30");
    lp_model *model;
    if (lp_model_load(&model, m, NULL)) fail_msg("%s", lp_errmsg());
    int ids[] = {1, 2, 3};
    lp_run *r = (lp_run *)1;
    assert_int_equal(lp_run_new(&r, model, ids, 3), LP_ERANGE);
    assert_null(r);
    if (!strstr(lp_errmsg(), "overflowed float32")) fail_msg("%s", lp_errmsg());
    lp_model_free(model);
    rm_tree(dir);
}

/* Gemma2Model's normalizer is torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype): for
 * d_model 56, 7.4833 in float32 and 7.46875 in bfloat16 (torch's rounding of it). */
static void gemma2_embedding_scale_is_rounded_to_the_dtype(void **state) {
    (void)state;
    static const struct {
        const char *dtype;
        float want;
    } cases[] = {{"f32", 7.48331499f}, {"bf16", 7.46875f}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dir = make_temp_dir(), m[512], args[128];
        snprintf(m, sizeof m, "%s/m", dir);
        snprintf(args, sizeof args, "--arch gemma2 --d-model 56 --heads 4 --dtype %s --seed 5", cases[i].dtype);
        assert_int_equal(mkmodel(m, args), 0);
        lp_model *model;
        if (lp_model_load(&model, m, NULL)) fail_msg("%s", lp_errmsg());
        assert_true(lp_model_config(model)->emb_scale == cases[i].want);
        assert_true(lp_model_emb_scale(model) == cases[i].want);
        lp_model_free(model);
        rm_tree(dir);
    }
}

/* The config.json fuzzer's corpus, replayed through the loader and a forward pass on its
 * model: the seeds load and run, and every crash-* input (the and the fuzzer's
 * finds) is refused with a message. */
static void config_fuzz_corpus_replays(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    if (config_model_make(dir)) fail_msg("%s", lp_errmsg());
    DIR *d = opendir("tests/fuzz/corpus/config");
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[600], *buf;
        size_t len;
        snprintf(path, sizeof path, "tests/fuzz/corpus/config/%s", e->d_name);
        assert_int_equal(lp_file_read_new(path, &buf, &len), LP_OK);
        if (config_model_try(dir, buf, len)) fail_msg("%s: an error without a message", path);
        lp_model *m = NULL;
        int rc = lp_model_load(&m, dir, NULL);
        if (strncmp(e->d_name, "crash-", 6) == 0 ? rc == LP_OK : rc != LP_OK)
            fail_msg("%s: load gave %d (%s)", path, rc, lp_errmsg());
        lp_model_free(m);
        free(buf);
        n++;
    }
    closedir(d);
    assert_true(n >= 3);
    rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(missing_path_is_an_io_error_naming_it),
        cmocka_unit_test(truncated_llama2c_checkpoint_is_rejected),
        cmocka_unit_test(llama2c_v1_header_gives_the_same_logits),
        cmocka_unit_test(stories260k_finds_its_tokenizer_by_vocab_size),
        cmocka_unit_test(safetensors_with_lying_header_is_rejected),
        cmocka_unit_test(config_disagreeing_with_tensors_is_rejected),
        cmocka_unit_test(unknown_architecture_is_unsupported),
        cmocka_unit_test(config_that_is_not_json_is_rejected),
        cmocka_unit_test(tokenizer_larger_than_vocabulary_is_rejected),
        cmocka_unit_test(unsupported_dtype_is_named),
        cmocka_unit_test(sequence_longer_than_context_is_a_range_error),
        cmocka_unit_test(transformer_prefix_and_sharded_checkpoints_load),
        cmocka_unit_test(config_sizes_out_of_range_are_refused),
        cmocka_unit_test(llama2c_header_int_min_is_refused),
        cmocka_unit_test(nonfinite_weights_are_refused_at_load),
        cmocka_unit_test(nonfinite_scan_names_the_first_index),
        cmocka_unit_test(weights_are_mapped_with_huge_pages_requested),
        cmocka_unit_test(conv1d_weights_get_transposed_copies_with_the_same_bits),
        cmocka_unit_test(generation_has_the_same_bits_with_and_without_the_copies),
        cmocka_unit_test(json_files_above_the_size_caps_are_refused),
        cmocka_unit_test(forward_overflow_is_a_clear_error),
        cmocka_unit_test(config_fuzz_corpus_replays),
        cmocka_unit_test(gemma2_embedding_scale_is_rounded_to_the_dtype),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
