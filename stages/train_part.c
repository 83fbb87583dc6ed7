/* Stage type `train_part`: a range of a model's layers (with the embedding and/or the head) being
 * trained. Forward: micro-batch rows in, rows out (the head part computes the loss and turns the
 * micro-batch around at once: its input gradient goes back over the reverse edge). Backward: the
 * gradient at its output in, the gradient at its input out. After a step's last backward the
 * REDUCE collects every part's per-parameter sums of squares (and the gradients of a tied
 * embedding for its owner); the STEP that comes back forward carries the reduced norm and loss,
 * and each part's optimizer updates the parameters it owns, where they live. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/log.h"
#include "core/model/model.h"
#include "core/train/model_grad.h"
#include "stages/train_flow.h"

static const qins_opt_spec opts[] = {
    {"layers", QINS_OPT_STRING, "0:0", 1, 0, "layers A..B-1 of the model as 'A:B' (or 'A'); '0:0' none"},
    {"embed", QINS_OPT_BOOL, "false", 1, 0, "this part holds the token embedding (the first part)"},
    {"head", QINS_OPT_BOOL, "false", 1, 0, "this part holds the final norm, LM head and loss (the last part)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct tpart {
  tf_settings s;
  tf_part_spec *specs;
  int n_specs, me;
  qins_backend *be;
  qins_train_model *tm;
  qins_train_part *part;
  qins_optim *o;
  int P, M, N, D; /* parameters, micro-batches per step, ids per row, model width */
  unsigned char *uses, *own, *exported; /* exported: owned here and read by a later part */
  int *local;                           /* model parameter -> optimizer index (-1: not ours) */
  int64_t step;                         /* steps done */
  int n_bwd;                            /* backwards done in this step */
  double loss_sum;
  int pending_reduce;                   /* head part: the REDUCE follows the last GRAD */
  double held_sum;                      /* head part: held-out losses of this evaluation, in window order */
  int pending_ack;                      /* head part: the last chunk's ack follows the result */
  int distill, V;                       /* distillation (config distill:), vocabulary */
  const float *tlog;                    /* head part: the teacher's logits of the micro-batch in flight */
  double ce_sum, kl_sum;                /* head part: the step's CE and KL sums (distillation) */
  char model_dir[1024];                 /* the start model's folder (its config.json goes into checkpoints) */
} tpart;

static int ports(const qins_cfg *options, const qins_pipeline *pl, char *in, char *out) {
  (void)options;
  (void)in;
  (void)out;
  int n = 0;
  const qins_cfg *ss = qins_cfg_get(pl->root, "stages");
  for (int k = 0; ss && ss->type == QINS_CFG_SEQ && k < ss->n; k++) {
    const qins_cfg *t = qins_cfg_get(ss->items[k], "type");
    if (t && t->type == QINS_CFG_SCALAR && !strcmp(t->value, "train_data")) n++;
  }
  if (n != 1) return qins_error_set(QINS_EINPUT, "a train_part stage needs exactly one train_data stage in the pipeline (found %d)", n);
  return 0; /* the layout is checked by train_data's ports() */
}

/* reload: NULL = the pipeline's resume option; else the checkpoint folder to start from ('' = the
 * start model), as a replayed run's RELOAD names it. */
