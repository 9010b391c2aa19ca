/* A unit's aggregates as JSON text (unit_rows.h): written once a dataset for every unit, so
 * the integers are formatted by hand; read back by merge, from databases it did not write. */
#include "loupe/unit_rows.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"

void lp_unit_text_free(lp_unit_text *t) {
    free(t->p);
    *t = (lp_unit_text){0};
}

static bool room(lp_unit_text *t, size_t more) {
    if (t->len + more + 1 <= t->cap) return true;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + more + 1) {
        if (cap > SIZE_MAX / 2) return false;
        cap *= 2;
    }
    char *p = realloc(t->p, cap);
    if (!p) return false;
    t->p = p, t->cap = cap;
    return true;
}

/* "00" to "99". */
static const char DIGITS2[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                 "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                 "8081828384858687888990919293949596979899";

/* Appends v in decimal (room for 21 bytes checked by the caller), two digits a division:
 * the samples' 63-bit hashes are most of a dataset's digits. */
static void put_int(lp_unit_text *t, int64_t v) {
    char d[24];
    int n = 24;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        d[--n] = DIGITS2[2 * r + 1], d[--n] = DIGITS2[2 * r];
    }
    if (u >= 10) d[--n] = DIGITS2[2 * u + 1], d[--n] = DIGITS2[2 * u];
    else d[--n] = (char)('0' + u);
    if (v < 0) t->p[t->len++] = '-';
    memcpy(t->p + t->len, d + n, (size_t)(24 - n));
    t->len += (size_t)(24 - n);
}

/* v and a comma; null for a negative v when it may be absent. */
static void put_field(lp_unit_text *t, int64_t v, bool nullable) {
    if (nullable && v < 0) memcpy(t->p + t->len, "null", 4), t->len += 4;
    else put_int(t, v);
    t->p[t->len++] = ',';
}

/* 10^k as doubles (correctly rounded by the compiler), k from -60 to 60. */
static const double POW10[121] = {
    1e-60, 1e-59, 1e-58, 1e-57, 1e-56, 1e-55, 1e-54, 1e-53, 1e-52, 1e-51, 1e-50, 1e-49, 1e-48, 1e-47, 1e-46, 1e-45,
    1e-44, 1e-43, 1e-42, 1e-41, 1e-40, 1e-39, 1e-38, 1e-37, 1e-36, 1e-35, 1e-34, 1e-33, 1e-32, 1e-31, 1e-30, 1e-29,
    1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13,
    1e-12, 1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,  1e-4,  1e-3,  1e-2,  1e-1,  1e0,   1e1,   1e2,   1e3,
    1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,  1e11,  1e12,  1e13,  1e14,  1e15,  1e16,  1e17,  1e18,  1e19,
    1e20,  1e21,  1e22,  1e23,  1e24,  1e25,  1e26,  1e27,  1e28,  1e29,  1e30,  1e31,  1e32,  1e33,  1e34,  1e35,
    1e36,  1e37,  1e38,  1e39,  1e40,  1e41,  1e42,  1e43,  1e44,  1e45,  1e46,  1e47,  1e48,  1e49,  1e50,  1e51,
    1e52,  1e53,  1e54,  1e55,  1e56,  1e57,  1e58,  1e59,  1e60};

/* f with 9 significant digits, as %.9g would print it but for the last digit's rounding
 * when a tie is within double rounding (the decimal is within 10^-8 of f relative to it, far
 * inside half the float's spacing, 3e-8: read back as a float it is f); a function of f
 * alone, so the same float always gives the same text. printf took most of the time of
 * writing a dataset's aggregates. Room for 24 bytes checked by the caller. */
static void put_value(lp_unit_text *t, float f) {
    char *o = t->p + t->len;
    if (isnan(f)) {
        memcpy(o, "null", 4);
        t->len += 4;
        return;
    }
    if (signbit(f)) *o++ = '-', f = -f;
    if (isinf(f)) {
        memcpy(o, "9e999", 5), o += 5;
        t->len = (size_t)(o - t->p);
        return;
    }
    if (f == 0) {
        *o++ = '0';
        t->len = (size_t)(o - t->p);
        return;
    }
    double d = f;
    int e = (int)floor(log10(d)); /* d in [10^e, 10^(e+1)), or off by one near a power of ten */
    double m = nearbyint(d * POW10[60 + 8 - e]);
    if (m >= 1e9) e++, m = nearbyint(d * POW10[60 + 8 - e]);
    else if (m < 1e8) e--, m = nearbyint(d * POW10[60 + 8 - e]);
    if (m >= 1e9) e++, m = 1e8; /* 999999999.5 and up rounds to the next power of ten */
    char dig[12];
    uint32_t u = (uint32_t)m;
    for (int i = 8; i >= 0; i--) dig[i] = (char)('0' + u % 10), u /= 10;
    int n = 9;
    while (n > 1 && dig[n - 1] == '0') n--;
    if (e >= 0 && e < 9) { /* ddd.ddd */
        for (int i = 0; i <= e; i++) *o++ = i < n ? dig[i] : '0';
        if (n > e + 1) {
            *o++ = '.';
            for (int i = e + 1; i < n; i++) *o++ = dig[i];
        }
    } else if (e < 0 && e >= -5) { /* 0.000ddd */
        *o++ = '0', *o++ = '.';
        for (int i = -1; i > e; i--) *o++ = '0';
        for (int i = 0; i < n; i++) *o++ = dig[i];
    } else { /* d.ddde-12 */
        *o++ = dig[0];
        if (n > 1) {
            *o++ = '.';
            for (int i = 1; i < n; i++) *o++ = dig[i];
        }
        *o++ = 'e';
        if (e < 0) *o++ = '-', e = -e;
        if (e >= 10) *o++ = (char)('0' + e / 10);
        *o++ = (char)('0' + e % 10);
    }
    t->len = (size_t)(o - t->p);
}

