/* An independent double-precision reference for the non-codec ops of core/backend.h, on host arrays.
 *
 * It shares no code with any backend: half-precision values are decoded and rounded here from their
 * definitions, every sum is a plain double loop. Results are rounded to f32 only when stored. */
#ifndef QINS_TESTS_REF_OPS_H
#define QINS_TESTS_REF_OPS_H

#include <stdint.h>

#include "core/tensor.h"

/* Decode element i of an f32/f16/bf16 array. */
double ref_load(const void *base, qins_dtype dt, int64_t i);
/* The value an f32 rounds to in f16 / bf16 (round to nearest even; overflow to +-inf). */
double ref_round_f16(double v);
double ref_round_bf16(double v);

void ref_matmul(const float *x, const void *w, qins_dtype wdt, const float *bias, float *y, int64_t m, int64_t n,
                int64_t k);
/* b has n elements or nb (one row, broadcast): y[i] = a[i] op b[i % nb]. */
void ref_add(const float *a, const float *b, float *y, int64_t n, int64_t nb);
void ref_mul(const float *a, const float *b, float *y, int64_t n, int64_t nb);
void ref_rmsnorm(const float *x, const float *w, double eps, float *y, int64_t rows, int64_t d);
void ref_layernorm(const float *x, const float *w, const float *b, double eps, float *y, int64_t rows, int64_t d);
/* mode: QINS_ROPE_INTERLEAVED or QINS_ROPE_HALF (see core/backend.h). The angle is pos * inv_freq
 * rounded to f32, as every model implementation computes it (llama2.c, HF); cos/sin in double. */
void ref_rope(const float *x, const int32_t *pos, const float *inv_freq, int rot_dim, double attn_factor, int mode,
              float *y, int64_t m, int64_t h, int64_t d);
void ref_softmax(const float *x, float *y, int64_t rows, int64_t n);
void ref_silu(const float *x, float *y, int64_t n);
void ref_gelu_tanh(const float *x, float *y, int64_t n);
void ref_silu_mul(const float *gate, const float *up, float *y, int64_t n);
void ref_embed(const void *table, qins_dtype dt, const int32_t *ids, float *y, int64_t m, int64_t d);
/* q[M,Hq,D], k/v [T,Hkv,D]; query m sees positions 0..pos0+m. */
void ref_attention(const float *q, const float *k, const float *v, int64_t pos0, double scale, float *out, int64_t m,
                   int64_t hq, int64_t hkv, int64_t d);
void ref_argmax(const float *x, int32_t *idx, int64_t rows, int64_t n);
void ref_topk(const float *x, int k, float *values, int32_t *idx, int64_t rows, int64_t n);

#endif
