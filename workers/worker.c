/* The worker process: receives its pipeline and place from the coordinator, runs its stages,
 * moves messages between local stages by pointer and to other workers through channels,
 * heartbeats from a side thread, and follows RESET/FORGET/STOP. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "core/error.h"
#include "core/ipc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "monitor/monitor.h"
#include "stages/stage.h"
#include "workers/join.h"
#include "workers/proto.h"
#include "workers/run.h"
#include "workers/topo.h"

/* A reference-counted output buffer: stages in one worker share it without copies. */
typedef struct obuf {
  int refs;
  size_t size;
  max_align_t data[];
} obuf;

typedef struct item {
  int stage;
  int edge; /* the edge it came along (a join stage needs to know the branch) */
  qins_msg msg;
  obuf *buf;
  struct item *next;
} item;

typedef struct shared_obj {
  char key[128];
  void *obj;
  void (*destroy)(void *);
} shared_obj;

typedef struct forget_ent {
  uint64_t req;
  uint32_t below;
} forget_ent;

typedef struct wk {
  qins_pipeline *pl;
  qins_topo topo;
  int inst;
  const char *name;
  void *zctx, *ctl, *data_in, *credit_in;
  char ident[64];
  char control[256];
  void **push_data, **push_credit; /* per instance + coordinator (index n_inst) */
  char (*ep_data_ipc)[256], (*ep_data_tcp)[256], (*ep_credit_ipc)[256], (*ep_credit_tcp)[256];
  qins_chan_tx *tx; /* per topo channel (used where we produce) */
  qins_chan_rx *rx; /* per topo channel (used where we consume) */
  qins_shm shm;
  qins_stage *stages; /* indexed by pipeline stage; only ours initialised */
  int *ours;
  qins_join **joins;  /* per stage: the join of a stage type with join > 1 (ours only) */
  int *branch;        /* per edge: its index among its target's incoming non-loop edges */
  qins_metric **m_join_held; /* per stage: messages a join holds */
  shared_obj *shared;
  int n_shared;
  item *qhead, *qtail;
  forget_ent *forget;
  int n_forget, cap_forget;
  int stopping, reported;
  double last_ctl; /* when the coordinator was last heard (it PINGs every heartbeat) */
  atomic_int hb_stop;
  pthread_t hb_thread;
  int hb_started;
  qins_metric *m_credit_wait, *m_zero_copy;
  /* zero-copy output: the running stage may write straight into this channel's next slot */
  qins_chan_tx *zc_tx;
  int zc_edge, zc_slot, zc_used;
} wk;

static wk *g_wk; /* for the output allocator and shared objects */

static void *obuf_alloc(qins_msg *m, size_t bytes) {
  obuf *b = malloc(sizeof *b + (bytes ? bytes : 1));
  if (!b) return NULL;
  b->refs = 1;
  b->size = bytes;
  m->alloc_user = b;
  return b->data;
}

static void obuf_unref(obuf *b) {
  if (b && --b->refs == 0) free(b);
}

/* Output allocator when the stage's one destination is a shared-memory channel: a free slot
 * right now becomes the output buffer (no copy later). Never waits (waiting here would run
 * control messages, e.g. FORGET, inside the stage's forward): without a credit it falls back
 * to a private buffer, copied when the credit comes. */
static void *zc_alloc(qins_msg *m, size_t bytes) {
  wk *w = g_wk;
  int slot;
  if (w->zc_tx && !w->zc_used) {
    void *p = qins_chan_tx_reserve(w->zc_tx, bytes, &slot);
    if (p) {
      w->zc_used = 1;
      w->zc_slot = slot;
      m->alloc_user = NULL;
      return p;
    }
  }
  return obuf_alloc(m, bytes);
}

static void *shared_get(const qins_stage_ctx *ctx, const char *key) {
  wk *w = ctx->worker;
  for (int i = 0; i < w->n_shared; i++)
    if (strcmp(w->shared[i].key, key) == 0) return w->shared[i].obj;
  return NULL;
}

static int shared_put(const qins_stage_ctx *ctx, const char *key, void *obj, void (*destroy)(void *)) {
  wk *w = ctx->worker;
  shared_obj *s = realloc(w->shared, sizeof *s * (size_t)(w->n_shared + 1));
  if (!s) return qins_error_set(QINS_ENOMEM, "out of memory");
  w->shared = s;
  snprintf(s[w->n_shared].key, sizeof s[0].key, "%s", key);
  s[w->n_shared].obj = obj;
  s[w->n_shared].destroy = destroy;
  w->n_shared++;
  return 0;
}

/* ---- forgotten requests: messages of attempts below the mark are dropped on arrival ---- */

static uint32_t forget_below(const wk *w, uint64_t req) {
  for (int i = 0; i < w->n_forget; i++)
    if (w->forget[i].req == req) return w->forget[i].below;
  return 0;
}

static void forget_set(wk *w, uint64_t req, uint32_t below) {
  for (int i = 0; i < w->n_forget; i++)
    if (w->forget[i].req == req) {
      if (below > w->forget[i].below) w->forget[i].below = below;
      return;
    }
  if (w->n_forget == w->cap_forget) {
    int cap = w->cap_forget ? w->cap_forget * 2 : 64;
    forget_ent *f = realloc(w->forget, sizeof *f * (size_t)cap);
    if (!f) return;
    w->forget = f;
    w->cap_forget = cap;
  }
  w->forget[w->n_forget++] = (forget_ent){req, below};
}

/* ---- heartbeat thread ---- */

