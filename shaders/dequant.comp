// Decode to f32, one element per invocation: FMT_QINS8 / FMT_QINS6 through the D_1 lookup
// table (binding 2: 256 qins8 entries then 64 qins6 entries) times 1/alpha, FMT_INT8 as
// q * step, FMT_QINSF32 through D_alpha(z) = sign(z) (1 - |z|) / (alpha max(|z|, 1e-12)).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint cols; uint rb; uint blk; uint nblk; } pc;
#ifdef FMT_QINSF32
layout(binding = 0) readonly buffer C { float src[]; };
#else
layout(binding = 0) readonly buffer C { uint src[]; };
uint src_byte(uint b) { b += pc.off[0]; return (src[b >> 2] >> ((b & 3u) * 8u)) & 0xffu; }
#endif
layout(binding = 1) readonly buffer S { float sc[]; };
layout(binding = 2) readonly buffer L { float lut[]; };
layout(binding = 3) buffer Y { float y[]; };

void main() {
  uint g = flat_id();
  if (g >= pc.rows * pc.cols) return;
  uint r = g / pc.cols, c = g % pc.cols;
  float s = sc[(pc.off[1] >> 2) + r * pc.nblk + (pc.nblk > 1u ? c / pc.blk : 0u)];
  float v;
#if defined(FMT_QINS8)
  v = lut[(pc.off[2] >> 2) + src_byte(r * pc.rb + c)] * (1.0 / s);
#elif defined(FMT_QINS6)
  uint b = r * pc.rb + (c / 4u) * 3u;
  uint bits = src_byte(b) | (src_byte(b + 1u) << 8) | (src_byte(b + 2u) << 16);
  v = lut[(pc.off[2] >> 2) + 256u + ((bits >> (6u * (c % 4u))) & 63u)] * (1.0 / s);
#elif defined(FMT_INT8)
  int q = (int(src_byte(r * pc.rb + c)) << 24) >> 24;
  v = float(q) * s;
#else
  float z = src[(pc.off[0] >> 2) + g];
  float az = abs(z);
  float mag = (1.0 - az) / (s * max(az, 1e-12));
  v = z < 0.0 ? -mag : mag; // sign(-0) = +1
  if (isnan(z)) v = z;
#endif
  y[(pc.off[3] >> 2) + g] = v;
}
