/* Transformer forward pass over the op table: weight placement, KV cache, prefill/decode, longrope policy. */
#include "core/llm/llm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/qins_kv.h"

#define MAX_OWNED_BUFS 4096

typedef struct llm_layer {
  qins_tensor attn_norm, attn_norm_b, ffn_norm, ffn_norm_b;     /* *_b: LayerNorm bias (GPT-2) */
  qins_tensor wq, wk, wv, wo, bq, bk, bv, bo;                    /* b*: optional biases */
  qins_tensor wgate, wup, wdown, bgate, bup, bdown;              /* GPT-2: up = c_fc, down = c_proj */
  qins_buf *kc_buf, *vc_buf;                                     /* [max_seq, n_kv, head_dim] f32 */
  /* QINS V cache (qins_llm_set_vcache): vfmt says the format of this layer's V caches, the
   * runtime's own and every qins_llm_kv created afterwards; vq [max_seq, n_kv, head_dim] qins8
   * with vq_alpha [max_seq*n_kv] is the runtime's own, allocated at its first forward */
  qins_dtype vfmt;
  qins_tensor vq, vq_alpha;
  qins_alpha_spec vq_spec;
} llm_layer;

struct qins_llm {
  const qins_model *model;
  qins_backend *be;
  qins_model_config cfg;
  int max_seq, max_batch;
  int pos;
  int32_t *hist;   /* ids at positions 0..pos-1: a longrope switch recomputes the cache from them */
  int is_gpt2, has_rope;
  int rope_long, recomputes;
  int64_t weight_bytes;
  qins_mem_owner *owner;

  qins_tensor tok_emb, pos_emb, out_norm, out_norm_b, lm_head;
  llm_layer *layers;

  /* activations, each its own buffer, sized for max_batch rows */
  qins_buf *x, *xb, *xb2, *q, *k, *att, *h1, *h2, *logits, *ids, *posb, *amax;
  qins_buf *inv_freq[2]; /* short (or only) and long factors */
  qins_buf *vtmp;        /* new V rows before they are encoded into a QINS V cache */

  qins_buf *owned[MAX_OWNED_BUFS];
  int n_owned;

  qins_llm_tap_fn tap; /* qins_llm_set_tap: inputs of the QINS-eligible matmuls */
  void *tap_user;
};

/* ---------------------------------------------------------------- placement helpers */

static int own(qins_llm *l, qins_buf *b) {
  if (l->n_owned >= MAX_OWNED_BUFS) {
    qins_buf_free(b);
    return qins_error_set(QINS_EINTERNAL, "llm: more than %d weight buffers", MAX_OWNED_BUFS);
  }
  l->owned[l->n_owned++] = b;
  return 0;
}

static qins_tensor view(qins_buf *buf, size_t offset, const char *name, qins_dtype dt, int ndim, int64_t d0,
                        int64_t d1, int64_t d2) {
  qins_tensor t;
  memset(&t, 0, sizeof t);
  snprintf(t.name, sizeof t.name, "%s", name);
  t.dtype = dt;
  t.ndim = ndim;
  t.shape[0] = d0;
  t.shape[1] = d1;
  t.shape[2] = d2;
  t.buf = buf;
  t.offset = offset;
  return t;
}

static const qins_weight *find(const qins_model *m, const char *name) {
  for (int i = 0; i < m->n_weights; i++)
    if (strcmp(m->weights[i].name, name) == 0) return &m->weights[i];
  return NULL;
}

/* GPT-2 checkpoints name tensors with or without the "transformer." prefix. */
static const qins_weight *findf(const qins_llm *l, int required, const char *fmt, int layer, int *rc) {
  char name[QINS_NAME_MAX], alt[QINS_NAME_MAX + 16];
  snprintf(name, sizeof name, fmt, layer);
  const qins_weight *w = find(l->model, name);
  if (!w && l->is_gpt2) {
    if (strncmp(name, "transformer.", 12) == 0) {
      w = find(l->model, name + 12);
    } else {
      snprintf(alt, sizeof alt, "transformer.%s", name);
      w = find(l->model, alt);
    }
  }
  if (!w && required)
    *rc = qins_error_set(QINS_EINPUT, "%s: weight %s missing for %s", l->model->path, name,
                         qins_arch_name(l->cfg.arch));
  return w;
}

static int is_float(qins_dtype dt) { return dt == QINS_DT_F32 || dt == QINS_DT_F16 || dt == QINS_DT_BF16; }

static int check_shape(const qins_llm *l, const qins_weight *w, int ndim, int64_t d0, int64_t d1) {
  int ok = w->ndim == ndim && w->shape[0] == d0 && (ndim < 2 || w->shape[1] == d1) && is_float(w->dtype);
  if (ndim == 1 && w->ndim == 2 && w->shape[0] == 1 && w->shape[1] == d0) ok = is_float(w->dtype);
  if (ok) return 0;
  char shape[96] = "";
  for (int i = 0; i < w->ndim; i++)
    snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", i ? "," : "", (long long)w->shape[i]);
  if (ndim == 1)
    return qins_error_set(QINS_EINPUT, "%s: weight %s is %s[%s], expected a float vector [%lld]", l->model->path,
                          w->name, qins_dtype_name(w->dtype), shape, (long long)d0);
  return qins_error_set(QINS_EINPUT, "%s: weight %s is %s[%s], expected float [%lld,%lld]", l->model->path, w->name,
                        qins_dtype_name(w->dtype), shape, (long long)d0, (long long)d1);
}

static float elem_f32(const void *base, qins_dtype dt, int64_t i) {
  switch (dt) {
  case QINS_DT_F16: return qins_f16_to_f32(((const uint16_t *)base)[i]);
  case QINS_DT_BF16: return qins_bf16_to_f32(((const uint16_t *)base)[i]);
  default: return ((const float *)base)[i];
  }
}

/* Upload a host copy into a fresh backend buffer. */
static int upload(qins_llm *l, const void *host, size_t bytes, qins_buf **out) {
  int rc = qins_buf_alloc(l->be, bytes, out);
  if (rc) return rc;
  rc = qins_buf_write(*out, 0, host, bytes);
  if (rc) {
    qins_buf_free(*out);
    return rc;
  }
  return own(l, *out);
}

/* Rows row0..row0+n of a [N,K] matrix (or of the transpose of a Conv1D [K,N] one), as its own
 * buffer: fused projections are split so each part can later take its own storage format. */
