/* Vulkan backend execution: pipelines built lazily from the embedded SPIR-V, command recording
 * with hazard-tracked barriers, descriptor binding (push descriptors or a per-batch pool),
 * timestamp queries per op, batch submission, and tensor bindings that respect the device's
 * offset alignment and maximum binding range (splitting row-parallel ops into chunks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/vk/vk_internal.h"
#include "shaders/vk_shader_table.h"

#define SHADER_COUNT ((int)(sizeof vk_shader_table / sizeof vk_shader_table[0]))
#define PC_WORDS (8 + VK_MAX_PARAMS)

int vk_shader_index(const char *name) {
  for (int i = 0; i < SHADER_COUNT; i++)
    if (strcmp(vk_shader_table[i].name, name) == 0) return i;
  return -1;
}

int qins_vk_shader_count(void) { return SHADER_COUNT; }

int qins_vk_shader_get(int i, const char **name, const uint32_t **code, size_t *bytes) {
  if (i < 0 || i >= SHADER_COUNT) return -1;
  *name = vk_shader_table[i].name;
  *code = vk_shader_table[i].code;
  *bytes = vk_shader_table[i].bytes;
  return 0;
}

int vk_shader_pick(vk_ctx *c, const char *name) {
  if (c->info.subgroup_arith) {
    char sg[96];
    snprintf(sg, sizeof sg, "%s_sg", name);
    int i = vk_shader_index(sg);
    if (i >= 0) return i;
  }
  return vk_shader_index(name);
}

/* Bindings a module declares: the largest Binding decoration + 1 (OpDecorate = 71, Binding = 33). */
static int spirv_bindings(const uint32_t *code, size_t words) {
  int n = 0;
  for (size_t i = 5; i < words;) {
    uint32_t op = code[i] & 0xffff, len = code[i] >> 16;
    if (len == 0) break;
    if (op == 71 && len >= 4 && code[i + 2] == 33 && (int)code[i + 3] + 1 > n) n = (int)code[i + 3] + 1;
    i += len;
  }
  return n;
}

int vk_pipelines_init(vk_ctx *c) {
  c->batch = 1;
  c->pipes = qins_mem_calloc(vk_owner(), (size_t)SHADER_COUNT, sizeof *c->pipes);
  if (!c->pipes) return QINS_ENOMEM;
  VkPushConstantRange pcr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = PC_WORDS * 4};
  for (int n = 1; n <= VK_MAX_BIND; n++) {
    VkDescriptorSetLayoutBinding b[VK_MAX_BIND];
    for (int i = 0; i < n; i++)
      b[i] = (VkDescriptorSetLayoutBinding){.binding = (uint32_t)i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                            .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .flags = c->push_desc ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR : 0,
                                           .bindingCount = (uint32_t)n, .pBindings = b};
    int rc = vk_check(vkCreateDescriptorSetLayout(c->dev, &dci, NULL, &c->dsl[n]), "vkCreateDescriptorSetLayout");
    if (rc) return rc;
    VkPipelineLayoutCreateInfo lci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                      .pSetLayouts = &c->dsl[n], .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    rc = vk_check(vkCreatePipelineLayout(c->dev, &lci, NULL, &c->layouts[n]), "vkCreatePipelineLayout");
    if (rc) return rc;
  }
  if (!c->push_desc) {
    VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = VK_MAX_DISPATCH * VK_MAX_BIND};
    VkDescriptorPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = VK_MAX_DISPATCH,
                                      .poolSizeCount = 1, .pPoolSizes = &ps};
    int rc = vk_check(vkCreateDescriptorPool(c->dev, &pci, NULL, &c->dpool), "vkCreateDescriptorPool");
    if (rc) return rc;
  }
  return 0;
}

void vk_pipelines_fini(vk_ctx *c) {
  if (c->pipes)
    for (int i = 0; i < SHADER_COUNT; i++)
      if (c->pipes[i].pipe) vkDestroyPipeline(c->dev, c->pipes[i].pipe, NULL);
  qins_mem_free(vk_owner(), c->pipes);
  c->pipes = NULL;
  for (int n = 1; n <= VK_MAX_BIND; n++) {
    if (c->layouts[n]) vkDestroyPipelineLayout(c->dev, c->layouts[n], NULL);
    if (c->dsl[n]) vkDestroyDescriptorSetLayout(c->dev, c->dsl[n], NULL);
  }
  if (c->dpool) vkDestroyDescriptorPool(c->dev, c->dpool, NULL);
}

