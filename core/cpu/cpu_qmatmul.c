/* Fused quantized matmul on the cpu: y[M,N] = x[M,K] . W^T (+ bias) with W stored as qins-f32,
 * qins8, qins6, int8-row or int8-block32, decoded by table at the GEMM boundary (QINS.md section 4).
 *
 * No float copy of W is ever made. Each output is y_o = s_o * sum_i v(q_oi) x_i where v is the
 * unscaled decode (LUT8/LUT6 = D_1 of the code, D_1(z) for qins-f32, q for int8) and s_o the row
 * scale applied once after the dot product (1/alpha_o for QINS, the step for int8-row; int8-block32
 * folds its step once per 32-block).
 *  - M == 1 (decode): GEMV. Threads split N; each row's code bytes are streamed once and decoded in
 *    registers (8 to 64 codes at a time), so a qins8 row costs K bytes of memory traffic, not 4K.
 *  - M > 1 (prefill): each task decodes a block of QMM_NB rows of W into a small per-thread float
 *    tile (unscaled) and sweeps all M rows of x over it with a 4x3 register-blocked kernel, so each
 *    code is decoded once per call however large M is.
 * Decode variants (cpu_qmatmul_set_decode, measured by bench/bench_qmatmul.c):
 *  - SCALAR: plain C lookups (portable; what builds without AVX2 use);
 *  - GATHER: AVX2 vgatherdps fetches 8 table entries per instruction;
 *  - PERM512: AVX-512F keeps the table in zmm registers and looks it up with vpermt2ps (32 entries
 *    per instruction, no memory access), chosen at run time when the CPU has AVX-512F;
 *  - VBMI: AVX-512 VBMI looks up the table's four byte planes with vpermt2b, 64 codes per
 *    instruction (GEMV only; the GEMM tile uses PERM512). The default where the CPU has it.
 * qins-f32 has no table (D_1 is computed: one division per element) and int8 converts directly;
 * both use the AVX2 path in GATHER, PERM512 and VBMI mode. docs/qins-kernels.md has the numbers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/cpu_ops.h"
#include "core/cpu/cpu_qdecode.h"
#include "core/cpu/cpu_qkern.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/qins_codec.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QMM_AVX2 1
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define QMM_NB 24          /* W rows decoded per GEMM task (a multiple of the kernel's 3): 24 x K floats
                              stay in L2 for K up to ~16k */
#define QMM_CHUNK 256      /* codes decoded per step in the plain C path (a 1 KiB stack buffer) */
#define QMM_GEMV_ROWS 16   /* rows per GEMV task at least: enough to make a thread hand-off worth it */
/* Software prefetch distance of the GEMV code stream, in bytes. A byte-coded row costs ~4x more
 * instructions per byte than an f32 row, so the out-of-order window alone keeps too few cache
 * misses in flight to reach the memory bandwidth when W streams from DRAM; asking for the lines
 * this far ahead does (rows are contiguous, so it runs on into the next rows; prefetches never
 * fault, even past the end). */
#define QMM_PREFETCH 2048

/* ---------------------------------------------------------------- mode selection */

static int g_decode = -1;  /* cpu_qdecode actually used; -1: not chosen yet */

const char *cpu_qdecode_name(cpu_qdecode d) {
  switch (d) {
  case CPU_QDECODE_SCALAR: return "scalar";
  case CPU_QDECODE_GATHER: return "gather";
  case CPU_QDECODE_PERM512: return "perm512";
  case CPU_QDECODE_VBMI: return "vbmi";
  default: return "auto";
  }
}

static int cpu_has_avx512(void) {
#ifdef QMM_AVX2
  return __builtin_cpu_supports("avx512f");
#else
  return 0;
#endif
}

static int cpu_has_vbmi(void) {
#ifdef QMM_AVX2
  return cpu_qdecode_has_vbmi();
#else
  return 0;
#endif
}