static int place_matrix(qins_llm *l, const qins_weight *w, int64_t row0, int64_t n, int transposed, const char *name,
                        qins_tensor *out) {
  size_t es = qins_dtype_size(w->dtype);
  int64_t k = transposed ? w->shape[0] : w->shape[1];
  size_t bytes = (size_t)n * (size_t)k * es;
  qins_buf *buf;
  int rc;
  if (!transposed) {
    rc = qins_buf_wrap(l->be, (char *)w->data + (size_t)row0 * (size_t)k * es, bytes, &buf);
    if (!rc) rc = own(l, buf);
  } else {
    /* Conv1D stores [in, out]: matmul wants [out, in], so transpose once here. */
    int64_t ncols = w->shape[1];
    char *tmp = qins_mem_alloc(l->owner, bytes ? bytes : 1);
    if (!tmp) return QINS_ENOMEM;
    for (int64_t r = 0; r < n; r++)
      for (int64_t i = 0; i < k; i++)
        memcpy(tmp + ((size_t)r * (size_t)k + (size_t)i) * es,
               (const char *)w->data + ((size_t)i * (size_t)ncols + (size_t)(row0 + r)) * es, es);
    rc = upload(l, tmp, bytes, &buf);
    qins_mem_free(l->owner, tmp);
  }
  if (rc) return qins_error_wrap(rc, "placing %s: ", w->name);
  *out = view(buf, 0, name, w->dtype, 2, n, k, 0);
  l->weight_bytes += (int64_t)bytes;
  return 0;
}

/* Elements off..off+n of a vector as f32 (norm weights and biases must be f32 for the ops). */
static int place_vector(qins_llm *l, const qins_weight *w, int64_t off, int64_t n, const char *name,
                        qins_tensor *out) {
  qins_buf *buf;
  int rc;
  size_t bytes = (size_t)n * sizeof(float);
  if (w->dtype == QINS_DT_F32) {
    rc = qins_buf_wrap(l->be, (char *)w->data + (size_t)off * sizeof(float), bytes, &buf);
    if (!rc) rc = own(l, buf);
  } else {
    float *tmp = qins_mem_alloc(l->owner, bytes ? bytes : 1);
    if (!tmp) return QINS_ENOMEM;
    for (int64_t i = 0; i < n; i++) tmp[i] = elem_f32(w->data, w->dtype, off + i);
    rc = upload(l, tmp, bytes, &buf);
    qins_mem_free(l->owner, tmp);
  }
  if (rc) return qins_error_wrap(rc, "placing %s: ", w->name);
  *out = view(buf, 0, name, QINS_DT_F32, 1, n, 0, 0);
  l->weight_bytes += (int64_t)bytes;
  return 0;
}

#define TRY(expr)                  \
  do {                             \
    int rc_ = (expr);              \
    if (rc_) return rc_;           \
  } while (0)

/* Look up a weight by printf-style name, check its shape, and place it (all in one step). */
static int get_mat(qins_llm *l, int layer, const char *fmt, int64_t d0, int64_t d1, qins_tensor *out) {
  int rc = 0;
  const qins_weight *w = findf(l, 1, fmt, layer, &rc);
  if (!w) return rc;
  TRY(check_shape(l, w, 2, d0, d1));
  return place_matrix(l, w, 0, d0, 0, w->name, out);
}

static int get_vec(qins_llm *l, int layer, const char *fmt, int64_t n, int required, qins_tensor *out) {
  int rc = 0;
  const qins_weight *w = findf(l, required, fmt, layer, &rc);
  if (!w) return rc;
  TRY(check_shape(l, w, 1, n, 0));
  return place_vector(l, w, 0, n, w->name, out);
}

static int place_llama_layer(qins_llm *l, int i, llm_layer *L) {
  const qins_model_config *c = &l->cfg;
  int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
  TRY(get_vec(l, i, "model.layers.%d.input_layernorm.weight", c->dim, 1, &L->attn_norm));
  TRY(get_vec(l, i, "model.layers.%d.post_attention_layernorm.weight", c->dim, 1, &L->ffn_norm));
  TRY(get_mat(l, i, "model.layers.%d.self_attn.o_proj.weight", c->dim, qd, &L->wo));
  TRY(get_mat(l, i, "model.layers.%d.mlp.down_proj.weight", c->dim, c->ffn_dim, &L->wdown));
  if (c->arch == QINS_ARCH_PHI3) {
    int rc = 0;
    const qins_weight *w = findf(l, 1, "model.layers.%d.self_attn.qkv_proj.weight", i, &rc);
    if (!w) return rc;
    TRY(check_shape(l, w, 2, qd + 2 * kvd, c->dim));
    TRY(place_matrix(l, w, 0, qd, 0, "q rows of qkv_proj", &L->wq));
    TRY(place_matrix(l, w, qd, kvd, 0, "k rows of qkv_proj", &L->wk));
    TRY(place_matrix(l, w, qd + kvd, kvd, 0, "v rows of qkv_proj", &L->wv));
    w = findf(l, 1, "model.layers.%d.mlp.gate_up_proj.weight", i, &rc);
    if (!w) return rc;
    TRY(check_shape(l, w, 2, 2 * (int64_t)c->ffn_dim, c->dim));
    TRY(place_matrix(l, w, 0, c->ffn_dim, 0, "gate rows of gate_up_proj", &L->wgate));
    TRY(place_matrix(l, w, c->ffn_dim, c->ffn_dim, 0, "up rows of gate_up_proj", &L->wup));
  } else {
    TRY(get_mat(l, i, "model.layers.%d.self_attn.q_proj.weight", qd, c->dim, &L->wq));
    TRY(get_mat(l, i, "model.layers.%d.self_attn.k_proj.weight", kvd, c->dim, &L->wk));
    TRY(get_mat(l, i, "model.layers.%d.self_attn.v_proj.weight", kvd, c->dim, &L->wv));
    TRY(get_mat(l, i, "model.layers.%d.mlp.gate_proj.weight", c->ffn_dim, c->dim, &L->wgate));
    TRY(get_mat(l, i, "model.layers.%d.mlp.up_proj.weight", c->ffn_dim, c->dim, &L->wup));
    /* attention_bias models (e.g. Qwen-style Llamas) carry q/k/v biases */
    TRY(get_vec(l, i, "model.layers.%d.self_attn.q_proj.bias", qd, 0, &L->bq));
    TRY(get_vec(l, i, "model.layers.%d.self_attn.k_proj.bias", kvd, 0, &L->bk));
    TRY(get_vec(l, i, "model.layers.%d.self_attn.v_proj.bias", kvd, 0, &L->bv));
    /* mlp_bias Llamas */
    TRY(get_vec(l, i, "model.layers.%d.mlp.gate_proj.bias", c->ffn_dim, 0, &L->bgate));
    TRY(get_vec(l, i, "model.layers.%d.mlp.up_proj.bias", c->ffn_dim, 0, &L->bup));
    TRY(get_vec(l, i, "model.layers.%d.mlp.down_proj.bias", c->dim, 0, &L->bdown));
  }
  TRY(get_vec(l, i, "model.layers.%d.self_attn.o_proj.bias", c->dim, 0, &L->bo));
  return 0;
}

