/* What the train stages (train_data, train_part, train_log) share: the frame every train message
 * carries, the run settings read from the pipeline's train_data stage, the part layout and its
 * validation, and the per-part checkpoint files (docs/training.md, "Training through the dataflow
 * engine"). Internal to stages/train_*.c. */
#ifndef QINS_STAGES_TRAIN_FLOW_H
#define QINS_STAGES_TRAIN_FLOW_H

#include <stdint.h>

#include "core/fsutil.h"
#include "core/pipeline.h"
#include "core/train/optim.h"
#include "core/train/train_setup.h"
#include "stages/stage.h"

/* Frame kinds. MB and STEP travel forward, GRAD and REDUCE backward (QINS_MSG_GRAD). */
enum {
  TF_MB = 1,     /* one micro-batch: ids [T+1], hidden rows f32 [T+1, dim] after a part (dim 0 before);
                    distillation: + the teacher's logits f32 [T+1, reserved] (reserved = teacher vocab) */
  TF_GRAD = 2,   /* the gradient at a part's input rows f32 [T+1, dim] for micro-batch mb */
  TF_REDUCE = 3, /* after a step's last backward: f64 [P sums of squares, loss sum, non-finite count];
                    ids = indices of the shared parameters whose gradients follow in f32 */
  TF_STEP = 4,   /* the reduced step: f64 [TF_S_*]; ids = indices of updated shared weights in f32 */
  TF_EVAL = 5,   /* head part -> train_log: held-out result of step `step` (steps done): f64 [loss sum, windows] */
  TF_RELOAD = 6, /* data -> parts -> log, first frame of a replayed run (automatic restart): ids = the
                    checkpoint folder's path, one char per id ('' = the start model), step = its step */
  TF_SAVE = 7,   /* data -> parts -> log: checkpoint ckpt-<step> now (run.checkpoint_initial: before step 1) */
  TF_HACK = 8,   /* head part -> ... -> data (backward): a chunk of held-out windows is through, send more
                    (bounds the windows in flight to a step's M micro-batches, as the channels' slots need) */
};
/* STEP f64 slots */
enum { TF_S_SQ, TF_S_LOSS, TF_S_BAD, TF_S_LR, TF_S_NORM, TF_S_APPLIED, TF_S_ELAPSED, TF_S_TOKENS, TF_S_CE, TF_S_KL, TF_S_COUNT };
/* REDUCE f64: P sums of squares, then these (distillation: the CE and KL parts of the loss) */
enum { TF_R_LOSS, TF_R_BAD, TF_R_CE, TF_R_KL, TF_R_COUNT };
/* frame flags */
enum {
  TF_CKPT = 1u,
  TF_LAST = 2u,
  TF_HELD = 4u, /* on a STEP: held-out micro-batches follow (and on those MB frames: no backward) */
};

#define TF_MAGIC 0x31465451u /* "QTF1" */

typedef struct tf_hdr {
  uint32_t magic, kind;
  int64_t step; /* 0-based optimizer step the frame belongs to */
  int32_t mb, n_mb;
  int32_t n_ids, dim;
  int64_t n_f64, n_f32;
  uint32_t flags, reserved; /* reserved: on MB frames, the teacher logits' columns (0: none) */
  int64_t reserved2;
} tf_hdr;

typedef struct tf_frame {
  tf_hdr h;
  const int32_t *ids;
  const double *f64;
  const float *f32;
} tf_frame;

/* Check a message is a whole frame (u8 payload, sizes consistent); QINS_EINPUT naming the stage. */
int tf_frame_parse(const qins_msg *m, const char *stage, tf_frame *f);
/* Allocate an output frame with h's counts; pointers to its sections (NULL where empty). */
int tf_frame_out(qins_msg *out, const qins_msg *in, const tf_hdr *h, int32_t **ids, double **f64, float **f32);

/* The run settings: the train config named by the pipeline's train_data stage, with its option
 * overrides applied (steps, out_dir, stop_after, set), and resume. */
typedef struct tf_settings {
  qins_train_setup *setup;
  qins_train_setup_info info;
  char config[512], resume[512];
} tf_settings;
int tf_settings_load(const qins_pipeline *pl, tf_settings *s);
void tf_settings_free(tf_settings *s);

/* train_part stages of a pipeline, in chain order (the embed part first, then by layers). */
typedef struct tf_part_spec {
  char name[QINS_PL_NAME];
  int l0, l1, embed, head;
  const qins_cfg *node; /* the `layers` option (or the stage) for messages */
} tf_part_spec;
int tf_part_specs(const qins_cfg *root, tf_part_spec **out, int *n);
/* Whole-pipeline checks with file:line:col: the train config loads, its data exists, the parts'
 * layer ranges are inside the model, do not overlap, cover it, and one embed and one head part. */
int tf_validate(const qins_pipeline *pl);

/* Checkpoint files. dir = out_dir/ckpt-%06lld. */
int tf_part_save(const char *path, qins_optim *o, int64_t step, int qins, const qins_train_model *tm,
                 const unsigned char *own);
/* Weights of every parameter the file holds into tm (by name). */
int tf_part_load_weights(const char *path, qins_train_model *tm);
/* Optimizer state of o's parameters (and checks step / kind). */
int tf_part_load_optim(const char *path, qins_optim *o, int qins, int64_t *step);

/* Copy a file (checkpoint extras: config.json, tokenizer.bin). */
/* The checkpoint as a model folder: every part file's weights (not its optimizer state) into
 * DIR/model.safetensors, in chain order, so `qins generate --model DIR` loads it. */
int tf_merge_weights(const char *dir, const tf_part_spec *specs, int n);

#endif
