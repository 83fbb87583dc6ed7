/* KV-cache helpers for QINS: appending tokens' V rows to an f32 or QINS-int8 V cache. */
#ifndef QINS_KV_H
#define QINS_KV_H

#include <stdint.h>

#include "core/backend.h"

/* Write v (f32 [M,Hkv,D]: M tokens' values) at positions pos..pos+M-1 of v_cache [T,Hkv,D].
 * f32 cache: a copy. qins8 cache (scale: alpha f32 [T*Hkv]): for every (token, head) row of D
 * values, alpha is chosen by `spec` (qins_op_calibrate; `mse` is the QINS.md default, `absmax`
 * the cheap alternative) and written to scale[(pos+m)*Hkv + h], then the row is encoded
 * (qins_op_quantize). Built from views and ops, so it runs on any backend that has them.
 * Returns 0 or QINS_EINVAL (shapes, dtypes, positions outside the cache). */
int qins_kv_append_v(qins_backend *be, const qins_tensor *v, qins_tensor *v_cache, int64_t pos, qins_alpha_spec spec);

#endif
