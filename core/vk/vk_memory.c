/* Vulkan backend memory: device buffers behind qins_buf, staging for uploads/downloads on
 * device-only memory, and buffers kept alive until the batch that uses them completes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/vk/vk_internal.h"

int vk_buffer_create(vk_ctx *c, VkDeviceSize size, int staging, vk_buffer **out) {
  *out = NULL;
  size = (size + 15) & ~(VkDeviceSize)15; /* lets bindings round their range up to whole words */
  if (size == 0) size = 16;
  vk_buffer *b = qins_mem_calloc(vk_owner(), 1, sizeof *b);
  if (!b) return QINS_ENOMEM;
  b->size = size;
  VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                            .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                     VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                            .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  int rc = vk_check(vkCreateBuffer(c->dev, &bci, NULL, &b->buf), "vkCreateBuffer");
  if (rc) {
    qins_mem_free(vk_owner(), b);
    return qins_error_wrap(rc, "buffer of %llu bytes: ", (unsigned long long)size);
  }
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(c->dev, b->buf, &req);
  int type = staging ? c->mem_staging : c->mem_device;
  if (!(req.memoryTypeBits & (1u << type))) {
    vkDestroyBuffer(c->dev, b->buf, NULL);
    qins_mem_free(vk_owner(), b);
    return qins_error_set(QINS_EBACKEND, "vulkan: buffer cannot use memory type %d", type);
  }
  VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                              .memoryTypeIndex = (uint32_t)type};
  rc = vk_check(vkAllocateMemory(c->dev, &mai, NULL, &b->mem), "vkAllocateMemory");
  if (!rc) rc = vk_check(vkBindBufferMemory(c->dev, b->buf, b->mem, 0), "vkBindBufferMemory");
  if (!rc && (staging || c->map_device)) rc = vk_check(vkMapMemory(c->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map), "vkMapMemory");
  if (rc) {
    if (b->mem) vkFreeMemory(c->dev, b->mem, NULL);
    vkDestroyBuffer(c->dev, b->buf, NULL);
    qins_mem_free(vk_owner(), b);
    return qins_error_wrap(rc, "%s buffer of %llu bytes on %s: ", staging ? "staging" : "device", (unsigned long long)size,
                           c->info.device_name);
  }
  /* device allocations have their own owner, so metrics can tell device from host bytes */
  qins_mem_owner_charge(qins_mem_owner_get("device.vk"), (int64_t)size);
  *out = b;
  return 0;
}

void vk_shadow_drop(vk_buffer *b, VkDeviceSize off, VkDeviceSize bytes) {
  if (b->shadow_bytes && off < b->shadow_off + b->shadow_bytes && b->shadow_off < off + bytes) b->shadow_bytes = 0;
}

/* Keeps a host copy of a small write (see vk_buffer.shadow); a larger one just drops it. */
static void shadow_keep(vk_buffer *b, size_t off, const void *src, size_t bytes) {
  b->shadow_bytes = 0;
  if (bytes > 65536) return;
  void *s = qins_mem_realloc(vk_owner(), b->shadow, bytes);
  if (!s) return; /* no shadow: reads wait for the device as before */
  memcpy(s, src, bytes);
  b->shadow = s;
  b->shadow_off = off;
  b->shadow_bytes = bytes;
}

void vk_buffer_destroy(vk_ctx *c, vk_buffer *b) {
  if (!b) return;
  qins_mem_free(vk_owner(), b->shadow);
  if (b->map) vkUnmapMemory(c->dev, b->mem);
  vkDestroyBuffer(c->dev, b->buf, NULL);
  vkFreeMemory(c->dev, b->mem, NULL);
  qins_mem_owner_charge(qins_mem_owner_get("device.vk"), -(int64_t)b->size);
  qins_mem_free(vk_owner(), b);
}

int vk_garbage_add(vk_ctx *c, vk_buffer *b) {
  if (c->ngarbage == c->cap_garbage) {
    int cap = c->cap_garbage ? 2 * c->cap_garbage : 16;
    vk_buffer **g = qins_mem_realloc(vk_owner(), c->garbage, (size_t)cap * sizeof *g);
    if (!g) return QINS_ENOMEM;
    c->garbage = g;
    c->cap_garbage = cap;
  }
  c->garbage[c->ngarbage++] = b;
  c->garbage_bytes += b->size;
  return 0;
}

void vk_garbage_free(vk_ctx *c) {
  for (int i = 0; i < c->ngarbage; i++) vk_buffer_destroy(c, c->garbage[i]);
  c->ngarbage = 0;
  c->garbage_bytes = 0;
}

