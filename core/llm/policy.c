/* Coverage policy: YAML parsing (with file:line:col errors) and re-encoding a runtime's weights. */
#include "core/llm/policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/metrics.h"
#include "core/qins_codec.h"

static const char *const path_names[QINS_PATH_COUNT] = {"v_proj",   "o_proj",  "mlp_up",     "mlp_gate",
                                                        "mlp_down", "v_cache", "activations"};
/* Paths QINS.md section 5 keeps float: named so a policy that lists them gets a clear refusal. */
static const char *const float_only[] = {"q_proj", "k_proj", "qkv_proj", "norm", "norms", "embeddings", "embed",
                                         "lm_head", "softmax", NULL};

const char *qins_path_name(qins_path p) { return p >= 0 && p < QINS_PATH_COUNT ? path_names[p] : "?"; }

void qins_policy_init_fp(qins_policy *pol, int n_layers) {
  memset(pol, 0, sizeof *pol);
  pol->n_layers = n_layers > QINS_POLICY_MAX_LAYERS ? QINS_POLICY_MAX_LAYERS : n_layers;
  for (int l = 0; l < QINS_POLICY_MAX_LAYERS; l++)
    for (int p = 0; p < QINS_PATH_COUNT; p++) {
      pol->p[l][p].format = QINS_DT_F32;
      pol->p[l][p].alpha.mode = QINS_ALPHA_MSE;
    }
}

void qins_policy_init_uniform(qins_policy *pol, int n_layers, qins_dtype format, qins_alpha_spec alpha,
                              int with_vcache) {
  qins_policy_init_fp(pol, n_layers);
  for (int l = 0; l < pol->n_layers; l++) {
    for (int p = QINS_PATH_V; p <= QINS_PATH_DOWN; p++) {
      pol->p[l][p].format = format;
      pol->p[l][p].alpha = alpha;
    }
    if (with_vcache) {
      pol->p[l][QINS_PATH_VCACHE].format = QINS_DT_QINS8;
      pol->p[l][QINS_PATH_VCACHE].alpha = alpha;
    }
  }
}

static int path_index(const char *name) {
  for (int p = 0; p < QINS_PATH_COUNT; p++)
    if (!strcmp(name, path_names[p])) return p;
  return -1;
}

static int reject_float_only(const qins_cfg *key) {
  char w[256];
  for (int i = 0; float_only[i]; i++)
    if (!strcmp(key->value, float_only[i]))
      return qins_error_set(QINS_EINPUT,
                            "%s: policy: '%s' always stays float (QINS.md section 5: Q, K, norms, embeddings, "
                            "lm_head); QINS-eligible paths: v_proj, o_proj, mlp_up, mlp_gate, mlp_down, v_cache, "
                            "activations",
                            qins_cfg_where(key, w, sizeof w), key->value);
  return qins_error_set(QINS_EINPUT,
                        "%s: policy: unknown path '%s' (expected one of: v_proj, o_proj, mlp_up, mlp_gate, mlp_down, "
                        "v_cache, activations)",
                        qins_cfg_where(key, w, sizeof w), key->value);
}

static int parse_format(const qins_cfg *c, const char *what, qins_dtype *out) {
  const char *s;
  char w[256];
  int rc = qins_cfg_as_string(c, what, &s);
  if (rc) return rc;
  if (qins_dtype_parse(s, out) || *out == QINS_DT_I8 || *out == QINS_DT_U8 || *out == QINS_DT_I32)
    return qins_error_set(QINS_EINPUT,
                          "%s: %s: unknown format '%s' (expected f32, f16, bf16, qins-f32, qins8, qins6, int8-row, "
                          "int8-block32)",
                          qins_cfg_where(c, w, sizeof w), what, s);
  return 0;
}

static int parse_alpha(const qins_cfg *c, const char *what, qins_alpha_spec *out) {
  const char *s;
  char w[256];
  int rc = qins_cfg_as_string(c, what, &s);
  if (rc) return rc;
  if (qins_alpha_spec_parse(s, out))
    return qins_error_set(QINS_EINPUT, "%s: %s: bad alpha mode '%s' (mse, std:C, absmax, fixed:V)",
                          qins_cfg_where(c, w, sizeof w), what, s);
  return 0;
}

