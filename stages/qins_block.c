/* Stage type `qins_block`: a range of transformer layers on hidden rows, with one KV cache per
 * request in flight (the weights are placed once per worker and shared). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/model_shared.h"

static const qins_opt_spec opts[] = {
    {"layers", QINS_OPT_STRING, "all", 1, 0, "layers to run: 'all', 'A:B' (A..B-1) or 'A' (one layer)"},
    {"emit", QINS_OPT_STRING, "hidden", 1, 0, "hidden: the last layer's rows f32[T,dim]; layers: every layer's rows f32[L,T,dim] (for hidden_cosine)"},
    {"policy", QINS_OPT_NODE, "", 1, 0, "this branch's coverage policy: a map (as the root policy:), a policy YAML path, or none"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct block {
  qins_stage_model *m;
  int l0, l1;
  int emit_layers; /* emit: layers */
  qins_reqstate *reqs;     /* (req, attempt) -> qins_llm_kv */
  qins_llm_kv **pool;      /* caches of finished requests, reused */
  int n_pool, cap_pool;
} block;

static void kv_release(void *p, void *u) {
  block *b = u;
  if (b->n_pool < b->cap_pool)
    b->pool[b->n_pool++] = p;
  else
    qins_llm_kv_destroy(p);
}

/* emit: layers changes the output port to every layer's rows */
static int ports(const qins_cfg *o, const struct qins_pipeline *pl, char *in, char *out) {
  (void)pl;
  const qins_cfg *e = qins_cfg_get(o, "emit");
  snprintf(in, QINS_PORT_MAX, "f32[T,dim]");
  snprintf(out, QINS_PORT_MAX, "%s", e && e->type == QINS_CFG_SCALAR && !strcmp(e->value, "layers") ? "f32[L,T,dim]" : "f32[T,dim]");
  return 0;
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  block *b = calloc(1, sizeof *b);
  if (!b) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = b;
  int rc = qins_stage_model_get(ctx, QINS_NEED_LLM, &b->m);
  if (rc) return rc;
  int L = b->m->model->cfg.n_layers;
  const char *spec = qins_stage_opt_string(st, "layers");
  if (strcmp(spec, "all") == 0) {
    b->l0 = 0;
    b->l1 = L;
  } else {
    int a, z, k = 0;
    if (sscanf(spec, "%d:%d%n", &a, &z, &k) == 2 && spec[k] == 0) {
      b->l0 = a;
      b->l1 = z;
    } else if (sscanf(spec, "%d%n", &a, &k) == 1 && spec[k] == 0) {
      b->l0 = a;
      b->l1 = a + 1;
    } else {
      return qins_error_set(QINS_EINPUT, "stage '%s': options.layers: '%s': expected 'all', 'A:B' or 'A'", ctx->stage_name, spec);
    }
    if (b->l0 < 0 || b->l1 > L || b->l0 >= b->l1)
      return qins_error_set(QINS_EINPUT, "stage '%s': options.layers: '%s' is outside the model's layers 0:%d",
                            ctx->stage_name, spec, L);
  }
  const char *emit = qins_stage_opt_string(st, "emit");
  if (strcmp(emit, "layers") == 0)
    b->emit_layers = 1;
  else if (strcmp(emit, "hidden") != 0) {
    char w[256];
    return qins_error_set(QINS_EINPUT, "%s: stage '%s': options.emit: '%s': expected hidden or layers",
                          qins_cfg_where(qins_cfg_get(ctx->options, "emit"), w, sizeof w), ctx->stage_name, emit);
  }
  int kv_seq;
  qins_stage_kv_config(ctx, &kv_seq, &b->cap_pool); /* a kv_store stage on this worker sets the pool */
  b->pool = calloc((size_t)b->cap_pool + 1, sizeof *b->pool);
  if (!b->pool) return qins_error_set(QINS_ENOMEM, "out of memory");
  char labels[200];
  snprintf(labels, sizeof labels, "stage=\"%s\",worker=\"%s\"", ctx->stage_name, ctx->worker_name);
  qins_metric_set(qins_metric_gauge("qins_block_layers", "layers a qins_block stage runs", labels), b->l1 - b->l0);
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  block *b = st->priv;
  qins_reqstate_forget(&b->reqs, req, below, kv_release, b);
}

static void fini(qins_stage *st) {
  block *b = st->priv;
  if (!b) return;
  b->cap_pool = 0; /* destroy instead of pooling */
  qins_reqstate_clear(&b->reqs, kv_release, b);
  for (int i = 0; i < b->n_pool; i++) qins_llm_kv_destroy(b->pool[i]);
  free(b->pool);
  free(b);
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  block *b = st->priv;
  const qins_model_config *c = qins_llm_config(b->m->llm);
  if (in->dtype != QINS_DT_F32 || in->ndim != 2 || in->shape[1] != c->dim)
    return qins_error_set(QINS_EINPUT, "qins_block %s: expected f32[T,%d] hidden rows", st->ctx.stage_name, c->dim);
  qins_llm_kv *kv = qins_reqstate_find(b->reqs, in->req, in->attempt);
  if (!kv) {
    if (in->step > 0) return 0; /* an attempt this worker has forgotten (replayed): drop */
    int rc = b->n_pool ? 0 : qins_llm_kv_create(b->m->llm, b->l0, b->l1, &kv);
    if (b->n_pool) kv = b->pool[--b->n_pool];
    if (rc) return rc;
    if ((rc = qins_reqstate_add(&b->reqs, in->req, in->attempt, kv))) {
      qins_llm_kv_destroy(kv);
      return rc;
    }
  }
  if (b->emit_layers) { /* layer by layer, each layer's rows kept: f32[L,T,dim] */
    int64_t shape[3] = {b->l1 - b->l0, in->shape[0], in->shape[1]};
    float *y = qins_msg_output(out, in, QINS_DT_F32, 3, shape);
    if (!y) return QINS_ENOMEM;
    const float *prev = in->data;
    for (int l = b->l0; l < b->l1; l++) {
      float *x = y + (size_t)(l - b->l0) * (size_t)in->shape[0] * (size_t)in->shape[1];
      memcpy(x, prev, in->nbytes);
      int rc = qins_llm_forward_range(b->m->llm, kv, NULL, x, (int)in->shape[0], in->pos, l, l + 1, NULL, NULL);
      if (rc)
        return qins_error_wrap(rc, "qins_block %s (layer %d), request %llu: ", st->ctx.stage_name, l,
                               (unsigned long long)in->req);
      prev = x;
    }
    return 1;
  }
  float *x = qins_msg_output(out, in, QINS_DT_F32, 2, in->shape);
  if (!x) return QINS_ENOMEM;
  memcpy(x, in->data, in->nbytes);
  int rc = qins_llm_forward_range(b->m->llm, kv, NULL, x, (int)in->shape[0], in->pos, b->l0, b->l1, NULL, NULL);
  if (rc)
    return qins_error_wrap(rc, "qins_block %s (layers %d:%d), request %llu: ", st->ctx.stage_name, b->l0, b->l1,
                           (unsigned long long)in->req);
  return 1;
}

static const char *const metrics[] = {"qins_block_layers", NULL};

const qins_stage_type qins_stage_qins_block = {
    .name = "qins_block",
    .summary = "a range of transformer layers with a KV cache per request",
    .options = opts,
    .in_port = "f32[T,dim]",
    .out_port = "f32[T,dim]",
    .ports = ports,
    .metrics = metrics,
    .init = init,
    .forward = fwd,
    .forget = forget,
    .fini = fini,
};
