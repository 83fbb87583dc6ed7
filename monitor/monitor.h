/* Live dashboard server: serves snapshots the coordinator publishes (page, SSE, JSON, Prometheus).
 *
 * The server never calls into stages. The coordinator (or a `qins monitor --connect` process)
 * hands it a snapshot once per tick with qins_monitor_publish(); the server formats it once and
 * every open page (SSE client) is fed from that one copy by libmicrohttpd's internal epoll
 * thread, so the number of open pages never slows the pipeline: publish costs one JSON parse
 * and a pointer swap, whatever the number of clients.
 *
 * Snapshot documents (all JSON text, each optional except metrics):
 *   metrics    qins_metrics_json() output
 *              {"metrics":[{"name","help","kind","labels":{..},"value"|"buckets","sum","count"}]}
 *   prometheus qins_metrics_prometheus() output (served as /metrics)
 *   graph      {"workers":[{"name":"w0","stages":[{"name":"embed","type":"embed"}, ...]}, ...],
 *               "edges":[{"from":"embed","to":"block0"}, ...]}
 *   gates      {"gates":[{"name":"A1","progress":0.4,"verdict":"pass"|"fail"|"running",
 *               "metric":"rel_l2","value":0.01,"threshold":0.02}, ...]}  (qins gate also: "queued", "not-run")
 *   training   {"step":12,"total_steps":100,"loss":[[step,loss], ...],"lr":1e-3}
 * Metric names the page reads are listed in docs/dashboard.md. */
#ifndef QINS_MONITOR_H
#define QINS_MONITOR_H

#include <stdint.h>

typedef struct qins_monitor qins_monitor;

typedef struct qins_monitor_opts {
  /* Binding a non-loopback address needs allow_public = 1 AND a token (>= 16 characters). */
  int allow_public;
  /* Access token: required (as ?token=, "Authorization: Bearer", or the cookie the page gets)
   * on every request when set; NULL on loopback means no token. */
  const char *token;
  /* NULL: the assets embedded at build time; else a folder of index.html/app.js/... resolved
   * once at start (nothing outside it, symlinks included, is ever served). */
  const char *web_dir;
  int heartbeat_ms; /* SSE comment line when idle; 0: 15000 */
  int retry_ms;     /* SSE "retry:" reconnect delay sent to browsers; 0: 2000 */
  int history;      /* events kept for Last-Event-ID resume; 0: 64 */
  int tick_ms;      /* with providers set: the monitor collects + publishes every tick_ms; 0: 1000 */
  /* Also send every snapshot collected by qins_monitor_tick() on a ZeroMQ PUB socket bound
   * here (tcp://127.0.0.1:5600, ipc://...), for `qins monitor --connect` in another process. */
  const char *publish;
  int no_http; /* 1: no HTTP server (only publish); addr is then ignored */
} qins_monitor_opts;

/* One snapshot; strings are JSON text (see above) and are copied by publish. NULL: absent. */
typedef struct qins_monitor_snapshot {
  const char *metrics;
  const char *prometheus;
  const char *graph;
  const char *gates;
  const char *training;
} qins_monitor_snapshot;

/* The coordinator's providers: each returns malloc'ed text (freed by the monitor with free())
 * or NULL when it has nothing. metrics_json / prometheus NULL: qins_metrics_json() /
 * qins_metrics_prometheus() of this process's registry. They are called from the thread that
 * runs qins_monitor_tick(), or from the monitor's ticker thread when started with
 * qins_monitor_run_providers(); they must be thread-safe, and never call into stages. */
typedef struct qins_monitor_providers {
  void *ctx;
  char *(*metrics_json)(void *ctx);
  char *(*prometheus)(void *ctx);
  char *(*graph_json)(void *ctx);
  char *(*gates_json)(void *ctx);
  char *(*training_json)(void *ctx);
} qins_monitor_providers;

/* addr: "HOST:PORT", "[::1]:PORT", ":PORT", "PORT" or NULL (127.0.0.1:0); HOST is numeric or
 * "localhost"; PORT 0 picks a free port (see qins_monitor_port). */
int qins_monitor_start(const char *addr, const qins_monitor_opts *opts, qins_monitor **out);
int qins_monitor_port(const qins_monitor *m);
/* "http://HOST:PORT/" plus "?token=..." when a token is set; valid until stop. */
const char *qins_monitor_url(const qins_monitor *m);
/* Copy a snapshot and make it the current state; wakes SSE clients. Returns QINS_EINPUT (and
 * keeps the previous state) when a document is not valid JSON. Thread-safe. */
int qins_monitor_publish(qins_monitor *m, const qins_monitor_snapshot *snap);
/* Sequence number of the last published snapshot (the SSE event id); 0 before the first. */
uint64_t qins_monitor_seq(const qins_monitor *m);
/* Register providers (copied). qins_monitor_tick() collects from them and publishes;
 * qins_monitor_run_providers() instead makes the monitor's own thread tick every tick_ms. */
int qins_monitor_set_providers(qins_monitor *m, const qins_monitor_providers *p);
int qins_monitor_tick(qins_monitor *m);
int qins_monitor_run_providers(qins_monitor *m);
/* Subscribe to a coordinator's snapshot PUB socket (tcp://, ipc://) and publish what arrives. */
int qins_monitor_attach(qins_monitor *m, const char *endpoint);
void qins_monitor_stop(qins_monitor *m);

/* Coordinator side of `qins monitor --connect`: a ZeroMQ PUB socket sending snapshots. Not
 * thread-safe: use it from one thread. Late or absent subscribers never block the sender. */
typedef struct qins_monitor_pub qins_monitor_pub;
int qins_monitor_pub_open(const char *endpoint, qins_monitor_pub **out);
int qins_monitor_pub_send(qins_monitor_pub *p, const qins_monitor_snapshot *snap);
void qins_monitor_pub_close(qins_monitor_pub *p);

/* Collect one snapshot from providers (NULL: this process's registry only); free with
 * qins_monitor_snapshot_free. */
int qins_monitor_snapshot_collect(const qins_monitor_providers *p, qins_monitor_snapshot *out);
void qins_monitor_snapshot_free(qins_monitor_snapshot *s);

/* Set this process's worker gauges in the registry: qins_worker_cpu_seconds_total,
 * qins_worker_rss_bytes, qins_worker_engine_bytes (qins_mem accounting) and, when
 * device_bytes >= 0, qins_worker_device_bytes; all labelled worker="<worker>". */
int qins_monitor_sample_process(const char *worker, int64_t device_bytes);

/* Parse "HOST:PORT" forms as qins_monitor_start does; is_loopback tells 127/8, ::1, localhost. */
int qins_monitor_parse_addr(const char *addr, char *host, int host_cap, int *port, int *is_loopback);

#endif
