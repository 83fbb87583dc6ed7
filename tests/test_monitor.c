/* Dashboard server tests over real sockets: every endpoint's status, type and content, SSE
 * (ids, resume, heartbeat, many clients), Prometheus text, traversal, methods, token, ZeroMQ attach. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/metrics.h"
#include "monitor/cli.h"
#include "monitor/monitor.h"
#include "tests/test_util.h"

/* ---------- tiny HTTP client ---------- */

typedef struct resp {
  int status;
  char headers[8192];
  char *body;
  size_t body_len;
} resp;

static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct timeval tv = {10, 0}; /* a hung server fails the test instead of hanging it */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void send_all(int fd, const char *s) {
  size_t n = strlen(s), off = 0;
  while (off < n) {
    ssize_t k = send(fd, s + off, n - off, MSG_NOSIGNAL);
    assert_true(k > 0);
    off += (size_t)k;
  }
}

/* Case-insensitive header lookup in the raw header block; copies the value. */
static int header(const resp *r, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  for (const char *p = r->headers; p && *p;) {
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ') v++;
      size_t k = strcspn(v, "\r\n");
      if (k >= cap) k = cap - 1;
      memcpy(out, v, k);
      out[k] = 0;
      return 1;
    }
    p = strstr(p, "\r\n");
    if (p) p += 2;
  }
  return 0;
}

static void dechunk(resp *r) {
  char te[64];
  if (!header(r, "Transfer-Encoding", te, sizeof te) || strcasecmp(te, "chunked") != 0) return;
  char *out = malloc(r->body_len + 1);
  size_t o = 0, i = 0;
  while (i < r->body_len) {
    size_t len = strtoul(r->body + i, NULL, 16);
    char *eol = strstr(r->body + i, "\r\n");
    if (!eol || len == 0) break;
    i = (size_t)(eol - r->body) + 2;
    memcpy(out + o, r->body + i, len);
    o += len;
    i += len + 2;
  }
  out[o] = 0;
  free(r->body);
  r->body = out;
  r->body_len = o;
}

/* Send a raw request (must ask Connection: close) and read the whole response. */
static resp http_raw(int port, const char *request) {
  int fd = tcp_connect(port);
  send_all(fd, request);
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
    ssize_t k = recv(fd, buf + n, cap - n - 1, 0);
    if (k <= 0) break;
    n += (size_t)k;
  }
  close(fd);
  buf[n] = 0;
  resp r = {0};
  char *hend = strstr(buf, "\r\n\r\n");
  assert_non_null(hend);
  assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &r.status), 1);
  char *first = strstr(buf, "\r\n") + 2;
  size_t hl = (size_t)(hend - first) + 2;
  assert_true(hl < sizeof r.headers);
  memcpy(r.headers, first, hl);
  r.headers[hl] = 0;
  r.body_len = n - (size_t)(hend + 4 - buf);
  r.body = malloc(r.body_len + 1);
  memcpy(r.body, hend + 4, r.body_len);
  r.body[r.body_len] = 0;
  free(buf);
  dechunk(&r);
  return r;
}

static resp http_req(int port, const char *method, const char *path, const char *extra) {
  char req[4096];
  snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n", method, path,
           extra ? extra : "");
  return http_raw(port, req);
}

static resp http_get(int port, const char *path) { return http_req(port, "GET", path, NULL); }

static void assert_ctype(const resp *r, const char *prefix) {
  char ct[256];
  assert_true(header(r, "Content-Type", ct, sizeof ct));
  if (strncmp(ct, prefix, strlen(prefix)) != 0) fail_msg("content type '%s', want '%s'", ct, prefix);
}

/* ---------- SSE stream reader (handles chunked encoding) ---------- */

typedef struct sse {
  int fd;
  int chunked;
  char raw[1 << 16];
  size_t raw_len;
  char *text; /* decoded stream not yet consumed */
  size_t len, cap;
  long chunk_left; /* -1: expecting a size line */
} sse;

static void sse_decode(sse *s);

static void sse_open(sse *s, int port, const char *extra) {
  memset(s, 0, sizeof *s);
  s->fd = tcp_connect(port);
  char req[1024];
  snprintf(req, sizeof req, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n%s\r\n",
           extra ? extra : "");
  send_all(s->fd, req);
  /* headers */
  size_t n = 0;
  char *hend = NULL;
  while (!hend) {
    ssize_t k = recv(s->fd, s->raw + n, sizeof s->raw - n - 1, 0);
    assert_true(k > 0);
    n += (size_t)k;
    s->raw[n] = 0;
    hend = strstr(s->raw, "\r\n\r\n");
  }
  resp r = {0};
  assert_int_equal(sscanf(s->raw, "HTTP/1.%*d %d", &r.status), 1);
  assert_int_equal(r.status, 200);
  size_t hl = (size_t)(hend - s->raw);
  memcpy(r.headers, s->raw, hl < sizeof r.headers - 1 ? hl : sizeof r.headers - 1);
  assert_ctype(&r, "text/event-stream");
  char te[64];
  s->chunked = header(&r, "Transfer-Encoding", te, sizeof te) && strcasecmp(te, "chunked") == 0;
  s->raw_len = n - (hl + 4);
  memmove(s->raw, hend + 4, s->raw_len);
  s->chunk_left = -1;
  s->cap = 1 << 16;
  s->text = calloc(1, s->cap);
  sse_decode(s); /* the first bytes may have come with the headers */
}

static void sse_append(sse *s, const char *p, size_t n) {
  while (s->len + n + 1 > s->cap) s->text = realloc(s->text, s->cap *= 2);
  memcpy(s->text + s->len, p, n);
  s->len += n;
  s->text[s->len] = 0;
}

