// y[m, n0+r] = x[m,:] . w[r,:] (+ bias) for a few input rows (M <= MAXM): one work group per
// output row streams that weight row once with coalesced loads and reduces in shared memory.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
#ifndef WG
#define WG 64
#endif
#include "common.glsl"
#include "weights.glsl"
#define MAXM 8
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint nrows; uint M; uint K; uint N; uint n0; uint has_bias; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer Wb { W_ELEM w[]; };
layout(binding = 2) readonly buffer B { float bias[]; };
layout(binding = 3) buffer Y { float y[]; };


shared float red[MAXM][WG];

void main() {
  uint r = flat_group();
  if (r >= pc.nrows) return;
  uint lid = gl_LocalInvocationID.x;
  uint xo = pc.off[0] >> 2;
  float acc[MAXM];
  [[unroll]] for (uint m = 0; m < MAXM; m++) acc[m] = 0.0;
  uint wrow = r * pc.K;
  // constant trip counts keep acc[] in registers (a dynamic index would spill it); four
  // independent weight loads per step keep more memory requests in flight
  uint k = lid;
  for (; k + 3u * WG < pc.K; k += 4u * WG) {
    float w0 = LOAD_W(w, pc.off[1], wrow + k), w1 = LOAD_W(w, pc.off[1], wrow + k + WG);
    float w2 = LOAD_W(w, pc.off[1], wrow + k + 2u * WG), w3 = LOAD_W(w, pc.off[1], wrow + k + 3u * WG);
    [[unroll]] for (uint m = 0; m < MAXM; m++)
      if (m < pc.M) {
        uint xb = xo + m * pc.K + k;
        acc[m] += x[xb] * w0 + x[xb + WG] * w1 + x[xb + 2u * WG] * w2 + x[xb + 3u * WG] * w3;
      }
  }
  for (; k < pc.K; k += WG) {
    float wv = LOAD_W(w, pc.off[1], wrow + k);
    [[unroll]] for (uint m = 0; m < MAXM; m++)
      if (m < pc.M) acc[m] += x[xo + m * pc.K + k] * wv;
  }
#ifdef USE_SUBGROUP
  // registers within each subgroup, then one shared-memory step across subgroups
  [[unroll]] for (uint m = 0; m < MAXM; m++) {
    float s = subgroupAdd(acc[m]);
    if (m < pc.M && subgroupElect()) red[m][gl_SubgroupID] = s;
  }
  barrier();
  if (lid < pc.M) {
    float t = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++) t += red[lid][i];
    red[lid][0] = t;
  }
#else
  [[unroll]] for (uint m = 0; m < MAXM; m++) red[m][lid] = acc[m];
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s)
      for (uint m = 0; m < pc.M; m++) red[m][lid] += red[m][lid + s];
    barrier();
  }
#endif
  if (lid < pc.M) {
    uint col = pc.n0 + r;
    float b = pc.has_bias != 0u ? bias[(pc.off[2] >> 2) + col] : 0.0;
    y[(pc.off[3] >> 2) + lid * pc.N + col] = red[lid][0] + b;
  }
}
