/* QINS codec: exact code values, ties, NaN/Inf policy, qins6 packing, round trips, calibration modes,
 * int8 baselines, and every backend's calibrate/quantize/dequantize against the scalar reference. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/qins_codec.h"
#include "tests/test_util.h"

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static double nmse(const float *y, const float *x, int64_t n) {
  double e = 0, s = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)y[i] - (double)x[i];
    e += d * d;
    s += (double)x[i] * (double)x[i];
  }
  return e / s;
}

/* ---------------------------------------------------------------- the map */

static void test_map_values(void **state) {
  (void)state;
  assert_true(qins_codec_E(0.0f, 3.0f) == 1.0f);
  assert_true(qins_codec_E(-0.0f, 3.0f) == 1.0f); /* sign(-0) = +1 */
  assert_false(signbit(qins_codec_E(-0.0f, 3.0f)));
  assert_true(qins_codec_E(1.0f, 1.0f) == 0.5f);
  assert_true(qins_codec_E(-3.0f, 1.0f) == -0.25f);
  assert_true(qins_codec_E(-1.5f, 2.0f) == -0.25f);
  assert_true(qins_codec_D(1.0f, 7.0f) == 0.0f);
  assert_true(qins_codec_D(0.5f, 1.0f) == 1.0f);
  assert_true(qins_codec_D(-0.25f, 2.0f) == -1.5f);
  /* D_alpha = D_1 / alpha */
  for (int i = 0; i < 1000; i++) {
    float z = test_rand_uniform(-1.0f, 1.0f), a = test_rand_uniform(0.01f, 100.0f);
    float d1 = qins_codec_D(z, 1.0f), da = qins_codec_D(z, a);
    assert_true(fabsf(da - d1 / a) <= 4e-7f * fabsf(d1 / a) + 1e-30f);
  }
  /* the clamp |z| >= 1e-12 in D, and E keeps the sign of huge and infinite x */
  float big = qins_codec_D(QINS_CODEC_ZMIN, 1.0f);
  assert_true(big > 0.99e12f && big < 1.01e12f);
  assert_true(qins_codec_D(0.0f, 1.0f) == big);
  assert_true(qins_codec_D(-0.0f, 1.0f) == big); /* sign(-0) = +1 */
  assert_true(qins_codec_D(-1e-30f, 1.0f) == -big);
  assert_true(qins_codec_E(INFINITY, 2.0f) == QINS_CODEC_ZMIN);
  assert_true(qins_codec_E(-INFINITY, 2.0f) == -QINS_CODEC_ZMIN);
  assert_true(qins_codec_E(-FLT_MAX, 1e10f) == -QINS_CODEC_ZMIN);
  assert_true(qins_codec_E(NAN, 2.0f) == 1.0f); /* NaN encodes as x = 0 */
}

/* ---------------------------------------------------------------- 8-bit codes */

static void test_code8_exact(void **state) {
  (void)state;
  const float *lut = qins_codec_lut8();
  const float alphas[] = {1.0f, 4.0f, 0.37f, 35.25f};
  for (size_t k = 0; k < sizeof alphas / sizeof alphas[0]; k++) {
    float a = alphas[k], inv = 1.0f / a;
    assert_int_equal(qins_codec_x_to_code8(0.0f, a), 255);
    assert_int_equal(qins_codec_x_to_code8(-0.0f, a), 255);
    uint8_t q = 255;
    float y;
    qins_codec_qins_decode_row(QINS_DT_QINS8, &q, 1, a, &y);
    assert_int_equal(fbits(y), 0); /* exactly +0 */
    /* the largest magnitudes and saturation */
    assert_int_equal(qins_codec_x_to_code8(254.0f / a, a), 128);
    assert_int_equal(qins_codec_x_to_code8(-254.0f / a, a), 127);
    assert_int_equal(qins_codec_x_to_code8(1000.0f / a, a), 128);
    assert_int_equal(qins_codec_x_to_code8(-1000.0f / a, a), 127);
    assert_int_equal(qins_codec_x_to_code8(1e30f, a), 128);
    assert_int_equal(qins_codec_x_to_code8(-1e30f, a), 127); /* float z+1 rounds to 1 here: the sign rule */
    assert_int_equal(qins_codec_x_to_code8(FLT_MAX, a), 128);
    assert_int_equal(qins_codec_x_to_code8(-FLT_MAX, a), 127);
    /* tiny values: positive -> 255 (x = 0); negative -> 0, which decodes to -0 */
    assert_int_equal(qins_codec_x_to_code8(1e-30f, a), 255);
    assert_int_equal(qins_codec_x_to_code8(-1e-30f, a), 0);
    assert_true(lut[0] == 0.0f);
    /* every code but 0 is a fixed point of decode -> encode */
    for (int c = 1; c < 256; c++) assert_int_equal(qins_codec_x_to_code8(lut[c] * inv, a), c);
  }
  /* the decode table: d = 2q - 255, x = sign(d)(255 - |d|)/|d| */
  assert_true(lut[255] == 0.0f);
  assert_true(lut[254] == 2.0f / 253.0f);
  assert_true(lut[1] == -2.0f / 253.0f);
  assert_true(lut[128] == 254.0f);
  assert_true(lut[127] == -254.0f);
  assert_true(lut[192] == 126.0f / 129.0f);
  uint8_t q = 254;
  float y;
  qins_codec_qins_decode_row(QINS_DT_QINS8, &q, 1, 4.0f, &y);
  assert_true(y == 2.0f / 253.0f / 4.0f); /* alpha a power of two: exact */
  q = 128;
  qins_codec_qins_decode_row(QINS_DT_QINS8, &q, 1, 4.0f, &y);
  assert_true(y == 254.0f / 4.0f);
  q = 127;
  qins_codec_qins_decode_row(QINS_DT_QINS8, &q, 1, 4.0f, &y);
  assert_true(y == -254.0f / 4.0f);
  /* monotone inside each sign: codes 128..255 decode descending from 254 to 0, 0..127 from -0 to -254 */
  for (int c = 129; c < 256; c++) assert_true(lut[c] < lut[c - 1]);
  for (int c = 1; c < 128; c++) assert_true(lut[c] < lut[c - 1]);
}

