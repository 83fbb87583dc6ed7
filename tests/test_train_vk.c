/* Model-level training on the Vulkan backend (lavapipe in CI): parameters and gradients in device
 * buffers, synchronised with the host copies through push_weights / pull_grads. The PyTorch
 * fixtures (../shared/fixtures/hf/<model>/grads.safetensors, train.json) must hold on vk as on cpu:
 * every parameter's gradient within 1e-4 relative L2 and the 10 AdamW losses within 1e-4 (vk f32
 * math differs from cpu only by rounding: summation order in the GEMMs and reductions). Also:
 * stories260K's gradients on vk against cpu (relative L2 <= 1e-5 per parameter, loss within 1e-5),
 * and a 3-part pipeline chain on vk against the whole-model call on vk. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/model/model.h"
#include "core/train/model_grad.h"
#include "tests/test_util.h"
#include "tests/train_fixture.h"

static qins_backend *vk;

static int setup(void **st) {
  (void)st;
  char names[8][64];
  int n = qins_backend_list(names, 8), have = 0;
  for (int i = 0; i < n; i++) have |= strcmp(names[i], "vk:0") == 0;
  if (have && qins_backend_create("vk:0", &vk)) {
    fprintf(stderr, "vk:0 unavailable: %s\n", qins_error_msg());
    vk = NULL;
  }
  if (vk) fprintf(stderr, "vk:0 is %s\n", vk->device_name);
  return 0;
}

static int teardown(void **st) {
  (void)st;
  if (vk) qins_backend_destroy(vk);
  return 0;
}

#define NEED_VK() do { if (!vk) { skip(); return; } } while (0)

/* The fixture helper owns the host copies: weights changed by its (host) AdamW go up before the
 * step, gradients come down after it. */
static int vk_loss_grad(void *user, const int32_t *ids, int n, double *loss) {
  qins_train_model *tm = user;
  int rc = qins_train_model_push_weights(tm);
  if (!rc) rc = qins_train_model_zero_grad(tm);
  if (!rc) rc = qins_train_model_loss_grad(tm, ids, n, loss);
  if (!rc) rc = qins_train_model_pull_grads(tm);
  return rc;
}

static qins_train_model *open_tm(const char *path, qins_backend *be) {
  qins_model *m;
  if (qins_model_open(path, &m)) fail_msg("%s", qins_error_msg());
  qins_train_model *tm;
  if (qins_train_model_create(m, be, &tm)) fail_msg("%s", qins_error_msg());
  qins_model_close(m);
  return tm;
}

static void fixture_vk(const char *name) {
  NEED_VK();
  char rel[256];
  snprintf(rel, sizeof rel, "fixtures/hf/%s", name);
  const char *dir = test_shared_path(rel);
  qins_train_model *tm = open_tm(dir, vk);
  assert_int_equal(qins_train_model_on_device(tm), 1);
  int np = qins_train_model_count(tm);
  train_param *params = calloc((size_t)np, sizeof *params);
  for (int i = 0; i < np; i++) {
    const qins_train_param *p = qins_train_model_param(tm, i);
    params[i] = (train_param){p->name, p->w, p->g, p->n};
  }
  train_fixture_check(dir, params, np, vk_loss_grad, tm, (train_fixture_tol){1e-4, 1e-4});
  free(params);
  qins_train_model_destroy(tm);
}

static void test_fixture_llama_vk(void **st) { fixture_vk("llama_gqa"); }
static void test_fixture_phi3_vk(void **st) { fixture_vk("phi3_longrope"); }
static void test_fixture_gpt2_vk(void **st) { fixture_vk("gpt2"); }

static float *grads_of(qins_train_model *tm) {
  int64_t total = 0;
  for (int i = 0; i < qins_train_model_count(tm); i++) total += qins_train_model_param(tm, i)->n;
  float *g = malloc((size_t)total * sizeof(float)), *gp = g;
  for (int i = 0; i < qins_train_model_count(tm); i++) {
    const qins_train_param *p = qins_train_model_param(tm, i);
    memcpy(gp, p->g, (size_t)p->n * sizeof(float));
    gp += p->n;
  }
  return g;
}

