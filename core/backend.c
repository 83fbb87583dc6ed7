/* Backend selection, buffer helpers, and the qins_op_* wrappers that validate before dispatch. */
#include "core/backend.h"
#include "core/backend_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/log.h"

static const char *op_names[QINS_OP_COUNT] = {
    "matmul", "add", "mul", "rmsnorm", "layernorm", "rope", "softmax", "silu", "gelu_tanh", "silu_mul",
    "embed", "attention", "argmax", "topk", "copy", "cast", "calibrate", "quantize", "dequantize",
    "matmul_backward", "add_backward", "mul_backward", "rmsnorm_backward", "layernorm_backward", "rope_backward",
    "softmax_backward", "silu_backward", "gelu_tanh_backward", "silu_mul_backward", "embed_backward",
    "attention_backward", "cross_entropy", "adamw_step", "sumsq",
};

const char *qins_op_name(qins_op_kind op) { return (unsigned)op < QINS_OP_COUNT ? op_names[op] : "?"; }

/* ---------------------------------------------------------------- selection */

int qins_backend_create(const char *spec, qins_backend **out) {
  *out = NULL;
  if (!spec || !*spec) spec = "auto";
  if (strcmp(spec, "cpu") == 0 || strncmp(spec, "cpu:", 4) == 0) {
    int threads = 0;
    if (spec[3] == ':') {
      char *end;
      long t = strtol(spec + 4, &end, 10);
      if (*end || t < 1 || t > 1024)
        return qins_error_set(QINS_EINVAL, "backend '%s': thread count must be 1..1024", spec);
      threads = (int)t;
    }
    return qins_cpu_backend_create(threads, out);
  }
  if (strcmp(spec, "vk") == 0 || strncmp(spec, "vk:", 3) == 0) {
#ifdef QINS_HAVE_VULKAN
    int index = -1;
    if (spec[2] == ':') {
      char *end;
      long n = strtol(spec + 3, &end, 10);
      if (*end || n < 0 || n > 64) return qins_error_set(QINS_EINVAL, "backend '%s': bad device index", spec);
      index = (int)n;
    }
    return qins_vk_backend_create(index, 0, out);
#else
    return qins_error_set(QINS_EUNSUPPORTED, "backend '%s': this build has no Vulkan support", spec);
#endif
  }
  if (strcmp(spec, "auto") == 0) {
#ifdef QINS_HAVE_VULKAN
    if (qins_vk_backend_create(-1, 1, out) == 0) return 0;
    QINS_DEBUG("auto backend: no Vulkan GPU (%s); using cpu", qins_error_msg());
#endif
    return qins_cpu_backend_create(0, out);
  }
  return qins_error_set(QINS_EINVAL, "unknown backend '%s' (expected cpu, cpu:T, vk, vk:N or auto)", spec);
}

void qins_backend_destroy(qins_backend *be) {
  if (be) be->ops->destroy(be);
}

int qins_backend_sync(qins_backend *be) { return be->ops->sync(be); }

qins_qmatmul_path qins_backend_set_qmatmul_path(qins_backend *be, qins_qmatmul_path path) {
  qins_qmatmul_path old = be->qmatmul_path;
  be->qmatmul_path = path == QINS_QMATMUL_UNFUSED ? QINS_QMATMUL_UNFUSED : QINS_QMATMUL_FUSED;
  return old;
}

qins_qmatmul_path qins_qmatmul_path_default(void) {
  const char *env = getenv("QINS_MATMUL_UNFUSED");
  return env && env[0] && strcmp(env, "0") != 0 ? QINS_QMATMUL_UNFUSED : QINS_QMATMUL_FUSED;
}

int qins_backend_list(char names[][64], int max) {
  int n = 0;
  if (n < max) snprintf(names[n++], 64, "cpu");
#ifdef QINS_HAVE_VULKAN
  int count = qins_vk_device_count();
  for (int i = 0; i < count && n < max; i++) snprintf(names[n++], 64, "vk:%d", i);
#endif
  return n;
}

/* ---------------------------------------------------------------- buffers */

