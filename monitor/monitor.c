/* Dashboard HTTP server on libmicrohttpd: static page, SSE stream, /api/state and /metrics. */
#include "monitor/monitor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "monitor/assets.h"
#include <zmq.h>

/* One formatted SSE event ("id: N\nevent: state\ndata: {...}\n\n"), shared by every client
 * that sends it; freed when the ring and all clients are done with it. */
typedef struct event {
  uint64_t id;
  int refs;
  size_t len;
  char *text;
} event;

typedef struct client client;
struct client {
  qins_monitor *m;
  struct MHD_Connection *conn;
  uint64_t last_id; /* last event fully sent */
  event *cur;       /* event being sent, with offset */
  size_t off;
  char pre[96]; /* retry/heartbeat text being sent */
  size_t pre_len, pre_off;
  uint64_t hb_seen;
  int suspended; /* set (under m->mu) exactly when MHD_suspend_connection was called */
  client *prev, *next;
};

struct qins_monitor {
  struct MHD_Daemon *d;
  pthread_mutex_t pub_mu;  /* serialises publishers (tick thread, subscriber thread) */
  pthread_mutex_t tick_mu; /* held while providers run: set_providers waits for them */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* state: guarded by mu */
  uint64_t seq;
  double state_time;
  char *state_json; /* /api/state body */
  char *prom;       /* /metrics body from the coordinator */
  event **ring;
  int ring_cap;
  client *clients;
  int n_clients;
  uint64_t hb_gen;
  uint64_t requests;
  int stopping, wake;
  /* fan-out / ticker thread */
  pthread_t fan;
  int fan_started;
  qins_monitor_providers prov;
  int have_prov, run_prov;
  /* ZeroMQ subscriber (qins monitor --connect) */
  void *zctx;
  pthread_t sub;
  int sub_started;
  char *sub_endpoint;
  qins_monitor_pub *pub; /* opts.publish: used only by the ticking thread */
  /* options */
  char *token;
  char web_root[PATH_MAX];
  int use_web_root;
  int heartbeat_ms, retry_ms, tick_ms;
  int port;
  char url[512];
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void event_unref(event *e) {
  if (e && --e->refs == 0) {
    free(e->text);
    free(e);
  }
}

/* ---- address parsing ---- */

int qins_monitor_parse_addr(const char *addr, char *host, int host_cap, int *port, int *is_loopback) {
  const char *h = "127.0.0.1";
  size_t hlen = strlen(h);
  const char *p = NULL;
  if (addr == NULL || *addr == '\0') {
    p = "0";
  } else if (addr[0] == '[') {
    const char *rb = strchr(addr, ']');
    if (!rb || rb[1] != ':') return qins_error_set(QINS_EINVAL, "dashboard address '%s': expected [IPv6]:PORT", addr);
    h = addr + 1;
    hlen = (size_t)(rb - addr - 1);
    p = rb + 2;
  } else {
    const char *colon = strrchr(addr, ':');
    if (colon == NULL) {
      p = addr; /* "PORT" alone */
    } else {
      if (colon != addr) {
        h = addr;
        hlen = (size_t)(colon - addr);
      }
      p = colon + 1;
    }
  }
  if (hlen == 0 || (int)hlen >= host_cap) return qins_error_set(QINS_EINVAL, "dashboard address '%s': bad host", addr);
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  char *end;
  errno = 0;
  long v = strtol(p, &end, 10);
  if (*p == '\0' || *end != '\0' || errno || v < 0 || v > 65535)
    return qins_error_set(QINS_EINVAL, "dashboard address '%s': port must be 0..65535", addr ? addr : "");
  *port = (int)v;
  if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1) {
    *is_loopback = (ntohl(a4.s_addr) >> 24) == 127;
  } else if (inet_pton(AF_INET6, host, &a6) == 1) {
    *is_loopback = IN6_IS_ADDR_LOOPBACK(&a6);
  } else {
    return qins_error_set(QINS_EINVAL, "dashboard address '%s': host must be numeric IPv4/IPv6 or localhost", addr);
  }
  return 0;
}

/* ---- responses ---- */

static void add_common_headers(struct MHD_Response *r) {
  MHD_add_response_header(r, "Cache-Control", "no-store");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "X-Frame-Options", "DENY");
  MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
  MHD_add_response_header(r, "Content-Security-Policy",
                          "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                          "connect-src 'self'; frame-ancestors 'none'");
}

