/* Validating wrappers for the backward ops and cross-entropy (core/backend_grad.h): shapes and
 * dtypes are checked here once, with tensor names in the message, then the backend is called. */
#include "core/backend_grad.h"
#include "core/backend_check.h"

#include <math.h>

#include "core/error.h"


/* A placed f32 tensor with n elements. */
static int f32_n(const char *op, qins_backend *be, const qins_tensor *t, int64_t n) {
  DESC_DECL;
  RET_IF(PLACED(op, t));
  if (t->dtype != QINS_DT_F32) return qins_error_set(QINS_EINVAL, "%s: tensor %s must be f32", op, DESC(t));
  if (n >= 0 && qins_tensor_numel(t) != n)
    return qins_error_set(QINS_EINVAL, "%s: tensor %s must have %lld elements", op, DESC(t), (long long)n);
  return 0;
}

static int f32_like(const char *op, qins_backend *be, const qins_tensor *t, const qins_tensor *like) {
  return f32_n(op, be, t, qins_tensor_numel(like));
}


int qins_op_matmul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                            qins_tensor *dx, qins_tensor *dw, qins_tensor *dbias) {
  const char *op = "matmul_backward";
  DESC_DECL;
  RET_IF(PLACED(op, w));
  if (w->ndim != 2) return qins_error_set(QINS_EINVAL, "%s: weight %s must be 2-D [N,K]", op, DESC(w));
  if (qins_dtype_is_quantized(w->dtype)) {
    if (!w->scale) return qins_error_set(QINS_EINVAL, "%s: quantized weight %s has no scales", op, DESC(w));
    RET_IF(PLACED(op, w->scale));
  } else if (w->dtype != QINS_DT_F32 && w->dtype != QINS_DT_F16 && w->dtype != QINS_DT_BF16) {
    return qins_error_set(QINS_EINVAL, "%s: weight %s must be f32, f16, bf16 or quantized", op, DESC(w));
  }
  int64_t n = w->shape[0], k = w->shape[1];
  RET_IF(f32_n(op, be, dy, -1));
  RET_IF(f32_n(op, be, x, -1));
  int64_t m = qins_tensor_rows(x);
  if (qins_tensor_cols(x) != k)
    return qins_error_set(QINS_EINVAL, "%s: input %s does not match weight %s (K=%lld)", op, DESC(x), DESC(w),
                          (long long)k);
  if (qins_tensor_cols(dy) != n || qins_tensor_rows(dy) != m)
    return qins_error_set(QINS_EINVAL, "%s: output gradient %s must be [%lld,%lld]", op, DESC(dy), (long long)m,
                          (long long)n);
  if (dx) RET_IF(f32_like(op, be, dx, x));
  if (dw) RET_IF(f32_n(op, be, dw, n * k));
  if (dbias) RET_IF(f32_n(op, be, dbias, n));
  DISPATCH(QINS_OP_MATMUL_BACKWARD, matmul_backward, dy, x, w, dx, dw, dbias);
}

int qins_op_add_backward(qins_backend *be, const qins_tensor *dy, qins_tensor *db) {
  const char *op = "add_backward";
  RET_IF(f32_n(op, be, dy, -1));
  RET_IF(f32_n(op, be, db, qins_tensor_cols(dy)));
  DISPATCH(QINS_OP_ADD_BACKWARD, add_backward, dy, db);
}

int qins_op_mul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *a, const qins_tensor *b,
                         qins_tensor *da, qins_tensor *db) {
  const char *op = "mul_backward";
  DESC_DECL;
  RET_IF(f32_n(op, be, a, -1));
  RET_IF(f32_like(op, be, dy, a));
  RET_IF(f32_n(op, be, b, -1));
  /* the shape decides between activation (same shape) and broadcast row (parameter) */
  if (!qins_tensor_same_shape(a, b) && qins_tensor_numel(b) != qins_tensor_cols(a))
    return qins_error_set(QINS_EINVAL, "%s: %s must have the shape of %s or be one of its rows", op, DESC(b), DESC(a));
  if (da) RET_IF(f32_like(op, be, da, a));
  if (db) RET_IF(f32_like(op, be, db, b));
  DISPATCH(QINS_OP_MUL_BACKWARD, mul_backward, dy, a, b, da, db);
}

