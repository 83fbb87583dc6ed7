/* The dashboard of `qins gate` and `qins train`: --dashboard flags, starting the monitor with a
 * command's providers, and serving the final state after the command (docs/dashboard.md). */
#ifndef QINS_TOOLS_LIVE_DASHBOARD_H
#define QINS_TOOLS_LIVE_DASHBOARD_H

#include "monitor/monitor.h"

/* 1: argv[*i] was a dashboard flag (consumed, with --dashboard-wait); 0: not ours; negative: bad value. */
int live_dashboard_arg(int argc, char **argv, int *i);
const char *live_dashboard_help(void);
/* Start the monitor when a flag asked for it (prints "dashboard: URL"); p->metrics_json NULL: this
 * process's registry. A failure to start is reported on stderr and the command goes on. */
void live_dashboard_start(const char *cmd, const qins_monitor_providers *p);
/* Publish the final state once more; with --dashboard-wait keep serving it until Ctrl-C; stop. */
void live_dashboard_finish(void);

#endif
