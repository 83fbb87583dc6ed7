/* Stage type `train_data`: the entry of a train pipeline. Serves each optimizer step's rows as
 * micro-batches (the batches of core/train/data.c from the run's seed), receives the step's
 * reduction (per-parameter sums of squares, loss) back over the reverse edge, and sends the STEP
 * that every part applies before the next step's micro-batches follow it. Also the data part of
 * checkpoints (data.json: step, data position, seed) and of resume. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "core/train/data.h"
#include "stages/train_flow.h"

static const qins_opt_spec opts[] = {
    {"config", QINS_OPT_STRING, NULL, 1, 0, "the `qins train` config (YAML) of the run"},
    {"steps", QINS_OPT_INT, "0", 0, 1e12, "optimizer steps (0: the config's run.steps)"},
    {"out_dir", QINS_OPT_STRING, "", 1, 0, "logs and checkpoints ('': the config's run.out_dir)"},
    {"stop_after", QINS_OPT_INT, "0", 0, 1e12, "stop (with a checkpoint) after this step (0: run to the end)"},
    {"resume", QINS_OPT_STRING, "", 1, 0, "checkpoint folder to continue from ('': start fresh)"},
    {"set", QINS_OPT_STRING, "", 1, 0, "more config overrides, 'key.path=value;key.path=value'"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct tdata {
  tf_settings s;
  qins_shard *shard;
  qins_data_split train, held;
  int B, T, M;        /* rows per batch, tokens per row, micro-batches (rows) per step */
  int64_t step;       /* steps done */
  int64_t data_pos;   /* batches served */
  int32_t *rows;      /* the current step's M rows of T+1 ids */
  int cursor;         /* next row to send; M: all sent */
  int step_sent;      /* emitting (called again with the same input): held-out windows, then the next step's rows */
  int done, started;
  int64_t n_held;     /* held-out windows per evaluation (min(windows of the split, run.eval_windows)) */
  int64_t held_cursor, held_n; /* next held-out window to send, windows to send after this STEP */
  int held_final;     /* the held-out batches follow the run's last STEP: the last one ends the run */
  int32_t *hrow;
  uint32_t attempt;   /* of the request being served (a replay after a worker restart is > 0) */
  char run_id[40];    /* this run's id in OUT_DIR/flow-run.json and every data.json it writes */
  char reload[1200];   /* replay: the checkpoint every part reloads ('' = the start model) */
  int reload_sent;    /* a RELOAD or the initial SAVE went out: the step's rows follow */
  tf_part_spec *specs;
  int n_specs;
  double t0;
  int64_t tokens;
} tdata;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ports(const qins_cfg *options, const qins_pipeline *pl, char *in, char *out) {
  (void)options;
  (void)in;
  (void)out;
  return tf_validate(pl); /* the whole train layout, before anything starts */
}

static int read_data_json(tdata *d, const char *dir) {
  char path[1100];
  snprintf(path, sizeof path, "%s/data.json", dir);
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (!j) return qins_error_set(QINS_EINPUT, "%s: %s", path, je.text);
  json_t *st = json_object_get(j, "step"), *pos = json_object_get(j, "data_position"), *seed = json_object_get(j, "seed");
  int rc = 0;
  if (!json_is_integer(st) || !json_is_integer(pos) || !json_is_integer(seed))
    rc = qins_error_set(QINS_EINPUT, "%s: expected integer step, data_position and seed", path);
  else if ((uint64_t)json_integer_value(seed) != d->s.info.seed)
    rc = qins_error_set(QINS_EINPUT, "%s: checkpoint seed %lld differs from run.seed %llu", path,
                        (long long)json_integer_value(seed), (unsigned long long)d->s.info.seed);
  else {
    d->step = json_integer_value(st);
    d->data_pos = json_integer_value(pos);
  }
  json_decref(j);
  return rc;
}

/* DIR/data.json: step, data position, seed and the run's id (written to a temporary name and
 * renamed, so a folder with data.json has a whole one). */
