/* The QINS codec's scalar reference: map, codes, decode tables, packing, int8 baselines, calibration. */
#include "core/qins_codec.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/error.h"

/* Row loops vectorise only if GCC may turn the selects in x_to_code into blends, which it refuses
 * while a float compare might trap. No code here enables FP traps; values are unchanged.
 * No contraction into fused multiply-adds either (the default in ISO C mode; stated so a
 * gnu17 build keeps the roundings every backend reproduces). */
#pragma GCC optimize("no-trapping-math", "fp-contract=off")

/* ---------------------------------------------------------------- the map */

/* Written as selects, not branches, so row loops vectorise (see the pragma above). */
static inline float map_E(float x, float alpha) {
  float m = 1.0f / (1.0f + alpha * fabsf(x)); /* two roundings, no FMA: backends repeat this order */
  /* 1 + alpha|x| overflows (or x is Inf): z would be 0 and lose the sign; D clamps there anyway */
  m = m < QINS_CODEC_ZMIN ? QINS_CODEC_ZMIN : m;
  float z = x < 0.0f ? -m : m; /* sign(-0) = +1 */
  return x == x ? z : 1.0f;    /* policy: NaN encodes as x = 0 */
}

static inline float map_D(float z, float alpha) {
  float a = fabsf(z);
  a = a < QINS_CODEC_ZMIN ? QINS_CODEC_ZMIN : a;
  float v = (1.0f - a) / (alpha * a);
  v = z < 0.0f ? -v : v; /* sign(-0) = +1 */
  return z == z ? v : z;
}

float qins_codec_E(float x, float alpha) { return map_E(x, alpha); }
float qins_codec_D(float z, float alpha) { return map_D(z, alpha); }

/* ---------------------------------------------------------------- codes */

/* rint((z+1)*half) clamped to [0, 2*half], then kept on z's side of the split between the
 * negative codes [0, mid) and the positive ones [mid, top]. */
static inline int code_from_z(float z, float half, int top) {
  if (isnan(z)) return top;
  int mid = (top + 1) / 2;
  float t = rintf((z + 1.0f) * half);
  int q = t <= 0.0f ? 0 : t >= (float)top ? top : (int)t;
  if (signbit(z)) {
    if (q > mid - 1) q = mid - 1;
  } else if (q < mid) {
    q = mid;
  }
  return q;
}

int qins_codec_code8(float z) { return code_from_z(z, 127.5f, 255); }
int qins_codec_code6(float z) { return code_from_z(z, 31.5f, 63); }

/* code(E(x)) written without branches so row loops vectorise; the same float operations as
 * E then code_from_z (for x < 0, fl(-m + 1) is fl(1 - m)), which a test checks on random and
 * special values. */
static inline int x_to_code(float x, float alpha, float half, float top) {
  float mid = 0.5f * (top + 1.0f);
  float m = 1.0f / (1.0f + alpha * fabsf(x));
  m = m < QINS_CODEC_ZMIN ? QINS_CODEC_ZMIN : m;
  float pos = rintf((1.0f + m) * half), neg = rintf((1.0f - m) * half);
  pos = pos < mid ? mid : pos;
  neg = neg > mid - 1.0f ? mid - 1.0f : neg;
  float q = x < 0.0f ? neg : pos;
  q = x == x ? q : top; /* NaN: the code of 0 */
  return (int)q;
}

int qins_codec_x_to_code8(float x, float alpha) { return x_to_code(x, alpha, 127.5f, 255.0f); }
int qins_codec_x_to_code6(float x, float alpha) { return x_to_code(x, alpha, 31.5f, 63.0f); }

static float lut8[256], lut6[64];
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void lut_fill(float *lut, int top) {
  for (int q = 0; q <= top; q++) {
    int d = 2 * q - top;
    int ad = d < 0 ? -d : d;
    float v = (float)(top - ad) / (float)ad;
    lut[q] = d < 0 ? -v : v;
  }
}

static void lut_init(void) {
  lut_fill(lut8, 255);
  lut_fill(lut6, 63);
}

const float *qins_codec_lut8(void) {
  pthread_once(&lut_once, lut_init);
  return lut8;
}

const float *qins_codec_lut6(void) {
  pthread_once(&lut_once, lut_init);
  return lut6;
}

/* ---------------------------------------------------------------- qins6 packing */

void qins_codec_pack6(const uint8_t *codes, int64_t n, uint8_t *out) {
  for (int64_t g = 0; g * 4 < n; g++) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
      int64_t i = g * 4 + k;
      uint32_t c = i < n ? (uint32_t)(codes[i] & 63) : 63u; /* pad with the code of x = 0 */
      v |= c << (6 * k);
    }
    out[3 * g] = (uint8_t)(v & 0xff);
    out[3 * g + 1] = (uint8_t)((v >> 8) & 0xff);
    out[3 * g + 2] = (uint8_t)(v >> 16);
  }
}

