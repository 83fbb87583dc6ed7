/* QINS coverage policy (QINS.md section 5): which storage format each layer's eligible paths
 * (v_proj, o_proj, MLP up/gate/down, V cache, activations at rest) use, with an alpha mode and an
 * FP fallback per layer and path; parsed from pipeline YAML and applied to a runtime's weights. */
#ifndef QINS_POLICY_H
#define QINS_POLICY_H

#include <stdint.h>

#include "core/backend.h"
#include "core/config.h"
#include "core/llm/llm.h"

typedef enum qins_path {
  QINS_PATH_V = 0, /* v_proj (Phi-3: the V rows of qkv_proj; GPT-2: the v part of c_attn) */
  QINS_PATH_O,     /* o_proj (GPT-2 attn.c_proj) */
  QINS_PATH_UP,    /* mlp up_proj (Phi-3: the up rows of gate_up_proj; GPT-2 mlp.c_fc) */
  QINS_PATH_GATE,  /* mlp gate_proj (Phi-3: the gate rows of gate_up_proj; GPT-2 has none) */
  QINS_PATH_DOWN,  /* mlp down_proj (GPT-2 mlp.c_proj) */
  QINS_PATH_VCACHE,/* the V cache */
  QINS_PATH_ACT,   /* activations at rest between stages (split pipelines) */
  QINS_PATH_COUNT
} qins_path;

/* YAML key of a path: "v_proj", "o_proj", "mlp_up", "mlp_gate", "mlp_down", "v_cache", "activations". */
const char *qins_path_name(qins_path p);

typedef struct qins_path_policy {
  qins_dtype format;     /* f32 = untouched */
  qins_alpha_spec alpha; /* QINS formats: how alpha is chosen (default mse) */
  int fallback;          /* 1: keep this path in FP whatever the format says */
} qins_path_policy;

#define QINS_POLICY_MAX_LAYERS 256

typedef struct qins_policy {
  int n_layers;
  qins_path_policy p[QINS_POLICY_MAX_LAYERS][QINS_PATH_COUNT];
} qins_policy;

/* Every layer and path f32 (the FP branch). */
void qins_policy_init_fp(qins_policy *pol, int n_layers);
/* One format and alpha for every weight path (and the V cache when with_vcache). */
void qins_policy_init_uniform(qins_policy *pol, int n_layers, qins_dtype format, qins_alpha_spec alpha,
                              int with_vcache);

/* Parse a policy map (the `policy:` node of a pipeline YAML, docs/gates.md):
 *   format: qins8            # default for every path listed in `paths` (or all weight paths)
 *   alpha: mse
 *   paths: [v_proj, o_proj, mlp_up, mlp_gate, mlp_down]     (or a map path -> format | {format, alpha})
 *   v_cache: qins8           # shorthand for paths.v_cache
 *   layers:                  # per-layer overrides, applied in order
 *     - {layers: "0-1", mlp_down: {fallback: true}}
 * Float-only paths (q_proj, k_proj, norms, embeddings, lm_head) are rejected with QINS.md section 5
 * named. Errors: QINS_EINPUT with file:line:col of the node. */
int qins_policy_parse(const qins_cfg *node, int n_layers, qins_policy *pol);

/* Re-encode the runtime's weights as the policy says (fused kernels decode them in the matmul;
 * unfused: decode once to f32 at load, numerically the same weights) and set up QINS V caches.
 * Quantized buffers are owned by the returned state; free it after the runtime. */
typedef struct qins_policy_state qins_policy_state;
int qins_policy_apply(qins_llm *llm, qins_backend *be, const qins_policy *pol, int unfused, qins_policy_state **out);
void qins_policy_state_free(qins_policy_state *st);
/* Bytes of the weights the policy touched, as stored (codes + scales) and as they were (f32/f16). */
int64_t qins_policy_state_bytes(const qins_policy_state *st, int64_t *orig_bytes);

/* For loaders of already-coded weights (qins convert output): an empty state, and replacing one
 * runtime matrix by codes (rows x cols in `format`) and their scales, uploaded into the state. */
int qins_policy_state_new(qins_policy_state **out);
int qins_policy_state_set_matrix(qins_policy_state *st, qins_backend *be, qins_tensor *t, qins_dtype format,
                                 const void *codes, const float *scales);

/* "v_proj,o_proj:qins8(mse); v_cache:qins8" style one-line summary, for reports. */
void qins_policy_describe(const qins_policy *pol, char *buf, size_t n);

#endif
