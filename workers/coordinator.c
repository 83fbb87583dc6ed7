/* The coordinator behind `qins run`: creates the shared arena, spawns and supervises worker
 * processes (waitpid + heartbeats), feeds requests with credits, writes each answer once, and
 * applies the restart policy (restart + replay in-flight requests, or stop cleanly). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "core/error.h"
#include "core/ipc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "workers/proto.h"
#include "workers/run.h"
#include "workers/topo.h"

enum { I_NONE, I_SPAWNED, I_HELLO, I_BOUND, I_READY, I_DEAD, I_STOPPED };
static const char *const inst_state_names[] = {"none", "starting", "hello", "bound", "running", "dead", "stopped"};

typedef struct cinst {
  int state;
  pid_t pid;
  char ident[128];
  char peer[64];
  double last_seen, started;
  int restarts;
  int peers_sent;
  int inflight;  /* requests in flight that entered through this (entry) instance */
  int rejoin;    /* a remote worker died: its replacement must tell everyone its new endpoints */
  int ack_wait;  /* a RESET_ACK is owed */
  json_t *data_ep, *credit_ep; /* {"ipc":..,"tcp":..} */
} cinst;

enum { R_PENDING, R_INFLIGHT, R_DONE };

#define QINS_MAX_WAITING 16
typedef struct waiting_joiner {
  char ident[128], peer[64], name[96];
} waiting_joiner;

typedef struct creq {
  int state;
  uint32_t attempt;
  int inst; /* entry instance it went to */
} creq;

struct qins_run {
  const qins_pipeline *pl;
  const qins_run_opts *opts;
  qins_topo topo;
  qins_shm shm;
  void *zctx, *router, *data_in, *credit_in;
  char ipc_prefix[128], control_ipc[160], tcp_host[128];
  char coord_data_ipc[200], coord_credit_ipc[200], coord_data_tcp[256], coord_credit_tcp[256];
  cinst *inst;
  uint32_t *epochs;
  qins_chan_tx *tx; /* per channel (entry channels used) */
  qins_chan_rx *rx; /* per channel (exit channels used) */
  void **push_data, **push_credit;
  int n_req;
  char **prompts, **ids;
  creq *req;
  int n_done, n_inflight;
  int next_new;      /* first request never sent (they go in input order) */
  int *replay;       /* requests to send again (a worker restarted), FIFO */
  int n_replay, replay_head;
  int feeding;
  int out_fd;
  FILE *records;
  pthread_mutex_t lock;
  atomic_int stop_requested;
  int failed;
  int fail_code; /* QINS_EINPUT when a stage rejected its input (exit status 2), else QINS_EIPC */
  char fail_msg[1024];
  uint64_t reset_token;
  int acks_pending;
  int peers_update; /* a re-joined remote worker has new endpoints: running workers must learn them */
  waiting_joiner waiting[QINS_MAX_WAITING]; /* remote workers that joined while every place was taken */
  int n_waiting;
  const char *exe;
  qins_metric *m_done, *m_inflight, *m_restarts, *m_replayed;
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *mk_socket(qins_run *r, int type) {
  void *s = zmq_socket(r->zctx, type);
  int linger = 0, hwm = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  return s;
}

/* ---- hooks ---- */

const qins_pipeline *qins_run_get_pipeline(const qins_run *run) { return run->pl; }
char *qins_run_metrics_json(qins_run *run) {
  (void)run;
  return qins_metrics_json();
}
int qins_run_instance_count(const qins_run *run) { return run->topo.n_inst; }
pid_t qins_run_instance_pid(const qins_run *run, int i) {
  if (i < 0 || i >= run->topo.n_inst) return 0;
  return run->inst[i].state == I_DEAD ? 0 : run->inst[i].pid;
}
const char *qins_run_instance_name(const qins_run *run, int i) {
  return i >= 0 && i < run->topo.n_inst ? run->topo.inst[i].name : NULL;
}
int qins_run_done_count(const qins_run *run) { return run->n_done; }
void qins_run_request_stop(qins_run *run) { atomic_store(&run->stop_requested, 1); }

char *qins_run_state_json(qins_run *run) {
  char *g = qins_pipeline_graph_json(run->pl);
  json_t *root = json_object();
  json_object_set_new(root, "graph", g ? json_loads(g, 0, NULL) : json_null());
  free(g);
  json_t *arr = json_array();
  pthread_mutex_lock(&run->lock);
  for (int i = 0; i < run->topo.n_inst; i++) {
    const qins_topo_inst *ti = &run->topo.inst[i];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(ti->name));
    json_object_set_new(o, "worker", json_string(run->pl->workers[ti->group].name));
    json_object_set_new(o, "replica", json_integer(ti->replica));
    json_object_set_new(o, "pid", json_integer(run->inst[i].pid));
    json_object_set_new(o, "state", json_string(inst_state_names[run->inst[i].state]));
    json_object_set_new(o, "restarts", json_integer(run->inst[i].restarts));
    json_object_set_new(o, "host", json_string(ti->remote ? run->inst[i].peer : "local"));
    json_array_append_new(arr, o);
  }
  json_object_set_new(root, "instances", arr);
  json_object_set_new(root, "requests", json_pack("{s:i,s:i,s:i}", "total", run->n_req, "done", run->n_done, "inflight",
                                                  run->n_inflight));
  pthread_mutex_unlock(&run->lock);
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return s;
}

/* ---- spawning ---- */

