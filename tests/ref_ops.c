/* Double-precision reference ops for tests/test_ops.c, written from the op definitions alone. */
#include "tests/ref_ops.h"

#include "core/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ref_load(const void *base, qins_dtype dt, int64_t i) {
  if (dt == QINS_DT_F32) return ((const float *)base)[i];
  uint16_t h = ((const uint16_t *)base)[i];
  int sign = h >> 15;
  double mag;
  if (dt == QINS_DT_F16) { /* 1 sign, 5 exponent (bias 15), 10 mantissa bits */
    int e = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (e == 0x1f) mag = man ? NAN : INFINITY;
    else if (e == 0) mag = ldexp(man / 1024.0, -14);
    else mag = ldexp(1.0 + man / 1024.0, e - 15);
  } else { /* bf16: 1 sign, 8 exponent (bias 127), 7 mantissa bits */
    int e = (h >> 7) & 0xff, man = h & 0x7f;
    if (e == 0xff) mag = man ? NAN : INFINITY;
    else if (e == 0) mag = ldexp(man / 128.0, -126);
    else mag = ldexp(1.0 + man / 128.0, e - 127);
  }
  return sign ? -mag : mag;
}

/* Round |v| to `mbits` mantissa bits with exponent floor emin (subnormals below it), ties to even. */
static double round_to(double v, int mbits, int emin, double maxval) {
  if (v == 0.0 || !isfinite(v)) return v;
  double a = fabs(v);
  int ex;
  frexp(a, &ex); /* a = f * 2^ex, f in [0.5, 1): the leading bit is 2^(ex-1) */
  int e = ex - 1 < emin ? emin : ex - 1;
  double quantum = ldexp(1.0, e - mbits);
  double r = nearbyint(a / quantum) * quantum; /* default rounding mode: nearest, ties to even */
  if (r > maxval) r = INFINITY;
  return v < 0 ? -r : r;
}

double ref_round_f16(double v) { return round_to(v, 10, -14, 65504.0); }
double ref_round_bf16(double v) { return round_to(v, 7, -126, ldexp(2.0 - ldexp(1.0, -7), 127)); }

void ref_matmul(const float *x, const void *w, qins_dtype wdt, const float *bias, float *y, int64_t m, int64_t n,
                int64_t k) {
  for (int64_t r = 0; r < m; r++)
    for (int64_t o = 0; o < n; o++) {
      double acc = bias ? bias[o] : 0.0;
      for (int64_t i = 0; i < k; i++) acc += (double)x[r * k + i] * ref_load(w, wdt, o * k + i);
      y[r * n + o] = (float)acc;
    }
}

void ref_add(const float *a, const float *b, float *y, int64_t n, int64_t nb) {
  for (int64_t i = 0; i < n; i++) y[i] = (float)((double)a[i] + (double)b[i % nb]);
}

void ref_mul(const float *a, const float *b, float *y, int64_t n, int64_t nb) {
  for (int64_t i = 0; i < n; i++) y[i] = (float)((double)a[i] * (double)b[i % nb]);
}

void ref_rmsnorm(const float *x, const float *w, double eps, float *y, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
    double inv = 1.0 / sqrt(ss / (double)d + eps);
    for (int64_t i = 0; i < d; i++) y[r * d + i] = (float)(xr[i] * inv * w[i]);
  }
}

void ref_layernorm(const float *x, const float *w, const float *b, double eps, float *y, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * d;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; i++) mean += xr[i];
    mean /= (double)d;
    for (int64_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
    var /= (double)d;
    double inv = 1.0 / sqrt(var + eps);
    for (int64_t i = 0; i < d; i++) y[r * d + i] = (float)((xr[i] - mean) * inv * w[i] + (b ? b[i] : 0.0));
  }
}