static void *hb_main(void *arg) {
  wk *w = arg;
  void *s = zmq_socket(w->zctx, ZMQ_DEALER);
  char id[80];
  snprintf(id, sizeof id, "%s/hb", w->ident);
  int linger = 0;
  zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_connect(s, w->control);
  int ms = w->pl->heartbeat_ms;
  while (!atomic_load(&w->hb_stop)) {
    qins_monitor_sample_process(w->name, -1); /* CPU, RSS, engine bytes for the dashboard */
    char *mj = qins_metrics_json();
    json_t *b = json_object();
    json_object_set_new(b, "metrics", json_string(mj ? mj : "{\"metrics\":[]}"));
    free(mj);
    qins_ctl_send(s, NULL, "HB", b);
    for (int t = 0; t < ms && !atomic_load(&w->hb_stop); t += 10) {
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  if (w->stopping) { /* told to stop: a last snapshot, so the run's final metrics are complete */
    char *mj = qins_metrics_json();
    json_t *b = json_object();
    json_object_set_new(b, "metrics", json_string(mj ? mj : "{\"metrics\":[]}"));
    free(mj);
    qins_ctl_send(s, NULL, "HB", b);
    linger = 500; /* let it leave before the socket closes (the coordinator is waiting for us) */
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  }
  zmq_close(s);
  return NULL;
}

/* ---- errors: report and leave ---- */

static void fatal(wk *w, const char *stage) {
  if (w->reported) return;
  w->reported = 1;
  json_t *b = json_object();
  json_object_set_new(b, "stage", json_string(stage ? stage : ""));
  json_object_set_new(b, "message", json_string(qins_error_msg()));
  json_object_set_new(b, "code", json_integer(qins_error_code()));
  qins_ctl_send(w->ctl, NULL, "ERROR", b);
  /* the coordinator prints it; a worker on another host also says it where it runs */
  int remote = w->pl && w->inst >= 0 && w->inst < w->topo.n_inst && w->topo.inst[w->inst].remote;
  qins_log(remote ? QINS_LOG_ERROR : QINS_LOG_DEBUG, "%s%s%s", stage ? stage : "", stage ? ": " : "", qins_error_msg());
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int handle_control(wk *w, const char *type, json_t *body);

static int poll_control(wk *w, int timeout_ms) {
  zmq_pollitem_t it[2] = {{w->ctl, 0, ZMQ_POLLIN, 0}, {w->credit_in, 0, ZMQ_POLLIN, 0}};
  int n = zmq_poll(it, w->credit_in ? 2 : 1, timeout_ms);
  if (n < 0 && errno != EINTR) return qins_error_set(QINS_EIPC, "poll: %s", zmq_strerror(errno));
  if (n > 0 && (it[0].revents & ZMQ_POLLIN)) {
    char type[32];
    json_t *body;
    while (qins_ctl_recv(w->ctl, 1, NULL, type, sizeof type, &body, NULL) == 1) {
      w->last_ctl = now_s();
      int rc = handle_control(w, type, body);
      json_decref(body);
      if (rc) return rc;
    }
  }
  /* A coordinator on another host cannot take us down with it (no parent-death signal there):
   * silence for 20 heartbeats (at least 3 s) means it is gone. */
  double limit = 20.0 * w->pl->heartbeat_ms / 1000.0;
  if (limit < 3.0) limit = 3.0;
  if (w->last_ctl > 0 && now_s() - w->last_ctl > limit) {
    w->stopping = 1;
    return qins_error_set(QINS_EIPC, "the coordinator at %s has been silent for %.1f s; leaving", w->control,
                          now_s() - w->last_ctl);
  }
  if (w->credit_in && n > 0 && (it[1].revents & ZMQ_POLLIN)) {
    qins_wire_hdr h;
    qins_wire_frame f;
    while (qins_wire_recv(w->credit_in, 1, &h, &f) == 1) {
      qins_wire_release(&f);
      if (h.kind == QINS_WIRE_CREDIT && h.chan < (uint32_t)w->topo.n_chan) qins_chan_tx_credit(&w->tx[h.chan], &h);
    }
  }
  return 0;
}


/* Block (servicing control and credits) until the channel has a credit: back-pressure. */
static int wait_credit(wk *w, qins_chan_tx *tx) {
  double t0 = 0;
  while (qins_chan_tx_credits(tx) == 0 && !w->stopping) {
    if (t0 == 0) t0 = now_s();
    int rc = poll_control(w, 100);
    if (rc) return rc;
  }
  if (t0 != 0) qins_metric_add(w->m_credit_wait, now_s() - t0);
  return w->stopping ? 1 : 0;
}

static item *push_local(wk *w, int stage, const qins_msg *m, obuf *b) {
  item *it = malloc(sizeof *it);
  if (!it) return NULL;
  it->stage = stage;
  it->edge = -1; /* route() sets it: a join stage needs to know the branch */
  it->msg = *m;
  it->buf = b;
  if (b) b->refs++;
  it->next = NULL;
  if (w->qtail)
    w->qtail->next = it;
  else
    w->qhead = it;
  w->qtail = it;
  return it;
}

/* Dashboard hook: per-edge item counter and, for channel edges, slots in flight (queue depth). */
static void edge_metrics(wk *w, int e, const qins_chan_tx *tx) {
  enum { MAX_EDGE_METRICS = 256 };
  static qins_metric *items[MAX_EDGE_METRICS], *depth[MAX_EDGE_METRICS], *cap[MAX_EDGE_METRICS];
  if (e < 0 || e >= MAX_EDGE_METRICS) return;
  const qins_pipeline *pl = w->pl;
  if (!items[e]) {
    char lab[320];
    /* worker label: replicas of a producer each report their share instead of overwriting one
     * series when the coordinator merges the snapshots */
    snprintf(lab, sizeof lab, "from=\"%s\",to=\"%s\",worker=\"%s\"", pl->stages[pl->edges[e].from].name,
             pl->stages[pl->edges[e].to].name, w->name);
    items[e] = qins_metric_counter("qins_edge_items_total", "messages sent along an edge", lab);
    if (tx) {
      depth[e] = qins_metric_gauge("qins_edge_queue_depth", "channel slots in flight (sent, not yet credited)", lab);
      cap[e] = qins_metric_gauge("qins_edge_capacity", "channel slots", lab);
      qins_metric_set(cap[e], tx->slots);
    }
  }
  qins_metric_add(items[e], 1);
  if (tx && depth[e]) qins_metric_set(depth[e], tx->slots - qins_chan_tx_credits(tx));
}

static int send_to(wk *w, int edge, const qins_msg *m) {
  int c = qins_topo_chan_for(w->pl, &w->topo, edge, w->inst, m->route);
  if (c < 0) return qins_error_set(QINS_EINTERNAL, "no channel for edge %d from %s", edge, w->name);
  qins_chan_tx *tx = &w->tx[c];
  int rc = wait_credit(w, tx);
  if (rc) return rc < 0 ? rc : 0;
  rc = qins_chan_send(tx, m);
  if (rc == 0) edge_metrics(w, edge, tx);
  return rc;
}

/* A gradient message back along edge `edge` to the producer replica serving the request. */
static int send_back(wk *w, int edge, const qins_msg *m) {
  int c = qins_topo_chan_back(w->pl, &w->topo, edge, w->inst, m->route);
  if (c < 0)
    return qins_error_set(QINS_EINTERNAL, "no reverse channel for edge %s -> %s from %s (stage '%s' has no backward)",
                          w->pl->stages[w->pl->edges[edge].from].name, w->pl->stages[w->pl->edges[edge].to].name,
                          w->name, w->pl->stages[w->pl->edges[edge].from].name);
  qins_chan_tx *tx = &w->tx[c];
  int rc = wait_credit(w, tx);
  if (rc) return rc < 0 ? rc : 0;
  return qins_chan_send(tx, m);
}

/* Does stage s feed a loop edge? Such a stage (`sample`) ends its requests itself. */
static int feeds_loop(const qins_pipeline *pl, int s) {
  for (int e = 0; e < pl->n_edges; e++)
    if (pl->edges[e].from == s && pl->edges[e].loop) return 1;
  return 0;
}

/* An end marker (QINS_MSG_MARK, stages/stage.h) for `m`'s request along stage s's loop edges
 * (via_loop) or its non-loop edges: a header without data, never to the coordinator. */
static int route_marker(wk *w, int s, const qins_msg *m, int via_loop) {
  static unsigned char none; /* a valid pointer for a zero-byte payload */
  const qins_pipeline *pl = w->pl;
  qins_msg k = *m;
  k.flags = QINS_MSG_END | QINS_MSG_MARK;
  k.ndim = 1;
  k.shape[0] = 0;
  k.data = &none;
  k.nbytes = 0;
  k.alloc = NULL;
  k.alloc_user = NULL;
  int rc = 0;
  for (int e = 0; e < pl->n_edges && rc == 0; e++) {
    const qins_pl_edge *ed = &pl->edges[e];
    if (ed->from != s || !ed->loop != !via_loop) continue;
    if (pl->stages[ed->to].worker == pl->stages[s].worker) {
      item *it = push_local(w, ed->to, &k, NULL);
      if (!it) return qins_error_set(QINS_ENOMEM, "out of memory");
      it->edge = e;
    } else { /* as send_to, but not counted as an item on the edge (the dashboard counts data) */
      int c = qins_topo_chan_for(pl, &w->topo, e, w->inst, k.route);
      if (c < 0) return qins_error_set(QINS_EINTERNAL, "no channel for edge %d from %s", e, w->name);
      rc = wait_credit(w, &w->tx[c]);
      if (rc) return rc < 0 ? rc : 0;
      rc = qins_chan_send(&w->tx[c], &k);
    }
  }
  return rc;
}

/* Route a stage's output along its edges: same worker -> local queue, else a channel. A
 * QINS_MSG_GRAD output goes backward: to the producer of each (non-loop) edge into the stage. */
static int route(wk *w, int s, qins_msg *out, obuf *b) {
  const qins_pipeline *pl = w->pl;
  int rc = 0;
  if (out->flags & QINS_MSG_GRAD) {
    for (int e = 0; e < pl->n_edges && rc == 0; e++) {
      const qins_pl_edge *ed = &pl->edges[e];
      if (ed->to != s || ed->loop) continue;
      if (pl->stages[ed->from].worker == pl->stages[s].worker) {
        item *it = push_local(w, ed->from, out, b);
        if (it) it->edge = e;
      } else
        rc = send_back(w, e, out);
    }
    return rc;
  }
  if (w->zc_used) { /* the output already sits in the channel's slot */
    w->zc_used = 0;
    if (out->data == w->zc_tx->ring + (size_t)w->zc_slot * w->zc_tx->slot_bytes) {
      rc = qins_chan_send_slot(w->zc_tx, w->zc_slot, out);
      if (rc == 0) {
        edge_metrics(w, w->zc_edge, w->zc_tx);
        qins_metric_add(w->m_zero_copy, 1);
      }
      return rc;
    }
  }
  if (s == pl->exit_stage) rc = send_to(w, -2, out);
  for (int e = 0; e < pl->n_edges && rc == 0; e++) {
    const qins_pl_edge *ed = &pl->edges[e];
    if (ed->from != s) continue;
    if (ed->loop && (out->flags & QINS_MSG_END)) continue;
    if (pl->stages[ed->to].worker == pl->stages[s].worker) {
      item *it = push_local(w, ed->to, out, b);
      if (it) it->edge = e;
      edge_metrics(w, e, NULL);
    } else
      rc = send_to(w, e, out);
  }
  /* the request ended here: what lies beyond the loop edges learns it from an end marker */
  if (rc == 0 && (out->flags & QINS_MSG_END) && !(out->flags & QINS_MSG_MARK) && feeds_loop(pl, s))
    rc = route_marker(w, s, out, 1);
  return rc;
}

/* Run stage s on one message, or for a join stage on one set of its branches' messages (ins[k]
 * NULL for an ended branch), and route the output. */
static int run_stage_set(wk *w, int s, const qins_msg *const *ins, int n_in) {
  const qins_msg *in = NULL;
  for (int k = 0; k < n_in && !in; k++) in = ins[k];
  if (!in) return 0;
  if (forget_below(w, in->req) > in->attempt) return 0; /* replayed or finished: drop */
  qins_stage *st = &w->stages[s];
  int grad = (in->flags & QINS_MSG_GRAD) != 0;
  if (grad && !st->type->backward) {
    qins_error_set(QINS_EINTERNAL, "a gradient message reached stage '%s' (%s), which has no backward",
                   st->ctx.stage_name, st->type->name);
    fatal(w, st->ctx.stage_name);
    return QINS_EINTERNAL;
  }
  for (;;) { /* once, or again while the stage says QINS_STAGE_MORE */
    qins_msg out;
    memset(&out, 0, sizeof out);
    out.alloc = obuf_alloc;
    w->zc_tx = NULL;
    w->zc_used = 0;
    {
      /* one outgoing edge, to another worker, over shared memory, not a loop edge (which END
       * skips), not the final stage: the output can be written in place */
      const qins_pipeline *pl = w->pl;
      int n_out = 0, e1 = -1;
      for (int e = 0; e < pl->n_edges; e++)
        if (pl->edges[e].from == s) n_out++, e1 = e;
      /* (not for stage types with a backward: their outputs may turn around) */
      if (n_out == 1 && s != pl->exit_stage && !pl->edges[e1].loop && !st->type->backward &&
          pl->stages[pl->edges[e1].to].worker != pl->stages[s].worker) {
        int c = qins_topo_chan_for(pl, &w->topo, e1, w->inst, in->route);
        if (c >= 0 && w->tx[c].ring) {
          w->zc_tx = &w->tx[c];
          w->zc_edge = e1;
          out.alloc = zc_alloc;
        }
      }
    }
    out.req = in->req;
    out.attempt = in->attempt;
    out.route = in->route;
    out.step = in->step;
    out.flags = in->flags;
    out.pos = in->pos;
    out.last_id = in->last_id;
    double t0 = now_s();
    qins_error_clear();
    int rc = grad                   ? st->type->backward(st, in, &out)
             : QINS_STAGE_IS_JOIN(st->type) ? st->type->forward_join(st, ins, n_in, &out)
                                  : st->type->forward(st, in, &out);
    qins_metric_observe(st->m_latency, now_s() - t0);
    qins_metric_add(st->m_items, 1);
    qins_metric_add(st->m_bytes_in, (double)in->nbytes);
    out.flags &= ~(uint32_t)QINS_MSG_MARK; /* a join's output after an end marker is a real message */
    obuf *b = out.alloc_user;
    int more = rc == QINS_STAGE_MORE;
    if (more) rc = 1;
    if (rc != 1) w->zc_used = 0; /* a reserved slot stays free: nothing was sent */
    if (rc < 0) {
      qins_metric_add(st->m_errors, 1);
      obuf_unref(b);
      char where[200];
      snprintf(where, sizeof where, "stage '%s' (%s), request %llu", st->ctx.stage_name, st->type->name,
               (unsigned long long)in->req);
      fatal(w, where);
      return rc;
    }
    if (rc == 1) {
      out.route = in->route;
      rc = route(w, s, &out, b);
    } else {
      rc = 0;
    }
    obuf_unref(b);
    if (rc || !more || w->stopping) return rc;
  }
}

typedef struct join_ctx {
  wk *w;
  int s;
} join_ctx;

static int join_deliver(void *user, const qins_msg *const *in, int n) {
  join_ctx *c = user;
  return run_stage_set(c->w, c->s, in, n);
}

/* A message for stage s that came along `edge`: a join stage holds it until its partners come. */
static int run_stage(wk *w, int s, int edge, const qins_msg *in) {
  if (forget_below(w, in->req) > in->attempt) return 0; /* replayed or finished: drop */
  if (w->joins[s] && !(in->flags & QINS_MSG_GRAD)) { /* gradients go straight to backward() */
    int k = edge >= 0 && edge < w->pl->n_edges ? w->branch[edge] : -1;
    if (k < 0) return qins_error_set(QINS_EINTERNAL, "join stage '%s': message from no branch (edge %d)", w->pl->stages[s].name, edge);
    join_ctx c = {w, s};
    qins_msg one = *in;
    if (w->pl->stages[s].type->join == QINS_JOIN_ALL) one.step = 0; /* one message per branch and request */
    int rc = qins_join_put(w->joins[s], k, &one, join_deliver, &c);
    if (w->m_join_held[s]) qins_metric_set(w->m_join_held[s], (double)qins_join_held(w->joins[s], NULL));
    if (rc < 0 && !w->reported) fatal(w, w->pl->stages[s].name);
    return rc;
  }
  if (in->flags & QINS_MSG_MARK) /* an end marker passes the stage by; a loop's source ends requests itself */
    return feeds_loop(w->pl, s) || (in->flags & QINS_MSG_GRAD) ? 0 : route_marker(w, s, in, 0);
  const qins_msg *one[1] = {in};
  return run_stage_set(w, s, one, 1);
}

static void reset_channels(wk *w, json_t *chans) {
  size_t i;
  json_t *c;
  json_array_foreach(chans, i, c) {
    int id = (int)json_integer_value(json_array_get(c, 0));
    uint32_t ep = (uint32_t)json_integer_value(json_array_get(c, 1));
    if (id < 0 || id >= w->topo.n_chan) continue;
    if (w->topo.chan[id].from_inst == w->inst) qins_chan_tx_reset(&w->tx[id], ep);
    if (w->topo.chan[id].to_inst == w->inst) w->rx[id].epoch = ep;
  }
}

static void *peer_socket(wk *w, void **cache, int idx, const char *ipc, const char *tcp);

/* A replaced remote worker listens on new ports: reconnect the sockets that point at it. */
static int update_peers(wk *w, json_t *peers) {
  json_t *eps = json_object_get(peers, "endpoints");
  int n = w->topo.n_inst + 1;
  for (int i = 0; i < n; i++) {
    json_t *e = json_array_get(eps, (size_t)i);
    const char *dt = json_string_value(json_object_get(json_object_get(e, "data"), "tcp"));
    const char *ct = json_string_value(json_object_get(json_object_get(e, "credit"), "tcp"));
    int moved_d = dt && strcmp(dt, w->ep_data_tcp[i]) != 0, moved_c = ct && strcmp(ct, w->ep_credit_tcp[i]) != 0;
    if (!moved_d && !moved_c) continue;
    if (moved_d) {
      snprintf(w->ep_data_tcp[i], 256, "%s", dt);
      if (w->push_data[i]) zmq_close(w->push_data[i]);
      w->push_data[i] = NULL;
    }
    if (moved_c) {
      snprintf(w->ep_credit_tcp[i], 256, "%s", ct);
      if (w->push_credit[i]) zmq_close(w->push_credit[i]);
      w->push_credit[i] = NULL;
    }
    for (int c = 0; c < w->topo.n_chan; c++) {
      const qins_topo_chan *ch = &w->topo.chan[c];
      int to = ch->to_inst == QINS_COORD ? w->topo.n_inst : ch->to_inst;
      int from = ch->from_inst == QINS_COORD ? w->topo.n_inst : ch->from_inst;
      if (moved_d && ch->from_inst == w->inst && to == i) {
        void *sk = peer_socket(w, w->push_data, i, w->ep_data_ipc[i], w->ep_data_tcp[i]);
        if (!sk) return QINS_EIPC;
        w->tx[c].sock = sk;
      }
      if (moved_c && ch->to_inst == w->inst && from == i) {
        void *sk = peer_socket(w, w->push_credit, i, w->ep_credit_ipc[i], w->ep_credit_tcp[i]);
        if (!sk) return QINS_EIPC;
        w->rx[c].credit_sock = sk;
      }
    }
  }
  return 0;
}

static int handle_control(wk *w, const char *type, json_t *body) {
  if (strcmp(type, "STOP") == 0) {
    w->stopping = 1;
  } else if (strcmp(type, "FORGET") == 0) {
    json_t *reqs = json_object_get(body, "reqs");
    uint32_t below = (uint32_t)json_integer_value(json_object_get(body, "below"));
    int all = json_is_true(json_object_get(body, "done"));
    size_t i;
    json_t *r;
    json_array_foreach(reqs, i, r) {
      uint64_t req = (uint64_t)json_integer_value(json_array_get(r, 0));
      uint32_t b = all ? UINT32_MAX : (uint32_t)json_integer_value(json_array_get(r, 1));
      (void)below;
      forget_set(w, req, b);
      for (int s = 0; s < w->pl->n_stages; s++)
        if (w->ours[s] && w->stages[s].type->forget) w->stages[s].type->forget(&w->stages[s], req, b);
      for (int s = 0; s < w->pl->n_stages; s++)
        if (w->joins[s]) {
          qins_join_forget(w->joins[s], req, b);
          if (w->m_join_held[s]) qins_metric_set(w->m_join_held[s], (double)qins_join_held(w->joins[s], NULL));
        }
    }
  } else if (strcmp(type, "PEERS") == 0) {
    return update_peers(w, body);
  } else if (strcmp(type, "RESET") == 0) {
    reset_channels(w, json_object_get(body, "chans"));
    return qins_ctl_send(w->ctl, NULL, "RESET_ACK", json_pack("{s:I}", "token", json_integer_value(json_object_get(body, "token"))));
  }
  return 0;
}

static int wait_for(wk *w, const char *want, json_t **body, int timeout_ms) {
  char type[32];
  for (int waited = 0; waited < timeout_ms; waited += 100) {
    zmq_pollitem_t it = {w->ctl, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 100) > 0) {
      while (qins_ctl_recv(w->ctl, 1, NULL, type, sizeof type, body, NULL) == 1) {
        if (strcmp(type, want) == 0) return 0;
        if (strcmp(type, "STOP") == 0) {
          json_decref(*body);
          return 1;
        }
        json_decref(*body);
      }
    }
  }
  return qins_error_set(QINS_EIPC, "no %s from the coordinator at %s within %d ms", want, w->control, timeout_ms);
}

static void *mk_socket(wk *w, int type) {
  void *s = zmq_socket(w->zctx, type);
  int linger = 0, hwm = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm); /* credits bound the queue, not the HWM */
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  return s;
}

static int bind_inbox(wk *w, void *s, const char *ipc, const char *tcp_spec, char *tcp_out, json_t *list) {
  if (ipc && zmq_bind(s, ipc) != 0) return qins_error_set(QINS_EIPC, "bind %s: %s", ipc, zmq_strerror(errno));
  if (ipc) json_object_set_new(list, "ipc", json_string(ipc));
  if (tcp_spec) {
    if (zmq_bind(s, tcp_spec) != 0) return qins_error_set(QINS_EIPC, "bind %s: %s", tcp_spec, zmq_strerror(errno));
    size_t n = 256;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, tcp_out, &n);
    json_object_set_new(list, "tcp", json_string(tcp_out));
  }
  (void)w;
  return 0;
}