cpu_qdecode cpu_qmatmul_set_decode(cpu_qdecode d) {
#ifndef QMM_AVX2
  d = CPU_QDECODE_SCALAR;
#endif
  if (d == CPU_QDECODE_AUTO) {
    const char *env = getenv("QINS_QMATMUL_DECODE");
    if (env && strcmp(env, "scalar") == 0) d = CPU_QDECODE_SCALAR;
    else if (env && strcmp(env, "gather") == 0) d = CPU_QDECODE_GATHER;
    else if (env && strcmp(env, "perm512") == 0) d = CPU_QDECODE_PERM512;
    else d = CPU_QDECODE_VBMI;
  }
  if (d == CPU_QDECODE_VBMI && !cpu_has_vbmi()) d = CPU_QDECODE_PERM512;
  if (d == CPU_QDECODE_PERM512 && !cpu_has_avx512()) d = CPU_QDECODE_GATHER;
#ifndef QMM_AVX2
  d = CPU_QDECODE_SCALAR;
#endif
  __atomic_store_n(&g_decode, (int)d, __ATOMIC_RELAXED);
  return d;
}

static cpu_qdecode current_decode(void) {
  int d = __atomic_load_n(&g_decode, __ATOMIC_RELAXED);
  return d < 0 ? cpu_qmatmul_set_decode(CPU_QDECODE_AUTO) : (cpu_qdecode)d;
}

cpu_qdecode cpu_qdecode_current(void) { return current_decode(); }

/* ---------------------------------------------------------------- the job */

typedef struct qmm_job {
  const float *x;
  const uint8_t *w;      /* code bytes, row r at w + r * row_bytes */
  const float *scale;    /* alpha [N], step [N] or step [N, nblk] */
  const float *bias;
  float *y;
  int64_t m, n, k, nblk;
  size_t row_bytes;
  qins_dtype fmt;
  cpu_qdecode decode;
  const float *lut;      /* LUT8 or LUT6 (QINS codes), else NULL */
  const float *xp;       /* VBMI GEMV: x in the lane order the byte-plane decode produces */
  qins_backend *be;
} qmm_job;

/* Scale applied to a row's dot product: QINS alpha is folded here as one multiply by 1/alpha
 * (the codec decodes lut[q] * (1/alpha) too, so fused and unfused round alike); int8-row's step;
 * int8-block32 applies its steps inside the dot product. */
static inline float row_scale(const qmm_job *j, int64_t o) {
  switch (j->fmt) {
  case QINS_DT_QINS_F32: case QINS_DT_QINS8: case QINS_DT_QINS6: return 1.0f / j->scale[o];
  case QINS_DT_INT8_ROW: return j->scale[o];
  default: return 1.0f;
  }
}

/* D_1(z): the codec's map with alpha = 1 (alpha * |z| is then exactly |z|). */
static inline float d1(float z) { return qins_codec_D(z, 1.0f); }

/* One qins6 code (scalar path and row tails only): the codec unpacks its group. */
static inline int code6_at(const uint8_t *p, int64_t i) {
  uint8_t c[4];
  qins_codec_unpack6(p + (i >> 2) * 3, 4, c);
  return c[i & 3];
}

/* Unscaled value of element i of a row (int8-block32 includes its block step). */
static inline float dec1(const qmm_job *j, const uint8_t *row, const float *steps, int64_t i) {
  switch (j->fmt) {
  case QINS_DT_QINS8: return j->lut[row[i]];
  case QINS_DT_QINS6: return j->lut[code6_at(row, i)];
  case QINS_DT_QINS_F32: return d1(((const float *)row)[i]);
  case QINS_DT_INT8_ROW: return (float)(int8_t)row[i];
  default: return (float)(int8_t)row[i] * steps[i >> 5];
  }
}

/* ---------------------------------------------------------------- plain C path */

/* Decode codes [i0, i1) of a row into out: the portable fallback and the GEMM tile decode. */
static void decode_range_c(const qmm_job *j, const uint8_t *row, const float *steps, int64_t i0, int64_t i1,
                           float *out) {
  for (int64_t i = i0; i < i1; i++) out[i - i0] = dec1(j, row, steps, i);
}

/* Eight partial sums so the compiler can keep them in one vector register (float addition is
 * not associative, so it may not reorder a single running sum itself). */
