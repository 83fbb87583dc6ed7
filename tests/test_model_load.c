/* Model loaders: llama2.c checkpoints, safetensors (single, sharded, defective), HF folders
 * and their configs, and the `qins inspect` command's exit codes. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/model/model.h"
#include "tests/test_util.h"

/* ---- temp dir helpers ---- */

static char tmpdir[256];

static void tmp_make(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qins_model_test_XXXXXX");
  assert_non_null(mkdtemp(tmpdir));
}

static void tmp_remove(void) {
  DIR *d = opendir(tmpdir);
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_llama2c_stories),
      cmocka_unit_test(test_llama2c_defects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
