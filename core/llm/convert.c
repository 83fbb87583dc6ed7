/* qins convert: policy-coded weights into a safetensors folder, and applying such a folder's codes. */
#include "core/llm/convert.h"

#include <jansson.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/model/safetensors.h"

/* Where a runtime matrix (layer, path) lives in the checkpoint: weight name, first row (or column
 * for GPT-2 Conv1D, transposed = 1) and the layer's row count of that path. */
typedef struct seg_src {
  char name[QINS_NAME_MAX];
  int64_t row0;
  int transposed;
} seg_src;

static int source_of(const qins_model *m, int l, int path, seg_src *s) {
  const qins_model_config *c = &m->cfg;
  int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
  const char *fmt = NULL;
  s->row0 = 0;
  s->transposed = 0;
  if (c->arch == QINS_ARCH_GPT2) {
    static const char *const g[] = {"h.%d.attn.c_attn.weight", "h.%d.attn.c_proj.weight", "h.%d.mlp.c_fc.weight",
                                    NULL, "h.%d.mlp.c_proj.weight"};
    if (!g[path]) return 0;
    s->transposed = 1;
    if (path == QINS_PATH_V) s->row0 = 2 * (int64_t)c->dim;
    char base[100];
    snprintf(base, sizeof base, g[path], l);
    snprintf(s->name, sizeof s->name, "transformer.%.100s", base);
    if (!qins_model_find(m, s->name)) snprintf(s->name, sizeof s->name, "%s", base);
    return 1;
  }
  static const char *const lm[] = {"model.layers.%d.self_attn.v_proj.weight", "model.layers.%d.self_attn.o_proj.weight",
                                   "model.layers.%d.mlp.up_proj.weight", "model.layers.%d.mlp.gate_proj.weight",
                                   "model.layers.%d.mlp.down_proj.weight"};
  fmt = lm[path];
  if (c->arch == QINS_ARCH_PHI3) {
    if (path == QINS_PATH_V) fmt = "model.layers.%d.self_attn.qkv_proj.weight", s->row0 = qd + kvd;
    if (path == QINS_PATH_GATE) fmt = "model.layers.%d.mlp.gate_up_proj.weight";
    if (path == QINS_PATH_UP) fmt = "model.layers.%d.mlp.gate_up_proj.weight", s->row0 = c->ffn_dim;
  }
  snprintf(s->name, sizeof s->name, fmt, l);
  return 1;
}

static const qins_llm_mat path_mat[] = {QINS_LLM_WV, QINS_LLM_WO, QINS_LLM_WUP, QINS_LLM_WGATE, QINS_LLM_WDOWN};

/* Copies an optional side file (tokenizer, config) next to the converted weights: a missing
 * source is skipped; a failed write is an error. */
static int copy_file(const char *from, const char *to) {
  if (access(from, R_OK) != 0) return 0;
  int rc = qins_copy_file(from, to);
  return rc ? qins_error_wrap(rc, "convert: ") : 0;
}

/* llama2.c q/k rows pair dimensions (2i, 2i+1); Hugging Face rotate-half pairs (i, i + hd/2). */
static float *permute_rows(const qins_weight *w, int heads, int hd) {
  int64_t cols = w->shape[1];
  float *out = malloc((size_t)(w->shape[0] * cols) * sizeof(float));
  if (!out) return NULL;
  const float *in = w->data;
  for (int h = 0; h < heads; h++)
    for (int half = 0; half < 2; half++)
      for (int i = 0; i < hd / 2; i++)
        memcpy(out + ((int64_t)h * hd + half * (hd / 2) + i) * cols, in + ((int64_t)h * hd + 2 * i + half) * cols,
               (size_t)cols * sizeof(float));
  return out;
}

static int write_llama_config(const qins_model *m, const char *path) {
  const qins_model_config *c = &m->cfg;
  json_t *j = json_object();
  json_object_set_new(j, "architectures", json_pack("[s]", "LlamaForCausalLM"));
  json_object_set_new(j, "model_type", json_string("llama"));
  json_object_set_new(j, "hidden_size", json_integer(c->dim));
  json_object_set_new(j, "intermediate_size", json_integer(c->ffn_dim));
  json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
  json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
  json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
  json_object_set_new(j, "head_dim", json_integer(c->head_dim));
  json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(j, "max_position_embeddings", json_integer(c->max_seq_len));
  json_object_set_new(j, "rms_norm_eps", json_real(c->norm_eps));
  json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
  json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
  json_object_set_new(j, "hidden_act", json_string("silu"));
  if (c->bos_id >= 0) json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
  if (c->eos_id >= 0) json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
  json_object_set_new(j, "torch_dtype", json_string("float32"));
  int rc = json_dump_file(j, path, JSON_INDENT(2)) ? qins_error_set(QINS_EIO, "convert: cannot write %s", path) : 0;
  json_decref(j);
  return rc;
}

