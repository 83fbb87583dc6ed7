/* The cpu training GEMM in outer-product form: c[m,n] (+)= sum_r a(i,r) b[r,n] with b row-major
 * (n contiguous) and a read through two strides, so both backward matmul products need no transpose:
 *   dx [M,K]  = dy [M,N] . w [N,K]      a(i,r) = dy[i*N + r]   (sa_i = N, sa_r = 1), b = w
 *   dw [N,K] += dy^T     . x [M,K]      a(i,r) = dy[r*N + i]   (sa_i = 1, sa_r = N), b = x
 * A 6 x 16 micro-kernel keeps 12 accumulators in registers: per reduction step it loads two vectors
 * of b and broadcasts six scalars of a (12 FMAs for 8 loads). Tasks own (MB x NB) tiles of c; inside
 * a task the reduction is cut into RB-long slices so the RB x 16 panel of b stays in L1 while the
 * row tiles sweep it. Every c element is summed by one task in increasing r: the result does not
 * depend on the thread count or scheduling. */
#include "core/cpu/cpu_ops.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define OUTER_SIMD 1
#endif

#define OUTER_MB 96  /* rows of c per task (16 row tiles of 6) */
#define OUTER_NB 64  /* columns of c per task (4 column tiles of 16) when a is read in place */
#define OUTER_NB_PACKED 256 /* ... and when a is packed: the packed a is reused over more columns */
#define OUTER_RB 256 /* reduction slice: a 256 x 16 panel of b is 16 KiB (L1) */

#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef struct outer_job {
  qins_backend *be;
  const float *a, *b;
  float *c;
  int64_t sa_i, sa_r, ldb, m, n, r;
  int64_t nb;      /* columns per task */
  int64_t nblocks; /* column blocks per row block */
  int accumulate;
} outer_job;

/* Columns [j0, j1) of rows [i0, i0+R) over the reduction slice [r0, r1), plain C (edges, and every
 * tile without AVX2): the same per-element order as the vector kernel (c, then r increasing). */
static void tile_scalar(const outer_job *jb, int R, int64_t i0, int64_t j0, int64_t j1, int64_t r0, int64_t r1,
                        int load) {
  for (int i = 0; i < R; i++) {
    float *cr = jb->c + (i0 + i) * jb->n;
    const float *ar = jb->a + (i0 + i) * jb->sa_i;
    for (int64_t j = j0; j < j1; j++) {
      float s = load ? cr[j] : 0.0f;
      for (int64_t r = r0; r < r1; r++) s = __builtin_fmaf(ar[r * jb->sa_r], jb->b[r * jb->ldb + j], s);
      cr[j] = s;
    }
  }
}

#ifdef OUTER_SIMD
/* R rows x (8 V) columns from packed panels: ap[r*6 + i] (a's row tile), bp[r*bw + 8v] (b's column
 * tile, bw floats a step). R and V are compile-time constants at every call. */
ALWAYS_INLINE void tile_simd(int R, int V, const float *ap, int64_t ar, int64_t ai, const float *bp, int64_t bw,
                             float *c, int64_t ldc, int64_t nr, int load) {
  /* gcc keeps the accumulators in registers only when every loop over them is unrolled */
  __m256 acc[6][2];
#pragma GCC unroll 6
  for (int i = 0; i < 6; i++)
#pragma GCC unroll 2
    for (int v = 0; v < 2; v++) acc[i][v] = _mm256_setzero_ps();
  if (load)
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
#pragma GCC unroll 2
      for (int v = 0; v < V; v++) acc[i][v] = _mm256_loadu_ps(c + i * ldc + 8 * v);
  for (int64_t r = 0; r < nr; r++) {
    __m256 b0 = _mm256_loadu_ps(bp + r * bw), b1 = V > 1 ? _mm256_loadu_ps(bp + r * bw + 8) : b0;
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
      __m256 av = _mm256_broadcast_ss(ap + r * ar + i * ai);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      if (V > 1) acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; i++)
#pragma GCC unroll 2
    for (int v = 0; v < V; v++) _mm256_storeu_ps(c + i * ldc + 8 * v, acc[i][v]);
}

#define ROWS_CASE(R)                                                    \
  case R:                                                               \
    if (w == 16) tile_simd(R, 2, ap, ar, ai, bp, w, c, ldc, nr, load);  \
    else tile_simd(R, 1, ap, ar, ai, bp, w, c, ldc, nr, load);          \
    break;

/* One tile of at most 6 rows and 8 or 16 columns. */
static void tile_any(int R, const float *ap, int64_t ar, int64_t ai, const float *bp, int64_t w, float *c, int64_t ldc,
                     int64_t nr, int load) {
  switch (R) {
    ROWS_CASE(1)
    ROWS_CASE(2)
    ROWS_CASE(3)
    ROWS_CASE(4)
    ROWS_CASE(5)
    ROWS_CASE(6)
    default: break;
  }
}

