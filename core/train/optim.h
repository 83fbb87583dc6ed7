/* Optimizers on host f32 arrays: AdamW exactly as torch.optim.AdamW, QINS-AdamW (../shared/QINS.md
 * section 6), per-parameter options, warmup + cosine learning rate, global-norm clipping, gradient
 * accumulation and anomaly detection (NaN/Inf, gradient-norm spikes) with a configured response.
 *
 * Use:
 *   qins_optim_create(&cfg, &o);
 *   qins_optim_add(o, "w", w, g, n, &opts);            for every parameter (w and g stay the caller's)
 *   per step: zero grads (qins_optim_zero_grad), run cfg.accum_steps micro-batches (each adds its
 *   gradient of its mean loss into g; qins_optim_micro_done says when enough are in), then
 *   qins_optim_step(o, loss, &report).
 * Gradients are not modified by a step (the caller zeroes them, as with PyTorch's zero_grad). */
#ifndef QINS_OPTIM_H
#define QINS_OPTIM_H

#include <stdint.h>

#include "core/tensor.h"

typedef struct qins_adamw_config {
  float lr;            /* base (peak) learning rate */
  float beta1, beta2;  /* PyTorch defaults 0.9, 0.999 */
  float eps;           /* added to sqrt(v_hat) (outside the square root), default 1e-8 */
  float weight_decay;  /* decoupled: p -= lr * wd * p before the Adam update (PyTorch order); default 0.01 */
} qins_adamw_config;

/* Learning rate at (0-based) step s: linear warmup lr*(s+1)/warmup for s < warmup, then cosine
 * from lr down to lr*min_lr_ratio at total_steps (held there after). total_steps <= warmup: constant. */
typedef struct qins_lr_schedule {
  int64_t warmup_steps;
  int64_t total_steps;
  float min_lr_ratio;
} qins_lr_schedule;
float qins_lr_schedule_at(const qins_lr_schedule *s, float base_lr, int64_t step);

typedef enum qins_anomaly_kind {
  QINS_ANOMALY_NONE = 0,
  QINS_ANOMALY_LOSS_NONFINITE,  /* the loss passed to the step is NaN or Inf */
  QINS_ANOMALY_GRAD_NONFINITE,  /* a gradient holds NaN or Inf (the first such tensor is named) */
  QINS_ANOMALY_NORM_SPIKE,      /* grad norm > spike_factor * running mean (the largest tensor is named) */
} qins_anomaly_kind;

typedef enum qins_anomaly_action {
  QINS_ANOMALY_SKIP = 0,   /* do not update; nothing else changes */
  QINS_ANOMALY_SCALE_LR,   /* multiply the learning rate by lr_factor from now on; a spike step is
                              applied at the reduced rate, a non-finite one is skipped */
  QINS_ANOMALY_FALLBACK,   /* skip, and flag the named tensor's path for FP fallback: a QINS
                              parameter becomes plain AdamW on w with f32 storage from then on */
} qins_anomaly_action;

typedef struct qins_anomaly_config {
  float spike_factor;      /* <= 0: no spike detection; e.g. 5 */
  int spike_warmup;        /* steps of running mean before spikes are judged (e.g. 10) */
  float ema_beta;          /* running mean of the grad norm: ema = b ema + (1-b) norm (e.g. 0.95) */
  qins_anomaly_action action;
  float lr_factor;         /* for QINS_ANOMALY_SCALE_LR, e.g. 0.5 */
} qins_anomaly_config;

typedef struct qins_optim_config {
  qins_adamw_config adamw;
  qins_lr_schedule schedule; /* all zero: constant lr */
  float clip_norm;           /* global gradient-norm clipping as torch clip_grad_norm_; <= 0: off */
  int accum_steps;           /* micro-batches per step; gradients are averaged (x 1/accum_steps); 0 = 1 */
  qins_anomaly_config anomaly;
} qins_optim_config;

/* PyTorch's AdamW defaults, no schedule, no clipping, one micro-batch, spike detection off, skip. */
qins_optim_config qins_optim_config_default(void);

