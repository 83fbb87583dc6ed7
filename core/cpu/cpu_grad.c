/* cpu backward ops and the fused cross-entropy: readable loops, split with cpu_parallel so that
 * every thread owns the elements it writes (rows for activation gradients, columns or output rows
 * for parameter gradients), which keeps results deterministic and free of atomics.
 * Shapes were validated by the wrappers in core/backend_grad.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/cpu_grad.h"
#include "core/backend_grad.h"
#include "core/cpu/cpu_ops.h"
#include "core/cpu/cpu_vexp.h"
#include "core/error.h"
#include "core/mem.h"

#define F32(t) ((float *)qins_tensor_host(t))
#define I32(t) ((int32_t *)qins_tensor_host(t))

static qins_mem_owner *grad_owner(void) { return qins_mem_owner_get("backend.cpu"); }

/* ---------------------------------------------------------------- matmul */

/* Both products run on the outer-product GEMM (cpu_gemm_outer.c), which reads dy through strides,
 * so neither needs a transpose:
 *   dx [M,K]  = dy [M,N] . w [N,K]          (reduces over N)
 *   dw [N,K] += dy^T [N,M] . x [M,K]        (reduces over M)
 * Every output element is summed by one GEMM task in a fixed order. */

static inline float elem_f32(const void *src, qins_dtype dt, int64_t i) {
  if (dt == QINS_DT_F32) return ((const float *)src)[i];
  uint16_t h = ((const uint16_t *)src)[i];
  return dt == QINS_DT_F16 ? qins_f16_to_f32(h) : qins_bf16_to_f32(h);
}

typedef struct {
  const void *src;
  float *dst;
  qins_dtype dt;
} convert_job;

static void convert_range(void *user, int64_t i0, int64_t i1) {
  const convert_job *j = user;
  for (int64_t i = i0; i < i1; i++) j->dst[i] = elem_f32(j->src, j->dt, i);
}

/* f16/bf16 weights widened to f32 once per call (the GEMM reads each element M/6 times). */
static void convert_f32(qins_backend *be, const void *src, qins_dtype dt, int64_t n, float *dst) {
  convert_job j = {src, dst, dt};
  cpu_parallel(be, n, 16384, convert_range, &j);
}

typedef struct {
  const float *dy;
  float *dbias;
  int64_t m, n;
} bias_bwd_job;

/* dbias[o] += sum_r dy[r,o]: columns split over threads, rows summed in order. */
static void bias_bwd_cols(void *user, int64_t o0, int64_t o1) {
  const bias_bwd_job *j = user;
  for (int64_t o = o0; o < o1; o++) {
    float s = 0.0f;
    for (int64_t r = 0; r < j->m; r++) s += j->dy[r * j->n + o];
    j->dbias[o] += s;
  }
}