static float dot_c(const float *restrict a, const float *restrict b, int64_t n) {
  float l[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int t = 0; t < 8; t++) l[t] += a[i + t] * b[i + t];
  float s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* Row dot product through a small stack buffer: decode QMM_CHUNK codes, dot them, repeat. */
static float row_dot_c(const qmm_job *j, const uint8_t *row, const float *steps, const float *x) {
  float buf[QMM_CHUNK];
  float s = 0.0f;
  for (int64_t i0 = 0; i0 < j->k; i0 += QMM_CHUNK) {
    int64_t i1 = i0 + QMM_CHUNK < j->k ? i0 + QMM_CHUNK : j->k;
    decode_range_c(j, row, steps, i0, i1, buf);
    s += dot_c(buf, x + i0, i1 - i0);
  }
  return s;
}

/* ---------------------------------------------------------------- AVX2 path */
#ifdef QMM_AVX2

ALWAYS_INLINE float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* 8 qins8 codes -> 8 table floats: widen the bytes to 32-bit indices, one gather. */
ALWAYS_INLINE __m256 dec8_q8(const float *lut, const uint8_t *q) {
  __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
  return _mm256_i32gather_ps(lut, idx, 4);
}

/* The 48 bits of 8 packed qins6 codes as one integer, read as a 4-byte and a 2-byte load: never
 * past the row, and straight into registers (a 6-byte memcpy into a zeroed u64 goes through the
 * stack and stalls on store forwarding, ten times slower). */
static inline uint64_t load48(const uint8_t *p) {
  uint32_t lo;
  uint16_t hi;
  memcpy(&lo, p, 4);
  memcpy(&hi, p + 4, 2);
  return (uint64_t)lo | (uint64_t)hi << 32;
}

/* 8 qins6 codes (6 bytes, two groups): pdep spreads the 48 packed bits into 8 bytes of 6 bits
 * each, in code order, in one instruction; then as qins8. */
ALWAYS_INLINE __m256 dec8_q6(const float *lut, const uint8_t *p) {
  uint64_t bytes = _pdep_u64(load48(p), 0x3f3f3f3f3f3f3f3full);
  __m256i idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)bytes));
  return _mm256_i32gather_ps(lut, idx, 4);
}

/* 8 qins-f32 z -> D_1(z): no table exists for floats, so the map itself (one division). max with
 * the clamp as first operand keeps NaN (maxps returns its second operand on NaN). */
ALWAYS_INLINE __m256 dec8_qf32(const float *z) {
  const __m256 signbit = _mm256_set1_ps(-0.0f);
  __m256 v = _mm256_loadu_ps(z);
  __m256 a = _mm256_max_ps(_mm256_set1_ps(QINS_CODEC_ZMIN), _mm256_andnot_ps(signbit, v));
  __m256 r = _mm256_div_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), a), a);
  __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ); /* sign(-0) = +1 as in the codec */
  return _mm256_xor_ps(r, _mm256_and_ps(neg, signbit));
}

