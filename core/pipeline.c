/* Pipeline YAML -> validated qins_pipeline: keys, types, stage options, placement, edges, cycles,
 * port dtypes/shapes. Nothing starts until all of this holds. */
#include "core/pipeline.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/stage.h"

#define W(node) qins_cfg_where((node), wbuf, sizeof wbuf)

static const char *const top_keys[] = {"name", "model", "tokenizer", "backend", "workers", "stages", "edges", "inputs",
                                       "outputs", "restart", "monitor", "heartbeat_ms", "channels", "max_seq",
                                       "policy", NULL}; /* policy: QINS coverage, core/llm/policy.h */
static const char *const worker_keys[] = {"name", "host", "replicas", "stages", NULL};
static const char *const stage_keys[] = {"name", "type", "options", NULL};
static const char *const edge_keys[] = {"from", "to", "loop", NULL};
static const char *const input_keys[] = {"prompts", "file", NULL};
static const char *const output_keys[] = {"jsonl", NULL};
static const char *const restart_keys[] = {"policy", "max_attempts", NULL};
static const char *const channel_keys[] = {"slots", "slot_bytes", "max_inflight", NULL};

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

void qins_pipeline_free(qins_pipeline *pl) {
  if (!pl) return;
  for (int i = 0; i < pl->n_workers; i++) free(pl->workers[i].stages);
  free(pl->workers);
  free(pl->stages);
  free(pl->edges);
  for (int i = 0; i < pl->n_prompts; i++) free(pl->prompts[i]);
  free(pl->prompts);
  free(pl->model);
  free(pl->tokenizer);
  free(pl->backend);
  free(pl->input_file);
  free(pl->output_jsonl);
  free(pl->monitor);
  qins_cfg_free(pl->root);
  free(pl->yaml_text);
  for (int i = 0; i < pl->n_sets; i++) free(pl->sets[i]);
  free(pl->sets);
  free(pl);
}

int qins_pipeline_stage_index(const qins_pipeline *pl, const char *name) {
  for (int i = 0; i < pl->n_stages; i++)
    if (strcmp(pl->stages[i].name, name) == 0) return i;
  return -1;
}

/* A scalar string value at key (optional). */
static int opt_string(const qins_cfg *map, const char *key, const char *what, char **out) {
  const qins_cfg *c = qins_cfg_get(map, key);
  if (!c) return 0;
  const char *s;
  char path[256];
  snprintf(path, sizeof path, "%s%s%s", what, *what ? "." : "", key);
  int rc = qins_cfg_as_string(c, path, &s);
  if (rc) return rc;
  free(*out);
  *out = strdup(s);
  return *out ? 0 : qins_error_set(QINS_ENOMEM, "out of memory");
}

static int want_type(const qins_cfg *c, qins_cfg_type t, const char *what) {
  char wbuf[256];
  if (c->type != t)
    return qins_error_set(QINS_EINPUT, "%s: %s: expected %s, got %s", W(c), what, qins_cfg_type_name(t),
                          qins_cfg_type_name(c->type));
  return 0;
}

static int valid_name(const char *s) {
  if (!*s || strlen(s) >= QINS_PL_NAME) return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return 0;
  return 1;
}

/* ---- ports ---- */

typedef struct port {
  char dtype[16];
  int ndim;
  char dims[QINS_MAX_DIMS][32];
  int any;
} port;

static int port_parse(const char *s, port *p) {
  memset(p, 0, sizeof *p);
  if (strcmp(s, "*") == 0) {
    p->any = 1;
    return 0;
  }
  const char *lb = strchr(s, '[');
  if (!lb || lb - s >= (long)sizeof p->dtype) return -1;
  memcpy(p->dtype, s, (size_t)(lb - s));
  const char *q = lb + 1;
  while (*q && *q != ']') {
    if (p->ndim == QINS_MAX_DIMS) return -1;
    size_t k = 0;
    while (*q && *q != ',' && *q != ']' && k + 1 < sizeof p->dims[0]) p->dims[p->ndim][k++] = *q++;
    p->dims[p->ndim++][k] = 0;
    if (*q == ',') q++;
  }
  return *q == ']' ? 0 : -1;
}

static int is_int(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s)) return 0;
  return 1;
}

int qins_port_compatible(const char *out, const char *in, char *why, size_t n) {
  port a, b;
  if (port_parse(out, &a) || port_parse(in, &b)) {
    snprintf(why, n, "malformed port '%s' or '%s'", out, in);
    return 0;
  }
  if (a.any || b.any) return 1;
  if (strcmp(a.dtype, b.dtype) != 0) {
    snprintf(why, n, "dtype %s does not match %s", a.dtype, b.dtype);
    return 0;
  }
  if (a.ndim != b.ndim) {
    snprintf(why, n, "rank %d does not match %d", a.ndim, b.ndim);
    return 0;
  }
  for (int i = 0; i < a.ndim; i++) {
    const char *x = a.dims[i], *y = b.dims[i];
    if (strcmp(x, "*") == 0 || strcmp(y, "*") == 0 || strcmp(x, y) == 0) continue;
    if (is_int(x) && is_int(y)) {
      snprintf(why, n, "dimension %d: %s != %s", i, x, y);
      return 0;
    }
    if (!is_int(x) && !is_int(y)) {
      snprintf(why, n, "dimension %d: symbol %s is not %s", i, x, y);
      return 0;
    }
    /* a symbol against a number: accepted here, the symbol table check in validate binds it */
  }
  return 1;
}

