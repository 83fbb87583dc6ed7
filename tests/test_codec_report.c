/* The A1 codec report: measures on known tensors, the gate passing and failing, NaN/Inf counts,
 * JSON structure, and the `qins codec-report` command on stories260K and a safetensors file. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/codec_report.h"
#include "core/error.h"
#include "core/model/model.h"
#include "core/qins_codec.h"
#include "tests/test_util.h"

static int find_format(const qins_codec_report *r, qins_dtype dt) {
  for (int k = 0; k < r->n_formats; k++)
    if (r->formats[k] == dt) return k;
  fail_msg("format %s missing from the report", qins_dtype_name(dt));
  return -1;
}

static void test_report_in_memory(void **state) {
  (void)state;
  qins_backend *be;
  assert_int_equal(qins_backend_create("cpu", &be), 0);
  /* w0: weight-like Gaussian f32; w1: bf16 values (exact in f16 and bf16); w2: f32 with NaN/Inf */
  enum { R = 48, C = 96 };
  static float w0[R * C], w2[R * C];
  static uint16_t w1[R * C];
  test_fill_normal(w0, R * C, 0.02f);
  for (int i = 0; i < R * C; i++) { /* kept above f16's subnormal range so f16 holds them exactly */
    float v = test_rand_normal() * 0.5f;
    w1[i] = qins_f32_to_bf16(fabsf(v) < 1e-3f ? copysignf(1e-3f, v) : v);
  }
  test_fill_normal(w2, R * C, 1.0f);
  w2[5] = NAN;
  w2[100] = INFINITY;
  w2[200] = -INFINITY;
  qins_weight w[3];
  memset(w, 0, sizeof w);
  const void *data[3] = {w0, w1, w2};
  const qins_dtype dts[3] = {QINS_DT_F32, QINS_DT_BF16, QINS_DT_F32};
  for (int i = 0; i < 3; i++) {
    snprintf(w[i].name, sizeof w[i].name, "w%d", i);
    w[i].dtype = dts[i];
    w[i].ndim = 2;
    w[i].shape[0] = R;
    w[i].shape[1] = C;
    w[i].data = data[i];
  }
  qins_codec_report_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.alpha.mode = QINS_ALPHA_MSE;
  qins_codec_report *r;
  assert_int_equal(qins_codec_report_weights(be, "mem", w, 3, &opts, &r), 0);
  assert_int_equal(r->n_tensors, 3);
  assert_int_equal(r->n_formats, 7);
  int kf = find_format(r, QINS_DT_QINS_F32), k8 = find_format(r, QINS_DT_QINS8), k6 = find_format(r, QINS_DT_QINS6);
  int ki = find_format(r, QINS_DT_INT8_ROW), kb = find_format(r, QINS_DT_INT8_B32);
  int kh = find_format(r, QINS_DT_F16), kbf = find_format(r, QINS_DT_BF16);
  const qins_codec_tensor_report *t0 = &r->tensors[0], *t1 = &r->tensors[1], *t2 = &r->tensors[2];
  /* qins-f32 is near-exact and passes A1; the lossy formats are reported, not gated */
  assert_true(t0->m[kf].gated && t0->m[kf].a1_pass);
  assert_true(t0->m[kf].cosine >= QINS_A1_MIN_COSINE && t0->m[kf].max_rel_err <= 1e-6);
  assert_true(t0->m[kf].bit_exact > 0.05 && t0->m[kf].bit_exact < 1.0); /* near-exact, not bit-exact */
  assert_false(t0->m[k8].gated);
  assert_true(t0->m[k8].cosine > 0.9999 && t0->m[k8].cosine < 0.999999);
  assert_true(t0->m[k8].nmse > 3e-5 && t0->m[k8].nmse < 2e-4);
  assert_true(t0->m[k6].nmse > t0->m[k8].nmse);
  assert_true(t0->m[kb].nmse < t0->m[ki].nmse);
  /* alpha ~0.7/std on std-0.02 rows: about 35 */
  assert_true(t0->m[k8].alpha_median > 15 && t0->m[k8].alpha_median < 60);
  assert_true(t0->m[k8].alpha_min <= t0->m[k8].alpha_median && t0->m[k8].alpha_median <= t0->m[k8].alpha_max);
  /* bytes: codes + scales */
  assert_int_equal(t0->m[kf].bytes, R * C * 4 + R * 4);
  assert_int_equal(t0->m[k8].bytes, R * C + R * 4);
  assert_int_equal(t0->m[k6].bytes, R * (C / 4 * 3) + R * 4);
  assert_int_equal(t0->m[kb].bytes, R * C + R * (C / 32) * 4);
  assert_int_equal(t0->m[kh].bytes, R * C * 2);
  /* bf16 source: bf16 and f16 (these values fit) round-trip bit-exactly */
  assert_true(t1->dtype == QINS_DT_BF16);
  assert_true(t1->m[kbf].bit_exact == 1.0 && t1->m[kbf].max_abs_err == 0.0 && t1->m[kbf].cosine == 1.0);
  assert_true(t1->m[kh].bit_exact == 1.0);
  /* NaN/Inf are counted; errors are over finite values and stay finite */
  assert_int_equal(t2->nan_count, 1);
  assert_int_equal(t2->inf_count, 2);
  assert_int_equal(r->nan_count, 1);
  assert_int_equal(r->inf_count, 2);
  for (int k = 0; k < r->n_formats; k++) assert_true(isfinite(t2->m[k].cosine) && isfinite(t2->m[k].max_abs_err));
  /* summary */
  assert_int_equal(r->summary[kf].tensors, 3);
  assert_int_equal(r->summary[kf].elements, 3 * R * C);
  assert_int_equal(r->summary[kf].a1_passed, 3);
  assert_true(r->a1_measured && r->a1_pass);
  double minc = 1;
  for (int i = 0; i < 3; i++) minc = fmin(minc, r->tensors[i].m[k8].cosine);
  assert_true(r->summary[k8].min_cosine == minc);

  /* the JSON document */
  char *js = qins_codec_report_json(r);
  assert_non_null(js);
  json_error_t err;
  json_t *doc = json_loads(js, 0, &err);
  assert_non_null(doc);
  assert_string_equal(json_string_value(json_object_get(doc, "gate")), "A1");
  assert_int_equal(json_array_size(json_object_get(doc, "tensors")), 3);
  json_t *t2j = json_array_get(json_object_get(doc, "tensors"), 2);
  assert_int_equal(json_integer_value(json_object_get(t2j, "nan")), 1);
  json_t *q8 = json_object_get(json_object_get(t2j, "results"), "qins8");
  assert_non_null(json_object_get(q8, "alpha"));
  assert_true(json_is_true(json_object_get(json_object_get(doc, "a1"), "pass")));
  /* key order is fixed */
  const char *first = json_object_iter_key(json_object_iter(doc));
  assert_string_equal(first, "report");
  json_decref(doc);
  free(js);
  qins_codec_report_free(r);

  /* a tiny fixed alpha breaks qins-f32 near-exactness (error ~2^-24/alpha): the gate fails */
  opts.alpha.mode = QINS_ALPHA_FIXED;
  opts.alpha.value = 0.001f;
  assert_int_equal(qins_codec_report_parse_formats("qins-f32,int8-row", &opts), 0);
  assert_int_equal(qins_codec_report_weights(be, "mem", w, 1, &opts, &r), 0);
  assert_int_equal(r->n_formats, 2);
  assert_false(r->tensors[0].m[0].a1_pass);
  assert_true(r->tensors[0].m[0].max_rel_err > 1e-6);
  assert_false(r->a1_pass);
  qins_codec_report_free(r);
  /* without qins-f32, A1 is not evaluated (and never passes by default) */
  assert_int_equal(qins_codec_report_parse_formats("qins8", &opts), 0);
  assert_int_equal(qins_codec_report_weights(be, "mem", w, 1, &opts, &r), 0);
  assert_false(r->a1_measured);
  assert_false(r->a1_pass);
  qins_codec_report_free(r);
  /* bad format lists */
  assert_int_equal(qins_codec_report_parse_formats("qins8,,int8-row", &opts), QINS_EINPUT);
  assert_int_equal(qins_codec_report_parse_formats("qins8,i32", &opts), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "i32"));
  assert_int_equal(qins_codec_report_parse_formats("qins8,qins8", &opts), QINS_EINPUT);
  qins_backend_destroy(be);
}