static int spawn(qins_run *r, int i) {
  char inst[16], fd[16], sz[32];
  snprintf(inst, sizeof inst, "%d", i);
  snprintf(fd, sizeof fd, "%d", r->shm.fd);
  snprintf(sz, sizeof sz, "%zu", r->shm.size);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return qins_error_set(QINS_EIPC, "fork for worker '%s': %s", r->topo.inst[i].name, strerror(errno));
  if (pid == 0) {
    /* a worker must not outlive its coordinator, even after kill -9 */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    int fl = fcntl(r->shm.fd, F_GETFD);
    if (fl >= 0) fcntl(r->shm.fd, F_SETFD, fl & ~FD_CLOEXEC);
    execl(r->exe, r->exe, "worker", "--internal", "--control", r->control_ipc, "--instance", inst, "--shm-fd", fd,
          "--shm-size", sz, (char *)NULL);
    fprintf(stderr, "qins: cannot exec %s: %s\n", r->exe, strerror(errno));
    _exit(127);
  }
  pthread_mutex_lock(&r->lock);
  r->inst[i].pid = pid;
  r->inst[i].state = I_SPAWNED;
  r->inst[i].started = r->inst[i].last_seen = now_s();
  r->inst[i].ident[0] = 0;
  r->inst[i].peers_sent = 0;
  pthread_mutex_unlock(&r->lock);
  return 0;
}

/* ---- failure ---- */

static void fail(qins_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(qins_run *r, const char *fmt, ...) {
  if (r->failed) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->fail_msg, sizeof r->fail_msg, fmt, ap);
  va_end(ap);
  r->failed = 1;
}

static void describe_status(int status, char *buf, size_t n) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    snprintf(buf, n, "killed by signal %d (%s)", sig, strsignal(sig));
  } else if (WIFEXITED(status)) {
    snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
  } else {
    snprintf(buf, n, "stopped (status 0x%x)", status);
  }
}

static void send_peers(qins_run *r, int i);

/* A worker is gone: stop, or restart it and replay what was in flight. */
static void send_config(qins_run *r, int i);

static void instance_lost(qins_run *r, int i, const char *why) {
  char stages[512];
  qins_topo_stage_list(r->pl, &r->topo, i, stages, sizeof stages);
  const char *name = r->topo.inst[i].name;
  pthread_mutex_lock(&r->lock);
  r->inst[i].state = I_DEAD;
  pthread_mutex_unlock(&r->lock);
  if (r->inst[i].ack_wait) { /* it will never acknowledge a RESET now */
    r->inst[i].ack_wait = 0;
    r->acks_pending--;
  }
  if (r->pl->restart != QINS_RESTART_RESTART) {
    fail(r, "worker '%s' (stages: %s) %s; restart policy is 'stop', stopping", name, stages, why);
    return;
  }
  if (r->inst[i].restarts >= r->pl->restart_max) {
    fail(r, "worker '%s' (stages: %s) %s; gave up after %d restart(s) (restart.max_attempts)", name, stages, why,
         r->inst[i].restarts);
    return;
  }
  if (!r->opts->quiet)
    QINS_WARN("worker '%s' (stages: %s) %s; %s", name, stages, why,
              r->topo.inst[i].remote ? "waiting for a worker to re-join (qins worker --connect)" : "restarting it");
  r->inst[i].restarts++;
  qins_metric_add(r->m_restarts, 1);
  /* new epochs for every channel touching it; peers reset their ends before the new one starts */
  json_t *chans = json_array();
  for (int c = 0; c < r->topo.n_chan; c++) {
    const qins_topo_chan *ch = &r->topo.chan[c];
    if (ch->from_inst != i && ch->to_inst != i) continue;
    r->epochs[c]++;
    json_array_append_new(chans, json_pack("[i,I]", c, (json_int_t)r->epochs[c]));
    if (ch->from_inst == QINS_COORD) qins_chan_tx_reset(&r->tx[c], r->epochs[c]);
    if (ch->to_inst == QINS_COORD) r->rx[c].epoch = r->epochs[c];
  }
  r->reset_token++;
  for (int k = 0; k < r->topo.n_inst; k++) {
    if (k == i || r->inst[k].state != I_READY) continue;
    json_t *b = json_object();
    json_object_set(b, "chans", chans);
    json_object_set_new(b, "token", json_integer((json_int_t)r->reset_token));
    if (qins_ctl_send(r->router, r->inst[k].ident, "RESET", b) == 0 && !r->inst[k].ack_wait) {
      r->acks_pending++;
      r->inst[k].ack_wait = 1;
    }
  }
  json_decref(chans);
  /* replay: every request in flight gets a new attempt; older attempts are dropped everywhere */
  json_t *reqs = json_array();
  /* compact the replay queue: what is left in it is pending, so with the requests in flight
   * added below it never holds more than n_req entries */
  memmove(r->replay, r->replay + r->replay_head, sizeof(int) * (size_t)(r->n_replay - r->replay_head));
  r->n_replay -= r->replay_head;
  r->replay_head = 0;
  for (int q = 0; q < r->n_req; q++) {
    if (r->req[q].state != R_INFLIGHT) continue;
    r->req[q].attempt++;
    r->req[q].state = R_PENDING;
    r->n_inflight--;
    r->inst[r->req[q].inst].inflight--;
    r->replay[r->n_replay++] = q;
    qins_metric_add(r->m_replayed, 1);
    json_array_append_new(reqs, json_pack("[I,I]", (json_int_t)q, (json_int_t)r->req[q].attempt));
  }
  for (int k = 0; k < r->topo.n_inst; k++) {
    if (k == i || r->inst[k].state != I_READY) continue;
    json_t *b = json_object();
    json_object_set(b, "reqs", reqs);
    qins_ctl_send(r->router, r->inst[k].ident, "FORGET", b);
  }
  json_decref(reqs);
  if (r->topo.inst[i].remote) { /* another `qins worker --connect` takes its place */
    pthread_mutex_lock(&r->lock);
    r->inst[i].state = I_SPAWNED;
    r->inst[i].ident[0] = 0;
    r->inst[i].peers_sent = 0;
    r->inst[i].rejoin = 1;
    r->inst[i].started = r->inst[i].last_seen = now_s();
    pthread_mutex_unlock(&r->lock);
    for (int k = 0; k < r->n_waiting; k++) {
      waiting_joiner *wj = &r->waiting[k];
      if (wj->name[0] && strcmp(wj->name, name) != 0) continue;
      snprintf(r->inst[i].ident, sizeof r->inst[i].ident, "%s", wj->ident);
      snprintf(r->inst[i].peer, sizeof r->inst[i].peer, "%s", wj->peer);
      memmove(wj, wj + 1, sizeof *wj * (size_t)(r->n_waiting - k - 1));
      r->n_waiting--;
      r->inst[i].state = I_HELLO;
      r->inst[i].last_seen = now_s();
      send_config(r, i);
      break;
    }
    return;
  }
  if (spawn(r, i) != 0) fail(r, "worker '%s' (stages: %s): restart failed: %s", name, stages, qins_error_msg());
}