static void sse_decode(sse *s) {
  if (!s->chunked) {
    sse_append(s, s->raw, s->raw_len);
    s->raw_len = 0;
    return;
  }
  for (;;) {
    if (s->chunk_left < 0) {
      char *eol = memmem(s->raw, s->raw_len, "\r\n", 2);
      if (!eol) return;
      s->chunk_left = strtol(s->raw, NULL, 16);
      size_t used = (size_t)(eol - s->raw) + 2;
      memmove(s->raw, s->raw + used, s->raw_len - used);
      s->raw_len -= used;
    }
    size_t take = (size_t)s->chunk_left + 2; /* data + CRLF */
    if (s->raw_len < take) {
      /* pass what we have of the data part, keep the position */
      size_t avail = s->raw_len < (size_t)s->chunk_left ? s->raw_len : (size_t)s->chunk_left;
      sse_append(s, s->raw, avail);
      memmove(s->raw, s->raw + avail, s->raw_len - avail);
      s->raw_len -= avail;
      s->chunk_left -= (long)avail;
      return;
    }
    sse_append(s, s->raw, (size_t)s->chunk_left);
    memmove(s->raw, s->raw + take, s->raw_len - take);
    s->raw_len -= take;
    s->chunk_left = -1;
  }
}

/* Next block of the stream up to a blank line (an event or a comment). Returns malloc'ed text. */
static char *sse_next(sse *s) {
  for (;;) {
    char *end = strstr(s->text ? s->text : "", "\n\n");
    if (s->text && end) {
      size_t n = (size_t)(end - s->text);
      char *blk = strndup(s->text, n);
      memmove(s->text, end + 2, s->len - n - 2 + 1);
      s->len -= n + 2;
      return blk;
    }
    ssize_t k = recv(s->fd, s->raw + s->raw_len, sizeof s->raw - s->raw_len, 0);
    if (k <= 0) fail_msg("SSE stream closed or timed out (%s); pending [%s] raw %zu", strerror(errno), s->text ? s->text : "", s->raw_len);
    s->raw_len += (size_t)k;
    sse_decode(s);
  }
}

/* Next real event (skipping comments and the retry block); returns its id, data in *data. */
static long sse_next_event(sse *s, char **data, int *saw_retry, int *saw_heartbeat) {
  for (;;) {
    char *blk = sse_next(s);
    long id = -1;
    char *d = NULL;
    for (char *line = strtok(blk, "\n"); line; line = strtok(NULL, "\n")) {
      if (strncmp(line, "id: ", 4) == 0) id = atol(line + 4);
      if (strncmp(line, "data: ", 6) == 0) d = strdup(line + 6);
      if (strncmp(line, "retry: ", 7) == 0 && saw_retry) *saw_retry = atoi(line + 7);
      if (strncmp(line, ": heartbeat", 11) == 0 && saw_heartbeat) *saw_heartbeat = 1;
    }
    free(blk);
    if (d) {
      *data = d;
      return id;
    }
    if (saw_heartbeat && *saw_heartbeat) {
      *data = NULL;
      return -1;
    }
  }
}

static void sse_close(sse *s) {
  close(s->fd);
  free(s->text);
}

/* ---------- fixtures ---------- */

static const char *GRAPH =
    "{\"workers\":[{\"name\":\"w0\",\"stages\":[{\"name\":\"tokenize\",\"type\":\"tokenize\"},"
    "{\"name\":\"embed\",\"type\":\"embed\"}]},{\"name\":\"w1\",\"stages\":[{\"name\":\"head\",\"type\":\"head\"}]}],"
    "\"edges\":[{\"from\":\"tokenize\",\"to\":\"embed\"},{\"from\":\"embed\",\"to\":\"head\"}]}";

static qins_metric *items;
static double items_total;

static void registry_setup(void) {
  qins_metrics_reset();
  items = qins_metric_counter("qins_stage_items_total", "Items a stage finished.", "stage=\"embed\",worker=\"w0\"");
  qins_metric_set(qins_metric_gauge("qins_worker_rss_bytes", "Resident memory.", "worker=\"w0\""), 12345678);
  qins_metric *lat = qins_metric_histogram("qins_stage_latency_seconds", "Stage latency.", "stage=\"embed\"", NULL, 0);
  for (int i = 0; i < 50; i++) qins_metric_observe(lat, test_rand_uniform(1e-5f, 0.5f));
  double b[] = {-1, 0, 1};
  qins_metric *h = qins_metric_histogram("qins_codes", "Codes used.", "tensor=\"w\"", b, 3);
  for (int i = 0; i < 20; i++) qins_metric_observe(h, test_rand_uniform(-2, 2));
  items_total = 0;
}

/* Bump the counter by a random amount and publish the registry plus the graph. */
static void publish_tick(qins_monitor *m) {
  double inc = 1 + (double)(test_rand_u64() % 100);
  qins_metric_add(items, inc);
  items_total += inc;
  qins_monitor_providers p = {0};
  qins_monitor_snapshot s;
  assert_int_equal(qins_monitor_snapshot_collect(&p, &s), 0);
  s.graph = strdup(GRAPH);
  assert_int_equal(qins_monitor_publish(m, &s), 0);
  qins_monitor_snapshot_free(&s);
}

