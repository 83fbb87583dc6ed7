// Attention backward, pass 2: one invocation per (key position p, KV head, dimension i), summing
// over the queries that see p and the query heads of the group (in order: deterministic).
// dk = scale sum dS q, dv = sum P dout; positions no query sees (p >= pos0 + M) get 0.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint M; uint Hq; uint Hkv; uint D; uint pos0; float scale; uint tv; uint T; } pc;
layout(binding = 0) readonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer G { float dout[]; };
layout(binding = 2) readonly buffer S { float scr[]; };
layout(binding = 3) buffer DK { float dk[]; };
layout(binding = 4) buffer DV { float dv[]; };

void main() {
  uint g = flat_id();
  uint D = pc.D;
  if (g >= pc.T * pc.Hkv * D) return;
  uint i = g % D, pk = g / D, kvh = pk % pc.Hkv, p = pk / pc.Hkv;
  uint group = pc.Hq / pc.Hkv;
  float a = 0.0, b = 0.0;
  if (p < pc.tv) {
    uint po = pc.off[2] >> 2, so = po + pc.M * pc.Hq * pc.tv;
    uint t0 = p > pc.pos0 ? p - pc.pos0 : 0u;
    for (uint t = t0; t < pc.M; t++)
      for (uint h = kvh * group; h < (kvh + 1u) * group; h++) {
        uint row = t * pc.Hq + h;
        a += scr[so + row * pc.tv + p] * pc.scale * q[(pc.off[0] >> 2) + row * D + i];
        b += scr[po + row * pc.tv + p] * dout[(pc.off[1] >> 2) + row * D + i];
      }
  }
  dk[(pc.off[3] >> 2) + g] = a;
  dv[(pc.off[4] >> 2) + g] = b;
}
