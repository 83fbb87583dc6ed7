/* Vulkan backend: backward ops for training (core/backend_grad.h conventions: activation
 * gradients overwritten, parameter gradients accumulated), following core/cpu/cpu_grad.c. */
#include <stdio.h>
#include <string.h>

#include "core/backend_grad.h"
#include "core/vk/vk_internal.h"

#define SH(name) vk_shader_pick(c, name)

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* out[c] += sum_r g[r,c] * (1 | a[r,c] | (a[r,c] - mean_r) rstd_r). */
static int colsum(vk_ctx *c, qins_op_kind kind, const qins_tensor *g, const qins_tensor *a, const qins_tensor *stats,
                  int mode, qins_tensor *out) {
  int64_t rows = qins_tensor_rows(g), cols = qins_tensor_cols(g);
  vk_bind b[4];
  uint32_t off[8] = {0};
  int rc = vk_bind_tensor(c, g, 0, qins_tensor_nbytes(g), 4, &b[0], &off[0]);
  if (!rc) rc = vk_bind_tensor(c, a ? a : g, 0, qins_tensor_nbytes(a ? a : g), 4, &b[1], &off[1]);
  if (!rc) rc = vk_bind_tensor(c, stats ? stats : g, 0, qins_tensor_nbytes(stats ? stats : g), 4, &b[2], &off[2]);
  if (!rc) rc = vk_bind_tensor(c, out, 0, (size_t)cols * 4, 4, &b[3], &off[3]);
  if (rc) return rc;
  uint32_t p[3] = {(uint32_t)rows, (uint32_t)cols, (uint32_t)mode}, gx, gy;
  vk_grid(c, (uint64_t)cols, 256, &gx, &gy);
  return vk_dispatch(c, kind, SH("colsum"), b, 4, 1u << 3, off, p, 3, gx, gy);
}

/* ---------------------------------------------------------------- matmul */

/* C[I,J] (+)= A . B with A read through strides and B row-major [P,J] of dtype bdt. */
static int mm_bwd(vk_ctx *c, const qins_tensor *a, uint32_t a_si, uint32_t a_sp, const qins_tensor *b, qins_tensor *cc,
                  int64_t ni, int64_t nj, int64_t np, int accumulate) {
  char name[32];
  snprintf(name, sizeof name, "matmul_bwd_%s",
           b->dtype == QINS_DT_F16 ? "f16" : b->dtype == QINS_DT_BF16 ? "bf16" : "f32");
  vk_bind bd[3];
  uint32_t off[8] = {0};
  int rc = vk_bind_tensor(c, a, 0, qins_tensor_nbytes(a), 4, &bd[0], &off[0]);
  if (!rc) rc = vk_bind_tensor(c, b, 0, qins_tensor_nbytes(b), b->dtype == QINS_DT_F32 ? 4 : 2, &bd[1], &off[1]);
  if (!rc) rc = vk_bind_tensor(c, cc, 0, qins_tensor_nbytes(cc), 4, &bd[2], &off[2]);
  if (rc) return rc;
  uint32_t p[6] = {(uint32_t)ni, (uint32_t)nj, (uint32_t)np, a_si, a_sp, (uint32_t)accumulate};
  return vk_dispatch(c, QINS_OP_MATMUL_BACKWARD, SH(name), bd, 3, 1u << 2, off, p, 6, (uint32_t)((nj + 63) / 64),
                     (uint32_t)((ni + 63) / 64));
}

