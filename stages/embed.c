/* Stage type `embed`: token ids -> hidden rows f32[T,dim] (token embedding, plus learned positions
 * for GPT-2). Keeps each request's ids so that a Phi-3 longrope sequence crossing
 * original_max_position_embeddings is re-sent whole from position 0, as the one-process runtime
 * recomputes its cache (docs/models.md, "longrope"). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/model_shared.h"

static const qins_opt_spec opts[] = {
    {"policy", QINS_OPT_NODE, "", 1, 0, "this branch's coverage policy: a map (as the root policy:), a policy YAML path, or none"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct hist {
  int32_t *ids;
  int n, cap;
} hist;

typedef struct embed {
  qins_stage_model *m;
  qins_reqstate *reqs;
  int longrope;
} embed;

static void hist_free(void *p, void *u) {
  (void)u;
  hist *h = p;
  free(h->ids);
  free(h);
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  embed *e = calloc(1, sizeof *e);
  if (!e) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = e;
  int rc = qins_stage_model_get(ctx, QINS_NEED_LLM, &e->m);
  if (rc) return rc;
  e->longrope = e->m->model->cfg.rope_scaling == QINS_ROPE_SCALING_LONGROPE;
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  embed *e = st->priv;
  qins_reqstate_forget(&e->reqs, req, below, hist_free, NULL);
  qins_reqids_forget(qins_reqids_get(&st->ctx, 0), req, below);
}

static void fini(qins_stage *st) {
  embed *e = st->priv;
  if (!e) return;
  qins_reqstate_clear(&e->reqs, hist_free, NULL);
  free(e);
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  embed *e = st->priv;
  if (in->dtype != QINS_DT_I32 || in->ndim != 1 || in->shape[0] < 1)
    return qins_error_set(QINS_EINPUT, "embed %s: expected i32[T] ids", st->ctx.stage_name);
  const int32_t *ids = in->data;
  int n = (int)in->shape[0], pos0 = in->pos;
  const qins_model_config *c = qins_llm_config(e->m->llm);
  hist *h = NULL;
  /* a sample stage with a repetition penalty on this worker wants every id the model is fed */
  qins_reqids *rid = qins_reqids_get(&st->ctx, 0);
  if (rid && (in->step == 0 || qins_reqids_find(rid, in->req, in->attempt))) {
    int rc = qins_reqids_append(rid, in->req, in->attempt, ids, n);
    if (rc) return rc;
  }
  if (e->longrope) {
    h = qins_reqstate_find(e->reqs, in->req, in->attempt);
    if (!h) {
      if (in->step > 0) return 0; /* forgotten attempt */
      h = calloc(1, sizeof *h);
      if (!h || qins_reqstate_add(&e->reqs, in->req, in->attempt, h)) {
        free(h);
        return qins_error_set(QINS_ENOMEM, "out of memory");
      }
    }
    if (h->n + n > h->cap) {
      int cap = (h->n + n) * 2;
      int32_t *p = realloc(h->ids, sizeof(int32_t) * (size_t)cap);
      if (!p) return qins_error_set(QINS_ENOMEM, "out of memory");
      h->ids = p;
      h->cap = cap;
    }
    memcpy(h->ids + h->n, ids, sizeof(int32_t) * (size_t)n);
    h->n += n;
    if (pos0 > 0 && pos0 <= c->original_max_seq_len && pos0 + n > c->original_max_seq_len) {
      ids = h->ids; /* crossing: everything again, from position 0, with the long factors */
      n = h->n;
      pos0 = 0;
    }
  }
  int64_t shape[2] = {n, c->dim};
  float *x = qins_msg_output(out, in, QINS_DT_F32, 2, shape);
  if (!x) return QINS_ENOMEM;
  int rc = qins_llm_forward_range(e->m->llm, NULL, ids, x, n, pos0, 0, 0, NULL, NULL);
  if (rc) return qins_error_wrap(rc, "embed %s, request %llu: ", st->ctx.stage_name, (unsigned long long)in->req);
  out->pos = pos0;
  out->last_id = ids[n - 1];
  return 1;
}

const qins_stage_type qins_stage_embed = {
    .name = "embed",
    .summary = "token ids -> hidden rows (token + learned position embeddings)",
    .options = opts,
    .in_port = "i32[T]",
    .out_port = "f32[T,dim]",
    .init = init,
    .forward = fwd,
    .forget = forget,
    .fini = fini,
};