/* Symbols bound to numbers across the whole pipeline (dim=8 on one edge must be 8 everywhere). */
typedef struct symtab {
  int n;
  char name[64][32];
  char val[64][32];
} symtab;

static int bind_symbols(symtab *st, const char *out, const char *in, char *why, size_t n) {
  port a, b;
  if (port_parse(out, &a) || port_parse(in, &b) || a.any || b.any) return 1;
  for (int i = 0; i < a.ndim && i < b.ndim; i++) {
    const char *x = a.dims[i], *y = b.dims[i];
    const char *sym = NULL, *num = NULL;
    if (is_int(x) && !is_int(y)) sym = y, num = x;
    if (!is_int(x) && is_int(y)) sym = x, num = y;
    if (!sym || strcmp(sym, "*") == 0) continue;
    int k;
    for (k = 0; k < st->n; k++)
      if (strcmp(st->name[k], sym) == 0) break;
    if (k < st->n) {
      if (strcmp(st->val[k], num) != 0) {
        snprintf(why, n, "symbol %s is %s here but %s on another edge", sym, num, st->val[k]);
        return 0;
      }
    } else if (st->n < 64) {
      snprintf(st->name[st->n], sizeof st->name[0], "%s", sym);
      snprintf(st->val[st->n], sizeof st->val[0], "%s", num);
      st->n++;
    }
  }
  return 1;
}

/* ---- validation ---- */

static int parse_workers(qins_pipeline *pl, const qins_cfg *ws) {
  char wbuf[256], what[128];
  int rc = want_type(ws, QINS_CFG_SEQ, "workers");
  if (rc) return rc;
  if (ws->n == 0) return qins_error_set(QINS_EINPUT, "%s: workers: the list is empty", W(ws));
  pl->workers = calloc((size_t)ws->n, sizeof *pl->workers);
  if (!pl->workers) return qins_error_set(QINS_ENOMEM, "out of memory");
  pl->n_workers = ws->n;
  for (int i = 0; i < ws->n; i++) {
    const qins_cfg *w = ws->items[i];
    qins_pl_worker *pw = &pl->workers[i];
    pw->node = w;
    const qins_cfg *nm = qins_cfg_get(w, "name");
    if (nm && nm->type == QINS_CFG_SCALAR && valid_name(nm->value))
      snprintf(what, sizeof what, "workers[%s]", nm->value);
    else
      snprintf(what, sizeof what, "workers[%d]", i);
    if ((rc = qins_cfg_check_keys(w, what, worker_keys))) return rc;
    snprintf(what, sizeof what, "workers[%d]", i);
    const char *s;
    if (!nm) return qins_error_set(QINS_EINPUT, "%s: %s: missing key 'name'", W(w), what);
    snprintf(wbuf, sizeof wbuf, "%s.name", what);
    if ((rc = qins_cfg_as_string(nm, wbuf, &s))) return rc;
    if (!valid_name(s))
      return qins_error_set(QINS_EINPUT, "%s: %s.name: '%s' is not a valid name (letters, digits, _ and -)", W(nm), what, s);
    for (int j = 0; j < i; j++)
      if (strcmp(pl->workers[j].name, s) == 0)
        return qins_error_set(QINS_EINPUT, "%s: %s.name: worker '%s' is defined twice", W(nm), what, s);
    snprintf(pw->name, sizeof pw->name, "%s", s);
    snprintf(what, sizeof what, "workers[%s]", pw->name);
    const qins_cfg *h = qins_cfg_get(w, "host");
    if (h) {
      snprintf(wbuf, sizeof wbuf, "%s.host", what);
      if ((rc = qins_cfg_as_string(h, wbuf, &s))) return rc;
      if (strcmp(s, "local") != 0 && strcmp(s, "localhost") != 0 && *s) {
        if (strncmp(s, "tcp://", 6) != 0 || !strchr(s + 6, ':'))
          return qins_error_set(QINS_EINPUT, "%s: %s.host: '%s': expected 'local' or tcp://HOST:PORT", W(h), what, s);
        snprintf(pw->host, sizeof pw->host, "%s", s);
      }
    }
    pw->replicas = 1;
    const qins_cfg *r = qins_cfg_get(w, "replicas");
    if (r) {
      long long v;
      snprintf(wbuf, sizeof wbuf, "%s.replicas", what);
      if ((rc = qins_cfg_as_int(r, wbuf, &v))) return rc;
      if (v < 1 || v > 256) return qins_error_set(QINS_EINPUT, "%s: %s.replicas: %lld is outside 1..256", W(r), what, v);
      pw->replicas = (int)v;
    }
    if (pw->replicas > 1 && pw->host[0])
      return qins_error_set(QINS_EINPUT, "%s: %s.replicas: a remote (tcp://) worker cannot have replicas; list one worker per host", W(r), what);
    const qins_cfg *st = qins_cfg_get(w, "stages");
    if (!st) return qins_error_set(QINS_EINPUT, "%s: %s: missing key 'stages'", W(w), what);
    snprintf(wbuf, sizeof wbuf, "%s.stages", what);
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", wbuf);
    if ((rc = want_type(st, QINS_CFG_SEQ, tmp))) return rc;
    pw->stages = calloc((size_t)st->n + 1, sizeof(int));
    if (!pw->stages) return qins_error_set(QINS_ENOMEM, "out of memory");
    for (int k = 0; k < st->n; k++) {
      if ((rc = qins_cfg_as_string(st->items[k], tmp, &s))) return rc;
      int si = qins_pipeline_stage_index(pl, s);
      if (si < 0) return qins_error_set(QINS_EINPUT, "%s: %s: unknown stage '%s'", W(st->items[k]), tmp, s);
      if (pl->stages[si].worker >= 0) {
        if (pl->stages[si].worker == i)
          return qins_error_set(QINS_EINPUT, "%s: %s: stage '%s' is listed twice on this worker", W(st->items[k]), tmp, s);
        return qins_error_set(QINS_EINPUT, "%s: %s: stage '%s' is placed twice (also on worker '%s')", W(st->items[k]),
                              tmp, s, pl->workers[pl->stages[si].worker].name);
      }
      pl->stages[si].worker = i;
      pw->stages[pw->n_stages++] = si;
    }
  }
  for (int i = 0; i < pl->n_stages; i++)
    if (pl->stages[i].worker < 0)
      return qins_error_set(QINS_EINPUT, "%s: stage '%s' is not placed on any worker (add it to a worker's stages list)",
                            W(pl->stages[i].node), pl->stages[i].name);
  return 0;
}

