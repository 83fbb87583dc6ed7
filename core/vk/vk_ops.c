/* Vulkan backend ops: each picks a shader variant, binds its tensors (chunked where the
 * binding limit requires) and records dispatches. Semantics follow core/cpu/cpu_ops.c. */
#include <stdio.h>
#include <string.h>

#include "core/vk/vk_internal.h"

#define SH(name) vk_shader_pick(c, name)

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static const char *wt_suffix(qins_dtype dt) {
  return dt == QINS_DT_F16 ? "f16" : dt == QINS_DT_BF16 ? "bf16" : "f32";
}

/* ---------------------------------------------------------------- matmul */

static const char *wt_suffix_q(qins_dtype dt) {
  switch (dt) {
  case QINS_DT_QINS_F32: return "qinsf32";
  case QINS_DT_QINS8: return "qins8";
  case QINS_DT_QINS6: return "qins6";
  case QINS_DT_INT8_ROW: return "int8";
  case QINS_DT_INT8_B32: return "int8b32";
  default: return wt_suffix(dt);
  }
}

/* The unfused reference (qins_qmatmul_path QINS_QMATMUL_UNFUSED): the dequant shader decodes W
 * into a scratch f32 [N,K] (freed when the batch completes), then the f32 GEMV/GEMM reads it. */
static int matmul_unfused(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                          qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t n = w->shape[0], k = w->shape[1];
  /* both steps split by the binding limit; the scratch must outlive all their commands in one
   * batch (vk_reserve), so count them generously: chunks of half the limit, two ops */
  uint64_t half = c->max_range / 2 > 16 ? c->max_range / 2 : 16;
  uint64_t chunks = (uint64_t)n * (uint64_t)k * 4 / half + 2;
  if (2 * chunks + 2 > VK_MAX_DISPATCH)
    return qins_error_set(QINS_EUNSUPPORTED, "matmul: unfused %s needs more than %d dispatches in one batch", w->name,
                          VK_MAX_DISPATCH);
  qins_tensor wf;
  qins_buf hold;
  int rc = vk_scratch_tensor(c, &wf, &hold, "matmul.w_unfused", n * k, (int)(2 * chunks + 2));
  if (rc) return qins_error_wrap(rc, "matmul: unfused scratch for %s: ", w->name);
  wf.ndim = 2;
  wf.shape[0] = n;
  wf.shape[1] = k;
  rc = vk_dequantize(be, w, &wf);
  if (!rc) rc = vk_matmul(be, x, &wf, bias, y);
  return rc;
}

/* Quantized weights (qins-f32, qins8, qins6, int8-row, int8-block32) run the same GEMV/GEMM
 * shaders with the decode in registers (shaders/qweights.glsl): two more bindings, the weight's
 * scales (bound per row range like the weight) and, for qins8/qins6, the D_1 table. */
