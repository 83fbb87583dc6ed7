/* Model-level training step for Llama, Phi-3 and GPT-2: a trainable f32 copy of a loaded model's
 * weights (under their Hugging Face names and on-disk shapes), a forward pass that keeps the
 * activations the backward needs, and the backward pass chained from the backward ops
 * (core/backend_grad.h). Loss: mean cross-entropy of the logits at positions 0..n-2 against
 * ids[1..n-1] (PyTorch's causal-LM loss). Gradients are ADDED into each parameter's g.
 * Runs on any backend. On cpu the parameter tensors ARE the host arrays w/g. On a device backend
 * (vk) parameters and gradients live in device buffers and the host arrays are copies synchronised
 * explicitly:
 *   qins_train_model_push_weights  host w -> device, after anything changed w on the host (a host
 *                                  optimizer step, loading a checkpoint, test code editing w);
 *   qins_train_model_pull_grads    device g -> host g, before anything reads g on the host (a host
 *                                  optimizer step, gradient norms, the fixture comparisons);
 *   qins_train_model_pull_weights  device w -> host w, after a device optimizer step and before
 *                                  saving a checkpoint or reading w on the host.
 * All three are no-ops on cpu. qins_train_model_zero_grad zeroes both copies. */
#ifndef QINS_MODEL_GRAD_H
#define QINS_MODEL_GRAD_H

#include <stdint.h>

#include "core/backend.h"
#include "core/model/model.h"

typedef struct qins_train_param {
  const char *name;  /* Hugging Face name */
  float *w;          /* weights, f32, on-disk layout (GPT-2 Conv1D weights stay [in, out]) */
  float *g;          /* gradient, same layout (accumulated) */
  int64_t n;
  int ndim;
  int64_t shape[4];
  int is_vector;     /* 1-D (norm gains, biases): the usual no-weight-decay group */
} qins_train_param;

typedef struct qins_train_model qins_train_model;

/* Copies (and converts to f32) every weight of m; m may be closed afterwards. */
int qins_train_model_create(const qins_model *m, qins_backend *be, qins_train_model **out);
void qins_train_model_destroy(qins_train_model *tm);
int qins_train_model_count(const qins_train_model *tm);
const qins_train_param *qins_train_model_param(const qins_train_model *tm, int i);
int qins_train_model_zero_grad(qins_train_model *tm); /* host and device gradients */
int qins_train_model_push_weights(qins_train_model *tm);
int qins_train_model_push_param(qins_train_model *tm, int i); /* one parameter's w (host-side optimizer) */
int qins_train_model_pull_grads(qins_train_model *tm);
int qins_train_model_pull_grad(qins_train_model *tm, int i); /* one parameter's g (additive) */
int qins_train_model_pull_weights(qins_train_model *tm);
/* 1 when parameters live in device buffers (the sync calls above do work). */
int qins_train_model_on_device(const qins_train_model *tm);
/* The backend tensors of parameter i, for an optimizer that updates parameters where they live
 * (qins_optim_add_device). On cpu they wrap w/g; on a device GPT-2's Conv1D weights are held
 * transposed ([out,in]): same elements, another order (element-wise optimizers don't mind). */
int qins_train_model_param_tensors(const qins_train_model *tm, int i, const qins_tensor **w, const qins_tensor **g);
/* Forward + backward on one sequence of n >= 2 ids (n <= max positions): *loss is the mean
 * cross-entropy, every parameter's gradient is added into its g. Bad ids: QINS_EINPUT. */
int qins_train_model_loss_grad(qins_train_model *tm, const int32_t *ids, int n, double *loss);

/* Additive (distillation): called after the cross-entropy with dlogits [n, V] -- the gradient of
 * the mean loss, (softmax - onehot(ids[t+1])) / (n-1), zero on the last row -- which the hook may
 * rewrite (e.g. add a KL term) before the backward runs; *loss may be changed to match. */
typedef int (*qins_train_logit_hook)(void *user, const int32_t *ids, int n, int vocab, float *dlogits, double *loss);
void qins_train_model_set_logit_hook(qins_train_model *tm, qins_train_logit_hook fn, void *user);

/* Additive (hidden-state distillation). The "hidden state" of layer l (0-based) is the residual
 * stream after that layer: its output rows [n, dim] (attention and MLP residual adds done), i.e.
 * the input of layer l+1, or for the last layer the input of the final norm (never normed).
 * Called after the forward (and after the logit hook) once per layer with h = those rows and
 * dh = a zeroed [n, dim] buffer: the hook writes d(extra loss)/dh there and may add the extra
 * term to *loss. The backward adds dh to the gradient flowing into that layer's output. */
typedef int (*qins_train_hidden_hook)(void *user, const int32_t *ids, int n, int layer, int dim, const float *h,
                                      float *dh, double *loss);
void qins_train_model_set_hidden_hook(qins_train_model *tm, qins_train_hidden_hook fn, void *user);

/* A contiguous piece of the model for pipeline-parallel training: the embedding (with_embed), layers
 * [l0, l1), and the final norm + lm_head + loss (with_head). Activations of up to `max_mb` micro-batches
 * in flight are kept (slot mb in [0, max_mb)). The activations crossing between parts are [n, dim] f32 rows
 * in host memory (they cross shared memory between workers anyway).
 * qins_train_model_loss_grad is the whole model as one part: a chain of parts computes the same loss
 * and bit-identical gradients on cpu. Parts of one model share its parameters; a tied embedding's g
 * is written by both end parts, so run those on one thread (or on separate models) at a time. */
typedef struct qins_train_part qins_train_part;
int qins_train_part_create(qins_train_model *tm, int l0, int l1, int with_embed, int with_head, int max_mb,
                           qins_train_part **out);
void qins_train_part_destroy(qins_train_part *p);
/* ids [n] are the micro-batch's tokens (needed by the embed and the head's targets ids[1..n-1]; a
 * middle part may pass NULL, its hidden hook then gets NULL ids).
 * x_in: [n,dim] (NULL iff with_embed). x_out: [n,dim] (NULL iff with_head). *loss set iff with_head.
 * Additive: loss may also be given to a part without the head; it then gets the terms the hidden
 * hook added for this part's layers (0 without a hook), so the step's loss is the sum over parts.
 * The head part's *loss holds the cross-entropy, the logit hook's changes and its own layers' terms.
 * A slot already in flight, or a bad mb / n / NULL pattern: QINS_EINVAL; bad ids: QINS_EINPUT. */
int qins_train_part_forward(qins_train_part *p, int mb, const int32_t *ids, int n, const float *x_in, float *x_out,
                            double *loss);
/* dx_out: gradient at this part's output [n,dim] (NULL iff with_head); dx_in gets the gradient at its input
 * (NULL iff with_embed). Parameter gradients are ADDED into the params' g. Frees slot mb (also on error). */
int qins_train_part_backward(qins_train_part *p, int mb, const float *dx_out, float *dx_in);
/* Drop slot mb's forward without a backward (an evaluation-only forward: no gradient is added).
 * A free slot or a bad mb: no-op. */
void qins_train_part_discard(qins_train_part *p, int mb);
/* 1 if parameter i is read by this part (a tied embedding/lm_head is read by both end parts). */
int qins_train_part_uses(const qins_train_part *p, int param_index);

#endif
