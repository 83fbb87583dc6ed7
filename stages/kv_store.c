/* Stage type `kv_store`: the KV cache settings of the model stages of its worker (cache length,
 * V format f32 or qins8, reuse of finished requests' caches). The caches stay in the qins_block
 * stages; this stage is where their policy is written down (stages/model_shared.c gives the
 * worker's runtime the V format, so every cache made there takes it). It sits on the hidden-row
 * path (the graph needs every stage on an edge) and passes rows through unchanged. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/pipeline.h"
#include "stages/model_shared.h"

static const qins_opt_spec opts[] = {
    {"max_seq", QINS_OPT_INT, "0", 0, 1 << 24, "KV cache length of this worker's model stages (0: pipeline/model)"},
    {"v_format", QINS_OPT_STRING, "f32", 1, 0, "V cache format: f32 or qins8 (codes + one alpha per token and KV head)"},
    {"v_alpha", QINS_OPT_STRING, "mse", 1, 0, "qins8 V cache: how alpha is chosen per token and KV head (mse, std:C, absmax, fixed:V)"},
    {"pool", QINS_OPT_INT, "64", 0, 4096, "caches of finished requests each qins_block keeps for reuse (0: free)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  char w[256];
  const char *vf = qins_stage_opt_string(st, "v_format");
  const qins_cfg *c = qins_cfg_get(ctx->options, "v_format");
  if (strcmp(vf, "f32") != 0 && strcmp(vf, "qins8") != 0)
    return qins_error_set(QINS_EINPUT, "%s: kv_store %s: v_format '%s': expected f32 or qins8",
                          qins_cfg_where(c, w, sizeof w), ctx->stage_name, vf);
  qins_alpha_spec spec;
  const char *va = qins_stage_opt_string(st, "v_alpha");
  if (qins_alpha_spec_parse(va, &spec)) {
    const qins_cfg *a = qins_cfg_get(ctx->options, "v_alpha");
    return qins_error_set(QINS_EINPUT, "%s: kv_store %s: v_alpha '%s': expected mse, std:C, absmax or fixed:V",
                          qins_cfg_where(a, w, sizeof w), ctx->stage_name, va);
  }
  const qins_pipeline *pl = ctx->pipeline;
  int me = pl ? qins_pipeline_stage_index(pl, ctx->stage_name) : -1;
  if (me >= 0) {
    const qins_pl_worker *wk = &pl->workers[pl->stages[me].worker];
    for (int i = 0; i < wk->n_stages; i++) {
      const qins_pl_stage *o = &pl->stages[wk->stages[i]];
      if (wk->stages[i] != me && strcmp(o->type->name, "kv_store") == 0)
        return qins_error_set(QINS_EINPUT, "%s: kv_store %s: worker '%s' already has kv_store '%s' (one per worker)",
                              qins_cfg_where(pl->stages[me].node, w, sizeof w), ctx->stage_name, wk->name, o->name);
    }
  }
  /* the runtime (and so the cache length) is made here if no model stage made it yet */
  qins_stage_model *m;
  return qins_stage_model_get(ctx, QINS_NEED_LLM, &m);
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  (void)st;
  void *o = qins_msg_output(out, in, in->dtype, in->ndim, in->shape);
  if (!o && in->nbytes) return QINS_ENOMEM;
  if (in->nbytes) memcpy(o, in->data, in->nbytes);
  return 1;
}

const qins_stage_type qins_stage_kv_store = {
    .name = "kv_store",
    .summary = "KV cache settings (max_seq, v_format, v_alpha, pool) of its worker's model stages; passes rows through",
    .options = opts,
    .in_port = "f32[T,dim]",
    .out_port = "f32[T,dim]",
    .init = init,
    .forward = fwd,
};
