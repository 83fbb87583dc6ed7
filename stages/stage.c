/* Stage registry, option schema checks and the message output helpers every stage type uses. */
#include "stages/stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* evaluation stages (docs/evaluation.md) */
extern const qins_stage_type qins_stage_compare, qins_stage_logit_compare, qins_stage_hidden_cosine,
    qins_stage_perplexity, qins_stage_context_curve, qins_stage_merge_records;
extern const qins_stage_type qins_stage_test_bytes, qins_stage_test_embed, qins_stage_test_affine,
    qins_stage_test_sample, qins_stage_test_detok, qins_stage_sink, qins_stage_tokenize, qins_stage_parse_ids,
    qins_stage_embed, qins_stage_qins_block, qins_stage_head, qins_stage_sample, qins_stage_detokenize,
    qins_stage_format_ids, qins_stage_kv_store, qins_stage_train_data, qins_stage_train_part, qins_stage_train_log;

static const qins_stage_type *const registry[] = {
    &qins_stage_compare,     &qins_stage_logit_compare, &qins_stage_hidden_cosine, &qins_stage_perplexity,
    &qins_stage_context_curve, &qins_stage_merge_records,
    &qins_stage_tokenize,    &qins_stage_parse_ids,   &qins_stage_embed,      &qins_stage_qins_block,
    &qins_stage_head,        &qins_stage_sample,      &qins_stage_detokenize, &qins_stage_format_ids,
    &qins_stage_sink,        &qins_stage_test_bytes,  &qins_stage_test_embed, &qins_stage_test_affine,
    &qins_stage_test_sample, &qins_stage_test_detok, &qins_stage_kv_store,
    &qins_stage_train_data,  &qins_stage_train_part,  &qins_stage_train_log,
};

int qins_stage_type_count(void) { return (int)(sizeof registry / sizeof registry[0]); }
const qins_stage_type *qins_stage_type_at(int i) { return i >= 0 && i < qins_stage_type_count() ? registry[i] : NULL; }

const qins_stage_type *qins_stage_type_find(const char *name) {
  for (int i = 0; i < qins_stage_type_count(); i++)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

static const qins_opt_spec *find_spec(const qins_stage_type *t, const char *name) {
  for (const qins_opt_spec *o = t->options; o && o->name; o++)
    if (strcmp(o->name, name) == 0) return o;
  return NULL;
}

static int check_value(const qins_opt_spec *o, const qins_cfg *c, const char *path) {
  char w[256];
  int rc;
  long long iv;
  double dv;
  int bv;
  const char *sv;
  switch (o->type) {
  case QINS_OPT_INT:
    if ((rc = qins_cfg_as_int(c, path, &iv))) return rc;
    dv = (double)iv;
    break;
  case QINS_OPT_FLOAT:
    if ((rc = qins_cfg_as_double(c, path, &dv))) return rc;
    break;
  case QINS_OPT_BOOL:
    return qins_cfg_as_bool(c, path, &bv);
  case QINS_OPT_STRING:
    return qins_cfg_as_string(c, path, &sv);
  case QINS_OPT_NODE:
    return 0; /* the stage type checks it */
  default:
    return 0;
  }
  if (o->min <= o->max && (dv < o->min || dv > o->max))
    return qins_error_set(QINS_EINPUT, "%s: %s: %s is outside %g..%g", qins_cfg_where(c, w, sizeof w), path, c->value,
                          o->min, o->max);
  return 0;
}

int qins_stage_check_options(const qins_stage_type *t, const qins_cfg *opts, const char *what) {
  char w[256], path[256];
  if (opts && opts->type == QINS_CFG_SCALAR && opts->value[0] == 0) opts = NULL; /* "options:" left empty */
  if (opts) {
    if (opts->type != QINS_CFG_MAP)
      return qins_error_set(QINS_EINPUT, "%s: %s: expected a mapping, got %s", qins_cfg_where(opts, w, sizeof w), what,
                            qins_cfg_type_name(opts->type));
    for (int i = 0; i < opts->n; i++) {
      const qins_opt_spec *o = find_spec(t, opts->keys[i]->value);
      if (!o) {
        char list[512] = "";
        size_t len = 0;
        for (const qins_opt_spec *s = t->options; s && s->name && len < sizeof list - 40; s++)
          len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", s->name);
        return qins_error_set(QINS_EINPUT, "%s: %s: unknown option '%s' for stage type '%s' (options: %s)",
                              qins_cfg_where(opts->keys[i], w, sizeof w), what, opts->keys[i]->value, t->name,
                              len ? list : "none");
      }
      snprintf(path, sizeof path, "%s.%s", what, o->name);
      int rc = check_value(o, opts->items[i], path);
      if (rc) return rc;
    }
  }
  for (const qins_opt_spec *o = t->options; o && o->name; o++)
    if (!o->def && !qins_cfg_get(opts, o->name))
      return qins_error_set(QINS_EINPUT, "%s: %s: stage type '%s' requires option '%s' (%s)",
                            qins_cfg_where(opts ? opts : NULL, w, sizeof w), what, t->name, o->name, o->help);
  return 0;
}

/* The option's text: from the YAML when given, else the schema default. */
static const char *opt_text(const qins_stage *st, const char *name) {
  const qins_cfg *c = qins_cfg_get(st->ctx.options, name);
  if (c && c->type == QINS_CFG_SCALAR) return c->value;
  const qins_opt_spec *o = find_spec(st->type, name);
  return o && o->def ? o->def : "";
}

long long qins_stage_opt_int(const qins_stage *st, const char *name) { return strtoll(opt_text(st, name), NULL, 0); }
double qins_stage_opt_float(const qins_stage *st, const char *name) { return strtod(opt_text(st, name), NULL); }
int qins_stage_opt_bool(const qins_stage *st, const char *name) {
  const char *s = opt_text(st, name);
  return !strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes") || !strcmp(s, "on");
}
const char *qins_stage_opt_string(const qins_stage *st, const char *name) { return opt_text(st, name); }

void *qins_msg_output(qins_msg *out, const qins_msg *in, qins_dtype dt, int ndim, const int64_t *shape) {
  if (in) {
    out->req = in->req;
    out->attempt = in->attempt;
    out->step = in->step;
    out->flags = in->flags;
    out->route = in->route;
    out->pos = in->pos;
    out->last_id = in->last_id;
  }
  if (ndim < 0 || ndim > QINS_MAX_DIMS || qins_dtype_size(dt) == 0) {
    qins_error_set(QINS_EINVAL, "qins_msg_output: bad dtype or rank %d", ndim);
    return NULL;
  }
  size_t n = qins_dtype_size(dt);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      qins_error_set(QINS_EINVAL, "qins_msg_output: negative dimension");
      return NULL;
    }
    n *= (size_t)shape[i];
    out->shape[i] = shape[i];
  }
  out->dtype = dt;
  out->ndim = ndim;
  out->nbytes = n;
  out->data = out->alloc ? out->alloc(out, n) : NULL;
  if (!out->data) qins_error_set(QINS_ENOMEM, "qins_msg_output: cannot allocate %zu bytes", n);
  return out->data;
}

int qins_msg_output_text(qins_msg *out, const qins_msg *in, const char *text, size_t len) {
  int64_t shape[1] = {(int64_t)len};
  void *p = qins_msg_output(out, in, QINS_DT_U8, 1, shape);
  if (!p) return qins_error_code() ? qins_error_code() : QINS_ENOMEM;
  if (len) memcpy(p, text, len);
  return 0;
}
