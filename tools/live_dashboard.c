/* --dashboard for the commands that are not pipelines (`qins gate`, `qins train`): the same flags
 * and server as `qins run`, fed by the command's own providers. */
#include "tools/live_dashboard.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "monitor/cli.h"

static qins_monitor_cli cli;
static int wait_after;
static qins_monitor *mon;
static volatile sig_atomic_t interrupted;

int live_dashboard_arg(int argc, char **argv, int *i) {
  if (!strcmp(argv[*i], "--dashboard-wait")) {
    wait_after = 1;
    return 1;
  }
  return qins_monitor_cli_arg(&cli, argc, argv, i);
}

const char *live_dashboard_help(void) {
  static char text[2048];
  snprintf(text, sizeof text, "%s  --dashboard-wait          at the end, keep serving the final state until Ctrl-C\n",
           qins_monitor_cli_help());
  return text;
}

void live_dashboard_start(const char *cmd, const qins_monitor_providers *p) {
  if (mon || (!cli.enabled && !cli.publish[0])) return;
  if (qins_monitor_cli_start(&cli, p, &mon) != 0) {
    /* the command still runs; the user learns why there is no dashboard */
    fprintf(stderr, "qins %s: dashboard not started: %s\n", cmd, qins_error_msg());
    mon = NULL;
  }
  fflush(stdout);
}

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

void live_dashboard_finish(void) {
  if (!mon) return;
  qins_monitor_tick(mon); /* the final verdicts / loss, whatever the tick period */
  if (wait_after && cli.enabled) {
    /* handlers first: whoever reads the line below may signal at once */
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    printf("dashboard: finished; still serving %s (Ctrl-C to quit)\n", qins_monitor_url(mon));
    fflush(stdout);
    struct timespec nap = {0, 200 * 1000000L};
    while (!interrupted) nanosleep(&nap, NULL);
  }
  qins_monitor_stop(mon);
  mon = NULL;
}
