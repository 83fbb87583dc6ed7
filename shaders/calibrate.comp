// Per-row alpha for the QINS formats, one work group per row (QINS.md section 3).
// mode 0 mse, 1 std:c, 2 absmax, 3 fixed:v; L = 255 (qins8, qins-f32) or 63 (qins6).
// mse: 33-point grid on u = ln(alpha * sigma) over [ln 0.02, ln 20], then 24 golden-section
// steps on [u_best - h, u_best + h]; the refined midpoint is kept only if its MSE is lower; then
// the absmax alpha instead when its MSE is lower by more than 2^-16 (mse never worse than absmax).
// A constant nonzero row (sigma 0) uses absmax in place of sigma (std and mse). NaN and +-Inf
// elements are left out of every statistic (mean, sigma, absmax, MSE: all divide by the finite
// count). alpha is stored finite and > 0 (clamped to [FLT_MIN, FLT_MAX]), like the cpu codec.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"
#include "codec.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; uint mode; uint L; float value; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) buffer A { float alpha[]; };
layout(binding = 2) readonly buffer T { float lut[]; };

shared float lut_s[256];
int g_e; // binary exponent of the row's absmax (set before any mse call)

float store_alpha(float a) { return !(a > 0.0) ? 1.0 : clamp(a, 1.17549435e-38, 3.40282347e38); }

// n / d without approximate division by a huge d: NVIDIA's float division returns 0 for
// |d| > 2^126, so d is first brought to [0.5, 1) by an exact power-of-two scale.
float safe_div(float n, float d) {
  int e;
  float m = frexp(d, e);
  return ldexp(n / m, -e);
}

// ((decoded - x) / 2^e)^2 with 2^e ~ absmax: the same ordering as the MSE, without float overflow on huge rows
float mse(uint xo, float kf, float a) {
  a = store_alpha(a);
  float inv = 1.0 / a;
  float s = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.cols; i += WG) {
    float v = x[xo + i];
    if (isnan(v) || isinf(v)) continue;
    float d = ldexp(lut_s[qins_code(v, a, pc.L)] * inv - v, -g_e);
    s += d * d;
  }
  return wg_sum(s) / kf;
}

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint xo = (pc.off[0] >> 2) + r * pc.cols;
  uint lbase = (pc.off[2] >> 2) + (pc.L == 255u ? 0u : 256u);
  for (uint i = lid; i <= pc.L; i += WG) lut_s[i] = lut[lbase + i];
  // statistics of the finite elements, scaled by absmax so that huge rows cannot overflow
  float m = 0.0, k = 0.0;
  for (uint i = lid; i < pc.cols; i += WG) {
    float v = x[xo + i];
    if (isnan(v) || isinf(v)) continue;
    m = max(m, abs(v));
    k += 1.0;
  }
  float absmax = wg_max(m);
  float kf = max(wg_sum(k), 1.0);
  // Statistics of v / 2^e, 2^e ~ absmax: the scale is exact and cannot overflow or flush (a
  // multiply by 1/absmax is subnormal near FLT_MAX, and NVIDIA's division by a value above 2^126
  // returns 0: both made sigma 0 and std:c gave alpha 1 on huge rows).
  int e_am;
  frexp(absmax > 0.0 ? absmax : 1.0, e_am);
  g_e = e_am;
  float s = 0.0;
  for (uint i = lid; i < pc.cols; i += WG) {
    float v = x[xo + i];
    if (isnan(v) || isinf(v)) continue;
    s += ldexp(v, -e_am);
  }
  float mean_s = wg_sum(s) / kf;
  float q = 0.0;
  for (uint i = lid; i < pc.cols; i += WG) {
    float v = x[xo + i];
    if (isnan(v) || isinf(v)) continue;
    // the scale is exact, so a constant row gives d = 0 exactly (an earlier v * (1/absmax) was
    // fused into an fma on NVIDIA and left sigma ~1e-8 * absmax, an alpha 1e8 times too large)
    float d = ldexp(v, -e_am) - mean_s;
    q += d * d;
  }
  float sigma = ldexp(sqrt(wg_sum(q) / kf), e_am); // the barriers above also publish lut_s
  // A spread below 2^-20 of absmax is float rounding, not data: the row counts as constant
  // (the cpu codec applies the same rule, so both agree whatever their summation order).
  if (sigma <= absmax * 9.5367431640625e-7) sigma = 0.0;
  float a = 1.0;
  if (pc.mode == 3u) {
    a = pc.value;
  } else if (absmax == 0.0) {
    a = 1.0;
  } else if (pc.mode == 1u) {
    a = safe_div(pc.value, sigma > 0.0 ? sigma : absmax);
  } else if (pc.mode == 2u) {
    a = safe_div(pc.L == 255u ? 254.0 : 62.0, absmax);
  } else {
    float sg = sigma > 0.0 ? sigma : absmax;
    const float U0 = -3.912023005428146, H = 0.21586735246819178;
    float fg[33];
    float fmin = 3.4e38;
    for (uint i = 0; i <= 32u; i++) {
      fg[i] = mse(xo, kf, safe_div(exp(U0 + float(i) * H), sg));
      fmin = min(fmin, fg[i]);
    }
    // MSEs within 2^-16 of the minimum tie and the lowest u wins (the cpu codec's rule): float
    // sums differ in their last bits between devices, and exact comparisons picked different
    // neighbourhoods for the golden-section step.
    float ub = U0, fb = 3.4e38;
    for (uint i = 0; i <= 32u; i++) {
      if (fg[i] <= fmin * (1.0 + 1.52587890625e-05)) { ub = U0 + float(i) * H; fb = fg[i]; break; }
    }
    const float GR = 0.6180339887498949;
    float lo = ub - H, hi = ub + H;
    float c = hi - GR * (hi - lo), d = lo + GR * (hi - lo);
    float fc = mse(xo, kf, safe_div(exp(c), sg)), fd = mse(xo, kf, safe_div(exp(d), sg));
    for (uint it = 0; it < 24u; it++) {
      if (fc < fd) { hi = d; d = c; fd = fc; c = hi - GR * (hi - lo); fc = mse(xo, kf, safe_div(exp(c), sg)); }
      else { lo = c; c = d; fc = fd; d = lo + GR * (hi - lo); fd = mse(xo, kf, safe_div(exp(d), sg)); }
    }
    float um = 0.5 * (lo + hi);
    float fm = mse(xo, kf, safe_div(exp(um), sg));
    a = safe_div(exp(fm < fb ? um : ub), sg);
    // the absmax alpha when its MSE is lower by more than 2^-16 (outside the grid on rows of a
    // few elements or one huge outlier; the cpu codec's rule: mse never does worse than absmax)
    float aa = store_alpha(safe_div(pc.L == 255u ? 254.0 : 62.0, absmax));
    if (mse(xo, kf, aa) < min(fm, fb) * (1.0 - 1.52587890625e-05)) a = aa;
  }
  if (pc.mode != 3u) a = store_alpha(a);
  if (lid == 0u) alpha[(pc.off[1] >> 2) + r] = a;
}