static int place_gpt2_layer(qins_llm *l, int i, llm_layer *L) {
  const qins_model_config *c = &l->cfg;
  int64_t d = c->dim, f = c->ffn_dim;
  int rc = 0;
  TRY(get_vec(l, i, "transformer.h.%d.ln_1.weight", d, 1, &L->attn_norm));
  TRY(get_vec(l, i, "transformer.h.%d.ln_1.bias", d, 1, &L->attn_norm_b));
  TRY(get_vec(l, i, "transformer.h.%d.ln_2.weight", d, 1, &L->ffn_norm));
  TRY(get_vec(l, i, "transformer.h.%d.ln_2.bias", d, 1, &L->ffn_norm_b));
  /* Conv1D weights are [in, out]: place_matrix transposes; c_attn's out columns are q|k|v. */
  const qins_weight *w = findf(l, 1, "transformer.h.%d.attn.c_attn.weight", i, &rc);
  if (!w) return rc;
  TRY(check_shape(l, w, 2, d, 3 * d));
  TRY(place_matrix(l, w, 0, d, 1, "q part of c_attn", &L->wq));
  TRY(place_matrix(l, w, d, d, 1, "k part of c_attn", &L->wk));
  TRY(place_matrix(l, w, 2 * d, d, 1, "v part of c_attn", &L->wv));
  w = findf(l, 1, "transformer.h.%d.attn.c_attn.bias", i, &rc);
  if (!w) return rc;
  TRY(check_shape(l, w, 1, 3 * d, 0));
  TRY(place_vector(l, w, 0, d, "q bias of c_attn", &L->bq));
  TRY(place_vector(l, w, d, d, "k bias of c_attn", &L->bk));
  TRY(place_vector(l, w, 2 * d, d, "v bias of c_attn", &L->bv));
  w = findf(l, 1, "transformer.h.%d.attn.c_proj.weight", i, &rc);
  if (!w) return rc;
  TRY(check_shape(l, w, 2, d, d));
  TRY(place_matrix(l, w, 0, d, 1, w->name, &L->wo));
  TRY(get_vec(l, i, "transformer.h.%d.attn.c_proj.bias", d, 1, &L->bo));
  w = findf(l, 1, "transformer.h.%d.mlp.c_fc.weight", i, &rc);
  if (!w) return rc;
  TRY(check_shape(l, w, 2, d, f));
  TRY(place_matrix(l, w, 0, f, 1, w->name, &L->wup));
  TRY(get_vec(l, i, "transformer.h.%d.mlp.c_fc.bias", f, 1, &L->bup));
  w = findf(l, 1, "transformer.h.%d.mlp.c_proj.weight", i, &rc);
  if (!w) return rc;
  TRY(check_shape(l, w, 2, f, d));
  TRY(place_matrix(l, w, 0, d, 1, w->name, &L->wdown));
  TRY(get_vec(l, i, "transformer.h.%d.mlp.c_proj.bias", d, 1, &L->bdown));
  return 0;
}

/* inv_freq_i = 1 / (factor_i * theta^(2i/rope_dim)), in f32 like the references compute it. */
static int make_inv_freq(qins_llm *l, const float *factors, qins_buf **out) {
  int half = l->cfg.rope_dim / 2;
  float *f = qins_mem_alloc(l->owner, (size_t)half * sizeof(float));
  if (!f) return QINS_ENOMEM;
  for (int i = 0; i < half; i++) {
    float base = powf(l->cfg.rope_theta, (float)(2 * i) / (float)l->cfg.rope_dim);
    f[i] = 1.0f / ((factors ? factors[i] : 1.0f) * base);
  }
  int rc = upload(l, f, (size_t)half * sizeof(float), out);
  qins_mem_free(l->owner, f);
  return rc;
}

static int alloc_act(qins_llm *l, size_t bytes, qins_buf **out) {
  int rc = qins_buf_alloc(l->be, bytes ? bytes : 4, out);
  if (rc) return rc;
  return own(l, *out);
}

static int check_config(const qins_model *m) {
  const qins_model_config *c = &m->cfg;
  if (c->arch != QINS_ARCH_LLAMA && c->arch != QINS_ARCH_PHI3 && c->arch != QINS_ARCH_GPT2)
    return qins_error_set(QINS_EINPUT, "%s: architecture %s cannot run (need llama, phi3 or gpt2)", m->path,
                          qins_arch_name(c->arch));
  if (c->dim < 1 || c->n_layers < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 1 || c->ffn_dim < 1 ||
      c->vocab_size < 1 || c->n_heads % c->n_kv_heads)
    return qins_error_set(QINS_EINPUT,
                          "%s: bad config (dim %d, layers %d, heads %d, kv heads %d, head_dim %d, ffn %d, vocab %d)",
                          m->path, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim,
                          c->vocab_size);
  qins_act want_act = c->arch == QINS_ARCH_GPT2 ? QINS_ACT_GELU_TANH : QINS_ACT_SILU;
  if (c->act != want_act)
    return qins_error_set(QINS_EUNSUPPORTED, "%s: %s with activation %s is not supported (the runtime has %s)",
                          m->path, qins_arch_name(c->arch), qins_act_name(c->act), qins_act_name(want_act));
  if (c->arch != QINS_ARCH_GPT2) {
    if (c->rope_dim < 2 || c->rope_dim % 2 || c->rope_dim > c->head_dim || !(c->rope_theta > 0))
      return qins_error_set(QINS_EINPUT, "%s: bad rope config (rope_dim %d, head_dim %d, theta %g)", m->path,
                            c->rope_dim, c->head_dim, (double)c->rope_theta);
    if (c->rope_scaling == QINS_ROPE_SCALING_LONGROPE &&
        (!c->rope_short_factor || !c->rope_long_factor || c->original_max_seq_len < 1))
      return qins_error_set(QINS_EINPUT, "%s: longrope without short/long factors or original_max_position_embeddings",
                            m->path);
  }
  return 0;
}