int vk_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias, qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t m = qins_tensor_rows(x), n = w->shape[0], k = w->shape[1];
  int quant = qins_dtype_is_quantized(w->dtype);
  int bytes = quant && w->dtype != QINS_DT_QINS_F32; /* one code (or 3/4 byte) per element */
  int has_lut = w->dtype == QINS_DT_QINS8 || w->dtype == QINS_DT_QINS6;
  int64_t nblk = w->dtype == QINS_DT_INT8_B32 ? (k + 31) / 32 : 1;
  if (quant) {
    char d[192];
    const qins_tensor *s = w->scale;
    if (!s || s->dtype != QINS_DT_F32 || qins_tensor_numel(s) != qins_format_scale_count(w->dtype, n, k))
      return qins_error_set(QINS_EINVAL, "matmul: weight %s needs %lld f32 scales", qins_tensor_describe(w, d, sizeof d),
                            (long long)qins_format_scale_count(w->dtype, n, k));
    if (be->qmatmul_path == QINS_QMATMUL_UNFUSED) return matmul_unfused(be, x, w, bias, y);
  }
  int gemv = m <= 8, big = !gemv && m >= 128 && n >= 128; /* big: 128x128 tiles */
  uint32_t tile = big ? 128 : 64;
  char name[64];
  int s16 = !quant && w->dtype != QINS_DT_F32 && c->info.storage16;
  int s8 = bytes && c->info.storage8;
  snprintf(name, sizeof name, "matmul_%s_%s%s%s", gemv ? "gemv" : big ? "gemm128" : "gemm", wt_suffix_q(w->dtype),
           s16 ? "_s16" : s8 ? "_s8" : "", has_lut && c->lut_arith ? "_la" : "");
  int shader = SH(name);
  size_t wrow = quant ? qins_format_row_bytes(w->dtype, k) : (size_t)k * qins_dtype_size(w->dtype);
  size_t wunit = w->dtype == QINS_DT_F32 || w->dtype == QINS_DT_QINS_F32 ? 4 : bytes ? 1 : 2;
  size_t lim = c->max_range > 2 * c->align + 8 ? c->max_range - 2 * c->align - 8 : 4;
  int64_t per = (int64_t)(lim / wrow);
  if (per < 1)
    return qins_error_set(QINS_EUNSUPPORTED, "matmul: one row of %s (%zu bytes) exceeds the binding limit", w->name, wrow);
  if (quant && (int64_t)(lim / ((size_t)nblk * 4)) < per) per = (int64_t)(lim / ((size_t)nblk * 4));
  if (per > n) per = n;
  vk_bind b[6];
  uint32_t off[8] = {0};
  int nbind = quant ? (has_lut ? 6 : 5) : 4;
  qins_tensor lut;
  vk_lut_tensor(c, &lut);
  int rc = vk_bind_tensor(c, x, 0, qins_tensor_nbytes(x), 4, &b[0], &off[0]);
  if (!rc) rc = bias ? vk_bind_tensor(c, bias, 0, qins_tensor_nbytes(bias), 4, &b[2], &off[2])
                     : vk_bind_tensor(c, x, 0, qins_tensor_nbytes(x), 4, &b[2], &off[2]);
  if (!rc) rc = vk_bind_tensor(c, y, 0, qins_tensor_nbytes(y), 4, &b[3], &off[3]);
  if (!rc && has_lut) rc = vk_bind_tensor(c, &lut, 0, VK_LUT_FLOATS * 4, 4, &b[5], &off[5]);
  if (rc) return qins_error_wrap(rc, "matmul: ");
  for (int64_t n0 = 0; n0 < n; n0 += per) {
    int64_t nr = n - n0 < per ? n - n0 : per;
    rc = vk_bind_tensor(c, w, (size_t)n0 * wrow, (size_t)nr * wrow, wunit, &b[1], &off[1]);
    if (!rc && quant)
      rc = vk_bind_tensor(c, w->scale, (size_t)(n0 * nblk) * 4, (size_t)(nr * nblk) * 4, 4, &b[4], &off[4]);
    if (rc) return qins_error_wrap(rc, "matmul: ");
    uint32_t p[8] = {(uint32_t)nr, (uint32_t)m, (uint32_t)k, (uint32_t)n, (uint32_t)n0, bias != NULL, (uint32_t)wrow,
                     (uint32_t)nblk};
    uint32_t gx, gy;
    if (gemv) {
      vk_grid(c, (uint64_t)nr, 1, &gx, &gy);
    } else {
      gx = (uint32_t)((nr + tile - 1) / tile);
      gy = (uint32_t)((m + tile - 1) / tile);
    }
    rc = vk_dispatch(c, QINS_OP_MATMUL, shader, b, nbind, 1u << 3, off, p, 8, gx, gy);
    if (rc) return rc;
  }
  return 0;
}

/* ---------------------------------------------------------------- elementwise */