static void check_children(qins_run *r) {
  double t = now_s();
  double hb_limit = 5.0 * r->pl->heartbeat_ms / 1000.0;
  for (int i = 0; i < r->topo.n_inst && !r->failed; i++) {
    cinst *ci = &r->inst[i];
    if (ci->state == I_DEAD || ci->state == I_STOPPED || ci->state == I_NONE) continue;
    if (ci->pid > 0) {
      int status;
      pid_t p = waitpid(ci->pid, &status, WNOHANG);
      if (p == ci->pid) {
        char why[128], full[200];
        describe_status(status, why, sizeof why);
        snprintf(full, sizeof full, "died: %s", why);
        ci->pid = 0;
        instance_lost(r, i, full);
        continue;
      }
    }
    /* startup gets longer (a model may be loading before the heartbeat thread starts) */
    double limit = ci->state == I_SPAWNED ? 30.0 : hb_limit;
    if (r->topo.inst[i].remote && ci->state == I_SPAWNED) { /* waiting for someone to join */
      if (ci->rejoin && t - ci->started > 60.0) {
        char stages[512];
        qins_topo_stage_list(r->pl, &r->topo, i, stages, sizeof stages);
        fail(r, "worker '%s' (stages: %s): no worker re-joined at %s within 60 s; stopping", r->topo.inst[i].name,
             stages, r->pl->workers[r->topo.inst[i].group].host);
      }
      continue;
    }
    if (t - ci->last_seen > limit) {
      char why[200];
      snprintf(why, sizeof why, "stopped responding: no heartbeat for %.0f ms (limit %d ms = 5 x heartbeat_ms)",
               (t - ci->last_seen) * 1000, (int)(limit * 1000));
      if (ci->pid > 0) {
        kill(ci->pid, SIGKILL);
        int status;
        waitpid(ci->pid, &status, 0);
        ci->pid = 0;
      }
      instance_lost(r, i, why);
    }
  }
}

/* ---- control ---- */

static int find_by_ident(qins_run *r, const char *ident) {
  for (int i = 0; i < r->topo.n_inst; i++)
    if (r->inst[i].ident[0] && strncmp(ident, r->inst[i].ident, strlen(r->inst[i].ident)) == 0 &&
        (ident[strlen(r->inst[i].ident)] == 0 || ident[strlen(r->inst[i].ident)] == '/'))
      return i;
  return -1;
}

static void send_config(qins_run *r, int i) {
  json_t *b = json_object();
  json_object_set_new(b, "yaml", json_stringn(r->pl->yaml_text, r->pl->yaml_len));
  json_object_set_new(b, "origin", json_string(r->pl->path));
  json_t *sets = json_array();
  for (int k = 0; k < r->pl->n_sets; k++) json_array_append_new(sets, json_string(r->pl->sets[k]));
  json_object_set_new(b, "sets", sets);
  json_object_set_new(b, "instance", json_integer(i));
  json_object_set_new(b, "ipc_prefix", json_string(r->ipc_prefix));
  json_object_set_new(b, "tcp_host", json_string(r->tcp_host));
  qins_ctl_send(r->router, r->inst[i].ident, "CONFIG", b);
}

static json_t *endpoints_json(qins_run *r) {
  json_t *arr = json_array();
  for (int i = 0; i < r->topo.n_inst; i++)
    json_array_append_new(arr, json_pack("{s:O,s:O}", "data", r->inst[i].data_ep, "credit", r->inst[i].credit_ep));
  json_t *cd = json_object(), *cc = json_object();
  json_object_set_new(cd, "ipc", json_string(r->coord_data_ipc));
  json_object_set_new(cc, "ipc", json_string(r->coord_credit_ipc));
  if (r->coord_data_tcp[0]) {
    json_object_set_new(cd, "tcp", json_string(r->coord_data_tcp));
    json_object_set_new(cc, "tcp", json_string(r->coord_credit_tcp));
  }
  json_array_append_new(arr, json_pack("{s:o,s:o}", "data", cd, "credit", cc));
  return arr;
}

static void send_peers(qins_run *r, int i) {
  json_t *b = json_object();
  json_object_set_new(b, "endpoints", endpoints_json(r));
  json_t *ep = json_array();
  for (int c = 0; c < r->topo.n_chan; c++) json_array_append_new(ep, json_integer(r->epochs[c]));
  json_object_set_new(b, "epochs", ep);
  qins_ctl_send(r->router, r->inst[i].ident, "PEERS", b);
  r->inst[i].peers_sent = 1;
}

/* tcp://0.0.0.0:P from a remote worker -> tcp://<its address as we see it>:P */
static json_t *fix_remote(json_t *ep, const char *peer) {
  const char *t = json_string_value(json_object_get(ep, "tcp"));
  if (t && peer[0] && (strstr(t, "0.0.0.0") || strstr(t, "[::]"))) {
    const char *port = strrchr(t, ':');
    char buf[256];
    snprintf(buf, sizeof buf, "tcp://%s%s", peer, port ? port : "");
    json_object_set_new(ep, "tcp", json_string(buf));
  }
  return ep;
}