/* b's column tiles are packed [tile][r][w] so the kernel streams them contiguously (b's rows lie a
 * multiple of 1 KiB apart, and an unpacked RB x 16 panel would fall into a handful of L1 sets).
 * a is packed [tile][r][6] only when its r stride is not 1 (dw: the six values of one r are
 * contiguous, successive r are N apart); with r contiguous (dx) the six row streams are read
 * in place, which saves a scalar transpose that costs as much as the FMAs it feeds. */
static void outer_block_simd(const outer_job *jb, float *scratch, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                             int64_t r0, int64_t r1, int load) {
  int64_t nr = r1 - r0;
  float *apack = scratch, *bpack = scratch + OUTER_MB * OUTER_RB; /* b: at most OUTER_NB_PACKED x RB */
  int64_t nvec = (n1 - n0) / 8 * 8; /* columns the vector kernel covers */
  int packed_a = jb->sa_r != 1;
  if (packed_a)
    for (int64_t i0 = m0; i0 < m1; i0 += 6) {
      float *ap = apack + (i0 - m0) * nr;
      int R = m1 - i0 < 6 ? (int)(m1 - i0) : 6;
      for (int64_t r = 0; r < nr; r++) {
        const float *ar = jb->a + (r0 + r) * jb->sa_r + i0 * jb->sa_i;
        for (int i = 0; i < R; i++) ap[r * 6 + i] = ar[i * jb->sa_i];
      }
    }
  for (int64_t j0 = 0; j0 < nvec;) {
    int64_t w = j0 + 16 <= nvec ? 16 : 8;
    float *bp = bpack + j0 * nr;
    for (int64_t r = 0; r < nr; r++) {
      const float *br = jb->b + (r0 + r) * jb->ldb + n0 + j0;
      for (int64_t q = 0; q < w; q++) bp[r * w + q] = br[q];
    }
    for (int64_t i0 = m0; i0 < m1; i0 += 6) {
      int R = m1 - i0 < 6 ? (int)(m1 - i0) : 6;
      float *c = jb->c + i0 * jb->n + n0 + j0;
      if (packed_a) tile_any(R, apack + (i0 - m0) * nr, 6, 1, bp, w, c, jb->n, nr, load);
      else tile_any(R, jb->a + i0 * jb->sa_i + r0, 1, jb->sa_i, bp, w, c, jb->n, nr, load);
    }
    j0 += w;
  }
  if (n0 + nvec < n1)
    for (int64_t i0 = m0; i0 < m1; i0 += 6)
      tile_scalar(jb, m1 - i0 < 6 ? (int)(m1 - i0) : 6, i0, n0 + nvec, n1, r0, r1, load);
}
#endif

static void outer_tasks(void *user, int64_t t0, int64_t t1, int tid) {
  const outer_job *jb = user;
  float *scratch = cpu_scratch(jb->be, tid);
  (void)scratch;
  for (int64_t t = t0; t < t1; t++) {
    int64_t mb = t / jb->nblocks, nb = t % jb->nblocks;
    int64_t m0 = mb * OUTER_MB, m1 = m0 + OUTER_MB < jb->m ? m0 + OUTER_MB : jb->m;
    int64_t n0 = nb * jb->nb, n1 = n0 + jb->nb < jb->n ? n0 + jb->nb : jb->n;
    if (jb->r == 0 && !jb->accumulate) {
      for (int64_t i = m0; i < m1; i++)
        for (int64_t j = n0; j < n1; j++) jb->c[i * jb->n + j] = 0.0f;
      continue;
    }
    for (int64_t r0 = 0; r0 < jb->r; r0 += OUTER_RB) {
      int64_t r1 = r0 + OUTER_RB < jb->r ? r0 + OUTER_RB : jb->r;
      int load = jb->accumulate || r0 > 0;
#ifdef OUTER_SIMD
      outer_block_simd(jb, scratch, m0, m1, n0, n1, r0, r1, load);
#else
      for (int64_t i0 = m0; i0 < m1; i0 += 6) tile_scalar(jb, m1 - i0 < 6 ? (int)(m1 - i0) : 6, i0, n0, n1, r0, r1, load);
#endif
    }
  }
}

int cpu_gemm_outer(qins_backend *be, const float *a, int64_t sa_i, int64_t sa_r, const float *b, int64_t ldb,
                   float *c, int64_t m, int64_t n, int64_t r, int accumulate) {
  if (m <= 0 || n <= 0) return 0;
  int rc = cpu_scratch_reserve(be, (size_t)(OUTER_MB + OUTER_NB_PACKED) * OUTER_RB * sizeof(float));
  if (rc) return rc;
  int64_t nb = sa_r != 1 ? OUTER_NB_PACKED : OUTER_NB;
  outer_job jb = {be, a, b, c, sa_i, sa_r, ldb, m, n, r, nb, (n + nb - 1) / nb, accumulate};
  int64_t tasks = (m + OUTER_MB - 1) / OUTER_MB * jb.nblocks;
  /* below ~1 MFLOP a thread hand-off costs more than it saves */
  cpu_parallel_tid(be, tasks, m * n * r < (1 << 19) ? tasks : 1, outer_tasks, &jb);
  return 0;
}