int cpu_matmul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                        qins_tensor *dx, qins_tensor *dw, qins_tensor *dbias) {
  int64_t n = w->shape[0], k = w->shape[1], m = qins_tensor_rows(x);
  const float *dyp = F32(dy);
  qins_tensor wtmp = {0};
  int rc = 0;
  if (dx) {
    const void *src = qins_tensor_host(w);
    float *wide = NULL;
    if (qins_dtype_is_quantized(w->dtype)) {
      /* Quantized weights: straight-through, the gradient flows through the dequantized values
       * (decoded by the backend's own dequantize op). */
      int64_t shape[2] = {n, k};
      rc = qins_tensor_init(&wtmp, "matmul_backward.w_dequant", QINS_DT_F32, 2, shape);
      if (!rc) rc = qins_tensor_alloc(be, &wtmp);
      if (!rc) rc = be->ops->dequantize ? be->ops->dequantize(be, w, &wtmp) : QINS_EUNSUPPORTED;
      if (rc) {
        if (wtmp.buf) qins_tensor_free(&wtmp);
        return qins_error_wrap(rc, "matmul_backward: straight-through decode of %s: ", w->name);
      }
      src = F32(&wtmp);
    } else if (w->dtype != QINS_DT_F32) {
      wide = qins_mem_alloc(grad_owner(), (size_t)(n * k > 0 ? n * k : 1) * sizeof(float));
      if (!wide)
        return qins_error_set(QINS_ENOMEM, "matmul_backward: no memory to widen %s [%lld, %lld] to f32", w->name,
                              (long long)n, (long long)k);
      convert_f32(be, src, w->dtype, n * k, wide);
      src = wide;
    }
    rc = cpu_gemm_outer(be, dyp, n, 1, src, k, F32(dx), m, k, n, 0);
    if (wtmp.buf) qins_tensor_free(&wtmp);
    qins_mem_free(grad_owner(), wide);
    if (rc) return qins_error_wrap(rc, "matmul_backward: dx of %s: ", w->name);
  }
  if (dw) {
    rc = cpu_gemm_outer(be, dyp, 1, n, F32(x), k, F32(dw), n, k, m, 1);
    if (rc) return qins_error_wrap(rc, "matmul_backward: dw of %s: ", w->name);
  }
  if (dbias) {
    bias_bwd_job j = {dyp, F32(dbias), m, n};
    cpu_parallel(be, n, 64, bias_bwd_cols, &j);
  }
  return 0;
}

/* ---------------------------------------------------------------- add, mul */

typedef struct {
  const float *g, *a, *b;
  float *out;
  int64_t rows, cols, nb;
} bin_job;

/* Column sums (a parameter broadcast over rows): out[c] += sum_r g[r,c] (* a[r,c] when a is set). */
static void colsum_cols(void *user, int64_t c0, int64_t c1) {
  const bin_job *j = user;
  for (int64_t c = c0; c < c1; c++) {
    float s = 0.0f;
    for (int64_t r = 0; r < j->rows; r++) s += j->g[r * j->cols + c] * (j->a ? j->a[r * j->cols + c] : 1.0f);
    j->out[c] += s;
  }
}

/* Elementwise products: out[i] = g[i] * b[i mod nb]. */
static void prod_range(void *user, int64_t i0, int64_t i1) {
  const bin_job *j = user;
  for (int64_t i = i0; i < i1; i++) j->out[i] = j->g[i] * j->b[j->nb == j->rows * j->cols ? i : i % j->nb];
}

int cpu_add_backward(qins_backend *be, const qins_tensor *dy, qins_tensor *db) {
  bin_job j = {F32(dy), NULL, NULL, F32(db), qins_tensor_rows(dy), qins_tensor_cols(dy), 0};
  cpu_parallel(be, j.cols, 64, colsum_cols, &j);
  return 0;
}

int cpu_mul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *a, const qins_tensor *b,
                     qins_tensor *da, qins_tensor *db) {
  int64_t n = qins_tensor_numel(a), cols = qins_tensor_cols(a);
  /* db first: da may alias dy. b shaped like a is an activation (overwrite); otherwise it is one
   * row broadcast over a's rows, a parameter (accumulate) -- even when a has a single row. */
  if (db) {
    if (qins_tensor_same_shape(a, b)) {
      bin_job j = {F32(dy), NULL, F32(a), F32(db), n / cols, cols, n};
      cpu_parallel(be, n, 4096, prod_range, &j);
    } else {
      bin_job j = {F32(dy), F32(a), NULL, F32(db), n / cols, cols, cols};
      cpu_parallel(be, cols, 64, colsum_cols, &j);
    }
  }
  if (da) {
    bin_job j = {F32(dy), NULL, F32(b), F32(da), n / cols, cols, qins_tensor_numel(b)};
    cpu_parallel(be, n, 4096, prod_range, &j);
  }
  return 0;
}

/* ---------------------------------------------------------------- norms */

typedef struct {
  const float *dy, *x, *w;
  float *dx, *dw, *db;
  float *mean, *rstd; /* per row, saved by pass 1 for the parameter pass */
  int64_t rows, d;
  float eps;
} norm_job;