static int parse_stages(qins_pipeline *pl, const qins_cfg *ss) {
  char wbuf[256], what[128], key[160];
  int rc = want_type(ss, QINS_CFG_SEQ, "stages");
  if (rc) return rc;
  if (ss->n == 0) return qins_error_set(QINS_EINPUT, "%s: stages: the list is empty", W(ss));
  pl->stages = calloc((size_t)ss->n, sizeof *pl->stages);
  if (!pl->stages) return qins_error_set(QINS_ENOMEM, "out of memory");
  pl->n_stages = ss->n;
  for (int i = 0; i < ss->n; i++) {
    const qins_cfg *s = ss->items[i];
    qins_pl_stage *ps = &pl->stages[i];
    ps->node = s;
    ps->worker = -1;
    const qins_cfg *nm = qins_cfg_get(s, "name");
    if (nm && nm->type == QINS_CFG_SCALAR && valid_name(nm->value))
      snprintf(what, sizeof what, "stages[%s]", nm->value);
    else
      snprintf(what, sizeof what, "stages[%d]", i);
    if ((rc = qins_cfg_check_keys(s, what, stage_keys))) return rc;
    snprintf(what, sizeof what, "stages[%d]", i);
    const char *v;
    if (!nm) return qins_error_set(QINS_EINPUT, "%s: %s: missing key 'name'", W(s), what);
    snprintf(key, sizeof key, "%s.name", what);
    if ((rc = qins_cfg_as_string(nm, key, &v))) return rc;
    if (!valid_name(v))
      return qins_error_set(QINS_EINPUT, "%s: %s: '%s' is not a valid name (letters, digits, _ and -)", W(nm), key, v);
    for (int j = 0; j < i; j++)
      if (strcmp(pl->stages[j].name, v) == 0)
        return qins_error_set(QINS_EINPUT, "%s: %s: stage '%s' is defined twice", W(nm), key, v);
    snprintf(ps->name, sizeof ps->name, "%s", v);
    snprintf(what, sizeof what, "stages[%s]", ps->name);
    const qins_cfg *ty = qins_cfg_get(s, "type");
    if (!ty) return qins_error_set(QINS_EINPUT, "%s: %s: missing key 'type'", W(s), what);
    snprintf(key, sizeof key, "%s.type", what);
    if ((rc = qins_cfg_as_string(ty, key, &v))) return rc;
    ps->type = qins_stage_type_find(v);
    if (!ps->type) {
      char list[512] = "";
      size_t len = 0;
      for (int k = 0; k < qins_stage_type_count() && len < sizeof list - 40; k++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", qins_stage_type_at(k)->name);
      return qins_error_set(QINS_EINPUT, "%s: %s: unknown stage type '%s' (known: %s)", W(ty), key, v, list);
    }
    ps->options = qins_cfg_get(s, "options");
    snprintf(key, sizeof key, "%s.options", what);
    if ((rc = qins_stage_check_options(ps->type, ps->options, key))) return rc;
    snprintf(ps->in_port, sizeof ps->in_port, "%s", ps->type->in_port ? ps->type->in_port : "");
    snprintf(ps->out_port, sizeof ps->out_port, "%s", ps->type->out_port ? ps->type->out_port : "");
    if (ps->type->ports && (rc = ps->type->ports(ps->options, pl, ps->in_port, ps->out_port))) {
      /* a message that already points into this file (a check of other stages' keys) stays as is */
      if (s->origin[0] && strncmp(qins_error_msg(), s->origin, strlen(s->origin)) == 0) return rc;
      return qins_error_wrap(rc, "%s: %s: ", W(s), what);
    }
  }
  return 0;
}

static int add_edge(qins_pipeline *pl, int from, int to, int loop, const qins_cfg *node) {
  qins_pl_edge *e = realloc(pl->edges, sizeof *e * (size_t)(pl->n_edges + 1));
  if (!e) return qins_error_set(QINS_ENOMEM, "out of memory");
  pl->edges = e;
  e[pl->n_edges++] = (qins_pl_edge){from, to, loop, node};
  return 0;
}

static int parse_edges(qins_pipeline *pl, const qins_cfg *es) {
  char wbuf[256], what[128], key[160];
  int rc, only_loops = 1;
  if (es) {
    if ((rc = want_type(es, QINS_CFG_SEQ, "edges"))) return rc;
    for (int i = 0; i < es->n; i++) {
      const qins_cfg *e = es->items[i];
      snprintf(what, sizeof what, "edges[%d]", i);
      if ((rc = qins_cfg_check_keys(e, what, edge_keys))) return rc;
      int ends[2], loop = 0;
      for (int k = 0; k < 2; k++) {
        const char *kn = k ? "to" : "from";
        const qins_cfg *c = qins_cfg_get(e, kn);
        const char *v;
        if (!c) return qins_error_set(QINS_EINPUT, "%s: %s: missing key '%s'", W(e), what, kn);
        snprintf(key, sizeof key, "%s.%s", what, kn);
        if ((rc = qins_cfg_as_string(c, key, &v))) return rc;
        ends[k] = qins_pipeline_stage_index(pl, v);
        if (ends[k] < 0) return qins_error_set(QINS_EINPUT, "%s: %s: unknown stage '%s'", W(c), key, v);
      }
      const qins_cfg *lc = qins_cfg_get(e, "loop");
      if (lc) {
        snprintf(key, sizeof key, "%s.loop", what);
        if ((rc = qins_cfg_as_bool(lc, key, &loop))) return rc;
      }
      if (!loop) only_loops = 0;
      for (int j = 0; j < pl->n_edges; j++)
        if (pl->edges[j].from == ends[0] && pl->edges[j].to == ends[1])
          return qins_error_set(QINS_EINPUT, "%s: %s: edge %s -> %s is declared twice", W(e), what,
                                pl->stages[ends[0]].name, pl->stages[ends[1]].name);
      if ((rc = add_edge(pl, ends[0], ends[1], loop, e))) return rc;
    }
  }
  if (!es || only_loops) /* default: the listed order, plus any declared loop edges */
    for (int i = 0; i + 1 < pl->n_stages; i++)
      if ((rc = add_edge(pl, i, i + 1, 0, NULL))) return rc;
  return 0;
}

/* DFS over non-loop edges: a back edge is an undeclared cycle. */
static int find_cycle(const qins_pipeline *pl, int v, int *state, int *stack, int depth, char *msg, size_t n,
                      int *closing) {
  state[v] = 1;
  stack[depth] = v;
  for (int i = 0; i < pl->n_edges; i++) {
    const qins_pl_edge *e = &pl->edges[i];
    if (e->loop || e->from != v) continue;
    if (state[e->to] == 1) {
      size_t len = 0;
      int start = 0;
      while (stack[start] != e->to) start++;
      for (int k = start; k <= depth && len < n - 80; k++)
        len += (size_t)snprintf(msg + len, n - len, "%s -> ", pl->stages[stack[k]].name);
      snprintf(msg + len, n - len, "%s", pl->stages[e->to].name);
      *closing = i;
      return 1;
    }
    if (state[e->to] == 0 && find_cycle(pl, e->to, state, stack, depth + 1, msg, n, closing)) return 1;
  }
  state[v] = 2;
  return 0;
}

static int validate_graph(qins_pipeline *pl) {
  char wbuf[256];
  int n = pl->n_stages;
  int *state = calloc((size_t)n * 2, sizeof(int));
  if (!state) return qins_error_set(QINS_ENOMEM, "out of memory");
  char cyc[512];
  int closing = 0;
  for (int v = 0; v < n; v++)
    if (state[v] == 0 && find_cycle(pl, v, state, state + n, 0, cyc, sizeof cyc, &closing)) {
      free(state);
      const qins_cfg *en = pl->edges[closing].node ? pl->edges[closing].node : qins_cfg_key_node(pl->root, "edges");
      return qins_error_set(QINS_EINPUT, "%s: edges: undeclared cycle %s (mark the back edge with 'loop: true')",
                            W(en ? en : pl->root), cyc);
    }
  free(state);
  pl->entry = pl->exit_stage = -1;
  for (int v = 0; v < n; v++) {
    int in = 0, out = 0;
    for (int i = 0; i < pl->n_edges; i++) {
      if (pl->edges[i].to == v && !pl->edges[i].loop) in++;
      if (pl->edges[i].from == v) out++;
    }
    if (in == 0) {
      if (pl->entry >= 0)
        return qins_error_set(QINS_EINPUT, "%s: stages: both '%s' and '%s' have no input edge; a pipeline has one entry stage",
                              W(pl->stages[v].node), pl->stages[pl->entry].name, pl->stages[v].name);
      pl->entry = v;
    }
    if (out == 0) {
      if (pl->exit_stage >= 0)
        return qins_error_set(QINS_EINPUT, "%s: stages: both '%s' and '%s' have no output edge; a pipeline has one final stage",
                              W(pl->stages[v].node), pl->stages[pl->exit_stage].name, pl->stages[v].name);
      pl->exit_stage = v;
    }
  }
  if (pl->entry < 0) return qins_error_set(QINS_EINPUT, "%s: stages: no entry stage (every stage has an input edge)", W(pl->root));
  if (pl->exit_stage < 0) return qins_error_set(QINS_EINPUT, "%s: stages: no final stage (every stage has an output edge)", W(pl->root));
  /* ports */
  symtab st = {0};
  char why[256];
  const qins_pl_stage *en = &pl->stages[pl->entry], *ex = &pl->stages[pl->exit_stage];
  if (!en->in_port[0] || !qins_port_compatible("u8[N]", en->in_port, why, sizeof why))
    return qins_error_set(QINS_EINPUT, "%s: stages[%s]: the entry stage receives prompts (u8[N] text) but type '%s' takes %s",
                          W(en->node), en->name, en->type->name, en->in_port[0] ? en->in_port : "no input");
  if (!ex->out_port[0] || !qins_port_compatible(ex->out_port, "u8[N]", why, sizeof why))
    return qins_error_set(QINS_EINPUT, "%s: stages[%s]: the final stage must produce records (u8[N] JSON) but type '%s' gives %s",
                          W(ex->node), ex->name, ex->type->name, ex->out_port[0] ? ex->out_port : "no output");
  for (int i = 0; i < pl->n_edges; i++) {
    const qins_pl_stage *a = &pl->stages[pl->edges[i].from], *b = &pl->stages[pl->edges[i].to];
    if (!a->out_port[0] || !b->in_port[0])
      return qins_error_set(QINS_EINPUT, "%s: edge %s -> %s: %s has no %s port", W(b->node), a->name, b->name,
                            !a->out_port[0] ? a->name : b->name, !a->out_port[0] ? "output" : "input");
    if (!qins_port_compatible(a->out_port, b->in_port, why, sizeof why) || !bind_symbols(&st, a->out_port, b->in_port, why, sizeof why))
      return qins_error_set(QINS_EINPUT, "%s: edge %s -> %s: %s output %s cannot feed %s input %s: %s", W(b->node), a->name,
                            b->name, a->name, a->out_port, b->name, b->in_port, why);
  }
  /* Joins (stages/stage.h `join`): exactly that many branches, each giving the same port, so
   * that the stage compares like with like (logits with logits of the same vocabulary). */
  for (int v = 0; v < n; v++) {
    const qins_pl_stage *j = &pl->stages[v];
    int want = j->type->join, got = 0, first = -1;
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < pl->n_edges; i++) {
      if (pl->edges[i].to != v || pl->edges[i].loop) continue;
      const qins_pl_stage *a = &pl->stages[pl->edges[i].from];
      if (len < sizeof list - 80) len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", got ? ", " : "", a->name);
      got++;
      if ((want > 1 || want == QINS_JOIN_ALL) && first >= 0 && strcmp(pl->stages[first].out_port, a->out_port) != 0)
        return qins_error_set(QINS_EINPUT,
                              "%s: stages[%s]: branch mismatch: %s joins '%s' (%s) with '%s' (%s); its branches must "
                              "give the same port",
                              W(pl->edges[i].node ? pl->edges[i].node : j->node), j->name, j->type->name,
                              pl->stages[first].name, pl->stages[first].out_port, a->name, a->out_port);
      if (first < 0) first = pl->edges[i].from;
    }
    if (want == QINS_JOIN_ALL && got < 2)
      return qins_error_set(QINS_EINPUT, "%s: stages[%s]: branch mismatch: type '%s' joins 2 or more branches but takes from %d (%s)",
                            W(j->node), j->name, j->type->name, got, got ? list : "none");
    if (want > 1 && got != want)
      return qins_error_set(QINS_EINPUT, "%s: stages[%s]: branch mismatch: type '%s' joins %d branches but takes from %d (%s)",
                            W(j->node), j->name, j->type->name, want, got, got ? list : "none");
  }
  /* Replicated workers route a request to the same replica everywhere; a remote worker sits on
   * one host, so a loop may cross it only by tcp, which works. Nothing more to check here. */
  return 0;
}

