/* The A1 codec report: round trips of every weight through every storage format, measured. */
#include "core/codec_report.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

static qins_mem_owner *owner(void) { return qins_mem_owner_get("codec.report"); }

static const qins_dtype default_formats[] = {QINS_DT_QINS_F32, QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_INT8_ROW,
                                             QINS_DT_INT8_B32, QINS_DT_F16,   QINS_DT_BF16};

int qins_codec_report_parse_formats(const char *list, qins_codec_report_opts *opts) {
  opts->n_formats = 0;
  const char *p = list;
  while (*p) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char name[32];
    if (len == 0 || len >= sizeof name) return qins_error_set(QINS_EINPUT, "--formats '%s': empty or overlong entry", list);
    memcpy(name, p, len);
    name[len] = 0;
    qins_dtype dt;
    if (qins_dtype_parse(name, &dt) != 0 ||
        !(qins_dtype_is_quantized(dt) || dt == QINS_DT_F16 || dt == QINS_DT_BF16 || dt == QINS_DT_F32))
      return qins_error_set(QINS_EINPUT,
                            "--formats: '%s' is not a storage format (qins-f32, qins8, qins6, int8-row, int8-block32, "
                            "f16, bf16, f32)", name);
    for (int i = 0; i < opts->n_formats; i++)
      if (opts->formats[i] == dt) return qins_error_set(QINS_EINPUT, "--formats: '%s' listed twice", name);
    if (opts->n_formats == QINS_CODEC_REPORT_MAX_FORMATS)
      return qins_error_set(QINS_EINPUT, "--formats: at most %d formats", QINS_CODEC_REPORT_MAX_FORMATS);
    opts->formats[opts->n_formats++] = dt;
    p += len;
    if (*p == ',') p++;
  }
  if (!opts->n_formats) return qins_error_set(QINS_EINPUT, "--formats: empty list");
  return 0;
}

/* ---------------------------------------------------------------- one tensor, one format */

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

/* Error measures of y (decoded) against x (original). */
static void measure(const float *x, const float *y, int64_t n, qins_codec_metrics *m) {
  double dot = 0, xx = 0, yy = 0, e2 = 0, max_abs = 0, max_rel = 0;
  int64_t exact = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t bx, by;
    memcpy(&bx, &x[i], 4);
    memcpy(&by, &y[i], 4);
    exact += bx == by;
    if (!isfinite(x[i])) continue; /* counted by the caller; the policy decides their code */
    double xv = x[i], yv = y[i], e = yv - xv;
    if (!isfinite(yv)) e = INFINITY;
    dot += xv * yv;
    xx += xv * xv;
    yy += yv * yv;
    e2 += e * e;
    double ae = fabs(e);
    if (ae > max_abs) max_abs = ae;
    double re = ae / fmax(1.0, fabs(xv));
    if (re > max_rel) max_rel = re;
  }
  m->elements = n;
  m->cosine = (xx == 0 && yy == 0) ? 1.0 : (xx == 0 || yy == 0) ? 0.0 : dot / sqrt(xx * yy);
  m->max_abs_err = max_abs;
  m->max_rel_err = max_rel;
  m->nmse = xx > 0 ? e2 / xx : (e2 > 0 ? INFINITY : 0.0);
  m->bit_exact = n ? (double)exact / (double)n : 1.0;
  m->sum_err2 = e2;
  m->sum_x2 = xx;
  m->exact_count = exact;
}

