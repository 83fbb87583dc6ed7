/* Quantized matmul and the qins8 V cache: fused vs unfused vs a double reference, every format.
 *
 * Weights are fresh N(0, 0.05) values quantized by the backend's own calibrate/quantize ops into
 * qins-f32, qins8, qins6, int8-row and int8-block32. The double reference decodes them on the host
 * with the codec (core/qins_codec.h) and sums in double. Odd shapes (K not a multiple of 4, 8, 16
 * or 32; N odd) reach every tail loop; M in {1, 3, 17} reaches the GEMV and both GEMM tile edges.
 * Outputs are NaN-poisoned so an unwritten element fails. On the cpu backend each decode variant
 * (scalar, gather, perm512, vbmi where the CPU has them) is run. Backends without quantized matmul
 * (QINS_EUNSUPPORTED) are skipped with a message.
 *
 * Tolerances (relative L2):
 *  - fused vs double reference: 2e-6. Both decode the same codes to the same floats; the only
 *    difference is f32 summation order over K <= 515 and folding 1/alpha after the sum instead of
 *    into every element (a few ulp). A wrong code, table entry or scale shows as >= 1e-3.
 *  - fused vs unfused (the backend's qmatmul_path, on every backend): 2e-6 on the cpu (same
 *    argument: two f32 summations of identical products); 1e-5 on a device backend, whose
 *    division and 1/alpha are not correctly rounded and whose unfused path rounds per element.
 *  - qins8 V-cache attention vs attention over the explicitly dequantized V: 2e-6. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/cpu/cpu_qkern.h"
#include "core/error.h"
#include "core/qins_codec.h"
#include "core/qins_kv.h"
#include "tests/test_util.h"

#define TOL_REF 2e-6
#define TOL_FUSED_UNFUSED 2e-6
#define TOL_FUSED_UNFUSED_DEV 1e-5
#define TOL_ATTN 2e-6

static const qins_dtype k_formats[] = {QINS_DT_QINS_F32, QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_INT8_ROW,
                                       QINS_DT_INT8_B32};
#define N_FORMATS (int)(sizeof k_formats / sizeof k_formats[0])

static qins_backend *g_be;
static const char *g_be_name;
static int g_skip;

/* Quantize host weights w [n,k] into a new tensor on be (with its scale tensor). Returns 0 or the
 * backend's status (QINS_EUNSUPPORTED on a backend without the codec ops). */
static int make_quantized(qins_backend *be, qins_dtype fmt, const float *w, int64_t n, int64_t k, qins_tensor *wq,
                          qins_tensor *scale) {
  int64_t shape[2] = {n, k};
  int64_t nsc = qins_format_scale_count(fmt, n, k);
  qins_tensor wf;
  test_tensor_make(be, &wf, "w_f32", QINS_DT_F32, 2, shape, w);
  test_tensor_make(be, scale, "w_scale", QINS_DT_F32, 1, &nsc, NULL);
  assert_int_equal(qins_tensor_init(wq, "w_q", fmt, 2, shape), 0);
  wq->scale = scale;
  assert_int_equal(qins_tensor_alloc(be, wq), 0);
  int rc = 0;
  if (qins_dtype_is_qins(fmt)) rc = qins_op_calibrate(be, &wf, fmt, (qins_alpha_spec){QINS_ALPHA_MSE, 0}, scale);
  if (!rc) rc = qins_op_quantize(be, &wf, wq);
  if (!rc) rc = qins_backend_sync(be);
  qins_tensor_free(&wf);
  return rc;
}

/* Host decode with the codec, then double dot products. */
static void reference(qins_dtype fmt, const qins_tensor *wq, const float *x, const float *bias, int64_t m, int64_t n,
                      int64_t k, float *y) {
  void *codes = malloc(qins_tensor_nbytes(wq));
  int64_t nsc = qins_tensor_numel(wq->scale);
  float *sc = malloc((size_t)nsc * sizeof(float)), *wd = malloc((size_t)(n * k) * sizeof(float));
  assert_int_equal(qins_tensor_read(wq, codes), 0);
  assert_int_equal(qins_tensor_read(wq->scale, sc), 0);
  assert_int_equal(qins_codec_decode(fmt, codes, n, k, sc, wd), 0);
  for (int64_t r = 0; r < m; r++)
    for (int64_t o = 0; o < n; o++) {
      double s = bias ? bias[o] : 0.0;
      for (int64_t i = 0; i < k; i++) s += (double)wd[o * k + i] * x[r * k + i];
      y[r * n + o] = (float)s;
    }
  free(codes);
  free(sc);
  free(wd);
}

