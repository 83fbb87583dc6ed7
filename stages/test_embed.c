/* Stage type `test_embed` (tests only): ids -> deterministic f32 rows, an embedding stand-in. */
#include <stdio.h>

#include "core/error.h"
#include "stages/stage.h"

static const qins_opt_spec opts[] = {
    {"dim", QINS_OPT_INT, "8", 1, 1 << 20, "row width"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static int ports(const qins_cfg *o, const struct qins_pipeline *pl, char *in, char *out) {
  (void)pl;
  const qins_cfg *d = qins_cfg_get(o, "dim");
  snprintf(out, QINS_PORT_MAX, "f32[T,%s]", d ? d->value : "8");
  snprintf(in, QINS_PORT_MAX, "i32[T]");
  return 0;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  int64_t dim = qins_stage_opt_int(st, "dim");
  if (in->dtype != QINS_DT_I32 || in->ndim != 1)
    return qins_error_set(QINS_EINPUT, "test_embed: expected i32[T] input");
  int64_t shape[2] = {in->shape[0], dim};
  float *y = qins_msg_output(out, in, QINS_DT_F32, 2, shape);
  if (!y) return QINS_ENOMEM;
  const int32_t *ids = in->data;
  for (int64_t t = 0; t < shape[0]; t++)
    for (int64_t j = 0; j < dim; j++) y[t * dim + j] = (float)((ids[t] * (j + 3) + t) % 17) / 16.0f;
  return 1;
}

const qins_stage_type qins_stage_test_embed = {
    .name = "test_embed",
    .summary = "tests: i32 ids -> f32 rows of width dim",
    .options = opts,
    .in_port = "i32[T]",
    .out_port = "f32[T,dim]",
    .ports = ports,
    .forward = fwd,
};
