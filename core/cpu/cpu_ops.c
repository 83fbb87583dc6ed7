/* The cpu fast path for every op except matmul (cpu_matmul.c) and the codec (cpu_codec.c).
 *
 * Same results as the reference loops in cpu_ref.c within the tolerances of tests/test_ops.c, but:
 * work is split over the thread pool wherever there is enough of it (rows, heads, element chunks),
 * inner loops are simple stride-1 loops gcc vectorises at -O3 -march=x86-64-v3 (sums are kept in
 * 8 independent lanes, so no reassociation is needed), and scratch memory comes from the pool's
 * per-thread buffers instead of malloc. Shapes were validated by the qins_op_* wrappers. */
#include <math.h>
#include <string.h>

#include "core/cpu/cpu_ops.h"
#include "core/cpu/cpu_qkern.h"
#include "core/error.h"

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#define QINS_CPU_F16C 1
#endif

#define F32(t) ((float *)qins_tensor_host(t))
#define I32(t) ((int32_t *)qins_tensor_host(t))

/* Elements of cheap work (an add) a thread should get at least; fewer run on the calling thread. */
#define GRAIN 16384

/* Rows per task so that each task has about GRAIN elements. */
static int64_t rows_grain(int64_t cols, int64_t weight) {
  int64_t r = GRAIN / (cols * weight > 0 ? cols * weight : 1);
  return r < 1 ? 1 : r;
}

/* ---------------------------------------------------------------- conversions */

static void to_f32(float *restrict dst, const void *restrict src, qins_dtype dt, int64_t n) {
  if (dt == QINS_DT_F32) {
    memcpy(dst, src, (size_t)n * 4);
    return;
  }
  const uint16_t *s = src;
  int64_t i = 0;
  if (dt == QINS_DT_BF16) {
    for (; i < n; i++) {
      uint32_t u = (uint32_t)s[i] << 16;
      memcpy(&dst[i], &u, 4);
    }
    return;
  }
#ifdef QINS_CPU_F16C
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#endif
  for (; i < n; i++) dst[i] = qins_f16_to_f32(s[i]);
}

static void from_f32(void *restrict dst, const float *restrict src, qins_dtype dt, int64_t n) {
  if (dt == QINS_DT_F32) {
    memcpy(dst, src, (size_t)n * 4);
    return;
  }
  uint16_t *d = dst;
  int64_t i = 0;
  if (dt == QINS_DT_BF16) {
    for (; i < n; i++) {
      uint32_t u;
      memcpy(&u, &src[i], 4);
      /* round to nearest even; NaN stays a (quiet) NaN */
      d[i] = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40) : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
    }
    return;
  }
#ifdef QINS_CPU_F16C
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; i++) d[i] = qins_f32_to_f16(src[i]);
}

/* ---------------------------------------------------------------- elementwise */

typedef struct ew_job {
  const float *a, *b;
  float *y;
  int64_t n, nb; /* nb == n: full b; else b is one row of nb (broadcast) */
  int op;        /* 0 add, 1 mul, 2 silu, 3 gelu_tanh, 4 silu_mul */
} ew_job;

static inline float silu1(float v) { return v / (1.0f + expf(-v)); }