ALWAYS_INLINE __m256 dec8_i8(const uint8_t *q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

/* 8 unscaled values of a row at element i (a multiple of 8); fmt is a constant at every call. */
ALWAYS_INLINE __m256 dec8(qins_dtype fmt, const float *lut, const uint8_t *row, int64_t i) {
  switch (fmt) {
  case QINS_DT_QINS8: return dec8_q8(lut, row + i);
  case QINS_DT_QINS6: return dec8_q6(lut, row + (i >> 2) * 3);
  case QINS_DT_QINS_F32: return dec8_qf32((const float *)row + i);
  default: return dec8_i8(row + i);
  }
}

/* GEMV row: two accumulators so consecutive FMAs do not wait on each other's latency. */
ALWAYS_INLINE float row_dot_avx2(const qmm_job *j, qins_dtype fmt, const uint8_t *row, const float *x) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0, k = j->k;
  /* bytes per 4 elements: 4 (qins8), 3 (qins6), 16 (qins-f32); one iteration reads 4 * bpe4 bytes.
   * One prefetch per 64-byte line: in the iteration whose bytes start within 4 * bpe4 of a line. */
  const int64_t bpe4 = fmt == QINS_DT_QINS_F32 ? 16 : fmt == QINS_DT_QINS6 ? 3 : 4;
  for (; i + 16 <= k; i += 16) {
    int64_t at = i / 4 * bpe4;
    if (at % 64 < 4 * bpe4) _mm_prefetch((const char *)row + at + QMM_PREFETCH, _MM_HINT_T0);
    a0 = _mm256_fmadd_ps(dec8(fmt, j->lut, row, i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(dec8(fmt, j->lut, row, i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(dec8(fmt, j->lut, row, i), _mm256_loadu_ps(x + i), a0);
  float s = hsum8(_mm256_add_ps(a0, a1));
  for (; i < k; i++) s += dec1(j, row, NULL, i) * x[i];
  return s;
}

/* int8-block32 GEMV row: a block's 32 products are summed in a vector, then scaled by the
 * block's step with one FMA (the step is folded per block, never per element). */
static float row_dot_b32_avx2(const qmm_job *j, const uint8_t *row, const float *steps, const float *x) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0, k = j->k;
  for (; i + 32 <= k; i += 32) {
    if (i % 64 == 0) _mm_prefetch((const char *)row + i + QMM_PREFETCH, _MM_HINT_T0);
    __m256 b0 = _mm256_mul_ps(dec8_i8(row + i), _mm256_loadu_ps(x + i));
    __m256 b1 = _mm256_mul_ps(dec8_i8(row + i + 8), _mm256_loadu_ps(x + i + 8));
    b0 = _mm256_fmadd_ps(dec8_i8(row + i + 16), _mm256_loadu_ps(x + i + 16), b0);
    b1 = _mm256_fmadd_ps(dec8_i8(row + i + 24), _mm256_loadu_ps(x + i + 24), b1);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(steps[i >> 5]), _mm256_add_ps(b0, b1), acc);
  }
  float s = hsum8(acc), t = 0.0f;
  for (; i < k; i++) t += (float)(int8_t)row[i] * x[i];
  return s + t * (k & 31 ? steps[k >> 5] : 0.0f);
}

/* Decode a whole row (unscaled; int8-block32 times its steps) into out, for the GEMM tile. */
ALWAYS_INLINE void decode_row_avx2(const qmm_job *j, qins_dtype fmt, const uint8_t *row, const float *steps,
                                   float *out) {
  int64_t i = 0, k = j->k;
  if (fmt == QINS_DT_INT8_B32) {
    for (; i + 8 <= k; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(dec8_i8(row + i), _mm256_set1_ps(steps[i >> 5])));
  } else {
    for (; i + 8 <= k; i += 8) _mm256_storeu_ps(out + i, dec8(fmt, j->lut, row, i));
  }
  for (; i < k; i++) out[i] = dec1(j, row, steps, i);
}

/* ---------------------------------------------------------------- AVX-512 table-in-registers path */

#define T512 __attribute__((target("avx512f")))

/* The qins8 table is odd-symmetric: LUT8[q] = -LUT8[255 - q]. So 128 magnitudes suffice, in 8 zmm
 * registers; the index of the magnitude is j = q - 128 for q >= 128 and 127 - q below. vpermt2ps
 * looks up 32 entries (two registers) per instruction; bits 5 and 6 of j pick among the four
 * results with mask blends; the sign is one masked xor. No memory access per element, unlike a
 * gather, which is what the GEMV needs to keep up with the byte stream. */
typedef struct { __m512 t[8]; } tab128;

T512 static inline tab128 tab128_load(const float *lut8) {
  tab128 t;
  for (int r = 0; r < 8; r++) t.t[r] = _mm512_loadu_ps(lut8 + 128 + 16 * r);
  return t;
}

T512 static inline __m512 dec16_q8_perm(const tab128 *t, __m512i q) {
  __mmask16 neg = _mm512_cmplt_epu32_mask(q, _mm512_set1_epi32(128));
  __m512i jx = _mm512_xor_si512(q, _mm512_mask_blend_epi32(neg, _mm512_set1_epi32(128), _mm512_set1_epi32(127)));
  __m512 p0 = _mm512_permutex2var_ps(t->t[0], jx, t->t[1]);
  __m512 p1 = _mm512_permutex2var_ps(t->t[2], jx, t->t[3]);
  __m512 p2 = _mm512_permutex2var_ps(t->t[4], jx, t->t[5]);
  __m512 p3 = _mm512_permutex2var_ps(t->t[6], jx, t->t[7]);
  __mmask16 b5 = _mm512_test_epi32_mask(jx, _mm512_set1_epi32(32));
  __mmask16 b6 = _mm512_test_epi32_mask(jx, _mm512_set1_epi32(64));
  __m512 lo = _mm512_mask_blend_ps(b5, p0, p1), hi = _mm512_mask_blend_ps(b5, p2, p3);
  __m512 v = _mm512_mask_blend_ps(b6, lo, hi);
  return _mm512_castsi512_ps(
      _mm512_mask_xor_epi32(_mm512_castps_si512(v), neg, _mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)));
}

/* qins6: 64 entries fit in 4 registers, no symmetry trick needed: two vpermt2ps and a blend. */
typedef struct { __m512 t[4]; } tab64;

T512 static inline tab64 tab64_load(const float *lut6) {
  tab64 t;
  for (int r = 0; r < 4; r++) t.t[r] = _mm512_loadu_ps(lut6 + 16 * r);
  return t;
}

T512 static inline __m512 dec16_q6_perm(const tab64 *t, __m512i q) {
  __m512 lo = _mm512_permutex2var_ps(t->t[0], q, t->t[1]);
  __m512 hi = _mm512_permutex2var_ps(t->t[2], q, t->t[3]);
  return _mm512_mask_blend_ps(_mm512_test_epi32_mask(q, _mm512_set1_epi32(32)), lo, hi);
}

/* 16 qins6 codes from 12 packed bytes: two pdeps (see dec8_q6). */
T512 static inline __m512i codes16_q6(const uint8_t *p) {
  __m128i bytes = _mm_set_epi64x((long long)_pdep_u64(load48(p + 6), 0x3f3f3f3f3f3f3f3full),
                                 (long long)_pdep_u64(load48(p), 0x3f3f3f3f3f3f3f3full));
  return _mm512_cvtepu8_epi32(bytes);
}

T512 static float hsum16(__m512 v) { return _mm512_reduce_add_ps(v); }

T512 static float row_dot_q8_perm(const qmm_job *j, const tab128 *t, const uint8_t *row, const float *x) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0, k = j->k;
  for (; i + 32 <= k; i += 32) {
    __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + i)));
    __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + i + 16)));
    a0 = _mm512_fmadd_ps(dec16_q8_perm(t, q0), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(dec16_q8_perm(t, q1), _mm512_loadu_ps(x + i + 16), a1);
  }
  for (; i + 16 <= k; i += 16) {
    __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + i)));
    a0 = _mm512_fmadd_ps(dec16_q8_perm(t, q0), _mm512_loadu_ps(x + i), a0);
  }
  float s = hsum16(_mm512_add_ps(a0, a1));
  for (; i < k; i++) s += j->lut[row[i]] * x[i];
  return s;
}

