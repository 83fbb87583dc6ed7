/* Synthetic pipeline (tokenize -> embed -> qins blocks -> head -> sample, with the decode loop)
 * that drives the real metrics registry, so the dashboard can be seen and tested without models. */
#include "monitor/demo.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/metrics.h"

enum { N_STAGES = 7, N_WORKERS = 3, N_EDGES = 7, N_GATES = 4, N_LOSS = 400 };

static const char *stage_name[N_STAGES] = {"tokenize", "embed", "qins_block0", "qins_block1", "head", "sample", "sink"};
static const char *stage_type[N_STAGES] = {"tokenize", "embed", "qins_block", "qins_block", "head", "sample", "detokenize"};
static const int stage_worker[N_STAGES] = {0, 0, 1, 1, 2, 2, 2};
static const char *worker_name[N_WORKERS] = {"w0", "w1", "w2"};
static const double stage_cost[N_STAGES] = {2e-4, 6e-4, 4e-3, 4e-3, 2.5e-3, 3e-4, 1e-4}; /* mean seconds/item */
static const int edge_from[N_EDGES] = {0, 1, 2, 3, 4, 5, 5};
static const int edge_to[N_EDGES] = {1, 2, 3, 4, 5, 1, 6}; /* 5->1: the autoregressive loop */
static const char *gate_name[N_GATES] = {"A1", "A2", "B1", "C1"};
static const char *gate_metric[N_GATES] = {"logit_rel_l2", "top1_agreement", "ppl_ratio", "greedy_match"};
static const double gate_threshold[N_GATES] = {0.02, 0.99, 1.01, 1.0};

struct qins_monitor_demo {
  pthread_mutex_t mu; /* step() on the caller's thread; providers on the monitor's */
  uint64_t rng;
  double t;
  qins_metric *items[N_STAGES], *lat[N_STAGES];
  qins_metric *edge_items[N_EDGES], *depth[N_EDGES], *cap[N_EDGES];
  qins_metric *cpu[N_WORKERS], *rss[N_WORKERS], *eng[N_WORKERS], *dev[N_WORKERS], *restarts[N_WORKERS];
  qins_metric *tokens, *codes[3], *err[3];
  double frac[N_STAGES]; /* fractional items carried between steps */
  double gate_progress[N_GATES], gate_value[N_GATES];
  int n_loss;
  double loss[N_LOSS][2];
  int restarted;
};

static double urand(qins_monitor_demo *d) {
  d->rng ^= d->rng << 13;
  d->rng ^= d->rng >> 7;
  d->rng ^= d->rng << 17;
  return (double)(d->rng >> 11) / 9007199254740992.0;
}