static void *peer_socket(wk *w, void **cache, int idx, const char *ipc, const char *tcp) {
  if (cache[idx]) return cache[idx];
  int me_remote = w->inst >= 0 && w->topo.inst[w->inst].remote;
  int peer_remote = idx < w->topo.n_inst && w->topo.inst[idx].remote;
  const char *ep = (!me_remote && !peer_remote && ipc[0]) ? ipc : tcp;
  void *s = mk_socket(w, ZMQ_PUSH);
  if (!s || zmq_connect(s, ep) != 0) {
    qins_error_set(QINS_EIPC, "connect %s: %s", ep, zmq_strerror(errno));
    if (s) zmq_close(s);
    return NULL;
  }
  cache[idx] = s;
  return s;
}

static int setup_channels(wk *w, json_t *peers) {
  int n = w->topo.n_inst + 1;
  json_t *eps = json_object_get(peers, "endpoints");
  json_t *epochs = json_object_get(peers, "epochs");
  for (int i = 0; i < n; i++) {
    json_t *e = json_array_get(eps, (size_t)i);
    const char *s;
    s = json_string_value(json_object_get(json_object_get(e, "data"), "ipc"));
    snprintf(w->ep_data_ipc[i], 256, "%s", s ? s : "");
    s = json_string_value(json_object_get(json_object_get(e, "data"), "tcp"));
    snprintf(w->ep_data_tcp[i], 256, "%s", s ? s : "");
    s = json_string_value(json_object_get(json_object_get(e, "credit"), "ipc"));
    snprintf(w->ep_credit_ipc[i], 256, "%s", s ? s : "");
    s = json_string_value(json_object_get(json_object_get(e, "credit"), "tcp"));
    snprintf(w->ep_credit_tcp[i], 256, "%s", s ? s : "");
  }
  int rc;
  for (int c = 0; c < w->topo.n_chan; c++) {
    const qins_topo_chan *ch = &w->topo.chan[c];
    uint32_t ep = (uint32_t)json_integer_value(json_array_get(epochs, (size_t)c));
    if (ch->from_inst == w->inst) {
      int to = ch->to_inst == QINS_COORD ? w->topo.n_inst : ch->to_inst;
      void *s = peer_socket(w, w->push_data, to, w->ep_data_ipc[to], w->ep_data_tcp[to]);
      if (!s) return QINS_EIPC;
      uint8_t *ring = ch->shm && w->shm.base ? w->shm.base + ch->offset : NULL;
      if ((rc = qins_chan_tx_init(&w->tx[c], c, w->pl->slots, (size_t)w->pl->slot_bytes, ring, ch->offset, s))) return rc;
      qins_chan_tx_reset(&w->tx[c], ep);
    }
    if (ch->to_inst == w->inst) {
      int from = ch->from_inst == QINS_COORD ? w->topo.n_inst : ch->from_inst;
      void *s = peer_socket(w, w->push_credit, from, w->ep_credit_ipc[from], w->ep_credit_tcp[from]);
      if (!s) return QINS_EIPC;
      qins_chan_rx_init(&w->rx[c], c, w->pl->slots, w->shm.base, w->shm.size, s);
      w->rx[c].epoch = ep;
    }
  }
  return 0;
}

