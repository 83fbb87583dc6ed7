/* Forward with saved activations and backward for Llama / Phi-3 / GPT-2, built from the op table
 * (see model_grad.h). Parameters live in host f32 arrays wrapped as backend tensors; fused
 * projections (Phi-3 qkv_proj, gate_up_proj; GPT-2 c_attn) are used through row-block views, so
 * their gradients land in place; GPT-2's transposed Conv1D weights are multiplied through [out,in]
 * working copies whose gradients are transposed back at the end of each part's backward.
 * Everything runs through parts (a contiguous piece of the model with micro-batch slots);
 * qins_train_model_loss_grad is the whole model as one part. */
#include "core/train/model_grad.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/backend_grad.h"
#include "core/error.h"
#include "core/mem.h"

typedef struct tparam {
  qins_train_param pub;
  char name[QINS_NAME_MAX];
  qins_tensor w, g; /* cpu: wrapping pub.w / pub.g; device backends: device copies */
  int tidx;         /* device backends, GPT-2 Conv1D: w/g are the [out,in] working copy tm->t[tidx] */
} tparam;

/* In 32 x 32 tiles: a row-by-row transpose touches a new cache line (and page) per element on one
 * side; it ran for every micro-batch and was a third of a GPT-2 training step's cpu time. Each
 * element is still written (or added to) exactly once, so the result is unchanged. */
