/* Hugging Face folders and bare safetensors: opens the (possibly sharded) safetensors files,
 * and for a folder checks every tensor's name and shape against what config.json implies. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/model/model_internal.h"

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int keep_st(qins_model *m, qins_st_file *f) {
  qins_model_impl *impl = m->impl;
  qins_st_file **s = qins_mem_realloc(qins_model_owner(), impl->st, (size_t)(impl->n_st + 1) * sizeof *s);
  if (!s) {
    qins_st_close(f);
    return QINS_ENOMEM;
  }
  impl->st = s;
  impl->st[impl->n_st++] = f;
  return 0;
}

static int add_st_tensor(qins_model *m, const qins_st_file *f, const qins_st_tensor *t) {
  return qins_model_add_weight(m, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, f->path);
}

static int load_single(qins_model *m, const char *path) {
  qins_st_file *f;
  int rc = qins_st_open(path, &f);
  if (rc) return rc;
  if ((rc = keep_st(m, f))) return rc;
  for (int i = 0; i < f->n_tensors; i++)
    if ((rc = add_st_tensor(m, f, &f->tensors[i]))) return rc;
  return 0;
}

/* model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard file}}.
 * Every mapped tensor must be in its shard, and every shard tensor must be mapped. */
static int load_index(qins_model *m, const char *index_path) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", index_path);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  json_error_t jerr;
  json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) return qins_error_set(QINS_EINPUT, "%s: bad JSON at line %d column %d: %s", index_path, jerr.line,
                                   jerr.column, jerr.text);
  int rc = 0;
  json_t *wm = json_object_get(root, "weight_map");
  if (!json_is_object(root) || !json_is_object(wm)) {
    rc = qins_error_set(QINS_EINPUT, "%s: no \"weight_map\" object", index_path);
    goto done;
  }
  qins_model_impl *impl = m->impl;
  const char *name;
  json_t *v;
  /* open each distinct shard once, in first-mention order */
  json_object_foreach(wm, name, v) {
    if (!json_is_string(v)) {
      rc = qins_error_set(QINS_EINPUT, "%s: weight_map entry for tensor %s is not a file name", index_path, name);
      goto done;
    }
    const char *shard = json_string_value(v);
    if (!*shard || shard[0] == '/' || strstr(shard, "..")) {
      rc = qins_error_set(QINS_EINPUT, "%s: tensor %s: shard file \"%s\" must be a relative name inside the folder",
                          index_path, name, shard);
      goto done;
    }
    char sp[1024];
    if (snprintf(sp, sizeof sp, "%s/%s", dir, shard) >= (int)sizeof sp) {
      rc = qins_error_set(QINS_EINPUT, "%s: shard path too long: %s", index_path, shard);
      goto done;
    }
    int found = 0;
    for (int i = 0; i < impl->n_st && !found; i++) found = strcmp(impl->st[i]->path, sp) == 0;
    if (found) continue;
    qins_st_file *f;
    if ((rc = qins_st_open(sp, &f))) goto done;
    if ((rc = keep_st(m, f))) goto done;
  }
  json_object_foreach(wm, name, v) {
    char sp[1024];
    if (snprintf(sp, sizeof sp, "%s/%s", dir, json_string_value(v)) >= (int)sizeof sp) continue;
    for (int i = 0; i < impl->n_st; i++) {
      if (strcmp(impl->st[i]->path, sp) != 0) continue;
      const qins_st_tensor *t = qins_st_find(impl->st[i], name);
      if (!t) {
        rc = qins_error_set(QINS_EINPUT, "%s: tensor %s is mapped to %s, which does not hold it", index_path, name,
                            sp);
        goto done;
      }
      if ((rc = add_st_tensor(m, impl->st[i], t))) goto done;
    }
  }
  for (int i = 0; i < impl->n_st; i++)
    for (int k = 0; k < impl->st[i]->n_tensors; k++) {
      const char *tn = impl->st[i]->tensors[k].name;
      const json_t *sv = json_object_get(wm, tn);
      char sp[1024];
      if (sv && snprintf(sp, sizeof sp, "%s/%s", dir, json_string_value(sv)) >= (int)sizeof sp) sp[0] = 0;
      if (!sv || strcmp(sp, impl->st[i]->path) != 0) {
        rc = qins_error_set(QINS_EINPUT, "%s: tensor %s is in %s but the weight_map %s", index_path, tn,
                            impl->st[i]->path, sv ? "maps it to another file" : "does not list it");
        goto done;
      }
    }
