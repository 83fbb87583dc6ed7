/* Metrics registry: counters, gauges and histograms with a stage/worker label, in one process.
 * Workers publish snapshots to the coordinator; the monitor serves the coordinator's merged view
 * as JSON (/api/state) and Prometheus text (/metrics). Thread-safe. */
#ifndef QINS_METRICS_H
#define QINS_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum qins_metric_kind { QINS_METRIC_COUNTER, QINS_METRIC_GAUGE, QINS_METRIC_HISTOGRAM } qins_metric_kind;

typedef struct qins_metric qins_metric;

/* name: Prometheus style ("qins_stage_items_total"); help: one line; labels: "stage=\"embed\",worker=\"w0\""
 * (may be NULL). The same (name, labels) returns the same metric. Histograms use `bounds`
 * (ascending upper bounds, n_bounds of them; +Inf is implicit); NULL bounds: latency seconds
 * from 10 us to 10 s. */
qins_metric *qins_metric_counter(const char *name, const char *help, const char *labels);
qins_metric *qins_metric_gauge(const char *name, const char *help, const char *labels);
qins_metric *qins_metric_histogram(const char *name, const char *help, const char *labels, const double *bounds,
                                   int n_bounds);
void qins_metric_add(qins_metric *m, double v);     /* counter += v, gauge += v */
void qins_metric_set(qins_metric *m, double v);     /* gauge = v */
void qins_metric_observe(qins_metric *m, double v); /* histogram sample */
/* Replace a histogram's buckets with pre-counted ones: counts[i] samples in bucket i (n must be
 * the number of bounds + 1, the last +Inf), their total `sum`. One lock for millions of samples,
 * and re-publishing the same data (a policy applied twice) does not double it. */
void qins_metric_histogram_set(qins_metric *m, const uint64_t *counts, int n, double sum);
double qins_metric_value(const qins_metric *m);     /* counter/gauge value; histogram sum */
/* Quantile estimate (0..1) from histogram buckets (linear within a bucket). */
double qins_metric_quantile(const qins_metric *m, double q);

/* Whole registry as JSON text (caller frees with free()):
 * {"metrics":[{"name","help","kind","labels":{...},"value"|"buckets":[[le,count]...],"sum","count"}]}
 * kind is "counter"|"gauge"|"histogram"; bucket counts are per bucket (NOT cumulative), the last
 * bucket's le is the string "+Inf"; a non-finite counter/gauge value is null. */
char *qins_metrics_json(void);
/* Merge a JSON snapshot from another process (a worker) into this registry, replacing that
 * process's previous values for the same (name, labels). */
int qins_metrics_merge_json(const char *json);
/* Prometheus text exposition format 0.0.4 (caller frees with free()). */
char *qins_metrics_prometheus(void);
void qins_metrics_reset(void); /* tests */

#endif
