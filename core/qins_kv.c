/* KV-cache helpers for QINS: appending V rows to an f32 or qins8 cache through tensor views. */
#include "core/qins_kv.h"

#include "core/error.h"

int qins_kv_append_v(qins_backend *be, const qins_tensor *v, qins_tensor *v_cache, int64_t pos, qins_alpha_spec spec) {
  char d1[192], d2[192];
  if (v->ndim != 3 || v_cache->ndim != 3 || v->shape[1] != v_cache->shape[1] || v->shape[2] != v_cache->shape[2])
    return qins_error_set(QINS_EINVAL, "kv append: values %s must be [M,Hkv,D] of the cache %s",
                          qins_tensor_describe(v, d1, sizeof d1), qins_tensor_describe(v_cache, d2, sizeof d2));
  int64_t m = v->shape[0], hkv = v->shape[1], d = v->shape[2];
  if (pos < 0 || pos + m > v_cache->shape[0])
    return qins_error_set(QINS_EINVAL, "kv append: positions %lld..%lld outside the cache %s", (long long)pos,
                          (long long)(pos + m - 1), qins_tensor_describe(v_cache, d2, sizeof d2));
  if (v_cache->dtype != QINS_DT_F32 && v_cache->dtype != QINS_DT_QINS8)
    return qins_error_set(QINS_EINVAL, "kv append: V cache %s must be f32 or qins8",
                          qins_tensor_describe(v_cache, d2, sizeof d2));
  if (v_cache->dtype == QINS_DT_QINS8 &&
      (!v_cache->scale || qins_tensor_numel(v_cache->scale) != v_cache->shape[0] * hkv))
    return qins_error_set(QINS_EINVAL, "kv append: qins8 V cache %s needs %lld alphas (one per token and head)",
                          qins_tensor_describe(v_cache, d2, sizeof d2), (long long)(v_cache->shape[0] * hkv));
  /* views: the new rows as [M*Hkv, D] (one alpha per row), their slice of the cache and of alpha */
  int64_t rows = m * hkv;
  int64_t shape2[2] = {rows, d};
  qins_tensor x = *v;
  x.ndim = 2;
  x.shape[0] = rows;
  x.shape[1] = d;
  qins_tensor dst = *v_cache;
  int rc = qins_tensor_init(&dst, v_cache->name, v_cache->dtype, 2, shape2);
  if (rc) return rc;
  dst.buf = v_cache->buf;
  dst.offset = v_cache->offset + (size_t)pos * (size_t)hkv * qins_format_row_bytes(v_cache->dtype, d);
  if (v_cache->dtype == QINS_DT_F32) return qins_op_copy(be, &x, &dst);
  qins_tensor alpha = *v_cache->scale;
  int64_t shape1[1] = {rows};
  rc = qins_tensor_init(&alpha, v_cache->scale->name, QINS_DT_F32, 1, shape1);
  if (rc) return rc;
  alpha.buf = v_cache->scale->buf;
  alpha.offset = v_cache->scale->offset + (size_t)pos * (size_t)hkv * sizeof(float);
  alpha.scale = NULL;
  dst.scale = &alpha;
  rc = qins_op_calibrate(be, &x, QINS_DT_QINS8, spec, &alpha);
  if (rc) return rc;
  return qins_op_quantize(be, &x, &dst);
}