done:
  json_decref(root);
  return rc;
}

int qins_st_model_load(qins_model *m, const char *path) {
  m->cfg.arch = QINS_ARCH_NONE;
  size_t n = strlen(path);
  if (n >= 5 && strcmp(path + n - 5, ".json") == 0) return load_index(m, path);
  return load_single(m, path);
}

/* ---- expected tensors per architecture ---- */

typedef struct want {
  char name[QINS_NAME_MAX];
  int ndim;
  int64_t shape[2];
  int optional;
  int seen;   /* index of the weight that matched, -1 if none */
} want;

typedef struct want_list {
  want *w;
  int n, cap;
} want_list;

static int want_add(want_list *l, int optional, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int want_add(want_list *l, int optional, int64_t d0, int64_t d1, const char *fmt, ...) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 64;
    want *w = qins_mem_realloc(qins_model_owner(), l->w, (size_t)cap * sizeof *w);
    if (!w) return QINS_ENOMEM;
    l->w = w;
    l->cap = cap;
  }
  want *w = &l->w[l->n++];
  memset(w, 0, sizeof *w);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->name, sizeof w->name, fmt, ap);
  va_end(ap);
  w->ndim = d1 ? 2 : 1;
  w->shape[0] = d0;
  w->shape[1] = d1;
  w->optional = optional;
  w->seen = -1;
  return 0;
}

