/* Stage type `head`: hidden rows -> the last row's logits (final norm + LM head). */
#include "core/error.h"
#include "stages/model_shared.h"

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  qins_stage_model *m;
  int rc = qins_stage_model_get(ctx, QINS_NEED_LLM, &m);
  st->priv = m;
  return rc;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  qins_stage_model *m = st->priv;
  const qins_model_config *c = qins_llm_config(m->llm);
  if (in->dtype != QINS_DT_F32 || in->ndim != 2 || in->shape[1] != c->dim || in->shape[0] < 1)
    return qins_error_set(QINS_EINPUT, "head %s: expected f32[T,%d] hidden rows", st->ctx.stage_name, c->dim);
  int64_t shape[2] = {1, c->vocab_size};
  float *logits = qins_msg_output(out, in, QINS_DT_F32, 2, shape);
  if (!logits) return QINS_ENOMEM;
  int64_t T = in->shape[0];
  float *last = (float *)in->data + (size_t)(T - 1) * (size_t)c->dim;
  int pos = in->pos + (int)T - 1;
  int rc = qins_llm_forward_range(m->llm, NULL, NULL, last, 1, pos, c->n_layers, c->n_layers, logits, NULL);
  if (rc) return qins_error_wrap(rc, "head %s, request %llu: ", st->ctx.stage_name, (unsigned long long)in->req);
  out->pos = pos;
  return 1;
}

const qins_stage_type qins_stage_head = {
    .name = "head",
    .summary = "hidden rows -> logits of the last row (final norm + LM head)",
    .in_port = "f32[T,dim]",
    .out_port = "f32[1,vocab]",
    .init = init,
    .forward = fwd,
};