void qins_codec_unpack6(const uint8_t *packed, int64_t n, uint8_t *codes) {
  for (int64_t g = 0; g * 4 < n; g++) {
    uint32_t v = (uint32_t)packed[3 * g] | (uint32_t)packed[3 * g + 1] << 8 | (uint32_t)packed[3 * g + 2] << 16;
    for (int k = 0; k < 4 && g * 4 + k < n; k++) codes[g * 4 + k] = (uint8_t)((v >> (6 * k)) & 63);
  }
}

/* ---------------------------------------------------------------- QINS rows */

void qins_codec_qins_encode_row(qins_dtype fmt, const float *x, int64_t n, float alpha, void *out) {
  if (fmt == QINS_DT_QINS_F32) {
    float *z = out;
    for (int64_t i = 0; i < n; i++) z[i] = map_E(x[i], alpha);
  } else if (fmt == QINS_DT_QINS8) {
    uint8_t *q = out;
    for (int64_t i = 0; i < n; i++) q[i] = (uint8_t)x_to_code(x[i], alpha, 127.5f, 255.0f);
  } else if (fmt == QINS_DT_QINS6) {
    uint8_t *p = out;
    uint8_t c[256];
    /* codes in chunks of 256 (a vectorisable loop), then packed */
    for (int64_t b = 0; b < n; b += 256) {
      int64_t m = n - b < 256 ? n - b : 256;
      for (int64_t k = 0; k < m; k++) c[k] = (uint8_t)x_to_code(x[b + k], alpha, 31.5f, 63.0f);
      qins_codec_pack6(c, m, p + b / 4 * 3);
    }
  }
}

void qins_codec_qins_decode_row(qins_dtype fmt, const void *in, int64_t n, float alpha, float *y) {
  if (fmt == QINS_DT_QINS_F32) {
    const float *z = in;
    for (int64_t i = 0; i < n; i++) y[i] = map_D(z[i], alpha);
    return;
  }
  float inv = 1.0f / alpha; /* one division per row; every element is lut[q] * inv */
  if (fmt == QINS_DT_QINS8) {
    const float *lut = qins_codec_lut8();
    const uint8_t *q = in;
    for (int64_t i = 0; i < n; i++) y[i] = lut[q[i]] * inv;
  } else if (fmt == QINS_DT_QINS6) {
    const float *lut = qins_codec_lut6();
    const uint8_t *p = in;
    for (int64_t g = 0; g * 4 < n; g++) {
      uint8_t c[4];
      qins_codec_unpack6(p + 3 * g, 4, c);
      for (int k = 0; k < 4 && g * 4 + k < n; k++) y[g * 4 + k] = lut[c[k]] * inv;
    }
  }
}

/* ---------------------------------------------------------------- int8 baselines */

static float finite_absmax(const float *x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    float a = fabsf(x[i]);
    if (isfinite(a) && a > m) m = a;
  }
  return m;
}

float qins_codec_int8_step(const float *x, int64_t n) { return finite_absmax(x, n) / 127.0f; }

static inline int int8_code(float x, float step) {
  float t = rintf(x / step); /* +-Inf stays infinite and saturates below */
  t = t > 127.0f ? 127.0f : t;
  t = t < -127.0f ? -127.0f : t;
  t = step == 0.0f && fabsf(x) < INFINITY ? 0.0f : t; /* step 0: finite x -> 0 */
  return x == x ? (int)t : 0;                          /* NaN -> 0 */
}

int qins_codec_int8_code(float x, float step) { return int8_code(x, step); }

void qins_codec_int8_encode_row(qins_dtype fmt, const float *x, int64_t n, int8_t *q, float *steps) {
  int64_t block = fmt == QINS_DT_INT8_B32 ? 32 : (n > 0 ? n : 1);
  for (int64_t b = 0, s = 0; b < n; b += block, s++) {
    int64_t m = n - b < block ? n - b : block;
    float step = qins_codec_int8_step(x + b, m);
    steps[s] = step;
    for (int64_t i = 0; i < m; i++) q[b + i] = (int8_t)int8_code(x[b + i], step);
  }
  if (n == 0 && fmt == QINS_DT_INT8_ROW) steps[0] = 0.0f;
}

void qins_codec_int8_decode_row(qins_dtype fmt, const int8_t *q, int64_t n, const float *steps, float *y) {
  int64_t block = fmt == QINS_DT_INT8_B32 ? 32 : (n > 0 ? n : 1);
  for (int64_t b = 0, s = 0; b < n; b += block, s++) {
    int64_t end = b + block < n ? b + block : n;
    float step = steps[s];
    for (int64_t i = b; i < end; i++) y[i] = (float)q[i] * step;
  }
}

