// Cast n elements between f32, f16 and bf16 (SRC_* and DST_* defines; round to nearest even).
// 16-bit destinations are written one 32-bit word per invocation; halves outside the tensor
// keep their old bits (views may start at a 2-byte offset). Also used by quantize/dequantize
// for the f16/bf16 "formats".
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; } pc;
#ifdef SRC_F32
layout(binding = 0) readonly buffer S { float src[]; };
float load_src(uint i) { return src[(pc.off[0] >> 2) + i]; }
#else
layout(binding = 0) readonly buffer S { uint src[]; };
float load_src(uint i) {
  uint e = (pc.off[0] >> 1) + i;
  uint h = (src[e >> 1] >> ((e & 1u) * 16u)) & 0xffffu;
#ifdef SRC_F16
  return f16_to_f32(h);
#else
  return bf16_to_f32(h);
#endif
}
#endif
#ifdef DST_F32
layout(binding = 1) buffer D { float dst[]; };
#else
layout(binding = 1) buffer D { uint dst[]; };
uint to16(float f) {
#ifdef DST_F16
  return f32_to_f16(f);
#else
  return f32_to_bf16(f);
#endif
}
#endif

void main() {
  uint g = flat_id();
  uint n = pc.rows * pc.cols;
#ifdef DST_F32
  if (g >= n) return;
  dst[(pc.off[1] >> 2) + g] = load_src(g);
#else
  uint h0 = (pc.off[1] >> 1) & 1u; // the tensor starts in the high half of word 0
  uint words = (n + h0 + 1u) / 2u;
  if (g >= words) return;
  uint wi = (pc.off[1] >> 2) + g;
  uint word = dst[wi];
  for (uint hh = 0; hh < 2u; hh++) {
    int e = int(2u * g + hh) - int(h0);
    if (e < 0 || uint(e) >= n) continue;
    uint sh = hh * 16u;
    word = (word & ~(0xffffu << sh)) | (to16(load_src(uint(e))) << sh);
  }
  dst[wi] = word;
#endif
}
