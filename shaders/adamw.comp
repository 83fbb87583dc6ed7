// One AdamW step per element (qins_op_adamw_step): the f32 expressions of core/train/optim.c in the
// same order; `precise` keeps the compiler from fusing them into fma, so only sqrt and the
// division (GPU precision) can differ from the cpu.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = WG) in;
layout(push_constant) uniform PC {
  PC_HEAD;
  uint n;
  float step_size, bc2_sqrt, decay;
  uint do_decay;
  float w1, w2, beta2, eps, gmul;
} pc;
layout(binding = 0) buffer W { float w[]; };
layout(binding = 1) readonly buffer G { float gr[]; };
layout(binding = 2) buffer M { float mo[]; };
layout(binding = 3) buffer V { float vo[]; };

void main() {
  uint i = flat_id();
  if (i >= pc.n) return;
  uint iw = (pc.off[0] >> 2) + i, ig = (pc.off[1] >> 2) + i, im = (pc.off[2] >> 2) + i, iv = (pc.off[3] >> 2) + i;
  precise float g = gr[ig] * pc.gmul;
  precise float x = w[iw];
  if (pc.do_decay != 0u) x = x * pc.decay;
  precise float m0 = mo[im];
  precise float m = m0 + pc.w1 * (g - m0);
  precise float gg = pc.w2 * g;
  precise float v = vo[iv] * pc.beta2 + gg * g;
  precise float denom = sqrt(v) / pc.bc2_sqrt + pc.eps;
  precise float upd = pc.step_size * (m / denom);
  mo[im] = m;
  vo[iv] = v;
  w[iw] = x - upd;
}