int qins_buf_alloc(qins_backend *be, size_t bytes, qins_buf **out) { return be->ops->buf_alloc(be, bytes, out); }
int qins_buf_wrap(qins_backend *be, void *host, size_t bytes, qins_buf **out) {
  return be->ops->buf_wrap(be, host, bytes, out);
}
void qins_buf_free(qins_buf *buf) {
  if (buf) buf->be->ops->buf_free(buf->be, buf);
}

int qins_buf_write(qins_buf *buf, size_t offset, const void *src, size_t bytes) {
  if (offset > buf->size || bytes > buf->size - offset)
    return qins_error_set(QINS_EINVAL, "buffer write of %zu bytes at %zu past its size %zu", bytes, offset, buf->size);
  return buf->be->ops->buf_write(buf->be, buf, offset, src, bytes);
}

int qins_buf_read(qins_buf *buf, size_t offset, void *dst, size_t bytes) {
  if (offset > buf->size || bytes > buf->size - offset)
    return qins_error_set(QINS_EINVAL, "buffer read of %zu bytes at %zu past its size %zu", bytes, offset, buf->size);
  return buf->be->ops->buf_read(buf->be, buf, offset, dst, bytes);
}

int qins_tensor_alloc(qins_backend *be, qins_tensor *t) {
  int rc = qins_buf_alloc(be, qins_tensor_nbytes(t), &t->buf);
  if (rc) return qins_error_wrap(rc, "tensor %s: ", t->name);
  t->offset = 0;
  if (t->scale && !t->scale->buf) {
    rc = qins_tensor_alloc(be, t->scale);
    if (rc) {
      qins_buf_free(t->buf);
      t->buf = NULL;
      return rc;
    }
  }
  return 0;
}

void qins_tensor_free(qins_tensor *t) {
  if (t->scale) qins_tensor_free(t->scale);
  qins_buf_free(t->buf);
  t->buf = NULL;
}

int qins_tensor_write(qins_tensor *t, const void *src) {
  return qins_buf_write(t->buf, t->offset, src, qins_tensor_nbytes(t));
}

int qins_tensor_read(const qins_tensor *t, void *dst) {
  return qins_buf_read(t->buf, t->offset, dst, qins_tensor_nbytes(t));
}

/* ---------------------------------------------------------------- validation helpers */

int qins_backend_check_placed(const char *op, const qins_tensor *t, qins_backend *be) {
  DESC_DECL;
  if (!t->buf) return qins_error_set(QINS_EINVAL, "%s: tensor %s has no buffer", op, DESC(t));
  if (t->buf->be != be)
    return qins_error_set(QINS_EINVAL, "%s: tensor %s lives on backend %s, not %s", op, DESC(t), t->buf->be->name,
                          be->name);
  if (t->offset > t->buf->size || qins_tensor_nbytes(t) > t->buf->size - t->offset)
    return qins_error_set(QINS_EINVAL, "%s: tensor %s (offset %zu) runs past its buffer of %zu bytes", op, DESC(t),
                          t->offset, t->buf->size);
  return 0;
}

static int want_dtype(const char *op, const qins_tensor *t, qins_dtype dt) {
  DESC_DECL;
  if (t->dtype != dt)
    return qins_error_set(QINS_EINVAL, "%s: tensor %s must be %s", op, DESC(t), qins_dtype_name(dt));
  return 0;
}

static int want_float_weight(const char *op, const qins_tensor *t) {
  DESC_DECL;
  if (t->dtype != QINS_DT_F32 && t->dtype != QINS_DT_F16 && t->dtype != QINS_DT_BF16)
    return qins_error_set(QINS_EINVAL, "%s: tensor %s must be f32, f16 or bf16", op, DESC(t));
  return 0;
}

static int want_numel(const char *op, const qins_tensor *t, int64_t n) {
  DESC_DECL;
  if (qins_tensor_numel(t) != n)
    return qins_error_set(QINS_EINVAL, "%s: tensor %s must have %lld elements", op, DESC(t), (long long)n);
  return 0;
}

static int want_same_numel(const char *op, const qins_tensor *a, const qins_tensor *b) {
  DESC_DECL;
  if (qins_tensor_numel(a) != qins_tensor_numel(b))
    return qins_error_set(QINS_EINVAL, "%s: tensors %s and %s differ in element count", op, DESC(a), DESC(b));
  return 0;
}

