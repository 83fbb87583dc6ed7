// Row norms, one work group per row: RMSNorm, or LayerNorm with -DLAYERNORM (optional bias).
// y may alias x: every read of a row finishes (barrier) before its writes.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint D; float eps; uint has_bias; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer Wt { float w[]; };
layout(binding = 2) readonly buffer Bb { float b[]; };
layout(binding = 3) buffer Y { float y[]; };

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint xo = (pc.off[0] >> 2) + r * pc.D, yo = (pc.off[3] >> 2) + r * pc.D;
  uint wo = pc.off[1] >> 2, bo = pc.off[2] >> 2;
#ifdef LAYERNORM
  float s = 0.0;
  for (uint i = lid; i < pc.D; i += WG) s += x[xo + i];
  float mean = wg_sum(s) / float(pc.D);
  float v = 0.0;
  for (uint i = lid; i < pc.D; i += WG) { float d = x[xo + i] - mean; v += d * d; }
  float var = wg_sum(v) / float(pc.D);
  float inv = 1.0 / sqrt(var + pc.eps);
  for (uint i = lid; i < pc.D; i += WG)
    y[yo + i] = (x[xo + i] - mean) * inv * w[wo + i] + (pc.has_bias != 0u ? b[bo + i] : 0.0);
#else
  float s = 0.0;
  for (uint i = lid; i < pc.D; i += WG) { float t = x[xo + i]; s += t * t; }
  float ss = wg_sum(s);
  float inv = 1.0 / sqrt(ss / float(pc.D) + pc.eps);
  for (uint i = lid; i < pc.D; i += WG) y[yo + i] = x[xo + i] * inv * w[wo + i];
#endif
}
