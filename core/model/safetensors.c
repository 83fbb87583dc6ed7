/* safetensors reader (mmap, zero copy, strict validation) and writer. */
#include "core/model/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/model/model_internal.h"

/* The reference implementation refuses headers above 100 MB; so do we (also bounds parsing). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct st_impl {
  qins_map map;        /* when opened from a path */
  int mapped;
  void **copies;       /* aligned copies of misaligned tensors */
  int n_copies;
} st_impl;

static qins_mem_owner *owner(void) { return qins_mem_owner_get("model"); }

static const struct {
  const char *name;
  qins_dtype dt;
} st_dtypes[] = {
    {"F32", QINS_DT_F32}, {"F16", QINS_DT_F16}, {"BF16", QINS_DT_BF16},
    {"I8", QINS_DT_I8},   {"U8", QINS_DT_U8},   {"I32", QINS_DT_I32},
};

int qins_st_dtype_parse(const char *s, qins_dtype *out) {
  for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
    if (strcmp(s, st_dtypes[i].name) == 0) {
      *out = st_dtypes[i].dt;
      return 0;
    }
  return QINS_EINPUT;
}

const char *qins_st_dtype_name(qins_dtype dt) {
  for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
    if (st_dtypes[i].dt == dt) return st_dtypes[i].name;
  return NULL;
}

void qins_st_close(qins_st_file *f) {
  if (!f) return;
  st_impl *impl = f->impl;
  if (impl) {
    for (int i = 0; i < impl->n_copies; i++) qins_mem_free(owner(), impl->copies[i]);
    qins_mem_free(owner(), impl->copies);
    if (impl->mapped) qins_map_close(&impl->map);
    qins_mem_free(owner(), impl);
  }
  for (int i = 0; i < f->n_meta; i++) {
    qins_mem_free(owner(), f->meta_keys[i]);
    qins_mem_free(owner(), f->meta_values[i]);
  }
  qins_mem_free(owner(), f->meta_keys);
  qins_mem_free(owner(), f->meta_values);
  qins_mem_free(owner(), f->tensors);
  qins_mem_free(owner(), f);
}

static int cmp_offset(const void *a, const void *b) {
  const qins_st_tensor *x = a, *y = b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Reads a JSON integer >= 0 (jansson only gives json_int_t, which is signed). */
static int get_u64(const json_t *v, uint64_t *out) {
  if (!json_is_integer(v)) return -1;
  json_int_t i = json_integer_value(v);
  if (i < 0) return -1;
  *out = (uint64_t)i;
  return 0;
}

static int parse_metadata(qins_st_file *f, const char *name, json_t *meta) {
  if (!json_is_object(meta))
    return qins_error_set(QINS_EINPUT, "%s: __metadata__ is not an object", name);
  size_t n = json_object_size(meta);
  f->meta_keys = qins_mem_calloc(owner(), n ? n : 1, sizeof(char *));
  f->meta_values = qins_mem_calloc(owner(), n ? n : 1, sizeof(char *));
  if (!f->meta_keys || !f->meta_values) return QINS_ENOMEM;
  const char *k;
  json_t *v;
  json_object_foreach(meta, k, v) {
    if (!json_is_string(v))
      return qins_error_set(QINS_EINPUT, "%s: __metadata__ key '%s' is not a string", name, k);
    f->meta_keys[f->n_meta] = qins_mem_strdup(owner(), k);
    f->meta_values[f->n_meta] = qins_mem_strdup(owner(), json_string_value(v));
    f->n_meta++;
    if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1]) return QINS_ENOMEM;
  }
  return 0;
}

