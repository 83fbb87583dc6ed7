/* Placeholder until the Vulkan backend lands: reports that no device is usable. */
#include "core/backend.h"
#include "core/error.h"

int qins_vk_device_count(void) { return 0; }

int qins_vk_backend_create(int device_index, int want_gpu, qins_backend **out) {
  *out = NULL;
  return qins_error_set(QINS_EUNSUPPORTED, "Vulkan backend not built yet");
}