static void run_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *wq, const qins_tensor *b,
                       qins_tensor *y, float *out) {
  test_poison(y);
  int rc = qins_op_matmul(be, x, wq, b, y);
  if (rc) fail_msg("matmul on %s: %s", be->name, qins_error_msg());
  assert_int_equal(qins_backend_sync(be), 0);
  assert_int_equal(qins_tensor_read(y, out), 0);
}

static void test_matmul_formats(void **state) {
  (void)state;
  if (g_skip) skip();
  qins_backend *be = g_be;
  static const int64_t ms[] = {1, 3, 17};
  static const int64_t nk[][2] = {{5, 37}, {33, 70}, {7, 16}, {129, 515}, {48, 96}, {3, 200}};
  int is_cpu = strcmp(be->name, "cpu") == 0;
  for (int f = 0; f < N_FORMATS; f++) {
    qins_dtype fmt = k_formats[f];
    for (size_t s = 0; s < sizeof nk / sizeof nk[0]; s++) {
      int64_t n = nk[s][0], k = nk[s][1];
      float *w = malloc((size_t)(n * k) * sizeof(float)), *bias = malloc((size_t)n * sizeof(float));
      test_fill_normal(w, n * k, 0.05f);
      test_fill_normal(bias, n, 0.5f);
      qins_tensor wq, sc, tb;
      int rc = make_quantized(be, fmt, w, n, k, &wq, &sc);
      if (rc == QINS_EUNSUPPORTED) {
        printf("# skip %s on %s: %s\n", qins_dtype_name(fmt), be->name, qins_error_msg());
        qins_tensor_free(&wq); /* frees its scale tensor too */
        free(w);
        free(bias);
        continue;
      }
      assert_int_equal(rc, 0);
      test_tensor_make(be, &tb, "bias", QINS_DT_F32, 1, &n, bias);
      for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
        int64_t m = ms[mi];
        int with_bias = (int)((s + mi) % 2);
        float *x = malloc((size_t)(m * k) * sizeof(float));
        float *ref = malloc((size_t)(m * n) * sizeof(float)), *got = malloc((size_t)(m * n) * sizeof(float));
        float *unf = malloc((size_t)(m * n) * sizeof(float));
        test_fill_normal(x, m * k, 1.0f);
        qins_tensor tx, ty;
        test_tensor_make(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){m, k}, x);
        test_tensor_make(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){m, n}, NULL);
        reference(fmt, &wq, x, with_bias ? bias : NULL, m, n, k, ref);
        char what[160];
        /* fused, through the op table */
        test_poison(&ty);
        rc = qins_op_matmul(be, &tx, &wq, with_bias ? &tb : NULL, &ty);
        int fused_ok = rc != QINS_EUNSUPPORTED;
        if (rc == QINS_EUNSUPPORTED) {
          printf("# skip matmul %s on %s: %s\n", qins_dtype_name(fmt), be->name, qins_error_msg());
        } else {
          run_matmul(be, &tx, &wq, with_bias ? &tb : NULL, &ty, got);
          snprintf(what, sizeof what, "%s fused %s M=%lld N=%lld K=%lld%s vs double", be->name, qins_dtype_name(fmt),
                   (long long)m, (long long)n, (long long)k, with_bias ? " +bias" : "");
          test_assert_close(what, got, ref, m * n, TOL_REF);
        }
        if (is_cpu) {
          /* every decode variant this CPU offers, and the unfused path both ways it is reached */
          cpu_qdecode variants[] = {CPU_QDECODE_SCALAR, CPU_QDECODE_GATHER, CPU_QDECODE_PERM512, CPU_QDECODE_VBMI};
          for (int v = 0; v < 4; v++) {
            cpu_qdecode used = cpu_qmatmul_set_decode(variants[v]);
            run_matmul(be, &tx, &wq, with_bias ? &tb : NULL, &ty, got);
            snprintf(what, sizeof what, "cpu fused[%s] %s M=%lld N=%lld K=%lld vs double", cpu_qdecode_name(used),
                     qins_dtype_name(fmt), (long long)m, (long long)n, (long long)k);
            test_assert_close(what, got, ref, m * n, TOL_REF);
          }
          cpu_qmatmul_set_decode(CPU_QDECODE_AUTO);
        }
        /* the unfused path (the backend's qmatmul_path), on every backend: vs double and vs fused */
        if (fused_ok) {
          run_matmul(be, &tx, &wq, with_bias ? &tb : NULL, &ty, got);
          qins_backend_set_qmatmul_path(be, QINS_QMATMUL_UNFUSED);
          run_matmul(be, &tx, &wq, with_bias ? &tb : NULL, &ty, unf);
          assert_int_equal(qins_backend_set_qmatmul_path(be, QINS_QMATMUL_FUSED), QINS_QMATMUL_UNFUSED);
          snprintf(what, sizeof what, "%s unfused %s M=%lld N=%lld K=%lld vs double", be->name, qins_dtype_name(fmt),
                   (long long)m, (long long)n, (long long)k);
          test_assert_close(what, unf, ref, m * n, is_cpu ? TOL_REF : TOL_FUSED_UNFUSED_DEV);
          snprintf(what, sizeof what, "%s fused vs unfused %s M=%lld N=%lld K=%lld", be->name, qins_dtype_name(fmt),
                   (long long)m, (long long)n, (long long)k);
          test_assert_close(what, got, unf, m * n, is_cpu ? TOL_FUSED_UNFUSED : TOL_FUSED_UNFUSED_DEV);
        }
        if (is_cpu) {
          /* the direct entry point agrees with the path selected on the backend */
          test_poison(&ty);
          assert_int_equal(cpu_qmatmul_unfused(be, &tx, &wq, with_bias ? &tb : NULL, &ty), 0);
          assert_int_equal(qins_tensor_read(&ty, got), 0);
          test_assert_close("cpu_qmatmul_unfused direct", got, unf, m * n, 0.0);
        }
        qins_tensor_free(&tx);
        qins_tensor_free(&ty);
        free(x);
        free(ref);
        free(got);
        free(unf);
      }
      qins_tensor_free(&tb);
      qins_tensor_free(&wq);
      free(w);
      free(bias);
    }
  }
}

