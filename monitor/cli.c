/* Dashboard flags and YAML keys, shared by `qins run` and `qins monitor`, and starting the monitor from them. */
#include "monitor/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/error.h"

static int copy_opt(char *dst, size_t cap, const char *what, const char *v) {
  if (!v || strlen(v) >= cap) return qins_error_set(QINS_EINVAL, "%s: value missing or longer than %zu", what, cap - 1);
  strcpy(dst, v);
  return 0;
}

/* A flag was consumed (1) unless its value was bad (negative). */
static int consumed(int rc) { return rc ? rc : 1; }

static int looks_like_addr(const char *s) {
  char host[128];
  int port, loop;
  int rc = qins_monitor_parse_addr(s, host, sizeof host, &port, &loop);
  qins_error_clear();
  return rc == 0;
}

static int parse_tick(qins_monitor_cli *c, const char *v) {
  char *end;
  long t = v ? strtol(v, &end, 10) : 0;
  if (!v || *end || t < 10 || t > 60000) return qins_error_set(QINS_EINVAL, "monitor tick_ms '%s': expected 10..60000", v ? v : "");
  c->tick_ms = (int)t;
  return 0;
}

int qins_monitor_cli_arg(qins_monitor_cli *c, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
  if (strcmp(a, "--dashboard") == 0) {
    c->enabled = 1;
    if (next && next[0] != '-' && looks_like_addr(next)) {
      (*i)++;
      return consumed(copy_opt(c->addr, sizeof c->addr, "--dashboard", next));
    }
    return 1;
  }
  if (strncmp(a, "--dashboard=", 12) == 0) {
    c->enabled = 1;
    if (!looks_like_addr(a + 12))
      return qins_error_set(QINS_EINVAL, "--dashboard: '%s' is not HOST:PORT (numeric host or localhost)", a + 12);
    return consumed(copy_opt(c->addr, sizeof c->addr, "--dashboard", a + 12));
  }
  if (strcmp(a, "--dashboard-public") == 0) {
    c->allow_public = 1;
    return 1;
  }
  struct {
    const char *flag;
    char *dst;
    size_t cap;
  } vals[] = {{"--dashboard-token", c->token, sizeof c->token},
              {"--dashboard-web", c->web_dir, sizeof c->web_dir},
              {"--monitor-publish", c->publish, sizeof c->publish}};
  for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++)
    if (strcmp(a, vals[k].flag) == 0) {
      if (!next) return qins_error_set(QINS_EINVAL, "%s needs a value", a);
      (*i)++;
      return consumed(copy_opt(vals[k].dst, vals[k].cap, a, next));
    }
  if (strcmp(a, "--monitor-tick-ms") == 0) {
    if (!next) return qins_error_set(QINS_EINVAL, "%s needs a value", a);
    (*i)++;
    return consumed(parse_tick(c, next));
  }
  return 0;
}

static int parse_bool(const char *v, int *out) {
  if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1")) return *out = 1, 0;
  if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0")) return *out = 0, 0;
  return -1;
}

int qins_monitor_cli_set(qins_monitor_cli *c, const char *key, const char *value) {
  if (!key || !value) return qins_error_set(QINS_EINVAL, "monitor: NULL key or value");
  int b;
  if (!strcmp(key, "dashboard")) {
    if (parse_bool(value, &b) == 0) {
      c->enabled = b;
      return 0;
    }
    if (!looks_like_addr(value))
      return qins_error_set(QINS_EINPUT, "monitor.dashboard: '%s' is neither true/false nor HOST:PORT", value);
    c->enabled = 1;
    return copy_opt(c->addr, sizeof c->addr, "monitor.dashboard", value) ? QINS_EINPUT : 0;
  }
  if (!strcmp(key, "public")) {
    if (parse_bool(value, &c->allow_public) != 0)
      return qins_error_set(QINS_EINPUT, "monitor.public: '%s' is not a boolean", value);
    return 0;
  }
  if (!strcmp(key, "token")) return copy_opt(c->token, sizeof c->token, "monitor.token", value) ? QINS_EINPUT : 0;
  if (!strcmp(key, "web")) return copy_opt(c->web_dir, sizeof c->web_dir, "monitor.web", value) ? QINS_EINPUT : 0;
  if (!strcmp(key, "publish")) return copy_opt(c->publish, sizeof c->publish, "monitor.publish", value) ? QINS_EINPUT : 0;
  if (!strcmp(key, "tick_ms")) return parse_tick(c, value) ? QINS_EINPUT : 0;
  return qins_error_set(QINS_EINPUT, "monitor.%s: unknown key (known: dashboard, public, token, publish, tick_ms, web)", key);
}

const char *qins_monitor_cli_help(void) {
  return "dashboard:\n"
         "  --dashboard [ADDR:PORT]   serve the live dashboard (default 127.0.0.1:0 = a free port; the URL is printed)\n"
         "  --dashboard-public        allow a non-loopback ADDR (then an access token is required)\n"
         "  --dashboard-token TOKEN   access token (>= 16 chars); generated and printed in the URL when public\n"
         "  --dashboard-web DIR       serve the page from DIR instead of the copy built into qins\n"
         "  --monitor-publish EP      publish snapshots on a ZeroMQ PUB socket (e.g. tcp://127.0.0.1:5600)\n"
         "                            for `qins monitor --connect EP` in another process\n"
         "  --monitor-tick-ms N       snapshot period in milliseconds (default 1000)\n";
}

int qins_monitor_cli_start(qins_monitor_cli *c, const qins_monitor_providers *p, qins_monitor **out) {
  *out = NULL;
  if (!c->enabled && !c->publish[0]) return 0;
  if (c->allow_public && !c->token[0]) {
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
      return qins_error_set(QINS_EIO, "dashboard: cannot draw a random token");
    for (size_t k = 0; k < sizeof raw; k++) sprintf(c->token + 2 * k, "%02x", raw[k]);
  }
  qins_monitor_opts o = {.allow_public = c->allow_public,
                         .token = c->token[0] ? c->token : NULL,
                         .web_dir = c->web_dir[0] ? c->web_dir : NULL,
                         .tick_ms = c->tick_ms,
                         .publish = c->publish[0] ? c->publish : NULL,
                         .no_http = !c->enabled};
  qins_monitor *m;
  int rc = qins_monitor_start(c->addr[0] ? c->addr : NULL, &o, &m);
  if (rc) return rc;
  if (p) qins_monitor_set_providers(m, p);
  qins_monitor_run_providers(m);
  if (c->enabled) printf("dashboard: %s\n", qins_monitor_url(m));
  if (c->publish[0]) printf("monitor snapshots: %s (attach with: qins monitor --connect %s)\n", c->publish, c->publish);
  fflush(stdout);
  *out = m;
  return 0;
}
