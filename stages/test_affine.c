/* Stage type `test_affine` (tests only): y = x * scale + bias, optionally slow; a layer stand-in. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "stages/stage.h"

static const qins_opt_spec opts[] = {
    {"dim", QINS_OPT_INT, "8", 1, 1 << 20, "row width"},
    {"scale", QINS_OPT_FLOAT, "1", 1, 0, "multiplier"},
    {"bias", QINS_OPT_FLOAT, "0", 1, 0, "added after scaling"},
    {"delay_us", QINS_OPT_INT, "0", 0, 10000000, "sleep per message (simulates work)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static int ports(const qins_cfg *o, const struct qins_pipeline *pl, char *in, char *out) {
  (void)pl;
  const qins_cfg *d = qins_cfg_get(o, "dim");
  snprintf(in, QINS_PORT_MAX, "f32[T,%s]", d ? d->value : "8");
  snprintf(out, QINS_PORT_MAX, "f32[T,%s]", d ? d->value : "8");
  return 0;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  int64_t dim = qins_stage_opt_int(st, "dim");
  if (in->dtype != QINS_DT_F32 || in->ndim != 2 || in->shape[1] != dim)
    return qins_error_set(QINS_EINPUT, "test_affine %s: expected f32[T,%lld] input", st->ctx.stage_name, (long long)dim);
  float a = (float)qins_stage_opt_float(st, "scale"), b = (float)qins_stage_opt_float(st, "bias");
  long long us = qins_stage_opt_int(st, "delay_us");
  if (us > 0) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
  }
  float *y = qins_msg_output(out, in, QINS_DT_F32, 2, in->shape);
  if (!y) return QINS_ENOMEM;
  const float *x = in->data;
  for (int64_t i = 0; i < in->shape[0] * dim; i++) y[i] = x[i] * a + b;
  return 1;
}

const qins_stage_type qins_stage_test_affine = {
    .name = "test_affine",
    .summary = "tests: y = x*scale + bias (optional delay)",
    .options = opts,
    .in_port = "f32[T,dim]",
    .out_port = "f32[T,dim]",
    .ports = ports,
    .forward = fwd,
};