/* The branch-free x -> code path used by row loops equals code(E(x)) everywhere. */
static void test_x_to_code_matches_map(void **state) {
  (void)state;
  const float specials[] = {0.0f, -0.0f, NAN, -NAN, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN,
                            1e-45f, -1e-45f, 1e-30f, -1e-30f, 1.0f, -1.0f, 254.0f, -254.0f, 62.0f, -62.0f};
  const float alphas[] = {1.0f, 0.37f, 35.25f, 1e-6f, 1e6f};
  for (size_t a = 0; a < sizeof alphas / sizeof alphas[0]; a++)
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
      float x = specials[i], al = alphas[a];
      assert_int_equal(qins_codec_x_to_code8(x, al), qins_codec_code8(qins_codec_E(x, al)));
      assert_int_equal(qins_codec_x_to_code6(x, al), qins_codec_code6(qins_codec_E(x, al)));
    }
  for (int i = 0; i < 2000000; i++) {
    float al = expf(test_rand_uniform(-8.0f, 8.0f));
    float x = test_rand_normal() * expf(test_rand_uniform(-12.0f, 12.0f)) / al;
    int c8 = qins_codec_x_to_code8(x, al), r8 = qins_codec_code8(qins_codec_E(x, al));
    int c6 = qins_codec_x_to_code6(x, al), r6 = qins_codec_code6(qins_codec_E(x, al));
    if (c8 != r8 || c6 != r6) fail_msg("x=%a alpha=%a: codes %d/%d, map %d/%d", x, al, c8, c6, r8, r6);
  }
}

/* Find a float z with fl(fl(z + 1) * half) == k + 0.5 exactly, near the real solution. */
static int tie_z(int k, float half, float *out) {
  float z0 = (float)((k + 0.5) / half - 1.0);
  float z = z0;
  for (int s = 0; s < 4096; s++) z = nextafterf(z, -2.0f);
  for (int s = 0; s < 8192; s++, z = nextafterf(z, 2.0f)) {
    if ((z + 1.0f) * half == (float)k + 0.5f) {
      *out = z;
      return 1;
    }
  }
  return 0;
}

static void test_code_ties(void **state) {
  (void)state;
  /* z = 0: (0+1)*127.5 = 127.5 exactly -> even 128; -0 keeps its sign -> 127 */
  assert_int_equal(qins_codec_code8(0.0f), 128);
  assert_int_equal(qins_codec_code8(-0.0f), 127);
  assert_int_equal(qins_codec_code6(0.0f), 32);
  assert_int_equal(qins_codec_code6(-0.0f), 31);
  assert_int_equal(qins_codec_code8(1.0f), 255);
  assert_int_equal(qins_codec_code8(-1.0f), 0);
  assert_int_equal(qins_codec_code8(NAN), 255);
  assert_int_equal(qins_codec_code6(NAN), 63);
  int found = 0;
  for (int k = 0; k < 255; k++) {
    float z;
    if (k == 127 || !tie_z(k, 127.5f, &z)) continue;
    found++;
    int even = (k % 2 == 0) ? k : k + 1;
    if (qins_codec_code8(z) != even) fail_msg("tie at %d.5 (z=%a): code %d, want %d", k, z, qins_codec_code8(z), even);
  }
  print_message("8-bit exact ties constructed: %d of 254\n", found);
  assert_true(found >= 100);
  found = 0;
  for (int k = 0; k < 63; k++) {
    float z;
    if (k == 31 || !tie_z(k, 31.5f, &z)) continue;
    found++;
    int even = (k % 2 == 0) ? k : k + 1;
    if (qins_codec_code6(z) != even) fail_msg("6-bit tie at %d.5 (z=%a): code %d, want %d", k, z, qins_codec_code6(z), even);
  }
  print_message("6-bit exact ties constructed: %d of 62\n", found);
  assert_true(found >= 20);
}

static void test_code6_exact(void **state) {
  (void)state;
  const float *lut = qins_codec_lut6();
  assert_true(lut[63] == 0.0f);
  assert_true(lut[62] == 2.0f / 61.0f);
  assert_true(lut[1] == -2.0f / 61.0f);
  assert_true(lut[32] == 62.0f);
  assert_true(lut[31] == -62.0f);
  const float alphas[] = {1.0f, 0.5f, 3.3f};
  for (size_t k = 0; k < sizeof alphas / sizeof alphas[0]; k++) {
    float a = alphas[k];
    assert_int_equal(qins_codec_x_to_code6(0.0f, a), 63);
    assert_int_equal(qins_codec_x_to_code6(-0.0f, a), 63);
    assert_int_equal(qins_codec_x_to_code6(62.0f / a, a), 32);
    assert_int_equal(qins_codec_x_to_code6(-62.0f / a, a), 31);
    assert_int_equal(qins_codec_x_to_code6(1e30f, a), 32);
    assert_int_equal(qins_codec_x_to_code6(-1e30f, a), 31);
    assert_int_equal(qins_codec_x_to_code6(INFINITY, a), 32);
    assert_int_equal(qins_codec_x_to_code6(-INFINITY, a), 31);
    assert_int_equal(qins_codec_x_to_code6(NAN, a), 63);
    assert_int_equal(qins_codec_x_to_code6(1e-30f, a), 63);
    for (int c = 1; c < 64; c++) assert_int_equal(qins_codec_x_to_code6(lut[c] * (1.0f / a), a), c);
  }
}

/* ---------------------------------------------------------------- NaN / Inf policy */

