/* The cpu fast matmul: y[M,N] = x[M,K] . w[N,K]^T (+ bias) with f32, f16 or bf16 weights.
 *
 * Both operands are K-contiguous, so every output is a dot product along K. A register-blocked
 * micro-kernel computes an R x C tile of outputs (R rows of x against C rows of w) with one 8-wide
 * accumulator per output: each loaded (and, for f16/bf16, converted) weight vector is used R times
 * and each x vector C times.
 *  - M < 4 (decode): GEMV. Threads split N; each weight row is streamed from memory exactly once
 *    (1 x 8 tiles: 8 independent accumulator chains hide the FMA latency).
 *  - M >= 4 (prefill, training): blocked GEMM. Threads take (M block, N block) tiles; inside, K is
 *    cut into KB-long slices so the 4 x KB slice of x stays in L1 and the NB x KB slice of w in L2
 *    while the 4 x 3 micro-kernel sweeps over them.
 * With AVX2+FMA+F16C (x86-64-v3) the kernel uses intrinsics (F16C converts f16, a 16-bit shift
 * converts bf16); otherwise a plain C kernel with the same blocking is used. Accumulation is f32. */
#include <string.h>

#include "core/cpu/cpu_ops.h"
#include "core/cpu/cpu_qkern.h"
#include "core/error.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define QINS_CPU_SIMD 1
#endif

#define GEMM_MB 64   /* rows of x per task */
#define GEMM_NB 48   /* rows of w per task (a multiple of the kernel's 3) */
#define GEMM_KB 1024 /* K slice: 4 x rows (16 KiB) in L1, 48 w rows (192 KiB f32) in L2 */
#define GEMV_ROWS 32 /* w rows per GEMV task, at least: enough to make a thread hand-off worth it */

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE float load1(const void *w, qins_dtype dt, int64_t i) {
  if (dt == QINS_DT_F32) return ((const float *)w)[i];
  uint16_t h = ((const uint16_t *)w)[i];
  if (dt == QINS_DT_F16) {
#ifdef QINS_CPU_SIMD
    return _cvtsh_ss(h);
#else
    return qins_f16_to_f32(h);
#endif
  }
  uint32_t u = (uint32_t)h << 16; /* bf16 is the top half of an f32 */
  float f;
  memcpy(&f, &u, 4);
  return f;
}

#ifdef QINS_CPU_SIMD
ALWAYS_INLINE __m256 load8(const void *w, qins_dtype dt, int64_t i) {
  if (dt == QINS_DT_F32) return _mm256_loadu_ps((const float *)w + i);
  __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
  if (dt == QINS_DT_F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

ALWAYS_INLINE float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* y[r*ldy + c] += sum_{k0 <= k < k1} x[r*ldx + k] * w[c*ldw + k] for r < R, c < C. R, C and dt are
 * compile-time constants at every call, so the tile loops unroll and the accumulators stay in registers. */
ALWAYS_INLINE void tile(int R, int C, qins_dtype dt, const float *x, int64_t ldx, const void *w, int64_t ldw,
                        float *y, int64_t ldy, int64_t k0, int64_t k1) {
  __m256 acc[4][8];
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    __m256 wv[8];
    for (int c = 0; c < C; c++) wv[c] = load8(w, dt, c * ldw + k);
    for (int r = 0; r < R; r++) {
      __m256 xv = _mm256_loadu_ps(x + r * ldx + k);
      for (int c = 0; c < C; c++) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) {
      float s = hsum8(acc[r][c]);
      for (int64_t kk = k; kk < k1; kk++) s += x[r * ldx + kk] * load1(w, dt, c * ldw + kk);
      y[r * ldy + c] += s;
    }
}
#else
/* Plain C: 8 lanes per output, which gcc vectorises without reassociating any sum. */
ALWAYS_INLINE void tile(int R, int C, qins_dtype dt, const float *x, int64_t ldx, const void *w, int64_t ldw,
                        float *y, int64_t ldy, int64_t k0, int64_t k1) {
  float acc[4][8][8] = {{{0}}};
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8)
    for (int c = 0; c < C; c++) {
      float wv[8];
      for (int l = 0; l < 8; l++) wv[l] = load1(w, dt, c * ldw + k + l);
      for (int r = 0; r < R; r++)
        for (int l = 0; l < 8; l++) acc[r][c][l] += x[r * ldx + k + l] * wv[l];
    }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) {
      float s = 0.0f;
      for (int l = 0; l < 8; l++) s += acc[r][c][l];
      for (int64_t kk = k; kk < k1; kk++) s += x[r * ldx + kk] * load1(w, dt, c * ldw + kk);
      y[r * ldy + c] += s;
    }
}
#endif

typedef struct matmul_job {
  const float *x;
  const void *w;
  const float *bias;
  float *y;
  int64_t m, n, k;
  int64_t nblocks; /* GEMM: N blocks per M block */
} matmul_job;

static inline const void *wrow(const void *w, qins_dtype dt, int64_t row, int64_t k) {
  return (const char *)w + (size_t)row * (size_t)k * (dt == QINS_DT_F32 ? 4 : 2);
}

static void init_rows(const matmul_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  for (int64_t r = m0; r < m1; r++)
    for (int64_t o = n0; o < n1; o++) j->y[r * j->n + o] = j->bias ? j->bias[o] : 0.0f;
}

