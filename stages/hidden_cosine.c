/* Stage type `hidden_cosine`: the hidden states after every layer of two branches (each from a
 * qins_block with `emit: layers`, f32[L,T,dim]), joined by the worker: per layer the mean over
 * rows of qins_eval_cosine, as qins_eval_layer_cosine computes it in one process. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/eval/eval.h"
#include "stages/eval_stage.h"
#include "stages/model_shared.h"

#define MAX_LAYERS 256

typedef struct hcos {
  qins_eval_mean layer[MAX_LAYERS], min;
  qins_metric *records;
  qins_reqstate *done; /* requests whose record is written (a loop's later steps are ignored) */
} hcos;

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  hcos *h = calloc(1, sizeof *h);
  if (!h) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = h;
  qins_eval_mean_init(&h->min, ctx, "qins_eval_hidden_cosine", "mean cosine of two branches' hidden rows per layer (mean over records)",
                      "layer=\"min\"");
  h->records = qins_eval_records_metric(ctx);
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  hcos *h = st->priv;
  qins_reqstate_forget(&h->done, req, below, NULL, NULL);
}

static void fini(qins_stage *st) {
  hcos *h = st->priv;
  if (!h) return;
  qins_reqstate_clear(&h->done, NULL, NULL);
  free(h);
}

static int fwd(qins_stage *st, const qins_msg *const *in, int n, qins_msg *out) {
  hcos *h = st->priv;
  const qins_msg *f = qins_eval_first(in, n);
  const qins_msg *a = qins_eval_data(in[0]), *b = qins_eval_data(in[1]);
  if (!a || !b) return 0; /* one branch ended before this step (a hole, an end marker): nothing to compare */
  if (qins_reqstate_find(h->done, f->req, f->attempt)) return 0; /* one record per request: the first set */
  if (a->dtype != QINS_DT_F32 || b->dtype != QINS_DT_F32 || a->ndim != 3 || b->ndim != 3 ||
      memcmp(a->shape, b->shape, 3 * sizeof a->shape[0]) != 0)
    return qins_error_set(QINS_EINPUT,
                          "hidden_cosine %s, request %llu: branch mismatch: expected the same f32[L,T,dim] from both "
                          "branches (qins_block emit: layers), got rank %d and %d",
                          st->ctx.stage_name, (unsigned long long)f->req, a->ndim, b->ndim);
  int L = (int)a->shape[0], T = (int)a->shape[1], D = (int)a->shape[2];
  json_t *rec = json_object(), *jc = json_array();
  double mn = INFINITY;
  for (int l = 0; l < L; l++) {
    const float *xa = (const float *)a->data + (size_t)l * T * D, *xb = (const float *)b->data + (size_t)l * T * D;
    double s = 0;
    for (int r = 0; r < T; r++) s += qins_eval_cosine(xa + (size_t)r * D, xb + (size_t)r * D, D);
    double cos = T ? s / T : 1;
    json_array_append_new(jc, json_real(cos));
    if (cos < mn) mn = cos;
    if (l < MAX_LAYERS) {
      if (!h->layer[l].gauge) {
        char lab[48];
        snprintf(lab, sizeof lab, "layer=\"%d\"", l);
        qins_eval_mean_init(&h->layer[l], &st->ctx, "qins_eval_hidden_cosine",
                            "mean cosine of two branches' hidden rows per layer (mean over records)", lab);
      }
      qins_eval_mean_add(&h->layer[l], cos);
    }
  }
  json_object_set_new(rec, "eval", json_string("hidden_cosine"));
  json_object_set_new(rec, "layers", json_integer(L));
  json_object_set_new(rec, "rows", json_integer(T));
  json_object_set_new(rec, "cosine", jc);
  json_object_set_new(rec, "min", qins_eval_json_num(mn));
  qins_eval_mean_add(&h->min, mn);
  qins_metric_add(h->records, 1);
  int rd = qins_reqstate_add(&h->done, f->req, f->attempt, h); /* data: any non-NULL marker */
  if (rd) {
    json_decref(rec);
    return rd;
  }
  int rc = qins_eval_emit(out, f, rec);
  out->flags = QINS_MSG_END;
  return rc;
}

static const char *const metrics[] = {"qins_eval_hidden_cosine", "qins_eval_records_total", NULL};

const qins_stage_type qins_stage_hidden_cosine = {
    .name = "hidden_cosine",
    .summary = "join of two branches' per-layer hidden states (qins_block emit: layers): cosine per layer",
    .in_port = "f32[L,T,dim]",
    .out_port = "u8[N]",
    .metrics = metrics,
    .join = 2,
    .init = init,
    .forward_join = fwd,
    .forget = forget,
    .fini = fini,
};