/* The fused kernel reads the codes, not something else: flipping one code changes exactly the
 * outputs of its row, by the table difference times x. */
static void test_matmul_one_code(void **state) {
  (void)state;
  if (g_skip) skip();
  qins_backend *be = g_be;
  int64_t n = 9, k = 41, m = 2;
  float w[9 * 41], x[2 * 41], y0[18], y1[18];
  test_fill_normal(w, n * k, 0.05f);
  test_fill_normal(x, m * k, 1.0f);
  qins_tensor wq, sc, tx, ty;
  int rc = make_quantized(be, QINS_DT_QINS8, w, n, k, &wq, &sc);
  if (rc == QINS_EUNSUPPORTED) {
    qins_tensor_free(&wq);
    skip();
  }
  assert_int_equal(rc, 0);
  test_tensor_make(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){m, k}, x);
  test_tensor_make(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){m, n}, NULL);
  if (qins_op_matmul(be, &tx, &wq, NULL, &ty) == QINS_EUNSUPPORTED) {
    printf("# skip matmul qins8 on %s: %s\n", be->name, qins_error_msg());
    qins_tensor_free(&wq);
    qins_tensor_free(&tx);
    qins_tensor_free(&ty);
    skip();
  }
  run_matmul(be, &tx, &wq, NULL, &ty, y0);
  uint8_t codes[9 * 41];
  float alpha[9];
  assert_int_equal(qins_tensor_read(&wq, codes), 0);
  assert_int_equal(qins_tensor_read(&sc, alpha), 0);
  int64_t o = 4, i = 40; /* the K tail */
  uint8_t old = codes[o * k + i], new_code = old == 128 ? 129 : 128;
  codes[o * k + i] = new_code;
  assert_int_equal(qins_tensor_write(&wq, codes), 0);
  run_matmul(be, &tx, &wq, NULL, &ty, y1);
  const float *lut = qins_codec_lut8();
  for (int64_t r = 0; r < m; r++)
    for (int64_t c = 0; c < n; c++) {
      double want = c == o ? (double)y0[r * n + c] + (lut[new_code] - lut[old]) / alpha[o] * x[r * k + i]
                           : (double)y0[r * n + c];
      assert_true(fabs(y1[r * n + c] - want) <= 1e-5 * (fabs(want) + 1.0));
    }
  qins_tensor_free(&wq);
  qins_tensor_free(&tx);
  qins_tensor_free(&ty);
}

