// Parameter gradients reduced over rows, one column per invocation (rows in order, so results do
// not depend on the device): out[c] += sum_r g[r,c] * f(r,c) with f = 1 (MODE 0), a[r,c] (MODE 1)
// or (a[r,c] - mean_r) * rstd_r (MODE 2, norm gains; stats holds (mean, rstd) per row).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; uint mode; } pc;
layout(binding = 0) readonly buffer G { float g[]; };
layout(binding = 1) readonly buffer A { float a[]; };
layout(binding = 2) readonly buffer S { float stats[]; };
layout(binding = 3) buffer O { float o[]; };

void main() {
  uint c = flat_id();
  if (c >= pc.cols) return;
  uint go = pc.off[0] >> 2, ao = pc.off[1] >> 2, so = pc.off[2] >> 2;
  float s = 0.0;
  for (uint r = 0; r < pc.rows; r++) {
    float v = g[go + r * pc.cols + c];
    if (pc.mode == 1u) v *= a[ao + r * pc.cols + c];
    else if (pc.mode == 2u) v *= (a[ao + r * pc.cols + c] - stats[so + 2u * r]) * stats[so + 2u * r + 1u];
    s += v;
  }
  o[(pc.off[3] >> 2) + c] += s;
}