/* The items counter's value inside a state document. */
static double state_items(const char *state_json, long *seq) {
  json_error_t e;
  json_t *o = json_loads(state_json, 0, &e);
  if (!o) fail_msg("state is not JSON: %s", e.text);
  if (seq) *seq = (long)json_integer_value(json_object_get(o, "seq"));
  json_t *arr = json_object_get(json_object_get(o, "metrics"), "metrics");
  double v = -1;
  size_t i;
  json_t *mt;
  json_array_foreach(arr, i, mt) {
    if (strcmp(json_string_value(json_object_get(mt, "name")), "qins_stage_items_total") == 0)
      v = json_number_value(json_object_get(mt, "value"));
  }
  json_decref(o);
  return v;
}

static qins_monitor *start_loopback(const qins_monitor_opts *o) {
  qins_monitor *m = NULL;
  if (qins_monitor_start(NULL, o, &m) != 0) fail_msg("start: %s", qins_error_msg());
  return m;
}

/* ---------- tests ---------- */

static void test_addr_and_loopback_default(void **state) {
  (void)state;
  char host[128];
  int port, loop;
  assert_int_equal(qins_monitor_parse_addr(NULL, host, sizeof host, &port, &loop), 0);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 0);
  assert_true(loop);
  assert_int_equal(qins_monitor_parse_addr("8080", host, sizeof host, &port, &loop), 0);
  assert_int_equal(port, 8080);
  assert_true(loop);
  assert_int_equal(qins_monitor_parse_addr("localhost:9", host, sizeof host, &port, &loop), 0);
  assert_true(loop);
  assert_int_equal(qins_monitor_parse_addr("[::1]:7", host, sizeof host, &port, &loop), 0);
  assert_string_equal(host, "::1");
  assert_true(loop);
  assert_int_equal(qins_monitor_parse_addr("0.0.0.0:80", host, sizeof host, &port, &loop), 0);
  assert_false(loop);
  assert_int_equal(qins_monitor_parse_addr("127.0.0.1:99999", host, sizeof host, &port, &loop), QINS_EINVAL);
  assert_int_equal(qins_monitor_parse_addr("example.org:80", host, sizeof host, &port, &loop), QINS_EINVAL);
  assert_int_equal(qins_monitor_parse_addr("1.2.3.4:x", host, sizeof host, &port, &loop), QINS_EINVAL);

  /* Default: loopback, ephemeral port reported, URL without token. */
  qins_monitor *m = start_loopback(NULL);
  assert_true(qins_monitor_port(m) > 0);
  char want[64];
  snprintf(want, sizeof want, "http://127.0.0.1:%d/", qins_monitor_port(m));
  assert_string_equal(qins_monitor_url(m), want);
  resp r = http_get(qins_monitor_port(m), "/api/state");
  assert_int_equal(r.status, 200);
  free(r.body);
  qins_monitor_stop(m);

  /* Non-loopback needs the explicit flag, and then a token. */
  qins_monitor_opts o = {0};
  assert_int_equal(qins_monitor_start("0.0.0.0:0", &o, &m), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "dashboard-public"));
  o.allow_public = 1;
  assert_int_equal(qins_monitor_start("0.0.0.0:0", &o, &m), QINS_EINVAL);
  o.token = "short";
  assert_int_equal(qins_monitor_start("0.0.0.0:0", &o, &m), QINS_EINVAL);
}

static void test_static_and_state(void **state) {
  (void)state;
  registry_setup();
  qins_monitor *m = start_loopback(NULL);
  int port = qins_monitor_port(m);

  /* Before any snapshot: valid empty state. */
  resp r = http_get(port, "/api/state");
  assert_int_equal(r.status, 200);
  assert_ctype(&r, "application/json");
  long seq = -1;
  state_items(r.body, &seq);
  assert_int_equal(seq, 0);
  free(r.body);

  publish_tick(m);
  assert_int_equal(qins_monitor_seq(m), 1);

  r = http_get(port, "/");
  assert_int_equal(r.status, 200);
  assert_ctype(&r, "text/html");
  assert_non_null(strstr(r.body, "<html"));
  assert_non_null(strstr(r.body, "app.js"));
  char v[256];
  assert_true(header(&r, "X-Content-Type-Options", v, sizeof v));
  assert_true(header(&r, "Content-Security-Policy", v, sizeof v));
  free(r.body);
  r = http_get(port, "/index.html");
  assert_int_equal(r.status, 200);
  free(r.body);
  r = http_get(port, "/app.js");
  assert_int_equal(r.status, 200);
  assert_ctype(&r, "text/javascript");
  assert_non_null(strstr(r.body, "EventSource"));
  free(r.body);
  r = http_get(port, "/style.css");
  assert_int_equal(r.status, 200);
  assert_ctype(&r, "text/css");
  free(r.body);
  r = http_get(port, "/vendor/chart.umd.js");
  assert_int_equal(r.status, 200);
  assert_ctype(&r, "text/javascript");
  assert_true(r.body_len > 0);
  free(r.body);

  r = http_get(port, "/api/state");
  assert_int_equal(r.status, 200);
  assert_ctype(&r, "application/json");
  double got = state_items(r.body, &seq);
  assert_int_equal(seq, 1);
  assert_true(got == items_total);
  /* graph passes through with the stage names */
  json_t *o = json_loads(r.body, 0, NULL);
  json_t *w1 = json_array_get(json_object_get(json_object_get(o, "graph"), "workers"), 1);
  assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(w1, "stages"), 0), "name")),
                      "head");
  assert_true(json_is_null(json_object_get(o, "gates")));
  json_decref(o);
  free(r.body);

  /* HEAD: headers (with GET's length), no body. */
  r = http_req(port, "HEAD", "/api/state", NULL);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  char cl[32];
  assert_true(header(&r, "Content-Length", cl, sizeof cl));
  assert_true(atoi(cl) > 10);
  free(r.body);

  /* Invalid JSON is refused and the state stays. */
  qins_monitor_snapshot bad = {.metrics = "{\"metrics\":[", .graph = GRAPH};
  assert_int_equal(qins_monitor_publish(m, &bad), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "metrics"));
  assert_int_equal(qins_monitor_seq(m), 1);
  qins_monitor_stop(m);
}

