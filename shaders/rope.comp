// Rotary embedding of x[M,H,D] (rows = M tokens in this dispatch): per (row, j) either rotates pair j (j < rot_dim/2, interleaved
// or half mode; mode bit 1: the transposed rotation, for rope_backward) or copies dimension
// rot_dim + (j - rot_dim/2). y may alias x.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint H; uint D; uint half_; uint mode; float attn; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer P { int pos[]; };
layout(binding = 2) readonly buffer F { float inv_freq[]; };
layout(binding = 3) buffer Y { float y[]; };

void main() {
  uint per_row = pc.D - pc.half_; // half_ pairs + (D - 2*half_) pass-through
  uint g = flat_id();
  if (g >= pc.rows * pc.H * per_row) return;
  uint row = g / per_row, j = g % per_row;
  uint xo = (pc.off[0] >> 2) + row * pc.D, yo = (pc.off[3] >> 2) + row * pc.D;
  if (j >= pc.half_) {
    uint i = 2u * pc.half_ + (j - pc.half_);
    y[yo + i] = x[xo + i];
    return;
  }
  uint t = row / pc.H;
  precise float angle = float(pos[(pc.off[1] >> 2) + t]) * inv_freq[(pc.off[2] >> 2) + j];
  float s, c;
  precise_sincos(angle, s, c);
  c *= pc.attn;
  s *= pc.attn;
  if ((pc.mode & 2u) != 0u) s = -s; // backward: the transposed rotation
  uint i0 = (pc.mode & 1u) == 0u ? 2u * j : j;
  uint i1 = (pc.mode & 1u) == 0u ? 2u * j + 1u : j + pc.half_;
  float a = x[xo + i0], b = x[xo + i1];
  y[yo + i0] = a * c - b * s;
  y[yo + i1] = a * s + b * c;
}