/* per-parameter relative L2 of b against a (flat, in parameter order) */
static double worst_rel(qins_train_model *tm, const float *a, const float *b, const char **name) {
  double worst = 0;
  for (int i = 0; i < qins_train_model_count(tm); i++) {
    const qins_train_param *p = qins_train_model_param(tm, i);
    double e = test_rel_l2(b, a, p->n);
    if (!(e <= worst)) {
      worst = e;
      *name = p->name;
    }
    a += p->n;
    b += p->n;
  }
  return worst;
}

/* stories260K (llama2.c layout, tied classifier, interleaved RoPE): vk against cpu on fresh random
 * ids; then a 3-part chain (embed + layer 0 | layers 1..L-1 | head) on vk against the whole call. */
static void test_stories260k_vk(void **st) {
  NEED_VK();
  const char *path = test_shared_path("models/stories260K/stories260K.bin");
  enum { N = 64 };
  int32_t ids[N];
  for (int i = 0; i < N; i++) ids[i] = (int32_t)(test_rand_u64() % 512);
  qins_backend *cpu;
  assert_int_equal(qins_backend_create("cpu", &cpu), 0);
  qins_train_model *tc = open_tm(path, cpu), *tv = open_tm(path, vk);
  double lc, lv;
  assert_int_equal(qins_train_model_loss_grad(tc, ids, N, &lc), 0);
  assert_int_equal(qins_train_model_loss_grad(tv, ids, N, &lv), 0);
  assert_int_equal(qins_train_model_pull_grads(tv), 0);
  float *gc = grads_of(tc), *gv = grads_of(tv);
  const char *wn = "";
  double w = worst_rel(tc, gc, gv, &wn);
  print_message("  stories260K: loss cpu %.7f vk %.7f; worst gradient relative L2 %.3g (%s)\n", lc, lv, w, wn);
  assert_true(fabs(lc - lv) <= 1e-5 * fmax(1.0, fabs(lc)));
  assert_true(w <= 1e-5);

  /* the chain on vk */
  int L = 5, D = 64;
  {
    qins_model *m;
    assert_int_equal(qins_model_open(path, &m), 0);
    L = m->cfg.n_layers;
    D = (int)m->cfg.dim;
    qins_model_close(m);
  }
  assert_int_equal(qins_train_model_zero_grad(tv), 0);
  qins_train_part *P[3];
  assert_int_equal(qins_train_part_create(tv, 0, 1, 1, 0, 1, &P[0]), 0);
  assert_int_equal(qins_train_part_create(tv, 1, L, 0, 0, 1, &P[1]), 0);
  assert_int_equal(qins_train_part_create(tv, L, L, 0, 1, 1, &P[2]), 0);
  float *xa = malloc((size_t)N * D * sizeof(float)), *xb = malloc((size_t)N * D * sizeof(float));
  float *da = malloc((size_t)N * D * sizeof(float)), *db = malloc((size_t)N * D * sizeof(float));
  double lp;
  assert_int_equal(qins_train_part_forward(P[0], 0, ids, N, NULL, xa, NULL), 0);
  assert_int_equal(qins_train_part_forward(P[1], 0, NULL, N, xa, xb, NULL), 0);
  assert_int_equal(qins_train_part_forward(P[2], 0, ids, N, xb, NULL, &lp), 0);
  assert_int_equal(qins_train_part_backward(P[2], 0, NULL, db), 0);
  assert_int_equal(qins_train_part_backward(P[1], 0, db, da), 0);
  assert_int_equal(qins_train_part_backward(P[0], 0, da, NULL), 0);
  assert_int_equal(qins_train_model_pull_grads(tv), 0);
  float *gp = grads_of(tv);
  w = worst_rel(tv, gv, gp, &wn);
  print_message("  stories260K on vk: 3-part chain loss %.7f (whole %.7f), worst gradient relative L2 %.3g (%s)\n", lp,
                lv, w, wn);
  assert_true(fabs(lp - lv) <= 1e-6 * fmax(1.0, fabs(lv)));
  assert_true(w <= 1e-6);
  for (int k = 0; k < 3; k++) qins_train_part_destroy(P[k]);
  free(xa);
  free(xb);
  free(da);
  free(db);
  free(gc);
  free(gv);
  free(gp);
  qins_train_model_destroy(tc);
  qins_train_model_destroy(tv);
  qins_backend_destroy(cpu);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixture_llama_vk),
      cmocka_unit_test(test_fixture_phi3_vk),
      cmocka_unit_test(test_fixture_gpt2_vk),
      cmocka_unit_test(test_stories260k_vk),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
