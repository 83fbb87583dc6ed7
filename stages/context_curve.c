/* Stage type `context_curve`: quality against context position. Two branches' logits, joined by
 * the worker, are compared row by row (KL(a||b) with qins_eval_kl_logits, top-1 agreement) and
 * the rows binned by their absolute position, so a long prompt (head rows: all) or a long
 * generation gives the long-context curve; written into the record and per-bin metrics. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/eval/eval.h"
#include "stages/eval_stage.h"
#include "stages/model_shared.h"

#define MAX_BINS 1024

static const qins_opt_spec opts[] = {
    {"bin", QINS_OPT_INT, "64", 1, 1 << 24, "positions per bin"},
    {"temperature", QINS_OPT_FLOAT, "1", 1e-6, 1e6, "softmax temperature of the KL"},
    {"steps", QINS_OPT_INT, "0", 0, 1 << 24,
     "0: write the record when the request ends (after its one message without a generation loop, after both "
     "branches ended in one); N: after N joined messages or a branch's end, whichever comes first"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct creq {
  double kl[MAX_BINS], top1[MAX_BINS];
  long long count[MAX_BINS];
  int n_bins, sets, done;
  unsigned ended; /* bit k: branch k ended */
} creq;

typedef struct curve {
  qins_reqstate *reqs;
  int bin, steps, loop;
  double temp;
  qins_eval_mean *kl_bin; /* [MAX_BINS], made on first use */
  qins_eval_mean kl_all;
  qins_metric *records;
  const qins_stage_ctx *ctx;
} curve;

static void creq_free(void *p, void *u) {
  (void)u;
  free(p);
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  curve *c = calloc(1, sizeof *c);
  if (!c) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = c;
  c->bin = (int)qins_stage_opt_int(st, "bin");
  c->steps = (int)qins_stage_opt_int(st, "steps");
  c->loop = qins_eval_loop_fed(ctx);
  c->temp = qins_stage_opt_float(st, "temperature");
  c->ctx = &st->ctx;
  c->kl_bin = calloc(MAX_BINS, sizeof *c->kl_bin);
  if (!c->kl_bin) return qins_error_set(QINS_ENOMEM, "out of memory");
  qins_eval_mean_init(&c->kl_all, ctx, "qins_eval_context_kl", "mean KL(a||b) per context-position bin (mean over records)",
                      "bin=\"all\"");
  c->records = qins_eval_records_metric(ctx);
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  curve *c = st->priv;
  qins_reqstate_forget(&c->reqs, req, below, creq_free, NULL);
}

static void fini(qins_stage *st) {
  curve *c = st->priv;
  if (!c) return;
  qins_reqstate_clear(&c->reqs, creq_free, NULL);
  free(c->kl_bin);
  free(c);
}

static int fwd(qins_stage *st, const qins_msg *const *in, int n, qins_msg *out) {
  curve *c = st->priv;
  const qins_msg *f = qins_eval_first(in, n);
  creq *r = qins_reqstate_get(&c->reqs, f->req, f->attempt, sizeof *r);
  if (!r) return QINS_ENOMEM;
  if (r->done) return 0; /* the record is written; the coordinator's FORGET frees this */
  r->sets++;
  const qins_msg *a = qins_eval_data(in[0]), *b = qins_eval_data(in[1]);
  if (a && b) {
    int rc = qins_eval_check_logit_pair(st, "context_curve", f->req, a, b);
    if (rc) return rc;
    int V = (int)a->shape[1];
    for (int64_t t = 0; t < a->shape[0]; t++) {
      int64_t pos = a->pos + t;
      int k = (int)(pos / c->bin);
      if (k >= MAX_BINS) k = MAX_BINS - 1;
      const float *la = (const float *)a->data + t * V, *lb = (const float *)b->data + t * V;
      r->kl[k] += qins_eval_kl_logits(la, lb, V, c->temp);
      r->top1[k] += qins_eval_topk_overlap(la, lb, V, 1);
      r->count[k]++;
      if (k + 1 > r->n_bins) r->n_bins = k + 1;
    }
  }
  for (int k = 0; k < 2; k++)
    if (qins_eval_ended(in[k])) r->ended |= 1u << k;
  /* steps 0: one message per request without a loop; in a loop, until both branches ended (every
   * end reaches here: sample's END travels on as an end marker, stages/stage.h) */
  int write = c->steps > 0 ? r->sets >= c->steps || r->ended : !c->loop || r->ended == 3u;
  if (!write) return 0;
  json_t *rec = json_object(), *jp = json_array(), *jk = json_array(), *j1 = json_array(), *jc = json_array();
  double kl_all = 0;
  long long rows = 0;
  for (int k = 0; k < r->n_bins; k++) {
    if (!r->count[k]) continue;
    double kl = r->kl[k] / (double)r->count[k];
    json_array_append_new(jp, json_integer((json_int_t)k * c->bin));
    json_array_append_new(jk, qins_eval_json_num(kl));
    json_array_append_new(j1, json_real(r->top1[k] / (double)r->count[k]));
    json_array_append_new(jc, json_integer(r->count[k]));
    kl_all += r->kl[k];
    rows += r->count[k];
    if (!c->kl_bin[k].gauge) {
      char lab[64];
      snprintf(lab, sizeof lab, "bin=\"%lld\"", (long long)k * c->bin);
      qins_eval_mean_init(&c->kl_bin[k], c->ctx, "qins_eval_context_kl",
                          "mean KL(a||b) per context-position bin (mean over records)", lab);
    }
    qins_eval_mean_add(&c->kl_bin[k], kl);
  }
  json_object_set_new(rec, "eval", json_string("context_curve"));
  json_object_set_new(rec, "bin", json_integer(c->bin));
  json_object_set_new(rec, "rows", json_integer(rows));
  json_object_set_new(rec, "kl_mean", qins_eval_json_num(rows ? kl_all / (double)rows : NAN));
  json_object_set_new(rec, "positions", jp);
  json_object_set_new(rec, "kl", jk);
  json_object_set_new(rec, "top1_agree", j1);
  json_object_set_new(rec, "count", jc);
  if (rows) qins_eval_mean_add(&c->kl_all, kl_all / (double)rows);
  qins_metric_add(c->records, 1);
  r->done = 1;
  int rc = qins_eval_emit(out, f, rec);
  out->flags = QINS_MSG_END;
  return rc;
}

static const char *const metrics[] = {"qins_eval_context_kl", "qins_eval_records_total", NULL};

const qins_stage_type qins_stage_context_curve = {
    .name = "context_curve",
    .summary = "join of two branches' logits: KL and top-1 agreement binned by context position",
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