/* Bad scales fail cleanly with the tensor named, never read out of bounds. */
static void test_matmul_bad_scales(void **state) {
  (void)state;
  if (g_skip) skip();
  qins_backend *be = g_be;
  qins_tensor wq, sc, tx, ty;
  int64_t nsc = 3; /* a qins8 [5,8] weight needs 5 */
  test_tensor_make(be, &sc, "alpha_short", QINS_DT_F32, 1, &nsc, (float[]){1, 1, 1});
  assert_int_equal(qins_tensor_init(&wq, "w_bad", QINS_DT_QINS8, 2, (int64_t[]){5, 8}), 0);
  wq.scale = &sc;
  assert_int_equal(qins_tensor_alloc(be, &wq), 0);
  test_tensor_make(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){1, 8}, NULL);
  test_tensor_make(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){1, 5}, NULL);
  int rc = qins_op_matmul(be, &tx, &wq, NULL, &ty);
  if (rc != QINS_EUNSUPPORTED) {
    assert_int_equal(rc, QINS_EINVAL);
    assert_non_null(strstr(qins_error_msg(), "w_bad"));
  }
  qins_tensor_free(&wq);
  qins_tensor_free(&tx);
  qins_tensor_free(&ty);
}

/* ---------------------------------------------------------------- V cache */