int qins_codec_measure(qins_backend *be, const float *x, int64_t rows, int64_t cols, qins_dtype format,
                       qins_alpha_spec spec, qins_codec_metrics *out) {
  memset(out, 0, sizeof *out);
  out->format = format;
  int64_t shape[2] = {rows, cols}, n = rows * cols;
  int64_t nsc = qins_format_scale_count(format, rows, cols);
  qins_tensor tx, ty, tc, ts;
  int rc;
  float *y = NULL, *alpha = NULL;
  memset(&tx, 0, sizeof tx); memset(&ty, 0, sizeof ty); memset(&tc, 0, sizeof tc); memset(&ts, 0, sizeof ts);
  if ((rc = qins_tensor_init(&tx, "x", QINS_DT_F32, 2, shape)) || (rc = qins_tensor_init(&ty, "y", QINS_DT_F32, 2, shape)) ||
      (rc = qins_tensor_init(&tc, "coded", format, 2, shape)))
    return rc;
  if (nsc) {
    int64_t sshape[1] = {nsc};
    if ((rc = qins_tensor_init(&ts, "scales", QINS_DT_F32, 1, sshape))) return rc;
    tc.scale = &ts;
  }
  y = qins_mem_alloc(owner(), (size_t)n * sizeof(float) + 4);
  alpha = qins_mem_alloc(owner(), (size_t)rows * sizeof(float) + 4);
  if (!y || !alpha) { rc = QINS_ENOMEM; goto done; }
  if ((rc = qins_tensor_alloc(be, &tx)) || (rc = qins_tensor_alloc(be, &ty)) || (rc = qins_tensor_alloc(be, &tc)))
    goto done;
  if ((rc = qins_tensor_write(&tx, x))) goto done;
  if (qins_dtype_is_qins(format)) {
    if ((rc = qins_op_calibrate(be, &tx, format, spec, &ts))) goto done;
  }
  if ((rc = qins_op_quantize(be, &tx, &tc)) || (rc = qins_op_dequantize(be, &tc, &ty))) goto done;
  if ((rc = qins_tensor_read(&ty, y))) goto done;
  measure(x, y, n, out);
  out->bytes = qins_tensor_nbytes(&tc) + (size_t)nsc * sizeof(float);
  if (qins_dtype_is_qins(format) && rows > 0) {
    if ((rc = qins_tensor_read(&ts, alpha))) goto done;
    qsort(alpha, (size_t)rows, sizeof(float), cmp_float);
    out->alpha_min = alpha[0];
    out->alpha_max = alpha[rows - 1];
    out->alpha_median = rows % 2 ? alpha[rows / 2] : 0.5 * ((double)alpha[rows / 2 - 1] + alpha[rows / 2]);
  }
  if (format == QINS_DT_QINS_F32) {
    out->gated = 1;
    out->a1_pass = out->cosine >= QINS_A1_MIN_COSINE && out->max_rel_err <= QINS_A1_MAX_REL_ERR;
  }
done:
  qins_tensor_free(&tc); /* frees the scales too */
  qins_tensor_free(&ty);
  qins_tensor_free(&tx);
  qins_mem_free(owner(), y);
  qins_mem_free(owner(), alpha);
  return rc;
}

/* ---------------------------------------------------------------- whole models */

static int to_f32(const qins_weight *w, float *dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    switch (w->dtype) {
    case QINS_DT_F32: dst[i] = ((const float *)w->data)[i]; break;
    case QINS_DT_F16: dst[i] = qins_f16_to_f32(((const uint16_t *)w->data)[i]); break;
    case QINS_DT_BF16: dst[i] = qins_bf16_to_f32(((const uint16_t *)w->data)[i]); break;
    default: return QINS_EUNSUPPORTED;
    }
  }
  return 0;
}