static void test_nan_inf_policy(void **state) {
  (void)state;
  float x[6] = {NAN, INFINITY, -INFINITY, 0.5f, -2.0f, 0.0f};
  /* scales use the finite values only */
  qins_codec_row_stats st;
  qins_codec_stats_row(x, 6, &st);
  assert_int_equal(st.finite, 3);
  assert_true(st.absmax == 2.0);
  qins_alpha_spec am = {QINS_ALPHA_ABSMAX, 0};
  float a = qins_codec_calibrate_row(x, 6, QINS_DT_QINS8, am);
  assert_true(a == 127.0f);
  uint8_t q[6];
  float y[6];
  qins_codec_qins_encode_row(QINS_DT_QINS8, x, 6, a, q);
  assert_int_equal(q[0], 255);
  assert_int_equal(q[1], 128);
  assert_int_equal(q[2], 127);
  assert_int_equal(q[4], 127); /* -absmax lands on the largest negative code */
  assert_int_equal(q[5], 255);
  qins_codec_qins_decode_row(QINS_DT_QINS8, q, 6, a, y);
  assert_true(y[0] == 0.0f);
  assert_true(y[1] == 254.0f * (1.0f / a) && y[2] == -254.0f * (1.0f / a));
  for (int i = 0; i < 6; i++) assert_true(isfinite(y[i]));
  /* qins6 */
  uint8_t p[6];
  a = qins_codec_calibrate_row(x, 6, QINS_DT_QINS6, am);
  assert_true(a == 31.0f);
  qins_codec_qins_encode_row(QINS_DT_QINS6, x, 6, a, p);
  uint8_t c[6];
  qins_codec_unpack6(p, 6, c);
  assert_int_equal(c[0], 63);
  assert_int_equal(c[1], 32);
  assert_int_equal(c[2], 31);
  assert_int_equal(c[4], 31);
  /* qins-f32: NaN -> z = 1 (x = 0), +-Inf -> z = +-1e-12 */
  float z[6];
  qins_codec_qins_encode_row(QINS_DT_QINS_F32, x, 6, 2.0f, z);
  assert_true(z[0] == 1.0f && z[1] == QINS_CODEC_ZMIN && z[2] == -QINS_CODEC_ZMIN);
  qins_codec_qins_decode_row(QINS_DT_QINS_F32, z, 6, 2.0f, y);
  assert_true(y[0] == 0.0f && y[1] > 4e11f && y[2] < -4e11f);
  /* int8: NaN -> 0, +-Inf -> +-127, step from finite values */
  int8_t i8[6];
  float step;
  qins_codec_int8_encode_row(QINS_DT_INT8_ROW, x, 6, i8, &step);
  assert_true(step == 2.0f / 127.0f);
  assert_int_equal(i8[0], 0);
  assert_int_equal(i8[1], 127);
  assert_int_equal(i8[2], -127);
  assert_int_equal(i8[4], -127);
  /* every alpha mode stays finite on a row with no finite value */
  float bad[3] = {NAN, INFINITY, NAN};
  qins_alpha_spec mse = {QINS_ALPHA_MSE, 0};
  assert_true(qins_codec_calibrate_row(bad, 3, QINS_DT_QINS8, mse) == 1.0f);
  assert_true(qins_codec_calibrate_row(bad, 3, QINS_DT_QINS8, am) == 1.0f);
}

/* ---------------------------------------------------------------- qins6 packing */

/* Bit b of the little-endian stream of 6-bit codes, padded with 63. */
static int stream_bit(const uint8_t *codes, int64_t n, int64_t b) {
  int64_t i = b / 6;
  int c = i < n ? codes[i] : 63;
  return (c >> (b % 6)) & 1;
}

static void test_pack6_layout(void **state) {
  (void)state;
  uint8_t codes[4] = {1, 2, 3, 4}, out[3];
  qins_codec_pack6(codes, 4, out);
  /* 1 | 2<<6 | 3<<12 | 4<<18 = 0x103081 */
  assert_int_equal(out[0], 0x81);
  assert_int_equal(out[1], 0x30);
  assert_int_equal(out[2], 0x10);
  uint8_t one[1] = {0}, o1[3];
  qins_codec_pack6(one, 1, o1); /* 0 | 63<<6 | 63<<12 | 63<<18 = 0xffffc0 */
  assert_int_equal(o1[0], 0xc0);
  assert_int_equal(o1[1], 0xff);
  assert_int_equal(o1[2], 0xff);
  const int64_t lens[] = {1, 2, 3, 4, 5, 7, 8, 33};
  for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
    int64_t n = lens[k];
    uint8_t c[40], back[40], p[40];
    for (int64_t i = 0; i < n; i++) c[i] = (uint8_t)(test_rand_u64() % 64);
    size_t nb = qins_format_row_bytes(QINS_DT_QINS6, n);
    assert_int_equal(nb, (size_t)((n + 3) / 4 * 3));
    memset(p, 0xaa, sizeof p);
    qins_codec_pack6(c, n, p);
    for (size_t byte = 0; byte < nb; byte++) {
      int want = 0;
      for (int b = 0; b < 8; b++) want |= stream_bit(c, n, (int64_t)byte * 8 + b) << b;
      if (p[byte] != want) fail_msg("n=%lld byte %zu: %#x, want %#x", (long long)n, byte, p[byte], want);
    }
    assert_int_equal(p[nb], 0xaa); /* nothing written past the row */
    qins_codec_unpack6(p, n, back);
    assert_memory_equal(back, c, (size_t)n);
    /* a row of x through encode gives the same bytes as codes through pack */
    float x[40], a = 0.8f;
    uint8_t cq[40], enc[40];
    test_fill_normal(x, n, 1.0f);
    for (int64_t i = 0; i < n; i++) cq[i] = (uint8_t)qins_codec_x_to_code6(x[i], a);
    qins_codec_pack6(cq, n, p);
    qins_codec_qins_encode_row(QINS_DT_QINS6, x, n, a, enc);
    assert_memory_equal(enc, p, nb);
  }
  /* rows are padded independently: 2 rows of 5 codes -> 6 bytes each */
  float x2[10];
  for (int i = 0; i < 10; i++) x2[i] = (float)(i + 1);
  float al[2] = {1.0f, 1.0f};
  uint8_t enc[12], row1[6];
  assert_int_equal(qins_codec_encode(QINS_DT_QINS6, x2, 2, 5, al, enc, NULL), 0);
  qins_codec_qins_encode_row(QINS_DT_QINS6, x2 + 5, 5, 1.0f, row1);
  assert_memory_equal(enc + 6, row1, 6);
  uint8_t c2[8];
  qins_codec_unpack6(enc, 8, c2);
  assert_int_equal(c2[5], 63);
  assert_int_equal(c2[6], 63);
  assert_int_equal(c2[7], 63);
}

/* ---------------------------------------------------------------- round trips */

static void test_qins_f32_roundtrip(void **state) {
  (void)state;
  /* Measured bound (docs/codec.md): |D(E(x)) - x| <= 5 ulp(x) where alpha|x| >= 1 and
   * <= 4.6 * 2^-24 / alpha below; asserted with margin as 6 ulp(x) + 6 * 2^-24 / alpha. */
  double worst_big = 0, worst_small = 0;
  for (int i = 0; i < 400000; i++) {
    float a = expf(test_rand_uniform(-5.0f, 5.0f));
    float x = test_rand_normal() * expf(test_rand_uniform(-10.0f, 10.0f));
    float r = qins_codec_D(qins_codec_E(x, a), a);
    double err = fabs((double)r - (double)x);
    double ulp = (double)nextafterf(fabsf(x), INFINITY) - (double)fabsf(x);
    double bound = 6 * ulp + 6 * 0x1p-24 / a;
    if (!(err <= bound)) fail_msg("x=%a alpha=%a: D(E(x))=%a, err %.3g > bound %.3g", x, a, r, err, bound);
    if (fabsf(x) * a >= 1) worst_big = fmax(worst_big, err / ulp);
    else worst_small = fmax(worst_small, err / (0x1p-24 / a));
  }
  print_message("qins-f32 round trip: max %.2f ulp(x) (alpha|x| >= 1), max %.2f * 2^-24/alpha below\n", worst_big,
                worst_small);
  /* the A1 gate holds for weight-like rows (std 0.02) at the calibrated alpha */
  int64_t n = 4096;
  float *x = malloc((size_t)n * 4), *z = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
  test_fill_normal(x, n, 0.02f);
  qins_alpha_spec mse = {QINS_ALPHA_MSE, 0};
  float a = qins_codec_calibrate_row(x, n, QINS_DT_QINS_F32, mse);
  qins_codec_qins_encode_row(QINS_DT_QINS_F32, x, n, a, z);
  qins_codec_qins_decode_row(QINS_DT_QINS_F32, z, n, a, y);
  double dot = 0, nx = 0, ny = 0, maxrel = 0;
  for (int64_t i = 0; i < n; i++) {
    dot += (double)x[i] * y[i];
    nx += (double)x[i] * x[i];
    ny += (double)y[i] * y[i];
    maxrel = fmax(maxrel, fabs((double)y[i] - x[i]) / fmax(1.0, fabs(x[i])));
  }
  assert_true(dot / sqrt(nx * ny) >= 0.999999);
  assert_true(maxrel <= 1e-6);
  free(x); free(z); free(y);
}