static int write_data_json(const tdata *d, const char *dir, int64_t step) {
  char path[800], tmp[820];
  snprintf(path, sizeof path, "%s/data.json", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  json_t *j = json_pack("{s:I,s:I,s:I,s:s}", "step", (json_int_t)step, "data_position", (json_int_t)d->data_pos, "seed",
                        (json_int_t)d->s.info.seed, "run", d->run_id);
  int rc = json_dump_file(j, tmp, JSON_INDENT(2)) ? qins_error_set(QINS_EIO, "%s: write failed", tmp) : 0;
  json_decref(j);
  if (!rc && rename(tmp, path) != 0) rc = qins_error_set(QINS_EIO, "%s: rename failed: %s", path, strerror(errno));
  return rc;
}

/* A fresh run (attempt 0): a new id in OUT_DIR/flow-run.json, so that a replay only rewinds to
 * checkpoints this run wrote (not to older ones left in the folder). */
static int new_run_id(tdata *d) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(d->run_id, sizeof d->run_id, "%llx-%x-%lx", (unsigned long long)ts.tv_sec, (unsigned)getpid(), (long)ts.tv_nsec);
  char path[700];
  snprintf(path, sizeof path, "%s/flow-run.json", d->s.info.out_dir);
  json_t *j = json_pack("{s:s}", "run", d->run_id);
  int rc = json_dump_file(j, path, 0) ? qins_error_set(QINS_EIO, "%s: write failed", path) : 0;
  json_decref(j);
  return rc;
}

/* DIR is a whole checkpoint of this run: data.json with its id and seed, every part's file. */
static int ckpt_complete(const tdata *d, const char *dir, int64_t *step, int64_t *pos) {
  char path[1400];
  snprintf(path, sizeof path, "%s/data.json", dir);
  json_t *j = json_load_file(path, 0, NULL);
  if (!j) return 0;
  json_t *st = json_object_get(j, "step"), *p = json_object_get(j, "data_position"), *seed = json_object_get(j, "seed");
  const char *run = json_string_value(json_object_get(j, "run"));
  int ok = json_is_integer(st) && json_is_integer(p) && json_is_integer(seed) && run && !strcmp(run, d->run_id) &&
           (uint64_t)json_integer_value(seed) == d->s.info.seed;
  if (ok) {
    *step = json_integer_value(st);
    *pos = json_integer_value(p);
  }
  json_decref(j);
  for (int i = 0; ok && i < d->n_specs; i++) {
    struct stat sb;
    snprintf(path, sizeof path, "%s/part-%s.safetensors", dir, d->specs[i].name);
    ok = stat(path, &sb) == 0;
  }
  return ok;
}

static int last_step(const tdata *d, int64_t done);

/* A replayed run (a worker was restarted): rewind to this run's last whole checkpoint in
 * OUT_DIR, else to the run's start (the resume folder, or the start model at step 0). */
static int rewind_run(qins_stage *st, tdata *d) {
  char path[700];
  snprintf(path, sizeof path, "%s/flow-run.json", d->s.info.out_dir);
  json_t *j = json_load_file(path, 0, NULL); /* a restarted data stage learns the run's id here */
  const char *run = j ? json_string_value(json_object_get(j, "run")) : NULL;
  if (!run) {
    json_decref(j);
    return qins_error_set(QINS_EINPUT, "stage '%s': %s: no run id to restart from", st->ctx.stage_name, path);
  }
  snprintf(d->run_id, sizeof d->run_id, "%s", run);
  json_decref(j);
  int64_t best = -1, best_pos = 0;
  DIR *dd = opendir(d->s.info.out_dir);
  struct dirent *e;
  while (dd && (e = readdir(dd))) {
    if (strncmp(e->d_name, "ckpt-", 5)) continue;
    char dir[1000];
    int64_t s = 0, p = 0;
    snprintf(dir, sizeof dir, "%s/%s", d->s.info.out_dir, e->d_name);
    if (ckpt_complete(d, dir, &s, &p) && s > best) {
      best = s;
      best_pos = p;
      snprintf(d->reload, sizeof d->reload, "%s", dir);
    }
  }
  if (dd) closedir(dd);
  if (best >= 0) {
    d->step = best;
    d->data_pos = best_pos;
  } else if (d->s.resume[0]) {
    int rc = read_data_json(d, d->s.resume);
    if (rc) return rc;
    snprintf(d->reload, sizeof d->reload, "%s", d->s.resume);
  } else {
    d->step = d->data_pos = 0;
    d->reload[0] = 0;
  }
  if (last_step(d, d->step))
    return qins_error_set(QINS_EINPUT, "stage '%s': restart: the run had already finished (checkpoint at step %lld)",
                          st->ctx.stage_name, (long long)d->step);
  QINS_WARN("stage '%s': a worker was restarted: the run continues from %s (step %lld)", st->ctx.stage_name,
            d->reload[0] ? d->reload : "the start", (long long)d->step);
  d->done = 0;
  d->step_sent = 0;
  d->held_n = d->held_cursor = 0;
  d->cursor = d->M;
  d->reload_sent = 0;
  d->tokens = 0;
  return 0;
}

