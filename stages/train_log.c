/* Stage type `train_log`: the final stage of a train pipeline. Each STEP that has passed every
 * part becomes a line of train_log.jsonl (the format `qins train` writes) and the qins_train_*
 * metrics the dashboard shows; the last one becomes the run's record. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/metrics.h"
#include "stages/train_flow.h"

static const qins_opt_spec opts[] = {
    {"progress", QINS_OPT_BOOL, "true", 1, 0, "print a progress line every run.log_every steps on stderr"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct tlog {
  tf_settings s;
  tf_part_spec *specs;
  int n_specs;
  FILE *log;
  char path[700];
  int progress;
  qins_metric *m_loss, *m_lr, *m_norm, *m_tps, *m_tokens, *m_step, *m_total, *m_eval;
  double tokens_seen;
  /* the run's last STEP, kept when its held-out result follows (the record comes after it) */
  int final_pending;
  long long final_step;
  double final_loss, final_norm, final_tps;
  char final_ck[800];
  double eval_loss; /* last held-out mean loss (NaN: none yet) */
} tlog;

static int init_impl(qins_stage *st, const qins_stage_ctx *ctx) {
  tlog *t = calloc(1, sizeof *t);
  if (!t) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = t;
  int rc = tf_settings_load(ctx->pipeline, &t->s);
  if (rc || (rc = qins_mkdirs(t->s.info.out_dir)) || (rc = tf_part_specs(ctx->pipeline->root, &t->specs, &t->n_specs)))
    return rc;
  snprintf(t->path, sizeof t->path, "%s/train_log.jsonl", t->s.info.out_dir);
  /* opened at the first frame: a worker restarted mid-run appends (its first frame is a RELOAD) */
  t->progress = qins_stage_opt_bool(st, "progress");
  char labels[160];
  snprintf(labels, sizeof labels, "run=\"%s\"", t->s.info.name);
  t->m_loss = qins_metric_gauge("qins_train_loss", "training loss of the last step", labels);
  t->m_lr = qins_metric_gauge("qins_train_lr", "learning rate of the last step", labels);
  t->m_norm = qins_metric_gauge("qins_train_grad_norm", "global gradient norm of the last step", labels);
  t->m_tps = qins_metric_gauge("qins_train_tokens_per_second", "training throughput", labels);
  t->m_tokens = qins_metric_counter("qins_train_tokens_total", "training tokens processed", labels);
  t->m_step = qins_metric_gauge("qins_train_step", "optimizer steps done", labels);
  t->m_total = qins_metric_gauge("qins_train_total_steps", "optimizer steps of the run", labels);
  t->m_eval = qins_metric_gauge("qins_train_eval_loss", "held-out mean loss at the last evaluation", labels);
  qins_metric_set(t->m_total, (double)t->s.info.steps);
  t->eval_loss = NAN;
  return 0;
}

