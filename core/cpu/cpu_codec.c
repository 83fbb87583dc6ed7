/* cpu codec ops: calibrate, quantize, dequantize over rows, built on core/qins_codec.h. */
#include "core/cpu/cpu_ops.h"
#include "core/error.h"

int cpu_calibrate(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec, qins_tensor *alpha) {
  return qins_error_set(QINS_EUNSUPPORTED, "calibrate: not implemented yet");
}

int cpu_quantize(qins_backend *be, const qins_tensor *x, qins_tensor *dst) {
  return qins_error_set(QINS_EUNSUPPORTED, "quantize: not implemented yet");
}

int cpu_dequantize(qins_backend *be, const qins_tensor *src, qins_tensor *y) {
  return qins_error_set(QINS_EUNSUPPORTED, "dequantize: not implemented yet");
}