static int init_stages(wk *w) {
  const qins_pipeline *pl = w->pl;
  const qins_pl_worker *g = &pl->workers[w->topo.inst[w->inst].group];
  for (int k = 0; k < g->n_stages; k++) {
    int s = g->stages[k];
    qins_stage *st = &w->stages[s];
    st->type = pl->stages[s].type;
    st->ctx = (qins_stage_ctx){pl->stages[s].name, w->name, pl->model, pl->tokenizer, pl->backend,
                               pl->stages[s].options, pl, shared_get, shared_put, w};
    char labels[256];
    snprintf(labels, sizeof labels, "stage=\"%s\",worker=\"%s\"", pl->stages[s].name, w->name);
    st->m_items = qins_metric_counter("qins_stage_items_total", "messages a stage consumed", labels);
    st->m_errors = qins_metric_counter("qins_stage_errors_total", "stage forward() failures", labels);
    st->m_latency = qins_metric_histogram("qins_stage_latency_seconds", "time in a stage's forward()", labels, NULL, 0);
    st->m_bytes_in = qins_metric_counter("qins_stage_input_bytes_total", "payload bytes a stage consumed", labels);
    w->ours[s] = 1;
    if (QINS_STAGE_IS_JOIN(st->type)) {
      int nb = st->type->join;
      if (nb == QINS_JOIN_ALL) /* every incoming non-loop edge is a branch */
        for (int e = nb = 0; e < pl->n_edges; e++) nb += pl->edges[e].to == s && !pl->edges[e].loop;
      int rc = qins_join_create(nb, &w->joins[s]);
      if (rc) return rc;
      w->m_join_held[s] = qins_metric_gauge("qins_join_held", "messages a join stage holds for their partners", labels);
    }
    if (st->type->init) {
      qins_error_clear();
      int rc = st->type->init(st, &st->ctx);
      if (rc) {
        w->ours[s] = 0;
        return qins_error_wrap(rc, "stage '%s' (%s) init: ", pl->stages[s].name, st->type->name);
      }
    }
  }
  char labels[160];
  snprintf(labels, sizeof labels, "worker=\"%s\"", w->name);
  w->m_credit_wait = qins_metric_counter("qins_channel_credit_wait_seconds_total",
                                         "time producers waited for a free slot (back-pressure)", labels);
  w->m_zero_copy = qins_metric_counter("qins_channel_zero_copy_total",
                                       "stage outputs written straight into a channel slot (no copy)", labels);
  return 0;
}