int qins_codec_report_weights(qins_backend *be, const char *label, const qins_weight *w, int n,
                              const qins_codec_report_opts *opts, qins_codec_report **out) {
  *out = NULL;
  qins_codec_report *r = qins_mem_calloc(owner(), 1, sizeof *r);
  if (!r) return QINS_ENOMEM;
  snprintf(r->model, sizeof r->model, "%s", label ? label : "");
  snprintf(r->backend, sizeof r->backend, "%s", be->name);
  snprintf(r->device, sizeof r->device, "%s", be->device_name);
  r->alpha = opts->alpha;
  if (opts->n_formats > 0) {
    r->n_formats = opts->n_formats > QINS_CODEC_REPORT_MAX_FORMATS ? QINS_CODEC_REPORT_MAX_FORMATS : opts->n_formats;
    memcpy(r->formats, opts->formats, sizeof(qins_dtype) * (size_t)r->n_formats);
  } else {
    r->n_formats = (int)(sizeof default_formats / sizeof default_formats[0]);
    memcpy(r->formats, default_formats, sizeof default_formats);
  }
  r->tensors = qins_mem_calloc(owner(), (size_t)(n > 0 ? n : 1), sizeof *r->tensors);
  if (!r->tensors) {
    qins_mem_free(owner(), r);
    return QINS_ENOMEM;
  }
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) {
    const qins_weight *wt = &w[i];
    if (wt->dtype != QINS_DT_F32 && wt->dtype != QINS_DT_F16 && wt->dtype != QINS_DT_BF16) continue; /* ids, masks */
    qins_codec_tensor_report *t = &r->tensors[r->n_tensors];
    snprintf(t->name, sizeof t->name, "%s", wt->name);
    t->dtype = wt->dtype;
    t->ndim = wt->ndim;
    int64_t numel = 1;
    for (int d = 0; d < wt->ndim; d++) {
      t->shape[d] = wt->shape[d];
      numel *= wt->shape[d];
    }
    t->cols = wt->ndim > 0 ? wt->shape[wt->ndim - 1] : 1;
    t->rows = t->cols ? numel / t->cols : 0;
    if (numel == 0) continue;
    float *x = qins_mem_alloc(owner(), (size_t)numel * sizeof(float));
    if (!x) { rc = QINS_ENOMEM; break; }
    to_f32(wt, x, numel);
    for (int64_t k = 0; k < numel; k++) {
      t->nan_count += isnan(x[k]) != 0;
      t->inf_count += isinf(x[k]) != 0;
    }
    for (int f = 0; f < r->n_formats && !rc; f++) {
      rc = qins_codec_measure(be, x, t->rows, t->cols, r->formats[f], r->alpha, &t->m[f]);
      if (rc) qins_error_wrap(rc, "tensor %s (%s): ", t->name, qins_dtype_name(r->formats[f]));
    }
    qins_mem_free(owner(), x);
    r->nan_count += t->nan_count;
    r->inf_count += t->inf_count;
    r->n_tensors++;
  }
  if (rc) {
    qins_codec_report_free(r);
    return rc;
  }
  /* summaries */
  r->a1_pass = 1;
  for (int f = 0; f < r->n_formats; f++) {
    qins_codec_summary *s = &r->summary[f];
    s->format = r->formats[f];
    s->min_cosine = 1.0;
    double e2 = 0, x2 = 0;
    int64_t exact = 0;
    for (int i = 0; i < r->n_tensors; i++) {
      const qins_codec_metrics *m = &r->tensors[i].m[f];
      s->tensors++;
      s->elements += m->elements;
      if (m->cosine < s->min_cosine) s->min_cosine = m->cosine;
      if (m->max_abs_err > s->max_abs_err) s->max_abs_err = m->max_abs_err;
      if (m->max_rel_err > s->max_rel_err) s->max_rel_err = m->max_rel_err;
      e2 += m->sum_err2;
      x2 += m->sum_x2;
      exact += m->exact_count;
      s->bytes += m->bytes;
      if (m->gated) {
        s->gated = 1;
        s->a1_passed += m->a1_pass;
      }
    }
    s->nmse = x2 > 0 ? e2 / x2 : (e2 > 0 ? INFINITY : 0.0);
    s->bit_exact = s->elements ? (double)exact / (double)s->elements : 1.0;
    if (s->format == QINS_DT_QINS_F32) {
      r->a1_measured = 1;
      if (s->a1_passed != s->tensors) r->a1_pass = 0;
    }
  }
  if (!r->a1_measured) r->a1_pass = 0;
  *out = r;
  return 0;
}

int qins_codec_report_model(qins_backend *be, const qins_model *m, const qins_codec_report_opts *opts,
                            qins_codec_report **out) {
  int rc = qins_codec_report_weights(be, m->path, m->weights, m->n_weights, opts, out);
  if (!rc) snprintf((*out)->model_format, sizeof (*out)->model_format, "%s", m->format);
  return rc;
}

void qins_codec_report_free(qins_codec_report *r) {
  if (!r) return;
  qins_mem_free(owner(), r->tensors);
  qins_mem_free(owner(), r);
}

/* ---------------------------------------------------------------- output */

static const char *shape_str(const qins_codec_tensor_report *t, char *buf, size_t n) {
  int len = snprintf(buf, n, "[");
  for (int d = 0; d < t->ndim && len > 0 && (size_t)len < n; d++)
    len += snprintf(buf + len, n - (size_t)len, d ? ",%lld" : "%lld", (long long)t->shape[d]);
  if (len > 0 && (size_t)len < n) snprintf(buf + len, n - (size_t)len, "]");
  return buf;
}

