/* Attention over a QINS-int8 V cache on the cpu (QINS.md section 4, plan step B5).
 *
 * The V cache holds qins8 codes [T,Hkv,D] and one alpha per (token, KV head) in its scale tensor
 * (f32 [T*Hkv]). Since x = LUT8[q] / alpha_t, the weighted sum of values is
 *     out = sum_t p_t x_t = sum_t (p_t / alpha_t) LUT8[q_t]
 * so 1/alpha_t is folded into the softmax probability once per token and the codes are looked up
 * straight into the accumulator: no float V row is ever written. Keys stay f32. Head dims that are
 * multiples of 64 use the VBMI byte-plane decode (cpu_qdecode.h) where the CPU has it, others an
 * AVX2 gather or plain C. */
#include <math.h>
#include <string.h>

#include "core/cpu/cpu_ops.h"
#include "core/cpu/cpu_qdecode.h"
#include "core/cpu/cpu_qkern.h"
#include "core/error.h"
#include "core/qins_codec.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QATT_AVX2 1
#endif

typedef struct qattn_job {
  const float *q, *k;
  const uint8_t *v;
  const float *alpha;
  float *out;
  int64_t m, hq, hkv, d, pos0;
  float scale;
  const float *lut;
  int vbmi; /* the byte-plane decode (cpu_qdecode.h) for head dims that are multiples of 64 */
  qins_backend *be;
} qattn_job;

static inline float dot_f32(const float *restrict a, const float *restrict b, int64_t n) {
  float l[8] = {0}; /* eight partial sums: lets the compiler use one vector register */
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int t = 0; t < 8; t++) l[t] += a[i + t] * b[i + t];
  float s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* o[i] += wgt * lut[codes[i]] for i < d: the table decode happens in registers (AVX2: a gather of
 * 8 entries per instruction). */
static inline void axpy_lut8(float *restrict o, float wgt, const float *lut, const uint8_t *codes, int64_t d) {
  int64_t i = 0;
#ifdef QATT_AVX2
  __m256 w = _mm256_set1_ps(wgt);
  for (; i + 8 <= d; i += 8) {
    __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + i)));
    __m256 v = _mm256_i32gather_ps(lut, idx, 4);
    _mm256_storeu_ps(o + i, _mm256_fmadd_ps(w, v, _mm256_loadu_ps(o + i)));
  }
#endif
  for (; i < d; i++) o[i] += wgt * lut[codes[i]];
}

#ifdef QINS_CPU_QDECODE_VBMI
/* o = sum_p w[p] LUT8[codes of token p] for d a multiple of 64, one 64-column chunk at a time over
 * all tokens: the chunk's 64 sums stay in four zmm registers (nothing is stored per token), in
 * the byte-plane decode's lane order, and are put back in element order once at the end. */
TVBMI static void vsum_q8_vbmi(const float *lut8, const uint8_t *vb, int64_t ld, const float *w, int64_t visible,
                               int64_t d, float *o) {
  ptab t = ptab_load(lut8 + 128, 128);
  for (int64_t c0 = 0; c0 < d; c0 += 64) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t p = 0; p < visible; p++) {
      __m512 v[4];
      dec64_q8_vbmi(&t, vb + p * ld + c0, v);
      __m512 wv = _mm512_set1_ps(w[p]);
      for (int r = 0; r < 4; r++) acc[r] = _mm512_fmadd_ps(wv, v[r], acc[r]);
    }
    float tmp[64];
    for (int r = 0; r < 4; r++) _mm512_storeu_ps(tmp + 16 * r, acc[r]);
    /* acc[v] lane 4L+t holds column 16L + 4v + t (see planes_to_floats) */
    for (int v = 0; v < 4; v++)
      for (int l = 0; l < 4; l++)
        for (int e = 0; e < 4; e++) o[c0 + 16 * l + 4 * v + e] = tmp[16 * v + 4 * l + e];
  }
}
#endif

/* One (query, head) pair per index; the scores row lives in the thread's scratch. */
static void qattention_pairs(void *user, int64_t b, int64_t e, int tid) {
  const qattn_job *j = user;
  int64_t group = j->hq / j->hkv, d = j->d, ld = j->hkv * d;
  float *scores = cpu_scratch(j->be, tid);
  for (int64_t idx = b; idx < e; idx++) {
    int64_t t = idx / j->hq, h = idx % j->hq, kvh = h / group;
    int64_t visible = j->pos0 + t + 1; /* causal: positions 0..pos0+t */
    const float *qr = j->q + (t * j->hq + h) * d;
    const float *kb = j->k + kvh * d;
    float mx = -INFINITY;
    for (int64_t p = 0; p < visible; p++) {
      float s = dot_f32(qr, kb + p * ld, d) * j->scale;
      scores[p] = s;
      mx = s > mx ? s : mx;
    }
    float sum = 0.0f;
    for (int64_t p = 0; p < visible; p++) sum += (scores[p] = expf(scores[p] - mx));
    float inv = 1.0f / sum;
    float *restrict o = j->out + (t * j->hq + h) * d;
    const uint8_t *vb = j->v + kvh * d;
    /* p_t / alpha_t: the V scale folded into the probability, once per token */
    for (int64_t p = 0; p < visible; p++) scores[p] = scores[p] * inv / j->alpha[p * j->hkv + kvh];
#ifdef QINS_CPU_QDECODE_VBMI
    if (j->vbmi && d % 64 == 0) {
      vsum_q8_vbmi(j->lut, vb, ld, scores, visible, d, o);
      continue;
    }
#endif
    memset(o, 0, (size_t)d * sizeof(float));
    for (int64_t p = 0; p < visible; p++) axpy_lut8(o, scores[p], j->lut, vb + p * ld, d);
  }
}

int cpu_qattention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                   int64_t pos0, float scale, qins_tensor *out) {
  char desc[192];
  int64_t t = v_cache->shape[0], hkv = v_cache->shape[1];
  const qins_tensor *s = v_cache->scale;
  if (v_cache->dtype != QINS_DT_QINS8 || !s || s->dtype != QINS_DT_F32 || qins_tensor_numel(s) != t * hkv ||
      !qins_tensor_host(s))
    return qins_error_set(QINS_EINVAL, "attention: qins8 V cache %s needs an f32 alpha per token and KV head (%lld)",
                          qins_tensor_describe(v_cache, desc, sizeof desc), (long long)(t * hkv));
  qattn_job j = {qins_tensor_host(q), qins_tensor_host(k_cache), qins_tensor_host(v_cache), qins_tensor_host(s),
                 qins_tensor_host(out), q->shape[0], q->shape[1], hkv, q->shape[2], pos0, scale, qins_codec_lut8(),
                 cpu_qdecode_current() == CPU_QDECODE_VBMI, be};
  int rc = cpu_scratch_reserve(be, (size_t)(pos0 + j.m) * sizeof(float));
  if (rc) return rc;
  /* a pair costs ~3 * visible * d flops: hand out pairs in groups worth a few thousand */
  int64_t per_pair = (pos0 + j.m) * j.d;
  cpu_parallel_tid(be, j.m * j.hq, per_pair >= 4096 ? 1 : 4096 / per_pair, qattention_pairs, &j);
  return 0;
}