static int get_pipe(vk_ctx *c, int idx, vk_pipe **out) {
  if (idx < 0 || idx >= SHADER_COUNT) return qins_error_set(QINS_EINTERNAL, "vulkan: no shader #%d", idx);
  vk_pipe *p = &c->pipes[idx];
  if (!p->pipe) {
    const uint32_t *code = vk_shader_table[idx].code;
    size_t bytes = vk_shader_table[idx].bytes;
    p->nbind = spirv_bindings(code, bytes / 4);
    if (p->nbind < 1 || p->nbind > VK_MAX_BIND)
      return qins_error_set(QINS_EINTERNAL, "vulkan: shader %s has %d bindings", vk_shader_table[idx].name, p->nbind);
    VkShaderModuleCreateInfo mci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = bytes, .pCode = code};
    VkShaderModule mod;
    int rc = vk_check(vkCreateShaderModule(c->dev, &mci, NULL, &mod), "vkCreateShaderModule");
    if (rc) return rc;
    VkComputePipelineCreateInfo cci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = mod, .pName = "main"},
        .layout = c->layouts[p->nbind]};
    rc = vk_check(vkCreateComputePipelines(c->dev, VK_NULL_HANDLE, 1, &cci, NULL, &p->pipe), "vkCreateComputePipelines");
    vkDestroyShaderModule(c->dev, mod, NULL);
    if (rc) return qins_error_wrap(rc, "shader %s: ", vk_shader_table[idx].name);
    p->layout = c->layouts[p->nbind];
  }
  *out = p;
  return 0;
}

int vk_begin(vk_ctx *c) {
  if (c->recording) return 0;
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  int rc = vk_check(vkBeginCommandBuffer(c->cmd, &bi), "vkBeginCommandBuffer");
  if (rc) return rc;
  if (c->timestamps) vkCmdResetQueryPool(c->cmd, c->qpool, 0, 2 * VK_MAX_DISPATCH);
  if (c->dpool) vkResetDescriptorPool(c->dev, c->dpool, 0);
  c->recording = 1;
  c->ndispatch = 0;
  c->npend_read = c->npend_write = 0;
  return 0;
}

static void full_barrier(vk_ctx *c, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = dst_access};
  vkCmdPipelineBarrier(c->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, dst_stage, 0, 1, &mb,
                       0, NULL, 0, NULL);
  c->npend_read = c->npend_write = 0;
}

static int in_list(const VkBuffer *list, int n, VkBuffer b) {
  for (int i = 0; i < n; i++)
    if (list[i] == b) return 1;
  return 0;
}

/* Barrier only when this command touches what an unfenced earlier command wrote (RAW, WAW) or
 * writes what one read (WAR): independent ops in a row run without one. */
static void hazard(vk_ctx *c, const VkBuffer *bufs, int n, unsigned write_mask) {
  int need = 0;
  for (int i = 0; i < n && !need; i++)
    need = in_list(c->pend_write, c->npend_write, bufs[i]) ||
           ((write_mask >> i & 1) && in_list(c->pend_read, c->npend_read, bufs[i]));
  if (need || c->npend_read + n > VK_MAX_PENDING || c->npend_write + n > VK_MAX_PENDING)
    full_barrier(c, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                 VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT);
  for (int i = 0; i < n; i++) {
    if (write_mask >> i & 1) {
      if (!in_list(c->pend_write, c->npend_write, bufs[i])) c->pend_write[c->npend_write++] = bufs[i];
    } else if (!in_list(c->pend_read, c->npend_read, bufs[i])) {
      c->pend_read[c->npend_read++] = bufs[i];
    }
  }
}

int vk_reserve(vk_ctx *c, int n) {
  if (c->recording && c->ndispatch + n > VK_MAX_DISPATCH) {
    int rc = vk_flush(c);
    if (rc) return rc;
  }
  return vk_begin(c);
}

/* Room for one more command in the batch (submits a full one first). */
static int make_room(vk_ctx *c) { return vk_reserve(c, 1); }

static void stamp(vk_ctx *c, int after, qins_op_kind kind) {
  if (!c->timestamps) return;
  vkCmdWriteTimestamp(c->cmd, after ? VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT : VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, c->qpool,
                      (uint32_t)(2 * c->ndispatch + after));
  if (after) c->qkind[c->ndispatch] = (uint8_t)kind;
}

