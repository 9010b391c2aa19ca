/* numdiff: compares a golden file with fresh output, text exactly and numbers within a
 * tolerance, so that golden files hold on every OpenBLAS kernel (the last digits of a float
 * result depend on the kernel; see README, "What is bit-identical").
 *   numdiff [--rtol R] [--atol A] EXPECTED ACTUAL
 * Both files are cut into numbers and the text between them. Text must be equal, except that
 * a run of spaces matches any run of spaces and a run of two or more '-' (table rules) any
 * such run, since column widths follow the widest value. Integers (no '.' and no exponent:
 * ids, positions, counts) must be equal. Other numbers a, b match when
 *   |a - b| <= max(atol + rtol * max(|a|, |b|), one unit in the last digit either prints)
 * (the unit covers a value rounding to the other side of a printed digit). Prints the first
 * differences with their line numbers; exit status 0 same, 1 different, 2 bad usage. */
#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe/error.h"
#include "loupe/fileio.h"

typedef struct {
    const char *s, *end;
    int line;
} cursor;

/* The length of the number at s (0 if none): -?digits[.digits][e[+-]digits], not glued to a
 * preceding letter or digit (so 'h10' and 'stories260K' are text). */
static size_t number_at(const char *s, const char *start, const char *end) {
    if (s > start && (isalnum((unsigned char)s[-1]) || s[-1] == '_' || s[-1] == '.')) return 0;
    const char *p = s;
    if (p < end && *p == '-') p++;
    const char *d = p;
    while (p < end && isdigit((unsigned char)*p)) p++;
    if (p == d) return 0;
    if (p + 1 < end && *p == '.' && isdigit((unsigned char)p[1]))
        for (p++; p < end && isdigit((unsigned char)*p); p++) {}
    if (p < end && (*p == 'e' || *p == 'E')) {
        const char *e = p + 1;
        if (e < end && (*e == '+' || *e == '-')) e++;
        if (e < end && isdigit((unsigned char)*e)) {
            for (p = e; p < end && isdigit((unsigned char)*p); p++) {}
        }
    }
    if (p < end && (isalpha((unsigned char)*p) || *p == '_')) return 0; /* '3rd', '2x' are text */
    return (size_t)(p - s);
}

/* One unit in the last digit of the number printed as s (n bytes). */
static double last_digit_unit(const char *s, size_t n) {
    const char *dot = memchr(s, '.', n), *e = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == 'e' || s[i] == 'E') e = s + i;
    const char *mant_end = e ? e : s + n;
    int decimals = dot ? (int)(mant_end - dot - 1) : 0;
    int exp10 = e ? atoi(e + 1) : 0;
    return pow(10.0, exp10 - decimals);
}

static bool is_integer(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') return false;
    return true;
}

/* Skips a run of ch at the cursor (never a newline); gives the run's length. */
static size_t skip_run(cursor *c, char ch) {
    size_t n = 0;
    while (c->s < c->end && *c->s == ch) c->s++, n++;
    return n;
}

int main(int argc, char **argv) {
    double rtol = 1e-4, atol = 1e-6;
    int i = 1;
    for (; i + 1 < argc && argv[i][0] == '-' && argv[i][1] == '-'; i += 2) {
        if (!strcmp(argv[i], "--rtol")) rtol = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--atol")) atol = atof(argv[i + 1]);
        else break;
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: numdiff [--rtol R] [--atol A] EXPECTED ACTUAL\n");
        return 2;
    }
    size_t la, lb;
    char *a = NULL, *b = NULL;
    if (lp_file_read_new(argv[i], &a, &la) || lp_file_read_new(argv[i + 1], &b, &lb)) {
        fprintf(stderr, "error: numdiff: %s\n", lp_errmsg());
        free(a);
        return 2;
    }
    cursor x = {a, a + la, 1}, y = {b, b + lb, 1};
    int diffs = 0;
    double worst = 0;
    while ((x.s < x.end || y.s < y.end) && diffs < 10) {
        size_t nx = x.s < x.end ? number_at(x.s, a, x.end) : 0, ny = y.s < y.end ? number_at(y.s, b, y.end) : 0;
        if (nx && ny) {
            bool same = nx == ny && !memcmp(x.s, y.s, nx);
            if (!same && !is_integer(x.s, nx) && !is_integer(y.s, ny)) {
                double u = strtod(x.s, NULL), v = strtod(y.s, NULL), d = fabs(u - v);
                double tol = fmax(atol + rtol * fmax(fabs(u), fabs(v)),
                                  fmax(last_digit_unit(x.s, nx), last_digit_unit(y.s, ny)));
                same = d <= tol;
                double rel = d / fmax(fmax(fabs(u), fabs(v)), atol / rtol);
                if (same && rel > worst) {
                    worst = rel;
                    if (getenv("NUMDIFF_VERBOSE")) printf("line %d: %.*s vs %.*s\n", x.line, (int)nx, x.s, (int)ny, y.s);
                }
            }
            if (!same) {
                printf("line %d: expected %.*s, got %.*s\n", x.line, (int)nx, x.s, (int)ny, y.s);
                diffs++;
            }
            x.s += nx, y.s += ny;
            continue;
        }
        if (x.s < x.end && y.s < y.end && *x.s == ' ' && *y.s == ' ') {
            skip_run(&x, ' '), skip_run(&y, ' ');
            continue;
        }
        if (x.s + 1 < x.end && y.s + 1 < y.end && !memcmp(x.s, "--", 2) && !memcmp(y.s, "--", 2)) {
            skip_run(&x, '-'), skip_run(&y, '-');
            continue;
        }
        if (x.s < x.end && y.s < y.end && *x.s == *y.s && !nx && !ny) {
            if (*x.s == '\n') x.line++, y.line++;
            x.s++, y.s++;
            continue;
        }
        /* Text differs: report the two lines from here. */
        const char *ex = memchr(x.s, '\n', (size_t)(x.end - x.s)), *ey = memchr(y.s, '\n', (size_t)(y.end - y.s));
        int wx = (int)((ex ? ex : x.end) - x.s), wy = (int)((ey ? ey : y.end) - y.s);
        printf("line %d: expected '%.*s', got '%.*s'\n", x.line, wx > 80 ? 80 : wx, x.s, wy > 80 ? 80 : wy, y.s);
        diffs++;
        break;
    }
    if (!diffs && getenv("NUMDIFF_VERBOSE")) printf("worst relative difference %.2e\n", worst);
    free(a);
    free(b);
    return diffs ? 1 : 0;
}
