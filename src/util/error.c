#include "loupe/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_message[1024];

int lp_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    return code;
}

const char *lp_errmsg(void) { return last_message; }

void lp_error_clear(void) { last_message[0] = '\0'; }
