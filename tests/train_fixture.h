/* Test helper for the PyTorch training fixtures (../shared/fixtures/hf/<model>/train.json and
 * grads.safetensors): given a function computing the loss and gradients of a batch, compares
 * the loss and every parameter gradient, then replays the fixture's AdamW steps comparing the loss
 * before each step. Fails the current cmocka test on any mismatch, naming the tensor or step. */
#ifndef QINS_TEST_TRAIN_FIXTURE_H
#define QINS_TEST_TRAIN_FIXTURE_H

#include <stdint.h>

typedef struct train_param {
  const char *name; /* the fixture's tensor name (Hugging Face name) */
  float *w;         /* the weights the loss function reads (updated in place by the AdamW steps) */
  float *g;         /* where the loss function ADDS its gradient (zeroed by the helper) */
  int64_t n;
} train_param;

/* Computes the mean cross-entropy of the logits at ids[0..n-2] against ids[1..n-1] into *loss and
 * adds d loss / d w into every parameter's g. Returns 0 or a QINS_E* code. */
typedef int (*train_loss_grad_fn)(void *user, const int32_t *ids, int n, double *loss);

typedef struct train_fixture_tol {
  double grad;  /* relative L2 per parameter gradient (1e-4) */
  double loss;  /* |loss - ref| <= loss * max(1, |ref|) (1e-4) */
} train_fixture_tol;

/* dir holds train.json and grads.safetensors. Every fixture gradient must match a parameter by name
 * and every parameter must have a fixture gradient. */
void train_fixture_check(const char *dir, const train_param *params, int n_params, train_loss_grad_fn fn, void *user,
                         train_fixture_tol tol);

#endif
