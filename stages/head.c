/* Stage type `head`: hidden rows -> the last row's logits (final norm + LM head). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/model_shared.h"

static const qins_opt_spec opts[] = {
    {"rows", QINS_OPT_STRING, "last", 1, 0, "last: the last row's logits f32[1,vocab]; all: every row's f32[T,vocab] (evaluation)"},
    {"policy", QINS_OPT_NODE, "", 1, 0, "this branch's coverage policy: a map (as the root policy:), a policy YAML path, or none"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  qins_stage_model *m;
  int rc = qins_stage_model_get(ctx, QINS_NEED_LLM, &m);
  st->priv = m;
  const char *rows = qins_stage_opt_string(st, "rows");
  if (!rc && strcmp(rows, "last") != 0 && strcmp(rows, "all") != 0) {
    char w[256];
    return qins_error_set(QINS_EINPUT, "%s: stage '%s': options.rows: '%s': expected last or all",
                          qins_cfg_where(qins_cfg_get(ctx->options, "rows"), w, sizeof w), ctx->stage_name, rows);
  }
  return rc;
}

static int ports(const qins_cfg *o, const struct qins_pipeline *pl, char *in, char *out) {
  (void)pl;
  const qins_cfg *r = qins_cfg_get(o, "rows");
  snprintf(in, QINS_PORT_MAX, "f32[T,dim]");
  snprintf(out, QINS_PORT_MAX, "%s", r && r->type == QINS_CFG_SCALAR && !strcmp(r->value, "all") ? "f32[T,vocab]" : "f32[1,vocab]");
  return 0;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  qins_stage_model *m = st->priv;
  const qins_model_config *c = qins_llm_config(m->llm);
  if (in->dtype != QINS_DT_F32 || in->ndim != 2 || in->shape[1] != c->dim || in->shape[0] < 1)
    return qins_error_set(QINS_EINPUT, "head %s: expected f32[T,%d] hidden rows", st->ctx.stage_name, c->dim);
  int64_t T = in->shape[0];
  if (strcmp(qins_stage_opt_string(st, "rows"), "all") == 0) {
    /* every row through the head (norm + LM head are per row): logits of positions pos..pos+T-1 */
    int64_t shape[2] = {T, c->vocab_size};
    float *logits = qins_msg_output(out, in, QINS_DT_F32, 2, shape);
    if (!logits) return QINS_ENOMEM;
    float *row = malloc(sizeof(float) * (size_t)c->dim); /* the input may be shared: never normed in place */
    if (!row) return qins_error_set(QINS_ENOMEM, "out of memory");
    for (int64_t t = 0; t < T; t++) {
      memcpy(row, (const float *)in->data + (size_t)t * (size_t)c->dim, sizeof(float) * (size_t)c->dim);
      int rc = qins_llm_forward_range(m->llm, NULL, NULL, row, 1, in->pos + (int)t, c->n_layers, c->n_layers,
                                      logits + (size_t)t * (size_t)c->vocab_size, NULL);
      if (rc) {
        free(row);
        return qins_error_wrap(rc, "head %s, request %llu: ", st->ctx.stage_name, (unsigned long long)in->req);
      }
    }
    free(row);
    out->pos = in->pos;
    return 1;
  }
  int64_t shape[2] = {1, c->vocab_size};
  float *logits = qins_msg_output(out, in, QINS_DT_F32, 2, shape);
  if (!logits) return QINS_ENOMEM;
  float *last = (float *)in->data + (size_t)(T - 1) * (size_t)c->dim;
  int pos = in->pos + (int)T - 1;
  int rc = qins_llm_forward_range(m->llm, NULL, NULL, last, 1, pos, c->n_layers, c->n_layers, logits, NULL);
  if (rc) return qins_error_wrap(rc, "head %s, request %llu: ", st->ctx.stage_name, (unsigned long long)in->req);
  out->pos = pos;
  return 1;
}

const qins_stage_type qins_stage_head = {
    .name = "head",
    .summary = "hidden rows -> logits of the last row (final norm + LM head), or of every row (rows: all)",
    .options = opts,
    .ports = ports,
    .in_port = "f32[T,dim]",
    .out_port = "f32[1,vocab]",
    .init = init,
    .forward = fwd,
};
