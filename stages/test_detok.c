/* Stage type `test_detok` (tests only): ids -> text, one byte per id. */
#include "core/error.h"
#include "stages/stage.h"

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  (void)st;
  if (in->dtype != QINS_DT_I32) return qins_error_set(QINS_EINPUT, "test_detok: expected i32 ids");
  int64_t n = in->ndim ? in->shape[0] : 1;
  uint8_t *t = qins_msg_output(out, in, QINS_DT_U8, 1, &n);
  if (!t) return QINS_ENOMEM;
  for (int64_t i = 0; i < n; i++) t[i] = (uint8_t)((const int32_t *)in->data)[i];
  return 1;
}

const qins_stage_type qins_stage_test_detok = {
    .name = "test_detok",
    .summary = "tests: i32 ids -> text (byte per id)",
    .in_port = "i32[T]",
    .out_port = "u8[N]",
    .forward = fwd,
};
