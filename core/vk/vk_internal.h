/* Internal state of the Vulkan backend shared by its files (device, memory, dispatch, ops). */
#ifndef QINS_VK_INTERNAL_H
#define QINS_VK_INTERNAL_H

#include <vulkan/vulkan.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/vk/vk.h"

#define VK_MAX_BIND 8
#define VK_MAX_PARAMS 24
#define VK_MAX_DISPATCH 1024 /* per batch: bounds the timestamp pool; the batch is submitted when full (one
                              * micro-batch of a GPT-2 124M training step fits in one batch) */
#define VK_MAX_PENDING 64   /* buffers tracked for hazards since the last barrier */
#define VK_STAGING_CHUNK ((size_t)32 << 20)
#define VK_LUT_FLOATS (256 + 64)

typedef struct vk_buffer {
  VkBuffer buf;
  VkDeviceMemory mem;
  VkDeviceSize size; /* allocated (rounded up to 16) */
  void *map;         /* mapped pointer when host-visible and mapping is allowed */
  uint64_t batch;    /* the batch that last used it: waits for that batch before host access */
  /* host shadow: the bytes [shadow_off, +shadow_bytes) the host last wrote (small writes: ids,
   * positions, targets), dropped when a device command writes over them. A read inside it is
   * served from the shadow without a submit (embed_backward and cross_entropy check ids on the
   * host, which used to cost a submit + wait mid-step). */
  void *shadow;
  size_t shadow_off, shadow_bytes;
} vk_buffer;

/* vk_memory.c: a device command writes [off, off+bytes) of b (drops an overlapping shadow). */
void vk_shadow_drop(vk_buffer *b, VkDeviceSize off, VkDeviceSize bytes);

typedef struct vk_pipe {
  VkPipeline pipe;
  VkPipelineLayout layout;
  int nbind;
} vk_pipe;

typedef struct vk_ctx {
  qins_backend *be;
  VkInstance inst;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  VkDevice dev;
  VkQueue queue;
  uint32_t qfam;
  VkPhysicalDeviceProperties props;
  VkPhysicalDeviceMemoryProperties memprops;
  qins_vk_info info;
  uint32_t max_range; /* binding limit in use (device limit unless overridden) */
  uint32_t align;     /* binding offset alignment (>= 4) */
  VkDeviceSize max_alloc; /* maxMemoryAllocationSize: the largest buffer */
  int mem_device;     /* memory type for tensors */
  int mem_staging;    /* host-visible coherent memory type for staging */
  int map_device;     /* tensors are host-mapped */
  PFN_vkCmdPushDescriptorSetKHR push_desc;
  VkDescriptorSetLayout dsl[VK_MAX_BIND + 1];      /* by binding count */
  VkPipelineLayout layouts[VK_MAX_BIND + 1];
  VkDescriptorPool dpool;                          /* when push descriptors are missing */
  vk_pipe *pipes;                                  /* one per shader table entry, built lazily */
  VkCommandPool cmdpool;
  VkCommandBuffer cmd;
  VkFence fence;
  int recording;
  uint64_t batch; /* serial of the batch being recorded */
  int ndispatch;
  uint64_t n_submits, n_commands; /* totals since creation (qins_vk_counters) */
  VkQueryPool qpool;
  int timestamps;
  uint64_t ts_mask; /* timestampValidBits as a mask: differences wrap within it */
  uint8_t qkind[VK_MAX_DISPATCH];
  /* hazard tracking since the last barrier */
  VkBuffer pend_read[VK_MAX_PENDING], pend_write[VK_MAX_PENDING];
  int npend_read, npend_write;
  /* staging and temporary buffers freed once the batch completes */
  vk_buffer **garbage;
  int ngarbage, cap_garbage;
  size_t garbage_bytes;
  vk_buffer *scratch; /* attention split partials; replaced (old one to garbage) when too small */
  qins_buf *lut; /* D_1 tables of qins8 (256) and qins6 (64) */
  int validation_msgs;
  int lut_arith; /* QINS_VK_LUT_ARITH=1: qins8/qins6 matmul computes D_1 instead of the table (_la) */
} vk_ctx;

static inline vk_ctx *vk_of(qins_backend *be) { return (vk_ctx *)be->impl; }
qins_mem_owner *vk_owner(void);
int vk_check(VkResult r, const char *what);

/* vk_device.c */
void vk_destroy_backend(qins_backend *be);

/* vk_memory.c */
int vk_buffer_create(vk_ctx *c, VkDeviceSize size, int staging, vk_buffer **out);
void vk_buffer_destroy(vk_ctx *c, vk_buffer *b);
int vk_garbage_add(vk_ctx *c, vk_buffer *b);
void vk_garbage_free(vk_ctx *c);
int vk_buf_alloc(qins_backend *be, size_t bytes, qins_buf **out);
int vk_buf_wrap(qins_backend *be, void *host, size_t bytes, qins_buf **out);
void vk_buf_free(qins_backend *be, qins_buf *buf);
int vk_buf_write(qins_backend *be, qins_buf *buf, size_t offset, const void *src, size_t bytes);
int vk_buf_read(qins_backend *be, qins_buf *buf, size_t offset, void *dst, size_t bytes);
/* A temporary device buffer of n floats viewed as an f32 tensor [n] (holder is its qins_buf),
 * freed once the batch completes; room for ncmds commands is reserved first (vk_reserve). */
int vk_scratch_tensor(vk_ctx *c, qins_tensor *t, qins_buf *holder, const char *name, int64_t n, int ncmds);