int vk_dispatch(vk_ctx *c, qins_op_kind kind, int shader, const vk_bind *binds, int nbind, unsigned write_mask,
                const uint32_t *off, const uint32_t *params, int nparams, uint32_t gx, uint32_t gy) {
  if (gx == 0 || gy == 0) return 0;
  vk_pipe *p = NULL;
  int rc = get_pipe(c, shader, &p);
  if (rc) return rc;
  if (nbind != p->nbind)
    return qins_error_set(QINS_EINTERNAL, "vulkan: shader %s takes %d bindings, got %d", vk_shader_table[shader].name,
                          p->nbind, nbind);
  if ((rc = make_room(c))) return rc;
  VkBuffer bufs[VK_MAX_BIND];
  VkDescriptorBufferInfo bi[VK_MAX_BIND];
  VkWriteDescriptorSet wr[VK_MAX_BIND];
  for (int i = 0; i < nbind; i++) {
    bufs[i] = binds[i].vb->buf;
    binds[i].vb->batch = c->batch;
    if (write_mask >> i & 1) vk_shadow_drop(binds[i].vb, binds[i].off, binds[i].range);
    bi[i] = (VkDescriptorBufferInfo){.buffer = binds[i].vb->buf, .offset = binds[i].off, .range = binds[i].range};
    wr[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstBinding = (uint32_t)i,
                                   .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                   .pBufferInfo = &bi[i]};
  }
  hazard(c, bufs, nbind, write_mask);
  vkCmdBindPipeline(c->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipe);
  if (c->push_desc) {
    c->push_desc(c->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, (uint32_t)nbind, wr);
  } else {
    VkDescriptorSet set;
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = c->dpool,
                                      .descriptorSetCount = 1, .pSetLayouts = &c->dsl[nbind]};
    if ((rc = vk_check(vkAllocateDescriptorSets(c->dev, &ai, &set), "vkAllocateDescriptorSets"))) return rc;
    for (int i = 0; i < nbind; i++) wr[i].dstSet = set;
    vkUpdateDescriptorSets(c->dev, (uint32_t)nbind, wr, 0, NULL);
    vkCmdBindDescriptorSets(c->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &set, 0, NULL);
  }
  uint32_t pc[PC_WORDS] = {0};
  memcpy(pc, off, 8 * sizeof *pc);
  if (nparams > VK_MAX_PARAMS) return qins_error_set(QINS_EINTERNAL, "vulkan: too many push constants");
  if (nparams) memcpy(pc + 8, params, (size_t)nparams * sizeof *pc);
  vkCmdPushConstants(c->cmd, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc, pc);
  stamp(c, 0, kind);
  vkCmdDispatch(c->cmd, gx, gy, 1);
  stamp(c, 1, kind);
  c->ndispatch++;
  c->n_commands++;
  return 0;
}

int vk_copy_region(vk_ctx *c, qins_op_kind kind, vk_buffer *src, VkDeviceSize soff, vk_buffer *dst, VkDeviceSize doff,
                   VkDeviceSize bytes) {
  if (bytes == 0) return 0;
  int rc = make_room(c);
  if (rc) return rc;
  VkBuffer bufs[2] = {src->buf, dst->buf};
  src->batch = dst->batch = c->batch;
  vk_shadow_drop(dst, doff, bytes);
  hazard(c, bufs, 2, 2u);
  VkBufferCopy region = {.srcOffset = soff, .dstOffset = doff, .size = bytes};
  stamp(c, 0, kind);
  vkCmdCopyBuffer(c->cmd, src->buf, dst->buf, 1, &region);
  stamp(c, 1, kind);
  c->ndispatch++;
  c->n_commands++;
  return 0;
}

int vk_update_region(vk_ctx *c, vk_buffer *dst, VkDeviceSize off, const void *data, VkDeviceSize bytes) {
  int rc = make_room(c);
  if (rc) return rc;
  dst->batch = c->batch;
  vk_shadow_drop(dst, off, bytes);
  hazard(c, &dst->buf, 1, 1u);
  vkCmdUpdateBuffer(c->cmd, dst->buf, off, bytes, data);
  c->garbage_bytes += bytes; /* the data lives in the command buffer until the batch completes */
  return c->garbage_bytes > 4 * VK_STAGING_CHUNK ? vk_flush(c) : 0;
}

