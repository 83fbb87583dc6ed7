// Attention backward, pass 1: one work group per (query t, head h). Recomputes the softmax row
// P over the visible keys, then dP_p = dout . v_p, dS_p = P_p (dP_p - sum_p' P_p' dP_p') and
// dq = scale sum_p dS_p k_p. P and dS go to scratch rows of tv = pos0 + M (zero past the causal
// limit) for pass 2 (attn_bwd_kv.comp).
#version 450
#extension GL_GOOGLE_include_directive : require
#ifndef WG
#define WG 128
#endif
#define DMAX 256
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint M; uint Hq; uint Hkv; uint D; uint pos0; float scale; uint tv; } pc;
layout(binding = 0) readonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer K { float k[]; };
layout(binding = 2) readonly buffer V { float v[]; };
layout(binding = 3) readonly buffer G { float dout[]; };
layout(binding = 4) buffer DQ { float dq[]; };
layout(binding = 5) coherent buffer S { float scr[]; }; // P rows, then dS rows

shared float q_s[DMAX];
shared float g_s[DMAX];

void main() {
  uint row = flat_group();
  if (row >= pc.M * pc.Hq) return;
  uint lid = gl_LocalInvocationID.x;
  uint t = row / pc.Hq, h = row % pc.Hq, kvh = h / (pc.Hq / pc.Hkv);
  uint D = pc.D, stride = pc.Hkv * D;
  uint ko = (pc.off[1] >> 2) + kvh * D, vo = (pc.off[2] >> 2) + kvh * D;
  for (uint i = lid; i < D; i += WG) {
    q_s[i] = q[(pc.off[0] >> 2) + row * D + i];
    g_s[i] = dout[(pc.off[3] >> 2) + row * D + i];
  }
  barrier();
  uint visible = pc.pos0 + t + 1u;
  uint po = (pc.off[5] >> 2) + row * pc.tv, so = po + pc.M * pc.Hq * pc.tv;
  float mx = -3.4028235e38;
  for (uint p = lid; p < visible; p += WG) {
    float s = 0.0;
    for (uint i = 0; i < D; i++) s += q_s[i] * k[ko + p * stride + i];
    s *= pc.scale;
    scr[po + p] = s;
    mx = max(mx, s);
  }
  mx = wg_max(mx);
  float sum = 0.0;
  for (uint p = lid; p < visible; p += WG) {
    float e = exp(scr[po + p] - mx);
    scr[po + p] = e;
    sum += e;
  }
  sum = wg_sum(sum);
  float dsum = 0.0;
  for (uint p = lid; p < visible; p += WG) {
    float pp = scr[po + p] / sum;
    scr[po + p] = pp;
    float dp = 0.0;
    for (uint i = 0; i < D; i++) dp += g_s[i] * v[vo + p * stride + i];
    scr[so + p] = dp;
    dsum += pp * dp;
  }
  dsum = wg_sum(dsum);
  for (uint p = lid; p < visible; p += WG) scr[so + p] = scr[po + p] * (scr[so + p] - dsum);
  for (uint p = visible + lid; p < pc.tv; p += WG) { scr[po + p] = 0.0; scr[so + p] = 0.0; }
  memoryBarrierBuffer();
  barrier(); // dS of every key, written by other invocations, is read below
  for (uint i = lid; i < D; i += WG) {
    float a = 0.0;
    for (uint p = 0; p < visible; p++) a += scr[so + p] * k[ko + p * stride + i];
    dq[(pc.off[4] >> 2) + row * D + i] = a * pc.scale;
  }
}
