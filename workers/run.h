/* Running a pipeline: the coordinator (`qins run`) that spawns and supervises worker processes,
 * and the worker process itself (`qins worker`). Also the hooks the monitor/dashboard uses. */
#ifndef QINS_RUN_H
#define QINS_RUN_H

#include <stdio.h>
#include <sys/types.h>

#include "core/pipeline.h"

typedef struct qins_run qins_run;

typedef struct qins_run_opts {
  const char *worker_exe; /* the `qins` binary to fork+exec as workers (NULL: $QINS_BIN, else /proc/self/exe) */
  FILE *records;          /* where records go when the pipeline has no outputs.jsonl (NULL: stdout) */
  int quiet;              /* no progress/info lines on stderr */
  /* Called from the coordinator's thread: once when the run exists (before workers start), then
   * about every 50 ms, and once before it is destroyed (`final` = 1). The monitor hooks in here;
   * the JSON getters below are thread-safe and may be called from any thread while the run lives. */
  void (*on_event)(qins_run *run, int final, void *user);
  void *user;
  /* Stop after this many results (0: all); for tests that interrupt a run. */
  int stop_after;
  /* Also call on_event after every answered request (tests inject faults at exact points). */
  int event_every_result;
} qins_run_opts;

/* Run to completion. 0 when every request was answered exactly once; QINS_EIPC (with a message
 * naming the worker and its stages) when a worker failed and the policy says stop or restarts
 * ran out; QINS_EINPUT for bad inputs (an unreadable inputs file, or a stage rejecting a
 * request's data, e.g. an empty prompt). */
int qins_run_pipeline(const qins_pipeline *pl, const qins_run_opts *opts);

/* Hooks (valid inside on_event). */
const qins_pipeline *qins_run_get_pipeline(const qins_run *run);
/* Merged metrics of the coordinator and every worker (same format as qins_metrics_json). */
char *qins_run_metrics_json(qins_run *run);
/* Pipeline graph (qins_pipeline_graph_json) plus live state: {"graph":{...},"instances":[{"name",
 * "worker","replica","pid","state","restarts","host"}],"requests":{"total","done","inflight"}}. */
char *qins_run_state_json(qins_run *run);
int qins_run_instance_count(const qins_run *run);
pid_t qins_run_instance_pid(const qins_run *run, int instance); /* 0 if not running or remote */
const char *qins_run_instance_name(const qins_run *run, int instance);
int qins_run_done_count(const qins_run *run);
/* Ask the run to stop (thread-safe; e.g. from a signal handler via a flag). */
void qins_run_request_stop(qins_run *run);

typedef struct qins_worker_args {
  const char *control; /* coordinator control endpoint */
  int instance;        /* -1: a remote worker joining with --connect */
  int shm_fd;          /* -1: none */
  size_t shm_size;
  const char *name;    /* remote: which worker of the pipeline to serve (NULL: the first free) */
} qins_worker_args;

/* The worker process: returns its exit status. */
int qins_worker_main(const qins_worker_args *a);

#endif
