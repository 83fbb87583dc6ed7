/* Worker-wide model resources for the model stages, and per-request state lists. */
#include "stages/model_shared.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/llm/policy.h"
#include "core/pipeline.h"

static void destroy_shared(void *p) {
  qins_stage_model *m = p;
  if (!m) return;
  qins_llm_destroy(m->llm);
  qins_policy_state_free(m->policy);
  if (m->be) qins_backend_destroy(m->be);
  qins_tokenizer_close(m->tok);
  qins_model_close(m->model);
  free(m);
}

void qins_stage_kv_config(const qins_stage_ctx *ctx, int *max_seq, int *pool) {
  *max_seq = 0;
  *pool = 64;
  const qins_pipeline *pl = ctx->pipeline;
  int me = pl ? qins_pipeline_stage_index(pl, ctx->stage_name) : -1;
  if (me < 0) return;
  /* read from the pipeline, not from the kv_store stage's state: the settings then hold
   * whatever order the worker's stages are initialised in */
  const qins_pl_worker *w = &pl->workers[pl->stages[me].worker];
  for (int i = 0; i < w->n_stages; i++) {
    const qins_pl_stage *s = &pl->stages[w->stages[i]];
    if (strcmp(s->type->name, "kv_store") != 0) continue;
    const qins_cfg *c = qins_cfg_get(s->options, "max_seq");
    if (c && c->type == QINS_CFG_SCALAR) *max_seq = (int)strtol(c->value, NULL, 0);
    c = qins_cfg_get(s->options, "pool");
    if (c && c->type == QINS_CFG_SCALAR) *pool = (int)strtol(c->value, NULL, 0);
  }
}

/* v_format / v_alpha of the worker's kv_store (checked by the stage: f32 or qins8). */
static int kv_vformat(const qins_stage_ctx *ctx, qins_llm *llm) {
  const qins_pipeline *pl = ctx->pipeline;
  int me = pl ? qins_pipeline_stage_index(pl, ctx->stage_name) : -1;
  if (me < 0) return 0;
  const qins_pl_worker *w = &pl->workers[pl->stages[me].worker];
  for (int i = 0; i < w->n_stages; i++) {
    const qins_pl_stage *s = &pl->stages[w->stages[i]];
    if (strcmp(s->type->name, "kv_store") != 0) continue;
    const qins_cfg *f = qins_cfg_get(s->options, "v_format"), *a = qins_cfg_get(s->options, "v_alpha");
    if (!f || f->type != QINS_CFG_SCALAR || strcmp(f->value, "qins8") != 0) return 0;
    qins_alpha_spec spec = {QINS_ALPHA_MSE, 0};
    char wh[256];
    if (a && (a->type != QINS_CFG_SCALAR || qins_alpha_spec_parse(a->value, &spec)))
      return qins_error_set(QINS_EINPUT, "%s: kv_store %s: v_alpha '%s': expected mse, std:C, absmax or fixed:V",
                            qins_cfg_where(a, wh, sizeof wh), s->name, a->type == QINS_CFG_SCALAR ? a->value : "?");
    for (int l = 0; l < qins_llm_config(llm)->n_layers; l++) {
      int rc = qins_llm_set_vcache(llm, l, QINS_DT_QINS8, spec);
      if (rc) return rc;
    }
  }
  return 0;
}

int qins_stage_model_get(const qins_stage_ctx *ctx, int need, qins_stage_model **out) {
  char key[320];
  qins_cfg *bn, *pfile;
  int rc = qins_stage_branch_policy(ctx, key, sizeof key, &bn, &pfile); /* the stage's branch */
  if (rc) return rc;
  rc = qins_stage_model_get_key(ctx, need, key, bn, out);
  qins_cfg_free(pfile);
  return rc;
}

int qins_stage_model_get_key(const qins_stage_ctx *ctx, int need, const char *key, qins_cfg *bn,
                             qins_stage_model **out) {
  qins_stage_model *m = ctx->shared_get ? ctx->shared_get(ctx, key) : NULL;
  if (!m) {
    m = calloc(1, sizeof *m);
    if (!m) return qins_error_set(QINS_ENOMEM, "out of memory");
    if (!ctx->shared_put || ctx->shared_put(ctx, key, m, destroy_shared)) {
      free(m);
      return qins_error_set(QINS_EINTERNAL, "stage '%s': no worker to hold the model", ctx->stage_name);
    }
  }
  int rc;
  if ((need & (QINS_NEED_LLM | QINS_NEED_TOK)) && !m->model) {
    if (!ctx->model_path)
      return qins_error_set(QINS_EINPUT, "stage '%s': the pipeline has no 'model' key", ctx->stage_name);
    if ((rc = qins_model_open(ctx->model_path, &m->model))) return rc;
  }
  if ((need & QINS_NEED_LLM) && !m->llm) {
    if (!m->be && (rc = qins_backend_create(ctx->backend_name ? ctx->backend_name : "cpu", &m->be))) return rc;
    int kv_seq, kv_pool;
    qins_stage_kv_config(ctx, &kv_seq, &kv_pool);
    qins_llm_options opt = {kv_seq > 0 ? kv_seq : ctx->pipeline ? ctx->pipeline->max_seq : 0, 0};
    if ((rc = qins_llm_create(m->model, m->be, &opt, &m->llm))) return rc;
    /* a kv_store's v_format: qins8 gives every layer a qins8 V cache; a policy's v_cache (applied
     * next) may then set a layer's alpha mode; the qins_block caches take the format at creation */
    if ((rc = kv_vformat(ctx, m->llm))) return rc;
    /* the coverage policy of the stage's branch (stages/branch.c: its own policy:, else the
     * pipeline's root one; docs/gates.md): weights re-encoded once per worker and kept quantized,
     * every backend has the fused quantized matmul */
    if (bn) {
      qins_policy pol;
      if ((rc = qins_policy_parse(bn, m->model->cfg.n_layers, &pol))) return rc;
      if ((rc = qins_policy_apply(m->llm, m->be, &pol, 0, &m->policy))) return rc;
    }
  }
  if ((need & QINS_NEED_TOK) && !m->tok) {
    if (!ctx->tokenizer_path)
      return qins_error_set(QINS_EINPUT, "stage '%s': the pipeline has no 'tokenizer' key", ctx->stage_name);
    size_t l = strlen(ctx->tokenizer_path);
    /* a llama2.c tokenizer.bin does not record its vocabulary size: the model's says how many */
    if (l > 4 && strcmp(ctx->tokenizer_path + l - 4, ".bin") == 0 && m->model && strcmp(m->model->format, "llama2c") == 0)
      rc = qins_tokenizer_open_llama2c(ctx->tokenizer_path, m->model->cfg.vocab_size, &m->tok);
    else
      rc = qins_tokenizer_open(ctx->tokenizer_path, &m->tok);
    if (rc) return rc;
  }
  *out = m;
  return 0;
}