static const char *a1_str(const qins_codec_metrics *m) { return m->gated ? (m->a1_pass ? "pass" : "FAIL") : "-"; }

void qins_codec_report_print(const qins_codec_report *r, FILE *f) {
  char ab[48], sb[96];
  fprintf(f, "codec report: %s (%s), alpha %s, backend %s (%s)\n", r->model, r->model_format[0] ? r->model_format : "-",
          qins_alpha_spec_format(r->alpha, ab, sizeof ab), r->backend, r->device);
  fprintf(f, "A1 gate on qins-f32 per tensor: cosine >= %g and max |err| / max(1,|x|) <= %g\n\n", QINS_A1_MIN_COSINE,
          QINS_A1_MAX_REL_ERR);
  const char *hdr = "  %-13s %13s %11s %11s %11s %9s %10s %11s %s\n";
  for (int i = 0; i < r->n_tensors; i++) {
    const qins_codec_tensor_report *t = &r->tensors[i];
    fprintf(f, "%s %s %s", t->name, qins_dtype_name(t->dtype), shape_str(t, sb, sizeof sb));
    if (t->nan_count || t->inf_count)
      fprintf(f, "  (NaN %lld, Inf %lld)", (long long)t->nan_count, (long long)t->inf_count);
    fprintf(f, "\n");
    fprintf(f, hdr, "format", "cosine", "max_abs", "max_rel", "nmse", "bitexact", "bytes", "alpha_med", "A1");
    for (int k = 0; k < r->n_formats; k++) {
      const qins_codec_metrics *m = &t->m[k];
      char alpha[32] = "-";
      if (qins_dtype_is_qins(m->format)) snprintf(alpha, sizeof alpha, "%.4g", m->alpha_median);
      fprintf(f, "  %-13s %13.10f %11.3e %11.3e %11.3e %9.5f %10zu %11s %s\n", qins_dtype_name(m->format), m->cosine,
              m->max_abs_err, m->max_rel_err, m->nmse, m->bit_exact, m->bytes, alpha, a1_str(m));
    }
  }
  fprintf(f, "\nsummary over %d tensors", r->n_tensors);
  if (r->nan_count || r->inf_count)
    fprintf(f, " (non-finite inputs: NaN %lld, Inf %lld)", (long long)r->nan_count, (long long)r->inf_count);
  fprintf(f, ":\n");
  fprintf(f, "  %-13s %13s %11s %11s %11s %9s %10s %7s %s\n", "format", "min_cosine", "max_abs", "max_rel", "nmse",
          "bitexact", "bytes", "B/elem", "A1");
  for (int k = 0; k < r->n_formats; k++) {
    const qins_codec_summary *s = &r->summary[k];
    char a1[48] = "-";
    if (s->gated) snprintf(a1, sizeof a1, "%d/%d tensors pass", s->a1_passed, s->tensors);
    fprintf(f, "  %-13s %13.10f %11.3e %11.3e %11.3e %9.5f %10zu %7.4f %s\n", qins_dtype_name(s->format), s->min_cosine,
            s->max_abs_err, s->max_rel_err, s->nmse, s->bit_exact, s->bytes,
            s->elements ? (double)s->bytes / (double)s->elements : 0.0, a1);
  }
  if (r->a1_measured) fprintf(f, "A1 (qins-f32): %s\n", r->a1_pass ? "PASS" : "FAIL");
  else fprintf(f, "A1: not evaluated (qins-f32 not among the formats)\n");
}

/* JSON numbers cannot be NaN or Inf: those become null. */
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *metrics_json(const qins_codec_metrics *m) {
  json_t *o = json_object();
  json_object_set_new(o, "cosine", num(m->cosine));
  json_object_set_new(o, "max_abs_err", num(m->max_abs_err));
  json_object_set_new(o, "max_rel_err", num(m->max_rel_err));
  json_object_set_new(o, "nmse", num(m->nmse));
  json_object_set_new(o, "bit_exact", num(m->bit_exact));
  json_object_set_new(o, "bytes", json_integer((json_int_t)m->bytes));
  if (qins_dtype_is_qins(m->format)) {
    json_t *a = json_object();
    json_object_set_new(a, "min", num(m->alpha_min));
    json_object_set_new(a, "median", num(m->alpha_median));
    json_object_set_new(a, "max", num(m->alpha_max));
    json_object_set_new(o, "alpha", a);
  }
  if (m->gated) json_object_set_new(o, "a1_pass", json_boolean(m->a1_pass));
  return o;
}

