// Elementwise backward ops, one element per invocation: OP_SILU (d1 = dy silu'(x)), OP_GELU
// (d1 = dy gelu_tanh'(x)), OP_SILU_MUL (d1 = dgate = dy up silu'(gate), d2 = dup = dy silu(gate);
// flags say which are wanted). d1 may alias dy.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; uint want1; uint want2; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer U { float up[]; };
layout(binding = 2) readonly buffer G { float dy[]; };
layout(binding = 3) buffer D1 { float d1[]; };
layout(binding = 4) buffer D2 { float d2[]; };

// tanh from exp (the built-in has no useful precision bound), a series near 0
float tanh_acc(float u) {
  float au = abs(u), t;
  if (au < 0.125) {
    float u2 = u * u;
    t = au * (1.0 - u2 * (1.0 / 3.0 - u2 * (2.0 / 15.0 - u2 * (17.0 / 315.0))));
  } else if (au > 20.0) {
    t = 1.0;
  } else {
    t = 1.0 - 2.0 / (exp(2.0 * au) + 1.0);
  }
  return u < 0.0 ? -t : t;
}

void main() {
  uint i = flat_id();
  if (i >= pc.rows * pc.cols) return;
  float v = x[(pc.off[0] >> 2) + i];
  float g = dy[(pc.off[2] >> 2) + i];
#if defined(OP_GELU)
  const float c = 0.7978845608028654, a = 0.044715;
  float t = tanh_acc(c * (v + a * v * v * v));
  float du = c * (1.0 + 3.0 * a * v * v);
  d1[(pc.off[3] >> 2) + i] = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
#else
  float s = 1.0 / (1.0 + exp(-v));
#if defined(OP_SILU)
  d1[(pc.off[3] >> 2) + i] = g * s * (1.0 + v * (1.0 - s));
#else
  float u = up[(pc.off[1] >> 2) + i];
  if (pc.want1 != 0u) d1[(pc.off[3] >> 2) + i] = g * u * s * (1.0 + v * (1.0 - s));
  if (pc.want2 != 0u) d2[(pc.off[4] >> 2) + i] = g * v * s;
#endif
#endif
}
