/* Vulkan quantized kernels: the fused quantized matmul (qins-f32, qins8, qins6, int8-row,
 * int8-block32 weights) and attention over a qins8 V cache, each compared with the unfused path
 * on vk (dequantize on vk, then the f32 kernel) and with the cpu backend.
 *
 * Inputs are identical on both backends: weights are encoded on the host with the codec
 * (core/qins_codec.h) and the same code and scale bytes are written to each backend, as views at
 * random (mostly unaligned) byte offsets. Outputs are NaN-poisoned. Shapes: M in {1, 3, 17, 70}
 * (GEMV, 64-tile GEMM) plus M = N = 130 (128-tile GEMM), K in {5, 33, 100, 257} (not multiples
 * of 4 or 32: qins6 groups and int8 blocks end short), N odd.
 *
 * Tolerance (relative L2) 1e-5 everywhere: fused and unfused multiply the same decoded values
 * (the fused kernel folds 1/alpha or the int8 step after the sum: a few ulp), and cpu and vk sum
 * the same products in different orders over K <= 257 (~1e-6). A wrong code, table entry, scale
 * or row shows as >= 1e-3. The runs under QINS_VK_VALIDATION=1 assert zero validation messages;
 * the forced fallbacks (QINS_VK_NO_STORAGE8: codes read as 32-bit words; QINS_VK_NO_SUBGROUP;
 * QINS_VK_NO_PUSH_DESCRIPTORS; QINS_VK_LUT_ARITH: D_1 by division instead of the table) rerun the
 * same comparisons. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/qins_codec.h"
#include "core/vk/vk.h"
#include "tests/test_pair.h"

#define TOL 1e-5

/* cpu, vk:0 */
static qins_backend **const B = test_pair_be;

static const qins_dtype k_formats[] = {QINS_DT_QINS_F32, QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_INT8_ROW,
                                       QINS_DT_INT8_B32};
#define N_FORMATS (int)(sizeof k_formats / sizeof k_formats[0])

/* A quantized weight [n,k] in fmt on both backends (codes and scales both views), plus the host
 * decode of it. */
typedef struct {
  pair w, s;
  float *deq;
} qweight;

static void qweight_make(qweight *q, qins_dtype fmt, int64_t n, int64_t k) {
  float *w = malloc((size_t)(n * k) * sizeof *w);
  test_fill_normal(w, n * k, 0.05f);
  int64_t nsc = qins_format_scale_count(fmt, n, k);
  float *sc = malloc((size_t)nsc * sizeof *sc);
  if (qins_dtype_is_qins(fmt))
    for (int64_t r = 0; r < n; r++) sc[r] = qins_codec_calibrate_row(w + r * k, k, fmt, (qins_alpha_spec){QINS_ALPHA_MSE, 0});
  size_t nb = (size_t)n * qins_format_row_bytes(fmt, k);
  void *codes = malloc(nb);
  assert_int_equal(qins_codec_encode(fmt, w, n, k, sc, codes, sc), 0);
  q->deq = malloc((size_t)(n * k) * sizeof(float));
  assert_int_equal(qins_codec_decode(fmt, codes, n, k, sc, q->deq), 0);
  int64_t ws[2] = {n, k};
  pmake(&q->s, "w_scale", QINS_DT_F32, 1, &nsc, sc, rand_off(4));
  pmake(&q->w, "w_q", fmt, 2, ws, codes, rand_off(fmt == QINS_DT_QINS_F32 ? 4 : 1));
  for (int i = 0; i < 2; i++) q->w.t[i].scale = &q->s.t[i];
  free(w);
  free(sc);
  free(codes);
}

static void qweight_free(qweight *q) {
  pfree(&q->w);
  pfree(&q->s);
  free(q->deq);
}

/* fused vk vs unfused vk (dequantize on vk, then the f32 matmul) vs cpu fused; then the backends'
 * own unfused path (qins_backend_set_qmatmul_path) on cpu and vk */