T512 static float row_dot_q6_perm(const qmm_job *j, const tab64 *t, const uint8_t *row, const float *x) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0, k = j->k;
  for (; i + 32 <= k; i += 32) {
    a0 = _mm512_fmadd_ps(dec16_q6_perm(t, codes16_q6(row + i / 4 * 3)), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(dec16_q6_perm(t, codes16_q6(row + (i + 16) / 4 * 3)), _mm512_loadu_ps(x + i + 16), a1);
  }
  for (; i + 16 <= k; i += 16)
    a0 = _mm512_fmadd_ps(dec16_q6_perm(t, codes16_q6(row + i / 4 * 3)), _mm512_loadu_ps(x + i), a0);
  float s = hsum16(_mm512_add_ps(a0, a1));
  for (; i < k; i++) s += j->lut[code6_at(row, i)] * x[i];
  return s;
}

/* GEMV over rows [o0, o1) with the table loaded into registers once per task. */
T512 static void gemv_rows_perm(const qmm_job *j, int64_t o0, int64_t o1) {
  if (j->fmt == QINS_DT_QINS8) {
    tab128 t = tab128_load(j->lut);
    for (int64_t o = o0; o < o1; o++) {
      float s = row_dot_q8_perm(j, &t, j->w + (size_t)o * j->row_bytes, j->x);
      j->y[o] = s * row_scale(j, o) + (j->bias ? j->bias[o] : 0.0f);
    }
  } else {
    tab64 t = tab64_load(j->lut);
    for (int64_t o = o0; o < o1; o++) {
      float s = row_dot_q6_perm(j, &t, j->w + (size_t)o * j->row_bytes, j->x);
      j->y[o] = s * row_scale(j, o) + (j->bias ? j->bias[o] : 0.0f);
    }
  }
}

/* The GEMM tile decode for qins8/qins6 in PERM512 mode. */
T512 static void decode_row_perm(const qmm_job *j, const uint8_t *row, float *out) {
  int64_t i = 0, k = j->k;
  if (j->fmt == QINS_DT_QINS8) {
    tab128 t = tab128_load(j->lut);
    for (; i + 16 <= k; i += 16)
      _mm512_storeu_ps(out + i, dec16_q8_perm(&t, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + i)))));
  } else {
    tab64 t = tab64_load(j->lut);
    for (; i + 16 <= k; i += 16) _mm512_storeu_ps(out + i, dec16_q6_perm(&t, codes16_q6(row + i / 4 * 3)));
  }
  for (; i < k; i++) out[i] = dec1(j, row, NULL, i);
}