static void attention_case(qins_backend *be, int64_t t, int64_t hq, int64_t hkv, int64_t d, int64_t m, int64_t pos0,
                           qins_alpha_spec spec) {
  int64_t nkv = t * hkv * d;
  float *kc = malloc((size_t)nkv * sizeof(float)), *vc = malloc((size_t)nkv * sizeof(float));
  float *q = malloc((size_t)(m * hq * d) * sizeof(float));
  test_fill_normal(kc, nkv, 1.0f);
  test_fill_normal(vc, nkv, 1.0f);
  test_fill_normal(q, m * hq * d, 1.0f);
  int64_t shape[3] = {t, hkv, d}, qshape[3] = {m, hq, d}, nal = t * hkv;
  qins_tensor tk, tv8, tal, tvf, tq, to;
  test_tensor_make(be, &tk, "k_cache", QINS_DT_F32, 3, shape, kc);
  test_tensor_make(be, &tq, "q", QINS_DT_F32, 3, qshape, q);
  test_tensor_make(be, &to, "out", QINS_DT_F32, 3, qshape, NULL);
  test_tensor_make(be, &tal, "v_alpha", QINS_DT_F32, 1, &nal, NULL);
  assert_int_equal(qins_tensor_init(&tv8, "v_cache_q8", QINS_DT_QINS8, 3, shape), 0);
  tv8.scale = &tal;
  assert_int_equal(qins_tensor_alloc(be, &tv8), 0);
  test_poison(&tv8);
  /* fill the cache the way decode does: first a prompt block, then one token at a time */
  int64_t block = pos0 + m > 3 ? 3 : pos0 + m;
  for (int64_t p = 0; p < pos0 + m;) {
    int64_t cnt = p == 0 ? block : 1;
    qins_tensor tvals_in;
    test_tensor_make(be, &tvals_in, "v_new", QINS_DT_F32, 3, (int64_t[]){cnt, hkv, d}, vc + p * hkv * d);
    int rc = qins_kv_append_v(be, &tvals_in, &tv8, p, spec);
    qins_tensor_free(&tvals_in);
    if (rc == QINS_EUNSUPPORTED) {
      printf("# skip qins8 V cache on %s: %s\n", be->name, qins_error_msg());
      goto out;
    }
    if (rc) fail_msg("kv append: %s", qins_error_msg());
    p += cnt;
  }
  assert_int_equal(qins_backend_sync(be), 0);
  /* the appended rows are exactly the codec's encoding with the codec's alpha (on the cpu,
   * which runs the codec itself; another backend's rounding may differ in rare codes) */
  int exact = strcmp(be->name, "cpu") == 0;
  int64_t filled = (pos0 + m) * hkv;
  uint8_t *codes = malloc((size_t)(t * hkv * d));
  float *alpha = malloc((size_t)nal * sizeof(float)), *vdeq = malloc((size_t)nkv * sizeof(float));
  assert_int_equal(qins_tensor_read(&tv8, codes), 0);
  assert_int_equal(qins_tensor_read(&tal, alpha), 0);
  uint8_t *want = malloc((size_t)d);
  for (int64_t r = 0; r < filled; r++) {
    float a = qins_codec_calibrate_row(vc + r * d, d, QINS_DT_QINS8, spec);
    if (!exact) break;
    assert_true(a == alpha[r]);
    qins_codec_qins_encode_row(QINS_DT_QINS8, vc + r * d, d, a, want);
    assert_memory_equal(want, codes + r * d, (size_t)d);
  }
  free(want);
  /* the reference: attention over the explicitly dequantized V (rows past the filled ones are
   * never visible; decode them as zeros) */
  memset(vdeq, 0, (size_t)nkv * sizeof(float));
  assert_int_equal(qins_codec_decode(QINS_DT_QINS8, codes, filled, d, alpha, vdeq), 0);
  test_tensor_make(be, &tvf, "v_cache_deq", QINS_DT_F32, 3, shape, vdeq);
  float *got = malloc((size_t)(m * hq * d) * sizeof(float)), *ref = malloc((size_t)(m * hq * d) * sizeof(float));
  test_poison(&to);
  assert_int_equal(qins_op_attention(be, &tq, &tk, &tvf, pos0, 0.125f, &to), 0);
  assert_int_equal(qins_tensor_read(&to, ref), 0);
  test_poison(&to);
  int rc = qins_op_attention(be, &tq, &tk, &tv8, pos0, 0.125f, &to);
  if (rc == QINS_EUNSUPPORTED) {
    printf("# skip qins8 V attention on %s: %s\n", be->name, qins_error_msg());
  } else {
    assert_int_equal(rc, 0);
    assert_int_equal(qins_tensor_read(&to, got), 0);
    char what[160];
    snprintf(what, sizeof what, "%s qins8-V attention T=%lld Hq=%lld Hkv=%lld D=%lld M=%lld pos0=%lld", be->name,
             (long long)t, (long long)hq, (long long)hkv, (long long)d, (long long)m, (long long)pos0);
    test_assert_close(what, got, ref, m * hq * d, TOL_ATTN);
  }
  free(got);
  free(ref);
  free(codes);
  free(alpha);
  free(vdeq);
  qins_tensor_free(&tvf);
out:
  qins_tensor_free(&tk);
  qins_tensor_free(&tq);
  qins_tensor_free(&to);
  qins_tensor_free(&tv8);
  free(kc);
  free(vc);
  free(q);
}

static void test_vcache_attention(void **state) {
  (void)state;
  if (g_skip) skip();
  /* on the cpu: each V decode (plain C, gather, and the VBMI path that D = 64 and 128 take) */
  int is_cpu = strcmp(g_be->name, "cpu") == 0;
  cpu_qdecode variants[] = {CPU_QDECODE_SCALAR, CPU_QDECODE_GATHER, CPU_QDECODE_VBMI};
  for (int v = 0; v < (is_cpu ? 3 : 1); v++) {
    if (is_cpu) cpu_qmatmul_set_decode(variants[v]);
    attention_case(g_be, 37, 4, 2, 20, 1, 30, (qins_alpha_spec){QINS_ALPHA_MSE, 0});
    attention_case(g_be, 37, 4, 2, 20, 5, 0, (qins_alpha_spec){QINS_ALPHA_ABSMAX, 0});
    attention_case(g_be, 64, 8, 2, 64, 3, 60, (qins_alpha_spec){QINS_ALPHA_MSE, 0});
    attention_case(g_be, 16, 3, 3, 9, 16, 0, (qins_alpha_spec){QINS_ALPHA_STD, 0.7f});
    attention_case(g_be, 20, 2, 1, 128, 2, 18, (qins_alpha_spec){QINS_ALPHA_ABSMAX, 0});
  }
  if (is_cpu) cpu_qmatmul_set_decode(CPU_QDECODE_AUTO);
}

