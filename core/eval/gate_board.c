/* Live gate progress rows for the dashboard's gates document (see gate_board.h). */
#include "core/eval/gate_board.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

enum { MAX_ROWS = 32 };

typedef struct row {
  char name[32], metric[160], verdict[16];
  double progress, value, threshold;
  int expected, checks, failed; /* failed: the row holds the first failed check; later ones keep it */
} row;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static row rows[MAX_ROWS];
static int n_rows;

void qins_gate_board_reset(void) {
  pthread_mutex_lock(&lock);
  n_rows = 0;
  pthread_mutex_unlock(&lock);
}

/* The row of a gate, added when new; NULL when the board is full. Lock held. */
static row *find(const char *gate) {
  for (int i = 0; i < n_rows; i++)
    if (!strcmp(rows[i].name, gate)) return &rows[i];
  if (n_rows >= MAX_ROWS) return NULL;
  row *r = &rows[n_rows++];
  memset(r, 0, sizeof *r);
  snprintf(r->name, sizeof r->name, "%s", gate);
  r->value = r->threshold = NAN;
  snprintf(r->verdict, sizeof r->verdict, "queued");
  return r;
}

void qins_gate_board_queue(const char *gate) {
  pthread_mutex_lock(&lock);
  find(gate);
  pthread_mutex_unlock(&lock);
}

void qins_gate_board_begin(const char *gate, int expected_checks) {
  pthread_mutex_lock(&lock);
  row *r = find(gate);
  if (r) {
    r->progress = 0;
    r->checks = r->failed = 0;
    r->expected = expected_checks < 1 ? 1 : expected_checks;
    r->metric[0] = 0;
    r->value = r->threshold = NAN;
    snprintf(r->verdict, sizeof r->verdict, "running");
  }
  pthread_mutex_unlock(&lock);
}

void qins_gate_board_check(const char *gate, const char *what, double value, double threshold, int pass) {
  pthread_mutex_lock(&lock);
  row *r = find(gate);
  if (r) {
    r->checks++;
    /* checks come as the gate's measurements finish; the report write is the last 5 % */
    double p = 0.95 * r->checks / (r->expected > r->checks ? r->expected : r->checks + 1);
    if (p > r->progress) r->progress = p;
    if (!r->failed) {
      snprintf(r->metric, sizeof r->metric, "%s", what);
      r->value = value;
      r->threshold = threshold;
      r->failed = !pass;
    }
  }
  pthread_mutex_unlock(&lock);
}

void qins_gate_board_finish(const char *gate, const char *verdict) {
  pthread_mutex_lock(&lock);
  row *r = find(gate);
  if (r) {
    r->progress = 1;
    snprintf(r->verdict, sizeof r->verdict, "%s", verdict);
  }
  pthread_mutex_unlock(&lock);
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

char *qins_gate_board_json(void) {
  pthread_mutex_lock(&lock);
  if (!n_rows) {
    pthread_mutex_unlock(&lock);
    return NULL;
  }
  json_t *arr = json_array();
  for (int i = 0; i < n_rows; i++) {
    const row *r = &rows[i];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(r->name));
    json_object_set_new(o, "progress", json_real(r->progress));
    json_object_set_new(o, "metric", json_string(r->metric));
    json_object_set_new(o, "value", num(r->value));
    json_object_set_new(o, "threshold", num(r->threshold));
    json_object_set_new(o, "verdict", json_string(r->verdict));
    json_array_append_new(arr, o);
  }
  pthread_mutex_unlock(&lock);
  json_t *doc = json_object();
  json_object_set_new(doc, "gates", arr);
  char *s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  return s;
}
