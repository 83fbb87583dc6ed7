/* The cpu reference ops: plain single-threaded loops, written to be read and checked, not to be
 * fast (QINS_CPU_REFERENCE=1 selects them; cpu_ops.c holds the fast path). Shapes were validated
 * by the qins_op_* wrappers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/cpu_ops.h"
#include "core/cpu/cpu_qkern.h"
#include "core/error.h"
#include "core/mem.h"

#define F32(t) ((float *)qins_tensor_host(t))
#define I32(t) ((int32_t *)qins_tensor_host(t))

/* Read element i of a float-typed weight as f32. */
static inline float load_weight(const void *base, qins_dtype dt, int64_t i) {
  switch (dt) {
  case QINS_DT_F16: return qins_f16_to_f32(((const uint16_t *)base)[i]);
  case QINS_DT_BF16: return qins_bf16_to_f32(((const uint16_t *)base)[i]);
  default: return ((const float *)base)[i];
  }
}

/* ---------------------------------------------------------------- matmul */

int cpu_ref_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                   qins_tensor *y) {
  if (qins_dtype_is_quantized(w->dtype)) return cpu_qmatmul_unfused(be, x, w, bias, y); /* cpu_qmatmul.c */
  int64_t m = qins_tensor_rows(x), n = w->shape[0], k = w->shape[1];
  const void *pw = qins_tensor_host(w);
  for (int64_t r = 0; r < m; r++)
    for (int64_t o = 0; o < n; o++) {
      float acc = 0.0f;
      for (int64_t i = 0; i < k; i++) acc += F32(x)[r * k + i] * load_weight(pw, w->dtype, o * k + i);
      F32(y)[r * n + o] = acc + (bias ? F32(bias)[o] : 0.0f);
    }
  return 0;
}

/* ---------------------------------------------------------------- elementwise */

int cpu_ref_add(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) {
  const float *pa = F32(a), *pb = F32(b);
  float *py = F32(y);
  int64_t n = qins_tensor_numel(a), nb = qins_tensor_numel(b);
  for (int64_t i = 0; i < n; i++) py[i] = pa[i] + pb[nb == n ? i : i % nb];
  return 0;
}

int cpu_ref_mul(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) {
  const float *pa = F32(a), *pb = F32(b);
  float *py = F32(y);
  int64_t n = qins_tensor_numel(a), nb = qins_tensor_numel(b);
  for (int64_t i = 0; i < n; i++) py[i] = pa[i] * pb[nb == n ? i : i % nb];
  return 0;
}

static inline float silu(float v) { return v / (1.0f + expf(-v)); }

int cpu_ref_silu(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  const float *px = F32(x);
  float *py = F32(y);
  int64_t n = qins_tensor_numel(x);
  for (int64_t i = 0; i < n; i++) py[i] = silu(px[i]);
  return 0;
}

int cpu_ref_gelu_tanh(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  const float *px = F32(x);
  float *py = F32(y);
  int64_t n = qins_tensor_numel(x);
  const float c = 0.7978845608028654f; /* sqrt(2/pi) */
  for (int64_t i = 0; i < n; i++) {
    float v = px[i];
    /* 0.5 (1 + tanh(u)) == 1 / (1 + exp(-2u)): the same function without the cancellation that
     * makes 1 + tanh(u) lose every digit for negative inputs */
    py[i] = v / (1.0f + expf(-2.0f * c * (v + 0.044715f * v * v * v)));
  }
  return 0;
}

int cpu_ref_silu_mul(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y) {
  const float *pg = F32(gate), *pu = F32(up);
  float *py = F32(y);
  int64_t n = qins_tensor_numel(gate);
  for (int64_t i = 0; i < n; i++) py[i] = silu(pg[i]) * pu[i];
  return 0;
}

/* ---------------------------------------------------------------- norms and softmax */

int cpu_ref_rmsnorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y) {
  int64_t rows = qins_tensor_rows(x), d = qins_tensor_cols(x);
  const float *pw = F32(w);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = F32(x) + r * d;
    float *yr = F32(y) + r * d;
    double ss = 0.0; /* double keeps long rows exact enough to match fp32 references */
    for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
    float inv = 1.0f / sqrtf((float)(ss / (double)d) + eps);
    for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * inv * pw[i];
  }
  return 0;
}

int cpu_ref_layernorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b, float eps,
                  qins_tensor *y) {
  int64_t rows = qins_tensor_rows(x), d = qins_tensor_cols(x);
  const float *pw = F32(w), *pb = b ? F32(b) : NULL;
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = F32(x) + r * d;
    float *yr = F32(y) + r * d;
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < d; i++) mean += xr[i];
    mean /= (double)d;
    for (int64_t i = 0; i < d; i++) var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
    var /= (double)d;
    float inv = 1.0f / sqrtf((float)var + eps);
    for (int64_t i = 0; i < d; i++) yr[i] = ((float)(xr[i] - mean)) * inv * pw[i] + (pb ? pb[i] : 0.0f);
  }
  return 0;
}

int cpu_ref_softmax(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  int64_t rows = qins_tensor_rows(x), n = qins_tensor_cols(x);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = F32(x) + r * n;
    float *yr = F32(y) + r * n;
    float mx = xr[0];
    for (int64_t i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
      yr[i] = expf(xr[i] - mx);
      sum += yr[i];
    }
    for (int64_t i = 0; i < n; i++) yr[i] /= sum;
  }
  return 0;
}

/* ---------------------------------------------------------------- rope */