/* Gaussian rows: the QINS.md reference points, as measured here. */
static void test_gaussian_reference_points(void **state) {
  (void)state;
  const int64_t n = 4096;
  const int rows = 8;
  float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
  uint8_t *q = malloc((size_t)n * 4);
  double sum_q8 = 0, sum_q6 = 0, sum_i8 = 0, sum_b32 = 0, sum_alpha = 0;
  qins_alpha_spec mse = {QINS_ALPHA_MSE, 0};
  for (int r = 0; r < rows; r++) {
    float sd = expf(test_rand_uniform(-5.0f, 1.0f));
    test_fill_normal(x, n, sd);
    qins_codec_row_stats st;
    qins_codec_stats_row(x, n, &st);
    float a = qins_codec_calibrate_row(x, n, QINS_DT_QINS8, mse);
    sum_alpha += a * st.sigma;
    /* mse alpha is never worse than its own grid, nor than the textbook 0.7/std by much */
    float a07 = (float)(0.7 / st.sigma);
    assert_true(qins_codec_row_mse(x, n, QINS_DT_QINS8, a) <= 1.25 * qins_codec_row_mse(x, n, QINS_DT_QINS8, a07));
    qins_codec_qins_encode_row(QINS_DT_QINS8, x, n, a, q);
    qins_codec_qins_decode_row(QINS_DT_QINS8, q, n, a, y);
    sum_q8 += nmse(y, x, n);
    float a6 = qins_codec_calibrate_row(x, n, QINS_DT_QINS6, mse);
    qins_codec_qins_encode_row(QINS_DT_QINS6, x, n, a6, q);
    qins_codec_qins_decode_row(QINS_DT_QINS6, q, n, a6, y);
    sum_q6 += nmse(y, x, n);
    float steps[128];
    qins_codec_int8_encode_row(QINS_DT_INT8_ROW, x, n, (int8_t *)q, steps);
    qins_codec_int8_decode_row(QINS_DT_INT8_ROW, (int8_t *)q, n, steps, y);
    sum_i8 += nmse(y, x, n);
    qins_codec_int8_encode_row(QINS_DT_INT8_B32, x, n, (int8_t *)q, steps);
    qins_codec_int8_decode_row(QINS_DT_INT8_B32, (int8_t *)q, n, steps, y);
    sum_b32 += nmse(y, x, n);
  }
  double q8 = sum_q8 / rows, q6 = sum_q6 / rows, i8 = sum_i8 / rows, b32 = sum_b32 / rows, al = sum_alpha / rows;
  print_message("Gaussian rows of %lld: mse alpha*std %.3f; NMSE qins8 %.3g, qins6 %.3g, int8-row %.3g, "
                "int8-block32 %.3g\n", (long long)n, al, q8, q6, i8, b32);
  /* measured (docs/codec.md): alpha*std ~0.6..0.9, qins8 ~9.5e-5, qins6 ~1.5e-3, int8-row ~7.5e-5 at
   * rows of 4096 (it reaches QINS.md's ~1.3e-4 only at ~1M-element rows), int8-block32 ~2.8e-5 */
  assert_true(al > 0.45 && al < 1.1);
  assert_true(q8 > 6e-5 && q8 < 1.3e-4);
  assert_true(q6 > 8e-4 && q6 < 2.5e-3);
  assert_true(i8 > 5e-5 && i8 < 1.0e-4);
  assert_true(b32 > 1.5e-5 && b32 < 4.5e-5);
  /* a row of ~1M Gaussian values: the int8 reference point of QINS.md, and qins8 below it */
  const int64_t big = 1 << 20;
  float *xb = malloc((size_t)big * 4), *yb = malloc((size_t)big * 4);
  int8_t *qb = malloc((size_t)big);
  test_fill_normal(xb, big, 1.0f);
  float step;
  qins_codec_int8_encode_row(QINS_DT_INT8_ROW, xb, big, qb, &step);
  qins_codec_int8_decode_row(QINS_DT_INT8_ROW, qb, big, &step, yb);
  double i8big = nmse(yb, xb, big);
  double ms = 0;
  for (int64_t i = 0; i < big; i++) ms += (double)xb[i] * xb[i];
  qins_codec_row_stats stb;
  qins_codec_stats_row(xb, big, &stb);
  double q8big = qins_codec_row_mse(xb, big, QINS_DT_QINS8, (float)(0.7 / stb.sigma)) / (ms / big);
  print_message("row of 2^20: int8-row NMSE %.3g, qins8 at std:0.7 NMSE %.3g\n", i8big, q8big);
  assert_true(i8big > 0.9e-4 && i8big < 2.5e-4); /* grows with the row max, ~4.9 std here */
  assert_true(q8big < i8big);
  /* alpha = 1 on std-0.02 weights is poor (QINS.md: cosine ~0.99) */
  test_fill_normal(x, n, 0.02f);
  qins_codec_qins_encode_row(QINS_DT_QINS8, x, n, 1.0f, q);
  qins_codec_qins_decode_row(QINS_DT_QINS8, q, n, 1.0f, y);
  double dot = 0, nx = 0, ny = 0;
  for (int64_t i = 0; i < n; i++) {
    dot += (double)x[i] * y[i];
    nx += (double)x[i] * x[i];
    ny += (double)y[i] * y[i];
  }
  print_message("alpha=1 on std-0.02 rows: cosine %.5f\n", dot / sqrt(nx * ny));
  assert_true(dot / sqrt(nx * ny) < 0.999);
  free(x); free(y); free(q); free(xb); free(yb); free(qb);
}

