/* Shared by the train stages: frames, run settings from the train_data stage, part layout and
 * validation, per-part checkpoint files. */
#include "stages/train_flow.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"

/* ------------------------------------------------------------------ frames */

static size_t ids_bytes(int64_t n) { return (size_t)((n + 1) / 2 * 2) * sizeof(int32_t); } /* 8-byte aligned */

static int frame_size(const tf_hdr *h, size_t *out) {
  if (h->n_ids < 0 || h->n_f64 < 0 || h->n_f32 < 0 || h->n_f64 > ((int64_t)1 << 40) || h->n_f32 > ((int64_t)1 << 40))
    return QINS_EINPUT;
  *out = sizeof(tf_hdr) + ids_bytes(h->n_ids) + (size_t)h->n_f64 * sizeof(double) + (size_t)h->n_f32 * sizeof(float);
  return 0;
}

int tf_frame_parse(const qins_msg *m, const char *stage, tf_frame *f) {
  size_t need = 0;
  if (m->dtype != QINS_DT_U8 || m->nbytes < sizeof(tf_hdr) || !m->data)
    return qins_error_set(QINS_EINPUT, "stage '%s': expected a train frame (u8 payload), got %zu bytes of %s", stage,
                          m->nbytes, qins_dtype_name(m->dtype));
  memcpy(&f->h, m->data, sizeof f->h);
  if (f->h.magic != TF_MAGIC || frame_size(&f->h, &need) || need != m->nbytes)
    return qins_error_set(QINS_EINPUT, "stage '%s': malformed train frame (%zu bytes, kind %u)", stage, m->nbytes,
                          f->h.kind);
  const uint8_t *p = (const uint8_t *)m->data + sizeof(tf_hdr);
  f->ids = f->h.n_ids ? (const int32_t *)p : NULL;
  p += ids_bytes(f->h.n_ids);
  f->f64 = f->h.n_f64 ? (const double *)p : NULL;
  p += (size_t)f->h.n_f64 * sizeof(double);
  f->f32 = f->h.n_f32 ? (const float *)p : NULL;
  return 0;
}

int tf_frame_out(qins_msg *out, const qins_msg *in, const tf_hdr *h, int32_t **ids, double **f64, float **f32) {
  size_t n = 0;
  tf_hdr hh = *h;
  hh.magic = TF_MAGIC;
  if (frame_size(&hh, &n)) return qins_error_set(QINS_EINVAL, "train frame: bad counts");
  int64_t shape[1] = {(int64_t)n};
  uint8_t *p = qins_msg_output(out, in, QINS_DT_U8, 1, shape);
  if (!p) return QINS_ENOMEM;
  memcpy(p, &hh, sizeof hh);
  p += sizeof hh;
  if (ids) *ids = hh.n_ids ? (int32_t *)p : NULL;
  p += ids_bytes(hh.n_ids);
  if (f64) *f64 = hh.n_f64 ? (double *)p : NULL;
  p += (size_t)hh.n_f64 * sizeof(double);
  if (f32) *f32 = hh.n_f32 ? (float *)p : NULL;
  return 0;
}

/* ------------------------------------------------------------------ settings */

static const qins_cfg *find_stage(const qins_cfg *root, const char *type, int *count) {
  const qins_cfg *ss = qins_cfg_get(root, "stages"), *found = NULL;
  *count = 0;
  if (!ss || ss->type != QINS_CFG_SEQ) return NULL;
  for (int i = 0; i < ss->n; i++) {
    const qins_cfg *t = qins_cfg_get(ss->items[i], "type");
    if (t && t->type == QINS_CFG_SCALAR && !strcmp(t->value, type)) {
      if (!found) found = ss->items[i];
      (*count)++;
    }
  }
  return found;
}

static const char *opt_str(const qins_cfg *opts, const char *key) {
  const qins_cfg *c = qins_cfg_get(opts, key);
  return c && c->type == QINS_CFG_SCALAR ? c->value : "";
}