static int create_inner(qins_llm *l, const qins_llm_options *opt) {
  const qins_model *m = l->model;
  qins_model_config *c = &l->cfg;
  int rc = 0;
  l->max_seq = opt && opt->max_seq > 0 ? opt->max_seq : c->max_seq_len;
  if (l->max_seq < 1) return qins_error_set(QINS_EINVAL, "%s: no max_seq given and the model has none", m->path);
  if (l->is_gpt2 && l->max_seq > c->max_seq_len)
    return qins_error_set(QINS_EINVAL, "%s: max_seq %d exceeds GPT-2's %d learned positions", m->path, l->max_seq,
                          c->max_seq_len);
  l->max_batch = opt && opt->max_batch > 0 ? opt->max_batch : 128;
  if (l->max_batch > l->max_seq) l->max_batch = l->max_seq;
  l->hist = qins_mem_calloc(l->owner, (size_t)l->max_seq, sizeof(int32_t));
  l->layers = qins_mem_calloc(l->owner, (size_t)c->n_layers, sizeof(llm_layer));
  if (!l->hist || !l->layers) return QINS_ENOMEM;

  /* embeddings, final norm, head */
  int64_t V = c->vocab_size, D = c->dim;
  const qins_weight *w;
  if (l->is_gpt2) {
    if (!(w = findf(l, 1, "transformer.wte.weight", 0, &rc))) return rc;
    TRY(check_shape(l, w, 2, V, D));
    TRY(place_matrix(l, w, 0, V, 0, w->name, &l->tok_emb));
    if (!(w = findf(l, 1, "transformer.wpe.weight", 0, &rc))) return rc;
    TRY(check_shape(l, w, 2, c->max_seq_len, D));
    TRY(place_matrix(l, w, 0, c->max_seq_len, 0, w->name, &l->pos_emb));
  } else {
    if (!(w = findf(l, 1, "model.embed_tokens.weight", 0, &rc))) return rc;
    TRY(check_shape(l, w, 2, V, D));
    TRY(place_matrix(l, w, 0, V, 0, w->name, &l->tok_emb));
  }
  /* a token reads one row of the embedding tables: count the head and the layers, not the tables */
  l->weight_bytes = 0;
  if (l->is_gpt2) {
    TRY(get_vec(l, 0, "transformer.ln_f.weight", D, 1, &l->out_norm));
    TRY(get_vec(l, 0, "transformer.ln_f.bias", D, 1, &l->out_norm_b));
  } else {
    TRY(get_vec(l, 0, "model.norm.weight", D, 1, &l->out_norm));
  }
  w = l->is_gpt2 ? NULL : findf(l, 0, "lm_head.weight", 0, &rc);
  if (w && !c->tied_embeddings) {
    TRY(check_shape(l, w, 2, V, D));
    TRY(place_matrix(l, w, 0, V, 0, w->name, &l->lm_head));
  } else {
    l->lm_head = l->tok_emb; /* tied */
    l->weight_bytes += (int64_t)qins_tensor_nbytes(&l->tok_emb);
  }

  for (int i = 0; i < c->n_layers; i++) {
    llm_layer *L = &l->layers[i];
    TRY(l->is_gpt2 ? place_gpt2_layer(l, i, L) : place_llama_layer(l, i, L));
    size_t cache_bytes = (size_t)l->max_seq * (size_t)c->n_kv_heads * (size_t)c->head_dim * sizeof(float);
    TRY(alloc_act(l, cache_bytes, &L->kc_buf));
    TRY(alloc_act(l, cache_bytes, &L->vc_buf));
  }

  size_t B = (size_t)l->max_batch, f4 = sizeof(float);
  size_t qd = (size_t)c->n_heads * (size_t)c->head_dim, kvd = (size_t)c->n_kv_heads * (size_t)c->head_dim;
  TRY(alloc_act(l, B * (size_t)D * f4, &l->x));
  TRY(alloc_act(l, B * (size_t)D * f4, &l->xb));
  TRY(alloc_act(l, B * (size_t)D * f4, &l->xb2));
  TRY(alloc_act(l, B * qd * f4, &l->q));
  TRY(alloc_act(l, B * kvd * f4, &l->k));
  TRY(alloc_act(l, B * qd * f4, &l->att));
  TRY(alloc_act(l, B * (size_t)c->ffn_dim * f4, &l->h1));
  TRY(alloc_act(l, B * (size_t)c->ffn_dim * f4, &l->h2));
  TRY(alloc_act(l, B * (size_t)V * f4, &l->logits));
  TRY(alloc_act(l, B * 4, &l->ids));
  TRY(alloc_act(l, B * 4, &l->posb));
  TRY(alloc_act(l, 4, &l->amax));
  if (l->has_rope) {
    int lr = c->rope_scaling == QINS_ROPE_SCALING_LONGROPE;
    TRY(make_inv_freq(l, lr ? c->rope_short_factor : NULL, &l->inv_freq[0]));
    if (lr) TRY(make_inv_freq(l, c->rope_long_factor, &l->inv_freq[1]));
  }
  return 0;
}

int qins_llm_create(const qins_model *model, qins_backend *be, const qins_llm_options *opt, qins_llm **out) {
  *out = NULL;
  if (!model || !be) return qins_error_set(QINS_EINVAL, "qins_llm_create: model and backend are required");
  TRY(check_config(model));
  qins_mem_owner *owner = qins_mem_owner_get("llm");
  qins_llm *l = qins_mem_calloc(owner, 1, sizeof *l);
  if (!l) return QINS_ENOMEM;
  l->owner = owner;
  l->model = model;
  l->be = be;
  l->cfg = model->cfg;
  l->is_gpt2 = model->cfg.arch == QINS_ARCH_GPT2;
  l->has_rope = !l->is_gpt2;
  l->rope_long = 0;
  int rc = create_inner(l, opt);
  if (rc) {
    qins_llm_destroy(l);
    return qins_error_wrap(rc, "%s: ", model->path);
  }
  *out = l;
  return 0;
}

void qins_llm_destroy(qins_llm *l) {
  if (!l) return;
  for (int i = l->n_owned - 1; i >= 0; i--) qins_buf_free(l->owned[i]);
  qins_mem_free(l->owner, l->hist);
  qins_mem_free(l->owner, l->layers);
  qins_mem_free(l->owner, l);
}

void qins_llm_reset(qins_llm *l) {
  l->pos = 0;
  l->rope_long = 0;
}

int qins_llm_pos(const qins_llm *l) { return l->pos; }
int qins_llm_vocab(const qins_llm *l) { return l->cfg.vocab_size; }
int qins_llm_max_seq(const qins_llm *l) { return l->max_seq; }
const qins_model_config *qins_llm_config(const qins_llm *l) { return &l->cfg; }
int64_t qins_llm_weight_bytes(const qins_llm *l) { return l->weight_bytes; }
int qins_llm_rope_long(const qins_llm *l) {
  return l->cfg.rope_scaling == QINS_ROPE_SCALING_LONGROPE && l->has_rope ? l->rope_long : -1;
}
int qins_llm_rope_recomputes(const qins_llm *l) { return l->recomputes; }

