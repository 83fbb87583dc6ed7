/* Status codes and the thread-local error message every failing function fills. */
#ifndef QINS_ERROR_H
#define QINS_ERROR_H

#include <stdarg.h>

/* Functions return 0 or one of these (negative). The message says what and where. */
enum {
  QINS_OK = 0,
  QINS_EINVAL = -1,      /* bad argument from a caller (programmer or CLI usage) */
  QINS_EINPUT = -2,      /* bad input data: file, YAML, model, tokenizer, ids */
  QINS_EIO = -3,         /* operating-system I/O failure */
  QINS_ENOMEM = -4,      /* allocation failed */
  QINS_EUNSUPPORTED = -5,/* valid request the engine (or this device) cannot do */
  QINS_EBACKEND = -6,    /* compute device failure */
  QINS_EIPC = -7,        /* ZeroMQ / shared memory / worker failure */
  QINS_EINTERNAL = -8,   /* a bug: an invariant did not hold */
};

/* Record an error for this thread and return `code`, so callers can write
 * `return qins_error_set(QINS_EINPUT, "%s: tensor %s: ...", path, name);` */
int qins_error_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int qins_error_setv(int code, const char *fmt, va_list ap);
/* Prefix the current message with more context ("loading model X: " + old message). */
int qins_error_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *qins_error_msg(void);
int qins_error_code(void);
void qins_error_clear(void);
const char *qins_error_name(int code);
/* Process exit status for a status code: 0 ok, 2 bad input/usage, 1 anything else. */
int qins_error_exit_code(int code);

#endif