static double nrand(qins_monitor_demo *d) {
  double u = urand(d), v = urand(d);
  return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

int qins_monitor_demo_create(uint64_t seed, qins_monitor_demo **out) {
  qins_monitor_demo *d = calloc(1, sizeof *d);
  if (!d) return qins_error_set(QINS_ENOMEM, "demo: out of memory");
  pthread_mutex_init(&d->mu, NULL);
  d->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
  char lab[256];
  for (int s = 0; s < N_STAGES; s++) {
    snprintf(lab, sizeof lab, "stage=\"%s\",worker=\"%s\"", stage_name[s], worker_name[stage_worker[s]]);
    d->items[s] = qins_metric_counter("qins_stage_items_total", "Items a stage finished.", lab);
    d->lat[s] = qins_metric_histogram("qins_stage_latency_seconds", "Time a stage spent per item.", lab, NULL, 0);
  }
  for (int e = 0; e < N_EDGES; e++) {
    snprintf(lab, sizeof lab, "from=\"%s\",to=\"%s\"", stage_name[edge_from[e]], stage_name[edge_to[e]]);
    d->edge_items[e] = qins_metric_counter("qins_edge_items_total", "Items sent along an edge.", lab);
    d->depth[e] = qins_metric_gauge("qins_edge_queue_depth", "Items waiting in an edge's ring.", lab);
    d->cap[e] = qins_metric_gauge("qins_edge_capacity", "Slots in an edge's ring.", lab);
    qins_metric_set(d->cap[e], 8);
  }
  for (int w = 0; w < N_WORKERS; w++) {
    snprintf(lab, sizeof lab, "worker=\"%s\"", worker_name[w]);
    d->cpu[w] = qins_metric_counter("qins_worker_cpu_seconds_total", "CPU time used by the worker process.", lab);
    d->rss[w] = qins_metric_gauge("qins_worker_rss_bytes", "Resident memory of the worker process.", lab);
    d->eng[w] = qins_metric_gauge("qins_worker_engine_bytes", "Bytes the engine allocated (qins_mem accounting).", lab);
    d->dev[w] = qins_metric_gauge("qins_worker_device_bytes", "Device memory held by the worker.", lab);
    d->restarts[w] = qins_metric_counter("qins_worker_restarts_total", "Times the worker was restarted.", lab);
  }
  d->tokens = qins_metric_counter("qins_tokens_total", "Tokens generated.", NULL);
  /* QINS codes: one bucket per code value of a 6-bit signed format; errors on a log scale. */
  double code_bounds[63], err_bounds[13];
  for (int i = 0; i < 63; i++) code_bounds[i] = i - 31;
  for (int i = 0; i < 13; i++) err_bounds[i] = pow(10.0, -7.0 + 0.5 * i);
  static const char *tensors[3] = {"layers.0.attn.wq", "layers.0.mlp.w1", "layers.1.mlp.w2"};
  for (int k = 0; k < 3; k++) {
    snprintf(lab, sizeof lab, "tensor=\"%s\",format=\"qins6\"", tensors[k]);
    d->codes[k] = qins_metric_histogram("qins_codes", "QINS codes used by a tensor.", lab, code_bounds, 63);
    d->err[k] = qins_metric_histogram("qins_recon_error", "Absolute reconstruction error per weight.", lab, err_bounds, 13);
    double spread = 6 + 4 * k;
    for (int i = 0; i < 4000; i++) {
      qins_metric_observe(d->codes[k], fmax(-31, fmin(31, round(nrand(d) * spread))));
      qins_metric_observe(d->err[k], pow(10.0, -4.5 + 0.2 * k + 0.6 * nrand(d)));
    }
  }
  *out = d;
  return 0;
}

void qins_monitor_demo_step(qins_monitor_demo *d, double dt) {
  pthread_mutex_lock(&d->mu);
  d->t += dt;
  /* Request rate swings slowly so the charts have shape. */
  double rate = 120 + 60 * sin(d->t / 9.0) + 10 * nrand(d);
  if (rate < 5) rate = 5;
  for (int s = 0; s < N_STAGES; s++) {
    double r = rate * (s == 0 ? 0.15 : s == 6 ? 0.9 : 1.0);
    d->frac[s] += r * dt * (0.9 + 0.2 * urand(d));
    int n = (int)d->frac[s];
    d->frac[s] -= n;
    qins_metric_add(d->items[s], n);
    for (int i = 0; i < n && i < 64; i++)
      qins_metric_observe(d->lat[s], stage_cost[s] * exp(0.35 * nrand(d)) * (urand(d) < 0.02 ? 6 : 1));
  }
  for (int e = 0; e < N_EDGES; e++) {
    qins_metric_add(d->edge_items[e], rate * dt * (edge_to[e] == 1 && edge_from[e] == 5 ? 0.85 : 1));
    double load = edge_to[e] == 2 || edge_to[e] == 3 ? 5.5 : 1.2; /* the qins blocks are the bottleneck */
    double q = round(load + 2.5 * nrand(d) * (rate / 150));
    qins_metric_set(d->depth[e], fmax(0, fmin(8, q)));
  }
  for (int w = 0; w < N_WORKERS; w++) {
    double busy = (w == 1 ? 0.85 : 0.35) * (rate / 150) + 0.05 * urand(d);
    qins_metric_add(d->cpu[w], dt * busy * (w == 1 ? 2 : 1)); /* w1 runs two threads */
    qins_metric_set(d->rss[w], (w == 1 ? 310e6 : 120e6) + 4e6 * sin(d->t / 5 + w));
    qins_metric_set(d->eng[w], w == 1 ? 268435456 : 50331648);
    qins_metric_set(d->dev[w], w == 1 ? 536870912 : 0);
  }
  if (!d->restarted && d->t > 20) { /* one simulated crash and restart */
    qins_metric_add(d->restarts[2], 1);
    d->restarted = 1;
  }
  qins_metric_add(d->tokens, rate * dt * 0.85);
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < 20; i++) qins_metric_observe(d->codes[k], fmax(-31, fmin(31, round(nrand(d) * (6 + 4 * k)))));
  for (int g = 0; g < N_GATES; g++) {
    if (d->t < g * 6.0) continue; /* gates start one after another */
    d->gate_progress[g] = fmin(1, d->gate_progress[g] + dt / (15 + 5 * g));
    double target = g == 0 ? 0.011 : g == 1 ? 0.996 : g == 2 ? 1.004 : (g == 3 ? 0.97 : 1);
    d->gate_value[g] = target + 0.002 * nrand(d) * (1 - d->gate_progress[g]);
  }
  if (d->n_loss < N_LOSS) {
    int step = d->n_loss;
    d->loss[step][0] = step;
    d->loss[step][1] = 0.9 + 5.3 * exp(-step / 40.0) + 0.08 * nrand(d);
    d->n_loss++;
  }
  pthread_mutex_unlock(&d->mu);
}

