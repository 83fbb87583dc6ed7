// Fused softmax cross-entropy, one work group per row: loss = logsumexp(l) - l[t];
// dlogits = scale (softmax(l) - onehot(t)) when wanted (may alias logits); rows with t < 0 give 0.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint V; float scale; uint want_d; } pc;
layout(binding = 0) readonly buffer L { float l[]; };
layout(binding = 1) readonly buffer T { int tg[]; };
layout(binding = 2) buffer LS { float loss[]; };
layout(binding = 3) buffer D { float dl[]; };

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint lo = (pc.off[0] >> 2) + r * pc.V, dlo = (pc.off[3] >> 2) + r * pc.V;
  int t = tg[(pc.off[1] >> 2) + r];
  if (t < 0) {
    if (lid == 0u) loss[(pc.off[2] >> 2) + r] = 0.0;
    if (pc.want_d != 0u)
      for (uint i = lid; i < pc.V; i += WG) dl[dlo + i] = 0.0;
    return;
  }
  float m = -3.4028235e38;
  for (uint i = lid; i < pc.V; i += WG) m = max(m, l[lo + i]);
  m = wg_max(m);
  float s = 0.0;
  for (uint i = lid; i < pc.V; i += WG) s += exp(l[lo + i] - m);
  float lse = m + log(wg_sum(s));
  float lt = l[lo + uint(t)];
  barrier(); // every invocation has read l[t] before dlogits (which may alias) is written
  if (lid == 0u) loss[(pc.off[2] >> 2) + r] = lse - lt;
  if (pc.want_d != 0u)
    for (uint i = lid; i < pc.V; i += WG) dl[dlo + i] = pc.scale * (exp(l[lo + i] - lse) - (i == uint(t) ? 1.0 : 0.0));
}
