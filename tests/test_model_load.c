/* Model loaders: llama2.c checkpoints, safetensors (single, sharded, defective), HF folders
 * and their configs, and the `qins inspect` command's exit codes. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"
#include "tests/test_util.h"

/* ---- temp dir helpers ---- */

static char tmpdir[256];

static void tmp_make(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qins_model_test_XXXXXX");
  assert_non_null(mkdtemp(tmpdir));
}

static void tmp_remove(void) {
  DIR *d = tmpdir[0] ? opendir(tmpdir) : NULL;
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(tmpdir);
  tmpdir[0] = 0;
}

/* Runs after every test, also a failed one, so no temp folder is left behind. */
static int teardown(void **state) {
  if (tmpdir[0]) tmp_remove();
  return 0;
}

static const char *tmp_path(const char *name) {
  static char p[8][512];
  static int k;
  k = (k + 1) % 8;
  snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
  return p[k];
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)len + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return b;
}

static void write_all(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (n) assert_int_equal(fwrite(b, 1, n, f), n);
  fclose(f);
}

/* Open must fail with QINS_EINPUT and a message holding every needle. */
static void expect_einput(const char *path, const char *needle1, const char *needle2) {
  qins_model *m = (qins_model *)0x1;
  qins_error_clear();
  int rc = qins_model_open(path, &m);
  const char *msg = qins_error_msg();
  if (rc != QINS_EINPUT || !strstr(msg, needle1) || (needle2 && !strstr(msg, needle2)))
    fail_msg("open(%s): rc %d (%s), message '%s', wanted EINPUT with '%s'%s%s", path, rc, qins_error_name(rc),
             msg, needle1, needle2 ? " and " : "", needle2 ? needle2 : "");
  assert_null(m);
}

/* ---- llama2.c ---- */

static void test_llama2c_stories(void **state) {
  const char *path = test_shared_path("models/stories260K/stories260K.bin");
  size_t n;
  unsigned char *raw = read_all(path, &n);
  qins_model *m;
  assert_int_equal(qins_model_open(path, &m), 0);
  assert_string_equal(m->format, "llama2c");
  const qins_model_config *c = &m->cfg;
  assert_int_equal(c->arch, QINS_ARCH_LLAMA);
  assert_int_equal(c->dim, 64);
  assert_int_equal(c->n_layers, 5);
  assert_int_equal(c->n_heads, 8);
  assert_int_equal(c->n_kv_heads, 4);
  assert_int_equal(c->head_dim, 8);
  assert_int_equal(c->rope_dim, 8);
  assert_int_equal(c->ffn_dim, 172);
  assert_int_equal(c->vocab_size, 512);
  assert_int_equal(c->max_seq_len, 512);
  assert_int_equal(c->tied_embeddings, 1);
  assert_int_equal(c->rope_mode, QINS_ROPE_INTERLEAVED);
  assert_int_equal(c->bos_id, 1);
  assert_int_equal(c->eos_id, 2);
  assert_true(c->rope_theta == 10000.0f && c->norm_eps == 1e-5f);
  /* 1 embedding + 9 per layer + final norm, no lm_head */
  assert_int_equal(m->n_weights, 1 + 9 * 5 + 1);
  assert_null(qins_model_find(m, "lm_head.weight"));

  /* values: compare with the file's own floats at the offsets llama2.c's layout gives */
  const float *f = (const float *)(raw + 28);
  size_t dim = 64, V = 512, L = 5, kv = 32, hid = 172;
  const qins_weight *w = qins_model_find(m, "model.embed_tokens.weight");
  assert_non_null(w);
  assert_int_equal(w->ndim, 2);
  assert_int_equal(w->shape[0], 512);
  assert_int_equal(w->shape[1], 64);
  assert_int_equal(w->nbytes, V * dim * 4);
  assert_memory_equal(w->data, f, 16 * sizeof(float));
  size_t off = V * dim;
  w = qins_model_find(m, "model.layers.2.input_layernorm.weight");
  assert_non_null(w);
  assert_int_equal(w->ndim, 1);
  assert_memory_equal(w->data, f + off + 2 * dim, dim * sizeof(float));
  off += L * dim;               /* rms_att */
  size_t wq = off;
  off += L * dim * dim;         /* wq */
  w = qins_model_find(m, "model.layers.3.self_attn.k_proj.weight");
  assert_non_null(w);
  assert_int_equal(w->shape[0], 32);
  assert_int_equal(w->shape[1], 64);
  assert_memory_equal(w->data, f + off + 3 * kv * dim, 8 * sizeof(float));
  w = qins_model_find(m, "model.layers.1.self_attn.q_proj.weight");
  assert_memory_equal(w->data, f + wq + 1 * dim * dim, dim * dim * sizeof(float));
  off += 2 * L * kv * dim + L * dim * dim + L * dim; /* wk wv wo rms_ffn */
  off += L * hid * dim;         /* w1 */
  w = qins_model_find(m, "model.layers.4.mlp.down_proj.weight");
  assert_int_equal(w->shape[0], 64);
  assert_int_equal(w->shape[1], 172);
  assert_memory_equal(w->data, f + off + 4 * dim * hid, 8 * sizeof(float));
  off += L * dim * hid + L * hid * dim; /* w2 w3 */
  w = qins_model_find(m, "model.norm.weight");
  assert_memory_equal(w->data, f + off, dim * sizeof(float));
  /* zero copy: the weight points into the mapping, not a copy */
  w = qins_model_find(m, "model.embed_tokens.weight");
  const qins_weight *wn = qins_model_find(m, "model.norm.weight");
  assert_int_equal((const char *)wn->data - (const char *)w->data, (ptrdiff_t)(off * 4));
  assert_int_equal(qins_model_param_count(m),
                   (int64_t)(V * dim + L * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hid * dim) + dim));
  qins_model_close(m);
  free(raw);
}

