/* The dashboard hook of `qins run`: parses --dashboard flags and the `monitor:` key, and serves
 * the running coordinator's metrics and state through the monitor's providers. */
#include "tools/run_dashboard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/metrics.h"
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

void run_dashboard_event(qins_run *run, int final) {
  if (!final && !mon && (cli.enabled || cli.publish[0])) {
    qins_monitor_providers p = {.ctx = run, .metrics_json = prov_metrics, .graph_json = prov_state};
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
    qins_monitor_providers p = {.metrics_json = frozen_metrics, .graph_json = frozen_state};
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
  final_metrics = final_state = NULL;
}
