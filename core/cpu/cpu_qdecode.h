/* Table decode of QINS codes with AVX-512 VBMI byte-plane lookups, shared by the cpu quantized
 * kernels (cpu_qmatmul.c, cpu_qattention.c). Internal to core/cpu; x86-64 with AVX2 builds only
 * (the functions carry their own target attribute: callers check cpu_qdecode_has_vbmi() first). */
#ifndef QINS_CPU_QDECODE_H
#define QINS_CPU_QDECODE_H

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define QINS_CPU_QDECODE_VBMI 1

static inline int cpu_qdecode_has_vbmi(void) {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vbmi");
}

#define TVBMI __attribute__((target("avx512f,avx512bw,avx512vbmi")))

/* The fastest decode here. A float is 4 bytes, so a 128-entry float table is 4 tables of 128 bytes
 * ("byte planes"), and vpermt2b looks up 64 bytes at once in a 128-byte table. So 64 codes cost
 * 4 byte lookups plus 8 unpacks that interleave the planes into 4 vectors of 16 floats: about
 * 0.2 shuffle-port cycles per element, against 0.5 for vpermt2ps (16 floats per lookup) and more
 * for a gather. The unpacks interleave within 128-bit lanes, so the floats come out in a fixed
 * permuted order; the GEMV permutes x into that order once per call (xp), which costs K floats of
 * work against N*K decodes, and the dot product does not care about order.
 * The values are bit-identical to the codec's table (the planes are its bytes). */
typedef struct { __m512i lo[4], hi[4]; } ptab; /* plane p: entries 0..63 in lo[p], 64..127 in hi[p] */

/* Planes of 128 floats (qins8: the magnitudes lut8[128..255]; qins6: all of lut6 in lo, 64 entries). */
TVBMI static inline ptab ptab_load(const float *vals, int count) {
  uint8_t planes[4][128];
  memset(planes, 0, sizeof planes);
  for (int e = 0; e < count; e++) {
    uint32_t bits;
    memcpy(&bits, &vals[e], 4);
    for (int p = 0; p < 4; p++) planes[p][e] = (uint8_t)(bits >> (8 * p));
  }
  ptab t;
  for (int p = 0; p < 4; p++) {
    t.lo[p] = _mm512_loadu_si512(planes[p]);
    t.hi[p] = _mm512_loadu_si512(planes[p] + 64);
  }
  return t;
}

/* Four byte planes -> 4 x 16 floats. out[v] lane 4L+t holds element 16L + 4v + t of the 64. */
TVBMI static inline void planes_to_floats(__m512i b0, __m512i b1, __m512i b2, __m512i b3, __m512 out[4]) {
  __m512i lo01 = _mm512_unpacklo_epi8(b0, b1), hi01 = _mm512_unpackhi_epi8(b0, b1);
  __m512i lo23 = _mm512_unpacklo_epi8(b2, b3), hi23 = _mm512_unpackhi_epi8(b2, b3);
  out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(lo01, lo23));
  out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(lo01, lo23));
  out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(hi01, hi23));
  out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(hi01, hi23));
}

/* 64 qins8 codes. The table is odd-symmetric (LUT8[q] = -LUT8[255-q]): the magnitude index is
 * q - 128 for q >= 128 (vpermt2b ignores bit 7) and 127 - q below, and the sign bit is added
 * into the top byte plane (one masked byte op each). */
TVBMI static inline void dec64_q8_vbmi(const ptab *t, const uint8_t *codes, __m512 out[4]) {
  __m512i q = _mm512_loadu_si512(codes);
  __mmask64 neg = ~_mm512_movepi8_mask(q); /* q < 128: top bit clear */
  __m512i j = _mm512_mask_sub_epi8(q, neg, _mm512_set1_epi8(0x7f), q); /* 127 - q where negative */
  __m512i b0 = _mm512_permutex2var_epi8(t->lo[0], j, t->hi[0]);
  __m512i b1 = _mm512_permutex2var_epi8(t->lo[1], j, t->hi[1]);
  __m512i b2 = _mm512_permutex2var_epi8(t->lo[2], j, t->hi[2]);
  __m512i b3 = _mm512_permutex2var_epi8(t->lo[3], j, t->hi[3]);
  b3 = _mm512_mask_add_epi8(b3, neg, b3, _mm512_set1_epi8((char)0x80)); /* sign bit (was 0) */
  planes_to_floats(b0, b1, b2, b3, out);
}

/* 64 qins6 codes from 48 packed bytes: a masked load (never past them), vpermb puts each 6-byte
 * run of 8 codes into its own qword, vpmultishiftqb extracts the 8 six-bit fields at bits 0, 6,
 * ..., 42 into bytes (the top two bits of each byte are left over; vpermb ignores them), then
 * 4 one-register byte lookups in the 64-entry planes. */
TVBMI static inline void dec64_q6_vbmi(const ptab *t, const uint8_t *packed, __m512 out[4]) {
  const __m512i spread = _mm512_set_epi8(
      47, 47, 47, 46, 45, 44, 43, 42, 41, 41, 41, 40, 39, 38, 37, 36, 35, 35, 35, 34, 33, 32, 31, 30, 29, 29, 29, 28,
      27, 26, 25, 24, 23, 23, 23, 22, 21, 20, 19, 18, 17, 17, 17, 16, 15, 14, 13, 12, 11, 11, 11, 10, 9, 8, 7, 6, 5, 5,
      5, 4, 3, 2, 1, 0);
  const __m512i shifts = _mm512_set1_epi64(0x2a241e18120c0600ll); /* bytes 0, 6, 12, ..., 42 */
  __m512i raw = _mm512_maskz_loadu_epi8(0x0000ffffffffffffull, packed);
  __m512i c = _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi8(spread, raw));
  __m512i b0 = _mm512_permutexvar_epi8(c, t->lo[0]);
  __m512i b1 = _mm512_permutexvar_epi8(c, t->lo[1]);
  __m512i b2 = _mm512_permutexvar_epi8(c, t->lo[2]);
  __m512i b3 = _mm512_permutexvar_epi8(c, t->lo[3]);
  planes_to_floats(b0, b1, b2, b3, out);
}


#endif
#endif
