/* Stage type `parse_ids`: a prompt written as token ids ("1 403 407" or "[1, 403]") -> ids; for
 * models without a tokenizer (test fixtures) and for exact-id experiments. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/stage.h"

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  (void)st;
  const char *p = in->data, *end = p + in->nbytes;
  int64_t n = 0;
  int32_t *tmp = malloc(sizeof(int32_t) * (in->nbytes / 2 + 1));
  if (!tmp) return qins_error_set(QINS_ENOMEM, "out of memory");
  while (p < end) {
    if (isdigit((unsigned char)*p)) {
      long v = 0;
      while (p < end && isdigit((unsigned char)*p) && v < 1000000000L) v = v * 10 + (*p++ - '0');
      tmp[n++] = (int32_t)v;
    } else if (*p == ' ' || *p == ',' || *p == '[' || *p == ']' || *p == '\n' || *p == '\t') {
      p++;
    } else {
      free(tmp);
      return qins_error_set(QINS_EINPUT, "parse_ids: request %llu: '%c' in a prompt of ids", (unsigned long long)in->req, *p);
    }
  }
  if (n == 0) {
    free(tmp);
    return qins_error_set(QINS_EINPUT, "parse_ids: request %llu: no ids", (unsigned long long)in->req);
  }
  int32_t *o = qins_msg_output(out, in, QINS_DT_I32, 1, &n);
  if (o) memcpy(o, tmp, sizeof(int32_t) * (size_t)n);
  free(tmp);
  if (!o) return QINS_ENOMEM;
  out->pos = 0;
  out->last_id = -1;
  return 1;
}

const qins_stage_type qins_stage_parse_ids = {
    .name = "parse_ids",
    .summary = "prompt of token ids ('1 403 407') -> i32 ids",
    .in_port = "u8[N]",
    .out_port = "i32[T]",
    .forward = fwd,
};