static void test_vcache_errors(void **state) {
  (void)state;
  if (g_skip) skip();
  qins_backend *be = g_be;
  int64_t shape[3] = {4, 2, 8}, nal = 5; /* needs 8 alphas */
  qins_tensor tv8, tal, tk, tq, to, tvals;
  test_tensor_make(be, &tal, "v_alpha_short", QINS_DT_F32, 1, &nal, NULL);
  assert_int_equal(qins_tensor_init(&tv8, "v_cache_bad", QINS_DT_QINS8, 3, shape), 0);
  tv8.scale = &tal;
  assert_int_equal(qins_tensor_alloc(be, &tv8), 0);
  test_tensor_make(be, &tk, "k_cache", QINS_DT_F32, 3, shape, NULL);
  test_tensor_make(be, &tq, "q", QINS_DT_F32, 3, (int64_t[]){1, 2, 8}, NULL);
  test_tensor_make(be, &to, "out", QINS_DT_F32, 3, (int64_t[]){1, 2, 8}, NULL);
  test_tensor_make(be, &tvals, "v_new", QINS_DT_F32, 3, (int64_t[]){1, 2, 8}, NULL);
  int rc = qins_op_attention(be, &tq, &tk, &tv8, 0, 1.0f, &to);
  if (rc != QINS_EUNSUPPORTED) {
    assert_int_equal(rc, QINS_EINVAL);
    assert_non_null(strstr(qins_error_msg(), "v_cache_bad"));
  }
  assert_int_equal(qins_kv_append_v(be, &tvals, &tv8, 0, (qins_alpha_spec){QINS_ALPHA_ABSMAX, 0}), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "v_cache_bad"));
  /* past the end of the cache */
  assert_int_equal(qins_kv_append_v(be, &tvals, &tk, 4, (qins_alpha_spec){QINS_ALPHA_ABSMAX, 0}), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "outside"));
  /* an f32 cache takes a plain copy */
  float v[16];
  test_fill_normal(v, 16, 1.0f);
  assert_int_equal(qins_tensor_write(&tvals, v), 0);
  assert_int_equal(qins_kv_append_v(be, &tvals, &tk, 3, (qins_alpha_spec){QINS_ALPHA_MSE, 0}), 0);
  float all[64];
  assert_int_equal(qins_tensor_read(&tk, all), 0);
  assert_memory_equal(all + 48, v, sizeof v);
  qins_tensor *ts[] = {&tv8, &tk, &tq, &to, &tvals};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) qins_tensor_free(ts[i]);
}

static int group_setup(void **state) {
  (void)state;
  g_skip = 0;
  if (qins_backend_create(g_be_name, &g_be) != 0) {
    printf("# skip backend %s: %s\n", g_be_name, qins_error_msg());
    g_skip = 1;
    g_be = NULL;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  if (g_be) qins_backend_destroy(g_be);
  g_be = NULL;
  return 0;
}

int main(void) {
  test_seed();
  char names[16][64];
  int nb = test_backends(names, 16);
  int failed = 0;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matmul_formats),  cmocka_unit_test(test_matmul_one_code),
      cmocka_unit_test(test_matmul_bad_scales), cmocka_unit_test(test_vcache_attention),
      cmocka_unit_test(test_vcache_errors),
  };
  for (int b = 0; b < nb; b++) {
    char group[1200];
    snprintf(group, sizeof group, "qmatmul[%s]", names[b]);
    g_be_name = names[b];
    failed += _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], group_setup, group_teardown);
  }
  return failed ? 1 : 0;
}