/* ---- Prometheus text parser: families need HELP+TYPE first; histograms are consistent ---- */

typedef struct fam {
  char name[128];
  char type[16];
  int help;
} fam;

static fam *find_fam(fam *f, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(f[i].name, name) == 0) return &f[i];
  return NULL;
}

static void check_prometheus(const char *text, double want_items) {
  fam fams[64];
  int nf = 0, samples = 0, found_items = 0;
  char *copy = strdup(text);
  /* histogram state per (family, labels-without-le) */
  char cur_series[512] = "";
  double last_le = -1e300, last_cum = -1, inf_count = -1;
  int in_hist = 0;
  char *save;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
      char name[128], rest[256];
      assert_int_equal(sscanf(line + 7, "%127s %255s", name, rest), 2);
      fam *f = find_fam(fams, nf, name);
      if (!f) {
        assert_true(nf < 64);
        f = &fams[nf++];
        memset(f, 0, sizeof *f);
        strcpy(f->name, name);
      }
      if (line[2] == 'H') {
        f->help = 1;
      } else {
        assert_true(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0 || strcmp(rest, "histogram") == 0 ||
                    strcmp(rest, "summary") == 0 || strcmp(rest, "untyped") == 0);
        strcpy(f->type, rest);
      }
      continue;
    }
    if (line[0] == '#') continue;
    /* sample: name[{labels}] value */
    char name[128];
    size_t nl = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
    assert_true(nl > 0 && nl < sizeof name);
    memcpy(name, line, nl);
    name[nl] = 0;
    const char *p = line + nl;
    char labels[512] = "";
    if (*p == '{') {
      const char *close = strchr(p, '}');
      assert_non_null(close);
      size_t ll = (size_t)(close - p - 1);
      assert_true(ll < sizeof labels);
      memcpy(labels, p + 1, ll);
      labels[ll] = 0;
      p = close + 1;
    }
    assert_true(*p == ' ');
    char *end;
    double val = strtod(p + 1, &end);
    if (end == p + 1) fail_msg("bad value in '%s'", line);
    samples++;
    /* family: exact name, or a histogram's _bucket/_sum/_count */
    fam *f = find_fam(fams, nf, name);
    const char *suffix = NULL;
    if (!f) {
      static const char *sfx[] = {"_bucket", "_sum", "_count"};
      for (int i = 0; i < 3 && !f; i++) {
        size_t sl = strlen(sfx[i]);
        if (nl > sl && strcmp(name + nl - sl, sfx[i]) == 0) {
          char base[128];
          memcpy(base, name, nl - sl);
          base[nl - sl] = 0;
          f = find_fam(fams, nf, base);
          suffix = sfx[i];
        }
      }
    }
    if (!f) fail_msg("sample '%s' has no HELP/TYPE before it", line);
    assert_true(f->help);
    assert_true(f->type[0] != 0);
    if (strcmp(name, "qins_stage_items_total") == 0 && strstr(labels, "stage=\"embed\"")) {
      found_items = 1;
      assert_true(val == want_items);
    }
    if (strcmp(f->type, "histogram") == 0) {
      assert_non_null(suffix);
      char series[512];
      /* series key: labels without le */
      char *le = strstr(labels, "le=\"");
      size_t keep = le ? (size_t)(le - labels) : strlen(labels);
      snprintf(series, sizeof series, "%s|%.*s", f->name, (int)keep, labels);
      if (strcmp(suffix, "_bucket") == 0) {
        assert_non_null(le);
        if (!in_hist || strcmp(series, cur_series) != 0) {
          strcpy(cur_series, series);
          last_le = -1e300;
          last_cum = -1;
          inf_count = -1;
          in_hist = 1;
        }
        double lev = strncmp(le + 4, "+Inf", 4) == 0 ? 1e308 : strtod(le + 4, NULL);
        assert_true(lev > last_le); /* ascending bounds */
        assert_true(val >= last_cum); /* cumulative */
        last_le = lev;
        last_cum = val;
        if (lev == 1e308) inf_count = val;
      } else if (strcmp(suffix, "_count") == 0) {
        assert_true(in_hist);
        assert_true(inf_count >= 0); /* +Inf bucket was present */
        assert_true(val == inf_count);
      }
    }
  }
  assert_true(samples > 5);
  assert_true(found_items);
  fam *h = find_fam(fams, nf, "qins_stage_latency_seconds");
  assert_non_null(h);
  assert_string_equal(h->type, "histogram");
  assert_non_null(find_fam(fams, nf, "qins_monitor_sse_clients"));
  free(copy);
}

static void test_prometheus(void **state) {
  (void)state;
  registry_setup();
  qins_monitor *m = start_loopback(NULL);
  int port = qins_monitor_port(m);
  publish_tick(m);
  publish_tick(m);
  resp r = http_get(port, "/metrics");
  assert_int_equal(r.status, 200);
  char ct[128];
  assert_true(header(&r, "Content-Type", ct, sizeof ct));
  assert_non_null(strstr(ct, "text/plain; version=0.0.4"));
  check_prometheus(r.body, items_total);
  free(r.body);
  qins_monitor_stop(m);
}