/* A path's setting: a scalar format, or a map {format, alpha, fallback}. */
static int parse_path_setting(const qins_cfg *v, const char *what, qins_path_policy *pp) {
  char w[256];
  if (v->type == QINS_CFG_SCALAR) return parse_format(v, what, &pp->format);
  if (v->type != QINS_CFG_MAP)
    return qins_error_set(QINS_EINPUT, "%s: %s: expected a format or a map {format, alpha, fallback}",
                          qins_cfg_where(v, w, sizeof w), what);
  static const char *const keys[] = {"format", "alpha", "fallback", NULL};
  int rc = qins_cfg_check_keys(v, what, keys);
  if (rc) return rc;
  qins_cfg *f = qins_cfg_get(v, "format"), *a = qins_cfg_get(v, "alpha"), *fb = qins_cfg_get(v, "fallback");
  if (f && (rc = parse_format(f, what, &pp->format))) return rc;
  if (a && (rc = parse_alpha(a, what, &pp->alpha))) return rc;
  if (fb && (rc = qins_cfg_as_bool(fb, what, &pp->fallback))) return rc;
  return 0;
}

/* "all", an int, "a-b", or a list of those, into mask[n_layers]. */
static int parse_layers(const qins_cfg *c, int n_layers, unsigned char *mask) {
  char w[256];
  if (c->type == QINS_CFG_SEQ) {
    for (int i = 0; i < c->n; i++) {
      int rc = parse_layers(c->items[i], n_layers, mask);
      if (rc) return rc;
    }
    return 0;
  }
  if (c->type != QINS_CFG_SCALAR)
    return qins_error_set(QINS_EINPUT, "%s: layers: expected all, N, A-B or a list", qins_cfg_where(c, w, sizeof w));
  if (!strcmp(c->value, "all")) {
    memset(mask, 1, (size_t)n_layers);
    return 0;
  }
  int a, b;
  char tail;
  if (sscanf(c->value, "%d-%d%c", &a, &b, &tail) == 2) {
  } else if (sscanf(c->value, "%d%c", &a, &tail) == 1) {
    b = a;
  } else {
    return qins_error_set(QINS_EINPUT, "%s: layers: '%s' is not all, N or A-B", qins_cfg_where(c, w, sizeof w),
                          c->value);
  }
  if (a < 0 || b < a || b >= n_layers)
    return qins_error_set(QINS_EINPUT, "%s: layers: '%s' outside the model's layers 0..%d",
                          qins_cfg_where(c, w, sizeof w), c->value, n_layers - 1);
  for (int i = a; i <= b; i++) mask[i] = 1;
  return 0;
}

