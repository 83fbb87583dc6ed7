/* Loading `qins convert` output: QINS segments (codes + scales, metadata qins.seg.*) decoded back
 * into f32 weights under their Hugging Face names (docs/convert.md has the naming). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/model/model_internal.h"
#include "core/qins_codec.h"

/* "k1=v1;k2=v2": the value of key, copied into out. */
static int field(const char *spec, const char *key, char *out, size_t n) {
  size_t kl = strlen(key);
  for (const char *p = spec; p && *p;) {
    if (!strncmp(p, key, kl) && p[kl] == '=') {
      const char *v = p + kl + 1, *e = strchr(v, ';');
      size_t len = e ? (size_t)(e - v) : strlen(v);
      if (len >= n) return 0;
      memcpy(out, v, len);
      out[len] = 0;
      return 1;
    }
    p = strchr(p, ';');
    if (p) p++;
  }
  return 0;
}

static int own(qins_model *m, void *p) {
  qins_model_impl *impl = m->impl;
  void **o = qins_mem_realloc(qins_model_owner(), impl->owned, (size_t)(impl->n_owned + 1) * sizeof *o);
  if (!o) return QINS_ENOMEM;
  impl->owned = o;
  impl->owned[impl->n_owned++] = p;
  return 0;
}

/* linear: runs before the loader builds its name index */
static const qins_weight *find(const qins_model *m, const char *name) {
  for (int i = 0; i < m->n_weights; i++)
    if (!strcmp(m->weights[i].name, name)) return &m->weights[i];
  return NULL;
}

static float to_f32(const void *base, qins_dtype dt, int64_t i) {
  if (dt == QINS_DT_F16) return qins_f16_to_f32(((const uint16_t *)base)[i]);
  if (dt == QINS_DT_BF16) return qins_bf16_to_f32(((const uint16_t *)base)[i]);
  return ((const float *)base)[i];
}