/* RMSNorm: y = x r w, r = (mean(x^2)+eps)^-1/2; dx = r (dy w) - x r^3/D sum(dy w x). */
static void rms_bwd_rows(void *user, int64_t r0, int64_t r1) {
  const norm_job *j = user;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->x + r * j->d, *gr = j->dy + r * j->d;
    float *dxr = j->dx + r * j->d;
    double ss = 0.0, dot = 0.0;
    for (int64_t i = 0; i < j->d; i++) {
      ss += (double)xr[i] * xr[i];
      dot += (double)gr[i] * j->w[i] * xr[i];
    }
    double rs = 1.0 / sqrt(ss / (double)j->d + j->eps);
    float c = (float)(dot * rs * rs * rs / (double)j->d);
    j->rstd[r] = (float)rs;
    for (int64_t i = 0; i < j->d; i++) dxr[i] = (float)rs * gr[i] * j->w[i] - xr[i] * c;
  }
}

/* Parameter pass over columns: dw[i] += sum_r dy[r,i] xhat[r,i] (and db[i] += sum_r dy[r,i]). */
static void norm_bwd_cols(void *user, int64_t c0, int64_t c1) {
  const norm_job *j = user;
  for (int64_t i = c0; i < c1; i++) {
    float sw = 0.0f, sb = 0.0f;
    for (int64_t r = 0; r < j->rows; r++) {
      float g = j->dy[r * j->d + i];
      float xh = (j->x[r * j->d + i] - (j->mean ? j->mean[r] : 0.0f)) * j->rstd[r];
      sw += g * xh;
      sb += g;
    }
    if (j->dw) j->dw[i] += sw;
    if (j->db) j->db[i] += sb;
  }
}

int cpu_rmsnorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                         float eps, qins_tensor *dx, qins_tensor *dw) {
  int64_t rows = qins_tensor_rows(x);
  float *rstd = qins_mem_alloc(grad_owner(), (size_t)(rows ? rows : 1) * sizeof(float));
  if (!rstd) return QINS_ENOMEM;
  norm_job j = {F32(dy), F32(x), F32(w), F32(dx), dw ? F32(dw) : NULL, NULL, NULL, rstd, rows, qins_tensor_cols(x),
                eps};
  cpu_parallel(be, rows, 4, rms_bwd_rows, &j);
  if (dw) cpu_parallel(be, j.d, 16, norm_bwd_cols, &j);
  qins_mem_free(grad_owner(), rstd);
  return 0;
}

/* LayerNorm: xhat = (x - mu) r, y = xhat w + b; with g = dy w:
 * dx = r (g - mean(g) - xhat mean(g xhat)). */
static void ln_bwd_rows(void *user, int64_t r0, int64_t r1) {
  const norm_job *j = user;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->x + r * j->d, *gr = j->dy + r * j->d;
    float *dxr = j->dx + r * j->d;
    double mu = 0.0, var = 0.0;
    for (int64_t i = 0; i < j->d; i++) mu += xr[i];
    mu /= (double)j->d;
    for (int64_t i = 0; i < j->d; i++) var += ((double)xr[i] - mu) * ((double)xr[i] - mu);
    var /= (double)j->d;
    double rs = 1.0 / sqrt(var + j->eps);
    double sg = 0.0, sgx = 0.0;
    for (int64_t i = 0; i < j->d; i++) {
      double g = (double)gr[i] * j->w[i];
      sg += g;
      sgx += g * ((double)xr[i] - mu) * rs;
    }
    sg /= (double)j->d;
    sgx /= (double)j->d;
    for (int64_t i = 0; i < j->d; i++) {
      double xh = ((double)xr[i] - mu) * rs;
      dxr[i] = (float)(rs * ((double)gr[i] * j->w[i] - sg - xh * sgx));
    }
    j->mean[r] = (float)mu;
    j->rstd[r] = (float)rs;
  }
}