int qins_policy_parse(const qins_cfg *node, int n_layers, qins_policy *pol) {
  char w[256];
  if (n_layers < 1 || n_layers > QINS_POLICY_MAX_LAYERS)
    return qins_error_set(QINS_EINVAL, "policy: %d layers (1..%d supported)", n_layers, QINS_POLICY_MAX_LAYERS);
  qins_policy_init_fp(pol, n_layers);
  if (!node) return 0;
  if (node->type != QINS_CFG_MAP)
    return qins_error_set(QINS_EINPUT, "%s: policy: expected a map", qins_cfg_where(node, w, sizeof w));
  /* every key is either a policy key or a path name (paths: shorthand at top level) */
  int rc;
  qins_path_policy def = {QINS_DT_QINS8, {QINS_ALPHA_MSE, 0}, 0};
  qins_cfg *f = qins_cfg_get(node, "format"), *a = qins_cfg_get(node, "alpha");
  if (f && (rc = parse_format(f, "policy.format", &def.format))) return rc;
  if (a && (rc = parse_alpha(a, "policy.alpha", &def.alpha))) return rc;
  qins_path_policy base[QINS_PATH_COUNT];
  for (int p = 0; p < QINS_PATH_COUNT; p++) base[p] = pol->p[0][p];
  qins_cfg *paths = qins_cfg_get(node, "paths");
  if (!paths) {
    for (int p = QINS_PATH_V; p <= QINS_PATH_DOWN; p++) base[p] = def;
  } else if (paths->type == QINS_CFG_SEQ) {
    for (int i = 0; i < paths->n; i++) {
      qins_cfg *it = paths->items[i];
      int p = it->type == QINS_CFG_SCALAR ? path_index(it->value) : -1;
      if (p < 0) {
        if (it->type == QINS_CFG_SCALAR) return reject_float_only(it);
        return qins_error_set(QINS_EINPUT, "%s: policy.paths: expected path names", qins_cfg_where(it, w, sizeof w));
      }
      base[p] = def;
    }
  } else if (paths->type == QINS_CFG_MAP) {
    for (int i = 0; i < paths->n; i++) {
      int p = path_index(paths->keys[i]->value);
      if (p < 0) return reject_float_only(paths->keys[i]);
      base[p] = def;
      char what[96];
      snprintf(what, sizeof what, "policy.paths.%s", path_names[p]);
      if ((rc = parse_path_setting(paths->items[i], what, &base[p]))) return rc;
    }
  } else {
    return qins_error_set(QINS_EINPUT, "%s: policy.paths: expected a list or a map", qins_cfg_where(paths, w, sizeof w));
  }
  for (int i = 0; i < node->n; i++) {
    const char *k = node->keys[i]->value;
    if (!strcmp(k, "format") || !strcmp(k, "alpha") || !strcmp(k, "paths") || !strcmp(k, "layers") ||
        !strcmp(k, "name") || !strcmp(k, "description"))
      continue;
    int p = path_index(k);
    if (p < 0) return reject_float_only(node->keys[i]);
    char what[96];
    snprintf(what, sizeof what, "policy.%s", k);
    base[p].alpha = def.alpha;
    if ((rc = parse_path_setting(node->items[i], what, &base[p]))) return rc;
  }
  for (int l = 0; l < n_layers; l++)
    for (int p = 0; p < QINS_PATH_COUNT; p++) pol->p[l][p] = base[p];
  qins_cfg *layers = qins_cfg_get(node, "layers");
  if (layers) {
    if (layers->type != QINS_CFG_SEQ)
      return qins_error_set(QINS_EINPUT, "%s: policy.layers: expected a list of {layers: ..., PATH: ...}",
                            qins_cfg_where(layers, w, sizeof w));
    for (int i = 0; i < layers->n; i++) {
      qins_cfg *ov = layers->items[i];
      if (ov->type != QINS_CFG_MAP)
        return qins_error_set(QINS_EINPUT, "%s: policy.layers[%d]: expected a map", qins_cfg_where(ov, w, sizeof w), i);
      qins_cfg *sel = qins_cfg_get(ov, "layers");
      if (!sel)
        return qins_error_set(QINS_EINPUT, "%s: policy.layers[%d]: missing 'layers' (all, N, A-B)",
                              qins_cfg_where(ov, w, sizeof w), i);
      unsigned char mask[QINS_POLICY_MAX_LAYERS] = {0};
      if ((rc = parse_layers(sel, n_layers, mask))) return rc;
      int fallback_all = -1;
      for (int j = 0; j < ov->n; j++) {
        const char *k = ov->keys[j]->value;
        if (!strcmp(k, "layers")) continue;
        if (!strcmp(k, "fallback")) {
          if ((rc = qins_cfg_as_bool(ov->items[j], "policy.layers.fallback", &fallback_all))) return rc;
          continue;
        }
        int p = path_index(k);
        if (p < 0) return reject_float_only(ov->keys[j]);
        char what[96];
        snprintf(what, sizeof what, "policy.layers[%d].%s", i, k);
        for (int l = 0; l < n_layers; l++)
          if (mask[l] && (rc = parse_path_setting(ov->items[j], what, &pol->p[l][p]))) return rc;
      }
      if (fallback_all >= 0)
        for (int l = 0; l < n_layers; l++)
          if (mask[l])
            for (int p = 0; p < QINS_PATH_COUNT; p++) pol->p[l][p].fallback = fallback_all;
    }
  }
  return 0;
}

void qins_policy_describe(const qins_policy *pol, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  for (int p = 0; p < QINS_PATH_COUNT; p++) {
    int count = 0, mixed = 0;
    qins_dtype fmt = QINS_DT_F32;
    qins_alpha_spec al = {QINS_ALPHA_MSE, 0};
    for (int l = 0; l < pol->n_layers; l++) {
      const qins_path_policy *pp = &pol->p[l][p];
      if (pp->format != QINS_DT_F32 && !pp->fallback) {
        if (!count) fmt = pp->format, al = pp->alpha;
        else if (pp->format != fmt || pp->alpha.mode != al.mode || pp->alpha.value != al.value) mixed = 1;
        count++;
      }
    }
    if (!count) continue;
    char as[48];
    int w = snprintf(buf + used, n - used, "%s%s:%s(%s)%s", used ? " " : "", path_names[p], qins_dtype_name(fmt),
                     qins_alpha_spec_format(al, as, sizeof as), mixed                      ? "[per-layer formats differ]"
                     : count == pol->n_layers ? ""
                                              : "[some layers]");
    if (w < 0 || (size_t)w >= n - used) break;
    used += (size_t)w;
  }
  if (!used) snprintf(buf, n, "all f32");
}

