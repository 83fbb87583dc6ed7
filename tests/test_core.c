/* Core: errors, memory accounting, tensor sizes and names, half-precision conversions. */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/tensor.h"
#include "tests/test_util.h"

static void test_error_context_and_exit_codes(void **state) {
  (void)state;
  int rc = qins_error_set(QINS_EINPUT, "model %s: tensor %s truncated", "m.bin", "wq");
  assert_int_equal(rc, QINS_EINPUT);
  qins_error_wrap(rc, "loading: ");
  assert_string_equal(qins_error_msg(), "loading: model m.bin: tensor wq truncated");
  assert_int_equal(qins_error_exit_code(QINS_EINPUT), 2);
  assert_int_equal(qins_error_exit_code(QINS_EINVAL), 2);
  assert_int_equal(qins_error_exit_code(QINS_EIO), 1);
  assert_int_equal(qins_error_exit_code(QINS_OK), 0);
}

static void test_mem_accounting(void **state) {
  (void)state;
  qins_mem_owner *o = qins_mem_owner_get("test.owner");
  assert_ptr_equal(o, qins_mem_owner_get("test.owner"));
  int64_t before = qins_mem_owner_bytes(o);
  void *p = qins_mem_alloc(o, 1000);
  assert_non_null(p);
  assert_true(qins_mem_owner_bytes(o) >= before + 1000);
  p = qins_mem_realloc(o, p, 100000);
  assert_true(qins_mem_owner_bytes(o) >= before + 100000);
  void *a = qins_mem_alloc_aligned(o, 333, 64);
  assert_int_equal((uintptr_t)a % 64, 0);
  qins_mem_free(o, a);
  qins_mem_free(o, p);
  assert_int_equal(qins_mem_owner_bytes(o), before);
  assert_true(qins_mem_owner_peak(o) >= 100000);
}

static void test_tensor_sizes(void **state) {
  (void)state;
  qins_tensor t;
  int64_t shape[2] = {3, 10};
  assert_int_equal(qins_tensor_init(&t, "w", QINS_DT_QINS6, 2, shape), 0);
  assert_int_equal(qins_tensor_rows(&t), 3);
  assert_int_equal(qins_tensor_cols(&t), 10);
  /* 10 codes pad to 12 = 3 groups of 3 bytes per row */
  assert_int_equal(qins_tensor_nbytes(&t), 27);
  assert_int_equal(qins_format_scale_count(QINS_DT_INT8_B32, 3, 70), 9);
  assert_int_equal(qins_format_row_bytes(QINS_DT_BF16, 10), 20);
  qins_dtype dt;
  assert_int_equal(qins_dtype_parse("int8-block32", &dt), 0);
  assert_int_equal(dt, QINS_DT_INT8_B32);
  assert_int_equal(qins_dtype_parse("qins7", &dt), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "qins7"));
  char buf[128];
  assert_string_equal(qins_tensor_describe(&t, buf, sizeof buf), "w qins6[3,10]");
  int64_t bad[1] = {-1};
  assert_int_equal(qins_tensor_init(&t, "x", QINS_DT_F32, 1, bad), QINS_EINVAL);
}

static void test_half_conversions(void **state) {
  (void)state;
  assert_int_equal(qins_f32_to_f16(1.0f), 0x3c00);
  assert_int_equal(qins_f32_to_f16(-2.0f), 0xc000);
  assert_int_equal(qins_f32_to_f16(65504.0f), 0x7bff);
  assert_int_equal(qins_f32_to_f16(1e6f), 0x7c00);      /* overflow to inf */
  assert_int_equal(qins_f32_to_f16(5.9604645e-8f), 0x0001); /* smallest subnormal */
  assert_true(fabsf(qins_f16_to_f32(0x0001) - 5.9604645e-8f) < 1e-12f);
  /* ties to even: 1 + 2^-11 is halfway between 1 and 1+2^-10 -> 1 */
  assert_int_equal(qins_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  assert_int_equal(qins_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  assert_int_equal(qins_f32_to_bf16(1.0f), 0x3f80);
  assert_int_equal(qins_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie -> even */
  assert_int_equal(qins_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  for (int i = 0; i < 10000; i++) {
    float v = test_rand_normal() * 100.0f;
    float h = qins_f16_to_f32(qins_f32_to_f16(v));
    assert_true(fabsf(h - v) <= fabsf(v) * 0x1p-11f + 1e-7f);
    float b = qins_bf16_to_f32(qins_f32_to_bf16(v));
    assert_true(fabsf(b - v) <= fabsf(v) * 0x1p-8f);
  }
  assert_true(isnan(qins_f16_to_f32(qins_f32_to_f16(NAN))));
  assert_true(isnan(qins_bf16_to_f32(qins_f32_to_bf16(NAN))));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_context_and_exit_codes),
      cmocka_unit_test(test_mem_accounting),
      cmocka_unit_test(test_tensor_sizes),
      cmocka_unit_test(test_half_conversions),
  };
  return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
