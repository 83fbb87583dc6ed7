/* cpu backend: sum of squares of a gradient (qins_op_sumsq) for device-side gradient norms. */
#include "core/backend_grad.h"
#include "core/cpu/cpu_grad.h"

/* One thread, double, element order: the very sum the host optimizer takes (optim.c param_sq),
 * so a trainer that reads norms through this op steps bit for bit like one that reads g. */
int cpu_sumsq(qins_backend *be, const qins_tensor *x, qins_tensor *out, int64_t index) {
  (void)be;
  const float *g = qins_tensor_host(x);
  float *o = qins_tensor_host(out);
  int64_t n = qins_tensor_numel(x);
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
  qins_sumsq_split(s, o + 3 * index);
  return 0;
}