/* One entry: the sample's bin and hash first when s is given. At most 8 numbers of 21 bytes
 * and their separators. */
static int put_entry(lp_unit_text *t, const lp_unit_sample *s, const lp_unit_example *x) {
    if (!room(t, 200)) return lp_error(LP_ENOMEM, "out of memory writing a unit's aggregates");
    if (t->len > 1) t->p[t->len++] = ',';
    t->p[t->len++] = '[';
    if (s) put_field(t, s->bin, false), put_field(t, s->hash, false);
    put_field(t, x->item, false);
    put_field(t, x->pos, false);
    put_field(t, x->key_pos, true);
    put_value(t, x->value);
    t->p[t->len++] = ']';
    return LP_OK;
}

static int open_text(lp_unit_text *t) {
    t->len = 0;
    if (!room(t, 2)) return lp_error(LP_ENOMEM, "out of memory writing a unit's aggregates");
    t->p[t->len++] = '[';
    return LP_OK;
}

static void close_text(lp_unit_text *t) { /* open_text and put_entry left room for these */
    t->p[t->len++] = ']';
    t->p[t->len] = '\0';
}

int lp_unit_rows_examples(lp_unit_text *t, const lp_unit_example *x, int n) {
    int rc = open_text(t);
    for (int i = 0; i < n && !rc; i++) rc = put_entry(t, NULL, &x[i]);
    if (!rc) close_text(t);
    return rc;
}

int lp_unit_rows_samples(lp_unit_text *t, const lp_unit_sample *s, int n) {
    int rc = open_text(t);
    for (int i = 0; i < n && !rc; i++) rc = put_entry(t, &s[i], &s[i].x);
    if (!rc) close_text(t);
    return rc;
}

int lp_unit_rows_histogram(lp_unit_text *t, const uint64_t *h, int n) {
    int rc = open_text(t);
    for (int i = 0; i < n && !rc; i++) {
        if (h[i] > INT64_MAX) return lp_error(LP_ERANGE, "a histogram count over 2^63");
        if (!room(t, 24)) return lp_error(LP_ENOMEM, "out of memory writing a unit's aggregates");
        if (i) t->p[t->len++] = ',';
        put_int(t, (int64_t)h[i]);
    }
    if (!rc) close_text(t);
    return rc;
}

/* ---- reading ---- */

typedef struct {
    const char *s, *end;
    const char *what; /* "examples", "samples", "histogram" */
} scan;

static void blank(scan *c) {
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

static int bad(const scan *c, const char *why) {
    return lp_error(LP_EFORMAT, "a unit's %s: %s; the database was not written by loupe's dataset (recreate it)",
                    c->what, why);
}

static bool take(scan *c, char ch) {
    blank(c);
    if (c->s < c->end && *c->s == ch) {
        c->s++;
        return true;
    }
    return false;
}

/* A JSON number's extent from c->s: *integral when it has no fraction or exponent. */
static int number(scan *c, const char **from, size_t *len, bool *integral) {
    blank(c);
    const char *p = c->s;
    *integral = true;
    if (p < c->end && *p == '-') p++;
    const char *digits = p;
    while (p < c->end && *p >= '0' && *p <= '9') p++;
    if (p == digits) return bad(c, "a number is missing");
    if (p < c->end && *p == '.') {
        *integral = false;
        const char *f = ++p;
        while (p < c->end && *p >= '0' && *p <= '9') p++;
        if (p == f) return bad(c, "a number has no digits after its point");
    }
    if (p < c->end && (*p == 'e' || *p == 'E')) {
        *integral = false;
        p++;
        if (p < c->end && (*p == '+' || *p == '-')) p++;
        const char *e = p;
        while (p < c->end && *p >= '0' && *p <= '9') p++;
        if (p == e) return bad(c, "a number has no exponent digits");
    }
    *from = c->s, *len = (size_t)(p - c->s);
    c->s = p;
    return LP_OK;
}

static bool null_here(scan *c) {
    blank(c);
    if (c->end - c->s >= 4 && !memcmp(c->s, "null", 4)) {
        c->s += 4;
        return true;
    }
    return false;
}

/* A number's extent, or null (*null) where one may be absent. */
static int field(scan *c, bool nullable, bool *null, const char **f, size_t *n, bool *integral) {
    *null = nullable && null_here(c);
    return *null ? LP_OK : number(c, f, n, integral);
}

/* An integer in [0, hi]; or -1 for null when nullable. */
static int integer(scan *c, int64_t hi, bool nullable, int64_t *out) {
    const char *f;
    size_t n;
    bool integral, null;
    int rc = field(c, nullable, &null, &f, &n, &integral);
    *out = -1;
    if (rc || null) return rc;
    if (!integral) return bad(c, "a count or an index is not an integer");
    if (*f == '-') return bad(c, "a count or an index is negative");
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(f[i] - '0');
        if (v > ((uint64_t)hi - d) / 10) return bad(c, "an integer is out of range");
        v = v * 10 + d;
    }
    *out = (int64_t)v;
    return LP_OK;
}