typedef struct qins_param_opts {
  float lr_scale;        /* multiplies the learning rate for this parameter (1 = unchanged) */
  int no_decay;          /* 1: no weight decay (norm gains, biases) */
  /* QINS-AdamW (QINS.md section 6) */
  int qins;              /* 1: optimise a latent z with w = D_alpha(z) */
  qins_dtype storage;    /* QINS_DT_QINS_F32, QINS_DT_QINS8 or QINS_DT_QINS6: the forward weight is
                            D_alpha(stored(z)), rounding passed straight through */
  int64_t rows;          /* alpha per row of w viewed as [rows, n/rows]; 0 = 1 row */
  const float *alpha;    /* [rows] (copied), or NULL: alpha = 0.7 / std(row) (1 for a constant row) */
} qins_param_opts;
qins_param_opts qins_param_opts_default(void); /* lr_scale 1, decay on, plain AdamW */

typedef struct qins_step_report {
  int64_t step;               /* 1-based count of qins_optim_step calls */
  float lr;                   /* base lr used this step (schedule x anomaly factor), before lr_scale */
  double grad_norm;           /* global norm of the averaged gradient, before clipping */
  float clip_scale;           /* 1, or clip_norm / (norm + 1e-6) */
  int applied;                /* 1 when parameters were updated */
  int recanonicalised;        /* QINS elements whose z crossed |z| = 1 and were re-encoded */
  qins_anomaly_kind anomaly;
  qins_anomaly_action action; /* what was done about it (meaningful when anomaly != NONE) */
  char tensor[QINS_NAME_MAX]; /* the first bad tensor (non-finite) or the largest-norm one (spike) */
  char message[384];          /* "step 12: gradient of x holds NaN (element 3); step skipped" */
} qins_step_report;

typedef struct qins_optim qins_optim;

int qins_optim_create(const qins_optim_config *cfg, qins_optim **out);
void qins_optim_destroy(qins_optim *o);
/* Register a parameter: w [n] (updated in place: for QINS parameters it receives the forward
 * weights D_alpha(stored(z))), g [n] its gradient. opts NULL: defaults. Returns the parameter's
 * index (>= 0) or a negative error. For QINS parameters z is initialised as E_alpha(w). */
int qins_optim_add(qins_optim *o, const char *name, float *w, float *g, int64_t n, const qins_param_opts *opts);
/* Same for cpu tensors (f32, host-visible): w and g must have the same shape. */
int qins_optim_add_tensor(qins_optim *o, qins_tensor *w, qins_tensor *g, const qins_param_opts *opts);
int qins_optim_count(const qins_optim *o);
const char *qins_optim_name(const qins_optim *o, int param);
void qins_optim_zero_grad(qins_optim *o);
/* Gradient accumulation: call after each micro-batch's backward; returns 1 when accum_steps
 * micro-batches have been accumulated (then call qins_optim_step), else 0. */
int qins_optim_micro_done(qins_optim *o);
/* One optimizer step with the current gradients. loss is the step's loss (NaN/Inf detection;
 * pass 0 when unknown). Returns 0 also when an anomaly skipped the step (see report); errors only
 * for bad arguments. report may be NULL. */
int qins_optim_step(qins_optim *o, double loss, qins_step_report *report);
/* Pipeline-parallel step (additive): this optimizer holds only one part's parameters. global_sq
 * is the sum over EVERY parameter of the whole model, in the model's order, of the per-parameter
 * sums of squares (qins_optim_param_sq): it replaces this optimizer's own for the norm, clipping
 * and spike checks, so every part computes the same grad_norm and clip scale as one optimizer over
 * all parameters would (bit for bit when summed in the same order). global_bad (or a non-finite
 * global_sq): a gradient elsewhere holds NaN/Inf and the step is skipped here as well. */
int qins_optim_step_global(qins_optim *o, double loss, double global_sq, int global_bad, qins_step_report *report);
/* Device-side norms (additive): the same step with the per-parameter sums of squares of the
 * current gradients given (param_sq[qins_optim_count(o)], e.g. from the sumsq op where the
 * gradients live) instead of computed from host g. Norm, clipping (passed to the update as its
 * gradient multiplier), spike and NaN/Inf checks and every anomaly response use them; a
 * non-finite sum names its tensor (not the element). Host g is read only by the parameters
 * updated on the host (QINS-AdamW): pull those before the call. */