static int init_impl(qins_stage *st, const qins_stage_ctx *ctx, const char *reload) {
  tpart *t = calloc(1, sizeof *t);
  if (!t) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = t;
  int rc = tf_settings_load(ctx->pipeline, &t->s);
  if (!rc && reload) snprintf(t->s.resume, sizeof t->s.resume, "%s", reload);
  if (rc || (rc = tf_part_specs(ctx->pipeline->root, &t->specs, &t->n_specs))) return rc;
  t->me = -1;
  for (int i = 0; i < t->n_specs; i++)
    if (!strcmp(t->specs[i].name, ctx->stage_name)) t->me = i;
  if (t->me < 0) return qins_error_set(QINS_EINTERNAL, "stage '%s': not among the train parts", ctx->stage_name);
  /* the edges must follow the chain: train_data (or the previous part) -> this -> the next part
   * (or train_log after the head part) */
  {
    const qins_pipeline *pl = ctx->pipeline;
    int me = qins_pipeline_stage_index(pl, ctx->stage_name), n_in = 0, n_out = 0;
    const char *want_in = t->me ? t->specs[t->me - 1].name : NULL, *want_out = t->me + 1 < t->n_specs ? t->specs[t->me + 1].name : NULL;
    for (int e = 0; e < pl->n_edges; e++) {
      const qins_pl_edge *ed = &pl->edges[e];
      if (ed->loop) continue;
      if (ed->to == me) {
        const qins_pl_stage *f = &pl->stages[ed->from];
        n_in++;
        if (want_in ? strcmp(f->name, want_in) != 0
                    : strcmp(f->type->name, "train_data") != 0 && strcmp(f->type->name, "train_teacher") != 0)
          return qins_error_set(QINS_EINPUT, "stage '%s' (layers %d:%d): its input must come from %s%s%s, not '%s'",
                                ctx->stage_name, t->specs[t->me].l0, t->specs[t->me].l1, want_in ? "the part before it, '" : "the train_data (or train_teacher) stage",
                                want_in ? want_in : "", want_in ? "'" : "", f->name);
      }
      if (ed->from == me) {
        const qins_pl_stage *f = &pl->stages[ed->to];
        n_out++;
        if (want_out ? strcmp(f->name, want_out) != 0 : strcmp(f->type->name, "train_log") != 0)
          return qins_error_set(QINS_EINPUT, "stage '%s' (layers %d:%d): its output must go to %s%s%s, not '%s'",
                                ctx->stage_name, t->specs[t->me].l0, t->specs[t->me].l1, want_out ? "the part after it, '" : "the train_log stage",
                                want_out ? want_out : "", want_out ? "'" : "", f->name);
      }
    }
    if (n_in != 1 || n_out != 1)
      return qins_error_set(QINS_EINPUT, "stage '%s': a train part needs one input and one output edge (has %d and %d)",
                            ctx->stage_name, n_in, n_out);
  }
  const qins_train_setup_info *I = &t->s.info;
  const tf_part_spec *sp = &t->specs[t->me];
  t->M = I->batch * I->grad_accum;
  t->N = I->seq + 1;
  /* every part starts from the same model, written from the seed into its own folder */
  char dir[700], path[1024];
  snprintf(dir, sizeof dir, "%s/flow-init/%s", I->out_dir, ctx->stage_name);
  if ((rc = qins_mkdirs(dir)) || (rc = qins_train_setup_model(t->s.setup, dir, path, sizeof path))) return rc;
  qins_model *m = NULL;
  if ((rc = qins_model_open(path, &m))) return rc;
  snprintf(t->model_dir, sizeof t->model_dir, "%s", path);
  t->D = (int)m->cfg.dim;
  t->V = (int)m->cfg.vocab_size;
  t->distill = I->teacher && I->teacher[0];
  if ((rc = qins_backend_create(I->backend, &t->be)) == 0) rc = qins_train_model_create(m, t->be, &t->tm);
  int maxpos = m->cfg.max_seq_len;
  qins_model_close(m);
  if (rc) return rc;
  if (t->N > maxpos)
    return qins_error_set(QINS_EINPUT, "stage '%s': run.seq %d + 1 exceeds the model's %d positions", ctx->stage_name,
                          I->seq, maxpos);
  if ((rc = qins_train_part_create(t->tm, sp->l0, sp->l1, sp->embed, sp->head, t->M, &t->part))) return rc;
  t->P = qins_train_model_count(t->tm);
  t->uses = calloc((size_t)t->P + 1, 1);
  t->own = calloc((size_t)t->P + 1, 1);
  t->exported = calloc((size_t)t->P + 1, 1);
  t->local = calloc((size_t)t->P + 1, sizeof *t->local);
  if (!t->uses || !t->own || !t->exported || !t->local) return qins_error_set(QINS_ENOMEM, "out of memory");
  for (int i = 0; i < t->P; i++) t->uses[i] = t->own[i] = (unsigned char)qins_train_part_uses(t->part, i);
  /* a parameter read by several parts (a tied embedding / lm_head) belongs to the first of them */
  for (int j = 0; j < t->n_specs; j++) {
    if (j == t->me) continue;
    qins_train_part *q = NULL;
    if ((rc = qins_train_part_create(t->tm, t->specs[j].l0, t->specs[j].l1, t->specs[j].embed, t->specs[j].head, 1, &q)))
      return rc;
    for (int i = 0; i < t->P; i++)
      if (t->uses[i] && qins_train_part_uses(q, i)) {
        if (j < t->me) t->own[i] = 0;
        else t->exported[i] = 1;
      }
    qins_train_part_destroy(q);
  }
  for (int i = 0; i < t->P; i++) t->exported[i] &= t->own[i];
  if ((rc = qins_train_setup_optim(t->s.setup, t->tm, t->own, &t->o))) return rc;
  for (int i = 0, k = 0; i < t->P; i++) t->local[i] = t->own[i] ? k++ : -1;
  if (t->s.resume[0]) {
    /* all weights from every part's file (the shared ones come from their owner), then ours */
    for (int j = 0; j < t->n_specs && !rc; j++) {
      snprintf(path, sizeof path, "%s/part-%s.safetensors", t->s.resume, t->specs[j].name);
      rc = tf_part_load_weights(path, t->tm);
    }
    snprintf(path, sizeof path, "%s/part-%s.safetensors", t->s.resume, ctx->stage_name);
    if (!rc) rc = tf_part_load_optim(path, t->o, I->qins, &t->step);
    if (rc || (rc = qins_train_model_push_weights(t->tm))) return rc;
  }
  return qins_train_model_zero_grad(t->tm);
}