/* ---------------------------------------------------------------- AVX-512 VBMI byte-plane path */

/* GEMV rows [o0, o1): 64 codes per step against the permuted x; tails as in the AVX2 path. */
TVBMI static void gemv_rows_vbmi(const qmm_job *j, int64_t o0, int64_t o1) {
  int q8 = j->fmt == QINS_DT_QINS8;
  ptab t = q8 ? ptab_load(j->lut + 128, 128) : ptab_load(j->lut, 64);
  int64_t k = j->k, k64 = k / 64 * 64;
  for (int64_t o = o0; o < o1; o++) {
    const uint8_t *row = j->w + (size_t)o * j->row_bytes;
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = 0; i < k64; i += 64) {
      __m512 v[4];
      const uint8_t *src = q8 ? row + i : row + i / 4 * 3;
      _mm_prefetch((const char *)src + QMM_PREFETCH, _MM_HINT_T0);
      if (q8) dec64_q8_vbmi(&t, src, v);
      else dec64_q6_vbmi(&t, src, v);
      /* four independent accumulators: no FMA waits on the previous one */
      for (int r = 0; r < 4; r++) a[r] = _mm512_fmadd_ps(v[r], _mm512_loadu_ps(j->xp + i + 16 * r), a[r]);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
    for (int64_t i = k64; i < k; i++) s += j->lut[q8 ? row[i] : code6_at(row, i)] * j->x[i];
    j->y[o] = s * row_scale(j, o) + (j->bias ? j->bias[o] : 0.0f);
  }
}

/* x in the order planes_to_floats produces, per 64-element chunk (the tail keeps its order). */
static void permute_x_vbmi(const float *x, int64_t k, float *xp) {
  int64_t k64 = k / 64 * 64;
  for (int64_t c = 0; c < k64; c += 64)
    for (int v = 0; v < 4; v++)
      for (int l = 0; l < 4; l++)
        for (int t = 0; t < 4; t++) xp[c + 16 * v + 4 * l + t] = x[c + 16 * l + 4 * v + t];
  for (int64_t i = k64; i < k; i++) xp[i] = x[i];
}

#endif /* QMM_AVX2 */

/* ---------------------------------------------------------------- GEMV (M == 1) */

static const float *row_steps(const qmm_job *j, int64_t o) {
  return j->fmt == QINS_DT_INT8_B32 ? j->scale + o * j->nblk : NULL;
}

static void gemv_rows(void *user, int64_t o0, int64_t o1) {
  const qmm_job *j = user;
#ifdef QMM_AVX2
  int qins_table = j->fmt == QINS_DT_QINS8 || j->fmt == QINS_DT_QINS6;
  if (j->decode == CPU_QDECODE_VBMI && qins_table) {
    gemv_rows_vbmi(j, o0, o1);
    return;
  }
  if (j->decode >= CPU_QDECODE_PERM512 && qins_table) {
    gemv_rows_perm(j, o0, o1);
    return;
  }
  if (j->decode != CPU_QDECODE_SCALAR) {
    for (int64_t o = o0; o < o1; o++) {
      const uint8_t *row = j->w + (size_t)o * j->row_bytes;
      float s;
      /* one call per format with a constant fmt, so each inlined loop is specialised */
      switch (j->fmt) {
      case QINS_DT_QINS8: s = row_dot_avx2(j, QINS_DT_QINS8, row, j->x); break;
      case QINS_DT_QINS6: s = row_dot_avx2(j, QINS_DT_QINS6, row, j->x); break;
      case QINS_DT_QINS_F32: s = row_dot_avx2(j, QINS_DT_QINS_F32, row, j->x); break;
      case QINS_DT_INT8_ROW: s = row_dot_avx2(j, QINS_DT_INT8_ROW, row, j->x); break;
      default: s = row_dot_b32_avx2(j, row, row_steps(j, o), j->x); break;
      }
      j->y[o] = s * row_scale(j, o) + (j->bias ? j->bias[o] : 0.0f);
    }
    return;
  }
#endif
  for (int64_t o = o0; o < o1; o++) {
    float s = row_dot_c(j, j->w + (size_t)o * j->row_bytes, row_steps(j, o), j->x);
    j->y[o] = s * row_scale(j, o) + (j->bias ? j->bias[o] : 0.0f);
  }
}

/* ---------------------------------------------------------------- GEMM (M > 1) */

