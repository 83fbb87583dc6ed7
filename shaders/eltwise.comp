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
  // 0.5 v (1 + tanh(u)) == v / (1 + exp(-2u)): no cancellation for negative v, and no use of
  // the built-in tanh (which has no useful precision bound)
  float r = v / (1.0 + exp(-2.0 * 0.7978845608028654 * (v + 0.044715 * v * v * v)));
#endif
  y[(pc.off[2] >> 2) + i] = r;
}