static void test_sse_events_advance(void **state) {
  (void)state;
  registry_setup();
  qins_monitor_opts o = {.heartbeat_ms = 200, .retry_ms = 1234};
  qins_monitor *m = start_loopback(&o);
  int port = qins_monitor_port(m);
  publish_tick(m);
  sse s;
  sse_open(&s, port, NULL);
  int retry = 0;
  char *data;
  long id = sse_next_event(&s, &data, &retry, NULL);
  assert_int_equal(retry, 1234);
  assert_int_equal(id, 1); /* a new client gets the current state */
  long seq;
  double v1 = state_items(data, &seq);
  assert_int_equal(seq, 1);
  free(data);
  for (int k = 2; k <= 4; k++) {
    publish_tick(m);
    id = sse_next_event(&s, &data, NULL, NULL);
    assert_int_equal(id, k);
    double v = state_items(data, &seq);
    assert_int_equal(seq, k);
    assert_true(v > v1); /* counters advance */
    assert_true(v == items_total);
    v1 = v;
    free(data);
  }
  /* Idle: a heartbeat comment keeps the stream alive. */
  int hb = 0;
  id = sse_next_event(&s, &data, NULL, &hb);
  assert_true(hb);
  assert_int_equal(id, -1);
  sse_close(&s);
  qins_monitor_stop(m);
}

static void test_sse_resume(void **state) {
  (void)state;
  registry_setup();
  qins_monitor_opts o = {.history = 8};
  qins_monitor *m = start_loopback(&o);
  int port = qins_monitor_port(m);
  for (int i = 0; i < 5; i++) publish_tick(m);
  /* Reconnect after event 2: events 3, 4, 5 follow in order. */
  sse s;
  sse_open(&s, port, "Last-Event-ID: 2\r\n");
  char *data;
  for (long want = 3; want <= 5; want++) {
    long id = sse_next_event(&s, &data, NULL, NULL);
    assert_int_equal(id, want);
    long seq;
    state_items(data, &seq);
    assert_int_equal(seq, want);
    free(data);
  }
  publish_tick(m);
  assert_int_equal(sse_next_event(&s, &data, NULL, NULL), 6);
  free(data);
  sse_close(&s);
  /* Too old for the ring (8 kept): skips to the newest whole state. */
  for (int i = 0; i < 10; i++) publish_tick(m);
  sse_open(&s, port, "Last-Event-ID: 1\r\n");
  assert_int_equal(sse_next_event(&s, &data, NULL, NULL), 16);
  free(data);
  sse_close(&s);
  /* An id from the future (server restarted) gets the current state. */
  sse_open(&s, port, "Last-Event-ID: 999\r\n");
  assert_int_equal(sse_next_event(&s, &data, NULL, NULL), 16);
  free(data);
  sse_close(&s);
  qins_monitor_stop(m);
}

static void test_sse_many_clients(void **state) {
  (void)state;
  registry_setup();
  qins_monitor *m = start_loopback(NULL);
  int port = qins_monitor_port(m);
  publish_tick(m);
  enum { N = 24 };
  static sse s[N];
  char *data;
  for (int i = 0; i < N; i++) {
    sse_open(&s[i], port, NULL);
    assert_int_equal(sse_next_event(&s[i], &data, NULL, NULL), 1);
    free(data);
  }
  resp r = http_get(port, "/metrics");
  assert_non_null(strstr(r.body, "qins_monitor_sse_clients 24"));
  free(r.body);
  for (int k = 2; k <= 3; k++) {
    publish_tick(m);
    for (int i = 0; i < N; i++) {
      assert_int_equal(sse_next_event(&s[i], &data, NULL, NULL), k);
      assert_true(state_items(data, NULL) == items_total);
      free(data);
    }
  }
  /* Half the clients go away; the rest keep receiving; stop with clients attached. */
  for (int i = 0; i < N / 2; i++) sse_close(&s[i]);
  publish_tick(m);
  for (int i = N / 2; i < N; i++) {
    assert_int_equal(sse_next_event(&s[i], &data, NULL, NULL), 4);
    free(data);
  }
  qins_monitor_stop(m);
  for (int i = N / 2; i < N; i++) sse_close(&s[i]);
}

static const char *TRAVERSALS[] = {
    "/../etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/..%2f..%2fetc%2fpasswd",
    "/%2fetc%2fpasswd",
    "//etc/passwd",
    "/etc/passwd",
    "/web/../index.html",
    "/./index.html",
    "/index.html/..",
    "/..",
    "/.%2e/",
    "/%252e%252e/etc/passwd",
    "/..\\..\\etc\\passwd",
    "/index.html%00.js",
    "/.hidden",
    "/link.html",
    "/sub/passwd",
    "/vendor/../../monitor.c",
    "http://127.0.0.1/../../etc/passwd",
};

static void check_traversals(int port) {
  for (size_t i = 0; i < sizeof TRAVERSALS / sizeof *TRAVERSALS; i++) {
    resp r = http_get(port, TRAVERSALS[i]);
    /* 400 from the HTTP parser is also a refusal; anything served is a failure */
    if (r.status != 404 && r.status != 400) fail_msg("%s: status %d, want 404", TRAVERSALS[i], r.status);
    assert_null(strstr(r.body, "root:"));
    assert_null(strstr(r.body, "SECRET"));
    free(r.body);
  }
}