static void decode_row(const qmm_job *j, const uint8_t *row, const float *steps, float *out) {
#ifdef QMM_AVX2
  /* the VBMI decode permutes element order, which a stored tile cannot have: the GEMM tile
   * (decoded once per call, reused M times) uses vpermt2ps */
  if (j->decode >= CPU_QDECODE_PERM512 && (j->fmt == QINS_DT_QINS8 || j->fmt == QINS_DT_QINS6)) {
    decode_row_perm(j, row, out);
    return;
  }
  if (j->decode != CPU_QDECODE_SCALAR) {
    switch (j->fmt) {
    case QINS_DT_QINS8: decode_row_avx2(j, QINS_DT_QINS8, row, steps, out); return;
    case QINS_DT_QINS6: decode_row_avx2(j, QINS_DT_QINS6, row, steps, out); return;
    case QINS_DT_QINS_F32: decode_row_avx2(j, QINS_DT_QINS_F32, row, steps, out); return;
    case QINS_DT_INT8_ROW: decode_row_avx2(j, QINS_DT_INT8_ROW, row, steps, out); return;
    default: decode_row_avx2(j, QINS_DT_INT8_B32, row, steps, out); return;
    }
  }
#endif
  decode_range_c(j, row, steps, 0, j->k, out);
}

/* s[r][c] = x[r] . t[c] over K for R x rows and C tile rows. R and C are constants at every call,
 * so the accumulators live in registers: each x vector is loaded once for C outputs and each
 * tile vector once for R outputs. */