int tf_settings_load(const qins_pipeline *pl, tf_settings *s) {
  memset(s, 0, sizeof *s);
  char w[256];
  int count = 0;
  const qins_cfg *st = find_stage(pl->root, "train_data", &count);
  if (count != 1)
    return qins_error_set(QINS_EINPUT, "%s: stages: a train pipeline needs exactly one 'train_data' stage (found %d)",
                          qins_cfg_where(pl->root, w, sizeof w), count);
  const qins_cfg *o = qins_cfg_get(st, "options");
  snprintf(s->config, sizeof s->config, "%s", opt_str(o, "config"));
  snprintf(s->resume, sizeof s->resume, "%s", opt_str(o, "resume"));
  char a[3][600], *set_copy = strdup(opt_str(o, "set"));
  const char *sets[64];
  int n = 0;
  if (!set_copy) return qins_error_set(QINS_ENOMEM, "no memory");
  long long steps = strtoll(opt_str(o, "steps"), NULL, 0), stop = strtoll(opt_str(o, "stop_after"), NULL, 0);
  if (steps > 0) snprintf(a[0], sizeof a[0], "run.steps=%lld", steps), sets[n++] = a[0];
  if (stop > 0) snprintf(a[1], sizeof a[1], "run.stop_after=%lld", stop), sets[n++] = a[1];
  if (opt_str(o, "out_dir")[0]) snprintf(a[2], sizeof a[2], "run.out_dir=%s", opt_str(o, "out_dir")), sets[n++] = a[2];
  for (char *save = NULL, *tok = strtok_r(set_copy, ";", &save); tok && n < 64; tok = strtok_r(NULL, ";", &save)) {
    while (*tok == ' ') tok++;
    if (*tok) sets[n++] = tok;
  }
  const qins_cfg *cn = qins_cfg_get(o, "config");
  int rc = qins_train_setup_load(s->config, sets, n, &s->setup);
  free(set_copy);
  if (rc) return qins_error_wrap(rc, "%s: stages[%s].options.config: ", qins_cfg_where(cn ? cn : st, w, sizeof w),
                                 opt_str(st, "name"));
  qins_train_setup_get(s->setup, &s->info);
  return 0;
}

void tf_settings_free(tf_settings *s) {
  qins_train_setup_free(s->setup);
  memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ parts */

static int parse_layers(const char *spec, int *a, int *b) {
  int k = 0;
  if (sscanf(spec, "%d:%d%n", a, b, &k) == 2 && spec[k] == 0) return 0;
  if (sscanf(spec, "%d%n", a, &k) == 1 && spec[k] == 0) {
    *b = *a + 1;
    return 0;
  }
  return -1;
}

static int spec_cmp(const void *x, const void *y) {
  const tf_part_spec *a = x, *b = y;
  if (a->embed != b->embed) return a->embed ? -1 : 1;
  if (a->head != b->head) return a->head ? 1 : -1;
  if (a->l0 != b->l0) return a->l0 < b->l0 ? -1 : 1;
  return (a->l1 > b->l1) - (a->l1 < b->l1);
}

static int opt_bool(const qins_cfg *o, const char *key) {
  const char *v = opt_str(o, key);
  return !strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "yes") || !strcmp(v, "on");
}

int tf_part_specs(const qins_cfg *root, tf_part_spec **out, int *n) {
  *out = NULL;
  *n = 0;
  const qins_cfg *ss = qins_cfg_get(root, "stages");
  if (!ss || ss->type != QINS_CFG_SEQ) return 0;
  tf_part_spec *v = calloc((size_t)ss->n + 1, sizeof *v);
  if (!v) return qins_error_set(QINS_ENOMEM, "no memory");
  char w[256];
  for (int i = 0; i < ss->n; i++) {
    const qins_cfg *t = qins_cfg_get(ss->items[i], "type");
    if (!t || t->type != QINS_CFG_SCALAR || strcmp(t->value, "train_part")) continue;
    tf_part_spec *p = &v[*n];
    const qins_cfg *o = qins_cfg_get(ss->items[i], "options");
    const qins_cfg *ln = qins_cfg_get(o, "layers");
    snprintf(p->name, sizeof p->name, "%s", opt_str(ss->items[i], "name"));
    p->node = ln ? ln : ss->items[i];
    p->embed = opt_bool(o, "embed");
    p->head = opt_bool(o, "head");
    if (parse_layers(ln ? opt_str(o, "layers") : "0:0", &p->l0, &p->l1) || p->l0 < 0 || p->l1 < p->l0) {
      int rc = qins_error_set(QINS_EINPUT, "%s: stages[%s].options.layers: '%s': expected 'A:B' (layers A..B-1, A <= B) or 'A'",
                              qins_cfg_where(p->node, w, sizeof w), p->name, opt_str(o, "layers"));
      free(v);
      return rc;
    }
    (*n)++;
  }
  qsort(v, (size_t)*n, sizeof *v, spec_cmp);
  *out = v;
  return 0;
}