static void test_traversal(void **state) {
  (void)state;
  /* Embedded assets. */
  qins_monitor *m = start_loopback(NULL);
  check_traversals(qins_monitor_port(m));
  qins_monitor_stop(m);

  /* A web folder on disk with a secret beside it and symlinks pointing out. */
  char dir[] = "/tmp/qins_monitor_test_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char web[512], path[600];
  snprintf(web, sizeof web, "%s/web", dir);
  assert_int_equal(mkdir(web, 0700), 0);
  snprintf(path, sizeof path, "%s/index.html", web);
  FILE *f = fopen(path, "w");
  fputs("<html>disk page</html>", f);
  fclose(f);
  snprintf(path, sizeof path, "%s/secret", dir);
  f = fopen(path, "w");
  fputs("SECRET", f);
  fclose(f);
  snprintf(path, sizeof path, "%s/.hidden", web);
  f = fopen(path, "w");
  fputs("SECRET", f);
  fclose(f);
  char tgt[600];
  snprintf(path, sizeof path, "%s/link.html", web);
  snprintf(tgt, sizeof tgt, "%s/secret", dir);
  assert_int_equal(symlink(tgt, path), 0);
  snprintf(path, sizeof path, "%s/sub", web);
  assert_int_equal(symlink(dir, path), 0);
  snprintf(path, sizeof path, "%s/sub2", web);
  assert_int_equal(symlink("/etc", path), 0);
  qins_monitor_opts o = {.web_dir = web};
  m = start_loopback(&o);
  int port = qins_monitor_port(m);
  resp r = http_get(port, "/");
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "<html>disk page</html>");
  free(r.body);
  check_traversals(port);
  r = http_get(port, "/sub/secret");
  assert_int_equal(r.status, 404);
  free(r.body);
  r = http_get(port, "/sub2/passwd");
  assert_int_equal(r.status, 404);
  free(r.body);
  qins_monitor_stop(m);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static void test_methods(void **state) {
  (void)state;
  qins_monitor *m = start_loopback(NULL);
  int port = qins_monitor_port(m);
  const char *methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
  const char *paths[] = {"/", "/api/state", "/events", "/metrics"};
  for (size_t i = 0; i < 5; i++)
    for (size_t j = 0; j < 4; j++) {
      resp r = http_req(port, methods[i], paths[j], "Content-Length: 5\r\n\r\nhello");
      if (r.status != 405) fail_msg("%s %s: %d, want 405", methods[i], paths[j], r.status);
      char allow[64];
      assert_true(header(&r, "Allow", allow, sizeof allow));
      assert_string_equal(allow, "GET, HEAD");
      free(r.body);
    }
  resp r = http_req(port, "HEAD", "/", NULL);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  free(r.body);
  qins_monitor_stop(m);
}

/* DNS rebinding: a foreign Host name is refused on a token-less loopback server. */
static void test_host_header(void **state) {
  (void)state;
  qins_monitor *m = start_loopback(NULL);
  int port = qins_monitor_port(m);
  const char *ok_hosts[] = {"127.0.0.1", "127.0.0.1:8080", "localhost:1", "LOCALHOST", "[::1]:80", "127.1.2.3"};
  const char *bad_hosts[] = {"evil.example", "evil.example:80", "10.0.0.1", "[::2]:80", "localhost.evil.example"};
  char req[512];
  for (size_t i = 0; i < 6; i++) {
    snprintf(req, sizeof req, "GET /api/state HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", ok_hosts[i]);
    resp r = http_raw(port, req);
    if (r.status != 200) fail_msg("Host %s: %d, want 200", ok_hosts[i], r.status);
    free(r.body);
  }
  for (size_t i = 0; i < 5; i++) {
    snprintf(req, sizeof req, "GET /api/state HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", bad_hosts[i]);
    resp r = http_raw(port, req);
    if (r.status != 403) fail_msg("Host %s: %d, want 403", bad_hosts[i], r.status);
    assert_null(strstr(r.body, "metrics"));
    free(r.body);
  }
  qins_monitor_stop(m);
}

static void test_token(void **state) {
  (void)state;
  registry_setup();
  const char *tok = "s3cr3t-t0ken-0123456789abcdef";
  /* Public bind: needs the flag and the token; checked over loopback. */
  qins_monitor_opts o = {.allow_public = 1, .token = tok};
  qins_monitor *m = NULL;
  if (qins_monitor_start("0.0.0.0:0", &o, &m) != 0) fail_msg("start: %s", qins_error_msg());
  int port = qins_monitor_port(m);
  assert_non_null(strstr(qins_monitor_url(m), "?token=s3cr3t-t0ken-0123456789abcdef"));
  publish_tick(m);
  const char *paths[] = {"/", "/app.js", "/api/state", "/metrics", "/events"};
  for (size_t i = 0; i < 5; i++) {
    resp r = http_get(port, paths[i]);
    if (r.status != 401) fail_msg("%s without token: %d, want 401", paths[i], r.status);
    char v[128];
    assert_true(header(&r, "WWW-Authenticate", v, sizeof v));
    assert_null(strstr(r.body, "qins_stage_items_total"));
    free(r.body);
    char p[256];
    snprintf(p, sizeof p, "%s?token=wrong", paths[i]);
    r = http_get(port, p);
    assert_int_equal(r.status, 401);
    free(r.body);
    snprintf(p, sizeof p, "%s?token=%.10s", paths[i], tok); /* a prefix is not the token */
    r = http_get(port, p);
    assert_int_equal(r.status, 401);
    free(r.body);
    snprintf(p, sizeof p, "%s?token=%sX", paths[i], tok); /* nor is a longer one */
    r = http_get(port, p);
    assert_int_equal(r.status, 401);
    free(r.body);
  }
  char p[256], h[256];
  snprintf(p, sizeof p, "/api/state?token=%s", tok);
  resp r = http_get(port, p);
  assert_int_equal(r.status, 200);
  assert_true(state_items(r.body, NULL) == items_total);
  free(r.body);
  snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", tok);
  r = http_req(port, "GET", "/metrics", h);
  assert_int_equal(r.status, 200);
  free(r.body);
  r = http_req(port, "GET", "/metrics", "Authorization: Bearer nope\r\n");
  assert_int_equal(r.status, 401);
  free(r.body);
  /* The page gets a cookie so its own script/asset requests carry the token. */
  snprintf(p, sizeof p, "/?token=%s", tok);
  r = http_get(port, p);
  assert_int_equal(r.status, 200);
  char ck[512];
  assert_true(header(&r, "Set-Cookie", ck, sizeof ck));
  assert_non_null(strstr(ck, tok));
  assert_non_null(strstr(ck, "HttpOnly"));
  free(r.body);
  snprintf(h, sizeof h, "Cookie: qins_token=%s\r\n", tok);
  r = http_req(port, "GET", "/app.js", h);
  assert_int_equal(r.status, 200);
  free(r.body);
  snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", tok);
  sse s;
  sse_open(&s, port, h);
  char *data;
  assert_int_equal(sse_next_event(&s, &data, NULL, NULL), 1);
  free(data);
  sse_close(&s);
  qins_monitor_stop(m);
}