static void transpose_into(float *dst, const float *src, int64_t rows, int64_t cols, int accumulate) {
  enum { TB = 32 };
  for (int64_t r0 = 0; r0 < rows; r0 += TB)
    for (int64_t c0 = 0; c0 < cols; c0 += TB) {
      int64_t r1 = r0 + TB < rows ? r0 + TB : rows, c1 = c0 + TB < cols ? c0 + TB : cols;
      for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++) {
          if (accumulate) dst[c * rows + r] += src[r * cols + c];
          else dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/* A [out,in] working copy of a GPT-2 Conv1D weight [in,out] and its gradient. */
typedef struct transposed {
  int src;         /* parameter index */
  int layer;       /* the layer it belongs to (parts refresh and flush their own layers only) */
  float *w, *g;
  qins_tensor tw, tg;
} transposed;

typedef struct layer_w {
  /* weight and gradient tensors as the matmuls use them ([N,K]); views where fused */
  qins_tensor wq, wk, wv, wo, wg, wu, wd;
  qins_tensor gq, gk, gv, go, gg, gu, gd;
  /* biases (GPT-2, Llama attention_bias/mlp_bias): present flags and views */
  int has_bqkv, has_bo, has_bmlp;
  qins_tensor bq, bk, bv, bo, bg, bu, bd;  /* bg: GPT-2 c_fc bias; bu unused there */
  qins_tensor dbq, dbk, dbv, dbo, dbg, dbu, dbd;
  qins_tensor *ln1, *ln1b, *ln2, *ln2b;    /* norm gain/bias (b NULL for RMSNorm) */
  qins_tensor *dln1, *dln1b, *dln2, *dln2b;
} layer_w;

struct qins_train_model {
  qins_backend *be;
  int device;       /* buffers are not the host arrays: weights/gradients sync explicitly */
  qins_tensor zeros; /* device: ZERO_CHUNK zero floats, copied over the gradients by zero_grad */
  qins_model_config cfg;
  float rope_short[256], rope_long[256];
  int np;
  tparam *p;
  int nt;
  transposed *t;
  layer_w *L;
  qins_tensor *emb, *demb, *pos_emb, *dpos_emb, *normf, *normfb, *dnormf, *dnormfb, *head, *dhead;
  qins_train_logit_hook hook;
  void *hook_user;
  qins_train_hidden_hook hhook;
  void *hhook_user;
  qins_train_part *whole; /* the whole model as one part (qins_train_model_loss_grad), made on first use */
};

void qins_train_model_set_hidden_hook(qins_train_model *tm, qins_train_hidden_hook fn, void *user) {
  tm->hhook = fn;
  tm->hhook_user = user;
}

void qins_train_model_set_logit_hook(qins_train_model *tm, qins_train_logit_hook fn, void *user) {
  tm->hook = fn;
  tm->hook_user = user;
}

static qins_mem_owner *owner(void) { return qins_mem_owner_get("train.model"); }

#define TRY(x) do { rc = (x); if (rc) goto out; } while (0)

/* ---------------------------------------------------------------- parameters */

static tparam *find(qins_train_model *tm, const char *fmt, int layer) {
  char name[QINS_NAME_MAX];
  snprintf(name, sizeof name, fmt, layer);
  for (int i = 0; i < tm->np; i++)
    if (strcmp(tm->p[i].name, name) == 0) return &tm->p[i];
  return NULL;
}

static int need(qins_train_model *tm, const char *fmt, int layer, tparam **out) {
  *out = find(tm, fmt, layer);
  if (*out) return 0;
  char name[QINS_NAME_MAX];
  snprintf(name, sizeof name, fmt, layer);
  return qins_error_set(QINS_EINPUT, "training: the model has no tensor %s", name);
}

/* Row block [r0, r0+rows) of a 2-D [N,K] tensor (or of a 1-D bias when cols == 1). */
static void rows_view(qins_tensor *out, const qins_tensor *t, int64_t r0, int64_t rows) {
  *out = *t;
  int64_t cols = t->ndim == 2 ? t->shape[1] : 1;
  out->offset = t->offset + (size_t)(r0 * cols) * sizeof(float);
  out->shape[0] = rows;
}

static int wrap(qins_backend *be, qins_tensor *t, const char *name, float *host, int ndim, const int64_t *shape) {
  int rc = qins_tensor_init(t, name, QINS_DT_F32, ndim, shape);
  if (!rc) rc = qins_buf_wrap(be, host, qins_tensor_nbytes(t), &t->buf);
  return rc;
}

static int add_transposed(qins_train_model *tm, tparam *src, int layer, qins_tensor *w_out, qins_tensor *g_out) {
  transposed *t = &tm->t[tm->nt++];
  t->layer = layer;
  int64_t in = src->pub.shape[0], outd = src->pub.shape[1];
  t->src = (int)(src - tm->p);
  t->w = qins_mem_alloc(owner(), (size_t)(in * outd) * sizeof(float));
  t->g = qins_mem_calloc(owner(), (size_t)(in * outd), sizeof(float));
  if (!t->w || !t->g) return QINS_ENOMEM;
  int64_t shape[2] = {outd, in};
  int rc;
  if (tm->device) {
    /* on a device the working copy IS the parameter (transposed at push/pull time on the host), so
     * gradients accumulate in place and an optimizer op can update it where it lives */
    rc = qins_tensor_init(&t->tw, src->name, QINS_DT_F32, 2, shape);
    if (!rc) rc = qins_tensor_init(&t->tg, src->name, QINS_DT_F32, 2, shape);
    if (!rc) rc = qins_tensor_alloc(tm->be, &t->tw);
    if (!rc) rc = qins_tensor_alloc(tm->be, &t->tg);
    src->w = t->tw;
    src->g = t->tg;
    src->tidx = tm->nt - 1;
  } else {
    rc = wrap(tm->be, &t->tw, src->name, t->w, 2, shape);
    if (!rc) rc = wrap(tm->be, &t->tg, src->name, t->g, 2, shape);
  }
  *w_out = t->tw;
  *g_out = t->tg;
  return rc;
}

static int bind_llama(qins_train_model *tm) {
  const qins_model_config *c = &tm->cfg;
  int rc = 0;
  int phi3 = c->arch == QINS_ARCH_PHI3;
  int64_t hd = c->head_dim, qn = (int64_t)c->n_heads * hd, kn = (int64_t)c->n_kv_heads * hd, f = c->ffn_dim;
  tparam *t;
  TRY(need(tm, "model.embed_tokens.weight", 0, &t));
  tm->emb = &t->w;
  tm->demb = &t->g;
  TRY(need(tm, "model.norm.weight", 0, &t));
  tm->normf = &t->w;
  tm->dnormf = &t->g;
  t = find(tm, "lm_head.weight", 0);
  if (!t && !c->tied_embeddings) return qins_error_set(QINS_EINPUT, "training: the model has no tensor lm_head.weight");
  tm->head = t ? &t->w : tm->emb;
  tm->dhead = t ? &t->g : tm->demb;
  for (int l = 0; l < c->n_layers; l++) {
    layer_w *L = &tm->L[l];
    TRY(need(tm, "model.layers.%d.input_layernorm.weight", l, &t));
    L->ln1 = &t->w;
    L->dln1 = &t->g;
    TRY(need(tm, "model.layers.%d.post_attention_layernorm.weight", l, &t));
    L->ln2 = &t->w;
    L->dln2 = &t->g;
    if (phi3) {
      TRY(need(tm, "model.layers.%d.self_attn.qkv_proj.weight", l, &t));
      rows_view(&L->wq, &t->w, 0, qn); rows_view(&L->gq, &t->g, 0, qn);
      rows_view(&L->wk, &t->w, qn, kn); rows_view(&L->gk, &t->g, qn, kn);
      rows_view(&L->wv, &t->w, qn + kn, kn); rows_view(&L->gv, &t->g, qn + kn, kn);
      TRY(need(tm, "model.layers.%d.mlp.gate_up_proj.weight", l, &t));
      rows_view(&L->wg, &t->w, 0, f); rows_view(&L->gg, &t->g, 0, f);
      rows_view(&L->wu, &t->w, f, f); rows_view(&L->gu, &t->g, f, f);
    } else {
      TRY(need(tm, "model.layers.%d.self_attn.q_proj.weight", l, &t)); L->wq = t->w; L->gq = t->g;
      TRY(need(tm, "model.layers.%d.self_attn.k_proj.weight", l, &t)); L->wk = t->w; L->gk = t->g;
      TRY(need(tm, "model.layers.%d.self_attn.v_proj.weight", l, &t)); L->wv = t->w; L->gv = t->g;
      TRY(need(tm, "model.layers.%d.mlp.gate_proj.weight", l, &t)); L->wg = t->w; L->gg = t->g;
      TRY(need(tm, "model.layers.%d.mlp.up_proj.weight", l, &t)); L->wu = t->w; L->gu = t->g;
      tparam *bq = find(tm, "model.layers.%d.self_attn.q_proj.bias", l);
      tparam *bk = find(tm, "model.layers.%d.self_attn.k_proj.bias", l);
      tparam *bv = find(tm, "model.layers.%d.self_attn.v_proj.bias", l);
      if (bq && bk && bv) {
        L->has_bqkv = 1;
        L->bq = bq->w; L->dbq = bq->g; L->bk = bk->w; L->dbk = bk->g; L->bv = bv->w; L->dbv = bv->g;
      }
      tparam *bg = find(tm, "model.layers.%d.mlp.gate_proj.bias", l);
      tparam *bu = find(tm, "model.layers.%d.mlp.up_proj.bias", l);
      tparam *bd = find(tm, "model.layers.%d.mlp.down_proj.bias", l);
      if (bg && bu && bd) {
        L->has_bmlp = 1;
        L->bg = bg->w; L->dbg = bg->g; L->bu = bu->w; L->dbu = bu->g; L->bd = bd->w; L->dbd = bd->g;
      }
      tparam *bo = find(tm, "model.layers.%d.self_attn.o_proj.bias", l);
      if (bo) {
        L->has_bo = 1;
        L->bo = bo->w;
        L->dbo = bo->g;
      }
    }
    TRY(need(tm, "model.layers.%d.self_attn.o_proj.weight", l, &t)); L->wo = t->w; L->go = t->g;
    TRY(need(tm, "model.layers.%d.mlp.down_proj.weight", l, &t)); L->wd = t->w; L->gd = t->g;
  }
out:
  return rc;
}

static int bind_gpt2(qins_train_model *tm) {
  const qins_model_config *c = &tm->cfg;
  int rc = 0;
  int64_t d = c->dim;
  tparam *t;
  TRY(need(tm, "transformer.wte.weight", 0, &t));
  tm->emb = tm->head = &t->w;
  tm->demb = tm->dhead = &t->g;
  t = find(tm, "lm_head.weight", 0);
  if (t) {
    tm->head = &t->w;
    tm->dhead = &t->g;
  }
  TRY(need(tm, "transformer.wpe.weight", 0, &t));
  tm->pos_emb = &t->w;
  tm->dpos_emb = &t->g;
  TRY(need(tm, "transformer.ln_f.weight", 0, &t));
  tm->normf = &t->w;
  tm->dnormf = &t->g;
  TRY(need(tm, "transformer.ln_f.bias", 0, &t));
  tm->normfb = &t->w;
  tm->dnormfb = &t->g;
  for (int l = 0; l < c->n_layers; l++) {
    layer_w *L = &tm->L[l];
    qins_tensor w, g;
    TRY(need(tm, "transformer.h.%d.ln_1.weight", l, &t)); L->ln1 = &t->w; L->dln1 = &t->g;
    TRY(need(tm, "transformer.h.%d.ln_1.bias", l, &t)); L->ln1b = &t->w; L->dln1b = &t->g;
    TRY(need(tm, "transformer.h.%d.ln_2.weight", l, &t)); L->ln2 = &t->w; L->dln2 = &t->g;
    TRY(need(tm, "transformer.h.%d.ln_2.bias", l, &t)); L->ln2b = &t->w; L->dln2b = &t->g;
    TRY(need(tm, "transformer.h.%d.attn.c_attn.weight", l, &t));
    TRY(add_transposed(tm, t, l, &w, &g));
    rows_view(&L->wq, &w, 0, d); rows_view(&L->gq, &g, 0, d);
    rows_view(&L->wk, &w, d, d); rows_view(&L->gk, &g, d, d);
    rows_view(&L->wv, &w, 2 * d, d); rows_view(&L->gv, &g, 2 * d, d);
    TRY(need(tm, "transformer.h.%d.attn.c_attn.bias", l, &t));
    L->has_bqkv = 1;
    rows_view(&L->bq, &t->w, 0, d); rows_view(&L->dbq, &t->g, 0, d);
    rows_view(&L->bk, &t->w, d, d); rows_view(&L->dbk, &t->g, d, d);
    rows_view(&L->bv, &t->w, 2 * d, d); rows_view(&L->dbv, &t->g, 2 * d, d);
    TRY(need(tm, "transformer.h.%d.attn.c_proj.weight", l, &t));
    TRY(add_transposed(tm, t, l, &L->wo, &L->go));
    TRY(need(tm, "transformer.h.%d.attn.c_proj.bias", l, &t));
    L->has_bo = 1; L->bo = t->w; L->dbo = t->g;
    TRY(need(tm, "transformer.h.%d.mlp.c_fc.weight", l, &t));
    TRY(add_transposed(tm, t, l, &L->wg, &L->gg)); /* the single up projection sits in the gate slot */
    TRY(need(tm, "transformer.h.%d.mlp.c_fc.bias", l, &t));
    L->has_bmlp = 1; L->bg = t->w; L->dbg = t->g;
    TRY(need(tm, "transformer.h.%d.mlp.c_proj.weight", l, &t));
    TRY(add_transposed(tm, t, l, &L->wd, &L->gd));
    TRY(need(tm, "transformer.h.%d.mlp.c_proj.bias", l, &t));
    L->bd = t->w; L->dbd = t->g;
  }
out:
  return rc;
}

int qins_train_model_create(const qins_model *m, qins_backend *be, qins_train_model **out) {
  *out = NULL;
  const qins_model_config *c = &m->cfg;
  if (c->arch != QINS_ARCH_LLAMA && c->arch != QINS_ARCH_PHI3 && c->arch != QINS_ARCH_GPT2)
    return qins_error_set(QINS_EUNSUPPORTED, "training: %s: architecture %s cannot be trained", m->path,
                          qins_arch_name(c->arch));
  if (c->arch == QINS_ARCH_GPT2 ? c->act != QINS_ACT_GELU_TANH : c->act != QINS_ACT_SILU)
    return qins_error_set(QINS_EUNSUPPORTED, "training: %s: activation %s has no backward here", m->path,
                          qins_act_name(c->act));
  if (c->rope_n_factors > 256)
    return qins_error_set(QINS_EUNSUPPORTED, "training: %d rope factors (at most 256)", c->rope_n_factors);
  qins_train_model *tm = qins_mem_calloc(owner(), 1, sizeof *tm);
  if (!tm) return QINS_ENOMEM;
  tm->be = be;
  tm->device = strncmp(be->name, "cpu", 3) != 0;
  tm->cfg = *c;
  for (int i = 0; i < c->rope_n_factors; i++) {
    tm->rope_short[i] = c->rope_short_factor ? c->rope_short_factor[i] : 1.0f;
    tm->rope_long[i] = c->rope_long_factor ? c->rope_long_factor[i] : 1.0f;
  }
  tm->cfg.rope_short_factor = tm->cfg.rope_long_factor = NULL; /* not owned: copied above */
  int rc = 0;
  tm->p = qins_mem_calloc(owner(), (size_t)m->n_weights, sizeof *tm->p);
  tm->t = qins_mem_calloc(owner(), (size_t)(4 * c->n_layers + 1), sizeof *tm->t);
  tm->L = qins_mem_calloc(owner(), (size_t)c->n_layers, sizeof *tm->L);
  if (!tm->p || !tm->t || !tm->L) {
    rc = QINS_ENOMEM;
    goto out;
  }
  for (int i = 0; i < m->n_weights; i++) {
    const qins_weight *w = &m->weights[i];
    tparam *p = &tm->p[tm->np++];
    snprintf(p->name, sizeof p->name, "%s", w->name);
    int64_t n = 1;
    for (int d = 0; d < w->ndim; d++) n *= w->shape[d];
    p->pub.name = p->name;
    p->pub.n = n;
    p->pub.ndim = w->ndim;
    memcpy(p->pub.shape, w->shape, sizeof p->pub.shape);
    p->pub.is_vector = w->ndim == 1;
    p->pub.w = qins_mem_alloc(owner(), (size_t)n * sizeof(float));
    p->pub.g = qins_mem_calloc(owner(), (size_t)n, sizeof(float));
    if (!p->pub.w || !p->pub.g) {
      rc = qins_error_set(QINS_ENOMEM, "training: no memory for %s", w->name);
      goto out;
    }
    for (int64_t k = 0; k < n; k++) {
      const uint16_t *h = w->data;
      p->pub.w[k] = w->dtype == QINS_DT_F32   ? ((const float *)w->data)[k]
                    : w->dtype == QINS_DT_F16 ? qins_f16_to_f32(h[k])
                                              : qins_bf16_to_f32(h[k]);
    }
    p->tidx = -1;
    if (!tm->device) {
      TRY(wrap(be, &p->w, p->name, p->pub.w, w->ndim, w->shape));
      TRY(wrap(be, &p->g, p->name, p->pub.g, w->ndim, w->shape));
    } else if (!(c->arch == QINS_ARCH_GPT2 && w->ndim == 2 && strncmp(w->name, "transformer.h.", 14) == 0)) {
      /* (GPT-2's Conv1D weights get their buffers as transposed working copies in bind_gpt2) */
      TRY(qins_tensor_init(&p->w, p->name, QINS_DT_F32, w->ndim, w->shape));
      TRY(qins_tensor_init(&p->g, p->name, QINS_DT_F32, w->ndim, w->shape));
      TRY(qins_tensor_alloc(be, &p->w));
      TRY(qins_tensor_alloc(be, &p->g));
    }
  }
  TRY(c->arch == QINS_ARCH_GPT2 ? bind_gpt2(tm) : bind_llama(tm));
  if (tm->device) {
    TRY(qins_train_model_push_weights(tm));
    TRY(qins_train_model_zero_grad(tm));
  }
  *out = tm;
  return 0;
out:
  qins_train_model_destroy(tm);
  return rc;
}

void qins_train_model_destroy(qins_train_model *tm) {
  if (!tm) return;
  if (tm->zeros.buf) qins_tensor_free(&tm->zeros);
  qins_train_part_destroy(tm->whole);
  for (int i = 0; i < tm->np; i++) {
    if (tm->p[i].tidx < 0) { /* else the working copy's buffers, freed below */
      qins_buf_free(tm->p[i].w.buf);
      qins_buf_free(tm->p[i].g.buf);
    }
    qins_mem_free(owner(), tm->p[i].pub.w);
    qins_mem_free(owner(), tm->p[i].pub.g);
  }
  for (int i = 0; i < tm->nt; i++) {
    qins_buf_free(tm->t[i].tw.buf);
    qins_buf_free(tm->t[i].tg.buf);
    qins_mem_free(owner(), tm->t[i].w);
    qins_mem_free(owner(), tm->t[i].g);
  }
  qins_mem_free(owner(), tm->p);
  qins_mem_free(owner(), tm->t);
  qins_mem_free(owner(), tm->L);
  qins_mem_free(owner(), tm);
}

int qins_train_model_count(const qins_train_model *tm) { return tm->np; }
const qins_train_param *qins_train_model_param(const qins_train_model *tm, int i) {
  return i >= 0 && i < tm->np ? &tm->p[i].pub : NULL;
}
/* Device gradients are zeroed by device-side copies from one zero buffer: uploading zeros cost a
 * host-to-device transfer of every gradient (500 MB for GPT-2 124M) and staging flushes per step. */
#define ZERO_CHUNK ((int64_t)1 << 20)
int qins_train_model_zero_grad(qins_train_model *tm) {
  int64_t most = 0;
  for (int i = 0; i < tm->np; i++) {
    memset(tm->p[i].pub.g, 0, (size_t)tm->p[i].pub.n * sizeof(float));
    if (tm->p[i].pub.n > most) most = tm->p[i].pub.n;
  }
  if (!tm->device) return 0;
  int rc = 0;
  if (!tm->zeros.buf) {
    int64_t zn = most < ZERO_CHUNK ? most : ZERO_CHUNK;
    float *zero = qins_mem_calloc(owner(), (size_t)zn, sizeof(float));
    if (!zero) return QINS_ENOMEM;
    rc = qins_tensor_init(&tm->zeros, "grad.zeros", QINS_DT_F32, 1, &zn);
    if (!rc) rc = qins_tensor_alloc(tm->be, &tm->zeros);
    if (!rc) rc = qins_tensor_write(&tm->zeros, zero);
    qins_mem_free(owner(), zero);
    if (rc) {
      if (tm->zeros.buf) qins_tensor_free(&tm->zeros);
      memset(&tm->zeros, 0, sizeof tm->zeros);
      return rc;
    }
  }
  int64_t zn = tm->zeros.shape[0];
  for (int i = 0; i < tm->np && !rc; i++) {
    const qins_tensor *g = &tm->p[i].g;
    int64_t n = qins_tensor_numel(g);
    for (int64_t off = 0; off < n && !rc; off += zn) {
      int64_t k = n - off < zn ? n - off : zn;
      qins_tensor src = tm->zeros, dst = *g;
      src.ndim = dst.ndim = 1;
      src.shape[0] = dst.shape[0] = k;
      dst.offset = g->offset + (size_t)off * sizeof(float);
      rc = qins_op_copy(tm->be, &src, &dst);
    }
  }
  return rc;
}

int qins_train_model_on_device(const qins_train_model *tm) { return tm->device; }

int qins_train_model_param_tensors(const qins_train_model *tm, int i, const qins_tensor **w, const qins_tensor **g) {
  if (i < 0 || i >= tm->np) return qins_error_set(QINS_EINVAL, "training: parameter %d of %d", i, tm->np);
  *w = &tm->p[i].w;
  *g = &tm->p[i].g;
  return 0;
}

int qins_train_model_push_param(qins_train_model *tm, int i) {
  if (i < 0 || i >= tm->np) return qins_error_set(QINS_EINVAL, "training: parameter %d of %d", i, tm->np);
  if (!tm->device) return 0;
  tparam *p = &tm->p[i];
  if (p->tidx >= 0) {
    transposed *t = &tm->t[p->tidx];
    transpose_into(t->w, p->pub.w, p->pub.shape[0], p->pub.shape[1], 0);
    return qins_tensor_write(&t->tw, t->w);
  }
  return qins_tensor_write(&p->w, p->pub.w);
}

int qins_train_model_push_weights(qins_train_model *tm) {
  int rc = 0;
  for (int i = 0; tm->device && i < tm->np && !rc; i++) rc = qins_train_model_push_param(tm, i);
  return rc;
}

int qins_train_model_pull_grad(qins_train_model *tm, int i) {
  if (!tm->device) return 0;
  if (i < 0 || i >= tm->np) return qins_error_set(QINS_EINVAL, "train model: no parameter %d", i);
  tparam *p = &tm->p[i];
  if (p->tidx >= 0) {
    transposed *t = &tm->t[p->tidx];
    int rc = qins_tensor_read(&t->tg, t->g);
    if (!rc) transpose_into(p->pub.g, t->g, p->pub.shape[1], p->pub.shape[0], 0);
    return rc;
  }
  return qins_tensor_read(&p->g, p->pub.g);
}

int qins_train_model_pull_grads(qins_train_model *tm) {
  int rc = 0;
  for (int i = 0; tm->device && i < tm->np && !rc; i++) rc = qins_train_model_pull_grad(tm, i);
  return rc;
}

int qins_train_model_pull_weights(qins_train_model *tm) {
  int rc = 0;
  for (int i = 0; tm->device && i < tm->np && !rc; i++) {
    tparam *p = &tm->p[i];
    if (p->tidx >= 0) {
      transposed *t = &tm->t[p->tidx];
      rc = qins_tensor_read(&t->tw, t->w);
      if (!rc) transpose_into(p->pub.w, t->w, p->pub.shape[1], p->pub.shape[0], 0);
    } else {
      rc = qins_tensor_read(&p->w, p->pub.w);
    }
  }
  return rc;
}

/* ---------------------------------------------------------------- activations */

/* The activations of one micro-batch: backend tensors freed together when its backward ends. */
typedef struct arena {
  qins_backend *be;
  qins_tensor **t;
  int n, cap;
} arena;

static int act_dt(arena *a, qins_tensor **out, const char *name, qins_dtype dt, int64_t s0, int64_t s1, int64_t s2) {
  if (a->n == a->cap) {
    int cap = a->cap ? 2 * a->cap : 64;
    qins_tensor **t = qins_mem_realloc(owner(), a->t, (size_t)cap * sizeof *t);
    if (!t) return QINS_ENOMEM;
    a->t = t;
    a->cap = cap;
  }
  qins_tensor *t = qins_mem_calloc(owner(), 1, sizeof *t);
  if (!t) return QINS_ENOMEM;
  int64_t shape[3] = {s0, s1, s2};
  int rc = qins_tensor_init(t, name, dt, s2 ? 3 : (s1 ? 2 : 1), shape);
  if (!rc) rc = qins_tensor_alloc(a->be, t);
  if (rc) {
    qins_mem_free(owner(), t);
    return rc;
  }
  a->t[a->n++] = t;
  *out = t;
  return 0;
}

static int act(arena *a, qins_tensor **out, const char *name, int64_t s0, int64_t s1, int64_t s2) {
  return act_dt(a, out, name, QINS_DT_F32, s0, s1, s2);
}

static void arena_free(arena *a) {
  for (int i = 0; i < a->n; i++) {
    qins_tensor_free(a->t[i]);
    qins_mem_free(owner(), a->t[i]);
  }
  a->n = 0;
}

/* Same bytes, another shape ([M,H,D] <-> [M,H*D]). */
static qins_tensor reshaped(const qins_tensor *t, int ndim, int64_t s0, int64_t s1, int64_t s2) {
  qins_tensor r = *t;
  r.ndim = ndim;
  r.shape[0] = s0;
  r.shape[1] = s1;
  r.shape[2] = s2;
  return r;
}

typedef struct saved {
  qins_tensor *x, *h1, *q, *k, *v, *att, *x2, *h2, *gate, *up, *a;
  qins_tensor *out, *dout; /* layer output (hidden state) and the hidden hook's gradient for it */
} saved;

/* ---------------------------------------------------------------- parts */

/* One micro-batch in flight through a part: what its backward needs. */
typedef struct slot {
  int busy, n;
  int32_t *ids;     /* copy of the micro-batch's ids (NULL when the caller gave none) */
  arena a;
  saved *S;         /* [l1 - l0] */
  qins_tensor *tids, *tpos, *ttgt, *freq;
  qins_tensor *x;   /* the rows leaving the layers: the part's output, or the final norm's input */
  qins_tensor *hf, *logits; /* with_head: normed rows and dlogits (after the forward) */
  qins_tensor *lossv;       /* per-row losses read at the end of the backward (defer_loss), else NULL */
} slot;

struct qins_train_part {
  qins_train_model *tm;
  int l0, l1, with_embed, with_head, max_mb;
  slot *slots;
  unsigned char *uses; /* [np] */
  /* qins_train_model_loss_grad without hooks: the loss is read after the backward is recorded, so
   * one submit (and host wait) per micro-batch instead of two on a device */
  int defer_loss;
  double deferred_loss;
};

/* Marks the parameter whose buffer t views (a GPT-2 working copy counts as its source). */
static void mark(qins_train_part *p, const qins_tensor *t) {
  qins_train_model *tm = p->tm;
  if (!t || !t->buf) return;
  for (int i = 0; i < tm->np; i++)
    if (tm->p[i].w.buf == t->buf) p->uses[i] = 1;
  for (int i = 0; i < tm->nt; i++)
    if (tm->t[i].tw.buf == t->buf) p->uses[tm->t[i].src] = 1;
}

int qins_train_part_create(qins_train_model *tm, int l0, int l1, int with_embed, int with_head, int max_mb,
                           qins_train_part **out) {
  *out = NULL;
  int L = tm->cfg.n_layers;
  if (l0 < 0 || l1 < l0 || l1 > L || (with_embed && l0 != 0) || (with_head && l1 != L) || max_mb < 1 ||
      (l0 == l1 && !with_embed && !with_head))
    return qins_error_set(QINS_EINVAL,
                          "training: part layers [%d,%d) embed %d head %d micro-batches %d invalid for a model of %d "
                          "layers (the embed part starts at 0, the head part ends at %d, at least 1 micro-batch)",
                          l0, l1, with_embed, with_head, max_mb, L, L);
  qins_train_part *p = qins_mem_calloc(owner(), 1, sizeof *p);
  if (!p) return QINS_ENOMEM;
  p->tm = tm;
  p->l0 = l0;
  p->l1 = l1;
  p->with_embed = !!with_embed;
  p->with_head = !!with_head;
  p->max_mb = max_mb;
  p->slots = qins_mem_calloc(owner(), (size_t)max_mb, sizeof *p->slots);
  p->uses = qins_mem_calloc(owner(), (size_t)tm->np + 1, 1);
  int ok = p->slots && p->uses;
  for (int i = 0; ok && i < max_mb; i++) {
    p->slots[i].a.be = tm->be;
    p->slots[i].S = qins_mem_calloc(owner(), (size_t)(l1 - l0) + 1, sizeof(saved));
    ok = p->slots[i].S != NULL;
  }
  if (!ok) {
    qins_train_part_destroy(p);
    return QINS_ENOMEM;
  }
  if (with_embed) {
    mark(p, tm->emb);
    mark(p, tm->pos_emb);
  }
  if (with_head) {
    mark(p, tm->normf);
    mark(p, tm->normfb);
    mark(p, tm->head);
  }
  for (int l = l0; l < l1; l++) {
    const layer_w *W = &tm->L[l];
    const qins_tensor *ts[] = {&W->wq, &W->wk, &W->wv, &W->wo, &W->wg, &W->wu, &W->wd, W->ln1, W->ln1b, W->ln2,
                               W->ln2b};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) mark(p, ts[k]);
    if (W->has_bqkv) {
      mark(p, &W->bq);
      mark(p, &W->bk);
      mark(p, &W->bv);
    }
    if (W->has_bo) mark(p, &W->bo);
    if (W->has_bmlp || tm->cfg.arch == QINS_ARCH_GPT2) {
      mark(p, &W->bg);
      mark(p, &W->bu);
      mark(p, &W->bd);
    }
  }
  *out = p;
  return 0;
}

static void slot_release(qins_train_part *p, slot *s) {
  arena_free(&s->a);
  qins_mem_free(owner(), s->ids);
  saved *S = s->S;
  arena a = s->a;
  memset(s, 0, sizeof *s);
  memset(S, 0, (size_t)(p->l1 - p->l0) * sizeof *S);
  s->S = S;
  s->a = a; /* keeps the grown table */
}

void qins_train_part_discard(qins_train_part *p, int mb) {
  if (!p || mb < 0 || mb >= p->max_mb || !p->slots[mb].busy) return;
  slot_release(p, &p->slots[mb]);
}

void qins_train_part_destroy(qins_train_part *p) {
  if (!p) return;
  for (int i = 0; p->slots && i < p->max_mb; i++) {
    if (p->slots[i].S) slot_release(p, &p->slots[i]);
    qins_mem_free(owner(), p->slots[i].a.t);
    qins_mem_free(owner(), p->slots[i].S);
  }
  qins_mem_free(owner(), p->slots);
  qins_mem_free(owner(), p->uses);
  qins_mem_free(owner(), p);
}

int qins_train_part_uses(const qins_train_part *p, int param_index) {
  return p && param_index >= 0 && param_index < p->tm->np ? p->uses[param_index] : 0;
}

/* GPT-2: refresh the [out,in] working copies of this part's layers from the [in,out] weights. */
static void part_transpose_weights(qins_train_part *p) {
  qins_train_model *tm = p->tm;
  if (tm->device) return; /* the device copies are refreshed by qins_train_model_push_weights */
  for (int i = 0; i < tm->nt; i++) {
    if (tm->t[i].layer < p->l0 || tm->t[i].layer >= p->l1) continue;
    const qins_train_param *src = &tm->p[tm->t[i].src].pub;
    transpose_into(tm->t[i].w, src->w, src->shape[0], src->shape[1], 0);
  }
}

/* GPT-2: add this part's working-copy gradients into the [in,out] parameter gradients and zero them
 * (they are zero between calls, so micro-batches in flight never see each other's terms). */
static void part_flush_grads(qins_train_part *p) {
  qins_train_model *tm = p->tm;
  if (tm->device) return; /* the working copy is the device gradient (qins_train_model_pull_grads) */
  for (int i = 0; i < tm->nt; i++) {
    if (tm->t[i].layer < p->l0 || tm->t[i].layer >= p->l1) continue;
    qins_train_param *dst = &tm->p[tm->t[i].src].pub;
    transpose_into(dst->g, tm->t[i].g, dst->shape[1], dst->shape[0], 1);
    memset(tm->t[i].g, 0, (size_t)dst->n * sizeof(float));
  }
}

static int part_slot(qins_train_part *p, int mb, int want_busy, slot **out) {
  if (mb < 0 || mb >= p->max_mb)
    return qins_error_set(QINS_EINVAL, "training: micro-batch slot %d outside [0,%d)", mb, p->max_mb);
  *out = &p->slots[mb];
  if ((*out)->busy != want_busy)
    return qins_error_set(QINS_EINVAL, want_busy ? "training: micro-batch slot %d has no forward to run backward on"
                                                 : "training: micro-batch slot %d is still in flight (no backward yet)",
                          mb);
  return 0;
}

int qins_train_part_forward(qins_train_part *p, int mb, const int32_t *ids, int n, const float *x_in, float *x_out,
                            double *loss) {
  qins_train_model *tm = p->tm;
  const qins_model_config *c = &tm->cfg;
  qins_backend *be = tm->be;
  int gpt2 = c->arch == QINS_ARCH_GPT2;
  slot *sl = NULL;
  int rc = part_slot(p, mb, 0, &sl);
  if (rc) return rc;
  if (n < 2 || n > c->max_seq_len)
    return qins_error_set(QINS_EINVAL, "training: sequence of %d ids (need 2..%d)", n, c->max_seq_len);
  if (!ids && (p->with_embed || p->with_head))
    return qins_error_set(QINS_EINVAL, "training: the part holding the embedding or the head needs the ids");
  if ((x_in == NULL) != p->with_embed || (x_out == NULL) != p->with_head)
    return qins_error_set(QINS_EINVAL, "training: part input rows must be given iff the part has no embedding (%d), "
                                       "output rows iff it has no head (%d)",
                          p->with_embed, p->with_head);
  for (int i = 0; ids && i < n; i++)
    if (ids[i] < 0 || ids[i] >= c->vocab_size)
      return qins_error_set(QINS_EINPUT, "training: id %d at position %d outside vocabulary of %d", ids[i], i,
                            c->vocab_size);
  int64_t D = c->dim, H = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim, V = c->vocab_size;
  if (gpt2) F = tm->L[0].wg.shape[0];
  float eps = c->norm_eps, scale = 1.0f / sqrtf((float)hd);
  sl->busy = 1;
  sl->n = n;
  arena *a = &sl->a;
  float *host = NULL;
  int32_t *host_i = NULL;
  if (ids) {
    sl->ids = qins_mem_alloc(owner(), (size_t)n * sizeof(int32_t));
    if (!sl->ids) TRY(QINS_ENOMEM);
    memcpy(sl->ids, ids, (size_t)n * sizeof(int32_t));
  }
  part_transpose_weights(p);

  host_i = qins_mem_alloc(owner(), (size_t)n * sizeof(int32_t));
  if (!host_i) TRY(QINS_ENOMEM);
  if (p->with_embed) {
    TRY(act_dt(a, &sl->tids, "ids", QINS_DT_I32, n, 0, 0));
    TRY(qins_tensor_write(sl->tids, ids));
  }
  if (p->l1 > p->l0 || (gpt2 && p->with_embed)) {
    TRY(act_dt(a, &sl->tpos, "positions", QINS_DT_I32, n, 0, 0));
    for (int i = 0; i < n; i++) host_i[i] = i;
    TRY(qins_tensor_write(sl->tpos, host_i));
  }
  if (p->with_head) {
    TRY(act_dt(a, &sl->ttgt, "targets", QINS_DT_I32, n, 0, 0));
    for (int i = 0; i < n; i++) host_i[i] = i + 1 < n ? ids[i + 1] : -1; /* the last position has no target */
    TRY(qins_tensor_write(sl->ttgt, host_i));
  }
  if (!gpt2 && p->l1 > p->l0) {
    /* inv_freq = 1 / (factor_i * theta^(2i/rot)); longrope picks the long factors past the
     * original context, as transformers does for the whole sequence */
    int half = c->rope_dim / 2;
    const float *fac = c->rope_scaling == QINS_ROPE_SCALING_LONGROPE
                           ? (n > c->original_max_seq_len ? tm->rope_long : tm->rope_short)
                           : NULL;
    float *f = qins_mem_alloc(owner(), (size_t)(half > 0 ? half : 1) * sizeof(float));
    if (!f) TRY(QINS_ENOMEM);
    for (int i = 0; i < half; i++)
      f[i] = (float)(1.0 / ((fac ? fac[i] : 1.0) * pow((double)c->rope_theta, 2.0 * i / c->rope_dim)));
    rc = act(a, &sl->freq, "inv_freq", half, 0, 0);
    if (!rc) rc = qins_tensor_write(sl->freq, f);
    qins_mem_free(owner(), f);
    if (rc) goto out;
  }

  /* ---- forward ---- */
  qins_tensor *x;
  TRY(act(a, &x, "x0", n, D, 0));
  if (p->with_embed) {
    TRY(qins_op_embed(be, tm->emb, sl->tids, x));
    if (gpt2) {
      qins_tensor *pe;
      TRY(act(a, &pe, "pos_emb", n, D, 0));
      TRY(qins_op_embed(be, tm->pos_emb, sl->tpos, pe));
      TRY(qins_op_add(be, x, pe, x));
    }
  } else {
    TRY(qins_tensor_write(x, x_in));
  }
  for (int l = p->l0; l < p->l1; l++) {
    layer_w *L = &tm->L[l];
    saved *s = &sl->S[l - p->l0];
    s->x = x;
    TRY(act(a, &s->h1, "h1", n, D, 0));
    TRY(gpt2 ? qins_op_layernorm(be, x, L->ln1, L->ln1b, eps, s->h1) : qins_op_rmsnorm(be, x, L->ln1, eps, s->h1));
    TRY(act(a, &s->q, "q", n, H, hd));
    TRY(act(a, &s->k, "k", n, Hkv, hd));
    TRY(act(a, &s->v, "v", n, Hkv, hd));
    qins_tensor q2 = reshaped(s->q, 2, n, H * hd, 0), k2 = reshaped(s->k, 2, n, Hkv * hd, 0),
                v2 = reshaped(s->v, 2, n, Hkv * hd, 0);
    TRY(qins_op_matmul(be, s->h1, &L->wq, L->has_bqkv ? &L->bq : NULL, &q2));
    TRY(qins_op_matmul(be, s->h1, &L->wk, L->has_bqkv ? &L->bk : NULL, &k2));
    TRY(qins_op_matmul(be, s->h1, &L->wv, L->has_bqkv ? &L->bv : NULL, &v2));
    if (!gpt2) {
      TRY(qins_op_rope(be, s->q, sl->tpos, sl->freq, c->rope_dim, c->rope_attn_factor, c->rope_mode, s->q));
      TRY(qins_op_rope(be, s->k, sl->tpos, sl->freq, c->rope_dim, c->rope_attn_factor, c->rope_mode, s->k));
    }
    TRY(act(a, &s->att, "att", n, H, hd));
    TRY(qins_op_attention(be, s->q, s->k, s->v, 0, scale, s->att));
    qins_tensor att2 = reshaped(s->att, 2, n, H * hd, 0);
    TRY(act(a, &s->x2, "x2", n, D, 0));
    TRY(qins_op_matmul(be, &att2, &L->wo, L->has_bo ? &L->bo : NULL, s->x2));
    TRY(qins_op_add(be, s->x2, x, s->x2));
    TRY(act(a, &s->h2, "h2", n, D, 0));
    TRY(gpt2 ? qins_op_layernorm(be, s->x2, L->ln2, L->ln2b, eps, s->h2) : qins_op_rmsnorm(be, s->x2, L->ln2, eps, s->h2));
    TRY(act(a, &s->gate, "gate", n, F, 0));
    TRY(act(a, &s->a, "act", n, F, 0));
    TRY(qins_op_matmul(be, s->h2, &L->wg, L->has_bmlp ? &L->bg : NULL, s->gate));
    if (gpt2) {
      TRY(qins_op_gelu_tanh(be, s->gate, s->a));
    } else {
      TRY(act(a, &s->up, "up", n, F, 0));
      TRY(qins_op_matmul(be, s->h2, &L->wu, L->has_bmlp ? &L->bu : NULL, s->up));
      TRY(qins_op_silu_mul(be, s->gate, s->up, s->a));
    }
    TRY(act(a, &x, "x", n, D, 0));
    TRY(qins_op_matmul(be, s->a, &L->wd, (gpt2 || L->has_bmlp) ? &L->bd : NULL, x));
    TRY(qins_op_add(be, x, s->x2, x));
    s->out = x;
  }
  sl->x = x;
  double total = 0;
  if (p->with_head) {
    qins_tensor *lossv;
    TRY(act(a, &sl->hf, "h_final", n, D, 0));
    TRY(gpt2 ? qins_op_layernorm(be, x, tm->normf, tm->normfb, eps, sl->hf) : qins_op_rmsnorm(be, x, tm->normf, eps, sl->hf));
    TRY(act(a, &sl->logits, "logits", n, V, 0));
    TRY(qins_op_matmul(be, sl->hf, tm->head, NULL, sl->logits));
    TRY(act(a, &lossv, "loss", n, 0, 0));
    TRY(qins_op_cross_entropy(be, sl->logits, sl->ttgt, lossv, sl->logits, 0.0f)); /* dlogits of the mean, in place */
    sl->lossv = NULL;
    if (p->defer_loss && !tm->hook && !tm->hhook) {
      sl->lossv = lossv; /* read with the backward's batch (qins_train_part_backward) */
    } else {
      host = qins_mem_alloc(owner(), (size_t)n * sizeof(float));
      if (!host) TRY(QINS_ENOMEM);
      TRY(qins_tensor_read(lossv, host));
      double sum = 0;
      for (int i = 0; i < n - 1; i++) sum += host[i];
      total = sum / (n - 1);
      qins_mem_free(owner(), host);
      host = NULL;
    }
    if (tm->hook) { /* through host memory: the logits may live on a device */
      host = qins_mem_alloc(owner(), (size_t)(n * V) * sizeof(float));
      if (!host) TRY(QINS_ENOMEM);
      TRY(qins_tensor_read(sl->logits, host));
      TRY(tm->hook(tm->hook_user, ids, n, (int)V, host, &total));
      TRY(qins_tensor_write(sl->logits, host));
      qins_mem_free(owner(), host);
      host = NULL;
    }
  }
  if (tm->hhook && p->l1 > p->l0) {
    host = qins_mem_alloc(owner(), (size_t)(2 * n * D) * sizeof(float));
    if (!host) TRY(QINS_ENOMEM);
    float *h = host, *dh = host + n * D;
    for (int l = p->l0; l < p->l1; l++) {
      saved *s = &sl->S[l - p->l0];
      TRY(act(a, &s->dout, "dhidden", n, D, 0));
      memset(dh, 0, (size_t)(n * D) * sizeof(float));
      TRY(qins_tensor_read(s->out, h));
      TRY(tm->hhook(tm->hhook_user, ids, n, l, (int)D, h, dh, &total));
      TRY(qins_tensor_write(s->dout, dh));
    }
  }
  if (!p->with_head) TRY(qins_tensor_read(x, x_out));
  if (loss) *loss = total;
out:
  qins_mem_free(owner(), host);
  qins_mem_free(owner(), host_i);
  if (rc) slot_release(p, sl);
  return rc;
}

int qins_train_part_backward(qins_train_part *p, int mb, const float *dx_out, float *dx_in) {
  qins_train_model *tm = p->tm;
  const qins_model_config *c = &tm->cfg;
  qins_backend *be = tm->be;
  int gpt2 = c->arch == QINS_ARCH_GPT2;
  slot *sl = NULL;
  int rc = part_slot(p, mb, 1, &sl);
  if (rc) return rc;
  if ((dx_out == NULL) != p->with_head || (dx_in == NULL) != p->with_embed) {
    rc = qins_error_set(QINS_EINVAL, "training: output gradient rows must be given iff the part has no head (%d), "
                                     "input gradient rows iff it has no embedding (%d)",
                        p->with_head, p->with_embed);
    goto out;
  }
  int n = sl->n;
  int64_t D = c->dim, H = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim;
  if (gpt2) F = tm->L[0].wg.shape[0];
  float eps = c->norm_eps, scale = 1.0f / sqrtf((float)hd);
  arena *a = &sl->a;
  int layers = p->l1 > p->l0;
  qins_tensor *dx, *dh, *dtmp, *dq = NULL, *dk = NULL, *dv = NULL, *datt = NULL, *dgate = NULL, *dup = NULL, *da = NULL;
  TRY(act(a, &dx, "dx", n, D, 0));
  TRY(act(a, &dh, "dh", n, D, 0));
  TRY(act(a, &dtmp, "dtmp", n, D, 0));
  if (layers) {
    TRY(act(a, &dq, "dq", n, H, hd));
    TRY(act(a, &dk, "dk", n, Hkv, hd));
    TRY(act(a, &dv, "dv", n, Hkv, hd));
    TRY(act(a, &datt, "datt", n, H, hd));
    TRY(act(a, &dgate, "dgate", n, F, 0));
    TRY(act(a, &da, "dact", n, F, 0));
    if (!gpt2) TRY(act(a, &dup, "dup", n, F, 0));
  }
  if (p->with_head) {
    TRY(qins_op_matmul_backward(be, sl->logits, sl->hf, tm->head, dh, tm->dhead, NULL));
    TRY(gpt2 ? qins_op_layernorm_backward(be, dh, sl->x, tm->normf, eps, dx, tm->dnormf, tm->dnormfb)
             : qins_op_rmsnorm_backward(be, dh, sl->x, tm->normf, eps, dx, tm->dnormf));
  } else {
    TRY(qins_tensor_write(dx, dx_out));
  }
  for (int l = p->l1 - 1; l >= p->l0; l--) {
    layer_w *L = &tm->L[l];
    saved *s = &sl->S[l - p->l0];
    if (s->dout) TRY(qins_op_add(be, dx, s->dout, dx)); /* hidden-state term on the layer output */
    /* MLP branch: dx is the gradient of the layer output x3 = x2 + mlp(norm(x2)) */
    TRY(qins_op_matmul_backward(be, dx, s->a, &L->wd, da, &L->gd, (gpt2 || L->has_bmlp) ? &L->dbd : NULL));
    if (gpt2) {
      TRY(qins_op_gelu_tanh_backward(be, s->gate, da, dgate));
      TRY(qins_op_matmul_backward(be, dgate, s->h2, &L->wg, dh, &L->gg, &L->dbg));
    } else {
      TRY(qins_op_silu_mul_backward(be, s->gate, s->up, da, dgate, dup));
      TRY(qins_op_matmul_backward(be, dgate, s->h2, &L->wg, dh, &L->gg, L->has_bmlp ? &L->dbg : NULL));
      TRY(qins_op_matmul_backward(be, dup, s->h2, &L->wu, dtmp, &L->gu, L->has_bmlp ? &L->dbu : NULL));
      TRY(qins_op_add(be, dh, dtmp, dh));
    }
    TRY(gpt2 ? qins_op_layernorm_backward(be, dh, s->x2, L->ln2, eps, dtmp, L->dln2, L->dln2b)
             : qins_op_rmsnorm_backward(be, dh, s->x2, L->ln2, eps, dtmp, L->dln2));
    TRY(qins_op_add(be, dx, dtmp, dx)); /* now the gradient of x2 */
    /* attention branch */
    qins_tensor att2 = reshaped(s->att, 2, n, H * hd, 0), datt2 = reshaped(datt, 2, n, H * hd, 0);
    TRY(qins_op_matmul_backward(be, dx, &att2, &L->wo, &datt2, &L->go, L->has_bo ? &L->dbo : NULL));
    TRY(qins_op_attention_backward(be, s->q, s->k, s->v, 0, scale, datt, dq, dk, dv));
    if (!gpt2) {
      TRY(qins_op_rope_backward(be, dq, sl->tpos, sl->freq, c->rope_dim, c->rope_attn_factor, c->rope_mode, dq));
      TRY(qins_op_rope_backward(be, dk, sl->tpos, sl->freq, c->rope_dim, c->rope_attn_factor, c->rope_mode, dk));
    }
    qins_tensor dq2 = reshaped(dq, 2, n, H * hd, 0), dk2 = reshaped(dk, 2, n, Hkv * hd, 0),
                dv2 = reshaped(dv, 2, n, Hkv * hd, 0);
    TRY(qins_op_matmul_backward(be, &dq2, s->h1, &L->wq, dh, &L->gq, L->has_bqkv ? &L->dbq : NULL));
    TRY(qins_op_matmul_backward(be, &dk2, s->h1, &L->wk, dtmp, &L->gk, L->has_bqkv ? &L->dbk : NULL));
    TRY(qins_op_add(be, dh, dtmp, dh));
    TRY(qins_op_matmul_backward(be, &dv2, s->h1, &L->wv, dtmp, &L->gv, L->has_bqkv ? &L->dbv : NULL));
    TRY(qins_op_add(be, dh, dtmp, dh));
    TRY(gpt2 ? qins_op_layernorm_backward(be, dh, s->x, L->ln1, eps, dtmp, L->dln1, L->dln1b)
             : qins_op_rmsnorm_backward(be, dh, s->x, L->ln1, eps, dtmp, L->dln1));
    TRY(qins_op_add(be, dx, dtmp, dx)); /* the gradient of the layer input */
  }
  if (p->with_embed) {
    TRY(qins_op_embed_backward(be, sl->tids, dx, tm->demb));
    if (gpt2) TRY(qins_op_embed_backward(be, sl->tpos, dx, tm->dpos_emb));
  } else {
    TRY(qins_tensor_read(dx, dx_in));
  }
  if (sl->lossv) { /* deferred: this read submits the whole micro-batch at once */
    int rows = sl->n;
    float *lh = qins_mem_alloc(owner(), (size_t)rows * sizeof(float));
    if (!lh) TRY(QINS_ENOMEM);
    rc = qins_tensor_read(sl->lossv, lh);
    double sum = 0;
    for (int i = 0; i < rows - 1; i++) sum += lh[i];
    p->deferred_loss = sum / (rows - 1);
    qins_mem_free(owner(), lh);
    sl->lossv = NULL;
    if (rc) goto out;
  }
  TRY(qins_backend_sync(be));
  part_flush_grads(p);
out:
  if (rc && !tm->device) /* drop partial working-copy gradients so that the next call starts from zero */
    for (int i = 0; i < tm->nt; i++)
      if (tm->t[i].layer >= p->l0 && tm->t[i].layer < p->l1)
        memset(tm->t[i].g, 0, (size_t)tm->p[tm->t[i].src].pub.n * sizeof(float));
  slot_release(p, sl);
  return rc;
}

/* The whole model is one part: one forward/backward code path for every caller. */
int qins_train_model_loss_grad(qins_train_model *tm, const int32_t *ids, int n, double *loss) {
  if (!tm->whole) {
    int rc = qins_train_part_create(tm, 0, tm->cfg.n_layers, 1, 1, 1, &tm->whole);
    if (rc) return rc;
  }
  tm->whole->defer_loss = !tm->hook && !tm->hhook;
  tm->whole->deferred_loss = 0;
  int rc = qins_train_part_forward(tm->whole, 0, ids, n, NULL, NULL, loss);
  if (!rc) rc = qins_train_part_backward(tm->whole, 0, NULL, NULL);
  if (!rc && tm->whole->defer_loss && loss) *loss += tm->whole->deferred_loss; /* forward set the rest (0) */
  return rc;
}