int vk_matmul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                              qins_tensor *dx, qins_tensor *dw, qins_tensor *dbias) {
  vk_ctx *c = vk_of(be);
  int64_t m = qins_tensor_rows(x), n = w->shape[0], k = w->shape[1];
  int rc = 0;
  if (dx) {
    const qins_tensor *wf = w;
    qins_tensor wtmp;
    qins_buf hold;
    if (qins_dtype_is_quantized(w->dtype)) {
      /* straight-through: the gradient flows through the dequantized weight */
      if ((rc = vk_scratch_tensor(c, &wtmp, &hold, "matmul_backward.w_dequant", n * k, 3))) return rc;
      wtmp.ndim = 2;
      wtmp.shape[0] = n;
      wtmp.shape[1] = k;
      if ((rc = vk_dequantize(be, w, &wtmp))) return rc;
      wf = &wtmp;
    }
    rc = mm_bwd(c, dy, (uint32_t)n, 1, wf, dx, m, k, n, 0);
  }
  if (!rc && dw) rc = mm_bwd(c, dy, 1, (uint32_t)n, x, dw, n, k, m, 1);
  if (!rc && dbias) rc = colsum(c, QINS_OP_MATMUL_BACKWARD, dy, NULL, NULL, 0, dbias);
  return rc ? qins_error_wrap(rc, "matmul_backward: ") : 0;
}

/* ---------------------------------------------------------------- add, mul */

int vk_add_backward(qins_backend *be, const qins_tensor *dy, qins_tensor *db) {
  vk_ctx *c = vk_of(be);
  int rc = colsum(c, QINS_OP_ADD_BACKWARD, dy, NULL, NULL, 0, db);
  return rc ? qins_error_wrap(rc, "add_backward: ") : 0;
}

/* the forward mul kernel computes the elementwise products (b broadcast or not) */
static int mul_elems(vk_ctx *c, const qins_tensor *g, const qins_tensor *b, qins_tensor *out) {
  int64_t rows = qins_tensor_rows(g), cols = qins_tensor_cols(g);
  int bcast = qins_tensor_numel(b) != qins_tensor_numel(g);
  size_t rb = (size_t)cols * 4;
  vk_arg args[3] = {{g, rb, 4, 0}, {b, bcast ? 0 : rb, 4, 0}, {out, rb, 4, 1}};
  uint32_t p[3] = {0, (uint32_t)cols, (uint32_t)bcast};
  return vk_run_rows(c, QINS_OP_MUL_BACKWARD, SH("eltwise_mul"), args, 3, rows, p, 3, (uint64_t)cols, 0, 1, 256);
}

int vk_mul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *a, const qins_tensor *b,
                           qins_tensor *da, qins_tensor *db) {
  vk_ctx *c = vk_of(be);
  int rc = 0;
  /* db first: da may alias dy */
  if (db) rc = qins_tensor_same_shape(a, b) ? mul_elems(c, dy, a, db) : colsum(c, QINS_OP_MUL_BACKWARD, dy, a, NULL, 1, db);
  if (!rc && da) rc = mul_elems(c, dy, b, da);
  return rc ? qins_error_wrap(rc, "mul_backward: ") : 0;
}

/* ---------------------------------------------------------------- norms */

static int norm_backward(qins_backend *be, qins_op_kind kind, const char *shader, const qins_tensor *dy,
                         const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *dx, qins_tensor *dw,
                         qins_tensor *db) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(x), d = qins_tensor_cols(x);
  qins_tensor st;
  qins_buf hold;
  int rc = vk_scratch_tensor(c, &st, &hold, "norm_backward.stats", 2 * rows, 4);
  if (rc) return rc;
  size_t rb = (size_t)d * 4;
  vk_arg args[5] = {{dy, rb, 4, 0}, {x, rb, 4, 0}, {w, 0, 4, 0}, {dx, rb, 4, 1}, {&st, 8, 4, 1}};
  uint32_t p[3] = {0, (uint32_t)d, fbits(eps)};
  char name[32];
  snprintf(name, sizeof name, "%s%s", shader, c->info.float64 ? "_f64" : "");
  rc = vk_run_rows(c, kind, SH(name), args, 5, rows, p, 3, 0, 0, 1, 256);
  if (!rc && dw) rc = colsum(c, kind, dy, x, &st, 2, dw);
  if (!rc && db) rc = colsum(c, kind, dy, NULL, NULL, 0, db);
  return rc ? qins_error_wrap(rc, "%s: ", qins_op_name(kind)) : 0;
}