/* ---------------------------------------------------------------- calibration modes */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void test_calibration_modes(void **state) {
  (void)state;
  const int64_t n = 1000;
  float x[1000];
  test_fill_normal(x, n, 0.2f); /* 1.245 (the 128/129 boundary) is 6 std away */
  x[17] = -2.5f; /* the largest magnitude, negative */
  qins_codec_row_stats st;
  qins_codec_stats_row(x, n, &st);
  double mean = 0, ss = 0;
  for (int64_t i = 0; i < n; i++) mean += x[i];
  mean /= n;
  for (int64_t i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
  assert_true(fabs(st.sigma - sqrt(ss / n)) <= 1e-12 * st.sigma); /* population std about the mean */
  assert_true(st.absmax == 2.5);

  qins_alpha_spec am = {QINS_ALPHA_ABSMAX, 0};
  float a8 = qins_codec_calibrate_row(x, n, QINS_DT_QINS8, am), a6 = qins_codec_calibrate_row(x, n, QINS_DT_QINS6, am);
  assert_true(a8 == 254.0f / 2.5f);
  assert_true(qins_codec_calibrate_row(x, n, QINS_DT_QINS_F32, am) == a8);
  assert_true(a6 == 62.0f / 2.5f);
  assert_int_equal(qins_codec_x_to_code8(x[17], a8), 127);
  assert_int_equal(qins_codec_x_to_code8(2.5f, a8), 128);
  assert_int_equal(qins_codec_x_to_code6(x[17], a6), 31);
  /* nothing else saturates */
  for (int64_t i = 0; i < n; i++)
    if (i != 17) {
      int c = qins_codec_x_to_code8(x[i], a8);
      assert_true(c != 127 && c != 128);
    }

  qins_alpha_spec sd = {QINS_ALPHA_STD, 0.7f};
  assert_true(fabsf(qins_codec_calibrate_row(x, n, QINS_DT_QINS8, sd) - (float)(0.7 / st.sigma)) <= 1e-6f * (float)(0.7 / st.sigma));
  qins_alpha_spec fx = {QINS_ALPHA_FIXED, 3.25f};
  assert_true(qins_codec_calibrate_row(x, n, QINS_DT_QINS6, fx) == 3.25f);

  /* degenerate rows */
  float zero[5] = {0, -0.0f, 0, 0, 0};
  qins_alpha_spec modes[] = {{QINS_ALPHA_MSE, 0}, am, sd};
  for (int m = 0; m < 3; m++) assert_true(qins_codec_calibrate_row(zero, 5, QINS_DT_QINS8, modes[m]) == 1.0f);
  assert_true(qins_codec_calibrate_row(zero, 5, QINS_DT_QINS8, fx) == 3.25f);
  float cst[4] = {0.5f, 0.5f, 0.5f, 0.5f}; /* sigma 0: std and mse use absmax */
  assert_true(qins_codec_calibrate_row(cst, 4, QINS_DT_QINS8, sd) == 0.7f / 0.5f);
  float am_c = qins_codec_calibrate_row(cst, 4, QINS_DT_QINS8, modes[0]);
  assert_true(isfinite(am_c) && am_c > 0);
  assert_true(qins_codec_row_mse(cst, 4, QINS_DT_QINS8, am_c) <= qins_codec_row_mse(cst, 4, QINS_DT_QINS8, 0.7f / 0.5f));

  /* heavy-tailed rows (Gaussian scale mixture N * exp(1.2 N)): mse beats absmax and std:0.7 on
   * almost every row (measured 97% of rows for std:0.7, all for absmax; the MSE objective is
   * noisy in alpha, so a fixed alpha between grid points wins now and then) and by far in total. */
  qins_alpha_spec mse = {QINS_ALPHA_MSE, 0};
  const qins_dtype fmts[2] = {QINS_DT_QINS8, QINS_DT_QINS6};
  for (int f = 0; f < 2; f++) {
    int wins = 0, nrows = 20;
    double t_mse = 0, t_abs = 0, t_std = 0, cs[20];
    for (int r = 0; r < nrows; r++) {
      for (int64_t i = 0; i < n; i++) x[i] = test_rand_normal() * expf(1.2f * test_rand_normal()) * 0.05f;
      qins_codec_stats_row(x, n, &st);
      float a_ = qins_codec_calibrate_row(x, n, fmts[f], mse);
      double m_mse = qins_codec_row_mse(x, n, fmts[f], a_);
      double m_abs = qins_codec_row_mse(x, n, fmts[f], qins_codec_calibrate_row(x, n, fmts[f], am));
      double m_std = qins_codec_row_mse(x, n, fmts[f], qins_codec_calibrate_row(x, n, fmts[f], sd));
      wins += m_mse < m_abs && m_mse < m_std;
      t_mse += m_mse; t_abs += m_abs; t_std += m_std;
      cs[r] = a_ * st.sigma;
    }
    qsort(cs, (size_t)nrows, sizeof cs[0], cmp_double);
    double median = 0.5 * (cs[nrows / 2 - 1] + cs[nrows / 2]);
    print_message("heavy-tailed rows, %s: mse wins %d/%d; total MSE mse %.3g, std:0.7 %.3g, absmax %.3g; "
                  "median alpha*std %.3f\n", qins_dtype_name(fmts[f]), wins, nrows, t_mse, t_std, t_abs, median);
    assert_true(wins >= 15);
    assert_true(t_mse < 0.8 * t_std && t_mse < 0.1 * t_abs);
    /* measured median ~0.41 (qins8) and ~0.42 (qins6, wider spread): heavy tails prefer alpha*std below 0.7 */
    assert_true(median < (fmts[f] == QINS_DT_QINS8 ? 0.6 : 0.7));
  }
}

/* ---------------------------------------------------------------- int8 baselines */

static void test_int8_exact(void **state) {
  (void)state;
  float x[7] = {0.0f, 1.0f, -2.0f, 3.5f, 2.5f, -127.0f, 126.4f};
  int8_t q[7];
  float step;
  qins_codec_int8_encode_row(QINS_DT_INT8_ROW, x, 7, q, &step);
  assert_true(step == 1.0f);
  const int8_t want[7] = {0, 1, -2, 4, 2, -127, 126}; /* 3.5 -> 4 and 2.5 -> 2: half to even */
  assert_memory_equal(q, want, 7);
  float y[7];
  qins_codec_int8_decode_row(QINS_DT_INT8_ROW, q, 7, &step, y);
  assert_true(y[6] == 126.0f && y[3] == 4.0f);
  float zero[3] = {0, 0, 0};
  qins_codec_int8_encode_row(QINS_DT_INT8_ROW, zero, 3, q, &step);
  assert_true(step == 0.0f && q[0] == 0 && q[1] == 0 && q[2] == 0);
  /* blocks of 32, the last shorter: 70 -> 32 + 32 + 6 */
  float xb[70];
  int8_t qb[70];
  float steps[3], yb[70];
  for (int i = 0; i < 70; i++) xb[i] = (float)((i % 7) - 3) * (i < 32 ? 1.0f : i < 64 ? 10.0f : 0.5f);
  xb[5] = 6.35f;  /* block 0 absmax */
  xb[40] = -35.0f; /* block 1 absmax */
  xb[69] = NAN;    /* ignored by the scale; codes to 0 */
  qins_codec_int8_encode_row(QINS_DT_INT8_B32, xb, 70, qb, steps);
  assert_true(steps[0] == 6.35f / 127.0f);
  assert_true(steps[1] == 35.0f / 127.0f);
  assert_true(steps[2] == 1.0f / 127.0f);
  assert_int_equal(qb[5], 127);
  assert_int_equal(qb[40], -127);
  assert_int_equal(qb[69], 0);
  for (int i = 0; i < 69; i++) assert_int_equal(qb[i], qins_codec_int8_code(xb[i], steps[i / 32]));
  qins_codec_int8_decode_row(QINS_DT_INT8_B32, qb, 70, steps, yb);
  for (int i = 0; i < 69; i++) assert_true(fabsf(yb[i] - xb[i]) <= 0.5f * steps[i / 32] * 1.0001f);
  assert_int_equal(qins_format_scale_count(QINS_DT_INT8_B32, 1, 70), 3);
}

/* ---------------------------------------------------------------- every backend vs the reference */

typedef struct { int64_t rows, cols; } shape2;

static const qins_alpha_spec backend_specs[] = {
    {QINS_ALPHA_ABSMAX, 0}, {QINS_ALPHA_STD, 0.7f}, {QINS_ALPHA_FIXED, 1.75f}, {QINS_ALPHA_MSE, 0}};

/* Codes differing by exactly 1 are tolerated on non-cpu backends in at most this fraction of
 * elements (a float op ordered differently near a rounding boundary); cpu must match exactly. */
#define CODE_OFF_BY_ONE_FRACTION 1e-3

static void check_codes(const char *be_name, const char *what, const uint8_t *got, const uint8_t *want, int64_t n,
                        int is_signed) {
  int64_t off1 = 0;
  for (int64_t i = 0; i < n; i++) {
    int g = is_signed ? (int8_t)got[i] : got[i], w = is_signed ? (int8_t)want[i] : want[i];
    if (g == w) continue;
    if (abs(g - w) == 1 && strcmp(be_name, "cpu") != 0) {
      off1++;
      continue;
    }
    fail_msg("%s %s: code %lld is %d, reference %d", be_name, what, (long long)i, g, w);
  }
  if (off1) print_message("%s %s: %lld of %lld codes off by one (allowed)\n", be_name, what, (long long)off1, (long long)n);
  if ((double)off1 > CODE_OFF_BY_ONE_FRACTION * (double)n + 1)
    fail_msg("%s %s: %lld of %lld codes off by one", be_name, what, (long long)off1, (long long)n);
}

/* The mse rule never does worse than absmax: on rows of two to four elements with one large
 * outlier the absmax alpha lies outside the search grid (alpha * sigma > 20), and before the
 * final absmax candidate the search returned MSEs up to 200x absmax's. */
static void test_mse_not_worse_than_absmax(void **state) {
  (void)state;
  const qins_dtype fmts[3] = {QINS_DT_QINS_F32, QINS_DT_QINS8, QINS_DT_QINS6};
  qins_alpha_spec mse = {QINS_ALPHA_MSE, 0}, am = {QINS_ALPHA_ABSMAX, 0};
  int absmax_taken = 0;
  for (int t = 0; t < 400; t++) {
    float x[4];
    int n = 2 + t % 3;
    test_fill_normal(x, n, expf(test_rand_uniform(-6.0f, 2.0f)));
    x[0] *= 30.0f;
    for (int f = 0; f < 3; f++) {
      qins_dtype of = fmts[f] == QINS_DT_QINS6 ? QINS_DT_QINS6 : QINS_DT_QINS8;
      float a_mse = qins_codec_calibrate_row(x, n, fmts[f], mse), a_abs = qins_codec_calibrate_row(x, n, fmts[f], am);
      double m_mse = qins_codec_row_mse(x, n, of, a_mse), m_abs = qins_codec_row_mse(x, n, of, a_abs);
      if (!(m_mse <= m_abs * (1.0 + 0x1p-16))) /* the rule's tie margin: absmax must be lower by more */
        fail_msg("%s row of %d: mse alpha %.7g has MSE %.6g > absmax alpha %.7g's %.6g", qins_dtype_name(fmts[f]), n,
                 a_mse, m_mse, a_abs, m_abs);
      absmax_taken += a_mse == a_abs;
    }
  }
  print_message("short rows with an outlier: the absmax alpha won %d of 1200 mse calibrations\n", absmax_taken);
  assert_true(absmax_taken > 0); /* the case this guards exists in the sample */
}

static void backend_case(qins_backend *be, shape2 s) {
  const char *bn = be->name;
  int64_t n = s.rows * s.cols;
  int64_t shape[2] = {s.rows, s.cols};
  float *x = malloc((size_t)n * 4 + 4), *yref = malloc((size_t)n * 4 + 4), *ygot = malloc((size_t)n * 4 + 4);
  /* rows of different scales, a few exact zeros, one heavy tail */
  for (int64_t r = 0; r < s.rows; r++) {
    float sd = expf(test_rand_uniform(-6.0f, 2.0f));
    test_fill_normal(x + r * s.cols, s.cols, sd);
    if (r % 3 == 1 && s.cols > 2) x[r * s.cols + 1] = 0.0f;
    if (r % 4 == 2) x[r * s.cols] *= 30.0f;
  }
  qins_tensor tx;
  test_tensor_make(be, &tx, "x", QINS_DT_F32, 2, shape, x);
  char what[160];

  const qins_dtype qf[3] = {QINS_DT_QINS_F32, QINS_DT_QINS8, QINS_DT_QINS6};
  for (int f = 0; f < 3; f++) {
    qins_dtype fmt = qf[f];
    /* calibrate: each mode vs the reference */
    float *aref = malloc((size_t)s.rows * 4), *agot = malloc((size_t)s.rows * 4);
    for (size_t m = 0; m < sizeof backend_specs / sizeof backend_specs[0]; m++) {
      qins_alpha_spec spec = backend_specs[m];
      qins_tensor ta;
      int64_t ash[1] = {s.rows};
      test_tensor_make(be, &ta, "alpha", QINS_DT_F32, 1, ash, NULL);
      test_poison(&ta);
      assert_int_equal(qins_op_calibrate(be, &tx, fmt, spec, &ta), 0);
      assert_int_equal(qins_tensor_read(&ta, agot), 0);
      for (int64_t r = 0; r < s.rows; r++) {
        const float *xr = x + r * s.cols;
        aref[r] = qins_codec_calibrate_row(xr, s.cols, fmt, spec);
        if (fabsf(agot[r] - aref[r]) <= 1e-3f * aref[r]) continue;
        qins_dtype of = fmt == QINS_DT_QINS6 ? fmt : QINS_DT_QINS8;
        double msq = 0;
        for (int64_t i = 0; i < s.cols; i++) msq += (double)xr[i] * xr[i] / (double)s.cols;
        double mse_got = isfinite(agot[r]) && agot[r] > 0 ? qins_codec_row_mse(xr, s.cols, of, agot[r]) : INFINITY;
        double mse_ref = qins_codec_row_mse(xr, s.cols, of, aref[r]);
        /* The MSE is a step function of alpha; on very short rows several alphas tie to rounding
         * (the float GPU reduction and the double reference then pick different ties): accept
         * any alpha whose MSE is within 0.1% of the reference's, plus rounding of the row's scale. */
        if (spec.mode == QINS_ALPHA_MSE && mse_got <= 1.001 * mse_ref + 1e-7 * msq) {
          print_message("%s calibrate mse %s [%lld,%lld] row %lld: alpha %.7g vs reference %.7g, accepted on MSE\n", bn,
                        qins_dtype_name(fmt), (long long)s.rows, (long long)s.cols, (long long)r, agot[r], aref[r]);
          continue;
        }
        /* Rows of a few elements: the MSE against alpha is a comb of narrow minima (each element
         * crossing code boundaries), and the search's float (device) and double (reference)
         * evaluations can settle in different minima (seen on [300,2]: MSE 0.044 vs 0.0036).
         * There the contract both keep is the rule's last step: no worse than the absmax alpha. */
        if (spec.mode == QINS_ALPHA_MSE && s.cols <= 4) {
          qins_alpha_spec am = {QINS_ALPHA_ABSMAX, 0};
          double mse_abs = qins_codec_row_mse(xr, s.cols, of, qins_codec_calibrate_row(xr, s.cols, fmt, am));
          if (mse_got <= mse_abs * (1.0 + 0x1p-15) + 1e-7 * msq) {
            print_message("%s calibrate mse %s [%lld,%lld] row %lld: alpha %.7g (MSE %.3g) vs reference %.7g (MSE %.3g), "
                          "accepted: a short row, no worse than absmax (MSE %.3g)\n",
                          bn, qins_dtype_name(fmt), (long long)s.rows, (long long)s.cols, (long long)r, agot[r], mse_got,
                          aref[r], mse_ref, mse_abs);
            continue;
          }
        }
        char sb[32];
        fail_msg("%s calibrate %s %s [%lld,%lld] row %lld: alpha %.9g (MSE %.6g), reference %.9g (MSE %.6g)", bn,
                 qins_dtype_name(fmt), qins_alpha_spec_format(spec, sb, sizeof sb), (long long)s.rows,
                 (long long)s.cols, (long long)r, agot[r], mse_got, aref[r], mse_ref);
      }
      qins_tensor_free(&ta);
    }
    /* quantize with the reference alpha (mse, the last mode above, is left in aref) */
    qins_tensor td, tsc;
    int64_t ash[1] = {s.rows};
    assert_int_equal(qins_tensor_init(&td, "codes", fmt, 2, shape), 0);
    test_tensor_make(be, &tsc, "alpha", QINS_DT_F32, 1, ash, aref);
    td.scale = &tsc;
    assert_int_equal(qins_tensor_alloc(be, &td), 0);
    size_t nb = qins_tensor_nbytes(&td);
    uint8_t *cref = malloc(nb + 1), *cgot = malloc(nb + 1);
    test_poison(&td);
    assert_int_equal(qins_op_quantize(be, &tx, &td), 0);
    assert_int_equal(qins_tensor_read(&td, cgot), 0);
    assert_int_equal(qins_codec_encode(fmt, x, s.rows, s.cols, aref, cref, NULL), 0);
    snprintf(what, sizeof what, "quantize %s [%lld,%lld]", qins_dtype_name(fmt), (long long)s.rows, (long long)s.cols);
    if (fmt == QINS_DT_QINS8) {
      check_codes(bn, what, cgot, cref, n, 0);
    } else if (fmt == QINS_DT_QINS6) {
      int64_t padded = (int64_t)(nb / 3 * 4);
      uint8_t *ug = malloc((size_t)padded + 1), *ur = malloc((size_t)padded + 1);
      qins_codec_unpack6(cgot, padded, ug);
      qins_codec_unpack6(cref, padded, ur);
      check_codes(bn, what, ug, ur, padded, 0);
      /* padding must be the code of x = 0 exactly */
      int64_t rowc = (s.cols + 3) / 4 * 4;
      for (int64_t r = 0; r < s.rows; r++)
        for (int64_t c = s.cols; c < rowc; c++) assert_int_equal(ug[r * rowc + c], 63);
      free(ug); free(ur);
    } else {
      const float *zg = (const float *)cgot, *zr = (const float *)cref;
      for (int64_t i = 0; i < n; i++) {
        /* a device division may be off by up to 2.5 ulp (Vulkan's OpFDiv): 4 ulp of z allowed */
        float tol = strcmp(bn, "cpu") == 0 ? 0.0f : 4.0f * (nextafterf(fabsf(zr[i]), 2.0f) - fabsf(zr[i]));
        if (!(fabsf(zg[i] - zr[i]) <= tol)) fail_msg("%s %s: z[%lld] %a, reference %a", bn, what, (long long)i, zg[i], zr[i]);
      }
    }
    /* dequantize the reference codes */
    assert_int_equal(qins_tensor_write(&td, cref), 0);
    qins_tensor ty;
    test_tensor_make(be, &ty, "y", QINS_DT_F32, 2, shape, NULL);
    test_poison(&ty);
    assert_int_equal(qins_op_dequantize(be, &td, &ty), 0);
    assert_int_equal(qins_tensor_read(&ty, ygot), 0);
    assert_int_equal(qins_codec_decode(fmt, cref, s.rows, s.cols, aref, yref), 0);
    for (int64_t i = 0; i < n; i++) {
      float tol = strcmp(bn, "cpu") == 0 ? 0.0f : 1e-6f * fabsf(yref[i]);
      if (!(fabsf(ygot[i] - yref[i]) <= tol))
        fail_msg("%s dequantize %s: y[%lld] %.9g, reference %.9g", bn, qins_dtype_name(fmt), (long long)i, ygot[i], yref[i]);
    }
    qins_tensor_free(&ty);
    qins_tensor_free(&td);
    free(cref); free(cgot); free(aref); free(agot);
  }

  /* int8 baselines and the f16/bf16 casts: quantize writes steps; dequantize reads them */
  const qins_dtype bf[4] = {QINS_DT_INT8_ROW, QINS_DT_INT8_B32, QINS_DT_F16, QINS_DT_BF16};
  for (int f = 0; f < 4; f++) {
    qins_dtype fmt = bf[f];
    qins_tensor td, tsc;
    int64_t nsc = qins_format_scale_count(fmt, s.rows, s.cols);
    assert_int_equal(qins_tensor_init(&td, "codes", fmt, 2, shape), 0);
    float *sref = malloc((size_t)nsc * 4 + 4), *sgot = malloc((size_t)nsc * 4 + 4);
    if (nsc) {
      int64_t ssh[1] = {nsc};
      test_tensor_make(be, &tsc, "steps", QINS_DT_F32, 1, ssh, NULL);
      test_poison(&tsc);
      td.scale = &tsc;
    }
    assert_int_equal(qins_tensor_alloc(be, &td), 0);
    size_t nb = qins_tensor_nbytes(&td);
    uint8_t *cref = malloc(nb + 1), *cgot = malloc(nb + 1);
    test_poison(&td);
    assert_int_equal(qins_op_quantize(be, &tx, &td), 0);
    assert_int_equal(qins_tensor_read(&td, cgot), 0);
    assert_int_equal(qins_codec_encode(fmt, x, s.rows, s.cols, NULL, cref, sref), 0);
    snprintf(what, sizeof what, "quantize %s [%lld,%lld]", qins_dtype_name(fmt), (long long)s.rows, (long long)s.cols);
    if (nsc) {
      assert_int_equal(qins_tensor_read(&tsc, sgot), 0);
      for (int64_t i = 0; i < nsc; i++)
        if (!(fabsf(sgot[i] - sref[i]) <= 1e-6f * sref[i])) fail_msg("%s %s: step %lld %.9g, reference %.9g", bn, what,
                                                                     (long long)i, sgot[i], sref[i]);
      check_codes(bn, what, cgot, cref, n, 1);
    } else {
      assert_memory_equal(cgot, cref, nb); /* casts round to nearest even everywhere */
    }
    /* dequantize the reference */
    assert_int_equal(qins_tensor_write(&td, cref), 0);
    if (nsc) assert_int_equal(qins_tensor_write(&tsc, sref), 0);
    qins_tensor ty;
    test_tensor_make(be, &ty, "y", QINS_DT_F32, 2, shape, NULL);
    test_poison(&ty);
    assert_int_equal(qins_op_dequantize(be, &td, &ty), 0);
    assert_int_equal(qins_tensor_read(&ty, ygot), 0);
    assert_int_equal(qins_codec_decode(fmt, cref, s.rows, s.cols, sref, yref), 0);
    for (int64_t i = 0; i < n; i++)
      if (!(ygot[i] == yref[i]))
        fail_msg("%s dequantize %s: y[%lld] %.9g, reference %.9g", bn, qins_dtype_name(fmt), (long long)i, ygot[i], yref[i]);
    qins_tensor_free(&ty);
    qins_tensor_free(&td);
    free(cref); free(cgot); free(sref); free(sgot);
  }
  qins_tensor_free(&tx);
  free(x); free(yref); free(ygot);
}

static void test_backends_vs_reference(void **state) {
  (void)state;
  char names[8][64];
  int nb = test_backends(names, 8);
  const shape2 shapes[] = {{1, 1}, {3, 5}, {2, 7}, {7, 33}, {64, 64}, {5, 70}, {17, 4099}, {300, 2}};
  for (int b = 0; b < nb; b++) {
    qins_backend *be;
    if (qins_backend_create(names[b], &be) != 0) fail_msg("backend %s: %s", names[b], qins_error_msg());
    print_message("codec ops on %s (%s)\n", names[b], be->device_name);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) backend_case(be, shapes[k]);
    qins_backend_destroy(be);
  }
}

