// Work-group reductions (WG a power of two). Every invocation of the group must call them
// (they contain barriers); all get the same result. With USE_SUBGROUP (the device has subgroup
// arithmetic in compute) each subgroup reduces in registers and one shared-memory step combines
// the subgroups: 2 barriers instead of 2 log2(WG), whatever the subgroup size (8 on lavapipe,
// 32 on NVIDIA, 64 on some AMD). Without it, a shared-memory tree.
#ifndef QINS_REDUCE_GLSL
#define QINS_REDUCE_GLSL

shared float red_f[WG];

#ifdef USE_SUBGROUP
float wg_sum(float v) {
  v = subgroupAdd(v);
  if (subgroupElect()) red_f[gl_SubgroupID] = v;
  barrier();
  float r = 0.0;
  for (uint i = 0; i < gl_NumSubgroups; i++) r += red_f[i];
  barrier();
  return r;
}

float wg_max(float v) {
  v = subgroupMax(v);
  if (subgroupElect()) red_f[gl_SubgroupID] = v;
  barrier();
  float r = red_f[0];
  for (uint i = 1; i < gl_NumSubgroups; i++) r = max(r, red_f[i]);
  barrier();
  return r;
}
#else
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

#endif
