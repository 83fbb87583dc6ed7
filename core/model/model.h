/* A loaded model: its architecture config and its weights, memory-mapped from disk.
 * Loaders (llama2.c .bin, Hugging Face folders, bare .safetensors files) all produce this, with
 * weights under Hugging Face names, so the architecture code has one naming to follow. */
#ifndef QINS_MODEL_H
#define QINS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/tensor.h"

typedef enum qins_arch {
  QINS_ARCH_NONE = 0, /* tensors only (a bare .safetensors file): no config */
  QINS_ARCH_LLAMA,
  QINS_ARCH_PHI3,
  QINS_ARCH_GPT2,
} qins_arch;

typedef enum qins_rope_scaling {
  QINS_ROPE_SCALING_NONE = 0,
  QINS_ROPE_SCALING_LONGROPE, /* Phi-3: short/long per-dimension factors + attention factor */
} qins_rope_scaling;

/* Feed-forward activation (config.json hidden_act / activation_function). */
typedef enum qins_act {
  QINS_ACT_SILU = 0,   /* SwiGLU gate (Llama, Phi-3, llama2.c) */
  QINS_ACT_GELU_TANH,  /* GPT-2 "gelu_new" / "gelu_pytorch_tanh" */
  QINS_ACT_GELU,       /* exact erf GELU ("gelu") */
  QINS_ACT_RELU,
} qins_act;

typedef enum qins_norm_type {
  QINS_NORM_RMS = 0,   /* RMSNorm, weight only (Llama, Phi-3) */
  QINS_NORM_LAYER,     /* LayerNorm, weight + bias (GPT-2) */
} qins_norm_type;

typedef struct qins_model_config {
  qins_arch arch;
  int dim;            /* hidden size */
  int n_layers;
  int n_heads;
  int n_kv_heads;
  int head_dim;
  int ffn_dim;        /* intermediate size */
  int vocab_size;
  int max_seq_len;    /* max_position_embeddings (llama2.c: seq_len) */
  float norm_eps;
  int tied_embeddings; /* lm_head shares the token embedding */
  int bos_id, eos_id;  /* -1 when unknown */
  /* rotary embedding (Llama, Phi-3) */
  float rope_theta;
  int rope_dim;       /* rotated dimensions per head (partial_rotary_factor * head_dim) */
  qins_rope_mode rope_mode;
  qins_rope_scaling rope_scaling;
  int original_max_seq_len;  /* longrope: original_max_position_embeddings */
  float *rope_short_factor;  /* [rope_dim/2] or NULL */
  float *rope_long_factor;   /* [rope_dim/2] or NULL */
  float rope_attn_factor;    /* as transformers computes it (1 when no scaling) */
  /* ---- added by the loaders (additive) ---- */
  qins_act act;              /* feed-forward activation */
  qins_norm_type norm_type;
  int attn_bias;             /* q/k/v/o projections carry biases (GPT-2; Llama attention_bias) */
  int mlp_bias;              /* feed-forward projections carry biases (GPT-2; Llama mlp_bias) */
  int learned_pos;           /* learned position embeddings (GPT-2 transformer.wpe) instead of RoPE */
  int pad_id;                /* -1 when unknown */
  int rope_n_factors;        /* length of rope_short_factor / rope_long_factor (rope_dim/2), 0 if none */
} qins_model_config;

/* One weight as stored: bytes in the mapped file (little-endian), shape as on disk.
 * `data` is aligned to the dtype's element size (a misaligned tensor in a safetensors file is
 * copied once into an aligned buffer; everything else is zero copy).
 *
 * Layout notes the forward code relies on (nothing is transposed by the loader):
 *  - Llama / Phi-3 / llama2.c linear weights are [out, in] (torch nn.Linear): y = x W^T.
 *  - Phi-3 self_attn.qkv_proj.weight is [(H + 2*Hkv) * head_dim, dim]: rows q, then k, then v;
 *    mlp.gate_up_proj.weight is [2*ffn, dim]: rows gate, then up.
 *  - GPT-2 Conv1D weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are stored
 *    TRANSPOSED, [in, out]: y = x W + b. c_attn's output columns are q, k, v (dim each).
 *  - llama2.c weights are exposed under the Llama names and are [out, in] like HF Llama, but
 *    its q/k rows are in llama2.c's order: RoPE pairs are adjacent (QINS_ROPE_INTERLEAVED). */
typedef struct qins_weight {
  char name[QINS_NAME_MAX]; /* Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight" */
  qins_dtype dtype;
  int ndim;
  int64_t shape[QINS_MAX_DIMS];
  const void *data;
  size_t nbytes;
  const char *file;         /* the file it came from, for messages */
} qins_weight;

typedef struct qins_model {
  char path[1024];          /* as given to qins_model_open */
  char format[32];          /* "llama2c", "hf", "safetensors" */
  qins_model_config cfg;
  int n_weights;
  qins_weight *weights;
  void *impl;               /* loader-private: mappings, parsed JSON */
} qins_model;

/* Open a model: a llama2.c checkpoint (.bin), a Hugging Face folder (config.json +
 * model.safetensors or model.safetensors.index.json), or a bare .safetensors file.
 * Defects give QINS_EINPUT with the file and tensor named. */
int qins_model_open(const char *path, qins_model **out);
void qins_model_close(qins_model *m);
/* Weight by Hugging Face name, NULL when absent (no error set). */
const qins_weight *qins_model_find(const qins_model *m, const char *name);
/* "llama", "phi3", "gpt2", "none". */
const char *qins_arch_name(qins_arch arch);
const char *qins_act_name(qins_act act);
/* Total parameters (elements) and bytes over all weights. */
int64_t qins_model_param_count(const qins_model *m);
size_t qins_model_total_bytes(const qins_model *m);

#endif