static int expand_file(qins_model *m, const qins_st_file *f) {
  char w[64];
  int rc = 0, added = 0;
  for (int i = 0; i < f->n_meta && !rc; i++) {
    const char *k = f->meta_keys[i], *spec = f->meta_values[i];
    if (strncmp(k, "qins.seg.", 9) != 0) continue;
    char src[QINS_NAME_MAX], fmt_s[32], codes_n[QINS_NAME_MAX], scale_n[QINS_NAME_MAX];
    char v_row0[32], v_rows[32], v_cols[32], v_tr[8], v_sr[32], v_sc[32];
    if (!field(spec, "source", src, sizeof src) || !field(spec, "format", fmt_s, sizeof fmt_s) ||
        !field(spec, "codes", codes_n, sizeof codes_n) || !field(spec, "row0", v_row0, sizeof v_row0) ||
        !field(spec, "rows", v_rows, sizeof v_rows) || !field(spec, "cols", v_cols, sizeof v_cols) ||
        !field(spec, "transposed", v_tr, sizeof v_tr) || !field(spec, "src_rows", v_sr, sizeof v_sr) ||
        !field(spec, "src_cols", v_sc, sizeof v_sc))
      return qins_error_set(QINS_EINPUT, "%s: metadata %s: malformed QINS segment '%s'", f->path, k, spec);
    int has_scale = field(spec, "scale", scale_n, sizeof scale_n);
    qins_dtype fmt;
    if (qins_dtype_parse(fmt_s, &fmt) || !qins_dtype_is_quantized(fmt))
      return qins_error_set(QINS_EINPUT, "%s: metadata %s: format '%s' is not a QINS/int8 format", f->path, k, fmt_s);
    int64_t row0 = atoll(v_row0), rows = atoll(v_rows), cols = atoll(v_cols), sr = atoll(v_sr), sc = atoll(v_sc);
    int tr = atoi(v_tr);
    int64_t seg_span = tr ? sc : sr; /* the dimension the segment's rows index */
    int64_t seg_len = tr ? sr : sc;
    if (rows < 1 || cols != seg_len || row0 < 0 || row0 + rows > seg_span)
      return qins_error_set(QINS_EINPUT, "%s: metadata %s: segment rows %lld..%lld x %lld outside %s [%lld,%lld]",
                            f->path, k, (long long)row0, (long long)(row0 + rows), (long long)cols, src,
                            (long long)sr, (long long)sc);
    const qins_weight *cw = find(m, codes_n), *sw = has_scale ? find(m, scale_n) : NULL;
    int64_t ns = qins_format_scale_count(fmt, rows, cols);
    if (!cw || cw->nbytes != (size_t)rows * qins_format_row_bytes(fmt, cols) || (ns > 0 && (!sw || sw->nbytes != (size_t)ns * 4)))
      return qins_error_set(QINS_EINPUT, "%s: QINS segment %s: codes %s / scales %s missing or of the wrong size",
                            f->path, k, codes_n, has_scale ? scale_n : "(none)");
    /* the f32 destination: the source weight (a fused one stays stored in float) or a new one */
    int idx = -1;
    for (int j = 0; j < m->n_weights; j++)
      if (!strcmp(m->weights[j].name, src)) idx = j;
    size_t nel = (size_t)(sr * sc);
    float *dst;
    if (idx >= 0 && m->weights[idx].dtype == QINS_DT_F32 && m->weights[idx].file == NULL) {
      dst = (float *)m->weights[idx].data; /* already expanded by an earlier segment */
    } else {
      dst = qins_mem_alloc(qins_model_owner(), nel * sizeof(float));
      if (!dst || own(m, dst)) return QINS_ENOMEM;
      if (idx >= 0) {
        const qins_weight *o = &m->weights[idx];
        if (o->ndim != 2 || o->shape[0] != sr || o->shape[1] != sc)
          return qins_error_set(QINS_EINPUT, "%s: QINS segment %s: %s is not [%lld,%lld]", f->path, k, src,
                                (long long)sr, (long long)sc);
        for (size_t e = 0; e < nel; e++) dst[e] = to_f32(o->data, o->dtype, (int64_t)e);
      } else {
        memset(dst, 0, nel * sizeof(float));
        int64_t shape[2] = {sr, sc};
        if ((rc = qins_model_add_weight(m, src, QINS_DT_F32, 2, shape, dst, nel * 4, f->path))) return rc;
        idx = m->n_weights - 1;
        added = 1;
      }
      qins_weight *o = &m->weights[idx];
      o->dtype = QINS_DT_F32;
      o->data = dst;
      o->nbytes = nel * 4;
      o->file = NULL; /* marks "decoded here" */
    }
    float *dec = malloc((size_t)(rows * cols) * sizeof(float));
    if (!dec) return QINS_ENOMEM;
    rc = qins_codec_decode(fmt, cw->data, rows, cols, sw ? (const float *)sw->data : NULL, dec);
    for (int64_t r = 0; r < rows && !rc; r++)
      for (int64_t c = 0; c < cols; c++) {
        if (!tr) dst[(row0 + r) * sc + c] = dec[r * cols + c];
        else dst[c * sc + row0 + r] = dec[r * cols + c]; /* Conv1D [in, out]: segment rows are columns */
      }
    free(dec);
    (void)w;
  }
  (void)added;
  return rc;
}

int qins_model_expand_qins(qins_model *m) {
  qins_model_impl *impl = m->impl;
  for (int i = 0; impl && i < impl->n_st; i++) {
    if (!qins_st_meta(impl->st[i], "qins.converted")) continue;
    int rc = expand_file(m, impl->st[i]);
    if (rc) return rc;
  }
  /* file == NULL marked decoded weights; point them back at the model for messages */
  for (int j = 0; j < m->n_weights; j++)
    if (!m->weights[j].file) m->weights[j].file = m->path;
  return 0;
}
