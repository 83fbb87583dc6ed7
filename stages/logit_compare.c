/* Stage type `logit_compare`: next-token distributions of two branches, joined by the worker
 * (rows of logits at the same positions): KL both ways at a temperature (qins_eval_kl_logits),
 * top-k overlap (qins_eval_topk_overlap) and top-1 agreement, averaged over the rows of the
 * request; written into the record and the stage's metrics. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/eval/eval.h"
#include "stages/eval_stage.h"
#include "stages/model_shared.h"

static const qins_opt_spec opts[] = {
    {"top_k", QINS_OPT_INT, "10", 1, 1 << 20, "k of the top-k overlap"},
    {"temperature", QINS_OPT_FLOAT, "1", 1e-6, 1e6, "softmax temperature of the KL"},
    {"steps", QINS_OPT_INT, "0", 0, 1 << 24,
     "0: write the record when the request ends (after its one message without a generation loop, after both "
     "branches ended in one); N: after N joined messages or a branch's end, whichever comes first"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct lreq {
  double kl_ab, kl_ba, topk, top1, kl_max;
  long long rows;
  int sets, unpaired, done;
  unsigned ended; /* bit k: branch k ended */
} lreq;

typedef struct lcmp {
  qins_reqstate *reqs;
  int k, steps, loop;
  double temp;
  qins_eval_mean kl_ab, kl_ba, topk, top1;
  qins_metric *records;
} lcmp;

static void lreq_free(void *p, void *u) {
  (void)u;
  free(p);
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  lcmp *c = calloc(1, sizeof *c);
  if (!c) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = c;
  c->k = (int)qins_stage_opt_int(st, "top_k");
  c->steps = (int)qins_stage_opt_int(st, "steps");
  c->loop = qins_eval_loop_fed(ctx);
  c->temp = qins_stage_opt_float(st, "temperature");
  qins_eval_mean_init(&c->kl_ab, ctx, "qins_eval_kl", "mean next-token KL(a||b) in nats (mean over records)", "dir=\"ab\"");
  qins_eval_mean_init(&c->kl_ba, ctx, "qins_eval_kl", "mean next-token KL(a||b) in nats (mean over records)", "dir=\"ba\"");
  qins_eval_mean_init(&c->topk, ctx, "qins_eval_topk_overlap", "mean top-k overlap of two branches (mean over records)", NULL);
  qins_eval_mean_init(&c->top1, ctx, "qins_eval_top1_agree", "fraction of rows whose argmax agrees (mean over records)", NULL);
  c->records = qins_eval_records_metric(ctx);
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  lcmp *c = st->priv;
  qins_reqstate_forget(&c->reqs, req, below, lreq_free, NULL);
}

static void fini(qins_stage *st) {
  lcmp *c = st->priv;
  if (!c) return;
  qins_reqstate_clear(&c->reqs, lreq_free, NULL);
  free(c);
}

static int fwd(qins_stage *st, const qins_msg *const *in, int n, qins_msg *out) {
  lcmp *c = st->priv;
  const qins_msg *f = qins_eval_first(in, n);
  lreq *r = qins_reqstate_get(&c->reqs, f->req, f->attempt, sizeof *r);
  if (!r) return QINS_ENOMEM;
  if (r->done) return 0; /* the record is written; the coordinator's FORGET frees this */
  r->sets++;
  const qins_msg *a = qins_eval_data(in[0]), *b = qins_eval_data(in[1]);
  if (a && b) {
    int rc = qins_eval_check_logit_pair(st, "logit_compare", f->req, a, b);
    if (rc) return rc;
    int V = (int)a->shape[1];
    for (int64_t t = 0; t < a->shape[0]; t++) {
      const float *la = (const float *)a->data + t * V, *lb = (const float *)b->data + t * V;
      double ab = qins_eval_kl_logits(la, lb, V, c->temp), ba = qins_eval_kl_logits(lb, la, V, c->temp);
      r->kl_ab += ab;
      r->kl_ba += ba;
      if (ab > r->kl_max) r->kl_max = ab;
      r->topk += qins_eval_topk_overlap(la, lb, V, c->k);
      r->top1 += qins_eval_topk_overlap(la, lb, V, 1);
      r->rows++;
    }
  } else if (a || b) {
    r->unpaired++; /* one branch ended earlier (free-running branches of different lengths) */
  }
  for (int k = 0; k < 2; k++)
    if (qins_eval_ended(in[k])) r->ended |= 1u << k;
  /* steps 0: one message per request without a loop; in a loop, until both branches ended (every
   * end reaches here: sample's END travels on as an end marker, stages/stage.h) */
  int write = c->steps > 0 ? r->sets >= c->steps || r->ended : !c->loop || r->ended == 3u;
  if (!write) return 0;
  double rows = r->rows > 0 ? (double)r->rows : NAN;
  json_t *rec = json_object();
  json_object_set_new(rec, "eval", json_string("logit_compare"));
  json_object_set_new(rec, "rows", json_integer(r->rows));
  json_object_set_new(rec, "kl", qins_eval_json_num(r->kl_ab / rows));
  json_object_set_new(rec, "kl_reverse", qins_eval_json_num(r->kl_ba / rows));
  json_object_set_new(rec, "kl_max", qins_eval_json_num(r->kl_max));
  json_object_set_new(rec, "top_k", json_integer(c->k));
  json_object_set_new(rec, "topk_overlap", qins_eval_json_num(r->topk / rows));
  json_object_set_new(rec, "top1_agree", qins_eval_json_num(r->top1 / rows));
  json_object_set_new(rec, "temperature", json_real(c->temp));
  if (r->unpaired) json_object_set_new(rec, "unpaired", json_integer(r->unpaired));
  if (r->rows) {
    qins_eval_mean_add(&c->kl_ab, r->kl_ab / rows);
    qins_eval_mean_add(&c->kl_ba, r->kl_ba / rows);
    qins_eval_mean_add(&c->topk, r->topk / rows);
    qins_eval_mean_add(&c->top1, r->top1 / rows);
  }
  qins_metric_add(c->records, 1);
  r->done = 1;
  int rc = qins_eval_emit(out, f, rec);
  out->flags = QINS_MSG_END;
  return rc;
}

static const char *const metrics[] = {"qins_eval_kl", "qins_eval_topk_overlap", "qins_eval_top1_agree",
                                      "qins_eval_records_total", NULL};

const qins_stage_type qins_stage_logit_compare = {
    .name = "logit_compare",
    .summary = "join of two branches' logits: next-token KL both ways, top-k overlap, top-1 agreement",
    .options = opts,
    .in_port = "f32[*,vocab]",
    .out_port = "u8[N]",
    .metrics = metrics,
    .join = 2,
    .init = init,
    .forward_join = fwd,
    .forget = forget,
    .fini = fini,
};
