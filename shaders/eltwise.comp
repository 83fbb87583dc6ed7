// Elementwise ops over rows x cols elements, one invocation each: OP_ADD / OP_MUL (b is one
// row broadcast over all rows when bcast != 0), OP_SILU, OP_GELU, OP_SILU_MUL. y may alias a.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; uint bcast; } pc;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer Bb { float b[]; };
layout(binding = 2) buffer Y { float y[]; };

float silu(float v) { return v / (1.0 + exp(-v)); }

// tanh from exp: the GLSL built-in has no useful precision bound
float tanh_acc(float u) {
  float au = abs(u);
  float t;
  if (au < 0.125) {
    float u2 = u * u; // odd series, enough for |u| < 1/8 at f32
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
  float v = a[(pc.off[0] >> 2) + i];
#if defined(OP_ADD) || defined(OP_MUL) || defined(OP_SILU_MUL)
  uint bi = pc.bcast != 0u ? i % pc.cols : i;
  float u = b[(pc.off[1] >> 2) + bi];
#endif
#if defined(OP_ADD)
  float r = v + u;
#elif defined(OP_MUL)
  float r = v * u;
#elif defined(OP_SILU)
  float r = silu(v);
#elif defined(OP_SILU_MUL)
  float r = silu(v) * u;
#elif defined(OP_GELU)
  float r = 0.5 * v * (1.0 + tanh_acc(0.7978845608028654 * (v + 0.044715 * v * v * v)));
#endif
  y[(pc.off[2] >> 2) + i] = r;
}
