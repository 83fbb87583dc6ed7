/* What the dataflow train stages (stages/train_*.c) share with `qins train`: the same config
 * parser, start model, optimizer set-up and checkpoint schedule, so that a pipeline run and the
 * in-process run of one config do the same arithmetic (docs/training.md, "Training through the
 * dataflow engine"). Implemented in trainer.c next to the code it reuses. */
#ifndef QINS_TRAIN_SETUP_H
#define QINS_TRAIN_SETUP_H

#include <stddef.h>
#include <stdint.h>

#include "core/train/model_grad.h"
#include "core/model/safetensors.h"
#include "core/train/optim.h"

typedef struct qins_train_setup qins_train_setup;

typedef struct qins_train_setup_info {
  const char *name, *out_dir, *tokenizer, *text, *shard, *init, *backend;
  uint64_t seed;
  int64_t steps, stop_after, checkpoint_every;
  int batch, seq, grad_accum, qins, log_every;
  double holdout;
  int scratch_layers; /* model.layers when model.init is scratch, else 0 */
  int distill;        /* a distill: teacher is configured */
  int eval_every, eval_windows; /* held-out evaluation: every N steps (0: only at the end), windows */
  int checkpoint_initial;       /* a checkpoint before step 1 (ckpt-000000) */
  const char *teacher;          /* distill.teacher ('' none) */
  double distill_ce, distill_kl, distill_hid; /* distill.ce, .kl, .lambda_hid */
} qins_train_setup_info;

/* Parse a `qins train` config with "key.path=value" overrides (errors name file:line). */
int qins_train_setup_load(const char *config, const char *const *sets, int n_sets, qins_train_setup **out);
void qins_train_setup_free(qins_train_setup *s);
void qins_train_setup_get(const qins_train_setup *s, qins_train_setup_info *out);
/* The model the run starts from: scratch init (written to dir), a llama2.c model exported to its
 * HF form in dir, or the configured folder as is. The path goes to path[n]. */
int qins_train_setup_model(const qins_train_setup *s, const char *dir, char *path, size_t n);
/* The optimizer `qins train` builds for this config (schedule, clipping, accumulation over
 * batch x grad_accum rows, no-decay vectors, QINS paths), holding the parameters i of tm with
 * own[i] != 0 in tm's order (own NULL: all). */
int qins_train_setup_optim(const qins_train_setup *s, qins_train_model *tm, const unsigned char *own, qins_optim **out);
/* 1 when step s (1-based count of steps done) is a checkpoint step of the config. */
int qins_train_setup_ckpt_due(const qins_train_setup *s, int64_t step);

/* Appends parameter i's optimizer state to a checkpoint being written, as `qins train` names it:
 * tensors "<name>.m", ".v", ".z", ".alpha" (those present) at e/names/shapes[*n], and metadata
 * "t.<name>", "flag.<name>" (strdup'ed) at meta[*k]; room for 4 tensors and 4 strings is the
 * caller's. */
void qins_train_optim_param_entries(qins_optim *o, int i, qins_st_entry *e, char (*names)[QINS_NAME_MAX + 8],
                                    int64_t (*shapes)[1], int *n, char **meta, int *k);
/* Distillation's logit term, `qins train`'s arithmetic (the pipeline's head part shares it so both
 * runs are bit-identical): dl holds (s - onehot)/(n-1) for the student's softmax s over rows
 * 0..n-2; the teacher's softmax p comes from tlogits [n, V]. dl becomes ce * dl + kl * (s - p)/(n-1).
 * Returns the sum over rows of KL(p || s). */
double qins_train_distill_logits(const int32_t *ids, int n, int V, const float *tlogits, float *dl, float ce, float kl);

#endif