uint64_t qins_backend_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int qins_backend_unsupported(qins_backend *be, qins_op_kind kind) {
  return qins_error_set(QINS_EUNSUPPORTED, "backend %s does not implement op %s", be->name, qins_op_name(kind));
}

int qins_op_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                   qins_tensor *y) {
  const char *op = "matmul";
  DESC_DECL;
  RET_IF(PLACED(op, x)); RET_IF(PLACED(op, w)); RET_IF(PLACED(op, y));
  RET_IF(want_dtype(op, x, QINS_DT_F32)); RET_IF(want_dtype(op, y, QINS_DT_F32));
  if (!qins_dtype_is_quantized(w->dtype)) RET_IF(want_float_weight(op, w));
  else if (!w->scale) return qins_error_set(QINS_EINVAL, "%s: quantized weight %s has no scales", op, DESC(w));
  if (w->ndim != 2) return qins_error_set(QINS_EINVAL, "%s: weight %s must be 2-D [N,K]", op, DESC(w));
  int64_t n = w->shape[0], k = w->shape[1];
  if (qins_tensor_cols(x) != k)
    return qins_error_set(QINS_EINVAL, "%s: input %s does not match weight %s (K=%lld)", op, DESC(x), DESC(w),
                          (long long)k);
  int64_t m = qins_tensor_rows(x);
  if (qins_tensor_cols(y) != n || qins_tensor_rows(y) != m)
    return qins_error_set(QINS_EINVAL, "%s: output %s must be [%lld,%lld]", op, DESC(y), (long long)m, (long long)n);
  if (bias) {
    RET_IF(PLACED(op, bias)); RET_IF(want_dtype(op, bias, QINS_DT_F32)); RET_IF(want_numel(op, bias, n));
  }
  DISPATCH(QINS_OP_MATMUL, matmul, x, w, bias, y);
}

static int check_binary(const char *op, qins_backend *be, const qins_tensor *a, const qins_tensor *b,
                        const qins_tensor *y) {
  DESC_DECL;
  RET_IF(PLACED(op, a)); RET_IF(PLACED(op, b)); RET_IF(PLACED(op, y));
  RET_IF(want_dtype(op, a, QINS_DT_F32)); RET_IF(want_dtype(op, b, QINS_DT_F32)); RET_IF(want_dtype(op, y, QINS_DT_F32));
  RET_IF(want_same_numel(op, a, y));
  int64_t nb = qins_tensor_numel(b);
  if (nb != qins_tensor_numel(a) && nb != qins_tensor_cols(a))
    return qins_error_set(QINS_EINVAL, "%s: %s must match %s or one of its rows", op, DESC(b), DESC(a));
  return 0;
}

int qins_op_add(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) {
  RET_IF(check_binary("add", be, a, b, y));
  DISPATCH(QINS_OP_ADD, add, a, b, y);
}

int qins_op_mul(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) {
  RET_IF(check_binary("mul", be, a, b, y));
  DISPATCH(QINS_OP_MUL, mul, a, b, y);
}

static int check_norm(const char *op, qins_backend *be, const qins_tensor *x, const qins_tensor *w,
                      const qins_tensor *b, const qins_tensor *y) {
  RET_IF(PLACED(op, x)); RET_IF(PLACED(op, w)); RET_IF(PLACED(op, y));
  RET_IF(want_dtype(op, x, QINS_DT_F32)); RET_IF(want_dtype(op, w, QINS_DT_F32)); RET_IF(want_dtype(op, y, QINS_DT_F32));
  RET_IF(want_numel(op, w, qins_tensor_cols(x)));
  RET_IF(want_same_numel(op, x, y));
  if (b) { RET_IF(PLACED(op, b)); RET_IF(want_dtype(op, b, QINS_DT_F32)); RET_IF(want_numel(op, b, qins_tensor_cols(x))); }
  return 0;
}

int qins_op_rmsnorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y) {
  RET_IF(check_norm("rmsnorm", be, x, w, NULL, y));
  DISPATCH(QINS_OP_RMSNORM, rmsnorm, x, w, eps, y);
}