static int build_wants(const qins_model_config *c, want_list *l) {
  int64_t D = c->dim, V = c->vocab_size, F = c->ffn_dim, hd = c->head_dim;
  int64_t q = (int64_t)c->n_heads * hd, kv = (int64_t)c->n_kv_heads * hd;
  int rc = 0;
#define W(opt, a, b, ...) \
  do { if ((rc = want_add(l, opt, a, b, __VA_ARGS__))) return rc; } while (0)
  switch (c->arch) {
  case QINS_ARCH_LLAMA:
  case QINS_ARCH_PHI3:
    W(0, V, D, "model.embed_tokens.weight");
    for (int i = 0; i < c->n_layers; i++) {
      W(0, D, 0, "model.layers.%d.input_layernorm.weight", i);
      if (c->arch == QINS_ARCH_PHI3) {
        W(0, q + 2 * kv, D, "model.layers.%d.self_attn.qkv_proj.weight", i);
      } else {
        W(0, q, D, "model.layers.%d.self_attn.q_proj.weight", i);
        W(0, kv, D, "model.layers.%d.self_attn.k_proj.weight", i);
        W(0, kv, D, "model.layers.%d.self_attn.v_proj.weight", i);
        if (c->attn_bias) {
          W(0, q, 0, "model.layers.%d.self_attn.q_proj.bias", i);
          W(0, kv, 0, "model.layers.%d.self_attn.k_proj.bias", i);
          W(0, kv, 0, "model.layers.%d.self_attn.v_proj.bias", i);
        }
      }
      W(0, D, q, "model.layers.%d.self_attn.o_proj.weight", i);
      if (c->attn_bias) W(0, D, 0, "model.layers.%d.self_attn.o_proj.bias", i);
      W(0, D, 0, "model.layers.%d.post_attention_layernorm.weight", i);
      if (c->arch == QINS_ARCH_PHI3) {
        W(0, 2 * F, D, "model.layers.%d.mlp.gate_up_proj.weight", i);
      } else {
        W(0, F, D, "model.layers.%d.mlp.gate_proj.weight", i);
        W(0, F, D, "model.layers.%d.mlp.up_proj.weight", i);
        if (c->mlp_bias) {
          W(0, F, 0, "model.layers.%d.mlp.gate_proj.bias", i);
          W(0, F, 0, "model.layers.%d.mlp.up_proj.bias", i);
        }
      }
      W(0, D, F, "model.layers.%d.mlp.down_proj.weight", i);
      if (c->mlp_bias) W(0, D, 0, "model.layers.%d.mlp.down_proj.bias", i);
    }
    W(0, D, 0, "model.norm.weight");
    W(c->tied_embeddings, V, D, "lm_head.weight");
    break;
  case QINS_ARCH_GPT2:
    W(0, V, D, "transformer.wte.weight");
    W(0, c->max_seq_len, D, "transformer.wpe.weight");
    for (int i = 0; i < c->n_layers; i++) {
      W(0, D, 0, "transformer.h.%d.ln_1.weight", i);
      W(0, D, 0, "transformer.h.%d.ln_1.bias", i);
      /* Conv1D: [in, out] */
      W(0, D, 3 * D, "transformer.h.%d.attn.c_attn.weight", i);
      W(0, 3 * D, 0, "transformer.h.%d.attn.c_attn.bias", i);
      W(0, D, D, "transformer.h.%d.attn.c_proj.weight", i);
      W(0, D, 0, "transformer.h.%d.attn.c_proj.bias", i);
      W(0, D, 0, "transformer.h.%d.ln_2.weight", i);
      W(0, D, 0, "transformer.h.%d.ln_2.bias", i);
      W(0, D, F, "transformer.h.%d.mlp.c_fc.weight", i);
      W(0, F, 0, "transformer.h.%d.mlp.c_fc.bias", i);
      W(0, F, D, "transformer.h.%d.mlp.c_proj.weight", i);
      W(0, D, 0, "transformer.h.%d.mlp.c_proj.bias", i);
    }
    W(0, D, 0, "transformer.ln_f.weight");
    W(0, D, 0, "transformer.ln_f.bias");
    W(c->tied_embeddings, V, D, "lm_head.weight");
    break;
  case QINS_ARCH_NONE:
    break;
  }
#undef W
  return 0;
}

static int has_suffix(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && strcmp(s + n - k, suf) == 0;
}

/* Buffers some checkpoints carry that are not parameters: GPT-2's causal mask ("attn.bias",
 * "attn.masked_bias") and old rotary caches. */
static int ignorable(const qins_model_config *c, const char *name) {
  if (strncmp(name, "qins.", 5) == 0) return 1; /* QINS codes/scales of a converted model (qins_st.c) */
  if (c->arch == QINS_ARCH_GPT2) return has_suffix(name, ".attn.bias") || has_suffix(name, ".attn.masked_bias");
  return has_suffix(name, ".rotary_emb.inv_freq");
}

static const char *fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

/* Checks names/shapes/dtypes against the config and reorders the weights into the canonical
 * order (embedding, layers in order, final norm, head), dropping ignorable buffers. */