int qins_optim_step_sq(qins_optim *o, double loss, const double *param_sq, qins_step_report *report);
/* Sum of squares of one parameter's current gradient, in double (as the step computes it). */
double qins_optim_param_sq(const qins_optim *o, int param);
/* Global L2 norm of the current gradients (x 1/accum_steps), in double. */
double qins_optim_grad_norm(const qins_optim *o);
/* 1 when the parameter was flagged for FP fallback by the anomaly policy. */
int qins_optim_flagged(const qins_optim *o, int param);
/* Current learning-rate multiplier from QINS_ANOMALY_SCALE_LR responses (starts at 1). */
float qins_optim_lr_factor(const qins_optim *o);

/* ---- device parameters (additive: training on a device backend) ----
 * Like qins_optim_add, plus the parameter's device tensors w_t, g_t (f32, n elements, one backend;
 * descriptors copied, buffers stay the caller's). A plain AdamW parameter is then updated where it
 * lives by the adamw_step op with its moments in device buffers: a step does NOT change host w
 * (read it back, e.g. qins_train_model_pull_weights). qins_optim_step needs the gradient in host g
 * too (norm, clipping and anomaly checks on the host: pull it first); qins_optim_step_sq does not
 * (sums of squares from the sumsq op). Element math and
 * scalars are the host AdamW's (bit-identical on cpu). A QINS parameter (opts->qins) stays on the
 * host: push its w to the device after each step. */
int qins_optim_add_device(qins_optim *o, const char *name, float *w, float *g, int64_t n, const qins_param_opts *opts,
                          const qins_tensor *w_t, const qins_tensor *g_t);
/* 1 when parameter i is updated on its device. */
int qins_optim_on_device(const qins_optim *o, int param);
/* Moments of device parameters: to_device 0 copies device -> host m, v (before reading the state
 * for a checkpoint), 1 host -> device (after restoring it). */
int qins_optim_sync_state(qins_optim *o, int to_device);

/* ---- QINS parameters ---- */
/* Latent z [n] (read-only view) and alpha [rows] of a QINS parameter; NULL for a plain one. */
const float *qins_optim_latent(const qins_optim *o, int param);
const float *qins_optim_alpha(const qins_optim *o, int param);
/* Density schedule: re-encode z' = E_alpha'(D_alpha(z)) with new per-row alphas; w is unchanged
 * (up to rounding; the stored codes move to the new grid). Adam moments are carried into the new
 * coordinates by the chain rule (a gradient in z scales by alpha z^2 / (alpha' z'^2)). */
int qins_optim_set_alpha(qins_optim *o, int param, const float *alpha);

/* ---- checkpoint state (additive: for exact resume) ---- */
typedef struct qins_optim_state {
  int64_t steps;     /* qins_optim_step calls */
  float lr_factor;   /* anomaly lr multiplier */
  double norm_ema;   /* running mean of healthy grad norms */
  int norm_count;
} qins_optim_state;
void qins_optim_get_state(const qins_optim *o, qins_optim_state *s);
void qins_optim_set_state(qins_optim *o, const qins_optim_state *s);
/* Writable views of one parameter's state: m, v [n]; z [n] and alpha [rows] (NULL for plain
 * AdamW); t (Adam step count) and flagged. Restoring z of a QINS parameter: call
 * qins_optim_refresh_weights afterwards so w = D_alpha(stored(z)). */
typedef struct qins_optim_param_state {
  int64_t n, rows;
  float *m, *v, *z, *alpha;
  int64_t *t;
  int *flagged;
  int qins;
  qins_dtype storage;
} qins_optim_param_state;
int qins_optim_param_state_get(qins_optim *o, int param, qins_optim_param_state *out);
void qins_optim_refresh_weights(qins_optim *o, int param);

/* The QINS map and storage rounding used by QINS-AdamW (QINS.md sections 1-2), for tests/tools.
 * stored: QINS_DT_QINS_F32 (z as is), QINS_DT_QINS8, QINS_DT_QINS6. */
double qins_optim_encode(double x, double alpha);          /* E_alpha */
double qins_optim_decode(double z, double alpha);          /* D_alpha, |z| clamped >= 1e-12 */
float qins_optim_stored_weight(qins_dtype stored, float z, float alpha); /* D_alpha(stored(z)) */

#endif