static inline float gelu1(float v) {
  /* 0.5 (1 + tanh(u)) == 1 / (1 + exp(-2u)), without 1 + tanh(u) cancelling for negative inputs */
  return v / (1.0f + expf(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
}

/* y may alias a (in place), so a and y are not restrict. */
static void ew_range(void *user, int64_t i0, int64_t i1) {
  const ew_job *j = user;
  const float *a = j->a, *b = j->b;
  float *y = j->y;
  switch (j->op) {
  case 0:
  case 1:
    if (j->nb == j->n) {
      if (j->op == 0) for (int64_t i = i0; i < i1; i++) y[i] = a[i] + b[i];
      else for (int64_t i = i0; i < i1; i++) y[i] = a[i] * b[i];
    } else {
      /* broadcast: the range is in rows of nb */
      for (int64_t r = i0; r < i1; r++) {
        const float *ar = a + r * j->nb;
        float *yr = y + r * j->nb;
        if (j->op == 0) for (int64_t i = 0; i < j->nb; i++) yr[i] = ar[i] + b[i];
        else for (int64_t i = 0; i < j->nb; i++) yr[i] = ar[i] * b[i];
      }
    }
    break;
  case 2: for (int64_t i = i0; i < i1; i++) y[i] = silu1(a[i]); break;
  case 3: for (int64_t i = i0; i < i1; i++) y[i] = gelu1(a[i]); break;
  default: for (int64_t i = i0; i < i1; i++) y[i] = silu1(a[i]) * b[i]; break;
  }
}

static int ew_run(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y, int op) {
  ew_job j = {F32(a), b ? F32(b) : NULL, F32(y), qins_tensor_numel(a), b ? qins_tensor_numel(b) : 0, op};
  if (op <= 1 && j.nb != j.n) cpu_parallel(be, j.n / j.nb, rows_grain(j.nb, 1), ew_range, &j);
  else cpu_parallel(be, j.n, op <= 1 ? GRAIN : GRAIN / 16, ew_range, &j); /* exp costs ~16 adds */
  return 0;
}

int cpu_add(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) { return ew_run(be, a, b, y, 0); }
int cpu_mul(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y) { return ew_run(be, a, b, y, 1); }
int cpu_silu(qins_backend *be, const qins_tensor *x, qins_tensor *y) { return ew_run(be, x, NULL, y, 2); }
int cpu_gelu_tanh(qins_backend *be, const qins_tensor *x, qins_tensor *y) { return ew_run(be, x, NULL, y, 3); }
int cpu_silu_mul(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y) {
  return ew_run(be, gate, up, y, 4);
}

/* ---------------------------------------------------------------- norms and softmax */

typedef struct row_job {
  const float *x, *w, *b;
  float *y;
  int64_t d;
  float eps;
} row_job;

/* Sum of x[i] * x[i] (sq) or of x[i] in double, in 8 lanes so the loop vectorises. */
static double lane_sum(const float *restrict x, int64_t n, double shift, int sq) {
  double l[8] = {0};
  int64_t i = 0;
  if (sq)
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; k++) l[k] += ((double)x[i + k] - shift) * ((double)x[i + k] - shift);
  else
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; k++) l[k] += (double)x[i + k];
  double s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; i++) s += sq ? ((double)x[i] - shift) * ((double)x[i] - shift) : (double)x[i];
  return s;
}

static void rmsnorm_rows(void *user, int64_t r0, int64_t r1) {
  const row_job *j = user;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->x + r * j->d;
    float *yr = j->y + r * j->d; /* may alias xr */
    float inv = 1.0f / sqrtf((float)(lane_sum(xr, j->d, 0.0, 1) / (double)j->d) + j->eps);
    for (int64_t i = 0; i < j->d; i++) yr[i] = xr[i] * inv * j->w[i];
  }
}

static void layernorm_rows(void *user, int64_t r0, int64_t r1) {
  const row_job *j = user;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->x + r * j->d;
    float *yr = j->y + r * j->d;
    double mean = lane_sum(xr, j->d, 0.0, 0) / (double)j->d;
    double var = lane_sum(xr, j->d, mean, 1) / (double)j->d;
    float inv = 1.0f / sqrtf((float)var + j->eps), m = (float)mean;
    if (j->b) for (int64_t i = 0; i < j->d; i++) yr[i] = (xr[i] - m) * inv * j->w[i] + j->b[i];
    else for (int64_t i = 0; i < j->d; i++) yr[i] = (xr[i] - m) * inv * j->w[i];
  }
}

int cpu_rmsnorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y) {
  row_job j = {F32(x), F32(w), NULL, F32(y), qins_tensor_cols(x), eps};
  cpu_parallel(be, qins_tensor_rows(x), rows_grain(j.d, 4), rmsnorm_rows, &j);
  return 0;
}

int cpu_layernorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b, float eps,
                  qins_tensor *y) {
  row_job j = {F32(x), F32(w), b ? F32(b) : NULL, F32(y), qins_tensor_cols(x), eps};
  cpu_parallel(be, qins_tensor_rows(x), rows_grain(j.d, 4), layernorm_rows, &j);
  return 0;
}

static void softmax_rows(void *user, int64_t r0, int64_t r1) {
  const row_job *j = user;
  int64_t n = j->d;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->x + r * n;
    float *yr = j->y + r * n; /* may alias xr */
    float mx = xr[0];
    for (int64_t i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
    for (int64_t i = 0; i < n; i++) yr[i] = expf(xr[i] - mx);
    float inv = (float)(1.0 / lane_sum(yr, n, 0.0, 0));
    for (int64_t i = 0; i < n; i++) yr[i] *= inv;
  }
}

int cpu_softmax(qins_backend *be, const qins_tensor *x, qins_tensor *y) {
  row_job j = {F32(x), NULL, NULL, F32(y), qins_tensor_cols(x), 0};
  cpu_parallel(be, qins_tensor_rows(x), rows_grain(j.d, 16), softmax_rows, &j);
  return 0;
}

/* ---------------------------------------------------------------- rope */

typedef struct rope_job {
  const float *x, *freq;
  const int32_t *pos;
  float *y;
  int64_t h, d;
  int rot, mode;
  float attn_factor;
  qins_backend *be;
} rope_job;