static int check_norm_grad(const char *op, qins_backend *be, const qins_tensor *dy, const qins_tensor *x,
                           const qins_tensor *w, const qins_tensor *dx, const qins_tensor *dw, const qins_tensor *db) {
  RET_IF(f32_n(op, be, x, -1));
  int64_t d = qins_tensor_cols(x);
  RET_IF(f32_like(op, be, dy, x));
  RET_IF(f32_n(op, be, w, d));
  RET_IF(f32_like(op, be, dx, x));
  if (dw) RET_IF(f32_n(op, be, dw, d));
  if (db) RET_IF(f32_n(op, be, db, d));
  return 0;
}

int qins_op_rmsnorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                             float eps, qins_tensor *dx, qins_tensor *dw) {
  RET_IF(check_norm_grad("rmsnorm_backward", be, dy, x, w, dx, dw, NULL));
  DISPATCH(QINS_OP_RMSNORM_BACKWARD, rmsnorm_backward, dy, x, w, eps, dx, dw);
}

int qins_op_layernorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                               float eps, qins_tensor *dx, qins_tensor *dw, qins_tensor *db) {
  RET_IF(check_norm_grad("layernorm_backward", be, dy, x, w, dx, dw, db));
  DISPATCH(QINS_OP_LAYERNORM_BACKWARD, layernorm_backward, dy, x, w, eps, dx, dw, db);
}

int qins_op_rope_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *pos,
                          const qins_tensor *inv_freq, int rot_dim, float attn_factor, qins_rope_mode mode,
                          qins_tensor *dx) {
  const char *op = "rope_backward";
  DESC_DECL;
  RET_IF(f32_n(op, be, dy, -1));
  if (dy->ndim != 3) return qins_error_set(QINS_EINVAL, "%s: %s must be [M,H,D]", op, DESC(dy));
  if (rot_dim < 2 || rot_dim % 2 || rot_dim > dy->shape[2])
    return qins_error_set(QINS_EINVAL, "%s: rot_dim %d must be even and at most D of %s", op, rot_dim, DESC(dy));
  RET_IF(PLACED(op, pos));
  if (pos->dtype != QINS_DT_I32 || qins_tensor_numel(pos) != dy->shape[0])
    return qins_error_set(QINS_EINVAL, "%s: positions %s must be i32 [%lld]", op, DESC(pos), (long long)dy->shape[0]);
  RET_IF(f32_n(op, be, inv_freq, rot_dim / 2));
  RET_IF(f32_like(op, be, dx, dy));
  if (mode != QINS_ROPE_INTERLEAVED && mode != QINS_ROPE_HALF) return qins_error_set(QINS_EINVAL, "%s: bad mode", op);
  DISPATCH(QINS_OP_ROPE_BACKWARD, rope_backward, dy, pos, inv_freq, rot_dim, attn_factor, mode, dx);
}

int qins_op_softmax_backward(qins_backend *be, const qins_tensor *y, const qins_tensor *dy, qins_tensor *dx) {
  const char *op = "softmax_backward";
  RET_IF(f32_n(op, be, y, -1));
  RET_IF(f32_like(op, be, dy, y));
  RET_IF(f32_like(op, be, dx, y));
  DISPATCH(QINS_OP_SOFTMAX_BACKWARD, softmax_backward, y, dy, dx);
}

static int check_unary_grad(const char *op, qins_backend *be, const qins_tensor *x, const qins_tensor *dy,
                            const qins_tensor *dx) {
  RET_IF(f32_n(op, be, x, -1));
  RET_IF(f32_like(op, be, dy, x));
  return f32_like(op, be, dx, x);
}

