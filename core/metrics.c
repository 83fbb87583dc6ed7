/* Metrics registry: one process-wide table of counters/gauges/histograms, JSON snapshots, merging
 * of worker snapshots, and Prometheus text exposition 0.0.4. */
#include "core/metrics.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define MAX_BOUNDS 64

struct qins_metric {
  char *name;
  char *help;
  char *labels; /* canonical text: k="v",k2="v2" (may be "") */
  qins_metric_kind kind;
  pthread_mutex_t lock; /* per metric, so hot stages do not serialise on the registry */
  double value;         /* counter/gauge */
  int n_bounds;
  double *bounds;
  uint64_t *counts; /* n_bounds + 1 (last: +Inf), per bucket (not cumulative) */
  double sum;
  uint64_t count;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static qins_metric **reg;
static int reg_n, reg_cap;

/* 10 us .. 10 s in a 1-2.5-5 progression: stage latencies span this range. */
static const double default_bounds[] = {1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
                                        2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static qins_metric *find_locked(const char *name, const char *labels) {
  for (int i = 0; i < reg_n; i++)
    if (strcmp(reg[i]->name, name) == 0 && strcmp(reg[i]->labels, labels) == 0) return reg[i];
  return NULL;
}

static void metric_free(qins_metric *m) {
  if (!m) return;
  free(m->name);
  free(m->help);
  free(m->labels);
  free(m->bounds);
  free(m->counts);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

static qins_metric *get_or_create(const char *name, const char *help, const char *labels, qins_metric_kind kind,
                                  const double *bounds, int n_bounds) {
  if (!name || !*name) {
    qins_error_set(QINS_EINVAL, "metrics: empty metric name");
    return NULL;
  }
  if (!labels) labels = "";
  if (!help) help = "";
  pthread_mutex_lock(&reg_lock);
  qins_metric *m = find_locked(name, labels);
  if (m) {
    pthread_mutex_unlock(&reg_lock);
    if (m->kind != kind) {
      qins_error_set(QINS_EINVAL, "metrics: %s{%s} already registered with another kind", name, labels);
      return NULL;
    }
    return m;
  }
  m = calloc(1, sizeof *m);
  if (!m) goto oom;
  pthread_mutex_init(&m->lock, NULL);
  m->kind = kind;
  m->name = dupstr(name);
  m->help = dupstr(help);
  m->labels = dupstr(labels);
  if (!m->name || !m->help || !m->labels) goto oom;
  if (kind == QINS_METRIC_HISTOGRAM) {
    if (!bounds || n_bounds <= 0) {
      bounds = default_bounds;
      n_bounds = (int)(sizeof default_bounds / sizeof default_bounds[0]);
    }
    if (n_bounds > MAX_BOUNDS) n_bounds = MAX_BOUNDS;
    m->n_bounds = n_bounds;
    m->bounds = malloc(sizeof(double) * (size_t)n_bounds);
    m->counts = calloc((size_t)n_bounds + 1, sizeof(uint64_t));
    if (!m->bounds || !m->counts) goto oom;
    memcpy(m->bounds, bounds, sizeof(double) * (size_t)n_bounds);
  }
  if (reg_n == reg_cap) {
    int cap = reg_cap ? reg_cap * 2 : 64;
    qins_metric **r = realloc(reg, sizeof *r * (size_t)cap);
    if (!r) goto oom;
    reg = r;
    reg_cap = cap;
  }
  reg[reg_n++] = m;
  pthread_mutex_unlock(&reg_lock);
  return m;
oom:
  pthread_mutex_unlock(&reg_lock);
  metric_free(m);
  qins_error_set(QINS_ENOMEM, "metrics: out of memory registering %s", name);
  return NULL;
}

qins_metric *qins_metric_counter(const char *name, const char *help, const char *labels) {
  return get_or_create(name, help, labels, QINS_METRIC_COUNTER, NULL, 0);
}
qins_metric *qins_metric_gauge(const char *name, const char *help, const char *labels) {
  return get_or_create(name, help, labels, QINS_METRIC_GAUGE, NULL, 0);
}
qins_metric *qins_metric_histogram(const char *name, const char *help, const char *labels, const double *bounds,
                                   int n_bounds) {
  return get_or_create(name, help, labels, QINS_METRIC_HISTOGRAM, bounds, n_bounds);
}

void qins_metric_add(qins_metric *m, double v) {
  if (!m || m->kind == QINS_METRIC_HISTOGRAM) return;
  pthread_mutex_lock(&m->lock);
  m->value += v;
  pthread_mutex_unlock(&m->lock);
}

void qins_metric_set(qins_metric *m, double v) {
  if (!m || m->kind == QINS_METRIC_HISTOGRAM) return;
  pthread_mutex_lock(&m->lock);
  m->value = v;
  pthread_mutex_unlock(&m->lock);
}

void qins_metric_observe(qins_metric *m, double v) {
  if (!m || m->kind != QINS_METRIC_HISTOGRAM) return;
  int b = 0;
  while (b < m->n_bounds && !(v <= m->bounds[b])) b++; /* NaN lands in +Inf */
  pthread_mutex_lock(&m->lock);
  m->counts[b]++;
  m->count++;
  if (!isnan(v)) m->sum += v;
  pthread_mutex_unlock(&m->lock);
}

void qins_metric_histogram_set(qins_metric *m, const uint64_t *counts, int n, double sum) {
  if (!m || m->kind != QINS_METRIC_HISTOGRAM || !counts || n != m->n_bounds + 1) return;
  pthread_mutex_lock(&m->lock);
  m->count = 0;
  for (int b = 0; b < n; b++) {
    m->counts[b] = counts[b];
    m->count += counts[b];
  }
  m->sum = isnan(sum) ? 0 : sum;
  pthread_mutex_unlock(&m->lock);
}

double qins_metric_value(const qins_metric *m) {
  if (!m) return 0;
  qins_metric *mm = (qins_metric *)m;
  pthread_mutex_lock(&mm->lock);
  double v = m->kind == QINS_METRIC_HISTOGRAM ? m->sum : m->value;
  pthread_mutex_unlock(&mm->lock);
  return v;
}

double qins_metric_quantile(const qins_metric *m, double q) {
  if (!m || m->kind != QINS_METRIC_HISTOGRAM) return NAN;
  qins_metric *mm = (qins_metric *)m;
  pthread_mutex_lock(&mm->lock);
  double r = NAN;
  if (m->count > 0) {
    if (q < 0) q = 0;
    if (q > 1) q = 1;
    double target = q * (double)m->count;
    uint64_t cum = 0;
    for (int b = 0; b <= m->n_bounds; b++) {
      uint64_t c = m->counts[b];
      if (c == 0) continue;
      if ((double)(cum + c) >= target) {
        if (b == m->n_bounds) { /* +Inf bucket: best we can say is the largest finite bound */
          r = m->bounds[m->n_bounds - 1];
          break;
        }
        double lo = b == 0 ? (m->bounds[0] > 0 ? 0 : m->bounds[0]) : m->bounds[b - 1];
        double hi = m->bounds[b];
        double frac = (target - (double)cum) / (double)c;
        if (frac < 0) frac = 0;
        r = lo + (hi - lo) * frac;
        break;
      }
      cum += c;
    }
  }
  pthread_mutex_unlock(&mm->lock);
  return r;
}

static const char *kind_name(qins_metric_kind k) {
  return k == QINS_METRIC_COUNTER ? "counter" : k == QINS_METRIC_GAUGE ? "gauge" : "histogram";
}

/* Parse k="v",k2="v2" into a JSON object (escapes \" \\ \n inside values as Prometheus writes them). */
static json_t *labels_to_json(const char *s) {
  json_t *o = json_object();
  const char *p = s;
  char key[256], val[1024];
  while (p && *p) {
    while (*p == ',' || *p == ' ') p++;
    if (!*p) break;
    size_t k = 0;
    while (*p && *p != '=' && k + 1 < sizeof key) key[k++] = *p++;
    key[k] = 0;
    if (*p != '=') break;
    p++;
    size_t v = 0;
    if (*p == '"') {
      p++;
      while (*p && *p != '"' && v + 1 < sizeof val) {
        if (*p == '\\' && p[1]) {
          p++;
          val[v++] = *p == 'n' ? '\n' : *p;
          p++;
        } else {
          val[v++] = *p++;
        }
      }
      if (*p == '"') p++;
    } else {
      while (*p && *p != ',' && v + 1 < sizeof val) val[v++] = *p++;
    }
    val[v] = 0;
    json_object_set_new(o, key, json_string(val));
  }
  return o;
}

/* JSON object back to canonical label text (insertion order kept by jansson). */
static int labels_from_json(json_t *o, char *out, size_t n) {
  size_t len = 0;
  out[0] = 0;
  const char *key;
  json_t *v;
  json_object_foreach(o, key, v) {
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    int w = snprintf(out + len, n - len, "%s%s=\"", len ? "," : "", key);
    if (w < 0 || (size_t)w >= n - len) return -1;
    len += (size_t)w;
    for (; *s; s++) {
      if (len + 3 >= n) return -1;
      if (*s == '"' || *s == '\\') out[len++] = '\\';
      if (*s == '\n') {
        out[len++] = '\\';
        out[len++] = 'n';
        continue;
      }
      out[len++] = *s;
    }
    if (len + 2 >= n) return -1;
    out[len++] = '"';
    out[len] = 0;
  }
  return 0;
}

static json_t *metric_to_json(qins_metric *m) {
  json_t *o = json_object();
  json_object_set_new(o, "name", json_string(m->name));
  json_object_set_new(o, "help", json_string(m->help));
  json_object_set_new(o, "kind", json_string(kind_name(m->kind)));
  json_object_set_new(o, "labels", labels_to_json(m->labels));
  pthread_mutex_lock(&m->lock);
  if (m->kind == QINS_METRIC_HISTOGRAM) {
    json_t *b = json_array();
    for (int i = 0; i <= m->n_bounds; i++) {
      json_t *pair = json_array();
      if (i < m->n_bounds)
        json_array_append_new(pair, json_real(m->bounds[i]));
      else
        json_array_append_new(pair, json_string("+Inf"));
      json_array_append_new(pair, json_integer((json_int_t)m->counts[i]));
      json_array_append_new(b, pair);
    }
    json_object_set_new(o, "buckets", b);
    json_object_set_new(o, "sum", json_real(m->sum));
    json_object_set_new(o, "count", json_integer((json_int_t)m->count));
  } else {
    /* JSON has no Inf/NaN: report them as null rather than emitting invalid text */
    json_object_set_new(o, "value", isfinite(m->value) ? json_real(m->value) : json_null());
  }
  pthread_mutex_unlock(&m->lock);
  return o;
}

char *qins_metrics_json(void) {
  json_t *root = json_object();
  json_t *arr = json_array();
  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < reg_n; i++) json_array_append_new(arr, metric_to_json(reg[i]));
  pthread_mutex_unlock(&reg_lock);
  json_object_set_new(root, "metrics", arr);
  char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(17));
  json_decref(root);
  return s;
}

static int merge_one(json_t *e, int idx) {
  const char *name = json_string_value(json_object_get(e, "name"));
  const char *help = json_string_value(json_object_get(e, "help"));
  const char *kind = json_string_value(json_object_get(e, "kind"));
  json_t *labels = json_object_get(e, "labels");
  if (!name || !kind) return qins_error_set(QINS_EINPUT, "metrics merge: entry %d lacks name or kind", idx);
  char lab[2048] = "";
  if (labels && (!json_is_object(labels) || labels_from_json(labels, lab, sizeof lab) != 0))
    return qins_error_set(QINS_EINPUT, "metrics merge: %s: bad labels", name);
  qins_metric *m;
  if (strcmp(kind, "counter") == 0 || strcmp(kind, "gauge") == 0) {
    json_t *v = json_object_get(e, "value");
    if (!v || (!json_is_number(v) && !json_is_null(v)))
      return qins_error_set(QINS_EINPUT, "metrics merge: %s: missing numeric value", name);
    m = kind[0] == 'c' ? qins_metric_counter(name, help, lab) : qins_metric_gauge(name, help, lab);
    if (!m) return qins_error_code();
    /* replace, not add: the snapshot is the worker's running total */
    pthread_mutex_lock(&m->lock);
    m->value = json_is_null(v) ? NAN : json_number_value(v);
    pthread_mutex_unlock(&m->lock);
    return 0;
  }
  if (strcmp(kind, "histogram") != 0) return qins_error_set(QINS_EINPUT, "metrics merge: %s: unknown kind '%s'", name, kind);
  json_t *b = json_object_get(e, "buckets");
  if (!json_is_array(b) || json_array_size(b) < 1 || json_array_size(b) > MAX_BOUNDS + 1)
    return qins_error_set(QINS_EINPUT, "metrics merge: %s: bad buckets", name);
  int nb = (int)json_array_size(b) - 1;
  double bounds[MAX_BOUNDS];
  uint64_t counts[MAX_BOUNDS + 1];
  for (int i = 0; i <= nb; i++) {
    json_t *pair = json_array_get(b, (size_t)i);
    if (!json_is_array(pair) || json_array_size(pair) != 2 || !json_is_integer(json_array_get(pair, 1)))
      return qins_error_set(QINS_EINPUT, "metrics merge: %s: bucket %d is not [le, count]", name, i);
    if (i < nb) {
      if (!json_is_number(json_array_get(pair, 0)))
        return qins_error_set(QINS_EINPUT, "metrics merge: %s: bucket %d bound is not a number", name, i);
      bounds[i] = json_number_value(json_array_get(pair, 0));
    }
    counts[i] = (uint64_t)json_integer_value(json_array_get(pair, 1));
  }
  m = qins_metric_histogram(name, help, lab, nb ? bounds : NULL, nb);
  if (!m) return qins_error_code();
  pthread_mutex_lock(&m->lock);
  if (m->n_bounds != nb || (nb && memcmp(m->bounds, bounds, sizeof(double) * (size_t)nb) != 0)) {
    pthread_mutex_unlock(&m->lock);
    return qins_error_set(QINS_EINPUT, "metrics merge: %s{%s}: bucket bounds differ from the registered ones", name, lab);
  }
  memcpy(m->counts, counts, sizeof(uint64_t) * (size_t)(nb + 1));
  m->sum = json_number_value(json_object_get(e, "sum"));
  m->count = 0;
  for (int i = 0; i <= nb; i++) m->count += counts[i];
  pthread_mutex_unlock(&m->lock);
  return 0;
}

int qins_metrics_merge_json(const char *text) {
  if (!text) return qins_error_set(QINS_EINVAL, "metrics merge: NULL snapshot");
  json_error_t jerr;
  json_t *root = json_loads(text, 0, &jerr);
  if (!root) return qins_error_set(QINS_EINPUT, "metrics merge: bad JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
  json_t *arr = json_object_get(root, "metrics");
  int rc = 0;
  if (!json_is_array(arr)) {
    rc = qins_error_set(QINS_EINPUT, "metrics merge: snapshot lacks a \"metrics\" array");
  } else {
    for (size_t i = 0; i < json_array_size(arr) && rc == 0; i++) {
      json_t *e = json_array_get(arr, i);
      rc = json_is_object(e) ? merge_one(e, (int)i) : qins_error_set(QINS_EINPUT, "metrics merge: entry %zu is not an object", i);
    }
  }
  json_decref(root);
  return rc;
}

/* Growable text buffer for the Prometheus exposition. */
typedef struct sbuf {
  char *p;
  size_t n, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (w < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)w < b->cap - b->n) {
      b->n += (size_t)w;
      return;
    }
    size_t cap = (b->cap + (size_t)w + 1) * 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
}

static void fmt_num(char *out, size_t n, double v) {
  if (isnan(v))
    snprintf(out, n, "NaN");
  else if (isinf(v))
    snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
  else
    snprintf(out, n, "%.17g", v);
}

/* HELP text escapes backslash and newline only (0.0.4). */
static void sb_help(sbuf *b, const char *s) {
  for (; *s; s++) {
    if (*s == '\\') sb_printf(b, "\\\\");
    else if (*s == '\n') sb_printf(b, "\\n");
    else sb_printf(b, "%c", *s);
  }
}

char *qins_metrics_prometheus(void) {
  sbuf b = {0};
  b.cap = 4096;
  b.p = malloc(b.cap);
  if (!b.p) return NULL;
  b.p[0] = 0;
  pthread_mutex_lock(&reg_lock);
  /* Series of one name must sit together under one HELP/TYPE: group by first appearance. */
  char *done = calloc((size_t)reg_n + 1, 1);
  for (int i = 0; i < reg_n && done; i++) {
    if (done[i]) continue;
    qins_metric *first = reg[i];
    sb_printf(&b, "# HELP %s ", first->name);
    sb_help(&b, first->help);
    sb_printf(&b, "\n# TYPE %s %s\n", first->name, kind_name(first->kind));
    for (int j = i; j < reg_n; j++) {
      qins_metric *m = reg[j];
      if (done[j] || strcmp(m->name, first->name) != 0 || m->kind != first->kind) continue;
      done[j] = 1;
      char num[64];
      const char *lab = m->labels;
      pthread_mutex_lock(&m->lock);
      if (m->kind == QINS_METRIC_HISTOGRAM) {
        uint64_t cum = 0;
        for (int k = 0; k <= m->n_bounds; k++) {
          cum += m->counts[k];
          if (k < m->n_bounds)
            fmt_num(num, sizeof num, m->bounds[k]);
          else
            snprintf(num, sizeof num, "+Inf");
          sb_printf(&b, "%s_bucket{%s%sle=\"%s\"} %llu\n", m->name, lab, *lab ? "," : "", num, (unsigned long long)cum);
        }
        fmt_num(num, sizeof num, m->sum);
        if (*lab) {
          sb_printf(&b, "%s_sum{%s} %s\n", m->name, lab, num);
          sb_printf(&b, "%s_count{%s} %llu\n", m->name, lab, (unsigned long long)m->count);
        } else {
          sb_printf(&b, "%s_sum %s\n", m->name, num);
          sb_printf(&b, "%s_count %llu\n", m->name, (unsigned long long)m->count);
        }
      } else {
        fmt_num(num, sizeof num, m->value);
        if (*lab)
          sb_printf(&b, "%s{%s} %s\n", m->name, lab, num);
        else
          sb_printf(&b, "%s %s\n", m->name, num);
      }
      pthread_mutex_unlock(&m->lock);
    }
  }
  pthread_mutex_unlock(&reg_lock);
  if (!done || b.oom) {
    free(done);
    free(b.p);
    qins_error_set(QINS_ENOMEM, "metrics: out of memory writing Prometheus text");
    return NULL;
  }
  free(done);
  return b.p;
}

void qins_metrics_reset(void) {
  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < reg_n; i++) metric_free(reg[i]);
  free(reg);
  reg = NULL;
  reg_n = reg_cap = 0;
  pthread_mutex_unlock(&reg_lock);
}
