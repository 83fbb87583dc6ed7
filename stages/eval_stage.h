/* What the evaluation stages (compare, logit_compare, hidden_cosine, context_curve, perplexity)
 * share: writing a request's record as JSON, running means exported as metrics, and the per
 * request accumulators of a join. */
#ifndef QINS_STAGES_EVAL_STAGE_H
#define QINS_STAGES_EVAL_STAGE_H

#include <jansson.h>

#include "core/metrics.h"
#include "stages/stage.h"

/* A running mean over records, exported as the gauge `name`{stage, worker[, extra labels]}
 * (what the dashboard and /metrics show), plus how many values went into it. */
typedef struct qins_eval_mean {
  qins_metric *gauge;
  double sum;
  long long n;
} qins_eval_mean;

void qins_eval_mean_init(qins_eval_mean *m, const qins_stage_ctx *ctx, const char *name, const char *help,
                         const char *extra_labels);
void qins_eval_mean_add(qins_eval_mean *m, double v);

/* Counter qins_eval_records_total{stage, worker}: records an eval stage wrote. */
qins_metric *qins_eval_records_metric(const qins_stage_ctx *ctx);

/* Write `rec` (consumed) as the output text, flagged END (a request's one record); returns 1
 * (output produced) or a negative status. */
int qins_eval_emit(qins_msg *out, const qins_msg *in, json_t *rec);

/* A JSON number that stays valid JSON for inf/nan (written as null). */
json_t *qins_eval_json_num(double v);

/* The first non-NULL message of a join set (may be an end marker: it names the request). */
const qins_msg *qins_eval_first(const qins_msg *const *in, int n);
/* The two branches' next-token logits of one message set: both f32 [rows, V] of the same shape at
 * the same position, else QINS_EINPUT naming the stage, the request and both shapes. */
int qins_eval_check_logit_pair(const qins_stage *st, const char *type, uint64_t req, const qins_msg *a, const qins_msg *b);

/* A branch's message if it carries data, NULL for a hole or an end marker (QINS_MSG_MARK). */
const qins_msg *qins_eval_data(const qins_msg *m);

/* Has a branch ended at or before this set (a hole, an END message or an end marker)? */
int qins_eval_ended(const qins_msg *m);

/* Is this stage fed by a loop (a generation loop: several messages per request, the last one
 * followed by an END or an end marker), i.e. does a loop edge's target reach it over non-loop
 * edges? Without a loop a branch sends one message per request. */
int qins_eval_loop_fed(const qins_stage_ctx *ctx);

#endif