/* Views of t's elements [e0, e0 + rows*cols) as a [rows, cols] tensor (same buffer). */
static qins_tensor flat_view(const qins_tensor *t, int64_t e0, int64_t rows, int64_t cols) {
  qins_tensor v = *t;
  v.ndim = 2;
  v.shape[0] = rows;
  v.shape[1] = cols;
  v.shape[2] = v.shape[3] = 0;
  v.offset = t->offset + (size_t)e0 * qins_dtype_size(t->dtype);
  return v;
}

/* Elementwise ops without broadcast run on rows of this many elements (well under a binding). */
static int64_t flat_cols(const vk_ctx *c) {
  int64_t n = (int64_t)(c->max_range / 32);
  return n < 16384 ? (n < 1 ? 1 : n) : 16384;
}
#define FLAT_COLS flat_cols(c)

static int eltwise_rows(vk_ctx *c, qins_op_kind kind, const char *shader, const qins_tensor *a, const qins_tensor *b,
                        int bcast, const qins_tensor *y) {
  int64_t rows = qins_tensor_rows(a), cols = qins_tensor_cols(a);
  size_t rb = (size_t)cols * 4;
  vk_arg args[3] = {{a, rb, 4, 0}, {b ? b : a, bcast ? 0 : rb, 4, 0}, {y, rb, 4, 1}};
  uint32_t p[3] = {0, (uint32_t)cols, (uint32_t)bcast};
  return vk_run_rows(c, kind, SH(shader), args, 3, rows, p, 3, (uint64_t)cols, 0, 1, 256);
}

static int eltwise(qins_backend *be, qins_op_kind kind, const char *shader, const qins_tensor *a, const qins_tensor *b,
                   qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t n = qins_tensor_numel(a);
  int bcast = b && qins_tensor_numel(b) != n;
  int rc;
  if (bcast) {
    rc = eltwise_rows(c, kind, shader, a, b, 1, y);
  } else {
    /* the shape does not matter: rows of FLAT_COLS elements (then the rest) split into chunks
     * under the binding limit however long the tensor's own rows are */
    int64_t full = n / FLAT_COLS, tail = n % FLAT_COLS;
    rc = 0;
    if (full) {
      qins_tensor va = flat_view(a, 0, full, FLAT_COLS), vb = b ? flat_view(b, 0, full, FLAT_COLS) : va,
                  vy = flat_view(y, 0, full, FLAT_COLS);
      rc = eltwise_rows(c, kind, shader, &va, b ? &vb : NULL, 0, &vy);
    }
    if (!rc && tail) {
      int64_t e0 = full * FLAT_COLS;
      qins_tensor va = flat_view(a, e0, 1, tail), vb = b ? flat_view(b, e0, 1, tail) : va, vy = flat_view(y, e0, 1, tail);
      rc = eltwise_rows(c, kind, shader, &va, b ? &vb : NULL, 0, &vy);
    }
  }
  return rc ? qins_error_wrap(rc, "%s: ", qins_op_name(kind)) : 0;
}

static int vk_add(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) {
  return eltwise(be, QINS_OP_ADD, "eltwise_add", a, b, y);
}
static int vk_mul(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) {
  return eltwise(be, QINS_OP_MUL, "eltwise_mul", a, b, y);
}
static int vk_silu(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  return eltwise(be, QINS_OP_SILU, "eltwise_silu", x, NULL, y);
}
static int vk_gelu_tanh(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  return eltwise(be, QINS_OP_GELU_TANH, "eltwise_gelu", x, NULL, y);
}
static int vk_silu_mul(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y) {
  return eltwise(be, QINS_OP_SILU_MUL, "eltwise_silu_mul", gate, up, y);
}

/* ---------------------------------------------------------------- norms, softmax */