static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status, const char *mime, const void *data,
                                size_t len, enum MHD_ResponseMemoryMode mode, const char *extra_k,
                                const char *extra_v) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, mode);
  if (!r) return MHD_NO;
  add_common_headers(r);
  if (mime) MHD_add_response_header(r, "Content-Type", mime);
  if (extra_k) MHD_add_response_header(r, extra_k, extra_v);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *text) {
  return send_buf(c, status, "text/plain; charset=utf-8", text, strlen(text), MHD_RESPMEM_PERSISTENT, NULL, NULL);
}

/* Compare in time that depends only on the expected token's length. */
static int token_equal(const char *given, const char *want) {
  size_t lg = strlen(given), lw = strlen(want);
  unsigned char d = (unsigned char)(lg != lw);
  for (size_t i = 0; i < lw; i++) d |= (unsigned char)(want[i] ^ (i < lg ? given[i] : 0));
  return d == 0;
}

/* 1 when the request carries the token (query, bearer header or the page's cookie). */
static int authorized(qins_monitor *m, struct MHD_Connection *c, int *via_query) {
  *via_query = 0;
  if (!m->token) return 1;
  const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
  if (q && token_equal(q, m->token)) {
    *via_query = 1;
    return 1;
  }
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  if (h && strncasecmp(h, "Bearer ", 7) == 0) {
    h += 7;
    while (*h == ' ') h++;
    if (token_equal(h, m->token)) return 1;
  }
  const char *ck = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "qins_token");
  return ck && token_equal(ck, m->token);
}

static const char *mime_for(const char *path) {
  const char *dot = strrchr(path, '.');
  if (!dot) return "application/octet-stream";
  if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
  if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
  if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
  if (!strcmp(dot, ".svg")) return "image/svg+xml";
  if (!strcmp(dot, ".png")) return "image/png";
  if (!strcmp(dot, ".json")) return "application/json";
  return "application/octet-stream";
}

/* A served path is only letters, digits, '-', '_', '.', '/', with no empty, "." or ".."
 * segment and no segment starting with '.': nothing can name a parent, a hidden file or an
 * absolute path, whatever decoding the request went through. */
static int safe_rel_path(const char *rel) {
  if (*rel == '\0' || strlen(rel) > 200) return 0;
  const char *seg = rel;
  for (const char *p = rel;; p++) {
    if (*p == '/' || *p == '\0') {
      if (p == seg || *seg == '.') return 0;
      if (*p == '\0') return 1;
      seg = p + 1;
      continue;
    }
    char ch = *p;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
          ch == '_' || ch == '.'))
      return 0;
  }
}

static enum MHD_Result serve_static(qins_monitor *m, struct MHD_Connection *c, const char *url,
                                    int set_cookie) {
  const char *rel = (strcmp(url, "/") == 0) ? "index.html" : url + 1;
  char cookie[300];
  const char *ck = NULL, *cv = NULL;
  if (set_cookie && m->token && strlen(m->token) < 200) {
    snprintf(cookie, sizeof cookie, "qins_token=%s; Path=/; HttpOnly; SameSite=Strict", m->token);
    ck = "Set-Cookie";
    cv = cookie;
  }
  if (url[0] != '/' || !safe_rel_path(rel)) return send_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  if (!m->use_web_root) {
    for (int i = 0; i < qins_monitor_n_assets; i++) {
      const qins_monitor_asset *a = &qins_monitor_assets[i];
      if (strcmp(a->path + 1, rel) == 0)
        return send_buf(c, MHD_HTTP_OK, a->mime, a->data, a->len, MHD_RESPMEM_PERSISTENT, ck, cv);
    }
    return send_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  }
  char full[PATH_MAX + 256], real[PATH_MAX];
  snprintf(full, sizeof full, "%s/%s", m->web_root, rel);
  /* The resolved path must equal the joined one: no symlink anywhere below the root. */
  if (!realpath(full, real) || strcmp(real, full) != 0) return send_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  int fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0) return send_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (64 << 20)) {
    close(fd);
    return send_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  }
  size_t n = (size_t)st.st_size;
  char *buf = malloc(n + 1);
  size_t got = 0;
  while (buf && got < n) {
    ssize_t k = read(fd, buf + got, n - got);
    if (k <= 0) break;
    got += (size_t)k;
  }
  close(fd);
  if (!buf || got != n) {
    free(buf);
    return send_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "read error\n");
  }
  enum MHD_Result r = send_buf(c, MHD_HTTP_OK, mime_for(real), buf, n, MHD_RESPMEM_MUST_COPY, ck, cv);
  free(buf);
  return r;
}