static int path_exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

static int file_exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

int tf_validate(const qins_pipeline *pl) {
  char w[256], w2[256];
  tf_settings s;
  int rc = tf_settings_load(pl, &s);
  if (rc) return rc;
  int cnt = 0;
  const qins_cfg *dst = find_stage(pl->root, "train_data", &cnt);
  const qins_cfg *cn = qins_cfg_get(qins_cfg_get(dst, "options"), "config");
  const qins_cfg *where = cn ? cn : dst;
  tf_part_spec *ps = NULL;
  int np = 0;
  /* data: the corpus (tokenized on first use) or an existing shard, and the tokenizer */
  if (s.info.text[0] && !file_exists(s.info.text))
    rc = qins_error_set(QINS_EINPUT, "%s: train config %s: data.text '%s' does not exist", qins_cfg_where(where, w, sizeof w),
                        s.config, s.info.text);
  else if (!s.info.text[0] && !file_exists(s.info.shard))
    rc = qins_error_set(QINS_EINPUT, "%s: train config %s: data.shard '%s' does not exist (and no data.text to build it)",
                        qins_cfg_where(where, w, sizeof w), s.config, s.info.shard);
  else if (!file_exists(s.info.tokenizer))
    rc = qins_error_set(QINS_EINPUT, "%s: train config %s: data.tokenizer '%s' does not exist",
                        qins_cfg_where(where, w, sizeof w), s.config, s.info.tokenizer);
  else {
    /* distillation: a train_teacher stage exactly when the config has distill:, no hidden term */
    int nt = 0;
    const qins_cfg *tst = find_stage(pl->root, "train_teacher", &nt);
    if (s.info.distill && nt != 1)
      rc = qins_error_set(QINS_EINPUT, "%s: train config %s has distill: the pipeline needs one train_teacher stage (has %d)",
                          qins_cfg_where(where, w, sizeof w), s.config, nt);
    else if (!s.info.distill && nt > 0)
      rc = qins_error_set(QINS_EINPUT, "%s: a train_teacher stage needs distill: in the train config %s",
                          qins_cfg_where(tst, w, sizeof w), s.config);
    else if (s.info.distill && s.info.distill_hid > 0)
      rc = qins_error_set(QINS_EINPUT, "%s: train config %s: distill.lambda_hid (hidden-state term) is not supported by "
                          "train pipelines (use qins train)", qins_cfg_where(where, w, sizeof w), s.config);
    else if (s.info.distill && !path_exists(s.info.teacher))
      rc = qins_error_set(QINS_EINPUT, "%s: train config %s: distill.teacher '%s' does not exist",
                          qins_cfg_where(where, w, sizeof w), s.config, s.info.teacher);
  }
  if (rc) goto out;
  int L = s.info.scratch_layers;
  if (!L) {
    qins_model *m = NULL;
    if ((rc = qins_model_open(s.info.init, &m))) {
      rc = qins_error_wrap(rc, "%s: train config %s: model.init: ", qins_cfg_where(where, w, sizeof w), s.config);
      goto out;
    }
    L = m->cfg.n_layers;
    qins_model_close(m);
  }
  if ((rc = tf_part_specs(pl->root, &ps, &np))) goto out;
  if (np == 0) {
    rc = qins_error_set(QINS_EINPUT, "%s: stages: a train pipeline needs at least one 'train_part' stage",
                        qins_cfg_where(pl->root, w, sizeof w));
    goto out;
  }
  int n_embed = 0, n_head = 0;
  for (int i = 0; i < np && !rc; i++) {
    const tf_part_spec *p = &ps[i];
    n_embed += p->embed;
    n_head += p->head;
    if (p->l1 > L)
      rc = qins_error_set(QINS_EINPUT, "%s: stages[%s].options.layers: %d:%d is outside the model's layers 0:%d",
                          qins_cfg_where(p->node, w, sizeof w), p->name, p->l0, p->l1, L);
    else if (p->embed && p->l0 != 0)
      rc = qins_error_set(QINS_EINPUT, "%s: stages[%s]: the embed part must start at layer 0 (layers %d:%d)",
                          qins_cfg_where(p->node, w, sizeof w), p->name, p->l0, p->l1);
    else if (p->head && p->l1 != L)
      rc = qins_error_set(QINS_EINPUT, "%s: stages[%s]: the head part must end at layer %d (layers %d:%d)",
                          qins_cfg_where(p->node, w, sizeof w), p->name, L, p->l0, p->l1);
    else if (p->l0 == p->l1 && !p->embed && !p->head)
      rc = qins_error_set(QINS_EINPUT, "%s: stages[%s].options.layers: %d:%d is empty (and no embed/head)",
                          qins_cfg_where(p->node, w, sizeof w), p->name, p->l0, p->l1);
    for (int j = 0; j < np && !rc; j++)
      if (j != i && ps[j].l0 < p->l1 && p->l0 < ps[j].l1)
        rc = qins_error_set(QINS_EINPUT, "%s: stages[%s].options.layers: %d:%d overlaps stages[%s] (%d:%d at %s)",
                            qins_cfg_where(p->node, w, sizeof w), p->name, p->l0, p->l1, ps[j].name, ps[j].l0, ps[j].l1,
                            qins_cfg_where(ps[j].node, w2, sizeof w2));
  }
  if (rc) goto out;
  if (n_embed != 1 || n_head != 1) {
    rc = qins_error_set(QINS_EINPUT, "%s: stages: a train pipeline needs exactly one train_part with 'embed: true' and one "
                        "with 'head: true' (found %d and %d)",
                        qins_cfg_where(ps[0].node, w, sizeof w), n_embed, n_head);
    goto out;
  }
  /* the parameters live in one place: no replicas of train workers. (`restart: restart` is
   * allowed: a replay rewinds every part to the run's last checkpoint, see train_data.c) */
  {
    const qins_cfg *ws = qins_cfg_get(pl->root, "workers");
    for (int i = 0; ws && ws->type == QINS_CFG_SEQ && i < ws->n; i++) {
      const qins_cfg *r = qins_cfg_get(ws->items[i], "replicas");
      if (r && r->type == QINS_CFG_SCALAR && strtol(r->value, NULL, 10) > 1) {
        rc = qins_error_set(QINS_EINPUT, "%s: workers[%s].replicas: the workers of a train pipeline cannot have replicas",
                            qins_cfg_where(r, w, sizeof w), opt_str(ws->items[i], "name"));
        goto out;
      }
    }
  }
  /* coverage: in chain order the ranges are consecutive from 0 to L */
  for (int i = 0, at = 0; i < np && !rc; i++) {
    if (ps[i].l0 != at)
      rc = qins_error_set(QINS_EINPUT, "%s: stages[%s].options.layers: %d:%d leaves layers %d:%d to no part",
                          qins_cfg_where(ps[i].node, w, sizeof w), ps[i].name, ps[i].l0, ps[i].l1, at, ps[i].l0);
    at = ps[i].l1;
    if (i == np - 1 && at != L)
      rc = qins_error_set(QINS_EINPUT, "%s: stages[%s].options.layers: %d:%d leaves layers %d:%d to no part",
                          qins_cfg_where(ps[i].node, w, sizeof w), ps[i].name, ps[i].l0, ps[i].l1, at, L);
  }
out:
  free(ps);
  tf_settings_free(&s);
  return rc;
}