/* The RELOAD frame: every part (and train_log) starts over from the checkpoint it names. */
static int emit_reload(tdata *d, const qins_msg *in, qins_msg *out) {
  int n = (int)strlen(d->reload);
  tf_hdr h = {.kind = TF_RELOAD, .step = d->step, .n_mb = d->M, .n_ids = n};
  int32_t *ids;
  int rc = tf_frame_out(out, in, &h, &ids, NULL, NULL);
  if (rc) return rc;
  out->flags &= ~(uint32_t)(QINS_MSG_GRAD | QINS_MSG_END);
  for (int i = 0; i < n; i++) ids[i] = (unsigned char)d->reload[i];
  d->reload_sent = 1;
  return 0;
}

static int init_impl(qins_stage *st, const qins_stage_ctx *ctx) {
  tdata *d = calloc(1, sizeof *d);
  if (!d) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = d;
  int rc = tf_settings_load(ctx->pipeline, &d->s);
  if (rc) return rc;
  const qins_train_setup_info *I = &d->s.info;
  d->B = I->batch;
  d->T = I->seq;
  d->M = I->batch * I->grad_accum;
  if (d->M + 2 > ctx->pipeline->slots)
    return qins_error_set(QINS_EINPUT,
                          "stage '%s': batch x grad_accum = %d micro-batches per step needs channels.slots >= %d (have %d)",
                          ctx->stage_name, d->M, d->M + 2, ctx->pipeline->slots);
  if ((rc = qins_mkdirs(I->out_dir))) return rc;
  int rebuilt = 0;
  char sdir[600];
  snprintf(sdir, sizeof sdir, "%s", I->shard);
  char *slash = strrchr(sdir, '/');
  if (slash && slash != sdir) {
    *slash = 0;
    if ((rc = qins_mkdirs(sdir))) return rc;
  }
  if (I->text[0] && (rc = qins_shard_build(I->text, I->tokenizer, I->shard, &rebuilt))) return rc;
  if ((rc = qins_shard_open(I->shard, I->tokenizer, &d->shard))) return rc;
  if ((rc = qins_data_split_make(d->shard, I->holdout, I->seq, &d->train, &d->held))) return rc;
  d->rows = malloc((size_t)d->M * (size_t)(d->T + 1) * sizeof *d->rows);
  d->hrow = malloc((size_t)(d->T + 1) * sizeof *d->hrow);
  d->n_held = qins_data_eval_windows(&d->held, I->seq);
  if (d->n_held > I->eval_windows) d->n_held = I->eval_windows;
  if (d->n_held < 0) d->n_held = 0;
  if (!d->rows || !d->hrow) return qins_error_set(QINS_ENOMEM, "out of memory");
  if (d->s.resume[0] && (rc = read_data_json(d, d->s.resume))) return rc;
  if ((rc = tf_part_specs(ctx->pipeline->root, &d->specs, &d->n_specs))) return rc;
  d->cursor = d->M;
  return 0;
}