static int norm(qins_backend *be, qins_op_kind kind, const char *shader, const qins_tensor *x, const qins_tensor *w,
                const qins_tensor *b, float eps, qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(x), d = qins_tensor_cols(x);
  size_t rb = (size_t)d * 4;
  vk_arg args[4] = {{x, rb, 4, 0}, {w, 0, 4, 0}, {b ? b : w, 0, 4, 0}, {y, rb, 4, 1}};
  uint32_t p[4] = {0, (uint32_t)d, fbits(eps), b != NULL};
  int rc = vk_run_rows(c, kind, SH(shader), args, 4, rows, p, 4, 0, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "%s: ", qins_op_name(kind)) : 0;
}

static int vk_rmsnorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y) {
  return norm(be, QINS_OP_RMSNORM, "rmsnorm", x, w, NULL, eps, y);
}
static int vk_layernorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b, float eps,
                        qins_tensor *y) {
  return norm(be, QINS_OP_LAYERNORM, "layernorm", x, w, b, eps, y);
}

static int vk_softmax(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(x), n = qins_tensor_cols(x);
  vk_arg args[2] = {{x, (size_t)n * 4, 4, 0}, {y, (size_t)n * 4, 4, 1}};
  uint32_t p[2] = {0, (uint32_t)n};
  int rc = vk_run_rows(c, QINS_OP_SOFTMAX, SH("softmax"), args, 2, rows, p, 2, 0, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "softmax: ") : 0;
}

/* ---------------------------------------------------------------- rope, embed */

static int vk_rope(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq,
                   int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t m = x->shape[0], h = x->shape[1], d = x->shape[2];
  size_t rb = (size_t)(h * d) * 4;
  vk_arg args[4] = {{x, rb, 4, 0}, {pos, 4, 4, 0}, {inv_freq, 0, 4, 0}, {y, rb, 4, 1}};
  uint32_t half = (uint32_t)rot_dim / 2;
  uint32_t p[6] = {0, (uint32_t)h, (uint32_t)d, half, (uint32_t)mode, fbits(attn_factor)};
  int rc = vk_run_rows(c, QINS_OP_ROPE, SH("rope"), args, 4, m, p, 6, (uint64_t)(h * (d - half)), 0, 1, 256);
  return rc ? qins_error_wrap(rc, "rope: ") : 0;
}

static int vk_embed(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y) {
  vk_ctx *c = vk_of(be);
  int64_t v = table->shape[0], d = table->shape[1], m = qins_tensor_numel(ids);
  char name[32];
  snprintf(name, sizeof name, "embed_%s", wt_suffix(table->dtype));
  size_t trow = (size_t)d * qins_dtype_size(table->dtype);
  size_t lim = c->max_range > 2 * c->align + 8 ? c->max_range - 2 * c->align - 8 : 4;
  int64_t per = (int64_t)(lim / trow);
  if (per < 1) return qins_error_set(QINS_EUNSUPPORTED, "embed: one row of %s exceeds the binding limit", table->name);
  if (per > v) per = v;
  vk_bind b[3];
  uint32_t off[8] = {0};
  int rc = vk_bind_tensor(c, ids, 0, qins_tensor_nbytes(ids), 4, &b[1], &off[1]);
  if (!rc) rc = vk_bind_tensor(c, y, 0, qins_tensor_nbytes(y), 4, &b[2], &off[2]);
  if (rc) return qins_error_wrap(rc, "embed: ");
  for (int64_t r0 = 0; r0 < v; r0 += per) {
    int64_t nr = v - r0 < per ? v - r0 : per;
    rc = vk_bind_tensor(c, table, (size_t)r0 * trow, (size_t)nr * trow, table->dtype == QINS_DT_F32 ? 4 : 2, &b[0],
                        &off[0]);
    if (rc) return qins_error_wrap(rc, "embed: ");
    uint32_t p[5] = {(uint32_t)m, (uint32_t)d, (uint32_t)r0, (uint32_t)(r0 + nr), (uint32_t)v};
    uint32_t gx, gy;
    vk_grid(c, (uint64_t)(m * d), 256, &gx, &gy);
    rc = vk_dispatch(c, QINS_OP_EMBED, SH(name), b, 3, 1u << 2, off, p, 5, gx, gy);
    if (rc) return rc;
  }
  return 0;
}

