/* `qins monitor`: serve the dashboard for a synthetic pipeline (--demo) or a running one (--connect). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "monitor/cli.h"
#include "monitor/demo.h"
#include "monitor/monitor.h"
#include "tools/commands.h"

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: qins monitor --demo [options]\n"
          "       qins monitor --connect ENDPOINT [options]\n\n"
          "Serves the live dashboard. --demo runs a synthetic pipeline (no model needed);\n"
          "--connect attaches to a pipeline started with `qins run ... --monitor-publish ENDPOINT`.\n\n"
          "  --duration SECONDS        exit after this long (default: until Ctrl-C)\n"
          "%s\nexit status: 0 ok, 1 failure, 2 bad usage\n",
          qins_monitor_cli_help());
}

int cmd_monitor(int argc, char **argv) {
  qins_monitor_cli cli = {0};
  int demo = 0;
  const char *connect = NULL;
  double duration = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    int rc = qins_monitor_cli_arg(&cli, argc, argv, &i);
    if (rc < 0) return qins_cli_fail(rc);
    if (rc > 0) continue;
    if (!strcmp(a, "--demo")) {
      demo = 1;
    } else if (!strcmp(a, "--connect") && i + 1 < argc) {
      connect = argv[++i];
    } else if (!strcmp(a, "--duration") && i + 1 < argc) {
      char *end;
      duration = strtod(argv[++i], &end);
      if (*end || duration < 0) {
        fprintf(stderr, "qins monitor: --duration '%s': expected seconds\n", argv[i]);
        return 2;
      }
    } else {
      fprintf(stderr, "qins monitor: unexpected argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (demo == (connect != NULL)) {
    fprintf(stderr, "qins monitor: give exactly one of --demo or --connect ENDPOINT\n");
    usage(stderr);
    return 2;
  }
  if (cli.publish[0] && connect) {
    fprintf(stderr, "qins monitor: --monitor-publish makes no sense with --connect\n");
    return 2;
  }
  cli.enabled = 1; /* this command always serves the page */
  if (!cli.tick_ms) cli.tick_ms = demo ? 500 : 1000;

  qins_monitor_demo *d = NULL;
  qins_monitor_providers prov;
  qins_monitor *m = NULL;
  int rc = 0;
  if (demo) {
    rc = qins_monitor_demo_create((uint64_t)time(NULL), &d);
    if (!rc) {
      qins_monitor_demo_step(d, 0.5);
      qins_monitor_demo_providers(d, &prov);
      rc = qins_monitor_cli_start(&cli, &prov, &m);
    }
  } else {
    /* Serve only what arrives from the coordinator: no local providers, no ticks. */
    qins_monitor_opts o = {.allow_public = cli.allow_public,
                           .token = cli.token[0] ? cli.token : NULL,
                           .web_dir = cli.web_dir[0] ? cli.web_dir : NULL};
    if (cli.allow_public && !cli.token[0]) {
      fprintf(stderr, "qins monitor: --dashboard-public needs --dashboard-token with --connect\n");
      return 2;
    }
    rc = qins_monitor_start(cli.addr[0] ? cli.addr : NULL, &o, &m);
    if (!rc) rc = qins_monitor_attach(m, connect);
    if (!rc) {
      printf("dashboard: %s\nattached to %s\n", qins_monitor_url(m), connect);
      fflush(stdout);
    }
  }
  if (rc) {
    qins_monitor_stop(m);
    qins_monitor_demo_destroy(d);
    return qins_cli_fail(rc);
  }

  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  struct timespec start, now, nap = {0, 100 * 1000000L};
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (!stop_flag) {
    nanosleep(&nap, NULL);
    if (d) qins_monitor_demo_step(d, 0.1);
    clock_gettime(CLOCK_MONOTONIC, &now);
    double el = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) * 1e-9;
    if (duration > 0 && el >= duration) break;
  }
  qins_monitor_stop(m);
  qins_monitor_demo_destroy(d);
  return 0;
}