/* ---------------------------------------------------------------- applying */

struct qins_policy_state {
  int n;
  qins_buf *bufs[QINS_POLICY_MAX_LAYERS * 10];
  int n_scales;
  qins_tensor *scales[QINS_POLICY_MAX_LAYERS * 5];
  int64_t bytes, orig_bytes;
};

void qins_policy_state_free(qins_policy_state *st) {
  if (!st) return;
  for (int i = 0; i < st->n; i++) qins_buf_free(st->bufs[i]);
  for (int i = 0; i < st->n_scales; i++) free(st->scales[i]);
  free(st);
}

int64_t qins_policy_state_bytes(const qins_policy_state *st, int64_t *orig_bytes) {
  if (orig_bytes) *orig_bytes = st ? st->orig_bytes : 0;
  return st ? st->bytes : 0;
}

static int upload(qins_policy_state *st, qins_backend *be, const void *host, size_t bytes, qins_buf **out) {
  int rc = qins_buf_alloc(be, bytes ? bytes : 4, out);
  if (rc) return rc;
  st->bufs[st->n++] = *out;
  return qins_buf_write(*out, 0, host, bytes);
}

int qins_policy_state_new(qins_policy_state **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : QINS_ENOMEM;
}

int qins_policy_state_set_matrix(qins_policy_state *st, qins_backend *be, qins_tensor *t, qins_dtype format,
                                 const void *codes, const float *scales) {
  int64_t rows = t->shape[0], cols = t->shape[1];
  int64_t ns = qins_format_scale_count(format, rows, cols);
  size_t code_bytes = (size_t)rows * qins_format_row_bytes(format, cols);
  if (st->n + 2 > (int)(sizeof st->bufs / sizeof st->bufs[0]) ||
      st->n_scales + 1 > (int)(sizeof st->scales / sizeof st->scales[0]))
    return qins_error_set(QINS_EINVAL, "policy: too many re-encoded matrices");
  qins_buf *b;
  int rc = upload(st, be, codes, code_bytes, &b);
  if (rc) return rc;
  qins_tensor *s = NULL;
  if (ns > 0) {
    s = calloc(1, sizeof *s);
    if (!s) return QINS_ENOMEM;
    st->scales[st->n_scales++] = s;
    snprintf(s->name, sizeof s->name, "%.*s scale", (int)sizeof s->name - 8, t->name);
    s->dtype = QINS_DT_F32;
    s->ndim = format == QINS_DT_INT8_B32 ? 2 : 1;
    s->shape[0] = s->ndim == 2 ? rows : ns;
    s->shape[1] = s->ndim == 2 ? ns / rows : 0;
    if ((rc = upload(st, be, scales, (size_t)ns * 4, &s->buf))) return rc;
  }
  st->bytes += (int64_t)code_bytes + ns * 4;
  t->dtype = format;
  t->buf = b;
  t->offset = 0;
  t->scale = s;
  return 0;
}

static float to_f32(const void *base, qins_dtype dt, int64_t i) {
  if (dt == QINS_DT_F16) return qins_f16_to_f32(((const uint16_t *)base)[i]);
  if (dt == QINS_DT_BF16) return qins_bf16_to_f32(((const uint16_t *)base)[i]);
  return ((const float *)base)[i];
}


/* For the dashboard (docs/dashboard.md): the codes a re-encoded tensor uses and |decode - w| per
 * weight, as histograms qins_codes / qins_recon_error{tensor, format}. Counted here and set in one
 * call (a lock per weight would cost more than the encode); set, not added, so applying the same
 * policy twice (gates build several branches) publishes the same numbers. Bucket bounds are code
 * values: one per code for qins6, groups of 4 codes for the 256-code formats (64 buckets at most). */
enum { ERR_BOUNDS = 13, CODE_BUCKETS = 64 };

