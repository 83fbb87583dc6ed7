// Embedding backward: dtable[ids[m], :] += dy[m, :], one column per invocation walking the ids in
// order (repeated ids sum without atomics, deterministically). A table bigger than one binding
// is split into row ranges [r0, r1), one dispatch each; ids outside [0, V) are skipped.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint M; uint D; uint r0; uint r1; } pc;
layout(binding = 0) readonly buffer I { int ids[]; };
layout(binding = 1) readonly buffer G { float dy[]; };
layout(binding = 2) buffer T { float dt[]; };

void main() {
  uint c = flat_id();
  if (c >= pc.D) return;
  for (uint m = 0; m < pc.M; m++) {
    int id = ids[(pc.off[0] >> 2) + m];
    if (id < int(pc.r0) || id >= int(pc.r1)) continue;
    dt[(pc.off[2] >> 2) + (uint(id) - pc.r0) * pc.D + c] += dy[(pc.off[1] >> 2) + m * pc.D + c];
  }
}