/* ---------------------------------------------------------------- attention */

static int vk_attention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                        int64_t pos0, float scale, qins_tensor *out) {
  vk_ctx *c = vk_of(be);
  int64_t m = q->shape[0], hq = q->shape[1], d = q->shape[2], hkv = k_cache->shape[1];
  /* qins8 V cache: codes with alpha per (token, KV head), decoded by table inside the kernel */
  int vq8 = v_cache->dtype == QINS_DT_QINS8;
  if (vq8) {
    const qins_tensor *s = v_cache->scale;
    char dd[192];
    if (!s || s->dtype != QINS_DT_F32 || qins_tensor_numel(s) != v_cache->shape[0] * hkv)
      return qins_error_set(QINS_EINVAL, "attention: qins8 V cache %s needs an f32 alpha per token and KV head (%lld)",
                            qins_tensor_describe(v_cache, dd, sizeof dd), (long long)(v_cache->shape[0] * hkv));
  } else if (v_cache->dtype != QINS_DT_F32) {
    return qins_error_set(QINS_EUNSUPPORTED, "attention: %s has no kernel for a %s V cache", be->name,
                          qins_dtype_name(v_cache->dtype));
  }
  if (d > 256) return qins_error_set(QINS_EUNSUPPORTED, "attention: head size %lld over 256", (long long)d);
  size_t vis_rows = (size_t)(pos0 + m) * (size_t)hkv; /* only the positions attended to are bound */
  size_t visible = vis_rows * (size_t)d * 4;
  vk_bind b[7];
  uint32_t off[8] = {0};
  qins_tensor lut;
  vk_lut_tensor(c, &lut);
  int rc = vk_bind_tensor(c, q, 0, qins_tensor_nbytes(q), 4, &b[0], &off[0]);
  if (!rc) rc = vk_bind_tensor(c, k_cache, 0, visible, 4, &b[1], &off[1]);
  if (!rc) rc = vq8 ? vk_bind_tensor(c, v_cache, 0, vis_rows * (size_t)d, 1, &b[2], &off[2])
                    : vk_bind_tensor(c, v_cache, 0, visible, 4, &b[2], &off[2]);
  if (!rc) rc = vk_bind_tensor(c, out, 0, qins_tensor_nbytes(out), 4, &b[3], &off[3]);
  if (!rc && vq8) rc = vk_bind_tensor(c, v_cache->scale, 0, vis_rows * 4, 4, &b[5], &off[5]);
  if (!rc && vq8) rc = vk_bind_tensor(c, &lut, 0, VK_LUT_FLOATS * 4, 4, &b[6], &off[6]);
  if (rc) return qins_error_wrap(rc, "attention: ");
  /* Few (query, head) pairs over a long context would leave most of a GPU idle: split the keys
   * into chunks of at least 256, each its own work group, and merge the partial softmaxes. */
  uint64_t pairs = (uint64_t)(m * hq), span = (uint64_t)(pos0 + m);
  uint32_t nsplit = 1, chunk = (uint32_t)span;
  if (pairs < 1024 && span > 256) {
    uint64_t want = (2048 + pairs - 1) / pairs; /* aim at ~2048 work groups */
    uint64_t maxs = (span + 255) / 256;
    nsplit = (uint32_t)(want < maxs ? want : maxs);
    if (nsplit > 64) nsplit = 64;
    chunk = (uint32_t)(((span + nsplit - 1) / nsplit + 127) / 128 * 128);
    nsplit = (uint32_t)((span + chunk - 1) / chunk);
  }
  b[4] = b[3];
  off[4] = off[3];
  if (nsplit > 1) {
    VkDeviceSize need = (VkDeviceSize)pairs * nsplit * (uint64_t)(d + 2) * 4;
    if ((rc = vk_reserve(c, 2))) return rc;
    if (!c->scratch || c->scratch->size < need) {
      if (c->scratch && (rc = vk_garbage_add(c, c->scratch))) return rc;
      c->scratch = NULL;
      if ((rc = vk_buffer_create(c, need, 0, &c->scratch))) return rc;
    }
    if (need > c->max_range) return qins_error_set(QINS_EUNSUPPORTED, "attention: split partials exceed the binding limit");
    b[4] = (vk_bind){c->scratch, 0, need};
    off[4] = 0;
  }
  uint32_t p[8] = {(uint32_t)m, (uint32_t)hq, (uint32_t)hkv, (uint32_t)d, (uint32_t)pos0, fbits(scale), nsplit, chunk};
  uint32_t gx, gy;
  vk_grid(c, pairs * nsplit, 1, &gx, &gy);
  const char *ash = !vq8 ? "attention" : c->info.storage8 ? "attention_vq8_s8" : "attention_vq8";
  rc = vk_dispatch(c, QINS_OP_ATTENTION, SH(ash), b, vq8 ? 7 : 5, nsplit > 1 ? 1u << 4 : 1u << 3, off, p, 8, gx, gy);
  if (rc || nsplit == 1) return rc;
  vk_bind cb[2] = {b[4], b[3]};
  uint32_t coff[8] = {0, off[3]};
  uint32_t cp[3] = {(uint32_t)pairs, (uint32_t)d, nsplit};
  vk_grid(c, pairs, 1, &gx, &gy);
  return vk_dispatch(c, QINS_OP_ATTENTION, SH("attention_combine"), cb, 2, 2u, coff, cp, 3, gx, gy);
}