int cpu_layernorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                           float eps, qins_tensor *dx, qins_tensor *dw, qins_tensor *db) {
  int64_t rows = qins_tensor_rows(x);
  float *stats = qins_mem_alloc(grad_owner(), (size_t)(rows ? 2 * rows : 1) * sizeof(float));
  if (!stats) return QINS_ENOMEM;
  norm_job j = {F32(dy), F32(x), F32(w), F32(dx), dw ? F32(dw) : NULL, db ? F32(db) : NULL, stats, stats + rows,
                rows, qins_tensor_cols(x), eps};
  cpu_parallel(be, rows, 4, ln_bwd_rows, &j);
  if (dw || db) cpu_parallel(be, j.d, 16, norm_bwd_cols, &j);
  qins_mem_free(grad_owner(), stats);
  return 0;
}

/* ---------------------------------------------------------------- rope */

typedef struct {
  const float *g, *freq;
  const int32_t *pos;
  float *dx;
  int64_t h, d;
  int rot;
  float af;
  qins_rope_mode mode;
} rope_bwd_job;

/* One position per index: the transposed rotation of every head's pairs. */
static void rope_bwd_rows(void *user, int64_t t0, int64_t t1) {
  const rope_bwd_job *j = user;
  int half = j->rot / 2;
  for (int64_t t = t0; t < t1; t++) {
    for (int i = 0; i < half; i++) {
      /* the angle exactly as the forward computes it (f32 product), so the pair are exact transposes */
      float angle = (float)j->pos[t] * j->freq[i];
      float c = cosf(angle) * j->af, s = sinf(angle) * j->af;
      int64_t i0 = j->mode == QINS_ROPE_INTERLEAVED ? 2 * i : i;
      int64_t i1 = j->mode == QINS_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
      for (int64_t hh = 0; hh < j->h; hh++) {
        const float *gr = j->g + (t * j->h + hh) * j->d;
        float *dr = j->dx + (t * j->h + hh) * j->d;
        float g0 = gr[i0], g1 = gr[i1];
        dr[i0] = g0 * c + g1 * s;
        dr[i1] = -g0 * s + g1 * c;
      }
    }
    if (j->dx != j->g)
      for (int64_t hh = 0; hh < j->h; hh++)
        for (int64_t i = j->rot; i < j->d; i++) j->dx[(t * j->h + hh) * j->d + i] = j->g[(t * j->h + hh) * j->d + i];
  }
}

int cpu_rope_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *pos, const qins_tensor *inv_freq,
                      int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *dx) {
  rope_bwd_job j = {F32(dy), F32(inv_freq), I32(pos), F32(dx), dy->shape[1], dy->shape[2], rot_dim, attn_factor, mode};
  cpu_parallel(be, dy->shape[0], 4, rope_bwd_rows, &j);
  return 0;
}

/* ---------------------------------------------------------------- softmax and activations */

typedef struct {
  const float *x, *y, *up, *g;
  float *d1, *d2;
  int64_t n; /* row length (softmax); element count (gelu) */
} act_job;

static void softmax_bwd_rows(void *user, int64_t r0, int64_t r1) {
  const act_job *j = user;
  for (int64_t r = r0; r < r1; r++) {
    const float *yr = j->y + r * j->n, *gr = j->g + r * j->n;
    float *dr = j->d1 + r * j->n;
    double dot = 0.0;
    for (int64_t i = 0; i < j->n; i++) dot += (double)gr[i] * yr[i];
    for (int64_t i = 0; i < j->n; i++) dr[i] = yr[i] * (gr[i] - (float)dot);
  }
}

int cpu_softmax_backward(qins_backend *be, const qins_tensor *y, const qins_tensor *dy, qins_tensor *dx) {
  act_job j = {NULL, F32(y), NULL, F32(dy), F32(dx), NULL, qins_tensor_cols(y)};
  cpu_parallel(be, qins_tensor_rows(y), 4, softmax_bwd_rows, &j);
  return 0;
}

static inline float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

/* silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
static void silu_bwd_range(void *user, int64_t i0, int64_t i1) {
  const act_job *j = user;
  for (int64_t i = i0; i < i1; i++) {
    float s = sigmoidf(j->x[i]);
    j->d1[i] = j->g[i] * s * (1.0f + j->x[i] * (1.0f - s));
  }
}

/* gelu_tanh'(x) = (1 + t)/2 + x (1 - t^2) c (1 + 3 a x^2) / 2, t = tanh(c (x + a x^3)).
 * With AVX2, t = 1 - 2 / (e^(2u) + 1) on 8 lanes (the vector exp; absolute error in t ~1e-7);
 * the tail and the plain build use tanhf. Each element's path depends only on its index. */
static void gelu_bwd_range(void *user, int64_t b0, int64_t b1) {
  const act_job *j = user;
  const float c = 0.7978845608028654f, a = 0.044715f;
  /* the range is in groups of 8 elements: which path an element takes depends only on its index */
  int64_t i = b0 * 8, i1 = b1 * 8 < j->n ? b1 * 8 : j->n;
#ifdef QINS_CPU_VEXP
  const __m256 vc = _mm256_set1_ps(c), va = _mm256_set1_ps(a), one = _mm256_set1_ps(1.0f),
               half = _mm256_set1_ps(0.5f), two = _mm256_set1_ps(2.0f), va3 = _mm256_set1_ps(3.0f * a);
  for (; i + 8 <= i1; i += 8) {
    __m256 v = _mm256_loadu_ps(j->x + i), v2 = _mm256_mul_ps(v, v);
    __m256 u = _mm256_mul_ps(vc, _mm256_fmadd_ps(_mm256_mul_ps(va, v2), v, v));
    __m256 e = cpu_vexp(_mm256_mul_ps(two, u));
    __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
    __m256 du = _mm256_mul_ps(vc, _mm256_fmadd_ps(va3, v2, one));
    __m256 d = _mm256_mul_ps(half, _mm256_add_ps(one, t));
    d = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_fnmadd_ps(t, t, one)), du, d);
    _mm256_storeu_ps(j->d1 + i, _mm256_mul_ps(_mm256_loadu_ps(j->g + i), d));
  }
#endif
  for (; i < i1; i++) {
    float v = j->x[i];
    float t = tanhf(c * (v + a * v * v * v));
    float du = c * (1.0f + 3.0f * a * v * v);
    j->d1[i] = j->g[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
  }
}

/* silu(gate) * up: dgate = dy up silu'(gate), dup = dy silu(gate) */
static void silu_mul_bwd_range(void *user, int64_t i0, int64_t i1) {
  const act_job *j = user;
  for (int64_t i = i0; i < i1; i++) {
    float x = j->x[i], u = j->up[i], g = j->g[i];
    float s = sigmoidf(x);
    if (j->d1) j->d1[i] = g * u * s * (1.0f + x * (1.0f - s));
    if (j->d2) j->d2[i] = g * x * s;
  }
}

int cpu_silu_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx) {
  act_job j = {F32(x), NULL, NULL, F32(dy), F32(dx), NULL, 0};
  cpu_parallel(be, qins_tensor_numel(x), 4096, silu_bwd_range, &j);
  return 0;
}

int cpu_gelu_tanh_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx) {
  act_job j = {F32(x), NULL, NULL, F32(dy), F32(dx), NULL, qins_tensor_numel(x)};
  cpu_parallel(be, (j.n + 7) / 8, 512, gelu_bwd_range, &j);
  return 0;
}

int cpu_silu_mul_backward(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, const qins_tensor *dy,
                          qins_tensor *dgate, qins_tensor *dup) {
  act_job j = {F32(gate), NULL, F32(up), F32(dy), dgate ? F32(dgate) : NULL, dup ? F32(dup) : NULL, 0};
  cpu_parallel(be, qins_tensor_numel(gate), 4096, silu_mul_bwd_range, &j);
  return 0;
}

/* ---------------------------------------------------------------- embedding */

typedef struct {
  const int32_t *ids;
  const float *dy;
  float *dt;
  int64_t m, d;
} emb_bwd_job;