static void fini(qins_stage *st) {
  tpart *t = st->priv;
  if (!t) return;
  qins_optim_destroy(t->o);
  qins_train_part_destroy(t->part);
  qins_train_model_destroy(t->tm);
  if (t->be) qins_backend_destroy(t->be);
  free(t->uses);
  free(t->own);
  free(t->exported);
  free(t->local);
  free(t->specs);
  tf_settings_free(&t->s);
  free(t);
}

/* A failed init leaves nothing behind (the worker calls fini only for stages that started). */
static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  int rc = init_impl(st, ctx, NULL);
  if (rc) {
    fini(st);
    st->priv = NULL;
  }
  return rc;
}

/* REDUCE going back: the incoming sums (or zeros), shared gradients for owners further back,
 * this part's sums of squares and its own shared gradients. */
static int make_reduce(qins_stage *st, tpart *t, const qins_msg *in, const tf_frame *f, qins_msg *out) {
  int64_t n_ids = 0, n_f32 = 0;
  int rc = qins_train_model_pull_grads(t->tm); /* device backends: the step's gradients to the host */
  if (rc) return rc;
  for (int k = 0, off = 0; f && k < f->h.n_ids; k++) {
    int i = f->ids[k];
    int64_t n = qins_train_model_param(t->tm, i)->n;
    if (t->own[i]) { /* summed into the owner before its step */
      float *g = qins_train_model_param(t->tm, i)->g;
      for (int64_t e = 0; e < n; e++) g[e] += f->f32[off + e];
    } else {
      n_ids++;
      n_f32 += n;
    }
    off += (int)n;
  }
  for (int i = 0; i < t->P; i++)
    if (t->uses[i] && !t->own[i]) n_ids++, n_f32 += qins_train_model_param(t->tm, i)->n;
  tf_hdr h = {.kind = TF_REDUCE, .step = t->step, .n_mb = t->M, .n_ids = (int32_t)n_ids, .n_f64 = t->P + TF_R_COUNT,
              .n_f32 = n_f32};
  int32_t *ids;
  double *v;
  float *x;
  if ((rc = tf_frame_out(out, in, &h, &ids, &v, &x))) return rc;
  out->flags |= QINS_MSG_GRAD;
  if (f) memcpy(v, f->f64, (size_t)(t->P + TF_R_COUNT) * sizeof *v);
  else memset(v, 0, (size_t)(t->P + TF_R_COUNT) * sizeof *v);
  for (int i = 0; i < t->P; i++)
    if (t->own[i]) v[i] = qins_optim_param_sq(t->o, t->local[i]);
  v[t->P + TF_R_LOSS] += t->loss_sum;
  v[t->P + TF_R_CE] += t->ce_sum;
  v[t->P + TF_R_KL] += t->kl_sum;
  int64_t k = 0, off = 0;
  for (int q = 0, src = 0; f && q < f->h.n_ids; q++) {
    int i = f->ids[q];
    int64_t n = qins_train_model_param(t->tm, i)->n;
    if (!t->own[i]) {
      ids[k++] = i;
      memcpy(x + off, f->f32 + src, (size_t)n * sizeof(float));
      off += n;
    }
    src += (int)n;
  }
  for (int i = 0; i < t->P; i++)
    if (t->uses[i] && !t->own[i]) {
      const qins_train_param *p = qins_train_model_param(t->tm, i);
      ids[k++] = i;
      memcpy(x + off, p->g, (size_t)p->n * sizeof(float));
      off += p->n;
    }
  (void)st;
  return 1;
}

