// y[m,:] = table[ids[m],:] for ids inside this dispatch's row range [r0, r1) of the table (a
// table bigger than one binding is split into row ranges, one dispatch each). Ids outside
// [0, V) produce zeros (written by the dispatch that holds the last range).
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint M; uint D; uint r0; uint r1; uint V; } pc;
layout(binding = 0) readonly buffer T { W_ELEM w[]; };
layout(binding = 1) readonly buffer I { int ids[]; };
layout(binding = 2) buffer Y { float y[]; };

void main() {
  uint g = flat_id();
  if (g >= pc.M * pc.D) return;
  uint m = g / pc.D, i = g % pc.D;
  int id = ids[(pc.off[1] >> 2) + m];
  uint yo = (pc.off[2] >> 2) + g;
  if (id >= int(pc.r0) && id < int(pc.r1))
    y[yo] = LOAD_W(w, pc.off[0], (uint(id) - pc.r0) * pc.D + i);
  else if ((id < 0 || id >= int(pc.V)) && pc.r1 == pc.V)
    y[yo] = 0.0;
}