/* Each thread owns a range of columns of every table row, so repeated ids need no locking. */
static void emb_bwd_cols(void *user, int64_t c0, int64_t c1) {
  const emb_bwd_job *j = user;
  for (int64_t t = 0; t < j->m; t++) {
    float *row = j->dt + (int64_t)j->ids[t] * j->d;
    const float *g = j->dy + t * j->d;
    for (int64_t c = c0; c < c1; c++) row[c] += g[c];
  }
}

int cpu_embed_backward(qins_backend *be, const qins_tensor *ids, const qins_tensor *dy, qins_tensor *dtable) {
  emb_bwd_job j = {I32(ids), F32(dy), F32(dtable), qins_tensor_numel(ids), dtable->shape[1]};
  for (int64_t t = 0; t < j.m; t++)
    if (j.ids[t] < 0 || j.ids[t] >= dtable->shape[0])
      return qins_error_set(QINS_EINPUT, "embed_backward: id %d at position %lld outside vocabulary of %lld",
                            j.ids[t], (long long)t, (long long)dtable->shape[0]);
  cpu_parallel(be, j.d, 16, emb_bwd_cols, &j);
  return 0;
}

/* ---------------------------------------------------------------- attention */

typedef struct {
  const float *q, *k, *v, *dout;
  float *dq, *dk, *dv;
  float *p, *ds; /* [M*Hq, Tv]: probabilities and score gradients, rows zero past the causal limit */
  int64_t m, hq, hkv, d, t, tv, pos0;
  float scale;
} attn_bwd_job;

/* Pass 1, one (query, head) per index: recompute the softmax row, then
 * dP_p = dout . v_p, dS_p = P_p (dP_p - sum_p' P_p' dP_p'), dq = scale * sum_p dS_p k_p. */
static void attn_bwd_queries(void *user, int64_t b, int64_t e) {
  const attn_bwd_job *j = user;
  int64_t group = j->hq / j->hkv;
  for (int64_t idx = b; idx < e; idx++) {
    int64_t t = idx / j->hq, h = idx % j->hq, kvh = h / group;
    int64_t visible = j->pos0 + t + 1;
    const float *qr = j->q + idx * j->d, *gr = j->dout + idx * j->d;
    float *pr = j->p + idx * j->tv, *sr = j->ds + idx * j->tv;
    float mx = -INFINITY;
    for (int64_t p = 0; p < visible; p++) {
      const float *kr = j->k + (p * j->hkv + kvh) * j->d;
      float s = 0.0f;
      for (int64_t i = 0; i < j->d; i++) s += qr[i] * kr[i];
      s *= j->scale;
      pr[p] = s;
      mx = s > mx ? s : mx;
    }
    double sum = 0.0;
    for (int64_t p = 0; p < visible; p++) {
      pr[p] = expf(pr[p] - mx);
      sum += pr[p];
    }
    double dsum = 0.0;
    for (int64_t p = 0; p < visible; p++) {
      pr[p] = (float)(pr[p] / sum);
      const float *vr = j->v + (p * j->hkv + kvh) * j->d;
      float dp = 0.0f;
      for (int64_t i = 0; i < j->d; i++) dp += gr[i] * vr[i];
      sr[p] = dp;
      dsum += (double)pr[p] * dp;
    }
    float *dqr = j->dq + idx * j->d;
    for (int64_t i = 0; i < j->d; i++) dqr[i] = 0.0f;
    for (int64_t p = 0; p < visible; p++) {
      sr[p] = pr[p] * (sr[p] - (float)dsum);
      const float *kr = j->k + (p * j->hkv + kvh) * j->d;
      float a = sr[p] * j->scale;
      for (int64_t i = 0; i < j->d; i++) dqr[i] += a * kr[i];
    }
    for (int64_t p = visible; p < j->tv; p++) pr[p] = sr[p] = 0.0f;
  }
}

/* Pass 2, one (key position, KV head) per index: sums over the queries that see it and the query
 * heads of its group. dk = scale * sum dS q, dv = sum P dout. */
