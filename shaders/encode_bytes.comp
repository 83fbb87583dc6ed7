// Encode f32 rows into byte formats, one 32-bit destination word per invocation: FMT_QINS8,
// FMT_QINS6 (4 codes per 3 bytes, rows padded with the code of 0) or FMT_INT8 (steps per row
// or per block of blk elements, from int8_scale.comp). Bytes outside the tensor keep their
// old value, so views at any byte offset work.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "codec.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; uint rb; uint blk; uint nblk; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer S { float sc[]; };
layout(binding = 2) buffer D { uint dst[]; };

uint byte_val(uint e) {
  uint r = e / pc.rb, j = e % pc.rb;
  uint xo = (pc.off[0] >> 2) + r * pc.cols;
  float s = sc[(pc.off[1] >> 2) + r * pc.nblk + (pc.nblk > 1u ? j / pc.blk : 0u)];
#if defined(FMT_QINS8)
  return qins_code(x[xo + j], s, 255u);
#elif defined(FMT_QINS6)
  uint grp = j / 3u, bi = j % 3u, v = 0u;
  for (uint t = 0; t < 4u; t++) {
    uint c = grp * 4u + t;
    uint code = c < pc.cols ? qins_code(x[xo + c], s, 63u) : 63u;
    v |= code << (6u * t);
  }
  return (v >> (8u * bi)) & 0xffu;
#else
  return uint(int8_code(x[xo + j], s)) & 0xffu;
#endif
}

void main() {
  uint g = flat_id();
  uint h0 = pc.off[2] & 3u;
  uint nbytes = pc.rows * pc.rb;
  if (g >= (nbytes + h0 + 3u) / 4u) return;
  uint wi = (pc.off[2] >> 2) + g;
  uint word = dst[wi];
  for (uint k = 0; k < 4u; k++) {
    int e = int(4u * g + k) - int(h0);
    if (e < 0 || uint(e) >= nbytes) continue;
    word = (word & ~(0xffu << (8u * k))) | (byte_val(uint(e)) << (8u * k));
  }
  dst[wi] = word;
}
