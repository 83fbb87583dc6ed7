/* The training loop (see trainer.h): YAML config, model init, optimizer, data, eval, log,
 * metrics, checkpoints and exact resume. */
#include "core/train/trainer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/backend_grad.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/llm/llm.h"
#include "core/metrics.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"
#include "core/train/data.h"
#include "core/train/model_grad.h"
#include "core/train/optim.h"
#include "core/train/train_setup.h"

#define MAX_CKPT_AT 16
#define MAX_HID_LAYERS 64
#define MAX_QINS_PATHS 16

typedef struct tcfg {
  /* run */
  char name[64], out_dir[512], backend[64];
  uint64_t seed;
  int64_t steps, stop_after, checkpoint_every;
  int batch, seq, grad_accum, log_every, eval_every, eval_windows, checkpoint_initial;
  double ckpt_at[MAX_CKPT_AT];
  int n_ckpt_at;
  /* data */
  char text[512], tokenizer[512], shard[600];
  double holdout;
  /* model */
  char init[512];
  qins_llama_shape shape;
  /* optimizer */
  int qins;
  qins_dtype storage;
  double lr, min_lr_ratio, beta1, beta2, eps, wd, clip, qins_lr_scale;
  int device_norm; /* norms by the sumsq op where gradients live (default 1) */
  int64_t warmup;
  char qins_paths[MAX_QINS_PATHS][32];
  int n_qins_paths;
  /* distillation: loss = ce * CE + kl * KL(teacher || student) per position */
  char teacher[512];
  double ce_w, kl_w;
  /* + lambda_hid * mean over hidden_layers of MSE(student, teacher residual stream after layer l) */
  double hid_w;
  int hid_layers[MAX_HID_LAYERS];
  int n_hid_layers;
} tcfg;

/* ------------------------------------------------------------------ config */

static int get_str(const qins_cfg *m, const char *key, const char *what, char *out, size_t n) {
  qins_cfg *c = qins_cfg_get(m, key);
  if (!c) return 0;
  const char *s;
  int rc = qins_cfg_as_string(c, what, &s);
  if (rc) return rc;
  snprintf(out, n, "%s", s);
  return 0;
}
static int get_i64(const qins_cfg *m, const char *key, const char *what, int64_t *out) {
  qins_cfg *c = qins_cfg_get(m, key);
  long long v;
  if (!c) return 0;
  int rc = qins_cfg_as_int(c, what, &v);
  if (!rc) *out = v;
  return rc;
}
static int get_int(const qins_cfg *m, const char *key, const char *what, int *out) {
  int64_t v = *out;
  int rc = get_i64(m, key, what, &v);
  if (!rc) {
    if (v < -2147483647 || v > 2147483647) return qins_error_set(QINS_EINPUT, "%s: %lld out of range", what, (long long)v);
    *out = (int)v;
  }
  return rc;
}
static int get_dbl(const qins_cfg *m, const char *key, const char *what, double *out) {
  qins_cfg *c = qins_cfg_get(m, key);
  return c ? qins_cfg_as_double(c, what, out) : 0;
}
static int get_bool(const qins_cfg *m, const char *key, const char *what, int *out) {
  qins_cfg *c = qins_cfg_get(m, key);
  return c ? qins_cfg_as_bool(c, what, out) : 0;
}

static int positive(const char *what, double v) {
  return v > 0 ? 0 : qins_error_set(QINS_EINPUT, "%s must be > 0 (got %g)", what, v);
}

