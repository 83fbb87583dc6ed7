/* The cpu backend: buffers in host memory and two op tables: the fast path (cpu_ops.c,
 * cpu_matmul.c: threads, vectorised and blocked loops) and the plain reference loops (cpu_ref.c),
 * chosen at creation with QINS_CPU_REFERENCE=1. Both share the codec ops (cpu_codec.c). */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/cpu/cpu_ops.h"
#include "core/cpu/cpu_grad.h"
#include "core/error.h"
#include "core/mem.h"

static qins_mem_owner *cpu_owner(void) { return qins_mem_owner_get("backend.cpu"); }

static int cpu_buf_alloc(qins_backend *be, size_t bytes, qins_buf **out) {
  qins_buf *buf = qins_mem_calloc(cpu_owner(), 1, sizeof *buf);
  if (!buf) return QINS_ENOMEM;
  buf->host = qins_mem_alloc_aligned(cpu_owner(), bytes ? bytes : 1, 64);
  if (!buf->host) {
    qins_mem_free(cpu_owner(), buf);
    return QINS_ENOMEM;
  }
  buf->be = be;
  buf->size = bytes;
  buf->impl = buf; /* marks "owned": freed with the buffer */
  *out = buf;
  return 0;
}

static int cpu_buf_wrap(qins_backend *be, void *host, size_t bytes, qins_buf **out) {
  qins_buf *buf = qins_mem_calloc(cpu_owner(), 1, sizeof *buf);
  if (!buf) return QINS_ENOMEM;
  buf->be = be;
  buf->size = bytes;
  buf->host = host;
  buf->impl = NULL; /* borrowed: the caller keeps the memory alive */
  *out = buf;
  return 0;
}

static void cpu_buf_free(qins_backend *be, qins_buf *buf) {
  if (buf->impl) qins_mem_free(cpu_owner(), buf->host);
  qins_mem_free(cpu_owner(), buf);
}

static int cpu_buf_write(qins_backend *be, qins_buf *buf, size_t offset, const void *src, size_t bytes) {
  memcpy((char *)buf->host + offset, src, bytes);
  return 0;
}

static int cpu_buf_read(qins_backend *be, qins_buf *buf, size_t offset, void *dst, size_t bytes) {
  memcpy(dst, (const char *)buf->host + offset, bytes);
  return 0;
}

static int cpu_sync(qins_backend *be) { return 0; }

static void cpu_destroy(qins_backend *be) {
  cpu_pool_destroy(be->impl);
  qins_mem_free(cpu_owner(), be);
}

static const qins_backend_ops cpu_ops = {
    .buf_alloc = cpu_buf_alloc,
    .buf_wrap = cpu_buf_wrap,
    .buf_free = cpu_buf_free,
    .buf_write = cpu_buf_write,
    .buf_read = cpu_buf_read,
    .sync = cpu_sync,
    .destroy = cpu_destroy,
    .matmul = cpu_matmul,
    .add = cpu_add,
    .mul = cpu_mul,
    .rmsnorm = cpu_rmsnorm,
    .layernorm = cpu_layernorm,
    .rope = cpu_rope,
    .softmax = cpu_softmax,
    .silu = cpu_silu,
    .gelu_tanh = cpu_gelu_tanh,
    .silu_mul = cpu_silu_mul,
    .embed = cpu_embed,
    .attention = cpu_attention,
    .argmax = cpu_argmax,
    .topk = cpu_topk,
    .copy = cpu_copy,
    .cast = cpu_cast,
    .calibrate = cpu_calibrate,
    .quantize = cpu_quantize,
    .dequantize = cpu_dequantize,
    /* backward ops (cpu_grad.c) */
    .matmul_backward = cpu_matmul_backward,
    .add_backward = cpu_add_backward,
    .mul_backward = cpu_mul_backward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .layernorm_backward = cpu_layernorm_backward,
    .rope_backward = cpu_rope_backward,
    .softmax_backward = cpu_softmax_backward,
    .silu_backward = cpu_silu_backward,
    .gelu_tanh_backward = cpu_gelu_tanh_backward,
    .silu_mul_backward = cpu_silu_mul_backward,
    .embed_backward = cpu_embed_backward,
    .attention_backward = cpu_attention_backward,
    .cross_entropy = cpu_cross_entropy,
    .adamw_step = cpu_adamw_step,
    .sumsq = cpu_sumsq,
};

static const qins_backend_ops cpu_ref_ops = {
    .buf_alloc = cpu_buf_alloc,
    .buf_wrap = cpu_buf_wrap,
    .buf_free = cpu_buf_free,
    .buf_write = cpu_buf_write,
    .buf_read = cpu_buf_read,
    .sync = cpu_sync,
    .destroy = cpu_destroy,
    .matmul = cpu_ref_matmul,
    .add = cpu_ref_add,
    .mul = cpu_ref_mul,
    .rmsnorm = cpu_ref_rmsnorm,
    .layernorm = cpu_ref_layernorm,
    .rope = cpu_ref_rope,
    .softmax = cpu_ref_softmax,
    .silu = cpu_ref_silu,
    .gelu_tanh = cpu_ref_gelu_tanh,
    .silu_mul = cpu_ref_silu_mul,
    .embed = cpu_ref_embed,
    .attention = cpu_ref_attention,
    .argmax = cpu_ref_argmax,
    .topk = cpu_ref_topk,
    .copy = cpu_ref_copy,
    .cast = cpu_ref_cast,
    .calibrate = cpu_calibrate,
    .quantize = cpu_quantize,
    .dequantize = cpu_dequantize,
};

int qins_cpu_backend_create(int threads, qins_backend **out) {
  if (threads <= 0) {
    const char *env = getenv("QINS_THREADS");
    threads = env ? atoi(env) : 0;
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0) threads = 1;
  }
  qins_backend *be = qins_mem_calloc(cpu_owner(), 1, sizeof *be);
  if (!be) return QINS_ENOMEM;
  /* the reference loops: for checking a result or a new backend against plain code */
  const char *ref = getenv("QINS_CPU_REFERENCE");
  int reference = ref && *ref && strcmp(ref, "0") != 0;
  be->ops = reference ? &cpu_ref_ops : &cpu_ops;
  be->threads = threads;
  be->qmatmul_path = qins_qmatmul_path_default();
  snprintf(be->name, sizeof be->name, "cpu");
  snprintf(be->device_name, sizeof be->device_name, "cpu (%d threads%s)", threads,
           reference ? ", reference loops" : "");
  int rc = cpu_pool_create(threads, (cpu_pool **)&be->impl);
  if (rc) {
    qins_mem_free(cpu_owner(), be);
    return rc;
  }
  *out = be;
  return 0;
}