/* Per token: cos/sin once into the thread's scratch, then every head rotated with them. */
static void rope_tokens(void *user, int64_t t0, int64_t t1, int tid) {
  const rope_job *j = user;
  int half = j->rot / 2;
  float *cs = cpu_scratch(j->be, tid), *sn = cs + half;
  for (int64_t t = t0; t < t1; t++) {
    for (int i = 0; i < half; i++) {
      float angle = (float)j->pos[t] * j->freq[i];
      cs[i] = cosf(angle) * j->attn_factor;
      sn[i] = sinf(angle) * j->attn_factor;
    }
    for (int64_t hh = 0; hh < j->h; hh++) {
      const float *xr = j->x + (t * j->h + hh) * j->d;
      float *yr = j->y + (t * j->h + hh) * j->d; /* may alias xr: each pair is read before written */
      if (j->mode == QINS_ROPE_HALF) {
        for (int i = 0; i < half; i++) {
          float a = xr[i], b = xr[i + half];
          yr[i] = a * cs[i] - b * sn[i];
          yr[i + half] = a * sn[i] + b * cs[i];
        }
      } else {
        for (int i = 0; i < half; i++) {
          float a = xr[2 * i], b = xr[2 * i + 1];
          yr[2 * i] = a * cs[i] - b * sn[i];
          yr[2 * i + 1] = a * sn[i] + b * cs[i];
        }
      }
      if (yr != xr) memcpy(yr + j->rot, xr + j->rot, (size_t)(j->d - j->rot) * 4);
    }
  }
}

int cpu_rope(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq, int rot_dim,
             float attn_factor, qins_rope_mode mode, qins_tensor *y) {
  int rc = cpu_scratch_reserve(be, (size_t)rot_dim * sizeof(float));
  if (rc) return rc;
  rope_job j = {F32(x), F32(inv_freq), I32(pos), F32(y), x->shape[1], x->shape[2], rot_dim, mode, attn_factor, be};
  cpu_parallel_tid(be, x->shape[0], rows_grain(j.h * j.d, 2), rope_tokens, &j);
  return 0;
}

/* ---------------------------------------------------------------- embedding */

typedef struct embed_job {
  const void *table;
  qins_dtype dt;
  const int32_t *ids;
  float *y;
  int64_t v, d;
  int64_t bad; /* first position with an id outside the table, or -1 */
} embed_job;

static void embed_rows(void *user, int64_t t0, int64_t t1) {
  embed_job *j = user;
  size_t es = j->dt == QINS_DT_F32 ? 4 : 2;
  for (int64_t t = t0; t < t1; t++) {
    int64_t id = j->ids[t];
    if (id < 0 || id >= j->v) {
      __atomic_store_n(&j->bad, t, __ATOMIC_RELAXED);
      continue;
    }
    to_f32(j->y + t * j->d, (const char *)j->table + (size_t)id * (size_t)j->d * es, j->dt, j->d);
  }
}

int cpu_embed(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y) {
  embed_job j = {qins_tensor_host(table), table->dtype, I32(ids), F32(y), table->shape[0], table->shape[1], -1};
  cpu_parallel(be, qins_tensor_numel(ids), rows_grain(j.d, 1), embed_rows, &j);
  if (j.bad >= 0)
    return qins_error_set(QINS_EINPUT, "embed: id %lld at position %lld outside vocabulary of %lld",
                          (long long)j.ids[j.bad], (long long)j.bad, (long long)j.v);
  return 0;
}

/* ---------------------------------------------------------------- attention */

typedef struct attn_job {
  const float *q, *k, *v;
  float *out;
  int64_t m, hq, hkv, d, pos0;
  float scale;
  qins_backend *be;
} attn_job;

static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
  float l[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) l[k] += a[i + k] * b[i + k];
  float s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* One (query, head) pair per index; the scores row lives in the thread's scratch. */
static void attention_pairs(void *user, int64_t b, int64_t e, int tid) {
  const attn_job *j = user;
  int64_t group = j->hq / j->hkv, d = j->d, ld = j->hkv * d;
  float *scores = cpu_scratch(j->be, tid);
  for (int64_t idx = b; idx < e; idx++) {
    int64_t t = idx / j->hq, h = idx % j->hq;
    int64_t visible = j->pos0 + t + 1; /* causal: positions 0..pos0+t */
    const float *qr = j->q + (t * j->hq + h) * d;
    const float *kb = j->k + (h / group) * d, *vb = j->v + (h / group) * d;
    float mx = -INFINITY;
    for (int64_t p = 0; p < visible; p++) {
      float s = dot(qr, kb + p * ld, d) * j->scale;
      scores[p] = s;
      mx = s > mx ? s : mx;
    }
    float sum = 0.0f;
    for (int64_t p = 0; p < visible; p++) sum += (scores[p] = expf(scores[p] - mx));
    float inv = 1.0f / sum;
    float *restrict o = j->out + (t * j->hq + h) * d;
    for (int64_t i = 0; i < d; i++) o[i] = 0.0f;
    for (int64_t p = 0; p < visible; p++) {
      const float *restrict vr = vb + p * ld;
      float wgt = scores[p] * inv;
      for (int64_t i = 0; i < d; i++) o[i] += wgt * vr[i];
    }
  }
}

