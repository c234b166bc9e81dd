/*
 * error.h - how the library reports a failure.
 *
 * Library functions never print and never exit. Those that can fail take a buffer
 * `char err[ERR_MAX]`, write one line into it (without the file name: the caller prefixes
 * it) and return -1; they return 0 on success. Only run.c and the tests print.
 */
#ifndef ERROR_H
#define ERROR_H

#include <stdarg.h>
#include <stdio.h>

#define ERR_MAX 256

/* Formats one line into err and returns -1, so that failures read `return fail(err, ...)`. */
__attribute__((format(printf, 2, 3))) static inline int fail(char err[ERR_MAX], const char *fmt,
                                                              ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERR_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

#endif