int vk_buf_alloc(qins_backend *be, size_t bytes, qins_buf **out) {
  vk_ctx *c = vk_of(be);
  *out = NULL;
  if (c->max_alloc && bytes + 16 > c->max_alloc)
    return qins_error_set(QINS_EUNSUPPORTED, "vulkan: buffer of %zu bytes exceeds %s's largest allocation (%llu bytes)",
                          bytes, c->info.device_name, (unsigned long long)c->max_alloc);
  qins_buf *buf = qins_mem_calloc(vk_owner(), 1, sizeof *buf);
  if (!buf) return QINS_ENOMEM;
  vk_buffer *vb;
  int rc = vk_buffer_create(c, bytes, 0, &vb);
  if (rc) {
    qins_mem_free(vk_owner(), buf);
    return rc;
  }
  buf->be = be;
  buf->size = bytes;
  buf->host = NULL; /* never exposed: ops run asynchronously, host access goes through buf_read/write */
  buf->impl = vb;
  *out = buf;
  return 0;
}

int vk_buf_wrap(qins_backend *be, void *host, size_t bytes, qins_buf **out) {
  int rc = vk_buf_alloc(be, bytes, out);
  if (rc) return rc;
  rc = vk_buf_write(be, *out, 0, host, bytes);
  if (rc) {
    vk_buf_free(be, *out);
    *out = NULL;
  }
  return rc;
}

void vk_buf_free(qins_backend *be, qins_buf *buf) {
  vk_ctx *c = vk_of(be);
  vk_buffer *vb = buf->impl;
  vk_wait_for(c, vb);
  vk_buffer_destroy(c, vb);
  qins_mem_free(vk_owner(), buf);
}

int vk_buf_write(qins_backend *be, qins_buf *buf, size_t offset, const void *src, size_t bytes) {
  vk_ctx *c = vk_of(be);
  vk_buffer *vb = buf->impl;
  if (bytes == 0) return 0;
  if (vb->map) {
    int rc = vk_wait_for(c, vb);
    if (rc) return rc;
    memcpy((char *)vb->map + offset, src, bytes);
    shadow_keep(vb, offset, src, bytes);
    return 0;
  }
  /* device-only memory: small aligned writes travel inside the command buffer */
  if (bytes <= 65536 && offset % 4 == 0 && bytes % 4 == 0) {
    int rc = vk_update_region(c, vb, offset, src, bytes);
    if (!rc) shadow_keep(vb, offset, src, bytes);
    return rc;
  }
  /* larger ones as staged copies, recorded in order with the ops around them */
  for (size_t done = 0; done < bytes;) {
    size_t n = bytes - done < VK_STAGING_CHUNK ? bytes - done : VK_STAGING_CHUNK;
    vk_buffer *st;
    int rc = vk_reserve(c, 1);
    if (!rc) rc = vk_buffer_create(c, n, 1, &st);
    if (rc) return rc;
    memcpy(st->map, (const char *)src + done, n);
    rc = vk_garbage_add(c, st);
    if (rc) {
      vk_buffer_destroy(c, st);
      return rc;
    }
    rc = vk_copy_region(c, QINS_OP_COUNT, st, 0, vb, offset + done, n);
    if (!rc && c->garbage_bytes > 4 * VK_STAGING_CHUNK) rc = vk_flush(c);
    if (rc) return rc;
    done += n;
  }
  return 0;
}

int vk_buf_read(qins_backend *be, qins_buf *buf, size_t offset, void *dst, size_t bytes) {
  vk_ctx *c = vk_of(be);
  vk_buffer *vb = buf->impl;
  if (bytes == 0) return 0;
  if (vb->shadow_bytes && offset >= vb->shadow_off && offset + bytes <= vb->shadow_off + vb->shadow_bytes) {
    memcpy(dst, (const char *)vb->shadow + (offset - vb->shadow_off), bytes); /* no device write since */
    return 0;
  }
  if (vb->map) {
    int rc = vk_wait_for(c, vb);
    if (rc) return rc;
    memcpy(dst, (const char *)vb->map + offset, bytes);
    return 0;
  }
  for (size_t done = 0; done < bytes;) {
    size_t n = bytes - done < VK_STAGING_CHUNK ? bytes - done : VK_STAGING_CHUNK;
    vk_buffer *st;
    int rc = vk_buffer_create(c, n, 1, &st);
    if (rc) return rc;
    rc = vk_copy_region(c, QINS_OP_COUNT, vb, offset + done, st, 0, n);
    if (!rc) rc = vk_flush(c);
    if (!rc) memcpy((char *)dst + done, st->map, n);
    vk_buffer_destroy(c, st);
    if (rc) return rc;
    done += n;
  }
  return 0;
}

/* (vk_internal.h) The buffer goes to the garbage list, so callers never free it. */
int vk_scratch_tensor(vk_ctx *c, qins_tensor *t, qins_buf *holder, const char *name, int64_t n, int ncmds) {
  vk_buffer *vb;
  int rc = vk_reserve(c, ncmds);
  if (!rc) rc = vk_buffer_create(c, (VkDeviceSize)(n > 0 ? n : 1) * 4, 0, &vb);
  if (rc) return rc;
  if ((rc = vk_garbage_add(c, vb))) {
    vk_buffer_destroy(c, vb);
    return rc;
  }
  memset(holder, 0, sizeof *holder);
  holder->be = c->be;
  holder->size = (size_t)vb->size;
  holder->impl = vb;
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->dtype = QINS_DT_F32;
  t->ndim = 1;
  t->shape[0] = n;
  t->buf = holder;
  return 0;
}