static void qmatmul_case(qins_dtype fmt, int64_t m, int64_t k, int64_t n, int with_bias) {
  qweight q;
  qweight_make(&q, fmt, n, k);
  float *x = malloc((size_t)(m * k) * sizeof *x), *bias = malloc((size_t)n * sizeof *bias);
  test_fill_normal(x, m * k, 1.0f);
  test_fill_normal(bias, n, 0.5f);
  int64_t xs[2] = {m, k}, ys[2] = {m, n}, ws[2] = {n, k};
  pair X, Bi, Y, Yu, Wd;
  pmake(&X, "x", QINS_DT_F32, 2, xs, x, rand_off(4));
  pmake(&Bi, "bias", QINS_DT_F32, 1, &n, bias, rand_off(4));
  pmake(&Y, "y", QINS_DT_F32, 2, ys, NULL, rand_off(4));
  pmake(&Yu, "y_unfused", QINS_DT_F32, 2, ys, NULL, rand_off(4));
  pmake(&Wd, "w_deq", QINS_DT_F32, 2, ws, NULL, rand_off(4));
  for (int i = 0; i < 2; i++) OK(qins_op_matmul(B[i], &X.t[i], &q.w.t[i], with_bias ? &Bi.t[i] : NULL, &Y.t[i]));
  OK(qins_op_dequantize(B[1], &q.w.t[1], &Wd.t[1]));
  OK(qins_op_matmul(B[1], &X.t[1], &Wd.t[1], with_bias ? &Bi.t[1] : NULL, &Yu.t[1]));
  float *cpu = pair_read(&Y, 0), *fused = pair_read(&Y, 1), *unf = pair_read(&Yu, 1), *wd = pair_read(&Wd, 1);
  char what[160];
  snprintf(what, sizeof what, "%s M=%lld K=%lld N=%lld bias=%d", qins_dtype_name(fmt), (long long)m, (long long)k,
           (long long)n, with_bias);
  char w2[256];
  /* the vk dequantize is the codec's decode; exact on lavapipe, but GPU division and 1/alpha are
   * not correctly rounded everywhere (NVIDIA: 1 ulp, rel L2 3e-8), so allow float rounding */
  snprintf(w2, sizeof w2, "vk dequantize %s", what);
  test_assert_close(w2, wd, q.deq, n * k, 1e-6);
  snprintf(w2, sizeof w2, "vk fused vs vk unfused %s", what);
  test_assert_close(w2, fused, unf, m * n, TOL);
  snprintf(w2, sizeof w2, "vk fused vs cpu %s", what);
  test_assert_close(w2, fused, cpu, m * n, TOL);
  /* the unfused path chosen on the backend: on vk exactly the two explicit ops above (same
   * shaders, same data), on cpu the cpu's dequantize + f32 matmul */
  for (int i = 0; i < 2; i++) {
    qins_backend_set_qmatmul_path(B[i], QINS_QMATMUL_UNFUSED);
    int rc = qins_op_matmul(B[i], &X.t[i], &q.w.t[i], with_bias ? &Bi.t[i] : NULL, &Y.t[i]);
    qins_backend_set_qmatmul_path(B[i], QINS_QMATMUL_FUSED);
    OK(rc);
  }
  float *cpu_u = pair_read(&Y, 0), *vk_u = pair_read(&Y, 1);
  snprintf(w2, sizeof w2, "vk unfused path vs explicit dequantize + matmul %s", what);
  test_assert_close(w2, vk_u, unf, m * n, 0.0);
  snprintf(w2, sizeof w2, "cpu unfused path vs cpu fused %s", what);
  test_assert_close(w2, cpu_u, cpu, m * n, TOL);
  snprintf(w2, sizeof w2, "vk unfused path vs cpu unfused path %s", what);
  test_assert_close(w2, vk_u, cpu_u, m * n, TOL);
  free(cpu); free(fused); free(unf); free(wd); free(cpu_u); free(vk_u);
  pfree(&X); pfree(&Bi); pfree(&Y); pfree(&Yu); pfree(&Wd);
  qweight_free(&q);
  free(x); free(bias);
}

static int64_t odd_n(void) { return 2 * (int64_t)(test_rand_u64() % 70) + 1; }

static void test_qmatmul(void **state) {
  (void)state;
  NEED_VK();
  static const int64_t ms[] = {1, 3, 17, 70}, ks[] = {5, 33, 100, 257};
  for (int f = 0; f < N_FORMATS; f++) {
    for (int a = 0; a < 4; a++)
      for (int b = 0; b < 4; b++) qmatmul_case(k_formats[f], ms[a], ks[b], odd_n(), (a + b) % 2);
    qmatmul_case(k_formats[f], 130, 100, 131, 1); /* 128x128 tiles */
  }
}

/* Weight and scale bindings split into row ranges (limit forced small). */
static void test_qmatmul_split(void **state) {
  (void)state;
  NEED_VK();
  qins_vk_set_max_range(B[1], 8192);
  for (int f = 0; f < N_FORMATS; f++) {
    qmatmul_case(k_formats[f], 1, 257, 301, 1);
    qmatmul_case(k_formats[f], 17, 100, 77, 0);
  }
}

static int reset_range(void **state) {
  (void)state;
  if (B[1]) qins_vk_set_max_range(B[1], 0);
  return 0;
}

