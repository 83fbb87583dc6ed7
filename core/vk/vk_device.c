/* Vulkan backend: instance and device probing, feature/limit recording, backend create/destroy,
 * the optional validation layer with a message counter. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/vk/vk_internal.h"

qins_mem_owner *vk_owner(void) { return qins_mem_owner_get("backend.vk"); }

int vk_check(VkResult r, const char *what) {
  if (r == VK_SUCCESS) return 0;
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
    return qins_error_set(QINS_ENOMEM, "vulkan: %s: out of memory (VkResult %d)", what, (int)r);
  return qins_error_set(QINS_EBACKEND, "vulkan: %s failed (VkResult %d)", what, (int)r);
}

static int want_validation(void) {
  const char *v = getenv("QINS_VK_VALIDATION");
  return v && *v && strcmp(v, "0") != 0;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT type,
                                               const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
  vk_ctx *c = user;
  if (sev & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT)) {
    if (c) c->validation_msgs++;
    QINS_WARN("vulkan validation: %s", data->pMessage);
  }
  return VK_FALSE;
}

static int layer_present(const char *name) {
  uint32_t n = 0;
  vkEnumerateInstanceLayerProperties(&n, NULL);
  VkLayerProperties *lp = calloc(n ? n : 1, sizeof *lp);
  if (!lp) return 0;
  vkEnumerateInstanceLayerProperties(&n, lp);
  int found = 0;
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(lp[i].layerName, name) == 0) found = 1;
  free(lp);
  return found;
}

/* validation: enable the Khronos layer and a messenger feeding c's counter (c may be NULL). */
static int make_instance(vk_ctx *c, int validation, VkInstance *out, VkDebugUtilsMessengerEXT *messenger) {
  VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "qins",
                           .pEngineName = "qins", .apiVersion = VK_API_VERSION_1_2};
  const char *layers[1] = {"VK_LAYER_KHRONOS_validation"};
  const char *exts[1] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
  VkDebugUtilsMessengerCreateInfoEXT dbg = {
      .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
      .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
      .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
      .pfnUserCallback = debug_cb, .pUserData = c};
  VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app};
  if (validation) {
    if (!layer_present(layers[0]))
      return qins_error_set(QINS_EUNSUPPORTED, "vulkan: QINS_VK_VALIDATION is set but %s is not installed", layers[0]);
    ci.enabledLayerCount = 1;
    ci.ppEnabledLayerNames = layers;
    ci.enabledExtensionCount = 1;
    ci.ppEnabledExtensionNames = exts;
    ci.pNext = &dbg; /* also catches messages from instance creation */
  }
  int rc = vk_check(vkCreateInstance(&ci, NULL, out), "vkCreateInstance");
  if (rc) return rc;
  if (validation && messenger) {
    PFN_vkCreateDebugUtilsMessengerEXT fn =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(*out, "vkCreateDebugUtilsMessengerEXT");
    if (fn) fn(*out, &dbg, NULL, messenger);
  }
  return 0;
}

/* Devices usable by qins: Vulkan 1.2 or newer. Fills up to max handles, returns the count. */
static int usable_devices(VkInstance inst, VkPhysicalDevice *out, int max) {
  uint32_t n = 0;
  if (vkEnumeratePhysicalDevices(inst, &n, NULL) != VK_SUCCESS || n == 0) return 0;
  VkPhysicalDevice *all = calloc(n, sizeof *all);
  if (!all) return 0;
  vkEnumeratePhysicalDevices(inst, &n, all);
  int count = 0;
  for (uint32_t i = 0; i < n; i++) {
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(all[i], &p);
    if (p.apiVersion < VK_API_VERSION_1_2) continue;
    if (count < max) out[count] = all[i];
    count++;
  }
  free(all);
  return count < max ? count : max;
}

int qins_vk_device_count(void) {
  static int cached = -1;
  if (cached >= 0) return cached;
  VkInstance inst;
  if (make_instance(NULL, 0, &inst, NULL)) {
    qins_error_clear();
    return cached = 0;
  }
  VkPhysicalDevice devs[64];
  cached = usable_devices(inst, devs, 64);
  vkDestroyInstance(inst, NULL);
  return cached;
}

static int has_ext(const VkExtensionProperties *e, uint32_t n, const char *name) {
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(e[i].extensionName, name) == 0) return 1;
  return 0;
}

static int pick_memory(const VkPhysicalDeviceMemoryProperties *mp, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid) {
  for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
    VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
    if ((f & want) == want && !(f & avoid)) return (int)i;
  }
  return -1;
}