static int parse_cfg(const qins_cfg *root, tcfg *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "train");
  snprintf(c->out_dir, sizeof c->out_dir, "runs/train");
  snprintf(c->backend, sizeof c->backend, "cpu");
  snprintf(c->init, sizeof c->init, "scratch");
  c->seed = 1;
  c->steps = 100;
  c->batch = 8;
  c->seq = 128;
  c->grad_accum = 1;
  c->log_every = 10;
  c->eval_every = 0;
  c->eval_windows = 32;
  c->holdout = 0.1;
  c->shape = (qins_llama_shape){128, 4, 4, 4, 352, 512, 0, 1, 10000.0, 1e-5, 0.02};
  c->lr = 1e-3;
  c->min_lr_ratio = 0.1;
  c->beta1 = 0.9;
  c->beta2 = 0.95;
  c->eps = 1e-8;
  c->wd = 0.1;
  c->clip = 1.0;
  c->device_norm = 1;
  c->qins_lr_scale = 1.0;
  c->storage = QINS_DT_QINS8;
  static const char *def_paths[] = {"v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  for (int i = 0; i < 5; i++) snprintf(c->qins_paths[i], 32, "%s", def_paths[i]);
  c->n_qins_paths = 5;
  if (!root || root->type != QINS_CFG_MAP) return qins_error_set(QINS_EINPUT, "train config: top level must be a map");
  static const char *top[] = {"run", "data", "model", "optim", "distill", NULL};
  int rc = qins_cfg_check_keys(root, "train config", top);
  if (rc) return rc;
  const qins_cfg *r = qins_cfg_get(root, "run"), *d = qins_cfg_get(root, "data"), *m = qins_cfg_get(root, "model"),
                 *o = qins_cfg_get(root, "optim");
  if (r) {
    static const char *k[] = {"name", "out_dir", "seed", "steps", "batch", "seq", "grad_accum", "log_every",
                              "eval_every", "eval_windows", "checkpoint_every", "checkpoint_at", "stop_after",
                              "checkpoint_initial",
                              "backend", NULL};
    int64_t seed = (int64_t)c->seed;
    int ci = 0;
    if ((rc = qins_cfg_check_keys(r, "run", k)) || (rc = get_str(r, "name", "run.name", c->name, sizeof c->name)) ||
        (rc = get_str(r, "out_dir", "run.out_dir", c->out_dir, sizeof c->out_dir)) ||
        (rc = get_str(r, "backend", "run.backend", c->backend, sizeof c->backend)) ||
        (rc = get_i64(r, "seed", "run.seed", &seed)) || (rc = get_i64(r, "steps", "run.steps", &c->steps)) ||
        (rc = get_int(r, "batch", "run.batch", &c->batch)) || (rc = get_int(r, "seq", "run.seq", &c->seq)) ||
        (rc = get_int(r, "grad_accum", "run.grad_accum", &c->grad_accum)) ||
        (rc = get_int(r, "log_every", "run.log_every", &c->log_every)) ||
        (rc = get_int(r, "eval_every", "run.eval_every", &c->eval_every)) ||
        (rc = get_int(r, "eval_windows", "run.eval_windows", &c->eval_windows)) ||
        (rc = get_i64(r, "checkpoint_every", "run.checkpoint_every", &c->checkpoint_every)) ||
        (rc = get_i64(r, "stop_after", "run.stop_after", &c->stop_after)) ||
        (rc = get_bool(r, "checkpoint_initial", "run.checkpoint_initial", &ci)))
      return rc;
    c->seed = (uint64_t)seed;
    c->checkpoint_initial = ci;
    qins_cfg *ca = qins_cfg_get(r, "checkpoint_at");
    if (ca) {
      if (ca->type != QINS_CFG_SEQ || ca->n > MAX_CKPT_AT)
        return qins_error_set(QINS_EINPUT, "run.checkpoint_at: a list of at most %d fractions in (0, 1]", MAX_CKPT_AT);
      for (int i = 0; i < ca->n; i++) {
        if ((rc = qins_cfg_as_double(ca->items[i], "run.checkpoint_at", &c->ckpt_at[i]))) return rc;
        if (!(c->ckpt_at[i] > 0 && c->ckpt_at[i] <= 1))
          return qins_error_set(QINS_EINPUT, "run.checkpoint_at: %g not in (0, 1]", c->ckpt_at[i]);
      }
      c->n_ckpt_at = ca->n;
    } else {
      c->ckpt_at[0] = 1.0;
      c->n_ckpt_at = 1;
    }
  } else {
    c->ckpt_at[0] = 1.0;
    c->n_ckpt_at = 1;
  }
  if (d) {
    static const char *k[] = {"text", "tokenizer", "shard", "holdout", NULL};
    if ((rc = qins_cfg_check_keys(d, "data", k)) || (rc = get_str(d, "text", "data.text", c->text, sizeof c->text)) ||
        (rc = get_str(d, "tokenizer", "data.tokenizer", c->tokenizer, sizeof c->tokenizer)) ||
        (rc = get_str(d, "shard", "data.shard", c->shard, sizeof c->shard)) ||
        (rc = get_dbl(d, "holdout", "data.holdout", &c->holdout)))
      return rc;
  }
  if (m) {
    static const char *k[] = {"init", "dim", "layers", "heads", "kv_heads", "ffn", "vocab", "seq", "tied",
                              "rope_theta", "norm_eps", "init_std", NULL};
    qins_llama_shape *s = &c->shape;
    if ((rc = qins_cfg_check_keys(m, "model", k)) || (rc = get_str(m, "init", "model.init", c->init, sizeof c->init)) ||
        (rc = get_int(m, "dim", "model.dim", &s->dim)) || (rc = get_int(m, "layers", "model.layers", &s->layers)) ||
        (rc = get_int(m, "heads", "model.heads", &s->heads)) ||
        (rc = get_int(m, "kv_heads", "model.kv_heads", &s->kv_heads)) || (rc = get_int(m, "ffn", "model.ffn", &s->ffn)) ||
        (rc = get_int(m, "vocab", "model.vocab", &s->vocab)) || (rc = get_int(m, "seq", "model.seq", &s->max_seq)) ||
        (rc = get_bool(m, "tied", "model.tied", &s->tied)) ||
        (rc = get_dbl(m, "rope_theta", "model.rope_theta", &s->rope_theta)) ||
        (rc = get_dbl(m, "norm_eps", "model.norm_eps", &s->norm_eps)) ||
        (rc = get_dbl(m, "init_std", "model.init_std", &s->init_std)))
      return rc;
    if (!qins_cfg_get(m, "kv_heads")) s->kv_heads = s->heads;
  }
  if (c->shape.max_seq <= 0) c->shape.max_seq = 2 * c->seq; /* rows are T+1 ids: room for T+1 positions */
  if (o) {
    static const char *k[] = {"kind", "lr", "min_lr_ratio", "warmup", "beta1", "beta2", "eps", "weight_decay",
                              "clip", "qins_storage", "qins_lr_scale", "qins_paths", "device_norm", NULL};
    char kind[32] = "adamw", st[32] = "qins8";
    if ((rc = qins_cfg_check_keys(o, "optim", k)) || (rc = get_str(o, "kind", "optim.kind", kind, sizeof kind)) ||
        (rc = get_dbl(o, "lr", "optim.lr", &c->lr)) ||
        (rc = get_dbl(o, "min_lr_ratio", "optim.min_lr_ratio", &c->min_lr_ratio)) ||
        (rc = get_i64(o, "warmup", "optim.warmup", &c->warmup)) ||
        (rc = get_dbl(o, "beta1", "optim.beta1", &c->beta1)) || (rc = get_dbl(o, "beta2", "optim.beta2", &c->beta2)) ||
        (rc = get_dbl(o, "eps", "optim.eps", &c->eps)) ||
        (rc = get_dbl(o, "weight_decay", "optim.weight_decay", &c->wd)) ||
        (rc = get_dbl(o, "clip", "optim.clip", &c->clip)) ||
        (rc = get_bool(o, "device_norm", "optim.device_norm", &c->device_norm)) ||
        (rc = get_str(o, "qins_storage", "optim.qins_storage", st, sizeof st)) ||
        (rc = get_dbl(o, "qins_lr_scale", "optim.qins_lr_scale", &c->qins_lr_scale)))
      return rc;
    if (!strcmp(kind, "adamw")) c->qins = 0;
    else if (!strcmp(kind, "qins-adamw")) c->qins = 1;
    else return qins_error_set(QINS_EINPUT, "optim.kind: '%s' (expected adamw or qins-adamw)", kind);
    if (!strcmp(st, "qins8")) c->storage = QINS_DT_QINS8;
    else if (!strcmp(st, "qins6")) c->storage = QINS_DT_QINS6;
    else if (!strcmp(st, "qins-f32")) c->storage = QINS_DT_QINS_F32;
    else return qins_error_set(QINS_EINPUT, "optim.qins_storage: '%s' (expected qins8, qins6 or qins-f32)", st);
    qins_cfg *qp = qins_cfg_get(o, "qins_paths");
    if (qp) {
      if (qp->type != QINS_CFG_SEQ || qp->n > MAX_QINS_PATHS)
        return qins_error_set(QINS_EINPUT, "optim.qins_paths: a list of at most %d name parts", MAX_QINS_PATHS);
      for (int i = 0; i < qp->n; i++) {
        const char *s;
        if ((rc = qins_cfg_as_string(qp->items[i], "optim.qins_paths", &s))) return rc;
        snprintf(c->qins_paths[i], 32, "%s", s);
      }
      c->n_qins_paths = qp->n;
    }
  }
  c->ce_w = 1.0;
  c->kl_w = 1.0;
  const qins_cfg *dd = qins_cfg_get(root, "distill");
  if (dd) {
    static const char *k[] = {"teacher", "ce", "kl", "lambda_hid", "hidden_layers", NULL};
    if ((rc = qins_cfg_check_keys(dd, "distill", k)) ||
        (rc = get_str(dd, "teacher", "distill.teacher", c->teacher, sizeof c->teacher)) ||
        (rc = get_dbl(dd, "ce", "distill.ce", &c->ce_w)) || (rc = get_dbl(dd, "kl", "distill.kl", &c->kl_w)) ||
        (rc = get_dbl(dd, "lambda_hid", "distill.lambda_hid", &c->hid_w)))
      return rc;
    if (!(c->ce_w >= 0) || !(c->kl_w >= 0) || !(c->hid_w >= 0))
      return qins_error_set(QINS_EINPUT, "distill.ce, distill.kl and distill.lambda_hid must be >= 0");
    const qins_cfg *hl = qins_cfg_get(dd, "hidden_layers");
    if (hl) {
      if (hl->type != QINS_CFG_SEQ || hl->n > MAX_HID_LAYERS)
        return qins_error_set(QINS_EINPUT, "distill.hidden_layers: a list of at most %d layer indices", MAX_HID_LAYERS);
      for (int i = 0; i < hl->n; i++) {
        long long v;
        if ((rc = qins_cfg_as_int(hl->items[i], "distill.hidden_layers", &v))) return rc;
        if (v < 0 || v > 100000 || (i > 0 && v <= c->hid_layers[i - 1]))
          return qins_error_set(QINS_EINPUT, "distill.hidden_layers: %lld: indices must be >= 0 and increasing", v);
        c->hid_layers[i] = (int)v;
      }
      c->n_hid_layers = hl->n;
    }
    if (c->hid_w > 0 && c->n_hid_layers == 0)
      return qins_error_set(QINS_EINPUT, "distill.lambda_hid > 0 needs distill.hidden_layers");
  }
  if (!c->text[0] && !c->shard[0]) return qins_error_set(QINS_EINPUT, "data.text (a corpus) or data.shard is required");
  if (!c->tokenizer[0]) return qins_error_set(QINS_EINPUT, "data.tokenizer is required");
  if (!c->shard[0]) snprintf(c->shard, sizeof c->shard, "%s/tokens.shard", c->out_dir);
  if ((rc = positive("run.steps", (double)c->steps)) || (rc = positive("run.batch", c->batch)) ||
      (rc = positive("run.seq", c->seq)) || (rc = positive("run.grad_accum", c->grad_accum)) ||
      (rc = positive("optim.lr", c->lr)) || (rc = positive("optim.qins_lr_scale", c->qins_lr_scale)))
    return rc;
  if (!strcmp(c->init, "scratch") && c->seq + 1 > c->shape.max_seq)
    return qins_error_set(QINS_EINPUT, "run.seq %d + 1 exceeds model.seq %d", c->seq, c->shape.max_seq);
  if (c->log_every < 1) c->log_every = 1;
  return 0;
}