static int check_weights(qins_model *m, const char *where) {
  const qins_model_config *c = &m->cfg;
  want_list wl = {0};
  int rc = build_wants(c, &wl);
  qins_weight *ordered = NULL;
  if (rc) goto out;
  for (int i = 0; i < m->n_weights; i++) {
    qins_weight *w = &m->weights[i];
    /* GPT-2 checkpoints from the original release name tensors without "transformer." */
    if (c->arch == QINS_ARCH_GPT2 && strncmp(w->name, "transformer.", 12) != 0 && strncmp(w->name, "lm_head.", 8) != 0 &&
        strncmp(w->name, "qins.", 5) != 0) {
      char full[QINS_NAME_MAX];
      if (snprintf(full, sizeof full, "transformer.%s", w->name) >= (int)sizeof full) {
        rc = qins_error_set(QINS_EINPUT, "%s: tensor name too long: %s", w->file, w->name);
        goto out;
      }
      memcpy(w->name, full, sizeof full);
    }
    if (ignorable(c, w->name)) continue;
    want *hit = NULL;
    for (int k = 0; k < wl.n && !hit; k++)
      if (strcmp(wl.w[k].name, w->name) == 0) hit = &wl.w[k];
    if (!hit) {
      rc = qins_error_set(QINS_EINPUT, "%s: unexpected tensor %s: not part of a %s model with %d layers", w->file,
                          w->name, qins_arch_name(c->arch), c->n_layers);
      goto out;
    }
    if (hit->seen >= 0) {
      rc = qins_error_set(QINS_EINPUT, "%s: tensor %s appears twice (also in %s)", w->file, w->name,
                          m->weights[hit->seen].file);
      goto out;
    }
    char a[96], b[96];
    int same = w->ndim == hit->ndim;
    for (int d = 0; same && d < w->ndim; d++) same = w->shape[d] == hit->shape[d];
    if (!same) {
      rc = qins_error_set(QINS_EINPUT, "%s: tensor %s has shape %s, expected %s from config.json", w->file, w->name,
                          fmt_shape(a, sizeof a, w->ndim, w->shape), fmt_shape(b, sizeof b, hit->ndim, hit->shape));
      goto out;
    }
    if (w->dtype != QINS_DT_F32 && w->dtype != QINS_DT_F16 && w->dtype != QINS_DT_BF16) {
      rc = qins_error_set(QINS_EINPUT, "%s: tensor %s has dtype %s; model weights must be F32, F16 or BF16", w->file,
                          w->name, qins_st_dtype_name(w->dtype) ? qins_st_dtype_name(w->dtype) : "?");
      goto out;
    }
    hit->seen = i;
  }
  for (int k = 0; k < wl.n; k++)
    if (wl.w[k].seen < 0 && !wl.w[k].optional) {
      char b[96];
      rc = qins_error_set(QINS_EINPUT, "%s: missing tensor %s (expected shape %s from config.json)", where, wl.w[k].name,
                          fmt_shape(b, sizeof b, wl.w[k].ndim, wl.w[k].shape));
      goto out;
    }
  ordered = qins_mem_alloc(qins_model_owner(), (size_t)(m->n_weights ? m->n_weights : 1) * sizeof *ordered);
  if (!ordered) {
    rc = QINS_ENOMEM;
    goto out;
  }
  int n = 0;
  for (int k = 0; k < wl.n; k++)
    if (wl.w[k].seen >= 0) ordered[n++] = m->weights[wl.w[k].seen];
  qins_mem_free(qins_model_owner(), m->weights);
  m->weights = ordered;
  m->n_weights = n;
  ((qins_model_impl *)m->impl)->cap_weights = m->n_weights ? m->n_weights : 1;
  ordered = NULL;
out:
  qins_mem_free(qins_model_owner(), wl.w);
  return rc;
}

int qins_hf_load(qins_model *m, const char *dir) {
  char p[1100];
  snprintf(p, sizeof p, "%s/config.json", dir);
  if (!file_exists(p))
    return qins_error_set(QINS_EINPUT, "%s: not a model folder: no config.json", dir);
  int rc = qins_hf_config_parse(p, &m->cfg);
  if (rc) return rc;
  char idx[1100], single[1100];
  snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
  snprintf(single, sizeof single, "%s/model.safetensors", dir);
  const char *where;
  if (file_exists(idx)) {
    rc = load_index(m, idx);
    where = idx;
  } else if (file_exists(single)) {
    rc = load_single(m, single);
    where = single;
  } else {
    return qins_error_set(QINS_EINPUT, "%s: no model.safetensors or model.safetensors.index.json "
                          "(PyTorch .bin weights are not supported: convert them to safetensors)", dir);
  }
  if (rc) return rc;
  if ((rc = qins_model_expand_qins(m))) return rc; /* `qins convert` output: decode QINS segments */
  return check_weights(m, where);
}
