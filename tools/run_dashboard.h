/* The dashboard hook of `qins run`: its flags, the pipeline's `monitor:` key, and serving a running coordinator. */
#ifndef QINS_TOOLS_RUN_DASHBOARD_H
#define QINS_TOOLS_RUN_DASHBOARD_H

#include "core/pipeline.h"
#include "workers/run.h"

/* 1: argv[*i] was a dashboard flag (consumed); 0: not ours; negative: bad value (message set). */
int run_dashboard_arg(int argc, char **argv, int *i);
const char *run_dashboard_help(void);
/* Apply the pipeline's `monitor:` key (an address, or on/true) unless flags already chose. */
int run_dashboard_config(const qins_pipeline *pl);
/* From qins_run_opts.on_event: starts the monitor on the first event, freezes the last state
 * on the final one (the run's memory is about to go). */
void run_dashboard_event(qins_run *run, int final);
/* After the run: keep serving the final state until Ctrl-C when --dashboard-wait was given, then stop. */
void run_dashboard_finish(volatile int *interrupted);

#endif