static void publish_tensor(const char *name, qins_dtype fmt, const float *x, const float *y, const void *codes,
                           int64_t rows, int64_t cols) {
  char lab[QINS_NAME_MAX + 64], clean[QINS_NAME_MAX];
  size_t k = 0;
  for (const char *c = name; *c && k + 1 < sizeof clean; c++) clean[k++] = (*c == '"' || *c == '\\') ? '_' : *c;
  clean[k] = 0;
  snprintf(lab, sizeof lab, "tensor=\"%s\",format=\"%s\"", clean, qins_dtype_name(fmt));
  int64_t n = rows * cols;
  double eb[ERR_BOUNDS];
  for (int i = 0; i < ERR_BOUNDS; i++) eb[i] = pow(10.0, -7.0 + 0.5 * i);
  uint64_t ec[ERR_BOUNDS + 1] = {0};
  double esum = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)y[i] - (double)x[i]);
    int b = 0;
    while (b < ERR_BOUNDS && !(e <= eb[b])) b++; /* NaN: +Inf bucket */
    ec[b]++;
    if (!isnan(e)) esum += e;
  }
  qins_metric_histogram_set(
      qins_metric_histogram("qins_recon_error", "Absolute reconstruction error per weight.", lab, eb, ERR_BOUNDS), ec,
      ERR_BOUNDS + 1, esum);
  int lo, width, n_codes;
  if (fmt == QINS_DT_QINS6) lo = 0, width = 1, n_codes = 64;
  else if (fmt == QINS_DT_QINS8) lo = 0, width = 4, n_codes = 256;
  else if (fmt == QINS_DT_INT8_ROW || fmt == QINS_DT_INT8_B32) lo = -127, width = 4, n_codes = 255;
  else return; /* qins-f32, f16, bf16 store values, not codes */
  int nb = (n_codes + width - 1) / width; /* buckets, the last one +Inf */
  double cb[CODE_BUCKETS];
  for (int i = 0; i < nb - 1; i++) cb[i] = lo + width * (i + 1) - 1;
  uint64_t cc[CODE_BUCKETS] = {0};
  double csum = 0;
  size_t rb = qins_format_row_bytes(fmt, cols);
  uint8_t *row6 = fmt == QINS_DT_QINS6 ? malloc((size_t)cols) : NULL;
  if (fmt == QINS_DT_QINS6 && !row6) return;
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t *src = (const uint8_t *)codes + (size_t)r * rb;
    if (row6) qins_codec_unpack6(src, cols, row6), src = row6;
    for (int64_t c = 0; c < cols; c++) {
      int q = fmt == QINS_DT_INT8_ROW || fmt == QINS_DT_INT8_B32 ? (int)(int8_t)src[c] : (int)src[c];
      int b = (q - lo) / width;
      cc[b < 0 ? 0 : b >= nb ? nb - 1 : b]++;
      csum += q;
    }
  }
  free(row6);
  qins_metric_histogram_set(qins_metric_histogram("qins_codes", "QINS codes used by a tensor.", lab, cb, nb - 1), cc,
                            nb, csum);
}