/* ---------------------------------------------------------------- argmax, topk */

static int vk_argmax(qins_backend *be, const qins_tensor *x, qins_tensor *idx) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(x), n = qins_tensor_cols(x);
  vk_arg args[3] = {{x, (size_t)n * 4, 4, 0}, {idx, 4, 4, 1}, {idx, 4, 4, 1}};
  uint32_t p[3] = {0, (uint32_t)n, 1};
  int rc = vk_run_rows(c, QINS_OP_ARGMAX, SH("argmax"), args, 3, rows, p, 3, 0, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "argmax: ") : 0;
}

static int vk_topk(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(x), n = qins_tensor_cols(x);
  vk_arg args[3] = {{x, (size_t)n * 4, 4, 0}, {values, (size_t)k * 4, 4, 1}, {idx, (size_t)k * 4, 4, 1}};
  uint32_t p[3] = {0, (uint32_t)n, (uint32_t)k};
  int rc = vk_run_rows(c, QINS_OP_TOPK, SH("topk"), args, 3, rows, p, 3, 0, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "topk: ") : 0;
}

/* ---------------------------------------------------------------- copy, cast */

static int copy_bytes(vk_ctx *c, qins_op_kind kind, const qins_tensor *src, const qins_tensor *dst) {
  vk_buffer *s = src->buf->impl, *d = dst->buf->impl;
  size_t n = qins_tensor_nbytes(src);
  if (s == d && src->offset == dst->offset) return 0;
  if (s == d && src->offset < dst->offset + n && dst->offset < src->offset + n) {
    /* overlapping views of one buffer (memmove): go through a temporary */
    vk_buffer *tmp;
    int rc = vk_reserve(c, 2);
    if (!rc) rc = vk_buffer_create(c, n, 0, &tmp);
    if (rc) return rc;
    if ((rc = vk_garbage_add(c, tmp))) {
      vk_buffer_destroy(c, tmp);
      return rc;
    }
    rc = vk_copy_region(c, kind, s, src->offset, tmp, 0, n);
    return rc ? rc : vk_copy_region(c, kind, tmp, 0, d, dst->offset, n);
  }
  return vk_copy_region(c, kind, s, src->offset, d, dst->offset, n);
}

