// Tiled GEMM for larger M: y[m, n0+n] = x[m,:] . w[n,:] (+ bias). Each work group computes a
// BM x BN tile of y from BK-deep slices of x and w staged in shared memory; each invocation
// owns a TM x TN block of outputs. Tile sizes are defines so variants need no copied shaders.
// Quantized weights: each BK x BN weight slice is decoded once per work group while staging
// (qweights.glsl) with the row scale (1/alpha, the int8 step) folded in, so the tile holds the
// dequantized values and the inner loop and epilogue are exactly the float GEMM's. (Applying the
// scale in the epilogue instead kept BN/TN extra values live across the K loop: on an H100 the
// 128-tile variant ran ~10x slower than f32 with it; int8-block32, which had no epilogue scale,
// ran at f32 speed.)
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
#ifdef STORAGE8
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#endif
#ifndef BM
#define BM 64
#endif
#ifndef BN
#define BN 64
#endif
#ifndef BK
#define BK 16
#endif
#ifndef TM
#define TM 4
#endif
#ifndef TN
#define TN 4
#endif
#define WG ((BM / TM) * (BN / TN))
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { PC_HEAD; uint nrows; uint M; uint K; uint N; uint n0; uint has_bias; uint rb; uint nblk; } pc;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer Wb { W_ELEM w[]; };
layout(binding = 2) readonly buffer B { float bias[]; };
layout(binding = 3) buffer Y { float y[]; };
#include "qweights.glsl"

shared float As[BK][BM + 1];
shared float Bs[BK][BN + 1];
#if defined(WT_QUANT) && !defined(WT_INT8B32)
#define FOLD_ROW_SCALE
shared float rs_s[BN]; // row scale of each weight row of this tile
#endif

void main() {
  uint lid = gl_LocalInvocationID.x;
  uint tn = lid % (BN / TN), tm = lid / (BN / TN);
  uint nb = gl_WorkGroupID.x * BN, mb = gl_WorkGroupID.y * BM;
  uint xo = pc.off[0] >> 2;
  wq_init();
#ifdef FOLD_ROW_SCALE
  for (uint i = lid; i < BN; i += WG) rs_s[i] = nb + i < pc.nrows ? wq_row_scale(nb + i) : 0.0;
  barrier();
#endif
  float acc[TM][TN];
  for (uint i = 0; i < TM; i++)
    for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
  for (uint k0 = 0; k0 < pc.K; k0 += BK) {
    // stage the slices; consecutive invocations read consecutive k of one row
    for (uint e = lid; e < BM * BK; e += WG) {
      uint rr = e / BK, kk = e % BK;
      uint m = mb + rr, k = k0 + kk;
      As[kk][rr] = (m < pc.M && k < pc.K) ? x[xo + m * pc.K + k] : 0.0;
    }
    for (uint e = lid; e < BN * BK; e += WG) {
      uint rr = e / BK, kk = e % BK;
      uint n = nb + rr, k = k0 + kk;
#ifdef FOLD_ROW_SCALE
      Bs[kk][rr] = (n < pc.nrows && k < pc.K) ? wq_load(n, k) * rs_s[rr] : 0.0;
#else
      Bs[kk][rr] = (n < pc.nrows && k < pc.K) ? wq_load(n, k) : 0.0;
#endif
    }
    barrier();
    for (uint kk = 0; kk < BK; kk++) {
      float a[TM], b[TN];
      for (uint i = 0; i < TM; i++) a[i] = As[kk][tm + i * (BM / TM)];
      for (uint j = 0; j < TN; j++) b[j] = Bs[kk][tn + j * (BN / TN)];
      for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) acc[i][j] += a[i] * b[j];
    }
    barrier();
  }
  uint yo = pc.off[3] >> 2;
  for (uint i = 0; i < TM; i++) {
    uint m = mb + tm + i * (BM / TM);
    if (m >= pc.M) continue;
    for (uint j = 0; j < TN; j++) {
      uint n = nb + tn + j * (BN / TN);
      if (n >= pc.nrows) continue;
      uint col = pc.n0 + n;
      float b = pc.has_bias != 0u ? bias[(pc.off[2] >> 2) + col] : 0.0;
      y[yo + m * pc.N + col] = acc[i][j] + b; // the row scale is already in the tile
    }
  }
}