static int all_bound(qins_run *r) {
  for (int i = 0; i < r->topo.n_inst; i++)
    if (!r->inst[i].data_ep) return 0;
  return 1;
}

static int coord_connect(qins_run *r);

/* Running workers get the endpoint table again and reconnect to whoever moved. */
static void broadcast_peers(qins_run *r) {
  r->peers_update = 0;
  for (int k = 0; k < r->topo.n_inst; k++)
    if (r->inst[k].state == I_READY) send_peers(r, k);
}

/* A remote instance came back on new tcp ports: our own sockets to it must follow. */
static int coord_reconnect(qins_run *r, int inst) {
  void **caches[2] = {r->push_data, r->push_credit};
  for (int w = 0; w < 2; w++)
    if (caches[w][inst]) {
      zmq_close(caches[w][inst]);
      caches[w][inst] = NULL;
    }
  for (int c = 0; c < r->topo.n_chan; c++) {
    const qins_topo_chan *ch = &r->topo.chan[c];
    int ours_tx = ch->from_inst == QINS_COORD && ch->to_inst == inst;
    int ours_rx = ch->to_inst == QINS_COORD && ch->from_inst == inst;
    if (!ours_tx && !ours_rx) continue;
    json_t *ep = ours_tx ? r->inst[inst].data_ep : r->inst[inst].credit_ep;
    const char *addr = json_string_value(json_object_get(ep, "tcp"));
    void **cache = ours_tx ? r->push_data : r->push_credit;
    if (!cache[inst]) {
      void *s = mk_socket(r, ZMQ_PUSH);
      if (!addr || zmq_connect(s, addr) != 0) {
        zmq_close(s);
        return qins_error_set(QINS_EIPC, "reconnect to worker '%s' at %s: %s", r->topo.inst[inst].name,
                              addr ? addr : "(none)", zmq_strerror(errno));
      }
      cache[inst] = s;
    }
    if (ours_tx)
      r->tx[c].sock = cache[inst];
    else
      r->rx[c].credit_sock = cache[inst];
  }
  return 0;
}

static void handle_ctl(qins_run *r, const char *ident, const char *type, json_t *body, const char *peer) {
  double t = now_s();
  if (strcmp(type, "HELLO") == 0) {
    int want = (int)json_integer_value(json_object_get(body, "instance"));
    int i = -1;
    if (want >= 0 && want < r->topo.n_inst && !r->topo.inst[want].remote) {
      i = want;
      if ((int)json_integer_value(json_object_get(body, "pid")) != r->inst[i].pid) i = -1; /* stale */
    } else if (want < 0) {
      const char *nm = json_string_value(json_object_get(body, "name"));
      for (int k = 0; k < r->topo.n_inst && i < 0; k++)
        if (r->topo.inst[k].remote && r->inst[k].state == I_SPAWNED && (!nm || !strcmp(nm, r->topo.inst[k].name))) i = k;
      if (i < 0) { /* every remote place is taken: it waits for one to free (a worker dying) */
        if (r->n_waiting < QINS_MAX_WAITING) {
          waiting_joiner *wj = &r->waiting[r->n_waiting++];
          snprintf(wj->ident, sizeof wj->ident, "%s", ident);
          snprintf(wj->peer, sizeof wj->peer, "%s", peer);
          snprintf(wj->name, sizeof wj->name, "%s", nm ? nm : "");
        } else {
          qins_ctl_send(r->router, ident, "STOP", json_pack("{s:s}", "reason", "no remote worker place free"));
        }
        return;
      }
      snprintf(r->inst[i].peer, sizeof r->inst[i].peer, "%s", peer);
      r->inst[i].pid = 0;
    }
    if (i < 0) return;
    snprintf(r->inst[i].ident, sizeof r->inst[i].ident, "%s", ident);
    r->inst[i].state = I_HELLO;
    r->inst[i].last_seen = t;
    send_config(r, i);
    return;
  }
  int i = find_by_ident(r, ident);
  if (i < 0) return;
  if (r->inst[i].state == I_DEAD) return;
  r->inst[i].last_seen = t;
  if (strcmp(type, "HB") == 0) {
    const char *m = json_string_value(json_object_get(body, "metrics"));
    if (m) qins_metrics_merge_json(m);
  } else if (strcmp(type, "BOUND") == 0) {
    json_decref(r->inst[i].data_ep);
    json_decref(r->inst[i].credit_ep);
    r->inst[i].data_ep = fix_remote(json_deep_copy(json_object_get(body, "data")), r->inst[i].peer);
    r->inst[i].credit_ep = fix_remote(json_deep_copy(json_object_get(body, "credit")), r->inst[i].peer);
    pthread_mutex_lock(&r->lock);
    r->inst[i].state = I_BOUND;
    pthread_mutex_unlock(&r->lock);
    if (r->inst[i].rejoin) {
      r->inst[i].rejoin = 0;
      if (coord_reconnect(r, i) != 0) {
        fail(r, "%s", qins_error_msg());
        return;
      }
      r->peers_update = 1; /* sent once the RESETs are acknowledged */
    }
    if (r->peers_update && r->acks_pending == 0) broadcast_peers(r);
    if (all_bound(r)) {
      if (!r->push_data[0] && coord_connect(r) != 0) {
        fail(r, "%s", qins_error_msg());
        return;
      }
      for (int k = 0; k < r->topo.n_inst; k++)
        if (r->inst[k].state == I_BOUND && !r->inst[k].peers_sent && r->acks_pending == 0) send_peers(r, k);
    }
  } else if (strcmp(type, "READY") == 0) {
    pthread_mutex_lock(&r->lock);
    r->inst[i].state = I_READY;
    pthread_mutex_unlock(&r->lock);
  } else if (strcmp(type, "RESET_ACK") == 0) {
    if (r->inst[i].ack_wait && r->acks_pending > 0) r->acks_pending--;
    r->inst[i].ack_wait = 0;
    if (r->peers_update && r->acks_pending == 0) broadcast_peers(r);
    if (r->acks_pending == 0)
      for (int k = 0; k < r->topo.n_inst; k++)
        if (r->inst[k].state == I_BOUND && !r->inst[k].peers_sent && all_bound(r)) send_peers(r, k);
  } else if (strcmp(type, "ERROR") == 0) {
    char stages[512];
    qins_topo_stage_list(r->pl, &r->topo, i, stages, sizeof stages);
    const char *st = json_string_value(json_object_get(body, "stage"));
    const char *msg = json_string_value(json_object_get(body, "message"));
    int code = (int)json_integer_value(json_object_get(body, "code"));
    if (!r->failed && code == QINS_EINPUT) r->fail_code = QINS_EINPUT;
    fail(r, "worker '%s' (stages: %s): %s%s%s", r->topo.inst[i].name, stages, st && *st ? st : "",
         st && *st ? ": " : "", msg ? msg : "unknown error");
  }
}

