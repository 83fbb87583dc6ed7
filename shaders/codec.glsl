// QINS and int8 encoders shared by the codec shaders (../shared/QINS.md sections 2-3).
#ifndef QINS_CODEC_GLSL
#define QINS_CODEC_GLSL

// z = s / (1 + alpha |x|) with sign(0) = sign(-0) = +1; NaN encodes as x = 0. |z| is kept
// >= 1e-12 (where D clamps anyway) so that huge |x| and +-Inf keep their sign, as on the cpu.
float qins_z(float xv, float alpha) {
  if (isnan(xv)) return 1.0;
  precise float m = 1.0 / (1.0 + alpha * abs(xv));
  if (isinf(xv) || !(m >= 1e-12)) m = 1e-12; // some devices' 1/inf is not 0
  return xv < 0.0 ? -m : m;
}

// Code for levels L = 255 (qins8) or 63 (qins6): q = clamp(rint((z + 1) * L/2), 0, L).
// Huge |x| gives z ~ -0 or +0, where the rounding alone could land on the wrong sign's side:
// the code is kept on the side of x's sign, so +-Inf saturate to the largest magnitude code.
uint qins_code(float xv, float alpha, uint L) {
  if (isnan(xv)) return L;
  float z = qins_z(xv, alpha);
  precise float t = (z + 1.0) * (float(L) * 0.5);
  uint q = uint(clamp(roundEven(t), 0.0, float(L)));
  uint mid = (L + 1u) / 2u;
  return xv < 0.0 ? min(q, mid - 1u) : max(q, mid);
}

// Symmetric int8 with step (absmax/127): NaN -> 0, +-Inf -> +-127, step 0 -> 0.
int int8_code(float xv, float step_) {
  if (isnan(xv)) return 0;
  if (isinf(xv)) return xv < 0.0 ? -127 : 127;
  if (step_ == 0.0) return 0;
  return int(clamp(roundEven(xv / step_), -127.0, 127.0));
}

#endif