/* ---- SSE ---- */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
  client *c = cls;
  qins_monitor *m = c->m;
  (void)pos;
  ssize_t n = 0;
  pthread_mutex_lock(&m->mu);
  if (m->stopping) {
    pthread_mutex_unlock(&m->mu);
    return MHD_CONTENT_READER_END_OF_STREAM;
  }
  if (c->pre_off < c->pre_len) {
    size_t k = c->pre_len - c->pre_off;
    if (k > max) k = max;
    memcpy(buf, c->pre + c->pre_off, k);
    c->pre_off += k;
    n = (ssize_t)k;
  } else {
    if (!c->cur && m->seq > c->last_id) {
      uint64_t next = c->last_id + 1;
      /* Each event is a whole state: a client that fell behind the ring skips to the newest. */
      uint64_t oldest = m->seq >= (uint64_t)m->ring_cap ? m->seq - (uint64_t)m->ring_cap + 1 : 1;
      if (next < oldest) next = m->seq;
      event *e = m->ring[next % (uint64_t)m->ring_cap];
      if (e && e->id == next) {
        e->refs++;
        c->cur = e;
        c->off = 0;
      } else {
        c->last_id = next; /* cannot happen; never loop on it */
      }
    }
    if (c->cur) {
      size_t k = c->cur->len - c->off;
      if (k > max) k = max;
      memcpy(buf, c->cur->text + c->off, k);
      c->off += k;
      n = (ssize_t)k;
      if (c->off == c->cur->len) {
        c->last_id = c->cur->id;
        event_unref(c->cur);
        c->cur = NULL;
      }
      c->hb_seen = m->hb_gen;
    } else if (c->hb_seen != m->hb_gen) {
      c->hb_seen = m->hb_gen;
      c->pre_len = (size_t)snprintf(c->pre, sizeof c->pre, ": heartbeat %llu\n\n", (unsigned long long)m->hb_gen);
      c->pre_off = 0;
      size_t k = c->pre_len < max ? c->pre_len : max;
      memcpy(buf, c->pre, k);
      c->pre_off = k;
      n = (ssize_t)k;
    } else {
      /* Nothing to send: park the connection until publish or heartbeat resumes it. */
      c->suspended = 1;
      MHD_suspend_connection(c->conn);
      n = 0;
    }
  }
  pthread_mutex_unlock(&m->mu);
  return n;
}

static void sse_free(void *cls) {
  client *c = cls;
  qins_monitor *m = c->m;
  pthread_mutex_lock(&m->mu);
  if (c->prev)
    c->prev->next = c->next;
  else
    m->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  m->n_clients--;
  event_unref(c->cur);
  pthread_mutex_unlock(&m->mu);
  free(c);
}