/* ---------------------------------------------------------------- calibration */

void qins_codec_stats_row(const float *x, int64_t n, qins_codec_row_stats *st) {
  double sum = 0, absmax = 0;
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(x[i])) continue;
    sum += x[i];
    if (fabs((double)x[i]) > absmax) absmax = fabs((double)x[i]);
    k++;
  }
  double mean = k ? sum / (double)k : 0.0, ss = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(x[i])) continue;
    double d = (double)x[i] - mean;
    ss += d * d;
  }
  st->finite = k;
  st->mean = mean;
  st->sigma = k ? sqrt(ss / (double)k) : 0.0;
  /* A spread below 2^-20 of absmax is rounding, not data: treat the row as constant, as every
   * backend does (a float GPU reduction cannot tell such a row from a constant one). */
  if (st->sigma <= absmax * 0x1p-20) st->sigma = 0.0;
  st->absmax = absmax;
}

double qins_codec_row_mse(const float *x, int64_t n, qins_dtype fmt, float alpha) {
  int six = fmt == QINS_DT_QINS6;
  const float *lut = six ? qins_codec_lut6() : qins_codec_lut8();
  float inv = 1.0f / alpha, half = six ? 31.5f : 127.5f, top = six ? 63.0f : 255.0f;
  /* Eight running sums, element i feeding sum i % 8, combined pairwise at the end: a fixed order
   * (deterministic, documented) that lets the loop use vector registers. */
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  uint8_t c[256];
  float err[256];
  for (int64_t b = 0; b < n; b += 256) {
    int64_t m = n - b < 256 ? n - b : 256;
    const float *xb = x + b;
    for (int64_t i = 0; i < m; i++) c[i] = (uint8_t)x_to_code(xb[i], alpha, half, top);
    for (int64_t i = 0; i < m; i++) {
      float xi = xb[i];
      int fin = fabsf(xi) < INFINITY; /* NaN and +-Inf are left out */
      err[i] = fin ? lut[c[i]] * inv - xi : 0.0f; /* decoded minus x, rounded to float */
      k += fin;
    }
    for (int64_t i = m; i < 256 && (i & 7); i++) err[i] = 0.0f;
    int64_t m8 = (m + 7) & ~(int64_t)7;
    for (int64_t i = 0; i < m8; i += 8)
      for (int j = 0; j < 8; j++) acc[j] += (double)err[i + j] * (double)err[i + j];
  }
  double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  return k ? sum / (double)k : 0.0;
}

/* alpha as stored: a float, finite and > 0 even for absurd scales (subnormal rows). */
static float alpha_store(double a) {
  if (!(a > 0)) return 1.0f;
  if (a > FLT_MAX) return FLT_MAX;
  if (a < FLT_MIN) return FLT_MIN;
  return (float)a;
}

static double mse_at(const float *x, int64_t n, qins_dtype fmt, double u, double scale) {
  return qins_codec_row_mse(x, n, fmt, alpha_store(exp(u) / scale));
}

/* `mse` mode: grid of 33 points on u = ln(alpha * sigma) in [ln 0.02, ln 20] (lowest MSE; MSEs
 * within 2^-16 of the lowest tie, and ties go to the lowest u), then 24 golden-section steps on
 * [u_best - h, u_best + h]; the refined midpoint is kept only when its MSE is strictly lower than
 * the grid point's. Last, the absmax alpha is taken instead when its MSE is lower by more than
 * 2^-16: on rows of a few elements or one huge outlier it can lie outside the grid (alpha * sigma
 * > 20), and `mse` must never do worse than `absmax`. The margin keeps float and double agreeing. */
static float calibrate_mse(const float *x, int64_t n, qins_dtype fmt, double scale, float alpha_absmax) {
  const double lo = log(0.02), hi = log(20.0);
  const double h = (hi - lo) / 32.0;
  double grid[33], min_m = INFINITY;
  for (int i = 0; i <= 32; i++) {
    grid[i] = mse_at(x, n, fmt, lo + h * i, scale);
    if (grid[i] < min_m) min_m = grid[i];
  }
  /* Grid points within 2^-16 of the minimum are ties, and the lowest u wins: a float GPU sum
   * and this one differ in the last bits, and without the margin they picked different
   * neighbourhoods (on short rows, different local minima) for the golden-section step. */
  double best_u = lo, best_m = INFINITY;
  for (int i = 0; i <= 32; i++) {
    if (grid[i] <= min_m * (1.0 + 0x1p-16)) {
      best_u = lo + h * i;
      best_m = grid[i];
      break;
    }
  }
  const double g = 0.6180339887498949; /* (sqrt(5) - 1) / 2 */
  double a = best_u - h, b = best_u + h;
  double c = b - g * (b - a), d = a + g * (b - a);
  double fc = mse_at(x, n, fmt, c, scale), fd = mse_at(x, n, fmt, d, scale);
  for (int it = 0; it < 24; it++) {
    if (fc < fd) {
      b = d; d = c; fd = fc;
      c = b - g * (b - a);
      fc = mse_at(x, n, fmt, c, scale);
    } else {
      a = c; c = d; fc = fd;
      d = a + g * (b - a);
      fd = mse_at(x, n, fmt, d, scale);
    }
  }
  double u = 0.5 * (a + b);
  double m = mse_at(x, n, fmt, u, scale);
  if (!(m < best_m)) u = best_u, m = best_m;
  if (qins_codec_row_mse(x, n, fmt, alpha_absmax) < m * (1.0 - 0x1p-16)) return alpha_absmax;
  return alpha_store(exp(u) / scale);
}