qins_tensor *qins_llm_matrix(qins_llm *l, int layer, qins_llm_mat which) {
  if (layer < 0 || layer >= l->cfg.n_layers) return NULL;
  llm_layer *L = &l->layers[layer];
  qins_tensor *t = NULL;
  switch (which) {
  case QINS_LLM_WQ: t = &L->wq; break;
  case QINS_LLM_WK: t = &L->wk; break;
  case QINS_LLM_WV: t = &L->wv; break;
  case QINS_LLM_WO: t = &L->wo; break;
  case QINS_LLM_WGATE: t = &L->wgate; break;
  case QINS_LLM_WUP: t = &L->wup; break;
  case QINS_LLM_WDOWN: t = &L->wdown; break;
  default: return NULL;
  }
  return t->buf ? t : NULL;
}

const qins_tensor *qins_llm_bias(const qins_llm *l, int layer, qins_llm_mat which) {
  if (layer < 0 || layer >= l->cfg.n_layers) return NULL;
  const llm_layer *L = &l->layers[layer];
  const qins_tensor *t = NULL;
  switch (which) {
  case QINS_LLM_WQ: t = &L->bq; break;
  case QINS_LLM_WK: t = &L->bk; break;
  case QINS_LLM_WV: t = &L->bv; break;
  case QINS_LLM_WO: t = &L->bo; break;
  case QINS_LLM_WGATE: t = &L->bgate; break;
  case QINS_LLM_WUP: t = &L->bup; break;
  case QINS_LLM_WDOWN: t = &L->bdown; break;
  default: return NULL;
  }
  return t->buf ? t : NULL;
}

int qins_llm_norm(const qins_llm *l, int layer, int ffn, const qins_tensor **weight, const qins_tensor **bias) {
  if (layer < 0 || layer >= l->cfg.n_layers)
    return qins_error_set(QINS_EINVAL, "llm norm: layer %d outside 0..%d", layer, l->cfg.n_layers - 1);
  const llm_layer *L = &l->layers[layer];
  *weight = ffn ? &L->ffn_norm : &L->attn_norm;
  const qins_tensor *b = ffn ? &L->ffn_norm_b : &L->attn_norm_b;
  *bias = b->buf ? b : NULL;
  return 0;
}

void qins_llm_set_tap(qins_llm *l, qins_llm_tap_fn fn, void *user) {
  l->tap = fn;
  l->tap_user = user;
}

/* The tap's call: x about to enter `which` of layer i. */
#define TAP(i, which, x)                                                       \
  do {                                                                         \
    if (l->tap) TRY(l->tap(l->tap_user, (i), (which), (x), pos0));            \
  } while (0)

int qins_llm_set_vcache(qins_llm *l, int layer, qins_dtype format, qins_alpha_spec spec) {
  if (layer < 0 || layer >= l->cfg.n_layers)
    return qins_error_set(QINS_EINVAL, "llm vcache: layer %d outside 0..%d", layer, l->cfg.n_layers - 1);
  if (format != QINS_DT_F32 && format != QINS_DT_QINS8)
    return qins_error_set(QINS_EUNSUPPORTED, "llm vcache: layer %d: a %s V cache is not supported (f32 or qins8)",
                          layer, qins_dtype_name(format));
  llm_layer *L = &l->layers[layer];
  L->vfmt = format;
  L->vq_spec = spec;
  if (format == QINS_DT_QINS8 && !l->vtmp) {
    size_t kvd = (size_t)l->cfg.n_kv_heads * (size_t)l->cfg.head_dim;
    TRY(alloc_act(l, (size_t)l->max_batch * kvd * sizeof(float), &l->vtmp));
  }
  return 0;
}

/* qins8 codes [max_seq, hkv, hd] and alphas [max_seq*hkv] in two new buffers: the runtime's own
 * cache (owned) or a pipeline cache's (freed with it). */
static int alloc_vq(qins_llm *l, int owned, qins_tensor *vq, qins_tensor *alpha) {
  int64_t hkv = l->cfg.n_kv_heads, hd = l->cfg.head_dim;
  qins_buf *codes = NULL, *ab = NULL;
  int rc = qins_buf_alloc(l->be, (size_t)l->max_seq * (size_t)(hkv * hd), &codes);
  if (!rc && owned) rc = own(l, codes);
  if (!rc) rc = qins_buf_alloc(l->be, (size_t)l->max_seq * (size_t)hkv * sizeof(float), &ab);
  if (!rc && owned) rc = own(l, ab);
  if (rc) {
    if (!owned && codes) qins_buf_free(codes);
    return rc;
  }
  *alpha = view(ab, 0, "v_cache alpha", QINS_DT_F32, 1, (int64_t)l->max_seq * hkv, 0, 0);
  *vq = view(codes, 0, "v_cache qins8", QINS_DT_QINS8, 3, l->max_seq, hkv, hd);
  vq->scale = alpha;
  return 0;
}

int64_t qins_llm_cache_bytes(const qins_llm *l) {
  int64_t per = (int64_t)l->max_seq * l->cfg.n_kv_heads * l->cfg.head_dim, total = 0;
  for (int i = 0; i < l->cfg.n_layers; i++)
    total += per * 4 + (l->layers[i].vfmt == QINS_DT_QINS8 ? per + (int64_t)l->max_seq * l->cfg.n_kv_heads * 4 : per * 4);
  return total;
}

/* ---------------------------------------------------------------- forward */

static int norm(qins_llm *l, const qins_tensor *x, const qins_tensor *w, const qins_tensor *b, qins_tensor *y) {
  if (l->is_gpt2) return qins_op_layernorm(l->be, x, w, b, l->cfg.norm_eps, y);
  return qins_op_rmsnorm(l->be, x, w, l->cfg.norm_eps, y);
}

static const qins_tensor *opt_t(const qins_tensor *t) { return t->buf ? t : NULL; }

/* One forward over n <= max_batch tokens at positions pos0..pos0+n-1 (ids/positions uploaded by
 * the caller). head_rows: 0 (no logits), 1 (last row only, into logits row 0) or n (all rows). */
/* The pipeline stages' variant (qins_llm_forward_range): embed only when asked (else x already
 * holds the rows), layers [layer0, layer1) only, keys/values in `kv` when given. */
struct qins_llm_kv {
  qins_llm *llm;
  int layer0, layer1;
  qins_buf **kc, **vc; /* per layer of the range; vc NULL where the layer's V cache is qins8 */
  qins_tensor *vq, *vqa; /* per layer: qins8 codes + alphas (vq[i].buf NULL: f32 V in vc[i]) */
  int64_t k_bytes, v_bytes;
};

static int run_chunk_range(qins_llm *l, int n, int pos0, int head_rows, int embed, int layer0, int layer1,
                           const qins_llm_kv *kv);