/* The coordinator's own channel ends: entry (we produce) and final (we consume). */
static int coord_connect(qins_run *r) {
  int n = r->topo.n_inst;
  for (int c = 0; c < r->topo.n_chan; c++) {
    const qins_topo_chan *ch = &r->topo.chan[c];
    int peer = ch->from_inst == QINS_COORD ? ch->to_inst : ch->to_inst == QINS_COORD ? ch->from_inst : -1;
    if (peer < 0) continue;
    json_t *ep = ch->from_inst == QINS_COORD ? r->inst[peer].data_ep : r->inst[peer].credit_ep;
    const char *addr = r->topo.inst[peer].remote ? json_string_value(json_object_get(ep, "tcp"))
                                                 : json_string_value(json_object_get(ep, "ipc"));
    void **cache = ch->from_inst == QINS_COORD ? r->push_data : r->push_credit;
    if (!cache[peer]) {
      void *s = mk_socket(r, ZMQ_PUSH);
      if (!addr || zmq_connect(s, addr) != 0) {
        zmq_close(s);
        return qins_error_set(QINS_EIPC, "connect to worker '%s' at %s: %s", r->topo.inst[peer].name,
                              addr ? addr : "(none)", zmq_strerror(errno));
      }
      cache[peer] = s;
    }
    if (ch->from_inst == QINS_COORD) {
      int rc = qins_chan_tx_init(&r->tx[c], c, r->pl->slots, (size_t)r->pl->slot_bytes, NULL, 0, cache[peer]);
      if (rc) return rc;
      qins_chan_tx_reset(&r->tx[c], r->epochs[c]);
    } else {
      qins_chan_rx_init(&r->rx[c], c, r->pl->slots, NULL, 0, cache[peer]);
      r->rx[c].epoch = r->epochs[c];
    }
  }
  (void)n;
  return 0;
}

/* ---- requests ---- */

static int write_record(qins_run *r, int q, const void *data, size_t n) {
  json_error_t je;
  json_t *rec = json_loadb(data, n, 0, &je);
  json_t *line = json_object();
  json_t *id = json_loads(r->ids[q], JSON_DECODE_ANY, NULL);
  json_object_set_new(line, "id", id ? id : json_string(r->ids[q]));
  if (json_is_object(rec)) {
    json_object_update(line, rec);
  } else {
    json_object_set_new(line, "output", json_stringn_nocheck(data, n));
  }
  json_decref(rec);
  char *s = json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII);
  json_decref(line);
  if (!s) return qins_error_set(QINS_ENOMEM, "out of memory writing a record");
  size_t len = strlen(s);
  s[len] = '\n'; /* one write per line: a crash never leaves half a record */
  int rc = 0;
  if (r->out_fd >= 0) {
    size_t off = 0;
    while (off < len + 1) {
      ssize_t w = write(r->out_fd, s + off, len + 1 - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        rc = qins_error_set(QINS_EIO, "%s: write: %s", r->pl->output_jsonl, strerror(errno));
        break;
      }
      off += (size_t)w;
    }
  } else {
    fwrite(s, 1, len + 1, r->records);
    fflush(r->records);
  }
  free(s);
  return rc;
}

static void handle_result(qins_run *r) {
  qins_wire_hdr h;
  qins_wire_frame f;
  while (qins_wire_recv(r->data_in, 1, &h, &f) == 1) {
    if (h.kind != QINS_WIRE_DATA || h.chan >= (uint32_t)r->topo.n_chan || r->topo.chan[h.chan].to_inst != QINS_COORD ||
        h.epoch != r->rx[h.chan].epoch) {
      qins_wire_release(&f);
      continue;
    }
    qins_msg m;
    int ok = qins_wire_to_msg(&h, &f, &r->rx[h.chan], &m) == 0;
    uint64_t q = h.req;
    if (ok && q < (uint64_t)r->n_req && r->req[q].state != R_DONE) {
      if (write_record(r, (int)q, m.data, m.nbytes) != 0) fail(r, "%s", qins_error_msg());
      pthread_mutex_lock(&r->lock);
      if (r->req[q].state == R_INFLIGHT) {
        r->n_inflight--;
        r->inst[r->req[q].inst].inflight--;
      }
      r->req[q].state = R_DONE;
      r->n_done++;
      pthread_mutex_unlock(&r->lock);
      qins_metric_add(r->m_done, 1);
      if (r->opts->event_every_result && r->opts->on_event) r->opts->on_event(r, 0, r->opts->user);
      /* anything still in flight for it (an older attempt) is dropped */
      for (int k = 0; k < r->topo.n_inst; k++)
        if (r->inst[k].state == I_READY)
          qins_ctl_send(r->router, r->inst[k].ident, "FORGET",
                        json_pack("{s:[[I,I]],s:b}", "reqs", (json_int_t)q, (json_int_t)0, "done", 1));
    }
    qins_wire_release(&f);
    qins_chan_rx_done(&r->rx[h.chan], &h);
  }
}