static int encode_matrix(qins_policy_state *st, qins_backend *be, qins_tensor *t, const qins_path_policy *pp,
                         int unfused) {
  if (t->dtype != QINS_DT_F32 && t->dtype != QINS_DT_F16 && t->dtype != QINS_DT_BF16)
    return qins_error_set(QINS_EINVAL, "policy: %s is already %s", t->name, qins_dtype_name(t->dtype));
  int64_t rows = t->shape[0], cols = t->shape[1];
  size_t es = qins_dtype_size(t->dtype), n = (size_t)(rows * cols);
  void *raw = malloc(n * es);
  float *x = malloc(n * sizeof(float)), *y = NULL;
  int64_t ns = qins_format_scale_count(pp->format, rows, cols);
  float *scales = malloc((size_t)(ns > 0 ? ns : 1) * sizeof(float));
  size_t code_bytes = (size_t)rows * qins_format_row_bytes(pp->format, cols);
  void *codes = malloc(code_bytes ? code_bytes : 1);
  int rc = QINS_ENOMEM;
  if (!raw || !x || !scales || !codes) goto done;
  if ((rc = qins_buf_read(t->buf, t->offset, raw, n * es))) goto done;
  for (size_t i = 0; i < n; i++) x[i] = to_f32(raw, t->dtype, (int64_t)i);
  st->orig_bytes += (int64_t)(n * es);
  if (qins_dtype_is_qins(pp->format))
    for (int64_t r = 0; r < rows; r++) scales[r] = qins_codec_calibrate_row(x + r * cols, cols, pp->format, pp->alpha);
  if ((rc = qins_codec_encode(pp->format, x, rows, cols, qins_dtype_is_qins(pp->format) ? scales : NULL, codes,
                              scales)))
    goto done;
  st->bytes += (int64_t)code_bytes + ns * 4;
  qins_buf *b;
  y = malloc(n * sizeof(float));
  if (!y) {
    rc = QINS_ENOMEM;
    goto done;
  }
  if ((rc = qins_codec_decode(pp->format, codes, rows, cols, scales, y))) goto done;
  publish_tensor(t->name, pp->format, x, y, codes, rows, cols);
  if (unfused && pp->format != QINS_DT_F16 && pp->format != QINS_DT_BF16) {
    /* decode once at load: the f32 matmul then sees exactly the stored weights */
    if ((rc = upload(st, be, y, n * sizeof(float), &b))) goto done;
    t->dtype = QINS_DT_F32;
    t->buf = b;
    t->offset = 0;
    t->scale = NULL;
  } else {
    if ((rc = upload(st, be, codes, code_bytes, &b))) goto done;
    t->dtype = pp->format;
    t->buf = b;
    t->offset = 0;
    t->scale = NULL;
    if (ns > 0) {
      qins_tensor *s = calloc(1, sizeof *s);
      if (!s) {
        rc = QINS_ENOMEM;
        goto done;
      }
      st->scales[st->n_scales++] = s;
      int64_t shape[2] = {rows, ns / rows};
      snprintf(s->name, sizeof s->name, "%.*s scale", (int)sizeof s->name - 8, t->name);
      s->dtype = QINS_DT_F32;
      s->ndim = pp->format == QINS_DT_INT8_B32 ? 2 : 1;
      s->shape[0] = s->ndim == 2 ? shape[0] : ns;
      s->shape[1] = s->ndim == 2 ? shape[1] : 0;
      if ((rc = upload(st, be, scales, (size_t)ns * 4, &s->buf))) goto done;
      t->scale = s;
    }
  }
  rc = 0;
done:
  free(raw);
  free(x);
  free(y);
  free(scales);
  free(codes);
  return rc;
}

int qins_policy_apply(qins_llm *llm, qins_backend *be, const qins_policy *pol, int unfused, qins_policy_state **out) {
  *out = NULL;
  const qins_model_config *c = qins_llm_config(llm);
  if (pol->n_layers != c->n_layers)
    return qins_error_set(QINS_EINVAL, "policy: written for %d layers, the model has %d", pol->n_layers, c->n_layers);
  qins_policy_state *st = calloc(1, sizeof *st);
  if (!st) return QINS_ENOMEM;
  static const qins_llm_mat mats[] = {QINS_LLM_WV, QINS_LLM_WO, QINS_LLM_WUP, QINS_LLM_WGATE, QINS_LLM_WDOWN};
  int rc = 0;
  for (int l = 0; l < c->n_layers && !rc; l++) {
    for (int p = QINS_PATH_V; p <= QINS_PATH_DOWN && !rc; p++) {
      const qins_path_policy *pp = &pol->p[l][p];
      if (pp->fallback || pp->format == QINS_DT_F32) continue;
      qins_tensor *t = qins_llm_matrix(llm, l, mats[p]);
      if (!t) continue; /* GPT-2 has no gate */
      if ((rc = encode_matrix(st, be, t, pp, unfused))) rc = qins_error_wrap(rc, "policy: layer %d %s: ", l, path_names[p]);
    }
    /* V cache: a QINS format switches the layer's caches (the runtime's and the pipeline caches
     * made afterwards); an FP fallback switches back, overriding a kv_store's v_format */
    const qins_path_policy *vc = &pol->p[l][QINS_PATH_VCACHE];
    if (!rc && vc->fallback) rc = qins_llm_set_vcache(llm, l, QINS_DT_F32, vc->alpha);
    else if (!rc && vc->format != QINS_DT_F32) rc = qins_llm_set_vcache(llm, l, vc->format, vc->alpha);
    const qins_path_policy *ac = &pol->p[l][QINS_PATH_ACT];
    if (!rc && !ac->fallback && ac->format != QINS_DT_F32)
      rc = qins_error_set(QINS_EUNSUPPORTED,
                          "policy: layer %d activations: %s at rest applies between pipeline stages in different "
                          "workers; a single runtime keeps activations f32 (set activations: f32 or fallback)",
                          l, qins_dtype_name(ac->format));
  }
  if (rc) {
    qins_policy_state_free(st);
    return rc;
  }
  *out = st;
  return 0;
}
