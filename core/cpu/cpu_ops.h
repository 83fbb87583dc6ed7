/* The cpu backend's op implementations (internal to core/cpu). */
#ifndef QINS_CPU_OPS_H
#define QINS_CPU_OPS_H

#include "core/backend.h"

typedef struct cpu_pool cpu_pool;
int cpu_pool_create(int threads, cpu_pool **out);
void cpu_pool_destroy(cpu_pool *pool);
/* Run fn(user, begin, end) over [0, n) split into contiguous chunks across the pool's threads;
 * returns when all chunks are done. Small n runs inline. */
typedef void (*cpu_range_fn)(void *user, int64_t begin, int64_t end);
void cpu_parallel(qins_backend *be, int64_t n, int64_t min_chunk, cpu_range_fn fn, void *user);
/* The same with the running thread's index (0..cpu_threads-1, 0 is the caller), for per-thread
 * scratch: reserve it on the calling thread first (that can fail cleanly), then use
 * cpu_scratch(be, tid) inside the task. Scratch lives until the backend is destroyed. */
typedef void (*cpu_task_fn)(void *user, int64_t begin, int64_t end, int tid);
void cpu_parallel_tid(qins_backend *be, int64_t n, int64_t min_chunk, cpu_task_fn fn, void *user);
int cpu_threads(qins_backend *be);
int cpu_scratch_reserve(qins_backend *be, size_t bytes);
void *cpu_scratch(qins_backend *be, int tid);

/* The fast path (cpu_ops.c, cpu_matmul.c): threads, vector-friendly loops, blocking. */
int cpu_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias, qins_tensor *y);
/* c[m,n] (+)= sum_r a[i*sa_i + r*sa_r] b[r*ldb + j] (accumulate: c +=), f32, outer-product
 * micro-kernel, blocked and threaded (cpu_gemm_outer.c; matmul_backward's dx and dw). Fails only
 * when the per-thread packing scratch cannot be had. */
int cpu_gemm_outer(qins_backend *be, const float *a, int64_t sa_i, int64_t sa_r, const float *b, int64_t ldb,
                    float *c, int64_t m, int64_t n, int64_t r, int accumulate);
int cpu_add(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
int cpu_mul(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
int cpu_rmsnorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y);
int cpu_layernorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b, float eps,
                  qins_tensor *y);
int cpu_rope(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq, int rot_dim,
             float attn_factor, qins_rope_mode mode, qins_tensor *y);
int cpu_softmax(qins_backend *be, const qins_tensor *x, qins_tensor *y);
int cpu_silu(qins_backend *be, const qins_tensor *x, qins_tensor *y);
int cpu_gelu_tanh(qins_backend *be, const qins_tensor *x, qins_tensor *y);
int cpu_silu_mul(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y);
int cpu_embed(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y);
int cpu_attention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                  int64_t pos0, float scale, qins_tensor *out);
int cpu_argmax(qins_backend *be, const qins_tensor *x, qins_tensor *idx);
int cpu_topk(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx);
int cpu_copy(qins_backend *be, const qins_tensor *src, qins_tensor *dst);
int cpu_cast(qins_backend *be, const qins_tensor *src, qins_tensor *dst);
/* The reference loops (cpu_ref.c), selected with QINS_CPU_REFERENCE=1. */
int cpu_ref_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias, qins_tensor *y);
int cpu_ref_add(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
int cpu_ref_mul(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
int cpu_ref_rmsnorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y);
int cpu_ref_layernorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b, float eps,
                  qins_tensor *y);
int cpu_ref_rope(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq, int rot_dim,
             float attn_factor, qins_rope_mode mode, qins_tensor *y);
int cpu_ref_softmax(qins_backend *be, const qins_tensor *x, qins_tensor *y);
int cpu_ref_silu(qins_backend *be, const qins_tensor *x, qins_tensor *y);
int cpu_ref_gelu_tanh(qins_backend *be, const qins_tensor *x, qins_tensor *y);
int cpu_ref_silu_mul(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y);
int cpu_ref_embed(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y);
int cpu_ref_attention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                  int64_t pos0, float scale, qins_tensor *out);
int cpu_ref_argmax(qins_backend *be, const qins_tensor *x, qins_tensor *idx);
int cpu_ref_topk(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx);
int cpu_ref_copy(qins_backend *be, const qins_tensor *src, qins_tensor *dst);
int cpu_ref_cast(qins_backend *be, const qins_tensor *src, qins_tensor *dst);
int cpu_calibrate(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec, qins_tensor *alpha);
int cpu_quantize(qins_backend *be, const qins_tensor *x, qins_tensor *dst);
int cpu_dequantize(qins_backend *be, const qins_tensor *src, qins_tensor *y);

#endif
