/* YAML -> qins_cfg tree through libyaml's document API (which keeps start marks), plus --set. */
#include "core/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/error.h"

static qins_cfg *node_new(qins_cfg_type t, const char *origin, int line, int col) {
  qins_cfg *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->type = t;
  snprintf(c->origin, sizeof c->origin, "%s", origin);
  c->line = line;
  c->col = col;
  return c;
}

void qins_cfg_free(qins_cfg *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) {
    qins_cfg_free(c->items[i]);
    if (c->keys) qins_cfg_free(c->keys[i]);
  }
  free(c->items);
  free(c->keys);
  free(c->value);
  free(c);
}

static int push_item(qins_cfg *c, qins_cfg *key, qins_cfg *val) {
  qins_cfg **it = realloc(c->items, sizeof *it * (size_t)(c->n + 1));
  if (!it) return QINS_ENOMEM;
  c->items = it;
  if (c->type == QINS_CFG_MAP) {
    qins_cfg **k = realloc(c->keys, sizeof *k * (size_t)(c->n + 1));
    if (!k) return QINS_ENOMEM;
    c->keys = k;
    c->keys[c->n] = key;
  }
  c->items[c->n++] = val;
  return 0;
}

static qins_cfg *convert(yaml_document_t *doc, yaml_node_t *yn, const char *origin, int depth) {
  if (!yn || depth > 64) return NULL;
  int line = (int)yn->start_mark.line + 1, col = (int)yn->start_mark.column + 1;
  qins_cfg *c = NULL;
  switch (yn->type) {
  case YAML_SCALAR_NODE:
    c = node_new(QINS_CFG_SCALAR, origin, line, col);
    if (!c) return NULL;
    c->value = strndup((const char *)yn->data.scalar.value, yn->data.scalar.length);
    c->quoted = yn->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                yn->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    if (!c->value) goto fail;
    return c;
  case YAML_SEQUENCE_NODE:
    c = node_new(QINS_CFG_SEQ, origin, line, col);
    if (!c) return NULL;
    for (yaml_node_item_t *it = yn->data.sequence.items.start; it < yn->data.sequence.items.top; it++) {
      qins_cfg *v = convert(doc, yaml_document_get_node(doc, *it), origin, depth + 1);
      if (!v || push_item(c, NULL, v)) {
        qins_cfg_free(v);
        goto fail;
      }
    }
    return c;
  case YAML_MAPPING_NODE:
    c = node_new(QINS_CFG_MAP, origin, line, col);
    if (!c) return NULL;
    for (yaml_node_pair_t *p = yn->data.mapping.pairs.start; p < yn->data.mapping.pairs.top; p++) {
      qins_cfg *k = convert(doc, yaml_document_get_node(doc, p->key), origin, depth + 1);
      qins_cfg *v = convert(doc, yaml_document_get_node(doc, p->value), origin, depth + 1);
      if (!k || !v || k->type != QINS_CFG_SCALAR) {
        if (k && k->type != QINS_CFG_SCALAR)
          qins_error_set(QINS_EINPUT, "%s:%d:%d: mapping keys must be plain scalars", origin, k->line, k->col);
        qins_cfg_free(k);
        qins_cfg_free(v);
        goto fail;
      }
      for (int i = 0; i < c->n; i++)
        if (strcmp(c->keys[i]->value, k->value) == 0) {
          qins_error_set(QINS_EINPUT, "%s:%d:%d: key '%s': duplicate key (first at line %d)", origin, k->line, k->col,
                         k->value, c->keys[i]->line);
          qins_cfg_free(k);
          qins_cfg_free(v);
          goto fail;
        }
      if (push_item(c, k, v)) {
        qins_cfg_free(k);
        qins_cfg_free(v);
        goto fail;
      }
    }
    return c;
  default:
    return NULL;
  }
fail:
  qins_cfg_free(c);
  return NULL;
}

int qins_cfg_load_string(const char *text, size_t len, const char *origin, qins_cfg **out) {
  *out = NULL;
  yaml_parser_t parser;
  yaml_document_t doc;
  if (!yaml_parser_initialize(&parser)) return qins_error_set(QINS_ENOMEM, "%s: cannot start the YAML parser", origin);
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &doc)) {
    int rc = qins_error_set(QINS_EINPUT, "%s:%d:%d: YAML syntax error: %s%s%s", origin, (int)parser.problem_mark.line + 1,
                            (int)parser.problem_mark.column + 1, parser.problem ? parser.problem : "?",
                            parser.context ? " " : "", parser.context ? parser.context : "");
    yaml_parser_delete(&parser);
    return rc;
  }
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  int rc = 0;
  if (!root) {
    rc = qins_error_set(QINS_EINPUT, "%s: empty YAML document", origin);
  } else {
    qins_error_clear();
    *out = convert(&doc, root, origin, 0);
    if (!*out) rc = qins_error_code() ? qins_error_code() : qins_error_set(QINS_ENOMEM, "%s: out of memory", origin);
  }
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  return rc;
}

