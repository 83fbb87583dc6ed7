// Weight decode for the matmul shaders, included after the buffers x, w, bias, y are declared.
// wq_load(r, k): element k of local weight row r as the shader multiplies it; wq_row_scale(r):
// the factor applied once to each finished dot product. Float weights: the element and 1.0.
// QINS weights (../shared/QINS.md section 4): the element is D_1 of the code (the 256/64-entry
// table, staged in shared memory by wq_init, or D_1(z) for qins-f32) and the factor 1/alpha of
// the row, so y_o = (1/alpha_o) sum_i LUT[q_oi] x_i. int8-row: q and the row's step.
// int8-block32: q times its block's step (the step changes inside a dot product).
// Push constants used: off[1] (weights), off[4] (scales), off[5] (table), K, rb (bytes per
// weight row), nblk (scales per row).
#ifndef QINS_QWEIGHTS_GLSL
#define QINS_QWEIGHTS_GLSL

#ifdef WT_QUANT
layout(binding = 4) readonly buffer WS { float wscale[]; };
#endif
// LUT_ARITH: compute D_1 of the code (a division) instead of reading the table: measured
// against the shared-memory table (docs/backends.md); not bit-exact where division is not
// correctly rounded.
#if defined(WT_QINS8) || defined(WT_QINS6)
layout(binding = 5) readonly buffer LT { float lut[]; };
#ifdef WT_QINS8
#define LUT_N 256u
#define LUT_BASE 0u
#define LUT_L 255u
#else
#define LUT_N 64u
#define LUT_BASE 256u
#define LUT_L 63u
#endif
shared float lut_s[LUT_N];
#endif

// Every invocation of the work group calls it (it has a barrier) before the first wq_load.
void wq_init() {
#if (defined(WT_QINS8) || defined(WT_QINS6)) && !defined(LUT_ARITH)
  for (uint i = gl_LocalInvocationID.x; i < LUT_N; i += gl_WorkGroupSize.x) lut_s[i] = lut[(pc.off[5] >> 2) + LUT_BASE + i];
  barrier();
#endif
}

#if defined(WT_QINS8) || defined(WT_QINS6)
#ifdef LUT_ARITH
float lut_get(uint q) {
  int d = int(2u * q) - int(LUT_L);
  int ad = abs(d);
  float v = float(int(LUT_L) - ad) / float(ad);
  return d < 0 ? -v : v;
}
#else
float lut_get(uint q) { return lut_s[q]; }
#endif
#endif

#ifdef WT_BYTES
// byte b of the weight binding (b already includes off[1])
#ifdef STORAGE8
uint w_byte(uint b) { return uint(w[b]); }
#else
uint w_byte(uint b) { return (w[b >> 2] >> ((b & 3u) * 8u)) & 0xffu; }
#endif
#endif

float wq_load(uint r, uint k) {
#if defined(WT_QINS8)
  return lut_get(w_byte(pc.off[1] + r * pc.rb + k));
#elif defined(WT_QINS6)
  // code k of the row: bits 6*(k%4) of the 24-bit group k/4; a field spans at most two bytes
  uint bo = (pc.off[1] + r * pc.rb + (k >> 2) * 3u) * 8u + (k & 3u) * 6u;
#ifdef STORAGE8
  uint B = bo >> 3, s = bo & 7u;
  uint v = uint(w[B]);
  if (s > 2u) v |= uint(w[B + 1u]) << 8;
  return lut_get((v >> s) & 63u);
#else
  uint wi = bo >> 5, sh = bo & 31u;
  uint v = w[wi] >> sh;
  if (sh > 26u) v |= w[wi + 1u] << (32u - sh);
  return lut_get(v & 63u);
#endif
#elif defined(WT_INT8) || defined(WT_INT8B32)
  int q = (int(w_byte(pc.off[1] + r * pc.rb + k)) << 24) >> 24;
#ifdef WT_INT8B32
  return float(q) * wscale[(pc.off[4] >> 2) + r * pc.nblk + (k >> 5)];
#else
  return float(q);
#endif
#elif defined(WT_QINSF32)
  // D_1(z) = sign(z) (1 - |z|) / max(|z|, 1e-12); sign(-0) = +1
  float z = w[(pc.off[1] >> 2) + r * pc.K + k];
  float az = abs(z);
  float mag = (1.0 - az) / max(az, 1e-12);
  return z < 0.0 ? -mag : mag;
#else
  return LOAD_W(w, pc.off[1], r * pc.K + k);
#endif
}

float wq_row_scale(uint r) {
#if defined(WT_QINS8) || defined(WT_QINS6) || defined(WT_QINSF32)
  return 1.0 / wscale[(pc.off[4] >> 2) + r];
#elif defined(WT_INT8)
  return wscale[(pc.off[4] >> 2) + r];
#else
  return 1.0;
#endif
}

#endif