static void handle_credits(qins_run *r) {
  qins_wire_hdr h;
  qins_wire_frame f;
  while (qins_wire_recv(r->credit_in, 1, &h, &f) == 1) {
    qins_wire_release(&f);
    if (h.kind == QINS_WIRE_CREDIT && h.chan < (uint32_t)r->topo.n_chan && r->topo.chan[h.chan].from_inst == QINS_COORD)
      qins_chan_tx_credit(&r->tx[h.chan], &h);
  }
}

/* The next request to send: replays first, then new ones in input order. -1: none. */
static int next_request(qins_run *r, int take) {
  while (r->replay_head < r->n_replay) {
    int q = r->replay[r->replay_head];
    if (r->req[q].state == R_PENDING) {
      if (take) r->replay_head++;
      return q;
    }
    r->replay_head++; /* answered meanwhile by an older attempt */
  }
  if (r->replay_head == r->n_replay) r->replay_head = r->n_replay = 0;
  while (r->next_new < r->n_req && r->req[r->next_new].state != R_PENDING) r->next_new++;
  if (r->next_new >= r->n_req) return -1;
  return take ? r->next_new++ : r->next_new;
}

static void feed(qins_run *r) {
  const qins_pipeline *pl = r->pl;
  int g = pl->stages[pl->entry].worker;
  int first = r->topo.group_first[g], reps = pl->workers[g].replicas;
  /* a loop never holds more messages than a ring: cap the total when several groups exist */
  int cap_total = pl->n_workers > 1 ? pl->slots : pl->max_inflight * reps;
  while (r->n_inflight < cap_total && next_request(r, 0) >= 0) {
    int best = -1, best_load = 1 << 30;
    for (int k = 0; k < reps; k++) {
      int inst = first + k;
      if (r->inst[inst].state != I_READY) continue;
      int c = qins_topo_chan_for(pl, &r->topo, -1, QINS_COORD, (unsigned)k);
      if (c < 0 || qins_chan_tx_credits(&r->tx[c]) == 0) continue;
      int load = r->inst[inst].inflight;
      if (load >= pl->max_inflight) continue;
      if (load < best_load) best = k, best_load = load;
    }
    if (best < 0) return;
    int q = next_request(r, 1);
    int c = qins_topo_chan_for(pl, &r->topo, -1, QINS_COORD, (unsigned)best);
    qins_msg m;
    memset(&m, 0, sizeof m);
    m.req = (uint64_t)q;
    m.attempt = r->req[q].attempt;
    m.route = (uint32_t)best;
    m.last_id = -1;
    m.dtype = QINS_DT_U8;
    m.ndim = 1;
    m.nbytes = strlen(r->prompts[q]);
    m.shape[0] = (int64_t)m.nbytes;
    m.data = r->prompts[q];
    if (qins_chan_send(&r->tx[c], &m) != 0) {
      fail(r, "%s", qins_error_msg());
      return;
    }
    pthread_mutex_lock(&r->lock);
    r->req[q].state = R_INFLIGHT;
    r->req[q].inst = first + best;
    r->inst[first + best].inflight++;
    r->n_inflight++;
    pthread_mutex_unlock(&r->lock);
  }
}

static int all_ready(qins_run *r) {
  for (int i = 0; i < r->topo.n_inst; i++)
    if (r->inst[i].state != I_READY) return 0;
  return 1;
}

/* ---- main ---- */

/* Merge the metrics snapshots waiting on the control socket; the rest is dropped (stopping). */
static int drain_snapshots(qins_run *r) {
  char ident[128], type[32], peer[64];
  json_t *body;
  int n = 0;
  while (qins_ctl_recv(r->router, 1, ident, type, sizeof type, &body, peer) == 1) {
    const char *m = strcmp(type, "HB") == 0 ? json_string_value(json_object_get(body, "metrics")) : NULL;
    if (m) qins_metrics_merge_json(m);
    json_decref(body);
    n++;
  }
  return n;
}