int vk_rmsnorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                               float eps, qins_tensor *dx, qins_tensor *dw) {
  return norm_backward(be, QINS_OP_RMSNORM_BACKWARD, "rmsnorm_bwd", dy, x, w, eps, dx, dw, NULL);
}

int vk_layernorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                                 float eps, qins_tensor *dx, qins_tensor *dw, qins_tensor *db) {
  return norm_backward(be, QINS_OP_LAYERNORM_BACKWARD, "layernorm_bwd", dy, x, w, eps, dx, dw, db);
}

/* ---------------------------------------------------------------- rope, softmax, activations */

int vk_rope_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *pos, const qins_tensor *inv_freq,
                            int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *dx) {
  vk_ctx *c = vk_of(be);
  int64_t m = dy->shape[0], h = dy->shape[1], d = dy->shape[2];
  size_t rb = (size_t)(h * d) * 4;
  vk_arg args[4] = {{dy, rb, 4, 0}, {pos, 4, 4, 0}, {inv_freq, 0, 4, 0}, {dx, rb, 4, 1}};
  uint32_t half = (uint32_t)rot_dim / 2;
  uint32_t p[6] = {0, (uint32_t)h, (uint32_t)d, half, (uint32_t)mode | 2u, fbits(attn_factor)};
  int rc = vk_run_rows(c, QINS_OP_ROPE_BACKWARD, SH("rope"), args, 4, m, p, 6, (uint64_t)(h * (d - half)), 0, 1, 256);
  return rc ? qins_error_wrap(rc, "rope_backward: ") : 0;
}

int vk_softmax_backward(qins_backend *be, const qins_tensor *y, const qins_tensor *dy, qins_tensor *dx) {
  vk_ctx *c = vk_of(be);
  int64_t rows = qins_tensor_rows(y), n = qins_tensor_cols(y);
  size_t rb = (size_t)n * 4;
  vk_arg args[3] = {{y, rb, 4, 0}, {dy, rb, 4, 0}, {dx, rb, 4, 1}};
  uint32_t p[2] = {0, (uint32_t)n};
  int rc = vk_run_rows(c, QINS_OP_SOFTMAX_BACKWARD, SH("softmax_bwd"), args, 3, rows, p, 2, 0, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "softmax_backward: ") : 0;
}

static int act_backward(vk_ctx *c, qins_op_kind kind, const char *shader, const qins_tensor *x, const qins_tensor *up,
                        const qins_tensor *dy, qins_tensor *d1, qins_tensor *d2) {
  int64_t rows = qins_tensor_rows(x), cols = qins_tensor_cols(x);
  size_t rb = (size_t)cols * 4;
  const qins_tensor *o1 = d1 ? d1 : d2, *o2 = d2 ? d2 : d1;
  vk_arg args[5] = {{x, rb, 4, 0}, {up ? up : x, rb, 4, 0}, {dy, rb, 4, 0}, {o1, rb, 4, 1}, {o2, rb, 4, 1}};
  uint32_t p[4] = {0, (uint32_t)cols, d1 != NULL, d2 != NULL};
  int rc = vk_run_rows(c, kind, SH(shader), args, 5, rows, p, 4, (uint64_t)cols, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "%s: ", qins_op_name(kind)) : 0;
}

int vk_silu_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx) {
  return act_backward(vk_of(be), QINS_OP_SILU_BACKWARD, "grad_silu", x, NULL, dy, dx, NULL);
}

int vk_gelu_tanh_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx) {
  return act_backward(vk_of(be), QINS_OP_GELU_TANH_BACKWARD, "grad_gelu", x, NULL, dy, dx, NULL);
}

int vk_silu_mul_backward(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, const qins_tensor *dy,
                                qins_tensor *dgate, qins_tensor *dup) {
  if (!dgate && !dup) return 0;
  return act_backward(vk_of(be), QINS_OP_SILU_MUL_BACKWARD, "grad_silu_mul", gate, up, dy, dgate, dup);
}

/* ---------------------------------------------------------------- embed, cross-entropy */

