/* Transport (QINS.md section 4) on real activations: capture the inputs of every QINS-eligible
 * matmul (v_proj, o_proj, MLP gate/up/down; GPT-2 c_attn's V columns, attn c_proj, c_fc, mlp
 * c_proj) during an FP forward, calibrate the linearised transport per layer and path on them,
 * and measure exact and linearised transport against FP with the Jacobian statistics used. */
#ifndef QINS_TRANSPORT_H
#define QINS_TRANSPORT_H

#include <stdint.h>

#include "core/llm/llm.h"
#include "core/llm/policy.h"

/* The weight paths transport applies to: QINS_PATH_V .. QINS_PATH_DOWN of core/llm/policy.h. */
#define QINS_TRANSPORT_PATHS (QINS_PATH_DOWN + 1)

/* The runtime matrix a path multiplies by (QINS_LLM_WV for QINS_PATH_V, ...). */
qins_llm_mat qins_transport_matrix(qins_path p);

/* Input rows of every (layer, path) seen during FP forwards of the given prompts (each from
 * position 0, all rows). The runtime is reset before and after; its tap is removed after. */
typedef struct qins_transport_capture qins_transport_capture;
int qins_transport_capture_run(qins_llm *llm, const int32_t *const *prompts, const int *lens, int n_prompts,
                               qins_transport_capture **out);
/* Rows [n_rows, K] of one layer and path; NULL (and *n_rows 0) when the layer has no such
 * matrix (GPT-2 gate). */
const float *qins_transport_capture_rows(const qins_transport_capture *c, int layer, qins_path p, int *n_rows,
                                         int *K);
void qins_transport_capture_free(qins_transport_capture *c);

/* Linearised transport calibrated on rows x [nc, K] (QINS.md 4): per input channel the operating
 * point x0_i = mean of the rows and alpha_in_i (mse over the rows, qins8); per output y0 = W x0 + b
 * and alpha_out_o (mse over the FP outputs of the rows); W''_oi = E'(y0_o) W_oi / E'(x0_i),
 * c_o = E(y0_o) - sum_i W''_oi E(x0_i). */
typedef struct qins_transport_lin {
  int N, K;
  double *x0, *ai, *y0, *ao, *w2, *c; /* [K], [K], [N], [N], [N*K], [N] */
  double spread;                      /* mean over channels of std(x_i) / |x0_i| on the rows */
  double jac_med, jac_max, jac_p90;   /* |E'(y0_o) / E'(x0_i)| over every (o, i) */
} qins_transport_lin;
int qins_transport_calibrate(const float *x, int nc, const float *W, const float *b, int N, int K,
                             qins_transport_lin *lin);
void qins_transport_lin_free(qins_transport_lin *lin);

/* Measured on rows x [ne, K] against FP y = W x + b (relative L2 over all outputs):
 *   exact_f32:   activations as qins-f32 (z = E(x) in float, decoded by D): near-lossless;
 *   exact:       activations as qins8 codes, alpha per channel (lin->ai), through the table;
 *   linearised:  y = D(W'' E(x) + c) with lin's alphas. */
typedef struct qins_transport_stats {
  double rel_exact_f32, rel_exact, rel_lin, rel_lin_vs_exact;
  double cross_in, cross_out; /* fraction of elements on the other side of 0 from x0 / y0 */
  double t_fp, t_exact, t_lin; /* seconds for the rows (best of reps), same scalar loops */
} qins_transport_stats;
int qins_transport_measure(const qins_transport_lin *lin, const float *x, int ne, const float *W, const float *b,
                           int reps, qins_transport_stats *st);

/* One layer and path of a capture: reads the matrix and bias from the runtime (float weights),
 * calibrates on the first calib_rows rows and measures on the rest. lin may be NULL (freed
 * here) or receives the calibration (caller frees). QINS_EUNSUPPORTED when the layer has no
 * such matrix or it is not float; QINS_EINVAL when there are not enough rows. */
int qins_transport_layer(qins_llm *llm, const qins_transport_capture *cap, int layer, qins_path p, int calib_rows,
                         int reps, qins_transport_lin *lin, qins_transport_stats *st);

/* Matrix [N, K] and bias [N] (or NULL: no bias) of a layer's path as f32 on the host (malloc'd). */
int qins_transport_weights(qins_llm *llm, int layer, qins_path p, float **W, float **b, int *N, int *K);

#endif