int qins_op_layernorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b, float eps,
                      qins_tensor *y) {
  RET_IF(check_norm("layernorm", be, x, w, b, y));
  DISPATCH(QINS_OP_LAYERNORM, layernorm, x, w, b, eps, y);
}

int qins_op_rope(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq,
                 int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *y) {
  const char *op = "rope";
  DESC_DECL;
  RET_IF(PLACED(op, x)); RET_IF(PLACED(op, pos)); RET_IF(PLACED(op, inv_freq)); RET_IF(PLACED(op, y));
  RET_IF(want_dtype(op, x, QINS_DT_F32)); RET_IF(want_dtype(op, y, QINS_DT_F32));
  RET_IF(want_dtype(op, pos, QINS_DT_I32)); RET_IF(want_dtype(op, inv_freq, QINS_DT_F32));
  if (x->ndim != 3) return qins_error_set(QINS_EINVAL, "%s: %s must be [M,H,D]", op, DESC(x));
  if (rot_dim < 2 || rot_dim % 2 || rot_dim > x->shape[2])
    return qins_error_set(QINS_EINVAL, "%s: rot_dim %d must be even and at most D of %s", op, rot_dim, DESC(x));
  RET_IF(want_numel(op, pos, x->shape[0]));
  RET_IF(want_numel(op, inv_freq, rot_dim / 2));
  RET_IF(want_same_numel(op, x, y));
  if (mode != QINS_ROPE_INTERLEAVED && mode != QINS_ROPE_HALF) return qins_error_set(QINS_EINVAL, "%s: bad mode", op);
  DISPATCH(QINS_OP_ROPE, rope, x, pos, inv_freq, rot_dim, attn_factor, mode, y);
}

static int check_unary(const char *op, qins_backend *be, const qins_tensor *x, const qins_tensor *y) {
  RET_IF(PLACED(op, x)); RET_IF(PLACED(op, y));
  RET_IF(want_dtype(op, x, QINS_DT_F32)); RET_IF(want_dtype(op, y, QINS_DT_F32));
  return want_same_numel(op, x, y);
}

int qins_op_softmax(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  RET_IF(check_unary("softmax", be, x, y));
  DISPATCH(QINS_OP_SOFTMAX, softmax, x, y);
}

int qins_op_silu(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  RET_IF(check_unary("silu", be, x, y));
  DISPATCH(QINS_OP_SILU, silu, x, y);
}

int qins_op_gelu_tanh(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  RET_IF(check_unary("gelu_tanh", be, x, y));
  DISPATCH(QINS_OP_GELU_TANH, gelu_tanh, x, y);
}

int qins_op_silu_mul(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y) {
  RET_IF(check_unary("silu_mul", be, gate, y));
  RET_IF(check_unary("silu_mul", be, up, y));
  DISPATCH(QINS_OP_SILU_MUL, silu_mul, gate, up, y);
}

int qins_op_embed(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y) {
  const char *op = "embed";
  DESC_DECL;
  RET_IF(PLACED(op, table)); RET_IF(PLACED(op, ids)); RET_IF(PLACED(op, y));
  RET_IF(want_float_weight(op, table)); RET_IF(want_dtype(op, ids, QINS_DT_I32)); RET_IF(want_dtype(op, y, QINS_DT_F32));
  if (table->ndim != 2) return qins_error_set(QINS_EINVAL, "%s: table %s must be [V,D]", op, DESC(table));
  if (qins_tensor_cols(y) != table->shape[1] || qins_tensor_rows(y) != qins_tensor_numel(ids))
    return qins_error_set(QINS_EINVAL, "%s: output %s must be [%lld,%lld]", op, DESC(y),
                          (long long)qins_tensor_numel(ids), (long long)table->shape[1]);
  DISPATCH(QINS_OP_EMBED, embed, table, ids, y);
}

