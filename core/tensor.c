/* Tensor shapes, dtype names and sizes, and the half-precision conversions. */
#include "core/tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"

static const char *dtype_names[QINS_DT_COUNT] = {
    "f32", "f16", "bf16", "i8", "u8", "i32", "qins-f32", "qins8", "qins6", "int8-row", "int8-block32",
};

const char *qins_dtype_name(qins_dtype dt) {
  return (unsigned)dt < QINS_DT_COUNT ? dtype_names[dt] : "invalid";
}

int qins_dtype_parse(const char *name, qins_dtype *out) {
  for (int i = 0; i < QINS_DT_COUNT; i++) {
    if (strcmp(name, dtype_names[i]) == 0) {
      *out = (qins_dtype)i;
      return 0;
    }
  }
  return qins_error_set(QINS_EINPUT,
                        "unknown dtype '%s' (expected f32, f16, bf16, i8, u8, i32, qins-f32, qins8, "
                        "qins6, int8-row, int8-block32)",
                        name);
}

size_t qins_dtype_size(qins_dtype dt) {
  switch (dt) {
  case QINS_DT_F32: case QINS_DT_I32: return 4;
  case QINS_DT_F16: case QINS_DT_BF16: return 2;
  case QINS_DT_I8: case QINS_DT_U8: return 1;
  default: return 0;
  }
}

int qins_dtype_is_quantized(qins_dtype dt) { return dt >= QINS_DT_QINS_F32 && dt < QINS_DT_COUNT; }
int qins_dtype_is_qins(qins_dtype dt) { return dt >= QINS_DT_QINS_F32 && dt <= QINS_DT_QINS6; }

int qins_tensor_init(qins_tensor *t, const char *name, qins_dtype dt, int ndim, const int64_t *shape) {
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name ? name : "");
  if ((unsigned)dt >= QINS_DT_COUNT) return qins_error_set(QINS_EINVAL, "tensor %s: invalid dtype %d", t->name, dt);
  if (ndim < 1 || ndim > QINS_MAX_DIMS)
    return qins_error_set(QINS_EINVAL, "tensor %s: %d dimensions (1..%d allowed)", t->name, ndim, QINS_MAX_DIMS);
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return qins_error_set(QINS_EINVAL, "tensor %s: negative dimension %d", t->name, i);
    t->shape[i] = shape[i];
  }
  return 0;
}

int64_t qins_tensor_numel(const qins_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

int64_t qins_tensor_cols(const qins_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }

int64_t qins_tensor_rows(const qins_tensor *t) {
  int64_t cols = qins_tensor_cols(t);
  return cols ? qins_tensor_numel(t) / cols : 0;
}

size_t qins_format_row_bytes(qins_dtype dt, int64_t cols) {
  switch (dt) {
  case QINS_DT_QINS_F32: return (size_t)cols * 4;
  case QINS_DT_QINS8: case QINS_DT_INT8_ROW: case QINS_DT_INT8_B32: return (size_t)cols;
  case QINS_DT_QINS6: return (size_t)((cols + 3) / 4) * 3;
  default: return (size_t)cols * qins_dtype_size(dt);
  }
}

size_t qins_tensor_nbytes(const qins_tensor *t) {
  return qins_format_row_bytes(t->dtype, qins_tensor_cols(t)) * (size_t)qins_tensor_rows(t);
}

int64_t qins_format_scale_count(qins_dtype dt, int64_t rows, int64_t cols) {
  switch (dt) {
  case QINS_DT_QINS_F32: case QINS_DT_QINS8: case QINS_DT_QINS6: case QINS_DT_INT8_ROW: return rows;
  case QINS_DT_INT8_B32: return rows * ((cols + 31) / 32);
  default: return 0;
  }
}

int qins_tensor_same_shape(const qins_tensor *a, const qins_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

const char *qins_tensor_describe(const qins_tensor *t, char *buf, size_t n) {
  int len = snprintf(buf, n, "%s %s[", t->name[0] ? t->name : "(unnamed)", qins_dtype_name(t->dtype));
  for (int i = 0; i < t->ndim && len > 0 && (size_t)len < n; i++)
    len += snprintf(buf + len, n - (size_t)len, i ? ",%lld" : "%lld", (long long)t->shape[i]);
  if (len > 0 && (size_t)len < n) snprintf(buf + len, n - (size_t)len, "]");
  return buf;
}

void *qins_tensor_host(const qins_tensor *t) {
  if (!t->buf || !t->buf->host) return NULL;
  return (char *)t->buf->host + t->offset;
}

float qins_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: renormalise */
      int e = -1;
      do { e++; man <<= 1; } while (!(man & 0x400));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t qins_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t exp = (x >> 23) & 0xff;
  uint32_t man = x & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000;
    int shift = 14 - e;
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = sign | ((uint32_t)e << 10) | (man >> 13);
  uint32_t rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into the exponent: correct */
  return (uint16_t)half;
}

float qins_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t qins_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}