static int run_chunk(qins_llm *l, int n, int pos0, int head_rows) {
  return run_chunk_range(l, n, pos0, head_rows, 1, 0, l->cfg.n_layers, NULL);
}

static int run_chunk_range(qins_llm *l, int n, int pos0, int head_rows, int embed, int layer0, int layer1,
                           const qins_llm_kv *kv) {
  const qins_model_config *c = &l->cfg;
  qins_backend *be = l->be;
  int64_t D = c->dim, hq = c->n_heads, hkv = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim;
  qins_tensor ids = view(l->ids, 0, "ids", QINS_DT_I32, 1, n, 0, 0);
  qins_tensor pos = view(l->posb, 0, "positions", QINS_DT_I32, 1, n, 0, 0);
  qins_tensor x = view(l->x, 0, "x", QINS_DT_F32, 2, n, D, 0);
  qins_tensor xb = view(l->xb, 0, "xb", QINS_DT_F32, 2, n, D, 0);
  qins_tensor xb2 = view(l->xb2, 0, "xb2", QINS_DT_F32, 2, n, D, 0);
  qins_tensor q2 = view(l->q, 0, "q", QINS_DT_F32, 2, n, hq * hd, 0);
  qins_tensor q3 = view(l->q, 0, "q", QINS_DT_F32, 3, n, hq, hd);
  qins_tensor k2 = view(l->k, 0, "k", QINS_DT_F32, 2, n, hkv * hd, 0);
  qins_tensor k3 = view(l->k, 0, "k", QINS_DT_F32, 3, n, hkv, hd);
  qins_tensor att3 = view(l->att, 0, "attn_out", QINS_DT_F32, 3, n, hq, hd);
  qins_tensor att2 = view(l->att, 0, "attn_out", QINS_DT_F32, 2, n, hq * hd, 0);
  qins_tensor h1 = view(l->h1, 0, "ffn_h1", QINS_DT_F32, 2, n, F, 0);
  qins_tensor h2 = view(l->h2, 0, "ffn_h2", QINS_DT_F32, 2, n, F, 0);
  qins_tensor inv_freq;
  if (l->has_rope) inv_freq = view(l->inv_freq[l->rope_long], 0, "inv_freq", QINS_DT_F32, 1, c->rope_dim / 2, 0, 0);
  float attn_factor = c->rope_scaling == QINS_ROPE_SCALING_LONGROPE ? c->rope_attn_factor : 1.0f;
  float scale = 1.0f / sqrtf((float)hd);
  size_t row_kv = (size_t)hkv * (size_t)hd * sizeof(float);

  if (embed) {
    TRY(qins_op_embed(be, &l->tok_emb, &ids, &x));
    if (l->is_gpt2) {
      TRY(qins_op_embed(be, &l->pos_emb, &pos, &xb));
      TRY(qins_op_add(be, &x, &xb, &x));
    }
  }
  for (int i = layer0; i < layer1; i++) {
    llm_layer *L = &l->layers[i];
    qins_buf *kcb = kv ? kv->kc[i - kv->layer0] : L->kc_buf, *vcb = kv ? kv->vc[i - kv->layer0] : L->vc_buf;
    qins_tensor kc = view(kcb, 0, "k_cache", QINS_DT_F32, 3, l->max_seq, hkv, hd);
    qins_tensor vc = view(vcb, 0, "v_cache", QINS_DT_F32, 3, l->max_seq, hkv, hd);
    /* new keys/values land straight in the cache rows pos0..pos0+n-1 */
    qins_tensor kdst3 = view(kcb, (size_t)pos0 * row_kv, "k_cache rows", QINS_DT_F32, 3, n, hkv, hd);
    qins_tensor kdst2 = view(kcb, (size_t)pos0 * row_kv, "k_cache rows", QINS_DT_F32, 2, n, hkv * hd, 0);
    qins_tensor vdst2 = view(vcb, (size_t)pos0 * row_kv, "v_cache rows", QINS_DT_F32, 2, n, hkv * hd, 0);

    TRY(norm(l, &x, &L->attn_norm, opt_t(&L->attn_norm_b), &xb));
    TAP(i, QINS_LLM_WV, &xb);
    TRY(qins_op_matmul(be, &xb, &L->wq, opt_t(&L->bq), &q2));
    /* QINS V cache: the pipeline cache's own codes when it has them (its format was fixed at
     * qins_llm_kv_create), else the runtime's (allocated at the first forward that needs it) */
    qins_tensor *vqt = kv ? &kv->vq[i - kv->layer0] : &L->vq;
    if (!kv && L->vfmt == QINS_DT_QINS8 && !L->vq.buf) TRY(alloc_vq(l, 1, &L->vq, &L->vq_alpha));
    if (!kv && L->vfmt != QINS_DT_QINS8) vqt = NULL;
    int vq = vqt && vqt->buf;
    if (vq) {
      qins_tensor v2 = view(l->vtmp, 0, "v rows", QINS_DT_F32, 2, n, hkv * hd, 0);
      qins_tensor v3 = view(l->vtmp, 0, "v rows", QINS_DT_F32, 3, n, hkv, hd);
      TRY(qins_op_matmul(be, &xb, &L->wv, opt_t(&L->bv), &v2));
      TRY(qins_kv_append_v(be, &v3, vqt, pos0, L->vq_spec));
    } else {
      TRY(qins_op_matmul(be, &xb, &L->wv, opt_t(&L->bv), &vdst2));
    }
    if (l->has_rope) {
      TRY(qins_op_matmul(be, &xb, &L->wk, opt_t(&L->bk), &k2));
      TRY(qins_op_rope(be, &q3, &pos, &inv_freq, c->rope_dim, attn_factor, c->rope_mode, &q3));
      TRY(qins_op_rope(be, &k3, &pos, &inv_freq, c->rope_dim, attn_factor, c->rope_mode, &kdst3));
    } else {
      TRY(qins_op_matmul(be, &xb, &L->wk, opt_t(&L->bk), &kdst2));
    }
    TRY(qins_op_attention(be, &q3, &kc, vq ? vqt : &vc, pos0, scale, &att3));
    TAP(i, QINS_LLM_WO, &att2);
    TRY(qins_op_matmul(be, &att2, &L->wo, opt_t(&L->bo), &xb2));
    TRY(qins_op_add(be, &x, &xb2, &x));

    TRY(norm(l, &x, &L->ffn_norm, opt_t(&L->ffn_norm_b), &xb));
    if (!l->is_gpt2) TAP(i, QINS_LLM_WGATE, &xb);
    TAP(i, QINS_LLM_WUP, &xb);
    if (l->is_gpt2) {
      TRY(qins_op_matmul(be, &xb, &L->wup, opt_t(&L->bup), &h1));
      TRY(qins_op_gelu_tanh(be, &h1, &h1));
    } else {
      TRY(qins_op_matmul(be, &xb, &L->wgate, opt_t(&L->bgate), &h1));
      TRY(qins_op_matmul(be, &xb, &L->wup, opt_t(&L->bup), &h2));
      TRY(qins_op_silu_mul(be, &h1, &h2, &h1));
    }
    TAP(i, QINS_LLM_WDOWN, &h1);
    TRY(qins_op_matmul(be, &h1, &L->wdown, opt_t(&L->bdown), &xb2));
    TRY(qins_op_add(be, &x, &xb2, &x));
  }
  if (head_rows > 0) {
    size_t first = (size_t)(n - head_rows);
    qins_tensor xr = view(l->x, first * (size_t)D * sizeof(float), "x rows", QINS_DT_F32, 2, head_rows, D, 0);
    qins_tensor xbr = view(l->xb, 0, "xb", QINS_DT_F32, 2, head_rows, D, 0);
    qins_tensor lg = view(l->logits, 0, "logits", QINS_DT_F32, 2, head_rows, c->vocab_size, 0);
    TRY(norm(l, &xr, &l->out_norm, opt_t(&l->out_norm_b), &xbr));
    TRY(qins_op_matmul(be, &xbr, &l->lm_head, NULL, &lg));
  }
  return 0;
}

