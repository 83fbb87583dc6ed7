// y[m, n0+r] = x[m,:] . w[r,:] (+ bias) for a few input rows (M <= MAXM): one work group per
// output row streams that weight row once with coalesced loads and reduces in shared memory.
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
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
  for (uint m = 0; m < MAXM; m++) acc[m] = 0.0;
  uint wrow = r * pc.K;
  for (uint k = lid; k < pc.K; k += WG) {
    float wv = LOAD_W(w, pc.off[1], wrow + k);
    for (uint m = 0; m < pc.M; m++) acc[m] += x[xo + m * pc.K + k] * wv;
  }
  for (uint m = 0; m < pc.M; m++) red[m][lid] = acc[m];
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s)
      for (uint m = 0; m < pc.M; m++) red[m][lid] += red[m][lid + s];
    barrier();
  }
  if (lid < pc.M) {
    uint col = pc.n0 + r;
    float b = pc.has_bias != 0u ? bias[(pc.off[2] >> 2) + col] : 0.0;
    y[(pc.off[3] >> 2) + lid * pc.N + col] = red[lid][0] + b;
  }
}