static int parse_inputs(qins_pipeline *pl, const qins_cfg *in) {
  char wbuf[256];
  int rc;
  if ((rc = qins_cfg_check_keys(in, "inputs", input_keys))) return rc;
  const qins_cfg *p = qins_cfg_get(in, "prompts"), *f = qins_cfg_get(in, "file");
  if (p && f) return qins_error_set(QINS_EINPUT, "%s: inputs: give either 'prompts' or 'file', not both", W(in));
  if (p) {
    if ((rc = want_type(p, QINS_CFG_SEQ, "inputs.prompts"))) return rc;
    pl->prompts = calloc((size_t)p->n + 1, sizeof(char *));
    if (!pl->prompts) return qins_error_set(QINS_ENOMEM, "out of memory");
    for (int i = 0; i < p->n; i++) {
      const char *s;
      if ((rc = qins_cfg_as_string(p->items[i], "inputs.prompts[]", &s))) return rc;
      if (!(pl->prompts[pl->n_prompts++] = strdup(s))) return qins_error_set(QINS_ENOMEM, "out of memory");
    }
  }
  if (f && (rc = opt_string(in, "file", "inputs", &pl->input_file))) return rc;
  return 0;
}

static int parse_int_key(const qins_cfg *map, const char *key, const char *what, long long lo, long long hi, long long *out) {
  char wbuf[256], path[160];
  const qins_cfg *c = qins_cfg_get(map, key);
  if (!c) return 0;
  snprintf(path, sizeof path, "%s%s%s", what, *what ? "." : "", key);
  int rc = qins_cfg_as_int(c, path, out);
  if (rc) return rc;
  if (*out < lo || *out > hi) return qins_error_set(QINS_EINPUT, "%s: %s: %lld is outside %lld..%lld", W(c), path, *out, lo, hi);
  return 0;
}

