/* Training reports: loss curves read back from train_log.jsonl files, a small SVG line-plot
 * writer, and the C3 pilot report (FP/AdamW vs QINS/QINS-AdamW and the storage ablation). */
#ifndef QINS_TRAIN_REPORT_H
#define QINS_TRAIN_REPORT_H

#include <stdint.h>

typedef struct qins_curve {
  char label[64];
  int n;              /* training steps */
  double *step, *loss;
  int n_eval;         /* evaluations */
  double *eval_step, *eval_loss;
  double tokens_per_s; /* of the last step line */
} qins_curve;

/* Read a train_log.jsonl (lines with "loss" are steps, with "eval_loss" evaluations; a resumed
 * run's duplicate steps keep the last). */
int qins_curve_read(const char *jsonl, const char *label, qins_curve *out);
void qins_curve_free(qins_curve *c);

typedef struct qins_plot_series {
  const char *label;
  const double *x, *y;
  int n;
  int dashed;         /* 1: dashed line (e.g. held-out points) */
  int color;          /* index into the palette */
} qins_plot_series;

/* A self-contained SVG line plot (axes, ticks, legend). */
int qins_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const qins_plot_series *s, int n);

/* The C3 pilot report from the three runs' logs: writes PREFIX.json, PREFIX.md, PREFIX.svg.
 * runs: fp, qins8, qins-f32 (labels and log paths); bar: allowed relative perplexity increase. */
typedef struct qins_pilot_run {
  const char *label;
  const char *log;
  const char *checkpoint;
} qins_pilot_run;
int qins_pilot_report(const char *prefix, const qins_pilot_run *runs, int n, double bar, const char *notes,
                      double *ppl_ratio);

#endif
