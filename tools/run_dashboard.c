/* The dashboard hook of `qins run`: parses --dashboard flags and the `monitor:` key, and serves
 * the running coordinator's metrics and state through the monitor's providers. */
#include "tools/run_dashboard.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/metrics.h"
#include "stages/stage.h"
#include "monitor/cli.h"
#include "monitor/monitor.h"

static qins_monitor_cli cli;
static int wait_after;
static qins_monitor *mon;
static char *final_metrics, *final_state;

int run_dashboard_arg(int argc, char **argv, int *i) {
  if (!strcmp(argv[*i], "--dashboard-wait")) {
    wait_after = 1;
    return 1;
  }
  return qins_monitor_cli_arg(&cli, argc, argv, i);
}

const char *run_dashboard_help(void) {
  static char text[2048];
  snprintf(text, sizeof text, "%s  --dashboard-wait          after the run, keep serving its final state until Ctrl-C\n",
           qins_monitor_cli_help());
  return text;
}

int run_dashboard_config(const qins_pipeline *pl) {
  if (!pl->monitor || !pl->monitor[0]) return 0;
  /* monitor: "tcp://..." / "ipc://..." publishes snapshots for `qins monitor --connect`;
   * anything else is the dashboard address (or on/off). Flags win over the YAML. */
  if (!strncmp(pl->monitor, "tcp://", 6) || !strncmp(pl->monitor, "ipc://", 6)) {
    if (cli.publish[0]) return 0;
    return qins_monitor_cli_set(&cli, "publish", pl->monitor);
  }
  if (cli.enabled) return 0;
  return qins_monitor_cli_set(&cli, "dashboard", pl->monitor);
}

/* Providers run on the monitor's ticker thread; qins_run's JSON getters are thread-safe. */
static char *prov_metrics(void *ctx) {
  qins_monitor_sample_process("coordinator", -1);
  return qins_run_metrics_json(ctx);
}
static char *prov_state(void *ctx) { return qins_run_state_json(ctx); }
static char *frozen_metrics(void *ctx) {
  (void)ctx;
  return final_metrics ? strdup(final_metrics) : NULL;
}
static char *frozen_state(void *ctx) {
  (void)ctx;
  return final_state ? strdup(final_state) : NULL;
}

/* A train pipeline (stages train_*): the dashboard's training document (loss curve, step, lr)
 * from the train_log stage's qins_train_* metrics as the workers' heartbeats bring them, so
 * `qins run pipelines/train/pilot-split.yaml --dashboard` shows what `qins train --dashboard` does. */
enum { CURVE_CAP = 2048 };
static struct {
  pthread_mutex_t mu;
  int n;
  double pts[CURVE_CAP][2];
  double step, total, lr;
  char *frozen;
} tcurve = {PTHREAD_MUTEX_INITIALIZER, 0, {{0}}, 0, 0, 0, NULL};

static double metric_value(json_t *list, const char *name) {
  size_t i;
  json_t *e;
  json_array_foreach(list, i, e) {
    const char *n = json_string_value(json_object_get(e, "name"));
    if (n && !strcmp(n, name)) return json_is_number(json_object_get(e, "value")) ? json_number_value(json_object_get(e, "value")) : NAN;
  }
  return NAN;
}

static char *training_doc(void) {
  if (tcurve.step <= 0) return NULL;
  json_t *loss = json_array();
  for (int i = 0; i < tcurve.n; i++)
    json_array_append_new(loss, isfinite(tcurve.pts[i][1]) ? json_pack("[f,f]", tcurve.pts[i][0], tcurve.pts[i][1])
                                                           : json_pack("[f,n]", tcurve.pts[i][0]));
  json_t *doc = json_pack("{s:I,s:I,s:o,s:f}", "step", (json_int_t)tcurve.step, "total_steps", (json_int_t)tcurve.total,
                          "loss", loss, "lr", isfinite(tcurve.lr) ? tcurve.lr : 0.0);
  char *s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  return s;
}

/* Add the latest step from a metrics snapshot to the curve (caller holds tcurve.mu). */
static void curve_update(const char *mj) {
  json_t *root = mj ? json_loads(mj, 0, NULL) : NULL;
  json_t *list = json_object_get(root, "metrics");
  double step = metric_value(list, "qins_train_step");
  if (isfinite(step) && step > tcurve.step) {
    tcurve.step = step;
    tcurve.total = metric_value(list, "qins_train_total_steps");
    if (!isfinite(tcurve.total)) tcurve.total = step;
    tcurve.lr = metric_value(list, "qins_train_lr");
    if (tcurve.n == CURVE_CAP) { /* keep every other point */
      for (int i = 0; i < CURVE_CAP / 2; i++) memcpy(tcurve.pts[i], tcurve.pts[2 * i + 1], sizeof tcurve.pts[i]);
      tcurve.n = CURVE_CAP / 2;
    }
    tcurve.pts[tcurve.n][0] = step;
    tcurve.pts[tcurve.n][1] = metric_value(list, "qins_train_loss");
    tcurve.n++;
  }
  json_decref(root);
}

static char *prov_training(void *ctx) {
  char *mj = qins_run_metrics_json(ctx);
  pthread_mutex_lock(&tcurve.mu);
  curve_update(mj);
  char *doc = training_doc();
  pthread_mutex_unlock(&tcurve.mu);
  free(mj);
  return doc;
}
static char *frozen_training(void *ctx) {
  (void)ctx;
  return tcurve.frozen ? strdup(tcurve.frozen) : NULL;
}

void run_dashboard_event(qins_run *run, int final) {
  if (!final && !mon && (cli.enabled || cli.publish[0])) {
    qins_monitor_providers p = {.ctx = run, .metrics_json = prov_metrics, .graph_json = prov_state};
    const qins_pipeline *pl = qins_run_get_pipeline(run);
    for (int i = 0; pl && i < pl->n_stages; i++)
      if (!strcmp(pl->stages[i].type->name, "train_log")) p.training_json = prov_training;
    if (qins_monitor_cli_start(&cli, &p, &mon) != 0) {
      /* The pipeline still runs; the user learns why there is no dashboard. */
      fprintf(stderr, "qins run: dashboard not started: %s\n", qins_error_msg());
      cli.enabled = 0;
      cli.publish[0] = 0;
    }
    return;
  }
  if (final && mon) {
    final_metrics = qins_run_metrics_json(run);
    final_state = qins_run_state_json(run);
    pthread_mutex_lock(&tcurve.mu);
    curve_update(final_metrics); /* the last steps' heartbeats (no-op without qins_train_step) */
    tcurve.frozen = training_doc();
    pthread_mutex_unlock(&tcurve.mu);
    qins_monitor_providers p = {.metrics_json = frozen_metrics, .graph_json = frozen_state,
                                .training_json = tcurve.frozen ? frozen_training : NULL};
    qins_monitor_set_providers(mon, &p); /* returns once no provider reads the run any more */
    qins_monitor_tick(mon);
  }
}

void run_dashboard_finish(volatile int *interrupted) {
  if (mon && wait_after && cli.enabled) {
    printf("dashboard: run finished; still serving %s (Ctrl-C to quit)\n", qins_monitor_url(mon));
    fflush(stdout);
    struct timespec nap = {0, 200 * 1000000L};
    while (!*interrupted) nanosleep(&nap, NULL);
  }
  qins_monitor_stop(mon);
  mon = NULL;
  free(final_metrics);
  free(final_state);
  free(tcurve.frozen);
  tcurve.frozen = NULL;
  final_metrics = final_state = NULL;
}
