/* Tests for dtype conversion and the safetensors reader/writer. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "loupe/dtype.h"
#include "loupe/error.h"
#include "loupe/safetensors.h"

/* ---- fixtures: one fresh temp dir per test ---- */

static int make_tmpdir(void **state) {
    char *dir = strdup("/tmp/loupe-st-XXXXXX");
    if (!dir || !mkdtemp(dir)) return -1;
    *state = dir;
    return 0;
}

static int remove_tmpdir(void **state) {
    char *dir = *state;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[4096];
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
    return 0;
}

static const char *in_dir(void **state, const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", (const char *)*state, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* A file with the given header text and data_len zero bytes of data. */
static void write_raw(const char *path, const char *header, size_t data_len) {
    size_t hl = strlen(header);
    unsigned char *buf = calloc(1, 8 + hl + data_len);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
}

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* Opening path fails with LP_EFORMAT, and the message names the file and `also`. */
static void assert_open_lies(const char *path, const char *also) {
    lp_safetensors *st = (void *)1;
    lp_error_clear();
    assert_int_equal(lp_st_open(&st, path), LP_EFORMAT);
    assert_null(st);
    assert_contains(lp_errmsg(), path);
    if (also) assert_contains(lp_errmsg(), also);
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- dtype ---- */

static void test_dtype_names_and_sizes_round_trip(void **state) {
    (void)state;
    static const struct {
        const char *name;
        lp_dtype dt;
        size_t size;
    } want[] = {{"F32", LP_DT_F32, 4}, {"F16", LP_DT_F16, 2},  {"BF16", LP_DT_BF16, 2},
                {"F64", LP_DT_F64, 8}, {"I64", LP_DT_I64, 8},  {"I32", LP_DT_I32, 4},
                {"I16", LP_DT_I16, 2}, {"I8", LP_DT_I8, 1},    {"U8", LP_DT_U8, 1},
                {"BOOL", LP_DT_BOOL, 1}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(lp_dtype_from_name(want[i].name), want[i].dt);
        assert_string_equal(lp_dtype_name(want[i].dt), want[i].name);
        assert_int_equal(lp_dtype_size(want[i].dt), want[i].size);
    }
    assert_int_equal(lp_dtype_from_name("F8_E4M3"), LP_DT_UNKNOWN);
    assert_int_equal(lp_dtype_from_name("f32"), LP_DT_UNKNOWN);
    assert_int_equal(lp_dtype_from_name(NULL), LP_DT_UNKNOWN);
    assert_string_equal(lp_dtype_name(LP_DT_UNKNOWN), "?");
    assert_string_equal(lp_dtype_name((lp_dtype)99), "?");
    assert_int_equal(lp_dtype_size(LP_DT_UNKNOWN), 0);
}

static void test_f16_to_f32_is_exact_on_known_patterns(void **state) {
    (void)state;
    assert_true(lp_f16_to_f32(0x3c00) == 1.0f);
    assert_true(lp_f16_to_f32(0xc100) == -2.5f);
    assert_true(lp_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(lp_f16_to_f32(0x0400) == 0x1p-14f);          /* smallest normal */
    assert_true(lp_f16_to_f32(0x0001) == 0x1p-24f);          /* smallest subnormal */
    assert_true(lp_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);   /* largest subnormal */
    assert_true(lp_f16_to_f32(0x8001) == -0x1p-24f);
    assert_int_equal(bits(lp_f16_to_f32(0x0000)), 0x00000000);
    assert_int_equal(bits(lp_f16_to_f32(0x8000)), 0x80000000);
    assert_true(isinf(lp_f16_to_f32(0x7c00)) && lp_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(lp_f16_to_f32(0xfc00)) && lp_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(lp_f16_to_f32(0x7e00)));
    assert_true(isnan(lp_f16_to_f32(0x7c01))); /* signalling NaN stays NaN */
    assert_true(isnan(lp_f16_to_f32(0xfc01)));
}

static void test_f16_conversion_matches_ldexp_for_every_pattern(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        float f = lp_f16_to_f32((uint16_t)h);
        if (e == 31) {
            assert_true(m ? isnan(f) : isinf(f));
            continue;
        }
        double want = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
        if (h & 0x8000) want = -want;
        assert_true((double)f == want);
        assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
        /* Every finite half survives the round trip bit for bit. */
        assert_int_equal(lp_f32_to_f16(f), h);
    }
}

static void test_f32_to_f16_rounds_to_nearest_even(void **state) {
    (void)state;
    assert_int_equal(lp_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(lp_f32_to_f16(-2.5f), 0xc100);
    assert_int_equal(lp_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(lp_f32_to_f16(65519.996f), 0x7bff); /* just below the tie to inf */
    assert_int_equal(lp_f32_to_f16(65520.0f), 0x7c00);   /* tie: 0x7bff is odd -> inf */
    assert_int_equal(lp_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(lp_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(lp_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(lp_f32_to_f16(-INFINITY), 0xfc00);
    uint16_t n = lp_f32_to_f16(NAN);
    assert_true((n & 0x7c00) == 0x7c00 && (n & 0x03ff) != 0);
    n = lp_f32_to_f16(from_bits(0x7f800001)); /* payload only in bits a truncation drops */
    assert_true((n & 0x7c00) == 0x7c00 && (n & 0x03ff) != 0);
    /* Ties between normals: 1 + 2^-11 is halfway between 0x3c00 (even) and 0x3c01. */
    assert_int_equal(lp_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    assert_int_equal(lp_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    assert_int_equal(lp_f32_to_f16(nextafterf(1.0f + 0x1p-11f, 2.0f)), 0x3c01);
    /* Subnormals, in units of 2^-24. */
    assert_int_equal(lp_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(lp_f32_to_f16(0x1p-25f), 0x0000);             /* tie -> even 0 */
    assert_int_equal(lp_f32_to_f16(nextafterf(0x1p-25f, 1)), 0x0001);
    assert_int_equal(lp_f32_to_f16(3 * 0x1p-25f), 0x0002);         /* 1.5 -> 2 */
    assert_int_equal(lp_f32_to_f16(5 * 0x1p-25f), 0x0002);         /* 2.5 -> 2 */
    assert_int_equal(lp_f32_to_f16(-3 * 0x1p-25f), 0x8002);
    assert_int_equal(lp_f32_to_f16(1023.5f * 0x1p-24f), 0x0400);   /* rounds up to the smallest normal */
    assert_int_equal(lp_f32_to_f16(0x1p-14f), 0x0400);
    assert_int_equal(lp_f32_to_f16(0x1p-30f), 0x0000);
    assert_int_equal(lp_f32_to_f16(from_bits(1)), 0x0000);         /* f32 subnormal */
    assert_int_equal(lp_f32_to_f16(-0.0f), 0x8000);
}

static void test_bf16_conversion_rounds_to_nearest_even_and_keeps_nan(void **state) {
    (void)state;
    assert_true(lp_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(lp_bf16_to_f32(0xc020) == -2.5f);
    assert_true(isinf(lp_bf16_to_f32(0x7f80)));
    assert_true(isnan(lp_bf16_to_f32(0x7fc0)));
    assert_true(lp_bf16_to_f32(0x0001) == 0x1p-133f); /* subnormal */
    assert_int_equal(lp_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(lp_f32_to_bf16(-2.5f), 0xc020);
    assert_int_equal(lp_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie -> even */
    assert_int_equal(lp_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie -> even */
    assert_int_equal(lp_f32_to_bf16(nextafterf(1.0f + 0x1p-8f, 2)), 0x3f81);
    assert_int_equal(lp_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(lp_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(lp_f32_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds up to inf */
    assert_int_equal(lp_f32_to_bf16(-0.0f), 0x8000);
    assert_true(isnan(lp_bf16_to_f32(lp_f32_to_bf16(NAN))));
    assert_true(isnan(lp_bf16_to_f32(lp_f32_to_bf16(from_bits(0x7f800001)))));
    assert_true(isnan(lp_bf16_to_f32(lp_f32_to_bf16(from_bits(0xffffffff)))));
    for (uint32_t b = 0; b < 65536; b++) {
        if ((b & 0x7fff) > 0x7f80) continue;
        assert_int_equal(lp_f32_to_bf16(lp_bf16_to_f32((uint16_t)b)), b);
    }
}

/* The bulk path (F16C or chunked) must agree with the scalar one, from any alignment. */
static void test_bulk_conversion_matches_scalar_from_unaligned_source(void **state) {
    (void)state;
    size_t n = 65536 + 13;
    unsigned char *src = malloc(2 * n + 1);
    float *dst = malloc(n * sizeof *dst);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)i;
        memcpy(src + 1 + 2 * i, &h, 2);
    }
    assert_int_equal(lp_convert_to_f32(dst, src + 1, LP_DT_F16, n), LP_OK);
    for (size_t i = 0; i < n; i++) {
        float want = lp_f16_to_f32((uint16_t)i);
        if (isnan(want)) assert_true(isnan(dst[i]));
        else assert_int_equal(bits(dst[i]), bits(want));
    }
    assert_int_equal(lp_convert_to_f32(dst, src + 1, LP_DT_BF16, n), LP_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(bits(dst[i]), bits(lp_bf16_to_f32((uint16_t)i)));
    for (size_t i = 0; i < 100; i++) {
        float f = (float)i * 0.25f - 3;
        memcpy(src + 1 + 4 * i, &f, 4);
    }
    assert_int_equal(lp_convert_to_f32(dst, src + 1, LP_DT_F32, 100), LP_OK);
    for (size_t i = 0; i < 100; i++) assert_true(dst[i] == (float)i * 0.25f - 3);
    assert_int_equal(lp_convert_to_f32(dst, src, LP_DT_I64, 4), LP_EUNSUPPORTED);
    assert_int_equal(lp_convert_to_f32(dst, src, LP_DT_UNKNOWN, 4), LP_EUNSUPPORTED);
    free(src);
    free(dst);
}

/* ---- writing and reading ---- */

static void test_write_read_round_trip_keeps_order_shapes_and_bytes(void **state) {
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[5] = {0x3c00, 0xc100, 0x7bff, 0x0001, 0x8000};
    uint16_t b[3] = {0x3f80, 0xc020, 0x7f80};
    int64_t ids[4] = {0, -1, INT64_MAX, 42};
    float scalar = 0.5f;
    lp_st_tensor in[] = {
        {.name = "wte.weight", .dtype = LP_DT_F32, .ndim = 2, .shape = {2, 3}, .data = w, .nbytes = sizeof w},
        {.name = "h.0.attn.bias", .dtype = LP_DT_F16, .ndim = 1, .shape = {5}, .data = h, .nbytes = sizeof h},
        {.name = "ln_f.weight", .dtype = LP_DT_BF16, .ndim = 1, .shape = {3}, .data = b, .nbytes = sizeof b},
        {.name = "position_ids", .dtype = LP_DT_I64, .ndim = 1, .shape = {4}, .data = ids, .nbytes = sizeof ids},
        {.name = "scale", .dtype = LP_DT_F32, .ndim = 0, .data = &scalar, .nbytes = 4},
        {.name = "empty", .dtype = LP_DT_F32, .ndim = 2, .shape = {0, 4}, .data = NULL, .nbytes = 0},
        {.name = "fp8", .dtype = LP_DT_UNKNOWN, .dtype_name = "F8_E4M3", .ndim = 1, .shape = {3},
         .data = "abc", .nbytes = 3},
    };
    const int n = (int)(sizeof in / sizeof in[0]);
    const char *keys[] = {"format", "note"}, *vals[] = {"pt", "loupe test"};
    const char *path = in_dir(state, "model.safetensors");
    assert_int_equal(lp_st_write(path, in, n, keys, vals, 2), LP_OK);

    lp_safetensors *st;
    assert_int_equal(lp_st_open(&st, path), LP_OK);
    assert_int_equal(lp_st_count(st), n);
    for (int i = 0; i < n; i++) {
        const lp_st_tensor *t = lp_st_at(st, i);
        assert_string_equal(t->name, in[i].name);
        assert_int_equal(t->dtype, in[i].dtype);
        assert_string_equal(t->dtype_name, in[i].dtype ? lp_dtype_name(in[i].dtype) : in[i].dtype_name);
        assert_int_equal(t->ndim, in[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], in[i].shape[d]);
        assert_int_equal(t->nbytes, in[i].nbytes);
        if (t->nbytes) assert_memory_equal(t->data, in[i].data, t->nbytes);
        assert_ptr_equal(lp_st_find(st, in[i].name), t);
        assert_string_equal(lp_st_path(st, t), path);
    }
    assert_null(lp_st_find(st, "__metadata__"));
    assert_null(lp_st_find(st, "nope"));
    assert_null(lp_st_at(st, n));
    assert_null(lp_st_at(st, -1));

    /* The data region starts 8-byte aligned and tensors are packed in the order given. */
    const lp_st_tensor *first = lp_st_at(st, 0);
    FILE *f = fopen(path, "rb");
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | len8[i];
    assert_int_equal((8 + hl) % 8, 0);
    assert_ptr_equal((const char *)lp_st_at(st, 1)->data, (const char *)first->data + sizeof w);
    lp_st_free(st);
}

static void test_writer_rejects_byte_count_that_disagrees_with_shape(void **state) {
    float w[6] = {0};
    lp_st_tensor t = {.name = "w", .dtype = LP_DT_F32, .ndim = 2, .shape = {2, 4}, .data = w, .nbytes = sizeof w};
    const char *path = in_dir(state, "bad.safetensors");
    assert_int_equal(lp_st_write(path, &t, 1, NULL, NULL, 0), LP_EINVAL);
    assert_contains(lp_errmsg(), "'w'");
    assert_false(access(path, F_OK) == 0);
    lp_st_tensor dup[2] = {t, t};
    dup[0].shape[1] = dup[1].shape[1] = 3;
    assert_int_equal(lp_st_write(path, dup, 2, NULL, NULL, 0), LP_EINVAL);
}

static void test_writer_output_parses_from_memory(void **state) {
    uint16_t h[2] = {0x3c00, 0x4000};
    lp_st_tensor t = {.name = "x", .dtype = LP_DT_F16, .ndim = 1, .shape = {2}, .data = h, .nbytes = 4};
    const char *path = in_dir(state, "m.safetensors");
    assert_int_equal(lp_st_write(path, &t, 1, NULL, NULL, 0), LP_OK);
    FILE *f = fopen(path, "rb");
    unsigned char buf[256];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    lp_safetensors *st;
    assert_int_equal(lp_st_parse(&st, buf, len, "mem"), LP_OK);
    const lp_st_tensor *x = lp_st_find(st, "x");
    assert_non_null(x);
    assert_true((const unsigned char *)x->data >= buf && (const unsigned char *)x->data + 4 <= buf + len);
    float out[2];
    assert_int_equal(lp_convert_to_f32(out, x->data, x->dtype, 2), LP_OK);
    assert_true(out[0] == 1.0f && out[1] == 2.0f);
    assert_string_equal(lp_st_path(st, x), "mem");
    lp_st_free(st);
}

static void test_lookup_finds_each_of_many_tensors(void **state) {
    enum { N = 1500 };
    static lp_st_tensor ts[N];
    static char names[N][32];
    static uint8_t data[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "h.%d.mlp.c_fc.weight", (i * 7919) % N);
        data[i] = (uint8_t)i;
        ts[i] = (lp_st_tensor){.name = names[i], .dtype = LP_DT_U8, .ndim = 1, .shape = {1},
                               .data = &data[i], .nbytes = 1};
    }
    const char *path = in_dir(state, "many.safetensors");
    assert_int_equal(lp_st_write(path, ts, N, NULL, NULL, 0), LP_OK);
    lp_safetensors *st;
    assert_int_equal(lp_st_open(&st, path), LP_OK);
    for (int i = 0; i < N; i++) {
        const lp_st_tensor *t = lp_st_find(st, names[i]);
        assert_non_null(t);
        assert_int_equal(*(const uint8_t *)t->data, (uint8_t)i);
    }
    assert_null(lp_st_find(st, "h.1500.mlp.c_fc.weight"));
    lp_st_free(st);
}

/* A file that follows the spec but was not written by us: unknown dtype, odd metadata,
 * header padded with spaces, an empty tensor sharing an offset, holes tolerated. */
static void test_reader_accepts_unknown_dtypes_and_tolerant_metadata(void **state) {
    const char *path = in_dir(state, "foreign.safetensors");
    write_raw(path,
              "{\"__metadata__\":{\"format\":\"pt\",\"n\":3},"
              "\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
              "\"e\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[2,2],\"extra\":1},"
              "\"s\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[8,9]}}   ",
              9);
    lp_safetensors *st;
    assert_int_equal(lp_st_open(&st, path), LP_OK);
    assert_int_equal(lp_st_count(st), 3);
    const lp_st_tensor *a = lp_st_find(st, "a");
    assert_int_equal(a->dtype, LP_DT_UNKNOWN);
    assert_string_equal(a->dtype_name, "F8_E4M3");
    assert_int_equal(a->nbytes, 4);
    assert_int_equal(lp_st_find(st, "e")->nbytes, 0);
    assert_int_equal(lp_st_find(st, "s")->ndim, 0);
    assert_int_equal(lp_st_find(st, "s")->nbytes, 1);
    lp_st_free(st);
}

/* ---- sharded checkpoints ---- */

static void write_shards(void **state) {
    float a[2] = {1, 2}, b[3] = {3, 4, 5}, c[1] = {6};
    uint16_t d[2] = {0x3c00, 0x4000};
    lp_st_tensor s1[] = {
        {.name = "a", .dtype = LP_DT_F32, .ndim = 1, .shape = {2}, .data = a, .nbytes = sizeof a},
        {.name = "b", .dtype = LP_DT_F32, .ndim = 1, .shape = {3}, .data = b, .nbytes = sizeof b},
    };
    lp_st_tensor s2[] = {
        {.name = "c", .dtype = LP_DT_F32, .ndim = 0, .data = c, .nbytes = sizeof c},
        {.name = "d", .dtype = LP_DT_F16, .ndim = 1, .shape = {2}, .data = d, .nbytes = sizeof d},
    };
    assert_int_equal(lp_st_write(in_dir(state, "model-00001-of-00002.safetensors"), s1, 2, NULL, NULL, 0), LP_OK);
    assert_int_equal(lp_st_write(in_dir(state, "model-00002-of-00002.safetensors"), s2, 2, NULL, NULL, 0), LP_OK);
}

static void write_index(void **state, const char *weight_map) {
    char text[1024];
    snprintf(text, sizeof text, "{\"metadata\": {\"total_size\": 32}, \"weight_map\": {%s}}\n", weight_map);
    write_bytes(in_dir(state, "model.safetensors.index.json"), text, strlen(text));
}

#define SHARD1 "\"model-00001-of-00002.safetensors\""
#define SHARD2 "\"model-00002-of-00002.safetensors\""

static void test_sharded_index_merges_shards_into_one_name_space(void **state) {
    write_shards(state);
    write_index(state, "\"a\": " SHARD1 ", \"b\": " SHARD1 ", \"c\": " SHARD2 ", \"d\": " SHARD2);
    char index[4096];
    snprintf(index, sizeof index, "%s", in_dir(state, "model.safetensors.index.json"));
    lp_safetensors *st;
    assert_int_equal(lp_st_open(&st, index), LP_OK);
    assert_int_equal(lp_st_count(st), 4);
    const char *names[] = {"a", "b", "c", "d"};
    const char *files[] = {"model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (int i = 0; i < 4; i++) {
        const lp_st_tensor *t = lp_st_find(st, names[i]);
        assert_non_null(t);
        assert_string_equal(lp_st_path(st, t), in_dir(state, files[i]));
    }
    float out[3];
    assert_int_equal(lp_convert_to_f32(out, lp_st_find(st, "b")->data, LP_DT_F32, 3), LP_OK);
    assert_true(out[2] == 5.0f);
    assert_int_equal(lp_convert_to_f32(out, lp_st_find(st, "d")->data, LP_DT_F16, 2), LP_OK);
    assert_true(out[1] == 2.0f);
    lp_st_free(st);
}

static void test_sharded_index_rejects_missing_shard_file(void **state) {
    write_shards(state);
    write_index(state, "\"a\": " SHARD1 ", \"z\": \"model-00003-of-00002.safetensors\"");
    char index[4096];
    snprintf(index, sizeof index, "%s", in_dir(state, "model.safetensors.index.json"));
    assert_open_lies(index, "model-00003-of-00002.safetensors");
}

static void test_sharded_index_rejects_tensor_absent_from_its_shard(void **state) {
    write_shards(state);
    write_index(state, "\"a\": " SHARD1 ", \"ghost\": " SHARD2);
    char index[4096];
    snprintf(index, sizeof index, "%s", in_dir(state, "model.safetensors.index.json"));
    assert_open_lies(index, "'ghost'");
}

static void test_sharded_index_rejects_tensor_in_the_wrong_shard(void **state) {
    write_shards(state);
    write_index(state, "\"a\": " SHARD2 ", \"c\": " SHARD1);
    char index[4096];
    snprintf(index, sizeof index, "%s", in_dir(state, "model.safetensors.index.json"));
    assert_open_lies(index, "'a'");
}

static void test_sharded_index_rejects_tensor_in_two_shards(void **state) {
    float x = 1;
    lp_st_tensor t = {.name = "a", .dtype = LP_DT_F32, .ndim = 0, .data = &x, .nbytes = 4};
    assert_int_equal(lp_st_write(in_dir(state, "s1.safetensors"), &t, 1, NULL, NULL, 0), LP_OK);
    assert_int_equal(lp_st_write(in_dir(state, "s2.safetensors"), &t, 1, NULL, NULL, 0), LP_OK);
    write_index(state, "\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"");
    char index[4096];
    snprintf(index, sizeof index, "%s", in_dir(state, "model.safetensors.index.json"));
    lp_safetensors *st;
    assert_int_equal(lp_st_open(&st, index), LP_EFORMAT);
    assert_contains(lp_errmsg(), "'a'");
    assert_contains(lp_errmsg(), "s1.safetensors");
    assert_contains(lp_errmsg(), "s2.safetensors");
}

static void test_sharded_index_rejects_shard_outside_its_directory(void **state) {
    write_index(state, "\"a\": \"../etc/x.safetensors\"");
    char index[4096];
    snprintf(index, sizeof index, "%s", in_dir(state, "model.safetensors.index.json"));
    assert_open_lies(index, "'a'");
}

/* ---- lying headers ---- */

static void test_rejects_file_shorter_than_length_prefix(void **state) {
    const char *path = in_dir(state, "short.safetensors");
    write_bytes(path, "\x10\0\0", 3);
    assert_open_lies(path, "too short");
    write_bytes(path, "", 0);
    assert_open_lies(path, NULL);
}

static void test_rejects_header_length_past_end_of_file(void **state) {
    const char *path = in_dir(state, "long.safetensors");
    unsigned char buf[8 + 2] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    write_bytes(path, buf, sizeof buf);
    assert_open_lies(path, "past the end");
    buf[0] = 3, memset(buf + 1, 0, 7);
    write_bytes(path, buf, sizeof buf);
    assert_open_lies(path, "past the end");
}

static void test_rejects_header_that_is_not_json(void **state) {
    const char *path = in_dir(state, "nojson.safetensors");
    write_raw(path, "{\"a\": {\"dtype\": \"F32\",", 0);
    assert_open_lies(path, "not valid JSON");
    write_raw(path, "[1, 2]", 0);
    assert_open_lies(path, "not a JSON object");
    write_raw(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
    assert_open_lies(path, "not valid JSON"); /* duplicate keys are ambiguous */
}

static void test_rejects_offsets_past_end_of_data(void **state) {
    const char *path = in_dir(state, "past.safetensors");
    write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12);
    assert_open_lies(path, "'w'");
    write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 12);
    assert_open_lies(path, "'w'");
}

static void test_rejects_overlapping_tensors(void **state) {
    const char *path = in_dir(state, "overlap.safetensors");
    write_raw(path,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]},"
              "\"c\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[4,12]}}",
              20);
    assert_open_lies(path, "overlap");
    assert_contains(lp_errmsg(), "'a'");
    assert_contains(lp_errmsg(), "'c'");
}

static void test_rejects_shape_that_disagrees_with_byte_count(void **state) {
    const char *path = in_dir(state, "model.safetensors");
    write_raw(path, "{\"h.0.attn.c_attn.weight\":{\"dtype\":\"F32\",\"shape\":[10,20],\"data_offsets\":[0,400]}}",
              400);
    assert_open_lies(path, "tensor 'h.0.attn.c_attn.weight': data_offsets [0, 400] hold 400 bytes "
                           "but shape [10, 20] of F32 needs 800");
}

/* Each malformed entry is rejected with a message naming the file and the tensor. */
static void test_rejects_malformed_entries(void **state) {
    static const char *bad[] = {
        "{\"t\":[1,2]}",
        "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}",
        "{\"t\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"0\":4}}}",
    };
    const char *path = in_dir(state, "bad.safetensors");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_raw(path, bad[i], 16);
        assert_open_lies(path, "'t'");
    }
}

static void test_parse_rejects_lies_in_memory_too(void **state) {
    (void)state;
    lp_safetensors *st = (void *)1;
    assert_int_equal(lp_st_parse(&st, NULL, 0, "buf"), LP_EFORMAT);
    assert_null(st);
    assert_contains(lp_errmsg(), "buf");
    unsigned char b[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    assert_int_equal(lp_st_parse(&st, b, sizeof b, "buf"), LP_OK);
    assert_int_equal(lp_st_count(st), 0);
    lp_st_free(st);
}

static void test_open_reports_missing_file_as_io_error(void **state) {
    lp_safetensors *st;
    assert_int_equal(lp_st_open(&st, in_dir(state, "absent.safetensors")), LP_EIO);
    assert_contains(lp_errmsg(), "absent.safetensors");
}

#define T(f) cmocka_unit_test_setup_teardown(f, make_tmpdir, remove_tmpdir)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_names_and_sizes_round_trip),
        cmocka_unit_test(test_f16_to_f32_is_exact_on_known_patterns),
        cmocka_unit_test(test_f16_conversion_matches_ldexp_for_every_pattern),
        cmocka_unit_test(test_f32_to_f16_rounds_to_nearest_even),
        cmocka_unit_test(test_bf16_conversion_rounds_to_nearest_even_and_keeps_nan),
        cmocka_unit_test(test_bulk_conversion_matches_scalar_from_unaligned_source),
        T(test_write_read_round_trip_keeps_order_shapes_and_bytes),
        T(test_writer_rejects_byte_count_that_disagrees_with_shape),
        T(test_writer_output_parses_from_memory),
        T(test_lookup_finds_each_of_many_tensors),
        T(test_reader_accepts_unknown_dtypes_and_tolerant_metadata),
        T(test_sharded_index_merges_shards_into_one_name_space),
        T(test_sharded_index_rejects_missing_shard_file),
        T(test_sharded_index_rejects_tensor_absent_from_its_shard),
        T(test_sharded_index_rejects_tensor_in_the_wrong_shard),
        T(test_sharded_index_rejects_tensor_in_two_shards),
        T(test_sharded_index_rejects_shard_outside_its_directory),
        T(test_rejects_file_shorter_than_length_prefix),
        T(test_rejects_header_length_past_end_of_file),
        T(test_rejects_header_that_is_not_json),
        T(test_rejects_offsets_past_end_of_data),
        T(test_rejects_overlapping_tensors),
        T(test_rejects_shape_that_disagrees_with_byte_count),
        T(test_rejects_malformed_entries),
        cmocka_unit_test(test_parse_rejects_lies_in_memory_too),
        T(test_open_reports_missing_file_as_io_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
