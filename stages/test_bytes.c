/* Stage type `test_bytes` (tests only): a tokenizer stand-in, text -> one id per byte. */
#include <string.h>

#include "core/error.h"
#include "stages/stage.h"

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  (void)st;
  int64_t n = (int64_t)in->nbytes;
  if (n == 0) return qins_error_set(QINS_EINPUT, "test_bytes: empty prompt (request %llu)", (unsigned long long)in->req);
  int32_t *ids = qins_msg_output(out, in, QINS_DT_I32, 1, &n);
  if (!ids) return QINS_ENOMEM;
  for (int64_t i = 0; i < n; i++) ids[i] = ((const uint8_t *)in->data)[i];
  return 1;
}

const qins_stage_type qins_stage_test_bytes = {
    .name = "test_bytes",
    .summary = "tests: text -> i32 ids, one per byte",
    .in_port = "u8[N]",
    .out_port = "i32[T]",
    .forward = fwd,
};