/* ------------------------------------------------------------------ files */


/* HF Llama config.json for a config (as hf_config.c reads it back). */
static int write_llama_config(const char *dir, const qins_model_config *c) {
  if (c->arch != QINS_ARCH_LLAMA || c->rope_mode != QINS_ROPE_HALF)
    return qins_error_set(QINS_EUNSUPPORTED,
                          "checkpoint: only Hugging Face Llama models (half-split RoPE) can be written as a folder");
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
  json_object_set_new(j, "bos_token_id", json_integer(c->bos_id >= 0 ? c->bos_id : 1));
  json_object_set_new(j, "eos_token_id", json_integer(c->eos_id >= 0 ? c->eos_id : 2));
  json_object_set_new(j, "hidden_act", json_string("silu"));
  json_object_set_new(j, "torch_dtype", json_string("float32"));
  char path[1100];
  snprintf(path, sizeof path, "%s/config.json", dir);
  int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS) ? qins_error_set(QINS_EIO, "%s: write failed", path) : 0;
  json_decref(j);
  return rc;
}

static int write_weights(const char *dir, const qins_train_model *tm, const char *const *meta) {
  int n = qins_train_model_count(tm);
  qins_st_entry *e = calloc((size_t)n, sizeof *e);
  if (!e) return qins_error_set(QINS_ENOMEM, "no memory");
  for (int i = 0; i < n; i++) {
    const qins_train_param *p = qins_train_model_param(tm, i);
    e[i] = (qins_st_entry){p->name, QINS_DT_F32, p->ndim, p->shape, p->w};
  }
  char path[1100];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  int rc = qins_st_write(path, e, n, meta);
  free(e);
  return rc;
}

