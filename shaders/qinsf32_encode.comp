// qins-f32 encode: z = E_alpha(x) stored as f32, alpha per row.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "codec.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer S { float alpha[]; };
layout(binding = 2) buffer Z { float z[]; };

void main() {
  uint g = flat_id();
  if (g >= pc.rows * pc.cols) return;
  uint r = g / pc.cols;
  z[(pc.off[2] >> 2) + g] = qins_z(x[(pc.off[0] >> 2) + g], alpha[(pc.off[1] >> 2) + r]);
}