static void test_llama2c_defects(void **state) {
  tmp_make();
  const char *path = test_shared_path("models/stories260K/stories260K.bin");
  size_t n;
  unsigned char *raw = read_all(path, &n);
  /* truncated inside layer 3's w2 */
  size_t cut = 28 + 4 * (512 * 64 + 5 * 64 + 2 * 5 * 64 * 64 + 2 * 5 * 32 * 64 + 5 * 64 + 5 * 172 * 64 + 3 * 64 * 172 + 10);
  write_all(tmp_path("cut.bin"), raw, cut);
  expect_einput(tmp_path("cut.bin"), "cut.bin", "model.layers.3.mlp.down_proj.weight");
  /* trailing bytes */
  unsigned char *big = calloc(1, n + 12);
  memcpy(big, raw, n);
  write_all(tmp_path("trail.bin"), big, n + 12);
  expect_einput(tmp_path("trail.bin"), "trail.bin", "12 trailing bytes");
  /* unshared classifier announced but missing */
  memcpy(big, raw, n);
  int32_t neg = -512;
  memcpy(big + 20, &neg, 4);
  write_all(tmp_path("nocls.bin"), big, n);
  expect_einput(tmp_path("nocls.bin"), "nocls.bin", "lm_head.weight");
  /* an unshared classifier that is present: lm_head follows the RoPE tables */
  {
    size_t cls = 512 * 64 * 4;
    unsigned char *un = malloc(n + cls);
    memcpy(un, raw, n);
    memcpy(un + 20, &neg, 4);
    float *wc = (float *)(un + n);
    test_fill_normal(wc, 512 * 64, 1.0f);
    write_all(tmp_path("cls.bin"), un, n + cls);
    qins_model *m;
    assert_int_equal(qins_model_open(tmp_path("cls.bin"), &m), 0);
    assert_int_equal(m->cfg.tied_embeddings, 0);
    assert_int_equal(m->cfg.vocab_size, 512);
    const qins_weight *w = qins_model_find(m, "lm_head.weight");
    assert_non_null(w);
    assert_int_equal(w->shape[0], 512);
    assert_int_equal(w->shape[1], 64);
    assert_memory_equal(w->data, wc, cls);
    assert_int_equal(m->n_weights, 1 + 9 * 5 + 2);
    qins_model_close(m);
    free(un);
  }
  /* header defects */
  int32_t hdr[7];
  memcpy(hdr, raw, 28);
  hdr[3] = 7; /* 64 % 7 != 0 */
  memcpy(big, hdr, 28);
  write_all(tmp_path("heads.bin"), big, n);
  expect_einput(tmp_path("heads.bin"), "heads.bin", "n_heads");
  memcpy(hdr, raw, 28);
  hdr[4] = 3; /* 8 % 3 != 0 */
  memcpy(big, hdr, 28);
  write_all(tmp_path("kv.bin"), big, n);
  expect_einput(tmp_path("kv.bin"), "kv.bin", "n_kv_heads");
  memcpy(hdr, raw, 28);
  hdr[2] = 0;
  memcpy(big, hdr, 28);
  write_all(tmp_path("zero.bin"), big, n);
  expect_einput(tmp_path("zero.bin"), "zero.bin", "n_layers");
  write_all(tmp_path("short.bin"), raw, 10);
  expect_einput(tmp_path("short.bin"), "short.bin", "header");
  expect_einput(tmp_path("missing.bin"), "missing.bin", NULL);
  /* every truncation point fails cleanly (coarse sweep) */
  for (size_t k = 0; k < n; k += 4099) {
    write_all(tmp_path("sweep.bin"), raw, k);
    expect_einput(tmp_path("sweep.bin"), "sweep.bin", NULL);
  }
  free(big);
  free(raw);
  tmp_remove();
}

/* ---- HF fixtures ---- */

static const char *fixture(const char *name, const char *file) {
  static char p[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "fixtures/hf/%s%s%s", name, file ? "/" : "", file ? file : "");
  snprintf(p[k], sizeof p[k], "%s", test_shared_path(p[k]));
  return p[k];
}

/* Start of the data section of a safetensors file, read independently of the reader. */
static const unsigned char *st_data(const unsigned char *raw) {
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = (h << 8) | raw[i];
  return raw + 8 + h;
}

