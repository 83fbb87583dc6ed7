// Norm backward, one work group per row: dx (overwrite) for RMSNorm, or LayerNorm with -DLAYERNORM;
// also stores (mean, rstd) per row for the gain/bias pass (colsum.comp MODE 2).
// dx is a small residual of larger terms (a projection): with -DUSE_F64 (device has shaderFloat64)
// the row statistics and the combination are computed in double, as on the cpu.
// RMS: dx = r dy w - x r^3 / D sum(dy w x). LN: g = dy w, dx = r (g - mean(g) - xhat mean(g xhat)).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#ifdef USE_F64
#define REAL double
shared double red_d[WG];
double wg_sum_d(double v) {
  uint lid = gl_LocalInvocationID.x;
  red_d[lid] = v;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) red_d[lid] += red_d[lid + s];
    barrier();
  }
  double r = red_d[0];
  barrier();
  return r;
}
#define WG_SUM wg_sum_d
#else
#include "reduce.glsl"
#define REAL float
#define WG_SUM wg_sum
#endif
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint D; float eps; } pc;
layout(binding = 0) readonly buffer G { float dy[]; };
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 2) readonly buffer Wt { float w[]; };
layout(binding = 3) buffer DX { float dx[]; };
layout(binding = 4) buffer S { float stats[]; };

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint go = (pc.off[0] >> 2) + r * pc.D, xo = (pc.off[1] >> 2) + r * pc.D, wo = pc.off[2] >> 2;
  uint dxo = (pc.off[3] >> 2) + r * pc.D;
  REAL fd = REAL(pc.D);
#ifdef LAYERNORM
  REAL s = 0.0;
  for (uint i = lid; i < pc.D; i += WG) s += REAL(x[xo + i]);
  REAL mu = WG_SUM(s) / fd;
  REAL v = 0.0;
  for (uint i = lid; i < pc.D; i += WG) { REAL d = REAL(x[xo + i]) - mu; v += d * d; }
  REAL rs = REAL(1.0) / sqrt(WG_SUM(v) / fd + REAL(pc.eps));
  REAL sg = 0.0, sgx = 0.0;
  for (uint i = lid; i < pc.D; i += WG) {
    REAL g = REAL(dy[go + i]) * REAL(w[wo + i]);
    sg += g;
    sgx += g * (REAL(x[xo + i]) - mu) * rs;
  }
  sg = WG_SUM(sg) / fd;
  sgx = WG_SUM(sgx) / fd;
  for (uint i = lid; i < pc.D; i += WG) {
    REAL xh = (REAL(x[xo + i]) - mu) * rs;
    dx[dxo + i] = float(rs * (REAL(dy[go + i]) * REAL(w[wo + i]) - sg - xh * sgx));
  }
#else
  REAL ss = 0.0, dt = 0.0;
  for (uint i = lid; i < pc.D; i += WG) {
    REAL xv = REAL(x[xo + i]);
    ss += xv * xv;
    dt += REAL(dy[go + i]) * REAL(w[wo + i]) * xv;
  }
  ss = WG_SUM(ss);
  dt = WG_SUM(dt);
  REAL rs = REAL(1.0) / sqrt(ss / fd + REAL(pc.eps));
  float rsf = float(rs), c = float(dt * rs * rs * rs / fd);
  for (uint i = lid; i < pc.D; i += WG) dx[dxo + i] = rsf * dy[go + i] * w[wo + i] - x[xo + i] * c;
  REAL mu = 0.0;
#endif
  if (lid == 0u) {
    stats[(pc.off[4] >> 2) + 2u * r] = float(mu);
    stats[(pc.off[4] >> 2) + 2u * r + 1u] = float(rs);
  }
}
