/* Stage type `merge_records`: a join of the records (JSON objects) of several eval stages for the
 * same request into one object keyed by the producing stage's name, so one pipeline gives one
 * record per request holding several measurements (compare + logit_compare + context_curve of
 * the same two branches, say). Every incoming edge is a branch (QINS_JOIN_ALL): the worker's join
 * pairs the one record each gives per request, whatever the step it came at. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/pipeline.h"
#include "stages/eval_stage.h"

typedef struct merge {
  int n;
  const char **names; /* [n]: producer stage of branch k (the pipeline owns the strings) */
  qins_metric *records;
} merge;

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  merge *m = calloc(1, sizeof *m);
  if (!m) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = m;
  const qins_pipeline *pl = ctx->pipeline;
  int me = pl ? qins_pipeline_stage_index(pl, ctx->stage_name) : -1;
  if (me < 0) return qins_error_set(QINS_EINPUT, "merge_records %s: not in a pipeline", ctx->stage_name);
  /* branch k = the k-th incoming non-loop edge in listed order (as the worker numbers them) */
  for (int e = 0; e < pl->n_edges; e++) m->n += pl->edges[e].to == me && !pl->edges[e].loop;
  m->names = calloc((size_t)(m->n ? m->n : 1), sizeof *m->names);
  if (!m->names) return qins_error_set(QINS_ENOMEM, "out of memory");
  for (int e = 0, k = 0; e < pl->n_edges; e++)
    if (pl->edges[e].to == me && !pl->edges[e].loop) {
      const char *name = pl->stages[pl->edges[e].from].name;
      for (int j = 0; j < k; j++)
        if (!strcmp(m->names[j], name))
          return qins_error_set(QINS_EINPUT, "merge_records %s: two edges from '%s': its records would share a key",
                                ctx->stage_name, name);
      m->names[k++] = name;
    }
  m->records = qins_eval_records_metric(ctx);
  return 0;
}

static void fini(qins_stage *st) {
  merge *m = st->priv;
  if (!m) return;
  free(m->names);
  free(m);
}

static int fwd(qins_stage *st, const qins_msg *const *in, int n, qins_msg *out) {
  merge *m = st->priv;
  const qins_msg *f = qins_eval_first(in, n);
  if (n != m->n)
    return qins_error_set(QINS_EINTERNAL, "merge_records %s: %d branches joined, %d expected", st->ctx.stage_name, n, m->n);
  json_t *rec = json_object();
  json_object_set_new(rec, "eval", json_string("merge_records"));
  for (int k = 0; k < n; k++) {
    const qins_msg *d = qins_eval_data(in[k]);
    json_t *v = NULL;
    if (!d) {
      v = json_null(); /* cannot happen with eval stages (one record each), but never crash */
    } else if (d->dtype != QINS_DT_U8 || d->ndim != 1) {
      json_decref(rec);
      return qins_error_set(QINS_EINPUT, "merge_records %s, request %llu: branch '%s': expected u8[N] text",
                            st->ctx.stage_name, (unsigned long long)f->req, m->names[k]);
    } else {
      v = json_loadb(d->data, d->nbytes, JSON_DECODE_ANY, NULL);
      if (!v) v = json_stringn(d->data, d->nbytes); /* not JSON: kept as text */
      if (!v) v = json_null();                      /* not UTF-8 either */
    }
    json_object_set_new(rec, m->names[k], v);
  }
  qins_metric_add(m->records, 1);
  return qins_eval_emit(out, f, rec);
}

static const char *const metrics[] = {"qins_eval_records_total", NULL};

const qins_stage_type qins_stage_merge_records = {
    .name = "merge_records",
    .summary = "join of several eval stages' records of a request into one JSON object keyed by stage name",
    .in_port = "u8[N]",
    .out_port = "u8[N]",
    .metrics = metrics,
    .join = QINS_JOIN_ALL,
    .init = init,
    .forward_join = fwd,
    .fini = fini,
};
