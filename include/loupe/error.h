/* Status codes and the last error message of the calling thread.
 * Engine functions return one of these codes; on failure the message names what failed
 * and, where it helps, what to do about it. The engine never prints. */
#ifndef LOUPE_ERROR_H
#define LOUPE_ERROR_H

enum {
    LP_OK = 0,
    LP_EIO = 1,      /* a file could not be opened, read, mapped or written */
    LP_EFORMAT = 2,  /* a file's contents are malformed or inconsistent */
    LP_EINVAL = 3,   /* an argument is out of range or not understood */
    LP_ENOMEM = 4,   /* allocation failed */
    LP_ERANGE = 5,   /* a buffer, context or size limit was exceeded */
    LP_ECANCEL = 6,  /* the operation was cancelled by the user */
    LP_EUNSUPPORTED = 7, /* a valid input loupe does not handle (yet) */
};

/* Records a printf-style message for the calling thread and returns code, so that
 * failures read `return lp_error(LP_EFORMAT, "%s: ...", path);`. */
int lp_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message recorded on this thread ("" when none). Valid until the next lp_error. */
const char *lp_errmsg(void);

/* Clears the message. */
void lp_error_clear(void);

#endif