int vk_flush(vk_ctx *c) {
  if (!c->recording) return 0;
  /* make every write visible to the host that maps the memory after the fence */
  full_barrier(c, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  c->recording = 0;
  int rc = vk_check(vkEndCommandBuffer(c->cmd), "vkEndCommandBuffer");
  VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &c->cmd};
  if (!rc) rc = vk_check(vkQueueSubmit(c->queue, 1, &si, c->fence), "vkQueueSubmit");
  c->n_submits++; /* every submit is followed by a host wait: the count of round trips */
  if (!rc) rc = vk_check(vkWaitForFences(c->dev, 1, &c->fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
  vkResetFences(c->dev, 1, &c->fence);
  if (!rc && c->timestamps && c->ndispatch > 0) {
    uint64_t ts[2 * VK_MAX_DISPATCH];
    VkResult r = vkGetQueryPoolResults(c->dev, c->qpool, 0, (uint32_t)(2 * c->ndispatch), sizeof ts, ts, sizeof(uint64_t),
                                       VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (r == VK_SUCCESS)
      for (int i = 0; i < c->ndispatch; i++)
        if (c->qkind[i] < QINS_OP_COUNT)
          c->be->stats[c->qkind[i]].ns +=
              (uint64_t)((double)((ts[2 * i + 1] - ts[2 * i]) & c->ts_mask) * c->info.timestamp_period);
  }
  c->batch++;
  c->ndispatch = 0;
  vk_garbage_free(c);
  if (rc) return qins_error_wrap(rc, "%s: ", c->be->name);
  return 0;
}

int vk_sync(qins_backend *be) { return vk_flush(vk_of(be)); }

int vk_wait_for(vk_ctx *c, vk_buffer *b) {
  if (c->recording && b->batch == c->batch) return vk_flush(c);
  return 0;
}

int vk_bind_tensor(vk_ctx *c, const qins_tensor *t, size_t start, size_t bytes, size_t unit, vk_bind *b,
                   uint32_t *boff) {
  vk_buffer *vb = t->buf->impl;
  size_t s = t->offset + start;
  if (unit > 1 && s % unit)
    return qins_error_set(QINS_EUNSUPPORTED, "vulkan: tensor %s starts at byte %zu, not a multiple of %zu", t->name, s,
                          unit);
  VkDeviceSize base = s / c->align * c->align;
  *boff = (uint32_t)(s - base);
  VkDeviceSize range = (*boff + bytes + 3) & ~(VkDeviceSize)3;
  if (base + range > vb->size) range = vb->size - base;
  if (range > c->max_range)
    return qins_error_set(QINS_EUNSUPPORTED,
                          "vulkan: tensor %s needs %llu bytes in one binding, over the device limit of %u bytes", t->name,
                          (unsigned long long)range, c->max_range);
  b->vb = vb;
  b->off = base;
  b->range = range;
  return 0;
}

void vk_grid(vk_ctx *c, uint64_t items, uint32_t per_group, uint32_t *gx, uint32_t *gy) {
  uint64_t groups = (items + per_group - 1) / per_group;
  uint64_t maxx = c->props.limits.maxComputeWorkGroupCount[0];
  if (maxx > 65535) maxx = 65535;
  *gx = (uint32_t)(groups < maxx ? groups : maxx);
  *gy = *gx ? (uint32_t)((groups + *gx - 1) / *gx) : 0;
}

int vk_run_rows(vk_ctx *c, qins_op_kind kind, int shader, const vk_arg *args, int nargs, int64_t rows,
                uint32_t *params, int nparams, uint64_t items_per_row, uint64_t extra, uint32_t div, uint32_t wg) {
  if (shader < 0) return qins_error_set(QINS_EINTERNAL, "vulkan: shader variant missing for %s", qins_op_name(kind));
  size_t lim = c->max_range > 2 * c->align + 8 ? c->max_range - 2 * c->align - 8 : 4;
  int64_t per = rows;
  for (int i = 0; i < nargs; i++) {
    if (!args[i].row_bytes) continue;
    int64_t r = (int64_t)(lim / args[i].row_bytes);
    if (r < 1)
      return qins_error_set(QINS_EUNSUPPORTED, "vulkan: one row of %s (%zu bytes) exceeds the binding limit of %u bytes",
                            args[i].t->name, args[i].row_bytes, c->max_range);
    if (r < per) per = r;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += per) {
    int64_t nr = rows - r0 < per ? rows - r0 : per;
    vk_bind binds[VK_MAX_BIND];
    uint32_t off[8] = {0};
    unsigned wmask = 0;
    for (int i = 0; i < nargs; i++) {
      const vk_arg *a = &args[i];
      int rc = a->row_bytes ? vk_bind_tensor(c, a->t, (size_t)r0 * a->row_bytes, (size_t)nr * a->row_bytes, a->unit,
                                             &binds[i], &off[i])
                            : vk_bind_tensor(c, a->t, 0, qins_tensor_nbytes(a->t), a->unit, &binds[i], &off[i]);
      if (rc) return rc;
      if (a->write) wmask |= 1u << i;
    }
    params[0] = (uint32_t)nr;
    uint32_t gx, gy;
    if (items_per_row == 0) {
      vk_grid(c, (uint64_t)nr, 1, &gx, &gy);
    } else {
      uint64_t items = ((uint64_t)nr * items_per_row + extra + div - 1) / div;
      vk_grid(c, items, wg, &gx, &gy);
    }
    int rc = vk_dispatch(c, kind, shader, binds, nargs, wmask, off, params, nparams, gx, gy);
    if (rc) return rc;
  }
  return 0;
}