static void test_hf_llama(void **state) {
  qins_model *m;
  assert_int_equal(qins_model_open(fixture("llama_gqa", NULL), &m), 0);
  const qins_model_config *c = &m->cfg;
  assert_string_equal(m->format, "hf");
  assert_int_equal(c->arch, QINS_ARCH_LLAMA);
  assert_int_equal(c->dim, 64);
  assert_int_equal(c->n_layers, 2);
  assert_int_equal(c->n_heads, 8);
  assert_int_equal(c->n_kv_heads, 4);
  assert_int_equal(c->head_dim, 8);
  assert_int_equal(c->rope_dim, 8);
  assert_int_equal(c->ffn_dim, 172);
  assert_int_equal(c->vocab_size, 512);
  assert_int_equal(c->max_seq_len, 256);
  assert_int_equal(c->tied_embeddings, 0);
  assert_int_equal(c->rope_mode, QINS_ROPE_HALF);
  assert_int_equal(c->rope_scaling, QINS_ROPE_SCALING_NONE);
  assert_true(c->rope_attn_factor == 1.0f && c->rope_theta == 10000.0f && c->norm_eps == 1e-5f);
  assert_int_equal(c->bos_id, 1);
  assert_int_equal(c->eos_id, 2);
  assert_int_equal(c->norm_type, QINS_NORM_RMS);
  assert_int_equal(c->act, QINS_ACT_SILU);
  assert_int_equal(m->n_weights, 21);
  /* canonical order: embedding first, head last */
  assert_string_equal(m->weights[0].name, "model.embed_tokens.weight");
  assert_string_equal(m->weights[20].name, "lm_head.weight");
  size_t n;
  unsigned char *raw = read_all(fixture("llama_gqa", "model.safetensors"), &n);
  const unsigned char *d = st_data(raw);
  /* offsets from the fixture's header (python: data_offsets) */
  const qins_weight *w = qins_model_find(m, "lm_head.weight");
  assert_non_null(w);
  assert_memory_equal(w->data, d + 0, 131072);
  w = qins_model_find(m, "model.norm.weight");
  assert_memory_equal(w->data, d + 625664, 256);
  w = qins_model_find(m, "model.layers.1.self_attn.k_proj.weight");
  assert_int_equal(w->shape[0], 32);
  assert_int_equal(w->shape[1], 64);
  assert_memory_equal(w->data, d + 576512, 8192);
  assert_int_equal(qins_model_param_count(m), 156480);
  assert_null(qins_model_find(m, "model.layers.2.input_layernorm.weight"));
  free(raw);
  qins_model_close(m);
}

static void test_hf_phi3(void **state) {
  qins_model *m;
  assert_int_equal(qins_model_open(fixture("phi3_longrope", NULL), &m), 0);
  const qins_model_config *c = &m->cfg;
  assert_int_equal(c->arch, QINS_ARCH_PHI3);
  assert_int_equal(c->head_dim, 16);
  assert_int_equal(c->rope_dim, 16);
  assert_int_equal(c->ffn_dim, 128);
  assert_int_equal(c->max_seq_len, 256);
  assert_int_equal(c->original_max_seq_len, 32);
  assert_int_equal(c->rope_scaling, QINS_ROPE_SCALING_LONGROPE);
  assert_int_equal(c->rope_mode, QINS_ROPE_HALF);
  assert_int_equal(c->rope_n_factors, 8);
  assert_true(c->rope_short_factor[0] == 1.0014489889144897f);
  assert_true(c->rope_short_factor[7] == 1.023406982421875f);
  assert_true(c->rope_long_factor[0] == 1.83782958984375f);
  assert_true(c->rope_long_factor[7] == 3.4624075889587402f);
  /* transformers: sqrt(1 + ln(256/32) / ln(32)) */
  float want = (float)sqrt(1.0 + log(256.0 / 32.0) / log(32.0));
  assert_true(c->rope_attn_factor == want);
  assert_true(fabsf(c->rope_attn_factor - 1.2649111f) < 1e-6f);
  assert_int_equal(c->pad_id, 0);
  const qins_weight *w = qins_model_find(m, "model.layers.0.self_attn.qkv_proj.weight");
  assert_non_null(w);
  assert_int_equal(w->shape[0], 192);
  w = qins_model_find(m, "model.layers.1.mlp.gate_up_proj.weight");
  assert_non_null(w);
  assert_int_equal(w->shape[0], 256);
  assert_int_equal(m->n_weights, 15);
  qins_model_close(m);
}

static void test_hf_gpt2(void **state) {
  qins_model *m;
  assert_int_equal(qins_model_open(fixture("gpt2", NULL), &m), 0);
  const qins_model_config *c = &m->cfg;
  assert_int_equal(c->arch, QINS_ARCH_GPT2);
  assert_int_equal(c->dim, 64);
  assert_int_equal(c->n_layers, 2);
  assert_int_equal(c->n_heads, 4);
  assert_int_equal(c->n_kv_heads, 4);
  assert_int_equal(c->head_dim, 16);
  assert_int_equal(c->ffn_dim, 256);
  assert_int_equal(c->max_seq_len, 128);
  assert_int_equal(c->tied_embeddings, 1);
  assert_int_equal(c->learned_pos, 1);
  assert_int_equal(c->attn_bias, 1);
  assert_int_equal(c->norm_type, QINS_NORM_LAYER);
  assert_int_equal(c->act, QINS_ACT_GELU_TANH);
  assert_null(qins_model_find(m, "lm_head.weight"));
  const qins_weight *w = qins_model_find(m, "transformer.h.1.attn.c_attn.weight");
  assert_non_null(w);
  assert_int_equal(w->shape[0], 64); /* Conv1D: [in, out] */
  assert_int_equal(w->shape[1], 192);
  assert_non_null(qins_model_find(m, "transformer.wpe.weight"));
  assert_int_equal(m->n_weights, 28);
  qins_model_close(m);
}