static double gauss(uint64_t *st) {
  double u1 = ((double)(qins_splitmix64(st) >> 11) + 0.5) / 9007199254740992.0;
  double u2 = (double)(qins_splitmix64(st) >> 11) / 9007199254740992.0;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int qins_train_init_llama(const char *dir, const qins_llama_shape *s, uint64_t seed) {
  if (s->dim < 1 || s->layers < 1 || s->heads < 1 || s->kv_heads < 1 || s->ffn < 1 || s->vocab < 1 ||
      s->dim % s->heads || s->heads % s->kv_heads || (s->dim / s->heads) % 2)
    return qins_error_set(QINS_EINPUT,
                          "model: dim %d, heads %d, kv_heads %d, ffn %d, vocab %d: need dim divisible by heads, "
                          "heads by kv_heads, an even head size",
                          s->dim, s->heads, s->kv_heads, s->ffn, s->vocab);
  int rc = qins_mkdirs(dir);
  if (rc) return rc;
  qins_model_config c;
  memset(&c, 0, sizeof c);
  c.arch = QINS_ARCH_LLAMA;
  c.dim = s->dim;
  c.n_layers = s->layers;
  c.n_heads = s->heads;
  c.n_kv_heads = s->kv_heads;
  c.head_dim = s->dim / s->heads;
  c.ffn_dim = s->ffn;
  c.vocab_size = s->vocab;
  c.max_seq_len = s->max_seq;
  c.norm_eps = (float)s->norm_eps;
  c.rope_theta = (float)s->rope_theta;
  c.rope_mode = QINS_ROPE_HALF;
  c.tied_embeddings = s->tied;
  c.bos_id = 1;
  c.eos_id = 2;
  if ((rc = write_llama_config(dir, &c))) return rc;
  int hd = c.head_dim, D = s->dim, F = s->ffn;
  int max_t = 3 + 9 * s->layers;
  qins_st_entry *e = calloc((size_t)max_t, sizeof *e);
  char (*names)[QINS_NAME_MAX] = calloc((size_t)max_t, QINS_NAME_MAX);
  int64_t(*shapes)[2] = calloc((size_t)max_t, sizeof *shapes);
  float **bufs = calloc((size_t)max_t, sizeof *bufs);
  int n = 0;
  uint64_t st = seed ^ 0x5eedull;
  if (!e || !names || !shapes || !bufs) {
    rc = qins_error_set(QINS_ENOMEM, "no memory");
    goto done;
  }
  /* weights in a fixed order; each normal matrix draws from the one stream in that order */
#define ADD(nm, r, cdim, normal)                                                           \
  do {                                                                                     \
    snprintf(names[n], QINS_NAME_MAX, "%s", nm);                                           \
    shapes[n][0] = (r);                                                                    \
    shapes[n][1] = (cdim);                                                                 \
    int64_t cdv = (int64_t)(cdim), cnt = (int64_t)(r) * (cdv ? cdv : 1);                                \
    bufs[n] = malloc((size_t)cnt * sizeof(float));                                         \
    if (!bufs[n]) {                                                                        \
      rc = qins_error_set(QINS_ENOMEM, "no memory for %s", nm);                          \
      goto done;                                                                           \
    }                                                                                      \
    for (int64_t q = 0; q < cnt; q++) bufs[n][q] = (normal) ? (float)(s->init_std * gauss(&st)) : 1.0f; \
    e[n] = (qins_st_entry){names[n], QINS_DT_F32, cdv ? 2 : 1, shapes[n], bufs[n]};\
    n++;                                                                                   \
  } while (0)
  ADD("model.embed_tokens.weight", s->vocab, D, 1);
  for (int l = 0; l < s->layers; l++) {
    char nm[QINS_NAME_MAX];
#define LNAME(x) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, x), nm)
    ADD(LNAME("input_layernorm.weight"), D, 0, 0);
    ADD(LNAME("self_attn.q_proj.weight"), s->heads * hd, D, 1);
    ADD(LNAME("self_attn.k_proj.weight"), s->kv_heads * hd, D, 1);
    ADD(LNAME("self_attn.v_proj.weight"), s->kv_heads * hd, D, 1);
    ADD(LNAME("self_attn.o_proj.weight"), D, s->heads * hd, 1);
    ADD(LNAME("post_attention_layernorm.weight"), D, 0, 0);
    ADD(LNAME("mlp.gate_proj.weight"), F, D, 1);
    ADD(LNAME("mlp.up_proj.weight"), F, D, 1);
    ADD(LNAME("mlp.down_proj.weight"), D, F, 1);
#undef LNAME
  }
  ADD("model.norm.weight", D, 0, 0);
  if (!s->tied) ADD("lm_head.weight", s->vocab, D, 1);
#undef ADD
  char path[1100];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  rc = qins_st_write(path, e, n, NULL);
done:
  if (bufs)
    for (int i = 0; i < n; i++) free(bufs[i]);
  free(bufs);
  free(shapes);
  free(names);
  free(e);
  return rc;
}

/* Row permutation of a q/k projection from llama2.c's interleaved RoPE pairs (2i, 2i+1) to the
 * HF half split (i, i + hd/2): new row h*hd + j*hd/2 + i = old row h*hd + 2i + j. */
static void permute_rows(float *dst, const float *src, int heads, int hd, int64_t cols) {
  for (int h = 0; h < heads; h++)
    for (int i = 0; i < hd / 2; i++)
      for (int j = 0; j < 2; j++)
        memcpy(dst + ((int64_t)h * hd + (int64_t)j * (hd / 2) + i) * cols, src + ((int64_t)h * hd + 2 * i + j) * cols,
               (size_t)cols * sizeof(float));
}

int qins_train_export_hf(const qins_model *m, const char *dir) {
  qins_model_config c = m->cfg;
  if (c.arch != QINS_ARCH_LLAMA || c.rope_scaling != QINS_ROPE_SCALING_NONE || c.attn_bias || c.mlp_bias ||
      (c.rope_mode == QINS_ROPE_INTERLEAVED && c.rope_dim != c.head_dim))
    return qins_error_set(QINS_EUNSUPPORTED, "%s: only plain Llama models can be exported as an HF folder", m->path);
  int permute = c.rope_mode == QINS_ROPE_INTERLEAVED;
  c.rope_mode = QINS_ROPE_HALF;
  int rc = qins_mkdirs(dir);
  if (rc || (rc = write_llama_config(dir, &c))) return rc;
  /* f32 copies of every weight (the train model does the conversion from f16/bf16) */
  qins_backend *be = NULL;
  qins_train_model *tm = NULL;
  if ((rc = qins_backend_create("cpu", &be)) || (rc = qins_train_model_create(m, be, &tm))) goto done;
  if (permute)
    for (int i = 0; i < qins_train_model_count(tm); i++) {
      const qins_train_param *p = qins_train_model_param(tm, i);
      int heads = strstr(p->name, "q_proj.weight") ? c.n_heads : strstr(p->name, "k_proj.weight") ? c.n_kv_heads : 0;
      if (!heads) continue;
      float *tmp = malloc((size_t)p->n * sizeof(float));
      if (!tmp) {
        rc = qins_error_set(QINS_ENOMEM, "no memory");
        goto done;
      }
      permute_rows(tmp, p->w, heads, c.head_dim, p->shape[1]);
      memcpy(p->w, tmp, (size_t)p->n * sizeof(float));
      free(tmp);
    }
  rc = write_weights(dir, tm, NULL);
done:
  qins_train_model_destroy(tm);
  if (be) qins_backend_destroy(be);
  return rc;
}

/* ------------------------------------------------------------------ checkpoints */

typedef struct trainer {
  tcfg c;
  qins_backend *be;
  qins_train_model *tm;
  qins_optim *o;
  qins_model_config mcfg;
  qins_shard *shard;
  qins_data_split train, held;
  int64_t step;      /* steps done */
  int64_t data_pos;  /* batches served */
  FILE *log;
  qins_model *teacher_m;
  qins_llm *teacher;
  float *tlogits;
  double last_kl;
  /* hidden-state term: the teacher's rows per chosen layer [n_hid_layers][seq+1][dim] */
  qins_llm_kv *tkv;
  float *thid;
  int hid_dim;
  double last_hid, last_ce;
  qins_metric *m_loss, *m_eval, *m_lr, *m_norm, *m_tps, *m_tokens, *m_step;
} trainer;

int qins_train_optim_step(qins_train_model *tm, qins_optim *o, double loss, int device_norm, qins_step_report *rep) {
  int np = qins_optim_count(o), rc = 0;
  if (np != qins_train_model_count(tm))
    return qins_error_set(QINS_EINVAL, "train step: optimizer has %d parameters, model %d", np,
                          qins_train_model_count(tm));
  if (!device_norm) {
    /* host norms: every gradient comes down (500 MB for GPT-2 124M on a device) */
    if ((rc = qins_train_model_pull_grads(tm)) || (rc = qins_optim_step(o, loss, rep))) return rc;
  } else {
    /* device norms: one sumsq per gradient into slots of one buffer, read once (3 floats each);
     * only the host-updated (QINS-AdamW) gradients come down */
    const qins_tensor *wt, *gt;
    if ((rc = qins_train_model_param_tensors(tm, 0, &wt, &gt))) return rc;
    qins_tensor sq;
    int64_t shape[1] = {3 * (int64_t)np};
    float *host = malloc((size_t)shape[0] * sizeof *host);
    double *psq = malloc((size_t)np * sizeof *psq);
    if (!host || !psq) {
      free(host);
      free(psq);
      return qins_error_set(QINS_ENOMEM, "train step: no memory for %d sums of squares", np);
    }
    rc = qins_tensor_init(&sq, "grad.sumsq", QINS_DT_F32, 1, shape);
    if (!rc) rc = qins_tensor_alloc(gt->buf->be, &sq);
    for (int i = 0; i < np && !rc; i++) {
      if (!(rc = qins_train_model_param_tensors(tm, i, &wt, &gt))) rc = qins_op_sumsq(gt->buf->be, gt, &sq, i);
      if (!rc && !qins_optim_on_device(o, i)) rc = qins_train_model_pull_grad(tm, i);
    }
    if (!rc) rc = qins_tensor_read(&sq, host);
    for (int i = 0; i < np && !rc; i++) psq[i] = qins_sumsq_value(host + 3 * i);
    if (!rc) rc = qins_optim_step_sq(o, loss, psq, rep);
    if (sq.buf) qins_tensor_free(&sq);
    free(host);
    free(psq);
    if (rc) return rc;
  }
  for (int i = 0; i < np && !rc; i++) /* host-side (QINS-AdamW) updates go back up */
    if (!qins_optim_on_device(o, i)) rc = qins_train_model_push_param(tm, i);
  return rc;
}

static qins_train_step_fn step_hook;
static void *step_hook_ctx;

void qins_train_set_step_hook(qins_train_step_fn fn, void *ctx) {
  step_hook = fn;
  step_hook_ctx = ctx;
}

static void fmt_hex(char *buf, size_t n, double v) { snprintf(buf, n, "%a", v); }

static int save_checkpoint(trainer *t, const char *dir) {
  int rc = qins_mkdirs(dir);
  if (rc) return rc;
  if ((rc = write_llama_config(dir, &t->mcfg))) return rc;
  /* device backends: weights and Adam moments updated on the device come back first */
  if ((rc = qins_train_model_pull_weights(t->tm)) || (rc = qins_optim_sync_state(t->o, 0))) return rc;
  if ((rc = write_weights(dir, t->tm, NULL))) return rc;
  char path[1100];
  snprintf(path, sizeof path, "%s/tokenizer.bin", dir);
  if ((rc = qins_copy_file(t->c.tokenizer, path))) return rc;
  /* optimizer + loop state */
  int np = qins_optim_count(t->o);
  int cap = 4 * np;
  qins_st_entry *e = calloc((size_t)cap, sizeof *e);
  char (*names)[QINS_NAME_MAX + 8] = calloc((size_t)cap, QINS_NAME_MAX + 8);
  int64_t(*shapes)[1] = calloc((size_t)cap, sizeof *shapes);
  /* metadata: fixed keys then "t.<name>" / "flag.<name>" per parameter */
  int nmeta = 2 * (8 + 2 * np) + 1;
  char **meta = calloc((size_t)nmeta, sizeof *meta);
  if (!e || !names || !shapes || !meta) {
    rc = qins_error_set(QINS_ENOMEM, "no memory");
    goto done;
  }
  int n = 0, k = 0;
  for (int i = 0; i < np; i++) qins_train_optim_param_entries(t->o, i, e, names, shapes, &n, meta, &k);
  qins_optim_state os;
  qins_optim_get_state(t->o, &os);
  char v[8][64];
  snprintf(v[0], 64, "%lld", (long long)t->step);
  snprintf(v[1], 64, "%lld", (long long)t->data_pos);
  snprintf(v[2], 64, "%llu", (unsigned long long)t->c.seed);
  snprintf(v[3], 64, "%lld", (long long)os.steps);
  fmt_hex(v[4], 64, os.lr_factor);
  fmt_hex(v[5], 64, os.norm_ema);
  snprintf(v[6], 64, "%d", os.norm_count);
  snprintf(v[7], 64, "%s", t->c.qins ? "qins-adamw" : "adamw");
  static const char *keys[8] = {"step", "data_position", "seed", "optim.steps", "optim.lr_factor", "optim.norm_ema",
                                "optim.norm_count", "optim.kind"};
  for (int q = 0; q < 8; q++) {
    meta[k++] = strdup(keys[q]);
    meta[k++] = strdup(v[q]);
  }
  meta[k] = NULL;
  for (int q = 0; q < k; q++)
    if (!meta[q]) {
      rc = qins_error_set(QINS_ENOMEM, "no memory");
      goto done;
    }
  snprintf(path, sizeof path, "%s/optim.safetensors", dir);
  rc = qins_st_write(path, e, n, (const char *const *)meta);
done:
  if (meta)
    for (int q = 0; q < nmeta && meta[q]; q++) free(meta[q]);
  free(meta);
  free(shapes);
  free(names);
  free(e);
  return rc;
}

static int meta_ll(const qins_st_file *f, const char *key, long long *out) {
  const char *s = qins_st_meta(f, key);
  if (!s) return qins_error_set(QINS_EINPUT, "%s: metadata key '%s' missing", f->path, key);
  char *end;
  *out = strtoll(s, &end, 10);
  if (*end) return qins_error_set(QINS_EINPUT, "%s: metadata %s = '%s' is not an integer", f->path, key, s);
  return 0;
}
static int meta_d(const qins_st_file *f, const char *key, double *out) {
  const char *s = qins_st_meta(f, key);
  if (!s) return qins_error_set(QINS_EINPUT, "%s: metadata key '%s' missing", f->path, key);
  char *end;
  *out = strtod(s, &end);
  if (*end) return qins_error_set(QINS_EINPUT, "%s: metadata %s = '%s' is not a number", f->path, key, s);
  return 0;
}

static int restore_optim(trainer *t, const char *dir) {
  char path[1100];
  snprintf(path, sizeof path, "%s/optim.safetensors", dir);
  qins_st_file *f = NULL;
  int rc = qins_st_open(path, &f);
  if (rc) return rc;
  long long step = 0, pos = 0, seed = 0, osteps = 0, ncount = 0;
  double lrf = 1, ema = 0;
  if ((rc = meta_ll(f, "step", &step)) || (rc = meta_ll(f, "data_position", &pos)) || (rc = meta_ll(f, "seed", &seed)) ||
      (rc = meta_ll(f, "optim.steps", &osteps)) || (rc = meta_ll(f, "optim.norm_count", &ncount)) ||
      (rc = meta_d(f, "optim.lr_factor", &lrf)) || (rc = meta_d(f, "optim.norm_ema", &ema)))
    goto done;
  const char *kind = qins_st_meta(f, "optim.kind");
  if (!kind || strcmp(kind, t->c.qins ? "qins-adamw" : "adamw") != 0) {
    rc = qins_error_set(QINS_EINPUT, "%s: checkpoint optimizer '%s' differs from the config's %s", path,
                        kind ? kind : "?", t->c.qins ? "qins-adamw" : "adamw");
    goto done;
  }
  if ((uint64_t)seed != t->c.seed) {
    rc = qins_error_set(QINS_EINPUT, "%s: checkpoint seed %lld differs from run.seed %llu", path, seed,
                        (unsigned long long)t->c.seed);
    goto done;
  }
  for (int i = 0; i < qins_optim_count(t->o); i++) {
    qins_optim_param_state ps;
    qins_optim_param_state_get(t->o, i, &ps);
    const char *pn = qins_optim_name(t->o, i);
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
    long long tt = 0, fl = 0;
    char kb[QINS_NAME_MAX + 8];
    snprintf(kb, sizeof kb, "t.%s", pn);
    if ((rc = meta_ll(f, kb, &tt))) goto done;
    snprintf(kb, sizeof kb, "flag.%s", pn);
    if ((rc = meta_ll(f, kb, &fl))) goto done;
    *ps.t = tt;
    *ps.flagged = (int)fl;
    qins_optim_refresh_weights(t->o, i);
  }
  qins_optim_state os = {osteps, (float)lrf, ema, (int)ncount};
  qins_optim_set_state(t->o, &os);
  t->step = step;
  t->data_pos = pos;
done:
  qins_st_close(f);
  return rc;
}

/* ------------------------------------------------------------------ the loop */

static int name_is_qins(const tcfg *c, const char *name, int ndim) {
  if (!c->qins || ndim != 2) return 0;
  for (int i = 0; i < c->n_qins_paths; i++)
    if (strstr(name, c->qins_paths[i])) return 1;
  return 0;
}

static int distill_hook(void *user, const int32_t *ids, int n, int V, float *dl, double *loss);
static int hidden_hook(void *user, const int32_t *ids, int n, int layer, int dim, const float *h, float *dh,
                       double *loss);

static int eval_heldout(trainer *t, double *mean) {
  int64_t nw = qins_data_eval_windows(&t->held, t->c.seq);
  if (nw > t->c.eval_windows) nw = t->c.eval_windows;
  *mean = NAN;
  if (nw <= 0) return 0;
  int32_t *ids = malloc((size_t)(t->c.seq + 1) * sizeof *ids);
  if (!ids) return qins_error_set(QINS_ENOMEM, "no memory");
  double sum = 0;
  int rc = 0;
  qins_train_model_set_logit_hook(t->tm, NULL, NULL); /* held-out loss: plain cross-entropy */
  qins_train_model_set_hidden_hook(t->tm, NULL, NULL);
  for (int64_t j = 0; j < nw && !rc; j++) {
    double l = 0;
    rc = qins_data_eval_window(&t->held, j, t->c.seq, ids);
    /* the gradient pass comes with the loss; it is discarded (zeroed) below */
    if (!rc) rc = qins_train_model_loss_grad(t->tm, ids, t->c.seq + 1, &l);
    sum += l;
  }
  free(ids);
  if (t->teacher) qins_train_model_set_logit_hook(t->tm, distill_hook, t);
  if (t->thid) qins_train_model_set_hidden_hook(t->tm, hidden_hook, t);
  qins_optim_zero_grad(t->o);
  if (!rc) rc = qins_train_model_zero_grad(t->tm);
  if (!rc) *mean = sum / (double)nw;
  return rc;
}

/* Distillation (logit hook): dlogits holds (s - onehot)/(n-1) for the student's softmax s; the
 * teacher's softmax p comes from the inference runtime on the same ids. New gradient:
 * ce * dlogits + kl * (s - p)/(n-1); loss: ce * CE + kl * mean KL(p || s). */
static int distill_hook(void *user, const int32_t *ids, int n, int V, float *dl, double *loss) {
  trainer *t = user;
  qins_llm_reset(t->teacher);
  int rc = qins_llm_forward(t->teacher, ids, n, 1, t->tlogits, NULL);
  if (rc) return rc;
  /* the teacher's hidden states of the same ids, layer range by layer range (no head) */
  for (int i = 0, l0 = 0; t->thid && i < t->c.n_hid_layers; i++) {
    float *x = t->thid + (size_t)i * (size_t)(t->c.seq + 1) * (size_t)t->hid_dim;
    if (i > 0) memcpy(x, x - (size_t)(t->c.seq + 1) * (size_t)t->hid_dim, (size_t)n * (size_t)t->hid_dim * sizeof(float));
    if ((rc = qins_llm_forward_range(t->teacher, t->tkv, i == 0 ? ids : NULL, x, n, 0, l0, t->c.hid_layers[i] + 1,
                                     NULL, NULL)))
      return rc;
    l0 = t->c.hid_layers[i] + 1;
  }
  t->last_ce += *loss;
  double kl_sum = qins_train_distill_logits(ids, n, V, t->tlogits, dl, (float)t->c.ce_w, (float)t->c.kl_w);
  t->last_kl += kl_sum / (n - 1); /* summed over the step's rows; the loop averages */
  *loss = t->c.ce_w * *loss + t->c.kl_w * kl_sum / (n - 1);
  return 0;
}

/* Hidden-state term (hidden hook, after distill_hook captured the teacher's rows): for each chosen
 * layer l, MSE_l = sum over the n rows and dim columns of (h - h_teacher)^2 / (n * dim); the term
 * is lambda_hid * mean over the K chosen layers of MSE_l, so its gradient on h is
 * lambda_hid * 2 (h - h_teacher) / (K * n * dim). */
static int hidden_hook(void *user, const int32_t *ids, int n, int layer, int dim, const float *h, float *dh,
                       double *loss) {
  (void)ids;
  trainer *t = user;
  int i = 0;
  while (i < t->c.n_hid_layers && t->c.hid_layers[i] != layer) i++;
  if (i == t->c.n_hid_layers) return 0;
  const float *th = t->thid + (size_t)i * (size_t)(t->c.seq + 1) * (size_t)t->hid_dim;
  double norm = (double)t->c.n_hid_layers * n * dim, sum = 0;
  float g = (float)(2.0 * t->c.hid_w / norm);
  for (int64_t j = 0; j < (int64_t)n * dim; j++) {
    double d = (double)h[j] - th[j];
    sum += d * d;
    dh[j] = g * (float)d;
  }
  t->last_hid += sum / norm;
  *loss += t->c.hid_w * sum / norm;
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ckpt_due(const tcfg *c, int64_t s) {
  if (c->checkpoint_every > 0 && s % c->checkpoint_every == 0) return 1;
  for (int i = 0; i < c->n_ckpt_at; i++) {
    int64_t at = (int64_t)ceil(c->ckpt_at[i] * (double)c->steps);
    if (at < 1) at = 1;
    if (s == at) return 1;
  }
  return c->stop_after > 0 && s == c->stop_after;
}

static void trainer_free(trainer *t) {
  qins_llm_kv_destroy(t->tkv);
  free(t->thid);
  qins_llm_destroy(t->teacher);
  qins_model_close(t->teacher_m);
  free(t->tlogits);
  if (t->log) fclose(t->log);
  qins_optim_destroy(t->o);
  qins_train_model_destroy(t->tm);
  qins_shard_close(t->shard);
  if (t->be) qins_backend_destroy(t->be);
}

int qins_train_run(const qins_train_opts *opts, qins_train_result *res) {
  memset(res, 0, sizeof *res);
  res->eval_loss = res->eval_ppl = NAN;
  qins_cfg *root = NULL;
  trainer t;
  memset(&t, 0, sizeof t);
  int rc = qins_cfg_load_file(opts->config, &root);
  for (int i = 0; !rc && i < opts->n_sets; i++) rc = qins_cfg_set(root, opts->sets[i]);
  if (!rc) rc = parse_cfg(root, &t.c);
  qins_cfg_free(root);
  if (rc) return rc;
  tcfg *c = &t.c;
  snprintf(res->out_dir, sizeof res->out_dir, "%s", c->out_dir);
  if ((rc = qins_mkdirs(c->out_dir))) return rc;
  FILE *pr = opts->progress;
  /* data */
  int rebuilt = 0;
  if (c->text[0] && (rc = qins_shard_build(c->text, c->tokenizer, c->shard, &rebuilt))) goto out;
  if ((rc = qins_shard_open(c->shard, c->tokenizer, &t.shard))) goto out;
  if ((rc = qins_data_split_make(t.shard, c->holdout, c->seq, &t.train, &t.held))) goto out;
  if (pr)
    fprintf(pr, "data: %s: %lld tokens (%s), train %lld, held-out %lld (last %.1f%%)\n", c->shard,
            (long long)qins_shard_count(t.shard), rebuilt ? "tokenized now" : "cached",
            (long long)(t.train.end - t.train.begin), (long long)(t.held.end - t.held.begin), 100 * c->holdout);
  /* model */
  char model_path[1024];
  if (opts->resume) snprintf(model_path, sizeof model_path, "%s", opts->resume);
  else if (!strcmp(c->init, "scratch")) {
    snprintf(model_path, sizeof model_path, "%s/init", c->out_dir);
    if ((rc = qins_train_init_llama(model_path, &c->shape, c->seed))) goto out;
  } else snprintf(model_path, sizeof model_path, "%s", c->init);
  qins_model *m = NULL;
  if ((rc = qins_model_open(model_path, &m))) goto out;
  if (m->cfg.rope_mode != QINS_ROPE_HALF && !opts->resume) {
    /* a llama2.c model: train (and checkpoint) its HF form, q/k rows permuted to half-split RoPE */
    snprintf(model_path, sizeof model_path, "%s/init", c->out_dir);
    rc = qins_train_export_hf(m, model_path);
    qins_model_close(m);
    m = NULL;
    if (rc || (rc = qins_model_open(model_path, &m))) goto out;
  }
  t.mcfg = m->cfg;
  t.mcfg.rope_short_factor = t.mcfg.rope_long_factor = NULL; /* not needed after the copy below */
  if ((rc = qins_backend_create(c->backend, &t.be)) == 0) rc = qins_train_model_create(m, t.be, &t.tm);
  int vocab = m->cfg.vocab_size, maxpos = m->cfg.max_seq_len;
  qins_model_close(m);
  if (rc) goto out;
  if ((int64_t)qins_shard_vocab(t.shard) > vocab) {
    rc = qins_error_set(QINS_EINPUT, "%s: tokenizer vocabulary %u is larger than the model's %d", c->shard,
                        qins_shard_vocab(t.shard), vocab);
    goto out;
  }
  if (c->seq + 1 > maxpos) {
    rc = qins_error_set(QINS_EINPUT, "run.seq %d + 1 exceeds the model's %d positions", c->seq, maxpos);
    goto out;
  }
  /* optimizer */
  qins_optim_config oc = qins_optim_config_default();
  oc.adamw = (qins_adamw_config){(float)c->lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->wd};
  oc.schedule = (qins_lr_schedule){c->warmup, c->steps, (float)c->min_lr_ratio};
  oc.clip_norm = (float)c->clip;
  oc.accum_steps = c->batch * c->grad_accum; /* each row adds the gradient of its own mean loss */
  if ((rc = qins_optim_create(&oc, &t.o))) goto out;
  int n_qins = 0;
  for (int i = 0; i < qins_train_model_count(t.tm); i++) {
    const qins_train_param *p = qins_train_model_param(t.tm, i);
    qins_param_opts po = qins_param_opts_default();
    po.no_decay = p->is_vector;
    if (name_is_qins(c, p->name, p->ndim)) {
      po.qins = 1;
      po.storage = c->storage;
      po.rows = p->shape[0];
      po.lr_scale = (float)c->qins_lr_scale;
      n_qins++;
    }
    const qins_tensor *wt, *gt;
    /* plain AdamW updates the parameter where it lives through the backend's adamw_step op (on
     * the cpu: threaded, and bit for bit the host optimizer's arithmetic, tests/test_train_vk.c) */
    if (!po.qins && !qins_train_model_param_tensors(t.tm, i, &wt, &gt))
      rc = qins_optim_add_device(t.o, p->name, p->w, p->g, p->n, &po, wt, gt);
    else
      rc = qins_optim_add(t.o, p->name, p->w, p->g, p->n, &po);
    if (rc < 0) goto out;
  }
  rc = 0;
  if (opts->resume && (rc = restore_optim(&t, opts->resume))) goto out;
  /* device backends: QINS weights were put on their grid and a checkpoint restored on the host */
  if ((rc = qins_train_model_push_weights(t.tm)) || (rc = qins_optim_sync_state(t.o, 1))) goto out;
  if (c->teacher[0]) {
    qins_llm_options lo = {c->seq + 1, 0};
    if ((rc = qins_model_open(c->teacher, &t.teacher_m)) || (rc = qins_llm_create(t.teacher_m, t.be, &lo, &t.teacher)))
      goto out;
    if (qins_llm_vocab(t.teacher) != vocab) {
      rc = qins_error_set(QINS_EINPUT, "distill.teacher %s: vocabulary %d differs from the student's %d", c->teacher,
                          qins_llm_vocab(t.teacher), vocab);
      goto out;
    }
    t.tlogits = malloc((size_t)(c->seq + 1) * vocab * sizeof(float));
    if (!t.tlogits) {
      rc = qins_error_set(QINS_ENOMEM, "no memory for teacher logits");
      goto out;
    }
    qins_train_model_set_logit_hook(t.tm, distill_hook, &t);
    if (c->n_hid_layers > 0) {
      qins_model_config tc = t.teacher_m->cfg;
      if (tc.dim != t.mcfg.dim || c->hid_layers[c->n_hid_layers - 1] >= tc.n_layers ||
          c->hid_layers[c->n_hid_layers - 1] >= t.mcfg.n_layers) {
        rc = qins_error_set(QINS_EINPUT,
                            "distill.hidden_layers: layer %d and width %d must exist in both the teacher (%d layers, "
                            "dim %d) and the student (%d layers, dim %d)",
                            c->hid_layers[c->n_hid_layers - 1], (int)t.mcfg.dim, tc.n_layers, (int)tc.dim,
                            t.mcfg.n_layers, (int)t.mcfg.dim);
        goto out;
      }
      t.hid_dim = (int)tc.dim;
      t.thid = malloc((size_t)c->n_hid_layers * (size_t)(c->seq + 1) * (size_t)tc.dim * sizeof(float));
      if (!t.thid) {
        rc = qins_error_set(QINS_ENOMEM, "no memory for teacher hidden states");
        goto out;
      }
      if ((rc = qins_llm_kv_create(t.teacher, 0, tc.n_layers, &t.tkv))) goto out;
      qins_train_model_set_hidden_hook(t.tm, hidden_hook, &t);
    }
  }
  if (pr)
    fprintf(pr, "model: %s, %d tensors (%d QINS %s), optimizer %s, lr %g%s\n", model_path,
            qins_train_model_count(t.tm), n_qins, qins_dtype_name(c->storage), c->qins ? "qins-adamw" : "adamw",
            c->lr, opts->resume ? ", resumed" : "");
  /* log */
  char path[1100];
  snprintf(path, sizeof path, "%s/train_log.jsonl", c->out_dir);
  t.log = fopen(path, opts->resume ? "a" : "w");
  if (!t.log) {
    rc = qins_error_set(QINS_EIO, "%s: cannot open: %s", path, strerror(errno));
    goto out;
  }
  char labels[128];
  snprintf(labels, sizeof labels, "run=\"%s\"", c->name);
  t.m_loss = qins_metric_gauge("qins_train_loss", "training loss of the last step", labels);
  t.m_eval = qins_metric_gauge("qins_train_eval_loss", "held-out mean loss at the last evaluation", labels);
  t.m_lr = qins_metric_gauge("qins_train_lr", "learning rate of the last step", labels);
  t.m_norm = qins_metric_gauge("qins_train_grad_norm", "global gradient norm of the last step", labels);
  t.m_tps = qins_metric_gauge("qins_train_tokens_per_second", "training throughput", labels);
  t.m_tokens = qins_metric_counter("qins_train_tokens_total", "training tokens processed", labels);
  t.m_step = qins_metric_gauge("qins_train_step", "optimizer steps done", labels);
  int tty = pr && isatty(fileno(pr));
  int T = c->seq, B = c->batch;
  int32_t *batch = malloc((size_t)B * (T + 1) * sizeof *batch);
  if (!batch) {
    rc = qins_error_set(QINS_ENOMEM, "no memory");
    goto out;
  }
  double t0 = now_s();
  int64_t first = t.step, tokens = 0;
  if (c->checkpoint_initial && t.step == 0) {
    /* step 0: the starting point as the forward sees it (QINS weights already on their grid) */
    snprintf(res->last_checkpoint, sizeof res->last_checkpoint, "%s/ckpt-000000", c->out_dir);
    if ((rc = save_checkpoint(&t, res->last_checkpoint))) goto out_batch;
    t0 = now_s();
  }
  while (t.step < c->steps) {
    qins_optim_zero_grad(t.o);
    if ((rc = qins_train_model_zero_grad(t.tm))) break;
    double loss_sum = 0;
    t.last_kl = t.last_hid = t.last_ce = 0;
    for (int a = 0; a < c->grad_accum && !rc; a++) {
      rc = qins_data_batch(&t.train, c->seed, t.data_pos++, B, T, batch);
      for (int b = 0; b < B && !rc; b++) {
        double l = 0;
        rc = qins_train_model_loss_grad(t.tm, batch + (size_t)b * (T + 1), T + 1, &l);
        loss_sum += l;
        qins_optim_micro_done(t.o);
      }
    }
    if (rc) break;
    double loss = loss_sum / (double)(B * c->grad_accum);
    qins_step_report rep;
    if ((rc = qins_train_optim_step(t.tm, t.o, loss, c->device_norm, &rep))) break;
    t.step++;
    tokens += (int64_t)B * c->grad_accum * T;
    double el = now_s() - t0, tps = (double)tokens / (el > 0 ? el : 1e-9);
    char kl_text[160] = "";
    if (t.teacher) {
      int w = snprintf(kl_text, sizeof kl_text, ", \"ce\": %.9g, \"kl\": %.9g", t.last_ce / (B * c->grad_accum),
                       t.last_kl / (B * c->grad_accum));
      if (t.thid && w > 0 && w < (int)sizeof kl_text)
        snprintf(kl_text + w, sizeof kl_text - (size_t)w, ", \"hid_mse\": %.9g", t.last_hid / (B * c->grad_accum));
    }
    fprintf(t.log, "{\"step\": %lld, \"loss\": %.17g, \"lr\": %.9g, \"grad_norm\": %.17g, \"tokens_per_s\": %.1f%s%s}\n",
            (long long)t.step, loss, (double)rep.lr, rep.grad_norm, tps, rep.applied ? "" : ", \"skipped\": true",
            kl_text);
    qins_metric_set(t.m_loss, loss);
    qins_metric_set(t.m_lr, rep.lr);
    qins_metric_set(t.m_norm, rep.grad_norm);
    qins_metric_set(t.m_tps, tps);
    qins_metric_add(t.m_tokens, (double)B * c->grad_accum * T);
    qins_metric_set(t.m_step, (double)t.step);
    if (step_hook) step_hook(step_hook_ctx, t.step, c->steps, loss, rep.lr);
    res->last_loss = loss;
    if (rep.anomaly != QINS_ANOMALY_NONE && pr) fprintf(pr, "%s%s\n", tty ? "\n" : "", rep.message);
    if (pr && (t.step % c->log_every == 0 || t.step == c->steps)) {
      double eta = (double)(c->steps - t.step) * el / (double)(t.step - first);
      fprintf(pr, "%sstep %lld/%lld  loss %.4f  lr %.3g  gnorm %.3f  %.0f tok/s  eta %dm%02ds%s", tty ? "\r" : "",
              (long long)t.step, (long long)c->steps, loss, (double)rep.lr, rep.grad_norm, tps, (int)(eta / 60),
              (int)eta % 60, tty ? "   " : "\n");
      fflush(pr);
    }
    if ((c->eval_every > 0 && t.step % c->eval_every == 0) || t.step == c->steps) {
      double el2;
      if ((rc = eval_heldout(&t, &el2))) break;
      if (!isnan(el2)) {
        fprintf(t.log, "{\"step\": %lld, \"eval_loss\": %.17g, \"eval_ppl\": %.9g}\n", (long long)t.step, el2, exp(el2));
        qins_metric_set(t.m_eval, el2);
        res->eval_loss = el2;
        res->eval_ppl = exp(el2);
        if (pr) fprintf(pr, "%seval step %lld: held-out loss %.4f, perplexity %.3f\n", tty ? "\n" : "",
                        (long long)t.step, el2, exp(el2));
      }
    }
    fflush(t.log);
    if (ckpt_due(c, t.step)) {
      snprintf(res->last_checkpoint, sizeof res->last_checkpoint, "%s/ckpt-%06lld", c->out_dir, (long long)t.step);
      if ((rc = save_checkpoint(&t, res->last_checkpoint))) break;
      if (pr) fprintf(pr, "%scheckpoint: %s\n", tty ? "\n" : "", res->last_checkpoint);
    }
    if (c->stop_after > 0 && t.step >= c->stop_after) break;
  }
out_batch:
  free(batch);
  res->steps = t.step;
  double el = now_s() - t0;
  res->tokens_per_s = el > 0 ? (double)tokens / el : 0;
out:
  trainer_free(&t);
  return rc;
}

/* ------------------------------------------------------------------ setup for the train stages */

struct qins_train_setup {
  tcfg c;
};

int qins_train_setup_load(const char *config, const char *const *sets, int n_sets, qins_train_setup **out) {
  *out = NULL;
  qins_cfg *root = NULL;
  int rc = qins_cfg_load_file(config, &root);
  for (int i = 0; !rc && i < n_sets; i++) rc = qins_cfg_set(root, sets[i]);
  qins_train_setup *s = rc ? NULL : calloc(1, sizeof *s);
  if (!rc && !s) rc = qins_error_set(QINS_ENOMEM, "no memory");
  if (!rc) rc = parse_cfg(root, &s->c);
  qins_cfg_free(root);
  if (rc) {
    free(s);
    return qins_error_wrap(rc, "%s: ", config);
  }
  *out = s;
  return 0;
}

void qins_train_setup_free(qins_train_setup *s) { free(s); }

void qins_train_setup_get(const qins_train_setup *s, qins_train_setup_info *o) {
  const tcfg *c = &s->c;
  *o = (qins_train_setup_info){c->name,  c->out_dir, c->tokenizer,  c->text,       c->shard,    c->init,
                               c->backend, c->seed, c->steps,      c->stop_after, c->checkpoint_every,
                               c->batch, c->seq,    c->grad_accum, c->qins,       c->log_every, c->holdout,
                               strcmp(c->init, "scratch") ? 0 : c->shape.layers, c->teacher[0] != 0,
                               c->eval_every, c->eval_windows, c->checkpoint_initial,
                               c->teacher, c->ce_w, c->kl_w, c->hid_w};
}

int qins_train_setup_model(const qins_train_setup *s, const char *dir, char *path, size_t n) {
  const tcfg *c = &s->c;
  if (!strcmp(c->init, "scratch")) {
    snprintf(path, n, "%s", dir);
    return qins_train_init_llama(dir, &c->shape, c->seed);
  }
  qins_model *m = NULL;
  int rc = qins_model_open(c->init, &m);
  if (rc) return rc;
  if (m->cfg.rope_mode != QINS_ROPE_HALF) {
    snprintf(path, n, "%s", dir);
    rc = qins_train_export_hf(m, dir);
  } else {
    snprintf(path, n, "%s", c->init);
  }
  qins_model_close(m);
  return rc;
}

int qins_train_setup_optim(const qins_train_setup *s, qins_train_model *tm, const unsigned char *own, qins_optim **out) {
  const tcfg *c = &s->c;
  qins_optim_config oc = qins_optim_config_default();
  oc.adamw = (qins_adamw_config){(float)c->lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->wd};
  oc.schedule = (qins_lr_schedule){c->warmup, c->steps, (float)c->min_lr_ratio};
  oc.clip_norm = (float)c->clip;
  oc.accum_steps = c->batch * c->grad_accum;
  int rc = qins_optim_create(&oc, out);
  if (rc) return rc;
  for (int i = 0; i < qins_train_model_count(tm); i++) {
    if (own && !own[i]) continue;
    const qins_train_param *p = qins_train_model_param(tm, i);
    qins_param_opts po = qins_param_opts_default();
    po.no_decay = p->is_vector;
    if (name_is_qins(c, p->name, p->ndim)) {
      po.qins = 1;
      po.storage = c->storage;
      po.rows = p->shape[0];
      po.lr_scale = (float)c->qins_lr_scale;
    }
    if ((rc = qins_optim_add(*out, p->name, p->w, p->g, p->n, &po)) < 0) {
      qins_optim_destroy(*out);
      *out = NULL;
      return rc;
    }
  }
  return 0;
}

int qins_train_setup_ckpt_due(const qins_train_setup *s, int64_t step) { return ckpt_due(&s->c, step); }

/* ------------------------------------------------------------------ shared with the train stages */

void qins_train_optim_param_entries(qins_optim *o, int i, qins_st_entry *e, char (*names)[QINS_NAME_MAX + 8],
                                    int64_t (*shapes)[1], int *n_io, char **meta, int *k_io) {
  int n = *n_io, k = *k_io;
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
    snprintf(names[n], QINS_NAME_MAX + 8, "%s.%s", pn, parts[q].suffix);
    shapes[n][0] = parts[q].len;
    e[n] = (qins_st_entry){names[n], QINS_DT_F32, 1, shapes[n], parts[q].data};
    n++;
  }
  char kb[QINS_NAME_MAX + 8], vb[64];
  snprintf(kb, sizeof kb, "t.%s", pn);
  snprintf(vb, sizeof vb, "%lld", (long long)*ps.t);
  meta[k++] = strdup(kb);
  meta[k++] = strdup(vb);
  snprintf(kb, sizeof kb, "flag.%s", pn);
  snprintf(vb, sizeof vb, "%d", *ps.flagged);
  meta[k++] = strdup(kb);
  meta[k++] = strdup(vb);
  *n_io = n;
  *k_io = k;
}

double qins_train_distill_logits(const int32_t *ids, int n, int V, const float *tlogits, float *dl, float ce, float kl) {
  float inv = 1.0f / (float)(n - 1);
  double kl_sum = 0;
  for (int r = 0; r < n - 1; r++) {
    float *d = dl + (size_t)r * V;
    const float *tl = tlogits + (size_t)r * V;
    float mx = tl[0];
    for (int v = 1; v < V; v++) mx = tl[v] > mx ? tl[v] : mx;
    double z = 0;
    for (int v = 0; v < V; v++) z += exp((double)tl[v] - mx);
    double lz = log(z);
    for (int v = 0; v < V; v++) {
      double lp = (double)tl[v] - mx - lz, p = exp(lp);
      double sv = (double)d[v] * (n - 1) + (v == ids[r + 1] ? 1.0 : 0.0);
      if (sv < 1e-30) sv = 1e-30;
      kl_sum += p * (lp - log(sv));
      d[v] = ce * d[v] + kl * inv * (float)(sv - p);
    }
  }
  return kl_sum;
}
