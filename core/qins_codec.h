/* The QINS codec's scalar reference (../shared/QINS.md sections 1-3): the map, the 8/6-bit codes,
 * their decode tables, qins6 packing, int8 baselines and alpha calibration.
 *
 * Every backend must reproduce these functions: the cpu backend calls them, the Vulkan shaders
 * follow them operation by operation, and the tests compare both against them. All arithmetic
 * that produces stored values is float32 with the operations in the order written in
 * qins_codec.c (no fused multiply-add); statistics for calibration are accumulated in double.
 *
 * NaN/Inf policy (docs/codec.md): NaN encodes as x = 0 (QINS code 255 / 63, z = +1, int8 q = 0);
 * +-Inf saturate to the largest-magnitude code of that sign (QINS 128/127, qins6 32/31, qins-f32
 * z = +-1e-12, int8 +-127). Scales (absmax, std) are taken over the finite values of a row. */
#ifndef QINS_CODEC_H
#define QINS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/tensor.h"

/* Smallest |z| the map produces or decodes: E clamps to it (keeping the sign, so huge and
 * infinite x keep theirs), D clamps to it as QINS.md says. */
#define QINS_CODEC_ZMIN 1e-12f

/* ---- the map ---- */
/* z = E_alpha(x) = s / (1 + alpha|x|), s = sign(x) with sign(+-0) = +1; |z| >= 1e-12; NaN -> +1. */
float qins_codec_E(float x, float alpha);
/* x = D_alpha(z) = sign(z) (1 - |z|) / (alpha |z|) with |z| clamped to >= 1e-12; sign(+-0) = +1. */
float qins_codec_D(float z, float alpha);

/* ---- codes ---- */
/* q = clamp(rint((z + 1) * 127.5), 0, 255) in float (round half to even). The sign of z is kept:
 * z < 0 (or -0) never gives a code above 127 and z >= +0 never one below 128 (exact arithmetic
 * never does; float rounding of z + 1 would for |z| < 2^-25). NaN -> 255. */
int qins_codec_code8(float z);
/* The same with 31.5 and 63: z < 0 -> at most 31, z >= 0 -> at least 32. NaN -> 63. */
int qins_codec_code6(float z);
/* D_1 of every code: d = 2q - 255, x = sign(d) (255 - |d|) / |d| (float division of the two
 * integers). A value decodes as lut[q] * (1.0f / alpha). The tables are built once. */
const float *qins_codec_lut8(void);
const float *qins_codec_lut6(void); /* d = 2q - 63, 63 in place of 255 */
/* Code of x straight from x: code8(E(x, alpha)). */
int qins_codec_x_to_code8(float x, float alpha);
int qins_codec_x_to_code6(float x, float alpha);

/* ---- qins6 packing ---- */
/* n codes (0..63) into ceil(n/4)*3 bytes: group g holds c0 | c1<<6 | c2<<12 | c3<<18 little-endian;
 * a short last group is padded with code 63 (x = 0). */
void qins_codec_pack6(const uint8_t *codes, int64_t n, uint8_t *out);
void qins_codec_unpack6(const uint8_t *packed, int64_t n, uint8_t *codes);

/* ---- rows in a storage format ---- */
/* Encode one row of n floats with alpha into qins-f32 (float z), qins8 (bytes) or qins6
 * (qins_format_row_bytes(QINS6, n) packed bytes). */
void qins_codec_qins_encode_row(qins_dtype fmt, const float *x, int64_t n, float alpha, void *out);
/* Decode back: qins-f32 via D, qins8/qins6 via lut[q] * (1.0f / alpha). */
void qins_codec_qins_decode_row(qins_dtype fmt, const void *in, int64_t n, float alpha, float *y);

/* int8 absmax step of n values: (max |x| over finite x) / 127 (float division). */
float qins_codec_int8_step(const float *x, int64_t n);
/* q = clamp(rint(x / step), -127, 127); 0 when step == 0 or x is NaN; +-Inf -> +-127. */
int qins_codec_int8_code(float x, float step);
/* int8-row: one step per row (steps[0]); int8-block32: one per 32 elements, the last block
 * shorter (steps[0 .. ceil(n/32))). */
void qins_codec_int8_encode_row(qins_dtype fmt, const float *x, int64_t n, int8_t *q, float *steps);
void qins_codec_int8_decode_row(qins_dtype fmt, const int8_t *q, int64_t n, const float *steps, float *y);

/* ---- calibration ---- */
typedef struct qins_codec_row_stats {
  int64_t finite;   /* finite values counted */
  double mean;      /* of the finite values */
  double sigma;     /* population standard deviation about the mean */
  double absmax;    /* max |x| over finite values */
} qins_codec_row_stats;
void qins_codec_stats_row(const float *x, int64_t n, qins_codec_row_stats *st);
/* The objective of `mse` calibration: mean over finite x of (decode(encode(x, alpha)) - x)^2 in
 * the format's codes (qins-f32 uses the qins8 objective: its own error is near zero for any
 * alpha, so the alpha that also serves qins8 is chosen). Accumulated in double. */
double qins_codec_row_mse(const float *x, int64_t n, qins_dtype fmt, float alpha);
/* alpha for one row (exact algorithm in qins_codec.c and docs/codec.md). fmt: qins-f32/qins8/qins6.
 * Always finite and > 0. */
float qins_codec_calibrate_row(const float *x, int64_t n, qins_dtype fmt, qins_alpha_spec spec);

/* ---- whole host arrays (rows x cols), for reports, tests and tools ---- */
/* Encode x into `fmt`. QINS formats read alpha[rows] (calibrate first); int8 formats write
 * their steps to `scales` (qins_format_scale_count entries); f32/f16/bf16 store the values.
 * dst holds rows * qins_format_row_bytes(fmt, cols) bytes. Returns 0 or QINS_EINVAL. */
int qins_codec_encode(qins_dtype fmt, const float *x, int64_t rows, int64_t cols, const float *scales_in,
                      void *dst, float *scales_out);
/* Decode src (as written by qins_codec_encode) to f32 y. scales: alpha or steps. */
int qins_codec_decode(qins_dtype fmt, const void *src, int64_t rows, int64_t cols, const float *scales, float *y);

#endif