int cpu_attention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                  int64_t pos0, float scale, qins_tensor *out) {
  if (v_cache->dtype == QINS_DT_QINS8) return cpu_qattention(be, q, k_cache, v_cache, pos0, scale, out);
  if (v_cache->dtype != QINS_DT_F32)
    return qins_error_set(QINS_EUNSUPPORTED, "attention: cpu has no kernel yet for a %s V cache",
                          qins_dtype_name(v_cache->dtype));
  attn_job j = {F32(q), F32(k_cache), F32(v_cache), F32(out), q->shape[0], q->shape[1], k_cache->shape[1],
                q->shape[2], pos0, scale, be};
  int rc = cpu_scratch_reserve(be, (size_t)(pos0 + j.m) * sizeof(float));
  if (rc) return rc;
  /* a pair costs ~3 * visible * d flops: hand out pairs in groups worth a few thousand */
  int64_t per_pair = (pos0 + j.m) * j.d;
  cpu_parallel_tid(be, j.m * j.hq, per_pair >= 4096 ? 1 : 4096 / per_pair, attention_pairs, &j);
  return 0;
}

/* ---------------------------------------------------------------- argmax, topk */

typedef struct pick_job {
  const float *x;
  float *values;
  int32_t *idx;
  int64_t n;
  int k;
} pick_job;

static void argmax_rows(void *user, int64_t r0, int64_t r1) {
  const pick_job *j = user;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->x + r * j->n;
    int64_t best = 0;
    float bv = xr[0];
    for (int64_t i = 1; i < j->n; i++)
      if (xr[i] > bv) { /* strict: ties keep the lowest index */
        bv = xr[i];
        best = i;
      }
    j->idx[r] = (int32_t)best;
  }
}

int cpu_argmax(qins_backend *be, const qins_tensor *x, qins_tensor *idx) {
  pick_job j = {F32(x), NULL, I32(idx), qins_tensor_cols(x), 0};
  cpu_parallel(be, qins_tensor_rows(x), rows_grain(j.n, 1), argmax_rows, &j);
  return 0;
}

static void topk_rows(void *user, int64_t r0, int64_t r1) {
  const pick_job *j = user;
  int k = j->k;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->x + r * j->n;
    float *vr = j->values + r * k;
    int32_t *ir = j->idx + r * k;
    int filled = 0;
    /* a sorted list of k; most elements fail the first comparison against the current k-th */
    for (int64_t i = 0; i < j->n; i++) {
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
}

int cpu_topk(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx) {
  pick_job j = {F32(x), F32(values), I32(idx), qins_tensor_cols(x), k};
  cpu_parallel(be, qins_tensor_rows(x), rows_grain(j.n, 2), topk_rows, &j);
  return 0;
}

/* ---------------------------------------------------------------- copy, cast */

typedef struct conv_job {
  const char *src;
  char *dst;
  qins_dtype sdt, ddt;
} conv_job;

static void copy_range(void *user, int64_t b, int64_t e) {
  const conv_job *j = user;
  memcpy(j->dst + b, j->src + b, (size_t)(e - b));
}

int cpu_copy(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  size_t n = qins_tensor_nbytes(src);
  conv_job j = {qins_tensor_host(src), qins_tensor_host(dst), src->dtype, dst->dtype};
  if (j.src + n <= j.dst || j.dst + n <= j.src) cpu_parallel(be, (int64_t)n, 1 << 20, copy_range, &j);
  else memmove(j.dst, j.src, n); /* overlapping views: one ordered pass */
  return 0;
}

static void cast_range(void *user, int64_t b, int64_t e) {
  const conv_job *j = user;
  size_t ss = qins_dtype_size(j->sdt), ds = qins_dtype_size(j->ddt);
  float buf[1024];
  for (int64_t i = b; i < e; i += 1024) {
    int64_t n = e - i < 1024 ? e - i : 1024;
    to_f32(buf, j->src + (size_t)i * ss, j->sdt, n);
    from_f32(j->dst + (size_t)i * ds, buf, j->ddt, n);
  }
}

int cpu_cast(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  conv_job j = {qins_tensor_host(src), qins_tensor_host(dst), src->dtype, dst->dtype};
  cpu_parallel(be, qins_tensor_numel(src), GRAIN, cast_range, &j);
  return 0;
}