/* Bad requests fail with a message, never a crash. */
static void test_op_validation(void **state) {
  (void)state;
  qins_backend *be;
  assert_int_equal(qins_backend_create("cpu", &be), 0);
  int64_t shape[2] = {2, 3};
  qins_tensor x, a, d;
  test_tensor_make(be, &x, "x", QINS_DT_F32, 2, shape, NULL);
  int64_t bad[1] = {3};
  test_tensor_make(be, &a, "alpha", QINS_DT_F32, 1, bad, NULL);
  qins_alpha_spec mse = {QINS_ALPHA_MSE, 0};
  assert_int_equal(qins_op_calibrate(be, &x, QINS_DT_QINS8, mse, &a), QINS_EINVAL);
  assert_int_equal(qins_op_calibrate(be, &x, QINS_DT_INT8_ROW, mse, &a), QINS_EINVAL);
  assert_int_equal(qins_tensor_init(&d, "codes", QINS_DT_QINS8, 2, shape), 0);
  assert_int_equal(qins_tensor_alloc(be, &d), 0);
  assert_int_equal(qins_op_quantize(be, &x, &d), QINS_EINVAL); /* no alpha tensor */
  assert_non_null(strstr(qins_error_msg(), "codes"));
  qins_tensor_free(&d);
  qins_tensor_free(&a);
  qins_tensor_free(&x);
  qins_backend_destroy(be);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mse_not_worse_than_absmax),
      cmocka_unit_test(test_map_values),
      cmocka_unit_test(test_code8_exact),
      cmocka_unit_test(test_code_ties),
      cmocka_unit_test(test_x_to_code_matches_map),
      cmocka_unit_test(test_code6_exact),
      cmocka_unit_test(test_nan_inf_policy),
      cmocka_unit_test(test_pack6_layout),
      cmocka_unit_test(test_qins_f32_roundtrip),
      cmocka_unit_test(test_gaussian_reference_points),
      cmocka_unit_test(test_calibration_modes),
      cmocka_unit_test(test_int8_exact),
      cmocka_unit_test(test_backends_vs_reference),
      cmocka_unit_test(test_op_validation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