/* ---- building modified copies ---- */

/* Copy the fixture's tensors into entries (names/shapes owned by the caller's arrays). */
typedef struct tensor_set {
  int n;
  char names[64][QINS_NAME_MAX];
  int64_t shapes[64][4];
  qins_st_entry e[64];
} tensor_set;

static qins_st_file *load_set(const char *path, tensor_set *s) {
  qins_st_file *f;
  assert_int_equal(qins_st_open(path, &f), 0);
  assert_true(f->n_tensors <= 64);
  s->n = f->n_tensors;
  for (int i = 0; i < f->n_tensors; i++) {
    const qins_st_tensor *t = &f->tensors[i];
    snprintf(s->names[i], QINS_NAME_MAX, "%s", t->name);
    memcpy(s->shapes[i], t->shape, sizeof s->shapes[i]);
    s->e[i] = (qins_st_entry){s->names[i], t->dtype, t->ndim, s->shapes[i], t->data};
  }
  return f;
}

static int set_find(tensor_set *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return i;
  fail_msg("no tensor %s", name);
  return -1;
}

static void set_drop(tensor_set *s, int i) {
  for (int k = i; k + 1 < s->n; k++) {
    memcpy(s->names[k], s->names[k + 1], QINS_NAME_MAX);
    memcpy(s->shapes[k], s->shapes[k + 1], sizeof s->shapes[k]);
    s->e[k] = s->e[k + 1];
    s->e[k].name = s->names[k];
    s->e[k].shape = s->shapes[k];
  }
  s->n--;
}

static void copy_file(const char *from, const char *to) {
  size_t n;
  unsigned char *b = read_all(from, &n);
  write_all(to, b, n);
  free(b);
}

/* A folder in tmpdir: tmpdir itself holds config.json + model.safetensors. */
static void write_folder(const char *config_src, tensor_set *s) {
  copy_file(config_src, tmp_path("config.json"));
  unlink(tmp_path("model.safetensors.index.json"));
  assert_int_equal(qins_st_write(tmp_path("model.safetensors"), s->e, s->n, NULL), 0);
}

static void test_hf_tensor_checks(void **state) {
  tmp_make();
  tensor_set s;
  qins_st_file *f = load_set(fixture("llama_gqa", "model.safetensors"), &s);
  const char *cfg = fixture("llama_gqa", "config.json");

  /* unchanged copy loads and matches */
  write_folder(cfg, &s);
  qins_model *m;
  assert_int_equal(qins_model_open(tmpdir, &m), 0);
  assert_int_equal(m->n_weights, 21);
  qins_model_close(m);

  /* missing tensor */
  tensor_set t = s;
  for (int i = 0; i < t.n; i++) t.e[i].name = t.names[i], t.e[i].shape = t.shapes[i];
  set_drop(&t, set_find(&t, "model.layers.1.mlp.up_proj.weight"));
  write_folder(cfg, &t);
  expect_einput(tmpdir, "missing tensor model.layers.1.mlp.up_proj.weight", "[172, 64]");

  /* unexpected tensor */
  t = s;
  for (int i = 0; i < t.n; i++) t.e[i].name = t.names[i], t.e[i].shape = t.shapes[i];
  snprintf(t.names[set_find(&t, "model.norm.weight")], QINS_NAME_MAX, "model.layers.2.input_layernorm.weight");
  write_folder(cfg, &t);
  expect_einput(tmpdir, "model.safetensors", "unexpected tensor model.layers.2.input_layernorm.weight");

  /* wrong shape: v_proj [32,64] stored as [64,32] */
  t = s;
  for (int i = 0; i < t.n; i++) t.e[i].name = t.names[i], t.e[i].shape = t.shapes[i];
  int v = set_find(&t, "model.layers.0.self_attn.v_proj.weight");
  t.shapes[v][0] = 64;
  t.shapes[v][1] = 32;
  write_folder(cfg, &t);
  expect_einput(tmpdir, "model.layers.0.self_attn.v_proj.weight", "shape [64, 32], expected [32, 64]");

  /* config whose kv-head count disagrees with the weights: k_proj shape is named */
  FILE *fp = fopen(tmp_path("config.json"), "w");
  fprintf(fp, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
              " \"intermediate_size\": 172, \"vocab_size\": 512, \"rms_norm_eps\": 1e-5}");
  fclose(fp);
  assert_int_equal(qins_st_write(tmp_path("model.safetensors"), s.e, s.n, NULL), 0);
  expect_einput(tmpdir, "model.layers.0.self_attn.k_proj.weight", "expected [64, 64]");

  /* wrong dtype for a model weight */
  t = s;
  for (int i = 0; i < t.n; i++) t.e[i].name = t.names[i], t.e[i].shape = t.shapes[i];
  int nw = set_find(&t, "model.norm.weight");
  t.e[nw].dtype = QINS_DT_I32;
  write_folder(cfg, &t);
  expect_einput(tmpdir, "model.norm.weight", "dtype I32");

  /* half-precision weights load as they are (BF16 here), zero copy */
  {
    static uint16_t half[64][131072 / 4];
    t = s;
    for (int i = 0; i < t.n; i++) {
      t.e[i].name = t.names[i];
      t.e[i].shape = t.shapes[i];
      int64_t ne = 1;
      for (int d = 0; d < t.e[i].ndim; d++) ne *= t.shapes[i][d];
      assert_true(ne <= 131072 / 4);
      for (int64_t k = 0; k < ne; k++) half[i][k] = qins_f32_to_bf16(((const float *)s.e[i].data)[k]);
      t.e[i].dtype = QINS_DT_BF16;
      t.e[i].data = half[i];
    }
    write_folder(cfg, &t);
    assert_int_equal(qins_model_open(tmpdir, &m), 0);
    const qins_weight *w = qins_model_find(m, "model.layers.1.mlp.down_proj.weight");
    assert_int_equal(w->dtype, QINS_DT_BF16);
    assert_int_equal(w->nbytes, 64 * 172 * 2);
    assert_memory_equal(w->data, half[set_find(&t, "model.layers.1.mlp.down_proj.weight")], w->nbytes);
    qins_model_close(m);
  }

  /* no weights file */
  unlink(tmp_path("model.safetensors"));
  expect_einput(tmpdir, "no model.safetensors", NULL);
  qins_st_close(f);
  tmp_remove();
}

