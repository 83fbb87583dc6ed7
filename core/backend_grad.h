/* Backward ops of the op table (training): validating qins_op_*_backward wrappers and the fused
 * cross-entropy. The table members live in core/backend.h beside the forward ops.
 *
 * Convention (the same for every op and every backend):
 *  - Gradients with respect to ACTIVATIONS (dx, da, dgate, dup, dq, dk, dv, dlogits) are
 *    OVERWRITTEN: the op writes every element; the previous contents are ignored.
 *  - Gradients with respect to PARAMETERS -- anything reduced over rows: matmul dw and dbias,
 *    norm gains/biases dw/db, the embedding table dtable, and the row-broadcast operand db of
 *    add/mul -- are ACCUMULATED (+=). Zero them once per optimizer step; micro-batches and tied
 *    weights (a tied lm_head's matmul dw and the embedding's dtable are the same buffer) then
 *    sum naturally.
 *  - Every gradient argument documented "or NULL" may be NULL when it is not needed.
 *  - All gradients are f32. Inputs are the forward's inputs (not its outputs) unless stated.
 *  - Backends that do not implement an op return QINS_EUNSUPPORTED naming the backend. */
#ifndef QINS_BACKEND_GRAD_H
#define QINS_BACKEND_GRAD_H

#include "core/backend.h"

/* y = x . w^T + bias (qins_op_matmul). dy [M,N], x [M,K], w [N,K] (f32/f16/bf16, or a quantized
 * format with scales: the gradient is then taken with respect to the dequantized weight,
 * straight-through).
 *   dx [M,K] = dy . w              (overwrite, or NULL)
 *   dw [N,K] += dy^T . x           (accumulate, f32, or NULL)
 *   dbias [N] += sum over rows dy  (accumulate, or NULL) */
int qins_op_matmul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                            qins_tensor *dx, qins_tensor *dw, qins_tensor *dbias);
/* y = a + b with b broadcast over the rows of a: db [cols] += sum over rows dy (accumulate).
 * (da = dy, and for a same-shaped b db = dy: no op needed.) */
int qins_op_add_backward(qins_backend *be, const qins_tensor *dy, qins_tensor *db);
/* y = a * b (b same-shaped or one row broadcast over rows).
 *   da = dy * b                                                (overwrite, or NULL; may alias dy)
 *   db = dy * a           when b has a's shape (an activation) (overwrite, or NULL)
 *   db += sum_rows dy * a otherwise: b is one row [cols] (a parameter) (accumulate, or NULL)
 * The shape decides, not the element count: for a [1,N], b [N] accumulates, b [1,N] overwrites. */
int qins_op_mul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *a, const qins_tensor *b,
                         qins_tensor *da, qins_tensor *db);
/* y = x / sqrt(mean(x^2) + eps) * w per row. dx [M,D] (overwrite), dw [D] += (accumulate, or NULL). */
int qins_op_rmsnorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                             float eps, qins_tensor *dx, qins_tensor *dw);
/* y = (x - mean) / sqrt(var + eps) * w + b per row. dx (overwrite), dw, db [D] (accumulate, or NULL). */
int qins_op_layernorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                               float eps, qins_tensor *dx, qins_tensor *dw, qins_tensor *db);
/* The rotation is orthogonal: dx = attn_factor * R(-angle) dy with the same pos, inv_freq, rot_dim
 * and mode as the forward; dims >= rot_dim pass dy through. dy, dx [M,H,D] (overwrite; may alias). */
int qins_op_rope_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *pos,
                          const qins_tensor *inv_freq, int rot_dim, float attn_factor, qins_rope_mode mode,
                          qins_tensor *dx);
/* Takes the forward OUTPUT y = softmax(x): dx = y * (dy - sum(dy * y)) per row (overwrite; may alias dy). */
int qins_op_softmax_backward(qins_backend *be, const qins_tensor *y, const qins_tensor *dy, qins_tensor *dx);
/* dx = dy * f'(x) for f = silu, gelu_tanh (overwrite; dx may alias dy). */
int qins_op_silu_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
int qins_op_gelu_tanh_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
/* y = silu(gate) * up: dgate = dy * up * silu'(gate), dup = dy * silu(gate) (overwrite, or NULL). */
int qins_op_silu_mul_backward(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, const qins_tensor *dy,
                              qins_tensor *dgate, qins_tensor *dup);