int cpu_ref_rope(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq, int rot_dim,
             float attn_factor, qins_rope_mode mode, qins_tensor *y) {
  int64_t m = x->shape[0], h = x->shape[1], d = x->shape[2];
  const float *px = F32(x), *pf = F32(inv_freq);
  const int32_t *pp = I32(pos);
  float *py = F32(y);
  int half = rot_dim / 2;
  for (int64_t t = 0; t < m; t++) {
    for (int64_t hh = 0; hh < h; hh++) {
      const float *xr = px + (t * h + hh) * d;
      float *yr = py + (t * h + hh) * d;
      for (int i = 0; i < half; i++) {
        float angle = (float)pp[t] * pf[i];
        float c = cosf(angle) * attn_factor, s = sinf(angle) * attn_factor;
        int64_t i0 = mode == QINS_ROPE_INTERLEAVED ? 2 * i : i;
        int64_t i1 = mode == QINS_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        float a = xr[i0], b = xr[i1];
        yr[i0] = a * c - b * s;
        yr[i1] = a * s + b * c;
      }
      if (yr != xr)
        for (int64_t i = rot_dim; i < d; i++) yr[i] = xr[i];
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- embedding */

int cpu_ref_embed(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y) {
  int64_t m = qins_tensor_numel(ids), d = table->shape[1];
  const void *base = qins_tensor_host(table);
  for (int64_t t = 0; t < m; t++) {
    int64_t id = I32(ids)[t];
    float *yr = F32(y) + t * d;
    if (id < 0 || id >= table->shape[0])
      return qins_error_set(QINS_EINPUT, "embed: id %lld at position %lld outside vocabulary of %lld", (long long)id,
                            (long long)t, (long long)table->shape[0]);
    for (int64_t i = 0; i < d; i++) yr[i] = load_weight(base, table->dtype, id * d + i);
  }
  return 0;
}

/* ---------------------------------------------------------------- attention */

int cpu_ref_attention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                      int64_t pos0, float scale, qins_tensor *out) {
  if (v_cache->dtype == QINS_DT_QINS8) return cpu_qattention(be, q, k_cache, v_cache, pos0, scale, out);
  if (v_cache->dtype != QINS_DT_F32)
    return qins_error_set(QINS_EUNSUPPORTED, "attention: cpu has no kernel yet for a %s V cache",
                          qins_dtype_name(v_cache->dtype));
  int64_t m = q->shape[0], hq = q->shape[1], d = q->shape[2], hkv = k_cache->shape[1];
  const float *pq = F32(q), *pk = F32(k_cache), *pv = F32(v_cache);
  float *scores = malloc((size_t)(pos0 + m) * sizeof(float));
  if (!scores) return qins_error_set(QINS_ENOMEM, "attention: no memory for %lld scores", (long long)(pos0 + m));
  for (int64_t t = 0; t < m; t++)
    for (int64_t h = 0; h < hq; h++) {
      int64_t kvh = h / (hq / hkv), visible = pos0 + t + 1; /* causal: positions 0..pos0+t */
      const float *qr = pq + (t * hq + h) * d;
      float mx = -INFINITY, sum = 0.0f;
      for (int64_t p = 0; p < visible; p++) {
        float s = 0.0f;
        for (int64_t i = 0; i < d; i++) s += qr[i] * pk[(p * hkv + kvh) * d + i];
        scores[p] = s * scale;
        mx = scores[p] > mx ? scores[p] : mx;
      }
      for (int64_t p = 0; p < visible; p++) sum += (scores[p] = expf(scores[p] - mx));
      float *o = F32(out) + (t * hq + h) * d;
      for (int64_t i = 0; i < d; i++) o[i] = 0.0f;
      for (int64_t p = 0; p < visible; p++)
        for (int64_t i = 0; i < d; i++) o[i] += scores[p] / sum * pv[(p * hkv + kvh) * d + i];
    }
  free(scores);
  return 0;
}

/* ---------------------------------------------------------------- argmax, topk */

int cpu_ref_argmax(qins_backend *be, const qins_tensor *x, qins_tensor *idx) {
  int64_t rows = qins_tensor_rows(x), n = qins_tensor_cols(x);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = F32(x) + r * n;
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
      if (xr[i] > xr[best]) best = i;
    I32(idx)[r] = (int32_t)best;
  }
  return 0;
}

int cpu_ref_topk(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx) {
  int64_t rows = qins_tensor_rows(x), n = qins_tensor_cols(x);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = F32(x) + r * n;
    float *vr = F32(values) + r * k;
    int32_t *ir = I32(idx) + r * k;
    int filled = 0;
    /* insertion into a sorted list of k: fine for the small k samplers use */
    for (int64_t i = 0; i < n; i++) {
      float v = xr[i];
      if (filled == k && !(v > vr[k - 1])) continue;
      int p = filled < k ? filled++ : k - 1;
      while (p > 0 && v > vr[p - 1]) {
        vr[p] = vr[p - 1];
        ir[p] = ir[p - 1];
        p--;
      }
      vr[p] = v;
      ir[p] = (int32_t)i;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- copy, cast */

int cpu_ref_copy(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  memmove(qins_tensor_host(dst), qins_tensor_host(src), qins_tensor_nbytes(src));
  return 0;
}

int cpu_ref_cast(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  int64_t n = qins_tensor_numel(src);
  const void *ps = qins_tensor_host(src);
  void *pd = qins_tensor_host(dst);
  for (int64_t i = 0; i < n; i++) {
    float v = load_weight(ps, src->dtype, i);
    switch (dst->dtype) {
    case QINS_DT_F16: ((uint16_t *)pd)[i] = qins_f32_to_f16(v); break;
    case QINS_DT_BF16: ((uint16_t *)pd)[i] = qins_f32_to_bf16(v); break;
    default: ((float *)pd)[i] = v; break;
    }
  }
  return 0;
}