/* ------------------------------------------------------------------ checkpoint files */


/* Same tensor names and metadata keys as `qins train`'s optim.safetensors, plus the part's
 * weights under their model names. */
int tf_part_save(const char *path, qins_optim *o, int64_t step, int qins, const qins_train_model *tm,
                 const unsigned char *own) {
  int np = qins_optim_count(o), nw = qins_train_model_count(tm);
  int cap = 4 * np + nw;
  qins_st_entry *e = calloc((size_t)cap + 1, sizeof *e);
  char (*names)[QINS_NAME_MAX + 8] = calloc((size_t)cap + 1, QINS_NAME_MAX + 8);
  int64_t(*shapes)[1] = calloc((size_t)cap + 1, sizeof *shapes);
  int nmeta = 2 * (8 + 2 * np) + 1;
  char **meta = calloc((size_t)nmeta, sizeof *meta);
  int rc = 0, n = 0, k = 0;
  if (!e || !names || !shapes || !meta) {
    rc = qins_error_set(QINS_ENOMEM, "no memory");
    goto done;
  }
  for (int i = 0; i < nw; i++) {
    if (!own[i]) continue;
    const qins_train_param *p = qins_train_model_param(tm, i);
    e[n++] = (qins_st_entry){p->name, QINS_DT_F32, p->ndim, p->shape, p->w};
  }
  for (int i = 0; i < np; i++) qins_train_optim_param_entries(o, i, e, names, shapes, &n, meta, &k);
  qins_optim_state os;
  qins_optim_get_state(o, &os);
  char v[6][64];
  snprintf(v[0], 64, "%lld", (long long)step);
  snprintf(v[1], 64, "%lld", (long long)os.steps);
  snprintf(v[2], 64, "%a", (double)os.lr_factor);
  snprintf(v[3], 64, "%a", os.norm_ema);
  snprintf(v[4], 64, "%d", os.norm_count);
  snprintf(v[5], 64, "%s", qins ? "qins-adamw" : "adamw");
  static const char *keys[6] = {"step", "optim.steps", "optim.lr_factor", "optim.norm_ema", "optim.norm_count",
                                "optim.kind"};
  for (int q = 0; q < 6; q++) {
    meta[k++] = strdup(keys[q]);
    meta[k++] = strdup(v[q]);
  }
  for (int q = 0; q < k; q++)
    if (!meta[q]) {
      rc = qins_error_set(QINS_ENOMEM, "no memory");
      goto done;
    }
  /* written under a temporary name and renamed: a kill mid-write never leaves half a file */
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  rc = qins_st_write(tmp, e, n, (const char *const *)meta);
  if (!rc && rename(tmp, path) != 0) rc = qins_error_set(QINS_EIO, "%s: rename: %s", path, strerror(errno));
done:
  if (meta)
    for (int q = 0; q < nmeta && meta[q]; q++) free(meta[q]);
  free(meta);
  free(shapes);
  free(names);
  free(e);
  return rc;
}