static int validate(qins_pipeline *pl) {
  char wbuf[256];
  qins_cfg *r = pl->root;
  int rc;
  if ((rc = qins_cfg_check_keys(r, "pipeline", top_keys))) return rc;
  char *name = NULL;
  if ((rc = opt_string(r, "name", "", &name))) return rc;
  snprintf(pl->name, sizeof pl->name, "%s", name ? name : "pipeline");
  free(name);
  if ((rc = opt_string(r, "model", "", &pl->model))) return rc;
  if ((rc = opt_string(r, "tokenizer", "", &pl->tokenizer))) return rc;
  if ((rc = opt_string(r, "backend", "", &pl->backend))) return rc;
  if ((rc = opt_string(r, "monitor", "", &pl->monitor))) return rc;
  /* 1 s: a worker is declared hung after 5 s of silence. 200 ms (1 s) killed healthy workers whose
   * heartbeat thread a loaded 2-core CI machine running lavapipe did not schedule for 1.7 s. */
  long long v = 1000;
  if ((rc = parse_int_key(r, "heartbeat_ms", "", 10, 60000, &v))) return rc;
  pl->heartbeat_ms = (int)v;
  v = 0;
  if ((rc = parse_int_key(r, "max_seq", "", 0, 1 << 24, &v))) return rc;
  pl->max_seq = (int)v;
  pl->slots = 16;
  pl->slot_bytes = 1 << 20;
  pl->max_inflight = 8;
  const qins_cfg *ch = qins_cfg_get(r, "channels");
  if (ch) {
    if ((rc = qins_cfg_check_keys(ch, "channels", channel_keys))) return rc;
    v = pl->slots;
    if ((rc = parse_int_key(ch, "slots", "channels", 1, 4096, &v))) return rc;
    pl->slots = (int)v;
    v = pl->slot_bytes;
    if ((rc = parse_int_key(ch, "slot_bytes", "channels", 64, 1LL << 32, &v))) return rc;
    pl->slot_bytes = v;
    v = pl->max_inflight;
    if ((rc = parse_int_key(ch, "max_inflight", "channels", 1, 4096, &v))) return rc;
    pl->max_inflight = (int)v;
  }
  if (pl->max_inflight > pl->slots) pl->max_inflight = pl->slots; /* a loop never holds more than the ring */
  const qins_cfg *ss = qins_cfg_get(r, "stages");
  if (!ss) return qins_error_set(QINS_EINPUT, "%s: pipeline: missing key 'stages'", W(r));
  if ((rc = parse_stages(pl, ss))) return rc;
  const qins_cfg *ws = qins_cfg_get(r, "workers");
  if (!ws) return qins_error_set(QINS_EINPUT, "%s: pipeline: missing key 'workers'", W(r));
  if ((rc = parse_workers(pl, ws))) return rc;
  if ((rc = parse_edges(pl, qins_cfg_get(r, "edges")))) return rc;
  if ((rc = validate_graph(pl))) return rc;
  const qins_cfg *in = qins_cfg_get(r, "inputs");
  if (in && (rc = parse_inputs(pl, in))) return rc;
  const qins_cfg *out = qins_cfg_get(r, "outputs");
  if (out) {
    if ((rc = qins_cfg_check_keys(out, "outputs", output_keys))) return rc;
    if ((rc = opt_string(out, "jsonl", "outputs", &pl->output_jsonl))) return rc;
  }
  pl->restart = QINS_RESTART_STOP;
  pl->restart_max = 3;
  const qins_cfg *rs = qins_cfg_get(r, "restart");
  if (rs) {
    const qins_cfg *pol = rs;
    if (rs->type == QINS_CFG_MAP) {
      if ((rc = qins_cfg_check_keys(rs, "restart", restart_keys))) return rc;
      pol = qins_cfg_get(rs, "policy");
      v = 3;
      if ((rc = parse_int_key(rs, "max_attempts", "restart", 0, 1000, &v))) return rc;
      pl->restart_max = (int)v;
    }
    if (pol) {
      const char *s;
      if ((rc = qins_cfg_as_string(pol, "restart.policy", &s))) return rc;
      if (strcmp(s, "restart") == 0)
        pl->restart = QINS_RESTART_RESTART;
      else if (strcmp(s, "stop") != 0)
        return qins_error_set(QINS_EINPUT, "%s: restart.policy: '%s': expected 'restart' or 'stop'", W(pol), s);
    }
  }
  return 0;
}

