/* Loader for llama2.c checkpoints (legacy "version 0" .bin): a 7-int header, then float32
 * weights stacked over layers, exposed per layer under Hugging Face Llama names (zero copy). */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/model/model_internal.h"

/* The header as written by llama2.c's export (int32, little-endian). */
typedef struct l2c_header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} l2c_header;

#define L2C_HEADER_BYTES 28
/* Sanity bound per header field: keeps every size product well inside int64/size_t. */
#define L2C_MAX_FIELD (1 << 20)

/* Walks the file in llama2.c's order, checking each tensor fits before recording it. */
typedef struct l2c_cursor {
  qins_model *m;
  const uint8_t *base;
  size_t size;
  size_t pos;
} l2c_cursor;

static int take(l2c_cursor *c, const char *name, int ndim, const int64_t *shape, int record) {
  size_t n = 4;
  for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
  if (c->pos + n > c->size) {
    char dims[64] = "";
    size_t k = 0;
    for (int i = 0; i < ndim && k < sizeof dims; i++)
      k += (size_t)snprintf(dims + k, sizeof dims - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    return qins_error_set(QINS_EINPUT,
                          "%s: truncated llama2.c checkpoint: tensor %s [%s] needs bytes %zu..%zu "
                          "but the file has %zu bytes",
                          c->m->path, name, dims, c->pos, c->pos + n, c->size);
  }
  int rc = 0;
  if (record)
    rc = qins_model_add_weight(c->m, name, QINS_DT_F32, ndim, shape, c->base + c->pos, n, c->m->path);
  c->pos += n;
  return rc;
}

/* One stacked llama2.c array [L, rows, cols] becomes L weights named by `fmt` (with %d = layer). */
static int take_layers(l2c_cursor *c, const char *fmt, int n_layers, int64_t rows, int64_t cols) {
  char name[QINS_NAME_MAX];
  for (int l = 0; l < n_layers; l++) {
    snprintf(name, sizeof name, fmt, l);
    int64_t shape[2] = {rows, cols};
    int rc = take(c, name, cols ? 2 : 1, shape, 1);
    if (rc) return rc;
  }
  return 0;
}

int qins_llama2c_load(qins_model *m, const char *path) {
  qins_model_impl *impl = m->impl;
  int rc = qins_map_open(path, &impl->map);
  if (rc) return rc;
  const uint8_t *base = impl->map.addr;
  size_t size = impl->map.size;
  if (size < L2C_HEADER_BYTES)
    return qins_error_set(QINS_EINPUT, "%s: not a llama2.c checkpoint: %zu bytes, shorter than the %d-byte header",
                          path, size, L2C_HEADER_BYTES);
  l2c_header h;
  memcpy(&h, base, sizeof h); /* little-endian host assumed (x86-64, aarch64) */
  /* llama2.c's newer export versions start with the magic "ak42"; only version 0 is headerless */
  if ((uint32_t)h.dim == 0x616b3432u)
    return qins_error_set(QINS_EINPUT,
                          "%s: llama2.c export version 1/2 (magic \"ak42\") is not supported; "
                          "export with --version 0 (legacy)", path);
  int shared = h.vocab_size > 0;
  int32_t vocab = shared ? h.vocab_size : -h.vocab_size;
  const struct { const char *name; int32_t v; } fields[] = {
      {"dim", h.dim}, {"hidden_dim", h.hidden_dim}, {"n_layers", h.n_layers}, {"n_heads", h.n_heads},
      {"n_kv_heads", h.n_kv_heads}, {"vocab_size", vocab}, {"seq_len", h.seq_len}};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (fields[i].v <= 0 || fields[i].v > L2C_MAX_FIELD)
      return qins_error_set(QINS_EINPUT, "%s: bad llama2.c header: %s = %d (must be 1..%d)", path,
                            fields[i].name, fields[i].v, L2C_MAX_FIELD);
  if (h.dim % h.n_heads != 0)
    return qins_error_set(QINS_EINPUT, "%s: bad llama2.c header: dim %d is not a multiple of n_heads %d", path,
                          h.dim, h.n_heads);
  if (h.n_heads % h.n_kv_heads != 0)
    return qins_error_set(QINS_EINPUT, "%s: bad llama2.c header: n_heads %d is not a multiple of n_kv_heads %d",
                          path, h.n_heads, h.n_kv_heads);
  int head_dim = h.dim / h.n_heads;
  if (head_dim % 2 != 0)
    return qins_error_set(QINS_EINPUT, "%s: bad llama2.c header: head size %d is odd (RoPE needs pairs)", path,
                          head_dim);

  qins_model_config *c = &m->cfg;
  c->arch = QINS_ARCH_LLAMA;
  c->dim = h.dim;
  c->ffn_dim = h.hidden_dim;
  c->n_layers = h.n_layers;
  c->n_heads = h.n_heads;
  c->n_kv_heads = h.n_kv_heads;
  c->head_dim = head_dim;
  c->vocab_size = vocab;
  c->max_seq_len = h.seq_len;
  c->norm_eps = 1e-5f;
  c->tied_embeddings = shared;
  c->bos_id = 1;
  c->eos_id = 2;
  c->rope_theta = 10000.0f;
  c->rope_dim = head_dim;
  c->rope_mode = QINS_ROPE_INTERLEAVED;
  c->rope_scaling = QINS_ROPE_SCALING_NONE;
  c->original_max_seq_len = h.seq_len;
  c->rope_attn_factor = 1.0f;
  c->act = QINS_ACT_SILU;
  c->norm_type = QINS_NORM_RMS;

  l2c_cursor cur = {m, base, size, L2C_HEADER_BYTES};
  int64_t dim = h.dim, hid = h.hidden_dim, kv_dim = (int64_t)h.n_kv_heads * head_dim, L = h.n_layers;
  int64_t emb[2] = {vocab, dim};
  if ((rc = take(&cur, "model.embed_tokens.weight", 2, emb, 1))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.input_layernorm.weight", (int)L, dim, 0))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.self_attn.q_proj.weight", (int)L, dim, dim))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.self_attn.k_proj.weight", (int)L, kv_dim, dim))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.self_attn.v_proj.weight", (int)L, kv_dim, dim))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.self_attn.o_proj.weight", (int)L, dim, dim))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.post_attention_layernorm.weight", (int)L, dim, 0))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.mlp.gate_proj.weight", (int)L, hid, dim))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.mlp.down_proj.weight", (int)L, dim, hid))) return rc;
  if ((rc = take_layers(&cur, "model.layers.%d.mlp.up_proj.weight", (int)L, hid, dim))) return rc;
  int64_t one[1] = {dim};
  if ((rc = take(&cur, "model.norm.weight", 1, one, 1))) return rc;
  /* freq_cis_real / freq_cis_imag: precomputed RoPE tables the engine recomputes, skipped */
  int64_t freq[2] = {h.seq_len, head_dim / 2};
  if ((rc = take(&cur, "freq_cis_real", 2, freq, 0))) return rc;
  if ((rc = take(&cur, "freq_cis_imag", 2, freq, 0))) return rc;
  if (!shared && (rc = take(&cur, "lm_head.weight", 2, emb, 1))) return rc;
  if (cur.pos != size)
    return qins_error_set(QINS_EINPUT,
                          "%s: %zu trailing bytes after the last tensor (%s) of a llama2.c checkpoint "
                          "(header: dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d%s, seq %d)",
                          path, size - cur.pos, shared ? "freq_cis_imag" : "lm_head.weight", h.dim,
                          h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, vocab,
                          shared ? " shared" : " unshared", h.seq_len);
  return 0;
}
