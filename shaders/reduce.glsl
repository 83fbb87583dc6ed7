// Work-group reductions through shared memory (any subgroup size; WG a power of two).
// Every invocation of the group must call them (they contain barriers); all get the result.
#ifndef QINS_REDUCE_GLSL
#define QINS_REDUCE_GLSL

shared float red_f[WG];

float wg_sum(float v) {
  uint lid = gl_LocalInvocationID.x;
  red_f[lid] = v;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) red_f[lid] += red_f[lid + s];
    barrier();
  }
  float r = red_f[0];
  barrier();
  return r;
}

float wg_max(float v) {
  uint lid = gl_LocalInvocationID.x;
  red_f[lid] = v;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) red_f[lid] = max(red_f[lid], red_f[lid + s]);
    barrier();
  }
  float r = red_f[0];
  barrier();
  return r;
}

#endif
