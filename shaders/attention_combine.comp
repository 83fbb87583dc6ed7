// Merges the key splits of attention.comp: per (query, head) the splits' running maxima, sums and
// unnormalised outputs combine as out = sum_s acc_s exp(max_s - M) / sum_s sum_s exp(max_s - M).
#version 450
#extension GL_GOOGLE_include_directive : require
#ifndef WG
#define WG 128
#endif
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint MH; uint D; uint nsplit; } pc;
layout(binding = 0) readonly buffer Part { float part[]; };
layout(binding = 1) buffer O { float o[]; };

void main() {
  uint g = flat_group();
  if (g >= pc.MH) return;
  uint base = (pc.off[0] >> 2) + g * pc.nsplit * (pc.D + 2u);
  float mx = -1e30;
  for (uint s = 0; s < pc.nsplit; s++) mx = max(mx, part[base + s * (pc.D + 2u)]);
  float l = 0.0;
  for (uint s = 0; s < pc.nsplit; s++) {
    uint ps = base + s * (pc.D + 2u);
    l += part[ps + 1u] * exp(part[ps] - mx);
  }
  for (uint d = gl_LocalInvocationID.x; d < pc.D; d += WG) {
    float a = 0.0;
    for (uint s = 0; s < pc.nsplit; s++) {
      uint ps = base + s * (pc.D + 2u);
      a += part[ps + 2u + d] * exp(part[ps] - mx);
    }
    o[(pc.off[1] >> 2) + g * pc.D + d] = a / l;
  }
}