static void vk_destroy(qins_backend *be) {
  vk_ctx *c = vk_of(be);
  if (c) {
    if (c->dev) {
      vk_flush(c);
      vkDeviceWaitIdle(c->dev);
      if (c->lut) vk_buf_free(be, c->lut);
      vk_buffer_destroy(c, c->scratch);
      vk_garbage_free(c);
      qins_mem_free(vk_owner(), c->garbage);
      vk_pipelines_fini(c);
      if (c->qpool) vkDestroyQueryPool(c->dev, c->qpool, NULL);
      if (c->fence) vkDestroyFence(c->dev, c->fence, NULL);
      if (c->cmdpool) vkDestroyCommandPool(c->dev, c->cmdpool, NULL);
      vkDestroyDevice(c->dev, NULL);
    }
    if (c->messenger) {
      PFN_vkDestroyDebugUtilsMessengerEXT fn =
          (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(c->inst, "vkDestroyDebugUtilsMessengerEXT");
      if (fn) fn(c->inst, c->messenger, NULL);
    }
    if (c->inst) vkDestroyInstance(c->inst, NULL);
    qins_mem_free(vk_owner(), c);
  }
  qins_mem_free(vk_owner(), be);
}

/* The D_1 lookup tables: x = sign(d) (L - |d|) / |d| with d = 2q - L, for L = 255 and 63. */
static int upload_lut(vk_ctx *c) {
  float lut[VK_LUT_FLOATS];
  for (int q = 0; q < 256; q++) {
    int d = 2 * q - 255, ad = d < 0 ? -d : d;
    lut[q] = (d < 0 ? -1.0f : 1.0f) * (float)(255 - ad) / (float)ad;
  }
  for (int q = 0; q < 64; q++) {
    int d = 2 * q - 63, ad = d < 0 ? -d : d;
    lut[256 + q] = (d < 0 ? -1.0f : 1.0f) * (float)(63 - ad) / (float)ad;
  }
  int rc = vk_buf_alloc(c->be, sizeof lut, &c->lut);
  if (!rc) rc = vk_buf_write(c->be, c->lut, 0, lut, sizeof lut);
  return rc;
}

static int create_device(vk_ctx *c) {
  VkPhysicalDeviceVulkan11Features f11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features f12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &f11};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12};
  vkGetPhysicalDeviceFeatures2(c->phys, &f2);
  VkPhysicalDeviceVulkan11Properties p11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES};
  /* p11.maxMemoryAllocationSize bounds one buffer */
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &p11};
  vkGetPhysicalDeviceProperties2(c->phys, &p2);
  c->props = p2.properties;
  vkGetPhysicalDeviceMemoryProperties(c->phys, &c->memprops);

  qins_vk_info *in = &c->info;
  snprintf(in->device_name, sizeof in->device_name, "%s", c->props.deviceName);
  in->api_version = c->props.apiVersion;
  in->is_cpu = c->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
  in->storage16 = f11.storageBuffer16BitAccess && !getenv("QINS_VK_NO_STORAGE16");
  in->storage8 = f12.storageBuffer8BitAccess && !getenv("QINS_VK_NO_STORAGE8");
  c->lut_arith = getenv("QINS_VK_LUT_ARITH") != NULL;
  in->float16 = f12.shaderFloat16;
  in->int8 = f12.shaderInt8;
  in->float64 = f2.features.shaderFloat64 && !getenv("QINS_VK_NO_F64");
  in->subgroup_size = p11.subgroupSize;
  c->max_alloc = p11.maxMemoryAllocationSize;
  in->subgroup_arith = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                       (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                       (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
                       !getenv("QINS_VK_NO_SUBGROUP");
  in->max_storage_range = c->props.limits.maxStorageBufferRange;
  in->min_storage_align = (uint32_t)c->props.limits.minStorageBufferOffsetAlignment;
  in->max_wg_invocations = c->props.limits.maxComputeWorkGroupInvocations;
  for (uint32_t i = 0; i < c->memprops.memoryHeapCount; i++)
    if ((c->memprops.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
        c->memprops.memoryHeaps[i].size > in->device_local_bytes)
      in->device_local_bytes = c->memprops.memoryHeaps[i].size;
  c->max_range = in->max_storage_range;
  c->align = in->min_storage_align < 4 ? 4 : in->min_storage_align;
  if (in->max_wg_invocations < 256)
    return qins_error_set(QINS_EUNSUPPORTED, "vulkan: %s allows only %u invocations per work group (qins needs 256)",
                          in->device_name, in->max_wg_invocations);

  uint32_t next = 0;
  vkEnumerateDeviceExtensionProperties(c->phys, NULL, &next, NULL);
  VkExtensionProperties *exts = calloc(next ? next : 1, sizeof *exts);
  if (!exts) return QINS_ENOMEM;
  vkEnumerateDeviceExtensionProperties(c->phys, NULL, &next, exts);
  int push = has_ext(exts, next, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) && !getenv("QINS_VK_NO_PUSH_DESCRIPTORS");
  in->cooperative_matrix = has_ext(exts, next, "VK_KHR_cooperative_matrix") || has_ext(exts, next, "VK_NV_cooperative_matrix");
  free(exts);

  /* a queue family with compute, preferring one without graphics (dedicated compute) */
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(c->phys, &nq, NULL);
  VkQueueFamilyProperties *qf = calloc(nq ? nq : 1, sizeof *qf);
  if (!qf) return QINS_ENOMEM;
  vkGetPhysicalDeviceQueueFamilyProperties(c->phys, &nq, qf);
  int fam = -1;
  for (uint32_t i = 0; i < nq && fam < 0; i++)
    if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && !(qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) fam = (int)i;
  for (uint32_t i = 0; i < nq && fam < 0; i++)
    if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) fam = (int)i;
  uint32_t ts_bits = fam >= 0 ? qf[fam].timestampValidBits : 0;
  free(qf);
  if (fam < 0) return qins_error_set(QINS_EUNSUPPORTED, "vulkan: %s has no compute queue", in->device_name);
  c->qfam = (uint32_t)fam;
  c->timestamps = ts_bits > 0 && c->props.limits.timestampPeriod > 0;
  c->ts_mask = ts_bits >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << ts_bits) - 1);
  in->timestamp_period = c->timestamps ? c->props.limits.timestampPeriod : 0.0f;

  /* enable only what the shaders may use */
  VkPhysicalDeviceVulkan11Features e11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                          .storageBuffer16BitAccess = f11.storageBuffer16BitAccess};
  VkPhysicalDeviceVulkan12Features e12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &e11,
                                          .storageBuffer8BitAccess = f12.storageBuffer8BitAccess,
                                          .shaderFloat16 = f12.shaderFloat16, .shaderInt8 = f12.shaderInt8};
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = c->qfam,
                                 .queueCount = 1, .pQueuePriorities = &prio};
  const char *dext[1] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  VkPhysicalDeviceFeatures base = {.shaderFloat64 = (VkBool32)in->float64};
  VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &e12, .queueCreateInfoCount = 1,
                            .pEnabledFeatures = &base,
                            .pQueueCreateInfos = &qci, .enabledExtensionCount = push ? 1u : 0u,
                            .ppEnabledExtensionNames = dext};
  int rc = vk_check(vkCreateDevice(c->phys, &dci, NULL, &c->dev), "vkCreateDevice");
  if (rc) return rc;
  vkGetDeviceQueue(c->dev, c->qfam, 0, &c->queue);
  if (push) c->push_desc = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(c->dev, "vkCmdPushDescriptorSetKHR");
  in->push_descriptors = c->push_desc != NULL;

  /* memory: device-local not host-visible (discrete GPUs), else device-local mappable (lavapipe,
   * integrated), else anything host-visible; staging: host-visible coherent, cached if possible */
  const VkMemoryPropertyFlags hv = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  c->mem_device = pick_memory(&c->memprops, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
  c->map_device = 0;
  if (c->mem_device < 0) {
    c->mem_device = pick_memory(&c->memprops, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | hv, 0);
    if (c->mem_device < 0) c->mem_device = pick_memory(&c->memprops, hv, 0);
    c->map_device = c->mem_device >= 0 && !getenv("QINS_VK_NO_MAP");
  }
  c->mem_staging = pick_memory(&c->memprops, hv | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
  if (c->mem_staging < 0) c->mem_staging = pick_memory(&c->memprops, hv, 0);
  if (c->mem_device < 0 || c->mem_staging < 0)
    return qins_error_set(QINS_EUNSUPPORTED, "vulkan: %s has no usable memory type", in->device_name);
  in->mappable = c->map_device;

  VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                 .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT, .queueFamilyIndex = c->qfam};
  if ((rc = vk_check(vkCreateCommandPool(c->dev, &pci, NULL, &c->cmdpool), "vkCreateCommandPool"))) return rc;
  VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = c->cmdpool,
                                     .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
  if ((rc = vk_check(vkAllocateCommandBuffers(c->dev, &cai, &c->cmd), "vkAllocateCommandBuffers"))) return rc;
  VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  if ((rc = vk_check(vkCreateFence(c->dev, &fci, NULL, &c->fence), "vkCreateFence"))) return rc;
  if (c->timestamps) {
    VkQueryPoolCreateInfo qci2 = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                  .queryCount = 2 * VK_MAX_DISPATCH};
    if ((rc = vk_check(vkCreateQueryPool(c->dev, &qci2, NULL, &c->qpool), "vkCreateQueryPool"))) return rc;
  }
  if ((rc = vk_pipelines_init(c))) return rc;
  return upload_lut(c);
}