static int main_loop(wk *w) {
  int rc = 0;
  while (!w->stopping) {
    int timeout = w->qhead ? 0 : 100;
    zmq_pollitem_t it[3] = {{w->ctl, 0, ZMQ_POLLIN, 0}, {w->credit_in, 0, ZMQ_POLLIN, 0}, {w->data_in, 0, ZMQ_POLLIN, 0}};
    int n = zmq_poll(it, 3, timeout);
    if (n < 0 && errno != EINTR) return qins_error_set(QINS_EIPC, "poll: %s", zmq_strerror(errno));
    if ((rc = poll_control(w, 0))) return rc; /* control, credits, coordinator silence */
    if (w->stopping) break;
    if (n > 0 && (it[2].revents & ZMQ_POLLIN)) {
      qins_wire_hdr h;
      qins_wire_frame f;
      int got = qins_wire_recv(w->data_in, 1, &h, &f);
      if (got < 0) return got;
      if (got == 1 && h.kind == QINS_WIRE_DATA && h.chan < (uint32_t)w->topo.n_chan &&
          w->topo.chan[h.chan].to_inst == w->inst) {
        qins_chan_rx *rx = &w->rx[h.chan];
        if (h.epoch == rx->epoch) { /* stale epochs belong to a replaced peer: no credit owed */
          qins_msg m;
          if ((rc = qins_wire_to_msg(&h, &f, rx, &m))) {
            qins_wire_release(&f);
            fatal(w, NULL);
            return rc;
          }
          int s = w->topo.chan[h.chan].to_stage;
          rc = run_stage(w, s, w->topo.chan[h.chan].edge, &m);
          qins_wire_release(&f);
          if (rc < 0) return rc;
          if ((rc = qins_chan_rx_done(rx, &h))) return rc;
        } else {
          qins_wire_release(&f);
        }
      } else if (got == 1) {
        qins_wire_release(&f);
      }
    }
    if (w->qhead && !w->stopping) {
      item *itm = w->qhead;
      w->qhead = itm->next;
      if (!w->qhead) w->qtail = NULL;
      rc = run_stage(w, itm->stage, itm->edge, &itm->msg);
      obuf_unref(itm->buf);
      free(itm);
      if (rc < 0) return rc;
    }
  }
  return 0;
}

