/* The training loop behind `qins train CONFIG.yaml`: a Llama model from scratch (or from a model
 * folder / checkpoint), AdamW or QINS-AdamW, warmup + cosine, clipping, accumulation, held-out
 * evaluation, JSONL log, metrics, and checkpoints that resume bit for bit (docs/training.md). */
#ifndef QINS_TRAINER_H
#define QINS_TRAINER_H

#include <stdint.h>
#include <stdio.h>

typedef struct qins_train_opts {
  const char *config;        /* YAML path */
  const char *const *sets;   /* "key.path=value" overrides, n_sets of them */
  int n_sets;
  const char *resume;        /* checkpoint folder, or NULL */
  FILE *progress;            /* progress lines (NULL: none) */
} qins_train_opts;

/* Process-wide hook called after every optimizer step of qins_train_run, on the training thread
 * (the dashboard's loss curve); total_steps is the run's configured step count. NULL: none. */
typedef void (*qins_train_step_fn)(void *ctx, int64_t step, int64_t total_steps, double loss, double lr);
void qins_train_set_step_hook(qins_train_step_fn fn, void *ctx);

typedef struct qins_train_result {
  int64_t steps;             /* last step run */
  double last_loss;          /* training loss of the last step */
  double eval_loss;          /* last held-out mean loss (NaN if never evaluated) */
  double eval_ppl;           /* exp(eval_loss) */
  double tokens_per_s;       /* training tokens / wall seconds of this process's steps */
  char out_dir[512];
  char last_checkpoint[600]; /* folder of the last checkpoint written ("" if none) */
} qins_train_result;

int qins_train_run(const qins_train_opts *opts, qins_train_result *res);

/* The optimizer step of a training step, after the step's gradients are in (the trainer runs it;
 * exposed for tests and bench/train). o holds tm's parameters in tm's order. device_norm 1: the
 * per-parameter sums of squares come from the sumsq op where the gradients live and are read once
 * (3 floats each); only gradients updated on the host (QINS-AdamW) are pulled
 * (qins_optim_step_sq). 0: every gradient is pulled and summed on the host (qins_optim_step).
 * Either way host-updated weights are pushed back afterwards. Bit-identical on cpu. */
typedef struct qins_train_model qins_train_model;
typedef struct qins_optim qins_optim;
typedef struct qins_step_report qins_step_report;
int qins_train_optim_step(qins_train_model *tm, qins_optim *o, double loss, int device_norm, qins_step_report *rep);

/* Write a fresh Llama model (HF folder: config.json + model.safetensors) with N(0, std) weights
 * and unit norm gains from a seed. */
typedef struct qins_llama_shape {
  int dim, layers, heads, kv_heads, ffn, vocab, max_seq, tied;
  double rope_theta, norm_eps, init_std;
} qins_llama_shape;
int qins_train_init_llama(const char *dir, const qins_llama_shape *s, uint64_t seed);

/* Write a loaded Llama model as an HF folder (config.json + f32 model.safetensors); llama2.c
 * models get their q/k rows permuted from interleaved to half-split RoPE (same outputs). */
typedef struct qins_model qins_model;
int qins_train_export_hf(const qins_model *m, const char *dir);

#endif