int vk_embed_backward(qins_backend *be, const qins_tensor *ids, const qins_tensor *dy, qins_tensor *dtable) {
  vk_ctx *c = vk_of(be);
  int64_t v = dtable->shape[0], d = dtable->shape[1], m = qins_tensor_numel(ids);
  size_t trow = (size_t)d * 4;
  size_t lim = c->max_range > 2 * c->align + 8 ? c->max_range - 2 * c->align - 8 : 4;
  int64_t per = (int64_t)(lim / trow);
  if (per < 1) return qins_error_set(QINS_EUNSUPPORTED, "embed_backward: one row of %s exceeds the binding limit", dtable->name);
  if (per > v) per = v;
  /* ids come back to the host: one outside the vocabulary is an input error, as on the cpu */
  int32_t *h = qins_mem_alloc(vk_owner(), (size_t)(m ? m : 1) * 4);
  if (!h) return QINS_ENOMEM;
  int rc = vk_buf_read(be, ids->buf, ids->offset, h, (size_t)m * 4);
  for (int64_t t = 0; !rc && t < m; t++)
    if (h[t] < 0 || h[t] >= v)
      rc = qins_error_set(QINS_EINPUT, "embed_backward: id %d at position %lld outside vocabulary of %lld", h[t],
                          (long long)t, (long long)v);
  qins_mem_free(vk_owner(), h);
  if (rc) return rc;
  vk_bind b[3];
  uint32_t off[8] = {0};
  rc = vk_bind_tensor(c, ids, 0, qins_tensor_nbytes(ids), 4, &b[0], &off[0]);
  if (!rc) rc = vk_bind_tensor(c, dy, 0, qins_tensor_nbytes(dy), 4, &b[1], &off[1]);
  for (int64_t r0 = 0; !rc && r0 < v; r0 += per) {
    int64_t nr = v - r0 < per ? v - r0 : per;
    rc = vk_bind_tensor(c, dtable, (size_t)r0 * trow, (size_t)nr * trow, 4, &b[2], &off[2]);
    uint32_t p[4] = {(uint32_t)m, (uint32_t)d, (uint32_t)r0, (uint32_t)(r0 + nr)}, gx, gy;
    vk_grid(c, (uint64_t)d, 256, &gx, &gy);
    if (!rc) rc = vk_dispatch(c, QINS_OP_EMBED_BACKWARD, SH("embed_bwd"), b, 3, 1u << 2, off, p, 4, gx, gy);
  }
  return rc ? qins_error_wrap(rc, "embed_backward: ") : 0;
}

int vk_cross_entropy(qins_backend *be, const qins_tensor *logits, const qins_tensor *targets, qins_tensor *loss,
                            qins_tensor *dlogits, float scale) {
  vk_ctx *c = vk_of(be);
  int64_t m = qins_tensor_rows(logits), v = qins_tensor_cols(logits);
  /* targets come back to the host: an id past the vocabulary is an input error, and scale 0
   * needs the number of rows that count */
  int32_t *tg = qins_mem_alloc(vk_owner(), (size_t)(m ? m : 1) * 4);
  if (!tg) return QINS_ENOMEM;
  int rc = vk_buf_read(be, targets->buf, targets->offset, tg, (size_t)m * 4);
  int64_t valid = 0;
  for (int64_t r = 0; !rc && r < m; r++) {
    if (tg[r] >= v)
      rc = qins_error_set(QINS_EINPUT, "cross_entropy: target %d of row %lld outside vocabulary of %lld", tg[r],
                          (long long)r, (long long)v);
    valid += tg[r] >= 0;
  }
  qins_mem_free(vk_owner(), tg);
  if (rc) return rc;
  if (scale == 0.0f) scale = valid ? 1.0f / (float)valid : 0.0f;
  size_t rb = (size_t)v * 4;
  vk_arg args[4] = {{logits, rb, 4, 0}, {targets, 4, 4, 0}, {loss, 4, 4, 1}, {dlogits ? dlogits : loss, dlogits ? rb : 4, 4, 1}};
  uint32_t p[4] = {0, (uint32_t)v, fbits(scale), dlogits != NULL};
  rc = vk_run_rows(c, QINS_OP_CROSS_ENTROPY, SH("xent"), args, 4, m, p, 4, 0, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "cross_entropy: ") : 0;
}