static void cleanup(wk *w) {
  if (w->hb_started) {
    atomic_store(&w->hb_stop, 1);
    pthread_join(w->hb_thread, NULL);
  }
  if (w->pl && w->stages)
    for (int s = 0; s < w->pl->n_stages; s++)
      if (w->ours && w->ours[s] && w->stages[s].type->fini) w->stages[s].type->fini(&w->stages[s]);
  for (int i = w->n_shared - 1; i >= 0; i--)
    if (w->shared[i].destroy) w->shared[i].destroy(w->shared[i].obj);
  free(w->shared);
  while (w->qhead) {
    item *it = w->qhead;
    w->qhead = it->next;
    obuf_unref(it->buf);
    free(it);
  }
  int n = w->topo.n_inst + 1;
  for (int i = 0; i < n && w->push_data; i++) {
    if (w->push_data[i]) zmq_close(w->push_data[i]);
    if (w->push_credit[i]) zmq_close(w->push_credit[i]);
  }
  if (w->tx)
    for (int c = 0; c < w->topo.n_chan; c++) qins_chan_tx_fini(&w->tx[c]);
  free(w->tx);
  free(w->rx);
  free(w->push_data);
  free(w->push_credit);
  free(w->ep_data_ipc);
  free(w->ep_data_tcp);
  free(w->ep_credit_ipc);
  free(w->ep_credit_tcp);
  free(w->stages);
  free(w->ours);
  if (w->joins && w->pl)
    for (int s = 0; s < w->pl->n_stages; s++) qins_join_destroy(w->joins[s]);
  free(w->joins);
  free(w->branch);
  free(w->m_join_held);
  free(w->forget);
  if (w->data_in) zmq_close(w->data_in);
  if (w->credit_in) zmq_close(w->credit_in);
  if (w->ctl) zmq_close(w->ctl);
  if (w->zctx) zmq_ctx_term(w->zctx);
  qins_shm_close(&w->shm);
  qins_topo_free(&w->topo);
  qins_pipeline_free(w->pl);
}

