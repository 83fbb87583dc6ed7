/* Stage type `compare`: the greedy ids of two branches of one request (the f32 model and a QINS
 * policy, say), joined by the worker; at the end of both it writes the token match rate and the
 * first divergence (qins_eval_match) into the request's record and the stage's metrics. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/eval/eval.h"
#include "stages/eval_stage.h"
#include "stages/model_shared.h"

typedef struct ids {
  int32_t *v;
  int n, cap;
} ids;

typedef struct creq {
  ids b[2];
  int ended[2];
} creq;

typedef struct cmp {
  qins_reqstate *reqs;
  qins_eval_mean match, first_div;
  qins_metric *records;
} cmp;

static void creq_free(void *p, void *u) {
  (void)u;
  creq *r = p;
  if (!r) return;
  free(r->b[0].v);
  free(r->b[1].v);
  free(r);
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  cmp *c = calloc(1, sizeof *c);
  if (!c) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = c;
  qins_eval_mean_init(&c->match, ctx, "qins_eval_match_rate", "greedy token match rate of two branches (mean over records)", NULL);
  qins_eval_mean_init(&c->first_div, ctx, "qins_eval_first_divergence", "first differing generated token (mean over records)", NULL);
  c->records = qins_eval_records_metric(ctx);
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  cmp *c = st->priv;
  qins_reqstate_forget(&c->reqs, req, below, creq_free, NULL);
}

static void fini(qins_stage *st) {
  cmp *c = st->priv;
  if (!c) return;
  qins_reqstate_clear(&c->reqs, creq_free, NULL);
  free(c);
}

static int append(ids *a, const qins_msg *m) {
  int n = (int)m->shape[0];
  if (a->n + n > a->cap) {
    int cap = (a->n + n) * 2 + 16;
    int32_t *p = realloc(a->v, sizeof(int32_t) * (size_t)cap);
    if (!p) return qins_error_set(QINS_ENOMEM, "out of memory");
    a->v = p;
    a->cap = cap;
  }
  memcpy(a->v + a->n, m->data, sizeof(int32_t) * (size_t)n);
  a->n += n;
  return 0;
}

static json_t *id_array(const ids *a) {
  json_t *j = json_array();
  for (int i = 0; i < a->n; i++) json_array_append_new(j, json_integer(a->v[i]));
  return j;
}

static int fwd(qins_stage *st, const qins_msg *const *in, int n, qins_msg *out) {
  cmp *c = st->priv;
  const qins_msg *f = qins_eval_first(in, n);
  for (int k = 0; k < 2; k++)
    if (qins_eval_data(in[k]) && (in[k]->dtype != QINS_DT_I32 || in[k]->ndim != 1))
      return qins_error_set(QINS_EINPUT, "compare %s: branch %d: expected i32[T] token ids", st->ctx.stage_name, k);
  creq *r = qins_reqstate_get(&c->reqs, f->req, f->attempt, sizeof *r);
  if (!r) return QINS_ENOMEM;
  for (int k = 0; k < 2; k++) {
    if (!in[k]) continue;
    if (qins_eval_data(in[k])) { /* an end marker brings no ids, only the end */
      int rc = append(&r->b[k], in[k]);
      if (rc) return rc;
    }
    if (in[k]->flags & QINS_MSG_END) r->ended[k] = 1;
  }
  if (!r->ended[0] || !r->ended[1]) return 0;
  /* positions one branch did not reach count as differing (a shorter run diverged by stopping) */
  int len = r->b[0].n > r->b[1].n ? r->b[0].n : r->b[1].n;
  int32_t *a = malloc(sizeof(int32_t) * (size_t)(len + 1)), *b = malloc(sizeof(int32_t) * (size_t)(len + 1));
  if (!a || !b) {
    free(a);
    free(b);
    return qins_error_set(QINS_ENOMEM, "out of memory");
  }
  for (int i = 0; i < len; i++) {
    a[i] = i < r->b[0].n ? r->b[0].v[i] : -1;
    b[i] = i < r->b[1].n ? r->b[1].v[i] : -2;
  }
  int first;
  double match = qins_eval_match(a, b, len, &first);
  free(a);
  free(b);
  json_t *rec = json_object();
  json_object_set_new(rec, "eval", json_string("compare"));
  json_object_set_new(rec, "match", json_real(match));
  json_object_set_new(rec, "first_divergence", json_integer(first));
  json_object_set_new(rec, "tokens", json_integer(len));
  json_object_set_new(rec, "ids_a", id_array(&r->b[0]));
  json_object_set_new(rec, "ids_b", id_array(&r->b[1]));
  qins_eval_mean_add(&c->match, match);
  qins_eval_mean_add(&c->first_div, first);
  qins_metric_add(c->records, 1);
  forget(st, f->req, f->attempt + 1);
  int rc = qins_eval_emit(out, f, rec);
  out->flags = QINS_MSG_END;
  return rc;
}

static const char *const metrics[] = {"qins_eval_match_rate", "qins_eval_first_divergence", "qins_eval_records_total", NULL};

const qins_stage_type qins_stage_compare = {
    .name = "compare",
    .summary = "join of two greedy branches' ids: token match rate and first divergence per request",
    .in_port = "i32[T]",
    .out_port = "u8[N]",
    .metrics = metrics,
    .join = 2,
    .init = init,
    .forward_join = fwd,
    .forget = forget,
    .fini = fini,
};
