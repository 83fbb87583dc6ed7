/* cpu codec ops: calibrate, quantize, dequantize over rows, built on core/qins_codec.h. */
#include "core/cpu/cpu_ops.h"
#include "core/error.h"
#include "core/qins_codec.h"

typedef struct {
  const float *x;     /* f32 side (input of calibrate/quantize, output of dequantize) */
  float *y;
  void *codes;        /* coded side */
  const void *ccodes;
  float *scales;      /* alpha or steps */
  qins_dtype fmt;
  qins_alpha_spec spec;
  int64_t cols;
} codec_job;

static void calibrate_rows(void *user, int64_t r0, int64_t r1) {
  const codec_job *j = user;
  for (int64_t r = r0; r < r1; r++) j->scales[r] = qins_codec_calibrate_row(j->x + r * j->cols, j->cols, j->fmt, j->spec);
}

/* Rows are independent in every format, so each chunk runs the host-array reference on its rows. */
static void quantize_rows(void *user, int64_t r0, int64_t r1) {
  const codec_job *j = user;
  size_t rb = qins_format_row_bytes(j->fmt, j->cols);
  int64_t nsc = qins_format_scale_count(j->fmt, 1, j->cols);
  int qins = qins_dtype_is_qins(j->fmt);
  qins_codec_encode(j->fmt, j->x + r0 * j->cols, r1 - r0, j->cols, qins ? j->scales + r0 : NULL,
                    (char *)j->codes + (size_t)r0 * rb, qins ? NULL : j->scales ? j->scales + r0 * nsc : NULL);
}

static void dequantize_rows(void *user, int64_t r0, int64_t r1) {
  const codec_job *j = user;
  size_t rb = qins_format_row_bytes(j->fmt, j->cols);
  int64_t nsc = qins_format_scale_count(j->fmt, 1, j->cols);
  qins_codec_decode(j->fmt, (const char *)j->ccodes + (size_t)r0 * rb, r1 - r0, j->cols,
                    j->scales ? j->scales + r0 * nsc : NULL, j->y + r0 * j->cols);
}

/* Rows per chunk: enough elements that a thread hand-off is worth it. */
static int64_t min_rows(int64_t cols, int64_t per) {
  int64_t m = cols > 0 ? per / cols : per;
  return m < 1 ? 1 : m;
}

int cpu_calibrate(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec, qins_tensor *alpha) {
  codec_job j = {.x = qins_tensor_host(x), .scales = qins_tensor_host(alpha), .fmt = format, .spec = spec,
                 .cols = qins_tensor_cols(x)};
  /* mse evaluates ~60 encodes per row: worth splitting much smaller rows */
  cpu_parallel(be, qins_tensor_rows(x), min_rows(j.cols, spec.mode == QINS_ALPHA_MSE ? 512 : 32768), calibrate_rows,
               &j);
  return 0;
}

int cpu_quantize(qins_backend *be, const qins_tensor *x, qins_tensor *dst) {
  codec_job j = {.x = qins_tensor_host(x), .codes = qins_tensor_host(dst), .fmt = dst->dtype, .cols = qins_tensor_cols(x),
                 .scales = dst->scale ? qins_tensor_host(dst->scale) : NULL};
  cpu_parallel(be, qins_tensor_rows(x), min_rows(j.cols, 16384), quantize_rows, &j);
  return 0;
}

int cpu_dequantize(qins_backend *be, const qins_tensor *src, qins_tensor *y) {
  codec_job j = {.y = qins_tensor_host(y), .ccodes = qins_tensor_host(src), .fmt = src->dtype, .cols = qins_tensor_cols(y),
                 .scales = src->scale ? qins_tensor_host(src->scale) : NULL};
  cpu_parallel(be, qins_tensor_rows(y), min_rows(j.cols, 16384), dequantize_rows, &j);
  return 0;
}