/* ---------------------------------------------------------------- attention */

int vk_attention_backward(qins_backend *be, const qins_tensor *q, const qins_tensor *k, const qins_tensor *v,
                          int64_t pos0, float scale, const qins_tensor *dout, qins_tensor *dq, qins_tensor *dk,
                          qins_tensor *dv) {
  vk_ctx *c = vk_of(be);
  int64_t m = q->shape[0], hq = q->shape[1], d = q->shape[2], t = k->shape[0], hkv = k->shape[1];
  int64_t tv = pos0 + m;
  if (d > 256) return qins_error_set(QINS_EUNSUPPORTED, "attention_backward: head size %lld over 256", (long long)d);
  /* two [M*Hq, pos0+M] scratch matrices (P and dS), as on the cpu */
  qins_tensor st;
  qins_buf hold;
  int rc = vk_scratch_tensor(c, &st, &hold, "attention_backward.scores", 2 * m * hq * tv, 2);
  if (rc) return rc;
  vk_bind b[6];
  uint32_t off[8] = {0};
  const qins_tensor *in1[6] = {q, k, v, dout, dq, &st};
  for (int i = 0; i < 6 && !rc; i++) rc = vk_bind_tensor(c, in1[i], 0, qins_tensor_nbytes(in1[i]), 4, &b[i], &off[i]);
  uint32_t p[8] = {(uint32_t)m, (uint32_t)hq, (uint32_t)hkv, (uint32_t)d, (uint32_t)pos0, fbits(scale), (uint32_t)tv,
                   (uint32_t)t};
  uint32_t gx, gy;
  vk_grid(c, (uint64_t)(m * hq), 1, &gx, &gy);
  if (!rc) rc = vk_dispatch(c, QINS_OP_ATTENTION_BACKWARD, SH("attn_bwd_q"), b, 6, (1u << 4) | (1u << 5), off, p, 7, gx, gy);
  const qins_tensor *in2[5] = {q, dout, &st, dk, dv};
  for (int i = 0; i < 5 && !rc; i++) rc = vk_bind_tensor(c, in2[i], 0, qins_tensor_nbytes(in2[i]), 4, &b[i], &off[i]);
  vk_grid(c, (uint64_t)(t * hkv * d), 256, &gx, &gy);
  if (!rc) rc = vk_dispatch(c, QINS_OP_ATTENTION_BACKWARD, SH("attn_bwd_kv"), b, 5, (1u << 3) | (1u << 4), off, p, 8, gx, gy);
  return rc ? qins_error_wrap(rc, "attention_backward: ") : 0;
}

/* ---------------------------------------------------------------- optimizer */

int vk_adamw_step(qins_backend *be, qins_tensor *w, const qins_tensor *g, qins_tensor *m, qins_tensor *v,
                  const qins_adamw_step_args *a) {
  vk_ctx *c = vk_of(be);
  int64_t n = qins_tensor_numel(w);
  /* one "row" per element, so long tensors split at the binding limit like any row op */
  vk_arg args[4] = {{w, 4, 4, 1}, {g, 4, 4, 0}, {m, 4, 4, 1}, {v, 4, 4, 1}};
  uint32_t p[10] = {0,
                    fbits(a->step_size),
                    fbits(a->bc2_sqrt),
                    fbits(a->decay),
                    (uint32_t)(a->do_decay != 0),
                    fbits(a->w1),
                    fbits(a->w2),
                    fbits(a->beta2),
                    fbits(a->eps),
                    fbits(a->gmul)};
  int rc = vk_run_rows(c, QINS_OP_ADAMW_STEP, SH("adamw"), args, 4, n, p, 10, 1, 0, 1, 256);
  return rc ? qins_error_wrap(rc, "adamw_step: ") : 0;
}