int qins_vk_backend_create(int device_index, int want_gpu, qins_backend **out) {
  *out = NULL;
  qins_backend *be = qins_mem_calloc(vk_owner(), 1, sizeof *be);
  vk_ctx *c = qins_mem_calloc(vk_owner(), 1, sizeof *c);
  if (!be || !c) {
    qins_mem_free(vk_owner(), be);
    qins_mem_free(vk_owner(), c);
    return QINS_ENOMEM;
  }
  be->ops = &vk_backend_ops;
  be->impl = c;
  c->be = be;
  c->info.validation = want_validation();
  int rc = make_instance(c, c->info.validation, &c->inst, &c->messenger);
  if (rc) goto fail;
  VkPhysicalDevice devs[64];
  int n = usable_devices(c->inst, devs, 64);
  int chosen = -1;
  if (device_index >= 0) {
    if (device_index >= n) {
      rc = qins_error_set(QINS_EINVAL, "vulkan: no device vk:%d (%d Vulkan 1.2 device%s found)", device_index, n,
                          n == 1 ? "" : "s");
      goto fail;
    }
    chosen = device_index;
  }
  for (int i = 0; i < n; i++) {
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(devs[i], &p);
    int cpu = p.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    if (chosen == i && want_gpu && cpu) {
      rc = qins_error_set(QINS_EUNSUPPORTED, "vulkan: vk:%d (%s) is a CPU emulation, not a GPU", i, p.deviceName);
      goto fail;
    }
    if (chosen < 0 && !(want_gpu && cpu)) chosen = i;
  }
  if (chosen < 0) {
    rc = qins_error_set(QINS_EUNSUPPORTED, "vulkan: no %s among %d Vulkan 1.2 device%s", want_gpu ? "GPU (only CPU emulations such as lavapipe)" : "device", n, n == 1 ? "" : "s");
    goto fail;
  }
  c->phys = devs[chosen];
  if ((rc = create_device(c))) goto fail;
  snprintf(be->name, sizeof be->name, "vk:%d", chosen);
  be->qmatmul_path = qins_qmatmul_path_default();
  snprintf(be->device_name, sizeof be->device_name, "%s", c->info.device_name);
  QINS_DEBUG("vulkan: %s is %s (subgroup %u, max binding %u, 16-bit storage %d, push descriptors %d, timestamps %d)",
             be->name, be->device_name, c->info.subgroup_size, c->info.max_storage_range, c->info.storage16,
             c->info.push_descriptors, c->timestamps);
  *out = be;
  return 0;
fail:
  vk_destroy(be);
  return rc;
}

int qins_vk_get_info(qins_backend *be, qins_vk_info *out) {
  if (!be || be->ops != &vk_backend_ops) return qins_error_set(QINS_EINVAL, "backend %s is not a Vulkan backend", be ? be->name : "(null)");
  *out = vk_of(be)->info;
  return 0;
}

int qins_vk_validation_messages(qins_backend *be) {
  return be && be->ops == &vk_backend_ops ? vk_of(be)->validation_msgs : 0;
}

void qins_vk_counters(qins_backend *be, uint64_t *submits, uint64_t *commands) {
  int vk = be && be->ops == &vk_backend_ops;
  if (submits) *submits = vk ? vk_of(be)->n_submits : 0;
  if (commands) *commands = vk ? vk_of(be)->n_commands : 0;
}

void qins_vk_set_max_range(qins_backend *be, uint32_t max_range) {
  if (!be || be->ops != &vk_backend_ops) return;
  vk_ctx *c = vk_of(be);
  c->max_range = max_range ? max_range : c->info.max_storage_range;
}

void vk_destroy_backend(qins_backend *be) { vk_destroy(be); }
