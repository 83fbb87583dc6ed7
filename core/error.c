/* Thread-local error messages with context, and the mapping from status to exit code. */
#include "core/error.h"

#include <stdio.h>
#include <string.h>

#define QINS_ERROR_MAX 1024

static _Thread_local char err_msg[QINS_ERROR_MAX];
static _Thread_local int err_code;

int qins_error_setv(int code, const char *fmt, va_list ap) {
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  err_code = code;
  return code;
}

int qins_error_set(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  qins_error_setv(code, fmt, ap);
  va_end(ap);
  return code;
}

int qins_error_wrap(int code, const char *fmt, ...) {
  char prefix[QINS_ERROR_MAX];
  char old[QINS_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err_msg, sizeof old);
  size_t np = strnlen(prefix, sizeof prefix - 1);
  size_t no = strnlen(old, sizeof old - 1);
  if (no > sizeof err_msg - 1 - np) no = sizeof err_msg - 1 - np;
  memcpy(err_msg, prefix, np);
  memcpy(err_msg + np, old, no);
  err_msg[np + no] = 0;
  err_code = code;
  return code;
}

const char *qins_error_msg(void) { return err_msg[0] ? err_msg : "no error message"; }
int qins_error_code(void) { return err_code; }
void qins_error_clear(void) { err_msg[0] = 0; err_code = 0; }

const char *qins_error_name(int code) {
  switch (code) {
  case QINS_OK: return "ok";
  case QINS_EINVAL: return "invalid argument";
  case QINS_EINPUT: return "bad input";
  case QINS_EIO: return "I/O error";
  case QINS_ENOMEM: return "out of memory";
  case QINS_EUNSUPPORTED: return "unsupported";
  case QINS_EBACKEND: return "backend failure";
  case QINS_EIPC: return "IPC failure";
  case QINS_EINTERNAL: return "internal error";
  default: return "unknown error";
  }
}

int qins_error_exit_code(int code) {
  if (code == QINS_OK) return 0;
  if (code == QINS_EINVAL || code == QINS_EINPUT) return 2;
  return 1;
}