void *qins_reqstate_find(qins_reqstate *list, uint64_t req, uint32_t attempt) {
  for (; list; list = list->next)
    if (list->req == req && list->attempt == attempt) return list->data;
  return NULL;
}

void *qins_reqstate_get(qins_reqstate **list, uint64_t req, uint32_t attempt, size_t size) {
  void *d = qins_reqstate_find(*list, req, attempt);
  if (d) return d;
  d = calloc(1, size);
  if (!d || qins_reqstate_add(list, req, attempt, d)) {
    free(d);
    qins_error_set(QINS_ENOMEM, "out of memory");
    return NULL;
  }
  return d;
}

int qins_reqstate_add(qins_reqstate **list, uint64_t req, uint32_t attempt, void *data) {
  qins_reqstate *s = malloc(sizeof *s);
  if (!s) return qins_error_set(QINS_ENOMEM, "out of memory");
  s->req = req;
  s->attempt = attempt;
  s->data = data;
  s->next = *list;
  *list = s;
  return 0;
}

void qins_reqstate_forget(qins_reqstate **list, uint64_t req, uint32_t below, void (*destroy)(void *, void *),
                          void *user) {
  for (qins_reqstate **pp = list; *pp;) {
    qins_reqstate *s = *pp;
    if (s->req == req && s->attempt < below) {
      *pp = s->next;
      if (destroy) destroy(s->data, user);
      free(s);
    } else {
      pp = &s->next;
    }
  }
}

void qins_reqstate_clear(qins_reqstate **list, void (*destroy)(void *, void *), void *user) {
  while (*list) {
    qins_reqstate *s = *list;
    *list = s->next;
    if (destroy) destroy(s->data, user);
    free(s);
  }
}

static void idvec_free(void *p, void *u) {
  (void)u;
  qins_idvec *v = p;
  if (v) free(v->ids);
  free(v);
}

static void reqids_destroy(void *p) {
  qins_reqids *r = p;
  if (!r) return;
  qins_reqstate_clear(&r->list, idvec_free, NULL);
  free(r);
}

qins_reqids *qins_reqids_get(const qins_stage_ctx *ctx, int create) {
  qins_reqids *r = ctx->shared_get ? ctx->shared_get(ctx, "reqids") : NULL;
  if (r || !create) return r;
  r = calloc(1, sizeof *r);
  if (!r) {
    qins_error_set(QINS_ENOMEM, "out of memory");
    return NULL;
  }
  if (!ctx->shared_put || ctx->shared_put(ctx, "reqids", r, reqids_destroy)) {
    free(r);
    qins_error_set(QINS_EINTERNAL, "stage '%s': no worker to hold the request ids", ctx->stage_name);
    return NULL;
  }
  return r;
}

int qins_reqids_append(qins_reqids *r, uint64_t req, uint32_t attempt, const int32_t *ids, int n) {
  qins_idvec *v = qins_reqstate_find(r->list, req, attempt);
  if (!v) {
    v = calloc(1, sizeof *v);
    if (!v || qins_reqstate_add(&r->list, req, attempt, v)) {
      free(v);
      return qins_error_set(QINS_ENOMEM, "out of memory");
    }
  }
  if (v->n + n > v->cap) {
    int cap = (v->n + n) * 2 + 16;
    int32_t *p = realloc(v->ids, sizeof(int32_t) * (size_t)cap);
    if (!p) return qins_error_set(QINS_ENOMEM, "out of memory");
    v->ids = p;
    v->cap = cap;
  }
  memcpy(v->ids + v->n, ids, sizeof(int32_t) * (size_t)n);
  v->n += n;
  return 0;
}

const qins_idvec *qins_reqids_find(qins_reqids *r, uint64_t req, uint32_t attempt) {
  return r ? qins_reqstate_find(r->list, req, attempt) : NULL;
}

void qins_reqids_forget(qins_reqids *r, uint64_t req, uint32_t below) {
  if (r) qins_reqstate_forget(&r->list, req, below, idvec_free, NULL);
}