static int check_frame(qins_stage *st, tpart *t, const tf_frame *f, int want_dim) {
  if (f->h.step != t->step)
    return qins_error_set(QINS_EINPUT, "stage '%s': frame of step %lld while at step %lld", st->ctx.stage_name,
                          (long long)f->h.step, (long long)t->step);
  if (f->h.kind == TF_MB && (f->h.flags & TF_HELD)) { /* held-out window mb of n_mb */
    if (f->h.mb < 0 || f->h.mb >= f->h.n_mb || f->h.n_ids != t->N ||
        (want_dim && (f->h.dim != t->D || f->h.n_f32 != (int64_t)t->N * t->D)))
      return qins_error_set(QINS_EINPUT, "stage '%s': held-out frame %d of %d with %d ids, width %d (want %d ids of width %d)",
                            st->ctx.stage_name, f->h.mb, f->h.n_mb, f->h.n_ids, f->h.dim, t->N, t->D);
  } else if (f->h.kind == TF_MB || f->h.kind == TF_GRAD) {
    int64_t tl = f->h.kind == TF_MB ? (int64_t)t->N * f->h.reserved : 0; /* the teacher's logits follow the rows */
    if (f->h.kind == TF_MB && (int)f->h.reserved != (t->distill ? t->V : 0))
      return qins_error_set(QINS_EINPUT, "stage '%s': micro-batch frame with %u teacher logit columns (want %d: %s)",
                            st->ctx.stage_name, f->h.reserved, t->distill ? t->V : 0,
                            t->distill ? "a train_teacher stage must precede the parts" : "the config has no distill:");
    if (f->h.mb < 0 || f->h.mb >= t->M || (f->h.kind == TF_MB && f->h.n_ids != t->N) ||
        f->h.n_f32 != (want_dim ? (int64_t)t->N * t->D : 0) + tl || (want_dim && f->h.dim != t->D))
      return qins_error_set(QINS_EINPUT, "stage '%s': micro-batch frame %d of %d with %d ids, width %d (want %d ids of width %d)",
                            st->ctx.stage_name, f->h.mb, t->M, f->h.n_ids, f->h.dim, t->N, t->D);
  }
  return 0;
}

/* This part's file of checkpoint ckpt-<steps done> (and the start model's config.json from the
 * embed part, so the folder is a model folder). */
static int save_ckpt(qins_stage *st, tpart *t) {
  char dir[700], path[800];
  int rc;
  snprintf(dir, sizeof dir, "%s/ckpt-%06lld", t->s.info.out_dir, (long long)t->step);
  snprintf(path, sizeof path, "%s/part-%s.safetensors", dir, st->ctx.stage_name);
  if ((rc = qins_mkdirs(dir)) || (rc = tf_part_save(path, t->o, t->step, t->s.info.qins, t->tm, t->own))) return rc;
  char src[1100], dst[1100];
  snprintf(src, sizeof src, "%s/config.json", t->model_dir);
  snprintf(dst, sizeof dst, "%s/config.json", dir);
  FILE *cf = t->specs[t->me].embed ? fopen(src, "rb") : NULL; /* a model folder: the checkpoint becomes one too */
  if (cf) {
    fclose(cf);
    if ((rc = qins_copy_file(src, dst))) return rc;
  }
  return 0;
}