/* Runs ids at the current position in chunks; logits/argmax as in qins_llm_forward. */
static int run_tokens(qins_llm *l, const int32_t *ids, int n, int all_logits, float *logits, int32_t *argmax) {
  int64_t V = l->cfg.vocab_size;
  int32_t *posv = qins_mem_alloc(l->owner, (size_t)l->max_batch * sizeof(int32_t));
  if (!posv) return QINS_ENOMEM;
  int rc = 0;
  for (int s = 0; s < n && !rc; s += l->max_batch) {
    int cn = n - s < l->max_batch ? n - s : l->max_batch;
    int last = s + cn == n;
    for (int i = 0; i < cn; i++) {
      if (ids[s + i] < 0 || ids[s + i] >= V) {
        rc = qins_error_set(QINS_EINPUT, "token id %d at index %d outside the vocabulary of %lld", ids[s + i], s + i,
                            (long long)V);
        break;
      }
      posv[i] = l->pos + i;
    }
    if (rc) break;
    /* record first: ids may alias argmax (decode loops feed the previous result back), and the
     * recompute path passes hist itself */
    if (ids != l->hist) memcpy(l->hist + l->pos, ids + s, (size_t)cn * sizeof(int32_t));
    if ((rc = qins_buf_write(l->ids, 0, l->hist + l->pos, (size_t)cn * sizeof(int32_t)))) break;
    if ((rc = qins_buf_write(l->posb, 0, posv, (size_t)cn * sizeof(int32_t)))) break;
    int head_rows = all_logits && logits ? cn : (last && (logits || argmax)) ? 1 : 0;
    if ((rc = run_chunk(l, cn, l->pos, head_rows))) break;
    if (head_rows && logits) {
      float *dst = all_logits ? logits + (size_t)s * (size_t)V : logits;
      size_t off = all_logits ? 0 : (size_t)(head_rows - 1) * (size_t)V * sizeof(float);
      size_t bytes = (size_t)(all_logits ? head_rows : 1) * (size_t)V * sizeof(float);
      if ((rc = qins_buf_read(l->logits, off, dst, bytes))) break;
    }
    if (last && argmax) {
      qins_tensor lg = view(l->logits, (size_t)(head_rows - 1) * (size_t)V * sizeof(float), "logits", QINS_DT_F32, 2,
                            1, V, 0);
      qins_tensor am = view(l->amax, 0, "argmax", QINS_DT_I32, 1, 1, 0, 0);
      if ((rc = qins_op_argmax(l->be, &lg, &am))) break;
      if ((rc = qins_buf_read(l->amax, 0, argmax, sizeof(int32_t)))) break;
    }
    l->pos += cn;
  }
  qins_mem_free(l->owner, posv);
  return rc;
}

int qins_llm_forward(qins_llm *l, const int32_t *ids, int n, int all_logits, float *logits, int32_t *argmax) {
  if (n < 1 || !ids) return qins_error_set(QINS_EINVAL, "llm forward: no tokens");
  if ((int64_t)l->pos + n > l->max_seq)
    return qins_error_set(QINS_EINVAL, "llm forward: %d tokens at position %d exceed the context of %d", n, l->pos,
                          l->max_seq);
  int pos_before = l->pos;
  /* Longrope: transformers picks long factors when max(position)+1 > original_max and applies them
   * to every position of that forward. To keep cached decoding equal to a one-shot forward over
   * the whole sequence, a cache built with short factors is recomputed once the sequence crosses
   * original_max (docs/models.md, "longrope"). */
  if (l->has_rope && l->cfg.rope_scaling == QINS_ROPE_SCALING_LONGROPE) {
    int want_long = l->pos + n > l->cfg.original_max_seq_len;
    if (want_long != l->rope_long) {
      l->rope_long = want_long;
      if (l->pos > 0) {
        int keep = l->pos;
        l->pos = 0;
        int rc = run_tokens(l, l->hist, keep, 0, NULL, NULL);
        if (rc) {
          l->pos = 0; /* the cache is now partial: start over */
          return qins_error_wrap(rc, "recomputing the cache with long rope factors: ");
        }
        l->recomputes++;
      }
    }
  }
  int rc = run_tokens(l, ids, n, all_logits, logits, argmax);
  if (rc) l->pos = pos_before;
  return rc;
}

/* ---------------------------------------------------------------- pipeline pieces */