static void fini(qins_stage *st) {
  tdata *d = st->priv;
  if (!d) return;
  qins_shard_close(d->shard);
  free(d->rows);
  free(d->hrow);
  free(d->specs);
  tf_settings_free(&d->s);
  free(d);
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

/* The rows of step d->step, exactly as `qins train` draws them (grad_accum batches of B rows). */
static int load_step(tdata *d) {
  for (int a = 0; a < d->s.info.grad_accum; a++) {
    int rc = qins_data_batch(&d->train, d->s.info.seed, d->data_pos++, d->B, d->T,
                             d->rows + (size_t)a * d->B * (size_t)(d->T + 1));
    if (rc) return rc;
  }
  d->cursor = 0;
  return 0;
}

/* Next micro-batch of the current step (forward). */
static int emit_mb(qins_stage *st, tdata *d, const qins_msg *in, qins_msg *out) {
  tf_hdr h = {.kind = TF_MB, .step = d->step, .mb = d->cursor, .n_mb = d->M, .n_ids = d->T + 1};
  int32_t *ids;
  int rc = tf_frame_out(out, in, &h, &ids, NULL, NULL);
  if (rc) return rc;
  out->flags &= ~(uint32_t)(QINS_MSG_GRAD | QINS_MSG_END);
  memcpy(ids, d->rows + (size_t)d->cursor * (d->T + 1), (size_t)(d->T + 1) * sizeof *ids);
  d->cursor++;
  (void)st;
  return d->cursor < d->M ? QINS_STAGE_MORE : 1;
}

/* Held-out evaluation after step `done` (1-based), when `qins train` evaluates: every
 * run.eval_every steps and after the last of run.steps. */
static int held_due(const tdata *d, int64_t done) {
  return d->n_held > 0 && ((d->s.info.eval_every > 0 && done % d->s.info.eval_every == 0) || done == d->s.info.steps);
}

/* Next held-out window (forward, flagged TF_HELD: the parts run no backward, the head part sums
 * the losses in window order and sends the mean's parts to train_log). */
static int emit_held(tdata *d, const qins_msg *in, qins_msg *out) {
  tf_hdr h = {.kind = TF_MB, .step = d->step, .mb = (int32_t)d->held_cursor, .n_mb = (int32_t)d->held_n,
              .n_ids = d->T + 1, .flags = TF_HELD, .reserved2 = d->M};
  int32_t *ids;
  int rc = qins_data_eval_window(&d->held, d->held_cursor, d->T, d->hrow);
  if (rc || (rc = tf_frame_out(out, in, &h, &ids, NULL, NULL))) return rc;
  out->flags &= ~(uint32_t)(QINS_MSG_GRAD | QINS_MSG_END);
  memcpy(ids, d->hrow, (size_t)(d->T + 1) * sizeof *ids);
  d->held_cursor++;
  return 0;
}

static int last_step(const tdata *d, int64_t done) {
  return done >= d->s.info.steps || (d->s.info.stop_after > 0 && done >= d->s.info.stop_after);
}

/* The run's request: start step d->step (0, or the resumed one). */
static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  tdata *d = st->priv;
  if (in->attempt > d->attempt || (in->attempt > 0 && !d->started)) { /* a replay: rewind first */
    int rc = rewind_run(st, d);
    if (rc) return rc;
    d->attempt = in->attempt;
    d->started = 1;
    d->t0 = now_s();
    if ((rc = emit_reload(d, in, out))) return rc;
    return QINS_STAGE_MORE;
  }
  if (d->reload_sent) { /* after the RELOAD: the rewound step's rows */
    d->reload_sent = 0;
    int rc = load_step(d);
    if (rc) return rc;
    return emit_mb(st, d, in, out);
  }
  if (d->cursor == d->M && d->started)
    return qins_error_set(QINS_EINPUT, "stage '%s': a train pipeline runs one request (inputs: {prompts: [train]}); "
                          "request %llu is another", st->ctx.stage_name, (unsigned long long)in->req);
  if (d->cursor == d->M) {
    d->started = 1;
    if (d->done || last_step(d, d->step))
      return qins_error_set(QINS_EINPUT, "stage '%s': nothing to train: %lld of %lld steps done", st->ctx.stage_name,
                            (long long)d->step, (long long)d->s.info.steps);
    d->t0 = now_s();
    int rc = new_run_id(d);
    if (rc) return rc;
    if (d->s.info.checkpoint_initial && d->step == 0) { /* ckpt-000000: the start, as `qins train` saves it */
      char dir[700];
      snprintf(dir, sizeof dir, "%s/ckpt-%06d", d->s.info.out_dir, 0);
      tf_hdr h = {.kind = TF_SAVE, .step = 0, .n_mb = d->M, .flags = TF_CKPT};
      if ((rc = qins_mkdirs(dir)) || (rc = write_data_json(d, dir, 0)) || (rc = tf_frame_out(out, in, &h, NULL, NULL, NULL)))
        return rc;
      out->flags &= ~(uint32_t)(QINS_MSG_GRAD | QINS_MSG_END);
      d->reload_sent = 1;
      return QINS_STAGE_MORE;
    }
    if ((rc = load_step(d))) return rc;
  }
  return emit_mb(st, d, in, out);
}

