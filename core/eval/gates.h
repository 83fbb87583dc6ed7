/* The plan's gates (QINS.md section 7) as measurements: each reads its parameters from
 * pipelines/gates/NAME.yaml, runs FP and QINS branches of one model, and writes
 * reports/NAME.{json,md,svg} with the measured values beside the thresholds (docs/gates.md). */
#ifndef QINS_GATES_H
#define QINS_GATES_H

#include <stddef.h>

typedef struct qins_gate_opts {
  const char *model_path;
  const char *tokenizer;  /* NULL: beside the model (tok*.bin / tokenizer.json), else none */
  const char *backend;    /* backend spec, NULL = "cpu" */
  const char *out_dir;    /* NULL = "reports" */
  const char *gate_dir;   /* where NAME.yaml lives; NULL = "pipelines/gates" */
  int quick;              /* apply the YAML's `quick:` overrides (CI) */
  const char *const *sets;/* "key=value" overrides of the gate YAML */
  int n_sets;
} qins_gate_opts;

/* Every gate, in plan order, NULL-terminated. */
extern const char *const qins_gate_names[];

/* Run gate `name`; writes the report and copies its verdict ("pass", "fail", "not-run") into
 * verdict. A gate that cannot run still writes a report (verdict not-run, with the reason) and
 * returns 0; errors in the gate's own inputs (YAML, model path) return QINS_EINPUT. */
int qins_gate_run(const char *name, const qins_gate_opts *o, char *verdict, size_t n);

#endif