int qins_op_attention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                      int64_t pos0, float scale, qins_tensor *out) {
  const char *op = "attention";
  DESC_DECL;
  RET_IF(PLACED(op, q)); RET_IF(PLACED(op, k_cache)); RET_IF(PLACED(op, v_cache)); RET_IF(PLACED(op, out));
  RET_IF(want_dtype(op, q, QINS_DT_F32)); RET_IF(want_dtype(op, out, QINS_DT_F32));
  RET_IF(want_dtype(op, k_cache, QINS_DT_F32));
  if (v_cache->dtype != QINS_DT_F32 && !(v_cache->dtype == QINS_DT_QINS8 && v_cache->scale))
    return qins_error_set(QINS_EINVAL, "%s: V cache %s must be f32 (or qins8 with scales)", op, DESC(v_cache));
  if (q->ndim != 3 || k_cache->ndim != 3 || v_cache->ndim != 3)
    return qins_error_set(QINS_EINVAL, "%s: q %s and caches must be 3-D", op, DESC(q));
  int64_t m = q->shape[0], hq = q->shape[1], d = q->shape[2];
  int64_t t = k_cache->shape[0], hkv = k_cache->shape[1];
  if (!qins_tensor_same_shape(k_cache, v_cache) || k_cache->shape[2] != d)
    return qins_error_set(QINS_EINVAL, "%s: caches %s, %s must both be [T,Hkv,%lld]", op, DESC(k_cache), DESC(v_cache),
                          (long long)d);
  if (hkv < 1 || hq % hkv)
    return qins_error_set(QINS_EINVAL, "%s: %lld query heads not a multiple of %lld KV heads", op, (long long)hq,
                          (long long)hkv);
  if (pos0 < 0 || pos0 + m > t)
    return qins_error_set(QINS_EINVAL, "%s: positions %lld..%lld outside the cache of %lld", op, (long long)pos0,
                          (long long)(pos0 + m - 1), (long long)t);
  if (!qins_tensor_same_shape(q, out))
    return qins_error_set(QINS_EINVAL, "%s: output %s must have the shape of %s", op, DESC(out), DESC(q));
  DISPATCH(QINS_OP_ATTENTION, attention, q, k_cache, v_cache, pos0, scale, out);
}

int qins_op_argmax(qins_backend *be, const qins_tensor *x, qins_tensor *idx) {
  const char *op = "argmax";
  RET_IF(PLACED(op, x)); RET_IF(PLACED(op, idx));
  RET_IF(want_dtype(op, x, QINS_DT_F32)); RET_IF(want_dtype(op, idx, QINS_DT_I32));
  RET_IF(want_numel(op, idx, qins_tensor_rows(x)));
  DISPATCH(QINS_OP_ARGMAX, argmax, x, idx);
}

int qins_op_topk(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx) {
  const char *op = "topk";
  RET_IF(PLACED(op, x)); RET_IF(PLACED(op, values)); RET_IF(PLACED(op, idx));
  RET_IF(want_dtype(op, x, QINS_DT_F32)); RET_IF(want_dtype(op, values, QINS_DT_F32)); RET_IF(want_dtype(op, idx, QINS_DT_I32));
  if (k < 1 || k > qins_tensor_cols(x))
    return qins_error_set(QINS_EINVAL, "%s: k=%d outside 1..%lld", op, k, (long long)qins_tensor_cols(x));
  RET_IF(want_numel(op, values, qins_tensor_rows(x) * k)); RET_IF(want_numel(op, idx, qins_tensor_rows(x) * k));
  DISPATCH(QINS_OP_TOPK, topk, x, k, values, idx);
}

int qins_op_copy(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  const char *op = "copy";
  DESC_DECL;
  RET_IF(PLACED(op, src)); RET_IF(PLACED(op, dst));
  if (src->dtype != dst->dtype) return qins_error_set(QINS_EINVAL, "%s: %s and %s differ in dtype", op, DESC(src), DESC(dst));
  if (qins_tensor_nbytes(src) != qins_tensor_nbytes(dst))
    return qins_error_set(QINS_EINVAL, "%s: %s and %s differ in size", op, DESC(src), DESC(dst));
  DISPATCH(QINS_OP_COPY, copy, src, dst);
}

int qins_op_cast(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  const char *op = "cast";
  RET_IF(PLACED(op, src)); RET_IF(PLACED(op, dst));
  RET_IF(want_float_weight(op, src)); RET_IF(want_float_weight(op, dst)); RET_IF(want_same_numel(op, src, dst));
  DISPATCH(QINS_OP_CAST, cast, src, dst);
}