int qins_cfg_load_file(const char *path, qins_cfg **out) {
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
        return qins_error_set(QINS_ENOMEM, "%s: out of memory", path);
      }
      buf = b;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    free(buf);
    return qins_error_set(QINS_EIO, "%s: read error", path);
  }
  int rc = qins_cfg_load_string(buf, n, path, out);
  free(buf);
  return rc;
}

qins_cfg *qins_cfg_key_node(const qins_cfg *map, const char *key) {
  if (!map || map->type != QINS_CFG_MAP) return NULL;
  for (int i = 0; i < map->n; i++)
    if (strcmp(map->keys[i]->value, key) == 0) return map->keys[i];
  return NULL;
}

qins_cfg *qins_cfg_get(const qins_cfg *map, const char *key) {
  if (!map || map->type != QINS_CFG_MAP) return NULL;
  for (int i = 0; i < map->n; i++)
    if (strcmp(map->keys[i]->value, key) == 0) return map->items[i];
  return NULL;
}

const char *qins_cfg_where(const qins_cfg *c, char *buf, size_t n) {
  if (!c)
    snprintf(buf, n, "?");
  else if (c->line > 0)
    snprintf(buf, n, "%s:%d:%d", c->origin, c->line, c->col);
  else
    snprintf(buf, n, "%s", c->origin);
  return buf;
}

const char *qins_cfg_type_name(qins_cfg_type t) {
  return t == QINS_CFG_SCALAR ? "a scalar" : t == QINS_CFG_SEQ ? "a list" : "a mapping";
}

static void set_origin(qins_cfg *c, const char *origin) {
  snprintf(c->origin, sizeof c->origin, "%s", origin);
  c->line = c->col = 0;
  for (int i = 0; i < c->n; i++) {
    set_origin(c->items[i], origin);
    if (c->keys) set_origin(c->keys[i], origin);
  }
}

int qins_cfg_set(qins_cfg *root, const char *assignment) {
  char origin[192];
  snprintf(origin, sizeof origin, "--set %s", assignment);
  const char *eq = strchr(assignment, '=');
  if (!eq || eq == assignment) return qins_error_set(QINS_EINPUT, "%s: expected KEY.PATH=VALUE", origin);
  char path[512];
  size_t plen = (size_t)(eq - assignment);
  if (plen >= sizeof path) return qins_error_set(QINS_EINPUT, "%s: key path too long", origin);
  memcpy(path, assignment, plen);
  path[plen] = 0;
  qins_cfg *val;
  const char *vtext = eq + 1;
  int rc = qins_cfg_load_string(vtext, strlen(vtext), origin, &val);
  if (rc == QINS_EINPUT && *vtext == 0) rc = 0, val = NULL;
  if (rc) return rc;
  if (!val) {
    val = node_new(QINS_CFG_SCALAR, origin, 0, 0);
    if (!val || !(val->value = strdup(""))) {
      qins_cfg_free(val);
      return qins_error_set(QINS_ENOMEM, "%s: out of memory", origin);
    }
  }
  set_origin(val, origin);
  qins_cfg *cur = root;
  char *save = NULL;
  char *tok = strtok_r(path, ".", &save);
  while (tok) {
    char *next = strtok_r(NULL, ".", &save);
    qins_cfg **slot = NULL;
    if (cur->type == QINS_CFG_MAP) {
      for (int i = 0; i < cur->n; i++)
        if (strcmp(cur->keys[i]->value, tok) == 0) slot = &cur->items[i];
      if (!slot) {
        qins_cfg *k = node_new(QINS_CFG_SCALAR, origin, 0, 0);
        qins_cfg *v = node_new(next ? QINS_CFG_MAP : QINS_CFG_SCALAR, origin, 0, 0);
        if (!k || !v || !(k->value = strdup(tok)) || (!next && !(v->value = strdup(""))) || push_item(cur, k, v)) {
          qins_cfg_free(k);
          qins_cfg_free(v);
          qins_cfg_free(val);
          return qins_error_set(QINS_ENOMEM, "%s: out of memory", origin);
        }
        slot = &cur->items[cur->n - 1];
      }
    } else if (cur->type == QINS_CFG_SEQ) {
      char *end;
      long idx = strtol(tok, &end, 10);
      if (*end == 0 && end != tok) {
        if (idx < 0 || idx >= cur->n) {
          qins_cfg_free(val);
          return qins_error_set(QINS_EINPUT, "%s: index %ld out of range (the list has %d items)", origin, idx, cur->n);
        }
        slot = &cur->items[idx];
      } else {
        for (int i = 0; i < cur->n; i++) {
          qins_cfg *nm = qins_cfg_get(cur->items[i], "name");
          if (nm && nm->type == QINS_CFG_SCALAR && strcmp(nm->value, tok) == 0) slot = &cur->items[i];
        }
        if (!slot) {
          qins_cfg_free(val);
          return qins_error_set(QINS_EINPUT, "%s: no list item named '%s'", origin, tok);
        }
      }
    } else {
      qins_cfg_free(val);
      return qins_error_set(QINS_EINPUT, "%s: '%s' is inside a scalar, not a mapping or list", origin, tok);
    }
    if (!next) {
      qins_cfg_free(*slot);
      *slot = val;
      return 0;
    }
    cur = *slot;
    tok = next;
  }
  qins_cfg_free(val);
  return qins_error_set(QINS_EINPUT, "%s: empty key path", origin);
}

