/* The compute op table: every backend (cpu reference/fast path, Vulkan) implements it.
 *
 * Callers use the qins_op_* wrappers, which check dtypes and shapes once (with tensor names in
 * the message) and then dispatch; backend implementations may assume valid arguments.
 * Ops may run asynchronously (Vulkan records into a command buffer); qins_backend_sync and
 * qins_buf_read wait for queued work. All tensors are contiguous row-major. */
#ifndef QINS_BACKEND_H
#define QINS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

typedef struct qins_backend qins_backend;
typedef struct qins_adamw_step_args qins_adamw_step_args; /* core/backend_grad.h */

typedef struct qins_buf {
  qins_backend *be;
  size_t size;
  void *host;   /* host address of byte 0, or NULL when the memory is device-only */
  void *impl;   /* backend-private */
} qins_buf;

typedef enum qins_rope_mode {
  QINS_ROPE_INTERLEAVED = 0, /* rotates pairs (2i, 2i+1) (llama2.c, GPT-J) */
  QINS_ROPE_HALF = 1,        /* rotates pairs (i, i + rot_dim/2) (HF rotate_half: Llama, Phi-3) */
} qins_rope_mode;

typedef enum qins_alpha_mode {
  QINS_ALPHA_MSE = 0, /* minimise reconstruction MSE per row (bounded search on log alpha) */
  QINS_ALPHA_STD,     /* alpha = c / std(row) */
  QINS_ALPHA_ABSMAX,  /* largest |x| lands on the largest-magnitude code */
  QINS_ALPHA_FIXED,   /* alpha = v */
} qins_alpha_mode;

typedef struct qins_alpha_spec {
  qins_alpha_mode mode;
  float value; /* c for std:c, v for fixed:v; unused otherwise */
} qins_alpha_spec;

/* Op kinds, for per-op statistics (calls and device/wall time). */
typedef enum qins_op_kind {
  QINS_OP_MATMUL, QINS_OP_ADD, QINS_OP_MUL, QINS_OP_RMSNORM, QINS_OP_LAYERNORM, QINS_OP_ROPE,
  QINS_OP_SOFTMAX, QINS_OP_SILU, QINS_OP_GELU_TANH, QINS_OP_SILU_MUL, QINS_OP_EMBED,
  QINS_OP_ATTENTION, QINS_OP_ARGMAX, QINS_OP_TOPK, QINS_OP_COPY, QINS_OP_CAST,
  QINS_OP_CALIBRATE, QINS_OP_QUANTIZE, QINS_OP_DEQUANTIZE,
  /* backward ops (core/backend_grad.h) */
  QINS_OP_MATMUL_BACKWARD, QINS_OP_ADD_BACKWARD, QINS_OP_MUL_BACKWARD, QINS_OP_RMSNORM_BACKWARD,
  QINS_OP_LAYERNORM_BACKWARD, QINS_OP_ROPE_BACKWARD, QINS_OP_SOFTMAX_BACKWARD, QINS_OP_SILU_BACKWARD,
  QINS_OP_GELU_TANH_BACKWARD, QINS_OP_SILU_MUL_BACKWARD, QINS_OP_EMBED_BACKWARD, QINS_OP_ATTENTION_BACKWARD,
  QINS_OP_CROSS_ENTROPY,
  /* optimizer (core/backend_grad.h) */
  QINS_OP_ADAMW_STEP,
  QINS_OP_SUMSQ, /* sum of squares of a gradient (qins_op_sumsq) */
  QINS_OP_COUNT
} qins_op_kind;

const char *qins_op_name(qins_op_kind op);

/* How a matmul with a quantized weight (qins-f32, qins8, qins6, int8-row, int8-block32) runs:
 * fused (codes decoded in registers or per tile, the row scale folded: the default) or unfused
 * (the weight decoded into a float scratch buffer by the codec's dequantize, then the f32 matmul:
 * the reference path kept for comparison, gate A5). Per backend: see qins_backend_set_qmatmul_path. */
typedef enum qins_qmatmul_path {
  QINS_QMATMUL_FUSED = 0,
  QINS_QMATMUL_UNFUSED = 1,
} qins_qmatmul_path;