/* GPT-2 checkpoints without the "transformer." prefix and with the causal-mask buffers. */
static void test_hf_gpt2_unprefixed(void **state) {
  tmp_make();
  tensor_set s;
  qins_st_file *f = load_set(fixture("gpt2", "model.safetensors"), &s);
  for (int i = 0; i < s.n; i++) {
    char tmp[QINS_NAME_MAX];
    snprintf(tmp, sizeof tmp, "%s", s.names[i] + strlen("transformer."));
    memcpy(s.names[i], tmp, sizeof tmp);
  }
  static float mask[16];
  snprintf(s.names[s.n], QINS_NAME_MAX, "h.0.attn.bias");
  s.shapes[s.n][0] = 1;
  s.shapes[s.n][1] = 1;
  s.shapes[s.n][2] = 4;
  s.shapes[s.n][3] = 4;
  s.e[s.n] = (qins_st_entry){s.names[s.n], QINS_DT_F32, 4, s.shapes[s.n], mask};
  s.n++;
  write_folder(fixture("gpt2", "config.json"), &s);
  qins_model *m;
  assert_int_equal(qins_model_open(tmpdir, &m), 0);
  assert_int_equal(m->n_weights, 28);
  const qins_weight *w = qins_model_find(m, "transformer.h.0.attn.c_attn.weight");
  assert_non_null(w);
  const qins_st_tensor *orig = qins_st_find(f, "transformer.h.0.attn.c_attn.weight");
  assert_memory_equal(w->data, orig->data, orig->nbytes);
  assert_null(qins_model_find(m, "transformer.h.0.attn.bias"));
  qins_model_close(m);
  qins_st_close(f);
  tmp_remove();
}

/* Config styles: Phi-3.5's own rope_scaling + top-level rope_theta, attention_factor given,
 * factor-length mismatch, bad JSON, unknown model type. */
static void write_text(const char *path, const char *text) { write_all(path, text, strlen(text)); }

static const char *phi3_cfg_fmt =
    "{\"model_type\": \"phi3\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,\n"
    " \"num_key_value_heads\": 4, \"intermediate_size\": 128, \"vocab_size\": 512,\n"
    " \"max_position_embeddings\": 256, \"original_max_position_embeddings\": 32, \"rms_norm_eps\": 1e-5,\n"
    " \"rope_theta\": 5000.0, %s\n"
    " \"rope_scaling\": {\"type\": \"longrope\", %s\n"
    "   \"short_factor\": [1, 1, 1, 1, 1, 1, 1, 1.5], \"long_factor\": [2, 2, 2, 2, 2, 2, 2, %s]}}\n";

static void write_phi3_cfg(const char *top, const char *inner, const char *last) {
  char buf[2048];
  snprintf(buf, sizeof buf, phi3_cfg_fmt, top, inner, last);
  write_text(tmp_path("config.json"), buf);
}

