/* Gate reports: one JSON document per gate (what ran, measured values beside the thresholds,
 * baselines, verdict) rendered also as Markdown and an SVG of its plots (docs/gates.md). */
#ifndef QINS_REPORT_H
#define QINS_REPORT_H

#include <jansson.h>

typedef struct qins_report {
  json_t *root;  /* {gate, title, verdict, reason, run{}, checks[], tables{}, plots[], notes[]} */
} qins_report;

int qins_report_init(qins_report *r, const char *gate, const char *title);
void qins_report_free(qins_report *r);
/* run.key = value (what was run: model, backend, machine, prompts, formats, alpha, ...). */
void qins_report_run_str(qins_report *r, const char *key, const char *value);
void qins_report_run_num(qins_report *r, const char *key, double value);
void qins_report_run_json(qins_report *r, const char *key, json_t *value); /* steals value */
/* A threshold check: value `op` threshold with op one of ">=", "<=", ">", "<". Returns pass (1/0).
 * Non-finite values fail. `what` names the measure (the plan's wording). */
int qins_report_check(qins_report *r, const char *what, double value, const char *op, double threshold,
                      const char *note);
/* A check that could not be measured here: verdict of that check is "not-run" with the reason. */
void qins_report_check_not_run(qins_report *r, const char *what, const char *reason);
/* A row of the named table (all rows of a table should share keys; the first row sets the columns). */
void qins_report_row(qins_report *r, const char *table, json_t *row); /* steals row */
/* A line series on the named plot (created on first use with its axis labels). */
void qins_report_series(qins_report *r, const char *plot, const char *xlabel, const char *ylabel, int logy,
                        const char *name, const double *x, const double *y, int n);
void qins_report_note(qins_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Force the verdict ("not-run" with a reason, typically). Otherwise qins_report_finish decides:
 * "fail" if any check failed, else "pass" if at least one check passed, else "not-run". */
void qins_report_set_verdict(qins_report *r, const char *verdict, const char *reason);
const char *qins_report_finish(qins_report *r);
/* Write DIR/GATE.json, DIR/GATE.md and DIR/GATE.svg (DIR created if missing). */
int qins_report_write(qins_report *r, const char *dir);

#endif
