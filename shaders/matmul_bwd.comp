// Matmul backward as a tiled product C[i,j] (+)= sum_p A[i,p] B[p,j]:
//   dx[m,k] = sum_n dy[m,n] w[n,k]    A = dy (row stride N), B = w (WT_* dtype), overwrite
//   dw[n,k] += sum_m dy[m,n] x[m,k]   A = dy transposed (element (n,m) at m*N + n), B = x, accumulate
// A is read through strides (a_si, a_sp); B and C are row-major with J columns.
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
#define BM 64
#define BN 64
#define BK 16
#define TM 4
#define TN 4
#define WG ((BM / TM) * (BN / TN))
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint I; uint J; uint P; uint a_si; uint a_sp; uint accumulate; } pc;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer Bw { W_ELEM w[]; };
layout(binding = 2) buffer C { float c[]; };

shared float As[BK][BM + 1];
shared float Bs[BK][BN + 1];

void main() {
  uint lid = gl_LocalInvocationID.x;
  uint tj = lid % (BN / TN), ti = lid / (BN / TN);
  uint jb = gl_WorkGroupID.x * BN, ib = gl_WorkGroupID.y * BM;
  uint ao = pc.off[0] >> 2;
  float acc[TM][TN];
  for (uint i = 0; i < TM; i++)
    for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
  for (uint p0 = 0; p0 < pc.P; p0 += BK) {
    for (uint e = lid; e < BM * BK; e += WG) {
      uint ii = e % BM, pp = e / BM; // consecutive i: coalesced for the transposed dy of dw
      uint i = ib + ii, p = p0 + pp;
      As[pp][ii] = (i < pc.I && p < pc.P) ? a[ao + i * pc.a_si + p * pc.a_sp] : 0.0;
    }
    for (uint e = lid; e < BN * BK; e += WG) {
      uint jj = e % BN, pp = e / BN; // consecutive j: coalesced rows of B
      uint j = jb + jj, p = p0 + pp;
      Bs[pp][jj] = (j < pc.J && p < pc.P) ? LOAD_W(w, pc.off[1], p * pc.J + j) : 0.0;
    }
    barrier();
    for (uint pp = 0; pp < BK; pp++) {
      float av[TM], bv[TN];
      for (uint i = 0; i < TM; i++) av[i] = As[pp][ti + i * (BM / TM)];
      for (uint j = 0; j < TN; j++) bv[j] = Bs[pp][tj + j * (BN / TN)];
      for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) acc[i][j] += av[i] * bv[j];
    }
    barrier();
  }
  uint co = pc.off[2] >> 2;
  for (uint i = 0; i < TM; i++) {
    uint ii = ib + ti + i * (BM / TM);
    if (ii >= pc.I) continue;
    for (uint j = 0; j < TN; j++) {
      uint jj = jb + tj + j * (BN / TN);
      if (jj >= pc.J) continue;
      uint idx = co + ii * pc.J + jj;
      c[idx] = pc.accumulate != 0u ? c[idx] + acc[i][j] : acc[i][j];
    }
  }
}