int qins_op_silu_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx) {
  RET_IF(check_unary_grad("silu_backward", be, x, dy, dx));
  DISPATCH(QINS_OP_SILU_BACKWARD, silu_backward, x, dy, dx);
}

int qins_op_gelu_tanh_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx) {
  RET_IF(check_unary_grad("gelu_tanh_backward", be, x, dy, dx));
  DISPATCH(QINS_OP_GELU_TANH_BACKWARD, gelu_tanh_backward, x, dy, dx);
}

int qins_op_silu_mul_backward(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, const qins_tensor *dy,
                              qins_tensor *dgate, qins_tensor *dup) {
  const char *op = "silu_mul_backward";
  RET_IF(f32_n(op, be, gate, -1));
  RET_IF(f32_like(op, be, up, gate));
  RET_IF(f32_like(op, be, dy, gate));
  if (dgate) RET_IF(f32_like(op, be, dgate, gate));
  if (dup) RET_IF(f32_like(op, be, dup, gate));
  DISPATCH(QINS_OP_SILU_MUL_BACKWARD, silu_mul_backward, gate, up, dy, dgate, dup);
}

int qins_op_embed_backward(qins_backend *be, const qins_tensor *ids, const qins_tensor *dy, qins_tensor *dtable) {
  const char *op = "embed_backward";
  DESC_DECL;
  RET_IF(PLACED(op, ids));
  if (ids->dtype != QINS_DT_I32) return qins_error_set(QINS_EINVAL, "%s: ids %s must be i32", op, DESC(ids));
  RET_IF(f32_n(op, be, dtable, -1));
  if (dtable->ndim != 2) return qins_error_set(QINS_EINVAL, "%s: table gradient %s must be [V,D]", op, DESC(dtable));
  RET_IF(f32_n(op, be, dy, qins_tensor_numel(ids) * dtable->shape[1]));
  DISPATCH(QINS_OP_EMBED_BACKWARD, embed_backward, ids, dy, dtable);
}

int qins_op_attention_backward(qins_backend *be, const qins_tensor *q, const qins_tensor *k, const qins_tensor *v,
                               int64_t pos0, float scale, const qins_tensor *dout, qins_tensor *dq, qins_tensor *dk,
                               qins_tensor *dv) {
  const char *op = "attention_backward";
  DESC_DECL;
  RET_IF(f32_n(op, be, q, -1)); RET_IF(f32_n(op, be, k, -1)); RET_IF(f32_n(op, be, v, -1));
  if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3)
    return qins_error_set(QINS_EINVAL, "%s: q %s, k %s and v %s must be 3-D", op, DESC(q), DESC(k), DESC(v));
  int64_t m = q->shape[0], hq = q->shape[1], d = q->shape[2];
  int64_t t = k->shape[0], hkv = k->shape[1];
  if (!qins_tensor_same_shape(k, v) || k->shape[2] != d)
    return qins_error_set(QINS_EINVAL, "%s: k %s and v %s must both be [T,Hkv,%lld]", op, DESC(k), DESC(v),
                          (long long)d);
  if (hkv < 1 || hq % hkv)
    return qins_error_set(QINS_EINVAL, "%s: %lld query heads not a multiple of %lld KV heads", op, (long long)hq,
                          (long long)hkv);
  if (pos0 < 0 || pos0 + m > t)
    return qins_error_set(QINS_EINVAL, "%s: positions %lld..%lld outside the cache of %lld", op, (long long)pos0,
                          (long long)(pos0 + m - 1), (long long)t);
  RET_IF(f32_like(op, be, dout, q)); RET_IF(f32_like(op, be, dq, q));
  RET_IF(f32_like(op, be, dk, k)); RET_IF(f32_like(op, be, dv, v));
  DISPATCH(QINS_OP_ATTENTION_BACKWARD, attention_backward, q, k, v, pos0, scale, dout, dq, dk, dv);
}

