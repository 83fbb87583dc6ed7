/* `qins convert`: a model plus a coverage policy into a Hugging Face folder whose safetensors holds
 * QINS codes (U8) and scales (F32) with metadata naming format, alpha mode and coverage
 * (docs/convert.md). The runtime loads it like any model. */
#ifndef QINS_CONVERT_H
#define QINS_CONVERT_H

#include "core/backend.h"
#include "core/llm/llm.h"
#include "core/llm/policy.h"
#include "core/model/model.h"

/* Write out_dir/model.safetensors and out_dir/config.json (copied from an HF source; written for
 * a llama2.c checkpoint, whose q/k rows are permuted to Hugging Face's rotate-half order), and the
 * tokenizer beside the model when there is one. Paths the policy marks f32 or fallback keep their
 * float weights; fused weights (Phi-3 qkv_proj/gate_up_proj, GPT-2 c_attn) stay stored in float in
 * full beside their coded row segments. */
int qins_convert(const qins_model *m, const qins_policy *pol, const char *out_dir);

/* For a runtime created from a converted model: put the stored codes and scales (not the f32
 * weights the loader decoded from them) into the matmuls, and set up the V caches the metadata
 * names, so the runtime computes exactly as one with the policy applied (fused kernels). */
int qins_convert_apply(qins_llm *llm, qins_backend *be, const qins_model *m, qins_policy_state **out);

#endif