static int parse_tensor(qins_st_file *f, const char *name, const char *key, json_t *v, size_t data_size,
                        qins_st_tensor *t) {
  if (strlen(key) >= QINS_NAME_MAX)
    return qins_error_set(QINS_EINPUT, "%s: tensor name too long (%zu bytes, max %d): %.60s...", name,
                          strlen(key), QINS_NAME_MAX - 1, key);
  if (!*key) return qins_error_set(QINS_EINPUT, "%s: tensor with an empty name", name);
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", key);
  if (!json_is_object(v))
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: entry is not an object", name, key);
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
         *jo = json_object_get(v, "data_offsets");
  if (!json_is_string(jd))
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: missing or non-string \"dtype\"", name, key);
  if (qins_st_dtype_parse(json_string_value(jd), &t->dtype) != 0)
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: unsupported dtype \"%s\" (supported: F32 F16 BF16 I8 U8 I32)",
                          name, key, json_string_value(jd));
  if (!json_is_array(js))
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: missing or non-array \"shape\"", name, key);
  size_t nd = json_array_size(js);
  if (nd > QINS_MAX_DIMS)
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: %zu dimensions (max %d)", name, key, nd, QINS_MAX_DIMS);
  t->ndim = (int)nd;
  uint64_t numel = 1;
  int overflow = 0;
  for (size_t i = 0; i < nd; i++) {
    uint64_t d;
    if (get_u64(json_array_get(js, i), &d) != 0)
      return qins_error_set(QINS_EINPUT, "%s: tensor %s: shape[%zu] is not a non-negative integer", name, key, i);
    if (d > (1ull << 40)) overflow = 1;
    t->shape[i] = (int64_t)d;
    if (!overflow && d && numel > (1ull << 58) / d) overflow = 1;
    numel *= d;
  }
  if (!json_is_array(jo) || json_array_size(jo) != 2)
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: \"data_offsets\" must be [begin, end]", name, key);
  uint64_t b, e;
  if (get_u64(json_array_get(jo, 0), &b) != 0 || get_u64(json_array_get(jo, 1), &e) != 0)
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: data_offsets are not non-negative integers", name, key);
  if (e < b)
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: data_offsets end %llu before begin %llu", name, key,
                          (unsigned long long)e, (unsigned long long)b);
  if (e > data_size)
    return qins_error_set(QINS_EINPUT,
                          "%s: tensor %s: data_offsets [%llu, %llu] past the end of the data (%zu bytes)",
                          name, key, (unsigned long long)b, (unsigned long long)e, data_size);
  size_t esz = qins_dtype_size(t->dtype);
  if (overflow || numel * esz != e - b) {
    char dims[96] = "";
    size_t k = 0;
    for (int i = 0; i < t->ndim && k < sizeof dims; i++)
      k += (size_t)snprintf(dims + k, sizeof dims - k, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    return qins_error_set(QINS_EINPUT,
                          "%s: tensor %s: shape [%s] of %s needs %s%llu bytes but data_offsets [%llu, %llu] "
                          "hold %llu",
                          name, key, dims, json_string_value(jd), overflow ? "more than " : "",
                          overflow ? (unsigned long long)(1ull << 58) : (unsigned long long)(numel * esz),
                          (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b));
  }
  t->offset = f->data_start + (size_t)b;
  t->nbytes = (size_t)(e - b);
  return 0;
}

int qins_st_parse(const char *name, const void *bytes, size_t size, qins_st_file **out) {
  *out = NULL;
  if (size < 8)
    return qins_error_set(QINS_EINPUT, "%s: not a safetensors file: %zu bytes, shorter than the 8-byte header length",
                          name, size);
  const uint8_t *p = bytes;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
  if (hlen > size - 8)
    return qins_error_set(QINS_EINPUT, "%s: safetensors header length %llu runs past the end of the file (%zu bytes)",
                          name, (unsigned long long)hlen, size);
  if (hlen > ST_MAX_HEADER)
    return qins_error_set(QINS_EINPUT, "%s: safetensors header length %llu exceeds %u bytes", name,
                          (unsigned long long)hlen, ST_MAX_HEADER);
  json_error_t jerr;
  /* duplicates would silently shadow a tensor: refuse them */
  json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return qins_error_set(QINS_EINPUT, "%s: bad safetensors JSON header at line %d column %d: %s", name, jerr.line,
                          jerr.column, jerr.text);
  int rc = 0;
  qins_st_file *f = NULL;
  if (!json_is_object(root)) {
    rc = qins_error_set(QINS_EINPUT, "%s: safetensors header is not a JSON object", name);
    goto done;
  }
  f = qins_mem_calloc(owner(), 1, sizeof *f);
  if (!f || !(f->impl = qins_mem_calloc(owner(), 1, sizeof(st_impl)))) {
    rc = QINS_ENOMEM;
    goto done;
  }
  snprintf(f->path, sizeof f->path, "%s", name);
  f->base = p;
  f->size = size;
  f->data_start = 8 + (size_t)hlen;
  size_t data_size = size - f->data_start;
  size_t nt = json_object_size(root);
  f->tensors = qins_mem_calloc(owner(), nt ? nt : 1, sizeof *f->tensors);
  if (!f->tensors) {
    rc = QINS_ENOMEM;
    goto done;
  }
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    if (strcmp(key, "__metadata__") == 0) {
      if ((rc = parse_metadata(f, name, v))) goto done;
      continue;
    }
    if ((rc = parse_tensor(f, name, key, v, data_size, &f->tensors[f->n_tensors]))) goto done;
    f->n_tensors++;
  }
  qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_offset);
  for (int i = 1; i < f->n_tensors; i++) {
    const qins_st_tensor *a = &f->tensors[i - 1], *b = &f->tensors[i];
    if (b->offset < a->offset + a->nbytes) {
      rc = qins_error_set(QINS_EINPUT, "%s: tensors %s [%zu, %zu) and %s [%zu, %zu) overlap", name, a->name,
                          a->offset - f->data_start, a->offset + a->nbytes - f->data_start, b->name,
                          b->offset - f->data_start, b->offset + b->nbytes - f->data_start);
      goto done;
    }
  }
  /* Point into the bytes; a tensor whose start is not aligned to its element size (possible
   * when a writer did not pad the header) gets an aligned copy, so readers may cast. */
  st_impl *impl = f->impl;
  for (int i = 0; i < f->n_tensors; i++) {
    qins_st_tensor *t = &f->tensors[i];
    const uint8_t *src = p + t->offset;
    size_t esz = qins_dtype_size(t->dtype);
    if (((uintptr_t)src % esz) == 0) {
      t->data = src;
      continue;
    }
    void **c = qins_mem_realloc(owner(), impl->copies, (size_t)(impl->n_copies + 1) * sizeof *c);
    if (!c) {
      rc = QINS_ENOMEM;
      goto done;
    }
    impl->copies = c;
    void *copy = qins_mem_alloc_aligned(owner(), t->nbytes ? t->nbytes : 16, 16);
    if (!copy) {
      rc = QINS_ENOMEM;
      goto done;
    }
    memcpy(copy, src, t->nbytes);
    impl->copies[impl->n_copies++] = copy;
    t->data = copy;
  }