int qins_worker_main(const qins_worker_args *a) {
  wk W;
  memset(&W, 0, sizeof W);
  wk *w = &W;
  g_wk = w;
  w->shm.fd = -1;
  w->inst = a->instance;
  signal(SIGPIPE, SIG_IGN);
  snprintf(w->control, sizeof w->control, "%s", a->control);
  if (a->shm_fd >= 0 && a->shm_size > 0) {
    if (qins_shm_attach(a->shm_fd, a->shm_size, &w->shm)) {
      QINS_ERROR("%s", qins_error_msg());
      return 1;
    }
  }
  w->zctx = zmq_ctx_new();
  w->ctl = mk_socket(w, ZMQ_DEALER);
  if (a->instance >= 0)
    snprintf(w->ident, sizeof w->ident, "i%d.%d", a->instance, (int)getpid());
  else
    snprintf(w->ident, sizeof w->ident, "r.%d.%ld", (int)getpid(), (long)time(NULL));
  zmq_setsockopt(w->ctl, ZMQ_ROUTING_ID, w->ident, strlen(w->ident));
  int rc = 0;
  json_t *body = NULL;
  if (zmq_connect(w->ctl, a->control) != 0) {
    rc = qins_error_set(QINS_EIPC, "connect %s: %s", a->control, zmq_strerror(errno));
    goto out;
  }
  json_t *hello = json_object();
  json_object_set_new(hello, "instance", json_integer(a->instance));
  json_object_set_new(hello, "pid", json_integer(getpid()));
  if (a->name) json_object_set_new(hello, "name", json_string(a->name));
  if ((rc = qins_ctl_send(w->ctl, NULL, "HELLO", hello))) goto out;
  if ((rc = wait_for(w, "CONFIG", &body, a->instance >= 0 ? 30000 : 600000))) goto out;
  {
    const char *yaml = json_string_value(json_object_get(body, "yaml"));
    const char *origin = json_string_value(json_object_get(body, "origin"));
    json_t *sets = json_object_get(body, "sets");
    int ns = (int)json_array_size(sets);
    const char **sv = calloc((size_t)ns + 1, sizeof(char *));
    for (int i = 0; sv && i < ns; i++) sv[i] = json_string_value(json_array_get(sets, (size_t)i));
    w->inst = (int)json_integer_value(json_object_get(body, "instance"));
    rc = yaml && sv ? qins_pipeline_load_string(yaml, strlen(yaml), origin ? origin : "pipeline", sv, ns, &w->pl)
                    : qins_error_set(QINS_EIPC, "malformed CONFIG");
    free(sv);
    if (rc) goto out_body;
    if ((rc = qins_topo_build(w->pl, &w->topo))) goto out_body;
    if (w->inst < 0 || w->inst >= w->topo.n_inst) {
      rc = qins_error_set(QINS_EIPC, "CONFIG names instance %d of %d", w->inst, w->topo.n_inst);
      goto out_body;
    }
    w->name = w->topo.inst[w->inst].name;
    char tag[128];
    snprintf(tag, sizeof tag, "[%s]", w->name);
    qins_log_set_tag(tag);
    int n = w->topo.n_inst + 1;
    w->push_data = calloc((size_t)n, sizeof(void *));
    w->push_credit = calloc((size_t)n, sizeof(void *));
    w->ep_data_ipc = calloc((size_t)n, 256);
    w->ep_data_tcp = calloc((size_t)n, 256);
    w->ep_credit_ipc = calloc((size_t)n, 256);
    w->ep_credit_tcp = calloc((size_t)n, 256);
    w->tx = calloc((size_t)w->topo.n_chan + 1, sizeof *w->tx);
    w->rx = calloc((size_t)w->topo.n_chan + 1, sizeof *w->rx);
    w->stages = calloc((size_t)w->pl->n_stages, sizeof *w->stages);
    w->ours = calloc((size_t)w->pl->n_stages, sizeof(int));
    w->joins = calloc((size_t)w->pl->n_stages, sizeof *w->joins);
    w->m_join_held = calloc((size_t)w->pl->n_stages, sizeof *w->m_join_held);
    w->branch = calloc((size_t)w->pl->n_edges + 1, sizeof(int));
    for (int e = 0; w->branch && e < w->pl->n_edges; e++) {
      w->branch[e] = -1;
      if (w->pl->edges[e].loop) continue;
      int k = 0;
      for (int f = 0; f < e; f++) k += w->pl->edges[f].to == w->pl->edges[e].to && !w->pl->edges[f].loop;
      w->branch[e] = k;
    }
    if (!w->joins || !w->m_join_held || !w->branch || !w->push_data || !w->push_credit || !w->ep_data_ipc || !w->ep_data_tcp || !w->ep_credit_ipc ||
        !w->ep_credit_tcp || !w->tx || !w->rx || !w->stages || !w->ours) {
      rc = qins_error_set(QINS_ENOMEM, "out of memory");
      goto out_body;
    }
    if (pthread_create(&w->hb_thread, NULL, hb_main, w) == 0) w->hb_started = 1;
    /* inboxes */
    const char *prefix = json_string_value(json_object_get(body, "ipc_prefix"));
    const char *tcp_host = json_string_value(json_object_get(body, "tcp_host"));
    int remote = w->topo.inst[w->inst].remote;
    char ipc_d[256], ipc_c[256], tcp_spec[300], tcp_d[256] = "", tcp_c[256] = "";
    snprintf(ipc_d, sizeof ipc_d, "%s-%d-d", prefix ? prefix : "ipc://@qins", w->inst);
    snprintf(ipc_c, sizeof ipc_c, "%s-%d-c", prefix ? prefix : "ipc://@qins", w->inst);
    if (remote)
      snprintf(tcp_spec, sizeof tcp_spec, "tcp://*:*");
    else
      snprintf(tcp_spec, sizeof tcp_spec, "tcp://%s:*", tcp_host ? tcp_host : "127.0.0.1");
    w->data_in = mk_socket(w, ZMQ_PULL);
    w->credit_in = mk_socket(w, ZMQ_PULL);
    json_t *bound = json_object(), *d = json_object(), *c = json_object();
    rc = bind_inbox(w, w->data_in, remote ? NULL : ipc_d, w->topo.has_remote ? tcp_spec : NULL, tcp_d, d);
    if (!rc) rc = bind_inbox(w, w->credit_in, remote ? NULL : ipc_c, w->topo.has_remote ? tcp_spec : NULL, tcp_c, c);
    json_object_set_new(bound, "data", d);
    json_object_set_new(bound, "credit", c);
    if (rc) {
      json_decref(bound);
      goto out_body;
    }
    if ((rc = qins_ctl_send(w->ctl, NULL, "BOUND", bound))) goto out_body;
  }
  json_decref(body);
  body = NULL;
  if ((rc = wait_for(w, "PEERS", &body, 600000))) goto out;
  if ((rc = setup_channels(w, body))) goto out_body;
  if ((rc = init_stages(w))) goto out_body;
  json_decref(body);
  body = NULL;
  if ((rc = qins_ctl_send(w->ctl, NULL, "READY", json_object()))) goto out;
  w->last_ctl = now_s();
  QINS_DEBUG("ready");
  rc = main_loop(w);
  if (rc < 0) goto out;
  cleanup(w);
  return 0;
out_body:
  json_decref(body);
out:
  if (rc > 0) { /* STOP during start-up */
    cleanup(w);
    return 0;
  }
  if (rc < 0) {
    if (w->ctl && qins_error_code() != QINS_OK) fatal(w, NULL);
    struct timespec ts = {0, 50 * 1000000L}; /* let the ERROR leave before the socket closes */
    nanosleep(&ts, NULL);
  }
  cleanup(w);
  return rc < 0 ? 3 : 0;
}
