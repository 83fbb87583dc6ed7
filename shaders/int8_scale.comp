// int8 steps: absmax/127 per row (blk >= cols) or per block of blk elements of a row (the last
// block may be shorter). NaN and +-Inf elements are ignored; all-zero blocks get step 0. One work group
// per row.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; uint blk; uint nblk; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) buffer S { float sc[]; };

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint xo = (pc.off[0] >> 2) + r * pc.cols, so = (pc.off[1] >> 2) + r * pc.nblk;
  if (pc.nblk == 1u) {
    float m = 0.0;
    for (uint i = lid; i < pc.cols; i += WG) { float v = abs(x[xo + i]); if (!isnan(v) && !isinf(v)) m = max(m, v); }
    m = wg_max(m);
    if (lid == 0u) sc[so] = m / 127.0;
  } else {
    for (uint b = lid; b < pc.nblk; b += WG) {
      float m = 0.0;
      uint end = min(pc.cols, (b + 1u) * pc.blk);
      for (uint i = b * pc.blk; i < end; i++) { float v = abs(x[xo + i]); if (!isnan(v) && !isinf(v)) m = max(m, v); }
      sc[so + b] = m / 127.0;
    }
  }
}