char *qins_codec_report_json(const qins_codec_report *r) {
  char ab[48];
  json_t *root = json_object();
  json_object_set_new(root, "report", json_string("codec"));
  json_object_set_new(root, "gate", json_string("A1"));
  json_object_set_new(root, "schema_version", json_integer(1));
  json_object_set_new(root, "model", json_string(r->model));
  json_object_set_new(root, "model_format", json_string(r->model_format));
  json_object_set_new(root, "alpha_mode", json_string(qins_alpha_spec_format(r->alpha, ab, sizeof ab)));
  json_object_set_new(root, "backend", json_string(r->backend));
  json_object_set_new(root, "device", json_string(r->device));
  json_t *th = json_object();
  json_object_set_new(th, "format", json_string("qins-f32"));
  json_object_set_new(th, "min_cosine", json_real(QINS_A1_MIN_COSINE));
  json_object_set_new(th, "max_rel_err", json_real(QINS_A1_MAX_REL_ERR));
  json_object_set_new(root, "thresholds", th);
  json_t *fm = json_array();
  for (int k = 0; k < r->n_formats; k++) json_array_append_new(fm, json_string(qins_dtype_name(r->formats[k])));
  json_object_set_new(root, "formats", fm);
  json_t *ts = json_array();
  for (int i = 0; i < r->n_tensors; i++) {
    const qins_codec_tensor_report *t = &r->tensors[i];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(t->name));
    json_object_set_new(o, "dtype", json_string(qins_dtype_name(t->dtype)));
    json_t *sh = json_array();
    for (int d = 0; d < t->ndim; d++) json_array_append_new(sh, json_integer(t->shape[d]));
    json_object_set_new(o, "shape", sh);
    json_object_set_new(o, "rows", json_integer(t->rows));
    json_object_set_new(o, "cols", json_integer(t->cols));
    json_object_set_new(o, "nan", json_integer(t->nan_count));
    json_object_set_new(o, "inf", json_integer(t->inf_count));
    json_t *res = json_object();
    for (int k = 0; k < r->n_formats; k++)
      json_object_set_new(res, qins_dtype_name(t->m[k].format), metrics_json(&t->m[k]));
    json_object_set_new(o, "results", res);
    json_array_append_new(ts, o);
  }
  json_object_set_new(root, "tensors", ts);
  json_t *sum = json_object();
  for (int k = 0; k < r->n_formats; k++) {
    const qins_codec_summary *s = &r->summary[k];
    json_t *o = json_object();
    json_object_set_new(o, "tensors", json_integer(s->tensors));
    json_object_set_new(o, "elements", json_integer(s->elements));
    json_object_set_new(o, "min_cosine", num(s->min_cosine));
    json_object_set_new(o, "max_abs_err", num(s->max_abs_err));
    json_object_set_new(o, "max_rel_err", num(s->max_rel_err));
    json_object_set_new(o, "nmse", num(s->nmse));
    json_object_set_new(o, "bit_exact", num(s->bit_exact));
    json_object_set_new(o, "bytes", json_integer((json_int_t)s->bytes));
    json_object_set_new(o, "bytes_per_element", num(s->elements ? (double)s->bytes / (double)s->elements : 0.0));
    if (s->gated) {
      json_object_set_new(o, "a1_passed", json_integer(s->a1_passed));
      json_object_set_new(o, "a1_pass", json_boolean(s->a1_passed == s->tensors));
    }
    json_object_set_new(sum, qins_dtype_name(s->format), o);
  }
  json_object_set_new(root, "summary", sum);
  json_object_set_new(root, "nan", json_integer(r->nan_count));
  json_object_set_new(root, "inf", json_integer(r->inf_count));
  json_t *a1 = json_object();
  json_object_set_new(a1, "evaluated", json_boolean(r->a1_measured));
  json_object_set_new(a1, "pass", json_boolean(r->a1_pass));
  json_object_set_new(root, "a1", a1);
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
  json_decref(root);
  return s;
}
