// Causal GQA attention, one work group per (query m, head h, key split s): streams its keys in
// blocks of WG with an online (running max) softmax, so any context length works with fixed
// shared memory. q[M,Hq,D], caches [T,Hkv,D], out[M,Hq,D]; D <= DMAX. With nsplit > 1 (few
// queries, long context: more work groups than heads) each split writes its running max, sum
// and unnormalised output to `part`, and attention_combine.comp merges them.
#version 450
#extension GL_GOOGLE_include_directive : require
#ifndef WG
#define WG 128
#endif
#define DMAX 256
#define DPER (DMAX / WG)
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint M; uint Hq; uint Hkv; uint D; uint pos0; float scale; uint nsplit; uint chunk; } pc;
layout(binding = 0) readonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer K { float k[]; };
layout(binding = 2) readonly buffer V { float v[]; };
layout(binding = 3) buffer O { float o[]; };
layout(binding = 4) buffer Part { float part[]; };

shared float q_s[DMAX];
shared float p_s[WG];

void main() {
  uint gs = flat_group();
  if (gs >= pc.M * pc.Hq * pc.nsplit) return;
  uint g = gs / pc.nsplit, split = gs % pc.nsplit;
  uint lid = gl_LocalInvocationID.x;
  uint m = g / pc.Hq, h = g % pc.Hq;
  uint kvh = h / (pc.Hq / pc.Hkv);
  uint D = pc.D;
  uint qo = (pc.off[0] >> 2) + g * D;
  for (uint i = lid; i < D; i += WG) q_s[i] = q[qo + i];
  barrier();
  uint ko = pc.off[1] >> 2, vo = pc.off[2] >> 2;
  uint stride = pc.Hkv * D;
  uint visible = min(pc.pos0 + m + 1u, (split + 1u) * pc.chunk);
  float run_max = -1e30, run_sum = 0.0;
  float acc[DPER];
  for (uint d = 0; d < DPER; d++) acc[d] = 0.0;
  for (uint j0 = split * pc.chunk; j0 < visible; j0 += WG) {
    uint j = j0 + lid;
#ifdef USE_SUBGROUP
    // scores by subgroups: the lanes of one subgroup split a key's D (coalesced loads) and add up
    // in registers; subgroup g takes keys g, g + #subgroups, ... of the block
    for (uint jj = gl_SubgroupID; jj < WG; jj += gl_NumSubgroups) {
      uint jk = j0 + jj;
      float part_ = 0.0;
      if (jk < visible) {
        uint kb = ko + jk * stride + kvh * D;
        for (uint i = gl_SubgroupInvocationID; i < D; i += gl_SubgroupSize) part_ += q_s[i] * k[kb + i];
      }
      float dot_ = subgroupAdd(part_);
      if (subgroupElect()) p_s[jj] = dot_ * pc.scale;
    }
    barrier();
    float s = j < visible ? p_s[lid] : -1e30;
#else
    float s = -1e30;
    if (j < visible) {
      uint kb = ko + j * stride + kvh * D;
      float dot_ = 0.0;
      for (uint i = 0; i < D; i++) dot_ += q_s[i] * k[kb + i];
      s = dot_ * pc.scale;
    }
#endif
    float bmax = wg_max(s);
    float new_max = max(run_max, bmax);
    float p = j < visible ? exp(s - new_max) : 0.0;
    float corr = exp(run_max - new_max);
    p_s[lid] = p;
    run_sum = run_sum * corr + wg_sum(p); // wg_sum's barriers also publish p_s
    run_max = new_max;
    uint nblk = min(uint(WG), visible - j0);
    for (uint d = 0; d < DPER; d++) {
      uint dd = lid + d * WG;
      if (dd >= D) break;
      float a = acc[d] * corr;
      uint vb = vo + j0 * stride + kvh * D + dd;
      for (uint jj = 0; jj < nblk; jj++) a += p_s[jj] * v[vb + jj * stride];
      acc[d] = a;
    }
    barrier(); // p_s is rewritten by the next block
  }
  if (pc.nsplit == 1u) {
    uint oo = (pc.off[3] >> 2) + g * D;
    for (uint d = 0; d < DPER; d++) {
      uint dd = lid + d * WG;
      if (dd < D) o[oo + dd] = acc[d] / run_sum;
    }
  } else {
    uint po = (pc.off[4] >> 2) + gs * (D + 2u);
    if (lid == 0u) { part[po] = run_max; part[po + 1u] = run_sum; }
    for (uint d = 0; d < DPER; d++) {
      uint dd = lid + d * WG;
      if (dd < D) part[po + 2u + dd] = acc[d];
    }
  }
}