#define MAX_ENT 4096

int qins_convert(const qins_model *m, const qins_policy *pol, const char *out_dir) {
  const qins_model_config *c = &m->cfg;
  int is_l2c = !strcmp(m->format, "llama2c");
  if (c->arch == QINS_ARCH_NONE)
    return qins_error_set(QINS_EINPUT, "convert: %s has no architecture config", m->path);
  if (mkdir(out_dir, 0777) && errno != EEXIST) return qins_error_set(QINS_EIO, "convert: cannot create %s", out_dir);
  qins_backend *be;
  int rc = qins_backend_create("cpu", &be);
  if (rc) return rc;
  qins_llm *llm = NULL;
  qins_policy_state *st = NULL;
  qins_st_entry *ent = calloc(MAX_ENT, sizeof *ent);
  void **owned = calloc(MAX_ENT * 2, sizeof(void *));
  char **names = calloc(MAX_ENT, sizeof(char *));
  int64_t *shapes = calloc(MAX_ENT * 2, sizeof(int64_t));
  const char **meta = calloc(QINS_POLICY_MAX_LAYERS * QINS_PATH_COUNT * 2 + 16, sizeof(char *));
  int ne = 0, nown = 0, nm = 0;
  unsigned char *covered = calloc((size_t)m->n_weights + 1, 1);
  if (!ent || !owned || !names || !shapes || !meta || !covered) {
    rc = QINS_ENOMEM;
    goto done;
  }
  qins_llm_options lo = {0, 0};
  if ((rc = qins_llm_create(m, be, &lo, &llm))) goto done;
  if ((rc = qins_policy_apply(llm, be, pol, 0, &st))) goto done;
  char cov[512], *metastr;
  qins_policy_describe(pol, cov, sizeof cov);
  meta[nm++] = "format", meta[nm++] = "pt";
  meta[nm++] = "qins.converted", meta[nm++] = "1";
  meta[nm++] = "qins.coverage", meta[nm++] = owned[nown++] = strdup(cov);
  meta[nm++] = "qins.source", meta[nm++] = owned[nown++] = strdup(m->path);
  /* coded segments */
  for (int l = 0; l < c->n_layers && !rc; l++) {
    for (int p = QINS_PATH_V; p <= QINS_PATH_DOWN && !rc; p++) {
      const qins_path_policy *pp = &pol->p[l][p];
      if (pp->fallback || pp->format == QINS_DT_F32) continue;
      qins_tensor *t = qins_llm_matrix(llm, l, path_mat[p]);
      seg_src s;
      if (!t || !source_of(m, l, p, &s)) continue;
      const qins_weight *w = qins_model_find(m, s.name);
      if (!w) {
        rc = qins_error_set(QINS_EINTERNAL, "convert: %s not found", s.name);
        break;
      }
      int64_t rows = t->shape[0], cols = t->shape[1];
      size_t cb = qins_tensor_nbytes(t);
      int64_t ns = t->scale ? qins_tensor_numel(t->scale) : 0;
      void *codes = malloc(cb ? cb : 1);
      float *sc = ns ? malloc((size_t)ns * 4) : NULL;
      owned[nown++] = codes;
      owned[nown++] = sc;
      if (!codes || (ns && !sc)) {
        rc = QINS_ENOMEM;
        break;
      }
      if ((rc = qins_buf_read(t->buf, t->offset, codes, cb))) break;
      if (ns && (rc = qins_buf_read(t->scale->buf, t->scale->offset, sc, (size_t)ns * 4))) break;
      char cn[QINS_NAME_MAX], sn[QINS_NAME_MAX], key[96], as[48];
      snprintf(cn, sizeof cn, "qins.layers.%d.%s.codes", l, qins_path_name((qins_path)p));
      snprintf(sn, sizeof sn, "qins.layers.%d.%s.scale", l, qins_path_name((qins_path)p));
      names[ne] = strdup(cn);
      shapes[2 * ne] = rows;
      shapes[2 * ne + 1] = (int64_t)(cb / (size_t)rows);
      ent[ne] = (qins_st_entry){names[ne], QINS_DT_U8, 2, &shapes[2 * ne], codes};
      ne++;
      if (ns) {
        names[ne] = strdup(sn);
        shapes[2 * ne] = ns;
        ent[ne] = (qins_st_entry){names[ne], QINS_DT_F32, 1, &shapes[2 * ne], sc};
        ne++;
      }
      snprintf(key, sizeof key, "qins.seg.%d.%s", l, qins_path_name((qins_path)p));
      if (asprintf(&metastr,
                   "source=%s;row0=%lld;rows=%lld;cols=%lld;transposed=%d;src_rows=%lld;src_cols=%lld;format=%s;"
                   "alpha=%s;codes=%s%s%s",
                   s.name, (long long)s.row0, (long long)rows, (long long)cols, s.transposed, (long long)w->shape[0],
                   (long long)w->shape[1], qins_dtype_name(pp->format), qins_alpha_spec_format(pp->alpha, as, sizeof as),
                   cn, ns ? ";scale=" : "", ns ? sn : "") < 0) {
        rc = QINS_ENOMEM;
        break;
      }
      owned[nown++] = metastr;
      meta[nm++] = owned[nown++] = strdup(key);
      meta[nm++] = metastr;
      /* a weight is left out only when its segment is all of it */
      int64_t span = s.transposed ? w->shape[1] : w->shape[0];
      if (s.row0 == 0 && rows == span) covered[w - m->weights] = 1;
    }
    const qins_path_policy *vc = &pol->p[l][QINS_PATH_VCACHE];
    if (!vc->fallback && vc->format != QINS_DT_F32) {
      char key[64], val[96], as[48];
      snprintf(key, sizeof key, "qins.vcache.%d", l);
      snprintf(val, sizeof val, "format=%s;alpha=%s", qins_dtype_name(vc->format),
               qins_alpha_spec_format(vc->alpha, as, sizeof as));
      meta[nm++] = owned[nown++] = strdup(key);
      meta[nm++] = owned[nown++] = strdup(val);
    }
  }
  meta[nm] = NULL;
  /* float weights (q/k rows permuted for llama2.c checkpoints) */
  for (int i = 0; i < m->n_weights && !rc; i++) {
    const qins_weight *w = &m->weights[i];
    if (covered[i]) continue;
    const void *data = w->data;
    if (is_l2c && (strstr(w->name, "self_attn.q_proj.weight") || strstr(w->name, "self_attn.k_proj.weight"))) {
      int heads = strstr(w->name, "q_proj") ? c->n_heads : c->n_kv_heads;
      float *pw = permute_rows(w, heads, c->head_dim);
      owned[nown++] = pw;
      if (!pw) {
        rc = QINS_ENOMEM;
        break;
      }
      data = pw;
    }
    ent[ne++] = (qins_st_entry){w->name, w->dtype, w->ndim, w->shape, data};
    if (ne >= MAX_ENT - 2) {
      rc = qins_error_set(QINS_EUNSUPPORTED, "convert: more than %d tensors", MAX_ENT);
      break;
    }
  }
  char path[1200];
  if (!rc) {
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    rc = qins_st_write(path, ent, ne, meta);
  }
  if (!rc) {
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if (is_l2c) {
      rc = write_llama_config(m, path);
      /* the llama2.c tokenizer beside the checkpoint */
      char dir[1024], tp[1100];
      snprintf(dir, sizeof dir, "%s", m->path);
      char *slash = strrchr(dir, '/');
      if (slash) *slash = 0;
      else snprintf(dir, sizeof dir, ".");
      snprintf(tp, sizeof tp, "%s/tok%d.bin", dir, c->vocab_size);
      if (!rc && access(tp, R_OK)) snprintf(tp, sizeof tp, "%s/tokenizer.bin", dir);
      if (!rc) {
        snprintf(path, sizeof path, "%s/tokenizer.bin", out_dir);
        rc = copy_file(tp, path);
      }
    } else {
      char from[1100];
      snprintf(from, sizeof from, "%s/config.json", m->path);
      rc = copy_file(from, path);
      snprintf(from, sizeof from, "%s/tokenizer.json", m->path);
      snprintf(path, sizeof path, "%s/tokenizer.json", out_dir);
      if (!rc) rc = copy_file(from, path);
      /* a training checkpoint (HF folder) carries its llama2.c tokenizer as tokenizer.bin */
      snprintf(from, sizeof from, "%s/tokenizer.bin", m->path);
      snprintf(path, sizeof path, "%s/tokenizer.bin", out_dir);
      if (!rc) rc = copy_file(from, path);
    }
  }
done:
  if (owned)
    for (int i = 0; i < nown; i++) free(owned[i]);
  if (names)
    for (int i = 0; i < MAX_ENT; i++) free(names[i]);
  free(ent), free(owned), free(names), free(shapes), free(meta), free(covered);
  qins_policy_state_free(st);
  if (llm) qins_llm_destroy(llm);
  qins_backend_destroy(be);
  return rc;
}