/* checkpoint_initial: the start (step 0) saved before step 1, then passed on. */
static int save_initial(qins_stage *st, tpart *t, const qins_msg *in, const tf_frame *f, qins_msg *out) {
  int rc = save_ckpt(st, t);
  tf_hdr h = f->h;
  if (rc || (rc = tf_frame_out(out, in, &h, NULL, NULL, NULL))) return rc;
  return 1;
}

static int do_step(qins_stage *st, tpart *t, const qins_msg *in, const tf_frame *f, qins_msg *out) {
  if (f->h.n_f64 != TF_S_COUNT) return qins_error_set(QINS_EINPUT, "stage '%s': malformed STEP frame", st->ctx.stage_name);
  /* updated shared weights from their owners further forward */
  for (int q = 0, off = 0; q < f->h.n_ids; q++) {
    int i = f->ids[q];
    if (i < 0 || i >= t->P) return qins_error_set(QINS_EINPUT, "stage '%s': STEP names parameter %d", st->ctx.stage_name, i);
    const qins_train_param *p = qins_train_model_param(t->tm, i);
    if (t->uses[i] && !t->own[i]) memcpy(p->w, f->f32 + off, (size_t)p->n * sizeof(float));
    off += (int)p->n;
  }
  qins_step_report rep;
  int rc = qins_optim_step_global(t->o, f->f64[TF_S_LOSS], f->f64[TF_S_SQ], f->f64[TF_S_BAD] > 0, &rep);
  if (rc) return rc;
  if (rep.anomaly != QINS_ANOMALY_NONE && t->specs[t->me].head) QINS_WARN("%s", rep.message);
  /* host weights changed (the step, shared copies): to the device; gradients zeroed on both */
  if ((rc = qins_train_model_push_weights(t->tm)) || (rc = qins_train_model_zero_grad(t->tm))) return rc;
  t->step++;
  t->n_bwd = 0;
  t->loss_sum = t->ce_sum = t->kl_sum = 0;
  if ((f->h.flags & TF_CKPT) && (rc = save_ckpt(st, t))) return rc;
  /* pass it on, with our own updated shared weights appended */
  tf_hdr h = f->h;
  for (int i = 0; i < t->P; i++)
    if (t->exported[i]) h.n_ids++, h.n_f32 += qins_train_model_param(t->tm, i)->n;
  int32_t *ids;
  double *v;
  float *x;
  if ((rc = tf_frame_out(out, in, &h, &ids, &v, &x))) return rc;
  memcpy(v, f->f64, TF_S_COUNT * sizeof *v);
  v[TF_S_LR] = rep.lr;
  v[TF_S_NORM] = rep.grad_norm;
  v[TF_S_APPLIED] = rep.applied;
  if (f->h.n_ids) memcpy(ids, f->ids, (size_t)f->h.n_ids * sizeof *ids);
  if (f->h.n_f32) memcpy(x, f->f32, (size_t)f->h.n_f32 * sizeof *x);
  int k = f->h.n_ids;
  int64_t off = f->h.n_f32;
  for (int i = 0; i < t->P; i++)
    if (t->exported[i]) {
      const qins_train_param *p = qins_train_model_param(t->tm, i);
      ids[k++] = i;
      memcpy(x + off, p->w, (size_t)p->n * sizeof(float));
      off += p->n;
    }
  return 1;
}

/* The ack of a chunk of held-out windows, back to the data stage. */
static int held_ack(tpart *t, const qins_msg *in, qins_msg *out) {
  tf_hdr h = {.kind = TF_HACK, .step = t->step, .n_mb = t->M};
  int rc = tf_frame_out(out, in, &h, NULL, NULL, NULL);
  if (rc) return rc;
  out->flags = (out->flags | QINS_MSG_GRAD) & ~(uint32_t)QINS_MSG_END;
  return 1;
}

