/* Transformer runtime: places a loaded model's weights on a backend and runs its forward pass
 * (Llama, Phi-3, GPT-2) with a KV cache: batched prefill, incremental decode, logits, reset. */
#ifndef QINS_LLM_H
#define QINS_LLM_H

#include <stdint.h>

#include "core/backend.h"
#include "core/model/model.h"

typedef struct qins_llm qins_llm;

typedef struct qins_llm_options {
  int max_seq;    /* KV cache length; <= 0: the model's max_seq_len */
  int max_batch;  /* rows per forward chunk (longer prefills run in chunks); <= 0: min(max_seq, 128) */
} qins_llm_options;

/* Place `model` (which must outlive the runtime: cpu weights alias its mapping) on `be`.
 * Unsupported architectures or missing/misshaped weights give QINS_EINPUT naming the tensor. */
int qins_llm_create(const qins_model *model, qins_backend *be, const qins_llm_options *opt, qins_llm **out);
void qins_llm_destroy(qins_llm *llm);

/* Forget the cache: the next forward starts at position 0. */
void qins_llm_reset(qins_llm *llm);
/* Tokens held in the cache (the position the next token gets). */
int qins_llm_pos(const qins_llm *llm);
int qins_llm_vocab(const qins_llm *llm);
int qins_llm_max_seq(const qins_llm *llm);
const qins_model_config *qins_llm_config(const qins_llm *llm);
/* Bytes of weights one token's forward reads (every matrix once): the bandwidth-bound numerator. */
int64_t qins_llm_weight_bytes(const qins_llm *llm);

/* Append ids[0..n) at positions pos..pos+n-1 (pos = qins_llm_pos) in one batched forward (or in
 * chunks of max_batch rows). logits (may be NULL) receives [n, vocab] when all_logits, else the
 * last position's [vocab]. argmax (may be NULL) receives the id of the largest logit of the last
 * position, computed on the backend (ties: lowest id). Errors leave the cache length unchanged. */
int qins_llm_forward(qins_llm *llm, const int32_t *ids, int n, int all_logits, float *logits, int32_t *argmax);

/* The per-layer matrices the forward multiplies by, for callers that re-encode weights (QINS
 * coverage, QINS.md section 5): a caller may replace the tensor (dtype, buffer, scale) with one
 * of the same [N,K] shape the matmul op accepts; the runtime does not free replacements.
 * Fused checkpoints are already split: WQ/WK/WV are the row blocks of Phi-3 qkv_proj or GPT-2
 * c_attn, WGATE/WUP those of gate_up_proj. NULL when the layer has no such matrix (GPT-2 gate). */
typedef enum qins_llm_mat {
  QINS_LLM_WQ, QINS_LLM_WK, QINS_LLM_WV, QINS_LLM_WO, QINS_LLM_WGATE, QINS_LLM_WUP, QINS_LLM_WDOWN,
  QINS_LLM_MAT_COUNT
} qins_llm_mat;
qins_tensor *qins_llm_matrix(qins_llm *llm, int layer, qins_llm_mat which);
/* The bias added after that matrix (GPT-2, Phi-3 fused splits follow the rows), NULL if none. */
const qins_tensor *qins_llm_bias(const qins_llm *llm, int layer, qins_llm_mat which);
/* A layer's norm before attention (ffn 0) or before the MLP (ffn 1): weight, and bias (LayerNorm)
 * or NULL; eps and kind in qins_llm_config. Returns 0 or QINS_EINVAL for a bad layer. */
int qins_llm_norm(const qins_llm *llm, int layer, int ffn, const qins_tensor **weight, const qins_tensor **bias);

/* Activation tap, for calibration on real activations (linearised transport, QINS.md section 4):
 * during every forward (qins_llm_forward and qins_llm_forward_range) fn is called with the input
 * rows of each QINS-eligible matmul just before it runs: which = WV (the normed hidden rows),
 * WO (the attention output), WGATE and WUP (the MLP's normed rows, once each), WDOWN (the
 * activated MLP rows, SiLU(gate)*up or GELU(c_fc)); x is [n, K] on the backend (read it with
 * qins_tensor_read or qins_buf_read), pos0 the position of its first row. A non-zero return
 * stops the forward with that code. fn NULL removes the tap. */
typedef int (*qins_llm_tap_fn)(void *user, int layer, qins_llm_mat which, const qins_tensor *x, int pos0);
void qins_llm_set_tap(qins_llm *llm, qins_llm_tap_fn fn, void *user);

/* QINS V cache (QINS.md sections 4-5, plan step B1): layer's values are stored as qins8 codes
 * with one alpha per token and KV head chosen by `spec` as they are appended, and attention reads
 * them through the decode table (no f32 V buffer). format QINS_DT_F32 switches back. Applies to
 * qins_llm_forward (set before the first forward or after a reset) and to every pipeline cache
 * (qins_llm_kv) created afterwards: a qins_llm_kv keeps the V format it was created with. */
int qins_llm_set_vcache(qins_llm *llm, int layer, qins_dtype format, qins_alpha_spec spec);
/* Bytes the K and V caches hold (f32 keys; f32 or qins8 codes + alphas for values). */
int64_t qins_llm_cache_bytes(const qins_llm *llm);

/* Longrope (Phi-3) only: which factors the cache was built with (0 short, 1 long, -1 n/a), and how
 * many times the cache was recomputed because a sequence crossed original_max_position_embeddings. */
int qins_llm_rope_long(const qins_llm *llm);
int qins_llm_rope_recomputes(const qins_llm *llm);

/* Pipeline pieces (stages/: embed, qins_block, head run parts of one forward in different
 * workers). A cache for layers [layer0, layer1) of one sequence; many per runtime (one per
 * request in flight), sharing its weights. */
typedef struct qins_llm_kv qins_llm_kv;
int qins_llm_kv_create(qins_llm *llm, int layer0, int layer1, qins_llm_kv **out);
void qins_llm_kv_destroy(qins_llm_kv *kv);
/* Bytes the cache holds on the backend (K + V); *v_bytes (may be NULL): the V part (f32, or
 * qins8 codes + one f32 alpha per token and KV head). */
int64_t qins_llm_kv_bytes(const qins_llm_kv *kv, int64_t *v_bytes);
/* Rows at positions pos0..pos0+n-1: input `ids` (embedded here) or host hidden rows `x`
 * [n, dim]; then layers [layer0, layer1) with keys/values in `kv` (may be NULL for an empty
 * range); then either the head on the last row (logits [vocab] and/or argmax, when either is
 * non-NULL) or, with no head, the rows back into `x`. Does not touch qins_llm_pos. Longrope:
 * the factors follow pos0+n; a range crossing original_max after position 0 is unsupported. */
int qins_llm_forward_range(qins_llm *llm, qins_llm_kv *kv, const int32_t *ids, float *x, int n, int pos0, int layer0,
                           int layer1, float *logits, int32_t *argmax);

#endif