/* ---------------------------------------------------------------- loading the codes */

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

int qins_convert_apply(qins_llm *llm, qins_backend *be, const qins_model *m, qins_policy_state **out) {
  *out = NULL;
  char path[1200];
  size_t pl = strlen(m->path);
  if (pl > 12 && !strcmp(m->path + pl - 12, ".safetensors")) snprintf(path, sizeof path, "%s", m->path);
  else snprintf(path, sizeof path, "%s/model.safetensors", m->path);
  qins_st_file *f;
  int rc = qins_st_open(path, &f);
  if (rc) return rc;
  if (!qins_st_meta(f, "qins.converted")) {
    qins_st_close(f);
    return qins_error_set(QINS_EINPUT, "%s: not written by qins convert (no qins.converted metadata)", path);
  }
  qins_policy_state *st;
  if ((rc = qins_policy_state_new(&st))) {
    qins_st_close(f);
    return rc;
  }
  for (int i = 0; i < f->n_meta && !rc; i++) {
    const char *k = f->meta_keys[i], *spec = f->meta_values[i];
    int l = -1, n = 0;
    char pname[32], fs[32], cn[QINS_NAME_MAX], sn[QINS_NAME_MAX], as[48];
    if (sscanf(k, "qins.vcache.%d%n", &l, &n) == 1 && k[n] == 0) {
      qins_dtype fmt;
      qins_alpha_spec al = {QINS_ALPHA_MSE, 0};
      if (!field(spec, "format", fs, sizeof fs) || qins_dtype_parse(fs, &fmt) ||
          (field(spec, "alpha", as, sizeof as) && qins_alpha_spec_parse(as, &al))) {
        rc = qins_error_set(QINS_EINPUT, "%s: metadata %s: bad V cache spec '%s'", path, k, spec);
        break;
      }
      rc = qins_llm_set_vcache(llm, l, fmt, al);
      continue;
    }
    if (sscanf(k, "qins.seg.%d.%31s", &l, pname) != 2) continue;
    int p = -1;
    for (int q = QINS_PATH_V; q <= QINS_PATH_DOWN; q++)
      if (!strcmp(pname, qins_path_name((qins_path)q))) p = q;
    qins_dtype fmt;
    qins_tensor *t = p >= 0 ? qins_llm_matrix(llm, l, path_mat[p]) : NULL;
    if (!t || !field(spec, "format", fs, sizeof fs) || qins_dtype_parse(fs, &fmt) || !field(spec, "codes", cn, sizeof cn)) {
      rc = qins_error_set(QINS_EINPUT, "%s: metadata %s: no such runtime matrix or bad segment '%s'", path, k, spec);
      break;
    }
    const qins_st_tensor *ct = qins_st_find(f, cn);
    const qins_st_tensor *stt = field(spec, "scale", sn, sizeof sn) ? qins_st_find(f, sn) : NULL;
    int64_t ns = qins_format_scale_count(fmt, t->shape[0], t->shape[1]);
    if (!ct || ct->nbytes != (size_t)t->shape[0] * qins_format_row_bytes(fmt, t->shape[1]) ||
        (ns && (!stt || stt->nbytes != (size_t)ns * 4))) {
      rc = qins_error_set(QINS_EINPUT, "%s: segment %s: codes/scales missing or not of the runtime shape", path, k);
      break;
    }
    rc = qins_policy_state_set_matrix(st, be, t, fmt, ct->data, stt ? (const float *)stt->data : NULL);
  }
  qins_st_close(f);
  if (rc) {
    qins_policy_state_free(st);
    return rc;
  }
  *out = st;
  return 0;
}