/* A float, or NAN for null. */
static int value(scan *c, float *out) {
    const char *f;
    size_t n;
    bool integral, null;
    int rc = field(c, true, &null, &f, &n, &integral);
    *out = NAN;
    if (rc || null) return rc;
    char buf[64];
    if (n >= sizeof buf) return bad(c, "a value has too many digits");
    memcpy(buf, f, n);
    buf[n] = '\0';
    double d = strtod(buf, NULL);
    if (isfinite(d) && fabs(d) > FLT_MAX) return bad(c, "a value is out of a float's range");
    *out = (float)d;
    return LP_OK;
}

/* [[...], ...]: each entry's numbers through one(c, i, arg); at most cap entries. */
static int entries(scan *c, int cap, int *n, int (*one)(scan *, int, void *), void *arg) {
    *n = 0;
    if (!take(c, '[')) return bad(c, "not a JSON array");
    if (!take(c, ']')) {
        do {
            if (*n == cap) return bad(c, "more entries than the dataset keeps");
            int rc = one(c, *n, arg);
            if (rc) return rc;
            (*n)++;
        } while (take(c, ','));
        if (!take(c, ']')) return bad(c, "the array is not closed");
    }
    blank(c);
    return c->s == c->end ? LP_OK : bad(c, "text after the array");
}

/* item, pos, key_pos, value: the tokens are the item's run's (the views join them). */
static int example_fields(scan *c, lp_unit_example *x) {
    int64_t v[3];
    static const int64_t hi[3] = {INT64_MAX, INT_MAX, INT_MAX};
    for (int i = 0; i < 3; i++) {
        int rc = integer(c, hi[i], i == 2, &v[i]);
        if (rc) return rc;
        if (!take(c, ',')) return bad(c, "an entry has too few numbers");
    }
    *x = (lp_unit_example){.item = v[0], .pos = (int)v[1], .key_pos = (int)v[2], .token = -1, .key_token = -1};
    return value(c, &x->value);
}

static int one_example(scan *c, int i, void *arg) {
    lp_unit_example *x = (lp_unit_example *)arg + i;
    if (!take(c, '[')) return bad(c, "an entry is not an array");
    int rc = example_fields(c, x);
    if (!rc && !take(c, ']')) rc = bad(c, "an entry has too many numbers");
    return rc;
}

static int one_sample(scan *c, int i, void *arg) {
    lp_unit_sample *s = (lp_unit_sample *)arg + i;
    int64_t bin, hash;
    if (!take(c, '[')) return bad(c, "an entry is not an array");
    int rc = integer(c, LP_UNIT_BINS - 1, false, &bin);
    if (!rc && !take(c, ',')) rc = bad(c, "an entry has too few numbers");
    if (!rc) rc = integer(c, INT64_MAX, false, &hash);
    if (!rc && !take(c, ',')) rc = bad(c, "an entry has too few numbers");
    if (!rc) rc = example_fields(c, &s->x);
    if (!rc && !take(c, ']')) rc = bad(c, "an entry has too many numbers");
    s->bin = (int)bin, s->hash = hash;
    return rc;
}

static int one_count(scan *c, int i, void *arg) {
    int64_t v;
    int rc = integer(c, INT64_MAX, false, &v);
    ((uint64_t *)arg)[i] = (uint64_t)v;
    return rc;
}

int lp_unit_rows_parse_examples(const char *s, size_t len, lp_unit_example *out, int cap, int *n) {
    scan c = {s, s + len, "examples"};
    return entries(&c, cap, n, one_example, out);
}

int lp_unit_rows_parse_samples(const char *s, size_t len, lp_unit_sample *out, int cap, int *n) {
    scan c = {s, s + len, "samples"};
    return entries(&c, cap, n, one_sample, out);
}

int lp_unit_rows_parse_histogram(const char *s, size_t len, uint64_t *out, int cap, int *n) {
    scan c = {s, s + len, "histogram"};
    return entries(&c, cap, n, one_count, out);
}
