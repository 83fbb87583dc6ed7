// Softmax backward from the forward output y, one work group per row:
// dx = y * (dy - sum(dy * y)). dx may alias dy (each element is read, then written, by one invocation).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint N; } pc;
layout(binding = 0) readonly buffer Y { float y[]; };
layout(binding = 1) readonly buffer G { float dy[]; };
layout(binding = 2) buffer DX { float dx[]; };

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint yo = (pc.off[0] >> 2) + r * pc.N, go = (pc.off[1] >> 2) + r * pc.N, xo = (pc.off[2] >> 2) + r * pc.N;
  float s = 0.0;
  for (uint i = lid; i < pc.N; i += WG) s += dy[go + i] * y[yo + i];
  s = wg_sum(s);
  for (uint i = lid; i < pc.N; i += WG) dx[xo + i] = y[yo + i] * (dy[go + i] - s);
}