static int want_scalar(const qins_cfg *c, const char *what, const char *kind) {
  char w[256];
  if (!c) return qins_error_set(QINS_EINPUT, "%s: missing", what);
  if (c->type != QINS_CFG_SCALAR)
    return qins_error_set(QINS_EINPUT, "%s: %s: expected %s, got %s", qins_cfg_where(c, w, sizeof w), what, kind,
                          qins_cfg_type_name(c->type));
  return 0;
}

int qins_cfg_as_int(const qins_cfg *c, const char *what, long long *out) {
  int rc = want_scalar(c, what, "an integer");
  if (rc) return rc;
  char w[256], *end;
  errno = 0;
  long long v = strtoll(c->value, &end, 0);
  if (c->quoted || end == c->value || *end || errno)
    return qins_error_set(QINS_EINPUT, "%s: %s: expected an integer, got '%s'", qins_cfg_where(c, w, sizeof w), what,
                          c->value);
  *out = v;
  return 0;
}

int qins_cfg_as_double(const qins_cfg *c, const char *what, double *out) {
  int rc = want_scalar(c, what, "a number");
  if (rc) return rc;
  char w[256], *end;
  double v = strtod(c->value, &end);
  if (c->quoted || end == c->value || *end || !isfinite(v))
    return qins_error_set(QINS_EINPUT, "%s: %s: expected a number, got '%s'", qins_cfg_where(c, w, sizeof w), what,
                          c->value);
  *out = v;
  return 0;
}

int qins_cfg_as_bool(const qins_cfg *c, const char *what, int *out) {
  int rc = want_scalar(c, what, "true or false");
  if (rc) return rc;
  char w[256];
  const char *s = c->value;
  if (!c->quoted && (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes") || !strcmp(s, "on"))) {
    *out = 1;
    return 0;
  }
  if (!c->quoted && (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "no") || !strcmp(s, "off"))) {
    *out = 0;
    return 0;
  }
  return qins_error_set(QINS_EINPUT, "%s: %s: expected true or false, got '%s'", qins_cfg_where(c, w, sizeof w), what, s);
}

int qins_cfg_as_string(const qins_cfg *c, const char *what, const char **out) {
  int rc = want_scalar(c, what, "a string");
  if (rc) return rc;
  *out = c->value;
  return 0;
}

int qins_cfg_check_keys(const qins_cfg *map, const char *what, const char *const *allowed) {
  char w[256];
  if (!map || map->type != QINS_CFG_MAP)
    return qins_error_set(QINS_EINPUT, "%s: %s: expected a mapping, got %s", qins_cfg_where(map, w, sizeof w), what,
                          map ? qins_cfg_type_name(map->type) : "nothing");
  for (int i = 0; i < map->n; i++) {
    int ok = 0;
    for (const char *const *a = allowed; *a; a++)
      if (strcmp(*a, map->keys[i]->value) == 0) ok = 1;
    if (!ok) {
      char list[512] = "";
      size_t len = 0;
      for (const char *const *a = allowed; *a && len < sizeof list - 64; a++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", *a);
      return qins_error_set(QINS_EINPUT, "%s: %s: unknown key '%s' (expected one of: %s)",
                            qins_cfg_where(map->keys[i], w, sizeof w), what, map->keys[i]->value, list);
    }
  }
  return 0;
}