/* vk_dispatch.c */
typedef struct vk_bind {
  vk_buffer *vb;
  VkDeviceSize off, range;
} vk_bind;
int vk_pipelines_init(vk_ctx *c);
void vk_pipelines_fini(vk_ctx *c);
int vk_shader_index(const char *name);
/* The variant of `name` this device runs best (the _sg one where subgroup arithmetic exists). */
int vk_shader_pick(vk_ctx *c, const char *name);
int vk_begin(vk_ctx *c);
/* Room for n more commands in the recording batch, submitting the current one if needed. Call it
 * before putting a buffer those commands use into the garbage list (a flush frees the list). */
int vk_reserve(vk_ctx *c, int n);
int vk_flush(vk_ctx *c);
int vk_sync(qins_backend *be);
/* Bind `bytes` bytes of t starting `start` bytes past its offset; *boff receives the byte
 * offset of that start inside the (aligned) bound range. unit: required alignment of start. */
int vk_bind_tensor(vk_ctx *c, const qins_tensor *t, size_t start, size_t bytes, size_t unit, vk_bind *b,
                   uint32_t *boff);
/* Record one dispatch of shader `shader` (index) with bindings, push constants (off[8] then
 * params), groups (x, y); write_mask: which bindings it writes. */
int vk_dispatch(vk_ctx *c, qins_op_kind kind, int shader, const vk_bind *binds, int nbind, unsigned write_mask,
                const uint32_t *off, const uint32_t *params, int nparams, uint32_t gx, uint32_t gy);
/* Groups for n work items of `per_group` each, folded into a 2-D grid. */
void vk_grid(vk_ctx *c, uint64_t items, uint32_t per_group, uint32_t *gx, uint32_t *gy);
/* Record a buffer copy (transfer) in the batch. */
int vk_copy_region(vk_ctx *c, qins_op_kind kind, vk_buffer *src, VkDeviceSize soff, vk_buffer *dst, VkDeviceSize doff,
                   VkDeviceSize bytes);
/* Record a small host-to-buffer write (vkCmdUpdateBuffer: <= 64 KiB, 4-byte aligned). */
int vk_update_region(vk_ctx *c, vk_buffer *dst, VkDeviceSize off, const void *data, VkDeviceSize bytes);
/* Wait for the batch if it used b (before host access or destruction). */
int vk_wait_for(vk_ctx *c, vk_buffer *b);

/* vk_ops.c, vk_codec.c */
extern const qins_backend_ops vk_backend_ops;
int vk_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias, qins_tensor *y);
int vk_calibrate(qins_backend *be, const qins_tensor *x, qins_dtype format, qins_alpha_spec spec, qins_tensor *alpha);
int vk_quantize(qins_backend *be, const qins_tensor *x, qins_tensor *dst);
int vk_dequantize(qins_backend *be, const qins_tensor *src, qins_tensor *y);
/* The D_1 tables (c->lut: qins8's 256 entries, then qins6's 64) as an f32 tensor for binding. */
void vk_lut_tensor(vk_ctx *c, qins_tensor *lut);
/* vk_grad.c: backward ops */
int vk_matmul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                              qins_tensor *dx, qins_tensor *dw, qins_tensor *dbias);
int vk_add_backward(qins_backend *be, const qins_tensor *dy, qins_tensor *db);
int vk_mul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *a, const qins_tensor *b,
                           qins_tensor *da, qins_tensor *db);
int vk_rmsnorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                               float eps, qins_tensor *dx, qins_tensor *dw);
int vk_layernorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                                 float eps, qins_tensor *dx, qins_tensor *dw, qins_tensor *db);
int vk_rope_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *pos, const qins_tensor *inv_freq,
                            int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *dx);
int vk_softmax_backward(qins_backend *be, const qins_tensor *y, const qins_tensor *dy, qins_tensor *dx);
int vk_silu_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
int vk_gelu_tanh_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
int vk_silu_mul_backward(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, const qins_tensor *dy,
                                qins_tensor *dgate, qins_tensor *dup);
int vk_embed_backward(qins_backend *be, const qins_tensor *ids, const qins_tensor *dy, qins_tensor *dtable);
int vk_attention_backward(qins_backend *be, const qins_tensor *q, const qins_tensor *k, const qins_tensor *v,
                          int64_t pos0, float scale, const qins_tensor *dout, qins_tensor *dq, qins_tensor *dk,
                          qins_tensor *dv);
int vk_cross_entropy(qins_backend *be, const qins_tensor *logits, const qins_tensor *targets, qins_tensor *loss,
                            qins_tensor *dlogits, float scale);
int vk_adamw_step(qins_backend *be, qins_tensor *w, const qins_tensor *g, qins_tensor *m, qins_tensor *v,
                  const qins_adamw_step_args *a);
int vk_sumsq(qins_backend *be, const qins_tensor *x, qins_tensor *out, int64_t index);
int vk_cast_impl(vk_ctx *c, qins_op_kind kind, const qins_tensor *src, const qins_tensor *dst);

/* A row-parallel op argument: bound per chunk of rows (row_bytes > 0) or whole (row_bytes 0). */
typedef struct vk_arg {
  const qins_tensor *t;
  size_t row_bytes; /* bytes per row of this tensor (0: bind the whole tensor every chunk) */
  size_t unit;      /* alignment its shader needs at the start (4 for f32/i32 arrays, else 1 or 2) */
  int write;
} vk_arg;
/* Run a row-parallel shader over `rows` rows, split into chunks whose per-row bindings fit the
 * binding limit. params[0] is set to each chunk's row count. Groups per chunk:
 * one per row when items_per_row is 0, else ceil((rows*items_per_row + extra) / div / WG). */
int vk_run_rows(vk_ctx *c, qins_op_kind kind, int shader, const vk_arg *args, int nargs, int64_t rows,
                uint32_t *params, int nparams, uint64_t items_per_row, uint64_t extra, uint32_t div, uint32_t wg);

#endif
