/* Dashboard options shared by `qins run` and `qins monitor`: flag parsing, YAML `monitor:` keys, start. */
#ifndef QINS_MONITOR_CLI_H
#define QINS_MONITOR_CLI_H

#include "monitor/monitor.h"

typedef struct qins_monitor_cli {
  int enabled;       /* --dashboard given, or monitor.dashboard in the pipeline YAML */
  char addr[128];    /* "" : 127.0.0.1:0 (ephemeral port, printed) */
  int allow_public;  /* --dashboard-public */
  char token[201];   /* --dashboard-token; generated when public and empty */
  char web_dir[512]; /* --dashboard-web DIR: serve assets from a folder instead of the binary */
  char publish[256]; /* --monitor-publish ENDPOINT: PUB snapshots for `qins monitor --connect` */
  int tick_ms;       /* --monitor-tick-ms; 0: 1000 */
} qins_monitor_cli;

/* If argv[*i] is one of our flags, consume it (and its value, advancing *i) and return 1;
 * return 0 when it is not ours; a negative QINS_E* code for a bad value. `--dashboard` takes
 * an optional ADDR:PORT (also `--dashboard=ADDR`): the next argument is used only if it parses
 * as an address. */
int qins_monitor_cli_arg(qins_monitor_cli *c, int argc, char **argv, int *i);
/* One `monitor:` YAML key: dashboard (true/false or ADDR:PORT), public (bool), token,
 * publish (endpoint), tick_ms, web. Unknown keys: QINS_EINPUT naming the key. Command-line
 * flags win: call this before parsing argv. */
int qins_monitor_cli_set(qins_monitor_cli *c, const char *key, const char *value);
/* Help text for the flags above (for --help). */
const char *qins_monitor_cli_help(void);
/* Start what the options ask for (HTTP dashboard and/or PUB socket), register providers and
 * let the monitor tick them every tick_ms; prints "dashboard: URL" on stdout. *out is NULL
 * (and 0 returned) when nothing was asked. */
int qins_monitor_cli_start(qins_monitor_cli *c, const qins_monitor_providers *p, qins_monitor **out);

#endif
