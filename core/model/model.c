/* qins_model: picks the loader for a path, owns mappings, and looks weights up by name. */
#include "core/model/model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/model/model_internal.h"

qins_mem_owner *qins_model_owner(void) { return qins_mem_owner_get("model"); }

int qins_map_open(const char *path, qins_map *m) {
  memset(m, 0, sizeof *m);
  snprintf(m->path, sizeof m->path, "%s", path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return qins_error_set(e == ENOENT || e == EACCES || e == ENOTDIR ? QINS_EINPUT : QINS_EIO,
                          "%s: cannot open: %s", path, strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return qins_error_set(QINS_EIO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return qins_error_set(QINS_EINPUT, "%s: not a regular file", path);
  }
  m->size = (size_t)st.st_size;
  if (m->size > 0) {
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      close(fd);
      return qins_error_set(QINS_EIO, "%s: cannot map %zu bytes: %s", path, m->size, strerror(e));
    }
    m->addr = p;
    qins_mem_owner_charge(qins_mem_owner_get("model.mmap"), (int64_t)m->size);
  }
  close(fd); /* the mapping keeps the file alive */
  return 0;
}

void qins_map_close(qins_map *m) {
  if (m->addr) {
    munmap(m->addr, m->size);
    qins_mem_owner_charge(qins_mem_owner_get("model.mmap"), -(int64_t)m->size);
  }
  m->addr = NULL;
  m->size = 0;
}

int qins_model_add_weight(qins_model *m, const char *name, qins_dtype dt, int ndim, const int64_t *shape,
                          const void *data, size_t nbytes, const char *file) {
  qins_model_impl *impl = m->impl;
  if (strlen(name) >= QINS_NAME_MAX)
    return qins_error_set(QINS_EINPUT, "%s: tensor name too long (%zu bytes, max %d): %.60s...", file,
                          strlen(name), QINS_NAME_MAX - 1, name);
  if (ndim < 0 || ndim > QINS_MAX_DIMS)
    return qins_error_set(QINS_EINPUT, "%s: tensor %s: %d dimensions (max %d)", file, name, ndim,
                          QINS_MAX_DIMS);
  if (m->n_weights == impl->cap_weights) {
    int cap = impl->cap_weights ? impl->cap_weights * 2 : 64;
    qins_weight *w = qins_mem_realloc(qins_model_owner(), m->weights, (size_t)cap * sizeof *w);
    if (!w) return QINS_ENOMEM;
    m->weights = w;
    impl->cap_weights = cap;
  }
  qins_weight *w = &m->weights[m->n_weights++];
  memset(w, 0, sizeof *w);
  snprintf(w->name, sizeof w->name, "%s", name);
  w->dtype = dt;
  w->ndim = ndim;
  for (int i = 0; i < ndim; i++) w->shape[i] = shape[i];
  w->data = data;
  w->nbytes = nbytes;
  w->file = file;
  return 0;
}

/* The index sorts by name; qsort_r needs the weights array as context. */
static int cmp_weight_idx(const void *a, const void *b, void *ctx) {
  const qins_weight *w = ctx;
  return strcmp(w[*(const int *)a].name, w[*(const int *)b].name);
}

int qins_model_index(qins_model *m) {
  qins_model_impl *impl = m->impl;
  qins_mem_free(qins_model_owner(), impl->sorted);
  impl->sorted = qins_mem_alloc(qins_model_owner(), (size_t)(m->n_weights ? m->n_weights : 1) * sizeof(int));
  if (!impl->sorted) return QINS_ENOMEM;
  for (int i = 0; i < m->n_weights; i++) impl->sorted[i] = i;
  qsort_r(impl->sorted, (size_t)m->n_weights, sizeof(int), cmp_weight_idx, m->weights);
  for (int i = 1; i < m->n_weights; i++) {
    const qins_weight *a = &m->weights[impl->sorted[i - 1]], *b = &m->weights[impl->sorted[i]];
    if (strcmp(a->name, b->name) == 0)
      return qins_error_set(QINS_EINPUT, "tensor %s appears twice (in %s and %s)", a->name, a->file, b->file);
  }
  return 0;
}

const qins_weight *qins_model_find(const qins_model *m, const char *name) {
  if (!m || !name) return NULL;
  const qins_model_impl *impl = m->impl;
  if (!impl || !impl->sorted) return NULL;
  int lo = 0, hi = m->n_weights - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    const qins_weight *w = &m->weights[impl->sorted[mid]];
    int c = strcmp(w->name, name);
    if (c == 0) return w;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return NULL;
}

static int has_suffix(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && strcmp(s + n - k, suf) == 0;
}

/* A safetensors file starts with a plausible header length and '{'; llama2.c has no magic. */
static int looks_like_safetensors(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  unsigned char b[9];
  size_t n = fread(b, 1, sizeof b, f);
  fclose(f);
  if (n < 9) return 0;
  uint64_t len = 0;
  for (int i = 7; i >= 0; i--) len = (len << 8) | b[i];
  return len > 1 && len < (1ull << 40) && b[8] == '{';
}

int qins_model_open(const char *path, qins_model **out) {
  *out = NULL;
  if (!path || !*path) return qins_error_set(QINS_EINVAL, "qins_model_open: empty path");
  struct stat st;
  if (stat(path, &st) != 0)
    return qins_error_set(QINS_EINPUT, "%s: cannot open model: %s", path, strerror(errno));
  qins_model *m = qins_mem_calloc(qins_model_owner(), 1, sizeof *m);
  qins_model_impl *impl = qins_mem_calloc(qins_model_owner(), 1, sizeof *impl);
  if (!m || !impl) {
    qins_mem_free(qins_model_owner(), m);
    qins_mem_free(qins_model_owner(), impl);
    return QINS_ENOMEM;
  }
  m->impl = impl;
  snprintf(m->path, sizeof m->path, "%s", path);
  m->cfg.bos_id = m->cfg.eos_id = m->cfg.pad_id = -1;
  m->cfg.rope_attn_factor = 1.0f;

  int rc;
  char dir[1024];
  if (S_ISDIR(st.st_mode)) {
    snprintf(m->format, sizeof m->format, "hf");
    rc = qins_hf_load(m, path);
  } else if (has_suffix(path, "config.json") &&
             (strcmp(path, "config.json") == 0 || has_suffix(path, "/config.json"))) {
    /* config.json names its folder */
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    snprintf(m->format, sizeof m->format, "hf");
    rc = qins_hf_load(m, dir);
  } else if (has_suffix(path, ".safetensors") || has_suffix(path, ".safetensors.index.json") ||
             looks_like_safetensors(path)) {
    snprintf(m->format, sizeof m->format, "safetensors");
    rc = qins_st_model_load(m, path);
  } else {
    snprintf(m->format, sizeof m->format, "llama2c");
    rc = qins_llama2c_load(m, path);
  }
  if (rc == 0) rc = qins_model_index(m);
  if (rc != 0) {
    qins_model_close(m); /* keeps the loader's message */
    return rc;
  }
  *out = m;
  return 0;
}

void qins_model_close(qins_model *m) {
  if (!m) return;
  qins_model_impl *impl = m->impl;
  if (impl) {
    qins_map_close(&impl->map);
    for (int i = 0; i < impl->n_st; i++) qins_st_close(impl->st[i]);
    qins_mem_free(qins_model_owner(), impl->st);
    qins_mem_free(qins_model_owner(), impl->sorted);
    for (int i = 0; i < impl->n_owned; i++) qins_mem_free(qins_model_owner(), impl->owned[i]);
    qins_mem_free(qins_model_owner(), impl->owned);
    qins_mem_free(qins_model_owner(), impl);
  }
  qins_mem_free(qins_model_owner(), m->cfg.rope_short_factor);
  qins_mem_free(qins_model_owner(), m->cfg.rope_long_factor);
  qins_mem_free(qins_model_owner(), m->weights);
  qins_mem_free(qins_model_owner(), m);
}

const char *qins_arch_name(qins_arch arch) {
  switch (arch) {
  case QINS_ARCH_NONE: return "none";
  case QINS_ARCH_LLAMA: return "llama";
  case QINS_ARCH_PHI3: return "phi3";
  case QINS_ARCH_GPT2: return "gpt2";
  }
  return "unknown";
}

const char *qins_act_name(qins_act act) {
  switch (act) {
  case QINS_ACT_SILU: return "silu";
  case QINS_ACT_GELU_TANH: return "gelu_tanh";
  case QINS_ACT_GELU: return "gelu";
  case QINS_ACT_RELU: return "relu";
  }
  return "unknown";
}

int64_t qins_model_param_count(const qins_model *m) {
  int64_t n = 0;
  for (int i = 0; i < m->n_weights; i++) {
    int64_t k = 1;
    for (int d = 0; d < m->weights[i].ndim; d++) k *= m->weights[i].shape[d];
    n += k;
  }
  return n;
}

size_t qins_model_total_bytes(const qins_model *m) {
  size_t n = 0;
  for (int i = 0; i < m->n_weights; i++) n += m->weights[i].nbytes;
  return n;
}