static int vk_copy(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  return copy_bytes(vk_of(be), QINS_OP_COPY, src, dst);
}

static int cast_rows(vk_ctx *c, qins_op_kind kind, const char *name, const qins_tensor *src, const qins_tensor *dst) {
  int64_t rows = qins_tensor_rows(src), cols = qins_tensor_cols(src);
  size_t ss = qins_dtype_size(src->dtype), ds = qins_dtype_size(dst->dtype);
  vk_arg args[2] = {{src, (size_t)cols * ss, ss, 0}, {dst, (size_t)cols * ds, ds, 1}};
  uint32_t p[2] = {0, (uint32_t)cols};
  return vk_run_rows(c, kind, SH(name), args, 2, rows, p, 2, (uint64_t)cols, ds == 2 ? 2 : 0, ds == 2 ? 2 : 1, 256);
}

int vk_cast_impl(vk_ctx *c, qins_op_kind kind, const qins_tensor *src, const qins_tensor *dst) {
  if (src->dtype == dst->dtype) return copy_bytes(c, kind, src, dst);
  char name[32];
  snprintf(name, sizeof name, "cast_%s_%s", wt_suffix(src->dtype), wt_suffix(dst->dtype));
  /* shapes may differ (same element count): run on rows of FLAT_COLS elements, then the rest */
  int64_t n = qins_tensor_numel(src), full = n / FLAT_COLS, tail = n % FLAT_COLS;
  int rc = 0;
  if (full) {
    qins_tensor vs = flat_view(src, 0, full, FLAT_COLS), vd = flat_view(dst, 0, full, FLAT_COLS);
    rc = cast_rows(c, kind, name, &vs, &vd);
  }
  if (!rc && tail) {
    qins_tensor vs = flat_view(src, full * FLAT_COLS, 1, tail), vd = flat_view(dst, full * FLAT_COLS, 1, tail);
    rc = cast_rows(c, kind, name, &vs, &vd);
  }
  return rc ? qins_error_wrap(rc, "%s: ", qins_op_name(kind)) : 0;
}

static int vk_cast(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  return vk_cast_impl(vk_of(be), QINS_OP_CAST, src, dst);
}

const qins_backend_ops vk_backend_ops = {
    .buf_alloc = vk_buf_alloc,
    .buf_wrap = vk_buf_wrap,
    .buf_free = vk_buf_free,
    .buf_write = vk_buf_write,
    .buf_read = vk_buf_read,
    .sync = vk_sync,
    .destroy = vk_destroy_backend,
    .matmul = vk_matmul,
    .add = vk_add,
    .mul = vk_mul,
    .rmsnorm = vk_rmsnorm,
    .layernorm = vk_layernorm,
    .rope = vk_rope,
    .softmax = vk_softmax,
    .silu = vk_silu,
    .gelu_tanh = vk_gelu_tanh,
    .silu_mul = vk_silu_mul,
    .embed = vk_embed,
    .attention = vk_attention,
    .argmax = vk_argmax,
    .topk = vk_topk,
    .copy = vk_copy,
    .cast = vk_cast,
    .calibrate = vk_calibrate,
    .quantize = vk_quantize,
    .dequantize = vk_dequantize,
    .matmul_backward = vk_matmul_backward,
    .add_backward = vk_add_backward,
    .mul_backward = vk_mul_backward,
    .rmsnorm_backward = vk_rmsnorm_backward,
    .layernorm_backward = vk_layernorm_backward,
    .rope_backward = vk_rope_backward,
    .softmax_backward = vk_softmax_backward,
    .silu_backward = vk_silu_backward,
    .gelu_tanh_backward = vk_gelu_tanh_backward,
    .silu_mul_backward = vk_silu_mul_backward,
    .embed_backward = vk_embed_backward,
    .attention_backward = vk_attention_backward,
    .cross_entropy = vk_cross_entropy,
    .adamw_step = vk_adamw_step,
    .sumsq = vk_sumsq,
};