int qins_llm_kv_create(qins_llm *l, int layer0, int layer1, qins_llm_kv **out) {
  *out = NULL;
  if (layer0 < 0 || layer1 > l->cfg.n_layers || layer0 > layer1)
    return qins_error_set(QINS_EINVAL, "llm kv: layers %d..%d outside 0..%d", layer0, layer1, l->cfg.n_layers);
  qins_llm_kv *kv = qins_mem_calloc(l->owner, 1, sizeof *kv);
  int n = layer1 - layer0;
  if (!kv) return QINS_ENOMEM;
  kv->llm = l;
  kv->layer0 = layer0;
  kv->layer1 = layer1;
  kv->kc = qins_mem_calloc(l->owner, (size_t)n + 1, sizeof(qins_buf *));
  kv->vc = qins_mem_calloc(l->owner, (size_t)n + 1, sizeof(qins_buf *));
  kv->vq = qins_mem_calloc(l->owner, (size_t)n + 1, sizeof(qins_tensor));
  kv->vqa = qins_mem_calloc(l->owner, (size_t)n + 1, sizeof(qins_tensor));
  if (!kv->kc || !kv->vc || !kv->vq || !kv->vqa) {
    qins_llm_kv_destroy(kv);
    return QINS_ENOMEM;
  }
  int64_t rows = (int64_t)l->max_seq * l->cfg.n_kv_heads;
  size_t bytes = (size_t)rows * (size_t)l->cfg.head_dim * sizeof(float);
  for (int i = 0; i < n; i++) {
    int rc = qins_buf_alloc(l->be, bytes, &kv->kc[i]);
    kv->k_bytes += (int64_t)bytes;
    /* the layer's V format as the runtime has it now (qins_llm_set_vcache): qins8 codes with one
     * alpha per (token, KV head), the same layout and code path as the runtime's own cache */
    if (!rc && l->layers[layer0 + i].vfmt == QINS_DT_QINS8) {
      rc = alloc_vq(l, 0, &kv->vq[i], &kv->vqa[i]);
      kv->vq[i].scale = &kv->vqa[i]; /* the copy in kv, not alloc_vq's argument */
      kv->v_bytes += rows * l->cfg.head_dim + rows * (int64_t)sizeof(float);
    } else if (!rc) {
      rc = qins_buf_alloc(l->be, bytes, &kv->vc[i]);
      kv->v_bytes += (int64_t)bytes;
    }
    if (rc) {
      qins_llm_kv_destroy(kv);
      return rc;
    }
  }
  *out = kv;
  return 0;
}

void qins_llm_kv_destroy(qins_llm_kv *kv) {
  if (!kv) return;
  int n = kv->layer1 - kv->layer0;
  for (int i = 0; i < n; i++) {
    if (kv->kc && kv->kc[i]) qins_buf_free(kv->kc[i]);
    if (kv->vc && kv->vc[i]) qins_buf_free(kv->vc[i]);
    if (kv->vq && kv->vq[i].buf) qins_buf_free(kv->vq[i].buf);
    if (kv->vqa && kv->vqa[i].buf) qins_buf_free(kv->vqa[i].buf);
  }
  qins_mem_free(kv->llm->owner, kv->kc);
  qins_mem_free(kv->llm->owner, kv->vc);
  qins_mem_free(kv->llm->owner, kv->vq);
  qins_mem_free(kv->llm->owner, kv->vqa);
  qins_mem_free(kv->llm->owner, kv);
}

int64_t qins_llm_kv_bytes(const qins_llm_kv *kv, int64_t *v_bytes) {
  if (v_bytes) *v_bytes = kv ? kv->v_bytes : 0;
  return kv ? kv->k_bytes + kv->v_bytes : 0;
}

int qins_llm_forward_range(qins_llm *l, qins_llm_kv *kv, const int32_t *ids, float *x, int n, int pos0, int layer0,
                           int layer1, float *logits, int32_t *argmax) {
  const qins_model_config *c = &l->cfg;
  int64_t V = c->vocab_size, D = c->dim;
  if (n < 1 || (!ids && !x)) return qins_error_set(QINS_EINVAL, "llm forward_range: no rows");
  if (layer0 < 0 || layer1 > c->n_layers || layer0 > layer1)
    return qins_error_set(QINS_EINVAL, "llm forward_range: layers %d..%d outside 0..%d", layer0, layer1, c->n_layers);
  if (layer1 > layer0 && (!kv || layer0 < kv->layer0 || layer1 > kv->layer1))
    return qins_error_set(QINS_EINVAL, "llm forward_range: layers %d..%d need a cache for them", layer0, layer1);
  if (pos0 < 0 || (int64_t)pos0 + n > l->max_seq)
    return qins_error_set(QINS_EINVAL, "llm forward_range: %d rows at position %d exceed the context of %d", n, pos0,
                          l->max_seq);
  /* one policy for every piece: the factors a one-shot forward over pos0+n tokens would use (a
   * split pipeline cannot recompute caches held by other workers, see docs/pipelines.md) */
  if (l->has_rope && c->rope_scaling == QINS_ROPE_SCALING_LONGROPE) {
    int want_long = pos0 + n > c->original_max_seq_len;
    if (want_long && pos0 > 0 && pos0 <= c->original_max_seq_len && layer1 > layer0)
      return qins_error_set(QINS_EUNSUPPORTED,
                            "llm forward_range: the sequence crosses original_max_position_embeddings (%d); a split "
                            "pipeline cannot recompute its cache",
                            c->original_max_seq_len);
    l->rope_long = want_long;
  }
  int32_t *posv = qins_mem_alloc(l->owner, (size_t)l->max_batch * sizeof(int32_t));
  if (!posv) return QINS_ENOMEM;
  int rc = 0;
  int head = logits || argmax;
  for (int s = 0; s < n && !rc; s += l->max_batch) {
    int cn = n - s < l->max_batch ? n - s : l->max_batch;
    int last = s + cn == n;
    for (int i = 0; i < cn; i++) posv[i] = pos0 + s + i;
    if ((rc = qins_buf_write(l->posb, 0, posv, (size_t)cn * sizeof(int32_t)))) break;
    if (ids) {
      for (int i = 0; i < cn; i++)
        if (ids[s + i] < 0 || ids[s + i] >= V) {
          rc = qins_error_set(QINS_EINPUT, "token id %d at index %d outside the vocabulary of %lld", ids[s + i], s + i,
                              (long long)V);
          break;
        }
      if (rc || (rc = qins_buf_write(l->ids, 0, ids + s, (size_t)cn * sizeof(int32_t)))) break;
    } else if ((rc = qins_buf_write(l->x, 0, x + (size_t)s * (size_t)D, (size_t)cn * (size_t)D * sizeof(float)))) {
      break;
    }
    int head_rows = head && last ? 1 : 0;
    if ((rc = run_chunk_range(l, cn, pos0 + s, head_rows, ids != NULL, layer0, layer1, kv))) break;
    if (!head && x && (rc = qins_buf_read(l->x, 0, x + (size_t)s * (size_t)D, (size_t)cn * (size_t)D * sizeof(float))))
      break;
    if (head_rows && logits && (rc = qins_buf_read(l->logits, 0, logits, (size_t)V * sizeof(float)))) break;
    if (head_rows && argmax) {
      qins_tensor lg = view(l->logits, 0, "logits", QINS_DT_F32, 2, 1, V, 0);
      qins_tensor am = view(l->amax, 0, "argmax", QINS_DT_I32, 1, 1, 0, 0);
      if ((rc = qins_op_argmax(l->be, &lg, &am))) break;
      if ((rc = qins_buf_read(l->amax, 0, argmax, sizeof(int32_t)))) break;
    }
  }
  qins_mem_free(l->owner, posv);
  return rc;
}
