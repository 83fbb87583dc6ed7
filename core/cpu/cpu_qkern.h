/* The cpu kernels that compute on quantized data directly (internal to core/cpu): the fused
 * quantized matmul (cpu_qmatmul.c) and attention over a QINS-int8 V cache (cpu_qattention.c). */
#ifndef QINS_CPU_QKERN_H
#define QINS_CPU_QKERN_H

#include "core/backend.h"

/* y[M,N] = x[M,K] . W^T (+ bias) for W in qins-f32, qins8, qins6, int8-row or int8-block32.
 * Fused (the default): codes are decoded by table in registers and the row scale (1/alpha or the
 * int8 step) is applied once after each dot product. The backend's qmatmul_path (core/backend.h:
 * qins_backend_set_qmatmul_path, default from QINS_MATMUL_UNFUSED) selects the unfused reference. */
int cpu_qmatmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias, qins_tensor *y);
int cpu_qmatmul_fused(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                      qins_tensor *y);
/* Reference: dequantize W into a float buffer (cpu_dequantize), then the f32 cpu_matmul. */
int cpu_qmatmul_unfused(qins_backend *be, const qins_tensor *x, const qins_tensor *w, const qins_tensor *bias,
                        qins_tensor *y);

/* How the fused kernel turns codes into floats (for the benchmark and tests; process-wide). */
typedef enum cpu_qdecode {
  CPU_QDECODE_AUTO = 0, /* the fastest this CPU offers: VBMI > PERM512 > GATHER > SCALAR */
  CPU_QDECODE_SCALAR,   /* plain C table lookups (the portable fallback) */
  CPU_QDECODE_GATHER,   /* AVX2 vgatherdps from the float table */
  CPU_QDECODE_PERM512,  /* AVX-512 vpermt2ps over the table held in registers (qins8/qins6) */
  CPU_QDECODE_VBMI,     /* AVX-512 VBMI vpermt2b over the table's byte planes, 64 codes at once */
} cpu_qdecode;
/* Returns the decode actually used after falling back to what the CPU supports. */
cpu_qdecode cpu_qmatmul_set_decode(cpu_qdecode d);
const char *cpu_qdecode_name(cpu_qdecode d);
/* The decode in use (chosen at the first call: QINS_QMATMUL_DECODE or the fastest available). */
cpu_qdecode cpu_qdecode_current(void);

/* Causal GQA attention as cpu_attention, for a qins8 V cache [T,Hkv,D] whose scale holds
 * alpha f32 [T*Hkv] (one per token and KV head): out = sum_t (p_t / alpha_t) LUT8[q_t]. */
int cpu_qattention(qins_backend *be, const qins_tensor *q, const qins_tensor *k_cache, const qins_tensor *v_cache,
                   int64_t pos0, float scale, qins_tensor *out);

#endif