/* A step's REDUCE (from the first part): reduce, send STEP, then the next step's micro-batches. */
static int bwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  tdata *d = st->priv;
  if (d->step_sent) { /* called again after the STEP (or a chunk's ack): held-out windows, then the next step's rows */
    if (d->held_cursor < d->held_n) {
      int rc = emit_held(d, in, out);
      if (rc) return rc;
      if (d->held_cursor == d->held_n && d->held_final) { /* the run's end */
        out->flags |= QINS_MSG_END;
        d->done = 1;
        d->step_sent = 0;
        return 1;
      }
      if (d->held_cursor % d->M == 0 || d->held_cursor == d->held_n) { /* a chunk of M: wait for its ack */
        d->step_sent = 0;
        return 1;
      }
      return QINS_STAGE_MORE;
    }
    int r = emit_mb(st, d, in, out);
    if (r == 1) d->step_sent = 0;
    return r;
  }
  tf_frame f;
  int rc = tf_frame_parse(in, st->ctx.stage_name, &f);
  if (rc) return rc;
  if (f.h.kind == TF_HACK) { /* the head part has the chunk: more windows, or the next step's rows */
    if (f.h.step != d->step || d->held_cursor == 0 || (d->held_cursor % d->M != 0 && d->held_cursor != d->held_n))
      return qins_error_set(QINS_EINPUT, "stage '%s': unexpected held-out ack of step %lld after %lld of %lld windows",
                            st->ctx.stage_name, (long long)f.h.step, (long long)d->held_cursor, (long long)d->held_n);
    d->step_sent = 1;
    return bwd(st, in, out);
  }
  if (f.h.kind != TF_REDUCE || f.h.step != d->step || f.h.n_f64 < TF_R_COUNT)
    return qins_error_set(QINS_EINPUT, "stage '%s': expected the REDUCE of step %lld, got kind %u of step %lld",
                          st->ctx.stage_name, (long long)d->step, f.h.kind, (long long)f.h.step);
  int64_t P = f.h.n_f64 - TF_R_COUNT;
  double sq = 0; /* in parameter order, as one optimizer over the whole model sums */
  for (int64_t i = 0; i < P; i++) sq += f.f64[i];
  double loss = f.f64[P + TF_R_LOSS] / (double)d->M, bad = f.f64[P + TF_R_BAD];
  int64_t done = d->step + 1;
  d->tokens += (int64_t)d->M * d->T;
  int ckpt = qins_train_setup_ckpt_due(d->s.setup, done), last = last_step(d, done), held = held_due(d, done);
  if (ckpt) {
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s/ckpt-%06lld", d->s.info.out_dir, (long long)done);
    if ((rc = qins_mkdirs(dir))) return rc;
    snprintf(path, sizeof path, "%s/data.json", dir);
    if ((rc = write_data_json(d, dir, done))) return rc;
  }
  tf_hdr h = {.kind = TF_STEP, .step = d->step, .n_mb = d->M, .n_f64 = TF_S_COUNT,
              .flags = (ckpt ? TF_CKPT : 0) | (last ? TF_LAST : 0) | (held ? TF_HELD : 0)};
  double *v;
  if ((rc = tf_frame_out(out, in, &h, NULL, &v, NULL))) return rc;
  memset(v, 0, TF_S_COUNT * sizeof *v);
  v[TF_S_SQ] = sq;
  v[TF_S_LOSS] = loss;
  v[TF_S_BAD] = bad;
  v[TF_S_ELAPSED] = now_s() - d->t0;
  v[TF_S_TOKENS] = (double)d->tokens;
  v[TF_S_CE] = f.f64[P + TF_R_CE] / (double)d->M;
  v[TF_S_KL] = f.f64[P + TF_R_KL] / (double)d->M;
  out->flags &= ~(uint32_t)QINS_MSG_GRAD; /* turns forward */
  d->held_cursor = 0;
  d->held_n = held ? d->n_held : 0;
  d->held_final = last;
  if (last && held) { /* the held-out windows follow; the last of them ends the run */
    d->step = done;
    d->step_sent = 1;
    return QINS_STAGE_MORE;
  }
  if (last) {
    out->flags |= QINS_MSG_END;
    d->done = 1;
    d->step = done;
    return 1;
  }
  d->step = done;
  d->step_sent = 1;
  if ((rc = load_step(d))) return rc;
  return QINS_STAGE_MORE;
}

static const char *const metrics[] = {NULL};

const qins_stage_type qins_stage_train_data = {
    .name = "train_data",
    .summary = "train pipeline entry: micro-batches of each step, the step's reduction and STEP control",
    .options = opts,
    .in_port = "u8[N]",
    .out_port = "u8[F]",
    .ports = ports,
    .metrics = metrics,
    .init = init,
    .forward = fwd,
    .backward = bwd,
    .fini = fini,
};
