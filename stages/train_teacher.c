/* Stage type `train_teacher`: the frozen teacher of a distillation run through the dataflow engine.
 * Sits between train_data and the embed part (on any worker): each training micro-batch gets the
 * teacher's logits of its ids appended (the head part's loss becomes CE + lambda_KL * KL, as in
 * `qins train`); every other frame (STEP, held-out windows, SAVE, RELOAD, and the REDUCE going back)
 * passes through unchanged. The teacher has no parameters to train, so it never steps. */
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/llm/llm.h"
#include "core/model/model.h"
#include "stages/train_flow.h"

static const qins_opt_spec opts[] = {
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct tteach {
  tf_settings s;
  qins_backend *be;
  qins_model *m;
  qins_llm *llm;
  float *logits; /* [T+1, V] */
  int N, V;
} tteach;

static void fini(qins_stage *st) {
  tteach *t = st->priv;
  if (!t) return;
  qins_llm_destroy(t->llm);
  qins_model_close(t->m);
  if (t->be) qins_backend_destroy(t->be);
  free(t->logits);
  tf_settings_free(&t->s);
  free(t);
}

static int init_impl(qins_stage *st, const qins_stage_ctx *ctx) {
  tteach *t = calloc(1, sizeof *t);
  if (!t) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = t;
  int rc = tf_settings_load(ctx->pipeline, &t->s);
  if (rc) return rc;
  const qins_train_setup_info *I = &t->s.info;
  if (!I->teacher || !I->teacher[0])
    return qins_error_set(QINS_EINPUT, "stage '%s': the train config %s has no distill.teacher", ctx->stage_name, t->s.config);
  /* the edges: train_data -> this -> the embed part */
  const qins_pipeline *pl = ctx->pipeline;
  int me = qins_pipeline_stage_index(pl, ctx->stage_name);
  for (int e = 0; e < pl->n_edges; e++) {
    const qins_pl_edge *ed = &pl->edges[e];
    if (ed->loop) continue;
    if (ed->to == me && strcmp(pl->stages[ed->from].type->name, "train_data") != 0)
      return qins_error_set(QINS_EINPUT, "stage '%s' (train_teacher): its input must come from the train_data stage, not '%s'",
                            ctx->stage_name, pl->stages[ed->from].name);
    if (ed->from == me && strcmp(pl->stages[ed->to].type->name, "train_part") != 0)
      return qins_error_set(QINS_EINPUT, "stage '%s' (train_teacher): its output must go to the embed part, not '%s'",
                            ctx->stage_name, pl->stages[ed->to].name);
  }
  t->N = I->seq + 1;
  qins_llm_options lo = {t->N, 0}; /* as `qins train` creates its teacher */
  if ((rc = qins_model_open(I->teacher, &t->m)) || (rc = qins_backend_create(I->backend, &t->be)) ||
      (rc = qins_llm_create(t->m, t->be, &lo, &t->llm)))
    return qins_error_wrap(rc, "stage '%s': distill.teacher %s: ", ctx->stage_name, I->teacher);
  t->V = qins_llm_vocab(t->llm);
  t->logits = malloc((size_t)t->N * (size_t)t->V * sizeof *t->logits);
  if (!t->logits) return qins_error_set(QINS_ENOMEM, "stage '%s': no memory for teacher logits", ctx->stage_name);
  return 0;
}

/* A failed init leaves nothing behind (the worker calls fini only for stages that started). */
static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  int rc = init_impl(st, ctx);
  if (rc) {
    fini(st);
    st->priv = NULL;
  }
  return rc;
}

/* The frame as it came (forward or back). */
static int pass(const qins_msg *in, const tf_frame *f, qins_msg *out) {
  int32_t *ids;
  double *v;
  float *x;
  int rc = tf_frame_out(out, in, &f->h, &ids, &v, &x);
  if (rc) return rc;
  if (f->h.n_ids) memcpy(ids, f->ids, (size_t)f->h.n_ids * sizeof *ids);
  if (f->h.n_f64) memcpy(v, f->f64, (size_t)f->h.n_f64 * sizeof *v);
  if (f->h.n_f32) memcpy(x, f->f32, (size_t)f->h.n_f32 * sizeof *x);
  return 1;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  tteach *t = st->priv;
  tf_frame f;
  int rc = tf_frame_parse(in, st->ctx.stage_name, &f);
  if (rc) return rc;
  if (f.h.kind != TF_MB || (f.h.flags & TF_HELD)) return pass(in, &f, out); /* held-out loss: plain CE */
  if (f.h.n_ids != t->N || f.h.n_f32 != 0)
    return qins_error_set(QINS_EINPUT, "stage '%s': micro-batch with %d ids and %lld values (want %d ids from train_data)",
                          st->ctx.stage_name, f.h.n_ids, (long long)f.h.n_f32, t->N);
  qins_llm_reset(t->llm);
  if ((rc = qins_llm_forward(t->llm, f.ids, t->N, 1, t->logits, NULL)))
    return qins_error_wrap(rc, "stage '%s', step %lld, micro-batch %d: ", st->ctx.stage_name, (long long)f.h.step, f.h.mb);
  tf_hdr h = f.h;
  h.n_f32 = (int64_t)t->N * t->V;
  h.reserved = (uint32_t)t->V;
  int32_t *ids;
  float *x;
  if ((rc = tf_frame_out(out, in, &h, &ids, NULL, &x))) return rc;
  memcpy(ids, f.ids, (size_t)t->N * sizeof *ids);
  memcpy(x, t->logits, (size_t)h.n_f32 * sizeof *x);
  return 1;
}

/* The REDUCE on its way to train_data. */
static int bwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  tf_frame f;
  int rc = tf_frame_parse(in, st->ctx.stage_name, &f);
  return rc ? rc : pass(in, &f, out);
}

static const char *const metrics[] = {NULL};

const qins_stage_type qins_stage_train_teacher = {
    .name = "train_teacher",
    .summary = "distillation: the frozen teacher's logits of each training micro-batch, for the head part's KL term",
    .options = opts,
    .in_port = "u8[F]",
    .out_port = "u8[F]",
    .metrics = metrics,
    .init = init,
    .forward = fwd,
    .backward = bwd,
    .fini = fini,
};