done:
  json_decref(root);
  if (rc) {
    qins_st_close(f);
    return rc;
  }
  *out = f;
  return 0;
}

int qins_st_open(const char *path, qins_st_file **out) {
  *out = NULL;
  qins_map map;
  int rc = qins_map_open(path, &map);
  if (rc) return rc;
  static const uint8_t empty[1];
  rc = qins_st_parse(path, map.addr ? map.addr : empty, map.size, out);
  if (rc) {
    qins_map_close(&map);
    return rc;
  }
  st_impl *impl = (*out)->impl;
  impl->map = map;
  impl->mapped = 1;
  return 0;
}

const qins_st_tensor *qins_st_find(const qins_st_file *f, const char *name) {
  for (int i = 0; i < f->n_tensors; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

const char *qins_st_meta(const qins_st_file *f, const char *key) {
  for (int i = 0; i < f->n_meta; i++)
    if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
  return NULL;
}

int qins_st_write(const char *path, const qins_st_entry *entries, int n, const char *const *meta) {
  json_t *root = json_object();
  if (!root) return QINS_ENOMEM;
  int rc = 0;
  char *hdr = NULL;
  FILE *fp = NULL;
  char tmp[1100];
  tmp[0] = 0;
  if (meta && meta[0]) {
    json_t *jm = json_object();
    for (int i = 0; meta[i] && meta[i + 1]; i += 2) json_object_set_new(jm, meta[i], json_string(meta[i + 1]));
    json_object_set_new(root, "__metadata__", jm);
  }
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    const qins_st_entry *e = &entries[i];
    const char *dn = qins_st_dtype_name(e->dtype);
    if (!dn) {
      rc = qins_error_set(QINS_EINVAL, "%s: tensor %s: dtype %s cannot be stored in safetensors", path, e->name,
                          qins_dtype_name(e->dtype));
      goto out;
    }
    if (e->ndim < 0 || e->ndim > QINS_MAX_DIMS) {
      rc = qins_error_set(QINS_EINVAL, "%s: tensor %s: %d dimensions", path, e->name, e->ndim);
      goto out;
    }
    json_t *shape = json_array();
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) {
      json_array_append_new(shape, json_integer(e->shape[d]));
      numel *= (uint64_t)e->shape[d];
    }
    uint64_t nb = numel * qins_dtype_size(e->dtype);
    json_t *jt = json_object();
    json_object_set_new(jt, "dtype", json_string(dn));
    json_object_set_new(jt, "shape", shape);
    json_object_set_new(jt, "data_offsets", json_pack("[I, I]", (json_int_t)off, (json_int_t)(off + nb)));
    if (json_object_get(root, e->name)) {
      rc = qins_error_set(QINS_EINVAL, "%s: tensor %s given twice", path, e->name);
      json_decref(jt);
      goto out;
    }
    json_object_set_new(root, e->name, jt);
    off += nb;
  }
  hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!hdr) {
    rc = QINS_ENOMEM;
    goto out;
  }
  size_t hl = strlen(hdr);
  size_t padded = (hl + 7) & ~(size_t)7; /* keeps tensor data 8-byte aligned in the file */
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  fp = fopen(tmp, "wb");
  if (!fp) {
    rc = qins_error_set(QINS_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    tmp[0] = 0;
    goto out;
  }
  uint8_t lenb[8];
  for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(padded >> (8 * i));
  int ok = fwrite(lenb, 1, 8, fp) == 8 && fwrite(hdr, 1, hl, fp) == hl;
  for (size_t i = hl; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
  for (int i = 0; ok && i < n; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < entries[i].ndim; d++) numel *= (uint64_t)entries[i].shape[d];
    size_t nb = (size_t)numel * qins_dtype_size(entries[i].dtype);
    ok = nb == 0 || fwrite(entries[i].data, 1, nb, fp) == nb;
  }
  if (fclose(fp) != 0) ok = 0;
  fp = NULL;
  if (!ok) {
    rc = qins_error_set(QINS_EIO, "%s: write failed: %s", tmp, strerror(errno));
    goto out;
  }
  if (rename(tmp, path) != 0) {
    rc = qins_error_set(QINS_EIO, "%s: cannot rename %s: %s", path, tmp, strerror(errno));
    goto out;
  }
  tmp[0] = 0;
out:
  if (fp) fclose(fp);
  if (tmp[0]) unlink(tmp);
  free(hdr);
  json_decref(root);
  return rc;
}