int qins_op_calibrate(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec,
                      qins_tensor *alpha) {
  const char *op = "calibrate";
  RET_IF(PLACED(op, x)); RET_IF(PLACED(op, alpha));
  RET_IF(want_dtype(op, x, QINS_DT_F32)); RET_IF(want_dtype(op, alpha, QINS_DT_F32));
  if (!qins_dtype_is_qins(format))
    return qins_error_set(QINS_EINVAL, "%s: format %s is not a QINS format", op, qins_dtype_name(format));
  RET_IF(want_numel(op, alpha, qins_tensor_rows(x)));
  if ((spec.mode == QINS_ALPHA_STD || spec.mode == QINS_ALPHA_FIXED) && !(spec.value > 0))
    return qins_error_set(QINS_EINVAL, "%s: alpha parameter must be > 0", op);
  DISPATCH(QINS_OP_CALIBRATE, calibrate, x, format, spec, alpha);
}

static int check_codec_pair(const char *op, qins_backend *be, const qins_tensor *plain, const qins_tensor *coded) {
  DESC_DECL;
  RET_IF(PLACED(op, plain)); RET_IF(PLACED(op, coded));
  RET_IF(want_dtype(op, plain, QINS_DT_F32));
  if (!qins_tensor_same_shape(plain, coded))
    return qins_error_set(QINS_EINVAL, "%s: %s and %s differ in shape", op, DESC(plain), DESC(coded));
  if (qins_dtype_is_quantized(coded->dtype)) {
    if (!coded->scale) return qins_error_set(QINS_EINVAL, "%s: %s has no scale tensor", op, DESC(coded));
    RET_IF(PLACED(op, coded->scale));
    RET_IF(want_dtype(op, coded->scale, QINS_DT_F32));
    RET_IF(want_numel(op, coded->scale,
                      qins_format_scale_count(coded->dtype, qins_tensor_rows(coded), qins_tensor_cols(coded))));
  } else if (coded->dtype != QINS_DT_F16 && coded->dtype != QINS_DT_BF16 && coded->dtype != QINS_DT_F32) {
    return qins_error_set(QINS_EINVAL, "%s: %s is not a storage format", op, DESC(coded));
  }
  return 0;
}

int qins_op_quantize(qins_backend *be, const qins_tensor *x, qins_tensor *dst) {
  RET_IF(check_codec_pair("quantize", be, x, dst));
  DISPATCH(QINS_OP_QUANTIZE, quantize, x, dst);
}

int qins_op_dequantize(qins_backend *be, const qins_tensor *src, qins_tensor *y) {
  RET_IF(check_codec_pair("dequantize", be, y, src));
  DISPATCH(QINS_OP_DEQUANTIZE, dequantize, src, y);
}

/* ---------------------------------------------------------------- alpha specs */

int qins_alpha_spec_parse(const char *text, qins_alpha_spec *out) {
  char *end;
  out->value = 0;
  if (strcmp(text, "mse") == 0) { out->mode = QINS_ALPHA_MSE; return 0; }
  if (strcmp(text, "absmax") == 0) { out->mode = QINS_ALPHA_ABSMAX; return 0; }
  if (strncmp(text, "std:", 4) == 0 || strncmp(text, "fixed:", 6) == 0) {
    out->mode = text[0] == 's' ? QINS_ALPHA_STD : QINS_ALPHA_FIXED;
    const char *num = strchr(text, ':') + 1;
    out->value = strtof(num, &end);
    if (end != num && !*end && out->value > 0) return 0;
  }
  return qins_error_set(QINS_EINPUT, "bad alpha mode '%s' (expected mse, absmax, std:C or fixed:V with C, V > 0)", text);
}

const char *qins_alpha_spec_format(qins_alpha_spec spec, char *buf, size_t n) {
  switch (spec.mode) {
  case QINS_ALPHA_MSE: snprintf(buf, n, "mse"); break;
  case QINS_ALPHA_ABSMAX: snprintf(buf, n, "absmax"); break;
  case QINS_ALPHA_STD: snprintf(buf, n, "std:%g", spec.value); break;
  case QINS_ALPHA_FIXED: snprintf(buf, n, "fixed:%g", spec.value); break;
  }
  return buf;
}
