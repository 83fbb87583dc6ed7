/* Helpers shared by the evaluation stages: JSON records and running-mean metrics. */
#include "stages/eval_stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/pipeline.h"

void qins_eval_mean_init(qins_eval_mean *m, const qins_stage_ctx *ctx, const char *name, const char *help,
                         const char *extra_labels) {
  char labels[320];
  snprintf(labels, sizeof labels, "stage=\"%s\",worker=\"%s\"%s%s", ctx->stage_name,
           ctx->worker_name ? ctx->worker_name : "", extra_labels && *extra_labels ? "," : "",
           extra_labels ? extra_labels : "");
  m->gauge = qins_metric_gauge(name, help, labels);
  m->sum = 0;
  m->n = 0;
}

void qins_eval_mean_add(qins_eval_mean *m, double v) {
  if (!isfinite(v)) return; /* an infinite KL would pin the mean; the record still says it */
  m->sum += v;
  m->n++;
  qins_metric_set(m->gauge, m->sum / (double)m->n);
}

qins_metric *qins_eval_records_metric(const qins_stage_ctx *ctx) {
  char labels[256];
  snprintf(labels, sizeof labels, "stage=\"%s\",worker=\"%s\"", ctx->stage_name, ctx->worker_name ? ctx->worker_name : "");
  return qins_metric_counter("qins_eval_records_total", "records written by evaluation stages", labels);
}

json_t *qins_eval_json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

const qins_msg *qins_eval_first(const qins_msg *const *in, int n) {
  for (int k = 0; k < n; k++)
    if (in[k]) return in[k];
  return NULL;
}

int qins_eval_emit(qins_msg *out, const qins_msg *in, json_t *rec) {
  /* 17 significant digits: the numbers read back equal the doubles computed */
  char *s = json_dumps(rec, JSON_COMPACT | JSON_REAL_PRECISION(17));
  json_decref(rec);
  if (!s) return qins_error_set(QINS_ENOMEM, "out of memory writing a record");
  int rc = qins_msg_output_text(out, in, s, strlen(s));
  free(s);
  out->flags = QINS_MSG_END; /* a request's one record */
  return rc ? rc : 1;
}

const qins_msg *qins_eval_data(const qins_msg *m) { return m && !(m->flags & QINS_MSG_MARK) ? m : NULL; }

int qins_eval_ended(const qins_msg *m) { return !m || (m->flags & QINS_MSG_END); }

int qins_eval_loop_fed(const qins_stage_ctx *ctx) {
  const qins_pipeline *pl = ctx->pipeline;
  if (!pl) return 0;
  int me = qins_pipeline_stage_index(pl, ctx->stage_name);
  if (me < 0) return 0;
  /* walk back from this stage over non-loop edges; a stage reached that a loop edge enters is
   * inside the loop */
  char *seen = calloc((size_t)pl->n_stages, 1);
  int *todo = malloc(sizeof(int) * (size_t)pl->n_stages);
  int n = 0, found = 0;
  if (!seen || !todo) {
    free(seen);
    free(todo);
    return 0;
  }
  seen[me] = 1;
  todo[n++] = me;
  while (n > 0 && !found) {
    int v = todo[--n];
    for (int e = 0; e < pl->n_edges; e++) {
      const qins_pl_edge *ed = &pl->edges[e];
      if (ed->to != v) continue;
      if (ed->loop) {
        found = 1;
        break;
      }
      if (!seen[ed->from]) {
        seen[ed->from] = 1;
        todo[n++] = ed->from;
      }
    }
  }
  free(seen);
  free(todo);
  return found;
}

int qins_eval_check_logit_pair(const qins_stage *st, const char *type, uint64_t req, const qins_msg *a, const qins_msg *b) {
  if (a->dtype == QINS_DT_F32 && b->dtype == QINS_DT_F32 && a->ndim == 2 && b->ndim == 2 && a->shape[0] == b->shape[0] &&
      a->shape[1] == b->shape[1] && a->pos == b->pos)
    return 0;
  return qins_error_set(QINS_EINPUT,
                        "%s %s, request %llu: branch mismatch: a gives f32[%lld,%lld] at position %d, b f32[%lld,%lld] at "
                        "position %d",
                        type, st->ctx.stage_name, (unsigned long long)req, (long long)a->shape[0],
                        (long long)(a->ndim > 1 ? a->shape[1] : 0), a->pos, (long long)b->shape[0],
                        (long long)(b->ndim > 1 ? b->shape[1] : 0), b->pos);
}