static char *prov_graph(void *ctx) {
  (*(int *)ctx)++;
  return strdup(GRAPH);
}

static char *prov_gates(void *ctx) {
  (void)ctx;
  return strdup("{\"gates\":[{\"name\":\"A1\",\"progress\":0.5,\"verdict\":\"running\"}]}");
}

static void test_providers_tick(void **state) {
  (void)state;
  registry_setup();
  int calls = 0;
  qins_monitor_opts o = {.tick_ms = 20};
  qins_monitor *m = start_loopback(&o);
  qins_monitor_providers p = {.ctx = &calls, .graph_json = prov_graph, .gates_json = prov_gates};
  assert_int_equal(qins_monitor_set_providers(m, &p), 0);
  assert_int_equal(qins_monitor_tick(m), 0); /* coordinator-driven tick */
  assert_int_equal(qins_monitor_seq(m), 1);
  assert_int_equal(qins_monitor_run_providers(m), 0); /* monitor-driven ticks */
  sse s;
  sse_open(&s, qins_monitor_port(m), "Last-Event-ID: 1\r\n");
  char *data;
  long id = sse_next_event(&s, &data, NULL, NULL);
  assert_true(id >= 2);
  json_t *st = json_loads(data, 0, NULL);
  json_t *g = json_array_get(json_object_get(json_object_get(st, "gates"), "gates"), 0);
  assert_string_equal(json_string_value(json_object_get(g, "name")), "A1");
  json_decref(st);
  free(data);
  sse_close(&s);
  qins_monitor_stop(m);
  assert_true(calls >= 2);
}

static void test_zmq_attach(void **state) {
  (void)state;
  registry_setup();
  char ep[128];
  snprintf(ep, sizeof ep, "ipc:///tmp/qins_monitor_test_%d_%llu", (int)getpid(),
           (unsigned long long)(test_rand_u64() % 1000000));
  qins_monitor_pub *pub;
  if (qins_monitor_pub_open(ep, &pub) != 0) fail_msg("pub: %s", qins_error_msg());
  qins_monitor *m = start_loopback(NULL);
  assert_int_equal(qins_monitor_attach(m, ep), 0);
  qins_metric_add(items, 42);
  qins_monitor_snapshot s;
  qins_monitor_snapshot_collect(NULL, &s);
  s.graph = strdup(GRAPH);
  /* PUB/SUB joins late: resend until the monitor has one (bounded by count, not time). */
  for (int i = 0; i < 400 && qins_monitor_seq(m) == 0; i++) {
    assert_int_equal(qins_monitor_pub_send(pub, &s), 0);
    usleep(25000);
  }
  assert_true(qins_monitor_seq(m) >= 1);
  resp r = http_get(qins_monitor_port(m), "/api/state");
  assert_int_equal(r.status, 200);
  assert_true(state_items(r.body, NULL) == 42);
  assert_non_null(strstr(r.body, "\"tokenize\""));
  free(r.body);
  r = http_get(qins_monitor_port(m), "/metrics");
  assert_non_null(strstr(r.body, "qins_stage_items_total{stage=\"embed\",worker=\"w0\"} 42"));
  free(r.body);
  qins_monitor_snapshot_free(&s);
  qins_monitor_stop(m);
  qins_monitor_pub_close(pub);
  unlink(ep + 6);
}