static void shutdown_workers(qins_run *r) {
  for (int i = 0; i < r->topo.n_inst; i++)
    if (r->inst[i].ident[0] && r->inst[i].state != I_DEAD) qins_ctl_send(r->router, r->inst[i].ident, "STOP", NULL);
  double t0 = now_s();
  for (;;) {
    /* a stopping worker sends one last metrics snapshot: merge it, so the final metrics (and
     * the last on_event) count everything the workers did */
    drain_snapshots(r);
    int alive = 0;
    for (int i = 0; i < r->topo.n_inst; i++) {
      if (r->inst[i].pid <= 0) continue;
      int st;
      if (waitpid(r->inst[i].pid, &st, WNOHANG) == r->inst[i].pid)
        r->inst[i].pid = 0;
      else
        alive++;
    }
    if (!alive) {
      /* a snapshot sent just before the exit may still be inside ZeroMQ: wait for the socket to
       * go quiet (the eval stages' gauges change with the very last record) */
      for (int k = 0; k < 10; k++) {
        zmq_pollitem_t it = {r->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0 || drain_snapshots(r) == 0) break;
      }
      break;
    }
    if (now_s() - t0 > 2.0) {
      for (int i = 0; i < r->topo.n_inst; i++)
        if (r->inst[i].pid > 0) {
          kill(r->inst[i].pid, SIGKILL);
          int st;
          waitpid(r->inst[i].pid, &st, 0);
          r->inst[i].pid = 0;
        }
      break;
    }
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  for (int i = 0; i < r->topo.n_inst; i++) r->inst[i].state = I_STOPPED;
  /* give remote workers' STOP a moment to leave before the sockets close */
  if (r->topo.has_remote) {
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

static int setup(qins_run *r) {
  const qins_pipeline *pl = r->pl;
  int rc = qins_topo_build(pl, &r->topo);
  if (rc) return rc;
  int n = r->topo.n_inst;
  r->inst = calloc((size_t)n, sizeof *r->inst);
  r->epochs = calloc((size_t)r->topo.n_chan + 1, sizeof(uint32_t));
  r->tx = calloc((size_t)r->topo.n_chan + 1, sizeof *r->tx);
  r->rx = calloc((size_t)r->topo.n_chan + 1, sizeof *r->rx);
  r->push_data = calloc((size_t)n + 1, sizeof(void *));
  r->push_credit = calloc((size_t)n + 1, sizeof(void *));
  r->req = calloc((size_t)r->n_req + 1, sizeof *r->req);
  r->replay = calloc((size_t)r->n_req + 1, sizeof(int));
  if (!r->replay || !r->inst || !r->epochs || !r->tx || !r->rx || !r->push_data || !r->push_credit || !r->req)
    return qins_error_set(QINS_ENOMEM, "out of memory");
  if ((rc = qins_shm_create(r->topo.arena_size, &r->shm))) return rc;
  /* abstract-namespace ipc: no socket files anywhere, nothing to clean up after a crash */
  unsigned nonce = (unsigned)(now_s() * 1e6) ^ (unsigned)getpid() * 2654435761u;
  snprintf(r->ipc_prefix, sizeof r->ipc_prefix, "ipc://@qins-%d-%08x", (int)getpid(), nonce);
  snprintf(r->control_ipc, sizeof r->control_ipc, "%s-ctl", r->ipc_prefix);
  snprintf(r->coord_data_ipc, sizeof r->coord_data_ipc, "%s-coord-d", r->ipc_prefix);
  snprintf(r->coord_credit_ipc, sizeof r->coord_credit_ipc, "%s-coord-c", r->ipc_prefix);
  r->zctx = zmq_ctx_new();
  r->router = mk_socket(r, ZMQ_ROUTER);
  int one = 1;
  zmq_setsockopt(r->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
  r->data_in = mk_socket(r, ZMQ_PULL);
  r->credit_in = mk_socket(r, ZMQ_PULL);
  if (zmq_bind(r->router, r->control_ipc) || zmq_bind(r->data_in, r->coord_data_ipc) ||
      zmq_bind(r->credit_in, r->coord_credit_ipc))
    return qins_error_set(QINS_EIPC, "bind %s: %s", r->ipc_prefix, zmq_strerror(errno));
  snprintf(r->tcp_host, sizeof r->tcp_host, "127.0.0.1");
  for (int g = 0; g < pl->n_workers; g++) {
    const char *h = pl->workers[g].host;
    if (!h[0]) continue;
    /* tcp://HOST:PORT: we listen there for that worker; our data inboxes use the same interface */
    char host[128];
    const char *hs = h + 6, *colon = strrchr(hs, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - hs), hs);
    snprintf(r->tcp_host, sizeof r->tcp_host, "%s", strcmp(host, "*") == 0 ? "0.0.0.0" : host);
    if (zmq_bind(r->router, h) != 0 && errno != EADDRINUSE)
      return qins_error_set(QINS_EIPC, "workers[%s].host: cannot listen on %s: %s", pl->workers[g].name, h,
                            zmq_strerror(errno));
  }
  if (r->topo.has_remote) {
    char spec[200];
    size_t len = sizeof r->coord_data_tcp;
    snprintf(spec, sizeof spec, "tcp://%s:*", r->tcp_host);
    if (zmq_bind(r->data_in, spec) || zmq_getsockopt(r->data_in, ZMQ_LAST_ENDPOINT, r->coord_data_tcp, &len))
      return qins_error_set(QINS_EIPC, "bind %s: %s", spec, zmq_strerror(errno));
    len = sizeof r->coord_credit_tcp;
    if (zmq_bind(r->credit_in, spec) || zmq_getsockopt(r->credit_in, ZMQ_LAST_ENDPOINT, r->coord_credit_tcp, &len))
      return qins_error_set(QINS_EIPC, "bind %s: %s", spec, zmq_strerror(errno));
  }
  char labels[160];
  snprintf(labels, sizeof labels, "pipeline=\"%s\"", pl->name);
  r->m_done = qins_metric_counter("qins_requests_done_total", "requests answered", labels);
  r->m_inflight = qins_metric_gauge("qins_requests_inflight", "requests in flight", labels);
  r->m_restarts = qins_metric_counter("qins_worker_restarts_total", "workers restarted after a failure", labels);
  r->m_replayed = qins_metric_counter("qins_requests_replayed_total", "requests replayed after a restart", labels);
  qins_metric_set(qins_metric_gauge("qins_requests_total", "requests in this run", labels), r->n_req);
  return 0;
}

static void teardown(qins_run *r) {
  int n = r->topo.n_inst;
  for (int i = 0; i <= n && r->push_data; i++) {
    if (r->push_data[i]) zmq_close(r->push_data[i]);
    if (r->push_credit[i]) zmq_close(r->push_credit[i]);
  }
  for (int i = 0; i < n && r->inst; i++) {
    json_decref(r->inst[i].data_ep);
    json_decref(r->inst[i].credit_ep);
  }
  for (int c = 0; c < r->topo.n_chan && r->tx; c++) qins_chan_tx_fini(&r->tx[c]);
  if (r->router) zmq_close(r->router);
  if (r->data_in) zmq_close(r->data_in);
  if (r->credit_in) zmq_close(r->credit_in);
  if (r->zctx) zmq_ctx_term(r->zctx);
  qins_shm_close(&r->shm);
  free(r->inst);
  free(r->epochs);
  free(r->tx);
  free(r->rx);
  free(r->push_data);
  free(r->push_credit);
  free(r->req);
  free(r->replay);
  qins_topo_free(&r->topo);
  if (r->out_fd >= 0) close(r->out_fd);
  pthread_mutex_destroy(&r->lock);
}

int qins_run_pipeline(const qins_pipeline *pl, const qins_run_opts *opts_in) {
  qins_run_opts defaults = {0};
  const qins_run_opts *opts = opts_in ? opts_in : &defaults;
  qins_run R;
  memset(&R, 0, sizeof R);
  qins_run *r = &R;
  r->pl = pl;
  r->opts = opts;
  r->out_fd = -1;
  r->shm.fd = -1;
  r->records = opts->records ? opts->records : stdout;
  pthread_mutex_init(&r->lock, NULL);
  signal(SIGPIPE, SIG_IGN);
  r->exe = opts->worker_exe ? opts->worker_exe : getenv("QINS_BIN") ? getenv("QINS_BIN") : "/proc/self/exe";
  int rc = qins_pipeline_read_inputs(pl, &r->n_req, &r->prompts, &r->ids);
  if (rc) {
    pthread_mutex_destroy(&r->lock);
    return rc;
  }
  if (pl->output_jsonl) {
    r->out_fd = open(pl->output_jsonl, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (r->out_fd < 0) {
      rc = qins_error_set(QINS_EINPUT, "%s: outputs.jsonl: cannot open: %s", pl->output_jsonl, strerror(errno));
      qins_pipeline_free_inputs(r->n_req, r->prompts, r->ids);
      pthread_mutex_destroy(&r->lock);
      return rc;
    }
  }
  if ((rc = setup(r))) goto done;
  if (opts->on_event) opts->on_event(r, 0, opts->user);
  for (int i = 0; i < r->topo.n_inst; i++) {
    if (r->topo.inst[i].remote) {
      r->inst[i].state = I_SPAWNED;
      r->inst[i].started = r->inst[i].last_seen = now_s();
      if (!opts->quiet) QINS_INFO("waiting for worker '%s' to join at %s", r->topo.inst[i].name, pl->workers[r->topo.inst[i].group].host);
      continue;
    }
    if ((rc = spawn(r, i))) goto done;
  }
  double last_event = 0, last_ping = 0, started = now_s();
  int announced = 0;
  while (!r->failed) {
    if (atomic_load(&r->stop_requested)) {
      fail(r, "interrupted: %d of %d requests answered", r->n_done, r->n_req);
      break;
    }
    if (r->n_done == r->n_req || (opts->stop_after && r->n_done >= opts->stop_after)) break;
    if (!r->feeding && all_ready(r)) {
      r->feeding = 1;
      if (!opts->quiet && !announced++)
        QINS_INFO("pipeline '%s': %d worker process(es) ready in %.2f s; %d request(s)", pl->name, r->topo.n_inst,
                  now_s() - started, r->n_req);
    }
    /* feed only with every worker running: a replaced remote worker's messages would otherwise
     * queue for its old address */
    if (r->feeding && r->acks_pending == 0 && all_ready(r)) feed(r);
    zmq_pollitem_t it[3] = {{r->router, 0, ZMQ_POLLIN, 0}, {r->data_in, 0, ZMQ_POLLIN, 0}, {r->credit_in, 0, ZMQ_POLLIN, 0}};
    int n = zmq_poll(it, 3, 20);
    if (n < 0 && errno != EINTR) {
      fail(r, "poll: %s", zmq_strerror(errno));
      break;
    }
    if (n > 0 && (it[0].revents & ZMQ_POLLIN)) {
      char ident[128], type[32], peer[64];
      json_t *body;
      while (qins_ctl_recv(r->router, 1, ident, type, sizeof type, &body, peer) == 1) {
        handle_ctl(r, ident, type, body, peer);
        json_decref(body);
      }
    }
    if (n > 0 && (it[2].revents & ZMQ_POLLIN)) handle_credits(r);
    if (n > 0 && (it[1].revents & ZMQ_POLLIN)) handle_result(r);
    check_children(r);
    qins_metric_set(r->m_inflight, r->n_inflight);
    double t = now_s();
    if (t - last_ping >= pl->heartbeat_ms / 1000.0) { /* workers leave when we fall silent */
      last_ping = t;
      for (int i = 0; i < r->topo.n_inst; i++)
        if (r->inst[i].state == I_READY) qins_ctl_send(r->router, r->inst[i].ident, "PING", NULL);
    }
    if (opts->on_event && t - last_event >= 0.05) {
      last_event = t;
      opts->on_event(r, 0, opts->user);
    }
  }
  if (r->failed) rc = qins_error_set(r->fail_code ? r->fail_code : QINS_EIPC, "%s", r->fail_msg);
  else if (!opts->quiet)
    QINS_INFO("pipeline '%s': %d request(s) answered in %.2f s", pl->name, r->n_done, now_s() - started);
done:
  {
    /* keep the message across the cleanup below */
    char msg[1024];
    int code = rc;
    snprintf(msg, sizeof msg, "%s", rc ? qins_error_msg() : "");
    if (r->zctx && r->inst) shutdown_workers(r);
    if (opts->on_event) opts->on_event(r, 1, opts->user);
    teardown(r);
    qins_pipeline_free_inputs(r->n_req, r->prompts, r->ids);
    if (code) qins_error_set(code, "%s", msg);
    return code;
  }
}
