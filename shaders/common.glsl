// Shared helpers for every compute shader: push-constant header, flat group ids over a 2-D grid,
// exact f16/bf16 bit conversions, packed byte access, work-group reductions, precise sin/cos.
#ifndef QINS_COMMON_GLSL
#define QINS_COMMON_GLSL

#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#ifndef WG
#define WG 256
#endif

// Every shader's push constants start with the byte offset of each binding's tensor inside the
// bound range (the host binds an aligned base; views may start anywhere), then op parameters.
#define PC_HEAD uint off[8]

// Dispatches are 2-D when the group count exceeds the per-dimension limit.
uint flat_group() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }
uint flat_id() { return flat_group() * WG + gl_LocalInvocationID.x; }

// f16 bits -> f32, exact for every input (subnormals, inf, NaN), like qins_f16_to_f32.
float f16_to_f32(uint h) {
  uint sign = (h & 0x8000u) << 16;
  uint e = (h >> 10) & 0x1fu;
  uint m = h & 0x3ffu;
  if (e == 0u) {
    float v = float(m) * 5.9604644775390625e-8; // m * 2^-24, exact
    return sign != 0u ? -v : v;
  }
  if (e == 31u) return uintBitsToFloat(sign | 0x7f800000u | (m << 13));
  return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// f32 -> f16 bits, round to nearest even, done in integers so it matches qins_f32_to_f16 exactly.
uint f32_to_f16(float f) {
  uint x = floatBitsToUint(f);
  uint sign = (x >> 16) & 0x8000u;
  uint ex = (x >> 23) & 0xffu;
  uint man = x & 0x7fffffu;
  if (ex == 0xffu) return sign | 0x7c00u | (man != 0u ? 0x200u : 0u);
  int e = int(ex) - 127 + 15;
  if (e >= 31) return sign | 0x7c00u;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000u;
    uint shift = uint(14 - e);
    uint half_ = man >> shift;
    uint rem = man & ((1u << shift) - 1u);
    uint mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half_ & 1u) != 0u)) half_++;
    return sign | half_;
  }
  uint h = sign | (uint(e) << 10) | (man >> 13);
  uint rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) h++;
  return h;
}

float bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }

uint f32_to_bf16(float f) {
  uint x = floatBitsToUint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return ((x >> 16) | 0x40u) & 0xffffu;
  x += 0x7fffu + ((x >> 16) & 1u);
  return x >> 16;
}

// Accurate sin/cos for large arguments (rope angles reach thousands of radians; the GLSL
// built-ins only promise ~1e-3 absolute error). Three-part reduction by pi/2, then short
// polynomials on [-pi/4, pi/4].
void precise_sincos(float a, out float s, out float c) {
  precise float j = roundEven(a * 0.63661977236758134);
  precise float r = a - j * 1.5703125;
  r = r - j * 4.837512969970703125e-4;
  r = r - j * 7.54978995489188216e-8;
  float r2 = r * r;
  float ps = r + r * r2 * (-1.6666654611e-1 + r2 * (8.3321608736e-3 + r2 * -1.9515295891e-4));
  float pc = 1.0 - 0.5 * r2 + r2 * r2 * (4.166664568298827e-2 + r2 * (-1.388731625493765e-3 + r2 * 2.443315711809948e-5));
  int q = int(j) & 3;
  if (q == 0) { s = ps; c = pc; }
  else if (q == 1) { s = pc; c = -ps; }
  else if (q == 2) { s = -ps; c = -pc; }
  else { s = -pc; c = ps; }
}

#endif