void ref_rope(const float *x, const int32_t *pos, const float *inv_freq, int rot_dim, double attn_factor, int mode,
              float *y, int64_t m, int64_t h, int64_t d) {
  int half = rot_dim / 2;
  for (int64_t t = 0; t < m; t++)
    for (int64_t hh = 0; hh < h; hh++) {
      const float *xr = x + (t * h + hh) * d;
      float *yr = y + (t * h + hh) * d;
      for (int64_t i = rot_dim; i < d; i++) yr[i] = xr[i];
      for (int i = 0; i < half; i++) {
        double angle = (float)((float)pos[t] * inv_freq[i]);
        double c = cos(angle) * attn_factor, s = sin(angle) * attn_factor;
        int i0 = mode == QINS_ROPE_INTERLEAVED ? 2 * i : i;
        int i1 = mode == QINS_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        double a = xr[i0], b = xr[i1];
        yr[i0] = (float)(a * c - b * s);
        yr[i1] = (float)(a * s + b * c);
      }
    }
}

void ref_softmax(const float *x, float *y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n;
    double mx = xr[0], sum = 0;
    for (int64_t i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
    for (int64_t i = 0; i < n; i++) sum += exp(xr[i] - mx);
    for (int64_t i = 0; i < n; i++) y[r * n + i] = (float)(exp(xr[i] - mx) / sum);
  }
}

static double silu_d(double v) { return v / (1.0 + exp(-v)); }

void ref_silu(const float *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = (float)silu_d(x[i]);
}

void ref_gelu_tanh(const float *x, float *y, int64_t n) {
  double c = sqrt(2.0 / M_PI);
  for (int64_t i = 0; i < n; i++) {
    double v = x[i];
    /* 0.5 (1 + tanh(u)) written as 1 / (1 + exp(-2u)): in the tanh form 1 + tanh(u) cancels for
     * v < -8 even in double, and the reference itself was wrong there by up to 10% */
    y[i] = (float)(v / (1.0 + exp(-2.0 * c * (v + 0.044715 * v * v * v))));
  }
}

void ref_silu_mul(const float *gate, const float *up, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = (float)(silu_d(gate[i]) * up[i]);
}

void ref_embed(const void *table, qins_dtype dt, const int32_t *ids, float *y, int64_t m, int64_t d) {
  for (int64_t t = 0; t < m; t++)
    for (int64_t i = 0; i < d; i++) y[t * d + i] = (float)ref_load(table, dt, (int64_t)ids[t] * d + i);
}

void ref_attention(const float *q, const float *k, const float *v, int64_t pos0, double scale, float *out, int64_t m,
                   int64_t hq, int64_t hkv, int64_t d) {
  double *s = malloc((size_t)(pos0 + m) * sizeof *s);
  double *acc = malloc((size_t)d * sizeof *acc);
  for (int64_t t = 0; t < m; t++)
    for (int64_t h = 0; h < hq; h++) {
      int64_t kvh = h / (hq / hkv), visible = pos0 + t + 1;
      const float *qr = q + (t * hq + h) * d;
      double mx = -INFINITY, sum = 0;
      for (int64_t p = 0; p < visible; p++) {
        double dot = 0;
        for (int64_t i = 0; i < d; i++) dot += (double)qr[i] * k[(p * hkv + kvh) * d + i];
        s[p] = dot * scale;
        mx = s[p] > mx ? s[p] : mx;
      }
      for (int64_t p = 0; p < visible; p++) sum += (s[p] = exp(s[p] - mx));
      for (int64_t i = 0; i < d; i++) acc[i] = 0;
      for (int64_t p = 0; p < visible; p++)
        for (int64_t i = 0; i < d; i++) acc[i] += s[p] / sum * v[(p * hkv + kvh) * d + i];
      for (int64_t i = 0; i < d; i++) out[(t * hq + h) * d + i] = (float)acc[i];
    }
  free(acc);
  free(s);
}

void ref_argmax(const float *x, int32_t *idx, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
      if (x[r * n + i] > x[r * n + best]) best = i; /* strict: ties keep the lowest index */
    idx[r] = (int32_t)best;
  }
}

void ref_topk(const float *x, int k, float *values, int32_t *idx, int64_t rows, int64_t n) {
  char *taken = malloc((size_t)n);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n;
    memset(taken, 0, (size_t)n);
    /* k rounds of selection: plainly correct, including the tie order */
    for (int j = 0; j < k; j++) {
      int64_t best = -1;
      for (int64_t i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || xr[i] > xr[best])) best = i;
      taken[best] = 1;
      values[r * k + j] = xr[best];
      idx[r * k + j] = (int32_t)best;
    }
  }
  free(taken);
}