static void test_hf_config_styles(void **state) {
  tmp_make();
  copy_file(fixture("phi3_longrope", "model.safetensors"), tmp_path("model.safetensors"));
  qins_model *m;
  write_phi3_cfg("", "", "3");
  assert_int_equal(qins_model_open(tmpdir, &m), 0);
  assert_true(m->cfg.rope_theta == 5000.0f);
  assert_int_equal(m->cfg.original_max_seq_len, 32);
  assert_int_equal(m->cfg.rope_scaling, QINS_ROPE_SCALING_LONGROPE);
  assert_true(m->cfg.rope_short_factor[7] == 1.5f && m->cfg.rope_long_factor[7] == 3.0f);
  assert_true(m->cfg.rope_attn_factor == (float)sqrt(1.0 + log(8.0) / log(32.0)));
  qins_model_close(m);

  /* explicit attention_factor wins; original length inside the object overrides the top level */
  write_phi3_cfg("", "\"attention_factor\": 1.125, \"original_max_position_embeddings\": 64,", "3");
  assert_int_equal(qins_model_open(tmpdir, &m), 0);
  assert_true(m->cfg.rope_attn_factor == 1.125f);
  assert_int_equal(m->cfg.original_max_seq_len, 64);
  qins_model_close(m);

  /* scale <= 1: factor 1 */
  write_phi3_cfg("", "\"original_max_position_embeddings\": 256,", "3");
  assert_int_equal(qins_model_open(tmpdir, &m), 0);
  assert_true(m->cfg.rope_attn_factor == 1.0f);
  qins_model_close(m);

  /* partial rotary: 8 dims rotated -> 4 factors expected, 8 given */
  write_phi3_cfg("\"partial_rotary_factor\": 0.5,", "", "3");
  expect_einput(tmpdir, "config.json", "short_factor");

  /* a non-number factor */
  write_phi3_cfg("", "", "\"x\"");
  expect_einput(tmpdir, "config.json", "long_factor");

  /* bad JSON: line and column */
  write_text(tmp_path("config.json"), "{\"model_type\": \"phi3\",\n \"hidden_size\": 64,,\n}");
  expect_einput(tmpdir, "config.json", "line 2");

  /* wrong type for a key */
  write_text(tmp_path("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": \"64\"}");
  expect_einput(tmpdir, "config.json", "hidden_size");

  /* missing required key */
  write_text(tmp_path("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 64}");
  expect_einput(tmpdir, "config.json", "num_hidden_layers");

  /* unsupported architecture: a model this engine cannot read is bad input to it (exit 2) */
  write_text(tmp_path("config.json"), "{\"model_type\": \"mamba\"}");
  assert_int_equal(qins_model_open(tmpdir, &m), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "mamba"));

  /* architectures[] when model_type is absent; eos as a list */
  write_text(tmp_path("config.json"),
             "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2,"
             " \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"intermediate_size\": 172,"
             " \"vocab_size\": 512, \"eos_token_id\": [7, 2], \"rope_theta\": 500000.0}");
  unlink(tmp_path("model.safetensors"));
  copy_file(fixture("llama_gqa", "model.safetensors"), tmp_path("model.safetensors"));
  assert_int_equal(qins_model_open(tmpdir, &m), 0);
  assert_int_equal(m->cfg.arch, QINS_ARCH_LLAMA);
  assert_int_equal(m->cfg.eos_id, 7);
  assert_true(m->cfg.rope_theta == 500000.0f);
  assert_int_equal(m->cfg.max_seq_len, 2048);
  assert_true(m->cfg.norm_eps == 1e-6f);
  qins_model_close(m);

  /* config.json path names its folder */
  assert_int_equal(qins_model_open(tmp_path("config.json"), &m), 0);
  assert_string_equal(m->format, "hf");
  qins_model_close(m);
  tmp_remove();
}

/* ---- safetensors defects ---- */

/* A hand-built file: header text and data bytes. */
static size_t build_st(unsigned char *out, size_t cap, const char *header, size_t data_bytes) {
  size_t h = strlen(header);
  assert_true(8 + h + data_bytes <= cap);
  for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(out + 8, header, h);
  for (size_t i = 0; i < data_bytes; i++) out[8 + h + i] = (unsigned char)(i * 7);
  return 8 + h + data_bytes;
}

static void expect_st_file_einput(const char *fname, const void *bytes, size_t n, const char *needle1,
                                  const char *needle2) {
  write_all(tmp_path(fname), bytes, n);
  expect_einput(tmp_path(fname), fname, needle1);
  if (needle2) expect_einput(tmp_path(fname), fname, needle2);
}

static void test_st_defects(void **state) {
  tmp_make();
  static unsigned char b[4096];
  size_t n;
  expect_st_file_einput("short.safetensors", "\x10\x00\x00", 3, "shorter than the 8-byte", NULL);
  expect_st_file_einput("empty.safetensors", "", 0, "shorter than the 8-byte", NULL);
  n = build_st(b, sizeof b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
  b[0] = 0xff; b[1] = 0xff; /* header length past the end */
  expect_st_file_einput("hlen.safetensors", b, n, "header length", "past the end");
  n = build_st(b, sizeof b, "{\"a\":{\"dtype\":\"F32\",\n\"shape\":[2] \"data_offsets\":[0,8]}}", 8);
  expect_st_file_einput("json.safetensors", b, n, "line 2", NULL);
  n = build_st(b, sizeof b, "[1, 2]", 8);
  expect_st_file_einput("array.safetensors", b, n, "not a JSON object", NULL);
  n = build_st(b, sizeof b, "{\"w.q\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
  expect_st_file_einput("dtype.safetensors", b, n, "w.q", "F64");
  n = build_st(b, sizeof b, "{\"w.q\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
  expect_st_file_einput("count.safetensors", b, n, "w.q", "needs 12 bytes");
  n = build_st(b, sizeof b, "{\"w.q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
  expect_st_file_einput("range.safetensors", b, n, "w.q", "past the end");
  n = build_st(b, sizeof b, "{\"w.q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8);
  expect_st_file_einput("order.safetensors", b, n, "w.q", "before begin");
  n = build_st(b, sizeof b,
               "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16);
  expect_st_file_einput("overlap.safetensors", b, n, "w.a", "w.b");
  n = build_st(b, sizeof b,
               "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"w.a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
  expect_st_file_einput("dup.safetensors", b, n, "duplicate", "w.a");
  n = build_st(b, sizeof b, "{\"w.s\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 8);
  expect_st_file_einput("neg.safetensors", b, n, "w.s", "shape");
  n = build_st(b, sizeof b, "{\"w.s\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 8);
  expect_st_file_einput("ndim.safetensors", b, n, "w.s", "dimensions");
  n = build_st(b, sizeof b, "{\"w.s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 8);
  expect_st_file_einput("offs.safetensors", b, n, "w.s", "data_offsets");
  n = build_st(b, sizeof b, "{\"w.s\":[1]}", 8);
  expect_st_file_einput("entry.safetensors", b, n, "w.s", "not an object");
  n = build_st(b, sizeof b, "{\"__metadata__\":{\"format\":3}}", 0);
  expect_st_file_einput("meta.safetensors", b, n, "__metadata__", "format");
  n = build_st(b, sizeof b,
               "{\"w.big\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", 8);
  expect_st_file_einput("huge.safetensors", b, n, "w.big", NULL);

  /* a valid hand-built file: metadata, scalars, zero-size tensors, an I8 then a misaligned F32
   * (header length 4 mod 8 plus a 1-byte tensor) which must come back aligned and intact */
  const char *hdr = "{\"__metadata__\":{\"format\":\"qins\",\"alpha\":\"mse\"},"
                    "\"c\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                    "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
                    "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[9,9]},"
                    "\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[9,13]}} ";
  n = build_st(b, sizeof b, hdr, 13);
  float fv[2] = {1.5f, -2.25f};
  size_t fo = n - 13 + 1;
  memcpy(b + fo, fv, 8);
  qins_st_file *f;
  assert_int_equal(qins_st_parse("mem", b, n, &f), 0);
  assert_int_equal(f->n_tensors, 4);
  assert_string_equal(qins_st_meta(f, "format"), "qins");
  assert_string_equal(qins_st_meta(f, "alpha"), "mse");
  assert_null(qins_st_meta(f, "none"));
  const qins_st_tensor *t = qins_st_find(f, "f");
  assert_non_null(t);
  assert_int_equal((uintptr_t)t->data % 4, 0);
  assert_memory_equal(t->data, fv, 8);
  t = qins_st_find(f, "s");
  assert_int_equal(t->ndim, 0);
  assert_int_equal(t->nbytes, 4);
  assert_int_equal(qins_st_find(f, "z")->nbytes, 0);
  qins_st_close(f);
  /* the same through qins_model_open as a bare file */
  write_all(tmp_path("ok.safetensors"), b, n);
  qins_model *m;
  assert_int_equal(qins_model_open(tmp_path("ok.safetensors"), &m), 0);
  assert_int_equal(m->cfg.arch, QINS_ARCH_NONE);
  assert_string_equal(m->format, "safetensors");
  assert_int_equal(m->n_weights, 4);
  assert_memory_equal(qins_model_find(m, "f")->data, fv, 8);
  qins_model_close(m);
  tmp_remove();
}

/* Truncations and random header mutations of a real file: the parser must answer 0 or
 * QINS_EINPUT, never crash, and whatever it accepts must lie inside the bytes. */
static void test_st_fuzz(void **state) {
  size_t n;
  unsigned char *raw = read_all(fixture("phi3_longrope", "model.safetensors"), &n);
  unsigned char *buf = malloc(n);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
  int accepted = 0, rejected = 0;
  for (size_t k = 0; k < n; k += (k < hlen + 16 ? 1 : 997)) {
    memcpy(buf, raw, k);
    qins_st_file *f;
    int rc = qins_st_parse("cut", buf, k, &f);
    assert_int_equal(rc, QINS_EINPUT);
    assert_non_null(strstr(qins_error_msg(), "cut"));
    rejected++;
  }
  for (int it = 0; it < 3000; it++) {
    memcpy(buf, raw, n);
    int edits = 1 + (int)(test_rand_u64() % 4);
    for (int e = 0; e < edits; e++) {
      size_t pos = (size_t)(test_rand_u64() % (hlen + 8));
      static const char pool[] = "0123456789[]{},:\"-eE. x";
      buf[pos] = (test_rand_u64() & 1) ? (unsigned char)pool[test_rand_u64() % (sizeof pool - 1)]
                                       : (unsigned char)test_rand_u64();
    }
    qins_st_file *f;
    int rc = qins_st_parse("mut", buf, n, &f);
    if (rc == 0) {
      for (int i = 0; i < f->n_tensors; i++) {
        const qins_st_tensor *t = &f->tensors[i];
        assert_true(t->offset >= f->data_start && t->offset + t->nbytes <= n);
        if (t->nbytes) (void)((volatile const unsigned char *)t->data)[t->nbytes - 1];
      }
      qins_st_close(f);
      accepted++;
    } else {
      assert_int_equal(rc, QINS_EINPUT);
      rejected++;
    }
  }
  print_message("fuzz: %d accepted, %d rejected\n", accepted, rejected);
  assert_true(rejected > 100);
  free(buf);
  free(raw);
}

/* ---- sharded folders ---- */

static void test_sharded(void **state) {
  tmp_make();
  tensor_set s;
  qins_st_file *f = load_set(fixture("llama_gqa", "model.safetensors"), &s);
  int half = s.n / 2;
  assert_int_equal(qins_st_write(tmp_path("model-00001-of-00002.safetensors"), s.e, half, NULL), 0);
  assert_int_equal(qins_st_write(tmp_path("model-00002-of-00002.safetensors"), s.e + half, s.n - half, NULL), 0);
  copy_file(fixture("llama_gqa", "config.json"), tmp_path("config.json"));
  char idx[16384];
  size_t k = (size_t)snprintf(idx, sizeof idx, "{\"metadata\": {\"total_size\": 625920}, \"weight_map\": {");
  for (int i = 0; i < s.n; i++)
    k += (size_t)snprintf(idx + k, sizeof idx - k, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                          s.names[i], i < half ? 1 : 2);
  snprintf(idx + k, sizeof idx - k, "}}");
  write_text(tmp_path("model.safetensors.index.json"), idx);

  qins_model *m, *ref;
  assert_int_equal(qins_model_open(tmpdir, &m), 0);
  assert_int_equal(qins_model_open(fixture("llama_gqa", NULL), &ref), 0);
  assert_int_equal(m->n_weights, ref->n_weights);
  int from2 = 0;
  for (int i = 0; i < ref->n_weights; i++) {
    const qins_weight *a = &ref->weights[i], *b = qins_model_find(m, a->name);
    assert_non_null(b);
    assert_string_equal(m->weights[i].name, a->name); /* same canonical order */
    assert_int_equal(a->nbytes, b->nbytes);
    assert_int_equal(a->ndim, b->ndim);
    assert_memory_equal(a->shape, b->shape, sizeof a->shape);
    assert_memory_equal(a->data, b->data, a->nbytes);
    from2 += strstr(b->file, "model-00002") != NULL;
  }
  assert_true(from2 > 0 && from2 < ref->n_weights);
  qins_model_close(ref);
  qins_model_close(m);
  /* the index alone opens as bare tensors */
  assert_int_equal(qins_model_open(tmp_path("model.safetensors.index.json"), &m), 0);
  assert_int_equal(m->cfg.arch, QINS_ARCH_NONE);
  assert_int_equal(m->n_weights, s.n);
  qins_model_close(m);

  /* a tensor mapped to the wrong shard */
  char bad[16384];
  snprintf(bad, sizeof bad, "%s", idx);
  char key[256];
  snprintf(key, sizeof key, "\"%s\": \"model-00001", s.names[0]);
  char *p = strstr(bad, key);
  assert_non_null(p);
  p[strlen(key) - 1] = '2';
  write_text(tmp_path("model.safetensors.index.json"), bad);
  expect_einput(tmpdir, "model.safetensors.index.json", s.names[0]);
  /* a mapped shard that does not exist */
  snprintf(bad, sizeof bad, "%s", idx);
  p = strstr(bad, "00002-of-00002");
  memcpy(p, "00003", 5);
  write_text(tmp_path("model.safetensors.index.json"), bad);
  expect_einput(tmpdir, "00003", NULL);
  /* a tensor missing from the weight map */
  snprintf(bad, sizeof bad, "{\"weight_map\": {\"%s\": \"model-00001-of-00002.safetensors\"}}", s.names[0]);
  write_text(tmp_path("model.safetensors.index.json"), bad);
  expect_einput(tmpdir, "does not list it", s.names[1]);
  qins_st_close(f);
  tmp_remove();
}

/* ---- qins inspect ---- */

static void test_inspect_cli(void **state) {
  const char *exe = getenv("QINS_EXE");
  if (!exe) {
    print_message("QINS_EXE not set: skipping the CLI test\n");
    skip();
  }
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' inspect --model '%s' >/dev/null", exe, fixture("phi3_longrope", NULL));
  int st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  snprintf(cmd, sizeof cmd, "'%s' inspect --json --model '%s' | grep -q '\"rope_attn_factor\": 1.2649'", exe,
           fixture("phi3_longrope", NULL));
  st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  snprintf(cmd, sizeof cmd, "'%s' inspect --model '%s' | grep -q '^parameters  260032'", exe,
           test_shared_path("models/stories260K/stories260K.bin"));
  st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  tmp_make();
  write_all(tmp_path("bad.safetensors"), "\x01\x00", 2);
  snprintf(cmd, sizeof cmd, "'%s' inspect --model '%s' 2>'%s'", exe, tmp_path("bad.safetensors"), tmp_path("err"));
  st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  size_t n;
  unsigned char *err = read_all(tmp_path("err"), &n);
  err[n] = 0;
  assert_non_null(strstr((char *)err, "bad.safetensors"));
  free(err);
  snprintf(cmd, sizeof cmd, "'%s' inspect 2>/dev/null", exe);
  st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  tmp_remove();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_llama2c_stories, teardown),  cmocka_unit_test_teardown(test_llama2c_defects, teardown),
      cmocka_unit_test_teardown(test_hf_llama, teardown),         cmocka_unit_test_teardown(test_hf_phi3, teardown),
      cmocka_unit_test_teardown(test_hf_gpt2, teardown),          cmocka_unit_test_teardown(test_hf_tensor_checks, teardown),
      cmocka_unit_test_teardown(test_hf_gpt2_unprefixed, teardown), cmocka_unit_test_teardown(test_hf_config_styles, teardown),
      cmocka_unit_test_teardown(test_st_defects, teardown),       cmocka_unit_test_teardown(test_st_fuzz, teardown),
      cmocka_unit_test_teardown(test_sharded, teardown),          cmocka_unit_test_teardown(test_inspect_cli, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
