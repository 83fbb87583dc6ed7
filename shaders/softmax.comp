// Row softmax, one work group per row: max, sum of exp(x - max), then exp(x - max) / sum.
// y may alias x (each element is read and written by the same invocation, after the sums).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint N; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) buffer Y { float y[]; };

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint xo = (pc.off[0] >> 2) + r * pc.N, yo = (pc.off[1] >> 2) + r * pc.N;
  float m = -3.4028235e38;
  for (uint i = lid; i < pc.N; i += WG) m = max(m, x[xo + i]);
  m = wg_max(m);
  float s = 0.0;
  for (uint i = lid; i < pc.N; i += WG) s += exp(x[xo + i] - m);
  s = wg_sum(s);
  for (uint i = lid; i < pc.N; i += WG) y[yo + i] = exp(x[xo + i] - m) / s;
}