int tf_part_load_weights(const char *path, qins_train_model *tm) {
  qins_st_file *f = NULL;
  int rc = qins_st_open(path, &f);
  if (rc) return rc;
  for (int i = 0; i < qins_train_model_count(tm); i++) {
    const qins_train_param *p = qins_train_model_param(tm, i);
    const qins_st_tensor *t = qins_st_find(f, p->name);
    if (!t) continue;
    if (t->dtype != QINS_DT_F32 || t->nbytes != (size_t)p->n * sizeof(float)) {
      rc = qins_error_set(QINS_EINPUT, "%s: tensor %s is not f32 [%lld]", path, p->name, (long long)p->n);
      break;
    }
    memcpy(p->w, t->data, t->nbytes);
  }
  qins_st_close(f);
  return rc;
}

static int meta_num(const qins_st_file *f, const char *key, double *out) {
  const char *s = qins_st_meta(f, key);
  if (!s) return qins_error_set(QINS_EINPUT, "%s: metadata key '%s' missing", f->path, key);
  char *end;
  *out = strtod(s, &end);
  if (*end) return qins_error_set(QINS_EINPUT, "%s: metadata %s = '%s' is not a number", f->path, key, s);
  return 0;
}

int tf_part_load_optim(const char *path, qins_optim *o, int qins, int64_t *step) {
  qins_st_file *f = NULL;
  int rc = qins_st_open(path, &f);
  if (rc) return rc;
  double st = 0, osteps = 0, lrf = 1, ema = 0, ncount = 0;
  const char *kind = qins_st_meta(f, "optim.kind");
  if ((rc = meta_num(f, "step", &st)) || (rc = meta_num(f, "optim.steps", &osteps)) ||
      (rc = meta_num(f, "optim.lr_factor", &lrf)) || (rc = meta_num(f, "optim.norm_ema", &ema)) ||
      (rc = meta_num(f, "optim.norm_count", &ncount)))
    goto done;
  if (!kind || strcmp(kind, qins ? "qins-adamw" : "adamw")) {
    rc = qins_error_set(QINS_EINPUT, "%s: checkpoint optimizer '%s' differs from the config's %s", path,
                        kind ? kind : "?", qins ? "qins-adamw" : "adamw");
    goto done;
  }
  for (int i = 0; i < qins_optim_count(o); i++) {
    qins_optim_param_state ps;
    qins_optim_param_state_get(o, i, &ps);
    const char *pn = qins_optim_name(o, i);
    struct {
      const char *suffix;
      float *data;
      int64_t len;
    } parts[4] = {{"m", ps.m, ps.n}, {"v", ps.v, ps.n}, {"z", ps.z, ps.n}, {"alpha", ps.alpha, ps.rows}};
    for (int q = 0; q < 4; q++) {
      if (!parts[q].data) continue;
      char nm[QINS_NAME_MAX + 8];
      snprintf(nm, sizeof nm, "%s.%s", pn, parts[q].suffix);
      const qins_st_tensor *te = qins_st_find(f, nm);
      if (!te || te->dtype != QINS_DT_F32 || te->nbytes != (size_t)parts[q].len * sizeof(float)) {
        rc = qins_error_set(QINS_EINPUT, "%s: tensor %s missing or not f32 [%lld]", path, nm, (long long)parts[q].len);
        goto done;
      }
      memcpy(parts[q].data, te->data, te->nbytes);
    }
    char kb[QINS_NAME_MAX + 8];
    double tt = 0, fl = 0;
    snprintf(kb, sizeof kb, "t.%s", pn);
    if ((rc = meta_num(f, kb, &tt))) goto done;
    snprintf(kb, sizeof kb, "flag.%s", pn);
    if ((rc = meta_num(f, kb, &fl))) goto done;
    *ps.t = (int64_t)tt;
    *ps.flagged = (int)fl;
    qins_optim_refresh_weights(o, i);
  }
  qins_optim_state os = {(int64_t)osteps, (float)lrf, ema, (int)ncount};
  qins_optim_set_state(o, &os);
  *step = (int64_t)st;
done:
  qins_st_close(f);
  return rc;
}

