/* The training-fixture check (train_fixture.h): loss + gradients of case 0, then the AdamW replay. */
#include "tests/train_fixture.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/model/safetensors.h"
#include "core/train/optim.h"
#include "tests/test_util.h"

static double num(json_t *o, const char *key, const char *path) {
  json_t *v = json_object_get(o, key);
  if (!json_is_number(v)) fail_msg("%s: key %s missing or not a number", path, key);
  return json_number_value(v);
}

void train_fixture_check(const char *dir, const train_param *params, int n_params, train_loss_grad_fn fn, void *user,
                         train_fixture_tol tol) {
  char path[1200];
  snprintf(path, sizeof path, "%s/train.json", dir);
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr);
  if (!root) fail_msg("%s:%d: %s", path, jerr.line, jerr.text);
  json_t *jids = json_object_get(root, "ids"), *adam = json_object_get(root, "adamw");
  if (!json_is_array(jids) || !json_is_object(adam)) fail_msg("%s: ids or adamw missing", path);
  int n = (int)json_array_size(jids);
  int32_t *ids = malloc((size_t)n * sizeof(int32_t));
  for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(jids, (size_t)i));
  double ref_loss = num(root, "loss", path);
  json_t *betas = json_object_get(adam, "betas"), *losses = json_object_get(adam, "losses_before_each_step");
  if (!json_is_array(betas) || json_array_size(betas) != 2 || !json_is_array(losses))
    fail_msg("%s: adamw.betas or adamw.losses_before_each_step missing", path);

  char gpath[1200];
  snprintf(gpath, sizeof gpath, "%s/grads.safetensors", dir);
  qins_st_file *gf;
  if (qins_st_open(gpath, &gf)) fail_msg("%s", qins_error_msg());
  /* every parameter has a reference gradient and vice versa */
  for (int t = 0; t < gf->n_tensors; t++) {
    int found = 0;
    for (int k = 0; k < n_params && !found; k++) found = strcmp(params[k].name, gf->tensors[t].name) == 0;
    if (!found) fail_msg("%s: gradient %s has no parameter", gpath, gf->tensors[t].name);
  }

  /* 1. loss and gradients */
  for (int k = 0; k < n_params; k++) memset(params[k].g, 0, (size_t)params[k].n * sizeof(float));
  double loss = 0;
  if (fn(user, ids, n, &loss)) fail_msg("loss/grad function: %s", qins_error_msg());
  print_message("  %s: loss %.7f (reference %.7f)\n", dir, loss, ref_loss);
  if (!(fabs(loss - ref_loss) <= tol.loss * fmax(1.0, fabs(ref_loss))))
    fail_msg("%s: loss %.8f differs from the reference %.8f by more than %g", dir, loss, ref_loss, tol.loss);
  double worst = 0;
  const char *worst_name = "";
  for (int k = 0; k < n_params; k++) {
    const qins_st_tensor *ref = qins_st_find(gf, params[k].name);
    if (!ref) fail_msg("%s: no reference gradient for parameter %s", gpath, params[k].name);
    if (ref->dtype != QINS_DT_F32 || (int64_t)(ref->nbytes / 4) != params[k].n)
      fail_msg("%s: %s: reference is not f32 with %lld elements", gpath, params[k].name, (long long)params[k].n);
    double err = test_rel_l2(params[k].g, ref->data, params[k].n);
    if (!(err <= worst)) {
      worst = err;
      worst_name = params[k].name;
    }
    if (!(err <= tol.grad))
      fail_msg("%s: gradient of %s: relative L2 error %.3g > %g", dir, params[k].name, err, tol.grad);
  }
  print_message("  %s: %d gradients within %g (worst %.3g, %s)\n", dir, n_params, tol.grad, worst, worst_name);

  /* 2. AdamW replay, weight decay on every parameter */
  qins_optim_config cfg = qins_optim_config_default();
  cfg.adamw.lr = (float)num(adam, "lr", path);
  cfg.adamw.beta1 = (float)json_number_value(json_array_get(betas, 0));
  cfg.adamw.beta2 = (float)json_number_value(json_array_get(betas, 1));
  cfg.adamw.eps = (float)num(adam, "eps", path);
  cfg.adamw.weight_decay = (float)num(adam, "weight_decay", path);
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  for (int k = 0; k < n_params; k++)
    assert_true(qins_optim_add(o, params[k].name, params[k].w, params[k].g, params[k].n, NULL) >= 0);
  int steps = (int)json_array_size(losses);
  double worst_step = 0;
  for (int s = 0; s < steps; s++) {
    double want = json_number_value(json_array_get(losses, (size_t)s));
    if (s > 0) { /* step 0's gradients are the ones just checked */
      qins_optim_zero_grad(o);
      if (fn(user, ids, n, &loss)) fail_msg("loss/grad function at step %d: %s", s, qins_error_msg());
    }
    double err = fabs(loss - want) / fmax(1.0, fabs(want));
    worst_step = fmax(worst_step, err);
    if (!(err <= tol.loss))
      fail_msg("%s: AdamW step %d: loss %.8f, reference %.8f (relative %.3g > %g)", dir, s, loss, want, err, tol.loss);
    qins_step_report rep;
    assert_int_equal(qins_optim_step(o, loss, &rep), 0);
    assert_int_equal(rep.applied, 1);
  }
  print_message("  %s: %d AdamW steps, losses within %.3g of the reference\n", dir, steps, worst_step);
  qins_optim_destroy(o);
  qins_st_close(gf);
  free(ids);
  json_decref(root);
}