static void attn_bwd_keys(void *user, int64_t b, int64_t e) {
  const attn_bwd_job *j = user;
  int64_t group = j->hq / j->hkv;
  for (int64_t idx = b; idx < e; idx++) {
    int64_t p = idx / j->hkv, kvh = idx % j->hkv;
    float *dkr = j->dk + idx * j->d, *dvr = j->dv + idx * j->d;
    for (int64_t i = 0; i < j->d; i++) dkr[i] = dvr[i] = 0.0f;
    if (p >= j->tv) continue;
    int64_t t0 = p > j->pos0 ? p - j->pos0 : 0;
    for (int64_t t = t0; t < j->m; t++) {
      for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
        int64_t row = t * j->hq + h;
        float ds = j->ds[row * j->tv + p] * j->scale, pw = j->p[row * j->tv + p];
        const float *qr = j->q + row * j->d, *gr = j->dout + row * j->d;
        for (int64_t i = 0; i < j->d; i++) {
          dkr[i] += ds * qr[i];
          dvr[i] += pw * gr[i];
        }
      }
    }
  }
}

int cpu_attention_backward(qins_backend *be, const qins_tensor *q, const qins_tensor *k, const qins_tensor *v,
                           int64_t pos0, float scale, const qins_tensor *dout, qins_tensor *dq, qins_tensor *dk,
                           qins_tensor *dv) {
  attn_bwd_job j = {F32(q), F32(k), F32(v), F32(dout), F32(dq), F32(dk), F32(dv), NULL, NULL,
                    q->shape[0], q->shape[1], k->shape[1], q->shape[2], k->shape[0], pos0 + q->shape[0], pos0, scale};
  size_t cells = (size_t)(j.m * j.hq * j.tv);
  /* Two [M*Hq, pos0+M] scratch matrices: memory grows with the square of the sequence, which is
   * fine for the training lengths used here; a tiled (flash-style) pass would remove it. */
  float *scratch = qins_mem_alloc(grad_owner(), (cells ? 2 * cells : 1) * sizeof(float));
  if (!scratch)
    return qins_error_set(QINS_ENOMEM, "attention_backward: no memory for %zu score cells (%lld queries x %lld heads)",
                          2 * cells, (long long)j.m, (long long)j.hq);
  j.p = scratch;
  j.ds = scratch + cells;
  cpu_parallel(be, j.m * j.hq, 1, attn_bwd_queries, &j);
  cpu_parallel(be, j.t * j.hkv, 1, attn_bwd_keys, &j);
  qins_mem_free(grad_owner(), scratch);
  return 0;
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
  const float *logits;
  const int32_t *targets;
  float *loss, *dlogits;
  int64_t v;
  float scale;
} ce_job;

/* One row: max, then e_i = exp(l_i - max) summed in double (and kept in dlogits), then
 * dlogits = scale (e_i / sum - [i == target]). Three streaming passes with the vector exp; the
 * columns past the last multiple of 8 take expf. Rows are split over threads, columns never, so a
 * row's result does not depend on the thread count. */
