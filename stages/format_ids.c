/* Stage type `format_ids`: generated ids -> text "id " pieces (records of ids, no tokenizer). */
#include <stdio.h>

#include "core/error.h"
#include "stages/stage.h"

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  (void)st;
  if (in->dtype != QINS_DT_I32) return qins_error_set(QINS_EINPUT, "format_ids: expected i32 ids");
  int64_t n = in->ndim ? in->shape[0] : 0;
  char buf[16 * 64];
  size_t len = 0;
  for (int64_t i = 0; i < n && len + 16 < sizeof buf; i++)
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%d", len || in->step > 1 ? " " : "", ((const int32_t *)in->data)[i]);
  int rc = qins_msg_output_text(out, in, buf, len);
  return rc ? rc : 1;
}

const qins_stage_type qins_stage_format_ids = {
    .name = "format_ids",
    .summary = "i32 ids -> text ('270 26 21')",
    .in_port = "i32[T]",
    .out_port = "u8[N]",
    .forward = fwd,
};