static char *dump(json_t *o) {
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

static char *demo_graph(void *ctx) {
  (void)ctx;
  json_t *workers = json_array(), *edges = json_array();
  for (int w = 0; w < N_WORKERS; w++) {
    json_t *st = json_array();
    for (int s = 0; s < N_STAGES; s++)
      if (stage_worker[s] == w)
        json_array_append_new(st, json_pack("{s:s,s:s}", "name", stage_name[s], "type", stage_type[s]));
    json_array_append_new(workers, json_pack("{s:s,s:o}", "name", worker_name[w], "stages", st));
  }
  for (int e = 0; e < N_EDGES; e++)
    json_array_append_new(edges, json_pack("{s:s,s:s}", "from", stage_name[edge_from[e]], "to", stage_name[edge_to[e]]));
  return dump(json_pack("{s:o,s:o}", "workers", workers, "edges", edges));
}

static char *demo_gates(void *ctx) {
  qins_monitor_demo *d = ctx;
  pthread_mutex_lock(&d->mu);
  json_t *arr = json_array();
  for (int g = 0; g < N_GATES; g++) {
    if (d->t < g * 6.0) continue;
    int done = d->gate_progress[g] >= 1;
    /* lower is better for the error/ratio gates, higher for agreement/match */
    int higher = g == 1 || g == 3;
    int pass = higher ? d->gate_value[g] >= gate_threshold[g] : d->gate_value[g] <= gate_threshold[g];
    json_array_append_new(arr, json_pack("{s:s,s:f,s:s,s:f,s:f,s:s}", "name", gate_name[g], "progress",
                                         d->gate_progress[g], "metric", gate_metric[g], "value", d->gate_value[g],
                                         "threshold", gate_threshold[g], "verdict",
                                         done ? (pass ? "pass" : "fail") : "running"));
  }
  pthread_mutex_unlock(&d->mu);
  return dump(json_pack("{s:o}", "gates", arr));
}

static char *demo_training(void *ctx) {
  qins_monitor_demo *d = ctx;
  pthread_mutex_lock(&d->mu);
  json_t *loss = json_array();
  for (int i = 0; i < d->n_loss; i++) json_array_append_new(loss, json_pack("[f,f]", d->loss[i][0], d->loss[i][1]));
  int step = d->n_loss;
  pthread_mutex_unlock(&d->mu);
  return dump(json_pack("{s:i,s:i,s:o,s:f}", "step", step, "total_steps", N_LOSS, "loss", loss, "lr", 1e-3));
}

void qins_monitor_demo_providers(qins_monitor_demo *d, qins_monitor_providers *p) {
  memset(p, 0, sizeof *p);
  p->ctx = d;
  p->graph_json = demo_graph;
  p->gates_json = demo_gates;
  p->training_json = demo_training;
}

void qins_monitor_demo_destroy(qins_monitor_demo *d) {
  if (!d) return;
  pthread_mutex_destroy(&d->mu);
  free(d);
}
