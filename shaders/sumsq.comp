// Sum of squares of a gradient (qins_op_sumsq) in two dispatches: PASS1 has each work group
// stride over its share of x and write one partial sum; the final pass (one group) adds the
// partials and writes the three-float split of the total into out[3*slot]. USE_F64 (the device
// has shaderFloat64) accumulates in double, so the result is close to the cpu's double sum.
// Additions only (no max/min), so NaN and Inf in x reach the result.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#ifdef USE_F64
#define ACC double
#define ACC_BYTES 8
#else
#define ACC float
#define ACC_BYTES 4
#endif
layout(local_size_x = WG) in;
layout(push_constant) uniform PC {
  PC_HEAD;
  uint n;      // PASS1: elements of this chunk of x; final: number of partials
  uint base;   // PASS1: first partial this dispatch writes; final: the output slot
} pc;

shared ACC red[WG];

ACC group_sum(ACC v) {
  uint lid = gl_LocalInvocationID.x;
  red[lid] = v;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) red[lid] += red[lid + s];
    barrier();
  }
  return red[0];
}

#ifdef PASS1
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer P { ACC part[]; };

void main() {
  uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
  uint stride = groups * WG;
  uint x0 = pc.off[0] >> 2;
  ACC a = ACC(0);
  for (uint i = flat_id(); i < pc.n; i += stride) {
    ACC v = ACC(x[x0 + i]);
    a += v * v;
  }
  ACC s = group_sum(a);
  if (gl_LocalInvocationID.x == 0u) part[(pc.off[1] / uint(ACC_BYTES)) + pc.base + flat_group()] = s;
}
#else
layout(binding = 0) readonly buffer P { ACC part[]; };
layout(binding = 1) writeonly buffer O { float o[]; };

void main() {
  uint p0 = pc.off[0] / uint(ACC_BYTES);
  ACC a = ACC(0);
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += WG) a += part[p0 + i];
  ACC s = group_sum(a);
  if (gl_LocalInvocationID.x == 0u) {
    uint k = (pc.off[1] >> 2) + 3u * pc.base;
#ifdef USE_F64
    // the bits below the float's 24, twice: the three floats sum back to s in double
    float hi = float(s);
    double r = s - double(hi);
    float mid = float(r);
    o[k] = hi;
    o[k + 1u] = mid;
    o[k + 2u] = float(r - double(mid));
#else
    o[k] = s;
    o[k + 1u] = 0.0;
    o[k + 2u] = 0.0;
#endif
  }
}
#endif