/* A held-out window: forward only, in activation slot 0 (free: the step's micro-batches have all
 * gone back before the STEP, the next step's come after the windows). The head part sums the
 * losses in window order, as `qins train` does, and sends the sum after the last window. */
static int held_forward(qins_stage *st, tpart *t, const qins_msg *in, const tf_frame *f, const float *x_in, qins_msg *out) {
  const tf_part_spec *sp = &t->specs[t->me];
  int rc;
  if (!sp->head) {
    tf_hdr h = {.kind = TF_MB, .step = t->step, .mb = f->h.mb, .n_mb = f->h.n_mb, .n_ids = t->N, .dim = t->D,
                .n_f32 = (int64_t)t->N * t->D, .flags = TF_HELD, .reserved2 = f->h.reserved2};
    int32_t *ids;
    float *x;
    if ((rc = tf_frame_out(out, in, &h, &ids, NULL, &x))) return rc;
    memcpy(ids, f->ids, (size_t)t->N * sizeof *ids);
    rc = qins_train_part_forward(t->part, 0, f->ids, t->N, x_in, x, NULL);
    qins_train_part_discard(t->part, 0);
    if (rc)
      return qins_error_wrap(rc, "stage '%s', held-out window %d after step %lld: ", st->ctx.stage_name, f->h.mb,
                             (long long)t->step);
    return 1;
  }
  double l = 0;
  rc = qins_train_part_forward(t->part, 0, f->ids, t->N, x_in, NULL, &l);
  qins_train_part_discard(t->part, 0);
  if (rc)
    return qins_error_wrap(rc, "stage '%s', held-out window %d after step %lld: ", st->ctx.stage_name, f->h.mb,
                           (long long)t->step);
  if (f->h.mb == 0) t->held_sum = 0;
  t->held_sum += l;
  /* the data stage sends the windows in chunks and waits for each chunk's ack (none after the
   * run's last window) */
  int64_t chunk = f->h.reserved2 > 0 ? f->h.reserved2 : f->h.n_mb;
  int last = f->h.mb + 1 == f->h.n_mb;
  int ack = !(in->flags & QINS_MSG_END) && ((f->h.mb + 1) % chunk == 0 || last);
  if (!last) return ack ? held_ack(t, in, out) : 0;
  tf_hdr h = {.kind = TF_EVAL, .step = t->step, .n_mb = f->h.n_mb, .n_f64 = 2};
  double *v;
  if ((rc = tf_frame_out(out, in, &h, NULL, &v, NULL))) return rc;
  v[0] = t->held_sum;
  v[1] = (double)f->h.n_mb;
  if (!ack) return 1;
  t->pending_ack = 1; /* the ack goes back on the next call */
  return QINS_STAGE_MORE;
}

/* A replayed run's first frame: start over from the checkpoint it names (weights, optimizer
 * state, step), dropping whatever the interrupted attempt left (activations, gradients, a
 * half-summed loss), then pass it on. */
static int reload(qins_stage *st, const qins_msg *in, const tf_frame *f, qins_msg *out) {
  char dir[1200];
  if (f->h.n_ids < 0 || f->h.n_ids >= (int)sizeof dir)
    return qins_error_set(QINS_EINPUT, "stage '%s': malformed RELOAD frame", st->ctx.stage_name);
  for (int i = 0; i < f->h.n_ids; i++) dir[i] = (char)f->ids[i];
  dir[f->h.n_ids] = 0;
  fini(st);
  st->priv = NULL;
  int rc = init_impl(st, &st->ctx, dir);
  if (rc) {
    fini(st);
    st->priv = NULL;
    return qins_error_wrap(rc, "stage '%s': restart from %s: ", st->ctx.stage_name, dir[0] ? dir : "the start model");
  }
  tpart *t = st->priv;
  if (t->step != f->h.step)
    return qins_error_set(QINS_EINPUT, "stage '%s': restart: %s holds step %lld, the data stage rewound to %lld",
                          st->ctx.stage_name, dir, (long long)t->step, (long long)f->h.step);
  tf_hdr h = f->h;
  int32_t *ids;
  if ((rc = tf_frame_out(out, in, &h, &ids, NULL, NULL))) return rc;
  if (h.n_ids) memcpy(ids, f->ids, (size_t)h.n_ids * sizeof *ids);
  return 1;
}