/* Run `qins ARGS`, capture stdout; returns the exit status. */
static int run_qins(const char *args, char **out) {
  const char *exe = getenv("QINS_EXE");
  if (!exe) fail_msg("QINS_EXE is not set (run through meson test)");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", exe, args);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += got;
    if (cap - len < 4096) buf = realloc(buf, cap *= 2);
  }
  buf[len] = 0;
  int st = pclose(p);
  *out = buf;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void check_cli_model(const char *rel) {
  const char *path = test_shared_path(rel);
  char args[1200], *out;
  snprintf(args, sizeof args, "codec-report --model '%s' --json", path);
  int st = run_qins(args, &out);
  if (st != 0) fail_msg("qins %s: exit %d", args, st);
  json_error_t err;
  json_t *doc = json_loads(out, 0, &err);
  if (!doc) fail_msg("qins %s: bad JSON at line %d: %s", args, err.line, err.text);
  qins_model *m;
  assert_int_equal(qins_model_open(path, &m), 0);
  json_t *ts = json_object_get(doc, "tensors");
  int n_float = 0;
  for (int i = 0; i < m->n_weights; i++)
    n_float += m->weights[i].dtype == QINS_DT_F32 || m->weights[i].dtype == QINS_DT_F16 || m->weights[i].dtype == QINS_DT_BF16;
  assert_int_equal(json_array_size(ts), n_float);
  assert_string_equal(json_string_value(json_object_get(json_array_get(ts, 0), "name")), m->weights[0].name);
  const char *fmts[] = {"qins-f32", "qins8", "qins6", "int8-row", "int8-block32", "f16", "bf16"};
  size_t i;
  json_t *t;
  json_array_foreach(ts, i, t) {
    json_t *res = json_object_get(t, "results");
    for (size_t k = 0; k < 7; k++) {
      json_t *mk = json_object_get(res, fmts[k]);
      if (!mk) fail_msg("%s: tensor %zu lacks %s", rel, i, fmts[k]);
      double cos = json_number_value(json_object_get(mk, "cosine"));
      assert_true(cos > 0.99 && cos <= 1.0 + 1e-12);
      assert_true(json_integer_value(json_object_get(mk, "bytes")) > 0);
    }
    json_t *qf = json_object_get(res, "qins-f32");
    assert_true(json_is_true(json_object_get(qf, "a1_pass")));
    assert_true(json_number_value(json_object_get(qf, "max_rel_err")) <= 1e-6);
  }
  json_t *sum = json_object_get(doc, "summary");
  assert_int_equal(json_integer_value(json_object_get(json_object_get(sum, "qins-f32"), "a1_passed")), n_float);
  /* the reference points hold on real weights: qins8 NMSE ~1e-4, qins6 ~1e-3 */
  double q8 = json_number_value(json_object_get(json_object_get(sum, "qins8"), "nmse"));
  double q6 = json_number_value(json_object_get(json_object_get(sum, "qins6"), "nmse"));
  print_message("%s: %d tensors, summary NMSE qins8 %.3g qins6 %.3g\n", rel, n_float, q8, q6);
  assert_true(q8 > 1e-5 && q8 < 3e-4);
  assert_true(q6 > q8 && q6 < 5e-3);
  assert_true(json_is_true(json_object_get(json_object_get(doc, "a1"), "pass")));
  qins_model_close(m);
  json_decref(doc);
  free(out);
}