ALWAYS_INLINE void kern(int R, int C, const float *x, const float *t, int64_t k, float s[4][3]) {
  int64_t i = 0;
#ifdef QMM_AVX2
  __m256 acc[4][3]; /* 4 x 3 accumulators + 3 tile vectors + 1 x vector = the 16 ymm registers */
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
  for (; i + 8 <= k; i += 8) {
    __m256 tv[3];
    for (int c = 0; c < C; c++) tv[c] = _mm256_loadu_ps(t + c * k + i);
    for (int r = 0; r < R; r++) {
      __m256 xv = _mm256_loadu_ps(x + r * k + i);
      for (int c = 0; c < C; c++) acc[r][c] = _mm256_fmadd_ps(xv, tv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) s[r][c] = hsum8(acc[r][c]);
#else
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) s[r][c] = 0.0f;
#endif
  if (i == 0) { /* plain C build: the whole row */
    for (int r = 0; r < R; r++)
      for (int c = 0; c < C; c++) s[r][c] = dot_c(x + r * k, t + c * k, k);
    return;
  }
  for (; i < k; i++)
    for (int r = 0; r < R; r++)
      for (int c = 0; c < C; c++) s[r][c] += x[r * k + i] * t[c * k + i];
}

static void gemm_tasks(void *user, int64_t b, int64_t e, int tid) {
  const qmm_job *j = user;
  float *tile = cpu_scratch(j->be, tid);
  int64_t k = j->k, n = j->n;
  for (int64_t task = b; task < e; task++) {
    int64_t o0 = task * QMM_NB, o1 = o0 + QMM_NB < n ? o0 + QMM_NB : n, nb = o1 - o0;
    float rs[QMM_NB], bs[QMM_NB];
    /* decode each W row once; every row of x reuses it */
    for (int64_t c = 0; c < nb; c++) {
      decode_row(j, j->w + (size_t)(o0 + c) * j->row_bytes, row_steps(j, o0 + c), tile + c * k);
      rs[c] = row_scale(j, o0 + c);
      bs[c] = j->bias ? j->bias[o0 + c] : 0.0f;
    }
    for (int64_t m0 = 0; m0 < j->m; m0 += 4) {
      int64_t R = j->m - m0 < 4 ? j->m - m0 : 4;
      const float *x = j->x + m0 * k;
      for (int64_t c = 0; c < nb; c += 3) {
        int64_t C = nb - c < 3 ? nb - c : 3;
        const float *t = tile + c * k;
        float s[4][3];
        /* full 4 x 3 blocks in the common case; edges one x row at a time */
        if (R == 4 && C == 3) kern(4, 3, x, t, k, s);
        else {
          for (int64_t r = 0; r < R; r++) {
            float s1[4][3];
            if (C == 3) kern(1, 3, x + r * k, t, k, s1);
            else if (C == 2) kern(1, 2, x + r * k, t, k, s1);
            else kern(1, 1, x + r * k, t, k, s1);
            for (int64_t cc = 0; cc < C; cc++) s[r][cc] = s1[0][cc];
          }
        }
        for (int64_t r = 0; r < R; r++)
          for (int64_t cc = 0; cc < C; cc++)
            j->y[(m0 + r) * n + o0 + c + cc] = s[r][cc] * rs[c + cc] + bs[c + cc];
      }
    }
  }
}

/* ---------------------------------------------------------------- entry points */

static int check_scales(const char *op, const qins_tensor *w) {
  char desc[192];
  int64_t want = qins_format_scale_count(w->dtype, w->shape[0], w->shape[1]);
  const qins_tensor *s = w->scale;
  if (!s || s->dtype != QINS_DT_F32 || qins_tensor_numel(s) != want || !qins_tensor_host(s))
    return qins_error_set(QINS_EINVAL, "%s: weight %s needs %lld f32 scales on the cpu backend", op,
                          qins_tensor_describe(w, desc, sizeof desc), (long long)want);
  return 0;
}

int cpu_qmatmul_fused(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                      qins_tensor *y) {
  int rc = check_scales("matmul", w);
  if (rc) return rc;
  qmm_job j = {
      .x = qins_tensor_host(x), .w = qins_tensor_host(w), .scale = qins_tensor_host(w->scale),
      .bias = bias ? qins_tensor_host(bias) : NULL, .y = qins_tensor_host(y), .m = qins_tensor_rows(x),
      .n = w->shape[0], .k = w->shape[1], .nblk = (w->shape[1] + 31) / 32,
      .row_bytes = qins_format_row_bytes(w->dtype, w->shape[1]), .fmt = w->dtype, .decode = current_decode(),
      .lut = w->dtype == QINS_DT_QINS8 ? qins_codec_lut8() : w->dtype == QINS_DT_QINS6 ? qins_codec_lut6() : NULL,
      .be = be};
  if (j.m == 1) {
    float *xp = NULL;
#ifdef QMM_AVX2
    if (j.decode == CPU_QDECODE_VBMI && j.lut) {
      xp = qins_mem_alloc_aligned(qins_mem_owner_get("backend.cpu.qmatmul"), (size_t)j.k * sizeof(float), 64);
      if (!xp) return qins_error_set(QINS_ENOMEM, "matmul: no memory for %lld floats of input", (long long)j.k);
      permute_x_vbmi(j.x, j.k, xp);
      j.xp = xp;
    }
#endif
    /* small matrices are not worth waking the pool for */
    cpu_parallel(be, j.n, j.n * j.k < 65536 ? j.n : QMM_GEMV_ROWS, gemv_rows, &j);
    if (xp) qins_mem_free(qins_mem_owner_get("backend.cpu.qmatmul"), xp);
    return 0;
  }
  rc = cpu_scratch_reserve(be, (size_t)QMM_NB * (size_t)j.k * sizeof(float));
  if (rc) return rc;
  int64_t tasks = (j.n + QMM_NB - 1) / QMM_NB;
  cpu_parallel_tid(be, tasks, j.m * j.n * j.k < (1 << 19) ? tasks : 1, gemm_tasks, &j);
  return 0;
}

int cpu_qmatmul_unfused(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                        qins_tensor *y) {
  int rc = check_scales("matmul", w);
  if (rc) return rc;
  qins_mem_owner *owner = qins_mem_owner_get("backend.cpu.qmatmul");
  size_t bytes = (size_t)qins_tensor_numel(w) * sizeof(float);
  void *host = qins_mem_alloc_aligned(owner, bytes ? bytes : 1, 64);
  if (!host)
    return qins_error_set(QINS_ENOMEM, "matmul: no memory for the %zu-byte dequantized copy of %s", bytes, w->name);
  qins_tensor wf = {0};
  rc = qins_tensor_init(&wf, w->name, QINS_DT_F32, w->ndim, w->shape);
  if (!rc) rc = qins_buf_wrap(be, host, bytes, &wf.buf);
  if (!rc) rc = cpu_dequantize(be, w, &wf);
  if (!rc) rc = cpu_matmul(be, x, &wf, bias, y);
  if (wf.buf) qins_buf_free(wf.buf);
  qins_mem_free(owner, host);
  return rc;
}

int cpu_qmatmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias, qins_tensor *y) {
  return be->qmatmul_path == QINS_QMATMUL_UNFUSED ? cpu_qmatmul_unfused(be, x, w, bias, y) : cpu_qmatmul_fused(be, x, w, bias, y);
}