int qins_op_cross_entropy(qins_backend *be, const qins_tensor *logits, const qins_tensor *targets, qins_tensor *loss,
                          qins_tensor *dlogits, float scale) {
  const char *op = "cross_entropy";
  DESC_DECL;
  RET_IF(f32_n(op, be, logits, -1));
  int64_t m = qins_tensor_rows(logits);
  RET_IF(PLACED(op, targets));
  if (targets->dtype != QINS_DT_I32 || qins_tensor_numel(targets) != m)
    return qins_error_set(QINS_EINVAL, "%s: targets %s must be i32 [%lld]", op, DESC(targets), (long long)m);
  RET_IF(f32_n(op, be, loss, m));
  if (dlogits) RET_IF(f32_like(op, be, dlogits, logits));
  if (!isfinite(scale) || scale < 0.0f)
    return qins_error_set(QINS_EINVAL, "%s: scale %g must be finite and >= 0", op, (double)scale);
  DISPATCH(QINS_OP_CROSS_ENTROPY, cross_entropy, logits, targets, loss, dlogits, scale);
}

qins_adamw_step_args qins_adamw_step_args_make(float lr, float beta1, float beta2, float eps, float weight_decay,
                                               int64_t t, float gmul) {
  qins_adamw_step_args a;
  /* PyTorch: bias corrections and step size as Python floats (double), element math in f32 */
  double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
  a.step_size = (float)((double)lr / bc1);
  a.bc2_sqrt = (float)sqrt(bc2);
  a.decay = (float)(1.0 - (double)lr * (double)weight_decay);
  a.do_decay = weight_decay > 0;
  a.w1 = (float)(1.0 - (double)beta1);
  a.w2 = (float)(1.0 - (double)beta2);
  a.beta2 = beta2;
  a.eps = eps;
  a.gmul = gmul;
  return a;
}

int qins_op_adamw_step(qins_backend *be, qins_tensor *w, const qins_tensor *g, qins_tensor *m, qins_tensor *v,
                       const qins_adamw_step_args *a) {
  const char *op = "adamw_step";
  if (!a) return qins_error_set(QINS_EINVAL, "%s: no step arguments", op);
  RET_IF(f32_n(op, be, w, -1));
  RET_IF(f32_like(op, be, g, w));
  RET_IF(f32_like(op, be, m, w));
  RET_IF(f32_like(op, be, v, w));
  DISPATCH(QINS_OP_ADAMW_STEP, adamw_step, w, g, m, v, a);
}

void qins_sumsq_split(double s, float *slot3) {
  /* s - hi and r - mid are exact in double (they hold the bits below the float's 24), so three
   * floats carry all 53 bits of a normal double */
  float hi = (float)s;
  if (!isfinite(hi)) {
    slot3[0] = isfinite(s) ? (float)INFINITY : hi;
    slot3[1] = slot3[2] = 0.0f;
    return;
  }
  double r = s - (double)hi;
  float mid = (float)r;
  slot3[0] = hi;
  slot3[1] = mid;
  slot3[2] = (float)(r - (double)mid);
}

double qins_sumsq_value(const float *slot3) {
  return ((double)slot3[0] + (double)slot3[1]) + (double)slot3[2];
}

int qins_op_sumsq(qins_backend *be, const qins_tensor *x, qins_tensor *out, int64_t index) {
  const char *op = "sumsq";
  RET_IF(f32_n(op, be, x, -1));
  RET_IF(f32_n(op, be, out, -1));
  if (index < 0 || qins_tensor_numel(out) < 3 * (index + 1)) {
    DESC_DECL;
    return qins_error_set(QINS_EINVAL, "%s: slot %lld does not fit in %s (3 floats per slot)", op, (long long)index,
                          DESC(out));
  }
  DISPATCH(QINS_OP_SUMSQ, sumsq, x, out, index);
}