int qins_pipeline_load_string(const char *text, size_t len, const char *origin, const char *const *sets, int n_sets,
                              qins_pipeline **out) {
  *out = NULL;
  qins_pipeline *pl = calloc(1, sizeof *pl);
  if (!pl) return qins_error_set(QINS_ENOMEM, "out of memory");
  snprintf(pl->path, sizeof pl->path, "%s", origin);
  pl->yaml_text = malloc(len + 1);
  pl->sets = calloc((size_t)n_sets + 1, sizeof(char *));
  if (!pl->yaml_text || !pl->sets) {
    qins_pipeline_free(pl);
    return qins_error_set(QINS_ENOMEM, "out of memory");
  }
  memcpy(pl->yaml_text, text, len);
  pl->yaml_text[len] = 0;
  pl->yaml_len = len;
  int rc = qins_cfg_load_string(text, len, origin, &pl->root);
  for (int i = 0; rc == 0 && i < n_sets; i++) {
    if (!(pl->sets[pl->n_sets++] = xstrdup(sets[i]))) rc = qins_error_set(QINS_ENOMEM, "out of memory");
    if (rc == 0 && pl->root->type != QINS_CFG_MAP) break;
    if (rc == 0) rc = qins_cfg_set(pl->root, sets[i]);
  }
  if (rc == 0 && pl->root->type != QINS_CFG_MAP) {
    char wbuf[256];
    rc = qins_error_set(QINS_EINPUT, "%s: pipeline: expected a mapping at the top level, got %s", W(pl->root),
                        qins_cfg_type_name(pl->root->type));
  }
  if (rc == 0) rc = validate(pl);
  if (rc) {
    qins_pipeline_free(pl);
    return rc;
  }
  *out = pl;
  return 0;
}