/* An optimizer tensor of a part file: "<weight>.m|.v|.z|.alpha" whose <weight> is in the file. */
static int is_optim_tensor(const qins_st_file *f, const char *name) {
  static const char *suffix[] = {".m", ".v", ".z", ".alpha"};
  size_t len = strlen(name);
  for (int i = 0; i < 4; i++) {
    size_t k = strlen(suffix[i]);
    if (len > k && !strcmp(name + len - k, suffix[i])) {
      char base[QINS_NAME_MAX];
      snprintf(base, sizeof base, "%.*s", (int)(len - k), name);
      if (qins_st_find(f, base)) return 1;
    }
  }
  return 0;
}

int tf_merge_weights(const char *dir, const tf_part_spec *specs, int n) {
  qins_st_file **f = calloc((size_t)n + 1, sizeof *f);
  int cap = 0, rc = 0, k = 0;
  qins_st_entry *e = NULL;
  if (!f) return qins_error_set(QINS_ENOMEM, "no memory");
  for (int i = 0; i < n && !rc; i++) {
    char p[1100];
    snprintf(p, sizeof p, "%s/part-%s.safetensors", dir, specs[i].name);
    if (!(rc = qins_st_open(p, &f[i]))) cap += f[i]->n_tensors;
  }
  if (!rc && !(e = calloc((size_t)cap + 1, sizeof *e))) rc = qins_error_set(QINS_ENOMEM, "no memory");
  for (int i = 0; i < n && !rc; i++)
    for (int t = 0; t < f[i]->n_tensors; t++) {
      const qins_st_tensor *x = &f[i]->tensors[t];
      if (is_optim_tensor(f[i], x->name)) continue;
      e[k++] = (qins_st_entry){x->name, x->dtype, x->ndim, x->shape, x->data};
    }
  if (!rc) {
    char p[1100], tmp[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    rc = qins_st_write(tmp, e, k, NULL);
    if (!rc && rename(tmp, p) != 0) rc = qins_error_set(QINS_EIO, "%s: rename: %s", p, strerror(errno));
  }
  for (int i = 0; i < n; i++)
    if (f[i]) qins_st_close(f[i]);
  free(f);
  free(e);
  return rc;
}