/* ---------------------------------------------------------------- gradient norm */

/* Two dispatches per binding-sized chunk of x: partial sums per work group into a scratch buffer,
 * then one group adds them into out[3*index]. Nothing waits: the caller reads out once, after
 * every parameter's sum is recorded. */
int vk_sumsq(qins_backend *be, const qins_tensor *x, qins_tensor *out, int64_t index) {
  vk_ctx *c = vk_of(be);
  int f64 = c->info.float64;
  int64_t n = qins_tensor_numel(x);
  size_t lim = c->max_range > 2 * c->align + 8 ? c->max_range - 2 * c->align - 8 : 4;
  int64_t per = (int64_t)(lim / 4);
  if (per > (int64_t)1 << 30) per = (int64_t)1 << 30;
  int64_t chunks = (n + per - 1) / per;
  /* partials per chunk: enough groups to fill a big GPU, fewer when many chunks must share the
   * one binding the final pass reads */
  int64_t fit = (int64_t)(lim / (f64 ? 8 : 4)) / (chunks > 0 ? chunks : 1);
  /* the scratch lives until its batch completes: the op must fit in one batch */
  if (fit < 1 || chunks + 2 > VK_MAX_DISPATCH)
    return qins_error_set(QINS_EUNSUPPORTED, "sumsq: vulkan: %s splits into %lld chunks, too many partial sums for one binding",
                          x->name, (long long)chunks);
  const uint32_t max_groups = (uint32_t)(fit < 512 ? fit : 512);
  int64_t nparts = 0;
  for (int64_t k = 0; k < chunks; k++) {
    int64_t m = n - k * per < per ? n - k * per : per;
    uint64_t g = ((uint64_t)m + 255) / 256;
    nparts += (int64_t)(g < max_groups ? g : max_groups);
  }
  if (nparts < 1) nparts = 1;
  qins_tensor part;
  qins_buf hold;
  int rc = vk_scratch_tensor(c, &part, &hold, "sumsq.partials", nparts * (f64 ? 2 : 1), (int)chunks + 2);
  if (rc) return qins_error_wrap(rc, "sumsq: ");
  int64_t base = 0;
  for (int64_t k = 0; k < chunks && !rc; k++) {
    int64_t m = n - k * per < per ? n - k * per : per;
    uint64_t g = ((uint64_t)m + 255) / 256;
    uint32_t groups = (uint32_t)(g < max_groups ? g : max_groups);
    vk_bind b[2];
    uint32_t off[8] = {0};
    rc = vk_bind_tensor(c, x, (size_t)(k * per) * 4, (size_t)m * 4, 4, &b[0], &off[0]);
    if (!rc) rc = vk_bind_tensor(c, &part, 0, qins_tensor_nbytes(&part), 4, &b[1], &off[1]);
    uint32_t p[2] = {(uint32_t)m, (uint32_t)base};
    if (!rc) rc = vk_dispatch(c, QINS_OP_SUMSQ, SH(f64 ? "sumsq_part_f64" : "sumsq_part"), b, 2, 1u << 1, off, p, 2, groups, 1);
    base += groups;
  }
  if (n == 0) { /* no partial was written: the final pass adds none */
    nparts = 0;
  }
  if (!rc) {
    vk_bind b[2];
    uint32_t off[8] = {0};
    rc = vk_bind_tensor(c, &part, 0, qins_tensor_nbytes(&part), 4, &b[0], &off[0]);
    if (!rc) rc = vk_bind_tensor(c, out, (size_t)(3 * index) * 4, 12, 4, &b[1], &off[1]);
    uint32_t p[2] = {(uint32_t)nparts, 0};
    /* the slot is addressed through the binding offset, so base (the slot) stays 0 */
    if (!rc) rc = vk_dispatch(c, QINS_OP_SUMSQ, SH(f64 ? "sumsq_final_f64" : "sumsq_final"), b, 2, 1u << 1, off, p, 2, 1, 1);
  }
  return rc ? qins_error_wrap(rc, "sumsq: ") : 0;
}
