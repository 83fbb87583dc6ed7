/* The cpu backend's backward ops and cross-entropy (internal to core/cpu; see core/backend_grad.h). */
#ifndef QINS_CPU_GRAD_H
#define QINS_CPU_GRAD_H

#include "core/backend.h"

int cpu_matmul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                        qins_tensor *dx, qins_tensor *dw, qins_tensor *dbias);
int cpu_add_backward(qins_backend *be, const qins_tensor *dy, qins_tensor *db);
int cpu_mul_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *a, const qins_tensor *b,
                     qins_tensor *da, qins_tensor *db);
int cpu_rmsnorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                         float eps, qins_tensor *dx, qins_tensor *dw);
int cpu_layernorm_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *x, const qins_tensor *w,
                           float eps, qins_tensor *dx, qins_tensor *dw, qins_tensor *db);
int cpu_rope_backward(qins_backend *be, const qins_tensor *dy, const qins_tensor *pos, const qins_tensor *inv_freq,
                      int rot_dim, float attn_factor, qins_rope_mode mode, qins_tensor *dx);
int cpu_softmax_backward(qins_backend *be, const qins_tensor *y, const qins_tensor *dy, qins_tensor *dx);
int cpu_silu_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
int cpu_gelu_tanh_backward(qins_backend *be, const qins_tensor *x, const qins_tensor *dy, qins_tensor *dx);
int cpu_silu_mul_backward(qins_backend *be, const qins_tensor *gate, const qins_tensor *up, const qins_tensor *dy,
                          qins_tensor *dgate, qins_tensor *dup);
int cpu_embed_backward(qins_backend *be, const qins_tensor *ids, const qins_tensor *dy, qins_tensor *dtable);
int cpu_attention_backward(qins_backend *be, const qins_tensor *q, const qins_tensor *k, const qins_tensor *v,
                           int64_t pos0, float scale, const qins_tensor *dout, qins_tensor *dq, qins_tensor *dk,
                           qins_tensor *dv);
int cpu_cross_entropy(qins_backend *be, const qins_tensor *logits, const qins_tensor *targets, qins_tensor *loss,
                      qins_tensor *dlogits, float scale);
int cpu_adamw_step(qins_backend *be, qins_tensor *w, const qins_tensor *g, qins_tensor *m, qins_tensor *v,
                   const qins_adamw_step_args *a);
/* core/cpu/cpu_gradnorm.c */
int cpu_sumsq(qins_backend *be, const qins_tensor *x, qins_tensor *out, int64_t index);

#endif
