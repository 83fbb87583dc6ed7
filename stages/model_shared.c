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
    /* the pipeline's coverage policy (docs/gates.md): weights re-encoded once per worker */
    qins_cfg *pn = ctx->pipeline && ctx->pipeline->root ? qins_cfg_get(ctx->pipeline->root, "policy") : NULL;
    pn = bn; /* the stage's branch (stages/branch.c): its own policy:, else the root one above */
    if (pn) {
      qins_policy pol;
      if ((rc = qins_policy_parse(pn, m->model->cfg.n_layers, &pol))) return rc;
      for (int l = 0; l < pol.n_layers; l++)
        if (pol.p[l][QINS_PATH_VCACHE].format != QINS_DT_F32 && !pol.p[l][QINS_PATH_VCACHE].fallback) {
          char w[256];
          return qins_error_set(QINS_EUNSUPPORTED,
                                "%s: policy: a QINS V cache is not available to pipeline stages yet (their per-request "
                                "caches are f32); use qins gate / the single runtime, or set v_cache: f32",
                                qins_cfg_where(pn, w, sizeof w));
        }
      if ((rc = qins_policy_apply(m->llm, m->be, &pol, strncmp(m->be->name, "cpu", 3) != 0, &m->policy))) return rc;
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