static void ce_rows(void *user, int64_t r0, int64_t r1) {
  const ce_job *j = user;
  int64_t v = j->v;
  for (int64_t r = r0; r < r1; r++) {
    const float *lr = j->logits + r * v;
    float *dr = j->dlogits ? j->dlogits + r * v : NULL;
    int32_t tgt = j->targets[r];
    if (tgt < 0) {
      j->loss[r] = 0.0f;
      if (dr) memset(dr, 0, (size_t)v * sizeof(float));
      continue;
    }
    float ltgt = lr[tgt]; /* read before dlogits (which may alias logits) is written */
    int64_t i = 0;
    float mx = lr[0];
    double sum = 0.0;
#ifdef QINS_CPU_VEXP
    int64_t v8 = v / 8 * 8;
    if (v8) {
      __m256 m8 = _mm256_loadu_ps(lr);
      for (i = 8; i < v8; i += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(lr + i));
      float lanes[8];
      _mm256_storeu_ps(lanes, m8);
      for (int l = 0; l < 8; l++) mx = lanes[l] > mx ? lanes[l] : mx;
    }
    for (; i < v; i++) mx = lr[i] > mx ? lr[i] : mx;
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    __m256 mv = _mm256_set1_ps(mx);
    for (i = 0; i < v8; i += 8) {
      __m256 e = cpu_vexp(_mm256_sub_ps(_mm256_loadu_ps(lr + i), mv));
      if (dr) _mm256_storeu_ps(dr + i, e);
      s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
      s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes_d[4];
    _mm256_storeu_pd(lanes_d, _mm256_add_pd(s0, s1));
    sum = (lanes_d[0] + lanes_d[1]) + (lanes_d[2] + lanes_d[3]);
#else
    for (i = 1; i < v; i++) mx = lr[i] > mx ? lr[i] : mx;
    i = 0;
#endif
    for (; i < v; i++) {
      float e = expf(lr[i] - mx);
      if (dr) dr[i] = e;
      sum += e;
    }
    j->loss[r] = (float)((double)mx + log(sum) - (double)ltgt);
    if (!dr) continue;
    float f = (float)((double)j->scale / sum);
    i = 0;
#ifdef QINS_CPU_VEXP
    __m256 fv = _mm256_set1_ps(f);
    for (; i < v8; i += 8) _mm256_storeu_ps(dr + i, _mm256_mul_ps(_mm256_loadu_ps(dr + i), fv));
#endif
    for (; i < v; i++) dr[i] *= f;
    dr[tgt] -= j->scale;
  }
}

int cpu_cross_entropy(qins_backend *be, const qins_tensor *logits, const qins_tensor *targets, qins_tensor *loss,
                      qins_tensor *dlogits, float scale) {
  int64_t m = qins_tensor_rows(logits), v = qins_tensor_cols(logits);
  const int32_t *tg = I32(targets);
  int64_t valid = 0;
  for (int64_t r = 0; r < m; r++) {
    if (tg[r] >= v)
      return qins_error_set(QINS_EINPUT, "cross_entropy: target %d of row %lld outside vocabulary of %lld", tg[r],
                            (long long)r, (long long)v);
    valid += tg[r] >= 0;
  }
  if (scale == 0.0f) scale = valid ? 1.0f / (float)valid : 0.0f;
  ce_job j = {F32(logits), tg, F32(loss), dlogits ? F32(dlogits) : NULL, v, scale};
  cpu_parallel(be, m, 1, ce_rows, &j);
  return 0;
}

/* ---------------------------------------------------------------- optimizer */

typedef struct adamw_job {
  float *w, *m, *v;
  const float *g;
  qins_adamw_step_args a;
} adamw_job;

/* The same f32 expressions, in the same order, as core/train/optim.c's plain AdamW (ISO C: no fma
 * contraction), so the two agree bit for bit. */
static void adamw_range(void *user, int64_t i0, int64_t i1) {
  const adamw_job *j = user;
  const qins_adamw_step_args *a = &j->a;
  for (int64_t i = i0; i < i1; i++) {
    float g = j->g[i] * a->gmul;
    float w = j->w[i];
    if (a->do_decay) w *= a->decay;
    float m = j->m[i] + a->w1 * (g - j->m[i]);
    float v = j->v[i] * a->beta2 + a->w2 * g * g;
    float denom = sqrtf(v) / a->bc2_sqrt + a->eps;
    j->m[i] = m;
    j->v[i] = v;
    j->w[i] = w - a->step_size * (m / denom);
  }
}

int cpu_adamw_step(qins_backend *be, qins_tensor *w, const qins_tensor *g, qins_tensor *m, qins_tensor *v,
                   const qins_adamw_step_args *a) {
  adamw_job j = {F32(w), F32(m), F32(v), F32(g), *a};
  cpu_parallel(be, qins_tensor_numel(w), 16384, adamw_range, &j);
  return 0;
}

