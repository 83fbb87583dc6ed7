/* Argument helpers for the subcommands: id lists and strictly checked numbers. */
#include "tools/cli_util.h"

#include <errno.h>
#include <stdlib.h>

#include "core/error.h"

int cli_parse_ids(const char *text, int32_t **ids, int *n) {
  *ids = NULL;
  *n = 0;
  int cap = 1;
  for (const char *p = text; *p; p++) cap += *p == ',';
  int32_t *v = malloc((size_t)cap * sizeof(int32_t));
  if (!v) return qins_error_set(QINS_ENOMEM, "out of memory parsing --ids");
  const char *p = text;
  int count = 0;
  while (*p) {
    char *end;
    errno = 0;
    long x = strtol(p, &end, 10);
    if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
      free(v);
      return qins_error_set(QINS_EINVAL, "--ids '%s': expected comma-separated token ids >= 0", text);
    }
    v[count++] = (int32_t)x;
    p = *end ? end + 1 : end;
    if (*end == ',' && !*p) {
      free(v);
      return qins_error_set(QINS_EINVAL, "--ids '%s': trailing comma", text);
    }
  }
  if (!count) {
    free(v);
    return qins_error_set(QINS_EINVAL, "--ids is empty");
  }
  *ids = v;
  *n = count;
  return 0;
}

int cli_parse_int(const char *opt, const char *text, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long x = strtol(text, &end, 10);
  if (end == text || *end || errno || x < lo || x > hi)
    return qins_error_set(QINS_EINVAL, "%s '%s': expected an integer in [%ld, %ld]", opt, text, lo, hi);
  *out = x;
  return 0;
}

int cli_parse_float(const char *opt, const char *text, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double x = strtod(text, &end);
  if (end == text || *end || errno || !(x >= lo && x <= hi))
    return qins_error_set(QINS_EINVAL, "%s '%s': expected a number in [%g, %g]", opt, text, lo, hi);
  *out = x;
  return 0;
}
