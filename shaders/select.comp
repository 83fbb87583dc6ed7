// argmax (k = 1) and top-k per row, one work group per row. Pass p finds the largest element
// that sorts after pass p-1's pick in the order (value descending, index ascending), so k
// passes give the exact sorted top-k with ties to the lower index. Writes values only when
// WRITE_VALUES is defined (topk).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint rows; uint N; uint k; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) buffer Vb { float vals[]; };
layout(binding = 2) buffer Ib { int idx[]; };

shared float sv[WG];
shared uint si[WG];

bool better(float v, uint i, float bv, uint bi) { return v > bv || (v == bv && i < bi); }

void main() {
  uint r = flat_group();
  if (r >= pc.rows) return;
  uint lid = gl_LocalInvocationID.x;
  uint xo = (pc.off[0] >> 2) + r * pc.N;
  const uint NONE = 0xffffffffu;
  float pv = 0.0;
  uint pi = NONE;
  for (uint p = 0; p < pc.k; p++) {
    float bv = 0.0;
    uint bi = NONE;
    for (uint i = lid; i < pc.N; i += WG) {
      float v = x[xo + i];
      // eligible: strictly after the previous pick in the sort order
      bool ok = pi == NONE || v < pv || (v == pv && i > pi);
      if (ok && (bi == NONE || v > bv)) { bv = v; bi = i; }
    }
    sv[lid] = bv;
    si[lid] = bi;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
      if (lid < s) {
        uint oi = si[lid + s];
        if (oi != NONE && (si[lid] == NONE || better(sv[lid + s], oi, sv[lid], si[lid]))) {
          sv[lid] = sv[lid + s];
          si[lid] = oi;
        }
      }
      barrier();
    }
    pv = sv[0];
    pi = si[0];
    barrier();
    if (lid == 0u) {
#ifdef WRITE_VALUES
      vals[(pc.off[1] >> 2) + r * pc.k + p] = pv;
#endif
      idx[(pc.off[2] >> 2) + r * pc.k + p] = pi == NONE ? 0 : int(pi);
    }
  }
}