int qins_pipeline_load(const char *path, const char *const *sets, int n_sets, qins_pipeline **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return qins_error_set(QINS_EINPUT, "%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 4096 > cap) {
      cap = (cap + 4096) * 2;
      char *b = realloc(buf, cap);
      if (!b) {
        free(buf);
        fclose(f);
        return qins_error_set(QINS_ENOMEM, "out of memory");
      }
      buf = b;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  fclose(f);
  int rc = qins_pipeline_load_string(buf, n, path, sets, n_sets, out);
  free(buf);
  return rc;
}

void qins_pipeline_free_inputs(int n, char **prompts, char **ids) {
  for (int i = 0; i < n; i++) {
    if (prompts) free(prompts[i]);
    if (ids) free(ids[i]);
  }
  free(prompts);
  free(ids);
}

int qins_pipeline_read_inputs(const qins_pipeline *pl, int *n_out, char ***prompts_out, char ***ids_out) {
  int n = 0, cap = 16;
  char **pr = calloc((size_t)cap, sizeof(char *)), **ids = calloc((size_t)cap, sizeof(char *));
  int rc = 0;
  if (!pr || !ids) {
    rc = qins_error_set(QINS_ENOMEM, "out of memory");
    goto fail;
  }
#define PUSH(P, ID)                                                          \
  do {                                                                       \
    if (n == cap) {                                                          \
      cap *= 2;                                                              \
      char **a = realloc(pr, sizeof(char *) * (size_t)cap);                  \
      if (a) pr = a;                                                         \
      char **b = realloc(ids, sizeof(char *) * (size_t)cap);                 \
      if (b) ids = b;                                                        \
      if (!a || !b) {                                                        \
        rc = qins_error_set(QINS_ENOMEM, "out of memory");                   \
        goto fail;                                                           \
      }                                                                      \
    }                                                                        \
    pr[n] = (P);                                                             \
    ids[n] = (ID);                                                           \
    n++;                                                                     \
    if (!pr[n - 1] || !ids[n - 1]) {                                         \
      rc = qins_error_set(QINS_ENOMEM, "out of memory");                     \
      goto fail;                                                             \
    }                                                                        \
  } while (0)
  for (int i = 0; i < pl->n_prompts; i++) {
    char idb[32];
    snprintf(idb, sizeof idb, "%d", i);
    PUSH(strdup(pl->prompts[i]), strdup(idb));
  }
  if (pl->input_file) {
    FILE *f = fopen(pl->input_file, "r");
    if (!f) {
      rc = qins_error_set(QINS_EINPUT, "%s: inputs.file: cannot open: %s", pl->input_file, strerror(errno));
      goto fail;
    }
    char *line = NULL;
    size_t lcap = 0;
    int lineno = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) >= 0) {
      lineno++;
      int blank = 1;
      for (ssize_t k = 0; k < len; k++)
        if (!isspace((unsigned char)line[k])) blank = 0;
      if (blank) continue;
      json_error_t je;
      json_t *o = json_loads(line, 0, &je);
      const char *p = o ? json_string_value(json_object_get(o, "prompt")) : NULL;
      if (!p) {
        rc = qins_error_set(QINS_EINPUT, "%s:%d: %s", pl->input_file, lineno,
                            o ? "expected an object with a string \"prompt\"" : je.text);
        json_decref(o);
        free(line);
        fclose(f);
        goto fail;
      }
      json_t *id = json_object_get(o, "id");
      char *idtext;
      if (id) {
        idtext = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
      } else {
        char idb[32];
        snprintf(idb, sizeof idb, "%d", n);
        idtext = strdup(idb);
      }
      char *pd = strdup(p);
      json_decref(o);
      PUSH(pd, idtext);
    }
    free(line);
    fclose(f);
  }