typedef struct qins_op_stat {
  uint64_t calls;
  uint64_t ns; /* measured time: wall on cpu, GPU timestamps on vk */
} qins_op_stat;

typedef struct qins_backend_ops {
  /* ---- buffers ---- */
  int (*buf_alloc)(qins_backend *be, size_t bytes, qins_buf **out);
  /* Make host memory (kept alive by the caller, e.g. an mmap'd model) usable by ops.
   * The cpu backend uses it in place (zero copy); a device backend may copy it. */
  int (*buf_wrap)(qins_backend *be, void *host, size_t bytes, qins_buf **out);
  void (*buf_free)(qins_backend *be, qins_buf *buf);
  int (*buf_write)(qins_backend *be, qins_buf *buf, size_t offset, const void *src, size_t bytes);
  int (*buf_read)(qins_backend *be, qins_buf *buf, size_t offset, void *dst, size_t bytes);
  int (*sync)(qins_backend *be);
  void (*destroy)(qins_backend *be);

  /* ---- forward ops (shapes as documented at the qins_op_* wrappers below) ---- */
  int (*matmul)(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                qins_tensor *y);
  int (*add)(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
  int (*mul)(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
  int (*rmsnorm)(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y);
  int (*layernorm)(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b,
                   float eps, qins_tensor *y);
  int (*rope)(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq,
              int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *y);
  int (*softmax)(qins_backend *be, const qins_tensor *x, qins_tensor *y);
  int (*silu)(qins_backend *be, const qins_tensor *x, qins_tensor *y);
  int (*gelu_tanh)(qins_backend *be, const qins_tensor *x, qins_tensor *y);
  int (*silu_mul)(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y);
  int (*embed)(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y);
  int (*attention)(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache,
                   const qins_tensor *v_cache, int64_t pos0, float scale, qins_tensor *out);
  int (*argmax)(qins_backend *be, const qins_tensor *x, qins_tensor *idx);
  int (*topk)(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx);
  int (*copy)(qins_backend *be, const qins_tensor *src, qins_tensor *dst);
  int (*cast)(qins_backend *be, const qins_tensor *src, qins_tensor *dst);

  /* ---- QINS codec and int8 baselines ---- */
  int (*calibrate)(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec,
                   qins_tensor *alpha);
  int (*quantize)(qins_backend *be, const qins_tensor *x, qins_tensor *dst);
  int (*dequantize)(qins_backend *be, const qins_tensor *src, qins_tensor *y);

  /* ---- backward ops: added here with training (each *_backward beside its forward) ----
   * Shapes and the overwrite/accumulate convention are documented at the qins_op_*_backward
   * wrappers in core/backend_grad.h. NULL members: the wrapper returns QINS_EUNSUPPORTED. */
  int (*matmul_backward)(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                         qins_tensor *dx, qins_tensor *dw, qins_tensor *dbias);
  int (*add_backward)(qins_backend *be, const qins_tensor *dy, qins_tensor *db);
  int (*mul_backward)(qins_backend *be, const qins_tensor *dy, const qins_tensor *a, const qins_tensor *b,
                      qins_tensor *da, qins_tensor *db);
  int (*rmsnorm_backward)(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                          float eps, qins_tensor *dx, qins_tensor *dw);
  int (*layernorm_backward)(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                            float eps, qins_tensor *dx, qins_tensor *dw, qins_tensor *db);
  int (*rope_backward)(qins_backend *be, const qins_tensor *dy, const qins_tensor *pos, const qins_tensor *inv_freq,
                       int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *dx);
  int (*softmax_backward)(qins_backend *be, const qins_tensor *y, const qins_tensor *dy, qins_tensor *dx);
  int (*silu_backward)(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
  int (*gelu_tanh_backward)(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
  int (*silu_mul_backward)(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, const qins_tensor *dy,
                           qins_tensor *dgate, qins_tensor *dup);
  int (*embed_backward)(qins_backend *be, const qins_tensor *ids, const qins_tensor *dy, qins_tensor *dtable);
  int (*attention_backward)(qins_backend *be, const qins_tensor *q, const qins_tensor *k, const qins_tensor *v,
                            int64_t pos0, float scale, const qins_tensor *dout, qins_tensor *dq, qins_tensor *dk,
                            qins_tensor *dv);
  int (*cross_entropy)(qins_backend *be, const qins_tensor *logits, const qins_tensor *targets, qins_tensor *loss,
                       qins_tensor *dlogits, float scale);

  /* ---- optimizer: one AdamW step where the parameter lives (qins_op_adamw_step) ---- */
  int (*adamw_step)(qins_backend *be, qins_tensor *w, const qins_tensor *g, qins_tensor *m, qins_tensor *v,
                    const qins_adamw_step_args *a);
  /* ---- gradient norm: sum of squares into out[3*index..3*index+2] (qins_op_sumsq) ---- */
  int (*sumsq)(qins_backend *be, const qins_tensor *x, qins_tensor *out, int64_t index);
} qins_backend_ops;

struct qins_backend {
  const qins_backend_ops *ops;
  char name[64];          /* "cpu", "vk:0" */
  char device_name[256];  /* "cpu (2 threads)", "llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA H100" */
  int threads;            /* cpu worker threads (cpu backend), 0 otherwise */
  qins_op_stat stats[QINS_OP_COUNT];
  void *impl;
  /* quantized matmul path; starts as QINS_MATMUL_UNFUSED=1 in the environment says (else fused) */
  qins_qmatmul_path qmatmul_path;
};

/* ---- selection ----
 * spec: "cpu", "cpu:T" (T threads), "vk" (first device), "vk:N", "auto" (a Vulkan GPU that is not
 * a CPU emulation such as lavapipe; else cpu). NULL or "" means "auto". */
int qins_backend_create(const char *spec, qins_backend **out);
void qins_backend_destroy(qins_backend *be);
int qins_backend_sync(qins_backend *be);
/* Names of the backends available on this machine ("cpu", then "vk:0", ...): for tests that run
 * every op on every backend. Returns the count written (at most max). */
int qins_backend_list(char names[][64], int max);
/* Choose the fused or unfused quantized matmul for every later matmul on this backend (cpu and
 * vk both implement both); returns the previous path. Set it between calls, not during one. */
qins_qmatmul_path qins_backend_set_qmatmul_path(qins_backend *be, qins_qmatmul_path path);
/* The default a backend constructor stores: QINS_MATMUL_UNFUSED=1 in the environment, else fused. */
qins_qmatmul_path qins_qmatmul_path_default(void);

/* ---- buffers and tensor placement ---- */
int qins_buf_alloc(qins_backend *be, size_t bytes, qins_buf **out);
int qins_buf_wrap(qins_backend *be, void *host, size_t bytes, qins_buf **out);
void qins_buf_free(qins_buf *buf);
int qins_buf_write(qins_buf *buf, size_t offset, const void *src, size_t bytes);
int qins_buf_read(qins_buf *buf, size_t offset, void *dst, size_t bytes);
/* Allocate a buffer exactly for t (and for t->scale if set, in a buffer of its own). */
int qins_tensor_alloc(qins_backend *be, qins_tensor *t);
void qins_tensor_free(qins_tensor *t);
int qins_tensor_write(qins_tensor *t, const void *src);  /* qins_tensor_nbytes(t) bytes */
int qins_tensor_read(const qins_tensor *t, void *dst);

/* ---- ops (all activations f32 unless stated) ---- */
/* y[M,N] = x[M,K] . w[N,K]^T (+ bias[N]).  w: f32, f16 or bf16 (quantized weights: QINS issue). */
int qins_op_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                   qins_tensor *y);
/* y = a + b, y = a * b; b has a's element count or one row's (broadcast over rows). y may alias a. */
int qins_op_add(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
int qins_op_mul(qins_backend *be, const qins_tensor *a, const qins_tensor *b, qins_tensor *y);
/* Per row of x[M,D]: y = x / sqrt(mean(x^2) + eps) * w[D]. */
int qins_op_rmsnorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, float eps, qins_tensor *y);
/* Per row: y = (x - mean) / sqrt(var + eps) * w[D] + b[D] (b may be NULL); var is the biased variance. */
int qins_op_layernorm(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b,
                      float eps, qins_tensor *y);
/* x[M,H,D] rotated at positions pos (i32 [M]) by angle pos * inv_freq[i] (f32 [rot_dim/2], already
 * holding theta and any per-dimension scale factors); cos and sin are multiplied by attn_factor.
 * Dimensions >= rot_dim pass through. y may alias x. */
int qins_op_rope(qins_backend *be, const qins_tensor *x, const qins_tensor *pos, const qins_tensor *inv_freq,
                 int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *y);
/* Row-wise softmax of x[M,N]. y may alias x. */
int qins_op_softmax(qins_backend *be, const qins_tensor *x, qins_tensor *y);
int qins_op_silu(qins_backend *be, const qins_tensor *x, qins_tensor *y);
/* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
int qins_op_gelu_tanh(qins_backend *be, const qins_tensor *x, qins_tensor *y);
/* y = silu(gate) * up (the SwiGLU MLP). */
int qins_op_silu_mul(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, qins_tensor *y);
/* y[M,D] = table[ids[m]] (table f32/f16/bf16 [V,D], ids i32 [M], every id in [0,V)). */
int qins_op_embed(qins_backend *be, const qins_tensor *table, const qins_tensor *ids, qins_tensor *y);
/* Causal attention with grouped-query heads over a KV cache.
 * q[M,Hq,D] are the queries at positions pos0..pos0+M-1; k_cache, v_cache [T,Hkv,D] (T >= pos0+M,
 * Hq % Hkv == 0) already hold keys and values for positions 0..pos0+M-1. Query m attends to
 * positions 0..pos0+m with weights softmax(scale * q.k). out[M,Hq,D]. */
int qins_op_attention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache,
                      const qins_tensor *v_cache, int64_t pos0, float scale, qins_tensor *out);
/* idx (i32 [M]) = argmax of each row of x[M,N]; ties go to the lowest index. */
int qins_op_argmax(qins_backend *be, const qins_tensor *x, qins_tensor *idx);
/* The k largest per row, sorted descending (ties: lower index first): values f32 [M,k], idx i32 [M,k]. */
int qins_op_topk(qins_backend *be, const qins_tensor *x, int k, qins_tensor *values, qins_tensor *idx);
/* Same dtype and element count; shapes may differ (reshape). Use tensor offsets for views. */
int qins_op_copy(qins_backend *be, const qins_tensor *src, qins_tensor *dst);
/* Between f32, f16 and bf16 (round to nearest even). */
int qins_op_cast(qins_backend *be, const qins_tensor *src, qins_tensor *dst);

/* ---- QINS codec (../shared/QINS.md) ----
 * Rows are the last dimension of x: reshape to [1, N] for one alpha per tensor, to [T*H, D] for
 * one per (token, head). */
/* alpha (f32 [rows]) for x[R,C] stored in `format` (qins-f32, qins8 or qins6). */
int qins_op_calibrate(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec,
                      qins_tensor *alpha);
/* Encode x (f32) into dst, whose dtype picks the format: qins-f32/qins8/qins6 read alpha from
 * dst->scale (calibrate first); int8-row/int8-block32 write their absmax steps into dst->scale;
 * f16/bf16 cast. */
int qins_op_quantize(qins_backend *be, const qins_tensor *x, qins_tensor *dst);
/* Decode src (any format quantize writes) back to f32 y of the same shape. */
int qins_op_dequantize(qins_backend *be, const qins_tensor *src, qins_tensor *y);

/* Parse "mse", "std:0.7", "absmax", "fixed:1.5". */
int qins_alpha_spec_parse(const char *text, qins_alpha_spec *out);
const char *qins_alpha_spec_format(qins_alpha_spec spec, char *buf, size_t n);

/* Backend constructors (core/cpu, core/vk). */
int qins_cpu_backend_create(int threads, qins_backend **out);
#ifdef QINS_HAVE_VULKAN
/* device_index < 0: the first device; want_gpu: skip CPU emulations (lavapipe), fail if none. */
int qins_vk_backend_create(int device_index, int want_gpu, qins_backend **out);
int qins_vk_device_count(void);
#endif

#endif