static void test_cli_stories260k(void **state) {
  (void)state;
  check_cli_model("models/stories260K/stories260K.bin");
  /* the table form names every tensor and ends with the verdict */
  char args[1200], *out;
  snprintf(args, sizeof args, "codec-report --model '%s' --formats qins8,int8-row",
           test_shared_path("models/stories260K/stories260K.bin"));
  assert_int_equal(run_qins(args, &out), 0);
  assert_non_null(strstr(out, "model.layers.4.mlp.down_proj.weight"));
  assert_non_null(strstr(out, "A1: not evaluated"));
  free(out);
  /* --check turns a failing gate into exit 1 */
  snprintf(args, sizeof args, "codec-report --model '%s' --formats qins-f32 --alpha fixed:0.001 --check",
           test_shared_path("models/stories260K/stories260K.bin"));
  assert_int_equal(run_qins(args, &out), 1);
  assert_non_null(strstr(out, "A1 (qins-f32): FAIL"));
  free(out);
}

static void test_cli_safetensors(void **state) {
  (void)state;
  check_cli_model("fixtures/hf/llama_gqa/model.safetensors");
}

static void test_cli_bad_input(void **state) {
  (void)state;
  char *out;
  assert_int_equal(run_qins("codec-report --model /nonexistent/model.bin", &out), 2);
  free(out);
  char args[1200];
  const char *junk = "/tmp/qins_test_codec_report_junk.safetensors";
  FILE *f = fopen(junk, "wb");
  assert_non_null(f);
  fputs("not a model", f);
  fclose(f);
  snprintf(args, sizeof args, "codec-report --model %s", junk);
  assert_int_equal(run_qins(args, &out), 2);
  free(out);
  remove(junk);
  snprintf(args, sizeof args, "codec-report --model '%s' --formats qins7",
           test_shared_path("models/stories260K/stories260K.bin"));
  assert_int_equal(run_qins(args, &out), 2);
  free(out);
  assert_int_equal(run_qins("codec-report", &out), 2);
  free(out);
  assert_int_equal(run_qins("codec-report --model x --alpha nope", &out), 2);
  free(out);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_report_in_memory),
      cmocka_unit_test(test_cli_stories260k),
      cmocka_unit_test(test_cli_safetensors),
      cmocka_unit_test(test_cli_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
