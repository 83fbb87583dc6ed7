/* Stage type `test_sample` (tests only): last row -> one next id, deterministic; ends the request
 * after max_tokens, so a `loop: true` edge back to the embedding makes an autoregressive cycle. */
#include <math.h>
#include <stdio.h>

#include "core/error.h"
#include "stages/stage.h"

static const qins_opt_spec opts[] = {
    {"max_tokens", QINS_OPT_INT, "8", 1, 100000, "tokens generated per request"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  if (in->dtype != QINS_DT_F32 || in->ndim != 2 || in->shape[0] < 1)
    return qins_error_set(QINS_EINPUT, "test_sample: expected f32[T,dim] input");
  int64_t dim = in->shape[1];
  const float *row = (const float *)in->data + (in->shape[0] - 1) * dim;
  double s = 0;
  for (int64_t j = 0; j < dim; j++) s += row[j] * (double)(j + 1);
  int64_t one = 1;
  int32_t *id = qins_msg_output(out, in, QINS_DT_I32, 1, &one);
  if (!id) return QINS_ENOMEM;
  id[0] = 'a' + (int32_t)(fmod(fabs(s) * 7919.0 + in->step * 31.0, 26.0));
  out->step = in->step + 1;
  out->flags = out->step >= qins_stage_opt_int(st, "max_tokens") ? QINS_MSG_END : 0;
  return 1;
}

const qins_stage_type qins_stage_test_sample = {
    .name = "test_sample",
    .summary = "tests: f32 rows -> next id (a..z); ends after max_tokens",
    .options = opts,
    .in_port = "f32[T,*]",
    .out_port = "i32[T]",
    .forward = fwd,
};
