/* Vulkan backend codec ops: per-row alpha calibration, QINS/int8 encode and decode
 * (../shared/QINS.md sections 2-3), with f16/bf16/f32 "formats" handled as casts. */
#include <stdio.h>
#include <string.h>

#include "core/vk/vk_internal.h"

#define SH(name) vk_shader_pick(c, name)

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static void lut_tensor(vk_ctx *c, qins_tensor *lut) {
  memset(lut, 0, sizeof *lut);
  snprintf(lut->name, sizeof lut->name, "qins_lut");
  lut->dtype = QINS_DT_F32;
  lut->ndim = 1;
  lut->shape[0] = VK_LUT_FLOATS;
  lut->buf = c->lut;
}

int vk_calibrate(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec, qins_tensor *alpha) {
  int64_t rows = qins_tensor_rows(x), cols = qins_tensor_cols(x);
  static const uint32_t mode_code[] = {[QINS_ALPHA_MSE] = 0, [QINS_ALPHA_STD] = 1, [QINS_ALPHA_ABSMAX] = 2,
                                       [QINS_ALPHA_FIXED] = 3};
  vk_ctx *c = vk_of(be);
  qins_tensor lut;
  lut_tensor(c, &lut);
  vk_arg args[3] = {{x, (size_t)cols * 4, 4, 0}, {alpha, 4, 4, 1}, {&lut, 0, 4, 0}};
  uint32_t p[5] = {0, (uint32_t)cols, mode_code[spec.mode], format == QINS_DT_QINS6 ? 63u : 255u, fbits(spec.value)};
  int rc = vk_run_rows(c, QINS_OP_CALIBRATE, SH("calibrate"), args, 3, rows, p, 5, 0, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "calibrate: ") : 0;
}

int vk_quantize(qins_backend *be, const qins_tensor *x, qins_tensor *dst) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(x), cols = qins_tensor_cols(x);
  size_t xr = (size_t)cols * 4, rb = qins_format_row_bytes(dst->dtype, cols);
  int rc;
  switch (dst->dtype) {
  case QINS_DT_F32: case QINS_DT_F16: case QINS_DT_BF16:
    return vk_cast_impl(c, QINS_OP_QUANTIZE, x, dst);
  case QINS_DT_QINS_F32: {
    vk_arg args[3] = {{x, xr, 4, 0}, {dst->scale, 4, 4, 0}, {dst, xr, 4, 1}};
    uint32_t p[2] = {0, (uint32_t)cols};
    rc = vk_run_rows(c, QINS_OP_QUANTIZE, SH("qinsf32_encode"), args, 3, rows, p, 2, (uint64_t)cols, 0, 1, 256);
    break;
  }
  case QINS_DT_QINS8: case QINS_DT_QINS6: {
    vk_arg args[3] = {{x, xr, 4, 0}, {dst->scale, 4, 4, 0}, {dst, rb, 1, 1}};
    uint32_t p[5] = {0, (uint32_t)cols, (uint32_t)rb, (uint32_t)cols, 1};
    rc = vk_run_rows(c, QINS_OP_QUANTIZE, SH(dst->dtype == QINS_DT_QINS8 ? "encode_qins8" : "encode_qins6"), args, 3, rows,
                     p, 5, rb, 6, 4, 256);
    break;
  }
  case QINS_DT_INT8_ROW: case QINS_DT_INT8_B32: {
    uint32_t blk = dst->dtype == QINS_DT_INT8_ROW ? (uint32_t)cols : 32u;
    uint32_t nblk = (uint32_t)((cols + blk - 1) / blk);
    vk_arg sargs[2] = {{x, xr, 4, 0}, {dst->scale, (size_t)nblk * 4, 4, 1}};
    uint32_t sp[4] = {0, (uint32_t)cols, blk, nblk};
    rc = vk_run_rows(c, QINS_OP_QUANTIZE, SH("int8_scale"), sargs, 2, rows, sp, 4, 0, 0, 1, 256);
    if (rc) break;
    vk_arg args[3] = {{x, xr, 4, 0}, {dst->scale, (size_t)nblk * 4, 4, 0}, {dst, rb, 1, 1}};
    uint32_t p[5] = {0, (uint32_t)cols, (uint32_t)rb, blk, nblk};
    rc = vk_run_rows(c, QINS_OP_QUANTIZE, SH("encode_int8"), args, 3, rows, p, 5, rb, 6, 4, 256);
    break;
  }
  default:
    return qins_error_set(QINS_EUNSUPPORTED, "quantize: %s cannot encode %s", be->name, qins_dtype_name(dst->dtype));
  }
  return rc ? qins_error_wrap(rc, "quantize: ") : 0;
}

int vk_dequantize(qins_backend *be, const qins_tensor *src, qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(src), cols = qins_tensor_cols(src);
  size_t yr = (size_t)cols * 4, rb = qins_format_row_bytes(src->dtype, cols);
  const char *shader;
  uint32_t blk = (uint32_t)cols, nblk = 1;
  size_t unit = 1;
  switch (src->dtype) {
  case QINS_DT_F32: case QINS_DT_F16: case QINS_DT_BF16:
    return vk_cast_impl(c, QINS_OP_DEQUANTIZE, src, y);
  case QINS_DT_QINS_F32: shader = "dequant_qinsf32"; unit = 4; break;
  case QINS_DT_QINS8: shader = "dequant_qins8"; break;
  case QINS_DT_QINS6: shader = "dequant_qins6"; break;
  case QINS_DT_INT8_ROW: shader = "dequant_int8"; break;
  case QINS_DT_INT8_B32:
    shader = "dequant_int8";
    blk = 32;
    nblk = (uint32_t)((cols + 31) / 32);
    break;
  default:
    return qins_error_set(QINS_EUNSUPPORTED, "dequantize: %s cannot decode %s", be->name, qins_dtype_name(src->dtype));
  }
  qins_tensor lut;
  lut_tensor(c, &lut);
  vk_arg args[4] = {{src, rb, unit, 0}, {src->scale, (size_t)nblk * 4, 4, 0}, {&lut, 0, 4, 0}, {y, yr, 4, 1}};
  uint32_t p[5] = {0, (uint32_t)cols, (uint32_t)rb, blk, nblk};
  int rc = vk_run_rows(c, QINS_OP_DEQUANTIZE, SH(shader), args, 4, rows, p, 5, (uint64_t)cols, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "dequantize: ") : 0;
}
