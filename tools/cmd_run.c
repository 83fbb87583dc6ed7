/* `qins run PIPELINE.yaml [--set key.path=value ...]`: validate a pipeline and run it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/pipeline.h"
#include "tools/commands.h"
#include "tools/run_dashboard.h"
#include "workers/run.h"

static qins_run *volatile current_run;
static volatile int interrupted; /* for the dashboard's --dashboard-wait */

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
  if (current_run) qins_run_request_stop(current_run);
}

static void on_event(qins_run *run, int final, void *user) {
  (void)user;
  run_dashboard_event(run, final); /* dashboard hook (tools/run_dashboard.c) */
  current_run = final ? NULL : run;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins run PIPELINE.yaml [--set key.path=value ...] [--check] [--graph] [--quiet]\n\n"
          "Validates the pipeline (errors name file:line:column and the key), spawns its workers,\n"
          "feeds its inputs and writes one JSON record per request (outputs.jsonl, else stdout).\n\n"
          "  --set k.path=v  override a key before validation (list items by index or by name:\n"
          "                  --set stages.sample.options.max_tokens=16); repeatable\n"
          "  --check         validate only, print a summary\n"
          "  --graph         validate only, print the stage/worker/edge graph as JSON\n"
          "  --quiet         no progress lines on stderr\n\n%s\n"
          "exit status: 0 all requests answered, 1 a worker failed (see the message), 2 bad pipeline/input\n"
          "see docs/pipelines.md and docs/dashboard.md\n",
          run_dashboard_help());
}

int cmd_run(int argc, char **argv) {
  const char *path = NULL;
  const char **sets = calloc((size_t)argc + 1, sizeof(char *));
  int n_sets = 0, check = 0, graph = 0, quiet = 0;
  if (!sets) return 1;
  for (int i = 1; i < argc; i++) {
    int drc = run_dashboard_arg(argc, argv, &i); /* dashboard hook: --dashboard... */
    if (drc < 0) {
      free(sets);
      return qins_cli_fail(drc);
    }
    if (drc > 0) continue;
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      free(sets);
      return 0;
    } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
      sets[n_sets++] = argv[++i];
    } else if (!strncmp(argv[i], "--set=", 6)) {
      sets[n_sets++] = argv[i] + 6;
    } else if (!strcmp(argv[i], "--check")) {
      check = 1;
    } else if (!strcmp(argv[i], "--graph")) {
      graph = 1;
    } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
      quiet = 1;
    } else if (argv[i][0] == '-' || path) {
      fprintf(stderr, "qins run: unexpected argument '%s'\n", argv[i]);
      usage(stderr);
      free(sets);
      return 2;
    } else {
      path = argv[i];
    }
  }
  if (!path) {
    usage(stderr);
    free(sets);
    return 2;
  }
  qins_pipeline *pl;
  int rc = qins_pipeline_load(path, sets, n_sets, &pl);
  free(sets);
  if (rc) return qins_cli_fail(rc);
  if ((rc = run_dashboard_config(pl))) { /* dashboard hook: the pipeline's monitor: key */
    qins_pipeline_free(pl);
    return qins_cli_fail(rc);
  }
  if (graph) {
    char *g = qins_pipeline_graph_json(pl);
    printf("%s\n", g ? g : "{}");
    free(g);
    qins_pipeline_free(pl);
    return 0;
  }
  if (check) {
    int inst = 0;
    for (int i = 0; i < pl->n_workers; i++) inst += pl->workers[i].replicas;
    printf("%s: ok: pipeline '%s', %d stage(s), %d edge(s), %d worker(s), %d process(es)\n", path, pl->name,
           pl->n_stages, pl->n_edges, pl->n_workers, inst);
    qins_pipeline_free(pl);
    return 0;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  qins_run_opts opts = {0};
  opts.quiet = quiet;
  opts.on_event = on_event;
  rc = qins_run_pipeline(pl, &opts);
  qins_pipeline_free(pl);
  run_dashboard_finish(&interrupted); /* dashboard hook */
  if (rc) {
    fprintf(stderr, "qins run: %s\n", qins_error_msg());
    return qins_error_exit_code(rc);
  }
  return 0;
}