static void fini(qins_stage *st) {
  tlog *t = st->priv;
  if (!t) return;
  if (t->log) fclose(t->log);
  free(t->specs);
  tf_settings_free(&t->s);
  free(t);
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

/* The run's record (one output: the request's end), with the last held-out result as `qins train`
 * prints it. */
static int record(tlog *t, const qins_msg *in, qins_msg *out, long long step, double loss, double norm, double tps,
                  const char *ck) {
  char rec[1800], ev[128] = "";
  if (!isnan(t->eval_loss))
    snprintf(ev, sizeof ev, ", \"eval_loss\": %.17g, \"eval_ppl\": %.9g", t->eval_loss, exp(t->eval_loss));
  int n = snprintf(rec, sizeof rec,
                   "{\"steps\": %lld, \"loss\": %.17g, \"grad_norm\": %.17g%s, \"tokens_per_s\": %.1f, \"checkpoint\": "
                   "\"%s\", \"log\": \"%s\"}",
                   step, loss, norm, ev, tps, ck, t->path);
  if (n < 0 || n >= (int)sizeof rec) return qins_error_set(QINS_EINTERNAL, "record too long");
  int rc = qins_msg_output_text(out, in, rec, (size_t)n);
  return rc ? rc : 1;
}

/* A held-out result: the line `qins train` writes after the step's line. */
static int held_result(qins_stage *st, tlog *t, const tf_frame *f, const qins_msg *in, qins_msg *out) {
  if (f->h.n_f64 != 2 || !(f->f64[1] > 0))
    return qins_error_set(QINS_EINPUT, "stage '%s': malformed held-out result frame", st->ctx.stage_name);
  double el = f->f64[0] / f->f64[1];
  long long step = (long long)f->h.step;
  fprintf(t->log, "{\"step\": %lld, \"eval_loss\": %.17g, \"eval_ppl\": %.9g}\n", step, el, exp(el));
  fflush(t->log);
  qins_metric_set(t->m_eval, el);
  t->eval_loss = el;
  if (t->progress) fprintf(stderr, "eval step %lld: held-out loss %.4f, perplexity %.3f\n", step, el, exp(el));
  if (!t->final_pending) return 0;
  t->final_pending = 0;
  return record(t, in, out, t->final_step, t->final_loss, t->final_norm, t->final_tps, t->final_ck);
}

/* A replayed run (a worker was restarted) continues from the checkpoint the RELOAD names: its
 * steps are logged again (a reader keeps a step's last line). A checkpoint the interrupted attempt
 * wrote but did not get to make a model folder becomes one now. */
static int reloaded(qins_stage *st, tlog *t, const tf_frame *f) {
  char dir[1200], p[1300];
  if (f->h.n_ids < 0 || f->h.n_ids >= (int)sizeof dir)
    return qins_error_set(QINS_EINPUT, "stage '%s': malformed RELOAD frame", st->ctx.stage_name);
  for (int i = 0; i < f->h.n_ids; i++) dir[i] = (char)f->ids[i];
  dir[f->h.n_ids] = 0;
  t->final_pending = 0;
  int rc = 0;
  FILE *m = NULL;
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  if (dir[0] && !(m = fopen(p, "rb"))) {
    snprintf(p, sizeof p, "%s/tokenizer.bin", dir);
    if ((rc = tf_merge_weights(dir, t->specs, t->n_specs)) || (rc = qins_copy_file(t->s.info.tokenizer, p))) return rc;
  }
  if (m) fclose(m);
  fprintf(t->log, "{\"step\": %lld, \"restart\": \"%s\"}\n", (long long)f->h.step, dir);
  fflush(t->log);
  if (t->progress) fprintf(stderr, "restarted from %s (step %lld)\n", dir[0] ? dir : "the start", (long long)f->h.step);
  return 0;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  tlog *t = st->priv;
  tf_frame f;
  int rc = tf_frame_parse(in, st->ctx.stage_name, &f);
  if (rc) return rc;
  if (!t->log) {
    t->log = fopen(t->path, t->s.resume[0] || f.h.kind == TF_RELOAD ? "a" : "w");
    if (!t->log) return qins_error_set(QINS_EIO, "%s: cannot open: %s", t->path, strerror(errno));
  }
  if (f.h.kind == TF_RELOAD) return reloaded(st, t, &f);
  if (f.h.kind == TF_SAVE) { /* checkpoint_initial: every part has written ckpt-000000; a model folder too */
    char dir[700], dst[800];
    snprintf(dir, sizeof dir, "%s/ckpt-%06lld", t->s.info.out_dir, (long long)f.h.step);
    snprintf(dst, sizeof dst, "%s/tokenizer.bin", dir);
    if ((rc = tf_merge_weights(dir, t->specs, t->n_specs)) || (rc = qins_copy_file(t->s.info.tokenizer, dst))) return rc;
    if (t->progress) fprintf(stderr, "checkpoint: %s\n", dir);
    return 0;
  }
  if (f.h.kind == TF_EVAL) return held_result(st, t, &f, in, out);
  if (f.h.kind != TF_STEP || f.h.n_f64 != TF_S_COUNT)
    return qins_error_set(QINS_EINPUT, "stage '%s': expected STEP frames (is it after the head part?), got kind %u",
                          st->ctx.stage_name, f.h.kind);
  const double *v = f.f64;
  long long step = (long long)f.h.step + 1;
  double el = v[TF_S_ELAPSED], tps = v[TF_S_TOKENS] / (el > 0 ? el : 1e-9);
  char kl_text[160] = ""; /* distillation: the loss's parts, as `qins train` logs them */
  if (t->s.info.distill)
    snprintf(kl_text, sizeof kl_text, ", \"ce\": %.9g, \"kl\": %.9g", v[TF_S_CE], v[TF_S_KL]);
  fprintf(t->log, "{\"step\": %lld, \"loss\": %.17g, \"lr\": %.9g, \"grad_norm\": %.17g, \"tokens_per_s\": %.1f%s%s}\n",
          step, v[TF_S_LOSS], v[TF_S_LR], v[TF_S_NORM], tps, v[TF_S_APPLIED] > 0 ? "" : ", \"skipped\": true", kl_text);
  fflush(t->log);
  qins_metric_set(t->m_loss, v[TF_S_LOSS]);
  qins_metric_set(t->m_lr, v[TF_S_LR]);
  qins_metric_set(t->m_norm, v[TF_S_NORM]);
  qins_metric_set(t->m_tps, tps);
  qins_metric_add(t->m_tokens, v[TF_S_TOKENS] - t->tokens_seen);
  t->tokens_seen = v[TF_S_TOKENS];
  qins_metric_set(t->m_step, (double)step);
  int last = (f.h.flags & TF_LAST) != 0;
  if (f.h.flags & TF_CKPT) { /* every part has written its file: make the folder a model too */
    char dir[700], dst[800];
    snprintf(dir, sizeof dir, "%s/ckpt-%06lld", t->s.info.out_dir, step);
    snprintf(dst, sizeof dst, "%s/tokenizer.bin", dir);
    if ((rc = tf_merge_weights(dir, t->specs, t->n_specs)) || (rc = qins_copy_file(t->s.info.tokenizer, dst))) return rc;
  }
  if (t->progress && (step % t->s.info.log_every == 0 || last))
    fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3g  gnorm %.3f  %.0f tok/s%s\n", step, (long long)t->s.info.steps,
            v[TF_S_LOSS], v[TF_S_LR], v[TF_S_NORM], tps, (f.h.flags & TF_CKPT) ? "  (checkpoint)" : "");
  if (!last) return 0;
  char ck[800] = "";
  if (f.h.flags & TF_CKPT) snprintf(ck, sizeof ck, "%s/ckpt-%06lld", t->s.info.out_dir, step);
  if (f.h.flags & TF_HELD) { /* the held-out result follows: the record after it */
    t->final_pending = 1;
    t->final_step = step;
    t->final_loss = v[TF_S_LOSS];
    t->final_norm = v[TF_S_NORM];
    t->final_tps = tps;
    snprintf(t->final_ck, sizeof t->final_ck, "%s", ck);
    return 0;
  }
  return record(t, in, out, step, v[TF_S_LOSS], v[TF_S_NORM], tps, ck);
}

static const char *const metrics[] = {"qins_train_loss",  "qins_train_lr",           "qins_train_grad_norm",
                                      "qins_train_tokens_per_second", "qins_train_tokens_total", "qins_train_step",
                                      "qins_train_total_steps", "qins_train_eval_loss", NULL};

const qins_stage_type qins_stage_train_log = {
    .name = "train_log",
    .summary = "train pipeline end: train_log.jsonl, qins_train_* metrics, the run's record",
    .options = opts,
    .in_port = "u8[F]",
    .out_port = "u8[N]",
    .metrics = metrics,
    .init = init,
    .forward = fwd,
    .fini = fini,
};
