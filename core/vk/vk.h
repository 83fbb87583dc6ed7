/* Vulkan backend extras beyond the op table: what the device offers (for probes, docs, tests)
 * and the validation-layer message count. The backend itself is created through core/backend.h. */
#ifndef QINS_VK_H
#define QINS_VK_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"

typedef struct qins_vk_info {
  char device_name[256];
  uint32_t api_version;
  int is_cpu;                     /* lavapipe/llvmpipe and other CPU emulations */
  int storage16, storage8;        /* storageBuffer16BitAccess, storageBuffer8BitAccess */
  int float16, int8;              /* shaderFloat16, shaderInt8 */
  int float64;                    /* shaderFloat64: norm backward sums in double (_f64 variants) */
  int push_descriptors;           /* VK_KHR_push_descriptor in use */
  int cooperative_matrix;         /* VK_KHR_cooperative_matrix or VK_NV_cooperative_matrix offered (reported only) */
  uint32_t subgroup_size;
  int subgroup_arith;             /* subgroup arithmetic in compute shaders: picks the _sg shader variants */
  uint32_t max_storage_range;     /* maxStorageBufferRange */
  uint32_t min_storage_align;     /* minStorageBufferOffsetAlignment */
  uint32_t max_wg_invocations;    /* maxComputeWorkGroupInvocations */
  float timestamp_period;         /* ns per tick; 0 when the queue has no timestamps */
  uint64_t device_local_bytes;    /* largest device-local heap */
  int mappable;                   /* device buffers are host-visible (written without staging) */
  int validation;                 /* VK_LAYER_KHRONOS_validation enabled (QINS_VK_VALIDATION=1) */
} qins_vk_info;

/* Fails with QINS_EINVAL when be is not a Vulkan backend. */
int qins_vk_get_info(qins_backend *be, qins_vk_info *out);
/* Errors and warnings the validation layer reported so far (0 when validation is off). */
int qins_vk_validation_messages(qins_backend *be);
/* Totals since the backend was created: submits (each one a submit + fence wait, i.e. a host
 * round trip) and recorded commands (compute dispatches and buffer copies). 0 for other backends. */
void qins_vk_counters(qins_backend *be, uint64_t *submits, uint64_t *commands);
/* Overrides (for tests): limit every binding to max_range bytes (0 restores the device limit),
 * so splitting paths run at small sizes. */
void qins_vk_set_max_range(qins_backend *be, uint32_t max_range);

/* The embedded SPIR-V variants (for tests that run spirv-val, and for listing): count, then
 * name and words of variant i. Returns -1 past the end. */
int qins_vk_shader_count(void);
int qins_vk_shader_get(int i, const char **name, const uint32_t **code, size_t *bytes);

#endif