/* Wrong scale counts are refused with the tensor named. */
static void test_qmatmul_bad_scales(void **state) {
  (void)state;
  NEED_VK();
  qins_tensor sc, w, x, y;
  int64_t three = 3;
  test_tensor_make(B[1], &sc, "alpha_short", QINS_DT_F32, 1, &three, (float[]){1, 1, 1});
  assert_int_equal(qins_tensor_init(&w, "w_bad", QINS_DT_INT8_B32, 2, (int64_t[]){2, 40}), 0);
  w.scale = &sc;
  assert_int_equal(qins_tensor_alloc(B[1], &w), 0);
  test_tensor_make(B[1], &x, "x", QINS_DT_F32, 2, (int64_t[]){1, 40}, NULL);
  test_tensor_make(B[1], &y, "y", QINS_DT_F32, 2, (int64_t[]){1, 2}, NULL);
  assert_int_equal(qins_op_matmul(B[1], &x, &w, NULL, &y), QINS_EINVAL); /* needs 2*2 block steps */
  assert_non_null(strstr(qins_error_msg(), "w_bad"));
  qins_tensor_free(&w);
  qins_tensor_free(&x);
  qins_tensor_free(&y);
}

/* ---------------------------------------------------------------- qins8 V cache */

/* vk attention over the qins8 V cache vs vk attention over the host-dequantized V (f32) vs cpu. */
static void vq8_case(int64_t m, int64_t hq, int64_t hkv, int64_t d, int64_t t, int64_t pos0) {
  int64_t qs[3] = {m, hq, d}, cs[3] = {t, hkv, d}, rows = t * hkv;
  float *q = malloc((size_t)(m * hq * d) * 4), *k = malloc((size_t)(rows * d) * 4), *v = malloc((size_t)(rows * d) * 4);
  test_fill_normal(q, m * hq * d, 1.0f);
  test_fill_normal(k, rows * d, 1.0f);
  test_fill_normal(v, rows * d, 1.0f);
  float *alpha = malloc((size_t)rows * 4), *vdeq = malloc((size_t)(rows * d) * 4);
  uint8_t *codes = malloc((size_t)(rows * d));
  for (int64_t r = 0; r < rows; r++) alpha[r] = qins_codec_calibrate_row(v + r * d, d, QINS_DT_QINS8, (qins_alpha_spec){QINS_ALPHA_MSE, 0});
  assert_int_equal(qins_codec_encode(QINS_DT_QINS8, v, rows, d, alpha, codes, NULL), 0);
  assert_int_equal(qins_codec_decode(QINS_DT_QINS8, codes, rows, d, alpha, vdeq), 0);
  pair Q, K, V8, VA, VF, O, OF;
  pmake(&Q, "q", QINS_DT_F32, 3, qs, q, rand_off(4));
  pmake(&K, "k_cache", QINS_DT_F32, 3, cs, k, rand_off(4));
  pmake(&VA, "v_alpha", QINS_DT_F32, 1, &rows, alpha, rand_off(4));
  pmake(&V8, "v_cache_q8", QINS_DT_QINS8, 3, cs, codes, rand_off(1));
  pmake(&VF, "v_cache_deq", QINS_DT_F32, 3, cs, vdeq, rand_off(4));
  pmake(&O, "out", QINS_DT_F32, 3, qs, NULL, rand_off(4));
  pmake(&OF, "out_f32v", QINS_DT_F32, 3, qs, NULL, rand_off(4));
  for (int i = 0; i < 2; i++) V8.t[i].scale = &VA.t[i];
  float scale = 1.0f / sqrtf((float)d);
  for (int i = 0; i < 2; i++) OK(qins_op_attention(B[i], &Q.t[i], &K.t[i], &V8.t[i], pos0, scale, &O.t[i]));
  OK(qins_op_attention(B[1], &Q.t[1], &K.t[1], &VF.t[1], pos0, scale, &OF.t[1]));
  float *cpu = pair_read(&O, 0), *got = pair_read(&O, 1), *ref = pair_read(&OF, 1);
  char what[200];
  snprintf(what, sizeof what, "qins8-V attention M=%lld Hq=%lld Hkv=%lld D=%lld T=%lld pos0=%lld vs dequantized V",
           (long long)m, (long long)hq, (long long)hkv, (long long)d, (long long)t, (long long)pos0);
  test_assert_close(what, got, ref, m * hq * d, TOL);
  snprintf(what, sizeof what, "qins8-V attention M=%lld Hq=%lld Hkv=%lld D=%lld T=%lld pos0=%lld vs cpu", (long long)m,
           (long long)hq, (long long)hkv, (long long)d, (long long)t, (long long)pos0);
  test_assert_close(what, got, cpu, m * hq * d, TOL);
  free(cpu); free(got); free(ref);
  pfree(&Q); pfree(&K); pfree(&V8); pfree(&VA); pfree(&VF); pfree(&O); pfree(&OF);
  free(q); free(k); free(v); free(alpha); free(vdeq); free(codes);
}