#undef PUSH
  *n_out = n;
  *prompts_out = pr;
  *ids_out = ids;
  return 0;
fail:
  qins_pipeline_free_inputs(n, pr, ids);
  return rc;
}

char *qins_pipeline_graph_json(const qins_pipeline *pl) {
  json_t *root = json_object();
  json_object_set_new(root, "name", json_string(pl->name));
  json_t *st = json_array();
  for (int i = 0; i < pl->n_stages; i++) {
    const qins_pl_stage *s = &pl->stages[i];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "type", json_string(s->type->name));
    json_object_set_new(o, "worker", json_string(pl->workers[s->worker].name));
    json_object_set_new(o, "in", json_string(s->in_port));
    json_object_set_new(o, "out", json_string(s->out_port));
    json_object_set_new(o, "entry", json_boolean(i == pl->entry));
    json_object_set_new(o, "final", json_boolean(i == pl->exit_stage));
    json_array_append_new(st, o);
  }
  json_object_set_new(root, "stages", st);
  json_t *ws = json_array();
  for (int i = 0; i < pl->n_workers; i++) {
    const qins_pl_worker *w = &pl->workers[i];
    json_t *o = json_object(), *ss = json_array();
    json_object_set_new(o, "name", json_string(w->name));
    json_object_set_new(o, "host", json_string(w->host[0] ? w->host : "local"));
    json_object_set_new(o, "replicas", json_integer(w->replicas));
    for (int k = 0; k < w->n_stages; k++) json_array_append_new(ss, json_string(pl->stages[w->stages[k]].name));
    json_object_set_new(o, "stages", ss);
    json_array_append_new(ws, o);
  }
  json_object_set_new(root, "workers", ws);
  json_t *es = json_array();
  for (int i = 0; i < pl->n_edges; i++) {
    json_t *o = json_object();
    json_object_set_new(o, "from", json_string(pl->stages[pl->edges[i].from].name));
    json_object_set_new(o, "to", json_string(pl->stages[pl->edges[i].to].name));
    json_object_set_new(o, "loop", json_boolean(pl->edges[i].loop));
    json_object_set_new(o, "cross_worker", json_boolean(pl->stages[pl->edges[i].from].worker != pl->stages[pl->edges[i].to].worker));
    json_array_append_new(es, o);
  }
  json_object_set_new(root, "edges", es);
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return s;
}