/* Distillation (the head part's logit hook; the same arithmetic as `qins train`'s, core/train/
 * trainer.c): dl holds (s - onehot)/(n-1) for the student's softmax s, the teacher's softmax p comes
 * from its logits; new gradient ce * dl + kl * (s - p)/(n-1), loss ce * CE + kl * mean KL(p || s). */
static int distill_hook(void *user, const int32_t *ids, int n, int V, float *dl, double *loss) {
  tpart *t = user;
  const qins_train_setup_info *I = &t->s.info;
  t->ce_sum += *loss;
  double kl_sum = qins_train_distill_logits(ids, n, V, t->tlog, dl, (float)I->distill_ce, (float)I->distill_kl);
  t->kl_sum += kl_sum / (n - 1);
  *loss = I->distill_ce * *loss + I->distill_kl * kl_sum / (n - 1);
  return 0;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  tpart *t = st->priv;
  if (!t) return qins_error_set(QINS_EINPUT, "stage '%s': failed to restart", st->ctx.stage_name);
  const tf_part_spec *sp = &t->specs[t->me];
  if (t->pending_ack) { /* called again after the evaluation's result */
    t->pending_ack = 0;
    return held_ack(t, in, out);
  }
  if (t->pending_reduce) { /* called again after the last GRAD */
    t->pending_reduce = 0;
    return make_reduce(st, t, in, NULL, out);
  }
  tf_frame f;
  int rc = tf_frame_parse(in, st->ctx.stage_name, &f);
  if (rc) return rc;
  if (f.h.kind == TF_RELOAD) return reload(st, in, &f, out);
  if ((rc = check_frame(st, t, &f, f.h.kind == TF_MB && !sp->embed))) return rc;
  if (f.h.kind == TF_STEP) return do_step(st, t, in, &f, out);
  if (f.h.kind == TF_SAVE) return save_initial(st, t, in, &f, out);
  if (f.h.kind != TF_MB) return qins_error_set(QINS_EINPUT, "stage '%s': unexpected frame kind %u going forward", st->ctx.stage_name, f.h.kind);
  const float *x_in = sp->embed ? NULL : f.f32;
  if (f.h.flags & TF_HELD) return held_forward(st, t, in, &f, x_in, out);
  if (!sp->head) {
    int64_t tl = (int64_t)t->N * f.h.reserved; /* the teacher's logits travel on to the head part */
    tf_hdr h = {.kind = TF_MB, .step = t->step, .mb = f.h.mb, .n_mb = t->M, .n_ids = t->N, .dim = t->D,
                .n_f32 = (int64_t)t->N * t->D + tl, .reserved = f.h.reserved};
    int32_t *ids;
    float *x;
    if ((rc = tf_frame_out(out, in, &h, &ids, NULL, &x))) return rc;
    memcpy(ids, f.ids, (size_t)t->N * sizeof *ids);
    if (tl) memcpy(x + (size_t)t->N * t->D, f.f32 + (f.h.n_f32 - tl), (size_t)tl * sizeof *x);
    if ((rc = qins_train_part_forward(t->part, f.h.mb, f.ids, t->N, x_in, x, NULL)))
      return qins_error_wrap(rc, "stage '%s', step %lld, micro-batch %d: ", st->ctx.stage_name, (long long)t->step, f.h.mb);
    return 1;
  }
  /* the head part: loss, then straight back */
  double l = 0;
  if (t->distill) { /* CE + lambda_KL * KL against the teacher's logits that came with the rows */
    t->tlog = f.f32 + (f.h.n_f32 - (int64_t)t->N * t->V);
    qins_train_model_set_logit_hook(t->tm, distill_hook, t);
  }
  rc = qins_train_part_forward(t->part, f.h.mb, f.ids, t->N, x_in, NULL, &l);
  qins_train_model_set_logit_hook(t->tm, NULL, NULL);
  if (rc)
    return qins_error_wrap(rc, "stage '%s', step %lld, micro-batch %d: ", st->ctx.stage_name, (long long)t->step, f.h.mb);
  t->loss_sum += l; /* in micro-batch order, as `qins train` sums its rows */
  float *dx = NULL;
  if (!sp->embed) {
    tf_hdr h = {.kind = TF_GRAD, .step = t->step, .mb = f.h.mb, .n_mb = t->M, .dim = t->D,
                .n_f32 = (int64_t)t->N * t->D};
    if ((rc = tf_frame_out(out, in, &h, NULL, NULL, &dx))) return rc;
    out->flags |= QINS_MSG_GRAD;
  }
  if ((rc = qins_train_part_backward(t->part, f.h.mb, NULL, dx)))
    return qins_error_wrap(rc, "stage '%s', step %lld, micro-batch %d backward: ", st->ctx.stage_name, (long long)t->step,
                           f.h.mb);
  int last = ++t->n_bwd == t->M;
  if (!sp->embed) {
    if (!last) return 1;
    t->pending_reduce = 1;
    return QINS_STAGE_MORE;
  }
  return last ? make_reduce(st, t, in, NULL, out) : 0; /* one part holds the whole model */
}