static void test_vq8_attention(void **state) {
  (void)state;
  NEED_VK();
  vq8_case(1, 1, 1, 8, 1, 0);
  vq8_case(7, 4, 2, 33, 20, 13);
  vq8_case(5, 6, 3, 64, 300, 200);
  vq8_case(3, 2, 2, 256, 130, 0);
  vq8_case(1, 8, 2, 128, 2000, 1999); /* decode: key splits + combine */
  vq8_case(4, 4, 2, 32, 1500, 1000);
}

static void test_vq8_bad_scales(void **state) {
  (void)state;
  NEED_VK();
  int64_t cs[3] = {4, 2, 8}, five = 5;
  qins_tensor al, v8, k, q, o;
  test_tensor_make(B[1], &al, "v_alpha_short", QINS_DT_F32, 1, &five, NULL);
  assert_int_equal(qins_tensor_init(&v8, "v_cache_bad", QINS_DT_QINS8, 3, cs), 0);
  v8.scale = &al;
  assert_int_equal(qins_tensor_alloc(B[1], &v8), 0);
  test_tensor_make(B[1], &k, "k_cache", QINS_DT_F32, 3, cs, NULL);
  test_tensor_make(B[1], &q, "q", QINS_DT_F32, 3, (int64_t[]){1, 2, 8}, NULL);
  test_tensor_make(B[1], &o, "out", QINS_DT_F32, 3, (int64_t[]){1, 2, 8}, NULL);
  assert_int_equal(qins_op_attention(B[1], &q, &k, &v8, 0, 1.0f, &o), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "v_cache_bad"));
  qins_tensor_free(&v8);
  qins_tensor_free(&k);
  qins_tensor_free(&q);
  qins_tensor_free(&o);
}

/* ---------------------------------------------------------------- other device paths */

/* A few cases of every format on a fresh vk:0 made with env; returns its validation messages
 * (with QINS_VK_VALIDATION=1), or -1 when the layer is not installed. */
static int run_with_env(const char *const *env) {
  for (int i = 0; env[i]; i += 2) setenv(env[i], env[i + 1], 1);
  qins_backend *v;
  int rc = qins_backend_create("vk:0", &v);
  for (int i = 0; env[i]; i += 2) unsetenv(env[i]);
  if (rc == QINS_EUNSUPPORTED && strstr(qins_error_msg(), "not installed")) return -1;
  assert_int_equal(rc, 0);
  qins_backend *keep = B[1];
  B[1] = v;
  for (int f = 0; f < N_FORMATS; f++) {
    qmatmul_case(k_formats[f], 1, 33, 7, 1);
    qmatmul_case(k_formats[f], 17, 257, 9, 0);
    qmatmul_case(k_formats[f], 130, 5, 129, 1);
  }
  vq8_case(3, 4, 2, 33, 20, 10);
  vq8_case(1, 2, 1, 16, 600, 599);
  assert_int_equal(qins_backend_sync(v), 0);
  B[1] = keep;
  int msgs = qins_vk_validation_messages(v);
  qins_backend_destroy(v);
  return msgs;
}

static void test_fallback_paths(void **state) {
  (void)state;
  NEED_VK();
  const char *env[] = {"QINS_VK_NO_STORAGE8", "1", "QINS_VK_NO_SUBGROUP", "1", "QINS_VK_NO_PUSH_DESCRIPTORS", "1",
                       NULL};
  assert_int_equal(run_with_env(env), 0);
  const char *env2[] = {"QINS_VK_LUT_ARITH", "1", NULL};
  assert_int_equal(run_with_env(env2), 0);
  const char *env3[] = {"QINS_VK_LUT_ARITH", "1", "QINS_VK_NO_STORAGE8", "1", NULL};
  assert_int_equal(run_with_env(env3), 0);
}

static void test_validation(void **state) {
  (void)state;
  NEED_VK();
  const char *env[] = {"QINS_VK_VALIDATION", "1", NULL};
  int msgs = run_with_env(env);
  if (msgs < 0) {
    skip();
    return;
  }
  assert_int_equal(msgs, 0);
  const char *env2[] = {"QINS_VK_VALIDATION", "1", "QINS_VK_NO_STORAGE8", "1", NULL};
  assert_int_equal(run_with_env(env2), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qmatmul),       cmocka_unit_test_teardown(test_qmatmul_split, reset_range),
      cmocka_unit_test(test_qmatmul_bad_scales), cmocka_unit_test(test_vq8_attention),
      cmocka_unit_test(test_vq8_bad_scales), cmocka_unit_test(test_fallback_paths),
      cmocka_unit_test(test_validation),
  };
  return cmocka_run_group_tests_name("vk_quant", tests, test_pair_setup, test_pair_teardown);
}