static void test_cli_flags(void **state) {
  (void)state;
  qins_monitor_cli c = {0};
  char *argv1[] = {"run", "pipelines/x.yaml", "--dashboard", "pipelines/y.yaml"};
  int i = 2;
  /* "--dashboard" followed by a non-address keeps the default and leaves the argument alone */
  assert_int_equal(qins_monitor_cli_arg(&c, 4, argv1, &i), 1);
  assert_int_equal(i, 2);
  assert_true(c.enabled);
  assert_string_equal(c.addr, "");
  char *argv2[] = {"run", "--dashboard", "127.0.0.1:8080", "--dashboard-public", "--dashboard-token", "abcdefghijklmnopq",
                   "--monitor-publish", "tcp://127.0.0.1:5600", "--monitor-tick-ms", "250", "--other"};
  qins_monitor_cli d = {0};
  int n = 0;
  for (i = 1; i < 11; i++) {
    int rc = qins_monitor_cli_arg(&d, 11, argv2, &i);
    assert_true(rc >= 0);
    n += rc;
  }
  assert_int_equal(n, 5);
  assert_string_equal(d.addr, "127.0.0.1:8080");
  assert_true(d.allow_public);
  assert_string_equal(d.token, "abcdefghijklmnopq");
  assert_string_equal(d.publish, "tcp://127.0.0.1:5600");
  assert_int_equal(d.tick_ms, 250);
  char *argv3[] = {"run", "--dashboard=nonsense"};
  i = 1;
  assert_int_equal(qins_monitor_cli_arg(&d, 2, argv3, &i), QINS_EINVAL);
  char *argv4[] = {"run", "--monitor-tick-ms", "1"};
  i = 1;
  assert_int_equal(qins_monitor_cli_arg(&d, 3, argv4, &i), QINS_EINVAL);
  /* YAML monitor: keys */
  qins_monitor_cli y = {0};
  assert_int_equal(qins_monitor_cli_set(&y, "dashboard", "on"), 0);
  assert_true(y.enabled);
  assert_int_equal(qins_monitor_cli_set(&y, "dashboard", "off"), 0);
  assert_false(y.enabled);
  assert_int_equal(qins_monitor_cli_set(&y, "dashboard", "[::1]:9000"), 0);
  assert_true(y.enabled);
  assert_string_equal(y.addr, "[::1]:9000");
  assert_int_equal(qins_monitor_cli_set(&y, "dashboard", "somewhere"), QINS_EINPUT);
  assert_int_equal(qins_monitor_cli_set(&y, "colour", "red"), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "monitor.colour"));
  /* start from options: public without a token gets a generated one, printed in the URL */
  qins_monitor_cli p = {0};
  assert_int_equal(qins_monitor_cli_set(&p, "dashboard", "127.0.0.1:0"), 0);
  assert_int_equal(qins_monitor_cli_set(&p, "public", "true"), 0);
  qins_monitor *m;
  assert_int_equal(qins_monitor_cli_start(&p, NULL, &m), 0);
  assert_int_equal(strlen(p.token), 32);
  assert_non_null(strstr(qins_monitor_url(m), p.token));
  resp r = http_get(qins_monitor_port(m), "/api/state");
  assert_int_equal(r.status, 401);
  free(r.body);
  qins_monitor_stop(m);
  qins_monitor_cli none = {0};
  assert_int_equal(qins_monitor_cli_start(&none, NULL, &m), 0);
  assert_null(m);
}

/* The CLI's exit codes for bad dashboard usage (2) and its loopback refusal. */
static int run_qins(const char *args) {
  const char *bin = getenv("QINS_BIN");
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "'%s' %s >/dev/null 2>&1", bin, args);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli_exit_codes(void **state) {
  (void)state;
  if (!getenv("QINS_BIN")) skip();
  assert_int_equal(run_qins("monitor --help"), 0);
  assert_int_equal(run_qins("monitor"), 2);
  assert_int_equal(run_qins("monitor --bogus"), 2);
  assert_int_equal(run_qins("monitor --demo --connect tcp://127.0.0.1:1"), 2);
  assert_int_equal(run_qins("monitor --demo --dashboard=example.org:80"), 2);
  assert_int_equal(run_qins("monitor --demo --dashboard 0.0.0.0:0 --duration 1"), 2); /* not loopback */
  assert_int_equal(run_qins("monitor --demo --monitor-tick-ms 5"), 2);
  assert_int_equal(run_qins("monitor --demo --duration 0.3"), 0);
  assert_int_equal(run_qins("run --dashboard=nowhere x.yaml"), 2);
}


/* Worker memory panel: device bytes come from the "device.*" accounting owners (a Vulkan buffer
 * raises them by its size), engine bytes are the host part. */
static void test_worker_device_bytes(void **state) {
  (void)state;
  const char *lab = "worker=\"memtest\"";
  assert_int_equal(qins_monitor_sample_process("memtest", -1), 0);
  qins_metric *dev = qins_metric_gauge("qins_worker_device_bytes", "Device memory held by the worker.", lab);
  double before = qins_metric_value(dev);
  char names[8][64];
  int nb = test_backends(names, 8);
  for (int b = 0; b < nb; b++) {
    if (strncmp(names[b], "vk", 2) != 0) continue;
    qins_backend *be;
    assert_int_equal(qins_backend_create(names[b], &be), 0);
    qins_tensor t;
    int64_t shape[1] = {1 << 18}; /* 1 MiB of f32 */
    test_tensor_make(be, &t, "t", QINS_DT_F32, 1, shape, NULL);
    assert_int_equal(qins_monitor_sample_process("memtest", -1), 0);
    assert_true(qins_metric_value(dev) >= before + (1 << 20));
    qins_tensor_free(&t);
    assert_int_equal(qins_monitor_sample_process("memtest", -1), 0);
    assert_true(qins_metric_value(dev) <= before + (1 << 20) - 1);
    qins_backend_destroy(be);
    return;
  }
  /* no Vulkan device: a cpu-only worker holds no device memory */
  assert_true(before == 0.0);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addr_and_loopback_default),
      cmocka_unit_test(test_worker_device_bytes),
      cmocka_unit_test(test_static_and_state),
      cmocka_unit_test(test_prometheus),
      cmocka_unit_test(test_sse_events_advance),
      cmocka_unit_test(test_sse_resume),
      cmocka_unit_test(test_sse_many_clients),
      cmocka_unit_test(test_traversal),
      cmocka_unit_test(test_methods),
      cmocka_unit_test(test_host_header),
      cmocka_unit_test(test_token),
      cmocka_unit_test(test_providers_tick),
      cmocka_unit_test(test_zmq_attach),
      cmocka_unit_test(test_cli_flags),
      cmocka_unit_test(test_cli_exit_codes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