/* y = table[ids]: dtable [V,D] f32 row ids[m] += dy[m] (scatter-add, accumulate; repeated ids sum). */
int qins_op_embed_backward(qins_backend *be, const qins_tensor *ids, const qins_tensor *dy, qins_tensor *dtable);
/* Causal GQA attention (qins_op_attention) with q [M,Hq,D] at positions pos0..pos0+M-1 and k, v
 * [T,Hkv,D] (f32; T >= pos0+M; training uses pos0 = 0, T = M). The softmax is recomputed from q, k.
 * dout [M,Hq,D]; dq [M,Hq,D], dk, dv [T,Hkv,D] are overwritten (rows no query sees get 0); each KV
 * head's dk/dv sums over the query heads that share it. */
int qins_op_attention_backward(qins_backend *be, const qins_tensor *q, const qins_tensor *k, const qins_tensor *v,
                               int64_t pos0, float scale, const qins_tensor *dout, qins_tensor *dq, qins_tensor *dk,
                               qins_tensor *dv);
/* Fused softmax cross-entropy. logits [M,V], targets i32 [M] (a target < 0 ignores its row; one
 * >= V is an input error). loss [M] f32 gets -log softmax(logits[m])[targets[m]] (0 for ignored rows).
 * dlogits [M,V] f32 or NULL (overwrite; may alias logits) gets scale * d loss[m] / d logits[m]
 * (0 on ignored rows). scale == 0 means 1 / (number of rows not ignored), which makes dlogits the
 * gradient of the MEAN loss (PyTorch's cross_entropy with ignore_index < 0). */
int qins_op_cross_entropy(qins_backend *be, const qins_tensor *logits, const qins_tensor *targets, qins_tensor *loss,
                          qins_tensor *dlogits, float scale);

/* One AdamW step on f32 tensors w, g, m, v of the same element count (any shapes), exactly as
 * torch.optim.AdamW (and core/train/optim.c) does per element, in f32:
 *   g' = g * gmul;  w *= decay (if do_decay);  m += w1 (g' - m);  v = v beta2 + w2 g' g';
 *   w -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
 * The scalars come from qins_adamw_step_args_make (PyTorch computes them in double). w, m, v are
 * updated in place; g is read only. On cpu the result is bit-identical to qins_optim_step's plain
 * AdamW; on vk sqrt and division may differ by a few ulp (GPU precision), contraction into fma is
 * forbidden (precise). */
struct qins_adamw_step_args {
  float step_size; /* lr / (1 - beta1^t) */
  float bc2_sqrt;  /* sqrt(1 - beta2^t) */
  float decay;     /* 1 - lr * weight_decay */
  int do_decay;    /* 0: no weight decay (norm gains, biases) */
  float w1, w2;    /* 1 - beta1, 1 - beta2 */
  float beta2;
  float eps;
  float gmul;      /* gradient multiplier: 1 / accumulation steps x clipping scale */
};
/* The scalars of step t (1-based) as torch computes them; weight_decay 0 turns decay off. */
qins_adamw_step_args qins_adamw_step_args_make(float lr, float beta1, float beta2, float eps, float weight_decay,
                                               int64_t t, float gmul);
int qins_op_adamw_step(qins_backend *be, qins_tensor *w, const qins_tensor *g, qins_tensor *m, qins_tensor *v,
                       const qins_adamw_step_args *a);

/* Sum of squares of x (f32, any shape, any element count) where x lives: the gradient norm and
 * the anomaly check of a training step read a few floats instead of every gradient. out is f32
 * with at least 3*(index+1) elements; out[3*index .. 3*index+2] (overwritten) get the sum s as
 * three floats whose sum in double is s (qins_sumsq_value): on cpu s is the double sum in element
 * order, exactly what the host optimizer computes (so both paths agree bit for bit); on vk a tree
 * of double partial sums where the device has shaderFloat64, else f32 (the last two floats 0).
 * NaN or Inf anywhere in x makes s non-finite (as do squares above the f32 range on vk).
 * Several tensors write several slots of one out, which is then read once. */
int qins_op_sumsq(qins_backend *be, const qins_tensor *x, qins_tensor *out, int64_t index);
/* s from the three floats at out[3*index]. */
double qins_sumsq_value(const float *slot3);
/* The three floats of s (what a backend writes; exact for normal doubles). */
void qins_sumsq_split(double s, float *slot3);

#endif