static enum MHD_Result serve_events(qins_monitor *m, struct MHD_Connection *conn, int is_head) {
  if (is_head) return send_buf(conn, MHD_HTTP_OK, "text/event-stream", "", 0, MHD_RESPMEM_PERSISTENT, NULL, NULL);
  client *c = calloc(1, sizeof *c);
  if (!c) return MHD_NO;
  c->m = m;
  c->conn = conn;
  const char *lei = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
  if (!lei) lei = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "lastEventId");
  pthread_mutex_lock(&m->mu);
  uint64_t last = m->seq > 0 ? m->seq - 1 : 0; /* a new client gets the current state first */
  if (lei && *lei) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(lei, &end, 10);
    /* An id from the future (a restarted server) is ignored: send the current state. */
    if (*end == '\0' && errno == 0 && v <= m->seq) last = v;
  }
  c->last_id = last;
  c->hb_seen = m->hb_gen;
  c->pre_len = (size_t)snprintf(c->pre, sizeof c->pre, "retry: %d\n: qins monitor\n\n", m->retry_ms);
  c->next = m->clients;
  if (m->clients) m->clients->prev = c;
  m->clients = c;
  m->n_clients++;
  pthread_mutex_unlock(&m->mu);
  struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, c, sse_free);
  if (!r) {
    sse_free(c);
    return MHD_NO;
  }
  add_common_headers(r);
  MHD_add_response_header(r, "Content-Type", "text/event-stream");
  MHD_add_response_header(r, "X-Accel-Buffering", "no");
  enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Percent-decoding for paths and arguments. An encoded NUL would silently cut the C string
 * ("/index.html%00.js" -> "/index.html"); it becomes DEL, which no served name contains. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
  (void)cls;
  (void)c;
  char *w = s;
  for (const char *r = s; *r; r++) {
    int hi, lo;
    if (r[0] == '%' && r[1] && r[2] && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0) {
      char ch = (char)(hi * 16 + lo);
      *w++ = ch ? ch : 0x7f;
      r += 2;
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
  return (size_t)(w - s);
}

/* Without a token the server is loopback-only; a page on another site could still reach it by
 * DNS rebinding (its own name resolving to 127.0.0.1), which shows as a foreign Host header. */
static int host_is_local(const char *host) {
  if (!host) return 1; /* HTTP/1.0 clients send none */
  char h[256];
  size_t n = strlen(host);
  if (n == 0 || n >= sizeof h) return 0;
  memcpy(h, host, n + 1);
  if (h[0] == '[') {
    char *rb = strchr(h, ']');
    if (!rb) return 0;
    *rb = '\0';
    return strcmp(h + 1, "::1") == 0;
  }
  char *colon = strchr(h, ':');
  if (colon) *colon = '\0';
  if (strcasecmp(h, "localhost") == 0) return 1;
  struct in_addr a;
  return inet_pton(AF_INET, h, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* ---- request dispatch ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **req_cls) {
  qins_monitor *m = cls;
  (void)version;
  (void)upload_data;
  if (*req_cls == NULL) {
    *req_cls = (void *)1;
    pthread_mutex_lock(&m->mu);
    m->requests++;
    pthread_mutex_unlock(&m->mu);
  }
  /* HEAD: same responses as GET; libmicrohttpd sends the headers (Content-Length included) only. */
  int is_head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  if (!is_head && strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
    *upload_size = 0; /* read-only server: discard any body */
    return send_buf(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "method not allowed\n", 19,
                    MHD_RESPMEM_PERSISTENT, "Allow", "GET, HEAD");
  }
  if (!m->token && !host_is_local(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST)))
    return send_text(conn, MHD_HTTP_FORBIDDEN, "this dashboard answers only to localhost names\n");
  int via_query;
  if (!authorized(m, conn, &via_query))
    return send_buf(conn, MHD_HTTP_UNAUTHORIZED, "text/plain; charset=utf-8", "access token required\n", 22,
                    MHD_RESPMEM_PERSISTENT, "WWW-Authenticate", "Bearer realm=\"qins\"");
  if (strcmp(url, "/events") == 0) return serve_events(m, conn, is_head);
  if (strcmp(url, "/api/state") == 0) {
    pthread_mutex_lock(&m->mu);
    char *body = strdup(m->state_json);
    pthread_mutex_unlock(&m->mu);
    if (!body) return MHD_NO;
    enum MHD_Result r = send_buf(conn, MHD_HTTP_OK, "application/json", body, strlen(body),
                                 MHD_RESPMEM_MUST_COPY, NULL, NULL);
    free(body);
    return r;
  }
  if (strcmp(url, "/metrics") == 0) {
    pthread_mutex_lock(&m->mu);
    size_t plen = m->prom ? strlen(m->prom) : 0;
    size_t cap = plen + 512;
    char *body = malloc(cap);
    if (body) {
      memcpy(body, m->prom ? m->prom : "", plen);
      /* The monitor's own numbers, so a scraper can see clients and snapshot progress. */
      snprintf(body + plen, cap - plen,
               "# HELP qins_monitor_sse_clients Open dashboard event streams.\n"
               "# TYPE qins_monitor_sse_clients gauge\nqins_monitor_sse_clients %d\n"
               "# HELP qins_monitor_snapshots_total Snapshots published to the monitor.\n"
               "# TYPE qins_monitor_snapshots_total counter\nqins_monitor_snapshots_total %llu\n",
               m->n_clients, (unsigned long long)m->seq);
    }
    pthread_mutex_unlock(&m->mu);
    if (!body) return MHD_NO;
    enum MHD_Result r = send_buf(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body,
                                 strlen(body), MHD_RESPMEM_MUST_COPY, NULL, NULL);
    free(body);
    return r;
  }
  return serve_static(m, conn, url, via_query);
}

/* ---- publish ---- */

static int load_doc(const char *what, const char *text, json_t **out) {
  *out = NULL;
  if (!text) return 0;
  json_error_t err;
  *out = json_loads(text, JSON_DECODE_ANY, &err);
  if (!*out) return qins_error_set(QINS_EINPUT, "monitor snapshot: %s is not JSON (line %d: %s)", what, err.line, err.text);
  return 0;
}

static char *build_state(uint64_t seq, double t, json_t *metrics, json_t *graph, json_t *gates, json_t *training) {
  json_t *o = json_object();
  json_object_set_new(o, "seq", json_integer((json_int_t)seq));
  json_object_set_new(o, "time", json_real(t));
  json_object_set(o, "graph", graph ? graph : json_null());
  json_object_set(o, "metrics", metrics ? metrics : json_null());
  json_object_set(o, "gates", gates ? gates : json_null());
  json_object_set(o, "training", training ? training : json_null());
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

int qins_monitor_publish(qins_monitor *m, const qins_monitor_snapshot *snap) {
  if (!m || !snap) return qins_error_set(QINS_EINVAL, "qins_monitor_publish: NULL argument");
  json_t *docs[4] = {0};
  int rc = load_doc("metrics", snap->metrics, &docs[0]);
  if (!rc) rc = load_doc("graph", snap->graph, &docs[1]);
  if (!rc) rc = load_doc("gates", snap->gates, &docs[2]);
  if (!rc) rc = load_doc("training", snap->training, &docs[3]);
  char *prom = (!rc && snap->prometheus) ? strdup(snap->prometheus) : NULL;
  event *e = NULL;
  char *state = NULL;
  if (!rc) {
    /* Formatting happens outside mu, so SSE clients never wait on it; pub_mu keeps seq
     * consistent when two publishers (tick and subscriber) run. */
    pthread_mutex_lock(&m->pub_mu);
    pthread_mutex_lock(&m->mu);
    uint64_t seq = m->seq + 1;
    pthread_mutex_unlock(&m->mu);
    double t = now_s();
    state = build_state(seq, t, docs[0], docs[1], docs[2], docs[3]);
    e = calloc(1, sizeof *e);
    if (state && e) {
      size_t sl = strlen(state);
      e->text = malloc(sl + 64);
      if (e->text) {
        e->len = (size_t)sprintf(e->text, "id: %llu\nevent: state\ndata: %s\n\n", (unsigned long long)seq, state);
        e->id = seq;
        e->refs = 1;
      }
    }
    if (!state || !e || !e->text) {
      rc = qins_error_set(QINS_ENOMEM, "monitor snapshot: out of memory");
    } else {
      pthread_mutex_lock(&m->mu);
      m->seq = seq;
      m->state_time = t;
      free(m->state_json);
      m->state_json = state;
      state = NULL;
      if (snap->prometheus || !m->prom) {
        free(m->prom);
        m->prom = prom ? prom : strdup("");
        prom = NULL;
      }
      event **slot = &m->ring[seq % (uint64_t)m->ring_cap];
      event_unref(*slot);
      *slot = e;
      e = NULL;
      m->wake = 1;
      pthread_cond_signal(&m->cv);
      pthread_mutex_unlock(&m->mu);
    }
    pthread_mutex_unlock(&m->pub_mu);
  }
  if (e) {
    free(e->text);
    free(e);
  }
  free(state);
  free(prom);
  for (int i = 0; i < 4; i++) json_decref(docs[i]);
  return rc;
}

uint64_t qins_monitor_seq(const qins_monitor *m) {
  qins_monitor *mm = (qins_monitor *)m;
  pthread_mutex_lock(&mm->mu);
  uint64_t s = mm->seq;
  pthread_mutex_unlock(&mm->mu);
  return s;
}

/* ---- providers ---- */

int qins_monitor_snapshot_collect(const qins_monitor_providers *p, qins_monitor_snapshot *out) {
  static const qins_monitor_providers none = {0};
  if (!p) p = &none;
  memset(out, 0, sizeof *out);
  out->metrics = p->metrics_json ? p->metrics_json(p->ctx) : qins_metrics_json();
  out->prometheus = p->prometheus ? p->prometheus(p->ctx) : qins_metrics_prometheus();
  out->graph = p->graph_json ? p->graph_json(p->ctx) : NULL;
  out->gates = p->gates_json ? p->gates_json(p->ctx) : NULL;
  out->training = p->training_json ? p->training_json(p->ctx) : NULL;
  return 0;
}

void qins_monitor_snapshot_free(qins_monitor_snapshot *s) {
  free((char *)s->metrics);
  free((char *)s->prometheus);
  free((char *)s->graph);
  free((char *)s->gates);
  free((char *)s->training);
  memset(s, 0, sizeof *s);
}

int qins_monitor_set_providers(qins_monitor *m, const qins_monitor_providers *p) {
  if (!m || !p) return qins_error_set(QINS_EINVAL, "qins_monitor_set_providers: NULL argument");
  /* Waits for a tick in progress: once this returns the old providers are never called again,
   * so the coordinator may free what they read. */
  pthread_mutex_lock(&m->tick_mu);
  pthread_mutex_lock(&m->mu);
  m->prov = *p;
  m->have_prov = 1;
  pthread_mutex_unlock(&m->mu);
  pthread_mutex_unlock(&m->tick_mu);
  return 0;
}

int qins_monitor_tick(qins_monitor *m) {
  pthread_mutex_lock(&m->tick_mu);
  pthread_mutex_lock(&m->mu);
  qins_monitor_providers p = m->prov;
  int have = m->have_prov;
  pthread_mutex_unlock(&m->mu);
  qins_monitor_snapshot s;
  qins_monitor_snapshot_collect(have ? &p : NULL, &s);
  pthread_mutex_unlock(&m->tick_mu);
  int rc = qins_monitor_publish(m, &s);
  if (m->pub) {
    pthread_mutex_lock(&m->pub_mu); /* one sender at a time on the PUB socket */
    int prc = qins_monitor_pub_send(m->pub, &s);
    pthread_mutex_unlock(&m->pub_mu);
    if (!rc) rc = prc;
  }
  qins_monitor_snapshot_free(&s);
  return rc;
}

int qins_monitor_run_providers(qins_monitor *m) {
  pthread_mutex_lock(&m->mu);
  m->run_prov = 1;
  m->wake = 1;
  pthread_cond_signal(&m->cv);
  pthread_mutex_unlock(&m->mu);
  return 0;
}

/* ---- fan-out thread: resumes parked SSE connections on publish and heartbeat; ticks ---- */

static void add_ms(struct timespec *ts, int ms) {
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static int ts_before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void resume_all_locked(qins_monitor *m, struct MHD_Connection ***list, int *n, int *cap) {
  *n = 0;
  for (client *c = m->clients; c; c = c->next) {
    if (!c->suspended) continue;
    if (*n == *cap) {
      int nc = *cap ? *cap * 2 : 64;
      struct MHD_Connection **nl = realloc(*list, (size_t)nc * sizeof **list);
      if (!nl) break;
      *list = nl;
      *cap = nc;
    }
    c->suspended = 0;
    (*list)[(*n)++] = c->conn;
  }
}

static void *fan_main(void *arg) {
  qins_monitor *m = arg;
  struct MHD_Connection **list = NULL;
  int n = 0, cap = 0;
  struct timespec next_hb, next_tick, now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  next_hb = next_tick = now;
  add_ms(&next_hb, m->heartbeat_ms);
  pthread_mutex_lock(&m->mu);
  while (!m->stopping) {
    struct timespec deadline = next_hb;
    if (m->run_prov && ts_before(&next_tick, &deadline)) deadline = next_tick;
    while (!m->wake && !m->stopping) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (!ts_before(&now, &deadline)) break;
      pthread_cond_timedwait(&m->cv, &m->mu, &deadline);
    }
    if (m->stopping) break;
    m->wake = 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!ts_before(&now, &next_hb)) {
      m->hb_gen++;
      next_hb = now;
      add_ms(&next_hb, m->heartbeat_ms);
    }
    int do_tick = m->run_prov && !ts_before(&now, &next_tick);
    if (do_tick) {
      next_tick = now;
      add_ms(&next_tick, m->tick_ms);
    }
    resume_all_locked(m, &list, &n, &cap);
    pthread_mutex_unlock(&m->mu);
    /* Outside our lock: a parked connection stays valid until we resume it. */
    for (int i = 0; i < n; i++) MHD_resume_connection(list[i]);
    if (do_tick && qins_monitor_tick(m) != 0) QINS_WARN("monitor: %s", qins_error_msg());
    pthread_mutex_lock(&m->mu);
  }
  pthread_mutex_unlock(&m->mu);
  free(list);
  return NULL;
}

/* ---- ZeroMQ snapshot transport ---- */

#define SNAP_TOPIC "qins.snapshot"
#define SNAP_PARTS 5 /* metrics, prometheus, graph, gates, training; empty frame = absent */

struct qins_monitor_pub {
  void *ctx, *sock;
};

int qins_monitor_pub_open(const char *endpoint, qins_monitor_pub **out) {
  *out = NULL;
  qins_monitor_pub *p = calloc(1, sizeof *p);
  if (!p) return qins_error_set(QINS_ENOMEM, "monitor pub: out of memory");
  p->ctx = zmq_ctx_new();
  p->sock = p->ctx ? zmq_socket(p->ctx, ZMQ_PUB) : NULL;
  int hwm = 8, linger = 0;
  if (!p->sock || zmq_setsockopt(p->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 || zmq_bind(p->sock, endpoint) != 0) {
    int rc = qins_error_set(QINS_EIPC, "monitor pub: cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
    qins_monitor_pub_close(p);
    return rc;
  }
  *out = p;
  return 0;
}

int qins_monitor_pub_send(qins_monitor_pub *p, const qins_monitor_snapshot *s) {
  const char *parts[SNAP_PARTS] = {s->metrics, s->prometheus, s->graph, s->gates, s->training};
  /* PUB never blocks: with no subscriber or a full queue the snapshot is dropped, which is
   * right for a live view (the next one carries the whole state). */
  if (zmq_send(p->sock, SNAP_TOPIC, strlen(SNAP_TOPIC), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return 0;
  for (int i = 0; i < SNAP_PARTS; i++) {
    const char *t = parts[i] ? parts[i] : "";
    if (zmq_send(p->sock, t, strlen(t), (i + 1 < SNAP_PARTS ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
      return qins_error_set(QINS_EIPC, "monitor pub: send: %s", zmq_strerror(zmq_errno()));
  }
  return 0;
}

void qins_monitor_pub_close(qins_monitor_pub *p) {
  if (!p) return;
  if (p->sock) zmq_close(p->sock);
  if (p->ctx) zmq_ctx_term(p->ctx);
  free(p);
}

static void *sub_main(void *arg) {
  qins_monitor *m = arg;
  void *sock = zmq_socket(m->zctx, ZMQ_SUB);
  int linger = 0, hwm = 8;
  zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(sock, ZMQ_SUBSCRIBE, SNAP_TOPIC, strlen(SNAP_TOPIC));
  if (zmq_connect(sock, m->sub_endpoint) != 0) {
    QINS_ERROR("monitor: cannot connect to %s: %s", m->sub_endpoint, zmq_strerror(zmq_errno()));
    zmq_close(sock);
    return NULL;
  }
  for (;;) {
    pthread_mutex_lock(&m->mu);
    int stop = m->stopping;
    pthread_mutex_unlock(&m->mu);
    if (stop) break;
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 200) <= 0) continue;
    /* Read one multipart message; malformed ones are dropped whole. */
    char *parts[SNAP_PARTS + 1] = {0};
    int np = 0, more = 1, bad = 0;
    while (more) {
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      if (zmq_msg_recv(&msg, sock, 0) < 0) {
        zmq_msg_close(&msg);
        bad = 1;
        break;
      }
      if (np < SNAP_PARTS + 1) {
        size_t len = zmq_msg_size(&msg);
        parts[np] = malloc(len + 1);
        if (parts[np]) {
          memcpy(parts[np], zmq_msg_data(&msg), len);
          parts[np][len] = '\0';
        } else {
          bad = 1;
        }
      } else {
        bad = 1;
      }
      np++;
      more = zmq_msg_more(&msg);
      zmq_msg_close(&msg);
    }
    if (!bad && np == SNAP_PARTS + 1) {
      const char *v[SNAP_PARTS];
      for (int i = 0; i < SNAP_PARTS; i++) v[i] = parts[i + 1][0] ? parts[i + 1] : NULL;
      qins_monitor_snapshot s = {v[0], v[1], v[2], v[3], v[4]};
      if (qins_monitor_publish(m, &s) != 0) QINS_WARN("monitor: dropped snapshot: %s", qins_error_msg());
    }
    for (int i = 0; i < SNAP_PARTS + 1; i++) free(parts[i]);
  }
  zmq_close(sock);
  return NULL;
}

int qins_monitor_attach(qins_monitor *m, const char *endpoint) {
  if (!m || !endpoint) return qins_error_set(QINS_EINVAL, "qins_monitor_attach: NULL argument");
  if (m->sub_started) return qins_error_set(QINS_EINVAL, "monitor: already attached to %s", m->sub_endpoint);
  m->zctx = zmq_ctx_new();
  m->sub_endpoint = strdup(endpoint);
  if (!m->zctx || !m->sub_endpoint) return qins_error_set(QINS_ENOMEM, "monitor attach: out of memory");
  if (pthread_create(&m->sub, NULL, sub_main, m) != 0) return qins_error_set(QINS_EINTERNAL, "monitor: cannot start subscriber thread");
  m->sub_started = 1;
  return 0;
}

/* ---- start / stop ---- */

int qins_monitor_start(const char *addr, const qins_monitor_opts *opts, qins_monitor **out) {
  static const qins_monitor_opts defaults = {0};
  if (!out) return qins_error_set(QINS_EINVAL, "qins_monitor_start: NULL out");
  *out = NULL;
  if (!opts) opts = &defaults;
  char host[128];
  int port, loop;
  int rc = qins_monitor_parse_addr(addr, host, sizeof host, &port, &loop);
  if (rc) return rc;
  if (!loop && !opts->allow_public)
    return qins_error_set(QINS_EINVAL,
                          "dashboard address %s is not loopback: pass --dashboard-public (with a token) to expose it",
                          host);
  if (!loop && (!opts->token || strlen(opts->token) < 16))
    return qins_error_set(QINS_EINVAL, "dashboard on non-loopback %s needs an access token of at least 16 characters", host);
  if (opts->token && (strlen(opts->token) > 200 || strpbrk(opts->token, " ;,\"\\\r\n&#%+?=")))
    return qins_error_set(QINS_EINVAL, "dashboard token: at most 200 characters, no spaces, quotes or ;,&#%%+?=");

  qins_monitor *m = calloc(1, sizeof *m);
  if (!m) return qins_error_set(QINS_ENOMEM, "monitor: out of memory");
  pthread_mutex_init(&m->mu, NULL);
  pthread_mutex_init(&m->pub_mu, NULL);
  pthread_mutex_init(&m->tick_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&m->cv, &ca);
  pthread_condattr_destroy(&ca);
  m->heartbeat_ms = opts->heartbeat_ms > 0 ? opts->heartbeat_ms : 15000;
  m->retry_ms = opts->retry_ms > 0 ? opts->retry_ms : 2000;
  m->tick_ms = opts->tick_ms > 0 ? opts->tick_ms : 1000;
  m->ring_cap = opts->history > 0 ? opts->history : 64;
  m->ring = calloc((size_t)m->ring_cap, sizeof *m->ring);
  m->token = opts->token && *opts->token ? strdup(opts->token) : NULL;
  m->state_time = now_s();
  m->state_json = build_state(0, m->state_time, NULL, NULL, NULL, NULL);
  m->prom = strdup("");
  if (!m->ring || !m->state_json || !m->prom || (opts->token && *opts->token && !m->token)) {
    qins_monitor_stop(m);
    return qins_error_set(QINS_ENOMEM, "monitor: out of memory");
  }
  if (opts->web_dir) {
    if (!realpath(opts->web_dir, m->web_root)) {
      rc = qins_error_set(QINS_EINPUT, "dashboard web folder %s: %s", opts->web_dir, strerror(errno));
      qins_monitor_stop(m);
      return rc;
    }
    m->use_web_root = 1;
  }

  if (opts->publish && (rc = qins_monitor_pub_open(opts->publish, &m->pub)) != 0) {
    qins_monitor_stop(m);
    return rc;
  }
  if (opts->no_http) goto threads;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
  if (strchr(host, ':')) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, host, &a->sin6_addr);
    flags |= MHD_USE_IPv6;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a->sin_addr);
  }
  m->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR,
                          (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)512,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                          MHD_OPTION_END);
  if (!m->d) {
    rc = qins_error_set(QINS_EIO, "dashboard: cannot listen on %s:%d (address in use or not local?)", host, port);
    qins_monitor_stop(m);
    return rc;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
  m->port = info ? info->port : port;
  int v6 = strchr(host, ':') != NULL;
  snprintf(m->url, sizeof m->url, "http://%s%s%s:%d/%s%s", v6 ? "[" : "", host, v6 ? "]" : "", m->port,
           m->token ? "?token=" : "", m->token ? m->token : "");
threads:
  if (pthread_create(&m->fan, NULL, fan_main, m) != 0) {
    rc = qins_error_set(QINS_EINTERNAL, "monitor: cannot start fan-out thread");
    qins_monitor_stop(m);
    return rc;
  }
  m->fan_started = 1;
  *out = m;
  return 0;
}

int qins_monitor_port(const qins_monitor *m) { return m->port; }
const char *qins_monitor_url(const qins_monitor *m) { return m->url; }

void qins_monitor_stop(qins_monitor *m) {
  if (!m) return;
  pthread_mutex_lock(&m->mu);
  m->stopping = 1;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
  if (m->fan_started) pthread_join(m->fan, NULL);
  if (m->sub_started) pthread_join(m->sub, NULL);
  if (m->zctx) zmq_ctx_term(m->zctx);
  if (m->d) {
    /* MHD must not be stopped with parked connections: wake them; with `stopping` set their
     * reader ends the stream instead of parking again. */
    struct MHD_Connection **list = NULL;
    int n = 0, cap = 0;
    pthread_mutex_lock(&m->mu);
    resume_all_locked(m, &list, &n, &cap);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < n; i++) MHD_resume_connection(list[i]);
    free(list);
    MHD_stop_daemon(m->d);
  }
  qins_monitor_pub_close(m->pub);
  for (int i = 0; m->ring && i < m->ring_cap; i++) event_unref(m->ring[i]);
  free(m->ring);
  free(m->state_json);
  free(m->prom);
  free(m->token);
  free(m->sub_endpoint);
  pthread_cond_destroy(&m->cv);
  pthread_mutex_destroy(&m->mu);
  pthread_mutex_destroy(&m->pub_mu);
  pthread_mutex_destroy(&m->tick_mu);
  free(m);
}