/* GEMV over weight rows [n0, n1) for every (at most 3) row of x: 8 weight rows at a time, used by
 * each x row while they are still in L1, so they come from memory once. */
ALWAYS_INLINE void gemv_dt(const matmul_job *j, qins_dtype dt, int64_t n0, int64_t n1) {
  init_rows(j, 0, j->m, n0, n1);
  int64_t k = j->k, o = n0;
  for (; o + 8 <= n1; o += 8)
    for (int64_t r = 0; r < j->m; r++) tile(1, 8, dt, j->x + r * k, k, wrow(j->w, dt, o, k), k, j->y + r * j->n + o, j->n, 0, k);
  for (; o < n1; o++)
    for (int64_t r = 0; r < j->m; r++) tile(1, 1, dt, j->x + r * k, k, wrow(j->w, dt, o, k), k, j->y + r * j->n + o, j->n, 0, k);
}

static void gemv_f32(void *u, int64_t b, int64_t e) { gemv_dt(u, QINS_DT_F32, b, e); }
static void gemv_f16(void *u, int64_t b, int64_t e) { gemv_dt(u, QINS_DT_F16, b, e); }
static void gemv_bf16(void *u, int64_t b, int64_t e) { gemv_dt(u, QINS_DT_BF16, b, e); }

/* One GEMM task: rows [m0, m1) of x against weight rows [n0, n1), K in slices. */
ALWAYS_INLINE void gemm_block(const matmul_job *j, qins_dtype dt, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  init_rows(j, m0, m1, n0, n1);
  int64_t k = j->k, ldy = j->n;
  for (int64_t k0 = 0; k0 < k; k0 += GEMM_KB) {
    int64_t k1 = k0 + GEMM_KB < k ? k0 + GEMM_KB : k;
    int64_t r = m0;
    for (; r + 4 <= m1; r += 4) {
      const float *xr = j->x + r * k;
      float *yr = j->y + r * ldy;
      int64_t o = n0;
      for (; o + 3 <= n1; o += 3) tile(4, 3, dt, xr, k, wrow(j->w, dt, o, k), k, yr + o, ldy, k0, k1);
      for (; o < n1; o++) tile(4, 1, dt, xr, k, wrow(j->w, dt, o, k), k, yr + o, ldy, k0, k1);
    }
    for (; r < m1; r++) {
      const float *xr = j->x + r * k;
      float *yr = j->y + r * ldy;
      int64_t o = n0;
      for (; o + 8 <= n1; o += 8) tile(1, 8, dt, xr, k, wrow(j->w, dt, o, k), k, yr + o, ldy, k0, k1);
      for (; o < n1; o++) tile(1, 1, dt, xr, k, wrow(j->w, dt, o, k), k, yr + o, ldy, k0, k1);
    }
  }
}

ALWAYS_INLINE void gemm_dt(const matmul_job *j, qins_dtype dt, int64_t b, int64_t e) {
  for (int64_t t = b; t < e; t++) {
    int64_t mb = t / j->nblocks, nb = t % j->nblocks;
    int64_t m0 = mb * GEMM_MB, m1 = m0 + GEMM_MB < j->m ? m0 + GEMM_MB : j->m;
    int64_t n0 = nb * GEMM_NB, n1 = n0 + GEMM_NB < j->n ? n0 + GEMM_NB : j->n;
    gemm_block(j, dt, m0, m1, n0, n1);
  }
}

static void gemm_f32(void *u, int64_t b, int64_t e) { gemm_dt(u, QINS_DT_F32, b, e); }
static void gemm_f16(void *u, int64_t b, int64_t e) { gemm_dt(u, QINS_DT_F16, b, e); }
static void gemm_bf16(void *u, int64_t b, int64_t e) { gemm_dt(u, QINS_DT_BF16, b, e); }

int cpu_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias, qins_tensor *y) {
  if (qins_dtype_is_quantized(w->dtype)) return cpu_qmatmul(be, x, w, bias, y); /* cpu_qmatmul.c */
  matmul_job j = {qins_tensor_host(x), qins_tensor_host(w), bias ? qins_tensor_host(bias) : NULL, qins_tensor_host(y),
                  qins_tensor_rows(x), w->shape[0], w->shape[1], 0};
  int di = w->dtype == QINS_DT_F16 ? 1 : w->dtype == QINS_DT_BF16 ? 2 : 0;
  if (j.m < 4) {
    static const cpu_range_fn gemv[3] = {gemv_f32, gemv_f16, gemv_bf16};
    /* small matrices are not worth waking the pool for */
    int64_t min_rows = j.n * j.k < 65536 ? j.n : GEMV_ROWS;
    cpu_parallel(be, j.n, min_rows, gemv[di], &j);
  } else {
    static const cpu_range_fn gemm[3] = {gemm_f32, gemm_f16, gemm_bf16};
    j.nblocks = (j.n + GEMM_NB - 1) / GEMM_NB;
    int64_t tasks = (j.m + GEMM_MB - 1) / GEMM_MB * j.nblocks;
    /* below ~1 MFLOP a thread hand-off costs more than it saves */
    cpu_parallel(be, tasks, j.m * j.n * j.k < (1 << 19) ? tasks : 1, gemm[di], &j);
  }
  return 0;
}