static int bwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  tpart *t = st->priv;
  if (!t) return qins_error_set(QINS_EINPUT, "stage '%s': failed to restart", st->ctx.stage_name);
  const tf_part_spec *sp = &t->specs[t->me];
  tf_frame f;
  int rc = tf_frame_parse(in, st->ctx.stage_name, &f);
  if (rc || (rc = check_frame(st, t, &f, f.h.kind == TF_GRAD))) return rc;
  if (f.h.kind == TF_HACK) { /* a held-out chunk's ack, on to the data stage */
    tf_hdr h = f.h;
    if ((rc = tf_frame_out(out, in, &h, NULL, NULL, NULL))) return rc;
    return 1;
  }
  if (f.h.kind == TF_REDUCE) {
    if (f.h.n_f64 != t->P + TF_R_COUNT) return qins_error_set(QINS_EINPUT, "stage '%s': REDUCE for %lld parameters, model has %d",
                                                     st->ctx.stage_name, (long long)f.h.n_f64 - TF_R_COUNT, t->P);
    if (t->n_bwd != t->M)
      return qins_error_set(QINS_EINPUT, "stage '%s': REDUCE of step %lld after %d of %d backwards", st->ctx.stage_name,
                            (long long)t->step, t->n_bwd, t->M);
    return make_reduce(st, t, in, &f, out);
  }
  if (f.h.kind != TF_GRAD) return qins_error_set(QINS_EINPUT, "stage '%s': unexpected frame kind %u going backward", st->ctx.stage_name, f.h.kind);
  float *dx = NULL;
  if (!sp->embed) {
    tf_hdr h = {.kind = TF_GRAD, .step = t->step, .mb = f.h.mb, .n_mb = t->M, .dim = t->D,
                .n_f32 = (int64_t)t->N * t->D};
    if ((rc = tf_frame_out(out, in, &h, NULL, NULL, &dx))) return rc;
  }
  if ((rc = qins_train_part_backward(t->part, f.h.mb, f.f32, dx)))
    return qins_error_wrap(rc, "stage '%s', step %lld, micro-batch %d backward: ", st->ctx.stage_name, (long long)t->step,
                           f.h.mb);
  t->n_bwd++;
  return sp->embed ? 0 : 1;
}

static const char *const metrics[] = {NULL};

const qins_stage_type qins_stage_train_part = {
    .name = "train_part",
    .summary = "layers A..B-1 (with embed / head) being trained: forward, backward, optimizer step of its parameters",
    .options = opts,
    .in_port = "u8[F]",
    .out_port = "u8[F]",
    .ports = ports,
    .metrics = metrics,
    .init = init,
    .forward = fwd,
    .backward = bwd,
    .fini = fini,
};