float qins_codec_calibrate_row(const float *x, int64_t n, qins_dtype fmt, qins_alpha_spec spec) {
  if (spec.mode == QINS_ALPHA_FIXED) return spec.value;
  qins_codec_row_stats st;
  qins_codec_stats_row(x, n, &st);
  if (st.absmax == 0) return 1.0f; /* all zero (or nothing finite): any alpha is exact */
  double scale = st.sigma > 0 ? st.sigma : st.absmax;
  switch (spec.mode) {
  case QINS_ALPHA_STD: return alpha_store(spec.value / scale);
  case QINS_ALPHA_ABSMAX: return alpha_store((fmt == QINS_DT_QINS6 ? 62.0 : 254.0) / st.absmax);
  case QINS_ALPHA_MSE: {
    qins_dtype of = fmt == QINS_DT_QINS6 ? fmt : QINS_DT_QINS8;
    return calibrate_mse(x, n, of, scale, alpha_store((of == QINS_DT_QINS6 ? 62.0 : 254.0) / st.absmax));
  }
  default: return 1.0f;
  }
}

/* ---------------------------------------------------------------- host arrays */

int qins_codec_encode(qins_dtype fmt, const float *x, int64_t rows, int64_t cols, const float *scales_in, void *dst,
                      float *scales_out) {
  size_t rb = qins_format_row_bytes(fmt, cols);
  int64_t nsc = qins_format_scale_count(fmt, 1, cols);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    void *out = (char *)dst + (size_t)r * rb;
    switch (fmt) {
    case QINS_DT_QINS_F32: case QINS_DT_QINS8: case QINS_DT_QINS6:
      qins_codec_qins_encode_row(fmt, xr, cols, scales_in[r], out);
      break;
    case QINS_DT_INT8_ROW: case QINS_DT_INT8_B32:
      qins_codec_int8_encode_row(fmt, xr, cols, out, scales_out + r * nsc);
      break;
    case QINS_DT_F32: memcpy(out, xr, rb); break;
    case QINS_DT_F16:
      for (int64_t i = 0; i < cols; i++) ((uint16_t *)out)[i] = qins_f32_to_f16(xr[i]);
      break;
    case QINS_DT_BF16:
      for (int64_t i = 0; i < cols; i++) ((uint16_t *)out)[i] = qins_f32_to_bf16(xr[i]);
      break;
    default: return qins_error_set(QINS_EINVAL, "codec: %s is not a storage format", qins_dtype_name(fmt));
    }
  }
  return 0;
}

int qins_codec_decode(qins_dtype fmt, const void *src, int64_t rows, int64_t cols, const float *scales, float *y) {
  size_t rb = qins_format_row_bytes(fmt, cols);
  int64_t nsc = qins_format_scale_count(fmt, 1, cols);
  for (int64_t r = 0; r < rows; r++) {
    const void *in = (const char *)src + (size_t)r * rb;
    float *yr = y + r * cols;
    switch (fmt) {
    case QINS_DT_QINS_F32: case QINS_DT_QINS8: case QINS_DT_QINS6:
      qins_codec_qins_decode_row(fmt, in, cols, scales[r], yr);
      break;
    case QINS_DT_INT8_ROW: case QINS_DT_INT8_B32:
      qins_codec_int8_decode_row(fmt, in, cols, scales + r * nsc, yr);
      break;
    case QINS_DT_F32: memcpy(yr, in, rb); break;
    case QINS_DT_F16:
      for (int64_t i = 0; i < cols; i++) yr[i] = qins_f16_to_f32(((const uint16_t *)in)[i]);
      break;
    case QINS_DT_BF16:
      for (int64_t i = 0; i < cols; i++) yr[i] = qins_bf16_to_f32(((const uint16_t *)in)[i]);
      break;
    default: return qins_error_set(QINS_EINVAL, "codec: %s is not a storage format", qins_dtype_name(fmt));
    }
  }
  return 0;
}
